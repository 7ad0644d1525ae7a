//! The NAT lab checks itself: every router kind maps and filters as `lab::RouterKind` says, loss
//! drops the share it is set to, coturn answers STUN and relays, two devices can (or cannot)
//! punch a hole as real NATs of those kinds would allow, and teardown leaves nothing behind.
//!
//! To run (as root; skipped loudly otherwise, and never skipped in CI):
//! `cargo test --release -p fybrk-tests --test nat_lab`.
//!
//! The probes are UDP sockets of this process, opened inside the lab's namespaces
//! (`lab::udp`): a device asks an `Echo` server in the public namespace which address it sees
//! (`whoami`), and public sockets send to that mapping to see what the router lets in.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "lab/mod.rs"]
mod lab;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use fybrk_tests::{describe, have_tool, pid_alive, run_timeout, wait_until};
use lab::udp::{is_timeout, whoami_within, SILENCE_WAIT};
use lab::{stun_binding, whoami, Device, Lab, RouterKind, TURN_IP};

/// The port device sockets bind (any would do; fixed so mappings that keep it are easy to read).
const DEVICE_PORT: u16 = 40000;
/// The port of the `Echo` servers.
const ECHO_PORT: u16 = 7000;

/// Sends a datagram from `from` to `to` and returns where it came from if it reached `sock`
/// within [`SILENCE_WAIT`] (only a "no" waits that long).
fn arrival(from: &UdpSocket, to: SocketAddr, sock: &UdpSocket) -> Option<SocketAddr> {
    let tag = format!("probe {}", rand::random::<u64>());
    from.send_to(tag.as_bytes(), to).expect("send_to");
    let end = Instant::now() + SILENCE_WAIT;
    let mut buf = [0u8; 2048];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).expect("set_read_timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, a)) if &buf[..n] == tag.as_bytes() => return Some(a),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return None,
            Err(e) => panic!("recv_from: {e}"),
        }
    }
}

/// Whether a datagram from the public socket `from` to `to` reaches `sock`, from `from`'s
/// own address (public sockets are not behind NAT).
fn arrives(from: &UdpSocket, to: SocketAddr, sock: &UdpSocket) -> bool {
    match arrival(from, to, sock) {
        Some(src) => {
            assert_eq!(
                src,
                from.local_addr().unwrap(),
                "source rewritten on the way in"
            );
            true
        }
        None => false,
    }
}

fn v4(dev: &Device) -> IpAddr {
    IpAddr::V4(dev.public_ip())
}

// ---------------------------------------------------------------------------------------------
// (a) Home and port-restricted: endpoint-independent mapping; filtering by address or by port
// ---------------------------------------------------------------------------------------------

#[test]
fn home_keeps_one_mapping_and_admits_any_port_of_an_address_it_wrote_to() {
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("home");
    let dev = lab.add_device(RouterKind::Home);
    let (s1, s2) = (lab.echo(0, ECHO_PORT), lab.echo(1, ECHO_PORT));
    let sock = dev.udp(DEVICE_PORT);

    let m1 = whoami(&sock, s1.addr).expect("S1 answers through a Home router");
    let m2 = whoami(&sock, s2.addr).expect("S2 answers through a Home router");
    assert_eq!(m1.ip(), v4(&dev), "S1 sees the router's WAN address");
    assert_eq!(
        m1, m2,
        "endpoint-independent mapping: both servers see the same address"
    );

    let third = lab.public_udp(lab.public_addr(2, ECHO_PORT));
    assert!(
        !arrives(&third, m1, &sock),
        "a datagram from an address the device never wrote to got in"
    );
    assert_eq!(
        arrival(&sock, third.local_addr().unwrap(), &third),
        Some(m1),
        "device -> third, from the same mapping"
    );
    assert!(
        arrives(&third, m1, &sock),
        "after the device wrote to it, the third address cannot answer"
    );
    let s1_other_port = lab.public_udp(lab.public_addr(0, ECHO_PORT + 1));
    assert!(
        arrives(&s1_other_port, m1, &sock),
        "Home filters by address only, but S1's address from another port was dropped"
    );
}

