//! The wire codec: round trips, strictness, sizes.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::{addr, key};
use crate::identity::DeviceId;
use crate::rendezvous::messages::*;

fn register(k: &crate::identity::DeviceKey) -> Register {
    Register {
        id: k.id(),
        public_key: k.public_key(),
        candidates: vec![addr("192.168.1.10:4000"), addr("[fd00::10]:4000")],
        timestamp_ms: 1_735_689_600_123,
        cookie: Some([7; 16]),
        relay: None,
    }
}

fn max_punch() -> Punch {
    let v6: SocketAddr = addr("[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    Punch {
        peer: DeviceId::from_bytes([0xff; 32]),
        peer_public_key: [0xff; 32],
        observed: v6,
        lan: vec![v6; MAX_LAN_CANDIDATES],
        nonce: u64::MAX,
        initiator: true,
        cookie_echo: [0xff; 16],
        peer_relay: Some(v6),
    }
}

fn connect(k: &crate::identity::DeviceKey) -> Connect {
    Connect {
        id: k.id(),
        target: DeviceId::from_bytes([3; 32]),
        nonce: 0x0123_4567_89ab_cdef,
        timestamp_ms: 1_735_689_600_123,
        cookie: [9; 16],
    }
}

#[test]
fn every_message_round_trips() {
    let k = key();
    let reg = register(&k);
    match decode(&reg.encode(&k).unwrap()).unwrap() {
        Message::Register(m) => {
            assert_eq!(m.body, reg);
            m.verify_self_signed().unwrap();
        }
        other => panic!("{other:?}"),
    }
    let c = connect(&k);
    let bytes = c.encode(&k).unwrap();
    assert_eq!(bytes.len(), CONNECT_LEN);
    match decode(&bytes).unwrap() {
        Message::Connect(m) => {
            assert_eq!(m.body, c);
            m.verify(&k.public_key()).unwrap();
        }
        other => panic!("{other:?}"),
    }
    let p = Probe {
        from: k.id(),
        nonce: 42,
        seq: 0x0102,
    };
    match decode(&p.encode_probe(&k).unwrap()).unwrap() {
        Message::Probe(m) => {
            assert_eq!(m.body, p);
            m.verify(&k.public_key()).unwrap();
        }
        other => panic!("{other:?}"),
    }
    match decode(&p.encode_ack(&k).unwrap()).unwrap() {
        Message::ProbeAck(m) => assert_eq!(m.body, p),
        other => panic!("{other:?}"),
    }
    let r = Registered {
        observed: addr("203.0.113.7:5000"),
        echo_ms: 5,
        cookie: [1; 16],
        confirmed: true,
        ttl_secs: 90,
    };
    assert_eq!(decode(&r.encode().unwrap()), Ok(Message::Registered(r)));
    let punch = max_punch();
    assert_eq!(decode(&punch.encode().unwrap()), Ok(Message::Punch(punch)));
    let u = Unknown {
        target: k.id(),
        nonce: 1,
    };
    assert_eq!(decode(&u.encode().unwrap()), Ok(Message::Unknown(u)));
    let e = ErrorReply {
        code: ErrorCode::ClockSkew,
        echo_ms: 1,
        server_ms: 2,
    };
    assert_eq!(decode(&e.encode().unwrap()), Ok(Message::Error(e)));
}

#[test]
fn first_byte_is_in_the_reserved_range() {
    let k = key();
    let samples = [
        register(&k).encode(&k).unwrap(),
        connect(&k).encode(&k).unwrap(),
        max_punch().encode().unwrap(),
        Probe {
            from: k.id(),
            nonce: 1,
            seq: 1,
        }
        .encode_probe(&k)
        .unwrap(),
    ];
    for s in &samples {
        assert!(TYPE_RANGE.contains(&s[0]));
        assert!(is_rendezvous(s));
    }
    // STUN (0..=3), TURN ChannelData (64..=79), QUIC (64..=191) are not ours.
    for b in [0u8, 3, 0x1f, 0x40, 0x4f, 0x80, 0xc0] {
        assert!(!is_rendezvous(&[b, 0, 0]));
    }
    assert!(!is_rendezvous(&[]));
}

