//! The device's identity: an Ed25519 key pair made on first run, and the [`DeviceId`] derived
//! from its public key.
//!
//! A `DeviceId` is SHA-256 of the raw 32-byte Ed25519 public key. The TLS layer computes the same
//! value from a peer's certificate (`tls::device_id_of_cert`), so "the device with this id" and
//! "the holder of this key" are one thing: certificates themselves are never trusted, only keys.
//!
//! The human form follows Syncthing's device ids: base32 (RFC 4648 alphabet, no padding) of the 32
//! bytes (52 characters), cut into 4 groups of 13, each followed by a Luhn mod 32 check character,
//! shown as 8 groups of 7 joined by `-`:
//!
//! ```text
//! MFZWI3D-BONSGYC-...
//! ```
//!
//! The check characters catch every single-character typo when a user types an id by hand.
//!
//! Outside TLS the key signs small messages ([`DeviceKey::sign`], checked with
//! [`verify_signature`]): rendezvous registrations and hole-punch probes.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A device's identity: SHA-256 of its raw Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId([u8; 32]);

/// The device's long-term Ed25519 key pair.
///
/// `Debug` prints only the id: the secret key never reaches a log.
pub struct DeviceKey {
    pair: rcgen::KeyPair,
    /// The same key as `pair`, parsed by ring for signing outside TLS (rcgen keeps its own
    /// signing private).
    signer: Ed25519KeyPair,
    id: DeviceId,
}

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signature that does not verify under the given public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Ed25519 signature does not match the message and public key")]
pub struct BadSignature;

/// Why a device key could not be made, loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("device key file {path}: {source}")]
    Io {
        /// The key file (or its temporary sibling) involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file can be read by other users, so the key may have leaked.
    #[error(
        "device key file {path} is readable by group or others (mode {mode:04o}); \
         the key may have leaked: if no one else had access, run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file exists but does not hold an Ed25519 PKCS#8 key.
    #[error(
        "device key file {path} does not hold a valid Ed25519 key ({reason}); \
         it was not replaced: move it away to make a new identity (peers must pair again)"
    )]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A freshly generated key failed its own checks (a crypto library fault).
    #[error("new device key is unusable: {0}")]
    Unusable(String),
    /// Key generation or encoding failed inside the crypto library.
    #[error("device key: {0}")]
    Crypto(#[from] rcgen::Error),
}

/// Why a string is not a device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDeviceIdError {
    /// Wrong number of characters once dashes and spaces are removed.
    #[error("a device id has {expected} characters (not counting dashes), this one has {found}")]
    Length {
        /// Characters expected (56).
        expected: usize,
        /// Characters found.
        found: usize,
    },
    /// A character outside the base32 alphabet (A-Z, 2-7).
    #[error(
        "character {ch:?} at position {position} is not allowed in a device id (only A-Z and 2-7)"
    )]
    BadChar {
        /// The offending character.
        ch: char,
        /// Its 1-based position, not counting dashes and spaces.
        position: usize,
    },
    /// A check character does not match its group: the id was mistyped.
    #[error("device id group {group} of 4 fails its check character: the id is mistyped")]
    BadCheck {
        /// 1-based number of the 14-character group that failed.
        group: usize,
    },
    /// The last data character has bits set past the 256 bits of an id.
    #[error("device id is not canonical (its last data character is wrong): the id is mistyped")]
    NonCanonical,
}

/// The RFC 4648 base32 alphabet.
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Base32 characters for 32 bytes: ceil(256 / 5).
const DATA_CHARS: usize = 52;
/// Data characters per check group; 52 = 4 x 13.
const GROUP_DATA: usize = 13;
/// Characters of the full form without separators: 4 x (13 + 1).
const FULL_CHARS: usize = 56;
/// Characters between dashes in the displayed form.
const DISPLAY_GROUP: usize = 7;

