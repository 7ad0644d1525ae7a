//! POSIX semantics through a real fybrk mount, one behaviour per test, each on its own mount.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fybrk_tests::{chmod, cpath, set_mtime, write_file, Gen, Mount};

#[test]
fn create_write_read_and_overwrite_in_place() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("hello.txt");
    m.ok(write_file(&p, b"hello, fybrk"), "write hello.txt");
    m.check(m.ok(fs::read(&p), "read") == b"hello, fybrk", || {
        "read back differs".into()
    });

    // An empty file.
    m.ok(File::create(m.path("empty")), "create empty");
    m.check(
        m.ok(fs::read(m.path("empty")), "read empty").is_empty(),
        || "empty file not empty".into(),
    );

    // Overwrite a middle range without truncating: the rest stays.
    let f = m.ok(OpenOptions::new().write(true).open(&p), "open for write");
    m.ok(f.write_at(b"FYBRK", 7), "pwrite");
    drop(f);
    m.check(m.ok(fs::read(&p), "read") == b"hello, FYBRK", || {
        format!("after pwrite: {:?}", fs::read(&p))
    });

    // Seek + write + read at an offset, on one read-write handle.
    let mut f = m.ok(
        OpenOptions::new().read(true).write(true).open(&p),
        "open rw",
    );
    m.ok(f.seek(SeekFrom::Start(0)), "seek");
    m.ok(f.write_all(b"J"), "write at 0");
    let mut buf = [0u8; 4];
    m.ok(f.read_exact_at(&mut buf, 0), "pread");
    m.check(&buf == b"Jell", || format!("pread after write: {buf:?}"));

    // A larger random file spanning many chunks.
    let data = Gen::new(1).bytes(3 * 1024 * 1024 + 17);
    m.ok(write_file(&m.path("big.bin"), &data), "write big.bin");
    let back = m.ok(fs::read(m.path("big.bin")), "read big.bin");
    m.check(back == data, || {
        format!("big.bin: {:?}", fybrk_tests::diff_bytes(&data, &back))
    });
    let mut part = vec![0u8; 100_000];
    let f = m.ok(File::open(m.path("big.bin")), "open big.bin");
    m.ok(f.read_exact_at(&mut part, 1_500_000), "pread big.bin");
    m.check(part[..] == data[1_500_000..1_600_000], || {
        "pread in the middle differs".into()
    });
}

#[test]
fn o_append_always_writes_at_the_end() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("log");
    m.ok(write_file(&p, b"abc"), "write");
    let mut f = m.ok(OpenOptions::new().append(true).open(&p), "open O_APPEND");
    m.ok(f.write_all(b"def"), "append");
    // Seeking does not move O_APPEND writes away from the end.
    m.ok(f.seek(SeekFrom::Start(0)), "seek");
    m.ok(f.write_all(b"ghi"), "append after seek");
    drop(f);
    let got = m.ok(fs::read(&p), "read");
    m.check(got == b"abcdefghi", || {
        format!("O_APPEND result: {:?}", String::from_utf8_lossy(&got))
    });
}

#[test]
fn o_trunc_empties_the_file() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("t");
    m.ok(write_file(&p, &[7u8; 100_000]), "write");
    let f = m.ok(
        OpenOptions::new().write(true).truncate(true).open(&p),
        "open O_TRUNC",
    );
    m.check(m.ok(f.metadata(), "fstat").len() == 0, || {
        "size after O_TRUNC open is not 0".into()
    });
    drop(f);
    m.check(m.ok(fs::metadata(&p), "stat").len() == 0, || {
        "size after O_TRUNC close is not 0".into()
    });
    m.ok(write_file(&p, b"new"), "rewrite");
    m.check(m.ok(fs::read(&p), "read") == b"new", || {
        "content after rewrite".into()
    });
}

