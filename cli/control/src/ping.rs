//! `fybrk ping DEVICE`: one attempt per request; the CLI repeats it (`--count`) and stops once
//! the path is direct (`--until-direct`, the default).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::status::PathKind;

/// One ping attempt: `{"cmd":"ping","id":"laptop","wait_ms":3000}`. Without a link to the
/// device, the daemon dials it at once and waits up to `wait_ms` for one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// The device: its name, its id, or a unique prefix of its id.
    pub id: String,
    /// How long to wait for a link when there is none, in milliseconds.
    pub wait_ms: u64,
}

/// The answer to one attempt (also one line of `ping --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingReply {
    /// The device's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether a link to it is up (`false`: none within `wait_ms`; the other fields but `addr`
    /// are then `null`).
    pub connected: bool,
    /// The link's path: `lan` (a private, loopback or link-local address, as LAN discovery
    /// finds), `direct` (a public address) or `relay` (through a TURN server).
    pub path: Option<PathKind>,
    /// The peer's address (for a relayed link, its address as the relay sees it); without a
    /// link, the address it was last seen at.
    pub addr: Option<SocketAddr>,
    /// For `relay`: the TURN server the link goes through (ours, or the peer's relayed address
    /// when it is the peer's relay).
    pub relay: Option<SocketAddr>,
    /// The link's round trip in milliseconds: QUIC's estimate for the path at that moment
    /// (smoothed over the acknowledgements of the link's traffic and keepalives).
    pub rtt_ms: Option<f64>,
}

impl PingReply {
    /// Whether the path is direct (`lan` or `direct`): `--until-direct` stops there.
    pub fn is_direct(&self) -> bool {
        matches!(self.path, Some(PathKind::Lan | PathKind::Direct))
    }
}
