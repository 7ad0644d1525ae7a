//! The connection to each paired device: dialling with backoff, taking incoming connections,
//! settling simultaneous dials, moving off a relay, and replicating over a link until it ends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use fybrk_net::identity::DeviceId;
use fybrk_net::sync::quic_driver::run_peer;
use fybrk_net::sync::store_driver::StoreReplica;
use fybrk_net::sync::Session;
use fybrk_net::transport::peer_addr;
use fybrk_net::transport::{Admission, CLOSE_NOT_PAIRED};
use tokio::sync::Notify;

use super::pairing::PAIR_TIMEOUT;
use super::policy::{admit, is_preferred, Admit, LinkInfo, LinkPolicy, Step};
use super::{lock, unix_now, Shared};

/// How long one dial of one address may take: a QUIC handshake takes one or two round trips,
/// so 3 s leaves room for loss and still moves on quickly to the next way in.
pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// Application close code: a second connection to a peer that already has one.
const CLOSE_DUPLICATE: quinn::VarInt = quinn::VarInt::from_u32(2);

/// Sleeps until `until` (a `std` instant, as the policies take).
async fn sleep_until(until: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
}

/// Throughput samples kept per link: the rate shown is over the last this-many seconds.
const RATE_WINDOW: usize = 5;

/// One live connection to a peer.
pub(super) struct Link {
    /// Tells this link from a later one to the same peer.
    generation: u64,
    pub(super) conn: quinn::Connection,
    /// Dialled by the device with the smaller id: the one both sides keep.
    preferred: bool,
    pub(super) since: Instant,
    /// Records (and their bytes) announced by the peer and not applied yet.
    pub(super) pending: (u64, u64),
    /// Nothing in flight either way.
    pub(super) idle: bool,
    /// Offered chunks received before their record (see `StoreReplica::early_chunks`).
    pub(super) early_chunks: u64,
    /// UDP bytes in + out, sampled every second (the last few), for the current throughput.
    pub(super) samples: std::collections::VecDeque<(Instant, u64)>,
    /// Through a TURN relay (ours or the peer's).
    pub(super) relayed: bool,
    /// Sizes the connection's flow-control windows to what the path carries.
    flow: fybrk_net::flow::FlowTuner,
}

impl Link {
    /// What the link policy needs to know of this link.
    fn info(&self) -> LinkInfo {
        LinkInfo {
            generation: self.generation,
            since: self.since,
            preferred: self.preferred,
            relayed: self.relayed,
        }
    }
}

