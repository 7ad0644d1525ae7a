//! The rendezvous and hole-punch wire format: one message per UDP datagram.
//!
//! ```text
//! unsigned:  type (1 byte) || postcard(body)
//! signed:    type (1 byte) || postcard(body) || Ed25519 signature (64 bytes)
//! Connect:   type (1 byte) || postcard(body) || signature (64) || zeros up to CONNECT_LEN
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`] followed by the type byte and the body exactly as
//! sent, so a signature made for one message type (or for anything else the device key signs)
//! is never valid for another. `Connect` is padded to a fixed [`CONNECT_LEN`] so that the two
//! `Punch` messages it triggers together are never larger than the request (no amplification,
//! whatever the candidate lists hold).
//!
//! Decoding is strict: the first byte must be a known type, the datagram at most
//! [`MAX_DATAGRAM`] bytes, the body must be the canonical postcard encoding (re-encoding gives
//! the same bytes) followed by exactly the signature (and zero padding for `Connect`), and every
//! candidate address must be a usable unicast address. Anything else is a [`DecodeError`]; the
//! callers drop such datagrams without answering.

use std::net::{IpAddr, SocketAddr};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::identity::{verify_signature, DeviceId, DeviceKey, SIGNATURE_LEN};

/// The largest datagram this protocol sends or accepts. 1200 bytes is QUIC's minimum path MTU
/// (RFC 9000 section 14): every path QUIC will later use carries it without fragmentation, and
/// IP fragments are what NATs and firewalls drop first.
pub const MAX_DATAGRAM: usize = 1200;

/// The first-byte range reserved for these messages on the daemon's shared UDP socket. STUN
/// uses 0..=3, TURN ChannelData 64..=79, QUIC 64..=191 (short and long headers, fixed bit set;
/// see RFC 7983 and DESIGN.md "Network"): 32..=63 is free in all of them.
pub const TYPE_RANGE: std::ops::RangeInclusive<u8> = 0x20..=0x3F;

/// The most LAN (interface) candidates one device announces. A typical machine has one or two
/// useful addresses; more are mostly stale interfaces (docker bridges, VPNs) that cost the peer
/// a probe stream each. It matches the invitation's own limit (`fybrk_pair::MAX_ADDRS`).
pub const MAX_LAN_CANDIDATES: usize = 8;

/// Prefix of every signed byte string, so that a rendezvous signature cannot be mistaken for a
/// signature the device key makes for another purpose (and vice versa).
pub const SIGNING_CONTEXT: &[u8] = b"fybrk rendezvous v1\0";

/// The server's proof, handed out in [`Registered`], that a device receives datagrams at its
/// observed address (see the server's module doc).
pub type Cookie = [u8; 16];

/// Largest postcard encoding of a `SocketAddr`: variant (1) + IPv6 (16) + port varint (3).
const MAX_ADDR_LEN: usize = 20;
/// Largest postcard encoding of a `u64` (varint, 7 bits a byte).
const MAX_U64_LEN: usize = 10;

/// The largest possible `Punch` datagram: type, peer id, peer key, observed address, LAN list
/// (length byte + addresses), nonce, initiator flag, cookie echo, relay (option byte + address).
pub const MAX_PUNCH_LEN: usize = 1
    + 32
    + 32
    + MAX_ADDR_LEN
    + 1
    + MAX_LAN_CANDIDATES * MAX_ADDR_LEN
    + MAX_U64_LEN
    + 1
    + 16
    + 1
    + MAX_ADDR_LEN;

/// Every `Connect` datagram is exactly this long: it makes the server send two `Punch` messages
/// (one to each side), and both together fit in it.
pub const CONNECT_LEN: usize = 2 * MAX_PUNCH_LEN;

// A padded `Connect` must itself fit in a datagram.
const _: () = assert!(CONNECT_LEN <= MAX_DATAGRAM);

/// The message type: the first byte of the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Device -> server: here I am (signed).
    Register = 0x20,
    /// Server -> device: your observed address and cookie.
    Registered = 0x21,
    /// Device -> server: introduce me to that device (signed, padded).
    Connect = 0x22,
    /// Server -> both devices: probe each other now.
    Punch = 0x23,
    /// Server -> device: the device you asked for is not registered.
    Unknown = 0x24,
    /// Server -> device: a request was refused, with a reason.
    Error = 0x25,
    /// Device -> device: hole-punch probe (signed).
    Probe = 0x30,
    /// Device -> device: answer to a probe (signed).
    ProbeAck = 0x31,
}

impl MessageType {
    /// The type of a first byte, if it is one of ours.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x20 => Self::Register,
            0x21 => Self::Registered,
            0x22 => Self::Connect,
            0x23 => Self::Punch,
            0x24 => Self::Unknown,
            0x25 => Self::Error,
            0x30 => Self::Probe,
            0x31 => Self::ProbeAck,
            _ => return None,
        })
    }

    fn is_signed(self) -> bool {
        matches!(
            self,
            Self::Register | Self::Connect | Self::Probe | Self::ProbeAck
        )
    }
}

/// Whether a datagram on the shared socket belongs to the rendezvous protocol (by first byte).
pub fn is_rendezvous(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| TYPE_RANGE.contains(b))
}

/// Device -> server: register (or refresh) this device's candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The device's id; must be SHA-256 of `public_key`.
    pub id: DeviceId,
    /// The raw Ed25519 public key that signed the message.
    pub public_key: [u8; 32],
    /// Addresses the device knows it has (its interfaces), best first.
    pub candidates: Vec<SocketAddr>,
    /// The device's wall clock, unix milliseconds; strictly increasing per device.
    pub timestamp_ms: u64,
    /// The cookie from the server's last [`Registered`], if any. Without a valid one the server
    /// only answers with a fresh cookie and stores nothing.
    pub cookie: Option<Cookie>,
    /// The device's TURN relayed address, if it has one: peers that cannot punch through
    /// reach it there.
    pub relay: Option<SocketAddr>,
}

/// Server -> device: the answer to [`Register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The source address the server saw: the device's reflexive candidate.
    pub observed: SocketAddr,
    /// `timestamp_ms` of the request answered, so the device matches answer and request.
    pub echo_ms: u64,
    /// The cookie to put in the next messages.
    pub cookie: Cookie,
    /// Whether the registration is stored (the request carried a valid cookie). When false,
    /// the device registers again at once with `cookie`.
    pub confirmed: bool,
    /// How long the registration lives without a refresh, in seconds.
    pub ttl_secs: u32,
}

