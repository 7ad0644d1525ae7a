//! Refusing new content while the disk still has room for what the database already holds.
//!
//! When the disk fills up under RocksDB, a memtable flush fails and RocksDB waits for space to
//! come back; writers that find the memtables full then wait in its write stall, without an
//! error, for as long as the disk stays full (a FUSE write hung for good in the full-disk test).
//! So new chunks are refused with `ENOSPC` while less than [`RESERVE`] is free: enough for every
//! memtable to be flushed (24 MiB in all, see `db::open`) plus the blob and table files' own
//! overhead. Deleting files still works on a full disk: it writes no chunks.

use std::io;

use super::Store;
use crate::{Result, StoreError};

/// Space kept free for RocksDB's own flushes and compactions.
pub const RESERVE: u64 = 32 << 20;

impl Store {
    /// Fails with `ENOSPC` when writing `bytes` of new chunks would leave less than
    /// [`RESERVE`] free on the database's file system. A file system that cannot say how much
    /// is free is not second-guessed.
    pub(super) fn ensure_room(&self, bytes: u64) -> Result<()> {
        let Ok(stat) = nix::sys::statvfs::statvfs(self.inner.db.path()) else {
            return Ok(());
        };
        let free = stat.blocks_available().saturating_mul(stat.fragment_size());
        if free < bytes.saturating_add(RESERVE) {
            return Err(StoreError::Io(io::Error::from_raw_os_error(28)));
        }
        Ok(())
    }
}
