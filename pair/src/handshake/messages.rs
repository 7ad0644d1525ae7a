//! The pairing messages and their framing.
//!
//! One exchange on one QUIC stream: the joiner sends a [`JoinRequest`], the inviter answers with a
//! [`Reply`]. Each message is postcard, prefixed with its length as a big-endian `u32`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The largest frame body accepted. The biggest message is a welcome with its later keys (up to
/// [`MAX_LATER_KEYS`] of 32 bytes); a join request is about 130 bytes. The limit stops a peer that
/// is not yet trusted from making us allocate much.
pub const MAX_FRAME_LEN: usize = 16 << 10;

/// The most later folder keys a welcome carries: the newest ones (new chunks are sealed under
/// the newest); any older ones reach the new member with the member list.
pub const MAX_LATER_KEYS: usize = 256;

/// Bytes of length prefix before each frame body.
pub const FRAME_HEADER_LEN: usize = 4;

/// Joiner -> inviter: "I am this device, and I know the secret."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joiner's device id. It must be the id of the certificate the joiner presented on this
    /// connection; [`crate::InviterSession::handle_join`] checks that.
    pub joiner_id: [u8; 32],
    /// The joiner's device name, shown to the inviter's user (sanitised on arrival).
    pub joiner_name: String,
    /// [`crate::proof()`] with [`crate::Role::Joiner`] over this connection's binding.
    pub proof: [u8; 32],
}

/// Inviter -> joiner: the folder key, and the inviter's own proof of the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The folder being shared; matches the invitation's folder.
    pub folder_id: [u8; 16],
    /// The folder's first 256-bit key, from which the store derives its chunk-id and
    /// encryption keys.
    pub folder_key: [u8; 32],
    /// The inviter's device name (sanitised on arrival).
    pub inviter_name: String,
    /// [`crate::proof()`] with [`crate::Role::Inviter`] over this connection's binding, for the
    /// joining device. The joiner already pins the inviter's device id from the invitation; this
    /// second check means a driver that forgot the pin still cannot be handed a folder by a
    /// device that never saw the invitation.
    pub proof: [u8; 32],
    /// The folder's later keys (one per removal of a member), oldest first, at most
    /// [`MAX_LATER_KEYS`]: chunks written since the last removal are sealed under the last.
    pub later_keys: Vec<[u8; 32]>,
}

impl fmt::Debug for Welcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Welcome")
            .field("folder_id", &crate::hex_prefix(&self.folder_id))
            .field("folder_key", &"<hidden>")
            .field("later_keys", &self.later_keys.len())
            .field("inviter_name", &self.inviter_name)
            .finish_non_exhaustive()
    }
}

/// Inviter -> joiner: no.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Why.
    pub reason: RefuseReason,
}

/// Why an inviter refused a join request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// The proof did not match the secret (or the id in the request was not the connection's).
    BadProof,
    /// The invitation has expired (by the inviter's clock).
    Expired,
    /// The invitation was already used; each works once.
    AlreadyUsed,
    /// Too many wrong attempts recently; nothing is accepted until the pause ends.
    RateLimited {
        /// Seconds until the inviter accepts attempts again.
        retry_after_secs: u64,
    },
    /// The inviter's user denied the request.
    Denied,
    /// The inviter's user did not answer the request in time.
    TimedOut,
    /// The invitation was cancelled on the inviter (or ended by an earlier denial).
    Cancelled,
}

impl From<RefuseReason> for Refused {
    fn from(reason: RefuseReason) -> Self {
        Refused { reason }
    }
}

/// The inviter's answer to a [`JoinRequest`]: [`Reply::Pending`] first when its user has to
/// approve, then a [`Reply::Welcome`] or a [`Reply::Refused`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Accepted.
    Welcome(Welcome),
    /// Refused.
    Refused(Refused),
    /// The proof is right; the inviter's user is being asked. The final answer follows on the
    /// same stream.
    Pending {
        /// How long the inviter waits for its user, in seconds (relative: the clocks of the
        /// two devices need not agree).
        within_secs: u64,
    },
}

