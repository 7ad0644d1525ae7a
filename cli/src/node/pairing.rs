//! Pairing: invitations this device made, the inviter's side of the exchange on a connection
//! from an unknown device, and the joiner's side (dial the inviter, prove the secret, adopt
//! its folder).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fybrk_control::{PairWaitReply, PairWithReply, PeerRef};
use fybrk_net::identity::DeviceId;
use fybrk_net::tls::{channel_binding, PairingWindow};
use fybrk_net::transport::{CLOSE_NOT_PAIRED, CLOSE_SHUTDOWN};
use fybrk_pair::{Invitation, InviterSession, JoinRequest, JoinedPeer, JoinerSession, Reply};
use fybrk_store::FolderKey;

use super::framing::{read_frame, write_frame};
use super::links::DIAL_TIMEOUT;
use super::traversal::candidate_addrs;
use super::{lock, unix_now, Node, Shared};
use crate::peers::Peer;

/// TLS exporter label binding a pairing proof to one connection.
const PAIR_LABEL: &[u8] = b"EXPORTER-fybrk-pair-v1";

/// How long a pairing exchange may take once connected.
pub(super) const PAIR_TIMEOUT: Duration = Duration::from_secs(15);

/// An invitation this device made, while it can still be used.
pub(super) struct Invite {
    number: u64,
    session: InviterSession,
    /// Lets unknown devices through TLS (for pairing only) while the invitation is open.
    window: Option<PairingWindow>,
}

/// How an invitation ended, for `fybrk pair` waiting on it.
#[derive(Clone, Debug)]
pub(super) enum InviteOutcome {
    Joined(DeviceId, String),
    Expired,
}

