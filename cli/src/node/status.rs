//! What `fybrk status` and `fybrk peers` show: each paired device, its link (path, loss,
//! throughput, a quality word) and sync progress.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use fybrk_control::PingReply;
use fybrk_net::identity::DeviceId;
use fybrk_net::transport::peer_addr;

use fybrk_control::{
    NatStatus, NetworkStatus, PathKind, PeerInfo, PeerStatus, PeersReply, Quality, RelayStatus,
};

use super::{lock, unix_now, Node, Shared};

impl Node {
    /// Peers and sync progress for `fybrk status`.
    pub fn status(&self) -> NetworkStatus {
        self.shared.status()
    }

    /// Peers' recent mass deletions, for `status`.
    pub fn mass_deletions(&self) -> Vec<fybrk_control::MassDeletionAlert> {
        let sh = &self.shared;
        let alerts = lock(&sh.mass).alerts(std::time::Instant::now());
        let book = lock(&sh.book);
        alerts
            .iter()
            .map(|a| {
                let name = book
                    .iter()
                    .find(|(id, _)| id.short() == a.device)
                    .map(|(_, p)| p.name.clone());
                fybrk_control::MassDeletionAlert {
                    device: name.unwrap_or_else(|| fybrk_store::naming::device_tag(a.device)),
                    deleted: a.deleted,
                    since_unix: u64::try_from(a.first_ns / 1_000_000_000).unwrap_or(0),
                    undo: crate::massdel::undo_command(a),
                }
            })
            .collect()
    }

