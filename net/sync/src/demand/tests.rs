use std::time::{Duration, Instant};

use fybrk_store::ChunkId;

use super::{Demands, Outcome, FETCH_TIMEOUT, RECONNECT_GRACE};

fn id(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

#[test]
fn a_chunk_is_asked_of_one_peer_then_the_next() {
    let t0 = Instant::now();
    let mut d = Demands::default();
    d.connected(1);
    d.connected(2);
    d.want(id(1), true, t0);
    assert_eq!(d.next_for(1, 10), vec![id(1)]);
    assert!(d.next_for(2, 10).is_empty(), "asked of one peer at a time");
    d.failed(id(1), 1, "not found");
    assert_eq!(d.outcome(&id(1)), Some(&Outcome::Pending));
    assert!(d.next_for(1, 10).is_empty(), "peer 1 was tried");
    assert_eq!(d.next_for(2, 10), vec![id(1)]);
    assert!(d.stored(id(1)), "a read waits for it");
    assert_eq!(d.outcome(&id(1)), Some(&Outcome::Stored));
    d.release(&id(1));
    assert_eq!(d.outcome(&id(1)), None, "forgotten once the read took it");
}

#[test]
fn every_peer_lacking_it_fails_the_read() {
    let t0 = Instant::now();
    let mut d = Demands::default();
    d.connected(1);
    d.connected(2);
    d.want(id(1), true, t0);
    d.next_for(1, 1);
    d.failed(id(1), 1, "not found");
    d.next_for(2, 1);
    d.failed(id(1), 2, "not found");
    assert!(matches!(d.outcome(&id(1)), Some(Outcome::Failed(why)) if why.contains("not found")));
}

#[test]
fn offline_fails_at_once_and_a_disconnect_hands_over() {
    let t0 = Instant::now();
    let mut d = Demands::default();
    d.want(id(1), true, t0);
    assert!(
        matches!(d.outcome(&id(1)), Some(Outcome::Failed(_))),
        "no peer connected: no waiting"
    );
    d.release(&id(1));
    d.connected(1);
    d.connected(2);
    d.want(id(2), true, t0);
    assert_eq!(d.next_for(1, 1), vec![id(2)]);
    d.disconnected(1, t0);
    assert_eq!(d.outcome(&id(2)), Some(&Outcome::Pending));
    assert_eq!(d.next_for(2, 1), vec![id(2)], "the other peer is asked");
    d.disconnected(2, t0);
    assert_eq!(
        d.outcome(&id(2)),
        Some(&Outcome::Pending),
        "the last peer left: wait a moment for one to come back"
    );
    assert_eq!(d.handle_timeout(t0), Some(t0 + RECONNECT_GRACE));
    d.handle_timeout(t0 + RECONNECT_GRACE);
    assert!(
        matches!(d.outcome(&id(2)), Some(Outcome::Failed(why)) if why.contains("connected")),
        "nobody came back"
    );
}

#[test]
fn a_read_while_a_connection_is_replaced_waits_for_the_new_one() {
    // The old session ends before the new one is up (the failure CI saw: EHOSTUNREACH on a
    // read right after both devices had reconnected).
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(1);
    let mut d = Demands::default();
    d.connected(1);
    d.want(id(1), true, t0);
    assert_eq!(d.next_for(1, 1), vec![id(1)]);
    d.disconnected(1, t0);
    d.want(id(2), true, t1);
    assert_eq!(
        d.outcome(&id(1)),
        Some(&Outcome::Pending),
        "asked, in flight"
    );
    assert_eq!(
        d.outcome(&id(2)),
        Some(&Outcome::Pending),
        "asked in the gap"
    );
    assert_eq!(d.handle_timeout(t1), Some(t0 + RECONNECT_GRACE));
    d.connected(1);
    let mut asked = d.next_for(1, 5);
    asked.sort();
    let mut want = vec![id(1), id(2)];
    want.sort();
    assert_eq!(asked, want, "the same peer is asked again once back");
    assert_eq!(
        d.handle_timeout(t0 + RECONNECT_GRACE),
        Some(t0 + FETCH_TIMEOUT),
        "connected again: the grace no longer applies"
    );
    assert!(d.stored(id(1)) && d.stored(id(2)));
    // Long after the last peer left, a read fails at once again.
    d.disconnected(1, t1);
    d.want(id(3), true, t1 + RECONNECT_GRACE);
    assert!(matches!(d.outcome(&id(3)), Some(Outcome::Failed(_))));
}

#[test]
fn closing_a_duplicate_connection_keeps_the_peer() {
    // Both sides dialled: two sessions with peer 1 for a moment, then one is closed.
    let t0 = Instant::now();
    let mut d = Demands::default();
    d.connected(1);
    d.connected(1);
    d.want(id(1), true, t0);
    assert_eq!(d.next_for(1, 1), vec![id(1)]);
    d.disconnected(1, t0);
    assert_eq!(d.outcome(&id(1)), Some(&Outcome::Pending));
    assert_eq!(
        d.next_for(1, 1),
        vec![id(1)],
        "asked again through the surviving session"
    );
    d.want(id(2), true, t0);
    assert_eq!(
        d.outcome(&id(2)),
        Some(&Outcome::Pending),
        "a read after the duplicate closed still has a peer to ask"
    );
    d.disconnected(1, t0);
    let later = t0 + RECONNECT_GRACE;
    d.handle_timeout(later);
    assert!(matches!(d.outcome(&id(1)), Some(Outcome::Failed(_))));
    d.want(id(3), true, later);
    assert!(
        matches!(d.outcome(&id(3)), Some(Outcome::Failed(_))),
        "offline now"
    );
}

#[test]
fn a_silent_peer_fails_the_read_at_the_deadline() {
    let t0 = Instant::now();
    let mut d = Demands::default();
    d.connected(1);
    d.want(id(1), true, t0);
    d.next_for(1, 1);
    assert_eq!(
        d.handle_timeout(t0 + Duration::from_secs(1)),
        Some(t0 + FETCH_TIMEOUT)
    );
    assert_eq!(d.outcome(&id(1)), Some(&Outcome::Pending));
    assert_eq!(d.handle_timeout(t0 + FETCH_TIMEOUT), None);
    assert!(matches!(d.outcome(&id(1)), Some(Outcome::Failed(why)) if why.contains("8 s")));
    assert!(
        FETCH_TIMEOUT < Duration::from_secs(10),
        "the README promises 10 s"
    );
}

#[test]
fn read_ahead_leaves_nothing_behind() {
    let t0 = Instant::now();
    let mut d = Demands::default();
    d.want(id(1), false, t0);
    assert_eq!(d.outcome(&id(1)), None, "failed read-ahead is dropped");
    d.connected(1);
    d.want(id(2), false, t0);
    assert_eq!(d.next_for(1, 5), vec![id(2)]);
    assert!(!d.stored(id(2)), "nobody waits");
    assert_eq!(d.outcome(&id(2)), None);
    // A read joining a read-ahead in flight waits for the same fetch.
    d.want(id(3), false, t0);
    d.next_for(1, 5);
    d.want(id(3), true, t0);
    assert!(d.next_for(1, 5).is_empty(), "not asked twice");
    assert!(d.stored(id(3)));
}
