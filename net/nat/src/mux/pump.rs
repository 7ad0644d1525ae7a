//! The pump: reads the socket while no quinn endpoint does, so STUN, TURN and rendezvous work
//! before quinn starts and after it lets go (see "Who reads the socket").

use std::io::{self, IoSliceMut};
use std::sync::Arc;

use quinn::udp::RecvMeta;
use tokio::io::Interest;
use tracing::{trace, warn};

use super::Shared;

/// The pump's receive buffer: the largest UDP payload, which also bounds a GRO buffer.
const PUMP_BUF: usize = 64 * 1024;
/// Datagrams the pump handles per wake-up before yielding to other tasks.
const PUMP_BATCH: usize = 64;

/// Reads the socket while no quinn endpoint does.
pub(super) async fn pump(shared: Arc<Shared>) {
    let mut state = shared.reader.subscribe();
    let mut buf = vec![0u8; PUMP_BUF];
    loop {
        let now = *state.borrow_and_update();
        if !now.handles {
            return;
        }
        if now.quinn {
            // quinn reads; wake up again when it lets go (or the socket is dropped).
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            ready = shared.io.readable() => match ready {
                Ok(()) => shared.pump_batch(&mut buf),
                Err(e) => {
                    warn!("UDP socket unusable, STUN/TURN receive stops: {e}");
                    return;
                }
            },
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

impl Shared {
    /// Reads what is waiting (up to [`PUMP_BATCH`] datagrams) and dispatches it.
    fn pump_batch(&self, buf: &mut [u8]) {
        for _ in 0..PUMP_BATCH {
            let mut meta = [RecvMeta::default()];
            let received = {
                let mut bufs = [IoSliceMut::new(buf)];
                self.io.try_io(Interest::READABLE, || {
                    self.udp.recv((&self.io).into(), &mut bufs, &mut meta)
                })
            };
            match received {
                Ok(0) => {}
                Ok(_) => {
                    let mut meta = meta[0];
                    if self.demux(buf, &mut meta) {
                        // QUIC, but quinn is not reading: unless it attached a moment ago,
                        // nobody wants it (the peer retransmits once quinn runs).
                        self.queue_for_quinn(meta.addr, meta.dst_ip, &buf[..meta.len]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // E.g. ECONNREFUSED from an ICMP error: consumed by this read, so try again.
                Err(e) => trace!("UDP receive error: {e}"),
            }
        }
    }
}
