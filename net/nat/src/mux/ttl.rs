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
        if relayed || (local_v4 && !to.is_ipv4()) {
            return self.try_send_to(data, to);
        }
        let hops = std::ffi::c_int::from(ttl);
        // An IPv4 peer on the dual-stack socket (the default) is sent to at its mapped address,
        // which Linux sends as IPv4 (`udp_sendmsg`), taking the `IP_TTL` control message as an
        // IPv4 socket would: the low TTL must work with the default socket too.
        let cmsg = if to.is_ipv4() {
            ControlMessage::Ipv4Ttl(&hops)
        } else {
            ControlMessage::Ipv6HopLimit(&hops)
        };
        let to = super::family::in_family(to, !local_v4);
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

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

    use super::*;

    /// The TTL a datagram arrived with on `rx` (which has `IP_RECVTTL` on).
    fn received_ttl(rx: &UdpSocket) -> i32 {
        let mut buf = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!(std::ffi::c_int);
        let msg = recvmsg::<SockaddrStorage>(
            rx.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("recvmsg");
        msg.cmsgs()
            .expect("cmsgs")
            .find_map(|c| match c {
                ControlMessageOwned::Ipv4Ttl(t) => Some(t),
                _ => None,
            })
            .expect("a TTL control message")
    }

    /// The puncher's low TTL reaches the wire from an IPv4 socket and from the default
    /// dual-stack one alike (an IPv4 peer of a dual-stack socket is a mapped address).
    #[tokio::test]
    async fn a_low_ttl_leaves_ipv4_and_dual_stack_sockets() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        setsockopt(&rx, sockopt::Ipv4RecvTtl, &true).expect("IP_RECVTTL");
        let to = rx.local_addr().expect("addr");
        for local in ["127.0.0.1:0", "[::]:0"] {
            let socket = super::super::family::bind_udp(local.parse().expect("addr"))
                .expect("bind the sender");
            let mux = MuxSocket::from_std(socket).expect("mux");
            mux.try_send_to_with_ttl(b"\x21probe", to, 3)
                .expect("send with a TTL");
            assert_eq!(received_ttl(&rx), 3, "from a socket bound to {local}");
            mux.try_send_to(b"\x21probe", to).expect("send");
            assert!(
                received_ttl(&rx) > 3,
                "the default TTL afterwards ({local})"
            );
        }
    }
}
