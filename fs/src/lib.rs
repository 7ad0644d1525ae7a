//! fybrk's filesystem.
//!
//! [`Fs`] is the filesystem as plain methods on inode numbers and handles (lookup, create,
//! read, write, rename, ...): tests call it without a mount. [`fuse`] is a thin `fuser` adapter
//! that only translates requests and errno values. Content handling of open files (write
//! buffering, staging to disk, incremental re-chunking) lives in `content`.
//! [`metrics`] counts every FUSE request and its latency (atomics only) for the daemon's
//! `/metrics`.
//!
//! Semantics worth knowing: writes are buffered per open file and committed on `flush` (every
//! `close`), `fsync` and `release`; `fsync` also makes them durable. Hard links are refused with
//! `EPERM`, extended attributes with `ENOTSUP`, `chown` to another owner with `EPERM`, and names
//! must be UTF-8 (`EILSEQ` otherwise). POSIX locks are handled by the kernel. `mknod` makes
//! regular files only (FIFOs, sockets and devices: `EPERM`). Sparse files keep their holes
//! unstored; files end at [`MAX_FILE_SIZE`] (`EFBIG`). A directory's times change with its
//! entries. A request whose handler fails answers `EIO` and logs; a panic in one is caught
//! the same way, so the mount keeps serving.

#[cfg(test)]
mod attrs_tests;
mod content;
mod error;
mod fill;
#[cfg(test)]
mod fill_tests;
mod fs;
pub mod fuse;
mod inodes;
mod layout;
pub mod metrics;
#[cfg(test)]
mod prealloc_tests;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod robust_tests;
mod stream;
mod travel;
#[cfg(test)]
mod travel_tests;
pub mod when;

pub use error::{FsError, FsResult};
pub use fs::{Attr, DirEntry, Fs, FsConfig, Invalidation, OpenMode, SetAttr, StatFs, Unreadable};
pub use inodes::ROOT;
pub use layout::MAX_FILE_SIZE;
