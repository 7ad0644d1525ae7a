//! On-demand devices: content referenced here but held elsewhere, the budget of chunks held,
//! eviction, pinned paths, and which chunks other devices are known to hold.
//!
//! A chunk's refs entry says whether its bytes are here (`RefEntry::ABSENT`) and whether
//! another device is known to have them (`RefEntry::ELSEWHERE`). Eviction drops only chunks
//! that are elsewhere, that no open file or writer pins, and that no pinned path uses; so a
//! chunk written here is never dropped before another device holds it, and neither is kept
//! history that only this device has.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rocksdb::{IteratorMode, WriteBatch};
use serde::Serialize;

use super::{lock, Store};
use crate::db::{RefEntry, CHUNKS, META, PLACES, REFS};
use crate::{ChunkId, FileRecord, Kind, Result};

/// Candidates looked at per eviction pass: bounds how long a pass holds the write lock.
const PASS: usize = 8192;

/// What an eviction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EvictReport {
    /// Chunks dropped.
    pub evicted_chunks: u64,
    /// Their sealed bytes.
    pub evicted_bytes: u64,
    /// Candidates kept because no other device is known to hold them.
    pub kept_only_here: u64,
    /// Candidates kept because an open file, a writer or a pinned path uses them.
    pub kept_pinned: u64,
}

/// How much of a file's content is on this device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Locality {
    /// Bytes of stored chunks held here.
    pub local_bytes: u64,
    /// Bytes of stored chunks (holes excluded).
    pub total_bytes: u64,
}

impl Store {
    /// True for an on-demand device ([`crate::StoreOptions::cache_budget`]).
    pub fn on_demand(&self) -> bool {
        self.inner.residency.is_some()
    }

    /// True when this store was ever on-demand, so records may lack their content here (a
    /// full store that never was needs no walk to know it holds everything).
    pub fn may_lack_content(&self) -> Result<bool> {
        Ok(self.on_demand() || self.inner.db.get_cf(self.cf(META), b"on_demand")?.is_some())
    }

    /// A full store that fetched every chunk it lacked: [`Store::may_lack_content`] is false
    /// from now on (until it is opened on-demand again).
    pub fn holds_everything(&self) -> Result<()> {
        if !self.on_demand() {
            self.inner.db.delete_cf(self.cf(META), b"on_demand")?;
        }
        Ok(())
    }

    /// Bytes of chunks held and the budget, on an on-demand device.
    pub fn cache_usage(&self) -> Option<(u64, u64)> {
        let r = lock(self.inner.residency.as_ref()?);
        Some((r.used(), r.budget()))
    }

    /// Sets where reads get chunks that are referenced here but not held (see
    /// [`crate::Remote`]). Without one such a read is [`crate::StoreError::Unavailable`].
    pub fn set_remote(&self, remote: Option<Arc<dyn crate::Remote>>) {
        *self.inner.remote.write().unwrap_or_else(|p| p.into_inner()) = remote;
    }

    /// Asks the remote for chunks without waiting (read-ahead); only those not held here.
    pub fn prefetch(&self, ids: &[ChunkId]) -> Result<()> {
        let Some(remote) = self.remote() else {
            return Ok(());
        };
        let mut absent = Vec::new();
        for id in ids.iter().filter(|id| !id.is_hole()) {
            if self.stored_entry(id)?.is_some_and(|e| !e.is_here()) {
                absent.push(*id);
            }
        }
        if !absent.is_empty() {
            remote.prefetch(&absent);
        }
        Ok(())
    }

    /// Makes sure chunk `id` is held here, fetching it through the remote if not (`fybrk pin`).
    pub fn fetch(&self, id: &ChunkId) -> Result<()> {
        if self.has_chunk(id)? {
            return Ok(());
        }
        self.fetch_remote(id)
    }

