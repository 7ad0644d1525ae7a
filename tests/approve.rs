//! Pairing a person approves, through real daemons: a device with a valid invitation gets
//! nothing (no key, no file) until someone on the inviting device allows it; both screens show
//! the same words; a denial, a timeout and a cancel each end the invitation with a message on
//! both sides; the QR code's PNG is private and goes away when the invitation ends.
//!
//! Its own test binary. Run: `cargo build --release -p fybrk && cargo test --release -p
//! fybrk-tests --test approve` (root and /dev/fuse, see `tests/lib.rs`).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fybrk_control::JoinRequestInfo;
use fybrk_tests::{
    assert_stays_absent, describe, pair, peer_entry, wait_file, wait_for, write_file, Peer,
    SYNC_TIMEOUT,
};

/// How long a request may take to show up, and a refused join to end.
const PAIR_WAIT: Duration = Duration::from_secs(60);

/// `fybrk pair-with` running in the background, its standard output collected as it comes.
struct Joining {
    child: Child,
    out: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Joining {
    fn start(joiner: &Peer, payload: &str) -> Joining {
        let mut child = joiner
            .cmd(&["pair-with", payload])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Joining {
            child,
            out,
            reader: Some(reader),
        }
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// The words `pair-with` shows: the indented line after "must show the same words".
    fn code(&self) -> Option<String> {
        let out = self.stdout();
        let mut lines = out.lines().skip_while(|l| !l.contains("same words"));
        lines.next()?;
        lines
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
    }

    /// Waits for it to exit; returns (success, stdout, stderr).
    fn finish(mut self, timeout: Duration) -> (bool, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break Some(st);
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let ok = status.is_some_and(|s| s.success());
        if status.is_none() {
            err.push_str("\n(killed: still running at the timeout)");
        }
        (ok, self.stdout(), err)
    }
}

impl Drop for Joining {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `inviter` lists a request from `joiner`.
fn request_from(inviter: &Peer, joiner: &Peer) -> JoinRequestInfo {
    wait_for(
        &format!(
            "{} to list a join request from {}",
            inviter.name, joiner.name
        ),
        PAIR_WAIT,
        || {
            let s = inviter.status_json();
            s.pair_requests
                .iter()
                .find(|r| r.id == joiner.id())
                .cloned()
                .ok_or_else(|| format!("requests: {:?}", s.pair_requests))
        },
    )
}

/// The joiner still has its own folder, and the inviter does not list it.
fn assert_not_joined(inviter: &Peer, joiner: &Peer, own_folder: &str) {
    let folder = joiner.status_json().folder_id;
    joiner.check(folder == own_folder, || {
        format!(
            "{} switched folders ({own_folder} -> {folder})",
            joiner.name
        )
    });
    inviter.check(
        peer_entry(&inviter.peers_json(), &joiner.id()).is_none(),
        || format!("{} lists {} as paired", inviter.name, joiner.name),
    );
}

#[test]
fn nothing_is_shared_before_approval_and_both_screens_agree() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    let secret = b"alpha's file, for approved devices only\n";
    a.ok(write_file(&a.path("secret.txt"), secret), "write");
    let own_folder = b.status_json().folder_id;

    let inv = a.invite_asking(&[]);
    let mode = std::fs::metadata(&inv.png).unwrap().permissions().mode();
    a.check(mode & 0o777 == 0o600, || {
        format!("the QR code PNG has mode {:o}, want 600", mode & 0o777)
    });
    let joining = Joining::start(&b, &inv.payload);
    let req = request_from(&a, &b);
    a.check(
        req.name == "bravo" && req.code.split(' ').count() == 5,
        || format!("request: {req:?}"),
    );
    let shown = wait_for("pair-with to show the words", PAIR_WAIT, || {
        joining
            .code()
            .ok_or_else(|| format!("pair-with printed: {}", joining.stdout()))
    });
    a.check(shown == req.code, || {
        format!(
            "the screens disagree: inviter {:?}, joiner {shown:?}",
            req.code
        )
    });

    let status = a.run(&["status"], Duration::from_secs(30));
    let shown_status = String::from_utf8_lossy(&status.stdout).into_owned();
    a.check(
        shown_status.contains(&req.code) && shown_status.contains("fybrk approve"),
        || format!("`fybrk status` should list the request with its words:\n{shown_status}"),
    );

    // Waiting: no key, no file, not paired.
    assert_stays_absent(&[(&b, "secret.txt")], Duration::from_secs(3));
    assert_not_joined(&a, &b, &own_folder);

    let prefix = &req.id[..8];
    let out = a.run(&["approve", prefix, "--json"], Duration::from_secs(30));
    a.check(out.status.success(), || {
        format!("`fybrk approve {prefix}` failed\n{}", describe(&out))
    });
    let who: fybrk_control::PeerRef = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| a.fail(&format!("approve --json ({e}): {}", describe(&out))));
    a.check(who.name == "bravo" && who.id == req.id, || {
        format!("{who:?}")
    });
    let (ok, stdout, stderr) = joining.finish(PAIR_WAIT);
    b.check(ok && stdout.contains("paired with alpha"), || {
        format!("pair-with after approval:\n{stdout}\n{stderr}")
    });
    wait_file(&b, "secret.txt", secret, SYNC_TIMEOUT);
    wait_for("the PNG to be deleted once used", PAIR_WAIT, || {
        if inv.png.exists() {
            Err(format!("{} still there", inv.png.display()))
        } else {
            Ok(())
        }
    });
    a.check(a.status_json().pair_requests.is_empty(), || {
        "a request is still listed after approval".into()
    });
}

#[test]
fn deny_timeout_and_cancel_each_end_the_invitation() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    a.ok(write_file(&a.path("secret.txt"), b"no\n"), "write");
    let own_folder = b.status_json().folder_id;

