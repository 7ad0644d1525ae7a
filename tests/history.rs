//! History through real mounts and real daemons: every version is kept, `fybrk log` lists them
//! on both devices, `fybrk restore` brings back an old version and a deleted tree byte for byte
//! on both, and `fybrk gc` keeps what retention keeps.
//!
//! Its own test binary. Run: `cargo build --release -p fybrk && cargo test --release -p
//! fybrk-tests --test history` (root and /dev/fuse, see `tests/lib.rs`).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fybrk_control::{LogReply, RestoreReply};
use fybrk_tests::{
    describe, pair, run_timeout, wait_file, wait_gone, write_file_synced, Gen, Mount, Peer,
    SYNC_TIMEOUT,
};

const CMD: Duration = Duration::from_secs(60);

fn ok(m: &Mount, out: Output, what: &str) -> Output {
    if !out.status.success() {
        m.fail(&format!("{what} failed\n{}", describe(&out)));
    }
    out
}

/// `fybrk log PATH --json`, run from the mount's root with a relative path (as a user would).
fn log(m: &Mount, path: &str) -> LogReply {
    let mut cmd = m.cmd(&["log", path, "--json"]);
    cmd.current_dir(m.path(""));
    let out = ok(m, run_timeout(&mut cmd, CMD), &format!("fybrk log {path}"));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn restore(m: &Mount, args: &[&str]) -> RestoreReply {
    let mut all = vec!["restore"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = ok(m, m.run(&all, CMD), &format!("fybrk {}", all.join(" ")));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Now, rounded down to the second, as RFC 3339 UTC: a time after everything committed more
/// than a second ago and before everything committed from now on.
fn mark() -> String {
    std::thread::sleep(Duration::from_millis(1100));
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let t = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    std::thread::sleep(Duration::from_millis(100));
    t
}

fn write(m: &Mount, rel: &str, data: &[u8]) {
    if let Some(parent) = Path::new(rel).parent() {
        fs::create_dir_all(m.path(parent)).unwrap();
    }
    write_file_synced(&m.path(rel), data).unwrap();
}

#[test]
fn versions_are_listed_and_restored_on_both_devices() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);
    let mut g = Gen::new(11);
    let v1 = g.bytes(300_000);
    let mut v2 = v1.clone();
    v2[1000..1100].copy_from_slice(&g.bytes(100));
    let v3 = g.bytes(5000);

    write(&a, "doc.txt", &v1);
    wait_file(&b, "doc.txt", &v1, SYNC_TIMEOUT);
    let t1 = mark();
    write(&a, "doc.txt", &v2);
    wait_file(&b, "doc.txt", &v2, SYNC_TIMEOUT);
    write(&a, "doc.txt", &v3);
    wait_file(&b, "doc.txt", &v3, SYNC_TIMEOUT);

    // Both devices list the versions, newest first; alpha made them.
    for (m, made_here) in [(&a, true), (&b, false)] {
        let l = log(m, "doc.txt");
        let sizes: Vec<u64> = l.versions.iter().map(|v| v.size).collect();
        m.check(
            sizes.len() >= 3 && sizes[..3] == [5000, 300_000, 300_000],
            || format!("log of doc.txt: {l:?}"),
        );
        m.check(
            l.versions.iter().all(|v| v.this_device == made_here),
            || format!("who made them: {l:?}"),
        );
        m.check(
            l.versions.windows(2).all(|w| w[0].time_ns >= w[1].time_ns),
            || format!("newest first: {l:?}"),
        );
    }

    // A tree, deleted on alpha.
    let tree: Vec<(&str, Vec<u8>)> = vec![
        ("tree/x.bin", g.bytes(200_000)),
        ("tree/sub/y.txt", b"why\n".to_vec()),
        ("tree/sub/deeper/z", g.bytes(70_000)),
    ];
    for (p, d) in &tree {
        write(&a, p, d);
    }
    for (p, d) in &tree {
        wait_file(&b, p, d, SYNC_TIMEOUT);
    }
    let t2 = mark();
    fs::remove_dir_all(a.path("tree")).unwrap();
    wait_gone(&b, "tree", SYNC_TIMEOUT);
    let l = log(&b, "tree");
    b.check(
        l.versions
            .iter()
            .any(|v| v.deleted && v.path == "tree/sub/y.txt"),
        || format!("the deletion is in bravo's log: {l:?}"),
    );

    // GC applies retention, which keeps everything younger than an hour.
    ok(&a, a.run(&["gc"], CMD), "fybrk gc on alpha");
    let out = ok(
        &b,
        b.run(&["gc", "--json"], CMD),
        "fybrk gc --json on bravo",
    );
    let r: fybrk_control::GcReply = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| b.fail(&format!("gc --json ({e}): {}", describe(&out))));
    b.check(r.versions_dropped == 0, || {
        format!("nothing is older than an hour: {r:?}")
    });

    // On bravo: doc.txt as it was at t1, and the tree as it was at t2; both land on alpha too.
    let r = restore(&b, &[b.path("doc.txt").to_str().unwrap(), "--at", &t1]);
    b.check(r.restored == 1, || format!("{r:?}"));
    let r = restore(&b, &[b.path("tree").to_str().unwrap(), "--at", &t2]);
    b.check(r.restored == 6 && r.deleted == 0, || {
        format!("tree, sub, deeper and three files: {r:?}")
    });
    for m in [&a, &b] {
        wait_file(m, "doc.txt", &v1, SYNC_TIMEOUT);
        for (p, d) in &tree {
            wait_file(m, p, d, SYNC_TIMEOUT);
        }
    }
    // Bravo knows it restored; alpha sees a new version made by bravo.
    let l = log(&b, "doc.txt");
    b.check(l.versions[0].event == "restore", || format!("{l:?}"));
    let l = log(&a, "doc.txt");
    a.check(
        !l.versions[0].this_device && l.versions[0].size == 300_000,
        || format!("{l:?}"),
    );

    // A version by id, to another name; the original stays.
    let id = log(&a, "doc.txt")
        .versions
        .iter()
        .find(|v| v.size == 5000)
        .map(|v| v.id)
        .unwrap();
    let id = id.to_string();
    let to = a.path("doc-v3.txt");
    restore(
        &a,
        &[
            a.path("doc.txt").to_str().unwrap(),
            "--version",
            &id,
            "--to",
            to.to_str().unwrap(),
        ],
    );
    wait_file(&b, "doc-v3.txt", &v3, SYNC_TIMEOUT);
    wait_file(&a, "doc.txt", &v1, SYNC_TIMEOUT);

    // Mistakes are refused with a message.
    let out = a.run(
        &["restore", a.path("nope").to_str().unwrap(), "--at", &t1],
        CMD,
    );
    a.check(!out.status.success(), || describe(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    a.check(err.contains("nope"), || err.clone());
    let out = a.run(&["restore", "/tmp", "--at", "1h"], CMD);
    a.check(!out.status.success(), || describe(&out));
    let out = a.run(
        &[
            "restore",
            a.path("doc.txt").to_str().unwrap(),
            "--at",
            "yesterday",
        ],
        CMD,
    );
    a.check(!out.status.success(), || describe(&out));

    ok(&a, a.run(&["gc"], CMD), "fybrk gc on alpha");
    a.assert_verify_ok();
    b.assert_verify_ok();
}

#[test]
fn rolling_the_whole_folder_back_removes_what_came_later() {
    let Some(m) = Mount::start() else {
        return;
    };
    write(&m, "keep/a.txt", b"a");
    let t = mark();
    write(&m, "keep/a.txt", b"changed");
    write(&m, "new.txt", b"new");
    fs::remove_dir_all(m.path("keep")).unwrap();
    let r = restore(&m, &[m.path("").to_str().unwrap(), "--at", &t]);
    m.check(r.restored == 2 && r.deleted == 1, || format!("{r:?}"));
    m.check(fs::read(m.path("keep/a.txt")).unwrap() == b"a", || {
        "a.txt".into()
    });
    m.check(!m.path("new.txt").exists(), || {
        "new.txt is still there".into()
    });
    // And the rollback itself is undone the same way.
    let log = log(&m, "new.txt");
    m.check(log.versions[0].deleted, || format!("{log:?}"));
    m.assert_verify_ok();
}

#[test]
fn a_mass_deletion_by_a_peer_is_shown_with_its_undo() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);
    fs::create_dir(a.path("photos")).unwrap();
    for i in 0..120 {
        fs::write(a.path(format!("photos/{i:03}.jpg")), format!("photo {i}")).unwrap();
    }
    wait_file(&b, "photos/119.jpg", b"photo 119", SYNC_TIMEOUT);
    for i in 0..120 {
        wait_file(
            &b,
            format!("photos/{i:03}.jpg"),
            format!("photo {i}").as_bytes(),
            SYNC_TIMEOUT,
        );
    }
    fs::remove_dir_all(a.path("photos")).unwrap();
    wait_gone(&b, "photos", SYNC_TIMEOUT);

    let s = b.status_json();
    b.check(s.mass_deletions.len() == 1, || {
        format!("{:?}", s.mass_deletions)
    });
    let m = &s.mass_deletions[0];
    b.check(m.device == "alpha" && m.deleted >= 101, || format!("{m:?}"));
    let human = b.run(&["status"], CMD);
    let text = String::from_utf8_lossy(&human.stdout).to_string();
    b.check(text.contains("WARNING") && text.contains(&m.undo), || {
        text.clone()
    });
    // Alpha deleted them itself: no warning there.
    a.check(a.status_json().mass_deletions.is_empty(), || {
        "alpha warned".into()
    });

    // The undo, exactly as status printed it, brings every photo back on both devices.
    let args: Vec<&str> = m.undo.split(' ').skip(1).collect();
    ok(&b, b.run(&args, CMD), &m.undo);
    for p in [&a, &b] {
        for i in 0..120 {
            wait_file(
                p,
                format!("photos/{i:03}.jpg"),
                format!("photo {i}").as_bytes(),
                SYNC_TIMEOUT,
            );
        }
    }
}

