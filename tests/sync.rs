//! Device-to-device sync with real daemons: two to four `fybrk` daemons on one machine, each on
//! its own FUSE mount, listening on loopback (`--listen 127.0.0.1:0`) and paired with
//! `fybrk pair --no-wait --json` / `fybrk pair-with`. Everything goes through the mounts and the
//! CLI (see the contract in the sync CLI spec); nothing looks inside a daemon.
//!
//! - every kind of change replicates both ways, and ends identical on both devices;
//! - pairing refuses bad invitations with a message that says what is wrong, and nothing reaches
//!   a refused or unpaired device;
//! - a device that was offline catches up; concurrent edits keep both versions (a conflict copy);
//! - a change travels through a device paired with both ends (mesh);
//! - a file still being written streams to the peer before it is closed;
//! - a 1 GiB file and 10,000 small files arrive intact; a sender killed mid-transfer leaves no
//!   partial file behind and the transfer completes after it restarts.
//!
//! Waits poll for a condition with generous timeouts (CI machines are slow) and never sleep
//! blindly; a failed wait reports what was there instead and every daemon's log tail.
//!
//! Its own test binary. Run: `cargo build --release -p fybrk && cargo test --release -p
//! fybrk-tests --test sync -- --test-threads=2` (root and /dev/fuse, see `tests/lib.rs`).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fybrk_tests::{
    assert_stays_absent, chmod, describe, diff_trees, hash_file, pair, peer_entry, set_mtime,
    snapshot, wait_connected, wait_file, wait_file_hash, wait_for, wait_gone, wait_tree,
    wait_trees_equal, write_file, write_gen_file_in_child, Compare, Gen, Mount, Peer,
    CONNECT_TIMEOUT, STAYS_ABSENT, SYNC_TIMEOUT,
};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// For gigabyte transfers on a slow two-core machine (both daemons, FUSE and the test share them).
const BIG_TIMEOUT: Duration = Duration::from_secs(300);

/// Contents, modes and file mtimes: what replication must carry. Directory mtimes change on the
/// receiving side whenever it creates an entry, so they are compared one by one where a test set
/// them last (see `STAMPED`).
const SYNCED: Compare = Compare {
    file_mtime: true,
    dir_mtime: false,
};

/// Contents and modes only: for comparing a mount with a reference tree on the native disk,
/// whose mtimes are the moments each side wrote.
const CONTENT: Compare = Compare {
    file_mtime: false,
    dir_mtime: false,
};

/// The heavy tests (a GiB, a 512 MiB kill) take this so they never run at the same time: each
/// keeps both cores busy with two daemons.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The command failed, with a one-line stderr naming the problem (any of `needles`,
/// case-insensitively).
fn assert_refused(who: &Peer, out: &Output, needles: &[&str], what: &str) {
    who.check(!out.status.success(), || {
        format!("{what}: `pair-with` should fail\n{}", describe(out))
    });
    let err = String::from_utf8_lossy(&out.stderr);
    let lower = err.to_lowercase();
    who.check(needles.iter().any(|n| lower.contains(n)), || {
        format!(
            "{what}: stderr should say what is wrong (one of {needles:?})\n{}",
            describe(out)
        )
    });
    who.check(err.trim().lines().count() == 1, || {
        format!(
            "{what}: the spec promises a one-line error on stderr\n{}",
            describe(out)
        )
    });
}

// ---------------------------------------------------------------------------------------------
// 1. Every kind of change, both ways
// ---------------------------------------------------------------------------------------------

/// An empty directory whose mtime each stage sets last: nothing is created in it afterwards, so
/// its mtime must arrive exactly.
const STAMPED: &str = "stamped";

/// Builds under `root/dir` one of each kind of entry. Applied to a mount and to a reference dir on
/// the native disk with the same `seed`, it gives the same tree.
fn create_stage(root: &Path, dir: &str, seed: u64) -> io::Result<()> {
    let d = root.join(dir);
    for sub in ["docs/deep/er", "empty", "gone/sub/leaf", STAMPED] {
        fs::create_dir_all(d.join(sub))?;
    }
    let mut g = Gen::new(seed);
    write_file(&d.join("docs/a.txt"), b"first line\n")?;
    write_file(&d.join("docs/deep/er/b.bin"), &g.bytes(300 * 1024))?;
    // Several chunks, so an edit in the middle is a partial update of the file.
    write_file(&d.join("big.bin"), &g.bytes(3 * MIB as usize + 3))?;
    write_file(&d.join("zero"), b"")?;
    write_file(&d.join("exec"), b"#!/bin/sh\necho hi\n")?;
    write_file(&d.join("gone/sub/leaf/x"), &g.bytes(5000))?;
    write_file(&d.join("gone/y"), b"y")?;
    symlink("docs/a.txt", d.join("link"))?;
    symlink("nowhere/at/all", d.join("dangling"))?;
    chmod(&d.join("exec"), 0o755)?;
    chmod(&d.join("docs/a.txt"), 0o600)?;
    chmod(&d.join("empty"), 0o700)?;
    set_mtime(&d.join("docs/deep/er/b.bin"), 1_500_000_000, 0)?;
    set_mtime(&d.join(STAMPED), 1_400_000_000, 0)?;
    Ok(())
}

