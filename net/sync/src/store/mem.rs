//! An in-memory [`ReplicaStore`] with `fybrk_store::Store`'s contract, for tests: the simulator
//! runs the real [`crate::store_driver::StoreReplica`] against it.
//!
//! What it keeps of the real store: each committed record gets the next local sequence; a local
//! change merges the previous version's vector and bumps this device's counter to that sequence;
//! a remote record keeps its vector and is refused with [`StoreError::Changed`] when the record
//! at its path moved since the decision; a live file record needs all its chunks
//! ([`StoreError::MissingChunk`]) and a remote record's chunk lengths must be the chunks' own
//! ([`StoreError::ChunkLength`]); garbage collection frees chunks no live record references
//! unless they are pinned. Chunk "sealing" is the identity and a chunk's id is a hash of its
//! bytes, so a corrupted chunk no longer matches its id (standing in for keyed BLAKE3 +
//! AES-GCM).
//!
//! Two switches make the driver's races happen on purpose: [`MemStore::set_gc_always`] collects
//! garbage at the start of every store call (a chunk the driver relies on without a pin is then
//! gone at the next call), and [`MemStore::race_next_commit`] runs a local write inside the next
//! commit of a remote record, after the driver decided and before the store checks.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use fybrk_store::record::ShortId;
use fybrk_store::{ChunkId, ChunkRef, FileRecord, Kind, StoreError, Versioning};

use super::{ReplicaStore, Staging};

/// The in-memory chunk id: a hash of the bytes.
pub(crate) fn chunk_id(data: &[u8]) -> ChunkId {
    let mut id = [0u8; 32];
    for (i, part) in id.chunks_mut(8).enumerate() {
        let mut h = DefaultHasher::new();
        (i, data).hash(&mut h);
        part.copy_from_slice(&h.finish().to_le_bytes());
    }
    ChunkId(id)
}

/// A local write injected into a commit (see [`MemStore::race_next_commit`]): called with the
/// store and the path of the remote record being committed.
type Race = Box<dyn FnOnce(&MemStore, &str)>;

/// What the store saw, for assertions.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    /// Remote commits refused with [`StoreError::Changed`].
    pub(crate) changed: u64,
    /// Received chunks that failed verification.
    pub(crate) rejected: u64,
    /// Races run inside a commit.
    pub(crate) raced: u64,
}

#[derive(Default)]
struct Inner {
    device: ShortId,
    seq: u64,
    records: BTreeMap<String, FileRecord>,
    chunks: HashMap<ChunkId, Vec<u8>>,
    pins: HashMap<ChunkId, u32>,
    gc_always: bool,
    races: VecDeque<Race>,
    counters: Counters,
    /// `changes_since` calls not yet taken: `(since, records returned)`.
    index_reads: Vec<(u64, usize)>,
}

/// One device's store in memory. Cheap to clone; clones share the store, like
/// `fybrk_store::Store` handles.
#[derive(Clone)]
pub(crate) struct MemStore {
    inner: Rc<RefCell<Inner>>,
}

impl MemStore {
    /// An empty store of device `device`.
    pub(crate) fn new(device: ShortId) -> MemStore {
        MemStore {
            inner: Rc::new(RefCell::new(Inner {
                device,
                ..Inner::default()
            })),
        }
    }

    /// This device's short id.
    pub(crate) fn device(&self) -> ShortId {
        self.inner.borrow().device
    }

    /// The last local sequence number (without the garbage collection a store call may do).
    pub(crate) fn seq(&self) -> u64 {
        self.inner.borrow().seq
    }

    /// The record at `path`.
    pub(crate) fn record(&self, path: &str) -> Option<FileRecord> {
        self.inner.borrow().records.get(path).cloned()
    }

    /// Every record by path.
    pub(crate) fn records(&self) -> BTreeMap<String, FileRecord> {
        self.inner.borrow().records.clone()
    }

    /// The bytes of chunk `id`.
    pub(crate) fn chunk(&self, id: &ChunkId) -> Option<Vec<u8>> {
        self.inner.borrow().chunks.get(id).cloned()
    }

    /// Chunks stored (referenced or not).
    pub(crate) fn chunk_count(&self) -> usize {
        self.inner.borrow().chunks.len()
    }

    /// A copy of the counters.
    pub(crate) fn counters(&self) -> Counters {
        self.inner.borrow().counters.clone()
    }

