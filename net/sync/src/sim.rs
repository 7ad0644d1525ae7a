//! Replication end to end in milliseconds: three devices, each running the real driver
//! ([`crate::store_driver::StoreReplica`]) over an in-memory store (`crate::store::mem`, no
//! RocksDB), sessions over a simulated network with seeded random latency and delivery order,
//! drops with reconnect, partitions and corrupted chunks. Test-only.
//!
//! - `world`: the network, the event loop, and the devices: a store each, a session and a
//!   driver per link end, commits fanned out to every session of the device.
//! - `ops`: user operations (write, delete, rename, mkdir) as local commits.
//! - `checks`: convergence and nothing lost.
//! - `props`: property tests (convergence, nothing lost, mesh).
//! - `races`: local writes inside an apply (`Changed`, decided again), garbage collection
//!   while a record waits for chunks (pins), as a property test and as scenarios.
//! - `scenarios`: deterministic end-to-end scenarios.

mod checks;
mod ops;
mod props;
mod races;
mod scenarios;
mod world;
