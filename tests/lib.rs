//! Harness for fybrk's real-mount integration tests.
//!
//! Every test in `tests/*.rs` drives the real `fybrk` binary against a real FUSE mount:
//! `fybrk --state STATE mount MNT`, plain file operations through `MNT`, then `unmount`,
//! `status --json` and `verify`. This crate owns only the harness:
//!
//! - [`Mount`]: a temp dir holding `state/` and `mnt/`, a running daemon, and a `Drop` that never
//!   leaves a stale mount behind (`fybrk unmount`, then `umount -l`, then SIGKILL).
//! - [`ready`] / [`have_tool`]: the skip rule. Real mounts need root and `/dev/fuse`; without them a
//!   test prints a loud `SKIPPED` line and returns, unless `CI` is set, where it fails instead
//!   (CI never skips).
//! - A panic hook that appends the tail of `STATE/daemon.log` of every mount the panicking thread
//!   holds, so any failed `assert!` or `unwrap()` shows what the daemon said.
//! - Small helpers shared by the tests: a seeded generator, tree snapshots, errno checks.
//!
//! The binary is `FYBRK_BIN` if set, else `target/release/fybrk` beside the test executable. Build
//! it first: `cargo build --release -p fybrk`. Set `FYBRK_KEEP_FAILED=1` to keep the temp dir
//! (state and log) of a failed test.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use fybrk_control::{InviteShown, PeerInfo, PeerStatus, PeersReply, StatusReply};

/// How long `fybrk mount` may take to report a ready mount.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `fybrk unmount` may take; it flushes and stops the daemon (after a multi-GiB write,
/// commits may still be in flight).
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the daemon may linger after a successful unmount before we call it a bug.
const DAEMON_EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// `verify` re-reads every chunk; the big-file tests store several GiB.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(900);
/// Lines of `daemon.log` appended to failures.
const LOG_TAIL_LINES: usize = 80;

// ---------------------------------------------------------------------------------------------
// Skip rule
// ---------------------------------------------------------------------------------------------

/// The store directory of the folder in state dir `state` (`STATE/db-<folder id>`; exactly one).
pub fn store_dir(state: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(state)
        .unwrap_or_else(|e| panic!("read {}: {e}", state.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("db-"))
        })
        .collect();
    assert_eq!(dirs.len(), 1, "expected one STATE/db-* dir: {dirs:?}");
    dirs.into_iter().next().expect("one dir")
}

/// True when `CI` is set (to anything but empty, `0` or `false`): nothing may be skipped then.
pub fn in_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")),
        Err(_) => false,
    }
}

/// Writes straight to fd 2, past libtest's output capture, so a skip is seen even on success.
fn loud(msg: &str) {
    let line = format!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
    let _ = io::stderr().write_all(line.as_bytes());
}

/// Whether real-mount tests can run here. Outside CI a missing root or `/dev/fuse` prints a loud
/// `SKIPPED` line and returns false; in CI it panics.
pub fn ready() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    let why = format!("root: {root}, /dev/fuse present: {fuse}");
    if in_ci() {
        panic!("CI must run the real-mount tests, but this machine cannot ({why})");
    }
    loud(&format!(
        "SKIPPED: needs root + /dev/fuse; runs in CI ({why}; test {})",
        current_test_name()
    ));
    false
}

/// Whether the external `tool` is on PATH. Missing outside CI: loud skip. Missing in CI: panic.
pub fn have_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if in_ci() {
        panic!(
            "CI must have `{tool}` installed (test {})",
            current_test_name()
        );
    }
    loud(&format!(
        "SKIPPED: `{tool}` is not installed; runs in CI (test {})",
        current_test_name()
    ));
    false
}

fn current_test_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// The `fybrk` binary: `FYBRK_BIN`, else `target/release/fybrk` beside this test executable
/// (which lives in `target/release/deps/`).
pub fn fybrk_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FYBRK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test exe has a parent dir");
    let profile = if deps.file_name().map(|n| n == "deps").unwrap_or(false) {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    profile.join("fybrk")
}

fn checked_bin() -> PathBuf {
    let bin = fybrk_bin();
    assert!(
        bin.is_file(),
        "fybrk binary not found at {}: build it with `cargo build --release -p fybrk` or set FYBRK_BIN",
        bin.display()
    );
    bin
}