#[test]
fn the_time_travel_tree_shows_the_past_read_only_and_stays_hidden() {
    let Some(m) = Mount::start() else {
        return;
    };
    write(&m, "doc.txt", b"version one");
    write(&m, "gone.txt", b"deleted later");
    let t = mark();
    write(&m, "doc.txt", b"version two, longer");
    fs::remove_file(m.path("gone.txt")).unwrap();

    let past = m.path(format!(".fybrk/at/{t}"));
    let read = |rel: &str| fs::read(past.join(rel));
    m.check(
        read("doc.txt").ok().as_deref() == Some(&b"version one"[..]),
        || format!("doc.txt at {t}: {:?}", read("doc.txt")),
    );
    m.check(
        read("gone.txt").ok().as_deref() == Some(&b"deleted later"[..]),
        || format!("gone.txt at {t}: {:?}", read("gone.txt")),
    );
    let mut then: Vec<String> = fs::read_dir(&past)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    then.sort();
    m.check(then == ["doc.txt", "gone.txt"], || format!("{then:?}"));
    let now: Vec<String> = fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    m.check(now == ["doc.txt"], || format!("the root lists {now:?}"));
    let erofs =
        |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error()) == Some(libc::EROFS);
    m.check(erofs(fs::write(past.join("doc.txt"), b"x")), || {
        "write".into()
    });
    m.check(erofs(fs::write(past.join("new.txt"), b"x")), || {
        "create".into()
    });
    m.check(erofs(fs::create_dir(m.path(".fybrk/x"))), || "mkdir".into());
    m.check(erofs(fs::remove_file(past.join("doc.txt"))), || {
        "unlink".into()
    });
    m.check(
        fs::read(m.path("doc.txt")).unwrap() == b"version two, longer",
        || "the present changed".into(),
    );
}
