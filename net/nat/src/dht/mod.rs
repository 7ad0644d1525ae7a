//! Serverless discovery through BitTorrent's Mainline DHT: each device publishes a signed
//! record of its current addresses under its Ed25519 device key (a BEP 44 mutable item), and a
//! device that cannot reach a paired peer looks that peer's record up and dials what it names.
//! No server of ours is involved; iroh does the same through pkarr.
//!
//! What is published: an [`AddrRecord`] (QUIC listen port, interface addresses, the reflexive
//! address STUN saw, the TURN relayed address if any, a timestamp), under the item's key =
//! the device's Ed25519 public key and salt [`SALT`], signed by the device key, at the ~20 DHT
//! nodes closest to `SHA-1(key ‖ salt)`. Anyone who knows the device's public key can read it;
//! the key is exchanged at pairing (it is in the device's TLS certificate), so in practice the
//! paired devices (and whoever they told) can find it. The record is republished when the
//! addresses change and every hour (BEP 44 nodes drop items after about two hours).
//!
//! Why `mainline` and not `pkarr`: pkarr wraps the same BEP 44 items around a DNS packet and
//! adds HTTP relays, which fybrk does not use; a small versioned postcard body says what we
//! need and keeps one dependency (mainline: ed25519-dalek, sha1, bencode) instead of several.
//!
//! Why the DHT node has a UDP socket of its own and not the daemon's QUIC socket: `mainline`
//! runs its node in its own thread on a socket it binds itself, and its KRPC datagrams (bencoded
//! dictionaries, first byte `d` = 0x64) would fall in the multiplexer's QUIC range. The
//! reflexive address published is the QUIC socket's (from STUN), not the DHT socket's.
//!
//! # Layout
//!
//! - [`record`]: the record's encoding (strict decoding: arbitrary bytes never panic) and the
//!   BEP 44 signature made with the device key.
//! - [`policy`]: [`DhtPolicy`], when to publish, when to look whom up, whom to dial (no I/O,
//!   no clock).
//! - [`node`]: [`DhtNode`], the thin wrapper over a `mainline` node (publish, look up, count
//!   known nodes), and the server node the lab runs as its own little DHT.

pub mod node;
pub mod policy;
pub mod record;

#[cfg(test)]
mod tests;

pub use node::{DhtNode, NodeOptions, PublishError};
pub use policy::{Action, Config, DhtPolicy, Local};
pub use record::{AddrRecord, DecodeError};

/// The BEP 44 salt of fybrk's address record: the item's target is `SHA-1(key ‖ SALT)`, so
/// other applications publishing under the same key (there are none, but the key could be
/// reused) never overwrite it, and the signed bytes start with `4:salt`, which no other
/// message the device key signs does (those start with a `fybrk ...` context string).
pub const SALT: &[u8] = b"fybrk addrs";

/// The public Mainline bootstrap nodes `mainline` uses by default (`dht_bootstrap` replaces
/// them; the tests always do).
pub fn default_bootstrap() -> Vec<String> {
    mainline::DEFAULT_BOOTSTRAP_NODES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
