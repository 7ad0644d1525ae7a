//! Preallocation and the kernel's page cache through a real mount: `fallocate(2)` modes,
//! files written in order after `ftruncate`/`fallocate` to their final size, and rereads that
//! keep the kernel's cached pages (`FOPEN_KEEP_CACHE`) yet never show stale bytes after a local
//! or a peer's change.
//!
//! Run: `cargo build --release -p fybrk && CI=true cargo test --release -p fybrk-tests --test
//! fsspeed` (root and /dev/fuse, see `tests/lib.rs`).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use fybrk_tests::{pair, wait_file, write_file, Gen, Mount, Peer, SYNC_TIMEOUT};

const MIB: usize = 1024 * 1024;

/// `fallocate(2)` on `f`: `Ok` or the errno.
fn fallocate(f: &File, mode: i32, offset: i64, len: i64) -> Result<(), i32> {
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, len) };
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
    }
}

/// Writes `data` at 0 in 1 MiB pieces, in order, through `f`.
fn write_in_order(f: &File, data: &[u8]) -> std::io::Result<()> {
    for (i, piece) in data.chunks(MIB).enumerate() {
        f.write_all_at(piece, (i * MIB) as u64)?;
    }
    Ok(())
}

#[test]
fn fallocate_modes_and_preallocated_files() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("pre.dat");
    let rw = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
    };
    let f = m.ok(rw(), "create pre.dat");
    let size = |what: &str| m.ok(fs::metadata(&p), what).len();

    m.check(fallocate(&f, 0, 0, 4 * MIB as i64) == Ok(()), || {
        "fallocate mode 0 failed".into()
    });
    m.check(size("stat") == 4 * MIB as u64, || {
        "size after fallocate".into()
    });
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    m.check(fallocate(&f, keep, 0, 8 * MIB as i64) == Ok(()), || {
        "fallocate KEEP_SIZE failed".into()
    });
    m.check(size("stat") == 4 * MIB as u64, || {
        "KEEP_SIZE changed the size".into()
    });
    let punch = libc::FALLOC_FL_PUNCH_HOLE | keep;
    let got = fallocate(&f, punch, 0, 4096);
    m.check(got == Err(libc::EOPNOTSUPP), || {
        format!("punch hole: {got:?}, want EOPNOTSUPP")
    });
    let got = fallocate(&f, 0, 0, 0);
    m.check(got == Err(libc::EINVAL), || format!("len 0: {got:?}"));
    let got = fallocate(&f, 0, 1 << 50, 1);
    m.check(got == Err(libc::EFBIG), || format!("past 8 TiB: {got:?}"));

    // The content, written in order into the preallocated file: a zero tail stays.
    let data = Gen::new(7).bytes(3 * MIB + 17);
    m.ok(write_in_order(&f, &data), "write pre.dat");
    drop(f);
    let back = m.ok(fs::read(&p), "read pre.dat");
    m.check(back.len() == 4 * MIB, || format!("size {}", back.len()));
    m.check(back[..data.len()] == data[..], || "pre.dat content".into());
    m.check(back[data.len()..].iter().all(|&b| b == 0), || {
        "pre.dat tail not zeros".into()
    });

    // Read-only descriptor: EBADF, from the kernel or the daemon.
    let ro = m.ok(File::open(&p), "open read-only");
    let got = fallocate(&ro, 0, 0, 8 * MIB as i64);
    m.check(got == Err(libc::EBADF), || format!("read-only fd: {got:?}"));

    // ftruncate to the final size first, then in order (fio --fallocate=truncate).
    let q = m.path("ftrunc.dat");
    let f = m.ok(File::create(&q), "create ftrunc.dat");
    m.ok(f.set_len(5 * MIB as u64), "ftruncate");
    let data = Gen::new(8).bytes(5 * MIB);
    m.ok(write_in_order(&f, &data), "write ftrunc.dat");
    m.ok(f.sync_all(), "fsync ftrunc.dat");
    drop(f);
    m.check(m.ok(fs::read(&q), "read ftrunc.dat") == data, || {
        "ftrunc.dat content".into()
    });
}

