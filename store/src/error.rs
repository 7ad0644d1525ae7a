//! The store's one error type.

use crate::ChunkId;

/// What went wrong inside the store. Every variant names what failed so the daemon can tell a
/// user what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed (I/O error, disk full, corruption reported by RocksDB itself).
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
    /// A plain I/O error outside RocksDB (staging files, key files).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A chunk failed authentication or its plaintext does not hash to its id.
    #[error("chunk {0} is damaged: {1}")]
    CorruptChunk(ChunkId, &'static str),
    /// A record references a chunk the store does not hold.
    #[error("chunk {0} is missing from the store")]
    MissingChunk(ChunkId),
    /// A stored record or metadata value could not be decoded.
    #[error("stored record {key} cannot be decoded: {reason}")]
    CorruptRecord {
        /// The key (path) of the record.
        key: String,
        /// Why decoding failed.
        reason: String,
    },
    /// A remote version was decided against a local record that has changed since.
    #[error("{path} changed while a remote version was being applied; decide again")]
    Changed {
        /// The path that changed.
        path: String,
    },
    /// A peer's record claims a chunk length that differs from the stored chunk's plaintext
    /// length: the record is refused (reads would return wrong bytes or fail).
    #[error("{path}: chunk {chunk} is {actual} bytes, but the record claims {claimed}")]
    ChunkLength {
        /// The record's path.
        path: String,
        /// The chunk whose length differs.
        chunk: ChunkId,
        /// The length the record claims.
        claimed: u32,
        /// The chunk's real plaintext length.
        actual: u64,
    },
    /// A chunk is sealed under a key of the folder this device does not hold (yet): a later
    /// key reaches members with the member list, so it is worth asking again soon.
    #[error("chunk needs the folder's key {0:016x}, which this device does not hold yet")]
    UnknownKey(u64),
    /// Content this device references but does not hold (an on-demand device's remote file,
    /// or content it evicted), and no connected peer could supply it in time.
    #[error("chunk {chunk} is not stored on this device and could not be fetched: {why}")]
    Unavailable {
        /// The chunk.
        chunk: ChunkId,
        /// Why the fetch failed (no peer connected, no peer has it, timed out).
        why: String,
    },
    /// The folder key does not match the one this store was created with.
    #[error("the folder key does not match this store (wrong folder.key?)")]
    WrongKey,
}

impl StoreError {
    /// True when the failure is the disk running out of space, so callers can report `ENOSPC`.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io(e) => e.raw_os_error() == Some(libc_enospc()),
            StoreError::Db(e) => {
                let s = e.to_string();
                s.contains("No space left") || s.contains("NoSpace")
            }
            _ => false,
        }
    }
}

/// `ENOSPC` on Linux; the store does not depend on libc for one constant.
const fn libc_enospc() -> i32 {
    28
}

/// Result alias used across the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
