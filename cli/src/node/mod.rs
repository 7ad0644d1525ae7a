//! The daemon's network side: this device's QUIC endpoint, its paired devices, pairing, and one
//! replication task per connected peer.
//!
//! # Connections
//!
//! Every paired device is dialled (its remembered addresses, with backoff and jitter) while no
//! connection to it is up, and every paired device may dial us. When both succeed at once, each
//! side keeps the connection dialled by the device with the smaller id and closes the other, so
//! both agree without talking. A connection runs
//! [`run_peer`](fybrk_net::sync::quic_driver::run_peer) on the current store until it fails;
//! the dialler then tries again at once (and backs off if connections keep failing). These
//! decisions live in `policy`, without I/O; `links` carries them out.
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
//! The inviter opens an [`InviterSession`](fybrk_pair::InviterSession) and a pairing window
//! (unknown devices may complete the TLS handshake, for pairing only) until the invitation is
//! used or expires. The joiner dials the inviter's addresses pinning its id, proves the secret
//! bound to that TLS session, receives the folder key, moves its files into a store of that
//! folder ([`Shared::adopt_folder`]), and only then trusts the inviter, so the first replication
//! runs on the new store.
//!
//! # Layout
//!
//! - `links`: the connection to each paired device (dialling, taking connections, replication
//!   over a link): the tokio side of `policy`.
//! - `policy`: the decisions about links, as state machines without I/O or clock (the
//!   simultaneous-dial tie-break, backoff, the relay-upgrade schedule, relay-everything mode).
//! - `traversal`: rendezvous, STUN and TURN start-up, and relay-everything mode.
//! - `lan`: LAN discovery's driver (announcing, listening, dialling paired devices heard on
//!   the LAN); the policy is `fybrk_net::lan`.
//! - `dht`: discovery through the Mainline DHT's driver (publishing our signed address record,
//!   looking up and dialling paired devices not reached otherwise); the policy is
//!   `fybrk_net::dht`.
//! - `pairing`: invitations, the inviting side of the exchange and its approval; `framing`
//!   the frames.
//! - `join`: pairing, the joining side (dial, prove, wait for approval, adopt).
//! - `joining`: moving this device into a joined folder.
//! - `members`: the folder's member list: kept, exchanged with every link, applied to who may
//!   connect.
//! - `status`: what `fybrk status` and `fybrk peers` show.
//! - `portmap`: the router's port mapping of the listen port (with a rendezvous server), its
//!   address registered as a candidate; deleted at unmount.
//! - `socket`: binding the one UDP socket.

mod dht;
mod framing;
mod join;
mod joining;
mod keys;
mod lan;
mod links;
mod members;
mod pairing;
mod policy;
mod portmap;
mod socket;
mod status;
mod traversal;

use crate::massdel::MassDeletions;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fybrk_fs::Fs;
use fybrk_net::identity::{DeviceId, DeviceKey};
use fybrk_net::tls::AllowList;
use fybrk_net::transport::Transport;
use fybrk_store::{CommitWatcher, Committed};

use fybrk_store::FolderKeys;
use tokio::sync::{watch, Notify};

use crate::peers::PeerBook;
use crate::state::StateDir;

pub use dht::DhtOptions;
pub use joining::finish_join;
pub use lan::LanOptions;
use links::Link;
use pairing::{Invite, InviteOutcome};
pub use portmap::protocols as port_mapping_protocols;
use socket::{bind, grow_buffers, link_mtu};
use traversal::start_traversal;

/// The UDP port fybrk listens on unless told otherwise (QUIC; STUN and TURN share it later).
pub const DEFAULT_PORT: u16 = 22100;

/// How often sync progress and addresses are written to `peers.json`.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

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
    /// LAN discovery: on (the default) and its port.
    pub lan: LanOptions,
    /// Ask the router for a port mapping of the listen port (with a rendezvous server only).
    pub port_mapping: bool,
    /// Discovery through the Mainline DHT: on (the default) and its bootstrap nodes.
    pub dht: DhtOptions,
}

impl Default for Listen {
    fn default() -> Listen {
        Listen {
            // One dual-stack socket; IPv4 only where the host has no IPv6 (`socket::bind`).
            addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), DEFAULT_PORT),
            explicit: false,
        }
    }
}

/// The running network side. Dropping it stops every task.
pub struct Node {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
}

/// What every task of the node shares: the socket, the endpoint, the peers and their links,
/// the open invitations.
struct Shared {
    /// Peers' bursts of deletions (see [`crate::massdel`]).
    mass: Arc<Mutex<MassDeletions>>,
    /// Chunks local reads wait for (content held elsewhere): the store's remote, asked of
    /// every link.
    demands: Arc<fybrk_net::sync::demand::hub::DemandHub>,
    /// Chunks of local writes as they land, offered to peers before their record commits.
    fresh: Arc<fybrk_net::sync::offer::FreshFeed>,
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
    /// The router's port mapping of the listen port (only with a rendezvous server).
    port_mapping: Option<portmap::PortMapping>,
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
    /// This device's key, for signing member entries.
    device_key: DeviceKey,
    /// The folder's member list.
    members: Mutex<fybrk_pair::members::MemberLog>,
    /// Whether this device may found the member list (not after joining a folder: the list
    /// comes from its members).
    may_found: std::sync::atomic::AtomicBool,
    /// Wrong pairing proofs per source address and claimed device id.
    bad_proofs: Mutex<fybrk_pair::BadProofs>,
    /// Joins this device started (`pair_with`), for `pair_with_wait`.
    joins: Mutex<HashMap<u64, join::JoinState>>,
    next_join: AtomicU64,
    /// The folder's id and keys (as in `folder.key`).
    folder_keys: Mutex<FolderKeys>,
    /// Held while joining a folder: one join at a time.
    joining: Mutex<()>,
    /// DHT discovery's state for `status` (`None`: off).
    dht: Mutex<Option<fybrk_control::DhtStatus>>,
}

