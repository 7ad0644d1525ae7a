//! One hole-punch attempt as a state machine without I/O.
//!
//! Given the peer's candidates, a [`Puncher`] says which probes to send where and when
//! ([`Puncher::handle_timeout`], [`Puncher::poll_timeout`]), answers the peer's probes
//! ([`Puncher::handle_probe`]) and, from the answers to its own ([`Puncher::handle_ack`]),
//! decides which path works ([`Puncher::outcome`]).
//!
//! A path counts only when a `ProbeAck` signed by the peer, echoing one of our probes, comes
//! back *from the address that probe went to*: a stray or forged datagram cannot fake a path,
//! and a path that works only one way does not count. Each side decides on its own; both end
//! with a working pair because each answers every valid probe it receives.
//!
//! Preference: a LAN candidate wins at once (nothing is better). If a worse kind answers first,
//! the puncher waits [`SETTLE_GRACE`] for a better one before settling, and [`RELAY_GRACE`] if
//! only a relay answered (direct paths through NATs open a few rounds in).
//!
//! # Why the first probes have a low TTL
//!
//! A NAT lets the peer's probe in only once our own probe to the peer has left through it. A
//! plain Linux router (`masquerade`, port-restricted filtering) does worse than drop a probe that
//! comes earlier: the probe is addressed to the router itself, so conntrack records it as a
//! flow of its own, and that entry (30 s after its last packet, and the peer keeps probing)
//! takes the 5-tuple our first outgoing probe would have used. Our datagrams to the peer then
//! leave from another public port, the peer's router drops them (it expects the port the
//! rendezvous server saw), and the punch fails on both sides; the link ends on the relay and
//! stays there while the stale entries live. Whichever side probes first causes this unless both
//! start within a one-way trip of each other, which two daemons told by one server rarely do.
//!
//! So for the first [`OPEN_PHASE`] every probe to a public (reflexive) candidate goes out with
//! IP TTL [`OPEN_TTL`] ([`Puncher::handle_timeout_ttl`] says which): enough hops to leave
//! through our own NAT(s) and open the mapping, too few to reach the peer's router, so nothing
//! stale is left there. Once both sides' mappings exist (the phase is longer than the usual
//! gap between the two sides' start), full-TTL probes pass both NATs the first time. LAN and
//! relay candidates need no NAT opened and are probed at full TTL from the start. Measured in
//! the lab (`tests/restricted.rs`): two masquerade routers were relayed in 5 of 5 pairings
//! before, direct in 20 of 20 with the low-TTL phase.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::trace;

use super::messages::{is_usable_candidate, Probe, Signed};
use super::Transmit;
use crate::identity::{DeviceId, DeviceKey};

/// Time between two rounds of probes. A NAT opens its mapping towards the peer with our first
/// outgoing probe; the peer's probes that arrived before that are dropped, so the round interval
/// bounds how much later than the ideal moment the path opens. 50 ms keeps that penalty below
/// a typical internet round trip while staying a trickle (about 2 KB/s per candidate).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// How long to probe before giving up. The two `Punch` messages leave the server together, so
/// the sides start within a few hundred milliseconds of each other; NATs that let probes through
/// do so within the first round trips. Three seconds (60 rounds) covers slow links and loss of
/// many probes; past it a direct path is very unlikely (e.g. symmetric NATs on both sides) and
/// the caller should fall back to the relay.
pub const PUNCH_TIMEOUT: Duration = Duration::from_secs(3);

/// How long to wait for a better kind of path after a worse one answered. Three probe rounds:
/// a LAN probe that was dropped because the peer had not started yet is repeated twice within
/// it, and LAN round trips are milliseconds.
pub const SETTLE_GRACE: Duration = Duration::from_millis(150);

/// How long to wait for a direct path after only the peer's TURN relay answered. A relay answers
/// at the first round; a path through two NATs opens once both sides' probes have left, a few
/// rounds later. A second covers that with margin and keeps a relayed connection quick; a
/// relayed link keeps looking for a direct path afterwards anyway.
pub const RELAY_GRACE: Duration = Duration::from_secs(1);

/// How long probes to public candidates go out with [`OPEN_TTL`] before the full-TTL ones
/// start. It must cover the gap between the two sides' first probes: the server sends both
/// `Punch` messages in one step, so the gap is the difference of the two one-way trips from the
/// server plus scheduling, well under 100 ms on most paths. 250 ms (5 rounds) leaves a margin
/// for intercontinental pairs and busy machines; it is also what a direct path costs in extra
/// set-up time (a relay answer waits [`RELAY_GRACE`] for it anyway).
pub const OPEN_PHASE: Duration = Duration::from_millis(250);

/// The IP TTL of the probes of the [`OPEN_PHASE`]. A datagram loses one per router: 3 leaves
/// through a home router and a carrier's NAT behind it (double NAT) and dies at most two routers
/// further, inside our ISP, while the peer's router is typically many hops away. Too low and
/// an outer NAT stays closed (the punch then works as without the phase when that NAT drops
/// early probes, which most do); too high and the probe reaches the peer's router, which is
/// what the phase avoids.
pub const OPEN_TTL: u8 = 3;

