//! The handshake driven with a fake clock, through real frames, as the daemon will drive it.

use proptest::prelude::*;

use super::*;

const T0: u64 = 1_750_000_000;
const INVITER_ID: [u8; 32] = [0x11; 32];
const JOINER_ID: [u8; 32] = [0x22; 32];
const FOLDER_KEY: [u8; 32] = [0x33; 32];
const BINDING: [u8; 32] = [0x44; 32];

fn invitation() -> Invitation {
    let addrs = ["192.0.2.1:4000".parse().unwrap()];
    Invitation::new(INVITER_ID, "inviter", &addrs, None, [0x55; 16], T0).unwrap()
}

/// One pairing over "one connection": the joiner's request and the inviter's reply both cross a
/// frame encoder and decoder, like on the QUIC stream.
fn exchange(
    joiner: &mut JoinerSession,
    inviter: &mut InviterSession,
    binding: &[u8; 32],
    now: u64,
) -> (Result<Welcome, PairError>, Option<JoinedPeer>) {
    let frame = encode_frame(&joiner.request(binding)).unwrap();
    let (req, _) = decode_frame::<JoinRequest>(&frame).unwrap().unwrap();
    let (reply, peer) = match inviter.handle_join(&req, binding, &req.joiner_id, now) {
        Ok((welcome, peer)) => (Reply::Welcome(welcome), Some(peer)),
        Err(refused) => (Reply::Refused(refused), None),
    };
    let frame = encode_frame(&reply).unwrap();
    let (reply, _) = decode_frame::<Reply>(&frame).unwrap().unwrap();
    let answer = joiner
        .handle_reply(reply)
        .map(|w| w.expect("handle_join answers at once"));
    (answer, peer)
}

fn refused(reason: RefuseReason) -> Refused {
    Refused { reason }
}

#[test]
fn right_secret_works_once() {
    let inv = invitation();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
    let mut joiner = JoinerSession::new(&inv, JOINER_ID, "laptop");
    assert_eq!(joiner.inviter_id(), &INVITER_ID);

    let (welcome, peer) = exchange(&mut joiner, &mut inviter, &BINDING, T0 + 5);
    let welcome = welcome.unwrap();
    assert_eq!(welcome.folder_id, inv.folder);
    assert_eq!(welcome.folder_key, FOLDER_KEY);
    assert_eq!(welcome.inviter_name, "inviter");
    assert_eq!(
        peer,
        Some(JoinedPeer {
            id: JOINER_ID,
            name: "laptop".into()
        })
    );
    assert_eq!(inviter.used_by().map(|p| p.id), Some(JOINER_ID));
    assert!(!inviter.is_open(T0 + 6));

    // Second use, even by the same device on a new connection: refused.
    let (again, peer) = exchange(&mut joiner, &mut inviter, &[0x45; 32], T0 + 10);
    assert!(matches!(again, Err(PairError::AlreadyUsed)), "{again:?}");
    assert!(peer.is_none());
    let mut other = JoinerSession::new(&inv, [0x66; 32], "phone");
    let (third, _) = exchange(&mut other, &mut inviter, &[0x46; 32], T0 + 11);
    let err = third.unwrap_err();
    assert!(matches!(err, PairError::AlreadyUsed));
    assert!(err.to_string().contains("fybrk pair"), "{err}");
}

#[test]
fn wrong_secret_is_bad_proof() {
    let inv = invitation();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
    let mut stale = inv.clone();
    stale.secret = [0; 16];
    let mut joiner = JoinerSession::new(&stale, JOINER_ID, "laptop");
    let (result, peer) = exchange(&mut joiner, &mut inviter, &BINDING, T0);
    assert!(matches!(result, Err(PairError::BadProof)), "{result:?}");
    assert!(peer.is_none());
    assert!(inviter.is_open(T0));
}

/// Wrong proofs are the daemon's to limit, per source and claimed id (`BadProofs`); the
/// invitation itself never locks out the right secret, however many wrong ones came first.
#[test]
fn wrong_proofs_never_lock_out_the_right_one() {
    let inv = invitation();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
    let mut guesser = inv.clone();
    guesser.secret = [9; 16];
    let mut bad = JoinerSession::new(&guesser, [0x77; 32], "guesser");
    let mut good = JoinerSession::new(&inv, JOINER_ID, "laptop");
    for i in 0..50u64 {
        let (r, _) = exchange(&mut bad, &mut inviter, &[i as u8; 32], T0 + i / 10);
        assert!(matches!(r, Err(PairError::BadProof)), "attempt {i}: {r:?}");
    }
    assert!(inviter.is_open(T0 + 5), "wrong proofs do not use it up");
    let (r, peer) = exchange(&mut good, &mut inviter, &[0xA3; 32], T0 + 5);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(peer.map(|p| p.id), Some(JOINER_ID));
}

