//! Every rule of the conflict module, and the symmetry that makes devices converge.

use super::*;
use crate::naming::{conflict_copy_path, device_tag};
use fybrk_store::{ChunkId, ChunkRef};
use proptest::prelude::*;

const A: ShortId = 0xA000_0000_0000_0000;
const B: ShortId = 0xB000_0000_0000_0000;
const C: ShortId = 0xC000_0000_0000_0000;
const SEC: i64 = 1_000_000_000;
/// 2023-11-14 22:13:20 UTC.
const T: i64 = 1_700_000_000 * SEC;

fn vv(entries: &[(ShortId, u64)]) -> VersionVector {
    VersionVector(entries.iter().copied().collect())
}

fn chunk(n: u8) -> ChunkRef {
    ChunkRef {
        id: ChunkId([n; 32]),
        len: 100,
    }
}

fn file(path: &str, mtime_ns: i64, data: u8, version: VersionVector) -> FileRecord {
    let mut r = FileRecord::new(path, Kind::File, 0o644, mtime_ns);
    r.chunks = vec![chunk(data)];
    r.size = 100;
    r.version = version;
    r
}

fn tombstone(path: &str, mtime_ns: i64, version: VersionVector) -> FileRecord {
    let mut r = FileRecord::new(path, Kind::File, 0o644, mtime_ns);
    r.deleted = true;
    r.version = version;
    r
}

fn dir(path: &str, mtime_ns: i64, mode: u32, version: VersionVector) -> FileRecord {
    let mut r = FileRecord::new(path, Kind::Dir, mode, mtime_ns);
    r.version = version;
    r
}

fn copy_name(path: &str, mtime_ns: i64, device: ShortId) -> String {
    conflict_copy_path(path, mtime_ns, device)
}

#[test]
fn unknown_path_takes_remote_even_a_tombstone() {
    let r = tombstone("x", T, vv(&[(A, 1)]));
    assert_eq!(decide(None, &r), Decision::TakeRemote);
    assert_eq!(resolve(None, &r).write.map(|w| w.deleted), Some(true));
}

#[test]
fn dominating_versions_win_without_conflict() {
    let old = file("x", T + 50 * SEC, 1, vv(&[(A, 1)]));
    let new = file("x", T, 2, vv(&[(A, 1), (B, 7)]));
    // The newer version wins even with an older mtime: vectors decide, clocks only break ties.
    assert_eq!(decide(Some(&old), &new), Decision::TakeRemote);
    assert_eq!(decide(Some(&new), &old), Decision::KeepLocal);
    assert_eq!(decide(Some(&new), &new.clone()), Decision::KeepLocal);
    let res = resolve(Some(&old), &new);
    assert_eq!(res.write.as_ref().map(|w| &w.version), Some(&new.version));
    assert_eq!(res.copy, None);
    assert_eq!(resolve(Some(&new), &old).write, None);
}

#[test]
fn concurrent_edits_newer_mtime_wins_and_loser_is_copied() {
    let base = [(A, 3)];
    let local = file("docs/report.final.txt", T, 1, vv(&[base[0], (B, 10)]));
    let remote = file("docs/report.final.txt", T + SEC, 2, vv(&[base[0], (C, 4)]));
    let want_copy = "docs/report.final.sync-conflict-20231114-221320-WAAAAAA.txt";
    assert_eq!(device_tag(B), "WAAAAAA");
    assert_eq!(
        decide(Some(&local), &remote),
        Decision::Conflict {
            winner: Side::Remote,
            loser_copy_path: want_copy.into()
        }
    );
    let res = resolve(Some(&local), &remote);
    let w = res.write.unwrap();
    assert_eq!(w.chunks, remote.chunks);
    assert_eq!(w.mtime_ns, remote.mtime_ns);
    assert_eq!(
        w.version,
        vv(&[(A, 3), (B, 10), (C, 4)]),
        "winner gets the merged vector"
    );
    let c = res.copy.unwrap();
    assert_eq!(c.record.path, want_copy);
    assert_eq!(
        c.record.chunks, local.chunks,
        "the copy reuses the loser's chunks"
    );
    assert_eq!(
        c.record.version,
        VersionVector::default(),
        "a new file: the store bumps it"
    );
    assert_eq!(c.record.mtime_ns, local.mtime_ns);
    assert!(c.record.is_live());

    // The other device reaches the same records.
    let res2 = resolve(Some(&remote), &local);
    assert_eq!(
        res2.decision,
        Decision::Conflict {
            winner: Side::Local,
            loser_copy_path: want_copy.into()
        }
    );
    assert_eq!(res2.write.map(|w| w.version), Some(w.version));
    assert_eq!(res2.copy, Some(c));
}

