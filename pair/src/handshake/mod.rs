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
//!                                               InviterSession::handle_request(req, binding, peer, now)
//!                         ◀── Pending ──────    both screens show sas::code(binding); the user
//!                                               compares and answers: approve | deny | timeout
//!                         ◀── Reply ────────    Welcome (+ JoinedPeer for the daemon) | Refused
//! JoinerSession::handle_reply(reply)            (Pending first: Ok(None), then the final one)
//! ```

mod bad_proofs;
mod messages;
mod rate_limit;

use std::fmt;

pub use bad_proofs::{BadProofs, BAD_PROOF_WINDOW_SECS, MAX_BAD_PROOFS, MAX_TRACKED};
pub use messages::{
    decode_frame, encode_frame, FrameError, JoinRequest, RefuseReason, Refused, Reply, Welcome,
    FRAME_HEADER_LEN, MAX_FRAME_LEN, MAX_LATER_KEYS,
};
pub use rate_limit::RateLimiter;

use crate::fmt_secs;
use crate::invite::Invitation;
use crate::name::sanitize_name;
use crate::proof::{proof, verify_proof, Role};

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

/// How long a valid join request waits for the inviter's user by default: long enough to read
/// two screens, short enough that a forgotten request does not hold the invitation for long.
pub const APPROVE_WITHIN_SECS: u64 = 120;

/// A join request with a valid proof, waiting for the inviter's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJoin {
    /// The device asking.
    pub peer: JoinedPeer,
    /// The words both screens show ([`crate::sas::code`] of the connection).
    pub code: String,
    /// When the request arrived (unix seconds).
    pub since_unix: u64,
    /// When it times out unanswered (unix seconds).
    pub deadline_unix: u64,
}

/// Where an invitation is in its life.
#[derive(Debug, Clone)]
enum Phase {
    /// Waiting for a device to present a proof.
    Open,
    /// A device proved the secret; its user decides.
    Pending {
        join: PendingJoin,
        binding: [u8; 32],
    },
    /// Approved: the welcome was handed to this device.
    Used(JoinedPeer),
    /// Denied, timed out or cancelled: nothing more is accepted.
    Ended(RefuseReason),
}

/// The inviter's side of one invitation.
///
/// ```text
/// Open --valid proof--> Pending --approve--> Used
///   |                      |--deny / timeout / cancel--> Ended
///   |--cancel--> Ended
/// ```
///
/// [`InviterSession::handle_join`] is the shortcut for invitations approved in advance
/// (`fybrk pair --yes`): request and approval in one step.
pub struct InviterSession {
    secret: [u8; 16],
    folder_id: [u8; 16],
    folder_key: [u8; 32],
    later_keys: Vec<[u8; 32]>,
    inviter_name: String,
    expires_unix: u64,
    approve_within_secs: u64,
    phase: Phase,
}