/// Device -> server: ask the server to introduce this device to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// The asking device (registered; the server checks the signature with its stored key).
    pub id: DeviceId,
    /// The device to reach.
    pub target: DeviceId,
    /// Random, chosen by the asking device; names the punch attempt in every later message.
    pub nonce: u64,
    /// Wall clock, unix milliseconds; strictly increasing per device.
    pub timestamp_ms: u64,
    /// The asking device's current cookie.
    pub cookie: Cookie,
}

/// Server -> device: start probing `peer` now. Sent to both sides at the same moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Punch {
    /// The other device.
    pub peer: DeviceId,
    /// Its public key, to check its probes. The receiver checks that it hashes to `peer`, so
    /// the server cannot substitute a key.
    pub peer_public_key: [u8; 32],
    /// The peer's address as the server sees it (its reflexive candidate).
    pub observed: SocketAddr,
    /// The peer's own (LAN) candidates.
    pub lan: Vec<SocketAddr>,
    /// The nonce of the `Connect` that caused this.
    pub nonce: u64,
    /// Whether the receiver is the side that asked.
    pub initiator: bool,
    /// The receiver's current cookie, echoed: a datagram that merely claims to come from the
    /// server's address cannot make a device probe anything.
    pub cookie_echo: Cookie,
    /// The peer's TURN relayed address, if it registered one (not probed: the fallback).
    pub peer_relay: Option<SocketAddr>,
}

