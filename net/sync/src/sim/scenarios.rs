//! Deterministic end-to-end scenarios: offline catch-up, corrupt chunks, renames, conflicts.

use super::ops::Op;
use super::world::{NetConfig, World, DEVICE_IDS};
use crate::naming::conflict_copy_path;

const SEC: i64 = 1_000_000_000;
/// 2023-11-14 22:13:20 UTC.
const T0: i64 = 1_700_000_000 * SEC;
const A: usize = 0;
const B: usize = 1;

fn write(w: &mut World, d: usize, path: &str, mtime: i64) {
    w.op(d, &Op::Write(path.into()), mtime);
}

fn pair(net: NetConfig) -> World {
    World::new(7, 2, &[(A, B)], net)
}

#[test]
fn offline_catch_up_resumes_from_the_persisted_sequence() {
    let mut w = pair(NetConfig::quiet());
    for p in ["a.txt", "b", "c"] {
        write(&mut w, A, p, T0);
    }
    w.run_to_quiescence();
    w.assert_converged();
    let a_id = w.devices[A].id();
    let seen = w.devices[B].seen[&a_id];
    assert_eq!(
        seen,
        w.devices[A].seq(),
        "B persisted how far it has A's log"
    );

    w.set_partition(&[false]);
    write(&mut w, A, "d", T0 + SEC);
    w.op(A, &Op::Delete("a.txt".into()), T0 + SEC);
    write(&mut w, B, "e", T0 + SEC);
    let sends_before = w.stats.sends.len();

    w.set_partition(&[true]); // a new session pair, Hello from the persisted progress
    w.run_to_quiescence();
    w.assert_converged();
    let first_from_a = w.stats.sends[sends_before..]
        .iter()
        .find(|(d, ..)| *d == A)
        .copied();
    assert_eq!(
        first_from_a,
        Some((A, seen, 2)),
        "A sends only `d` and the tombstone of a.txt"
    );
    assert!(w.devices[B].records()["a.txt"].deleted);
    assert!(w.devices[A].records()["e"].is_live());
}

#[test]
fn a_corrupt_chunk_is_fetched_again_and_never_applied() {
    let mut w = pair(NetConfig {
        corrupt_first: 1,
        ..NetConfig::quiet()
    });
    write(&mut w, A, "a.txt", T0);
    while w.stats.rejected == 0 {
        assert!(w.step(), "the corrupt response must arrive");
    }
    assert!(
        !w.devices[B].records().contains_key("a.txt"),
        "applied with a corrupt chunk"
    );
    assert!(
        w.devices[B].store.chunk_count() == 0,
        "the corrupt bytes were stored"
    );
    w.run_to_quiescence();
    w.assert_converged();
    assert_eq!(
        (w.stats.corrupted, w.stats.rejected, w.stats.chunk_requests),
        (1, 1, 2)
    );
    assert!(w.stats.failed.is_empty());
}

#[test]
fn a_chunk_corrupt_every_time_is_reported_and_retried_by_a_later_session() {
    let mut w = pair(NetConfig {
        corrupt_first: 3,
        ..NetConfig::quiet()
    });
    write(&mut w, A, "a.txt", T0);
    w.op(A, &Op::Mkdir("b".into()), T0); // no chunks: only a.txt's chunk is ever corrupted
    w.run_to_quiescence();
    assert_eq!(w.stats.failed, vec!["a.txt".to_string()]);
    assert!(!w.devices[B].records().contains_key("a.txt"));
    assert!(
        w.devices[B].records()["b"].is_live(),
        "other records still apply"
    );
    let a_id = w.devices[A].id();
    assert!(
        w.devices[B].seen.get(&a_id).copied().unwrap_or(0) < w.devices[A].seq(),
        "progress held back"
    );

    w.heal(); // reconnect: the index is re-sent from the held-back point
    w.run_to_quiescence();
    w.assert_converged();
    assert!(w.devices[B].records()["a.txt"].is_live());
}

#[test]
fn a_rename_transfers_no_chunk() {
    let mut w = pair(NetConfig::quiet());
    write(&mut w, A, "a.txt", T0);
    w.run_to_quiescence();
    let requests = w.stats.chunk_requests;
    w.op(A, &Op::Rename("a.txt".into(), "b.txt".into()), T0 + SEC);
    w.run_to_quiescence();
    w.assert_converged();
    assert_eq!(w.stats.chunk_requests, requests);
    assert!(w.devices[B].records()["a.txt"].deleted);
    assert_eq!(
        w.devices[B].records()["b.txt"].chunks,
        w.devices[A].records()["b.txt"].chunks
    );
}

