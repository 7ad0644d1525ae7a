//! The simulated network: devices, links between pairs of them, one pair of sessions per live
//! link, and per-direction FIFO queues (a QUIC stream is ordered) with seeded random latency,
//! so deliveries across links interleave in any order. Links drop and reconnect (new sessions
//! from the persisted progress), partitions take links down, chunk responses get corrupted.
//!
//! Each end of a link runs what the daemon runs: a [`Session`] and the real driver
//! ([`StoreReplica`]) over the device's store (a [`MemStore`] shared by all its links). As in
//! the daemon, every session of a device hears of each commit to its store (a local write, or a
//! record applied from any peer: the fan-out), and the progress the driver reports is persisted
//! for the next session with that peer.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use fybrk_store::record::ShortId;
use fybrk_store::{ChunkId, FileRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::ops::{self, Op};
use crate::store::mem::MemStore;
use crate::store_driver::{Problem, StoreReplica};
use crate::{Action, Message, Session};

/// The folder every simulated device syncs.
pub(crate) const FOLDER: [u8; 16] = *b"fybrk-sim-folder";

/// Distinct short ids; the top bits differ so their conflict-name tags differ.
pub(crate) const DEVICE_IDS: [u64; 3] = [
    0x1111_1111_1111_1111,
    0x9999_9999_9999_9999,
    0x5555_5555_5555_5555,
];

/// How the network misbehaves.
#[derive(Clone, Debug)]
pub(crate) struct NetConfig {
    /// One-way latency range per message, in milliseconds.
    pub(crate) latency_ms: (u64, u64),
    /// Probability that a chunk response arrives corrupted.
    pub(crate) corrupt: f64,
    /// Corrupt the first this many chunk responses regardless of `corrupt`.
    pub(crate) corrupt_first: usize,
    /// Probability, per delivered message, that its link drops.
    pub(crate) drop: f64,
    /// Delay range before a dropped link reconnects, in milliseconds.
    pub(crate) reconnect_ms: (u64, u64),
}

impl NetConfig {
    /// A reliable network.
    pub(crate) fn quiet() -> NetConfig {
        NetConfig {
            latency_ms: (1, 30),
            corrupt: 0.0,
            corrupt_first: 0,
            drop: 0.0,
            reconnect_ms: (50, 500),
        }
    }

    /// Latency spread, some corruption, some drops.
    pub(crate) fn noisy() -> NetConfig {
        NetConfig {
            corrupt: 0.05,
            drop: 0.01,
            ..NetConfig::quiet()
        }
    }
}

/// Counters for assertions.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) index_records: usize,
    /// Every `SendIndexFrom` answered: `(device, from, records sent)`.
    pub(crate) sends: Vec<(usize, u64, usize)>,
    pub(crate) chunk_requests: usize,
    pub(crate) corrupted: usize,
    /// Received chunks that failed verification, on all devices.
    pub(crate) rejected: usize,
    pub(crate) failed: Vec<String>,
}

/// One device: its store and the progress it persisted per peer.
pub(crate) struct Device {
    pub(crate) store: MemStore,
    /// Persisted progress per peer (`Action::PeerSeenUpTo`, as the daemon's peer book keeps it).
    pub(crate) seen: HashMap<ShortId, u64>,
}

impl Device {
    pub(crate) fn id(&self) -> ShortId {
        self.store.device()
    }

    /// The store's sequence.
    pub(crate) fn seq(&self) -> u64 {
        self.store.seq()
    }

    /// Every record by path.
    pub(crate) fn records(&self) -> std::collections::BTreeMap<String, FileRecord> {
        self.store.records()
    }
}

/// One end of a connection: the session and the driver executing its actions.
pub(crate) struct End {
    pub(crate) session: Session,
    replica: StoreReplica<MemStore>,
    /// The store sequence this session was last told about.
    notified: u64,
    /// Problems of `replica` already counted.
    problems: usize,
}

