//! fybrk's pairing: the invitation a device shows, its QR code, and the handshake that hands the
//! folder key to a new device.
//!
//! `fybrk pair` on a paired device makes an [`Invitation`] (inviter device id, candidate
//! addresses, rendezvous, folder id, a one-time 128-bit secret, a 10-minute expiry), prints it as
//! text and as a QR code ([`qr`]), and opens an [`InviterSession`]. `fybrk pair-with` on the new
//! device parses the text ([`Invitation::parse`]), connects to a peer whose certificate has the
//! inviter's id, and runs a [`JoinerSession`]: it proves knowledge of the secret bound to that
//! TLS session ([`proof()`]), and gets the folder key back in a [`Welcome`].
//!
//! This crate owns the formats and the logic, and no I/O apart from writing a PNG: no sockets,
//! no clock (callers pass `now` as unix seconds), no device identity. Device ids are raw
//! `[u8; 32]` and folder ids `[u8; 16]`, so the crate does not depend on `fybrk-net`; the daemon
//! supplies the connection, the TLS exporter value (`binding`) and the peer's certificate id.
//!
//! # Layout
//!
//! - [`invite`]: the [`Invitation`] and its `fybrk1:` text form (base32, checksummed).
//! - [`qr`]: QR rendering for the terminal (half blocks) and as PNG.
//! - [`mod@proof`]: the HMAC proof of the secret, bound to one TLS session.
//! - [`handshake`]: the messages, their frames, the rate limits, and the inviter and joiner state
//!   machines.
//! - [`members`]: the folder's member list, a log of signed entries every member checks.
//! - [`sas`]: the words both screens show, so a person can tell their device from a stranger's.
//! - device names are cleaned for display by [`sanitize_name`] wherever they cross devices.

mod base32;
pub mod handshake;
pub mod invite;
pub mod members;
mod name;
pub mod proof;
pub mod qr;
pub mod sas;

pub use handshake::{
    decode_frame, encode_frame, BadProofs, FrameError, InviterSession, JoinRequest, JoinedPeer,
    JoinerSession, PairError, PairingGate, PendingJoin, RateLimiter, RefuseReason, Refused, Reply,
    Welcome, APPROVE_WITHIN_SECS, MAX_LATER_KEYS,
};
pub use invite::{
    HostPort, Invitation, InviteError, Rendezvous, RendezvousParseError, INVITE_TTL_SECS,
    INVITE_VERSION,
};
pub use name::{sanitize_name, MAX_NAME_LEN};
pub use proof::{proof, verify_proof, Role};
pub use qr::{read_image, render_terminal, save_png, QrError, ReadQrError};

/// The first 8 bytes of an id in hex, for `Debug` output that identifies without flooding.
fn hex_prefix(bytes: &[u8]) -> String {
    let mut s: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 8 {
        s.push('…');
    }
    s
}

/// A duration for a person: "42 s", "3 min", "2 h", "3 days".
fn fmt_secs(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_well() {
        assert_eq!(super::fmt_secs(42), "42 s");
        assert_eq!(super::fmt_secs(180), "3 min");
        assert_eq!(super::fmt_secs(3600), "1 h");
        assert_eq!(super::fmt_secs(86_400 * 3), "3 days");
    }
}
