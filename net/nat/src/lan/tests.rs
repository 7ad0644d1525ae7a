//! LAN discovery: the wire format (round trip, arbitrary bytes, flipped bits) and the policy on
//! a fake clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::policy::{Config, Ignored, LanDiscovery, Peers, Verdict};
use super::wire::{self, Announcement, DecodeError};
use crate::identity::{DeviceId, DeviceKey};

const WALL: u64 = 1_764_000_000_000;

fn announcement(key: &DeviceKey, ts: u64, addrs: Vec<IpAddr>) -> Announcement {
    Announcement {
        id: key.id(),
        public_key: key.public_key(),
        port: 22100,
        addrs,
        timestamp_ms: ts,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn round_trip_and_signature() {
    let key = DeviceKey::generate().unwrap();
    let a = announcement(&key, WALL, vec![ip("192.168.1.5"), ip("fd00::5")]);
    let bytes = a.encode(&key).unwrap();
    assert_eq!(&bytes[..4], b"fyLA");
    let d = wire::decode(&bytes).unwrap();
    assert_eq!(d.body, a);
    d.verify().unwrap();
}

#[test]
fn every_flipped_bit_is_refused() {
    let key = DeviceKey::generate().unwrap();
    let bytes = announcement(&key, WALL, vec![ip("10.0.0.2")])
        .encode(&key)
        .unwrap();
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        if let Ok(d) = wire::decode(&b) {
            assert!(d.verify().is_err(), "bit {bit} flipped still verifies");
        }
    }
}

#[test]
fn a_key_signing_another_id_is_refused() {
    let key = DeviceKey::generate().unwrap();
    let other = DeviceKey::generate().unwrap();
    // Encoding refuses to sign for another device.
    let a = announcement(&other, WALL, vec![]);
    assert!(a.encode(&key).is_err());
    // A forged datagram: other's id with our key inside fails the id check.
    let mut forged = announcement(&key, WALL, vec![]);
    forged.id = other.id();
    let mut bytes = vec![];
    bytes.extend_from_slice(&wire::MAGIC);
    bytes.push(wire::VERSION);
    bytes.extend(postcard::to_stdvec(&forged).unwrap());
    bytes.extend([0u8; 64]);
    assert_eq!(wire::decode(&bytes), Err(DecodeError::IdMismatch));
}

#[test]
fn bad_address_lists_are_refused() {
    let key = DeviceKey::generate().unwrap();
    let many = announcement(
        &key,
        WALL,
        (0..9).map(|i| ip(&format!("10.0.0.{i}"))).collect(),
    );
    assert!(many.encode(&key).is_err());
    for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "ff02::1"] {
        assert!(announcement(&key, WALL, vec![ip(bad)])
            .encode(&key)
            .is_err());
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let _ = wire::decode(&bytes).map(|d| d.verify());
    }

    #[test]
    fn arbitrary_bodies_after_the_magic_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300)
    ) {
        let mut d = wire::MAGIC.to_vec();
        d.push(wire::VERSION);
        d.extend(bytes);
        let _ = wire::decode(&d).map(|d| d.verify());
    }

    #[test]
    fn round_trips(ts in any::<u64>(), port in 1u16.., raw in proptest::collection::vec(any::<[u8; 4]>(), 0..8)) {
        let key = DeviceKey::generate().unwrap();
        let addrs: Vec<IpAddr> = raw
            .into_iter()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
            .filter(wire::is_usable)
            .collect();
        let mut a = announcement(&key, ts, addrs);
        a.port = port;
        let d = wire::decode(&a.encode(&key).unwrap()).unwrap();
        prop_assert_eq!(&d.body, &a);
        prop_assert!(d.verify().is_ok());
    }
}

/// The daemon's peers, made up.
#[derive(Default)]
struct FakePeers {
    paired: Vec<DeviceId>,
    links: HashMap<DeviceId, SocketAddr>,
}

