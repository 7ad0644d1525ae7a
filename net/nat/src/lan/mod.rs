//! LAN discovery: paired devices on the same network find each other without any server, by
//! announcing themselves on the LAN (signed), like Syncthing's local discovery.
//!
//! What is sent: an [`Announcement`](wire::Announcement) (device id, public key, QUIC listen
//! port, interface addresses, timestamp, Ed25519 signature by the device key) in one UDP
//! datagram to [`DEFAULT_PORT`] (configurable) at `255.255.255.255`, at each interface's
//! directed broadcast address, and at the IPv6 link-local multicast group [`MULTICAST_GROUP`]
//! on each interface; at start, when the interface addresses change, and every 30-60 s.
//! Receivers believe only announcements from devices they are paired with, correctly signed,
//! within a timestamp window and newer than the last one taken from that device; each source
//! address is rate limited. A paired device heard at an address it has no direct link on is
//! dialled at once (the QUIC handshake then authenticates it as always).
//!
//! Why a socket of its own and not the daemon's QUIC socket: broadcast needs `SO_BROADCAST`
//! and everybody on the LAN must listen on one well-known port, which several daemons on one
//! machine share with `SO_REUSEADDR` (broadcast and multicast datagrams reach all of them);
//! the QUIC socket's port is per daemon and may be random.
//!
//! This module lives in `fybrk-nat` because it is one more way of finding a path to a peer,
//! like the rendezvous server, with the same shape (a signed wire format, a state machine
//! without I/O, small helpers for the sockets); which peers to trust and what a found path is
//! used for stays the daemon's business (`cli/src/node/lan.rs` is the driver).
//!
//! # Layout
//!
//! - [`wire`]: the announcement's encoding, decoding and signature.
//! - [`policy`]: [`LanDiscovery`], when to announce, what to accept, whom to dial (no I/O, no
//!   clock).
//! - [`net`]: interface enumeration (`getifaddrs`), the discovery sockets and where
//!   announcements go.

pub mod net;
pub mod policy;
pub mod wire;

#[cfg(test)]
mod tests;

pub use policy::{Announce, Config, Ignored, LanDiscovery, Peers, Verdict};
pub use wire::{Announcement, DecodeError, EncodeError};

/// The UDP port announcements go to and are heard on, unless configured otherwise
/// (`lan_discovery_port`): beside QUIC's default 22100 and the rendezvous server's 22101 (not
/// that one: a machine may run a daemon and `fybrk rendezvous` with their defaults, and the
/// rendezvous socket does not share its port). Syncthing uses 21027 for the same purpose.
pub const DEFAULT_PORT: u16 = 22102;

/// The IPv6 multicast group announcements go to: `ff12::` is a transient (not IANA assigned)
/// group of link-local scope (routers never forward it); `2210` echoes the port.
pub const MULTICAST_GROUP: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0, 0x2210);
