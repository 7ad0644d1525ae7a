//! The folder's member list: an append-only log of signed entries that every member holds and
//! checks, so no member can forge another's entry and a removed device stays out even of
//! members that were offline when it was removed.
//!
//! Each [`Entry`] names its author's Ed25519 public key (the device id is its SHA-256, as in
//! TLS), the entries the author had seen (`parents`: the log is a DAG, so concurrent additions on
//! two devices merge without conflict), a time, and one [`Op`]: the folder's founding, adding a
//! device, or removing one. [`Signed`] is the entry as sent and stored: its postcard bytes and
//! the author's signature over them with a context string.
//!
//! [`MemberLog`] (in `log.rs`) decides who is a member from the entries it holds. The rules:
//!
//! - One root: the `Found` entry with no parents (the smallest id wins if two devices founded
//!   concurrently; the other root and everything built only on it count for nothing).
//! - An entry counts when its author was a member as of its ancestors (the entries it had seen).
//! - A rekey counts like any entry; it *covers* the removals among its ancestors (its author
//!   knew of them, so it gave the key to none of those devices). New chunks are sealed under
//!   the last covering rekey whose key a device holds ([`MemberLog::write_key`]); when none
//!   covers every removal, a member makes one.
//! - Removal wins and cannot be undone from below: once `Remove(D)` counts, every device D
//!   added (or founding it wrote) that the remover had not seen counts for nothing (D cannot
//!   add a new identity after its removal by pretending it wrote the entry earlier), and D is
//!   never a member again. Two members removing each other at once are both out.
//!
//! Everything here is pure: no I/O, no clock (callers pass the time), signing through a closure.

mod log;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use log::{InsertError, Member, MemberLog, Removal, WriteKey, MAX_ENTRIES};

/// An entry's id: SHA-256 of [`ID_LABEL`] and its bytes.
pub type EntryId = [u8; 32];

/// Signatures are over this label and the entry's bytes, so a device key's signature made for
/// anything else (TLS, another protocol) can never pass for a member entry.
const SIGN_LABEL: &[u8] = b"fybrk member entry v1\0";

/// Domain separation for entry ids.
const ID_LABEL: &[u8] = b"fybrk member entry id v1\0";

/// Parents one entry may name: the heads an author has seen (more than a few only after many
/// concurrent changes; the bound keeps a hostile entry small).
pub const MAX_PARENTS: usize = 16;

/// Longest device name in an entry, in bytes (names are shown sanitised anyway).
pub const MAX_ENTRY_NAME: usize = 64;

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The folder's first entry: its author founds folder `folder` and is its first member.
    Found {
        /// The folder's id.
        folder: [u8; 16],
        /// The founder's name.
        name: String,
    },
    /// The author adds device `device` (after a person approved its pairing).
    Add {
        /// The device's id.
        device: [u8; 32],
        /// Its name as it gave it.
        name: String,
    },
    /// The author removes device `device` from the folder, for good.
    Remove {
        /// The device's id.
        device: [u8; 32],
    },
    /// The author made a new folder key (after a removal) and gives it to the members it
    /// knows, over their links; the key itself is never in the log, only its public id.
    /// Chunks are sealed under the newest such key that postdates every removal.
    Rekey {
        /// The key's id (`fybrk_store::Crypto::key_id`).
        key_id: u64,
    },
}

/// One change to the member list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entries the author had seen: the heads of its log when it wrote this one.
    pub parents: Vec<EntryId>,
    /// The author's Ed25519 public key; its device id is the key's SHA-256.
    pub author_key: [u8; 32],
    /// When the author wrote it (unix seconds, its clock): shown, never trusted for order.
    pub at_unix: u64,
    /// What it does.
    pub op: Op,
}

/// An entry as sent and stored: its bytes and its author's signature over them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The postcard encoding of the [`Entry`].
    pub body: Vec<u8>,
    /// Ed25519 signature by `author_key` over [`SIGN_LABEL`] and `body` (64 bytes).
    pub sig: Vec<u8>,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("id", &crate::hex_prefix(&self.id()))
            .field("bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The device id of an Ed25519 public key (as `fybrk_link::identity::DeviceId`).
pub fn device_id(public_key: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(public_key).into()
}

impl Signed {
    /// Signs `entry` with `sign` (the author's device key: `DeviceKey::sign`).
    pub fn new(entry: &Entry, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Signed {
        // Encoding a struct of byte arrays, integers and short strings into a Vec cannot fail.
        let body = postcard::to_stdvec(entry).unwrap_or_default();
        let mut msg = SIGN_LABEL.to_vec();
        msg.extend_from_slice(&body);
        Signed {
            sig: sign(&msg).to_vec(),
            body,
        }
    }

    /// The entry's id.
    pub fn id(&self) -> EntryId {
        Sha256::new_with_prefix(ID_LABEL)
            .chain_update(&self.body)
            .finalize()
            .into()
    }

    /// The entry, if its bytes decode, its fields are within bounds and the signature is its
    /// author's.
    pub fn open(&self) -> Result<Entry, InsertError> {
        let entry: Entry = postcard::from_bytes(&self.body)
            .map_err(|e| InsertError::Malformed(format!("undecodable entry: {e}")))?;
        if postcard::to_stdvec(&entry).ok().as_deref() != Some(self.body.as_slice()) {
            // One encoding per entry, so one id per entry.
            return Err(InsertError::Malformed("non-canonical encoding".into()));
        }
        if entry.parents.len() > MAX_PARENTS {
            return Err(InsertError::Malformed(format!(
                "{} parents (at most {MAX_PARENTS})",
                entry.parents.len()
            )));
        }
        let name_len = match &entry.op {
            Op::Found { name, .. } | Op::Add { name, .. } => name.len(),
            Op::Remove { .. } | Op::Rekey { .. } => 0,
        };
        if name_len > MAX_ENTRY_NAME {
            return Err(InsertError::Malformed(format!(
                "a {name_len}-byte name (at most {MAX_ENTRY_NAME})"
            )));
        }
        let mut msg = SIGN_LABEL.to_vec();
        msg.extend_from_slice(&self.body);
        let key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, entry.author_key);
        key.verify(&msg, &self.sig)
            .map_err(|_| InsertError::BadSignature)?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests;
