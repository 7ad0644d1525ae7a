//! Offers of chunks a peer is still writing ([`Message::Offer`]), driven by hand.

use super::demand_tests::{drain, open, FOLDER, ME, PEER};
use super::tests::requests;
use super::*;
use std::time::Instant;

fn id(n: u32) -> ChunkId {
    let mut b = [0; 32];
    b[..4].copy_from_slice(&n.to_le_bytes());
    ChunkId(b)
}

#[test]
fn offered_chunks_are_checked_fetched_and_stored_early() {
    let now = Instant::now();
    let mut s = open(now);
    let a = s.handle_message(
        Message::Offer {
            ids: vec![id(1), id(2), id(3)],
        },
        now,
    );
    assert_eq!(a, vec![Action::CheckOffered(vec![id(1), id(2), id(3)])]);
    // The driver has chunk 2 already.
    s.handle_offer_missing(vec![id(1), id(3)]);
    let reqs = requests(&drain(&mut s));
    assert_eq!(
        reqs.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![id(1), id(3)]
    );
    let a = s.handle_message(
        Message::ChunkResponse {
            req_id: reqs[0].1,
            data: Some(vec![5; 40]),
        },
        now,
    );
    assert_eq!(
        a,
        vec![Action::StoreChunk {
            id: id(1),
            data: vec![5; 40],
            early: true
        }]
    );
    // Stored: no record waits, so nothing is applied and nothing fails.
    assert!(s.handle_chunk_verified(id(1), true).is_empty());
    // The peer dropped chunk 3 meanwhile (a temporary file): no failure is reported.
    let a = s.handle_message(
        Message::ChunkResponse {
            req_id: reqs[1].1,
            data: None,
        },
        now,
    );
    assert!(a.is_empty(), "{a:?}");
    assert!(s.is_idle());
}

#[test]
fn a_chunk_a_record_also_waits_for_is_not_early() {
    let now = Instant::now();
    let mut s = open(now);
    s.handle_message(Message::Offer { ids: vec![id(1)] }, now);
    s.handle_offer_missing(vec![id(1)]);
    let reqs = requests(&drain(&mut s));
    // The record using it arrives while the chunk is in flight.
    let mut rec = FileRecord::new("f", fybrk_store::Kind::File, 0o644, 1);
    rec.version = fybrk_store::VersionVector([(PEER, 1)].into_iter().collect());
    rec.seq = 1;
    rec.size = 40;
    rec.chunks = vec![fybrk_store::ChunkRef { id: id(1), len: 40 }];
    let a = s.handle_message(
        Message::IndexUpdate {
            records: vec![rec.clone()],
            up_to_seq: 1,
        },
        now,
    );
    let token = a
        .iter()
        .find_map(|a| match a {
            Action::NeedChunks { token, .. } => Some(*token),
            _ => None,
        })
        .expect("NeedChunks");
    s.handle_missing(token, Some(vec![id(1)]));
    assert!(requests(&drain(&mut s)).is_empty(), "asked once");
    let a = s.handle_message(
        Message::ChunkResponse {
            req_id: reqs[0].1,
            data: Some(vec![5; 40]),
        },
        now,
    );
    assert_eq!(
        a,
        vec![Action::StoreChunk {
            id: id(1),
            data: vec![5; 40],
            early: false
        }]
    );
    let a = s.handle_chunk_verified(id(1), true);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Apply(r) if r.path == "f")),
        "{a:?}"
    );
}

#[test]
fn offers_are_bounded() {
    let now = Instant::now();
    let mut s = open(now);
    // Far more than the prefetch bound, in legal messages: only the bound is wanted.
    for n in 0..8u32 {
        let ids: Vec<ChunkId> = (0..MAX_OFFER as u32).map(|i| id(n * 4096 + i)).collect();
        for a in s.handle_message(Message::Offer { ids }, now) {
            if let Action::CheckOffered(ids) = a {
                s.handle_offer_missing(ids);
            }
        }
    }
    assert_eq!(s.fetch.wanted_len(), MAX_PREFETCH_WANTED);
    assert_eq!(
        requests(&drain(&mut s)).len(),
        SessionConfig::default().window
    );
    // One message over the limit is a protocol violation.
    let too_many: Vec<ChunkId> = (0..=MAX_OFFER as u32).map(id).collect();
    let a = s.handle_message(Message::Offer { ids: too_many }, now);
    assert!(matches!(a.as_slice(), [Action::Close(_)]), "{a:?}");
}

#[test]
fn offers_go_out_in_bounded_messages_and_not_before_hello() {
    let now = Instant::now();
    let mut s = Session::new(ME, FOLDER, 0, 0, now);
    drain(&mut s);
    s.offer(&[id(1)]);
    assert!(drain(&mut s).is_empty(), "no offer before Hello");
    let mut s = open(now);
    let ids: Vec<ChunkId> = (0..(MAX_OFFER as u32 * 2 + 1)).map(id).collect();
    s.offer(&ids);
    let sizes: Vec<usize> = drain(&mut s)
        .into_iter()
        .map(|m| match m {
            Message::Offer { ids } => ids.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, vec![MAX_OFFER, MAX_OFFER, 1]);
}
