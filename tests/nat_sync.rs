//! fybrk daemons behind NAT routers in the lab (`tests/lab/`): pairing through the rendezvous
//! server and syncing over a hole-punched direct path. Root only (skips loudly outside CI).

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "lab/mod.rs"]
mod lab;

use std::net::SocketAddr;
use std::time::Duration;

use fybrk_tests::{describe, fybrk_bin, path_to, run_timeout, status_entry, wait_for, Gen, Mount};
use lab::{Device, Lab, RouterKind, RENDEZVOUS_IP, RENDEZVOUS_PORT};

/// Starts `fybrk mount` for `m` inside `dev`'s LAN namespace, with the lab's rendezvous server
/// and coturn as the only STUN server (nothing outside the lab is ever asked).
fn mount_in(dev: &Device, m: &mut Mount, name: &str, stun: SocketAddr, extra: &[String]) {
    let rendezvous = SocketAddr::from((RENDEZVOUS_IP, RENDEZVOUS_PORT)).to_string();
    let mut cmd = dev.cmd(fybrk_bin());
    cmd.arg("--state")
        .arg(&m.state)
        .arg("mount")
        .arg(&m.mnt)
        .args(["--listen", "0.0.0.0:0", "--name", name])
        .args(["--rendezvous", &rendezvous, "--stun", &stun.to_string()])
        .args(extra);
    let out = run_timeout(&mut cmd, Duration::from_secs(60));
    if !out.status.success() {
        m.fail(&format!("mount in {} failed\n{}", dev.ns(), describe(&out)));
    }
    m.adopt_daemon();
}

/// Two devices behind routers of kinds `ka` and `kb`: `fybrk pair` on one, `pair-with` on
/// the other (neither can reach the other's LAN address), the rendezvous server introduces them,
/// both punch, and `data` written on the first arrives intact on the second. Returns the path
/// the second reports to the first.
fn pair_and_sync(
    tag: &str,
    ka: RouterKind,
    kb: RouterKind,
    loss: u8,
    data: &[u8],
) -> Option<String> {
    pair_and_sync_then(tag, ka, kb, loss, false, false, data, |_, _, _| {})
}

/// What a scenario's `then` gets besides the mounts: the lab's servers (dropping one stops it)
/// and the two devices.
struct Scene<'l> {
    lab: &'l Lab,
    rendezvous: lab::LabChild,
    coturn: lab::Coturn,
    dev_a: Device,
    dev_b: Device,
}

