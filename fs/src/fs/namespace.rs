//! Names: creating, removing and renaming entries, symlinks, and directory listings. Every
//! change here commits its records under `ns`, then moves inode names to match.

use std::sync::atomic::Ordering;

use fybrk_store::record::split_parent;
use fybrk_store::{FileRecord, Kind};

use super::{live, lock, now_ns, Attr, DirEntry, Fs, OpenMode};
use crate::error::{FsError, FsResult};
use crate::inodes::ROOT;

impl Fs {
    /// Creates and opens a file (or opens an existing one unless `exclusive`).
    pub fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        perm: u32,
        mode: OpenMode,
    ) -> FsResult<(Attr, u64)> {
        let path = self.child_path(parent, name)?;
        {
            let _ns = lock(&self.ns);
            self.require_dir(parent)?;
            match live(self.store().get(&path)?) {
                Some(_) if mode.exclusive => return Err(FsError::Exists),
                Some(r) if r.kind == Kind::Dir => return Err(FsError::IsDir),
                Some(_) => {}
                None => {
                    let rec = FileRecord::new(&path, Kind::File, perm & 0o7777, now_ns());
                    self.store().commit(vec![rec], None, false)?;
                }
            }
        }
        let ino = lock(&self.inodes).get_or_insert(&path, true);
        let fh = self.open(ino, mode)?;
        Ok((self.getattr(ino)?, fh))
    }

    /// Target of a symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let r = self.record(&self.path_of(ino)?)?;
        r.target
            .filter(|_| r.kind == Kind::Symlink)
            .ok_or(FsError::Invalid)
    }

    fn make(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        rec: impl FnOnce(&str) -> FileRecord,
    ) -> FsResult<Attr> {
        let path = self.child_path(parent, name)?;
        let r = {
            let _ns = lock(&self.ns);
            self.require_dir(parent)?;
            if live(self.store().get(&path)?).is_some() {
                return Err(FsError::Exists);
            }
            let r = self
                .store()
                .commit(vec![rec(&path)], None, false)?
                .remove(0);
            if r.kind == Kind::Dir {
                self.subdirs_changed(split_parent(&path).0);
            }
            r
        };
        let ino = lock(&self.inodes).get_or_insert(&path, true);
        self.attr(ino, &r)
    }

    /// Creates a directory.
    pub fn mkdir(&self, parent: u64, name: &std::ffi::OsStr, perm: u32) -> FsResult<Attr> {
        self.make(parent, name, |p| {
            FileRecord::new(p, Kind::Dir, perm & 0o7777, now_ns())
        })
    }

    /// Creates a symbolic link.
    pub fn symlink(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        target: &std::path::Path,
    ) -> FsResult<Attr> {
        let target = target.to_str().ok_or(FsError::IllegalName)?.to_owned();
        self.make(parent, name, |p| {
            let mut r = FileRecord::new(p, Kind::Symlink, 0o777, now_ns());
            r.size = target.len() as u64;
            r.target = Some(target);
            r
        })
    }

    /// Removes a file or symlink.
    pub fn unlink(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        self.remove(parent, name, false)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &std::ffi::OsStr, dir: bool) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        let _ns = lock(&self.ns);
        let mut r = live(self.store().get(&path)?).ok_or(FsError::NotFound)?;
        match (dir, r.kind == Kind::Dir) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            (true, true) if self.store().has_children(&path)? => return Err(FsError::NotEmpty),
            _ => {}
        }
        if r.kind == Kind::Dir {
            self.subdirs_changed(split_parent(&path).0);
            lock(&self.subdirs).remove(&path);
        }
        let detached = self.detach(&r);
        r.deleted = true;
        r.version = Default::default();
        r.mtime_ns = now_ns();
        self.store().commit(vec![r], None, false)?;
        lock(&self.inodes).unlink(&path, Some(detached));
        Ok(())
    }

    /// Renames `name` in `parent` to `new_name` in `new_parent`, replacing a file or an empty
    /// directory there. A directory moves with everything below it, in one atomic commit, and
    /// no chunk is copied: the new records reuse the old chunks.
    pub fn rename(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
        no_replace: bool,
    ) -> FsResult<()> {
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        let _ns = lock(&self.ns);
        self.require_dir(new_parent)?;
        let src = live(self.store().get(&from)?).ok_or(FsError::NotFound)?;
        if from == to {
            return Ok(());
        }
        if src.kind == Kind::Dir && to.starts_with(&format!("{from}/")) {
            return Err(FsError::Invalid);
        }
        let dst = live(self.store().get(&to)?);
        if let Some(dst) = &dst {
            if no_replace {
                return Err(FsError::Exists);
            }
            match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if self.store().has_children(&to)? => return Err(FsError::NotEmpty),
                _ => {}
            }
        }
        let is_dir = src.kind == Kind::Dir;
        let mut moved = vec![src];
        let mut i = 0;
        while i < moved.len() {
            if moved[i].kind == Kind::Dir {
                let children = self.store().list_dir(&moved[i].path)?;
                moved.extend(children);
            }
            i += 1;
        }
        let now = now_ns();
        let mut changes = Vec::with_capacity(moved.len() * 2);
        for old in moved {
            let mut gone = old.clone();
            gone.deleted = true;
            gone.version = Default::default();
            gone.mtime_ns = now;
            let mut new = old;
            new.path = format!("{to}{}", &new.path[from.len()..]);
            new.version = Default::default();
            changes.push(gone);
            changes.push(new);
        }
        self.store().commit(changes, None, false)?;
        if is_dir {
            // Paths below both names changed; renaming directories is rare, start over.
            lock(&self.subdirs).clear();
        }
        let replaced = dst.map(|d| self.detach(&d));
        lock(&self.inodes).rename(&from, &to, replaced);
        Ok(())
    }

    /// Opens a directory: snapshots its entries for `readdir`.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let path = self.path_of(ino)?;
        let r = self.record(&path)?;
        if r.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let children = self.store().list_dir(&path)?;
        let parent_ino = {
            let mut inodes = lock(&self.inodes);
            if path.is_empty() {
                ROOT
            } else {
                inodes.get_or_insert(split_parent(&path).0, false)
            }
        };
        let mut entries = Vec::with_capacity(children.len() + 2);
        entries.push(DirEntry {
            ino,
            name: ".".into(),
            kind: Kind::Dir,
        });
        entries.push(DirEntry {
            ino: parent_ino,
            name: "..".into(),
            kind: Kind::Dir,
        });
        {
            let mut inodes = lock(&self.inodes);
            for c in children {
                let ino = inodes.get_or_insert(&c.path, false);
                let name = split_parent(&c.path).1.to_owned();
                entries.push(DirEntry {
                    ino,
                    name,
                    kind: c.kind,
                });
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dir_handles).insert(fh, entries);
        Ok(fh)
    }

    /// Calls `add(entry, next_offset)` for entries from `offset` until it returns true (full).
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> FsResult<()> {
        let handles = lock(&self.dir_handles);
        let entries = handles.get(&fh).ok_or(FsError::BadHandle)?;
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if add(e, i as u64 + 1) {
                break;
            }
        }
        Ok(())
    }

    /// Closes a directory handle; inodes only this listing created are dropped again.
    pub fn releasedir(&self, fh: u64) {
        if let Some(entries) = lock(&self.dir_handles).remove(&fh) {
            let mut inodes = lock(&self.inodes);
            for e in entries.iter().skip(2) {
                inodes.maybe_free(e.ino);
            }
        }
    }
}
