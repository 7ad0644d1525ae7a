//! A full disk: the app gets ENOSPC, the daemon keeps serving, what was written before stays
//! intact, and once space is back writes resume (no remount) and the store verifies clean.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, File};
use std::io::{self, Write};
use std::process::Command;
use std::time::Duration;

use fybrk_tests::{describe, run_timeout, Gen, Mount, MountPointGuard};

fn sh(cmd: &mut Command) {
    let out = run_timeout(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
}

/// Writes `len` pseudo-random bytes in 1 MiB blocks, then fsyncs; the first error wins.
fn write_big(path: &std::path::Path, len: usize, seed: u64) -> io::Result<()> {
    let mut f = File::create(path)?;
    let mut g = Gen::new(seed);
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..len / block.len() {
        g.fill(&mut block);
        f.write_all(&block)?;
    }
    f.sync_all()
}

#[test]
fn full_disk_reports_enospc_and_loses_nothing() {
    let Some(mut m) = Mount::prepare() else {
        return;
    };
    // The state dir on a small tmpfs: the store fills it long before the file is written.
    sh(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "fybrk-test-full"])
        .arg(&m.state));
    let _tmpfs = MountPointGuard(m.state.clone());
    m.mount();

    let keep = Gen::new(7).bytes(3 << 20);
    fs::write(m.path("keep.bin"), &keep).expect("write keep.bin");
    File::open(m.path("keep.bin"))
        .and_then(|f| f.sync_all())
        .expect("fsync keep.bin");

    let err = write_big(&m.path("big.bin"), 200 << 20, 9)
        .expect_err("200 MiB cannot fit in a 64 MiB disk");
    m.check(err.raw_os_error() == Some(libc::ENOSPC), || {
        format!("expected ENOSPC, got {err:?}")
    });

    // Still serving, and what was there is intact.
    m.check(m.is_up(), || "the daemon died on a full disk".into());
    let back = fs::read(m.path("keep.bin")).expect("read keep.bin on a full disk");
    m.check(back == keep, || "keep.bin changed on a full disk".into());
    let status = m.run(&["status", "--json"], Duration::from_secs(10));
    m.check(status.status.success(), || {
        format!("status on a full disk\n{}", describe(&status))
    });

    // Space comes back: writes work again without a remount (RocksDB resumes by itself once
    // it sees free space), and nothing written before is harmed.
    sh(Command::new("mount")
        .args(["-o", "remount,size=512m"])
        .arg(&m.state));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let resumed = loop {
        match write_big(&m.path("after.bin"), 8 << 20, 11) {
            Ok(()) => break Ok(()),
            Err(e) if std::time::Instant::now() > deadline => break Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    m.check(resumed.is_ok(), || {
        format!("writes did not resume within 60 s of space coming back: {resumed:?}")
    });
    // The same bytes `write_big` wrote, 1 MiB block by block.
    let mut g = Gen::new(11);
    let after: Vec<u8> = (0..8)
        .flat_map(|_| {
            let mut block = vec![0u8; 1 << 20];
            g.fill(&mut block);
            block
        })
        .collect();
    m.check(fs::read(m.path("after.bin")).ok() == Some(after), || {
        "after.bin reads back wrong".into()
    });
    m.check(
        fs::read(m.path("keep.bin")).ok().as_ref() == Some(&keep),
        || "keep.bin changed after the disk was full".into(),
    );
    m.assert_verify_ok();

    // And a restart keeps all of it.
    m.unmount();
    m.mount();
    let back = fs::read(m.path("keep.bin")).expect("read keep.bin after remount");
    m.check(back == keep, || "keep.bin changed after a remount".into());
    m.assert_verify_ok();
    m.unmount();
}
