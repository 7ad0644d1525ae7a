//! Wrong pairing proofs, counted per source address and per claimed device id, across every
//! invitation of a daemon.
//!
//! Keyed this way so that a flood of wrong proofs slows down only whoever sends them: the real
//! joiner, at another address and with another id, is never refused. And a right proof is
//! never refused at all: the daemon consults this only for proofs that matched no invitation
//! (a 128-bit secret cannot be guessed online, so the limit is about noise and work, not about
//! keeping the secret).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use super::messages::{RefuseReason, Refused};
use super::rate_limit::RateLimiter;

/// Wrong proofs tolerated per source address, and per claimed device id, within
/// [`BAD_PROOF_WINDOW_SECS`]. A real user gets a wrong proof only by pasting a different
/// invitation, so five is generous.
pub const MAX_BAD_PROOFS: usize = 5;

/// How long wrong proofs are remembered.
pub const BAD_PROOF_WINDOW_SECS: u64 = 60;

/// Sources (and ids) tracked at most: past it the ones with nothing left in their window go,
/// and if every one is still counting, all are forgotten (memory stays bounded whatever a
/// flood of addresses does; such a flood gains nothing a 128-bit secret would fear).
pub const MAX_TRACKED: usize = 4096;

/// The limiter: [`BadProofs::check`] before answering a wrong proof, [`BadProofs::record`]
/// after.
#[derive(Debug, Default)]
pub struct BadProofs {
    by_source: HashMap<IpAddr, RateLimiter>,
    by_device: HashMap<[u8; 32], RateLimiter>,
}

impl BadProofs {
    /// An empty limiter.
    pub fn new() -> BadProofs {
        BadProofs::default()
    }

    /// Refused with [`RefuseReason::RateLimited`] when `source` or `device` sent
    /// [`MAX_BAD_PROOFS`] wrong proofs within the window before `now_unix`.
    pub fn check(
        &mut self,
        source: IpAddr,
        device: &[u8; 32],
        now_unix: u64,
    ) -> Result<(), Refused> {
        let wait = [
            self.by_source.get_mut(&source).map(|l| l.check(now_unix)),
            self.by_device.get_mut(device).map(|l| l.check(now_unix)),
        ]
        .into_iter()
        .flatten()
        .filter_map(Result::err)
        .max();
        match wait {
            Some(retry_after_secs) => Err(RefuseReason::RateLimited { retry_after_secs }.into()),
            None => Ok(()),
        }
    }

    /// Counts a wrong proof from `source` claiming `device`.
    pub fn record(&mut self, source: IpAddr, device: &[u8; 32], now_unix: u64) {
        count(&mut self.by_source, source, now_unix);
        count(&mut self.by_device, *device, now_unix);
    }

    /// Sources and ids tracked now (for tests of the bound).
    pub fn tracked(&self) -> usize {
        self.by_source.len() + self.by_device.len()
    }
}

fn count<K: Eq + Hash>(map: &mut HashMap<K, RateLimiter>, key: K, now_unix: u64) {
    if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
        map.retain(|_, l| l.check(now_unix).is_err() || !l.is_idle(now_unix));
        if map.len() >= MAX_TRACKED {
            map.clear();
        }
    }
    map.entry(key)
        .or_insert_with(|| RateLimiter::new(MAX_BAD_PROOFS, BAD_PROOF_WINDOW_SECS))
        .record(now_unix);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_750_000_000;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn limits_the_source_and_the_id_that_send_wrong_proofs_only() {
        let mut bad = BadProofs::new();
        for i in 0..MAX_BAD_PROOFS as u64 {
            assert!(bad.check(ip(1), &[1; 32], T0 + i).is_ok());
            bad.record(ip(1), &[1; 32], T0 + i);
        }
        let limited = bad.check(ip(1), &[9; 32], T0 + 5).unwrap_err();
        assert_eq!(
            limited.reason,
            RefuseReason::RateLimited {
                retry_after_secs: BAD_PROOF_WINDOW_SECS - 5
            }
        );
        assert!(
            bad.check(ip(2), &[1; 32], T0 + 5).is_err(),
            "same id elsewhere"
        );
        assert!(bad.check(ip(2), &[2; 32], T0 + 5).is_ok(), "someone else");
        assert!(bad
            .check(ip(1), &[1; 32], T0 + BAD_PROOF_WINDOW_SECS)
            .is_ok());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_sources() {
        let mut bad = BadProofs::new();
        for n in 0..(3 * MAX_TRACKED as u32) {
            let source = IpAddr::from(n.to_be_bytes());
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_be_bytes());
            bad.record(source, &id, T0);
        }
        assert!(bad.tracked() <= 2 * MAX_TRACKED, "{}", bad.tracked());
    }
}
