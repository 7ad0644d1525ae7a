//! STUN server configuration: `--stun HOST:PORT` values, `FYBRK_STUN`, the defaults, and
//! resolving a server to an address our socket can reach. The `HOST:PORT` parser is shared
//! with `turn:` URLs.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use tracing::debug;

use super::StunError;

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
    /// Resolves the server to an address `local`'s socket can reach: the same IP family, or
    /// either for an IPv6 (dual-stack) socket.
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

impl StunServer {
    /// Resolves the server to one of its IPv6 addresses (for a dual-stack socket's IPv6 check).
    pub async fn resolve_v6(&self) -> Result<SocketAddr, StunError> {
        let any_v6 = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0);
        let addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|source| StunError::Resolve {
                    server: self.to_string(),
                    source,
                })?
                .collect(),
        };
        addrs
            .into_iter()
            .find(|a| a.is_ipv6() && crate::mux::canonical(*a).is_ipv6())
            .ok_or(StunError::NoUsableAddress {
                server: self.to_string(),
                local: any_v6,
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
    // A dual-stack socket asks over IPv4 first: the mapping verdict is about the IPv4 NAT
    // (IPv6 has none); `nat_check` asks over IPv6 on its own (`resolve_v6`).
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.into_iter().partition(SocketAddr::is_ipv4);
    let usable = v4.into_iter().chain(v6).find_map(|a| fit_family(local, a));
    debug!(server = name, addr = ?usable, "resolved");
    usable.ok_or(ResolveError::NoAddress)
}

/// `addr` as `local`'s socket can send to it, or `None`.
fn fit_family(local: SocketAddr, addr: SocketAddr) -> Option<SocketAddr> {
    match (local.ip(), addr.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Some(addr),
        (IpAddr::V6(_), IpAddr::V6(_)) => Some(addr),
        // A dual-stack IPv6 socket reaches IPv4 too; the mux maps the address on the way out
        // and reports replies under the plain one, so the server is known by that form.
        (IpAddr::V6(_), IpAddr::V4(_)) => Some(addr),
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