// ---------------------------------------------------------------------------------------------
// Running commands with a deadline
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` to completion or kills it after `timeout`. Output goes through temp files, not
/// pipes: a daemon forked by `fybrk mount` may inherit stdout/stderr and keep a pipe open forever.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut out = tempfile::tempfile().expect("tempfile");
    let mut err = tempfile::tempfile().expect("tempfile");
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(err.try_clone().expect("dup")))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break s,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                let mut e = String::new();
                let _ = err.seek(SeekFrom::Start(0));
                let _ = err.read_to_string(&mut e);
                panic!("{desc} did not finish within {timeout:?}; stderr so far:\n{e}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    out.seek(SeekFrom::Start(0)).expect("seek");
    out.read_to_end(&mut stdout).expect("read stdout");
    err.seek(SeekFrom::Start(0)).expect("seek");
    err.read_to_end(&mut stderr).expect("read stderr");
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Human summary of a finished command for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Mount table and processes
// ---------------------------------------------------------------------------------------------

/// Undoes the octal escapes (`\040` for space, ...) of /proc/self/mounts.
fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The line of /proc/self/mounts for `path`, if it is a mount point (last one wins).
pub fn mount_entry(path: &Path) -> Option<String> {
    let want = path.to_string_lossy().into_owned();
    let table = fs::read_to_string("/proc/self/mounts").ok()?;
    table
        .lines()
        .rfind(|l| l.split(' ').nth(1).map(unescape_mount_field).as_deref() == Some(want.as_str()))
        .map(str::to_string)
}

/// Whether `path` appears as a mount point in /proc/self/mounts.
pub fn is_mounted(path: &Path) -> bool {
    mount_entry(path).is_some()
}

/// Waits up to `timeout` for `cond`; true if it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Alive = /proc/PID exists and is not a zombie (the daemon is not our child; once its parent
/// `fybrk mount` exited, whoever adopted it may reap it late).
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

/// VmRSS of `pid` in bytes, if readable.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) -> io::Result<()> {
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `umount -l PATH` (lazy: works on a dead FUSE mount whose daemon is gone).
pub fn lazy_umount(path: &Path) {
    let _ = run_timeout(
        Command::new("umount").arg("-l").arg(path),
        Duration::from_secs(30),
    );
    if is_mounted(path) && Path::new("/usr/bin/fusermount3").exists() {
        let _ = run_timeout(
            Command::new("fusermount3").arg("-u").arg("-z").arg(path),
            Duration::from_secs(30),
        );
    }
}

/// For a fybrk command run in the host's own network namespace: discovery that leaves the
/// machine is off, no DHT (a paired pair would ask the public bootstrap nodes) and no LAN
/// announcements.
pub fn host_local(c: &mut Command) -> &mut Command {
    c.env("FYBRK_NO_DHT", "1")
        .env("FYBRK_NO_LAN_DISCOVERY", "1")
}

/// Unmounts `path` lazily on drop if it is mounted: for mount points a test did not expect to
/// become mounts (e.g. a second mount that should have been refused).
pub struct MountPointGuard(pub PathBuf);

impl Drop for MountPointGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            lazy_umount(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Failure context: daemon log tails
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// State dirs of the mounts alive on this thread, for the panic hook.
    static ACTIVE_STATES: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

const LOG_MARK: &str = "--- tail of ";

/// The last `lines` lines of `STATE/daemon.log`.
pub fn log_tail_of(state: &Path, lines: usize) -> String {
    let path = state.join("daemon.log");
    match fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            format!(
                "{LOG_MARK}{} ({} lines total)\n{}\n--- end of log",
                path.display(),
                all.len(),
                all[from..].join("\n")
            )
        }
        Err(e) => format!("{LOG_MARK}{}: unreadable: {e}", path.display()),
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            prev(info);
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if msg.contains(LOG_MARK) {
                return; // the message already carries the log
            }
            let states = ACTIVE_STATES
                .try_with(|s| s.borrow().clone())
                .unwrap_or_default();
            for state in states {
                eprintln!("{}", log_tail_of(&state, LOG_TAIL_LINES));
            }
        }));
    });
}

// ---------------------------------------------------------------------------------------------
// Mount
// ---------------------------------------------------------------------------------------------

/// One fybrk folder: a temp dir with `state/` and `mnt/`, and (while mounted) its daemon.
pub struct Mount {
    dir: Option<tempfile::TempDir>,
    /// The state dir passed as `--state`.
    pub state: PathBuf,
    /// The mount point.
    pub mnt: PathBuf,
    /// The daemon's pid while mounted.
    pid: Option<i32>,
    /// Every daemon pid seen, so `Drop` can make sure none outlives the test.
    pids_seen: Vec<i32>,
}

impl Mount {
    /// A fresh temp dir with empty `state/` and `mnt/`, not mounted yet. `None` when real mounts
    /// cannot run here (see [`ready`]).
    pub fn prepare() -> Option<Mount> {
        if !ready() {
            return None;
        }
        checked_bin();
        install_panic_hook();
        let base = std::env::var_os("FYBRK_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("fybrk-test-")
            .tempdir_in(&base)
            .expect("create temp dir");
        // Canonical, so it matches /proc/self/mounts and `status` output.
        let root = dir.path().canonicalize().expect("canonicalize temp dir");
        let state = root.join("state");
        let mnt = root.join("mnt");
        fs::create_dir(&state).expect("mkdir state");
        fs::create_dir(&mnt).expect("mkdir mnt");
        ACTIVE_STATES.with(|s| s.borrow_mut().push(state.clone()));
        Some(Mount {
            dir: Some(dir),
            state,
            mnt,
            pid: None,
            pids_seen: Vec::new(),
        })
    }

    /// [`Mount::prepare`] and mount. `None` when real mounts cannot run here.
    pub fn start() -> Option<Mount> {
        let mut m = Mount::prepare()?;
        m.mount();
        Some(m)
    }

    /// The temp dir holding `state/` and `mnt/`; tests may put scratch files beside them.
    pub fn root(&self) -> &Path {
        self.state.parent().expect("state has a parent")
    }

    /// `MNT/rel`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    /// A `fybrk --state STATE ARGS...` command, not yet run, kept off the network outside
    /// the machine ([`host_local`]).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(checked_bin());
        c.arg("--state").arg(&self.state).args(args);
        host_local(&mut c);
        c
    }

    /// Runs `fybrk --state STATE ARGS...` with a deadline.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Output {
        run_timeout(&mut self.cmd(args), timeout)
    }

    /// Runs `fybrk --state STATE mount MNT` without judging the outcome.
    pub fn try_mount(&self) -> Output {
        self.try_mount_with(&[])
    }

    /// Runs `fybrk --state STATE mount MNT EXTRA...` without judging the outcome.
    pub fn try_mount_with(&self, extra: &[&str]) -> Output {
        run_timeout(
            self.cmd(&["mount"]).arg(&self.mnt).args(extra),
            MOUNT_TIMEOUT,
        )
    }

    /// Mounts and checks that the contract holds: exit 0, MNT in the mount table, a live daemon
    /// whose pid is in `STATE/daemon.pid`.
    pub fn mount(&mut self) {
        self.mount_with(&[]);
    }

    /// [`Mount::mount`] with extra `mount` options, e.g. `["--name", "laptop"]`.
    pub fn mount_with(&mut self, extra: &[&str]) {
        assert!(self.pid.is_none(), "mount() while already mounted");
        let out = self.try_mount_with(extra);
        if !out.status.success() {
            self.fail(&format!("`fybrk mount` failed\n{}", describe(&out)));
        }
        if !is_mounted(&self.mnt) {
            self.fail(&format!(
                "`fybrk mount` exited 0 but {} is not in /proc/self/mounts\n{}",
                self.mnt.display(),
                describe(&out)
            ));
        }
        let pid = self
            .read_pid_file()
            .unwrap_or_else(|e| self.fail(&format!("after mount: {e}")));
        if !pid_alive(pid) {
            self.fail(&format!("daemon pid {pid} from daemon.pid is not running"));
        }
        self.pid = Some(pid);
        self.pids_seen.push(pid);
    }

    fn read_pid_file(&self) -> Result<i32, String> {
        let p = self.state.join("daemon.pid");
        let s = fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        s.trim()
            .parse()
            .map_err(|e| format!("{} holds {s:?}: {e}", p.display()))
    }

    /// Records the pid in `STATE/daemon.pid`, if any, so `Drop` makes sure that daemon is gone
    /// too (for daemons started outside [`Mount::mount`], e.g. a mount that should have failed).
    pub fn adopt_daemon(&mut self) {
        if let Ok(pid) = self.read_pid_file() {
            if !self.pids_seen.contains(&pid) {
                self.pids_seen.push(pid);
            }
        }
    }

    /// The running daemon's pid. Panics if not mounted.
    pub fn pid(&self) -> i32 {
        self.pid.unwrap_or_else(|| self.fail("pid(): not mounted"))
    }

    /// Whether this harness believes the folder is mounted.
    pub fn is_up(&self) -> bool {
        self.pid.is_some()
    }

    /// `fybrk unmount MNT`; checks exit 0, the mount is gone and the daemon exits.
    pub fn unmount(&mut self) {
        let pid = self.pid();
        let out = run_timeout(self.cmd(&["unmount"]).arg(&self.mnt), UNMOUNT_TIMEOUT);
        if !out.status.success() {
            self.fail(&format!("`fybrk unmount` failed\n{}", describe(&out)));
        }
        if is_mounted(&self.mnt) {
            self.fail(&format!(
                "`fybrk unmount` exited 0 but {} is still mounted",
                self.mnt.display()
            ));
        }
        if !wait_until(DAEMON_EXIT_TIMEOUT, || !pid_alive(pid)) {
            self.fail(&format!(
                "daemon {pid} still running {DAEMON_EXIT_TIMEOUT:?} after a successful unmount"
            ));
        }
        self.pid = None;
    }

    /// Unmount, then mount again with the same state dir.
    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// The daemon died or was killed: clear the dead mount so the state can be mounted again.
    pub fn forget_dead_daemon(&mut self) {
        if let Some(pid) = self.pid.take() {
            if !wait_until(Duration::from_secs(10), || !pid_alive(pid)) {
                self.fail(&format!("daemon {pid} is still alive"));
            }
        }
        if is_mounted(&self.mnt) {
            lazy_umount(&self.mnt);
        }
        if is_mounted(&self.mnt) {
            self.fail("dead mount could not be removed with umount -l / fusermount3 -u -z");
        }
    }

    /// SIGKILL the daemon, wait for it to die and clear the dead mount.
    pub fn kill9(&mut self) {
        let pid = self.pid();
        signal(pid, libc::SIGKILL).unwrap_or_else(|e| self.fail(&format!("kill -9 {pid}: {e}")));
        self.forget_dead_daemon();
    }

    /// `fybrk pair --yes --no-wait --json` (the QR code to a file in the mount's root): the
    /// invitation's payload, for `pair-with` on another device.
    pub fn invite_payload(&self) -> String {
        let png = self.root().join("invite.png");
        let out = self.run(
            &[
                "pair",
                "--yes",
                "--no-wait",
                "--json",
                "--png",
                png.to_str().expect("utf-8 path"),
            ],
            Duration::from_secs(30),
        );
        if !out.status.success() {
            self.fail(&format!("pair failed\n{}", describe(&out)));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let v: fybrk_control::InviteShown =
            serde_json::from_str(line.lines().next().unwrap_or_default())
                .unwrap_or_else(|e| self.fail(&format!("pair printed {line:?}: {e}")));
        v.payload
    }

    /// `fybrk status --json`, parsed as the protocol's [`StatusReply`]. Fails on a non-zero
    /// exit, bad JSON, or a missing or mistyped field.
    pub fn status_json(&self) -> StatusReply {
        let out = self.run(&["status", "--json"], Duration::from_secs(30));
        if !out.status.success() {
            self.fail(&format!("`fybrk status --json` failed\n{}", describe(&out)));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            self.fail(&format!(
                "status --json is not one status object ({e}):\n{text}"
            ))
        })
    }

    /// Polls `status --json` until `pred` holds (commits after close may land a moment later).
    pub fn wait_status(
        &self,
        what: &str,
        mut pred: impl FnMut(&StatusReply) -> bool,
    ) -> StatusReply {
        let start = Instant::now();
        loop {
            let v = self.status_json();
            if pred(&v) {
                return v;
            }
            if start.elapsed() > Duration::from_secs(15) {
                self.fail(&format!("status never showed {what}; last: {v:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `fybrk verify` (works with or without the daemon).
    pub fn verify(&self) -> Output {
        self.run(&["verify"], VERIFY_TIMEOUT)
    }

    /// `verify` must exit 0.
    pub fn assert_verify_ok(&self) {
        let out = self.verify();
        if !out.status.success() {
            self.fail(&format!(
                "`fybrk verify` reported damage or failed\n{}",
                describe(&out)
            ));
        }
    }

    /// The tail of this mount's daemon log.
    pub fn log_tail(&self) -> String {
        log_tail_of(&self.state, LOG_TAIL_LINES)
    }

    /// Panics with `msg` and the daemon log tail.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.log_tail())
    }

    /// `assert!` with the daemon log in the message.
    pub fn check(&self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.fail(&msg());
        }
    }

    /// Checks that `r` failed with one of the errno values in `want`.
    pub fn expect_errno<T: std::fmt::Debug>(&self, r: io::Result<T>, want: &[i32], what: &str) {
        match r {
            Ok(v) => self.fail(&format!("{what}: expected {}, got Ok({v:?})", names(want))),
            Err(e) => {
                let got = e.raw_os_error().unwrap_or(-1);
                if !want.contains(&got) {
                    self.fail(&format!(
                        "{what}: expected {}, got {} ({e})",
                        names(want),
                        errno_name(got)
                    ));
                }
            }
        }
    }

    /// Unwraps an I/O result, failing with `what`, the error and the daemon log.
    pub fn ok<T>(&self, r: io::Result<T>, what: impl std::fmt::Display) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&format!("{what}: {e} (errno {:?})", e.raw_os_error())),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_timeout(self.cmd(&["unmount"]).arg(&self.mnt), UNMOUNT_TIMEOUT)
            }));
        }
        if is_mounted(&self.mnt) {
            lazy_umount(&self.mnt);
        }
        for &pid in &self.pids_seen {
            if pid_alive(pid) && !wait_until(Duration::from_secs(5), || !pid_alive(pid)) {
                let _ = signal(pid, libc::SIGKILL);
            }
        }
        ACTIVE_STATES.with(|s| s.borrow_mut().retain(|p| p != &self.state));
        if std::thread::panicking() && std::env::var_os("FYBRK_KEEP_FAILED").is_some() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("kept the failed test's dir: {}", kept.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data helpers
// ---------------------------------------------------------------------------------------------

/// A tiny seeded generator (xorshift64*): deterministic across crate versions and fast enough to
/// make GiBs of test data.
#[derive(Clone)]
pub struct Gen(u64);

impl Gen {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Gen {
        // splitmix64 once, so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Gen(if z == 0 { 1 } else { z })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p_percent`%.
    pub fn chance(&mut self, p_percent: u64) -> bool {
        self.below(100) < p_percent
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Drops the kernel's clean page cache (root, as every mount test): reads then go to the mount.
pub fn drop_page_cache() {
    // `sync` first: only clean pages are dropped.
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", b"1").expect("drop the page cache (root)");
}

/// A seed from the clock, for tests that print it and accept a replay seed from the env.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s:?} is not a u64")),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ (std::process::id() as u64) << 32
        }
    }
}

