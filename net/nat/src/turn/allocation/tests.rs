//! The allocation machine against a scripted server on a fake clock: no socket, no coturn.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{
    ErrorCode as ErrorCodeAttr, MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{ChannelNumber, LifeTime, XorPeerAddress, XorRelayedAddress};
use stun_rs::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMMISSION, REFRESH};
use stun_rs::{
    Algorithm, AlgorithmId, ErrorCode, HMACKey, MessageClass, MessageDecoderBuilder, MessageMethod,
    StunAttribute, StunMessage, StunMessageBuilder, TransactionId,
};

use super::*;
use crate::stun::encode;

const USER: &str = "alice";
const PASS: &str = "secret";
const REALM: &str = "example.org";

fn server() -> SocketAddr {
    "192.0.2.1:3478".parse().expect("addr")
}
fn relayed() -> SocketAddr {
    "192.0.2.1:50000".parse().expect("addr")
}
fn mapped() -> SocketAddr {
    "203.0.113.9:4444".parse().expect("addr")
}
fn peer() -> SocketAddr {
    "198.51.100.7:4000".parse().expect("addr")
}
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A request the machine sent, decoded.
struct Sent {
    msg: StunMessage,
    tid: [u8; 12],
}

impl Sent {
    fn method(&self) -> MessageMethod {
        self.msg.method()
    }
    fn nonce(&self) -> Option<String> {
        let attr = self.msg.get::<Nonce>()?;
        Some(attr.as_nonce().expect("nonce").as_str().to_string())
    }
    fn lifetime(&self) -> Option<u32> {
        let attr = self.msg.get::<LifeTime>()?;
        Some(attr.as_life_time().expect("lifetime").as_u32())
    }
    fn channel(&self) -> Option<(u16, SocketAddr)> {
        let number = self.msg.get::<ChannelNumber>()?;
        let peer = self.msg.get::<XorPeerAddress>()?;
        Some((
            number.as_channel_number().expect("number").number(),
            *peer.as_xor_peer_address().expect("peer").socket_address(),
        ))
    }
}

/// Everything the machine sends at `now`.
fn sent(m: &mut Allocation, now: Instant) -> Vec<Sent> {
    let decoder = MessageDecoderBuilder::default().build();
    let mut out = Vec::new();
    while let Some(t) = m.poll_transmit(now) {
        let (msg, _) = decoder.decode(&t.data).expect("a STUN request");
        assert_eq!(msg.class(), MessageClass::Request);
        assert_eq!(msg.transaction_id().as_bytes(), &t.tid);
        out.push(Sent { msg, tid: t.tid });
    }
    out
}

/// The one request the machine sends at `now`.
fn one(m: &mut Allocation, now: Instant) -> Sent {
    let mut all = sent(m, now);
    assert_eq!(all.len(), 1, "one request expected");
    all.remove(0)
}

fn events(m: &mut Allocation) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// The scripted server: answers as coturn would, with the key for [`USER`]/[`PASS`].
struct Script {
    key: HMACKey,
    nonce: String,
}

impl Script {
    fn new() -> Self {
        let key = HMACKey::new_long_term(USER, REALM, PASS, Algorithm::from(AlgorithmId::MD5))
            .expect("key");
        Script {
            key,
            nonce: "nonce-1".into(),
        }
    }

    fn reply(
        &self,
        to: &Sent,
        class: MessageClass,
        attrs: Vec<StunAttribute>,
        sign: bool,
    ) -> Vec<u8> {
        let mut msg = StunMessageBuilder::new(to.method(), class)
            .with_transaction_id(TransactionId::from(to.tid));
        for attr in attrs {
            msg = msg.with_attribute(attr);
        }
        if sign {
            msg = msg.with_attribute(MessageIntegrity::new(self.key.clone()));
        }
        encode(&msg.build()).expect("encode")
    }

    /// A success, signed as RFC 8489 has it when the request carried credentials.
    fn ok(&self, to: &Sent, attrs: Vec<StunAttribute>) -> Vec<u8> {
        let signed = to.msg.get::<MessageIntegrity>().is_some();
        self.reply(to, MessageClass::SuccessResponse, attrs, signed)
    }

    fn error(&self, to: &Sent, code: u16, reason: &str) -> Vec<u8> {
        let code = ErrorCodeAttr::from(ErrorCode::new(code, reason).expect("code"));
        self.reply(to, MessageClass::ErrorResponse, vec![code.into()], false)
    }

