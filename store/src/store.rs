//! The [`Store`]: chunks, records, change log and their bookkeeping, committed atomically.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::cache::ChunkCache;
use crate::crypto::random_bytes;
use crate::db::{self, RefEntry, CHUNKS, LOG, META, ORPHANS, RECORDS, REFS};
use crate::record::{children_prefix, path_key, peek_live_dir, Kind, ShortId};
use crate::{ChunkId, ChunkRef, Crypto, FileRecord, FolderKey, Result, StoreError};

/// A raw RocksDB key and value.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// New chunks are written to the database in batches of about this many bytes, so a file larger
/// than memory streams through instead of piling up in one write batch.
const CHUNK_BATCH_BYTES: usize = 512 << 10;

/// Tuning knobs of a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Bytes of decrypted chunks kept in the read cache.
    pub cache_bytes: usize,
    /// This device's short id (first 64 bits of its device id), recorded when the store is
    /// created and used in version vectors. `None`: a random one.
    pub device: Option<ShortId>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 4 << 20,
            device: None,
        }
    }
}

/// Totals over the live folder, kept up to date by every commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Live regular files.
    pub files: u64,
    /// Live directories (the root not counted).
    pub dirs: u64,
    /// Live symbolic links.
    pub symlinks: u64,
    /// Sum of live file sizes.
    pub logical_bytes: u64,
    /// Distinct chunks stored.
    pub chunks: u64,
    /// Bytes of sealed chunks stored (ciphertext + nonce + tag).
    pub stored_bytes: u64,
}

impl Stats {
    fn count(&mut self, r: &FileRecord, sign: i64) {
        if r.deleted {
            return;
        }
        let add = |v: &mut u64, d: u64| {
            *v = if sign > 0 {
                v.saturating_add(d)
            } else {
                v.saturating_sub(d)
            };
        };
        match r.kind {
            Kind::File => {
                add(&mut self.files, 1);
                add(&mut self.logical_bytes, r.size);
            }
            Kind::Dir => add(&mut self.dirs, 1),
            Kind::Symlink => add(&mut self.symlinks, 1),
        }
    }
}

/// Mutable state changed only under the write lock.
struct WriteState {
    /// The last local sequence number handed out.
    seq: u64,
    stats: Stats,
    /// Chunk batches were written without the WAL since the last memtable flush (see
    /// [`Store::flush_chunks`]); the next commit must flush them before referencing anything.
    unlogged: bool,
}

pub(crate) struct Inner {
    pub(crate) db: DB,
    pub(crate) crypto: Crypto,
    device: ShortId,
    folder_id: [u8; 16],
    /// Serialises every write that reads before it writes (refcounts, records, sequence).
    write: Mutex<WriteState>,
    pub(crate) pins: Arc<PinTable>,
    cache: ChunkCache,
    /// Striped locks so two readers missing the same chunk decrypt it once: the kernel's
    /// read-ahead sends neighbouring ranges to several FUSE threads at the same time, and a chunk
    /// straddling two requests was otherwise decrypted and hashed twice.
    loads: [Mutex<()>; 32],
    /// Called after every commit (see [`Store::on_commit`]).
    watchers: std::sync::RwLock<Vec<CommitWatcher>>,
}

/// A function told about every commit, after it is written.
pub type CommitWatcher = Arc<dyn Fn(&Committed) + Send + Sync>;

/// What one commit changed: handed to the watchers registered with [`Store::on_commit`].
#[derive(Clone, Debug)]
pub struct Committed {
    /// The store's sequence after the commit.
    pub seq: u64,
    /// Paths of the records written.
    pub paths: Vec<String>,
    /// True when any record came from a peer ([`Versioning::Remote`]): the filesystem must
    /// drop what the kernel caches about these paths.
    pub remote: bool,
}

