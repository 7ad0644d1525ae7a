//! A peer's version landing on a file that is open for writing here: neither edit is lost.
//! Peers are simulated by committing records straight to the store with
//! `Versioning::Remote`, as the replication driver does.

use std::ffi::OsStr;

use fybrk_store::{FileRecord, FolderKey, Kind, Store, StoreOptions, VersionVector, Versioning};

use crate::fs::{Fs, FsConfig, OpenMode};
use crate::ROOT;

/// A peer's short id.
const PEER: u64 = 0x7777_0000_0000_0001;

fn fs(dir: &tempfile::TempDir) -> Fs {
    let store = Store::open(
        &dir.path().join("db"),
        &FolderKey::from_bytes([3; 32]),
        StoreOptions {
            cache_bytes: 1 << 20,
            device: Some(1),
            folder_id: None,
            cache_budget: None,
        },
    )
    .unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    Fs::new(
        store,
        FsConfig {
            staging_dir: staging,
            uid: 0,
            gid: 0,
        },
    )
}

const WRITE: OpenMode = OpenMode {
    write: true,
    append: false,
    truncate: false,
    exclusive: false,
};

/// Commits `data` at `path` as the peer's next version of it (or its deletion).
fn peer_writes(fs: &Fs, path: &str, data: Option<&[u8]>) {
    let store = fs.store();
    let local = store.get(path).unwrap();
    let mut version: VersionVector = local
        .as_ref()
        .map(|r| r.version.clone())
        .unwrap_or_default();
    version.bump(PEER, 1_000 + store.sequence());
    let mut rec = FileRecord::new(path, Kind::File, 0o644, 1_700_000_000_000_000_000);
    let mut writer = store.writer();
    match data {
        Some(d) => {
            // Small test contents: one chunk.
            rec.chunks.push(writer.add(d).unwrap());
            rec.size = d.len() as u64;
        }
        None => rec.deleted = true,
    }
    rec.version = version;
    let based_on = local.map(|r| r.seq);
    store
        .commit_changes(
            vec![(rec, Versioning::Remote { based_on })],
            Some(&mut writer),
            false,
        )
        .unwrap();
}

/// Live file names at the top, with their contents.
fn files(fs: &Fs) -> Vec<(String, Vec<u8>)> {
    let store = fs.store();
    let mut out: Vec<(String, Vec<u8>)> = store
        .list_dir("")
        .unwrap()
        .into_iter()
        .filter(|r| r.is_live() && r.kind == Kind::File)
        .map(|r| {
            let data = store.read_file(&r.path).unwrap().unwrap();
            (r.path, data)
        })
        .collect();
    out.sort();
    out
}

fn open_and_write(fs: &Fs, name: &str, data: &[u8]) -> u64 {
    let (_, fh) = fs.create(ROOT, OsStr::new(name), 0o644, WRITE).unwrap();
    fs.write(fh, 0, data).unwrap();
    fs.flush(fh).unwrap();
    fh
}

#[test]
fn peer_edit_racing_a_local_writer_becomes_a_conflict_copy() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs(&dir);
    let fh = open_and_write(&fs, "doc.txt", b"v1");
    // The peer's version lands; the kernel has not been told (no `changed_remotely`).
    peer_writes(&fs, "doc.txt", Some(b"peer's edit"));
    fs.write(fh, 2, b" + local edit").unwrap();
    fs.release(fh).unwrap();

    let got = files(&fs);
    assert_eq!(got.len(), 2, "{got:?}");
    let by_name: std::collections::HashMap<_, _> = got.into_iter().collect();
    assert_eq!(by_name["doc.txt"], b"peer's edit");
    let copy = by_name
        .iter()
        .find(|(n, _)| n.starts_with("doc.sync-conflict-") && n.ends_with(".txt"))
        .expect("a conflict copy");
    assert_eq!(copy.1, b"v1 + local edit");
}

#[test]
fn orphaned_writer_keeps_writing_to_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs(&dir);
    let fh = open_and_write(&fs, "log.txt", b"a");
    fs.lookup(ROOT, OsStr::new("log.txt")).unwrap();
    peer_writes(&fs, "log.txt", Some(b"theirs"));
    let inv = fs.changed_remotely(&["log.txt".to_string()]);
    assert_eq!(inv.len(), 1);
    assert!(inv[0].ino.is_some(), "the kernel knew the inode: {inv:?}");
    fs.write(fh, 1, b"b").unwrap();
    fs.flush(fh).unwrap();
    fs.write(fh, 2, b"c").unwrap();
    fs.release(fh).unwrap();

    let got = files(&fs);
    assert_eq!(got.len(), 2, "one copy, written twice: {got:?}");
    assert!(
        got.contains(&("log.txt".to_string(), b"theirs".to_vec())),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|(n, d)| n.starts_with("log.sync-conflict-") && d == b"abc"),
        "{got:?}"
    );
}

#[test]
fn local_edit_beats_a_peer_delete_of_an_open_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs(&dir);
    let fh = open_and_write(&fs, "notes.md", b"draft");
    fs.lookup(ROOT, OsStr::new("notes.md")).unwrap();
    peer_writes(&fs, "notes.md", None);
    fs.changed_remotely(&["notes.md".to_string()]);
    fs.write(fh, 5, b" 2").unwrap();
    fs.release(fh).unwrap();
    assert_eq!(
        files(&fs),
        vec![("notes.md".to_string(), b"draft 2".to_vec())]
    );
}

#[test]
fn reader_of_a_replaced_file_is_not_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs(&dir);
    let fh = open_and_write(&fs, "r.txt", b"old");
    fs.release(fh).unwrap();
    let attr = fs.lookup(ROOT, OsStr::new("r.txt")).unwrap();
    let rfh = fs.open(attr.ino, OpenMode::default()).unwrap();
    peer_writes(&fs, "r.txt", Some(b"new"));
    fs.changed_remotely(&["r.txt".to_string()]);
    assert_eq!(
        fs.read(rfh, 0, 100).unwrap(),
        b"old",
        "an open handle keeps its version"
    );
    fs.release(rfh).unwrap();
    assert_eq!(files(&fs), vec![("r.txt".to_string(), b"new".to_vec())]);
    let again = fs.lookup(ROOT, OsStr::new("r.txt")).unwrap();
    assert_ne!(again.ino, attr.ino, "a peer's version is a new inode");
    assert_eq!(again.size, 3);
}