/// Changes everything [`create_stage`] made under `root/dir`: edit, append, truncate (shrink and
/// grow), renames across directories (a file and a tree), deletes (file, symlink, tree), a new
/// tree, a retargeted symlink, chmod and mtimes.
fn change_stage(root: &Path, dir: &str, seed: u64) -> io::Result<()> {
    let d = root.join(dir);
    let mut g = Gen::new(seed);
    OpenOptions::new()
        .write(true)
        .open(d.join("big.bin"))?
        .write_all_at(&g.bytes(64 * 1024), MIB + 12_345)?;
    OpenOptions::new()
        .append(true)
        .open(d.join("docs/a.txt"))?
        .write_all(b"second line\n")?;
    OpenOptions::new()
        .write(true)
        .open(d.join("docs/deep/er/b.bin"))?
        .set_len(1000)?;
    OpenOptions::new()
        .write(true)
        .open(d.join("zero"))?
        .set_len(5000)?;
    fs::rename(d.join("docs/a.txt"), d.join("empty/a-moved.txt"))?;
    fs::rename(d.join("docs/deep"), d.join("empty/deep-moved"))?;
    fs::remove_file(d.join("exec"))?;
    fs::remove_file(d.join("dangling"))?;
    fs::remove_dir_all(d.join("gone"))?;
    fs::create_dir_all(d.join("new/a/b"))?;
    write_file(&d.join("new/a/b/c.txt"), b"a new tree\n")?;
    fs::remove_file(d.join("link"))?;
    symlink("empty/a-moved.txt", d.join("link"))?;
    chmod(&d.join("big.bin"), 0o640)?;
    chmod(&d.join("empty"), 0o755)?;
    set_mtime(&d.join("big.bin"), 1_600_000_000, 0)?;
    set_mtime(&d.join("empty/a-moved.txt"), 1_600_000_123, 0)?;
    set_mtime(&d.join(STAMPED), 1_450_000_000, 0)?;
    Ok(())
}

type Stage = fn(&Path, &str, u64) -> io::Result<()>;

#[test]
fn two_devices_replicate_every_kind_of_change_both_ways() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);
    let reference = a.root().join("reference");
    fs::create_dir(&reference).unwrap();

    let steps: [(&str, &Peer, &Peer, Stage, &str); 4] = [
        ("create on alpha", &a, &b, create_stage, "from-a"),
        (
            "bravo changes what alpha made",
            &b,
            &a,
            change_stage,
            "from-a",
        ),
        ("create on bravo", &b, &a, create_stage, "from-b"),
        (
            "alpha changes what bravo made",
            &a,
            &b,
            change_stage,
            "from-b",
        ),
    ];
    for (i, (what, src, dst, stage, dir)) in steps.into_iter().enumerate() {
        let seed = 100 + i as u64;
        stage(&reference, dir, seed).expect("apply the stage to the reference dir");
        src.ok(stage(&src.mnt, dir, seed), what);
        let want = snapshot(&reference).unwrap();
        let here = src.ok(snapshot(&src.mnt), "snapshot the source");
        if let Some(d) = diff_trees(&want, &here, CONTENT) {
            src.fail(&format!(
                "{what}: the source mount differs from the reference: {d}"
            ));
        }
        wait_tree(&dst.mnt, &want, CONTENT, SYNC_TIMEOUT);
        wait_trees_equal(&src.mnt, &dst.mnt, SYNCED, SYNC_TIMEOUT);
        let stamped = Path::new(dir).join(STAMPED);
        let (ts, td) = (
            src.ok(fs::metadata(src.path(&stamped)), "stat stamped")
                .mtime(),
            dst.ok(fs::metadata(dst.path(&stamped)), "stat stamped")
                .mtime(),
        );
        wait_for(
            &format!(
                "{what}: the mtime of {} ({ts}) on {}",
                stamped.display(),
                dst.name
            ),
            SYNC_TIMEOUT,
            || match fs::metadata(dst.path(&stamped)) {
                Ok(md) if md.mtime() == ts => Ok(()),
                Ok(md) => Err(format!("mtime {} (first seen {td})", md.mtime())),
                Err(e) => Err(e.to_string()),
            },
        );
    }
    a.assert_verify_ok();
    b.assert_verify_ok();
}

// ---------------------------------------------------------------------------------------------
// 2. Pairing errors, peers, remount, unpair
// ---------------------------------------------------------------------------------------------

/// `payload` with the character in the middle changed to another base32 character.
fn flip_middle(payload: &str) -> String {
    let mut chars: Vec<char> = payload.chars().collect();
    let mid = "fybrk1:".len() + (chars.len() - "fybrk1:".len()) / 2;
    chars[mid] = if chars[mid].eq_ignore_ascii_case(&'Q') {
        'R'
    } else {
        'Q'
    };
    chars.into_iter().collect()
}

