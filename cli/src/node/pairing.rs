//! Pairing, the inviting side: invitations this device made, the exchange on a connection from
//! an unknown device that presents one, and the person who allows or refuses it. The joining
//! side is in `join.rs`.
//!
//! A valid proof does not get the folder at once: the request waits (its connection open, the
//! joiner told [`Reply::Pending`]) until `fybrk approve` / `fybrk deny` (or the prompt of a
//! waiting `fybrk pair`) decides, the approval window passes, or the invitation is cancelled.
//! `fybrk pair --yes` approves in advance.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use fybrk_control::{JoinRequestInfo, PairCancelReply, PairWaitReply, PeerRef};
use fybrk_net::identity::DeviceId;
use fybrk_net::tls::{channel_binding, PairingWindow};
use fybrk_net::transport::peer_addr;
use fybrk_pair::{
    Invitation, InviterSession, JoinRequest, JoinedPeer, PendingJoin, RefuseReason, Reply, Welcome,
};

use super::framing::{read_frame, write_frame};
use super::traversal::candidate_addrs;
use super::{lock, names_device, unix_now, Node, Shared};
use crate::peers::Peer;

/// TLS exporter label binding a pairing proof (and the words both screens show) to one
/// connection.
pub(super) const PAIR_LABEL: &[u8] = b"EXPORTER-fybrk-pair-v1";

/// How long a pairing exchange may take once connected, apart from waiting for a person.
pub(super) const PAIR_TIMEOUT: Duration = Duration::from_secs(15);

/// How often a connection waiting for a person looks at the decision.
const DECISION_POLL: Duration = Duration::from_millis(100);

/// An invitation this device made, while it can still be used.
pub(super) struct Invite {
    number: u64,
    session: InviterSession,
    /// Lets unknown devices through TLS (for pairing only) while the invitation is open.
    window: Option<PairingWindow>,
    /// Approve the first valid request without asking (`fybrk pair --yes`).
    yes: bool,
    /// The QR code's PNG: deleted when the invitation ends, as it holds the secret.
    png: Option<PathBuf>,
    /// What an approval made, for the connection waiting on it.
    approved: Option<(Welcome, JoinedPeer)>,
}

/// How an invitation ended, for `fybrk pair` waiting on it.
#[derive(Clone, Debug)]
pub(super) enum InviteOutcome {
    Joined(DeviceId, String),
    Expired,
    Ended(RefuseReason),
}

/// What the first look at a join request decided.
enum Step {
    Welcome(u64, Welcome, JoinedPeer),
    Ask(u64, PendingJoin, u64),
}

impl Node {
    /// Makes an invitation and opens pairing until it is used, ends or expires.
    pub fn invite(&self, req: fybrk_control::Pair) -> Result<fybrk_control::Invite> {
        let sh = &self.shared;
        let now = unix_now();
        let store = sh.fs.store();
        let mut inv = Invitation::new(
            *sh.id.as_bytes(),
            &sh.name,
            &candidate_addrs(sh.listen_addr),
            sh.rendezvous_addr.map(fybrk_pair::Rendezvous::Addr),
            store.folder_id(),
            now,
        )
        .map_err(|e| anyhow!("cannot make an invitation: {e}"))?;
        inv.expires_unix = now.saturating_add(req.expires_secs.max(1));
        let (key, later) = {
            let keys = lock(&sh.folder_keys);
            (*keys.first.as_bytes(), keys.later_bytes())
        };
        let number = sh.next_invite.fetch_add(1, Ordering::Relaxed);
        let mut session = InviterSession::new(&inv, key, &later);
        if let Some(secs) = req.approve_within_secs {
            session = session.with_approval_window(secs);
        }
        lock(&sh.invites).push(Invite {
            number,
            session,
            window: Some(sh.allow.open_pairing()),
            yes: req.yes,
            png: req.png,
            approved: None,
        });
        tracing::info!(
            invite = number,
            expires_unix = inv.expires_unix,
            approve_in_advance = req.yes,
            "pairing invitation open"
        );
        Ok(fybrk_control::Invite {
            invite: number,
            payload: inv.encode(),
            qr: inv.encode_qr(),
            expires_unix: inv.expires_unix,
            addrs: inv.addrs,
        })
    }

