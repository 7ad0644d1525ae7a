//! The daemon's network side: this device's QUIC endpoint, its paired devices, pairing, and one
//! replication task per connected peer.
//!
//! # Connections
//!
//! Every paired device is dialled (its remembered addresses, with backoff and jitter) while no
//! connection to it is up, and every paired device may dial us. When both succeed at once, each
//! side keeps the connection dialled by the device with the smaller id and closes the other, so
//! both agree without talking. A connection runs [`run_peer`] on the current store until it
//! fails; the dialler then tries again at once (and backs off if connections keep failing).
//!
//! # Local changes
//!
//! The store tells every commit to a watcher ([`commit_watcher`]): the new sequence goes to a
//! `watch` channel every peer task listens on (so a local write, or a record applied from one
//! peer, reaches the others at once), and the paths of records that came from peers go to the
//! filesystem's invalidator (the kernel must drop what it caches about them).
//!
//! # Pairing
//!
//! The inviter opens an [`InviterSession`] and a pairing window (unknown devices may complete
//! the TLS handshake, for pairing only) until the invitation is used or expires. The joiner dials
//! the inviter's addresses pinning its id, proves the secret bound to that TLS session, receives
//! the folder key, moves its files into a store of that folder ([`Shared::adopt_folder`]), and
//! only then trusts the inviter, so the first replication runs on the new store.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use fybrk_control::{
    NatStatus, NetworkStatus, PairWaitReply, PairWithReply, PathKind, PeerInfo, PeerRef,
    PeerStatus, PeersReply, Quality, RelayStatus,
};
use fybrk_fs::{Fs, FsError};
use fybrk_net::backoff::Backoff;
use fybrk_net::identity::{DeviceId, DeviceKey};
use fybrk_net::sync::quic_driver::run_peer;
use fybrk_net::sync::store_driver::StoreReplica;
use fybrk_net::sync::Session;
use fybrk_net::tls::{channel_binding, AllowList, PairingWindow};
use fybrk_net::transport::{Admission, Transport, CLOSE_NOT_PAIRED, CLOSE_SHUTDOWN};
use fybrk_pair::{Invitation, InviterSession, JoinRequest, JoinedPeer, JoinerSession, Reply};
use fybrk_store::{CommitWatcher, Committed, FolderKey, Kind, Store, StoreOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify};

use crate::peers::{Peer, PeerBook};
use crate::state::StateDir;

/// The UDP port fybrk listens on unless told otherwise (QUIC; STUN and TURN share it later).
pub const DEFAULT_PORT: u16 = 22100;

/// TLS exporter label binding a pairing proof to one connection.
const PAIR_LABEL: &[u8] = b"EXPORTER-fybrk-pair-v1";

/// How long one dial of one address may take: a QUIC handshake takes one or two round trips,
/// so 3 s leaves room for loss and still moves on quickly to the next way in.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a pairing exchange may take once connected.
const PAIR_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection that lasted this long counts as a success: the next failure starts the
/// backoff from its base again.
const STABLE_LINK: Duration = Duration::from_secs(10);

/// How often sync progress and addresses are written to `peers.json`.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Two connections to one peer set up this close together were dialled at the same time.
const SIMULTANEOUS: Duration = Duration::from_secs(3);

/// Application close code: a second connection to a peer that already has one.
const CLOSE_DUPLICATE: quinn::VarInt = quinn::VarInt::from_u32(2);

/// A relayed link looks for a direct path this long after it came up, then at growing intervals
/// (x1.5) up to [`UPGRADE_MAX`]: the NAT or network that forced the relay may have changed.
const UPGRADE_FIRST: Duration = Duration::from_secs(15);
const UPGRADE_MAX: Duration = Duration::from_secs(300);

/// In relay-everything mode, how often the daemon tries the rendezvous server directly to see
/// whether UDP gets through again, and how long it waits for the answer each time.
const RELAY_ALL_RECHECK: Duration = Duration::from_secs(30);
const RELAY_PROBE_WAIT: Duration = Duration::from_secs(3);

/// How often the LAN addresses given to the rendezvous server are read again (interfaces
/// change when a laptop moves; the server's registrations last 90 s).
const LAN_RESCAN: Duration = Duration::from_secs(20);

/// With a TURN relay, a device whose rendezvous server has not answered this long after start
/// assumes a network that lets UDP through to the TURN server only, and sends everything
/// through the relay.
const RELAY_ALL_AFTER: Duration = Duration::from_secs(3);

/// Chunks copied into a new store before they are written out, when joining a folder.
const ADOPT_FLUSH_CHUNKS: usize = 64;

/// Where the daemon listens.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    /// The address.
    pub addr: SocketAddr,
    /// Given by the user: a busy port is an error, not a reason to pick another.
    pub explicit: bool,
}

/// How the daemon reaches devices that are not on its network.
#[derive(Clone, Debug, Default)]
pub struct Traversal {
    /// `HOST:PORT` of a rendezvous server (`fybrk rendezvous`). Without one, peers are reached
    /// only at the addresses they were last seen at, and no STUN server is asked.
    pub rendezvous: Option<String>,
    /// `--stun` values (empty: `FYBRK_STUN`, else the defaults).
    pub stun: Vec<String>,
    /// `turn:HOST:PORT?user=..&pass=..`: a relay for peers no punch reaches.
    pub turn: Option<String>,
}

impl Default for Listen {
    fn default() -> Listen {
        Listen {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            explicit: false,
        }
    }
}

/// The running network side. Dropping it stops every task.
pub struct Node {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
}

/// One live connection to a peer.
struct Link {
    /// Tells this link from a later one to the same peer.
    generation: u64,
    conn: quinn::Connection,
    /// Dialled by the device with the smaller id: the one both sides keep.
    preferred: bool,
    since: Instant,
    /// Records (and their bytes) announced by the peer and not applied yet.
    pending: (u64, u64),
    /// Nothing in flight either way.
    idle: bool,
    /// UDP bytes in + out, sampled every second (the last few), for the current throughput.
    samples: std::collections::VecDeque<(Instant, u64)>,
    /// Through a TURN relay (ours or the peer's).
    relayed: bool,
}

/// Throughput samples kept per link: the rate shown is over the last this-many seconds.
const RATE_WINDOW: usize = 5;

/// An invitation this device made, while it can still be used.
struct Invite {
    number: u64,
    session: InviterSession,
    /// Lets unknown devices through TLS (for pairing only) while the invitation is open.
    window: Option<PairingWindow>,
}

/// How an invitation ended, for `fybrk pair` waiting on it.
#[derive(Clone, Debug)]
enum InviteOutcome {
    Joined(DeviceId, String),
    Expired,
}

