//! Store tests against a real RocksDB in a temp dir.

use std::collections::HashMap;

use proptest::prelude::*;
use rand::{Rng, RngCore, SeedableRng};

use crate::db::CHUNKS;
use crate::*;

fn open(dir: &tempfile::TempDir) -> Store {
    open_at(dir.path())
}

pub(crate) fn open_at(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        &FolderKey::from_bytes([1; 32]),
        StoreOptions {
            cache_bytes: 1 << 20,
            device: Some(0xfeed),
            folder_id: None,
            cache_budget: None,
        },
    )
    .unwrap()
}

pub(crate) fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Writes `data` as the file at `path`, the way the filesystem does.
fn write_file(store: &Store, path: &str, data: &[u8]) -> FileRecord {
    store.write_file(path, data, 0o644, 1).unwrap()
}

fn read_file(store: &Store, path: &str) -> Vec<u8> {
    store.read_file(path).unwrap().unwrap()
}

/// Lets every version but the newest of each path go, as retention would two hours from now
/// with a zero maximum age: what is left is what GC may not free.
pub(crate) fn forget_history(store: &Store) {
    let later = crate::history::now_ns() + 2 * 3_600_000_000_000;
    let none = crate::history::Retention {
        max_age: std::time::Duration::ZERO,
        max_bytes: None,
    };
    store.apply_retention(&none, later).unwrap();
}

pub(crate) fn delete(store: &Store, path: &str) {
    let mut r = store.get(path).unwrap().unwrap();
    r.deleted = true;
    store.commit(vec![r], None, false).unwrap();
}

#[test]
fn round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = random(1 << 20, 5);
    {
        let store = open(&dir);
        let r = write_file(&store, "a/b.bin", &data);
        assert_eq!(r.seq, 1);
        assert_eq!(store.device(), 0xfeed);
        assert_eq!(r.version.0.get(&store.device()), Some(&1));
        assert_eq!(read_file(&store, "a/b.bin"), data);
    }
    let store = open(&dir);
    assert_eq!(read_file(&store, "a/b.bin"), data);
    assert_eq!(store.sequence(), 1);
    assert_eq!(store.stats().files, 1);
    assert_eq!(store.stats().logical_bytes, data.len() as u64);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let err = Store::open(
        dir.path(),
        &FolderKey::from_bytes([2; 32]),
        StoreOptions::default(),
    );
    assert!(matches!(err, Err(StoreError::WrongKey)));
}

#[test]
fn identical_content_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = random(4 << 20, 9);
    write_file(&store, "one", &data);
    let after_one = store.stats().stored_bytes;
    write_file(&store, "two", &data);
    let s = store.stats();
    assert_eq!(s.stored_bytes, after_one);
    assert_eq!(s.logical_bytes, 2 * data.len() as u64);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn change_log_lists_latest_changes_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    write_file(&store, "x", b"1");
    write_file(&store, "y", b"2");
    write_file(&store, "x", b"3");
    let all: Vec<_> = store
        .changes_since(0)
        .unwrap()
        .into_iter()
        .map(|r| (r.path, r.seq))
        .collect();
    assert_eq!(all, vec![("y".to_string(), 2), ("x".to_string(), 3)]);
    let later: Vec<_> = store
        .changes_since(2)
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(later, vec!["x"]);
    delete(&store, "y");
    let last = store.changes_since(3).unwrap();
    assert_eq!(last.len(), 1);
    assert!(last[0].deleted);
    // A new version after a tombstone dominates it.
    let tomb = store.get("y").unwrap().unwrap();
    let again = write_file(&store, "y", b"4");
    assert_eq!(
        again.version.compare(&tomb.version),
        record::Ordering::After
    );
}

