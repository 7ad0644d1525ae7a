//! On-demand devices through real daemons: every file visible, content fetched when read,
//! a cache budget kept, pins, `free`, a bounded failure offline, and content written on the
//! on-demand device kept until a full device has it.
//!
//! Its own test binary. Run: `cargo build --release -p fybrk && cargo test --release -p
//! fybrk-tests --test ondemand` (root and /dev/fuse, see `tests/lib.rs`).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use fybrk_control::{FreeReply, LsReply, PinReply, StatusReply};
use fybrk_tests::{
    describe, drop_page_cache, errno_of, pair, store_dir, wait_connected, wait_file, wait_for,
    write_file, Gen, Peer, CONNECT_TIMEOUT, SYNC_TIMEOUT,
};

const MIB: u64 = 1 << 20;
/// B's cache.
const BUDGET: u64 = 64 * MIB;
/// How far the chunks held may pass the budget (the README's documented slack): the content
/// of open files is never evicted (one 16 MiB file here, sampled right after it closed) and
/// sequential reads fetch 8 MiB ahead (the kernel's own read-ahead asks 4 MiB on top).
const SLACK: u64 = 40 * MIB;
/// Files on A and their size: 256 MiB in all.
const FILES: usize = 16;
const FILE_SIZE: usize = 16 << 20;

fn json<T: serde::de::DeserializeOwned>(p: &Peer, args: &[&str]) -> T {
    let out = p.run(args, Duration::from_secs(120));
    p.check(out.status.success(), || {
        format!("`fybrk {}` failed\n{}", args.join(" "), describe(&out))
    });
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        p.fail(&format!(
            "`fybrk {}` printed no valid JSON ({e})\n{}",
            args.join(" "),
            describe(&out)
        ))
    })
}

fn storage(p: &Peer) -> StatusReply {
    p.status_json()
}

fn cache_used(p: &Peer) -> u64 {
    storage(p).storage.cache_used.unwrap_or(u64::MAX)
}

fn ls_state(p: &Peer, rel: &str) -> String {
    let path = p.path(rel);
    let r: LsReply = json(p, &["ls", "--json", path.to_str().unwrap()]);
    r.entries
        .iter()
        .find(|e| e.path == rel)
        .map(|e| e.state.clone())
        .unwrap_or_else(|| p.fail(&format!("ls does not list {rel}: {r:?}")))
}

