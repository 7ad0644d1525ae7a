//! Relay routes: which addresses go through which TURN server to which peer, the 240/8 aliases
//! for peers that reached our relayed address, and "relay everything" (see "Relay routing" in
//! the module documentation of [`crate::mux`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tracing::warn;

use super::{read, write, MuxSocket, Shared};

/// Learned relay routes (peers that reached our relayed address) kept at most; past it, new
/// peers are not answered through the relay. Each costs a channel on the TURN server (4,096).
const MAX_LEARNED: u32 = 1024;
/// Relay aliases live in 240.0.0.0/8 (reserved, never routed): see "Relay routing".
const ALIAS_NET: u8 = 240;
/// Pending channel-bind requests per TURN server.
const BIND_QUEUE: usize = 64;

/// Where datagrams to one address go instead: through a TURN server to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRoute {
    /// The TURN server's address.
    pub server: SocketAddr,
    /// The peer's own address, as the TURN server sees it.
    pub peer: SocketAddr,
    /// The channel bound to the peer on that server; until there is one, Send indications.
    pub channel: Option<u16>,
}

/// Whether `ip` is only meaningful on a local network: private, shared (CGNAT), loopback or
/// link-local.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || (a == 100 && b & 0xC0 == 64)
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback() || first & 0xFE00 == 0xFC00 || first & 0xFFC0 == 0xFE80
        }
    }
}

/// Whether `addr` is a relay alias: a peer that reached this device through its TURN relay
/// (see "Relay routing"). [`MuxSocket::relay_route`] has the peer's real address.
pub fn is_relay_alias(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V4(ip) if ip.octets()[0] == ALIAS_NET)
}

#[derive(Default)]
pub(super) struct Routes {
    /// TURN servers, each with where to ask for a channel to a peer.
    pub(super) servers: HashMap<SocketAddr, mpsc::Sender<SocketAddr>>,
    /// Address (as consumers see it) -> route.
    by_addr: HashMap<SocketAddr, RelayRoute>,
    /// (server, channel) -> address.
    pub(super) by_channel: HashMap<(SocketAddr, u16), SocketAddr>,
    /// (server, peer) -> address.
    by_peer: HashMap<(SocketAddr, SocketAddr), SocketAddr>,
    /// Everything goes through this server (see "Relay routing").
    relay_all: Option<SocketAddr>,
    /// While relaying everything, the one address still tried directly (to find out whether
    /// UDP gets through again; see [`MuxSocket::set_probe_direct`]).
    probe_direct: Option<SocketAddr>,
    learned: u32,
    next_alias: u32,
}

impl Routes {
    fn insert(&mut self, addr: SocketAddr, route: RelayRoute) {
        self.remove(addr);
        if let Some(channel) = route.channel {
            self.by_channel.insert((route.server, channel), addr);
        }
        self.by_peer.insert((route.server, route.peer), addr);
        self.by_addr.insert(addr, route);
    }

    fn remove(&mut self, addr: SocketAddr) -> Option<RelayRoute> {
        let old = self.by_addr.remove(&addr)?;
        if let Some(channel) = old.channel {
            self.by_channel.remove(&(old.server, channel));
        }
        self.by_peer.remove(&(old.server, old.peer));
        Some(old)
    }

    /// Adds a route for `peer` through `server` under `addr` (a fresh alias if `None`) and asks
    /// for a channel to it. `None` if the learned routes are full.
    fn learn(
        &mut self,
        server: SocketAddr,
        peer: SocketAddr,
        addr: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        if self.learned >= MAX_LEARNED {
            return None;
        }
        let addr = match addr {
            Some(a) => a,
            None => loop {
                self.next_alias = self.next_alias.wrapping_add(1) & 0x00FF_FFFF;
                let [_, a, b, c] = self.next_alias.to_be_bytes();
                let alias = SocketAddr::new(Ipv4Addr::new(ALIAS_NET, a, b, c).into(), peer.port());
                if self.next_alias != 0 && !self.by_addr.contains_key(&alias) {
                    break alias;
                }
            },
        };
        self.learned += 1;
        self.insert(
            addr,
            RelayRoute {
                server,
                peer,
                channel: None,
            },
        );
        if let Some(binds) = self.servers.get(&server) {
            // A full queue only delays the channel: Send indications work meanwhile.
            let _ = binds.try_send(peer);
        }
        Some(addr)
    }
}

