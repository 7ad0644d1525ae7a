//! Proof of the invitation secret, bound to one TLS session.
//!
//! The joiner proves it knows the invitation's secret without sending it:
//!
//! ```text
//! proof = HMAC-SHA256(key = secret, "fybrk pair v1" || role || binding || joiner_id)
//! ```
//!
//! `binding` is a value both ends export from the TLS session of their QUIC connection (a TLS
//! exporter, RFC 5705 / RFC 8446 section 7.5), so it differs on every connection: a proof seen on
//! one connection (by a relay, or by a rendezvous server that forwarded it) is worthless on any
//! other. `joiner_id` ties the proof to the device id the joiner presents, so a proof cannot be
//! used to get some other device accepted. `role` keeps the inviter's answering proof (see
//! [`crate::Welcome`]) from being reflected back as a joiner's proof, and vice versa.
//!
//! Every part after the label has a fixed length, so the concatenation cannot be read two ways.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Domain separation: this HMAC is for fybrk pairing, format 1, and nothing else.
const LABEL: &[u8] = b"fybrk pair v1";

/// HMAC-SHA256 processes keys in 64-byte blocks.
const HMAC_BLOCK: usize = 64;

/// Which side of the pairing a proof comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// The device that scanned or pasted the invitation.
    Joiner = 1,
    /// The device that made the invitation.
    Inviter = 2,
}

fn mac(secret: &[u8; 16], binding: &[u8; 32], role: Role, joiner_id: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC pads a key shorter than the block with zeros (RFC 2104, step 1), so a zero-padded
    // block-sized key is the same key; using it makes construction infallible, where
    // `new_from_slice` returns a Result that can never be an error.
    let mut key = [0u8; HMAC_BLOCK];
    key[..secret.len()].copy_from_slice(secret);
    let mut mac = <Hmac<Sha256> as Mac>::new(&key.into());
    mac.update(LABEL);
    mac.update(&[role as u8]);
    mac.update(binding);
    mac.update(joiner_id);
    mac
}

/// The proof that `role` knows `secret`, on the connection with TLS exporter value `binding`,
/// for the joining device `joiner_id`.
pub fn proof(secret: &[u8; 16], binding: &[u8; 32], role: Role, joiner_id: &[u8; 32]) -> [u8; 32] {
    mac(secret, binding, role, joiner_id)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks `claimed` against the proof [`proof()`] would make, in constant time (so response
/// timing leaks nothing about how many bytes matched). A proof of any other length is false.
pub fn verify_proof(
    secret: &[u8; 16],
    binding: &[u8; 32],
    role: Role,
    joiner_id: &[u8; 32],
    claimed: &[u8],
) -> bool {
    mac(secret, binding, role, joiner_id)
        .verify_slice(claimed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 16] = [7; 16];
    const JOINER: [u8; 32] = [9; 32];

    #[test]
    fn padded_key_is_the_same_key() {
        let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&SECRET).unwrap();
        reference.update(LABEL);
        reference.update(&[Role::Joiner as u8]);
        reference.update(&[1; 32]);
        reference.update(&JOINER);
        let expected: [u8; 32] = reference.finalize().into_bytes().into();
        assert_eq!(proof(&SECRET, &[1; 32], Role::Joiner, &JOINER), expected);
    }

    #[test]
    fn verifies_only_the_same_inputs() {
        let binding = [1; 32];
        let p = proof(&SECRET, &binding, Role::Joiner, &JOINER);
        assert!(verify_proof(&SECRET, &binding, Role::Joiner, &JOINER, &p));
        assert!(!verify_proof(&[8; 16], &binding, Role::Joiner, &JOINER, &p));
        assert!(!verify_proof(&SECRET, &binding, Role::Inviter, &JOINER, &p));
        assert!(!verify_proof(
            &SECRET,
            &binding,
            Role::Joiner,
            &[10; 32],
            &p
        ));
        assert!(!verify_proof(
            &SECRET,
            &binding,
            Role::Joiner,
            &JOINER,
            &p[..31]
        ));
        assert!(!verify_proof(&SECRET, &binding, Role::Joiner, &JOINER, &[]));
    }

    #[test]
    fn a_proof_from_one_connection_fails_on_another() {
        let first_connection = [1; 32];
        let second_connection = [2; 32];
        let captured = proof(&SECRET, &first_connection, Role::Joiner, &JOINER);
        assert!(!verify_proof(
            &SECRET,
            &second_connection,
            Role::Joiner,
            &JOINER,
            &captured
        ));
        assert_ne!(
            captured,
            proof(&SECRET, &second_connection, Role::Joiner, &JOINER)
        );
    }
}
