//! Fuzz-style property tests (issue 11): TURN answers are fed to `Credentials::judge`, before and
//! after the 401 challenge, as arbitrary datagrams and as mutations of valid answers; judging
//! must never panic.

use std::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;
use stun_rs::attributes::stun::{ErrorCode as ErrorCodeAttr, XorMappedAddress};
use stun_rs::attributes::turn::XorRelayedAddress;

use super::*;

const USER: &str = "alice";
const PASS: &str = "secret";
const REALM: &str = "example.org";
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478);

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

fn answer(tid: [u8; 12], class: MessageClass, attrs: Vec<StunAttribute>, sign: bool) -> Vec<u8> {
    let mut msg =
        StunMessageBuilder::new(ALLOCATE, class).with_transaction_id(TransactionId::from(tid));
    for attr in attrs {
        msg = msg.with_attribute(attr);
    }
    if sign {
        let key = HMACKey::new_long_term(USER, REALM, PASS, Algorithm::from(AlgorithmId::MD5))
            .expect("key");
        msg = msg.with_attribute(MessageIntegrity::new(key));
    }
    encode(&msg.build()).expect("encode")
}

fn challenge(tid: [u8; 12], code: u16, nonce: &str) -> Vec<u8> {
    let attrs = vec![
        ErrorCodeAttr::from(stun_rs::ErrorCode::new(code, "Unauthorized").expect("code")).into(),
        Realm::new(REALM).expect("realm").into(),
        Nonce::new(nonce).expect("nonce").into(),
    ];
    answer(tid, MessageClass::ErrorResponse, attrs, false)
}

fn allocated(tid: [u8; 12], relayed: SocketAddr, lifetime: u32) -> Vec<u8> {
    let attrs = vec![
        XorRelayedAddress::from(relayed).into(),
        XorMappedAddress::from(relayed).into(),
        LifeTime::new(lifetime).into(),
    ];
    answer(tid, MessageClass::SuccessResponse, attrs, true)
}

/// Credentials after the first challenge, and the authenticated try now in flight.
fn challenged(tid: [u8; 12]) -> (Credentials, Try) {
    let mut creds = Credentials::new(SERVER, USER.into(), PASS.into());
    let (mut first, _) = creds.first_try(&Ask::Allocate, [1; 12]).expect("build");
    let verdict = creds.judge(
        &Ask::Allocate,
        &mut first,
        &challenge([1; 12], 401, "n1"),
        &mut 0,
    );
    assert!(matches!(verdict, Verdict::TryAgain));
    let (second, _) = creds
        .retry(&Ask::Allocate, &first, tid)
        .expect("build retry");
    (creds, second)
}

/// Judges `data` with and without credentials; a grant's lifetime is read as the driver does.
fn judge_both(tid: [u8; 12], data: &[u8]) {
    let mut fresh = Credentials::new(SERVER, USER.into(), PASS.into());
    if let Ok((mut t, _)) = fresh.first_try(&Ask::Allocate, tid) {
        if let Verdict::Granted(m) = fresh.judge(&Ask::Allocate, &mut t, data, &mut 0) {
            let _ = granted_lifetime(&m);
        }
        // Whatever was learned must still build a request.
        let _ = fresh.retry(&Ask::Allocate, &t, tid);
    }
    let (mut creds, mut t) = challenged(tid);
    let mut stale = 0;
    if let Verdict::Granted(m) = creds.judge(&Ask::Allocate, &mut t, data, &mut stale) {
        let _ = granted_lifetime(&m);
    }
    assert!(stale <= 1);
    let _ = creds.retry(&Ask::Allocate, &t, tid);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fuzz_arbitrary_answers(bytes in prop::collection::vec(any::<u8>(), 0..300),
                              tid in any::<[u8; 12]>(), class in 0u8..4) {
        let mut bytes = bytes;
        // Usually a plausible Allocate answer header, so the attributes are read.
        if class > 0 && bytes.len() >= 20 {
            let len = ((bytes.len() - 20) as u16).to_be_bytes();
            let ty = if class == 1 { 0x0103 } else { 0x0113u16 }.to_be_bytes();
            bytes[..8].copy_from_slice(&[ty[0], ty[1], len[0], len[1], 0x21, 0x12, 0xA4, 0x42]);
            bytes[8..20].copy_from_slice(&tid);
        }
        judge_both(tid, &bytes);
    }

    #[test]
    fn fuzz_mutated_answers(tid in any::<[u8; 12]>(), relayed in any::<SocketAddr>(),
                            lifetime in any::<u32>(), which in 0u8..3, nonce in "[a-z0-9]{1,20}",
                            muts in prop::collection::vec(arb_mutation(), 1..5)) {
        let valid = match which {
            0 => allocated(tid, relayed, lifetime),
            1 => challenge(tid, 401, &nonce),
            _ => challenge(tid, 438, &nonce),
        };
        judge_both(tid, &mutate(valid, &muts));
    }

    #[test]
    fn fuzz_round_trip(tid in any::<[u8; 12]>(), relayed in any::<SocketAddr>(),
                       lifetime in any::<u32>(), nonce in "[a-z0-9]{1,20}") {
        let (mut creds, mut t) = challenged(tid);
        let mut stale = 0;
        let verdict = creds.judge(&Ask::Allocate, &mut t, &challenge(tid, 438, &nonce), &mut stale);
        prop_assert!(matches!(verdict, Verdict::TryAgain));
        prop_assert_eq!(stale, 1);
        let (mut next, _) = creds.retry(&Ask::Allocate, &t, tid).unwrap();
        match creds.judge(&Ask::Allocate, &mut next, &allocated(tid, relayed, lifetime), &mut stale) {
            Verdict::Granted(m) => {
                prop_assert_eq!(granted_lifetime(&m), Some(Duration::from_secs(u64::from(lifetime))));
            }
            _ => prop_assert!(false, "a signed success is granted"),
        }
    }
}
