//! The write path: [`Store::commit`] and [`Store::commit_changes`] publish records with their
//! new chunks, reference counts and change-log entries in one RocksDB write batch, so a crash
//! leaves the old version or the new one, never a mix. Also the unlogged chunk batches a
//! [`ChunkWriter`] streams ahead of a commit.

use std::collections::HashMap;

use rocksdb::{WriteBatch, WriteOptions};

use super::writer::NewChunk;
use super::{lock, ChunkWriter, Committed, Stats, Store};
use crate::crypto::SEAL_OVERHEAD;
use crate::db::{RefEntry, CHUNKS, HISTORY, LOG, META, ORPHANS, PLACES, RECORDS, REFS};
use crate::history::{self, Version};
use crate::record::path_key;
use crate::{ChunkId, FileRecord, Kind, Result, StoreError};

/// Whose version a committed record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versioning {
    /// A change made on this device: the version vector is bumped for this device.
    Local,
    /// A version received from a peer: its version vector is kept as it is. It was decided
    /// against the local record with sequence number `based_on` (`None`: there was none); if
    /// the path changed since (a local write raced the apply), the commit fails with
    /// [`StoreError::Changed`], nothing is written, and the caller decides again.
    Remote {
        /// `seq` of the local record the decision was made against.
        based_on: Option<u64>,
    },
}

impl Store {
    /// Writes a whole file from memory as a local change: chunked, deduplicated and committed
    /// in one batch. For small files and tests; the filesystem streams large files instead.
    pub fn write_file(
        &self,
        path: &str,
        data: &[u8],
        mode: u32,
        mtime_ns: i64,
    ) -> Result<FileRecord> {
        let mut w = self.writer();
        let mut r = FileRecord::new(path, Kind::File, mode, mtime_ns);
        for piece in crate::chunker::chunks(data) {
            r.chunks.push(w.add(&piece?.data)?);
        }
        r.size = data.len() as u64;
        let mut out = self.commit(vec![r], Some(&mut w), false)?;
        Ok(out.remove(0))
    }

    /// Atomically publishes new versions of `records` together with the new chunks buffered in
    /// `writer` (which keeps its pins; drop it after the commit). If the commit fails, the
    /// writer still holds its chunks, so the caller can retry without losing data: in one
    /// RocksDB write batch the records, their change-log entries, the chunk reference counts
    /// and the remaining chunks land, or nothing does. Each record gets the
    /// next local sequence number and its version vector is the previous version's bumped for
    /// this device. `sync` makes the write durable before returning (fsync).
    ///
    /// Returns the committed records (with `seq` and `version` filled in).
    pub fn commit(
        &self,
        records: Vec<FileRecord>,
        writer: Option<&mut ChunkWriter>,
        sync: bool,
    ) -> Result<Vec<FileRecord>> {
        let changes = records
            .into_iter()
            .map(|r| (r, Versioning::Local))
            .collect();
        self.commit_changes(changes, writer, sync)
    }

    /// [`Store::commit`] for a mix of local changes and versions received from peers, in one
    /// batch: a [`Versioning::Remote`] record keeps its version vector exactly (it only gets a
    /// local sequence number, so peers of this device learn about it), which is what lets every
    /// device converge on the same vectors. Replication applies a remote version and the
    /// conflict copy it may cause with one call. A remote record whose chunk list claims a
    /// length other than a stored chunk's own fails the whole commit with
    /// [`StoreError::ChunkLength`] (nothing written): a peer's lengths are checked, this
    /// device's writer makes its own.
    pub fn commit_changes(
        &self,
        records: Vec<(FileRecord, Versioning)>,
        writer: Option<&mut ChunkWriter>,
        sync: bool,
    ) -> Result<Vec<FileRecord>> {
        self.commit_inner(records, writer, sync, false)
    }

    /// Brings back old versions (from [`Store::versions`] or a restore plan) as new local
    /// versions, marked [`history::Event::Restore`] in history: they sync to every device like
    /// any edit, and the restore itself can be undone. Their chunks are still stored, because
    /// history kept them.
    pub fn commit_restore(&self, records: Vec<FileRecord>) -> Result<Vec<FileRecord>> {
        let changes = records
            .into_iter()
            .map(|r| (r, Versioning::Local))
            .collect();
        self.commit_inner(changes, None, true, true)
    }