/// The errno of an I/O error result, or a panic naming `what` if it succeeded.
pub fn errno_of<T: std::fmt::Debug>(r: io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Name of an errno value for messages.
pub fn errno_name(e: i32) -> String {
    let s = unsafe { std::ffi::CStr::from_ptr(libc::strerror(e)) };
    format!("{} ({e})", s.to_string_lossy())
}

fn names(errnos: &[i32]) -> String {
    errnos
        .iter()
        .map(|&e| errno_name(e))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `path` as a C string.
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// Writes `data` to a new or truncated file and closes it.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    Ok(())
}

/// Writes, fsyncs and closes.
pub fn write_file_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Describes where two byte strings first differ.
pub fn diff_bytes(a: &[u8], b: &[u8]) -> Option<String> {
    if a == b {
        return None;
    }
    let first = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    Some(format!(
        "lengths {} vs {}, first difference at byte {first}",
        a.len(),
        b.len()
    ))
}

// ---------------------------------------------------------------------------------------------
// Tree snapshots
// ---------------------------------------------------------------------------------------------

/// One entry of a directory tree, as the tests compare it.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file: permission bits, contents, mtime in seconds.
    File {
        mode: u32,
        data: Vec<u8>,
        mtime: i64,
    },
    /// A directory: permission bits, mtime in seconds.
    Dir { mode: u32, mtime: i64 },
    /// A symlink and its target.
    Symlink { target: PathBuf },
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::File { mode, data, mtime } => {
                write!(
                    f,
                    "File {{ mode: {mode:o}, len: {}, blake3: {}, mtime: {mtime} }}",
                    data.len(),
                    &blake3::hash(data).to_hex()[..16]
                )
            }
            Node::Dir { mode, mtime } => write!(f, "Dir {{ mode: {mode:o}, mtime: {mtime} }}"),
            Node::Symlink { target } => write!(f, "Symlink -> {}", target.display()),
        }
    }
}

