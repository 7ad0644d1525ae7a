//! The synchronous half of a replication driver: executes a [`Session`]'s [`Action`]s against
//! a store ([`ReplicaStore`]: the RocksDB [`fybrk_store::Store`] in production, an in-memory
//! one in the simulator). No network, no async, no clock: the async per-connection task reads
//! frames, hands them to the session, passes the actions here, and writes what
//! [`Session::poll_outgoing`] yields.
//!
//! One [`StoreReplica`] serves one session (one peer). When a record from this peer is applied,
//! this session is told ([`Session::handle_local_changed`]); a driver with several sessions on
//! the same store must tell the others too (see [`StoreReplica::applied`]).
//!
//! # Pins
//!
//! GC may free any chunk with a zero reference count that nobody pins. Between `NeedChunks` and
//! `Apply` the chunks a remote record needs are held by a [`Staging`] area per pending record
//! (`pin` pins the ones already present, before they are looked up; fetched ones are added to
//! it). The staging area is passed to the commit and dropped after it, which releases the pins.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use fybrk_store::record::ShortId;
use fybrk_store::{ChunkId, FileRecord, Kind, Store, StoreError, Versioning};

use super::conflict::{decide, resolve, Decision};
use super::store::{ReplicaStore, Staging};
use super::{Action, FetchFailure, RecordToken, Session, SyncError};

/// Why the driver must drop the session: the store failed (disk full, I/O, a corrupt record).
/// A chunk that fails verification is not an error; the session re-requests it. Nor is a
/// record the store refuses ([`Problem::Refused`]).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A store operation failed while executing an action.
    #[error("{action}: store failed: {source}")]
    Store {
        /// What the driver was doing.
        action: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// Something that went wrong with one record without ending the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// [`Action::FetchFailed`]: the record stays unapplied; a later session retries it.
    FetchFailed {
        /// When it was reported.
        at: Instant,
        /// The record's path.
        path: String,
        /// The chunk that failed.
        chunk: ChunkId,
        /// Why.
        reason: FetchFailure,
    },
    /// [`Action::RecordTooLarge`]: a local record was not sent.
    RecordTooLarge {
        /// When it was reported.
        at: Instant,
        /// Its path.
        path: String,
        /// Its encoded size bound.
        bytes: usize,
    },
    /// The store refused a peer's record (a chunk length that is not the chunk's, say): it was
    /// skipped, never applied or relayed, and the session went on with the others.
    Refused {
        /// When it was refused.
        at: Instant,
        /// The record's path.
        path: String,
        /// The store's reason.
        reason: String,
    },
}

/// A remote record between `NeedChunks` and `Apply`, with the pins on its chunks.
struct Hold<W> {
    token: RecordToken,
    record: FileRecord,
    writer: W,
    /// The chunks it lacked at `NeedChunks`: a received chunk goes to the hold that waits for
    /// it. A set, so a 1 GiB file's 16,000 chunks are not searched once per arriving chunk.
    missing: HashSet<ChunkId>,
}

/// Offered chunks received before any record uses them stay pinned in one writer until this
/// many more have arrived (about 256 MiB at the average size), and then in the previous one
/// until as many again: long enough for the record of a file being written to arrive, bounded
/// however much a peer offers. After that they are ordinary orphans that GC may free.
const PREFETCH_GENERATION: usize = 4096;

/// The writers holding offered chunks (see [`PREFETCH_GENERATION`]).
struct Prefetched<W> {
    current: Option<W>,
    previous: Option<W>,
    /// Chunks added to `current`.
    count: usize,
    /// Chunks in `current` not yet written to the store.
    unflushed: bool,
}

