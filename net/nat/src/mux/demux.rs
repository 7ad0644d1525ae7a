//! Sorting what arrives by its first byte (RFC 7983, RFC 9443; see "Demultiplexing" in the
//! module documentation of [`crate::mux`]): QUIC stays for quinn, STUN and rendezvous go to
//! their consumers, ChannelData and Data indications from a TURN server are unwrapped and
//! sorted again as from the peer.

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;

use quinn::udp::RecvMeta;
use tokio::sync::mpsc;
use tracing::trace;

use super::family::{canonical, in_family};
use super::{bump, read, Datagram, Shared};

/// First bytes of STUN messages (RFC 7983): the two most significant bits of the type are zero.
pub const STUN_FIRST_BYTES: RangeInclusive<u8> = 0..=3;
/// First bytes reserved for fybrk's rendezvous and probe messages. RFC 7983 gives 20..=63 to
/// DTLS, which fybrk never speaks on this socket; 0x20..=0x3F is the part of it clear of ZRTP
/// (16..=19) and still far from QUIC, which always has bit 0x40 set on our side.
pub const RENDEZVOUS_FIRST_BYTES: RangeInclusive<u8> = 0x20..=0x3F;

/// What a datagram is, by its first byte and whether it came from a TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// STUN (and TURN control messages, which are STUN).
    Stun,
    /// fybrk rendezvous or probe message.
    Rendezvous,
    /// TURN ChannelData (only from a TURN server).
    ChannelData,
    /// Everything else is handed to quinn.
    Quic,
}

/// Classifies a datagram by its first byte (RFC 7983/9443); see the module documentation.
pub fn classify(first_byte: u8, from_turn_server: bool) -> DatagramKind {
    match first_byte {
        0..=3 => DatagramKind::Stun,
        0x20..=0x3F => DatagramKind::Rendezvous,
        0x40..=0x4F if from_turn_server => DatagramKind::ChannelData,
        _ => DatagramKind::Quic,
    }
}

impl Shared {
    /// `addr` as quinn sees it: in the socket's family (see `family`).
    pub(super) fn for_quinn(&self, addr: SocketAddr) -> SocketAddr {
        in_family(addr, self.v6)
    }

    /// Classifies a batch quinn received; moves what stays for quinn to the front. Returns how
    /// many buffers quinn gets.
    pub(super) fn demux_batch(&self, bufs: &mut [IoSliceMut<'_>], metas: &mut [RecvMeta]) -> usize {
        let mut kept = 0;
        for i in 0..bufs.len().min(metas.len()) {
            let mut meta = metas[i];
            if self.demux(&mut bufs[i], &mut meta) {
                // quinn reads `bufs[k]` with `metas[k]`: swapping the slices moves a buffer
                // without copying it.
                bufs.swap(kept, i);
                meta.addr = self.for_quinn(meta.addr);
                metas[kept] = meta;
                kept += 1;
            }
        }
        kept
    }

    /// Classifies one received buffer (one datagram, or several GRO segments of one source)
    /// and sends what is not for quinn where it belongs. Returns whether the buffer, possibly
    /// rewritten in place (`meta` adjusted), is for quinn.
    pub(super) fn demux(&self, buf: &mut [u8], meta: &mut RecvMeta) -> bool {
        let len = meta.len.min(buf.len());
        if len == 0 {
            return false;
        }
        // Everything below (TURN servers, channels, consumers) knows peers canonically.
        meta.addr = canonical(meta.addr);
        let stride = if meta.stride == 0 || meta.stride > len {
            len
        } else {
            meta.stride
        };
        let from_turn = self.relaying.load(Ordering::Acquire)
            && read(&self.routes).servers.contains_key(&meta.addr);
        if !from_turn {
            if buf[..len]
                .chunks(stride)
                .all(|seg| classify(seg[0], false) == DatagramKind::Quic)
            {
                return true;
            }
        } else if self.unwrap_in_place(buf, len, stride, meta) {
            return true;
        }
        self.split(&buf[..len], stride, meta, from_turn);
        false
    }

    /// Sorts a datagram that came through a relay by its own first byte, as from `addr`.
    pub(super) fn deliver_relayed(&self, addr: SocketAddr, dst_ip: Option<IpAddr>, payload: &[u8]) {
        let Some(&first) = payload.first() else {
            bump(&self.stats.dropped, 1);
            return;
        };
        match classify(first, false) {
            DatagramKind::Stun => self.divert_stun(addr, payload),
            DatagramKind::Rendezvous => {
                bump(&self.stats.rendezvous_rx, 1);
                self.forward(&self.rendezvous_tx, addr, payload, "rendezvous");
            }
            DatagramKind::ChannelData | DatagramKind::Quic => {
                bump(&self.stats.relayed_rx, 1);
                self.queue_for_quinn(addr, dst_ip, payload);
            }
        }
    }

    pub(super) fn forward(
        &self,
        tx: &mpsc::Sender<Datagram>,
        from: SocketAddr,
        data: &[u8],
        what: &str,
    ) {
        let datagram = Datagram {
            from,
            data: data.to_vec(),
        };
        if tx.try_send(datagram).is_err() {
            trace!(%from, "dropping {what} datagram: nobody is reading, or the queue is full");
            bump(&self.stats.dropped, 1);
        }
    }
}
