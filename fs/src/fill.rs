//! Page fill: after a small random read decrypted a whole chunk, the rest of that chunk goes
//! into the kernel's page cache too (FUSE's `NOTIFY_STORE`), so the next reads of it cost no
//! round trip, no decryption and no copy out of the store. A 4 KiB read of a 64 KiB chunk used
//! to decrypt and authenticate all 64 KiB every time; now a chunk is opened once while the
//! kernel keeps its pages. Sequential reads need none of this: the kernel's read-ahead asks
//! for whole chunks anyway.
//!
//! What must never happen is stale content in the kernel's cache. A push is a write into the
//! page cache that races with everything else that changes the file, so [`FillGate`] decides
//! what may go, and the pusher asks it right before each push:
//!
//! - A read takes a ticket ([`FillGate::ticket`]) before it looks at the content, and only
//!   when no handle is open for writing on the inode (writes go through the kernel's cache
//!   themselves; a push could land between a write's copy into the cache and its request).
//! - Opening for writing, a truncation by path, a peer's change and a store swap mark the
//!   inode (or everything) changed. A ticket older than the inode's last change is refused.
//! - A push already under way when a change is marked must land before the kernel hears of
//!   the change: the change's reply waits for it ([`PageFill::when_settled`]); then the kernel
//!   drops or truncates those pages itself, as after any change it is told of.
//!
//! Why the reply waits and not the thread: a push can block on a page the kernel locked for a
//! read that is queued for a FUSE worker. Had workers blocked on pushes (a `create` waiting
//! on one), all four could, and that read would never be served. So no worker ever waits on
//! the pusher: a change's reply is handed to the pusher to send once the push is done.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Pushes waiting for the pusher thread; more are dropped (a fill is an optimisation). Each
/// holds a chunk the decrypted-chunk cache shares, at most 256 KiB: 4 MiB at worst.
pub const QUEUE: usize = 16;

/// Inodes the gate tracks before it forgets those without writers (see [`FillGate::forget`]).
const TRACKED: usize = 4096;

/// The kernel's page size, the unit it caches: pushes cover whole pages only (a partial page
/// is not marked up to date, so it would cost a copy for nothing).
const PAGE: u64 = 4096;

/// One push: bytes `data[from..from + len]` of a chunk, at file offset `offset` of `ino`.
pub struct Job {
    pub ino: u64,
    pub ticket: u64,
    pub offset: u64,
    pub data: Arc<[u8]>,
    pub from: usize,
    pub len: usize,
}

impl Job {
    /// The bytes to push.
    pub fn bytes(&self) -> &[u8] {
        self.data
            .get(self.from..self.from + self.len)
            .unwrap_or(&[])
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Ticket number of the last change.
    changed: u64,
    /// Handles open for writing.
    writers: u32,
}

/// Which pushes may still go to the kernel: a state machine, no I/O (see the module doc).
#[derive(Debug, Default)]
pub struct FillGate {
    /// The last ticket or change number handed out.
    seq: u64,
    /// Tickets at or below this are refused: everything changed then (a store swap), or the
    /// gate forgot inodes it tracked.
    floor: u64,
    inodes: HashMap<u64, Entry>,
}

impl FillGate {
    /// A ticket for a read of `ino` about to look at its content; `None` while a handle is
    /// open for writing on it.
    pub fn ticket(&mut self, ino: u64) -> Option<u64> {
        if self.inodes.get(&ino).is_some_and(|e| e.writers > 0) {
            return None;
        }
        self.seq += 1;
        Some(self.seq)
    }

    /// The content of `ino` changed (or may have).
    pub fn changed(&mut self, ino: u64) {
        self.seq += 1;
        let seq = self.seq;
        self.inodes.entry(ino).or_default().changed = seq;
        if self.inodes.len() > TRACKED {
            self.forget();
        }
    }

    /// Every inode's content may have changed.
    pub fn all_changed(&mut self) {
        self.forget();
    }

    /// A handle for writing on `ino` opened: no pushes until it closes.
    pub fn writer_opened(&mut self, ino: u64) {
        // Counted first, so the table's bound never forgets it.
        self.inodes.entry(ino).or_default().writers += 1;
        self.changed(ino);
    }

    /// A handle for writing on `ino` closed (after committing what it wrote).
    pub fn writer_closed(&mut self, ino: u64) {
        if let Some(e) = self.inodes.get_mut(&ino) {
            e.writers = e.writers.saturating_sub(1);
        }
        self.changed(ino);
    }