impl Node {
    /// Makes an invitation valid for `expires` and opens pairing until it is used or expires.
    pub fn invite(&self, expires: Duration) -> Result<fybrk_control::Invite> {
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
        inv.expires_unix = now.saturating_add(expires.as_secs().max(1));
        let key = *lock(&sh.folder_key).as_bytes();
        let number = sh.next_invite.fetch_add(1, Ordering::Relaxed);
        lock(&sh.invites).push(Invite {
            number,
            session: InviterSession::new(&inv, key),
            window: Some(sh.allow.open_pairing()),
        });
        tracing::info!(
            invite = number,
            expires_unix = inv.expires_unix,
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

    /// Waits up to `wait` until invitation `number` is used (returns the device) or expires
    /// (an error); [`PairWaitReply::Waiting`] if neither happened yet.
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
                };
            }
            let expires = lock(&self.shared.invites)
                .iter()
                .find(|i| i.number == number)
                .map(|i| i.session.expires_unix());
            let Some(expires_unix) = expires else {
                bail!("no such invitation (the daemon was restarted?); make a new one with `fybrk pair`");
            };
            if Instant::now() >= deadline {
                return Ok(PairWaitReply::waiting(expires_unix));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Joins the folder of the device that made `payload`: see the module doc.
    pub fn pair_with(&self, payload: &str) -> Result<PairWithReply> {
        let inv = Invitation::parse(payload, unix_now()).map_err(|e| anyhow!("{e}"))?;
        let sh = self.shared.clone();
        self.rt.block_on(sh.join(inv))
    }

    /// Removes a paired device: it can no longer connect, and its connection is closed.
    pub fn unpair(&self, query: &str) -> Result<PeerRef> {
        let sh = &self.shared;
        let (id, peer) = {
            let mut book = lock(&sh.book);
            let id = book.find(query).map_err(|e| anyhow!(e))?;
            let peer = book.remove(&id).context("peer vanished")?;
            // Progress of the others is saved too: only once what it names is durable.
            sh.fs.store().sync()?;
            book.save()?;
            (id, peer)
        };
        sh.allow.remove(&id);
        if let Some(link) = lock(&sh.links).remove(&id) {
            link.conn.close(CLOSE_NOT_PAIRED, b"unpaired");
        }
        if let Some(wake) = lock(&sh.dialers).remove(&id) {
            wake.notify_one();
        }
        tracing::info!(peer = %id, name = %peer.name, "unpaired");
        Ok(PeerRef {
            id: id.to_string(),
            name: peer.name,
        })
    }
}

impl Shared {
    /// Records how invitations ended (used, or expired unused) and drops the expired ones.
    pub(super) fn expire_invites(&self) {
        let now = unix_now();
        let mut invites = lock(&self.invites);
        let mut outcomes = lock(&self.outcomes);
        // A used invitation stays (without a pairing window) until it expires, so a
        // second joiner hears "already used", not "wrong secret".
        invites.retain_mut(|i| {
            if let Some(p) = i.session.used_by() {
                let id = DeviceId::from_bytes(p.id);
                outcomes
                    .entry(i.number)
                    .or_insert(InviteOutcome::Joined(id, p.name.clone()));
                i.window = None;
            } else if !i.session.is_open(now) {
                outcomes.insert(i.number, InviteOutcome::Expired);
            }
            now < i.session.expires_unix()
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
        let now = unix_now();
        let outcome = {
            let mut invites = lock(&self.invites);
            // The invitation whose secret the request proves answers (used, expired, rate
            // limited, or welcome). If none does, the secret is wrong: every open invitation
            // counts a bad proof, so guessing is rate limited.
            match invites
                .iter()
                .position(|i| i.session.matches(&req, &binding))
            {
                Some(i) => {
                    let inv = &mut invites[i];
                    let r = inv
                        .session
                        .handle_join(&req, &binding, peer.as_bytes(), now);
                    if r.is_ok() {
                        // Used up: close its pairing window now (it stays listed until it
                        // expires, so a late joiner hears "already used").
                        inv.window = None;
                    }
                    r.map(|ok| (inv.number, ok))
                }
                None => {
                    let mut refused = None;
                    for inv in invites.iter_mut().filter(|i| i.session.is_open(now)) {
                        if let Err(e) =
                            inv.session
                                .handle_join(&req, &binding, peer.as_bytes(), now)
                        {
                            refused.get_or_insert(e);
                        }
                    }
                    Err(refused.unwrap_or_else(|| fybrk_pair::RefuseReason::BadProof.into()))
                }
            }
        };
        match outcome {
            Ok((number, (welcome, JoinedPeer { name, .. }))) => {
                // Trust the device before it has the key: it connects for replication next.
                self.add_peer(peer, &name, conn.remote_address());
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
        // The joiner closes once it has read the reply.
        let _ = tokio::time::timeout(PAIR_TIMEOUT, conn.closed()).await;
        Ok(())
    }

    /// Joiner side of pairing.
    async fn join(self: Arc<Self>, inv: Invitation) -> Result<PairWithReply> {
        let inviter = DeviceId::from_bytes(inv.inviter);
        if inviter == self.id {
            bail!("this invitation was made by this device; use it on the device that should join");
        }
        {
            let book = lock(&self.book);
            if book.get(&inviter).is_some() {
                bail!("already paired with {} ({inviter})", inv.inviter_name);
            }
            let others: Vec<String> = book.iter().map(|(_, p)| p.name.clone()).collect();
            if !others.is_empty() {
                bail!(
                    "this device already syncs its folder with {}: a device syncs one folder. \
                     To join another one, unpair those first (`fybrk unpair`), or use another --state dir",
                    others.join(", ")
                );
            }
        }
        if inv.addrs.is_empty() {
            bail!("the invitation lists no address to reach the inviting device");
        }
        let mut last_err = None;
        let mut conn = None;
        for addr in &inv.addrs {
            match self
                .transport
                .connect_timeout(*addr, inviter, DIAL_TIMEOUT)
                .await
            {
                Ok((c, _)) => {
                    conn = Some(c);
                    break;
                }
                Err(e) => {
                    tracing::info!(%addr, "cannot reach the inviter: {e}");
                    last_err = Some(e);
                }
            }
        }
        // Not reachable directly: ask the rendezvous server to introduce us (the inviter is
        // registered there while its invitation is open).
        if conn.is_none() && inv.rendezvous.is_some() {
            if let Some(c) = self.introduce(inviter, false).await {
                conn = Some(c);
            }
        }
        let conn = match (conn, last_err) {
            (Some(c), _) => c,
            (None, Some(fybrk_net::transport::ConnectError::Refused { .. })) => bail!(
                "{} refused the connection: the invitation was already used, has expired on that \
                 device, or was cancelled. Ask for a new one with `fybrk pair`",
                inv.inviter_name
            ),
            (None, e) => bail!(
                "cannot reach {} at {}: {}. Is its daemon running, and reachable from here?",
                inv.inviter_name,
                inv.addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                e.map_or_else(|| "no answer".to_string(), |e| e.to_string())
            ),
        };
        let welcome = tokio::time::timeout(PAIR_TIMEOUT, async {
            let (mut send, mut recv) = conn.open_bi().await?;
            let binding = channel_binding(&conn, PAIR_LABEL, &[])?;
            let mut joiner = JoinerSession::new(&inv, *self.id.as_bytes(), &self.name);
            write_frame(&mut send, &joiner.request(&binding)).await?;
            send.finish()?;
            let reply: Reply = read_frame(&mut recv).await?;
            Ok::<_, anyhow::Error>(joiner.handle_reply(reply)?)
        })
        .await
        .map_err(|_| {
            anyhow!(
                "{} did not answer the join request in time",
                inv.inviter_name
            )
        })?;
        conn.close(CLOSE_SHUTDOWN, b"joined");
        let welcome = welcome?;
        if welcome.folder_id != inv.folder {
            bail!("the inviting device sent another folder than its invitation named; not joining");
        }
        let addr = conn.remote_address();
        let key = FolderKey::from_bytes(welcome.folder_key);
        let sh = self.clone();
        tokio::task::spawn_blocking(move || sh.adopt_folder(&key))
            .await
            .map_err(|e| anyhow!("joining the folder failed: {e}"))??;
        let name = fybrk_pair::sanitize_name(&welcome.inviter_name);
        self.add_peer(inviter, &name, addr);
        tracing::info!(peer = %inviter, %name, "joined the folder");
        Ok(PairWithReply {
            peer: PeerRef {
                id: inviter.to_string(),
                name,
            },
        })
    }

    /// Remembers and trusts a newly paired device, and starts dialling it.
    fn add_peer(self: &Arc<Self>, id: DeviceId, name: &str, addr: SocketAddr) {
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
