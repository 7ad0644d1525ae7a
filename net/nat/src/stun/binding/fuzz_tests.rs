//! Fuzz-style property tests (issue 11): Binding answers are fed arbitrary datagrams and
//! mutations of valid responses; parsing must never panic.

use std::net::SocketAddr;

use proptest::prelude::*;
use stun_rs::attributes::stun::ErrorCode as ErrorCodeAttr;

use super::*;

const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3478);

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

/// A valid Binding answer: success with XOR-MAPPED-ADDRESS or MAPPED-ADDRESS, or an error.
fn response(tid: [u8; 12], addr: SocketAddr, kind: u8) -> Vec<u8> {
    let class = if kind == 2 {
        MessageClass::ErrorResponse
    } else {
        MessageClass::SuccessResponse
    };
    let msg = StunMessageBuilder::new(BINDING, class).with_transaction_id(TransactionId::from(tid));
    let msg = match kind {
        0 => msg.with_attribute(XorMappedAddress::from(addr)),
        1 => msg.with_attribute(MappedAddress::from(addr)),
        _ => msg.with_attribute(ErrorCodeAttr::from(
            stun_rs::ErrorCode::new(400, "Bad Request").expect("code"),
        )),
    };
    encode(&msg.build()).expect("encode")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_arbitrary_answers(bytes in prop::collection::vec(any::<u8>(), 0..300),
                              tid in any::<[u8; 12]>(), stun_header in any::<bool>()) {
        let mut bytes = bytes;
        // Often a plausible header (type, length, magic cookie, our tid), so attributes are read.
        if stun_header && bytes.len() >= 20 {
            let len = ((bytes.len() - 20) as u16).to_be_bytes();
            let head = [0x01, 0x01, len[0], len[1], 0x21, 0x12, 0xA4, 0x42];
            bytes[..8].copy_from_slice(&head);
            bytes[8..20].copy_from_slice(&tid);
        }
        let _ = parse_binding_response(SERVER, tid, &bytes);
        let _ = decode_reply(tid, &bytes, &MessageDecoderBuilder::default().build())
            .map(|m| error_code(&m));
    }

    #[test]
    fn fuzz_mutated_answers(tid in any::<[u8; 12]>(), addr in any::<SocketAddr>(), kind in 0u8..3,
                            muts in prop::collection::vec(arb_mutation(), 1..5)) {
        let bad = mutate(response(tid, addr, kind), &muts);
        let _ = parse_binding_response(SERVER, tid, &bad);
    }

    #[test]
    fn fuzz_round_trip(tid in any::<[u8; 12]>(), addr in any::<SocketAddr>(), kind in 0u8..3) {
        let got = parse_binding_response(SERVER, tid, &response(tid, addr, kind));
        match kind {
            2 => {
                let rejected = matches!(got, Err(StunError::Rejected { code: 400, .. }));
                prop_assert!(rejected);
            }
            _ => {
                let want = match addr {
                    SocketAddr::V6(a) => SocketAddr::new((*a.ip()).into(), a.port()),
                    a => a,
                };
                prop_assert_eq!(got.ok(), Some(want));
            }
        }
    }
}