    /// Whether a push of `ino`'s content read under `ticket` may go to the kernel now.
    pub fn may_push(&self, ino: u64, ticket: u64) -> bool {
        ticket > self.floor
            && self
                .inodes
                .get(&ino)
                .is_none_or(|e| e.writers == 0 && e.changed < ticket)
    }

    /// Bounds the table: refuses every ticket handed out so far and forgets the inodes without
    /// writers (their changes are then older than any ticket still accepted).
    fn forget(&mut self) {
        self.seq += 1;
        self.floor = self.seq;
        self.inodes.retain(|_, e| e.writers > 0);
    }
}

/// Something to do once a push has landed: a change's reply to the kernel.
pub type AfterPush = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    gate: FillGate,
    /// The inode a push is under way for.
    busy: Option<u64>,
    /// Run when that push has landed.
    after: Vec<AfterPush>,
}

/// The page fill of one mount: the gate, the push under way, and the queue to the pusher.
#[derive(Default)]
pub struct PageFill {
    state: Mutex<State>,
    /// Signalled when a push has landed.
    landed: Condvar,
    /// `None` until a pusher runs (never without a mount, e.g. in unit tests).
    queue: Mutex<Option<SyncSender<Job>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data updated in single steps: a panic elsewhere leaves nothing half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PageFill {
    /// Starts taking pushes; the pusher receives them on the returned end.
    pub fn start(&self) -> Receiver<Job> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        *lock(&self.queue) = Some(tx);
        rx
    }

    /// See [`FillGate::ticket`]; `None` too when no pusher runs.
    pub fn ticket(&self, ino: u64) -> Option<u64> {
        if lock(&self.queue).is_none() {
            return None;
        }
        lock(&self.state).gate.ticket(ino)
    }

