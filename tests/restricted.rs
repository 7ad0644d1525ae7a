//! Real daemons paired across every pair of the lab's router kinds (`tests/lab/`), and two
//! port-restricted (plain `masquerade`) routers paired again and again: the path right after
//! pairing must be the expected one. Root only (skips loudly outside CI).
//!
//! To run: `cargo test --release -p fybrk-tests --test restricted`. The loop behind the
//! "direct in 20 of 20 runs" figure is `FYBRK_RESTRICTED_RUNS=20` (default 2) on
//! `masquerade_pair_is_direct_right_after_pairing`, or `scripts/bench/nat.sh`.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "lab/mod.rs"]
mod lab;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use fybrk_tests::{describe, fybrk_bin, run_timeout, status_entry, wait_for, Mount};
use lab::{Device, Lab, RouterKind, RENDEZVOUS_IP};

const RENDEZVOUS_PORT: u16 = 22101;

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

/// Starts `fybrk mount` for `m` in `dev`'s namespace with the lab's rendezvous server, coturn
/// as STUN server and TURN relay (so a relayed path is always possible: what the test watches
/// is whether the direct one wins).
fn mount_in(dev: &Device, m: &mut Mount, name: &str, coturn: &lab::Coturn) {
    let rendezvous = SocketAddr::from((RENDEZVOUS_IP, RENDEZVOUS_PORT)).to_string();
    let turn = format!(
        "turn:{}?user={}&pass={}",
        coturn.addr, coturn.user, coturn.pass
    );
    let mut cmd = dev.cmd(fybrk_bin());
    cmd.arg("--state")
        .arg(&m.state)
        .arg("mount")
        .arg(&m.mnt)
        .args(["--listen", "0.0.0.0:0", "--name", name])
        .args([
            "--rendezvous",
            &rendezvous,
            "--stun",
            &coturn.addr.to_string(),
        ])
        .args(["--turn", &turn]);
    let out = run_timeout(&mut cmd, Duration::from_secs(60));
    if !out.status.success() {
        m.fail(&format!("mount in {} failed\n{}", dev.ns(), describe(&out)));
    }
    m.adopt_daemon();
}

/// The path `m` reports to the device with id `other`, once connected.
fn path_to(m: &Mount, other: &str) -> Option<String> {
    let s = m.status_json();
    let p = status_entry(&s, other)?;
    if !p.connected {
        return None;
    }
    p.path.map(|k| k.as_str().to_owned())
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
    let mut rdv = Command::new(fybrk_bin());
    rdv.args([
        "rendezvous",
        "--listen",
        &SocketAddr::from((RENDEZVOUS_IP, RENDEZVOUS_PORT)).to_string(),
    ]);
    let rdv = lab.spawn_in_public("rendezvous", rdv);
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
        after_pairing = path_to(&b, &a_id);
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
        path_to(&b, &a_id).unwrap_or_else(|| "disconnected".into())
    });
    Some(Run {
        after_pairing,
        connect,
        after_sync,
        conntrack,
    })
}

/// How many times the port-restricted pair is paired: `FYBRK_RESTRICTED_RUNS`, else 2 (CI).
fn runs() -> usize {
    std::env::var("FYBRK_RESTRICTED_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
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
