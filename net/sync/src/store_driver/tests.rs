//! The store driver against real RocksDB stores, frames through the real codec.

use std::collections::BTreeMap;
use std::time::Duration;

use fybrk_store::{FolderKey, StoreOptions};

use super::*;
use crate::messages::encode_frame;
use crate::naming::CONFLICT_MARKER;
use crate::test_support::{random, read_file, write_file};
use crate::{FrameDecoder, Message, DEFAULT_MAX_FRAME};

/// Short ids whose top bits differ, so their conflict-name tags differ.
const IDS: [ShortId; 2] = [0x1111_1111_1111_1111, 0x9999_9999_9999_9999];
/// Both sessions name the same folder. Not `Store::folder_id()`: that is random per store,
/// so two stores of one folder never agree on it.
const FOLDER: [u8; 16] = *b"fybrk-test-fold!";

struct Device {
    _dir: tempfile::TempDir,
    replica: StoreReplica,
}

fn device(i: usize) -> Device {
    device_with_budget(i, None)
}

/// Device `i`, on demand when `cache_budget` is set.
fn device_with_budget(i: usize, cache_budget: Option<u64>) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &FolderKey::from_bytes([7; 32]),
        StoreOptions {
            cache_bytes: 1 << 20,
            device: Some(IDS[i]),
            folder_id: None,
            cache_budget,
        },
    )
    .unwrap();
    Device {
        _dir: dir,
        replica: StoreReplica::new(store),
    }
}

/// Every record, sequence numbers aside.
fn view(store: &Store) -> BTreeMap<String, FileRecord> {
    store
        .changes_since(0)
        .unwrap()
        .into_iter()
        .map(|r| (r.path.clone(), FileRecord { seq: 0, ..r }))
        .collect()
}

#[derive(Default, Debug)]
struct Counts {
    /// Records in `IndexUpdate`s sent by side `i`.
    index_records: [usize; 2],
    chunk_requests: usize,
    corrupted: usize,
}

/// Two devices and a pair of sessions whose frames travel through the real codec.
struct Pair {
    devices: [Device; 2],
    sessions: [Session; 2],
    decoders: [FrameDecoder; 2],
    now: Instant,
    counts: Counts,
    /// Flip a byte of the next this many chunk responses.
    corrupt: usize,
}

impl Pair {
    fn new() -> Pair {
        let devices = [device(0), device(1)];
        let now = Instant::now();
        let sessions = [0, 1].map(|i| new_session(&devices, i, now));
        Pair {
            devices,
            sessions,
            decoders: [0, 1].map(|_| FrameDecoder::new(DEFAULT_MAX_FRAME)),
            now,
            counts: Counts::default(),
            corrupt: 0,
        }
    }

    fn store(&self, i: usize) -> &Store {
        self.devices[i].replica.store()
    }

    /// New sessions from the remembered progress (a reconnect); counters reset.
    fn reconnect(&mut self) {
        self.sessions = [0, 1].map(|i| new_session(&self.devices, i, self.now));
        self.decoders = [0, 1].map(|_| FrameDecoder::new(DEFAULT_MAX_FRAME));
        self.counts = Counts::default();
    }

    /// Device `i` committed something locally.
    fn local_changed(&mut self, i: usize) {
        let seq = self.store(i).sequence();
        let actions = self.sessions[i].handle_local_changed(seq);
        let now = self.now;
        self.devices[i]
            .replica
            .run(&mut self.sessions[i], actions, now)
            .unwrap();
    }

