//! Compaction of the chunk log: deleted and evicted chunks leave dead bytes in their log
//! files; a file with no live chunk is deleted, and one less than half live has its live
//! chunks copied to the active file first. The disk then holds at most about twice the live
//! bytes plus the active file.
//!
//! Safe beside writers and readers without stopping them:
//! - Live bytes come from a snapshot of the index taken under the write lock, with the
//!   number of the active file: appends (under the same lock) go only to that file or later
//!   ones, so a sealed file's live set can only shrink after the snapshot.
//! - A chunk is moved by appending a copy, syncing the log, then swapping its index entry
//!   under the write lock only if it still names the old place (the chunk may have been
//!   deleted, evicted or fetched again meanwhile); the swap is synced before the old file
//!   is deleted.
//! - A reader that looked up the old place and finds the file gone looks up again
//!   (`Store::get_sealed`).

use std::collections::{HashMap, HashSet};

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use super::{lock, Store};
use crate::chunklog::{Location, FILE_BYTES};
use crate::db::PLACES;
use crate::{ChunkId, Result};

/// Live chunks are copied in steps of about this many bytes (each a sync and a short hold of
/// the write lock).
const MOVE_STEP: u64 = 4 << 20;

/// What one compaction of the chunk log did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCompaction {
    /// Log files deleted.
    pub files_removed: u64,
    /// Bytes those files took.
    pub bytes_removed: u64,
    /// Live bytes copied out of half-dead files first.
    pub bytes_moved: u64,
}

impl Store {
    /// Deletes dead chunk log files and rewrites half-dead ones (see the module doc).
    pub(crate) fn compact_log(&self) -> Result<LogCompaction> {
        let _one = lock(&self.inner.compacting);
        let mut report = LogCompaction::default();
        let (mut active, mut live) = self.live_log_bytes()?;
        let mut files = self.inner.log.files()?;
        // The active file, mostly dead, is sealed and everything looked at again, so it can be
        // reclaimed like any sealed file (appends may have landed after the first snapshot).
        let live_of = |live: &HashMap<u32, u64>, n: u32| live.get(&n).copied().unwrap_or(0);
        if files
            .iter()
            .any(|&(n, size)| n == active && size >= FILE_BYTES / 4 && live_of(&live, n) * 2 < size)
        {
            self.inner.log.roll_now()?;
            (active, live) = self.live_log_bytes()?;
            files = self.inner.log.files()?;
        }
        let mut rewrite = Vec::new();
        for (n, size) in files.into_iter().filter(|&(n, _)| n < active) {
            let live = live_of(&live, n);
            if live == 0 {
                self.inner.log.remove(n)?;
                report.files_removed += 1;
                report.bytes_removed += size;
            } else if live * 2 < size {
                rewrite.push((n, size));
            }
        }
        let mut chunks = self.chunks_in(rewrite.iter().map(|&(n, _)| n).collect())?;
        for (n, size) in rewrite {
            match self.move_chunks(chunks.remove(&n).unwrap_or_default()) {
                Ok(moved) => {
                    report.bytes_moved += moved;
                    self.inner.log.remove(n)?;
                    report.files_removed += 1;
                    report.bytes_removed += size;
                }
                // A damaged chunk cannot be copied (verify names it); the file stays, the
                // others are still compacted.
                Err(e) => tracing::warn!(
                    file = n,
                    error = %e,
                    "cannot move the live chunks out of a chunk log file; it stays"
                ),
            }
        }
        if report != LogCompaction::default() {
            tracing::debug!(?report, "compacted the chunk log");
        }
        Ok(report)
    }

    /// The active file's number and the live bytes of every log file, from one snapshot
    /// taken under the write lock.
    fn live_log_bytes(&self) -> Result<(u32, HashMap<u32, u64>)> {
        let (active, snap) = {
            let _st = lock(&self.inner.write);
            (self.inner.log.active_file(), self.inner.db.snapshot())
        };
        let mut live: HashMap<u32, u64> = HashMap::new();
        for item in snap.iterator_cf(self.cf(PLACES), IteratorMode::Start) {
            let (_, value) = item?;
            if let Some(loc) = Location::decode(&value) {
                *live.entry(loc.file).or_default() += u64::from(loc.len);
            }
        }
        Ok((active, live))
    }

    /// The chunks that lie in each of the sealed log `files`, in file order (one pass over
    /// the index for all of them).
    fn chunks_in(&self, files: HashSet<u32>) -> Result<HashMap<u32, Vec<(ChunkId, Location)>>> {
        let mut out: HashMap<u32, Vec<(ChunkId, Location)>> = HashMap::new();
        if files.is_empty() {
            return Ok(out);
        }
        let snap = self.inner.db.snapshot();
        for item in snap.iterator_cf(self.cf(PLACES), IteratorMode::Start) {
            let (key, value) = item?;
            let (Ok(raw), Some(loc)) = (<[u8; 32]>::try_from(&key[..]), Location::decode(&value))
            else {
                continue;
            };
            if files.contains(&loc.file) {
                out.entry(loc.file).or_default().push((ChunkId(raw), loc));
            }
        }
        for chunks in out.values_mut() {
            chunks.sort_by_key(|(_, l)| l.offset);
        }
        Ok(out)
    }

    /// Copies `chunks` (all of one sealed file) to the active file in steps of
    /// [`MOVE_STEP`] and points the index at the copies; returns the bytes copied.
    /// Afterwards nothing points into their file.
    fn move_chunks(&self, chunks: Vec<(ChunkId, Location)>) -> Result<u64> {
        let mut moved = 0;
        let mut step = Vec::new();
        let mut bytes = 0;
        for c in chunks {
            bytes += u64::from(c.1.len);
            step.push(c);
            if bytes >= MOVE_STEP {
                moved += self.move_step(&step)?;
                step.clear();
                bytes = 0;
            }
        }
        if !step.is_empty() {
            moved += self.move_step(&step)?;
        }
        Ok(moved)
    }

    /// Moves one step of chunks (see the module doc).
    fn move_step(&self, chunks: &[(ChunkId, Location)]) -> Result<u64> {
        let mut copies = Vec::with_capacity(chunks.len());
        for (id, loc) in chunks {
            copies.push(self.read_logged(id, loc)?);
        }
        let refs: Vec<&[u8]> = copies.iter().map(Vec::as_slice).collect();
        let new = self.inner.log.append(&refs)?;
        self.inner.log.sync()?;
        let _st = lock(&self.inner.write);
        let mut batch = WriteBatch::default();
        let mut moved = 0;
        for ((id, old), new) in chunks.iter().zip(&new) {
            // Only if it is still where it was: deleted, evicted or fetched again meanwhile,
            // the copy is dead bytes for a later compaction.
            let now = self.inner.db.get_pinned_cf(self.cf(PLACES), id.0)?;
            if now.as_deref().and_then(Location::decode) == Some(*old) {
                batch.put_cf(self.cf(PLACES), id.0, new.encode());
                moved += u64::from(new.len);
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.inner.db.write_opt(batch, &opts)?;
        Ok(moved)
    }
}
