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

use std::collections::HashMap;
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
}

impl<S: ReplicaStore> StoreReplica<S> {
    /// A driver for `store`.
    pub fn new(store: S) -> StoreReplica<S> {
        StoreReplica {
            demands: None,
            kept: 0,
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
            Action::StoreChunk { id, data } => self.store_chunk(session, id, data)?,
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
            },
        );
        Ok(session.handle_missing(token, Some(missing)))
    }

    fn store_chunk(
        &mut self,
        session: &mut Session,
        id: ChunkId,
        data: Vec<u8>,
    ) -> Result<Vec<Action>, DriverError> {
        let mut spare;
        let sharers = self
            .holds
            .values()
            .filter(|h| needs(&h.record, &id))
            .count();
        let writer = match self.holds.values_mut().find(|h| needs(&h.record, &id)) {
            Some(h) => &mut h.writer,
            None => {
                spare = self.store.staging();
                &mut spare
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
        // A chunk only this record needs stays in its writer and is written with the record's
        // commit, in the same logged batch (the writer writes batches of 1 MiB on its own for
        // large files). Flushing every chunk at once cost a memtable flush per applied file.
        // A chunk several pending records share is written now: another one may be applied
        // first, and `has_chunk` only sees chunks in the database. The writer's pin keeps it
        // until the record commits.
        if sharers != 1 {
            writer.flush().map_err(err("storing a chunk"))?;
        }
        Ok(session.handle_chunk_verified(id, true))
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

/// True when `record`'s content includes chunk `id`.
fn needs(record: &FileRecord, id: &ChunkId) -> bool {
    record.chunks.iter().any(|c| c.id == *id)
}

fn err(action: &'static str) -> impl Fn(StoreError) -> DriverError {
    move |source| DriverError::Store { action, source }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use fybrk_store::{FolderKey, StoreOptions};

    use super::*;
    use crate::messages::encode_frame;
    use crate::naming::CONFLICT_MARKER;
    use crate::test_support::{random, read_file, write_file};
    use crate::{FrameDecoder, Message, DEFAULT_MAX_FRAME};

    /// Short ids whose top bits differ, so their conflict-name tags differ.
    const IDS: [ShortId; 2] = [0x1111_1111_1111_1111, 0x9999_9999_9999_9999];
    /// Both sessions name the same folder. Not `Store::folder_id()`: that is random per store,
    /// so two stores of one folder never agree on it.
    const FOLDER: [u8; 16] = *b"fybrk-test-fold!";

    struct Device {
        _dir: tempfile::TempDir,
        replica: StoreReplica,
    }

    fn device(i: usize) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            &FolderKey::from_bytes([7; 32]),
            StoreOptions {
                cache_bytes: 1 << 20,
                device: Some(IDS[i]),
                folder_id: None,
                cache_budget: None,
            },
        )
        .unwrap();
        Device {
            _dir: dir,
            replica: StoreReplica::new(store),
        }
    }

    /// Every record, sequence numbers aside.
    fn view(store: &Store) -> BTreeMap<String, FileRecord> {
        store
            .changes_since(0)
            .unwrap()
            .into_iter()
            .map(|r| (r.path.clone(), FileRecord { seq: 0, ..r }))
            .collect()
    }

    #[derive(Default, Debug)]
    struct Counts {
        /// Records in `IndexUpdate`s sent by side `i`.
        index_records: [usize; 2],
        chunk_requests: usize,
        corrupted: usize,
    }

    /// Two devices and a pair of sessions whose frames travel through the real codec.
    struct Pair {
        devices: [Device; 2],
        sessions: [Session; 2],
        decoders: [FrameDecoder; 2],
        now: Instant,
        counts: Counts,
        /// Flip a byte of the next this many chunk responses.
        corrupt: usize,
    }

    impl Pair {
        fn new() -> Pair {
            let devices = [device(0), device(1)];
            let now = Instant::now();
            let sessions = [0, 1].map(|i| new_session(&devices, i, now));
            Pair {
                devices,
                sessions,
                decoders: [0, 1].map(|_| FrameDecoder::new(DEFAULT_MAX_FRAME)),
                now,
                counts: Counts::default(),
                corrupt: 0,
            }
        }

        fn store(&self, i: usize) -> &Store {
            self.devices[i].replica.store()
        }

        /// New sessions from the remembered progress (a reconnect); counters reset.
        fn reconnect(&mut self) {
            self.sessions = [0, 1].map(|i| new_session(&self.devices, i, self.now));
            self.decoders = [0, 1].map(|_| FrameDecoder::new(DEFAULT_MAX_FRAME));
            self.counts = Counts::default();
        }

        /// Device `i` committed something locally.
        fn local_changed(&mut self, i: usize) {
            let seq = self.store(i).sequence();
            let actions = self.sessions[i].handle_local_changed(seq);
            let now = self.now;
            self.devices[i]
                .replica
                .run(&mut self.sessions[i], actions, now)
                .unwrap();
        }

        /// Delivers messages both ways until both sessions are idle. The sessions first learn
        /// of the local commits made since they started.
        fn sync(&mut self) {
            self.local_changed(0);
            self.local_changed(1);
            for _ in 0..10_000 {
                self.now += Duration::from_millis(1);
                let mut moved = false;
                for i in 0..2 {
                    while let Some(mut msg) = self.sessions[i].poll_outgoing() {
                        moved = true;
                        match &mut msg {
                            Message::IndexUpdate { records, .. } => {
                                self.counts.index_records[i] += records.len()
                            }
                            Message::ChunkRequest { .. } => self.counts.chunk_requests += 1,
                            Message::ChunkResponse { data: Some(d), .. } if self.corrupt > 0 => {
                                self.corrupt -= 1;
                                self.counts.corrupted += 1;
                                let at = d.len() / 2;
                                d[at] ^= 0x20;
                            }
                            _ => {}
                        }
                        let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
                        self.decoders[1 - i].push(&frame);
                    }
                }
                for i in 0..2 {
                    while let Some(msg) = self.decoders[i].next_message().unwrap() {
                        moved = true;
                        let actions = self.sessions[i].handle_message(msg, self.now);
                        self.devices[i]
                            .replica
                            .run(&mut self.sessions[i], actions, self.now)
                            .unwrap();
                    }
                }
                for d in &self.devices {
                    assert!(d.replica.closed().is_none(), "{:?}", d.replica.closed());
                }
                if !moved && self.sessions.iter().all(Session::is_idle) {
                    return;
                }
            }
            panic!("not idle after 10000 steps: {:#?}", self.sessions);
        }

        fn assert_converged(&self) {
            assert_eq!(view(self.store(0)), view(self.store(1)));
            for i in 0..2 {
                let report = self.store(i).verify().unwrap();
                assert!(report.is_ok(), "device {i}: {:?}", report.problems);
                assert!(self.devices[i].replica.problems().is_empty());
                assert_eq!(
                    self.sessions[i].peer_seen(),
                    self.store(1 - i).sequence(),
                    "progress caught up"
                );
            }
        }
    }

    fn new_session(devices: &[Device; 2], i: usize, now: Instant) -> Session {
        let store = devices[i].replica.store();
        let seen = devices[i].replica.seen_from(IDS[1 - i]);
        Session::new(store.device(), FOLDER, store.sequence(), seen, now)
    }

    #[test]
    fn files_dirs_symlinks_and_tombstones_arrive_intact() {
        let mut p = Pair::new();
        let big = random(1 << 20, 1);
        let a = p.store(0).clone();
        a.commit(
            vec![FileRecord::new("docs", Kind::Dir, 0o755, 5)],
            None,
            false,
        )
        .unwrap();
        let rec = write_file(&a, "docs/big.bin", &big, 10);
        assert!(rec.chunks.len() > 4, "multi-chunk: {}", rec.chunks.len());
        write_file(&a, "docs/small.txt", b"hello", 11);
        let mut link = FileRecord::new("link", Kind::Symlink, 0o777, 12);
        link.target = Some("docs/small.txt".into());
        link.size = 14;
        a.commit(vec![link], None, false).unwrap();
        let mut gone = write_file(&a, "gone.txt", b"bye", 13);
        gone.deleted = true;
        a.commit(vec![gone], None, false).unwrap();

        p.sync();
        p.assert_converged();
        let b = p.store(1);
        assert_eq!(read_file(b, "docs/big.bin"), big);
        assert_eq!(read_file(b, "docs/small.txt"), b"hello");
        assert_eq!(b.get("docs").unwrap().unwrap().kind, Kind::Dir);
        let link = b.get("link").unwrap().unwrap();
        assert_eq!(link.target.as_deref(), Some("docs/small.txt"));
        assert!(b.get("gone.txt").unwrap().unwrap().deleted);
        assert_eq!(b.stats().files, 2, "{:?}", b.stats());
        // The last 'PeerSeenUpTo' is remembered for the next session.
        assert_eq!(p.devices[1].replica.seen_from(IDS[0]), a.sequence());
        assert!(p.counts.chunk_requests >= rec.chunks.len());
    }

    #[test]
    fn a_rename_transfers_no_chunks() {
        let mut p = Pair::new();
        let data = random(1 << 20, 2);
        let a = p.store(0).clone();
        let old = write_file(&a, "a.bin", &data, 10);
        p.sync();
        let requests_before = p.counts.chunk_requests;

        let mut w = a.writer();
        w.reuse(&old.chunks);
        let mut gone = old.clone();
        gone.deleted = true;
        let moved = FileRecord {
            path: "b.bin".into(),
            version: Default::default(),
            ..old.clone()
        };
        a.commit(vec![gone, moved], Some(&mut w), false).unwrap();
        drop(w);
        p.local_changed(0);
        p.sync();

        assert_eq!(
            p.counts.chunk_requests, requests_before,
            "no chunk requested"
        );
        p.assert_converged();
        let b = p.store(1);
        assert!(b.get("a.bin").unwrap().unwrap().deleted);
        assert_eq!(read_file(b, "b.bin"), data);
        assert_eq!(b.gc().unwrap().freed_chunks, 0, "chunks still referenced");
    }

    #[test]
    fn concurrent_edits_keep_both_versions() {
        let mut p = Pair::new();
        write_file(p.store(0), "doc.txt", b"from A", 100);
        write_file(p.store(1), "doc.txt", b"from B, newer", 200);
        p.sync();
        p.assert_converged();
        for i in 0..2 {
            let s = p.store(i);
            assert_eq!(read_file(s, "doc.txt"), b"from B, newer", "device {i}");
            let copies: Vec<FileRecord> = s
                .list_dir("")
                .unwrap()
                .into_iter()
                .filter(|r| r.path.contains(CONFLICT_MARKER))
                .collect();
            assert_eq!(copies.len(), 1, "device {i}: {copies:#?}");
            assert!(copies[0].path.starts_with("doc.sync-conflict-"));
            assert!(copies[0].path.ends_with(".txt"));
            assert_eq!(read_file(s, &copies[0].path), b"from A");
        }
    }

    #[test]
    fn a_chunk_corrupted_in_transit_is_fetched_again() {
        let mut p = Pair::new();
        let data = random(300 << 10, 3);
        write_file(p.store(0), "f.bin", &data, 10);
        p.corrupt = 1;
        p.sync();
        assert_eq!(p.counts.corrupted, 1);
        p.assert_converged();
        assert_eq!(read_file(p.store(1), "f.bin"), data);
        let chunks = p.store(0).get("f.bin").unwrap().unwrap().chunks.len();
        assert_eq!(p.counts.chunk_requests, chunks + 1, "one re-request");
    }

    #[test]
    fn a_record_whose_chunk_length_lies_is_refused_and_the_session_goes_on() {
        let mut p = Pair::new();
        let a = p.store(0).clone();
        // Committed locally on A (local commits trust their writer), so A's session offers
        // them to B like any record: a 10-byte chunk claimed longer and shorter.
        for (path, claimed) in [("long", 100u32), ("short", 4)] {
            let mut w = a.writer();
            let real = w.add(format!("{path:>10}").as_bytes()).unwrap();
            let mut r = FileRecord::new(path, Kind::File, 0o644, 1);
            r.chunks = vec![fybrk_store::ChunkRef {
                id: real.id,
                len: claimed,
            }];
            r.size = u64::from(r.chunks[0].len);
            a.commit(vec![r], Some(&mut w), false).unwrap();
        }
        write_file(&a, "ok.txt", b"valid", 10);
        p.sync();

        let b = p.store(1);
        assert_eq!(b.get("long").unwrap(), None);
        assert_eq!(b.get("short").unwrap(), None);
        assert_eq!(read_file(b, "ok.txt"), b"valid");
        let refused: Vec<&str> = p.devices[1]
            .replica
            .problems()
            .iter()
            .map(|pr| match pr {
                Problem::Refused { path, .. } => path.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(refused, ["long", "short"]);
        assert_eq!(
            p.sessions[1].peer_seen(),
            a.sequence(),
            "progress moved past them"
        );
        assert!(b.verify().unwrap().is_ok());

        // Later changes still flow.
        write_file(&a, "later.txt", b"later", 11);
        p.sync();
        assert_eq!(read_file(p.store(1), "later.txt"), b"later");
        assert_eq!(
            p.devices[1].replica.problems().len(),
            2,
            "not refused again"
        );
    }

    #[test]
    fn offline_catch_up_sends_only_new_records() {
        let mut p = Pair::new();
        for n in 0..5 {
            write_file(p.store(0), &format!("old{n}"), &random(1000, n), 10);
        }
        p.sync();
        assert_eq!(p.counts.index_records[0], 5);
        assert_eq!(
            p.devices[0].replica.seen_from(IDS[1]),
            p.store(1).sequence()
        );

        // Disconnected: A writes more; B's store does not move.
        write_file(p.store(0), "new1", b"one", 20);
        write_file(p.store(0), "new2", b"two", 21);
        p.reconnect();
        p.sync();
        assert_eq!(p.counts.index_records[0], 2, "only the new records");
        // B logs what it applied and sends it back once; A keeps its own.
        assert_eq!(p.counts.index_records[1], 2);
        assert_eq!(p.counts.chunk_requests, 2);
        p.assert_converged();
        assert_eq!(read_file(p.store(1), "new2"), b"two");
    }
}
