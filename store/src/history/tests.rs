//! History against a real RocksDB in a temp dir.

use std::time::Duration;

use super::*;
use crate::{FolderKey, Store, StoreOptions, Versioning};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(
        dir.path(),
        &FolderKey::from_bytes([3; 32]),
        StoreOptions {
            cache_bytes: 1 << 20,
            device: Some(0xfeed),
            folder_id: None,
            cache_budget: None,
        },
    )
    .unwrap()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn content(store: &Store, r: &FileRecord) -> Vec<u8> {
    let mut out = Vec::new();
    for c in &r.chunks {
        out.extend_from_slice(&store.read_chunk(&c.id).unwrap());
    }
    out
}

fn delete(store: &Store, path: &str) {
    let mut r = store.get(path).unwrap().unwrap();
    r.deleted = true;
    store.commit(vec![r], None, false).unwrap();
}

/// A time strictly between two commits.
fn instant_between() -> i64 {
    std::thread::sleep(Duration::from_millis(3));
    let t = now_ns();
    std::thread::sleep(Duration::from_millis(3));
    t
}

#[test]
fn every_version_is_kept_newest_first_and_survives_gc() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let versions: Vec<Vec<u8>> = (0..3).map(|i| data(200_000, i)).collect();
    for v in &versions {
        s.write_file("doc.txt", v, 0o644, 1).unwrap();
    }
    delete(&s, "doc.txt");
    s.gc().unwrap();

    let kept = s.versions("doc.txt").unwrap();
    let events: Vec<&Event> = kept.iter().map(|v| &v.event).collect();
    assert_eq!(
        events,
        [&Event::Delete, &Event::Edit, &Event::Edit, &Event::Create]
    );
    assert!(kept.windows(2).all(|w| w[0].id() > w[1].id()));
    assert!(kept.iter().all(|v| v.origin == 0xfeed));
    for (v, want) in kept[1..].iter().rev().zip(&versions) {
        assert_eq!(&content(&s, &v.record), want, "version {}", v.id());
    }
    assert_eq!(
        s.version("doc.txt", kept[2].id()).unwrap(),
        Some(kept[2].clone())
    );
    assert!(s.verify().unwrap().is_ok(), "{:?}", s.verify().unwrap());
}

#[test]
fn the_folder_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let t0 = instant_between();
    s.write_file("a/x", b"one", 0o644, 1).unwrap();
    s.write_file("a/y", b"why", 0o644, 1).unwrap();
    let t1 = instant_between();
    s.write_file("a/x", b"two", 0o644, 1).unwrap();
    delete(&s, "a/y");
    let t2 = instant_between();

    let names = |t| -> Vec<String> {
        s.list_dir_at("a", t)
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect()
    };
    assert!(names(t0).is_empty());
    assert_eq!(names(t1), ["a/x", "a/y"]);
    assert_eq!(names(t2), ["a/x"]);
    let x1 = s.get_at("a/x", t1).unwrap().unwrap();
    assert_eq!(content(&s, &x1), b"one");
    let x2 = s.get_at("a/x", t2).unwrap().unwrap();
    assert_eq!(content(&s, &x2), b"two");
    assert!(s.get_at("a/x", t0).unwrap().is_none());
    assert!(s.get_at("a/y", t2).unwrap().unwrap().deleted);
    // Deeper paths are not children of the root.
    assert!(s.list_dir_at("", t2).unwrap().is_empty());
}

#[test]
fn a_rename_is_told_apart_from_delete_and_create() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let r = s.write_file("old", b"content", 0o644, 1).unwrap();
    let mut gone = r.clone();
    gone.deleted = true;
    let mut moved = r;
    moved.path = "new".into();
    s.commit(vec![gone, moved], None, false).unwrap();
    assert_eq!(
        s.versions("old").unwrap()[0].event,
        Event::RenameTo("new".into())
    );
    assert_eq!(
        s.versions("new").unwrap()[0].event,
        Event::RenameFrom("old".into())
    );
    // A plain delete next to an unrelated create is not a rename.
    s.write_file("p", b"p", 0o644, 1).unwrap();
    let mut gone = s.get("p").unwrap().unwrap();
    gone.deleted = true;
    let mut other = FileRecord::new("q", crate::Kind::File, 0o644, 1);
    other.size = 0;
    s.commit(vec![gone, other], None, false).unwrap();
    assert_eq!(s.versions("p").unwrap()[0].event, Event::Delete);
    assert_eq!(s.versions("q").unwrap()[0].event, Event::Create);
}

#[test]
fn a_peers_version_names_its_maker() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let mut r = FileRecord::new("f", crate::Kind::File, 0o644, 1);
    r.version.bump(0xabc, 7);
    s.commit_changes(
        vec![(r, Versioning::Remote { based_on: None })],
        None,
        false,
    )
    .unwrap();
    assert_eq!(s.versions("f").unwrap()[0].origin, 0xabc);
    assert_eq!(s.versions("f").unwrap()[0].event, Event::Create);
}

