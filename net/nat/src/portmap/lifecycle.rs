//! The port mapping's lifecycle as a state machine without I/O or clock: which protocol to ask
//! and when (first answer wins, in [`Protocol::ALL`]'s order), retransmission, renewal at half
//! the granted lifetime, giving up and trying again later, and deletion at stop.
//!
//! Inputs: [`PortMapper::handle_timeout`], [`PortMapper::handle_answer`],
//! [`PortMapper::stop`]; outputs: [`PortMapper::poll_action`] (what to send),
//! [`PortMapper::poll_event`] (what changed) and [`PortMapper::poll_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Answer, Mapping, Protocol};

/// When the requests of one try go out, counted from its start, for PCP and NAT-PMP: RFC 6886's
/// 250 ms doubling, cut after three sends. The gateway is one LAN hop away and answers within
/// milliseconds; one that has not answered three requests in 1.75 s (see [`DATAGRAM_WINDOW`])
/// most likely does not speak the protocol, and start-up should move on to the next one.
pub const DATAGRAM_SENDS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(250),
    Duration::from_millis(750),
];

/// How long one PCP or NAT-PMP try waits for an answer in all.
pub const DATAGRAM_WINDOW: Duration = Duration::from_millis(1750);

/// How long one UPnP try may take: the SSDP search waits up to 1.5 s for answers (`MX: 1`
/// plus a round trip), then two or three HTTP exchanges on the LAN.
pub const UPNP_WINDOW: Duration = Duration::from_secs(5);

/// After every protocol failed, the next round starts this much later, doubling up to
/// [`RETRY_MAX`]: a gateway without port mapping will not grow it soon, but a laptop may move
/// to a network whose gateway has it.
pub const RETRY_FIRST: Duration = Duration::from_secs(120);

/// The longest wait between two rounds.
pub const RETRY_MAX: Duration = Duration::from_secs(30 * 60);

/// A renewal that goes unanswered is tried again; below this much remaining lifetime the
/// mapping counts as lost and a new round starts from the first protocol.
pub const RENEW_MARGIN: Duration = Duration::from_secs(10);

/// What the driver should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `protocol`'s mapping request (a new mapping or a renewal). For UPnP the whole
    /// exchange (search, description, SOAP) is one request.
    Request {
        /// The protocol to ask.
        protocol: Protocol,
    },
    /// Delete the mapping `protocol` granted (best effort: nobody waits for the answer).
    Delete {
        /// The mapping.
        mapping: Mapping,
    },
}

/// What changed, for the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A mapping was granted, or its public address changed.
    Mapped(Mapping),
    /// The mapping is gone (refused or unanswered renewal): a new round starts.
    Lost,
    /// No protocol granted a mapping this round; another round starts later.
    Unavailable,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Trying `protocols[index]` since `started`; `sent` requests went out.
    Trying {
        index: usize,
        started: Instant,
        sent: usize,
    },
    /// Holding a mapping; `renewal` is the start of an unanswered renewal.
    Mapped {
        mapping: Mapping,
        expires: Instant,
        renew_at: Instant,
        renewal: Option<(Instant, usize)>,
    },
    /// Every protocol failed: the next round starts at `until`.
    Waiting { until: Instant },
    /// Stopped (the deletion, if any, is queued).
    Stopped,
}

