//! Router port mapping in the NAT lab (`tests/lab/`, `tests/lab/upnp.rs`): the real miniupnpd
//! on a lab router answers PCP, NAT-PMP and UPnP IGD, and two devices behind symmetric NATs,
//! which otherwise meet only through the TURN relay, connect directly through the mapping.
//! Root only (skips loudly outside CI). To run:
//! `cargo test --release -p fybrk-tests --test portmap`.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "lab/mod.rs"]
mod lab;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use fybrk_tests::{describe, fybrk_bin, path_to, run_timeout, status_entry, wait_for, Gen, Mount};
use lab::{Device, Lab, RouterKind};

/// The lab, or `None` (skipped) without root or miniupnpd; in CI a missing miniupnpd fails.
fn ready() -> bool {
    if !lab::ready() {
        return false;
    }
    if !lab::upnp::have_miniupnpd() {
        assert!(
            !fybrk_tests::in_ci(),
            "CI must run the port-mapping tests: install miniupnpd-nftables (scripts/setup-deps.sh --test)"
        );
        eprintln!("\n!!!!!!!!!! SKIPPED: miniupnpd is not installed !!!!!!!!!!\n");
        return false;
    }
    true
}

/// Two devices behind symmetric NATs, paired through the rendezvous server, the first one's
/// router running miniupnpd. Fields drop in order: the mounts before the lab.
struct Paired {
    a: Mount,
    b: Mount,
    dev_b: Device,
    upnpd: lab::upnp::Miniupnpd,
    coturn: lab::Coturn,
    _rdv: lab::LabChild,
    _lab: Lab,
}

/// Builds [`Paired`]: miniupnpd on alpha's router, both daemons mounted, alpha's mapping
/// granted (checked: PCP, the router's external address, the listen port), bravo paired.
fn pair_through_mapping(tag: &str) -> Option<Paired> {
    if !ready() {
        return None;
    }
    let lab = Lab::new(tag);
    let coturn = lab.start_coturn("u", "p");
    let rdv = lab.start_rendezvous();
    let dev_a = lab.add_device(RouterKind::Symmetric);
    let dev_b = lab.add_device(RouterKind::Symmetric);
    let upnpd = lab.run_miniupnpd(&dev_a);
    let mut a = Mount::prepare()?;
    let mut b = Mount::prepare()?;
    mount_in(&dev_a, &mut a, "alpha", &coturn);
    mount_in(&dev_b, &mut b, "bravo", &coturn);

    // The mapping comes first: alpha's registration then names it.
    let mapping = wait_for("alpha's port mapping", Duration::from_secs(20), || match a
        .status_json()
        .network
        .port_mapping
    {
        Some(m) => Ok(m),
        None => Err(format!("none yet; miniupnpd:\n{}", upnpd.log_tail(10))),
    });
    assert_eq!(mapping.protocol, "PCP", "{mapping:?}");
    assert_eq!(
        mapping.external_addr.ip(),
        IpAddr::V4(upnpd.external_ip),
        "{mapping:?}"
    );
    let listen = a.status_json().network.listen_addr;
    assert_eq!(mapping.external_addr.port(), listen.port(), "{mapping:?}");
    assert_eq!(upnpd.redirects().len(), 1, "{:?}", upnpd.redirects());

    let p = a.invite_payload();
    let out = b.run(&["pair-with", "--yes", &p], Duration::from_secs(120));
    if !out.status.success() {
        b.fail(&format!(
            "pair-with through the rendezvous failed\n{}\n--- rendezvous\n{}\n--- alpha\n{}",
            describe(&out),
            rdv.output_tail(40),
            a.log_tail(),
        ));
    }
    Some(Paired {
        a,
        b,
        dev_b,
        upnpd,
        coturn,
        _rdv: rdv,
        _lab: lab,
    })
}

/// Waits until `name` on `m` holds `data`.
fn wait_file(m: &Mount, name: &str, data: &[u8], timeout: Duration) {
    wait_for(name, timeout, || match std::fs::read(m.path(name)) {
        Ok(d) if d == data => Ok(()),
        Ok(d) => Err(format!("{} of {} bytes", d.len(), data.len())),
        Err(e) => Err(e.to_string()),
    });
}

/// Two devices behind symmetric NATs (a new public port per destination: no punch gets
/// through, `nat_sync` sees them meet on coturn), one router running miniupnpd: the daemon
/// there maps its port with PCP, registers the mapped address, and the other device's probes
/// reach it through the router. They pair and sync over a direct path, and the mapping is gone
/// from miniupnpd once the daemon unmounts.
#[test]
fn symmetric_nats_connect_directly_through_a_port_mapping() {
    let Some(mut s) = pair_through_mapping("pm") else {
        return;
    };
    let (a, b) = (&mut s.a, &s.b);
    let mapping = a.status_json().network.port_mapping.unwrap();
    let data = Gen::new(14).bytes(1 << 20);
    std::fs::write(a.path("data.bin"), &data).expect("write on alpha");
    wait_file(b, "data.bin", &data, Duration::from_secs(120));
    let path = path_to(b, a);
    assert_eq!(
        path.as_deref(),
        Some("direct"),
        "bravo's path to alpha\n--- alpha\n{}\n--- bravo\n{}",
        a.log_tail(),
        b.log_tail()
    );
    assert_eq!(path_to(a, b).as_deref(), Some("direct"));
    // Bravo reached alpha at the mapped address.
    let b_status = b.status_json();
    let to_alpha = status_entry(&b_status, &a.status_json().device_id).unwrap();
    assert_eq!(to_alpha.addr, Some(mapping.external_addr), "{to_alpha:?}");

    // `Mount::unmount` knows only daemons it started itself; this one runs in the namespace.
    let mnt = a.mnt.to_str().unwrap().to_string();
    let out = a.run(&["unmount", &mnt], Duration::from_secs(60));
    assert!(out.status.success(), "unmount\n{}", describe(&out));
    let upnpd = &s.upnpd;
    wait_for("the mapping deleted", Duration::from_secs(10), || {
        let (r, l) = (upnpd.redirects(), upnpd.leases());
        if r.is_empty() && l.is_empty() {
            Ok(())
        } else {
            Err(format!("{r:?} {l:?}\n{}", upnpd.log_tail(20)))
        }
    });
    assert!(
        s.a.log_tail().contains("deleting the port mapping"),
        "{}",
        s.a.log_tail()
    );
}