/// Relative path -> node, for every entry below `root` (not `root` itself).
pub type Tree = BTreeMap<PathBuf, Node>;

/// Reads the whole tree below `root` (symlinks are not followed).
pub fn snapshot(root: &Path) -> io::Result<Tree> {
    let mut tree = Tree::new();
    walk(root, Path::new(""), &mut tree)?;
    Ok(tree)
}

fn walk(root: &Path, rel: &Path, tree: &mut Tree) -> io::Result<()> {
    let dir = root.join(rel);
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir)? {
        names.push(entry?.file_name());
    }
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let p = root.join(&r);
        let md = fs::symlink_metadata(&p)?;
        let ft = md.file_type();
        let mode = md.permissions().mode() & 0o7777;
        if ft.is_symlink() {
            tree.insert(
                r,
                Node::Symlink {
                    target: fs::read_link(&p)?,
                },
            );
        } else if ft.is_dir() {
            tree.insert(
                r.clone(),
                Node::Dir {
                    mode,
                    mtime: md.mtime(),
                },
            );
            walk(root, &r, tree)?;
        } else if ft.is_file() {
            tree.insert(
                r,
                Node::File {
                    mode,
                    data: fs::read(&p)?,
                    mtime: md.mtime(),
                },
            );
        } else {
            return Err(io::Error::other(format!(
                "unexpected file type at {}",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Which parts of nodes to compare.
#[derive(Clone, Copy)]
pub struct Compare {
    /// Compare file mtimes.
    pub file_mtime: bool,
    /// Compare directory mtimes.
    pub dir_mtime: bool,
}

fn strip(n: &Node, how: Compare) -> Node {
    match n.clone() {
        Node::File { mode, data, mtime } => Node::File {
            mode,
            data,
            mtime: if how.file_mtime { mtime } else { 0 },
        },
        Node::Dir { mode, mtime } => Node::Dir {
            mode,
            mtime: if how.dir_mtime { mtime } else { 0 },
        },
        s => s,
    }
}

/// Compares two trees; `None` when equal, else a readable list of the first differences.
pub fn diff_trees(want: &Tree, got: &Tree, how: Compare) -> Option<String> {
    let mut out = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => out.push(format!("missing: {} (want {w:?})", p.display())),
            Some(g) => {
                let (ws, gs) = (strip(w, how), strip(g, how));
                if ws != gs {
                    let extra = match (w, g) {
                        (Node::File { data: a, .. }, Node::File { data: b, .. }) => {
                            diff_bytes(a, b).unwrap_or_default()
                        }
                        _ => String::new(),
                    };
                    out.push(format!(
                        "differs: {}\n   want {ws:?}\n   got  {gs:?} {extra}",
                        p.display()
                    ));
                }
            }
        }
    }
    for (p, g) in got {
        if !want.contains_key(p) {
            out.push(format!("unexpected: {} ({g:?})", p.display()));
        }
    }
    if out.is_empty() {
        None
    } else {
        let n = out.len();
        out.truncate(30);
        Some(format!("{n} differences:\n{}", out.join("\n")))
    }
}

/// Runs an external tool (git, sqlite3, tar) with a deadline; returns its output.
pub fn run_tool(cmd: &mut Command) -> Output {
    run_timeout(cmd, Duration::from_secs(300))
}

/// Runs an external tool and fails (with the daemon log of `m`) unless it exits 0.
pub fn run_ok(m: &Mount, cmd: &mut Command) -> Output {
    let desc = format!("{cmd:?}");
    let out = run_tool(cmd);
    if !out.status.success() {
        m.fail(&format!("{desc} failed\n{}", describe(&out)));
    }
    out
}

/// Exit status helper for messages.
pub fn code(s: ExitStatus) -> String {
    match s.code() {
        Some(c) => format!("exit code {c}"),
        None => format!("{s}"),
    }
}

/// Sets a file's or directory's mtime (and atime) to `secs.nanos` since the epoch.
pub fn set_mtime(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
    ];
    let c = cpath(path);
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } == 0
    {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets permission bits.
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

// ---------------------------------------------------------------------------------------------
// Sync helpers
// ---------------------------------------------------------------------------------------------
//
// For tests with several daemons that replicate to each other (tests/sync.rs). A failed wait here
// panics with a plain message (no log in it): the panic hook then appends the log tail of every
// mount the test holds, so the report shows what each daemon said.

/// How long a change may take to reach a connected peer. Generous: CI machines are slow, and a
/// change waits for the sender to commit it and the receiver to fetch and apply it.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(90);

/// How long devices may take to (re)connect: a peer that was down is retried with backoff.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a test watches for something that must *not* arrive. A positive barrier comes
/// first wherever possible (a change that does arrive at another device), so this only has to
/// cover the difference between two devices, not a whole sync.
pub const STAYS_ABSENT: Duration = Duration::from_secs(5);

/// Polls `check` every 20 ms until it returns `Ok`, for at most `timeout`, and returns its value.
/// On timeout panics with `what` and the last `Err`, which should say what was there instead.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen:\n{last}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One device of a synced folder: a [`Mount`] whose daemon listens on loopback under a name.
/// Derefs to its [`Mount`].
///
/// The first mount listens on `127.0.0.1:0`; later mounts reuse the port the daemon got, as a
/// real device reuses its default port 22100: a peer that was offline while this one restarted
/// still finds it at the address it knows.
pub struct Peer {
    m: Mount,
    /// The name passed as `mount --name`.
    pub name: String,
    listen: Option<String>,
    id: Option<String>,
    /// More `mount` arguments for every [`Peer::up`] (`--on-demand`, `--cache 64M`, ...).
    pub mount_args: Vec<String>,
}

impl std::ops::Deref for Peer {
    type Target = Mount;
    fn deref(&self) -> &Mount {
        &self.m
    }
}

impl std::ops::DerefMut for Peer {
    fn deref_mut(&mut self) -> &mut Mount {
        &mut self.m
    }
}

/// An invitation made by `fybrk pair --no-wait --json` (`--yes` unless asking).
#[derive(Debug, Clone)]
pub struct Invite {
    /// The text a joiner passes to `pair-with` (`fybrk1:...`).
    pub payload: String,
    /// When it stops working.
    pub expires_unix: u64,
    /// Where the QR code PNG was written.
    pub png: PathBuf,
}

impl Peer {
    /// A fresh folder named `name`, not mounted. `None` when real mounts cannot run here.
    pub fn prepare(name: &str) -> Option<Peer> {
        Some(Peer {
            m: Mount::prepare()?,
            name: name.to_string(),
            listen: None,
            id: None,
            mount_args: Vec::new(),
        })
    }

    /// [`Peer::prepare`] and [`Peer::up`].
    pub fn start(name: &str) -> Option<Peer> {
        let mut p = Peer::prepare(name)?;
        p.up();
        Some(p)
    }

    /// Mounts with `--listen` (loopback; the previous port after the first mount) and `--name`,
    /// and records the listen address and device id from `status --json`.
    pub fn up(&mut self) {
        let listen = self
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:0".to_string());
        let name = self.name.clone();
        let mut args = vec!["--listen", listen.as_str(), "--name", name.as_str()];
        let extra = self.mount_args.clone();
        args.extend(extra.iter().map(String::as_str));
        self.m.mount_with(&args);
        let st = self.m.status_json();
        // A typed `SocketAddr`: ip:port by construction.
        let listen_addr = st.network.listen_addr;
        let addr = listen_addr.to_string();
        let addr = addr.as_str();
        self.m.check(listen_addr.port() != 0, || {
            format!("listen_addr {addr:?} is not ip:port with a real port; status {st:?}")
        });
        if let Some(want) = &self.listen {
            self.m.check(addr == want, || {
                format!("mounted with --listen {want} but status says listen_addr {addr}")
            });
        }
        self.listen = Some(addr.to_string());
        let id = st.device_id.as_str();
        if let Some(old) = &self.id {
            self.m.check(old == id, || {
                format!("device id changed across a remount: {old} -> {id}")
            });
        }
        self.id = Some(id.to_string());
    }

    /// `fybrk unmount`, with the checks of [`Mount::unmount`].
    pub fn down(&mut self) {
        self.m.unmount();
    }

    /// [`Peer::down`] then [`Peer::up`].
    pub fn restart(&mut self) {
        self.down();
        self.up();
    }

    /// The device id text, as `status --json` showed it at the last mount.
    pub fn id(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| self.m.fail("id(): never mounted"))
    }

    /// `ip:port` the daemon listens on (from the last mount).
    pub fn listen_addr(&self) -> String {
        self.listen
            .clone()
            .unwrap_or_else(|| self.m.fail("listen_addr(): never mounted"))
    }

    /// `fybrk pair --yes --no-wait --json EXTRA...` (approved in advance): must exit 0 with
    /// the invitation as the first line.
    pub fn invite(&self, extra: &[&str]) -> Invite {
        let mut args = vec!["--yes"];
        args.extend_from_slice(extra);
        self.invite_asking(&args)
    }

    /// `fybrk pair --no-wait --json EXTRA...`: requests wait for `approve` / `deny`.
    pub fn invite_asking(&self, extra: &[&str]) -> Invite {
        // The PNG goes beside state/ and mnt/: its default is the current directory.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let png = self.m.root().join(format!("invite-{nanos}.png"));
        let png = png.to_string_lossy().into_owned();
        let mut args = vec!["pair", "--no-wait", "--json", "--png", png.as_str()];
        args.extend_from_slice(extra);
        let out = self.m.run(&args, Duration::from_secs(60));
        if !out.status.success() {
            self.m.fail(&format!(
                "`fybrk {}` failed\n{}",
                args.join(" "),
                describe(&out)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or("");
        // A missing or mistyped field (`expires_unix` not a u64, ...) fails the parse.
        let v: InviteShown = serde_json::from_str(first).unwrap_or_else(|e| {
            self.m.fail(&format!(
                "first stdout line of `fybrk pair --json` is not the invitation ({e})\n{}",
                describe(&out)
            ))
        });
        self.m.check(v.payload.starts_with("fybrk1:"), || {
            format!("the payload should start with `fybrk1:`: {v:?}")
        });
        Invite {
            payload: v.payload,
            expires_unix: v.expires_unix,
            png: v.png,
        }
    }

    /// `fybrk pair-with --yes PAYLOAD` on this device (its own files are shared without
    /// asking), not judged.
    pub fn try_pair_with(&self, payload: &str) -> Output {
        self.m
            .run(&["pair-with", "--yes", payload], Duration::from_secs(120))
    }

    /// `fybrk peers --json`, parsed; fails unless it exits 0 with a `peers` array (the parse
    /// as [`PeersReply`] requires it).
    pub fn peers_json(&self) -> PeersReply {
        let out = self.m.run(&["peers", "--json"], Duration::from_secs(30));
        if !out.status.success() {
            self.m
                .fail(&format!("`fybrk peers --json` failed\n{}", describe(&out)));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            self.m.fail(&format!(
                "peers --json is not one object with a `peers` array ({e}):\n{text}"
            ))
        })
    }

    /// This device's entry for `other` in `status --json`'s `peers`, if listed.
    pub fn status_peer(&self, other: &Peer) -> Option<PeerStatus> {
        status_entry(&self.m.status_json(), &other.id()).cloned()
    }
}

/// The entry with `"id": id` in `peers --json`.
pub fn peer_entry<'a>(v: &'a PeersReply, id: &str) -> Option<&'a PeerInfo> {
    v.peers.iter().find(|p| p.id == id)
}

/// The path (`lan`, `direct`, `relay`) `m` reports to the device with id `other`, once
/// connected.
pub fn path_to_id(m: &Mount, other: &str) -> Option<String> {
    let s = m.status_json();
    let p = status_entry(&s, other)?;
    if !p.connected {
        return None;
    }
    p.path.map(|k| k.as_str().to_owned())
}

/// [`path_to_id`] for the device mounted as `other`.
pub fn path_to(m: &Mount, other: &Mount) -> Option<String> {
    path_to_id(m, &other.status_json().device_id)
}

/// The entry with `"id": id` in `status --json`'s `peers`.
pub fn status_entry<'a>(v: &'a StatusReply, id: &str) -> Option<&'a PeerStatus> {
    v.network.peers.iter().find(|p| p.id == id)
}

