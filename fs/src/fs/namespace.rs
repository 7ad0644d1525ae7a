//! Names: creating, removing and renaming entries, symlinks, and directory listings. Every
//! change here commits its records under `ns`, then moves inode names to match.

use std::sync::atomic::Ordering;
use std::sync::atomic::Ordering::Relaxed;

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
        if self.in_travel(parent, name) {
            return Err(FsError::ReadOnly);
        }
        let path = self.child_path(parent, name)?;
        {
            let _ns = lock(&self.ns);
            self.require_dir(parent)?;
            match live(self.store().get(&path)?) {
                Some(_) if mode.exclusive => return Err(FsError::Exists),
                Some(r) if r.kind == Kind::Dir => return Err(FsError::IsDir),
                Some(_) => {}
                None => {
                    let now = now_ns();
                    let rec = FileRecord::new(&path, Kind::File, perm & 0o7777, now);
                    self.commit_in_dirs(vec![rec], &[split_parent(&path).0], now)?;
                }
            }
        }
        let ino = lock(&self.inodes).get_or_insert(&path, true);
        let fh = self.open(ino, mode)?;
        Ok((self.getattr(ino)?, fh))
    }

    /// Target of a symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        if crate::travel::is_synthetic(ino) {
            return self.past_readlink(ino);
        }
        let r = self.record(&self.path_of(ino)?)?;
        r.target
            .filter(|_| r.kind == Kind::Symlink)
            .ok_or(FsError::Invalid)
    }

    fn make(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        rec: impl FnOnce(&str, i64) -> FileRecord,
    ) -> FsResult<Attr> {
        if self.in_travel(parent, name) {
            return Err(FsError::ReadOnly);
        }
        let path = self.child_path(parent, name)?;
        let r = {
            let _ns = lock(&self.ns);
            self.require_dir(parent)?;
            if live(self.store().get(&path)?).is_some() {
                return Err(FsError::Exists);
            }
            let now = now_ns();
            let r = self
                .commit_in_dirs(vec![rec(&path, now)], &[split_parent(&path).0], now)?
                .remove(0);
            if r.kind == Kind::Dir {
                self.subdirs_changed(split_parent(&path).0);
            }
            r
        };
        let ino = lock(&self.inodes).get_or_insert(&path, true);
        self.attr(ino, &r, true)
    }

    /// Creates a directory.
    pub fn mkdir(&self, parent: u64, name: &std::ffi::OsStr, perm: u32) -> FsResult<Attr> {
        self.make(parent, name, |p, now| {
            FileRecord::new(p, Kind::Dir, perm & 0o7777, now)
        })
    }

    /// `mknod`: regular files only (`S_IFREG`, or no type, which means the same), empty, with
    /// `perm` as `open(O_CREAT)` would give them. FIFOs, sockets and device nodes are refused
    /// with `EPERM`, what mknod(2) answers on a filesystem that does not support the node type
    /// (as sshfs and vfat do): they are local to one machine and would mean nothing on a peer.
    pub fn mknod(&self, parent: u64, name: &std::ffi::OsStr, mode: u32) -> FsResult<Attr> {
        match mode & libc::S_IFMT {
            0 | libc::S_IFREG => self.make(parent, name, |p, now| {
                FileRecord::new(p, Kind::File, mode & 0o7777, now)
            }),
            _ => Err(FsError::NotPermitted),
        }
    }

    /// Creates a symbolic link.
    pub fn symlink(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        target: &std::path::Path,
    ) -> FsResult<Attr> {
        let target = target.to_str().ok_or(FsError::IllegalName)?.to_owned();
        self.make(parent, name, |p, now| {
            let mut r = FileRecord::new(p, Kind::Symlink, 0o777, now);
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
        if self.in_travel(parent, name) {
            return Err(FsError::ReadOnly);
        }
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
        let now = now_ns();
        r.deleted = true;
        r.version = Default::default();
        r.mtime_ns = now;
        self.commit_in_dirs(vec![r], &[split_parent(&path).0], now)?;
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
        if self.in_travel(parent, name) || self.in_travel(new_parent, new_name) {
            return Err(FsError::ReadOnly);
        }
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
            // Every moved record is `from` or below it; a stored path that is not (a damaged
            // record) fails the rename rather than a worker.
            let rest = new
                .path
                .strip_prefix(from.as_str())
                .ok_or(FsError::Invalid)?;
            new.path = format!("{to}{rest}");
            new.version = Default::default();
            changes.push(gone);
            changes.push(new);
        }
        let dirs = [split_parent(&from).0, split_parent(&to).0];
        self.commit_in_dirs(changes, &dirs, now)?;
        if is_dir {
            // Paths below both names changed; renaming directories is rare, start over.
            lock(&self.subdirs).clear();
        }
        let replaced = dst.map(|d| self.detach(&d));
        lock(&self.inodes).rename(&from, &to, replaced);
        Ok(())
    }

    /// Commits `records` (local changes of entries in `dirs`) together with the directories'
    /// new modification time `now`, in one batch, and returns the committed `records` first:
    /// a directory's modification (and change) time moves when entries are added, removed or
    /// renamed in it, as on a local disk (Python's import cache, make, rsync and file
    /// watchers compare it), persists, and replicates like any change. Concurrent versions of
    /// a directory's record merge without a conflict copy (`fybrk_net::sync::conflict`: the
    /// newer time keeps the path). The root has no record; its time is kept apart
    /// ([`Fs::set_root_mtime`]). Caller holds `ns`.
    pub(super) fn commit_in_dirs(
        &self,
        mut records: Vec<FileRecord>,
        dirs: &[&str],
        now: i64,
    ) -> FsResult<Vec<FileRecord>> {
        let n = records.len();
        let touched = self.touched_dirs(dirs, &records, now)?;
        records.extend(touched);
        let mut committed = self.store().commit(records, None, false)?;
        committed.truncate(n);
        self.touched_root(dirs, now);
        Ok(committed)
    }

    /// The records of the directories among `dirs` (not in `records` already) with their
    /// modification time set to `now`, to commit with a change of their entries (see
    /// [`Fs::commit_in_dirs`]). Caller holds `ns`.
    pub(super) fn touched_dirs(
        &self,
        dirs: &[&str],
        records: &[FileRecord],
        now: i64,
    ) -> FsResult<Vec<FileRecord>> {
        let store = self.store();
        let mut out: Vec<FileRecord> = Vec::new();
        for &d in dirs {
            let seen = |r: &FileRecord| r.path == d;
            if d.is_empty() || records.iter().any(seen) || out.iter().any(seen) {
                continue;
            }
            if let Some(mut r) = live(store.get(d)?).filter(|r| r.kind == Kind::Dir) {
                r.mtime_ns = now;
                r.version = Default::default();
                out.push(r);
            }
        }
        Ok(out)
    }

    /// After a change committed with [`Fs::touched_dirs`]: the root's time, if the root is
    /// among `dirs`.
    pub(super) fn touched_root(&self, dirs: &[&str], now: i64) {
        if dirs.contains(&"") {
            self.set_root_mtime(now);
        }
    }

    /// Sets the root's modification time (kept in the store's metadata: the root has no
    /// record). Best effort on disk: a failure only loses the time at the next mount.
    pub(super) fn set_root_mtime(&self, mtime_ns: i64) {
        self.root_mtime.store(mtime_ns, Relaxed);
        if let Err(e) = self.store().set_root_mtime(mtime_ns) {
            tracing::warn!(error = %e, "cannot store the root's modification time");
        }
    }

    /// Opens a directory: snapshots its entries for `readdir`.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        if crate::travel::is_synthetic(ino) {
            return self.past_opendir(ino);
        }
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
