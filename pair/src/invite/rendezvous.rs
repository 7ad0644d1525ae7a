//! The rendezvous server named in an invitation: an address, or a host name and port to resolve.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// The longest host name DNS allows (RFC 1035), which also keeps its length in one byte.
pub const MAX_HOST_LEN: usize = 253;

/// Where the joiner finds the rendezvous server, as the inviter's config names it.
///
/// A name is kept as a name (not resolved by the inviter) so the joiner resolves it from its own
/// network, which may see a different address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rendezvous {
    /// A literal socket address. IPv6 flow info and scope id are not carried: they mean nothing
    /// on another device.
    Addr(SocketAddr),
    /// A DNS name and port.
    Host(HostPort),
}

/// A checked DNS host name with a port: 1 to [`MAX_HOST_LEN`] bytes of ASCII letters, digits,
/// `-` and `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: String,
    port: u16,
}

/// A rendezvous address that is neither `ip:port`, `[ipv6]:port` nor `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a rendezvous address: write it as host:port, ip:port or [ipv6]:port")]
pub struct RendezvousParseError(pub String);

impl HostPort {
    /// Checks `host` and pairs it with `port`.
    pub fn new(host: &str, port: u16) -> Result<Self, RendezvousParseError> {
        let ok = !host.is_empty()
            && host.len() <= MAX_HOST_LEN
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if ok {
            Ok(Self {
                host: host.to_owned(),
                port,
            })
        } else {
            Err(RendezvousParseError(format!("{host}:{port}")))
        }
    }

    /// The host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Rendezvous {
    /// `ip:port`, `[ipv6]:port` or `host:port`: what a resolver (`ToSocketAddrs`) accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rendezvous::Addr(a) => write!(f, "{a}"),
            Rendezvous::Host(h) => write!(f, "{h}"),
        }
    }
}

impl FromStr for Rendezvous {
    type Err = RendezvousParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Rendezvous::Addr(addr));
        }
        let bad = || RendezvousParseError(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        HostPort::new(host, port)
            .map(Rendezvous::Host)
            .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let v4: Rendezvous = "192.0.2.7:7000".parse().unwrap();
        assert_eq!(v4, Rendezvous::Addr("192.0.2.7:7000".parse().unwrap()));
        let v6: Rendezvous = "[2001:db8::1]:7000".parse().unwrap();
        assert_eq!(v6.to_string(), "[2001:db8::1]:7000");
        let host: Rendezvous = "rv.fybrk.example:7000".parse().unwrap();
        assert_eq!(host.to_string(), "rv.fybrk.example:7000");
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "host",
            "host:",
            "host:99999",
            "2001:db8::1:7000",
            "a b:1",
            ":80",
        ] {
            assert!(bad.parse::<Rendezvous>().is_err(), "{bad:?} parsed");
        }
        assert!(HostPort::new(&"a".repeat(MAX_HOST_LEN + 1), 1).is_err());
    }
}