/// Server -> device: `target` is not registered (offline, or not using this server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unknown {
    /// The device asked for.
    pub target: DeviceId,
    /// The nonce of the request.
    pub nonce: u64,
}

/// Why the server refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request's timestamp is too far from the server's clock.
    ClockSkew,
    /// The device is not registered (the server restarted, or the registration expired):
    /// register again, then retry.
    NotRegistered,
    /// The server holds as many registrations as it is allowed to.
    Full,
}

/// Server -> device: a small, unauthenticated refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub code: ErrorCode,
    /// `timestamp_ms` of the refused request, so a device ignores refusals it did not cause.
    pub echo_ms: u64,
    /// The server's clock, unix milliseconds (lets a device say how far off its clock is).
    pub server_ms: u64,
}

/// Device -> device: a hole-punch probe (type `Probe`) or its answer (type `ProbeAck`, same
/// fields, `seq` echoed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The sending device.
    pub from: DeviceId,
    /// The punch attempt (the `Connect` nonce).
    pub nonce: u64,
    /// Which probe: identifies the destination it was sent to and when.
    pub seq: u32,
}

/// A decoded message whose signature is still to be checked.
///
/// The key to check it with depends on the message (the key in a `Register`, the key stored at
/// registration for a `Connect`, the peer's key from `Punch` for probes), so decoding only
/// keeps what [`Signed::verify`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<T> {
    /// The message.
    pub body: T,
    /// The type byte and the body, as received.
    signed: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl<T> Signed<T> {
    /// Checks the signature against `public_key`.
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<(), DecodeError> {
        verify_signature(public_key, &signing_input(&self.signed), &self.signature)
            .map_err(|_| DecodeError::BadSignature)
    }
}

impl Signed<Register> {
    /// Checks that the id is the hash of the key in the message and that this key signed it.
    pub fn verify_self_signed(&self) -> Result<(), DecodeError> {
        if DeviceId::from_public_key(&self.body.public_key) != self.body.id {
            return Err(DecodeError::IdMismatch);
        }
        self.verify(&self.body.public_key)
    }
}

/// One decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Register`].
    Register(Signed<Register>),
    /// See [`Registered`].
    Registered(Registered),
    /// See [`Connect`].
    Connect(Signed<Connect>),
    /// See [`Punch`].
    Punch(Punch),
    /// See [`Unknown`].
    Unknown(Unknown),
    /// See [`ErrorReply`].
    Error(ErrorReply),
    /// A probe; see [`Probe`].
    Probe(Signed<Probe>),
    /// A probe's answer; see [`Probe`].
    ProbeAck(Signed<Probe>),
}

/// Why a datagram is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty datagram")]
    Empty,
    /// More than [`MAX_DATAGRAM`] bytes.
    #[error("datagram of {0} bytes exceeds the {MAX_DATAGRAM}-byte limit")]
    TooLarge(usize),
    /// The first byte is not a rendezvous message type.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The body does not parse (truncated or garbage) or is not in canonical form.
    #[error("malformed {0:?} message")]
    Malformed(MessageType),
    /// Bytes left over after the message (and signature).
    #[error("{1} unexpected bytes after the {0:?} message")]
    Trailing(MessageType, usize),
    /// A `Connect` that is not exactly [`CONNECT_LEN`] bytes or has non-zero padding.
    #[error("Connect must be exactly {CONNECT_LEN} bytes with zero padding")]
    BadPadding,
    /// More candidates than [`MAX_LAN_CANDIDATES`].
    #[error("{0} candidate addresses, at most {MAX_LAN_CANDIDATES} allowed")]
    TooManyCandidates(usize),
    /// A candidate that cannot be a peer's address (unspecified, multicast, broadcast, port 0).
    #[error("candidate {0} is not a usable unicast address")]
    BadCandidate(SocketAddr),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A `Register` whose id is not the hash of its public key.
    #[error("device id does not match the public key")]
    IdMismatch,
}