#[test]
fn expired_is_refused_by_the_inviters_clock() {
    let inv = invitation();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
    let mut joiner = JoinerSession::new(&inv, JOINER_ID, "laptop");
    assert_eq!(inviter.expires_unix(), T0 + crate::INVITE_TTL_SECS);
    for now in [inv.expires_unix, inv.expires_unix + 1000] {
        let (r, _) = exchange(&mut joiner, &mut inviter, &BINDING, now);
        let err = r.unwrap_err();
        assert!(matches!(err, PairError::Expired), "{err:?}");
        assert!(err.to_string().contains("fybrk pair"), "{err}");
    }
    // One second before: still fine.
    let (r, _) = exchange(&mut joiner, &mut inviter, &BINDING, inv.expires_unix - 1);
    assert!(r.is_ok());
}

#[test]
fn a_proof_from_another_connection_is_refused() {
    let inv = invitation();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
    let mut joiner = JoinerSession::new(&inv, JOINER_ID, "laptop");
    // A relay records the request made on connection A and replays it on its own connection B.
    let captured = joiner.request(&[0xAA; 32]);
    let result = inviter.handle_join(&captured, &[0xBB; 32], &JOINER_ID, T0);
    assert_eq!(result.unwrap_err(), refused(RefuseReason::BadProof));
    assert!(inviter.is_open(T0));
    // The genuine joiner on its own connection still succeeds.
    let (r, _) = exchange(&mut joiner, &mut inviter, &[0xCC; 32], T0 + 1);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_request_for_another_device_than_the_connections_is_refused() {
    let inv = invitation();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
    let mut joiner = JoinerSession::new(&inv, JOINER_ID, "laptop");
    let req = joiner.request(&BINDING);
    // Right proof, but the TLS peer on this connection is some other device.
    let result = inviter.handle_join(&req, &BINDING, &[0x99; 32], T0);
    assert_eq!(result.unwrap_err(), refused(RefuseReason::BadProof));
}

#[test]
fn joiner_checks_the_welcome() {
    let inv = invitation();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
    let mut joiner = JoinerSession::new(&inv, JOINER_ID, "laptop");
    assert!(matches!(
        joiner.handle_reply(Reply::Refused(refused(RefuseReason::Expired))),
        Err(PairError::NoRequest)
    ));
    let req = joiner.request(&BINDING);
    let (welcome, _) = inviter.handle_join(&req, &BINDING, &JOINER_ID, T0).unwrap();

    // A device that never saw the invitation cannot forge the inviter's proof.
    let mut forged = welcome.clone();
    forged.proof = [0; 32];
    let err = joiner.handle_reply(Reply::Welcome(forged)).unwrap_err();
    assert!(matches!(err, PairError::InviterNotAuthentic), "{err:?}");
    // The inviter's proof from another connection does not count either.
    let mut replayed = welcome.clone();
    replayed.proof = proof(&inv.secret, &[0xEE; 32], Role::Inviter, &JOINER_ID);
    assert!(matches!(
        joiner.handle_reply(Reply::Welcome(replayed)),
        Err(PairError::InviterNotAuthentic)
    ));
    // Nor does the joiner's own proof reflected back.
    let mut reflected = welcome.clone();
    reflected.proof = req.proof;
    assert!(matches!(
        joiner.handle_reply(Reply::Welcome(reflected)),
        Err(PairError::InviterNotAuthentic)
    ));
    let mut other_folder = welcome.clone();
    other_folder.folder_id = [0; 16];
    assert!(matches!(
        joiner.handle_reply(Reply::Welcome(other_folder)),
        Err(PairError::WrongFolder)
    ));
    let mut escaping = welcome.clone();
    escaping.inviter_name = "\x1b]0;pwned\x07".into();
    let accepted = joiner
        .handle_reply(Reply::Welcome(escaping))
        .unwrap()
        .unwrap();
    assert_eq!(accepted.inviter_name, "?]0;pwned?");
    assert_eq!(
        joiner
            .handle_reply(Reply::Welcome(welcome.clone()))
            .unwrap(),
        Some(welcome)
    );
}

/// The request path a person approves: both ends show the same words, nothing is handed over
/// before approval, and a denial, a timeout or a cancel ends the invitation for everyone.
#[test]
fn a_valid_request_waits_for_the_user() {
    let inv = invitation();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]).with_approval_window(30);
    let mut joiner = JoinerSession::new(&inv, JOINER_ID, "laptop");
    let req = joiner.request(&BINDING);
    let pending = inviter
        .handle_request(&req, &BINDING, &JOINER_ID, T0)
        .unwrap();
    assert_eq!(pending.peer.name, "laptop");
    assert_eq!(
        Some(pending.code.clone()),
        joiner.code(),
        "both screens agree"
    );
    assert_eq!(pending.deadline_unix, T0 + 30);
    assert_eq!(inviter.pending(), Some(&pending));
    assert!(!inviter.is_open(T0) && inviter.used_by().is_none());
    assert!(matches!(
        joiner.handle_reply(Reply::Pending { within_secs: 30 }),
        Ok(None)
    ));

    // Someone else with the same invitation meanwhile: refused, the pending one stays.
    let mut other = JoinerSession::new(&inv, [0x77; 32], "stranger");
    let req2 = other.request(&[0x45; 32]);
    let r = inviter.handle_request(&req2, &[0x45; 32], &[0x77; 32], T0 + 1);
    assert_eq!(r, Err(refused(RefuseReason::AlreadyUsed)));
    assert_ne!(
        other.code(),
        joiner.code(),
        "another connection, other words"
    );

    assert_eq!(inviter.poll_timeout(T0 + 29), None);
    let (welcome, peer) = inviter.approve(T0 + 29).unwrap();
    assert_eq!(peer.id, JOINER_ID);
    assert_eq!(inviter.used_by(), Some(&peer));
    let got = joiner
        .handle_reply(Reply::Welcome(welcome))
        .unwrap()
        .unwrap();
    assert_eq!(got.folder_key, FOLDER_KEY);
    assert_eq!(
        inviter.approve(T0 + 29),
        Err(refused(RefuseReason::Cancelled))
    );
}

