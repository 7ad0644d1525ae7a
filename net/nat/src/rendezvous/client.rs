//! The device side of the rendezvous protocol as a state machine without I/O.
//!
//! A [`Client`] keeps the device registered (and its NAT mapping towards the server open),
//! asks the server for introductions ([`Client::connect`]), and runs one [`Puncher`] per
//! introduction, whether this device asked or the peer did. Inputs are
//! [`Client::handle_datagram`] (every datagram of the shared socket whose first byte is in
//! [`super::TYPE_RANGE`]), [`Client::handle_timeout`] and the commands; outputs are the
//! returned datagrams and [`Client::poll_event`]. The tokio loop around it is
//! [`super::driver::spawn_client`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, trace, warn};

use super::messages::{
    decode, Connect, Cookie, EncodeError, ErrorCode, ErrorReply, Message, Punch, Register,
    Registered, Unknown, MAX_LAN_CANDIDATES,
};
use super::puncher::{
    Candidate, CandidateKind, PunchOutcome, PunchPath, PunchTransmit, Puncher, PUNCH_TIMEOUT,
};
use super::{Transmit, WallClock};
use crate::backoff::Backoff;
use crate::identity::{DeviceId, DeviceKey};
use crate::tls::{Allow, PeerPolicy};

/// How often a registered device refreshes its registration. Many home NATs forget an idle UDP
/// mapping after 30 s (RFC 4787 asks for 2 minutes; not all comply), so 25 s keeps the mapping
/// towards the server, and with it the reflexive address the server hands to peers, alive.
pub const REREGISTER_INTERVAL: Duration = Duration::from_secs(25);

/// How long to wait for the server's answer before sending a request again. Well above any
/// round trip to a reachable server; retries then back off (see [`REQUEST_BACKOFF`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Retries of an unanswered `Register`: from [`REQUEST_TIMEOUT`] doubling to 30 s, with jitter,
/// so devices that lost the server at once (it restarted) do not come back in lockstep.
pub const REQUEST_BACKOFF: Backoff = Backoff::new(REQUEST_TIMEOUT, Duration::from_secs(30));

/// How long [`Client::connect`] waits for the server's answer (`Punch` or `Unknown`), resending
/// every [`REQUEST_TIMEOUT`], before reporting [`ClientEvent::ConnectTimedOut`]. It includes the
/// time to register first if the device is not registered yet.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// How long a punch session keeps answering the peer's probes after its own probing ended: the
/// peer may have started later and still be waiting for answers.
pub const PUNCH_LINGER: Duration = Duration::from_secs(2);

/// Most low-TTL probes waiting for [`Client::poll_low_ttl`]: a full round of every punch session
/// at its most candidates.
const MAX_LOW_TTL_QUEUED: usize = MAX_PUNCH_SESSIONS * super::puncher::MAX_CANDIDATES;

/// Most punch sessions at once. Bounds what a flood of introductions (every registered device
/// may ask for us) can make this device send.
pub const MAX_PUNCH_SESSIONS: usize = 16;

/// Where the server is and what to announce.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The rendezvous server's address (resolved).
    pub server: SocketAddr,
    /// This device's own addresses (interfaces, with the shared socket's port), best first; at
    /// most [`MAX_LAN_CANDIDATES`] are announced.
    pub lan: Vec<SocketAddr>,
}

