//! Dual stack between real daemons in the lab (`tests/lab/`, `tests/lab/v6.rs`): two devices
//! with only IPv6 (global addresses, no NAT, a rendezvous server reachable over IPv6) pair and
//! sync on a direct IPv6 path; a dual-stack device (the default `[::]` socket) and an IPv4-only
//! one (`--listen 0.0.0.0:PORT`) pair and sync over IPv4, each seeing the other at its plain
//! IPv4 address. Root only (skips loudly outside CI).
//!
//! To run: `cargo test --release -p fybrk-tests --test ipv6 -- --nocapture`.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "lab/mod.rs"]
mod lab;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use fybrk_tests::{describe, fybrk_bin, run_timeout, status_entry, wait_for, Mount};
use lab::v6::{V6_RENDEZVOUS, V6_STUN_PORT};
use lab::{Lab, RENDEZVOUS_PORT};

/// Mounts `m` with the daemon in namespace `ns` (`cmd` builds a command there) and `extra`
/// flags; the listen address is the default unless `extra` names one.
fn mount_with(cmd: Command, ns: &str, m: &mut Mount, name: &str, extra: &[String]) {
    let mut cmd = cmd;
    cmd.arg("--state")
        .arg(&m.state)
        .arg("mount")
        .arg(&m.mnt)
        .args(["--name", name])
        .args(extra);
    let out = run_timeout(&mut cmd, Duration::from_secs(60));
    if !out.status.success() {
        m.fail(&format!("mount in {ns} failed\n{}", describe(&out)));
    }
    m.adopt_daemon();
}

/// `b` joins `a`'s folder with `a`'s invitation.
fn pair(a: &Mount, b: &Mount) {
    let p = a.invite_payload();
    let out = b.run(&["pair-with", "--yes", &p], Duration::from_secs(120));
    if !out.status.success() {
        b.fail(&format!(
            "pair-with failed\n{}\n--- inviter\n{}",
            describe(&out),
            a.log_tail()
        ));
    }
}

/// `other` as `m`'s status shows it, once connected: (path, address).
fn link_to(m: &Mount, other_id: &str) -> Option<(String, SocketAddr)> {
    let s = m.status_json();
    let p = status_entry(&s, other_id)?;
    if !p.connected {
        return None;
    }
    Some((p.path?.as_str().to_owned(), p.addr?))
}

fn wait_file(m: &Mount, rel: &str, data: &[u8]) {
    wait_for(
        &format!("{rel} on the other side"),
        Duration::from_secs(60),
        || match std::fs::read(m.path(rel)) {
            Ok(d) if d == data => Ok(()),
            Ok(d) => Err(format!("{} of {} bytes, or different", d.len(), data.len())),
            Err(e) => Err(format!("{e}\n{}", m.log_tail())),
        },
    );
}

/// `fybrk unmount` (which waits for the daemon to exit) of a daemon started by [`mount_with`].
fn unmount(m: &Mount) {
    let mnt = m.mnt.to_str().unwrap().to_owned();
    let out = m.run(&["unmount", &mnt], Duration::from_secs(60));
    if !out.status.success() {
        m.fail(&format!("unmount failed\n{}", describe(&out)));
    }
}

fn daemon_log(m: &Mount) -> String {
    std::fs::read_to_string(m.state.join("daemon.log")).unwrap_or_default()
}