/// One listen port's mapping on one gateway.
#[derive(Debug)]
pub struct PortMapper {
    protocols: Vec<Protocol>,
    state: State,
    retry: Duration,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl PortMapper {
    /// Starts a round at `now` with `protocols` (normally [`Protocol::ALL`]) in order.
    pub fn new(protocols: &[Protocol], now: Instant) -> PortMapper {
        let mut m = PortMapper {
            protocols: protocols.to_vec(),
            state: State::Stopped,
            retry: RETRY_FIRST,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        m.start_round(now);
        m.handle_timeout(now);
        m
    }

    /// The mapping held, if any.
    pub fn mapping(&self) -> Option<Mapping> {
        match self.state {
            State::Mapped { mapping, .. } => Some(mapping),
            _ => None,
        }
    }

    /// The protocol asked at the moment (while trying, or the one that granted the mapping).
    pub fn current(&self) -> Option<Protocol> {
        match self.state {
            State::Trying { index, .. } => self.protocols.get(index).copied(),
            State::Mapped { mapping, .. } => Some(mapping.protocol),
            _ => None,
        }
    }

    /// Whether a round is over without success and the next is not due yet, or it stopped.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Waiting { .. } | State::Stopped)
    }

    /// The next thing to send.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Trying {
                index,
                started,
                sent,
            } => {
                let p = self.protocols.get(index).copied()?;
                Some(match sends(p).get(sent) {
                    Some(offset) => started + *offset,
                    None => started + window(p),
                })
            }
            State::Mapped {
                mapping,
                renew_at,
                renewal,
                expires,
            } => Some(match renewal {
                None => renew_at,
                Some((started, sent)) => match sends(mapping.protocol).get(sent) {
                    Some(offset) => started + *offset,
                    None => (started + window(mapping.protocol)).min(expires),
                },
            }),
            State::Waiting { until } => Some(until),
            State::Stopped => None,
        }
    }

    /// Sends what is due, moves on from protocols that did not answer, renews.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Trying {
                index,
                started,
                sent,
            } => {
                let Some(&p) = self.protocols.get(index) else {
                    self.round_failed(now);
                    return;
                };
                if let Some(offset) = sends(p).get(sent) {
                    if now >= started + *offset {
                        self.actions.push_back(Action::Request { protocol: p });
                        self.state = State::Trying {
                            index,
                            started,
                            sent: sent + 1,
                        };
                    }
                } else if now >= started + window(p) {
                    self.next_protocol(index, now);
                }
            }
            State::Mapped {
                mapping,
                expires,
                renew_at,
                renewal,
            } => {
                let p = mapping.protocol;
                match renewal {
                    None if now >= renew_at => {
                        self.actions.push_back(Action::Request { protocol: p });
                        self.state = State::Mapped {
                            mapping,
                            expires,
                            renew_at,
                            renewal: Some((now, 1)),
                        };
                    }
                    None => {}
                    Some((started, sent)) => {
                        if let Some(offset) = sends(p).get(sent) {
                            if now >= started + *offset {
                                self.actions.push_back(Action::Request { protocol: p });
                                self.state = State::Mapped {
                                    mapping,
                                    expires,
                                    renew_at,
                                    renewal: Some((started, sent + 1)),
                                };
                            }
                        } else if now >= started + window(p) || now >= expires {
                            let left = expires.saturating_duration_since(now);
                            if left <= RENEW_MARGIN {
                                self.lost(now);
                            } else {
                                // Unanswered: try again halfway to the end.
                                self.state = State::Mapped {
                                    mapping,
                                    expires,
                                    renew_at: now + left / 2,
                                    renewal: None,
                                };
                            }
                        }
                    }
                }
            }
            State::Waiting { until } if now >= until => {
                self.start_round(now);
                self.handle_timeout(now);
            }
            State::Waiting { .. } | State::Stopped => {}
        }
    }

    /// The gateway's answer to a `protocol` request. Answers of a protocol not being asked
    /// (late ones, strays) are ignored.
    pub fn handle_answer(&mut self, protocol: Protocol, answer: Answer, now: Instant) {
        if self.current() != Some(protocol) {
            return;
        }
        match (self.state, answer) {
            (
                State::Trying { .. } | State::Mapped { .. },
                Answer::Granted { external, lifetime },
            ) if !lifetime.is_zero() => {
                let mapping = Mapping {
                    protocol,
                    external,
                    lifetime,
                };
                let changed = self.mapping().map(|m| m.external) != Some(external);
                self.state = State::Mapped {
                    mapping,
                    expires: now + lifetime,
                    renew_at: now + lifetime / 2,
                    renewal: None,
                };
                self.retry = RETRY_FIRST;
                if changed {
                    self.events.push_back(Event::Mapped(mapping));
                }
            }
            (State::Trying { index, .. }, _) => self.next_protocol(index, now),
            (State::Mapped { .. }, _) => self.lost(now),
            _ => {}
        }
    }

    /// Stops: a mapping held is to be deleted (queued as [`Action::Delete`]).
    pub fn stop(&mut self) {
        if let State::Mapped { mapping, .. } = self.state {
            self.actions.push_back(Action::Delete { mapping });
        }
        self.state = State::Stopped;
    }

    fn start_round(&mut self, now: Instant) {
        self.state = State::Trying {
            index: 0,
            started: now,
            sent: 0,
        };
    }

    fn next_protocol(&mut self, index: usize, now: Instant) {
        if index + 1 >= self.protocols.len() {
            self.round_failed(now);
            return;
        }
        self.state = State::Trying {
            index: index + 1,
            started: now,
            sent: 0,
        };
        self.handle_timeout(now);
    }

    fn round_failed(&mut self, now: Instant) {
        self.state = State::Waiting {
            until: now + self.retry,
        };
        self.retry = (self.retry * 2).min(RETRY_MAX);
        self.events.push_back(Event::Unavailable);
    }

    fn lost(&mut self, now: Instant) {
        self.events.push_back(Event::Lost);
        self.start_round(now);
        self.handle_timeout(now);
    }
}

fn sends(p: Protocol) -> &'static [Duration] {
    match p {
        Protocol::Pcp | Protocol::NatPmp => &DATAGRAM_SENDS,
        Protocol::Upnp => &DATAGRAM_SENDS[..1],
    }
}

fn window(p: Protocol) -> Duration {
    match p {
        Protocol::Pcp | Protocol::NatPmp => DATAGRAM_WINDOW,
        Protocol::Upnp => UPNP_WINDOW,
    }
}
