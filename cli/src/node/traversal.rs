//! NAT traversal start-up: the rendezvous client on the shared socket, the STUN monitor, the
//! TURN allocation, and relay-everything mode (entered when only the TURN server answers over
//! UDP, left when the rendezvous server answers directly again).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use fybrk_net::identity::DeviceKey;
use fybrk_net::tls::AllowList;
use tokio::sync::Notify;

use super::policy::{RelayAllAction, RelayAllPolicy};
use super::{lock, Traversal};
use crate::state::StateDir;

/// How often the LAN addresses given to the rendezvous server are read again (interfaces
/// change when a laptop moves; the server's registrations last 90 s).
const LAN_RESCAN: Duration = Duration::from_secs(20);

/// What [`start_traversal`] started.
pub(super) struct Traversing {
    pub(super) handle: fybrk_net::rendezvous::ClientHandle,
    /// Notified when the rendezvous server sees us at a new address.
    pub(super) address_changed: Arc<Notify>,
    pub(super) nat: fybrk_net::stun::NatMonitor,
    pub(super) server: SocketAddr,
    pub(super) turn: Option<Arc<fybrk_net::turn::TurnClient>>,
    /// The router's port mapping, when asked for (`port_mapping`) and a gateway exists.
    pub(super) port_mapping: Option<super::portmap::PortMapping>,
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
    // The puncher's first probes carry a low TTL of their own (see `Puncher`).
    let send = move |to: SocketAddr, data: &[u8], ttl: Option<u8>| match ttl {
        Some(ttl) => send_mux.try_send_to_with_ttl(data, to, ttl),
        None => send_mux.try_send_to(data, to),
    };
    let (handle, mut events, _task) =
        fybrk_net::rendezvous::spawn_client_with_ttl(client, send, rx);
    // The router's port mapping: its public address joins the candidates once granted.
    let port_mapping = traversal
        .port_mapping
        .then(|| super::portmap::PortMapping::start(listen_addr))
        .flatten();
    {
        // Interfaces come and go (a laptop joins another network): the LAN addresses the
        // server hands to peers are read again now and then, and at once when the port
        // mapping changes; the client registers again only when they changed.
        let handle = handle.clone();
        // Without a port mapper: a channel that never changes (its sender is gone).
        let mut mapped = port_mapping.as_ref().map_or_else(
            || tokio::sync::watch::channel(None).1,
            super::portmap::PortMapping::watch,
        );
        rt.spawn(async move {
            let mut tick = tokio::time::interval(LAN_RESCAN);
            tick.tick().await;
            let mut watching = true;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    r = mapped.changed(), if watching => watching = r.is_ok(),
                }
                let lan = super::portmap::with_mapped(
                    lan_candidates(listen_addr, server_addr),
                    *mapped.borrow_and_update(),
                    fybrk_net::rendezvous::messages::MAX_LAN_CANDIDATES,
                );
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
    let address_changed = Arc::new(Notify::new());
    // Where the rendezvous server last saw us.
    let (observed_tx, observed_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
    {
        // An introduction names the peer's public and relayed addresses: permit both on our
        // relay at once, so the peer's probes (and then QUIC) can reach us through it, from
        // its NAT or through its own relay.
        let turn = turn.clone();
        let address_changed = address_changed.clone();
        rt.spawn(async move {
            let mut seen_at = None;
            while let Some(e) = events.recv().await {
                tracing::info!(event = ?e, "rendezvous");
                match &e {
                    fybrk_net::rendezvous::ClientEvent::Registered { observed } => {
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
        rt.spawn(relay_all(
            mux,
            handle,
            server_addr,
            turn,
            observed_rx,
            address_changed,
        ));
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
        port_mapping,
    })
}

/// Drives the [`RelayAllPolicy`] of a daemon with a TURN relay: everything goes through the
/// relay if the rendezvous server does not answer over UDP at start, until a direct probe gets
/// an answer (then the peers are reconnected over the new paths). `observed`: where the
/// rendezvous server saw us at each registration.
async fn relay_all(
    mux: fybrk_net::mux::MuxSocket,
    handle: fybrk_net::rendezvous::ClientHandle,
    server: SocketAddr,
    turn: Arc<fybrk_net::turn::TurnClient>,
    mut observed: tokio::sync::watch::Receiver<Option<SocketAddr>>,
    address_changed: Arc<Notify>,
) {
    let mut policy = RelayAllPolicy::new(Instant::now(), turn.relayed_addr().ip());
    // The rendezvous client's events stop only when it does.
    let mut listening = true;
    loop {
        while let Some(action) = policy.poll_action() {
            match action {
                RelayAllAction::Enter => {
                    let turn_server = turn.server_addr();
                    tracing::warn!(
                        rendezvous = %server, turn = %turn_server,
                        "the rendezvous server does not answer over UDP, the TURN server does: \
                         this network seems to let UDP through to the TURN server only, so \
                         everything goes through the relay"
                    );
                    mux.set_relay_all(Some(turn_server));
                    if let Err(e) = turn.bind_peer(server).await {
                        tracing::warn!("cannot reach the rendezvous server through the relay: {e}");
                    }
                    let _ = handle.register_now().await;
                }
                RelayAllAction::ProbeDirect => {
                    mux.set_probe_direct(Some(server));
                    let _ = handle.register_now().await;
                }
                RelayAllAction::EndProbe => {
                    mux.set_probe_direct(None);
                    let _ = handle.register_now().await;
                }
                RelayAllAction::Leave => {
                    mux.set_relay_all(None);
                    tracing::info!(
                        rendezvous = %server,
                        "the rendezvous server answers directly again: UDP gets through, so the \
                         relay is used only where no direct path answers"
                    );
                    // Reconnect every peer: the paths through the relay are not needed now.
                    address_changed.notify_one();
                }
            }
            policy.handle_action_done(Instant::now());
        }
        if policy.is_finished() {
            return;
        }
        let Some(deadline) = policy.poll_timeout() else {
            // Not finished, nothing pending: cannot happen once the action is done.
            return;
        };
        tokio::select! {
            // A registration that arrived by the deadline counts before the deadline does.
            biased;
            changed = observed.changed(), if listening => match changed {
                Ok(()) => {
                    if let Some(at) = *observed.borrow_and_update() {
                        policy.handle_registered(Instant::now(), at);
                    }
                }
                Err(_) => listening = false,
            },
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                policy.handle_timeout(Instant::now());
            }
        }
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
/// the invitation is for another device). A dual-stack socket (`[::]`) adds the IPv6 ones
/// after the IPv4 ones ([`is_v6_candidate`]); an IPv4 socket lists IPv4 only.
pub(super) fn candidate_addrs(listen: SocketAddr) -> Vec<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut v6: Vec<SocketAddr> = Vec::new();
    if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
        for ifa in ifs {
            let Some(a) = ifa.address else { continue };
            if let Some(s) = a.as_sockaddr_in() {
                let ip = IpAddr::V4(s.ip());
                if !ip.is_loopback() {
                    addrs.push(SocketAddr::new(ip, listen.port()));
                }
            } else if let Some(s) = a.as_sockaddr_in6().filter(|_| listen.is_ipv6()) {
                if is_v6_candidate(s.ip()) {
                    v6.push(SocketAddr::new(IpAddr::V6(s.ip()), listen.port()));
                }
            }
        }
    }
    addrs.extend(v6);
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

/// Whether an interface's IPv6 address is worth offering to peers: global unicast and
/// unique-local ones. Not link-local (useless without the interface's scope, which a peer on
/// another link cannot use; LAN discovery handles the link), loopback, multicast or mapped.
fn is_v6_candidate(ip: Ipv6Addr) -> bool {
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unicast_link_local()
        || ip.to_ipv4_mapped().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routable_ipv6_addresses_are_candidates() {
        for good in ["2001:db8::5", "2a00:1450::1", "fd12:3456::1"] {
            assert!(is_v6_candidate(good.parse().unwrap()), "{good}");
        }
        for bad in ["fe80::1", "::1", "::", "ff02::1", "::ffff:10.0.0.1"] {
            assert!(!is_v6_candidate(bad.parse().unwrap()), "{bad}");
        }
    }
}