/// [`pair_and_sync`], then `then(a, b, scene)` before the path is read. With `relay` both
/// devices have the lab's coturn as TURN relay; with `block_direct` their routers drop each
/// other's public address (until `then` lifts it).
#[allow(clippy::too_many_arguments)]
fn pair_and_sync_then(
    tag: &str,
    ka: RouterKind,
    kb: RouterKind,
    loss: u8,
    relay: bool,
    block_direct: bool,
    data: &[u8],
    then: impl FnOnce(&Mount, &Mount, Scene<'_>),
) -> Option<String> {
    if !lab::ready() {
        return None;
    }
    let lab = Lab::new(tag);
    let coturn = lab.start_coturn("u", "p");
    let rdv = lab.start_rendezvous();
    let dev_a = lab.add_device(ka);
    let dev_b = lab.add_device(kb);
    if block_direct {
        // No direct path between the two: each router drops the other's public address.
        for (dev, other) in [(&dev_a, &dev_b), (&dev_b, &dev_a)] {
            if let Some(r) = dev.router() {
                r.block(&[other.public_ip()]);
            }
        }
    }
    let mut a = Mount::prepare()?;
    let mut b = Mount::prepare()?;
    let extra: Vec<String> = if relay {
        vec![
            "--turn".into(),
            format!(
                "turn:{}?user={}&pass={}",
                coturn.addr, coturn.user, coturn.pass
            ),
        ]
    } else {
        Vec::new()
    };
    mount_in(&dev_a, &mut a, "alpha", coturn.addr, &extra);
    mount_in(&dev_b, &mut b, "bravo", coturn.addr, &extra);
    if loss > 0 {
        dev_a.set_loss(loss);
        dev_b.set_loss(loss);
    }

    let p = a.invite_payload();
    let out = b.run(&["pair-with", "--yes", &p], Duration::from_secs(120));
    if !out.status.success() {
        b.fail(&format!(
            "pair-with through the rendezvous failed\n{}\n--- rendezvous server\n{}\n--- coturn\n{}\n--- alpha\n{}",
            describe(&out),
            rdv.output_tail(40),
            coturn.log_tail(40),
            a.log_tail(),
        ));
    }
    std::fs::write(a.path("data.bin"), data).expect("write on alpha");
    wait_for(
        "data.bin on bravo",
        Duration::from_secs(120),
        || match std::fs::read(b.path("data.bin")) {
            Ok(d) if d == data => Ok(()),
            Ok(d) => Err(format!("{} of {} bytes, or different", d.len(), data.len())),
            Err(e) => Err(e.to_string()),
        },
    );
    b.assert_verify_ok();
    {
        let state = b.state.clone();
        let mnt = b.mnt.clone();
        let dev_b = dev_b.clone();
        let ns_cmd = move || {
            let mut m = dev_b.cmd(fybrk_bin());
            m.arg("--state").arg(&state).arg("mount").arg(&mnt);
            m
        };
        let extra = extra.clone();
        let stun = coturn.addr;
        RESTART.with(|r| {
            *r.borrow_mut() = Some(Box::new(move || {
                let rendezvous = SocketAddr::from((RENDEZVOUS_IP, RENDEZVOUS_PORT)).to_string();
                let mut cmd = ns_cmd();
                cmd.args(["--listen", "0.0.0.0:0", "--name", "bravo"])
                    .args(["--rendezvous", &rendezvous, "--stun", &stun.to_string()])
                    .args(&extra);
                let out = run_timeout(&mut cmd, Duration::from_secs(60));
                assert!(out.status.success(), "remount: {}", describe(&out));
            }));
        });
    }
    then(
        &a,
        &b,
        Scene {
            lab: &lab,
            rendezvous: rdv,
            coturn,
            dev_a,
            dev_b,
        },
    );
    RESTART.with(|r| r.borrow_mut().take());
    path_to(&b, &a)
}

#[test]
fn home_home_pairs_through_the_rendezvous_and_syncs_directly() {
    let path = pair_and_sync(
        "hh",
        RouterKind::Home,
        RouterKind::Home,
        0,
        b"across two NATs",
    );
    if let Some(path) = path {
        assert_eq!(path, "direct");
    }
}

#[test]
fn home_and_port_restricted_sync_directly() {
    let data = Gen::new(11).bytes(3 << 20);
    let path = pair_and_sync("hp", RouterKind::Home, RouterKind::PortRestricted, 0, &data);
    if let Some(path) = path {
        assert_eq!(path, "direct");
    }
}

#[test]
fn double_nat_and_home_sync_directly() {
    let path = pair_and_sync(
        "dh",
        RouterKind::DoubleNat,
        RouterKind::Home,
        0,
        b"through a CGNAT",
    );
    if let Some(path) = path {
        assert_eq!(path, "direct");
    }
}

/// Symmetric (endpoint-dependent mapping) against a home router: the home router lets in any
/// port of an address its device wrote to, so the symmetric side's probe from its new mapping
/// gets through and the punch works (peer-reflexive candidate). Direct, no relay.
#[test]
fn symmetric_and_home_sync_directly() {
    let path = pair_and_sync(
        "sh",
        RouterKind::Symmetric,
        RouterKind::Home,
        0,
        b"one symmetric",
    );
    if let Some(path) = path {
        assert_eq!(path, "direct");
    }
}

/// `pair-with` outlasts a network that drops everything for a while (a Wi-Fi coming back): its
/// first round of dials (the inviter's addresses, then an introduction) fails, a later round
/// gets through, and the two are paired.
#[test]
fn pairing_outlasts_a_network_that_drops_everything_for_seconds() {
    /// Longer than one round of dials (3 s per address, then up to 10 s for an introduction),
    /// well within `pair-with`'s 30 s of trying.
    const OUTAGE: Duration = Duration::from_secs(15);
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("po");
    let coturn = lab.start_coturn("u", "p");
    let _rdv = lab.start_rendezvous();
    let dev_a = lab.add_device(RouterKind::Home);
    let dev_b = lab.add_device(RouterKind::Home);
    let (Some(mut a), Some(mut b)) = (Mount::prepare(), Mount::prepare()) else {
        return;
    };
    mount_in(&dev_a, &mut a, "alpha", coturn.addr, &[]);
    mount_in(&dev_b, &mut b, "bravo", coturn.addr, &[]);
    let p = a.invite_payload();
    dev_b.set_loss(100);
    let started = std::time::Instant::now();
    let lift = std::thread::spawn({
        let dev_b = dev_b.clone();
        move || {
            std::thread::sleep(OUTAGE);
            dev_b.set_loss(0);
        }
    });
    let out = b.run(&["pair-with", "--yes", &p], Duration::from_secs(120));
    lift.join().unwrap();
    b.check(out.status.success(), || {
        format!(
            "pair-with across a {OUTAGE:?} outage failed after {:?}\n{}",
            started.elapsed(),
            describe(&out)
        )
    });
    b.check(started.elapsed() >= OUTAGE, || {
        "paired while the network dropped everything".into()
    });
}

/// 5 % of datagrams dropped each way on both routers: pairing and a 4 MiB file still get
/// through intact (QUIC retransmits).
#[test]
fn five_percent_loss_still_syncs_intact() {
    let data = Gen::new(5).bytes(4 << 20);
    let path = pair_and_sync("ls", RouterKind::Home, RouterKind::Home, 5, &data);
    if let Some(path) = path {
        assert_eq!(path, "direct");
    }
}

/// The rendezvous server goes away after the devices connected: they keep syncing over the
/// path they have (it only introduces; no data goes through it).
#[test]
fn rendezvous_down_after_connecting_does_not_stop_sync() {
    let path = pair_and_sync_then(
        "rd",
        RouterKind::Home,
        RouterKind::Home,
        0,
        false,
        false,
        b"first",
        |a, b, servers| {
            drop(servers.rendezvous);
            std::fs::write(a.path("after.txt"), b"server gone").expect("write on alpha");
            std::fs::write(b.path("back.txt"), b"and back").expect("write on bravo");
            for (m, name, want) in [
                (b, "after.txt", &b"server gone"[..]),
                (a, "back.txt", b"and back"),
            ] {
                wait_for(name, Duration::from_secs(60), || {
                    match std::fs::read(m.path(name)) {
                        Ok(d) if d == want => Ok(()),
                        Ok(d) => Err(format!(
                            "{} bytes, starting {:?}",
                            d.len(),
                            String::from_utf8_lossy(&d[..d.len().min(64)])
                        )),
                        Err(e) => Err(e.to_string()),
                    }
                });
            }
        },
    );
    if let Some(path) = path {
        assert_eq!(path, "direct");
    }
}

/// Both have a TURN relay but a direct path exists: killing coturn in the middle of a transfer
/// changes nothing (the relay is only a fallback), and the file arrives intact.
#[test]
fn coturn_killed_mid_transfer_while_direct_changes_nothing() {
    let big = Gen::new(23).bytes(48 << 20);
    let path = pair_and_sync_then(
        "ck",
        RouterKind::Home,
        RouterKind::Home,
        0,
        true,
        false,
        b"first",
        |a, b, servers| {
            std::fs::write(a.path("big.bin"), &big).expect("write on alpha");
            drop(servers.coturn);
            wait_for(
                "big.bin on bravo",
                Duration::from_secs(120),
                || match std::fs::read(b.path("big.bin")) {
                    Ok(d) if d == big => Ok(()),
                    Ok(d) => Err(format!("{} bytes", d.len())),
                    Err(e) => Err(e.to_string()),
                },
            );
        },
    );
    if let Some(path) = path {
        assert_eq!(path, "direct");
    }
}

/// How a device's network changes under its running daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NetChange {
    /// Its router forgets every NAT mapping and hands out new public ports (a router reboot).
    LostMappings,
    /// Its router gets a new public address (the ISP reassigned it).
    NewAddress,
}

