use std::net::UdpSocket as StdUdpSocket;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::mux::{MuxSocket, RelayRoute};
use crate::testing::{Coturn, Node, PASS, USER};
use crate::transport::CLOSE_SHUTDOWN;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(coturn: &Coturn, pass: &str) -> TurnConfig {
    coturn.url(pass).parse().expect("turn URL")
}

#[test]
fn turn_urls_parse() {
    let c: TurnConfig = "turn:relay.example.org:3479?user=alice&pass=s3cret"
        .parse()
        .expect("parse");
    assert_eq!(
        (
            c.host.as_str(),
            c.port,
            c.username.as_str(),
            c.password.as_str()
        ),
        ("relay.example.org", 3479, "alice", "s3cret")
    );
    let c: TurnConfig = "TURN:[2001:db8::7]?transport=udp&username=a%26b&password=p%3Dq%25"
        .parse()
        .expect("parse");
    assert_eq!(
        (c.host.as_str(), c.port),
        ("2001:db8::7", DEFAULT_TURN_PORT)
    );
    assert_eq!((c.username.as_str(), c.password.as_str()), ("a&b", "p=q%"));
    assert_eq!(c.to_string(), "turn:[2001:db8::7]:3478?user=a&b");
    assert!(
        !format!("{c:?}").contains("p=q%"),
        "Debug hides the password"
    );
}

#[test]
fn bad_turn_urls_say_what_is_wrong_without_showing_the_password() {
    for (value, says) in [
        ("relay:3478?user=u&pass=hunter2", "must start with turn:"),
        (
            "turns:relay:5349?user=u&pass=hunter2",
            "turns: (TURN over TLS) is not supported",
        ),
        ("turn:relay:3478?pass=hunter2", "user= is missing"),
        ("turn:relay:3478?user=u", "pass= is missing"),
        ("turn:relay:99999?user=u&pass=hunter2", "port \"99999\""),
        (
            "turn:relay?user=u&pass=hunter2&ttl=5",
            "unknown parameter \"ttl\"",
        ),
        (
            "turn:relay?user=u&pass=hunter2&transport=tcp",
            "transport=tcp is not supported",
        ),
        ("turn:relay?user=u%zz&pass=hunter2", "bad %-escape"),
    ] {
        let err = value.parse::<TurnConfig>().expect_err(value);
        let msg = err.to_string();
        assert!(msg.contains(says), "{value}: {msg}");
        assert!(
            msg.contains("expected turn:HOST:PORT?user=USER&pass=PASSWORD"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "the password leaked: {msg}");
    }
}

#[test]
fn refresh_comes_a_minute_early_or_at_half_time() {
    let s = Duration::from_secs;
    assert_eq!(refresh_after(s(600)), s(540));
    assert_eq!(refresh_after(s(3600)), s(3540));
    assert_eq!(refresh_after(s(100)), s(50));
}

#[tokio::test]
async fn an_allocation_gets_a_relayed_address() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let client = TurnClient::allocate(&mux, &config(&coturn, PASS))
        .await
        .expect("allocate");
    let relayed = client.relayed_addr();
    assert_eq!(relayed.ip(), IpAddr::from([127, 0, 0, 1]));
    assert!(
        relayed.port() >= 61_000,
        "from coturn's relay range: {relayed}"
    );
    assert_eq!(client.mapped_addr(), Some(mux.local_addr().expect("addr")));
    assert_eq!(client.server_addr(), coturn.addr());
    assert!(client.is_active());
    client.close().await.expect("deallocate");
    assert!(mux.relay_route(relayed).is_none());
}

#[tokio::test]
async fn a_wrong_password_is_refused_clearly() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let err = TurnClient::allocate(&mux, &config(&coturn, "not-the-password"))
        .await
        .expect_err("wrong password");
    assert!(
        matches!(err, TurnError::Unauthorized { code: 401, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("TURN server refused the credentials"),
        "{msg}"
    );
    assert!(msg.contains(&format!("user \"{USER}\"")), "{msg}");
    assert!(msg.contains("check user= and pass="), "{msg}");
}

#[tokio::test]
async fn a_stale_nonce_is_renewed_transparently() {
    // coturn hands out nonces valid for one second.
    let Some(coturn) = Coturn::start_with(&["stale-nonce=1"]) else {
        return;
    };
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let client = TurnClient::allocate(&mux, &config(&coturn, PASS))
        .await
        .expect("allocate");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_peer, peer_addr) = raw_peer();
    client
        .bind_peer(peer_addr)
        .await
        .expect("bind with a renewed nonce");
    assert!(client.stale_nonces() >= 1, "coturn should have said 438");
}

