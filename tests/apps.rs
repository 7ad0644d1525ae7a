//! Real applications in the mount: git, sqlite3 (rollback journal and WAL), an editor's atomic
//! save, tar in and out, and mmap (read-only and shared writable).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fybrk_tests::{diff_trees, have_tool, run_ok, snapshot, write_file, Compare, Gen, Mount};

/// A git command isolated from the machine's and user's config.
fn git(m: &Mount, repo: &Path, args: &[&str]) -> String {
    let home = m.root().join("home");
    fs::create_dir_all(&home).unwrap();
    let out = run_ok(
        m,
        Command::new("git")
            .args(args)
            .current_dir(repo)
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
            .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
            .env("LC_ALL", "C"),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn git_repository_lifecycle() {
    if !have_tool("git") {
        return;
    }
    let Some(mut m) = Mount::start() else { return };
    let repo = m.path("repo");
    m.ok(fs::create_dir(&repo), "mkdir repo");
    git(&m, &repo, &["init", "-q", "-b", "main"]);
    git(&m, &repo, &["config", "user.name", "Fybrk Test"]);
    git(&m, &repo, &["config", "user.email", "test@fybrk.invalid"]);

    let mut g = Gen::new(11);
    m.ok(fs::create_dir_all(repo.join("src/nested")), "mkdir");
    m.ok(
        write_file(&repo.join("README.md"), b"# fybrk test repo\n"),
        "write",
    );
    m.ok(
        write_file(
            &repo.join("src/main.rs"),
            b"fn main() { println!(\"hi\"); }\n",
        ),
        "write",
    );
    let blob = g.bytes(200_000);
    m.ok(
        write_file(&repo.join("src/nested/data.bin"), &blob),
        "write",
    );
    git(&m, &repo, &["add", "-A"]);
    git(&m, &repo, &["commit", "-q", "-m", "first"]);
    let status = git(&m, &repo, &["status", "--porcelain"]);
    m.check(status.is_empty(), || {
        format!("status not clean after commit:\n{status}")
    });

    git(&m, &repo, &["checkout", "-q", "-b", "feature"]);
    m.ok(
        write_file(&repo.join("README.md"), b"# feature branch\n"),
        "write",
    );
    m.ok(
        write_file(&repo.join("src/feature.rs"), b"pub fn f() {}\n"),
        "write",
    );
    m.ok(fs::remove_file(repo.join("src/nested/data.bin")), "rm");
    git(&m, &repo, &["add", "-A"]);
    git(&m, &repo, &["commit", "-q", "-m", "feature"]);

    for round in 0..3 {
        git(&m, &repo, &["checkout", "-q", "main"]);
        m.check(
            m.ok(fs::read(repo.join("README.md")), "read") == b"# fybrk test repo\n",
            || format!("round {round}: README on main"),
        );
        m.check(
            m.ok(
                fs::read(repo.join("src/nested/data.bin")),
                "read data.bin on main",
            ) == blob,
            || format!("round {round}: data.bin on main"),
        );
        m.check(!repo.join("src/feature.rs").exists(), || {
            format!("round {round}: feature.rs exists on main")
        });
        git(&m, &repo, &["checkout", "-q", "feature"]);
        m.check(
            m.ok(fs::read(repo.join("README.md")), "read") == b"# feature branch\n",
            || format!("round {round}: README on feature"),
        );
        m.check(!repo.join("src/nested/data.bin").exists(), || {
            format!("round {round}: data.bin exists on feature")
        });
        let status = git(&m, &repo, &["status", "--porcelain"]);
        m.check(status.is_empty(), || {
            format!("round {round}: status not clean:\n{status}")
        });
    }
    git(&m, &repo, &["fsck", "--full", "--strict"]);
    // gc rewrites objects into packs (renames, fsyncs); the repo must stay sound, also on disk.
    git(&m, &repo, &["gc", "-q"]);
    git(&m, &repo, &["fsck", "--full", "--strict"]);
    m.remount();
    git(&m, &repo, &["fsck", "--full", "--strict"]);
    let log = git(&m, &repo, &["log", "--format=%s", "main"]);
    m.check(log.trim() == "first", || {
        format!("git log on main after remount: {log:?}")
    });
    let status = git(&m, &repo, &["status", "--porcelain"]);
    m.check(status.is_empty(), || {
        format!("status not clean after remount:\n{status}")
    });
}

fn sqlite(m: &Mount, db: &Path, script: &str) -> String {
    let mut cmd = Command::new("sqlite3");
    cmd.arg("-batch").arg("-bail").arg(db).arg(script);
    let out = run_ok(m, &mut cmd);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sqlite_round(m: &mut Mount, wal: bool) {
    let db = m.path(if wal { "wal.db" } else { "journal.db" });
    let mode = sqlite(
        m,
        &db,
        if wal {
            "PRAGMA journal_mode=WAL;"
        } else {
            "PRAGMA journal_mode=DELETE;"
        },
    );
    let want_mode = if wal { "wal" } else { "delete" };
    m.check(mode == want_mode, || {
        format!("journal_mode answered {mode:?}")
    });
    let mut script =
        String::from("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, s TEXT);\nBEGIN;\n");
    for i in 1..=1000 {
        script.push_str(&format!(
            "INSERT INTO t (v, s) VALUES ({i}, 'row-{i}-{}');\n",
            "x".repeat(i % 97)
        ));
    }
    script.push_str("COMMIT;\n");
    sqlite(m, &db, &script);
    // Updates and deletes in a second transaction, from a second process.
    sqlite(
        m,
        &db,
        "BEGIN; UPDATE t SET v = v * 2 WHERE id % 10 = 0; DELETE FROM t WHERE id > 990; COMMIT;",
    );
    // sum(1..=990) + sum of the doubled multiples of 10 up to 990 (10+20+...+990 = 49_500).
    let want = format!("990|{}", 990 * 991 / 2 + 49_500);
    let check = |m: &Mount, when: &str| {
        let got = sqlite(m, &db, "SELECT count(*), sum(v) FROM t;");
        m.check(got == want, || {
            format!("{when}: count|sum = {got:?}, want {want:?}")
        });
        let ic = sqlite(m, &db, "PRAGMA integrity_check;");
        m.check(ic == "ok", || {
            format!("{when}: integrity_check says {ic:?}")
        });
    };
    check(m, "after inserts");
    if wal {
        // Fold the WAL into the database file, then read it again.
        sqlite(m, &db, "PRAGMA wal_checkpoint(TRUNCATE);");
        check(m, "after checkpoint");
    }
    m.remount();
    check(m, "after remount");
}

#[test]
fn sqlite_with_rollback_journal() {
    if !have_tool("sqlite3") {
        return;
    }
    let Some(mut m) = Mount::start() else { return };
    sqlite_round(&mut m, false);
}

#[test]
fn sqlite_with_wal() {
    if !have_tool("sqlite3") {
        return;
    }
    let Some(mut m) = Mount::start() else { return };
    sqlite_round(&mut m, true);
}

/// The text of version `i` of the document: many identical lines naming `i`, so a torn or mixed
/// read is easy to recognise.
fn version_text(i: usize) -> Vec<u8> {
    let line = format!("version {i:04} of the document, all lines the same\n");
    line.repeat(500 + i * 7).into_bytes()
}

fn is_complete_version(data: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(data).ok()?;
    let first = text.lines().next()?;
    let i: usize = first.strip_prefix("version ")?.get(..4)?.parse().ok()?;
    (data == version_text(i).as_slice()).then_some(i)
}

#[test]
fn editor_atomic_save_loop() {
    let Some(m) = Mount::start() else { return };
    let doc = m.path("doc.txt");
    let tmp = m.path(".doc.txt.swp");
    m.ok(write_file(&doc, &version_text(0)), "write v0");
    let stop = Arc::new(AtomicBool::new(false));
    // A reader that must only ever see complete versions, never a torn, empty or missing file.
    let reader = {
        let doc = doc.clone();
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<usize, String> {
            let mut reads = 0;
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let data = fs::read(&doc).map_err(|e| format!("read doc.txt: {e}"))?;
                match is_complete_version(&data) {
                    Some(i) if i >= last => last = i,
                    Some(i) => return Err(format!("went back from version {last} to {i}")),
                    None => {
                        return Err(format!(
                            "read an incomplete version ({} bytes, starts {:?})",
                            data.len(),
                            String::from_utf8_lossy(&data[..data.len().min(40)])
                        ))
                    }
                }
                reads += 1;
            }
            Ok(reads)
        })
    };
    for i in 1..=100 {
        let mut f = m.ok(File::create(&tmp), "create temp");
        m.ok(f.write_all(&version_text(i)), "write temp");
        m.ok(f.sync_all(), "fsync temp");
        drop(f);
        m.ok(fs::rename(&tmp, &doc), "rename over doc");
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| m.fail(&format!("concurrent reader: {e}")));
    eprintln!("reader saw {reads} complete reads");
    let last = m.ok(fs::read(&doc), "read final");
    m.check(is_complete_version(&last) == Some(100), || {
        format!("final version is {:?}", is_complete_version(&last))
    });
    m.expect_errno(
        fs::metadata(&tmp),
        &[libc::ENOENT],
        "temp file after the last rename",
    );
}

/// 500 files in nested dirs, some symlinks, varied modes and mtimes, on the native disk.
fn make_source_tree(root: &Path) {
    let mut g = Gen::new(500);
    let mut dirs = vec![root.to_path_buf()];
    for i in 0..40 {
        let parent = dirs[g.below(dirs.len() as u64) as usize].clone();
        let d = parent.join(format!("dir{i}"));
        fs::create_dir(&d).unwrap();
        dirs.push(d);
    }
    for i in 0..500 {
        let d = &dirs[g.below(dirs.len() as u64) as usize];
        let p = d.join(format!("file{i}.dat"));
        let len = if g.chance(10) {
            0
        } else {
            g.below(20_000) as usize
        };
        write_file(&p, &g.bytes(len)).unwrap();
        let mode = [0o644, 0o600, 0o755, 0o640][g.below(4) as usize];
        fybrk_tests::chmod(&p, mode).unwrap();
        fybrk_tests::set_mtime(&p, 1_600_000_000 + i as i64 * 97, 0).unwrap();
    }
    for i in 0..10 {
        let d = &dirs[g.below(dirs.len() as u64) as usize];
        std::os::unix::fs::symlink(format!("file{}.dat", i * 3), d.join(format!("link{i}")))
            .unwrap();
    }
    for (i, d) in dirs.iter().enumerate().skip(1).rev() {
        fybrk_tests::set_mtime(d, 1_650_000_000 + i as i64, 0).unwrap();
    }
}

fn tar_names(m: &Mount, archive: &Path) -> Vec<String> {
    let out = run_ok(m, Command::new("tar").arg("-tf").arg(archive));
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn tar_into_and_out_of_the_mount() {
    if !have_tool("tar") {
        return;
    }
    let Some(mut m) = Mount::start() else { return };
    let scratch = m.root().join("scratch");
    let src = scratch.join("src");
    fs::create_dir_all(&src).unwrap();
    make_source_tree(&src);
    let src_tar = scratch.join("src.tar");
    run_ok(
        &m,
        Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&src_tar)
            .arg("."),
    );

    let inside = m.path("extracted");
    m.ok(fs::create_dir(&inside), "mkdir");
    run_ok(
        &m,
        Command::new("tar")
            .arg("-C")
            .arg(&inside)
            .arg("-xf")
            .arg(&src_tar),
    );
    let how = Compare {
        file_mtime: true,
        dir_mtime: true,
    };
    let want = snapshot(&src).unwrap();
    // Compare the extracted tree itself, minus its root (tar sets ./'s mode and mtime too).
    let got = m.ok(snapshot(&inside), "snapshot of the extracted tree");
    if let Some(d) = diff_trees(&want, &got, how) {
        m.fail(&format!("tar -x into the mount: {d}"));
    }

    m.remount();
    let out_tar = scratch.join("out.tar");
    run_ok(
        &m,
        Command::new("tar")
            .arg("-C")
            .arg(&inside)
            .arg("-cf")
            .arg(&out_tar)
            .arg("."),
    );
    let (a, b) = (tar_names(&m, &src_tar), tar_names(&m, &out_tar));
    m.check(a == b, || {
        format!("archive listings differ: {} vs {} names", a.len(), b.len())
    });
    let back = scratch.join("back");
    fs::create_dir(&back).unwrap();
    run_ok(
        &m,
        Command::new("tar")
            .arg("-C")
            .arg(&back)
            .arg("-xf")
            .arg(&out_tar),
    );
    let got = snapshot(&back).unwrap();
    if let Some(d) = diff_trees(&want, &got, how) {
        m.fail(&format!("tar -c out of the mount (after remount): {d}"));
    }
}

/// mmap(2) of `len` bytes of `f`, or the OS error.
fn map(f: &File, len: usize, prot: i32) -> std::io::Result<*mut u8> {
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

#[test]
fn mmap_read_only() {
    let Some(m) = Mount::start() else { return };
    let data = Gen::new(13).bytes(3 * 1024 * 1024 + 123);
    let p = m.path("mapped.bin");
    m.ok(write_file(&p, &data), "write");
    let f = m.ok(File::open(&p), "open");
    let ptr = m.ok(map(&f, data.len(), libc::PROT_READ), "mmap PROT_READ");
    let view = unsafe { std::slice::from_raw_parts(ptr, data.len()) };
    let same = view == data.as_slice();
    let detail = fybrk_tests::diff_bytes(&data, view);
    unsafe { libc::munmap(ptr.cast(), data.len()) };
    m.check(same, || format!("read-only mapping differs: {detail:?}"));
}

#[test]
fn mmap_shared_writable() {
    let Some(mut m) = Mount::start() else { return };
    let len = 2 * 1024 * 1024 + 4096 * 3;
    let p = m.path("shared.bin");
    let base = Gen::new(14).bytes(len);
    m.ok(write_file(&p, &base), "write");
    let mut want = base.clone();
    let patches: [(usize, &[u8]); 4] = [
        (0, b"start"),
        (4095, b"across-a-page-boundary"),
        (1_000_000, b"middle"),
        (len - 3, b"end"),
    ];
    {
        let f = m.ok(
            OpenOptions::new().read(true).write(true).open(&p),
            "open rw",
        );
        let ptr = m.ok(
            map(&f, len, libc::PROT_READ | libc::PROT_WRITE),
            "mmap MAP_SHARED PROT_WRITE",
        );
        let view = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        for (off, bytes) in patches {
            view[off..off + bytes.len()].copy_from_slice(bytes);
            want[off..off + bytes.len()].copy_from_slice(bytes);
        }
        let rc = unsafe { libc::msync(ptr.cast(), len, libc::MS_SYNC) };
        let msync_err = std::io::Error::last_os_error();
        unsafe { libc::munmap(ptr.cast(), len) };
        m.check(rc == 0, || format!("msync: {msync_err}"));
        drop(f);
    }
    let check = |m: &Mount, when: &str| {
        let got = m.ok(fs::read(&p), format!("read {when}"));
        m.check(got == want, || {
            format!("{when}: {:?}", fybrk_tests::diff_bytes(&want, &got))
        });
        // And with pread on a fresh handle, at a patched offset.
        let f = m.ok(File::open(&p), "open");
        let mut b = [0u8; 6];
        m.ok(f.read_exact_at(&mut b, 1_000_000), "pread");
        m.check(&b == b"middle", || {
            format!("{when}: pread at 1000000 gives {b:?}")
        });
    };
    check(&m, "after munmap + close");
    m.remount();
    check(&m, "after remount");
}
