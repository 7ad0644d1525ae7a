//! Chunk fetching for one session: which chunks the pending records wait for, the window of
//! requests in flight, and retries of chunks that failed verification.
//!
//! A chunk wanted by several records (a file and its renamed copy, or two files sharing data)
//! is requested once. A chunk's life: queued -> in flight (request sent) -> verifying (bytes
//! handed to the driver) -> done, or back to queued after a failed verification, until the
//! attempt limit.

use std::collections::{HashMap, VecDeque};

use fybrk_store::ChunkId;

use super::session::RecordToken;

/// Where a wanted chunk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Queued,
    InFlight,
    Verifying,
}

#[derive(Debug)]
struct Wanted {
    waiters: Vec<RecordToken>,
    /// Failed verifications so far.
    failures: u32,
    state: State,
}

/// What a chunk response means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Response {
    /// Hand the bytes to the driver for verification.
    Verify(ChunkId, Vec<u8>),
    /// The peer lacks the chunk: these records cannot complete from this peer.
    NotFound(ChunkId, Vec<RecordToken>),
    /// Nobody waits for it any more (superseded, or it arrived another way): drop it.
    Stale,
    /// No request with this id is outstanding: the peer broke the protocol.
    Unknown,
}

/// What a verification result means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verified {
    /// The chunk is stored; these records waited for it.
    Done(Vec<RecordToken>),
    /// Corrupt; queued again.
    Retry,
    /// Corrupt too often; these records cannot complete from this peer.
    GaveUp(Vec<RecordToken>, u32),
    /// Not a chunk this session waits for.
    Ignore,
}

/// The chunk fetching state of one session.
#[derive(Debug, Default)]
pub(crate) struct Fetcher {
    wanted: HashMap<ChunkId, Wanted>,
    /// Chunks to request, oldest first. May hold stale ids (forgotten or already requested);
    /// they are skipped when popped, which is cheaper than searching the queue on every change.
    queue: VecDeque<ChunkId>,
    in_flight: HashMap<u32, ChunkId>,
    verifying: usize,
    next_req: u32,
}

impl Fetcher {
    /// `token` needs chunk `id`.
    pub(crate) fn want(&mut self, id: ChunkId, token: RecordToken) {
        let w = self.wanted.entry(id).or_insert_with(|| {
            self.queue.push_back(id);
            Wanted {
                waiters: Vec::new(),
                failures: 0,
                state: State::Queued,
            }
        });
        if !w.waiters.contains(&token) {
            w.waiters.push(token);
        }
    }

    /// `token` no longer needs `ids` (its record was superseded).
    pub(crate) fn forget(&mut self, token: RecordToken, ids: impl IntoIterator<Item = ChunkId>) {
        for id in ids {
            if let Some(w) = self.wanted.get_mut(&id) {
                w.waiters.retain(|t| *t != token);
                // In flight or verifying: keep the entry so the response or the verification
                // result still finds it (and the window count stays right).
                if w.waiters.is_empty() && w.state == State::Queued {
                    self.wanted.remove(&id);
                }
            }
        }
    }

    /// Requests to send now: `(chunk, req_id)` until `window` requests are outstanding.
    pub(crate) fn next_requests(&mut self, window: usize) -> Vec<(ChunkId, u32)> {
        let mut out = Vec::new();
        while self.outstanding() < window {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            let Some(w) = self.wanted.get_mut(&id) else {
                continue;
            };
            if w.state != State::Queued || w.waiters.is_empty() {
                continue;
            }
            w.state = State::InFlight;
            // Request ids wrap after 2^32 requests; skip any still outstanding.
            while self.in_flight.contains_key(&self.next_req) {
                self.next_req = self.next_req.wrapping_add(1);
            }
            let req = self.next_req;
            self.next_req = self.next_req.wrapping_add(1);
            self.in_flight.insert(req, id);
            out.push((id, req));
        }
        out
    }

    /// A response for request `req_id` arrived.
    pub(crate) fn handle_response(&mut self, req_id: u32, data: Option<Vec<u8>>) -> Response {
        let Some(id) = self.in_flight.remove(&req_id) else {
            return Response::Unknown;
        };
        let Some(w) = self.wanted.get_mut(&id) else {
            return Response::Stale;
        };
        if w.state != State::InFlight || w.waiters.is_empty() {
            if w.waiters.is_empty() {
                self.wanted.remove(&id);
            }
            return Response::Stale;
        }
        match data {
            Some(bytes) => {
                w.state = State::Verifying;
                self.verifying += 1;
                Response::Verify(id, bytes)
            }
            None => {
                let waiters = std::mem::take(&mut w.waiters);
                self.wanted.remove(&id);
                Response::NotFound(id, waiters)
            }
        }
    }