/// How long a synced pair may take to sync again after one device's network changed. Where
/// quinn's path migration cannot help, QUIC's idle timeout (30 s) notices the dead path; then
/// both sides dial the addresses they know (3 s each) and ask the rendezvous server, which has
/// the changed device's new address by then (it refreshes every 25 s): about 33 s in the lab.
/// The rest is slack for a loaded CI machine.
const RECOVERY: Duration = Duration::from_secs(75);

/// The pid in `STATE/daemon.pid`.
fn daemon_pid(m: &Mount) -> i32 {
    let p = m.state.join("daemon.pid");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| m.fail(&format!("{p:?}: {e}")));
    text.trim()
        .parse()
        .unwrap_or_else(|e| m.fail(&format!("{p:?} holds {text:?}: {e}")))
}

/// Whether `m`'s daemon dialled its latest connection: its last `connected` log line says.
fn dialled_last(m: &Mount) -> Option<bool> {
    let log = std::fs::read_to_string(m.state.join("daemon.log")).ok()?;
    let line = log.lines().rev().find(|l| l.contains(" connected peer="))?;
    Some(line.contains("initiator=true"))
}

/// How long a connection must have been up before a test changes the network under it: longer
/// than a dial or introduction still in flight from connecting (3 s punch, 3 s dial), whose
/// new connection would otherwise replace the old one and hide what the change does.
const SETTLED: u64 = 8;