    /// A 401 or 438 with the realm and the current nonce.
    fn challenge(&self, to: &Sent, code: u16) -> Vec<u8> {
        let attrs = vec![
            ErrorCodeAttr::from(ErrorCode::new(code, "Unauthorized").expect("code")).into(),
            Realm::new(REALM).expect("realm").into(),
            Nonce::new(&self.nonce).expect("nonce").into(),
        ];
        self.reply(to, MessageClass::ErrorResponse, attrs, false)
    }

    fn allocated(&self, to: &Sent, lifetime: u32) -> Vec<u8> {
        self.ok(
            to,
            vec![
                XorRelayedAddress::from(relayed()).into(),
                XorMappedAddress::from(mapped()).into(),
                LifeTime::new(lifetime).into(),
            ],
        )
    }
}

fn new_machine(now: Instant, timers: Timers) -> Allocation {
    Allocation::new(server(), USER.into(), PASS.into(), timers, now)
}

/// A machine with an allocation of `lifetime` seconds granted at `t0` (after the 401 dance).
fn active(t0: Instant, lifetime: u32) -> (Allocation, Script) {
    let script = Script::new();
    let mut m = new_machine(t0, Timers::default());
    let first = one(&mut m, t0);
    m.handle_datagram(t0, &script.challenge(&first, 401));
    let second = one(&mut m, t0);
    m.handle_datagram(t0, &script.allocated(&second, lifetime));
    assert!(matches!(events(&mut m)[..], [Event::Allocated { .. }]));
    (m, script)
}

#[test]
fn a_challenged_allocate_is_sent_again_with_credentials_and_succeeds() {
    let t0 = Instant::now();
    let script = Script::new();
    let mut m = new_machine(t0, Timers::default());
    assert_eq!(m.poll_timeout(), Some(t0), "the Allocate is due at once");
    let first = one(&mut m, t0);
    assert_eq!(first.method(), ALLOCATE);
    assert!(
        first.msg.get::<MessageIntegrity>().is_none(),
        "no credentials before the challenge"
    );

    m.handle_datagram(t0 + ms(20), &script.challenge(&first, 401));
    let second = one(&mut m, t0 + ms(20));
    assert_eq!(second.method(), ALLOCATE);
    assert_ne!(second.tid, first.tid, "a new transaction");
    assert_eq!(second.nonce().as_deref(), Some("nonce-1"));
    let user = second.msg.get::<UserName>().expect("USERNAME");
    assert_eq!(user.as_user_name().expect("user").as_str(), USER);
    assert!(second.msg.get::<MessageIntegrity>().is_some());
    assert!(events(&mut m).is_empty());

    let t1 = t0 + ms(40);
    m.handle_datagram(t1, &script.allocated(&second, 600));
    match &events(&mut m)[..] {
        [Event::Allocated {
            relayed: r,
            mapped: a,
            lifetime,
        }] => assert_eq!((*r, *a, *lifetime), (relayed(), Some(mapped()), secs(600))),
        other => panic!("{other:?}"),
    }
    assert!(m.is_active());
    // Next: the channel and permission round (240 s) before the refresh (540 s).
    assert_eq!(m.poll_timeout(), Some(t1 + secs(240)));
    assert!(sent(&mut m, t1 + secs(1)).is_empty());
    // A late copy of the answer changes nothing.
    m.handle_datagram(t1 + ms(5), &script.allocated(&second, 600));
    assert!(events(&mut m).is_empty());
}

