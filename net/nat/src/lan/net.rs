//! The I/O helpers of LAN discovery: this machine's interfaces, the two discovery sockets, and
//! the destinations of an announcement.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};

use nix::net::if_::InterfaceFlags;
use socket2::{Domain, Protocol, Socket, Type};

use super::MULTICAST_GROUP;

/// One network interface that is up and not loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name (`eth0`).
    pub name: String,
    /// Its index (the scope of its IPv6 link-local addresses).
    pub index: u32,
    /// Its addresses (IPv4 and IPv6).
    pub addrs: Vec<IpAddr>,
    /// Its IPv4 directed broadcast addresses.
    pub broadcasts: Vec<Ipv4Addr>,
    /// It can send multicast.
    pub multicast: bool,
}

/// The interfaces that are up and not loopback, with their addresses; empty if they cannot be
/// read.
pub fn interfaces() -> Vec<Interface> {
    let Ok(ifs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<Interface> = Vec::new();
    for ifa in ifs {
        let flags = ifa.flags;
        if !flags.contains(InterfaceFlags::IFF_UP) || flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        let idx = match out.iter().position(|i| i.name == ifa.interface_name) {
            Some(i) => i,
            None => {
                let index = nix::net::if_::if_nametoindex(ifa.interface_name.as_str()).unwrap_or(0);
                out.push(Interface {
                    name: ifa.interface_name.clone(),
                    index,
                    addrs: Vec::new(),
                    broadcasts: Vec::new(),
                    multicast: flags.contains(InterfaceFlags::IFF_MULTICAST),
                });
                out.len() - 1
            }
        };
        let iface = &mut out[idx];
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            let ip = v4.ip();
            iface.addrs.push(IpAddr::V4(ip));
            if flags.contains(InterfaceFlags::IFF_BROADCAST) {
                let given = ifa.broadcast.as_ref().and_then(|b| b.as_sockaddr_in());
                let mask = ifa.netmask.as_ref().and_then(|m| m.as_sockaddr_in());
                let b = directed_broadcast(ip, given.map(|b| b.ip()), mask.map(|m| m.ip()));
                if let Some(b) = b.filter(|b| !iface.broadcasts.contains(b)) {
                    iface.broadcasts.push(b);
                }
            }
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            iface.addrs.push(IpAddr::V6(v6.ip()));
        }
    }
    out
}

/// The directed broadcast address of `ip`: the one the interface has, else (an address added
/// without `brd`, which `getifaddrs` reports as 0.0.0.0, and sending there reaches only this
/// machine) the host bits of `mask` set. `None` for /31 and /32, which have none.
pub fn directed_broadcast(
    ip: Ipv4Addr,
    given: Option<Ipv4Addr>,
    mask: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    if let Some(b) = given.filter(|b| !b.is_unspecified() && *b != ip) {
        return Some(b);
    }
    let mask = u32::from(mask?);
    if mask.leading_ones() >= 31 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(ip) | !mask))
}

/// The addresses to announce: every interface address, of the families the QUIC socket
/// (`listen`) can be reached on (an IPv4 socket cannot take IPv6 connections).
pub fn announced_addrs(ifaces: &[Interface], listen: SocketAddr) -> Vec<IpAddr> {
    let v6_ok = listen.is_ipv6();
    let mut out: Vec<IpAddr> = ifaces
        .iter()
        .flat_map(|i| i.addrs.iter().copied())
        .filter(|ip| match listen.ip() {
            IpAddr::V4(l) if !l.is_unspecified() => *ip == listen.ip(),
            IpAddr::V6(l) if !l.is_unspecified() => *ip == listen.ip(),
            _ => ip.is_ipv4() || v6_ok,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Where one announcement goes: the limited broadcast address, each interface's directed
/// broadcast address, and the multicast group on each multicast interface with IPv6.
pub fn destinations(ifaces: &[Interface], port: u16) -> Vec<SocketAddr> {
    let mut out = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), port)];
    for i in ifaces {
        for b in &i.broadcasts {
            let a = SocketAddr::new(IpAddr::V4(*b), port);
            if !out.contains(&a) {
                out.push(a);
            }
        }
        if i.multicast && i.index != 0 && i.addrs.iter().any(IpAddr::is_ipv6) {
            out.push(SocketAddr::V6(SocketAddrV6::new(
                MULTICAST_GROUP,
                port,
                0,
                i.index,
            )));
        }
    }
    out
}

/// The IPv4 discovery socket: `0.0.0.0:port`, broadcast allowed, shared with other daemons on
/// this machine (`SO_REUSEADDR`: broadcast datagrams reach every socket bound to the port).
/// Non-blocking.
pub fn bind_v4(port: u16) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).into())?;
    Ok(s.into())
}

/// The IPv6 discovery socket: `[::]:port`, IPv6 only (the IPv4 one has the port's IPv4 side),
/// shared like the IPv4 one, multicast looped back (other daemons on this machine hear us; we
/// drop our own). Non-blocking. Join the group per interface with [`join_group`].
pub fn bind_v6(port: u16) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.set_multicast_loop_v6(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
    Ok(s.into())
}

/// Joins the discovery group on interface `index` (on any socket: std's or tokio's). Joining
/// twice is not an error.
pub fn join_group<S: std::os::fd::AsFd>(socket: &S, index: u32) -> io::Result<()> {
    match socket2::SockRef::from(socket).join_multicast_v6(&MULTICAST_GROUP, index) {
        // What Linux answers to a second join of the same group on one interface.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EADDRINUSE as i32) => Ok(()),
        r => r,
    }
}