/// What happened, for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server confirmed the registration for the first time, or with a new observed address
    /// (our NAT's public mapping changed).
    Registered {
        /// Our address as the server sees it.
        observed: SocketAddr,
    },
    /// The server told us to probe `peer` (we asked, or it asked for us and the policy agreed).
    PunchStarted {
        /// The other device.
        peer: DeviceId,
        /// The attempt.
        nonce: u64,
        /// Whether we asked.
        initiator: bool,
        /// The peer's address as the server sees it.
        peer_observed: SocketAddr,
        /// The peer's TURN relayed address, if it has one.
        peer_relay: Option<SocketAddr>,
    },
    /// A direct path to `peer` works.
    Punched {
        /// The other device.
        peer: DeviceId,
        /// The attempt.
        nonce: u64,
        /// Whether we asked.
        initiator: bool,
        /// The path.
        path: PunchPath,
    },
    /// No candidate of `peer` answered: use the relay.
    PunchFailed {
        /// The other device.
        peer: DeviceId,
        /// The attempt.
        nonce: u64,
        /// Whether we asked.
        initiator: bool,
        /// The peer's TURN relayed address, if it has one: dial it through a relay.
        peer_relay: Option<SocketAddr>,
    },
    /// The server does not know `peer` (offline, or registered elsewhere).
    PeerUnknown {
        /// The device asked for.
        peer: DeviceId,
        /// The attempt.
        nonce: u64,
    },
    /// The server did not answer a `Connect` within [`CONNECT_DEADLINE`].
    ConnectTimedOut {
        /// The device asked for.
        peer: DeviceId,
        /// The attempt.
        nonce: u64,
    },
    /// A device our policy does not admit asked for us; ignored.
    PunchRefused {
        /// That device.
        peer: DeviceId,
    },
    /// The server refused our timestamp: this device's clock is off.
    ClockSkew {
        /// Our clock minus the server's, in milliseconds.
        offset_ms: i64,
    },
    /// The server is full and did not register us (it is retried with backoff).
    ServerFull,
}

/// The device side of the rendezvous protocol.
pub struct Client {
    key: Arc<DeviceKey>,
    config: ClientConfig,
    policy: Arc<dyn PeerPolicy>,
    wall: WallClock,
    rng: StdRng,
    /// Last timestamp used; every request gets a strictly greater one.
    last_ms: u64,
    reg: Registration,
    connects: HashMap<u64, PendingConnect>,
    punches: HashMap<u64, PunchSession>,
    events: VecDeque<ClientEvent>,
    /// Our TURN relayed address, announced with the registration.
    relay: Option<SocketAddr>,
    /// Probes to send with a low IP TTL ([`Client::poll_low_ttl`]).
    low_ttl: VecDeque<PunchTransmit>,
}

/// Registration state.
#[derive(Debug)]
struct Registration {
    /// The newest cookie and the one before (a `Punch` may echo either).
    cookies: [Option<Cookie>; 2],
    observed: Option<SocketAddr>,
    /// Until when the server holds our registration, as far as we know.
    confirmed_until: Option<Instant>,
    /// Timestamp of the `Register` awaiting an answer.
    in_flight: Option<u64>,
    /// When to send the next `Register` (refresh or retry).
    next_send: Instant,
    backoff: Backoff,
    /// Unconfirmed answers in a row; past a few, answers stop triggering an immediate resend.
    unconfirmed_in_a_row: u32,
}

#[derive(Debug)]
struct PendingConnect {
    peer: DeviceId,
    /// Timestamps of the requests sent (to match an `Error`); the newest last.
    sent: Vec<u64>,
    next_send: Instant,
    deadline: Instant,
}