#[test]
fn o_excl_create_fails_when_the_file_exists() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("x");
    m.ok(
        OpenOptions::new().write(true).create_new(true).open(&p),
        "first O_EXCL create",
    );
    let second = OpenOptions::new().write(true).create_new(true).open(&p);
    m.expect_errno(second, &[libc::EEXIST], "second O_EXCL create");
    // Also on a directory name.
    m.ok(fs::create_dir(m.path("d")), "mkdir");
    let on_dir = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("d"));
    m.expect_errno(on_dir, &[libc::EEXIST], "O_EXCL create over a directory");
}

#[test]
fn sparse_write_past_eof_reads_zeros_in_the_gap() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("sparse");
    let gap_end: u64 = 1024 * 1024 + 5;
    let f = m.ok(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p),
        "create",
    );
    m.ok(f.write_all_at(b"head", 0), "write head");
    m.ok(f.write_all_at(b"tail", gap_end), "write past EOF");
    m.check(m.ok(f.metadata(), "fstat").len() == gap_end + 4, || {
        "size on the open handle".into()
    });
    drop(f);
    let md = m.ok(fs::metadata(&p), "stat");
    m.check(md.len() == gap_end + 4, || {
        format!("st_size {} != {}", md.len(), gap_end + 4)
    });
    let data = m.ok(fs::read(&p), "read");
    m.check(data.len() as u64 == gap_end + 4, || {
        format!("read {} bytes", data.len())
    });
    m.check(
        &data[..4] == b"head" && &data[gap_end as usize..] == b"tail",
        || "head/tail differ".into(),
    );
    let nonzero = data[4..gap_end as usize].iter().position(|&b| b != 0);
    m.check(nonzero.is_none(), || {
        format!("gap has a non-zero byte at {:?}", nonzero.map(|i| i + 4))
    });
}

#[test]
fn truncate_up_and_down_by_path_and_by_handle() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("t");
    let data = Gen::new(2).bytes(200_000);
    m.ok(write_file(&p, &data), "write");

    // truncate(2) down.
    let c = cpath(&p);
    m.check(unsafe { libc::truncate(c.as_ptr(), 1000) } == 0, || {
        format!("truncate down: {}", std::io::Error::last_os_error())
    });
    let got = m.ok(fs::read(&p), "read");
    m.check(got == data[..1000], || {
        format!("after truncate down: len {}", got.len())
    });

    // truncate(2) up: zeros after the old end.
    m.check(unsafe { libc::truncate(c.as_ptr(), 300_000) } == 0, || {
        format!("truncate up: {}", std::io::Error::last_os_error())
    });
    let got = m.ok(fs::read(&p), "read");
    m.check(got.len() == 300_000 && got[..1000] == data[..1000], || {
        format!("after truncate up: len {}", got.len())
    });
    m.check(got[1000..].iter().all(|&b| b == 0), || {
        "bytes past the old end are not zero".into()
    });

    // ftruncate on an open handle, down then up, with writes in between.
    let f = m.ok(
        OpenOptions::new().read(true).write(true).open(&p),
        "open rw",
    );
    m.ok(f.set_len(10), "ftruncate down");
    m.ok(f.write_all_at(b"XY", 20), "write past new end");
    m.ok(f.set_len(50), "ftruncate up");
    m.check(m.ok(f.metadata(), "fstat").len() == 50, || {
        "fstat after ftruncate".into()
    });
    drop(f);
    let got = m.ok(fs::read(&p), "read");
    let mut want = data[..10].to_vec();
    want.resize(50, 0);
    want[20] = b'X';
    want[21] = b'Y';
    m.check(got == want, || {
        format!(
            "after ftruncate sequence: {:?}",
            fybrk_tests::diff_bytes(&want, &got)
        )
    });
    m.ok(File::create(&p).and_then(|f| f.set_len(0)), "truncate to 0");
    m.check(m.ok(fs::metadata(&p), "stat").len() == 0, || {
        "truncate to 0".into()
    });
}

