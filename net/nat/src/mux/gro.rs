//! GRO buffers from a TURN server: several same-size datagrams from one source in one buffer.
//! The fast path rewrites a buffer of ChannelData on one channel in place; anything else is
//! split and each segment handled on its own (see "Who reads the socket").

use quinn::udp::RecvMeta;
use tracing::{debug, trace};

use super::channel_data::{channel_data_header, decode_channel_data, CHANNEL_DATA_HEADER};
use super::demux::{classify, DatagramKind};
use super::indication::parse_data_indication;
use super::{bump, read, Shared};

impl Shared {
    /// Unwraps a buffer of ChannelData segments, all on one channel and (but the last) all
    /// full, in place: each payload moves to where an unwrapped GRO buffer would have it.
    pub(super) fn unwrap_in_place(
        &self,
        buf: &mut [u8],
        len: usize,
        stride: usize,
        meta: &mut RecvMeta,
    ) -> bool {
        let segments = len.div_ceil(stride);
        let mut channel = None;
        for (k, seg) in buf[..len].chunks(stride).enumerate() {
            if classify(seg[0], true) != DatagramKind::ChannelData {
                return false;
            }
            let Ok((ch, payload)) = channel_data_header(seg) else {
                return false;
            };
            let full = payload + CHANNEL_DATA_HEADER == stride;
            if payload == 0
                || classify(seg[CHANNEL_DATA_HEADER], false) != DatagramKind::Quic
                || channel.is_some_and(|c| c != ch)
                || (k + 1 < segments && !full)
            {
                return false;
            }
            channel = Some(ch);
        }
        let Some(channel) = channel else {
            return false;
        };
        let Some(peer) = read(&self.routes)
            .by_channel
            .get(&(meta.addr, channel))
            .copied()
        else {
            return false;
        };
        let new_stride = stride - CHANNEL_DATA_HEADER;
        let mut out = 0;
        for k in 0..segments {
            let start = k * stride;
            let end = (start + stride).min(len);
            let Ok((_, payload)) = channel_data_header(&buf[start..end]) else {
                return false; // checked above
            };
            let from = start + CHANNEL_DATA_HEADER;
            // Destinations never overtake sources (`out <= start`), and copy_within allows
            // overlap.
            buf.copy_within(from..from + payload, out);
            out += payload;
        }
        bump(&self.stats.relayed_rx, segments as u64);
        meta.addr = peer;
        meta.len = out;
        meta.stride = if segments == 1 { out } else { new_stride };
        true
    }

    /// The slow path: handles each segment on its own; QUIC goes through the pending queue.
    pub(super) fn split(&self, buf: &[u8], stride: usize, meta: &RecvMeta, from_turn: bool) {
        for seg in buf.chunks(stride) {
            match classify(seg[0], from_turn) {
                DatagramKind::Stun => match parse_data_indication(seg).filter(|_| from_turn) {
                    Some((peer, payload)) => match self.learned_addr(meta.addr, peer) {
                        Some(addr) => self.deliver_relayed(addr, meta.dst_ip, payload),
                        None => bump(&self.stats.dropped, 1),
                    },
                    None => self.divert_stun(meta.addr, seg),
                },
                DatagramKind::Rendezvous => {
                    bump(&self.stats.rendezvous_rx, 1);
                    self.forward(&self.rendezvous_tx, meta.addr, seg, "rendezvous");
                }
                DatagramKind::ChannelData => {
                    let Ok((channel, payload)) = decode_channel_data(seg) else {
                        debug!(from = %meta.addr, "dropping malformed ChannelData");
                        bump(&self.stats.dropped, 1);
                        continue;
                    };
                    let addr = read(&self.routes)
                        .by_channel
                        .get(&(meta.addr, channel))
                        .copied();
                    match addr {
                        Some(addr) => self.deliver_relayed(addr, meta.dst_ip, payload),
                        None => {
                            trace!(from = %meta.addr, channel, "ChannelData on an unknown channel");
                            bump(&self.stats.dropped, 1);
                        }
                    }
                }
                DatagramKind::Quic => self.queue_for_quinn(meta.addr, meta.dst_ip, seg),
            }
        }
    }
}