impl Shared {
    /// The address a peer that sent to our relayed address on `server` is presented under:
    /// its route's, or a new learned one (see "Relay routing"). `None` if no more can be
    /// learned.
    pub(super) fn learned_addr(&self, server: SocketAddr, peer: SocketAddr) -> Option<SocketAddr> {
        if let Some(addr) = read(&self.routes).by_peer.get(&(server, peer)) {
            return Some(*addr);
        }
        let mut routes = write(&self.routes);
        if let Some(addr) = routes.by_peer.get(&(server, peer)) {
            return Some(*addr);
        }
        // Relaying everything, nothing arrives directly: the real address is unambiguous.
        let addr = (routes.relay_all == Some(server)).then_some(peer);
        let learned = routes.learn(server, peer, addr);
        if learned.is_none() {
            warn!(%peer, "too many peers reached us through the relay; not answering this one");
        }
        learned
    }

    /// The route to `to`; while relaying everything, a new one for a new destination.
    pub(super) fn route_for(&self, to: SocketAddr) -> Option<RelayRoute> {
        {
            let routes = read(&self.routes);
            if routes.probe_direct == Some(to) {
                return None;
            }
            if let Some(route) = routes.by_addr.get(&to) {
                return Some(*route);
            }
            if routes.relay_all.is_none() || routes.servers.contains_key(&to) {
                return None;
            }
        }
        let mut routes = write(&self.routes);
        let server = routes.relay_all?;
        if is_local(to.ip()) && !is_local(server.ip()) {
            // A LAN peer is reached directly (the relay could not reach it anyway; coturn even
            // stops relaying for an allocation whose peer turns out unreachable).
            return None;
        }
        if !routes.by_addr.contains_key(&to) {
            routes.learn(server, to, Some(to))?;
        }
        routes.by_addr.get(&to).copied()
    }
}

impl MuxSocket {
    /// Treats datagrams from `server` as coming from a TURN server (ChannelData and Data
    /// indications recognised). The receiver gets the peers that need a channel on it: peers
    /// of learned routes, and new destinations while relaying everything.
    pub(crate) fn add_turn_server(&self, server: SocketAddr) -> mpsc::Receiver<SocketAddr> {
        let (tx, rx) = mpsc::channel(BIND_QUEUE);
        write(&self.shared().routes).servers.insert(server, tx);
        self.shared().relaying.store(true, Ordering::Release);
        rx
    }

    /// Forgets `server` and every route through it.
    pub(crate) fn remove_turn_server(&self, server: SocketAddr) {
        let mut routes = write(&self.shared().routes);
        routes.servers.remove(&server);
        let gone: Vec<SocketAddr> = routes
            .by_addr
            .iter()
            .filter(|(_, r)| r.server == server)
            .map(|(a, _)| *a)
            .collect();
        for addr in gone {
            routes.remove(addr);
        }
        if routes.relay_all == Some(server) {
            routes.relay_all = None;
        }
        routes.learned = 0;
        self.shared()
            .relaying
            .store(!routes.servers.is_empty(), Ordering::Release);
    }

    /// Sends datagrams for `addr` through `route`, and delivers what arrives on it as coming
    /// from `addr`.
    pub(crate) fn route_via_relay(&self, addr: SocketAddr, route: RelayRoute) {
        write(&self.shared().routes).insert(addr, route);
    }

    /// Sends datagrams for `addr` directly again.
    pub(crate) fn unroute(&self, addr: SocketAddr) {
        write(&self.shared().routes).remove(addr);
    }

    /// A channel to `peer` on `server` is bound: the route to it uses ChannelData from now on.
    pub(crate) fn channel_bound(&self, server: SocketAddr, peer: SocketAddr, channel: u16) {
        let mut routes = write(&self.shared().routes);
        if let Some(&addr) = routes.by_peer.get(&(server, peer)) {
            if let Some(route) = routes.by_addr.get(&addr).copied() {
                routes.insert(
                    addr,
                    RelayRoute {
                        channel: Some(channel),
                        ..route
                    },
                );
            }
        }
    }

    /// No channel to `peer` on `server` could be bound: forget a learned route to it that has
    /// none (the next datagram to or from the peer asks again).
    pub(crate) fn channel_failed(&self, server: SocketAddr, peer: SocketAddr) {
        let mut routes = write(&self.shared().routes);
        if let Some(&addr) = routes.by_peer.get(&(server, peer)) {
            if routes
                .by_addr
                .get(&addr)
                .is_some_and(|r| r.channel.is_none())
            {
                routes.remove(addr);
                routes.learned = routes.learned.saturating_sub(1);
            }
        }
    }

