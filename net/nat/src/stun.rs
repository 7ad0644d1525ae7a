//! STUN Binding client (RFC 8489) over the [`MuxSocket`](crate::mux::MuxSocket): this device's
//! reflexive address (its public address as a STUN server sees it) and a NAT check that
//! compares it across servers.
//!
//! - [`binding()`]: one Binding transaction, with retransmission, returning XOR-MAPPED-ADDRESS.
//! - [`nat_check`]: asks every configured server at once and tells whether the NAT maps our
//!   socket to the same public address whatever the destination ("endpoint-independent", hole
//!   punching works) or not (punching is unlikely, use the relay).
//! - [`NatMonitor`]: repeats the check periodically, so a changed public address is noticed.
//! - [`stun_servers`]: the servers from `--stun HOST:PORT` values, `FYBRK_STUN`, or the defaults.
//!
//! Transactions (shared with [`crate::turn`]) retransmit on RFC 8489's doubling RTO but give up
//! after [`TRANSACTION_TIMEOUT`], so a check finishes within ~3 s even when UDP is blocked. The
//! schedule is a state machine without I/O or clock (`transaction`), driven by the Binding
//! client here and by the TURN allocation.
//!
//! # Layout
//!
//! - `config`: server settings (`--stun`, `FYBRK_STUN`, defaults), `HOST:PORT` parsing and
//!   resolution.
//! - `transaction`: the retransmission state machine.
//! - `binding`: the Binding client driver and STUN message helpers.
//! - `check`: [`nat_check`] and [`NatMonitor`].

use std::time::Duration;

mod binding;
mod check;
mod config;
pub(crate) mod transaction;

pub use binding::{binding, StunError};
pub(crate) use binding::{decode_reply, encode, error_code, new_tid};
pub use check::{nat_check, Mapping, NatMonitor, NatReport, MONITOR_INTERVAL};
pub(crate) use config::{fmt_host_port, parse_host_port, resolve, ResolveError};
pub use config::{
    stun_servers, stun_servers_from, ConfigError, StunServer, DEFAULT_STUN_PORT,
    DEFAULT_STUN_SERVERS, STUN_ENV,
};

/// First retransmission timeout. RFC 8489 §6.2.1 recommends an RTO above 500 ms; 500 ms is still
/// well above any real round trip to a STUN server.
pub const INITIAL_RTO: Duration = Duration::from_millis(500);

/// How long a transaction waits in all. RFC 8489's full schedule (7 sends, 39.5 s) suits a
/// server that must eventually answer; a NAT check runs at start-up and from `fybrk status`, and
/// a path that lost three requests in a row is not usable for QUIC anyway. With a 500 ms RTO
/// the request goes out at 0, 0.5 and 1.5 s, and the last copy gets 1.5 s (three RTOs) to come
/// back.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests;
