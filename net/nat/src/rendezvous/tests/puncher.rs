//! The puncher with a simulated clock and a hand-driven network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{addr, key};
use crate::identity::DeviceKey;
use crate::rendezvous::messages::{decode, Message, Probe};
use crate::rendezvous::puncher::{
    Candidate, CandidateKind, PunchOutcome, Puncher, MAX_CANDIDATES, PROBE_INTERVAL, PUNCH_TIMEOUT,
    RELAY_GRACE, SETTLE_GRACE,
};
use crate::rendezvous::Transmit;

const NONCE: u64 = 77;

fn lan(a: &str) -> Candidate {
    Candidate {
        addr: addr(a),
        kind: CandidateKind::Lan,
    }
}

fn reflexive(a: &str) -> Candidate {
    Candidate {
        addr: addr(a),
        kind: CandidateKind::Reflexive,
    }
}

/// A puncher at "A" towards "B" with the given candidates for B.
fn puncher(a: &Arc<DeviceKey>, b: &Arc<DeviceKey>, cands: Vec<Candidate>, now: Instant) -> Puncher {
    Puncher::new(Arc::clone(a), b.id(), b.public_key(), NONCE, cands, now)
}

/// B's answer to the probe in `t` (as B's puncher would make it).
fn ack_for(b: &Arc<DeviceKey>, t: &Transmit) -> Vec<u8> {
    let Ok(Message::Probe(p)) = decode(&t.1) else {
        panic!("not a probe")
    };
    Probe {
        from: b.id(),
        nonce: p.body.nonce,
        seq: p.body.seq,
    }
    .encode_ack(b)
    .unwrap()
}

