//! The filesystem core: plain methods on inode numbers and handles, callable without a mount.
//!
//! Lock order (outer to inner): an [`OpenFile`]'s mutex, then `ns`, then `inodes`. The slow
//! part of a commit (chunking, encryption) runs under the file's own lock only; `ns` is held
//! just for the short read-modify-write of records, so a rename never interleaves with the
//! record update of a commit.
//!
//! This module owns the [`Fs`] state and the lookups every operation shares (inode to path to
//! record). The operations are split by concern, each an `impl Fs` block of its own:
//!
//! - `types`: the plain values crossing the API ([`Attr`], [`SetAttr`], [`OpenMode`], ...).
//! - `namespace`: names: create, mkdir, symlink, unlink, rmdir, rename, directory listings.
//! - `data`: open files and their content: open, read, write, flush, fsync, release, and the
//!   commit of an open file's new content.
//! - `attrs`: attributes and permissions: getattr, setattr, access checks (`permits`).
//! - `remote`: changes committed by peers: what the kernel must forget, writes to a file a peer
//!   changed while it was open here, swapping the store.
//!
//! Nothing here talks to the kernel or imports `fuser`: `fuse.rs` translates requests and errno
//! values, and the network reaches this module only through [`Fs::changed_remotely`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use fybrk_store::record::join;
use fybrk_store::{FileRecord, Kind, Pins, Store};

use crate::content::OpenFile;
use crate::error::{FsError, FsResult};
use crate::inodes::{Detached, Inodes};
use crate::layout::Layout;
use crate::travel::{self, Table};

mod attrs;
mod data;
mod namespace;
mod ondemand;
mod past;
mod remote;
mod types;

pub use ondemand::Unreadable;
use remote::Orphan;
pub use types::{Attr, DirEntry, FsConfig, Invalidation, OpenMode, SetAttr, StatFs};

struct Handle {
    ino: u64,
    mode: OpenMode,
    /// The process that opened it (see [`Fs::flush_from`]).
    owner: Option<u32>,
    /// Where the last read on this handle ended: a read starting there is sequential.
    read_end: u64,
}

/// The filesystem.
pub struct Fs {
    store: std::sync::RwLock<Store>,
    cfg: FsConfig,
    /// The root directory's modification time. The root has no record (it is the folder
    /// itself, never synced), so its time is kept in the store's metadata, local to this
    /// device (see [`Fs::touch_dirs`]).
    root_mtime: AtomicI64,
    ns: Mutex<()>,
    /// Subdirectory counts by directory path, for `st_nlink`: counting is a scan of the
    /// directory, and the kernel asks for a directory's attributes after every change in it.
    /// Only changes to directories (mkdir, rmdir, renaming a directory) invalidate it.
    subdirs: Mutex<HashMap<String, u64>>,
    /// Directories whose entries a peer changed, with when that landed here. A directory's
    /// time comes with its record, but the peer's record of the directory and of the entry
    /// arrive one by one (a file waits for its chunks), so the directory's time is reported as
    /// at least this: it moves when the entry appears here, as programs that cache a listing
    /// by the time (Python's import system) need. Local only, and only raises the time.
    remote_entries: Mutex<HashMap<String, i64>>,
    inodes: Mutex<Inodes>,
    open_files: Mutex<HashMap<u64, Arc<Mutex<OpenFile>>>>,
    handles: Mutex<HashMap<u64, Handle>>,
    dir_handles: Mutex<HashMap<u64, Vec<DirEntry>>>,
    next_fh: AtomicU64,
    /// Inodes whose name a peer's change took away (a new version is a new inode), with where
    /// their own writes go: a local edit of a file open while a peer changed it is kept, never
    /// dropped (see [`Fs::commit_orphan`]).
    orphans: Mutex<HashMap<u64, Orphan>>,
    /// The time-travel tree's inodes (see `crate::travel`).
    travel: Mutex<Table>,
    /// Open files of the time-travel tree: their content, pinned while open.
    past_files: Mutex<HashMap<u64, (Layout, Pins)>>,
    /// Files whose content could not be fetched lately (on-demand devices).
    unreadable: Mutex<ondemand::UnreadableList>,
    /// What of a chunk a random read opened goes into the kernel's page cache (see
    /// `crate::fill`).
    pub(crate) fill: crate::fill::PageFill,
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

/// The root's stored modification time; the first mount stores its own time.
fn root_mtime_of(store: &Store) -> i64 {
    match store.root_mtime() {
        Ok(Some(t)) => t,
        stored => {
            let now = now_ns();
            if let Err(e) = stored.and_then(|_| store.set_root_mtime(now)) {
                tracing::warn!(error = %e, "cannot read or store the root's modification time");
            }
            now
        }
    }
}

fn live(r: Option<FileRecord>) -> Option<FileRecord> {
    r.filter(FileRecord::is_live)
}

impl Fs {
    /// A filesystem over `store`.
    pub fn new(store: Store, cfg: FsConfig) -> Fs {
        let root_mtime = AtomicI64::new(root_mtime_of(&store));
        Fs {
            store: std::sync::RwLock::new(store),
            cfg,
            root_mtime,
            ns: Mutex::new(()),
            subdirs: Mutex::new(HashMap::new()),
            remote_entries: Mutex::new(HashMap::new()),
            inodes: Mutex::new(Inodes::new()),
            open_files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dir_handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            orphans: Mutex::new(HashMap::new()),
            travel: Mutex::new(Table::new()),
            past_files: Mutex::new(HashMap::new()),
            unreadable: Mutex::new(Default::default()),
            fill: Default::default(),
        }
    }