#[test]
fn every_truncation_is_rejected() {
    let k = key();
    let samples = [
        register(&k).encode(&k).unwrap(),
        connect(&k).encode(&k).unwrap(),
        max_punch().encode().unwrap(),
        Probe {
            from: k.id(),
            nonce: 1,
            seq: 1,
        }
        .encode_ack(&k)
        .unwrap(),
        Registered {
            observed: addr("203.0.113.7:5000"),
            echo_ms: 5,
            cookie: [1; 16],
            confirmed: false,
            ttl_secs: 90,
        }
        .encode()
        .unwrap(),
    ];
    for s in &samples {
        for len in 0..s.len() {
            assert!(
                decode(&s[..len]).is_err(),
                "prefix of {len}/{} bytes accepted",
                s.len()
            );
        }
    }
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
}

#[test]
fn oversized_and_unknown_types_are_rejected() {
    let mut big = vec![0u8; MAX_DATAGRAM + 1];
    big[0] = MessageType::Register as u8;
    assert_eq!(decode(&big), Err(DecodeError::TooLarge(MAX_DATAGRAM + 1)));
    assert_eq!(decode(&[0x2f, 1, 2]), Err(DecodeError::UnknownType(0x2f)));
    assert_eq!(decode(&[0x00, 1, 2]), Err(DecodeError::UnknownType(0x00)));
    // A valid body under another type byte is garbage for that type.
    let k = key();
    let mut reg = register(&k).encode(&k).unwrap();
    reg[0] = MessageType::Probe as u8;
    assert!(decode(&reg).is_err());
}

#[test]
fn trailing_bytes_and_bad_padding_are_rejected() {
    let k = key();
    let mut r = Unknown {
        target: k.id(),
        nonce: 1,
    }
    .encode()
    .unwrap();
    r.push(0);
    assert_eq!(
        decode(&r),
        Err(DecodeError::Trailing(MessageType::Unknown, 1))
    );
    let mut p = Probe {
        from: k.id(),
        nonce: 1,
        seq: 1,
    }
    .encode_probe(&k)
    .unwrap();
    p.push(0);
    assert_eq!(
        decode(&p),
        Err(DecodeError::Trailing(MessageType::Probe, 1))
    );

    let c = connect(&k).encode(&k).unwrap();
    let mut dirty = c.clone();
    *dirty.last_mut().unwrap() = 1;
    assert_eq!(decode(&dirty), Err(DecodeError::BadPadding));
    assert_eq!(decode(&c[..CONNECT_LEN - 1]), Err(DecodeError::BadPadding));
    let mut long = c.clone();
    long.push(0);
    assert_eq!(decode(&long), Err(DecodeError::BadPadding));
}

#[test]
fn non_canonical_encodings_are_rejected() {
    let k = key();
    let good = Unknown {
        target: k.id(),
        nonce: 5,
    }
    .encode()
    .unwrap();
    // The nonce is the last byte (varint 5); spell it in two bytes (0x85 0x00).
    let mut bad = good[..good.len() - 1].to_vec();
    bad.extend_from_slice(&[0x85, 0x00]);
    assert_eq!(
        decode(&bad),
        Err(DecodeError::Malformed(MessageType::Unknown))
    );
}

#[test]
fn bad_signatures_are_caught() {
    let k = key();
    let other = key();
    // Flipped signature bit.
    let mut bytes = register(&k).encode(&k).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let Ok(Message::Register(m)) = decode(&bytes) else {
        panic!("decodes")
    };
    assert_eq!(m.verify_self_signed(), Err(DecodeError::BadSignature));
    // Changed body byte (the timestamp's first byte sits after id, key and candidates).
    let mut bytes = register(&k).encode(&k).unwrap();
    bytes[1] ^= 1; // first byte of the id: id no longer matches the key
    let Ok(Message::Register(m)) = decode(&bytes) else {
        panic!("decodes")
    };
    assert_eq!(m.verify_self_signed(), Err(DecodeError::IdMismatch));
    // Signed by a key other than the one claimed.
    let mut forged = register(&k);
    forged.public_key = other.public_key();
    forged.id = other.id();
    let Ok(Message::Register(m)) = decode(&forged.encode(&k).unwrap()) else {
        panic!("decodes")
    };
    assert_eq!(m.verify_self_signed(), Err(DecodeError::BadSignature));
    // A probe signed by one device checked against another's key.
    let probe = Probe {
        from: k.id(),
        nonce: 1,
        seq: 1,
    }
    .encode_probe(&k)
    .unwrap();
    let Ok(Message::Probe(m)) = decode(&probe) else {
        panic!("decodes")
    };
    assert_eq!(
        m.verify(&other.public_key()),
        Err(DecodeError::BadSignature)
    );
    // A probe's signature does not make a valid ack: the type byte is signed.
    let mut as_ack = probe.clone();
    as_ack[0] = MessageType::ProbeAck as u8;
    let Ok(Message::ProbeAck(m)) = decode(&as_ack) else {
        panic!("decodes")
    };
    assert_eq!(m.verify(&k.public_key()), Err(DecodeError::BadSignature));
}