struct Shared {
    state: StateDir,
    /// The one UDP socket: QUIC, STUN and rendezvous datagrams share it (one NAT mapping).
    mux: fybrk_net::mux::MuxSocket,
    /// Introductions through the rendezvous server, when one is configured.
    rendezvous: Option<fybrk_net::rendezvous::ClientHandle>,
    /// That server's address, for invitations.
    rendezvous_addr: Option<SocketAddr>,
    /// The TURN allocation, when a relay is configured and the allocation succeeded.
    turn: Option<Arc<fybrk_net::turn::TurnClient>>,
    /// Peers' relayed addresses, as introductions named them: a connection to one is relayed.
    peer_relays: Arc<Mutex<HashSet<SocketAddr>>>,
    /// The reflexive address and NAT type, refreshed (only with a rendezvous server).
    nat: Option<fybrk_net::stun::NatMonitor>,
    id: DeviceId,
    name: String,
    fs: Arc<Fs>,
    transport: Transport,
    listen_addr: SocketAddr,
    allow: Arc<AllowList>,
    book: Mutex<PeerBook>,
    links: Mutex<HashMap<DeviceId, Link>>,
    /// Connections made per peer since the daemon started, the first included.
    connects: Mutex<HashMap<DeviceId, u32>>,
    next_generation: AtomicU64,
    /// Wakes a peer's dialler: its link ended, or it was unpaired.
    dialers: Mutex<HashMap<DeviceId, Arc<Notify>>>,
    local_seq: watch::Sender<u64>,
    invalidate: std::sync::mpsc::Sender<Vec<String>>,
    invites: Mutex<Vec<Invite>>,
    outcomes: Mutex<HashMap<u64, InviteOutcome>>,
    next_invite: AtomicU64,
    folder_key: Mutex<FolderKey>,
    /// Held while joining a folder: one join at a time.
    joining: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded value is updated by single inserts/removes; a panicking holder leaves it
    // consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The watcher the daemon registers on every store it serves: see the module doc.
pub fn commit_watcher(
    local_seq: watch::Sender<u64>,
    invalidate: std::sync::mpsc::Sender<Vec<String>>,
) -> CommitWatcher {
    let invalidate = Mutex::new(invalidate);
    Arc::new(move |c: &Committed| {
        local_seq.send_replace(c.seq);
        if c.remote {
            // The invalidator thread only goes away when the daemon stops.
            let _ = lock(&invalidate).send(c.paths.clone());
        }
    })
}

impl Node {
    /// Binds the UDP socket, starts the endpoint and connects to every paired device.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        state: &StateDir,
        device: &DeviceKey,
        name: &str,
        fs: Arc<Fs>,
        folder_key: FolderKey,
        listen: Listen,
        traversal: Traversal,
        invalidate: std::sync::mpsc::Sender<Vec<String>>,
    ) -> Result<Node> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("net")
            .enable_all()
            .build()
            .context("cannot start the network runtime")?;
        let socket = bind(listen, state)?;
        grow_buffers(&socket);
        let book = PeerBook::load(&state.peers())?;
        let allow = Arc::new(AllowList::with_ids(book.iter().map(|(id, _)| *id)));
        let listen_addr = socket.local_addr()?;
        let (mux, transport) = {
            let _enter = rt.enter();
            let mux = fybrk_net::mux::MuxSocket::from_std(socket)
                .context("cannot start the UDP socket")?;
            let quinn = mux
                .quinn_socket()
                .context("cannot start the QUIC endpoint")?;
            let transport = Transport::bind_with(quinn, device, allow.clone())
                .context("cannot start the QUIC endpoint")?;
            (mux, transport)
        };
        let peer_relays = Arc::new(Mutex::new(HashSet::new()));
        let mut address_changed = None;
        let (rendezvous, nat, rendezvous_addr, turn) = match &traversal.rendezvous {
            None => (None, None, None, None),
            Some(server) => {
                let _enter = rt.enter();
                let t = start_traversal(
                    &rt,
                    &mux,
                    state,
                    server,
                    &traversal,
                    listen_addr,
                    allow.clone(),
                    peer_relays.clone(),
                )?;
                address_changed = Some(t.address_changed);
                (Some(t.handle), Some(t.nat), Some(t.server), t.turn)
            }
        };
        let store = fs.store();
        let (local_seq, _) = watch::channel(store.sequence());
        store.on_commit(commit_watcher(local_seq.clone(), invalidate.clone()));
        let shared = Arc::new(Shared {
            state: state.clone(),
            mux,
            rendezvous,
            rendezvous_addr,
            turn,
            peer_relays,
            nat,
            id: device.id(),
            name: name.to_owned(),
            fs,
            transport,
            listen_addr,
            allow,
            book: Mutex::new(book),
            links: Mutex::new(HashMap::new()),
            connects: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            dialers: Mutex::new(HashMap::new()),
            local_seq,
            invalidate,
            invites: Mutex::new(Vec::new()),
            outcomes: Mutex::new(HashMap::new()),
            next_invite: AtomicU64::new(1),
            folder_key: Mutex::new(folder_key),
            joining: Mutex::new(()),
        });
        tracing::info!(addr = %listen_addr, "listening (QUIC over UDP)");
        {
            let _enter = rt.enter();
            tokio::spawn(shared.clone().accept_loop());
            tokio::spawn(shared.clone().housekeeping());
            if let Some(changed) = address_changed {
                tokio::spawn(shared.clone().follow_network(changed));
            }
            let peers: Vec<DeviceId> = lock(&shared.book).iter().map(|(id, _)| *id).collect();
            for peer in peers {
                shared.start_dialer(peer);
            }
        }
        Ok(Node { rt, shared })
    }

    /// Peers and sync progress for `fybrk status`.
    pub fn status(&self) -> NetworkStatus {
        self.shared.status()
    }

    /// Paired devices for `fybrk peers`.
    pub fn peers(&self) -> PeersReply {
        let sh = &self.shared;
        let links = lock(&sh.links);
        let peers = lock(&sh.book)
            .iter()
            .map(|(id, p)| PeerInfo {
                id: id.to_string(),
                name: p.name.clone(),
                addrs: p.addrs.clone(),
                connected: links.contains_key(id),
                last_seen_unix: p.last_seen_unix,
            })
            .collect();
        PeersReply { peers }
    }

    /// Makes an invitation valid for `expires` and opens pairing until it is used or expires.
    pub fn invite(&self, expires: Duration) -> Result<fybrk_control::Invite> {
        let sh = &self.shared;
        let now = unix_now();
        let store = sh.fs.store();
        let mut inv = Invitation::new(
            *sh.id.as_bytes(),
            &sh.name,
            &candidate_addrs(sh.listen_addr),
            sh.rendezvous_addr.map(fybrk_pair::Rendezvous::Addr),
            store.folder_id(),
            now,
        )
        .map_err(|e| anyhow!("cannot make an invitation: {e}"))?;
        inv.expires_unix = now.saturating_add(expires.as_secs().max(1));
        let key = *lock(&sh.folder_key).as_bytes();
        let number = sh.next_invite.fetch_add(1, Ordering::Relaxed);
        lock(&sh.invites).push(Invite {
            number,
            session: InviterSession::new(&inv, key),
            window: Some(sh.allow.open_pairing()),
        });
        tracing::info!(
            invite = number,
            expires_unix = inv.expires_unix,
            "pairing invitation open"
        );
        Ok(fybrk_control::Invite {
            invite: number,
            payload: inv.encode(),
            qr: inv.encode_qr(),
            expires_unix: inv.expires_unix,
            addrs: inv.addrs,
        })
    }

    /// Waits up to `wait` until invitation `number` is used (returns the device) or expires
    /// (an error); [`PairWaitReply::Waiting`] if neither happened yet.
    pub fn wait_invite(&self, number: u64, wait: Duration) -> Result<PairWaitReply> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(outcome) = lock(&self.shared.outcomes).get(&number).cloned() {
                return match outcome {
                    InviteOutcome::Joined(id, name) => Ok(PairWaitReply::Joined {
                        joined: PeerRef {
                            id: id.to_string(),
                            name,
                        },
                    }),
                    InviteOutcome::Expired => Err(anyhow!(
                        "the invitation expired before any device used it; make a new one with `fybrk pair`"
                    )),
                };
            }
            let expires = lock(&self.shared.invites)
                .iter()
                .find(|i| i.number == number)
                .map(|i| i.session.expires_unix());
            let Some(expires_unix) = expires else {
                bail!("no such invitation (the daemon was restarted?); make a new one with `fybrk pair`");
            };
            if Instant::now() >= deadline {
                return Ok(PairWaitReply::waiting(expires_unix));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Joins the folder of the device that made `payload`: see the module doc.
    pub fn pair_with(&self, payload: &str) -> Result<PairWithReply> {
        let inv = Invitation::parse(payload, unix_now()).map_err(|e| anyhow!("{e}"))?;
        let sh = self.shared.clone();
        self.rt.block_on(sh.join(inv))
    }

    /// Removes a paired device: it can no longer connect, and its connection is closed.
    pub fn unpair(&self, query: &str) -> Result<PeerRef> {
        let sh = &self.shared;
        let (id, peer) = {
            let mut book = lock(&sh.book);
            let id = book.find(query).map_err(|e| anyhow!(e))?;
            let peer = book.remove(&id).context("peer vanished")?;
            // Progress of the others is saved too: only once what it names is durable.
            sh.fs.store().sync()?;
            book.save()?;
            (id, peer)
        };
        sh.allow.remove(&id);
        if let Some(link) = lock(&sh.links).remove(&id) {
            link.conn.close(CLOSE_NOT_PAIRED, b"unpaired");
        }
        if let Some(wake) = lock(&sh.dialers).remove(&id) {
            wake.notify_one();
        }
        tracing::info!(peer = %id, name = %peer.name, "unpaired");
        Ok(PeerRef {
            id: id.to_string(),
            name: peer.name,
        })
    }

    /// Closes every connection (peers learn at once instead of after the idle timeout) and
    /// saves progress. The tasks stop with the process.
    pub fn shutdown(&self) {
        let sh = &self.shared;
        sh.transport.close();
        self.rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(2), sh.transport.wait_idle()).await;
        });
        if let Err(e) = sh.persist() {
            tracing::warn!(error = %e, "cannot save peers");
        }
    }
}

