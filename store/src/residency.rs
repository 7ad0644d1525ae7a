//! Which chunks an on-demand device holds, in order of last use, and how far over its budget
//! it is: the policy half of eviction (no database, no clock; `Store::evict` drives it).
//!
//! Time is a use counter, not the clock: "least recently used" only needs an order, and a
//! counter cannot jump. The order is kept in memory only; after a restart every chunk counts
//! as used at start, in key order, until it is used again.

use std::collections::{BTreeMap, HashMap};

use crate::ChunkId;

/// The resident chunks of an on-demand store, least recently used first.
#[derive(Debug, Default)]
pub(crate) struct Residency {
    budget: u64,
    used: u64,
    tick: u64,
    by_id: HashMap<ChunkId, (u64, u32)>,
    order: BTreeMap<u64, ChunkId>,
}

impl Residency {
    /// An empty set with `budget` bytes to hold.
    pub fn new(budget: u64) -> Residency {
        Residency {
            budget,
            ..Residency::default()
        }
    }

    /// The budget in bytes (sealed chunk bytes).
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes of the chunks held.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes above the budget (0 within it).
    pub fn over(&self) -> u64 {
        self.used.saturating_sub(self.budget)
    }

    /// How many bytes an eviction pass should free to get back under the budget with some
    /// room: down to 15/16 of it, so the next few writes or reads do not each start a pass.
    pub fn to_free(&self) -> u64 {
        if self.used <= self.budget {
            return 0;
        }
        self.used - self.budget / 16 * 15
    }

    /// Chunk `id` of `bytes` is held now; it counts as just used.
    pub fn insert(&mut self, id: ChunkId, bytes: u32) {
        self.tick += 1;
        if let Some((old_tick, old_bytes)) = self.by_id.insert(id, (self.tick, bytes)) {
            self.order.remove(&old_tick);
            self.used -= u64::from(old_bytes);
        }
        self.order.insert(self.tick, id);
        self.used += u64::from(bytes);
    }

    /// Chunk `id` was read: it becomes the most recently used. Unknown ids are ignored.
    pub fn touch(&mut self, id: &ChunkId) {
        if let Some(&(_, bytes)) = self.by_id.get(id) {
            self.insert(*id, bytes);
        }
    }

    /// Chunk `id` is no longer held (evicted or freed).
    pub fn remove(&mut self, id: &ChunkId) {
        if let Some((tick, bytes)) = self.by_id.remove(id) {
            self.order.remove(&tick);
            self.used -= u64::from(bytes);
        }
    }

    /// Up to `n` chunks, least recently used first.
    pub fn oldest(&self, n: usize) -> Vec<ChunkId> {
        self.order.values().take(n).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[test]
    fn the_least_recently_used_comes_first_and_bytes_add_up() {
        let mut r = Residency::new(100);
        for n in 1..=4 {
            r.insert(id(n), 30);
        }
        assert_eq!(r.used(), 120);
        assert_eq!(r.over(), 20);
        assert_eq!(r.oldest(2), vec![id(1), id(2)]);
        r.touch(&id(1));
        assert_eq!(r.oldest(4), vec![id(2), id(3), id(4), id(1)]);
        r.remove(&id(2));
        assert_eq!(r.used(), 90);
        assert_eq!(r.over(), 0);
        assert_eq!(r.to_free(), 0);
        // Inserting a chunk again replaces its size instead of counting it twice.
        r.insert(id(3), 50);
        assert_eq!(r.used(), 110);
        assert_eq!(r.oldest(usize::MAX).len(), 3);
        assert_eq!(r.to_free(), 110 - 90, "down to 15/16 of the budget");
        r.touch(&id(9));
        assert_eq!(
            r.oldest(usize::MAX).len(),
            3,
            "touching an unknown chunk adds nothing"
        );
    }

    proptest::proptest! {
        /// Whatever happens, `used` is the sum of what is held and the order lists each once.
        #[test]
        fn used_is_always_the_sum(ops in proptest::collection::vec((0u8..3, 0u8..8, 1u32..1000), 0..200)) {
            let mut r = Residency::new(2000);
            let mut model: HashMap<ChunkId, u32> = HashMap::new();
            for (op, n, bytes) in ops {
                match op {
                    0 => { r.insert(id(n), bytes); model.insert(id(n), bytes); }
                    1 => r.touch(&id(n)),
                    _ => { r.remove(&id(n)); model.remove(&id(n)); }
                }
                let sum: u64 = model.values().map(|&b| u64::from(b)).sum();
                proptest::prop_assert_eq!(r.used(), sum);
                let mut listed = r.oldest(usize::MAX);
                listed.sort_by_key(|c| c.0);
                let mut held: Vec<ChunkId> = model.keys().copied().collect();
                held.sort_by_key(|c| c.0);
                proptest::prop_assert_eq!(listed, held);
            }
        }
    }
}