    fn commit_inner(
        &self,
        records: Vec<(FileRecord, Versioning)>,
        writer: Option<&mut ChunkWriter>,
        sync: bool,
        restore: bool,
    ) -> Result<Vec<FileRecord>> {
        let mut writer = writer;
        if let Some(w) = writer.as_deref_mut() {
            // Its earlier batches must be in the database before the flush below, and sealing
            // the rest is done before the write lock is taken.
            w.settle()?;
            w.seal_pending()?;
            let pending: usize = w.pending.iter().map(|c| c.data.len()).sum();
            if pending > 0 {
                self.ensure_room(pending as u64)?;
            }
        }
        let db = &self.inner.db;
        let mut st = lock(&self.inner.write);
        let mut batch = WriteBatch::default();
        let mut refs: HashMap<ChunkId, RefEntry> = HashMap::new();
        let mut stats = st.stats;
        let mut seq = st.seq;
        if st.unlogged {
            // The chunk log's bytes before the index entries that point at them.
            self.inner.log.sync()?;
            self.inner.db.flush_cf(self.cf(PLACES))?;
            st.unlogged = false;
        }
        if sync {
            // Earlier batches that were logged (fetched content) point into it too.
            self.inner.log.sync()?;
        }
        if let Some(w) = writer.as_deref() {
            // The last part of a file, inline: it commits in this one logged batch.
            self.stage_chunks(&mut batch, &mut refs, &mut stats, &w.pending, false)?;
        }

        let remote = restore
            || records
                .iter()
                .any(|(_, v)| matches!(v, Versioning::Remote { .. }));
        let mut touched: HashMap<Vec<u8>, FileRecord> = HashMap::new();
        let mut out = Vec::with_capacity(records.len());
        let now = history::now_ns();
        // The two halves of a rename arrive next to each other (tombstone, then the new name):
        // remember the tombstone's path and what it was, to tell a rename from a delete + create.
        let mut prev: Option<(FileRecord, Option<FileRecord>, usize)> = None;
        let mut events: Vec<(history::Event, u64)> = Vec::with_capacity(records.len());
        let mut remote_deletions: Vec<(u64, u64)> = Vec::new();
        for (mut record, versioning) in records {
            let key = path_key(&record.path);
            let old = match touched.get(&key) {
                Some(r) => Some(r.clone()),
                None => self.get(&record.path)?,
            };
            if let Versioning::Remote { based_on } = versioning {
                if old.as_ref().map(|o| o.seq) != based_on {
                    return Err(StoreError::Changed { path: record.path });
                }
            }
            seq += 1;
            if versioning == Versioning::Local {
                let mut version = old.as_ref().map(|o| o.version.clone()).unwrap_or_default();
                version.merge(&record.version);
                version.bump(self.inner.device, seq);
                record.version = version;
            }
            record.seq = seq;
            if record.deleted || record.kind != Kind::File {
                record.chunks.clear();
            }

            if self.on_demand() {
                self.admit_absent(&record, &mut refs)?;
            }
            if let Versioning::Remote { .. } = versioning {
                // A peer's chunk list is a claim; the stored chunk is the truth. A length that
                // differs would make reads return wrong bytes, so the record is refused here
                // (local records take their lengths from this device's writer).
                self.check_chunk_lengths(&record, &mut refs)?;
            }
            let mut delta: HashMap<ChunkId, i64> = HashMap::new();
            if let Some(old) = &old {
                batch.delete_cf(self.cf(LOG), old.seq.to_be_bytes());
                stats.count(old, -1);
                for c in &old.chunks {
                    *delta.entry(c.id).or_default() -= 1;
                }
            }
            // Twice: once for the record, once for its history entry, which keeps the chunks
            // after the record is replaced or deleted.
            for c in &record.chunks {
                *delta.entry(c.id).or_default() += 2;
            }
            for (id, d) in delta {
                // A hole is no chunk: nothing to count.
                if d != 0 && !id.is_hole() {
                    self.apply_ref_delta(&mut batch, &mut refs, &id, d)?;
                }
            }
            stats.count(&record, 1);
            let encoded =
                postcard::to_allocvec(&record).map_err(|e| StoreError::CorruptRecord {
                    key: record.path.clone(),
                    reason: format!("cannot encode: {e}"),
                })?;
            batch.put_cf(self.cf(RECORDS), &key, encoded);
            batch.put_cf(self.cf(LOG), seq.to_be_bytes(), &key);

            let origin = match versioning {
                Versioning::Local => self.inner.device,
                Versioning::Remote { .. } => {
                    history::origin_of(&record.version, old.as_ref().map(|o| &o.version))
                }
            };
            let mut event = history::event_of(
                &record,
                old.as_ref(),
                None,
                crate::naming::conflict_origin(&record.path).is_some() && old.is_none(),
            );
            if let Some((gone, before, at)) = prev.take() {
                if history::is_rename_pair(&gone, before.as_ref(), &record) {
                    event = history::Event::RenameFrom(gone.path.clone());
                    events[at].0 = history::Event::RenameTo(record.path.clone());
                }
            }
            if record.deleted {
                prev = Some((record.clone(), old.clone(), out.len()));
            }
            if restore && !record.deleted {
                event = history::Event::Restore;
            }
            if !restore && !record.deleted {
                if let Some(o) = old.as_ref() {
                    if !touched.contains_key(&key) {
                        if let Some(first) = self.collapse_empty_step(&mut batch, o, origin, now)? {
                            event = first;
                        }
                    }
                }
            }
            let was_live = old
                .as_ref()
                .is_some_and(|o| o.is_live() && o.kind != Kind::Dir);
            if record.deleted && was_live && matches!(versioning, Versioning::Remote { .. }) {
                match remote_deletions.iter_mut().find(|(d, _)| *d == origin) {
                    Some((_, n)) => *n += 1,
                    None => remote_deletions.push((origin, 1)),
                }
            }
            events.push((event, origin));
            touched.insert(key, record.clone());
            out.push(record);
        }
        // History entries, written after the loop so a rename's tombstone gets its final event.
        for (record, (event, origin)) in out.iter().zip(events) {
            let v = Version {
                since_ns: now,
                origin,
                event,
                record: record.clone(),
            };
            batch.put_cf(
                self.cf(HISTORY),
                history::history_key(&record.path, record.seq),
                history::encode(&v)?,
            );
        }
        batch.put_cf(self.cf(META), b"seq", seq.to_le_bytes());
        batch.put_cf(
            self.cf(META),
            b"stats",
            postcard::to_allocvec(&stats).unwrap_or_default(),
        );
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        db.write_opt(batch, &opts)?;
        st.seq = seq;
        st.stats = stats;
        self.inner
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(w) = writer {
            w.clear_pending();
        }
        let watchers = self
            .inner
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !watchers.is_empty() {
            let committed = Committed {
                seq,
                paths: out.iter().map(|r| r.path.clone()).collect(),
                remote,
                remote_deletions,
                files: stats.files,
                time_ns: now,
            };
            // Under the write lock, so watchers see commits in sequence order.
            for w in &watchers {
                w(&committed);
            }
        }
        drop(st);
        Ok(out)
    }

