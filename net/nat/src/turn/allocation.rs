//! The TURN allocation as a state machine without I/O or clock (in the manner of quinn-proto):
//! allocating with long-term credentials, refreshing the allocation, binding and re-binding
//! channels, creating and renewing permissions, each request retransmitted by its own
//! [`Transaction`].
//!
//! Input: the server's datagrams ([`Allocation::handle_datagram`]), the clock
//! ([`Allocation::handle_timeout`]), what the owner asks for ([`Allocation::handle_bind`],
//! [`Allocation::handle_create_permission`], [`Allocation::handle_unbind`],
//! [`Allocation::handle_close`]) and failed sends ([`Allocation::handle_send_error`]), each with
//! `now`. Output: datagrams for the server ([`Allocation::poll_transmit`]), when to call in
//! next ([`Allocation::poll_timeout`]) and what happened ([`Allocation::poll_event`]). The
//! driver ([`super::driver`]) only moves bytes and time between it and the socket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use stun_rs::attributes::stun::XorMappedAddress;
use stun_rs::attributes::turn::XorRelayedAddress;
use stun_rs::StunMessage;
use tracing::warn;

use super::request::{granted_lifetime, Ask, Credentials, Try, Verdict};
use super::{refresh_after, Timers, TurnError, DESIRED_LIFETIME};
use crate::backoff::Backoff;
use crate::mux::CHANNEL_NUMBERS;
use crate::stun::new_tid;
use crate::stun::transaction::{Outcome, Transaction};

/// After deleting a stale allocation of ours, how often and how many times to ask for a new one
/// while the server still reports the old one (coturn frees it within about a second).
const STALE_ALLOCATION_POLL: Duration = Duration::from_millis(500);
const STALE_ALLOCATION_TRIES: u32 = 6;

/// After a failed round of channel and permission refreshes, when to try again: permissions
/// have a minute of margin (see `PERMISSION_REFRESH`), so a few seconds is quick enough without
/// hammering a server that is having trouble.
const BINDINGS_RETRY: Duration = Duration::from_secs(5);

/// Who asked for a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The owner ([`super::TurnClient::bind_peer`]), with its request number.
    User(u64),
    /// The mux: a learned route or a destination while relaying everything.
    Mux,
}

/// What happened, for the driver to act on.
#[derive(Debug)]
pub(crate) enum Event {
    /// The server granted the allocation.
    Allocated {
        /// Our relayed address.
        relayed: SocketAddr,
        /// Our address as the server saw it, if it said.
        mapped: Option<SocketAddr>,
        /// How long the server keeps it without a refresh.
        lifetime: Duration,
    },
    /// No allocation: the machine is done.
    AllocateFailed(TurnError),
    /// The allocation could not be refreshed and is gone: stop relaying through it.
    Lost(TurnError),
    /// A channel to `peer` is bound.
    Bound {
        /// Who asked.
        origin: Origin,
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        number: u16,
    },
    /// No channel to `peer` could be bound.
    BindFailed {
        /// Who asked.
        origin: Origin,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        error: TurnError,
    },
    /// The permissions the owner asked for (request `id`) are installed.
    Permitted {
        /// The owner's request number.
        id: u64,
        /// How it went.
        result: Result<(), TurnError>,
    },
    /// The allocation was deleted on the server (or that failed): the machine is done.
    Closed(Result<(), TurnError>),
}

/// A datagram for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    /// The transaction it belongs to (for [`Allocation::handle_send_error`]).
    pub(crate) tid: [u8; 12],
    /// Its bytes.
    pub(crate) data: Vec<u8>,
}

/// Why a request was sent, which decides what its answer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Allocate,
    /// Deleting an allocation the server still holds for our socket (after a 437).
    DeleteStale,
    /// Keeping the allocation alive; `started` is when this refresh began.
    Refresh {
        started: Instant,
    },
    Bind(Origin),
    /// Renewing a channel in a refresh round.
    Rebind,
    Permit(u64),
    /// Renewing the permissions in a refresh round.
    Repermit,
    Close,
}

/// A request waiting for its answer.
struct InFlight {
    ask: Ask,
    purpose: Purpose,
    sent: Try,
    transaction: Transaction,
}