/// The most candidates probed (LAN + reflexive + peer-reflexive). Bounds the probe traffic a
/// hostile candidate list can cause and keeps `seq` arithmetic simple (8 bits of index).
pub const MAX_CANDIDATES: usize = 16;

/// Where a candidate address comes from; the order is the preference (LAN first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CandidateKind {
    /// An interface address the peer announced: same network, no NAT in between.
    Lan,
    /// The peer's address as the rendezvous server saw it (its NAT's public mapping).
    Reflexive,
    /// An address the peer's probes came from that no one announced (e.g. a NAT that maps per
    /// destination): learned during the punch.
    PeerReflexive,
    /// Through a TURN relay: the peer's relayed address, or a peer that reached ours (a relay
    /// alias, see [`crate::mux::is_relay_alias`]). Works behind any NAT; last resort.
    Relay,
}

impl CandidateKind {
    /// How long to wait for a better path once a path of this kind answered.
    fn grace(self) -> Duration {
        match self {
            CandidateKind::Relay => RELAY_GRACE,
            _ => SETTLE_GRACE,
        }
    }
}

/// An address to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Where it comes from.
    pub kind: CandidateKind,
}

/// A path that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchPath {
    /// The peer's address on this path: send QUIC here.
    pub addr: SocketAddr,
    /// The kind of candidate it was.
    pub kind: CandidateKind,
    /// Probe-to-ack round trip.
    pub rtt: Duration,
}

/// A datagram to send, with the IP TTL to send it with (`None`: the socket's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PunchTransmit {
    /// Where to.
    pub to: SocketAddr,
    /// The encoded probe.
    pub data: Vec<u8>,
    /// A low TTL for the probes of the [`OPEN_PHASE`].
    pub ttl: Option<u8>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunchOutcome {
    /// A path works.
    Connected(PunchPath),
    /// No candidate answered within [`PUNCH_TIMEOUT`].
    Failed,
}

/// One hole-punch attempt towards one peer.
#[derive(Debug)]
pub struct Puncher {
    key: Arc<DeviceKey>,
    peer: DeviceId,
    peer_public_key: [u8; 32],
    nonce: u64,
    candidates: Vec<Candidate>,
    /// Until when probes to reflexive candidates only open our own NAT (low TTL).
    open_until: Instant,
    deadline: Instant,
    /// When each round was sent; a probe's `seq` names its round and candidate.
    rounds: Vec<Instant>,
    next_round: Instant,
    best: Option<PunchPath>,
    settle_at: Option<Instant>,
    outcome: Option<PunchOutcome>,
}

impl Puncher {
    /// Starts an attempt at `now`: the first round is due at once.
    ///
    /// Candidates are deduplicated (an address keeps its most preferred kind), unusable ones
    /// (unspecified, multicast, port 0) dropped, ordered LAN first and capped at
    /// [`MAX_CANDIDATES`].
    pub fn new(
        key: Arc<DeviceKey>,
        peer: DeviceId,
        peer_public_key: [u8; 32],
        nonce: u64,
        candidates: impl IntoIterator<Item = Candidate>,
        now: Instant,
    ) -> Self {
        let mut list: Vec<Candidate> = Vec::new();
        for c in candidates {
            if !is_usable_candidate(&c.addr) {
                continue;
            }
            match list.iter_mut().find(|k| k.addr == c.addr) {
                Some(known) => known.kind = known.kind.min(c.kind),
                None => list.push(c),
            }
        }
        // Stable: within a kind, the announced order (best first) is kept.
        list.sort_by_key(|c| c.kind);
        list.truncate(MAX_CANDIDATES);
        Puncher {
            key,
            peer,
            peer_public_key,
            nonce,
            candidates: list,
            open_until: now + OPEN_PHASE,
            deadline: now + PUNCH_TIMEOUT,
            rounds: Vec::new(),
            next_round: now,
            best: None,
            settle_at: None,
            outcome: None,
        }
    }

    /// The peer.
    pub fn peer(&self) -> DeviceId {
        self.peer
    }

    /// The attempt's nonce.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The candidates being probed, in preference order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// The result, once decided.
    pub fn outcome(&self) -> Option<PunchOutcome> {
        self.outcome
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next; `None` once decided.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        let mut t = self.next_round.min(self.deadline);
        if let Some(s) = self.settle_at {
            t = t.min(s);
        }
        Some(t)
    }

