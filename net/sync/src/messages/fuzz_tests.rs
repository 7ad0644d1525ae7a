//! Fuzz-style property tests (issue 11): the frame codec is fed arbitrary bytes and mutations of
//! valid frames; it must never panic and never yield more than the input can hold.

use super::*;
use fybrk_store::{ChunkRef, Kind, VersionVector};
use proptest::prelude::*;

/// One mutation of a byte string: flip a bit, insert, delete or truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        match m {
            Mutation::Flip(i, bit) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Mutation::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

fn arb_message() -> impl Strategy<Value = Message> {
    let record = (
        "[a-z/]{0,12}",
        prop::collection::vec((any::<[u8; 32]>(), any::<u32>()), 0..3),
        prop::option::of("[a-z]{0,5}"),
        prop::collection::btree_map(any::<u64>(), any::<u64>(), 0..3),
        any::<u64>(),
    )
        .prop_map(|(path, chunks, target, vv, seq)| FileRecord {
            kind: Kind::File,
            deleted: false,
            path,
            mode: 0o644,
            mtime_ns: -1,
            size: seq,
            chunks: chunks
                .into_iter()
                .map(|(id, len)| ChunkRef {
                    id: ChunkId(id),
                    len,
                })
                .collect(),
            target,
            version: VersionVector(vv),
            seq,
        });
    prop_oneof![
        (any::<u64>(), any::<[u8; 16]>(), any::<u64>()).prop_map(|(device, folder, s)| {
            Message::Hello {
                device,
                folder,
                max_seq: s,
                seen_from_you: s / 2,
            }
        }),
        (prop::collection::vec(record, 0..3), any::<u64>())
            .prop_map(|(records, up_to_seq)| Message::IndexUpdate { records, up_to_seq }),
        (any::<[u8; 32]>(), any::<u32>()).prop_map(|(id, req_id)| Message::ChunkRequest {
            id: ChunkId(id),
            req_id
        }),
        (
            any::<u32>(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64))
        )
            .prop_map(|(req_id, data)| Message::ChunkResponse { req_id, data }),
        Just(Message::Ping),
        Just(Message::Pong),
        (any::<u32>(), prop::collection::vec(any::<[u8; 32]>(), 0..4)).prop_map(|(req_id, ids)| {
            Message::KeepsQuery {
                req_id,
                ids: ids.into_iter().map(ChunkId).collect(),
            }
        }),
        (any::<u32>(), prop::collection::vec(any::<bool>(), 0..4))
            .prop_map(|(req_id, keeps)| Message::KeepsReply { req_id, keeps }),
        prop::collection::vec(any::<[u8; 32]>(), 0..4).prop_map(|ids| Message::Offer {
            ids: ids.into_iter().map(ChunkId).collect(),
        }),
    ]
}

/// Drives a decoder over `bytes` fed in pieces of `step`, checking the output stays bounded.
fn drain(bytes: &[u8], step: usize, max: usize) -> Result<(), TestCaseError> {
    let mut dec = FrameDecoder::new(max);
    let mut got = 0usize;
    for piece in bytes.chunks(step.max(1)) {
        dec.push(piece);
        loop {
            match dec.next_message() {
                Ok(Some(m)) => {
                    got += 1;
                    // Every frame costs a header plus a non-empty payload; a decoded message
                    // re-encodes no larger than the bytes it came from.
                    prop_assert!(got * (HEADER + 1) <= bytes.len());
                    let re = postcard::to_allocvec(&m)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(re.len() <= max);
                }
                Ok(None) => break,
                Err(_) => return Ok(()),
            }
        }
    }
    let _ = dec.finish();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512),
                            step in 1usize..64) {
        if let Ok(m) = decode_message(&bytes) {
            prop_assert!(postcard::to_allocvec(&m).unwrap().len() <= bytes.len());
        }
        drain(&bytes, step, 1 << 10)?;
        drain(&bytes, step, DEFAULT_MAX_FRAME)?;
    }

    #[test]
    fn fuzz_mutated_frames(msgs in prop::collection::vec(arb_message(), 1..4),
                           muts in prop::collection::vec(arb_mutation(), 1..6),
                           step in 1usize..64) {
        let mut stream = Vec::new();
        for m in &msgs {
            encode_frame_into(m, &mut stream, DEFAULT_MAX_FRAME).unwrap();
        }
        let bad = mutate(stream, &muts);
        drain(&bad, step, DEFAULT_MAX_FRAME)?;
        if bad.len() > HEADER {
            if let Ok(m) = decode_message(&bad[HEADER..]) {
                prop_assert!(postcard::to_allocvec(&m).unwrap().len() <= bad.len() - HEADER);
            }
        }
    }

    #[test]
    fn fuzz_round_trip(msg in arb_message()) {
        let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(decode_message(&frame[HEADER..]), Ok(msg.clone()));
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.push(&frame);
        prop_assert_eq!(dec.next_message(), Ok(Some(msg)));
        prop_assert_eq!(dec.finish(), Ok(()));
    }
}
