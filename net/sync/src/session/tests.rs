//! One session driven by hand: handshake, index batching, fetching, progress, timers, limits.

use super::*;
use fybrk_store::{ChunkRef, Kind, VersionVector};
use std::time::Duration;

const ME: ShortId = 1;
const PEER: ShortId = 2;
const FOLDER: [u8; 16] = [7; 16];

fn id(n: u8) -> ChunkId {
    ChunkId([n; 32])
}

fn file(path: &str, seq: u64, chunks: &[u8]) -> FileRecord {
    let mut r = FileRecord::new(path, Kind::File, 0o644, 0);
    r.chunks = chunks
        .iter()
        .map(|&n| ChunkRef { id: id(n), len: 10 })
        .collect();
    r.size = 10 * chunks.len() as u64;
    r.version = VersionVector([(PEER, seq)].into_iter().collect());
    r.seq = seq;
    r
}

fn hello(seen_from_you: u64, max_seq: u64) -> Message {
    Message::Hello {
        device: PEER,
        folder: FOLDER,
        max_seq,
        seen_from_you,
    }
}

fn drain(s: &mut Session) -> Vec<Message> {
    std::iter::from_fn(|| s.poll_outgoing()).collect()
}

/// A session past the handshake, our Hello drained.
fn open(now: Instant) -> Session {
    let mut s = Session::new(ME, FOLDER, 0, 0, now);
    assert_eq!(
        drain(&mut s),
        vec![Message::Hello {
            device: ME,
            folder: FOLDER,
            max_seq: 0,
            seen_from_you: 0
        }]
    );
    assert_eq!(s.handle_message(hello(0, 10), now), vec![]);
    s
}

fn tokens(actions: &[Action]) -> Vec<RecordToken> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::NeedChunks { token, .. } => Some(*token),
            _ => None,
        })
        .collect()
}

