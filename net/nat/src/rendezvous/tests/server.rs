//! The server state machine with a simulated clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{addr, key, wall, EPOCH_MS};
use crate::identity::{DeviceId, DeviceKey};
use crate::rendezvous::messages::*;
use crate::rendezvous::server::{COOKIE_EPOCH, MAX_CLOCK_SKEW, REGISTRATION_TTL};
use crate::rendezvous::{Server, ServerConfig, Transmit};

/// A device as the server sees it: a key and a source address.
struct Dev {
    key: Arc<DeviceKey>,
    at: SocketAddr,
    lan: Vec<SocketAddr>,
    cookie: Option<Cookie>,
    last_ms: u64,
}

impl Dev {
    fn new(at: &str) -> Self {
        Dev {
            key: key(),
            at: addr(at),
            lan: vec![addr("192.168.1.10:4000")],
            cookie: None,
            last_ms: EPOCH_MS,
        }
    }

    fn id(&self) -> DeviceId {
        self.key.id()
    }

    fn register_bytes(&mut self) -> Vec<u8> {
        self.last_ms += 1;
        Register {
            id: self.id(),
            public_key: self.key.public_key(),
            candidates: self.lan.clone(),
            timestamp_ms: self.last_ms,
            cookie: self.cookie,
            relay: None,
        }
        .encode(&self.key)
        .unwrap()
    }

    fn connect_bytes(&mut self, target: DeviceId, nonce: u64) -> Vec<u8> {
        self.last_ms += 1;
        Connect {
            id: self.id(),
            target,
            nonce,
            timestamp_ms: self.last_ms,
            cookie: self.cookie.expect("registered first"),
        }
        .encode(&self.key)
        .unwrap()
    }
}

/// Sends `bytes` from `from` and checks the no-amplification promise on the answer.
fn send(server: &mut Server, from: SocketAddr, bytes: &[u8], now: Instant) -> Vec<Transmit> {
    let out = server.handle_datagram(from, bytes, now);
    let total: usize = out.iter().map(|(_, d)| d.len()).sum();
    assert!(
        total <= bytes.len(),
        "{total} bytes sent for a {}-byte request",
        bytes.len()
    );
    out
}

fn only(out: Vec<Transmit>) -> (SocketAddr, Message) {
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, bytes) = out.into_iter().next().unwrap();
    (to, decode(&bytes).unwrap())
}

/// Registers `dev` completely (two round trips) and returns the confirmed answer.
fn register(server: &mut Server, dev: &mut Dev, now: Instant) -> Registered {
    for _ in 0..2 {
        let bytes = dev.register_bytes();
        let (to, msg) = only(send(server, dev.at, &bytes, now));
        assert_eq!(to, dev.at);
        let Message::Registered(r) = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(r.observed, dev.at);
        assert_eq!(r.echo_ms, dev.last_ms);
        dev.cookie = Some(r.cookie);
        if r.confirmed {
            return r;
        }
    }
    panic!("not confirmed after two rounds");
}

fn server(start: Instant) -> Server {
    Server::new(ServerConfig::default(), start, wall(start))
}

#[test]
fn registration_needs_the_cookie_round_trip() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    let first = a.register_bytes();
    let (_, msg) = only(send(&mut s, a.at, &first, t0));
    let Message::Registered(r) = msg else {
        panic!()
    };
    assert!(!r.confirmed);
    // Nothing is stored for a request whose sender has not proved its address.
    assert!(!s.is_registered(&a.id(), t0));
    assert_eq!(s.stats().registrations, 0);
    a.cookie = Some(r.cookie);
    let second = a.register_bytes();
    let (_, msg) = only(send(&mut s, a.at, &second, t0));
    let Message::Registered(r) = msg else {
        panic!()
    };
    assert!(r.confirmed);
    assert_eq!(r.ttl_secs, 90);
    assert!(s.is_registered(&a.id(), t0));
    assert_eq!(s.stats().registrations, 1);
}

#[test]
fn a_cookie_works_only_from_its_address() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    register(&mut s, &mut a, t0);
    // Someone else replays the signed request (or the device moved) from another address.
    let mut moved = Dev {
        at: addr("203.0.113.99:5000"),
        ..a
    };
    let bytes = moved.register_bytes();
    let (_, msg) = only(send(&mut s, moved.at, &bytes, t0));
    let Message::Registered(r) = msg else {
        panic!()
    };
    assert!(!r.confirmed);
    // A device that really moved completes the round trip from its new address.
    let r = register(&mut s, &mut moved, t0);
    assert_eq!(r.observed, addr("203.0.113.99:5000"));
}

