//! On-demand stores against a real RocksDB: records taken without content, content arriving
//! later and surviving a reopen, eviction within the budget and what it must never drop.

use std::sync::{Arc, Mutex};

use rand::{RngCore, SeedableRng};

use crate::*;

fn open(dir: &std::path::Path, budget: Option<u64>, device: u64) -> Store {
    Store::open(
        dir,
        &FolderKey::from_bytes([1; 32]),
        StoreOptions {
            cache_bytes: 0,
            device: Some(device),
            folder_id: None,
            cache_budget: budget,
        },
    )
    .unwrap()
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Applies `rec` (a full store's record) on `b` as a peer's version, without content.
fn take_record(b: &Store, rec: &FileRecord) {
    let based_on = b.get(&rec.path).unwrap().map(|r| r.seq);
    b.commit_changes(
        vec![(rec.clone(), Versioning::Remote { based_on })],
        None,
        false,
    )
    .unwrap();
}

/// A remote that copies chunks from a full store, counting what it was asked.
struct Copier {
    from: Store,
    to: Mutex<Option<Store>>,
    asked: Mutex<u64>,
}

impl Remote for Copier {
    fn fetch(&self, id: &ChunkId) -> std::result::Result<(), String> {
        *self.asked.lock().unwrap() += 1;
        let sealed = self.from.read_sealed(id).unwrap().ok_or("not there")?;
        let to = self.to.lock().unwrap().clone().ok_or("gone")?;
        let mut w = to.writer();
        w.add_sealed(id, sealed).map_err(|e| e.to_string())?;
        w.flush().map_err(|e| e.to_string())
    }
    fn prefetch(&self, _: &[ChunkId]) {}
}

#[test]
fn a_record_arrives_without_content_and_its_content_when_read() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path(), None, 0xa);
    let data = random(700_000, 1);
    let rec = a.write_file("big.bin", &data, 0o644, 1).unwrap();
    {
        let b = open(db.path(), Some(64 << 20), 0xb);
        take_record(&b, &rec);
        assert_eq!(b.stats().logical_bytes, 700_000);
        assert_eq!(b.stats().stored_bytes, 0, "nothing stored");
        let l = b.locality(&rec).unwrap();
        assert_eq!((l.local_bytes, l.total_bytes), (0, 700_000));
        let first = rec.chunks[0].id;
        assert!(!b.has_chunk(&first).unwrap());
        assert!(b.read_sealed(&first).unwrap().is_none(), "nothing to serve");
        assert!(
            matches!(b.read_chunk(&first), Err(StoreError::Unavailable { .. })),
            "no remote: unavailable, not missing"
        );
        assert!(
            b.verify().unwrap().is_ok(),
            "content elsewhere is no damage"
        );
        let remote = Arc::new(Copier {
            from: a.clone(),
            to: Mutex::new(Some(b.clone())),
            asked: Mutex::new(0),
        });
        b.set_remote(Some(remote.clone()));
        assert_eq!(b.read_file("big.bin").unwrap().unwrap(), data);
        assert_eq!(*remote.asked.lock().unwrap() as usize, rec.chunks.len());
        assert_eq!(b.locality(&rec).unwrap().local_bytes, 700_000);
        // Read again: from the store now.
        assert_eq!(b.read_file("big.bin").unwrap().unwrap(), data);
        assert_eq!(*remote.asked.lock().unwrap() as usize, rec.chunks.len());
        b.set_remote(None);
        *remote.to.lock().unwrap() = None;
        assert!(b.verify().unwrap().is_ok());
    }
    // Fetched content is durable: the store reopened (every handle dropped) still has it.
    let b = open(db.path(), Some(64 << 20), 0xb);
    assert_eq!(b.read_file("big.bin").unwrap().unwrap(), data);
    assert!(b.verify().unwrap().is_ok());
}