fn signed_ack(bytes: &[u8]) -> crate::rendezvous::messages::Signed<Probe> {
    match decode(bytes).unwrap() {
        Message::ProbeAck(a) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn candidates_are_deduplicated_sorted_and_filtered() {
    let (a, b) = (key(), key());
    let t0 = Instant::now();
    let p = puncher(
        &a,
        &b,
        vec![
            reflexive("198.51.100.2:6000"),
            lan("10.0.0.5:4000"),
            reflexive("10.0.0.5:4000"), // same address: stays LAN
            lan("0.0.0.0:4000"),        // unusable
            lan("10.0.0.6:0"),          // unusable
        ],
        t0,
    );
    assert_eq!(
        p.candidates(),
        &[lan("10.0.0.5:4000"), reflexive("198.51.100.2:6000")]
    );
    let many: Vec<Candidate> = (1..=40).map(|i| lan(&format!("10.0.1.{i}:4000"))).collect();
    assert_eq!(puncher(&a, &b, many, t0).candidates().len(), MAX_CANDIDATES);
}

#[test]
fn probes_every_candidate_each_round_until_timeout() {
    let (a, b) = (key(), key());
    let t0 = Instant::now();
    let mut p = puncher(
        &a,
        &b,
        vec![lan("10.0.0.5:4000"), reflexive("198.51.100.2:6000")],
        t0,
    );
    let first = p.handle_timeout(t0);
    let dests: Vec<SocketAddr> = first.iter().map(|t| t.0).collect();
    assert_eq!(
        dests,
        vec![addr("10.0.0.5:4000"), addr("198.51.100.2:6000")]
    );
    // Probes are genuine: signed by A, for this attempt.
    for t in &first {
        let Ok(Message::Probe(m)) = decode(&t.1) else {
            panic!()
        };
        assert_eq!(m.body.from, a.id());
        assert_eq!(m.body.nonce, NONCE);
        m.verify(&a.public_key()).unwrap();
    }
    // Nothing more until the next round is due.
    assert_eq!(p.poll_timeout(), Some(t0 + PROBE_INTERVAL));
    assert!(p.handle_timeout(t0 + PROBE_INTERVAL / 2).is_empty());
    // Retries: one round per interval, all candidates each time, until the timeout.
    let mut now = t0;
    let mut rounds = 1;
    while let Some(next) = p.poll_timeout() {
        now = next;
        let sent = p.handle_timeout(now);
        if !sent.is_empty() {
            assert_eq!(sent.len(), 2);
            rounds += 1;
        }
    }
    assert_eq!(p.outcome(), Some(PunchOutcome::Failed));
    assert_eq!(now, t0 + PUNCH_TIMEOUT);
    let expected = (PUNCH_TIMEOUT.as_millis() / PROBE_INTERVAL.as_millis()) as usize;
    assert_eq!(rounds, expected);
    // Decided: silent from now on.
    assert!(p.handle_timeout(now + PROBE_INTERVAL).is_empty());
}

#[test]
fn a_late_peer_is_reached_by_a_retry() {
    let (a, b) = (key(), key());
    let t0 = Instant::now();
    let mut p = puncher(&a, &b, vec![reflexive("198.51.100.2:6000")], t0);
    // The first three rounds are lost (B's NAT is not open yet).
    let mut now = t0;
    for _ in 0..3 {
        assert_eq!(p.handle_timeout(now).len(), 1);
        now += PROBE_INTERVAL;
    }
    let fourth = p.handle_timeout(now);
    let ack = ack_for(&b, &fourth[0]);
    p.handle_ack(
        fourth[0].0,
        &signed_ack(&ack),
        now + Duration::from_millis(30),
    );
    // Reflexive is the best kind on offer here, so no settling wait.
    let Some(PunchOutcome::Connected(path)) = p.outcome() else {
        panic!("{:?}", p.outcome())
    };
    assert_eq!(path.addr, addr("198.51.100.2:6000"));
    assert_eq!(path.kind, CandidateKind::Reflexive);
    assert_eq!(path.rtt, Duration::from_millis(30));
}

#[test]
fn lan_wins_at_once() {
    let (a, b) = (key(), key());
    let t0 = Instant::now();
    let mut p = puncher(
        &a,
        &b,
        vec![lan("10.0.0.5:4000"), reflexive("198.51.100.2:6000")],
        t0,
    );
    let sent = p.handle_timeout(t0);
    let lan_probe = sent.iter().find(|t| t.0 == addr("10.0.0.5:4000")).unwrap();
    p.handle_ack(
        lan_probe.0,
        &signed_ack(&ack_for(&b, lan_probe)),
        t0 + Duration::from_millis(1),
    );
    let Some(PunchOutcome::Connected(path)) = p.outcome() else {
        panic!()
    };
    assert_eq!(path.kind, CandidateKind::Lan);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn lan_is_preferred_over_an_earlier_reflexive_answer() {
    let (a, b) = (key(), key());
    let t0 = Instant::now();
    let mut p = puncher(
        &a,
        &b,
        vec![lan("10.0.0.5:4000"), reflexive("198.51.100.2:6000")],
        t0,
    );
    let sent = p.handle_timeout(t0);
    let refl = sent
        .iter()
        .find(|t| t.0 == addr("198.51.100.2:6000"))
        .unwrap();
    p.handle_ack(
        refl.0,
        &signed_ack(&ack_for(&b, refl)),
        t0 + Duration::from_millis(20),
    );
    // Not decided yet: a LAN path may still answer.
    assert_eq!(p.outcome(), None);
    assert_eq!(p.poll_timeout(), Some(t0 + PROBE_INTERVAL));
    // The next round's LAN probe gets through.
    let sent = p.handle_timeout(t0 + PROBE_INTERVAL);
    let lan_probe = sent.iter().find(|t| t.0 == addr("10.0.0.5:4000")).unwrap();
    p.handle_ack(
        lan_probe.0,
        &signed_ack(&ack_for(&b, lan_probe)),
        t0 + PROBE_INTERVAL,
    );
    let Some(PunchOutcome::Connected(path)) = p.outcome() else {
        panic!()
    };
    assert_eq!(path.addr, addr("10.0.0.5:4000"));
}

#[test]
fn reflexive_is_taken_when_lan_stays_silent() {
    let (a, b) = (key(), key());
    let t0 = Instant::now();
    let mut p = puncher(
        &a,
        &b,
        vec![lan("10.0.0.5:4000"), reflexive("198.51.100.2:6000")],
        t0,
    );
    let sent = p.handle_timeout(t0);
    let refl = sent
        .iter()
        .find(|t| t.0 == addr("198.51.100.2:6000"))
        .unwrap();
    let answered = t0 + Duration::from_millis(20);
    p.handle_ack(refl.0, &signed_ack(&ack_for(&b, refl)), answered);
    let mut now = answered;
    while p.outcome().is_none() {
        now = p.poll_timeout().unwrap();
        p.handle_timeout(now);
    }
    assert_eq!(now, answered + SETTLE_GRACE);
    let Some(PunchOutcome::Connected(path)) = p.outcome() else {
        panic!()
    };
    assert_eq!(path.kind, CandidateKind::Reflexive);
}

fn relay(a: &str) -> Candidate {
    Candidate {
        addr: addr(a),
        kind: CandidateKind::Relay,
    }
}

/// Runs the puncher's timers until it decides; returns when.
fn settle(p: &mut Puncher, mut now: Instant) -> Instant {
    while p.outcome().is_none() {
        now = p.poll_timeout().unwrap();
        p.handle_timeout(now);
    }
    now
}

#[test]
fn a_relay_answer_waits_longer_for_a_direct_one() {
    let (a, b) = (key(), key());
    let t0 = Instant::now();
    let cands = vec![reflexive("198.51.100.2:6000"), relay("198.51.100.9:50000")];
    let mut p = puncher(&a, &b, cands.clone(), t0);
    let sent = p.handle_timeout(t0);
    let to = |a: &str| sent.iter().find(|t| t.0 == addr(a)).unwrap().clone();
    let (refl, rel) = (to("198.51.100.2:6000"), to("198.51.100.9:50000"));

    // Only the relay answers: taken after RELAY_GRACE, not SETTLE_GRACE.
    let answered = t0 + Duration::from_millis(10);
    p.handle_ack(rel.0, &signed_ack(&ack_for(&b, &rel)), answered);
    assert_eq!(settle(&mut p, answered), answered + RELAY_GRACE);
    let Some(PunchOutcome::Connected(path)) = p.outcome() else {
        panic!()
    };
    assert_eq!(path.kind, CandidateKind::Relay);

    // A direct answer within the grace wins, SETTLE_GRACE after it.
    let mut p = puncher(&a, &b, cands, t0);
    p.handle_timeout(t0);
    p.handle_ack(rel.0, &signed_ack(&ack_for(&b, &rel)), answered);
    let direct = answered + Duration::from_millis(400);
    p.handle_ack(refl.0, &signed_ack(&ack_for(&b, &refl)), direct);
    // The reflexive candidate is the best possible here: taken at once.
    let Some(PunchOutcome::Connected(path)) = p.outcome() else {
        panic!("decided at once")
    };
    assert_eq!((path.addr, path.kind), (refl.0, CandidateKind::Reflexive));
}

#[test]
fn a_probe_through_our_relay_teaches_a_relay_candidate() {
    let (a, b) = (key(), key());
    let t0 = Instant::now();
    let mut p = puncher(&a, &b, vec![reflexive("198.51.100.2:6000")], t0);
    p.handle_timeout(t0);
    let probe = Probe {
        from: b.id(),
        nonce: p.nonce(),
        seq: 0,
    };
    let bytes = probe.encode_probe(&b).unwrap();
    let Ok(Message::Probe(signed)) = decode(&bytes) else {
        panic!("a probe")
    };
    let alias = addr("240.0.0.1:6000");
    assert!(p.handle_probe(alias, &signed, t0).is_some(), "answered");
    let learned = p.candidates().iter().find(|c| c.addr == alias).unwrap();
    assert_eq!(learned.kind, CandidateKind::Relay);
}

#[test]
fn forged_or_misrouted_acks_do_not_make_a_path() {
    let (a, b, mallory) = (key(), key(), key());
    let t0 = Instant::now();
    let mut p = puncher(&a, &b, vec![reflexive("198.51.100.2:6000")], t0);
    let sent = p.handle_timeout(t0);
    let t = &sent[0];
    let Ok(Message::Probe(probe)) = decode(&t.1) else {
        panic!()
    };
    let seq = probe.body.seq;
    let now = t0 + Duration::from_millis(10);
    // Signed by someone else, claiming to be B.
    let forged = Probe {
        from: b.id(),
        nonce: NONCE,
        seq,
    }
    .encode_ack(&mallory)
    .unwrap();
    p.handle_ack(t.0, &signed_ack(&forged), now);
    // Genuine, but for another attempt.
    let other = Probe {
        from: b.id(),
        nonce: NONCE + 1,
        seq,
    }
    .encode_ack(&b)
    .unwrap();
    p.handle_ack(t.0, &signed_ack(&other), now);
    // Genuine, but arriving from an address the probe did not go to.
    let genuine = ack_for(&b, t);
    p.handle_ack(addr("192.0.2.66:1"), &signed_ack(&genuine), now);
    // Genuine, but for a probe never sent.
    let unsent = Probe {
        from: b.id(),
        nonce: NONCE,
        seq: 5 << 8,
    }
    .encode_ack(&b)
    .unwrap();
    p.handle_ack(t.0, &signed_ack(&unsent), now);
    assert_eq!(p.outcome(), None);
    // The genuine one from the right address does.
    p.handle_ack(t.0, &signed_ack(&genuine), now);
    assert!(matches!(p.outcome(), Some(PunchOutcome::Connected(_))));
}

#[test]
fn genuine_probes_are_answered_and_teach_new_addresses() {
    let (a, b, mallory) = (key(), key(), key());
    let t0 = Instant::now();
    let mut p = puncher(&a, &b, vec![reflexive("198.51.100.2:6000")], t0);
    p.handle_timeout(t0);
    // B's NAT maps per destination: its probe comes from a port no one announced.
    let from = addr("198.51.100.2:6789");
    let probe = Probe {
        from: b.id(),
        nonce: NONCE,
        seq: 3,
    }
    .encode_probe(&b)
    .unwrap();
    let Ok(Message::Probe(probe)) = decode(&probe) else {
        panic!()
    };
    let (to, ack) = p.handle_probe(from, &probe, t0).expect("answered");
    assert_eq!(to, from);
    let Ok(Message::ProbeAck(ack)) = decode(&ack) else {
        panic!()
    };
    assert_eq!((ack.body.from, ack.body.seq), (a.id(), 3));
    ack.verify(&a.public_key()).unwrap();
    assert!(p.candidates().contains(&Candidate {
        addr: from,
        kind: CandidateKind::PeerReflexive
    }));
    // The next round probes it too.
    let next = p.handle_timeout(t0 + PROBE_INTERVAL);
    assert!(next.iter().any(|t| t.0 == from));
    // A probe signed by someone else gets no answer and teaches nothing.
    let bad = Probe {
        from: b.id(),
        nonce: NONCE,
        seq: 3,
    }
    .encode_probe(&mallory)
    .unwrap();
    let Ok(Message::Probe(bad)) = decode(&bad) else {
        panic!()
    };
    assert!(p.handle_probe(addr("192.0.2.66:1"), &bad, t0).is_none());
    assert_eq!(p.candidates().len(), 2);
}

#[test]
fn two_punchers_agree_on_the_lan_pair() {
    // A and B on one LAN, each behind the same NAT as seen by the server (hairpinning works).
    let (ka, kb) = (key(), key());
    let a_lan = addr("192.168.1.10:4000");
    let b_lan = addr("192.168.1.20:4000");
    let a_pub = addr("203.0.113.1:5000");
    let b_pub = addr("203.0.113.1:5001");
    let t0 = Instant::now();
    let mut a = puncher(
        &ka,
        &kb,
        vec![lan("192.168.1.20:4000"), reflexive("203.0.113.1:5001")],
        t0,
    );
    let mut b = puncher(
        &kb,
        &ka,
        vec![lan("192.168.1.10:4000"), reflexive("203.0.113.1:5000")],
        t0,
    );
    // Where a datagram sent to `to` lands, and the source address the receiver sees.
    let route =
        |to: SocketAddr, from_lan: SocketAddr, from_pub: SocketAddr| -> (bool, SocketAddr) {
            let to_a = to == a_lan || to == a_pub;
            let src = if to == a_lan || to == b_lan {
                from_lan
            } else {
                from_pub
            };
            (to_a, src)
        };
    let mut now = t0;
    let mut queue: Vec<(bool, SocketAddr, Vec<u8>)> = Vec::new(); // (to A?, source, bytes)
    for _ in 0..20 {
        for (to, d) in a.handle_timeout(now) {
            let (to_a, src) = route(to, a_lan, a_pub);
            queue.push((to_a, src, d));
        }
        for (to, d) in b.handle_timeout(now) {
            let (to_a, src) = route(to, b_lan, b_pub);
            queue.push((to_a, src, d));
        }
        // Deliver everything, including the answers it causes.
        while let Some((to_a, src, d)) = queue.pop() {
            let (me, my_lan, my_pub) = if to_a {
                (&mut a, a_lan, a_pub)
            } else {
                (&mut b, b_lan, b_pub)
            };
            match decode(&d).unwrap() {
                Message::Probe(p) => {
                    if let Some((to, ack)) = me.handle_probe(src, &p, now) {
                        let (dest_a, s) = route(to, my_lan, my_pub);
                        queue.push((dest_a, s, ack));
                    }
                }
                Message::ProbeAck(ack) => me.handle_ack(src, &ack, now),
                other => panic!("{other:?}"),
            }
        }
        if a.outcome().is_some() && b.outcome().is_some() {
            break;
        }
        now += Duration::from_millis(10);
    }
    let Some(PunchOutcome::Connected(pa)) = a.outcome() else {
        panic!("{:?}", a.outcome())
    };
    let Some(PunchOutcome::Connected(pb)) = b.outcome() else {
        panic!("{:?}", b.outcome())
    };
    assert_eq!((pa.addr, pa.kind), (b_lan, CandidateKind::Lan));
    assert_eq!((pb.addr, pb.kind), (a_lan, CandidateKind::Lan));
}
