//! One STUN request/response transaction over UDP (RFC 8489 §6.2.1) as a state machine without
//! I/O or clock: when to send the request again, when to give up, and what ended it.
//!
//! The caller owns the socket and the clock. It sends what [`Transaction::poll_transmit`]
//! returns, sleeps until [`Transaction::poll_timeout`], reports the time with
//! [`Transaction::handle_timeout`] and a response with [`Transaction::handle_response`], and
//! reads the result from [`Transaction::poll_outcome`]. The Binding client
//! ([`super::binding()`]) and the TURN allocation ([`crate::turn`]) both drive it, so their
//! retransmissions follow one schedule and the tests check it on a fake clock.

use std::time::{Duration, Instant};

use super::{INITIAL_RTO, TRANSACTION_TIMEOUT};

/// Offsets from the first transmission at which a request is (re)sent: RFC 8489's doubling RTO
/// (0, RTO, 3 RTO, 7 RTO, ...), keeping only sends that leave at least one RTO before `give_up`.
pub(crate) fn retransmit_offsets(rto: Duration, give_up: Duration) -> Vec<Duration> {
    let mut offsets = Vec::new();
    let mut at = Duration::ZERO;
    let mut wait = rto;
    while at + rto <= give_up {
        offsets.push(at);
        at += wait;
        wait *= 2;
    }
    offsets
}

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response arrived (its bytes, not yet decoded: the caller knows what it asked).
    Response(Vec<u8>),
    /// No response within the transaction's time limit (how long it waited).
    TimedOut(Duration),
}

/// A request waiting for its response, retransmitted on RFC 8489's doubling RTO and given up
/// after [`TRANSACTION_TIMEOUT`] (see there for why not RFC 8489's full 39.5 s).
#[derive(Debug)]
pub(crate) struct Transaction {
    request: Vec<u8>,
    start: Instant,
    /// When each copy goes out, relative to `start`.
    sends: Vec<Duration>,
    /// Copies sent so far.
    sent: usize,
    /// How long to wait in all, from `start`.
    give_up: Duration,
    outcome: Option<Outcome>,
    /// Whether `outcome` was already handed out.
    taken: bool,
}

impl Transaction {
    /// A transaction for `request` (already encoded, with its transaction id) starting `now`:
    /// the first copy is due at once.
    pub(crate) fn new(request: Vec<u8>, now: Instant) -> Self {
        Self::with_schedule(request, now, INITIAL_RTO, TRANSACTION_TIMEOUT)
    }

    /// [`new`](Self::new) with another first RTO and time limit.
    pub(crate) fn with_schedule(
        request: Vec<u8>,
        now: Instant,
        rto: Duration,
        give_up: Duration,
    ) -> Self {
        Transaction {
            request,
            start: now,
            sends: retransmit_offsets(rto, give_up),
            sent: 0,
            give_up,
            outcome: None,
            taken: false,
        }
    }

