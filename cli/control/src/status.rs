//! The reply to `status` (and `fybrk status --json`): the folder and this device
//! ([`StatusReply`]), the network side ([`NetworkStatus`]) and each paired device
//! ([`PeerStatus`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::reply::Mapping;

/// `status`: one flat JSON object, the folder's fields and then the network side's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Where the folder is mounted.
    pub mount_point: PathBuf,
    /// This device's id (8 groups of 7 base32 characters).
    pub device_id: String,
    /// This device's name, as other devices see it.
    pub device_name: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The folder's id, hex.
    pub folder_id: String,
    /// Live regular files.
    pub files: u64,
    /// Live directories (the root not counted).
    pub dirs: u64,
    /// Live symbolic links.
    pub symlinks: u64,
    /// Sum of the live files' sizes.
    pub logical_bytes: u64,
    /// Bytes of encrypted chunks stored.
    pub stored_bytes: u64,
    /// Distinct chunks stored.
    pub chunks: u64,
    /// `logical_bytes / stored_bytes` (1 for an empty folder).
    pub dedup_ratio: f64,
    /// The store's last local change sequence.
    pub sequence: u64,
    /// Bytes on disk that only history holds (old versions and deleted files), as measured by
    /// the last retention pass (`gc`, at start and every 10 minutes).
    #[serde(default)]
    pub history_bytes: u64,
    /// The config file read at start (`null`: none).
    pub config_file: Option<PathBuf>,
    /// The rendezvous server (`HOST:PORT`) in use (`null`: none).
    pub rendezvous: Option<String>,
    /// Listening address, NAT, relay and peers.
    #[serde(flatten)]
    pub network: NetworkStatus,
    /// Peers that deleted many files within minutes (shown for a day), with the command that
    /// undoes it.
    #[serde(default)]
    pub mass_deletions: Vec<MassDeletionAlert>,
    /// Devices with a valid invitation proof waiting for `fybrk approve` / `fybrk deny`.
    #[serde(default)]
    pub pair_requests: Vec<crate::JoinRequestInfo>,
    /// Members added to or removed from the folder in the last day (by the clock of the device
    /// that made the change), oldest first.
    #[serde(default)]
    pub member_changes: Vec<MemberChange>,
    /// Commits to this device's store since the daemon started (local changes, peers'
    /// versions, restores).
    #[serde(default)]
    pub commits: u64,
    /// The cache of decrypted chunks that reads go through.
    #[serde(default)]
    pub chunk_cache: ChunkCacheStatus,
    /// Long operations running now (verify, gc, restore, join), with how far they are.
    #[serde(default)]
    pub operations: Vec<OperationStatus>,
    /// What this device keeps: full or on-demand, its cache, pins, unreadable files.
    #[serde(default)]
    pub storage: crate::storage::StorageStatus,
}

/// A long operation in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStatus {
    /// `verify`, `gc`, `restore` or `join`.
    pub what: String,
    /// Items done so far.
    pub done: u64,
    /// About how many there are (0: not known).
    pub total: u64,
}

/// The decrypted-chunk cache in `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCacheStatus {
    /// Bytes held.
    pub bytes: u64,
    /// The most it may hold.
    pub budget_bytes: u64,
    /// Reads answered from it since the daemon started.
    pub hits: u64,
    /// Reads that had to read and decrypt the chunk.
    pub misses: u64,
}

/// A device joined or left the folder (in `status`, for a day).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    /// What happened.
    pub change: MemberChangeKind,
    /// The device's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The id of the member that added or removed it.
    pub by_id: String,
    /// That member's name (empty when unknown).
    pub by_name: String,
    /// When (unix seconds, that member's clock).
    pub at_unix: u64,
}

/// Added or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberChangeKind {
    /// A person approved its join on a member.
    Added,
    /// A member removed it (`fybrk remove`).
    Removed,
}

/// A peer deleted many files within minutes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MassDeletionAlert {
    /// The device's name (or the first group of its id when it is not a paired device).
    pub device: String,
    /// Files it deleted in this burst.
    pub deleted: u64,
    /// When the burst began, unix seconds.
    pub since_unix: u64,
    /// The command that brings the folder back to just before the burst.
    pub undo: String,
}

