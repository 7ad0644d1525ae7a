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
//!
//! # Address families
//!
//! The socket may be a dual-stack IPv6 one (the daemon's default, `[::]`): IPv4 peers then
//! arrive as IPv4-mapped addresses. The mux hands out and takes only canonical addresses
//! (plain IPv4 for IPv4 peers, [`canonical`]), and quinn alone sees the socket's family; see
//! `family`.

//! # Layout
//!
//! - `family`: the dual-stack socket and canonical (plain IPv4) addresses.
//! - `demux`: sorting by first byte ([`classify`]) and handing datagrams to their consumers.
//! - `gro`: GRO buffers from a TURN server: unwrapped in place, or split segment by segment.
//! - `pending`: QUIC datagrams split out of a buffer, queued for quinn's next read.
//! - `waiters`: STUN/TURN transactions waiting for their responses.
//! - `routes`: relay routes, aliases, relaying everything.
//! - `send`: direct and relayed sending (ChannelData, Send indications).
//! - `pump`: the reader while quinn does not read; `quinn_side`: quinn's view of the socket.
//! - `channel_data`, `indication`: TURN's data framings.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use quinn::udp::{Transmit, UdpSocketState};
use tokio::sync::{mpsc, watch};

mod channel_data;
mod demux;
mod family;
mod gro;
mod indication;
mod pending;
mod pump;
mod quinn_side;
mod routes;
mod send;
mod ttl;
mod waiters;

pub use channel_data::{
    decode_channel_data, encode_channel_data, ChannelDataError, CHANNEL_DATA_HEADER,
    CHANNEL_NUMBERS,
};
pub use demux::{classify, DatagramKind, RENDEZVOUS_FIRST_BYTES, STUN_FIRST_BYTES};
pub use family::{bind_udp, canonical, dual_stack, is_no_ipv6};
use pending::Pending;
use quinn_side::QuinnSocket;
use routes::Routes;
pub use routes::{is_relay_alias, RelayRoute};
use send::Reactor;
pub(crate) use waiters::TurnReplies;
use waiters::{TurnSinks, Waiter};

/// Diverted datagrams (STUN, rendezvous) waiting for their consumer. These are control messages,
/// a few per second; 256 absorbs a burst while the consumer is busy and bounds the memory a
/// flood can pin. Past it, datagrams are dropped (their senders retransmit).
const DIVERT_QUEUE: usize = 256;

/// A datagram diverted from QUIC: STUN or rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Who sent it.
    pub from: SocketAddr,
    /// Its bytes.
    pub data: Vec<u8>,
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
    /// Per TURN server, where its STUN messages go that no transaction waits for.
    turn_sinks: Mutex<TurnSinks>,
    stun_tx: mpsc::Sender<Datagram>,
    rendezvous_tx: mpsc::Sender<Datagram>,
    stun_rx: Mutex<Option<mpsc::Receiver<Datagram>>>,
    rendezvous_rx: Mutex<Option<mpsc::Receiver<Datagram>>>,
    pending: Mutex<Pending>,
    reader: watch::Sender<ReaderState>,
    stats: Counters,
    /// Transaction ids of Send indications.
    indications: AtomicU64,
    /// The socket is of the IPv6 family: IPv4 destinations leave as mapped addresses, and
    /// quinn sees IPv4 peers in that form.
    v6: bool,
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
    /// Binds a UDP socket on `addr` (port 0 for any; `[::]` is dual stack, see [`bind_udp`]).
    /// Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> Result<MuxSocket, MuxError> {
        tokio::runtime::Handle::try_current().map_err(|_| MuxError::NoRuntime)?;
        let socket = bind_udp(addr).map_err(|source| MuxError::Bind { addr, source })?;
        Self::from_std(socket)
    }

    /// Takes over an already bound UDP socket. Must be called inside a tokio runtime.
    pub fn from_std(socket: std::net::UdpSocket) -> Result<MuxSocket, MuxError> {
        tokio::runtime::Handle::try_current().map_err(|_| MuxError::NoRuntime)?;
        socket.set_nonblocking(true).map_err(MuxError::Socket)?;
        let v6 = socket.local_addr().map_err(MuxError::Socket)?.is_ipv6();
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
            turn_sinks: Mutex::new(TurnSinks::default()),
            stun_tx,
            rendezvous_tx,
            stun_rx: Mutex::new(Some(stun_rx)),
            rendezvous_rx: Mutex::new(Some(rendezvous_rx)),
            pending: Mutex::new(Pending::default()),
            reader,
            stats: Counters::default(),
            indications: AtomicU64::new(0),
            v6,
        });
        tokio::spawn(pump::pump(Arc::clone(&shared)));
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

    /// Whether the socket can send to `addr`: an IPv4 socket reaches IPv4 only; an IPv6 one
    /// (dual stack by default) both families.
    pub fn reaches(&self, addr: SocketAddr) -> bool {
        self.shared().v6 || canonical(addr).is_ipv4()
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
        let to = family::in_family(canonical(to), self.shared().v6);
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;
