//! Port mapping: the wire formats under arbitrary bytes and round trips, the text handling of
//! UPnP, and the lifecycle on a fake clock.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::lifecycle::{Action, Event, PortMapper, DATAGRAM_WINDOW, RETRY_FIRST, UPNP_WINDOW};
use super::{gateway, natpmp, pcp, upnp, Answer, Protocol};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = natpmp::decode(&bytes);
        let _ = pcp::decode_map(&bytes);
        let _ = upnp::parse_search_answer(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let base = SocketAddr::from(([192, 168, 1, 1], 80));
        let _ = upnp::parse_description(&text, base);
        let _ = upnp::parse_http_answer(&bytes);
        let _ = upnp::soap_value(&text, "NewExternalIPAddress");
        let _ = upnp::soap_error(&text);
        let _ = upnp::parse_http_url(&text);
        let _ = gateway::parse_default_gateway(&text);
    }

    #[test]
    fn pcp_answers_round_trip(
        result: u8, lifetime_secs: u32, epoch: u32, nonce: [u8; 12],
        internal_port: u16, external_port: u16, ip: Option<[u8; 4]>,
    ) {
        let a = pcp::MapAnswer {
            result, lifetime_secs, epoch, nonce, internal_port, external_port,
            external_ip: ip.map(Ipv4Addr::from),
        };
        prop_assert_eq!(pcp::decode_map(&pcp::encode_answer(&a)), Ok(a));
    }

    #[test]
    fn natpmp_answers_round_trip(
        result: u16, ip: [u8; 4], internal_port: u16, external_port: u16, lifetime_secs: u32,
    ) {
        for a in [
            natpmp::Answer::Address { result, ip: Ipv4Addr::from(ip) },
            natpmp::Answer::Map { result, internal_port, external_port, lifetime_secs },
        ] {
            prop_assert_eq!(natpmp::decode(&natpmp::encode_answer(&a)), Ok(a));
        }
    }

    #[test]
    fn pcp_requests_are_not_answers(lifetime_secs: u32, ip: [u8; 4], nonce: [u8; 12], i: u16, e: u16) {
        let req = pcp::encode_map(&pcp::MapRequest {
            lifetime_secs, client: Ipv4Addr::from(ip), nonce, internal_port: i, external_port: e,
        });
        prop_assert!(pcp::decode_map(&req).is_err());
    }
}

#[test]
fn natpmp_requests_are_laid_out_as_rfc_6886_says() {
    assert_eq!(natpmp::encode_address_request(), [0, 0]);
    assert_eq!(
        natpmp::encode_map_request(22100, 22100, 7200),
        [0, 1, 0, 0, 0x56, 0x54, 0x56, 0x54, 0, 0, 0x1c, 0x20]
    );
    // What miniupnpd answered in the lab.
    let answer = [
        0x00, 0x81, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x56, 0x54, 0x56, 0x54, 0x00, 0x00, 0x00,
        0x78,
    ];
    assert_eq!(
        natpmp::decode(&answer),
        Ok(natpmp::Answer::Map {
            result: 0,
            internal_port: 22100,
            external_port: 22100,
            lifetime_secs: 120
        })
    );
}

#[test]
fn pcp_request_names_the_client_as_ipv4_mapped() {
    let req = pcp::encode_map(&pcp::MapRequest {
        lifetime_secs: 7200,
        client: Ipv4Addr::new(192, 168, 1, 2),
        nonce: [7; 12],
        internal_port: 22100,
        external_port: 22100,
    });
    assert_eq!(req.len(), 60);
    assert_eq!(&req[..2], &[2, 1]);
    assert_eq!(
        &req[8..24],
        &Ipv4Addr::new(192, 168, 1, 2).to_ipv6_mapped().octets()
    );
    assert_eq!(req[24 + 12], 17);
}

#[test]
fn the_default_gateway_comes_from_the_default_route() {
    let table =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
    assert_eq!(
        gateway::parse_default_gateway(table),
        Some(Ipv4Addr::new(192, 168, 1, 1))
    );
    let no_default = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                      eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
    assert_eq!(gateway::parse_default_gateway(no_default), None);
}