pub(super) fn requests(msgs: &[Message]) -> Vec<(ChunkId, u32)> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::ChunkRequest { id, req_id } => Some((*id, *req_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_errors_close_the_session() {
    let now = Instant::now();
    let mut s = Session::new(ME, FOLDER, 0, 0, now);
    let wrong = Message::Hello {
        device: PEER,
        folder: [0; 16],
        max_seq: 0,
        seen_from_you: 0,
    };
    assert!(matches!(
        s.handle_message(wrong, now)[..],
        [Action::Close(SyncError::WrongFolder { .. })]
    ));
    assert!(s.is_closed() && s.poll_outgoing().is_none() && s.poll_timeout().is_none());
    assert_eq!(
        s.handle_message(Message::Ping, now),
        vec![],
        "closed sessions ignore input"
    );

    let mut s = Session::new(ME, FOLDER, 0, 0, now);
    let me = Message::Hello {
        device: ME,
        folder: FOLDER,
        max_seq: 0,
        seen_from_you: 0,
    };
    assert_eq!(
        s.handle_message(me, now),
        vec![Action::Close(SyncError::SelfConnect(ME))]
    );

    let mut s = Session::new(ME, FOLDER, 0, 0, now);
    assert!(matches!(
        s.handle_message(Message::Ping, now)[..],
        [Action::Close(SyncError::Protocol(_))]
    ));

    let mut s = open(now);
    assert!(matches!(
        s.handle_message(hello(0, 0), now)[..],
        [Action::Close(SyncError::Protocol(_))]
    ));
}

#[test]
fn index_is_sent_from_what_the_peer_has_seen() {
    let now = Instant::now();
    let mut s = Session::new(ME, FOLDER, 50, 0, now);
    drain(&mut s);
    assert_eq!(
        s.handle_message(hello(30, 0), now),
        vec![Action::SendIndexFrom(30)]
    );
    // Nothing more is asked while that answer is outstanding.
    assert_eq!(s.handle_local_changed(51), vec![]);
    let recs: Vec<FileRecord> = (31..=50).map(|q| file(&format!("f{q}"), q, &[])).collect();
    assert_eq!(
        s.handle_local_index(recs, 50),
        vec![Action::SendIndexFrom(50)],
        "51 arrived meanwhile"
    );
    let sent = drain(&mut s);
    let Message::IndexUpdate {
        records,
        up_to_seq: 50,
    } = &sent[0]
    else {
        panic!("{sent:?}")
    };
    assert_eq!(records.len(), 20);
    assert_eq!(s.handle_local_index(vec![file("g", 51, &[])], 50), vec![]);
    assert!(matches!(
        &drain(&mut s)[..],
        [Message::IndexUpdate { up_to_seq: 51, .. }]
    ));
    assert!(s.is_idle());
}

#[test]
fn a_peer_claiming_more_than_our_log_gets_everything() {
    let now = Instant::now();
    let mut s = Session::new(ME, FOLDER, 5, 0, now);
    assert_eq!(
        s.handle_message(hello(99, 0), now),
        vec![Action::SendIndexFrom(0)]
    );
}

#[test]
fn a_restarted_peer_log_resets_progress() {
    let now = Instant::now();
    let mut s = Session::new(ME, FOLDER, 0, 40, now);
    assert_eq!(
        s.handle_message(hello(0, 3), now),
        vec![Action::PeerSeenUpTo(0)]
    );
    assert_eq!(s.peer_seen(), 0);
}

#[test]
fn index_batches_respect_the_size_target_and_an_empty_one_reports_progress() {
    let now = Instant::now();
    let config = SessionConfig {
        batch_bytes: 2_000,
        ..SessionConfig::default()
    };
    let mut s = Session::with_config(ME, FOLDER, 100, 0, now, config);
    s.handle_message(hello(0, 0), now);
    drain(&mut s);
    let recs: Vec<FileRecord> = (1..=100)
        .map(|q| file(&format!("file-{q}"), q, &[1, 2]))
        .collect();
    s.handle_local_index(recs, 100);
    let batches = drain(&mut s);
    assert!(batches.len() > 5, "{}", batches.len());
    let mut last = 0;
    for m in &batches {
        let Message::IndexUpdate { records, up_to_seq } = m else {
            panic!()
        };
        let bound: usize = records.iter().map(record_len_bound).sum();
        assert!(bound <= 2_000 || records.len() == 1);
        assert!(*up_to_seq > last && records.iter().all(|r| r.seq <= *up_to_seq));
        last = *up_to_seq;
    }
    assert_eq!(last, 100);

    // Nothing changed but the sequence moved (e.g. only records the store dropped): an empty
    // batch still tells the peer it is caught up.
    s.handle_local_changed(105);
    s.handle_local_index(vec![], 105);
    assert_eq!(
        drain(&mut s),
        vec![Message::IndexUpdate {
            records: vec![],
            up_to_seq: 105
        }]
    );
}

#[test]
fn oversized_records_are_reported_not_sent() {
    let now = Instant::now();
    let config = SessionConfig {
        max_frame: 500,
        ..SessionConfig::default()
    };
    let mut s = Session::with_config(ME, FOLDER, 2, 0, now, config);
    s.handle_message(hello(0, 0), now);
    drain(&mut s);
    let big = file("big", 1, &[0; 20]);
    let acts = s.handle_local_index(vec![big, file("small", 2, &[])], 2);
    assert!(matches!(&acts[..], [Action::RecordTooLarge { path, .. }] if path == "big"));
    let sent = drain(&mut s);
    assert!(
        matches!(&sent[..], [Message::IndexUpdate { records, up_to_seq: 2 }] if records.len() == 1)
    );
}

#[test]
fn records_with_all_chunks_present_apply_at_once_and_progress_follows() {
    let now = Instant::now();
    let mut s = open(now);
    let recs = vec![file("a", 3, &[1]), file("b", 5, &[2])];
    let acts = s.handle_message(
        Message::IndexUpdate {
            records: recs.clone(),
            up_to_seq: 6,
        },
        now,
    );
    let t = tokens(&acts);
    assert_eq!(t.len(), 2);
    assert_eq!(
        s.handle_missing(t[0], Some(vec![])),
        vec![Action::Apply(recs[0].clone())]
    );
    assert_eq!(
        s.handle_missing(t[1], None),
        vec![Action::PeerSeenUpTo(6)],
        "a record not wanted is settled too"
    );
    assert_eq!(s.peer_seen(), 6);
    assert!(drain(&mut s).is_empty(), "nothing fetched");
}

#[test]
fn missing_chunks_are_fetched_within_the_window_and_shared_ones_once() {
    let now = Instant::now();
    let config = SessionConfig {
        window: 4,
        ..SessionConfig::default()
    };
    let mut s = Session::with_config(ME, FOLDER, 0, 0, now, config);
    s.handle_message(hello(0, 0), now);
    drain(&mut s);
    let a = file("a", 1, &[1, 2, 3, 4, 5, 6]);
    let b = file("b", 2, &[6, 7]);
    let acts = s.handle_message(
        Message::IndexUpdate {
            records: vec![a.clone(), b.clone()],
            up_to_seq: 2,
        },
        now,
    );
    let t = tokens(&acts);
    assert!(s
        .handle_missing(t[0], Some(a.chunks.iter().map(|c| c.id).collect()))
        .is_empty());
    assert!(s.handle_missing(t[1], Some(vec![id(6), id(7)])).is_empty());
    let mut reqs = requests(&drain(&mut s));
    assert_eq!(reqs.len(), 4, "window");
    let mut applied = Vec::new();
    let mut asked = Vec::new();
    while let Some((cid, req)) = reqs.pop() {
        asked.push(cid);
        let acts = s.handle_message(
            Message::ChunkResponse {
                req_id: req,
                data: Some(vec![9]),
            },
            now,
        );
        assert_eq!(
            acts,
            vec![Action::StoreChunk {
                id: cid,
                data: vec![9],
                early: false,
            }]
        );
        for act in s.handle_chunk_verified(cid, true) {
            if let Action::Apply(r) = act {
                applied.push(r.path);
            }
        }
        reqs.extend(requests(&drain(&mut s)));
    }
    asked.sort();
    assert_eq!(
        asked,
        (1..=7).map(id).collect::<Vec<_>>(),
        "each chunk requested once"
    );
    applied.sort();
    assert_eq!(applied, vec!["a", "b"]);
    assert_eq!(s.peer_seen(), 2);
    assert!(s.is_idle());
}

#[test]
fn a_corrupt_chunk_is_requested_again_then_reported_and_progress_held() {
    let now = Instant::now();
    let mut s = open(now);
    let a = file("a", 1, &[1]);
    let acts = s.handle_message(
        Message::IndexUpdate {
            records: vec![a],
            up_to_seq: 1,
        },
        now,
    );
    s.handle_missing(tokens(&acts)[0], Some(vec![id(1)]));
    for attempt in 1..=3 {
        let reqs = requests(&drain(&mut s));
        assert_eq!(reqs.len(), 1, "attempt {attempt}");
        s.handle_message(
            Message::ChunkResponse {
                req_id: reqs[0].1,
                data: Some(vec![0]),
            },
            now,
        );
        let acts = s.handle_chunk_verified(id(1), false);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Apply(_))),
            "never applied"
        );
        if attempt == 3 {
            assert_eq!(
                acts,
                vec![Action::FetchFailed {
                    path: "a".into(),
                    chunk: id(1),
                    reason: FetchFailure::Corrupt { attempts: 3 }
                }]
            );
        }
    }
    assert!(drain(&mut s).is_empty(), "no fourth request");
    assert_eq!(s.peer_seen(), 0, "progress stays before the failed record");
    assert!(!s.is_idle());

    // The peer's newer version of the path supersedes the failed one and progress moves on.
    let acts = s.handle_message(
        Message::IndexUpdate {
            records: vec![file("a", 2, &[])],
            up_to_seq: 2,
        },
        now,
    );
    assert_eq!(
        s.handle_missing(tokens(&acts)[0], Some(vec![])).last(),
        Some(&Action::PeerSeenUpTo(2))
    );
}

