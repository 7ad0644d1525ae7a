//! Keys, chunk ids and chunk encryption.
//!
//! A folder has one random 256-bit [`FolderKey`]. HKDF-SHA256 derives two independent keys from
//! it: `id_key` for keyed BLAKE3 chunk ids (so ids reveal nothing to someone without the key,
//! not even whether two folders hold the same file) and `enc_key` for AES-256-GCM. A sealed chunk
//! is `nonce (12) || ciphertext || tag (16)` with the chunk id as associated data, so a valid
//! ciphertext cannot be moved under another id.
//!
//! The cipher is ring's AES-256-GCM (linked anyway: rustls uses it for QUIC). Its fused
//! AES + GHASH (VAES/VPCLMULQDQ where the CPU has them) sealed 64 KiB chunks at 5.7-6.5 GiB/s
//! on this project's 2-core machine, against 1.6-1.9 GiB/s for the aes-gcm crate, which fybrk
//! used before (`cargo bench -p fybrk-store --bench store -- seal_64k`); opening a chunk from a
//! peer (decrypt and re-hash) went from 1.5 to 2.8 GiB/s. Sealing, opening on arrival and
//! opening on every read were the largest costs of a write and a sync after chunking. The bytes are the same: a test seals with each and
//! opens with the other, so stores written before read as they were.

use std::fmt;

use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{Result, StoreError};

/// Bytes a sealed chunk adds to its plaintext: the nonce and the GCM tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// `N` bytes from the operating system's generator (`getrandom`).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The OS generator only fails on a broken system (no /dev/urandom, no getrandom(2));
    // carrying on without randomness would be worse than stopping.
    getrandom::fill(&mut out).expect("the operating system's random generator failed");
    out
}

/// The random secret of one folder. Whoever holds it can read the folder.
#[derive(Clone)]
pub struct FolderKey([u8; 32]);

impl FolderKey {
    /// A fresh random key from the OS generator.
    pub fn generate() -> FolderKey {
        FolderKey(random_bytes())
    }

    /// A key from its 32 raw bytes (as stored in `folder.key`).
    pub fn from_bytes(bytes: [u8; 32]) -> FolderKey {
        FolderKey(bytes)
    }

    /// The raw bytes, for saving to the key file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for FolderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FolderKey(..)")
    }
}

