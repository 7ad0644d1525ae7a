//! The [`Store`]: chunks, records, change log and their bookkeeping, committed atomically.
//!
//! This module owns opening a store (key check, device id, persisted sequence and totals) and
//! the shared state every handle points at. The rest is split by concern:
//!
//! - `read`: records, directory listings, the change log and chunk reads (through the cache).
//! - `commit`: the one write path: records, new chunks, reference counts and change-log entries
//!   in one RocksDB batch, and how versions are assigned ([`Versioning`]).
//! - `writer`: the [`ChunkWriter`] that streams new chunks in bounded batches.
//! - `compact`: gives the chunk log's dead bytes back.
//! - `pins`: chunks garbage collection must not free yet ([`Pins`]).
//! - `stats`: the totals kept up to date by every commit ([`Stats`]).
//!
//! Nothing here knows about FUSE or the network.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{WriteBatch, DB};

use crate::cache::ChunkCache;
use crate::crypto::random_bytes;
use crate::db::{self, META};
use crate::keys::{KeyId, Keys};
use crate::record::ShortId;
use crate::{ChunkId, Crypto, FolderKey, Result, StoreError};

mod commit;
mod compact;
mod evict;
mod pins;
mod read;
mod space;
mod stats;
mod writer;

pub use commit::Versioning;
pub use evict::{EvictReport, Locality};
pub(crate) use pins::PinTable;
pub use pins::Pins;
pub(crate) use read::decode_record;
pub use stats::Stats;
pub use writer::ChunkWriter;

/// The chunk log's directory inside the store's (RocksDB ignores a directory it did not make).
const LOG_DIR: &str = "chunks";

/// Tuning knobs of a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Bytes of decrypted chunks kept in the read cache.
    pub cache_bytes: usize,
    /// This device's short id (first 64 bits of its device id), recorded when the store is
    /// created and used in version vectors. `None`: a random one.
    pub device: Option<ShortId>,
    /// The folder's id, chosen at random when the folder was created and kept with its keys.
    /// `None`: the id a folder from before random ids got from its first key.
    pub folder_id: Option<[u8; 16]>,
    /// `Some(bytes)`: an on-demand device. Peers' records are taken without their content,
    /// which is fetched when read ([`Store::set_remote`]) and evicted, least recently used
    /// first, to keep the chunks held within this many bytes ([`Store::evict`]). `None`: a
    /// full device that holds everything.
    pub cache_budget: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 4 << 20,
            device: None,
            folder_id: None,
            cache_budget: None,
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
    /// Where large writes' chunks live (see [`crate::chunklog`]).
    pub(crate) log: crate::chunklog::ChunkLog,
    /// One compaction of the chunk log at a time.
    pub(crate) compacting: Mutex<()>,
    pub(crate) keys: Keys,
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
    /// Commits since the store was opened.
    commits: std::sync::atomic::AtomicU64,
    /// Called after every commit (see [`Store::on_commit`]).
    watchers: std::sync::RwLock<Vec<CommitWatcher>>,
    /// On-demand devices only: the chunks held, by last use, and the budget.
    pub(crate) residency: Option<Mutex<crate::residency::Residency>>,
    /// Wakes [`Store::wait_over_budget`] when the chunks held pass the budget.
    pub(crate) over_budget: std::sync::Condvar,
    /// Where absent chunks come from (see [`Store::set_remote`]).
    pub(crate) remote: std::sync::RwLock<Option<Arc<dyn crate::Remote>>>,
    /// Sealed bytes evicted since the chunk files were last compacted.
    pub(crate) evicted_since_compaction: std::sync::atomic::AtomicU64,
    /// Told the ids of locally written chunks as each batch lands (see
    /// [`Store::on_fresh_chunks`]).
    pub(crate) fresh: std::sync::RwLock<Option<FreshChunks>>,
}

/// A function told the ids of chunks a local write just stored, before any record uses them.
pub type FreshChunks = Arc<dyn Fn(&[crate::ChunkId]) + Send + Sync>;

/// A function told about every commit, after it is written.
pub type CommitWatcher = Arc<dyn Fn(&Committed) + Send + Sync>;

