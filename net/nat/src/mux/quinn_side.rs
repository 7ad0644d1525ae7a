//! The socket as quinn sees it: [`quinn::AsyncUdpSocket`] over the shared socket, reading
//! through the demultiplexer and sending relayed peers' datagrams as ChannelData.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use tokio::io::Interest;
use tracing::trace;

use super::{lock, Pending, Shared};

/// The socket as quinn sees it; see [`MuxSocket::quinn_socket`].
pub(super) struct QuinnSocket {
    pub(super) shared: Arc<Shared>,
}

impl Drop for QuinnSocket {
    fn drop(&mut self) {
        *lock(&self.shared.pending) = Pending::default();
        // The pump takes over reading.
        self.shared.reader.send_modify(|r| r.quinn = false);
    }
}

impl fmt::Debug for QuinnSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxSocket(quinn)")
            .field("local_addr", &self.shared.io.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl quinn::AsyncUdpSocket for QuinnSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Writable {
            shared: Arc::clone(&self.shared),
            fut: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.shared.send(transmit, super::Reactor::Track)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let s = &*self.shared;
        loop {
            let queued = s.take_pending(cx.waker(), bufs, meta);
            if queued > 0 {
                return Poll::Ready(Ok(queued));
            }
            ready!(s.io.poll_recv_ready(cx))?;
            let received = s.io.try_io(Interest::READABLE, || {
                s.udp.recv((&s.io).into(), bufs, meta)
            });
            match received {
                Ok(n) => {
                    let kept = s.demux_batch(&mut bufs[..n], &mut meta[..n]);
                    if kept > 0 {
                        return Poll::Ready(Ok(kept));
                    }
                    // All of it was STUN/rendezvous/queued: read on (or deliver the queue).
                }
                // Readiness was cleared; the next poll_recv_ready registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Like quinn's stock socket: a receive error (e.g. ECONNREFUSED from an ICMP
                // message) is consumed by the failed read, so read again.
                Err(e) => trace!("UDP receive error: {e}"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.shared.udp.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.shared.udp.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.shared.udp.gro_segments()
    }
}

type WritableFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>;

/// Wakes one quinn connection when the socket is writable again (quinn's `UdpPollHelper` is
/// private, so this is the same idea: a fresh `writable()` future per wait). Each poller waits
/// on its own future, so any number of connections can wait at once.
struct Writable {
    shared: Arc<Shared>,
    fut: Option<WritableFuture>,
}

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writable").finish_non_exhaustive()
    }
}

impl quinn::UdpPoller for Writable {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let fut = this.fut.get_or_insert_with(|| {
            let shared = Arc::clone(&this.shared);
            Box::pin(async move { shared.io.writable().await })
        });
        let result = ready!(fut.as_mut().poll(cx));
        this.fut = None;
        Poll::Ready(result)
    }
}