#[test]
fn a_chunk_the_peer_lacks_fails_the_record() {
    let now = Instant::now();
    let mut s = open(now);
    let acts = s.handle_message(
        Message::IndexUpdate {
            records: vec![file("a", 1, &[1, 2])],
            up_to_seq: 1,
        },
        now,
    );
    s.handle_missing(tokens(&acts)[0], Some(vec![id(1), id(2)]));
    let reqs = requests(&drain(&mut s));
    let first = reqs.iter().find(|(c, _)| *c == id(1)).map(|r| r.1).unwrap();
    let acts = s.handle_message(
        Message::ChunkResponse {
            req_id: first,
            data: None,
        },
        now,
    );
    assert_eq!(
        acts,
        vec![Action::FetchFailed {
            path: "a".into(),
            chunk: id(1),
            reason: FetchFailure::NotFound
        }]
    );
}

#[test]
fn a_newer_record_for_a_path_replaces_a_pending_one() {
    let now = Instant::now();
    let mut s = open(now);
    let acts = s.handle_message(
        Message::IndexUpdate {
            records: vec![file("a", 1, &[1])],
            up_to_seq: 1,
        },
        now,
    );
    let old = tokens(&acts)[0];
    s.handle_missing(old, Some(vec![id(1)]));
    let req = requests(&drain(&mut s))[0].1;
    let acts = s.handle_message(
        Message::IndexUpdate {
            records: vec![file("a", 2, &[2])],
            up_to_seq: 2,
        },
        now,
    );
    let new = tokens(&acts)[0];
    assert_eq!(
        acts.last(),
        Some(&Action::PeerSeenUpTo(1)),
        "the replaced record settles its batch"
    );
    assert_eq!(
        s.handle_missing(old, Some(vec![])),
        vec![],
        "late answers for it are ignored"
    );
    // Its chunk still arrives (it was in flight) and is dropped.
    assert_eq!(
        s.handle_message(
            Message::ChunkResponse {
                req_id: req,
                data: Some(vec![1])
            },
            now
        ),
        vec![]
    );
    assert_eq!(
        s.handle_missing(new, Some(vec![])),
        vec![Action::Apply(file("a", 2, &[2])), Action::PeerSeenUpTo(2)]
    );
}

