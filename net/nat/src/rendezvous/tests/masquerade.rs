//! Two punchers behind two simulated plain Linux `masquerade` routers, on a fake clock: the
//! failure the puncher's low-TTL phase exists for, and that the phase avoids it.
//!
//! The router model keeps what matters of conntrack + masquerade for one device socket:
//! outgoing datagrams reuse the newest mapping's public port (endpoint-independent mapping)
//! unless a *stale* entry, left by an earlier inbound datagram from that destination that nobody
//! let in, holds that port's 5-tuple: then the flow gets another port. Inbound datagrams pass
//! only as replies to a mapping (address- and port-dependent filtering); any other one leaves a
//! stale entry (the router accepted it for itself). Nothing expires within a punch (30 s).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{addr, key};
use crate::identity::DeviceKey;
use crate::rendezvous::messages::{decode, Message};
use crate::rendezvous::puncher::{
    Candidate, CandidateKind, PunchOutcome, PunchTransmit, Puncher, OPEN_PHASE, OPEN_TTL,
};

/// One-way delay between the two routers.
const DELAY: Duration = Duration::from_millis(5);

/// A masquerade router with one device behind it.
struct Masquerade {
    public: SocketAddr,
    /// (remote, public port) of each outgoing flow, oldest first.
    mappings: Vec<(SocketAddr, u16)>,
    /// (remote, public port) of inbound flows the router took for itself.
    stale: HashSet<(SocketAddr, u16)>,
    next_port: u16,
}

impl Masquerade {
    fn new(public: &str) -> Self {
        Masquerade {
            public: addr(public),
            mappings: Vec::new(),
            stale: HashSet::new(),
            next_port: 40_000,
        }
    }

    /// The public source of a datagram the device sends to `to`.
    fn outbound(&mut self, to: SocketAddr) -> SocketAddr {
        let port = match self.mappings.iter().find(|m| m.0 == to) {
            Some(m) => m.1,
            None => {
                let mut port = self.mappings.last().map_or(self.public.port(), |m| m.1);
                if self.stale.contains(&(to, port)) {
                    port = self.next_port;
                    self.next_port += 1;
                }
                self.mappings.push((to, port));
                port
            }
        };
        SocketAddr::new(self.public.ip(), port)
    }

    /// Whether a datagram from `from` to our public `port` reaches the device.
    fn inbound(&mut self, from: SocketAddr, port: u16) -> bool {
        if self.mappings.contains(&(from, port)) {
            return true;
        }
        self.stale.insert((from, port));
        false
    }
}

struct Side {
    puncher: Puncher,
    nat: Masquerade,
    starts: Instant,
}

/// Runs A (starting at `t0`) and B (starting `skew` later), each probing the other's public
/// address, until both decided. With `honour_ttl` false every probe goes out at full TTL, as
/// before the low-TTL phase (or from a driver that cannot set a TTL).
fn punch(skew: Duration, honour_ttl: bool) -> (Option<PunchOutcome>, Option<PunchOutcome>) {
    let (ka, kb): (Arc<DeviceKey>, Arc<DeviceKey>) = (key(), key());
    let t0 = Instant::now();
    let (pub_a, pub_b) = ("203.0.113.2:5000", "203.0.113.3:6000");
    let cand = |a: &str| Candidate {
        addr: addr(a),
        kind: CandidateKind::Reflexive,
    };
    let mut sides = [
        Side {
            puncher: Puncher::new(
                Arc::clone(&ka),
                kb.id(),
                kb.public_key(),
                1,
                [cand(pub_b)],
                t0,
            ),
            nat: Masquerade::new(pub_a),
            starts: t0,
        },
        Side {
            puncher: Puncher::new(
                Arc::clone(&kb),
                ka.id(),
                ka.public_key(),
                1,
                [cand(pub_a)],
                t0 + skew,
            ),
            nat: Masquerade::new(pub_b),
            starts: t0 + skew,
        },
    ];
    // In flight: (arrival, to side, from, to, bytes).
    let mut wire: Vec<(Instant, usize, SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    let mut now = t0;
    for _ in 0..10_000 {
        let mut out: Vec<(usize, PunchTransmit)> = Vec::new();
        for (i, s) in sides.iter_mut().enumerate() {
            if now >= s.starts {
                out.extend(
                    s.puncher
                        .handle_timeout_ttl(now)
                        .into_iter()
                        .map(|t| (i, t)),
                );
            }
        }
        // Deliver what arrived by now, collecting the acks it causes.
        let (due, later): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= now);
        wire = later;
        for (_, i, from, to, bytes) in due {
            let s = &mut sides[i];
            if !s.nat.inbound(from, to.port()) {
                continue;
            }
            match decode(&bytes).expect("a probe or an ack") {
                Message::Probe(p) => {
                    if let Some((to, data)) = s.puncher.handle_probe(from, &p, now) {
                        out.push((
                            i,
                            PunchTransmit {
                                to,
                                data,
                                ttl: None,
                            },
                        ));
                    }
                }
                Message::ProbeAck(a) => s.puncher.handle_ack(from, &a, now),
                other => panic!("{other:?}"),
            }
        }
        for (i, t) in out {
            let from = sides[i].nat.outbound(t.to);
            if honour_ttl && t.ttl.is_some() {
                // Opened our router's mapping, then died between the two routers.
                continue;
            }
            wire.push((now + DELAY, 1 - i, from, t.to, t.data));
        }
        if sides.iter().all(|s| s.puncher.outcome().is_some()) {
            break;
        }
        let timers = sides.iter().filter_map(|s| {
            if now < s.starts {
                Some(s.starts)
            } else {
                s.puncher.poll_timeout()
            }
        });
        let Some(next) = timers.chain(wire.iter().map(|w| w.0)).min() else {
            break;
        };
        now = next.max(now);
    }
    (sides[0].puncher.outcome(), sides[1].puncher.outcome())
}