/// Why a message could not be encoded (a caller bug: the inputs break a documented limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// More candidates than [`MAX_LAN_CANDIDATES`].
    #[error("{0} candidate addresses, at most {MAX_LAN_CANDIDATES} allowed")]
    TooManyCandidates(usize),
    /// postcard refused the body.
    #[error("cannot serialize message: {0}")]
    Serialize(String),
    /// The datagram would exceed [`MAX_DATAGRAM`].
    #[error("message of {0} bytes exceeds the {MAX_DATAGRAM}-byte limit")]
    TooLarge(usize),
}

/// Whether `addr` could be another device's address: rejects the unspecified address, port 0,
/// multicast and the IPv4 broadcast address, so a hostile candidate list cannot make a peer
/// spray probes at a whole network.
pub fn is_usable_candidate(addr: &SocketAddr) -> bool {
    let ip_ok = match addr.ip() {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
    };
    ip_ok && addr.port() != 0
}

impl Register {
    /// Signs and encodes.
    pub fn encode(&self, key: &DeviceKey) -> Result<Vec<u8>, EncodeError> {
        check_candidates_for_encode(&self.candidates)?;
        encode_signed(MessageType::Register, self, key, None)
    }
}

impl Registered {
    /// Encodes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        encode_unsigned(MessageType::Registered, self)
    }
}

impl Connect {
    /// Signs, encodes and pads to [`CONNECT_LEN`].
    pub fn encode(&self, key: &DeviceKey) -> Result<Vec<u8>, EncodeError> {
        encode_signed(MessageType::Connect, self, key, Some(CONNECT_LEN))
    }
}

impl Punch {
    /// Encodes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        check_candidates_for_encode(&self.lan)?;
        encode_unsigned(MessageType::Punch, self)
    }
}

impl Unknown {
    /// Encodes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        encode_unsigned(MessageType::Unknown, self)
    }
}

impl ErrorReply {
    /// Encodes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        encode_unsigned(MessageType::Error, self)
    }
}

impl Probe {
    /// Signs and encodes as a probe.
    pub fn encode_probe(&self, key: &DeviceKey) -> Result<Vec<u8>, EncodeError> {
        encode_signed(MessageType::Probe, self, key, None)
    }

    /// Signs and encodes as the answer to a probe (same size as the probe).
    pub fn encode_ack(&self, key: &DeviceKey) -> Result<Vec<u8>, EncodeError> {
        encode_signed(MessageType::ProbeAck, self, key, None)
    }
}

/// Decodes one datagram (signatures are checked later, with [`Signed::verify`]).
pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
    let (&first, rest) = datagram.split_first().ok_or(DecodeError::Empty)?;
    if datagram.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLarge(datagram.len()));
    }
    let ty = MessageType::from_byte(first).ok_or(DecodeError::UnknownType(first))?;
    Ok(match ty {
        MessageType::Register => {
            let m = decode_signed::<Register>(ty, datagram)?;
            check_candidates(&m.body.candidates)?;
            Message::Register(m)
        }
        MessageType::Registered => Message::Registered(decode_unsigned(ty, rest)?),
        MessageType::Connect => Message::Connect(decode_signed(ty, datagram)?),
        MessageType::Punch => {
            let m: Punch = decode_unsigned(ty, rest)?;
            check_candidates(&m.lan)?;
            if !is_usable_candidate(&m.observed) {
                return Err(DecodeError::BadCandidate(m.observed));
            }
            Message::Punch(m)
        }
        MessageType::Unknown => Message::Unknown(decode_unsigned(ty, rest)?),
        MessageType::Error => Message::Error(decode_unsigned(ty, rest)?),
        MessageType::Probe => Message::Probe(decode_signed(ty, datagram)?),
        MessageType::ProbeAck => Message::ProbeAck(decode_signed(ty, datagram)?),
    })
}

fn signing_input(signed: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_CONTEXT.len() + signed.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    input.extend_from_slice(signed);
    input
}

