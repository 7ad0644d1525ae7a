//! Flow-control windows sized to the bandwidth-delay product, retuned as a link runs.
//!
//! A QUIC window bounds the bytes in flight, and with them the memory a connection holds: the
//! receiver buffers up to its receive window of data its application has not read yet, and the
//! sender keeps up to its send window of data the peer has not acknowledged. A fixed window is
//! wrong somewhere: 64 MiB fills a 1 Gbit/s path across an ocean but, on a LAN or loopback,
//! only fills up memory whenever the receiving side is slower than the wire (a busy disk, a slow
//! CPU). So each link starts at [`START_WINDOW`] and, once a second, [`FlowTuner::sample`] sets
//! both windows to [`HEADROOM`] times what the link carried in one round trip: a window that
//! limited the transfer was full, so it doubles; one far larger than what flows shrinks back,
//! never below [`MIN_WINDOW`] and never above [`MAX_WINDOW`].
//!
//! Policy only: no clock, no connection. The daemon's housekeeping feeds it quinn's byte
//! counters and round-trip estimate and applies what it returns
//! (`quinn::Connection::set_receive_window`, `set_send_window`).

use std::time::{Duration, Instant};

/// The windows a connection starts with, before anything was measured: 4 MiB is 40 MB/s on a
/// 100 ms path, and a second later the tuner has doubled it if the link could take more.
pub const START_WINDOW: u64 = 4 << 20;

/// The smallest window the tuner sets: what a fast LAN or loopback needs in its short round
/// trip with room to spare (1 MiB per 0.5 ms is 2 GB/s), and small enough to keep a daemon's
/// buffers at one MiB each way (4 MiB held the sender's peak RSS 3 MiB higher during a 1 GiB
/// sync on loopback, at the same throughput).
pub const MIN_WINDOW: u64 = 1 << 20;

/// The largest window the tuner sets: a 1 Gbit/s path with 500 ms of round trip (a
/// satellite hop), or 4 Gbit/s at 130 ms.
pub const MAX_WINDOW: u64 = 64 << 20;

/// A window is this many times the bytes one round trip carried: twice, so a window that
/// limited the transfer doubles each sample (a second), like TCP's receive-buffer autotuning.
pub const HEADROOM: f64 = 2.0;

/// A window as QUIC's variable-length integer, as quinn takes it (windows are far below its
/// 2^62 limit; a larger value would mean "no limit" anyway).
pub fn varint(bytes: u64) -> quinn::VarInt {
    quinn::VarInt::from_u64(bytes).unwrap_or(quinn::VarInt::MAX)
}

/// Samples closer together than this are ignored: a rate over a few milliseconds is noise.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// The windows to apply to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// Bytes the peer may send that this side has not read yet.
    pub receive: u64,
    /// Bytes this side may have sent and not had acknowledged.
    pub send: u64,
}

/// Retunes one connection's windows from its byte counters. See the module doc.
#[derive(Debug)]
pub struct FlowTuner {
    /// The last sample: when, bytes received, bytes sent.
    last: Option<(Instant, u64, u64)>,
    current: Windows,
}

impl Default for FlowTuner {
    fn default() -> Self {
        FlowTuner::new()
    }
}

impl FlowTuner {
    /// A tuner for a connection that starts with [`START_WINDOW`] both ways.
    pub fn new() -> FlowTuner {
        FlowTuner {
            last: None,
            current: Windows {
                receive: START_WINDOW,
                send: START_WINDOW,
            },
        }
    }

    /// The windows last returned (or the starting ones).
    pub fn windows(&self) -> Windows {
        self.current
    }

    /// Feeds the connection's total bytes received and sent and its round-trip estimate at
    /// `now`. Returns the new windows when they change.
    pub fn sample(&mut self, now: Instant, rx: u64, tx: u64, rtt: Duration) -> Option<Windows> {
        let Some((then, rx0, tx0)) = self.last else {
            self.last = Some((now, rx, tx));
            return None;
        };
        let dt = now.saturating_duration_since(then);
        if dt < MIN_INTERVAL {
            return None;
        }
        self.last = Some((now, rx, tx));
        let next = Windows {
            receive: window_for(rx.saturating_sub(rx0), dt, rtt),
            send: window_for(tx.saturating_sub(tx0), dt, rtt),
        };
        if next == self.current {
            return None;
        }
        self.current = next;
        Some(next)
    }
}

