//! Clients and a server together on a simulated network with a simulated clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{addr, key, wall};
use crate::identity::DeviceId;
use crate::rendezvous::client::{CONNECT_DEADLINE, REREGISTER_INTERVAL};
use crate::rendezvous::messages::{decode, Message, Punch};
use crate::rendezvous::puncher::CandidateKind;
use crate::rendezvous::{Client, ClientConfig, ClientEvent, Server, ServerConfig, Transmit};
use crate::tls::AllowList;

const SERVER: &str = "192.0.2.1:3478";
/// One-way delay of every datagram.
const DELAY: Duration = Duration::from_millis(10);

/// A server and some clients, each client at one address (no NAT: observed = own address).
struct Net {
    now: Instant,
    server: Server,
    clients: Vec<(SocketAddr, Client)>,
    /// (delivery time, from, to, bytes)
    in_flight: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    events: Vec<Vec<ClientEvent>>,
    /// Datagrams to this address are lost.
    blackhole: Option<SocketAddr>,
}

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        Net {
            now,
            server: Server::new(ServerConfig::default(), now, wall(now)),
            clients: Vec::new(),
            in_flight: VecDeque::new(),
            events: Vec::new(),
            blackhole: None,
        }
    }

    /// Adds a client at `at` that accepts introductions from `accept`.
    fn add(&mut self, at: &str, accept: &[DeviceId]) -> usize {
        let at = addr(at);
        let policy = Arc::new(AllowList::with_ids(accept.iter().copied()));
        let config = ClientConfig {
            server: addr(SERVER),
            lan: vec![at],
        };
        let client = Client::new(key(), config, policy, self.now, wall(self.now));
        self.clients.push((at, client));
        self.events.push(Vec::new());
        self.clients.len() - 1
    }

    fn id(&self, i: usize) -> DeviceId {
        self.clients[i].1.id()
    }

    fn send(&mut self, from: SocketAddr, out: Vec<Transmit>) {
        for (to, bytes) in out {
            if Some(to) != self.blackhole {
                self.in_flight
                    .push_back((self.now + DELAY, from, to, bytes));
            }
        }
    }

    fn connect(&mut self, i: usize, peer: DeviceId) -> u64 {
        let (nonce, out) = self.clients[i].1.connect(peer, self.now);
        let at = self.clients[i].0;
        self.send(at, out);
        nonce
    }

    /// Runs until `until`, delivering datagrams and firing timers in time order.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next_timer = self
                .clients
                .iter()
                .filter_map(|(_, c)| c.poll_timeout())
                .chain(self.server.poll_timeout())
                .min();
            let next_delivery = self.in_flight.iter().map(|d| d.0).min();
            let next = match (next_timer, next_delivery) {
                (Some(t), Some(d)) => t.min(d),
                (t, d) => t.or(d).unwrap_or(until),
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            let now = self.now;
            // Deliver everything due.
            let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|d| d.0 <= now);
            self.in_flight = later.into();
            for (_, from, to, bytes) in due {
                if to == addr(SERVER) {
                    let out = self.server.handle_datagram(from, &bytes, now);
                    self.send(to, out);
                } else if let Some(i) = self.clients.iter().position(|(a, _)| *a == to) {
                    let out = self.clients[i].1.handle_datagram(from, &bytes, now);
                    self.send(to, out);
                }
            }
            self.server.handle_timeout(now);
            for i in 0..self.clients.len() {
                let out = self.clients[i].1.handle_timeout(now);
                let at = self.clients[i].0;
                self.send(at, out);
                while let Some(e) = self.clients[i].1.poll_event() {
                    self.events[i].push(e);
                }
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }
}

