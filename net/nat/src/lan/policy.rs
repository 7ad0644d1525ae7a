//! When to announce, which announcements to believe, and whom to dial: [`LanDiscovery`], a
//! state machine without I/O or clock.
//!
//! The driver tells it what happened (`handle_*`, with `now` and the wall clock) and asks what to
//! do (`poll_*`). Tests drive it with made-up instants.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use super::wire::{self, DecodeError};
use crate::identity::DeviceId;

/// The timing and limits of LAN discovery. [`Config::default`] is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Announcements repeat after a random interval in `interval_min..interval_max`: often
    /// enough that a device whose address changed without us noticing (or that missed a
    /// datagram) is found within a minute, rarely enough to cost nothing; the jitter keeps the
    /// devices of one LAN from announcing in lockstep. Syncthing's local discovery uses 30 s.
    pub interval_min: Duration,
    /// See `interval_min`.
    pub interval_max: Duration,
    /// At most one announcement per this long, however often the interfaces change (a flapping
    /// Wi-Fi must not turn into a broadcast storm).
    pub min_gap: Duration,
    /// Announcements whose timestamp is further than this from our wall clock are dropped: it
    /// bounds how long a captured announcement can be replayed, and allows that much clock skew
    /// between devices.
    pub window: Duration,
    /// Per source address: a token bucket of this many datagrams...
    pub source_burst: u32,
    /// ...refilled at one token per this long. A genuine peer sends a few copies per
    /// announcement (limited and directed broadcast, multicast) about twice a minute.
    pub source_refill: Duration,
    /// The most source addresses tracked at once; new sources beyond it are refused until idle
    /// ones are dropped (memory stays bounded under a flood of spoofed sources).
    pub max_sources: usize,
    /// A paired device heard at the addresses we already dialled is dialled again at most this
    /// often while no direct link to it is up (a new address is dialled at once).
    pub redial_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_min: Duration::from_secs(30),
            interval_max: Duration::from_secs(60),
            min_gap: Duration::from_secs(1),
            window: Duration::from_secs(600),
            source_burst: 8,
            source_refill: Duration::from_millis(500),
            max_sources: 256,
            redial_after: Duration::from_secs(30),
        }
    }
}

/// What the policy needs to know of the daemon's peers when an announcement arrives.
pub trait Peers {
    /// Whether `id` is a device we sync with (paired, or a member of the folder).
    fn is_paired(&self, id: &DeviceId) -> bool;
    /// The peer address of the current link to `id`, if one is up and not relayed. A link at
    /// none of the addresses the device announces now is to an address it left (renumbered):
    /// it is dialled again; a link over loopback counts as direct.
    fn direct_link(&self, id: &DeviceId) -> Option<SocketAddr>;
}

/// An announcement to send now (the driver signs and sends it to every destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// Our interface addresses, as last handed to [`LanDiscovery::handle_interfaces`].
    pub addrs: Vec<IpAddr>,
    /// The timestamp to put in it: the wall clock, but strictly increasing.
    pub timestamp_ms: u64,
}

/// Why a datagram was not believed (the driver logs it with the source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// The source sent more than its share.
    #[error("rate limited")]
    RateLimited,
    /// Not a valid announcement.
    #[error("malformed: {0}")]
    Malformed(DecodeError),
    /// A device we do not sync with.
    #[error("device {} is not paired", .0.abbrev())]
    NotPaired(DeviceId),
    /// The signature does not match the (paired) id's key.
    #[error("bad signature for device {}", .0.abbrev())]
    BadSignature(DeviceId),
    /// The timestamp is outside the window.
    #[error("timestamp outside the window")]
    OutOfWindow(DeviceId),
    /// Not newer than the last announcement taken from this device (a replay, or another copy
    /// of one we have: it is sent by broadcast and multicast).
    #[error("replayed or duplicate")]
    Replay(DeviceId),
}

/// What became of a received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Our own announcement, looped back.
    Own,
    /// Dropped; see [`Ignored`].
    Ignored(Ignored),
    /// A paired device's genuine announcement; a direct link to it is up at one of these
    /// addresses (or it was dialled there recently): nothing to do.
    Heard {
        /// The device.
        peer: DeviceId,
    },
    /// A paired device's genuine announcement: dial it at these addresses, in this order (the
    /// datagram's source first: it certainly reaches us).
    Dial {
        /// The device.
        peer: DeviceId,
        /// Where, with its QUIC port.
        addrs: Vec<SocketAddr>,
    },
}