    /// Waits up to `wait` until invitation `number` is used (returns the device), a device
    /// asks to join with it (returns the request), or it ends (an error that says how);
    /// [`PairWaitReply::Waiting`] if none of these happened yet.
    pub fn wait_invite(&self, number: u64, wait: Duration) -> Result<PairWaitReply> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(outcome) = lock(&self.shared.outcomes).get(&number).cloned() {
                return match outcome {
                    InviteOutcome::Joined(id, name) => Ok(PairWaitReply::Joined {
                        joined: PeerRef {
                            id: id.to_string(),
                            name,
                        },
                    }),
                    InviteOutcome::Expired => Err(anyhow!(
                        "the invitation expired before any device used it; make a new one with `fybrk pair`"
                    )),
                    InviteOutcome::Ended(reason) => Err(anyhow!("{}", ended_message(reason))),
                };
            }
            let state = lock(&self.shared.invites)
                .iter()
                .find(|i| i.number == number)
                .map(|i| (i.session.expires_unix(), request_info(i)));
            let Some((expires_unix, request)) = state else {
                bail!("no such invitation (the daemon was restarted?); make a new one with `fybrk pair`");
            };
            if let Some(request) = request {
                return Ok(PairWaitReply::Request { request });
            }
            if Instant::now() >= deadline {
                return Ok(PairWaitReply::waiting(expires_unix));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The devices waiting for approval, oldest first.
    pub fn pair_requests(&self) -> Vec<JoinRequestInfo> {
        let mut out: Vec<JoinRequestInfo> = lock(&self.shared.invites)
            .iter()
            .filter_map(request_info)
            .collect();
        out.sort_by_key(|r| r.deadline_unix);
        out
    }

    /// Allows (`approve`) or refuses the waiting device that `query` names (an id, a unique
    /// prefix of one, or a name).
    pub fn decide(&self, query: &str, approve: bool) -> Result<PeerRef> {
        let now = unix_now();
        let mut invites = lock(&self.shared.invites);
        let q = query.trim();
        let hits: Vec<usize> = invites
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.session.pending().is_some_and(|p| {
                    names_device(q, &DeviceId::from_bytes(p.peer.id), &p.peer.name)
                })
            })
            .map(|(n, _)| n)
            .collect();
        let at = match hits.as_slice() {
            [one] => *one,
            [] => bail!(
                "no device waiting for approval matches {q:?}; `fybrk status` lists the requests"
            ),
            _ => bail!("several waiting devices match {q:?}; give more of the id"),
        };
        let inv = &mut invites[at];
        let Some(p) = inv.session.pending().cloned() else {
            bail!("the request ended meanwhile");
        };
        let who = PeerRef {
            id: DeviceId::from_bytes(p.peer.id).to_string(),
            name: p.peer.name.clone(),
        };
        if approve {
            let accepted = inv
                .session
                .approve(now)
                .map_err(|r| anyhow!("{}", ended_message(r.reason)))?;
            inv.approved = Some(accepted);
            tracing::info!(peer = %who.id, name = %who.name, "join request approved");
        } else {
            inv.session.deny();
            tracing::warn!(peer = %who.id, name = %who.name, "join request denied; the invitation has ended");
        }
        inv.window = None;
        Ok(who)
    }

    /// Ends invitation `number`, or every open one: a waiting device is told, the PNG goes.
    pub fn cancel_invites(&self, number: Option<u64>) -> PairCancelReply {
        let mut cancelled = 0;
        for inv in lock(&self.shared.invites)
            .iter_mut()
            .filter(|i| number.is_none_or(|n| n == i.number))
        {
            let was_live = inv.session.used_by().is_none() && inv.session.ended().is_none();
            inv.session.cancel();
            if was_live && inv.session.ended() == Some(RefuseReason::Cancelled) {
                cancelled += 1;
                inv.window = None;
                tracing::info!(invite = inv.number, "pairing invitation cancelled");
            }
        }
        self.shared.expire_invites();
        PairCancelReply { cancelled }
    }

    /// Removes a device from the folder for every member (`unpair` is the same).
    pub fn remove(&self, query: &str) -> Result<PeerRef> {
        let _enter = self.rt.enter();
        self.shared.remove_member(query)
    }
}