#[test]
fn list_dir_and_subdir_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mk = |p: &str, k| FileRecord::new(p, k, 0o755, 0);
    store
        .commit(
            vec![
                mk("d", Kind::Dir),
                mk("d/e", Kind::Dir),
                mk("d/f", Kind::File),
                mk("de", Kind::Dir),
            ],
            None,
            false,
        )
        .unwrap();
    let names: Vec<_> = store
        .list_dir("d")
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(names, vec!["d/e", "d/f"]);
    assert_eq!(store.count_subdirs("").unwrap(), 2);
    assert_eq!(store.count_subdirs("d").unwrap(), 1);
    assert!(store.has_children("d").unwrap());
    assert!(!store.has_children("de").unwrap());
    delete(&store, "d/e");
    assert_eq!(store.count_subdirs("d").unwrap(), 0);
}

#[test]
fn tampering_with_a_stored_chunk_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = random(300_000, 3);
    let r = write_file(&store, "f", &data);
    let id = r.chunks[1].id;
    let cf = store.cf(CHUNKS);
    let mut sealed = store.inner.db.get_cf(cf, id.0).unwrap().unwrap();
    for pos in [0, 11, 12, sealed.len() / 2, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[pos] ^= 0x40;
        store.inner.db.put_cf(cf, id.0, &bad).unwrap();
        // Nothing read this chunk successfully yet, so the read cache cannot hide the damage.
        assert!(
            matches!(store.read_chunk(&id), Err(StoreError::CorruptChunk(..))),
            "flip at {pos}"
        );
        assert!(!store.verify().unwrap().is_ok());
    }
    sealed.truncate(10);
    store.inner.db.put_cf(cf, id.0, &sealed).unwrap();
    assert!(store
        .verify()
        .unwrap()
        .problems
        .iter()
        .any(|p| p.contains("damaged")));
}

#[test]
fn gc_frees_unreferenced_and_keeps_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let a = random(500_000, 1);
    let r = write_file(&store, "a", &a);
    write_file(&store, "b", &a[..200_000]);
    let before = store.stats();
    let pins = store.pin(r.chunks.iter().map(|c| c.id));
    delete(&store, "a");
    let g = store.gc().unwrap();
    assert_eq!(g.freed_chunks, 0, "history keeps a deleted file's chunks");
    assert_eq!(g.pinned, 0);
    forget_history(&store);
    let g = store.gc().unwrap();
    assert_eq!(g.freed_chunks, 0, "pinned chunks must survive");
    assert!(g.pinned > 0);
    for c in &r.chunks {
        store.read_chunk(&c.id).unwrap();
    }
    drop(pins);
    let g = store.gc().unwrap();
    assert!(g.freed_chunks > 0);
    assert!(store.stats().stored_bytes < before.stored_bytes);
    assert_eq!(read_file(&store, "b"), &a[..200_000]);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn chunks_flushed_without_a_commit_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    {
        let mut w = store.writer();
        w.add(&random(100_000, 8)).unwrap();
        w.flush().unwrap();
        // Dropped without commit: a crashed write.
    }
    assert_eq!(store.stats().chunks, 1);
    assert_eq!(store.gc().unwrap().freed_chunks, 1);
    assert_eq!(store.stats().chunks, 0);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn large_writes_go_through_the_background_writer_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // 6 MiB, then the same 6 MiB again: six batches, the second half all duplicates of chunks
    // that may still be in flight on the writer's thread.
    let half = random(6 << 20, 21);
    let data = [half.clone(), half.clone()].concat();
    let r = write_file(&store, "big", &data);
    assert_eq!(read_file(&store, "big"), data);
    let distinct: std::collections::HashSet<_> = r.chunks.iter().map(|c| c.id).collect();
    let s = store.stats();
    assert_eq!(s.chunks, distinct.len() as u64, "a chunk stored twice");
    // The second half re-synchronises its cut points with the first within a chunk or two.
    assert!(s.stored_bytes < half.len() as u64 + (1 << 20), "{s:?}");
    assert!(store.verify().unwrap().is_ok());

    // A writer dropped with batches in flight (a crash in the middle of a big write): its
    // chunks are all written or not at all, and GC frees every one of them.
    {
        let mut w = store.writer();
        for piece in crate::chunker::chunks(&random(5 << 20, 22)[..]) {
            w.add(&piece.unwrap().data).unwrap();
        }
    }
    store.gc().unwrap();
    assert_eq!(store.stats().chunks, s.chunks);
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(read_file(&store, "big"), data);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Random writes, overwrites, deletes and GC passes: GC never frees a chunk a live record
    /// references, every file reads back exactly, and reference counts stay right (verify).
    #[test]
    fn gc_never_frees_a_referenced_chunk(seed in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // A small pool of blocks so files share chunks.
        let pool: Vec<Vec<u8>> = (0..6).map(|i| random(40_000, seed ^ i)).collect();
        let mut model: HashMap<String, Vec<u8>> = HashMap::new();
        for _ in 0..40 {
            let path = format!("f{}", rng.gen_range(0..5));
            match rng.gen_range(0..10) {
                0..=5 => {
                    let mut data = Vec::new();
                    for _ in 0..rng.gen_range(0..4) {
                        data.extend_from_slice(&pool[rng.gen_range(0..pool.len())]);
                    }
                    write_file(&store, &path, &data);
                    model.insert(path, data);
                }
                6..=7 => {
                    if model.remove(&path).is_some() {
                        delete(&store, &path);
                    }
                }
                8 => {
                    store.gc().unwrap();
                }
                _ => {
                    forget_history(&store);
                    store.gc().unwrap();
                }
            }
            for (p, data) in &model {
                prop_assert_eq!(&read_file(&store, p), data);
            }
            // Every kept version still reads: GC never frees what history holds.
            for i in 0..5 {
                for v in store.versions(&format!("f{i}")).unwrap() {
                    for c in &v.record.chunks {
                        prop_assert!(store.read_chunk(&c.id).is_ok());
                    }
                }
            }
        }
        store.gc().unwrap();
        let report = store.verify().unwrap();
        prop_assert!(report.is_ok(), "{:?}", report.problems);
        for p in model.keys().cloned().collect::<Vec<_>>() {
            delete(&store, &p);
        }
        forget_history(&store);
        store.gc().unwrap();
        prop_assert_eq!(store.stats().chunks, 0);
        prop_assert_eq!(store.stats().stored_bytes, 0);
    }
}

