//! When to publish our record, when to look a peer up, and whom to dial: [`DhtPolicy`], a
//! state machine without I/O or clock.
//!
//! The driver tells it what happened (`handle_*`, with `now`; the wall clock where a record's
//! timestamp is involved) and asks what to do (`poll_*`). Tests drive it with made-up instants.
//!
//! # Punching without a coordinator
//!
//! With a rendezvous server, both devices are told to punch at the same instant. Here nobody
//! tells them: each side that cannot reach a paired peer looks it up, then dials the addresses
//! found every [`Config::redial_every`] for [`Config::punch_for`] after each lookup that found
//! them (and looks the peer up again now and then, with backoff). A dial towards the peer's
//! public address opens our NAT for the peer's address (a conntrack entry that lives 30 s after
//! the last datagram, longer than `redial_every`), so the first dial of the other side that
//! comes while it is open gets through, whichever side started first: with both sides
//! redialling every 10 s their windows always overlap. That holds for endpoint-independent
//! mappings (home routers, plain masquerade); a symmetric NAT's public port differs per
//! destination and no record can name it (the relay is for those).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::record::AddrRecord;
use crate::identity::DeviceId;

/// The timing of DHT discovery. [`Config::default`] is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The record is published again this long after the last success: BEP 44 nodes keep an
    /// item about two hours, and the closest nodes change as nodes come and go.
    pub republish: Duration,
    /// At most one publish per this long, however often our addresses change (a flapping
    /// interface must not turn into a stream of DHT puts).
    pub min_publish_gap: Duration,
    /// A failed publish is retried after this long, doubling per failure...
    pub publish_retry_min: Duration,
    /// ...up to this.
    pub publish_retry_max: Duration,
    /// A peer is looked up once it has been unreachable this long: the remembered addresses
    /// (and LAN discovery) get the first chance, they cost nothing.
    pub lookup_after: Duration,
    /// Later lookups of an unreachable peer wait this long, doubling per lookup...
    pub lookup_min: Duration,
    /// ...up to this: a peer that is off for days costs one lookup per 10 minutes.
    pub lookup_max: Duration,
    /// While a found record is fresh and the peer still unreachable, its addresses are dialled
    /// again this often (see "Punching without a coordinator": shorter than a UDP conntrack
    /// entry's 30 s).
    pub redial_every: Duration,
    /// How long after a lookup found a record its addresses are redialled.
    pub punch_for: Duration,
    /// Records older than this (publisher's clock against ours) are ignored: a device
    /// republishes hourly, so an older record is of a device that is gone or lost its network.
    pub max_age: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            republish: Duration::from_secs(3600),
            min_publish_gap: Duration::from_secs(5),
            publish_retry_min: Duration::from_secs(5),
            publish_retry_max: Duration::from_secs(300),
            lookup_after: Duration::from_secs(10),
            lookup_min: Duration::from_secs(20),
            lookup_max: Duration::from_secs(600),
            redial_every: Duration::from_secs(10),
            punch_for: Duration::from_secs(180),
            max_age: Duration::from_secs(3 * 3600),
        }
    }
}

/// Our current addresses, as the driver reads them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Local {
    /// The QUIC listen port.
    pub port: u16,
    /// Interface addresses.
    pub lan: Vec<IpAddr>,
    /// The QUIC socket's public address (STUN).
    pub reflexive: Option<SocketAddr>,
    /// The TURN relayed address.
    pub relay: Option<SocketAddr>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Publish this record; report with [`DhtPolicy::handle_published`].
    Publish(AddrRecord),
    /// Look `peer` up under `public_key`; report with [`DhtPolicy::handle_lookup`].
    Lookup {
        /// The device.
        peer: DeviceId,
        /// Its Ed25519 public key (the item's key).
        public_key: [u8; 32],
    },
    /// Dial `peer` at these addresses (best first).
    Dial {
        /// The device.
        peer: DeviceId,
        /// Where.
        addrs: Vec<SocketAddr>,
    },
}

