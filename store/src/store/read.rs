//! Reads: records by path, directory listings, the change log, and chunks (through the cache,
//! decrypted and authenticated on every read from disk).

use std::sync::Arc;

use rocksdb::{Direction, IteratorMode};

use super::{lock, Store};
use crate::chunklog::Location;
use crate::db::{RefEntry, CHUNKS, LOG, PLACES, RECORDS, REFS};
use crate::record::{children_prefix, path_key, peek_live_dir};
use crate::{ChunkId, FileRecord, Result, StoreError};

/// A raw RocksDB key and value.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// A chunk's sealed bytes: in the index itself (small files, stores from before the chunk
/// log) or read from the chunk log.
pub(crate) enum Sealed<'a> {
    Inline(rocksdb::DBPinnableSlice<'a>),
    Logged(Vec<u8>),
}

impl std::ops::Deref for Sealed<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Sealed::Inline(s) => s,
            Sealed::Logged(v) => v,
        }
    }
}

impl Store {
    /// The record at `path`, tombstones included.
    pub fn get(&self, path: &str) -> Result<Option<FileRecord>> {
        let key = path_key(path);
        match self.inner.db.get_pinned_cf(self.cf(RECORDS), &key)? {
            Some(v) => Ok(Some(decode_record(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// The live entries directly inside `dir` ("" is the root), in key order.
    pub fn list_dir(&self, dir: &str) -> Result<Vec<FileRecord>> {
        let prefix = children_prefix(dir);
        let mut out = Vec::new();
        for item in self.prefix_iter(&prefix) {
            let (key, value) = item?;
            let r = decode_record(&key, &value)?;
            if r.is_live() {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Number of live subdirectories of `dir` (for a directory's `st_nlink`).
    pub fn count_subdirs(&self, dir: &str) -> Result<u64> {
        let mut n = 0;
        for item in self.prefix_iter(&children_prefix(dir)) {
            let (_, value) = item?;
            n += u64::from(peek_live_dir(&value));
        }
        Ok(n)
    }

    /// True when `dir` has at least one live entry.
    pub fn has_children(&self, dir: &str) -> Result<bool> {
        for item in self.prefix_iter(&children_prefix(dir)) {
            let (key, value) = item?;
            if decode_record(&key, &value)?.is_live() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn prefix_iter<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        self.inner
            .db
            .iterator_cf(
                self.cf(RECORDS),
                IteratorMode::From(prefix, Direction::Forward),
            )
            .take_while(move |item| match item {
                Ok((k, _)) => k.starts_with(prefix),
                Err(_) => true,
            })
            .map(|item| item.map_err(StoreError::from))
    }

    /// Every record changed after local sequence number `since`, oldest first: what a peer that
    /// has seen up to `since` is missing.
    ///
    /// The log and the records are read from one snapshot. Reading the records live let a
    /// record updated meanwhile come back with a sequence number past everything the log
    /// iteration saw; a caller that takes the highest sequence returned as "sent up to" (the
    /// replication session does) then skipped the changes committed in between, for good. A
    /// directory's record is updated with every entry made in it, so this was no rare race.
    pub fn changes_since(&self, since: u64) -> Result<Vec<FileRecord>> {
        let start = since.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        let snap = self.inner.db.snapshot();
        let iter = snap.iterator_cf(self.cf(LOG), IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (_, key) = item?;
            let value = snap.get_pinned_cf(self.cf(RECORDS), &key)?.ok_or_else(|| {
                StoreError::CorruptRecord {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "change log points at a missing record".into(),
                }
            })?;
            out.push(decode_record(&key, &value)?);
        }
        Ok(out)
    }

    /// The plaintext of a chunk, through the cache. Every read from disk decrypts and
    /// authenticates the chunk (see [`crate::crypto::Crypto::open_stored`]). A chunk referenced here but held elsewhere (an on-demand device) is
    /// fetched through the [`crate::Remote`] first, or is [`StoreError::Unavailable`].
    /// A hole ([`ChunkId::HOLE`]) has no plaintext: [`StoreError::MissingChunk`].
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Arc<[u8]>> {
        if id.is_hole() {
            return Err(StoreError::MissingChunk(*id));
        }
        self.residency_touch(id);
        if let Some(hit) = self.inner.cache.get(id, false) {
            return Ok(hit);
        }
        match self.load_chunk(id) {
            // Fetched without holding a load lock: a slow peer must not stall reads of other
            // chunks that share its stripe.
            Err(StoreError::Unavailable { .. }) => {
                self.fetch_remote(id)?;
                self.load_chunk(id)
            }
            other => other,
        }
    }

    /// The plaintext of chunk `id` if the decrypted-chunk cache holds it; never reads the
    /// disk and is not counted as a lookup.
    pub fn cached_chunk(&self, id: &ChunkId) -> Option<Arc<[u8]>> {
        self.inner.cache.get(id, true)
    }

    /// A cache miss: reads, opens and caches the chunk from the database.
    fn load_chunk(&self, id: &ChunkId) -> Result<Arc<[u8]>> {
        let _loading = lock(&self.inner.loads[usize::from(id.0[0]) % 32]);
        if let Some(hit) = self.inner.cache.get(id, true) {
            return Ok(hit);
        }
        let key = self.sealing_key(id)?.ok_or(StoreError::MissingChunk(*id))?;
        let Some(sealed) = self.get_sealed(id)? else {
            return Err(match self.stored_entry(id)? {
                Some(e) if !e.is_here() => StoreError::Unavailable {
                    chunk: *id,
                    why: "not fetched yet".into(),
                },
                _ => StoreError::MissingChunk(*id),
            });
        };
        let plain: Arc<[u8]> = match self.inner.keys.get(key)?.open_stored(id, &sealed) {
            Ok(p) => p,
            // Guessed the first key without looking: a chunk its refs entry puts under a key
            // this store lacks is that, not damage.
            Err(e) => match self.chunk_key(id)? {
                Some(real) if real != key => return Err(StoreError::UnknownKey(real)),
                _ => return Err(e),
            },
        };
        self.inner.cache.insert(*id, plain.clone());
        Ok(plain)
    }

    /// A chunk as it travels between members: an envelope of the key it is sealed under and
    /// the sealed bytes (see [`crate::keys`]). Members hold the folder's keys, so it is never
    /// decrypted on the way.
    pub fn read_sealed(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        let Some(key) = self
            .stored_entry(id)?
            .filter(|e| e.is_here())
            .map(|e| e.key)
        else {
            return Ok(None);
        };
        let sealed = self.get_sealed(id)?;
        Ok(sealed.map(|s| crate::keys::envelope(key, &s)))
    }

    /// The sealed bytes of chunk `id` as stored, from the chunk log or inline, without RocksDB's
    /// CRC of a blob: whoever reads them authenticates them (the GCM tag here, the tag and the
    /// hash at a peer), which catches all the CRC would, so checking both cost 3 % of a read's
    /// CPU for nothing.
    pub(crate) fn get_sealed(&self, id: &ChunkId) -> Result<Option<Sealed<'_>>> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_verify_checksums(false);
        // Compaction may move the chunk and delete its file between the lookup and the read:
        // then the index names the new place.
        for _ in 0..3 {
            let Some(place) = self.inner.db.get_pinned_cf(self.cf(PLACES), id.0)? else {
                let inline = self
                    .inner
                    .db
                    .get_pinned_cf_opt(self.cf(CHUNKS), id.0, &opts)?;
                return Ok(inline.map(Sealed::Inline));
            };
            let loc = Location::decode(&place).ok_or(StoreError::CorruptChunk(
                *id,
                "its place in the chunk log is malformed",
            ))?;
            match self.read_logged(id, &loc) {
                Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => return other.map(|b| Some(Sealed::Logged(b))),
            }
        }
        Err(StoreError::CorruptChunk(
            *id,
            "the chunk log file that holds it is missing",
        ))
    }

    /// The bytes at `loc` in the chunk log; a file cut short is damage to chunk `id`.
    pub(crate) fn read_logged(&self, id: &ChunkId, loc: &Location) -> Result<Vec<u8>> {
        self.inner.log.read(loc).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                StoreError::CorruptChunk(*id, "the chunk log file that holds it is cut short")
            }
            _ => StoreError::Io(e),
        })
    }

    /// The whole content of the live file at `path` (`None` if there is none), in memory: for
    /// small files and tests. Holes become zeros; a chunk whose length is not the length its
    /// record claims is [`StoreError::CorruptChunk`].
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(r) = self.get(path)?.filter(FileRecord::is_live) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for c in &r.chunks {
            if c.is_hole() {
                out.resize(out.len() + c.len as usize, 0);
                continue;
            }
            let data = self.read_chunk(&c.id)?;
            if data.len() != c.len as usize {
                return Err(StoreError::CorruptChunk(
                    c.id,
                    "length differs from the record's",
                ));
            }
            out.extend_from_slice(&data);
        }
        Ok(Some(out))
    }

    /// True when the store holds chunk `id`'s bytes (not when it only references them, as an
    /// on-demand device does). Always true for [`ChunkId::HOLE`]: a hole needs no data, so
    /// nobody fetches or writes one.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        if id.is_hole() {
            return Ok(true);
        }
        Ok(self.stored_entry(id)?.is_some_and(|e| e.is_here()))
    }

    /// Chunk `id`'s refs entry, if the store knows the chunk at all.
    pub(crate) fn stored_entry(&self, id: &ChunkId) -> Result<Option<RefEntry>> {
        let Some(v) = self.inner.db.get_pinned_cf(self.cf(REFS), id.0)? else {
            return Ok(None);
        };
        RefEntry::decode(&v)
            .map(Some)
            .ok_or_else(|| StoreError::CorruptRecord {
                key: format!("refs/{id}"),
                reason: "bad reference entry".into(),
            })
    }
}

pub(crate) fn decode_record(key: &[u8], value: &[u8]) -> Result<FileRecord> {
    postcard::from_bytes(value).map_err(|e| StoreError::CorruptRecord {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: e.to_string(),
    })
}