/// Pairs `joiner` with `inviter` (an invitation from `inviter`, `pair-with` on `joiner`): exit 0
/// and a `paired with` line naming the inviter.
pub fn pair(inviter: &Peer, joiner: &Peer) {
    let inv = inviter.invite(&[]);
    let out = joiner.try_pair_with(&inv.payload);
    if !out.status.success() {
        panic!(
            "`fybrk pair-with` on {} (invited by {}) failed\n{}",
            joiner.name,
            inviter.name,
            describe(&out)
        );
    }
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("paired with") && said.contains(&inviter.name),
        "`pair-with` should say `paired with {} (ID)`\n{}",
        inviter.name,
        describe(&out)
    );
}

/// Waits until `a` and `b` each list the other as connected in `status --json`.
pub fn wait_connected(a: &Peer, b: &Peer, timeout: Duration) {
    wait_for(
        &format!("{} and {} to show each other connected", a.name, b.name),
        timeout,
        || {
            for (x, y) in [(a, b), (b, a)] {
                match x.status_peer(y) {
                    Some(p) if p.connected => {}
                    Some(p) => return Err(format!("{} shows {}: {p:?}", x.name, y.name)),
                    None => {
                        return Err(format!(
                            "{} does not list {} ({}) at all: {:?}",
                            x.name,
                            y.name,
                            y.id(),
                            x.status_json().network.peers
                        ))
                    }
                }
            }
            Ok(())
        },
    )
}

