//! Rendezvous and hole punching: how two devices behind NATs find a direct path to each other.
//!
//! A rendezvous server (`fybrk rendezvous --listen ADDR`, a small process anyone can run) knows
//! which devices are online and at which addresses. When device A wants device B, the server
//! tells both at the same moment; both then send signed probes to every candidate address of
//! the other (simultaneous open), and each NAT, seeing an outgoing packet towards the peer, lets
//! the peer's probes in. The first candidate that answers (LAN preferred, then the address the
//! server observed) becomes the path QUIC uses.
//!
//! # Messages
//!
//! One message per UDP datagram, first byte in `0x20..=0x3F` so the daemon's single socket can
//! tell them from STUN, TURN and QUIC (see [`messages`] for the exact layout and limits).
//!
//! | byte | message      | direction        | signed by      | body |
//! |------|--------------|------------------|----------------|------|
//! | 0x20 | `Register`   | device -> server | device key     | id, public key, LAN candidates (<= 8), timestamp, cookie?, TURN relayed address? |
//! | 0x21 | `Registered` | server -> device | -              | observed address, echoed timestamp, cookie, confirmed, ttl |
//! | 0x22 | `Connect`    | device -> server | device key     | id, target id, nonce, timestamp, cookie; padded to 588 B |
//! | 0x23 | `Punch`      | server -> both   | -              | peer id, peer key, peer observed + LAN candidates, nonce, initiator, cookie echo, peer relayed address? |
//! | 0x24 | `Unknown`    | server -> device | -              | target id, nonce |
//! | 0x25 | `Error`      | server -> device | -              | code (clock skew, not registered, full), echoed timestamp, server time |
//! | 0x30 | `Probe`      | device -> device | device key     | from id, nonce, seq |
//! | 0x31 | `ProbeAck`   | device -> device | device key     | from id, nonce, seq (echoed) |
//!
//! # Registration
//!
//! A device sends `Register` on start and every [`client::REREGISTER_INTERVAL`]; the refresh
//! doubles as the keepalive of its NAT mapping towards the server. The server checks the
//! signature and that the id is the hash of the key, and answers with the source address it
//! saw (so registration is also reflexive-address discovery) and a *cookie*: a MAC of (id,
//! observed address, time) under a key only the server knows. Only a `Register` that carries a
//! valid cookie is stored: the device has then proved it receives datagrams at that address, so
//! a forged source address can never make the server record a victim's address, and the server
//! keeps no state at all for a request that does not come back. A device's first registration
//! therefore takes two round trips; refreshes take one.
//!
//! # Introduction
//!
//! `Connect` names the target and a random nonce. The server checks the signature with the
//! key stored at registration, that the request comes from the registered address with a valid
//! cookie, and the timestamp. If the target is registered it sends each side a `Punch` with the
//! other's key and candidates, back to back; otherwise it answers `Unknown`. Each `Punch` echoes
//! the receiver's cookie, so a datagram merely forged from the server's address cannot start
//! probing. The receiver of an unrequested `Punch` asks its [`crate::tls::PeerPolicy`] whether
//! to take part (paired device, or any device while an invitation is open).
//!
//! # Pairing
//!
//! A joiner knows the inviter's id and the rendezvous address from the invitation. It registers
//! like any device and sends `Connect` for the inviter's id; the inviter stays registered while
//! its invitation is open and its policy admits unknown devices. The server only ever sees ids,
//! public keys and addresses: the invitation secret is proved later inside the QUIC/TLS session
//! with the inviter, and folder keys and data never pass through the server (it relays nothing).
//!
//! # What the server bounds
//!
//! - Every datagram costs a token from its source's bucket (per IPv4 address, per IPv6 /64).
//! - State is created only for cookie-proven, signed registrations, at most
//!   [`server::ServerConfig::max_registrations`] of them, each expiring after
//!   [`server::REGISTRATION_TTL`] without a refresh.
//! - No answer is larger than its request: `Registered`, `Unknown` and `Error` are smaller than
//!   `Register`/`Connect`, and `Connect` is padded so both `Punch` messages together fit in it.
//! - Invalid or unsigned datagrams are dropped without an answer; refusals to well-formed
//!   requests are a small `Error`.
//! - A restart loses nothing that matters: devices get `NotRegistered` or a cookie they did not
//!   expect, and register again.
//!
//! # Layout
//!
//! - [`messages`]: the codec.
//! - [`server`]: the server state machine (no I/O).
//! - [`client`]: the device side: registration, introductions, punch sessions (no I/O).
//! - [`puncher`]: one hole-punch attempt: what to probe when, which path won (no I/O).
//! - [`driver`]: thin tokio loops around the server and the client.

pub mod client;
pub mod driver;
mod limiter;
pub mod messages;
pub mod puncher;
pub mod server;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use client::{Client, ClientConfig, ClientEvent};
pub use driver::{
    run_server, run_server_with, spawn_client, spawn_client_with_ttl, ClientHandle, ConnectError,
};
pub use messages::{is_rendezvous, DecodeError, MAX_DATAGRAM, TYPE_RANGE};
pub use puncher::{
    Candidate, CandidateKind, PunchOutcome, PunchPath, PunchTransmit, Puncher, OPEN_PHASE, OPEN_TTL,
};
pub use server::{Server, ServerConfig, ServerStats};

/// A datagram to send: destination and bytes.
pub type Transmit = (SocketAddr, Vec<u8>);

/// Maps the monotonic clock the state machines run on to unix time, which signed timestamps
/// need. Tests build one by hand to simulate skewed clocks; drivers refresh it now and then
/// so a wall-clock step (NTP) is picked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    at: Instant,
    unix_ms: u64,
}

impl WallClock {
    /// The wall clock reads `unix_ms` at `at`.
    pub fn new(at: Instant, unix_ms: u64) -> Self {
        WallClock { at, unix_ms }
    }

    /// The system clock, read now and pinned to `now`. A clock before 1970 reads as 0.
    pub fn system(now: Instant) -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        WallClock::new(now, unix_ms)
    }

    /// Unix milliseconds at `now` (never earlier than at construction).
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        self.unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}