    fn remote(&self) -> Option<Arc<dyn crate::Remote>> {
        self.inner
            .remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn fetch_remote(&self, id: &ChunkId) -> Result<()> {
        let unavailable = |why: String| crate::StoreError::Unavailable { chunk: *id, why };
        let remote = self
            .remote()
            .ok_or_else(|| unavailable("this device does not fetch content".into()))?;
        remote.fetch(id).map_err(unavailable)
    }

    /// Reads the chunks held into the residency table at open (on-demand devices only).
    pub(super) fn load_residency(&self) -> Result<()> {
        let Some(res) = &self.inner.residency else {
            return Ok(());
        };
        self.inner.db.put_cf(self.cf(META), b"on_demand", [1])?;
        let mut r = lock(res);
        for item in self.ref_entries() {
            let (id, e) = item?;
            if e.is_here() {
                r.insert(id, e.sealed_len);
            }
        }
        Ok(())
    }

    /// Every well-formed refs entry, in key order (malformed ones are `verify`'s to report).
    fn ref_entries(&self) -> impl Iterator<Item = Result<(ChunkId, RefEntry)>> + '_ {
        self.inner
            .db
            .iterator_cf(self.cf(REFS), IteratorMode::Start)
            .filter_map(|item| match item {
                Ok((key, value)) => {
                    let raw = <[u8; 32]>::try_from(&key[..]).ok()?;
                    Some(Ok((ChunkId(raw), RefEntry::decode(&value)?)))
                }
                Err(e) => Some(Err(e.into())),
            })
    }

    /// A read used chunk `id`: it becomes the most recently used.
    pub(super) fn residency_touch(&self, id: &ChunkId) {
        if let Some(res) = &self.inner.residency {
            lock(res).touch(id);
        }
    }

    /// Chunk `id` is stored now; wakes the evictor when that passes the budget.
    pub(super) fn residency_added(&self, id: &ChunkId, sealed_len: u32) {
        if let Some(res) = &self.inner.residency {
            let mut r = lock(res);
            r.insert(*id, sealed_len);
            if r.over() > 0 {
                self.inner.over_budget.notify_all();
            }
        }
    }

    /// Chunk `id` is gone (garbage collected).
    pub(crate) fn residency_removed(&self, id: &ChunkId) {
        if let Some(res) = &self.inner.residency {
            lock(res).remove(id);
        }
    }

    /// Waits until the chunks held pass the budget or `timeout` passes; true when over.
    /// The evictor's loop: `while running { store.evict()?; store.wait_over_budget(..); }`.
    pub fn wait_over_budget(&self, timeout: Duration) -> bool {
        let Some(res) = &self.inner.residency else {
            std::thread::sleep(timeout);
            return false;
        };
        let r = lock(res);
        if r.over() > 0 {
            return true;
        }
        let (r, _) = self
            .inner
            .over_budget
            .wait_timeout(r, timeout)
            .unwrap_or_else(|p| p.into_inner());
        r.over() > 0
    }

    /// Drops least recently used chunks until the chunks held are back under the budget (with
    /// some room), skipping what must stay (see the module doc). Returns at once when within
    /// the budget or on a full device.
    pub fn evict(&self) -> Result<EvictReport> {
        let Some(res) = &self.inner.residency else {
            return Ok(EvictReport::default());
        };
        let (to_free, candidates) = {
            let r = lock(res);
            (r.to_free(), r.oldest(PASS))
        };
        if to_free == 0 {
            return Ok(EvictReport::default());
        }
        let kept = self.pinned_chunks()?;
        let (report, dropped, skipped) = self.drop_chunks(candidates, to_free, &kept)?;
        let mut r = lock(res);
        for id in &dropped {
            r.remove(id);
        }
        // Moved to the back, so the next pass does not look at them first again.
        for id in &skipped {
            r.touch(id);
        }
        drop(r);
        if report.evicted_chunks > 0 {
            tracing::debug!(
                chunks = report.evicted_chunks,
                bytes = report.evicted_bytes,
                "evicted content other devices hold"
            );
            self.compact_after_evicting(report.evicted_bytes);
        }
        Ok(report)
    }