#[test]
fn mtime_tie_goes_to_the_larger_last_modifier() {
    // Both descend from a version where A has a large counter: "highest counter in the vector"
    // would name A for both; the last modifiers are B and C.
    let local = file("x", T, 1, vv(&[(A, 1000), (C, 2)]));
    let remote = file("x", T, 2, vv(&[(A, 1000), (B, 6)]));
    assert_eq!(last_modifier(&local.version, &remote.version), C);
    assert_eq!(last_modifier(&remote.version, &local.version), B);
    assert_eq!(
        decide(Some(&local), &remote),
        Decision::Conflict {
            winner: Side::Local,
            loser_copy_path: copy_name("x", T, B)
        }
    );
    assert_eq!(
        decide(Some(&remote), &local),
        Decision::Conflict {
            winner: Side::Remote,
            loser_copy_path: copy_name("x", T, B)
        }
    );
}

#[test]
fn last_modifier_definition() {
    // Among unseen entries, the highest counter; ties by the larger id.
    assert_eq!(
        last_modifier(&vv(&[(A, 5), (B, 9), (C, 1)]), &vv(&[(A, 1), (C, 1)])),
        B
    );
    assert_eq!(last_modifier(&vv(&[(A, 5), (B, 5)]), &vv(&[])), B);
    // Nothing unseen: highest counter overall.
    assert_eq!(
        last_modifier(&vv(&[(A, 5), (B, 2)]), &vv(&[(A, 5), (B, 2)])),
        A
    );
    assert_eq!(last_modifier(&vv(&[]), &vv(&[(A, 1)])), 0);
}

#[test]
fn edit_beats_concurrent_delete_even_when_the_delete_is_newer() {
    let edit = file("x", T, 1, vv(&[(A, 2), (B, 1)]));
    let del = tombstone("x", T + 100 * SEC, vv(&[(A, 3)]));
    let merged = vv(&[(A, 3), (B, 1)]);
    assert_eq!(
        decide(Some(&edit), &del),
        Decision::Merge {
            winner: Side::Local
        }
    );
    assert_eq!(
        decide(Some(&del), &edit),
        Decision::Merge {
            winner: Side::Remote
        }
    );
    let keep = resolve(Some(&edit), &del);
    assert_eq!(keep.copy, None, "a tombstone leaves no conflict copy");
    let w = keep.write.unwrap();
    assert!(w.is_live() && w.chunks == edit.chunks && w.version == merged);
    let take = resolve(Some(&del), &edit).write.unwrap();
    assert_eq!((take.chunks, take.version), (edit.chunks, merged));
}

#[test]
fn two_concurrent_deletes_are_not_a_conflict() {
    let a = tombstone("x", T, vv(&[(A, 2), (B, 1)]));
    let b = tombstone("x", T + SEC, vv(&[(A, 1), (B, 2)]));
    let d = decide(Some(&a), &b);
    assert_eq!(
        d,
        Decision::Merge {
            winner: Side::Remote
        }
    );
    let res = resolve(Some(&a), &b);
    assert_eq!(res.copy, None);
    let w = res.write.unwrap();
    assert!(w.deleted);
    assert_eq!(w.version, vv(&[(A, 2), (B, 2)]));
}