/// How many seconds `m` has been connected to `other`, if it is.
fn connected_secs(m: &Mount, other: &Mount) -> Option<u64> {
    let id = other.status_json().device_id;
    let s = m.status_json();
    status_entry(&s, &id)?.connected_secs
}

/// Whether `a` dialled the connection between `a` and `b`, once it has been up for [`SETTLED`]
/// seconds on both sides and their logs agree.
fn a_dialled(a: &Mount, b: &Mount) -> bool {
    wait_for("a settled connection", Duration::from_secs(60), || {
        let up = (connected_secs(a, b), connected_secs(b, a));
        if !matches!(up, (Some(x), Some(y)) if x >= SETTLED && y >= SETTLED) {
            return Err(format!("connected for (alpha, bravo) {up:?} s"));
        }
        match (dialled_last(a), dialled_last(b)) {
            (Some(x), Some(y)) if x != y => Ok(x),
            other => Err(format!("(alpha, bravo) dialled: {other:?}")),
        }
    })
}

/// Waits until `m` holds `name` with `want`.
fn wait_file(m: &Mount, name: &str, want: &[u8], timeout: Duration) {
    wait_for(name, timeout, || match std::fs::read(m.path(name)) {
        Ok(d) if d == want => Ok(()),
        Ok(d) => Err(format!(
            "{} bytes, starting {:?}",
            d.len(),
            String::from_utf8_lossy(&d[..d.len().min(64)])
        )),
        Err(e) => Err(e.to_string()),
    });
}

