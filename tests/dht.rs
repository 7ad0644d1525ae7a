//! Discovery through the Mainline DHT in the lab (`tests/lab/`): two devices behind home NATs
//! (and, in a second test, behind port-restricted ones: plain masquerade),
//! paired earlier through a rendezvous server that is then gone, restart at new public ports
//! (their remembered addresses are wrong) and find each other through the lab's own small DHT
//! (`fybrk dht-node`, never the public one), then connect directly. Root only (skips loudly
//! outside CI).
//!
//! To run: `cargo build --release -p fybrk && cargo test --release -p fybrk-tests --test dht`.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "lab/mod.rs"]
mod lab;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use fybrk_tests::{describe, fybrk_bin, path_to, run_timeout, wait_for, Mount};
use lab::{Device, Lab, RouterKind, RENDEZVOUS_IP, RENDEZVOUS_PORT};

/// `fybrk mount` for `m` in `dev`'s namespace with DHT discovery on (the lab turns it off by
/// default) and `extra` options.
fn mount_in(dev: &Device, m: &mut Mount, name: &str, extra: &[String]) {
    let mut cmd = dev.cmd(fybrk_bin());
    cmd.env_remove("FYBRK_NO_DHT")
        .arg("--state")
        .arg(&m.state)
        .arg("mount")
        .arg(&m.mnt)
        .args(["--listen", "0.0.0.0:0", "--name", name])
        .args(extra);
    let out = run_timeout(&mut cmd, Duration::from_secs(60));
    if !out.status.success() {
        m.fail(&format!("mount in {} failed\n{}", dev.ns(), describe(&out)));
    }
    m.adopt_daemon();
}

/// Unmounts a daemon started by [`mount_in`] and waits until it is gone.
fn unmount(m: &Mount) {
    let pid = m.status_json().pid;
    let out = m.run(
        &["unmount", m.mnt.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "unmount: {}", describe(&out));
    let end = Instant::now() + Duration::from_secs(20);
    while fybrk_tests::pid_alive(pid as i32) {
        assert!(Instant::now() < end, "daemon {pid} did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_file(m: &Mount, name: &str, want: &[u8], timeout: Duration) {
    wait_for(
        &format!("{name} on {}", m.mnt.display()),
        timeout,
        || match std::fs::read(m.path(name)) {
            Ok(d) if d == want => Ok(()),
            Ok(d) => Err(format!("{} bytes, or different", d.len())),
            Err(e) => Err(e.to_string()),
        },
    );
}

#[test]
fn home_nats_without_a_rendezvous_find_each_other_through_the_dht() {
    found_through_the_dht("dht", RouterKind::Home);
}

/// Two devices behind routers of `kind` (see the module doc); the lab is tagged `tag`.
fn found_through_the_dht(tag: &str, kind: RouterKind) {
    if !lab::ready() || !fybrk_tests::have_tool("conntrack") {
        return;
    }
    let lab = Lab::new(tag);
    // coturn only as the STUN server (the reflexive address each device publishes).
    let coturn = lab.start_coturn("u", "p");
    let dht = lab.start_dht(&fybrk_bin(), 5);
    let rendezvous = SocketAddr::from((RENDEZVOUS_IP, RENDEZVOUS_PORT)).to_string();
    let mut rdv = Command::new(fybrk_bin());
    rdv.args(["rendezvous", "--listen", &rendezvous]);
    let rdv = lab.spawn_in_public("rendezvous", rdv);
    let mut dev_a = lab.add_device(kind);
    let mut dev_b = lab.add_device(kind);
    let (Some(mut a), Some(mut b)) = (Mount::prepare(), Mount::prepare()) else {
        return;
    };
    let mut common = vec!["--stun".to_string(), coturn.addr.to_string()];
    common.extend(dht.bootstrap_args());
    let with_rdv: Vec<String> = common
        .iter()
        .cloned()
        .chain(["--rendezvous".to_string(), rendezvous.clone()])
        .collect();

    // Paired earlier, through the rendezvous server.
    mount_in(&dev_a, &mut a, "alpha", &with_rdv);
    mount_in(&dev_b, &mut b, "bravo", &with_rdv);
    let p = a.invite_payload();
    let out = b.run(&["pair-with", "--yes", &p], Duration::from_secs(120));
    assert!(out.status.success(), "pair-with: {}", describe(&out));
    std::fs::write(a.path("before.txt"), b"paired").unwrap();
    wait_file(&b, "before.txt", b"paired", Duration::from_secs(60));

    // Each has learnt the other's key (the node starts only then).
    for m in [&a, &b] {
        wait_for("the DHT node", Duration::from_secs(30), || {
            match m.status_json().network.dht {
                Some(d) if d.running => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }

    // The rendezvous server is gone; both restart behind routers that forgot their mappings
    // and hand out new public ports, so what each remembers of the other is wrong.
    drop(rdv);
    unmount(&a);
    unmount(&b);
    dev_a.lose_mappings();
    dev_b.lose_mappings();
    let started = Instant::now();
    mount_in(&dev_a, &mut a, "alpha", &common);
    mount_in(&dev_b, &mut b, "bravo", &common);
    assert_eq!(a.status_json().rendezvous, None);

    wait_for(
        "a direct link found through the DHT",
        Duration::from_secs(90),
        || match (path_to(&a, &b), path_to(&b, &a)) {
            (Some(x), Some(y)) if x == "direct" && y == "direct" => Ok(()),
            other => Err(format!(
                "paths {other:?}\n--- alpha\n{}\n--- bravo\n{}",
                a.log_tail(),
                b.log_tail()
            )),
        },
    );
    eprintln!(
        "found each other through the DHT and connected directly {:.1} s after the restart",
        started.elapsed().as_secs_f64()
    );
    // The link came from a dial of an address found in the DHT (nothing else knew the ports).
    let logs: String = [&a, &b]
        .iter()
        .map(|m| std::fs::read_to_string(m.state.join("daemon.log")).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("DHT: reached a paired device at its published address"),
        "no DHT dial reached the peer"
    );
    std::fs::write(b.path("after.txt"), b"through the dht").unwrap();
    wait_file(&a, "after.txt", b"through the dht", Duration::from_secs(30));
    for m in [&a, &b] {
        let s = m.status_json();
        let d = s.network.dht.expect("status shows the DHT");
        assert!(d.running, "{d:?}");
        assert!(d.last_publish_unix.is_some(), "{d:?}");
        assert!(d.known_nodes >= 1, "{d:?}");
    }
    unmount(&a);
    unmount(&b);
}

#[test]
fn port_restricted_nats_without_a_rendezvous_find_each_other_through_the_dht() {
    found_through_the_dht("dhtp", RouterKind::PortRestricted);
}