#[test]
fn port_restricted_keeps_one_mapping_and_admits_only_the_exact_address_and_port() {
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("prc");
    let dev = lab.add_device(RouterKind::PortRestricted);
    let (s1, s2) = (lab.echo(0, ECHO_PORT), lab.echo(1, ECHO_PORT));
    let sock = dev.udp(DEVICE_PORT);

    let m1 = whoami(&sock, s1.addr).expect("S1 answers through a port-restricted router");
    let m2 = whoami(&sock, s2.addr).expect("S2 answers through a port-restricted router");
    assert_eq!(m1.ip(), v4(&dev));
    assert_eq!(
        m1, m2,
        "endpoint-independent mapping: both servers see the same address"
    );

    let s1_other_port = lab.public_udp(lab.public_addr(0, ECHO_PORT + 1));
    assert!(
        !arrives(&s1_other_port, m1, &sock),
        "a reply from S1's address but another port got in"
    );
    let third = lab.public_udp(lab.public_addr(2, ECHO_PORT));
    assert!(
        !arrives(&third, m1, &sock),
        "an unsolicited datagram got in"
    );
    assert_eq!(
        arrival(&sock, third.local_addr().unwrap(), &third),
        Some(m1),
        "device -> third, from the same mapping"
    );
    assert!(
        arrives(&third, m1, &sock),
        "after the device wrote to it, the third address cannot answer"
    );
}

// ---------------------------------------------------------------------------------------------
// (b) Symmetric: a mapping per destination
// ---------------------------------------------------------------------------------------------