#[derive(Debug)]
struct PunchSession {
    puncher: Puncher,
    initiator: bool,
    peer_relay: Option<SocketAddr>,
    reported: bool,
    /// When the session is forgotten (probing over, linger over).
    ends: Instant,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.key.id())
            .field("server", &self.config.server)
            .field("reg", &self.reg)
            .field("connects", &self.connects.len())
            .field("punches", &self.punches.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client that registers at `config.server` from `now` on. `policy` decides whether an
    /// introduction this device did not ask for is accepted (any verdict but `Deny`).
    pub fn new(
        key: Arc<DeviceKey>,
        mut config: ClientConfig,
        policy: Arc<dyn PeerPolicy>,
        now: Instant,
        wall: WallClock,
    ) -> Self {
        config.lan.truncate(MAX_LAN_CANDIDATES);
        Client {
            key,
            config,
            policy,
            wall,
            rng: StdRng::from_entropy(),
            last_ms: 0,
            reg: Registration {
                cookies: [None, None],
                observed: None,
                confirmed_until: None,
                in_flight: None,
                next_send: now,
                backoff: REQUEST_BACKOFF,
                unconfirmed_in_a_row: 0,
            },
            connects: HashMap::new(),
            punches: HashMap::new(),
            events: VecDeque::new(),
            relay: None,
            low_ttl: VecDeque::new(),
        }
    }

    /// This device's id.
    pub fn id(&self) -> DeviceId {
        self.key.id()
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// Our address as the server last confirmed it.
    pub fn observed(&self) -> Option<SocketAddr> {
        self.reg.observed
    }

    /// Whether the server holds our registration at `now`, as far as we know.
    pub fn is_registered(&self, now: Instant) -> bool {
        self.reg.confirmed_until.is_some_and(|t| now < t)
    }

    /// Replaces the wall clock (the driver re-reads the system clock now and then).
    pub fn set_wall_clock(&mut self, wall: WallClock) {
        self.wall = wall;
    }

    /// Announces new own addresses (an interface came or went): registers again at once.
    pub fn set_lan_candidates(&mut self, mut lan: Vec<SocketAddr>, now: Instant) -> Vec<Transmit> {
        lan.truncate(MAX_LAN_CANDIDATES);
        if lan == self.config.lan {
            return Vec::new();
        }
        self.config.lan = lan;
        self.reg.backoff.reset();
        self.send_register(now)
    }

    /// Announces (or withdraws) our TURN relayed address: registers again at once.
    pub fn set_relay(&mut self, relay: Option<SocketAddr>, now: Instant) -> Vec<Transmit> {
        if relay == self.relay {
            return Vec::new();
        }
        self.relay = relay;
        self.reg.backoff.reset();
        self.send_register(now)
    }

    /// Registers again at once, with a fresh backoff: the path to the server changed (e.g. it
    /// now goes through a TURN relay).
    pub fn register_now(&mut self, now: Instant) -> Vec<Transmit> {
        self.reg.backoff.reset();
        self.send_register(now)
    }

    /// Asks the server to introduce us to `peer`; returns the attempt's nonce (named by the
    /// events that report the outcome) and what to send. Before the first registration
    /// completes, the request waits for it.
    pub fn connect(&mut self, peer: DeviceId, now: Instant) -> (u64, Vec<Transmit>) {
        let nonce = loop {
            let n = self.rng.gen::<u64>();
            if !self.connects.contains_key(&n) && !self.punches.contains_key(&n) {
                break n;
            }
        };
        self.connects.insert(
            nonce,
            PendingConnect {
                peer,
                sent: Vec::new(),
                next_send: now,
                deadline: now + CONNECT_DEADLINE,
            },
        );
        debug!(peer = %peer.abbrev(), nonce, "asking the rendezvous server for an introduction");
        (nonce, self.handle_timeout(now))
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.reg.next_send;
        for c in self.connects.values() {
            t = t.min(c.deadline);
            if self.is_ready_to_connect() {
                t = t.min(c.next_send);
            }
        }
        for s in self.punches.values() {
            t = t.min(s.puncher.poll_timeout().unwrap_or(s.ends).min(s.ends));
        }
        Some(t)
    }

    /// Sends what is due: registration refreshes and retries, `Connect` retries, probes; ends
    /// what timed out.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Transmit> {
        let mut out = Vec::new();
        if now >= self.reg.next_send {
            out.extend(self.send_register(now));
        }
        self.connect_timeouts(now, &mut out);
        self.punch_timeouts(now, &mut out);
        out
    }

    /// Handles one datagram (first byte in [`super::TYPE_RANGE`]) from `from`.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Vec<Transmit> {
        let msg = match decode(datagram) {
            Ok(m) => m,
            Err(e) => {
                trace!(%from, error = %e, "dropped invalid rendezvous datagram");
                return Vec::new();
            }
        };
        let from_server = from == self.config.server;
        match msg {
            Message::Registered(m) if from_server => self.handle_registered(m, now),
            Message::Punch(m) if from_server => self.handle_punch(m, now),
            Message::Unknown(m) if from_server => {
                self.handle_unknown(m);
                Vec::new()
            }
            Message::Error(m) if from_server => self.handle_error(m, now),
            Message::Probe(p) => match self.punches.get_mut(&p.body.nonce) {
                Some(s) => s.puncher.handle_probe(from, &p, now).into_iter().collect(),
                None => Vec::new(),
            },
            Message::ProbeAck(a) => {
                if let Some(s) = self.punches.get_mut(&a.body.nonce) {
                    s.puncher.handle_ack(from, &a, now);
                }
                self.report_outcomes();
                Vec::new()
            }
            other => {
                trace!(%from, ?other, "unexpected rendezvous message");
                Vec::new()
            }
        }
    }

    fn next_timestamp(&mut self, now: Instant) -> u64 {
        self.last_ms = self.wall.unix_ms(now).max(self.last_ms + 1);
        self.last_ms
    }

    fn is_ready_to_connect(&self) -> bool {
        self.reg.confirmed_until.is_some() && self.reg.cookies[0].is_some()
    }

    fn send_register(&mut self, now: Instant) -> Vec<Transmit> {
        let timestamp_ms = self.next_timestamp(now);
        let msg = Register {
            id: self.key.id(),
            public_key: self.key.public_key(),
            candidates: self.config.lan.clone(),
            timestamp_ms,
            cookie: self.reg.cookies[0],
            relay: self.relay,
        };
        self.reg.in_flight = Some(timestamp_ms);
        self.reg.next_send = now
            + self
                .reg
                .backoff
                .next_delay(&mut self.rng)
                .max(REQUEST_TIMEOUT);
        self.encoded(self.config.server, msg.encode(&self.key))
    }

    fn handle_registered(&mut self, m: Registered, now: Instant) -> Vec<Transmit> {
        if self.reg.in_flight != Some(m.echo_ms) {
            trace!("stale Registered");
            return Vec::new();
        }
        self.reg.in_flight = None;
        if self.reg.cookies[0] != Some(m.cookie) {
            self.reg.cookies = [Some(m.cookie), self.reg.cookies[0]];
        }
        if !m.confirmed {
            // The server wants proof that we receive at this address: send the cookie back.
            // The first time and after a NAT rebinding this is expected; a server that keeps
            // refusing gets the usual backoff instead of a tight loop.
            self.reg.unconfirmed_in_a_row += 1;
            if self.reg.unconfirmed_in_a_row <= 2 {
                return self.send_register(now);
            }
            return Vec::new();
        }
        self.reg.unconfirmed_in_a_row = 0;
        self.reg.backoff.reset();
        // Compared with the last confirmed address: after a NAT rebinding the server first
        // answers unconfirmed from the new address, and that answer must not hide the change.
        let observed_changed = self.reg.observed != Some(m.observed);
        self.reg.observed = Some(m.observed);
        let was_registered = self.is_registered(now);
        let ttl = Duration::from_secs(u64::from(m.ttl_secs));
        self.reg.confirmed_until = Some(now + ttl);
        // Refresh well before the server forgets us, even if it has a short TTL.
        self.reg.next_send = now + REREGISTER_INTERVAL.min(ttl / 3);
        if observed_changed || !was_registered {
            info!(observed = %m.observed, "registered at the rendezvous server");
            self.events.push_back(ClientEvent::Registered {
                observed: m.observed,
            });
        }
        // Requests that waited for the registration go out now.
        let mut out = Vec::new();
        self.connect_timeouts(now, &mut out);
        out
    }

    fn handle_error(&mut self, m: ErrorReply, now: Instant) -> Vec<Transmit> {
        let for_register = self.reg.in_flight == Some(m.echo_ms);
        let connect = self
            .connects
            .iter()
            .find(|(_, c)| c.sent.contains(&m.echo_ms))
            .map(|(n, _)| *n);
        if !for_register && connect.is_none() {
            trace!("stale Error");
            return Vec::new();
        }
        match m.code {
            ErrorCode::ClockSkew => {
                let offset_ms = i64::try_from(m.echo_ms).unwrap_or(i64::MAX)
                    - i64::try_from(m.server_ms).unwrap_or(i64::MAX);
                warn!(
                    offset_ms,
                    "the rendezvous server refused our clock: set this device's time (NTP)"
                );
                self.events.push_back(ClientEvent::ClockSkew { offset_ms });
                Vec::new()
            }
            ErrorCode::Full => {
                warn!("the rendezvous server is full; retrying later");
                self.events.push_back(ClientEvent::ServerFull);
                Vec::new()
            }
            ErrorCode::NotRegistered => {
                // The server restarted or our address changed: register again, then the
                // pending requests follow.
                debug!("rendezvous server does not know us; registering again");
                self.reg.confirmed_until = None;
                self.reg.cookies = [None, None];
                self.reg.backoff.reset();
                if let Some(c) = connect.and_then(|n| self.connects.get_mut(&n)) {
                    c.next_send = now;
                }
                if self.reg.in_flight.is_some() && !for_register {
                    // A registration is already on its way.
                    return Vec::new();
                }
                self.send_register(now)
            }
        }
    }

    fn handle_punch(&mut self, m: Punch, now: Instant) -> Vec<Transmit> {
        if !self.reg.cookies.contains(&Some(m.cookie_echo)) {
            debug!("Punch without our cookie: ignored");
            return Vec::new();
        }
        if DeviceId::from_public_key(&m.peer_public_key) != m.peer || m.peer == self.key.id() {
            debug!(peer = %m.peer.abbrev(), "Punch with a key that is not the peer's: ignored");
            return Vec::new();
        }
        if self.punches.contains_key(&m.nonce) {
            return Vec::new(); // a duplicate (our Connect was resent)
        }
        if m.initiator {
            match self.connects.get(&m.nonce) {
                Some(c) if c.peer == m.peer => {
                    self.connects.remove(&m.nonce);
                }
                _ => return Vec::new(),
            }
        } else if self.policy.allows(&m.peer) == Allow::Deny {
            debug!(peer = %m.peer.abbrev(), "introduction from a device we do not accept");
            self.events
                .push_back(ClientEvent::PunchRefused { peer: m.peer });
            return Vec::new();
        }
        if self.punches.len() >= MAX_PUNCH_SESSIONS {
            warn!(peer = %m.peer.abbrev(), "too many hole punches at once; ignoring one");
            return Vec::new();
        }
        // A device that reaches the server only through its relay is observed at its relayed
        // address: that is a relay path, not a direct one.
        let reflexive = Some(m.observed).filter(|o| Some(*o) != m.peer_relay);
        let candidates = m
            .lan
            .iter()
            .map(|&addr| Candidate {
                addr,
                kind: CandidateKind::Lan,
            })
            .chain(reflexive.map(|addr| Candidate {
                addr,
                kind: CandidateKind::Reflexive,
            }))
            .chain(m.peer_relay.map(|addr| Candidate {
                addr,
                kind: CandidateKind::Relay,
            }));
        let puncher = Puncher::new(
            Arc::clone(&self.key),
            m.peer,
            m.peer_public_key,
            m.nonce,
            candidates,
            now,
        );
        debug!(
            peer = %m.peer.abbrev(), nonce = m.nonce, initiator = m.initiator,
            candidates = ?puncher.candidates(), "hole punching"
        );
        self.events.push_back(ClientEvent::PunchStarted {
            peer: m.peer,
            nonce: m.nonce,
            initiator: m.initiator,
            peer_observed: m.observed,
            peer_relay: m.peer_relay,
        });
        let mut session = PunchSession {
            puncher,
            initiator: m.initiator,
            peer_relay: m.peer_relay,
            reported: false,
            ends: now + PUNCH_TIMEOUT + PUNCH_LINGER,
        };
        let round = session.puncher.handle_timeout_ttl(now);
        self.punches.insert(m.nonce, session);
        let mut out = Vec::new();
        self.split_ttl(round, &mut out);
        out
    }

    /// The next probe that must go out with its own IP TTL (the puncher's first probes to a
    /// public address; see [`Puncher::handle_timeout_ttl`]): `(to, datagram, ttl)`. The other
    /// calls return only datagrams for the socket's default TTL, so a driver that cannot set a
    /// TTL may send these as usual.
    pub fn poll_low_ttl(&mut self) -> Option<(SocketAddr, Vec<u8>, u8)> {
        let t = self.low_ttl.pop_front()?;
        Some((t.to, t.data, t.ttl.unwrap_or(u8::MAX)))
    }

    /// Puts datagrams with a TTL of their own aside for [`Client::poll_low_ttl`], the rest in
    /// `out`.
    fn split_ttl(&mut self, round: Vec<PunchTransmit>, out: &mut Vec<Transmit>) {
        for t in round {
            if t.ttl.is_some() {
                // A driver that never asks (a simulation) must not make it grow without bound;
                // the real one drains it after every call.
                if self.low_ttl.len() >= MAX_LOW_TTL_QUEUED {
                    self.low_ttl.pop_front();
                }
                self.low_ttl.push_back(t);
            } else {
                out.push((t.to, t.data));
            }
        }
    }

    fn handle_unknown(&mut self, m: Unknown) {
        match self.connects.get(&m.nonce) {
            Some(c) if c.peer == m.target => {
                self.connects.remove(&m.nonce);
                debug!(peer = %m.target.abbrev(), "the rendezvous server does not know the peer");
                self.events.push_back(ClientEvent::PeerUnknown {
                    peer: m.target,
                    nonce: m.nonce,
                });
            }
            _ => trace!("stale Unknown"),
        }
    }

    fn connect_timeouts(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let expired: Vec<u64> = self
            .connects
            .iter()
            .filter(|(_, c)| now >= c.deadline)
            .map(|(n, _)| *n)
            .collect();
        for nonce in expired {
            if let Some(c) = self.connects.remove(&nonce) {
                debug!(peer = %c.peer.abbrev(), nonce, "no answer from the rendezvous server");
                self.events.push_back(ClientEvent::ConnectTimedOut {
                    peer: c.peer,
                    nonce,
                });
            }
        }
        if !self.is_ready_to_connect() {
            return;
        }
        let due: Vec<u64> = self
            .connects
            .iter()
            .filter(|(_, c)| now >= c.next_send)
            .map(|(n, _)| *n)
            .collect();
        for nonce in due {
            let timestamp_ms = self.next_timestamp(now);
            let Some(cookie) = self.reg.cookies[0] else {
                return;
            };
            let Some(c) = self.connects.get_mut(&nonce) else {
                continue;
            };
            c.sent.push(timestamp_ms);
            c.next_send = now + REQUEST_TIMEOUT;
            let msg = Connect {
                id: self.key.id(),
                target: c.peer,
                nonce,
                timestamp_ms,
                cookie,
            };
            out.extend(self.encoded(self.config.server, msg.encode(&self.key)));
        }
    }

    fn punch_timeouts(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let mut round = Vec::new();
        for s in self.punches.values_mut() {
            round.extend(s.puncher.handle_timeout_ttl(now));
        }
        self.split_ttl(round, out);
        self.report_outcomes();
        self.punches.retain(|_, s| now < s.ends);
    }

    /// Queues an event for each punch that decided since the last call.
    fn report_outcomes(&mut self) {
        for s in self.punches.values_mut() {
            let Some(outcome) = s.puncher.outcome() else {
                continue;
            };
            if s.reported {
                continue;
            }
            s.reported = true;
            let (peer, nonce, initiator) = (s.puncher.peer(), s.puncher.nonce(), s.initiator);
            let peer_relay = s.peer_relay;
            self.events.push_back(match outcome {
                PunchOutcome::Connected(path) => {
                    info!(peer = %peer.abbrev(), addr = %path.addr, kind = ?path.kind, rtt = ?path.rtt, "hole punched");
                    ClientEvent::Punched {
                        peer,
                        nonce,
                        initiator,
                        path,
                    }
                }
                PunchOutcome::Failed => {
                    info!(peer = %peer.abbrev(), "hole punching failed: no candidate answered");
                    ClientEvent::PunchFailed {
                        peer,
                        nonce,
                        initiator,
                        peer_relay,
                    }
                }
            });
        }
    }

    fn encoded(&self, to: SocketAddr, bytes: Result<Vec<u8>, EncodeError>) -> Vec<Transmit> {
        match bytes {
            Ok(bytes) => vec![(to, bytes)],
            Err(e) => {
                warn!(%to, error = %e, "cannot encode rendezvous message");
                Vec::new()
            }
        }
    }
}
