//! Inputs that used to break a mount, and what a local disk does that programs depend on,
//! through a real fybrk mount: huge sparse files answer at once (issue 11: `truncate -s
//! 999999999999999` spun the daemon forever), directory times follow their entries and
//! survive a remount, an open unlinked file has no links, and `mknod` makes regular files.
//! (A record whose chunk lengths lie is covered without a network peer by fybrk-fs's unit
//! tests, through a real mount too: `fs/src/robust_tests.rs`.)

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fybrk_tests::{cpath, have_tool, rss_bytes, run_timeout, write_file, Mount};

/// fybrk's largest file (`fybrk_fs::MAX_FILE_SIZE`): 8 TiB.
const MAX_FILE_SIZE: u64 = 1 << 43;

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let c = cpath(path);
    match unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Runs `op`, which must answer within `limit`.
fn promptly<T>(m: &Mount, what: &str, limit: Duration, op: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = op();
    let took = started.elapsed();
    m.check(took < limit, || format!("{what} took {took:?}"));
    out
}

#[test]
fn huge_truncate_answers_at_once_and_sparse_files_cost_nothing() {
    let Some(mut m) = Mount::start() else { return };
    let p = m.path("sparse");
    m.ok(write_file(&p, b"head"), "write");
    let second = Duration::from_secs(1);

    // Past the limit: EFBIG, at once (it used to spin at 100 % CPU and grow without end).
    let r = promptly(&m, "truncate(999999999999999)", second, || {
        truncate(&p, 999_999_999_999_999)
    });
    m.expect_errno(r, &[libc::EFBIG], "truncate past the limit");
    if have_tool("truncate") {
        let out = promptly(
            &m,
            "truncate -s 999999999999999",
            Duration::from_secs(5),
            || {
                run_timeout(
                    Command::new("truncate")
                        .arg("-s")
                        .arg("999999999999999")
                        .arg(&p),
                    Duration::from_secs(30),
                )
            },
        );
        let err = String::from_utf8_lossy(&out.stderr);
        m.check(!out.status.success() && err.contains("too large"), || {
            format!("truncate -s 999999999999999: {out:?}")
        });
    }
    let f = m.ok(OpenOptions::new().write(true).open(&p), "open");
    let r = promptly(&m, "ftruncate(u64::MAX / 2)", second, || {
        f.set_len(u64::MAX / 2)
    });
    m.expect_errno(r, &[libc::EFBIG], "ftruncate past the limit");
    drop(f);
    m.check(m.ok(fs::metadata(&p), "stat").len() == 4, || {
        "a refused truncate changed the size".into()
    });

    // Up to the limit: holes, no data.
    promptly(&m, "truncate to the limit", second, || {
        m.ok(truncate(&p, MAX_FILE_SIZE), "truncate to the limit")
    });
    m.check(
        m.ok(fs::metadata(&p), "stat").len() == MAX_FILE_SIZE,
        || "size after truncate".into(),
    );
    let f = m.ok(OpenOptions::new().read(true).write(true).open(&p), "open");
    let mut buf = vec![7u8; 65536];
    promptly(&m, "read at the end", second, || {
        m.ok(
            f.read_exact_at(&mut buf, MAX_FILE_SIZE - 65536),
            "pread at the end",
        )
    });
    m.check(buf.iter().all(|&b| b == 0), || "hole not zeros".into());
    // A write far out, and an ftruncate down and up again on the handle.
    promptly(&m, "pwrite at 3 TiB", second, || {
        m.ok(f.write_all_at(b"far out", 3 << 40), "pwrite far out")
    });
    promptly(&m, "ftruncate to 5 TiB", second, || {
        m.ok(f.set_len(5 << 40), "ftruncate down")
    });
    m.check(m.ok(f.metadata(), "fstat").len() == 5 << 40, || {
        "fstat after ftruncate".into()
    });
    promptly(&m, "close", second, || drop(f));
    let check = |m: &Mount, when: &str| {
        let f = m.ok(File::open(&p), "open");
        let mut b = [1u8; 11];
        m.ok(f.read_exact_at(&mut b, (3 << 40) - 2), "pread");
        m.check(&b == b"\0\0far out\0\0", || format!("{when}: {b:?}"));
        m.ok(f.read_exact_at(&mut b[..4], 0), "pread head");
        m.check(&b[..4] == b"head", || format!("{when}: head {b:?}"));
        let len = m.ok(f.metadata(), "fstat").len();
        m.check(len == 5 << 40, || format!("{when}: size {len}"));
    };
    check(&m, "before remount");
    if let Some(rss) = rss_bytes(m.pid()) {
        m.check(rss < 300 << 20, || format!("daemon RSS {} MiB", rss >> 20));
    }
    m.remount();
    check(&m, "after remount");
    m.assert_verify_ok();
}

/// A directory's modification and change time (nanoseconds).
fn times(m: &Mount, dir: &Path) -> (i64, i64) {
    let md = m.ok(fs::metadata(dir), format!("stat {}", dir.display()));
    (
        md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        md.ctime() * 1_000_000_000 + md.ctime_nsec(),
    )
}

/// Runs `op` and checks that the mtime and ctime of every directory in `dirs` moved forward.
fn moves(m: &Mount, dirs: &[&Path], what: &str, op: impl FnOnce()) {
    let before: Vec<(i64, i64)> = dirs.iter().map(|d| times(m, d)).collect();
    std::thread::sleep(Duration::from_millis(10));
    op();
    for (d, (mt, ct)) in dirs.iter().zip(before) {
        let (mt2, ct2) = times(m, d);
        m.check(mt2 > mt && ct2 > ct, || {
            format!(
                "{what}: {} times did not move: mtime {mt} -> {mt2}, ctime {ct} -> {ct2}",
                d.display()
            )
        });
    }
}