/// A handle to an open folder store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, never a half-applied database
    // write (those are atomic batches), so continuing with the inner value is sound.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens the store in `dir`, creating it on first use. Fails with [`StoreError::WrongKey`]
    /// when `key` is not the key the store was created with.
    pub fn open(dir: &Path, key: &FolderKey, options: StoreOptions) -> Result<Store> {
        let db = db::open(dir)?;
        let crypto = Crypto::new(key);
        let meta = db
            .cf_handle(META)
            .expect("meta column family is created at open");
        match db.get_cf(meta, b"key_check")? {
            Some(check) if check.as_slice() != crypto.key_check() => {
                return Err(StoreError::WrongKey)
            }
            Some(_) => {}
            None => {
                let mut b = WriteBatch::default();
                b.put_cf(meta, b"key_check", crypto.key_check());
                let device = options
                    .device
                    .map_or_else(random_bytes::<8>, u64::to_le_bytes);
                b.put_cf(meta, b"device", device);
                db.write(b)?;
            }
        }
        let read_meta = |name: &str| -> Result<Vec<u8>> {
            db.get_cf(meta, name)?
                .ok_or_else(|| StoreError::CorruptRecord {
                    key: format!("meta/{name}"),
                    reason: "missing".into(),
                })
        };
        let fixed = |name: &str, v: Vec<u8>| StoreError::CorruptRecord {
            key: format!("meta/{name}"),
            reason: format!("expected a fixed-size value, got {} bytes", v.len()),
        };
        let device = read_meta("device")?;
        let device = u64::from_le_bytes(device.try_into().map_err(|v| fixed("device", v))?);
        let folder_id = crypto.folder_id();
        let seq = match db.get_cf(meta, b"seq")? {
            Some(v) => u64::from_le_bytes(v.try_into().map_err(|v| fixed("seq", v))?),
            None => 0,
        };
        let stats = match db.get_cf(meta, b"stats")? {
            Some(v) => postcard::from_bytes(&v).map_err(|e| StoreError::CorruptRecord {
                key: "meta/stats".into(),
                reason: e.to_string(),
            })?,
            None => Stats::default(),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                crypto,
                device,
                folder_id,
                write: Mutex::new(WriteState {
                    seq,
                    stats,
                    unlogged: false,
                }),
                pins: Arc::new(PinTable::default()),
                cache: ChunkCache::new(options.cache_bytes),
                loads: std::array::from_fn(|_| Mutex::new(())),
                watchers: std::sync::RwLock::new(Vec::new()),
            }),
        })
    }

    /// This device's short id, used in version vectors.
    pub fn device(&self) -> ShortId {
        self.inner.device
    }

    /// The folder's id, derived from the folder key: every device holding the key agrees on
    /// it without exchanging it, and it reveals nothing about the key.
    pub fn folder_id(&self) -> [u8; 16] {
        self.inner.folder_id
    }

    /// Registers `watcher`, called after every later commit with what it changed, in commit
    /// order. It runs on the committing thread under the store's write lock (that is what keeps
    /// the order): keep it short, e.g. signal a channel, and never commit from it.
    pub fn on_commit(&self, watcher: CommitWatcher) {
        self.inner
            .watchers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(watcher);
    }

    /// Hashing and sealing of chunks under this folder's key.
    pub fn crypto(&self) -> &Crypto {
        &self.inner.crypto
    }

    /// Current totals.
    pub fn stats(&self) -> Stats {
        lock(&self.inner.write).stats
    }

    /// The last local sequence number.
    pub fn sequence(&self) -> u64 {
        lock(&self.inner.write).seq
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.inner
            .db
            .cf_handle(name)
            .expect("all column families are created at open")
    }

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
    pub fn changes_since(&self, since: u64) -> Result<Vec<FileRecord>> {
        let start = (since + 1).to_be_bytes();
        let mut out = Vec::new();
        let iter = self
            .inner
            .db
            .iterator_cf(self.cf(LOG), IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (_, key) = item?;
            let value = self
                .inner
                .db
                .get_pinned_cf(self.cf(RECORDS), &key)?
                .ok_or_else(|| StoreError::CorruptRecord {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "change log points at a missing record".into(),
                })?;
            out.push(decode_record(&key, &value)?);
        }
        Ok(out)
    }

    /// The plaintext of a chunk, through the cache. Every read from disk decrypts and
    /// re-hashes the chunk.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Arc<[u8]>> {
        if let Some(hit) = self.inner.cache.get(id) {
            return Ok(hit);
        }
        let _loading = lock(&self.inner.loads[usize::from(id.0[0]) % 32]);
        if let Some(hit) = self.inner.cache.get(id) {
            return Ok(hit);
        }
        let sealed = self
            .inner
            .db
            .get_pinned_cf(self.cf(CHUNKS), id.0)?
            .ok_or(StoreError::MissingChunk(*id))?;
        let plain: Arc<[u8]> = self.inner.crypto.open(id, &sealed)?.into();
        self.inner.cache.insert(*id, plain.clone());
        Ok(plain)
    }

    /// A chunk as stored (sealed): what travels between peers, who hold the same folder key.
    pub fn read_sealed(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.db.get_cf(self.cf(CHUNKS), id.0)?)
    }

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

    /// The whole content of the live file at `path` (`None` if there is none).
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(r) = self.get(path)?.filter(FileRecord::is_live) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(r.size as usize);
        for c in &r.chunks {
            out.extend_from_slice(&self.read_chunk(&c.id)?);
        }
        Ok(Some(out))
    }

    /// True when the store holds chunk `id`.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.inner.db.get_pinned_cf(self.cf(REFS), id.0)?.is_some())
    }

    /// Keeps `ids` from being garbage collected while the returned guard lives (for example the
    /// chunks of a version an open file handle still reads).
    pub fn pin(&self, ids: impl IntoIterator<Item = ChunkId>) -> Pins {
        let mut pins = Pins {
            table: self.inner.pins.clone(),
            ids: Vec::new(),
        };
        pins.extend(ids);
        pins
    }

    /// Starts writing new content: chunks added to the writer are deduplicated, sealed, pinned
    /// and streamed to the database; [`Store::commit`] then publishes the records using them.
    pub fn writer(&self) -> ChunkWriter {
        ChunkWriter {
            background: None,
            store: self.clone(),
            pins: self.pin([]),
            pending: Vec::new(),
            pending_ids: HashSet::new(),
            pending_bytes: 0,
        }
    }

    /// Atomically publishes new versions of `records` together with the new chunks buffered in
    /// `writer` (which keeps its pins; drop it after the commit). If the commit fails, the
    /// writer still holds its chunks, so the caller can retry without losing data: in one RocksDB write batch the records, their change-log entries, the chunk
    /// reference counts and the remaining chunks land, or nothing does. Each record gets the
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
    /// conflict copy it may cause with one call.
    pub fn commit_changes(
        &self,
        records: Vec<(FileRecord, Versioning)>,
        writer: Option<&mut ChunkWriter>,
        sync: bool,
    ) -> Result<Vec<FileRecord>> {
        let mut writer = writer;
        if let Some(w) = writer.as_deref_mut() {
            // Its earlier batches must be in the database before the flush below, and sealing
            // the rest is done before the write lock is taken.
            w.settle()?;
            w.seal_pending();
        }
        let db = &self.inner.db;
        let mut st = lock(&self.inner.write);
        let mut batch = WriteBatch::default();
        let mut refs: HashMap<ChunkId, RefEntry> = HashMap::new();
        let mut stats = st.stats;
        let mut seq = st.seq;
        if st.unlogged {
            self.inner.db.flush_cf(self.cf(CHUNKS))?;
            st.unlogged = false;
        }
        if let Some(w) = writer.as_deref() {
            self.stage_chunks(&mut batch, &mut refs, &mut stats, &w.pending)?;
        }

        let remote = records
            .iter()
            .any(|(_, v)| matches!(v, Versioning::Remote { .. }));
        let mut touched: HashMap<Vec<u8>, FileRecord> = HashMap::new();
        let mut out = Vec::with_capacity(records.len());
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

            let mut delta: HashMap<ChunkId, i64> = HashMap::new();
            if let Some(old) = &old {
                batch.delete_cf(self.cf(LOG), old.seq.to_be_bytes());
                stats.count(old, -1);
                for c in &old.chunks {
                    *delta.entry(c.id).or_default() -= 1;
                }
            }
            for c in &record.chunks {
                *delta.entry(c.id).or_default() += 1;
            }
            for (id, d) in delta {
                if d != 0 {
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
            touched.insert(key, record.clone());
            out.push(record);
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
            };
            // Under the write lock, so watchers see commits in sequence order.
            for w in &watchers {
                w(&committed);
            }
        }
        drop(st);
        Ok(out)
    }

    /// Makes everything written so far durable (fsync of the write-ahead log).
    pub fn sync(&self) -> Result<()> {
        Ok(self.inner.db.flush_wal(true)?)
    }

    /// Adds new chunks to `batch` unless the store already has them. Caller holds the write lock.
    fn stage_chunks(
        &self,
        batch: &mut WriteBatch,
        refs: &mut HashMap<ChunkId, RefEntry>,
        stats: &mut Stats,
        chunks: &[NewChunk],
    ) -> Result<()> {
        for NewChunk { id, data, sealed } in chunks {
            debug_assert!(*sealed, "chunks are sealed before the write lock is taken");
            let (id, sealed) = (*id, data);
            if refs.contains_key(&id) || self.has_chunk(&id)? {
                continue;
            }
            let entry = RefEntry {
                count: 0,
                sealed_len: sealed.len() as u32,
            };
            stats.chunks += 1;
            stats.stored_bytes += sealed.len() as u64;
            batch.put_cf(self.cf(CHUNKS), id.0, sealed);
            batch.put_cf(self.cf(REFS), id.0, entry.encode());
            // Unreferenced until a record commits: if we crash before that, GC finds it here.
            batch.put_cf(self.cf(ORPHANS), id.0, []);
            refs.insert(id, entry);
        }
        Ok(())
    }

    fn apply_ref_delta(
        &self,
        batch: &mut WriteBatch,
        refs: &mut HashMap<ChunkId, RefEntry>,
        id: &ChunkId,
        delta: i64,
    ) -> Result<()> {
        let mut entry = match refs.get(id) {
            Some(e) => *e,
            None => match self.inner.db.get_pinned_cf(self.cf(REFS), id.0)? {
                Some(v) => RefEntry::decode(&v).ok_or_else(|| StoreError::CorruptRecord {
                    key: format!("refs/{id}"),
                    reason: "bad reference entry".into(),
                })?,
                None => return Err(StoreError::MissingChunk(*id)),
            },
        };
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
    fn flush_chunks(&self, chunks: &mut [NewChunk]) -> Result<()> {
        for c in chunks.iter_mut() {
            c.seal(self.crypto());
        }
        let mut st = lock(&self.inner.write);
        // Sized up front: growing a 1 MiB batch by doubling copied it several times over.
        let bytes: usize = chunks.iter().map(|c| c.data.len() + 3 * 64).sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes + 256);
        let mut stats = st.stats;
        self.stage_chunks(&mut batch, &mut HashMap::new(), &mut stats, chunks)?;
        batch.put_cf(
            self.cf(META),
            b"stats",
            postcard::to_allocvec(&stats).unwrap_or_default(),
        );
        // Bulk chunk data skips the write-ahead log: with blob files, the WAL would write every
        // byte a second time (it was a third of the time of a 1 GiB write). Nothing references
        // these chunks yet, so losing them in a crash loses nothing committed; and every commit
        // flushes them to their blob files first (below), so no committed record ever points at
        // a chunk that only the lost memtable held.
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.inner.db.write_opt(batch, &opts)?;
        st.stats = stats;
        st.unlogged = true;
        Ok(())
    }

    /// Runs `f` with the write lock held (garbage collection needs the counts not to move).
    pub(crate) fn with_write_lock<T>(&self, f: impl FnOnce(&mut Stats) -> Result<T>) -> Result<T> {
        let mut st = lock(&self.inner.write);
        let mut stats = st.stats;
        let out = f(&mut stats)?;
        st.stats = stats;
        Ok(out)
    }
}