#[test]
fn mkdir_rmdir_and_their_errors() {
    let Some(m) = Mount::start() else { return };
    let d = m.path("d");
    m.ok(fs::create_dir(&d), "mkdir");
    m.check(m.ok(fs::metadata(&d), "stat").is_dir(), || {
        "not a dir".into()
    });
    m.expect_errno(fs::create_dir(&d), &[libc::EEXIST], "mkdir existing");
    m.ok(write_file(&d.join("f"), b"x"), "write d/f");
    m.expect_errno(
        fs::remove_dir(&d),
        &[libc::ENOTEMPTY, libc::EEXIST],
        "rmdir non-empty",
    );
    m.expect_errno(
        fs::remove_dir(d.join("f")),
        &[libc::ENOTDIR],
        "rmdir a file",
    );
    m.ok(fs::remove_file(d.join("f")), "unlink d/f");
    m.ok(fs::remove_dir(&d), "rmdir empty");
    m.expect_errno(fs::metadata(&d), &[libc::ENOENT], "stat removed dir");
    m.expect_errno(fs::remove_dir(&d), &[libc::ENOENT], "rmdir missing");
    m.ok(fs::create_dir_all(m.path("a/b/c/d")), "mkdir -p");
    m.check(m.path("a/b/c/d").is_dir(), || "nested mkdir".into());
}

#[test]
fn unlink_removes_the_name() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("f");
    m.ok(write_file(&p, b"data"), "write");
    m.ok(fs::remove_file(&p), "unlink");
    m.expect_errno(File::open(&p), &[libc::ENOENT], "open after unlink");
    m.expect_errno(fs::remove_file(&p), &[libc::ENOENT], "unlink twice");
    let names: Vec<_> = m
        .ok(fs::read_dir(&m.mnt), "readdir")
        .map(|e| e.unwrap().file_name())
        .collect();
    m.check(names.is_empty(), || format!("root still lists {names:?}"));
    m.ok(fs::create_dir(m.path("d")), "mkdir");
    m.expect_errno(
        fs::remove_file(m.path("d")),
        &[libc::EISDIR, libc::EPERM],
        "unlink a directory",
    );
    // The name can be reused at once with new content.
    m.ok(write_file(&p, b"again"), "write again");
    m.check(m.ok(fs::read(&p), "read") == b"again", || {
        "reused name".into()
    });
}

#[test]
fn rename_plain_replacing_across_dirs_and_onto_itself() {
    let Some(m) = Mount::start() else { return };
    // Plain.
    m.ok(write_file(&m.path("a"), b"A"), "write a");
    m.ok(fs::rename(m.path("a"), m.path("b")), "rename a b");
    m.expect_errno(
        fs::metadata(m.path("a")),
        &[libc::ENOENT],
        "old name after rename",
    );
    m.check(m.ok(fs::read(m.path("b")), "read b") == b"A", || {
        "b after rename".into()
    });

    // Replacing an existing file.
    m.ok(write_file(&m.path("c"), b"C-old-content-longer"), "write c");
    m.ok(fs::rename(m.path("b"), m.path("c")), "rename b over c");
    m.check(m.ok(fs::read(m.path("c")), "read c") == b"A", || {
        "c after replacing rename".into()
    });
    m.expect_errno(
        fs::metadata(m.path("b")),
        &[libc::ENOENT],
        "b after replacing rename",
    );
    let names: Vec<_> = m
        .ok(fs::read_dir(&m.mnt), "readdir")
        .map(|e| e.unwrap().file_name())
        .collect();
    m.check(names == ["c"], || format!("root lists {names:?}, want [c]"));

    // Across directories.
    m.ok(fs::create_dir(m.path("d1")), "mkdir d1");
    m.ok(fs::create_dir(m.path("d2")), "mkdir d2");
    m.ok(write_file(&m.path("d1/f"), b"F"), "write d1/f");
    m.ok(
        fs::rename(m.path("d1/f"), m.path("d2/g")),
        "rename d1/f d2/g",
    );
    m.check(m.ok(fs::read(m.path("d2/g")), "read d2/g") == b"F", || {
        "d2/g".into()
    });
    m.expect_errno(
        fs::metadata(m.path("d1/f")),
        &[libc::ENOENT],
        "d1/f after move",
    );

    // Onto itself: a no-op.
    m.ok(fs::rename(m.path("c"), m.path("c")), "rename c c");
    m.check(m.ok(fs::read(m.path("c")), "read c") == b"A", || {
        "c after self-rename".into()
    });

    // File over a directory and directory over a file are refused.
    m.expect_errno(
        fs::rename(m.path("c"), m.path("d1")),
        &[libc::EISDIR],
        "rename file over dir",
    );
    m.expect_errno(
        fs::rename(m.path("d1"), m.path("c")),
        &[libc::ENOTDIR],
        "rename dir over file",
    );
    // Rename of a missing name.
    m.expect_errno(
        fs::rename(m.path("nope"), m.path("x")),
        &[libc::ENOENT],
        "rename missing",
    );
}