/// The network side of `status`: where the daemon listens, what it knows of its NAT and relay,
/// and every paired device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// The UDP address the daemon listens on (QUIC, STUN, TURN and rendezvous share it).
    pub listen_addr: SocketAddr,
    /// The last STUN result (`null`: no rendezvous server, or no answer yet).
    pub nat: Option<NatStatus>,
    /// The TURN relay (`null`: none configured or the allocation failed).
    pub relay: Option<RelayStatus>,
    /// Every paired device.
    pub peers: Vec<PeerStatus>,
    /// Records still to fetch from connected peers, summed.
    pub pending_items: u64,
    /// Bytes still to fetch from connected peers, summed.
    pub pending_bytes: u64,
    /// The router's port mapping of the listen port (left out: none, off, or no rendezvous
    /// server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mapping: Option<PortMappingStatus>,
    /// Discovery through the Mainline DHT (left out: switched off, or the daemon listens on
    /// loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dht: Option<DhtStatus>,
}

/// A port mapping the LAN's gateway granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMappingStatus {
    /// Who granted it: `PCP`, `NAT-PMP` or `UPnP`.
    pub protocol: String,
    /// The public address and port that reach this device's listen port.
    pub external_addr: SocketAddr,
    /// The lifetime granted, in seconds (renewed at half of it).
    pub lifetime_secs: u64,
}

/// Discovery through the Mainline DHT: this device's signed address record and its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtStatus {
    /// Whether the DHT node runs (it starts once a paired device's key is known).
    pub running: bool,
    /// Unix seconds of the last successful publish of this device's record (`null`: none yet).
    pub last_publish_unix: Option<u64>,
    /// DHT nodes in the node's routing table.
    pub known_nodes: u32,
}

/// What the STUN servers said about this device's NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatStatus {
    /// The public address most servers saw (`null`: none answered).
    pub public_addr: Option<SocketAddr>,
    /// Whether that address is the same for every destination.
    pub mapping: Mapping,
    /// Whether any STUN server answered over UDP.
    pub udp_works: bool,
    /// This device's IPv6 address as a STUN server saw it over IPv6 (absent: none answered
    /// over IPv6, or the socket is IPv4 only). No NAT: peers with IPv6 reach it directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<SocketAddr>,
}

/// The TURN relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStatus {
    /// The TURN server.
    pub server: SocketAddr,
    /// The relayed address the server allocated for this device.
    pub relayed_addr: SocketAddr,
    /// Whether the allocation is alive.
    pub active: bool,
    /// Whether every datagram goes through the relay (a network that lets UDP out only to the
    /// TURN server).
    pub everything: bool,
}

/// One paired device in `status`. A connected one has every field; for one that is not
/// connected `path`, `loss` and `rtt_ms` are `null` and the link-only fields
/// (`throughput_bps`, `reconnects`, `quality`, `lost_packets`, `sent_packets`,
/// `connected_secs`, `early_chunks`) are left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its device id.
    pub id: String,
    /// The name it gave itself.
    pub name: String,
    /// Whether a connection to it is up.
    pub connected: bool,
    /// How the connection goes.
    pub path: Option<PathKind>,
    /// Lost / sent packets of the connection's path, 0 to 1.
    pub loss: Option<f64>,
    /// Bytes per second received over the last 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_bps: Option<f64>,
    /// Connections to it since the daemon started, minus one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnects: Option<u32>,
    /// A one-word score from the round trip, loss, reconnects and path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// Its address: the connection's, else the one it was last seen at (`null`: none known).
    pub addr: Option<SocketAddr>,
    /// The connection's round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// UDP bytes received on the connection (0 when not connected).
    pub bytes_in: u64,
    /// UDP bytes sent on the connection (0 when not connected).
    pub bytes_out: u64,
    /// Packets of the connection's path lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_packets: Option<u64>,
    /// Packets of the connection's path sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_packets: Option<u64>,
    /// How long the connection has been up, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_secs: Option<u64>,
    /// Chunks received from it before the record that uses them (files it was still writing,
    /// fetched while being written), since the connection came up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_chunks: Option<u64>,
    /// Unix seconds it was last seen (now while connected; `null`: never).
    pub last_seen_unix: Option<u64>,
    /// Records still to fetch from it.
    pub pending_items: u64,
    /// Bytes still to fetch from it.
    pub pending_bytes: u64,
    /// Connected, its session idle and nothing pending.
    pub in_sync: bool,
}