    /// The store underneath (the current one: see [`Fs::replace_store`]).
    pub fn store(&self) -> Store {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone()
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
            let mtime = self.root_mtime.load(Ordering::Relaxed);
            let mut root = FileRecord::new("", Kind::Dir, 0o755, mtime);
            root.size = 4096;
            return Ok(root);
        }
        live(self.store().get(path)?).ok_or(FsError::NotFound)
    }

    /// The record behind `ino`: by its path, or, for a name removed while the kernel still
    /// refers to the inode (an `open` racing a rename over it), the record it had then; and
    /// whether the inode still has its name (`st_nlink` 0 when not).
    fn record_for(&self, ino: u64) -> FsResult<(FileRecord, bool)> {
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
            (Some(p), _) => Ok((self.record(&p)?, true)),
            (None, Some(r)) => Ok((r, false)),
            (None, None) => Err(FsError::NotFound),
        }
    }

    fn detach(&self, r: &FileRecord) -> Detached {
        Detached::new(&self.store(), r.clone())
    }

    fn open_file(&self, ino: u64) -> Option<Arc<Mutex<OpenFile>>> {
        lock(&self.open_files).get(&ino).cloned()
    }

    /// Resolves `name` in `parent` and counts a kernel reference.
    pub fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<Attr> {
        // Name -> record -> inode in one step under `ns`: otherwise a lookup racing a rename
        // over `name` could pair the new record with the replaced file's inode, and the kernel
        // would cache the new size for the old content (a reader then saw a torn file).
        if self.in_travel(parent, name) {
            return self.past_lookup(parent, check_name(name)?);
        }
        let (ino, r) = {
            let _ns = lock(&self.ns);
            let path = self.child_path(parent, name)?;
            let r = self.record(&path)?;
            (lock(&self.inodes).get_or_insert(&path, true), r)
        };
        self.attr(ino, &r, true)
    }

    /// Drops kernel references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if travel::is_synthetic(ino) {
            return lock(&self.travel).forget(ino, n);
        }
        lock(&self.inodes).forget(ino, n);
    }

    fn require_dir(&self, ino: u64) -> FsResult<()> {
        match self.record(&self.path_of(ino)?)?.kind {
            Kind::Dir => Ok(()),
            _ => Err(FsError::NotDir),
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