/// Per-source token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    at: Instant,
}

/// What we last heard from a paired device.
#[derive(Debug, Clone)]
struct HeardFrom {
    /// The addresses we dialled it at last.
    dialled: Vec<SocketAddr>,
    dialled_at: Option<Instant>,
}

/// LAN discovery's decisions (see the module doc of `lan`).
#[derive(Debug)]
pub struct LanDiscovery {
    me: DeviceId,
    config: Config,
    started: bool,
    /// An announcement is wanted, since then, as soon as `min_gap` allows (start, interfaces
    /// changed).
    due: Option<Instant>,
    last_sent: Option<Instant>,
    next_periodic: Option<Instant>,
    last_timestamp: u64,
    addrs: Vec<IpAddr>,
    sources: HashMap<IpAddr, Bucket>,
    /// The newest timestamp taken per device (replay protection).
    latest: HashMap<DeviceId, u64>,
    heard: HashMap<DeviceId, HeardFrom>,
}

impl LanDiscovery {
    /// Discovery for device `me`, not started.
    pub fn new(me: DeviceId, config: Config) -> Self {
        LanDiscovery {
            me,
            config,
            started: false,
            due: None,
            last_sent: None,
            next_periodic: None,
            last_timestamp: 0,
            addrs: Vec::new(),
            sources: HashMap::new(),
            latest: HashMap::new(),
            heard: HashMap::new(),
        }
    }

    /// The daemon started: announce at once.
    pub fn handle_start(&mut self, now: Instant) {
        self.started = true;
        self.due = Some(now);
    }

    /// This machine's interface addresses at `now` (read every few seconds). A changed set is
    /// announced at once; returns whether it changed.
    pub fn handle_interfaces(&mut self, now: Instant, mut addrs: Vec<IpAddr>) -> bool {
        addrs.retain(wire::is_usable);
        addrs.sort();
        addrs.dedup();
        addrs.truncate(wire::MAX_ADDRS);
        if addrs == self.addrs {
            return false;
        }
        self.addrs = addrs;
        if self.started && self.due.is_none() {
            self.due = Some(now);
        }
        true
    }

