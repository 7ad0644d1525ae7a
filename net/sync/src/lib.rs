//! Replication: the wire protocol, the conflict rules and the per-peer session, plus the drivers
//! that run a session over a QUIC connection against a store.
//!
//! The session and the conflict rules touch no socket, clock or store. The async driver (one
//! task per peer connection, [`quic_driver`] with [`store_driver`]) reads frames, hands messages
//! to a [`Session`] together with `now`, executes the [`Action`]s it returns against the store,
//! and writes what [`Session::poll_outgoing`] yields. That keeps every ordering question testable
//! in milliseconds: `sim` (tests only) runs three devices, each with the real driver
//! ([`store_driver::StoreReplica`]) over an in-memory store, over a simulated network with
//! delays, drops and partitions.
//!
//! This crate uses the link (`fybrk-link`) for connections and the store (`fybrk-store`); it
//! must never import NAT traversal (`fybrk-nat`): how a connection found its path is not its
//! business.
//!
//! - [`messages`]: `Hello`, `IndexUpdate`, `ChunkRequest`/`ChunkResponse`, `Ping`/`Pong`, and
//!   the length-prefixed frame codec (postcard payloads, bounded frame size).
//! - [`conflict`]: what to do with a remote record given the local one: keep, take, merge or
//!   conflict (with the loser kept under a `.sync-conflict-...` name, see [`naming`]).
//! - [`session`]: one connection's state machine: index exchange, chunk fetching with a window
//!   and retries, per-peer progress for offline catch-up, keepalive.
//! - [`store`]: what replication needs from a store ([`ReplicaStore`], [`Staging`]), with the
//!   RocksDB implementation (and an in-memory one for tests).
//! - [`store_driver`]: executes a session's actions against a [`ReplicaStore`]: pins,
//!   conditional commits decided again on [`fybrk_store::StoreError::Changed`].
//! - [`validate`]: what a record from a peer must satisfy before it is stored or relayed.
//! - [`quic_driver`]: the async task that moves frames between a QUIC stream and a session.
//!
//! # The driver's contract in one paragraph
//!
//! Create a session per connection with the store's sequence and the persisted progress for
//! that peer; execute actions in the order returned (an `Apply` must be durable before a later
//! `PeerSeenUpTo` is persisted); answer `SendIndexFrom` with `Store::changes_since`,
//! `NeedChunks` with the chunks the store lacks (after [`conflict::decide`]), `StoreChunk` by
//! verifying and storing the sealed bytes, `ReadChunk` with the sealed bytes; resolve each
//! `Apply` with [`conflict::resolve`] against the *current* local record and commit the result
//! without bumping its version vector, plus any conflict copy as a local change; call
//! [`Session::handle_local_changed`] after every commit.
//! The details are on [`Action`].

mod action;
pub mod conflict;
pub mod demand;
mod fetch;
pub mod messages;
pub mod naming;
pub mod offer;
mod progress;
pub mod quic_driver;
pub mod session;
pub mod store;
pub mod store_driver;
#[cfg(test)]
mod test_support;
pub mod validate;

#[cfg(test)]
mod sim;

// The link's modules under their old paths (`crate::transport`, ...), so code moved out of the
// one `fybrk-net` crate reads the same.
#[cfg(test)]
use fybrk_link::identity;
use fybrk_link::tls;
use fybrk_link::transport;

pub use conflict::{decide, resolve, ConflictCopy, Decision, Resolution, Side, Slot};
pub use messages::{FrameDecoder, FrameError, Message, DEFAULT_MAX_FRAME};
pub use session::{Action, FetchFailure, RecordToken, Session, SessionConfig};
pub use store::{ReplicaStore, Staging};

/// Why a session ended. The driver closes the connection and, for everything except
/// [`SyncError::WrongFolder`] and [`SyncError::SelfConnect`], reconnects with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The peer syncs a different folder (its `Hello` named another folder id).
    #[error("peer syncs another folder ({theirs}), not this one ({ours}): check the pairing")]
    WrongFolder {
        /// Our folder id, hex.
        ours: String,
        /// The peer's folder id, hex.
        theirs: String,
    },
    /// The peer announced our own device id: the same identity runs on two machines.
    #[error(
        "peer claims this device's own id {0:016x}: the device key was copied to another \
         machine; give one of them a new identity"
    )]
    SelfConnect(u64),
    /// The peer broke the protocol (a message out of order, an unknown request id, a bad path).
    #[error("peer broke the sync protocol: {0}")]
    Protocol(String),
    /// Nothing arrived from the peer for longer than the idle timeout.
    #[error("peer sent nothing for {0:?} (not even a Pong): connection considered dead")]
    Timeout(std::time::Duration),
}

/// Hex form of a folder id for messages.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
