//! The filesystem core: plain methods on inode numbers and handles, callable without a mount.
//!
//! Lock order (outer to inner): an [`OpenFile`]'s mutex, then `ns`, then `inodes`. The slow
//! part of a commit (chunking, encryption) runs under the file's own lock only; `ns` is held
//! just for the short read-modify-write of records, so a rename never interleaves with the
//! record update of a commit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use fybrk_store::record::{join, split_parent};
use fybrk_store::{ChunkRef, ChunkWriter, FileRecord, Kind, Store, VersionVector};

use crate::content::OpenFile;
use crate::error::{FsError, FsResult};
use crate::inodes::{Detached, Inodes, ROOT};

/// Settings of a filesystem instance.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Where large uncommitted writes are staged (on the same disk as the store).
    pub staging_dir: PathBuf,
    /// Owner reported for every file (the mounting user).
    pub uid: u32,
    /// Group reported for every file.
    pub gid: u32,
}

/// Attributes of one inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number (local to this mount).
    pub ino: u64,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Link count: 1 for files, 2 + subdirectories for directories.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Attribute changes requested by `setattr` (chmod, chown, truncate, utimens).
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner (only a no-op change is allowed).
    pub uid: Option<u32>,
    /// New group (only a no-op change is allowed).
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New modification time.
    pub mtime_ns: Option<i64>,
}

/// One directory entry.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// Name within the directory.
    pub name: String,
    /// What it is.
    pub kind: Kind,
}

/// Filesystem usage, from the disk holding the store.
#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Files in the folder.
    pub files: u64,
    /// Free inodes (no real limit).
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
}

/// What the kernel must forget after a peer changed a path: see [`Fs::changed_remotely`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalidation {
    /// The parent directory's inode, if the kernel may have looked it up.
    pub parent: Option<u64>,
    /// The entry's name in that directory.
    pub name: String,
    /// The entry's inode, if the kernel may hold it (its attributes and cached pages go).
    pub ino: Option<u64>,
}

/// How a file was opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenMode {
    /// Writes allowed.
    pub write: bool,
    /// Every write goes to the end (O_APPEND).
    pub append: bool,
    /// Truncate on open (O_TRUNC).
    pub truncate: bool,
    /// Fail if the file exists (O_EXCL, for create).
    pub exclusive: bool,
}

impl OpenMode {
    /// From `open(2)` flags.
    pub fn from_flags(flags: i32) -> OpenMode {
        let acc = flags & libc::O_ACCMODE;
        OpenMode {
            write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
            append: flags & libc::O_APPEND != 0,
            truncate: flags & libc::O_TRUNC != 0,
            exclusive: flags & libc::O_EXCL != 0,
        }
    }
}

struct Handle {
    ino: u64,
    mode: OpenMode,
    /// The process that opened it (see [`Fs::flush_from`]).
    owner: Option<u32>,
}

/// The filesystem.
pub struct Fs {
    store: std::sync::RwLock<Store>,
    cfg: FsConfig,
    mounted_at_ns: i64,
    ns: Mutex<()>,
    /// Subdirectory counts by directory path, for `st_nlink`: counting is a scan of the
    /// directory, and the kernel asks for a directory's attributes after every change in it.
    /// Only changes to directories (mkdir, rmdir, renaming a directory) invalidate it.
    subdirs: Mutex<HashMap<String, u64>>,
    inodes: Mutex<Inodes>,
    open_files: Mutex<HashMap<u64, Arc<Mutex<OpenFile>>>>,
    handles: Mutex<HashMap<u64, Handle>>,
    dir_handles: Mutex<HashMap<u64, Vec<DirEntry>>>,
    next_fh: AtomicU64,
    /// Inodes whose name a peer's change took away (a new version is a new inode), with where
    /// their own writes go: a local edit of a file open while a peer changed it is kept, never
    /// dropped (see [`Fs::commit_orphan`]).
    orphans: Mutex<HashMap<u64, Orphan>>,
}