#[test]
fn two_ipv6_only_devices_pair_and_sync_directly() {
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("v6");
    // The server's default listen address: one dual-stack socket, so IPv6 clients reach it.
    let mut rdv = Command::new(fybrk_bin());
    rdv.arg("rendezvous");
    let _rdv = lab.spawn_in_v6_core("rendezvous", rdv);
    let _stun = lab.start_v6_stun();
    let dev_a = lab.add_v6_device();
    let dev_b = lab.add_v6_device();
    let Some(mut a) = Mount::prepare() else {
        return;
    };
    let Some(mut b) = Mount::prepare() else {
        return;
    };
    let server = SocketAddr::new(IpAddr::V6(V6_RENDEZVOUS), RENDEZVOUS_PORT).to_string();
    let stun = SocketAddr::new(IpAddr::V6(V6_RENDEZVOUS), V6_STUN_PORT).to_string();
    let extra: Vec<String> = vec!["--rendezvous".into(), server, "--stun".into(), stun.clone()];
    // No --listen: the default (dual stack) in a namespace that has no IPv4 at all.
    mount_with(dev_a.cmd(fybrk_bin()), dev_a.ns(), &mut a, "alpha", &extra);
    mount_with(dev_b.cmd(fybrk_bin()), dev_b.ns(), &mut b, "bravo", &extra);

    // The invitation lists alpha's global IPv6 address.
    let t0 = std::time::Instant::now();
    pair(&a, &b);
    let b_id = b.status_json().device_id;
    let a_id = a.status_json().device_id;
    std::fs::write(a.path("from-a.txt"), b"over ipv6").unwrap();
    wait_file(&b, "from-a.txt", b"over ipv6");
    eprintln!(
        "IPv6 only: paired and the first file synced in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    std::fs::write(b.path("from-b.txt"), b"back again").unwrap();
    wait_file(&a, "from-b.txt", b"back again");

    for (m, id, ip) in [(&a, &b_id, dev_b.ip()), (&b, &a_id, dev_a.ip())] {
        let (path, addr) = wait_for("the link", Duration::from_secs(30), || {
            link_to(m, id).ok_or_else(|| m.log_tail())
        });
        assert_eq!(path, "direct", "a global IPv6 address is a direct path");
        assert_eq!(addr.ip(), IpAddr::V6(ip));
    }
    let status = a.status_json();
    assert!(status.network.listen_addr.is_ipv6(), "{status:?}");
    let out = a.run(&["ping", "bravo"], Duration::from_secs(30));
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "ping: {}", describe(&out));
    assert!(
        line.contains(&format!("([{}]:22100) via direct (IPv6) in ", dev_b.ip())),
        "{line}"
    );
    // STUN over IPv6: the daemon's monitor sees the device at its own address (no NAT).
    wait_for(
        "the STUN monitor's answer",
        Duration::from_secs(30),
        || match a.status_json().network.nat.map(|n| (n.public_addr, n.ipv6)) {
            Some((Some(p), Some(v6))) if p.ip() == IpAddr::V6(dev_a.ip()) && v6 == p => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // The rendezvous server took both registrations over IPv6 and saw each device at its
    // own address.
    for (m, ip) in [(&a, dev_a.ip()), (&b, dev_b.ip())] {
        let seen = format!("observed: [{ip}]:");
        wait_for("registered over IPv6", Duration::from_secs(30), || {
            if daemon_log(m).contains(&seen) {
                Ok(())
            } else {
                Err(m.log_tail())
            }
        });
    }
    // `nat-check` reports IPv6.
    let out = run_timeout(
        dev_a
            .cmd(fybrk_bin())
            .args(["nat-check", "--json", "--stun", &stun]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "nat-check: {}", describe(&out));
    let report: fybrk_control::NatCheckReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.ipv6.map(|a| a.ip()), Some(IpAddr::V6(dev_a.ip())));

    // Both come back on other ports: neither is where the other remembers it, so they find
    // each other through the rendezvous server (the introduction hands out the IPv6 host
    // candidates and the observed addresses) and connect directly again.
    for (m, name, port) in [(&mut a, "alpha", 22200), (&mut b, "bravo", 22201)] {
        unmount(m);
        let mut moved = extra.clone();
        moved.extend(["--listen".to_string(), format!("[::]:{port}")]);
        let dev = if name == "alpha" { &dev_a } else { &dev_b };
        mount_with(dev.cmd(fybrk_bin()), dev.ns(), m, name, &moved);
    }
    for (m, id, ip, port) in [
        (&a, &b_id, dev_b.ip(), 22201),
        (&b, &a_id, dev_a.ip(), 22200),
    ] {
        let (path, addr) =
            wait_for(
                "the link after moving",
                Duration::from_secs(60),
                || match link_to(m, id) {
                    Some((path, addr)) if addr.port() == port => Ok((path, addr)),
                    other => Err(format!("{other:?}\n{}", m.log_tail())),
                },
            );
        assert_eq!(path, "direct");
        assert_eq!(addr, SocketAddr::new(IpAddr::V6(ip), port));
    }
    std::fs::write(b.path("after.txt"), b"moved").unwrap();
    wait_file(&a, "after.txt", b"moved");
}

#[test]
fn a_dual_stack_device_and_an_ipv4_only_device_pair_over_ipv4() {
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("v46");
    let dual = lab.add_lan_device();
    let v4 = lab.add_lan_device();
    let Some(mut a) = Mount::prepare() else {
        return;
    };
    let Some(mut b) = Mount::prepare() else {
        return;
    };
    mount_with(dual.cmd(fybrk_bin()), dual.ns(), &mut a, "dual", &[]);
    let v4_only: Vec<String> = vec!["--listen".into(), "0.0.0.0:22100".into()];
    mount_with(v4.cmd(fybrk_bin()), v4.ns(), &mut b, "four", &v4_only);
    assert!(a.status_json().network.listen_addr.is_ipv6());
    assert!(b.status_json().network.listen_addr.is_ipv4());

    // The dual-stack device joins: it dials IPv4 from its IPv6 socket.
    pair(&b, &a);
    let a_id = a.status_json().device_id;
    let b_id = b.status_json().device_id;
    std::fs::write(a.path("from-dual.txt"), b"dual").unwrap();
    wait_file(&b, "from-dual.txt", b"dual");
    std::fs::write(b.path("from-v4.txt"), b"four").unwrap();
    wait_file(&a, "from-v4.txt", b"four");

    // Each sees the other at its plain IPv4 address: the dual-stack side's socket reports
    // `::ffff:10.77.0.x`, which never gets past the mux and the link.
    for (m, id, ip) in [(&a, &b_id, v4.lan_ip()), (&b, &a_id, dual.lan_ip())] {
        let (path, addr) = wait_for("the link", Duration::from_secs(30), || {
            link_to(m, id).ok_or_else(|| m.log_tail())
        });
        assert_eq!(path, "lan");
        assert_eq!(addr.ip(), IpAddr::V4(ip));
    }
    // And the address it remembers for next time is the plain one too.
    let peers = std::fs::read_to_string(a.state.join("peers.json")).unwrap();
    assert!(!peers.contains("::ffff:"), "{peers}");
}