#[test]
fn cookies_expire() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    register(&mut s, &mut a, t0);
    // Two epochs later the cookie is no longer accepted: the answer is a fresh one.
    let later = t0 + 2 * COOKIE_EPOCH + Duration::from_secs(1);
    let bytes = a.register_bytes();
    let (_, msg) = only(send(&mut s, a.at, &bytes, later));
    let Message::Registered(r) = msg else {
        panic!()
    };
    assert!(!r.confirmed);
}

#[test]
fn invalid_signatures_are_dropped_silently() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    let mut bytes = a.register_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    assert!(send(&mut s, a.at, &bytes, t0).is_empty());
    // An id that is not the key's hash.
    let other = key();
    let forged = Register {
        id: other.id(),
        public_key: a.key.public_key(),
        candidates: vec![],
        timestamp_ms: EPOCH_MS,
        cookie: None,
        relay: None,
    }
    .encode(&a.key)
    .unwrap();
    assert!(send(&mut s, a.at, &forged, t0).is_empty());
    // Garbage and messages that are not requests.
    assert!(send(&mut s, a.at, &[0x20, 1, 2, 3], t0).is_empty());
    let probe = Probe {
        from: a.id(),
        nonce: 1,
        seq: 1,
    }
    .encode_probe(&a.key)
    .unwrap();
    assert!(send(&mut s, a.at, &probe, t0).is_empty());
    assert_eq!(s.stats().invalid, 4);
    assert_eq!(s.stats().registrations, 0);
}

#[test]
fn replayed_timestamps_are_refused() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    let mut b = Dev::new("198.51.100.2:6000");
    register(&mut s, &mut a, t0);
    register(&mut s, &mut b, t0);
    // The exact last Register again: dropped.
    a.last_ms -= 1;
    let replay = a.register_bytes();
    assert!(send(&mut s, a.at, &replay, t0).is_empty());
    // An older timestamp: dropped.
    a.last_ms -= 10;
    let older = a.register_bytes();
    assert!(send(&mut s, a.at, &older, t0).is_empty());
    // A Connect replayed verbatim introduces only once.
    a.last_ms += 20;
    let c = a.connect_bytes(b.id(), 7);
    assert_eq!(send(&mut s, a.at, &c, t0).len(), 2);
    assert!(send(&mut s, a.at, &c, t0).is_empty());
    assert_eq!(s.stats().introductions, 1);
}

#[test]
fn skewed_clocks_get_a_small_error() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    a.last_ms = EPOCH_MS - MAX_CLOCK_SKEW.as_millis() as u64 - 1_000;
    let bytes = a.register_bytes();
    let (to, msg) = only(send(&mut s, a.at, &bytes, t0));
    assert_eq!(to, a.at);
    let Message::Error(e) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(e.code, ErrorCode::ClockSkew);
    assert_eq!(e.echo_ms, a.last_ms);
    assert_eq!(e.server_ms, EPOCH_MS);
    // Within the allowed skew it works.
    a.last_ms = EPOCH_MS + MAX_CLOCK_SKEW.as_millis() as u64 - 1_000;
    register(&mut s, &mut a, t0);
}

#[test]
fn both_sides_are_told_at_once() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    let mut b = Dev::new("198.51.100.2:6000");
    b.lan = vec![addr("10.0.0.5:4000"), addr("[fd00::5]:4000")];
    register(&mut s, &mut a, t0);
    register(&mut s, &mut b, t0);
    let c = a.connect_bytes(b.id(), 0xfeed);
    let out = send(&mut s, a.at, &c, t0);
    // One call, two datagrams: the driver sends them back to back.
    assert_eq!(out.len(), 2);
    let mut to_a = None;
    let mut to_b = None;
    for (to, bytes) in out {
        let Message::Punch(p) = decode(&bytes).unwrap() else {
            panic!()
        };
        if to == a.at {
            to_a = Some(p);
        } else if to == b.at {
            to_b = Some(p);
        } else {
            panic!("punch to a stranger: {to}");
        }
    }
    let (to_a, to_b) = (to_a.unwrap(), to_b.unwrap());
    assert_eq!(to_a.peer, b.id());
    assert_eq!(to_a.peer_public_key, b.key.public_key());
    assert_eq!(to_a.observed, b.at);
    assert_eq!(to_a.lan, b.lan);
    assert!(to_a.initiator);
    assert_eq!(Some(to_a.cookie_echo), a.cookie);
    assert_eq!(to_b.peer, a.id());
    assert_eq!(to_b.observed, a.at);
    assert_eq!(to_b.lan, a.lan);
    assert!(!to_b.initiator);
    assert_eq!(Some(to_b.cookie_echo), b.cookie);
    assert_eq!((to_a.nonce, to_b.nonce), (0xfeed, 0xfeed));
}

