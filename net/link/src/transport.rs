//! The QUIC endpoint: one UDP socket, acting as both server and client, that connects only to
//! devices proving the expected id and accepts only devices its [`PeerPolicy`] lets in.
//!
//! [`Transport::accept`] yields connections whose handshake completed and whose peer the policy
//! admitted, tagged [`Admission::Paired`] (run replication) or [`Admission::PairingOnly`] (an
//! unknown device while an invitation is open: run only the pairing handshake). Refused and
//! failed handshakes are logged and never yielded.
//!
//! [`Transport::connect`] returns only once the server has confirmed the handshake, i.e. after it
//! checked our certificate: in TLS 1.3 the client finishes first, and a server that refuses us
//! says so one round trip later. Waiting for that confirmation lets `connect` report "the peer
//! refused us" as a [`ConnectError::Refused`] instead of handing out a connection that dies at
//! once.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use quinn::{ConnectionError, IdleTimeout, TransportConfig, TransportErrorCode, VarInt};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::identity::{DeviceId, DeviceKey};
use crate::tls::{self, PeerPolicy, TlsError, TlsIdentity};

mod accept;
mod addr;
mod datagram;

use accept::{handshake, AcceptError, Sources, MAX_PENDING_HANDSHAKES};
pub use accept::{Accepted, Admission};
pub use addr::{canonical, canonical_ip, peer_addr};
pub use datagram::{
    largest_datagram, ETHERNET_DATAGRAM, LARGEST_DATAGRAM, LARGE_DATAGRAM_BUFFER, SMALLEST_DATAGRAM,
};

/// Keep-alive interval. Common NATs drop an idle UDP mapping after 30 s or more (RFC 4787 asks
/// for at least 2 minutes, many home routers use 30-60 s); a packet every 10 s keeps the mapping,
/// and a TURN permission, alive with margin for a lost keep-alive or two.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Silence after which a connection is dead: three keep-alive intervals, so one or two lost
/// keep-alives are survived but a vanished peer is noticed within half a minute.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Transport::connect`] waits for the handshake. Shorter than [`IDLE_TIMEOUT`]
/// because a peer that has not answered in 10 s is very likely offline or unreachable on that
/// path, and the caller usually has other candidate addresses (or the relay) to try.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-stream receive window: as large as the largest connection window, so the connection's
/// (sized to the path by [`crate::flow`]) is the one that binds. Replication streams everything
/// over one stream, which must be able to use the whole window.
const STREAM_WINDOW: u64 = crate::flow::MAX_WINDOW;

/// Connection-wide receive and send windows to start with; the daemon retunes them to the
/// bandwidth-delay product as the link runs ([`crate::flow::FlowTuner`]). They bound the
/// unread and the unacknowledged data per connection; nothing is allocated up front.
const CONNECTION_WINDOW: u64 = crate::flow::START_WINDOW;

/// Concurrent streams a peer may open. Chunk fetches run many in flight (one stream each), so
/// quinn's default of 100 would throttle bulk transfer of small chunks.
const MAX_STREAMS: u32 = 1024;

/// Application close code: the server closed a connection because the client is not (or no
/// longer) paired. Application codes below 16 are reserved for the transport.
pub const CLOSE_NOT_PAIRED: VarInt = VarInt::from_u32(1);

/// Application close code for an orderly shutdown of the endpoint.
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);