impl Shared {
    /// Takes every incoming connection: a paired device's joins its link, an unknown
    /// device's (let in by an open invitation) runs the pairing exchange.
    pub(super) async fn accept_loop(self: Arc<Self>) {
        while let Some(acc) = self.transport.accept().await {
            let sh = self.clone();
            tokio::spawn(async move {
                match acc.admission {
                    Admission::Paired => sh.attach(acc.peer, acc.connection, false),
                    Admission::PairingOnly => {
                        let conn = acc.connection.clone();
                        let r = tokio::time::timeout(
                            PAIR_TIMEOUT,
                            sh.serve_join(acc.connection, acc.peer),
                        )
                        .await;
                        let err = match r {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e),
                            Err(_) => Some(anyhow!("the joining device went silent")),
                        };
                        if let Some(e) = err {
                            tracing::warn!(peer = %acc.peer, addr = %peer_addr(&conn), "pairing failed: {e:#}");
                            conn.close(CLOSE_NOT_PAIRED, b"pairing failed");
                        }
                    }
                }
            });
        }
    }

    /// Saves `peers.json`. Progress there may only name records that are durable: the book
    /// stays locked (no progress can be added) while the store is synced, then it is written.
    pub(super) fn persist(&self) -> Result<()> {
        let mut book = lock(&self.book);
        if book.is_dirty() {
            self.fs.store().sync()?;
            book.save()?;
        }
        Ok(())
    }

    /// Starts the dialler of `peer`; a dialler already running for it stops.
    pub(super) fn start_dialer(self: &Arc<Self>, peer: DeviceId) {
        let wake = Arc::new(Notify::new());
        if let Some(old) = lock(&self.dialers).insert(peer, wake.clone()) {
            old.notify_one();
        }
        tokio::spawn(self.clone().dial_loop(peer, wake));
    }

    /// Keeps one connection to `peer` up while it is paired: drives the peer's [`LinkPolicy`]
    /// (dial, back off, wait on the link, look for a direct path off a relay).
    async fn dial_loop(self: Arc<Self>, peer: DeviceId, wake: Arc<Notify>) {
        let mut policy = LinkPolicy::new();
        loop {
            let current = lock(&self.dialers)
                .get(&peer)
                .is_some_and(|w| Arc::ptr_eq(w, &wake));
            if !current || !self.allow.contains(&peer) {
                return;
            }
            let link = lock(&self.links).get(&peer).map(Link::info);
            let can_upgrade = self.rendezvous.is_some() && self.mux.relay_all().is_none();
            match policy.poll(Instant::now(), link, can_upgrade) {
                Step::Dial => match self.dial(peer).await {
                    Some(conn) => self.attach(peer, conn, true),
                    None => policy.handle_dial_failed(Instant::now(), &mut rand::thread_rng()),
                },
                Step::Backoff { until } => {
                    tokio::select! {
                        () = sleep_until(until) => policy.handle_timeout(Instant::now()),
                        () = wake.notified() => policy.handle_wake(Instant::now()),
                    }
                }
                Step::WaitOnLink { until } => {
                    let notified = wake.notified();
                    // Re-check after registering: the link may have ended in between.
                    if !lock(&self.links).contains_key(&peer) {
                        policy.handle_wake(Instant::now());
                        continue;
                    }
                    match until {
                        Some(until) => tokio::select! {
                            () = notified => policy.handle_wake(Instant::now()),
                            () = sleep_until(until) => policy.handle_timeout(Instant::now()),
                        },
                        None => {
                            notified.await;
                            policy.handle_wake(Instant::now());
                        }
                    }
                }
                Step::MoveOffRelay => self.move_off_relay(peer).await,
            }
        }
    }

    /// Looks for a direct path to `peer`, linked through a relay; a new connection over it
    /// replaces the relayed one on both sides.
    async fn move_off_relay(self: &Arc<Self>, peer: DeviceId) {
        if let Some(conn) = self.introduce(peer, true).await {
            tracing::info!(peer = %peer.abbrev(), addr = %peer_addr(&conn), "moving off the relay");
            self.attach(peer, conn, true);
        }
    }

    /// One attempt to reach `peer`: its remembered addresses, then an introduction.
    async fn dial(&self, peer: DeviceId) -> Option<quinn::Connection> {
        let addrs = lock(&self.book)
            .get(&peer)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        // Most recently seen first, whatever the family (the address that worked last is the
        // likeliest to work now); an IPv4-only socket skips the IPv6 ones.
        for addr in addrs.into_iter().filter(|a| self.mux.reaches(*a)) {
            match self
                .transport
                .connect_timeout(addr, peer, DIAL_TIMEOUT)
                .await
            {
                Ok((conn, _)) => return Some(conn),
                Err(e) => tracing::debug!(peer = %peer.abbrev(), %addr, "dial failed: {e}"),
            }
        }
        self.introduce(peer, false).await
    }

    /// Our public address changed (a new NAT mapping, a new network): a link may be dead
    /// without either side knowing until QUIC's idle timeout, since a quinn client drops
    /// datagrams from a new server address and the peer's router may not let the new address
    /// in. So every connected peer is dialled again at once; a new connection replaces the old
    /// one on both sides (replication resumes from the persisted progress).
    pub(super) async fn follow_network(self: Arc<Self>, changed: Arc<Notify>) {
        loop {
            changed.notified().await;
            let peers: Vec<DeviceId> = lock(&self.links).keys().copied().collect();
            tracing::info!(
                peers = peers.len(),
                "our public address changed: reconnecting"
            );
            for peer in peers {
                let sh = self.clone();
                tokio::spawn(async move {
                    if let Some(conn) = sh.dial(peer).await {
                        sh.attach(peer, conn, true);
                    }
                });
            }
        }
    }

    /// Asks the rendezvous server to introduce `peer` (both sides probe each other's
    /// candidates at once: LAN, public and relayed addresses), then dials the best path that
    /// answered. `None` without a server, if the peer is not registered, if no path answered,
    /// or, with `direct_only`, if only a relayed one did.
    pub(super) async fn introduce(
        &self,
        peer: DeviceId,
        direct_only: bool,
    ) -> Option<quinn::Connection> {
        let handle = self.rendezvous.as_ref()?;
        let path = match handle.connect(peer).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(peer = %peer.abbrev(), "no introduction: {e}");
                return None;
            }
        };
        let relayed =
            path.kind == fybrk_net::rendezvous::CandidateKind::Relay || self.is_relayed(path.addr);
        if direct_only && relayed {
            tracing::debug!(peer = %peer.abbrev(), "still no direct path");
            return None;
        }
        tracing::info!(peer = %peer.abbrev(), addr = %path.addr, kind = ?path.kind, relayed, "path found");
        match self
            .transport
            .connect_timeout(path.addr, peer, DIAL_TIMEOUT)
            .await
        {
            Ok((conn, _)) => Some(conn),
            Err(e) => {
                tracing::info!(peer = %peer.abbrev(), addr = %path.addr, "dial after punching failed: {e}");
                None
            }
        }
    }

    /// Whether traffic to `addr` goes through a TURN relay: ours (a route in the mux; while
    /// relaying everything, every public address we sent to has one) or the peer's (its
    /// relayed address).
    pub(super) fn is_relayed(&self, addr: SocketAddr) -> bool {
        self.mux.relay_route(addr).is_some() || lock(&self.peer_relays).contains(&addr)
    }

    /// Takes a new connection to `peer`, or drops it if a preferred one is already up.
    pub(super) fn attach(
        self: &Arc<Self>,
        peer: DeviceId,
        conn: quinn::Connection,
        initiator: bool,
    ) {
        let preferred = is_preferred(&self.id, &peer, initiator);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let relayed = self.is_relayed(peer_addr(&conn));
        {
            let mut links = lock(&self.links);
            // Checked under the links lock: `unpair` removes the id first, then the link.
            if !self.allow.contains(&peer) {
                // Unpaired while this connection was being set up (a dial in flight).
                conn.close(CLOSE_NOT_PAIRED, b"not paired");
                return;
            }
            let existing = links.get(&peer);
            match admit(existing.map(Link::info).as_ref(), preferred, Instant::now()) {
                Admit::First => {}
                Admit::Duplicate => {
                    conn.close(CLOSE_DUPLICATE, b"duplicate connection");
                    return;
                }
                Admit::Replace => {
                    if let Some(existing) = existing {
                        existing
                            .conn
                            .close(CLOSE_DUPLICATE, b"replaced by a newer connection");
                    }
                }
            }
            links.insert(
                peer,
                Link {
                    generation,
                    conn: conn.clone(),
                    preferred,
                    since: Instant::now(),
                    pending: (0, 0),
                    early_chunks: 0,
                    idle: false,
                    samples: std::collections::VecDeque::new(),
                    flow: fybrk_net::flow::FlowTuner::new(),
                    relayed,
                },
            );
        }
        lock(&self.book).update(&peer, |p| {
            // A relayed address is reached through a channel made for one introduction; the
            // next time the rendezvous server hands it out again.
            if !relayed {
                p.remember_addr(peer_addr(&conn));
            }
            p.last_seen_unix = Some(unix_now());
        });
        *lock(&self.connects).entry(peer).or_insert(0) += 1;
        tracing::info!(peer = %peer.abbrev(), addr = %peer_addr(&conn), initiator, "connected");
        self.start_member_exchange(peer, conn.clone());
        tokio::spawn(self.clone().run_link(peer, conn, initiator, generation));
    }

    /// Replicates over one connection until it ends.
    async fn run_link(
        self: Arc<Self>,
        peer: DeviceId,
        conn: quinn::Connection,
        initiator: bool,
        generation: u64,
    ) {
        // Subscribe before reading the sequence: a commit in between is then announced.
        let local = self.local_seq.subscribe();
        let store = self.fs.store();
        let short = peer.short();
        let seen = lock(&self.book).get(&peer).map_or(0, |p| p.seen);
        let mut replica = StoreReplica::new(store.clone());
        replica.set_seen(short, seen);
        replica.set_demands(self.demands.clone());
        replica.set_fresh(self.fresh.clone());
        // `persist` syncs the store before it writes progress.
        replica.defer_sync();
        let session = Session::new(
            store.device(),
            store.folder_id(),
            store.sequence(),
            seen,
            Instant::now(),
        );
        let mut saved = seen;
        let sh = self.clone();
        let result = run_peer(
            conn.clone(),
            initiator,
            session,
            &mut replica,
            Some(local),
            |s, r| {
                if let Some(link) = lock(&sh.links).get_mut(&peer) {
                    if link.generation == generation {
                        link.pending = s.pending();
                        link.idle = s.is_idle();
                        link.early_chunks = r.early_chunks();
                    }
                }
                let now_seen = r.seen_from(short);
                if now_seen != saved {
                    saved = now_seen;
                    lock(&sh.book).update(&peer, |p| p.seen = now_seen);
                }
                false
            },
        )
        .await;
        let seen = replica.seen_from(short);
        lock(&self.book).update(&peer, |p| {
            p.seen = p.seen.max(seen);
            p.last_seen_unix = Some(unix_now());
        });
        {
            let mut links = lock(&self.links);
            if links.get(&peer).is_some_and(|l| l.generation == generation) {
                links.remove(&peer);
            }
        }
        match result {
            Ok(_) => tracing::info!(peer = %peer.abbrev(), "disconnected"),
            Err(e) => tracing::info!(peer = %peer.abbrev(), "disconnected: {e}"),
        }
        for p in replica.problems() {
            tracing::warn!(peer = %peer.abbrev(), problem = ?p, "sync problem");
        }
        if let Some(wake) = lock(&self.dialers).get(&peer) {
            wake.notify_one();
        }
    }

    /// Adds a throughput sample to every link and retunes its flow-control windows (once a
    /// second, from the housekeeping task).
    pub(super) fn sample_links(&self) {
        let now = Instant::now();
        for link in lock(&self.links).values_mut() {
            let st = link.conn.stats();
            link.samples
                .push_back((now, st.udp_rx.bytes + st.udp_tx.bytes));
            while link.samples.len() > RATE_WINDOW {
                link.samples.pop_front();
            }
            let tuned = link
                .flow
                .sample(now, st.udp_rx.bytes, st.udp_tx.bytes, st.path.rtt);
            if let Some(w) = tuned {
                tracing::debug!(receive = w.receive, send = w.send, rtt = ?st.path.rtt, "flow windows retuned");
                link.conn
                    .set_receive_window(fybrk_net::flow::varint(w.receive));
                link.conn.set_send_window(w.send);
            }
        }
    }
}