#[derive(Debug, Clone)]
struct Peer {
    public_key: [u8; 32],
    connected: bool,
    next_lookup: Option<Instant>,
    looking: bool,
    lookups: u32,
    /// The newest record found, when it was found, and when to dial it next.
    found: Option<(AddrRecord, Instant)>,
    next_dial: Option<Instant>,
}

/// DHT discovery's decisions (see the module doc).
#[derive(Debug)]
pub struct DhtPolicy {
    config: Config,
    local: Option<Local>,
    /// What was last published successfully, and when.
    published: Option<(Local, Instant)>,
    publish_due: Option<Instant>,
    publishing: bool,
    /// The addresses of the publish in flight.
    in_flight: Option<Local>,
    last_attempt: Option<Instant>,
    publish_failures: u32,
    last_timestamp: u64,
    peers: HashMap<DeviceId, Peer>,
}

fn doubled(base: Duration, times: u32, max: Duration) -> Duration {
    base.saturating_mul(1u32 << times.min(16)).min(max)
}

impl DhtPolicy {
    /// A policy with nothing known yet.
    pub fn new(config: Config) -> Self {
        DhtPolicy {
            config,
            local: None,
            published: None,
            publish_due: None,
            publishing: false,
            in_flight: None,
            last_attempt: None,
            publish_failures: 0,
            last_timestamp: 0,
            peers: HashMap::new(),
        }
    }

    /// Our addresses at `now`. A change is published (no sooner than `min_publish_gap` after
    /// the last attempt); returns whether they changed.
    pub fn handle_local(&mut self, now: Instant, mut local: Local) -> bool {
        local.lan.sort();
        local.lan.dedup();
        local.lan.truncate(super::record::MAX_ADDRS);
        if self.local.as_ref() == Some(&local) {
            return false;
        }
        self.local = Some(local);
        let unpublished = self.published.as_ref().map(|(l, _)| l) != self.local.as_ref();
        if unpublished && self.publish_failures == 0 {
            self.publish_due = Some(now);
        }
        true
    }

    /// The publish started by [`Action::Publish`] ended at `now`.
    pub fn handle_published(&mut self, now: Instant, ok: bool) {
        self.publishing = false;
        let sent = self.in_flight.take();
        if ok {
            self.publish_failures = 0;
            self.published = Some((sent.unwrap_or_default(), now));
            // Addresses that changed while the publish ran are due now (after the gap).
            let stale = self.published.as_ref().map(|(l, _)| l) != self.local.as_ref();
            self.publish_due = Some(if stale {
                now
            } else {
                now + self.config.republish
            });
        } else {
            self.publish_failures = self.publish_failures.saturating_add(1);
            let wait = doubled(
                self.config.publish_retry_min,
                self.publish_failures - 1,
                self.config.publish_retry_max,
            );
            self.publish_due = Some(now + wait);
        }
    }

    /// When our record was last published, if ever.
    pub fn last_published(&self) -> Option<Instant> {
        self.published.as_ref().map(|(_, t)| *t)
    }

    /// The paired devices whose keys we know and whether a link to each is up. Devices not
    /// listed are forgotten (unpaired).
    pub fn handle_peers(
        &mut self,
        now: Instant,
        peers: impl IntoIterator<Item = (DeviceId, [u8; 32], bool)>,
    ) {
        let mut seen = Vec::new();
        for (id, public_key, connected) in peers {
            seen.push(id);
            let lookup_after = self.config.lookup_after;
            let p = self.peers.entry(id).or_insert_with(|| Peer {
                public_key,
                connected,
                next_lookup: (!connected).then_some(now + lookup_after),
                looking: false,
                lookups: 0,
                found: None,
                next_dial: None,
            });
            p.public_key = public_key;
            if connected && !p.connected {
                // Reached: forget the search, start afresh when it is lost again.
                p.next_lookup = None;
                p.lookups = 0;
                p.found = None;
                p.next_dial = None;
            } else if !connected && p.connected {
                p.next_lookup = Some(now + lookup_after);
            }
            p.connected = connected;
        }
        self.peers.retain(|id, _| seen.contains(id));
    }

