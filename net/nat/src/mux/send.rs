//! Sending: directly, or for a relayed peer wrapped for its TURN server, as ChannelData once a
//! channel is bound (GSO batches stay batches) or as Send indications before.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::Ordering;

use quinn::udp::Transmit;
use tokio::io::Interest;
use tracing::debug;

use super::channel_data::{push_channel_data, CHANNEL_DATA_HEADER};
use super::family::{canonical, in_family};
use super::indication::{push_send_indication, SEND_OVERHEAD};
use super::routes::{is_relay_alias, RelayRoute};
use super::{bump, Shared};

/// The most one UDP send carries: the 16-bit datagram length less the IPv4 and UDP headers. A
/// GSO batch is bounded by it as a whole, and quinn batches up to ten datagrams of the path's
/// MTU, which passes it once MTU discovery finds a path above 6.5 KB (loopback, jumbo frames):
/// the kernel refuses such a batch (`EMSGSIZE`), and quinn-udp takes that as a lost batch.
pub(super) const MAX_SEND: usize = 65_507;

/// The largest datagram sent through a TURN relay: quinn's Ethernet-safe default. A relayed
/// path crosses two networks, and a relay's sockets have the kernel's default buffers, which a
/// burst of large datagrams overflows at once (a 4 MiB transfer through a coturn on loopback
/// stalled when MTU discovery, searching up to 65,527 bytes, had found about 60 KB). Larger
/// datagrams are dropped as lost, so discovery on a relayed path settles at this size, and a
/// connection whose route moves to a relay falls back through quinn's black hole detection.
/// (With the 4 bytes of ChannelData in front it still fits a 1500-byte IPv4 path.)
pub(super) const RELAYED_DATAGRAM: usize = 1452;

// Every relayed datagram, wrapped, fits a STUN message's 16-bit length.
const _: () = assert!(RELAYED_DATAGRAM + SEND_OVERHEAD <= u16::MAX as usize);

/// How a send treats tokio's readiness tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reactor {
    /// quinn's sends: `WouldBlock` clears the readiness, so quinn's poller waits for writable.
    Track,
    /// One-off sends that never wait ([`MuxSocket::try_send_to`]): straight to the socket.
    /// tokio reports `WouldBlock` until its reactor has seen the socket writable once, which
    /// would lose the first rendezvous message of a fresh socket.
    Bypass,
}

impl Shared {
    /// Sends a datagram (or GSO batch) directly, or through the relay its route names.
    pub(super) fn send(&self, transmit: &Transmit<'_>, reactor: Reactor) -> io::Result<()> {
        // quinn names IPv4 peers of a dual-stack socket by their mapped address; routes and
        // aliases are kept under the canonical one.
        let to = canonical(transmit.destination);
        if self.relaying.load(Ordering::Acquire) {
            if let Some(route) = self.route_for(to) {
                return self.send_relayed(route, transmit, reactor);
            }
        }
        if is_relay_alias(to) {
            // Its route went with its TURN server: lost, like any datagram.
            bump(&self.stats.dropped, 1);
            return Ok(());
        }
        self.send_now(transmit, reactor)
    }

    fn send_now(&self, transmit: &Transmit<'_>, reactor: Reactor) -> io::Result<()> {
        let destination = in_family(transmit.destination, self.v6);
        let mapped;
        let transmit = if destination == transmit.destination {
            transmit
        } else {
            mapped = Transmit {
                destination,
                ..transmit.clone()
            };
            &mapped
        };
        match transmit.segment_size {
            Some(segment)
                if transmit.contents.len() > MAX_SEND && (1..=MAX_SEND).contains(&segment) =>
            {
                // In parts of whole datagrams. Should a later part find the socket full, quinn
                // sends the whole batch again: the receiver drops the packets it already has.
                for part in transmit.contents.chunks(MAX_SEND / segment * segment) {
                    let part = Transmit {
                        contents: part,
                        ..transmit.clone()
                    };
                    self.send_one(&part, reactor)?;
                }
                Ok(())
            }
            _ => self.send_one(transmit, reactor),
        }
    }

    fn send_one(&self, transmit: &Transmit<'_>, reactor: Reactor) -> io::Result<()> {
        match reactor {
            Reactor::Track => self.io.try_io(Interest::WRITABLE, || {
                self.udp.send((&self.io).into(), transmit)
            }),
            Reactor::Bypass => self.udp.send((&self.io).into(), transmit),
        }
    }

    /// Sends datagrams for a relayed peer to the TURN server: as ChannelData on the route's
    /// channel, else as Send indications.
    fn send_relayed(
        &self,
        route: RelayRoute,
        transmit: &Transmit<'_>,
        reactor: Reactor,
    ) -> io::Result<()> {
        thread_local! {
            // One scratch buffer per thread: wrapping needs no allocation in steady state and no
            // lock between connections sending from different threads.
            static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        if segment > RELAYED_DATAGRAM {
            // Dropped like quinn-udp drops a datagram the OS refuses (an error here would end
            // the connection): to quinn it is lost, and its MTU discovery or black hole
            // detection settles below this size.
            debug!(peer = %transmit.destination, segment, "datagram too large for a TURN relay");
            bump(
                &self.stats.dropped,
                transmit.contents.len().div_ceil(segment) as u64,
            );
            return Ok(());
        }
        let Some(channel) = route.channel else {
            return SCRATCH.with(|scratch| {
                let mut out = scratch.borrow_mut();
                for payload in transmit.contents.chunks(segment) {
                    out.clear();
                    let n = self.indications.fetch_add(1, Ordering::Relaxed);
                    let mut tid = [0u8; 12];
                    tid[4..].copy_from_slice(&n.to_be_bytes());
                    push_send_indication(route.peer, payload, tid, &mut out);
                    let wrapped = Transmit {
                        destination: route.server,
                        ecn: None,
                        contents: &out,
                        segment_size: None,
                        src_ip: transmit.src_ip,
                    };
                    self.send_now(&wrapped, reactor)?;
                    bump(&self.stats.relayed_tx, 1);
                }
                Ok(())
            });
        };
        SCRATCH.with(|scratch| {
            let mut out = scratch.borrow_mut();
            out.clear();
            let mut segments = 0;
            for payload in transmit.contents.chunks(segment) {
                // Checked above: every segment fits the 16-bit length.
                let len = payload.len() as u16;
                push_channel_data(channel, len, payload, &mut out);
                segments += 1;
            }
            let wrapped = Transmit {
                destination: route.server,
                // The relay does not carry ECN marks on to the peer.
                ecn: None,
                contents: &out,
                segment_size: transmit.segment_size.map(|s| s + CHANNEL_DATA_HEADER),
                src_ip: transmit.src_ip,
            };
            let sent = self.send_now(&wrapped, reactor);
            if sent.is_ok() {
                bump(&self.stats.relayed_tx, segments);
            }
            sent
        })
    }
}
