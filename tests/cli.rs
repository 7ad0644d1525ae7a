//! The command line's contract: refused mounts with clear messages, `status --json`, `unmount`,
//! signals, `--foreground`, `verify` noticing damage, and the config file.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fybrk_control::{MountReply, UnmountReply};
use fybrk_tests::{
    describe, is_mounted, pid_alive, run_timeout, signal, wait_until, write_file, Gen, Mount,
    MountPointGuard,
};

/// The command failed and its stderr names the problem (any of `needles`, case-insensitively).
fn assert_refused(m: &Mount, out: &Output, needles: &[&str], what: &str) {
    m.check(!out.status.success(), || {
        format!("{what}: expected a non-zero exit\n{}", describe(out))
    });
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    m.check(needles.iter().any(|n| err.contains(n)), || {
        format!(
            "{what}: stderr should mention one of {needles:?}\n{}",
            describe(out)
        )
    });
}

/// After a refused mount: no mount, and no daemon left behind.
fn assert_nothing_started(m: &Mount, mnt: &Path) {
    m.check(!is_mounted(mnt), || {
        format!("{} is mounted after a refused mount", mnt.display())
    });
    if let Ok(s) = fs::read_to_string(m.state.join("daemon.pid")) {
        if let Ok(pid) = s.trim().parse::<i32>() {
            let gone = wait_until(Duration::from_secs(5), || !pid_alive(pid));
            m.check(gone, || {
                format!("a daemon (pid {pid}) is running after a refused mount")
            });
        }
    }
}

#[test]
fn mount_on_a_missing_directory_is_refused() {
    let Some(mut m) = Mount::prepare() else {
        return;
    };
    fs::remove_dir(&m.mnt).unwrap();
    let _guard = MountPointGuard(m.mnt.clone());
    let out = m.try_mount();
    m.adopt_daemon();
    assert_refused(
        &m,
        &out,
        &["does not exist", "no such"],
        "mount on a missing dir",
    );
    assert_nothing_started(&m, &m.mnt);
}

#[test]
fn mount_on_a_non_empty_directory_is_refused() {
    let Some(mut m) = Mount::prepare() else {
        return;
    };
    write_file(&m.mnt.join("already-here"), b"keep me").unwrap();
    let _guard = MountPointGuard(m.mnt.clone());
    let out = m.try_mount();
    m.adopt_daemon();
    assert_refused(&m, &out, &["not empty"], "mount on a non-empty dir");
    assert_nothing_started(&m, &m.mnt);
    m.check(
        fs::read(m.mnt.join("already-here")).ok().as_deref() == Some(&b"keep me"[..]),
        || "the existing file was touched".into(),
    );
}

#[test]
fn second_mount_of_a_mounted_point_is_refused() {
    let Some(m) = Mount::start() else { return };
    let pid = m.pid();

    // Another folder (own state dir) onto the same, still empty, mount point.
    let Some(mut other) = Mount::prepare() else {
        return;
    };
    let out = fybrk_tests::run_timeout(other.cmd(&["mount"]).arg(&m.mnt), Duration::from_secs(60));
    other.adopt_daemon();
    if out.status.success() {
        // Unstack the unexpected second mount before failing, so the first can be unmounted.
        fybrk_tests::lazy_umount(&m.mnt);
    }
    assert_refused(
        &m,
        &out,
        &["already mounted"],
        "a second folder on a mounted point",
    );

    // The same folder again on the same point: already mounted (its state is locked, too).
    let out = m.try_mount();
    assert_refused(
        &m,
        &out,
        &["already mounted", "locked"],
        "the same folder mounted twice",
    );

    // The first mount is unharmed.
    m.check(pid_alive(pid), || "the first daemon died".into());
    m.check(
        fs::read_to_string(m.state.join("daemon.pid"))
            .ok()
            .map(|s| s.trim().to_string())
            == Some(pid.to_string()),
        || "daemon.pid was overwritten".into(),
    );
    m.ok(
        write_file(&m.path("still-works"), b"yes"),
        "write after refused mounts",
    );
    m.check(
        m.ok(fs::read(m.path("still-works")), "read") == b"yes",
        || "first mount after refused mounts".into(),
    );
}

