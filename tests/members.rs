//! The folder's member list through real daemons: a device added by one member is known to
//! every member within seconds (also members it never paired with), and `fybrk remove` on one
//! member shuts the removed device out of every member while the others keep syncing.
//!
//! Its own test binary. Run: `cargo build --release -p fybrk && cargo test --release -p
//! fybrk-tests --test members` (root and /dev/fuse, see `tests/lib.rs`).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use std::process::Command;

use fybrk_control::{MemberChangeKind, MembersReply, PairWithReply, VerifyReply};
use fybrk_tests::{
    assert_stays_absent, describe, pair, store_dir, wait_connected, wait_file, wait_for,
    write_file, Gen, Peer, CONNECT_TIMEOUT, STAYS_ABSENT, SYNC_TIMEOUT,
};

/// How long a member entry may take to reach a device two hops away.
const SPREAD: Duration = Duration::from_secs(30);

fn members(p: &Peer) -> MembersReply {
    let out = p.run(&["members", "--json"], Duration::from_secs(30));
    p.check(out.status.success(), || {
        format!("`fybrk members --json` failed\n{}", describe(&out))
    });
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        p.fail(&format!(
            "members --json is not a MembersReply ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

fn ids(r: &MembersReply) -> Vec<String> {
    let mut v: Vec<String> = r.members.iter().map(|m| m.id.clone()).collect();
    v.sort();
    v
}

#[test]
fn members_spread_and_a_removed_device_is_shut_out_everywhere() {
    let Some(mut a) = Peer::start("alpha") else {
        return;
    };
    let Some(mut b) = Peer::start("bravo") else {
        return;
    };
    let Some(mut c) = Peer::start("charlie") else {
        return;
    };
    // Alpha invites bravo, bravo invites charlie: alpha never pairs with charlie.
    pair(&a, &b);
    wait_connected(&a, &b, CONNECT_TIMEOUT);
    // (Charlie joins with `--json`: each answer a JSON line, the last one `joined`.)
    let inv = b.invite(&[]);
    let out = c.run(
        &["pair-with", "--yes", "--json", &inv.payload],
        Duration::from_secs(120),
    );
    c.check(out.status.success(), || describe(&out));
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    match serde_json::from_str::<PairWithReply>(&last) {
        Ok(PairWithReply::Joined { peer }) => {
            c.check(peer.name == "bravo", || format!("joined {peer:?}"))
        }
        other => c.fail(&format!("pair-with --json ended with {last:?}: {other:?}")),
    }
    let mut want = vec![a.id(), b.id(), c.id()];
    want.sort();
    let list = wait_for("alpha to list charlie as a member", SPREAD, || {
        let r = members(&a);
        if ids(&r) == want {
            Ok(r)
        } else {
            Err(format!("alpha's members: {r:?}"))
        }
    });
    let c_id = c.id();
    let charlie = list.members.iter().find(|m| m.id == c_id).unwrap();
    a.check(
        charlie.added_by == b.id() && charlie.added_by_name == "bravo",
        || format!("charlie should be added by bravo: {charlie:?}"),
    );
    let founder = list.members.iter().find(|m| m.id == a.id()).unwrap();
    a.check(founder.added_by == a.id() && founder.this_device, || {
        format!("alpha founded the folder: {founder:?}")
    });
    wait_for("charlie to hold the same list", SPREAD, || {
        let r = members(&c);
        if ids(&r) == want {
            Ok(())
        } else {
            Err(format!("charlie's members: {r:?}"))
        }
    });
    // The join is announced in alpha's status too.
    let st = a.status_json();
    a.check(
        st.member_changes.iter().any(|c| {
            c.change == MemberChangeKind::Added
                && c.id == c_id
                && c.name == "charlie"
                && c.by_name == "bravo"
        }),
        || format!("alpha's status should say charlie was added by bravo: {st:?}"),
    );
    let shown =
        String::from_utf8_lossy(&a.run(&["status"], Duration::from_secs(30)).stdout).into_owned();
    a.check(
        shown.contains("charlie") && shown.contains("added by bravo"),
        || format!("`fybrk status` should announce the join:\n{shown}"),
    );
    let bravo = list.members.iter().find(|m| m.id == b.id()).unwrap();
    a.check(
        bravo.connected && bravo.path.is_some() && bravo.quality.is_some(),
        || format!("a connected member shows its path and quality: {bravo:?}"),
    );
    let text = a.run(&["members"], Duration::from_secs(30));
    let shown = String::from_utf8_lossy(&text.stdout).into_owned();
    a.check(
        shown.contains("charlie") && shown.contains("added by bravo"),
        || format!("`fybrk members` should say who added charlie:\n{shown}"),
    );

    // Alpha removes charlie; bravo, which paired charlie, shuts it out too.
    a.ok(write_file(&a.path("before.txt"), b"v1"), "write");
    wait_file(&c, "before.txt", b"v1", SYNC_TIMEOUT);
    let out = a.run(&["remove", "charlie"], Duration::from_secs(30));
    a.check(out.status.success(), || {
        format!("`fybrk remove charlie` failed\n{}", describe(&out))
    });
    want.retain(|id| *id != c.id());
    for p in [&a, &b] {
        wait_for(&format!("{} to drop charlie", p.name), SPREAD, || {
            let r = members(p);
            if ids(&r) == want {
                Ok(())
            } else {
                Err(format!("{}'s members: {r:?}", p.name))
            }
        });
    }
    let st = b.status_json();
    b.check(
        st.member_changes
            .iter()
            .any(|c| c.change == MemberChangeKind::Removed && c.id == c_id && c.by_name == "alpha"),
        || format!("bravo's status should say alpha removed charlie: {st:?}"),
    );
    wait_for(
        "bravo to close its link to charlie",
        CONNECT_TIMEOUT,
        || match b.status_peer(&c) {
            Some(e) if e.connected => Err(format!("bravo shows charlie: {e:?}")),
            _ => Ok(()),
        },
    );
    // A file written after the removal reaches bravo (alpha and bravo keep syncing), never
    // charlie; charlie's own new file reaches nobody.
    b.ok(write_file(&b.path("after.txt"), b"after"), "write");
    c.ok(write_file(&c.path("from-charlie.txt"), b"c"), "write");
    wait_file(&a, "after.txt", b"after", SYNC_TIMEOUT);
    assert_stays_absent(
        &[
            (&c, "after.txt"),
            (&a, "from-charlie.txt"),
            (&b, "from-charlie.txt"),
        ],
        STAYS_ABSENT,
    );

    // The removal rotated the folder key. Alpha's and bravo's new chunks are sealed under a
    // key charlie never got, and it survives a restart.
    let (ka, kb) = (members(&a), members(&b));
    a.check(
        ka.keys == 2 && kb.keys == 2 && ka.current_key == kb.current_key,
        || format!("one new key on both: alpha {ka:?}, bravo {kb:?}"),
    );
    a.check(members(&c).keys == 1, || {
        "charlie keeps only the old key".into()
    });
    let mut gen = Gen::new(12);
    let big = gen.bytes(300_000);
    a.ok(write_file(&a.path("after-a.bin"), &big), "write");
    wait_file(&b, "after-a.bin", &big, SYNC_TIMEOUT);
    b.restart();
    wait_connected(&a, &b, CONNECT_TIMEOUT);
    b.ok(write_file(&b.path("after-restart.txt"), b"again"), "write");
    wait_file(&a, "after-restart.txt", b"again", SYNC_TIMEOUT);
    wait_file(&b, "after-a.bin", &big, SYNC_TIMEOUT);
    a.down();
    b.down();
    c.down();
    // With a copy of a member's whole store (all of its ciphertext) in charlie's state dir,
    // charlie's keys open every chunk from before the removal and none written after it.
    for p in [&a, &b] {
        let own = verify_json(p);
        p.check(own.problems.is_empty(), || {
            format!("{} holds every key of its store: {own:?}", p.name)
        });
        let theirs = store_dir(&p.state);
        let mine = store_dir(&c.state);
        std::fs::remove_dir_all(&mine).unwrap();
        let cp = Command::new("cp")
            .arg("-a")
            .arg(&theirs)
            .arg(&mine)
            .output()
            .unwrap();
        c.check(cp.status.success(), || describe(&cp));
        let r = verify_json(&c);
        let unreadable = r
            .problems
            .iter()
            .filter(|m| m.contains("does not hold"))
            .count();
        c.check(unreadable >= 3 && unreadable == r.problems.len(), || {
            format!(
                "charlie's old key must open no chunk written after the removal \
                 (after.txt, after-a.bin's chunks, after-restart.txt) and nothing else may fail; \
                 {}'s store: {r:?}",
                p.name
            )
        });
        c.check((unreadable as u64) < r.chunks_checked, || {
            format!("chunks from before the removal open with charlie's key: {r:?}")
        });
    }
}

/// `fybrk verify --json` (the daemon is down: the store is opened directly).
fn verify_json(p: &Peer) -> VerifyReply {
    let out = p.run(&["verify", "--json"], Duration::from_secs(120));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| p.fail(&format!("verify --json ({e}): {}", describe(&out))))
}
