//! Exponential backoff with full jitter, without I/O or a clock.
//!
//! The caller asks for the next delay and sleeps however it likes (tokio in the daemon, a fake
//! clock in tests). "Full jitter" draws each delay uniformly from `[0, min(cap, base * 2^n)]`:
//! devices that lost the same relay or rendezvous server at the same moment then spread their
//! retries out instead of arriving in synchronized waves.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff state for one retried operation (e.g. reconnecting to one peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Backoff for reconnecting to a peer: 500 ms is above a LAN or WAN round trip, so the first
    /// retry is quick without hammering a peer that is restarting; 60 s bounds how long a device
    /// waits before it tries a peer that came back (the peer itself dials at once when it
    /// starts). The daemon resets it only once a link has stayed up for a while (`STABLE_LINK`
    /// in `cli/src/node/policy/mod.rs`), so a peer whose links drop right after the handshake keeps being
    /// backed off; a link ending only cuts the current wait short.
    pub const RECONNECT: Backoff =
        Backoff::new(Duration::from_millis(500), Duration::from_secs(60));

    /// Backoff starting at `base` and never waiting longer than `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// Failed attempts since the last [`reset`](Self::reset).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The longest delay the next call to [`next_delay`](Self::next_delay) can return:
    /// `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        // 2^attempt overflows past 31 or so; by then the cap has long been reached for any sane
        // base, so saturate instead of wrapping.
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay to wait before the next attempt, and counts this attempt.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        rng.gen_range(Duration::ZERO..=ceiling)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(10);

    #[test]
    fn delays_stay_within_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::new(BASE, CAP);
        for n in 0..40u32 {
            let ceiling = BASE
                .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
                .min(CAP);
            assert_eq!(b.ceiling(), ceiling);
            let d = b.next_delay(&mut rng);
            assert!(d <= ceiling, "attempt {n}: {d:?} > {ceiling:?}");
        }
    }

    #[test]
    fn delays_grow_until_the_cap() {
        let mut rng = StdRng::seed_from_u64(2);
        // The largest of many draws at each attempt approaches that attempt's ceiling, so it
        // must double at each step until the cap.
        let mut prev_max = Duration::ZERO;
        for attempt in 0..7u32 {
            let mut max = Duration::ZERO;
            for _ in 0..200 {
                let mut b = Backoff::new(BASE, CAP);
                for _ in 0..attempt {
                    b.next_delay(&mut rng);
                }
                max = max.max(b.next_delay(&mut rng));
            }
            assert!(max > prev_max, "attempt {attempt}: {max:?} <= {prev_max:?}");
            assert!(
                max > BASE * (1 << attempt) * 9 / 10,
                "attempt {attempt}: max {max:?}"
            );
            prev_max = max;
        }
    }

    #[test]
    fn cap_holds_forever() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(BASE, CAP);
        let mut seen_near_cap = false;
        for _ in 0..10_000 {
            let d = b.next_delay(&mut rng);
            assert!(d <= CAP);
            seen_near_cap |= d > CAP * 9 / 10;
        }
        assert_eq!(b.ceiling(), CAP);
        assert!(seen_near_cap, "delays should reach close to the cap");
        assert_eq!(b.attempt(), 10_000);
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut b = Backoff::new(BASE, CAP);
        for _ in 0..5 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), BASE);
        assert!(b.next_delay(&mut rng) <= BASE);
    }

    #[test]
    fn same_seed_same_delays() {
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Backoff::RECONNECT;
            (0..20).map(|_| b.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
    }
}