/// Why a frame could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame is larger than [`MAX_FRAME_LEN`].
    #[error("pairing message of {len} bytes is larger than the {MAX_FRAME_LEN}-byte limit")]
    TooLarge {
        /// The length claimed or produced.
        len: usize,
    },
    /// The frame did not hold the expected message.
    #[error(
        "the other device sent a pairing message this fybrk cannot read ({0}); \
         make sure both devices run the same fybrk version"
    )]
    Decode(#[source] postcard::Error),
    /// The message could not be serialised.
    #[error("could not encode a pairing message: {0}")]
    Encode(#[source] postcard::Error),
}

/// Serialises `msg` as one frame: a 4-byte big-endian length, then postcard.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len: body.len() });
    }
    // Bounded by MAX_FRAME_LEN above, so it fits a u32.
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads one frame from the front of `buf`.
///
/// Returns `Ok(None)` while `buf` does not yet hold a whole frame (read more and call again), and
/// `Ok(Some((msg, used)))` with the number of bytes the frame took. A length over
/// [`MAX_FRAME_LEN`] is an error as soon as the header is in, before the body is waited for.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; FRAME_HEADER_LEN];
    len_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    let Some(body) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Ok(None);
    };
    let (msg, rest) = postcard::take_from_bytes(body).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        // A frame holds exactly one message; extra bytes mean the two ends disagree on the format.
        return Err(FrameError::Decode(postcard::Error::DeserializeBadEncoding));
    }
    Ok(Some((msg, FRAME_HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(name: String) -> JoinRequest {
        JoinRequest {
            joiner_id: [4; 32],
            joiner_name: name,
            proof: [5; 32],
        }
    }

    #[test]
    fn frames_round_trip_and_wait_for_more() {
        let reply = Reply::Refused(
            RefuseReason::RateLimited {
                retry_after_secs: 42,
            }
            .into(),
        );
        let frame = encode_frame(&reply).unwrap();
        for cut in 0..frame.len() {
            assert!(
                decode_frame::<Reply>(&frame[..cut]).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let (first, used) = decode_frame::<Reply>(&two).unwrap().unwrap();
        assert_eq!((first, used), (reply, frame.len()));
    }

    #[test]
    fn rejects_oversized_and_garbage() {
        let big = request("x".repeat(MAX_FRAME_LEN));
        assert!(matches!(
            encode_frame(&big),
            Err(FrameError::TooLarge { .. })
        ));
        let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            decode_frame::<Reply>(&header),
            Err(FrameError::TooLarge { .. })
        ));
        let garbage = [0, 0, 0, 2, 0xff, 0xff];
        assert!(matches!(
            decode_frame::<Reply>(&garbage),
            Err(FrameError::Decode(_))
        ));
        // A valid message with a byte too many in its frame.
        let mut frame = encode_frame(&RefuseReason::Expired).unwrap();
        frame[3] += 1;
        frame.push(0);
        assert!(matches!(
            decode_frame::<RefuseReason>(&frame),
            Err(FrameError::Decode(_))
        ));
    }

    #[test]
    fn welcome_debug_hides_the_key() {
        let w = Welcome {
            folder_id: [1; 16],
            folder_key: [0xEE; 32],
            later_keys: vec![[0xDD; 32]],
            inviter_name: "a".into(),
            proof: [0; 32],
        };
        let shown = format!("{w:?}");
        assert!(
            !shown.contains("238") && !shown.contains("ee, ee"),
            "{shown}"
        );
    }

    proptest! {
        #[test]
        fn request_round_trip(
            name in "\\PC{0,64}",
            id in any::<[u8; 32]>(),
            proof in any::<[u8; 32]>(),
        ) {
            let msg = JoinRequest { joiner_id: id, joiner_name: name, proof };
            let frame = encode_frame(&msg).unwrap();
            let (back, used) = decode_frame::<JoinRequest>(&frame).unwrap().unwrap();
            prop_assert_eq!(back, msg);
            prop_assert_eq!(used, frame.len());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame::<Reply>(&bytes);
            let _ = decode_frame::<JoinRequest>(&bytes);
        }
    }
}
