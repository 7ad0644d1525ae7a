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

/// `posix_fadvise(POSIX_FADV_RANDOM)` on `f`: the kernel reads no pages ahead, so any page
/// cached besides those read came from the page fill.
fn advise_random(f: &File) {
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(r, 0, "posix_fadvise");
}

/// `truncate(2)` by path: no descriptor, so the kernel sends a setattr without a handle.
fn truncate_path(p: &std::path::Path, len: u64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    match unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Which of the first `len` bytes' pages of `f` the kernel's page cache holds (`mincore(2)` on
/// a read-only mapping; root may ask about any file).
fn resident(f: &File, len: usize) -> Vec<bool> {
    let pages = len.div_ceil(4096);
    // SAFETY: maps `len` bytes of a file open for reading, read-only and shared; the mapping
    // is only passed to mincore (never dereferenced) and unmapped before returning.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap");
        let mut vec = vec![0u8; pages];
        let r = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().map(|b| b & 1 == 1).collect()
    }
}

/// Reads every 4 KiB block of `f` once, in random order, and compares it with `want`; then a
/// read at the end returns nothing.
fn check_random_order(f: &File, want: &[u8], g: &mut Gen) -> Result<(), String> {
    let blocks = want.len().div_ceil(4096);
    let mut order: Vec<usize> = (0..blocks).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, g.below(i as u64 + 1) as usize);
    }
    let mut buf = vec![0u8; 4096];
    for b in order {
        let at = b * 4096;
        let n = 4096.min(want.len() - at);
        f.read_exact_at(&mut buf[..n], at as u64)
            .map_err(|e| format!("read at {at}: {e}"))?;
        if buf[..n] != want[at..at + n] {
            return Err(format!("stale or wrong bytes at {at}"));
        }
    }
    match f.read_at(&mut buf, want.len() as u64) {
        Ok(0) => Ok(()),
        other => Err(format!("read at the end ({}): {other:?}", want.len())),
    }
}

/// A 4 KiB random read decrypts its whole chunk; the rest of the chunk goes into the kernel's
/// page cache (page fill), so the next reads of it never reach the daemon.
#[test]
fn a_random_read_fills_the_page_cache_with_its_chunk() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("r.bin");
    let data = Gen::new(31).bytes(8 * MIB);
    m.ok(write_file(&p, &data), "write r.bin");
    fybrk_tests::drop_page_cache();
    let f = m.ok(File::open(&p), "open r.bin");
    advise_random(&f);
    let cached = |f: &File| resident(f, data.len()).iter().filter(|r| **r).count();
    m.check(cached(&f) == 0, || "pages cached after dropping".into());
    let mut buf = vec![0u8; 4096];
    let at = 4 * MIB + 3 * 4096;
    m.ok(f.read_exact_at(&mut buf, at as u64), "read 4 KiB");
    m.check(buf == data[at..at + 4096], || "the read's bytes".into());
    // The fill runs after the reply, on its own thread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while cached(&f) <= 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let n = cached(&f);
    // Chunks are 16-256 KiB: at least 3 whole pages besides the one read, never the file.
    m.check((4..=64).contains(&n), || {
        format!("{n} pages cached after one 4 KiB read")
    });
    let res = resident(&f, data.len());
    m.check(res[at / 4096], || "the page read is not cached".into());
    // What the fill put there is the file's bytes (read from the cache, not the daemon).
    for (page, _) in res.iter().enumerate().filter(|(_, r)| **r) {
        let o = page * 4096;
        m.ok(f.read_exact_at(&mut buf, o as u64), "read a filled page");
        m.check(buf == data[o..o + 4096], || format!("filled page at {o}"));
    }
    m.check(
        check_random_order(&f, &data, &mut Gen::new(32)).is_ok(),
        || "random-order read of r.bin".into(),
    );
}

/// The page fill races every change of the file: pwrite through another descriptor, truncation
/// by path, O_TRUNC rewrites, while a second thread reads at random (so fills are in flight).
/// A descriptor held open throughout and a fresh one both read exactly the current bytes.
#[test]
fn the_page_fill_never_shows_stale_bytes() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("s.bin");
    let mut g = Gen::new(41);
    let mut model = g.bytes(2 * MIB);
    m.ok(write_file(&p, &model), "write s.bin");
    let held = m.ok(File::open(&p), "open s.bin");
    advise_random(&held);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut g = Gen::new(43);
            let mut buf = vec![0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Fresh descriptors too: an open while nothing changes keeps the cache.
                let Ok(f) = File::open(&p) else { continue };
                advise_random(&f);
                for _ in 0..32 {
                    let _ = f.read_at(&mut buf, g.below(3 * MIB as u64) & !4095);
                }
            }
        })
    };
    for round in 0..18 {
        match round % 3 {
            0 => {
                let f = m.ok(OpenOptions::new().write(true).open(&p), "open for write");
                for _ in 0..8 {
                    let at = g.below(model.len() as u64) as usize;
                    let len = (g.range(1, 70_000) as usize).min(model.len() - at);
                    let patch = g.bytes(len);
                    m.ok(f.write_all_at(&patch, at as u64), "pwrite");
                    model[at..at + len].copy_from_slice(&patch);
                }
            }
            1 => {
                let len = g.range(MIB as u64 / 2, 3 * MIB as u64) as usize;
                m.ok(truncate_path(&p, len as u64), "truncate by path");
                model.resize(len, 0);
            }
            _ => {
                let len = g.range(MIB as u64, 3 * MIB as u64) as usize;
                model = g.bytes(len);
                m.ok(write_file(&p, &model), "rewrite with O_TRUNC");
            }
        }
        let fresh = m.ok(File::open(&p), "open s.bin again");
        for (what, f) in [("held", &held), ("fresh", &fresh)] {
            if let Err(e) = check_random_order(f, &model, &mut g) {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                m.check(false, || format!("round {round}, {what} descriptor: {e}"));
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.join().unwrap();
}
