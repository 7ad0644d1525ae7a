//! The simulated network: devices, links between pairs of them, one pair of sessions per live
//! link, and per-direction FIFO queues (a QUIC stream is ordered) with seeded random latency,
//! so deliveries across links interleave in any order. Links drop and reconnect (new sessions
//! from the persisted progress), partitions take links down, chunk responses get corrupted.
//! The driver code here is the contract the real async driver implements.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use fybrk_store::{ChunkId, FileRecord, Kind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::store::{chunk_id, SimStore};
use crate::conflict::{decide, Decision};
use crate::{Action, Message, Session};

/// The folder every simulated device syncs.
pub(crate) const FOLDER: [u8; 16] = *b"fybrk-sim-folder";

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

/// A user operation on one device.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Write(String),
    Delete(String),
    Rename(String, String),
    Mkdir(String),
}

/// Counters for assertions.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) index_records: usize,
    /// Every `SendIndexFrom` answered: `(device, from, records sent)`.
    pub(crate) sends: Vec<(usize, u64, usize)>,
    pub(crate) chunk_requests: usize,
    pub(crate) corrupted: usize,
    pub(crate) rejected: usize,
    pub(crate) failed: Vec<String>,
}

struct Conn {
    sessions: [Session; 2],
    /// `queues[i]`: messages on their way to side `i`, with their delivery time.
    queues: [VecDeque<(Instant, Message)>; 2],
}

pub(crate) struct Link {
    ends: [usize; 2],
    allowed: bool,
    conn: Option<Conn>,
    reconnect_at: Option<Instant>,
}

pub(crate) struct World {
    pub(crate) now: Instant,
    rng: StdRng,
    pub(crate) devices: Vec<SimStore>,
    pub(crate) links: Vec<Link>,
    pub(crate) net: NetConfig,
    pub(crate) stats: Stats,
    /// Contents a user overwrote or deleted on some device: allowed to disappear.
    pub(crate) superseded: HashSet<Vec<ChunkId>>,
    next_tag: u64,
}

/// Distinct short ids; the top bits differ so their conflict-name tags differ.
pub(crate) const DEVICE_IDS: [u64; 3] = [
    0x1111_1111_1111_1111,
    0x9999_9999_9999_9999,
    0x5555_5555_5555_5555,
];

impl World {
    /// `n` devices, links between the given pairs (all up and connected).
    pub(crate) fn new(seed: u64, n: usize, pairs: &[(usize, usize)], net: NetConfig) -> World {
        let mut w = World {
            now: Instant::now(),
            rng: StdRng::seed_from_u64(seed),
            devices: DEVICE_IDS[..n]
                .iter()
                .map(|&id| SimStore::new(id))
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
            superseded: HashSet::new(),
            next_tag: 0,
        };
        for l in 0..w.links.len() {
            w.connect(l);
        }
        w
    }

    /// Starts fresh sessions on link `l`, each from its device's persisted progress.
    pub(crate) fn connect(&mut self, l: usize) {
        let ends = self.links[l].ends;
        let session = |me: usize, peer: usize| {
            let (d, p) = (&self.devices[me], &self.devices[peer]);
            let seen = d.seen.get(&p.id).copied().unwrap_or(0);
            Session::new(d.id, FOLDER, d.seq, seen, self.now)
        };
        let sessions = [session(ends[0], ends[1]), session(ends[1], ends[0])];
        self.links[l].conn = Some(Conn {
            sessions,
            queues: [VecDeque::new(), VecDeque::new()],
        });
        self.links[l].reconnect_at = None;
        self.flush();
    }

