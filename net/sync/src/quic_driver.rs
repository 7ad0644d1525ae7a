//! The async half of a replication driver: one task per peer connection that moves frames
//! between a QUIC stream and a [`Session`], and hands the session's actions to a
//! [`StoreReplica`]. It holds no protocol logic: receive, hand to the core, send what it says.
//!
//! # Wire layout
//!
//! Replication uses one bidirectional stream per connection. The side that dialled
//! (`is_initiator`) opens it; the other accepts it. QUIC announces a stream to the peer only
//! once data is sent on it, which the initiator does at once: the session's `Hello` is queued
//! from the start.
//!
//! # Ending
//!
//! A connection ends cleanly when either side finishes its send half: when `until` says so
//! (tests, or a daemon shutting a folder down) or when the peer finished first. Both halves are
//! then finished and drained, so nothing the peer sent before its end is lost and neither side
//! sees a reset. Everything else ends the run with a [`PeerError`].
//!
//! # Store calls
//!
//! Store work runs inline on the task, not in `block_in_place` or `spawn_blocking`: each call
//! is short (a RocksDB read or one small batch, chunks of at most 256 KiB), `block_in_place`
//! panics on a current-thread runtime, and `spawn_blocking` would need the replica to be moved
//! in and out of a blocking task for every message. One peer's task blocking a worker for a
//! few milliseconds does not stall the others on a multi-thread runtime.

use std::time::{Duration, Instant};

use super::messages::encode_frame_into;
use super::store::ReplicaStore;
use super::store_driver::{DriverError, StoreReplica};
use super::{FrameDecoder, FrameError, Session, SyncError, DEFAULT_MAX_FRAME};

/// Bytes read from the stream at a time: QUIC hands over received data in packets-sized
/// pieces anyway; 64 KiB lets one read take a burst without a large per-connection buffer.
const READ_BUF: usize = 64 << 10;

/// Answers waiting to be written (encoded, or chunk responses still queued in the session) after
/// which we stop reading from the peer. Reading produces answers (chunk responses of up to
/// 256 KiB each); when the peer does not read ours, not reading theirs is the back-pressure that
/// keeps our buffers bounded. What is in flight is QUIC's send buffer, sized to the path by the
/// flow tuner; this queue only has to keep that buffer fed between two wake-ups, so 2 MiB
/// (eight of the largest responses) is enough on any path (8 MiB only raised the sender's peak
/// memory).
const MAX_UNSENT: usize = 2 << 20;

/// Encoded bytes kept ahead of what the stream has taken. The session's queue holds the rest as
/// messages: encoding all of it at once made one buffer of every queued chunk response (a
/// 10 MiB buffer on a sender, the largest allocation of the daemon during a 1 GiB sync).
const ENCODE_AHEAD: usize = 1 << 20;

/// How long to sleep when the session has no timer (it closed): effectively forever.
const NO_TIMER: Duration = Duration::from_secs(3600);

/// How often an on-demand device asks its peer which of the chunks only it is known to hold
/// the peer keeps (so they may be evicted).
const KEEPS_EVERY: Duration = Duration::from_secs(5);

/// Chunks for local reads asked of one peer per wake-up.
const DEMANDS_PER_WAKE: usize = 256;

/// A session registered with the demand hub; unregistered however the run ends.
struct Registered {
    hub: std::sync::Arc<crate::demand::hub::DemandHub>,
    peer: fybrk_store::record::ShortId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.hub.disconnected(self.peer);
    }
}

