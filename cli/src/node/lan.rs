//! LAN discovery's driver: the two discovery sockets, the interface scan, and dialling the
//! paired devices heard on the LAN. The decisions are [`LanDiscovery`]'s (no I/O, no clock);
//! this task only feeds it datagrams, interface lists and the time, sends what it says, and
//! dials whom it names.

use std::collections::HashMap;
use std::mem::Discriminant;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fybrk_net::identity::DeviceId;
use fybrk_net::lan::{self, Announcement, Ignored, LanDiscovery, Verdict};
use fybrk_net::transport::peer_addr;
use tokio::net::UdpSocket;

use super::links::DIAL_TIMEOUT;
use super::{lock, Shared};

/// How often the interfaces are read again: a changed address (DHCP, another Wi-Fi) is
/// announced within this long. Reading them is one `getifaddrs` call.
const RESCAN: Duration = Duration::from_secs(3);

/// A source whose announcements are ignored is named in the log at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// LAN discovery options (`lan_discovery`, `lan_discovery_port`, `--no-lan-discovery`,
/// `--lan-discovery-port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanOptions {
    /// Announce and listen at all.
    pub enabled: bool,
    /// The discovery port (default [`lan::DEFAULT_PORT`]).
    pub port: u16,
}

impl Default for LanOptions {
    fn default() -> Self {
        LanOptions {
            enabled: true,
            port: lan::DEFAULT_PORT,
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the policy asks about our peers, answered from the daemon's state.
struct View<'a>(&'a Shared);

impl lan::Peers for View<'_> {
    fn is_paired(&self, id: &DeviceId) -> bool {
        self.0.allow.contains(id)
    }

    fn direct_link(&self, id: &DeviceId) -> Option<SocketAddr> {
        let links = lock(&self.0.links);
        let link = links.get(id).filter(|l| !l.relayed)?;
        Some(peer_addr(&link.conn))
    }
}

/// Starts LAN discovery: binds the sockets (a failure is logged, and discovery is off; the
/// daemon runs on without it) and spawns the task.
pub(super) fn start(sh: &Arc<Shared>, options: LanOptions) {
    if !options.enabled {
        tracing::info!("LAN discovery is off");
        return;
    }
    if sh.listen_addr.ip().is_loopback() {
        // Nobody on the LAN could dial a loopback address (the tests on one machine).
        tracing::info!("LAN discovery is off: listening on loopback only");
        return;
    }
    let v4 = lan::net::bind_v4(options.port)
        .map_err(|e| tracing::warn!(port = options.port, "LAN discovery: no IPv4 socket: {e}"))
        .ok();
    let v6 = lan::net::bind_v6(options.port)
        .map_err(|e| tracing::debug!(port = options.port, "LAN discovery: no IPv6 socket: {e}"))
        .ok();
    let tokio_socket = |s: Option<StdUdpSocket>| s.and_then(|s| UdpSocket::from_std(s).ok());
    let (v4, v6) = (tokio_socket(v4), tokio_socket(v6));
    if v4.is_none() && v6.is_none() {
        tracing::warn!("LAN discovery is off: no socket on port {}", options.port);
        return;
    }
    tracing::info!(port = options.port, group = %lan::MULTICAST_GROUP, "LAN discovery on");
    tokio::spawn(sh.clone().lan_loop(v4, v6, options.port));
}

/// Receives on an optional socket; never resolves without one.
async fn recv(s: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl Shared {
    /// The discovery task: see the module doc.
    async fn lan_loop(self: Arc<Self>, v4: Option<UdpSocket>, v6: Option<UdpSocket>, port: u16) {
        let mut policy = LanDiscovery::new(self.id, lan::Config::default());
        let mut ifaces = lan::net::interfaces();
        self.lan_join(v6.as_ref(), &ifaces);
        policy.handle_interfaces(
            Instant::now(),
            lan::net::announced_addrs(&ifaces, self.listen_addr),
        );
        policy.handle_start(Instant::now());
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logged: HashMap<(IpAddr, Discriminant<Ignored>), Instant> = HashMap::new();
        let (mut buf4, mut buf6) = (vec![0u8; 2048], vec![0u8; 2048]);
        loop {
            // The thread's rng is not `Send`: not held across the await.
            let due = policy.poll_announce(Instant::now(), wall_ms(), &mut rand::thread_rng());
            if let Some(a) = due {
                self.lan_send(&a, &ifaces, port, v4.as_ref(), v6.as_ref())
                    .await;
            }
            let deadline = policy
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + RESCAN);
            let got = tokio::select! {
                r = recv(v4.as_ref(), &mut buf4) => r.map(|(n, from)| (buf4[..n].to_vec(), from)),
                r = recv(v6.as_ref(), &mut buf6) => r.map(|(n, from)| (buf6[..n].to_vec(), from)),
                _ = rescan.tick() => {
                    let now_ifaces = lan::net::interfaces();
                    if now_ifaces != ifaces {
                        ifaces = now_ifaces;
                        self.lan_join(v6.as_ref(), &ifaces);
                        let addrs = lan::net::announced_addrs(&ifaces, self.listen_addr);
                        if policy.handle_interfaces(Instant::now(), addrs.clone()) {
                            tracing::info!(?addrs, "LAN discovery: our addresses changed, announcing");
                        }
                    }
                    continue;
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => continue,
            };
            let (data, from) = match got {
                Ok(got) => got,
                Err(e) => {
                    // Not expected on an unconnected UDP socket; a pause keeps a persistent
                    // error from spinning.
                    tracing::debug!("LAN discovery: receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let verdict =
                policy.handle_datagram(Instant::now(), wall_ms(), from, &data, &View(&self));
            tracing::debug!(%from, len = data.len(), ?verdict, "LAN discovery: datagram");
            match verdict {
                Verdict::Own | Verdict::Heard { .. } => {}
                Verdict::Dial { peer, addrs } => {
                    tracing::info!(peer = %peer.abbrev(), %from, ?addrs, "LAN discovery: heard a paired device, dialling");
                    tokio::spawn(self.clone().lan_dial(peer, addrs));
                }
                Verdict::Ignored(why) => log_ignored(&mut logged, from, &why),
            }
        }
    }

    /// Joins the multicast group on every interface with IPv6.
    fn lan_join(&self, v6: Option<&UdpSocket>, ifaces: &[lan::net::Interface]) {
        let Some(v6) = v6 else { return };
        for i in ifaces.iter().filter(|i| i.multicast && i.index != 0) {
            if !i.addrs.iter().any(IpAddr::is_ipv6) {
                continue;
            }
            if let Err(e) = lan::net::join_group(v6, i.index) {
                tracing::debug!(iface = %i.name, "LAN discovery: cannot join the group: {e}");
            }
        }
    }

    /// Signs `a` and sends it to every destination.
    async fn lan_send(
        &self,
        a: &lan::Announce,
        ifaces: &[lan::net::Interface],
        port: u16,
        v4: Option<&UdpSocket>,
        v6: Option<&UdpSocket>,
    ) {
        let announcement = Announcement {
            id: self.id,
            public_key: self.device_key.public_key(),
            port: self.listen_addr.port(),
            addrs: a.addrs.clone(),
            timestamp_ms: a.timestamp_ms,
        };
        let bytes = match announcement.encode(&self.device_key) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("LAN discovery: cannot encode the announcement: {e}");
                return;
            }
        };
        for to in lan::net::destinations(ifaces, port) {
            let socket = if to.is_ipv4() { v4 } else { v6 };
            let Some(socket) = socket else { continue };
            if let Err(e) = socket.send_to(&bytes, to).await {
                // No route for the limited broadcast without a default route, an interface
                // going down between the scan and now: the other destinations still count.
                tracing::debug!(%to, "LAN discovery: send failed: {e}");
            }
        }
    }

    /// Dials `peer` at the addresses it was heard at, the first that answers wins.
    async fn lan_dial(self: Arc<Self>, peer: DeviceId, addrs: Vec<SocketAddr>) {
        // An IPv4 QUIC socket reaches only IPv4; a dual-stack one both families.
        for addr in addrs.into_iter().filter(|a| self.mux.reaches(*a)) {
            match self
                .transport
                .connect_timeout(addr, peer, DIAL_TIMEOUT)
                .await
            {
                Ok((conn, _)) => {
                    self.attach(peer, conn, true);
                    return;
                }
                Err(e) => {
                    tracing::info!(peer = %peer.abbrev(), %addr, "LAN discovery: dial failed: {e}")
                }
            }
        }
    }
}

/// Names the source of an ignored announcement in the log (not for duplicates, nor more than
/// once a minute per source and reason, so a stranger on the LAN does not fill it).
fn log_ignored(
    logged: &mut HashMap<(IpAddr, Discriminant<Ignored>), Instant>,
    from: SocketAddr,
    why: &Ignored,
) {
    match why {
        Ignored::RateLimited | Ignored::Replay(_) => return,
        Ignored::Malformed(lan::DecodeError::BadMagic) => return,
        _ => {}
    }
    let now = Instant::now();
    let key = (from.ip(), std::mem::discriminant(why));
    if logged
        .get(&key)
        .is_some_and(|t| now.duration_since(*t) < LOG_EVERY)
    {
        return;
    }
    if logged.len() >= 256 {
        logged.clear();
    }
    logged.insert(key, now);
    tracing::info!(%from, "LAN discovery: ignored an announcement: {why}");
}
