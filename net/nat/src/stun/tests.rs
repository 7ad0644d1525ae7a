use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::check::classify_mapping;
use super::*;
use crate::mux::MuxSocket;
use crate::testing::Coturn;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn servers(list: &[&str]) -> Vec<StunServer> {
    list.iter().map(|s| s.parse().expect("server")).collect()
}

#[test]
fn servers_come_from_the_command_line_then_the_environment_then_the_defaults() {
    let defaults = stun_servers_from(&[], None).expect("defaults");
    assert_eq!(defaults.len(), 4);
    assert_eq!(defaults[0].to_string(), "stun.l.google.com:19302");
    assert_eq!(defaults[3].to_string(), "stun3.l.google.com:19302");

    let env = stun_servers_from(&[], Some("a.example:1, [2001:db8::1]:2,,b.example")).expect("env");
    assert_eq!(
        env.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ["a.example:1", "[2001:db8::1]:2", "b.example:3478"]
    );
    assert_eq!(env[1].host, "2001:db8::1");
    assert_eq!(
        stun_servers_from(&[], Some("  ")).expect("blank env").len(),
        4
    );

    let cli = stun_servers_from(
        &["127.0.0.1:5000".into(), "c.example:7,d.example:8".into()],
        Some("ignored:1"),
    )
    .expect("cli");
    assert_eq!(
        cli.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ["127.0.0.1:5000", "c.example:7", "d.example:8"]
    );
}

#[test]
fn bad_server_settings_say_what_is_wrong() {
    for (value, says) in [
        ("host:0", "port \"0\" is not a number from 1 to 65535"),
        ("host:http", "port \"http\""),
        ("2001:db8::1", "must be in brackets"),
        ("[2001:db8::1", "without its ']'"),
        ("[not-v6]:1", "is not an IPv6 address"),
        (":3478", "the host is missing"),
        ("stun://x:1", "leave out stun://"),
        ("a/b:1", "is not a host name"),
    ] {
        let err = value.parse::<StunServer>().expect_err(value);
        let msg = err.to_string();
        assert!(msg.contains(says), "{value}: {msg}");
        assert!(msg.contains("expected HOST:PORT"), "{msg}");
    }
}

#[test]
fn mapping_verdict_needs_two_distinct_servers() {
    let s1: SocketAddr = "192.0.2.1:3478".parse().expect("addr");
    let s2: SocketAddr = "192.0.2.2:3478".parse().expect("addr");
    let m1: SocketAddr = "203.0.113.5:4000".parse().expect("addr");
    let m2: SocketAddr = "203.0.113.5:4001".parse().expect("addr");
    assert_eq!(classify_mapping(&[]), Mapping::Unknown);
    assert_eq!(classify_mapping(&[(s1, m1)]), Mapping::Unknown);
    assert_eq!(classify_mapping(&[(s1, m1), (s1, m1)]), Mapping::Unknown);
    assert_eq!(
        classify_mapping(&[(s1, m1), (s2, m1)]),
        Mapping::EndpointIndependent
    );
    assert_eq!(
        classify_mapping(&[(s1, m1), (s2, m2)]),
        Mapping::EndpointDependent
    );
}

#[test]
fn the_public_address_is_the_one_most_servers_saw() {
    let m1: SocketAddr = "203.0.113.5:4000".parse().expect("addr");
    let m2: SocketAddr = "203.0.113.5:4001".parse().expect("addr");
    let report = |seen: &[Option<SocketAddr>]| NatReport {
        udp_works: true,
        reflexive: seen
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("s{i}"), *a))
            .collect(),
        mapping: Mapping::Unknown,
        errors: Vec::new(),
        ipv6: None,
    };
    assert_eq!(
        report(&[None, Some(m2), Some(m1), Some(m2)]).public_addr(),
        Some(m2)
    );
    assert_eq!(report(&[Some(m1), Some(m2)]).public_addr(), Some(m1));
    assert_eq!(report(&[None]).public_addr(), None);
}

#[tokio::test]
async fn binding_against_coturn_returns_our_loopback_address() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let seen = binding(&mux, coturn.addr()).await.expect("binding");
    assert_eq!(seen, mux.local_addr().expect("addr"));
}

#[tokio::test]
async fn nat_check_against_two_coturns_finds_an_endpoint_independent_mapping() {
    let (Some(one), Some(two)) = (Coturn::start(), Coturn::start()) else {
        return;
    };
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let ours = mux.local_addr().expect("addr");
    let list = servers(&[&one.addr().to_string(), &two.addr().to_string()]);
    let report = nat_check(&mux, &list).await;
    assert!(report.udp_works, "{report:?}");
    assert_eq!(report.mapping, Mapping::EndpointIndependent, "{report:?}");
    assert_eq!(
        report.reflexive,
        [
            (one.addr().to_string(), Some(ours)),
            (two.addr().to_string(), Some(ours))
        ]
    );
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.public_addr(), Some(ours));
}

#[tokio::test]
async fn nat_check_reports_a_dead_server_and_still_uses_the_live_one() {
    let Some(live) = Coturn::start() else { return };
    let silent = UdpSocket::bind(loopback()).await.expect("bind");
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let list = servers(&[
        &silent.local_addr().expect("addr").to_string(),
        &live.addr().to_string(),
    ]);
    let started = Instant::now();
    let report = nat_check(&mux, &list).await;
    assert!(started.elapsed() < TRANSACTION_TIMEOUT + Duration::from_secs(1));
    assert!(report.udp_works);
    assert_eq!(report.mapping, Mapping::Unknown, "one answer is no verdict");
    assert_eq!(report.reflexive[0].1, None);
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].1.contains("no answer from STUN server"),
        "{report:?}"
    );
}