/// Why a peer connection's replication ended other than cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The connection failed while opening or accepting the sync stream.
    #[error("cannot open the sync stream: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading from the peer failed (connection lost, stream reset).
    #[error("reading from the peer failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing to the peer failed (connection lost, stream stopped).
    #[error("writing to the peer failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// A frame could not be decoded (the peer is broken) or encoded.
    #[error("bad sync frame: {0}")]
    Frame(#[from] FrameError),
    /// The store failed while executing an action.
    #[error(transparent)]
    Store(#[from] DriverError),
    /// The session closed itself (wrong folder, protocol violation, silent peer).
    #[error(transparent)]
    Session(#[from] SyncError),
}

/// Runs replication over `conn` until it ends. See the module doc.
///
/// `session` is a fresh session for this connection ([`Session::new`] with the store's sequence
/// and [`StoreReplica::seen_from`] for the peer). `local` carries the store's sequence after
/// every commit (local writes, and records applied from other peers): each change is passed to
/// [`Session::handle_local_changed`] so it reaches this peer at once. `until` is asked after
/// every step with no bytes left to write (a good place to publish progress); once it returns
/// true the run ends cleanly (pass `|_, _| false` to run until the peer ends or the connection
/// fails). Returns the session so the caller can read its final state (progress, idleness).
#[tracing::instrument(skip_all, fields(remote = %conn.remote_address(), initiator = is_initiator))]
pub async fn run_peer<S: ReplicaStore>(
    conn: quinn::Connection,
    is_initiator: bool,
    mut session: Session,
    replica: &mut StoreReplica<S>,
    mut local: Option<tokio::sync::watch::Receiver<u64>>,
    mut until: impl FnMut(&Session, &StoreReplica<S>) -> bool,
) -> Result<Session, PeerError> {
    let (mut send, mut recv) = if is_initiator {
        conn.open_bi().await?
    } else {
        conn.accept_bi().await?
    };
    // The peer's `Hello` must name the device the TLS handshake authenticated.
    match crate::tls::peer_id(&conn) {
        Some(id) => session.expect_peer(id.short()),
        None => {
            conn.close(crate::transport::CLOSE_SHUTDOWN, b"no peer identity");
            return Err(
                SyncError::Protocol("the connection has no authenticated peer id".into()).into(),
            );
        }
    }
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = vec![0u8; READ_BUF];
    // Encoded frames not yet written, from `written` on.
    let mut out = Vec::new();
    let mut written = 0;
    let mut peer_finished = false;
    // Local reads of content this device does not hold (on-demand) are asked of the peer.
    let mut demand_rx = replica.demands().map(|hub| hub.subscribe());
    let mut registered: Option<Registered> = None;
    let on_demand = replica.store().on_demand();
    // A file being written here is offered to the peer chunk batch by chunk batch.
    let mut fresh = match crate::tls::speaks_offers(&conn) {
        true => replica.fresh().map(|f| f.subscribe()),
        false => None,
    };
    let mut keeps_tick = tokio::time::interval(KEEPS_EVERY);
    keeps_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if registered.is_none() {
            if let (Some(peer), Some(hub)) = (session.peer(), replica.demands()) {
                hub.connected(peer);
                registered = Some(Registered {
                    hub: hub.clone(),
                    peer,
                });
            }
        }
        if written >= ENCODE_AHEAD {
            // The sent prefix goes once it is as large as what is kept ahead: each byte is
            // moved at most once more.
            out.drain(..written);
            written = 0;
        }
        while out.len() - written < ENCODE_AHEAD {
            match session.poll_outgoing() {
                Some(msg) => encode_frame_into(&msg, &mut out, DEFAULT_MAX_FRAME)?,
                None => break,
            }
        }
        if let Some(e) = replica.closed() {
            // Nothing queued on close is worth delivering: the peer learns from the
            // connection close.
            conn.close(crate::transport::CLOSE_SHUTDOWN, b"sync session closed");
            return Err(e.clone().into());
        }
        // Nothing unsent means the session's queue is empty too (the loop above stops early
        // only with ENCODE_AHEAD bytes unsent).
        if written == out.len() {
            out.clear();
            written = 0;
            if peer_finished || until(&session, replica) {
                break;
            }
        }
        let deadline = session
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + NO_TIMER);
        tokio::select! {
            n = send.write(&out[written..]), if written < out.len() => written += n?,
            n = recv.read(&mut buf), if !peer_finished && out.len() - written + session.queued_chunk_bytes() < MAX_UNSENT => {
                match n? {
                    Some(n) => {
                        decoder.push(&buf[..n]);
                        while let Some(msg) = decoder.next_message()? {
                            let now = Instant::now();
                            let actions = session.handle_message(msg, now);
                            replica.run(&mut session, actions, now)?;
                        }
                    }
                    None => {
                        decoder.finish()?;
                        tracing::debug!("peer finished the sync stream");
                        peer_finished = true;
                    }
                }
            }
            Some(()) = demand_changed(&mut demand_rx), if registered.is_some() => {
                if let Some(r) = &registered {
                    for id in r.hub.next_for(r.peer, DEMANDS_PER_WAKE) {
                        session.demand(id);
                    }
                }
            }
            _ = keeps_tick.tick(), if on_demand && registered.is_some() => {
                let ids = replica
                    .store()
                    .only_here(crate::messages::MAX_KEEPS_QUERY)
                    .map_err(|source| DriverError::Store { action: "listing chunks only here", source })?;
                session.ask_keeps(ids);
            }
            ids = next_fresh(&mut fresh) => match ids {
                Some(ids) => session.offer(&ids),
                None => fresh = None,
            },
            changed = changed(&mut local) => match changed {
                Some(seq) => {
                    let actions = session.handle_local_changed(seq);
                    replica.run(&mut session, actions, Instant::now())?;
                }
                // The sender is gone (the daemon is stopping): stop watching.
                None => local = None,
            },
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                let actions = session.handle_timeout(now);
                replica.run(&mut session, actions, now)?;
            }
        }
    }

    // Clean end: finish our half, read the peer's to its end (what it sends now is not
    // needed), and wait until the peer has acknowledged all we sent, so dropping the connection
    // cannot cut off our last frames.
    let _ = send.finish();
    while !peer_finished {
        match recv.read(&mut buf).await {
            Ok(Some(_)) => {}
            Ok(None) => peer_finished = true,
            Err(e) => {
                tracing::debug!(error = %e, "peer stream failed after our end");
                break;
            }
        }
    }
    if let Err(e) = send.stopped().await {
        tracing::debug!(error = %e, "peer did not confirm our end");
    }
    tracing::debug!(peer_seen = session.peer_seen(), "sync stream ended");
    Ok(session)
}

