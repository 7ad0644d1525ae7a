//! One peer connection's replication state machine.
//!
//! A [`Session`] takes messages and `now` and returns [`Action`]s; what to send is read with
//! [`Session::poll_outgoing`], when to wake up with [`Session::poll_timeout`]. It never touches
//! the network, the clock or the store, so the whole protocol runs in tests with a fake clock.
//!
//! # What happens on a connection
//!
//! 1. Both sides send `Hello` with their latest sequence number and how far they have seen the
//!    other's change log (persisted from earlier sessions).
//! 2. Each side streams its changes after that point as `IndexUpdate` batches
//!    ([`Action::SendIndexFrom`]), and keeps streaming new local changes while connected.
//! 3. For each remote record the driver decides whether it is wanted and which chunks it lacks
//!    ([`Action::NeedChunks`]). Missing chunks are requested, up to a window in flight, and
//!    every response is verified by the driver before it counts ([`Action::StoreChunk`]): a
//!    corrupt chunk is requested again, a few times, and never applied.
//! 4. A record whose chunks are all present is applied at once ([`Action::Apply`]); a rename
//!    therefore transfers nothing, its chunks are already here.
//! 5. When every record of the peer's batches up to sequence N is settled, the progress is
//!    persisted ([`Action::PeerSeenUpTo`]); a later session resumes after N.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use fybrk_store::record::ShortId;
use fybrk_store::{ChunkId, FileRecord};

use super::fetch::{Fetcher, Response, Verified};
use super::messages::{record_len_bound, Message, INDEX_OVERHEAD, MAX_KEEPS_QUERY, MAX_OFFER};
use super::progress::Progress;
use super::validate::check_record;
use super::{hex, SyncError};

pub use super::action::{Action, FetchFailure, RecordToken, SessionConfig};

/// The token of chunks a local read asked for ([`Session::demand`]); record tokens count up
/// from 0 and never reach it.
const DEMAND: RecordToken = RecordToken(u64::MAX);

/// The token of chunks the peer offered before any record uses them ([`Message::Offer`]).
const PREFETCH: RecordToken = RecordToken(u64::MAX - 1);

/// Offered chunks are fetched only while fewer than this many chunks are wanted in all (about
/// 256 MiB at the average chunk size): beyond that the offers are dropped, and the record that
/// uses those chunks fetches them when it arrives. Bounds the session's memory whatever a peer
/// offers.
const MAX_PREFETCH_WANTED: usize = 4096;

/// The session's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Open { peer: ShortId },
    Closed,
}

/// A remote record not yet applied.
#[derive(Debug)]
struct Pending {
    record: FileRecord,
    batch: u64,
    state: RecordState,
}

#[derive(Debug)]
enum RecordState {
    /// `NeedChunks` emitted, waiting for `handle_missing`.
    Checking,
    /// Waiting for these chunks.
    Fetching(HashSet<ChunkId>),
    /// Could not be fetched; holds progress back until superseded.
    Failed,
}

/// One peer connection's replication state. See the module doc.
#[derive(Debug)]
pub struct Session {
    local: ShortId,
    folder: [u8; 16],
    config: SessionConfig,
    /// The peer's id as the connection authenticated it: its `Hello` must name the same.
    expected_peer: Option<ShortId>,
    phase: Phase,
    // Sending our index.
    local_max_seq: u64,
    /// Our changes up to here are sent (or queued in `outgoing`).
    index_sent_to: u64,
    index_requested: bool,
    // Receiving the peer's index.
    progress: Progress,
    next_token: u64,
    pending: HashMap<RecordToken, Pending>,
    by_path: HashMap<String, RecordToken>,
    fetch: Fetcher,
    /// Chunk reads the driver is doing for the peer.
    serving: HashSet<u32>,
    /// Our [`Message::KeepsQuery`] waiting for its reply, and the next query's id.
    keeps_asked: Option<(u32, Vec<ChunkId>)>,
    next_keeps_req: u32,
    /// The peer's queries the driver is answering.
    keeps_serving: usize,
    outgoing: VecDeque<Message>,
    /// Chunk bytes in `outgoing` (responses not yet taken by the driver).
    queued_chunk_bytes: usize,
    // Timers.
    now: Instant,
    last_sent: Instant,
    last_received: Instant,
}

