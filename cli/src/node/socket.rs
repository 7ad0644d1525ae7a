//! The one UDP socket: binding it (dual stack by default, IPv4 where the host has no IPv6; a
//! remembered port when the default is busy), growing its buffers, and the MTU of the
//! interfaces it sends through.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use fybrk_net::mux::{bind_udp, is_no_ipv6};

use super::Listen;
use crate::state::StateDir;

/// Binds the UDP socket. Port 0, or a busy default port, means "any free port": the one picked
/// is remembered in the state dir and taken again next time, because paired devices find this
/// one at the address they last saw (until the rendezvous server of the NAT work exists).
///
/// The default (`[::]:22100`) is one dual-stack socket; on a host with IPv6 disabled it falls
/// back to `0.0.0.0` with a log line. An explicit `--listen` is bound as given (`[::]` dual
/// stack, an IPv4 address IPv4 only, another IPv6 address IPv6 only).
pub(super) fn bind(listen: Listen, state: &StateDir) -> Result<UdpSocket> {
    let mut listen = listen;
    if !listen.explicit && listen.addr.is_ipv6() {
        // A probe on port 0 first, so that only a missing IPv6 stack (not a busy port, which
        // has its own fallback below) turns the default into IPv4.
        match bind_udp(SocketAddr::new(listen.addr.ip(), 0)) {
            Err(e) if is_no_ipv6(&e) => {
                tracing::warn!(
                    error = %e,
                    "no IPv6 on this host: listening on IPv4 only (0.0.0.0)"
                );
                listen.addr =
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), listen.addr.port());
            }
            _ => {}
        }
    }
    let remembered = std::fs::read_to_string(state.listen_port())
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .filter(|p| *p != 0);
    let pick_any = |why: &str| -> Result<UdpSocket> {
        if let Some(port) = remembered {
            if let Ok(s) = bind_udp(SocketAddr::new(listen.addr.ip(), port)) {
                return Ok(s);
            }
        }
        let any = SocketAddr::new(listen.addr.ip(), 0);
        let s = bind_udp(any).with_context(|| format!("cannot bind UDP {any}"))?;
        let port = s.local_addr()?.port();
        if let Err(e) = std::fs::write(state.listen_port(), format!("{port}\n")) {
            tracing::warn!(error = %e, "cannot remember the listen port");
        }
        if !why.is_empty() {
            tracing::warn!(wanted = %listen.addr, port, "{why}");
        }
        Ok(s)
    };
    if listen.addr.port() == 0 {
        return pick_any("");
    }
    match bind_udp(listen.addr) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !listen.explicit => pick_any(
            "UDP port in use (another fybrk daemon?); listening on another port, kept for next \
             time. Pass --listen to choose one",
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow!(
            "UDP {} is in use (another fybrk daemon?): pass another --listen address",
            listen.addr
        )),
        Err(e) => Err(e).with_context(|| format!("cannot listen on UDP {}", listen.addr)),
    }
}

/// Socket buffer the daemon asks for, each way. The kernel default (208 KiB) overflowed while
/// a peer sent a large file (hundreds of datagrams dropped per GiB, each a QUIC retransmission),
/// and large datagrams need it (see `fybrk_net::transport::largest_datagram`).
const SOCKET_BUFFER: usize = fybrk_net::transport::LARGE_DATAGRAM_BUFFER;

/// Raises the socket's receive and send buffers (the kernel caps them at `net.core.rmem_max`
/// and `wmem_max`; as root the cap does not apply). Returns the receive buffer the socket has
/// now, as the kernel reports it (0 if it cannot say).
pub(super) fn grow_buffers(socket: &UdpSocket) -> usize {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    for (name, r) in [
        (
            "receive",
            setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER)
                .or_else(|_| setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER)),
        ),
        (
            "send",
            setsockopt(socket, sockopt::SndBufForce, &SOCKET_BUFFER)
                .or_else(|_| setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER)),
        ),
    ] {
        if let Err(e) = r {
            tracing::debug!(error = %e, "cannot raise the UDP {name} buffer");
        }
    }
    getsockopt(socket, sockopt::RcvBuf).unwrap_or(0)
}