pub(crate) struct Conn {
    pub(crate) ends: [End; 2],
    /// `queues[i]`: messages on their way to side `i`, with their delivery time.
    queues: [VecDeque<(Instant, Message)>; 2],
}

pub(crate) struct Link {
    pub(crate) ends: [usize; 2],
    allowed: bool,
    pub(crate) conn: Option<Conn>,
    reconnect_at: Option<Instant>,
}

pub(crate) struct World {
    pub(crate) now: Instant,
    rng: StdRng,
    pub(crate) devices: Vec<Device>,
    pub(crate) links: Vec<Link>,
    pub(crate) net: NetConfig,
    pub(crate) stats: Stats,
    /// Contents a user overwrote or deleted on some device: allowed to disappear. Shared with
    /// the races queued in the stores, which write it when they run.
    pub(crate) superseded: Rc<RefCell<HashSet<Vec<ChunkId>>>>,
    next_tag: u64,
}

impl World {
    /// `n` devices, links between the given pairs (all up and connected).
    pub(crate) fn new(seed: u64, n: usize, pairs: &[(usize, usize)], net: NetConfig) -> World {
        let mut w = World {
            now: Instant::now(),
            rng: StdRng::seed_from_u64(seed),
            devices: DEVICE_IDS[..n]
                .iter()
                .map(|&id| Device {
                    store: MemStore::new(id),
                    seen: HashMap::new(),
                })
                .collect(),
            links: pairs
                .iter()
                .map(|&(a, b)| Link {
                    ends: [a, b],
                    allowed: true,
                    conn: None,
                    reconnect_at: None,
                })
                .collect(),
            net,
            stats: Stats::default(),
            superseded: Rc::default(),
            next_tag: 0,
        };
        for l in 0..w.links.len() {
            w.connect(l);
        }
        w
    }

    /// Every device collects garbage at the start of every store call (see
    /// [`MemStore::set_gc_always`]): chunks survive between calls only if referenced or pinned.
    pub(crate) fn set_gc_always(&mut self, on: bool) {
        for d in &self.devices {
            d.store.set_gc_always(on);
        }
    }

    /// Starts fresh sessions and drivers on link `l`, each from its device's persisted progress.
    pub(crate) fn connect(&mut self, l: usize) {
        let ends = self.links[l].ends;
        let end = |me: usize, peer: usize| {
            let d = &self.devices[me];
            let peer_id = self.devices[peer].id();
            let seen = d.seen.get(&peer_id).copied().unwrap_or(0);
            let mut replica = StoreReplica::new(d.store.clone());
            replica.set_seen(peer_id, seen);
            End {
                session: Session::new(d.id(), FOLDER, d.seq(), seen, self.now),
                replica,
                notified: d.seq(),
                problems: 0,
            }
        };
        let ends = [end(ends[0], ends[1]), end(ends[1], ends[0])];
        self.links[l].conn = Some(Conn {
            ends,
            queues: [VecDeque::new(), VecDeque::new()],
        });
        self.links[l].reconnect_at = None;
        self.flush();
    }

    /// Drops link `l` (in-flight messages are lost, the drivers' pins released) and, if it is
    /// allowed, schedules a reconnect.
    pub(crate) fn drop_link(&mut self, l: usize) {
        self.links[l].conn = None;
        if self.links[l].allowed {
            let (lo, hi) = self.net.reconnect_ms;
            self.links[l].reconnect_at =
                Some(self.now + Duration::from_millis(self.rng.gen_range(lo..=hi)));
        }
    }

    /// Which links may be up; newly allowed ones connect, disallowed ones drop.
    pub(crate) fn set_partition(&mut self, allowed: &[bool]) {
        for (l, &ok) in allowed.iter().enumerate().take(self.links.len()) {
            self.links[l].allowed = ok;
            if !ok {
                self.links[l].conn = None;
                self.links[l].reconnect_at = None;
            } else if self.links[l].conn.is_none() {
                self.connect(l);
            }
        }
    }