    /// Queues the whole pages of chunk `data`, which starts at file offset `start` of `ino`
    /// and was read under `ticket`; `file_len` is the content's length (its last page may be
    /// partial). Dropped when the queue is full.
    pub fn offer(&self, ino: u64, ticket: u64, start: u64, data: Arc<[u8]>, file_len: u64) {
        let end = start + data.len() as u64;
        let first = start.div_ceil(PAGE) * PAGE;
        let last = match end == file_len {
            true => end,
            false => end / PAGE * PAGE,
        };
        if first >= last {
            return;
        }
        let job = Job {
            ino,
            ticket,
            offset: first,
            from: (first - start) as usize,
            len: (last - first) as usize,
            data,
        };
        if let Some(tx) = lock(&self.queue).as_ref() {
            match tx.try_send(job) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => {
                    tracing::debug!("page fill stopped");
                }
            }
        }
    }

    /// Runs `push` for `job` if the gate lets it; then whatever waited for it.
    pub fn push(&self, job: &Job, push: impl FnOnce(&Job)) {
        {
            let mut st = lock(&self.state);
            if !st.gate.may_push(job.ino, job.ticket) {
                return;
            }
            st.busy = Some(job.ino);
        }
        push(job);
        let after = {
            let mut st = lock(&self.state);
            st.busy = None;
            std::mem::take(&mut st.after)
        };
        self.landed.notify_all();
        for f in after {
            f();
        }
    }

    /// Runs `f` (a change's reply) now, or after the push under way for `ino` has landed.
    /// Never blocks.
    pub fn when_settled(&self, ino: u64, f: AfterPush) {
        {
            let mut st = lock(&self.state);
            if st.busy == Some(ino) {
                st.after.push(f);
                return;
            }
        }
        f();
    }

    /// Blocks until no push for any of `inos` is under way (`None`: for any inode). Not for
    /// FUSE workers (see the module doc).
    pub fn wait_settled(&self, inos: Option<&[u64]>) {
        let mut st = lock(&self.state);
        while st
            .busy
            .is_some_and(|b| inos.is_none_or(|set| set.contains(&b)))
        {
            st = self.landed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The content of `ino` changed (see [`PageFill::when_settled`] for its reply).
    pub fn changed(&self, ino: u64) {
        lock(&self.state).gate.changed(ino);
    }

    /// Every inode's content may have changed.
    pub fn all_changed(&self) {
        lock(&self.state).gate.all_changed();
    }

    /// A handle for writing on `ino` is about to open.
    pub fn writer_opened(&self, ino: u64) {
        lock(&self.state).gate.writer_opened(ino);
    }

    /// A handle for writing on `ino` closed.
    pub fn writer_closed(&self, ino: u64) {
        lock(&self.state).gate.writer_closed(ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_read_before_a_change_is_refused() {
        let mut g = FillGate::default();
        let t = g.ticket(7).unwrap();
        assert!(g.may_push(7, t));
        g.changed(7);
        assert!(!g.may_push(7, t), "content read before the change");
        let t2 = g.ticket(7).unwrap();
        assert!(g.may_push(7, t2));
        assert!(g.may_push(8, t), "other inodes are not affected");
    }

    #[test]
    fn no_tickets_and_no_pushes_while_a_writer_is_open() {
        let mut g = FillGate::default();
        let before = g.ticket(3).unwrap();
        g.writer_opened(3);
        assert_eq!(g.ticket(3), None);
        assert!(!g.may_push(3, before));
        g.writer_opened(3);
        g.writer_closed(3);
        assert_eq!(g.ticket(3), None, "one writer still open");
        g.writer_closed(3);
        let after = g.ticket(3).unwrap();
        assert!(g.may_push(3, after));
        assert!(
            !g.may_push(3, before),
            "read before the writes were committed"
        );
    }

    #[test]
    fn everything_changed_refuses_every_earlier_ticket() {
        let mut g = FillGate::default();
        let a = g.ticket(1).unwrap();
        let b = g.ticket(2).unwrap();
        g.all_changed();
        assert!(!g.may_push(1, a) && !g.may_push(2, b));
        let c = g.ticket(1).unwrap();
        assert!(g.may_push(1, c));
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_safely() {
        let mut g = FillGate::default();
        g.writer_opened(1);
        let old = g.ticket(5).unwrap();
        for ino in 10..10 + TRACKED as u64 + 10 {
            g.changed(ino);
        }
        assert!(g.inodes.len() <= TRACKED);
        assert!(!g.may_push(5, old), "a ticket from before the forgetting");
        assert_eq!(g.ticket(1), None, "writers are never forgotten");
        let t = g.ticket(10).unwrap();
        assert!(g.may_push(10, t));
    }

    #[test]
    fn a_reply_waits_for_the_push_under_way_of_its_inode_only() {
        let fill = Arc::new(PageFill::default());
        let _rx = fill.start();
        let t = fill.ticket(1).unwrap();
        let job = Job {
            ino: 1,
            ticket: t,
            offset: 0,
            data: Arc::from(&[0u8; 4096][..]),
            from: 0,
            len: 4096,
        };
        let (in_push, go) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let sent = Arc::new(Mutex::new(Vec::new()));
        let pusher = {
            let (fill, in_push, go) = (fill.clone(), in_push.0, go.1);
            std::thread::spawn(move || {
                fill.push(&job, |_| {
                    in_push.send(()).unwrap();
                    go.recv().unwrap();
                })
            })
        };
        in_push.1.recv().unwrap();
        // A change of inode 1 while its push is under way: the reply waits; inode 2's does not.
        fill.changed(1);
        for ino in [1, 2] {
            let sent = sent.clone();
            fill.when_settled(ino, Box::new(move || lock(&sent).push(ino)));
        }
        assert_eq!(*lock(&sent), vec![2]);
        go.0.send(()).unwrap();
        pusher.join().unwrap();
        assert_eq!(*lock(&sent), vec![2, 1], "sent once the push landed");
        fill.wait_settled(None);
        fill.when_settled(1, Box::new(|| {}));
    }

    #[test]
    fn offers_cover_whole_pages_only() {
        let fill = PageFill::default();
        let rx = fill.start();
        let chunk: Arc<[u8]> = (0..20_000u32).map(|i| i as u8).collect();
        // A chunk from 1000 to 21000 in a longer file: pages 4096..20480.
        fill.offer(1, 1, 1000, chunk.clone(), 1 << 20);
        let j = rx.try_recv().unwrap();
        assert_eq!((j.offset, j.from, j.len), (4096, 3096, 16384));
        assert_eq!(j.bytes()[0], chunk[3096]);
        // The file's last chunk: its partial last page too.
        fill.offer(1, 1, 1000, chunk.clone(), 21_000);
        let j = rx.try_recv().unwrap();
        assert_eq!((j.offset, j.len), (4096, 21_000 - 4096));
        // A chunk inside one page: nothing.
        fill.offer(1, 1, 4100, Arc::from(&[1u8; 100][..]), 1 << 20);
        assert!(rx.try_recv().is_err());
        // A full queue drops, never blocks.
        for _ in 0..QUEUE + 5 {
            fill.offer(1, 1, 0, chunk.clone(), 1 << 20);
        }
        assert_eq!(rx.try_iter().count(), QUEUE);
    }
}