/// Executes session actions against one store. See the module doc. The store is the RocksDB
/// [`Store`] unless a test says otherwise.
pub struct StoreReplica<S: ReplicaStore = Store> {
    store: S,
    /// Pending remote records by path. The session keeps at most one pending record per path
    /// (a newer one supersedes the older silently), and `Apply` names the record, not its
    /// token, so the path is the key.
    holds: HashMap<String, Hold<S::Staging>>,
    seen: HashMap<ShortId, u64>,
    problems: Vec<Problem>,
    closed: Option<SyncError>,
    /// Records applied since the last WAL sync: progress must not be recorded before they are
    /// durable.
    unsynced: bool,
    /// The owner syncs the store before it persists progress (see
    /// [`StoreReplica::defer_sync`]).
    deferred_sync: bool,
    applied: u64,
    /// Where chunks local reads wait for are reported ([`Action::Demanded`]).
    demands: Option<std::sync::Arc<crate::demand::hub::DemandHub>>,
    /// Chunks the peer said it keeps, since this driver started.
    kept: u64,
    /// Offered chunks that arrived before their record.
    prefetched: Prefetched<S::Staging>,
    /// Offered chunks stored since this driver started.
    early_chunks: u64,
    /// Local chunks to offer the peer as they are written ([`StoreReplica::set_fresh`]).
    fresh: Option<std::sync::Arc<crate::offer::FreshFeed>>,
}