#[test]
fn second_daemon_on_the_same_state_is_refused() {
    let Some(mut m) = Mount::start() else { return };
    let pid = m.pid();
    let mnt2 = m.root().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let _guard = MountPointGuard(mnt2.clone());
    let out = fybrk_tests::run_timeout(m.cmd(&["mount"]).arg(&mnt2), Duration::from_secs(60));
    m.adopt_daemon();
    assert_refused(
        &m,
        &out,
        &["locked"],
        "a second daemon on the same state dir",
    );
    m.check(!is_mounted(&mnt2), || {
        "the second mount point got mounted".into()
    });
    m.check(pid_alive(pid), || "the first daemon died".into());
    m.ok(write_file(&m.path("f"), b"ok"), "write to the first mount");
    m.remount();
    m.check(m.ok(fs::read(m.path("f")), "read") == b"ok", || {
        "data after the refused second daemon".into()
    });
}

#[test]
fn status_json_describes_the_folder() {
    let Some(mut m) = Mount::start() else { return };
    let mut g = Gen::new(21);
    m.ok(fs::create_dir_all(m.path("a/b")), "mkdir -p");
    let sizes = [
        ("a/one", 1000usize),
        ("a/b/two", 200_000),
        ("three", 0),
        ("a/four", 70_000),
    ];
    for (rel, len) in sizes {
        m.ok(
            write_file(&m.path(rel), &g.bytes(len)),
            format!("write {rel}"),
        );
    }
    let logical: u64 = sizes.iter().map(|s| s.1 as u64).sum();
    let st = m.wait_status("4 files", |v| v.files == 4 && v.logical_bytes == logical);

    // `status_json` parsed the output as the typed reply: `mount_point` is a string and
    // `files`, `dirs`, `logical_bytes`, `stored_bytes` and `chunks` are u64s, or it failed.
    let mp = &st.mount_point;
    let mp_canon = mp.canonicalize().unwrap_or_else(|_| mp.clone());
    m.check(mp_canon == m.mnt, || {
        format!("mount_point {mp:?}, want {}", m.mnt.display())
    });
    let dirs = st.dirs;
    // Whether the root counts as a directory is the product's choice.
    m.check(dirs == 2 || dirs == 3, || {
        format!("dirs = {dirs}, want 2 (a, a/b) or 3 with the root: {st:?}")
    });
    let stored = st.stored_bytes;
    // Random data does not dedup, and ciphertext is never smaller than its plaintext.
    m.check(stored >= logical, || {
        format!("stored_bytes {stored} < logical_bytes {logical} for random data: {st:?}")
    });
    m.check(stored < logical * 2 + 1024 * 1024, || {
        format!("stored_bytes {stored} far above logical {logical}: {st:?}")
    });
    let chunks = st.chunks;
    m.check(chunks >= 3, || {
        format!("chunks = {chunks} for three non-empty files of random data: {st:?}")
    });
    let ratio = st.dedup_ratio;
    m.check(ratio > 0.5 && ratio <= 1.05, || {
        format!("dedup_ratio {ratio} with no duplicate data: {st:?}")
    });

    // Removing a file shows up.
    m.ok(fs::remove_file(m.path("a/one")), "unlink");
    m.wait_status("3 files after unlink", |v| {
        v.files == 3 && v.logical_bytes == logical - 1000
    });

    // Without a daemon, status fails.
    m.unmount();
    let out = m.run(&["status", "--json"], Duration::from_secs(30));
    m.check(!out.status.success(), || {
        format!("status without a daemon should fail\n{}", describe(&out))
    });
}

