//! What replication needs from a store, as a small trait: [`ReplicaStore`] for records, the
//! change log and the conditional commit of remote versions, and [`Staging`] for the chunks of
//! a remote record on their way in (pinned until the record commits).
//!
//! [`crate::store_driver::StoreReplica`] runs against this trait only. Two implementations:
//!
//! - `rocks`: the production one, thin delegation to [`fybrk_store::Store`] and its
//!   [`fybrk_store::ChunkWriter`].
//! - `mem` (tests only): an in-memory store with the same contract, which the simulator (`sim`)
//!   runs the real driver against: conditional commits that fail with [`StoreError::Changed`],
//!   pins that garbage collection respects, chunks verified against their ids.
//!
//! Errors are [`StoreError`]s: the driver tells a chunk that failed verification
//! ([`StoreError::CorruptChunk`]) and a stale decision ([`StoreError::Changed`]) from a store
//! that failed (everything else, which ends the session).

use fybrk_store::{ChunkId, ChunkRef, FileRecord, StoreError, Versioning};

#[cfg(test)]
pub(crate) mod mem;
mod rocks;

/// A folder's store as replication sees it. Every method takes `&self`: a store is a shared
/// handle (one per session, all clones of one store), and local writes may land between any
/// two calls.
pub trait ReplicaStore {
    /// Chunks of one remote record being received, pinned until the record commits.
    type Staging: Staging;

    /// The last local sequence number (the change log's head).
    fn sequence(&self) -> u64;

    /// The record at `path`, live or a tombstone.
    fn get(&self, path: &str) -> Result<Option<FileRecord>, StoreError>;

    /// Every record changed after sequence `since`, oldest first.
    fn changes_since(&self, since: u64) -> Result<Vec<FileRecord>, StoreError>;

    /// True when the store holds chunk `id` (committed, or written ahead of a commit and
    /// pinned).
    fn has_chunk(&self, id: &ChunkId) -> Result<bool, StoreError>;

    /// Chunk `id` sealed as stored (what a peer is sent), `None` when the store lacks it.
    fn read_sealed(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError>;

    /// An empty staging area. Dropping it releases its pins (and the chunks it held back that
    /// no commit took).
    fn staging(&self) -> Self::Staging;

    /// Commits `changes` in one atomic batch together with the chunks `staging` holds. A
    /// [`Versioning::Remote`] record keeps its version vector and fails the whole commit with
    /// [`StoreError::Changed`] (nothing written) when the record at its path is no longer the
    /// one with sequence `based_on`; a [`Versioning::Local`] one is bumped for this device.
    /// A live file record whose chunks the store does not hold fails with
    /// [`StoreError::MissingChunk`]. Not necessarily durable: see [`ReplicaStore::sync`].
    fn commit_changes(
        &self,
        changes: Vec<(FileRecord, Versioning)>,
        staging: &mut Self::Staging,
    ) -> Result<(), StoreError>;

    /// Makes every commit so far durable.
    fn sync(&self) -> Result<(), StoreError>;
}

/// Chunks of a remote record on their way into the store. Everything it holds or pins stays
/// safe from garbage collection until it is dropped.
pub trait Staging {
    /// Pins chunks the record shares with what the store already has, so GC cannot free them
    /// between the lookup and the commit. Pin before looking them up.
    fn pin(&mut self, chunks: &[ChunkRef]);

    /// Verifies sealed bytes received for chunk `id` and keeps them (pinned) for the commit.
    /// Bytes that do not authenticate or do not match `id` fail with
    /// [`StoreError::CorruptChunk`] and are not kept.
    fn add_sealed(&mut self, id: &ChunkId, sealed: Vec<u8>) -> Result<(), StoreError>;

    /// Writes the chunks held back so far into the store now (still pinned, unreferenced until
    /// a commit uses them), so [`ReplicaStore::has_chunk`] sees them.
    fn flush(&mut self) -> Result<(), StoreError>;
}
