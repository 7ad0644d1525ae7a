//! Router port mapping: asking the LAN's gateway to forward a UDP port of its public address to
//! the daemon's listen port, so that peers behind any NAT (symmetric ones included) can reach
//! this device directly, as Syncthing and Tailscale do.
//!
//! Three protocols, tried in this order, the first that grants a mapping wins:
//! [`pcp`] (RFC 6887, MAP opcode), [`natpmp`] (RFC 6886) and [`upnp`] (UPnP IGD: SSDP search on
//! 239.255.255.250:1900, then SOAP `AddPortMapping` / `GetExternalIPAddress` on the gateway's
//! `WANIPConnection:2`, `:1` or `WANPPPConnection:1`). Everything goes to the gateway only: the
//! next hop of the IPv4 default route ([`gateway`]), or the LAN's multicast group for SSDP.
//!
//! PCP and NAT-PMP name the internal port in the request, so they are sent from a socket of
//! their own (an ephemeral port): the daemon's QUIC socket is not involved, and its datagrams
//! need no demultiplexing for the gateway's answers. The mapping is asked for a lifetime of
//! [`LIFETIME`], renewed at half of what the gateway granted, deleted when the daemon stops.
//!
//! # Layout
//!
//! - [`pcp`], [`natpmp`], [`upnp`]: the wire formats, pure encoding and decoding (property
//!   tests: arbitrary bytes never panic, answers round-trip).
//! - [`lifecycle`]: [`PortMapper`], the policy (order, retransmission, renewal, giving up and
//!   trying again later, deletion) as a state machine without I/O or clock.
//! - [`driver`]: the thin tokio driver: its sockets, the UPnP HTTP exchange,
//!   [`spawn`](driver::spawn) for the daemon and [`probe`](driver::probe) for `nat-check`.
//! - [`gateway`]: the default gateway from `/proc/net/route`.

pub mod driver;
pub mod gateway;
pub mod lifecycle;
pub mod natpmp;
pub mod pcp;
pub mod upnp;

#[cfg(test)]
mod tests;

use std::net::SocketAddrV4;
use std::time::Duration;

pub use driver::{probe, spawn, PortMapConfig, PortMapHandle};
pub use lifecycle::{Action, Event, PortMapper};

/// The lifetime asked for: two hours, RFC 6886's recommendation; renewed at half of what was
/// granted, so a daemon that dies leaves a mapping that disappears on its own within that time.
pub const LIFETIME: Duration = Duration::from_secs(7200);

/// A port-mapping protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    NatPmp,
    /// UPnP Internet Gateway Device.
    Upnp,
}

impl Protocol {
    /// Every protocol, in the order they are tried.
    pub const ALL: [Protocol; 3] = [Protocol::Pcp, Protocol::NatPmp, Protocol::Upnp];

    /// Its usual name (`PCP`, `NAT-PMP`, `UPnP`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Upnp => "UPnP",
        }
    }

    /// Parses a name as [`Protocol::name`] spells it (any case, `natpmp` too).
    pub fn from_name(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "pcp" => Some(Protocol::Pcp),
            "nat-pmp" | "natpmp" => Some(Protocol::NatPmp),
            "upnp" => Some(Protocol::Upnp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A mapping the gateway granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Who granted it.
    pub protocol: Protocol,
    /// The public address and port that reach the listen port.
    pub external: SocketAddrV4,
    /// How long it lasts from the grant.
    pub lifetime: Duration,
}

/// What a gateway's answer to one request said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A mapping (new or renewed).
    Granted {
        /// The public address and port.
        external: SocketAddrV4,
        /// Its lifetime.
        lifetime: Duration,
    },
    /// The gateway answered but will not map (an error code, or it speaks another version).
    Refused,
}

/// A datagram or text that is not the answer expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Too short for its kind.
    #[error("too short")]
    Short,
    /// Another protocol version.
    #[error("version {0}")]
    Version(u8),
    /// Another opcode (or a request).
    #[error("opcode {0}")]
    Opcode(u8),
    /// A mapping of another transport protocol.
    #[error("transport protocol {0}")]
    Protocol(u8),
    /// Not the HTTP/XML expected.
    #[error("not the text expected")]
    Text,
    /// The description names no port-mapping service.
    #[error("no WANIPConnection or WANPPPConnection service")]
    NoService,
}
