//! NAT traversal start-up: the rendezvous client on the shared socket, the STUN monitor, the
//! TURN allocation, and relay-everything mode (entered when only the TURN server answers over
//! UDP, left when the rendezvous server answers directly again).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use fybrk_net::identity::DeviceKey;
use fybrk_net::tls::AllowList;
use tokio::sync::Notify;

use super::{lock, Traversal};
use crate::state::StateDir;

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

/// What [`start_traversal`] started.
pub(super) struct Traversing {
    pub(super) handle: fybrk_net::rendezvous::ClientHandle,
    /// Notified when the rendezvous server sees us at a new address.
    pub(super) address_changed: Arc<Notify>,
    pub(super) nat: fybrk_net::stun::NatMonitor,
    pub(super) server: SocketAddr,
    pub(super) turn: Option<Arc<fybrk_net::turn::TurnClient>>,
}

/// Starts the rendezvous client on the shared socket, the STUN monitor and, with `--turn`,
/// the relay allocation.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_traversal(
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
pub(super) fn candidate_addrs(listen: SocketAddr) -> Vec<SocketAddr> {
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
