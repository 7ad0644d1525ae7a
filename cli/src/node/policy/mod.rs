//! The daemon's link decisions, without I/O or a clock: which connection to a peer is kept when
//! both sides dialled, when to dial again (backoff, and what resets it), when a relayed link
//! looks for a direct path, and when to send everything through the relay.
//!
//! The tokio code in `links` and `traversal` only drives these machines: it tells them what
//! happened (`handle_*`, with the time it happened) and does what they say (`poll*`). Tests drive
//! them with plain `Instant` arithmetic instead of sleeping.

mod relay_all;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use fybrk_net::backoff::Backoff;
use rand::Rng;

pub use relay_all::{RelayAllAction, RelayAllPolicy};

/// A connection that lasted this long counts as a success: the next failure starts the
/// backoff from its base again. Long enough that a peer whose links drop right after the
/// handshake (a broken path, a crashing daemon) keeps being backed off.
pub const STABLE_LINK: Duration = Duration::from_secs(10);

/// Two connections to one peer set up this close together were dialled at the same time: a
/// handshake takes a round trip or two, so 3 s covers slow paths, while a peer that restarted
/// takes longer than that to come back.
pub const SIMULTANEOUS: Duration = Duration::from_secs(3);

/// A relayed link looks for a direct path this long after it came up, then at growing intervals
/// (x1.5) up to [`UPGRADE_MAX`]: the NAT or network that forced the relay may have changed.
pub const UPGRADE_FIRST: Duration = Duration::from_secs(15);
/// The longest wait between two looks for a direct path (each costs an introduction through
/// the rendezvous server and a round of probes).
pub const UPGRADE_MAX: Duration = Duration::from_secs(300);

/// What the policy needs to know of a peer's current link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Tells this link from a later one to the same peer.
    pub generation: u64,
    /// When it was set up.
    pub since: Instant,
    /// Dialled by the device with the smaller id: the one both sides keep.
    pub preferred: bool,
    /// Through a TURN relay (ours or the peer's).
    pub relayed: bool,
}

/// Whether a connection between `me` and `peer` is the one both sides keep when both dialled:
/// the one dialled by the device with the smaller id. `initiator`: we dialled it. Both sides
/// compute the same answer without talking.
pub fn is_preferred<T: Ord>(me: &T, peer: &T, initiator: bool) -> bool {
    let dialer = if initiator { me } else { peer };
    dialer == me.min(peer)
}

/// What to do with a new connection to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// No link to the peer yet: the new one is its link.
    First,
    /// Keep the existing link, close the new connection.
    Duplicate,
    /// Close the existing link; the new connection replaces it.
    Replace,
}

/// Settles a new connection (`preferred`: see [`is_preferred`]) against the peer's `existing`
/// link at `now`.
///
/// Neither side dials while it has a link. So a new connection next to a young one is a
/// simultaneous dial, settled the same way on both sides (the preferred one stays); next to an
/// older one it means the peer lost the old link (it restarted, or its network changed) before
/// we noticed: the new one replaces it.
pub fn admit(existing: Option<&LinkInfo>, preferred: bool, now: Instant) -> Admit {
    let Some(existing) = existing else {
        return Admit::First;
    };
    let simultaneous = now.saturating_duration_since(existing.since) < SIMULTANEOUS;
    if simultaneous && (existing.preferred || !preferred) {
        Admit::Duplicate
    } else {
        Admit::Replace
    }
}

/// What a peer's dialler does next (from [`LinkPolicy::poll`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No link: dial the peer (its addresses, then an introduction); report a failure with
    /// [`LinkPolicy::handle_dial_failed`].
    Dial,
    /// A dial failed: wait until `until` ([`LinkPolicy::handle_timeout`]) or until woken (a link
    /// ended, the peer was unpaired: [`LinkPolicy::handle_wake`]), then poll again.
    Backoff {
        /// When to dial again.
        until: Instant,
    },
    /// A link is up: wait until woken ([`LinkPolicy::handle_wake`]) or, for a relayed link,
    /// until `until` ([`LinkPolicy::handle_timeout`]).
    WaitOnLink {
        /// When to look for a direct path, for a relayed link.
        until: Option<Instant>,
    },
    /// Look for a direct path to the peer, whose link is relayed; a connection over it
    /// replaces the relayed one. Then poll again.
    MoveOffRelay,
}