/// A channel bound to a peer.
#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    /// Whether the mux routes the peer's traffic through it (and the refresh keeps it).
    routed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the Allocate (or for a stale allocation to go away).
    Allocating,
    /// Granted until `expires` unless refreshed.
    Active {
        relayed: SocketAddr,
        expires: Instant,
    },
    /// Lost, closed, or never granted: nothing is refreshed and nothing new is bound.
    Inactive,
}

/// A round of channel and permission refreshes.
struct Round {
    started: Instant,
    outstanding: usize,
    error: Option<TurnError>,
}

/// One TURN allocation on one server (see the module documentation).
pub(crate) struct Allocation {
    server: SocketAddr,
    credentials: Credentials,
    timers: Timers,
    phase: Phase,
    requests: Vec<InFlight>,
    channels: HashMap<SocketAddr, Channel>,
    /// Channel numbers taken by binds still in flight for peers without a channel, so two
    /// binds for one peer do not take two channels.
    reserved: HashMap<SocketAddr, u16>,
    next_channel: u16,
    permissions: HashSet<IpAddr>,
    /// When to refresh the allocation (`None` while a refresh is in flight or inactive).
    next_refresh: Option<Instant>,
    /// When to renew channels and permissions (`None` while a round runs or inactive).
    next_bindings: Option<Instant>,
    round: Option<Round>,
    /// When to ask for the allocation again while a stale one of ours goes away.
    retry_allocate: Option<Instant>,
    /// Allocate requests sent since the stale allocation was deleted (0: none was).
    stale_tries: u32,
    backoff: Backoff,
    rng: StdRng,
    events: VecDeque<Event>,
    stale_nonces: u64,
    refreshes: u64,
}

impl Allocation {
    /// Starts allocating on `server` with long-term credentials `username`/`password`: the
    /// Allocate request is due `now`.
    pub(crate) fn new(
        server: SocketAddr,
        username: String,
        password: String,
        timers: Timers,
        now: Instant,
    ) -> Self {
        let mut allocation = Allocation {
            server,
            credentials: Credentials::new(server, username, password),
            timers,
            phase: Phase::Allocating,
            requests: Vec::new(),
            channels: HashMap::new(),
            reserved: HashMap::new(),
            next_channel: *CHANNEL_NUMBERS.start(),
            permissions: HashSet::new(),
            next_refresh: None,
            next_bindings: None,
            round: None,
            retry_allocate: None,
            stale_tries: 0,
            // Retries of a failed refresh: quick at first, then no more than twice a minute,
            // always well inside the minute of margin `refresh_after` leaves.
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            rng: StdRng::from_entropy(),
            events: VecDeque::new(),
            stale_nonces: 0,
            refreshes: 0,
        };
        allocation.start(now, Ask::Allocate, Purpose::Allocate);
        allocation
    }

    /// Successful refreshes of the allocation so far.
    pub(crate) fn refreshes(&self) -> u64 {
        self.refreshes
    }

    /// Stale-nonce (438) answers handled so far.
    pub(crate) fn stale_nonces(&self) -> u64 {
        self.stale_nonces
    }