#[test]
fn unknown_peers_get_unknown() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    register(&mut s, &mut a, t0);
    let stranger = DeviceId::from_bytes([5; 32]);
    let c = a.connect_bytes(stranger, 9);
    let (to, msg) = only(send(&mut s, a.at, &c, t0));
    assert_eq!(to, a.at);
    assert_eq!(
        msg,
        Message::Unknown(Unknown {
            target: stranger,
            nonce: 9
        })
    );
    // Asking for oneself is no introduction either.
    let c = a.connect_bytes(a.id(), 10);
    let (_, msg) = only(send(&mut s, a.at, &c, t0));
    assert!(matches!(msg, Message::Unknown(_)));
}

#[test]
fn connect_needs_a_registration_from_the_same_address() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    let mut b = Dev::new("198.51.100.2:6000");
    register(&mut s, &mut b, t0);
    // Never registered: a small error, so the device registers.
    a.cookie = Some([0; 16]);
    let c = a.connect_bytes(b.id(), 1);
    let (_, msg) = only(send(&mut s, a.at, &c, t0));
    let Message::Error(e) = msg else { panic!() };
    assert_eq!(e.code, ErrorCode::NotRegistered);
    // Registered, but the request comes from elsewhere (spoofed, or the NAT rebound).
    a.cookie = None;
    register(&mut s, &mut a, t0);
    let c = a.connect_bytes(b.id(), 2);
    let (to, msg) = only(send(&mut s, addr("203.0.113.1:5001"), &c, t0));
    assert_eq!(to, addr("203.0.113.1:5001"));
    assert!(matches!(
        msg,
        Message::Error(ErrorReply {
            code: ErrorCode::NotRegistered,
            ..
        })
    ));
    // A Connect signed by another key is dropped.
    let mallory = key();
    a.last_ms += 1;
    let forged = Connect {
        id: a.id(),
        target: b.id(),
        nonce: 3,
        timestamp_ms: a.last_ms,
        cookie: a.cookie.unwrap(),
    }
    .encode(&mallory)
    .unwrap();
    assert!(send(&mut s, a.at, &forged, t0).is_empty());
    assert_eq!(s.stats().introductions, 0);
}

#[test]
fn registrations_expire_without_refresh() {
    let t0 = Instant::now();
    let mut s = server(t0);
    let mut a = Dev::new("203.0.113.1:5000");
    let mut b = Dev::new("198.51.100.2:6000");
    register(&mut s, &mut a, t0);
    register(&mut s, &mut b, t0);
    // `a` refreshes every 25 s, `b` goes silent.
    let mut now = t0;
    for _ in 0..4 {
        now += Duration::from_secs(25);
        register(&mut s, &mut a, now);
        s.handle_timeout(now);
    }
    assert!(now > t0 + REGISTRATION_TTL);
    assert!(s.is_registered(&a.id(), now));
    assert!(!s.is_registered(&b.id(), now));
    assert_eq!(s.stats().registrations, 1, "swept");
    let c = a.connect_bytes(b.id(), 1);
    let (_, msg) = only(send(&mut s, a.at, &c, now));
    assert!(matches!(msg, Message::Unknown(_)));
    // The sweep runs on its own schedule.
    assert!(s.poll_timeout().unwrap() > now);
}

