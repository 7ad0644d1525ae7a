//! The link policies on a fake clock: time is an `Instant` taken once and moved by hand.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::relay_all::{RELAY_ALL_AFTER, RELAY_ALL_RECHECK, RELAY_PROBE_WAIT};
use super::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The longest backoff after `n` failed dials: `min(60 s, 500 ms * 2^n)`.
fn ceiling_after(n: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
        .min(Duration::from_secs(60))
}

fn link(generation: u64, since: Instant, preferred: bool, relayed: bool) -> LinkInfo {
    LinkInfo {
        generation,
        since,
        preferred,
        relayed,
    }
}

// ---- the simultaneous-dial tie-break ----

#[test]
fn the_first_connection_is_kept() {
    let now = Instant::now();
    assert_eq!(admit(None, false, now), Admit::First);
    assert_eq!(admit(None, true, now), Admit::First);
}

#[test]
fn the_connection_dialled_by_the_smaller_id_is_preferred_on_both_sides() {
    let (small, big) = (1u32, 2u32);
    // `small` dialled: both sides call it preferred.
    assert!(is_preferred(&small, &big, true));
    assert!(is_preferred(&big, &small, false));
    // `big` dialled: neither does.
    assert!(!is_preferred(&small, &big, false));
    assert!(!is_preferred(&big, &small, true));
}

#[test]
fn simultaneous_dials_keep_the_same_connection_on_both_sides() {
    let t0 = Instant::now();
    let now = t0 + secs(0.5);
    let (small, big) = (1u32, 2u32);
    // Each side attached its own dial first (initiator), then the peer's arrives.
    let small_first = link(1, t0, is_preferred(&small, &big, true), false);
    let big_first = link(1, t0, is_preferred(&big, &small, true), false);
    let on_small = admit(Some(&small_first), is_preferred(&small, &big, false), now);
    let on_big = admit(Some(&big_first), is_preferred(&big, &small, false), now);
    // The smaller id's own dial stays there; the bigger id replaces its own with it.
    assert_eq!(on_small, Admit::Duplicate);
    assert_eq!(on_big, Admit::Replace);
    // And the other way round: each side got the peer's connection first.
    let small_first = link(1, t0, is_preferred(&small, &big, false), false);
    let big_first = link(1, t0, is_preferred(&big, &small, false), false);
    assert_eq!(
        admit(Some(&small_first), is_preferred(&small, &big, true), now),
        Admit::Replace
    );
    assert_eq!(
        admit(Some(&big_first), is_preferred(&big, &small, true), now),
        Admit::Duplicate
    );
}

#[test]
fn a_young_link_keeps_out_a_second_connection_of_the_same_kind() {
    let t0 = Instant::now();
    let now = t0 + secs(1.0);
    assert_eq!(
        admit(Some(&link(1, t0, true, false)), true, now),
        Admit::Duplicate
    );
    assert_eq!(
        admit(Some(&link(1, t0, false, false)), false, now),
        Admit::Duplicate
    );
}

#[test]
fn a_connection_next_to_an_older_link_replaces_it() {
    // The peer lost the old link (it restarted, its network changed) before we noticed.
    let t0 = Instant::now();
    let old = link(1, t0, true, false);
    assert_eq!(
        admit(Some(&old), false, t0 + SIMULTANEOUS - secs(0.001)),
        Admit::Duplicate
    );
    assert_eq!(admit(Some(&old), false, t0 + SIMULTANEOUS), Admit::Replace);
    assert_eq!(admit(Some(&old), false, t0 + secs(60.0)), Admit::Replace);
}

// ---- dialling and backoff ----

#[test]
fn without_a_link_the_dialler_dials() {
    let now = Instant::now();
    let mut p = LinkPolicy::new();
    assert_eq!(p.poll(now, None, true), Step::Dial);
}

#[test]
fn failed_dials_back_off_within_a_growing_ceiling() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut now = Instant::now();
    let mut p = LinkPolicy::new();
    for n in 0..10u32 {
        assert_eq!(p.poll(now, None, true), Step::Dial);
        let ceiling = ceiling_after(n);
        p.handle_dial_failed(now, &mut rng);
        let Step::Backoff { until } = p.poll(now, None, true) else {
            panic!("no backoff after a failed dial");
        };
        assert!(until - now <= ceiling, "attempt {n}: {:?}", until - now);
        // Polling again before the deadline waits for the same instant.
        assert_eq!(p.poll(now, None, true), Step::Backoff { until });
        now = until;
        p.handle_timeout(now);
    }
    assert_eq!(p.backoff.attempt(), 10);
    assert_eq!(ceiling_after(10), Duration::from_secs(60));
}

