//! NAT traversal: how a fybrk device reaches its peers through NATs and firewalls, all on the
//! daemon's one UDP socket.
//!
//! This crate owns the socket multiplexer, STUN, TURN, the rendezvous protocol and hole
//! punching. It uses the link (`fybrk-link`) for device ids, signatures and the allow list, and
//! must never import replication (`fybrk-sync`): traversal finds a path, what travels on it is
//! not its business. Which peer to dial and when is the daemon's policy, not this crate's.
//!
//! Protocol logic is written as state machines without I/O (input with `now`, output polled),
//! each with a thin tokio driver beside it, so the tests drive them with a fake clock.
//!
//! # Layout
//!
//! - [`mux`]: the daemon's one UDP socket, demultiplexing QUIC, STUN, TURN ChannelData and
//!   rendezvous datagrams by their first byte; quinn runs on it, relayed peers go through TURN.
//! - [`stun`]: STUN Binding client, NAT check (reflexive address, mapping behaviour), STUN
//!   server configuration.
//! - [`turn`]: TURN client (allocation, permissions, channels, refresh) for relayed paths.
//! - [`backoff`]: exponential backoff with full jitter; the caller keeps the clock and decides
//!   when to reset it.
//! - [`lan`]: LAN discovery: signed announcements by broadcast and multicast, and the policy
//!   deciding when to announce, which announcements to believe and whom to dial.
//! - [`portmap`]: router port mapping (PCP, NAT-PMP, UPnP IGD) of the listen port on the LAN's
//!   gateway: wire formats, the lifecycle as a state machine, a thin tokio driver.
//! - [`dht`]: serverless discovery: signed address records in the Mainline DHT (BEP 44),
//!   the policy deciding when to publish, whom to look up and dial, and a thin node wrapper.
//! - [`rendezvous`]: the rendezvous server, its client (registration, introductions) and hole
//!   punching, as state machines without I/O plus thin tokio drivers.
//! - `testing` (tests only): a real coturn on loopback for the TURN tests.

pub mod backoff;
pub mod dht;
pub mod lan;
pub mod mux;
pub mod portmap;
pub mod rendezvous;
pub mod stun;
pub mod turn;

#[cfg(test)]
mod testing;

// The link's modules under their old paths (`crate::identity`, ...), so code moved out of the
// one `fybrk-net` crate reads the same.
#[cfg(test)]
use fybrk_link::transport;
use fybrk_link::{identity, tls};