/// A chunk's name: keyed BLAKE3 of its plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Not a chunk: a run of zeros, a hole in a sparse file, as long as the [`ChunkRef`] that
    /// names it says. A sparse file costs a few hole references instead of gigabytes of zero
    /// chunks. No plaintext hashes to it (a keyed BLAKE3 output of 32 zero bytes: probability
    /// 2^-256), so it never names real data; it is never stored, reference-counted, pinned or
    /// sent, and [`Store::has_chunk`](crate::Store::has_chunk) answers true for it, so
    /// replication never asks a peer for it.
    ///
    /// [`ChunkRef`]: crate::ChunkRef
    pub const HOLE: ChunkId = ChunkId([0; 32]);

    /// True for [`ChunkId::HOLE`].
    pub fn is_hole(&self) -> bool {
        *self == ChunkId::HOLE
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

/// The derived keys of one folder: hashing and sealing of chunks.
pub struct Crypto {
    id_key: [u8; 32],
    cipher: LessSafeKey,
    /// A fixed id of the key itself, stored in the database so opening a store with the wrong
    /// key fails at once instead of on the first read.
    check: [u8; 32],
    folder_id: [u8; 16],
    key_id: u64,
}

impl Crypto {
    /// Derives the chunk-id and encryption keys from the folder key.
    pub fn new(key: &FolderKey) -> Crypto {
        let hk = Hkdf::<Sha256>::new(Some(b"fybrk folder v1"), &key.0);
        let mut id_key = [0u8; 32];
        let mut enc_key = [0u8; 32];
        let mut check = [0u8; 32];
        // HKDF-SHA256 can expand up to 255 * 32 bytes; 32 always fits.
        hk.expand(b"chunk id", &mut id_key)
            .expect("32 bytes is a valid HKDF length");
        hk.expand(b"chunk encryption", &mut enc_key)
            .expect("32 bytes is a valid HKDF length");
        hk.expand(b"key check", &mut check)
            .expect("32 bytes is a valid HKDF length");
        // A 32-byte key is exactly what AES-256-GCM takes.
        let cipher = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &enc_key).expect("AES-256 takes a 32-byte key"),
        );
        let mut folder_id = [0u8; 16];
        hk.expand(b"folder id", &mut folder_id)
            .expect("16 bytes is a valid HKDF length");
        let mut key_id = [0u8; 8];
        hk.expand(b"key id", &mut key_id)
            .expect("8 bytes is a valid HKDF length");
        Crypto {
            id_key,
            cipher,
            check,
            folder_id,
            // The low bit set: never 0, which names a folder's first key (see `keys`).
            key_id: u64::from_le_bytes(key_id) | 1,
        }
    }

    /// The id of a plaintext chunk.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// Encrypts a chunk under a fresh random nonce: `nonce || ciphertext || tag`.
    pub fn seal(&self, id: &ChunkId, plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        // nonce || plaintext, encrypted in place, then the tag: one copy of the data, not three.
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&id.0),
                &mut out[NONCE_LEN..],
            )
            // Only fails for messages over 64 GiB; chunks are at most 256 KiB.
            .expect("chunk is far below the AES-GCM message limit");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Decrypts a sealed chunk and checks that it is the plaintext of `id`. A flipped bit
    /// anywhere is an error, never wrong data. For bytes from elsewhere (a peer, `verify`).
    pub fn open(&self, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>> {
        let mut plain = vec![0u8; sealed.len().saturating_sub(SEAL_OVERHEAD)];
        self.decrypt(id, sealed, &mut plain)?;
        if self.chunk_id(&plain) != *id {
            return Err(StoreError::CorruptChunk(
                *id,
                "content does not match its id",
            ));
        }
        Ok(plain)
    }

    /// Decrypts a chunk this store holds, into a buffer the chunk cache can share. It is
    /// authenticated, not re-hashed: the GCM tag, under a key only members have and bound to
    /// `id` (the associated data), proves the bytes are the ones sealed for `id`, and every
    /// chunk was hashed before it was stored (cut here, or [`Crypto::open`]ed on arrival).
    /// A flipped bit is still an error; the hash was 14 % of a random read's CPU.
    pub fn open_stored(&self, id: &ChunkId, sealed: &[u8]) -> Result<std::sync::Arc<[u8]>> {
        let len = sealed.len().saturating_sub(SEAL_OVERHEAD);
        // Allocated once, in the shape the cache keeps (a Vec converted later is a copy).
        let mut plain: std::sync::Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
        let buf = std::sync::Arc::get_mut(&mut plain)
            .ok_or(StoreError::CorruptChunk(*id, "buffer shared"))?;
        self.decrypt(id, sealed, buf)?;
        Ok(plain)
    }

    /// Decrypts and authenticates `sealed` (for `id`) into `plain`, which is as long as the
    /// plaintext.
    fn decrypt(&self, id: &ChunkId, sealed: &[u8], plain: &mut [u8]) -> Result<()> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(StoreError::CorruptChunk(*id, "too short"));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let (Ok(nonce), Ok(tag)) = (
            <[u8; NONCE_LEN]>::try_from(nonce),
            <[u8; TAG_LEN]>::try_from(tag),
        ) else {
            return Err(StoreError::CorruptChunk(*id, "too short"));
        };
        if plain.len() != ct.len() {
            return Err(StoreError::CorruptChunk(*id, "length mismatch"));
        }
        // ring decrypts in place: the ciphertext is copied into the output first (a memcpy,
        // a few percent of the decryption it saves against the aes-gcm crate's two passes).
        plain.copy_from_slice(ct);
        let tag = ring::aead::Tag::from(tag);
        self.cipher
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&id.0),
                tag,
                plain,
                0..,
            )
            .map(|_| ())
            .map_err(|_| {
                // No plaintext of a forgery is left behind for anyone to use by mistake.
                plain.fill(0);
                StoreError::CorruptChunk(*id, "authentication failed")
            })
    }

    /// The id a folder created before folder ids were chosen at random got from its first key.
    /// Kept for those folders only: a folder's id must not follow its key, which changes when a
    /// member is removed.
    pub fn legacy_folder_id(&self) -> [u8; 16] {
        self.folder_id
    }

    /// A public name of this key (derived from it, revealing nothing of it, never 0): what a
    /// chunk sealed under a later key says it needs, and what the member list names.
    pub fn key_id(&self) -> u64 {
        self.key_id
    }

    /// The key check value stored alongside the data.
    pub(crate) fn key_check(&self) -> &[u8; 32] {
        &self.check
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_depend_on_the_key() {
        let a = Crypto::new(&FolderKey::generate());
        let b = Crypto::new(&FolderKey::generate());
        assert_ne!(a.chunk_id(b"hello"), b.chunk_id(b"hello"));
        assert_eq!(a.chunk_id(b"hello"), a.chunk_id(b"hello"));
    }

    #[test]
    fn wrong_key_cannot_open() {
        let a = Crypto::new(&FolderKey::generate());
        let b = Crypto::new(&FolderKey::generate());
        let id = a.chunk_id(b"secret");
        let sealed = a.seal(&id, b"secret");
        assert!(b.open(&id, &sealed).is_err());
    }

    /// aes-gcm, the implementation chunks were sealed with before ring's: the format is
    /// AES-256-GCM with a 12-byte nonce, the tag after the ciphertext and the id as associated
    /// data, whichever library writes it.
    fn reference(key: &FolderKey) -> aes_gcm::Aes256Gcm {
        use aes_gcm::aead::KeyInit;
        let hk = Hkdf::<Sha256>::new(Some(b"fybrk folder v1"), &key.0);
        let mut enc_key = [0u8; 32];
        hk.expand(b"chunk encryption", &mut enc_key).unwrap();
        aes_gcm::Aes256Gcm::new(&enc_key.into())
    }

    proptest! {
        #[test]
        fn sealed_bytes_are_those_of_the_aes_gcm_crate(
            data in proptest::collection::vec(any::<u8>(), 0..70_000),
            nonce in any::<[u8; 12]>(),
        ) {
            use aes_gcm::aead::AeadInOut;
            let key = FolderKey::from_bytes([4; 32]);
            let c = Crypto::new(&key);
            let id = c.chunk_id(&data);
            // Sealed by the reference, opened here (a store written before the switch).
            let mut buf = data.clone();
            let tag = reference(&key)
                .encrypt_inout_detached(&nonce.into(), &id.0, buf.as_mut_slice().into())
                .unwrap();
            let old = [&nonce[..], &buf, &tag].concat();
            prop_assert_eq!(c.open(&id, &old).unwrap(), data.clone());
            prop_assert_eq!(&c.open_stored(&id, &old).unwrap()[..], &data[..]);
            // Sealed here, opened by the reference (a device on an older version).
            let new = c.seal(&id, &data);
            let (n, rest) = new.split_at(NONCE_LEN);
            let (ct, t) = rest.split_at(rest.len() - TAG_LEN);
            let mut plain = ct.to_vec();
            let n: [u8; NONCE_LEN] = n.try_into().unwrap();
            let t: [u8; TAG_LEN] = t.try_into().unwrap();
            reference(&key)
                .decrypt_inout_detached(&n.into(), &id.0, plain.as_mut_slice().into(), &t.into())
                .unwrap();
            prop_assert_eq!(plain, data);
        }

        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let c = Crypto::new(&FolderKey::from_bytes([7; 32]));
            let id = c.chunk_id(&data);
            let sealed = c.seal(&id, &data);
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(c.open(&id, &sealed).unwrap(), data);
        }

        #[test]
        fn any_flipped_bit_is_detected(
            data in proptest::collection::vec(any::<u8>(), 1..2048),
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let c = Crypto::new(&FolderKey::from_bytes([9; 32]));
            let id = c.chunk_id(&data);
            let mut sealed = c.seal(&id, &data);
            let i = pos.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(c.open(&id, &sealed).is_err());
        }

        #[test]
        fn sealed_chunk_cannot_move_to_another_id(data in proptest::collection::vec(any::<u8>(), 1..512)) {
            let c = Crypto::new(&FolderKey::from_bytes([3; 32]));
            let id = c.chunk_id(&data);
            let sealed = c.seal(&id, &data);
            let other = c.chunk_id(b"other");
            prop_assert!(c.open(&other, &sealed).is_err());
            prop_assert!(c.open_stored(&other, &sealed).is_err(), "the id is authenticated");
        }

        #[test]
        fn a_stored_chunk_opens_authenticated(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let c = Crypto::new(&FolderKey::from_bytes([5; 32]));
            let id = c.chunk_id(&data);
            let mut sealed = c.seal(&id, &data);
            prop_assert_eq!(&c.open_stored(&id, &sealed).unwrap()[..], &data[..]);
            let i = pos.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(c.open_stored(&id, &sealed).is_err());
            prop_assert!(c.open_stored(&id, &sealed[..i.min(SEAL_OVERHEAD - 1)]).is_err());
            let other_key = Crypto::new(&FolderKey::from_bytes([6; 32]));
            sealed[i] ^= 1 << bit;
            prop_assert!(other_key.open_stored(&id, &sealed).is_err());
        }
    }
}
