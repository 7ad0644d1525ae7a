//! Reads on an on-demand device: read-ahead of content held elsewhere, and the files whose
//! content could not be fetched (shown by `fybrk status`).

use std::collections::VecDeque;

use fybrk_store::StoreError;

use super::{lock, now_ns, Fs};
use crate::error::FsError;
use crate::layout::Layout;

/// How far ahead of a sequential read content is fetched: enough to keep a link of a few
/// hundred Mbit/s busy across the round trip of each read.
const READ_AHEAD: u64 = 8 << 20;

/// Files remembered as unreadable: the last ones are what a user needs to see.
const UNREADABLE_KEPT: usize = 32;

/// A file whose content could not be fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// Its path in the folder.
    pub path: String,
    /// When the read failed (ns since the Unix epoch).
    pub at_ns: i64,
    /// Why, as the fetch said.
    pub why: String,
}

impl Fs {
    /// Asks for the content of `[offset, end)` that is held elsewhere before it is read, and,
    /// when the read continues where the last one on this handle ended, for what follows too:
    /// a chunk is then in flight while the one before it is read, and a whole range arrives in
    /// about one round trip instead of one per chunk.
    pub(super) fn read_ahead(&self, base: &Layout, offset: u64, end: u64, sequential: bool) {
        let store = self.store();
        if !store.on_demand() {
            return;
        }
        let until = if sequential {
            end.saturating_add(READ_AHEAD).min(base.len())
        } else {
            end
        };
        let first = base.index_of(offset);
        let ids: Vec<_> = base
            .chunks
            .iter()
            .zip(&base.starts)
            .skip(first)
            .take_while(|(_, &start)| start < until)
            .filter(|(c, _)| !c.is_hole())
            .map(|(c, _)| c.id)
            .collect();
        if let Err(e) = store.prefetch(&ids) {
            tracing::debug!(error = %e, "read-ahead failed");
        }
    }

    /// Logs and remembers a read of `ino` that failed because content could not be fetched.
    pub(super) fn note_unreadable(&self, ino: u64, err: &FsError) {
        let FsError::Store(StoreError::Unavailable { why, .. }) = err else {
            return;
        };
        let path = self.path_of(ino).unwrap_or_else(|_| format!("inode {ino}"));
        tracing::warn!(path = %path, reason = %why, "cannot read a file: its content is on other devices");
        let mut list = lock(&self.unreadable);
        list.retain(|u| u.path != path);
        if list.len() >= UNREADABLE_KEPT {
            list.pop_front();
        }
        list.push_back(Unreadable {
            path,
            at_ns: now_ns(),
            why: why.clone(),
        });
    }

    /// Files whose content could not be fetched lately, oldest first. A later successful read
    /// takes a file off the list.
    pub fn unreadable(&self) -> Vec<Unreadable> {
        lock(&self.unreadable).iter().cloned().collect()
    }

    pub(super) fn note_readable(&self, ino: u64) {
        let mut list = lock(&self.unreadable);
        if list.is_empty() {
            return;
        }
        if let Ok(path) = self.path_of(ino) {
            list.retain(|u| u.path != path);
        }
    }
}

/// The list's type, for the field in [`Fs`].
pub(super) type UnreadableList = VecDeque<Unreadable>;
