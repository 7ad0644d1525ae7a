//! TURN client (RFC 8656) over the [`MuxSocket`](crate::mux::MuxSocket): a relayed address on a
//! TURN server (coturn) for when no direct path works, e.g. both devices behind symmetric NATs.
//!
//! [`TurnClient::allocate`] authenticates with long-term credentials (RFC 8489 §9.2: the first
//! request is challenged with 401 and a realm and nonce, the retry carries MESSAGE-INTEGRITY; a
//! 438 "stale nonce" brings a fresh nonce and the request is sent again) and gets a relayed
//! address. [`TurnClient::bind_peer`] binds a channel to a peer and registers the route in the
//! mux: quinn's traffic to that peer then travels as ChannelData through the server, and the
//! peer sees the relayed address as ours. In the background the allocation is refreshed before
//! it expires, and channels and permissions are re-bound before they lapse.
//!
//! One allocation per server and socket (TURN keys allocations by the client's 5-tuple).
//! Configuration comes as `turn:HOST:PORT?user=U&pass=P` ([`TurnConfig`]).
//!
//! # Layout
//!
//! - `config`: [`TurnConfig`], the `turn:` URL.
//! - `error`: [`TurnError`].
//! - `request`: building requests and judging answers, long-term credentials.
//! - `allocation`: the allocation as a state machine without I/O or clock: allocate (and
//!   replace a stale allocation), refresh, permissions, channels, retransmissions; unit tests
//!   on a fake clock against a scripted server.
//! - `driver`: [`TurnClient`], the tokio task that feeds the socket and timers into the machine.

use std::time::Duration;

mod allocation;
mod config;
mod driver;
mod error;
mod request;

pub use config::{TurnConfig, TurnConfigError, DEFAULT_TURN_PORT};
pub use driver::TurnClient;
pub use error::TurnError;

/// Allocation lifetime we ask for on refresh: RFC 8656's default of 10 minutes. Longer would
/// leave a dead client's relay port held for longer; shorter only costs more refreshes.
const DESIRED_LIFETIME: Duration = Duration::from_secs(600);

/// Permissions expire after 300 s and channel bindings after 600 s (RFC 8656 §9, §12). A
/// ChannelBind refreshes both, so re-binding every 240 s keeps everything with a minute to spare
/// for retries.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);

/// When to refresh an allocation granted for `lifetime`: a minute before it expires (room for a
/// 3 s transaction and several retries), or at half-time for short lifetimes.
pub(crate) fn refresh_after(lifetime: Duration) -> Duration {
    let margin = Duration::from_secs(60);
    if lifetime > 2 * margin {
        lifetime - margin
    } else {
        lifetime / 2
    }
}

/// Timers of the background refresh; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timers {
    /// Refresh the allocation this often instead of [`refresh_after`] its lifetime.
    pub(crate) allocation: Option<Duration>,
    /// Re-bind channels and permissions this often.
    pub(crate) permissions: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            allocation: None,
            permissions: PERMISSION_REFRESH,
        }
    }
}

#[cfg(test)]
mod tests;