/// Whether `query` (as typed after `approve`, `deny`, `remove`) names the device `id` called
/// `name`: its exact name, or a prefix of its id's text (dashes and case do not matter).
fn names_device(query: &str, id: &DeviceId, name: &str) -> bool {
    let q = query.trim();
    let norm = |s: &str| s.replace('-', "").to_ascii_uppercase();
    name == q || (!q.is_empty() && norm(&id.to_string()).starts_with(&norm(q)))
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
    mass: Arc<Mutex<MassDeletions>>,
) -> CommitWatcher {
    let invalidate = Mutex::new(invalidate);
    Arc::new(move |c: &Committed| {
        local_seq.send_replace(c.seq);
        if c.remote {
            // The invalidator thread only goes away when the daemon stops.
            let _ = lock(&invalidate).send(c.paths.clone());
        }
        for &(device, deleted) in &c.remote_deletions {
            let alert =
                lock(&mass).handle_deletions(Instant::now(), c.time_ns, device, deleted, c.files);
            if let Some(a) = alert {
                tracing::warn!(
                    device = %fybrk_store::naming::device_tag(a.device),
                    deleted = a.deleted,
                    undo = %crate::massdel::undo_command(&a),
                    "MASS DELETION: a peer deleted many files within minutes; they are kept in \
                     history, and the undo command brings them back on every device"
                );
            }
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
        folder_keys: FolderKeys,
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
        let receive_buffer = grow_buffers(&socket);
        let link_mtu = link_mtu(socket.local_addr()?.ip());
        let largest_datagram = fybrk_net::transport::largest_datagram(receive_buffer, link_mtu);
        if receive_buffer < fybrk_net::transport::LARGE_DATAGRAM_BUFFER {
            tracing::info!(
                receive_buffer,
                largest_datagram,
                "UDP receive buffer below {} bytes (net.core.rmem_max): QUIC datagrams stay \
                 within Ethernet's MTU",
                fybrk_net::transport::LARGE_DATAGRAM_BUFFER
            );
        } else {
            tracing::debug!(link_mtu, largest_datagram, "QUIC MTU discovery bound");
        }
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
            let transport = Transport::bind_with(quinn, device, allow.clone(), largest_datagram)
                .context("cannot start the QUIC endpoint")?;
            (mux, transport)
        };
        let peer_relays = Arc::new(Mutex::new(HashSet::new()));
        let mut address_changed = None;
        let mut port_mapping = None;
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
                port_mapping = t.port_mapping;
                (Some(t.handle), Some(t.nat), Some(t.server), t.turn)
            }
        };
        let store = fs.store();
        let (local_seq, _) = watch::channel(store.sequence());
        let mass = Arc::new(Mutex::new(MassDeletions::default()));
        store.on_commit(commit_watcher(
            local_seq.clone(),
            invalidate.clone(),
            mass.clone(),
        ));
        let (members, may_found) = members::load(&state.members(), store.folder_id())?;
        let device_key = DeviceKey::load(&state.device_key())
            .context("cannot read this device's key again for the member list")?;
        let demands = fybrk_net::sync::demand::hub::DemandHub::new();
        fs.store().set_remote(Some(demands.clone()));
        let fresh = fybrk_net::sync::offer::FreshFeed::new();
        fs.store().on_fresh_chunks(Some(fresh.hook()));
        let shared = Arc::new(Shared {
            demands,
            fresh,
            device_key,
            members: Mutex::new(members),
            may_found: std::sync::atomic::AtomicBool::new(may_found),
            mass,
            state: state.clone(),
            mux,
            rendezvous,
            rendezvous_addr,
            turn,
            peer_relays,
            nat,
            port_mapping,
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
            bad_proofs: Mutex::new(fybrk_pair::BadProofs::new()),
            joins: Mutex::new(HashMap::new()),
            next_join: AtomicU64::new(1),
            folder_keys: Mutex::new(folder_keys),
            joining: Mutex::new(()),
            dht: Mutex::new(None),
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
            shared.reconcile_members();
            lan::start(&shared, traversal.lan);
            dht::start(&shared, traversal.dht.clone(), &traversal.stun);
        }
        Ok(Node { rt, shared })
    }

    /// Closes every connection (peers learn at once instead of after the idle timeout),
    /// deletes the router's port mapping and saves progress. The tasks stop with the process.
    pub fn shutdown(&self) {
        let sh = &self.shared;
        sh.transport.close();
        self.rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(2), sh.transport.wait_idle()).await;
        });
        if let Some(p) = &sh.port_mapping {
            p.stop(&self.rt);
        }
        if let Err(e) = sh.persist() {
            tracing::warn!(error = %e, "cannot save peers");
        }
    }
}

impl Shared {
    /// Periodic work: save progress, expire invitations.
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_save = Instant::now();
        loop {
            tick.tick().await;
            self.expire_invites();
            self.sample_links();
            if last_save.elapsed() >= SAVE_INTERVAL {
                last_save = Instant::now();
                if let Err(e) = self.persist() {
                    tracing::warn!(error = %e, "cannot save peers");
                }
            }
        }
    }
}
