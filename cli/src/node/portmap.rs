//! The daemon's router port mapping (`fybrk_net::portmap`): while traversal runs (a rendezvous
//! server is configured), the LAN's gateway is asked to map the listen port; the public address
//! it grants is registered with the rendezvous server beside the interface addresses, so a
//! peer's introduction names it and the peer's probes reach this device through the router
//! whatever its NAT does (a symmetric NAT included). Without a rendezvous server nobody would
//! learn the address, so nothing is asked. The gateway is read again every 20 s; a new one gets
//! asked (and the old mapping deleted). Removed at unmount, bounded by [`STOP_WITHIN`].

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use fybrk_net::portmap::{Mapping, PortMapConfig, PortMapHandle, Protocol};
use tokio::sync::{oneshot, watch};

use super::lock;

/// How long unmounting waits for the gateway to confirm the deletion: it is one LAN hop away;
/// a mapping whose deletion is lost expires on its own (its lifetime, at most two hours).
pub(super) const STOP_WITHIN: Duration = Duration::from_secs(2);

/// `FYBRK_PORT_MAPPING_PROTOCOLS`: the protocols to try, comma separated (`pcp`, `nat-pmp`,
/// `upnp`), for diagnosis and the lab's per-protocol tests; default all, in that order.
pub const PROTOCOLS_ENV: &str = "FYBRK_PORT_MAPPING_PROTOCOLS";

/// The protocols to try (see [`PROTOCOLS_ENV`]); unknown names are ignored.
pub fn protocols() -> Vec<Protocol> {
    match std::env::var(PROTOCOLS_ENV) {
        Ok(v) => v
            .split(',')
            .filter_map(|s| Protocol::from_name(s.trim()))
            .collect(),
        Err(_) => Protocol::ALL.to_vec(),
    }
}

/// How often the default gateway is read again: a laptop that moved to another network has
/// another router, and the mapping belongs on that one.
const GATEWAY_RESCAN: Duration = Duration::from_secs(20);

/// The running port mapper of the daemon: a supervisor task that keeps one
/// [`PortMapHandle`] on the current default gateway (none while there is none) and passes its
/// mapping on.
pub(super) struct PortMapping {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    mapping: watch::Receiver<Option<Mapping>>,
}

impl PortMapping {
    /// Starts mapping `listen`'s port on the default gateway, now and after every change of
    /// it (within a tokio runtime). `None` for a loopback or IPv6 listen address.
    pub(super) fn start(listen: SocketAddr) -> Option<PortMapping> {
        if listen.ip().is_loopback() || !listen.is_ipv4() {
            return None;
        }
        let (tx, mapping) = watch::channel(None);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(listen.port(), tx, stop_rx));
        Some(PortMapping {
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
            mapping,
        })
    }

    /// The mapping held now.
    pub(super) fn current(&self) -> Option<Mapping> {
        *self.mapping.borrow()
    }

    /// The mapping and its changes.
    pub(super) fn watch(&self) -> watch::Receiver<Option<Mapping>> {
        self.mapping.clone()
    }

    /// Deletes the mapping (best effort, at most [`STOP_WITHIN`] and a little).
    pub(super) fn stop(&self, rt: &tokio::runtime::Runtime) {
        if let Some(s) = lock(&self.stop).take() {
            let _ = s.send(());
        }
        let task = lock(&self.task).take();
        if let Some(t) = task {
            rt.block_on(async {
                let _ = tokio::time::timeout(STOP_WITHIN + Duration::from_millis(500), t).await;
            });
        }
    }
}

/// Keeps a mapper on the current default gateway until `stop`, then deletes its mapping.
async fn supervise(port: u16, tx: watch::Sender<Option<Mapping>>, mut stop: oneshot::Receiver<()>) {
    let mut current: Option<(std::net::Ipv4Addr, PortMapHandle)> = None;
    let mut tick = tokio::time::interval(GATEWAY_RESCAN);
    loop {
        let gateway = fybrk_net::portmap::gateway::default_gateway();
        if current.as_ref().map(|(g, _)| *g) != gateway {
            if let Some((old, h)) = current.take() {
                tracing::info!(%old, new = ?gateway, "the default gateway changed: port mapping again");
                tx.send_replace(None);
                h.stop(STOP_WITHIN).await;
            }
            if let Some(gateway) = gateway {
                let config = PortMapConfig {
                    gateway,
                    internal_port: port,
                    protocols: protocols(),
                };
                match fybrk_net::portmap::spawn(config) {
                    Ok(h) => {
                        tracing::debug!(%gateway, "asking the gateway for a port mapping");
                        current = Some((gateway, h));
                    }
                    Err(e) => tracing::warn!("no port mapping: {e}"),
                }
            }
        }
        let mut mapping = current.as_ref().map(|(_, h)| h.mapping());
        loop {
            tokio::select! {
                _ = &mut stop => {
                    if let Some((_, h)) = current.take() {
                        h.stop(STOP_WITHIN).await;
                    }
                    tx.send_replace(None);
                    return;
                }
                _ = tick.tick() => break,
                r = async { mapping.as_mut()?.changed().await.ok() }, if mapping.is_some() => {
                    match r {
                        Some(()) => {
                            let m = mapping.as_mut().and_then(|m| *m.borrow_and_update());
                            tx.send_replace(m);
                        }
                        None => mapping = None,
                    }
                }
            }
        }
    }
}

/// The candidates registered with the rendezvous server: the interface addresses, then the
/// mapped public address. At most `max`: the mapped one replaces the last interface address
/// rather than being cut off.
pub(super) fn with_mapped(
    mut lan: Vec<SocketAddr>,
    mapped: Option<Mapping>,
    max: usize,
) -> Vec<SocketAddr> {
    if let Some(m) = mapped {
        let addr = SocketAddr::V4(m.external);
        if !lan.contains(&addr) {
            lan.truncate(max.saturating_sub(1));
            lan.push(addr);
        }
    }
    lan
}

/// What `status` shows of it.
pub(super) fn status(m: &Mapping) -> fybrk_control::PortMappingStatus {
    fybrk_control::PortMappingStatus {
        protocol: m.protocol.name().to_string(),
        external_addr: SocketAddr::V4(m.external),
        lifetime_secs: m.lifetime.as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn the_mapped_address_comes_last_and_is_never_cut_off() {
        let m = Mapping {
            protocol: Protocol::Pcp,
            external: SocketAddrV4::new(Ipv4Addr::new(11, 0, 0, 2), 4000),
            lifetime: Duration::from_secs(7200),
        };
        let lan: Vec<SocketAddr> = (1..=3)
            .map(|i| SocketAddr::from(([192, 168, 1, i], 4000)))
            .collect();
        let got = with_mapped(lan.clone(), Some(m), 8);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], SocketAddr::V4(m.external));
        let got = with_mapped(lan.clone(), Some(m), 3);
        assert_eq!(got, vec![lan[0], lan[1], SocketAddr::V4(m.external)]);
        assert_eq!(with_mapped(lan.clone(), None, 3), lan);
    }
}