/// The request waiting on `inv`, as the control protocol shows it.
fn request_info(inv: &Invite) -> Option<JoinRequestInfo> {
    inv.session.pending().map(|p| JoinRequestInfo {
        invite: inv.number,
        id: DeviceId::from_bytes(p.peer.id).to_string(),
        name: p.peer.name.clone(),
        code: p.code.clone(),
        deadline_unix: p.deadline_unix,
    })
}

/// What `fybrk pair` says when its invitation ended without a device joining.
fn ended_message(reason: RefuseReason) -> &'static str {
    match reason {
        RefuseReason::Denied => "the join request was denied; the invitation has ended",
        RefuseReason::TimedOut => {
            "nobody approved the join request in time; the invitation has ended. Make a new one \
             with `fybrk pair`"
        }
        RefuseReason::Cancelled => "the invitation was cancelled",
        RefuseReason::Expired => "the invitation expired",
        _ => "the invitation has ended",
    }
}

impl Shared {
    /// Records how invitations ended (used, denied, timed out, cancelled, or expired unused),
    /// deletes their PNGs, and drops the expired ones.
    pub(super) fn expire_invites(&self) {
        let now = unix_now();
        let mut invites = lock(&self.invites);
        let mut outcomes = lock(&self.outcomes);
        // A used or ended invitation stays (without a pairing window) until it expires, so a
        // later joiner hears "already used" or "cancelled", not "wrong secret".
        invites.retain_mut(|i| {
            if let Some(p) = i.session.poll_timeout(now) {
                tracing::warn!(peer = %DeviceId::from_bytes(p.id), name = %p.name, "join request not approved in time; the invitation has ended");
            }
            if let Some(p) = i.session.used_by() {
                let id = DeviceId::from_bytes(p.id);
                outcomes
                    .entry(i.number)
                    .or_insert(InviteOutcome::Joined(id, p.name.clone()));
                i.window = None;
            } else if let Some(reason) = i.session.ended() {
                outcomes.entry(i.number).or_insert(InviteOutcome::Ended(reason));
                i.window = None;
            } else if i.session.pending().is_none() && !i.session.is_open(now) {
                outcomes.insert(i.number, InviteOutcome::Expired);
                i.window = None;
            }
            if i.window.is_none() && i.session.pending().is_none() {
                if let Some(png) = i.png.take() {
                    match std::fs::remove_file(&png) {
                        Ok(()) => tracing::debug!(png = %png.display(), "invitation QR code deleted"),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => tracing::warn!(png = %png.display(), error = %e, "cannot delete the invitation's QR code"),
                    }
                }
            }
            now < i.session.expires_unix() || i.session.pending().is_some()
        });
    }

    /// Inviter side of pairing on a connection from an unknown device.
    pub(super) async fn serve_join(
        self: &Arc<Self>,
        conn: quinn::Connection,
        peer: DeviceId,
    ) -> Result<()> {
        let (mut send, mut recv) = conn.accept_bi().await?;
        let req: JoinRequest = read_frame(&mut recv).await?;
        let binding = channel_binding(&conn, PAIR_LABEL, &[])?;
        let first = self.look_at(&req, &binding, peer, peer_addr(&conn).ip());
        let answer = match first {
            Err(refused) => Err(refused),
            Ok(Step::Welcome(number, welcome, joined)) => Ok((number, welcome, joined)),
            Ok(Step::Ask(number, pending, within_secs)) => {
                tracing::warn!(
                    peer = %peer,
                    name = %pending.peer.name,
                    code = %pending.code,
                    "a device asks to join the folder: check that it shows the same words, then `fybrk approve {peer}` or `fybrk deny {peer}`"
                );
                write_frame(&mut send, &Reply::Pending { within_secs }).await?;
                match self.decision(number, &conn).await {
                    Some(answer) => answer.map(|(w, j)| (number, w, j)),
                    // The joiner left; nothing was handed over.
                    None => return Ok(()),
                }
            }
        };
        match answer {
            Ok((number, welcome, JoinedPeer { name, .. })) => {
                // Trust the device before it has the key: it connects for replication next.
                self.add_peer(peer, &name, peer_addr(&conn));
                self.member_added(peer, &name);
                lock(&self.outcomes).insert(number, InviteOutcome::Joined(peer, name.clone()));
                tracing::info!(peer = %peer, %name, "device joined");
                write_frame(&mut send, &Reply::Welcome(welcome)).await?;
            }
            Err(refused) => {
                tracing::warn!(peer = %peer, reason = ?refused.reason, "join refused");
                write_frame(&mut send, &Reply::Refused(refused)).await?;
            }
        }
        send.finish()?;
        self.expire_invites();
        // The joiner closes once it has read the reply.
        let _ = tokio::time::timeout(PAIR_TIMEOUT, conn.closed()).await;
        Ok(())
    }

