//! STUN Binding client (RFC 8489) over the [`MuxSocket`]: this device's reflexive address (its
//! public address as a STUN server sees it) and a NAT check that compares it across servers.
//!
//! - [`binding`]: one Binding transaction, with retransmission, returning XOR-MAPPED-ADDRESS.
//! - [`nat_check`]: asks every configured server at once and tells whether the NAT maps our
//!   socket to the same public address whatever the destination ("endpoint-independent", hole
//!   punching works) or not (punching is unlikely, use the relay).
//! - [`NatMonitor`]: repeats the check periodically, so a changed public address is noticed.
//! - [`stun_servers`]: the servers from `--stun HOST:PORT` values, `FYBRK_STUN`, or the defaults.
//!
//! Transactions (shared with [`crate::turn`]) retransmit on RFC 8489's doubling RTO but give up
//! after [`TRANSACTION_TIMEOUT`], so a check finishes within ~3 s even when UDP is blocked.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use stun_rs::attributes::stun::{ErrorCode, MappedAddress, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessage, StunMessageBuilder,
    TransactionId,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tracing::{debug, warn};

use crate::mux::{Datagram, MuxSocket};

/// Public STUN servers asked when none are configured (Google's; never contacted by tests).
pub const DEFAULT_STUN_SERVERS: [&str; 4] = [
    "stun.l.google.com:19302",
    "stun1.l.google.com:19302",
    "stun2.l.google.com:19302",
    "stun3.l.google.com:19302",
];

/// Environment variable with comma-separated STUN servers, used when no `--stun` is given.
pub const STUN_ENV: &str = "FYBRK_STUN";

/// The STUN port when a server is given without one (RFC 8489 §18.4).
pub const DEFAULT_STUN_PORT: u16 = 3478;

/// First retransmission timeout. RFC 8489 §6.2.1 recommends an RTO above 500 ms; 500 ms is still
/// well above any real round trip to a STUN server.
pub const INITIAL_RTO: Duration = Duration::from_millis(500);

/// How long a transaction waits in all. RFC 8489's full schedule (7 sends, 39.5 s) suits a
/// server that must eventually answer; a NAT check runs at start-up and from `fybrk status`, and
/// a path that lost three requests in a row is not usable for QUIC anyway. With a 500 ms RTO
/// the request goes out at 0, 0.5 and 1.5 s, and the last copy gets 1.5 s (three RTOs) to come
/// back.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3);

/// How often [`NatMonitor`] repeats the check by default: a changed public address (NAT reboot,
/// DHCP renewal, a laptop changing networks) is noticed within a minute, while each device costs
/// a public STUN server a few tiny requests per minute.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(60);

/// A STUN server as configured: host name or IP, and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StunServer {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl fmt::Display for StunServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_host_port(&self.host, self.port, f)
    }
}

pub(crate) fn fmt_host_port(host: &str, port: u16, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

impl FromStr for StunServer {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (host, port) = parse_host_port(s, DEFAULT_STUN_PORT).map_err(|why| ConfigError {
            value: s.to_string(),
            why,
        })?;
        Ok(StunServer { host, port })
    }
}

impl StunServer {
    /// Resolves the server to an address `local`'s socket can reach: the same IP family (an
    /// IPv4 server as an IPv4-mapped address for an IPv6 socket).
    pub async fn resolve(&self, local: SocketAddr) -> Result<SocketAddr, StunError> {
        resolve(&self.to_string(), &self.host, self.port, local)
            .await
            .map_err(|e| match e {
                ResolveError::Lookup(source) => StunError::Resolve {
                    server: self.to_string(),
                    source,
                },
                ResolveError::NoAddress => StunError::NoUsableAddress {
                    server: self.to_string(),
                    local,
                },
            })
    }
}

pub(crate) enum ResolveError {
    Lookup(io::Error),
    NoAddress,
}

/// Resolves `host:port` to an address of `local`'s family.
pub(crate) async fn resolve(
    name: &str,
    host: &str,
    port: u16,
    local: SocketAddr,
) -> Result<SocketAddr, ResolveError> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(ResolveError::Lookup)?
            .collect(),
    };
    let usable = addrs.into_iter().find_map(|a| fit_family(local, a));
    debug!(server = name, addr = ?usable, "resolved");
    usable.ok_or(ResolveError::NoAddress)
}

/// `addr` as `local`'s socket can send to it, or `None`.
fn fit_family(local: SocketAddr, addr: SocketAddr) -> Option<SocketAddr> {
    match (local.ip(), addr.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Some(addr),
        (IpAddr::V6(_), IpAddr::V6(_)) => Some(addr),
        // A dual-stack IPv6 socket reaches IPv4 through mapped addresses, and reports their
        // replies as coming from those, so the server is known by that form everywhere.
        (IpAddr::V6(_), IpAddr::V4(v4)) => Some(SocketAddr::new(
            IpAddr::V6(v4.to_ipv6_mapped()),
            addr.port(),
        )),
        (IpAddr::V4(_), IpAddr::V6(_)) => None,
    }
}