#[test]
fn unmount_leaves_an_ordinary_empty_directory() {
    let Some(mut m) = Mount::start() else { return };
    m.ok(write_file(&m.path("inside"), b"x"), "write");
    let pid = m.pid();
    m.unmount();
    m.check(!pid_alive(pid), || "daemon still alive".into());
    m.check(m.mnt.is_dir(), || "the mount point is gone".into());
    let left: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    m.check(left.is_empty(), || {
        format!("the unmounted mount point holds {left:?}")
    });
    // It can be used as an ordinary directory, and mounted again afterwards once empty.
    write_file(&m.mnt.join("native"), b"n").unwrap();
    fs::remove_file(m.mnt.join("native")).unwrap();
    m.mount();
    m.check(m.ok(fs::read(m.path("inside")), "read") == b"x", || {
        "data after unmount + mount".into()
    });

    // The same with --json: what a script reads.
    let pid = m.pid();
    let unmount_json = |m: &Mount| -> UnmountReply {
        let out = run_timeout(
            m.cmd(&["unmount", "--json"]).arg(&m.mnt),
            Duration::from_secs(60),
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| m.fail(&format!("unmount --json ({e}): {}", describe(&out))))
    };
    let r = unmount_json(&m);
    m.check(r.pid == pid as u32 && r.mount_point == m.mnt, || {
        format!("unmount --json of daemon {pid}: {r:?}")
    });
    m.forget_dead_daemon();
    let out = m.try_mount_with(&["--json"]);
    let r: MountReply = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| m.fail(&format!("mount --json ({e}): {}", describe(&out))));
    m.adopt_daemon();
    m.check(
        r.mount_point == m.mnt && r.state_dir == m.state && pid_alive(r.pid as i32),
        || format!("mount --json: {r:?}"),
    );
    let r2 = unmount_json(&m);
    m.check(r2.pid == r.pid, || format!("{r2:?} after {r:?}"));
}

fn signal_unmounts_cleanly(sig: i32) {
    let Some(mut m) = Mount::start() else { return };
    let data = Gen::new(sig as u64).bytes(500_000);
    m.ok(write_file(&m.path("f"), &data), "write");
    let pid = m.pid();
    m.ok(signal(pid, sig), "signal the daemon");
    let unmounted = wait_until(Duration::from_secs(5), || !is_mounted(&m.mnt));
    m.check(unmounted, || {
        format!("still mounted 5 s after signal {sig}")
    });
    let exited = wait_until(Duration::from_secs(10), || !pid_alive(pid));
    m.check(exited, || {
        format!("daemon still running 10 s after signal {sig}")
    });
    m.forget_dead_daemon();
    m.check(fs::read_dir(&m.mnt).unwrap().next().is_none(), || {
        "mount point not empty after the signal".into()
    });
    m.mount();
    m.check(m.ok(fs::read(m.path("f")), "read") == data, || {
        "data after a signal shutdown".into()
    });
    m.unmount();
    m.assert_verify_ok();
}

#[test]
fn sigterm_unmounts_cleanly() {
    signal_unmounts_cleanly(libc::SIGTERM);
}

#[test]
fn sigint_unmounts_cleanly() {
    signal_unmounts_cleanly(libc::SIGINT);
}