impl fmt::Debug for InviterSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviterSession")
            .field("folder_id", &crate::hex_prefix(&self.folder_id))
            .field("expires_unix", &self.expires_unix)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl InviterSession {
    /// Opens `invitation` (made by this device) for the folder whose first key is `folder_key`
    /// and later keys `later_keys` (oldest first; only the newest [`MAX_LATER_KEYS`] are sent).
    pub fn new(invitation: &Invitation, folder_key: [u8; 32], later_keys: &[[u8; 32]]) -> Self {
        let newest = later_keys.len().saturating_sub(MAX_LATER_KEYS);
        Self {
            secret: invitation.secret,
            folder_id: invitation.folder,
            folder_key,
            later_keys: later_keys[newest..].to_vec(),
            inviter_name: sanitize_name(&invitation.inviter_name),
            expires_unix: invitation.expires_unix,
            approve_within_secs: APPROVE_WITHIN_SECS,
            phase: Phase::Open,
        }
    }

    /// Sets how long a valid request waits for approval (at least 1 s).
    pub fn with_approval_window(mut self, secs: u64) -> Self {
        self.approve_within_secs = secs.max(1);
        self
    }

    /// Handles a join request that arrived on the connection whose TLS exporter value is
    /// `binding` and whose peer presented a certificate with device id `peer_id`.
    ///
    /// A valid one makes the invitation [`PendingJoin`] until [`InviterSession::approve`],
    /// [`InviterSession::deny`], [`InviterSession::cancel`] or the approval deadline
    /// ([`InviterSession::poll_timeout`]). Checks, in order: expired (by this device's clock,
    /// exactly), ended (cancelled, denied, timed out), already used or pending,
    /// then the proof and that `req.joiner_id` is `peer_id` (a request naming another device
    /// than the one on the connection counts as a bad proof).
    pub fn handle_request(
        &mut self,
        req: &JoinRequest,
        binding: &[u8; 32],
        peer_id: &[u8; 32],
        now_unix: u64,
    ) -> Result<PendingJoin, Refused> {
        if now_unix >= self.expires_unix {
            return Err(RefuseReason::Expired.into());
        }
        match &self.phase {
            Phase::Ended(_) => return Err(RefuseReason::Cancelled.into()),
            Phase::Used(_) | Phase::Pending { .. } => return Err(RefuseReason::AlreadyUsed.into()),
            Phase::Open => {}
        }
        let proof_ok = verify_proof(
            &self.secret,
            binding,
            Role::Joiner,
            &req.joiner_id,
            &req.proof,
        );
        if !proof_ok || req.joiner_id != *peer_id {
            // Counted by the daemon's [`BadProofs`], per source and claimed id: a flood of
            // wrong proofs must never lock the real joiner out of its invitation.
            return Err(RefuseReason::BadProof.into());
        }
        let join = PendingJoin {
            peer: JoinedPeer {
                id: req.joiner_id,
                name: sanitize_name(&req.joiner_name),
            },
            code: crate::sas::code(binding),
            since_unix: now_unix,
            deadline_unix: now_unix.saturating_add(self.approve_within_secs),
        };
        self.phase = Phase::Pending {
            join: join.clone(),
            binding: *binding,
        };
        Ok(join)
    }

    /// [`InviterSession::handle_request`] and [`InviterSession::approve`] at once, for an
    /// invitation approved in advance: the [`Welcome`] to send and the [`JoinedPeer`] to pin.
    pub fn handle_join(
        &mut self,
        req: &JoinRequest,
        binding: &[u8; 32],
        peer_id: &[u8; 32],
        now_unix: u64,
    ) -> Result<(Welcome, JoinedPeer), Refused> {
        self.handle_request(req, binding, peer_id, now_unix)?;
        self.approve(now_unix)
    }

    /// The user allowed the pending request: the invitation is used up, and the [`Welcome`]
    /// goes to the device. Refused with [`RefuseReason::TimedOut`] past the deadline (the
    /// invitation then ends), and with [`RefuseReason::Cancelled`] when nothing is pending.
    pub fn approve(&mut self, now_unix: u64) -> Result<(Welcome, JoinedPeer), Refused> {
        let Phase::Pending { join, binding } = &self.phase else {
            return Err(RefuseReason::Cancelled.into());
        };
        if now_unix >= join.deadline_unix {
            self.phase = Phase::Ended(RefuseReason::TimedOut);
            return Err(RefuseReason::TimedOut.into());
        }
        let peer = join.peer.clone();
        let welcome = Welcome {
            folder_id: self.folder_id,
            folder_key: self.folder_key,
            later_keys: self.later_keys.clone(),
            inviter_name: self.inviter_name.clone(),
            proof: proof(&self.secret, binding, Role::Inviter, &peer.id),
        };
        self.phase = Phase::Used(peer.clone());
        Ok((welcome, peer))
    }

    /// The user refused the pending request. The invitation ends with it: its secret reached
    /// someone the user did not expect, so it must not be tried again. Returns the device.
    pub fn deny(&mut self) -> Option<JoinedPeer> {
        let Phase::Pending { join, .. } = &self.phase else {
            return None;
        };
        let peer = join.peer.clone();
        self.phase = Phase::Ended(RefuseReason::Denied);
        Some(peer)
    }

    /// Ends the invitation unless a device already joined with it. Returns the pending device,
    /// if one was waiting (it is told [`RefuseReason::Cancelled`]).
    pub fn cancel(&mut self) -> Option<JoinedPeer> {
        let pending = match &self.phase {
            Phase::Used(_) | Phase::Ended(_) => return None,
            Phase::Pending { join, .. } => Some(join.peer.clone()),
            Phase::Open => None,
        };
        self.phase = Phase::Ended(RefuseReason::Cancelled);
        pending
    }

    /// Ends a pending request whose deadline passed at `now_unix`; returns its device.
    pub fn poll_timeout(&mut self, now_unix: u64) -> Option<JoinedPeer> {
        let Phase::Pending { join, .. } = &self.phase else {
            return None;
        };
        if now_unix < join.deadline_unix {
            return None;
        }
        let peer = join.peer.clone();
        self.phase = Phase::Ended(RefuseReason::TimedOut);
        Some(peer)
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
        match &self.phase {
            Phase::Used(p) => Some(p),
            _ => None,
        }
    }

    /// The request waiting for the user, if any.
    pub fn pending(&self) -> Option<&PendingJoin> {
        match &self.phase {
            Phase::Pending { join, .. } => Some(join),
            _ => None,
        }
    }

    /// Why the invitation ended without a device joining (denied, timed out, cancelled).
    pub fn ended(&self) -> Option<RefuseReason> {
        match &self.phase {
            Phase::Ended(r) => Some(*r),
            _ => None,
        }
    }

    /// When the invitation expires (unix seconds); the daemon can drop the session then.
    pub fn expires_unix(&self) -> u64 {
        self.expires_unix
    }

    /// Whether a join could still begin: nobody used it, nobody is waiting, not ended and not
    /// expired at `now_unix`.
    pub fn is_open(&self, now_unix: u64) -> bool {
        matches!(self.phase, Phase::Open) && now_unix < self.expires_unix
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
    /// The inviter's user said no.
    #[error(
        "the other device's user denied the request, and the invitation has ended; if that \
         was a mistake, ask for a new one with `fybrk pair`"
    )]
    Denied,
    /// The inviter's user did not answer in time.
    #[error(
        "nobody approved the request on the other device in time; ask for a new invitation \
         with `fybrk pair` and approve it there"
    )]
    TimedOut,
    /// The invitation was cancelled on the inviter.
    #[error(
        "the invitation was cancelled on the other device; ask for a new one with `fybrk pair`"
    )]
    Cancelled,
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
            RefuseReason::Denied => PairError::Denied,
            RefuseReason::TimedOut => PairError::TimedOut,
            RefuseReason::Cancelled => PairError::Cancelled,
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

    /// The words this connection shows ([`crate::sas::code`]), once a request was made.
    pub fn code(&self) -> Option<String> {
        self.binding.as_ref().map(crate::sas::code)
    }

    /// Handles the inviter's reply on the connection of the last [`JoinerSession::request`].
    /// `Ok(None)`: the inviter's user is being asked; read the next reply. A [`Welcome`] is
    /// returned only if its proof and folder check out; its name is sanitised.
    pub fn handle_reply(&mut self, reply: Reply) -> Result<Option<Welcome>, PairError> {
        let binding = self.binding.ok_or(PairError::NoRequest)?;
        let mut welcome = match reply {
            Reply::Refused(Refused { reason }) => return Err(reason.into()),
            Reply::Pending { .. } => return Ok(None),
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
        Ok(Some(welcome))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;