#[test]
fn eviction_keeps_the_budget_and_never_drops_what_must_stay() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path(), None, 0xa);
    let b = open(db.path(), Some(2 << 20), 0xb);
    let remote = Arc::new(Copier {
        from: a.clone(),
        to: Mutex::new(Some(b.clone())),
        asked: Mutex::new(0),
    });
    b.set_remote(Some(remote.clone()));
    let mut files = Vec::new();
    for i in 0..6u64 {
        let data = random(1 << 20, 10 + i);
        let rec = a.write_file(&format!("f{i}"), &data, 0o644, 1).unwrap();
        take_record(&b, &rec);
        files.push((rec, data));
    }
    // Written on b itself: only here, never evicted.
    let mine = b
        .write_file("mine", &random(1 << 20, 99), 0o644, 1)
        .unwrap();
    b.set_pinned("f5", true).unwrap();
    for (rec, data) in &files {
        assert_eq!(b.read_file(&rec.path).unwrap().as_deref(), Some(&data[..]));
        b.evict().unwrap();
    }
    let (used, budget) = b.cache_usage().unwrap();
    assert!(
        used > budget,
        "only-here and pinned content exceed the 2 MiB budget"
    );
    let held = |r: &FileRecord| b.locality(r).unwrap().local_bytes;
    assert_eq!(
        held(&mine),
        1 << 20,
        "content only this device has was evicted"
    );
    assert_eq!(held(&files[5].0), 1 << 20, "a pinned file was evicted");
    assert_eq!(held(&files[0].0), 0, "the least recently used stayed");
    // An open file's chunks (pinned in memory) stay too.
    let open_file = b.pin(files[4].0.chunks.iter().map(|c| c.id));
    b.read_file("f4").unwrap();
    b.set_pinned("f5", false).unwrap();
    let r = b.evict().unwrap();
    assert!(r.evicted_chunks > 0);
    assert_eq!(
        held(&files[4].0),
        1 << 20,
        "an open file's content was evicted"
    );
    drop(open_file);
    // Once another device keeps the local file, it may go like the rest.
    let only = b.only_here(100).unwrap();
    assert_eq!(only.len(), mine.chunks.len());
    assert_eq!(b.mark_elsewhere(&only).unwrap() as usize, only.len());
    assert!(b.only_here(100).unwrap().is_empty());
    b.evict().unwrap();
    let (used, budget) = b.cache_usage().unwrap();
    assert!(used <= budget, "{used} held for a budget of {budget}");
    assert_eq!(
        used,
        b.stats().stored_bytes,
        "the budget counts what is stored"
    );
    // Everything still reads, fetched again where evicted.
    for (rec, data) in &files {
        assert_eq!(b.read_file(&rec.path).unwrap().as_deref(), Some(&data[..]));
    }
    b.evict().unwrap();
    assert!(b.verify().unwrap().is_ok());
    // Reopened, the store holds what it held: every flag reached the disk.
    let held_before: Vec<u64> = files.iter().map(|(r, _)| held(r)).collect();
    let (used_before, _) = b.cache_usage().unwrap();
    b.set_remote(None);
    *remote.to.lock().unwrap() = None;
    drop(b);
    let b = open(db.path(), Some(4 << 20), 0xb);
    let held: Vec<u64> = files
        .iter()
        .map(|(r, _)| b.locality(r).unwrap().local_bytes)
        .collect();
    assert_eq!(held, held_before);
    assert_eq!(b.cache_usage().unwrap().0, used_before);
    assert_eq!(used_before, b.stats().stored_bytes);
}

#[test]
fn free_pins_and_who_keeps_what() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path(), None, 0xa);
    let b = open(db.path(), Some(64 << 20), 0xb);
    b.set_remote(Some(Arc::new(Copier {
        from: a.clone(),
        to: Mutex::new(Some(b.clone())),
        asked: Mutex::new(0),
    })));
    let dir = a
        .commit(
            vec![FileRecord::new("docs", Kind::Dir, 0o755, 1)],
            None,
            false,
        )
        .unwrap();
    take_record(&b, &dir[0]);
    let data = random(300_000, 3);
    let rec = a.write_file("docs/a", &data, 0o644, 1).unwrap();
    take_record(&b, &rec);
    let ids: Vec<ChunkId> = rec.chunks.iter().map(|c| c.id).collect();
    assert_eq!(
        a.keeps(&ids).unwrap(),
        vec![true; ids.len()],
        "a full device keeps"
    );
    assert_eq!(b.absent_chunks("docs").unwrap().len(), ids.len());
    for id in &ids {
        b.fetch(id).unwrap();
    }
    assert!(b.absent_chunks("").unwrap().is_empty());
    assert_eq!(
        b.keeps(&ids).unwrap(),
        vec![false; ids.len()],
        "an on-demand device never vouches"
    );
    b.set_pinned("docs", true).unwrap();
    assert!(b.is_pinned("docs/a").unwrap() && !b.is_pinned("docsx").unwrap());
    let r = b.free(&["docs".into()]).unwrap();
    assert_eq!(r.evicted_chunks, 0);
    assert_eq!(r.kept_pinned as usize, ids.len());
    b.set_pinned("docs", false).unwrap();
    let r = b.free(&["docs".into()]).unwrap();
    assert_eq!(r.evicted_chunks as usize, ids.len());
    assert_eq!(b.locality(&rec).unwrap().local_bytes, 0);
    assert_eq!(b.read_file("docs/a").unwrap().unwrap(), data);
}
