//! Chunks a local read needs ([`Session::demand`]) and which chunks a peer keeps
//! ([`Session::ask_keeps`]), driven by hand.

use super::*;
use std::time::Instant;

pub(super) const ME: ShortId = 1;
pub(super) const PEER: ShortId = 2;
pub(super) const FOLDER: [u8; 16] = [7; 16];

fn id(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

pub(super) fn drain(s: &mut Session) -> Vec<Message> {
    std::iter::from_fn(|| s.poll_outgoing()).collect()
}

/// A session past the peer's `Hello`, nothing queued.
pub(super) fn open(now: Instant) -> Session {
    let mut s = Session::new(ME, FOLDER, 0, 0, now);
    drain(&mut s);
    let hello = Message::Hello {
        device: PEER,
        folder: FOLDER,
        max_seq: 0,
        seen_from_you: 0,
    };
    assert_eq!(s.handle_message(hello, now), vec![]);
    drain(&mut s);
    s
}

fn request_for(msgs: &[Message], want: ChunkId) -> u32 {
    msgs.iter()
        .find_map(|m| match m {
            Message::ChunkRequest { id, req_id } if *id == want => Some(*req_id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no request for {want:?} in {msgs:?}"))
}

#[test]
fn a_demanded_chunk_is_requested_verified_and_reported() {
    let now = Instant::now();
    let mut s = open(now);
    s.demand(id(1));
    s.demand(id(1));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1, "asked once: {out:?}");
    let req = request_for(&out, id(1));
    let a = s.handle_message(
        Message::ChunkResponse {
            req_id: req,
            data: Some(vec![9; 40]),
        },
        now,
    );
    assert_eq!(
        a,
        vec![Action::StoreChunk {
            id: id(1),
            data: vec![9; 40],
            early: false,
        }]
    );
    // A corrupt copy is asked for again; a good one is reported to the reader.
    assert!(s.handle_chunk_verified(id(1), false).is_empty());
    let req = request_for(&drain(&mut s), id(1));
    s.handle_message(
        Message::ChunkResponse {
            req_id: req,
            data: Some(vec![8; 40]),
        },
        now,
    );
    assert_eq!(
        s.handle_chunk_verified(id(1), true),
        vec![Action::Demanded {
            id: id(1),
            ok: true
        }]
    );
    assert!(s.is_idle(), "nothing left in flight");
}

#[test]
fn a_peer_without_the_chunk_fails_the_demand_here() {
    let now = Instant::now();
    let mut s = open(now);
    s.demand(id(2));
    let req = request_for(&drain(&mut s), id(2));
    let a = s.handle_message(
        Message::ChunkResponse {
            req_id: req,
            data: None,
        },
        now,
    );
    assert_eq!(
        a,
        vec![Action::Demanded {
            id: id(2),
            ok: false
        }]
    );
    assert!(!s.is_closed());
}

#[test]
fn before_hello_a_demand_is_ignored() {
    let now = Instant::now();
    let mut s = Session::new(ME, FOLDER, 0, 0, now);
    drain(&mut s);
    s.demand(id(3));
    assert!(drain(&mut s).is_empty());
    assert!(!s.ask_keeps(vec![id(3)]));
}

#[test]
fn keeps_queries_round_trip_and_are_bounded() {
    let now = Instant::now();
    let mut s = open(now);
    assert!(s.ask_keeps(vec![id(1), id(2), id(3)]));
    assert!(!s.ask_keeps(vec![id(4)]), "one query at a time");
    let sent = drain(&mut s);
    let Some(Message::KeepsQuery { req_id, ids }) = sent.first().cloned() else {
        panic!("no query: {sent:?}");
    };
    assert_eq!(ids, vec![id(1), id(2), id(3)]);
    let a = s.handle_message(
        Message::KeepsReply {
            req_id,
            keeps: vec![true, false, true],
        },
        now,
    );
    assert_eq!(a, vec![Action::Kept(vec![id(1), id(3)])]);
    // The peer's side: asked, answered through the driver.
    let a = s.handle_message(
        Message::KeepsQuery {
            req_id: 7,
            ids: vec![id(5)],
        },
        now,
    );
    assert_eq!(
        a,
        vec![Action::CheckKeeps {
            req_id: 7,
            ids: vec![id(5)]
        }]
    );
    s.handle_keeps_checked(7, vec![true]);
    assert_eq!(
        drain(&mut s),
        vec![Message::KeepsReply {
            req_id: 7,
            keeps: vec![true]
        }]
    );
}

#[test]
fn a_keeps_reply_that_matches_nothing_or_a_huge_query_closes_the_session() {
    let now = Instant::now();
    let mut s = open(now);
    let a = s.handle_message(
        Message::KeepsReply {
            req_id: 1,
            keeps: vec![true],
        },
        now,
    );
    assert!(matches!(a.as_slice(), [Action::Close(_)]), "{a:?}");

    let mut s = open(now);
    assert!(s.ask_keeps(vec![id(1), id(2)]));
    let a = s.handle_message(
        Message::KeepsReply {
            req_id: 0,
            keeps: vec![true],
        },
        now,
    );
    assert!(
        matches!(a.as_slice(), [Action::Close(_)]),
        "a short answer: {a:?}"
    );

    let mut s = open(now);
    let ids = vec![id(1); crate::messages::MAX_KEEPS_QUERY + 1];
    let a = s.handle_message(Message::KeepsQuery { req_id: 1, ids }, now);
    assert!(matches!(a.as_slice(), [Action::Close(_)]), "{a:?}");

    let mut s = open(now);
    for req_id in 0..2 {
        let q = Message::KeepsQuery {
            req_id,
            ids: vec![id(1)],
        };
        assert!(matches!(
            s.handle_message(q, now).as_slice(),
            [Action::CheckKeeps { .. }]
        ));
    }
    let q = Message::KeepsQuery {
        req_id: 2,
        ids: vec![id(1)],
    };
    assert!(
        matches!(s.handle_message(q, now).as_slice(), [Action::Close(_)]),
        "a third query while two are outstanding"
    );
}