/// A STUN or TURN server setting that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid STUN server {value:?}: {why} (expected HOST:PORT, e.g. stun.l.google.com:19302)")]
pub struct ConfigError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

/// The STUN servers to use: the `--stun` values if any, else `FYBRK_STUN`, else
/// [`DEFAULT_STUN_SERVERS`].
pub fn stun_servers(cli: &[String]) -> Result<Vec<StunServer>, ConfigError> {
    let env = std::env::var(STUN_ENV).ok();
    stun_servers_from(cli, env.as_deref())
}

/// [`stun_servers`] with the environment passed in.
pub fn stun_servers_from(
    cli: &[String],
    env: Option<&str>,
) -> Result<Vec<StunServer>, ConfigError> {
    let given: Vec<&str> = if !cli.is_empty() {
        // `--stun a,b` works as well as `--stun a --stun b`.
        cli.iter().flat_map(|v| v.split(',')).collect()
    } else if let Some(env) = env.filter(|e| !e.trim().is_empty()) {
        env.split(',').collect()
    } else {
        DEFAULT_STUN_SERVERS.to_vec()
    };
    given
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// Splits `HOST:PORT`, `HOST`, `[IPv6]:PORT` or `[IPv6]`; `default_port` when the port is left
/// out. The error says what is wrong, for a message around it.
pub(crate) fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(format!("leave out {scheme}://"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("an opening '[' without its ']'".into());
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} in brackets is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            p if p.starts_with(':') => (host, Some(&p[1..])),
            _ => return Err(format!("unexpected {after:?} after ']'")),
        }
    } else {
        match s.matches(':').count() {
            0 => (s, None),
            1 => match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            },
            _ => return Err("an IPv6 address must be in brackets, e.g. [2001:db8::1]:3478".into()),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '?' | '@' | '#'))
    {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("port {p:?} is not a number from 1 to 65535")),
        },
    };
    Ok((host.to_string(), port))
}

/// Why a STUN query failed.
#[derive(Debug, thiserror::Error)]
pub enum StunError {
    /// The server name did not resolve.
    #[error("cannot resolve STUN server {server}: {source} (check the name and DNS)")]
    Resolve {
        /// The server as configured.
        server: String,
        /// The resolver's reason.
        source: io::Error,
    },
    /// The server has no address of our socket's IP family.
    #[error("STUN server {server} has no address reachable from the socket on {local} (IPv4/IPv6 mismatch)")]
    NoUsableAddress {
        /// The server as configured.
        server: String,
        /// Our socket's address.
        local: SocketAddr,
    },
    /// The request could not be sent.
    #[error("cannot send to STUN server {server}: {source} (is the network up?)")]
    Send {
        /// The server's address.
        server: SocketAddr,
        /// The OS's reason.
        source: io::Error,
    },
    /// No answer in time.
    #[error(
        "no answer from STUN server {server} within {}s: UDP may be blocked on this network, or \
         the server is down (try another with --stun HOST:PORT)", after.as_secs()
    )]
    Timeout {
        /// The server's address.
        server: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// The answer was not a valid STUN response.
    #[error(
        "malformed STUN reply from {server}: {reason} (is that a STUN server? try another with \
         --stun HOST:PORT)"
    )]
    Malformed {
        /// The server's address.
        server: SocketAddr,
        /// What is wrong with the reply.
        reason: String,
    },
    /// The server answered with an error.
    #[error("STUN server {server} refused the Binding request: {code} {reason}")]
    Rejected {
        /// The server's address.
        server: SocketAddr,
        /// STUN error code (e.g. 400).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// A success response without our address in it.
    #[error("STUN reply from {server} does not say our address (no XOR-MAPPED-ADDRESS): the server is broken; try another with --stun HOST:PORT")]
    NoMappedAddress {
        /// The server's address.
        server: SocketAddr,
    },
}

/// Offsets from the first transmission at which a request is (re)sent: RFC 8489's doubling RTO
/// (0, RTO, 3 RTO, 7 RTO, ...), keeping only sends that leave at least one RTO before `give_up`.
pub(crate) fn retransmit_offsets(rto: Duration, give_up: Duration) -> Vec<Duration> {
    let mut offsets = Vec::new();
    let mut at = Duration::ZERO;
    let mut wait = rto;
    while at + rto <= give_up {
        offsets.push(at);
        at += wait;
        wait *= 2;
    }
    offsets
}

/// Why a transaction got no response.
#[derive(Debug)]
pub(crate) enum TransactError {
    Timeout(Duration),
    Send(io::Error),
    /// The socket was dropped while we waited.
    Closed,
}

/// Sends `request` (whose transaction id is `tid`) to `server`, retransmitting as
/// [`retransmit_offsets`] says, and returns the first response with that id.
pub(crate) async fn transact(
    mux: &MuxSocket,
    server: SocketAddr,
    tid: [u8; 12],
    request: &[u8],
) -> Result<Datagram, TransactError> {
    let mut waiter = mux.expect_stun_reply(tid, server);
    let start = Instant::now();
    let give_up = start + TRANSACTION_TIMEOUT;
    for offset in retransmit_offsets(INITIAL_RTO, TRANSACTION_TIMEOUT) {
        tokio::select! {
            reply = waiter.recv() => return reply.ok_or(TransactError::Closed),
            () = sleep_until(start + offset) => {}
        }
        mux.send_to(request, server)
            .await
            .map_err(TransactError::Send)?;
    }
    tokio::select! {
        reply = waiter.recv() => reply.ok_or(TransactError::Closed),
        () = sleep_until(give_up) => Err(TransactError::Timeout(TRANSACTION_TIMEOUT)),
    }
}