pub(crate) fn decode_record(key: &[u8], value: &[u8]) -> Result<FileRecord> {
    postcard::from_bytes(value).map_err(|e| StoreError::CorruptRecord {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: e.to_string(),
    })
}

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

/// A chunk not yet in the database: plaintext from a local write (sealed by whoever writes it)
/// or sealed bytes received from a peer.
pub(crate) struct NewChunk {
    id: ChunkId,
    data: Vec<u8>,
    sealed: bool,
}

impl NewChunk {
    fn seal(&mut self, crypto: &Crypto) {
        if !self.sealed {
            self.data = crypto.seal(&self.id, &self.data);
            self.sealed = true;
        }
    }
}

/// What the background writer hands back: a batch it could not write comes back whole, so no
/// chunk is lost and the caller can try again (after a full disk, say).
type BatchResult = std::result::Result<(), (StoreError, Vec<NewChunk>)>;

/// Streams new content into the store: deduplicates, seals and writes chunks in bounded
/// batches, and pins every chunk it hands out so garbage collection cannot free them before
/// the record that uses them commits.
///
/// Full batches are sealed and written on a thread of the writer's own, started at the first
/// full batch (a small file never needs one), while the caller cuts and hashes the next: a large
/// write keeps both cores busy. At most one batch is in flight, so memory stays bounded.
pub struct ChunkWriter {
    /// First, so it is dropped first: its thread is joined before the pins go.
    background: Option<Background>,
    store: Store,
    pins: Pins,
    pending: Vec<NewChunk>,
    pending_ids: HashSet<ChunkId>,
    pending_bytes: usize,
}

