//! LAN discovery between real daemons in the lab (`tests/lab/`): two devices on one router-less
//! LAN, no rendezvous server, paired and syncing; one is renumbered and they find each other
//! again by their announcements; forged, unsigned and strangers' announcements are ignored (and
//! named in the log); `fybrk ping` reports the path. Root only (skips loudly outside CI).
//!
//! To run: `cargo test --release -p fybrk-tests --test lan -- --nocapture`.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "lab/mod.rs"]
mod lab;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use fybrk_net::identity::DeviceKey;
use fybrk_net::lan::Announcement;
use fybrk_tests::{describe, fybrk_bin, run_timeout, status_entry, wait_for, Mount};
use lab::{Device, Lab};

/// Not the default port: the flag must reach the daemon (both devices use the same).
const LAN_PORT: u16 = 23456;
/// The QUIC port of both devices (each in its own namespace).
const QUIC_PORT: u16 = 22100;

fn mount_in(dev: &Device, m: &mut Mount, name: &str) {
    let port = LAN_PORT.to_string();
    mount_with(dev, m, name, &["--lan-discovery-port", &port]);
}

fn mount_with(dev: &Device, m: &mut Mount, name: &str, extra: &[&str]) {
    let mut cmd = dev.cmd(fybrk_bin());
    cmd.arg("--state")
        .arg(&m.state)
        .arg("mount")
        .arg(&m.mnt)
        .args(["--listen", &format!("0.0.0.0:{QUIC_PORT}"), "--name", name])
        .args(extra);
    let out = run_timeout(&mut cmd, Duration::from_secs(60));
    if !out.status.success() {
        m.fail(&format!("mount in {} failed\n{}", dev.ns(), describe(&out)));
    }
    m.adopt_daemon();
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

fn wait_file(m: &Mount, rel: &str, data: &[u8], timeout: Duration) {
    wait_for(
        &format!("{rel} on the other side"),
        timeout,
        || match std::fs::read(m.path(rel)) {
            Ok(d) if d == data => Ok(()),
            Ok(d) => Err(format!("{} of {} bytes, or different", d.len(), data.len())),
            Err(e) => Err(format!("{e}\n{}", m.log_tail())),
        },
    );
}

fn daemon_log(m: &Mount) -> String {
    std::fs::read_to_string(m.state.join("daemon.log")).unwrap_or_default()
}

fn ping(m: &Mount, args: &[&str]) -> (std::process::Output, Vec<fybrk_control::PingReply>) {
    let mut all = vec!["ping"];
    all.extend_from_slice(args);
    let out = m.run(&all, Duration::from_secs(60));
    let replies = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out, replies)
}

/// Sends forged announcements to `to` from a third device on the LAN (no daemon there).
fn send_forgeries(stranger: &Device, to: Ipv4Addr, victim_state: &std::path::Path) {
    let sock = stranger.udp(0);
    let dest = SocketAddr::new(IpAddr::V4(to), LAN_PORT);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // 1. A device nobody paired with, correctly signed.
    let unpaired = DeviceKey::generate().unwrap();
    let a = Announcement {
        id: unpaired.id(),
        public_key: unpaired.public_key(),
        port: QUIC_PORT,
        addrs: vec![IpAddr::V4(stranger.lan_ip())],
        timestamp_ms: now_ms,
    };
    sock.send_to(&a.encode(&unpaired).unwrap(), dest).unwrap();
    // 2. The paired device's id and key (public: it announces them), signed by another key.
    let victim = DeviceKey::load(&victim_state.join("device.key")).unwrap();
    let forger = DeviceKey::generate().unwrap();
    let mut bytes = fybrk_net::lan::wire::MAGIC.to_vec();
    bytes.push(fybrk_net::lan::wire::VERSION);
    bytes.extend(
        postcard::to_stdvec(&Announcement {
            id: victim.id(),
            public_key: victim.public_key(),
            port: QUIC_PORT,
            addrs: vec![IpAddr::V4(stranger.lan_ip())],
            timestamp_ms: now_ms,
        })
        .unwrap(),
    );
    let mut signed = fybrk_net::lan::wire::SIGNING_CONTEXT.to_vec();
    signed.extend_from_slice(&bytes);
    bytes.extend(forger.sign(&signed));
    sock.send_to(&bytes, dest).unwrap();
    // 3. Unsigned: the magic and version and a body with no signature.
    let mut unsigned = b"fyLA\x01".to_vec();
    unsigned.extend(postcard::to_stdvec(&a).unwrap());
    sock.send_to(&unsigned, dest).unwrap();
}