/// What one commit changed: handed to the watchers registered with [`Store::on_commit`].
#[derive(Clone, Debug)]
pub struct Committed {
    /// The store's sequence after the commit.
    pub seq: u64,
    /// Paths of the records written.
    pub paths: Vec<String>,
    /// True when any record came from outside the filesystem (a peer's version, or a restore
    /// from history): the filesystem must drop what the kernel caches about these paths.
    pub remote: bool,
    /// Files and symlinks that peers' versions in this commit deleted, per device that made the
    /// deletion (for the mass-deletion warning). Directories are not counted: a deleted tree
    /// counts its files.
    pub remote_deletions: Vec<(crate::record::ShortId, u64)>,
    /// Live files in the folder after the commit.
    pub files: u64,
    /// The commit's time in history (nanoseconds since the Unix epoch): the folder as it was
    /// just before is `history` at `time_ns - 1`.
    pub time_ns: i64,
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
    /// Opens the store in `dir`, creating it on first use. `key` is the folder's first key
    /// (later ones are added with [`Store::add_key`]). Fails with [`StoreError::WrongKey`] when
    /// `key` is not the key the store was created with.
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
        let folder_id = options
            .folder_id
            .unwrap_or_else(|| crypto.legacy_folder_id());
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
        let log = crate::chunklog::ChunkLog::open(&dir.join(LOG_DIR))?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                log,
                compacting: Mutex::new(()),
                keys: Keys::new(crypto),
                device,
                folder_id,
                write: Mutex::new(WriteState {
                    seq,
                    stats,
                    unlogged: false,
                }),
                pins: Arc::new(PinTable::default()),
                cache: ChunkCache::new(options.cache_bytes),
                commits: std::sync::atomic::AtomicU64::new(0),
                loads: std::array::from_fn(|_| Mutex::new(())),
                watchers: std::sync::RwLock::new(Vec::new()),
                residency: options
                    .cache_budget
                    .map(|b| Mutex::new(crate::residency::Residency::new(b))),
                over_budget: std::sync::Condvar::new(),
                remote: std::sync::RwLock::new(None),
                evicted_since_compaction: std::sync::atomic::AtomicU64::new(0),
                fresh: std::sync::RwLock::new(None),
            }),
        };
        store.start_history()?;
        store.load_residency()?;
        Ok(store)
    }

    /// This device's short id, used in version vectors.
    pub fn device(&self) -> ShortId {
        self.inner.device
    }

    /// The folder's id: random when the folder was created (older folders: derived from their
    /// first key), handed to every member at pairing, the same whatever key is current.
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

    /// Hashing and sealing of new chunks: the folder's current key.
    pub fn crypto(&self) -> Arc<Crypto> {
        self.inner.keys.current().1
    }

    /// Learns a later key of the folder (after a member was removed); returns its id. Chunks
    /// sealed under it can be read and received from now on; new chunks use it only after
    /// [`Store::use_key`].
    pub fn add_key(&self, key: &FolderKey) -> KeyId {
        self.inner.keys.add(key)
    }

    /// Seals every chunk written from now on under key `id` (one [`Store::add_key`] returned,
    /// or [`FIRST_KEY`]). Chunks already cut by an open writer keep their key.
    pub fn use_key(&self, id: KeyId) -> Result<()> {
        self.inner.keys.set_current(id)
    }

    /// The key new chunks are sealed under.
    pub fn current_key(&self) -> KeyId {
        self.inner.keys.current_id()
    }

    /// The ids of every key this store knows.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.inner.keys.ids()
    }

    /// The key to open chunk `id` with on a local read: without a refs lookup while the store
    /// knows only the folder's first key (every folder nobody was removed from), so reads cost
    /// what they did before keys rotated; a failed open then looks the key up (see
    /// `read_chunk`). `None`: not stored (only known with several keys; with one, the chunk read
    /// that follows says so).
    pub(crate) fn sealing_key(&self, id: &ChunkId) -> Result<Option<KeyId>> {
        if self.inner.keys.only_first() {
            return Ok(Some(crate::FIRST_KEY));
        }
        self.chunk_key(id)
    }

    /// The key chunk `id` is sealed under (`None`: not stored).
    pub fn chunk_key(&self, id: &ChunkId) -> Result<Option<KeyId>> {
        Ok(self
            .stored_entry(id)?
            .filter(|e| e.is_here())
            .map(|e| e.key))
    }

    /// Commits (local changes, peers' versions, restores) since the store was opened.
    pub fn commits(&self) -> u64 {
        self.inner
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The decrypted-chunk cache's size, budget, hits and misses.
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.inner.cache.stats()
    }

    /// Current totals.
    pub fn stats(&self) -> Stats {
        lock(&self.inner.write).stats
    }

    /// The last local sequence number.
    pub fn sequence(&self) -> u64 {
        lock(&self.inner.write).seq
    }

    /// The folder root's modification time, if one was set ([`Store::set_root_mtime`]). The
    /// root has no record (it is the folder itself and is never synced), so its time is kept
    /// apart, local to this device.
    pub fn root_mtime(&self) -> Result<Option<i64>> {
        let v = self.inner.db.get_cf(self.cf(META), b"root_mtime")?;
        Ok(v.and_then(|v| v.try_into().ok()).map(i64::from_le_bytes))
    }

    /// Sets the folder root's modification time (entries changed in it, or `utimens`).
    pub fn set_root_mtime(&self, mtime_ns: i64) -> Result<()> {
        let meta = self.cf(META);
        Ok(self
            .inner
            .db
            .put_cf(meta, b"root_mtime", mtime_ns.to_le_bytes())?)
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.inner
            .db
            .cf_handle(name)
            .expect("all column families are created at open")
    }

    /// Makes everything written so far durable (fsync of the chunk log, then of the
    /// write-ahead log that may point into it).
    pub fn sync(&self) -> Result<()> {
        self.inner.log.sync()?;
        Ok(self.inner.db.flush_wal(true)?)
    }

    /// Writes every column family's memtable to disk (at unmount): a daemon stops without
    /// closing the database (threads still hold handles), and what was written without the
    /// log (chunk batches) must not depend on it.
    pub fn flush_to_disk(&self) -> Result<()> {
        self.inner.log.sync()?;
        for name in [
            crate::db::CHUNKS,
            crate::db::PLACES,
            crate::db::REFS,
            crate::db::ORPHANS,
            crate::db::RECORDS,
            crate::db::LOG,
            META,
            crate::db::HISTORY,
        ] {
            self.inner.db.flush_cf(self.cf(name))?;
        }
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
