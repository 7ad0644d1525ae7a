//! Pins: chunks that garbage collection must not free yet (a writer's new chunks before their
//! record commits, the chunks of a version an open file still reads).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{lock, Store};
use crate::ChunkId;

impl Store {
    /// Keeps `ids` from being garbage collected while the returned guard lives (for example the
    /// chunks of a version an open file handle still reads).
    pub fn pin(&self, ids: impl IntoIterator<Item = ChunkId>) -> Pins {
        let mut pins = Pins {
            table: self.inner.pins.clone(),
            ids: Vec::new(),
        };
        pins.extend(ids);
        pins
    }
}

/// Pin counts per chunk id; GC never frees a pinned chunk.
#[derive(Default)]
pub(crate) struct PinTable {
    pub(crate) counts: Mutex<HashMap<ChunkId, u32>>,
}

/// A set of pinned chunks, released on drop.
pub struct Pins {
    pub(super) table: Arc<PinTable>,
    pub(super) ids: Vec<ChunkId>,
}

impl Pins {
    /// Pins more chunks under this guard.
    pub fn extend(&mut self, ids: impl IntoIterator<Item = ChunkId>) {
        let mut counts = lock(&self.table.counts);
        // A hole is never stored, so there is nothing to keep.
        for id in ids.into_iter().filter(|id| !id.is_hole()) {
            *counts.entry(id).or_default() += 1;
            self.ids.push(id);
        }
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut counts = lock(&self.table.counts);
        for id in &self.ids {
            if let Some(n) = counts.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(id);
                }
            }
        }
    }
}
