//! How far the peer's change log is applied here: the number to persist for offline catch-up.

use std::collections::VecDeque;

/// Progress through the peer's batches: the peer's sequence is safe to persist only when all
/// records of every batch up to it are settled.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// `(up_to_seq, records not settled)` per batch, oldest first.
    batches: VecDeque<(u64, usize)>,
    /// Number of the batch at the front of `batches`.
    first: u64,
    /// The peer's sequence up to which everything is settled (persisted as `PeerSeenUpTo`).
    pub(crate) seen: u64,
}

impl Progress {
    /// Progress that starts at `seen` (persisted from an earlier session).
    pub(crate) fn new(seen: u64) -> Progress {
        Progress {
            seen,
            ..Progress::default()
        }
    }

    /// A batch of `records` that brings the peer's log up to `up_to`; returns its number.
    pub(crate) fn open(&mut self, up_to: u64, records: usize) -> u64 {
        self.batches.push_back((up_to, records));
        self.first + self.batches.len() as u64 - 1
    }

    /// One record of batch `batch` is settled (applied, not wanted, or superseded).
    pub(crate) fn settle(&mut self, batch: u64) {
        if let Some(b) = batch
            .checked_sub(self.first)
            .and_then(|i| self.batches.get_mut(i as usize))
        {
            b.1 = b.1.saturating_sub(1);
        }
    }

    /// Pops settled batches; the new progress if it moved.
    pub(crate) fn advance(&mut self) -> Option<u64> {
        let before = self.seen;
        while let Some(&(up_to, 0)) = self.batches.front() {
            self.batches.pop_front();
            self.first += 1;
            self.seen = self.seen.max(up_to);
        }
        (self.seen != before).then_some(self.seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_waits_for_the_oldest_batch() {
        let mut p = Progress {
            seen: 3,
            ..Progress::default()
        };
        let a = p.open(10, 2);
        let b = p.open(20, 1);
        let c = p.open(25, 0);
        assert_eq!(p.advance(), None);
        p.settle(b);
        assert_eq!(p.advance(), None, "batch a still open");
        p.settle(a);
        p.settle(a);
        assert_eq!(
            p.advance(),
            Some(25),
            "a, b and the empty c are all settled"
        );
        assert_eq!(c, 2);
        assert_eq!(p.advance(), None);
    }
}