/// Two paired devices on one LAN, syncing (no server anywhere), and a third with no daemon.
struct Scene {
    lab: Lab,
    dev_a: Device,
    dev_b: Device,
    stranger: Device,
    a: Mount,
    b: Mount,
    b_id: String,
}

fn paired(tag: &str) -> Option<Scene> {
    if !lab::ready() {
        return None;
    }
    let lab = Lab::new(tag);
    let dev_a = lab.add_lan_device();
    let dev_b = lab.add_lan_device();
    let stranger = lab.add_lan_device();
    let mut a = Mount::prepare()?;
    let mut b = Mount::prepare()?;
    mount_in(&dev_a, &mut a, "alpha");
    mount_in(&dev_b, &mut b, "bravo");

    // Pairing needs no server here: the invitation lists alpha's LAN address.
    let p = a.invite_payload();
    let out = b.run(&["pair-with", "--yes", &p], Duration::from_secs(120));
    if !out.status.success() {
        b.fail(&format!(
            "pair-with failed\n{}\n--- alpha\n{}",
            describe(&out),
            a.log_tail()
        ));
    }
    let b_id = b.status_json().device_id;
    std::fs::write(a.path("before.txt"), b"before").unwrap();
    wait_file(&b, "before.txt", b"before", Duration::from_secs(60));
    let (path, addr) = wait_for("alpha linked to bravo", Duration::from_secs(30), || {
        link_to(&a, &b_id).ok_or_else(|| a.log_tail())
    });
    assert_eq!(path, "lan");
    assert_eq!(addr.ip(), IpAddr::V4(dev_b.lan_ip()));
    Some(Scene {
        lab,
        dev_a,
        dev_b,
        stranger,
        a,
        b,
        b_id,
    })
}

#[test]
fn ping_shows_the_round_trip_and_the_path() {
    // Bound whole: a field left out of a pattern would drop (the lab, a mount) at once.
    let Some(scene) = paired("lanp") else {
        return;
    };
    let Scene { a, dev_b, .. } = &scene;
    // One line per attempt; --until-direct (the default) stops at the first direct answer.
    let (out, replies) = ping(a, &["bravo", "--json", "--count", "5"]);
    assert!(out.status.success(), "ping: {}", describe(&out));
    assert_eq!(replies.len(), 1, "until-direct stops at once: {replies:?}");
    let r = &replies[0];
    assert!(r.connected && r.is_direct(), "{r:?}");
    assert_eq!(r.path, Some(fybrk_control::PathKind::Lan));
    assert_eq!(r.addr.map(|a| a.ip()), Some(IpAddr::V4(dev_b.lan_ip())));
    assert!(
        r.rtt_ms.is_some_and(|ms| (0.0..1000.0).contains(&ms)),
        "{r:?}"
    );
    let (out, replies) = ping(a, &["bravo", "--json", "--count", "2", "--no-until-direct"]);
    assert!(out.status.success(), "ping: {}", describe(&out));
    assert_eq!(replies.len(), 2, "{replies:?}");
    let (out, _) = ping(a, &["bravo", "--count", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "pong from bravo ({}:{QUIC_PORT}) via lan in ",
        dev_b.lan_ip()
    );
    assert!(text.starts_with(&want), "{text}");
    let (out, _) = ping(a, &["nobody"]);
    assert!(
        !out.status.success(),
        "ping of an unknown device: {}",
        describe(&out)
    );
}

#[test]
fn forged_unsigned_and_unpaired_announcements_are_ignored() {
    let Some(scene) = paired("lanf") else {
        return;
    };
    let Scene {
        a,
        b,
        dev_a,
        stranger,
        ..
    } = &scene;
    send_forgeries(stranger, dev_a.lan_ip(), &b.state);
    let source = format!("from={}:", stranger.lan_ip());
    wait_for(
        "the forgeries in alpha's log",
        Duration::from_secs(10),
        || {
            let log = daemon_log(a);
            let named: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("ignored an announcement") && l.contains(&source))
                .collect();
            let all = ["is not paired", "bad signature", "malformed"]
                .iter()
                .all(|why| named.iter().any(|l| l.contains(why)));
            if all {
                Ok(())
            } else {
                Err(format!("{named:#?}\n{}", a.log_tail()))
            }
        },
    );
    let believed = daemon_log(a)
        .lines()
        .any(|l| l.contains("heard a paired device") && l.contains(&source));
    assert!(!believed, "a forgery was believed\n{}", a.log_tail());
}