#[test]
fn a_stale_nonce_is_learned_and_the_request_sent_again() {
    let t0 = Instant::now();
    let (mut m, mut script) = active(t0, 600);
    m.handle_bind(t0, peer(), Origin::User(7));
    let bind = one(&mut m, t0);
    assert_eq!(bind.method(), CHANNEL_BIND);
    assert_eq!(bind.channel(), Some((0x4000, peer())));

    script.nonce = "nonce-2".into();
    m.handle_datagram(t0, &script.challenge(&bind, 438));
    let again = one(&mut m, t0);
    assert_eq!(again.nonce().as_deref(), Some("nonce-2"));
    assert_eq!(again.channel(), Some((0x4000, peer())), "the same channel");
    assert_eq!(m.stale_nonces(), 1);
    m.handle_datagram(t0, &script.ok(&again, vec![]));
    match &events(&mut m)[..] {
        [Event::Bound {
            origin: Origin::User(7),
            peer: p,
            number: 0x4000,
        }] => assert_eq!(*p, peer()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_server_that_keeps_saying_stale_nonce_is_refusing_us() {
    let t0 = Instant::now();
    let (mut m, script) = active(t0, 600);
    m.handle_create_permission(t0, 1, vec![peer().ip()]);
    for _ in 0..=crate::turn::request::MAX_STALE_NONCE {
        let request = one(&mut m, t0);
        assert_eq!(request.method(), CREATE_PERMMISSION);
        m.handle_datagram(t0, &script.challenge(&request, 438));
    }
    assert!(sent(&mut m, t0).is_empty());
    match &events(&mut m)[..] {
        [Event::Permitted {
            id: 1,
            result: Err(TurnError::Rejected { code: 438, .. }),
        }] => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_credentials_are_refused_after_one_more_try() {
    let t0 = Instant::now();
    let script = Script::new();
    let mut m = new_machine(t0, Timers::default());
    let first = one(&mut m, t0);
    m.handle_datagram(t0, &script.challenge(&first, 401));
    // A 401 to a request with credentials may mean a rotated nonce: one more try.
    let second = one(&mut m, t0);
    m.handle_datagram(t0, &script.challenge(&second, 401));
    let third = one(&mut m, t0);
    m.handle_datagram(t0, &script.challenge(&third, 401));
    assert!(sent(&mut m, t0).is_empty());
    match &events(&mut m)[..] {
        [Event::AllocateFailed(e @ TurnError::Unauthorized { code: 401, .. })] => {
            assert!(e.to_string().contains("check user= and pass="), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!m.is_active());
    assert_eq!(m.poll_timeout(), None, "nothing left to do");
}

#[test]
fn error_responses_fail_the_request_with_the_servers_reason() {
    let t0 = Instant::now();
    let script = Script::new();
    let mut m = new_machine(t0, Timers::default());
    let first = one(&mut m, t0);
    m.handle_datagram(t0, &script.challenge(&first, 401));
    let second = one(&mut m, t0);
    m.handle_datagram(t0, &script.error(&second, 486, "Allocation Quota Reached"));
    match &events(&mut m)[..] {
        [Event::AllocateFailed(e @ TurnError::Rejected { code: 486, .. })] => {
            let msg = e.to_string();
            assert!(msg.contains("refused the allocation: 486"), "{msg}");
            assert!(msg.contains("allocation quota"), "{msg}");
        }
        other => panic!("{other:?}"),
    }

    // An unsigned "success" to a request with credentials could be forged: refused.
    let (mut m, script) = active(t0, 600);
    m.handle_bind(t0, peer(), Origin::Mux);
    let bind = one(&mut m, t0);
    m.handle_datagram(
        t0,
        &script.reply(&bind, MessageClass::SuccessResponse, vec![], false),
    );
    match &events(&mut m)[..] {
        [Event::BindFailed {
            origin: Origin::Mux,
            error: TurnError::Malformed { reason, .. },
            ..
        }] => assert!(reason.contains("without MESSAGE-INTEGRITY"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // A datagram too short for a STUN header answers the request in flight: malformed.
    m.handle_bind(t0, peer(), Origin::Mux);
    let _ = one(&mut m, t0);
    m.handle_datagram(t0, &[1, 1, 0]);
    match &events(&mut m)[..] {
        [Event::BindFailed {
            error: TurnError::Malformed { reason, .. },
            ..
        }] => assert!(
            reason.contains("shorter than the 20-byte STUN header"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unanswered_request_is_retransmitted_then_times_out() {
    let t0 = Instant::now();
    let mut m = new_machine(t0, Timers::default());
    let first = one(&mut m, t0);
    let mut copies = vec![Duration::ZERO];
    let mut at = Duration::ZERO;
    while at < secs(4) {
        at += ms(10);
        m.handle_timeout(t0 + at);
        for copy in sent(&mut m, t0 + at) {
            assert_eq!(
                copy.tid, first.tid,
                "a retransmission is the same transaction"
            );
            copies.push(at);
        }
        if !events(&mut m).is_empty() {
            break;
        }
    }
    assert_eq!(copies, [ms(0), ms(500), ms(1500)]);
    assert_eq!(at, secs(3), "gave up at the transaction timeout");
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_failed_send_fails_its_request_at_once() {
    let t0 = Instant::now();
    let mut m = new_machine(t0, Timers::default());
    let first = one(&mut m, t0);
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    m.handle_send_error(t0, first.tid, refused);
    assert!(matches!(
        events(&mut m)[..],
        [Event::AllocateFailed(TurnError::Send { .. })]
    ));
}

#[test]
fn a_stale_allocation_of_ours_is_deleted_and_allocated_afresh() {
    let t0 = Instant::now();
    let script = Script::new();
    let mut m = new_machine(t0, Timers::default());
    let first = one(&mut m, t0);
    m.handle_datagram(t0, &script.challenge(&first, 401));
    let second = one(&mut m, t0);
    m.handle_datagram(t0, &script.error(&second, 437, "Allocation Mismatch"));
    let delete = one(&mut m, t0);
    assert_eq!((delete.method(), delete.lifetime()), (REFRESH, Some(0)));
    m.handle_datagram(t0, &script.ok(&delete, vec![LifeTime::new(0).into()]));
    // The server frees it on its next tick: ask again after a pause, while it says 437.
    assert_eq!(m.poll_timeout(), Some(t0 + ms(500)));
    let mut now = t0;
    for _ in 0..2 {
        now += ms(500);
        m.handle_timeout(now);
        let again = one(&mut m, now);
        assert_eq!(again.method(), ALLOCATE);
        m.handle_datagram(now, &script.error(&again, 437, "Allocation Mismatch"));
        assert!(events(&mut m).is_empty());
    }
    now += ms(500);
    m.handle_timeout(now);
    let last = one(&mut m, now);
    m.handle_datagram(now, &script.allocated(&last, 600));
    assert!(matches!(events(&mut m)[..], [Event::Allocated { .. }]));

    // A server that never lets go: the 437 after the last try is the answer.
    let mut m = new_machine(t0, Timers::default());
    let first = one(&mut m, t0);
    m.handle_datagram(t0, &script.error(&first, 437, "Allocation Mismatch"));
    let delete = one(&mut m, t0);
    m.handle_datagram(t0, &script.ok(&delete, vec![]));
    let mut now = t0;
    let mut tries = 0;
    loop {
        now += ms(500);
        m.handle_timeout(now);
        let Some(again) = sent(&mut m, now).pop() else {
            break;
        };
        tries += 1;
        m.handle_datagram(now, &script.error(&again, 437, "Allocation Mismatch"));
    }
    assert_eq!(tries, STALE_ALLOCATION_TRIES);
    assert!(matches!(
        events(&mut m)[..],
        [Event::AllocateFailed(TurnError::Rejected { code: 437, .. })]
    ));
}

#[test]
fn the_allocation_is_refreshed_a_minute_before_it_expires() {
    let t0 = Instant::now();
    let (mut m, script) = active(t0, 600);
    // The round at 240 s and 480 s has nothing to renew.
    m.handle_timeout(t0 + secs(539));
    assert!(sent(&mut m, t0 + secs(539)).is_empty());
    let t1 = t0 + secs(540);
    assert_eq!(m.poll_timeout(), Some(t1));
    m.handle_timeout(t1);
    let refresh = one(&mut m, t1);
    assert_eq!((refresh.method(), refresh.lifetime()), (REFRESH, Some(600)));
    m.handle_datagram(
        t1 + ms(30),
        &script.ok(&refresh, vec![LifeTime::new(300).into()]),
    );
    assert_eq!(m.refreshes(), 1);
    // Granted 300 s: the next refresh a minute before that runs out, counted from the send.
    m.handle_timeout(t1 + secs(239));
    assert!(sent(&mut m, t1 + secs(239)).is_empty());
    m.handle_timeout(t1 + secs(240));
    assert_eq!(one(&mut m, t1 + secs(240)).method(), REFRESH);
    assert!(events(&mut m).is_empty());
}

#[test]
fn a_refresh_that_keeps_failing_loses_the_allocation_when_it_expires() {
    let t0 = Instant::now();
    let (mut m, _script) = active(t0, 20);
    // 20 s: refreshed at half-time, then retried on a backoff until it expires.
    let mut refreshes = Vec::new();
    let mut at = Duration::ZERO;
    let lost = loop {
        at += ms(10);
        assert!(at < secs(40), "never lost");
        m.handle_timeout(t0 + at);
        for request in sent(&mut m, t0 + at) {
            if request.method() == REFRESH && !refreshes.contains(&request.tid) {
                refreshes.push(request.tid);
            }
        }
        if let Some(event) = m.poll_event() {
            break (at, event);
        }
    };
    assert!(
        matches!(lost.1, Event::Lost(TurnError::Timeout { .. })),
        "{:?}",
        lost.1
    );
    assert!(refreshes.len() >= 3, "retried: {}", refreshes.len());
    // The last refresh started at or after expiry (20 s) and timed out 3 s later; the
    // backoff before it is at most 8 s by then.
    assert!(
        lost.0 >= secs(23) && lost.0 < secs(35),
        "lost at {:?}",
        lost.0
    );
    assert!(!m.is_active());
    m.handle_bind(t0 + at, peer(), Origin::Mux);
    assert!(matches!(
        events(&mut m)[..],
        [Event::BindFailed {
            error: TurnError::Inactive { .. },
            ..
        }]
    ));
}

#[test]
fn a_refused_refresh_loses_the_allocation_at_once() {
    let t0 = Instant::now();
    let (mut m, script) = active(t0, 600);
    let t1 = t0 + secs(540);
    m.handle_timeout(t1);
    let refresh = one(&mut m, t1);
    m.handle_datagram(t1, &script.error(&refresh, 437, "Allocation Mismatch"));
    assert!(matches!(
        events(&mut m)[..],
        [Event::Lost(TurnError::Rejected { code: 437, .. })]
    ));
    assert_eq!(m.poll_timeout(), None, "nothing is refreshed any more");
}

#[test]
fn channels_and_permissions_are_renewed_every_round() {
    let t0 = Instant::now();
    let (mut m, script) = active(t0, 600);
    let other: SocketAddr = "198.51.100.8:5000".parse().expect("addr");
    let ip: IpAddr = "198.51.100.9".parse().expect("ip");
    for (i, p) in [peer(), other, peer()].into_iter().enumerate() {
        m.handle_bind(t0, p, Origin::User(i as u64));
        let bind = one(&mut m, t0);
        m.handle_datagram(t0, &script.ok(&bind, vec![]));
    }
    let numbers: Vec<(u64, u16)> = events(&mut m)
        .into_iter()
        .map(|e| match e {
            Event::Bound {
                origin: Origin::User(id),
                number,
                ..
            } => (id, number),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        numbers,
        [(0, 0x4000), (1, 0x4001), (2, 0x4000)],
        "a peer keeps its channel"
    );
    m.handle_create_permission(t0, 9, vec![ip]);
    let permit = one(&mut m, t0);
    m.handle_datagram(t0, &script.ok(&permit, vec![]));
    assert!(matches!(
        events(&mut m)[..],
        [Event::Permitted {
            id: 9,
            result: Ok(())
        }]
    ));
    m.handle_unbind(other);

    // The round: the routed channel and the permission, not the unbound peer.
    let t1 = t0 + secs(240);
    m.handle_timeout(t1 - ms(1));
    assert!(sent(&mut m, t1 - ms(1)).is_empty());
    m.handle_timeout(t1);
    let round = sent(&mut m, t1);
    assert_eq!(round.len(), 2);
    assert_eq!(round[0].channel(), Some((0x4000, peer())));
    assert_eq!(round[1].method(), CREATE_PERMMISSION);
    // One of them fails: the round is tried again 5 s later.
    m.handle_datagram(t1, &script.ok(&round[0], vec![]));
    m.handle_datagram(t1, &script.error(&round[1], 403, "Forbidden"));
    assert!(
        events(&mut m).is_empty(),
        "refreshes are the machine's own business"
    );
    assert_eq!(m.poll_timeout(), Some(t1 + secs(5)));
    m.handle_timeout(t1 + secs(5));
    let retry = sent(&mut m, t1 + secs(5));
    assert_eq!(retry.len(), 2);
    for request in &retry {
        m.handle_datagram(t1 + secs(5), &script.ok(request, vec![]));
    }
    assert_eq!(m.poll_timeout(), Some(t1 + secs(245)));
}

#[test]
fn channel_numbers_and_families_are_checked_before_anything_is_sent() {
    let t0 = Instant::now();
    let (mut m, _script) = active(t0, 600);
    m.handle_bind(
        t0,
        "[2001:db8::1]:4000".parse().expect("addr"),
        Origin::User(1),
    );
    assert!(sent(&mut m, t0).is_empty());
    assert!(matches!(
        events(&mut m)[..],
        [Event::BindFailed {
            error: TurnError::FamilyMismatch { .. },
            ..
        }]
    ));
    m.next_channel = *CHANNEL_NUMBERS.end() + 1;
    m.handle_bind(t0, peer(), Origin::User(2));
    assert!(matches!(
        events(&mut m)[..],
        [Event::BindFailed {
            error: TurnError::ChannelsExhausted { .. },
            ..
        }]
    ));
}

#[test]
fn closing_deletes_the_allocation() {
    let t0 = Instant::now();
    let (mut m, script) = active(t0, 600);
    m.handle_bind(t0, peer(), Origin::Mux);
    let _dropped = one(&mut m, t0);
    m.handle_close(t0 + ms(1));
    let delete = one(&mut m, t0 + ms(1));
    assert_eq!((delete.method(), delete.lifetime()), (REFRESH, Some(0)));
    m.handle_datagram(
        t0 + ms(2),
        &script.ok(&delete, vec![LifeTime::new(0).into()]),
    );
    assert!(matches!(events(&mut m)[..], [Event::Closed(Ok(()))]));
    assert_eq!(m.poll_timeout(), None);
}
