//! The pairing exchange as state machines without I/O.
//!
//! The driver (in the daemon) opens a QUIC connection, exports a 32-byte `binding` from its TLS
//! session (the same value on both ends), moves frames between the stream and these machines, and
//! supplies the time. Nothing here reads a socket or a clock, so tests drive it with a fake one.
//!
//! ```text
//! joiner                                        inviter
//! JoinerSession::request(binding)
//!                         ── JoinRequest ──▶
//!                                               InviterSession::handle_join(req, binding, peer, now)
//!                         ◀── Reply ────────    Welcome (+ JoinedPeer for the daemon) | Refused
//! JoinerSession::handle_reply(reply)
//! ```

mod messages;
mod rate_limit;

use std::fmt;

pub use messages::{
    decode_frame, encode_frame, FrameError, JoinRequest, RefuseReason, Refused, Reply, Welcome,
    FRAME_HEADER_LEN, MAX_FRAME_LEN,
};
pub use rate_limit::RateLimiter;

use crate::fmt_secs;
use crate::invite::Invitation;
use crate::name::sanitize_name;
use crate::proof::{proof, verify_proof, Role};

/// Wrong proofs tolerated per invitation within [`BAD_PROOF_WINDOW_SECS`] before it refuses
/// everything, right proofs included. A 128-bit secret cannot be guessed online at any rate, so
/// this is not what keeps the secret safe: it stops a peer from hammering the inviter (work, log
/// noise) and makes a flood of bad attempts visible as a pause instead of an endless stream.
/// A real user gets a wrong proof only by pasting a different invitation, so five is generous.
pub const MAX_BAD_PROOFS: usize = 5;

/// How long the wrong proofs are remembered. Short next to the invitation's 10-minute life, so a
/// locked invitation becomes usable again for the real joiner before it expires.
pub const BAD_PROOF_WINDOW_SECS: u64 = 60;

/// Pairing connections the daemon admits through its [`PairingGate`] per [`GATE_WINDOW_SECS`],
/// across all invitations: a person pairs a handful of devices, never dozens a minute.
pub const GATE_MAX_ATTEMPTS: usize = 20;

/// The window of [`GATE_MAX_ATTEMPTS`].
pub const GATE_WINDOW_SECS: u64 = 60;

/// The device that joined, for the daemon to add to its paired devices (and to show the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedPeer {
    /// Its device id: the id of the certificate it presented, to pin from now on.
    pub id: [u8; 32],
    /// Its name, sanitised for display.
    pub name: String,
}

/// The daemon-wide limit on pairing attempts, whatever invitation they are for. The driver calls
/// [`PairingGate::admit`] once per incoming pairing request, before handing it to a session.
#[derive(Debug, Clone)]
pub struct PairingGate {
    attempts: RateLimiter,
}

impl Default for PairingGate {
    fn default() -> Self {
        Self::new(GATE_MAX_ATTEMPTS, GATE_WINDOW_SECS)
    }
}

impl PairingGate {
    /// A gate admitting `max` attempts per `window_secs`.
    pub fn new(max: usize, window_secs: u64) -> Self {
        Self {
            attempts: RateLimiter::new(max, window_secs),
        }
    }

    /// Counts an attempt at `now_unix`, or refuses it with [`RefuseReason::RateLimited`]
    /// (refused attempts are not counted, so a flood cannot extend its own pause forever).
    pub fn admit(&mut self, now_unix: u64) -> Result<(), Refused> {
        self.attempts
            .check(now_unix)
            .map_err(|retry_after_secs| RefuseReason::RateLimited { retry_after_secs })?;
        self.attempts.record(now_unix);
        Ok(())
    }
}

/// The inviter's side of one open invitation.
pub struct InviterSession {
    secret: [u8; 16],
    folder_id: [u8; 16],
    folder_key: [u8; 32],
    inviter_name: String,
    expires_unix: u64,
    used_by: Option<JoinedPeer>,
    bad_proofs: RateLimiter,
}

impl fmt::Debug for InviterSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviterSession")
            .field("folder_id", &crate::hex_prefix(&self.folder_id))
            .field("expires_unix", &self.expires_unix)
            .field("used_by", &self.used_by)
            .finish_non_exhaustive()
    }
}