    /// The `changes_since` calls since the last call: `(since, records returned)`.
    pub(crate) fn take_index_reads(&self) -> Vec<(u64, usize)> {
        std::mem::take(&mut self.inner.borrow_mut().index_reads)
    }

    /// Collect garbage at the start of every store and staging call from now on.
    pub(crate) fn set_gc_always(&self, on: bool) {
        self.inner.borrow_mut().gc_always = on;
    }

    /// Runs `write` (a local change on this store, given the path of the remote record) inside
    /// the next commit that carries a remote record: after the driver decided against the local
    /// record, before the store checks it. Queued races run one per such commit.
    pub(crate) fn race_next_commit(&self, write: impl FnOnce(&MemStore, &str) + 'static) {
        self.inner.borrow_mut().races.push_back(Box::new(write));
    }

    /// Races queued and not run yet.
    pub(crate) fn races_pending(&self) -> usize {
        self.inner.borrow().races.len()
    }

    /// Drops the races no commit has taken.
    pub(crate) fn cancel_races(&self) {
        self.inner.borrow_mut().races.clear();
    }

    /// Frees every chunk no live record references and nothing pins; returns how many.
    pub(crate) fn gc(&self) -> usize {
        self.inner.borrow_mut().gc()
    }

    /// Commits a local change with new chunk contents (`fybrk_store::Store::commit` with a
    /// writer): `record` gets its sequence and a bumped version. Panics on a missing chunk: the
    /// callers are tests that build their records from what the store has.
    pub(crate) fn commit_local(
        &self,
        records: Vec<FileRecord>,
        new: Vec<Vec<u8>>,
    ) -> Vec<FileRecord> {
        let mut pending: HashMap<ChunkId, Vec<u8>> =
            new.into_iter().map(|d| (chunk_id(&d), d)).collect();
        let changes = records
            .into_iter()
            .map(|r| (r, Versioning::Local))
            .collect();
        let result = self.inner.borrow_mut().commit(changes, &mut pending);
        result.unwrap_or_else(|e| panic!("local commit on {:x} failed: {e}", self.device()))
    }

    fn maybe_gc(&self) {
        let mut inner = self.inner.borrow_mut();
        if inner.gc_always {
            inner.gc();
        }
    }

    fn pin(&self, ids: impl IntoIterator<Item = ChunkId>) {
        let mut inner = self.inner.borrow_mut();
        for id in ids {
            *inner.pins.entry(id).or_default() += 1;
        }
    }

    fn unpin(&self, ids: &[ChunkId]) {
        let mut inner = self.inner.borrow_mut();
        for id in ids {
            if let Some(n) = inner.pins.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    inner.pins.remove(id);
                }
            }
        }
    }
}

impl Inner {
    fn gc(&mut self) -> usize {
        let used: HashSet<ChunkId> = self
            .records
            .values()
            .filter(|r| r.is_live())
            .flat_map(|r| r.chunks.iter().map(|c| c.id))
            .collect();
        let before = self.chunks.len();
        let pins = &self.pins;
        self.chunks
            .retain(|id, _| used.contains(id) || pins.contains_key(id));
        before - self.chunks.len()
    }

    /// `Store::commit_changes`: all or nothing, `pending` chunks written with the records.
    fn commit(
        &mut self,
        changes: Vec<(FileRecord, Versioning)>,
        pending: &mut HashMap<ChunkId, Vec<u8>>,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let mut seq = self.seq;
        let mut out: Vec<FileRecord> = Vec::with_capacity(changes.len());
        for (mut record, versioning) in changes {
            let old = out
                .iter()
                .rev()
                .find(|r| r.path == record.path)
                .or_else(|| self.records.get(&record.path))
                .cloned();
            if let Versioning::Remote { based_on } = versioning {
                if old.as_ref().map(|o| o.seq) != based_on {
                    self.counters.changed += 1;
                    return Err(StoreError::Changed { path: record.path });
                }
            }
            seq += 1;
            if versioning == Versioning::Local {
                let mut version = old.map(|o| o.version).unwrap_or_default();
                version.merge(&record.version);
                version.bump(self.device, seq);
                record.version = version;
            }
            record.seq = seq;
            if record.deleted || record.kind != Kind::File {
                record.chunks.clear();
            }
            if let Some(c) = record
                .chunks
                .iter()
                .filter(|c| !c.id.is_hole())
                .find(|c| !self.chunks.contains_key(&c.id) && !pending.contains_key(&c.id))
            {
                return Err(StoreError::MissingChunk(c.id));
            }
            if matches!(versioning, Versioning::Remote { .. }) {
                // A peer's claimed length against the chunk's bytes, as the real store checks.
                for c in record.chunks.iter().filter(|c| !c.id.is_hole()) {
                    let data = self.chunks.get(&c.id).or_else(|| pending.get(&c.id));
                    let actual = data.map_or(0, |d| d.len() as u64);
                    if actual != u64::from(c.len) {
                        return Err(StoreError::ChunkLength {
                            path: record.path,
                            chunk: c.id,
                            claimed: c.len,
                            actual,
                        });
                    }
                }
            }
            out.push(record);
        }
        for (id, data) in pending.drain() {
            self.chunks.entry(id).or_insert(data);
        }
        for r in &out {
            self.records.insert(r.path.clone(), r.clone());
        }
        self.seq = seq;
        Ok(out)
    }
}