/// The Ed25519 public key's DER prefix inside a SubjectPublicKeyInfo (RFC 8410): a SEQUENCE of
/// the AlgorithmIdentifier {1.3.101.112} and a 33-byte BIT STRING (0 unused bits + 32 key bytes).
/// Ed25519 SPKIs have exactly this fixed 44-byte shape, so a prefix check is a complete parse.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The raw Ed25519 public key in a DER SubjectPublicKeyInfo, or `None` if it is not one.
pub fn ed25519_public_key_of_spki(spki: &[u8]) -> Option<[u8; 32]> {
    spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?.try_into().ok()
}

impl DeviceId {
    /// The id of the device whose raw Ed25519 public key is `public_key`.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        DeviceId(Sha256::digest(public_key).into())
    }

    /// The id of the key in a DER SubjectPublicKeyInfo, or `None` if it is not an Ed25519 key.
    pub fn from_spki_der(spki: &[u8]) -> Option<Self> {
        Some(Self::from_public_key(&ed25519_public_key_of_spki(spki)?))
    }

    /// Wraps 32 bytes already known to be a device id (e.g. read from the wire).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        DeviceId(bytes)
    }

    /// The 32 bytes of the id.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The short id used inside version vectors: the first 8 bytes, big endian.
    pub fn short(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(first)
    }

    /// The first display group (7 characters), enough to tell devices apart in logs and spans.
    pub fn abbrev(&self) -> String {
        let mut s = base32_encode(&self.0);
        s.truncate(DISPLAY_GROUP);
        s
    }

    /// The 56 characters without dashes: the data groups each followed by its check character.
    fn full_chars(&self) -> String {
        let data = base32_encode(&self.0);
        let mut out = String::with_capacity(FULL_CHARS);
        for group in data.as_bytes().chunks(GROUP_DATA) {
            // Every byte of `data` is an ASCII alphabet character, so this is lossless.
            out.extend(group.iter().map(|&b| char::from(b)));
            let values: Vec<u8> = group
                .iter()
                .filter_map(|&b| base32_value(char::from(b)))
                .collect();
            out.push(char::from(ALPHABET[luhn32_check(&values)]));
        }
        out
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = self.full_chars();
        for (i, group) in full.as_bytes().chunks(DISPLAY_GROUP).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // ASCII only (see `full_chars`).
            for &b in group {
                fmt::Write::write_char(f, char::from(b))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl FromStr for DeviceId {
    type Err = ParseDeviceIdError;

    /// Parses the human form: case-insensitive, with or without dashes (spaces are ignored too,
    /// since ids get pasted from wrapped text).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut values = Vec::with_capacity(FULL_CHARS);
        for ch in s.chars().filter(|c| !matches!(c, '-' | ' ')) {
            let position = values.len() + 1;
            let value = base32_value(ch).ok_or(ParseDeviceIdError::BadChar { ch, position })?;
            values.push(value);
        }
        if values.len() != FULL_CHARS {
            return Err(ParseDeviceIdError::Length {
                expected: FULL_CHARS,
                found: values.len(),
            });
        }
        let mut data = Vec::with_capacity(DATA_CHARS);
        for (i, group) in values.chunks(GROUP_DATA + 1).enumerate() {
            let (body, check) = group.split_at(GROUP_DATA);
            if usize::from(check[0]) != luhn32_check(body) {
                return Err(ParseDeviceIdError::BadCheck { group: i + 1 });
            }
            data.extend_from_slice(body);
        }
        base32_decode_values(&data).map(DeviceId)
    }
}

impl DeviceKey {
    /// Makes a new random Ed25519 key pair (ring's system RNG).
    pub fn generate() -> Result<Self, IdentityError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        Self::from_pair(pair).map_err(IdentityError::Unusable)
    }

    /// Loads the key from a PKCS#8 DER file, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io_err = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        // Check and read through one open file, so the file checked is the file read.
        let mut file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(IdentityError::InvalidKey {
                path: path.to_owned(),
                reason: "not a regular file".into(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut der = Vec::new();
        file.read_to_end(&mut der).map_err(io_err)?;
        Self::from_pkcs8_der(&der).map_err(|reason| IdentityError::InvalidKey {
            path: path.to_owned(),
            reason,
        })
    }

    /// Loads the key at `path`, or makes one and saves it there if the file does not exist.
    ///
    /// An existing file that cannot be used is an error, never silently replaced: replacing it
    /// would change this device's id and break every pairing.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        match Self::load(path) {
            Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let key = Self::generate()?;
        match key.save_new(path) {
            Ok(()) => Ok(key),
            // Another process created it between our load and save: use that one, so both agree.
            Err(IdentityError::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists =>
            {
                Self::load(path)
            }
            Err(e) => Err(e),
        }
    }

    /// Saves the key to `path` with mode 0600, atomically, failing if `path` already exists.
    ///
    /// The key is written to a temporary file in the same directory, synced, then linked to
    /// `path`. A link is a rename that never replaces an existing file, so a crash leaves either
    /// no key file or a complete one, and two racing processes cannot overwrite each other.
    pub fn save_new(&self, path: &Path) -> Result<(), IdentityError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{:016x}",
            file_name.as_deref().unwrap_or("device.key"),
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = write_private_file(&tmp, self.pair.serialized_der())
            .and_then(|()| fs::hard_link(&tmp, path).map_err(|source| (path.to_owned(), source)));
        // The temporary name goes in every case; after a successful link it is just a second name.
        let _ = fs::remove_file(&tmp);
        result.map_err(|(path, source)| IdentityError::Io { path, source })?;
        // Make the new directory entry durable too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| IdentityError::Io {
                path: dir.to_owned(),
                source,
            })
    }

    /// This device's id.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key_raw());
        out
    }

    /// Signs `msg` with the device key (Ed25519: deterministic, 64 bytes). Anyone holding
    /// [`public_key`](Self::public_key) checks it with [`verify_signature`].
    ///
    /// Callers put a context string at the start of `msg` so that a signature made for one
    /// purpose can never be accepted for another.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        // ring's Ed25519 signatures are always exactly 64 bytes.
        out.copy_from_slice(self.signer.sign(msg).as_ref());
        out
    }

    /// The rcgen key pair, for signing the TLS certificate.
    pub(crate) fn key_pair(&self) -> &rcgen::KeyPair {
        &self.pair
    }

    /// The PKCS#8 DER secret key, for rustls.
    pub(crate) fn pkcs8_der(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.pair.serialize_der())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, String> {
        let pkcs8 = PrivatePkcs8KeyDer::from(der);
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|e| e.to_string())?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: rcgen::KeyPair) -> Result<Self, String> {
        if pair.algorithm() != &rcgen::PKCS_ED25519 {
            return Err("not an Ed25519 key".into());
        }
        let raw: &[u8; 32] = pair
            .public_key_raw()
            .try_into()
            .map_err(|_| "Ed25519 public key is not 32 bytes".to_string())?;
        let id = DeviceId::from_public_key(raw);
        // rcgen generates PKCS#8 v2 (with the public key) and older files may be v1; ring reads
        // both with this constructor and checks that the public key matches the private one.
        let signer = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pair.serialized_der())
            .map_err(|e| format!("Ed25519 key rejected: {e}"))?;
        if signer.public_key().as_ref() != raw.as_slice() {
            return Err("Ed25519 public key does not match the private key".into());
        }
        Ok(DeviceKey { pair, signer, id })
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Checks that `signature` is `public_key`'s Ed25519 signature of `msg`.
pub fn verify_signature(
    public_key: &[u8; 32],
    msg: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), BadSignature> {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, signature)
        .map_err(|_| BadSignature)
}