#[test]
fn a_wake_cuts_the_backoff_short_without_resetting_it() {
    let mut rng = StdRng::seed_from_u64(8);
    let now = Instant::now();
    let mut p = LinkPolicy::new();
    p.handle_dial_failed(now, &mut rng);
    p.handle_dial_failed(now, &mut rng);
    assert!(matches!(p.poll(now, None, true), Step::Backoff { .. }));
    p.handle_wake(now + secs(0.01));
    assert_eq!(p.poll(now + secs(0.01), None, true), Step::Dial);
    assert_eq!(p.backoff.attempt(), 2);
}

#[test]
fn a_link_that_lasted_resets_the_backoff_when_it_ends() {
    let mut rng = StdRng::seed_from_u64(9);
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    for _ in 0..4 {
        p.handle_dial_failed(t0, &mut rng);
        p.handle_timeout(t0 + secs(120.0));
    }
    assert_eq!(p.backoff.attempt(), 4);
    let up = link(1, t0, true, false);
    assert_eq!(p.poll(t0, Some(up), true), Step::WaitOnLink { until: None });
    p.handle_wake(t0 + STABLE_LINK);
    assert_eq!(p.backoff.attempt(), 0);
    assert_eq!(p.poll(t0 + STABLE_LINK, None, true), Step::Dial);
}

#[test]
fn a_short_link_keeps_the_backoff() {
    let mut rng = StdRng::seed_from_u64(10);
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    p.handle_dial_failed(t0, &mut rng);
    p.handle_timeout(t0 + secs(1.0));
    // A link that drops right after the handshake (a broken path) is no success.
    let up = link(1, t0 + secs(1.0), true, false);
    assert_eq!(
        p.poll(t0 + secs(1.0), Some(up), true),
        Step::WaitOnLink { until: None }
    );
    p.handle_wake(t0 + secs(1.0) + STABLE_LINK - secs(0.001));
    assert_eq!(p.backoff.attempt(), 1);
    // The next failure backs off from where it was.
    p.handle_dial_failed(t0 + secs(11.0), &mut rng);
    assert_eq!(p.backoff.attempt(), 2);
}

#[test]
fn a_successful_dial_alone_does_not_reset_the_backoff() {
    let mut rng = StdRng::seed_from_u64(11);
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    p.handle_dial_failed(t0, &mut rng);
    p.handle_timeout(t0 + secs(1.0));
    assert_eq!(p.poll(t0 + secs(1.0), None, true), Step::Dial);
    // Dialled; the next poll sees the link, and nothing else happens to the backoff.
    let up = link(1, t0 + secs(1.0), true, false);
    p.poll(t0 + secs(1.0), Some(up), true);
    assert_eq!(p.backoff.attempt(), 1);
}

#[test]
fn a_direct_link_waits_only_for_a_wake() {
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    let up = link(1, t0, true, false);
    assert_eq!(p.poll(t0, Some(up), true), Step::WaitOnLink { until: None });
    // A timeout without a deadline changes nothing.
    p.handle_timeout(t0 + secs(1000.0));
    assert_eq!(
        p.poll(t0 + secs(1000.0), Some(up), true),
        Step::WaitOnLink { until: None }
    );
}

// ---- the relay-upgrade schedule ----

#[test]
fn a_relayed_link_looks_for_a_direct_path_after_15_s() {
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    let relayed = link(1, t0, true, true);
    let until = t0 + UPGRADE_FIRST;
    assert_eq!(
        p.poll(t0, Some(relayed), true),
        Step::WaitOnLink { until: Some(until) }
    );
    p.handle_timeout(until);
    assert_eq!(p.poll(until, Some(relayed), true), Step::MoveOffRelay);
}