    /// Sends every datagram to an address other than a TURN server through the TURN server
    /// `server` (registered by a [`crate::turn::TurnClient`]), or, with `None`, directly again.
    /// For networks that block all UDP but the TURN server's. Leaving the mode drops the routes
    /// it made (those under a peer's real address), so those peers are reached directly again.
    pub fn set_relay_all(&self, server: Option<SocketAddr>) {
        let mut routes = write(&self.shared().routes);
        if server.is_some_and(|s| !routes.servers.contains_key(&s)) {
            warn!(server = ?server, "relaying everything needs a TURN allocation on that server");
            return;
        }
        if server.is_none() && routes.relay_all.is_some() {
            let own: Vec<SocketAddr> = routes
                .by_addr
                .iter()
                .filter(|(addr, r)| **addr == r.peer)
                .map(|(addr, _)| *addr)
                .collect();
            for addr in own {
                routes.remove(addr);
                routes.learned = routes.learned.saturating_sub(1);
            }
        }
        routes.relay_all = server;
        routes.probe_direct = None;
    }

    /// While relaying everything, sends to `addr` directly after all (`None`: relayed again),
    /// without touching any route: a datagram to the rendezvous server that gets an answer
    /// this way shows the network lets UDP through again.
    pub fn set_probe_direct(&self, addr: Option<SocketAddr>) {
        write(&self.shared().routes).probe_direct = addr;
    }

    /// The TURN server everything goes through, if [`set_relay_all`](Self::set_relay_all) set
    /// one.
    pub fn relay_all(&self) -> Option<SocketAddr> {
        read(&self.shared().routes).relay_all
    }

    /// The route datagrams to `addr` take, if they go through a relay.
    pub fn relay_route(&self, addr: SocketAddr) -> Option<RelayRoute> {
        let addr = super::canonical(addr);
        read(&self.shared().routes).by_addr.get(&addr).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn the_three_indexes_stay_in_step() {
        let mut routes = Routes::default();
        let (server, peer, alias) = (
            addr("192.0.2.1:3478"),
            addr("198.51.100.7:4000"),
            addr("240.0.0.1:4000"),
        );
        let route = RelayRoute {
            server,
            peer,
            channel: None,
        };
        routes.insert(alias, route);
        assert_eq!(routes.by_peer.get(&(server, peer)), Some(&alias));
        assert!(routes.by_channel.is_empty(), "no channel yet");
        // The channel is bound: the route is replaced, and found by its channel.
        routes.insert(
            alias,
            RelayRoute {
                channel: Some(0x4001),
                ..route
            },
        );
        assert_eq!(routes.by_channel.get(&(server, 0x4001)), Some(&alias));
        assert_eq!(routes.by_addr.len(), 1);
        assert_eq!(routes.remove(alias).map(|r| r.channel), Some(Some(0x4001)));
        assert!(
            routes.by_addr.is_empty() && routes.by_channel.is_empty() && routes.by_peer.is_empty()
        );
        assert_eq!(routes.remove(alias), None);
    }

    #[test]
    fn learned_peers_get_distinct_aliases_in_240_8_and_ask_for_a_channel() {
        let mut routes = Routes::default();
        let server = addr("192.0.2.1:3478");
        let (tx, mut rx) = mpsc::channel(4);
        routes.servers.insert(server, tx);
        let one = routes
            .learn(server, addr("198.51.100.7:4000"), None)
            .expect("learned");
        let two = routes
            .learn(server, addr("198.51.100.8:4000"), None)
            .expect("learned");
        assert!(is_relay_alias(one) && is_relay_alias(two), "{one} {two}");
        assert_ne!(one, two);
        assert_eq!(one.port(), 4000, "an alias keeps the peer's port");
        assert!(!is_relay_alias(addr("198.51.100.7:4000")));
        assert_eq!(rx.try_recv().ok(), Some(addr("198.51.100.7:4000")));
        assert_eq!(rx.try_recv().ok(), Some(addr("198.51.100.8:4000")));
        // Relaying everything, a peer keeps its own address.
        let real = addr("203.0.113.5:7000");
        assert_eq!(routes.learn(server, real, Some(real)), Some(real));
        assert_eq!(routes.by_addr.get(&real).map(|r| r.peer), Some(real));
    }

    #[test]
    fn learning_stops_at_the_limit() {
        let mut routes = Routes {
            learned: MAX_LEARNED - 1,
            ..Routes::default()
        };
        let server = addr("192.0.2.1:3478");
        assert!(routes.learn(server, addr("198.51.100.7:1"), None).is_some());
        assert_eq!(routes.learn(server, addr("198.51.100.7:2"), None), None);
    }

    #[test]
    fn local_addresses_are_told_apart_from_public_ones() {
        for (ip, local) in [
            ("10.1.2.3", true),
            ("192.168.1.1", true),
            ("172.16.0.1", true),
            ("100.64.0.1", true),
            ("100.128.0.1", false),
            ("127.0.0.1", true),
            ("169.254.1.1", true),
            ("198.51.100.7", false),
            ("::1", true),
            ("fd00::1", true),
            ("fe80::1", true),
            ("2001:db8::1", false),
        ] {
            assert_eq!(is_local(ip.parse().expect("ip")), local, "{ip}");
        }
    }
}
