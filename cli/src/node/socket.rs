//! The one UDP socket: binding it (dual stack by default, IPv4 where the host has no IPv6; a
//! remembered port when the default is busy) and growing its buffers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

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