#[tokio::test]
async fn an_allocation_left_behind_on_this_socket_is_replaced() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let first = TurnClient::allocate(&mux, &config(&coturn, PASS))
        .await
        .expect("allocate");
    // Dropped without deallocating, like a crashed daemon: the server still holds it.
    drop(first);
    let second = TurnClient::allocate(&mux, &config(&coturn, PASS))
        .await
        .expect("allocate again after a 437");
    assert!(second.is_active());
}

fn raw_peer() -> (StdUdpSocket, SocketAddr) {
    let s = StdUdpSocket::bind(loopback()).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let addr = s.local_addr().expect("addr");
    (s, addr)
}

#[tokio::test]
async fn refreshes_keep_channels_alive_past_their_lifetime() {
    // Channels and permissions that lapse after 2 s unless refreshed.
    let Some(coturn) = Coturn::start_with(&["channel-lifetime=2", "permission-lifetime=2"]) else {
        return;
    };
    let mux = MuxSocket::bind(loopback()).expect("bind");
    let timers = Timers {
        allocation: Some(Duration::from_millis(500)),
        permissions: Duration::from_millis(500),
    };
    let client = TurnClient::allocate_with(&mux, &config(&coturn, PASS), timers)
        .await
        .expect("allocate");
    let (peer, peer_addr) = raw_peer();
    let channel = client.bind_peer(peer_addr).await.expect("bind");
    assert_eq!(
        mux.relay_route(peer_addr),
        Some(RelayRoute {
            server: coturn.addr(),
            peer: peer_addr,
            channel: Some(channel),
        })
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(client.refreshes() >= 3, "refreshes: {}", client.refreshes());
    assert!(client.is_active());
    // The peer's datagram still comes through the relay on our channel.
    let before = mux.stats().relayed_rx;
    peer.send_to(&[0xC1, 1, 2, 3], client.relayed_addr())
        .expect("send to the relayed address");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while mux.stats().relayed_rx == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing came through the relay; coturn log:\n{}",
            coturn.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const BULK: usize = 4 << 20;

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// Two devices that trust each other, `a` with an allocation on `coturn`.
async fn relayed_pair(coturn: &Coturn) -> (Node, Node, TurnClient) {
    let (a, b) = (Node::new(), Node::new());
    a.allow.add(b.key.id());
    b.allow.add(a.key.id());
    let relay = TurnClient::allocate(&a.mux, &config(coturn, PASS))
        .await
        .expect("allocate");
    (a, b, relay)
}

/// Accepts one connection on `transport`, sends it [`BULK`] bytes of [`pattern`] and returns
/// the connection and the acknowledgement [`fetch_bulk`] sends back.
fn serve_bulk(
    transport: Arc<crate::transport::Transport>,
) -> tokio::task::JoinHandle<(quinn::Connection, Vec<u8>)> {
    tokio::spawn(async move {
        let accepted = transport.accept().await.expect("accepted");
        let mut send = accepted.connection.open_uni().await.expect("open");
        send.write_all(&pattern(BULK)).await.expect("write");
        send.finish().expect("finish");
        let mut recv = accepted.connection.accept_uni().await.expect("ack stream");
        let ack = recv.read_to_end(64).await.expect("ack");
        (accepted.connection, ack)
    })
}

/// The other end of [`serve_bulk`]: checks the bytes and acknowledges them.
async fn fetch_bulk(conn: &quinn::Connection) {
    let mut recv = conn.accept_uni().await.expect("bulk stream");
    let got = recv.read_to_end(BULK + 1).await.expect("read 4 MiB");
    assert!(got == pattern(BULK), "the 4 MiB arrived intact");
    let mut ack = conn.open_uni().await.expect("open ack");
    ack.write_all(b"got it").await.expect("ack");
    ack.finish().expect("finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_through_the_relay_moves_4_mib() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    // `a` reaches the world only through its relay; `b` dials a's relayed address.
    // Allocated after quinn took the socket: TURN's replies come through quinn's reads.
    let (a, b, relay) = relayed_pair(&coturn).await;
    let relayed = relay.relayed_addr();
    let b_addr = b.mux.local_addr().expect("addr");
    relay.bind_peer(b_addr).await.expect("bind b");

    let serve = serve_bulk(Arc::clone(&a.transport));
    let (conn, peer) = b
        .transport
        .connect(relayed, a.key.id())
        .await
        .expect("connect through the relay");
    assert_eq!(peer, a.key.id());
    assert_eq!(
        conn.remote_address(),
        relayed,
        "b sees a at its relayed address"
    );
    fetch_bulk(&conn).await;
    let (accepted, ack) = tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .expect("server done")
        .expect("server task");
    assert_eq!(
        accepted.remote_address(),
        b_addr,
        "a sees b at b's own address"
    );
    assert_eq!(ack, b"got it");

    let stats = a.mux.stats();
    let packets = BULK / 1500;
    assert!(stats.relayed_tx as usize > packets, "{stats:?}");
    assert!(stats.relayed_rx > 0, "{stats:?}");
    assert_eq!(b.mux.stats().relayed_tx, 0, "b sends directly");
    conn.close(CLOSE_SHUTDOWN, b"done");
}

/// One-sided relay: `b` has no relay and simply sends to `a`'s relayed address. `a` answers
/// the way it came, under an alias, and binds a channel to `b` in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_reaches_our_relay_is_answered_through_it() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let (a, b, relay) = relayed_pair(&coturn).await;
    let b_addr = b.mux.local_addr().expect("addr");
    // What an introduction does: permit the peer's IP, nothing else.
    relay
        .create_permission(&[b_addr.ip()])
        .await
        .expect("permission");

    let serve = serve_bulk(Arc::clone(&a.transport));
    let (conn, _) = b
        .transport
        .connect(relay.relayed_addr(), a.key.id())
        .await
        .expect("connect to the relayed address");
    fetch_bulk(&conn).await;
    let (accepted, ack) = tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .expect("server done")
        .expect("server task");
    assert_eq!(ack, b"got it");

    let alias = accepted.remote_address();
    assert!(
        crate::mux::is_relay_alias(alias),
        "a sees b under an alias, not {alias}"
    );
    let route = a.mux.relay_route(alias).expect("a route for the alias");
    assert_eq!((route.server, route.peer), (coturn.addr(), b_addr));
    assert!(route.channel.is_some(), "a channel was bound: {route:?}");
    assert!(
        a.mux.relay_route(b_addr).is_none(),
        "b's own address stays direct for a"
    );
    assert_eq!(b.mux.stats().relayed_tx, 0, "b sends directly");
    conn.close(CLOSE_SHUTDOWN, b"done");
}

/// A network that lets UDP through to the TURN server only: everything else goes through the
/// relay, rendezvous-style datagrams and QUIC alike, and answers come back as from the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaying_everything_reaches_any_peer_through_the_turn_server() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let (a, b, relay) = relayed_pair(&coturn).await;
    a.mux.set_relay_all(Some(coturn.addr()));
    assert_eq!(a.mux.relay_all(), Some(coturn.addr()));

    // A rendezvous-style datagram to a plain socket: the first one may go before the channel
    // (and with it the permission) exists, so keep sending until one arrives.
    let (peer, peer_addr) = raw_peer();
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut rendezvous = a.mux.take_rendezvous_receiver().expect("receiver");
    let mut buf = [0u8; 1500];
    let mut arrived = None;
    for _ in 0..50 {
        a.mux.try_send_to(b"\x21hello", peer_addr).expect("send");
        if let Ok((n, from)) = peer.recv_from(&mut buf) {
            arrived = Some((buf[..n].to_vec(), from));
            break;
        }
    }
    let (data, from) = arrived.expect("the datagram went through the relay");
    assert_eq!(data, b"\x21hello");
    assert_eq!(
        from,
        relay.relayed_addr(),
        "it left from the relayed address"
    );
    peer.send_to(b"\x22back", from).expect("answer");
    let back = tokio::time::timeout(Duration::from_secs(5), rendezvous.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!((back.from, back.data), (peer_addr, b"\x22back".to_vec()));

    // QUIC to b's own address goes through the relay too; b sees a's relayed address.
    let b_addr = b.mux.local_addr().expect("addr");
    let server = Arc::clone(&b.transport);
    let serve = tokio::spawn(async move {
        let accepted = server.accept().await.expect("accepted");
        let mut recv = accepted.connection.accept_uni().await.expect("stream");
        let got = recv.read_to_end(BULK + 1).await.expect("read");
        (accepted.connection, got)
    });
    let (conn, _) = a
        .transport
        .connect(b_addr, b.key.id())
        .await
        .expect("connect through the relay");
    assert_eq!(conn.remote_address(), b_addr, "a sees b at b's address");
    let mut send = conn.open_uni().await.expect("open");
    send.write_all(&pattern(BULK)).await.expect("write");
    send.finish().expect("finish");
    let (accepted, got) = tokio::time::timeout(Duration::from_secs(20), serve)
        .await
        .expect("server done")
        .expect("server task");
    assert!(got == pattern(BULK), "the 4 MiB arrived intact");
    assert_eq!(accepted.remote_address(), relay.relayed_addr());
    assert!(a.mux.stats().relayed_tx as usize > BULK / 1500);
    conn.close(CLOSE_SHUTDOWN, b"done");
}

/// A rendezvous client on `node`'s socket, as the daemon runs it.
fn rendezvous_client(
    node: &Node,
    server: SocketAddr,
) -> (
    crate::rendezvous::ClientHandle,
    tokio::sync::mpsc::UnboundedReceiver<crate::rendezvous::ClientEvent>,
) {
    use crate::rendezvous::{spawn_client, Client, ClientConfig, WallClock};
    let now = std::time::Instant::now();
    let client = Client::new(
        Arc::clone(&node.key),
        ClientConfig {
            server,
            lan: Vec::new(),
        },
        node.allow.clone(),
        now,
        WallClock::system(now),
    );
    let mut diverted = node.mux.take_rendezvous_receiver().expect("receiver");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(d) = diverted.recv().await {
            if tx.send((d.from, d.data)).await.is_err() {
                break;
            }
        }
    });
    let mux = node.mux.clone();
    let send = move |to: SocketAddr, data: &[u8]| mux.try_send_to(data, to);
    let (handle, events, _task) = spawn_client(client, send, rx);
    (handle, events)
}