#[tokio::test]
async fn nat_monitor_repeats_the_check() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let monitor = NatMonitor::spawn(
        mux.clone(),
        servers(&[&coturn.addr().to_string()]),
        Duration::from_millis(200),
    );
    let mut updates = monitor.subscribe();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), updates.changed())
            .await
            .expect("a check in time")
            .expect("monitor running");
    }
    let latest = monitor.latest().expect("a report");
    assert_eq!(latest.public_addr(), Some(mux.local_addr().expect("addr")));
}

/// A fake STUN server on loopback: answers each request with `respond(request)`.
async fn fake_server(
    respond: impl Fn(&[u8], usize) -> Option<Vec<u8>> + Send + 'static,
) -> SocketAddr {
    let socket = UdpSocket::bind(loopback()).await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let mut count = 0;
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            count += 1;
            if let Some(reply) = respond(&buf[..n], count) {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    addr
}

/// A STUN header answering `request`, with `attrs` as the body.
fn reply_to(request: &[u8], class_type: [u8; 2], attrs: &[u8]) -> Vec<u8> {
    let mut reply = class_type.to_vec();
    reply.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    reply.extend_from_slice(&request[4..20]);
    reply.extend_from_slice(attrs);
    reply
}

#[tokio::test]
async fn a_corrupt_reply_is_rejected_with_a_clear_error() {
    // XOR-MAPPED-ADDRESS (0x0020) with 4 bytes of value: too short for any address.
    let server = fake_server(|req, _| {
        Some(reply_to(
            req,
            [0x01, 0x01],
            &[0x00, 0x20, 0x00, 0x04, 0, 1, 0, 0],
        ))
    })
    .await;
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let err = binding(&mux, server).await.expect_err("corrupt");
    assert!(matches!(err, StunError::Malformed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("malformed STUN reply from {server}")),
        "{msg}"
    );
    assert!(msg.contains("try another with --stun"), "{msg}");
}

#[tokio::test]
async fn a_short_reply_is_rejected_with_a_clear_error() {
    let server = fake_server(|_, _| Some(vec![0x01, 0x01, 0x00])).await;
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let started = Instant::now();
    let err = binding(&mux, server).await.expect_err("short");
    assert!(
        err.to_string()
            .contains("3 bytes, shorter than the 20-byte STUN header"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no need to time out"
    );
}

#[tokio::test]
async fn a_reply_without_our_address_or_with_an_error_code_says_so() {
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let empty = fake_server(|req, _| Some(reply_to(req, [0x01, 0x01], &[]))).await;
    let err = binding(&mux, empty).await.expect_err("no address");
    assert!(matches!(err, StunError::NoMappedAddress { .. }), "{err}");

    // ERROR-CODE 420 "Unknown": class 4, number 20.
    let mut attr = vec![0x00, 0x09, 0x00, 0x0B, 0, 0, 4, 20];
    attr.extend_from_slice(b"Unknown\0");
    attr.truncate(4 + 11);
    attr.push(0); // padding to 4 bytes
    let refusing = fake_server(move |req, _| Some(reply_to(req, [0x01, 0x11], &attr))).await;
    let err = binding(&mux, refusing).await.expect_err("error response");
    assert!(
        matches!(err, StunError::Rejected { code: 420, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_lost_request_is_retransmitted() {
    // Ignores the first copy; answers the second like a real server.
    let server = fake_server(|req, count| {
        (count >= 2).then(|| {
            let mut attr = vec![0x00, 0x20, 0x00, 0x08, 0x00, 0x01];
            // Port 4660 and 192.0.2.1, XORed with the magic cookie.
            attr.extend_from_slice(&(4660u16 ^ 0x2112).to_be_bytes());
            let ip = u32::from_be_bytes([192, 0, 2, 1]) ^ 0x2112_A442;
            attr.extend_from_slice(&ip.to_be_bytes());
            reply_to(req, [0x01, 0x01], &attr)
        })
    })
    .await;
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let started = Instant::now();
    let seen = binding(&mux, server)
        .await
        .expect("answered on the retransmission");
    assert_eq!(seen, "192.0.2.1:4660".parse::<SocketAddr>().expect("addr"));
    assert!(started.elapsed() >= INITIAL_RTO, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_cap() {
    let silent = std::net::UdpSocket::bind(loopback()).expect("bind");
    silent.set_nonblocking(true).expect("nonblocking");
    let addr = silent.local_addr().expect("addr");
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let started = Instant::now();
    let err = binding(&mux, addr).await.expect_err("silence");
    let took = started.elapsed();
    assert!(matches!(err, StunError::Timeout { .. }), "{err}");
    assert!(took >= TRANSACTION_TIMEOUT && took < TRANSACTION_TIMEOUT + Duration::from_millis(500));
    assert!(err.to_string().contains("UDP may be blocked"), "{err}");
    // Three copies were sent (0, 0.5 and 1.5 s).
    let mut buf = [0u8; 100];
    for _ in 0..3 {
        let (n, _) = silent.recv_from(&mut buf).expect("a copy of the request");
        assert_eq!(n, 20);
    }
    assert!(silent.recv_from(&mut buf).is_err(), "no fourth copy");
}
