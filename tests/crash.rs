//! `kill -9` of the daemon in the middle of heavy writes: everything whose fsync returned OK
//! before the kill survives exactly, and `verify` finds the store clean.
//!
//! Its own test binary, so it never shares the two cores with the other mounts.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, File};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use fybrk_tests::{Gen, Mount};

const FILES: usize = 200;
const FILE_LEN: usize = 256 * 1024;
/// The unsynced big file stops here if the kill has not stopped it first.
const BIG_CAP: u64 = 3 * 1024 * 1024 * 1024;

fn file_data(i: usize) -> Vec<u8> {
    Gen::new(1000 + i as u64).bytes(FILE_LEN)
}

#[test]
fn kill9_during_writes_keeps_every_fsynced_file() {
    let Some(mut m) = Mount::start() else { return };
    let dir = m.path("synced");
    m.ok(fs::create_dir(&dir), "mkdir");
    // Something committed and closed before the storm: it must survive as well.
    let before = Gen::new(5).bytes(1_000_000);
    m.ok(
        fybrk_tests::write_file_synced(&m.path("before.bin"), &before),
        "write before.bin",
    );

    let synced: Arc<Mutex<Vec<usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let big_written = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = mpsc::channel::<(&'static str, String)>();

    // Writer 1: many files, each fsynced; record which fsyncs returned OK.
    {
        let (dir, synced, stop, tx) = (dir.clone(), synced.clone(), stop.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let mut end = String::from("wrote all files");
            for i in 0..FILES {
                if stop.load(Ordering::Relaxed) {
                    end = format!("stopped before file {i}");
                    break;
                }
                let r = (|| {
                    let mut f = File::create(dir.join(format!("f{i:03}")))?;
                    f.write_all(&file_data(i))?;
                    f.sync_all()
                })();
                match r {
                    Ok(()) => synced.lock().unwrap().push(i),
                    Err(e) => {
                        end = format!("file {i}: {e}");
                        break;
                    }
                }
            }
            let _ = tx.send(("synced writer", end));
        });
    }
    // Writer 2: one big file, never fsynced.
    {
        let (p, stop, n, tx) = (
            m.path("big-unsynced.bin"),
            stop.clone(),
            big_written.clone(),
            done_tx.clone(),
        );
        std::thread::spawn(move || {
            let mut g = Gen::new(77);
            let mut block = vec![0u8; 1024 * 1024];
            let end = match File::create(&p) {
                Err(e) => format!("create: {e}"),
                Ok(mut f) => loop {
                    if stop.load(Ordering::Relaxed) || n.load(Ordering::Relaxed) >= BIG_CAP {
                        break "stopped".to_string();
                    }
                    g.fill(&mut block);
                    if let Err(e) = f.write_all(&block) {
                        break format!("write: {e}");
                    }
                    n.fetch_add(block.len() as u64, Ordering::Relaxed);
                },
            };
            let _ = tx.send(("big writer", end));
        });
    }
    drop(done_tx);

    // Let both run for about a second, but make sure some fsyncs completed first.
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let enough = fybrk_tests::wait_until(Duration::from_secs(30), || {
        synced.lock().unwrap().len() >= 5
    });
    let n_before_kill = synced.lock().unwrap().len();
    m.check(enough, || {
        format!(
            "only {n_before_kill} fsynced files after {:?}: writes are far too slow",
            t0.elapsed()
        )
    });
    let pid = m.pid();
    let kill_at = t0.elapsed();
    m.ok(
        fybrk_tests::signal(pid, libc::SIGKILL),
        "kill -9 the daemon",
    );
    // The snapshot of "fsync returned OK" is taken after the kill: a fsync that returned before the
    // kill is in it; one racing with the kill may be in it too, and then it must also be durable,
    // because an OK from fsync is a promise whenever it is given.
    let ok_files: Vec<usize> = {
        // Wait for both writers to notice (their calls fail with ENOTCONN once the daemon is gone).
        let mut ends = Vec::new();
        for _ in 0..2 {
            match done_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(e) => ends.push(e),
                Err(_) => m.fail(&format!(
                    "writers still blocked 60 s after kill -9; ended so far: {ends:?}"
                )),
            }
        }
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "killed at {kill_at:?}; writers ended: {ends:?}; big file had {} MiB",
            big_written.load(Ordering::Relaxed) >> 20
        );
        synced.lock().unwrap().clone()
    };
    eprintln!(
        "{} files fsynced OK before the kill ({} seen at kill time)",
        ok_files.len(),
        n_before_kill
    );

    // A dead FUSE mount: reads fail (ENOTCONN) until it is unmounted.
    m.forget_dead_daemon();
    m.mount();

    let mut bad = Vec::new();
    for &i in &ok_files {
        let p = dir.join(format!("f{i:03}"));
        match fs::read(&p) {
            Ok(d) if d == file_data(i) => {}
            Ok(d) => bad.push(format!(
                "f{i:03}: {}",
                fybrk_tests::diff_bytes(&file_data(i), &d).unwrap_or_default()
            )),
            Err(e) => bad.push(format!("f{i:03}: {e}")),
        }
    }
    m.check(bad.is_empty(), || {
        format!(
            "{} of {} fsynced files lost or damaged after kill -9:\n{}",
            bad.len(),
            ok_files.len(),
            bad.join("\n")
        )
    });
    m.check(
        m.ok(fs::read(m.path("before.bin")), "read before.bin") == before,
        || "before.bin damaged".into(),
    );

    // Files written after the last OK fsync may or may not exist, but the tree must be readable.
    let tree = m.ok(
        fybrk_tests::snapshot(&m.mnt),
        "walk the whole tree after the crash",
    );
    eprintln!("{} entries after recovery", tree.len());
    m.assert_verify_ok();

    // The folder keeps working: new writes, and another clean cycle.
    let after = Gen::new(6).bytes(300_000);
    m.ok(
        fybrk_tests::write_file(&m.path("after.bin"), &after),
        "write after recovery",
    );
    m.remount();
    m.check(
        m.ok(fs::read(m.path("after.bin")), "read after.bin") == after,
        || "after.bin".into(),
    );
    m.unmount();
    m.assert_verify_ok();
}
