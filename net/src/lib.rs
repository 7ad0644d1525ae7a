//! fybrk's network side: who a device is, how it reaches its peers, and what they say to each
//! other. The daemon (`cli`) wires these parts together; this crate owns no policy about which
//! peers to dial or when, no FUSE, and no storage beyond what replication applies through
//! [`fybrk_store::Store`].
//!
//! Protocol logic is written as state machines without I/O (input with `now`, output polled),
//! each with a thin tokio driver beside it, so the tests drive them with a fake clock.
//!
//! # Layout
//!
//! - [`identity`]: the device's Ed25519 key pair (made on first run, kept on disk), its
//!   [`DeviceId`](identity::DeviceId) and the human form of that id, signatures.
//! - [`tls`]: self-signed certificates, the allow list of paired ids (and the pairing window),
//!   and the rustls verifiers that accept a peer only when its certificate's key hashes to an
//!   allowed device id; the channel binding pairing proofs are tied to.
//! - [`transport`]: the quinn endpoint on the daemon's socket: connect to a device by id, accept
//!   only devices the caller's policy admits (paired, or pairing only).
//! - [`mux`]: the daemon's one UDP socket, demultiplexing QUIC, STUN, TURN ChannelData and
//!   rendezvous datagrams by their first byte; quinn runs on it, relayed peers go through TURN.
//! - [`stun`]: STUN Binding client, NAT check (reflexive address, mapping behaviour), STUN
//!   server configuration.
//! - [`turn`]: TURN client (allocation, permissions, channels, refresh) for relayed paths.
//! - [`backoff`]: exponential backoff with full jitter; the caller keeps the clock and decides
//!   when to reset it.
//! - [`rendezvous`]: the rendezvous server, its client (registration, introductions) and hole
//!   punching, as state machines without I/O plus thin tokio drivers.
//! - [`sync`]: replication: the wire messages, the conflict rules and the per-peer session
//!   without I/O (tested over a simulated network), plus the drivers that run a session over a
//!   QUIC connection against a store.
//! - `testing` (tests only): a real coturn on loopback for the TURN tests.

pub mod backoff;
pub mod identity;
pub mod mux;
pub mod rendezvous;
pub mod stun;
pub mod sync;
pub mod tls;
pub mod transport;
pub mod turn;

#[cfg(test)]
mod testing;
