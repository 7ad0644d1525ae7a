//! The time-travel tree's operations (see `crate::travel`): lookups, attributes, listings and
//! reads of `.fybrk/at/<TIME>/...`. Every change under it is `EROFS`.

use std::sync::atomic::Ordering;

use fybrk_store::record::join;
use fybrk_store::{FileRecord, Kind};

use super::{live, lock, now_ns, Attr, DirEntry, Fs};
use crate::error::{FsError, FsResult};
use crate::inodes::ROOT;
use crate::layout::Layout;
use crate::travel::{is_synthetic, read_only, Node, DOT, SYNTHETIC};
use crate::when;

/// The parent of a non-root path.
fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

impl Fs {
    /// Whether an operation naming `name` in `parent` touches the time-travel tree (so must
    /// fail with `EROFS`).
    pub(super) fn in_travel(&self, parent: u64, name: &std::ffi::OsStr) -> bool {
        is_synthetic(parent) || (parent == ROOT && name == DOT)
    }

    /// The record a synthetic node shows.
    fn past_record(&self, node: &Node) -> FsResult<FileRecord> {
        let dir = |path: &str, mtime| {
            let mut r = FileRecord::new(path, Kind::Dir, 0o555, mtime);
            r.size = 4096;
            r
        };
        match node {
            Node::Dot | Node::At => Ok(dir("", self.root_mtime.load(Ordering::Relaxed))),
            Node::Past { at_ns, path } if path.is_empty() => Ok(dir("", *at_ns)),
            Node::Past { at_ns, path } => {
                let r = live(self.store().get_at(path, *at_ns)?).ok_or(FsError::NotFound)?;
                Ok(read_only(r))
            }
        }
    }

    fn past_attr(&self, ino: u64, r: &FileRecord) -> Attr {
        Attr {
            ino,
            kind: r.kind,
            size: if r.kind == Kind::Dir { 4096 } else { r.size },
            perm: (r.mode & 0o7777) as u16,
            mtime_ns: r.mtime_ns,
            nlink: if r.kind == Kind::Dir { 2 } else { 1 },
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    fn past_node(&self, ino: u64) -> FsResult<Node> {
        lock(&self.travel).node(ino).ok_or(FsError::NotFound)
    }

    /// `lookup` in the tree: `parent` is the root (for `.fybrk`) or a synthetic inode.
    pub(super) fn past_lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let node = if parent == ROOT {
            Node::Dot
        } else {
            match self.past_node(parent)? {
                Node::Dot if name == "at" => Node::At,
                Node::Dot => return Err(FsError::NotFound),
                Node::At => {
                    let at_ns = when::parse_time(name, now_ns()).map_err(|_| FsError::NotFound)?;
                    Node::Past {
                        at_ns,
                        path: String::new(),
                    }
                }
                Node::Past { at_ns, path } => Node::Past {
                    at_ns,
                    path: join(&path, name),
                },
            }
        };
        let r = self.past_record(&node)?;
        let ino = lock(&self.travel).get_or_insert(node, true);
        Ok(self.past_attr(ino, &r))
    }

    /// `getattr` of a synthetic inode.
    pub(super) fn past_getattr(&self, ino: u64) -> FsResult<Attr> {
        let r = self.past_record(&self.past_node(ino)?)?;
        Ok(self.past_attr(ino, &r))
    }

    /// `readlink` of a synthetic inode.
    pub(super) fn past_readlink(&self, ino: u64) -> FsResult<String> {
        let r = self.past_record(&self.past_node(ino)?)?;
        match r.kind {
            Kind::Symlink => Ok(r.target.clone().unwrap_or_default()),
            _ => Err(FsError::Invalid),
        }
    }

    /// `opendir` of a synthetic inode: snapshots its entries.
    pub(super) fn past_opendir(&self, ino: u64) -> FsResult<u64> {
        let node = self.past_node(ino)?;
        let dot = |ino, name: &str| DirEntry {
            ino,
            name: name.into(),
            kind: Kind::Dir,
        };
        let mut travel = lock(&self.travel);
        let mut entries = vec![dot(ino, ".")];
        match &node {
            Node::Dot => {
                entries.push(dot(ROOT, ".."));
                entries.push(dot(travel.get_or_insert(Node::At, false), "at"));
            }
            Node::At => {
                entries.push(dot(travel.get_or_insert(Node::Dot, false), ".."));
            }
            Node::Past { at_ns, path } => {
                let parent = if path.is_empty() {
                    travel.get_or_insert(Node::At, false)
                } else {
                    travel.get_or_insert(
                        Node::Past {
                            at_ns: *at_ns,
                            path: parent_of(path).to_owned(),
                        },
                        false,
                    )
                };
                entries.push(dot(parent, ".."));
                drop(travel);
                let r = self.past_record(&node)?;
                if r.kind != Kind::Dir {
                    return Err(FsError::NotDir);
                }
                let children = self.store().list_dir_at(path, *at_ns)?;
                travel = lock(&self.travel);
                for c in children.into_iter().filter(FileRecord::is_live) {
                    let name = c.path.rsplit('/').next().unwrap_or_default().to_owned();
                    let ino = travel.get_or_insert(
                        Node::Past {
                            at_ns: *at_ns,
                            path: c.path.clone(),
                        },
                        false,
                    );
                    entries.push(DirEntry {
                        ino,
                        name,
                        kind: c.kind,
                    });
                }
            }
        }
        drop(travel);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dir_handles).insert(fh, entries);
        Ok(fh)
    }

    /// `open` of a synthetic inode: read-only files only.
    pub(super) fn past_open(&self, ino: u64, write: bool) -> FsResult<u64> {
        let r = self.past_record(&self.past_node(ino)?)?;
        match r.kind {
            Kind::File => {}
            Kind::Dir => return Err(FsError::IsDir),
            Kind::Symlink => return Err(FsError::Invalid),
        }
        if write {
            return Err(FsError::ReadOnly);
        }
        let pins = self.store().pin(r.chunks.iter().map(|c| c.id));
        let fh = SYNTHETIC | self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.past_files).insert(fh, (Layout::new(r.chunks), pins));
        Ok(fh)
    }

    /// `read` of a handle from [`Fs::past_open`].
    pub(super) fn past_read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let files = lock(&self.past_files);
        let (layout, _) = files.get(&fh).ok_or(FsError::BadHandle)?;
        let end = offset.saturating_add(u64::from(size)).min(layout.len());
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        layout.read_at(&self.store(), offset, &mut out)?;
        Ok(out)
    }

    /// `release` of a handle from [`Fs::past_open`].
    pub(super) fn past_release(&self, fh: u64) {
        lock(&self.past_files).remove(&fh);
    }
}
