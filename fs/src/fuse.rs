//! The thin `fuser` adapter: translates kernel requests into [`Fs`] calls and errors into
//! errno values (decided in one place, [`FsError::errno`]). No filesystem logic lives here.

use std::ffi::OsStr;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, IoctlFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use fybrk_store::Kind;

use crate::error::FsError;
use crate::fs::{Attr, Fs, OpenMode, SetAttr};

/// How long the kernel may cache attributes and names. Only this process changes the folder
/// (until remote changes arrive, which invalidate explicitly), so a second is safe.
const TTL: Duration = Duration::from_secs(1);

/// Largest write the kernel sends in one request: 1 MiB keeps per-request overhead low for
/// sequential writes.
const MAX_WRITE: u32 = 1 << 20;

/// Starts the page fill (see `crate::fill`): a thread that puts the rest of each chunk a
/// random read opened into the kernel's page cache through `notifier`. Runs as long as the
/// process; without it reads work the same, only without the fill.
pub fn start_page_fill(fs: Arc<Fs>, notifier: fuser::Notifier) -> std::io::Result<()> {
    let jobs = fs.fill.start();
    std::thread::Builder::new()
        .name("page-fill".into())
        .spawn(move || {
            for job in jobs {
                fs.fill.push(&job, |j| {
                    // ENOENT: the kernel forgot the inode meanwhile; nothing to fill.
                    if let Err(e) = notifier.store(INodeNo(j.ino), j.offset, j.bytes()) {
                        tracing::debug!(ino = j.ino, error = %e, "page fill refused");
                    }
                });
            }
        })?;
    Ok(())
}

/// The answer to the xattr calls. `ENOSYS` (not `ENOTSUP`) makes the kernel remember that this
/// filesystem has no xattrs and answer `EOPNOTSUPP` (= `ENOTSUP`) itself from then on: otherwise
/// every `write` costs an extra `GETXATTR security.capability` round trip (a tenth of a small
/// file's create-write-close).
const NO_XATTRS: i32 = libc::ENOSYS;

/// FUSE worker threads: both cores, plus slack for requests that wait on disk.
const THREADS: usize = 4;

/// `Fs` served over FUSE.
pub struct FuseFs(pub Arc<Fs>);

fn err(e: FsError) -> Errno {
    if !matches!(e, FsError::NotFound | FsError::Exists | FsError::NotEmpty) {
        tracing::debug!(error = %e, "request failed");
    }
    if matches!(e, FsError::Store(_) | FsError::Io(_)) {
        tracing::warn!(error = %e, "I/O failure");
    }
    Errno::from_i32(e.errno())
}

/// Runs one request's handler and catches a panic in it: the last line of defence, for bugs
/// (none is known; the panics that inputs could reach are fixed where they were). The reply the
/// handler owned is dropped while unwinding, and fuser answers a dropped reply with `EIO`; the
/// worker thread lives on, so the mount keeps serving (with four workers, four panics used to
/// hang it for good).
///
/// Why carrying on after a panic is sound (`AssertUnwindSafe`): unwinding never breaks memory
/// safety; the question is only whether shared state may be left half-updated. The state
/// handlers share is [`Fs`]'s, behind mutexes whose poisoning is deliberately ignored (`lock`
/// in `fs/mod.rs`) because each update of an inode or handle table is one insert or remove;
/// records, chunks and reference counts change only in atomic RocksDB write batches, so the
/// store holds the old version or the new one. What a panic can leave behind is at most the
/// uncommitted state of the one open file whose request panicked, which the error already
/// reported to that program.
pub(crate) fn guarded(op: &'static str, handler: impl FnOnce()) {
    let started = std::time::Instant::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(handler));
    crate::metrics::record(op, started.elapsed());
    if let Err(panic) = result {
        let what = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
            (Some(s), _) => s,
            (_, Some(s)) => s.as_str(),
            _ => "(no message)",
        };
        tracing::error!(op, panic = what, "a request handler panicked; answered EIO");
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn time_ns(t: TimeOrNow) -> i64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    let t = system_time(a.mtime_ns);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 64 * 1024,
        flags: 0,
    }
}

/// `access(2)` bits.
const R: u32 = libc::R_OK as u32;
const W: u32 = libc::W_OK as u32;
const X: u32 = libc::X_OK as u32;

impl FuseFs {
    /// `EACCES` unless the caller may do `mask` to `ino`. The kernel checks nothing itself
    /// (no `default_permissions`, see [`mount_config`]), so every request that needs a
    /// permission asks here first.
    fn allowed(&self, req: &Request, ino: INodeNo, mask: u32) -> Result<(), Errno> {
        self.0
            .check_access(ino.0, req.uid(), req.gid(), mask)
            .map_err(err)
    }