#[test]
fn directory_times_follow_entries_and_survive_a_remount() {
    let Some(mut m) = Mount::start() else { return };
    let (d, e) = (m.path("d"), m.path("e"));
    m.ok(fs::create_dir(&d), "mkdir d");
    m.ok(fs::create_dir(&e), "mkdir e");
    let root = m.mnt.clone();
    moves(&m, &[&d], "create", || {
        m.ok(write_file(&d.join("f"), b"x"), "create d/f")
    });
    moves(&m, &[&d], "mkdir", || {
        m.ok(fs::create_dir(d.join("sub")), "mkdir d/sub")
    });
    moves(&m, &[&d], "symlink", || {
        m.ok(std::os::unix::fs::symlink("f", d.join("l")), "symlink")
    });
    moves(&m, &[&d], "mknod", || {
        let c = cpath(&d.join("n"));
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFREG | 0o644, 0) };
        m.check(rc == 0, || {
            format!("mknod: {}", std::io::Error::last_os_error())
        });
    });
    moves(&m, &[&d, &e], "rename across", || {
        m.ok(fs::rename(d.join("f"), e.join("g")), "rename d/f e/g")
    });
    moves(&m, &[&e], "rename within", || {
        m.ok(fs::rename(e.join("g"), e.join("h")), "rename e/g e/h")
    });
    moves(&m, &[&d], "unlink", || {
        m.ok(fs::remove_file(d.join("l")), "unlink")
    });
    moves(&m, &[&d], "rmdir", || {
        m.ok(fs::remove_dir(d.join("sub")), "rmdir")
    });
    moves(&m, &[&root], "create at the top", || {
        m.ok(write_file(&m.path("top"), b"t"), "create top")
    });
    moves(&m, &[&root, &d], "rename to the top", || {
        m.ok(fs::rename(d.join("n"), m.path("n")), "rename d/n n")
    });
    // Content changes are not directory changes.
    let before = times(&m, &e);
    m.ok(write_file(&e.join("h"), b"new content"), "rewrite e/h");
    m.check(times(&m, &e) == before, || {
        "writing a file moved its directory's times".into()
    });
    // Python's import cache keys on the directory's mtime: a module written while the program
    // runs must import.
    if have_tool("python3") {
        let script = "import importlib, os, sys, time\n\
            d = sys.argv[1]; sys.path.insert(0, d)\n\
            try:\n    import late_module\nexcept ImportError:\n    pass\n\
            time.sleep(0.02)\n\
            open(os.path.join(d, 'late_module.py'), 'w').write('X = 1\\n')\n\
            import late_module\nprint(late_module.X)\n";
        let out = run_timeout(
            Command::new("python3")
                .arg("-B")
                .arg("-c")
                .arg(script)
                .arg(&e),
            Duration::from_secs(60),
        );
        m.check(out.status.success(), || {
            format!("python import of a new module: {out:?}")
        });
    }

    let all = [&root, &d, &e].map(|p| times(&m, p));
    m.remount();
    let again = [&root, &d, &e].map(|p| times(&m, p));
    m.check(all == again, || {
        format!("times changed by a remount: {all:?} -> {again:?}")
    });
    m.assert_verify_ok();
}

#[test]
fn an_open_unlinked_file_has_no_links() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("f");
    m.ok(write_file(&p, b"data"), "write");
    let f = m.ok(File::open(&p), "open");
    m.check(m.ok(f.metadata(), "fstat").nlink() == 1, || "nlink".into());
    m.ok(fs::remove_file(&p), "unlink");
    let md = m.ok(f.metadata(), "fstat after unlink");
    m.check(md.nlink() == 0, || {
        format!("st_nlink of an open unlinked file is {}", md.nlink())
    });
    let mut b = [0u8; 4];
    m.ok(f.read_exact_at(&mut b, 0), "read after unlink");
    m.check(&b == b"data", || "content after unlink".into());
}

/// The process umask, read without changing it (other tests run in parallel threads).
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

#[test]
fn mknod_makes_regular_files_and_refuses_special_ones() {
    let Some(m) = Mount::start() else { return };
    let mknod = |name: &str, mode: u32| {
        let c = cpath(&m.path(name));
        match unsafe { libc::mknod(c.as_ptr(), mode, 0) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    m.ok(mknod("plain", libc::S_IFREG | 0o666), "mknod S_IFREG");
    let md = m.ok(fs::metadata(m.path("plain")), "stat");
    m.check(md.is_file() && md.len() == 0, || format!("{md:?}"));
    let want = 0o666 & !umask();
    m.check(md.permissions().mode() & 0o7777 == want, || {
        format!("mode {:o}, want {want:o}", md.permissions().mode())
    });
    m.ok(write_file(&m.path("plain"), b"content"), "write");
    m.check(
        m.ok(fs::read(m.path("plain")), "read") == b"content",
        || "content".into(),
    );
    m.expect_errno(
        mknod("plain", libc::S_IFREG | 0o644),
        &[libc::EEXIST],
        "mknod over a file",
    );
    for (what, mode) in [
        ("fifo", libc::S_IFIFO),
        ("socket", libc::S_IFSOCK),
        ("char device", libc::S_IFCHR),
    ] {
        m.expect_errno(mknod(what, mode | 0o644), &[libc::EPERM], what);
    }
    if have_tool("python3") {
        let out = run_timeout(
            Command::new("python3")
                .arg("-c")
                .arg("import os, sys; os.mknod(sys.argv[1]); print(os.stat(sys.argv[1]).st_size)")
                .arg(m.path("py")),
            Duration::from_secs(60),
        );
        m.check(out.status.success() && out.stdout == b"0\n", || {
            format!("python os.mknod: {out:?}")
        });
    }
    m.assert_verify_ok();
}