#[test]
fn upnp_finds_the_control_url_in_a_description() {
    let answer = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
                   ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
                   Location: http://192.168.1.1:45707/rootDesc.xml\r\n\r\n";
    let (addr, path) = upnp::parse_search_answer(answer).unwrap();
    assert_eq!(addr, SocketAddr::from(([192, 168, 1, 1], 45707)));
    assert_eq!(path, "/rootDesc.xml");
    let xml = "<root><device><serviceList><service>\
               <serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>\
               <controlURL>/ctl/L3F</controlURL></service>\
               <service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>\
               <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>\
               <controlURL>/ctl/IPConn</controlURL></service></serviceList></device></root>";
    let c = upnp::parse_description(xml, addr).unwrap();
    assert_eq!(c.path, "/ctl/IPConn");
    assert_eq!(c.service, "urn:schemas-upnp-org:service:WANIPConnection:2");
    assert_eq!(c.addr, addr);
    let body = "<s:Envelope><s:Body><u:GetExternalIPAddressResponse xmlns:u=\"x\">\
                <NewExternalIPAddress>11.0.0.2</NewExternalIPAddress>\
                </u:GetExternalIPAddressResponse></s:Body></s:Envelope>";
    assert_eq!(
        upnp::soap_value(body, "NewExternalIPAddress"),
        Some("11.0.0.2")
    );
    let fault =
        "<s:Fault><detail><UPnPError><errorCode>718</errorCode></UPnPError></detail></s:Fault>";
    assert_eq!(upnp::soap_error(fault), Some(718));
}

fn granted(port: u16, secs: u64) -> Answer {
    Answer::Granted {
        external: SocketAddrV4::new(Ipv4Addr::new(11, 0, 0, 2), port),
        lifetime: Duration::from_secs(secs),
    }
}

fn drain(m: &mut PortMapper) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

/// Runs the clock to the next timeout.
fn tick(m: &mut PortMapper) -> Instant {
    let t = m.poll_timeout().unwrap();
    m.handle_timeout(t);
    t
}

#[test]
fn protocols_are_tried_in_order_and_the_first_answer_wins() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(&Protocol::ALL, t0);
    let req = |protocol| Action::Request { protocol };
    assert_eq!(drain(&mut m), [req(Protocol::Pcp)]);
    // Retransmissions at 250 ms and 750 ms, then NAT-PMP at 1.75 s.
    assert_eq!(tick(&mut m) - t0, Duration::from_millis(250));
    assert_eq!(tick(&mut m) - t0, Duration::from_millis(750));
    assert_eq!(drain(&mut m), [req(Protocol::Pcp), req(Protocol::Pcp)]);
    let t = tick(&mut m);
    assert_eq!(t - t0, DATAGRAM_WINDOW);
    assert_eq!(drain(&mut m), [req(Protocol::NatPmp)]);
    // NAT-PMP refuses: UPnP at once.
    m.handle_answer(Protocol::NatPmp, Answer::Refused, t);
    assert_eq!(drain(&mut m), [req(Protocol::Upnp)]);
    // A late PCP answer is ignored.
    m.handle_answer(Protocol::Pcp, granted(1, 7200), t);
    assert_eq!(m.mapping(), None);
    m.handle_answer(Protocol::Upnp, granted(22100, 7200), t);
    let mapped = m.mapping().unwrap();
    assert_eq!(mapped.protocol, Protocol::Upnp);
    assert_eq!(m.poll_event(), Some(Event::Mapped(mapped)));
}

#[test]
fn a_mapping_is_renewed_at_half_its_lifetime_and_deleted_at_stop() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(&Protocol::ALL, t0);
    drain(&mut m);
    m.handle_answer(Protocol::Pcp, granted(22100, 120), t0);
    assert!(matches!(m.poll_event(), Some(Event::Mapped(_))));
    let t = tick(&mut m);
    assert_eq!(t - t0, Duration::from_secs(60));
    assert_eq!(
        drain(&mut m),
        [Action::Request {
            protocol: Protocol::Pcp
        }]
    );
    // The same mapping again: no new event.
    m.handle_answer(Protocol::Pcp, granted(22100, 120), t);
    assert_eq!(m.poll_event(), None);
    assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(60)));
    // Another public address: an event.
    m.handle_answer(Protocol::Pcp, granted(30000, 120), t);
    assert!(matches!(m.poll_event(), Some(Event::Mapped(x)) if x.external.port() == 30000));
    let held = m.mapping().unwrap();
    m.stop();
    assert_eq!(drain(&mut m), [Action::Delete { mapping: held }]);
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn unanswered_renewals_retry_then_the_mapping_is_lost() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(&[Protocol::NatPmp], t0);
    drain(&mut m);
    m.handle_answer(Protocol::NatPmp, granted(22100, 60), t0);
    m.poll_event();
    let mut now = t0;
    let mut lost_at = None;
    for _ in 0..100 {
        now = tick(&mut m);
        drain(&mut m);
        if let Some(e) = m.poll_event() {
            assert_eq!(e, Event::Lost);
            lost_at = Some(now);
            break;
        }
    }
    let lost_at = lost_at.expect("lost");
    // Lost before it expired, never after.
    assert!(
        lost_at <= t0 + Duration::from_secs(60),
        "{:?}",
        lost_at - t0
    );
    assert!(lost_at - t0 >= Duration::from_secs(45));
    // A new round starts at once.
    assert_eq!(m.current(), Some(Protocol::NatPmp));
    let _ = now;
}