/// A new random transaction id.
pub(crate) fn new_tid() -> [u8; 12] {
    *TransactionId::default().as_bytes()
}

/// Encodes `msg` (requests are small: no attribute we send comes near 1 KiB).
pub(crate) fn encode(msg: &StunMessage) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 1024];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        .map_err(|e| e.to_string())?;
    buf.truncate(n);
    Ok(buf)
}

/// Asks `server` for our reflexive address (a Binding request).
pub async fn binding(mux: &MuxSocket, server: SocketAddr) -> Result<SocketAddr, StunError> {
    let tid = new_tid();
    let request = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(tid))
        .build();
    let request = encode(&request).map_err(|reason| StunError::Malformed {
        server,
        reason: format!("cannot encode our own request: {reason}"),
    })?;
    let reply = transact(mux, server, tid, &request)
        .await
        .map_err(|e| match e {
            TransactError::Timeout(after) => StunError::Timeout { server, after },
            TransactError::Send(source) => StunError::Send { server, source },
            TransactError::Closed => StunError::Send {
                server,
                source: io::Error::new(io::ErrorKind::NotConnected, "the socket was closed"),
            },
        })?;
    parse_binding_response(server, tid, &reply.data)
}

/// Decodes any STUN reply to a request with `tid`, or says what is wrong with it.
pub(crate) fn decode_reply(
    tid: [u8; 12],
    data: &[u8],
    decoder: &stun_rs::MessageDecoder,
) -> Result<StunMessage, String> {
    if data.len() < 20 {
        return Err(format!(
            "{} bytes, shorter than the 20-byte STUN header",
            data.len()
        ));
    }
    let (msg, _) = decoder.decode(data).map_err(|e| e.to_string())?;
    if msg.transaction_id().as_bytes() != &tid {
        return Err("its transaction id is not the one we sent".into());
    }
    Ok(msg)
}

/// The error code and reason of an error response.
pub(crate) fn error_code(msg: &StunMessage) -> Option<(u16, String)> {
    let attr = msg.get::<ErrorCode>()?.as_error_code().ok()?;
    let code = attr.error_code();
    Some((code.error_code(), code.reason().to_string()))
}

/// Our reflexive address from a Binding response.
fn parse_binding_response(
    server: SocketAddr,
    tid: [u8; 12],
    data: &[u8],
) -> Result<SocketAddr, StunError> {
    let malformed = |reason: String| StunError::Malformed { server, reason };
    let msg =
        decode_reply(tid, data, &MessageDecoderBuilder::default().build()).map_err(malformed)?;
    if msg.method() != BINDING {
        return Err(malformed(format!(
            "a response to method {:#06x}, not to Binding",
            msg.method().as_u16()
        )));
    }
    match msg.class() {
        MessageClass::SuccessResponse => {}
        MessageClass::ErrorResponse => {
            let (code, reason) = error_code(&msg)
                .ok_or_else(|| malformed("an error response without ERROR-CODE".into()))?;
            return Err(StunError::Rejected {
                server,
                code,
                reason,
            });
        }
        other => return Err(malformed(format!("a {other:?} instead of a response"))),
    }
    if let Some(attr) = msg.get::<XorMappedAddress>() {
        let xor = attr
            .as_xor_mapped_address()
            .map_err(|e| malformed(e.to_string()))?;
        return Ok(*xor.socket_address());
    }
    // RFC 3489 servers answer with MAPPED-ADDRESS only.
    if let Some(attr) = msg.get::<MappedAddress>() {
        let mapped = attr
            .as_mapped_address()
            .map_err(|e| malformed(e.to_string()))?;
        return Ok(*mapped.socket_address());
    }
    Err(StunError::NoMappedAddress { server })
}

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
/// Takes at most about [`TRANSACTION_TIMEOUT`] plus name resolution. Give at least two servers
/// (with different addresses) for a mapping verdict.
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
            (i, result)
        });
    }
    let mut results: Vec<Option<Result<(SocketAddr, SocketAddr), String>>> =
        servers.iter().map(|_| None).collect();
    while let Some(joined) = queries.join_next().await {
        match joined {
            Ok((i, result)) => results[i] = Some(result.map_err(|e| e.to_string())),
            Err(e) => warn!("a STUN query task failed: {e}"),
        }
    }
    let mut report = NatReport {
        udp_works: false,
        reflexive: Vec::new(),
        mapping: Mapping::Unknown,
        errors: Vec::new(),
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
    report.udp_works = !answers.is_empty();
    report.mapping = classify_mapping(&answers);
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

#[cfg(test)]
mod tests;