#[test]
fn two_clients_register_and_punch() {
    let mut net = Net::new();
    let a = net.add("203.0.113.1:5000", &[]);
    let b_accepts = [net.id(a)];
    let b = net.add("198.51.100.2:6000", &b_accepts);
    net.run_for(Duration::from_millis(100));
    // Register + Registered (unconfirmed) + Register with cookie + Registered: 2 round trips.
    assert!(net.clients[a].1.is_registered(net.now));
    assert!(net.clients[b].1.is_registered(net.now));
    assert_eq!(
        net.events[a],
        vec![ClientEvent::Registered {
            observed: addr("203.0.113.1:5000")
        }]
    );
    let peer_b = net.id(b);
    let nonce = net.connect(a, peer_b);
    net.run_for(Duration::from_millis(200));
    let punched = |events: &[ClientEvent]| {
        events.iter().find_map(|e| match e {
            ClientEvent::Punched {
                nonce: n,
                path,
                initiator,
                peer,
            } => Some((*n, *path, *initiator, *peer)),
            _ => None,
        })
    };
    let (na, pa, ia, peer_a_sees) = punched(&net.events[a]).expect("A punched");
    let (nb, pb, ib, peer_b_sees) = punched(&net.events[b]).expect("B punched");
    assert_eq!((na, nb), (nonce, nonce));
    assert!(ia && !ib);
    assert_eq!((peer_a_sees, peer_b_sees), (net.id(b), net.id(a)));
    assert_eq!(pa.addr, addr("198.51.100.2:6000"));
    assert_eq!(pb.addr, addr("203.0.113.1:5000"));
    // The address is both announced and observed: it counts as LAN, the better kind.
    assert_eq!(pa.kind, CandidateKind::Lan);
    // One network round trip for the probe and its answer.
    assert_eq!(pa.rtt, 2 * DELAY);
}

#[test]
fn registration_is_kept_alive() {
    let mut net = Net::new();
    let a = net.add("203.0.113.1:5000", &[]);
    net.run_for(Duration::from_secs(600));
    assert!(net.clients[a].1.is_registered(net.now));
    assert!(net.server.is_registered(&net.id(a), net.now));
    // One Registered event only: the address never changed.
    assert_eq!(net.events[a].len(), 1);
    // It refreshes on schedule.
    assert!(net.clients[a].1.poll_timeout().unwrap() <= net.now + REREGISTER_INTERVAL);
}

/// The NAT's public mapping changes (a router reboot, a new address from the ISP): the next
/// refresh comes from the new address, the server records it, and the client reports it.
#[test]
fn a_new_public_address_is_registered_and_reported() {
    let mut net = Net::new();
    let a = net.add("203.0.113.1:5000", &[]);
    net.run_for(Duration::from_millis(100));
    let moved = addr("203.0.113.77:6123");
    net.clients[a].0 = moved;
    net.run_for(REREGISTER_INTERVAL + Duration::from_secs(1));
    assert!(net.clients[a].1.is_registered(net.now));
    assert_eq!(net.clients[a].1.observed(), Some(moved));
    assert_eq!(
        net.events[a],
        vec![
            ClientEvent::Registered {
                observed: addr("203.0.113.1:5000")
            },
            ClientEvent::Registered { observed: moved },
        ]
    );
}

#[test]
fn unknown_peer_is_reported() {
    let mut net = Net::new();
    let a = net.add("203.0.113.1:5000", &[]);
    let stranger = DeviceId::from_bytes([4; 32]);
    // Asked before registering: the request waits for the registration.
    let nonce = net.connect(a, stranger);
    net.run_for(Duration::from_millis(200));
    assert!(net.events[a].contains(&ClientEvent::PeerUnknown {
        peer: stranger,
        nonce
    }));
}

#[test]
fn introductions_the_policy_refuses_are_ignored() {
    let mut net = Net::new();
    let a = net.add("203.0.113.1:5000", &[]);
    let b = net.add("198.51.100.2:6000", &[]); // accepts no one
    net.run_for(Duration::from_millis(100));
    let peer_b = net.id(b);
    let nonce = net.connect(a, peer_b);
    net.run_for(Duration::from_secs(8));
    assert!(net.events[b].contains(&ClientEvent::PunchRefused { peer: net.id(a) }));
    assert!(net.events[a].contains(&ClientEvent::PunchFailed {
        peer: peer_b,
        nonce,
        initiator: true,
        peer_relay: None,
    }));
}

#[test]
fn pairing_window_admits_an_unknown_joiner() {
    let mut net = Net::new();
    let inviter_at = addr("198.51.100.2:6000");
    let policy = Arc::new(AllowList::new());
    let window = policy.open_pairing();
    let inviter = Client::new(
        key(),
        ClientConfig {
            server: addr(SERVER),
            lan: vec![inviter_at],
        },
        policy.clone(),
        net.now,
        wall(net.now),
    );
    let inviter_id = inviter.id();
    net.clients.push((inviter_at, inviter));
    net.events.push(Vec::new());
    let joiner = net.add("203.0.113.1:5000", &[]);
    net.run_for(Duration::from_millis(100));
    // The joiner knows only the inviter's id (from the invitation).
    let nonce = net.connect(joiner, inviter_id);
    net.run_for(Duration::from_millis(300));
    assert!(net.events[joiner]
        .iter()
        .any(|e| matches!(e, ClientEvent::Punched { nonce: n, .. } if *n == nonce)));
    drop(window);
}