/// The name this device shows to others when pairing: the host name, or `fybrk-device`.
pub fn default_device_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "fybrk-device".to_owned())
}

/// Creates `path` (which must not exist) with mode 0600, writes `data` and syncs it.
fn write_private_file(path: &Path, data: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let err = |e| (path.to_owned(), e);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    // `mode` above is filtered by the umask, which can only remove bits; set it exactly anyway so
    // the file never depends on the caller's umask.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

fn base32_value(ch: char) -> Option<u8> {
    match ch.to_ascii_uppercase() {
        c @ 'A'..='Z' => Some(c as u8 - b'A'),
        c @ '2'..='7' => Some(c as u8 - b'2' + 26),
        _ => None,
    }
}

fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut acc: u16 = 0;
    let mut bits = 0u32;
    for &byte in data {
        acc = (acc << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[usize::from((acc >> bits) & 31)]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[usize::from((acc << (5 - bits)) & 31)]));
    }
    out
}

/// Decodes 52 base32 values to 32 bytes, requiring the 4 unused low bits of the last value to be
/// zero so that each id has exactly one spelling.
fn base32_decode_values(values: &[u8]) -> Result<[u8; 32], ParseDeviceIdError> {
    let mut out = [0u8; 32];
    let mut n = 0;
    let mut acc: u16 = 0;
    let mut bits = 0u32;
    for &v in values {
        acc = (acc << 5) | u16::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            if n < out.len() {
                out[n] = (acc >> bits) as u8;
            }
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    if n != out.len() || acc != 0 {
        return Err(ParseDeviceIdError::NonCanonical);
    }
    Ok(out)
}

/// The Luhn mod 32 check value for base32 `values` (alphabet indices), as an alphabet index.
///
/// Luhn mod N doubles every second value from the right and folds it back with its "digit sum"
/// (`a / N + a % N`); that folding makes the doubling a bijection, so changing any one character
/// always changes the sum mod N and a single typo is always caught.
fn luhn32_check(values: &[u8]) -> usize {
    const N: usize = 32;
    let mut factor = 2;
    let mut sum = 0;
    for &value in values.iter().rev() {
        let addend = factor * usize::from(value);
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / N + addend % N;
    }
    (N - sum % N) % N
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id_strategy() -> impl Strategy<Value = DeviceId> {
        any::<[u8; 32]>().prop_map(DeviceId)
    }

    #[test]
    fn display_shape() {
        let id = DeviceId([0xa5; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 8 * 7 + 7);
        let groups: Vec<&str> = s.split('-').collect();
        assert_eq!(groups.len(), 8);
        assert!(groups.iter().all(|g| g.len() == 7));
        assert_eq!(id.abbrev(), groups[0]);
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 section 10, without padding.
        assert_eq!(base32_encode(b"f"), "MY");
        assert_eq!(base32_encode(b"fo"), "MZXQ");
        assert_eq!(base32_encode(b"foo"), "MZXW6");
        assert_eq!(base32_encode(b"foob"), "MZXW6YQ");
        assert_eq!(base32_encode(b"fooba"), "MZXW6YTB");
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn short_is_first_eight_bytes_big_endian() {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(DeviceId(bytes).short(), 0x0102_0304_0506_0708);
    }

    #[test]
    fn parse_errors_are_specific() {
        let id = DeviceId([7; 32]);
        let s = id.to_string();
        assert!(matches!(
            s[..s.len() - 1].parse::<DeviceId>(),
            Err(ParseDeviceIdError::Length {
                expected: 56,
                found: 55
            })
        ));
        let mut bad = s.clone();
        bad.replace_range(0..1, "1");
        assert!(matches!(
            bad.parse::<DeviceId>(),
            Err(ParseDeviceIdError::BadChar {
                ch: '1',
                position: 1
            })
        ));
        // The message names the problem for the user.
        let msg = ParseDeviceIdError::BadCheck { group: 2 }.to_string();
        assert!(msg.contains("mistyped"), "{msg}");
    }

    #[test]
    fn key_id_matches_spki() {
        let key = DeviceKey::generate().expect("generate");
        let spki = key.key_pair().public_key_der();
        assert_eq!(DeviceId::from_spki_der(&spki), Some(key.id()));
        assert_eq!(key.id(), DeviceId::from_public_key(&key.public_key()));
    }

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let key = DeviceKey::generate().expect("generate");
        let other = DeviceKey::generate().expect("generate");
        let sig = key.sign(b"fybrk test message");
        assert_eq!(
            verify_signature(&key.public_key(), b"fybrk test message", &sig),
            Ok(())
        );
        assert_eq!(
            verify_signature(&key.public_key(), b"fybrk test messagE", &sig),
            Err(BadSignature)
        );
        assert_eq!(
            verify_signature(&other.public_key(), b"fybrk test message", &sig),
            Err(BadSignature)
        );
        let mut flipped = sig;
        flipped[10] ^= 1;
        assert_eq!(
            verify_signature(&key.public_key(), b"fybrk test message", &flipped),
            Err(BadSignature)
        );
    }

    #[test]
    fn reloaded_key_signs_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("device.key");
        let a = DeviceKey::load_or_create(&path).expect("create");
        let b = DeviceKey::load(&path).expect("load");
        // Ed25519 is deterministic: the same key gives the same signature.
        assert_eq!(a.sign(b"m"), b.sign(b"m"));
    }

    #[test]
    fn key_file_is_private_and_reloads_same_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("device.key");
        let a = DeviceKey::load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = DeviceKey::load_or_create(&path).expect("load");
        assert_eq!(a.id(), b.id());
        assert_eq!(DeviceKey::load(&path).expect("load").id(), a.id());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).expect("readdir").collect();
        assert_eq!(names.len(), 1);
        // Saving over an existing key is refused.
        let c = DeviceKey::generate().expect("generate");
        assert!(matches!(
            c.save_new(&path),
            Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists
        ));
        assert_eq!(DeviceKey::load(&path).expect("load").id(), a.id());
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("device.key");
        DeviceKey::load_or_create(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = DeviceKey::load_or_create(&path).expect_err("must refuse");
        assert!(matches!(
            err,
            IdentityError::InsecurePermissions { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn corrupt_key_file_is_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("device.key");
        write_private_file(&path, b"not a key").expect("write");
        let err = DeviceKey::load_or_create(&path).expect_err("must refuse");
        assert!(matches!(err, IdentityError::InvalidKey { .. }), "{err}");
        assert_eq!(fs::read(&path).expect("read"), b"not a key");
    }

    #[test]
    fn every_single_typo_of_one_id_is_detected() {
        let id = DeviceId(core::array::from_fn(|i| i as u8 * 37));
        let good = id.full_chars().into_bytes();
        for pos in 0..FULL_CHARS {
            for &new in ALPHABET.iter().filter(|&&c| c != good[pos]) {
                let mut typo = good.clone();
                typo[pos] = new;
                let typo = String::from_utf8(typo).expect("ascii");
                assert!(typo.parse::<DeviceId>().is_err(), "typo {typo} accepted");
            }
        }
    }

    #[test]
    fn device_name_is_not_empty() {
        assert!(!default_device_name().is_empty());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(id in id_strategy()) {
            let s = id.to_string();
            prop_assert_eq!(s.parse::<DeviceId>(), Ok(id));
            prop_assert_eq!(s.to_lowercase().parse::<DeviceId>(), Ok(id));
            prop_assert_eq!(s.replace('-', "").parse::<DeviceId>(), Ok(id));
        }

        #[test]
        fn any_single_typo_is_detected(
            id in id_strategy(),
            pos in 0..FULL_CHARS,
            replacement in 0..32usize,
        ) {
            let mut chars: Vec<u8> = id.full_chars().into_bytes();
            let new = ALPHABET[replacement];
            prop_assume!(chars[pos] != new);
            chars[pos] = new;
            let typo = String::from_utf8(chars).expect("ascii");
            prop_assert!(typo.parse::<DeviceId>().is_err(), "typo {} accepted", typo);
        }
    }
}
