//! A byte-bounded LRU of decrypted chunks.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::ChunkId;

pub(crate) struct ChunkCache {
    inner: Mutex<Lru>,
}

struct Lru {
    map: LruCache<ChunkId, Arc<[u8]>>,
    bytes: usize,
    budget: usize,
}

impl ChunkCache {
    pub fn new(budget: usize) -> ChunkCache {
        ChunkCache {
            inner: Mutex::new(Lru {
                map: LruCache::unbounded(),
                bytes: 0,
                budget,
            }),
        }
    }

    pub fn get(&self, id: &ChunkId) -> Option<Arc<[u8]>> {
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        lru.map.get(id).cloned()
    }

    pub fn insert(&self, id: ChunkId, data: Arc<[u8]>) {
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if data.len() > lru.budget {
            return;
        }
        lru.bytes += data.len();
        if let Some(old) = lru.map.put(id, data) {
            lru.bytes -= old.len();
        }
        while lru.bytes > lru.budget {
            match lru.map.pop_lru() {
                Some((_, v)) => lru.bytes -= v.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget() {
        let cache = ChunkCache::new(100);
        for i in 0..10u8 {
            cache.insert(ChunkId([i; 32]), vec![i; 30].into());
        }
        let lru = cache.inner.lock().unwrap();
        assert!(lru.bytes <= 100);
        assert_eq!(lru.map.len(), 3);
        assert!(lru.map.peek(&ChunkId([9; 32])).is_some());
    }
}
