//! Property tests: random concurrent operations on three devices under random partitions,
//! delivery orders, drops and corruption; after each partition heals, all devices converge and
//! no version is lost.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::world::{NetConfig, Op, World};

/// Names that exercise the conflict-copy naming (extensions, dotfiles, none). Few, so
/// operations collide on the same paths often.
const NAMES: [&str; 5] = [
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
enum OpPlan {
    Write(usize),
    Delete(usize),
    Rename(usize, usize),
    Mkdir(usize),
}

#[derive(Clone, Debug)]
struct Step {
    /// Network events delivered before the operation.
    wait: u8,
    device: usize,
    op: OpPlan,
    /// Seconds into the phase: few values, so equal mtimes (ties) happen, and a later edit can
    /// carry an older mtime (clock skew).
    mtime: i64,
}

#[derive(Clone, Debug)]
struct Phase {
    /// Which links are up during the phase.
    links: Vec<bool>,
    steps: Vec<Step>,
}

fn arb_op() -> impl Strategy<Value = OpPlan> {
    let name = || 0..NAMES.len();
    prop_oneof![
        4 => name().prop_map(OpPlan::Write),
        2 => name().prop_map(OpPlan::Delete),
        2 => (name(), name()).prop_map(|(a, b)| OpPlan::Rename(a, b)),
        1 => name().prop_map(OpPlan::Mkdir),
    ]
}

fn arb_phase(links: usize) -> impl Strategy<Value = Phase> {
    let step = (0..12u8, 0..3usize, arb_op(), 0..4i64).prop_map(|(wait, device, op, mtime)| Step {
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
fn run(seed: u64, pairs: &[(usize, usize)], phases: &[Phase]) {
    let mut w = World::new(seed, 3, pairs, NetConfig::noisy());
    for (i, phase) in phases.iter().enumerate() {
        w.net = NetConfig::noisy();
        w.set_partition(&phase.links);
        for s in &phase.steps {
            for _ in 0..s.wait {
                if !w.step() {
                    break;
                }
            }
            let op = match s.op {
                OpPlan::Write(n) => Op::Write(NAMES[n].into()),
                OpPlan::Delete(n) => Op::Delete(NAMES[n].into()),
                OpPlan::Rename(a, b) => Op::Rename(NAMES[a].into(), NAMES[b].into()),
                OpPlan::Mkdir(n) => Op::Mkdir(NAMES[n].into()),
            };
            w.op(s.device, &op, T0 + (i as i64 * 10 + s.mtime) * SEC);
        }
        let snapshot = w.live_contents();
        w.net = NetConfig::quiet();
        w.heal();
        w.run_to_quiescence();
        w.assert_converged();
        w.assert_nothing_lost(&snapshot);
    }
}

fn config() -> Config {
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

const TRIANGLE: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];
/// A-B and B-C: A and C never connect; everything between them goes through B.
const LINE: [(usize, usize); 2] = [(0, 1), (1, 2)];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn three_devices_converge_and_lose_nothing(
        seed in any::<u64>(),
        phases in prop::collection::vec(arb_phase(TRIANGLE.len()), 1..4),
    ) {
        run(seed, &TRIANGLE, &phases);
    }

    #[test]
    fn a_mesh_through_b_converges(
        seed in any::<u64>(),
        phases in prop::collection::vec(arb_phase(LINE.len()), 1..4),
    ) {
        run(seed, &LINE, &phases);
    }
}