impl Peers for FakePeers {
    fn is_paired(&self, id: &DeviceId) -> bool {
        self.paired.contains(id)
    }
    fn direct_link(&self, id: &DeviceId) -> Option<SocketAddr> {
        self.links.get(id).copied()
    }
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

#[test]
fn announces_at_start_on_change_and_every_30_to_60_s() {
    let me = DeviceKey::generate().unwrap().id();
    let t0 = Instant::now();
    let mut d = LanDiscovery::new(me, Config::default());
    let mut r = rng();
    assert_eq!(d.poll_timeout(), None);
    assert!(
        d.poll_announce(t0, WALL, &mut r).is_none(),
        "not before start"
    );
    d.handle_interfaces(t0, vec![ip("10.0.0.2")]);
    d.handle_start(t0);
    assert_eq!(d.poll_timeout(), Some(t0));
    let a = d.poll_announce(t0, WALL, &mut r).unwrap();
    assert_eq!(a.addrs, vec![ip("10.0.0.2")]);
    assert_eq!(a.timestamp_ms, WALL);
    // Next periodic one within 30-60 s.
    let next = d.poll_timeout().unwrap();
    assert!(next >= t0 + Duration::from_secs(30) && next < t0 + Duration::from_secs(60));
    assert!(d
        .poll_announce(t0 + Duration::from_secs(29), WALL, &mut r)
        .is_none());
    // An address change half a second later waits for the one-per-second limit.
    let t1 = t0 + Duration::from_millis(500);
    assert!(d.handle_interfaces(t1, vec![ip("10.0.0.9")]));
    assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    assert!(d.poll_announce(t1, WALL + 500, &mut r).is_none());
    let t2 = t0 + Duration::from_secs(1);
    let a = d.poll_announce(t2, WALL + 1000, &mut r).unwrap();
    assert_eq!(a.addrs, vec![ip("10.0.0.9")]);
    // The same set again is no change.
    assert!(!d.handle_interfaces(t2, vec![ip("10.0.0.9")]));
    assert!(d
        .poll_announce(t2 + Duration::from_secs(2), WALL, &mut r)
        .is_none());
    // Periodic: due at its time, timestamps strictly increase even if the wall clock went back.
    let next = d.poll_timeout().unwrap();
    let a = d.poll_announce(next, WALL - 5000, &mut r).unwrap();
    assert_eq!(a.timestamp_ms, WALL + 1001);
}

#[test]
fn flapping_interfaces_stay_at_one_announcement_per_second() {
    let me = DeviceKey::generate().unwrap().id();
    let t0 = Instant::now();
    let mut d = LanDiscovery::new(me, Config::default());
    let mut r = rng();
    d.handle_start(t0);
    let mut sent = 0;
    for i in 0..1000u64 {
        let now = t0 + Duration::from_millis(10 * i);
        d.handle_interfaces(
            now,
            vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, (i % 2) as u8 + 1))],
        );
        if d.poll_announce(now, WALL + 10 * i, &mut r).is_some() {
            sent += 1;
        }
    }
    // 10 s of flapping: at most 11 announcements.
    assert!(sent <= 11, "{sent}");
}

struct Lan {
    d: LanDiscovery,
    peer: DeviceKey,
    peers: FakePeers,
    t0: Instant,
}

fn lan() -> Lan {
    let me = DeviceKey::generate().unwrap().id();
    let peer = DeviceKey::generate().unwrap();
    let peers = FakePeers {
        paired: vec![peer.id()],
        ..FakePeers::default()
    };
    Lan {
        d: LanDiscovery::new(me, Config::default()),
        peer,
        peers,
        t0: Instant::now(),
    }
}

