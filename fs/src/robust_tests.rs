//! Inputs that used to break the filesystem, called without a mount: huge sparse files, records
//! whose chunk lengths lie, and what a local disk does that programs rely on (directory times
//! that follow their entries, `st_nlink` 0 for an open unlinked file, `mknod` of a file).

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use fybrk_store::{ChunkRef, FileRecord, FolderKey, Kind, Store, StoreOptions};

use crate::fs::{Fs, FsConfig, OpenMode, SetAttr};
use crate::{MAX_FILE_SIZE, ROOT};

fn fs_in(dir: &tempfile::TempDir) -> Fs {
    let store = Store::open(
        &dir.path().join("db"),
        &FolderKey::from_bytes([6; 32]),
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

const RW: OpenMode = OpenMode {
    write: true,
    append: false,
    truncate: false,
    exclusive: false,
};

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[test]
fn huge_sparse_files_cost_nothing_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let (a, fh) = fs.create(ROOT, name("sparse"), 0o644, RW).unwrap();
    fs.write(fh, 0, b"head").unwrap();
    let started = Instant::now();
    let size = MAX_FILE_SIZE;
    let set = SetAttr {
        size: Some(size),
        ..SetAttr::default()
    };
    assert_eq!(fs.setattr(a.ino, set).unwrap().size, size);
    // A write far past the end, then the end of the file, through the same handle.
    fs.write(fh, size / 2, b"middle").unwrap();
    assert_eq!(fs.read(fh, size - 3, 100).unwrap(), vec![0; 3]);
    fs.flush(fh).unwrap();
    assert_eq!(fs.read(fh, size / 2 - 2, 10).unwrap(), b"\0\0middle\0\0");
    assert_eq!(fs.read(fh, 1 << 40, 5).unwrap(), vec![0; 5]);
    fs.release(fh).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let r = fs.store().get("sparse").unwrap().unwrap();
    assert_eq!(r.size, size);
    assert_eq!(r.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>(), size);
    let stored: Vec<&ChunkRef> = r.chunks.iter().filter(|c| !c.is_hole()).collect();
    assert!(stored.len() <= 4, "zeros were stored: {stored:?}");
    assert!(r.chunks.len() < 2100, "{} references", r.chunks.len());
    assert!(fs.store().stats().stored_bytes < 1 << 20);
    assert!(fs.store().verify().unwrap().is_ok());

    // Reopened: reads of the holes, and an edit far out keeps the rest as it was.
    let fh = fs.open(a.ino, RW).unwrap();
    fs.write(fh, 1 << 41, b"x").unwrap();
    fs.release(fh).unwrap();
    let fh = fs.open(a.ino, RW).unwrap();
    assert_eq!(fs.read(fh, 0, 6).unwrap(), b"head\0\0");
    assert_eq!(fs.read(fh, 1 << 41, 2).unwrap(), b"x\0");
    assert_eq!(fs.read(fh, size / 2, 6).unwrap(), b"middle");
    fs.release(fh).unwrap();
    assert!(fs.store().verify().unwrap().is_ok());
}

#[test]
fn growing_past_the_limit_is_efbig_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let (a, fh) = fs.create(ROOT, name("f"), 0o644, RW).unwrap();
    let started = Instant::now();
    for size in [MAX_FILE_SIZE + 1, 999_999_999_999_999, u64::MAX] {
        let set = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        assert_eq!(fs.setattr(a.ino, set).unwrap_err().errno(), libc::EFBIG);
    }
    let e = fs.write(fh, MAX_FILE_SIZE - 1, b"ab").unwrap_err();
    assert_eq!(e.errno(), libc::EFBIG);
    assert_eq!(
        fs.write(fh, u64::MAX - 1, b"ab").unwrap_err().errno(),
        libc::EFBIG
    );
    assert!(fs.read(fh, u64::MAX - 1, 10).unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(1));
    fs.release(fh).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().size, 0);
}

/// A record whose chunk list claims `claimed` bytes of a 10-byte chunk.
fn lying_record(fs: &Fs, path: &str, claimed: u32) {
    let store = fs.store();
    let mut w = store.writer();
    let real = w.add(b"0123456789").unwrap();
    let mut r = FileRecord::new(path, Kind::File, 0o644, 1);
    r.chunks = vec![ChunkRef {
        id: real.id,
        len: claimed,
    }];
    r.size = u64::from(claimed);
    store.commit(vec![r], Some(&mut w), false).unwrap();
}

