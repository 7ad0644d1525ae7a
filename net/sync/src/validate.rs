//! What a record from a peer must satisfy before it is stored or relayed.
//!
//! A peer is authenticated, not trusted: a buggy or hostile device must not be able to make
//! this one store a record that breaks the mount (a path escaping the folder, a chunk list
//! whose lengths disagree with the file's size, setuid bits, a version that can never be
//! superseded). [`check_record`] is pure: the caller passes the wall-clock time.

use fybrk_store::chunker::MAX_CHUNK;
use fybrk_store::{FileRecord, Kind};

/// The largest file the mount serves: 8 TiB. Duplicated from `fybrk_fs::layout::MAX_FILE_SIZE`
/// (this crate must not depend on the filesystem); keep the two equal.
pub const MAX_FILE_SIZE: u64 = 1 << 43;
/// Longest path in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Longest name component in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Deepest path in components.
pub const MAX_DEPTH: usize = 256;
/// Longest symlink target in bytes (`PATH_MAX` less its NUL).
pub const MAX_TARGET: usize = 4095;
/// Most devices in one version vector.
pub const MAX_VERSION_ENTRIES: usize = 1024;
/// Highest version counter accepted. A device's counter grows by one per change it makes:
/// 2^48 changes is a million per second for nine years, so no honest device gets there, while
/// a peer announcing `u64::MAX` would make a version no later change could ever supersede
/// (the path pinned forever). The margin up to `u64::MAX` is left for real changes.
pub const MAX_COUNTER: u64 = 1 << 48;
/// Mode bits a record may carry: permissions and the sticky bit; no setuid/setgid, no file type.
pub const ALLOWED_MODE: u32 = 0o1777;
/// How far in the future an mtime may be: clocks drift, but not by a day.
pub const MAX_FUTURE_NS: i64 = 86_400 * 1_000_000_000;
/// Earliest mtime accepted: 1900-01-01T00:00:00Z in nanoseconds since the epoch.
pub const MIN_MTIME_NS: i64 = -2_208_988_800 * 1_000_000_000;
/// The reserved top-level name (the mount's hidden time-travel tree): never synced.
pub const RESERVED: &str = ".fybrk";

/// Why a record from a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Empty path.
    #[error("empty path")]
    EmptyPath,
    /// Path longer than [`MAX_PATH`] bytes.
    #[error("path is {0} bytes, more than {MAX_PATH}")]
    PathTooLong(usize),
    /// Path deeper than [`MAX_DEPTH`] components.
    #[error("path has {0} components, more than {MAX_DEPTH}")]
    PathTooDeep(usize),
    /// A NUL byte in the path.
    #[error("path contains a NUL byte")]
    NulInPath,
    /// Absolute path, trailing `/` or `//`.
    #[error("path has an empty component (leading, trailing or double '/')")]
    EmptyComponent,
    /// `.` or `..` as a component.
    #[error("path has a '.' or '..' component")]
    DotComponent,
    /// A component longer than [`MAX_NAME`] bytes.
    #[error("a path component is {0} bytes, more than {MAX_NAME}")]
    NameTooLong(usize),
    /// The path is `.fybrk` or under it.
    #[error("path is under the reserved name {RESERVED}")]
    Reserved,
    /// Mode bits outside [`ALLOWED_MODE`].
    #[error("mode {0:#o} has setuid, setgid or file-type bits")]
    BadMode(u32),
    /// A chunk of length 0.
    #[error("a chunk has length 0")]
    EmptyChunk,
    /// A data chunk longer than the chunker ever cuts.
    #[error("a chunk is {0} bytes, more than {MAX_CHUNK}")]
    ChunkTooLong(u32),
    /// `size` is not the sum of the chunk lengths.
    #[error("size {size} is not the sum of the chunk lengths ({sum})")]
    SizeMismatch {
        /// The record's size.
        size: u64,
        /// Sum of its chunk lengths (saturated).
        sum: u64,
    },
    /// Larger than [`MAX_FILE_SIZE`].
    #[error("size {0} is more than the {MAX_FILE_SIZE}-byte file limit")]
    TooLarge(u64),
    /// A directory or symlink with chunks.
    #[error("a directory or symlink has chunks")]
    ChunksOnNonFile,
    /// A symlink without a usable target.
    #[error("symlink target is missing, empty, longer than {MAX_TARGET} bytes or has a NUL")]
    BadTarget,
    /// Too many version-vector entries.
    #[error("version vector has {0} entries, more than {MAX_VERSION_ENTRIES}")]
    VersionTooWide(usize),
    /// A counter of 0 or above [`MAX_COUNTER`].
    #[error("version counter {0} is outside 1..={MAX_COUNTER}")]
    BadCounter(u64),
    /// mtime more than a day ahead of now.
    #[error("mtime is more than a day in the future")]
    FutureMtime,
    /// mtime before 1900.
    #[error("mtime is before 1900")]
    AncientMtime,
}