/// An interface as `/sys/class/net` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interface {
    up: bool,
    loopback: bool,
    mtu: u32,
}

/// `IFF_UP` and `IFF_LOOPBACK` of `<linux/if.h>`, as `/sys/class/net/*/flags` shows them.
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// The MTU a 1500-byte Ethernet has: what is assumed when the host cannot say.
const ETHERNET_MTU: u32 = 1500;

/// The largest MTU of the interfaces a socket bound to `ip` sends through (the bound of QUIC's
/// MTU discovery, see `fybrk_net::transport::largest_datagram`): loopback's for a loopback
/// address; otherwise the largest among the up interfaces other than loopback, or loopback's
/// where there is none (a network namespace of its own). Two daemons on one host talking over
/// a wildcard socket's loopback stay at the other interfaces' MTU: the uncommon case pays a
/// little CPU so that peers across the network are never probed with datagrams that cannot leave.
pub(super) fn link_mtu(ip: IpAddr) -> u32 {
    pick_link_mtu(&interfaces(Path::new("/sys/class/net")), ip.is_loopback())
}

fn pick_link_mtu(interfaces: &[Interface], loopback_only: bool) -> u32 {
    let largest = |loopback: bool| {
        interfaces
            .iter()
            .filter(|i| i.up && i.loopback == loopback)
            .map(|i| i.mtu)
            .max()
    };
    let found = if loopback_only {
        largest(true)
    } else {
        largest(false).or_else(|| largest(true))
    };
    found.unwrap_or(ETHERNET_MTU)
}

/// The interfaces under `dir` (`/sys/class/net`); those whose files cannot be read are left out.
fn interfaces(dir: &Path) -> Vec<Interface> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).ok();
    entries
        .flatten()
        .filter_map(|e| {
            let flags = parse_flags(&read(e.path().join("flags"))?)?;
            let mtu = read(e.path().join("mtu"))?.trim().parse().ok()?;
            Some(Interface {
                up: flags & IFF_UP != 0,
                loopback: flags & IFF_LOOPBACK != 0,
                mtu,
            })
        })
        .collect()
}

/// `0x1003` -> 0x1003.
fn parse_flags(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim().strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(up: bool, loopback: bool, mtu: u32) -> Interface {
        Interface { up, loopback, mtu }
    }

    #[test]
    fn the_largest_up_interface_other_than_loopback_counts() {
        let host = [
            iface(true, true, 65_536),
            iface(true, false, 1400),
            iface(false, false, 9000), // down
            iface(true, false, 1500),
        ];
        assert_eq!(pick_link_mtu(&host, false), 1500);
        assert_eq!(pick_link_mtu(&host, true), 65_536);
        // A namespace with loopback only.
        assert_eq!(pick_link_mtu(&[iface(true, true, 65_536)], false), 65_536);
        // Nothing readable: assume Ethernet.
        assert_eq!(pick_link_mtu(&[], false), ETHERNET_MTU);
        assert_eq!(
            pick_link_mtu(&[iface(true, false, 1500)], true),
            ETHERNET_MTU
        );
    }

    #[test]
    fn sysfs_is_read_as_the_kernel_writes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, flags, mtu) in [
            ("lo", "0x9\n", "65536\n"),
            ("eth0", "0x1003\n", "1400\n"),
            ("ifb0", "0x82\n", "1500\n"),
            ("bad", "1003\n", "1500\n"),
        ] {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).expect("mkdir");
            std::fs::write(d.join("flags"), flags).expect("flags");
            std::fs::write(d.join("mtu"), mtu).expect("mtu");
        }
        let mut got = interfaces(dir.path());
        got.sort_by_key(|i| i.mtu);
        assert_eq!(
            got,
            vec![
                iface(true, false, 1400),
                iface(false, false, 1500),
                iface(true, true, 65_536)
            ]
        );
        assert_eq!(pick_link_mtu(&got, false), 1400);
        assert!(interfaces(&dir.path().join("missing")).is_empty());
    }
}
