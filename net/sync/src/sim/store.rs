//! An in-memory stand-in for one device's store: records, chunks and the change log, with the
//! same commit semantics as `fybrk_store::Store` (each change gets the next local sequence; a
//! local change bumps this device's counter to that sequence; a remote record keeps its vector).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};

use fybrk_store::record::ShortId;
use fybrk_store::{ChunkId, ChunkRef, FileRecord, Kind};

use crate::conflict;

/// The sim's chunk id: a hash of the bytes, so a corrupted chunk no longer matches its id
/// (standing in for keyed BLAKE3 + AES-GCM, which the real driver checks).
pub(crate) fn chunk_id(data: &[u8]) -> ChunkId {
    let mut id = [0u8; 32];
    for (i, part) in id.chunks_mut(8).enumerate() {
        let mut h = DefaultHasher::new();
        (i, data).hash(&mut h);
        part.copy_from_slice(&h.finish().to_le_bytes());
    }
    ChunkId(id)
}

/// One device's state.
#[derive(Debug, Clone)]
pub(crate) struct SimStore {
    pub(crate) id: ShortId,
    pub(crate) seq: u64,
    pub(crate) records: BTreeMap<String, FileRecord>,
    pub(crate) chunks: HashMap<ChunkId, Vec<u8>>,
    /// Persisted progress per peer (`Action::PeerSeenUpTo`).
    pub(crate) seen: HashMap<ShortId, u64>,
}

impl SimStore {
    pub(crate) fn new(id: ShortId) -> SimStore {
        SimStore {
            id,
            seq: 0,
            records: BTreeMap::new(),
            chunks: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    /// Every record changed after `since`, oldest first (`Store::changes_since`).
    pub(crate) fn changes_since(&self, since: u64) -> Vec<FileRecord> {
        let mut out: Vec<FileRecord> = self
            .records
            .values()
            .filter(|r| r.seq > since)
            .cloned()
            .collect();
        out.sort_by_key(|r| r.seq);
        out
    }

    /// The chunks of `record` this store lacks.
    pub(crate) fn missing(&self, record: &FileRecord) -> Vec<ChunkId> {
        record
            .chunks
            .iter()
            .map(|c| c.id)
            .filter(|id| !self.chunks.contains_key(id))
            .collect()
    }

    /// A local change (`Store::commit`): merged with the previous version, bumped for us.
    fn commit_local(&mut self, mut r: FileRecord) {
        self.check_chunks(&r);
        self.seq += 1;
        let mut version = self
            .records
            .get(&r.path)
            .map(|o| o.version.clone())
            .unwrap_or_default();
        version.merge(&r.version);
        version.bump(self.id, self.seq);
        r.version = version;
        r.seq = self.seq;
        if r.deleted || r.kind != Kind::File {
            r.chunks.clear();
        }
        self.records.insert(r.path.clone(), r);
    }

    /// A record from a peer, or a conflict resolution: version kept, new local sequence.
    fn commit_remote(&mut self, mut r: FileRecord) {
        self.check_chunks(&r);
        self.seq += 1;
        r.seq = self.seq;
        self.records.insert(r.path.clone(), r);
    }

    /// Nothing is committed before all its chunks are here.
    fn check_chunks(&self, r: &FileRecord) {
        if r.is_live() {
            for c in &r.chunks {
                assert!(
                    self.chunks.contains_key(&c.id),
                    "{:x} committed {} without chunk {}",
                    self.id,
                    r.path,
                    c.id
                );
            }
        }
    }

    /// What the driver does on `Action::Apply`: resolve against the current record, commit the
    /// result as is, and a conflict copy as a local change at a free name.
    pub(crate) fn apply(&mut self, remote: FileRecord) {
        let res = conflict::resolve(self.records.get(&remote.path), &remote);
        if let Some(w) = res.write {
            self.commit_remote(w);
        }
        if let Some(copy) = res.copy {
            let placed = copy.place(|p| Ok::<_, Infallible>(self.records.get(p).cloned()));
            if let Ok(Some(r)) = placed {
                self.commit_local(r);
            }
        }
    }

    fn live(&self, path: &str) -> Option<&FileRecord> {
        self.records.get(path).filter(|r| r.is_live())
    }

    fn new_chunk(&mut self, tag: u64, i: u32) -> ChunkRef {
        let data = format!("content {tag}/{i}").into_bytes();
        let id = chunk_id(&data);
        let len = data.len() as u32;
        self.chunks.insert(id, data);
        ChunkRef { id, len }
    }

    // ---- user operations; each returns the content it overwrote or deleted, if any ----

    /// Creates or overwrites a file with new content `tag` (an edit keeps the first chunk, like
    /// an append-style change that dedups). `None` if `path` is a live directory.
    pub(crate) fn write(
        &mut self,
        path: &str,
        mtime_ns: i64,
        tag: u64,
    ) -> Option<Option<Vec<ChunkRef>>> {
        let old = match self.live(path) {
            Some(r) if r.kind == Kind::Dir => return None,
            Some(r) => Some(r.chunks.clone()),
            None => None,
        };
        let mut chunks: Vec<ChunkRef> = old.iter().flat_map(|c| c.first().copied()).collect();
        chunks.push(self.new_chunk(tag, 1));
        let mut r = FileRecord::new(path, Kind::File, 0o644, mtime_ns);
        r.size = chunks.iter().map(|c| u64::from(c.len)).sum();
        r.chunks = chunks;
        self.commit_local(r);
        Some(old)
    }

    /// Deletes a live file or directory; returns the file content it deleted.
    pub(crate) fn delete(&mut self, path: &str, mtime_ns: i64) -> Option<Vec<ChunkRef>> {
        let old = self.live(path)?.clone();
        let mut r = FileRecord::new(path, old.kind, old.mode, mtime_ns);
        r.deleted = true;
        self.commit_local(r);
        Some(old.chunks)
    }

    /// Renames a live file to a free name: tombstone + new record reusing the chunks.
    pub(crate) fn rename(&mut self, from: &str, to: &str, mtime_ns: i64) -> bool {
        let Some(old) = self.live(from).filter(|r| r.kind == Kind::File).cloned() else {
            return false;
        };
        if from == to || self.live(to).is_some() {
            return false;
        }
        let mut gone = FileRecord::new(from, Kind::File, old.mode, mtime_ns);
        gone.deleted = true;
        let mut moved = old.clone();
        moved.path = to.to_owned();
        moved.version = Default::default();
        self.commit_local(gone);
        self.commit_local(moved);
        true
    }

    /// Makes a directory at a free name.
    pub(crate) fn mkdir(&mut self, path: &str, mtime_ns: i64) -> bool {
        if self.live(path).is_some() {
            return false;
        }
        self.commit_local(FileRecord::new(path, Kind::Dir, 0o755, mtime_ns));
        true
    }
}