/// One peer's dialler: keeps one link to the peer up while it is paired.
///
/// The dialler polls with the peer's current link (if any) and waits as told. Dial failures back
/// off exponentially with full jitter ([`Backoff::RECONNECT`]); a link ending cuts the current
/// wait short but does not reset the backoff. Only a link that lasted [`STABLE_LINK`] resets
/// it, when the dialler learns that it ended (or when a look for a direct path finds it
/// still up). A network change does not touch it: the daemon redials connected peers itself
/// (`follow_network`), and the rendezvous server's introductions are tried on every dial.
///
/// A relayed link (when there is a rendezvous server to introduce a direct path and we are not
/// relaying everything) looks for a direct path [`UPGRADE_FIRST`] into each wait, then at
/// intervals growing x1.5 per wait up to [`UPGRADE_MAX`]; the schedule starts over for every new
/// link.
#[derive(Clone, Debug)]
pub struct LinkPolicy {
    backoff: Backoff,
    /// After a failed dial: when to dial again.
    retry_at: Option<Instant>,
    /// The link the current wait is on.
    watched: Option<LinkInfo>,
    /// The current wait on a relayed link ends then, with a look for a direct path.
    upgrade_at: Option<Instant>,
    /// That deadline passed: look for a direct path next.
    upgrade_due: bool,
    /// The relayed link's generation and how long its next wait for a direct path lasts.
    upgrade: Option<(u64, Duration)>,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        LinkPolicy::new()
    }
}

impl LinkPolicy {
    /// A dialler that has not dialled yet.
    pub fn new() -> Self {
        LinkPolicy {
            backoff: Backoff::RECONNECT,
            retry_at: None,
            watched: None,
            upgrade_at: None,
            upgrade_due: false,
            upgrade: None,
        }
    }

    /// What to do next, at `now`, given the peer's current `link`. `can_upgrade`: a direct path
    /// can be looked for (a rendezvous server is configured and we are not relaying everything).
    pub fn poll(&mut self, now: Instant, link: Option<LinkInfo>, can_upgrade: bool) -> Step {
        if self.upgrade_due {
            self.upgrade_due = false;
            return Step::MoveOffRelay;
        }
        if let Some(until) = self.retry_at {
            return Step::Backoff { until };
        }
        let Some(link) = link else {
            self.watched = None;
            return Step::Dial;
        };
        if let (Some(until), Some(watched)) = (self.upgrade_at, self.watched) {
            // Polled again before the wait ended (a timeout reported early): the same wait.
            if watched.generation == link.generation {
                return Step::WaitOnLink { until: Some(until) };
            }
        }
        self.watched = Some(link);
        if link.relayed && can_upgrade {
            let delay = match self.upgrade {
                Some((generation, d)) if generation == link.generation => d,
                _ => UPGRADE_FIRST,
            };
            // Grows with every wait, also one cut short by a wake-up.
            self.upgrade = Some((link.generation, delay.mul_f32(1.5).min(UPGRADE_MAX)));
            let until = now + delay;
            self.upgrade_at = Some(until);
            Step::WaitOnLink { until: Some(until) }
        } else {
            self.upgrade_at = None;
            Step::WaitOnLink { until: None }
        }
    }

    /// The dial of [`Step::Dial`] failed at `now`: the next poll says how long to back off.
    pub fn handle_dial_failed(&mut self, now: Instant, rng: &mut impl Rng) {
        self.retry_at = Some(now + self.backoff.next_delay(rng));
    }

    /// The dialler was woken at `now` (the peer's link ended, or the link it waited on was
    /// already gone): a backoff is cut short; the link waited on counts as a success if it
    /// lasted [`STABLE_LINK`].
    pub fn handle_wake(&mut self, now: Instant) {
        if self.retry_at.take().is_some() {
            return;
        }
        self.upgrade_at = None;
        self.end_wait(now);
    }

    /// The deadline of the current wait passed (`now` is at or after it).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.retry_at {
            if now >= at {
                self.retry_at = None;
            }
            return;
        }
        if self.upgrade_at.is_some_and(|at| now >= at) {
            self.upgrade_at = None;
            self.upgrade_due = true;
            self.end_wait(now);
        }
    }

    fn end_wait(&mut self, now: Instant) {
        if let Some(link) = self.watched.take() {
            if now.saturating_duration_since(link.since) >= STABLE_LINK {
                self.backoff.reset();
            }
        }
    }
}
