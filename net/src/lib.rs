//! fybrk's network side: device identity, the QUIC transport with pinned mutual TLS, reconnect
//! backoff, and the replication protocol as a state machine without I/O.
//!
//! - [`identity`]: the device key pair, `DeviceId` and its human form.
//! - [`tls`]: self-signed certificates and verifiers that accept only paired device ids.
//! - [`transport`]: a quinn endpoint on one UDP socket; connect to / accept from paired devices.
//! - [`backoff`]: exponential backoff with jitter, driven by the caller's clock.
//! - [`rendezvous`]: the rendezvous server and client and hole punching, as state machines
//!   without I/O plus thin tokio drivers.
//! - [`sync`]: the replication session and conflict rules, no I/O (tested with a simulated network).

pub mod backoff;
pub mod identity;
pub mod rendezvous;
pub mod sync;
pub mod tls;
pub mod transport;
