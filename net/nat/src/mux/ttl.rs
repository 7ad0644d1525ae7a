//! Sending one datagram with its own IP TTL (hop limit), for the puncher's first probes: a probe
//! that opens our NAT's mapping but dies in the network before it reaches the peer's router (see
//! `rendezvous::puncher`, "Why the first probes have a low TTL").
//!
//! The TTL travels with the datagram as an `IP_TTL` / `IPV6_HOPLIMIT` control message of
//! `sendmsg(2)`, so the socket's own TTL never changes: quinn's datagrams, sent at the same time
//! from other threads, keep the default.

use std::io;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};

use super::routes::is_relay_alias;
use super::MuxSocket;

impl MuxSocket {
    /// Sends one datagram now like [`MuxSocket::try_send_to`], but with IP TTL `ttl`. A datagram
    /// that a relay route takes goes out as usual (the TTL is for a direct path only: a low one
    /// would not reach the TURN server). Never waits.
    pub fn try_send_to_with_ttl(&self, data: &[u8], to: SocketAddr, ttl: u8) -> io::Result<()> {
        let shared = self.shared();
        let relayed = is_relay_alias(to)
            || (shared.relaying.load(Ordering::Acquire) && shared.route_for(to).is_some());
        let local_v4 = shared.io.local_addr()?.is_ipv4();
        if relayed || local_v4 != to.is_ipv4() {
            // Relayed, or an address family this socket sends to by mapping (IPv4-mapped IPv6):
            // the plain path knows how.
            return self.try_send_to(data, to);
        }
        let hops = std::ffi::c_int::from(ttl);
        let cmsg = if to.is_ipv4() {
            ControlMessage::Ipv4Ttl(&hops)
        } else {
            ControlMessage::Ipv6HopLimit(&hops)
        };
        let addr = SockaddrStorage::from(to);
        sendmsg(
            shared.io.as_raw_fd(),
            &[IoSlice::new(data)],
            &[cmsg],
            MsgFlags::empty(),
            Some(&addr),
        )
        .map(|_| ())
        .map_err(io::Error::from)
    }
}