/// Replication's path: sealed chunks move between two stores of the same folder without
/// re-encryption, a damaged one is refused, and a remote version keeps its vector.
#[test]
fn remote_versions_and_sealed_chunks_move_between_stores() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&da);
    let b = Store::open(
        db.path(),
        &FolderKey::from_bytes([1; 32]),
        StoreOptions {
            cache_bytes: 0,
            device: Some(0xb),
            folder_id: None,
            cache_budget: None,
        },
    )
    .unwrap();
    let data = random(300_000, 21);
    let rec = write_file(&a, "shared.bin", &data);

    let mut w = b.writer();
    for c in &rec.chunks {
        let sealed = a.read_sealed(&c.id).unwrap().unwrap();
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(matches!(
            w.add_sealed(&c.id, bad),
            Err(StoreError::CorruptChunk(..))
        ));
        assert_eq!(w.add_sealed(&c.id, sealed).unwrap(), *c);
    }
    // Decided against "no local record", but one appeared meanwhile: refused, nothing written.
    write_file(&b, "shared.bin", b"raced in");
    let raced = b.commit_changes(
        vec![(rec.clone(), Versioning::Remote { based_on: None })],
        Some(&mut w),
        false,
    );
    assert!(
        matches!(raced, Err(StoreError::Changed { .. })),
        "{raced:?}"
    );
    let local = b.get("shared.bin").unwrap().unwrap();
    let remote = Versioning::Remote {
        based_on: Some(local.seq),
    };
    let applied = b
        .commit_changes(vec![(rec.clone(), remote)], Some(&mut w), false)
        .unwrap();
    assert_eq!(
        applied[0].version, rec.version,
        "a remote version keeps its vector"
    );
    assert_eq!(
        applied[0].seq,
        local.seq + 1,
        "but gets a local sequence number"
    );
    assert_eq!(read_file(&b, "shared.bin"), data);
    assert!(b.verify().unwrap().is_ok());

    // A local edit on top dominates the remote version.
    let edited = write_file(&b, "shared.bin", b"edited on b");
    assert_eq!(
        edited.version.compare(&rec.version),
        record::Ordering::After
    );
}