    /// Drops link `l` (in-flight messages are lost) and, if it is allowed, schedules a
    /// reconnect.
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
                let actions = conn.sessions[side].handle_message(msg, self.now);
                self.handle(l, side, actions);
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
        let ids = |c: &[fybrk_store::ChunkRef]| c.iter().map(|c| c.id).collect::<Vec<_>>();
        let store = &mut self.devices[d];
        let overwritten = match op {
            Op::Write(p) => {
                self.next_tag += 1;
                store.write(p, mtime_ns, self.next_tag).flatten()
            }
            Op::Delete(p) => store.delete(p, mtime_ns),
            Op::Rename(from, to) => {
                store.rename(from, to, mtime_ns);
                None
            }
            Op::Mkdir(p) => {
                store.mkdir(p, mtime_ns);
                None
            }
        };
        if let Some(c) = overwritten.filter(|c| !c.is_empty()) {
            self.superseded.insert(ids(&c));
        }
        self.notify(d);
        self.flush();
    }

    /// Tells every session of device `d` that its store moved.
    fn notify(&mut self, d: usize) {
        let seq = self.devices[d].seq;
        for l in 0..self.links.len() {
            for side in 0..2 {
                if self.links[l].ends[side] != d {
                    continue;
                }
                if let Some(conn) = self.links[l].conn.as_mut() {
                    let actions = conn.sessions[side].handle_local_changed(seq);
                    self.handle(l, side, actions);
                }
            }
        }
    }

    /// The driver: executes actions of the session on side `side` of link `l`, in order, and
    /// the actions its answers produce after them.
    fn handle(&mut self, l: usize, side: usize, actions: Vec<Action>) {
        let mut work: VecDeque<(usize, usize, Action)> =
            actions.into_iter().map(|a| (l, side, a)).collect();
        while let Some((l, side, action)) = work.pop_front() {
            let (me, peer) = (self.links[l].ends[side], self.links[l].ends[1 - side]);
            let peer_id = self.devices[peer].id;
            let Some(conn) = self.links[l].conn.as_mut() else {
                continue;
            };
            let session = &mut conn.sessions[side];
            let store = &mut self.devices[me];
            let more = match action {
                Action::SendIndexFrom(from) => {
                    let up_to = store.seq;
                    let records = store.changes_since(from);
                    self.stats.index_records += records.len();
                    self.stats.sends.push((me, from, records.len()));
                    session.handle_local_index(records, up_to)
                }
                Action::NeedChunks { token, record } => {
                    match decide(store.records.get(&record.path), &record) {
                        Decision::KeepLocal => session.handle_missing(token, None),
                        _ => session.handle_missing(token, Some(store.missing(&record))),
                    }
                }
                Action::StoreChunk { id, data } => {
                    let ok = chunk_id(&data) == id;
                    if ok {
                        store.chunks.insert(id, data);
                    } else {
                        self.stats.rejected += 1;
                    }
                    session.handle_chunk_verified(id, ok)
                }
                Action::Apply(record) => {
                    store.apply(record);
                    let seq = store.seq;
                    // Every session of this device, the one it came from included, sends on.
                    for (l2, link) in self.links.iter_mut().enumerate() {
                        for s2 in 0..2 {
                            if link.ends[s2] == me {
                                if let Some(c) = link.conn.as_mut() {
                                    let acts = c.sessions[s2].handle_local_changed(seq);
                                    work.extend(acts.into_iter().map(|a| (l2, s2, a)));
                                }
                            }
                        }
                    }
                    Vec::new()
                }
                Action::ReadChunk { id, req_id } => {
                    session.handle_chunk_read(req_id, store.chunks.get(&id).cloned());
                    Vec::new()
                }
                Action::PeerSeenUpTo(seq) => {
                    store.seen.insert(peer_id, seq);
                    Vec::new()
                }
                Action::FetchFailed { path, .. } => {
                    self.stats.failed.push(path);
                    Vec::new()
                }
                Action::RecordTooLarge { path, .. } => panic!("record too large: {path}"),
                Action::Close(e) => panic!("session closed: {e}"),
            };
            work.extend(more.into_iter().map(|a| (l, side, a)));
        }
    }

    /// Moves what sessions want to send into the queues, with latency and corruption.
    fn flush(&mut self) {
        for link in &mut self.links {
            let Some(conn) = link.conn.as_mut() else {
                continue;
            };
            for side in 0..2 {
                while let Some(mut msg) = conn.sessions[side].poll_outgoing() {
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

    /// Live files on every device: `(device, path, chunk ids)`.
    pub(crate) fn live_contents(&self) -> Vec<(usize, String, Vec<ChunkId>)> {
        let mut out = Vec::new();
        for (d, dev) in self.devices.iter().enumerate() {
            for r in dev
                .records
                .values()
                .filter(|r| r.is_live() && r.kind == Kind::File)
            {
                out.push((d, r.path.clone(), r.chunks.iter().map(|c| c.id).collect()));
            }
        }
        out
    }

    /// (a) Every device holds the same records (sequence numbers aside), every live file's
    /// chunks are present and intact, and every live session is idle and caught up.
    pub(crate) fn assert_converged(&self) {
        let view = |d: &SimStore| -> BTreeMap<String, FileRecord> {
            d.records
                .iter()
                .map(|(p, r)| {
                    (
                        p.clone(),
                        FileRecord {
                            seq: 0,
                            ..r.clone()
                        },
                    )
                })
                .collect()
        };
        let first = view(&self.devices[0]);
        for (i, dev) in self.devices.iter().enumerate().skip(1) {
            let other = view(dev);
            if other != first {
                let paths: BTreeMap<&String, (Option<&FileRecord>, Option<&FileRecord>)> = first
                    .keys()
                    .chain(other.keys())
                    .filter(|p| first.get(*p) != other.get(*p))
                    .map(|p| (p, (first.get(p), other.get(p))))
                    .collect();
                panic!("device {i} differs from device 0: {paths:#?}");
            }
        }
        for dev in &self.devices {
            for r in dev.records.values().filter(|r| r.is_live()) {
                for c in &r.chunks {
                    let data = dev
                        .chunks
                        .get(&c.id)
                        .unwrap_or_else(|| panic!("{} lacks a chunk", r.path));
                    assert_eq!(chunk_id(data), c.id, "corrupt chunk stored for {}", r.path);
                }
            }
        }
        for link in &self.links {
            let Some(conn) = &link.conn else { continue };
            for side in 0..2 {
                let s = &conn.sessions[side];
                let peer = &self.devices[link.ends[1 - side]];
                assert!(s.is_idle(), "session not idle at quiescence: {s:#?}");
                assert_eq!(s.peer_seen(), peer.seq, "progress not caught up");
            }
        }
    }

    /// (b) Every file content in `snapshot` that no user overwrote or deleted is still live
    /// somewhere in device 0's tree (under its name, a new name or a conflict copy).
    pub(crate) fn assert_nothing_lost(&self, snapshot: &[(usize, String, Vec<ChunkId>)]) {
        let live: HashSet<Vec<ChunkId>> = self
            .live_contents()
            .into_iter()
            .filter(|(d, ..)| *d == 0)
            .map(|(.., c)| c)
            .collect();
        for (d, path, content) in snapshot {
            if !self.superseded.contains(content) && !live.contains(content) {
                panic!(
                    "version of {path} last seen on device {d} is lost: {:#?}",
                    self.devices[0].records
                );
            }
        }
    }
}
