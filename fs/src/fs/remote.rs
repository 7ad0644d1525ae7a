//! Changes that come from peers: the store was committed to directly, so this instance forgets
//! what it cached and tells the kernel what to drop; writes to a file a peer changed while it
//! was open here are kept (at the path, or as a conflict copy); and the store can be swapped
//! for a device that joins another folder.

use fybrk_store::record::split_parent;
use fybrk_store::{ChunkRef, ChunkWriter, FileRecord, Kind, Store, VersionVector};

use super::{live, lock, now_ns, Fs, Invalidation};
use crate::error::{FsError, FsResult};

/// Where writes to an inode orphaned by a peer's change go.
#[derive(Clone, Debug)]
pub(super) enum Orphan {
    /// Nothing written yet; the path it had.
    Was(String),
    /// Written to this path (the original if the peer deleted it, else a conflict copy).
    At(String),
}

impl Fs {
    /// Swaps the store underneath, for a device that joins another folder: the caller has
    /// copied every record into `new`. `ready` is asked, with the current store and no change
    /// able to slip in, whether the copy is complete; if not, nothing changes and `Ok(None)`
    /// says to copy the rest and try again. Refused with [`FsError::Busy`] while any file is
    /// open (its handle holds content of the old store). Returns the old store.
    pub fn replace_store(
        &self,
        new: Store,
        ready: impl FnOnce(&Store) -> bool,
    ) -> FsResult<Option<Store>> {
        let _ns = lock(&self.ns);
        if !lock(&self.handles).is_empty() || !lock(&self.open_files).is_empty() {
            return Err(FsError::Busy);
        }
        let mut cur = self.store.write().unwrap_or_else(|p| p.into_inner());
        if !ready(&cur) {
            return Ok(None);
        }
        lock(&self.subdirs).clear();
        // Same paths, same inodes, other content: no open may keep the kernel's old pages.
        lock(&self.inodes).all_content_changed();
        self.fill.all_changed();
        self.fill.wait_settled(None);
        self.root_mtime.store(
            super::root_mtime_of(&new),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Some(std::mem::replace(&mut *cur, new)))
    }

    /// Records at `paths` were changed by a peer (committed straight to the store). Forgets
    /// what this instance cached about them and returns what the kernel must drop: the
    /// directory entries and the inodes it may hold. A path that no longer exists loses its
    /// inode's name (handles already open keep reading the content they opened).
    pub fn changed_remotely(&self, paths: &[String]) -> Vec<Invalidation> {
        let _ns = lock(&self.ns);
        let store = self.store();
        let mut out = Vec::with_capacity(paths.len());
        let mut changed = Vec::new();
        let mut subdirs = lock(&self.subdirs);
        let mut inodes = lock(&self.inodes);
        // Forget orphans the kernel has forgotten.
        lock(&self.orphans).retain(|ino, _| inodes.detached(*ino).is_some() || inodes.exists(*ino));
        for path in paths {
            let (parent, name) = split_parent(path);
            subdirs.remove(parent);
            subdirs.remove(path.as_str());
            let ino = inodes.lookup_path(path);
            // A new version of a file is a new inode, as if the peer had renamed a finished
            // file over the old one: handles open on the old version keep reading it, and the
            // kernel never sees an inode change size or type under it. A directory that is
            // still a directory keeps its inode (its children's inodes hang below it).
            let still_dir = matches!(
                store.get(path),
                Ok(Some(r)) if r.is_live() && r.kind == Kind::Dir
            );
            if let Some(i) = ino {
                inodes.content_changed(i);
                changed.push(i);
            }
            if let (false, Some(i), false) = (still_dir, ino, path.is_empty()) {
                inodes.unlink(path, None);
                lock(&self.orphans).insert(i, Orphan::Was(path.clone()));
            }
            out.push(Invalidation {
                parent: inodes.lookup_path(parent),
                name: name.to_owned(),
                ino,
            });
        }
        drop((inodes, subdirs));
        // No page fill of the old content from here, and what is under way lands before the
        // kernel is told (this runs on the invalidation thread, never a FUSE worker).
        for i in &changed {
            self.fill.changed(*i);
        }
        self.fill.wait_settled(Some(&changed));
        // The directories holding changed entries: the root has no record, so its stored time
        // moves; the others are reported at least this new (see `remote_entries`).
        let now = now_ns();
        let mut touched = lock(&self.remote_entries);
        for path in paths.iter().filter(|p| !p.is_empty()) {
            touched.insert(split_parent(path).0.to_owned(), now);
        }
        let root = touched.remove("").is_some();
        drop(touched);
        if root {
            self.set_root_mtime(now);
        }
        out
    }

    /// Commits writes to an inode whose name a peer's change took away while it was open: at
    /// the original path if the peer deleted it (an edit beats a concurrent delete), else as a
    /// conflict copy beside the peer's version, so neither edit is lost. Later writes through
    /// the same handle go to the same place. Caller holds `ns`.
    pub(super) fn commit_orphan(
        &self,
        ino: u64,
        orphan: Orphan,
        (chunks, writer): &mut (Vec<ChunkRef>, ChunkWriter),
        mtime_ns: Option<i64>,
        sync: bool,
    ) -> FsResult<(i64, VersionVector)> {
        let store = self.store();
        let mtime = mtime_ns.unwrap_or_else(now_ns);
        let (target, mode) = match orphan {
            Orphan::At(p) => {
                let mode = live(store.get(&p)?).map_or(0o644, |r| r.mode);
                (p, mode)
            }
            Orphan::Was(p) => {
                // A parent the peer removed is not resurrected: the copy goes to the top.
                let p = match split_parent(&p) {
                    (parent, name) if !parent.is_empty() && live(store.get(parent)?).is_none() => {
                        name.to_owned()
                    }
                    _ => p,
                };
                match live(store.get(&p)?) {
                    None => (p, 0o644),
                    Some(theirs) => {
                        let mut n = 0;
                        let copy = loop {
                            let c = fybrk_store::naming::numbered_copy_path(
                                &p,
                                mtime,
                                store.device(),
                                n,
                            );
                            if live(store.get(&c)?).is_none() {
                                break c;
                            }
                            n += 1;
                        };
                        (copy, theirs.mode)
                    }
                }
            }
        };
        let mut rec = FileRecord::new(&target, Kind::File, mode, mtime);
        rec.size = chunks.iter().map(|c| u64::from(c.len)).sum();
        rec.chunks = chunks.clone();
        // A new name in its directory: the directory's time moves too.
        let (dirs, now) = ([split_parent(&target).0], now_ns());
        let mut records = vec![rec];
        let touched = self.touched_dirs(&dirs, &records, now)?;
        records.extend(touched);
        let committed = store.commit(records, Some(writer), sync)?;
        self.touched_root(&dirs, now);
        tracing::warn!(path = %target, "a peer changed a file while it was open here; kept this device's writes at this path");
        lock(&self.orphans).insert(ino, Orphan::At(target));
        let version = committed
            .into_iter()
            .next()
            .map(|r| r.version)
            .unwrap_or_default();
        Ok((mtime, version))
    }
}