/// TLS alert `access_denied` (RFC 8446), which rustls sends when our verifier rejects a
/// certificate; in QUIC it arrives as the crypto error 0x100 + 49.
const ALERT_ACCESS_DENIED: u8 = 49;
/// TLS alert `no_application_protocol`: the peer does not speak `fybrk/1`.
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// quinn needs a tokio runtime to drive the socket and timers.
    #[error("the QUIC transport must be started from inside a tokio runtime")]
    NoRuntime,
    /// The UDP socket could not be used.
    #[error("cannot use the UDP socket for QUIC: {0}")]
    Socket(#[source] io::Error),
    /// The device certificate or TLS configuration could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Why a connection to a device failed, in terms a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No handshake completed in time.
    #[error(
        "no answer from {addr} within {}s: the device may be offline, or unreachable from here \
         (firewall, NAT, wrong address)", after.as_secs()
    )]
    Timeout {
        /// The address dialled.
        addr: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// The device at that address is not the one we dialled.
    #[error(
        "the device at {addr} is {actual}, not {expected}: the address is stale or belongs to \
         someone else"
    )]
    WrongPeer {
        /// The address dialled.
        addr: SocketAddr,
        /// The device we wanted.
        expected: DeviceId,
        /// The device that answered.
        actual: DeviceId,
    },
    /// The peer rejected our certificate: it is not paired with us (any more).
    #[error(
        "device {peer} at {addr} refused the connection: it is not paired with this device \
         (pair again if this is unexpected)"
    )]
    Refused {
        /// The address dialled.
        addr: SocketAddr,
        /// The device that refused.
        peer: DeviceId,
    },
    /// The peer does not speak fybrk's protocol version.
    #[error("{addr} does not speak {proto}: another program, or an incompatible fybrk version", proto = String::from_utf8_lossy(tls::ALPN))]
    Incompatible {
        /// The address dialled.
        addr: SocketAddr,
    },
    /// The session carries no usable peer certificate (cannot happen with our verifier; kept
    /// as an error rather than a panic).
    #[error("the peer at {addr} presented no usable certificate")]
    NoPeerIdentity {
        /// The address dialled.
        addr: SocketAddr,
    },
    /// quinn refused to start the attempt (bad address, endpoint closed).
    #[error("cannot connect to {addr}: {source}")]
    Start {
        /// The address dialled.
        addr: SocketAddr,
        /// quinn's reason.
        source: quinn::ConnectError,
    },
    /// The connection failed for another reason.
    #[error("connection to {addr} failed: {source}")]
    Failed {
        /// The address dialled.
        addr: SocketAddr,
        /// quinn's reason.
        source: ConnectionError,
    },
    /// Our TLS client configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Incoming handshakes in progress, each ending with its source address and outcome.
type Handshakes = JoinSet<(IpAddr, Result<Accepted, AcceptError>)>;

/// fybrk's QUIC endpoint on one UDP socket.
pub struct Transport {
    endpoint: quinn::Endpoint,
    identity: TlsIdentity,
    policy: Arc<dyn PeerPolicy>,
    transport_config: Arc<TransportConfig>,
    handshakes: tokio::sync::Mutex<(Handshakes, Sources)>,
}

impl Transport {
    /// Starts the endpoint on `socket`, an already-bound UDP socket (so one used for STUN first
    /// can be handed over). Must be called inside a tokio runtime.
    ///
    /// From here on quinn reads every datagram on the socket: sharing it with STUN/TURN needs
    /// [`Transport::bind_with`] and a demultiplexing [`quinn::AsyncUdpSocket`].
    pub fn bind(
        socket: UdpSocket,
        key: &DeviceKey,
        policy: Arc<dyn PeerPolicy>,
    ) -> Result<Transport, TransportError> {
        let runtime = runtime()?;
        socket
            .set_nonblocking(true)
            .map_err(TransportError::Socket)?;
        let socket = runtime
            .wrap_udp_socket(socket)
            .map_err(TransportError::Socket)?;
        Self::start(socket, runtime, key, policy, ETHERNET_DATAGRAM)
    }

    /// Starts the endpoint on a custom socket abstraction (e.g. one that routes STUN and TURN
    /// datagrams elsewhere and passes QUIC through). Must be called inside a tokio runtime.
    /// `largest_datagram` bounds MTU discovery: see [`largest_datagram`].
    pub fn bind_with(
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        key: &DeviceKey,
        policy: Arc<dyn PeerPolicy>,
        largest_datagram: u16,
    ) -> Result<Transport, TransportError> {
        let runtime = runtime()?;
        Self::start(socket, runtime, key, policy, largest_datagram)
    }

