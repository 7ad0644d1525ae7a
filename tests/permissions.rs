//! Mode bits through a real mount owned by an ordinary user. fybrk mounts without the kernel's
//! `default_permissions`, so the daemon enforces them itself (root bypasses them, so this runs
//! everything as `nobody`): each operation here must fail or succeed exactly as it would on a
//! local disk.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fybrk_tests::{describe, fybrk_bin, have_tool, run_timeout, Mount};

const NOBODY: u32 = 65534;

/// `setpriv` arguments that run a command as `nobody` with no supplementary groups.
fn as_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
        "--".into(),
    ]);
    c
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
}

/// Each case: a shell snippet run as `nobody` inside the mount, and whether it must succeed.
/// Earlier cases set up later ones, so they run in order in one shell.
const CASES: &[(&str, bool)] = &[
    ("echo hi > f", true),
    ("chmod 000 f", true),
    ("cat f", false),
    ("chmod 400 f", true),
    ("cat f", true),
    ("echo more >> f", false),
    ("truncate -s 0 f", false),
    ("test -w f", false),
    ("chmod 600 f && echo more >> f", true),
    ("mkdir d && touch d/a", true),
    ("chmod 500 d", true),
    ("touch d/b", false),
    ("rm d/a", false),
    ("mv d/a d/c", false),
    ("mv f d/f", false),
    ("mkdir d/e", false),
    ("ln -s a d/l", false),
    ("ls d", true),
    ("chmod 300 d", true),
    ("ls d", false),
    ("touch d/b", true),
    // Names looked up in the last second stay in the kernel's cache (entry TTL 1 s): past it,
    // the search permission decides.
    ("chmod 600 d && sleep 1.5", true),
    ("cat d/a", false),
    ("test -x d", false),
    ("test -r d", true),
    ("cd d", false),
    ("chmod 700 d && cat d/a && rm d/b && mv d/a d/c", true),
];

#[test]
fn mode_bits_are_enforced_for_the_owner() {
    let Some(m) = Mount::prepare() else { return };
    if !have_tool("setpriv") {
        return;
    }
    // Debian's /dev/fuse is 0666; some images make it root-only, which stops user mounts.
    let fuse = Path::new("/dev/fuse");
    let mode = std::fs::metadata(fuse)
        .expect("stat /dev/fuse")
        .permissions()
        .mode();
    if mode & 0o006 != 0o006 {
        eprintln!(
            "note: /dev/fuse was {:o}; making it 0666 (Debian's default)",
            mode & 0o777
        );
        std::fs::set_permissions(fuse, std::fs::Permissions::from_mode(0o666))
            .expect("chmod /dev/fuse");
    }
    std::fs::set_permissions(m.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_nobody(&m.state);
    chown_nobody(&m.mnt);

    let bin = fybrk_bin();
    let fybrk = |args: &[&str]| {
        let mut c = as_nobody();
        c.arg(&bin).arg("--state").arg(&m.state).args(args);
        fybrk_tests::host_local(&mut c);
        c
    };
    let out = run_timeout(
        fybrk(&["mount"]).arg(&m.mnt).env("HOME", m.root()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "mount as nobody\n{}", describe(&out));

    // One shell, so the cases see each other's effects; each prints its exit status.
    let mut script = String::from("cd \"$1\" || exit 99\n");
    for (i, (cmd, _)) in CASES.iter().enumerate() {
        script.push_str(&format!("( {cmd} ) >/dev/null 2>&1; echo \"{i} $?\"\n"));
    }
    let out = run_timeout(
        as_nobody().args(["sh", "-c", &script, "sh"]).arg(&m.mnt),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut wrong = Vec::new();
    for (i, (cmd, want_ok)) in CASES.iter().enumerate() {
        let rc = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{i} ")))
            .unwrap_or("missing");
        if (rc == "0") != *want_ok {
            let want = if *want_ok { "succeed" } else { "fail" };
            wrong.push(format!("  `{cmd}` should {want}, exit status {rc}"));
        }
    }

    let log = m.log_tail();
    let _ = run_timeout(fybrk(&["unmount"]).arg(&m.mnt), Duration::from_secs(30));
    assert!(
        wrong.is_empty(),
        "as the owner (nobody), through the mount:\n{}\n{}\n{log}",
        wrong.join("\n"),
        describe(&out)
    );
}