    /// Drops `candidates` (in order) that may go until `to_free` bytes are freed. Returns the
    /// report, the ids no longer held and the ids kept.
    fn drop_chunks(
        &self,
        candidates: Vec<ChunkId>,
        to_free: u64,
        kept: &HashSet<ChunkId>,
    ) -> Result<(EvictReport, Vec<ChunkId>, Vec<ChunkId>)> {
        let mut report = EvictReport::default();
        let mut dropped = Vec::new();
        let mut skipped = Vec::new();
        self.with_write_lock(|stats| {
            // Held across the deletes, as GC does: a writer pins before it looks.
            let pins = lock(&self.inner.pins.counts);
            let mut batch = WriteBatch::default();
            for id in candidates {
                if report.evicted_bytes >= to_free {
                    break;
                }
                let Some(mut e) = self.stored_entry(&id)? else {
                    // Staged by a commit not written yet, or freed: not ours to judge now.
                    skipped.push(id);
                    continue;
                };
                if !e.is_here() {
                    dropped.push(id);
                    continue;
                }
                if e.count == 0 {
                    // Unreferenced: garbage collection's to free.
                    skipped.push(id);
                } else if pins.contains_key(&id) || kept.contains(&id) {
                    report.kept_pinned += 1;
                    skipped.push(id);
                } else if !e.is_elsewhere() {
                    report.kept_only_here += 1;
                    skipped.push(id);
                } else {
                    e.flags |= RefEntry::ABSENT;
                    batch.delete_cf(self.cf(CHUNKS), id.0);
                    batch.delete_cf(self.cf(PLACES), id.0);
                    batch.put_cf(self.cf(REFS), id.0, e.encode());
                    stats.chunks = stats.chunks.saturating_sub(1);
                    stats.stored_bytes = stats.stored_bytes.saturating_sub(u64::from(e.sealed_len));
                    report.evicted_chunks += 1;
                    report.evicted_bytes += u64::from(e.sealed_len);
                    dropped.push(id);
                }
            }
            batch.put_cf(
                self.cf(META),
                b"stats",
                postcard::to_allocvec(stats).unwrap_or_default(),
            );
            self.inner.db.write(batch)?;
            Ok(())
        })?;
        Ok((report, dropped, skipped))
    }

    /// Deleted chunks leave their bytes in blob files until a compaction rewrites them: after
    /// a quarter of the budget (at least 16 MiB) was evicted, compact so the disk follows.
    fn compact_after_evicting(&self, bytes: u64) {
        use std::sync::atomic::Ordering;
        let budget = self.cache_usage().map_or(0, |(_, b)| b);
        let since = self
            .inner
            .evicted_since_compaction
            .fetch_add(bytes, Ordering::Relaxed)
            + bytes;
        if since >= (budget / 4).max(16 << 20) {
            self.inner
                .evicted_since_compaction
                .store(0, Ordering::Relaxed);
            self.compact_chunks();
        }
    }

    /// Drops the content of the live files under `paths` now, where another device holds it
    /// and nothing pins it (open files, pinned paths). Returns what it did; content only this
    /// device has is counted in `kept_only_here` and stays.
    pub fn free(&self, paths: &[String]) -> Result<EvictReport> {
        let mut ids = Vec::new();
        for p in paths {
            for r in self.files_under(p)? {
                ids.extend(r.chunks.iter().filter(|c| !c.is_hole()).map(|c| c.id));
            }
        }
        ids.sort_by_key(|c| c.0);
        ids.dedup();
        let kept = self.pinned_chunks()?;
        let (report, dropped, _) = self.drop_chunks(ids, u64::MAX, &kept)?;
        if let Some(res) = &self.inner.residency {
            let mut r = lock(res);
            for id in &dropped {
                r.remove(id);
            }
        }
        if report.evicted_bytes > 0 {
            self.compact_after_evicting(report.evicted_bytes);
        }
        Ok(report)
    }

    /// The paths kept on this device (`fybrk pin`), "" for the whole folder.
    pub fn pinned_paths(&self) -> Result<Vec<String>> {
        Ok(match self.inner.db.get_cf(self.cf(META), b"pinned")? {
            Some(v) => postcard::from_bytes(&v).map_err(|e| crate::StoreError::CorruptRecord {
                key: "meta/pinned".into(),
                reason: e.to_string(),
            })?,
            None => Vec::new(),
        })
    }

    /// Keeps (`pin = true`) or stops keeping `path` on this device. Returns whether the set
    /// changed. Fetching what a new pin lacks is the caller's ([`Store::absent_chunks`]).
    pub fn set_pinned(&self, path: &str, pin: bool) -> Result<bool> {
        let _w = lock(&self.inner.write);
        let mut paths = self.pinned_paths()?;
        let had = paths.iter().any(|p| p == path);
        if had == pin {
            return Ok(false);
        }
        if pin {
            paths.push(path.to_string());
            paths.sort();
        } else {
            paths.retain(|p| p != path);
        }
        let encoded = postcard::to_allocvec(&paths).unwrap_or_default();
        self.inner.db.put_cf(self.cf(META), b"pinned", encoded)?;
        Ok(true)
    }