#[test]
fn deny_timeout_and_cancel_end_the_invitation() {
    let inv = invitation();
    let request = |inviter: &mut InviterSession, now| {
        let mut joiner = JoinerSession::new(&inv, JOINER_ID, "laptop");
        let req = joiner.request(&BINDING);
        inviter.handle_request(&req, &BINDING, &JOINER_ID, now)
    };

    let mut denied = InviterSession::new(&inv, FOLDER_KEY, &[]);
    request(&mut denied, T0).unwrap();
    assert_eq!(denied.deny().map(|p| p.id), Some(JOINER_ID));
    assert_eq!(denied.ended(), Some(RefuseReason::Denied));
    assert_eq!(denied.deny(), None);
    assert_eq!(denied.approve(T0), Err(refused(RefuseReason::Cancelled)));
    assert_eq!(
        request(&mut denied, T0 + 1),
        Err(refused(RefuseReason::Cancelled)),
        "a denied invitation takes no new request"
    );

    let mut late = InviterSession::new(&inv, FOLDER_KEY, &[]).with_approval_window(10);
    request(&mut late, T0).unwrap();
    assert_eq!(late.poll_timeout(T0 + 9), None);
    assert_eq!(late.poll_timeout(T0 + 10).map(|p| p.id), Some(JOINER_ID));
    assert_eq!(late.ended(), Some(RefuseReason::TimedOut));
    let mut slow = InviterSession::new(&inv, FOLDER_KEY, &[]).with_approval_window(10);
    request(&mut slow, T0).unwrap();
    assert_eq!(
        slow.approve(T0 + 10),
        Err(refused(RefuseReason::TimedOut)),
        "approving after the deadline is too late, even before a poll"
    );

    let mut cancelled = InviterSession::new(&inv, FOLDER_KEY, &[]);
    assert_eq!(cancelled.cancel(), None);
    assert_eq!(
        request(&mut cancelled, T0),
        Err(refused(RefuseReason::Cancelled))
    );
    let mut waiting = InviterSession::new(&inv, FOLDER_KEY, &[]);
    request(&mut waiting, T0).unwrap();
    assert_eq!(waiting.cancel().map(|p| p.id), Some(JOINER_ID));
    let mut used = InviterSession::new(&inv, FOLDER_KEY, &[]);
    request(&mut used, T0).unwrap();
    used.approve(T0).unwrap();
    assert_eq!(used.cancel(), None, "a used invitation stays used");
    assert!(used.used_by().is_some());
}

#[test]
fn joiner_names_are_sanitised_for_the_inviters_prompt() {
    let inv = invitation();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
    let mut joiner = JoinerSession::new(&inv, JOINER_ID, "ok");
    let mut req = joiner.request(&BINDING);
    req.joiner_name = format!("\u{202E}{}", "x".repeat(100));
    let (_, peer) = inviter.handle_join(&req, &BINDING, &JOINER_ID, T0).unwrap();
    assert!(peer.name.starts_with('?'));
    assert_eq!(peer.name.len(), crate::MAX_NAME_LEN);
}