#[test]
fn a_chunk_length_that_lies_is_eio_and_the_fs_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    lying_record(&fs, "long", 100_000);
    lying_record(&fs, "short", 4);
    for (path, claimed) in [("long", 100_000u64), ("short", 4)] {
        let a = fs.lookup(ROOT, name(path)).unwrap();
        assert_eq!(a.size, claimed);
        let fh = fs.open(a.ino, OpenMode::default()).unwrap();
        for _ in 0..8 {
            let e = fs.read(fh, 0, 4096).unwrap_err();
            assert_eq!(e.errno(), libc::EIO, "{path}: {e}");
        }
        fs.release(fh).unwrap();
        // Writing into it (a read-modify-write at commit) fails the same way, without a panic.
        let fh = fs.open(a.ino, RW).unwrap();
        fs.write(fh, 2, b"zz").unwrap();
        assert_eq!(fs.flush(fh).unwrap_err().errno(), libc::EIO);
        assert_eq!(fs.read(fh, 0, 8).unwrap_err().errno(), libc::EIO);
        let _ = fs.release(fh);
    }
    let (_, fh) = fs.create(ROOT, name("fine"), 0o644, RW).unwrap();
    fs.write(fh, 0, b"still serving").unwrap();
    fs.release(fh).unwrap();
    let a = fs.lookup(ROOT, name("fine")).unwrap();
    let fh = fs.open(a.ino, OpenMode::default()).unwrap();
    assert_eq!(fs.read(fh, 0, 100).unwrap(), b"still serving");
}

fn mtime(fs: &Fs, ino: u64) -> i64 {
    fs.getattr(ino).unwrap().mtime_ns
}

/// Runs `op` and checks that it moved the mtime of every directory in `dirs` forward.
fn moves(fs: &Fs, dirs: &[u64], what: &str, op: impl FnOnce()) {
    let before: Vec<i64> = dirs.iter().map(|&d| mtime(fs, d)).collect();
    std::thread::sleep(Duration::from_millis(5));
    op();
    for (&d, b) in dirs.iter().zip(before) {
        assert!(mtime(fs, d) > b, "{what}: directory {d} kept its time");
    }
}

#[test]
fn directory_times_follow_their_entries_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let d = fs.mkdir(ROOT, name("d"), 0o755).unwrap().ino;
    let e = fs.mkdir(ROOT, name("e"), 0o755).unwrap().ino;
    moves(&fs, &[d], "create", || {
        let (_, fh) = fs.create(d, name("f"), 0o644, RW).unwrap();
        fs.release(fh).unwrap();
    });
    moves(&fs, &[d], "mkdir", || {
        fs.mkdir(d, name("sub"), 0o755).unwrap();
    });
    moves(&fs, &[d], "symlink", || {
        fs.symlink(d, name("l"), std::path::Path::new("f")).unwrap();
    });
    moves(&fs, &[d], "mknod", || {
        fs.mknod(d, name("n"), libc::S_IFREG | 0o600).unwrap();
    });
    moves(&fs, &[d, e], "rename across", || {
        fs.rename(d, name("f"), e, name("g"), false).unwrap();
    });
    moves(&fs, &[e], "rename within", || {
        fs.rename(e, name("g"), e, name("h"), false).unwrap();
    });
    moves(&fs, &[d], "unlink", || fs.unlink(d, name("l")).unwrap());
    moves(&fs, &[d], "rmdir", || fs.rmdir(d, name("sub")).unwrap());
    moves(&fs, &[ROOT], "mkdir at the top", || {
        fs.mkdir(ROOT, name("top"), 0o755).unwrap();
    });
    moves(&fs, &[ROOT, d], "rename to the top", || {
        fs.rename(d, name("n"), ROOT, name("n"), false).unwrap();
    });
    // Writing a file's content is no change of its directory.
    let before = mtime(&fs, e);
    let h = fs.lookup(e, name("h")).unwrap().ino;
    let fh = fs.open(h, RW).unwrap();
    fs.write(fh, 0, b"content").unwrap();
    fs.release(fh).unwrap();
    assert_eq!(mtime(&fs, e), before);

    // Persisted, the root too: a new Fs over the same store reports the same times.
    let times = [mtime(&fs, ROOT), mtime(&fs, d), mtime(&fs, e)];
    let store = fs.store();
    drop(fs);
    let fs = Fs::new(
        store,
        FsConfig {
            staging_dir: dir.path().join("staging"),
            uid: 0,
            gid: 0,
        },
    );
    let d = fs.lookup(ROOT, name("d")).unwrap().ino;
    let e = fs.lookup(ROOT, name("e")).unwrap().ino;
    assert_eq!([mtime(&fs, ROOT), mtime(&fs, d), mtime(&fs, e)], times);
    // utimens on the root is kept too.
    let set = SetAttr {
        mtime_ns: Some(1_000_000_000_123),
        ..SetAttr::default()
    };
    fs.setattr(ROOT, set).unwrap();
    assert_eq!(mtime(&fs, ROOT), 1_000_000_000_123);
    assert_eq!(fs.store().root_mtime().unwrap(), Some(1_000_000_000_123));
}

#[test]
fn an_open_unlinked_file_has_no_links() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let (a, fh) = fs.create(ROOT, name("f"), 0o644, RW).unwrap();
    assert_eq!(a.nlink, 1);
    fs.unlink(ROOT, name("f")).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().nlink, 0);
    // Replaced by a rename: the same.
    let (b, fh2) = fs.create(ROOT, name("g"), 0o644, RW).unwrap();
    let (_, fh3) = fs.create(ROOT, name("h"), 0o644, RW).unwrap();
    fs.rename(ROOT, name("h"), ROOT, name("g"), false).unwrap();
    assert_eq!(fs.getattr(b.ino).unwrap().nlink, 0);
    let g = fs.lookup(ROOT, name("g")).unwrap();
    assert_eq!(g.nlink, 1);
    for h in [fh, fh2, fh3] {
        fs.release(h).unwrap();
    }
}

