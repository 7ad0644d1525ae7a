//! Chunks a local read needs from peers (an on-demand device's remote content): which peer
//! is asked for which chunk, and when a read gives up. A state machine without I/O or clock;
//! [`hub::DemandHub`] drives it for the daemon's FUSE threads and replication sessions.
//!
//! A chunk is asked of one connected peer at a time (asking all at once would fetch it from
//! each); a peer that lacks it, or whose copies fail verification, or that disconnects, hands
//! it to the next peer not tried yet. It fails when every connected peer was tried, when no
//! peer is connected at all (at once: reading a folder offline must not cost seconds per
//! file), or at its deadline.
//!
//! Except for a moment after the last peer left: a connection is replaced (both sides dialled
//! after a restart, or a better path was found) by closing the old one before the new one's
//! session is up, and a link flaps when a network changes. Reads in that moment
//! ([`RECONNECT_GRACE`]) wait for a peer to come back instead of failing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fybrk_store::record::ShortId;
use fybrk_store::ChunkId;

pub mod hub;

/// How long a read waits for a chunk before it fails: within the 10 s the README promises.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(8);

/// How long after the last peer left a read still waits for one to (re)connect.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(3);

/// Why a read fails when no peer is there to ask.
const NO_PEER: &str = "no device that could have it is connected";

/// The state of one wanted chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still being fetched.
    Pending,
    /// Stored here now.
    Stored,
    /// Cannot be had; why, in words for a log line.
    Failed(String),
}

#[derive(Debug)]
struct Want {
    deadline: Instant,
    /// The peer asked now, if any.
    asked: Option<ShortId>,
    /// Peers that could not supply it.
    tried: Vec<ShortId>,
    outcome: Outcome,
    /// Reads waiting for it (0 for read-ahead): the entry is forgotten once it is settled
    /// and nobody waits.
    waiters: u32,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Demands {
    wants: HashMap<ChunkId, Want>,
    /// Connected peers, in the order they connected, with their number of open sessions: for
    /// a moment two connections to one peer may both be open (both sides dialled; one is
    /// closed as a duplicate), and closing one must not take the peer away.
    peers: Vec<(ShortId, u32)>,
    /// When the last peer left (`None` while one is connected, or if none ever was): until
    /// [`RECONNECT_GRACE`] after it, reads wait for a peer instead of failing.
    last_left: Option<Instant>,
}

impl Demands {
    /// A read (`wait`) or read-ahead wants chunk `id`.
    pub fn want(&mut self, id: ChunkId, wait: bool, now: Instant) {
        let no_peer = self.peers.is_empty() && !self.in_grace(now);
        let w = self.wants.entry(id).or_insert_with(|| Want {
            deadline: now + FETCH_TIMEOUT,
            asked: None,
            tried: Vec::new(),
            outcome: Outcome::Pending,
            waiters: 0,
        });
        if w.outcome != Outcome::Pending && w.waiters == 0 {
            // Settled earlier for nobody in particular (read-ahead): start over.
            *w = Want {
                deadline: now + FETCH_TIMEOUT,
                asked: None,
                tried: Vec::new(),
                outcome: Outcome::Pending,
                waiters: 0,
            };
        }
        if wait {
            w.waiters += 1;
        }
        if no_peer && w.outcome == Outcome::Pending {
            w.outcome = Outcome::Failed(NO_PEER.into());
        }
        if w.waiters == 0 && w.outcome != Outcome::Pending {
            self.wants.remove(&id);
        }
    }

    /// What became of chunk `id` (`None`: not wanted).
    pub fn outcome(&self, id: &ChunkId) -> Option<&Outcome> {
        self.wants.get(id).map(|w| &w.outcome)
    }

    /// A waiting read is done with chunk `id` (it read the outcome, or gave up).
    pub fn release(&mut self, id: &ChunkId) {
        if let Some(w) = self.wants.get_mut(id) {
            w.waiters = w.waiters.saturating_sub(1);
            if w.waiters == 0 && w.outcome != Outcome::Pending {
                self.wants.remove(id);
            }
        }
    }

    /// Whether reads wait for a peer that just left (see [`RECONNECT_GRACE`]).
    fn in_grace(&self, now: Instant) -> bool {
        self.last_left.is_some_and(|t| now < t + RECONNECT_GRACE)
    }