struct Background {
    jobs: Option<mpsc::SyncSender<Vec<NewChunk>>>,
    results: mpsc::Receiver<BatchResult>,
    in_flight: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChunkWriter {
    /// Adds one chunk of plaintext and returns its reference.
    pub fn add(&mut self, plaintext: &[u8]) -> Result<ChunkRef> {
        let id = self.store.crypto().chunk_id(plaintext);
        self.stage(id, plaintext.len() as u32, || plaintext.to_vec(), false)
    }

    /// Adds a chunk received sealed from a peer. It is decrypted and re-hashed first: a chunk
    /// that does not authenticate or does not match `id` is refused and never stored.
    pub fn add_sealed(&mut self, id: &ChunkId, sealed: Vec<u8>) -> Result<ChunkRef> {
        let len = self.store.crypto().open(id, &sealed)?.len() as u32;
        self.stage(*id, len, || sealed, true)
    }

    /// Pins `id` and buffers its bytes unless the store already has it.
    fn stage(
        &mut self,
        id: ChunkId,
        len: u32,
        data: impl FnOnce() -> Vec<u8>,
        sealed: bool,
    ) -> Result<ChunkRef> {
        // Pin first, then look: GC checks pins under the same lock it deletes with, so a chunk
        // seen here stays until the pin goes.
        self.pins.extend([id]);
        if !self.pending_ids.contains(&id) && !self.store.has_chunk(&id)? {
            let data = data();
            self.pending_bytes += data.len();
            self.pending.push(NewChunk { id, data, sealed });
            self.pending_ids.insert(id);
            if self.pending_bytes >= CHUNK_BATCH_BYTES {
                self.ship()?;
            }
        }
        Ok(ChunkRef { id, len })
    }

    /// Pins chunks the new version reuses from an old one.
    pub fn reuse(&mut self, chunks: &[ChunkRef]) {
        self.pins.extend(chunks.iter().map(|c| c.id));
    }

    /// Writes the buffered chunks now and waits until they are in the database (they stay
    /// unreferenced until a commit uses them).
    pub fn flush(&mut self) -> Result<()> {
        self.ship()?;
        self.settle()
    }

    /// Hands the pending chunks to the background thread (after the previous batch is done).
    fn ship(&mut self) -> Result<()> {
        self.settle()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let bg = match &mut self.background {
            Some(bg) => bg,
            None => self
                .background
                .insert(Background::start(self.store.clone())?),
        };
        match bg.jobs.as_ref().map(|jobs| jobs.send(batch)) {
            Some(Ok(())) => {
                bg.in_flight = true;
                self.clear_pending();
                Ok(())
            }
            // The thread is gone (it only ends when the channel closes, or by a panic): write
            // the batch here instead.
            Some(Err(mpsc::SendError(mut batch))) => {
                self.background = None;
                let r = self.store.flush_chunks(&mut batch);
                self.pending = batch;
                r.map(|()| self.clear_pending())
            }
            None => unreachable!("the job channel closes only on drop"),
        }
    }

    /// Waits for the batch in flight; a batch that failed comes back into `pending`.
    fn settle(&mut self) -> Result<()> {
        let Some(bg) = self.background.as_mut().filter(|bg| bg.in_flight) else {
            return Ok(());
        };
        bg.in_flight = false;
        match bg.results.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err((e, mut batch))) => {
                // Back in front of what was added since, in order.
                batch.append(&mut self.pending);
                self.pending = batch;
                self.pending_bytes = self.pending.iter().map(|c| c.data.len()).sum();
                self.pending_ids = self.pending.iter().map(|c| c.id).collect();
                Err(e)
            }
            Err(mpsc::RecvError) => Err(StoreError::Io(std::io::Error::other(
                "the chunk writer thread stopped unexpectedly",
            ))),
        }
    }

    /// Seals the pending plaintext chunks (before a commit takes the write lock).
    fn seal_pending(&mut self) {
        let crypto = self.store.crypto();
        for c in &mut self.pending {
            c.seal(crypto);
        }
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_ids.clear();
        self.pending_bytes = 0;
    }
}