/// Figures for `scripts/bench/nat.sh` (ignored: a benchmark, not a test), measured as
/// `nat_sync`'s `nat_bench` does: for the symmetric pair connected through alpha's port
/// mapping, the connection time from starting bravo's daemon to a file written while it was
/// down being readable on it, and the throughput of a 64 MiB file.
#[test]
#[ignore]
fn portmap_bench() {
    let Some(mut s) = pair_through_mapping("pmb") else {
        return;
    };
    std::fs::write(s.a.path("warm-up"), b"w").expect("write on alpha");
    wait_file(&s.b, "warm-up", b"w", Duration::from_secs(120));
    let b_mnt = s.b.mnt.to_str().expect("utf-8").to_owned();
    let out = s.b.run(&["unmount", &b_mnt], Duration::from_secs(60));
    assert!(out.status.success(), "{}", describe(&out));
    std::fs::write(s.a.path("while-down.txt"), b"hello").expect("write on alpha");
    let start = Instant::now();
    mount_in(&s.dev_b, &mut s.b, "bravo", &s.coturn);
    wait_file(&s.b, "while-down.txt", b"hello", Duration::from_secs(120));
    let connect = start.elapsed().as_secs_f64();
    let path = path_to(&s.b, &s.a).unwrap_or_else(|| "none".into());
    let data = Gen::new(99).bytes(64 << 20);
    let start = Instant::now();
    std::fs::write(s.a.path("big.bin"), &data).expect("write big");
    wait_file(&s.b, "big.bin", &data, Duration::from_secs(600));
    let rate = 64.0 / start.elapsed().as_secs_f64();
    // The columns of `nat_sync`'s `nat_bench`, which prints the header.
    println!(
        "{:<22} {:>10} {:>14.2} {:>12.1}",
        "Symmetric(PCP)-Symmetric", path, connect, rate
    );
}
/// `fybrk nat-check` behind a router running miniupnpd names the protocol that answered (PCP
/// first) and the mapped address, and each protocol alone works against miniupnpd (forced
/// with `FYBRK_PORT_MAPPING_PROTOCOLS`). The test mapping is deleted again.
#[test]
fn nat_check_names_the_protocol_that_answered() {
    if !ready() {
        return;
    }
    let lab = Lab::new("pmnc");
    let coturn = lab.start_coturn("u", "p");
    let dev = lab.add_device(RouterKind::Home);
    let upnpd = lab.run_miniupnpd(&dev);
    for (force, want) in [
        (None, "PCP"),
        (Some("nat-pmp"), "NAT-PMP"),
        (Some("upnp"), "UPnP"),
    ] {
        let mut cmd = dev.cmd(fybrk_bin());
        cmd.args(["nat-check", "--json", "--stun", &coturn.addr.to_string()]);
        if let Some(p) = force {
            cmd.env("FYBRK_PORT_MAPPING_PROTOCOLS", p);
        }
        let out = run_timeout(&mut cmd, Duration::from_secs(30));
        assert!(out.status.success(), "nat-check failed\n{}", describe(&out));
        let v: fybrk_control::NatCheckReport =
            serde_json::from_slice(&out.stdout).expect("nat-check --json");
        let m = v
            .port_mapping
            .clone()
            .unwrap_or_else(|| panic!("no mapping: {v:?}\n{}", upnpd.log_tail(20)));
        assert_eq!(m.protocol, want, "{v:?}");
        assert_eq!(m.external_addr.ip(), IpAddr::V4(upnpd.external_ip));
        assert_eq!(m.external_addr.port(), v.local_addr.port());
        assert_eq!(
            v.gateway,
            Some(IpAddr::V4(std::net::Ipv4Addr::new(
                192,
                168,
                dev.index() as u8,
                1
            )))
        );
        assert!(
            upnpd.redirects().is_empty(),
            "{want}: not deleted {:?}",
            upnpd.redirects()
        );
    }
    // Switched off: not asked.
    let mut cmd = dev.cmd(fybrk_bin());
    cmd.args(["nat-check", "--json", "--no-port-mapping"])
        .args(["--stun", &coturn.addr.to_string()]);
    let out = run_timeout(&mut cmd, Duration::from_secs(30));
    let v: fybrk_control::NatCheckReport = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((v.gateway, v.port_mapping), (None, None));
}

/// [`lab::daemon::mount_with_servers`] on the socket this file tests (0.0.0.0:0).
fn mount_in(dev: &Device, m: &mut Mount, name: &str, coturn: &lab::Coturn) {
    lab::daemon::mount_with_servers(dev, m, name, "0.0.0.0:0", coturn);
}