#[test]
fn retention_thins_and_gc_frees_what_only_dropped_versions_held() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let old = data(300_000, 1);
    let new = data(300_000, 2);
    s.write_file("f", &old, 0o644, 1).unwrap();
    s.write_file("f", &new, 0o644, 1).unwrap();
    s.write_file("gone", &data(100_000, 9), 0o644, 1).unwrap();
    delete(&s, "gone");

    // Right now everything is younger than an hour: nothing goes.
    let now = now_ns();
    let r = s.apply_retention(&Retention::default(), now).unwrap();
    assert_eq!((r.dropped, r.kept), (0, 4));
    assert!(r.history_bytes > 400_000, "{r:?}");
    assert_eq!(s.gc().unwrap().freed_chunks, 0);

    // Two years later with the default one-year limit: only the newest of each path is left.
    let later = now + 2 * 365 * 24 * 3_600_000_000_000;
    let r = s.apply_retention(&Retention::default(), later).unwrap();
    assert_eq!((r.dropped, r.kept), (2, 2), "{r:?}");
    assert_eq!(r.history_bytes, 0);
    assert!(s.gc().unwrap().freed_chunks > 0);
    assert_eq!(s.versions("f").unwrap().len(), 1);
    assert_eq!(s.read_file("f").unwrap().unwrap(), new);
    assert!(s.verify().unwrap().is_ok(), "{:?}", s.verify().unwrap());
}

#[test]
fn the_size_cap_drops_oldest_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    for i in 0..4 {
        s.write_file("f", &data(100_000, i), 0o644, 1).unwrap();
    }
    let later = now_ns() + 2 * 3_600_000_000_000;
    let cap = Retention {
        max_bytes: Some(150_000),
        ..Retention::default()
    };
    let r = s.apply_retention(&cap, later).unwrap();
    assert!(r.history_bytes <= 150_000, "{r:?}");
    let left = s.versions("f").unwrap();
    assert!(left.len() < 4 && !left.is_empty());
    // The newest survives, and what is left are the newest ones.
    assert_eq!(content(&s, &left[0].record), data(100_000, 3));
    s.gc().unwrap();
    assert!(s.verify().unwrap().is_ok());
}

#[test]
fn history_survives_reopen_and_a_store_from_before_history_gets_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir);
        s.write_file("f", b"1", 0o644, 1).unwrap();
        s.write_file("f", b"2", 0o644, 1).unwrap();
        // Make it look like a store from before history: no entries, no flag, one reference.
        let db = &s.inner.db;
        let mut batch = rocksdb::WriteBatch::default();
        for item in db.iterator_cf(s.cf(crate::db::HISTORY), rocksdb::IteratorMode::Start) {
            batch.delete_cf(s.cf(crate::db::HISTORY), item.unwrap().0);
        }
        batch.delete_cf(s.cf(crate::db::META), b"history");
        db.write(batch).unwrap();
        let mut refs = std::collections::HashMap::new();
        let mut batch = rocksdb::WriteBatch::default();
        for v in [b"1", b"2"] {
            let id = s.crypto().chunk_id(v);
            s.apply_ref_delta(&mut batch, &mut refs, &id, -1).unwrap();
        }
        db.write(batch).unwrap();
    }
    let s = open(&dir);
    let v = s.versions("f").unwrap();
    assert_eq!(v.len(), 1, "the current record got its entry");
    assert!(s.verify().unwrap().is_ok(), "{:?}", s.verify().unwrap());
    s.write_file("f", b"3", 0o644, 1).unwrap();
    drop(s);
    let s = open(&dir);
    assert_eq!(s.versions("f").unwrap().len(), 2);
}

#[test]
fn keys_split_back() {
    let k = history_key("a/b", 77);
    assert_eq!(split_key(&k), Some((&b"a\0b"[..], 77)));
    assert_eq!(split_key(b"short"), None);
}

fn mkdir(s: &Store, path: &str) {
    s.commit(
        vec![FileRecord::new(path, crate::Kind::Dir, 0o755, 1)],
        None,
        false,
    )
    .unwrap();
}

#[test]
fn a_file_comes_back_as_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.write_file("f", b"first", 0o644, 1).unwrap();
    let t = instant_between();
    s.write_file("f", b"second", 0o644, 1).unwrap();
    let plan = s.plan_restore_at("f", t, None).unwrap();
    s.commit_restore(plan).unwrap();
    assert_eq!(s.read_file("f").unwrap().unwrap(), b"first");
    let v = s.versions("f").unwrap();
    assert_eq!(v[0].event, Event::Restore);
    assert_eq!(v.len(), 3, "the restore is a version too: it can be undone");
    // Undo the restore by restoring the version before it.
    let undo = s.plan_restore_version("f", v[1].id(), None).unwrap();
    s.commit_restore(undo).unwrap();
    assert_eq!(s.read_file("f").unwrap().unwrap(), b"second");
    // Already as it was: nothing to do.
    assert!(s.plan_restore_at("", now_ns(), None).unwrap().is_empty());
    assert!(s.verify().unwrap().is_ok());
}