#[test]
fn a_renumbered_device_is_found_again_by_lan_discovery() {
    let Some(mut scene) = paired("lanr") else {
        return;
    };
    let Scene {
        lab,
        dev_b,
        a,
        b,
        b_id,
        ..
    } = &mut scene;
    // Renumber bravo (its old address is gone): they find each other again within 60 s, with
    // no server, and a file written after the change arrives.
    let new_ip = Ipv4Addr::new(10, 77, 0, 200);
    let t0 = Instant::now();
    lab.renumber_lan(dev_b, new_ip);
    std::fs::write(a.path("after.txt"), b"after renumbering").unwrap();
    wait_for(
        "alpha linked to bravo's new address",
        Duration::from_secs(60),
        || match link_to(a, b_id) {
            Some((_, addr)) if addr.ip() == IpAddr::V4(new_ip) => Ok(()),
            other => Err(format!("{other:?}\n{}", a.log_tail())),
        },
    );
    wait_file(
        b,
        "after.txt",
        b"after renumbering",
        Duration::from_secs(60)
            .saturating_sub(t0.elapsed())
            .max(Duration::from_secs(1)),
    );
    eprintln!(
        "reconnected after renumbering in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
    let (path, _) = link_to(a, b_id).unwrap();
    assert_eq!(path, "lan");
    b.assert_verify_ok();
    for l in daemon_log(a)
        .lines()
        .filter(|l| l.contains("LAN discovery"))
    {
        eprintln!("alpha: {l}");
    }
}

#[test]
fn switched_off_it_neither_announces_nor_listens() {
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("lano");
    let dev_a = lab.add_lan_device();
    let dev_b = lab.add_lan_device();
    let Some(mut a) = Mount::prepare() else {
        return;
    };
    let Some(mut b) = Mount::prepare() else {
        return;
    };
    // Off by the config file on alpha, on (the same port) on bravo.
    std::fs::write(
        a.state.join("config.toml"),
        format!("lan_discovery = false\nlan_discovery_port = {LAN_PORT}\n"),
    )
    .unwrap();
    mount_with(&dev_a, &mut a, "alpha", &[]);
    mount_in(&dev_b, &mut b, "bravo");
    // Bravo announces at start; alpha would log it (not paired) if it listened.
    wait_for(
        "bravo's first announcement",
        Duration::from_secs(10),
        || {
            if daemon_log(&b).contains("LAN discovery on") {
                Ok(())
            } else {
                Err(b.log_tail())
            }
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let log_a = daemon_log(&a);
    assert!(log_a.contains("LAN discovery is off"), "{}", a.log_tail());
    assert!(
        !log_a.contains("ignored an announcement"),
        "{}",
        a.log_tail()
    );
    let from_a = format!("from={}:", dev_a.lan_ip());
    assert!(
        !daemon_log(&b).contains(&from_a),
        "alpha announced\n{}",
        b.log_tail()
    );
}