    /// All links allowed and reconnected with fresh sessions (so records that failed in an
    /// old session are retried).
    pub(crate) fn heal(&mut self) {
        for l in 0..self.links.len() {
            self.links[l].allowed = true;
            self.connect(l);
        }
    }

    /// Delivers the next event (ties in time broken at random); false when nothing is left.
    pub(crate) fn step(&mut self) -> bool {
        let mut next: Option<(Instant, usize, Option<usize>)> = None;
        let mut ties = 0u32;
        let mut consider = |at: Instant, l: usize, side: Option<usize>, rng: &mut StdRng| match next
        {
            Some((t, ..)) if at > t => {}
            Some((t, ..)) if at == t => {
                ties += 1;
                if rng.gen_range(0..=ties) == 0 {
                    next = Some((at, l, side));
                }
            }
            _ => {
                ties = 0;
                next = Some((at, l, side));
            }
        };
        for (l, link) in self.links.iter().enumerate() {
            if let Some(at) = link.reconnect_at {
                consider(at, l, None, &mut self.rng);
            }
            if let Some(conn) = &link.conn {
                for side in 0..2 {
                    if let Some((at, _)) = conn.queues[side].front() {
                        consider(*at, l, Some(side), &mut self.rng);
                    }
                }
            }
        }
        let Some((at, l, side)) = next else {
            return false;
        };
        self.now = self.now.max(at);
        match side {
            None => {
                if self.links[l].allowed && self.links[l].conn.is_none() {
                    self.connect(l);
                }
                self.links[l].reconnect_at = None;
            }
            Some(side) => {
                let Some(conn) = self.links[l].conn.as_mut() else {
                    return true;
                };
                let Some((_, msg)) = conn.queues[side].pop_front() else {
                    return true;
                };
                self.drive(l, side, |s, now| s.handle_message(msg, now));
                if self.net.drop > 0.0 && self.rng.gen_bool(self.net.drop) {
                    self.drop_link(l);
                }
            }
        }
        self.flush();
        true
    }

    /// Runs until nothing is in flight; panics if that takes absurdly long (a livelock).
    pub(crate) fn run_to_quiescence(&mut self) {
        for _ in 0..2_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("no quiescence after 2M events: livelock");
    }

    /// A user operation on device `d`; the device's sessions learn of the new change.
    pub(crate) fn op(&mut self, d: usize, op: &Op, mtime_ns: i64) {
        self.next_tag += 1;
        if let Some(old) = ops::apply(&self.devices[d].store, op, mtime_ns, self.next_tag) {
            self.superseded.borrow_mut().insert(old);
        }
        self.fan_out();
        self.flush();
    }

    /// A user operation on device `d` that lands inside the next commit of a remote record
    /// there, between the driver's decision and the store's check (see
    /// [`MemStore::race_next_commit`]). `op` makes it from the path being applied.
    pub(crate) fn race(&mut self, d: usize, op: impl FnOnce(&str) -> Op + 'static, mtime_ns: i64) {
        self.next_tag += 1;
        let tag = self.next_tag;
        let superseded = self.superseded.clone();
        self.devices[d]
            .store
            .race_next_commit(move |store: &MemStore, path: &str| {
                if let Some(old) = ops::apply(store, &op(path), mtime_ns, tag) {
                    superseded.borrow_mut().insert(old);
                }
            });
    }

    /// Drops the races no commit has taken yet.
    pub(crate) fn cancel_races(&mut self) {
        for d in &self.devices {
            d.store.cancel_races();
        }
    }

    /// Hands input to the session on side `side` of link `l` and its actions to the driver;
    /// then every session of a device whose store moved hears of it.
    fn drive(
        &mut self,
        l: usize,
        side: usize,
        input: impl FnOnce(&mut Session, Instant) -> Vec<Action>,
    ) {
        self.drive_one(l, side, input);
        self.fan_out();
    }