    /// True when `path` is a pinned path or inside one.
    pub fn is_pinned(&self, path: &str) -> Result<bool> {
        Ok(self
            .pinned_paths()?
            .iter()
            .any(|p| crate::record::is_under(path, p)))
    }

    /// The chunks of the live files under every pinned path.
    fn pinned_chunks(&self) -> Result<HashSet<ChunkId>> {
        let mut out = HashSet::new();
        for p in self.pinned_paths()? {
            for r in self.files_under(&p)? {
                out.extend(r.chunks.iter().map(|c| c.id));
            }
        }
        Ok(out)
    }

    /// The chunks of the live files under `path` that are referenced here but not held.
    pub fn absent_chunks(&self, path: &str) -> Result<Vec<ChunkId>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for r in self.files_under(path)? {
            for c in r.chunks.iter().filter(|c| !c.is_hole()) {
                if seen.insert(c.id) && self.stored_entry(&c.id)?.is_some_and(|e| !e.is_here()) {
                    out.push(c.id);
                }
            }
        }
        Ok(out)
    }

    /// Chunk `id`'s plaintext length, if it is held here.
    pub fn chunk_len(&self, id: &ChunkId) -> Result<Option<u64>> {
        Ok(self
            .stored_entry(id)?
            .filter(|e| e.is_here())
            .map(|e| u64::from(e.sealed_len).saturating_sub(crate::crypto::SEAL_OVERHEAD as u64)))
    }

    /// How much of `record`'s content is held here.
    pub fn locality(&self, record: &FileRecord) -> Result<Locality> {
        let mut l = Locality::default();
        for c in record.chunks.iter().filter(|c| !c.is_hole()) {
            l.total_bytes += u64::from(c.len);
            if self.has_chunk(&c.id)? {
                l.local_bytes += u64::from(c.len);
            }
        }
        Ok(l)
    }

    /// The live files at or under `path` ("" is the whole folder).
    pub fn files_under(&self, path: &str) -> Result<Vec<FileRecord>> {
        let mut out = Vec::new();
        let mut dirs = Vec::new();
        if path.is_empty() {
            dirs.push(String::new());
        } else {
            match self.get(path)?.filter(FileRecord::is_live) {
                Some(r) if r.kind == Kind::File => out.push(r),
                Some(r) if r.kind == Kind::Dir => dirs.push(r.path),
                _ => {}
            }
        }
        while let Some(dir) = dirs.pop() {
            for r in self.list_dir(&dir)? {
                match r.kind {
                    Kind::File => out.push(r),
                    Kind::Dir => dirs.push(r.path),
                    Kind::Symlink => {}
                }
            }
        }
        Ok(out)
    }

    /// Chunks held here that no other device is known to hold, still referenced (up to
    /// `limit`): what an on-demand device asks full peers about before it may evict them.
    pub fn only_here(&self, limit: usize) -> Result<Vec<ChunkId>> {
        let mut out = Vec::new();
        for item in self.ref_entries() {
            let (id, e) = item?;
            if e.is_here() && !e.is_elsewhere() && e.count > 0 {
                out.push(id);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Another device said it keeps these chunks: they may be evicted from now on.
    pub fn mark_elsewhere(&self, ids: &[ChunkId]) -> Result<u64> {
        let mut marked = 0;
        self.with_write_lock(|_| {
            let mut batch = WriteBatch::default();
            for id in ids {
                if let Some(mut e) = self.stored_entry(id)?.filter(|e| e.is_here()) {
                    if !e.is_elsewhere() {
                        e.flags |= RefEntry::ELSEWHERE;
                        batch.put_cf(self.cf(REFS), id.0, e.encode());
                        marked += 1;
                    }
                }
            }
            self.inner.db.write(batch)?;
            Ok(())
        })?;
        Ok(marked)
    }

    /// For each id, whether this device keeps that chunk: it holds it, something references
    /// it, and it is a full device (an on-demand device may evict anything, so it never
    /// vouches for a chunk).
    pub fn keeps(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        if self.on_demand() {
            return Ok(vec![false; ids.len()]);
        }
        ids.iter()
            .map(|id| {
                Ok(self
                    .stored_entry(id)?
                    .is_some_and(|e| e.is_here() && e.count > 0))
            })
            .collect()
    }
}