#[test]
fn rename_directory_with_contents() {
    let Some(m) = Mount::start() else { return };
    m.ok(fs::create_dir_all(m.path("src/sub/deeper")), "mkdir -p");
    m.ok(write_file(&m.path("src/x"), b"X"), "write");
    m.ok(write_file(&m.path("src/sub/y"), b"Y"), "write");
    m.ok(write_file(&m.path("src/sub/deeper/z"), b"Z"), "write");
    m.ok(fs::create_dir(m.path("dst-parent")), "mkdir");
    m.ok(
        fs::rename(m.path("src"), m.path("dst-parent/moved")),
        "rename dir",
    );
    m.expect_errno(fs::metadata(m.path("src")), &[libc::ENOENT], "old dir name");
    m.expect_errno(
        fs::metadata(m.path("src/sub/y")),
        &[libc::ENOENT],
        "old child path",
    );
    for (rel, want) in [("x", "X"), ("sub/y", "Y"), ("sub/deeper/z", "Z")] {
        let p = m.path("dst-parent/moved").join(rel);
        let got = m.ok(fs::read(&p), format!("read {}", p.display()));
        m.check(got == want.as_bytes(), || {
            format!("{rel} after dir rename: {got:?}")
        });
    }
    // New files in the moved dir land in the right place.
    m.ok(
        write_file(&m.path("dst-parent/moved/sub/new"), b"N"),
        "write in moved dir",
    );
    m.check(
        m.ok(fs::read(m.path("dst-parent/moved/sub/new")), "read") == b"N",
        || "new file".into(),
    );

    // A dir replaces an empty dir, but not a non-empty one.
    m.ok(fs::create_dir(m.path("empty")), "mkdir empty");
    m.ok(
        fs::rename(m.path("dst-parent/moved"), m.path("empty")),
        "rename dir over empty dir",
    );
    m.check(m.ok(fs::read(m.path("empty/x")), "read") == b"X", || {
        "replaced empty dir".into()
    });
    m.ok(fs::create_dir(m.path("full")), "mkdir full");
    m.ok(write_file(&m.path("full/keep"), b"K"), "write full/keep");
    m.expect_errno(
        fs::rename(m.path("empty"), m.path("full")),
        &[libc::ENOTEMPTY, libc::EEXIST],
        "rename dir over non-empty dir",
    );
    m.check(m.ok(fs::read(m.path("full/keep")), "read") == b"K", || {
        "full/keep survives".into()
    });
    // Into its own subtree.
    m.expect_errno(
        fs::rename(m.path("empty"), m.path("empty/sub/inside")),
        &[libc::EINVAL],
        "rename dir into itself",
    );
}

