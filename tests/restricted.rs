//! Real daemons paired across every pair of the lab's router kinds (`tests/lab/`), and two
//! port-restricted (plain `masquerade`) routers paired again and again: the path right after
//! pairing must be the expected one. Root only (skips loudly outside CI).
//!
//! To run: `cargo test --release -p fybrk-tests --test restricted`. The loop behind the
//! "direct in 20 of 20 runs" figure is `FYBRK_RESTRICTED_RUNS=20` (default 3) on
//! `masquerade_pair_is_direct_right_after_pairing`, or `scripts/bench/nat.sh`.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "lab/mod.rs"]
mod lab;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fybrk_tests::{describe, path_to_id, wait_for, Mount};
use lab::{Device, Lab, RouterKind};

/// What one pairing showed.
#[derive(Debug)]
struct Run {
    /// The path bravo reports to alpha once `pair-with` returned and the link is up.
    after_pairing: String,
    /// From starting `pair-with` to the link being up.
    connect: Duration,
    /// The path after the first file synced (`None`: not asked for).
    after_sync: Option<String>,
    /// `conntrack -L -p udp` of each router when the pairing ended relayed (the cause).
    conntrack: String,
}

/// UDP conntrack entries of every router in front of `dev`.
fn conntrack(dev: &Device) -> String {
    let mut s = String::new();
    for ns in [dev.router_ns(), dev.cgnat_ns()].into_iter().flatten() {
        let out = lab::ns_command(ns, "conntrack")
            .args(["-L", "-p", "udp"])
            .output();
        let text = out.map_or_else(
            |e| format!("conntrack: {e}"),
            |o| String::from_utf8_lossy(&o.stdout).into_owned(),
        );
        s.push_str(&format!("--- {ns}\n{text}"));
    }
    s
}

/// Pairs a device behind `ka` (alpha, invites) with one behind `kb` (bravo, `pair-with`) in a
/// lab of their own, and reads the path once the link is up; with `sync`, also after a file
/// written on alpha arrived on bravo. `None` when the lab cannot run here.
fn pair_once(tag: &str, ka: RouterKind, kb: RouterKind, sync: bool) -> Option<Run> {
    if !lab::ready() || !fybrk_tests::have_tool("conntrack") {
        return None;
    }
    let lab = Lab::new(tag);
    let coturn = lab.start_coturn("u", "p");
    let rdv = lab.start_rendezvous();
    let dev_a = lab.add_device(ka);
    let dev_b = lab.add_device(kb);
    let mut a = Mount::prepare()?;
    let mut b = Mount::prepare()?;
    mount_in(&dev_a, &mut a, "alpha", &coturn);
    mount_in(&dev_b, &mut b, "bravo", &coturn);
    let a_id = a.status_json().device_id;
    let payload = a.invite_payload();
    let start = Instant::now();
    let out = b.run(&["pair-with", "--yes", &payload], Duration::from_secs(120));
    if !out.status.success() {
        b.fail(&format!(
            "{tag}: pair-with {ka:?} -> {kb:?} failed\n{}\n--- rendezvous\n{}\n--- alpha\n{}",
            describe(&out),
            rdv.output_tail(40),
            a.log_tail(),
        ));
    }
    let mut after_pairing = None;
    wait_for("the link after pairing", Duration::from_secs(30), || {
        after_pairing = path_to_id(&b, &a_id);
        after_pairing
            .as_ref()
            .map(|_| ())
            .ok_or_else(|| "not connected".to_string())
    });
    let connect = start.elapsed();
    let after_pairing = after_pairing.expect("connected");
    let conntrack = if after_pairing == "relay" {
        format!("{}{}", self::conntrack(&dev_a), self::conntrack(&dev_b))
    } else {
        String::new()
    };
    let after_sync = sync.then(|| {
        let data = b"the first file after pairing";
        std::fs::write(a.path("first.txt"), data).expect("write on alpha");
        wait_for(
            "first.txt on bravo",
            Duration::from_secs(60),
            || match std::fs::read(b.path("first.txt")) {
                Ok(d) if d == data => Ok(()),
                Ok(_) => Err("partial".to_string()),
                Err(e) => Err(e.to_string()),
            },
        );
        path_to_id(&b, &a_id).unwrap_or_else(|| "disconnected".into())
    });
    Some(Run {
        after_pairing,
        connect,
        after_sync,
        conntrack,
    })
}