#[test]
fn symmetric_maps_each_destination_to_its_own_port() {
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("sym");
    let dev = lab.add_device(RouterKind::Symmetric);
    let (s1, s2) = (lab.echo(0, ECHO_PORT), lab.echo(1, ECHO_PORT));
    let sock = dev.udp(DEVICE_PORT);

    let m1 = whoami(&sock, s1.addr).expect("S1 answers through a symmetric router");
    let m2 = whoami(&sock, s2.addr).expect("S2 answers through a symmetric router");
    assert_eq!(m1.ip(), v4(&dev));
    assert_eq!(m2.ip(), v4(&dev));
    assert_ne!(
        m1, m2,
        "endpoint-dependent mapping: each server sees its own port"
    );
    assert_eq!(
        whoami(&sock, s1.addr),
        Some(m1),
        "the mapping towards one destination lasts"
    );
    let s2_sock = lab.public_udp(lab.public_addr(1, ECHO_PORT + 1));
    assert!(
        !arrives(&s2_sock, m1, &sock),
        "another server got in through the mapping made for S1"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) Double NAT: home router behind a CGNAT
// ---------------------------------------------------------------------------------------------

#[test]
fn double_nat_reaches_the_internet_with_a_stable_mapping() {
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("dbl");
    let dev = lab.add_device(RouterKind::DoubleNat);
    let (s1, s2) = (lab.echo(0, ECHO_PORT), lab.echo(1, ECHO_PORT));
    let sock = dev.udp(DEVICE_PORT);

    let m1 = whoami(&sock, s1.addr).expect("S1 answers through home router + CGNAT");
    assert_eq!(m1.ip(), v4(&dev), "the internet sees the CGNAT's address");
    let m2 = whoami(&sock, s2.addr).expect("S2 answers through home router + CGNAT");
    assert_eq!(m1, m2, "endpoint-independent through both NATs");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(whoami(&sock, s1.addr), Some(m1), "the mapping is stable");
    let third = lab.public_udp(lab.public_addr(2, ECHO_PORT));
    assert!(
        !arrives(&third, m1, &sock),
        "an unsolicited datagram got in"
    );

    // ip_forward is on in the two routers only.
    let forwarding = |ns: &str| {
        lab::udp::in_netns(ns, || {
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read ip_forward")
        })
        .trim()
        .to_string()
    };
    assert_eq!(forwarding(dev.router_ns().unwrap()), "1", "home router");
    assert_eq!(forwarding(dev.cgnat_ns().unwrap()), "1", "CGNAT");
    assert_eq!(forwarding(dev.ns()), "0", "device");
    assert_eq!(forwarding(&lab.public_ns()), "0", "public namespace");
}

// ---------------------------------------------------------------------------------------------
// (d) UDP blocked except to the TURN server
// ---------------------------------------------------------------------------------------------

#[test]
fn udp_blocked_except_turn_passes_only_turn() {
    if !lab::ready() || !have_tool("turnserver") || !have_tool("turnutils_uclient") {
        return;
    }
    let lab = Lab::new("blk");
    let turn = lab.start_coturn("lab", "secret");
    let dev = lab.add_device(RouterKind::UdpBlockedExceptTurn(turn.addr));
    let sock = dev.udp(DEVICE_PORT);

    let mapped = stun_binding(&sock, turn.addr, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("coturn does not answer STUN\n{}", turn.log_tail(30)));
    assert_eq!(mapped.ip(), v4(&dev));
    let elsewhere = lab.echo(0, ECHO_PORT);
    assert_eq!(
        whoami_within(&sock, elsewhere.addr, SILENCE_WAIT),
        None,
        "UDP to another server passed"
    );
    let turn_ip_other_port = lab.echo_at(SocketAddr::new(IpAddr::V4(TURN_IP), ECHO_PORT));
    assert_eq!(
        whoami_within(&sock, turn_ip_other_port.addr, SILENCE_WAIT),
        None,
        "UDP to the TURN server's address but another port passed"
    );

    // A real TURN session: allocations on coturn with long-term credentials, data relayed
    // between them (-y), all of it on the device's UDP flows to coturn's port.
    let out = run_timeout(
        dev.cmd("turnutils_uclient")
            // -c: no RTCP sessions; -n 5: its run time grows with the count (~0.5 s each).
            .args(["-y", "-c", "-n", "5", "-u", "lab", "-w", "secret"])
            .args(["-p", &turn.addr.port().to_string(), &TURN_IP.to_string()]),
        Duration::from_secs(20),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && relayed_all(&text),
        "TURN through the blocking router failed\n{}\n--- coturn log\n{}",
        describe(&out),
        turn.log_tail(30)
    );
}

/// Whether turnutils_uclient's report says messages went out and all came back:
/// "start_mclient: tot_send_msgs=N, tot_recv_msgs=N" (N > 0) and "Total lost packets 0 ".
fn relayed_all(report: &str) -> bool {
    let counts = report.lines().rev().find_map(|l| {
        let rest = l.split("start_mclient: tot_send_msgs=").nth(1)?;
        let (sent, recv) = rest.split_once(", tot_recv_msgs=")?;
        Some((
            sent.trim().parse::<u64>().ok()?,
            recv.trim().parse::<u64>().ok()?,
        ))
    });
    matches!(counts, Some((sent, recv)) if sent > 0 && recv == sent)
        && report.lines().any(|l| l.contains("Total lost packets 0 "))
}

// ---------------------------------------------------------------------------------------------
// (e) Loss
// ---------------------------------------------------------------------------------------------

/// Sends `n` datagrams from `sock` to `sink` and returns how many arrived.
fn delivered(sock: &UdpSocket, sink: &lab::Echo, n: u64) -> u64 {
    let before = sink.received();
    for i in 0..n {
        sock.send_to(format!("data {i}").as_bytes(), sink.addr)
            .expect("send_to");
        // Paced, so the sink's socket buffer (about 270 small datagrams) never overflows and
        // only the router drops.
        std::thread::sleep(Duration::from_micros(200));
    }
    // Let the last ones land: stop when the count has not moved for 200 ms.
    let mut last = sink.received();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = sink.received();
        if now == last {
            return now - before;
        }
        last = now;
    }
}

#[test]
fn loss_drops_about_the_share_it_is_set_to() {
    if !lab::ready() {
        return;
    }
    let lab = Lab::new("loss");
    let dev = lab.add_device(RouterKind::Home);
    let sink = lab.echo(0, ECHO_PORT);
    let sock = dev.udp(DEVICE_PORT);

    dev.set_loss(20);
    let got = delivered(&sock, &sink, 1000);
    let lost = 1000 - got;
    // Binomial(1000, 0.2): mean 200, sd 12.6; the bounds are 8 sd away.
    assert!(
        (100..=300).contains(&lost),
        "20 % loss lost {lost} of 1000 datagrams"
    );
    eprintln!("loss 20 %: {lost} of 1000 lost");

    dev.set_loss(0);
    assert_eq!(delivered(&sock, &sink, 200), 200, "loss 0 still drops");
}