async fn registered(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<crate::rendezvous::ClientEvent>,
) -> SocketAddr {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Some(crate::rendezvous::ClientEvent::Registered { observed }) => break observed,
                Some(_) => {}
                None => panic!("the client stopped"),
            }
        }
    })
    .await
    .expect("registered in time")
}

/// A device that relays everything registers with the rendezvous server through the relay
/// (the server sees its relayed address), and an introduction to a device with plain UDP finds
/// a path: through the relay, since every path of the first device is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_relays_everything_registers_and_punches_through_the_relay() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let server_socket = StdUdpSocket::bind(loopback()).expect("bind");
    let server = server_socket.local_addr().expect("addr");
    tokio::spawn(crate::rendezvous::run_server(server_socket));
    let (a, b, relay) = relayed_pair(&coturn).await;
    a.mux.set_relay_all(Some(coturn.addr()));
    // What the daemon does on an introduction: permit the peer on the relay.
    relay
        .create_permission(&[IpAddr::from([127, 0, 0, 1])])
        .await
        .expect("permission");
    let (a_handle, mut a_events) = rendezvous_client(&a, server);
    let (_b_handle, mut b_events) = rendezvous_client(&b, server);
    assert_eq!(registered(&mut a_events).await, relay.relayed_addr());
    assert_eq!(
        registered(&mut b_events).await,
        b.mux.local_addr().expect("addr")
    );

    let path = tokio::time::timeout(Duration::from_secs(10), a_handle.connect(b.key.id()))
        .await
        .expect("in time")
        .expect("a path");
    assert_eq!(path.addr, b.mux.local_addr().expect("addr"));
    assert!(a.mux.relay_route(path.addr).is_some(), "through the relay");
}