/// What is at `path` right now, for failure messages.
pub fn describe_path(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Err(e) => format!("{}: {e}", path.display()),
        Ok(md) if md.file_type().is_symlink() => {
            format!(
                "{}: symlink -> {:?}",
                path.display(),
                fs::read_link(path).ok()
            )
        }
        Ok(md) if md.is_dir() => {
            let names: Vec<String> = fs::read_dir(path)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            format!("{}: directory holding {names:?}", path.display())
        }
        Ok(md) => format!(
            "{}: file of {} bytes, mode {:o}",
            path.display(),
            md.len(),
            md.permissions().mode() & 0o7777
        ),
    }
}

/// Waits until `m`'s `rel` is a file holding exactly `want`.
pub fn wait_file(m: &Mount, rel: impl AsRef<Path>, want: &[u8], timeout: Duration) {
    let p = m.path(rel.as_ref());
    wait_for(
        &format!("{} to hold {} bytes", p.display(), want.len()),
        timeout,
        || match fs::read(&p) {
            Ok(got) if got == want => Ok(()),
            Ok(got) => Err(format!(
                "{}: {}",
                p.display(),
                diff_bytes(want, &got).unwrap_or_default()
            )),
            Err(e) => Err(format!(
                "{}: {e}; parent: {}",
                p.display(),
                describe_path(p.parent().unwrap_or(&m.mnt))
            )),
        },
    )
}