    /// The driver verified (and, if `ok`, stored) chunk `id`. Also accepted for a chunk this
    /// session queued or requested that arrived by another route: it then completes early.
    pub(crate) fn handle_verified(&mut self, id: ChunkId, ok: bool, max_attempts: u32) -> Verified {
        let Some(w) = self.wanted.get_mut(&id) else {
            return Verified::Ignore;
        };
        let was_verifying = w.state == State::Verifying;
        if !ok && !was_verifying {
            return Verified::Ignore;
        }
        if was_verifying {
            self.verifying -= 1;
        }
        if ok {
            let waiters = std::mem::take(&mut w.waiters);
            self.wanted.remove(&id);
            return Verified::Done(waiters);
        }
        w.failures += 1;
        if w.failures >= max_attempts || w.waiters.is_empty() {
            let (waiters, failures) = (std::mem::take(&mut w.waiters), w.failures);
            self.wanted.remove(&id);
            return Verified::GaveUp(waiters, failures);
        }
        w.state = State::Queued;
        // First in line: the records waiting for it have waited longest.
        self.queue.push_front(id);
        Verified::Retry
    }

    /// Requests sent and not yet settled (answered and verified).
    pub(crate) fn outstanding(&self) -> usize {
        self.in_flight.len() + self.verifying
    }

    /// True when `token` is the only one waiting for `id`.
    pub(crate) fn only_waiter(&self, id: &ChunkId, token: RecordToken) -> bool {
        self.wanted
            .get(id)
            .is_some_and(|w| w.waiters.as_slice() == [token])
    }

    /// Chunks wanted (queued, in flight or verifying).
    pub(crate) fn wanted_len(&self) -> usize {
        self.wanted.len()
    }

    /// Nothing wanted, nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.wanted.is_empty() && self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn shared_chunks_are_requested_once_and_the_window_holds() {
        let mut f = Fetcher::default();
        for n in 0..5 {
            f.want(id(n), RecordToken(1));
            f.want(id(n), RecordToken(2));
        }
        let first = f.next_requests(3);
        assert_eq!(first.len(), 3);
        assert!(f.next_requests(3).is_empty(), "window full");
        assert_eq!(
            f.handle_response(first[0].1, Some(vec![1])),
            Response::Verify(id(0), vec![1])
        );
        assert!(
            f.next_requests(3).is_empty(),
            "verifying still counts against the window"
        );
        assert_eq!(
            f.handle_verified(id(0), true, 3),
            Verified::Done(vec![RecordToken(1), RecordToken(2)])
        );
        assert_eq!(f.next_requests(3).len(), 1);
    }

    #[test]
    fn corrupt_chunks_are_retried_then_given_up() {
        let mut f = Fetcher::default();
        f.want(id(1), RecordToken(7));
        for attempt in 1..=3 {
            let reqs = f.next_requests(64);
            assert_eq!(reqs.len(), 1, "attempt {attempt}");
            assert!(matches!(
                f.handle_response(reqs[0].1, Some(vec![0])),
                Response::Verify(..)
            ));
            let v = f.handle_verified(id(1), false, 3);
            if attempt < 3 {
                assert_eq!(v, Verified::Retry);
            } else {
                assert_eq!(v, Verified::GaveUp(vec![RecordToken(7)], 3));
            }
        }
        assert!(f.is_idle());
        assert_eq!(f.outstanding(), 0);
    }

    #[test]
    fn unknown_stale_and_missing_responses() {
        let mut f = Fetcher::default();
        assert_eq!(f.handle_response(9, None), Response::Unknown);
        f.want(id(1), RecordToken(1));
        f.want(id(2), RecordToken(1));
        let reqs = f.next_requests(64);
        f.forget(RecordToken(1), [id(1)]);
        assert_eq!(f.handle_response(reqs[0].1, Some(vec![1])), Response::Stale);
        assert_eq!(
            f.handle_response(reqs[1].1, None),
            Response::NotFound(id(2), vec![RecordToken(1)])
        );
        assert!(f.is_idle());
    }

    #[test]
    fn a_chunk_that_arrives_another_way_completes_early() {
        let mut f = Fetcher::default();
        f.want(id(1), RecordToken(1));
        f.want(id(2), RecordToken(1));
        let reqs = f.next_requests(1);
        assert_eq!(
            f.handle_verified(id(2), true, 3),
            Verified::Done(vec![RecordToken(1)])
        );
        assert_eq!(
            f.handle_verified(id(1), false, 3),
            Verified::Ignore,
            "not ours to judge"
        );
        assert_eq!(
            f.handle_verified(id(1), true, 3),
            Verified::Done(vec![RecordToken(1)])
        );
        assert_eq!(f.handle_response(reqs[0].1, Some(vec![1])), Response::Stale);
        assert!(f.next_requests(8).is_empty());
        assert!(f.is_idle());
    }
}