    /// When to poll next: the time the next announcement is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.started {
            return None;
        }
        let wanted = match (self.due, self.next_periodic) {
            (Some(d), Some(p)) => d.min(p),
            (d, p) => d.or(p)?,
        };
        let earliest = self.last_sent.map(|t| t + self.config.min_gap);
        Some(earliest.map_or(wanted, |e| wanted.max(e)))
    }

    /// An announcement to send at `now` (`wall_ms`: the wall clock), if one is due; the next
    /// periodic one is scheduled with jitter from `rng`.
    pub fn poll_announce(
        &mut self,
        now: Instant,
        wall_ms: u64,
        rng: &mut impl Rng,
    ) -> Option<Announce> {
        if !self.started {
            return None;
        }
        if self
            .last_sent
            .is_some_and(|t| now < t + self.config.min_gap)
        {
            return None;
        }
        let periodic = self.next_periodic.is_some_and(|t| now >= t);
        if self.due.is_none() && !periodic {
            return None;
        }
        self.due = None;
        self.last_sent = Some(now);
        let (lo, hi) = (self.config.interval_min, self.config.interval_max);
        let jitter = if hi > lo { rng.gen_range(lo..hi) } else { lo };
        self.next_periodic = Some(now + jitter);
        self.last_timestamp = wall_ms.max(self.last_timestamp + 1);
        Some(Announce {
            addrs: self.addrs.clone(),
            timestamp_ms: self.last_timestamp,
        })
    }

    /// A datagram arrived on the discovery port from `from` at `now` (`wall_ms`: the wall
    /// clock). `peers` says whom we trust and how each is linked.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        wall_ms: u64,
        from: SocketAddr,
        datagram: &[u8],
        peers: &impl Peers,
    ) -> Verdict {
        if !self.take_token(now, from.ip()) {
            return Verdict::Ignored(Ignored::RateLimited);
        }
        let decoded = match wire::decode(datagram) {
            Ok(d) => d,
            Err(e) => return Verdict::Ignored(Ignored::Malformed(e)),
        };
        let a = &decoded.body;
        let id = a.id;
        if id == self.me {
            return Verdict::Own;
        }
        // Only paired ids get a signature check: strangers cost a hash, not a verification.
        if !peers.is_paired(&id) {
            return Verdict::Ignored(Ignored::NotPaired(id));
        }
        if decoded.verify().is_err() {
            return Verdict::Ignored(Ignored::BadSignature(id));
        }
        let window = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        if a.timestamp_ms.abs_diff(wall_ms) > window {
            return Verdict::Ignored(Ignored::OutOfWindow(id));
        }
        // Older entries than the window are safe to forget: anything not newer than them is
        // outside the window anyway. That keeps the table small.
        self.latest
            .retain(|_, &mut ts| wall_ms.saturating_sub(ts) <= window);
        if self.latest.get(&id).is_some_and(|&ts| a.timestamp_ms <= ts) {
            return Verdict::Ignored(Ignored::Replay(id));
        }
        self.latest.insert(id, a.timestamp_ms);

        let mut addrs = vec![SocketAddr::new(from.ip(), a.port)];
        if let SocketAddr::V6(v6) = from {
            // A link-local source needs its interface (scope) to be dialled.
            addrs[0] = SocketAddr::V6(std::net::SocketAddrV6::new(
                *v6.ip(),
                a.port,
                0,
                v6.scope_id(),
            ));
        }
        for ip in &a.addrs {
            // An announced IPv6 link-local address lacks the interface it is on: unusable.
            let link_local_v6 = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
            let addr = SocketAddr::new(*ip, a.port);
            if !link_local_v6 && !addrs.iter().any(|x| x.ip() == addr.ip()) {
                addrs.push(addr);
            }
        }
        if let Some(link) = peers.direct_link(&id) {
            // A link over loopback is to a device on this machine (two folders, tests), which
            // no announcement lists: nothing is more direct.
            if link.ip().is_loopback() || addrs.iter().any(|x| x.ip() == link.ip()) {
                return Verdict::Heard { peer: id };
            }
        }
        let entry = self.heard.entry(id).or_insert(HeardFrom {
            dialled: Vec::new(),
            dialled_at: None,
        });
        let new_addrs = {
            let mut a1: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            let mut a2: Vec<IpAddr> = entry.dialled.iter().map(SocketAddr::ip).collect();
            a1.sort();
            a2.sort();
            a1 != a2
        };
        let recently = entry
            .dialled_at
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.redial_after);
        if !new_addrs && recently {
            return Verdict::Heard { peer: id };
        }
        entry.dialled = addrs.clone();
        entry.dialled_at = Some(now);
        Verdict::Dial { peer: id, addrs }
    }

    /// Forgets what was heard from `id` (unpaired).
    pub fn handle_unpaired(&mut self, id: &DeviceId) {
        self.heard.remove(id);
        self.latest.remove(id);
    }

    /// Takes a token from `ip`'s bucket; false if it has none (or the table is full).
    fn take_token(&mut self, now: Instant, ip: IpAddr) -> bool {
        let (burst, refill) = (self.config.source_burst, self.config.source_refill);
        let refill_ms = refill.as_millis().max(1);
        let gained = |b: &Bucket| {
            u32::try_from(now.saturating_duration_since(b.at).as_millis() / refill_ms)
                .unwrap_or(u32::MAX)
        };
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.config.max_sources {
            // Drop the sources whose buckets are full again: they have been quiet.
            self.sources
                .retain(|_, b| b.tokens.saturating_add(gained(b)) < burst);
            if self.sources.len() >= self.config.max_sources {
                return false;
            }
        }
        let b = self.sources.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let g = gained(b);
        if g > 0 {
            b.tokens = b.tokens.saturating_add(g).min(burst);
            // Keep the part of a token earned since the last whole one, unless full.
            b.at = if b.tokens == burst {
                now
            } else {
                b.at + refill * g
            };
        }
        if b.tokens == 0 {
            return false;
        }
        b.tokens -= 1;
        true
    }
}