/// A one-word stability score from the connection's round trip, loss rate, reconnects since
/// the daemon started, and whether it is relayed.
fn quality(rtt_ms: f64, loss: f64, reconnects: u32, path: PathKind) -> Quality {
    let mut score = 0;
    score += match rtt_ms {
        r if r < 50.0 => 0,
        r if r < 150.0 => 1,
        _ => 2,
    };
    score += match loss {
        l if l < 0.01 => 0,
        l if l < 0.05 => 1,
        _ => 2,
    };
    score += match reconnects {
        0..=1 => 0,
        2..=5 => 1,
        _ => 2,
    };
    score += u32::from(path == PathKind::Relay);
    match score {
        0 => Quality::Excellent,
        1 => Quality::Good,
        2 | 3 => Quality::Fair,
        _ => Quality::Poor,
    }
}

/// Whether `ip` is on this device's network: loopback, private (RFC 1918), link-local, or
/// IPv6 unique-local.
fn is_lan(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00 || v6.is_unicast_link_local()
        }
    }
}

/// Binds the UDP socket. Port 0, or a busy default port, means "any free port": the one picked
/// is remembered in the state dir and taken again next time, because paired devices find this
/// one at the address they last saw (until the rendezvous server of the NAT work exists).
fn bind(listen: Listen, state: &StateDir) -> Result<UdpSocket> {
    let remembered = std::fs::read_to_string(state.listen_port())
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .filter(|p| *p != 0);
    let pick_any = |why: &str| -> Result<UdpSocket> {
        if let Some(port) = remembered {
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(listen.addr.ip(), port)) {
                return Ok(s);
            }
        }
        let any = SocketAddr::new(listen.addr.ip(), 0);
        let s = UdpSocket::bind(any).with_context(|| format!("cannot bind UDP {any}"))?;
        let port = s.local_addr()?.port();
        if let Err(e) = std::fs::write(state.listen_port(), format!("{port}\n")) {
            tracing::warn!(error = %e, "cannot remember the listen port");
        }
        if !why.is_empty() {
            tracing::warn!(wanted = %listen.addr, port, "{why}");
        }
        Ok(s)
    };
    if listen.addr.port() == 0 {
        return pick_any("");
    }
    match UdpSocket::bind(listen.addr) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !listen.explicit => pick_any(
            "UDP port in use (another fybrk daemon?); listening on another port, kept for next \
             time. Pass --listen to choose one",
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow!(
            "UDP {} is in use (another fybrk daemon?): pass another --listen address",
            listen.addr
        )),
        Err(e) => Err(e).with_context(|| format!("cannot listen on UDP {}", listen.addr)),
    }
}

/// What [`start_traversal`] started.
struct Traversing {
    handle: fybrk_net::rendezvous::ClientHandle,
    /// Notified when the rendezvous server sees us at a new address.
    address_changed: Arc<Notify>,
    nat: fybrk_net::stun::NatMonitor,
    server: SocketAddr,
    turn: Option<Arc<fybrk_net::turn::TurnClient>>,
}