    /// [`handle_timeout_ttl`](Self::handle_timeout_ttl) without the TTLs: every probe as if
    /// sent with the socket's default.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Transmit> {
        self.handle_timeout_ttl(now)
            .into_iter()
            .map(|t| (t.to, t.data))
            .collect()
    }

    /// Settles or gives up if it is time, and sends the round of probes that is due; during the
    /// [`OPEN_PHASE`], those to reflexive candidates with TTL [`OPEN_TTL`].
    pub fn handle_timeout_ttl(&mut self, now: Instant) -> Vec<PunchTransmit> {
        if self.outcome.is_some() {
            return Vec::new();
        }
        if let (Some(at), Some(best)) = (self.settle_at, self.best) {
            if now >= at {
                self.finish(PunchOutcome::Connected(best));
                return Vec::new();
            }
        }
        if now >= self.deadline {
            // A path that answered but is still waiting for a better one is good enough.
            self.finish(
                self.best
                    .map_or(PunchOutcome::Failed, PunchOutcome::Connected),
            );
            return Vec::new();
        }
        if now < self.next_round {
            return Vec::new();
        }
        let round = self.rounds.len();
        self.rounds.push(now);
        // Keep the cadence even if the timer fired late, but never send two rounds at once.
        self.next_round = (self.next_round + PROBE_INTERVAL).max(now + PROBE_INTERVAL / 2);
        let opening = now < self.open_until;
        let mut out = Vec::with_capacity(self.candidates.len());
        for (index, c) in self.candidates.iter().enumerate() {
            let probe = Probe {
                from: self.key.id(),
                nonce: self.nonce,
                seq: make_seq(round, index),
            };
            // Only a reflexive address is behind the peer's NAT *and* unproven: a peer-reflexive
            // one is where the peer's own probe came from, so its NAT is open towards us.
            let ttl = (opening && c.kind == CandidateKind::Reflexive).then_some(OPEN_TTL);
            match probe.encode_probe(&self.key) {
                Ok(data) => out.push(PunchTransmit {
                    to: c.addr,
                    data,
                    ttl,
                }),
                Err(e) => tracing::warn!(error = %e, "cannot encode probe"),
            }
        }
        out
    }

    /// A probe from the peer: answers it (to where it came from) if it is genuine. An address
    /// no one announced becomes a peer-reflexive candidate, probed from the next round on.
    ///
    /// Probes keep being answered after the outcome is decided: the peer may still be waiting
    /// for its own answer.
    pub fn handle_probe(
        &mut self,
        from: SocketAddr,
        probe: &Signed<Probe>,
        now: Instant,
    ) -> Option<Transmit> {
        if !self.is_genuine(probe) {
            return None;
        }
        if self.outcome.is_none()
            && now < self.deadline
            && is_usable_candidate(&from)
            && self.candidates.len() < MAX_CANDIDATES
            && !self.candidates.iter().any(|c| c.addr == from)
        {
            let kind = if crate::mux::is_relay_alias(from) {
                CandidateKind::Relay
            } else {
                CandidateKind::PeerReflexive
            };
            trace!(%from, peer = %self.peer.abbrev(), ?kind, "peer-reflexive candidate");
            self.candidates.push(Candidate { addr: from, kind });
        }
        let ack = Probe {
            from: self.key.id(),
            nonce: self.nonce,
            seq: probe.body.seq,
        };
        match ack.encode_ack(&self.key) {
            Ok(bytes) => Some((from, bytes)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode probe ack");
                None
            }
        }
    }

    /// An answer to one of our probes: the path to the address that probe went to works.
    pub fn handle_ack(&mut self, from: SocketAddr, ack: &Signed<Probe>, now: Instant) {
        if self.outcome.is_some() || !self.is_genuine(ack) {
            return;
        }
        let (round, index) = split_seq(ack.body.seq);
        let (Some(sent), Some(candidate)) = (self.rounds.get(round), self.candidates.get(index))
        else {
            return;
        };
        if candidate.addr != from {
            // Answered from elsewhere: not proof that this candidate works in both directions.
            return;
        }
        let path = PunchPath {
            addr: candidate.addr,
            kind: candidate.kind,
            rtt: now.saturating_duration_since(*sent),
        };
        let best = match self.best {
            Some(b) if b.kind <= path.kind => b,
            _ => {
                trace!(peer = %self.peer.abbrev(), ?path, "path answered");
                self.best = Some(path);
                path
            }
        };
        // Candidates are sorted, so the first one's kind is the best any path can have.
        let best_possible = self.candidates.first().map_or(best.kind, |c| c.kind);
        if best.kind <= best_possible {
            self.finish(PunchOutcome::Connected(best));
        } else {
            let settle = now + best.kind.grace();
            self.settle_at = Some(self.settle_at.map_or(settle, |at| at.min(settle)));
        }
    }

    fn is_genuine(&self, msg: &Signed<Probe>) -> bool {
        msg.body.from == self.peer
            && msg.body.nonce == self.nonce
            && msg.verify(&self.peer_public_key).is_ok()
    }

    fn finish(&mut self, outcome: PunchOutcome) {
        trace!(peer = %self.peer.abbrev(), ?outcome, "punch decided");
        self.outcome = Some(outcome);
    }
}

/// `seq` = round (upper 24 bits) and candidate index (lower 8 bits).
fn make_seq(round: usize, index: usize) -> u32 {
    ((round as u32) << 8) | (index as u32 & 0xff)
}

fn split_seq(seq: u32) -> (usize, usize) {
    ((seq >> 8) as usize, (seq & 0xff) as usize)
}