    /// Delivers messages both ways until both sessions are idle. The sessions first learn
    /// of the local commits made since they started.
    fn sync(&mut self) {
        self.local_changed(0);
        self.local_changed(1);
        for _ in 0..10_000 {
            self.now += Duration::from_millis(1);
            let mut moved = false;
            for i in 0..2 {
                while let Some(mut msg) = self.sessions[i].poll_outgoing() {
                    moved = true;
                    match &mut msg {
                        Message::IndexUpdate { records, .. } => {
                            self.counts.index_records[i] += records.len()
                        }
                        Message::ChunkRequest { .. } => self.counts.chunk_requests += 1,
                        Message::ChunkResponse { data: Some(d), .. } if self.corrupt > 0 => {
                            self.corrupt -= 1;
                            self.counts.corrupted += 1;
                            let at = d.len() / 2;
                            d[at] ^= 0x20;
                        }
                        _ => {}
                    }
                    let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
                    self.decoders[1 - i].push(&frame);
                }
            }
            for i in 0..2 {
                while let Some(msg) = self.decoders[i].next_message().unwrap() {
                    moved = true;
                    let actions = self.sessions[i].handle_message(msg, self.now);
                    self.devices[i]
                        .replica
                        .run(&mut self.sessions[i], actions, self.now)
                        .unwrap();
                }
            }
            for d in &self.devices {
                assert!(d.replica.closed().is_none(), "{:?}", d.replica.closed());
            }
            if !moved && self.sessions.iter().all(Session::is_idle) {
                return;
            }
        }
        panic!("not idle after 10000 steps: {:#?}", self.sessions);
    }

    fn assert_converged(&self) {
        assert_eq!(view(self.store(0)), view(self.store(1)));
        for i in 0..2 {
            let report = self.store(i).verify().unwrap();
            assert!(report.is_ok(), "device {i}: {:?}", report.problems);
            assert!(self.devices[i].replica.problems().is_empty());
            assert_eq!(
                self.sessions[i].peer_seen(),
                self.store(1 - i).sequence(),
                "progress caught up"
            );
        }
    }
}

fn new_session(devices: &[Device; 2], i: usize, now: Instant) -> Session {
    let store = devices[i].replica.store();
    let seen = devices[i].replica.seen_from(IDS[1 - i]);
    Session::new(store.device(), FOLDER, store.sequence(), seen, now)
}

#[test]
fn files_dirs_symlinks_and_tombstones_arrive_intact() {
    let mut p = Pair::new();
    let big = random(1 << 20, 1);
    let a = p.store(0).clone();
    a.commit(
        vec![FileRecord::new("docs", Kind::Dir, 0o755, 5)],
        None,
        false,
    )
    .unwrap();
    let rec = write_file(&a, "docs/big.bin", &big, 10);
    assert!(rec.chunks.len() > 4, "multi-chunk: {}", rec.chunks.len());
    write_file(&a, "docs/small.txt", b"hello", 11);
    let mut link = FileRecord::new("link", Kind::Symlink, 0o777, 12);
    link.target = Some("docs/small.txt".into());
    link.size = 14;
    a.commit(vec![link], None, false).unwrap();
    let mut gone = write_file(&a, "gone.txt", b"bye", 13);
    gone.deleted = true;
    a.commit(vec![gone], None, false).unwrap();

    p.sync();
    p.assert_converged();
    let b = p.store(1);
    assert_eq!(read_file(b, "docs/big.bin"), big);
    assert_eq!(read_file(b, "docs/small.txt"), b"hello");
    assert_eq!(b.get("docs").unwrap().unwrap().kind, Kind::Dir);
    let link = b.get("link").unwrap().unwrap();
    assert_eq!(link.target.as_deref(), Some("docs/small.txt"));
    assert!(b.get("gone.txt").unwrap().unwrap().deleted);
    assert_eq!(b.stats().files, 2, "{:?}", b.stats());
    // The last 'PeerSeenUpTo' is remembered for the next session.
    assert_eq!(p.devices[1].replica.seen_from(IDS[0]), a.sequence());
    assert!(p.counts.chunk_requests >= rec.chunks.len());
}

