//! FUSE operation counters and latency histograms, for the daemon's `/metrics`.
//!
//! Every request the kernel sends goes through [`crate::fuse::guarded`], which calls
//! [`record`] with the operation's name and how long its handler took. The hot path is one
//! `Instant::now()` pair and three relaxed atomic adds: no lock, no allocation, no map lookup
//! beyond a `match` on the name. Relaxed is enough: each counter is read on its own, and a
//! scrape that sees a count one ahead of its histogram sum is harmless.
//!
//! The counters are process-wide (one daemon serves one folder); [`snapshot`] reads them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The operations counted, in the order [`snapshot`] lists them. Anything else `guarded` sees is
/// counted as `other`.
pub const OPS: [&str; 27] = [
    "lookup",
    "forget",
    "getattr",
    "setattr",
    "readlink",
    "mkdir",
    "mknod",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "opendir",
    "readdir",
    "releasedir",
    "fsyncdir",
    "statfs",
    "access",
    "create",
    "xattr",
    "other",
];

/// Upper bounds of the latency buckets, in microseconds (Prometheus `le`). From a cached
/// `getattr` (a few µs) to a `fsync` that waits on the disk or a `read` that waits on a peer
/// (seconds); roughly ×2.5 apart so each decade has two or three buckets.
pub const BUCKETS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000, 10_000_000,
];

/// One operation's counters.
struct OpStats {
    count: AtomicU64,
    sum_ns: AtomicU64,
    /// Non-cumulative: bucket `i` counts calls in (`BUCKETS_US[i-1]`, `BUCKETS_US[i]`]; the
    /// last one those above every bound. [`snapshot`] makes them cumulative.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
}

impl OpStats {
    const fn new() -> OpStats {
        OpStats {
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS_US.len() + 1],
        }
    }
}

static STATS: [OpStats; OPS.len()] = [const { OpStats::new() }; OPS.len()];

/// The index of `op` in [`OPS`] (`other` when it is not listed). A `match`, which the compiler
/// turns into a length switch and one short compare, rather than a scan of [`OPS`].
fn index(op: &str) -> usize {
    match op {
        "lookup" => 0,
        "forget" => 1,
        "getattr" => 2,
        "setattr" => 3,
        "readlink" => 4,
        "mkdir" => 5,
        "mknod" => 6,
        "unlink" => 7,
        "rmdir" => 8,
        "symlink" => 9,
        "rename" => 10,
        "link" => 11,
        "open" => 12,
        "read" => 13,
        "write" => 14,
        "flush" => 15,
        "release" => 16,
        "fsync" => 17,
        "opendir" => 18,
        "readdir" => 19,
        "releasedir" => 20,
        "fsyncdir" => 21,
        "statfs" => 22,
        "access" => 23,
        "create" => 24,
        "setxattr" | "getxattr" | "listxattr" | "removexattr" => 25,
        _ => 26,
    }
}

/// Counts one call of `op` that took `took`.
pub fn record(op: &str, took: Duration) {
    let s = &STATS[index(op)];
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let bucket = BUCKETS_US
        .iter()
        .position(|b| us <= *b)
        .unwrap_or(BUCKETS_US.len());
    s.count.fetch_add(1, Ordering::Relaxed);
    s.sum_ns.fetch_add(
        u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
}

/// One operation's numbers at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSnapshot {
    /// Its name (one of [`OPS`]).
    pub op: &'static str,
    /// Calls so far.
    pub count: u64,
    /// Time spent in its handler, summed, in nanoseconds.
    pub sum_ns: u64,
    /// Cumulative counts per bound of [`BUCKETS_US`] (calls that took at most that long).
    pub cumulative: [u64; BUCKETS_US.len()],
}

/// Every operation's counters now, in [`OPS`] order.
pub fn snapshot() -> Vec<OpSnapshot> {
    OPS.iter()
        .zip(STATS.iter())
        .map(|(op, s)| {
            let mut cumulative = [0u64; BUCKETS_US.len()];
            let mut running = 0u64;
            for (i, c) in cumulative.iter_mut().enumerate() {
                running = running.saturating_add(s.buckets[i].load(Ordering::Relaxed));
                *c = running;
            }
            OpSnapshot {
                op,
                count: s.count.load(Ordering::Relaxed),
                sum_ns: s.sum_ns.load(Ordering::Relaxed),
                cumulative,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(op: &str) -> OpSnapshot {
        snapshot().into_iter().find(|s| s.op == op).unwrap()
    }

    #[test]
    fn counts_land_in_their_bucket_and_are_cumulative() {
        // `mknod` is used by no other test in this process.
        let before = of("mknod");
        record("mknod", Duration::from_micros(3));
        record("mknod", Duration::from_micros(700));
        record("mknod", Duration::from_secs(60));
        let after = of("mknod");
        assert_eq!(after.count - before.count, 3);
        assert!(after.sum_ns - before.sum_ns >= 60_000_000_000);
        // <= 10 µs: one; <= 1 ms: two; <= 10 s: still two (the minute is above every bound).
        assert_eq!(after.cumulative[0] - before.cumulative[0], 1);
        assert_eq!(after.cumulative[6] - before.cumulative[6], 2);
        let last = BUCKETS_US.len() - 1;
        assert_eq!(after.cumulative[last] - before.cumulative[last], 2);
    }

    #[test]
    fn every_listed_op_has_its_own_index() {
        for (i, op) in OPS.iter().enumerate().take(OPS.len() - 2) {
            assert_eq!(index(op), i, "{op}");
        }
    }

    #[test]
    fn unknown_ops_count_as_other_and_xattrs_together() {
        assert_eq!(OPS[index("getxattr")], "xattr");
        assert_eq!(OPS[index("bmap")], "other");
        assert_eq!(OPS[index("write")], "write");
    }
}