    /// The request, if a copy of it is due at `now`; each due copy is returned once.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        if self.outcome.is_some() {
            return None;
        }
        let due = self.sends.get(self.sent).map(|o| self.start + *o)?;
        if now < due {
            return None;
        }
        self.sent += 1;
        Some(&self.request)
    }

    /// When the caller must next call in: the next copy is due, or the transaction gives up.
    /// `None` once it has ended.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        let give_up = self.start + self.give_up;
        Some(match self.sends.get(self.sent) {
            Some(offset) => (self.start + *offset).min(give_up),
            None => give_up,
        })
    }

    /// The clock moved on to `now`: gives up if the time limit has passed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && now >= self.start + self.give_up {
            self.outcome = Some(Outcome::TimedOut(self.give_up));
        }
    }

    /// The response arrived at `now` (the caller matched its transaction id and sender). The
    /// first one counts; later copies (answers to retransmissions) are ignored. Returns
    /// whether it was taken.
    pub(crate) fn handle_response(&mut self, now: Instant, response: &[u8]) -> bool {
        // A response that arrives after the time limit, before the caller reported the
        // deadline, still counts: `now` does not decide, only whether the transaction ended.
        let _ = now;
        if self.outcome.is_some() {
            return false;
        }
        self.outcome = Some(Outcome::Response(response.to_vec()));
        true
    }

    /// How it ended, once; `None` while it runs.
    pub(crate) fn poll_outcome(&mut self) -> Option<Outcome> {
        if self.taken {
            return None;
        }
        let outcome = self.outcome.clone()?;
        self.taken = true;
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives `t` on a fake clock from `start` to `until` in 10 ms steps; returns the offsets
    /// at which it sent.
    fn run(t: &mut Transaction, start: Instant, until: Duration) -> Vec<Duration> {
        let mut sent = Vec::new();
        let mut at = Duration::ZERO;
        while at <= until {
            let now = start + at;
            t.handle_timeout(now);
            while t.poll_transmit(now).is_some() {
                sent.push(at);
            }
            at += ms(10);
        }
        sent
    }

    #[test]
    fn retransmissions_follow_the_doubling_rto_within_the_cap() {
        assert_eq!(
            retransmit_offsets(INITIAL_RTO, TRANSACTION_TIMEOUT),
            [ms(0), ms(500), ms(1500)]
        );
        // Uncapped, RFC 8489's example: 0, 500, 1500, 3500, 7500, 15500, 31500 ms, then 8 s.
        assert_eq!(
            retransmit_offsets(ms(500), ms(39_500)),
            [0, 500, 1500, 3500, 7500, 15500, 31500].map(ms)
        );
    }

    #[test]
    fn a_silent_server_gets_three_copies_then_a_timeout_at_three_seconds() {
        let start = Instant::now();
        let mut t = Transaction::new(b"request".to_vec(), start);
        assert_eq!(t.poll_timeout(), Some(start));
        assert_eq!(t.poll_transmit(start), Some(&b"request"[..]));
        assert_eq!(t.poll_transmit(start), None, "each copy once");
        assert_eq!(t.poll_timeout(), Some(start + ms(500)));
        assert_eq!(t.poll_transmit(start + ms(499)), None);
        let sent = run(&mut t, start, ms(2990));
        assert_eq!(sent, [ms(500), ms(1500)]);
        assert_eq!(t.poll_timeout(), Some(start + TRANSACTION_TIMEOUT));
        assert_eq!(t.poll_outcome(), None, "still waiting at 2.99 s");
        t.handle_timeout(start + TRANSACTION_TIMEOUT);
        assert_eq!(
            t.poll_outcome(),
            Some(Outcome::TimedOut(TRANSACTION_TIMEOUT))
        );
        assert_eq!(t.poll_outcome(), None, "reported once");
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(t.poll_transmit(start + ms(5000)), None, "no fourth copy");
    }

    #[test]
    fn a_response_to_a_retransmission_ends_it() {
        let start = Instant::now();
        let mut t = Transaction::new(b"request".to_vec(), start);
        assert!(t.poll_transmit(start).is_some());
        assert!(t.poll_transmit(start + ms(600)).is_some());
        assert!(t.handle_response(start + ms(700), b"response"));
        assert!(
            !t.handle_response(start + ms(710), b"again"),
            "first one counts"
        );
        assert_eq!(
            t.poll_outcome(),
            Some(Outcome::Response(b"response".to_vec()))
        );
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(
            t.poll_transmit(start + ms(1500)),
            None,
            "nothing after the answer"
        );
        t.handle_timeout(start + ms(4000));
        assert_eq!(t.poll_outcome(), None, "no timeout after the answer");
    }

    #[test]
    fn a_late_caller_catches_up_without_a_burst_past_the_deadline() {
        let start = Instant::now();
        let mut t = Transaction::new(b"r".to_vec(), start);
        // The caller was busy for 1.6 s: the copies due by then go out once each.
        let now = start + ms(1600);
        let mut n = 0;
        while t.poll_transmit(now).is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
        t.handle_timeout(start + ms(3100));
        assert_eq!(
            t.poll_outcome(),
            Some(Outcome::TimedOut(TRANSACTION_TIMEOUT))
        );
    }

    #[test]
    fn a_custom_schedule_is_kept() {
        let start = Instant::now();
        let mut t = Transaction::with_schedule(b"r".to_vec(), start, ms(100), ms(1000));
        let sent = run(&mut t, start, ms(1000));
        assert_eq!(sent, [0, 100, 300, 700].map(ms));
        assert_eq!(t.poll_outcome(), Some(Outcome::TimedOut(ms(1000))));
    }
}
