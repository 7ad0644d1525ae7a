//! The daemon's router port mapping (`fybrk_net::portmap`): while traversal runs (a rendezvous
//! server is configured), the LAN's gateway is asked to map the listen port; the public address
//! it grants is registered with the rendezvous server beside the interface addresses, so a
//! peer's introduction names it and the peer's probes reach this device through the router
//! whatever its NAT does (a symmetric NAT included). Without a rendezvous server nobody would
//! learn the address, so nothing is asked. Removed at unmount, bounded by [`STOP_WITHIN`].

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use fybrk_net::portmap::{Mapping, PortMapConfig, PortMapHandle, Protocol};
use tokio::sync::watch;

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

/// The running port mapper of the daemon.
pub(super) struct PortMapping {
    handle: Mutex<Option<PortMapHandle>>,
    mapping: watch::Receiver<Option<Mapping>>,
}

impl PortMapping {
    /// Starts asking the default gateway for a mapping of `listen`'s port (within a tokio
    /// runtime). `None`: no IPv4 default gateway, a loopback-only listen address, or no socket.
    pub(super) fn start(listen: SocketAddr) -> Option<PortMapping> {
        if listen.ip().is_loopback() || !listen.is_ipv4() {
            return None;
        }
        let Some(gateway) = fybrk_net::portmap::gateway::default_gateway() else {
            tracing::debug!("no IPv4 default gateway: no port mapping");
            return None;
        };
        let config = PortMapConfig {
            gateway,
            internal_port: listen.port(),
            protocols: protocols(),
        };
        match fybrk_net::portmap::spawn(config) {
            Ok(handle) => {
                tracing::debug!(%gateway, "asking the gateway for a port mapping");
                Some(PortMapping {
                    mapping: handle.mapping(),
                    handle: Mutex::new(Some(handle)),
                })
            }
            Err(e) => {
                tracing::warn!("no port mapping: {e}");
                None
            }
        }
    }

    /// The mapping held now.
    pub(super) fn current(&self) -> Option<Mapping> {
        *self.mapping.borrow()
    }

    /// The mapping and its changes.
    pub(super) fn watch(&self) -> watch::Receiver<Option<Mapping>> {
        self.mapping.clone()
    }

    /// Deletes the mapping (best effort, at most [`STOP_WITHIN`]).
    pub(super) fn stop(&self, rt: &tokio::runtime::Runtime) {
        let handle = lock(&self.handle).take();
        if let Some(h) = handle {
            rt.block_on(h.stop(STOP_WITHIN));
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
