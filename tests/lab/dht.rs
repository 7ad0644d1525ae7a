//! The lab's own Mainline DHT: `fybrk dht-node` running a few server-mode nodes on one address
//! of the public namespace, the bootstrap nodes of every device in a DHT test. Nothing ever
//! talks to the public DHT: the lab has no link to the host's network, and the devices are
//! told these nodes (`--dht-bootstrap`).

use std::net::SocketAddrV4;
use std::process::Command;
use std::time::Duration;

use super::{Lab, LabChild};

/// Node `i` listens on `public_ip(FIRST_IP_INDEX + i)` (one address per node, as in the real
/// DHT, where nodes on one address count as one); the last general-purpose addresses.
const FIRST_IP_INDEX: u8 = 11;
/// BitTorrent's usual DHT port.
const PORT: u16 = 6881;

/// The lab's DHT; its nodes are killed on drop.
pub struct LabDht {
    /// Every node's address: what devices get as `--dht-bootstrap`.
    pub nodes: Vec<SocketAddrV4>,
    /// The `fybrk dht-node` process.
    pub process: LabChild,
}

impl LabDht {
    /// `--dht-bootstrap ADDR` for every node.
    pub fn bootstrap_args(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| ["--dht-bootstrap".to_string(), n.to_string()])
            .collect()
    }
}

impl Lab {
    /// Starts `count` (at most 5) DHT nodes (server mode, the first bootstraps the others)
    /// with `fybrk` (`bin`), and waits until their sockets are bound.
    pub fn start_dht(&self, bin: &std::path::Path, count: u8) -> LabDht {
        let nodes: Vec<SocketAddrV4> = (0..count)
            .map(|i| SocketAddrV4::new(self.public_ip(FIRST_IP_INDEX + i), PORT))
            .collect();
        let mut cmd = Command::new(bin);
        cmd.arg("dht-node");
        for n in &nodes {
            cmd.args(["--listen", &n.to_string()]);
        }
        let process = self.spawn_in_public("dht", cmd);
        // Every node's socket is bound once the process says so.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !process
            .output_tail(50)
            .contains("fybrk dht-node: serving on")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the lab's DHT nodes did not start within 10 s\n{}",
                process.output_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        LabDht { nodes, process }
    }
}