#[test]
fn the_upgrade_interval_grows_by_half_up_to_5_min() {
    let mut now = Instant::now();
    let mut p = LinkPolicy::new();
    let relayed = link(1, now, true, true);
    let mut expected = UPGRADE_FIRST;
    let mut waits = Vec::new();
    for _ in 0..12 {
        let Step::WaitOnLink { until: Some(until) } = p.poll(now, Some(relayed), true) else {
            panic!("no upgrade timer on a relayed link");
        };
        assert_eq!(until - now, expected);
        waits.push((until - now).as_secs_f64());
        now = until;
        p.handle_timeout(now);
        assert_eq!(p.poll(now, Some(relayed), true), Step::MoveOffRelay);
        expected = expected.mul_f32(1.5).min(UPGRADE_MAX);
    }
    assert!((waits[1] - 22.5).abs() < 0.01, "{waits:?}");
    assert!((waits[2] - 33.75).abs() < 0.01, "{waits:?}");
    assert_eq!(*waits.last().unwrap(), 300.0);
}

#[test]
fn a_new_relayed_link_starts_the_schedule_over() {
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    let first = link(1, t0, true, true);
    p.poll(t0, Some(first), true);
    p.handle_timeout(t0 + UPGRADE_FIRST);
    assert_eq!(
        p.poll(t0 + UPGRADE_FIRST, Some(first), true),
        Step::MoveOffRelay
    );
    // The relayed link was replaced by another relayed one.
    let now = t0 + secs(20.0);
    let second = link(2, now, true, true);
    assert_eq!(
        p.poll(now, Some(second), true),
        Step::WaitOnLink {
            until: Some(now + UPGRADE_FIRST)
        }
    );
}

#[test]
fn a_wake_during_the_upgrade_wait_still_grows_the_interval() {
    // The interval grows with every wait on the link, also one a wake-up cut short.
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    let relayed = link(1, t0, true, true);
    p.poll(t0, Some(relayed), true);
    p.handle_wake(t0 + secs(1.0));
    let now = t0 + secs(1.0);
    assert_eq!(
        p.poll(now, Some(relayed), true),
        Step::WaitOnLink {
            until: Some(now + UPGRADE_FIRST.mul_f32(1.5))
        }
    );
}

#[test]
fn an_early_timeout_keeps_the_same_upgrade_wait() {
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    let relayed = link(1, t0, true, true);
    let until = t0 + UPGRADE_FIRST;
    p.poll(t0, Some(relayed), true);
    p.handle_timeout(until - secs(0.001));
    assert_eq!(
        p.poll(until - secs(0.001), Some(relayed), true),
        Step::WaitOnLink { until: Some(until) }
    );
}

#[test]
fn no_upgrade_without_a_way_to_a_direct_path() {
    // No rendezvous server, or relaying everything: a relayed link just waits.
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    let relayed = link(1, t0, true, true);
    assert_eq!(
        p.poll(t0, Some(relayed), false),
        Step::WaitOnLink { until: None }
    );
}

#[test]
fn looking_for_a_direct_path_resets_the_backoff() {
    // The relayed link is at least 15 s old then: it counts as a success.
    let mut rng = StdRng::seed_from_u64(12);
    let t0 = Instant::now();
    let mut p = LinkPolicy::new();
    p.handle_dial_failed(t0, &mut rng);
    p.handle_timeout(t0 + secs(1.0));
    let relayed = link(1, t0 + secs(1.0), true, true);
    p.poll(t0 + secs(1.0), Some(relayed), true);
    p.handle_timeout(t0 + secs(1.0) + UPGRADE_FIRST);
    assert_eq!(p.backoff.attempt(), 0);
}

// ---- relay-everything mode ----

const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

fn via_relay() -> SocketAddr {
    SocketAddr::new(RELAY_IP, 50000)
}

fn direct() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 4)), 22100)
}

/// A policy in relay-everything mode since `t0 + RELAY_ALL_AFTER` (the switch done then).
fn relaying(t0: Instant) -> RelayAllPolicy {
    let mut p = RelayAllPolicy::new(t0, RELAY_IP);
    let at = t0 + RELAY_ALL_AFTER;
    assert_eq!(p.poll_timeout(), Some(at));
    p.handle_timeout(at);
    assert_eq!(p.poll_action(), Some(RelayAllAction::Enter));
    p.handle_action_done(at);
    p
}

