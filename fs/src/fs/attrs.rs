//! Attributes and permissions: what `stat` reports (sizes of open files, link counts of
//! directories), `setattr` (chmod, chown as a no-op, truncate, utimens), and the mode-bit check
//! the daemon does itself because the folder is mounted without `default_permissions`.

use fybrk_store::{FileRecord, Kind};

use super::{lock, now_ns, Attr, Fs, SetAttr};
use crate::error::{FsError, FsResult};

impl Fs {
    /// Attributes of `ino` holding `r`; `linked` is false once its name was removed (open but
    /// unlinked: `st_nlink` 0, as on a local disk).
    pub(super) fn attr(&self, ino: u64, r: &FileRecord, linked: bool) -> FsResult<Attr> {
        let mut size = r.size;
        let mut mtime_ns = r.mtime_ns;
        let mut mode = r.mode;
        if r.kind == Kind::File {
            if let Some(f) = self.open_file(ino) {
                let f = lock(&f);
                size = f.size;
                mtime_ns = f.mtime_ns;
                mode = f.mode.unwrap_or(mode);
            }
        }
        if r.kind == Kind::Dir {
            if let Some(&t) = lock(&self.remote_entries).get(&r.path) {
                mtime_ns = mtime_ns.max(t);
            }
        }
        let nlink = match r.kind {
            _ if !linked => 0,
            Kind::Dir => 2 + self.subdir_count(&r.path)?.min(u64::from(u32::MAX - 2)) as u32,
            _ => 1,
        };
        let size = if r.kind == Kind::Dir { 4096 } else { size };
        Ok(Attr {
            ino,
            kind: r.kind,
            size,
            perm: (mode & 0o7777) as u16,
            mtime_ns,
            nlink,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        })
    }

    fn subdir_count(&self, dir: &str) -> FsResult<u64> {
        if let Some(&n) = lock(&self.subdirs).get(dir) {
            return Ok(n);
        }
        // Count under `ns` so no mkdir/rmdir can slip between the scan and the insert.
        let _ns = lock(&self.ns);
        let n = self.store().count_subdirs(dir)?;
        lock(&self.subdirs).insert(dir.to_owned(), n);
        Ok(n)
    }

    /// A directory appeared in or left `parent`. Caller holds `ns`.
    pub(super) fn subdirs_changed(&self, parent: &str) {
        lock(&self.subdirs).remove(parent);
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if crate::travel::is_synthetic(ino) {
            return self.past_getattr(ino);
        }
        // An unlinked file keeps its attributes while the kernel or a handle refers to it.
        let (r, linked) = self.record_for(ino)?;
        self.attr(ino, &r, linked)
    }

    /// Checks that the caller (`uid`, `gid`) may do `mask` to `ino` (`libc::R_OK`, `W_OK`,
    /// `X_OK` bits, as in access(2)). The folder is mounted without the kernel's
    /// `default_permissions` (see `fuse.rs`), so this is where mode bits are enforced.
    pub fn check_access(&self, ino: u64, uid: u32, gid: u32, mask: u32) -> FsResult<()> {
        // Root needs the mode only to refuse executing a file nobody may execute.
        if crate::travel::is_synthetic(ino) {
            if mask & libc::W_OK as u32 != 0 {
                return Err(FsError::ReadOnly);
            }
            self.past_getattr(ino)?;
            return Ok(());
        }
        if mask == 0 || (uid == 0 && mask & libc::X_OK as u32 == 0) {
            return Ok(());
        }
        let (r, _) = self.record_for(ino)?;
        let owner = (self.cfg.uid, self.cfg.gid);
        // A mode set while writes are pending counts at once, though committed at the close.
        let mode = match r.kind {
            Kind::File => self
                .open_file(ino)
                .and_then(|f| lock(&f).mode)
                .unwrap_or(r.mode),
            _ => r.mode,
        };
        match permits(r.kind, mode, owner, (uid, gid), mask) {
            true => Ok(()),
            false => Err(FsError::Denied),
        }
    }