#[test]
fn symlink_and_readlink() {
    let Some(m) = Mount::start() else { return };
    m.ok(write_file(&m.path("target"), b"T"), "write target");
    m.ok(
        std::os::unix::fs::symlink("target", m.path("rel")),
        "symlink rel",
    );
    m.ok(
        std::os::unix::fs::symlink("/definitely/not/here", m.path("dangling")),
        "symlink dangling",
    );
    let long_target = "a/".repeat(200) + "end";
    m.ok(
        std::os::unix::fs::symlink(&long_target, m.path("long")),
        "symlink long",
    );
    m.check(
        m.ok(fs::read_link(m.path("rel")), "readlink") == std::path::Path::new("target"),
        || "rel target".into(),
    );
    m.check(
        m.ok(fs::read_link(m.path("dangling")), "readlink")
            == std::path::Path::new("/definitely/not/here"),
        || "dangling target".into(),
    );
    m.check(
        m.ok(fs::read_link(m.path("long")), "readlink") == std::path::Path::new(&long_target),
        || "long target".into(),
    );
    let md = m.ok(fs::symlink_metadata(m.path("rel")), "lstat");
    m.check(md.file_type().is_symlink(), || {
        "lstat is not a symlink".into()
    });
    m.check(
        m.ok(fs::read(m.path("rel")), "read through link") == b"T",
        || "following the link".into(),
    );
    m.expect_errno(
        fs::read(m.path("dangling")),
        &[libc::ENOENT],
        "read dangling link",
    );
    m.expect_errno(
        std::os::unix::fs::symlink("x", m.path("rel")),
        &[libc::EEXIST],
        "symlink over existing",
    );
    m.expect_errno(
        fs::read_link(m.path("target")),
        &[libc::EINVAL],
        "readlink on a file",
    );
}

#[test]
fn chmod_is_kept_also_after_remount() {
    let Some(mut m) = Mount::start() else { return };
    let cases = [
        ("f640", 0o640u32),
        ("f755", 0o755),
        ("f600", 0o600),
        ("f444", 0o444),
    ];
    for (name, mode) in cases {
        m.ok(write_file(&m.path(name), b"x"), "write");
        m.ok(chmod(&m.path(name), mode), format!("chmod {name}"));
    }
    m.ok(fs::create_dir(m.path("d700")), "mkdir");
    m.ok(chmod(&m.path("d700"), 0o700), "chmod dir");
    m.ok(fs::create_dir(m.path("d1777")), "mkdir");
    m.ok(chmod(&m.path("d1777"), 0o1777), "chmod dir sticky");
    let check = |m: &Mount, when: &str| {
        for (name, mode) in cases
            .iter()
            .copied()
            .chain([("d700", 0o700), ("d1777", 0o1777)])
        {
            let got = m
                .ok(fs::metadata(m.path(name)), "stat")
                .permissions()
                .mode()
                & 0o7777;
            m.check(got == mode, || {
                format!("{when}: {name} has mode {got:o}, want {mode:o}")
            });
        }
    };
    check(&m, "before remount");
    m.remount();
    check(&m, "after remount");
}

#[test]
fn utimens_sets_mtime_also_after_remount() {
    let Some(mut m) = Mount::start() else { return };
    let (secs, nanos) = (1_000_000_000i64, 123_456_789i64);
    m.ok(write_file(&m.path("f"), b"x"), "write");
    m.ok(fs::create_dir(m.path("d")), "mkdir");
    m.ok(set_mtime(&m.path("f"), secs, nanos), "utimensat file");
    m.ok(set_mtime(&m.path("d"), secs + 7, 0), "utimensat dir");
    // And through std, on an open handle (futimens).
    m.ok(write_file(&m.path("g"), b"y"), "write g");
    let g = m.ok(OpenOptions::new().write(true).open(m.path("g")), "open g");
    m.ok(
        g.set_modified(UNIX_EPOCH + Duration::from_secs(1_234_567_890)),
        "futimens",
    );
    drop(g);
    let check = |m: &Mount, when: &str| {
        for (name, want) in [("f", secs), ("d", secs + 7), ("g", 1_234_567_890)] {
            let md = m.ok(fs::metadata(m.path(name)), "stat");
            m.check(md.mtime() == want, || {
                format!(
                    "{when}: {name} mtime {}.{:09}, want {want}",
                    md.mtime(),
                    md.mtime_nsec()
                )
            });
        }
    };
    check(&m, "before remount");
    m.remount();
    check(&m, "after remount");
}

