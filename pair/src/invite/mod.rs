//! The invitation: what `fybrk pair` shows as a QR code and as text, and `fybrk pair-with` reads.
//!
//! The text is `fybrk1:` followed by base32 (RFC 4648, upper case, no padding) of a compact binary
//! body (see `body.rs` for the layout) and a 4-byte checksum, the first 4 bytes of SHA-256 of the
//! body. Upper case because QR alphanumeric mode (0-9, A-Z, space and `$%*+-./:`) packs 5.5 bits
//! a character against 8 for byte mode and has no lower case: [`Invitation::encode_qr`] gives an
//! all-upper-case text (`:` is in the set too) so the whole QR code stays in that mode.
//! [`Invitation::parse`] accepts either case and ignores whitespace, including line breaks a
//! terminal put in a long line.
//!
//! The checksum catches typos and truncation before any network traffic: it is a typing check,
//! not a security measure. The security comes from the secret, proved over the TLS channel
//! (see [`mod@crate::proof`]) and from the inviter's device id, which the joiner pins.

mod body;
mod rendezvous;

use std::fmt;
use std::net::SocketAddr;

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::base32::{self, Base32Error};
use crate::fmt_secs;
use crate::name::sanitize_name;
use body::BodyError;

pub use rendezvous::{HostPort, Rendezvous, RendezvousParseError, MAX_HOST_LEN};

/// The body format this fybrk writes and reads.
pub const INVITE_VERSION: u8 = 1;

/// What every invitation text starts with (either case is accepted).
pub const PREFIX: &str = "fybrk1:";

/// The most candidate addresses an invitation carries. The inviter lists its best ones first;
/// more than eight mostly adds stale interfaces and makes the QR code denser.
pub const MAX_ADDRS: usize = 8;

/// How long a new invitation is valid (DESIGN.md: 10 minutes): long enough to walk to the other
/// device, short enough that a photo of the screen is soon worthless.
pub const INVITE_TTL_SECS: u64 = 600;

/// Slack the joiner gives the expiry when parsing. The expiry was written by the inviter's clock
/// and is read by the joiner's; the inviter enforces it exactly (by its own clock) in
/// [`crate::InviterSession`], so the joiner only needs to catch invitations that are clearly
/// stale without refusing a fresh one because the two clocks disagree by a minute.
pub const PARSE_CLOCK_GRACE_SECS: u64 = 60;

const CHECKSUM_LEN: usize = 4;

/// A pairing invitation.
///
/// Build one with [`Invitation::new`]; turn it into text with [`Invitation::encode`] and back with
/// [`Invitation::parse`]. `Debug` hides the secret, so an invitation can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Body format; [`INVITE_VERSION`] for everything this fybrk makes.
    pub version: u8,
    /// The inviting device's id (SHA-256 of its public key); the joiner accepts only a TLS peer
    /// with this id, so neither the rendezvous nor a relay can sit in the middle.
    pub inviter: [u8; 32],
    /// The inviting device's name, at most [`crate::MAX_NAME_LEN`] bytes; shown to the joiner.
    pub inviter_name: String,
    /// Candidate addresses of the inviter, best first, at most [`MAX_ADDRS`].
    pub addrs: Vec<SocketAddr>,
    /// The rendezvous server to meet at when no candidate address answers.
    pub rendezvous: Option<Rendezvous>,
    /// The folder being shared.
    pub folder: [u8; 16],
    /// The one-time 128-bit secret the joiner proves it knows.
    pub secret: [u8; 16],
    /// When the invitation stops working, in unix seconds of the inviter's clock.
    pub expires_unix: u64,
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("version", &self.version)
            .field("inviter", &crate::hex_prefix(&self.inviter))
            .field("inviter_name", &self.inviter_name)
            .field("addrs", &self.addrs)
            .field("rendezvous", &self.rendezvous)
            .field("folder", &crate::hex_prefix(&self.folder))
            .field("secret", &"<hidden>")
            .field("expires_unix", &self.expires_unix)
            .finish()
    }
}