/// Waits until nothing is at `m`'s `rel`.
pub fn wait_gone(m: &Mount, rel: impl AsRef<Path>, timeout: Duration) {
    let p = m.path(rel.as_ref());
    wait_for(
        &format!("{} to disappear", p.display()),
        timeout,
        || match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            _ => Err(describe_path(&p)),
        },
    )
}

/// Watches `paths` (mount, relative path) for `dur` and panics as soon as any of them exists.
pub fn assert_stays_absent(paths: &[(&Mount, &str)], dur: Duration) {
    let start = Instant::now();
    while start.elapsed() < dur {
        for (m, rel) in paths {
            let p = m.path(rel);
            if fs::symlink_metadata(&p).is_ok() {
                panic!(
                    "{} appeared {:?} into a window where it must not: {}",
                    p.display(),
                    start.elapsed(),
                    describe_path(&p)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the tree below `root` equals `want` (compared as `how` says).
pub fn wait_tree(root: &Path, want: &Tree, how: Compare, timeout: Duration) {
    wait_for(
        &format!("{} to match the expected tree", root.display()),
        timeout,
        || match snapshot(root) {
            Ok(got) => diff_trees(want, &got, how).map_or(Ok(()), Err),
            Err(e) => Err(format!("snapshot of {}: {e}", root.display())),
        },
    )
}

/// Waits until the trees below `a` and `b` are equal (compared as `how` says); returns it.
pub fn wait_trees_equal(a: &Path, b: &Path, how: Compare, timeout: Duration) -> Tree {
    wait_for(
        &format!("{} and {} to be equal", a.display(), b.display()),
        timeout,
        || {
            let ta = snapshot(a).map_err(|e| format!("snapshot of {}: {e}", a.display()))?;
            let tb = snapshot(b).map_err(|e| format!("snapshot of {}: {e}", b.display()))?;
            match diff_trees(&ta, &tb, how) {
                None => Ok(ta),
                Some(d) => Err(format!(
                    "(want = {}, got = {})\n{d}",
                    a.display(),
                    b.display()
                )),
            }
        },
    )
}

/// Writes `len` bytes of `Gen::new(seed)` output to a new or truncated file, fsyncs and closes
/// it, and returns the blake3 hash of the data: generated and hashed here in 1 MiB blocks (never
/// all in memory) and written by a child `dd` (`conv=fsync`) fed by a pipe.
///
/// Only `dd` holds the file open, so no fork by another test thread inherits it. Every fork + exec closes its copy of
/// the descriptor, which the kernel reports as a FUSE `flush`; the daemon commits the file on each
/// flush, so a peer could receive the half-written file as a version of its own.
pub fn write_gen_file_in_child(path: &Path, seed: u64, len: u64) -> io::Result<blake3::Hash> {
    const BLOCK: u64 = 1024 * 1024;
    let mut child = Command::new("dd")
        .arg(format!("of={}", path.display()))
        .args(["bs=1M", "iflag=fullblock", "conv=fsync", "status=none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut g = Gen::new(seed);
    let mut hasher = blake3::Hasher::new();
    let mut block = vec![0u8; BLOCK as usize];
    let mut pipe = child.stdin.take().expect("piped stdin");
    let mut done = 0u64;
    let mut wrote = Ok(());
    while done < len {
        let n = BLOCK.min(len - done) as usize;
        g.fill(&mut block[..n]);
        hasher.update(&block[..n]);
        if let Err(e) = pipe.write_all(&block[..n]) {
            wrote = Err(e);
            break;
        }
        done += n as u64;
    }
    drop(pipe);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "dd of={} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    wrote?;
    Ok(hasher.finalize())
}

/// Length and blake3 hash of a file, read in 1 MiB blocks.
pub fn hash_file(path: &Path) -> io::Result<(u64, blake3::Hash)> {
    let mut f = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut block = vec![0u8; 1024 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize()))
}

/// Waits until `m`'s `rel` is `len` bytes hashing to `hash`. The hash is only computed once the
/// size is right, so a multi-GiB file is not re-read on every poll while it is still arriving.
pub fn wait_file_hash(
    m: &Mount,
    rel: impl AsRef<Path>,
    len: u64,
    hash: blake3::Hash,
    timeout: Duration,
) {
    let p = m.path(rel.as_ref());
    wait_for(
        &format!(
            "{} to be {len} bytes with blake3 {}",
            p.display(),
            hash.to_hex()
        ),
        timeout,
        || {
            let size = fs::metadata(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .len();
            if size != len {
                return Err(format!("{}: {size} bytes", p.display()));
            }
            match hash_file(&p) {
                Ok((n, h)) if n == len && h == hash => Ok(()),
                Ok((n, h)) => {
                    // Same size, other bytes: give a changing file a moment before re-reading.
                    std::thread::sleep(Duration::from_secs(1));
                    Err(format!(
                        "{}: read {n} bytes hashing to {}",
                        p.display(),
                        h.to_hex()
                    ))
                }
                Err(e) => Err(format!("{}: read: {e}", p.display())),
            }
        },
    )
}
