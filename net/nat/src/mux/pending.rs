//! QUIC datagrams split out of a mixed GRO buffer (or relayed through TURN) waiting for quinn's
//! next `poll_recv`, in pooled buffers.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::task::Waker;

use quinn::udp::RecvMeta;
use tracing::trace;

use super::{bump, lock, Shared};

/// Split-off QUIC datagrams waiting for quinn. A GRO buffer holds at most 64 segments, so this is
/// several buffers' worth; quinn drains it on its very next `poll_recv`.
const PENDING_MAX: usize = 256;
/// Buffers kept for reuse by that queue, so splitting does not allocate in steady state.
const POOL_MAX: usize = 64;

/// QUIC datagrams split out of a mixed GRO buffer, waiting for quinn's next `poll_recv`.
#[derive(Default)]
pub(super) struct Pending {
    queue: VecDeque<Queued>,
    pool: Vec<Vec<u8>>,
    waker: Option<Waker>,
}

struct Queued {
    from: SocketAddr,
    dst_ip: Option<IpAddr>,
    data: Vec<u8>,
}

impl Shared {
    /// Queues a QUIC datagram for quinn's next `poll_recv`, if quinn is attached.
    pub(super) fn queue_for_quinn(&self, from: SocketAddr, dst_ip: Option<IpAddr>, data: &[u8]) {
        if !self.reader.borrow().quinn {
            trace!(%from, "dropping QUIC datagram: no QUIC endpoint runs on this socket");
            bump(&self.stats.dropped, 1);
            return;
        }
        let waker = {
            let mut pending = lock(&self.pending);
            if pending.queue.len() >= PENDING_MAX {
                drop(pending);
                bump(&self.stats.dropped, 1);
                return;
            }
            let mut buf = pending.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(data);
            pending.queue.push_back(Queued {
                from: self.for_quinn(from),
                dst_ip,
                data: buf,
            });
            pending.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Moves queued datagrams into quinn's buffers; registers `waker` for later pushes.
    pub(super) fn take_pending(
        &self,
        waker: &Waker,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> usize {
        let mut pending = lock(&self.pending);
        if !pending.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            pending.waker = Some(waker.clone());
        }
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some(item) = pending.queue.pop_front() else {
                break;
            };
            let len = item.data.len();
            // quinn's buffers hold the largest UDP payload; a queued datagram always fits.
            if len <= bufs[n].len() {
                bufs[n][..len].copy_from_slice(&item.data);
                meta[n] = RecvMeta {
                    addr: item.from,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip: item.dst_ip,
                };
                n += 1;
            }
            if pending.pool.len() < POOL_MAX {
                pending.pool.push(item.data);
            }
        }
        n
    }
}
