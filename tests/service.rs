//! `fybrk service`, `fybrk completions` and `fybrk man`.
//!
//! The service tests install the unit for real when a systemd user session answers
//! (`systemctl --user`); CI containers have none, and there they say so and instead check the
//! generated unit (`systemd-analyze --user verify` when installed) and drive the daemon with
//! exactly the unit's `ExecStart=`/`ExecStop=` lines, as systemd would: `NOTIFY_SOCKET` is a unix
//! datagram socket this test binds, READY=1 must arrive only once the mount answers, and after a
//! `kill -9` the same `ExecStart=` (what `Restart=on-failure` runs) brings the folder back intact.
//!
//! To run: `cargo build --release -p fybrk && cargo test --release -p fybrk-tests --test service`
//! (root and /dev/fuse for the mount tests, like the rest of the suite).

#![allow(clippy::unwrap_used, missing_docs)]

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fybrk_tests::{
    describe, fybrk_bin, have_tool, is_mounted, pid_alive, run_timeout, wait_until, Gen, Mount,
    MountPointGuard,
};

const T: Duration = Duration::from_secs(60);

/// `fybrk ARGS` with `XDG_CONFIG_HOME` pointing at `config_home` (so no test ever touches the
/// real `~/.config/systemd/user`).
fn fybrk(config_home: &Path, args: &[&str]) -> Output {
    run_timeout(
        Command::new(fybrk_bin())
            .env("XDG_CONFIG_HOME", config_home)
            .args(args),
        T,
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a systemd user manager answers here.
fn user_session() -> bool {
    Command::new("systemctl")
        .args(["--user", "show", "--property=Version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The value of `key=` in a unit, as systemd reads one command line: words split on spaces,
/// double quotes with `\\` and `\"` inside, then `%%` and `$$` unescaped.
fn command_line(unit: &str, key: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit:\n{unit}"));
    // `-` (failure ignored) is a prefix of the executable, not part of it.
    let line = line.strip_prefix('-').unwrap_or(line);
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut started) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            '\\' if quoted => cur.push(chars.next().unwrap()),
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut cur));
                }
                started = false;
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(cur);
    }
    words
        .into_iter()
        .map(|w| w.replace("%%", "%").replace("$$", "$"))
        .collect()
}

fn unit_text(m: &Mount, mnt: &Path) -> String {
    let out = run_timeout(m.cmd(&["service", "unit"]).arg(mnt), T);
    assert!(out.status.success(), "service unit: {}", describe(&out));
    stdout(&out)
}

#[test]
fn the_generated_unit_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mnt = dir.path().join("My Folder %h $HOME");
    let out = fybrk(
        dir.path(),
        &[
            "--state",
            state.to_str().unwrap(),
            "service",
            "unit",
            mnt.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let unit = stdout(&out);
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "KillMode=mixed",
        "WantedBy=default.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in\n{unit}");
    }
    // The command lines read back, quoting undone, are the daemon's arguments exactly.
    let bin = fybrk_bin().canonicalize().unwrap();
    let (bin, state, mnt) = (
        bin.to_str().unwrap(),
        state.to_str().unwrap(),
        mnt.to_str().unwrap(),
    );
    assert_eq!(
        command_line(&unit, "ExecStart"),
        [bin, "--state", state, "mount", mnt, "--foreground"]
    );
    assert_eq!(
        command_line(&unit, "ExecStop"),
        [bin, "--state", state, "unmount", mnt]
    );
    // The unit's name is systemd's own escaping of the mount point.
    if Path::new("/usr/bin/systemd-escape").exists() {
        let esc = run_timeout(Command::new("systemd-escape").args(["--path", mnt]), T);
        let name = format!("fybrk-{}.service", stdout(&esc).trim());
        let unit_dir = dir.path().join("units");
        fs::create_dir_all(&unit_dir).unwrap();
        let path = unit_dir.join(&name);
        fs::write(&path, &unit).unwrap();
        if have_tool("systemd-analyze") {
            // `Documentation=man:fybrk(1)` is checked too: install the page where man finds it.
            let man_dir = dir.path().join("man/man1");
            fs::create_dir_all(&man_dir).unwrap();
            let page = fybrk(dir.path(), &["man"]);
            fs::write(man_dir.join("fybrk.1"), &page.stdout).unwrap();
            let runtime = dir.path().join("runtime");
            fs::create_dir_all(&runtime).unwrap();
            let out = run_timeout(
                Command::new("systemd-analyze")
                    .args(["--user", "verify"])
                    .arg(&path)
                    .env("XDG_RUNTIME_DIR", &runtime)
                    .env("MANPATH", dir.path().join("man")),
                T,
            );
            // verify exits 0 even for settings it ignores: any complaint counts.
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "systemd-analyze verify {name}: {}",
                describe(&out)
            );
            eprintln!("systemd-analyze --user verify {name}: clean");
        }
    } else {
        eprintln!("note: systemd is not installed; the unit was checked by text only");
    }
}

