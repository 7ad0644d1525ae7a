//! What `fybrk status` and `fybrk peers` show: each paired device, its link (path, loss,
//! throughput, a quality word) and sync progress.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::{lock, unix_now, Node, Shared};

impl Node {
    /// Peers and sync progress for `fybrk status`.
    pub fn status(&self) -> Value {
        self.shared.status()
    }

    /// Paired devices for `fybrk peers`.
    pub fn peers(&self) -> Value {
        let sh = &self.shared;
        let links = lock(&sh.links);
        let list: Vec<Value> = lock(&sh.book)
            .iter()
            .map(|(id, p)| {
                json!({
                    "id": id.to_string(),
                    "name": p.name,
                    "addrs": p.addrs,
                    "connected": links.contains_key(id),
                    "last_seen_unix": p.last_seen_unix,
                })
            })
            .collect();
        json!({ "peers": list })
    }
}

impl Shared {
    fn status(&self) -> Value {
        let links = lock(&self.links);
        let book = lock(&self.book);
        let mut pending_items = 0;
        let mut pending_bytes = 0;
        let peers: Vec<Value> = book
            .iter()
            .map(|(id, p)| match links.get(id) {
                Some(l) => {
                    let stats = l.conn.stats();
                    pending_items += l.pending.0;
                    pending_bytes += l.pending.1;
                    // A peer that reached our relay is known under an alias: show its address.
                    let addr = l.conn.remote_address();
                    let addr = self.mux.relay_route(addr).map_or(addr, |r| r.peer);
                    let path = if l.relayed {
                        "relay"
                    } else if is_lan(addr.ip()) {
                        "lan"
                    } else {
                        "direct"
                    };
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
                    json!({
                        "id": id.to_string(),
                        "name": p.name,
                        "connected": true,
                        "path": path,
                        "loss": loss,
                        "throughput_bps": rate,
                        "reconnects": reconnects,
                        "quality": quality(rtt_ms, loss, reconnects, path),
                        "addr": addr,
                        "rtt_ms": rtt_ms,
                        "bytes_in": stats.udp_rx.bytes,
                        "bytes_out": stats.udp_tx.bytes,
                        "lost_packets": stats.path.lost_packets,
                        "sent_packets": stats.path.sent_packets,
                        "connected_secs": l.since.elapsed().as_secs(),
                        "last_seen_unix": unix_now(),
                        "pending_items": l.pending.0,
                        "pending_bytes": l.pending.1,
                        "in_sync": l.idle && l.pending.0 == 0,
                    })
                }
                None => json!({
                    "id": id.to_string(),
                    "name": p.name,
                    "connected": false,
                    "path": null,
                    "loss": null,
                    "addr": p.addrs.first(),
                    "rtt_ms": null,
                    "bytes_in": 0,
                    "bytes_out": 0,
                    "last_seen_unix": p.last_seen_unix,
                    "pending_items": 0,
                    "pending_bytes": 0,
                    "in_sync": false,
                }),
            })
            .collect();
        let nat = self.nat.as_ref().and_then(|m| m.latest()).map(|r| {
            json!({
                "public_addr": r.public_addr(),
                "mapping": format!("{:?}", r.mapping),
                "udp_works": r.udp_works,
            })
        });
        let relay = self.turn.as_ref().map(|t| {
            json!({
                "server": t.server_addr(),
                "relayed_addr": t.relayed_addr(),
                "active": t.is_active(),
                "everything": self.mux.relay_all().is_some(),
            })
        });
        json!({
            "listen_addr": self.listen_addr,
            "nat": nat,
            "relay": relay,
            "peers": peers,
            "pending_items": pending_items,
            "pending_bytes": pending_bytes,
        })
    }
}

/// A one-word stability score from the connection's round trip, loss rate, reconnects since
/// the daemon started, and whether it is relayed.
fn quality(rtt_ms: f64, loss: f64, reconnects: u32, path: &str) -> &'static str {
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
    score += u32::from(path == "relay");
    match score {
        0 => "excellent",
        1 => "good",
        2 | 3 => "fair",
        _ => "poor",
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