/// Kills a child on drop, for foreground daemons in failing tests.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn foreground_mount_stays_attached_until_sigint() {
    let Some(m) = Mount::prepare() else { return };
    let _guard = MountPointGuard(m.mnt.clone());
    let log = File::create(m.root().join("foreground.out")).unwrap();
    let mut cmd = m.cmd(&["mount", "--foreground"]);
    cmd.arg(&m.mnt)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut child = ChildGuard(cmd.spawn().expect("spawn fybrk mount --foreground"));
    let output = || fs::read_to_string(m.root().join("foreground.out")).unwrap_or_default();
    let up = wait_until(Duration::from_secs(60), || {
        is_mounted(&m.mnt) || child.0.try_wait().ok().flatten().is_some()
    });
    m.check(up && is_mounted(&m.mnt), || {
        format!(
            "foreground mount never came up; status {:?}; output:\n{}",
            child.0.try_wait(),
            output()
        )
    });
    m.check(child.0.try_wait().unwrap().is_none(), || {
        "the foreground process exited while mounted".into()
    });

    m.ok(write_file(&m.path("f"), b"foreground"), "write");
    m.check(m.ok(fs::read(m.path("f")), "read") == b"foreground", || {
        "read".into()
    });
    let st = m.status_json();
    m.check(st.files == 1, || {
        format!("status of a foreground daemon: {st:?}")
    });

    m.ok(signal(child.0.id() as i32, libc::SIGINT), "SIGINT");
    let exited = wait_until(Duration::from_secs(15), || {
        child.0.try_wait().ok().flatten().is_some()
    });
    m.check(exited, || {
        format!(
            "foreground daemon still running 15 s after SIGINT; output:\n{}",
            output()
        )
    });
    let status = child.0.wait().unwrap();
    m.check(!is_mounted(&m.mnt), || {
        "still mounted after the foreground daemon exited".into()
    });
    m.check(status.success(), || {
        format!(
            "foreground daemon exited with {status} on SIGINT; output:\n{}",
            output()
        )
    });
}

fn files_with_ext(dir: &Path, exts: &[&str], out: &mut Vec<(u64, std::path::PathBuf)>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            files_with_ext(&e.path(), exts, out);
        } else if e
            .path()
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| exts.contains(&x))
        {
            out.push((md.len(), e.path()));
        }
    }
}