    // Denied by name: both sides say so, the invitation is gone.
    let inv = a.invite_asking(&[]);
    let joining = Joining::start(&b, &inv.payload);
    request_from(&a, &b);
    let out = a.run(&["deny", "bravo"], Duration::from_secs(30));
    a.check(out.status.success(), || {
        format!("deny failed\n{}", describe(&out))
    });
    let (ok, stdout, stderr) = joining.finish(PAIR_WAIT);
    b.check(!ok && stderr.contains("denied"), || {
        format!("pair-with after a denial:\n{stdout}\n{stderr}")
    });
    assert_not_joined(&a, &b, &own_folder);
    wait_for("the denied invitation's PNG to go", PAIR_WAIT, || {
        if inv.png.exists() {
            Err("still there".into())
        } else {
            Ok(())
        }
    });
    let again = b.try_pair_with(&inv.payload);
    b.check(!again.status.success(), || {
        format!("a denied invitation worked again\n{}", describe(&again))
    });

    // Nobody answers within the window.
    let inv = a.invite_asking(&["--approve-within", "2s"]);
    let joining = Joining::start(&b, &inv.payload);
    let (ok, stdout, stderr) = joining.finish(PAIR_WAIT);
    b.check(!ok && stderr.contains("in time"), || {
        format!("pair-with after a timeout:\n{stdout}\n{stderr}")
    });
    assert_not_joined(&a, &b, &own_folder);

    // Cancelled while the device waits.
    let inv = a.invite_asking(&[]);
    let joining = Joining::start(&b, &inv.payload);
    request_from(&a, &b);
    let out = a.run(&["pair", "--cancel"], Duration::from_secs(30));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    a.check(out.status.success() && said.contains("cancelled 1"), || {
        format!("pair --cancel\n{}", describe(&out))
    });
    let (ok, stdout, stderr) = joining.finish(PAIR_WAIT);
    b.check(!ok && stderr.contains("cancelled"), || {
        format!("pair-with after a cancel:\n{stdout}\n{stderr}")
    });
    assert_not_joined(&a, &b, &own_folder);
    assert_stays_absent(&[(&b, "secret.txt")], Duration::from_secs(1));

    // The joiner is none the worse: an invitation approved in advance still works.
    pair(&a, &b);
    wait_file(&b, "secret.txt", b"no\n", SYNC_TIMEOUT);
}

#[test]
fn an_invitation_is_read_from_stdin_or_a_qr_picture() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    let Some(c) = Peer::start("charlie") else {
        return;
    };
    a.ok(write_file(&a.path("hello.txt"), b"hi\n"), "write");

    // Standard input: the secret never appears in the process list.
    let inv = a.invite(&[]);
    let mut child = b
        .cmd(&["pair-with", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", inv.payload).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    b.check(out.status.success(), || {
        format!("pair-with - failed\n{}", describe(&out))
    });
    wait_file(&b, "hello.txt", b"hi\n", SYNC_TIMEOUT);

    // The PNG `fybrk pair` saved, read back as the QR code (copied: it is deleted once used).
    // Charlie has a file of its own: without a terminal to ask on, joining needs --yes, and
    // the refusal uses nothing up.
    c.ok(write_file(&c.path("mine.txt"), b"charlie's\n"), "write");
    let inv = a.invite(&[]);
    let copy = c.root().join("scan.png");
    std::fs::copy(&inv.png, &copy).unwrap();
    let qr = copy.to_str().unwrap();
    let out = c.run(&["pair-with", "--qr", qr], Duration::from_secs(120));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    c.check(
        !out.status.success() && said.contains("1 files") && said.contains("--yes"),
        || {
            format!(
                "pair-with into a non-empty folder should ask\n{}",
                describe(&out)
            )
        },
    );
    let out = c.run(
        &["pair-with", "--yes", "--qr", qr],
        Duration::from_secs(120),
    );
    c.check(out.status.success(), || {
        format!("pair-with --qr failed\n{}", describe(&out))
    });
    wait_file(&c, "hello.txt", b"hi\n", SYNC_TIMEOUT);
    wait_file(&a, "mine.txt", b"charlie's\n", SYNC_TIMEOUT);
}
