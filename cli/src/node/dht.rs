//! DHT discovery's driver: the Mainline DHT node, publishing this device's signed address
//! record, and looking up and dialling paired devices that cannot be reached otherwise. The
//! decisions are [`DhtPolicy`]'s (no I/O, no clock); this task feeds it our addresses, the
//! paired devices and how each is linked, runs the publishes and lookups it asks for on the
//! node, and dials whom it names.
//!
//! The node starts only once some paired device's public key is known (learnt from its TLS
//! certificate at a connection, kept in `peers.json`): a device that syncs with nobody has
//! nothing to publish nor anyone to look up, and never talks to the DHT. Without a rendezvous
//! server, the reflexive address published comes from a STUN monitor started here.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fybrk_control::DhtStatus;
use fybrk_net::dht::{self, Action, AddrRecord, DhtNode, DhtPolicy, Local, NodeOptions};
use fybrk_net::identity::DeviceId;
use tokio::sync::mpsc;

use super::links::DIAL_TIMEOUT;
use super::traversal::candidate_addrs;
use super::{lock, unix_now, Shared};

/// How often our addresses, the peers and their links are read again (all in memory) and the
/// keys of newly linked peers are taken from their certificates.
const TICK: Duration = Duration::from_secs(2);

/// How often the routing table's size is read for `status`.
const COUNT_EVERY: Duration = Duration::from_secs(10);

/// A node that cannot be started (bad bootstrap names, no socket) is tried again this late.
const RESTART_AFTER: Duration = Duration::from_secs(60);

/// The first publish waits this long at most for STUN's first answer, so that it already names
/// our public address (a STUN round trip takes milliseconds; a server that does not answer must
/// not hold the record back).
const FIRST_STUN_WAIT: Duration = Duration::from_secs(3);

/// With a rendezvous server, an unreachable peer is looked up in the DHT only after this long:
/// the server introduces reachable peers within seconds, so the DHT is for when it is down.
const LOOKUP_AFTER_WITH_RENDEZVOUS: Duration = Duration::from_secs(60);

/// DHT options (`dht`, `dht_bootstrap`, `--no-dht`, `--dht-bootstrap`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhtOptions {
    /// Publish and look up at all.
    pub enabled: bool,
    /// `HOST:PORT` of the bootstrap nodes; empty: the public ones.
    pub bootstrap: Vec<String>,
}

impl Default for DhtOptions {
    fn default() -> Self {
        DhtOptions {
            enabled: true,
            bootstrap: Vec::new(),
        }
    }
}

/// What a publish or a lookup came back with.
enum Outcome {
    Published(bool),
    Looked(DeviceId, Option<AddrRecord>),
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts DHT discovery's task, unless it is off or the daemon listens on loopback only
/// (nobody elsewhere could dial what it would publish; the tests on one machine).
pub(super) fn start(sh: &Arc<Shared>, options: DhtOptions, stun: &[String]) {
    if !options.enabled {
        tracing::info!("DHT discovery is off");
        return;
    }
    if sh.listen_addr.ip().is_loopback() {
        tracing::info!("DHT discovery is off: listening on loopback only");
        return;
    }
    // Without a rendezvous server nothing else asks STUN for our public address.
    let stun = if sh.nat.is_none() {
        match fybrk_net::stun::stun_servers(stun) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    "DHT discovery: no STUN servers ({e}); publishing local addresses only"
                );
                None
            }
        }
    } else {
        None
    };
    *lock(&sh.dht) = Some(DhtStatus {
        running: false,
        last_publish_unix: None,
        known_nodes: 0,
    });
    tokio::spawn(sh.clone().dht_loop(options, stun));
}

impl Shared {
    /// The paired devices whose keys we know, and whether each has a link; takes the keys of
    /// linked devices that `peers.json` lacks from their certificates.
    fn dht_peers(&self) -> Vec<(DeviceId, [u8; 32], bool)> {
        let linked: Vec<(DeviceId, Option<[u8; 32]>)> = lock(&self.links)
            .iter()
            .map(|(id, l)| (*id, fybrk_net::tls::peer_public_key(&l.conn)))
            .collect();
        let mut book = lock(&self.book);
        for (id, key) in &linked {
            let Some(key) = key else { continue };
            let known = book.get(id).and_then(|p| p.public_key);
            if known != Some(*key) && DeviceId::from_public_key(key) == *id {
                book.update(id, |p| p.public_key = Some(*key));
            }
        }
        book.iter()
            .filter(|(id, _)| self.allow.contains(id))
            .filter_map(|(id, p)| {
                let key = p.public_key?;
                // A hand-edited file must not make us look someone else up.
                (DeviceId::from_public_key(&key) == *id).then_some((
                    *id,
                    key,
                    linked.iter().any(|(l, _)| l == id),
                ))
            })
            .collect()
    }