/// Why a text is not a usable invitation. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    /// The text does not start with `fybrk1:` (or another `fybrkN:`).
    #[error(
        "this is not a fybrk invitation (it should start with `{PREFIX}`); \
         copy the text that `fybrk pair` printed on the other device"
    )]
    NotAnInvitation,
    /// A format this fybrk does not know, almost certainly from a newer fybrk.
    #[error(
        "this invitation uses format {found}, but this fybrk only knows format {INVITE_VERSION}: \
         it was made by a newer fybrk; upgrade fybrk on this device"
    )]
    WrongVersion {
        /// The format number found.
        found: u8,
    },
    /// Part of the text is missing.
    #[error("the invitation is incomplete (its end is missing); copy the whole line again")]
    Truncated,
    /// The checksum does not match: a character was changed, added or lost.
    #[error(
        "the invitation is damaged (its checksum does not match, so a character was probably \
         mistyped or lost); copy the whole line again"
    )]
    Corrupt,
    /// The checksum matches but the content is not a valid invitation: a bug in the fybrk that
    /// made it, or a hand-crafted one.
    #[error("the invitation is malformed ({0}); ask for a new one with `fybrk pair`")]
    Malformed(String),
    /// The invitation is past its expiry.
    #[error(
        "the invitation expired {} ago; ask for a new one with `fybrk pair`",
        fmt_secs(*ago_secs)
    )]
    Expired {
        /// How long ago it expired, in seconds.
        ago_secs: u64,
    },
    /// The operating system's random number generator failed while making a secret.
    #[error("could not make a secret: the system's random number generator failed: {0}")]
    Random(#[source] rand::Error),
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::digest(body);
    let mut sum = [0u8; CHECKSUM_LEN];
    sum.copy_from_slice(&digest[..CHECKSUM_LEN]);
    sum
}

impl Invitation {
    /// A new invitation with a fresh secret from the OS random number generator, valid for
    /// [`INVITE_TTL_SECS`] from `now_unix`.
    ///
    /// The name is sanitised and cut to [`crate::MAX_NAME_LEN`] bytes; only the first
    /// [`MAX_ADDRS`] addresses are kept, without IPv6 scope ids (they are local to this device).
    pub fn new(
        inviter: [u8; 32],
        inviter_name: &str,
        addrs: &[SocketAddr],
        rendezvous: Option<Rendezvous>,
        folder: [u8; 16],
        now_unix: u64,
    ) -> Result<Self, InviteError> {
        let mut secret = [0u8; 16];
        OsRng
            .try_fill_bytes(&mut secret)
            .map_err(InviteError::Random)?;
        Ok(Self {
            version: INVITE_VERSION,
            inviter,
            inviter_name: sanitize_name(inviter_name),
            addrs: addrs
                .iter()
                .take(MAX_ADDRS)
                .copied()
                .map(body::portable)
                .collect(),
            rendezvous: rendezvous.map(|r| match r {
                Rendezvous::Addr(a) => Rendezvous::Addr(body::portable(a)),
                host => host,
            }),
            folder,
            secret,
            expires_unix: now_unix.saturating_add(INVITE_TTL_SECS),
        })
    }

    fn payload(&self) -> String {
        let mut data = body::write(self);
        let sum = checksum(&data);
        data.extend_from_slice(&sum);
        base32::encode(&data)
    }