#[test]
fn an_on_demand_device_sees_everything_and_keeps_within_its_cache() {
    let Some(mut a) = Peer::start("alpha") else {
        return;
    };
    let Some(mut b) = Peer::prepare("bravo") else {
        return;
    };
    b.mount_args = vec!["--on-demand".into(), "--cache".into(), "64M".into()];
    b.up();
    pair(&a, &b);
    wait_connected(&a, &b, CONNECT_TIMEOUT);

    // 256 MiB on A, in 16 files of random bytes (nothing deduplicates).
    let mut g = Gen::new(0x0d_e3a7d);
    let mut data = Vec::new();
    for i in 0..FILES {
        let bytes = g.bytes(FILE_SIZE);
        write_file(&a.path(format!("f{i:02}.bin")), &bytes).unwrap();
        data.push(bytes);
    }
    // Every record reaches B, but no content: names and sizes are there, nothing is stored.
    wait_for("B to list every file of A", SYNC_TIMEOUT, || {
        let s = storage(&b);
        if s.files == FILES as u64 && s.logical_bytes == (FILES * FILE_SIZE) as u64 {
            Ok(())
        } else {
            Err(format!(
                "B has {} files, {} bytes",
                s.files, s.logical_bytes
            ))
        }
    });
    // `find`, `stat` and `du --apparent-size` work without fetching anything.
    let find = std::process::Command::new("find")
        .arg(&b.mnt)
        .args(["-type", "f", "-size", "+1M"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&find.stdout).lines().count(), FILES);
    for i in 0..FILES {
        let md = std::fs::metadata(b.path(format!("f{i:02}.bin"))).unwrap();
        assert_eq!(md.len(), FILE_SIZE as u64);
    }
    let du = std::process::Command::new("du")
        .args(["-s", "-b", "--apparent-size"])
        .arg(&b.mnt)
        .output()
        .unwrap();
    let du_bytes: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(du_bytes >= (FILES * FILE_SIZE) as u64, "du says {du_bytes}");
    let s = storage(&b);
    assert_eq!(s.storage.mode, "on_demand");
    assert_eq!(s.storage.cache_budget, Some(BUDGET));
    assert_eq!(
        s.stored_bytes, 0,
        "find, stat and du fetched content: {:?}",
        s.storage
    );
    assert_eq!(ls_state(&b, "f00.bin"), "remote");

    // Reading every file on B returns A's bytes, and B stays within its budget meanwhile.
    let mut peak = 0;
    let t = Instant::now();
    for (i, want) in data.iter().enumerate() {
        let got = std::fs::read(b.path(format!("f{i:02}.bin"))).unwrap();
        assert!(got == *want, "f{i:02}.bin read on B differs from A's");
        peak = peak.max(cache_used(&b));
    }
    let read_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "read 256 MiB of remote content in {read_secs:.1} s; cache peak {} MiB of 64",
        peak / MIB
    );
    assert!(
        peak <= BUDGET + SLACK,
        "B held {} MiB at the peak (budget 64 MiB + {} MiB slack)",
        peak / MIB,
        SLACK / MIB
    );
    wait_for(
        "B to settle within its budget",
        Duration::from_secs(20),
        || {
            let used = cache_used(&b);
            (used <= BUDGET)
                .then_some(())
                .ok_or(format!("{} MiB held", used / MIB))
        },
    );
    // The disk follows (blob files compacted after evictions); RocksDB's own files and one
    // uncompacted quarter of the budget on top.
    let disk = dir_bytes(&store_dir(&b.state));
    eprintln!("B's store takes {} MiB on disk", disk / MIB);
    assert!(
        disk <= 2 * BUDGET + 64 * MIB,
        "B's store takes {} MiB on disk for a 64 MiB cache",
        disk / MIB
    );

    // A pinned file stays local while others are read, and readable with A offline.
    let pinned: PinReply = json(&b, &["pin", "--json", b.path("f03.bin").to_str().unwrap()]);
    assert_eq!(pinned.pinned, vec!["f03.bin".to_string()]);
    assert_eq!(pinned.missing_chunks, 0, "{pinned:?}");
    assert_eq!(ls_state(&b, "f03.bin"), "local");
    // The kernel keeps a file's pages across opens while it is unchanged (FOPEN_KEEP_CACHE):
    // drop them, so these reads reach the daemon and fetch again.
    drop_page_cache();
    for i in [0usize, 1, 2, 4, 5, 6, 7, 8] {
        std::fs::read(b.path(format!("f{i:02}.bin"))).unwrap();
    }
    assert_eq!(
        ls_state(&b, "f03.bin"),
        "local",
        "a pinned file was evicted"
    );
    // `free` drops what another device keeps, now.
    let freed: FreeReply = json(&b, &["free", "--json", b.path("f08.bin").to_str().unwrap()]);
    assert!(freed.freed_bytes >= FILE_SIZE as u64, "{freed:?}");
    assert_eq!(ls_state(&b, "f08.bin"), "remote");

    assert_eq!(
        ls_state(&b, "f03.bin"),
        "local",
        "the pinned file was freed"
    );
    a.down();
    let f03 = std::fs::read(b.path("f03.bin")).unwrap();
    assert!(f03 == data[3], "the pinned file read offline differs");
    // An evicted file with A offline: a bounded failure with the documented errno (once the
    // kernel's copy of its pages from the read above is gone too).
    drop_page_cache();
    let t = Instant::now();
    let e = errno_of(
        std::fs::read(b.path("f08.bin")),
        "reading an evicted file offline",
    );
    assert_eq!(e, libc::EHOSTUNREACH, "errno {e}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    let s = storage(&b);
    assert!(
        s.storage.unreadable.iter().any(|u| u.path == "f08.bin"),
        "status does not list the unreadable file: {:?}",
        s.storage.unreadable
    );
    assert!(
        b.log_tail().contains("f08.bin"),
        "no log line names the file"
    );

    // Written on B while A is away: more than the cache, none of it evicted before A has it.
    let mine = g.bytes(80 << 20);
    write_file(&b.path("mine.bin"), &mine).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ls_state(&b, "mine.bin"), "local");
    assert!(cache_used(&b) > BUDGET, "B dropped content only it has");
    a.up();
    wait_connected(&a, &b, CONNECT_TIMEOUT);
    wait_file(&a, "mine.bin", &mine, SYNC_TIMEOUT);
    // Once A keeps it, B may let it go and gets back within its budget.
    wait_for(
        "B back within its budget after A took its file",
        SYNC_TIMEOUT,
        || {
            let used = cache_used(&b);
            (used <= BUDGET)
                .then_some(())
                .ok_or(format!("{} MiB held", used / MIB))
        },
    );
    assert!(std::fs::read(b.path("mine.bin")).unwrap() == mine);
    assert_eq!(
        ls_state(&b, "f03.bin"),
        "local",
        "the pinned file was evicted"
    );

    // Restarted with another budget: nothing lost, the pin kept.
    b.mount_args = vec!["--on-demand".into(), "--cache".into(), "128M".into()];
    b.restart();
    wait_connected(&a, &b, CONNECT_TIMEOUT);
    let s = storage(&b);
    assert_eq!(s.storage.cache_budget, Some(128 * MIB));
    assert_eq!(s.storage.pinned, vec!["f03.bin".to_string()]);
    assert_eq!(ls_state(&b, "f03.bin"), "local");
    for (i, want) in data.iter().enumerate().step_by(5) {
        let got = std::fs::read(b.path(format!("f{i:02}.bin"))).unwrap();
        assert!(got == *want, "f{i:02}.bin differs after the restart");
    }
    b.assert_verify_ok();
    a.assert_verify_ok();
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            total += if md.is_dir() {
                dir_bytes(&e.path())
            } else {
                md.len()
            };
        }
    }
    total
}