/// Where writes to an inode orphaned by a peer's change go.
#[derive(Clone, Debug)]
enum Orphan {
    /// Nothing written yet; the path it had.
    Was(String),
    /// Written to this path (the original if the peer deleted it, else a conflict copy).
    At(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means another request panicked; the guarded maps stay consistent because
    // every update is a single insert/remove.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Checks a name from the kernel: UTF-8, not `.`/`..`, at most 255 bytes.
fn check_name(name: &std::ffi::OsStr) -> FsResult<&str> {
    let name = name.to_str().ok_or(FsError::IllegalName)?;
    if name.len() > 255 {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(FsError::Invalid);
    }
    Ok(name)
}

fn live(r: Option<FileRecord>) -> Option<FileRecord> {
    r.filter(FileRecord::is_live)
}

impl Fs {
    /// A filesystem over `store`.
    pub fn new(store: Store, cfg: FsConfig) -> Fs {
        Fs {
            store: std::sync::RwLock::new(store),
            cfg,
            mounted_at_ns: now_ns(),
            ns: Mutex::new(()),
            subdirs: Mutex::new(HashMap::new()),
            inodes: Mutex::new(Inodes::new()),
            open_files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dir_handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            orphans: Mutex::new(HashMap::new()),
        }
    }

    /// The store underneath (the current one: see [`Fs::replace_store`]).
    pub fn store(&self) -> Store {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

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
        out
    }

    fn path_of(&self, ino: u64) -> FsResult<String> {
        lock(&self.inodes)
            .path(ino)
            .map(str::to_owned)
            .ok_or(FsError::NotFound)
    }

    fn child_path(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<String> {
        let name = check_name(name)?;
        Ok(join(&self.path_of(parent)?, name))
    }

    /// The live record at `path`; the root is synthesized.
    fn record(&self, path: &str) -> FsResult<FileRecord> {
        if path.is_empty() {
            let mut root = FileRecord::new("", Kind::Dir, 0o755, self.mounted_at_ns);
            root.size = 4096;
            return Ok(root);
        }
        live(self.store().get(path)?).ok_or(FsError::NotFound)
    }

    /// The record behind `ino`: by its path, or, for a name removed while the kernel still
    /// refers to the inode (an `open` racing a rename over it), the record it had then.
    fn record_for(&self, ino: u64) -> FsResult<FileRecord> {
        // Under `ns`: a rename commits the records first and moves the inode names after, so
        // without it an inode could be answered with the record that replaced it.
        let _ns = lock(&self.ns);
        let (path, detached) = {
            let inodes = lock(&self.inodes);
            (
                inodes.path(ino).map(str::to_owned),
                inodes.detached(ino).cloned(),
            )
        };
        match (path, detached) {
            (Some(p), _) => self.record(&p),
            (None, Some(r)) => Ok(r),
            (None, None) => Err(FsError::NotFound),
        }
    }

    fn detach(&self, r: &FileRecord) -> Detached {
        Detached::new(&self.store(), r.clone())
    }

    fn attr(&self, ino: u64, r: &FileRecord) -> FsResult<Attr> {
        let mut size = r.size;
        let mut mtime_ns = r.mtime_ns;
        if r.kind == Kind::File {
            if let Some(f) = self.open_file(ino) {
                let f = lock(&f);
                size = f.size;
                mtime_ns = f.mtime_ns;
            }
        }
        let nlink = match r.kind {
            Kind::Dir => 2 + self.subdir_count(&r.path)?.min(u64::from(u32::MAX - 2)) as u32,
            _ => 1,
        };
        let size = if r.kind == Kind::Dir { 4096 } else { size };
        Ok(Attr {
            ino,
            kind: r.kind,
            size,
            perm: (r.mode & 0o7777) as u16,
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
    fn subdirs_changed(&self, parent: &str) {
        lock(&self.subdirs).remove(parent);
    }

    fn open_file(&self, ino: u64) -> Option<Arc<Mutex<OpenFile>>> {
        lock(&self.open_files).get(&ino).cloned()
    }

    /// Resolves `name` in `parent` and counts a kernel reference.
    pub fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<Attr> {
        // Name -> record -> inode in one step under `ns`: otherwise a lookup racing a rename
        // over `name` could pair the new record with the replaced file's inode, and the kernel
        // would cache the new size for the old content (a reader then saw a torn file).
        let (ino, r) = {
            let _ns = lock(&self.ns);
            let path = self.child_path(parent, name)?;
            let r = self.record(&path)?;
            (lock(&self.inodes).get_or_insert(&path, true), r)
        };
        self.attr(ino, &r)
    }

    /// Drops kernel references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        lock(&self.inodes).forget(ino, n);
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        // An unlinked file keeps its attributes while the kernel or a handle refers to it.
        let r = self.record_for(ino)?;
        self.attr(ino, &r)
    }

    /// Checks that the caller (`uid`, `gid`) may do `mask` to `ino` (`libc::R_OK`, `W_OK`,
    /// `X_OK` bits, as in access(2)). The folder is mounted without the kernel's
    /// `default_permissions` (see `fuse.rs`), so this is where mode bits are enforced.
    pub fn check_access(&self, ino: u64, uid: u32, gid: u32, mask: u32) -> FsResult<()> {
        // Root needs the mode only to refuse executing a file nobody may execute.
        if mask == 0 || (uid == 0 && mask & libc::X_OK as u32 == 0) {
            return Ok(());
        }
        let r = self.record_for(ino)?;
        let owner = (self.cfg.uid, self.cfg.gid);
        match permits(r.kind, r.mode, owner, (uid, gid), mask) {
            true => Ok(()),
            false => Err(FsError::Denied),
        }
    }

    /// chmod, chown (no-op only), truncate and utimens.
    pub fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<Attr> {
        if set.uid.is_some_and(|u| u != self.cfg.uid) || set.gid.is_some_and(|g| g != self.cfg.gid)
        {
            return Err(FsError::NotPermitted);
        }
        let path = self.path_of(ino)?;
        if path.is_empty() {
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
                }
                if let Some(t) = set.mtime_ns {
                    f.mtime_ns = t;
                }
                self.commit_file(ino, Some(f), false, edit)
            })?;
        } else {
            self.commit_file(ino, None, false, edit)?;
        }
        self.getattr(ino)
    }

    /// Fresh open state for the file `r`.
    fn open_state(&self, r: &FileRecord) -> OpenFile {
        let mut f = OpenFile::new(&self.store(), r.chunks.clone(), r.mtime_ns);
        f.version = r.version.clone();
        f
    }

    /// Runs `op` on the open state of `ino`, opening it for the duration if no handle has it.
    fn with_open_file<T>(
        &self,
        ino: u64,
        r: &FileRecord,
        op: impl FnOnce(&mut OpenFile) -> FsResult<T>,
    ) -> FsResult<T> {
        let f = match self.open_file(ino) {
            Some(f) => f,
            None => Arc::new(Mutex::new(self.open_state(r))),
        };
        let mut f = lock(&f);
        op(&mut f)
    }

    /// Commits `ino`: the open file's new content if it changed, plus `edit` on the record.
    /// A file that was unlinked meanwhile is not brought back.
    fn commit_file(
        &self,
        ino: u64,
        mut f: Option<&mut OpenFile>,
        sync: bool,
        edit: impl FnOnce(&mut FileRecord),
    ) -> FsResult<()> {
        let mut content = match &mut f {
            Some(f) if f.modified => Some(f.rechunk(&self.store())?),
            _ => None,
        };
        let result = self.commit_record(
            ino,
            &mut content,
            f.as_deref().map(|f| (f.mtime_ns, &f.version)),
            sync,
            edit,
        );
        if let Some(f) = f {
            match (result, content) {
                (Ok(Some((mtime, version))), Some((chunks, _writer))) => {
                    f.committed(&self.store(), chunks);
                    f.mtime_ns = mtime;
                    f.version = version;
                }
                (Ok(Some((mtime, version))), None) => {
                    f.mtime_ns = mtime;
                    f.version = version;
                }
                // Unlinked meanwhile: nothing to commit, nothing to keep.
                (Ok(None), _) => f.modified = false,
                (Err(e), Some((chunks, writer))) => {
                    f.commit_failed(chunks, writer);
                    return Err(e);
                }
                (Err(e), None) => return Err(e),
            }
        }
        Ok(())
    }

    /// The record half of [`Fs::commit_file`], under the namespace lock. `open` is the open
    /// file's mtime and the version its content is based on. Returns the committed mtime and
    /// version, or `None` if the inode has no name any more.
    fn commit_record(
        &self,
        ino: u64,
        content: &mut Option<(Vec<ChunkRef>, ChunkWriter)>,
        open: Option<(i64, &VersionVector)>,
        sync: bool,
        edit: impl FnOnce(&mut FileRecord),
    ) -> FsResult<Option<(i64, VersionVector)>> {
        let mtime_ns = open.map(|(t, _)| t);
        let _ns = lock(&self.ns);
        let Some(path) = lock(&self.inodes).path(ino).map(str::to_owned) else {
            let orphan = lock(&self.orphans).get(&ino).cloned();
            return match (orphan, content.as_mut()) {
                (Some(o), Some(c)) => self.commit_orphan(ino, o, c, mtime_ns, sync).map(Some),
                _ => Ok(None),
            };
        };
        let Some(mut rec) = live(self.store().get(&path)?) else {
            return Ok(None);
        };
        if let (Some((_, base)), Some(c)) = (open, content.as_mut()) {
            if rec.version.changed_elsewhere(base, self.store().device()) {
                // A peer's version landed after this content was opened, and the kernel has
                // not been told yet: the same as an orphaned inode, just found first here.
                lock(&self.inodes).unlink(&path, None);
                let orphan = Orphan::Was(path);
                return self.commit_orphan(ino, orphan, c, mtime_ns, sync).map(Some);
            }
        }
        rec.version = Default::default();
        if let Some((chunks, _)) = content {
            rec.size = chunks.iter().map(|c| u64::from(c.len)).sum();
            rec.chunks = chunks.clone();
        }
        if let Some(t) = mtime_ns {
            rec.mtime_ns = t;
        }
        edit(&mut rec);
        let mtime = rec.mtime_ns;
        let committed = self
            .store()
            .commit(vec![rec], content.as_mut().map(|(_, w)| w), sync)?;
        let version = committed
            .into_iter()
            .next()
            .map(|r| r.version)
            .unwrap_or_default();
        Ok(Some((mtime, version)))
    }

    /// Commits writes to an inode whose name a peer's change took away while it was open: at
    /// the original path if the peer deleted it (an edit beats a concurrent delete), else as a
    /// conflict copy beside the peer's version, so neither edit is lost. Later writes through
    /// the same handle go to the same place. Caller holds `ns`.
    fn commit_orphan(
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
        let committed = store.commit(vec![rec], Some(writer), sync)?;
        tracing::warn!(path = %target, "a peer changed a file while it was open here; kept this device's writes at this path");
        lock(&self.orphans).insert(ino, Orphan::At(target));
        let version = committed
            .into_iter()
            .next()
            .map(|r| r.version)
            .unwrap_or_default();
        Ok((mtime, version))
    }

    fn new_handle(&self, ino: u64, mode: OpenMode) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(
            fh,
            Handle {
                ino,
                mode,
                owner: None,
            },
        );
        fh
    }

    /// Opens a regular file.
    pub fn open(&self, ino: u64, mode: OpenMode) -> FsResult<u64> {
        let r = self.record_for(ino)?;
        match r.kind {
            Kind::File => {}
            Kind::Dir => return Err(FsError::IsDir),
            Kind::Symlink => return Err(FsError::Invalid),
        }
        let f = {
            let mut files = lock(&self.open_files);
            files
                .entry(ino)
                .or_insert_with(|| Arc::new(Mutex::new(self.open_state(&r))))
                .clone()
        };
        {
            let mut f = lock(&f);
            f.handles += 1;
            if mode.truncate && mode.write && f.size > 0 {
                f.truncate(&self.cfg.staging_dir, 0, now_ns())?;
            }
        }
        lock(&self.inodes).opened(ino);
        Ok(self.new_handle(ino, mode))
    }

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

    fn require_dir(&self, ino: u64) -> FsResult<()> {
        match self.record(&self.path_of(ino)?)?.kind {
            Kind::Dir => Ok(()),
            _ => Err(FsError::NotDir),
        }
    }

    fn handle(&self, fh: u64) -> FsResult<(u64, OpenMode, Arc<Mutex<OpenFile>>)> {
        let (ino, mode) = {
            let handles = lock(&self.handles);
            let h = handles.get(&fh).ok_or(FsError::BadHandle)?;
            (h.ino, h.mode)
        };
        let f = self.open_file(ino).ok_or(FsError::BadHandle)?;
        Ok((ino, mode, f))
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (_, _, f) = self.handle(fh)?;
        let mut f = lock(&f);
        if !f.is_clean() {
            return f.read(&self.store(), &self.cfg.staging_dir, offset, size as usize);
        }
        // Committed content only: read the chunks without holding the file lock.
        let base = f.base.clone();
        drop(f);
        let end = (offset + u64::from(size)).min(base.len());
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        base.read_at(&self.store(), offset, &mut out)?;
        Ok(out)
    }

    /// Writes `data` at `offset` (at the end for O_APPEND handles). Buffered until flush.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (_, mode, f) = self.handle(fh)?;
        if !mode.write {
            return Err(FsError::BadHandle);
        }
        let mut f = lock(&f);
        let at = if mode.append { f.size } else { offset };
        f.write(&self.store(), &self.cfg.staging_dir, at, data, now_ns())?;
        Ok(data.len() as u32)
    }