#[test]
fn concurrent_directories_merge_their_vectors() {
    let a = dir("d", T, 0o755, vv(&[(A, 2)]));
    let b = dir("d", T, 0o700, vv(&[(B, 2)]));
    let res = resolve(Some(&a), &b);
    assert!(
        matches!(res.decision, Decision::Merge { .. }),
        "{:?}",
        res.decision
    );
    assert_eq!(res.copy, None);
    assert_eq!(res.write.unwrap().version, vv(&[(A, 2), (B, 2)]));
}

#[test]
fn a_directory_keeps_its_name_against_a_file() {
    // Even against a newer file: a directory's children must stay under it.
    let d = dir("x.txt", T, 0o755, vv(&[(A, 2)]));
    let f = file("x.txt", T + 9 * SEC, 1, vv(&[(B, 4)]));
    let want = copy_name("x.txt", T + 9 * SEC, B);
    assert_eq!(
        decide(Some(&f), &d),
        Decision::Conflict {
            winner: Side::Remote,
            loser_copy_path: want.clone()
        }
    );
    let res = resolve(Some(&d), &f);
    assert_eq!(
        res.decision,
        Decision::Conflict {
            winner: Side::Local,
            loser_copy_path: want
        }
    );
    assert_eq!(res.write.map(|w| w.kind), Some(Kind::Dir));
    assert_eq!(res.copy.map(|c| c.record.kind), Some(Kind::File));
}

#[test]
fn the_same_data_written_twice_is_not_a_conflict() {
    let a = file("x", T, 7, vv(&[(A, 2)]));
    let b = file("x", T + SEC, 7, vv(&[(B, 2)]));
    assert_eq!(
        decide(Some(&a), &b),
        Decision::Merge {
            winner: Side::Remote
        }
    );
    assert_eq!(resolve(Some(&a), &b).copy, None);
}

#[test]
fn symlinks_conflict_on_their_target() {
    let link = |t: &str, m: i64, v| {
        let mut r = FileRecord::new("l", Kind::Symlink, 0o777, m);
        r.target = Some(t.into());
        r.version = v;
        r
    };
    let a = link("a", T, vv(&[(A, 1)]));
    let b = link("b", T + SEC, vv(&[(B, 1)]));
    let res = resolve(Some(&a), &b);
    assert_eq!(res.copy.and_then(|c| c.record.target), Some("a".into()));
    assert!(matches!(
        decide(Some(&a), &link("a", T + SEC, vv(&[(B, 1)]))),
        Decision::Merge { .. }
    ));
}

#[test]
fn equal_vectors_with_different_contents_are_repaired() {
    // Two devices that resolved the same three versions in different orders can hold different
    // contents under the same vector; the content order settles it, keeping the other as a copy.
    let v = vv(&[(A, 1), (B, 1), (C, 1)]);
    let a = file("x", T, 1, v.clone());
    let b = file("x", T, 2, v.clone());
    let d1 = decide(Some(&a), &b);
    let d2 = decide(Some(&b), &a);
    // No unseen entries: the copy is named after the highest counter, ties by larger id (C).
    match (&d1, &d2) {
        (
            Decision::Conflict {
                winner: Side::Remote,
                loser_copy_path: p1,
            },
            Decision::Conflict {
                winner: Side::Local,
                loser_copy_path: p2,
            },
        ) => {
            assert_eq!(p1, p2);
            assert_eq!(p1, &copy_name("x", T, C));
        }
        other => panic!("{other:?}"),
    }
    let r2 = resolve(Some(&b), &a);
    assert_eq!(r2.write, None, "the winner already has the vector");
    assert_eq!(r2.copy.map(|c| c.record.chunks), Some(a.chunks.clone()));
}