#[test]
fn a_rename_transfers_no_chunks() {
    let mut p = Pair::new();
    let data = random(1 << 20, 2);
    let a = p.store(0).clone();
    let old = write_file(&a, "a.bin", &data, 10);
    p.sync();
    let requests_before = p.counts.chunk_requests;

    let mut w = a.writer();
    w.reuse(&old.chunks);
    let mut gone = old.clone();
    gone.deleted = true;
    let moved = FileRecord {
        path: "b.bin".into(),
        version: Default::default(),
        ..old.clone()
    };
    a.commit(vec![gone, moved], Some(&mut w), false).unwrap();
    drop(w);
    p.local_changed(0);
    p.sync();

    assert_eq!(
        p.counts.chunk_requests, requests_before,
        "no chunk requested"
    );
    p.assert_converged();
    let b = p.store(1);
    assert!(b.get("a.bin").unwrap().unwrap().deleted);
    assert_eq!(read_file(b, "b.bin"), data);
    assert_eq!(b.gc().unwrap().freed_chunks, 0, "chunks still referenced");
}

#[test]
fn concurrent_edits_keep_both_versions() {
    let mut p = Pair::new();
    write_file(p.store(0), "doc.txt", b"from A", 100);
    write_file(p.store(1), "doc.txt", b"from B, newer", 200);
    p.sync();
    p.assert_converged();
    for i in 0..2 {
        let s = p.store(i);
        assert_eq!(read_file(s, "doc.txt"), b"from B, newer", "device {i}");
        let copies: Vec<FileRecord> = s
            .list_dir("")
            .unwrap()
            .into_iter()
            .filter(|r| r.path.contains(CONFLICT_MARKER))
            .collect();
        assert_eq!(copies.len(), 1, "device {i}: {copies:#?}");
        assert!(copies[0].path.starts_with("doc.sync-conflict-"));
        assert!(copies[0].path.ends_with(".txt"));
        assert_eq!(read_file(s, &copies[0].path), b"from A");
    }
}

#[test]
fn a_chunk_corrupted_in_transit_is_fetched_again() {
    let mut p = Pair::new();
    let data = random(300 << 10, 3);
    write_file(p.store(0), "f.bin", &data, 10);
    p.corrupt = 1;
    p.sync();
    assert_eq!(p.counts.corrupted, 1);
    p.assert_converged();
    assert_eq!(read_file(p.store(1), "f.bin"), data);
    let chunks = p.store(0).get("f.bin").unwrap().unwrap().chunks.len();
    assert_eq!(p.counts.chunk_requests, chunks + 1, "one re-request");
}

