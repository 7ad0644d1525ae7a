//! Fuzz-style property tests (issue 11): the ChannelData and Data-indication parsers are fed
//! arbitrary datagrams and mutations of valid ones; they must never panic and what they return
//! must lie inside the datagram.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::channel_data::{
    channel_data_header, decode_channel_data, encode_channel_data, CHANNEL_DATA_HEADER,
    CHANNEL_NUMBERS,
};
use super::indication::{parse_data_indication, push_send_indication};

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

fn arb_peer() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// A Data indication: the Send indication framing with the Data type (same layout).
fn data_indication(peer: SocketAddr, payload: &[u8], tid: [u8; 12]) -> Vec<u8> {
    let mut out = Vec::new();
    push_send_indication(peer, payload, tid, &mut out);
    out[..2].copy_from_slice(&0x0017u16.to_be_bytes());
    out
}

fn check_channel_data(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok((channel, payload)) = decode_channel_data(bytes) {
        prop_assert!(CHANNEL_NUMBERS.contains(&channel));
        prop_assert!(payload.len() + CHANNEL_DATA_HEADER <= bytes.len());
        prop_assert_eq!(payload, &bytes[CHANNEL_DATA_HEADER..][..payload.len()]);
        prop_assert_eq!(channel_data_header(bytes), Ok((channel, payload.len())));
    }
    Ok(())
}

fn check_indication(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Some((_, data)) = parse_data_indication(bytes) {
        prop_assert!(data.len() + 20 <= bytes.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn fuzz_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300),
                            prefix in any::<bool>()) {
        let mut bytes = bytes;
        // Often make the header plausible so the parsers get past their first check.
        if prefix && bytes.len() >= 8 {
            let (len_hi, len_lo) = (bytes[2] % 2, bytes[3]);
            let header = if bytes[0] % 2 == 0 {
                [0x40, bytes[1], len_hi, len_lo, bytes[4], bytes[5], bytes[6], bytes[7]]
            } else {
                [0x00, 0x17, len_hi, len_lo, 0x21, 0x12, 0xA4, 0x42]
            };
            bytes[..8].copy_from_slice(&header);
        }
        check_channel_data(&bytes)?;
        check_indication(&bytes)?;
    }

    #[test]
    fn fuzz_mutated_channel_data(channel in CHANNEL_NUMBERS,
                                 payload in prop::collection::vec(any::<u8>(), 0..200),
                                 muts in prop::collection::vec(arb_mutation(), 1..5)) {
        let mut valid = Vec::new();
        encode_channel_data(channel, &payload, &mut valid).unwrap();
        prop_assert_eq!(decode_channel_data(&valid), Ok((channel, &payload[..])));
        check_channel_data(&mutate(valid, &muts))?;
    }

    #[test]
    fn fuzz_mutated_data_indication(peer in arb_peer(),
                                    payload in prop::collection::vec(any::<u8>(), 0..200),
                                    tid in any::<[u8; 12]>(),
                                    muts in prop::collection::vec(arb_mutation(), 1..5)) {
        let valid = data_indication(peer, &payload, tid);
        prop_assert_eq!(parse_data_indication(&valid), Some((peer, &payload[..])));
        check_indication(&mutate(valid, &muts))?;
    }
}
