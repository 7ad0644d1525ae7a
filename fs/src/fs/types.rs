//! The plain values [`Fs`](super::Fs) takes and returns: configuration, attributes, directory
//! entries, open modes, usage, and what the kernel must forget after a peer's change.

use std::path::PathBuf;

use fybrk_store::Kind;

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

/// What the kernel must forget after a peer changed a path: see
/// [`Fs::changed_remotely`](super::Fs::changed_remotely).
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