#[test]
fn pairing_refuses_bad_invitations_with_a_clear_error() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    let Some(r) = Peer::start("refused") else {
        return;
    };
    let private = b"written on alpha before anyone paired\n";
    a.ok(write_file(&a.path("private.txt"), private), "write");

    let inv = a.invite(&[]);
    let png = a.ok(
        fs::read(&inv.png),
        format!("read the QR PNG {}", inv.png.display()),
    );
    a.check(png.starts_with(b"\x89PNG\r\n\x1a\n"), || {
        format!("{} is not a PNG", inv.png.display())
    });
    a.check(inv.expires_unix > unix_now() + 60, || {
        format!(
            "a default invitation expires at {}, now is {}",
            inv.expires_unix,
            unix_now()
        )
    });

    // Refused before any network traffic: the text itself is wrong.
    let p = inv.payload.as_str();
    let cases: [(&str, String, &[&str]); 5] = [
        (
            "not an invitation",
            "hello, this is not an invitation".into(),
            &[
                "not a fybrk invitation",
                "not an invitation",
                "malformed",
                "invalid",
            ],
        ),
        (
            "garbage after the prefix",
            "fybrk1:hello world".into(),
            &["damaged", "malformed", "invalid", "corrupt", "checksum"],
        ),
        (
            "truncated",
            p[..p.len() * 2 / 3].to_string(),
            &["incomplete", "truncated", "missing", "too short", "cut"],
        ),
        (
            "wrong version",
            p.replacen("fybrk1:", "fybrk9:", 1),
            &["format", "version", "newer", "upgrade"],
        ),
        (
            "a character flipped",
            flip_middle(p),
            &["damaged", "checksum", "corrupt", "mistyped", "typo"],
        ),
    ];
    for (what, text, needles) in &cases {
        let out = r.try_pair_with(text);
        assert_refused(&r, &out, needles, what);
    }

    // A well-formed invitation with the wrong secret: only the inviter can tell.
    let mut forged = fybrk_pair::Invitation::decode(p).expect("alpha's invitation decodes");
    forged.secret[7] ^= 0x5a;
    let out = r.try_pair_with(&forged.encode());
    assert_refused(&r, &out, &["secret", "proof"], "wrong secret");

    // The wrong attempt did not use the invitation up; bravo joins with it.
    let out = b.try_pair_with(p);
    b.check(out.status.success(), || {
        format!(
            "`pair-with` of a fresh invitation failed\n{}",
            describe(&out)
        )
    });
    let said = String::from_utf8_lossy(&out.stdout);
    b.check(
        said.contains("paired with") && said.contains("alpha"),
        || {
            format!(
                "`pair-with` should say `paired with alpha (ID)`\n{}",
                describe(&out)
            )
        },
    );
    let short = a.invite(&["--expires", "2s"]);
    let now = unix_now();
    a.check(short.expires_unix <= now + 5, || {
        format!(
            "`--expires 2s` gave expires_unix {} at {now}",
            short.expires_unix
        )
    });
    wait_for(
        "the 2 s invitation to expire",
        Duration::from_secs(30),
        || {
            if unix_now() > short.expires_unix + 1 {
                Ok(())
            } else {
                std::thread::sleep(Duration::from_millis(200));
                Err(format!(
                    "now {} <= expiry {} + 1",
                    unix_now(),
                    short.expires_unix
                ))
            }
        },
    );
    let out = r.try_pair_with(&short.payload);
    assert_refused(&r, &out, &["expired"], "expired");

    // Alpha syncs to bravo, and nothing to the refused device.
    wait_file(&b, "private.txt", private, SYNC_TIMEOUT);
    a.ok(write_file(&a.path("later.txt"), b"later"), "write");
    wait_file(&b, "later.txt", b"later", SYNC_TIMEOUT);
    let seen = r.ok(snapshot(&r.mnt), "snapshot the refused device");
    r.check(seen.is_empty(), || {
        format!(
            "the refused device has files: {:?}",
            seen.keys().collect::<Vec<_>>()
        )
    });
    r.check(peer_entry(&r.peers_json(), &a.id()).is_none(), || {
        format!("the refused device lists alpha: {:?}", r.peers_json())
    });
    a.check(peer_entry(&a.peers_json(), &r.id()).is_none(), || {
        format!("alpha lists the refused device: {:?}", a.peers_json())
    });

    // Bravo used the invitation, so it is spent. Another invitation is open meanwhile, so alpha
    // still takes pairing connections and must say which invitation problem this is.
    let _open = a.invite(&[]);
    let out = r.try_pair_with(p);
    assert_refused(&r, &out, &["used"], "already used");
    a.ok(write_file(&a.path("last.txt"), b"last"), "write");
    wait_file(&b, "last.txt", b"last", SYNC_TIMEOUT);
    let seen = r.ok(snapshot(&r.mnt), "snapshot the refused device");
    r.check(seen.is_empty(), || {
        format!(
            "the refused device has files: {:?}",
            seen.keys().collect::<Vec<_>>()
        )
    });
}