    fn drive_one(
        &mut self,
        l: usize,
        side: usize,
        input: impl FnOnce(&mut Session, Instant) -> Vec<Action>,
    ) {
        let now = self.now;
        let (me, peer) = (self.links[l].ends[side], self.links[l].ends[1 - side]);
        let peer_id = self.devices[peer].id();
        let Some(conn) = self.links[l].conn.as_mut() else {
            return;
        };
        let end = &mut conn.ends[side];
        let actions = input(&mut end.session, now);
        if let Err(e) = end.replica.run(&mut end.session, actions, now) {
            panic!("device {me}: the driver failed: {e}");
        }
        if let Some(e) = end.replica.closed() {
            panic!("device {me}: session closed: {e}");
        }
        for p in &end.replica.problems()[end.problems..] {
            match p {
                Problem::FetchFailed { path, .. } => self.stats.failed.push(path.clone()),
                Problem::RecordTooLarge { path, .. } => panic!("record too large: {path}"),
                Problem::Refused { path, reason, .. } => panic!("refused {path}: {reason}"),
            }
        }
        end.problems = end.replica.problems().len();
        // Persisted at once: the daemon saves it a little later, which only re-sends more.
        self.devices[me]
            .seen
            .insert(peer_id, end.replica.seen_from(peer_id));
        for (from, n) in self.devices[me].store.take_index_reads() {
            self.stats.index_records += n;
            self.stats.sends.push((me, from, n));
        }
        self.stats.rejected = self
            .devices
            .iter()
            .map(|d| d.store.counters().rejected as usize)
            .sum();
    }

    /// Tells every session whose device's store moved since it last heard (the daemon's commit
    /// watch): a local write, or a record applied by any of the device's sessions, this one
    /// included.
    fn fan_out(&mut self) {
        loop {
            let stale = self.links.iter().enumerate().find_map(|(l, link)| {
                let conn = link.conn.as_ref()?;
                (0..2).find_map(|side| {
                    let seq = self.devices[link.ends[side]].seq();
                    (conn.ends[side].notified < seq).then_some((l, side, seq))
                })
            });
            let Some((l, side, seq)) = stale else {
                return;
            };
            if let Some(conn) = self.links[l].conn.as_mut() {
                conn.ends[side].notified = seq;
            }
            self.drive_one(l, side, |s, _| s.handle_local_changed(seq));
        }
    }

    /// Moves what sessions want to send into the queues, with latency and corruption.
    fn flush(&mut self) {
        for link in &mut self.links {
            let Some(conn) = link.conn.as_mut() else {
                continue;
            };
            for side in 0..2 {
                while let Some(mut msg) = conn.ends[side].session.poll_outgoing() {
                    match &mut msg {
                        Message::ChunkRequest { .. } => self.stats.chunk_requests += 1,
                        Message::ChunkResponse { data: Some(d), .. } if !d.is_empty() => {
                            let forced = self.net.corrupt_first > 0;
                            if forced
                                || (self.net.corrupt > 0.0 && self.rng.gen_bool(self.net.corrupt))
                            {
                                self.net.corrupt_first = self.net.corrupt_first.saturating_sub(1);
                                let i = self.rng.gen_range(0..d.len());
                                d[i] ^= 1 << self.rng.gen_range(0..8);
                                self.stats.corrupted += 1;
                            }
                        }
                        _ => {}
                    }
                    let (lo, hi) = self.net.latency_ms;
                    let mut at = self.now + Duration::from_millis(self.rng.gen_range(lo..=hi));
                    let queue = &mut conn.queues[1 - side];
                    if let Some((last, _)) = queue.back() {
                        at = at.max(*last); // one ordered stream per direction
                    }
                    queue.push_back((at, msg));
                }
            }
        }
    }
}