#[test]
fn a_deleted_tree_comes_back_and_a_rollback_removes_what_came_later() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    mkdir(&s, "d");
    mkdir(&s, "d/sub");
    s.write_file("d/a", &data(100_000, 1), 0o600, 1).unwrap();
    s.write_file("d/sub/b", b"bee", 0o644, 1).unwrap();
    let t = instant_between();
    for p in ["d/sub/b", "d/a", "d/sub", "d"] {
        delete(&s, p);
    }
    s.write_file("later", b"new", 0o644, 1).unwrap();
    s.gc().unwrap();

    // A copy elsewhere first: the original stays deleted, nothing else changes.
    let copy = s.plan_restore_at("d", t, Some("copy")).unwrap();
    let paths: Vec<&str> = copy.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["copy", "copy/a", "copy/sub", "copy/sub/b"]);
    s.commit_restore(copy).unwrap();
    assert_eq!(s.read_file("copy/a").unwrap().unwrap(), data(100_000, 1));
    assert_eq!(s.get("copy/a").unwrap().unwrap().mode, 0o600);
    assert!(s.get("d").unwrap().unwrap().deleted);

    // The whole folder back to `t`: the tree returns, `later` and `copy` go (into history).
    let plan = s.plan_restore_at("", t, None).unwrap();
    s.commit_restore(plan).unwrap();
    assert_eq!(s.read_file("d/sub/b").unwrap().unwrap(), b"bee");
    assert!(s.get("later").unwrap().unwrap().deleted);
    assert!(s.get("copy/sub/b").unwrap().unwrap().deleted);
    assert_eq!(s.versions("later").unwrap()[1].event, Event::Create);
    assert!(s.verify().unwrap().is_ok());
}

#[test]
fn restores_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let t0 = instant_between();
    s.write_file("f", b"x", 0o644, 1).unwrap();
    delete(&s, "f");
    assert!(matches!(
        s.plan_restore_at("f", t0, None),
        Err(RestoreError::NothingThen { .. })
    ));
    let del = s.versions("f").unwrap()[0].id();
    assert!(matches!(
        s.plan_restore_version("f", del, None),
        Err(RestoreError::Deletion { .. })
    ));
    assert!(matches!(
        s.plan_restore_version("f", 999, None),
        Err(RestoreError::NoSuchVersion { .. })
    ));
    mkdir(&s, "d");
    let t = instant_between();
    assert!(matches!(
        s.plan_restore_at("d", t, Some("d/inside")),
        Err(RestoreError::IntoItself { .. })
    ));
    assert!(matches!(
        s.plan_restore_at("d", t, Some("no/such/dir")),
        Err(RestoreError::NoParent(_))
    ));
}

#[test]
fn an_empty_step_of_a_save_is_not_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    // create, then the data: one version, a create.
    s.commit(
        vec![FileRecord::new("f", crate::Kind::File, 0o644, 1)],
        None,
        false,
    )
    .unwrap();
    s.write_file("f", b"data", 0o644, 1).unwrap();
    let v = s.versions("f").unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].event, Event::Create);
    // Truncate, then new data: the truncation is no version of its own.
    let mut t = s.get("f").unwrap().unwrap();
    t.chunks.clear();
    t.size = 0;
    s.commit(vec![t], None, false).unwrap();
    s.write_file("f", b"other", 0o644, 1).unwrap();
    let v = s.versions("f").unwrap();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].event, Event::Edit);
    // An empty file left alone stays a version.
    s.commit(
        vec![FileRecord::new("e", crate::Kind::File, 0o644, 1)],
        None,
        false,
    )
    .unwrap();
    std::thread::sleep(SAVE_STEP + Duration::from_millis(50));
    s.write_file("e", b"later", 0o644, 1).unwrap();
    assert_eq!(s.versions("e").unwrap().len(), 2);
    assert!(s.verify().unwrap().is_ok());
}

#[test]
fn paths_under_a_directory_are_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    mkdir(&s, "d");
    mkdir(&s, "d/sub");
    mkdir(&s, "dd");
    for p in ["d/a", "d/sub/b", "dd/x", "d.txt"] {
        s.write_file(p, b"x", 0o644, 1).unwrap();
    }
    assert_eq!(
        s.history_paths_under("d").unwrap(),
        ["d", "d/a", "d/sub", "d/sub/b"]
    );
    assert_eq!(s.history_paths_under("d/a").unwrap(), ["d/a"]);
    assert_eq!(s.history_paths_under("").unwrap().len(), 7);
}
