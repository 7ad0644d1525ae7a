//! The folder's keys over time.
//!
//! A folder starts with one key. Removing a member rotates it: the remaining members get a new
//! key and seal every later chunk under it, so the removed device cannot read new data even if
//! it gets hold of the ciphertext. Old chunks stay under the key they were written with (they
//! are immutable and content-addressed: re-sealing them would not take back what the removed
//! device could already read), so a store keeps every key it was given and each chunk says
//! which one it needs.
//!
//! Keys are named by a [`KeyId`]: 0 for the folder's first key (what every store from before
//! rotation used, and what every member got at pairing), otherwise [`Crypto::key_id`]. A chunk
//! records its key id in its `refs` entry; between devices a chunk travels as an envelope,
//! `key id (8, little endian) ‖ sealed chunk`, so the receiver knows which key opens it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{Crypto, FolderKey, Result, StoreError};

/// The name of one of a folder's keys: 0 is the first key, later ones are [`Crypto::key_id`].
pub type KeyId = u64;

/// The folder's first key.
pub const FIRST_KEY: KeyId = 0;

/// Bytes the envelope adds in front of a sealed chunk.
pub const ENVELOPE_HEADER: usize = 8;

/// Every key of the folder this store knows, and the one new chunks are sealed under.
pub(crate) struct Keys {
    inner: RwLock<Inner>,
}

struct Inner {
    by_id: HashMap<KeyId, Arc<Crypto>>,
    current: KeyId,
}

impl Keys {
    /// A folder's keys knowing only its first one, which seals new chunks.
    pub(crate) fn new(first: Crypto) -> Keys {
        Keys {
            inner: RwLock::new(Inner {
                by_id: HashMap::from([(FIRST_KEY, Arc::new(first))]),
                current: FIRST_KEY,
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Only whole inserts and assignments happen under the lock: a panic cannot leave it
        // half-changed.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The key `id`, or [`StoreError::UnknownKey`].
    pub(crate) fn get(&self, id: KeyId) -> Result<Arc<Crypto>> {
        self.read()
            .by_id
            .get(&id)
            .cloned()
            .ok_or(StoreError::UnknownKey(id))
    }

    /// The key new chunks are sealed under, with its id.
    pub(crate) fn current(&self) -> (KeyId, Arc<Crypto>) {
        let inner = self.read();
        let id = inner.current;
        // `current` is only ever set to an id in the map.
        let crypto = inner.by_id[&id].clone();
        (id, crypto)
    }

    /// The id of the key new chunks are sealed under.
    pub(crate) fn current_id(&self) -> KeyId {
        self.read().current
    }

    /// Learns a later key of the folder; returns its id. Adding a known key changes nothing.
    pub(crate) fn add(&self, key: &FolderKey) -> KeyId {
        let crypto = Crypto::new(key);
        let id = crypto.key_id();
        self.write()
            .by_id
            .entry(id)
            .or_insert_with(|| Arc::new(crypto));
        id
    }

    /// Seals new chunks under key `id` from now on.
    pub(crate) fn set_current(&self, id: KeyId) -> Result<()> {
        let mut inner = self.write();
        if !inner.by_id.contains_key(&id) {
            return Err(StoreError::UnknownKey(id));
        }
        inner.current = id;
        Ok(())
    }

    /// Whether the folder's first key is the only one (a folder nobody was removed from).
    pub(crate) fn only_first(&self) -> bool {
        self.read().by_id.len() == 1
    }

    /// The ids of every known key.
    pub(crate) fn ids(&self) -> Vec<KeyId> {
        let mut ids: Vec<KeyId> = self.read().by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

/// `key ‖ sealed`: a chunk as it travels between devices.
pub(crate) fn envelope(key: KeyId, sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_HEADER + sealed.len());
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(sealed);
    out
}

/// Splits an envelope from a peer into the key it names and the sealed chunk (still
/// unverified). `None` when it is too short to name a key.
pub(crate) fn open_envelope(bytes: &[u8]) -> Option<(KeyId, &[u8])> {
    let (head, sealed) = bytes.split_first_chunk::<ENVELOPE_HEADER>()?;
    Some((u64::from_le_bytes(*head), sealed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn later_keys_are_named_apart_from_the_first() {
        let keys = Keys::new(Crypto::new(&FolderKey::from_bytes([1; 32])));
        assert_eq!(keys.current_id(), FIRST_KEY);
        let second = keys.add(&FolderKey::from_bytes([2; 32]));
        assert_ne!(second, FIRST_KEY);
        assert_eq!(
            keys.add(&FolderKey::from_bytes([2; 32])),
            second,
            "idempotent"
        );
        assert!(matches!(
            keys.set_current(7),
            Err(StoreError::UnknownKey(7))
        ));
        keys.set_current(second).unwrap();
        assert_eq!(keys.current().0, second);
        assert_eq!(keys.ids(), vec![FIRST_KEY, second]);
        assert!(keys.get(FIRST_KEY).is_ok());
    }

    proptest! {
        #[test]
        fn envelopes_round_trip_and_never_panic(key in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..64), junk in proptest::collection::vec(any::<u8>(), 0..16)) {
            let e = envelope(key, &body);
            prop_assert_eq!(open_envelope(&e), Some((key, body.as_slice())));
            let _ = open_envelope(&junk);
        }
    }
}
