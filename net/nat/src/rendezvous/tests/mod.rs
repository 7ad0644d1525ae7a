//! Tests of the rendezvous protocol: the codec, the server and the puncher with a simulated
//! clock, client and server together on a simulated network, and one run over real loopback
//! UDP sockets.

mod client;
mod codec;
mod loopback;
mod masquerade;
mod puncher;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::WallClock;
use crate::identity::DeviceKey;

/// 2025-01-01T00:00:00Z: the simulated wall clock at the simulated start.
pub(super) const EPOCH_MS: u64 = 1_735_689_600_000;

pub(super) fn key() -> Arc<DeviceKey> {
    Arc::new(DeviceKey::generate().expect("generate key"))
}

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// A wall clock reading [`EPOCH_MS`] at `start`.
pub(super) fn wall(start: Instant) -> WallClock {
    WallClock::new(start, EPOCH_MS)
}
