//! Pairing, the joining side: dial the inviter, prove the invitation's secret, wait while a
//! person on the inviting device compares the words and decides, then adopt its folder.
//!
//! `pair_with` answers as soon as the outcome or the wait is known, so the CLI can show the
//! words while the inviter's user looks at theirs; the exchange goes on in a task, and
//! `wait_join` follows it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use fybrk_control::{PairWithReply, PeerRef};
use fybrk_net::identity::DeviceId;
use fybrk_net::tls::channel_binding;
use fybrk_net::transport::peer_addr;
use fybrk_net::transport::{ConnectError, CLOSE_SHUTDOWN};
use fybrk_pair::{Invitation, JoinerSession, Reply};
use fybrk_store::FolderKeys;
use tokio::sync::oneshot;

use super::framing::{read_frame, write_frame};
use super::links::DIAL_TIMEOUT;
use super::pairing::{PAIR_LABEL, PAIR_TIMEOUT};
use super::{lock, unix_now, Node, Shared};

/// The longest a joiner waits for the inviter's person: the inviter's own approval window
/// ends the wait sooner (it says how long in `Reply::Pending`); this bounds a broken inviter.
const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(3600);

/// How long `pair-with` keeps trying to reach the inviting device (see `dial_inviter`).
const JOIN_DIAL_FOR: Duration = Duration::from_secs(30);

/// The pause between two rounds of dialling the inviter (a round whose addresses all failed at
/// once, e.g. "network unreachable", must not spin).
const JOIN_DIAL_PAUSE: Duration = Duration::from_millis(500);

/// A join in progress or finished, for `pair_with_wait`.
#[derive(Clone, Debug)]
pub(super) enum JoinState {
    /// The inviter's person is deciding.
    Waiting(PairWithReply),
    /// Joined, or refused (the message says why).
    Done(Result<PairWithReply, String>),
}

impl Node {
    /// Starts joining the folder of the device that made `payload`; answers with the joined
    /// folder, the words to compare while the inviter decides, or why it failed.
    pub fn pair_with(&self, payload: &str) -> Result<PairWithReply> {
        let inv = Invitation::parse(payload, unix_now()).map_err(|e| anyhow!("{e}"))?;
        let sh = self.shared.clone();
        sh.check_can_join(&inv)?;
        let number = sh.next_join.fetch_add(1, Ordering::Relaxed);
        let (first_tx, first_rx) = oneshot::channel();
        let task_sh = sh.clone();
        self.rt.spawn(async move {
            let mut first = Some(first_tx);
            let result = task_sh.clone().join(inv, number, &mut first).await;
            let done = result.map_err(|e| format!("{e:#}"));
            lock(&task_sh.joins).insert(number, JoinState::Done(done.clone()));
            // Not answered yet: the outcome is the answer (an error is read from `joins`, which
            // holds it before the sender is dropped here).
            if let (Some(tx), Ok(reply)) = (first, done) {
                let _ = tx.send(reply);
            }
        });
        // The task answers first with "waiting" or the final outcome.
        match self.rt.block_on(first_rx) {
            Ok(reply) => Ok(reply),
            Err(_) => self.wait_join(number, Duration::ZERO),
        }
    }