#[test]
fn clients_recover_from_a_server_restart() {
    let mut net = Net::new();
    let a = net.add("203.0.113.1:5000", &[]);
    let b_accepts = [net.id(a)];
    let b = net.add("198.51.100.2:6000", &b_accepts);
    net.run_for(Duration::from_millis(100));
    // The server restarts: all registrations and the cookie key are gone.
    net.server = Server::new(ServerConfig::default(), net.now, wall(net.now));
    // B's next refresh re-registers it (its old cookie is refused, a new one is handed out).
    net.run_for(REREGISTER_INTERVAL + Duration::from_secs(1));
    assert!(net.server.is_registered(&net.id(b), net.now));
    // A refreshed at the same time; asking now works as before the restart.
    let peer_b = net.id(b);
    let nonce = net.connect(a, peer_b);
    net.run_for(Duration::from_millis(500));
    assert!(
        net.events[a]
            .iter()
            .any(|e| matches!(e, ClientEvent::Punched { nonce: n, .. } if *n == nonce)),
        "{:?}",
        net.events[a]
    );
}

#[test]
fn a_restarted_server_is_relearned_on_connect() {
    let mut net = Net::new();
    let a = net.add("203.0.113.1:5000", &[]);
    let b_accepts = [net.id(a)];
    let b = net.add("198.51.100.2:6000", &b_accepts);
    net.run_for(Duration::from_millis(100));
    let now = net.now;
    net.server = Server::new(ServerConfig::default(), now, wall(now));
    // Only B has re-registered (forced) when A asks right after the restart.
    let out = net.clients[b]
        .1
        .set_lan_candidates(vec![addr("198.51.100.2:6000"), addr("10.0.0.2:6000")], now);
    net.send(addr("198.51.100.2:6000"), out);
    net.run_for(Duration::from_millis(100));
    let nonce = net.connect(a, net.id(b));
    // A's Connect gets NotRegistered, A registers again and resends.
    net.run_for(Duration::from_millis(300));
    assert!(net.events[a]
        .iter()
        .any(|e| matches!(e, ClientEvent::Punched { nonce: n, .. } if *n == nonce)));
}

#[test]
fn an_unreachable_server_times_out_the_request() {
    let mut net = Net::new();
    net.blackhole = Some(addr(SERVER));
    let a = net.add("203.0.113.1:5000", &[]);
    let stranger = DeviceId::from_bytes([4; 32]);
    let nonce = net.connect(a, stranger);
    net.run_for(CONNECT_DEADLINE + Duration::from_secs(1));
    assert!(net.events[a].contains(&ClientEvent::ConnectTimedOut {
        peer: stranger,
        nonce
    }));
    assert!(!net.clients[a].1.is_registered(net.now));
}

#[test]
fn a_punch_forged_from_the_server_address_is_ignored() {
    let mut net = Net::new();
    let a = net.add("203.0.113.1:5000", &[]);
    net.run_for(Duration::from_millis(100));
    let mallory = key();
    let forged = Punch {
        peer: mallory.id(),
        peer_public_key: mallory.public_key(),
        observed: addr("192.0.2.99:1"),
        lan: vec![],
        nonce: 1,
        initiator: false,
        cookie_echo: [0; 16], // the attacker does not know A's cookie
        peer_relay: None,
    }
    .encode()
    .unwrap();
    let now = net.now;
    let out = net.clients[a].1.handle_datagram(addr(SERVER), &forged, now);
    assert!(out.is_empty());
    assert!(net.clients[a].1.poll_event().is_none());
    // Datagrams that would be fine from the server are ignored from anyone else.
    let Ok(Message::Punch(_)) = decode(&forged) else {
        panic!()
    };
    assert!(net.clients[a]
        .1
        .handle_datagram(addr("192.0.2.99:1"), &forged, now)
        .is_empty());
}