    /// An empty file that the device that made it (`origin`: this one for a local change, the
    /// peer for a replicated one) replaces within [`history::SAVE_STEP`] is one step of a save
    /// (`open` with `O_TRUNC`, or a create, committed before the data), not a version worth
    /// keeping: its history entry is dropped (it holds no chunks) and the new version inherits
    /// what it did (a create stays a create). Returns that event when it collapsed one.
    fn collapse_empty_step(
        &self,
        batch: &mut WriteBatch,
        old: &FileRecord,
        origin: u64,
        now: i64,
    ) -> Result<Option<history::Event>> {
        if !(old.is_live() && old.kind == Kind::File && old.size == 0) {
            return Ok(None);
        }
        let key = history::history_key(&old.path, old.seq);
        let Some(raw) = self.inner.db.get_pinned_cf(self.cf(HISTORY), &key)? else {
            return Ok(None);
        };
        let step = history::decode(&key, &raw)?;
        let young = now.saturating_sub(step.since_ns) < history::SAVE_STEP.as_nanos() as i64;
        if origin == 0 || step.origin != origin || !young {
            return Ok(None);
        }
        batch.delete_cf(self.cf(HISTORY), &key);
        Ok(Some(match step.event {
            history::Event::Edit | history::Event::Restore | history::Event::Conflict => {
                history::Event::Edit
            }
            other => other,
        }))
    }