    /// chmod, chown (no-op only), truncate and utimens.
    pub fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<Attr> {
        if crate::travel::is_synthetic(ino) {
            return Err(FsError::ReadOnly);
        }
        if set.uid.is_some_and(|u| u != self.cfg.uid) || set.gid.is_some_and(|g| g != self.cfg.gid)
        {
            return Err(FsError::NotPermitted);
        }
        if set.mode.is_none() && set.size.is_none() && set.mtime_ns.is_none() {
            // A chown to the owner there is (`cp -a`, `rsync -o` on every file): nothing to
            // record. Committing a new version for it cost a sixth of a tree copy.
            return self.getattr(ino);
        }
        let path = self.path_of(ino)?;
        if path.is_empty() {
            // The root has no record: only its time can change (see `Fs::set_root_mtime`).
            if let Some(t) = set.mtime_ns {
                let _ns = lock(&self.ns);
                self.set_root_mtime(t);
            }
            return self.getattr(ino);
        }
        let r = self.record(&path)?;
        if set.size.is_some() && r.kind != Kind::File {
            return Err(if r.kind == Kind::Dir {
                FsError::IsDir
            } else {
                FsError::Invalid
            });
        }
        if set.mtime_ns.is_some() {
            // A time set on purpose (tar, rsync -t) is the time, even if older.
            lock(&self.remote_entries).remove(&path);
        }
        let edit = |rec: &mut FileRecord| {
            if let Some(m) = set.mode {
                rec.mode = m & 0o7777;
            }
            if let Some(t) = set.mtime_ns {
                rec.mtime_ns = t;
            }
        };
        if r.kind == Kind::File && (set.size.is_some() || self.open_file(ino).is_some()) {
            self.with_open_file(ino, &r, |f| {
                if let Some(size) = set.size {
                    f.truncate(&self.cfg.staging_dir, size, now_ns())?;
                    self.content_changed(ino);
                }
                if let Some(t) = set.mtime_ns {
                    f.mtime_ns = t;
                }
                if f.handles > 0 && f.modified {
                    // Writes are pending on an open handle: the commit at its close takes the
                    // new size, time and mode with them (`cp -a` sets the times and mode of
                    // each file it copies before closing it: two more commits per file).
                    if let Some(m) = set.mode {
                        f.mode = Some(m & 0o7777);
                    }
                    return Ok(());
                }
                self.commit_file(ino, Some(f), false, edit)
            })?;
        } else {
            self.commit_file(ino, None, false, edit)?;
        }
        if set.size.is_some() {
            // Before the kernel hears of the new size: no page fill of the old content after.
            self.fill.changed(ino);
        }
        self.getattr(ino)
    }
}

/// The kernel's `generic_permission` for one inode without ACLs: root may do anything but
/// execute a file nobody may execute; everyone else gets the owner, group or other bits of
/// `mode`, whichever class they are in. `mask` holds `R_OK` (4), `W_OK` (2), `X_OK` (1).
pub fn permits(kind: Kind, mode: u32, owner: (u32, u32), caller: (u32, u32), mask: u32) -> bool {
    let mask = mask & 0o7;
    if caller.0 == 0 {
        return mask & 0o1 == 0 || kind == Kind::Dir || mode & 0o111 != 0;
    }
    let bits = if caller.0 == owner.0 {
        mode >> 6
    } else if caller.1 == owner.1 {
        mode >> 3
    } else {
        mode
    };
    bits & mask == mask
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u32 = 4;
    const W: u32 = 2;
    const X: u32 = 1;
    const ME: (u32, u32) = (1000, 1000);

    #[test]
    fn mode_bits_decide_for_the_owner_group_and_others() {
        let file = |mode, caller, mask| permits(Kind::File, mode, ME, caller, mask);
        assert!(file(0o600, ME, R | W));
        assert!(!file(0o400, ME, W), "read-only file written");
        assert!(!file(0o000, ME, R), "mode 000 read by its owner");
        assert!(
            !file(0o077, ME, R),
            "the owner class decides, not group or other"
        );
        assert!(file(0o040, (2000, 1000), R), "group member");
        assert!(!file(0o040, (2000, 3000), R), "stranger in group bits");
        assert!(file(0o004, (2000, 3000), R), "stranger in other bits");
        assert!(file(0o000, ME, 0), "existence is no permission");
        let dir = |mode, mask| permits(Kind::Dir, mode, ME, ME, mask);
        assert!(dir(0o700, W | X));
        assert!(!dir(0o500, W | X), "create in a read-only directory");
        assert!(!dir(0o600, X), "search without x");
    }

    #[test]
    fn root_may_do_anything_but_execute_what_nobody_may() {
        let root = (0, 0);
        assert!(permits(Kind::File, 0o000, ME, root, R | W));
        assert!(!permits(Kind::File, 0o666, ME, root, X));
        assert!(permits(Kind::File, 0o001, ME, root, X));
        assert!(permits(Kind::Dir, 0o000, ME, root, R | W | X));
    }
}
