//! The link between two fybrk devices: who a device is, how it proves it, and the QUIC
//! connection that carries everything else.
//!
//! This crate owns the device identity, TLS bound to device ids and the quinn endpoint. It knows
//! nothing of NAT traversal (`fybrk-nat`) or replication (`fybrk-sync`) and must never import
//! them: both build on it, and it stays the small, audited core that decides who is let in.
//!
//! # Layout
//!
//! - [`identity`]: the device's Ed25519 key pair (made on first run, kept on disk), its
//!   [`DeviceId`](identity::DeviceId) and the human form of that id, signatures.
//! - [`tls`]: self-signed certificates, the allow list of paired ids (and the pairing window),
//!   and the rustls verifiers that accept a peer only when its certificate's key hashes to an
//!   allowed device id; the channel binding pairing proofs are tied to.
//! - [`flow`]: the connection's flow-control windows, retuned to the bandwidth-delay product.
//! - [`transport`]: the quinn endpoint on the daemon's socket: connect to a device by id, accept
//!   only devices the caller's policy admits (paired, or pairing only).

pub mod flow;
pub mod identity;
pub mod tls;
pub mod transport;