/// Starts the rendezvous client on the shared socket, the STUN monitor and, with `--turn`,
/// the relay allocation.
#[allow(clippy::too_many_arguments)]
fn start_traversal(
    rt: &tokio::runtime::Runtime,
    mux: &fybrk_net::mux::MuxSocket,
    state: &StateDir,
    server: &str,
    traversal: &Traversal,
    listen_addr: SocketAddr,
    allow: Arc<AllowList>,
    peer_relays: Arc<Mutex<HashSet<SocketAddr>>>,
) -> Result<Traversing> {
    let stun = &traversal.stun;
    use std::net::ToSocketAddrs;
    let server_addr = server
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the rendezvous server {server:?} (HOST:PORT)"))?
        .next()
        .with_context(|| format!("the rendezvous server {server:?} has no address"))?;
    let key = Arc::new(
        DeviceKey::load(&state.device_key())
            .with_context(|| format!("cannot load {}", state.device_key().display()))?,
    );
    let now = Instant::now();
    let client = fybrk_net::rendezvous::Client::new(
        key,
        fybrk_net::rendezvous::ClientConfig {
            server: server_addr,
            lan: lan_candidates(listen_addr, server_addr),
        },
        allow,
        now,
        fybrk_net::rendezvous::WallClock::system(now),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut diverted = mux
        .take_rendezvous_receiver()
        .context("the rendezvous receiver is taken")?;
    rt.spawn(async move {
        while let Some(d) = diverted.recv().await {
            if tx.send((d.from, d.data)).await.is_err() {
                break;
            }
        }
    });
    // Through the mux, so rendezvous messages and probes take a relay route like QUIC does.
    let send_mux = mux.clone();
    let send = move |to: SocketAddr, data: &[u8]| send_mux.try_send_to(data, to);
    let (handle, mut events, _task) = fybrk_net::rendezvous::spawn_client(client, send, rx);
    {
        // Interfaces come and go (a laptop joins another network): the LAN addresses the
        // server hands to peers are read again now and then; the client registers again only
        // when they changed.
        let handle = handle.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(LAN_RESCAN);
            tick.tick().await;
            loop {
                tick.tick().await;
                let lan = lan_candidates(listen_addr, server_addr);
                if handle.set_lan_candidates(lan).await.is_err() {
                    break;
                }
            }
        });
    }
    let turn = match &traversal.turn {
        None => None,
        Some(url) => {
            let config: fybrk_net::turn::TurnConfig =
                url.parse().map_err(|e| anyhow!("--turn: {e}"))?;
            match rt.block_on(fybrk_net::turn::TurnClient::allocate(mux, &config)) {
                Ok(t) => {
                    tracing::info!(relayed = %t.relayed_addr(), "TURN relay allocated");
                    let relayed = t.relayed_addr();
                    let h = handle.clone();
                    rt.spawn(async move {
                        let _ = h.set_relay(Some(relayed)).await;
                    });
                    Some(Arc::new(t))
                }
                Err(e) => {
                    tracing::warn!("no TURN relay: {e}");
                    None
                }
            }
        }
    };
    let registered = Arc::new(AtomicBool::new(false));
    let address_changed = Arc::new(Notify::new());
    // Where the rendezvous server last saw us.
    let (observed_tx, observed_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
    {
        // An introduction names the peer's public and relayed addresses: permit both on our
        // relay at once, so the peer's probes (and then QUIC) can reach us through it, from
        // its NAT or through its own relay.
        let turn = turn.clone();
        let registered = registered.clone();
        let address_changed = address_changed.clone();
        rt.spawn(async move {
            let mut seen_at = None;
            while let Some(e) = events.recv().await {
                tracing::info!(event = ?e, "rendezvous");
                match &e {
                    fybrk_net::rendezvous::ClientEvent::Registered { observed } => {
                        registered.store(true, Ordering::Release);
                        observed_tx.send_replace(Some(*observed));
                        if seen_at.is_some_and(|a| a != *observed) {
                            address_changed.notify_one();
                        }
                        seen_at = Some(*observed);
                    }
                    fybrk_net::rendezvous::ClientEvent::PunchStarted {
                        peer_observed,
                        peer_relay,
                        ..
                    } => {
                        if let Some(r) = peer_relay {
                            lock(&peer_relays).insert(*r);
                        }
                        if let Some(t) = &turn {
                            let mut ips = vec![peer_observed.ip()];
                            ips.extend(peer_relay.map(|r| r.ip()));
                            ips.dedup();
                            if let Err(err) = t.create_permission(&ips).await {
                                tracing::warn!(
                                    ?ips,
                                    "cannot permit the peer on our TURN relay: {err}"
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    if let Some(t) = &turn {
        let (mux, turn, handle) = (mux.clone(), t.clone(), handle.clone());
        let address_changed = address_changed.clone();
        rt.spawn(async move {
            tokio::time::sleep(RELAY_ALL_AFTER).await;
            if registered.load(Ordering::Acquire) {
                return;
            }
            let turn_server = turn.server_addr();
            tracing::warn!(
                rendezvous = %server_addr, turn = %turn_server,
                "the rendezvous server does not answer over UDP, the TURN server does: this \
                 network seems to let UDP through to the TURN server only, so everything goes \
                 through the relay"
            );
            mux.set_relay_all(Some(turn_server));
            // A channel to the rendezvous server first (a datagram before it would be dropped
            // for want of a permission), then register through it at once.
            if let Err(e) = turn.bind_peer(server_addr).await {
                tracing::warn!("cannot reach the rendezvous server through the relay: {e}");
            }
            let _ = handle.register_now().await;
            relay_all_until_udp_returns(&mux, &handle, server_addr, &turn, observed_rx).await;
            address_changed.notify_one();
        });
    }
    let servers = fybrk_net::stun::stun_servers(stun).map_err(|e| anyhow!("{e}"))?;
    let monitor =
        fybrk_net::stun::NatMonitor::spawn(mux.clone(), servers, fybrk_net::stun::MONITOR_INTERVAL);
    tracing::info!(server = %server_addr, "using the rendezvous server");
    Ok(Traversing {
        handle,
        address_changed,
        nat: monitor,
        server: server_addr,
        turn,
    })
}

/// Socket buffer the daemon asks for, each way. The kernel default (208 KiB) overflowed while
/// a peer sent a large file (hundreds of datagrams dropped per GiB, each a QUIC retransmission).
const SOCKET_BUFFER: usize = 4 << 20;

/// Raises the socket's receive and send buffers (the kernel caps them at `net.core.rmem_max`
/// and `wmem_max`; as root the cap does not apply).
fn grow_buffers(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    for (name, r) in [
        (
            "receive",
            setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER)
                .or_else(|_| setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER)),
        ),
        (
            "send",
            setsockopt(socket, sockopt::SndBufForce, &SOCKET_BUFFER)
                .or_else(|_| setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER)),
        ),
    ] {
        if let Err(e) = r {
            tracing::debug!(error = %e, "cannot raise the UDP {name} buffer");
        }
    }
}

/// In relay-everything mode: now and then registers with the rendezvous server directly, not
/// through the relay. Returns once the server answers that way (and sees us at an address
/// that is not the relay's), after leaving relay-everything mode: the network lets UDP
/// through again (the laptop left the locked-down network). Until then each probe lasts
/// `RELAY_PROBE_WAIT`, then registration goes back through the relay.
async fn relay_all_until_udp_returns(
    mux: &fybrk_net::mux::MuxSocket,
    handle: &fybrk_net::rendezvous::ClientHandle,
    server: SocketAddr,
    turn: &fybrk_net::turn::TurnClient,
    mut observed: tokio::sync::watch::Receiver<Option<SocketAddr>>,
) {
    let relayed = turn.relayed_addr().ip();
    loop {
        tokio::time::sleep(RELAY_ALL_RECHECK).await;
        mux.set_probe_direct(Some(server));
        observed.borrow_and_update();
        let _ = handle.register_now().await;
        let direct = tokio::time::timeout(RELAY_PROBE_WAIT, async {
            while observed.changed().await.is_ok() {
                if observed.borrow().is_some_and(|a| a.ip() != relayed) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if direct {
            mux.set_relay_all(None);
            tracing::info!(
                rendezvous = %server,
                "the rendezvous server answers directly again: UDP gets through, so the relay \
                 is used only where no direct path answers"
            );
            return;
        }
        mux.set_probe_direct(None);
        let _ = handle.register_now().await;
    }
}

/// The LAN candidates registered with the rendezvous server at `server`: this machine's
/// addresses, loopback only when the server is on this machine too (tests).
fn lan_candidates(listen: SocketAddr, server: SocketAddr) -> Vec<SocketAddr> {
    candidate_addrs(listen)
        .into_iter()
        .filter(|a| !a.ip().is_loopback() || server.ip().is_loopback())
        .collect()
}

/// The addresses an invitation lists: the listen address, or, when it is a wildcard, this
/// machine's interface addresses with the listen port (loopback only if there is nothing else:
/// the invitation is for another device).
fn candidate_addrs(listen: SocketAddr) -> Vec<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
        for ifa in ifs {
            let Some(ip) = ifa
                .address
                .and_then(|a| a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
            else {
                continue;
            };
            if !ip.is_loopback() {
                addrs.push(SocketAddr::new(ip, listen.port()));
            }
        }
    }
    if addrs.is_empty() {
        // No network at all: only this machine can reach us.
        addrs.push(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            listen.port(),
        ));
    }
    addrs.dedup();
    addrs
}

impl Shared {
    async fn accept_loop(self: Arc<Self>) {
        while let Some(acc) = self.transport.accept().await {
            let sh = self.clone();
            tokio::spawn(async move {
                match acc.admission {
                    Admission::Paired => sh.attach(acc.peer, acc.connection, false),
                    Admission::PairingOnly => {
                        let conn = acc.connection.clone();
                        let r = tokio::time::timeout(
                            PAIR_TIMEOUT,
                            sh.serve_join(acc.connection, acc.peer),
                        )
                        .await;
                        let err = match r {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e),
                            Err(_) => Some(anyhow!("the joining device went silent")),
                        };
                        if let Some(e) = err {
                            tracing::warn!(peer = %acc.peer, addr = %conn.remote_address(), "pairing failed: {e:#}");
                            conn.close(CLOSE_NOT_PAIRED, b"pairing failed");
                        }
                    }
                }
            });
        }
    }

    /// Periodic work: save progress, expire invitations.
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_save = Instant::now();
        loop {
            tick.tick().await;
            let now = unix_now();
            {
                let mut invites = lock(&self.invites);
                let mut outcomes = lock(&self.outcomes);
                // A used invitation stays (without a pairing window) until it expires, so a
                // second joiner hears "already used", not "wrong secret".
                invites.retain_mut(|i| {
                    if let Some(p) = i.session.used_by() {
                        let id = DeviceId::from_bytes(p.id);
                        outcomes
                            .entry(i.number)
                            .or_insert(InviteOutcome::Joined(id, p.name.clone()));
                        i.window = None;
                    } else if !i.session.is_open(now) {
                        outcomes.insert(i.number, InviteOutcome::Expired);
                    }
                    now < i.session.expires_unix()
                });
            }
            for link in lock(&self.links).values_mut() {
                let st = link.conn.stats();
                link.samples
                    .push_back((Instant::now(), st.udp_rx.bytes + st.udp_tx.bytes));
                while link.samples.len() > RATE_WINDOW {
                    link.samples.pop_front();
                }
            }
            if last_save.elapsed() >= SAVE_INTERVAL {
                last_save = Instant::now();
                if let Err(e) = self.persist() {
                    tracing::warn!(error = %e, "cannot save peers");
                }
            }
        }
    }

    /// Saves `peers.json`. Progress there may only name records that are durable: the book
    /// stays locked (no progress can be added) while the store is synced, then it is written.
    fn persist(&self) -> Result<()> {
        let mut book = lock(&self.book);
        if book.is_dirty() {
            self.fs.store().sync()?;
            book.save()?;
        }
        Ok(())
    }

    /// Inviter side of pairing on a connection from an unknown device.
    async fn serve_join(self: &Arc<Self>, conn: quinn::Connection, peer: DeviceId) -> Result<()> {
        let (mut send, mut recv) = conn.accept_bi().await?;
        let req: JoinRequest = read_frame(&mut recv).await?;
        let binding = channel_binding(&conn, PAIR_LABEL, &[])?;
        let now = unix_now();
        let outcome = {
            let mut invites = lock(&self.invites);
            // The invitation whose secret the request proves answers (used, expired, rate
            // limited, or welcome). If none does, the secret is wrong: every open invitation
            // counts a bad proof, so guessing is rate limited.
            match invites
                .iter()
                .position(|i| i.session.matches(&req, &binding))
            {
                Some(i) => {
                    let inv = &mut invites[i];
                    let r = inv
                        .session
                        .handle_join(&req, &binding, peer.as_bytes(), now);
                    if r.is_ok() {
                        // Used up: close its pairing window now (it stays listed until it
                        // expires, so a late joiner hears "already used").
                        inv.window = None;
                    }
                    r.map(|ok| (inv.number, ok))
                }
                None => {
                    let mut refused = None;
                    for inv in invites.iter_mut().filter(|i| i.session.is_open(now)) {
                        if let Err(e) =
                            inv.session
                                .handle_join(&req, &binding, peer.as_bytes(), now)
                        {
                            refused.get_or_insert(e);
                        }
                    }
                    Err(refused.unwrap_or_else(|| fybrk_pair::RefuseReason::BadProof.into()))
                }
            }
        };
        match outcome {
            Ok((number, (welcome, JoinedPeer { name, .. }))) => {
                // Trust the device before it has the key: it connects for replication next.
                self.add_peer(peer, &name, conn.remote_address());
                lock(&self.outcomes).insert(number, InviteOutcome::Joined(peer, name.clone()));
                tracing::info!(peer = %peer, %name, "device joined");
                write_frame(&mut send, &Reply::Welcome(welcome)).await?;
            }
            Err(refused) => {
                tracing::warn!(peer = %peer, reason = ?refused.reason, "join refused");
                write_frame(&mut send, &Reply::Refused(refused)).await?;
            }
        }
        send.finish()?;
        // The joiner closes once it has read the reply.
        let _ = tokio::time::timeout(PAIR_TIMEOUT, conn.closed()).await;
        Ok(())
    }

    /// Joiner side of pairing.
    async fn join(self: Arc<Self>, inv: Invitation) -> Result<PairWithReply> {
        let inviter = DeviceId::from_bytes(inv.inviter);
        if inviter == self.id {
            bail!("this invitation was made by this device; use it on the device that should join");
        }
        {
            let book = lock(&self.book);
            if book.get(&inviter).is_some() {
                bail!("already paired with {} ({inviter})", inv.inviter_name);
            }
            let others: Vec<String> = book.iter().map(|(_, p)| p.name.clone()).collect();
            if !others.is_empty() {
                bail!(
                    "this device already syncs its folder with {}: a device syncs one folder. \
                     To join another one, unpair those first (`fybrk unpair`), or use another --state dir",
                    others.join(", ")
                );
            }
        }
        if inv.addrs.is_empty() {
            bail!("the invitation lists no address to reach the inviting device");
        }
        let mut last_err = None;
        let mut conn = None;
        for addr in &inv.addrs {
            match self
                .transport
                .connect_timeout(*addr, inviter, DIAL_TIMEOUT)
                .await
            {
                Ok((c, _)) => {
                    conn = Some(c);
                    break;
                }
                Err(e) => {
                    tracing::info!(%addr, "cannot reach the inviter: {e}");
                    last_err = Some(e);
                }
            }
        }
        // Not reachable directly: ask the rendezvous server to introduce us (the inviter is
        // registered there while its invitation is open).
        if conn.is_none() && inv.rendezvous.is_some() {
            if let Some(c) = self.introduce(inviter, false).await {
                conn = Some(c);
            }
        }
        let conn = match (conn, last_err) {
            (Some(c), _) => c,
            (None, Some(fybrk_net::transport::ConnectError::Refused { .. })) => bail!(
                "{} refused the connection: the invitation was already used, has expired on that \
                 device, or was cancelled. Ask for a new one with `fybrk pair`",
                inv.inviter_name
            ),
            (None, e) => bail!(
                "cannot reach {} at {}: {}. Is its daemon running, and reachable from here?",
                inv.inviter_name,
                inv.addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                e.map_or_else(|| "no answer".to_string(), |e| e.to_string())
            ),
        };
        let welcome = tokio::time::timeout(PAIR_TIMEOUT, async {
            let (mut send, mut recv) = conn.open_bi().await?;
            let binding = channel_binding(&conn, PAIR_LABEL, &[])?;
            let mut joiner = JoinerSession::new(&inv, *self.id.as_bytes(), &self.name);
            write_frame(&mut send, &joiner.request(&binding)).await?;
            send.finish()?;
            let reply: Reply = read_frame(&mut recv).await?;
            Ok::<_, anyhow::Error>(joiner.handle_reply(reply)?)
        })
        .await
        .map_err(|_| {
            anyhow!(
                "{} did not answer the join request in time",
                inv.inviter_name
            )
        })?;
        conn.close(CLOSE_SHUTDOWN, b"joined");
        let welcome = welcome?;
        if welcome.folder_id != inv.folder {
            bail!("the inviting device sent another folder than its invitation named; not joining");
        }
        let addr = conn.remote_address();
        let key = FolderKey::from_bytes(welcome.folder_key);
        let sh = self.clone();
        tokio::task::spawn_blocking(move || sh.adopt_folder(&key))
            .await
            .map_err(|e| anyhow!("joining the folder failed: {e}"))??;
        let name = fybrk_pair::sanitize_name(&welcome.inviter_name);
        self.add_peer(inviter, &name, addr);
        tracing::info!(peer = %inviter, %name, "joined the folder");
        Ok(PairWithReply {
            peer: PeerRef {
                id: inviter.to_string(),
                name,
            },
        })
    }

    /// Remembers and trusts a newly paired device, and starts dialling it.
    fn add_peer(self: &Arc<Self>, id: DeviceId, name: &str, addr: SocketAddr) {
        {
            let mut book = lock(&self.book);
            // A relayed address only works through the channel of one introduction.
            let addrs = if self.is_relayed(addr) {
                Vec::new()
            } else {
                vec![addr]
            };
            book.insert(
                id,
                Peer {
                    name: name.to_owned(),
                    addrs,
                    last_seen_unix: Some(unix_now()),
                    seen: 0,
                },
            );
            let saved = self.fs.store().sync().map_err(anyhow::Error::from);
            if let Err(e) = saved.and_then(|()| book.save()) {
                tracing::error!(error = %e, "cannot save the new peer; it is paired until restart");
            }
        }
        self.allow.add(id);
        self.start_dialer(id);
    }

    fn start_dialer(self: &Arc<Self>, peer: DeviceId) {
        let wake = Arc::new(Notify::new());
        if let Some(old) = lock(&self.dialers).insert(peer, wake.clone()) {
            old.notify_one();
        }
        tokio::spawn(self.clone().dial_loop(peer, wake));
    }

    /// Keeps one connection to `peer` up while it is paired: dials when there is none.
    async fn dial_loop(self: Arc<Self>, peer: DeviceId, wake: Arc<Notify>) {
        let mut backoff = Backoff::RECONNECT;
        let mut upgrade: Option<(u64, Duration)> = None;
        loop {
            let current = lock(&self.dialers)
                .get(&peer)
                .is_some_and(|w| Arc::ptr_eq(w, &wake));
            if !current || !self.allow.contains(&peer) {
                return;
            }
            let link = lock(&self.links)
                .get(&peer)
                .map(|l| (l.since, l.generation, l.relayed));
            if let Some((since, generation, relayed)) = link {
                let notified = wake.notified();
                // Re-check after registering: the link may have ended in between.
                if lock(&self.links).contains_key(&peer) {
                    if relayed && self.rendezvous.is_some() && self.mux.relay_all().is_none() {
                        // A relayed link keeps looking for a direct path.
                        let delay = match upgrade {
                            Some((g, d)) if g == generation => d,
                            _ => UPGRADE_FIRST,
                        };
                        upgrade = Some((generation, delay.mul_f32(1.5).min(UPGRADE_MAX)));
                        tokio::select! {
                            () = notified => {}
                            () = tokio::time::sleep(delay) => self.move_off_relay(peer).await,
                        }
                    } else {
                        notified.await;
                    }
                }
                if since.elapsed() >= STABLE_LINK {
                    backoff.reset();
                }
                continue;
            }
            if let Some(conn) = self.dial(peer).await {
                self.attach(peer, conn, true);
                continue;
            }
            let delay = backoff.next_delay(&mut rand::thread_rng());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = wake.notified() => {}
            }
        }
    }

    /// Looks for a direct path to `peer`, linked through a relay; a new connection over it
    /// replaces the relayed one on both sides.
    async fn move_off_relay(self: &Arc<Self>, peer: DeviceId) {
        if let Some(conn) = self.introduce(peer, true).await {
            tracing::info!(peer = %peer.abbrev(), addr = %conn.remote_address(), "moving off the relay");
            self.attach(peer, conn, true);
        }
    }

    /// One attempt to reach `peer`: its remembered addresses, then an introduction.
    async fn dial(&self, peer: DeviceId) -> Option<quinn::Connection> {
        let addrs = lock(&self.book)
            .get(&peer)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        for addr in addrs {
            match self
                .transport
                .connect_timeout(addr, peer, DIAL_TIMEOUT)
                .await
            {
                Ok((conn, _)) => return Some(conn),
                Err(e) => tracing::debug!(peer = %peer.abbrev(), %addr, "dial failed: {e}"),
            }
        }
        self.introduce(peer, false).await
    }

    /// Our public address changed (a new NAT mapping, a new network): a link may be dead
    /// without either side knowing until QUIC's idle timeout, since a quinn client drops
    /// datagrams from a new server address and the peer's router may not let the new address
    /// in. So every connected peer is dialled again at once; a new connection replaces the old
    /// one on both sides (replication resumes from the persisted progress).
    async fn follow_network(self: Arc<Self>, changed: Arc<Notify>) {
        loop {
            changed.notified().await;
            let peers: Vec<DeviceId> = lock(&self.links).keys().copied().collect();
            tracing::info!(
                peers = peers.len(),
                "our public address changed: reconnecting"
            );
            for peer in peers {
                let sh = self.clone();
                tokio::spawn(async move {
                    if let Some(conn) = sh.dial(peer).await {
                        sh.attach(peer, conn, true);
                    }
                });
            }
        }
    }

    /// Asks the rendezvous server to introduce `peer` (both sides probe each other's
    /// candidates at once: LAN, public and relayed addresses), then dials the best path that
    /// answered. `None` without a server, if the peer is not registered, if no path answered,
    /// or, with `direct_only`, if only a relayed one did.
    async fn introduce(&self, peer: DeviceId, direct_only: bool) -> Option<quinn::Connection> {
        let handle = self.rendezvous.as_ref()?;
        let path = match handle.connect(peer).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(peer = %peer.abbrev(), "no introduction: {e}");
                return None;
            }
        };
        let relayed =
            path.kind == fybrk_net::rendezvous::CandidateKind::Relay || self.is_relayed(path.addr);
        if direct_only && relayed {
            tracing::debug!(peer = %peer.abbrev(), "still no direct path");
            return None;
        }
        tracing::info!(peer = %peer.abbrev(), addr = %path.addr, kind = ?path.kind, relayed, "path found");
        match self
            .transport
            .connect_timeout(path.addr, peer, DIAL_TIMEOUT)
            .await
        {
            Ok((conn, _)) => Some(conn),
            Err(e) => {
                tracing::info!(peer = %peer.abbrev(), addr = %path.addr, "dial after punching failed: {e}");
                None
            }
        }
    }

    /// Whether traffic to `addr` goes through a TURN relay: ours (a route in the mux; while
    /// relaying everything, every public address we sent to has one) or the peer's (its
    /// relayed address).
    fn is_relayed(&self, addr: SocketAddr) -> bool {
        self.mux.relay_route(addr).is_some() || lock(&self.peer_relays).contains(&addr)
    }

    /// Takes a new connection to `peer`, or drops it if a preferred one is already up.
    fn attach(self: &Arc<Self>, peer: DeviceId, conn: quinn::Connection, initiator: bool) {
        let dialer = if initiator { self.id } else { peer };
        let preferred = dialer == self.id.min(peer);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let relayed = self.is_relayed(conn.remote_address());
        {
            let mut links = lock(&self.links);
            // Checked under the links lock: `unpair` removes the id first, then the link.
            if !self.allow.contains(&peer) {
                // Unpaired while this connection was being set up (a dial in flight).
                conn.close(CLOSE_NOT_PAIRED, b"not paired");
                return;
            }
            if let Some(existing) = links.get(&peer) {
                // Neither side dials while it has a link. So a new connection next to a young
                // one is a simultaneous dial, settled the same way on both sides; next to an
                // older one it means the peer lost the old link (it restarted, or its network
                // changed) before we noticed: the new one replaces it.
                let simultaneous = existing.since.elapsed() < SIMULTANEOUS;
                if simultaneous && (existing.preferred || !preferred) {
                    conn.close(CLOSE_DUPLICATE, b"duplicate connection");
                    return;
                }
                existing
                    .conn
                    .close(CLOSE_DUPLICATE, b"replaced by a newer connection");
            }
            links.insert(
                peer,
                Link {
                    generation,
                    conn: conn.clone(),
                    preferred,
                    since: Instant::now(),
                    pending: (0, 0),
                    idle: false,
                    samples: std::collections::VecDeque::new(),
                    relayed,
                },
            );
        }
        lock(&self.book).update(&peer, |p| {
            // A relayed address is reached through a channel made for one introduction; the
            // next time the rendezvous server hands it out again.
            if !relayed {
                p.remember_addr(conn.remote_address());
            }
            p.last_seen_unix = Some(unix_now());
        });
        *lock(&self.connects).entry(peer).or_insert(0) += 1;
        tracing::info!(peer = %peer.abbrev(), addr = %conn.remote_address(), initiator, "connected");
        tokio::spawn(self.clone().run_link(peer, conn, initiator, generation));
    }

    /// Replicates over one connection until it ends.
    async fn run_link(
        self: Arc<Self>,
        peer: DeviceId,
        conn: quinn::Connection,
        initiator: bool,
        generation: u64,
    ) {
        // Subscribe before reading the sequence: a commit in between is then announced.
        let local = self.local_seq.subscribe();
        let store = self.fs.store();
        let short = peer.short();
        let seen = lock(&self.book).get(&peer).map_or(0, |p| p.seen);
        let mut replica = StoreReplica::new(store.clone());
        replica.set_seen(short, seen);
        // `persist` syncs the store before it writes progress.
        replica.defer_sync();
        let session = Session::new(
            store.device(),
            store.folder_id(),
            store.sequence(),
            seen,
            Instant::now(),
        );
        let mut saved = seen;
        let sh = self.clone();
        let result = run_peer(
            conn.clone(),
            initiator,
            session,
            &mut replica,
            Some(local),
            |s, r| {
                if let Some(link) = lock(&sh.links).get_mut(&peer) {
                    if link.generation == generation {
                        link.pending = s.pending();
                        link.idle = s.is_idle();
                    }
                }
                let now_seen = r.seen_from(short);
                if now_seen != saved {
                    saved = now_seen;
                    lock(&sh.book).update(&peer, |p| p.seen = now_seen);
                }
                false
            },
        )
        .await;
        let seen = replica.seen_from(short);
        lock(&self.book).update(&peer, |p| {
            p.seen = p.seen.max(seen);
            p.last_seen_unix = Some(unix_now());
        });
        {
            let mut links = lock(&self.links);
            if links.get(&peer).is_some_and(|l| l.generation == generation) {
                links.remove(&peer);
            }
        }
        match result {
            Ok(_) => tracing::info!(peer = %peer.abbrev(), "disconnected"),
            Err(e) => tracing::info!(peer = %peer.abbrev(), "disconnected: {e}"),
        }
        for p in replica.problems() {
            tracing::warn!(peer = %peer.abbrev(), problem = ?p, "sync problem");
        }
        if let Some(wake) = lock(&self.dialers).get(&peer) {
            wake.notify_one();
        }
    }

    fn status(&self) -> NetworkStatus {
        let links = lock(&self.links);
        let book = lock(&self.book);
        let mut pending_items = 0;
        let mut pending_bytes = 0;
        let peers: Vec<PeerStatus> = book
            .iter()
            .map(|(id, p)| match links.get(id) {
                Some(l) => {
                    let stats = l.conn.stats();
                    pending_items += l.pending.0;
                    pending_bytes += l.pending.1;
                    // A peer that reached our relay is known under an alias: show its address.
                    let addr = l.conn.remote_address();
                    let addr = self.mux.relay_route(addr).map_or(addr, |r| r.peer);
                    let path = if l.relayed {
                        PathKind::Relay
                    } else if is_lan(addr.ip()) {
                        PathKind::Lan
                    } else {
                        PathKind::Direct
                    };
                    let loss = if stats.path.sent_packets == 0 {
                        0.0
                    } else {
                        stats.path.lost_packets as f64 / stats.path.sent_packets as f64
                    };
                    let rate = match (l.samples.front(), l.samples.back()) {
                        (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                            b1.saturating_sub(*b0) as f64 / t1.duration_since(*t0).as_secs_f64()
                        }
                        _ => 0.0,
                    };
                    let reconnects = lock(&self.connects)
                        .get(id)
                        .copied()
                        .unwrap_or(1)
                        .saturating_sub(1);
                    let rtt_ms = l.conn.rtt().as_secs_f64() * 1000.0;
                    PeerStatus {
                        id: id.to_string(),
                        name: p.name.clone(),
                        connected: true,
                        path: Some(path),
                        loss: Some(loss),
                        throughput_bps: Some(rate),
                        reconnects: Some(reconnects),
                        quality: Some(quality(rtt_ms, loss, reconnects, path)),
                        addr: Some(addr),
                        rtt_ms: Some(rtt_ms),
                        bytes_in: stats.udp_rx.bytes,
                        bytes_out: stats.udp_tx.bytes,
                        lost_packets: Some(stats.path.lost_packets),
                        sent_packets: Some(stats.path.sent_packets),
                        connected_secs: Some(l.since.elapsed().as_secs()),
                        last_seen_unix: Some(unix_now()),
                        pending_items: l.pending.0,
                        pending_bytes: l.pending.1,
                        in_sync: l.idle && l.pending.0 == 0,
                    }
                }
                None => PeerStatus {
                    id: id.to_string(),
                    name: p.name.clone(),
                    connected: false,
                    path: None,
                    loss: None,
                    throughput_bps: None,
                    reconnects: None,
                    quality: None,
                    addr: p.addrs.first().copied(),
                    rtt_ms: None,
                    bytes_in: 0,
                    bytes_out: 0,
                    lost_packets: None,
                    sent_packets: None,
                    connected_secs: None,
                    last_seen_unix: p.last_seen_unix,
                    pending_items: 0,
                    pending_bytes: 0,
                    in_sync: false,
                },
            })
            .collect();
        let nat = self
            .nat
            .as_ref()
            .and_then(|m| m.latest())
            .map(|r| NatStatus {
                public_addr: r.public_addr(),
                mapping: match r.mapping {
                    fybrk_net::stun::Mapping::EndpointIndependent => {
                        fybrk_control::Mapping::EndpointIndependent
                    }
                    fybrk_net::stun::Mapping::EndpointDependent => {
                        fybrk_control::Mapping::EndpointDependent
                    }
                    fybrk_net::stun::Mapping::Unknown => fybrk_control::Mapping::Unknown,
                },
                udp_works: r.udp_works,
            });
        let relay = self.turn.as_ref().map(|t| RelayStatus {
            server: t.server_addr(),
            relayed_addr: t.relayed_addr(),
            active: t.is_active(),
            everything: self.mux.relay_all().is_some(),
        });
        NetworkStatus {
            listen_addr: self.listen_addr,
            nat,
            relay,
            peers,
            pending_items,
            pending_bytes,
        }
    }

    /// Moves this device into the folder whose key is `key`: copies every record of the
    /// current store into a new store of that folder, switches the filesystem to it, and makes
    /// the switch durable. Blocking (it copies file contents).
    fn adopt_folder(&self, key: &FolderKey) -> Result<()> {
        let _one = lock(&self.joining);
        let new_id = fybrk_store::Crypto::new(key).folder_id();
        let old = self.fs.store();
        if old.folder_id() == new_id {
            return Ok(());
        }
        // From here a crash is finished at the next start (see `finish_join`).
        crate::state::write_key(&self.state.joining_key(), key)?;
        let new = open_store(&self.state, key, old.device())?;
        new.on_commit(commit_watcher(
            self.local_seq.clone(),
            self.invalidate.clone(),
        ));
        let mut copied_to = 0;
        loop {
            let target = old.sequence();
            copy_records(&old, &new, copied_to)?;
            copied_to = target;
            match self
                .fs
                .replace_store(new.clone(), |cur| cur.sequence() == target)
            {
                Ok(Some(_)) => break,
                // Written to meanwhile: copy what changed, try again.
                Ok(None) => continue,
                Err(FsError::Busy) => bail!(
                    "files in the folder are open; close them (and any shell inside the folder \
                     is fine) and run `fybrk pair-with` again"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        new.sync()?;
        crate::state::write_key(&self.state.key(), key)?;
        std::fs::remove_file(self.state.joining_key())?;
        *lock(&self.folder_key) = FolderKey::from_bytes(*key.as_bytes());
        lock(&self.book).reset_progress();
        self.local_seq.send_replace(new.sequence());
        let old_dir = self.state.db_for(old.folder_id());
        drop(old);
        // Other threads may hold the old store for a moment (a status call); unlinked files
        // stay readable to them.
        if let Err(e) = std::fs::remove_dir_all(&old_dir) {
            tracing::warn!(dir = %old_dir.display(), error = %e, "cannot remove the old store");
        }
        tracing::info!("now syncing the joined folder");
        Ok(())
    }
}

/// Opens (creating) the store of the folder `key` in `state`.
pub fn open_store(state: &StateDir, key: &FolderKey, device: u64) -> Result<Store> {
    let dir = state.db(key);
    Store::open(
        &dir,
        key,
        StoreOptions {
            device: Some(device),
            ..StoreOptions::default()
        },
    )
    .with_context(|| format!("cannot open the store in {}", dir.display()))
}

/// Copies every change of `from` after sequence `since` into `to` as local changes: file
/// contents are re-encrypted chunk by chunk (same boundaries, the new folder's ids).
pub fn copy_records(from: &Store, to: &Store, since: u64) -> Result<()> {
    for r in from.changes_since(since)? {
        let exists = to.get(&r.path)?.is_some_and(|t| t.is_live());
        if !r.is_live() {
            if exists {
                let mut gone = r.clone();
                gone.version = Default::default();
                to.commit(vec![gone], None, false)?;
            }
            continue;
        }
        let mut rec = r.clone();
        rec.version = Default::default();
        if r.kind != Kind::File {
            to.commit(vec![rec], None, false)?;
            continue;
        }
        let mut writer = to.writer();
        rec.chunks.clear();
        for (i, c) in r.chunks.iter().enumerate() {
            let data = from.read_chunk(&c.id)?;
            rec.chunks.push(writer.add(&data)?);
            if i % ADOPT_FLUSH_CHUNKS == ADOPT_FLUSH_CHUNKS - 1 {
                writer.flush()?;
            }
        }
        to.commit(vec![rec], Some(&mut writer), false)?;
    }
    Ok(())
}

/// Finishes a join a crash interrupted: `folder.key.join` exists, so the folder switch was not
/// made durable. Copies the old folder's records into the new store again (copying is
/// idempotent) and switches.
pub fn finish_join(state: &StateDir, device: u64) -> Result<()> {
    let Some(new_key) = crate::state::read_key(&state.joining_key())? else {
        return Ok(());
    };
    tracing::warn!("finishing an interrupted join");
    let new = open_store(state, &new_key, device)?;
    if let Some(old_key) = crate::state::read_key(&state.key())? {
        let old_dir = state.db(&old_key);
        if old_dir.exists() && old_dir != state.db(&new_key) {
            let old = open_store(state, &old_key, device)?;
            copy_records(&old, &new, 0)?;
            drop(old);
            new.sync()?;
            crate::state::write_key(&state.key(), &new_key)?;
            std::fs::remove_dir_all(&old_dir)?;
        }
    }
    crate::state::write_key(&state.key(), &new_key)?;
    std::fs::remove_file(state.joining_key())?;
    Ok(())
}

/// Writes one pairing frame.
async fn write_frame<T: serde::Serialize>(send: &mut quinn::SendStream, msg: &T) -> Result<()> {
    let frame = fybrk_pair::encode_frame(msg)?;
    send.write_all(&frame).await?;
    send.flush().await?;
    Ok(())
}

/// Reads one pairing frame (they are small: at most a few KiB).
async fn read_frame<T: serde::de::DeserializeOwned>(recv: &mut quinn::RecvStream) -> Result<T> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((msg, _)) = fybrk_pair::decode_frame::<T>(&buf)? {
            return Ok(msg);
        }
        match recv.read(&mut chunk).await? {
            Some(n) => buf.extend_from_slice(&chunk[..n]),
            None => bail!("the other device closed the pairing stream early"),
        }
    }
}
