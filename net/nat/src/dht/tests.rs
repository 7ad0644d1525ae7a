//! DHT discovery: the record (round trip, arbitrary bytes, the BEP 44 signature), the policy on
//! a fake clock, and a publish and lookup through a small DHT on loopback.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::policy::{Action, Config, DhtPolicy, Local};
use super::record::{self, AddrRecord, DecodeError};
use super::{DhtNode, NodeOptions};
use crate::identity::{DeviceId, DeviceKey};

const WALL: u64 = 1_764_000_000_000;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn record(ts: u64) -> AddrRecord {
    AddrRecord {
        timestamp_ms: ts,
        port: 22100,
        lan: vec![ip("192.168.1.5"), ip("fd00::5")],
        reflexive: Some(sa("203.0.113.7:40000")),
        relay: Some(sa("198.51.100.1:50000")),
    }
}

#[test]
fn record_round_trip() {
    let r = record(WALL);
    let bytes = r.encode().unwrap();
    assert!(bytes.len() < 100, "{} bytes", bytes.len());
    assert_eq!(record::decode(&bytes, r.seq()).unwrap(), r);
    assert_eq!(
        record::decode(&bytes, r.seq() + 1),
        Err(DecodeError::SeqMismatch)
    );
    let mut extra = bytes.clone();
    extra.push(0);
    assert_eq!(record::decode(&extra, r.seq()), Err(DecodeError::Malformed));
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert_eq!(
        record::decode(&v2, r.seq()),
        Err(DecodeError::UnknownVersion(2))
    );
    assert_eq!(record::decode(b"fyD", 1), Err(DecodeError::BadMagic));
}

#[test]
fn bad_addresses_are_refused_both_ways() {
    let mut r = record(WALL);
    r.lan = vec![ip("0.0.0.0")];
    assert_eq!(r.encode(), Err(DecodeError::BadAddrs));
    let mut r = record(WALL);
    r.reflexive = Some(sa("203.0.113.7:0"));
    assert_eq!(r.encode(), Err(DecodeError::BadAddrs));
    let mut r = record(WALL);
    r.lan = (0..9).map(|i| IpAddr::from([10, 0, 0, i])).collect();
    assert_eq!(r.encode(), Err(DecodeError::BadAddrs));
    // Hand-made bytes with a port of 0 do not decode either.
    let mut r = record(WALL);
    r.port = 0;
    let mut bytes = record::MAGIC.to_vec();
    bytes.push(record::VERSION);
    bytes.extend(postcard::to_stdvec(&r).unwrap());
    assert_eq!(record::decode(&bytes, r.seq()), Err(DecodeError::BadAddrs));
}

#[test]
fn dial_addrs_put_the_public_address_first() {
    let mut r = record(WALL);
    r.lan.push(ip("fe80::1"));
    assert_eq!(
        r.dial_addrs(),
        vec![
            sa("203.0.113.7:40000"),
            sa("192.168.1.5:22100"),
            sa("[fd00::5]:22100"),
            sa("198.51.100.1:50000"),
        ]
    );
}