impl Background {
    fn start(store: Store) -> Result<Background> {
        // Rendezvous channel: the caller fills the next batch while this one is written, and
        // waits if it is done first.
        let (jobs, job_rx) = mpsc::sync_channel::<Vec<NewChunk>>(0);
        let (result_tx, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("chunk-writer".into())
            .spawn(move || {
                for mut batch in job_rx {
                    let r = store.flush_chunks(&mut batch).map_err(|e| (e, batch));
                    if result_tx.send(r).is_err() {
                        return;
                    }
                }
            })
            .map_err(StoreError::Io)?;
        Ok(Background {
            jobs: Some(jobs),
            results,
            in_flight: false,
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the batch in hand; wait for it, so the
        // writer's pins outlive every chunk it writes.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pin counts per chunk id; GC never frees a pinned chunk.
#[derive(Default)]
pub(crate) struct PinTable {
    pub(crate) counts: Mutex<HashMap<ChunkId, u32>>,
}

/// A set of pinned chunks, released on drop.
pub struct Pins {
    table: Arc<PinTable>,
    ids: Vec<ChunkId>,
}

impl Pins {
    /// Pins more chunks under this guard.
    pub fn extend(&mut self, ids: impl IntoIterator<Item = ChunkId>) {
        let mut counts = lock(&self.table.counts);
        for id in ids {
            *counts.entry(id).or_default() += 1;
            self.ids.push(id);
        }
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut counts = lock(&self.table.counts);
        for id in &self.ids {
            if let Some(n) = counts.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(id);
                }
            }
        }
    }
}