/// Checks a record received from a peer. `now_ns` is the wall-clock time (ns since the epoch).
pub fn check_record(r: &FileRecord, now_ns: i64) -> Result<(), Invalid> {
    check_path(&r.path)?;
    check_version(r)?;
    if r.deleted {
        // A tombstone's content fields are never used.
        return Ok(());
    }
    if r.mode & !ALLOWED_MODE != 0 {
        return Err(Invalid::BadMode(r.mode));
    }
    if r.mtime_ns > now_ns.saturating_add(MAX_FUTURE_NS) {
        return Err(Invalid::FutureMtime);
    }
    if r.mtime_ns < MIN_MTIME_NS {
        return Err(Invalid::AncientMtime);
    }
    match r.kind {
        Kind::File => check_chunks(r),
        Kind::Dir => no_chunks(r),
        Kind::Symlink => {
            no_chunks(r)?;
            match &r.target {
                Some(t) if !t.is_empty() && t.len() <= MAX_TARGET && !t.contains('\0') => Ok(()),
                _ => Err(Invalid::BadTarget),
            }
        }
    }
}

fn check_path(path: &str) -> Result<(), Invalid> {
    if path.is_empty() {
        return Err(Invalid::EmptyPath);
    }
    if path.len() > MAX_PATH {
        return Err(Invalid::PathTooLong(path.len()));
    }
    if path.contains('\0') {
        return Err(Invalid::NulInPath);
    }
    let mut depth = 0;
    for (i, c) in path.split('/').enumerate() {
        depth += 1;
        if c.is_empty() {
            return Err(Invalid::EmptyComponent);
        }
        if c == "." || c == ".." {
            return Err(Invalid::DotComponent);
        }
        if c.len() > MAX_NAME {
            return Err(Invalid::NameTooLong(c.len()));
        }
        if i == 0 && c == RESERVED {
            return Err(Invalid::Reserved);
        }
    }
    if depth > MAX_DEPTH {
        return Err(Invalid::PathTooDeep(depth));
    }
    Ok(())
}

fn check_version(r: &FileRecord) -> Result<(), Invalid> {
    let v = &r.version.0;
    if v.len() > MAX_VERSION_ENTRIES {
        return Err(Invalid::VersionTooWide(v.len()));
    }
    match v.values().find(|&&c| c == 0 || c > MAX_COUNTER) {
        Some(&c) => Err(Invalid::BadCounter(c)),
        None => Ok(()),
    }
}

/// Every chunk non-empty, data chunks within the chunker's maximum (a hole may be up to
/// `u32::MAX`, see `fybrk_fs::layout::HOLE_PIECE`), and the lengths summing to `size`. Since
/// every chunk is at least one byte, the chunk count is bounded by the size too.
fn check_chunks(r: &FileRecord) -> Result<(), Invalid> {
    if r.size > MAX_FILE_SIZE {
        return Err(Invalid::TooLarge(r.size));
    }
    let mut sum: u64 = 0;
    for c in &r.chunks {
        if c.len == 0 {
            return Err(Invalid::EmptyChunk);
        }
        if !c.is_hole() && c.len > MAX_CHUNK {
            return Err(Invalid::ChunkTooLong(c.len));
        }
        sum = sum.saturating_add(u64::from(c.len));
        if sum > r.size {
            break;
        }
    }
    if sum != r.size {
        return Err(Invalid::SizeMismatch { size: r.size, sum });
    }
    Ok(())
}

fn no_chunks(r: &FileRecord) -> Result<(), Invalid> {
    if r.chunks.is_empty() {
        Ok(())
    } else {
        Err(Invalid::ChunksOnNonFile)
    }
}

#[cfg(test)]
mod tests;