/// Changes the network of one device of a synced pair (alpha's if `on_a`), then writes a file
/// on each side and waits until each reached the other. Returns how long that took.
fn change_and_resync(
    scene: &mut Scene<'_>,
    (a, b): (&Mount, &Mount),
    change: NetChange,
    on_a: bool,
    round: u32,
) -> Duration {
    let (dev, changed, other) = if on_a {
        (&mut scene.dev_a, a, b)
    } else {
        (&mut scene.dev_b, b, a)
    };
    let new_ip = match change {
        NetChange::LostMappings => {
            dev.lose_mappings();
            None
        }
        NetChange::NewAddress => Some(scene.lab.renumber(dev)),
    };
    let start = std::time::Instant::now();
    let there = format!("round{round}-from-changed.txt");
    let back = format!("round{round}-from-other.txt");
    std::fs::write(changed.path(&there), there.as_bytes()).expect("write on the changed device");
    std::fs::write(other.path(&back), back.as_bytes()).expect("write on the other device");
    wait_file(other, &there, there.as_bytes(), RECOVERY);
    wait_file(changed, &back, back.as_bytes(), RECOVERY);
    let took = start.elapsed();
    if let Some(ip) = new_ip {
        // The other side sees the peer at its new address.
        let id = changed.status_json().device_id;
        wait_for("the peer at its new address", RECOVERY, || {
            let s = other.status_json();
            let addr = status_entry(&s, &id).map(|p| p.addr);
            match addr.flatten() {
                Some(addr) if addr.ip() == std::net::IpAddr::V4(ip) => Ok(()),
                _ => Err(format!("peer address {addr:?}, want {ip}")),
            }
        });
    }
    took
}

/// Two home devices synced directly through the rendezvous; then one device's network changes
/// (`change`), twice: first on the side that accepted the QUIC connection (the dialler's quinn
/// client drops datagrams from an address it does not know), then on the side that dialled
/// (quinn's server side follows a client's new address, if its router lets it in). Each time a
/// file written on each side reaches the other within [`RECOVERY`], with the same daemons.
fn network_change_recovers(tag: &str, change: NetChange) {
    if !lab::ready() || !fybrk_tests::have_tool("conntrack") {
        return;
    }
    let path = pair_and_sync_then(
        tag,
        RouterKind::Home,
        RouterKind::Home,
        0,
        false,
        false,
        b"before the change",
        |a, b, mut scene| {
            let pids = (daemon_pid(a), daemon_pid(b));
            for (round, role) in [(1, "acceptor"), (2, "dialler")] {
                let on_a = a_dialled(a, b) == (role == "dialler");
                let took = change_and_resync(&mut scene, (a, b), change, on_a, round);
                eprintln!(
                    "{change:?} on the {role} ({}): synced again after {:.1} s",
                    if on_a { "alpha" } else { "bravo" },
                    took.as_secs_f64()
                );
            }
            assert_eq!((daemon_pid(a), daemon_pid(b)), pids, "a daemon restarted");
            for m in [a, b] {
                m.check(fybrk_tests::pid_alive(daemon_pid(m)), || {
                    "the daemon died".to_string()
                });
                m.assert_verify_ok();
            }
            wait_file(b, "data.bin", b"before the change", Duration::from_secs(5));
        },
    );
    if let Some(path) = path {
        assert_eq!(path, "direct");
    }
}

/// A router that forgot its NAT mappings (rebooted): the device's traffic leaves from a new
/// public port, and the pair syncs again without a restart.
#[test]
fn lost_nat_mappings_recover_without_restart() {
    network_change_recovers("lm", NetChange::LostMappings);
}

/// The router's public address changes (the ISP reassigned it): the pair syncs again without a
/// restart, and the other side shows the peer at its new address.
#[test]
fn new_public_address_recovers_without_restart() {
    network_change_recovers("na", NetChange::NewAddress);
}

/// Both behind symmetric NATs: no punch gets through, so each dials the other's TURN relayed
/// address through its own allocation on coturn, and the file arrives over the relay.
#[test]
fn symmetric_and_symmetric_sync_through_the_relay() {
    let data = Gen::new(17).bytes(2 << 20);
    let path = pair_and_sync_then(
        "ss",
        RouterKind::Symmetric,
        RouterKind::Symmetric,
        0,
        true,
        false,
        &data,
        |_, _, _| {},
    );
    if let Some(path) = path {
        assert_eq!(path, "relay");
    }
}