impl InviterSession {
    /// Opens `invitation` (made by this device) for the folder whose key is `folder_key`.
    pub fn new(invitation: &Invitation, folder_key: [u8; 32]) -> Self {
        Self {
            secret: invitation.secret,
            folder_id: invitation.folder,
            folder_key,
            inviter_name: sanitize_name(&invitation.inviter_name),
            expires_unix: invitation.expires_unix,
            used_by: None,
            bad_proofs: RateLimiter::new(MAX_BAD_PROOFS, BAD_PROOF_WINDOW_SECS),
        }
    }

    /// Handles a join request that arrived on the connection whose TLS exporter value is
    /// `binding` and whose peer presented a certificate with device id `peer_id`.
    ///
    /// On success the invitation is used up and the reply is the [`Welcome`] to send, with the
    /// [`JoinedPeer`] to pin. Checks, in order: expired (by this device's clock, exactly),
    /// already used, rate limited, then the proof and that `req.joiner_id` is `peer_id` (a
    /// request naming another device than the one on the connection counts as a bad proof).
    pub fn handle_join(
        &mut self,
        req: &JoinRequest,
        binding: &[u8; 32],
        peer_id: &[u8; 32],
        now_unix: u64,
    ) -> Result<(Welcome, JoinedPeer), Refused> {
        if now_unix >= self.expires_unix {
            return Err(RefuseReason::Expired.into());
        }
        if self.used_by.is_some() {
            return Err(RefuseReason::AlreadyUsed.into());
        }
        self.bad_proofs
            .check(now_unix)
            .map_err(|retry_after_secs| RefuseReason::RateLimited { retry_after_secs })?;
        let proof_ok = verify_proof(
            &self.secret,
            binding,
            Role::Joiner,
            &req.joiner_id,
            &req.proof,
        );
        if !proof_ok || req.joiner_id != *peer_id {
            self.bad_proofs.record(now_unix);
            return Err(RefuseReason::BadProof.into());
        }
        let peer = JoinedPeer {
            id: req.joiner_id,
            name: sanitize_name(&req.joiner_name),
        };
        self.used_by = Some(peer.clone());
        let welcome = Welcome {
            folder_id: self.folder_id,
            folder_key: self.folder_key,
            inviter_name: self.inviter_name.clone(),
            proof: proof(&self.secret, binding, Role::Inviter, &req.joiner_id),
        };
        Ok((welcome, peer))
    }

    /// Whether `req` proves this invitation's secret on the connection with exporter value
    /// `binding` (no state changes, no rate limit): lets a device with several invitations
    /// find the one a request is for, and answer with that one's exact reason.
    pub fn matches(&self, req: &JoinRequest, binding: &[u8; 32]) -> bool {
        verify_proof(
            &self.secret,
            binding,
            Role::Joiner,
            &req.joiner_id,
            &req.proof,
        )
    }

    /// The device that used the invitation, once one has.
    pub fn used_by(&self) -> Option<&JoinedPeer> {
        self.used_by.as_ref()
    }

    /// When the invitation expires (unix seconds); the daemon can drop the session then.
    pub fn expires_unix(&self) -> u64 {
        self.expires_unix
    }

    /// Whether a join could still succeed: not used and not expired at `now_unix`.
    pub fn is_open(&self, now_unix: u64) -> bool {
        self.used_by.is_none() && now_unix < self.expires_unix
    }
}

