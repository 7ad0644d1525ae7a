//! Applying retention: drop the versions [`Retention`] does not keep and release their chunks
//! (garbage collection frees them afterwards).

use std::collections::{HashMap, HashSet};

use rocksdb::{IteratorMode, WriteBatch};
use serde::Serialize;

use super::retention::Retention;
use super::{decode, split_key, Version};
use crate::db::{RefEntry, HISTORY, META, RECORDS, REFS};
use crate::store::decode_record;
use crate::{ChunkId, Result, Store};

/// A version thinning kept: (commit time, history key, its chunks, newest of its path).
type Kept = (i64, Box<[u8]>, Vec<ChunkId>, bool);

/// What a retention pass did and what history holds afterwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThinReport {
    /// Versions removed.
    pub dropped: u64,
    /// Versions kept (current ones included).
    pub kept: u64,
    /// Bytes on disk (sealed chunks) that only history holds: what deleting all history would
    /// free after garbage collection.
    pub history_bytes: u64,
}

impl Store {
    /// Drops every version `retention` does not keep as of `now_ns` and releases its chunks;
    /// run [`Store::gc`] afterwards to free them. Also measures history's size (kept in the
    /// store's meta data for [`Store::history_bytes`]).
    pub fn apply_retention(&self, retention: &Retention, now_ns: i64) -> Result<ThinReport> {
        self.with_write_lock(|_| {
            let db = &self.inner.db;
            let mut report = ThinReport::default();
            let mut batch = WriteBatch::default();
            let mut delta: HashMap<ChunkId, i64> = HashMap::new();
            // Cap candidates: (time, key, chunks, newest of its path).
            let mut kept: Vec<Kept> = Vec::new();

            let mut group: Vec<(Box<[u8]>, Version)> = Vec::new();
            let mut flush = |group: &mut Vec<(Box<[u8]>, Version)>,
                             batch: &mut WriteBatch,
                             delta: &mut HashMap<ChunkId, i64>,
                             report: &mut ThinReport| {
                let times: Vec<i64> = group.iter().map(|(_, v)| v.since_ns).collect();
                let keep = retention.thin(&times, now_ns);
                let last = group.len().saturating_sub(1);
                for (i, ((key, v), keep)) in group.drain(..).zip(keep).enumerate() {
                    // Holes are no chunks: nothing to count or free.
                    let chunks = v
                        .record
                        .chunks
                        .iter()
                        .filter(|c| !c.is_hole())
                        .map(|c| c.id)
                        .collect();
                    if keep {
                        report.kept += 1;
                        kept.push((v.since_ns, key, chunks, i == last));
                    } else {
                        report.dropped += 1;
                        batch.delete_cf(self.cf(HISTORY), &key);
                        for id in chunks {
                            *delta.entry(id).or_default() -= 1;
                        }
                    }
                }
            };
            for item in db.iterator_cf(self.cf(HISTORY), IteratorMode::Start) {
                let (key, value) = item?;
                let Some((path, _)) = split_key(&key) else {
                    continue;
                };
                let same = group
                    .first()
                    .and_then(|(k, _)| split_key(k))
                    .is_some_and(|(p, _)| p == path);
                if !same && !group.is_empty() {
                    flush(&mut group, &mut batch, &mut delta, &mut report);
                }
                let v = decode(&key, &value)?;
                group.push((key, v));
            }
            flush(&mut group, &mut batch, &mut delta, &mut report);

            // The size cap, on what thinning kept: the bytes a version alone holds are its
            // chunks that nothing else references (count 1 once this pass's drops are applied).
            let count = |delta: &HashMap<ChunkId, i64>, id: &ChunkId| -> Result<Option<RefEntry>> {
                Ok(db
                    .get_pinned_cf(self.cf(REFS), id.0)?
                    .and_then(|v| RefEntry::decode(&v))
                    .map(|mut e| {
                        let d = delta.get(id).copied().unwrap_or(0);
                        e.count = (e.count as i64 + d).max(0) as u64;
                        e
                    }))
            };
            if retention.max_bytes.is_some() {
                let mut weights = Vec::with_capacity(kept.len());
                for (t, _, chunks, newest) in &kept {
                    let mut own = 0u64;
                    for id in chunks {
                        if let Some(e) = count(&delta, id)? {
                            if e.count <= 1 {
                                own += u64::from(e.sealed_len);
                            }
                        }
                    }
                    weights.push((*t, own, *newest));
                }
                for i in retention.over_cap(&weights, now_ns) {
                    let (_, key, chunks, _) = &kept[i];
                    batch.delete_cf(self.cf(HISTORY), key);
                    report.dropped += 1;
                    report.kept -= 1;
                    for id in chunks {
                        *delta.entry(*id).or_default() -= 1;
                    }
                }
            }
            let mut refs = HashMap::new();
            for (id, d) in &delta {
                if *d != 0 {
                    self.apply_ref_delta(&mut batch, &mut refs, id, *d)?;
                }
            }

            // History's size: stored bytes of chunks no current record uses.
            let mut current: HashSet<ChunkId> = HashSet::new();
            for item in db.iterator_cf(self.cf(RECORDS), IteratorMode::Start) {
                let (key, value) = item?;
                let r = decode_record(&key, &value)?;
                current.extend(r.chunks.iter().map(|c| c.id));
            }
            let mut history_bytes = 0u64;
            let mut seen: HashSet<ChunkId> = HashSet::new();
            for (_, _, chunks, _) in &kept {
                for id in chunks {
                    if !current.contains(id) && seen.insert(*id) {
                        if let Some(e) = count(&delta, id)? {
                            history_bytes += u64::from(e.sealed_len);
                        }
                    }
                }
            }
            report.history_bytes = history_bytes;
            batch.put_cf(self.cf(META), b"history_bytes", history_bytes.to_le_bytes());
            db.write(batch)?;
            Ok(report)
        })
    }

    /// History's size as measured by the last [`Store::apply_retention`] (0 before the first).
    pub fn history_bytes(&self) -> Result<u64> {
        Ok(self
            .inner
            .db
            .get_cf(self.cf(META), b"history_bytes")?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_le_bytes))
    }
}