#[test]
fn a_copy_goes_to_the_first_free_name() {
    use std::convert::Infallible;
    let local = file("r.txt", T, 1, vv(&[(A, 2)]));
    let remote = file("r.txt", T + SEC, 2, vv(&[(B, 2)]));
    let copy = resolve(Some(&local), &remote).copy.unwrap();
    let first = copy_name("r.txt", T, A);
    let second = crate::naming::numbered_copy_path("r.txt", T, A, 1);
    assert_eq!(copy.candidate(0), first);
    let place = |taken: &[(&str, FileRecord)]| {
        copy.place(|p| {
            Ok::<_, Infallible>(taken.iter().find(|(q, _)| *q == p).map(|(_, r)| r.clone()))
        })
        .unwrap()
    };
    assert_eq!(place(&[]).map(|r| r.path), Some(first.clone()));
    assert_eq!(
        place(&[(&first, tombstone(&first, T, vv(&[(C, 9)])))]).map(|r| r.path),
        Some(first.clone())
    );
    assert_eq!(
        place(&[(&first, file(&first, 0, 1, vv(&[(C, 9)])))]),
        None,
        "same data already kept"
    );
    let other = file(&first, 0, 3, vv(&[(C, 9)]));
    assert_eq!(
        place(&[(&first, other)]).map(|r| r.path),
        Some(second),
        "never over another file"
    );
    assert_eq!(copy.slot(Some(&dir("d", 0, 0o755, vv(&[])))), Slot::Taken);
}

#[test]
fn resolution_records_are_uncommitted() {
    let mut r = file("x", T, 1, vv(&[(B, 9)]));
    r.seq = 77;
    assert_eq!(resolve(None, &r).write.map(|w| w.seq), Some(0));
}

// ---- symmetry: both devices end with the same records ----

fn arb_record() -> impl Strategy<Value = FileRecord> {
    (
        0..4u8,        // 0,1: file, 2: dir, 3: symlink
        any::<bool>(), // deleted
        0..3i64,       // mtime (ties are common)
        0..3u8,        // data
        prop::collection::btree_map(prop_oneof![Just(A), Just(B), Just(C)], 1..4u64, 0..3),
        prop_oneof![Just(0o644u32), Just(0o600)],
    )
        .prop_map(|(kind, deleted, mtime, data, v, mode)| {
            let kind = match kind {
                0 | 1 => Kind::File,
                2 => Kind::Dir,
                _ => Kind::Symlink,
            };
            let mut r = FileRecord::new("p/n.txt", kind, mode, T + mtime * SEC);
            r.deleted = deleted;
            if !deleted {
                match kind {
                    Kind::File => r.chunks = vec![chunk(data)],
                    Kind::Symlink => r.target = Some(format!("t{data}")),
                    Kind::Dir => {}
                }
            }
            r.version = VersionVector(v);
            r
        })
}

/// The records at the path and at the copy path after `remote` reaches the holder of `local`.
fn outcome(local: &FileRecord, remote: &FileRecord) -> (FileRecord, Option<FileRecord>) {
    let res = resolve(Some(local), remote);
    let mut at_path = res.write.unwrap_or_else(|| local.clone());
    at_path.seq = 0;
    (at_path, res.copy.map(|c| c.record))
}

proptest! {
    #[test]
    fn both_devices_reach_the_same_records(a in arb_record(), b in arb_record()) {
        prop_assert_eq!(outcome(&a, &b), outcome(&b, &a));
    }

    #[test]
    fn nothing_live_is_lost(a in arb_record(), b in arb_record()) {
        let (at_path, copy) = outcome(&a, &b);
        let ord = a.version.compare(&b.version);
        for (r, dominated) in [(&a, ord == Ordering::Before), (&b, ord == Ordering::After)] {
            if dominated || !r.is_live() || r.kind == Kind::Dir {
                continue; // superseded on purpose, or nothing to lose
            }
            let kept = |x: &FileRecord| x.is_live() && same_data(x, r);
            prop_assert!(kept(&at_path) || copy.as_ref().is_some_and(kept),
                "{:?} lost: {:?} / {:?}", r, at_path, copy);
        }
        // And the path's vector covers both sides, so neither change comes back.
        let mut both = a.version.clone();
        both.merge(&b.version);
        prop_assert_eq!(&at_path.version, &both);
    }
}