fn connected(o: Option<PunchOutcome>) -> bool {
    matches!(o, Some(PunchOutcome::Connected(_)))
}

#[test]
fn full_ttl_probes_leave_stale_entries_and_the_punch_fails() {
    // A's first probe reaches B's router before B sent anything: B's mapping towards A then
    // takes another port, which A's router does not let in, and A's probes keep hitting the
    // stale entry. What two masquerade routers did in the lab before the low-TTL phase.
    let (a, b) = punch(Duration::from_millis(20), false);
    assert_eq!(
        (a, b),
        (Some(PunchOutcome::Failed), Some(PunchOutcome::Failed))
    );
}

#[test]
fn low_ttl_first_probes_connect_two_masquerade_routers() {
    for skew_ms in [0, 3, 20, 100, OPEN_PHASE.as_millis() as u64 - 10] {
        let (a, b) = punch(Duration::from_millis(skew_ms), true);
        assert!(
            connected(a) && connected(b),
            "skew {skew_ms} ms: {a:?} {b:?}"
        );
        let Some(PunchOutcome::Connected(path)) = a else {
            unreachable!()
        };
        assert_eq!(path.addr, addr("203.0.113.3:6000"), "skew {skew_ms} ms");
        assert_eq!(path.kind, CandidateKind::Reflexive);
    }
}

#[test]
fn only_probes_to_reflexive_candidates_in_the_open_phase_are_low_ttl() {
    let (a, b) = (key(), key());
    let t0 = Instant::now();
    let cands = [
        Candidate {
            addr: addr("10.0.0.5:4000"),
            kind: CandidateKind::Lan,
        },
        Candidate {
            addr: addr("198.51.100.2:6000"),
            kind: CandidateKind::Reflexive,
        },
        Candidate {
            addr: addr("198.51.100.9:49152"),
            kind: CandidateKind::Relay,
        },
    ];
    let mut p = Puncher::new(Arc::clone(&a), b.id(), b.public_key(), 1, cands, t0);
    let mut now = t0;
    let mut rounds = 0;
    while now < t0 + OPEN_PHASE * 2 {
        let sent = p.handle_timeout_ttl(now);
        if !sent.is_empty() {
            rounds += 1;
            for t in &sent {
                let low = now < t0 + OPEN_PHASE && t.to == addr("198.51.100.2:6000");
                assert_eq!(t.ttl, low.then_some(OPEN_TTL), "{t:?} at {:?}", now - t0);
            }
        }
        now = p.poll_timeout().expect("still punching");
    }
    assert!(rounds >= 2 * (OPEN_PHASE.as_millis() / 50) as usize);
    // A peer-reflexive address (where the peer's own probe came from) is open already: full TTL
    // even within the phase.
    let mut p = Puncher::new(Arc::clone(&a), b.id(), b.public_key(), 1, cands, t0);
    let probe = crate::rendezvous::messages::Probe {
        from: b.id(),
        nonce: 1,
        seq: 0,
    }
    .encode_probe(&b)
    .unwrap();
    let Ok(Message::Probe(signed)) = decode(&probe) else {
        panic!()
    };
    let prflx = addr("198.51.100.2:7777");
    p.handle_probe(prflx, &signed, t0);
    let sent = p.handle_timeout_ttl(t0);
    let t = sent.iter().find(|t| t.to == prflx).expect("probed");
    assert_eq!(t.ttl, None);
}