#[test]
fn a_rendezvous_answer_in_time_keeps_udp_direct() {
    let t0 = Instant::now();
    let mut p = RelayAllPolicy::new(t0, RELAY_IP);
    p.handle_registered(t0 + secs(0.2), direct());
    p.handle_timeout(t0 + RELAY_ALL_AFTER);
    assert_eq!(p.poll_action(), None);
    assert!(p.is_finished());
    assert!(!p.is_relaying());
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn no_rendezvous_answer_after_3_s_enters_relay_everything() {
    let t0 = Instant::now();
    let mut p = RelayAllPolicy::new(t0, RELAY_IP);
    p.handle_timeout(t0 + RELAY_ALL_AFTER - secs(0.001));
    assert_eq!(p.poll_action(), None);
    p.handle_timeout(t0 + RELAY_ALL_AFTER);
    assert_eq!(p.poll_action(), Some(RelayAllAction::Enter));
    assert!(p.is_relaying());
    // No timer while the switch is being made.
    assert_eq!(p.poll_timeout(), None);
    assert!(!p.is_finished());
}

#[test]
fn the_recheck_counts_from_when_the_switch_was_done() {
    let t0 = Instant::now();
    let mut p = RelayAllPolicy::new(t0, RELAY_IP);
    p.handle_timeout(t0 + RELAY_ALL_AFTER);
    assert_eq!(p.poll_action(), Some(RelayAllAction::Enter));
    // Binding the channel through the relay took half a second.
    let done = t0 + RELAY_ALL_AFTER + secs(0.5);
    p.handle_action_done(done);
    assert_eq!(p.poll_timeout(), Some(done + RELAY_ALL_RECHECK));
}

#[test]
fn relay_everything_probes_directly_every_30_s_after_the_last_step() {
    let t0 = Instant::now();
    let mut p = relaying(t0);
    assert_eq!(
        p.poll_timeout(),
        Some(t0 + RELAY_ALL_AFTER + RELAY_ALL_RECHECK)
    );
    let probe = p.poll_timeout().unwrap();
    p.handle_timeout(probe);
    assert_eq!(p.poll_action(), Some(RelayAllAction::ProbeDirect));
    p.handle_action_done(probe);
    assert_eq!(p.poll_timeout(), Some(probe + RELAY_PROBE_WAIT));
    // No direct answer: back through the relay, and the next probe 30 s later.
    p.handle_timeout(probe + RELAY_PROBE_WAIT);
    assert_eq!(p.poll_action(), Some(RelayAllAction::EndProbe));
    let ended = probe + RELAY_PROBE_WAIT + secs(0.01);
    p.handle_action_done(ended);
    assert_eq!(p.poll_timeout(), Some(ended + RELAY_ALL_RECHECK));
    assert!(p.is_relaying());
}

#[test]
fn a_direct_answer_to_a_probe_leaves_relay_everything() {
    let t0 = Instant::now();
    let mut p = relaying(t0);
    let probe = t0 + RELAY_ALL_AFTER + RELAY_ALL_RECHECK;
    p.handle_timeout(probe);
    assert_eq!(p.poll_action(), Some(RelayAllAction::ProbeDirect));
    p.handle_action_done(probe);
    p.handle_registered(probe + secs(0.05), direct());
    assert_eq!(p.poll_action(), Some(RelayAllAction::Leave));
    p.handle_action_done(probe + secs(0.05));
    assert!(p.is_finished());
    assert!(!p.is_relaying());
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn an_answer_through_the_relay_does_not_end_the_probe() {
    let t0 = Instant::now();
    let mut p = relaying(t0);
    let probe = t0 + RELAY_ALL_AFTER + RELAY_ALL_RECHECK;
    p.handle_timeout(probe);
    p.poll_action();
    p.handle_action_done(probe);
    p.handle_registered(probe + secs(0.05), via_relay());
    assert_eq!(p.poll_action(), None);
    p.handle_timeout(probe + RELAY_PROBE_WAIT);
    assert_eq!(p.poll_action(), Some(RelayAllAction::EndProbe));
}

#[test]
fn a_direct_answer_outside_a_probe_is_ignored() {
    // Only a probe's answer says that UDP gets through: between probes, registrations go
    // through the relay.
    let t0 = Instant::now();
    let mut p = relaying(t0);
    p.handle_registered(t0 + secs(10.0), direct());
    assert_eq!(p.poll_action(), None);
    assert!(p.is_relaying());
}

#[test]
fn a_direct_answer_before_the_probe_is_sent_counts() {
    // The probe registration's answer may arrive while the driver is still sending it.
    let t0 = Instant::now();
    let mut p = relaying(t0);
    let probe = t0 + RELAY_ALL_AFTER + RELAY_ALL_RECHECK;
    p.handle_timeout(probe);
    assert_eq!(p.poll_action(), Some(RelayAllAction::ProbeDirect));
    p.handle_registered(probe, direct());
    assert_eq!(p.poll_action(), Some(RelayAllAction::Leave));
}