/// [`HEADROOM`] times the bytes one round trip carries at the rate of `bytes` over `dt`,
/// within [`MIN_WINDOW`]..=[`MAX_WINDOW`], rounded up to a MiB (so small changes in the rate
/// do not retune the connection every second).
fn window_for(bytes: u64, dt: Duration, rtt: Duration) -> u64 {
    let rate = bytes as f64 / dt.as_secs_f64().max(1e-3);
    let want = HEADROOM * rate * rtt.as_secs_f64();
    // `as` saturates: a huge or infinite product becomes u64::MAX, then the clamp.
    let want = (want.ceil() as u64).clamp(MIN_WINDOW, MAX_WINDOW);
    want.div_ceil(1 << 20) * (1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Feeds `rate_mib` MiB/s each way for one second per step.
    fn step(
        t: &mut FlowTuner,
        now: &mut Instant,
        total: &mut u64,
        rate_mib: u64,
        rtt_ms: u64,
    ) -> Option<Windows> {
        *now += Duration::from_secs(1);
        *total += rate_mib * MIB;
        t.sample(*now, *total, *total, Duration::from_millis(rtt_ms))
    }

    #[test]
    fn a_window_limited_link_doubles_until_the_path_is_full() {
        let mut t = FlowTuner::new();
        let mut now = Instant::now();
        let mut total = 0;
        assert_eq!(
            t.sample(now, 0, 0, Duration::from_millis(100)),
            None,
            "first sample"
        );
        // 100 ms of round trip, 1 Gbit/s (~120 MiB/s) of capacity: the window allows
        // window / rtt per second, so the link runs window-limited until the window holds
        // 12 MiB.
        let mut windows = Vec::new();
        for _ in 0..6 {
            let allowed = t.windows().receive * 10 / MIB;
            let rate = allowed.min(120);
            step(&mut t, &mut now, &mut total, rate, 100);
            windows.push(t.windows().receive / MIB);
        }
        assert_eq!(
            windows,
            vec![8, 16, 24, 24, 24, 24],
            "doubles, then holds at 2x the BDP"
        );
    }

    #[test]
    fn a_slow_reader_on_a_short_path_keeps_the_minimum() {
        let mut t = FlowTuner::new();
        let mut now = Instant::now();
        let mut total = 0;
        t.sample(now, 0, 0, Duration::from_millis(1));
        // 300 MiB/s on loopback (1 ms): 0.6 MiB of window is plenty.
        for _ in 0..3 {
            step(&mut t, &mut now, &mut total, 300, 1);
            assert_eq!(t.windows().receive, MIN_WINDOW);
        }
    }

    #[test]
    fn the_windows_shrink_when_the_link_slows_and_stay_in_bounds() {
        let mut t = FlowTuner::new();
        let mut now = Instant::now();
        let mut total = 0;
        t.sample(now, 0, 0, Duration::from_millis(500));
        // A huge rate on a long path: capped.
        step(&mut t, &mut now, &mut total, 10_000, 500);
        assert_eq!(
            t.windows(),
            Windows {
                receive: MAX_WINDOW,
                send: MAX_WINDOW
            }
        );
        // Idle: back to the minimum.
        let w = step(&mut t, &mut now, &mut total, 0, 500);
        assert_eq!(
            w,
            Some(Windows {
                receive: MIN_WINDOW,
                send: MIN_WINDOW
            })
        );
        // Unchanged: nothing to apply.
        assert_eq!(step(&mut t, &mut now, &mut total, 0, 500), None);
    }

    #[test]
    fn each_direction_is_tuned_on_its_own_and_odd_input_is_harmless() {
        let mut t = FlowTuner::new();
        let now = Instant::now();
        t.sample(now, 0, 0, Duration::from_millis(200));
        // 100 MiB/s in, nothing out, 200 ms: receive 40 MiB, send the minimum.
        let w = t.sample(
            now + Duration::from_secs(1),
            100 * MIB,
            0,
            Duration::from_millis(200),
        );
        assert_eq!(
            w,
            Some(Windows {
                receive: 40 * MIB,
                send: MIN_WINDOW
            })
        );
        // Too soon after the last sample: ignored.
        assert_eq!(
            t.sample(now + Duration::from_millis(1100), 0, 0, Duration::ZERO),
            None
        );
        // Counters that went backwards (a new connection's) and a clock that did: no panic,
        // in bounds.
        let later = now + Duration::from_secs(5);
        t.sample(later, 0, 0, Duration::MAX);
        let w = t.windows();
        assert!((MIN_WINDOW..=MAX_WINDOW).contains(&w.receive), "{w:?}");
        assert_eq!(t.sample(now, u64::MAX, u64::MAX, Duration::MAX), None);
    }
}