#[test]
fn a_paired_device_at_a_new_address_is_dialled_at_once() {
    let mut l = lan();
    let from = sa("192.168.1.7:22102");
    let bytes = announcement(&l.peer, WALL, vec![ip("192.168.1.7"), ip("10.8.0.3")])
        .encode(&l.peer)
        .unwrap();
    let v = l.d.handle_datagram(l.t0, WALL, from, &bytes, &l.peers);
    assert_eq!(
        v,
        Verdict::Dial {
            peer: l.peer.id(),
            addrs: vec![sa("192.168.1.7:22100"), sa("10.8.0.3:22100")]
        }
    );
    // The same addresses a second later: dialled already.
    let t1 = l.t0 + Duration::from_secs(1);
    let bytes = announcement(
        &l.peer,
        WALL + 1000,
        vec![ip("192.168.1.7"), ip("10.8.0.3")],
    )
    .encode(&l.peer)
    .unwrap();
    assert_eq!(
        l.d.handle_datagram(t1, WALL + 1000, from, &bytes, &l.peers),
        Verdict::Heard { peer: l.peer.id() }
    );
    // Renumbered: dialled at once.
    let t2 = l.t0 + Duration::from_secs(2);
    let bytes = announcement(&l.peer, WALL + 2000, vec![ip("192.168.1.99")])
        .encode(&l.peer)
        .unwrap();
    let v =
        l.d.handle_datagram(t2, WALL + 2000, sa("192.168.1.99:22102"), &bytes, &l.peers);
    assert!(matches!(v, Verdict::Dial { .. }), "{v:?}");
    // Linked directly at that address: nothing to do, however long after.
    l.peers.links.insert(l.peer.id(), sa("192.168.1.99:22100"));
    let t3 = l.t0 + Duration::from_secs(300);
    let bytes = announcement(&l.peer, WALL + 300_000, vec![ip("192.168.1.99")])
        .encode(&l.peer)
        .unwrap();
    assert_eq!(
        l.d.handle_datagram(
            t3,
            WALL + 300_000,
            sa("192.168.1.99:22102"),
            &bytes,
            &l.peers
        ),
        Verdict::Heard { peer: l.peer.id() }
    );
    // Linked at an old address that the device no longer announces: dial.
    l.peers.links.insert(l.peer.id(), sa("192.168.1.7:22100"));
    let bytes = announcement(&l.peer, WALL + 301_000, vec![ip("192.168.1.99")])
        .encode(&l.peer)
        .unwrap();
    let v = l.d.handle_datagram(
        t3 + Duration::from_secs(1),
        WALL + 301_000,
        sa("192.168.1.99:22102"),
        &bytes,
        &l.peers,
    );
    assert!(matches!(v, Verdict::Dial { .. }), "{v:?}");
}

#[test]
fn unlinked_devices_are_redialled_at_most_every_30_s() {
    let mut l = lan();
    let from = sa("192.168.1.7:22102");
    let mut dials = 0;
    for s in 0..120u64 {
        let bytes = announcement(&l.peer, WALL + s * 1000, vec![ip("192.168.1.7")])
            .encode(&l.peer)
            .unwrap();
        let now = l.t0 + Duration::from_secs(s);
        if let Verdict::Dial { .. } =
            l.d.handle_datagram(now, WALL + s * 1000, from, &bytes, &l.peers)
        {
            dials += 1;
        }
    }
    assert_eq!(dials, 4);
}

#[test]
fn strangers_forgeries_replays_and_our_own_are_ignored() {
    let mut l = lan();
    let me_key = DeviceKey::generate().unwrap();
    let mut d = LanDiscovery::new(me_key.id(), Config::default());
    let from = sa("192.168.1.7:22102");
    let now = l.t0;
    // Our own.
    let own = announcement(&me_key, WALL, vec![]).encode(&me_key).unwrap();
    assert_eq!(
        d.handle_datagram(now, WALL, from, &own, &l.peers),
        Verdict::Own
    );
    // A stranger (correctly signed, not paired).
    let stranger = DeviceKey::generate().unwrap();
    let s = announcement(&stranger, WALL, vec![])
        .encode(&stranger)
        .unwrap();
    assert_eq!(
        d.handle_datagram(now, WALL, from, &s, &l.peers),
        Verdict::Ignored(Ignored::NotPaired(stranger.id()))
    );
    // The paired device's announcement with a broken signature.
    let mut forged = announcement(&l.peer, WALL, vec![ip("6.6.6.6")])
        .encode(&l.peer)
        .unwrap();
    let n = forged.len();
    forged[n - 1] ^= 1;
    assert_eq!(
        d.handle_datagram(now, WALL, from, &forged, &l.peers),
        Verdict::Ignored(Ignored::BadSignature(l.peer.id()))
    );
    // Garbage.
    assert!(matches!(
        d.handle_datagram(now, WALL, from, b"hello", &l.peers),
        Verdict::Ignored(Ignored::Malformed(_))
    ));
    // Too old, too far in the future.
    for ts in [WALL - 601_000, WALL + 601_000] {
        let b = announcement(&l.peer, ts, vec![]).encode(&l.peer).unwrap();
        assert_eq!(
            d.handle_datagram(now, WALL, sa("10.1.1.1:1"), &b, &l.peers),
            Verdict::Ignored(Ignored::OutOfWindow(l.peer.id()))
        );
    }
    // A genuine one, then the same again (a replay, or its multicast copy) and an older one.
    let b = announcement(&l.peer, WALL, vec![]).encode(&l.peer).unwrap();
    assert!(matches!(
        d.handle_datagram(now, WALL, sa("10.1.1.2:1"), &b, &l.peers),
        Verdict::Dial { .. }
    ));
    assert_eq!(
        d.handle_datagram(now, WALL, sa("10.1.1.3:1"), &b, &l.peers),
        Verdict::Ignored(Ignored::Replay(l.peer.id()))
    );
    let older = announcement(&l.peer, WALL - 1, vec![])
        .encode(&l.peer)
        .unwrap();
    assert_eq!(
        d.handle_datagram(now, WALL, sa("10.1.1.4:1"), &older, &l.peers),
        Verdict::Ignored(Ignored::Replay(l.peer.id()))
    );
    l.d.handle_unpaired(&l.peer.id());
}