    /// A replication session with `peer` is open and can be asked.
    pub fn connected(&mut self, peer: ShortId) {
        self.last_left = None;
        match self.peers.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, sessions)) => *sessions += 1,
            None => self.peers.push((peer, 1)),
        }
    }

    /// One of `peer`'s sessions ended. What it was asked is asked again through the peer's
    /// other session when it has one (which session was asked is not known: a chunk that
    /// arrives twice is stored once); otherwise it goes to another peer, or, when it was the
    /// last peer, waits [`RECONNECT_GRACE`] for one to connect (the same peer again, too).
    pub fn disconnected(&mut self, peer: ShortId, now: Instant) {
        let Some(at) = self.peers.iter().position(|(p, _)| *p == peer) else {
            return;
        };
        self.peers[at].1 -= 1;
        let still = self.peers[at].1 > 0;
        if !still {
            self.peers.remove(at);
        }
        let last = self.peers.is_empty();
        if last {
            self.last_left = Some(now);
        }
        let ids: Vec<ChunkId> = self
            .wants
            .iter()
            .filter(|(_, w)| w.asked == Some(peer))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            match still || last {
                true => {
                    if let Some(w) = self.wants.get_mut(&id) {
                        w.asked = None;
                    }
                }
                false => self.failed(id, peer, "the device disconnected"),
            }
        }
    }

    /// Up to `max` chunks to ask `peer` for now; each is then asked of no other peer.
    pub fn next_for(&mut self, peer: ShortId, max: usize) -> Vec<ChunkId> {
        let mut out = Vec::new();
        for (id, w) in &mut self.wants {
            if out.len() >= max {
                break;
            }
            if w.outcome == Outcome::Pending && w.asked.is_none() && !w.tried.contains(&peer) {
                w.asked = Some(peer);
                out.push(*id);
            }
        }
        out
    }

    /// Chunk `id` is stored. Returns true when a read waits for it.
    pub fn stored(&mut self, id: ChunkId) -> bool {
        let Some(w) = self.wants.get_mut(&id) else {
            return false;
        };
        w.outcome = Outcome::Stored;
        if w.waiters == 0 {
            self.wants.remove(&id);
            return false;
        }
        true
    }

    /// `peer` could not supply chunk `id`: the next peer not tried gets it, or it fails.
    pub fn failed(&mut self, id: ChunkId, peer: ShortId, why: &str) {
        let Some(w) = self.wants.get_mut(&id) else {
            return;
        };
        if w.outcome != Outcome::Pending {
            return;
        }
        if w.asked == Some(peer) {
            w.asked = None;
        }
        if !w.tried.contains(&peer) {
            w.tried.push(peer);
        }
        if w.asked.is_none() && self.peers.iter().all(|(p, _)| w.tried.contains(p)) {
            w.outcome = Outcome::Failed(format!("no connected device could supply it ({why})"));
            if w.waiters == 0 {
                self.wants.remove(&id);
            }
        }
    }

    /// Fails what is past its deadline; returns the earliest deadline still pending, when the
    /// driver must call again.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        // With no peer, pending reads end with the grace (or at once if it is over).
        let offline = self.peers.is_empty();
        let grace_end = self.last_left.map(|t| t + RECONNECT_GRACE);
        let orphaned = offline && grace_end.is_none_or(|end| now >= end);
        self.wants.retain(|_, w| {
            if w.outcome == Outcome::Pending {
                if now >= w.deadline {
                    w.outcome =
                        Outcome::Failed(format!("no answer within {} s", FETCH_TIMEOUT.as_secs()));
                } else if orphaned {
                    w.outcome = Outcome::Failed(NO_PEER.into());
                } else {
                    let due = match (offline, grace_end) {
                        (true, Some(end)) => w.deadline.min(end),
                        _ => w.deadline,
                    };
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            w.outcome == Outcome::Pending || w.waiters > 0
        });
        next
    }

    /// True when some wanted chunk is not asked of any peer yet (sessions should look).
    pub fn has_unasked(&self) -> bool {
        self.wants
            .values()
            .any(|w| w.outcome == Outcome::Pending && w.asked.is_none())
    }
}

#[cfg(test)]
mod tests;