    /// Whether the allocation is granted and alive.
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active { .. })
    }

    fn inactive(&self) -> TurnError {
        TurnError::Inactive {
            server: self.server,
        }
    }

    /// Sends a new request for `ask`.
    fn start(&mut self, now: Instant, ask: Ask, purpose: Purpose) {
        match self.credentials.first_try(&ask, new_tid()) {
            Ok((sent, bytes)) => self.requests.push(InFlight {
                ask,
                purpose,
                sent,
                transaction: Transaction::new(bytes, now),
            }),
            Err(e) => self.finish(now, ask, purpose, Err(e)),
        }
    }

    /// A datagram from the server arrived at `now` (a STUN message no other transaction of
    /// the socket claimed).
    pub(crate) fn handle_datagram(&mut self, now: Instant, data: &[u8]) {
        let index = match stun_tid(data) {
            Some(tid) => self.requests.iter().position(|r| r.sent.tid == tid),
            // Too short or mangled to carry a transaction id: it answers the oldest request,
            // so that one reports a broken server instead of timing out.
            None => (!self.requests.is_empty()).then_some(0),
        };
        // Otherwise a late copy of an answer already taken: nothing to do.
        let Some(index) = index else { return };
        let mut request = self.requests.remove(index);
        request.transaction.handle_response(now, data);
        let verdict = self.credentials.judge(
            &request.ask,
            &mut request.sent,
            data,
            &mut self.stale_nonces,
        );
        match verdict {
            Verdict::Granted(msg) => self.finish(now, request.ask, request.purpose, Ok(msg)),
            Verdict::TryAgain => {
                match self
                    .credentials
                    .retry(&request.ask, &request.sent, new_tid())
                {
                    Ok((sent, bytes)) => self.requests.push(InFlight {
                        sent,
                        transaction: Transaction::new(bytes, now),
                        ..request
                    }),
                    Err(e) => self.finish(now, request.ask, request.purpose, Err(e)),
                }
            }
            Verdict::Failed(e) => self.finish(now, request.ask, request.purpose, Err(e)),
        }
    }

    /// Sending the datagram of transaction `tid` failed: the request fails (as a request whose
    /// send fails fails at once, rather than after retransmissions that cannot go out either).
    pub(crate) fn handle_send_error(&mut self, now: Instant, tid: [u8; 12], error: io::Error) {
        if let Some(index) = self.requests.iter().position(|r| r.sent.tid == tid) {
            let request = self.requests.remove(index);
            let e = TurnError::Send {
                server: self.server,
                source: error,
            };
            self.finish(now, request.ask, request.purpose, Err(e));
        }
    }

    /// The clock moved on to `now`: gives up on requests past their time, and starts the
    /// refreshes and retries that are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.requests.len() {
            self.requests[index].transaction.handle_timeout(now);
            match self.requests[index].transaction.poll_outcome() {
                Some(Outcome::TimedOut(after)) => {
                    let request = self.requests.remove(index);
                    let e = TurnError::Timeout {
                        server: self.server,
                        after,
                    };
                    self.finish(now, request.ask, request.purpose, Err(e));
                }
                _ => index += 1,
            }
        }
        if self.retry_allocate.is_some_and(|at| now >= at) {
            self.retry_allocate = None;
            self.start(now, Ask::Allocate, Purpose::Allocate);
        }
        if !self.is_active() {
            return;
        }
        if self.next_refresh.is_some_and(|at| now >= at) {
            self.next_refresh = None;
            let ask = Ask::Refresh {
                lifetime: DESIRED_LIFETIME,
            };
            self.start(now, ask, Purpose::Refresh { started: now });
        }
        if self.next_bindings.is_some_and(|at| now >= at) {
            self.next_bindings = None;
            self.start_round(now);
        }
    }

    /// Re-binds every routed channel and renews the permissions the owner asked for.
    fn start_round(&mut self, now: Instant) {
        let mut channels: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.routed)
            .map(|(peer, c)| (*peer, c.number))
            .collect();
        channels.sort_unstable_by_key(|(_, number)| *number);
        let peers: Vec<IpAddr> = self.permissions.iter().copied().collect();
        let outstanding = channels.len() + usize::from(!peers.is_empty());
        self.round = Some(Round {
            started: now,
            outstanding,
            error: None,
        });
        if outstanding == 0 {
            self.end_round();
            return;
        }
        for (peer, number) in channels {
            self.start(now, Ask::ChannelBind { peer, number }, Purpose::Rebind);
        }
        if !peers.is_empty() {
            self.start(now, Ask::CreatePermission { peers }, Purpose::Repermit);
        }
    }

    /// One request of the refresh round ended.
    fn round_step(&mut self, result: Result<(), TurnError>) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        round.outstanding = round.outstanding.saturating_sub(1);
        if let Err(e) = result {
            round.error.get_or_insert(e);
        }
        if round.outstanding == 0 {
            self.end_round();
        }
    }

    fn end_round(&mut self) {
        let Some(round) = self.round.take() else {
            return;
        };
        if !self.is_active() {
            return;
        }
        let next = match round.error {
            None => self.timers.permissions,
            Some(e) => {
                let delay = BINDINGS_RETRY.min(self.timers.permissions);
                warn!(server = %self.server, "TURN channel refresh failed, retrying in {delay:?}: {e}");
                delay
            }
        };
        self.next_bindings = Some(round.started + next);
    }

    /// Binds a channel to `peer` (which also permits it), or renews the one it has; the
    /// answer comes as [`Event::Bound`] or [`Event::BindFailed`].
    pub(crate) fn handle_bind(&mut self, now: Instant, peer: SocketAddr, origin: Origin) {
        let fail = |error| Event::BindFailed {
            origin,
            peer,
            error,
        };
        let Phase::Active { relayed, .. } = self.phase else {
            self.events.push_back(fail(self.inactive()));
            return;
        };
        if peer.is_ipv4() != relayed.is_ipv4() {
            self.events
                .push_back(fail(TurnError::FamilyMismatch { peer, relayed }));
            return;
        }
        let known = self
            .channels
            .get(&peer)
            .map(|c| c.number)
            .or_else(|| self.reserved.get(&peer).copied());
        let number = match known {
            Some(number) => number,
            None => {
                let number = self.next_channel;
                if !CHANNEL_NUMBERS.contains(&number) {
                    let server = self.server;
                    self.events
                        .push_back(fail(TurnError::ChannelsExhausted { server }));
                    return;
                }
                self.next_channel += 1;
                self.reserved.insert(peer, number);
                number
            }
        };
        self.start(
            now,
            Ask::ChannelBind { peer, number },
            Purpose::Bind(origin),
        );
    }

    /// Lets datagrams from `peers` through the relay (request `id`); kept renewed. The answer
    /// comes as [`Event::Permitted`].
    pub(crate) fn handle_create_permission(&mut self, now: Instant, id: u64, peers: Vec<IpAddr>) {
        if !self.is_active() {
            let result = Err(self.inactive());
            self.events.push_back(Event::Permitted { id, result });
        } else if peers.is_empty() {
            self.events
                .push_back(Event::Permitted { id, result: Ok(()) });
        } else {
            self.start(now, Ask::CreatePermission { peers }, Purpose::Permit(id));
        }
    }

    /// Stops renewing the channel to `peer` (the mux no longer routes through it). The number
    /// stays reserved for the peer, so binding it again is cheap.
    pub(crate) fn handle_unbind(&mut self, peer: SocketAddr) {
        if let Some(c) = self.channels.get_mut(&peer) {
            c.routed = false;
        }
    }

    /// Deletes the allocation on the server now: every other request is dropped, nothing is
    /// refreshed any more; the answer comes as [`Event::Closed`].
    pub(crate) fn handle_close(&mut self, now: Instant) {
        self.phase = Phase::Inactive;
        self.requests.clear();
        self.reserved.clear();
        self.next_refresh = None;
        self.next_bindings = None;
        self.round = None;
        self.retry_allocate = None;
        let ask = Ask::Refresh {
            lifetime: Duration::ZERO,
        };
        self.start(now, ask, Purpose::Close);
    }

    /// A request ended: acts on its answer.
    fn finish(
        &mut self,
        now: Instant,
        ask: Ask,
        purpose: Purpose,
        result: Result<StunMessage, TurnError>,
    ) {
        match purpose {
            Purpose::Allocate => self.allocated(now, result),
            Purpose::DeleteStale => match result {
                Ok(_) => {
                    // coturn frees a deleted allocation on its next one-second timer tick and
                    // says 437 until then.
                    self.stale_tries = 1;
                    self.retry_allocate = Some(now + STALE_ALLOCATION_POLL);
                }
                Err(e) => self.allocate_failed(e),
            },
            Purpose::Refresh { started } => self.refreshed(started, ask, result),
            Purpose::Bind(origin) => {
                let Ask::ChannelBind { peer, number } = ask else {
                    return;
                };
                self.reserved.remove(&peer);
                match result {
                    Ok(_) => {
                        self.channels.insert(
                            peer,
                            Channel {
                                number,
                                routed: true,
                            },
                        );
                        self.events.push_back(Event::Bound {
                            origin,
                            peer,
                            number,
                        });
                    }
                    Err(error) => self.events.push_back(Event::BindFailed {
                        origin,
                        peer,
                        error,
                    }),
                }
            }
            Purpose::Permit(id) => {
                let result = result.map(|_| ());
                if let (Ok(()), Ask::CreatePermission { peers }) = (&result, &ask) {
                    self.permissions.extend(peers);
                }
                self.events.push_back(Event::Permitted { id, result });
            }
            Purpose::Rebind | Purpose::Repermit => self.round_step(result.map(|_| ())),
            Purpose::Close => self.events.push_back(Event::Closed(result.map(|_| ()))),
        }
    }

    fn allocated(&mut self, now: Instant, result: Result<StunMessage, TurnError>) {
        let granted = result.and_then(|reply| self.read_allocation(&reply));
        match granted {
            Ok((relayed, mapped, lifetime)) => {
                self.phase = Phase::Active {
                    relayed,
                    expires: now + lifetime,
                };
                let first = self
                    .timers
                    .allocation
                    .unwrap_or_else(|| refresh_after(lifetime));
                self.next_refresh = Some(now + first);
                self.next_bindings = Some(now + self.timers.permissions);
                self.events.push_back(Event::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
            }
            // A previous run on this port still holds an allocation (RFC 8656 §7.2). It is
            // ours (same 5-tuple, and the server checks the user): delete it and allocate
            // afresh.
            Err(TurnError::Rejected { code: 437, .. }) if self.stale_tries == 0 => {
                warn!(server = %self.server, "replacing a stale TURN allocation for this socket");
                let ask = Ask::Refresh {
                    lifetime: Duration::ZERO,
                };
                self.start(now, ask, Purpose::DeleteStale);
            }
            Err(TurnError::Rejected { code: 437, .. })
                if self.stale_tries < STALE_ALLOCATION_TRIES =>
            {
                self.stale_tries += 1;
                self.retry_allocate = Some(now + STALE_ALLOCATION_POLL);
            }
            Err(e) => self.allocate_failed(e),
        }
    }

    fn allocate_failed(&mut self, e: TurnError) {
        self.phase = Phase::Inactive;
        self.events.push_back(Event::AllocateFailed(e));
    }

    /// Relayed address, mapped address and lifetime from an Allocate success.
    fn read_allocation(
        &self,
        reply: &StunMessage,
    ) -> Result<(SocketAddr, Option<SocketAddr>, Duration), TurnError> {
        let malformed = |reason: String| TurnError::Malformed {
            server: self.server,
            reason,
        };
        let relayed = reply
            .get::<XorRelayedAddress>()
            .ok_or_else(|| malformed("an allocation without XOR-RELAYED-ADDRESS".into()))?
            .as_xor_relayed_address()
            .map_err(|e| malformed(e.to_string()))?
            .socket_address()
            .to_owned();
        let mapped = reply
            .get::<XorMappedAddress>()
            .and_then(|a| a.as_xor_mapped_address().ok())
            .map(|a| *a.socket_address());
        let lifetime = granted_lifetime(reply).unwrap_or(DESIRED_LIFETIME);
        Ok((relayed, mapped, lifetime))
    }

    fn refreshed(&mut self, started: Instant, ask: Ask, result: Result<StunMessage, TurnError>) {
        let Phase::Active { relayed, expires } = self.phase else {
            return;
        };
        let asked = match ask {
            Ask::Refresh { lifetime } => lifetime,
            _ => DESIRED_LIFETIME,
        };
        match result {
            Ok(reply) => {
                let granted = granted_lifetime(&reply).unwrap_or(asked);
                self.backoff.reset();
                self.refreshes += 1;
                self.phase = Phase::Active {
                    relayed,
                    expires: started + granted,
                };
                let next = self
                    .timers
                    .allocation
                    .unwrap_or_else(|| refresh_after(granted));
                self.next_refresh = Some(started + next);
            }
            Err(e) if e.is_fatal() || started >= expires => {
                self.phase = Phase::Inactive;
                self.next_refresh = None;
                self.next_bindings = None;
                self.round = None;
                self.events.push_back(Event::Lost(e));
            }
            Err(e) => {
                let delay = self.backoff.next_delay(&mut self.rng);
                warn!(server = %self.server, "TURN refresh failed, retrying in {delay:?}: {e}");
                self.next_refresh = Some(started + delay);
            }
        }
    }

    /// The next datagram for the server, if one is due at `now`.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.requests.iter_mut().find_map(|r| {
            let data = r.transaction.poll_transmit(now)?.to_vec();
            Some(Transmit {
                tid: r.sent.tid,
                data,
            })
        })
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, if anything waits.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let requests = self
            .requests
            .iter()
            .filter_map(|r| r.transaction.poll_timeout());
        let timers = [self.next_refresh, self.next_bindings, self.retry_allocate];
        requests.chain(timers.into_iter().flatten()).min()
    }

    /// What happened since the last call, oldest first.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// The transaction id of a STUN message, if `data` has a STUN header with the magic cookie.
fn stun_tid(data: &[u8]) -> Option<[u8; 12]> {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    if data.len() < 20 || data[4..8] != COOKIE {
        return None;
    }
    data[8..20].try_into().ok()
}

#[cfg(test)]
mod tests;