#[test]
fn each_source_is_rate_limited_and_the_table_is_bounded() {
    let mut l = lan();
    let from = sa("192.168.1.7:22102");
    let now = l.t0;
    let results: Vec<Verdict> = (0..20)
        .map(|_| l.d.handle_datagram(now, WALL, from, b"x", &l.peers))
        .collect();
    let limited = results
        .iter()
        .filter(|v| **v == Verdict::Ignored(Ignored::RateLimited))
        .count();
    assert_eq!(limited, 12, "a burst of 8, then nothing");
    // Refilled at 2 per second.
    let later = now + Duration::from_secs(1);
    let ok = (0..5)
        .filter(|_| {
            l.d.handle_datagram(later, WALL, from, b"x", &l.peers)
                != Verdict::Ignored(Ignored::RateLimited)
        })
        .count();
    assert_eq!(ok, 2);
    // A flood of spoofed sources: at most 256 tracked; busy ones keep new ones out, quiet ones
    // make room again.
    for i in 0..300u32 {
        let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 1);
        for _ in 0..8 {
            l.d.handle_datagram(later, WALL, src, b"x", &l.peers);
        }
    }
    let quiet_later = later + Duration::from_secs(10);
    let v =
        l.d.handle_datagram(quiet_later, WALL, sa("172.16.0.1:1"), b"x", &l.peers);
    assert!(
        matches!(v, Verdict::Ignored(Ignored::Malformed(_))),
        "{v:?}"
    );
}

#[test]
fn directed_broadcast_from_the_mask_when_the_interface_has_none() {
    use super::net::directed_broadcast;
    let ip = Ipv4Addr::new(10, 77, 0, 11);
    let mask = Some(Ipv4Addr::new(255, 255, 255, 0));
    let want = Some(Ipv4Addr::new(10, 77, 0, 255));
    assert_eq!(
        directed_broadcast(ip, Some(Ipv4Addr::UNSPECIFIED), mask),
        want
    );
    assert_eq!(directed_broadcast(ip, None, mask), want);
    assert_eq!(
        directed_broadcast(ip, Some(Ipv4Addr::new(10, 77, 0, 127)), mask),
        Some(Ipv4Addr::new(10, 77, 0, 127))
    );
    assert_eq!(
        directed_broadcast(ip, None, Some(Ipv4Addr::new(255, 255, 255, 254))),
        None
    );
    assert_eq!(directed_broadcast(ip, None, None), None);
}

#[test]
fn destinations_and_announced_addresses() {
    use super::net::{announced_addrs, destinations, Interface};
    let ifaces = vec![
        Interface {
            name: "eth0".into(),
            index: 2,
            addrs: vec![ip("192.168.1.5"), ip("fe80::1")],
            broadcasts: vec![Ipv4Addr::new(192, 168, 1, 255)],
            multicast: true,
        },
        Interface {
            name: "wg0".into(),
            index: 3,
            addrs: vec![ip("10.8.0.2")],
            broadcasts: vec![],
            multicast: false,
        },
    ];
    let d = destinations(&ifaces, 22102);
    assert_eq!(
        d,
        vec![
            sa("255.255.255.255:22102"),
            sa("192.168.1.255:22102"),
            SocketAddr::V6(std::net::SocketAddrV6::new(
                super::MULTICAST_GROUP,
                22102,
                0,
                2
            )),
        ]
    );
    // An IPv4 QUIC socket: only IPv4 addresses are worth announcing.
    assert_eq!(
        announced_addrs(&ifaces, sa("0.0.0.0:22100")),
        vec![ip("10.8.0.2"), ip("192.168.1.5")]
    );
    assert_eq!(announced_addrs(&ifaces, sa("[::]:22100")).len(), 3);
    // Bound to one address: that one.
    assert_eq!(
        announced_addrs(&ifaces, sa("192.168.1.5:22100")),
        vec![ip("192.168.1.5")]
    );
}