#[test]
fn fsync_and_fdatasync_succeed() {
    let Some(m) = Mount::start() else { return };
    let mut f = m.ok(File::create(m.path("f")), "create");
    m.ok(f.write_all(&Gen::new(3).bytes(500_000)), "write");
    m.ok(f.sync_all(), "fsync");
    m.ok(f.write_all(b"more"), "write more");
    m.ok(f.sync_data(), "fdatasync");
    m.ok(f.sync_all(), "fsync with nothing new");
    drop(f);
    m.check(
        m.ok(fs::metadata(m.path("f")), "stat").len() == 500_004,
        || "size after fsyncs".into(),
    );
    // fsync of a directory.
    let d = m.ok(File::open(&m.mnt), "open root dir");
    m.ok(d.sync_all(), "fsync dir");
}

#[test]
fn statfs_works() {
    let Some(m) = Mount::start() else { return };
    let c = cpath(&m.mnt);
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    m.check(rc == 0, || {
        format!("statvfs: {}", std::io::Error::last_os_error())
    });
    m.check(st.f_bsize > 0, || format!("f_bsize is {}", st.f_bsize));
    m.check(st.f_namemax > 0, || {
        format!("f_namemax is {}", st.f_namemax)
    });
}

#[test]
fn readdir_lists_ten_thousand_entries_exactly_once() {
    let Some(m) = Mount::start() else { return };
    let dir = m.path("many");
    m.ok(fs::create_dir(&dir), "mkdir");
    let n = 10_000;
    for i in 0..n {
        m.ok(
            File::create(dir.join(format!("entry-{i:05}"))),
            format!("create entry {i}"),
        );
    }
    let mut seen = HashSet::new();
    let mut dups = Vec::new();
    for e in m.ok(fs::read_dir(&dir), "read_dir") {
        let name = m
            .ok(e, "read_dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !seen.insert(name.clone()) {
            dups.push(name);
        }
    }
    m.check(dups.is_empty(), || {
        format!(
            "{} names listed twice, e.g. {:?}",
            dups.len(),
            &dups[..dups.len().min(5)]
        )
    });
    let missing: Vec<_> = (0..n)
        .map(|i| format!("entry-{i:05}"))
        .filter(|s| !seen.contains(s))
        .collect();
    m.check(missing.is_empty(), || {
        format!(
            "{} names missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        )
    });
    m.check(seen.len() == n, || {
        format!("{} names listed, want {n}", seen.len())
    });
}

#[test]
fn nlink_of_files_and_dirs() {
    let Some(m) = Mount::start() else { return };
    m.ok(write_file(&m.path("f"), b"x"), "write");
    m.ok(fs::create_dir(m.path("empty")), "mkdir");
    m.ok(fs::create_dir(m.path("p")), "mkdir");
    for s in ["s1", "s2", "s3"] {
        m.ok(fs::create_dir(m.path("p").join(s)), "mkdir sub");
    }
    m.ok(write_file(&m.path("p/file"), b"x"), "write p/file");
    let nl = |rel: &str| m.ok(fs::metadata(m.path(rel)), "stat").nlink();
    m.check(nl("f") == 1, || format!("file nlink {}", nl("f")));
    m.check(nl("empty") == 2, || {
        format!("empty dir nlink {}", nl("empty"))
    });
    m.check(nl("p") == 5, || {
        format!("dir with 3 subdirs has nlink {}, want 5", nl("p"))
    });
    m.ok(fs::remove_dir(m.path("p/s3")), "rmdir");
    m.check(nl("p") == 4, || {
        format!("after rmdir: nlink {}, want 4", nl("p"))
    });
}

#[test]
fn size_and_mtime_follow_writes() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("f");
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    m.ok(write_file(&p, &[1u8; 12_345]), "write");
    let md1 = m.ok(fs::metadata(&p), "stat");
    m.check(md1.len() == 12_345, || format!("st_size {}", md1.len()));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    m.check(md1.mtime() >= before - 1 && md1.mtime() <= now + 1, || {
        format!("mtime {} not within [{before}, {now}]", md1.mtime())
    });

    std::thread::sleep(Duration::from_millis(1100));
    let mut f = m.ok(OpenOptions::new().append(true).open(&p), "open append");
    m.ok(f.write_all(&[2u8; 1000]), "append");
    drop(f);
    let md2 = m.ok(fs::metadata(&p), "stat");
    m.check(md2.len() == 13_345, || {
        format!("st_size after append {}", md2.len())
    });
    let t1 = (md1.mtime(), md1.mtime_nsec());
    let t2 = (md2.mtime(), md2.mtime_nsec());
    m.check(t2 > t1, || {
        format!("mtime did not advance after a write: {t1:?} -> {t2:?}")
    });
    // A fresh stat on a new handle agrees.
    let md3 = m.ok(m.ok(File::open(&p), "open").metadata(), "fstat");
    m.check(md3.len() == 13_345, || format!("fstat size {}", md3.len()));
}