/// 1 MiB blocks written once each in a shuffled order (fio's randwrite), plus a small write
/// among them and one over a written block: the file reads back as written, also after a
/// remount.
#[test]
fn out_of_order_blocks_read_back() {
    let Some(mut m) = Mount::start() else { return };
    let p = m.path("ooo.dat");
    let data = Gen::new(9).bytes(6 * MIB + 4321);
    let f = m.ok(File::create(&p), "create ooo.dat");
    for i in [4usize, 1, 6, 0, 3, 5, 2] {
        let piece = &data[(i * MIB).min(data.len())..((i + 1) * MIB).min(data.len())];
        m.ok(f.write_all_at(piece, (i * MIB) as u64), "pwrite a block");
    }
    drop(f);
    m.check(m.ok(fs::read(&p), "read ooo.dat") == data, || {
        "ooo.dat".into()
    });
    let mut want = data.clone();
    let f = m.ok(File::create(m.path("mixed.dat")), "create mixed.dat");
    m.ok(
        f.write_all_at(&data[3 * MIB..4 * MIB], 3 * MIB as u64),
        "block 3",
    );
    m.ok(f.write_all_at(b"tiny", 10), "small write");
    m.ok(
        f.write_all_at(&data[..3 * MIB], 0),
        "blocks 0-2 over the small write",
    );
    m.ok(f.write_all_at(&data[4 * MIB..], 4 * MIB as u64), "the rest");
    drop(f);
    want.truncate(data.len());
    m.check(m.ok(fs::read(m.path("mixed.dat")), "read") == want, || {
        "mixed.dat".into()
    });
    m.remount();
    m.check(m.ok(fs::read(&p), "read after remount") == data, || {
        "remount".into()
    });
}

/// Reads that may come from the kernel's cache see every local change: pwrite in the middle,
/// truncation and rewrite, O_TRUNC.
#[test]
fn rereads_see_local_changes() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("c.txt");
    m.ok(write_file(&p, b"version one, first"), "write");
    for _ in 0..3 {
        m.check(m.ok(fs::read(&p), "read") == b"version one, first", || {
            "first reads".into()
        });
    }
    let f = m.ok(OpenOptions::new().write(true).open(&p), "open for write");
    m.ok(f.write_all_at(b"TWO", 8), "pwrite");
    drop(f);
    let got = m.ok(fs::read(&p), "read");
    m.check(got == b"version TWO, first", || {
        format!("after pwrite: {got:?}")
    });
    let got = m.ok(fs::read(&p), "read again");
    m.check(got == b"version TWO, first", || format!("reread: {got:?}"));
    m.ok(write_file(&p, b"third!"), "rewrite with O_TRUNC");
    let got = m.ok(fs::read(&p), "read");
    m.check(got == b"third!", || format!("after O_TRUNC: {got:?}"));
    m.ok(
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_len(2)),
        "truncate",
    );
    let got = m.ok(fs::read(&p), "read");
    m.check(got == b"th", || format!("after truncate: {got:?}"));
}

/// A file read (and cached by the kernel) on bravo, then changed on alpha to other bytes of the
/// same size: bravo reads the new bytes, not its cached pages.
#[test]
fn rereads_see_a_peers_change() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);
    let one = Gen::new(21).bytes(300_000);
    let mut two = one.clone();
    two[150_000..150_010].copy_from_slice(b"0123456789");
    a.ok(write_file(&a.path("shared.bin"), &one), "write on alpha");
    wait_file(&b, "shared.bin", &one, SYNC_TIMEOUT);
    for _ in 0..3 {
        b.check(
            b.ok(fs::read(b.path("shared.bin")), "read on bravo") == one,
            || "bravo's rereads".into(),
        );
    }
    // Also a descriptor held open across the change: it keeps reading the version it opened.
    let held = b.ok(File::open(b.path("shared.bin")), "open on bravo");
    a.ok(write_file(&a.path("shared.bin"), &two), "change on alpha");
    wait_file(&b, "shared.bin", &two, SYNC_TIMEOUT);
    for _ in 0..2 {
        b.check(
            b.ok(fs::read(b.path("shared.bin")), "reread") == two,
            || "bravo reread the old bytes".into(),
        );
    }
    let mut buf = vec![0u8; 10];
    b.ok(
        held.read_exact_at(&mut buf, 150_000),
        "read the held descriptor",
    );
    b.check(buf == one[150_000..150_010], || {
        format!("held descriptor: {buf:?}")
    });
}
