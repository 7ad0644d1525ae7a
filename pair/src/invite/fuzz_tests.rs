//! Fuzz-style property tests (issue 11): the `fybrk1:` text, its base32 and the binary body are
//! fed arbitrary input and mutations of valid invitations; decoding must never panic and what it
//! returns stays within the format's limits.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;
use crate::MAX_NAME_LEN;

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

fn arb_invitation() -> impl Strategy<Value = Invitation> {
    let rendezvous = prop_oneof![
        Just(None),
        any::<SocketAddr>().prop_map(|a| Some(Rendezvous::Addr(a))),
        ("[a-z0-9.-]{1,30}", any::<u16>())
            .prop_map(|(h, p)| HostPort::new(&h, p).ok().map(Rendezvous::Host)),
    ];
    (
        any::<[u8; 32]>(),
        ".{0,40}",
        prop::collection::vec(any::<SocketAddr>(), 0..12),
        rendezvous,
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        0u64..(1 << 40),
    )
        .prop_map(|(inviter, name, addrs, rv, folder, secret, now)| {
            let mut inv = Invitation::new(inviter, &name, &addrs, rv, folder, now)
                .expect("random source works");
            inv.secret = secret;
            inv
        })
}

fn check_bounded(text: &str) -> Result<(), TestCaseError> {
    if let Ok(inv) = Invitation::decode(text) {
        prop_assert_eq!(inv.version, INVITE_VERSION);
        prop_assert!(inv.addrs.len() <= MAX_ADDRS);
        prop_assert!(inv.inviter_name.len() <= MAX_NAME_LEN);
        // One invitation has exactly one text: what decodes re-encodes to a text that decodes
        // to the same invitation.
        prop_assert_eq!(Invitation::decode(&inv.encode()).ok(), Some(inv));
    }
    let _ = Invitation::parse(text, u64::MAX);
    Ok(())
}

/// The text of a (possibly damaged) body, with a checksum that matches, so the body parser is
/// reached.
fn text_of_body(body: &[u8]) -> String {
    let mut data = body.to_vec();
    data.extend_from_slice(&checksum(body));
    format!("{PREFIX}{}", base32::encode(&data))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_arbitrary_text(text in ".{0,200}", b32 in "[A-Za-z2-7 ]{0,200}") {
        check_bounded(&text)?;
        check_bounded(&format!("{PREFIX}{b32}"))?;
        if let Ok(data) = base32::decode(&b32) {
            prop_assert!(data.len() <= b32.len());
            prop_assert_eq!(base32::decode(&base32::encode(&data)), Ok(data));
        }
        if let Ok(data) = base32::decode_lossy(&b32) {
            prop_assert!(data.len() <= b32.len());
        }
    }

    #[test]
    fn fuzz_arbitrary_body(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut body = body;
        if let Some(v) = body.first_mut() {
            *v = INVITE_VERSION;
        }
        check_bounded(&text_of_body(&body))?;
    }

    #[test]
    fn fuzz_mutated_text(inv in arb_invitation(),
                         muts in prop::collection::vec(arb_mutation(), 1..5)) {
        let bad = mutate(inv.encode().into_bytes(), &muts);
        check_bounded(&String::from_utf8_lossy(&bad))?;
    }

    #[test]
    fn fuzz_mutated_body(inv in arb_invitation(),
                         muts in prop::collection::vec(arb_mutation(), 1..5)) {
        let bad = mutate(body::write(&inv), &muts);
        check_bounded(&text_of_body(&bad))?;
    }

    #[test]
    fn fuzz_round_trip(inv in arb_invitation(), data in prop::collection::vec(any::<u8>(), 0..100)) {
        prop_assert_eq!(Invitation::decode(&inv.encode()).ok(), Some(inv.clone()));
        prop_assert_eq!(Invitation::decode(&inv.encode_qr()).ok(), Some(inv));
        prop_assert_eq!(base32::decode(&base32::encode(&data)), Ok(data));
    }
}