fn encode_body<T: Serialize>(ty: MessageType, body: &T) -> Result<Vec<u8>, EncodeError> {
    let out = vec![ty as u8];
    postcard::to_extend(body, out).map_err(|e| EncodeError::Serialize(e.to_string()))
}

pub(super) fn encode_unsigned<T: Serialize>(
    ty: MessageType,
    body: &T,
) -> Result<Vec<u8>, EncodeError> {
    debug_assert!(!ty.is_signed());
    let out = encode_body(ty, body)?;
    check_len(out)
}

pub(super) fn encode_signed<T: Serialize>(
    ty: MessageType,
    body: &T,
    key: &DeviceKey,
    pad_to: Option<usize>,
) -> Result<Vec<u8>, EncodeError> {
    debug_assert!(ty.is_signed());
    let mut out = encode_body(ty, body)?;
    let signature = key.sign(&signing_input(&out));
    out.extend_from_slice(&signature);
    if let Some(len) = pad_to {
        if out.len() > len {
            return Err(EncodeError::TooLarge(out.len()));
        }
        out.resize(len, 0);
    }
    check_len(out)
}

fn check_len(out: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
    if out.len() > MAX_DATAGRAM {
        return Err(EncodeError::TooLarge(out.len()));
    }
    Ok(out)
}

fn check_candidates_for_encode(addrs: &[SocketAddr]) -> Result<(), EncodeError> {
    if addrs.len() > MAX_LAN_CANDIDATES {
        return Err(EncodeError::TooManyCandidates(addrs.len()));
    }
    Ok(())
}

fn check_candidates(addrs: &[SocketAddr]) -> Result<(), DecodeError> {
    if addrs.len() > MAX_LAN_CANDIDATES {
        return Err(DecodeError::TooManyCandidates(addrs.len()));
    }
    match addrs.iter().find(|a| !is_usable_candidate(a)) {
        Some(bad) => Err(DecodeError::BadCandidate(*bad)),
        None => Ok(()),
    }
}

/// Parses a body that must be followed by `tail` more bytes, and checks it is canonical.
/// Returns the body and what follows it.
fn take_body<T: Serialize + DeserializeOwned>(
    ty: MessageType,
    bytes: &[u8],
) -> Result<(T, &[u8]), DecodeError> {
    let (body, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|_| DecodeError::Malformed(ty))?;
    // postcard accepts some non-minimal varints; requiring the canonical form gives every
    // message exactly one encoding.
    let canonical = postcard::to_allocvec(&body).map_err(|_| DecodeError::Malformed(ty))?;
    if canonical.len() != bytes.len() - rest.len() || canonical[..] != bytes[..canonical.len()] {
        return Err(DecodeError::Malformed(ty));
    }
    Ok((body, rest))
}

fn decode_unsigned<T: Serialize + DeserializeOwned>(
    ty: MessageType,
    body: &[u8],
) -> Result<T, DecodeError> {
    let (body, rest) = take_body(ty, body)?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(ty, rest.len()));
    }
    Ok(body)
}

fn decode_signed<T: Serialize + DeserializeOwned>(
    ty: MessageType,
    datagram: &[u8],
) -> Result<Signed<T>, DecodeError> {
    if ty == MessageType::Connect && datagram.len() != CONNECT_LEN {
        return Err(DecodeError::BadPadding);
    }
    let (body, rest) = take_body::<T>(ty, &datagram[1..])?;
    let signed_len = datagram.len() - rest.len();
    let Some((signature, after)) = rest.split_first_chunk::<SIGNATURE_LEN>() else {
        return Err(DecodeError::Malformed(ty));
    };
    if ty == MessageType::Connect {
        if after.iter().any(|&b| b != 0) {
            return Err(DecodeError::BadPadding);
        }
    } else if !after.is_empty() {
        return Err(DecodeError::Trailing(ty, after.len()));
    }
    Ok(Signed {
        body,
        signed: datagram[..signed_len].to_vec(),
        signature: *signature,
    })
}

#[cfg(test)]
mod fuzz_tests;
