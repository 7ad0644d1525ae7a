//! A sliding-window rate limiter fed the caller's clock (no I/O, no `Instant::now`).

use std::collections::VecDeque;

/// Counts events in a sliding window: after `max` events within `window_secs`, [`check`] refuses
/// until the oldest of them is `window_secs` old.
///
/// [`check`]: RateLimiter::check
#[derive(Debug, Clone)]
pub struct RateLimiter {
    max: usize,
    window_secs: u64,
    /// Times of the events still inside the window, oldest first; never more than `max`.
    events: VecDeque<u64>,
}

impl RateLimiter {
    /// A limiter allowing `max` events per `window_secs` seconds.
    pub fn new(max: usize, window_secs: u64) -> Self {
        Self {
            max,
            window_secs,
            events: VecDeque::with_capacity(max),
        }
    }

    fn expire(&mut self, now_unix: u64) {
        while let Some(&oldest) = self.events.front() {
            if now_unix.saturating_sub(oldest) >= self.window_secs {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// `Ok(())` if another event is allowed at `now_unix`, else `Err(seconds until it is)`.
    pub fn check(&mut self, now_unix: u64) -> Result<(), u64> {
        self.expire(now_unix);
        if self.events.len() < self.max {
            return Ok(());
        }
        let oldest = self.events.front().copied().unwrap_or(now_unix);
        // At least 1: "retry in 0 seconds" would invite a busy loop against a limit that is
        // still in force.
        Err((oldest + self.window_secs).saturating_sub(now_unix).max(1))
    }

    /// True when no event is left in the window at `now_unix`.
    pub fn is_idle(&mut self, now_unix: u64) -> bool {
        self.expire(now_unix);
        self.events.is_empty()
    }

    /// Counts an event at `now_unix`.
    pub fn record(&mut self, now_unix: u64) {
        self.expire(now_unix);
        if self.events.len() == self.max {
            // Only the newest `max` events can ever decide a refusal.
            self.events.pop_front();
        }
        self.events.push_back(now_unix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_max_until_the_window_passes() {
        let mut limit = RateLimiter::new(3, 60);
        for t in [100, 101, 102] {
            assert_eq!(limit.check(t), Ok(()));
            limit.record(t);
        }
        assert_eq!(limit.check(103), Err(57));
        assert_eq!(limit.check(159), Err(1));
        // The event at 100 has left the window; the one at 101 leaves a second later.
        assert_eq!(limit.check(160), Ok(()));
        limit.record(160);
        assert_eq!(limit.check(160), Err(1));
        assert_eq!(limit.check(161), Ok(()));
    }

    #[test]
    fn a_clock_that_steps_back_does_not_unlock() {
        let mut limit = RateLimiter::new(1, 60);
        limit.record(1000);
        assert!(limit.check(900).is_err());
    }
}