impl<S: ReplicaStore> StoreReplica<S> {
    /// A driver for `store`.
    pub fn new(store: S) -> StoreReplica<S> {
        StoreReplica {
            demands: None,
            kept: 0,
            prefetched: Prefetched {
                current: None,
                previous: None,
                count: 0,
                unflushed: false,
            },
            early_chunks: 0,
            fresh: None,
            store,
            holds: HashMap::new(),
            seen: HashMap::new(),
            problems: Vec::new(),
            closed: None,
            unsynced: false,
            deferred_sync: false,
            applied: 0,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Reports chunks fetched for local reads to `hub` (an on-demand device's daemon).
    pub fn set_demands(&mut self, hub: std::sync::Arc<crate::demand::hub::DemandHub>) {
        self.demands = Some(hub);
    }

    /// The hub set with [`StoreReplica::set_demands`].
    pub fn demands(&self) -> Option<&std::sync::Arc<crate::demand::hub::DemandHub>> {
        self.demands.as_ref()
    }

    /// Offers the chunks of local writes to the peer as they are stored (when the connection
    /// negotiated offers), from `feed`, whose hook the store calls.
    pub fn set_fresh(&mut self, feed: std::sync::Arc<crate::offer::FreshFeed>) {
        self.fresh = Some(feed);
    }

    /// The feed of fresh local chunks, if any.
    pub fn fresh(&self) -> Option<&std::sync::Arc<crate::offer::FreshFeed>> {
        self.fresh.as_ref()
    }

    /// Chunks received because the peer offered them while writing, before their record
    /// ([`Action::CheckOffered`]).
    pub fn early_chunks(&self) -> u64 {
        self.early_chunks
    }

    /// Chunks the peer said it keeps (answers to [`Session::ask_keeps`]).
    pub fn kept(&self) -> u64 {
        self.kept
    }

    /// How far `peer`'s change log is applied here ([`Action::PeerSeenUpTo`]); 0 if never seen.
    /// Pass it as `seen_from_peer` to the next session with that peer.
    pub fn seen_from(&self, peer: ShortId) -> u64 {
        self.seen.get(&peer).copied().unwrap_or(0)
    }

    /// Leaves durability to the owner: progress ([`StoreReplica::seen_from`]) then moves
    /// without an fsync of the applied records, and the owner must call [`ReplicaStore::sync`]
    /// after reading progress and before persisting it. A daemon that saves progress every few
    /// seconds does one fsync then instead of one per received batch (which capped small-file
    /// sync at the disk's fsync rate).
    pub fn defer_sync(&mut self) {
        self.deferred_sync = true;
    }

    /// Starts from progress persisted by an earlier run: `peer`'s log is applied up to `seq`.
    pub fn set_seen(&mut self, peer: ShortId, seq: u64) {
        self.seen.insert(peer, seq);
    }

    /// Records that could not be fetched or sent, oldest first.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Why the session closed, once it did.
    pub fn closed(&self) -> Option<&SyncError> {
        self.closed.as_ref()
    }

    /// Remote records applied so far (each moved the store's sequence: other sessions on this
    /// store need [`Session::handle_local_changed`]).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Executes `actions` in order, and the actions the session's answers produce after them.
    /// On error, drop the session: nothing after the failed action was executed.
    pub fn run(
        &mut self,
        session: &mut Session,
        actions: Vec<Action>,
        now: Instant,
    ) -> Result<(), DriverError> {
        let mut work = std::collections::VecDeque::from(actions);
        while let Some(action) = work.pop_front() {
            work.extend(self.execute(session, action, now)?);
        }
        Ok(())
    }

    fn execute(
        &mut self,
        session: &mut Session,
        action: Action,
        now: Instant,
    ) -> Result<Vec<Action>, DriverError> {
        Ok(match action {
            Action::SendIndexFrom(from) => {
                // Sequence first: a commit between the two reads is then sent again, not lost.
                let up_to = self.store.sequence();
                let records = self
                    .store
                    .changes_since(from)
                    .map_err(err("reading the change log"))?;
                session.handle_local_index(records, up_to)
            }
            Action::NeedChunks { token, record } => self.need_chunks(session, token, record)?,
            Action::StoreChunk { id, data, early } => self.store_chunk(session, id, data, early)?,
            Action::CheckOffered(ids) => {
                // An on-demand device fetches content when it is read, not when it is written.
                let mut missing = Vec::new();
                if !self.store.on_demand() {
                    // Chunks still buffered in the prefetch writer look missing here; the
                    // fetcher and the writer both drop a second copy, and a sender offers each
                    // chunk it writes once, so no flush per offer.
                    for id in ids {
                        let has = self
                            .store
                            .has_chunk(&id)
                            .map_err(err("looking up an offered chunk"))?;
                        if !has {
                            missing.push(id);
                        }
                    }
                }
                session.handle_offer_missing(missing);
                Vec::new()
            }
            Action::Apply(record) => {
                self.apply(session.peer(), record, now)?;
                session.handle_local_changed(self.store.sequence())
            }
            Action::ReadChunk { id, req_id } => {
                let data = self
                    .store
                    .read_sealed(&id)
                    .map_err(err("reading a chunk for the peer"))?;
                session.handle_chunk_read(req_id, data);
                Vec::new()
            }
            Action::PeerSeenUpTo(seq) => {
                if self.unsynced && !self.deferred_sync {
                    self.store.sync().map_err(err("syncing applied records"))?;
                    self.unsynced = false;
                }
                if let Some(peer) = session.peer() {
                    self.seen.insert(peer, seq);
                }
                Vec::new()
            }
            Action::FetchFailed {
                path,
                chunk,
                reason,
            } => {
                self.holds.remove(&path);
                self.problems.push(Problem::FetchFailed {
                    at: now,
                    path,
                    chunk,
                    reason,
                });
                Vec::new()
            }
            Action::RecordTooLarge { path, bytes } => {
                self.problems.push(Problem::RecordTooLarge {
                    at: now,
                    path,
                    bytes,
                });
                Vec::new()
            }
            Action::CheckKeeps { req_id, ids } => {
                let keeps = self
                    .store
                    .keeps(&ids)
                    .map_err(err("answering which chunks this device keeps"))?;
                session.handle_keeps_checked(req_id, keeps);
                Vec::new()
            }
            Action::Kept(ids) => {
                self.store
                    .mark_elsewhere(&ids)
                    .map_err(err("recording chunks a peer keeps"))?;
                self.kept += ids.len() as u64;
                Vec::new()
            }
            Action::Demanded { id, ok } => {
                if let Some(hub) = &self.demands {
                    match ok {
                        true => hub.stored(id),
                        false => hub.failed(id, session.peer().unwrap_or_default(), "it lacks it"),
                    }
                }
                Vec::new()
            }
            Action::Close(e) => {
                tracing::info!(error = %e, "sync session closed");
                self.holds.clear();
                self.prefetched.current = None;
                self.prefetched.previous = None;
                self.closed = Some(e);
                Vec::new()
            }
        })
    }

    fn need_chunks(
        &mut self,
        session: &mut Session,
        token: RecordToken,
        record: FileRecord,
    ) -> Result<Vec<Action>, DriverError> {
        let local = self
            .store
            .get(&record.path)
            .map_err(err("reading the local record"))?;
        if decide(local.as_ref(), &record) == Decision::KeepLocal {
            self.holds.remove(&record.path);
            return Ok(session.handle_missing(token, None));
        }
        // Offered chunks still in the prefetch writer's batch are not visible to `has_chunk`.
        self.flush_prefetched()?;
        let mut writer = self.store.staging();
        let mut missing = Vec::new();
        // An on-demand device takes the record alone; its content comes when read (the store
        // records which chunks are elsewhere). Pinned paths are fetched like on a full device.
        let fetch = !self.store.on_demand()
            || self
                .store
                .is_pinned(&record.path)
                .map_err(err("reading pinned paths"))?;
        if fetch && record.is_live() && record.kind == Kind::File {
            // Pin first, then look: GC cannot free a chunk seen here.
            writer.pin(&record.chunks);
            for c in &record.chunks {
                let has = self
                    .store
                    .has_chunk(&c.id)
                    .map_err(err("looking up a chunk"))?;
                if !has && !missing.contains(&c.id) {
                    missing.push(c.id);
                }
            }
        }
        let path = record.path.clone();
        self.holds.insert(
            path,
            Hold {
                token,
                record,
                writer,
                missing: missing.iter().copied().collect(),
            },
        );
        Ok(session.handle_missing(token, Some(missing)))
    }

    fn store_chunk(
        &mut self,
        session: &mut Session,
        id: ChunkId,
        data: Vec<u8>,
        early: bool,
    ) -> Result<Vec<Action>, DriverError> {
        let mut spare;
        let sharers = self
            .holds
            .values()
            .filter(|h| h.missing.contains(&id))
            .count();
        let early = early && sharers == 0;
        let writer = if early {
            self.prefetch_writer()
        } else {
            match self.holds.values_mut().find(|h| h.missing.contains(&id)) {
                Some(h) => &mut h.writer,
                None => {
                    spare = self.store.staging();
                    &mut spare
                }
            }
        };
        match writer.add_sealed(&id, data) {
            Ok(()) => {}
            Err(StoreError::CorruptChunk(_, why)) => {
                tracing::warn!(chunk = %id, why, "chunk from peer failed verification");
                return Ok(session.handle_chunk_verified(id, false));
            }
            // Sealed under a folder key that has not reached this device yet (it travels with
            // the member list, which may be a moment behind): asked for again like a bad
            // chunk, and the record waits if the key is still missing after the retries.
            Err(e @ StoreError::UnknownKey(_)) => {
                tracing::warn!(peer = ?session.peer(), chunk = %id, "{e}");
                return Ok(session.handle_chunk_verified(id, false));
            }
            Err(e) => return Err(err("storing a chunk")(e)),
        }
        if early {
            // Written with the prefetch writer's next batch, or before the next record is
            // looked at (`flush_prefetched`).
            self.prefetched.unflushed = true;
            self.early_chunks += 1;
            let actions = session.handle_chunk_verified(id, true);
            if !session.fetching() {
                // The last offered chunk for now: written, so a restart or GC finds it.
                self.flush_prefetched()?;
            }
            return Ok(actions);
        }
        // A chunk only this record needs stays in its writer and is written with the record's
        // commit, in the same logged batch (the writer writes batches of 1 MiB on its own for
        // large files). Flushing every chunk at once cost a memtable flush per applied file.
        // A chunk several pending records share is written now: another one may be applied
        // first, and `has_chunk` only sees chunks in the database. The writer's pin keeps it
        // until the record commits. So is one no record waits for (a local read's).
        if sharers != 1 {
            writer.flush().map_err(err("storing a chunk"))?;
        }
        Ok(session.handle_chunk_verified(id, true))
    }

    /// The writer for offered chunks, rotated every [`PREFETCH_GENERATION`] chunks.
    fn prefetch_writer(&mut self) -> &mut S::Staging {
        let p = &mut self.prefetched;
        if p.count >= PREFETCH_GENERATION {
            // The previous generation's pins go. The current one becomes the previous, its
            // buffered chunks written first (a dropped writer would discard them).
            if let Some(w) = p.current.as_mut() {
                if let Err(e) = w.flush() {
                    tracing::warn!(error = %e, "cannot write offered chunks; they will be fetched with their records");
                }
            }
            p.previous = p.current.take();
            p.count = 0;
            p.unflushed = false;
        }
        p.count += 1;
        p.current.get_or_insert_with(|| self.store.staging())
    }

    /// Writes offered chunks still buffered, so `has_chunk` sees them.
    fn flush_prefetched(&mut self) -> Result<(), DriverError> {
        if self.prefetched.unflushed {
            if let Some(w) = self.prefetched.current.as_mut() {
                w.flush().map_err(err("storing offered chunks"))?;
            }
            self.prefetched.unflushed = false;
        }
        Ok(())
    }

    /// Resolves `remote` against the current local record and commits the result in one batch.
    /// A record the store refuses ([`refused`]) is skipped with a warning naming `peer` and a
    /// [`Problem::Refused`]: the session already counted it as settled when it asked for the
    /// apply, so progress moves past it and nothing waits for it.
    fn apply(
        &mut self,
        peer: Option<ShortId>,
        remote: FileRecord,
        now: Instant,
    ) -> Result<(), DriverError> {
        let mut writer = match self.holds.remove(&remote.path) {
            Some(h) if h.record == remote => h.writer,
            other => {
                // Not expected: the session applies only records it asked about.
                if let Some(h) = other {
                    tracing::debug!(path = %remote.path, token = h.token.0, "hold for another version");
                }
                let mut w = self.store.staging();
                w.pin(&remote.chunks);
                w
            }
        };
        // Optimistic: decide against the local record, and let the store refuse the commit if
        // a local write landed in between (`StoreError::Changed`); then decide again.
        let mut attempts = 0;
        loop {
            let local = self
                .store
                .get(&remote.path)
                .map_err(err("reading the local record"))?;
            let res = resolve(local.as_ref(), &remote);
            let based_on = local.as_ref().map(|r| r.seq);
            let mut changes = Vec::new();
            if let Some(w) = res.write {
                changes.push((w, Versioning::Remote { based_on }));
            }
            if let Some(copy) = res.copy {
                let placed = copy
                    .place(|p| self.store.get(p))
                    .map_err(err("placing a conflict copy"))?;
                if let Some(r) = placed {
                    tracing::info!(path = %remote.path, copy = %r.path, "sync conflict; kept the other version as a copy");
                    changes.push((r, Versioning::Local));
                }
            }
            if changes.is_empty() {
                return Ok(());
            }
            match self.store.commit_changes(changes, &mut writer) {
                Ok(_) => break,
                Err(StoreError::Changed { .. }) if attempts < 8 => attempts += 1,
                Err(e) if refused(&e) => {
                    tracing::warn!(
                        peer = format_args!("{:016x}", peer.unwrap_or_default()),
                        path = ?remote.path,
                        reason = %e,
                        "refused a record from peer"
                    );
                    self.problems.push(Problem::Refused {
                        at: now,
                        path: remote.path,
                        reason: e.to_string(),
                    });
                    return Ok(());
                }
                Err(e) => return Err(err("applying a remote record")(e)),
            }
        }
        self.unsynced = true;
        self.applied += 1;
        Ok(())
    }
}

/// True when the store refused one record for what the record says, not because the store
/// failed: the session skips it and goes on. Not [`StoreError::MissingChunk`]: the driver
/// pinned or fetched every chunk before the apply, so a missing one is the store's fault, and
/// ending the session lets the next one retry the record instead of skipping it for good.
fn refused(e: &StoreError) -> bool {
    matches!(e, StoreError::ChunkLength { .. })
}

fn err(action: &'static str) -> impl Fn(StoreError) -> DriverError {
    move |source| DriverError::Store { action, source }
}

#[cfg(test)]
mod tests;