#[test]
fn a_record_whose_chunk_length_lies_is_refused_and_the_session_goes_on() {
    let mut p = Pair::new();
    let a = p.store(0).clone();
    // Committed locally on A (local commits trust their writer), so A's session offers
    // them to B like any record: a 10-byte chunk claimed longer and shorter.
    for (path, claimed) in [("long", 100u32), ("short", 4)] {
        let mut w = a.writer();
        let real = w.add(format!("{path:>10}").as_bytes()).unwrap();
        let mut r = FileRecord::new(path, Kind::File, 0o644, 1);
        r.chunks = vec![fybrk_store::ChunkRef {
            id: real.id,
            len: claimed,
        }];
        r.size = u64::from(r.chunks[0].len);
        a.commit(vec![r], Some(&mut w), false).unwrap();
    }
    write_file(&a, "ok.txt", b"valid", 10);
    p.sync();

    let b = p.store(1);
    assert_eq!(b.get("long").unwrap(), None);
    assert_eq!(b.get("short").unwrap(), None);
    assert_eq!(read_file(b, "ok.txt"), b"valid");
    let refused: Vec<&str> = p.devices[1]
        .replica
        .problems()
        .iter()
        .map(|pr| match pr {
            Problem::Refused { path, .. } => path.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(refused, ["long", "short"]);
    assert_eq!(
        p.sessions[1].peer_seen(),
        a.sequence(),
        "progress moved past them"
    );
    assert!(b.verify().unwrap().is_ok());

    // Later changes still flow.
    write_file(&a, "later.txt", b"later", 11);
    p.sync();
    assert_eq!(read_file(p.store(1), "later.txt"), b"later");
    assert_eq!(
        p.devices[1].replica.problems().len(),
        2,
        "not refused again"
    );
}

#[test]
fn offline_catch_up_sends_only_new_records() {
    let mut p = Pair::new();
    for n in 0..5 {
        write_file(p.store(0), &format!("old{n}"), &random(1000, n), 10);
    }
    p.sync();
    assert_eq!(p.counts.index_records[0], 5);
    assert_eq!(
        p.devices[0].replica.seen_from(IDS[1]),
        p.store(1).sequence()
    );

    // Disconnected: A writes more; B's store does not move.
    write_file(p.store(0), "new1", b"one", 20);
    write_file(p.store(0), "new2", b"two", 21);
    p.reconnect();
    p.sync();
    assert_eq!(p.counts.index_records[0], 2, "only the new records");
    // B logs what it applied and sends it back once; A keeps its own.
    assert_eq!(p.counts.index_records[1], 2);
    assert_eq!(p.counts.chunk_requests, 2);
    p.assert_converged();
    assert_eq!(read_file(p.store(1), "new2"), b"two");
}

/// A file being written on A is offered batch by batch; B fetches the chunks before the record
/// exists, keeps them through a GC, and the record then needs no chunk at all.
#[test]
fn offered_chunks_arrive_before_their_record_and_survive_gc() {
    let mut p = Pair::new();
    let a = p.store(0).clone();
    let fresh: std::sync::Arc<std::sync::Mutex<Vec<ChunkId>>> = Default::default();
    let seen = fresh.clone();
    a.on_fresh_chunks(Some(std::sync::Arc::new(move |ids: &[ChunkId]| {
        seen.lock().unwrap().extend_from_slice(ids)
    })));
    p.sync();

    // "Writing": chunks go through a writer whose full batches are stored and announced.
    let data = random(4 << 20, 7);
    let mut w = a.writer();
    let mut rec = FileRecord::new("big.bin", Kind::File, 0o644, 10);
    for piece in fybrk_store::chunker::chunks(&data[..]) {
        rec.chunks.push(w.add(&piece.unwrap().data).unwrap());
    }
    rec.size = data.len() as u64;
    w.flush().unwrap();
    let offered = fresh.lock().unwrap().clone();
    assert!(
        offered.len() >= rec.chunks.len() / 2,
        "most chunks announced before the commit: {} of {}",
        offered.len(),
        rec.chunks.len()
    );
    p.sessions[0].offer(&offered);
    p.sync();
    let b = p.store(1).clone();
    assert!(b.get("big.bin").unwrap().is_none(), "no record yet");
    assert_eq!(p.counts.chunk_requests, offered.len());
    assert_eq!(p.devices[1].replica.early_chunks(), offered.len() as u64);
    // Unreferenced on B, but pinned while their record may still come.
    assert_eq!(b.gc().unwrap().freed_chunks, 0);
    for id in &offered {
        assert!(b.has_chunk(id).unwrap(), "offered chunk {id} stored on B");
    }

    a.commit(vec![rec.clone()], Some(&mut w), false).unwrap();
    drop(w);
    p.local_changed(0);
    p.sync();
    // Each chunk crossed once: the record asked for none of the offered ones again.
    assert_eq!(p.counts.chunk_requests, rec.chunks.len());
    p.assert_converged();
    assert_eq!(read_file(&b, "big.bin"), data);
}

/// An on-demand device takes no offered content: it fetches what is read, when it is read.
#[test]
fn an_on_demand_device_ignores_offers() {
    let mut p = Pair::new();
    p.devices[1] = device_with_budget(1, Some(64 << 20));
    p.reconnect();
    p.sync();
    let rec = write_file(p.store(0), "f.bin", &random(1 << 20, 8), 10);
    let ids: Vec<ChunkId> = rec.chunks.iter().map(|c| c.id).collect();
    p.sessions[0].offer(&ids);
    p.sync();
    assert_eq!(p.counts.chunk_requests, 0);
    assert_eq!(p.devices[1].replica.early_chunks(), 0);
}
