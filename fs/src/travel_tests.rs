//! The time-travel tree `.fybrk/at/<TIME>/`, called without a mount.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fybrk_store::{FolderKey, Kind, Store, StoreOptions};

use crate::fs::{Fs, FsConfig, OpenMode};
use crate::travel::is_synthetic;
use crate::{when, FsError, ROOT};

/// A filesystem over a new store in `dir`, owned by root.
pub(crate) fn fs_in(dir: &tempfile::TempDir) -> Fs {
    let store = Store::open(
        &dir.path().join("db"),
        &FolderKey::from_bytes([7; 32]),
        StoreOptions::default(),
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

pub(crate) const RW: OpenMode = OpenMode {
    write: true,
    append: false,
    truncate: false,
    exclusive: false,
};

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn put(fs: &Fs, file: &str, data: &[u8]) {
    let fh = match fs.lookup(ROOT, name(file)) {
        Ok(a) => fs.open(a.ino, RW).unwrap(),
        Err(_) => fs.create(ROOT, name(file), 0o644, RW).unwrap().1,
    };
    fs.write(fh, 0, data).unwrap();
    fs.release(fh).unwrap();
}

fn listing(fs: &Fs, ino: u64) -> Vec<(String, Kind)> {
    let fh = fs.opendir(ino).unwrap();
    let mut out = Vec::new();
    fs.readdir(fh, 0, |e, _| {
        out.push((e.name.clone(), e.kind));
        false
    })
    .unwrap();
    fs.releasedir(fh);
    out
}

fn read_all(fs: &Fs, ino: u64) -> Vec<u8> {
    let fh = fs.open(ino, OpenMode::default()).unwrap();
    let data = fs.read(fh, 0, 1 << 20).unwrap();
    fs.flush(fh).unwrap();
    fs.release(fh).unwrap();
    data
}

#[test]
fn the_past_reads_as_it_was_and_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    put(&fs, "file", b"version one");
    put(&fs, "gone", b"deleted later");
    fs.mkdir(ROOT, name("sub"), 0o755).unwrap();
    // A time on a whole second after the first versions, as `dir_name` spells it.
    let t = (now_ns() / 1_000_000_000 + 1) * 1_000_000_000;
    std::thread::sleep(Duration::from_nanos(
        (t - now_ns()).max(0) as u64 + 50_000_000,
    ));
    put(&fs, "file", b"VERSION TWO");
    fs.unlink(ROOT, name("gone")).unwrap();

    let dot = fs.lookup(ROOT, name(".fybrk")).unwrap();
    assert!(is_synthetic(dot.ino));
    assert_eq!(dot.kind, Kind::Dir);
    let at = fs.lookup(dot.ino, name("at")).unwrap();
    assert!(matches!(
        fs.lookup(at.ino, name("not a time")),
        Err(FsError::NotFound)
    ));
    let past = fs.lookup(at.ino, name(&when::dir_name(t))).unwrap();
    let names: Vec<String> = listing(&fs, past.ino).into_iter().map(|e| e.0).collect();
    assert_eq!(names, [".", "..", "file", "gone", "sub"]);

    let file = fs.lookup(past.ino, name("file")).unwrap();
    assert_eq!(file.size, 11);
    assert_eq!(file.perm & 0o222, 0);
    assert_eq!(read_all(&fs, file.ino), b"version one");
    let gone = fs.lookup(past.ino, name("gone")).unwrap();
    assert_eq!(read_all(&fs, gone.ino), b"deleted later");
    // The present is untouched, and the root never lists `.fybrk`.
    let now: Vec<String> = listing(&fs, ROOT).into_iter().map(|e| e.0).collect();
    assert_eq!(now, [".", "..", "file", "sub"]);

    // Nothing under `.fybrk` (nor `.fybrk` itself) can change.
    let ro = |r: Result<(), FsError>| assert!(matches!(r, Err(FsError::ReadOnly)), "{r:?}");
    ro(fs.open(file.ino, RW).map(|_| ()));
    ro(fs.create(past.ino, name("new"), 0o644, RW).map(|_| ()));
    ro(fs.create(ROOT, name(".fybrk"), 0o644, RW).map(|_| ()));
    ro(fs.mkdir(ROOT, name(".fybrk"), 0o755).map(|_| ()));
    ro(fs.mkdir(past.ino, name("d"), 0o755).map(|_| ()));
    ro(fs.unlink(past.ino, name("file")));
    ro(fs.rmdir(past.ino, name("sub")));
    ro(fs.rename(ROOT, name("file"), ROOT, name(".fybrk"), false));
    ro(fs.rename(past.ino, name("file"), ROOT, name("x"), false));
    ro(fs.setattr(file.ino, Default::default()).map(|_| ()));
    assert!(fs.store().get(".fybrk").unwrap().is_none());

    // Forgotten inodes leave the table.
    fs.forget(file.ino, 1);
    assert!(fs.getattr(file.ino).is_err());
}