/// How a connection to a peer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// To a private, loopback or link-local address.
    Lan,
    /// To a public address.
    Direct,
    /// Through a TURN relay.
    Relay,
}

impl PathKind {
    /// The word on the wire (`lan`, `direct`, `relay`), also used by the human output.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Lan => "lan",
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
        }
    }
}

/// A connection's stability, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Low round trip and loss, no reconnects, not relayed.
    Excellent,
    /// One thing a little off.
    Good,
    /// Two or three things off.
    Fair,
    /// Worse.
    Poor,
}

impl Quality {
    /// The word on the wire, also used by the human output.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Excellent => "excellent",
            Quality::Good => "good",
            Quality::Fair => "fair",
            Quality::Poor => "poor",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn connected() -> PeerStatus {
        PeerStatus {
            id: "AAAAAAA-BBBBBBB".into(),
            name: "laptop".into(),
            connected: true,
            path: Some(PathKind::Relay),
            loss: Some(0.25),
            throughput_bps: Some(1500.5),
            reconnects: Some(2),
            quality: Some(Quality::Fair),
            addr: Some("203.0.113.7:22100".parse().unwrap()),
            rtt_ms: Some(12.5),
            bytes_in: 10,
            bytes_out: 20,
            lost_packets: Some(1),
            sent_packets: Some(4),
            connected_secs: Some(30),
            early_chunks: Some(7),
            last_seen_unix: Some(1_700_000_000),
            pending_items: 3,
            pending_bytes: 4096,
            in_sync: false,
        }
    }

    fn offline() -> PeerStatus {
        PeerStatus {
            id: "CCCCCCC-DDDDDDD".into(),
            name: "phone".into(),
            connected: false,
            path: None,
            loss: None,
            throughput_bps: None,
            reconnects: None,
            quality: None,
            addr: None,
            rtt_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            lost_packets: None,
            sent_packets: None,
            connected_secs: None,
            early_chunks: None,
            last_seen_unix: None,
            pending_items: 0,
            pending_bytes: 0,
            in_sync: false,
        }
    }

    fn status() -> StatusReply {
        StatusReply {
            mount_point: "/home/me/fybrk".into(),
            device_id: "AAAAAAA-BBBBBBB".into(),
            device_name: "desk".into(),
            pid: 4242,
            folder_id: "00ff".into(),
            files: 4,
            dirs: 2,
            symlinks: 1,
            logical_bytes: 1000,
            stored_bytes: 800,
            chunks: 3,
            dedup_ratio: 1.25,
            sequence: 17,
            history_bytes: 9,
            mass_deletions: Vec::new(),
            pair_requests: Vec::new(),
            member_changes: vec![MemberChange {
                change: MemberChangeKind::Removed,
                id: "CCCCCCC-DDDDDDD".into(),
                name: "phone".into(),
                by_id: "AAAAAAA-BBBBBBB".into(),
                by_name: "desk".into(),
                at_unix: 1_700_000_000,
            }],
            commits: 5,
            operations: vec![OperationStatus {
                what: "verify".into(),
                done: 1,
                total: 2,
            }],
            chunk_cache: ChunkCacheStatus {
                bytes: 1,
                budget_bytes: 2,
                hits: 3,
                misses: 4,
            },
            storage: Default::default(),
            config_file: None,
            rendezvous: Some("rdv.example.org:22101".into()),
            network: NetworkStatus {
                listen_addr: "0.0.0.0:22100".parse().unwrap(),
                nat: Some(NatStatus {
                    public_addr: Some("198.51.100.1:4000".parse().unwrap()),
                    mapping: Mapping::EndpointIndependent,
                    udp_works: true,
                    ipv6: None,
                }),
                relay: Some(RelayStatus {
                    server: "198.51.100.2:3478".parse().unwrap(),
                    relayed_addr: "198.51.100.2:50000".parse().unwrap(),
                    active: true,
                    everything: false,
                }),
                peers: vec![connected(), offline()],
                pending_items: 3,
                pending_bytes: 4096,
                port_mapping: None,
                dht: None,
            },
        }
    }