    /// Our addresses as published: the QUIC port, the interface addresses, the public address
    /// STUN saw for the QUIC socket, and the TURN relayed address.
    fn dht_local(&self, monitor: Option<&fybrk_net::stun::NatMonitor>) -> Local {
        let reflexive = self
            .nat
            .as_ref()
            .or(monitor)
            .and_then(|m| m.latest())
            .and_then(|r| r.public_addr());
        Local {
            port: self.listen_addr.port(),
            lan: candidate_addrs(self.listen_addr)
                .into_iter()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_loopback())
                .collect(),
            reflexive,
            relay: self.turn.as_ref().map(|t| t.relayed_addr()),
        }
    }

    /// The DHT task: see the module doc.
    async fn dht_loop(
        self: Arc<Self>,
        options: DhtOptions,
        stun: Option<Vec<fybrk_net::stun::StunServer>>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Wait for a peer to publish for and to look up.
        while self.dht_peers().is_empty() {
            tick.tick().await;
        }
        let node_options = NodeOptions {
            bootstrap: if options.bootstrap.is_empty() {
                dht::default_bootstrap()
            } else {
                options.bootstrap.clone()
            },
            bind: Some(SocketAddrV4::new(
                match self.listen_addr.ip() {
                    IpAddr::V4(v4) => v4,
                    IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
                },
                0,
            )),
            server: false,
            request_timeout: None,
        };
        let node = loop {
            let o = node_options.clone();
            match tokio::task::spawn_blocking(move || DhtNode::start(&o)).await {
                Ok(Ok(node)) => break node,
                Ok(Err(e)) => tracing::warn!("DHT discovery: cannot start the node: {e}"),
                Err(e) => tracing::warn!("DHT discovery: cannot start the node: {e}"),
            }
            tokio::time::sleep(RESTART_AFTER).await;
        };
        let local = node.local_addr().await;
        tracing::info!(bootstrap = ?node_options.bootstrap, %local, "DHT discovery on");
        let monitor = stun.map(|servers| {
            fybrk_net::stun::NatMonitor::spawn(
                self.mux.clone(),
                servers,
                fybrk_net::stun::MONITOR_INTERVAL,
            )
        });
        if let Some(m) = &monitor {
            let mut first = m.subscribe();
            let _ = tokio::time::timeout(FIRST_STUN_WAIT, first.wait_for(Option::is_some)).await;
        }
        let (tx, mut rx) = mpsc::channel::<Outcome>(64);
        let mut config = dht::Config::default();
        if self.rendezvous.is_some() {
            config.lookup_after = LOOKUP_AFTER_WITH_RENDEZVOUS;
        }
        let mut policy = DhtPolicy::new(config);
        let mut last_count: Option<Instant> = None;
        loop {
            let now = Instant::now();
            policy.handle_local(now, self.dht_local(monitor.as_ref()));
            policy.handle_peers(now, self.dht_peers());
            while let Some(action) = policy.poll_action(Instant::now(), wall_ms()) {
                self.dht_act(&node, action, &tx);
            }
            if last_count.is_none_or(|t| t.elapsed() >= COUNT_EVERY) {
                last_count = Some(Instant::now());
                let known = u32::try_from(node.known_nodes().await).unwrap_or(u32::MAX);
                if let Some(s) = lock(&self.dht).as_mut() {
                    s.running = true;
                    s.known_nodes = known;
                }
            }
            let deadline = policy
                .poll_timeout()
                .map_or(Instant::now() + TICK, |t| t.min(Instant::now() + TICK));
            tokio::select! {
                Some(outcome) = rx.recv() => match outcome {
                    Outcome::Published(ok) => {
                        policy.handle_published(Instant::now(), ok);
                        if ok {
                            if let Some(s) = lock(&self.dht).as_mut() {
                                s.last_publish_unix = Some(unix_now());
                            }
                        }
                    }
                    Outcome::Looked(peer, found) => {
                        policy.handle_lookup(Instant::now(), wall_ms(), &peer, found);
                    }
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
        }
    }

    /// Carries out one of the policy's actions in a task of its own (publishes and lookups
    /// take seconds); their outcomes come back on `tx`.
    fn dht_act(self: &Arc<Self>, node: &DhtNode, action: Action, tx: &mpsc::Sender<Outcome>) {
        match action {
            Action::Publish(record) => {
                let (sh, node, tx) = (self.clone(), node.clone(), tx.clone());
                tokio::spawn(async move {
                    let ok = match node.publish(&sh.device_key, &record).await {
                        Ok(stored) => {
                            tracing::info!(?record, stored, "DHT: published our addresses");
                            true
                        }
                        Err(e) => {
                            tracing::info!("DHT: publish failed: {e}");
                            false
                        }
                    };
                    let _ = tx.send(Outcome::Published(ok)).await;
                });
            }
            Action::Lookup { peer, public_key } => {
                let (node, tx) = (node.clone(), tx.clone());
                tokio::spawn(async move {
                    let found = node.lookup(&public_key).await;
                    tracing::info!(peer = %peer.abbrev(), ?found, "DHT: looked up a paired device");
                    let _ = tx.send(Outcome::Looked(peer, found)).await;
                });
            }
            Action::Dial { peer, addrs } => {
                // The QUIC socket reaches only its own address family. Every address at once:
                // the punch needs the public address dialled now, not after the others timed
                // out; a second connection that succeeds is settled as a duplicate.
                let family = self.listen_addr.is_ipv4();
                for addr in addrs.into_iter().filter(|a| a.is_ipv4() == family) {
                    tokio::spawn(self.clone().dht_dial(peer, addr));
                }
            }
        }
    }

    /// Dials `peer` at `addr` found in its record.
    async fn dht_dial(self: Arc<Self>, peer: DeviceId, addr: SocketAddr) {
        if lock(&self.links).contains_key(&peer) {
            return;
        }
        match self
            .transport
            .connect_timeout(addr, peer, DIAL_TIMEOUT)
            .await
        {
            Ok((conn, _)) => {
                tracing::info!(peer = %peer.abbrev(), %addr, "DHT: reached a paired device at its published address");
                self.attach(peer, conn, true);
            }
            Err(e) => tracing::debug!(peer = %peer.abbrev(), %addr, "DHT: dial failed: {e}"),
        }
    }
}
