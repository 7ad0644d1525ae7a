//! Fuzz-style property tests (issue 11): `decode` is fed arbitrary datagrams and mutations of
//! valid ones (signed and unsigned); it must never panic and what it returns stays bounded.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;

static KEY: LazyLock<DeviceKey> = LazyLock::new(|| DeviceKey::generate().expect("generate key"));

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

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| {
        let ip = Ipv4Addr::from(ip);
        let ip = if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            Ipv4Addr::new(10, 0, 0, 1)
        } else {
            ip
        };
        SocketAddr::from((ip, port))
    })
}

fn usable(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addrs.into_iter().filter(is_usable_candidate).collect()
}

/// A valid encoding of every message type, built from generated fields.
fn arb_datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..8,
        prop::collection::vec(arb_addr(), 0..=MAX_LAN_CANDIDATES),
        arb_addr(),
        any::<u64>(),
        any::<u32>(),
        any::<[u8; 16]>(),
        any::<bool>(),
    )
        .prop_map(|(which, addrs, a, n, s, cookie, flag)| {
            let key = &*KEY;
            let addrs = usable(addrs);
            let a = if is_usable_candidate(&a) {
                a
            } else {
                SocketAddr::from(([10, 0, 0, 1], 1))
            };
            let probe = Probe {
                from: key.id(),
                nonce: n,
                seq: s,
            };
            let out = match which {
                0 => Register {
                    id: key.id(),
                    public_key: key.public_key(),
                    candidates: addrs,
                    timestamp_ms: n,
                    cookie: flag.then_some(cookie),
                    relay: flag.then_some(a),
                }
                .encode(key),
                1 => Registered {
                    observed: a,
                    echo_ms: n,
                    cookie,
                    confirmed: flag,
                    ttl_secs: s,
                }
                .encode(),
                2 => Connect {
                    id: key.id(),
                    target: DeviceId::from_bytes([s as u8; 32]),
                    nonce: n,
                    timestamp_ms: n / 3,
                    cookie,
                }
                .encode(key),
                3 => Punch {
                    peer: key.id(),
                    peer_public_key: key.public_key(),
                    observed: a,
                    lan: addrs,
                    nonce: n,
                    initiator: flag,
                    cookie_echo: cookie,
                    peer_relay: flag.then_some(a),
                }
                .encode(),
                4 => Unknown {
                    target: key.id(),
                    nonce: n,
                }
                .encode(),
                5 => ErrorReply {
                    code: ErrorCode::Full,
                    echo_ms: n,
                    server_ms: u64::from(s),
                }
                .encode(),
                6 => probe.encode_probe(key),
                _ => probe.encode_ack(key),
            };
            out.expect("valid message encodes")
        })
}

/// What a decoded message may hold, given the datagram it came from.
fn check_bounded(datagram: &[u8], msg: &Message) -> Result<(), TestCaseError> {
    prop_assert!(datagram.len() <= MAX_DATAGRAM);
    let signed_len = match msg {
        Message::Register(m) => {
            prop_assert!(m.body.candidates.len() <= MAX_LAN_CANDIDATES);
            prop_assert!(m.body.candidates.iter().all(is_usable_candidate));
            m.signed.len()
        }
        Message::Connect(m) => {
            prop_assert_eq!(datagram.len(), CONNECT_LEN);
            m.signed.len()
        }
        Message::Punch(m) => {
            prop_assert!(m.lan.len() <= MAX_LAN_CANDIDATES);
            prop_assert!(is_usable_candidate(&m.observed));
            0
        }
        Message::Probe(m) | Message::ProbeAck(m) => m.signed.len(),
        _ => 0,
    };
    prop_assert!(signed_len + SIGNATURE_LEN <= datagram.len() || signed_len == 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_arbitrary_datagrams(bytes in prop::collection::vec(any::<u8>(), 0..1300),
                                first in 0u8..=255) {
        // Half the time force a known type byte, so the body parsers are reached.
        let mut bytes = bytes;
        if let Some(b) = bytes.first_mut() {
            if first % 2 == 0 {
                *b = [0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x30, 0x31][usize::from(first / 2 % 8)];
            }
        }
        if let Ok(m) = decode(&bytes) {
            check_bounded(&bytes, &m)?;
        }
    }

    #[test]
    fn fuzz_mutated_datagrams(valid in arb_datagram(),
                              muts in prop::collection::vec(arb_mutation(), 1..5)) {
        let bad = mutate(valid, &muts);
        if let Ok(m) = decode(&bad) {
            check_bounded(&bad, &m)?;
            // A mutated signed message verifies only if the signed bytes came through intact.
            let _ = match &m {
                Message::Register(s) => s.verify_self_signed(),
                Message::Connect(s) => s.verify(&KEY.public_key()),
                Message::Probe(s) | Message::ProbeAck(s) => s.verify(&KEY.public_key()),
                _ => Ok(()),
            };
        }
    }

    #[test]
    fn fuzz_round_trip(valid in arb_datagram()) {
        let m = decode(&valid).expect("a valid encoding decodes");
        check_bounded(&valid, &m)?;
        let key = &*KEY;
        // Re-encoding the decoded body gives the same bytes, and signatures hold.
        let again = match &m {
            Message::Register(s) => {
                prop_assert_eq!(s.verify_self_signed(), Ok(()));
                s.body.encode(key)
            }
            Message::Registered(b) => b.encode(),
            Message::Connect(s) => {
                prop_assert_eq!(s.verify(&key.public_key()), Ok(()));
                s.body.encode(key)
            }
            Message::Punch(b) => b.encode(),
            Message::Unknown(b) => b.encode(),
            Message::Error(b) => b.encode(),
            Message::Probe(s) => {
                prop_assert_eq!(s.verify(&key.public_key()), Ok(()));
                s.body.encode_probe(key)
            }
            Message::ProbeAck(s) => {
                prop_assert_eq!(s.verify(&key.public_key()), Ok(()));
                s.body.encode_ack(key)
            }
        };
        prop_assert_eq!(decode(&again.expect("re-encodes")).expect("decodes"), m);
    }
}