#[test]
fn concurrent_edits_keep_both_versions() {
    let mut w = pair(NetConfig::quiet());
    write(&mut w, A, "report.final.txt", T0);
    w.run_to_quiescence();
    w.set_partition(&[false]);
    write(&mut w, A, "report.final.txt", T0 + 5 * SEC);
    write(&mut w, B, "report.final.txt", T0 + 7 * SEC);
    let (a_version, b_version) = (
        w.devices[A].records()["report.final.txt"].clone(),
        w.devices[B].records()["report.final.txt"].clone(),
    );
    w.heal();
    w.run_to_quiescence();
    w.assert_converged();
    let recs = w.devices[A].records();
    assert_eq!(
        recs["report.final.txt"].chunks, b_version.chunks,
        "the newer mtime keeps the name"
    );
    let copy = conflict_copy_path("report.final.txt", T0 + 5 * SEC, DEVICE_IDS[A]);
    assert!(
        copy.starts_with("report.final.sync-conflict-20231114-221325-") && copy.ends_with(".txt")
    );
    assert_eq!(
        recs[&copy].chunks, a_version.chunks,
        "the older one is kept as a copy"
    );
    assert_eq!(recs[&copy].mtime_ns, a_version.mtime_ns);
    let mut merged = a_version.version.clone();
    merged.merge(&b_version.version);
    assert_eq!(recs["report.final.txt"].version, merged);
}

#[test]
fn an_edit_survives_a_concurrent_delete() {
    let mut w = pair(NetConfig::quiet());
    write(&mut w, A, "a.txt", T0);
    w.run_to_quiescence();
    w.set_partition(&[false]);
    w.op(A, &Op::Delete("a.txt".into()), T0 + 9 * SEC);
    write(&mut w, B, "a.txt", T0 + SEC);
    let edited = w.devices[B].records()["a.txt"].chunks.clone();
    w.heal();
    w.run_to_quiescence();
    w.assert_converged();
    assert_eq!(w.devices[A].records()["a.txt"].chunks, edited);
    assert_eq!(
        w.devices[A].records().len(),
        1,
        "no conflict copy for a delete"
    );
}

#[test]
fn three_devices_in_a_line_relay_changes() {
    let mut w = World::new(3, 3, &[(0, 1), (1, 2)], NetConfig::quiet());
    write(&mut w, 0, "from-a", T0);
    write(&mut w, 2, "from-c", T0);
    w.run_to_quiescence();
    w.assert_converged();
    assert!(w.devices[2].records()["from-a"].is_live());
    assert!(w.devices[0].records()["from-c"].is_live());
}

#[test]
fn three_concurrent_edits_relayed_through_one_device_all_survive() {
    // Found by the property test: A, B and C edit `.bashrc` while apart; B relays between A
    // and C. B's version absorbs C's in a merge, then loses to A's; its copy and C's copy got
    // the same name on different devices, and when copies carried the loser's vector, B's copy
    // "dominated" C's and replaced it. Copies are new local files now; all three survive.
    let mut w = World::new(
        994_548_709_252_054_842,
        3,
        &[(0, 1), (1, 2)],
        NetConfig::noisy(),
    );
    w.set_partition(&[false, false]);
    write(&mut w, 0, "Makefile", T0); // moves A's counter: `.bashrc` then has A's highest one
    write(&mut w, 0, "a.txt", T0);
    write(&mut w, 1, ".bashrc", T0);
    write(&mut w, 0, ".bashrc", T0 + SEC);
    write(&mut w, 2, ".bashrc", T0);
    w.net = NetConfig::quiet();
    let versions: Vec<_> = (0..3)
        .map(|d| w.devices[d].records()[".bashrc"].chunks.clone())
        .collect();
    w.heal();
    w.run_to_quiescence();
    w.assert_converged();
    let records = w.devices[0].records();
    let live: Vec<_> = records.values().filter(|r| r.is_live()).collect();
    for v in &versions {
        assert!(
            live.iter().any(|r| &r.chunks == v),
            "a version was lost: {live:#?}"
        );
    }
    assert_eq!(
        w.devices[0].records()[".bashrc"].chunks,
        versions[0],
        "the newest mtime keeps the name"
    );
}