    fn start(
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        runtime: Arc<dyn quinn::Runtime>,
        key: &DeviceKey,
        policy: Arc<dyn PeerPolicy>,
        largest_datagram: u16,
    ) -> Result<Transport, TransportError> {
        let identity = TlsIdentity::new(key)?;
        let transport_config = Arc::new(transport_config(largest_datagram));
        let mut server = tls::server_config(&identity, Arc::clone(&policy))?;
        server.transport_config(Arc::new(incoming_transport_config(largest_datagram)));
        let mut endpoint_config = quinn::EndpointConfig::default();
        // Keep the QUIC fixed bit (0x40) set on every packet: the socket demultiplexer tells
        // QUIC from STUN (first byte 0-3) and TURN ChannelData (64-79) by it (RFC 9443).
        endpoint_config.grease_quic_bit(false);
        // Accept datagrams as large as this side's MTU discovery may send (see
        // `largest_datagram`): the limit is a transport parameter, and the peer's discovery
        // stops at it. quinn sizes its receive buffer by it (allocated once, touched only as
        // far as datagrams fill it).
        endpoint_config
            .max_udp_payload_size(largest_datagram.max(ETHERNET_DATAGRAM + 20))
            .map_err(|e| TransportError::Socket(std::io::Error::other(e.to_string())))?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server),
            socket,
            runtime,
        )
        .map_err(TransportError::Socket)?;
        Ok(Transport {
            endpoint,
            identity,
            policy,
            transport_config,
            handshakes: tokio::sync::Mutex::new((JoinSet::new(), Sources::default())),
        })
    }

    /// This device's id.
    pub fn local_id(&self) -> DeviceId {
        self.identity.id()
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The underlying quinn endpoint (statistics, rebinding).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Connects to the device `expected` at `addr`, waiting at most [`CONNECT_TIMEOUT`].
    ///
    /// Returns once the server has confirmed the handshake (it accepted our certificate).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: DeviceId,
    ) -> Result<(quinn::Connection, DeviceId), ConnectError> {
        self.connect_timeout(addr, expected, CONNECT_TIMEOUT).await
    }

    /// [`connect`](Self::connect) with a caller-chosen timeout (e.g. short probes of several
    /// candidate addresses).
    pub async fn connect_timeout(
        &self,
        addr: SocketAddr,
        expected: DeviceId,
        timeout: Duration,
    ) -> Result<(quinn::Connection, DeviceId), ConnectError> {
        let (mut config, seen) = tls::client_config_observed(&self.identity, expected)?;
        config.transport_config(Arc::clone(&self.transport_config));
        let connecting = self
            .endpoint
            .connect_with(config, addr, tls::CERT_NAME)
            .map_err(|source| ConnectError::Start { addr, source })?;
        let established = async {
            let conn = connecting.await?;
            wait_confirmed(&conn).await?;
            Ok::<_, ConnectionError>(conn)
        };
        // On timeout the dropped `Connecting` closes the attempt.
        let conn = match tokio::time::timeout(timeout, established).await {
            Err(_) => {
                return Err(ConnectError::Timeout {
                    addr,
                    after: timeout,
                })
            }
            Ok(Err(e)) => {
                let err = classify(e, addr, expected, seen.get().copied(), timeout);
                debug!(%addr, peer = %expected.abbrev(), "connect failed: {err}");
                return Err(err);
            }
            Ok(Ok(conn)) => conn,
        };
        // The verifier already pinned the id; re-derive it from the session as a second check.
        match tls::peer_id(&conn) {
            Some(peer) if peer == expected => {
                debug!(%addr, peer = %peer.abbrev(), "connected");
                Ok((conn, peer))
            }
            Some(actual) => {
                conn.close(CLOSE_SHUTDOWN, b"unexpected peer");
                Err(ConnectError::WrongPeer {
                    addr,
                    expected,
                    actual,
                })
            }
            None => {
                conn.close(CLOSE_SHUTDOWN, b"no peer identity");
                Err(ConnectError::NoPeerIdentity { addr })
            }
        }
    }

    /// The next connection from an admitted device, or `None` once the endpoint is closed.
    ///
    /// Handshakes run concurrently; this returns whichever completes first. Connections the
    /// policy refuses, or whose handshake fails or stalls, are logged and dropped. One caller at
    /// a time: concurrent calls wait for each other.
    pub async fn accept(&self) -> Option<Accepted> {
        let mut guard = self.handshakes.lock().await;
        let (handshakes, sources) = &mut *guard;
        let mut endpoint_open = true;
        loop {
            tokio::select! {
                incoming = self.endpoint.accept(), if endpoint_open => match incoming {
                    Some(incoming) if handshakes.len() >= MAX_PENDING_HANDSHAKES => {
                        warn!(remote = %incoming.remote_address(), "too many handshakes in progress; refusing");
                        incoming.refuse();
                    }
                    Some(incoming) => {
                        let source = canonical_ip(incoming.remote_address().ip());
                        if sources.begin(source) {
                            handshakes.spawn(handshake(incoming, Arc::clone(&self.policy)));
                        } else {
                            warn!(remote = %incoming.remote_address(), "too many handshakes from this address at once; refusing");
                            incoming.refuse();
                        }
                    }
                    None => endpoint_open = false,
                },
                Some(joined) = handshakes.join_next() => match joined {
                    Ok((source, result)) => {
                        sources.end(source);
                        match result {
                            Ok(accepted) => return Some(accepted),
                            Err(e) => debug!("incoming connection dropped: {e}"),
                        }
                    }
                    Err(e) => {
                        // A panicked task loses its source: forget all counts rather than
                        // refuse that address for good.
                        *sources = Sources::default();
                        warn!("handshake task failed: {e}");
                    }
                },
                else => return None,
            }
        }
    }

    /// Closes every connection and stops accepting; pending [`accept`](Self::accept) calls
    /// return `None`.
    pub fn close(&self) {
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutting down");
    }

    /// Waits until every connection has been cleanly closed (after [`close`](Self::close)), so
    /// peers learn of the shutdown instead of waiting out their idle timeout.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("id", &self.identity.id())
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// The transport settings shared by both directions.
fn transport_config(largest_datagram: u16) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // Milliseconds; 30 000 is far inside the varint range, so this conversion cannot fail.
    t.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        IDLE_TIMEOUT.as_millis() as u32,
    ))));
    t.stream_receive_window(crate::flow::varint(STREAM_WINDOW));
    t.receive_window(crate::flow::varint(CONNECTION_WINDOW));
    t.send_window(CONNECTION_WINDOW);
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(VarInt::from_u32(MAX_STREAMS));
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.upper_bound(largest_datagram);
    t.mtu_discovery_config(Some(mtud));
    t
}