/// A device whose network lets UDP out only to the TURN server: its rendezvous registration,
/// the introduction's probes and QUIC all go through coturn, and the home device on the other
/// side answers on the blocked device's relayed address.
#[test]
fn udp_blocked_device_pairs_and_syncs_through_the_relay() {
    let turn = SocketAddr::from((lab::TURN_IP, lab::coturn::TURN_PORT));
    let data = Gen::new(19).bytes(2 << 20);
    let path = pair_and_sync_then(
        "ub",
        RouterKind::Home,
        RouterKind::UdpBlockedExceptTurn(turn),
        0,
        true,
        false,
        &data,
        |a, b, _| {
            let s = b.status_json();
            assert_eq!(
                s.network.relay.map(|r| r.everything),
                Some(true),
                "the blocked side relays all: {s:?}"
            );
            assert_eq!(
                path_to(a, b).as_deref(),
                Some("relay"),
                "{:?}",
                a.status_json()
            );
        },
    );
    if let Some(path) = path {
        assert_eq!(path, "relay");
    }
}

/// The blocked device's network opens up (its router lets all UDP out again): the daemon finds
/// out by trying the rendezvous server directly now and then, leaves relay-everything mode, and
/// the link to the peer moves to a direct path, with syncing going on over it.
#[test]
fn a_device_leaves_relay_everything_mode_when_udp_gets_through_again() {
    let turn = SocketAddr::from((lab::TURN_IP, lab::coturn::TURN_PORT));
    let later = Gen::new(31).bytes(1 << 20);
    pair_and_sync_then(
        "uo",
        RouterKind::Home,
        RouterKind::UdpBlockedExceptTurn(turn),
        0,
        true,
        false,
        b"through the relay",
        |a, b, mut scene| {
            assert_eq!(
                b.status_json().network.relay.map(|r| r.everything),
                Some(true)
            );
            scene.dev_b.unblock_udp();
            // The daemon tries directly every 30 s; then both sides redial.
            wait_for("a direct path", Duration::from_secs(90), || {
                let everything = b.status_json().network.relay.map(|r| r.everything);
                match (everything, path_to(a, b), path_to(b, a)) {
                    (Some(false), Some(x), Some(y)) if x == "direct" && y == "direct" => Ok(()),
                    other => Err(format!("relay everything, paths: {other:?}")),
                }
            });
            std::fs::write(a.path("later.bin"), &later).expect("write on alpha");
            wait_file(b, "later.bin", &later, Duration::from_secs(60));
        },
    );
}

/// Two home devices whose routers first drop each other's address connect through the relay;
/// once the block is lifted, the relayed link finds the direct path and moves to it, and
/// syncing goes on over it.
#[test]
fn a_relayed_link_moves_to_a_direct_path_when_one_opens() {
    let later = Gen::new(29).bytes(1 << 20);
    let path = pair_and_sync_then(
        "up",
        RouterKind::Home,
        RouterKind::Home,
        0,
        true,
        true,
        b"through the relay",
        |a, b, scene| {
            assert_eq!(
                path_to(b, a).as_deref(),
                Some("relay"),
                "{:?}",
                b.status_json()
            );
            for r in [scene.dev_a.router(), scene.dev_b.router()]
                .into_iter()
                .flatten()
            {
                r.block(&[]);
            }
            wait_for("a direct path", Duration::from_secs(60), || {
                match (path_to(a, b), path_to(b, a)) {
                    (Some(x), Some(y)) if x == "direct" && y == "direct" => Ok(()),
                    other => Err(format!("paths {other:?}")),
                }
            });
            std::fs::write(a.path("later.bin"), &later).expect("write on alpha");
            wait_file(b, "later.bin", &later, Duration::from_secs(60));
        },
    );
    if let Some(path) = path {
        assert_eq!(path, "direct");
    }
}

