//! Taking incoming connections: completing a handshake, asking the policy how the peer is let in,
//! and the limits that keep strangers cheap. While an invitation is open any device gets through
//! TLS (to present its proof), so an incoming connection starts with a pairing-sized budget (one
//! bidirectional stream, no unidirectional one, a 64 KiB connection window: a pairing exchange is
//! two frames of at most 16 KiB) that only a paired device's connection is raised from, and one
//! address may run only a few handshakes at once.
//!
//! Why start small and raise, not the other way round: what the handshake's transport parameters
//! grant (stream counts, the connection window) cannot be taken back later, so a budget lowered
//! after the handshake would still let a stranger open a thousand streams and buffer 64 MiB.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::{ConnectionError, VarInt};
use tracing::info;

use super::CLOSE_NOT_PAIRED;
use crate::identity::DeviceId;
use crate::tls::{self, Allow, PeerPolicy};

/// How long an incoming handshake may take before it is dropped, so a stalled or malicious
/// client cannot hold a handshake slot for the whole idle timeout.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Incoming handshakes in progress at once; past this, new attempts are refused. A handful of
/// paired devices never come close; the bound stops a flood from exhausting memory.
pub(super) const MAX_PENDING_HANDSHAKES: usize = 64;

/// Handshakes one source address may have in progress at once. A household behind one public
/// address has a few devices, each with at most one or two handshakes to us at a time; a flood
/// from one address takes this many of the [`MAX_PENDING_HANDSHAKES`] slots, not all of them.
pub(super) const MAX_HANDSHAKES_PER_SOURCE: usize = 8;

/// Receive window of an incoming connection until it is known to be a paired device's: the
/// pairing exchange is two small frames.
pub(super) const PAIRING_RECEIVE_WINDOW: u32 = 64 << 10;

/// Handshakes in progress per source address.
#[derive(Debug, Default)]
pub(super) struct Sources {
    in_progress: HashMap<IpAddr, usize>,
}

impl Sources {
    /// Counts a new handshake from `source`; false (not counted) when it has
    /// [`MAX_HANDSHAKES_PER_SOURCE`] in progress already.
    pub(super) fn begin(&mut self, source: IpAddr) -> bool {
        let n = self.in_progress.entry(source).or_default();
        if *n >= MAX_HANDSHAKES_PER_SOURCE {
            return false;
        }
        *n += 1;
        true
    }

    /// A handshake from `source` ended.
    pub(super) fn end(&mut self, source: IpAddr) {
        if let Some(n) = self.in_progress.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_progress.remove(&source);
            }
        }
    }
}

/// Gives a paired device's connection the full budget (incoming connections start with the
/// pairing-sized one, see `incoming_transport_config`): the peer may use it one round trip later.
fn full_budget(connection: &quinn::Connection) {
    connection.set_max_concurrent_bi_streams(VarInt::from_u32(super::MAX_STREAMS));
    connection.set_max_concurrent_uni_streams(VarInt::from_u32(super::MAX_STREAMS));
    connection.set_receive_window(crate::flow::varint(super::CONNECTION_WINDOW));
}

/// How an accepted peer was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A paired device.
    Paired,
    /// An unknown device admitted while an invitation is open: run only the pairing handshake on
    /// this connection. Its id is proven by TLS like any other, so once pairing succeeds and the
    /// device is in the policy, the same connection may go on to replication.
    PairingOnly,
}

/// A connection accepted by [`Transport::accept`], with its verified peer.
#[derive(Debug)]
pub struct Accepted {
    /// The established connection.
    pub connection: quinn::Connection,
    /// The peer's device id, proven by its certificate and handshake signature.
    pub peer: DeviceId,
    /// What the policy allowed when the connection was handed over.
    pub admission: Admission,
}

/// Why an incoming handshake was not yielded (logged only).
#[derive(Debug, thiserror::Error)]
pub(super) enum AcceptError {
    #[error("handshake from {remote} failed: {source}")]
    Handshake {
        remote: SocketAddr,
        source: ConnectionError,
    },
    #[error("handshake from {remote} timed out")]
    Timeout { remote: SocketAddr },
    #[error("{remote} presented no usable certificate")]
    NoIdentity { remote: SocketAddr },
    #[error("device {peer} at {remote} is not paired (policy changed during the handshake)")]
    Denied { remote: SocketAddr, peer: DeviceId },
}

/// Completes one incoming handshake and asks the policy again for the admission to report.
/// Returns the source address with the outcome, so the caller can count it down.
pub(super) async fn handshake(
    incoming: quinn::Incoming,
    policy: Arc<dyn PeerPolicy>,
) -> (IpAddr, Result<Accepted, AcceptError>) {
    let source = super::canonical_ip(incoming.remote_address().ip());
    (source, complete(incoming, policy).await)
}

async fn complete(
    incoming: quinn::Incoming,
    policy: Arc<dyn PeerPolicy>,
) -> Result<Accepted, AcceptError> {
    let remote = super::canonical(incoming.remote_address());
    let connecting = incoming
        .accept()
        .map_err(|source| AcceptError::Handshake { remote, source })?;
    let connection = tokio::time::timeout(ACCEPT_TIMEOUT, connecting)
        .await
        .map_err(|_| AcceptError::Timeout { remote })?
        .map_err(|source| AcceptError::Handshake { remote, source })?;
    let peer = tls::peer_id(&connection).ok_or(AcceptError::NoIdentity { remote })?;
    // The verifier admitted the peer moments ago; asking again gives the verdict as of hand-over
    // (an invitation may have closed, or the device been unpaired, in between).
    let admission = match policy.allows(&peer) {
        Allow::Paired => {
            full_budget(&connection);
            Admission::Paired
        }
        Allow::PairingOnly => Admission::PairingOnly,
        Allow::Deny => {
            connection.close(CLOSE_NOT_PAIRED, b"not paired");
            return Err(AcceptError::Denied { remote, peer });
        }
    };
    info!(%remote, peer = %peer.abbrev(), ?admission, "accepted connection");
    Ok(Accepted {
        connection,
        peer,
        admission,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_gets_a_few_handshakes_at_once() {
        let mut s = Sources::default();
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..MAX_HANDSHAKES_PER_SOURCE {
            assert!(s.begin(a));
        }
        assert!(!s.begin(a), "the ninth from one address waits");
        assert!(s.begin(b), "another address is not affected");
        s.end(a);
        assert!(s.begin(a), "a finished handshake frees a slot");
        for _ in 0..MAX_HANDSHAKES_PER_SOURCE {
            s.end(a);
        }
        s.end(a);
        assert!(!s.in_progress.contains_key(&a), "counts go away at zero");
    }
}
