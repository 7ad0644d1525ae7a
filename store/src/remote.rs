//! Where a store gets content it references but does not hold: an on-demand device's remote
//! files, or content it evicted. The store knows nothing of the network; the daemon plugs in
//! an implementation ([`crate::Store::set_remote`]) that asks connected peers.

use crate::ChunkId;

/// A source of chunk bytes that are not stored here. Implementations store what they fetch
/// (through a [`crate::ChunkWriter`]) before they answer.
pub trait Remote: Send + Sync {
    /// Blocks until chunk `id` is stored here (`Ok`) or cannot be had (`Err` says why, in
    /// words for a log line). Must return within a bounded time (the daemon's: 8 s) whatever
    /// the peers do.
    fn fetch(&self, id: &ChunkId) -> Result<(), String>;

    /// Asks for `ids` without waiting for them (read-ahead of a sequential read).
    fn prefetch(&self, ids: &[ChunkId]);
}