#[test]
fn refusals_tell_the_user_what_to_do() {
    let limited = PairError::from(RefuseReason::RateLimited {
        retry_after_secs: 42,
    });
    assert!(
        limited.to_string().contains("try again in 42 s"),
        "{limited}"
    );
    for reason in [
        RefuseReason::BadProof,
        RefuseReason::Expired,
        RefuseReason::AlreadyUsed,
        RefuseReason::Denied,
        RefuseReason::TimedOut,
        RefuseReason::Cancelled,
    ] {
        let msg = PairError::from(reason).to_string();
        assert!(msg.contains("fybrk pair"), "{msg}");
    }
}

#[test]
fn the_gate_limits_attempts_across_invitations() {
    let mut gate = PairingGate::default();
    for i in 0..GATE_MAX_ATTEMPTS as u64 {
        assert!(gate.admit(T0 + i / 2).is_ok());
    }
    let refused = gate.admit(T0 + 10).unwrap_err();
    assert_eq!(
        refused.reason,
        RefuseReason::RateLimited {
            retry_after_secs: GATE_WINDOW_SECS - 10
        }
    );
    assert!(gate.admit(T0 + GATE_WINDOW_SECS).is_ok());
}

#[test]
fn debug_hides_secrets() {
    let inv = invitation();
    let inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
    let joiner = JoinerSession::new(&inv, JOINER_ID, "laptop");
    for shown in [format!("{inviter:?}"), format!("{joiner:?}")] {
        assert!(
            !shown.contains("51, 51") && !shown.contains("secret"),
            "{shown}"
        );
    }
}

/// One attempt in a random sequence.
#[derive(Debug, Clone)]
struct Attempt {
    right_secret: bool,
    same_binding_as_proof: bool,
    advance_secs: u64,
}

fn arb_attempt() -> impl Strategy<Value = Attempt> {
    (any::<bool>(), prop::bool::weighted(0.9), 0..40u64).prop_map(|(r, b, a)| Attempt {
        right_secret: r,
        same_binding_as_proof: b,
        advance_secs: a,
    })
}

proptest! {
    /// Against any sequence of attempts: at most one join ever succeeds, only with the right
    /// secret on the right connection, before expiry; wrong proofs never stop it.
    #[test]
    fn model(attempts in proptest::collection::vec(arb_attempt(), 1..60)) {
        let inv = invitation();
        let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &[]);
        let mut wrong = inv.clone();
        wrong.secret[0] ^= 1;
        let mut now = T0;
        let mut successes = 0;
        for (i, a) in attempts.iter().enumerate() {
            now += a.advance_secs;
            let source = if a.right_secret { &inv } else { &wrong };
            let mut joiner = JoinerSession::new(source, JOINER_ID, "j");
            let binding = [i as u8; 32];
            let req = joiner.request(&binding);
            let on = if a.same_binding_as_proof { binding } else { [0xFF; 32] };
            let result = inviter.handle_join(&req, &on, &JOINER_ID, now);

            let expected = if now >= inv.expires_unix {
                Err(RefuseReason::Expired)
            } else if successes > 0 {
                Err(RefuseReason::AlreadyUsed)
            } else if a.right_secret && a.same_binding_as_proof {
                Ok(())
            } else {
                Err(RefuseReason::BadProof)
            };
            match (result, expected) {
                (Ok(_), Ok(())) => successes += 1,
                (Err(got), Err(want)) => prop_assert_eq!(got.reason, want),
                (got, want) => prop_assert!(false, "attempt {}: got {:?}, want {:?}", i, got, want),
            }
        }
        prop_assert!(successes <= 1);
    }
}

#[test]
fn a_welcome_carries_the_newest_later_keys_within_one_frame() {
    let inv = invitation();
    let later: Vec<[u8; 32]> = (0..300u32)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k
        })
        .collect();
    let mut inviter = InviterSession::new(&inv, FOLDER_KEY, &later);
    let mut joiner = JoinerSession::new(&inv, JOINER_ID, "laptop");
    let (welcome, _) = exchange(&mut joiner, &mut inviter, &BINDING, T0 + 5);
    let welcome = welcome.unwrap();
    assert_eq!(welcome.later_keys.len(), crate::MAX_LATER_KEYS);
    assert_eq!(
        welcome.later_keys.last(),
        later.last(),
        "the newest is sent"
    );
    assert_eq!(welcome.later_keys[0], later[300 - crate::MAX_LATER_KEYS]);
    let frame = crate::encode_frame(&Reply::Welcome(welcome)).unwrap();
    assert!(frame.len() <= crate::handshake::MAX_FRAME_LEN + crate::handshake::FRAME_HEADER_LEN);
}
