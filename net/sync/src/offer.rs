//! Replicating a file while it is being written: the chunks a local write stores are offered
//! to every connected peer as each batch lands ([`crate::Message::Offer`]), so a peer fetches
//! them before the record exists and only the record and the tail are left at `close`.
//!
//! [`FreshFeed`] is the bridge from the store (a plain hook called on the writing thread, see
//! [`fybrk_store::Store::on_fresh_chunks`]) to the per-peer tasks (a tokio broadcast channel).
//! A peer task that falls behind loses offers, never correctness: the chunks it did not hear
//! about are fetched with their record, as before.

use std::sync::Arc;

use fybrk_store::{ChunkId, FreshChunks};
use tokio::sync::broadcast;

/// Batches of chunk ids kept for a slow peer task: 256 batches of at most 512 KiB are 128 MiB
/// of writes, far more than a task lags by while it is connected and working.
const BACKLOG: usize = 256;

/// Fresh local chunk ids, fanned out to the peer tasks.
pub struct FreshFeed {
    tx: broadcast::Sender<Arc<[ChunkId]>>,
}

impl FreshFeed {
    /// A feed with no subscribers yet.
    pub fn new() -> Arc<FreshFeed> {
        Arc::new(FreshFeed {
            tx: broadcast::channel(BACKLOG).0,
        })
    }

    /// The hook to give the store ([`fybrk_store::Store::on_fresh_chunks`]). It only copies the
    /// ids into the channel: cheap enough for the writing thread.
    pub fn hook(self: &Arc<Self>) -> FreshChunks {
        let feed = Arc::clone(self);
        Arc::new(move |ids: &[ChunkId]| {
            // No subscriber (no peer connected) is not an error.
            let _ = feed.tx.send(ids.into());
        })
    }

    /// A receiver of every batch announced from now on.
    pub fn subscribe(&self) -> FreshReceiver {
        FreshReceiver(self.tx.subscribe())
    }
}

/// One peer task's view of the feed.
pub struct FreshReceiver(broadcast::Receiver<Arc<[ChunkId]>>);

impl FreshReceiver {
    /// The next batch of ids; an empty batch after offers were lost to lag; `None` once the
    /// feed is gone.
    pub async fn next(&mut self) -> Option<Arc<[ChunkId]>> {
        match self.0.recv().await {
            Ok(ids) => Some(ids),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "offers skipped: the peer task fell behind");
                Some(Arc::from(Vec::new()))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    #[tokio::test]
    async fn every_subscriber_hears_each_batch_and_a_laggard_only_loses_offers() {
        let feed = FreshFeed::new();
        let hook = feed.hook();
        // Announced before anyone listens: nobody hears it, and nothing fails.
        hook(&[id(0)]);
        let mut a = feed.subscribe();
        let mut b = feed.subscribe();
        hook(&[id(1), id(2)]);
        assert_eq!(&*a.next().await.unwrap(), &[id(1), id(2)]);
        assert_eq!(&*b.next().await.unwrap(), &[id(1), id(2)]);
        for n in 0..=BACKLOG as u32 {
            hook(&[id(n as u8)]);
        }
        // `a` fell behind by one batch: it is told (empty batch), then gets the rest.
        assert!(a.next().await.unwrap().is_empty());
        assert_eq!(&*a.next().await.unwrap(), &[id(1)]);
        drop(hook);
        drop(feed);
        // The feed is gone: the backlog drains, then the receiver ends.
        let mut n = 0;
        while b.next().await.is_some() {
            n += 1;
        }
        assert!(n > 0);
    }
}
