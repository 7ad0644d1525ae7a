//! A byte-bounded LRU of decrypted chunks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::ChunkId;

pub(crate) struct ChunkCache {
    inner: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How the decrypted-chunk cache is doing (for `status` and `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes of decrypted chunks held.
    pub bytes: u64,
    /// The most it may hold.
    pub budget: u64,
    /// Lookups answered from the cache since the store was opened.
    pub hits: u64,
    /// Lookups that had to read and decrypt the chunk.
    pub misses: u64,
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
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The chunk if cached. Counts a hit or a miss unless `again` (the second look of a
    /// reader that waited for another to load the same chunk).
    pub fn get(&self, id: &ChunkId, again: bool) -> Option<Arc<[u8]>> {
        let hit = {
            let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            lru.map.get(id).cloned()
        };
        if !again {
            let counter = if hit.is_some() {
                &self.hits
            } else {
                &self.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub fn stats(&self) -> CacheStats {
        let (bytes, budget) = {
            let lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            (lru.bytes as u64, lru.budget as u64)
        };
        CacheStats {
            bytes,
            budget,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
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
        assert!(cache.get(&ChunkId([9; 32]), false).is_some());
        assert!(cache.get(&ChunkId([0; 32]), false).is_none());
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.budget), (1, 1, 100));
        assert_eq!(s.bytes, 90);
        let lru = cache.inner.lock().unwrap();
        assert!(lru.bytes <= 100);
        assert_eq!(lru.map.len(), 3);
        assert!(lru.map.peek(&ChunkId([9; 32])).is_some());
    }
}
