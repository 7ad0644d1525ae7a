//! One UDP socket for everything: QUIC, STUN, TURN and fybrk's rendezvous probes.
//!
//! # Why one socket
//!
//! A NAT maps each local socket to a public address. STUN discovers that address, the rendezvous
//! server publishes it, peers punch holes towards it and QUIC then runs through those holes; a
//! TURN allocation is keyed by it too. All of that only works if every protocol leaves through the
//! same socket, so [`MuxSocket`] owns the one socket and sorts what arrives.
//!
//! # Demultiplexing (RFC 7983, RFC 9443)
//!
//! The first byte of a datagram tells the protocols apart:
//!
//! | first byte | what                                       | goes to                           |
//! |------------|--------------------------------------------|-----------------------------------|
//! | 0..=3      | STUN (the two top bits of a STUN type are 0)| the waiting STUN/TURN transaction, else [`MuxSocket::take_stun_receiver`] |
//! | 0x20..=0x3F| fybrk rendezvous and probe messages        | [`MuxSocket::take_rendezvous_receiver`] |
//! | 64..=79    | TURN ChannelData, *only* from a TURN server| unwrapped, then sorted again by its own first byte, as from the channel's peer |
//! | anything else | QUIC (fixed bit 0x40 set, see below)    | quinn                             |
//!
//! A STUN message from a TURN server may be a Data indication (a peer's datagram that arrived
//! on our relayed address before a channel to that peer existed): it is unwrapped and sorted
//! like ChannelData.
//!
//! QUIC short headers (0x40..=0x7F) overlap ChannelData (0x40..=0x4F), which is why ChannelData is
//! recognised only when it comes from an address registered as a TURN server. Our own QUIC never
//! greases the fixed bit (`grease_quic_bit(false)` in the transport), so it never falls into the
//! STUN or rendezvous ranges.
//!
//! # Who reads the socket
//!
//! Exactly one reader at a time, so nothing is read twice or raced for:
//!
//! - While a QUIC endpoint is attached ([`MuxSocket::quinn_socket`]), quinn's endpoint driver
//!   reads through [`quinn::AsyncUdpSocket::poll_recv`] straight into quinn's own buffers (with
//!   GRO and batched `recvmmsg`, like quinn's stock socket). Each buffer is classified in place:
//!   QUIC stays where it is (no copy, no allocation); ChannelData from the TURN server is unwrapped
//!   in place (the payload moves back 4 bytes) and re-addressed to the peer; STUN and rendezvous
//!   datagrams are copied out to their consumers and dropped from the batch.
//! - Otherwise (before quinn starts, or after its endpoint let go of the socket) a small pump task
//!   reads and dispatches the non-QUIC traffic, so STUN and TURN work without quinn. It waits on
//!   socket readiness: no polling loop.
//!
//! GRO may coalesce several same-size datagrams from one source into one buffer. Buffers are
//! rewritten in place when every segment is QUIC, or every segment is ChannelData of one channel
//! (bulk relayed traffic); a rare mixed buffer is split through a small queue of pooled buffers
//! that the next `poll_recv` hands to quinn first.
//!
//! # Relay routing
//!
//! A route sends the datagrams for one address (as quinn and the rendezvous client see it)
//! through a TURN server to a peer: as ChannelData once a channel is bound (GSO batches stay
//! batches: each segment grows by the 4-byte header), as Send indications before. What arrives
//! through the route reaches its consumers as coming from that address. The QUIC connection
//! never notices: only the path differs. Routes come from three places:
//!
//! - **Explicit**: [`crate::turn::TurnClient::bind_peer`] binds a channel to a peer address and
//!   routes that address through it.
//! - **Learned**: a peer that sends to our relayed address (a one-sided relay: the peer reaches
//!   our relay directly) is answered the way it came. Its datagrams are presented under an
//!   *alias*, an address in 240.0.0.0/8 ([`is_relay_alias`]), so the same peer address reached
//!   directly and through the relay are two different paths to quinn and the puncher (the
//!   relayed one must not capture the direct one's replies). A channel to the peer is bound in
//!   the background; until then replies go as Send indications.
//! - **Relay everything** ([`MuxSocket::set_relay_all`]): on a network that blocks all UDP but
//!   the TURN server's, every datagram to any other address goes through the relay (a channel
//!   is bound on first use, which also permits the peer), and arrives as from the real
//!   address.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::Waker;

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, trace, warn};

mod channel_data;
mod indication;
mod quinn_side;

use channel_data::{channel_data_header, push_channel_data};
pub use channel_data::{
    decode_channel_data, encode_channel_data, ChannelDataError, CHANNEL_DATA_HEADER,
    CHANNEL_NUMBERS,
};
use indication::{parse_data_indication, push_send_indication, SEND_OVERHEAD};
use quinn_side::QuinnSocket;

/// First bytes of STUN messages (RFC 7983): the two most significant bits of the type are zero.
pub const STUN_FIRST_BYTES: RangeInclusive<u8> = 0..=3;
/// First bytes reserved for fybrk's rendezvous and probe messages. RFC 7983 gives 20..=63 to
/// DTLS, which fybrk never speaks on this socket; 0x20..=0x3F is the part of it clear of ZRTP
/// (16..=19) and still far from QUIC, which always has bit 0x40 set on our side.
pub const RENDEZVOUS_FIRST_BYTES: RangeInclusive<u8> = 0x20..=0x3F;