#[test]
fn registrations_are_capped() {
    let t0 = Instant::now();
    let config = ServerConfig {
        max_registrations: 3,
        ..ServerConfig::default()
    };
    let mut s = Server::new(config, t0, wall(t0));
    let mut devs: Vec<Dev> = (0..4)
        .map(|i| Dev::new(&format!("203.0.113.{}:5000", i + 1)))
        .collect();
    for d in devs.iter_mut().take(3) {
        register(&mut s, d, t0);
    }
    // The fourth gets its cookie, then `Full` instead of a registration.
    let d = &mut devs[3];
    let (_, msg) = only(send(&mut s, d.at, &d.register_bytes(), t0));
    let Message::Registered(r) = msg else {
        panic!()
    };
    d.cookie = Some(r.cookie);
    let (_, msg) = only(send(&mut s, d.at, &d.register_bytes(), t0));
    assert!(
        matches!(
            msg,
            Message::Error(ErrorReply {
                code: ErrorCode::Full,
                ..
            })
        ),
        "{msg:?}"
    );
    assert_eq!(s.stats().registrations, 3);
    // Known devices still refresh.
    let now = t0 + Duration::from_secs(60);
    register(&mut s, &mut devs[0], now);
    register(&mut s, &mut devs[1], now);
    // Once one expires there is room again.
    let now = t0 + REGISTRATION_TTL + Duration::from_secs(1);
    devs[3].cookie = None;
    register(&mut s, &mut devs[3], now);
    assert!(s.is_registered(&devs[3].id(), now));
}

#[test]
fn sources_are_rate_limited() {
    let t0 = Instant::now();
    let config = ServerConfig {
        rate_burst: 5,
        rate_per_sec: 2,
        ..ServerConfig::default()
    };
    let mut s = Server::new(config, t0, wall(t0));
    let mut a = Dev::new("203.0.113.1:5000");
    for _ in 0..5 {
        let bytes = a.register_bytes();
        assert_eq!(send(&mut s, a.at, &bytes, t0).len(), 1);
    }
    let bytes = a.register_bytes();
    assert!(send(&mut s, a.at, &bytes, t0).is_empty());
    // Another port of the same address shares the bucket; another address does not.
    let bytes = a.register_bytes();
    assert!(send(&mut s, addr("203.0.113.1:5001"), &bytes, t0).is_empty());
    let mut b = Dev::new("203.0.113.2:5000");
    let bytes = b.register_bytes();
    assert_eq!(send(&mut s, b.at, &bytes, t0).len(), 1);
    // Half a second later one more token has come back.
    let later = t0 + Duration::from_millis(500);
    let bytes = a.register_bytes();
    assert_eq!(send(&mut s, a.at, &bytes, later).len(), 1);
    let bytes = a.register_bytes();
    assert!(send(&mut s, a.at, &bytes, later).is_empty());
    assert_eq!(s.stats().rate_limited, 3);
}

#[test]
fn ipv6_sources_are_limited_per_64() {
    let t0 = Instant::now();
    let config = ServerConfig {
        rate_burst: 2,
        rate_per_sec: 1,
        ..ServerConfig::default()
    };
    let mut s = Server::new(config, t0, wall(t0));
    let mut a = Dev::new("[2001:db8:1:2::1]:5000");
    let hosts = [
        "[2001:db8:1:2::1]:5000",
        "[2001:db8:1:2::ffff]:5000",
        "[2001:db8:1:2:aaaa::1]:5000",
    ];
    let answered: usize = hosts
        .iter()
        .map(|h| send(&mut s, addr(h), &a.register_bytes(), t0).len())
        .sum();
    assert_eq!(answered, 2, "one /64, one bucket");
    assert_eq!(
        send(
            &mut s,
            addr("[2001:db8:1:3::1]:5000"),
            &a.register_bytes(),
            t0
        )
        .len(),
        1
    );
}

#[test]
fn the_rate_limiter_forgets_idle_sources_when_full() {
    let t0 = Instant::now();
    let config = ServerConfig {
        rate_burst: 2,
        rate_per_sec: 1,
        max_sources: 2,
        ..ServerConfig::default()
    };
    let mut s = Server::new(config, t0, wall(t0));
    let mut a = Dev::new("203.0.113.1:5000");
    assert_eq!(
        send(&mut s, addr("203.0.113.1:1"), &a.register_bytes(), t0).len(),
        1
    );
    assert_eq!(
        send(&mut s, addr("203.0.113.2:1"), &a.register_bytes(), t0).len(),
        1
    );
    // Table full, both buckets still in use: a third source is refused for now.
    assert!(send(&mut s, addr("203.0.113.3:1"), &a.register_bytes(), t0).is_empty());
    // Once the others have refilled (idle), they are forgotten and the newcomer gets in.
    let later = t0 + Duration::from_secs(5);
    assert_eq!(
        send(&mut s, addr("203.0.113.3:1"), &a.register_bytes(), later).len(),
        1
    );
}
