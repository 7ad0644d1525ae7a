//! [`DemandHub`]: drives [`Demands`] between the threads that read (FUSE workers, blocked in
//! [`fybrk_store::Remote::fetch`]) and the replication sessions that fetch (async tasks, woken
//! through a watch channel).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fybrk_store::record::ShortId;
use fybrk_store::ChunkId;

use super::{Demands, Outcome};

/// See the module doc. One per daemon, shared by every session and the store.
#[derive(Debug)]
pub struct DemandHub {
    state: Mutex<Demands>,
    /// Signalled whenever a chunk is settled, so waiting reads look again.
    settled: Condvar,
    /// Bumped when there is something new to ask for; each session watches it.
    wake: tokio::sync::watch::Sender<u64>,
}

impl DemandHub {
    /// An empty hub.
    pub fn new() -> Arc<DemandHub> {
        Arc::new(DemandHub {
            state: Mutex::new(Demands::default()),
            settled: Condvar::new(),
            wake: tokio::sync::watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Demands> {
        // Plain data: a panic elsewhere leaves nothing half-done worth refusing.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.wake.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Changes when there may be chunks to ask for: a session calls [`DemandHub::next_for`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// A session with `peer` opened.
    pub fn connected(&self, peer: ShortId) {
        self.lock().connected(peer);
        self.bump();
    }

    /// `peer`'s session ended; what it was asked goes to other peers, or waits a moment for
    /// one to connect.
    pub fn disconnected(&self, peer: ShortId) {
        let mut st = self.lock();
        st.disconnected(peer, Instant::now());
        let more = st.has_unasked();
        drop(st);
        self.settled.notify_all();
        if more {
            self.bump();
        }
    }

    /// Up to `max` chunks for the session with `peer` to ask for.
    pub fn next_for(&self, peer: ShortId, max: usize) -> Vec<ChunkId> {
        self.lock().next_for(peer, max)
    }

    /// Chunk `id` is stored.
    pub fn stored(&self, id: ChunkId) {
        if self.lock().stored(id) {
            self.settled.notify_all();
        }
    }

    /// `peer` could not supply chunk `id`.
    pub fn failed(&self, id: ChunkId, peer: ShortId, why: &str) {
        let mut st = self.lock();
        st.failed(id, peer, why);
        let more = st.has_unasked();
        drop(st);
        self.settled.notify_all();
        if more {
            self.bump();
        }
    }

    /// Waits for chunk `id` (already wanted) to settle; bounded by its deadline.
    fn wait(&self, id: &ChunkId) -> Result<(), String> {
        let mut st = self.lock();
        loop {
            let next = st.handle_timeout(Instant::now());
            match st.outcome(id).cloned() {
                Some(Outcome::Stored) => {
                    st.release(id);
                    return Ok(());
                }
                Some(Outcome::Failed(why)) => {
                    st.release(id);
                    return Err(why);
                }
                None => return Err("no longer wanted".into()),
                Some(Outcome::Pending) => {}
            }
            // `next` is the earliest pending deadline, ours or sooner; a little slack so the
            // deadline has passed when we look again.
            let wait = next.map_or(Duration::from_millis(100), |d| {
                d.saturating_duration_since(Instant::now()) + Duration::from_millis(5)
            });
            st = self
                .settled
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl fybrk_store::Remote for DemandHub {
    fn fetch(&self, id: &ChunkId) -> Result<(), String> {
        self.lock().want(*id, true, Instant::now());
        self.bump();
        self.wait(id)
    }

    fn prefetch(&self, ids: &[ChunkId]) {
        let now = Instant::now();
        let mut st = self.lock();
        for id in ids {
            st.want(*id, false, now);
        }
        drop(st);
        self.bump();
    }
}