impl ReplicaStore for MemStore {
    type Staging = MemStaging;

    fn sequence(&self) -> u64 {
        self.maybe_gc();
        self.inner.borrow().seq
    }

    fn get(&self, path: &str) -> Result<Option<FileRecord>, StoreError> {
        self.maybe_gc();
        Ok(self.record(path))
    }

    fn changes_since(&self, since: u64) -> Result<Vec<FileRecord>, StoreError> {
        self.maybe_gc();
        let mut inner = self.inner.borrow_mut();
        let mut out: Vec<FileRecord> = inner
            .records
            .values()
            .filter(|r| r.seq > since)
            .cloned()
            .collect();
        out.sort_by_key(|r| r.seq);
        inner.index_reads.push((since, out.len()));
        Ok(out)
    }

    fn has_chunk(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.maybe_gc();
        Ok(self.inner.borrow().chunks.contains_key(id))
    }

    fn read_sealed(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        self.maybe_gc();
        Ok(self.chunk(id))
    }

    fn staging(&self) -> MemStaging {
        self.maybe_gc();
        MemStaging {
            store: self.clone(),
            pinned: Vec::new(),
            pending: HashMap::new(),
        }
    }

    fn commit_changes(
        &self,
        changes: Vec<(FileRecord, Versioning)>,
        staging: &mut MemStaging,
    ) -> Result<(), StoreError> {
        self.maybe_gc();
        let remote = changes
            .iter()
            .find(|(_, v)| matches!(v, Versioning::Remote { .. }))
            .map(|(r, _)| r.path.clone());
        if let Some(path) = remote {
            let race = self.inner.borrow_mut().races.pop_front();
            if let Some(write) = race {
                self.inner.borrow_mut().counters.raced += 1;
                write(self, &path);
            }
        }
        let mut inner = self.inner.borrow_mut();
        inner.commit(changes, &mut staging.pending).map(drop)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.maybe_gc();
        Ok(())
    }
}

/// [`Staging`] for [`MemStore`]: pins, and received chunks held back until the commit (or a
/// flush).
pub(crate) struct MemStaging {
    store: MemStore,
    pinned: Vec<ChunkId>,
    pending: HashMap<ChunkId, Vec<u8>>,
}

impl Staging for MemStaging {
    fn pin(&mut self, chunks: &[ChunkRef]) {
        self.store.maybe_gc();
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
        self.store.pin(ids.iter().copied());
        self.pinned.extend(ids);
    }

    fn add_sealed(&mut self, id: &ChunkId, sealed: Vec<u8>) -> Result<(), StoreError> {
        self.store.maybe_gc();
        if chunk_id(&sealed) != *id {
            self.store.inner.borrow_mut().counters.rejected += 1;
            return Err(StoreError::CorruptChunk(*id, "does not match its id"));
        }
        // Pin first, then look, as `ChunkWriter` does.
        self.store.pin([*id]);
        self.pinned.push(*id);
        if !self.store.inner.borrow().chunks.contains_key(id) {
            self.pending.insert(*id, sealed);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.store.maybe_gc();
        let mut inner = self.store.inner.borrow_mut();
        for (id, data) in self.pending.drain() {
            inner.chunks.entry(id).or_insert(data);
        }
        Ok(())
    }
}

impl Drop for MemStaging {
    fn drop(&mut self) {
        self.store.unpin(&self.pinned);
    }
}
