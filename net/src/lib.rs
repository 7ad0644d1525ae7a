//! fybrk's network side, as one front door over its three parts: who a device is, how it
//! reaches its peers, and what they say to each other. The daemon (`cli`) wires these parts
//! together; none of them owns policy about which peers to dial or when, FUSE, or storage beyond
//! what replication applies through [`fybrk_store::Store`].
//!
//! # Layout
//!
//! Three crates under `net/`, re-exported here under their module names:
//!
//! - `net/link` (`fybrk-link`): [`identity`], [`tls`], [`transport`]: device keys and ids, TLS
//!   that admits only paired device ids, the quinn endpoint.
//! - `net/nat` (`fybrk-nat`): [`mux`], [`stun`], [`turn`], [`rendezvous`], [`lan`], [`dht`],
//!   [`backoff`]: the one UDP socket, STUN, TURN relays, rendezvous, hole punching, LAN
//!   discovery and discovery through the Mainline DHT.
//! - `net/sync` (`fybrk-sync`): [`sync`]: replication's messages, conflict rules, the per-peer
//!   session and its drivers.
//!
//! The arrows: `nat -> link`, `sync -> link`, `sync -> store`. Never `link -> nat|sync`,
//! `nat -> sync` or `sync -> nat`: traversal finds a path, replication uses a connection, and
//! neither needs to know about the other.

pub use fybrk_link::{flow, identity, tls, transport};
pub use fybrk_nat::{backoff, dht, lan, mux, portmap, rendezvous, stun, turn};
pub use fybrk_sync as sync;