#[test]
fn a_chunk_from_elsewhere_completes_a_record() {
    let now = Instant::now();
    let mut s = open(now);
    let acts = s.handle_message(
        Message::IndexUpdate {
            records: vec![file("a", 1, &[1])],
            up_to_seq: 1,
        },
        now,
    );
    s.handle_missing(tokens(&acts)[0], Some(vec![id(1)]));
    drain(&mut s);
    let acts = s.handle_chunk_verified(id(1), true);
    assert_eq!(
        acts,
        vec![Action::Apply(file("a", 1, &[1])), Action::PeerSeenUpTo(1)]
    );
}

#[test]
fn serving_chunks_and_its_limits() {
    let now = Instant::now();
    let config = SessionConfig {
        max_serving: 2,
        ..SessionConfig::default()
    };
    let mut s = Session::with_config(ME, FOLDER, 0, 0, now, config);
    s.handle_message(hello(0, 0), now);
    drain(&mut s);
    assert_eq!(
        s.handle_message(
            Message::ChunkRequest {
                id: id(1),
                req_id: 5
            },
            now
        ),
        vec![Action::ReadChunk {
            id: id(1),
            req_id: 5
        }]
    );
    s.handle_chunk_read(5, Some(vec![1, 2]));
    s.handle_chunk_read(5, Some(vec![3])); // answered already: ignored
                                           // The driver weighs the queued answer before it reads more requests.
    assert_eq!(s.queued_chunk_bytes(), 2);
    assert_eq!(
        drain(&mut s),
        vec![Message::ChunkResponse {
            req_id: 5,
            data: Some(vec![1, 2])
        }]
    );
    assert_eq!(s.queued_chunk_bytes(), 0, "taken by the driver");
    s.handle_message(
        Message::ChunkRequest {
            id: id(1),
            req_id: 6,
        },
        now,
    );
    let dup = s.handle_message(
        Message::ChunkRequest {
            id: id(2),
            req_id: 6,
        },
        now,
    );
    assert!(
        matches!(dup[..], [Action::Close(SyncError::Protocol(_))]),
        "{dup:?}"
    );

    let mut s = Session::with_config(
        ME,
        FOLDER,
        0,
        0,
        now,
        SessionConfig {
            max_serving: 2,
            ..SessionConfig::default()
        },
    );
    s.handle_message(hello(0, 0), now);
    for req_id in 0..2 {
        s.handle_message(Message::ChunkRequest { id: id(1), req_id }, now);
    }
    let over = s.handle_message(
        Message::ChunkRequest {
            id: id(1),
            req_id: 9,
        },
        now,
    );
    assert!(matches!(over[..], [Action::Close(SyncError::Protocol(_))]));
}