#[test]
fn peers_survive_a_remount_and_unpair_stops_sync() {
    let Some(mut a) = Peer::start("alpha") else {
        return;
    };
    let Some(mut b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);

    // `peers --json` on both sides, before and after both remount.
    for round in ["after pairing", "after both remounted"] {
        if round != "after pairing" {
            a.restart();
            b.restart();
        }
        wait_connected(&a, &b, CONNECT_TIMEOUT);
        for (x, y) in [(&a, &b), (&b, &a)] {
            let v = x.peers_json();
            let e = peer_entry(&v, &y.id()).unwrap_or_else(|| {
                x.fail(&format!(
                    "{round}: {} does not list {}: {v:?}",
                    x.name, y.name
                ))
            });
            x.check(e.name == y.name, || {
                format!(
                    "{round}: {}'s entry for {} has the wrong name: {e:?}",
                    x.name, y.name
                )
            });
            // `addrs` is an array: `peers_json` parses it as one or fails.
        }
        let v = b.peers_json();
        let addrs = &peer_entry(&v, &a.id()).unwrap().addrs;
        b.check(
            addrs.iter().any(|x| x.to_string() == a.listen_addr()),
            || {
                format!(
                    "{round}: bravo's addrs for alpha lack {}: {v:?}",
                    a.listen_addr()
                )
            },
        );
        let tag = round.replace(' ', "-");
        a.ok(
            write_file(&a.path(format!("a-{tag}")), tag.as_bytes()),
            "write",
        );
        b.ok(
            write_file(&b.path(format!("b-{tag}")), tag.as_bytes()),
            "write",
        );
        wait_file(&b, format!("a-{tag}"), tag.as_bytes(), SYNC_TIMEOUT);
        wait_file(&a, format!("b-{tag}"), tag.as_bytes(), SYNC_TIMEOUT);
    }

    // Unpair on alpha's side, right after bravo restarted: neither direction flows any more.
    // (While bravo was down alpha kept dialling it; a dial still in flight at the unpair must not
    // bring the link back when bravo answers.)
    b.restart();
    let out = a.run(&["unpair", &b.id()], Duration::from_secs(60));
    a.check(out.status.success(), || {
        format!("`fybrk unpair` failed\n{}", describe(&out))
    });
    a.check(peer_entry(&a.peers_json(), &b.id()).is_none(), || {
        format!("alpha still lists bravo after unpair: {:?}", a.peers_json())
    });
    wait_for(
        "bravo to show alpha not connected",
        CONNECT_TIMEOUT,
        || match b.status_peer(&a) {
            Some(e) if e.connected => Err(format!("bravo shows alpha: {e:?}")),
            _ => Ok(()),
        },
    );
    a.ok(write_file(&a.path("after-unpair-a.txt"), b"a"), "write");
    b.ok(write_file(&b.path("after-unpair-b.txt"), b"b"), "write");
    assert_stays_absent(
        &[(&b, "after-unpair-a.txt"), (&a, "after-unpair-b.txt")],
        STAYS_ABSENT,
    );
    let e = b.status_peer(&a);
    b.check(e.as_ref().is_none_or(|e| !e.connected), || {
        format!(
            "bravo shows alpha connected after alpha unpaired it: {e:?}\n(alpha's side) {}",
            a.log_tail()
        )
    });
}

// ---------------------------------------------------------------------------------------------
// 3. A revoked device and a late joiner see nothing new
// ---------------------------------------------------------------------------------------------