#[test]
fn open_file_keeps_receiving_writes_after_rename() {
    let Some(m) = Mount::start() else { return };
    m.ok(fs::create_dir(m.path("dir")), "mkdir");
    let mut f = m.ok(File::create(m.path("old")), "create");
    m.ok(f.write_all(b"one,"), "write 1");
    m.ok(
        fs::rename(m.path("old"), m.path("dir/new")),
        "rename while open",
    );
    m.ok(f.write_all(b"two,"), "write 2");
    m.ok(f.sync_all(), "fsync after rename");
    m.ok(f.write_all(b"three"), "write 3");
    drop(f);
    m.expect_errno(
        fs::metadata(m.path("old")),
        &[libc::ENOENT],
        "old name came back",
    );
    let got = m.ok(fs::read(m.path("dir/new")), "read new name");
    m.check(got == b"one,two,three", || {
        format!(
            "renamed open file holds {:?}",
            String::from_utf8_lossy(&got)
        )
    });
}

#[test]
fn two_handles_see_each_others_writes() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("shared");
    let a = m.ok(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p),
        "open a",
    );
    let b = m.ok(OpenOptions::new().read(true).write(true).open(&p), "open b");
    m.ok(a.write_all_at(b"hello world", 0), "a writes");
    let mut buf = vec![0u8; 11];
    m.ok(b.read_exact_at(&mut buf, 0), "b reads a's write");
    m.check(buf == b"hello world", || {
        format!("b sees {:?}", String::from_utf8_lossy(&buf))
    });
    m.ok(b.write_all_at(b"WORLD", 6), "b writes");
    m.ok(a.read_exact_at(&mut buf, 0), "a reads b's write");
    m.check(buf == b"hello WORLD", || {
        format!("a sees {:?}", String::from_utf8_lossy(&buf))
    });
    // b extends the file; a sees the new size.
    m.ok(b.write_all_at(b"!", 11), "b extends");
    m.check(m.ok(a.metadata(), "fstat a").len() == 12, || {
        "a's fstat size".into()
    });
    drop(a);
    drop(b);
    m.check(m.ok(fs::read(&p), "read") == b"hello WORLD!", || {
        "final content".into()
    });
}

#[test]
fn hard_links_are_refused_with_eperm() {
    let Some(m) = Mount::start() else { return };
    m.ok(write_file(&m.path("f"), b"x"), "write");
    m.expect_errno(
        fs::hard_link(m.path("f"), m.path("g")),
        &[libc::EPERM],
        "link(2)",
    );
    m.expect_errno(
        fs::metadata(m.path("g")),
        &[libc::ENOENT],
        "the refused link's name",
    );
    m.check(m.ok(fs::metadata(m.path("f")), "stat").nlink() == 1, || {
        "nlink changed".into()
    });
}

