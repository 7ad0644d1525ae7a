//! The rendezvous server as a state machine without I/O.
//!
//! [`Server::handle_datagram`] takes one datagram, its source and `now`, and returns what to
//! send where; [`Server::poll_timeout`] / [`Server::handle_timeout`] drop expired state. The
//! tokio loop around it is [`super::driver::run_server`].
//!
//! # Cookies
//!
//! A cookie is the first 16 bytes of HMAC-SHA256(secret, id || observed address || epoch), with
//! a random secret made at start-up and epochs of [`COOKIE_EPOCH`]; the current and the previous
//! epoch are accepted. It costs the server no memory, proves that the device receives at the
//! observed address, and dies with a restart (devices then simply register again).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use rand::RngCore;
use ring::hmac;
use tracing::{debug, trace};

use super::limiter::RateLimiter;
use super::messages::{
    decode, Connect, Cookie, ErrorCode, ErrorReply, Message, Punch, Register, Registered, Signed,
    Unknown, CONNECT_LEN,
};
use super::{Transmit, WallClock};
use crate::identity::DeviceId;

/// How long a registration lives without a refresh. Devices refresh every 25 s
/// ([`super::client::REREGISTER_INTERVAL`]), so three refreshes in a row must be lost before a
/// live device disappears, and a device that went away is forgotten within a minute and a half.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(90);

/// Length of a cookie epoch. With the current and previous epoch accepted, a cookie lives 60 to
/// 120 s: longer than the refresh interval (each refresh hands out a current one), short enough
/// that a cookie seen on the wire is soon useless to anyone else.
pub const COOKIE_EPOCH: Duration = Duration::from_secs(60);

/// How far a request's timestamp may be from the server's clock. The timestamp only orders a
/// device's requests and bounds how long a captured request stays interesting (cookies bind
/// requests to an address anyway), so it can be generous enough for a badly set clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// How often expired registrations and idle rate-limit buckets are swept. Lookups check expiry
/// themselves, so this only bounds memory held by the departed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Server limits. The defaults suit a small public server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most devices registered at once; past it new devices get `Error(Full)` (known devices can
    /// still refresh). 10,000 registrations take about 2 MB.
    pub max_registrations: usize,
    /// Datagrams one source may send in a burst.
    pub rate_burst: u32,
    /// Datagrams per second one source may send in the long run. A device sends about one
    /// every 25 s, so 32/s leaves room for hundreds of devices behind one carrier-grade NAT
    /// while capping what one host can make the server verify (an Ed25519 check each).
    pub rate_per_sec: u32,
    /// Most sources tracked by the rate limiter at once.
    pub max_sources: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_registrations: 10_000,
            rate_burst: 64,
            rate_per_sec: 32,
            max_sources: 65_536,
        }
    }
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Devices registered now (expired ones may linger until the next sweep).
    pub registrations: usize,
    /// Datagrams dropped by the rate limiter.
    pub rate_limited: u64,
    /// Datagrams dropped as malformed, unsigned, badly signed, replayed or not for a server.
    pub invalid: u64,
    /// Introductions made (`Punch` pairs sent).
    pub introductions: u64,
}

/// The rendezvous server's state: registrations, the cookie key and the rate limiter.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    cookie_key: hmac::Key,
    started: Instant,
    wall: WallClock,
    registrations: HashMap<DeviceId, Registration>,
    limiter: RateLimiter,
    next_sweep: Instant,
    stats: ServerStats,
}

#[derive(Debug, Clone)]
struct Registration {
    public_key: [u8; 32],
    observed: SocketAddr,
    lan: Vec<SocketAddr>,
    relay: Option<SocketAddr>,
    /// Latest timestamp accepted from this device; anything not newer is a replay.
    last_ms: u64,
    expires: Instant,
    /// The cookie handed out with the last confirmation, echoed in `Punch`.
    cookie: Cookie,
}

impl Server {
    /// A server with a fresh random cookie key.
    pub fn new(config: ServerConfig, now: Instant, wall: WallClock) -> Self {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let limiter = RateLimiter::new(config.rate_burst, config.rate_per_sec, config.max_sources);
        Server {
            config,
            cookie_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            started: now,
            wall,
            registrations: HashMap::new(),
            limiter,
            next_sweep: now + SWEEP_INTERVAL,
            stats: ServerStats::default(),
        }
    }