#[test]
fn unpaired_and_refused_devices_get_no_changes() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    let Some(mut c) = Peer::start("charlie") else {
        return;
    };
    let Some(d) = Peer::start("delta") else {
        return;
    };
    pair(&a, &b);
    let inv = a.invite(&[]);
    let out = c.try_pair_with(&inv.payload);
    c.check(out.status.success(), || {
        format!("charlie's pair-with failed\n{}", describe(&out))
    });
    a.ok(write_file(&a.path("before.txt"), b"v1"), "write");
    wait_file(&b, "before.txt", b"v1", SYNC_TIMEOUT);
    wait_file(&c, "before.txt", b"v1", SYNC_TIMEOUT);

    // Alpha revokes charlie (by name).
    let out = a.run(&["unpair", "charlie"], Duration::from_secs(60));
    a.check(out.status.success(), || {
        format!("`fybrk unpair charlie` failed\n{}", describe(&out))
    });
    a.check(peer_entry(&a.peers_json(), &c.id()).is_none(), || {
        format!("alpha still lists charlie: {:?}", a.peers_json())
    });
    wait_for(
        "charlie to show alpha not connected",
        CONNECT_TIMEOUT,
        || match c.status_peer(&a) {
            Some(e) if e.connected => Err(format!("charlie shows alpha: {e:?}")),
            _ => Ok(()),
        },
    );

    // New changes reach bravo (the barrier: alpha is sending), never charlie; charlie's own
    // changes reach nobody.
    a.ok(write_file(&a.path("after.txt"), b"after"), "write");
    a.ok(write_file(&a.path("before.txt"), b"v2"), "write");
    c.ok(write_file(&c.path("from-charlie.txt"), b"c"), "write");
    wait_file(&b, "after.txt", b"after", SYNC_TIMEOUT);
    wait_file(&b, "before.txt", b"v2", SYNC_TIMEOUT);
    assert_stays_absent(
        &[
            (&c, "after.txt"),
            (&a, "from-charlie.txt"),
            (&b, "from-charlie.txt"),
        ],
        STAYS_ABSENT,
    );
    let old = c.ok(fs::read(c.path("before.txt")), "read before.txt on charlie");
    c.check(old == b"v1", || {
        format!("charlie got the new before.txt: {old:?}")
    });

    // A restarted charlie dials alpha again: still refused.
    c.restart();
    a.ok(write_file(&a.path("after-restart.txt"), b"x"), "write");
    wait_file(&b, "after-restart.txt", b"x", SYNC_TIMEOUT);
    assert_stays_absent(
        &[(&c, "after-restart.txt"), (&c, "after.txt")],
        STAYS_ABSENT,
    );
    let e = c.status_peer(&a);
    c.check(e.as_ref().is_none_or(|e| !e.connected), || {
        format!("a revoked charlie shows alpha connected: {e:?}")
    });

    // Delta comes with charlie's (consumed) invitation: refused, and gets nothing.
    let out = d.try_pair_with(&inv.payload);
    assert_refused(&d, &out, &["used"], "an invitation someone already used");
    a.ok(write_file(&a.path("for-bravo.txt"), b"y"), "write");
    wait_file(&b, "for-bravo.txt", b"y", SYNC_TIMEOUT);
    let seen = d.ok(snapshot(&d.mnt), "snapshot delta");
    d.check(seen.is_empty(), || {
        format!("delta got files: {:?}", seen.keys().collect::<Vec<_>>())
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Offline catch-up
// ---------------------------------------------------------------------------------------------

/// A tree with a bit of everything, for the offline changes to work on.
fn base_tree(root: &Path) -> io::Result<()> {
    let mut g = Gen::new(4);
    for d in ["keep/a", "keep/b", "drop/x/y", "ren/sub"] {
        fs::create_dir_all(root.join(d))?;
    }
    write_file(&root.join("keep/a/1.txt"), b"one\n")?;
    write_file(&root.join("keep/a/2.bin"), &g.bytes(MIB as usize))?;
    write_file(&root.join("keep/b/3.txt"), b"three\n")?;
    write_file(&root.join("drop/x/y/4.txt"), b"four\n")?;
    write_file(&root.join("ren/sub/5.txt"), b"five\n")?;
    write_file(&root.join("app.log"), b"line 1\n")?;
    write_file(&root.join("top.txt"), b"top\n")?;
    Ok(())
}

/// Changes made while the other device is offline; `side` keeps the two rounds apart.
fn offline_changes(root: &Path, side: &str, seed: u64) -> io::Result<()> {
    let mut g = Gen::new(seed);
    write_file(
        &root.join("keep/a/1.txt"),
        format!("one, rewritten on {side}\n").as_bytes(),
    )?;
    OpenOptions::new()
        .append(true)
        .open(root.join("app.log"))?
        .write_all(format!("a line from {side}\n").as_bytes())?;
    write_file(
        &root.join(format!("keep/new-{side}.bin")),
        &g.bytes(2 * MIB as usize),
    )?;
    fs::create_dir_all(root.join(format!("new-{side}/deep/dir")))?;
    write_file(
        &root.join(format!("new-{side}/deep/dir/f.txt")),
        side.as_bytes(),
    )?;
    fs::remove_file(root.join("keep/b/3.txt"))?;
    if root.join("drop").exists() {
        fs::remove_dir_all(root.join("drop"))?;
    }
    let (from, to) = if root.join("ren").exists() {
        ("ren", "renamed")
    } else {
        ("renamed", "ren")
    };
    fs::rename(root.join(from), root.join(to))?;
    chmod(
        &root.join("top.txt"),
        if side == "alpha" { 0o600 } else { 0o644 },
    )?;
    set_mtime(&root.join("keep/a/2.bin"), 1_550_000_000 + seed as i64, 0)?;
    write_file(
        &root.join("keep/b/3.txt"),
        format!("three again, {side}\n").as_bytes(),
    )?;
    Ok(())
}

#[test]
fn a_device_that_was_offline_catches_up() {
    let Some(mut a) = Peer::start("alpha") else {
        return;
    };
    let Some(mut b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);
    a.ok(base_tree(&a.mnt), "build the base tree");
    wait_trees_equal(&a.mnt, &b.mnt, SYNCED, SYNC_TIMEOUT);

    b.down();
    a.ok(
        offline_changes(&a.mnt, "alpha", 1),
        "change alpha while bravo is offline",
    );
    let want = a.ok(snapshot(&a.mnt), "snapshot alpha");
    b.up();
    wait_tree(&b.mnt, &want, SYNCED, SYNC_TIMEOUT);

    // And the other way round.
    a.down();
    b.ok(
        offline_changes(&b.mnt, "bravo", 2),
        "change bravo while alpha is offline",
    );
    let want = b.ok(snapshot(&b.mnt), "snapshot bravo");
    a.up();
    wait_tree(&a.mnt, &want, SYNCED, SYNC_TIMEOUT);
    wait_trees_equal(&a.mnt, &b.mnt, SYNCED, SYNC_TIMEOUT);
    a.assert_verify_ok();
    b.assert_verify_ok();
}

// ---------------------------------------------------------------------------------------------
// 5. Conflicts
// ---------------------------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// If `name` is `STEM.sync-conflict-YYYYMMDD-HHMMSS-DEVICE[-N]EXT`, the unix time of its stamp.
fn conflict_stamp(name: &str, stem: &str, ext: &str) -> Option<i64> {
    let mid = name
        .strip_prefix(stem)?
        .strip_prefix(".sync-conflict-")?
        .strip_suffix(ext)?;
    let parts: Vec<&str> = mid.split('-').collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let ok = (parts.len() == 3 || parts.len() == 4)
        && digits(parts[0], 8)
        && digits(parts[1], 6)
        && !parts[2].is_empty()
        && parts[2].bytes().all(|b| b.is_ascii_alphanumeric())
        && (parts.len() == 3
            || (!parts[3].is_empty() && parts[3].bytes().all(|b| b.is_ascii_digit())));
    if !ok {
        return None;
    }
    let n = |s: &str| s.parse::<i64>().unwrap();
    let (date, time) = (parts[0], parts[1]);
    let days = days_from_civil(n(&date[..4]), n(&date[4..6]), n(&date[6..]));
    Some(days * 86_400 + n(&time[..2]) * 3600 + n(&time[2..4]) * 60 + n(&time[4..]))
}

/// Names in the mount's root that are conflict copies of `STEM.EXT`.
fn conflict_copies(m: &Mount, stem: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&m.mnt)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{stem}.sync-conflict")))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn concurrent_edits_keep_both_versions_and_an_edit_beats_a_delete() {
    let Some(mut a) = Peer::start("alpha") else {
        return;
    };
    let Some(mut b) = Peer::start("bravo") else {
        return;
    };
    let t0 = unix_now() as i64;
    pair(&a, &b);
    for (name, data) in [
        ("doc.txt", &b"the original\n"[..]),
        ("a-edits.txt", b"base, alpha will edit, bravo delete\n"),
        ("b-edits.txt", b"base, bravo will edit, alpha delete\n"),
    ] {
        a.ok(write_file(&a.path(name), data), format!("write {name}"));
        wait_file(&b, name, data, SYNC_TIMEOUT);
    }

    let va: &[u8] = b"alpha's version of the document\n";
    let vb: &[u8] = b"bravo's version, which is a little longer\n";
    let a_edit: &[u8] = b"edited on alpha while bravo deleted it\n";
    let b_edit: &[u8] = b"edited on bravo while alpha deleted it\n";
    b.down();
    a.ok(write_file(&a.path("doc.txt"), va), "edit doc.txt on alpha");
    a.ok(write_file(&a.path("a-edits.txt"), a_edit), "edit on alpha");
    a.ok(fs::remove_file(a.path("b-edits.txt")), "delete on alpha");
    a.down();
    b.up();
    b.ok(write_file(&b.path("doc.txt"), vb), "edit doc.txt on bravo");
    b.ok(write_file(&b.path("b-edits.txt"), b_edit), "edit on bravo");
    b.ok(fs::remove_file(b.path("a-edits.txt")), "delete on bravo");
    a.up();

    wait_for(
        "both devices to agree on doc.txt and one conflict copy, and keep both edits",
        SYNC_TIMEOUT,
        || {
            let mut seen = Vec::new();
            for m in [&a, &b] {
                let doc =
                    fs::read(m.path("doc.txt")).map_err(|e| format!("{}: doc.txt: {e}", m.name))?;
                let copies = conflict_copies(m, "doc");
                if copies.len() != 1 {
                    return Err(format!(
                        "{}: conflict copies of doc.txt: {copies:?}",
                        m.name
                    ));
                }
                let copy = fs::read(m.path(&copies[0]))
                    .map_err(|e| format!("{}: {}: {e}", m.name, copies[0]))?;
                for (name, want) in [("a-edits.txt", a_edit), ("b-edits.txt", b_edit)] {
                    match fs::read(m.path(name)) {
                        Ok(got) if got == want => {}
                        other => return Err(format!("{}: {name}: {other:?}", m.name)),
                    }
                }
                seen.push((doc, copies[0].clone(), copy));
            }
            if seen[0] != seen[1] {
                return Err(format!(
                    "alpha has doc.txt {:?} + {} {:?}; bravo has doc.txt {:?} + {} {:?}",
                    String::from_utf8_lossy(&seen[0].0),
                    seen[0].1,
                    String::from_utf8_lossy(&seen[0].2),
                    String::from_utf8_lossy(&seen[1].0),
                    seen[1].1,
                    String::from_utf8_lossy(&seen[1].2),
                ));
            }
            Ok(())
        },
    );
    let doc = fs::read(a.path("doc.txt")).unwrap();
    let name = conflict_copies(&a, "doc").remove(0);
    let copy = fs::read(a.path(&name)).unwrap();
    a.check(
        (doc == va && copy == vb) || (doc == vb && copy == va),
        || {
            format!(
                "a version was lost: doc.txt {:?}, {name} {:?}",
                String::from_utf8_lossy(&doc),
                String::from_utf8_lossy(&copy)
            )
        },
    );
    let stamp = conflict_stamp(&name, "doc", ".txt");
    let now = unix_now() as i64;
    a.check(stamp.is_some_and(|s| s >= t0 - 5 && s <= now + 5), || {
        format!(
            "{name} is not doc.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.txt with the losing version's \
             time (UTC, between {t0} and {now}); stamp parses as {stamp:?}"
        )
    });
    wait_trees_equal(&a.mnt, &b.mnt, SYNCED, SYNC_TIMEOUT);
    a.assert_verify_ok();
    b.assert_verify_ok();
}

// ---------------------------------------------------------------------------------------------
// 6. Mesh
// ---------------------------------------------------------------------------------------------

#[test]
fn changes_travel_through_a_device_paired_with_both_ends() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    let Some(c) = Peer::start("charlie") else {
        return;
    };
    pair(&a, &b);
    pair(&b, &c);

    a.ok(fs::create_dir_all(a.path("dir-a/sub")), "mkdir");
    a.ok(
        write_file(&a.path("dir-a/sub/from-a.txt"), b"made on alpha"),
        "write",
    );
    wait_file(&c, "dir-a/sub/from-a.txt", b"made on alpha", SYNC_TIMEOUT);
    c.ok(
        write_file(&c.path("from-c.txt"), b"made on charlie"),
        "write",
    );
    wait_file(&a, "from-c.txt", b"made on charlie", SYNC_TIMEOUT);

    // Changes to what the far end made, both ways.
    c.ok(
        write_file(&c.path("dir-a/sub/from-a.txt"), b"changed on charlie"),
        "write",
    );
    a.ok(fs::remove_file(a.path("from-c.txt")), "delete");
    wait_file(
        &a,
        "dir-a/sub/from-a.txt",
        b"changed on charlie",
        SYNC_TIMEOUT,
    );
    wait_gone(&c, "from-c.txt", SYNC_TIMEOUT);
    wait_trees_equal(&a.mnt, &c.mnt, SYNCED, SYNC_TIMEOUT);
    wait_trees_equal(&a.mnt, &b.mnt, SYNCED, SYNC_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// 7. Large: a GiB file and 10,000 small files
// ---------------------------------------------------------------------------------------------

fn small_file(d: u64, f: u64) -> Vec<u8> {
    let mut g = Gen::new(d * 1000 + f);
    let mut data = format!("small file {d}/{f}\n").into_bytes();
    let n = g.below(2000) as usize;
    data.extend_from_slice(&g.bytes(n));
    data
}

#[test]
fn a_gib_file_and_ten_thousand_small_files_reach_the_peer() {
    let _heavy = heavy();
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);

    let t = Instant::now();
    let hash = a.ok(
        write_gen_file_in_child(&a.path("big.bin"), 1, GIB),
        "write the 1 GiB file",
    );
    eprintln!("1 GiB written on alpha in {:?}", t.elapsed());
    a.ok(fs::create_dir(a.path("small")), "mkdir small");
    for d in 0..100 {
        let dir = a.path(format!("small/d{d:02}"));
        a.ok(fs::create_dir(&dir), "mkdir");
        for f in 0..100 {
            a.ok(
                write_file(&dir.join(format!("f{f:02}")), &small_file(d, f)),
                "write",
            );
        }
    }
    eprintln!("+ 10,000 small files written on alpha at {:?}", t.elapsed());

    wait_file_hash(&b, "big.bin", GIB, hash, BIG_TIMEOUT);
    eprintln!("1 GiB identical on bravo at {:?}", t.elapsed());
    // Counting first: snapshotting 10,000 files on every poll would slow the sync it waits for.
    wait_for("bravo to count 10,001 files", BIG_TIMEOUT, || {
        let st = b.status_json();
        if st.files >= 10_001 {
            Ok(())
        } else {
            std::thread::sleep(Duration::from_millis(500));
            Err(format!("bravo status: {st:?}"))
        }
    });
    let want = a.ok(snapshot(&a.path("small")), "snapshot small/ on alpha");
    a.check(want.len() == 10_100, || {
        format!("alpha has {} entries in small/", want.len())
    });
    wait_tree(&b.path("small"), &want, SYNCED, SYNC_TIMEOUT);
    eprintln!("10,000 files identical on bravo at {:?}", t.elapsed());
    b.assert_verify_ok();
}

/// Replication while writing: the chunks of a file still open for writing on alpha reach bravo
/// before the file is closed (bravo counts them as `early_chunks`, and has no record yet), and
/// at `close` only the record and the tail are left: the file then arrives intact.
#[test]
fn a_file_being_written_streams_to_the_peer_before_it_is_closed() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);
    wait_connected(&a, &b, CONNECT_TIMEOUT);

    let mut g = Gen::new(15);
    let data = g.bytes((16 * MIB) as usize);
    let mut f = a.ok(File::create(a.path("growing.bin")), "create growing.bin");
    for piece in data.chunks(MIB as usize) {
        a.ok(f.write_all(piece), "write 1 MiB");
    }
    // Still open: several full chunk batches are in alpha's store and offered.
    wait_for(
        "bravo to receive chunks of the open file",
        SYNC_TIMEOUT,
        || {
            let early = b.status_peer(&a).and_then(|p| p.early_chunks).unwrap_or(0);
            if early >= 64 {
                Ok(())
            } else {
                std::thread::sleep(Duration::from_millis(100));
                Err(format!("bravo received {early} chunks early"))
            }
        },
    );
    // The create replicates at once (an empty file); the content only with the close.
    let len = fs::metadata(b.path("growing.bin")).map_or(0, |m| m.len());
    b.check(len == 0, || {
        format!("growing.bin has {len} bytes on bravo before alpha closed it")
    });
    a.ok(f.sync_all(), "fsync growing.bin");
    drop(f);
    wait_file_hash(
        &b,
        "growing.bin",
        data.len() as u64,
        blake3::hash(&data),
        SYNC_TIMEOUT,
    );
    let early = b.status_peer(&a).and_then(|p| p.early_chunks).unwrap_or(0);
    eprintln!("bravo received {early} chunks of growing.bin before its record");
    b.assert_verify_ok();
}