#[test]
fn xattrs_are_not_supported() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("f");
    m.ok(write_file(&p, b"x"), "write");
    let c = cpath(&p);
    let name = std::ffi::CString::new("user.fybrk.test").unwrap();
    let rc = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    let r = if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    m.expect_errno(r, &[libc::ENOTSUP, libc::EOPNOTSUPP], "setxattr");
    // The file is untouched.
    m.check(m.ok(fs::read(&p), "read") == b"x", || "file changed".into());
}

#[test]
fn chown_is_refused_unless_a_no_op() {
    let Some(m) = Mount::start() else { return };
    let p = m.path("f");
    m.ok(write_file(&p, b"x"), "write");
    let md = m.ok(fs::metadata(&p), "stat");
    m.ok(
        std::os::unix::fs::chown(&p, Some(md.uid()), Some(md.gid())),
        "no-op chown",
    );
    m.ok(std::os::unix::fs::chown(&p, None, None), "chown(-1, -1)");
    let other = md.uid().wrapping_add(12_345);
    m.expect_errno(
        std::os::unix::fs::chown(&p, Some(other), None),
        &[libc::EPERM],
        "chown to another uid",
    );
    m.expect_errno(
        std::os::unix::fs::chown(&p, None, Some(md.gid().wrapping_add(54_321))),
        &[libc::EPERM],
        "chgrp to another gid",
    );
    let after = m.ok(fs::metadata(&p), "stat");
    m.check(after.uid() == md.uid() && after.gid() == md.gid(), || {
        format!("owner changed to {}:{}", after.uid(), after.gid())
    });
}

#[test]
fn seek_end_and_read_at_eof() {
    // lseek(SEEK_END) needs a correct size from the filesystem, not from a cached write.
    let Some(m) = Mount::start() else { return };
    let p = m.path("f");
    m.ok(write_file(&p, &[9u8; 70_000]), "write");
    let mut f = m.ok(
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME)
            .open(&p),
        "open",
    );
    let end = m.ok(f.seek(SeekFrom::End(0)), "seek end");
    m.check(end == 70_000, || format!("SEEK_END at {end}"));
    let mut rest = Vec::new();
    m.ok(f.read_to_end(&mut rest), "read at EOF");
    m.check(rest.is_empty(), || "read past EOF returned data".into());
}

#[test]
fn rename_over_a_file_is_atomic_for_concurrent_openers() {
    // POSIX: a name replaced by rename(2) stays visible throughout; an open(2) racing with the
    // rename gets the old or the new file, never ENOENT. The racing open resolves the name to the
    // old inode and then opens that inode, which the kernel still references although its name
    // is gone.
    let Some(m) = Mount::start() else { return };
    let doc = m.path("doc");
    let tmp = m.path("doc.tmp");
    m.ok(write_file(&doc, b"version 0"), "write v0");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (doc, stop) = (doc.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut errors) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match fs::read(&doc) {
                    Ok(d) if d.starts_with(b"version ") => ok += 1,
                    Ok(d) => errors.push(format!("read {:?}", String::from_utf8_lossy(&d))),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (ok, errors)
        })
    };
    for i in 1..=300 {
        m.ok(
            write_file(&tmp, format!("version {i}").as_bytes()),
            "write tmp",
        );
        m.ok(fs::rename(&tmp, &doc), "rename tmp over doc");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, errors) = reader.join().unwrap();
    m.check(errors.is_empty(), || {
        format!(
            "{} of {} reads of a path that always exists failed, e.g. {:?}",
            errors.len(),
            ok + errors.len() as u64,
            &errors[..errors.len().min(3)]
        )
    });
    m.check(m.ok(fs::read(&doc), "read") == b"version 300", || {
        "final version".into()
    });
}