/// STUN header length, and where its transaction id sits (RFC 8489 §5).
const STUN_HEADER: usize = 20;
const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const TID: std::ops::Range<usize> = 8..20;

/// Diverted datagrams (STUN, rendezvous) waiting for their consumer. These are control messages,
/// a few per second; 256 absorbs a burst while the consumer is busy and bounds the memory a
/// flood can pin. Past it, datagrams are dropped (their senders retransmit).
const DIVERT_QUEUE: usize = 256;
/// Split-off QUIC datagrams waiting for quinn. A GRO buffer holds at most 64 segments, so this is
/// several buffers' worth; quinn drains it on its very next `poll_recv`.
const PENDING_MAX: usize = 256;
/// Learned relay routes (peers that reached our relayed address) kept at most; past it, new
/// peers are not answered through the relay. Each costs a channel on the TURN server (4,096).
const MAX_LEARNED: u32 = 1024;
/// Relay aliases live in 240.0.0.0/8 (reserved, never routed): see "Relay routing".
const ALIAS_NET: u8 = 240;
/// Pending channel-bind requests per TURN server.
const BIND_QUEUE: usize = 64;
/// Buffers kept for reuse by that queue, so splitting does not allocate in steady state.
const POOL_MAX: usize = 64;
/// The pump's receive buffer: the largest UDP payload, which also bounds a GRO buffer.
const PUMP_BUF: usize = 64 * 1024;
/// Datagrams the pump handles per wake-up before yielding to other tasks.
const PUMP_BATCH: usize = 64;

/// A datagram diverted from QUIC: STUN or rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Who sent it.
    pub from: SocketAddr,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// What a datagram is, by its first byte and whether it came from a TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// STUN (and TURN control messages, which are STUN).
    Stun,
    /// fybrk rendezvous or probe message.
    Rendezvous,
    /// TURN ChannelData (only from a TURN server).
    ChannelData,
    /// Everything else is handed to quinn.
    Quic,
}

/// Classifies a datagram by its first byte (RFC 7983/9443); see the module documentation.
pub fn classify(first_byte: u8, from_turn_server: bool) -> DatagramKind {
    match first_byte {
        0..=3 => DatagramKind::Stun,
        0x20..=0x3F => DatagramKind::Rendezvous,
        0x40..=0x4F if from_turn_server => DatagramKind::ChannelData,
        _ => DatagramKind::Quic,
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// The socket's reader task needs a tokio runtime.
    #[error("the UDP socket must be created from inside a tokio runtime")]
    NoRuntime,
    /// The address could not be bound.
    #[error("cannot bind a UDP socket on {addr}: {source} (is another program using that port?)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS's reason.
        source: io::Error,
    },
    /// The socket could not be configured.
    #[error("cannot set up the UDP socket: {0}")]
    Socket(#[source] io::Error),
    /// A QUIC endpoint already reads this socket.
    #[error("a QUIC endpoint already runs on this socket; drop it before starting another")]
    QuinnAttached,
}

/// Where datagrams to one address go instead: through a TURN server to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRoute {
    /// The TURN server's address.
    pub server: SocketAddr,
    /// The peer's own address, as the TURN server sees it.
    pub peer: SocketAddr,
    /// The channel bound to the peer on that server; until there is one, Send indications.
    pub channel: Option<u16>,
}

/// Whether `ip` is only meaningful on a local network: private, shared (CGNAT), loopback or
/// link-local.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || (a == 100 && b & 0xC0 == 64)
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback() || first & 0xFE00 == 0xFC00 || first & 0xFFC0 == 0xFE80
        }
    }
}

/// Whether `addr` is a relay alias: a peer that reached this device through its TURN relay
/// (see "Relay routing"). [`MuxSocket::relay_route`] has the peer's real address.
pub fn is_relay_alias(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V4(ip) if ip.octets()[0] == ALIAS_NET)
}

/// Counters since the socket was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuxStats {
    /// QUIC datagrams that arrived as ChannelData through a TURN relay.
    pub relayed_rx: u64,
    /// QUIC datagrams sent as ChannelData through a TURN relay.
    pub relayed_tx: u64,
    /// STUN messages received.
    pub stun_rx: u64,
    /// Rendezvous messages received.
    pub rendezvous_rx: u64,
    /// Datagrams dropped: a full or closed consumer queue, QUIC with no endpoint attached,
    /// ChannelData on an unknown channel.
    pub dropped: u64,
}

/// The one UDP socket of a daemon, shared by QUIC, STUN, TURN and rendezvous. Cheap to clone;
/// the socket lives while a clone or the attached QUIC endpoint does.
#[derive(Clone)]
pub struct MuxSocket {
    owner: Arc<Owner>,
}

/// Dropping the last [`MuxSocket`] clone stops the pump; an attached quinn keeps the socket.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.reader.send_modify(|r| r.handles = false);
    }
}