// ---------------------------------------------------------------------------------------------
// 8. kill -9 of the sender mid-transfer
// ---------------------------------------------------------------------------------------------

/// Which complete version `big.bin` on `m` is: `Ok(None)` absent, `Ok(Some(i))` version `i` of
/// `versions` (len, hash). A mismatch is read again a few times (a read racing with the switch
/// from one version to the next may mix them) before it counts as a partial file; the error lists
/// every attempt.
fn which_version(m: &Mount, versions: &[(u64, blake3::Hash)]) -> Result<Option<usize>, String> {
    let p = m.path("big.bin");
    let mut tries = Vec::new();
    for _ in 0..5 {
        match hash_file(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => tries.push(format!("read error: {e}")),
            Ok((len, h)) => match versions.iter().position(|v| *v == (len, h)) {
                Some(i) => return Ok(Some(i)),
                None => tries.push(format!("{len} bytes hashing to {}", &h.to_hex()[..16])),
            },
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(tries.join("; "))
}

#[test]
fn kill9_of_the_sender_mid_transfer_leaves_no_partial_file_and_resumes() {
    let _heavy = heavy();
    let Some(mut a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);
    let (len1, len2) = (8 * MIB, 512 * MIB);
    let v1 = a.ok(
        write_gen_file_in_child(&a.path("big.bin"), 11, len1),
        "write v1",
    );
    wait_file_hash(&b, "big.bin", len1, v1, SYNC_TIMEOUT);
    wait_connected(&a, &b, CONNECT_TIMEOUT);

    // Overwritten in place (O_TRUNC): the truncation is committed at open, so the empty file is
    // a complete version of alpha's big.bin too. Written by a child `dd` (see
    // `write_gen_file_in_child`), so alpha commits no half-written v2 on a stray flush: any other
    // size bravo shows is a partial transfer. fsynced: v2 must survive the kill on alpha, so the
    // transfer has something to resume.
    let seq0 = a.status_json().sequence;
    let v2 = a.ok(
        write_gen_file_in_child(&a.path("big.bin"), 12, len2),
        "write v2",
    );
    let seq1 = a.status_json().sequence;
    let versions = [(0, blake3::hash(b"")), (len1, v1), (len2, v2)];
    let names = ["empty (the O_TRUNC)", "v1", "v2"];
    let finished_early = wait_for("bravo to start fetching v2", SYNC_TIMEOUT, || {
        match which_version(&b, &versions) {
            Ok(Some(2)) => return Ok(true),
            Ok(_) => {}
            Err(e) => panic!(
                "bravo shows a partial big.bin before the kill: {e}\n(alpha's sequence went \
                 {seq0} -> {seq1} over the v2 write; bravo's entry for alpha: {:?})",
                b.status_peer(&a)
            ),
        }
        for (x, y) in [(&b, &a), (&a, &b)] {
            if let Some(e) = x.status_peer(y) {
                if e.connected && e.pending_bytes > 0 {
                    return Ok(false);
                }
            }
        }
        Err(format!(
            "bravo's entry for alpha: {:?}; alpha's for bravo: {:?}",
            b.status_peer(&a),
            a.status_peer(&b)
        ))
    });
    a.kill9();
    if finished_early {
        eprintln!("note: bravo had all of v2 before the kill; the kill interrupted nothing");
    }

    // Bravo holds a complete version, now and a little later (an apply in flight at the kill
    // must not leave half of v2 behind).
    let mut held = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match which_version(&b, &versions) {
            Ok(v) => {
                let name = v.map_or("absent", |i| names[i]);
                if held.last() != Some(&name) {
                    held.push(name);
                }
            }
            Err(e) => panic!("bravo's big.bin after alpha was killed is no complete version: {e}"),
        }
    }
    eprintln!("bravo's big.bin in the 3 s after the kill: {held:?}");
    b.assert_verify_ok();

    a.up();
    let here = a.ok(
        hash_file(&a.path("big.bin")),
        "read v2 on alpha after the kill",
    );
    a.check(here == (len2, v2), || {
        format!(
            "alpha lost its fsynced v2 across kill -9: {} bytes, {}",
            here.0,
            here.1.to_hex()
        )
    });
    wait_file_hash(&b, "big.bin", len2, v2, BIG_TIMEOUT);
    b.assert_verify_ok();
    a.assert_verify_ok();
}

/// The name check of the conflict test, on its own (no mount needed).
#[test]
fn conflict_copy_names_are_recognised() {
    let stamp = |n: &str| conflict_stamp(n, "doc", ".txt");
    assert_eq!(
        stamp("doc.sync-conflict-20261125-134501-ABCDEFG.txt"),
        Some(1_795_614_301)
    );
    assert_eq!(
        stamp("doc.sync-conflict-20000229-000000-Q2Q2Q2Q-3.txt"),
        Some(951_782_400)
    );
    for bad in [
        "doc.txt",
        "doc.sync-conflict-2026112-134501-ABCDEFG.txt",
        "doc.sync-conflict-20261125-134501-.txt",
        "doc.sync-conflict-20261125-134501-ABCDEFG.bin",
        "other.sync-conflict-20261125-134501-ABCDEFG.txt",
    ] {
        assert_eq!(stamp(bad), None, "{bad}");
    }
    let flipped = flip_middle("fybrk1:AAAAAAAAAA");
    assert_eq!(flipped, "fybrk1:AAAAAQAAAA");
}

/// A writer that forks (every `fork` + `exec` closes the child's inherited copy of the file,
/// which reaches the daemon as a flush) must not publish its half-written file: the peer sees
/// the empty file `create` made, then only the finished content.
#[test]
fn a_writer_that_forks_publishes_only_the_finished_file() {
    let Some(a) = Peer::start("alpha") else {
        return;
    };
    let Some(b) = Peer::start("bravo") else {
        return;
    };
    pair(&a, &b);
    let mut gen = Gen::new(7);
    let first = gen.bytes(3 << 20);
    let rest = gen.bytes(1 << 20);
    let mut f = a.ok(File::create(a.path("busy.bin")), "create busy.bin");
    a.ok(f.write_all(&first), "write the first part");
    let status = Command::new("true").status().expect("run true");
    assert!(status.success());
    // Long enough for a published version to arrive (a 3 MiB file takes milliseconds here).
    std::thread::sleep(Duration::from_secs(2));
    let seen = fs::metadata(b.path("busy.bin")).map(|m| m.len()).ok();
    assert!(
        matches!(seen, None | Some(0)),
        "bravo got a half-written file of {seen:?} bytes while alpha still writes it"
    );
    a.ok(f.write_all(&rest), "write the rest");
    drop(f);
    let mut whole = first;
    whole.extend_from_slice(&rest);
    wait_file(&b, "busy.bin", &whole, Duration::from_secs(30));
}
