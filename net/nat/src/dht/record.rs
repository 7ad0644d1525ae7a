//! The address record a device publishes in the DHT, and the BEP 44 signature over it.
//!
//! ```text
//! value = MAGIC (4 bytes) || VERSION (1 byte) || postcard(AddrRecord)
//! ```
//!
//! The BEP 44 item carries the value, a sequence number (`seq`, here the record's
//! `timestamp_ms`, so a restarted device publishes a higher one without remembering anything),
//! the salt [`SALT`](super::SALT) and the Ed25519 signature of the bencoded
//! `4:salt<n>:<salt>3:seqi<seq>e1:v<n>:<value>` (BEP 44, checked by every DHT node that stores
//! it and again by [`verify_item`]). Decoding is strict: the magic, a known version, at most
//! [`MAX_VALUE`] bytes, the canonical postcard encoding (re-encoding gives the same bytes), at
//! most [`MAX_ADDRS`] interface addresses, each a usable unicast address, nonzero ports, and
//! `seq` equal to the timestamp. Anything else is a [`DecodeError`].

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::identity::{verify_signature, DeviceKey, SIGNATURE_LEN};
use crate::lan::wire::is_usable;

/// The first bytes of every record: `fyDR` (fybrk DHT record).
pub const MAGIC: [u8; 4] = *b"fyDR";

/// The one version this code speaks; a later format gets another number.
pub const VERSION: u8 = 1;

/// BEP 44's limit on a mutable item's value.
pub const MAX_VALUE: usize = 1000;

/// The most interface addresses one record lists (as LAN announcements).
pub const MAX_ADDRS: usize = 8;

/// Where a device can be reached, as it publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRecord {
    /// The publisher's wall clock (ms since the Unix epoch) when it made the record; also the
    /// item's BEP 44 `seq`, strictly increasing per device.
    pub timestamp_ms: u64,
    /// The UDP port its QUIC endpoint listens on.
    pub port: u16,
    /// Its interface addresses (host candidates, with `port`).
    pub lan: Vec<IpAddr>,
    /// Its QUIC socket's public address as STUN saw it, if known.
    pub reflexive: Option<SocketAddr>,
    /// Its TURN relayed address, if it has one.
    pub relay: Option<SocketAddr>,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_VALUE`].
    #[error("too large ({0} bytes)")]
    TooLarge(usize),
    /// Not our magic, or shorter than it.
    #[error("not a fybrk address record")]
    BadMagic,
    /// A version this code does not speak.
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// The body does not parse, is not canonical or has bytes after it.
    #[error("malformed body")]
    Malformed,
    /// Too many or unusable addresses, or a zero port.
    #[error("bad address list")]
    BadAddrs,
    /// The item's `seq` is not the record's timestamp.
    #[error("seq does not match the timestamp")]
    SeqMismatch,
    /// The BEP 44 signature does not match the key.
    #[error("bad signature")]
    BadSignature,
}

fn usable_addr(a: &SocketAddr) -> bool {
    is_usable(&a.ip()) && a.port() != 0
}

impl AddrRecord {
    /// The checks the decoder makes (the encoder refuses what a receiver would drop).
    fn check(&self) -> Result<(), DecodeError> {
        let ok = self.port != 0
            && self.lan.len() <= MAX_ADDRS
            && self.lan.iter().all(is_usable)
            && self.reflexive.as_ref().is_none_or(usable_addr)
            && self.relay.as_ref().is_none_or(usable_addr);
        if ok {
            Ok(())
        } else {
            Err(DecodeError::BadAddrs)
        }
    }

    /// The item's value.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        self.check()?;
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        let out = postcard::to_extend(self, out).map_err(|_| DecodeError::Malformed)?;
        if out.len() > MAX_VALUE {
            return Err(DecodeError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// The item's `seq`.
    pub fn seq(&self) -> i64 {
        i64::try_from(self.timestamp_ms).unwrap_or(i64::MAX)
    }

    /// Where to dial the device, best first: the public address (the one that crosses NATs),
    /// then its interface addresses (the same LAN, or a public address on an interface), then
    /// its relay. Each at most once.
    pub fn dial_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        let lan = self.lan.iter().map(|ip| SocketAddr::new(*ip, self.port));
        for a in self.reflexive.into_iter().chain(lan).chain(self.relay) {
            // An IPv6 link-local address lacks its interface: not dialable from elsewhere.
            let link_local_v6 = matches!(a.ip(), IpAddr::V6(v6) if v6.is_unicast_link_local());
            if !link_local_v6 && !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

/// Decodes an item's value; `seq` is the item's. Never panics, whatever the bytes.
pub fn decode(value: &[u8], seq: i64) -> Result<AddrRecord, DecodeError> {
    if value.len() > MAX_VALUE {
        return Err(DecodeError::TooLarge(value.len()));
    }
    let head = MAGIC.len() + 1;
    if value.len() < head || value[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if value[MAGIC.len()] != VERSION {
        return Err(DecodeError::UnknownVersion(value[MAGIC.len()]));
    }
    let body = &value[head..];
    let record: AddrRecord = postcard::from_bytes(body).map_err(|_| DecodeError::Malformed)?;
    // Canonical and nothing after it: one record has one encoding.
    let again = postcard::to_stdvec(&record).map_err(|_| DecodeError::Malformed)?;
    if again != body {
        return Err(DecodeError::Malformed);
    }
    record.check()?;
    if record.seq() != seq {
        return Err(DecodeError::SeqMismatch);
    }
    Ok(record)
}

/// The bytes BEP 44 signs for `value` at `seq` under [`SALT`](super::SALT).
pub fn signable(seq: i64, value: &[u8]) -> Vec<u8> {
    let salt = super::SALT;
    let mut out = format!("4:salt{}:", salt.len()).into_bytes();
    out.extend_from_slice(salt);
    out.extend_from_slice(format!("3:seqi{seq}e1:v{}:", value.len()).as_bytes());
    out.extend_from_slice(value);
    out
}

/// Signs `value` at `seq` with the device key (BEP 44).
pub fn sign_item(key: &DeviceKey, seq: i64, value: &[u8]) -> [u8; SIGNATURE_LEN] {
    key.sign(&signable(seq, value))
}

/// Checks an item's BEP 44 signature (the DHT node that returned it should have, but a
/// node is anyone).
pub fn verify_item(
    public_key: &[u8; 32],
    seq: i64,
    value: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), DecodeError> {
    verify_signature(public_key, &signable(seq, value), signature)
        .map_err(|_| DecodeError::BadSignature)
}
