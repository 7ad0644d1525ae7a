//! Property tests: random concurrent operations on three devices under random partitions,
//! delivery orders, drops and corruption; after each partition heals, all devices converge and
//! no version is lost. Every device runs the real driver over an in-memory store that collects
//! garbage at every call, so a chunk the driver needs and did not pin is gone.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::ops::Op;
use super::world::{NetConfig, World};

/// Names that exercise the conflict-copy naming (extensions, dotfiles, none). Few, so
/// operations collide on the same paths often.
pub(super) const NAMES: [&str; 5] = [
    "a.txt",
    "report.final.txt",
    ".bashrc",
    "Makefile",
    "x.tar.gz",
];

const SEC: i64 = 1_000_000_000;
/// 2023-11-14 22:13:20 UTC.
const T0: i64 = 1_700_000_000 * SEC;

#[derive(Clone, Debug)]
pub(super) enum OpPlan {
    Write(usize),
    Delete(usize),
    Rename(usize, usize),
    Mkdir(usize),
    /// A local write to the path of the next remote record committed on the device, between
    /// the driver's decision and the commit (`races`).
    Race(RacePlan),
}

/// What a racing local write does to the path being applied.
#[derive(Clone, Copy, Debug)]
pub(super) enum RacePlan {
    Edit,
    Delete,
    Mkdir,
    /// Renamed away to `NAMES[n]`.
    RenameTo(usize),
}

impl RacePlan {
    fn op(self, path: &str) -> Op {
        match self {
            RacePlan::Edit => Op::Write(path.into()),
            RacePlan::Delete => Op::Delete(path.into()),
            RacePlan::Mkdir => Op::Mkdir(path.into()),
            RacePlan::RenameTo(n) => Op::Rename(path.into(), NAMES[n].into()),
        }
    }
}

/// Races queued per device at most: each can fail one commit with `Changed`, and the driver
/// decides again a bounded number of times before it gives up on the session.
const MAX_RACES: usize = 3;

#[derive(Clone, Debug)]
pub(super) struct Step {
    /// Network events delivered before the operation.
    wait: u8,
    device: usize,
    op: OpPlan,
    /// Seconds into the phase: few values, so equal mtimes (ties) happen, and a later edit can
    /// carry an older mtime (clock skew).
    mtime: i64,
}

#[derive(Clone, Debug)]
pub(super) struct Phase {
    /// Which links are up during the phase.
    links: Vec<bool>,
    steps: Vec<Step>,
}

pub(super) fn arb_op() -> impl Strategy<Value = OpPlan> {
    let name = || 0..NAMES.len();
    prop_oneof![
        4 => name().prop_map(OpPlan::Write),
        2 => name().prop_map(OpPlan::Delete),
        2 => (name(), name()).prop_map(|(a, b)| OpPlan::Rename(a, b)),
        1 => name().prop_map(OpPlan::Mkdir),
    ]
}

/// A phase of up to 15 steps drawn from `op`, with each link up or down.
pub(super) fn arb_phase(
    links: usize,
    op: impl Strategy<Value = OpPlan>,
) -> impl Strategy<Value = Phase> {
    let step = (0..12u8, 0..3usize, op, 0..4i64).prop_map(|(wait, device, op, mtime)| Step {
        wait,
        device,
        op,
        mtime,
    });
    (
        prop::collection::vec(any::<bool>(), links),
        prop::collection::vec(step, 1..16),
    )
        .prop_map(|(links, steps)| Phase { links, steps })
}

/// Runs the phases; after each, heals the network and checks (a) convergence and (b) that
/// nothing was lost.
pub(super) fn run(seed: u64, pairs: &[(usize, usize)], phases: &[Phase]) {
    let mut w = World::new(seed, 3, pairs, NetConfig::noisy());
    w.set_gc_always(true);
    for (i, phase) in phases.iter().enumerate() {
        w.net = NetConfig::noisy();
        w.set_partition(&phase.links);
        for s in &phase.steps {
            for _ in 0..s.wait {
                if !w.step() {
                    break;
                }
            }
            let mtime = T0 + (i as i64 * 10 + s.mtime) * SEC;
            let op = match s.op {
                OpPlan::Write(n) => Op::Write(NAMES[n].into()),
                OpPlan::Delete(n) => Op::Delete(NAMES[n].into()),
                OpPlan::Rename(a, b) => Op::Rename(NAMES[a].into(), NAMES[b].into()),
                OpPlan::Mkdir(n) => Op::Mkdir(NAMES[n].into()),
                OpPlan::Race(plan) => {
                    if w.devices[s.device].store.races_pending() < MAX_RACES {
                        w.race(s.device, move |path| plan.op(path), mtime);
                    }
                    continue;
                }
            };
            w.op(s.device, &op, mtime);
        }
        // A race no commit took is a write that never happened.
        w.cancel_races();
        let snapshot = w.live_contents();
        w.net = NetConfig::quiet();
        w.heal();
        w.run_to_quiescence();
        w.assert_converged();
        w.assert_nothing_lost(&snapshot);
    }
}

pub(super) fn config() -> Config {
    // A fixed seed and case count, so CI runs the same cases every time; PROPTEST_CASES and
    // PROPTEST_RNG_SEED still override them to explore more locally. A case takes well under a
    // millisecond, so many cases are cheap.
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 1024;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x5eed_f1b4);
    }
    c
}

pub(super) const TRIANGLE: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];
/// A-B and B-C: A and C never connect; everything between them goes through B.
pub(super) const LINE: [(usize, usize); 2] = [(0, 1), (1, 2)];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn three_devices_converge_and_lose_nothing(
        seed in any::<u64>(),
        phases in prop::collection::vec(arb_phase(TRIANGLE.len(), arb_op()), 1..4),
    ) {
        run(seed, &TRIANGLE, &phases);
    }

    #[test]
    fn a_mesh_through_b_converges(
        seed in any::<u64>(),
        phases in prop::collection::vec(arb_phase(LINE.len(), arb_op()), 1..4),
    ) {
        run(seed, &LINE, &phases);
    }
}