    /// The text form, `fybrk1:` + base32, for printing and copy-paste.
    ///
    /// Fields are normalised as [`Invitation::new`] does, so an invitation built by hand with
    /// more than [`MAX_ADDRS`] addresses or a long name parses back shortened.
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}", self.payload())
    }

    /// The same text in upper case (`FYBRK1:...`), for the QR code: every character is then in
    /// QR alphanumeric mode, which makes a smaller code than mixing in byte mode for the prefix.
    pub fn encode_qr(&self) -> String {
        format!("{}{}", PREFIX.to_ascii_uppercase(), self.payload())
    }

    /// Reads an invitation and checks that it has not expired at `now_unix` (allowing
    /// [`PARSE_CLOCK_GRACE_SECS`] for clock differences between the two devices).
    ///
    /// Whitespace anywhere and either letter case are accepted.
    pub fn parse(text: &str, now_unix: u64) -> Result<Self, InviteError> {
        let inv = Self::decode(text)?;
        if now_unix > inv.expires_unix.saturating_add(PARSE_CLOCK_GRACE_SECS) {
            return Err(InviteError::Expired {
                ago_secs: now_unix - inv.expires_unix,
            });
        }
        Ok(inv)
    }

    /// Reads an invitation without looking at the clock (for showing what an old one held).
    pub fn decode(text: &str) -> Result<Self, InviteError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let payload = strip_prefix(&compact)?;
        let data = match base32::decode(payload) {
            Ok(data) => data,
            Err(Base32Error::BadChar) => return Err(InviteError::Corrupt),
            // A bad length or stray trailing bits: lost characters, or changed ones at the end.
            Err(Base32Error::BadLength | Base32Error::NonCanonical) => {
                return Err(match base32::decode_lossy(payload) {
                    Ok(data) => diagnose_damage(&data),
                    Err(_) => InviteError::Corrupt,
                });
            }
        };
        if data.len() < CHECKSUM_LEN + 1 {
            return Err(InviteError::Truncated);
        }
        let (body_bytes, sum) = data.split_at(data.len() - CHECKSUM_LEN);
        if checksum(body_bytes) != sum {
            return Err(diagnose_damage(&data));
        }
        // Only now is the version byte trustworthy: a damaged text must say "damaged", not
        // "upgrade".
        if body_bytes[0] != INVITE_VERSION {
            return Err(InviteError::WrongVersion {
                found: body_bytes[0],
            });
        }
        match body::read(body_bytes) {
            Ok((inv, used)) if used == body_bytes.len() => Ok(inv),
            Ok(_) => Err(InviteError::Malformed(
                "it has extra bytes at the end".into(),
            )),
            Err(BodyError::Short) => Err(InviteError::Malformed("it ends too early".into())),
            Err(BodyError::Malformed(why)) => Err(InviteError::Malformed(why.into())),
        }
    }
}

/// Returns the base32 part after a `fybrk1:` prefix (any case).
fn strip_prefix(text: &str) -> Result<&str, InviteError> {
    let (scheme, payload) = text.split_once(':').ok_or(InviteError::NotAnInvitation)?;
    let scheme = scheme.to_ascii_lowercase();
    let number = scheme
        .strip_prefix("fybrk")
        .ok_or(InviteError::NotAnInvitation)?;
    if number == "1" {
        return Ok(payload);
    }
    // `fybrk2:` and later: a newer fybrk, and the user should hear "upgrade", not "garbage".
    let canonical = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && !number.starts_with('0');
    if canonical {
        let found = number.parse::<u8>().unwrap_or(u8::MAX);
        return Err(InviteError::WrongVersion { found });
    }
    Err(InviteError::NotAnInvitation)
}

/// The checksum failed: was the text cut short, or changed? If the structure read from the bytes
/// needs more than are there (allowing for the checksum), it was cut short.
fn diagnose_damage(data: &[u8]) -> InviteError {
    match data.first() {
        None => return InviteError::Truncated,
        // Format 1's structure is the only one this fybrk can measure.
        Some(&v) if v != INVITE_VERSION => return InviteError::Corrupt,
        Some(_) if data.len() < body::MIN_BODY_LEN + CHECKSUM_LEN => return InviteError::Truncated,
        Some(_) => {}
    }
    match body::read(data) {
        Err(BodyError::Short) => InviteError::Truncated,
        Ok((_, used)) if data.len() < used + CHECKSUM_LEN => InviteError::Truncated,
        _ => InviteError::Corrupt,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;
