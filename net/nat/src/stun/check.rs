//! The NAT check: our reflexive address as several STUN servers see it, and whether the NAT
//! maps our socket the same way whatever the destination; [`NatMonitor`] repeats it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use super::{binding, StunServer};
use crate::mux::MuxSocket;

/// How often [`NatMonitor`] repeats the check by default: a changed public address (NAT reboot,
/// DHCP renewal, a laptop changing networks) is noticed within a minute, while each device costs
/// a public STUN server a few tiny requests per minute.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(60);

/// Whether the NAT keeps our public address whatever the destination (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Every server saw the same address: peers can punch through to it.
    EndpointIndependent,
    /// Servers saw different addresses (a symmetric NAT): punching is unlikely, use the relay.
    EndpointDependent,
    /// Fewer than two servers answered.
    Unknown,
}

/// What [`nat_check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatReport {
    /// Some server answered: UDP gets out and back.
    pub udp_works: bool,
    /// Each server as configured, with the address it saw us at (`None`: no answer).
    pub reflexive: Vec<(String, Option<SocketAddr>)>,
    /// Whether the mapping is endpoint-independent.
    pub mapping: Mapping,
    /// Each server that failed, with why.
    pub errors: Vec<(String, String)>,
    /// Our address as a server saw it over IPv6 (`None`: the socket is IPv4 only, or no server
    /// answered over IPv6). IPv6 has no NAT, so this is an interface's own global address and
    /// peers can reach it directly (firewalls permitting).
    pub ipv6: Option<SocketAddr>,
}

impl NatReport {
    /// Our public address: the one most servers saw.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for addr in self.reflexive.iter().filter_map(|(_, a)| *a) {
            *counts.entry(addr).or_default() += 1;
        }
        let first = |a: &SocketAddr| {
            self.reflexive
                .iter()
                .position(|(_, r)| r.as_ref() == Some(a))
        };
        // Most votes; among equals, the earliest configured server.
        counts
            .into_iter()
            .max_by_key(|(a, n)| (*n, std::cmp::Reverse(first(a))))
            .map(|(a, _)| a)
    }
}

/// Compares the answers of distinct servers (server address, address it saw).
pub(crate) fn classify_mapping(answers: &[(SocketAddr, SocketAddr)]) -> Mapping {
    let mut by_server: HashMap<SocketAddr, SocketAddr> = HashMap::new();
    for (server, seen) in answers {
        by_server.insert(*server, *seen);
    }
    let mut seen = by_server.values();
    let Some(first) = seen.next() else {
        return Mapping::Unknown;
    };
    if by_server.len() < 2 {
        Mapping::Unknown
    } else if seen.all(|s| s == first) {
        Mapping::EndpointIndependent
    } else {
        Mapping::EndpointDependent
    }
}

/// Asks every server in `servers` at once for our reflexive address and compares the answers.
/// Takes at most about [`TRANSACTION_TIMEOUT`](super::TRANSACTION_TIMEOUT) plus name
/// resolution. Give at least two servers (with different addresses) for a mapping verdict.
pub async fn nat_check(mux: &MuxSocket, servers: &[StunServer]) -> NatReport {
    let local = match mux.local_addr() {
        Ok(local) => local,
        Err(e) => {
            return NatReport {
                udp_works: false,
                reflexive: servers.iter().map(|s| (s.to_string(), None)).collect(),
                mapping: Mapping::Unknown,
                errors: servers
                    .iter()
                    .map(|s| (s.to_string(), format!("the socket is unusable: {e}")))
                    .collect(),
                ipv6: None,
            }
        }
    };
    let mut queries = JoinSet::new();
    for (i, server) in servers.iter().enumerate() {
        let (mux, server) = (mux.clone(), server.clone());
        queries.spawn(async move {
            let result = async {
                let addr = server.resolve(local).await?;
                binding(&mux, addr).await.map(|seen| (addr, seen))
            }
            .await;
            (i, false, result)
        });
    }
    // A dual-stack socket also asks each server over IPv6 (the queries above prefer IPv4).
    if local.is_ipv6() {
        for (i, server) in servers.iter().enumerate() {
            let (mux, server) = (mux.clone(), server.clone());
            queries.spawn(async move {
                let result = async {
                    let addr = server.resolve_v6().await?;
                    binding(&mux, addr).await.map(|seen| (addr, seen))
                }
                .await;
                (i, true, result)
            });
        }
    }
    let mut results: Vec<Option<Result<(SocketAddr, SocketAddr), String>>> =
        servers.iter().map(|_| None).collect();
    let mut over_v6: Vec<Option<SocketAddr>> = servers.iter().map(|_| None).collect();
    while let Some(joined) = queries.join_next().await {
        match joined {
            Ok((i, false, result)) => results[i] = Some(result.map_err(|e| e.to_string())),
            Ok((i, true, Ok((_, seen)))) => over_v6[i] = Some(seen),
            Ok((i, true, Err(e))) => debug!(server = %servers[i], "no STUN answer over IPv6: {e}"),
            Err(e) => warn!("a STUN query task failed: {e}"),
        }
    }
    let mut report = NatReport {
        udp_works: false,
        reflexive: Vec::new(),
        mapping: Mapping::Unknown,
        errors: Vec::new(),
        ipv6: None,
    };
    let mut answers = Vec::new();
    for (server, result) in servers.iter().zip(results) {
        let name = server.to_string();
        match result {
            Some(Ok((addr, seen))) => {
                answers.push((addr, seen));
                report.reflexive.push((name, Some(seen)));
            }
            Some(Err(e)) => {
                debug!(server = %name, "STUN query failed: {e}");
                report.reflexive.push((name.clone(), None));
                report.errors.push((name, e));
            }
            None => {
                report.reflexive.push((name.clone(), None));
                report.errors.push((name, "the query task failed".into()));
            }
        }
    }
    report.udp_works = !answers.is_empty() || over_v6.iter().any(Option::is_some);
    report.mapping = classify_mapping(&answers);
    // In server order: an IPv6-only server's ordinary answer counts too.
    report.ipv6 = answers
        .iter()
        .map(|(_, seen)| *seen)
        .chain(over_v6.into_iter().flatten())
        .find(SocketAddr::is_ipv6);
    report
}

/// Repeats [`nat_check`] periodically in the background; stops when dropped.
#[derive(Debug)]
pub struct NatMonitor {
    latest: watch::Receiver<Option<NatReport>>,
    task: tokio::task::JoinHandle<()>,
}

impl NatMonitor {
    /// Starts checking now and then every `every` (see [`MONITOR_INTERVAL`]). Must be called
    /// inside a tokio runtime.
    pub fn spawn(mux: MuxSocket, servers: Vec<StunServer>, every: Duration) -> NatMonitor {
        let (tx, latest) = watch::channel(None);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let report = nat_check(&mux, &servers).await;
                let changed =
                    tx.borrow().as_ref().map(NatReport::public_addr) != Some(report.public_addr());
                if changed {
                    debug!(public = ?report.public_addr(), mapping = ?report.mapping, "NAT check");
                }
                tx.send_replace(Some(report));
            }
        });
        NatMonitor { latest, task }
    }

    /// The most recent report, once the first check has finished.
    pub fn latest(&self) -> Option<NatReport> {
        self.latest.borrow().clone()
    }

    /// A receiver that wakes after every check.
    pub fn subscribe(&self) -> watch::Receiver<Option<NatReport>> {
        self.latest.clone()
    }
}

impl Drop for NatMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}