#[test]
fn holes_are_no_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert!(store.has_chunk(&ChunkId::HOLE).unwrap());
    assert!(store.read_chunk(&ChunkId::HOLE).is_err());
    let mut w = store.writer();
    let data = w.add(b"data").unwrap();
    let mut r = FileRecord::new("sparse", Kind::File, 0o644, 1);
    r.chunks = vec![ChunkRef::hole(5), data, ChunkRef::hole(3)];
    r.size = 12;
    store.commit(vec![r], Some(&mut w), false).unwrap();
    drop(w);
    assert_eq!(read_file(&store, "sparse"), b"\0\0\0\0\0data\0\0\0");
    assert_eq!(store.stats().chunks, 1);
    assert!(store.verify().unwrap().is_ok());
    // Replaced and deleted: no count of the hole goes negative, the data chunk is freed.
    delete(&store, "sparse");
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(store.gc().unwrap().freed_chunks, 0, "history keeps it");
    forget_history(&store);
    assert_eq!(store.gc().unwrap().freed_chunks, 1);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn a_chunk_length_that_lies_is_refused_by_read_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut w = store.writer();
    let real = w.add(b"0123456789").unwrap();
    let mut r = FileRecord::new("f", Kind::File, 0o644, 1);
    r.chunks = vec![ChunkRef {
        id: real.id,
        len: 4,
    }];
    r.size = 4;
    store.commit(vec![r], Some(&mut w), false).unwrap();
    assert!(matches!(
        store.read_file("f"),
        Err(StoreError::CorruptChunk(..))
    ));
}

#[test]
fn a_remote_record_whose_chunk_length_lies_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let kept = write_file(&store, "kept", b"0123456789");
    let real = kept.chunks[0];
    let before = store.sequence();
    let remote = Versioning::Remote { based_on: None };
    for claimed in [4u32, 11, 100_000] {
        let mut r = FileRecord::new("f", Kind::File, 0o644, 1);
        r.chunks = vec![
            ChunkRef::hole(3),
            ChunkRef {
                id: real.id,
                len: claimed,
            },
        ];
        r.size = 3 + u64::from(claimed);
        let e = store.commit_changes(vec![(r, remote)], None, false);
        assert!(
            matches!(e, Err(StoreError::ChunkLength { claimed: c, actual: 10, .. }) if c == claimed),
            "{e:?}"
        );
    }
    // A chunk written with the same commit (the writer's pending ones) is checked too.
    let mut w = store.writer();
    let fresh = w.add(b"fresh bytes").unwrap();
    let mut r = FileRecord::new("g", Kind::File, 0o644, 1);
    r.chunks = vec![ChunkRef {
        id: fresh.id,
        len: fresh.len + 1,
    }];
    r.size = u64::from(fresh.len + 1);
    let e = store.commit_changes(vec![(r.clone(), remote)], Some(&mut w), false);
    assert!(matches!(e, Err(StoreError::ChunkLength { .. })), "{e:?}");
    assert_eq!(store.sequence(), before, "nothing written");
    assert_eq!(store.get("f").unwrap(), None);
    assert!(store.verify().unwrap().is_ok());
    // The true lengths commit, with the writer's chunks still there after the refusal.
    r.chunks[0].len = fresh.len;
    r.size = u64::from(fresh.len);
    store
        .commit_changes(vec![(r, remote)], Some(&mut w), false)
        .unwrap();
    drop(w);
    assert_eq!(read_file(&store, "g"), b"fresh bytes");
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn the_root_time_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.root_mtime().unwrap(), None);
    store.set_root_mtime(-5).unwrap();
    drop(store);
    assert_eq!(open(&dir).root_mtime().unwrap(), Some(-5));
}