/// The settings an incoming connection starts with: a pairing-sized budget, raised for paired
/// devices once the handshake shows who it is (`accept::full_budget`).
fn incoming_transport_config(largest_datagram: u16) -> TransportConfig {
    let mut t = transport_config(largest_datagram);
    t.receive_window(VarInt::from_u32(accept::PAIRING_RECEIVE_WINDOW));
    t.max_concurrent_bidi_streams(VarInt::from_u32(1));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t
}

fn runtime() -> Result<Arc<dyn quinn::Runtime>, TransportError> {
    // quinn's tokio runtime panics outside a runtime; check first and return an error instead.
    tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
    Ok(Arc::new(quinn::TokioRuntime))
}

/// Waits until the server confirms the handshake (its HANDSHAKE_DONE frame, sent once it has
/// accepted our certificate), or the connection closes.
///
/// quinn has no event for confirmation, so this polls the frame counter; the back-off from 1 ms
/// to 50 ms makes the wait cost a few wake-ups on a LAN and stays negligible on slow paths.
async fn wait_confirmed(conn: &quinn::Connection) -> Result<(), ConnectionError> {
    let mut interval = Duration::from_millis(1);
    loop {
        if let Some(reason) = conn.close_reason() {
            return Err(reason);
        }
        if conn.stats().frame_rx.handshake_done > 0 {
            return Ok(());
        }
        tokio::select! {
            reason = conn.closed() => return Err(reason),
            () = tokio::time::sleep(interval) => {}
        }
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// Maps a failed handshake to what the user needs to know.
fn classify(
    e: ConnectionError,
    addr: SocketAddr,
    expected: DeviceId,
    seen: Option<DeviceId>,
    timeout: Duration,
) -> ConnectError {
    if let Some(actual) = seen.filter(|actual| *actual != expected) {
        return ConnectError::WrongPeer {
            addr,
            expected,
            actual,
        };
    }
    let refused = TransportErrorCode::crypto(ALERT_ACCESS_DENIED);
    let no_alpn = TransportErrorCode::crypto(ALERT_NO_APPLICATION_PROTOCOL);
    match &e {
        ConnectionError::TimedOut => ConnectError::Timeout {
            addr,
            after: timeout,
        },
        ConnectionError::ConnectionClosed(close) if close.error_code == refused => {
            ConnectError::Refused {
                addr,
                peer: expected,
            }
        }
        ConnectionError::ApplicationClosed(close) if close.error_code == CLOSE_NOT_PAIRED => {
            ConnectError::Refused {
                addr,
                peer: expected,
            }
        }
        ConnectionError::ConnectionClosed(close) if close.error_code == no_alpn => {
            ConnectError::Incompatible { addr }
        }
        _ => ConnectError::Failed { addr, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{channel_binding, AllowList};
    use tokio::sync::mpsc;

    /// Long enough for a loopback handshake to finish many times over on a busy 2-core machine.
    const SETTLE: Duration = Duration::from_millis(500);

    struct Node {
        key: DeviceKey,
        allow: Arc<AllowList>,
        transport: Arc<Transport>,
    }

    impl Node {
        fn new() -> Node {
            let key = DeviceKey::generate().expect("key");
            let allow = Arc::new(AllowList::new());
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
            let policy: Arc<dyn PeerPolicy> = allow.clone();
            let transport = Arc::new(Transport::bind(socket, &key, policy).expect("transport"));
            Node {
                key,
                allow,
                transport,
            }
        }

        fn id(&self) -> DeviceId {
            self.key.id()
        }

        fn addr(&self) -> SocketAddr {
            self.transport.local_addr().expect("local addr")
        }

        /// Runs `accept` in a loop, as the daemon will, forwarding what it yields.
        fn serve(&self) -> mpsc::UnboundedReceiver<Accepted> {
            let (tx, rx) = mpsc::unbounded_channel();
            let transport = Arc::clone(&self.transport);
            tokio::spawn(async move {
                while let Some(accepted) = transport.accept().await {
                    if tx.send(accepted).is_err() {
                        break;
                    }
                }
            });
            rx
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Accepted>) -> Accepted {
        tokio::time::timeout(CONNECT_TIMEOUT, rx.recv())
            .await
            .expect("server yields the connection in time")
            .expect("acceptor running")
    }

    async fn assert_nothing_yielded(rx: &mut mpsc::UnboundedReceiver<Accepted>) {
        if let Ok(Some(a)) = tokio::time::timeout(SETTLE, rx.recv()).await {
            panic!("server yielded a connection from {}", a.peer);
        }
    }

    #[tokio::test]
    async fn paired_devices_connect_and_exchange_a_message() {
        let a = Node::new();
        let b = Node::new();
        a.allow.add(b.id());
        b.allow.add(a.id());
        let mut incoming = a.serve();

        let (conn, peer) = b
            .transport
            .connect(a.addr(), a.id())
            .await
            .expect("connect");
        assert_eq!(peer, a.id());
        assert_eq!(tls::peer_id(&conn), Some(a.id()));
        let accepted = next(&mut incoming).await;
        assert_eq!(accepted.peer, b.id());
        assert_eq!(accepted.admission, Admission::Paired);
        assert!(accepted.connection.handshake_data().is_some());

        let server = tokio::spawn(async move {
            let (mut send, mut recv) = accepted.connection.accept_bi().await.expect("accept_bi");
            let msg = recv.read_to_end(1024).await.expect("read");
            send.write_all(&[b"re: ".as_slice(), &msg].concat())
                .await
                .expect("write");
            send.finish().expect("finish");
            // Keep the connection until the client has read the reply.
            accepted.connection.closed().await;
        });
        let (mut send, mut recv) = conn.open_bi().await.expect("open_bi");
        send.write_all(b"hello").await.expect("write");
        send.finish().expect("finish");
        let reply = recv.read_to_end(1024).await.expect("read reply");
        assert_eq!(reply, b"re: hello");
        conn.close(CLOSE_SHUTDOWN, b"done");
        server.await.expect("server task");
    }

    #[tokio::test]
    async fn a_paired_device_gets_the_full_budget() {
        let a = Node::new();
        let b = Node::new();
        a.allow.add(b.id());
        let mut incoming = a.serve();
        let (conn, _) = b
            .transport
            .connect(a.addr(), a.id())
            .await
            .expect("connect");
        let accepted = next(&mut incoming).await;
        assert_eq!(accepted.admission, Admission::Paired);
        let mut open = Vec::new();
        for _ in 0..8 {
            let bi = tokio::time::timeout(SETTLE, conn.open_bi()).await;
            open.push(bi.expect("raised stream limit").expect("stream"));
        }
        let uni = tokio::time::timeout(SETTLE, conn.open_uni()).await;
        let mut uni = uni.expect("raised uni limit").expect("stream");
        let big = vec![7u8; 1 << 20];
        tokio::time::timeout(SETTLE, uni.write_all(&big))
            .await
            .expect("a raised window takes 1 MiB")
            .expect("write");
    }

    #[tokio::test]
    async fn unpaired_client_is_refused() {
        let a = Node::new();
        let b = Node::new();
        b.allow.add(a.id()); // one-sided: a never paired with b
        let mut incoming = a.serve();

        let err = b
            .transport
            .connect(a.addr(), a.id())
            .await
            .expect_err("must be refused");
        assert!(
            matches!(err, ConnectError::Refused { peer, .. } if peer == a.id()),
            "unexpected error: {err}"
        );
        assert!(err.to_string().contains("not paired"), "{err}");
        assert_nothing_yielded(&mut incoming).await;
    }

    #[tokio::test]
    async fn client_refuses_a_server_with_another_id() {
        let a = Node::new();
        let b = Node::new();
        let c = Node::new();
        a.allow.add(b.id());
        let mut incoming = a.serve();

        // b dials a's address believing it is c.
        let err = b
            .transport
            .connect(a.addr(), c.id())
            .await
            .expect_err("must refuse");
        match err {
            ConnectError::WrongPeer {
                expected, actual, ..
            } => {
                assert_eq!(expected, c.id());
                assert_eq!(actual, a.id());
            }
            other => panic!("unexpected error: {other}"),
        }
        assert_nothing_yielded(&mut incoming).await;
    }

    #[tokio::test]
    async fn unpairing_refuses_new_connections() {
        let a = Node::new();
        let b = Node::new();
        a.allow.add(b.id());
        let mut incoming = a.serve();

        let (first, _) = b
            .transport
            .connect(a.addr(), a.id())
            .await
            .expect("connect");
        let _first_server_side = next(&mut incoming).await;

        assert!(a.allow.remove(&b.id()));
        let err = b
            .transport
            .connect(a.addr(), a.id())
            .await
            .expect_err("must be refused");
        assert!(
            matches!(err, ConnectError::Refused { .. }),
            "unexpected error: {err}"
        );
        assert_nothing_yielded(&mut incoming).await;
        // Connections already open are left to the daemon to close.
        assert!(first.close_reason().is_none());
    }

    #[tokio::test]
    async fn unknown_device_is_admitted_for_pairing_only_while_a_window_is_open() {
        let a = Node::new();
        let joiner = Node::new();
        let mut incoming = a.serve();

        let window = a.allow.open_pairing();
        // The joiner knows the inviter's id from the invitation.
        let (conn, peer) = joiner
            .transport
            .connect(a.addr(), a.id())
            .await
            .expect("connect");
        assert_eq!(peer, a.id());
        let accepted = next(&mut incoming).await;
        assert_eq!(accepted.peer, joiner.id());
        assert_eq!(accepted.admission, Admission::PairingOnly);

        // A pairing-sized budget: one bidirectional stream, no unidirectional one, and no more
        // than 64 KiB in flight towards an inviter that is not reading.
        let (mut send, _recv) = conn.open_bi().await.expect("the one stream");
        let more = tokio::time::timeout(SETTLE, conn.open_bi()).await;
        assert!(more.is_err(), "a second stream must wait for credit");
        let uni = tokio::time::timeout(SETTLE, conn.open_uni()).await;
        assert!(uni.is_err(), "no unidirectional stream");
        let big = vec![7u8; 1 << 20];
        let flood = tokio::time::timeout(SETTLE, send.write_all(&big)).await;
        assert!(
            flood.is_err(),
            "1 MiB cannot be pushed at a stranger's budget"
        );

        drop(window);
        let err = joiner
            .transport
            .connect(a.addr(), a.id())
            .await
            .expect_err("window closed");
        assert!(
            matches!(err, ConnectError::Refused { .. }),
            "unexpected error: {err}"
        );
    }

    #[tokio::test]
    async fn channel_binding_matches_per_connection() {
        let a = Node::new();
        let b = Node::new();
        a.allow.add(b.id());
        let mut incoming = a.serve();
        const LABEL: &[u8] = b"EXPERIMENTAL fybrk test";

        let (c1, _) = b
            .transport
            .connect(a.addr(), a.id())
            .await
            .expect("connect 1");
        let s1 = next(&mut incoming).await.connection;
        let (c2, _) = b
            .transport
            .connect(a.addr(), a.id())
            .await
            .expect("connect 2");
        let s2 = next(&mut incoming).await.connection;

        let cb = |conn: &quinn::Connection, ctx: &[u8]| {
            channel_binding(conn, LABEL, ctx).expect("export")
        };
        assert_eq!(cb(&c1, b"x"), cb(&s1, b"x"));
        assert_eq!(cb(&c2, b"x"), cb(&s2, b"x"));
        assert_ne!(cb(&c1, b"x"), cb(&c2, b"x"));
        assert_ne!(cb(&c1, b"x"), cb(&c1, b"y"), "context is bound in");
        assert_ne!(
            channel_binding(&c1, b"other label", b"x").expect("export"),
            cb(&c1, b"x"),
            "label is bound in"
        );
    }

    #[tokio::test]
    async fn silent_address_times_out() {
        let a = Node::new();
        // A bound loopback socket that never answers: the datagrams go nowhere.
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr");
        let timeout = Duration::from_millis(300);
        let err = a
            .transport
            .connect_timeout(addr, DeviceKey::generate().expect("key").id(), timeout)
            .await
            .expect_err("nobody answers");
        assert!(
            matches!(err, ConnectError::Timeout { after, .. } if after == timeout),
            "{err}"
        );
    }

    #[tokio::test]
    async fn close_ends_accept() {
        let a = Node::new();
        let mut incoming = a.serve();
        a.transport.close();
        let ended = tokio::time::timeout(CONNECT_TIMEOUT, incoming.recv()).await;
        assert!(matches!(ended, Ok(None)), "accept loop should end");
    }

    #[test]
    fn bind_outside_a_runtime_is_an_error() {
        let key = DeviceKey::generate().expect("key");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let err =
            Transport::bind(socket, &key, Arc::new(AllowList::new())).expect_err("no runtime");
        assert!(matches!(err, TransportError::NoRuntime));
    }
}
