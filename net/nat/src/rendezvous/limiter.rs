//! Per-source token buckets: how many datagrams one source may make the server process.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often, at most, a full table is swept for idle buckets. Sweeping is O(table); without a
/// floor, a flood of new (spoofed) sources would make every datagram pay for a sweep.
const SWEEP_FLOOR: Duration = Duration::from_secs(1);

/// Token buckets keyed by source: an IPv4 address, or the /64 prefix of an IPv6 address (one
/// IPv6 host usually owns a whole /64, so per-address limits would be no limit at all).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    burst: f64,
    per_sec: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `burst` datagrams at once, `per_sec` sustained, for at most `max_sources` sources at a time.
    pub(crate) fn new(burst: u32, per_sec: u32, max_sources: usize) -> Self {
        RateLimiter {
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            max_sources,
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Takes one token for `ip`; false means drop the datagram.
    ///
    /// When the table is full, buckets that have refilled completely (idle sources, which lose
    /// nothing by being forgotten) are dropped; if none has, new sources are refused until one
    /// does. Known sources keep their buckets either way.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_sources {
            self.sweep(now);
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        let (burst, per_sec) = (self.burst, self.per_sec);
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        bucket.refill(now, burst, per_sec);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets sources whose bucket is full again (at most once per [`SWEEP_FLOOR`]).
    pub(crate) fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_FLOOR)
        {
            return;
        }
        self.last_sweep = Some(now);
        let (burst, per_sec) = (self.burst, self.per_sec);
        self.buckets.retain(|_, b| {
            b.refill(now, burst, per_sec);
            b.tokens < burst
        });
    }

    /// Sources currently tracked.
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

impl Bucket {
    fn refill(&mut self, now: Instant, burst: f64, per_sec: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(burst);
        self.updated = now;
    }
}

fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}
