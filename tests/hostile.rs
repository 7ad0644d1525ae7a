//! A hostile peer cannot break a mount (issue 11, "No peer or input can break a mount").
//!
//! - `hostile_records_through_a_replica_read_back_as_the_chunks_or_eio`: a property test
//!   without a mount. A lying sender ([`Liar`]) pushes arbitrary records (paths, modes, sizes,
//!   chunk lists whose lengths lie, huge version counters and mtimes) through two real
//!   [`Session`]s and the real frame codec into a [`StoreReplica`] over a real RocksDB store;
//!   everything that store accepted is then read through the filesystem ([`Fs`], the code the
//!   FUSE handlers call). Nothing may panic, the replica may never fail, and a read returns the
//!   chunks' content or `EIO`, never other bytes.
//! - `a_paired_hostile_peer_cannot_break_a_mount`: the same through a real mount. Daemon B is
//!   mounted; H is a second real device paired with it, whose daemon is then stopped so the
//!   test can speak as H (its identity, folder key and B's address) over fybrk's QUIC transport
//!   with [`run_peer`]. H first sends a `Hello` naming another device, then crafted records
//!   beside valid ones. Every invalid record is refused (absent from B's mount, B's log names
//!   H), B keeps serving, and the valid records and a later change reach B (and B's change
//!   reaches H).
//!
//! Run: `cargo build --release -p fybrk && cargo test --release -p fybrk -p fybrk-tests --test
//! hostile` (the mount test needs root and /dev/fuse, see `tests/lib.rs`).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fybrk_fs::{Fs, FsConfig, OpenMode, ROOT};
use fybrk_net::identity::{DeviceId, DeviceKey};
use fybrk_net::sync::messages::encode_frame;
use fybrk_net::sync::quic_driver::run_peer;
use fybrk_net::sync::store_driver::StoreReplica;
use fybrk_net::sync::{FrameDecoder, ReplicaStore, Session, DEFAULT_MAX_FRAME};
use fybrk_net::tls::{AllowList, PeerPolicy};
use fybrk_net::transport::Transport;
use fybrk_store::record::VersionVector;
use fybrk_store::{
    ChunkId, ChunkRef, ChunkWriter, FileRecord, FolderKey, Kind, Store, StoreError, StoreOptions,
    Versioning,
};
use fybrk_tests::{
    pair, store_dir, wait_connected, wait_file, wait_for, write_file, Peer, CONNECT_TIMEOUT,
    STAYS_ABSENT, SYNC_TIMEOUT,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The lying store
// ---------------------------------------------------------------------------------------------

/// A real store that lies in its change log: the record at a slot path is replaced by a crafted
/// one (which keeps the slot's sequence number, so it travels in order like any change). Chunks
/// are served from the real store, so a crafted chunk list can name real chunks and lie about
/// their lengths.
#[derive(Clone)]
struct Liar {
    inner: Store,
    lies: HashMap<String, FileRecord>,
}

impl ReplicaStore for Liar {
    type Staging = ChunkWriter;

    fn sequence(&self) -> u64 {
        self.inner.sequence()
    }

    fn get(&self, path: &str) -> Result<Option<FileRecord>, StoreError> {
        self.inner.get(path)
    }

    fn changes_since(&self, since: u64) -> Result<Vec<FileRecord>, StoreError> {
        let mut records = self.inner.changes_since(since)?;
        for r in &mut records {
            if let Some(lie) = self.lies.get(&r.path) {
                *r = FileRecord {
                    seq: r.seq,
                    ..lie.clone()
                };
            }
        }
        Ok(records)
    }

    fn has_chunk(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.inner.has_chunk(id)
    }

    fn read_sealed(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.read_sealed(id)
    }

    fn staging(&self) -> ChunkWriter {
        self.inner.writer()
    }

    fn commit_changes(
        &self,
        changes: Vec<(FileRecord, Versioning)>,
        staging: &mut ChunkWriter,
    ) -> Result<(), StoreError> {
        ReplicaStore::commit_changes(&self.inner, changes, staging)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }
}

/// A directory record at `path` in `store`: a slot a lie replaces.
fn slot(store: &Store, path: &str) {
    let dir = FileRecord::new(path, Kind::Dir, 0o755, 1);
    store.commit(vec![dir], None, false).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Property test: hostile records into a real store, read back through `Fs`
// ---------------------------------------------------------------------------------------------

const SENDER: u64 = 0x1111_1111_1111_1111;
const RECEIVER: u64 = 0x9999_9999_9999_9999;
const FOLDER: [u8; 16] = *b"fybrk-hostile-f!";
/// How much of each file the property test reads back (holes may claim gigabytes).
const READ_LIMIT: u64 = 1 << 20;

fn open_store(dir: &std::path::Path, device: u64) -> Store {
    Store::open(
        dir,
        &FolderKey::from_bytes([3; 32]),
        StoreOptions {
            cache_bytes: 1 << 20,
            device: Some(device),
            folder_id: None,
            cache_budget: None,
        },
    )
    .unwrap()
}

/// One chunk of a crafted record: a chunk of the pool (its index) with a length error, a
/// hole, or an id no one has.
#[derive(Clone, Debug)]
enum Piece {
    Pool { index: usize, len_error: i64 },
    Hole(u32),
    Unknown(u32),
}

#[derive(Clone, Debug)]
struct Crafted {
    path: String,
    kind: Kind,
    mode: u32,
    pieces: Vec<Piece>,
    /// Added to the sum of the chunk lengths (0: an honest size).
    size_error: i64,
    mtime_ns: i64,
    counter: u64,
    deleted: bool,
    target: Option<String>,
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c", "d/e", "d"]).prop_map(str::to_string),
        1 => prop::sample::select(vec![
            "", "/", "..", "../x", "a/../b", "./a", ".fybrk", ".fybrk/at/x", "a//b", "a/",
            "a\0b", "/abs",
        ])
        .prop_map(str::to_string),
        1 => (250usize..300).prop_map(|n| "n".repeat(n)),
        1 => "[a-z./]{1,12}",
    ]
}

fn piece_strategy() -> impl Strategy<Value = Piece> {
    prop_oneof![
        12 => (0usize..4, prop_oneof![12 => Just(0i64), 1 => -3i64..3, 1 => Just(70_000i64)])
            .prop_map(|(index, len_error)| Piece::Pool { index, len_error }),
        2 => prop_oneof![8 => 1u32..5000, 1 => Just(0u32), 1 => Just(u32::MAX)]
            .prop_map(Piece::Hole),
        1 => (0u32..5000).prop_map(Piece::Unknown),
    ]
}

fn crafted_strategy() -> impl Strategy<Value = Crafted> {
    (
        path_strategy(),
        prop_oneof![6 => Just(Kind::File), 1 => Just(Kind::Dir), 1 => Just(Kind::Symlink)],
        prop_oneof![12 => Just(0o644u32), 1 => any::<u32>(), 1 => Just(0o4755u32)],
        prop::collection::vec(piece_strategy(), 0..5),
        prop_oneof![12 => Just(0i64), 1 => -10i64..10, 1 => Just(i64::MAX)],
        prop_oneof![
            12 => Just(1_700_000_000_000_000_000i64),
            1 => any::<i64>(),
            1 => Just(i64::MAX)
        ],
        prop_oneof![12 => 1u64..100, 1 => Just(u64::MAX), 1 => Just(1u64 << 50)],
        prop::bool::weighted(0.1),
        prop::option::weighted(0.1, "[a-z./]{0,20}"),
    )
        .prop_map(
            |(path, kind, mode, pieces, size_error, mtime_ns, counter, deleted, target)| Crafted {
                path,
                kind,
                mode,
                pieces,
                size_error,
                mtime_ns,
                counter,
                deleted,
                target,
            },
        )
}

/// The record `c` describes, over the pool's chunks.
fn craft(c: &Crafted, pool: &[ChunkRef]) -> FileRecord {
    let mut r = FileRecord::new(&c.path, c.kind, c.mode, c.mtime_ns);
    r.deleted = c.deleted;
    r.target = c.target.clone();
    r.version = VersionVector([(SENDER, c.counter)].into_iter().collect());
    for (i, p) in c.pieces.iter().enumerate() {
        r.chunks.push(match *p {
            Piece::Pool { index, len_error } => {
                let real = pool[index % pool.len()];
                ChunkRef {
                    id: real.id,
                    len: (i64::from(real.len) + len_error).clamp(0, i64::from(u32::MAX)) as u32,
                }
            }
            Piece::Hole(len) => ChunkRef::hole(len),
            Piece::Unknown(len) => ChunkRef {
                id: ChunkId([i as u8 + 1; 32]),
                len,
            },
        });
    }
    let sum: u64 = r.chunks.iter().map(|c| u64::from(c.len)).sum();
    r.size = sum.saturating_add_signed(c.size_error);
    r
}

/// Runs a sender session over `from` and a receiver session over `to` until they are quiet,
/// frames through the real codec. Panics if the receiver's driver fails: a refused record must
/// never end its session.
fn replicate(from: &mut StoreReplica<Liar>, to: &mut StoreReplica<Store>) {
    let mut now = Instant::now();
    let mut a = Session::new(SENDER, FOLDER, from.store().sequence(), 0, now);
    let mut b = Session::new(RECEIVER, FOLDER, to.store().sequence(), 0, now);
    a.expect_peer(RECEIVER);
    b.expect_peer(SENDER);
    let (mut into_a, mut into_b) = (
        FrameDecoder::new(DEFAULT_MAX_FRAME),
        FrameDecoder::new(DEFAULT_MAX_FRAME),
    );
    let seq = from.store().sequence();
    let actions = a.handle_local_changed(seq);
    from.run(&mut a, actions, now).unwrap();
    for _ in 0..20_000 {
        now += Duration::from_millis(1);
        let mut moved = false;
        while let Some(msg) = a.poll_outgoing() {
            moved = true;
            // A crafted record the codec cannot carry is simply not sent.
            if let Ok(frame) = encode_frame(&msg, DEFAULT_MAX_FRAME) {
                into_b.push(&frame);
            }
        }
        while let Some(msg) = b.poll_outgoing() {
            moved = true;
            into_a.push(&encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap());
        }
        while let Some(msg) = into_b.next_message().unwrap() {
            moved = true;
            let actions = b.handle_message(msg, now);
            if let Err(e) = to.run(&mut b, actions, now) {
                panic!("the receiving driver failed: {e}");
            }
        }
        while let Some(msg) = into_a.next_message().unwrap() {
            moved = true;
            let actions = a.handle_message(msg, now);
            from.run(&mut a, actions, now).unwrap();
        }
        if to.closed().is_some() || from.closed().is_some() {
            return;
        }
        // Quiet: nothing more happens without timers (which this loop does not drive; a record
        // whose chunk the sender lacks stays failed and pending, so `is_idle` would wait forever).
        if !moved {
            return;
        }
    }
    panic!("not idle after 20000 steps");
}

/// The inode at `path` in `fs`, or `None` where a component is missing.
fn lookup(fs: &Fs, path: &str) -> Option<fybrk_fs::Attr> {
    let mut ino = ROOT;
    let mut attr = None;
    for part in path.split('/') {
        let a = fs.lookup(ino, OsStr::new(part)).ok()?;
        ino = a.ino;
        attr = Some(a);
    }
    attr
}

/// Reads up to [`READ_LIMIT`] bytes of every live file `store` holds through `fs`, and checks
/// each read against the chunks' content (`pool`: plaintext by id): equal, or `EIO`.
fn check_reads(fs: &Fs, store: &Store, pool: &HashMap<ChunkId, Vec<u8>>) -> Result<(), String> {
    for r in store.changes_since(0).unwrap() {
        if !r.is_live() || r.kind != Kind::File {
            continue;
        }
        // A file under a name the mount does not show (its parent is a file, say) cannot be
        // read at all: nothing to judge.
        let Some(attr) = lookup(fs, &r.path) else {
            continue;
        };
        let mut want = Vec::new();
        for c in &r.chunks {
            if want.len() as u64 >= READ_LIMIT {
                break;
            }
            if c.is_hole() {
                let n = u64::from(c.len).min(READ_LIMIT) as usize;
                want.resize(want.len() + n, 0);
            } else {
                match pool.get(&c.id) {
                    Some(data) => want.extend_from_slice(data),
                    None => return Err(format!("{}: stores a chunk no one sent", r.path)),
                }
            }
        }
        let fh = fs
            .open(attr.ino, OpenMode::default())
            .map_err(|e| format!("{}: open failed: {e}", r.path))?;
        let mut got = Vec::new();
        let end = attr.size.min(READ_LIMIT);
        let mut eio = false;
        while (got.len() as u64) < end {
            match fs.read(fh, got.len() as u64, 64 << 10) {
                Ok(piece) if piece.is_empty() => break,
                Ok(piece) => got.extend_from_slice(&piece),
                Err(e) if e.errno() == libc::EIO => {
                    eio = true;
                    break;
                }
                Err(e) => return Err(format!("{}: read failed: {e}", r.path)),
            }
        }
        fs.release(fh).ok();
        if !eio && want.get(..got.len()) != Some(&got[..]) {
            return Err(format!(
                "{}: read {} bytes that are not the chunks' content",
                r.path,
                got.len()
            ));
        }
    }
    Ok(())
}

fn run_case(crafted: &[Crafted]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let a = open_store(&dir.path().join("a"), SENDER);
    let b = open_store(&dir.path().join("b"), RECEIVER);
    // The pool: real files on the sender, so their chunks can be served (and they sync too).
    let mut pool = Vec::new();
    let mut plain = HashMap::new();
    for (i, len) in [10usize, 1000, 4097, 3].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|n| (n * 7 + i) as u8).collect();
        let r = a.write_file(&format!("pool{i}"), &data, 0o644, 1).unwrap();
        pool.push(r.chunks[0]);
        plain.insert(r.chunks[0].id, data);
    }
    let mut lies = HashMap::new();
    for (i, c) in crafted.iter().enumerate() {
        let at = format!("SLOT{i}");
        slot(&a, &at);
        lies.insert(at, craft(c, &pool));
    }
    let mut from = StoreReplica::new(Liar { inner: a, lies });
    let mut to = StoreReplica::new(b.clone());
    replicate(&mut from, &mut to);
    prop_assert!(to.closed().is_none(), "closed: {:?}", to.closed());
    let report = b.verify().unwrap();
    prop_assert!(report.is_ok(), "{:?}", report.problems);
    for r in b.changes_since(0).unwrap() {
        prop_assert!(!r.path.starts_with("SLOT"), "a slot arrived: {r:?}");
    }
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let fs = Fs::new(
        b.clone(),
        FsConfig {
            staging_dir: staging,
            uid: 0,
            gid: 0,
        },
    );
    check_reads(&fs, &b, &plain).map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn hostile_records_through_a_replica_read_back_as_the_chunks_or_eio(
        crafted in prop::collection::vec(crafted_strategy(), 1..12)
    ) {
        run_case(&crafted)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Through a real mount
// ---------------------------------------------------------------------------------------------

/// What a crafted record of the mount test looks like to B, and why it must be refused.
struct Lie {
    /// The slot (a real file in H's store) it replaces.
    slot: &'static str,
    record: FileRecord,
    /// A path under B's mount where the record would appear if it were applied.
    shows_at: Option<String>,
}

/// The crafted records: each breaks one rule. `real` is the one chunk of the slot file.
fn lies(h: u64, real: ChunkRef, slots: &BTreeMap<&'static str, FileRecord>) -> Vec<Lie> {
    let base = |slot: &str, path: &str| FileRecord {
        path: path.to_string(),
        ..slots[slot].clone()
    };
    let long_name = "x".repeat(300);
    let mut out = Vec::new();
    let mut add = |slot: &'static str, record: FileRecord, shows_at: Option<&str>| {
        out.push(Lie {
            slot,
            record,
            shows_at: shows_at.map(str::to_string),
        });
    };
    add(
        "slot-dotdot",
        base("slot-dotdot", "../escape.txt"),
        Some("../escape.txt"),
    );
    add(
        "slot-dotdot2",
        base("slot-dotdot2", "sub/../dotdot.txt"),
        Some("dotdot.txt"),
    );
    add(
        "slot-reserved",
        base("slot-reserved", ".fybrk/at/evil"),
        None,
    );
    add("slot-long", base("slot-long", &long_name), None);
    let mut setuid = base("slot-setuid", "setuid.bin");
    setuid.mode = 0o4755;
    add("slot-setuid", setuid, Some("setuid.bin"));
    let mut size = base("slot-size", "size-lie.txt");
    size.size += 5;
    add("slot-size", size, Some("size-lie.txt"));
    let mut longer = base("slot-longer", "longer.txt");
    longer.chunks = vec![ChunkRef {
        len: real.len + 100,
        ..real
    }];
    longer.size = u64::from(real.len) + 100;
    add("slot-longer", longer, Some("longer.txt"));
    let mut shorter = base("slot-shorter", "shorter.txt");
    shorter.chunks = vec![ChunkRef {
        len: real.len - 4,
        ..real
    }];
    shorter.size = u64::from(real.len) - 4;
    add("slot-shorter", shorter, Some("shorter.txt"));
    let mut vv = base("slot-vv", "pinned.txt");
    vv.version = VersionVector([(h, u64::MAX - 1)].into_iter().collect());
    add("slot-vv", vv, Some("pinned.txt"));
    let mut future = base("slot-future", "future.txt");
    // Year 3000 is past what an i64 of nanoseconds holds (2262): the furthest it can say.
    future.mtime_ns = i64::MAX;
    add("slot-future", future, Some("future.txt"));
    out
}