/// A store that holds only the folder's first key (a removed device's).
fn open_with(dir: &std::path::Path, later: &[[u8; 32]]) -> Store {
    let store = Store::open(
        dir,
        &FolderKey::from_bytes([1; 32]),
        StoreOptions {
            folder_id: Some([9; 16]),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    for k in later {
        store.add_key(&FolderKey::from_bytes(*k));
    }
    store
}

#[test]
fn chunks_after_a_rekey_are_sealed_under_the_new_key_only() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open_with(dirs[0].path(), &[[2; 32]]);
    assert_eq!(a.folder_id(), [9; 16], "the id does not follow the keys");
    let old = write_file(&a, "old.txt", &random(100_000, 1));
    let second = a.add_key(&FolderKey::from_bytes([2; 32]));
    a.use_key(second).unwrap();
    assert_eq!(a.current_key(), second);
    let new = write_file(&a, "new.txt", &random(100_000, 2));
    for c in &old.chunks {
        assert_eq!(a.chunk_key(&c.id).unwrap(), Some(FIRST_KEY));
    }
    for c in &new.chunks {
        assert_eq!(a.chunk_key(&c.id).unwrap(), Some(second));
    }
    assert_eq!(read_file(&a, "new.txt"), random(100_000, 2));
    assert!(a.verify().unwrap().problems.is_empty());

    // The first key alone cannot open a new chunk, even given its ciphertext.
    let first_only = Crypto::new(&FolderKey::from_bytes([1; 32]));
    let c = new.chunks[0].id;
    let envelope = a.read_sealed(&c).unwrap().unwrap();
    let (key, sealed) = crate::keys::open_envelope(&envelope).unwrap();
    assert_eq!(key, second);
    assert!(first_only.open(&c, sealed).is_err());

    // A device without the key refuses the chunk as unknown (not corrupt) and takes it once
    // it has the key; a holder of both keys receives both kinds.
    let removed = open_with(dirs[1].path(), &[]);
    let mut w = removed.writer();
    assert!(matches!(
        w.add_sealed(&c, envelope.clone()),
        Err(StoreError::UnknownKey(k)) if k == second
    ));
    let member = open_with(dirs[2].path(), &[[2; 32]]);
    let mut w = member.writer();
    w.add_sealed(&c, envelope.clone()).unwrap();
    let o = old.chunks[0].id;
    w.add_sealed(&o, a.read_sealed(&o).unwrap().unwrap())
        .unwrap();
    w.flush().unwrap();
    drop(w);
    assert_eq!(member.chunk_key(&c).unwrap(), Some(second));
    assert_eq!(
        member.read_chunk(&c).unwrap().len(),
        new.chunks[0].len as usize
    );
    assert_eq!(
        member.read_chunk(&o).unwrap().len(),
        old.chunks[0].len as usize
    );

    // A forged envelope naming the wrong key is refused, never stored.
    let mut forged = envelope.clone();
    forged[..8].copy_from_slice(&FIRST_KEY.to_le_bytes());
    let mut w = open_with(tempfile::tempdir().unwrap().path(), &[[2; 32]]).writer();
    assert!(matches!(
        w.add_sealed(&c, forged),
        Err(StoreError::CorruptChunk(..))
    ));
    assert!(matches!(
        w.add_sealed(&c, vec![1, 2, 3]),
        Err(StoreError::CorruptChunk(..))
    ));
}

#[test]
fn a_reopened_store_reads_every_key_s_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let a = open_with(dir.path(), &[[2; 32]]);
    write_file(&a, "one", &random(70_000, 3));
    a.use_key(a.add_key(&FolderKey::from_bytes([2; 32])))
        .unwrap();
    write_file(&a, "two", &random(70_000, 4));
    drop(a);
    let a = open_with(dir.path(), &[[2; 32]]);
    assert_eq!(read_file(&a, "one"), random(70_000, 3));
    assert_eq!(read_file(&a, "two"), random(70_000, 4));
    drop(a);
    // Without the later key the store still opens (the first key is right) and says which key
    // the newer file needs.
    let a = open_with(dir.path(), &[]);
    assert_eq!(read_file(&a, "one"), random(70_000, 3));
    assert!(matches!(a.read_file("two"), Err(StoreError::UnknownKey(_))));
}
