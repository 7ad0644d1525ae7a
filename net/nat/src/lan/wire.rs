//! The LAN announcement on the wire: one UDP datagram.
//!
//! ```text
//! MAGIC (4 bytes) || VERSION (1 byte) || postcard(Announcement) || Ed25519 signature (64 bytes)
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`] followed by everything before it, exactly as sent,
//! so a signature the device key makes for anything else (rendezvous messages, member entries)
//! is never a valid announcement and the other way round. Decoding is strict: the magic, a
//! known version, at most [`MAX_DATAGRAM`] bytes, the canonical postcard encoding of the body
//! (re-encoding gives the same bytes), exactly the signature after it, at most
//! [`MAX_ADDRS`] addresses, each a usable unicast address, a nonzero port, and a device id that
//! is the hash of the key in the message. Anything else is a [`DecodeError`] and is dropped.
//! The signature itself is checked by [`Decoded::verify`] (decoding alone proves nothing about
//! who sent it).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::identity::{verify_signature, DeviceId, DeviceKey, SIGNATURE_LEN};

/// The first bytes of every announcement: `fyLA` (fybrk LAN announcement). Tells these
/// datagrams apart from anything else sent to the discovery port (Syncthing's and others'
/// announcements use other ports, but a port is no promise).
pub const MAGIC: [u8; 4] = *b"fyLA";

/// The one version this code speaks. A later format gets another number; receivers drop
/// versions they do not know.
pub const VERSION: u8 = 1;

/// Prefix of the signed bytes (see the module doc).
pub const SIGNING_CONTEXT: &[u8] = b"fybrk lan announcement v1\0";

/// The largest datagram sent or accepted: QUIC's minimum path MTU, like the rendezvous
/// messages; a full announcement is far below it.
pub const MAX_DATAGRAM: usize = 1200;

/// The most addresses one announcement lists. A machine has one or two useful ones; the rest
/// are docker bridges and VPNs that only cost the receiver dials. Same limit as the rendezvous
/// LAN candidates.
pub const MAX_ADDRS: usize = 8;

/// What a device says about itself on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The announcing device (SHA-256 of `public_key`).
    pub id: DeviceId,
    /// Its Ed25519 public key, which signed the datagram.
    pub public_key: [u8; 32],
    /// The UDP port its QUIC endpoint listens on.
    pub port: u16,
    /// Its interface addresses (the receiver also uses the address the datagram came from).
    pub addrs: Vec<IpAddr>,
    /// The sender's wall clock (ms since the Unix epoch), strictly increasing per sender: the
    /// receiver drops announcements outside its window or not newer than the last it took.
    pub timestamp_ms: u64,
}

/// A decoded announcement whose signature is still to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The announcement.
    pub body: Announcement,
    /// Magic, version and body, as received.
    signed: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl Decoded {
    /// Checks the signature against the key in the announcement (whose hash the decoder
    /// already checked against the id). Whether that id is one we trust is the caller's call.
    pub fn verify(&self) -> Result<(), DecodeError> {
        verify_signature(
            &self.body.public_key,
            &signing_input(&self.signed),
            &self.signature,
        )
        .map_err(|_| DecodeError::BadSignature)
    }
}

/// Why a datagram is not a valid announcement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than magic, version and signature.
    #[error("too short ({0} bytes)")]
    TooShort(usize),
    /// Longer than [`MAX_DATAGRAM`].
    #[error("too large ({0} bytes)")]
    TooLarge(usize),
    /// Not our magic: someone else's datagram.
    #[error("not a fybrk announcement")]
    BadMagic,
    /// A version this code does not speak.
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// The body does not parse, is not canonical, or is not followed by exactly a signature.
    #[error("malformed body")]
    Malformed,
    /// More than [`MAX_ADDRS`] addresses, or one that is no usable unicast address, or port 0.
    #[error("bad address list")]
    BadAddrs,
    /// The id is not the hash of the key.
    #[error("the device id does not match the key")]
    IdMismatch,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
}

/// Why an announcement could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Too many or unusable addresses, port 0, or an id that is not the key's (the checks
    /// the decoder makes).
    #[error("bad announcement: {0}")]
    Invalid(DecodeError),
    /// The key is not the announced device's.
    #[error("not signed by the announced device")]
    WrongKey,
    /// postcard failed.
    #[error("cannot serialize: {0}")]
    Serialize(String),
    /// Longer than [`MAX_DATAGRAM`].
    #[error("too large ({0} bytes)")]
    TooLarge(usize),
}

/// Whether `ip` may appear in an announcement: a unicast address someone could dial.
pub fn is_usable(ip: &IpAddr) -> bool {
    !ip.is_unspecified() && !ip.is_multicast() && !is_broadcast(ip)
}

fn is_broadcast(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

fn check(a: &Announcement) -> Result<(), DecodeError> {
    if a.addrs.len() > MAX_ADDRS || !a.addrs.iter().all(is_usable) || a.port == 0 {
        return Err(DecodeError::BadAddrs);
    }
    if DeviceId::from_public_key(&a.public_key) != a.id {
        return Err(DecodeError::IdMismatch);
    }
    Ok(())
}

fn signing_input(signed: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_CONTEXT.len() + signed.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    input.extend_from_slice(signed);
    input
}

impl Announcement {
    /// Signs with `key` (whose id and public key the announcement must carry) and encodes.
    pub fn encode(&self, key: &DeviceKey) -> Result<Vec<u8>, EncodeError> {
        check(self).map_err(EncodeError::Invalid)?;
        if key.id() != self.id {
            return Err(EncodeError::WrongKey);
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        let mut out =
            postcard::to_extend(self, out).map_err(|e| EncodeError::Serialize(e.to_string()))?;
        let signature = key.sign(&signing_input(&out));
        out.extend_from_slice(&signature);
        if out.len() > MAX_DATAGRAM {
            return Err(EncodeError::TooLarge(out.len()));
        }
        Ok(out)
    }
}

/// Decodes one datagram; the signature is checked separately ([`Decoded::verify`]). Never
/// panics, whatever the bytes.
pub fn decode(datagram: &[u8]) -> Result<Decoded, DecodeError> {
    let head = MAGIC.len() + 1;
    if datagram.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLarge(datagram.len()));
    }
    if datagram.len() < head + SIGNATURE_LEN {
        return Err(DecodeError::TooShort(datagram.len()));
    }
    if datagram[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = datagram[MAGIC.len()];
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (signed, sig) = datagram.split_at(datagram.len() - SIGNATURE_LEN);
    let body: Announcement =
        postcard::from_bytes(&signed[head..]).map_err(|_| DecodeError::Malformed)?;
    // Canonical: the same announcement has one encoding, so what was signed is what we read.
    let again = postcard::to_stdvec(&body).map_err(|_| DecodeError::Malformed)?;
    if again != signed[head..] {
        return Err(DecodeError::Malformed);
    }
    check(&body)?;
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(sig);
    Ok(Decoded {
        body,
        signed: signed.to_vec(),
        signature,
    })
}