/// Who may read the socket now (see "Who reads the socket").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReaderState {
    /// A quinn endpoint is attached and reads.
    quinn: bool,
    /// Some [`MuxSocket`] clone is alive; without one the pump has nobody to serve.
    handles: bool,
}

struct Shared {
    io: tokio::net::UdpSocket,
    udp: UdpSocketState,
    routes: RwLock<Routes>,
    /// Whether any TURN server is registered: lets the QUIC path skip the route lock entirely
    /// when no relay is in use.
    relaying: AtomicBool,
    waiters: Mutex<HashMap<[u8; 12], Waiter>>,
    stun_tx: mpsc::Sender<Datagram>,
    rendezvous_tx: mpsc::Sender<Datagram>,
    stun_rx: Mutex<Option<mpsc::Receiver<Datagram>>>,
    rendezvous_rx: Mutex<Option<mpsc::Receiver<Datagram>>>,
    pending: Mutex<Pending>,
    reader: watch::Sender<ReaderState>,
    stats: Counters,
    /// Transaction ids of Send indications.
    indications: AtomicU64,
}

#[derive(Default)]
struct Routes {
    /// TURN servers, each with where to ask for a channel to a peer.
    servers: HashMap<SocketAddr, mpsc::Sender<SocketAddr>>,
    /// Address (as consumers see it) -> route.
    by_addr: HashMap<SocketAddr, RelayRoute>,
    /// (server, channel) -> address.
    by_channel: HashMap<(SocketAddr, u16), SocketAddr>,
    /// (server, peer) -> address.
    by_peer: HashMap<(SocketAddr, SocketAddr), SocketAddr>,
    /// Everything goes through this server (see "Relay routing").
    relay_all: Option<SocketAddr>,
    /// While relaying everything, the one address still tried directly (to find out whether
    /// UDP gets through again; see [`MuxSocket::set_probe_direct`]).
    probe_direct: Option<SocketAddr>,
    learned: u32,
    next_alias: u32,
}

impl Routes {
    fn insert(&mut self, addr: SocketAddr, route: RelayRoute) {
        self.remove(addr);
        if let Some(channel) = route.channel {
            self.by_channel.insert((route.server, channel), addr);
        }
        self.by_peer.insert((route.server, route.peer), addr);
        self.by_addr.insert(addr, route);
    }

    fn remove(&mut self, addr: SocketAddr) -> Option<RelayRoute> {
        let old = self.by_addr.remove(&addr)?;
        if let Some(channel) = old.channel {
            self.by_channel.remove(&(old.server, channel));
        }
        self.by_peer.remove(&(old.server, old.peer));
        Some(old)
    }

    /// Adds a route for `peer` through `server` under `addr` (a fresh alias if `None`) and asks
    /// for a channel to it. `None` if the learned routes are full.
    fn learn(
        &mut self,
        server: SocketAddr,
        peer: SocketAddr,
        addr: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        if self.learned >= MAX_LEARNED {
            return None;
        }
        let addr = match addr {
            Some(a) => a,
            None => loop {
                self.next_alias = self.next_alias.wrapping_add(1) & 0x00FF_FFFF;
                let [_, a, b, c] = self.next_alias.to_be_bytes();
                let alias = SocketAddr::new(Ipv4Addr::new(ALIAS_NET, a, b, c).into(), peer.port());
                if self.next_alias != 0 && !self.by_addr.contains_key(&alias) {
                    break alias;
                }
            },
        };
        self.learned += 1;
        self.insert(
            addr,
            RelayRoute {
                server,
                peer,
                channel: None,
            },
        );
        if let Some(binds) = self.servers.get(&server) {
            // A full queue only delays the channel: Send indications work meanwhile.
            let _ = binds.try_send(peer);
        }
        Some(addr)
    }
}

/// How a send treats tokio's readiness tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reactor {
    /// quinn's sends: `WouldBlock` clears the readiness, so quinn's poller waits for writable.
    Track,
    /// One-off sends that never wait ([`MuxSocket::try_send_to`]): straight to the socket.
    /// tokio reports `WouldBlock` until its reactor has seen the socket writable once, which
    /// would lose the first rendezvous message of a fresh socket.
    Bypass,
}

/// A STUN transaction waiting for its response.
struct Waiter {
    from: SocketAddr,
    tx: oneshot::Sender<Datagram>,
}

/// QUIC datagrams split out of a mixed GRO buffer, waiting for quinn's next `poll_recv`.
#[derive(Default)]
struct Pending {
    queue: VecDeque<Queued>,
    pool: Vec<Vec<u8>>,
    waker: Option<Waker>,
}

struct Queued {
    from: SocketAddr,
    dst_ip: Option<IpAddr>,
    data: Vec<u8>,
}

