//! A connection's peer address as the rest of fybrk knows it.
//!
//! On a dual-stack socket (`[::]`, the daemon's default) quinn names an IPv4 peer by its
//! IPv4-mapped IPv6 address (`::ffff:a.b.c.d`). Allow lists, remembered addresses, status,
//! rendezvous candidates and relay aliases all use plain IPv4, so a connection's address is
//! read through [`peer_addr`], never `remote_address()` directly.

use std::net::{IpAddr, SocketAddr};

/// `conn`'s remote address with an IPv4-mapped address turned into plain IPv4.
pub fn peer_addr(conn: &quinn::Connection) -> SocketAddr {
    canonical(conn.remote_address())
}

/// `addr` with an IPv4-mapped IPv6 address turned into plain IPv4 (`fybrk_nat::mux::canonical`
/// is the same rule for the socket's other consumers).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `ip` canonically (see [`canonical`]).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}