/// Why joining failed, as the joiner sees it. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The inviter did not accept the proof.
    #[error(
        "the other device did not accept this invitation's secret; copy the whole invitation \
         again from the device that made it, or ask for a new one with `fybrk pair`"
    )]
    BadProof,
    /// The invitation expired on the inviter.
    #[error(
        "the invitation has expired on the other device (check that both clocks are right); \
         ask for a new one with `fybrk pair`"
    )]
    Expired,
    /// Someone already used the invitation.
    #[error(
        "this invitation has already been used (each works once); \
         ask for a new one with `fybrk pair`"
    )]
    AlreadyUsed,
    /// The inviter is pausing after too many wrong attempts.
    #[error(
        "the other device saw too many wrong pairing attempts and is pausing; \
         try again in {}, or ask for a new invitation with `fybrk pair`",
        fmt_secs(*retry_after_secs)
    )]
    RateLimited {
        /// Seconds until it accepts attempts again.
        retry_after_secs: u64,
    },
    /// The answer did not prove knowledge of the secret: not the device that made the invitation.
    #[error(
        "the device that answered does not know this invitation's secret, so it is not the \
         device that invited you; nothing was accepted. Check the network and try again"
    )]
    InviterNotAuthentic,
    /// The inviter offered a different folder than the invitation names.
    #[error(
        "the other device offered a different folder than the invitation names; nothing was \
         accepted. Ask for a new invitation with `fybrk pair`"
    )]
    WrongFolder,
    /// [`JoinerSession::handle_reply`] was called before [`JoinerSession::request`].
    #[error("internal error: a pairing reply was handled before any request was sent")]
    NoRequest,
    /// A message could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl From<RefuseReason> for PairError {
    fn from(reason: RefuseReason) -> Self {
        match reason {
            RefuseReason::BadProof => PairError::BadProof,
            RefuseReason::Expired => PairError::Expired,
            RefuseReason::AlreadyUsed => PairError::AlreadyUsed,
            RefuseReason::RateLimited { retry_after_secs } => {
                PairError::RateLimited { retry_after_secs }
            }
        }
    }
}

/// The joiner's side: made from the parsed invitation.
///
/// The driver must connect only to a peer whose certificate has the id [`inviter_id`]
/// (pinning); then it sends [`request`] and feeds the answer to [`handle_reply`]. After a failed
/// connection it may call [`request`] again on the next one: each connection has its own binding.
///
/// [`inviter_id`]: JoinerSession::inviter_id
/// [`request`]: JoinerSession::request
/// [`handle_reply`]: JoinerSession::handle_reply
pub struct JoinerSession {
    inviter: [u8; 32],
    folder: [u8; 16],
    secret: [u8; 16],
    joiner_id: [u8; 32],
    joiner_name: String,
    binding: Option<[u8; 32]>,
}

impl fmt::Debug for JoinerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinerSession")
            .field("inviter", &crate::hex_prefix(&self.inviter))
            .field("folder", &crate::hex_prefix(&self.folder))
            .field("requested", &self.binding.is_some())
            .finish_non_exhaustive()
    }
}

impl JoinerSession {
    /// A session for joining with `invitation` as device `joiner_id` named `joiner_name`.
    pub fn new(invitation: &Invitation, joiner_id: [u8; 32], joiner_name: &str) -> Self {
        Self {
            inviter: invitation.inviter,
            folder: invitation.folder,
            secret: invitation.secret,
            joiner_id,
            joiner_name: sanitize_name(joiner_name),
            binding: None,
        }
    }

    /// The device id the inviter's TLS certificate must have.
    pub fn inviter_id(&self) -> &[u8; 32] {
        &self.inviter
    }

    /// The request to send on the connection whose TLS exporter value is `binding`.
    pub fn request(&mut self, binding: &[u8; 32]) -> JoinRequest {
        self.binding = Some(*binding);
        JoinRequest {
            joiner_id: self.joiner_id,
            joiner_name: self.joiner_name.clone(),
            proof: proof(&self.secret, binding, Role::Joiner, &self.joiner_id),
        }
    }

    /// Handles the inviter's reply on the connection of the last [`JoinerSession::request`].
    /// A [`Welcome`] is returned only if its proof and folder check out; its name is sanitised.
    pub fn handle_reply(&mut self, reply: Reply) -> Result<Welcome, PairError> {
        let binding = self.binding.ok_or(PairError::NoRequest)?;
        let mut welcome = match reply {
            Reply::Refused(Refused { reason }) => return Err(reason.into()),
            Reply::Welcome(w) => w,
        };
        if !verify_proof(
            &self.secret,
            &binding,
            Role::Inviter,
            &self.joiner_id,
            &welcome.proof,
        ) {
            return Err(PairError::InviterNotAuthentic);
        }
        if welcome.folder_id != self.folder {
            return Err(PairError::WrongFolder);
        }
        welcome.inviter_name = sanitize_name(&welcome.inviter_name);
        Ok(welcome)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;