    /// One attempt of `fybrk ping`: the link to the device `query` names (its name or id
    /// prefix), its path and round trip. Without a link, wakes the device's dialler and waits up
    /// to `wait` for one.
    pub fn ping(&self, query: &str, wait: Duration) -> anyhow::Result<PingReply> {
        let sh = &self.shared;
        let found: Vec<(DeviceId, String, Option<SocketAddr>)> = lock(&sh.book)
            .iter()
            .filter(|(id, p)| super::names_device(query, id, &p.name))
            .map(|(id, p)| (*id, p.name.clone(), p.addrs.first().copied()))
            .collect();
        let (id, name, last_addr) = match found.as_slice() {
            [one] => one.clone(),
            [] => anyhow::bail!("no paired device is called {query:?} (see `fybrk peers`)"),
            _ => anyhow::bail!("{query:?} names several devices: give more of the id"),
        };
        let deadline = Instant::now() + wait;
        let mut woken = false;
        loop {
            if let Some(reply) = sh.ping_link(id, &name) {
                return Ok(reply);
            }
            if !woken {
                if let Some(wake) = lock(&sh.dialers).get(&id) {
                    wake.notify_one();
                }
                woken = true;
            }
            if Instant::now() >= deadline {
                return Ok(PingReply {
                    id: id.to_string(),
                    name,
                    connected: false,
                    path: None,
                    addr: last_addr,
                    relay: None,
                    rtt_ms: None,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Paired devices for `fybrk peers`.
    pub fn peers(&self) -> PeersReply {
        let sh = &self.shared;
        let links = lock(&sh.links);
        let peers = lock(&sh.book)
            .iter()
            .map(|(id, p)| PeerInfo {
                id: id.to_string(),
                name: p.name.clone(),
                addrs: p.addrs.clone(),
                connected: links.contains_key(id),
                last_seen_unix: p.last_seen_unix,
            })
            .collect();
        PeersReply { peers }
    }
}

impl Shared {
    /// The ping answer for `peer`'s link, if one is up.
    fn ping_link(&self, peer: DeviceId, name: &str) -> Option<PingReply> {
        let links = lock(&self.links);
        let l = links.get(&peer)?;
        let remote = peer_addr(&l.conn);
        let route = self.mux.relay_route(remote);
        let addr = route.map_or(remote, |r| r.peer);
        let path = path_kind(l.relayed, addr);
        let relay = if l.relayed {
            route
                .map(|r| r.server)
                .or_else(|| lock(&self.peer_relays).contains(&remote).then_some(remote))
        } else {
            None
        };
        Some(PingReply {
            id: peer.to_string(),
            name: name.to_owned(),
            connected: true,
            path: Some(path),
            addr: Some(addr),
            relay,
            rtt_ms: Some(l.conn.rtt().as_secs_f64() * 1000.0),
        })
    }

    pub(super) fn status(&self) -> NetworkStatus {
        let links = lock(&self.links);
        let book = lock(&self.book);
        let mut pending_items = 0;
        let mut pending_bytes = 0;
        let peers: Vec<PeerStatus> = book
            .iter()
            .map(|(id, p)| match links.get(id) {
                Some(l) => {
                    let stats = l.conn.stats();
                    pending_items += l.pending.0;
                    pending_bytes += l.pending.1;
                    // A peer that reached our relay is known under an alias: show its address.
                    let addr = peer_addr(&l.conn);
                    let addr = self.mux.relay_route(addr).map_or(addr, |r| r.peer);
                    let path = path_kind(l.relayed, addr);
                    let loss = if stats.path.sent_packets == 0 {
                        0.0
                    } else {
                        stats.path.lost_packets as f64 / stats.path.sent_packets as f64
                    };
                    let rate = match (l.samples.front(), l.samples.back()) {
                        (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                            b1.saturating_sub(*b0) as f64 / t1.duration_since(*t0).as_secs_f64()
                        }
                        _ => 0.0,
                    };
                    let reconnects = lock(&self.connects)
                        .get(id)
                        .copied()
                        .unwrap_or(1)
                        .saturating_sub(1);
                    let rtt_ms = l.conn.rtt().as_secs_f64() * 1000.0;
                    PeerStatus {
                        id: id.to_string(),
                        name: p.name.clone(),
                        connected: true,
                        path: Some(path),
                        loss: Some(loss),
                        throughput_bps: Some(rate),
                        reconnects: Some(reconnects),
                        quality: Some(quality(rtt_ms, loss, reconnects, path)),
                        addr: Some(addr),
                        rtt_ms: Some(rtt_ms),
                        bytes_in: stats.udp_rx.bytes,
                        bytes_out: stats.udp_tx.bytes,
                        lost_packets: Some(stats.path.lost_packets),
                        sent_packets: Some(stats.path.sent_packets),
                        connected_secs: Some(l.since.elapsed().as_secs()),
                        early_chunks: Some(l.early_chunks),
                        last_seen_unix: Some(unix_now()),
                        pending_items: l.pending.0,
                        pending_bytes: l.pending.1,
                        in_sync: l.idle && l.pending.0 == 0,
                    }
                }
                None => PeerStatus {
                    id: id.to_string(),
                    name: p.name.clone(),
                    connected: false,
                    path: None,
                    loss: None,
                    throughput_bps: None,
                    reconnects: None,
                    quality: None,
                    addr: p.addrs.first().copied(),
                    rtt_ms: None,
                    bytes_in: 0,
                    bytes_out: 0,
                    lost_packets: None,
                    sent_packets: None,
                    connected_secs: None,
                    early_chunks: None,
                    last_seen_unix: p.last_seen_unix,
                    pending_items: 0,
                    pending_bytes: 0,
                    in_sync: false,
                },
            })
            .collect();
        let nat = self
            .nat
            .as_ref()
            .and_then(|m| m.latest())
            .map(|r| NatStatus {
                public_addr: r.public_addr(),
                mapping: match r.mapping {
                    fybrk_net::stun::Mapping::EndpointIndependent => {
                        fybrk_control::Mapping::EndpointIndependent
                    }
                    fybrk_net::stun::Mapping::EndpointDependent => {
                        fybrk_control::Mapping::EndpointDependent
                    }
                    fybrk_net::stun::Mapping::Unknown => fybrk_control::Mapping::Unknown,
                },
                udp_works: r.udp_works,
                ipv6: r.ipv6,
            });
        let relay = self.turn.as_ref().map(|t| RelayStatus {
            server: t.server_addr(),
            relayed_addr: t.relayed_addr(),
            active: t.is_active(),
            everything: self.mux.relay_all().is_some(),
        });
        NetworkStatus {
            listen_addr: self.listen_addr,
            nat,
            relay,
            peers,
            pending_items,
            pending_bytes,
            port_mapping: self
                .port_mapping
                .as_ref()
                .and_then(super::portmap::PortMapping::current)
                .as_ref()
                .map(super::portmap::status),
            dht: *lock(&self.dht),
        }
    }
}

/// A link's path: relayed, else `lan` for a private, loopback or link-local address (where
/// LAN discovery finds peers; IPv6 unique-local too), else `direct` (every global IPv6 address:
/// IPv6 has no NAT in between). `addr` is canonical (`peer_addr`): an IPv4 peer of the
/// dual-stack socket is judged by its IPv4 address, not as an IPv6 one.
fn path_kind(relayed: bool, addr: SocketAddr) -> PathKind {
    if relayed {
        PathKind::Relay
    } else if is_lan(addr.ip()) {
        PathKind::Lan
    } else {
        PathKind::Direct
    }
}

/// A one-word stability score from the connection's round trip, loss rate, reconnects since
/// the daemon started, and whether it is relayed.
fn quality(rtt_ms: f64, loss: f64, reconnects: u32, path: PathKind) -> Quality {
    let mut score = 0;
    score += match rtt_ms {
        r if r < 50.0 => 0,
        r if r < 150.0 => 1,
        _ => 2,
    };
    score += match loss {
        l if l < 0.01 => 0,
        l if l < 0.05 => 1,
        _ => 2,
    };
    score += match reconnects {
        0..=1 => 0,
        2..=5 => 1,
        _ => 2,
    };
    score += u32::from(path == PathKind::Relay);
    match score {
        0 => Quality::Excellent,
        1 => Quality::Good,
        2 | 3 => Quality::Fair,
        _ => Quality::Poor,
    }
}

/// Whether `ip` is on this device's network: loopback, private (RFC 1918), link-local, or
/// IPv6 unique-local.
fn is_lan(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00 || v6.is_unicast_link_local()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_paths_are_direct_unless_unique_local_or_link_local() {
        let kind = |a: &str| path_kind(false, a.parse().expect("addr"));
        assert_eq!(kind("[2001:db8:1::2]:22100"), PathKind::Direct);
        assert_eq!(kind("[2a00:1450::1]:22100"), PathKind::Direct);
        assert_eq!(kind("[fd12:3456::1]:22100"), PathKind::Lan);
        assert_eq!(kind("[fe80::1]:22100"), PathKind::Lan);
        assert_eq!(kind("[::1]:22100"), PathKind::Lan);
        assert_eq!(kind("192.168.1.7:22100"), PathKind::Lan);
        assert_eq!(kind("203.0.113.7:22100"), PathKind::Direct);
        assert_eq!(
            path_kind(true, "[2001:db8::1]:1".parse().expect("addr")),
            PathKind::Relay
        );
    }
}
