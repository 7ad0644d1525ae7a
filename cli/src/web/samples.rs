//! The last minutes of each peer's link, for the page's chart: a ring of samples per peer,
//! fed a `status` reply and the time ([`Samples::handle_status`]); no clock, no I/O.

use std::collections::{BTreeMap, VecDeque};

use fybrk_control::StatusReply;

/// How often the server samples (the ring's spacing): the links' own throughput is a 5 s
/// average, so 2 s shows every change; a `status` is cheap (counters, no scan).
pub const INTERVAL_SECS: u64 = 2;
/// Samples kept per peer: ten minutes at [`INTERVAL_SECS`].
pub const KEEP: usize = 300;

/// One peer at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When, unix seconds.
    pub unix: u64,
    /// Round trip (`None`: not connected).
    pub rtt_ms: Option<f64>,
    /// Bytes per second received (`None`: not connected).
    pub throughput_bps: Option<f64>,
}

/// The ring of every peer `status` lists.
#[derive(Debug, Default)]
pub struct Samples {
    per_peer: BTreeMap<String, VecDeque<Sample>>,
}

impl Samples {
    /// Adds one sample per peer in `status`, taken at `now` (unix seconds); peers no longer
    /// listed are forgotten.
    pub fn handle_status(&mut self, now: u64, status: &StatusReply) {
        let peers = &status.network.peers;
        self.per_peer
            .retain(|id, _| peers.iter().any(|p| &p.id == id));
        for p in peers {
            let ring = self.per_peer.entry(p.id.clone()).or_default();
            if ring.len() == KEEP {
                ring.pop_front();
            }
            ring.push_back(Sample {
                unix: now,
                rtt_ms: p.rtt_ms.filter(|_| p.connected),
                throughput_bps: p.throughput_bps.filter(|_| p.connected),
            });
        }
    }

    /// The samples of peer `id`, oldest first.
    pub fn of(&self, id: &str) -> Vec<Sample> {
        self.per_peer
            .get(id)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::fake::{peer, status};

    #[test]
    fn keeps_the_last_ten_minutes_per_peer_and_forgets_removed_ones() {
        let mut s = Samples::default();
        for i in 0..(KEEP as u64 + 10) {
            let rtt = (i % 2 == 0).then_some(i as f64);
            s.handle_status(
                i * INTERVAL_SECS,
                &status(vec![peer("a", rtt), peer("b", None)]),
            );
        }
        let a = s.of("a");
        assert_eq!(a.len(), KEEP);
        assert_eq!(a[0].unix, 10 * INTERVAL_SECS);
        assert_eq!(a.last().unwrap().unix, (KEEP as u64 + 9) * INTERVAL_SECS);
        assert_eq!(a.last().unwrap().rtt_ms, None);
        assert_eq!(a[a.len() - 2].throughput_bps, Some(100.0));
        s.handle_status(10_000, &status(vec![peer("b", None)]));
        assert!(s.of("a").is_empty());
        assert_eq!(s.of("b").len(), KEEP);
    }
}
