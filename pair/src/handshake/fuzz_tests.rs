//! Fuzz-style property tests (issue 11): pairing frames are fed arbitrary bytes and mutations of
//! valid frames; `decode_frame` must never panic and never claim more bytes than it was given.

use proptest::prelude::*;
use serde::de::DeserializeOwned;

use super::*;

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

fn arb_request() -> impl Strategy<Value = JoinRequest> {
    (any::<[u8; 32]>(), ".{0,40}", any::<[u8; 32]>()).prop_map(|(joiner_id, joiner_name, proof)| {
        JoinRequest {
            joiner_id,
            joiner_name,
            proof,
        }
    })
}

fn arb_reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (
            any::<[u8; 16]>(),
            any::<[u8; 32]>(),
            ".{0,40}",
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4)
        )
            .prop_map(|(folder_id, folder_key, inviter_name, proof, later_keys)| {
                Reply::Welcome(Welcome {
                    folder_id,
                    folder_key,
                    inviter_name,
                    proof,
                    later_keys,
                })
            }),
        Just(Reply::Refused(RefuseReason::BadProof.into())),
        Just(Reply::Refused(RefuseReason::AlreadyUsed.into())),
        Just(Reply::Refused(RefuseReason::Denied.into())),
        any::<u64>().prop_map(|within_secs| Reply::Pending { within_secs }),
        any::<u64>().prop_map(|retry_after_secs| Reply::Refused(
            RefuseReason::RateLimited { retry_after_secs }.into()
        )),
    ]
}

/// Decodes `buf` as a `T`, checking what a success may claim.
fn check<T: DeserializeOwned>(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Some((_, used))) = decode_frame::<T>(buf) {
        prop_assert!(used <= buf.len());
        prop_assert!(used <= FRAME_HEADER_LEN + MAX_FRAME_LEN);
        prop_assert!(used > FRAME_HEADER_LEN);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_arbitrary_frames(bytes in prop::collection::vec(any::<u8>(), 0..300),
                             small in any::<bool>()) {
        let mut bytes = bytes;
        // Often announce a length that fits, so the body is parsed.
        if small && bytes.len() >= FRAME_HEADER_LEN {
            let len = (bytes.len() - FRAME_HEADER_LEN) as u32;
            bytes[..FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        }
        check::<JoinRequest>(&bytes)?;
        check::<Reply>(&bytes)?;
    }

    #[test]
    fn fuzz_mutated_frames(req in arb_request(), reply in arb_reply(),
                           muts in prop::collection::vec(arb_mutation(), 1..5)) {
        check::<JoinRequest>(&mutate(encode_frame(&req).unwrap(), &muts))?;
        check::<Reply>(&mutate(encode_frame(&reply).unwrap(), &muts))?;
    }

    #[test]
    fn fuzz_round_trip(req in arb_request(), reply in arb_reply()) {
        let frame = encode_frame(&req).unwrap();
        let got = decode_frame::<JoinRequest>(&frame).unwrap();
        prop_assert_eq!(got, Some((req, frame.len())));
        let frame = encode_frame(&reply).unwrap();
        let got = decode_frame::<Reply>(&frame).unwrap();
        prop_assert_eq!(got, Some((reply, frame.len())));
    }
}
