//! [`DhtNode`]: the thin wrapper over a `mainline` node that the daemon's driver calls.
//!
//! `mainline` runs the node (routing table, KRPC, BEP 44 storage when serving) in a thread of
//! its own on its own UDP socket; this wrapper only turns our record into a signed item and
//! back. Its memory is bounded by `mainline`: a routing table of at most 160 buckets of 8
//! nodes, LRU caches of a fixed size, and (server mode only) bounded item and peer stores.

use std::net::{Ipv4Addr, SocketAddrV4};

use futures_lite::StreamExt as _;
use mainline::async_dht::AsyncDht;
use mainline::{Dht, MutableItem};

use super::record::{self, AddrRecord, DecodeError};
use super::SALT;
use crate::identity::DeviceKey;

/// How a node is started.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `HOST:PORT` of the bootstrap nodes (empty: none, the first node of a new DHT).
    pub bootstrap: Vec<String>,
    /// The local address and port to bind (default `0.0.0.0`, a random port).
    pub bind: Option<SocketAddrV4>,
    /// Answer other nodes' queries and store their items from the start (the lab's bootstrap
    /// nodes). A daemon runs in `mainline`'s adaptive mode: it serves only once it has seen
    /// that it is reachable and has run a while.
    pub server: bool,
    /// How long a query waits for a node's answer (default: mainline's 2 s). Loopback tests
    /// shorten it: a lookup ends only when its last queries have been answered or timed out.
    pub request_timeout: Option<std::time::Duration>,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The record is not valid (the decoder would drop it).
    #[error("bad record: {0}")]
    Record(#[from] DecodeError),
    /// The DHT did not store it.
    #[error("{0}")]
    Put(#[from] mainline::errors::PutMutableError),
}

/// One Mainline DHT node (see the module doc). Dropping it stops the node's thread.
#[derive(Debug, Clone)]
pub struct DhtNode {
    dht: AsyncDht,
}

impl DhtNode {
    /// Starts a node: binds its socket and starts bootstrapping. Resolves the bootstrap names
    /// (blocking: call it from a blocking context).
    pub fn start(options: &NodeOptions) -> std::io::Result<DhtNode> {
        let mut builder = Dht::builder();
        if options.bootstrap.is_empty() {
            builder.no_bootstrap();
        } else {
            builder.bootstrap(&options.bootstrap);
        }
        if let Some(bind) = options.bind {
            builder.bind_address(*bind.ip());
            if bind.port() != 0 {
                builder.port(bind.port());
            }
        }
        if let Some(t) = options.request_timeout {
            builder.request_timeout(t);
        }
        if options.server {
            builder.server_mode();
            if let Some(ip) = options
                .bind
                .map(|b| *b.ip())
                .filter(|ip| *ip != Ipv4Addr::UNSPECIFIED)
            {
                // A server's own address is known: its node id follows BEP 42 at once.
                builder.public_ip(ip);
            }
        }
        Ok(DhtNode {
            dht: builder.build()?.as_async(),
        })
    }

    /// The node's local UDP address.
    pub async fn local_addr(&self) -> SocketAddrV4 {
        self.dht.info().await.local_addr()
    }

    /// Waits until the first bootstrap query is done; whether it found any node.
    pub async fn bootstrapped(&self) -> bool {
        self.dht.bootstrapped().await
    }

    /// How many nodes the routing table holds.
    pub async fn known_nodes(&self) -> usize {
        self.dht.to_bootstrap().await.len()
    }

    /// Signs `record` with `key` and stores it at the nodes closest to its target; returns
    /// how many acknowledged it.
    pub async fn publish(&self, key: &DeviceKey, record: &AddrRecord) -> Result<u32, PublishError> {
        let value = record.encode()?;
        let seq = record.seq();
        let signature = record::sign_item(key, seq, &value);
        let item =
            MutableItem::new_signed_unchecked(key.public_key(), signature, &value, seq, Some(SALT));
        let outcome = self.dht.put_mutable(item, None).await?;
        Ok(outcome.stored_at)
    }

    /// The newest valid record published under `public_key`, if any node has one. Items that
    /// do not decode or verify are skipped.
    pub async fn lookup(&self, public_key: &[u8; 32]) -> Option<AddrRecord> {
        let mut items = self.dht.get_mutable(public_key, Some(SALT), None);
        let mut best: Option<AddrRecord> = None;
        while let Some(item) = items.next().await {
            let checked =
                record::verify_item(public_key, item.seq(), item.value(), item.signature())
                    .and_then(|()| record::decode(item.value(), item.seq()));
            match checked {
                Ok(r)
                    if best
                        .as_ref()
                        .is_none_or(|b| r.timestamp_ms > b.timestamp_ms) =>
                {
                    best = Some(r);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("DHT: ignored an item: {e}"),
            }
        }
        best
    }
}