/// `fybrk nat-check` behind a home router reports UDP working and the router's public address.
#[test]
fn nat_check_sees_the_routers_public_address() {
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("nc");
    let coturn = lab.start_coturn("u", "p");
    let dev = lab.add_device(RouterKind::Home);
    let mut cmd = dev.cmd(fybrk_bin());
    cmd.args(["nat-check", "--json", "--stun", &coturn.addr.to_string()]);
    let out = run_timeout(&mut cmd, Duration::from_secs(30));
    assert!(out.status.success(), "nat-check failed\n{}", describe(&out));
    let v: fybrk_control::NatCheckReport =
        serde_json::from_slice(&out.stdout).expect("nat-check --json");
    assert!(v.udp_works, "{v:?}");
    let public: SocketAddr = v
        .public_addr
        .unwrap_or_else(|| panic!("no public address: {v:?}"));
    assert_eq!(public.ip(), std::net::IpAddr::V4(dev.public_ip()), "{v:?}");
}

/// Figures for `scripts/bench/nat.sh` (ignored: a benchmark, not a test). For a home-home pair
/// (direct) and a symmetric-symmetric pair (relayed through coturn): the connection time, from
/// starting the second daemon to a file written while it was down being readable on it, and
/// the throughput of a 64 MiB file written on the first until verified on the second.
/// A router kind's short name for the bench table.
fn label(kind: RouterKind) -> String {
    match kind {
        RouterKind::UdpBlockedExceptTurn(_) => "UdpBlocked".into(),
        other => format!("{other:?}"),
    }
}

#[test]
#[ignore]
fn nat_bench() {
    if !lab::ready() {
        return;
    }
    println!(
        "{:<22} {:>10} {:>14} {:>12}",
        "pair", "path", "connect (s)", "MiB/s"
    );
    let turn = SocketAddr::from((lab::TURN_IP, lab::coturn::TURN_PORT));
    for (tag, ka, kb) in [
        ("bd", RouterKind::Home, RouterKind::Home),
        ("br", RouterKind::Symmetric, RouterKind::Symmetric),
        (
            "bu",
            RouterKind::Home,
            RouterKind::UdpBlockedExceptTurn(turn),
        ),
    ] {
        let data = Gen::new(99).bytes(64 << 20);
        let mut figures = None;
        let path =
            pair_and_sync_then(tag, ka, kb, 0, true, false, b"warm-up", |a, b, _servers| {
                let b_state = b.state.to_str().expect("utf-8").to_owned();
                let b_mnt = b.mnt.to_str().expect("utf-8").to_owned();
                let out = b.run(&["unmount", &b_mnt], Duration::from_secs(60));
                assert!(out.status.success(), "{}", describe(&out));
                std::fs::write(a.path("while-down.txt"), b"hello").expect("write on alpha");
                let _ = b_state;
                let start = std::time::Instant::now();
                RESTART.with(|r| (r.borrow_mut().as_mut().expect("restart hook"))());
                wait_for("while-down.txt", Duration::from_secs(120), || {
                    std::fs::read(b.path("while-down.txt"))
                        .map_err(|e| e.to_string())
                        .and_then(|d| {
                            if d == b"hello" {
                                Ok(())
                            } else {
                                Err("partial".into())
                            }
                        })
                });
                let connect = start.elapsed();
                let start = std::time::Instant::now();
                std::fs::write(a.path("big.bin"), &data).expect("write big");
                wait_for("big.bin", Duration::from_secs(600), || match std::fs::read(
                    b.path("big.bin"),
                ) {
                    Ok(d) if d == data => Ok(()),
                    Ok(d) => Err(format!("{} bytes", d.len())),
                    Err(e) => Err(e.to_string()),
                });
                let secs = start.elapsed().as_secs_f64();
                figures = Some((connect.as_secs_f64(), 64.0 / secs));
            });
        if let (Some(path), Some((connect, rate))) = (path, figures) {
            println!(
                "{:<22} {:>10} {:>14.2} {:>12.1}",
                format!("{}-{}", label(ka), label(kb)),
                path,
                connect,
                rate
            );
        }
    }
}

thread_local! {
    /// How `nat_bench` restarts the second device's daemon (set by `pair_and_sync_then`).
    static RESTART: std::cell::RefCell<Option<Box<dyn FnMut()>>> = const { std::cell::RefCell::new(None) };
}