#[derive(Default)]
struct Counters {
    relayed_rx: AtomicU64,
    relayed_tx: AtomicU64,
    stun_rx: AtomicU64,
    rendezvous_rx: AtomicU64,
    dropped: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

// A panic while holding one of these locks leaves plain data (maps, queues) that is still
// consistent, so poisoning is ignored rather than spread.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl MuxSocket {
    /// Binds a UDP socket on `addr` (port 0 for any). Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> Result<MuxSocket, MuxError> {
        tokio::runtime::Handle::try_current().map_err(|_| MuxError::NoRuntime)?;
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| MuxError::Bind { addr, source })?;
        Self::from_std(socket)
    }

    /// Takes over an already bound UDP socket. Must be called inside a tokio runtime.
    pub fn from_std(socket: std::net::UdpSocket) -> Result<MuxSocket, MuxError> {
        tokio::runtime::Handle::try_current().map_err(|_| MuxError::NoRuntime)?;
        socket.set_nonblocking(true).map_err(MuxError::Socket)?;
        // Sets what quinn's stock socket sets: GRO, ECN and destination-address reporting,
        // no IP fragmentation.
        let udp = UdpSocketState::new((&socket).into()).map_err(MuxError::Socket)?;
        let io = tokio::net::UdpSocket::from_std(socket).map_err(MuxError::Socket)?;
        let (stun_tx, stun_rx) = mpsc::channel(DIVERT_QUEUE);
        let (rendezvous_tx, rendezvous_rx) = mpsc::channel(DIVERT_QUEUE);
        let (reader, _) = watch::channel(ReaderState {
            quinn: false,
            handles: true,
        });
        let shared = Arc::new(Shared {
            io,
            udp,
            routes: RwLock::new(Routes::default()),
            relaying: AtomicBool::new(false),
            waiters: Mutex::new(HashMap::new()),
            stun_tx,
            rendezvous_tx,
            stun_rx: Mutex::new(Some(stun_rx)),
            rendezvous_rx: Mutex::new(Some(rendezvous_rx)),
            pending: Mutex::new(Pending::default()),
            reader,
            stats: Counters::default(),
            indications: AtomicU64::new(0),
        });
        tokio::spawn(pump(Arc::clone(&shared)));
        Ok(MuxSocket {
            owner: Arc::new(Owner { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared().io.local_addr()
    }

    /// The socket as quinn sees it, for [`fybrk_link::transport::Transport::bind_with`]. One QUIC
    /// endpoint at a time: it becomes the socket's reader until it lets go of the socket.
    pub fn quinn_socket(&self) -> Result<Arc<dyn quinn::AsyncUdpSocket>, MuxError> {
        let mut attached = false;
        self.shared().reader.send_if_modified(|r| {
            if r.quinn {
                return false;
            }
            r.quinn = true;
            attached = true;
            true
        });
        if !attached {
            return Err(MuxError::QuinnAttached);
        }
        Ok(Arc::new(QuinnSocket {
            shared: Arc::clone(self.shared()),
        }))
    }

    /// Sends one datagram as is (STUN, TURN control, rendezvous, probes): never wrapped for a
    /// relay.
    pub async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        self.shared().io.send_to(data, to).await.map(|_| ())
    }

    /// STUN messages that no transaction of ours waits for (e.g. requests from peers). Can be
    /// taken once; until then, and after the receiver is dropped, such messages are dropped
    /// once [`DIVERT_QUEUE`] of them wait.
    pub fn take_stun_receiver(&self) -> Option<mpsc::Receiver<Datagram>> {
        lock(&self.shared().stun_rx).take()
    }

    /// Rendezvous and probe messages (first byte in [`RENDEZVOUS_FIRST_BYTES`]). Can be taken
    /// once.
    pub fn take_rendezvous_receiver(&self) -> Option<mpsc::Receiver<Datagram>> {
        lock(&self.shared().rendezvous_rx).take()
    }

    /// Counters since the socket was created.
    pub fn stats(&self) -> MuxStats {
        let c = &self.shared().stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MuxStats {
            relayed_rx: get(&c.relayed_rx),
            relayed_tx: get(&c.relayed_tx),
            stun_rx: get(&c.stun_rx),
            rendezvous_rx: get(&c.rendezvous_rx),
            dropped: get(&c.dropped),
        }
    }

    /// Starts waiting for the STUN response with transaction id `tid` from `from`. Register
    /// before sending the request, so a fast answer cannot be missed.
    pub(crate) fn expect_stun_reply(&self, tid: [u8; 12], from: SocketAddr) -> StunWaiter {
        let (tx, rx) = oneshot::channel();
        lock(&self.shared().waiters).insert(tid, Waiter { from, tx });
        StunWaiter {
            rx,
            tid,
            shared: Arc::clone(self.shared()),
        }
    }

    /// Treats datagrams from `server` as coming from a TURN server (ChannelData and Data
    /// indications recognised). The receiver gets the peers that need a channel on it: peers
    /// of learned routes, and new destinations while relaying everything.
    pub(crate) fn add_turn_server(&self, server: SocketAddr) -> mpsc::Receiver<SocketAddr> {
        let (tx, rx) = mpsc::channel(BIND_QUEUE);
        write(&self.shared().routes).servers.insert(server, tx);
        self.shared().relaying.store(true, Ordering::Release);
        rx
    }

    /// Forgets `server` and every route through it.
    pub(crate) fn remove_turn_server(&self, server: SocketAddr) {
        let mut routes = write(&self.shared().routes);
        routes.servers.remove(&server);
        let gone: Vec<SocketAddr> = routes
            .by_addr
            .iter()
            .filter(|(_, r)| r.server == server)
            .map(|(a, _)| *a)
            .collect();
        for addr in gone {
            routes.remove(addr);
        }
        if routes.relay_all == Some(server) {
            routes.relay_all = None;
        }
        routes.learned = 0;
        self.shared()
            .relaying
            .store(!routes.servers.is_empty(), Ordering::Release);
    }

    /// Sends datagrams for `addr` through `route`, and delivers what arrives on it as coming
    /// from `addr`.
    pub(crate) fn route_via_relay(&self, addr: SocketAddr, route: RelayRoute) {
        write(&self.shared().routes).insert(addr, route);
    }

    /// Sends datagrams for `addr` directly again.
    pub(crate) fn unroute(&self, addr: SocketAddr) {
        write(&self.shared().routes).remove(addr);
    }

    /// A channel to `peer` on `server` is bound: the route to it uses ChannelData from now on.
    pub(crate) fn channel_bound(&self, server: SocketAddr, peer: SocketAddr, channel: u16) {
        let mut routes = write(&self.shared().routes);
        if let Some(&addr) = routes.by_peer.get(&(server, peer)) {
            if let Some(route) = routes.by_addr.get(&addr).copied() {
                routes.insert(
                    addr,
                    RelayRoute {
                        channel: Some(channel),
                        ..route
                    },
                );
            }
        }
    }

    /// No channel to `peer` on `server` could be bound: forget a learned route to it that has
    /// none (the next datagram to or from the peer asks again).
    pub(crate) fn channel_failed(&self, server: SocketAddr, peer: SocketAddr) {
        let mut routes = write(&self.shared().routes);
        if let Some(&addr) = routes.by_peer.get(&(server, peer)) {
            if routes
                .by_addr
                .get(&addr)
                .is_some_and(|r| r.channel.is_none())
            {
                routes.remove(addr);
                routes.learned = routes.learned.saturating_sub(1);
            }
        }
    }

    /// Sends every datagram to an address other than a TURN server through the TURN server
    /// `server` (registered by a [`crate::turn::TurnClient`]), or, with `None`, directly again.
    /// For networks that block all UDP but the TURN server's. Leaving the mode drops the routes
    /// it made (those under a peer's real address), so those peers are reached directly again.
    pub fn set_relay_all(&self, server: Option<SocketAddr>) {
        let mut routes = write(&self.shared().routes);
        if server.is_some_and(|s| !routes.servers.contains_key(&s)) {
            warn!(server = ?server, "relaying everything needs a TURN allocation on that server");
            return;
        }
        if server.is_none() && routes.relay_all.is_some() {
            let own: Vec<SocketAddr> = routes
                .by_addr
                .iter()
                .filter(|(addr, r)| **addr == r.peer)
                .map(|(addr, _)| *addr)
                .collect();
            for addr in own {
                routes.remove(addr);
                routes.learned = routes.learned.saturating_sub(1);
            }
        }
        routes.relay_all = server;
        routes.probe_direct = None;
    }

    /// While relaying everything, sends to `addr` directly after all (`None`: relayed again),
    /// without touching any route: a datagram to the rendezvous server that gets an answer
    /// this way shows the network lets UDP through again.
    pub fn set_probe_direct(&self, addr: Option<SocketAddr>) {
        write(&self.shared().routes).probe_direct = addr;
    }

    /// The TURN server everything goes through, if [`set_relay_all`](Self::set_relay_all) set
    /// one.
    pub fn relay_all(&self) -> Option<SocketAddr> {
        read(&self.shared().routes).relay_all
    }

    /// The route datagrams to `addr` take, if they go through a relay.
    pub fn relay_route(&self, addr: SocketAddr) -> Option<RelayRoute> {
        read(&self.shared().routes).by_addr.get(&addr).copied()
    }

    /// Sends one datagram now, through the relay if a route says so (rendezvous messages and
    /// probes, which must take the same path as QUIC). Never waits: `WouldBlock` if the socket
    /// is full, like any lost datagram.
    pub fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip: None,
        };
        self.shared().send(&transmit, Reactor::Bypass)
    }
}