/// The next change of the demand hub's wake counter; pending forever without a hub (and
/// `None`, disabling the arm, once the hub is gone).
async fn demand_changed(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Option<()> {
    match rx {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}

/// The next batch of fresh local chunk ids; pending forever without a feed.
async fn next_fresh(
    fresh: &mut Option<crate::offer::FreshReceiver>,
) -> Option<std::sync::Arc<[fybrk_store::ChunkId]>> {
    match fresh {
        Some(rx) => rx.next().await,
        None => std::future::pending().await,
    }
}

/// The next sequence announced on `local`; `None` once its sender is gone. Pending forever
/// without a receiver, so the `select!` arm stays quiet.
async fn changed(local: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Option<u64> {
    match local {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::sync::Arc;

    use fybrk_store::{FolderKey, Store, StoreOptions};

    use super::*;
    use crate::identity::DeviceKey;
    use crate::test_support::{random, read_file, write_file};
    use crate::tls::AllowList;
    use crate::transport::{Admission, Transport};

    /// Both sessions name the same folder (the store's folder id is random per store).
    const FOLDER: [u8; 16] = *b"fybrk-quic-fold!";

    /// Generous: the transfer takes well under a second on loopback.
    const DEADLINE: Duration = Duration::from_secs(20);

    fn open_store(dir: &tempfile::TempDir, key: &DeviceKey) -> Store {
        Store::open(
            dir.path(),
            &FolderKey::from_bytes([9; 32]),
            StoreOptions {
                cache_bytes: 1 << 20,
                device: Some(key.id().short()),
                folder_id: None,
                cache_budget: None,
            },
        )
        .unwrap()
    }

    fn transport(key: &DeviceKey, peer: &DeviceKey) -> Transport {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let policy = Arc::new(AllowList::with_ids([peer.id()]));
        Transport::bind(socket, key, policy).unwrap()
    }

    fn new_session(replica: &StoreReplica, peer: &DeviceKey) -> Session {
        let store = replica.store();
        let seen = replica.seen_from(peer.id().short());
        Session::new(
            store.device(),
            FOLDER,
            store.sequence(),
            seen,
            Instant::now(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_sync_over_quic_on_loopback() {
        let (key_a, key_b) = (
            DeviceKey::generate().unwrap(),
            DeviceKey::generate().unwrap(),
        );
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store_a = open_store(&dir_a, &key_a);
        let store_b = open_store(&dir_b, &key_b);

        let big = random(1 << 20, 1);
        let rec = write_file(&store_a, "big.bin", &big, 10);
        assert!(rec.chunks.len() > 4, "multi-chunk: {}", rec.chunks.len());
        write_file(&store_a, "small.txt", b"hello over quic", 11);
        let a_seq = store_a.sequence();

        let ta = transport(&key_a, &key_b);
        let tb = transport(&key_b, &key_a);
        let addr_a = ta.local_addr().unwrap();
        let (accepted, connected) = tokio::join!(ta.accept(), tb.connect(addr_a, key_a.id()));
        let accepted = accepted.expect("A accepts");
        let (conn_b, peer_of_b) = connected.expect("B connects");
        assert_eq!(accepted.peer, key_b.id());
        assert_eq!(accepted.admission, Admission::Paired);
        assert_eq!(peer_of_b, key_a.id());

        let mut replica_a = StoreReplica::new(store_a.clone());
        let mut replica_b = StoreReplica::new(store_b.clone());
        let session_a = new_session(&replica_a, &key_b);
        let session_b = new_session(&replica_b, &key_a);

        // A serves until B ends the stream.
        let side_a = tokio::spawn(async move {
            let r = run_peer(
                accepted.connection,
                false,
                session_a,
                &mut replica_a,
                None,
                |_, _| false,
            )
            .await;
            (r, replica_a)
        });
        // B (the dialler) ends once it has applied all of A's log and has nothing in flight.
        let a_short = key_a.id().short();
        let side_b = run_peer(conn_b, true, session_b, &mut replica_b, None, |s, r| {
            s.is_idle() && r.seen_from(a_short) >= a_seq
        });
        let session_b = tokio::time::timeout(DEADLINE, side_b)
            .await
            .expect("B done in time")
            .expect("B ran cleanly");
        let (result_a, replica_a) = tokio::time::timeout(DEADLINE, side_a)
            .await
            .expect("A done in time")
            .unwrap();
        let session_a = result_a.expect("A ran cleanly");

        assert!(session_a.is_idle(), "{session_a:#?}");
        assert!(session_b.is_idle(), "{session_b:#?}");
        assert_eq!(session_b.peer_seen(), a_seq);
        assert_eq!(replica_b.applied(), 2);
        assert!(replica_a.problems().is_empty() && replica_b.problems().is_empty());
        assert_eq!(read_file(&store_b, "big.bin"), big);
        assert_eq!(read_file(&store_b, "small.txt"), b"hello over quic");
        for (name, s) in [("A", &store_a), ("B", &store_b)] {
            let report = s.verify().unwrap();
            assert!(report.is_ok(), "{name}: {:?}", report.problems);
        }

        ta.close();
        tb.close();
    }
}
