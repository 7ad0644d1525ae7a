//! Replication end to end in milliseconds: three devices with in-memory stores (no RocksDB),
//! sessions over a simulated network with seeded random latency and delivery order, drops with
//! reconnect, partitions and corrupted chunks. Test-only.
//!
//! - `store`: the in-memory device store, with `Store`'s commit semantics.
//! - `world`: the network, the event loop, and a driver that executes session actions.
//! - `props`: property tests (convergence, nothing lost, mesh) and deterministic scenarios.

mod props;
mod scenarios;
mod store;
mod world;