#[test]
fn without_a_user_session_install_says_how_and_writes_nothing() {
    if user_session() {
        eprintln!("a systemd user session answers here: see installs_and_survives_kill_9");
        return;
    }
    eprintln!("no systemd user session here (a CI container): checking the advice instead");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mnt = dir.path().join("mnt");
    let st = state.to_str().unwrap();
    let out = fybrk(
        dir.path(),
        &["--state", st, "service", "install", mnt.to_str().unwrap()],
    );
    assert!(
        !out.status.success(),
        "install succeeded without systemd: {}",
        describe(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no systemd user session is reachable"),
        "{err}"
    );
    assert!(err.contains("loginctl enable-linger"), "{err}");
    assert!(err.contains("fybrk mount DIR"), "{err}");
    assert!(
        !dir.path().join("systemd").exists(),
        "install wrote a unit anyway"
    );

    // Nothing installed: status and uninstall say so and succeed.
    let out = fybrk(dir.path(), &["--state", st, "service", "status", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"], serde_json::json!([]));
    let out = fybrk(
        dir.path(),
        &["--state", st, "service", "uninstall", "--json"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"], serde_json::json!([]));

    // A unit in place (written by hand from `service unit`) is found and described, with the
    // reason systemd could not be asked about it.
    let unit = fybrk(
        dir.path(),
        &["--state", st, "service", "unit", mnt.to_str().unwrap()],
    );
    let units = dir.path().join("systemd/user");
    fs::create_dir_all(&units).unwrap();
    // Found by its marker comments, whatever its name.
    let name = "fybrk-by-hand.service";
    fs::write(units.join(name), &unit.stdout).unwrap();
    let out = fybrk(dir.path(), &["--state", st, "service", "status", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"][0]["unit"], name, "{v}");
    assert_eq!(v["services"][0]["mount_point"], mnt.to_str().unwrap());
    assert_eq!(v["services"][0]["state_dir"], st);
    assert!(v["systemd_problem"].is_string(), "{v}");
}

/// The daemon started as systemd starts it: the unit's `ExecStart=` argv, `NOTIFY_SOCKET` set,
/// stderr into the state dir's log (the harness prints its tail on failure).
struct Service {
    child: Child,
    notify: UnixDatagram,
}

impl Service {
    fn start(argv: &[String], notify_path: &Path, log: &Path) -> Service {
        let _ = fs::remove_file(notify_path);
        let notify = UnixDatagram::bind(notify_path).unwrap();
        notify.set_read_timeout(Some(T)).unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("NOTIFY_SOCKET", notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Service { child, notify }
    }

    /// The first notification; panics after a minute without one.
    fn next_message(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification from the daemon within {T:?}: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// Waits for READY=1 and checks the mount answers at that moment: in the mount table, its
/// control socket answers `status`, files can be read.
fn expect_ready(m: &Mount, svc: &Service, mnt: &Path) {
    let msg = svc.next_message();
    assert!(
        msg.lines().any(|l| l == "READY=1"),
        "first notification is not READY=1: {msg:?}"
    );
    assert!(
        is_mounted(mnt),
        "READY=1 before {} was mounted",
        mnt.display()
    );
    assert!(
        fs::read_dir(mnt).is_ok(),
        "READY=1 but the mount does not answer"
    );
    let st = m.status_json();
    assert_eq!(
        st.mount_point, mnt,
        "READY=1 but status names another mount"
    );
    assert!(
        msg.lines()
            .any(|l| l == format!("STATUS=serving {}", mnt.display())),
        "{msg:?}"
    );
}

#[test]
fn exec_start_notifies_and_restarts_after_kill_9() {
    if user_session() {
        eprintln!("a systemd user session answers here: see installs_and_survives_kill_9");
    } else {
        eprintln!("no systemd user session here (a CI container): driving ExecStart= by hand");
    }
    let Some(mut m) = Mount::prepare() else {
        return;
    };
    // A space and a '%' in the mount point: the unit's quoting must hold.
    let mnt = m.root().join("My Folder 100%");
    fs::create_dir(&mnt).unwrap();
    let _guard = MountPointGuard(mnt.clone());
    let unit = unit_text(&m, &mnt);
    let start = command_line(&unit, "ExecStart");
    let stop = command_line(&unit, "ExecStop");
    let notify = m.root().join("notify.sock");
    let log = m.state.join("daemon.log");

    let mut svc = Service::start(&start, &notify, &log);
    expect_ready(&m, &svc, &mnt);
    m.adopt_daemon();
    let mut data = vec![0u8; 300_000];
    Gen::new(16).fill(&mut data);
    let mut f = fs::File::create(mnt.join("kept.bin")).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // kill -9: an unclean death, which Restart=on-failure restarts with the same ExecStart=.
    svc.child.kill().unwrap();
    let status = svc.child.wait().unwrap();
    assert!(
        !status.success(),
        "a SIGKILLed daemon counts as a failure for Restart="
    );
    assert!(
        is_mounted(&mnt),
        "the dead daemon's mount should still be there (stale)"
    );
    let mut svc = Service::start(&start, &notify, &log);
    expect_ready(&m, &svc, &mnt);
    m.adopt_daemon();
    assert_eq!(
        fs::read(mnt.join("kept.bin")).unwrap(),
        data,
        "data after the restart"
    );

    // Once more, with systemd's stop sequence after a crash: ExecStop= clears the stale mount.
    svc.child.kill().unwrap();
    svc.child.wait().unwrap();
    let out = run_timeout(Command::new(&stop[0]).args(&stop[1..]), T);
    assert!(
        out.status.success(),
        "ExecStop after a crash: {}",
        describe(&out)
    );
    assert!(!is_mounted(&mnt), "ExecStop left the stale mount");
    let mut svc = Service::start(&start, &notify, &log);
    expect_ready(&m, &svc, &mnt);
    m.adopt_daemon();
    assert_eq!(
        fs::read(mnt.join("kept.bin")).unwrap(),
        data,
        "data after the second restart"
    );

    // ExecStop= on a running daemon: it unmounts and the daemon exits 0 (Restart=on-failure
    // leaves a clean exit alone).
    // `fybrk unmount` waits for the daemon's pid to go; systemd reaps its main process at once,
    // and so must this test, its parent, while ExecStop runs.
    let pid = svc.child.id() as i32;
    let (out, status) = std::thread::scope(|s| {
        let stop = s.spawn(|| run_timeout(Command::new(&stop[0]).args(&stop[1..]), T));
        let status = svc.child.wait().unwrap();
        (stop.join().unwrap(), status)
    });
    assert!(out.status.success(), "ExecStop: {}", describe(&out));
    assert!(!is_mounted(&mnt), "ExecStop did not unmount");
    assert!(
        status.success(),
        "the daemon's exit after ExecStop: {status}"
    );
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(pid)));
}

/// A systemd user manager to install into: the user's own session when one answers, else (root,
/// e.g. a CI container booted without systemd) a private `systemd --user` in a mount namespace
/// of its own, where a tmpfs `/run/systemd/system` tells it the system "was booted with
/// systemd". Commands run inside that namespace through `nsenter`; the test reads the mount
/// through `/proc/PID/root`. Dropping it stops the manager, which stops (unmounts) its units.
struct UserManager {
    /// The private manager (its pid is also the namespace's handle); `None`: the user's session.
    private: Option<Child>,
    home: PathBuf,
    runtime: PathBuf,
}

impl UserManager {
    fn start(scratch: &Path) -> Result<UserManager, String> {
        let home = scratch.join("home");
        let runtime = scratch.join("runtime");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&runtime).unwrap();
        fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        if user_session() {
            return Ok(UserManager {
                private: None,
                home,
                runtime,
            });
        }
        for tool in ["unshare", "nsenter"] {
            if Command::new(tool).arg("--version").output().is_err() {
                return Err(format!("`{tool}` is missing"));
            }
        }
        let systemd = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("systemd is not installed")?;
        let script = format!(
            "[ -d /run/systemd ] || mkdir -p /run/systemd; \
             mount -t tmpfs fybrk-test /run/systemd && mkdir /run/systemd/system && \
             exec {systemd} --user"
        );
        let log = fs::File::create(scratch.join("manager.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let mut um = UserManager {
            private: Some(child),
            home,
            runtime,
        };
        let answers = wait_until(Duration::from_secs(15), || {
            um.cmd("systemctl")
                .args(["--user", "show", "--property=Version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !answers {
            let log = fs::read_to_string(scratch.join("manager.log")).unwrap_or_default();
            let _ = um.private.as_mut().unwrap().kill();
            return Err(format!("a private `systemd --user` did not come up: {log}"));
        }
        Ok(um)
    }

    /// `program`, run where the manager is (inside its namespace, with its HOME and runtime dir).
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = match &self.private {
            Some(child) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &child.id().to_string(), "-m", "--"])
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        if self.private.is_some() {
            c.env("HOME", &self.home)
                .env("XDG_RUNTIME_DIR", &self.runtime)
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("DBUS_SESSION_BUS_ADDRESS");
        }
        c
    }

    /// `path` as this process sees it (through the manager's mount namespace).
    fn path(&self, path: &Path) -> PathBuf {
        match &self.private {
            Some(child) => Path::new(&format!("/proc/{}/root", child.id()))
                .join(path.strip_prefix("/").unwrap()),
            None => path.to_path_buf(),
        }
    }

    fn is_mounted(&self, mnt: &Path) -> bool {
        let table = match &self.private {
            Some(child) => format!("/proc/{}/mounts", child.id()),
            None => "/proc/self/mounts".into(),
        };
        let want = mnt.to_str().unwrap().replace(' ', "\\040");
        fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        if let Some(child) = &mut self.private {
            // SIGTERM: the manager stops every unit (ExecStop unmounts), then exits.
            let pid = child.id() as i32;
            let _ = fybrk_tests::signal(pid, libc::SIGTERM);
            if !wait_until(Duration::from_secs(60), || {
                child.try_wait().ok().flatten().is_some()
            }) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The real thing: `service install` into a systemd user manager (the user's session, or a
/// private one where none runs, as in CI), then kill -9 of the daemon, which systemd restarts,
/// `status`, and `uninstall`.
#[test]
fn installs_and_survives_kill_9() {
    let Some(mut m) = Mount::prepare() else {
        return;
    };
    let um = match UserManager::start(&m.root().join("systemd")) {
        Ok(um) => um,
        Err(why) => {
            eprintln!("no systemd user manager can run here ({why}): the real install is not tested; exec_start_notifies_and_restarts_after_kill_9 drives the unit's command lines instead");
            return;
        }
    };
    eprintln!(
        "installing into {}",
        if um.private.is_some() {
            "a private systemd --user (no user session here)"
        } else {
            "this user's systemd session"
        }
    );
    let mnt = m.mnt.to_str().unwrap().to_string();
    let state = m.state.clone();
    let fybrk = |args: &[&str]| {
        let mut c = um.cmd(fybrk_bin());
        c.arg("--state").arg(&state).args(args);
        run_timeout(&mut c, Duration::from_secs(120))
    };
    let out = fybrk(&["service", "install", &mnt, "--json"]);
    // Uninstalled whatever happens (after a failed assert too), so no unit outlives the test.
    struct Uninstall<'a>(&'a dyn Fn(&[&str]) -> Output, &'a str);
    impl Drop for Uninstall<'_> {
        fn drop(&mut self) {
            (self.0)(&["service", "uninstall", self.1]);
        }
    }
    let _cleanup = Uninstall(&fybrk, &mnt);
    assert!(out.status.success(), "install: {}", describe(&out));
    let installed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unit = installed["unit"].as_str().unwrap().to_string();
    assert!(
        um.is_mounted(&m.mnt),
        "install returned before the folder was mounted"
    );
    let status = || -> serde_json::Value {
        let out = fybrk(&["service", "status", &mnt, "--json"]);
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["services"][0].clone()
    };
    let s = status();
    assert_eq!(s["active_state"], "active", "{s}");
    assert_eq!(s["enabled"], "enabled", "{s}");
    assert_eq!(s["status_text"], format!("serving {mnt}"), "{s}");
    let pid = s["main_pid"].as_i64().unwrap() as i32;
    m.adopt_daemon();
    fs::write(um.path(&m.mnt.join("kept.txt")), b"still here").unwrap();

    fybrk_tests::signal(pid, libc::SIGKILL).unwrap();
    let back = wait_until(Duration::from_secs(60), || {
        let s = status();
        s["active_state"] == "active" && s["main_pid"].as_i64().is_some_and(|p| p as i32 != pid)
    });
    assert!(back, "{unit} did not come back after kill -9: {}", status());
    m.adopt_daemon();
    let s = status();
    assert!(s["restarts"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(
        fs::read(um.path(&m.mnt.join("kept.txt"))).unwrap(),
        b"still here"
    );

    let out = fybrk(&["service", "uninstall", &mnt]);
    assert!(out.status.success(), "uninstall: {}", describe(&out));
    assert!(!um.is_mounted(&m.mnt), "uninstall left the folder mounted");
    let units = um.path(&um.home.join(".config/systemd/user"));
    if um.private.is_some() {
        assert!(!units.join(&unit).exists(), "uninstall left the unit file");
    }
    let out = fybrk(&["service", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["unit"] != unit.as_str()),
        "{v}"
    );
}

#[test]
fn bash_completion_completes_commands_and_flags() {
    if !have_tool("bash") {
        return;
    }
    let script = format!(
        r#"source <("{bin}" completions bash)
complete -p fybrk
complete_words() {{
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}
    COMPREPLY=()
    _fybrk fybrk "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
    echo "${{COMPREPLY[*]}}"
}}
echo "pa: $(complete_words fybrk pa)"
echo "pair --: $(complete_words fybrk pair --)"
echo "service: $(complete_words fybrk service '')"
"#,
        bin = fybrk_bin().display()
    );
    let out = run_timeout(Command::new("bash").arg("-c").arg(&script), T);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        describe(&out)
    );
    let text = stdout(&out);
    let line = |prefix: &str| -> Vec<String> {
        let l = text.lines().find_map(|l| l.strip_prefix(prefix)).unwrap();
        l.split_whitespace().map(str::to_string).collect()
    };
    assert!(
        text.contains("complete -o bashdefault -o default -o nosort -F _fybrk fybrk"),
        "{text}"
    );
    assert_eq!(line("pa: "), ["pair", "pair-with"], "{text}");
    assert!(line("pair --: ").contains(&"--yes".to_string()), "{text}");
    for sub in ["install", "uninstall", "status", "unit"] {
        assert!(line("service: ").contains(&sub.to_string()), "{text}");
    }
}

#[test]
fn zsh_and_fish_completions_parse() {
    for (shell, check) in [("zsh", ["zsh", "-n"]), ("fish", ["fish", "-n"])] {
        let out = run_timeout(Command::new(fybrk_bin()).args(["completions", shell]), T);
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{}",
            describe(&out)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("fybrk.{shell}"));
        fs::write(&file, &out.stdout).unwrap();
        // Optional tools: a syntax check where the shell is installed.
        if Command::new(check[0]).arg("--version").output().is_err() {
            eprintln!(
                "note: {shell} is not installed; its script was checked to be non-empty only"
            );
            continue;
        }
        let out = run_timeout(Command::new(check[0]).arg(check[1]).arg(&file), T);
        assert!(out.status.success(), "{shell} -n: {}", describe(&out));
    }
}

/// The subcommands `fybrk --help` lists, and `service`'s.
fn subcommands(args: &[&str]) -> Vec<String> {
    let out = run_timeout(Command::new(fybrk_bin()).args(args), T);
    let text = stdout(&out);
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn the_man_page_renders_and_lists_every_command() {
    let out = run_timeout(Command::new(fybrk_bin()).arg("man"), T);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("\n.TH FYBRK 1 "), "not a man page");
    let mut commands: Vec<String> = subcommands(&["--help"])
        .into_iter()
        .filter(|c| c != "service")
        .map(|c| format!("fybrk {c}"))
        .collect();
    commands.extend(
        subcommands(&["service", "--help"])
            .into_iter()
            .map(|c| format!("fybrk service {c}")),
    );
    assert!(commands.len() > 15, "{commands:?}");
    // Rendered by man (else groff) when installed: what a reader sees, not the roff source.
    let render = |cmd: &mut Command| -> Option<String> {
        let mut child = cmd
            .env("LC_ALL", "C")
            .env("MANWIDTH", "200")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let rendered = child.wait_with_output().unwrap();
        assert!(rendered.status.success(), "{}", describe(&rendered));
        Some(stdout(&rendered))
    };
    let text = render(Command::new("man").args(["-l", "-"]))
        .or_else(|| render(Command::new("groff").args(["-man", "-Tascii", "-ww"])))
        .unwrap_or_else(|| {
            eprintln!("note: neither man nor groff is installed; checking the roff source");
            stdout(&out)
        });
    for c in &commands {
        assert!(
            text.contains(c.as_str()),
            "the man page does not mention `{c}`"
        );
    }
}