    /// Adds new chunks to `batch` unless the store already has them: their bytes appended to
    /// the chunk log (`to_log`) with their locations in the batch, or the bytes themselves in
    /// the batch. Caller holds the write lock (appends and index entries then land in the
    /// same order, which compaction relies on).
    /// Returns true when some chunk was referenced already (the bytes of content held
    /// elsewhere arrived): such a batch must be logged, as a record's commit is, and its bytes
    /// go in the batch whatever `to_log` says (a logged index entry must not point at log
    /// bytes that a crash of the machine could lose).
    pub(super) fn stage_chunks(
        &self,
        batch: &mut WriteBatch,
        refs: &mut HashMap<ChunkId, RefEntry>,
        stats: &mut Stats,
        chunks: &[NewChunk],
        to_log: bool,
    ) -> Result<bool> {
        let mut referenced = false;
        // (chunk, its new entry, whether the store knew it at all)
        let mut staged: Vec<(&NewChunk, RefEntry, bool)> = Vec::with_capacity(chunks.len());
        for c in chunks {
            let NewChunk {
                id,
                data,
                sealed,
                key,
                from_peer,
            } = c;
            debug_assert!(*sealed, "chunks are sealed before the write lock is taken");
            let (id, sealed) = (*id, data);
            let known = match refs.get(&id) {
                Some(e) => Some(*e),
                None => self.stored_entry(&id)?,
            };
            let entry = match known {
                Some(e) if e.is_here() => continue,
                // Referenced here, its bytes elsewhere (an on-demand device's remote content,
                // or evicted): they arrived. Its count stays; so does its orphan marker, if any.
                Some(mut e) => {
                    referenced |= e.count > 0;
                    e.flags &= !RefEntry::ABSENT;
                    e.sealed_len = sealed.len() as u32;
                    e.key = *key;
                    e
                }
                None => RefEntry {
                    count: 0,
                    sealed_len: sealed.len() as u32,
                    key: *key,
                    flags: 0,
                },
            };
            let entry = RefEntry {
                flags: entry.flags | if *from_peer { RefEntry::ELSEWHERE } else { 0 },
                ..entry
            };
            // In `refs` now, so a second copy of it in this batch is skipped above.
            refs.insert(id, entry);
            staged.push((c, entry, known.is_none()));
        }
        let locations = match to_log && !referenced && !staged.is_empty() {
            true => {
                let bytes: Vec<&[u8]> = staged.iter().map(|(c, ..)| c.data.as_slice()).collect();
                Some(self.inner.log.append(&bytes)?)
            }
            false => None,
        };
        for (i, (c, entry, new)) in staged.into_iter().enumerate() {
            if new {
                // Unreferenced until a record commits: if we crash before that, GC finds it.
                batch.put_cf(self.cf(ORPHANS), c.id.0, []);
            }
            stats.chunks += 1;
            stats.stored_bytes += c.data.len() as u64;
            match locations.as_ref().and_then(|l| l.get(i)) {
                Some(loc) => batch.put_cf(self.cf(PLACES), c.id.0, loc.encode()),
                None => batch.put_cf(self.cf(CHUNKS), c.id.0, &c.data),
            }
            batch.put_cf(self.cf(REFS), c.id.0, entry.encode());
            self.residency_added(&c.id, entry.sealed_len);
        }
        Ok(referenced)
    }

    /// On an on-demand device, a record is taken without its content (a peer's version, or a
    /// conflict copy of one): each chunk the store has never seen gets an entry that says its
    /// bytes are elsewhere, counted like any other and fetched when read. Its length is the
    /// record's claim until the bytes arrive (reads check it then).
    fn admit_absent(
        &self,
        record: &FileRecord,
        refs: &mut HashMap<ChunkId, RefEntry>,
    ) -> Result<()> {
        for c in record.chunks.iter().filter(|c| !c.id.is_hole()) {
            if refs.contains_key(&c.id) || self.stored_entry(&c.id)?.is_some() {
                continue;
            }
            refs.insert(
                c.id,
                RefEntry {
                    count: 0,
                    sealed_len: c.len.saturating_add(SEAL_OVERHEAD as u32),
                    key: crate::FIRST_KEY,
                    flags: RefEntry::ABSENT | RefEntry::ELSEWHERE,
                },
            );
        }
        Ok(())
    }

