//! [`ChunkWriter`]: streams new content into the store in bounded batches, sealed and written
//! on a background thread while the caller cuts the next batch.

use std::collections::HashSet;
use std::sync::mpsc;

use super::{FreshChunks, Pins, Store};
use crate::keys::{self, KeyId, Keys};
use crate::{ChunkId, ChunkRef, Result, StoreError};

/// New chunks are written to the database in batches of about this many bytes, so a file larger
/// than memory streams through instead of piling up in one write batch.
const CHUNK_BATCH_BYTES: usize = 512 << 10;

impl Store {
    /// Sets the function told about chunks a local write stores before its record commits:
    /// each full batch of a large file being written, as it lands. Replication offers them to
    /// peers, so a file reaches them while it is still being written. The hook runs on the
    /// writing thread: it must only hand the ids on.
    pub fn on_fresh_chunks(&self, hook: Option<FreshChunks>) {
        *self.inner.fresh.write().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    /// Tells the hook about the locally written chunks of a batch just stored.
    pub(super) fn announce_fresh(&self, chunks: &[NewChunk]) {
        let hook = self.inner.fresh.read().unwrap_or_else(|p| p.into_inner());
        if let Some(hook) = hook.as_ref() {
            let ids: Vec<ChunkId> = chunks
                .iter()
                .filter(|c| !c.from_peer)
                .map(|c| c.id)
                .collect();
            if !ids.is_empty() {
                hook(&ids);
            }
        }
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
}

/// A chunk not yet in the database: plaintext from a local write (sealed by whoever writes it)
/// or sealed bytes received from a peer.
pub(crate) struct NewChunk {
    pub(super) id: ChunkId,
    pub(super) data: Vec<u8>,
    pub(super) sealed: bool,
    /// The folder key its id was computed with, and that seals it.
    pub(super) key: KeyId,
    /// Received from a peer, which therefore holds it too (see `RefEntry::ELSEWHERE`).
    pub(super) from_peer: bool,
}

impl NewChunk {
    /// Seals the plaintext under the key its id was computed with. Keys are never forgotten,
    /// so that key is always there; were it not, the chunk stays plaintext in memory and the
    /// error stops the write (nothing unsealed reaches the disk).
    pub(super) fn seal(&mut self, keys: &Keys) -> Result<()> {
        if !self.sealed {
            self.data = keys.get(self.key)?.seal(&self.id, &self.data);
            self.sealed = true;
        }
        Ok(())
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
    pub(super) pending: Vec<NewChunk>,
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
        let (key, crypto) = self.store.inner.keys.current();
        let id = crypto.chunk_id(plaintext);
        self.stage(
            id,
            plaintext.len() as u32,
            || plaintext.to_vec(),
            false,
            key,
        )
    }

    /// Adds a chunk received from a peer, in the envelope [`Store::read_sealed`] gives (the key
    /// it is sealed under, then the sealed bytes). It is decrypted and re-hashed first: a chunk
    /// that does not authenticate or does not match `id` is refused and never stored; one
    /// under a key this device does not hold yet is [`StoreError::UnknownKey`].
    pub fn add_sealed(&mut self, id: &ChunkId, mut envelope: Vec<u8>) -> Result<ChunkRef> {
        let (key, sealed) =
            keys::open_envelope(&envelope).ok_or(StoreError::CorruptChunk(*id, "too short"))?;
        let len = self.store.inner.keys.get(key)?.open(id, sealed)?.len() as u32;
        // The sealed bytes stay in the buffer they arrived in: the header goes, no new
        // allocation (a 1 GiB transfer made 16,000 of them here).
        envelope.drain(..keys::ENVELOPE_HEADER);
        self.stage(*id, len, || envelope, true, key)
    }

    /// Pins `id` and buffers its bytes unless the store already has it.
    fn stage(
        &mut self,
        id: ChunkId,
        len: u32,
        data: impl FnOnce() -> Vec<u8>,
        sealed: bool,
        key: KeyId,
    ) -> Result<ChunkRef> {
        // Pin first, then look: GC checks pins under the same lock it deletes with, so a chunk
        // seen here stays until the pin goes.
        self.pins.extend([id]);
        if !self.pending_ids.contains(&id) && !self.store.has_chunk(&id)? {
            let data = data();
            self.pending_bytes += data.len();
            self.pending.push(NewChunk {
                id,
                data,
                sealed,
                key,
                from_peer: sealed,
            });
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
        if self.pending.is_empty() {
            return self.settle();
        }
        if self.background.is_none() && self.pending_bytes < CHUNK_BATCH_BYTES {
            // Less than a batch and no writer thread yet (a chunk fetched for a read, one shared
            // by two records): written here. Starting a thread for it cost more than the write.
            let r = self.store.flush_chunks(&mut self.pending);
            return r.map(|()| self.clear_pending());
        }
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
    pub(super) fn settle(&mut self) -> Result<()> {
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
    pub(super) fn seal_pending(&mut self) -> Result<()> {
        for c in &mut self.pending {
            c.seal(&self.store.inner.keys)?;
        }
        Ok(())
    }

    pub(super) fn clear_pending(&mut self) {
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
