//! Long operations running in the daemon (verify, gc, restore, joining a folder) and how far
//! each is, for `status` (`operations`) and the progress line the CLI draws from it.
//!
//! One registry per process: a daemon serves one folder, and an operation is registered by the
//! thread that runs it and removed when its guard drops, even on an error or a panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use fybrk_control::OperationStatus;

static RUNNING: Mutex<Vec<(u64, OperationStatus)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

fn running() -> std::sync::MutexGuard<'static, Vec<(u64, OperationStatus)>> {
    // Only whole entries are pushed, updated and removed under the lock.
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running operation; dropping it ends it.
pub struct Operation {
    id: u64,
}

/// Registers operation `what` (no progress known yet).
pub fn start(what: &str) -> Operation {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    running().push((
        id,
        OperationStatus {
            what: what.to_owned(),
            done: 0,
            total: 0,
        },
    ));
    Operation { id }
}

impl Operation {
    /// `done` of `total` (0: not known).
    pub fn set(&self, done: u64, total: u64) {
        if let Some((_, op)) = running().iter_mut().find(|(id, _)| *id == self.id) {
            op.done = done;
            op.total = total;
        }
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        running().retain(|(id, _)| *id != self.id);
    }
}

/// The operations running now, oldest first.
pub fn snapshot() -> Vec<OperationStatus> {
    running().iter().map(|(_, op)| op.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_listed_while_they_run() {
        let verify = start("verify-test");
        verify.set(5, 10);
        let mine = |s: Vec<OperationStatus>| {
            s.into_iter()
                .filter(|o| o.what.ends_with("-test"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            mine(snapshot()),
            vec![OperationStatus {
                what: "verify-test".into(),
                done: 5,
                total: 10
            }]
        );
        drop(verify);
        assert!(mine(snapshot()).is_empty());
    }
}