    /// The lookup of `peer` started by [`Action::Lookup`] ended at `now` (`wall_ms`: our wall
    /// clock) with the record found, if any (already decoded and its signature checked).
    pub fn handle_lookup(
        &mut self,
        now: Instant,
        wall_ms: u64,
        peer: &DeviceId,
        found: Option<AddrRecord>,
    ) {
        let config = self.config;
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        p.looking = false;
        if p.connected {
            return;
        }
        p.lookups = p.lookups.saturating_add(1);
        p.next_lookup = Some(now + doubled(config.lookup_min, p.lookups - 1, config.lookup_max));
        let max_age = u64::try_from(config.max_age.as_millis()).unwrap_or(u64::MAX);
        let Some(record) = found else { return };
        if wall_ms.saturating_sub(record.timestamp_ms) > max_age {
            return;
        }
        if p.found
            .as_ref()
            .is_some_and(|(r, _)| r.timestamp_ms > record.timestamp_ms)
        {
            return;
        }
        if record.dial_addrs().is_empty() {
            return;
        }
        p.found = Some((record, now));
        p.next_dial = Some(now);
    }

    /// The next thing to do at `now` (`wall_ms`: the wall clock, for the record's timestamp),
    /// if any. Call until `None`.
    pub fn poll_action(&mut self, now: Instant, wall_ms: u64) -> Option<Action> {
        if let Some(a) = self.poll_publish(now, wall_ms) {
            return Some(a);
        }
        let config = self.config;
        for (id, p) in &mut self.peers {
            if p.connected {
                continue;
            }
            if !p.looking && p.next_lookup.is_some_and(|t| now >= t) {
                p.looking = true;
                p.next_lookup = None;
                return Some(Action::Lookup {
                    peer: *id,
                    public_key: p.public_key,
                });
            }
            let Some((record, found_at)) = &p.found else {
                continue;
            };
            if now.saturating_duration_since(*found_at) >= config.punch_for {
                continue;
            }
            if p.next_dial.is_some_and(|t| now >= t) {
                p.next_dial = Some(now + config.redial_every);
                return Some(Action::Dial {
                    peer: *id,
                    addrs: record.dial_addrs(),
                });
            }
        }
        None
    }

    fn poll_publish(&mut self, now: Instant, wall_ms: u64) -> Option<Action> {
        if self.publishing {
            return None;
        }
        let local = self.local.as_ref()?;
        let due = self.publish_due?;
        let earliest = self
            .last_attempt
            .map_or(due, |t| due.max(t + self.config.min_publish_gap));
        if now < earliest {
            return None;
        }
        self.publishing = true;
        self.in_flight = Some(local.clone());
        self.publish_due = None;
        self.last_attempt = Some(now);
        self.last_timestamp = wall_ms.max(self.last_timestamp + 1);
        Some(Action::Publish(AddrRecord {
            timestamp_ms: self.last_timestamp,
            port: local.port,
            lan: local.lan.clone(),
            reflexive: local.reflexive,
            relay: local.relay,
        }))
    }

    /// When to poll next, if anything is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let publish = match (self.publishing, self.local.is_some(), self.publish_due) {
            (false, true, Some(due)) => Some(
                self.last_attempt
                    .map_or(due, |t| due.max(t + self.config.min_publish_gap)),
            ),
            _ => None,
        };
        let peers = self.peers.values().filter(|p| !p.connected).flat_map(|p| {
            let lookup = p.next_lookup.filter(|_| !p.looking);
            let dial = p
                .found
                .as_ref()
                .filter(|(_, at)| p.next_dial.is_some_and(|d| d < *at + self.config.punch_for))
                .and(p.next_dial);
            lookup.into_iter().chain(dial)
        });
        publish.into_iter().chain(peers).min()
    }
}
