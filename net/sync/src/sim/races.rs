//! The driver's races, made to happen: local writes that land between the driver's decision
//! and its commit (the store refuses the commit with `Changed` and the driver decides again),
//! and garbage collection while a remote record waits for its chunks (the driver's pins keep
//! the chunks it found present).

use proptest::prelude::*;

use super::ops::Op;
use super::props::{arb_op, arb_phase, config, run, OpPlan, RacePlan, NAMES, TRIANGLE};
use super::world::{NetConfig, World};
use crate::naming::CONFLICT_MARKER;

const SEC: i64 = 1_000_000_000;
/// 2023-11-14 22:13:20 UTC.
const T0: i64 = 1_700_000_000 * SEC;
const A: usize = 0;
const B: usize = 1;

fn arb_race() -> impl Strategy<Value = OpPlan> {
    prop_oneof![
        3 => Just(RacePlan::Edit),
        2 => Just(RacePlan::Delete),
        1 => Just(RacePlan::Mkdir),
        1 => (0..NAMES.len()).prop_map(RacePlan::RenameTo),
    ]
    .prop_map(OpPlan::Race)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn applies_raced_by_local_writes_converge_and_lose_nothing(
        seed in any::<u64>(),
        phases in prop::collection::vec(
            arb_phase(TRIANGLE.len(), prop_oneof![3 => arb_op(), 2 => arb_race()]),
            1..4,
        ),
    ) {
        run(seed, &TRIANGLE, &phases);
    }
}

fn pair() -> World {
    let mut w = World::new(11, 2, &[(A, B)], NetConfig::quiet());
    w.op(A, &Op::Write("a.txt".into()), T0);
    w.run_to_quiescence();
    w.assert_converged();
    w
}

#[test]
fn a_local_edit_inside_an_apply_is_decided_again_and_kept() {
    let mut w = pair();
    w.op(A, &Op::Write("a.txt".into()), T0 + SEC);
    let from_a = w.devices[A].records()["a.txt"].clone();
    // B edits the file after its driver decided to take A's version, before the commit.
    w.race(B, |path| Op::Write(path.into()), T0 + 5 * SEC);
    w.run_to_quiescence();
    w.assert_converged();

    let counters = w.devices[B].store.counters();
    assert_eq!(counters.raced, 1);
    assert!(counters.changed >= 1, "the stale commit was refused");
    let records = w.devices[A].records();
    let name = &records["a.txt"];
    assert_ne!(name.chunks, from_a.chunks, "B's newer edit keeps the name");
    let copies: Vec<_> = records
        .values()
        .filter(|r| r.path.contains(CONFLICT_MARKER))
        .collect();
    assert_eq!(copies.len(), 1, "{records:#?}");
    assert_eq!(
        copies[0].chunks, from_a.chunks,
        "A's edit is kept as a copy"
    );
}

#[test]
fn a_local_delete_inside_an_apply_loses_to_the_edit() {
    let mut w = pair();
    w.op(A, &Op::Write("a.txt".into()), T0 + SEC);
    let from_a = w.devices[A].records()["a.txt"].clone();
    w.race(B, |path| Op::Delete(path.into()), T0 + 5 * SEC);
    w.run_to_quiescence();
    w.assert_converged();

    assert!(w.devices[B].store.counters().changed >= 1);
    let records = w.devices[B].records();
    assert_eq!(records["a.txt"].chunks, from_a.chunks, "the edit survives");
    assert_eq!(records.len(), 1, "no conflict copy for a delete");
}

#[test]
fn chunks_a_pending_record_found_present_survive_garbage_collection() {
    let mut w = pair();
    w.set_gc_always(true);
    let shared = w.devices[B].records()["a.txt"].chunks[0].id;
    // A's edit keeps the first chunk: B has it, and fetches only the new one.
    w.op(A, &Op::Write("a.txt".into()), T0 + SEC);
    let requests = w.stats.chunk_requests;
    while w.stats.chunk_requests == requests {
        assert!(w.step(), "B must request the new chunk");
    }
    // While the new chunk is on its way, B deletes the file: nothing references the shared
    // chunk any more but the pending record's pin.
    w.op(B, &Op::Delete("a.txt".into()), T0 + 2 * SEC);
    w.devices[B].store.gc();
    assert!(
        w.devices[B].store.chunk(&shared).is_some(),
        "a chunk the pending record relies on was collected"
    );
    w.run_to_quiescence();
    w.assert_converged();
    let records = w.devices[B].records();
    assert!(records["a.txt"].is_live(), "the edit beats the delete");
    assert_eq!(records["a.txt"].chunks[0].id, shared);
}