#[test]
fn mknod_makes_regular_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let a = fs
        .mknod(ROOT, name("plain"), libc::S_IFREG | 0o640)
        .unwrap();
    assert_eq!((a.kind, a.size, a.perm, a.nlink), (Kind::File, 0, 0o640, 1));
    // No type bits mean a regular file too (mknod(2)).
    assert_eq!(
        fs.mknod(ROOT, name("typeless"), 0o600).unwrap().kind,
        Kind::File
    );
    assert_eq!(
        fs.mknod(ROOT, name("plain"), libc::S_IFREG | 0o600)
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    for t in [libc::S_IFIFO, libc::S_IFSOCK, libc::S_IFCHR, libc::S_IFBLK] {
        let e = fs.mknod(ROOT, name("special"), t | 0o644).unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
    }
    assert!(fs.lookup(ROOT, name("special")).is_err());
    let fh = fs.open(a.ino, RW).unwrap();
    fs.write(fh, 0, b"written").unwrap();
    fs.release(fh).unwrap();
    assert_eq!(
        fs.store().read_file("plain").unwrap().unwrap(),
        b"written".to_vec()
    );
}

#[test]
fn a_panicking_handler_is_caught() {
    let mut ran_after = false;
    crate::fuse::guarded("test", || panic!("a bug"));
    crate::fuse::guarded("test", || ran_after = true);
    assert!(ran_after);
}

/// Through a real mount (root and /dev/fuse only): reads of a file whose record lies about its
/// chunk lengths fail with `EIO`, more times than there are FUSE workers, and the mount goes on
/// serving other files.
#[test]
fn a_lying_record_is_eio_through_a_mount_that_keeps_serving() {
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: needs root and /dev/fuse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    lying_record(&fs, "long", 100_000);
    lying_record(&fs, "short", 4);
    fs.store()
        .write_file("fine", b"still serving", 0o644, 1)
        .unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let session = crate::fuse::spawn_mount(std::sync::Arc::new(fs), &mnt).unwrap();
    for round in 0..6 {
        for name in ["long", "short"] {
            let e = std::fs::read(mnt.join(name)).unwrap_err();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EIO),
                "{name} round {round}: {e}"
            );
        }
    }
    assert_eq!(std::fs::read(mnt.join("fine")).unwrap(), b"still serving");
    std::fs::write(mnt.join("new"), b"and writing").unwrap();
    assert_eq!(std::fs::read(mnt.join("new")).unwrap(), b"and writing");
    drop(session);
}

#[test]
fn a_peers_new_entry_moves_its_directorys_time_here() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let d = fs.mkdir(ROOT, name("d"), 0o755).unwrap().ino;
    let before = [mtime(&fs, ROOT), mtime(&fs, d)];
    std::thread::sleep(Duration::from_millis(5));
    let store = fs.store();
    for path in ["d/x", "top"] {
        let mut r = FileRecord::new(path, Kind::File, 0o644, 1);
        r.version.bump(0x7777, 1);
        let remote = fybrk_store::Versioning::Remote { based_on: None };
        store
            .commit_changes(vec![(r, remote)], None, false)
            .unwrap();
    }
    fs.changed_remotely(&["d/x".to_owned(), "top".to_owned()]);
    let after = [mtime(&fs, ROOT), mtime(&fs, d)];
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "{before:?} -> {after:?}"
    );
    // A time set on purpose wins over it.
    let set = SetAttr {
        mtime_ns: Some(5),
        ..SetAttr::default()
    };
    fs.setattr(d, set).unwrap();
    assert_eq!(mtime(&fs, d), 5);
}

/// `close` returns before the kernel sends `release`, so a program that closes a file and opens
/// it again races its own release: the new handle must always find the file's open state (reads
/// failed with EBADF when the release dropped it between the open's lookup and its count).
#[test]
fn an_open_racing_the_last_release_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let (a, fh) = fs.create(ROOT, name("f"), 0o644, RW).unwrap();
    fs.write(fh, 0, b"hello").unwrap();
    fs.release(fh).unwrap();
    let ro = OpenMode { write: false, ..RW };
    let rounds = 20_000;
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..rounds {
                let fh = fs.open(a.ino, ro).unwrap();
                fs.release(fh).unwrap();
            }
        });
        for i in 0..rounds {
            let fh = fs.open(a.ino, ro).unwrap();
            let got = fs.read(fh, 0, 5);
            fs.release(fh).unwrap();
            assert_eq!(
                got.as_deref().ok(),
                Some(&b"hello"[..]),
                "round {i}: {got:?}"
            );
        }
    });
}