    /// Refuses `record` when one of its stored chunks (holes aside) is not as long as the
    /// record says: every chunk is sealed with a fixed overhead, so the refs entry read for the
    /// reference count anyway (and cached in `refs`) gives the plaintext length without
    /// decrypting anything. A chunk the store lacks is [`StoreError::MissingChunk`].
    fn check_chunk_lengths(
        &self,
        record: &FileRecord,
        refs: &mut HashMap<ChunkId, RefEntry>,
    ) -> Result<()> {
        for c in record.chunks.iter().filter(|c| !c.id.is_hole()) {
            let entry = self.ref_entry(refs, &c.id)?;
            let actual = u64::from(entry.sealed_len).saturating_sub(SEAL_OVERHEAD as u64);
            if actual != u64::from(c.len) {
                return Err(StoreError::ChunkLength {
                    path: record.path.clone(),
                    chunk: c.id,
                    claimed: c.len,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// The refs entry of chunk `id`, from `refs` (this commit's view) or the database, cached
    /// in `refs`.
    fn ref_entry(&self, refs: &mut HashMap<ChunkId, RefEntry>, id: &ChunkId) -> Result<RefEntry> {
        if let Some(e) = refs.get(id) {
            return Ok(*e);
        }
        let entry = self
            .stored_entry(id)?
            .ok_or(StoreError::MissingChunk(*id))?;
        refs.insert(*id, entry);
        Ok(entry)
    }

    pub(crate) fn apply_ref_delta(
        &self,
        batch: &mut WriteBatch,
        refs: &mut HashMap<ChunkId, RefEntry>,
        id: &ChunkId,
        delta: i64,
    ) -> Result<()> {
        let mut entry = self.ref_entry(refs, id)?;
        let count = entry.count as i64 + delta;
        if count < 0 {
            tracing::error!(chunk = %id, count, "reference count went negative; clamping to 0");
        }
        entry.count = count.max(0) as u64;
        batch.put_cf(self.cf(REFS), id.0, entry.encode());
        if entry.count == 0 {
            batch.put_cf(self.cf(ORPHANS), id.0, []);
        } else if count - delta <= 0 {
            batch.delete_cf(self.cf(ORPHANS), id.0);
        }
        refs.insert(*id, entry);
        Ok(())
    }

    /// Writes a writer's full batch of chunks on their own, sealing the plaintext ones first
    /// (outside the write lock).
    pub(super) fn flush_chunks(&self, chunks: &mut [NewChunk]) -> Result<()> {
        for c in chunks.iter_mut() {
            c.seal(&self.inner.keys)?;
        }
        let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
        self.ensure_room(bytes as u64)?;
        let mut st = lock(&self.inner.write);
        // Locations and refs entries: about 120 bytes a chunk (fetched content, written
        // inline, grows it).
        let mut batch = WriteBatch::with_capacity_bytes(chunks.len() * 128 + 256);
        let mut stats = st.stats;
        let referenced =
            self.stage_chunks(&mut batch, &mut HashMap::new(), &mut stats, chunks, true)?;
        batch.put_cf(
            self.cf(META),
            b"stats",
            postcard::to_allocvec(&stats).unwrap_or_default(),
        );
        // The batch's bytes went to the chunk log; their index entries skip the write-ahead
        // log. Nothing references these chunks yet, so losing them in a crash loses nothing
        // committed; and every commit syncs the chunk log and flushes these entries first (see
        // `commit_inner`), so no committed record ever points at a chunk that only the lost
        // memtable knew.
        // Except bytes that records here already reference (an on-demand device's fetched
        // content): losing those would leave a record pointing at nothing, so they are written
        // inline and logged.
        let mut opts = WriteOptions::default();
        opts.disable_wal(!referenced);
        self.inner.db.write_opt(batch, &opts)?;
        st.stats = stats;
        st.unlogged |= !referenced;
        drop(st);
        self.announce_fresh(chunks);
        Ok(())
    }
}