// ---------------------------------------------------------------------------------------------
// (f) coturn answers STUN with the router's public address
// ---------------------------------------------------------------------------------------------

/// Runs `turnutils_stunclient` in `dev`'s namespace against coturn; the reflexive address.
fn stunclient(dev: &Device, turn: &lab::Coturn) -> SocketAddr {
    let out = run_timeout(
        dev.cmd("turnutils_stunclient").args([
            "-p",
            &turn.addr.port().to_string(),
            &turn.addr.ip().to_string(),
        ]),
        Duration::from_secs(20),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // "0: : IPv4. UDP reflexive addr: 203.0.113.2:40512"
    text.lines()
        .find_map(|l| l.split("reflexive addr: ").nth(1))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no reflexive address from turnutils_stunclient in {}\n{}\n--- coturn log\n{}",
                dev.ns(),
                describe(&out),
                turn.log_tail(30)
            )
        })
}

#[test]
fn coturn_answers_stun_with_the_public_address_of_each_router() {
    if !lab::ready() || !have_tool("turnserver") || !have_tool("turnutils_stunclient") {
        return;
    }
    let lab = Lab::new("stun");
    let turn = lab.start_coturn("lab", "secret");
    for kind in [RouterKind::Home, RouterKind::DoubleNat, RouterKind::Open] {
        let dev = lab.add_device(kind);
        let seen = stunclient(&dev, &turn);
        assert_eq!(seen.ip(), v4(&dev), "{kind:?}: coturn saw {seen}");
        // The same through this harness's own STUN client, from the device port.
        let sock = dev.udp(DEVICE_PORT);
        let mapped = stun_binding(&sock, turn.addr, Duration::from_secs(2)).expect("STUN answer");
        assert_eq!(mapped.ip(), v4(&dev), "{kind:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// (g) Hole punching
// ---------------------------------------------------------------------------------------------

/// How long each side keeps punching. A possible punch succeeds in the first round trip (well
/// under a millisecond here); the rest is slack for a loaded machine.
const PUNCH_TIME: Duration = Duration::from_secs(2);
/// The interval between punch datagrams.
const PUNCH_EVERY: Duration = Duration::from_millis(20);

/// One side of a simultaneous punch towards `peer` (its mapping as a public server saw it): send
/// to it every [`PUNCH_EVERY`] and answer any datagram from the peer's address where it came from
/// (a peer-reflexive candidate, as ICE does). Returns whether the peer was heard.
fn punch_side(sock: &UdpSocket, peer: SocketAddr, start: &Barrier) -> bool {
    start.wait();
    let end = Instant::now() + PUNCH_TIME;
    let mut targets = vec![peer];
    let (mut heard, mut peer_heard) = (false, false);
    let mut next = Instant::now();
    let mut buf = [0u8; 2048];
    while Instant::now() < end && !(heard && peer_heard) {
        if Instant::now() >= next {
            for t in &targets {
                let _ = sock.send_to(format!("punch heard={heard}").as_bytes(), t);
            }
            next += PUNCH_EVERY;
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).expect("set_read_timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from.ip() == peer.ip() => {
                heard = true;
                peer_heard |= buf[..n].ends_with(b"heard=true");
                if !targets.contains(&from) {
                    targets.push(from);
                }
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("recv_from: {e}"),
        }
    }
    // Tell the peer we heard it, so it can stop too.
    if heard {
        for t in &targets {
            let _ = sock.send_to(b"punch heard=true", t);
        }
    }
    heard
}

/// Two devices behind `a` and `b` learn their mappings from a public server, swap them (the
/// rendezvous server's job) and punch at the same moment. Whether each heard the other.
fn punch(tag: &str, a: RouterKind, b: RouterKind) -> (bool, bool) {
    let lab = Lab::new(tag);
    let (da, db) = (lab.add_device(a), lab.add_device(b));
    let server = lab.echo(0, ECHO_PORT);
    let (sa, sb) = (da.udp(DEVICE_PORT), db.udp(DEVICE_PORT));
    let ma = whoami(&sa, server.addr).expect("device A reaches the server");
    let mb = whoami(&sb, server.addr).expect("device B reaches the server");
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        let ha = s.spawn(|| punch_side(&sa, mb, &start));
        let hb = s.spawn(|| punch_side(&sb, ma, &start));
        (ha.join().expect("side A"), hb.join().expect("side B"))
    })
}

#[test]
fn hole_punch_home_to_home_works() {
    if lab::ready() {
        assert_eq!(
            punch("hh", RouterKind::Home, RouterKind::Home),
            (true, true)
        );
    }
}

#[test]
fn hole_punch_symmetric_to_symmetric_fails() {
    if lab::ready() {
        let got = punch("ss", RouterKind::Symmetric, RouterKind::Symmetric);
        assert_eq!(got, (false, false), "symmetric NATs let a punch through");
    }
}

#[test]
fn hole_punch_port_restricted_pair_works() {
    if lab::ready() {
        let got = punch("pp", RouterKind::PortRestricted, RouterKind::PortRestricted);
        assert_eq!(got, (true, true));
    }
}

/// Address-only filtering lets the symmetric side in from its new port; the answer goes back
/// to that port.
#[test]
fn hole_punch_home_to_symmetric_works() {
    if lab::ready() {
        assert_eq!(
            punch("hs", RouterKind::Home, RouterKind::Symmetric),
            (true, true)
        );
    }
}

#[test]
fn hole_punch_port_restricted_to_symmetric_fails() {
    if lab::ready() {
        let got = punch("ps", RouterKind::PortRestricted, RouterKind::Symmetric);
        assert_eq!(got, (false, false));
    }
}

#[test]
fn hole_punch_double_nat_to_home_works() {
    if lab::ready() {
        assert_eq!(
            punch("dh", RouterKind::DoubleNat, RouterKind::Home),
            (true, true)
        );
    }
}

#[test]
fn hole_punch_open_to_symmetric_works() {
    if lab::ready() {
        assert_eq!(
            punch("os", RouterKind::Open, RouterKind::Symmetric),
            (true, true)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Teardown
// ---------------------------------------------------------------------------------------------

#[test]
fn a_lab_dropped_by_a_panic_leaves_no_namespace_or_process() {
    if !lab::ready() {
        return;
    }
    let seen = std::sync::Mutex::new((String::new(), 0i32));
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new("drop");
        let dev = lab.add_device(RouterKind::DoubleNat);
        // A process the test started itself and forgot: the lab must still kill it (and the
        // test reaps it with waitpid below).
        #[allow(clippy::zombie_processes)]
        let child = dev.cmd("sleep").arg("600").spawn().expect("spawn sleep");
        *seen.lock().unwrap() = (lab.id().to_string(), child.id() as i32);
        wait_until(Duration::from_secs(5), || {
            !lab::pids_in(dev.ns()).is_empty()
        });
        panic!("deliberate panic: the lab must clean up while unwinding");
    });
    assert!(result.is_err());
    let (id, pid) = seen.into_inner().unwrap();
    for role in ["p", "r1", "c1", "d1"] {
        let ns = format!("/run/netns/{id}-{role}");
        assert!(!Path::new(&ns).exists(), "{ns} survived the lab");
    }
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(pid)),
        "the process in the device namespace survived the lab"
    );
    assert!(!lab::owner_file(&id).exists(), "owner record survived");
    // Reap it (it was our child).
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

#[test]
fn a_stale_lab_from_a_killed_run_is_removed() {
    if !lab::ready() {
        return;
    }
    // What a killed test process leaves: a namespace with a process in it and an owner record
    // naming a process that is gone. The record names this process until the namespace is
    // complete, so a concurrent Lab::new does not take it half-built.
    let id = format!("fylst{:03x}", rand::random::<u16>() & 0xfff);
    std::fs::create_dir_all(lab::owner_file(&id).parent().unwrap()).unwrap();
    let me = std::process::id();
    let my_start = lab::start_time(me as i32).expect("own start time");
    std::fs::write(lab::owner_file(&id), format!("{me} {my_start}\n")).unwrap();
    let ns = format!("{id}-p");
    lab::create_netns(&ns);
    let mut sleeper = lab::ns_command(&ns, "sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    assert!(wait_until(Duration::from_secs(5), || !lab::pids_in(&ns).is_empty()));
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    std::fs::write(lab::owner_file(&id), format!("{} 1\n", dead.id())).unwrap();

    lab::clean_stale();
    assert!(
        !Path::new("/run/netns").join(&ns).exists(),
        "stale namespace {ns} remains"
    );
    assert!(!lab::owner_file(&id).exists(), "stale owner record remains");
    let killed = wait_until(Duration::from_secs(5), || {
        matches!(sleeper.try_wait(), Ok(Some(_)))
    });
    if !killed {
        let _ = sleeper.kill();
    }
    assert!(killed, "the process in the stale namespace survived");
}

// ---------------------------------------------------------------------------------------------
// By hand
// ---------------------------------------------------------------------------------------------

/// Not a check: `scripts/lab/shell.sh KIND` runs this to build a lab with one device of KIND
/// (and coturn, and two Echo servers), writes its names and addresses as shell variables to
/// `FYBRK_LAB_INFO`, and keeps it until that file is removed or the script's process
/// (`FYBRK_LAB_SHELL_PID`) is gone. Then dropping the lab tears it down.
#[test]
#[ignore = "run by scripts/lab/shell.sh"]
fn manual_lab_shell() {
    let (Ok(kind), Some(info)) = (
        std::env::var("FYBRK_LAB_KIND"),
        std::env::var_os("FYBRK_LAB_INFO").map(std::path::PathBuf::from),
    ) else {
        eprintln!("run scripts/lab/shell.sh KIND instead");
        return;
    };
    let shell_pid: i32 = std::env::var("FYBRK_LAB_SHELL_PID")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("FYBRK_LAB_SHELL_PID");
    assert!(lab::ready(), "the lab needs root");
    let turn_addr = SocketAddr::new(IpAddr::V4(TURN_IP), lab::coturn::TURN_PORT);
    let kind = match kind.as_str() {
        "home" => RouterKind::Home,
        "port-restricted" => RouterKind::PortRestricted,
        "symmetric" => RouterKind::Symmetric,
        "double-nat" => RouterKind::DoubleNat,
        "udp-blocked" => RouterKind::UdpBlockedExceptTurn(turn_addr),
        "open" => RouterKind::Open,
        other => panic!("unknown router kind {other:?}"),
    };
    let lab = Lab::new("sh");
    let turn = have_tool("turnserver").then(|| lab.start_coturn("lab", "secret"));
    let echoes = [lab.echo(0, ECHO_PORT), lab.echo(1, ECHO_PORT)];
    let dev = lab.add_device(kind);
    let vars = [
        ("ROUTER_KIND", kind_name(kind)),
        ("LAB_ID", lab.id().to_string()),
        ("DEV_NS", dev.ns().to_string()),
        ("ROUTER_NS", dev.router_ns().unwrap_or("").to_string()),
        ("CGNAT_NS", dev.cgnat_ns().unwrap_or("").to_string()),
        ("PUBLIC_NS", lab.public_ns()),
        ("LAN_IP", dev.lan_ip().to_string()),
        ("PUBLIC_IP", dev.public_ip().to_string()),
        (
            "TURN",
            turn.as_ref()
                .map(|t| t.addr.to_string())
                .unwrap_or_default(),
        ),
        (
            "TURN_LOG",
            turn.as_ref()
                .map(|t| t.log.display().to_string())
                .unwrap_or_default(),
        ),
        ("ECHO1", echoes[0].addr.to_string()),
        ("ECHO2", echoes[1].addr.to_string()),
        ("LAB_DIR", lab.dir().display().to_string()),
    ];
    let text: String = vars.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    // Whole or not at all: the script sources it as soon as it exists.
    let tmp = info.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write lab info");
    std::fs::rename(&tmp, &info).expect("publish lab info");
    while info.exists() && pid_alive(shell_pid) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(&info);
}

fn kind_name(kind: RouterKind) -> String {
    match kind {
        RouterKind::UdpBlockedExceptTurn(a) => format!("UdpBlockedExceptTurn({a})"),
        k => format!("{k:?}"),
    }
}