#[test]
fn protocol_violations_close() {
    let now = Instant::now();
    let mut s = open(now);
    let r = s.handle_message(
        Message::ChunkResponse {
            req_id: 3,
            data: None,
        },
        now,
    );
    assert!(matches!(r[..], [Action::Close(SyncError::Protocol(_))]));
    assert!(valid_path("a/b.c/.d") && valid_path("..a"));
}

#[test]
fn invalid_records_are_refused_and_the_rest_replicate() {
    let now = Instant::now();
    for bad in [
        "",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a/",
        "a\0b",
        ".fybrk/x",
    ] {
        let mut s = open(now);
        let mut lying = file("lying", 2, &[1]);
        lying.size = 11;
        let r = s.handle_message(
            Message::IndexUpdate {
                records: vec![file(bad, 1, &[]), lying, file("good", 3, &[])],
                up_to_seq: 3,
            },
            now,
        );
        // Only the valid record goes on; the session stays open.
        assert!(
            matches!(&r[..], [Action::NeedChunks { record, .. }] if record.path == "good"),
            "{bad:?}: {r:?}"
        );
        let Action::NeedChunks { token, .. } = &r[0] else {
            unreachable!()
        };
        let r = s.handle_missing(*token, Some(vec![]));
        assert!(
            matches!(&r[..], [Action::Apply(rec), Action::PeerSeenUpTo(3)] if rec.path == "good"),
            "{r:?}"
        );
        assert!(!s.is_closed());
    }
}

#[test]
fn keepalive_and_idle_timeout() {
    let t0 = Instant::now();
    let cfg = SessionConfig::default();
    let mut s = open(t0);
    assert_eq!(s.poll_timeout(), Some(t0 + cfg.ping_interval));
    let t1 = t0 + cfg.ping_interval;
    assert_eq!(s.handle_timeout(t1), vec![]);
    assert_eq!(drain(&mut s), vec![Message::Ping]);
    // A Pong keeps the connection alive.
    let t2 = t1 + Duration::from_secs(1);
    s.handle_message(Message::Pong, t2);
    assert_eq!(s.poll_timeout(), Some(t1 + cfg.ping_interval));
    // We answer pings.
    s.handle_message(Message::Ping, t2);
    assert_eq!(drain(&mut s), vec![Message::Pong]);
    // Silence past the idle timeout closes.
    let dead = t2 + cfg.idle_timeout;
    let mut closed = Vec::new();
    let mut t = t2;
    while closed.is_empty() {
        t = s
            .poll_timeout()
            .expect("open sessions have a timeout")
            .max(t);
        assert!(t <= dead);
        closed = s.handle_timeout(t);
        drain(&mut s);
    }
    assert_eq!(
        closed,
        vec![Action::Close(SyncError::Timeout(cfg.idle_timeout))]
    );
}

#[test]
fn hello_must_name_the_authenticated_device() {
    let now = Instant::now();
    let mut s = Session::new(ME, FOLDER, 0, 0, now);
    s.expect_peer(PEER ^ 1);
    let r = s.handle_message(hello(0, 10), now);
    assert!(
        matches!(r[..], [Action::Close(SyncError::Protocol(_))]),
        "{r:?}"
    );
    let mut s = Session::new(ME, FOLDER, 0, 0, now);
    s.expect_peer(PEER);
    assert!(!matches!(
        s.handle_message(hello(0, 10), now)[..],
        [Action::Close(_)]
    ));
    assert_eq!(s.peer(), Some(PEER));
}
