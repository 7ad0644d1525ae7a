//! What a [`crate::Session`] asks its driver to do, and the driver's tunables.
//!
//! The doc of each [`Action`] variant is the driver's contract for it.

use std::time::Duration;

use fybrk_store::{ChunkId, FileRecord};

use super::messages::DEFAULT_MAX_FRAME;
#[cfg(doc)]
use super::Session;
use super::SyncError;

/// Tunables of a session. The defaults suit both a LAN and a long-haul WAN path.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Chunk requests outstanding at once (sent, not yet answered and verified). 64 requests of
    /// 64 KiB average are 4 MiB in flight: enough to fill 100 Mbit/s at 300 ms round trip.
    pub window: usize,
    /// Failed verifications of one chunk from this peer before giving up on it. A bit flipped
    /// in transit does not repeat; the same chunk failing 3 times means the peer's copy or the
    /// path is broken, and more attempts would only waste bandwidth.
    pub max_attempts: u32,
    /// Target size of one index batch. Small enough not to hold up chunk responses queued
    /// behind it for long, large enough that per-batch overhead does not matter; progress is
    /// persisted per batch, so it is also how much index is re-sent after a crash.
    pub batch_bytes: usize,
    /// The frame limit both sides use; a record that cannot fit is reported, not sent.
    pub max_frame: usize,
    /// Send a `Ping` after this long without sending anything.
    pub ping_interval: Duration,
    /// Close the session after this long without receiving anything: three pings unanswered.
    pub idle_timeout: Duration,
    /// Chunk reads the peer may have outstanding with us. A peer keeps to its own window (64 by
    /// default); far more than that is a broken peer making us queue unbounded reads.
    pub max_serving: usize,
    /// The wall clock, in ns since the Unix epoch: records from a peer are checked against it
    /// (an mtime far in the future is refused). A function so tests can fix the time.
    pub wall_clock: fn() -> i64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            window: 64,
            max_attempts: 3,
            batch_bytes: 256 << 10,
            max_frame: DEFAULT_MAX_FRAME,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            max_serving: 1024,
            wall_clock: system_now_ns,
        }
    }
}

/// Names one remote record while the driver answers [`Action::NeedChunks`] for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordToken(pub u64);

/// Why a record could not be fetched from this peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchFailure {
    /// The peer answered that it does not have the chunk (it usually has a newer version).
    NotFound,
    /// Every copy the peer sent failed verification.
    Corrupt {
        /// Copies received and rejected.
        attempts: u32,
    },
}

/// What the driver must do. Execute actions in the order returned: an [`Action::Apply`] must
/// be durable before a [`Action::PeerSeenUpTo`] that follows it is persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read `store.changes_since(seq)` (and `store.sequence()` *before* it) and pass both to
    /// [`Session::handle_local_index`]. At most one is outstanding at a time.
    SendIndexFrom(u64),
    /// The peer offers `record`. Decide with [`crate::conflict::decide`] against the local
    /// record: on `KeepLocal` answer `handle_missing(token, None)`; otherwise pin the record's
    /// chunks the store has (so GC cannot take them before the apply) and answer with the ids
    /// it lacks (empty when it has them all).
    NeedChunks {
        /// Pass back to [`Session::handle_missing`].
        token: RecordToken,
        /// The remote record.
        record: FileRecord,
    },
    /// Sealed bytes of chunk `id` arrived. Verify them (open with the folder key: the id is
    /// checked), store them pinned until the record that needs them is applied, and call
    /// [`Session::handle_chunk_verified`]. A failure to *store* (disk full) is not a verification
    /// failure: drop the session instead.
    StoreChunk {
        /// The chunk.
        id: ChunkId,
        /// Its sealed bytes as the peer stores them.
        data: Vec<u8>,
        /// Only an offer wants it ([`Action::CheckOffered`]): no record or read waits for it, so
        /// it may be written with the next batch rather than at once. It must be in the store
        /// (so `has_chunk` sees it) before the next [`Action::NeedChunks`] is answered.
        early: bool,
    },
    /// Every chunk of `record` is present and verified. Under the store's write lock, resolve
    /// it against the *current* local record with [`crate::conflict::resolve`] (the local
    /// one may have changed since `NeedChunks`) and commit in one batch: `write` keeping its
    /// version vector (no bump), and a conflict copy, if any, placed with
    /// [`crate::conflict::ConflictCopy::place`] and committed as a local change (bump).
    /// Then release the pins and call [`Session::handle_local_changed`] on every session. If
    /// the commit fails, drop the session: progress past this record is then never persisted.
    Apply(FileRecord),
    /// The peer asks for chunk `id`: answer [`Session::handle_chunk_read`] with the sealed bytes
    /// as stored, or `None` when the store does not have it.
    ReadChunk {
        /// The chunk.
        id: ChunkId,
        /// Pass back to [`Session::handle_chunk_read`].
        req_id: u32,
    },
    /// Persist: everything the peer logged up to this sequence is applied here. Use it as
    /// `seen_from_peer` in the next session with this peer. May go down (to 0) when the peer's
    /// log restarted.
    PeerSeenUpTo(u64),
    /// A record could not be fetched from this peer. It is not applied, and progress stays
    /// before it, so a later session (or another peer) retries it.
    FetchFailed {
        /// The record's path.
        path: String,
        /// The chunk that failed.
        chunk: ChunkId,
        /// Why.
        reason: FetchFailure,
    },
    /// A local record is too large for one frame (a file of tens of GiB) and was not sent.
    RecordTooLarge {
        /// Its path.
        path: String,
        /// Its encoded size bound.
        bytes: usize,
    },
    /// The peer asks which of `ids` this device keeps: answer
    /// [`Session::handle_keeps_checked`] with one flag per id (true only when this device is a
    /// full one that holds and uses the chunk).
    CheckKeeps {
        /// Pass back.
        req_id: u32,
        /// The chunks asked about.
        ids: Vec<ChunkId>,
    },
    /// The peer keeps these chunks ([`Session::ask_keeps`]): record that another device holds
    /// them, so an on-demand device may evict them.
    Kept(Vec<ChunkId>),
    /// A chunk asked for with [`Session::demand`] is stored (`ok`), or this peer cannot supply
    /// it (it lacks it, or its copies failed verification).
    Demanded {
        /// The chunk.
        id: ChunkId,
        /// True when it is stored now.
        ok: bool,
    },
    /// The peer offers chunks it just wrote ([`crate::Message::Offer`]): answer
    /// [`Session::handle_offer_missing`] with those this device would fetch now (a full device:
    /// the ones it lacks; an on-demand device: none). Chunks that arrive for no record are kept
    /// pinned for a while, so the record that uses them finds them here.
    CheckOffered(Vec<ChunkId>),
    /// End the connection. The session ignores all input from now on.
    Close(SyncError),
}

/// The system's wall clock in ns since the Unix epoch (0 before 1970, saturated past 2262).
pub fn system_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
