//! Garbage collection and the `verify` pass.

use std::collections::HashMap;

use rocksdb::{IteratorMode, WriteBatch};
use serde::Serialize;

use crate::db::{RefEntry, CHUNKS, HISTORY, LOG, ORPHANS, PLACES, RECORDS, REFS};
use crate::store::{decode_record, Store};
use crate::{ChunkId, Kind, Result};

/// What a GC pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Chunks freed.
    pub freed_chunks: u64,
    /// Sealed bytes freed.
    pub freed_bytes: u64,
    /// Unreferenced chunks kept because a writer or an open file still pins them.
    pub pinned: u64,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Chunks read, decrypted and re-hashed.
    pub chunks_checked: u64,
    /// Records decoded and checked.
    pub records_checked: u64,
    /// Every problem, in words a user can act on.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Frees every chunk that no record and no kept version references and nobody pins (run
    /// [`Store::apply_retention`] first to let history go).
    pub fn gc(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        self.with_write_lock(|stats| {
            let db = &self.inner.db;
            // Hold the pin table across the deletes: a writer pins before it checks whether a
            // chunk exists, so it either sees the chunk gone or keeps it alive.
            let pins = self
                .inner
                .pins
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut batch = WriteBatch::default();
            let mut freed = Vec::new();
            for item in db.iterator_cf(self.cf(ORPHANS), IteratorMode::Start) {
                let (key, _) = item?;
                let Ok(raw) = <[u8; 32]>::try_from(&key[..]) else {
                    batch.delete_cf(self.cf(ORPHANS), &key);
                    continue;
                };
                let id = ChunkId(raw);
                let entry = db
                    .get_pinned_cf(self.cf(REFS), raw)?
                    .and_then(|v| RefEntry::decode(&v));
                match entry {
                    Some(e) if e.count > 0 => batch.delete_cf(self.cf(ORPHANS), raw),
                    _ if pins.contains_key(&id) => report.pinned += 1,
                    e => {
                        let sealed_len = e.map_or(0, |e| u64::from(e.sealed_len));
                        batch.delete_cf(self.cf(CHUNKS), raw);
                        batch.delete_cf(self.cf(PLACES), raw);
                        batch.delete_cf(self.cf(REFS), raw);
                        batch.delete_cf(self.cf(ORPHANS), raw);
                        // An absent chunk (an on-demand device's) had only its entry here.
                        if e.is_some_and(|e| e.is_here()) {
                            report.freed_chunks += 1;
                            report.freed_bytes += sealed_len;
                            stats.chunks = stats.chunks.saturating_sub(1);
                            stats.stored_bytes = stats.stored_bytes.saturating_sub(sealed_len);
                        }
                        freed.push(id);
                    }
                }
            }
            batch.put_cf(
                self.cf(crate::db::META),
                b"stats",
                postcard::to_allocvec(stats).unwrap_or_default(),
            );
            db.write(batch)?;
            for id in &freed {
                self.residency_removed(id);
            }
            Ok(())
        })?;
        if report.freed_chunks > 0 {
            self.compact_chunks();
        }
        Ok(report)
    }

    /// Gives deleted chunks' space back now rather than at some later compaction: the chunk
    /// log's dead files (see `store::compact`), and RocksDB's blob files of inline chunks.
    pub(crate) fn compact_chunks(&self) {
        if let Err(e) = self.compact_log() {
            tracing::warn!(error = %e, "cannot compact the chunk log; its dead bytes stay on disk for now");
        }
        self.inner
            .db
            .compact_range_cf(self.cf(CHUNKS), None::<&[u8]>, None::<&[u8]>);
    }

    /// Opens stored chunk `id` to check it.
    fn check_sealed(&self, id: &ChunkId, sealed: &[u8]) -> Result<()> {
        match self.chunk_key(id)? {
            Some(key) => self.inner.keys.get(key)?.open(id, sealed).map(drop),
            // Written without the WAL just before a crash (see `Store::flush_chunks`): the
            // chunk's index entry reached disk, its refs entry did not. Nothing references
            // it (a commit makes the entry durable before it counts), so it is leftover
            // space, not damage; which key seals it is unknown, so it is not opened.
            None => Ok(()),
        }
    }

    /// Re-reads, decrypts and re-hashes every chunk, and checks that every record points at
    /// chunks the store has, that sizes add up, that reference counts match the records and that
    /// the change log and the records agree. Works on a consistent snapshot while the store is
    /// in use.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with(&|_, _| {})
    }

    /// [`Store::verify`], telling `progress` how far it is now and then: items checked so far
    /// and about how many there are (chunks, then records; the total is an estimate from the
    /// store's totals, so `done` may pass it a little).
    pub fn verify_with(&self, progress: &dyn Fn(u64, u64)) -> Result<VerifyReport> {
        let totals = self.stats();
        let total = totals.chunks + totals.files + totals.dirs + totals.symlinks;
        let tick = |report: &VerifyReport| {
            let done = report.chunks_checked + report.records_checked;
            if done & 255 == 0 {
                progress(done, total.max(done));
            }
        };
        let db = &self.inner.db;
        let snap = db.snapshot();
        let mut report = VerifyReport::default();
        let mut stored: HashMap<ChunkId, u64> = HashMap::new();
        // Inline chunks, then the chunk log's (read through the index as it is now: compaction
        // may have moved one since the snapshot; one deleted since then is not checked).
        for (cf, what) in [
            (CHUNKS, "the chunk store"),
            (PLACES, "the chunk log's index"),
        ] {
            for item in snap.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (key, value) = match item {
                    Ok(kv) => kv,
                    // RocksDB's own checksums caught damage (e.g. a blob file): report, go on.
                    Err(e) => {
                        report.problems.push(format!("{what} is damaged: {e}"));
                        break;
                    }
                };
                report.chunks_checked += 1;
                tick(&report);
                let Ok(raw) = <[u8; 32]>::try_from(&key[..]) else {
                    report
                        .problems
                        .push(format!("chunk key of {} bytes is malformed", key.len()));
                    continue;
                };
                let id = ChunkId(raw);
                let checked = match cf {
                    CHUNKS => self.check_sealed(&id, &value),
                    _ => match self.get_sealed(&id) {
                        Ok(Some(sealed)) => self.check_sealed(&id, &sealed),
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    },
                };
                if let Err(e) = checked {
                    report.problems.push(e.to_string());
                }
                stored.insert(id, 0);
            }
        }
        // Content an on-demand device references but holds elsewhere is not missing.
        for (key, value) in snap
            .iterator_cf(self.cf(REFS), IteratorMode::Start)
            .flatten()
        {
            if let (Ok(raw), Some(e)) = (<[u8; 32]>::try_from(&key[..]), RefEntry::decode(&value)) {
                if !e.is_here() {
                    stored.insert(ChunkId(raw), 0);
                }
            }
        }
        for item in snap.iterator_cf(self.cf(RECORDS), IteratorMode::Start) {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    report
                        .problems
                        .push(format!("the file index is damaged: {e}"));
                    break;
                }
            };
            report.records_checked += 1;
            tick(&report);
            let record = match decode_record(&key, &value) {
                Ok(r) => r,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            match snap
                .get_cf(self.cf(LOG), record.seq.to_be_bytes())
                .ok()
                .flatten()
            {
                Some(k) if k.as_slice() == &key[..] => {}
                _ => report.problems.push(format!(
                    "{}: change log entry {} is missing",
                    record.path, record.seq
                )),
            }
            if record.kind != Kind::File || record.deleted {
                continue;
            }
            let total: u64 = record.chunks.iter().map(|c| u64::from(c.len)).sum();
            if total != record.size {
                report.problems.push(format!(
                    "{}: chunks hold {total} bytes but the size is {}",
                    record.path, record.size
                ));
            }
            for c in record.chunks.iter().filter(|c| !c.is_hole()) {
                match stored.get_mut(&c.id) {
                    Some(n) => *n += 1,
                    None => report
                        .problems
                        .push(format!("{}: chunk {} is missing", record.path, c.id)),
                }
            }
        }
        // Every kept version holds a reference to each of its chunks too.
        for item in snap.iterator_cf(self.cf(HISTORY), IteratorMode::Start) {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    report.problems.push(format!("the history is damaged: {e}"));
                    break;
                }
            };
            let version = match crate::history::decode(&key, &value) {
                Ok(v) => v,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            for c in version.record.chunks.iter().filter(|c| !c.is_hole()) {
                match stored.get_mut(&c.id) {
                    Some(n) => *n += 1,
                    None => report.problems.push(format!(
                        "{} (version {}): chunk {} is missing",
                        version.record.path, version.record.seq, c.id
                    )),
                }
            }
        }
        for item in snap.iterator_cf(self.cf(REFS), IteratorMode::Start) {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    report
                        .problems
                        .push(format!("the reference counts are damaged: {e}"));
                    break;
                }
            };
            let Ok(raw) = <[u8; 32]>::try_from(&key[..]) else {
                continue;
            };
            let id = ChunkId(raw);
            let Some(entry) = RefEntry::decode(&value) else {
                report
                    .problems
                    .push(format!("chunk {id}: reference entry is malformed"));
                continue;
            };
            match stored.get(&id) {
                None => report
                    .problems
                    .push(format!("chunk {id}: counted but not stored")),
                Some(&used) if used != entry.count => report.problems.push(format!(
                    "chunk {id}: reference count {} but {used} uses",
                    entry.count
                )),
                Some(_) => {}
            }
        }
        Ok(report)
    }
}