    /// The first look at a join request: refused, welcomed (approved in advance), or to be
    /// asked about. The invitation whose secret the request proves answers (expired, used,
    /// ended, or valid): a right proof is never rate limited. A proof that matches no
    /// invitation counts against its source address and claimed device id, across all
    /// invitations (`BadProofs`), so a flood slows down only whoever sends it.
    fn look_at(
        &self,
        req: &JoinRequest,
        binding: &[u8; 32],
        peer: DeviceId,
        source: IpAddr,
    ) -> Result<Step, fybrk_pair::Refused> {
        let now = unix_now();
        let mut invites = lock(&self.invites);
        let Some(inv) = invites.iter_mut().find(|i| i.session.matches(req, binding)) else {
            drop(invites);
            let mut bad = lock(&self.bad_proofs);
            bad.check(source, &req.joiner_id, now)?;
            bad.record(source, &req.joiner_id, now);
            return Err(RefuseReason::BadProof.into());
        };
        let pending = inv
            .session
            .handle_request(req, binding, peer.as_bytes(), now)?;
        // In use now: strangers with the same invitation are refused before TLS.
        inv.window = None;
        if inv.yes {
            let (welcome, joined) = inv.session.approve(now)?;
            return Ok(Step::Welcome(inv.number, welcome, joined));
        }
        let within = pending.deadline_unix.saturating_sub(now);
        Ok(Step::Ask(inv.number, pending, within))
    }

    /// Waits for the person's decision on invitation `number`'s pending request: approved,
    /// denied, timed out or cancelled. `None` when the joiner closed the connection first (the
    /// invitation then ends: its secret was used).
    async fn decision(
        &self,
        number: u64,
        conn: &quinn::Connection,
    ) -> Option<Result<(Welcome, JoinedPeer), fybrk_pair::Refused>> {
        loop {
            {
                let now = unix_now();
                let mut invites = lock(&self.invites);
                let Some(inv) = invites.iter_mut().find(|i| i.number == number) else {
                    return Some(Err(RefuseReason::Cancelled.into()));
                };
                if let Some(accepted) = inv.approved.take() {
                    return Some(Ok(accepted));
                }
                inv.session.poll_timeout(now);
                if let Some(reason) = inv.session.ended() {
                    return Some(Err(reason.into()));
                }
                if conn.close_reason().is_some() {
                    tracing::info!(
                        invite = number,
                        "the device asking to join left before an answer"
                    );
                    inv.session.cancel();
                    return None;
                }
            }
            tokio::time::sleep(DECISION_POLL).await;
        }
    }

    /// Remembers and trusts a newly paired device, and starts dialling it.
    pub(super) fn add_peer(self: &Arc<Self>, id: DeviceId, name: &str, addr: SocketAddr) {
        {
            let mut book = lock(&self.book);
            // A relayed address only works through the channel of one introduction.
            let addrs = if self.is_relayed(addr) {
                Vec::new()
            } else {
                vec![addr]
            };
            book.insert(
                id,
                Peer {
                    name: name.to_owned(),
                    addrs,
                    last_seen_unix: Some(unix_now()),
                    seen: 0,
                    public_key: None,
                },
            );
            let saved = self.fs.store().sync().map_err(anyhow::Error::from);
            if let Err(e) = saved.and_then(|()| book.save()) {
                tracing::error!(error = %e, "cannot save the new peer; it is paired until restart");
            }
        }
        self.allow.add(id);
        self.start_dialer(id);
    }
}