    /// Waits up to `wait` for join `number` to finish; [`PairWithReply::Waiting`] while the
    /// inviter's person decides.
    pub fn wait_join(&self, number: u64, wait: Duration) -> Result<PairWithReply> {
        let deadline = Instant::now() + wait;
        loop {
            let state = lock(&self.shared.joins).get(&number).cloned();
            match state {
                None => bail!("no such join in progress (the daemon was restarted?); run `fybrk pair-with` again"),
                Some(JoinState::Done(done)) => {
                    lock(&self.shared.joins).remove(&number);
                    return done.map_err(|e| anyhow!(e));
                }
                Some(JoinState::Waiting(reply)) if Instant::now() >= deadline => return Ok(reply),
                Some(JoinState::Waiting(_)) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Shared {
    /// Refuses invitations this device cannot use: its own, or one for a folder while it
    /// already syncs another.
    fn check_can_join(&self, inv: &Invitation) -> Result<()> {
        let inviter = DeviceId::from_bytes(inv.inviter);
        if inviter == self.id {
            bail!("this invitation was made by this device; use it on the device that should join");
        }
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
        if inv.addrs.is_empty() && inv.rendezvous.is_none() {
            bail!("the invitation lists no address to reach the inviting device");
        }
        Ok(())
    }

    /// Dials the inviter: its addresses, then an introduction through the rendezvous server, in
    /// rounds for up to [`JOIN_DIAL_FOR`] while nothing refused. One round gives each address
    /// one handshake of [`DIAL_TIMEOUT`] (3 s, in which a lost handshake packet is resent once),
    /// so on a lossy network (Wi-Fi, a long path) a single round fails now and then; the next
    /// one usually gets through.
    async fn dial_inviter(self: &Arc<Self>, inv: &Invitation) -> Result<quinn::Connection> {
        let deadline = Instant::now() + JOIN_DIAL_FOR;
        // Nothing to try again when no address fits this socket's family and there is no
        // rendezvous server: that will not change by waiting.
        let can_try = inv.rendezvous.is_some() || inv.addrs.iter().any(|a| self.mux.reaches(*a));
        let mut last_err = None;
        loop {
            if let Some(c) = self.dial_inviter_once(inv, &mut last_err).await {
                return Ok(c);
            }
            let refused = matches!(last_err, Some(ConnectError::Refused { .. }));
            if refused || !can_try || Instant::now() + JOIN_DIAL_PAUSE >= deadline {
                break;
            }
            tracing::info!("the inviting device did not answer yet: trying again");
            tokio::time::sleep(JOIN_DIAL_PAUSE).await;
        }
        match last_err {
            Some(ConnectError::Refused { .. }) => bail!(
                "{} refused the connection: the invitation was already used, has expired or \
                 ended on that device, or was cancelled. Ask for a new one with `fybrk pair`",
                inv.inviter_name
            ),
            e => bail!(
                "cannot reach {} at {}: {}. Is its daemon running, and reachable from here?",
                inv.inviter_name,
                inv.addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                e.map_or_else(|| "no answer".to_string(), |e| e.to_string())
            ),
        }
    }

    /// One round of [`dial_inviter`](Self::dial_inviter); the last failure goes to `last_err`.
    async fn dial_inviter_once(
        self: &Arc<Self>,
        inv: &Invitation,
        last_err: &mut Option<ConnectError>,
    ) -> Option<quinn::Connection> {
        let inviter = DeviceId::from_bytes(inv.inviter);
        for addr in inv.addrs.iter().filter(|a| self.mux.reaches(**a)) {
            match self
                .transport
                .connect_timeout(*addr, inviter, DIAL_TIMEOUT)
                .await
            {
                Ok((c, _)) => return Some(c),
                Err(e) => {
                    tracing::info!(%addr, "cannot reach the inviter: {e}");
                    *last_err = Some(e);
                }
            }
        }
        // Not reachable directly: ask the rendezvous server to introduce us (the inviter is
        // registered there while its invitation is open).
        if inv.rendezvous.is_some() {
            return self.introduce(inviter, false).await;
        }
        None
    }

    /// Joiner side of pairing: the whole exchange, then adopting the folder. Sends the first
    /// answer for `pair_with` on `first` once the inviter's person is asked.
    async fn join(
        self: Arc<Self>,
        inv: Invitation,
        number: u64,
        first: &mut Option<oneshot::Sender<PairWithReply>>,
    ) -> Result<PairWithReply> {
        let inviter = DeviceId::from_bytes(inv.inviter);
        let inviter_ref = PeerRef {
            id: inviter.to_string(),
            name: fybrk_pair::sanitize_name(&inv.inviter_name),
        };
        let conn = self.dial_inviter(&inv).await?;
        let welcome = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            let binding = channel_binding(&conn, PAIR_LABEL, &[])?;
            let mut joiner = JoinerSession::new(&inv, *self.id.as_bytes(), &self.name);
            write_frame(&mut send, &joiner.request(&binding)).await?;
            send.finish()?;
            let mut timeout = PAIR_TIMEOUT;
            loop {
                let reply: Reply = tokio::time::timeout(timeout, read_frame(&mut recv))
                    .await
                    .map_err(|_| {
                        anyhow!("{} did not answer the join request in time", inv.inviter_name)
                    })??;
                if let Reply::Pending { within_secs } = reply {
                    let code = joiner.code().unwrap_or_default();
                    tracing::info!(inviter = %inviter, %code, "waiting for approval on the inviting device");
                    let waiting = PairWithReply::Waiting {
                        waiting: true,
                        join: number,
                        code,
                        inviter: inviter_ref.clone(),
                        deadline_unix: unix_now().saturating_add(within_secs),
                    };
                    lock(&self.joins).insert(number, JoinState::Waiting(waiting.clone()));
                    if let Some(tx) = first.take() {
                        let _ = tx.send(waiting);
                    }
                    // The inviter answers at its deadline at the latest.
                    timeout = Duration::from_secs(within_secs)
                        .saturating_add(PAIR_TIMEOUT)
                        .min(MAX_APPROVAL_WAIT);
                }
                if let Some(welcome) = joiner.handle_reply(reply)? {
                    break Ok::<_, anyhow::Error>(welcome);
                }
            }
        }
        .await;
        conn.close(CLOSE_SHUTDOWN, b"joined");
        let welcome = welcome?;
        if welcome.folder_id != inv.folder {
            bail!("the inviting device sent another folder than its invitation named; not joining");
        }
        let addr = peer_addr(&conn);
        let keys = FolderKeys::shared(welcome.folder_id, welcome.folder_key, &welcome.later_keys);
        let sh = self.clone();
        tokio::task::spawn_blocking(move || sh.adopt_folder(keys))
            .await
            .map_err(|e| anyhow!("joining the folder failed: {e}"))??;
        self.joined_folder();
        let name = fybrk_pair::sanitize_name(&welcome.inviter_name);
        self.add_peer(inviter, &name, addr);
        tracing::info!(peer = %inviter, %name, "joined the folder");
        Ok(PairWithReply::Joined {
            peer: PeerRef {
                id: inviter.to_string(),
                name,
            },
        })
    }
}