    /// Replaces the wall clock (the driver re-reads the system clock now and then).
    pub fn set_wall_clock(&mut self, wall: WallClock) {
        self.wall = wall;
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            registrations: self.registrations.len(),
            ..self.stats
        }
    }

    /// Whether `id` is registered and not expired at `now`.
    pub fn is_registered(&self, id: &DeviceId, now: Instant) -> bool {
        self.live(id, now).is_some()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_sweep)
    }

    /// Drops expired registrations and idle rate-limit buckets.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        self.registrations.retain(|_, r| r.expires > now);
        self.limiter.sweep(now);
        trace!(
            registrations = self.registrations.len(),
            sources = self.limiter.len(),
            "swept"
        );
    }

    /// Handles one datagram from `from`; returns the datagrams to send.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Vec<Transmit> {
        if !self.limiter.allow(from.ip(), now) {
            self.stats.rate_limited += 1;
            return Vec::new();
        }
        let out = match decode(datagram) {
            Ok(Message::Register(m)) => self.handle_register(from, m, now),
            Ok(Message::Connect(m)) => self.handle_connect(from, m, now),
            Ok(other) => {
                trace!(%from, ?other, "not a request for the server");
                None
            }
            Err(e) => {
                trace!(%from, error = %e, "dropped invalid datagram");
                None
            }
        };
        match out {
            Some(out) => {
                // No amplification: everything a request makes us send fits in the request.
                debug_assert!(out.iter().map(|(_, d)| d.len()).sum::<usize>() <= datagram.len());
                out
            }
            None => {
                self.stats.invalid += 1;
                Vec::new()
            }
        }
    }

    /// `None` means drop silently (and count as invalid).
    fn handle_register(
        &mut self,
        from: SocketAddr,
        msg: Signed<Register>,
        now: Instant,
    ) -> Option<Vec<Transmit>> {
        msg.verify_self_signed().ok()?;
        let reg = msg.body;
        if let Some(reply) = self.check_clock(from, reg.timestamp_ms, now) {
            return Some(reply);
        }
        let cookie = self.cookie(&reg.id, from, now);
        let proven = reg
            .cookie
            .is_some_and(|c| self.cookie_valid(&c, &reg.id, from, now));
        if proven {
            let known = self.live(&reg.id, now).map(|r| r.last_ms);
            match known {
                Some(last) if reg.timestamp_ms <= last => {
                    debug!(%from, device = %reg.id.abbrev(), "replayed or reordered Register");
                    return None;
                }
                None if self.registrations.len() >= self.config.max_registrations => {
                    // Make room from the expired before refusing.
                    self.registrations.retain(|_, r| r.expires > now);
                    if self.registrations.len() >= self.config.max_registrations {
                        return Some(self.error(from, ErrorCode::Full, reg.timestamp_ms, now));
                    }
                }
                _ => {}
            }
            if known.is_none() {
                debug!(%from, device = %reg.id.abbrev(), "registered");
            }
            self.registrations.insert(
                reg.id,
                Registration {
                    public_key: reg.public_key,
                    observed: from,
                    lan: reg.candidates,
                    relay: reg.relay,
                    last_ms: reg.timestamp_ms,
                    expires: now + REGISTRATION_TTL,
                    cookie,
                },
            );
        }
        let reply = Registered {
            observed: from,
            echo_ms: reg.timestamp_ms,
            cookie,
            confirmed: proven,
            ttl_secs: REGISTRATION_TTL.as_secs() as u32,
        };
        Some(encoded(from, reply.encode()))
    }

    fn handle_connect(
        &mut self,
        from: SocketAddr,
        msg: Signed<Connect>,
        now: Instant,
    ) -> Option<Vec<Transmit>> {
        let req = &msg.body;
        let cookie_ok = self.cookie_valid(&req.cookie, &req.id, from, now);
        let Some(asker) = self
            .live(&req.id, now)
            .filter(|r| r.observed == from && cookie_ok)
        else {
            // Unauthenticated (we have no key to check it with), but tiny and useful: the device
            // re-registers at once after a server restart or a NAT rebinding.
            return Some(self.error(from, ErrorCode::NotRegistered, req.timestamp_ms, now));
        };
        msg.verify(&asker.public_key).ok()?;
        if req.timestamp_ms <= asker.last_ms {
            debug!(%from, device = %req.id.abbrev(), "replayed or reordered Connect");
            return None;
        }
        if let Some(reply) = self.check_clock(from, req.timestamp_ms, now) {
            return Some(reply);
        }
        let asker = {
            let entry = self.registrations.get_mut(&req.id)?;
            entry.last_ms = req.timestamp_ms;
            entry.clone()
        };
        let target = match self.live(&req.target, now) {
            Some(t) if req.target != req.id => t.clone(),
            _ => {
                debug!(%from, device = %req.id.abbrev(), target = %req.target.abbrev(), "unknown target");
                let reply = Unknown {
                    target: req.target,
                    nonce: req.nonce,
                };
                return Some(encoded(from, reply.encode()));
            }
        };
        // Both sides learn of each other in the same call, so the driver sends the two datagrams
        // back to back: the probes then start within a network delay of each other, which is what
        // lets two NATs open towards each other (simultaneous open).
        let to_asker = Punch {
            peer: req.target,
            peer_public_key: target.public_key,
            observed: target.observed,
            lan: target.lan.clone(),
            nonce: req.nonce,
            initiator: true,
            cookie_echo: req.cookie,
            peer_relay: target.relay,
        };
        let to_target = Punch {
            peer: req.id,
            peer_public_key: asker.public_key,
            observed: asker.observed,
            lan: asker.lan.clone(),
            nonce: req.nonce,
            initiator: false,
            cookie_echo: target.cookie,
            peer_relay: asker.relay,
        };
        let mut out = encoded(from, to_asker.encode());
        out.extend(encoded(target.observed, to_target.encode()));
        debug_assert!(out.iter().map(|(_, d)| d.len()).sum::<usize>() <= CONNECT_LEN);
        self.stats.introductions += 1;
        debug!(
            device = %req.id.abbrev(), at = %from,
            target = %req.target.abbrev(), target_at = %target.observed,
            "introduced"
        );
        Some(out)
    }

    fn live(&self, id: &DeviceId, now: Instant) -> Option<&Registration> {
        self.registrations.get(id).filter(|r| r.expires > now)
    }

    /// An `Error(ClockSkew)` reply if `timestamp_ms` is too far from our clock.
    fn check_clock(
        &self,
        from: SocketAddr,
        timestamp_ms: u64,
        now: Instant,
    ) -> Option<Vec<Transmit>> {
        let ours = self.wall.unix_ms(now);
        let skew = Duration::from_millis(ours.abs_diff(timestamp_ms));
        (skew > MAX_CLOCK_SKEW).then(|| self.error(from, ErrorCode::ClockSkew, timestamp_ms, now))
    }

    fn error(&self, to: SocketAddr, code: ErrorCode, echo_ms: u64, now: Instant) -> Vec<Transmit> {
        let reply = ErrorReply {
            code,
            echo_ms,
            server_ms: self.wall.unix_ms(now),
        };
        encoded(to, reply.encode())
    }

    fn epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs() / COOKIE_EPOCH.as_secs()
    }

    fn cookie(&self, id: &DeviceId, addr: SocketAddr, now: Instant) -> Cookie {
        self.cookie_at(id, addr, self.epoch(now))
    }

    fn cookie_at(&self, id: &DeviceId, addr: SocketAddr, epoch: u64) -> Cookie {
        let mut ctx = hmac::Context::with_key(&self.cookie_key);
        ctx.update(id.as_bytes());
        match addr.ip() {
            IpAddr::V4(ip) => {
                ctx.update(&[4]);
                ctx.update(&ip.octets());
            }
            IpAddr::V6(ip) => {
                ctx.update(&[6]);
                ctx.update(&ip.octets());
            }
        }
        ctx.update(&addr.port().to_be_bytes());
        ctx.update(&epoch.to_be_bytes());
        let tag = ctx.sign();
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(&tag.as_ref()[..16]);
        cookie
    }

    fn cookie_valid(&self, cookie: &Cookie, id: &DeviceId, addr: SocketAddr, now: Instant) -> bool {
        let epoch = self.epoch(now);
        let current = self.cookie_at(id, addr, epoch);
        let previous = epoch.checked_sub(1).map(|e| self.cookie_at(id, addr, e));
        // Evaluate both comparisons in constant time; which one matched leaks nothing useful.
        let a = ct_eq(cookie, &current);
        let b = previous.is_some_and(|p| ct_eq(cookie, &p));
        a | b
    }
}

/// Constant-time equality of two cookies, so response timing does not reveal how many leading
/// bytes of a guess were right.
fn ct_eq(a: &Cookie, b: &Cookie) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One transmit, or none (logged) if encoding failed, which would be a bug in our own limits.
fn encoded(to: SocketAddr, bytes: Result<Vec<u8>, super::messages::EncodeError>) -> Vec<Transmit> {
    match bytes {
        Ok(bytes) => vec![(to, bytes)],
        Err(e) => {
            tracing::warn!(%to, error = %e, "cannot encode rendezvous reply");
            Vec::new()
        }
    }
}