#[test]
fn verify_passes_on_a_clean_store_and_fails_on_damage() {
    let Some(mut m) = Mount::start() else { return };
    // More than a default memtable holds, so RocksDB writes table/blob files, not only its log.
    let data = Gen::new(31).bytes(128 * 1024 * 1024);
    let mut f = m.ok(File::create(m.path("payload.bin")), "create");
    m.ok(f.write_all(&data), "write payload");
    m.ok(f.sync_all(), "fsync");
    drop(f);
    drop(data);
    m.assert_verify_ok();
    // While a verify runs, status lists it with how far it is (what the progress line of a
    // command on a terminal draws).
    let mut seen = None;
    for _ in 0..5 {
        let mut run = m.cmd(&["verify"]);
        let mut child = run.stdout(Stdio::null()).spawn().unwrap();
        while child.try_wait().unwrap().is_none() {
            let st = m.status_json();
            if let Some(op) = st.operations.iter().find(|o| o.what == "verify") {
                seen = Some(op.clone());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if seen.is_some() {
            break;
        }
    }
    let op = seen.unwrap_or_else(|| m.fail("status never listed the running verify"));
    m.check(op.total >= 1000 && op.done <= op.total, || {
        format!("128 MiB is well over 1,000 chunks (64 KiB on average): {op:?}")
    });
    m.check(m.status_json().operations.is_empty(), || {
        "a finished verify is no longer listed".into()
    });
    m.unmount();
    m.assert_verify_ok();

    let mut candidates = Vec::new();
    files_with_ext(
        &fybrk_tests::store_dir(&m.state),
        &["blob", "sst", "chunks"],
        &mut candidates,
    );
    candidates.sort();
    let Some((len, victim)) = candidates.pop() else {
        let mut all = Vec::new();
        files_with_ext(&m.state, &["blob", "sst", "log", "chunks"], &mut all);
        m.fail(&format!(
            "no .blob/.sst files under STATE/db after 128 MiB written and an unmount: {all:?}"
        ));
    };
    // Flip 4 KiB in the middle of the biggest data file: chunk ciphertext lives there.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&victim)
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let at = len / 2;
    f.read_exact_at(&mut buf, at).unwrap();
    buf.iter_mut().for_each(|b| *b ^= 0x5a);
    f.write_all_at(&buf, at).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let out = m.verify();
    m.check(!out.status.success(), || {
        format!(
            "verify exited 0 after {} was damaged at {at}\n{}",
            victim.display(),
            describe(&out)
        )
    });
    eprintln!(
        "verify on damage ({}):\n{}",
        victim.display(),
        describe(&out)
    );
}

#[test]
fn fybrk_state_env_selects_the_state_dir() {
    let Some(mut m) = Mount::start() else { return };
    m.ok(write_file(&m.path("f"), b"x"), "write");
    // status through FYBRK_STATE instead of --state.
    let mut c = Command::new(fybrk_tests::fybrk_bin());
    c.env("FYBRK_STATE", &m.state).args(["status", "--json"]);
    let out = fybrk_tests::run_timeout(&mut c, Duration::from_secs(30));
    m.check(out.status.success(), || {
        format!("status via FYBRK_STATE failed\n{}", describe(&out))
    });
    let v: fybrk_control::StatusReply = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| m.fail(&format!("bad JSON ({e}): {}", describe(&out))));
    m.check(v.files == 1, || format!("status via FYBRK_STATE: {v:?}"));
    m.unmount();
}

#[test]
fn device_identity_is_made_once_private_and_stable() {
    use std::os::unix::fs::PermissionsExt;
    let Some(mut m) = Mount::prepare() else {
        return;
    };
    m.mount_with(&["--name", "test-laptop"]);
    let key = m.state.join("device.key");
    let mode = fs::metadata(&key)
        .expect("device.key exists")
        .permissions()
        .mode()
        & 0o777;
    m.check(mode == 0o600, || {
        format!("device.key has mode {mode:o}, want 600")
    });
    let first = m.status_json();
    let id = first.device_id.clone();
    // 8 groups of 7 base32 characters: 52 data + 4 check characters.
    m.check(id.len() == 8 * 7 + 7 && id.split('-').count() == 8, || {
        format!("device id {id:?}")
    });
    m.check(first.device_name == "test-laptop", || {
        format!("name in {first:?}")
    });
    m.unmount();
    m.mount();
    let again = m.status_json();
    m.check(again.device_id == id, || {
        format!("id changed: {id} -> {}", again.device_id)
    });
    m.check(again.device_name == "test-laptop", || {
        format!("name not remembered: {again:?}")
    });
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// The config file
// ---------------------------------------------------------------------------------------------

/// `fybrk rendezvous` on a free loopback port, stopped on drop.
struct RendezvousServer {
    _child: ChildGuard,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl RendezvousServer {
    fn start() -> RendezvousServer {
        use std::io::BufRead;
        let mut child = Command::new(fybrk_tests::fybrk_bin())
            .args(["rendezvous", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fybrk rendezvous");
        let out = child.stdout.take().expect("rendezvous stdout");
        let guard = ChildGuard(child);
        // "fybrk rendezvous: serving on UDP 127.0.0.1:PORT"
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read the rendezvous server's first line");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|a| a.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("fybrk rendezvous printed {line:?}"))
            .to_owned();
        RendezvousServer {
            _child: guard,
            addr,
        }
    }
}

/// The daemon log from byte `from` on.
fn log_since(m: &Mount, from: u64) -> String {
    let log = fs::read(m.state.join("daemon.log")).unwrap_or_default();
    String::from_utf8_lossy(&log[(from as usize).min(log.len())..]).into_owned()
}

fn log_len(m: &Mount) -> u64 {
    fs::metadata(m.state.join("daemon.log")).map_or(0, |md| md.len())
}

/// Waits until the daemon's log (from byte `from`) says it registered at a rendezvous server.
fn assert_registers(m: &Mount, from: u64, what: &str) {
    let registered = wait_until(Duration::from_secs(15), || {
        log_since(m, from).contains("registered at the rendezvous server")
    });
    m.check(registered, || {
        format!("{what}: the daemon never registered at the rendezvous server")
    });
}

/// A config file that only points STUN at a port where nothing answers: no test asks a public
/// STUN server.
const NO_STUN: &str = "stun = [\"127.0.0.1:9\"]\n";

#[test]
fn a_malformed_config_file_stops_mount_before_anything_is_mounted() {
    let Some(mut m) = Mount::prepare() else {
        return;
    };
    let _guard = MountPointGuard(m.mnt.clone());
    let default = m.state.join("config.toml");
    let default_s = default.display().to_string();
    // (file contents, what the error must say besides the file name)
    let cases: &[(&str, &[&str])] = &[
        ("name = \"a\"\nrendezvous = \n", &[":2:14:"]),
        (
            "listen = \"127.0.0.1:0\"\nrendevous = \"127.0.0.1:1\"\n",
            &[":2:1:", "unknown key `rendevous`", "`rendezvous`", "`turn`"],
        ),
        (
            "turn = \"turn:127.0.0.1:3478?pass=hunter2\"\n",
            &[":1:8: turn:", "user= is missing"],
        ),
        (
            "\nlisten = \"localhost:22100\"\n",
            &[":2:10: listen:", "not an IP:PORT"],
        ),
        ("rendezvous = \"nowhere\"\n", &[":1:14: rendezvous:"]),
    ];
    for (text, needles) in cases {
        fs::write(&default, text).unwrap();
        let out = m.try_mount();
        m.adopt_daemon();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        m.check(!out.status.success(), || {
            format!("mount with config {text:?} succeeded\n{}", describe(&out))
        });
        for needle in std::iter::once(&default_s.as_str()).chain(needles.iter()) {
            m.check(err.contains(needle), || {
                format!(
                    "config {text:?}: stderr should contain {needle:?}\n{}",
                    describe(&out)
                )
            });
        }
        m.check(!err.contains("hunter2"), || {
            format!("the error shows the TURN password\n{}", describe(&out))
        });
        assert_nothing_started(&m, &m.mnt);
    }

    // --config FILE: that file, not the state dir's, and it must exist.
    fs::write(&default, "name = \"fine\"\n").unwrap();
    let named = m.root().join("other.toml");
    let named_s = named.display().to_string();
    let out = m.try_mount_with(&["--config", &named_s]);
    m.adopt_daemon();
    assert_refused(
        &m,
        &out,
        &["does not exist"],
        "--config naming a missing file",
    );
    m.check(
        String::from_utf8_lossy(&out.stderr).contains(&named_s),
        || format!("the error should name {named_s}\n{}", describe(&out)),
    );
    assert_nothing_started(&m, &m.mnt);
    fs::write(&named, "turn = 5\n").unwrap();
    let out = fybrk_tests::run_timeout(
        m.cmd(&["mount"]).arg(&m.mnt).env("FYBRK_CONFIG", &named),
        Duration::from_secs(60),
    );
    m.adopt_daemon();
    m.check(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains(&format!("{named_s}:1:8: turn:")),
        || format!("FYBRK_CONFIG naming a bad file\n{}", describe(&out)),
    );
    assert_nothing_started(&m, &m.mnt);
}

#[test]
fn the_config_file_sets_the_rendezvous_server_listen_address_and_name() {
    let Some(mut m) = Mount::prepare() else {
        return;
    };
    let rdv = RendezvousServer::start();
    let config = m.state.join("config.toml");
    fs::write(
        &config,
        format!(
            "# written by the test\nlisten = \"127.0.0.1:0\"\nname = \"from-config\"\n\
             rendezvous = \"{}\"\n{NO_STUN}\
             turn = \"turn:127.0.0.1:9?user=u&pass=file-secret\"\n",
            rdv.addr
        ),
    )
    .unwrap();
    m.mount();
    assert_registers(&m, 0, "rendezvous from the config file");
    let st = m.status_json();
    m.check(st.rendezvous.as_deref() == Some(rdv.addr.as_str()), || {
        format!(
            "status should show the rendezvous server {}: {st:?}",
            rdv.addr
        )
    });
    m.check(
        st.config_file.as_ref().map(|c| c.display().to_string())
            == Some(config.display().to_string()),
        || format!("status should name the config file: {st:?}"),
    );
    m.check(st.device_name == "from-config", || {
        format!("name from the config file: {st:?}")
    });
    m.check(
        st.network.listen_addr.to_string().starts_with("127.0.0.1:"),
        || format!("listen address from the config file: {st:?}"),
    );
    let out = m.run(&["status"], Duration::from_secs(30));
    m.check(
        String::from_utf8_lossy(&out.stdout).contains(&format!("rendezvous    {}", rdv.addr)),
        || {
            format!(
                "`fybrk status` should show the rendezvous server\n{}",
                describe(&out)
            )
        },
    );
    // The daemon read the TURN password from the file itself: it is not on its command line.
    let cmdline = fs::read(format!("/proc/{}/cmdline", m.pid())).unwrap_or_default();
    m.check(
        !String::from_utf8_lossy(&cmdline).contains("file-secret"),
        || "the TURN password from the config file is in the daemon's command line".into(),
    );
    m.unmount();
}

#[test]
fn the_command_line_and_the_environment_win_over_the_config_file() {
    let Some(mut m) = Mount::prepare() else {
        return;
    };
    let rdv = RendezvousServer::start();
    // Nothing serves 127.0.0.1:1: only an override makes the daemon register.
    fs::write(
        m.state.join("config.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nname = \"from-config\"\nrendezvous = \"127.0.0.1:1\"\n\
             {NO_STUN}"
        ),
    )
    .unwrap();

    // Flags.
    let from = log_len(&m);
    m.mount_with(&[
        "--rendezvous",
        &rdv.addr,
        "--name",
        "from-flag",
        "--turn",
        "turn:127.0.0.1:9?user=u&pass=flag-secret",
    ]);
    assert_registers(&m, from, "--rendezvous over the config file");
    let st = m.status_json();
    m.check(st.rendezvous.as_deref() == Some(rdv.addr.as_str()), || {
        format!("--rendezvous should win over the file: {st:?}")
    });
    m.check(st.device_name == "from-flag", || {
        format!("--name should win over the file: {st:?}")
    });
    // The daemon child got the --turn password through its environment, not its arguments.
    let cmdline = fs::read(format!("/proc/{}/cmdline", m.pid())).unwrap_or_default();
    m.check(
        !String::from_utf8_lossy(&cmdline).contains("flag-secret"),
        || "the --turn password is in the daemon's command line".into(),
    );
    m.unmount();

    // The environment (with the name now remembered, the file's name wins over that).
    let from = log_len(&m);
    let out = fybrk_tests::run_timeout(
        m.cmd(&["mount"])
            .arg(&m.mnt)
            .env("FYBRK_RENDEZVOUS", &rdv.addr),
        Duration::from_secs(60),
    );
    m.adopt_daemon();
    m.check(out.status.success() && is_mounted(&m.mnt), || {
        format!("mount with FYBRK_RENDEZVOUS failed\n{}", describe(&out))
    });
    assert_registers(&m, from, "FYBRK_RENDEZVOUS over the config file");
    let st = m.status_json();
    m.check(st.rendezvous.as_deref() == Some(rdv.addr.as_str()), || {
        format!("FYBRK_RENDEZVOUS should win over the file: {st:?}")
    });
    m.check(st.device_name == "from-config", || {
        format!("the file's name should apply without --name: {st:?}")
    });
    let out = m.run(
        &["unmount", m.mnt.to_str().unwrap()],
        Duration::from_secs(60),
    );
    m.check(out.status.success() && !is_mounted(&m.mnt), || {
        format!("unmount failed\n{}", describe(&out))
    });
}