impl Session {
    /// A session for a new connection, with default tunables. `local_max_seq` is the store's
    /// sequence, `seen_from_peer` the persisted progress for this peer (0 the first time).
    /// The `Hello` is queued at once.
    pub fn new(
        local: ShortId,
        folder: [u8; 16],
        local_max_seq: u64,
        seen_from_peer: u64,
        now: Instant,
    ) -> Session {
        Session::with_config(
            local,
            folder,
            local_max_seq,
            seen_from_peer,
            now,
            SessionConfig::default(),
        )
    }

    /// Like [`Session::new`] with explicit tunables.
    pub fn with_config(
        local: ShortId,
        folder: [u8; 16],
        local_max_seq: u64,
        seen_from_peer: u64,
        now: Instant,
        config: SessionConfig,
    ) -> Session {
        let hello = Message::Hello {
            device: local,
            folder,
            max_seq: local_max_seq,
            seen_from_you: seen_from_peer,
        };
        Session {
            local,
            folder,
            config,
            expected_peer: None,
            phase: Phase::AwaitHello,
            local_max_seq,
            index_sent_to: 0,
            index_requested: false,
            progress: Progress::new(seen_from_peer),
            next_token: 0,
            pending: HashMap::new(),
            by_path: HashMap::new(),
            fetch: Fetcher::default(),
            serving: HashSet::new(),
            keeps_asked: None,
            next_keeps_req: 0,
            keeps_serving: 0,
            outgoing: VecDeque::from([hello]),
            queued_chunk_bytes: 0,
            now,
            last_sent: now,
            last_received: now,
        }
    }

    /// The peer's id as the connection's TLS handshake authenticated it. A `Hello` naming
    /// another device then closes the session: a peer must not speak for another device (its
    /// records would be counted, and its progress persisted, under that device's id).
    pub fn expect_peer(&mut self, peer: ShortId) {
        self.expected_peer = Some(peer);
    }

    /// The peer's short id, once its `Hello` arrived.
    pub fn peer(&self) -> Option<ShortId> {
        match self.phase {
            Phase::Open { peer } => Some(peer),
            _ => None,
        }
    }

    /// How far the peer's change log is applied here.
    pub fn peer_seen(&self) -> u64 {
        self.progress.seen
    }

    /// Remote records announced by the peer and not applied yet, and their bytes: what this
    /// device still has to fetch from this peer (`fybrk status`'s "pending").
    pub fn pending(&self) -> (u64, u64) {
        let bytes = self
            .pending
            .values()
            .filter(|p| p.record.is_live())
            .map(|p| p.record.size)
            .sum();
        (self.pending.len() as u64, bytes)
    }

    /// True once the session closed itself ([`Action::Close`]).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True while chunks are wanted from the peer (queued, in flight or being verified).
    pub fn fetching(&self) -> bool {
        !self.fetch.is_idle()
    }

