//! fybrk's storage: content-defined chunks, encrypted and stored once, and the folder index.
//!
//! This crate owns everything fybrk keeps on disk for one folder, in one RocksDB database and
//! the chunk log beside it:
//!
//! - [`chunker`]: FastCDC cut points (16 / 64 / 256 KiB).
//! - `chunklog`: the files large writes' sealed chunks are appended to, beside the database.
//! - [`crypto`]: the folder key, keyed-BLAKE3 chunk ids and AES-256-GCM sealing.
//! - [`keyfile`]: `folder.key`, the folder's id and every key it has had.
//! - [`keys`]: the folder's keys over time (one more per removed member) and chunk envelopes.
//! - [`record`]: file records with version vectors, and how paths become keys.
//! - [`history`]: every kept version of every path, the folder as it was at a time, and
//!   retention.
//! - [`Store`]: the chunk store (one copy per distinct chunk), the path index, the local change
//!   log, reference counts, garbage collection and `verify`.
//!
//! A record, its new chunks, its reference counts and its change-log entry commit in one write
//! batch ([`Store::commit`]), so a crash leaves the old version or the new one, never a mix.
//! The store knows nothing of FUSE or the network.

mod cache;
pub mod chunker;
mod chunklog;
pub mod crypto;
mod db;
mod error;
mod gc;
pub mod history;
pub mod keyfile;
pub mod keys;
pub mod naming;
pub mod record;
pub mod remote;
mod residency;
mod store;

pub use cache::CacheStats;
pub use crypto::{ChunkId, Crypto, FolderKey};
pub use error::{Result, StoreError};
pub use gc::{GcReport, VerifyReport};
pub use keyfile::FolderKeys;
pub use keys::{KeyId, FIRST_KEY};
pub use record::{ChunkRef, FileRecord, Kind, VersionVector};
pub use remote::Remote;
pub use store::{
    ChunkWriter, CommitWatcher, Committed, EvictReport, FreshChunks, Locality, Pins, Stats, Store,
    StoreOptions, Versioning,
};
#[cfg(test)]
mod chunklog_store_tests;
#[cfg(test)]
mod ondemand_tests;
#[cfg(test)]
mod tests;