impl fmt::Debug for MuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxSocket")
            .field("local_addr", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// Waits for one STUN response; unregisters itself when dropped.
pub(crate) struct StunWaiter {
    rx: oneshot::Receiver<Datagram>,
    tid: [u8; 12],
    shared: Arc<Shared>,
}

impl StunWaiter {
    /// The response, or `None` if the socket went away.
    pub(crate) async fn recv(&mut self) -> Option<Datagram> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for StunWaiter {
    fn drop(&mut self) {
        lock(&self.shared.waiters).remove(&self.tid);
    }
}

/// Reads the socket while no quinn endpoint does.
async fn pump(shared: Arc<Shared>) {
    let mut state = shared.reader.subscribe();
    let mut buf = vec![0u8; PUMP_BUF];
    loop {
        let now = *state.borrow_and_update();
        if !now.handles {
            return;
        }
        if now.quinn {
            // quinn reads; wake up again when it lets go (or the socket is dropped).
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            ready = shared.io.readable() => match ready {
                Ok(()) => shared.pump_batch(&mut buf),
                Err(e) => {
                    warn!("UDP socket unusable, STUN/TURN receive stops: {e}");
                    return;
                }
            },
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

impl Shared {
    /// Reads what is waiting (up to [`PUMP_BATCH`] datagrams) and dispatches it.
    fn pump_batch(&self, buf: &mut [u8]) {
        for _ in 0..PUMP_BATCH {
            let mut meta = [RecvMeta::default()];
            let received = {
                let mut bufs = [IoSliceMut::new(buf)];
                self.io.try_io(Interest::READABLE, || {
                    self.udp.recv((&self.io).into(), &mut bufs, &mut meta)
                })
            };
            match received {
                Ok(0) => {}
                Ok(_) => {
                    let mut meta = meta[0];
                    if self.demux(buf, &mut meta) {
                        // QUIC, but quinn is not reading: unless it attached a moment ago,
                        // nobody wants it (the peer retransmits once quinn runs).
                        self.queue_for_quinn(meta.addr, meta.dst_ip, &buf[..meta.len]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // E.g. ECONNREFUSED from an ICMP error: consumed by this read, so try again.
                Err(e) => trace!("UDP receive error: {e}"),
            }
        }
    }

    /// Classifies one received buffer (one datagram, or several GRO segments of one source)
    /// and sends what is not for quinn where it belongs. Returns whether the buffer, possibly
    /// rewritten in place (`meta` adjusted), is for quinn.
    fn demux(&self, buf: &mut [u8], meta: &mut RecvMeta) -> bool {
        let len = meta.len.min(buf.len());
        if len == 0 {
            return false;
        }
        let stride = if meta.stride == 0 || meta.stride > len {
            len
        } else {
            meta.stride
        };
        let from_turn = self.relaying.load(Ordering::Acquire)
            && read(&self.routes).servers.contains_key(&meta.addr);
        if !from_turn {
            if buf[..len]
                .chunks(stride)
                .all(|seg| classify(seg[0], false) == DatagramKind::Quic)
            {
                return true;
            }
        } else if self.unwrap_in_place(buf, len, stride, meta) {
            return true;
        }
        self.split(&buf[..len], stride, meta, from_turn);
        false
    }

    /// Unwraps a buffer of ChannelData segments, all on one channel and (but the last) all
    /// full, in place: each payload moves to where an unwrapped GRO buffer would have it.
    fn unwrap_in_place(
        &self,
        buf: &mut [u8],
        len: usize,
        stride: usize,
        meta: &mut RecvMeta,
    ) -> bool {
        let segments = len.div_ceil(stride);
        let mut channel = None;
        for (k, seg) in buf[..len].chunks(stride).enumerate() {
            if classify(seg[0], true) != DatagramKind::ChannelData {
                return false;
            }
            let Ok((ch, payload)) = channel_data_header(seg) else {
                return false;
            };
            let full = payload + CHANNEL_DATA_HEADER == stride;
            if payload == 0
                || classify(seg[CHANNEL_DATA_HEADER], false) != DatagramKind::Quic
                || channel.is_some_and(|c| c != ch)
                || (k + 1 < segments && !full)
            {
                return false;
            }
            channel = Some(ch);
        }
        let Some(channel) = channel else {
            return false;
        };
        let Some(peer) = read(&self.routes)
            .by_channel
            .get(&(meta.addr, channel))
            .copied()
        else {
            return false;
        };
        let new_stride = stride - CHANNEL_DATA_HEADER;
        let mut out = 0;
        for k in 0..segments {
            let start = k * stride;
            let end = (start + stride).min(len);
            let Ok((_, payload)) = channel_data_header(&buf[start..end]) else {
                return false; // checked above
            };
            let from = start + CHANNEL_DATA_HEADER;
            // Destinations never overtake sources (`out <= start`), and copy_within allows
            // overlap.
            buf.copy_within(from..from + payload, out);
            out += payload;
        }
        bump(&self.stats.relayed_rx, segments as u64);
        meta.addr = peer;
        meta.len = out;
        meta.stride = if segments == 1 { out } else { new_stride };
        true
    }

    /// The slow path: handles each segment on its own; QUIC goes through the pending queue.
    fn split(&self, buf: &[u8], stride: usize, meta: &RecvMeta, from_turn: bool) {
        for seg in buf.chunks(stride) {
            match classify(seg[0], from_turn) {
                DatagramKind::Stun => match parse_data_indication(seg).filter(|_| from_turn) {
                    Some((peer, payload)) => match self.learned_addr(meta.addr, peer) {
                        Some(addr) => self.deliver_relayed(addr, meta.dst_ip, payload),
                        None => bump(&self.stats.dropped, 1),
                    },
                    None => self.divert_stun(meta.addr, seg),
                },
                DatagramKind::Rendezvous => {
                    bump(&self.stats.rendezvous_rx, 1);
                    self.forward(&self.rendezvous_tx, meta.addr, seg, "rendezvous");
                }
                DatagramKind::ChannelData => {
                    let Ok((channel, payload)) = decode_channel_data(seg) else {
                        debug!(from = %meta.addr, "dropping malformed ChannelData");
                        bump(&self.stats.dropped, 1);
                        continue;
                    };
                    let addr = read(&self.routes)
                        .by_channel
                        .get(&(meta.addr, channel))
                        .copied();
                    match addr {
                        Some(addr) => self.deliver_relayed(addr, meta.dst_ip, payload),
                        None => {
                            trace!(from = %meta.addr, channel, "ChannelData on an unknown channel");
                            bump(&self.stats.dropped, 1);
                        }
                    }
                }
                DatagramKind::Quic => self.queue_for_quinn(meta.addr, meta.dst_ip, seg),
            }
        }
    }

    /// Sorts a datagram that came through a relay by its own first byte, as from `addr`.
    fn deliver_relayed(&self, addr: SocketAddr, dst_ip: Option<IpAddr>, payload: &[u8]) {
        let Some(&first) = payload.first() else {
            bump(&self.stats.dropped, 1);
            return;
        };
        match classify(first, false) {
            DatagramKind::Stun => self.divert_stun(addr, payload),
            DatagramKind::Rendezvous => {
                bump(&self.stats.rendezvous_rx, 1);
                self.forward(&self.rendezvous_tx, addr, payload, "rendezvous");
            }
            DatagramKind::ChannelData | DatagramKind::Quic => {
                bump(&self.stats.relayed_rx, 1);
                self.queue_for_quinn(addr, dst_ip, payload);
            }
        }
    }

    /// The address a peer that sent to our relayed address on `server` is presented under:
    /// its route's, or a new learned one (see "Relay routing"). `None` if no more can be
    /// learned.
    fn learned_addr(&self, server: SocketAddr, peer: SocketAddr) -> Option<SocketAddr> {
        if let Some(addr) = read(&self.routes).by_peer.get(&(server, peer)) {
            return Some(*addr);
        }
        let mut routes = write(&self.routes);
        if let Some(addr) = routes.by_peer.get(&(server, peer)) {
            return Some(*addr);
        }
        // Relaying everything, nothing arrives directly: the real address is unambiguous.
        let addr = (routes.relay_all == Some(server)).then_some(peer);
        let learned = routes.learn(server, peer, addr);
        if learned.is_none() {
            warn!(%peer, "too many peers reached us through the relay; not answering this one");
        }
        learned
    }

    /// Hands a STUN message to the transaction waiting for it, else to the STUN receiver.
    fn divert_stun(&self, from: SocketAddr, data: &[u8]) {
        bump(&self.stats.stun_rx, 1);
        let waiter = {
            let mut waiters = lock(&self.waiters);
            let tid = (data.len() >= STUN_HEADER && data[4..8] == STUN_COOKIE)
                .then(|| <[u8; 12]>::try_from(&data[TID]).ok())
                .flatten();
            match tid {
                Some(tid) => match waiters.get(&tid) {
                    Some(w) if w.from == from => waiters.remove(&tid),
                    _ => None,
                },
                // Too short or mangled to carry a transaction id: give it to a transaction
                // waiting on that server, so the client can report a broken server instead of
                // timing out.
                None => {
                    let key = waiters
                        .iter()
                        .find(|(_, w)| w.from == from)
                        .map(|(k, _)| *k);
                    key.and_then(|k| waiters.remove(&k))
                }
            }
        };
        let datagram = Datagram {
            from,
            data: data.to_vec(),
        };
        match waiter {
            Some(w) => {
                // The transaction may have given up a moment ago; then nobody needs it.
                let _ = w.tx.send(datagram);
            }
            None => self.forward(&self.stun_tx, from, data, "STUN"),
        }
    }

    fn forward(&self, tx: &mpsc::Sender<Datagram>, from: SocketAddr, data: &[u8], what: &str) {
        let datagram = Datagram {
            from,
            data: data.to_vec(),
        };
        if tx.try_send(datagram).is_err() {
            trace!(%from, "dropping {what} datagram: nobody is reading, or the queue is full");
            bump(&self.stats.dropped, 1);
        }
    }

    /// Queues a QUIC datagram for quinn's next `poll_recv`, if quinn is attached.
    fn queue_for_quinn(&self, from: SocketAddr, dst_ip: Option<IpAddr>, data: &[u8]) {
        if !self.reader.borrow().quinn {
            trace!(%from, "dropping QUIC datagram: no QUIC endpoint runs on this socket");
            bump(&self.stats.dropped, 1);
            return;
        }
        let waker = {
            let mut pending = lock(&self.pending);
            if pending.queue.len() >= PENDING_MAX {
                drop(pending);
                bump(&self.stats.dropped, 1);
                return;
            }
            let mut buf = pending.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(data);
            pending.queue.push_back(Queued {
                from,
                dst_ip,
                data: buf,
            });
            pending.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves queued datagrams into quinn's buffers; registers `waker` for later pushes.
    fn take_pending(
        &self,
        waker: &Waker,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> usize {
        let mut pending = lock(&self.pending);
        if !pending.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            pending.waker = Some(waker.clone());
        }
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some(item) = pending.queue.pop_front() else {
                break;
            };
            let len = item.data.len();
            // quinn's buffers hold the largest UDP payload; a queued datagram always fits.
            if len <= bufs[n].len() {
                bufs[n][..len].copy_from_slice(&item.data);
                meta[n] = RecvMeta {
                    addr: item.from,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip: item.dst_ip,
                };
                n += 1;
            }
            if pending.pool.len() < POOL_MAX {
                pending.pool.push(item.data);
            }
        }
        n
    }

    /// Classifies a batch quinn received; moves what stays for quinn to the front. Returns how
    /// many buffers quinn gets.
    fn demux_batch(&self, bufs: &mut [IoSliceMut<'_>], metas: &mut [RecvMeta]) -> usize {
        let mut kept = 0;
        for i in 0..bufs.len().min(metas.len()) {
            let mut meta = metas[i];
            if self.demux(&mut bufs[i], &mut meta) {
                // quinn reads `bufs[k]` with `metas[k]`: swapping the slices moves a buffer
                // without copying it.
                bufs.swap(kept, i);
                metas[kept] = meta;
                kept += 1;
            }
        }
        kept
    }

    /// Sends a datagram (or GSO batch) directly, or through the relay its route names.
    fn send(&self, transmit: &Transmit<'_>, reactor: Reactor) -> io::Result<()> {
        if self.relaying.load(Ordering::Acquire) {
            if let Some(route) = self.route_for(transmit.destination) {
                return self.send_relayed(route, transmit, reactor);
            }
        }
        if is_relay_alias(transmit.destination) {
            // Its route went with its TURN server: lost, like any datagram.
            bump(&self.stats.dropped, 1);
            return Ok(());
        }
        self.send_now(transmit, reactor)
    }

    fn send_now(&self, transmit: &Transmit<'_>, reactor: Reactor) -> io::Result<()> {
        match reactor {
            Reactor::Track => self.io.try_io(Interest::WRITABLE, || {
                self.udp.send((&self.io).into(), transmit)
            }),
            Reactor::Bypass => self.udp.send((&self.io).into(), transmit),
        }
    }

    /// The route to `to`; while relaying everything, a new one for a new destination.
    fn route_for(&self, to: SocketAddr) -> Option<RelayRoute> {
        {
            let routes = read(&self.routes);
            if routes.probe_direct == Some(to) {
                return None;
            }
            if let Some(route) = routes.by_addr.get(&to) {
                return Some(*route);
            }
            if routes.relay_all.is_none() || routes.servers.contains_key(&to) {
                return None;
            }
        }
        let mut routes = write(&self.routes);
        let server = routes.relay_all?;
        if is_local(to.ip()) && !is_local(server.ip()) {
            // A LAN peer is reached directly (the relay could not reach it anyway; coturn even
            // stops relaying for an allocation whose peer turns out unreachable).
            return None;
        }
        if !routes.by_addr.contains_key(&to) {
            routes.learn(server, to, Some(to))?;
        }
        routes.by_addr.get(&to).copied()
    }

    /// Sends datagrams for a relayed peer to the TURN server: as ChannelData on the route's
    /// channel, else as Send indications.
    fn send_relayed(
        &self,
        route: RelayRoute,
        transmit: &Transmit<'_>,
        reactor: Reactor,
    ) -> io::Result<()> {
        thread_local! {
            // One scratch buffer per thread: wrapping needs no allocation in steady state and no
            // lock between connections sending from different threads.
            static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        if segment + SEND_OVERHEAD > usize::from(u16::MAX) {
            // Cannot happen with quinn's packet sizes; dropped like quinn-udp drops a datagram
            // the OS refuses, since an error here would end the connection.
            debug!(peer = %transmit.destination, "datagram too large for a TURN relay");
            return Ok(());
        }
        let Some(channel) = route.channel else {
            return SCRATCH.with(|scratch| {
                let mut out = scratch.borrow_mut();
                for payload in transmit.contents.chunks(segment) {
                    out.clear();
                    let n = self.indications.fetch_add(1, Ordering::Relaxed);
                    let mut tid = [0u8; 12];
                    tid[4..].copy_from_slice(&n.to_be_bytes());
                    push_send_indication(route.peer, payload, tid, &mut out);
                    let wrapped = Transmit {
                        destination: route.server,
                        ecn: None,
                        contents: &out,
                        segment_size: None,
                        src_ip: transmit.src_ip,
                    };
                    self.send_now(&wrapped, reactor)?;
                    bump(&self.stats.relayed_tx, 1);
                }
                Ok(())
            });
        };
        SCRATCH.with(|scratch| {
            let mut out = scratch.borrow_mut();
            out.clear();
            let mut segments = 0;
            for payload in transmit.contents.chunks(segment) {
                // Checked above: every segment fits the 16-bit length.
                let len = payload.len() as u16;
                push_channel_data(channel, len, payload, &mut out);
                segments += 1;
            }
            let wrapped = Transmit {
                destination: route.server,
                // The relay does not carry ECN marks on to the peer.
                ecn: None,
                contents: &out,
                segment_size: transmit.segment_size.map(|s| s + CHANNEL_DATA_HEADER),
                src_ip: transmit.src_ip,
            };
            let sent = self.send_now(&wrapped, reactor);
            if sent.is_ok() {
                bump(&self.stats.relayed_tx, segments);
            }
            sent
        })
    }
}

#[cfg(test)]
mod tests;