/// The content of every slot file: the one real chunk the length lies name.
const SLOT_DATA: &[u8] = b"the content of every slot file, one chunk long";

#[test]
fn a_paired_hostile_peer_cannot_break_a_mount() {
    let Some(mut b) = Peer::start("bee") else {
        return;
    };
    let Some(mut h) = Peer::start("hostile") else {
        return;
    };
    pair(&b, &h);
    wait_connected(&b, &h, CONNECT_TIMEOUT);
    write_file(&b.path("before.txt"), b"written before").unwrap();
    wait_file(&h, "before.txt", b"written before", SYNC_TIMEOUT);
    h.down();

    // H's identity, folder key and store; B's id and address.
    let key = DeviceKey::load(&h.state.join("device.key")).unwrap();
    let h_id = key.id();
    let keys = fybrk_store::keyfile::read(&h.state.join("folder.key"))
        .unwrap()
        .unwrap();
    let store = keys
        .open_store(
            &store_dir(&h.state),
            StoreOptions {
                device: Some(h_id.short()),
                ..StoreOptions::default()
            },
        )
        .unwrap();
    let b_id: DeviceId = b.id().parse().unwrap();
    let b_addr: SocketAddr = b.listen_addr().parse().unwrap();

    // The slots (real files in H's store, each replaced by a lie) and the valid records.
    let mut slots = BTreeMap::new();
    for s in [
        "slot-dotdot",
        "slot-dotdot2",
        "slot-reserved",
        "slot-long",
        "slot-setuid",
        "slot-size",
        "slot-longer",
        "slot-shorter",
        "slot-vv",
        "slot-future",
    ] {
        slots.insert(s, store.write_file(s, SLOT_DATA, 0o644, 1).unwrap());
    }
    let real = slots["slot-longer"].chunks[0];
    assert_eq!(real.len as usize, SLOT_DATA.len());
    store
        .commit(
            vec![FileRecord::new("valid-dir", Kind::Dir, 0o755, 1)],
            None,
            false,
        )
        .unwrap();
    store
        .write_file("valid-dir/one.txt", b"valid one", 0o644, 1)
        .unwrap();
    store
        .write_file("valid-two.txt", b"valid two", 0o600, 1)
        .unwrap();
    let lies = lies(h_id.short(), real, &slots);
    let liar = Liar {
        inner: store.clone(),
        lies: lies
            .iter()
            .map(|l| (l.slot.to_string(), l.record.clone()))
            .collect(),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let allow = Arc::new(AllowList::new());
    allow.add(b_id);
    let allow: Arc<dyn PeerPolicy> = allow;
    let transport = {
        let _in_runtime = rt.enter();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        Arc::new(Transport::bind(socket, &key, allow).unwrap())
    };

    // 1. A Hello naming another device than the one TLS authenticated: B closes the session.
    {
        let (transport, liar) = (transport.clone(), liar.clone());
        let store = store.clone();
        let result = rt.block_on(async move {
            let (conn, _) = transport.connect(b_addr, b_id).await.unwrap();
            let session = Session::new(
                h_id.short() ^ 0xff,
                store.folder_id(),
                store.sequence(),
                0,
                Instant::now(),
            );
            let mut replica = StoreReplica::new(liar);
            tokio::time::timeout(
                Duration::from_secs(60),
                run_peer(conn, true, session, &mut replica, None, |_, _| false),
            )
            .await
        });
        assert!(
            result.is_ok(),
            "B did not end the session with a lying Hello"
        );
        let log = b.state.join("daemon.log");
        wait_for("B to log the lying Hello", SYNC_TIMEOUT, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Hello names device") {
                Ok(())
            } else {
                Err(b.log_tail())
            }
        });
    }

    // 2. The lies beside valid records, then normal changes both ways.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::watch::channel(store.sequence());
    let task = {
        let (transport, stop) = (transport.clone(), stop.clone());
        let folder = store.folder_id();
        let seq = store.sequence();
        rt.spawn(async move {
            let (conn, _) = transport.connect(b_addr, b_id).await.unwrap();
            let session = Session::new(h_id.short(), folder, seq, 0, Instant::now());
            let mut replica = StoreReplica::new(liar);
            let r = run_peer(conn, true, session, &mut replica, Some(rx), |_, _| {
                stop.load(Ordering::Relaxed)
            })
            .await;
            (
                r.map(drop).map_err(|e| e.to_string()),
                replica.problems().to_vec(),
            )
        })
    };
    wait_file(&b, "valid-dir/one.txt", b"valid one", SYNC_TIMEOUT);
    wait_file(&b, "valid-two.txt", b"valid two", SYNC_TIMEOUT);
    std::thread::sleep(STAYS_ABSENT);
    for lie in &lies {
        assert!(
            !b.path(lie.slot).exists(),
            "the slot {} itself never left H",
            lie.slot
        );
        if let Some(at) = &lie.shows_at {
            let p = b.path(at);
            assert!(
                std::fs::symlink_metadata(&p).is_err(),
                "{} ({:?}) was applied: {p:?} exists",
                lie.slot,
                lie.record.path
            );
        }
    }
    assert!(!b.root().join("escape.txt").exists());
    let names: Vec<String> = std::fs::read_dir(&b.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in &names {
        assert!(
            !name.starts_with("slot-") && name.len() < 256 && name != ".fybrk",
            "{name} in B's root: {names:?}"
        );
    }
    let log = std::fs::read_to_string(b.state.join("daemon.log")).unwrap();
    let peer = format!("{:016x}", h_id.short());
    let refused = log
        .lines()
        .filter(|l| l.contains("refused a record from peer") && l.contains(&peer))
        .count();
    assert!(
        refused >= lies.len(),
        "B's log names H for {refused} refused records, want {}\n{}",
        lies.len(),
        b.log_tail()
    );

    // B keeps serving: stat, read, write; its change reaches H and H's later change reaches B.
    let md = std::fs::metadata(b.path("valid-two.txt")).unwrap();
    assert_eq!(md.len(), 9);
    assert_eq!(
        std::fs::read(b.path("before.txt")).unwrap(),
        b"written before"
    );
    write_file(&b.path("from-b.txt"), b"B still writes").unwrap();
    wait_for("B's change to reach H", SYNC_TIMEOUT, || {
        match store.read_file("from-b.txt") {
            Ok(Some(data)) if data == b"B still writes" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    store
        .write_file("later.txt", b"a later change", 0o644, 2)
        .unwrap();
    tx.send(store.sequence()).unwrap();
    wait_file(&b, "later.txt", b"a later change", SYNC_TIMEOUT);
    b.assert_verify_ok();

    stop.store(true, Ordering::Relaxed);
    tx.send(store.sequence()).unwrap();
    let (result, problems) = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("H's session ends when told")
            .unwrap()
    });
    assert!(result.is_ok(), "H's session: {result:?}");
    assert!(problems.is_empty(), "H's side: {problems:?}");
    drop(transport);
    drop(rt);
    drop(store);
    b.down();
}