    /// Open, and nothing in progress on our side: no record pending, no chunk wanted or being
    /// read for the peer, nothing queued to send, our index sent up to our latest change.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
            && self.pending.is_empty()
            && self.fetch.is_idle()
            && self.serving.is_empty()
            && self.outgoing.is_empty()
            && !self.index_requested
            && self.index_sent_to >= self.local_max_seq
    }

    /// The next message to send, if any.
    pub fn poll_outgoing(&mut self) -> Option<Message> {
        let msg = self.outgoing.pop_front()?;
        if let Message::ChunkResponse { data: Some(d), .. } = &msg {
            self.queued_chunk_bytes = self.queued_chunk_bytes.saturating_sub(d.len());
        }
        self.last_sent = self.now;
        Some(msg)
    }

    /// Bytes of chunk responses queued and not yet taken by [`Session::poll_outgoing`]: what the
    /// driver weighs before it reads more requests from the peer.
    pub fn queued_chunk_bytes(&self) -> usize {
        self.queued_chunk_bytes
    }

    /// When [`Session::handle_timeout`] must be called next (`None` once closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        let ping = self.last_sent + self.config.ping_interval;
        let idle = self.last_received + self.config.idle_timeout;
        Some(ping.min(idle))
    }

    /// Time passed: queue a keepalive, or give up on a silent peer.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        self.now = self.now.max(now);
        if self.now >= self.last_received + self.config.idle_timeout {
            return self.close(SyncError::Timeout(self.config.idle_timeout));
        }
        if self.now >= self.last_sent + self.config.ping_interval {
            self.outgoing.push_back(Message::Ping);
            // Counts as sent: one ping per interval even if the driver is slow to poll.
            self.last_sent = self.now;
        }
        Vec::new()
    }

    /// A message from the peer.
    pub fn handle_message(&mut self, msg: Message, now: Instant) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        self.now = self.now.max(now);
        self.last_received = self.now;
        let mut out = Vec::new();
        match (self.phase, msg) {
            (
                Phase::AwaitHello,
                Message::Hello {
                    device,
                    folder,
                    max_seq,
                    seen_from_you,
                },
            ) => {
                self.handle_hello(device, folder, max_seq, seen_from_you, &mut out);
            }
            (Phase::AwaitHello, other) => {
                return self.protocol_error(format!("{} before Hello", kind(&other)));
            }
            (Phase::Open { .. }, Message::Hello { .. }) => {
                return self.protocol_error("second Hello".into());
            }
            (Phase::Open { .. }, Message::IndexUpdate { records, up_to_seq }) => {
                self.handle_index_update(records, up_to_seq, &mut out);
            }
            (Phase::Open { .. }, Message::ChunkRequest { id, req_id }) => {
                if self.serving.len() >= self.config.max_serving {
                    return self.protocol_error(format!(
                        "more than {} chunk requests outstanding",
                        self.config.max_serving
                    ));
                }
                if !self.serving.insert(req_id) {
                    return self.protocol_error(format!("request id {req_id} reused"));
                }
                out.push(Action::ReadChunk { id, req_id });
            }
            (Phase::Open { .. }, Message::ChunkResponse { req_id, data }) => {
                match self.fetch.handle_response(req_id, data) {
                    Response::Verify(id, data) => {
                        let early = self.fetch.only_waiter(&id, PREFETCH);
                        out.push(Action::StoreChunk { id, data, early })
                    }
                    Response::NotFound(id, tokens) => {
                        self.fail(tokens, id, FetchFailure::NotFound, &mut out)
                    }
                    Response::Stale => {}
                    Response::Unknown => {
                        return self.protocol_error(format!("response to unknown request {req_id}"))
                    }
                }
                self.request_chunks();
            }
            (Phase::Open { .. }, Message::Ping) => self.outgoing.push_back(Message::Pong),
            (Phase::Open { .. }, Message::Pong) => {}
            (Phase::Open { .. }, Message::KeepsQuery { req_id, ids }) => {
                if ids.len() > MAX_KEEPS_QUERY || self.keeps_serving >= 2 {
                    return self.protocol_error(format!(
                        "keeps query of {} ids with {} outstanding",
                        ids.len(),
                        self.keeps_serving
                    ));
                }
                self.keeps_serving += 1;
                out.push(Action::CheckKeeps { req_id, ids });
            }
            (Phase::Open { .. }, Message::KeepsReply { req_id, keeps }) => {
                match self.keeps_asked.take() {
                    Some((asked, ids)) if asked == req_id && ids.len() == keeps.len() => {
                        let kept: Vec<ChunkId> = ids
                            .into_iter()
                            .zip(keeps)
                            .filter_map(|(id, k)| k.then_some(id))
                            .collect();
                        if !kept.is_empty() {
                            out.push(Action::Kept(kept));
                        }
                    }
                    _ => {
                        return self
                            .protocol_error(format!("keeps reply {req_id} matches no query"))
                    }
                }
            }
            (Phase::Open { .. }, Message::Offer { ids }) => {
                if ids.len() > MAX_OFFER {
                    return self.protocol_error(format!("offer of {} chunks", ids.len()));
                }
                if !ids.is_empty() && self.fetch.wanted_len() < MAX_PREFETCH_WANTED {
                    out.push(Action::CheckOffered(ids));
                }
            }
            (Phase::Closed, _) => {}
        }
        out
    }

    /// The driver's answer to [`Action::NeedChunks`]: `None` when the record is not wanted
    /// (the local one is the same or newer), else the chunk ids the store lacks. Answers for
    /// records superseded meanwhile are ignored.
    pub fn handle_missing(
        &mut self,
        token: RecordToken,
        missing: Option<Vec<ChunkId>>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if !matches!(
            self.pending.get(&token).map(|p| &p.state),
            Some(RecordState::Checking)
        ) {
            return out;
        }
        match missing {
            None => {
                self.settle(token);
            }
            Some(ids) if ids.is_empty() => self.apply(token, &mut out),
            Some(ids) => {
                let ids: HashSet<ChunkId> = ids.into_iter().collect();
                for id in &ids {
                    self.fetch.want(*id, token);
                }
                if let Some(p) = self.pending.get_mut(&token) {
                    p.state = RecordState::Fetching(ids);
                }
                self.request_chunks();
            }
        }
        self.report_progress(&mut out);
        out
    }

    /// The driver's verdict on a chunk from [`Action::StoreChunk`]: `ok` when it verified and
    /// is stored. May also be called with `ok = true` for a wanted chunk that arrived another
    /// way (from another peer): the records waiting for it then complete without this peer.
    pub fn handle_chunk_verified(&mut self, id: ChunkId, ok: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Closed {
            return out;
        }
        match self.fetch.handle_verified(id, ok, self.config.max_attempts) {
            Verified::Done(tokens) => {
                if tokens.contains(&DEMAND) {
                    out.push(Action::Demanded { id, ok: true });
                }
                for token in tokens {
                    let done = match self.pending.get_mut(&token).map(|p| &mut p.state) {
                        Some(RecordState::Fetching(left)) => {
                            left.remove(&id);
                            left.is_empty()
                        }
                        _ => false,
                    };
                    if done {
                        self.apply(token, &mut out);
                    }
                }
            }
            Verified::Retry => {
                tracing::warn!(chunk = %id, "chunk from peer failed verification; requesting it again");
            }
            Verified::GaveUp(tokens, attempts) => {
                self.fail(tokens, id, FetchFailure::Corrupt { attempts }, &mut out);
            }
            Verified::Ignore => {}
        }
        self.request_chunks();
        self.report_progress(&mut out);
        out
    }

    /// The driver's answer to [`Action::ReadChunk`].
    pub fn handle_chunk_read(&mut self, req_id: u32, data: Option<Vec<u8>>) {
        if self.phase != Phase::Closed && self.serving.remove(&req_id) {
            self.queued_chunk_bytes += data.as_ref().map_or(0, Vec::len);
            self.outgoing
                .push_back(Message::ChunkResponse { req_id, data });
        }
    }

    /// A read on this device needs chunk `id`, which it references but does not hold (an
    /// on-demand device): ask the peer for it. The outcome is [`Action::Demanded`]. Ignored
    /// before the peer's `Hello`.
    pub fn demand(&mut self, id: ChunkId) {
        if matches!(self.phase, Phase::Open { .. }) {
            self.fetch.want(id, DEMAND);
            self.request_chunks();
        }
    }

    /// The driver's answer to [`Action::CheckOffered`]: the offered chunks to fetch now.
    /// Fetched like a record's chunks, in the same window; a chunk the peer no longer has or
    /// that fails verification is dropped without a word (no record waits for it yet).
    pub fn handle_offer_missing(&mut self, ids: Vec<ChunkId>) {
        if !matches!(self.phase, Phase::Open { .. }) {
            return;
        }
        let room = MAX_PREFETCH_WANTED.saturating_sub(self.fetch.wanted_len());
        for id in ids.into_iter().take(room) {
            self.fetch.want(id, PREFETCH);
        }
        self.request_chunks();
    }

    /// Offers the peer chunks this device just wrote ([`Message::Offer`]), in messages of at
    /// most [`MAX_OFFER`] ids. Call only when the connection negotiated offers (ALPN
    /// `fybrk/2`). Ignored before the peer's `Hello`.
    pub fn offer(&mut self, ids: &[ChunkId]) {
        if !matches!(self.phase, Phase::Open { .. }) {
            return;
        }
        for part in ids.chunks(MAX_OFFER) {
            self.outgoing
                .push_back(Message::Offer { ids: part.to_vec() });
        }
    }

    /// Asks the peer which of `ids` it keeps (at most [`MAX_KEEPS_QUERY`]); the answer is
    /// [`Action::Kept`]. False (nothing sent) while a query is outstanding or before `Hello`.
    pub fn ask_keeps(&mut self, mut ids: Vec<ChunkId>) -> bool {
        if self.keeps_asked.is_some() || !matches!(self.phase, Phase::Open { .. }) || ids.is_empty()
        {
            return false;
        }
        ids.truncate(MAX_KEEPS_QUERY);
        let req_id = self.next_keeps_req;
        self.next_keeps_req = self.next_keeps_req.wrapping_add(1);
        self.outgoing.push_back(Message::KeepsQuery {
            req_id,
            ids: ids.clone(),
        });
        self.keeps_asked = Some((req_id, ids));
        true
    }

    /// The driver's answer to [`Action::CheckKeeps`].
    pub fn handle_keeps_checked(&mut self, req_id: u32, keeps: Vec<bool>) {
        if self.phase != Phase::Closed && self.keeps_serving > 0 {
            self.keeps_serving -= 1;
            self.outgoing
                .push_back(Message::KeepsReply { req_id, keeps });
        }
    }

    /// The local store's sequence moved (a local change, or a record applied from any peer):
    /// asks for the new changes to send to this peer.
    pub fn handle_local_changed(&mut self, max_seq: u64) -> Vec<Action> {
        self.local_max_seq = self.local_max_seq.max(max_seq);
        let mut out = Vec::new();
        self.request_index(&mut out);
        out
    }

    /// The driver's answer to [`Action::SendIndexFrom`]: the records `changes_since` returned
    /// and the store's sequence read just before (so no change can be claimed as sent but
    /// missing from `records`).
    pub fn handle_local_index(
        &mut self,
        mut records: Vec<FileRecord>,
        up_to_seq: u64,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Closed {
            return out;
        }
        self.index_requested = false;
        records.sort_by_key(|r| r.seq);
        let up_to = records.iter().map(|r| r.seq).fold(up_to_seq, u64::max);
        self.local_max_seq = self.local_max_seq.max(up_to);
        let limit = self.config.max_frame.saturating_sub(INDEX_OVERHEAD);
        let mut batch = Vec::new();
        let mut batch_len = 0;
        for r in records {
            let len = record_len_bound(&r);
            if len > limit {
                tracing::warn!(path = %r.path, bytes = len, "record too large for one frame; not sent");
                out.push(Action::RecordTooLarge {
                    path: r.path,
                    bytes: len,
                });
                continue;
            }
            if !batch.is_empty() && batch_len + len > self.config.batch_bytes.min(limit) {
                self.send_batch(std::mem::take(&mut batch), None);
                batch_len = 0;
            }
            batch_len += len;
            batch.push(r);
        }
        // The last batch (possibly empty) carries `up_to`: the peer learns it is caught up.
        if !batch.is_empty() || up_to > self.index_sent_to {
            self.send_batch(batch, Some(up_to));
        }
        self.index_sent_to = self.index_sent_to.max(up_to);
        self.request_index(&mut out);
        out
    }

    fn handle_hello(
        &mut self,
        device: ShortId,
        folder: [u8; 16],
        max_seq: u64,
        seen_from_you: u64,
        out: &mut Vec<Action>,
    ) {
        if folder != self.folder {
            let err = SyncError::WrongFolder {
                ours: hex(&self.folder),
                theirs: hex(&folder),
            };
            out.extend(self.close(err));
            return;
        }
        if device == self.local {
            out.extend(self.close(SyncError::SelfConnect(device)));
            return;
        }
        if let Some(authenticated) = self.expected_peer.filter(|&a| a != device) {
            out.extend(self.protocol_error(format!(
                "Hello names device {device:016x}, but the connection authenticated \
                 {authenticated:016x}"
            )));
            return;
        }
        self.phase = Phase::Open { peer: device };
        if max_seq < self.progress.seen {
            // The peer's log is shorter than what we saw of it: its store was reset or restored.
            // Our progress names sequences that no longer exist; start over.
            tracing::warn!(
                peer = device,
                max_seq,
                seen = self.progress.seen,
                "peer's change log restarted"
            );
            self.progress.seen = 0;
            out.push(Action::PeerSeenUpTo(0));
        }
        // Likewise from the peer's side: it claims more of our log than exists.
        self.index_sent_to = if seen_from_you > self.local_max_seq {
            0
        } else {
            seen_from_you
        };
        self.request_index(out);
    }

    fn handle_index_update(
        &mut self,
        records: Vec<FileRecord>,
        up_to_seq: u64,
        out: &mut Vec<Action>,
    ) {
        // Refused records are dropped here: never fetched, applied or relayed, and not counted
        // in the batch, so progress moves past them and the valid ones are not held up.
        let now_ns = (self.config.wall_clock)();
        let peer = self.peer().unwrap_or_default();
        let records: Vec<FileRecord> = records
            .into_iter()
            .filter(|r| match check_record(r, now_ns) {
                Ok(()) => true,
                Err(why) => {
                    tracing::warn!(peer = format_args!("{peer:016x}"), path = ?r.path, reason = %why, "refused a record from peer");
                    false
                }
            })
            .collect();
        let batch = self.progress.open(up_to_seq, records.len());
        for record in records {
            // A newer record for a path still pending replaces it: the peer's record for a path
            // only ever moves forward, so the old one would lose against it anyway.
            if let Some(old) = self.by_path.remove(&record.path) {
                self.drop_pending(old);
            }
            let token = RecordToken(self.next_token);
            self.next_token += 1;
            self.by_path.insert(record.path.clone(), token);
            self.pending.insert(
                token,
                Pending {
                    record: record.clone(),
                    batch,
                    state: RecordState::Checking,
                },
            );
            out.push(Action::NeedChunks { token, record });
        }
        self.report_progress(out);
    }

    /// Forgets a pending record (superseded) and settles it for progress.
    fn drop_pending(&mut self, token: RecordToken) {
        if let Some(p) = self.pending.remove(&token) {
            if let RecordState::Fetching(left) = p.state {
                self.fetch.forget(token, left);
            }
            self.progress.settle(p.batch);
        }
    }

    /// Emits `Apply` for a record whose chunks are all present.
    fn apply(&mut self, token: RecordToken, out: &mut Vec<Action>) {
        if let Some(record) = self.settle(token) {
            out.push(Action::Apply(record));
        }
    }

    /// Removes a finished record (applied, or not wanted) and counts it for progress.
    fn settle(&mut self, token: RecordToken) -> Option<FileRecord> {
        let p = self.pending.remove(&token)?;
        if self.by_path.get(&p.record.path) == Some(&token) {
            self.by_path.remove(&p.record.path);
        }
        self.progress.settle(p.batch);
        Some(p.record)
    }

    /// Marks records failed: reported, kept pending so progress stays before them.
    fn fail(
        &mut self,
        tokens: Vec<RecordToken>,
        id: ChunkId,
        reason: FetchFailure,
        out: &mut Vec<Action>,
    ) {
        if tokens.contains(&DEMAND) {
            out.push(Action::Demanded { id, ok: false });
        }
        for token in tokens {
            let Some(p) = self.pending.get_mut(&token) else {
                continue;
            };
            if let RecordState::Fetching(left) =
                std::mem::replace(&mut p.state, RecordState::Failed)
            {
                // Its other chunks are not worth fetching now.
                self.fetch.forget(token, left);
            }
            tracing::warn!(path = %p.record.path, chunk = %id, ?reason, "cannot fetch record from peer");
            out.push(Action::FetchFailed {
                path: p.record.path.clone(),
                chunk: id,
                reason: reason.clone(),
            });
        }
    }

    fn report_progress(&mut self, out: &mut Vec<Action>) {
        if let Some(seen) = self.progress.advance() {
            out.push(Action::PeerSeenUpTo(seen));
        }
    }

    fn request_chunks(&mut self) {
        for (id, req_id) in self.fetch.next_requests(self.config.window) {
            self.outgoing
                .push_back(Message::ChunkRequest { id, req_id });
        }
    }

    fn request_index(&mut self, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Open { .. })
            && !self.index_requested
            && self.local_max_seq > self.index_sent_to
        {
            self.index_requested = true;
            out.push(Action::SendIndexFrom(self.index_sent_to));
        }
    }

    fn send_batch(&mut self, records: Vec<FileRecord>, up_to: Option<u64>) {
        let last = records.last().map_or(self.index_sent_to, |r| r.seq);
        let up_to_seq = up_to.unwrap_or(last);
        self.index_sent_to = self.index_sent_to.max(up_to_seq);
        self.outgoing
            .push_back(Message::IndexUpdate { records, up_to_seq });
    }

    fn protocol_error(&mut self, what: String) -> Vec<Action> {
        tracing::warn!(%what, "peer broke the sync protocol");
        self.close(SyncError::Protocol(what))
    }

    fn close(&mut self, err: SyncError) -> Vec<Action> {
        self.phase = Phase::Closed;
        self.outgoing.clear();
        self.queued_chunk_bytes = 0;
        vec![Action::Close(err)]
    }
}

/// A message kind's name for errors.
fn kind(msg: &Message) -> &'static str {
    match msg {
        Message::Hello { .. } => "Hello",
        Message::IndexUpdate { .. } => "IndexUpdate",
        Message::ChunkRequest { .. } => "ChunkRequest",
        Message::ChunkResponse { .. } => "ChunkResponse",
        Message::Ping => "Ping",
        Message::Pong => "Pong",
        Message::KeepsQuery { .. } => "KeepsQuery",
        Message::KeepsReply { .. } => "KeepsReply",
        Message::Offer { .. } => "Offer",
    }
}

/// A path the store can hold and no peer can use to escape the folder: relative, `/`-separated,
/// no empty, `.` or `..` component, no NUL (the store's key separator).
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod demand_tests;
#[cfg(test)]
mod offer_tests;
#[cfg(test)]
mod tests;
