//! The chunk log inside a real store: what goes there, damage, compaction.

use std::path::Path;

use crate::db::{CHUNKS, PLACES};
use crate::tests::{delete, forget_history, random};
use crate::*;

const MIB: usize = 1 << 20;

fn open(dir: &Path) -> Store {
    crate::tests::open_at(dir)
}

/// The chunk log's files: (number, size).
fn log_files(store: &Store) -> Vec<(u32, u64)> {
    store.inner.log.files().unwrap()
}

fn log_bytes(store: &Store) -> u64 {
    log_files(store).iter().map(|(_, s)| s).sum()
}

#[test]
fn large_files_go_to_the_log_small_ones_inline_and_both_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let big = random(4 * MIB, 1);
    let small = random(10_000, 2);
    {
        let store = open(dir.path());
        let r = store.write_file("big", &big, 0o644, 1).unwrap();
        store.write_file("small", &small, 0o644, 1).unwrap();
        let logged = r
            .chunks
            .iter()
            .filter(|c| {
                let place = store.inner.db.get_cf(store.cf(PLACES), c.id.0).unwrap();
                place.is_some()
            })
            .count();
        assert!(
            logged * 2 > r.chunks.len(),
            "{logged} of {} chunks of a 4 MiB file in the log",
            r.chunks.len()
        );
        assert!(
            log_bytes(&store) >= 3 * MIB as u64,
            "{:?}",
            log_files(&store)
        );
        let s = store.get("small").unwrap().unwrap();
        assert!(store
            .inner
            .db
            .get_cf(store.cf(CHUNKS), s.chunks[0].id.0)
            .unwrap()
            .is_some());
        store.flush_to_disk().unwrap();
    }
    let store = open(dir.path());
    assert!(store.read_file("big").unwrap().unwrap() == big);
    assert!(store.read_file("small").unwrap().unwrap() == small);
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.chunks_checked >= 40);
}

#[test]
fn damage_to_a_log_file_is_a_corrupt_chunk_and_verify_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let big = random(3 * MIB, 3);
    {
        let store = open(dir.path());
        store.write_file("big", &big, 0o644, 1).unwrap();
        store.flush_to_disk().unwrap();
    }
    let (n, len) = open(dir.path()).inner.log.files().unwrap()[0];
    let path = dir.path().join("chunks").join(format!("{n:08}.chunks"));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(&path)
            .unwrap();
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, len / 2).unwrap();
        buf.iter_mut().for_each(|b| *b ^= 0x5a);
        f.write_all_at(&buf, len / 2).unwrap();
    }
    let store = open(dir.path());
    assert!(matches!(
        store.read_file("big"),
        Err(StoreError::CorruptChunk(..))
    ));
    assert!(!store.verify().unwrap().is_ok());
    drop(store);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let store = open(dir.path());
    let problems = store.verify().unwrap().problems;
    assert!(
        problems.iter().any(|p| p.contains("cut short")),
        "{problems:?}"
    );
    drop(store);
    std::fs::remove_file(&path).unwrap();
    // The newest file is made again, empty, when the store opens: its chunks read as cut short.
    let problems = open(dir.path()).verify().unwrap().problems;
    assert!(
        !problems.is_empty() && problems.iter().all(|p| p.contains("chunk log file")),
        "{problems:?}"
    );
}

#[test]
fn compaction_gives_dead_files_back_moves_half_dead_ones_and_keeps_live_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b, c) = (
        random(20 * MIB, 4),
        random(20 * MIB, 5),
        random(10 * MIB, 6),
    );
    store.write_file("a", &a, 0o644, 1).unwrap();
    store.write_file("b", &b, 0o644, 1).unwrap();
    store.write_file("c", &c, 0o644, 1).unwrap();
    let files = log_files(&store);
    assert_eq!(files.len(), 2, "{files:?}");
    let first = files[0].0;

    // `a` gone: the first file (all of `a`, part of `b`) is less than half live, so its live
    // chunks move to the active file and it is deleted, while another thread reads `b`.
    delete(&store, "a");
    forget_history(&store);
    let reader = {
        let store = store.clone();
        let ids: Vec<ChunkId> = store
            .get("b")
            .unwrap()
            .unwrap()
            .chunks
            .iter()
            .map(|c| c.id)
            .collect();
        std::thread::spawn(move || {
            let mut reads = 0;
            for _ in 0..20 {
                for id in &ids {
                    // `read_sealed` always goes to disk (no cache).
                    assert!(store.read_sealed(id).unwrap().is_some(), "chunk {id} lost");
                    reads += 1;
                }
            }
            reads
        })
    };
    assert!(store.gc().unwrap().freed_chunks > 0);
    let report = store.compact_log().unwrap();
    assert!(reader.join().unwrap() > 0);
    let after = log_files(&store);
    assert!(
        after.iter().all(|(n, _)| *n != first),
        "the half-dead file is gone: {after:?} ({report:?})"
    );
    assert!(
        log_bytes(&store) < 45 * MIB as u64,
        "30 MiB live: {after:?}"
    );
    assert!(store.read_file("b").unwrap().unwrap() == b);
    assert!(store.read_file("c").unwrap().unwrap() == c);
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);

    // Everything gone: the active file, all dead, is sealed and reclaimed too.
    delete(&store, "b");
    delete(&store, "c");
    forget_history(&store);
    store.gc().unwrap();
    store.compact_log().unwrap();
    assert!(log_bytes(&store) < MIB as u64, "{:?}", log_files(&store));
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.stats().chunks, 0);
}
