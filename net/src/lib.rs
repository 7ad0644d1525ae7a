//! fybrk's network side: device identity, the QUIC transport with pinned mutual TLS, reconnect
//! backoff, and the replication protocol as a state machine without I/O.
//!
//! - [`identity`]: the device key pair, `DeviceId` and its human form.
//! - [`tls`]: self-signed certificates and verifiers that accept only paired device ids.
//! - [`transport`]: a quinn endpoint on one UDP socket; connect to / accept from paired devices.
//! - [`mux`]: the daemon's one UDP socket, demultiplexing QUIC, STUN, TURN ChannelData and
//!   rendezvous datagrams by their first byte; quinn runs on it, relayed peers go through TURN.
//! - [`stun`]: STUN Binding client, NAT check (reflexive address, mapping behaviour), STUN
//!   server configuration.
//! - [`turn`]: TURN client (allocation, permissions, channels, refresh) for relayed paths.
//! - [`backoff`]: exponential backoff with jitter, driven by the caller's clock.
//! - [`rendezvous`]: the rendezvous server and client and hole punching, as state machines
//!   without I/O plus thin tokio drivers.
//! - [`sync`]: the replication session and conflict rules, no I/O (tested with a simulated network).

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