    /// [`FuseFs::allowed`] for a parent directory: root may do anything in a directory, so
    /// its requests skip the lookup of the mode.
    fn allowed_in(&self, req: &Request, dir: INodeNo, mask: u32) -> Result<(), Errno> {
        match req.uid() {
            0 => Ok(()),
            _ => self.allowed(req, dir, mask),
        }
    }
}

/// What opening with `flags` needs: read and/or write by the access mode, write to truncate.
fn open_mask(flags: i32) -> u32 {
    let mask = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => R,
        libc::O_WRONLY => W,
        _ => R | W,
    };
    if flags & libc::O_TRUNC != 0 {
        mask | W
    } else {
        mask
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Best effort: older kernels cap these lower and say so in the error value.
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        Ok(())
    }

    fn destroy(&mut self) {
        guarded("destroy", || {
            if let Err(e) = self.0.flush_all() {
                tracing::error!(error = %e, "could not commit open files at unmount");
            }
        });
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || {
            if let Err(e) = self.allowed_in(req, parent, X) {
                return reply.error(e);
            }
            match self.0.lookup(parent.0, name) {
                Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guarded("forget", || {
            self.0.forget(ino.0, nlookup);
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || match self.0.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(err(e)),
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded("setattr", || {
            // truncate(2) needs write permission; ftruncate(2) was checked when the file opened.
            if size.is_some() && fh.is_none() {
                if let Err(e) = self.allowed(req, ino, W) {
                    return reply.error(e);
                }
            }
            let set = SetAttr {
                mode,
                uid,
                gid,
                size,
                mtime_ns: mtime.map(time_ns),
            };
            match self.0.setattr(ino.0, set) {
                // A page fill of the old content under way lands first (see `crate::fill`).
                Ok(a) => self
                    .0
                    .fill
                    .when_settled(ino.0, Box::new(move || reply.attr(&TTL, &file_attr(&a)))),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded("readlink", || match self.0.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(err(e)),
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        guarded("mkdir", || {
            if let Err(e) = self.allowed_in(req, parent, W | X) {
                return reply.error(e);
            }
            match self.0.mkdir(parent.0, name, mode & !umask) {
                Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        guarded("mknod", || {
            if let Err(e) = self.allowed_in(req, parent, W | X) {
                return reply.error(e);
            }
            match self.0.mknod(parent.0, name, mode & !umask) {
                Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || {
            if let Err(e) = self.allowed_in(req, parent, W | X) {
                return reply.error(e);
            }
            match self.0.unlink(parent.0, name) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
            if let Err(e) = self.allowed_in(req, parent, W | X) {
                return reply.error(e);
            }
            match self.0.rmdir(parent.0, name) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        guarded("symlink", || {
            if let Err(e) = self.allowed_in(req, parent, W | X) {
                return reply.error(e);
            }
            match self.0.symlink(parent.0, link_name, target) {
                Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded("rename", || {
            // RENAME_EXCHANGE is not offered; whiteouts are an overlayfs matter.
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                return reply.error(Errno::EINVAL);
            }
            for dir in [parent, newparent] {
                if let Err(e) = self.allowed_in(req, dir, W | X) {
                    return reply.error(e);
                }
            }
            let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            match self
                .0
                .rename(parent.0, name, newparent.0, newname, no_replace)
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guarded("link", || {
            // Hard links do not survive replication by path; refuse them clearly (link(2): EPERM
            // "the filesystem does not support hard links"). git and others fall back to rename.
            reply.error(Errno::EPERM);
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || {
            if let Err(e) = self.allowed(req, ino, open_mask(flags.0)) {
                return reply.error(e);
            }
            let mode = OpenMode::from_flags(flags.0);
            match self.0.open(ino.0, mode) {
                Ok(fh) => {
                    self.0.set_owner(fh, req.pid());
                    // Pages the kernel cached at an earlier open are still right unless the
                    // content changed since: rereading a file then costs no round trip.
                    let flags = match self.0.keep_cache(ino.0) {
                        true => FopenFlags::FOPEN_KEEP_CACHE,
                        false => FopenFlags::empty(),
                    };
                    let reply = move || reply.opened(FileHandle(fh), flags);
                    match mode.write {
                        // Nothing is written before a page fill under way has landed.
                        true => self.0.fill.when_settled(ino.0, Box::new(reply)),
                        false => reply(),
                    }
                }
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guarded("read", || match self.0.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(err(e)),
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guarded("write", || match self.0.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        });
    }

    /// Preallocation. Modes 0 and `FALLOC_FL_KEEP_SIZE` are offered (zeros are holes here, so
    /// there is nothing to reserve, see [`Fs::fallocate`]); punching holes, zeroing, collapsing
    /// or inserting ranges are not (`EOPNOTSUPP`, which programs take as "do it by hand").
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guarded("fallocate", || {
            if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
                return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
            }
            let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
            match self.0.fallocate(fh.0, offset, length, keep_size) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    /// No ioctls: files here are plain files. `ENOTTY` is what a plain file answers to
    /// terminal ioctls (Python's `open` asks `TCGETS` every time), without a log line each.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        guarded("ioctl", || {
            reply.error(Errno::from_i32(libc::ENOTTY));
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        guarded("flush", || match self.0.flush_from(fh.0, req.pid()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded("release", || match self.0.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsync", || match self.0.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded("opendir", || {
            if let Err(e) = self.allowed(req, ino, R) {
                return reply.error(e);
            }
            match self.0.opendir(ino.0) {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded("readdir", || {
            let result = self.0.readdir(fh.0, offset, |e, next| {
                reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name)
            });
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(err(e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        guarded("releasedir", || {
            self.0.releasedir(fh.0);
            reply.ok();
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsyncdir", || {
            // Namespace changes are committed when they happen; make them durable.
            match self.0.store().sync() {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(err(e.into())),
            }
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || match self.0.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, 255, s.bsize,
            ),
            Err(e) => reply.error(err(e)),
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guarded("setxattr", || {
            reply.error(Errno::from_i32(NO_XATTRS));
        });
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        guarded("getxattr", || {
            reply.error(Errno::from_i32(NO_XATTRS));
        });
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || {
            // No attributes: an empty list, so `ls -l`, `cp -a` and friends carry on quietly.
            if size == 0 {
                reply.size(0);
            } else {
                reply.data(&[]);
            }
        });
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
            reply.error(Errno::from_i32(NO_XATTRS));
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        guarded("access", || {
            match self.allowed(req, ino, mask.bits() as u32) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded("create", || {
            if let Err(e) = self.allowed_in(req, parent, W | X) {
                return reply.error(e);
            }
            match self
                .0
                .create(parent.0, name, mode & !umask, OpenMode::from_flags(flags))
            {
                Ok((a, fh)) => {
                    self.0.set_owner(fh, req.pid());
                    let ino = a.ino;
                    let reply = move || {
                        reply.created(
                            &TTL,
                            &file_attr(&a),
                            Generation(0),
                            FileHandle(fh),
                            FopenFlags::empty(),
                        )
                    };
                    // An existing file opened for writing: as in `open`.
                    self.0.fill.when_settled(ino, Box::new(reply));
                }
                Err(e) => reply.error(err(e)),
            }
        });
    }
}

/// Mount options: named `fybrk` in the mount table, no atime updates.
///
/// Not `default_permissions`: with it, the kernel checks mode bits itself, and since every
/// create, unlink or rename invalidates the directory's attributes, it first fetched them again
/// with a `GETATTR` round trip, a sixth of the cost of creating a small file. Without it only
/// the mounting user (and not even root) can reach the folder at all, and the requests that
/// need a permission check it here (`FuseFs::allowed`, [`Fs::check_access`]), with the mode
/// bits as stored, never stale.
pub fn mount_config() -> Config {
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("fybrk".into()),
        MountOption::Subtype("fybrk".into()),
        MountOption::NoAtime,
    ];
    cfg.n_threads = Some(THREADS);
    cfg.clone_fd = true;
    cfg
}

/// Mounts `fs` at `mountpoint` and serves it on background threads until unmounted.
pub fn spawn_mount(fs: Arc<Fs>, mountpoint: &Path) -> std::io::Result<fuser::BackgroundSession> {
    fuser::spawn_mount(FuseFs(fs), mountpoint, &mount_config())
}

/// Tells the kernel to forget what it caches about paths a peer changed: the directory entries
/// (so the next lookup finds the new version or nothing) and the inodes' attributes and pages.
/// Call it from a thread that is not serving FUSE requests (the kernel may wait on one).
pub fn invalidate(notifier: &fuser::Notifier, changes: &[crate::fs::Invalidation]) {
    for c in changes {
        // ENOENT means the kernel had nothing cached: the normal case for a new name.
        if let Some(parent) = c.parent {
            if let Err(e) = notifier.inval_entry(INodeNo(parent), OsStr::new(&c.name)) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    tracing::debug!(name = %c.name, error = %e, "cannot invalidate entry");
                }
            }
        }
        if let Some(ino) = c.ino {
            if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    tracing::debug!(ino, error = %e, "cannot invalidate inode");
                }
            }
        }
    }
}