#[test]
fn a_round_without_answers_waits_longer_each_time() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(&Protocol::ALL, t0);
    let mut rounds = Vec::new();
    let mut now = t0;
    while rounds.len() < 3 {
        now = tick(&mut m);
        drain(&mut m);
        if let Some(e) = m.poll_event() {
            assert_eq!(e, Event::Unavailable);
            assert!(m.is_idle());
            rounds.push(now);
        }
    }
    // One round: two datagram windows and the UPnP window.
    assert_eq!(rounds[0] - t0, DATAGRAM_WINDOW * 2 + UPNP_WINDOW);
    let gap1 = rounds[1] - rounds[0];
    let gap2 = rounds[2] - rounds[1];
    assert_eq!(gap1, RETRY_FIRST + DATAGRAM_WINDOW * 2 + UPNP_WINDOW);
    assert_eq!(gap2, RETRY_FIRST * 2 + DATAGRAM_WINDOW * 2 + UPNP_WINDOW);
    let _ = now;
}

#[test]
fn a_zero_lifetime_grant_counts_as_a_refusal() {
    let t0 = Instant::now();
    let mut m = PortMapper::new(&[Protocol::Pcp, Protocol::NatPmp], t0);
    drain(&mut m);
    m.handle_answer(Protocol::Pcp, granted(22100, 0), t0);
    assert_eq!(m.mapping(), None);
    assert_eq!(m.current(), Some(Protocol::NatPmp));
}

/// One input to the lifecycle in [`random_inputs_keep_the_lifecycle_sound`].
#[derive(Debug, Clone)]
enum Input {
    /// Run the clock to the next timeout.
    Timeout,
    /// Some time passes without a timeout being handled.
    Wait(u16),
    /// An answer from `protocol`: granted (port, lifetime seconds) or refused.
    Answer(usize, Option<(u16, u16)>),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        Just(Input::Timeout),
        any::<u16>().prop_map(Input::Wait),
        (0..3usize, proptest::option::of(any::<(u16, u16)>()))
            .prop_map(|(p, a)| Input::Answer(p, a)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever answers come when: a timeout is always pending until stop, the mapping held is
    /// the last one granted, requests go only to the protocol being asked, and stopping deletes
    /// exactly the mapping held.
    #[test]
    fn random_inputs_keep_the_lifecycle_sound(inputs in proptest::collection::vec(input(), 0..60)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut m = PortMapper::new(&Protocol::ALL, now);
        prop_assert_eq!(drain(&mut m), [Action::Request { protocol: Protocol::Pcp }]);
        for i in inputs {
            match i {
                Input::Timeout => {
                    let t = m.poll_timeout().expect("a timeout until stopped");
                    now = now.max(t);
                    m.handle_timeout(now);
                }
                Input::Wait(ms) => now += Duration::from_millis(ms.into()),
                Input::Answer(p, a) => {
                    let answer = match a {
                        Some((port, secs)) => granted(port, secs.into()),
                        None => Answer::Refused,
                    };
                    let was = m.current();
                    m.handle_answer(Protocol::ALL[p], answer, now);
                    if was == Some(Protocol::ALL[p]) {
                        if let (Some((port, secs)), true) = (a, a.is_some_and(|(_, s)| s > 0)) {
                            let held = m.mapping().expect("granted");
                            prop_assert_eq!(held.external.port(), port);
                            prop_assert_eq!(held.lifetime, Duration::from_secs(secs.into()));
                        }
                    }
                }
            }
            while let Some(a) = m.poll_action() {
                match a {
                    Action::Request { protocol } => prop_assert_eq!(Some(protocol), m.current()),
                    Action::Delete { .. } => prop_assert!(false, "delete before stop"),
                }
            }
            while let Some(e) = m.poll_event() {
                if let Event::Mapped(x) = e {
                    prop_assert_eq!(Some(x), m.mapping());
                }
            }
        }
        let held = m.mapping();
        m.stop();
        let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action()).collect();
        match held {
            Some(mapping) => prop_assert_eq!(actions, vec![Action::Delete { mapping }]),
            None => prop_assert!(actions.is_empty()),
        }
        prop_assert_eq!(m.poll_timeout(), None);
    }
}
