//! Why a TURN operation failed ([`TurnError`]), with a hint per STUN error code.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a TURN operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The server name did not resolve.
    #[error("cannot resolve TURN server {server}: {source} (check the name and DNS)")]
    Resolve {
        /// The server as configured.
        server: String,
        /// The resolver's reason.
        source: io::Error,
    },
    /// The server has no address of our socket's IP family.
    #[error("TURN server {server} has no address reachable from the socket on {local} (IPv4/IPv6 mismatch)")]
    NoUsableAddress {
        /// The server as configured.
        server: String,
        /// Our socket's address.
        local: SocketAddr,
    },
    /// Our socket is unusable.
    #[error("the UDP socket is unusable: {0}")]
    Socket(#[source] io::Error),
    /// A request could not be sent.
    #[error("cannot send to TURN server {server}: {source} (is the network up?)")]
    Send {
        /// The server's address.
        server: SocketAddr,
        /// The OS's reason.
        source: io::Error,
    },
    /// No answer in time.
    #[error(
        "no answer from TURN server {server} within {}s: UDP may be blocked on this network, or \
         the server is down", after.as_secs()
    )]
    Timeout {
        /// The server's address.
        server: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// The credentials were refused.
    #[error(
        "TURN server refused the credentials for user {user:?} at {server} ({code} {reason}): \
         check user= and pass= in the turn: setting"
    )]
    Unauthorized {
        /// The server's address.
        server: SocketAddr,
        /// The user name we tried.
        user: String,
        /// STUN error code (401 or 441).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// The server refused a request for another reason.
    #[error("TURN server {server} refused {request}: {code} {reason}{}", hint(*code))]
    Rejected {
        /// The server's address.
        server: SocketAddr,
        /// What we asked for.
        request: &'static str,
        /// STUN error code.
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// The answer was not a valid TURN response.
    #[error("malformed reply from TURN server {server}: {reason}")]
    Malformed {
        /// The server's address.
        server: SocketAddr,
        /// What is wrong with it.
        reason: String,
    },
    /// The user name, realm or password cannot be used in STUN.
    #[error("the TURN credentials cannot be used: {0}")]
    Credentials(String),
    /// Every channel number is taken.
    #[error("all 4096 TURN channels on {server} are in use")]
    ChannelsExhausted {
        /// The server's address.
        server: SocketAddr,
    },
    /// The peer's IP family differs from the relayed address's.
    #[error("cannot relay to {peer}: the relayed address {relayed} is of the other IP family")]
    FamilyMismatch {
        /// The peer asked for.
        peer: SocketAddr,
        /// Our relayed address.
        relayed: SocketAddr,
    },
    /// The allocation expired or was closed.
    #[error("the TURN allocation on {server} is gone (expired or closed); allocate a new one")]
    Inactive {
        /// The server's address.
        server: SocketAddr,
    },
}

/// What to try for a TURN error code (RFC 8656 §19, RFC 8489 §14.8).
fn hint(code: u16) -> &'static str {
    match code {
        403 => " (the server's policy forbids it, e.g. that peer address is not allowed)",
        437 => {
            " (the server holds another allocation for this socket; it expires within 10 minutes)"
        }
        441 => " (wrong credentials for this allocation)",
        442 => " (the server does not relay UDP)",
        486 => " (this user has reached the server's allocation quota)",
        508 => " (the server is out of relay ports; try later or another server)",
        _ => "",
    }
}

impl TurnError {
    /// Whether retrying the same request cannot help: the allocation is gone or refused.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            TurnError::Unauthorized { .. }
                | TurnError::Inactive { .. }
                | TurnError::Rejected { code: 437, .. }
        )
    }
}
