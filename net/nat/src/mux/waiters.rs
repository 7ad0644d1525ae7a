//! STUN and TURN transactions waiting for their responses. A STUN message goes to the
//! transaction whose id it carries (a Binding request's [`StunWaiter`]); else, if it comes from
//! a TURN server, to that server's allocation ([`TurnReplies`], which matches its own
//! transactions); else to the general STUN receiver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::trace;

use super::{bump, lock, Datagram, MuxSocket, Shared, DIVERT_QUEUE};

/// STUN header length, and where its transaction id sits (RFC 8489 §5).
const STUN_HEADER: usize = 20;
const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const TID: std::ops::Range<usize> = 8..20;

/// A STUN transaction waiting for its response.
pub(super) struct Waiter {
    from: SocketAddr,
    tx: oneshot::Sender<Datagram>,
}

/// Where each TURN server's unclaimed STUN messages go, with the registration's number (so a
/// stale registration that goes away late does not remove a newer one for the same server).
#[derive(Default)]
pub(super) struct TurnSinks {
    by_server: HashMap<SocketAddr, (u64, mpsc::Sender<Datagram>)>,
    next: u64,
}

impl MuxSocket {
    /// Starts waiting for the STUN response with transaction id `tid` from `from`. Register
    /// before sending the request, so a fast answer cannot be missed.
    pub(crate) fn expect_stun_reply(&self, tid: [u8; 12], from: SocketAddr) -> StunWaiter {
        let (tx, rx) = oneshot::channel();
        lock(&self.shared().waiters).insert(tid, Waiter { from, tx });
        StunWaiter {
            rx,
            tid,
            shared: Arc::clone(self.shared()),
        }
    }

    /// Starts taking the STUN messages from TURN server `server` that no [`StunWaiter`] waits
    /// for: the answers to a TURN allocation's requests, which it matches itself. One taker per
    /// server (TURN keys an allocation by our 5-tuple); a newer one replaces an older one.
    pub(crate) fn expect_turn_replies(&self, server: SocketAddr) -> TurnReplies {
        let (tx, rx) = mpsc::channel(DIVERT_QUEUE);
        let mut sinks = lock(&self.shared().turn_sinks);
        sinks.next += 1;
        let id = sinks.next;
        sinks.by_server.insert(server, (id, tx));
        TurnReplies {
            rx,
            server,
            id,
            shared: Arc::clone(self.shared()),
        }
    }
}

/// Waits for one STUN response; unregisters itself when dropped.
pub(crate) struct StunWaiter {
    rx: oneshot::Receiver<Datagram>,
    tid: [u8; 12],
    shared: Arc<Shared>,
}

impl StunWaiter {
    /// The response, or `None` if the socket went away.
    pub(crate) async fn recv(&mut self) -> Option<Datagram> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for StunWaiter {
    fn drop(&mut self) {
        lock(&self.shared.waiters).remove(&self.tid);
    }
}

/// The STUN messages of one TURN server that no transaction claimed; unregisters itself when
/// dropped.
pub(crate) struct TurnReplies {
    rx: mpsc::Receiver<Datagram>,
    server: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
}

impl TurnReplies {
    /// The next message, or `None` once replaced by a newer taker for the server.
    pub(crate) async fn recv(&mut self) -> Option<Datagram> {
        self.rx.recv().await
    }
}

impl Drop for TurnReplies {
    fn drop(&mut self) {
        let mut sinks = lock(&self.shared.turn_sinks);
        if sinks
            .by_server
            .get(&self.server)
            .is_some_and(|(id, _)| *id == self.id)
        {
            sinks.by_server.remove(&self.server);
        }
    }
}

impl Shared {
    /// Hands a STUN message to the transaction waiting for it, else to its TURN server's
    /// allocation, else to the STUN receiver.
    pub(super) fn divert_stun(&self, from: SocketAddr, data: &[u8]) {
        bump(&self.stats.stun_rx, 1);
        let waiter = {
            let mut waiters = lock(&self.waiters);
            let tid = (data.len() >= STUN_HEADER && data[4..8] == STUN_COOKIE)
                .then(|| <[u8; 12]>::try_from(&data[TID]).ok())
                .flatten();
            match tid {
                Some(tid) => match waiters.get(&tid) {
                    Some(w) if w.from == from => waiters.remove(&tid),
                    _ => None,
                },
                // Too short or mangled to carry a transaction id: give it to a transaction
                // waiting on that server, so the client can report a broken server instead of
                // timing out.
                None => {
                    let key = waiters
                        .iter()
                        .find(|(_, w)| w.from == from)
                        .map(|(k, _)| *k);
                    key.and_then(|k| waiters.remove(&k))
                }
            }
        };
        let datagram = Datagram {
            from,
            data: data.to_vec(),
        };
        if let Some(w) = waiter {
            // The transaction may have given up a moment ago; then nobody needs it.
            let _ = w.tx.send(datagram);
            return;
        }
        let sink = lock(&self.turn_sinks)
            .by_server
            .get(&from)
            .map(|(_, tx)| tx.clone());
        match sink {
            Some(tx) => {
                if tx.try_send(datagram).is_err() {
                    trace!(%from, "dropping a TURN message: the allocation is busy or gone");
                    bump(&self.stats.dropped, 1);
                }
            }
            None => self.forward(&self.stun_tx, from, data, "STUN"),
        }
    }
}
