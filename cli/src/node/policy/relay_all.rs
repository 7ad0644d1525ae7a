//! Relay-everything mode: some networks (a locked-down office, a hotel) let UDP through to the
//! TURN server only. A device there cannot reach the rendezvous server, or any peer, except
//! through its relay, so it sends everything through the relay until UDP gets through again.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// With a TURN relay, a device whose rendezvous server has not answered this long after start
/// assumes a network that lets UDP through to the TURN server only, and sends everything
/// through the relay. A registration takes one round trip, so 3 s is plenty on a network that
/// lets it through.
pub const RELAY_ALL_AFTER: Duration = Duration::from_secs(3);

/// In relay-everything mode, how often the daemon tries the rendezvous server directly to see
/// whether UDP gets through again (the laptop left the locked-down network): often enough that
/// the direct paths come back within a minute, rarely enough to cost nothing.
pub const RELAY_ALL_RECHECK: Duration = Duration::from_secs(30);

/// How long one direct probe waits for the rendezvous server's answer (a round trip, with room
/// for a slow path).
pub const RELAY_PROBE_WAIT: Duration = Duration::from_secs(3);

/// What the driver of a [`RelayAllPolicy`] does, then reports with
/// [`RelayAllPolicy::handle_action_done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayAllAction {
    /// Send everything through the TURN server: bind a channel to the rendezvous server through
    /// it (a datagram before the channel would be dropped for want of a permission), then
    /// register through it at once.
    Enter,
    /// Register with the rendezvous server directly, not through the relay (a probe).
    ProbeDirect,
    /// The probe got no direct answer: register through the relay again.
    EndProbe,
    /// The rendezvous server answered directly: stop relaying everything (the relay is used
    /// only where no direct path answers) and reconnect the peers over the new paths.
    Leave,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Started; relay-everything is decided at `decide_at`.
    Starting {
        decide_at: Instant,
        registered: bool,
    },
    /// Relaying everything; the next direct probe is at `probe_at` (set once the last action
    /// is done).
    Relaying { probe_at: Option<Instant> },
    /// A direct probe is out; it fails at `until` (set once the registration is sent).
    Probing { until: Option<Instant> },
    /// UDP gets through (from the start, or again): nothing more to do.
    Direct,
}

/// Decides whether the daemon sends everything through its TURN relay, and when it stops.
///
/// Entered when the rendezvous server has not answered [`RELAY_ALL_AFTER`] after start (while
/// the TURN server did: the allocation succeeded). Then every [`RELAY_ALL_RECHECK`] the daemon
/// registers with the rendezvous server directly; if within [`RELAY_PROBE_WAIT`] the server
/// sees it at an address that is not the relay's, UDP gets through again and the mode ends for
/// good. Timers count from when the driver finished the action before them.
#[derive(Clone, Debug)]
pub struct RelayAllPolicy {
    state: State,
    /// The IP of our relayed address: a registration seen from it came through the relay.
    relayed: IpAddr,
    /// Decided, not yet polled.
    pending: Option<RelayAllAction>,
}

impl RelayAllPolicy {
    /// A daemon started at `now` with a TURN allocation whose relayed address is `relayed`.
    pub fn new(now: Instant, relayed: IpAddr) -> Self {
        RelayAllPolicy {
            state: State::Starting {
                decide_at: now + RELAY_ALL_AFTER,
                registered: false,
            },
            relayed,
            pending: None,
        }
    }

    /// The rendezvous server confirmed a registration and sees us at `observed`.
    pub fn handle_registered(&mut self, _now: Instant, observed: SocketAddr) {
        match &mut self.state {
            State::Starting { registered, .. } => *registered = true,
            State::Probing { .. } if observed.ip() != self.relayed => {
                self.state = State::Direct;
                self.pending = Some(RelayAllAction::Leave);
            }
            // Through the relay (the answer to a registration sent that way), or not probing:
            // says nothing about whether UDP gets through.
            _ => {}
        }
    }

    /// The deadline of [`poll_timeout`](Self::poll_timeout) passed (`now` is at or after it).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Starting {
                decide_at,
                registered,
            } if now >= decide_at => {
                if registered {
                    self.state = State::Direct;
                } else {
                    self.state = State::Relaying { probe_at: None };
                    self.pending = Some(RelayAllAction::Enter);
                }
            }
            State::Relaying { probe_at: Some(at) } if now >= at => {
                self.state = State::Probing { until: None };
                self.pending = Some(RelayAllAction::ProbeDirect);
            }
            State::Probing { until: Some(at) } if now >= at => {
                self.state = State::Relaying { probe_at: None };
                self.pending = Some(RelayAllAction::EndProbe);
            }
            _ => {}
        }
    }

    /// The driver finished the last polled action at `now`: the timer that follows it starts.
    pub fn handle_action_done(&mut self, now: Instant) {
        match &mut self.state {
            State::Relaying { probe_at } if probe_at.is_none() => {
                *probe_at = Some(now + RELAY_ALL_RECHECK);
            }
            State::Probing { until } if until.is_none() => *until = Some(now + RELAY_PROBE_WAIT),
            _ => {}
        }
    }

    /// The next thing the driver must do, if any.
    pub fn poll_action(&mut self) -> Option<RelayAllAction> {
        self.pending.take()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due; `None` while an action is
    /// pending or running, and once the policy is finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending.is_some() {
            return None;
        }
        match self.state {
            State::Starting { decide_at, .. } => Some(decide_at),
            State::Relaying { probe_at } => probe_at,
            State::Probing { until } => until,
            State::Direct => None,
        }
    }

    /// Whether everything goes through the relay now (a direct probe included). The mux is
    /// what the daemon asks; tests ask the policy.
    #[cfg(test)]
    pub fn is_relaying(&self) -> bool {
        matches!(self.state, State::Relaying { .. } | State::Probing { .. })
    }

    /// Nothing more will happen: UDP got through (from the start, or again).
    pub fn is_finished(&self) -> bool {
        self.state == State::Direct && self.pending.is_none()
    }
}