#[test]
fn candidate_lists_are_checked() {
    let k = key();
    let mut many = register(&k);
    many.candidates = vec![addr("192.168.1.10:4000"); MAX_LAN_CANDIDATES + 1];
    assert_eq!(
        many.encode(&k),
        Err(EncodeError::TooManyCandidates(MAX_LAN_CANDIDATES + 1))
    );
    // Bypass the encoder's check: the decoder refuses it too.
    let bytes = encode_signed(MessageType::Register, &many, &k, None).unwrap();
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::TooManyCandidates(MAX_LAN_CANDIDATES + 1))
    );
    for bad in [
        "0.0.0.0:4000",
        "224.0.0.1:4000",
        "255.255.255.255:4000",
        "10.0.0.1:0",
        "[::]:1",
        "[ff02::1]:1",
    ] {
        let mut r = register(&k);
        r.candidates = vec![addr(bad)];
        let bytes = r.encode(&k).unwrap();
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::BadCandidate(addr(bad))),
            "{bad}"
        );
        let mut p = max_punch();
        p.observed = addr(bad);
        assert_eq!(
            decode(&p.encode().unwrap()),
            Err(DecodeError::BadCandidate(addr(bad)))
        );
    }
}

#[test]
fn sizes_keep_the_no_amplification_promise() {
    let k = key();
    // The module doc's table says 588.
    assert_eq!(CONNECT_LEN, 588);
    // The largest Punch is exactly the bound it is padded against.
    assert_eq!(max_punch().encode().unwrap().len(), MAX_PUNCH_LEN);
    // Answers to a Register are smaller than the smallest Register.
    let smallest_register = Register {
        id: k.id(),
        public_key: k.public_key(),
        candidates: vec![],
        timestamp_ms: 0,
        cookie: None,
        relay: None,
    }
    .encode(&k)
    .unwrap()
    .len();
    let largest_registered = Registered {
        observed: addr("[2001:db8::1]:65535"),
        echo_ms: u64::MAX,
        cookie: [0xff; 16],
        confirmed: true,
        ttl_secs: u32::MAX,
    }
    .encode()
    .unwrap()
    .len();
    let largest_error = ErrorReply {
        code: ErrorCode::NotRegistered,
        echo_ms: u64::MAX,
        server_ms: u64::MAX,
    }
    .encode()
    .unwrap()
    .len();
    let largest_unknown = Unknown {
        target: k.id(),
        nonce: u64::MAX,
    }
    .encode()
    .unwrap()
    .len();
    assert!(largest_registered < smallest_register);
    assert!(largest_error < smallest_register);
    assert!(largest_unknown < CONNECT_LEN);
    // An ack is exactly as large as the probe it answers.
    let p = Probe {
        from: k.id(),
        nonce: u64::MAX,
        seq: u32::MAX,
    };
    assert_eq!(
        p.encode_probe(&k).unwrap().len(),
        p.encode_ack(&k).unwrap().len()
    );
}

proptest! {
    #[test]
    fn decoding_garbage_never_panics(first in 0x20u8..=0x3f, rest in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let mut d = vec![first];
        d.extend(rest);
        let _ = decode(&d);
    }

    #[test]
    fn punch_round_trips(
        peer in any::<[u8; 32]>(),
        key in any::<[u8; 32]>(),
        nonce in any::<u64>(),
        initiator in any::<bool>(),
        ports in proptest::collection::vec(1u16.., 0..=MAX_LAN_CANDIDATES),
    ) {
        let p = Punch {
            peer: DeviceId::from_bytes(peer),
            peer_public_key: key,
            observed: addr("198.51.100.1:1"),
            lan: ports.iter().map(|&port| SocketAddr::from(([10, 0, 0, 1], port))).collect(),
            nonce,
            initiator,
            cookie_echo: [nonce as u8; 16],
            peer_relay: None,
        };
        let bytes = p.encode().unwrap();
        prop_assert!(bytes.len() <= MAX_PUNCH_LEN);
        prop_assert_eq!(decode(&bytes), Ok(Message::Punch(p)));
    }
}