    /// Commits buffered writes (on every `close`).
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        self.commit_handle(fh, false)
    }

    /// Records which process opened `fh`, for [`Fs::flush_from`].
    pub fn set_owner(&self, fh: u64, pid: u32) {
        if let Some(h) = lock(&self.handles).get_mut(&fh) {
            h.owner = Some(pid);
        }
    }

    /// A `close` of `fh` by process `pid`. The opener's close commits, like [`Fs::flush`]. A
    /// close by another process does not: that is a forked child dropping its inherited copy of
    /// a file the parent is still writing (every `fork` + `exec` does it), and committing then
    /// would publish a half-written file to peers. The last close commits anyway
    /// ([`Fs::release`]).
    pub fn flush_from(&self, fh: u64, pid: u32) -> FsResult<()> {
        let owner = lock(&self.handles).get(&fh).and_then(|h| h.owner);
        match owner {
            Some(o) if o != pid => Ok(()),
            _ => self.flush(fh),
        }
    }

    /// Commits buffered writes and makes them durable.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        self.commit_handle(fh, true)?;
        Ok(self.store().sync()?)
    }

    fn commit_handle(&self, fh: u64, sync: bool) -> FsResult<()> {
        let (ino, _, f) = self.handle(fh)?;
        let mut f = lock(&f);
        if f.modified {
            self.commit_file(ino, Some(&mut f), sync, |_| {})?;
        }
        Ok(())
    }

    /// Closes a handle: commits what is left and drops the open state with the last handle.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let result = self.commit_handle(fh, false);
        let Some(h) = lock(&self.handles).remove(&fh) else {
            return result;
        };
        let mut files = lock(&self.open_files);
        if let Some(f) = files.get(&h.ino).cloned() {
            let mut f = lock(&f);
            f.handles = f.handles.saturating_sub(1);
            if f.handles == 0 && !f.modified {
                files.remove(&h.ino);
            }
        }
        drop(files);
        lock(&self.inodes).closed(h.ino);
        result
    }

    /// Commits every open file with pending writes (before unmount).
    pub fn flush_all(&self) -> FsResult<()> {
        let files: Vec<(u64, Arc<Mutex<OpenFile>>)> = lock(&self.open_files)
            .iter()
            .map(|(&i, f)| (i, f.clone()))
            .collect();
        for (ino, f) in files {
            let mut f = lock(&f);
            if f.modified {
                self.commit_file(ino, Some(&mut f), false, |_| {})?;
            }
        }
        Ok(self.store().sync()?)
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

    /// Usage of the disk under the store.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let v =
            nix::sys::statvfs::statvfs(&self.cfg.staging_dir).map_err(|e| FsError::Io(e.into()))?;
        let stats = self.store().stats();
        let frsize = v.fragment_size().max(1);
        Ok(StatFs {
            blocks: v.blocks() * frsize / 4096,
            bfree: v.blocks_free() * frsize / 4096,
            bavail: v.blocks_available() * frsize / 4096,
            files: stats.files + stats.dirs + stats.symlinks,
            ffree: u64::from(u32::MAX),
            bsize: 4096,
        })
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
