//! Address families on the one socket.
//!
//! The daemon's socket is by default one IPv6 socket bound to `[::]` with `IPV6_V6ONLY` off
//! (dual stack): IPv4 peers reach it too and the kernel shows them as IPv4-mapped IPv6
//! addresses (`::ffff:a.b.c.d`). One socket, not one per family, because everything the mux
//! does rests on a single socket: one NAT mapping shared by STUN, TURN, rendezvous and QUIC,
//! one quinn endpoint, one reader, one table of relay routes and aliases. Two sockets would
//! need two of each, or a second reader merging them, and quinn cannot run one endpoint over
//! two sockets.
//!
//! The mapped form stops at the mux: everything it hands out (STUN and rendezvous datagrams,
//! relay routes, aliases) and everything it is given is *canonical*, plain IPv4 for IPv4 peers
//! ([`canonical`]); it maps IPv4 destinations back to the socket's family just before a
//! datagram leaves. quinn alone sees the socket's own family (a dual-stack quinn endpoint maps
//! IPv4 destinations itself and would take a datagram from `1.2.3.4` and one from
//! `::ffff:1.2.3.4` for two different peers), so whoever reads a QUIC connection's remote
//! address canonicalises it too (`fybrk_link::transport::peer_addr`).

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into plain IPv4; any
/// other address as it is. The link's rule (`fybrk_link::transport::canonical`), so the mux
/// and QUIC connections' addresses agree.
pub use fybrk_link::transport::canonical;

/// `addr` as a socket of the IPv6 family takes it (`v6`): IPv4 as a mapped address.
pub(super) fn in_family(addr: SocketAddr, v6: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v6 => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        _ => addr,
    }
}

/// Binds a UDP socket on `addr`. The IPv6 wildcard `[::]` gives one dual-stack socket
/// (`IPV6_V6ONLY` off whatever `net.ipv6.bindv6only` says), which takes IPv4 too; any other
/// address binds that address alone (an IPv4 address: IPv4 only; an IPv6 address: IPv6 only).
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_only_v6(false)?;
            socket.bind(&addr.into())?;
            Ok(socket.into())
        }
        _ => UdpSocket::bind(addr),
    }
}

/// The dual-stack wildcard address for `port`: `[::]:port`.
pub fn dual_stack(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
}

/// Whether binding failed because this host has no IPv6 (disabled in the kernel or by
/// `ipv6.disable=1`), where the daemon falls back to IPv4.
pub fn is_no_ipv6(e: &io::Error) -> bool {
    use nix::errno::Errno;
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    [
        Errno::EAFNOSUPPORT,
        Errno::EADDRNOTAVAIL,
        Errno::EPROTONOSUPPORT,
    ]
    .contains(&Errno::from_raw(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_become_plain_ipv4_and_back() {
        let mapped: SocketAddr = "[::ffff:203.0.113.7]:22100".parse().unwrap();
        let plain: SocketAddr = "203.0.113.7:22100".parse().unwrap();
        assert_eq!(canonical(mapped), plain);
        assert_eq!(canonical(plain), plain);
        let v6: SocketAddr = "[2001:db8::7]:22100".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        assert_eq!(in_family(plain, true), mapped);
        assert_eq!(in_family(plain, false), plain);
        assert_eq!(in_family(v6, true), v6);
        // Relay aliases survive the round trip, so routes find them again.
        let alias: SocketAddr = "240.0.0.1:5".parse().unwrap();
        assert_eq!(canonical(in_family(alias, true)), alias);
    }

    #[test]
    fn only_a_missing_ipv6_stack_means_falling_back_to_ipv4() {
        use nix::errno::Errno;
        for (errno, no_v6) in [
            (Errno::EAFNOSUPPORT, true),
            (Errno::EADDRNOTAVAIL, true),
            (Errno::EADDRINUSE, false),
            (Errno::EACCES, false),
        ] {
            let e = io::Error::from_raw_os_error(errno as i32);
            assert_eq!(is_no_ipv6(&e), no_v6, "{errno}");
        }
        assert!(!is_no_ipv6(&io::Error::other("not an OS error")));
    }

    #[test]
    fn the_wildcard_binds_both_families() {
        let Ok(socket) = bind_udp(dual_stack(0)) else {
            return; // no IPv6 on this host: nothing to check
        };
        let port = socket.local_addr().unwrap().port();
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.send_to(b"x", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 4];
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(n, 1);
        assert_eq!(canonical(from), v4.local_addr().unwrap());
    }
}