/// How many times the masquerade pair is paired and synced: `FYBRK_RESTRICTED_RUNS`, else 3
/// (CI; the matrix pairs it once more, in parallel with these).
fn runs() -> usize {
    std::env::var("FYBRK_RESTRICTED_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

#[test]
fn masquerade_pair_is_direct_right_after_pairing() {
    let n = runs();
    let mut direct = 0;
    let mut failures = Vec::new();
    for i in 0..n {
        let Some(run) = pair_once("pr", RouterKind::Masquerade, RouterKind::Masquerade, true)
        else {
            return;
        };
        println!(
            "run {:>2}: after pairing {:<6} after sync {:<6} connect {:.2} s",
            i + 1,
            run.after_pairing,
            run.after_sync.as_deref().unwrap_or("-"),
            run.connect.as_secs_f64()
        );
        if run.after_pairing == "direct" && run.after_sync.as_deref() == Some("direct") {
            direct += 1;
        } else {
            println!("{}", run.conntrack);
            failures.push(format!("run {}: {run:?}", i + 1));
        }
    }
    println!("masquerade / masquerade: direct in {direct} of {n} runs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a pairing of two router kinds must end on right after pairing.
fn expected(a: RouterKind, b: RouterKind) -> &'static str {
    use RouterKind::*;
    // Address- and port-dependent filtering on one side and a new port per destination on the
    // other: the symmetric side's probes come from a port the filtering side never wrote to,
    // and its reflexive address is not the one it probes from. Only the relay gets through.
    let filters_by_port = |k| matches!(k, PortRestricted | Masquerade | DoubleNat | Symmetric);
    match (a, b) {
        (UdpBlockedExceptTurn(_), _) | (_, UdpBlockedExceptTurn(_)) => "relay",
        (Symmetric, k) | (k, Symmetric) if filters_by_port(k) => "relay",
        // Every other pair has at least one side whose mapping is endpoint-independent and
        // whose filtering lets the other in once it wrote to it.
        _ => "direct",
    }
}

/// The kinds of the matrix, one of each.
fn kinds() -> Vec<RouterKind> {
    vec![
        RouterKind::Home,
        RouterKind::PortRestricted,
        RouterKind::Masquerade,
        RouterKind::Symmetric,
        RouterKind::DoubleNat,
        RouterKind::Open,
    ]
}

/// How many labs the matrix runs at once: `FYBRK_MATRIX_JOBS`, else 4 (each pairing mostly
/// waits: on pairing's timeouts, on the punch).
fn jobs() -> usize {
    std::env::var("FYBRK_MATRIX_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(4)
}

/// Every pair of router kinds (each kind with itself too; the UDP-blocked network only with a
/// home router, since it reaches anyone only through the relay).
fn matrix() -> Vec<(RouterKind, RouterKind)> {
    let turn = SocketAddr::from((lab::TURN_IP, lab::coturn::TURN_PORT));
    let kinds = kinds();
    let mut pairs = Vec::new();
    for (i, &a) in kinds.iter().enumerate() {
        for &b in &kinds[i..] {
            pairs.push((a, b));
        }
    }
    pairs.push((RouterKind::Home, RouterKind::UdpBlockedExceptTurn(turn)));
    pairs
}

/// One pairing's result, or the panic message of a failed one.
type Outcome = Result<Run, String>;

/// Pairs each of `pairs` `runs` times (pair-only), [`jobs`] labs at a time. `None` when the lab
/// cannot run here.
fn run_pairs(
    pairs: &[(RouterKind, RouterKind)],
    runs: usize,
) -> Option<Vec<(RouterKind, RouterKind, Vec<Outcome>)>> {
    if !lab::ready() || !fybrk_tests::have_tool("conntrack") {
        return None;
    }
    let work: Vec<usize> = (0..runs).flat_map(|_| 0..pairs.len()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(
        (0..pairs.len())
            .map(|_| Vec::new())
            .collect::<Vec<Vec<Outcome>>>(),
    );
    std::thread::scope(|s| {
        for _ in 0..jobs().min(work.len()) {
            s.spawn(|| loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&i) = work.get(n) else { break };
                let (a, b) = pairs[i];
                let got = match std::panic::catch_unwind(|| pair_once("mx", a, b, false)) {
                    Ok(Some(run)) => Ok(run),
                    Ok(None) => Err("the lab cannot run here".to_string()),
                    Err(e) => Err(e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()),
                };
                results.lock().unwrap()[i].push(got);
            });
        }
    });
    let results = results.into_inner().unwrap();
    Some(
        pairs
            .iter()
            .zip(results)
            .map(|(&(a, b), r)| (a, b, r))
            .collect(),
    )
}

/// Every pair of [`matrix`], paired once each in labs of their own, several at a time; each
/// must end on the path [`expected`] says right after pairing. Pair-only (no sync):
/// `nat_sync.rs` syncs over each kind of path.
#[test]
fn every_router_kind_pairs_with_every_other() {
    let start = Instant::now();
    let Some(results) = run_pairs(&matrix(), 1) else {
        return;
    };
    let mut failures = Vec::new();
    for (a, b, got) in &results {
        let want = expected(*a, *b);
        let pair = format!("{}-{}", label(*a), label(*b));
        for got in got {
            match got {
                Ok(run) => {
                    println!(
                        "{pair:<30} {:<6} (expected {want:<6}) connect {:.2} s",
                        run.after_pairing,
                        run.connect.as_secs_f64()
                    );
                    if run.after_pairing != want {
                        failures.push(format!(
                            "{pair}: {} (expected {want})\n{}",
                            run.after_pairing, run.conntrack
                        ));
                    }
                }
                Err(msg) => failures.push(format!("{pair}: {msg}")),
            }
        }
    }
    println!(
        "{} pairs in {:.0} s, {} at a time",
        results.len(),
        start.elapsed().as_secs_f64(),
        jobs()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Figures for `scripts/bench/nat.sh` (ignored: a benchmark, not a test): every pair of
/// [`matrix`] paired `FYBRK_BENCH_RUNS` times (default 20), [`jobs`] labs at a time; per pair
/// the path expected, how many runs ended on it right after pairing, and the median and
/// slowest time from `pair-with` to the link being up.
#[test]
#[ignore]
fn restricted_bench() {
    let runs = std::env::var("FYBRK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let Some(results) = run_pairs(&matrix(), runs) else {
        return;
    };
    println!(
        "{:<30} {:>8} {:>12} {:>11} {:>8}",
        "pair", "expected", "as expected", "median (s)", "max (s)"
    );
    for (a, b, got) in results {
        let want = expected(a, b);
        let ok = got
            .iter()
            .filter(|g| g.as_ref().is_ok_and(|r| r.after_pairing == want))
            .count();
        let mut secs: Vec<f64> = got
            .iter()
            .filter_map(|g| g.as_ref().ok())
            .map(|r| r.connect.as_secs_f64())
            .collect();
        secs.sort_by(f64::total_cmp);
        let median = secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN);
        let max = secs.last().copied().unwrap_or(f64::NAN);
        println!(
            "{:<30} {:>8} {:>8}/{:<3} {:>11.2} {:>8.2}",
            format!("{}-{}", label(a), label(b)),
            want,
            ok,
            got.len(),
            median,
            max
        );
    }
}

/// A router kind's short name for the tables.
fn label(kind: RouterKind) -> String {
    match kind {
        RouterKind::UdpBlockedExceptTurn(_) => "UdpBlocked".into(),
        other => format!("{other:?}"),
    }
}

/// [`lab::daemon::mount_with_servers`] on the socket this file tests ([::]:0).
fn mount_in(dev: &Device, m: &mut Mount, name: &str, coturn: &lab::Coturn) {
    // The default socket (dual stack): the low-TTL probes must leave it for IPv4 peers.
    lab::daemon::mount_with_servers(dev, m, name, "[::]:0", coturn);
}