#[test]
fn signature_is_bep44_over_salt_seq_and_value() {
    let key = DeviceKey::generate().unwrap();
    let r = record(WALL);
    let value = r.encode().unwrap();
    let signable = record::signable(r.seq(), &value);
    let head = format!("4:salt11:fybrk addrs3:seqi{}e1:v{}:", r.seq(), value.len());
    assert!(signable.starts_with(head.as_bytes()));
    let sig = record::sign_item(&key, r.seq(), &value);
    let pk = key.public_key();
    record::verify_item(&pk, r.seq(), &value, &sig).unwrap();
    assert_eq!(
        record::verify_item(&pk, r.seq() + 1, &value, &sig),
        Err(DecodeError::BadSignature)
    );
    let other = DeviceKey::generate().unwrap().public_key();
    assert!(record::verify_item(&other, r.seq(), &value, &sig).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200), seq in any::<i64>()) {
        let _ = record::decode(&bytes, seq);
    }

    #[test]
    fn arbitrary_bodies_after_the_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300), seq in any::<i64>()) {
        let mut bytes = record::MAGIC.to_vec();
        bytes.push(record::VERSION);
        bytes.extend(body);
        if let Ok(r) = record::decode(&bytes, seq) {
            // Whatever decodes is canonical and encodes back to the same bytes.
            prop_assert_eq!(r.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn flipped_bits_never_verify(byte in 0usize..60, bit in 0u8..8) {
        let key = DeviceKey::generate().unwrap();
        let r = record(WALL);
        let value = r.encode().unwrap();
        let sig = record::sign_item(&key, r.seq(), &value);
        let mut bad = value.clone();
        let i = byte % bad.len();
        bad[i] ^= 1 << bit;
        prop_assert!(record::verify_item(&key.public_key(), r.seq(), &bad, &sig).is_err());
    }
}

// ---- the policy, on a fake clock

fn local(reflexive: &str) -> Local {
    Local {
        port: 22100,
        lan: vec![ip("192.168.1.5")],
        reflexive: Some(sa(reflexive)),
        relay: None,
    }
}

fn id(n: u8) -> DeviceId {
    DeviceId::from_public_key(&[n; 32])
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Polls every action due at `now`.
fn actions(p: &mut DhtPolicy, now: Instant, wall: u64) -> Vec<Action> {
    std::iter::from_fn(|| p.poll_action(now, wall)).collect()
}

#[test]
fn publishes_at_start_on_change_and_hourly() {
    let t0 = Instant::now();
    let mut p = DhtPolicy::new(Config::default());
    assert_eq!(p.poll_action(t0, WALL), None, "nothing known yet");
    assert!(p.handle_local(t0, local("203.0.113.7:1000")));
    let Some(Action::Publish(r)) = p.poll_action(t0, WALL) else {
        panic!("no publish at start")
    };
    assert_eq!(r.reflexive, Some(sa("203.0.113.7:1000")));
    assert_eq!(r.timestamp_ms, WALL);
    assert_eq!(p.poll_action(t0, WALL), None, "one publish at a time");
    p.handle_published(t0 + secs(2), true);
    assert_eq!(p.last_published(), Some(t0 + secs(2)));
    assert!(!p.handle_local(t0 + secs(3), local("203.0.113.7:1000")));
    assert_eq!(p.poll_timeout(), Some(t0 + secs(2) + secs(3600)));

    // A new public port: published again, but not sooner than the gap after the last one.
    assert!(p.handle_local(t0 + secs(3), local("203.0.113.7:2000")));
    assert_eq!(p.poll_action(t0 + secs(3), WALL + 3000), None);
    assert_eq!(p.poll_timeout(), Some(t0 + secs(5)));
    let Some(Action::Publish(r)) = p.poll_action(t0 + secs(5), WALL + 5000) else {
        panic!("no publish after the change")
    };
    assert_eq!(r.reflexive, Some(sa("203.0.113.7:2000")));
    p.handle_published(t0 + secs(6), true);

    // Hourly, with a strictly larger timestamp even if the wall clock went back.
    let hour = t0 + secs(6) + secs(3600);
    assert_eq!(p.poll_action(hour - secs(1), WALL), None);
    let Some(Action::Publish(r)) = p.poll_action(hour, WALL) else {
        panic!("no hourly publish")
    };
    assert_eq!(r.timestamp_ms, WALL + 5001);
}

#[test]
fn a_change_during_a_publish_is_published_after_it() {
    let t0 = Instant::now();
    let mut p = DhtPolicy::new(Config::default());
    p.handle_local(t0, local("203.0.113.7:1000"));
    assert!(matches!(p.poll_action(t0, WALL), Some(Action::Publish(_))));
    p.handle_local(t0 + secs(1), local("203.0.113.7:2000"));
    assert_eq!(p.poll_action(t0 + secs(1), WALL), None);
    p.handle_published(t0 + secs(2), true);
    let Some(Action::Publish(r)) = p.poll_action(t0 + secs(5), WALL + 5000) else {
        panic!("the newer addresses are not published")
    };
    assert_eq!(r.reflexive, Some(sa("203.0.113.7:2000")));
}

#[test]
fn failed_publishes_back_off() {
    let t0 = Instant::now();
    let mut p = DhtPolicy::new(Config::default());
    p.handle_local(t0, local("203.0.113.7:1000"));
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..8 {
        assert!(matches!(p.poll_action(now, WALL), Some(Action::Publish(_))));
        p.handle_published(now, false);
        let next = p.poll_timeout().unwrap();
        waits.push((next - now).as_secs());
        now = next;
    }
    assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 300, 300]);
    assert!(matches!(p.poll_action(now, WALL), Some(Action::Publish(_))));
    p.handle_published(now, true);
    assert_eq!(p.poll_timeout(), Some(now + secs(3600)));
}

#[test]
fn an_unreachable_peer_is_looked_up_then_dialled_for_a_window() {
    let c = Config::default();
    let t0 = Instant::now();
    let mut p = DhtPolicy::new(c);
    let (a, key) = (id(1), [1u8; 32]);
    p.handle_peers(t0, [(a, key, false)]);
    assert_eq!(p.poll_action(t0, WALL), None, "remembered addresses first");
    assert_eq!(p.poll_timeout(), Some(t0 + c.lookup_after));
    let t1 = t0 + c.lookup_after;
    assert_eq!(
        actions(&mut p, t1, WALL),
        vec![Action::Lookup {
            peer: a,
            public_key: key
        }]
    );
    assert_eq!(actions(&mut p, t1, WALL), vec![], "one lookup at a time");
    let found = record(WALL - 1000);
    p.handle_lookup(t1 + secs(1), WALL, &a, Some(found.clone()));
    let dial = Action::Dial {
        peer: a,
        addrs: found.dial_addrs(),
    };
    assert_eq!(actions(&mut p, t1 + secs(1), WALL), vec![dial.clone()]);
    // Redialled every 10 s (the punch), and looked up again after 20 s.
    assert_eq!(actions(&mut p, t1 + secs(10), WALL), vec![]);
    assert_eq!(actions(&mut p, t1 + secs(11), WALL), vec![dial.clone()]);
    let again = actions(&mut p, t1 + secs(21), WALL);
    assert!(again.contains(&Action::Lookup {
        peer: a,
        public_key: key
    }));
    assert!(again.contains(&dial));
    p.handle_lookup(t1 + secs(22), WALL, &a, None);
    // The window ends punch_for after the last record found.
    let end = t1 + secs(1) + c.punch_for;
    let mut dials = 0;
    let mut now = t1 + secs(22);
    while now < end + secs(60) {
        for act in actions(&mut p, now, WALL) {
            match act {
                Action::Dial { .. } => {
                    assert!(now < end, "dialled after the window");
                    dials += 1;
                }
                Action::Lookup { .. } => p.handle_lookup(now, WALL, &a, None),
                Action::Publish(_) => panic!("nothing to publish"),
            }
        }
        now += secs(1);
    }
    assert!(dials >= 15, "{dials} dials in the window");

    // Connected: nothing more; lost again: looked up after lookup_after.
    p.handle_peers(now, [(a, key, true)]);
    assert_eq!(p.poll_timeout(), None);
    p.handle_peers(now + secs(100), [(a, key, false)]);
    assert_eq!(p.poll_timeout(), Some(now + secs(100) + c.lookup_after));
}

#[test]
fn lookups_back_off_and_old_records_are_ignored() {
    let c = Config::default();
    let t0 = Instant::now();
    let mut p = DhtPolicy::new(c);
    let a = id(1);
    p.handle_peers(t0, [(a, [1; 32], false)]);
    let mut now = t0 + c.lookup_after;
    let mut waits = Vec::new();
    for _ in 0..7 {
        assert!(matches!(
            p.poll_action(now, WALL),
            Some(Action::Lookup { .. })
        ));
        // A record four hours old: the device is gone, nothing to dial.
        p.handle_lookup(now, WALL, &a, Some(record(WALL - 4 * 3600 * 1000)));
        assert_eq!(p.poll_action(now, WALL), None);
        let next = p.poll_timeout().unwrap();
        waits.push((next - now).as_secs());
        now = next;
    }
    assert_eq!(waits, vec![20, 40, 80, 160, 320, 600, 600]);
}

#[test]
fn unpaired_peers_are_forgotten() {
    let t0 = Instant::now();
    let mut p = DhtPolicy::new(Config::default());
    p.handle_peers(t0, [(id(1), [1; 32], false), (id(2), [2; 32], false)]);
    p.handle_peers(t0, [(id(2), [2; 32], false)]);
    let acts = actions(&mut p, t0 + secs(60), WALL);
    assert_eq!(
        acts,
        vec![Action::Lookup {
            peer: id(2),
            public_key: [2; 32]
        }]
    );
    // A lookup answer for a forgotten peer changes nothing.
    p.handle_lookup(t0 + secs(61), WALL, &id(1), Some(record(WALL)));
    assert_eq!(actions(&mut p, t0 + secs(61), WALL), vec![]);
}

// ---- a real DHT on loopback

#[test]
fn publish_and_lookup_through_a_small_dht_on_loopback() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = |bootstrap: Vec<String>| {
        DhtNode::start(&NodeOptions {
            bootstrap,
            bind: Some(SocketAddrV4::new([127, 0, 0, 1].into(), 0)),
            server: true,
            request_timeout: Some(Duration::from_millis(200)),
        })
        .unwrap()
    };
    let first = server(Vec::new());
    let first_addr = rt.block_on(first.local_addr()).to_string();
    let servers: Vec<DhtNode> = (0..4).map(|_| server(vec![first_addr.clone()])).collect();
    let client = |bootstrap: &str| {
        DhtNode::start(&NodeOptions {
            bootstrap: vec![bootstrap.to_owned()],
            bind: Some(SocketAddrV4::new([127, 0, 0, 1].into(), 0)),
            server: false,
            request_timeout: Some(Duration::from_millis(200)),
        })
        .unwrap()
    };
    let a = client(&first_addr);
    let b = client(&first_addr);
    let key = DeviceKey::generate().unwrap();
    rt.block_on(async {
        for s in &servers {
            s.bootstrapped().await;
        }
        assert!(a.bootstrapped().await);
        assert!(b.bootstrapped().await);
        assert!(a.known_nodes().await >= 1);
        assert_eq!(b.lookup(&key.public_key()).await, None);
        let r = record(WALL);
        let stored = a.publish(&key, &r).await.unwrap();
        assert!(stored >= 1, "stored at {stored} nodes");
        assert_eq!(b.lookup(&key.public_key()).await, Some(r.clone()));
        // A newer record replaces it; an older seq is refused.
        let newer = record(WALL + 1);
        a.publish(&key, &newer).await.unwrap();
        assert_eq!(b.lookup(&key.public_key()).await, Some(newer));
        assert!(a.publish(&key, &r).await.is_err());
    });
    drop(first);
}
