//! Filesystem errors and the one table that turns them into errno values.

use fybrk_store::StoreError;

/// What an operation on the filesystem can fail with.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such file, directory or handle target.
    #[error("no such file or directory")]
    NotFound,
    /// The name is taken.
    #[error("file exists")]
    Exists,
    /// A directory was expected.
    #[error("not a directory")]
    NotDir,
    /// A non-directory was expected.
    #[error("is a directory")]
    IsDir,
    /// The directory has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// An argument makes no sense (moving a directory into itself, a bad offset, ...).
    #[error("invalid argument")]
    Invalid,
    /// A name longer than 255 bytes.
    #[error("file name too long")]
    NameTooLong,
    /// A name that is not UTF-8 (names must sync to every platform).
    #[error("file name is not valid UTF-8")]
    IllegalName,
    /// A feature fybrk does not offer (hard links, extended attributes, ownership changes).
    #[error("operation not permitted")]
    NotPermitted,
    /// The mode bits do not allow the caller this access.
    #[error("permission denied")]
    Denied,
    /// The file would grow past [`MAX_FILE_SIZE`](crate::MAX_FILE_SIZE).
    #[error("file too large")]
    TooBig,
    /// The handle is unknown or not open for this operation.
    #[error("bad file handle")]
    BadHandle,
    /// Files are open where the operation needs none (swapping the store when joining).
    #[error("files in the folder are open")]
    Busy,
    /// The time-travel tree (`.fybrk`) cannot be changed.
    #[error("read-only file system")]
    ReadOnly,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Staging I/O failed.
    #[error("staging I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand used throughout the crate.
pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// The errno the kernel should return to the application.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::IllegalName => libc::EILSEQ,
            FsError::NotPermitted => libc::EPERM,
            FsError::Denied => libc::EACCES,
            FsError::TooBig => libc::EFBIG,
            FsError::BadHandle => libc::EBADF,
            FsError::Busy => libc::EBUSY,
            FsError::ReadOnly => libc::EROFS,
            FsError::Store(e) if e.is_disk_full() => libc::ENOSPC,
            // Content held by other devices that none could supply (an on-demand device
            // offline, say): "No route to host" says where the bytes are.
            FsError::Store(StoreError::Unavailable { .. }) => libc::EHOSTUNREACH,
            FsError::Store(_) => libc::EIO,
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}