    #[test]
    fn status_round_trips() {
        let s = status();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<StatusReply>(&text).unwrap(), s);
        let v = serde_json::to_value(&s.member_changes[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"change": "removed", "id": "CCCCCCC-DDDDDDD", "name": "phone",
                "by_id": "AAAAAAA-BBBBBBB", "by_name": "desk", "at_unix": 1_700_000_000})
        );
    }

    /// The field names and shapes scripts read: flat, with today's keys.
    #[test]
    fn status_keeps_its_field_names() {
        let v = serde_json::to_value(status()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "chunk_cache",
            "chunks",
            "commits",
            "config_file",
            "dedup_ratio",
            "device_id",
            "device_name",
            "dirs",
            "files",
            "folder_id",
            "history_bytes",
            "listen_addr",
            "logical_bytes",
            "mass_deletions",
            "member_changes",
            "mount_point",
            "operations",
            "nat",
            "pair_requests",
            "pending_bytes",
            "pending_items",
            "peers",
            "pid",
            "relay",
            "rendezvous",
            "sequence",
            "storage",
            "stored_bytes",
            "symlinks",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["listen_addr"], "0.0.0.0:22100");
        assert_eq!(v["config_file"], Value::Null);
        assert_eq!(
            v["storage"],
            json!({"mode": "", "local_bytes": 0, "total_bytes": 0, "cache_budget": null,
                   "cache_used": null, "pinned": [], "pinned_bytes": 0, "unreadable": []})
        );
        assert_eq!(
            v["nat"],
            json!({"public_addr": "198.51.100.1:4000", "mapping": "EndpointIndependent", "udp_works": true})
        );
        assert_eq!(
            v["relay"],
            json!({"server": "198.51.100.2:3478", "relayed_addr": "198.51.100.2:50000",
                   "active": true, "everything": false})
        );
        assert_eq!(
            v["peers"][0],
            json!({
                "id": "AAAAAAA-BBBBBBB", "name": "laptop", "connected": true, "path": "relay",
                "loss": 0.25, "throughput_bps": 1500.5, "reconnects": 2, "quality": "fair",
                "addr": "203.0.113.7:22100", "rtt_ms": 12.5, "bytes_in": 10, "bytes_out": 20,
                "lost_packets": 1, "sent_packets": 4, "connected_secs": 30, "early_chunks": 7,
                "last_seen_unix": 1_700_000_000u64, "pending_items": 3, "pending_bytes": 4096,
                "in_sync": false,
            })
        );
        // Offline: the link's numbers are null or absent, as before.
        assert_eq!(
            v["peers"][1],
            json!({
                "id": "CCCCCCC-DDDDDDD", "name": "phone", "connected": false, "path": null,
                "loss": null, "addr": null, "rtt_ms": null, "bytes_in": 0, "bytes_out": 0,
                "last_seen_unix": null, "pending_items": 0, "pending_bytes": 0, "in_sync": false,
            })
        );
    }

    /// `dht` is left out while discovery through the DHT is off, and an object when it is on.
    #[test]
    fn status_dht_field() {
        let mut s = status();
        s.network.dht = Some(DhtStatus {
            running: true,
            last_publish_unix: Some(1_700_000_000),
            known_nodes: 42,
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["dht"],
            json!({"running": true, "last_publish_unix": 1_700_000_000u64, "known_nodes": 42})
        );
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<StatusReply>(&text).unwrap(), s);
    }

    #[test]
    fn a_status_without_nat_or_relay_parses() {
        let mut s = status();
        s.network.nat = None;
        s.network.relay = None;
        s.network.peers.clear();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["nat"], Value::Null);
        assert_eq!(v["relay"], Value::Null);
        assert_eq!(serde_json::from_value::<StatusReply>(v).unwrap(), s);
    }
}
