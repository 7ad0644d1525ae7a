//! The replies other than `status`, the error reply, and the `--json` outputs that are not a
//! daemon's reply (`pair --json`'s first line, `nat-check --json`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Any failed request: `{"error": "what went wrong"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The message, for a person.
    pub error: String,
}

/// `verify` (and `fybrk verify --json`, with or without a daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReply {
    /// Chunks read, decrypted and re-hashed.
    pub chunks_checked: u64,
    /// Records decoded and checked.
    pub records_checked: u64,
    /// Every problem found, in words a user can act on (empty: all intact).
    pub problems: Vec<String>,
}

/// `gc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReply {
    /// Chunks freed.
    pub freed_chunks: u64,
    /// Encrypted bytes freed.
    pub freed_bytes: u64,
    /// Unreferenced chunks kept because a writer or an open file still pins them.
    pub pinned: u64,
    /// Versions retention dropped before the chunks were collected.
    #[serde(default)]
    pub versions_dropped: u64,
    /// Bytes on disk only history holds, after this pass.
    #[serde(default)]
    pub history_bytes: u64,
}

/// `unmount`: the daemon answers, then unmounts and exits. Also what `fybrk unmount --json`
/// prints once it is done (`pid` 0: a stale mount whose daemon was gone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmountReply {
    /// The daemon's process id (it is gone once the unmount is done).
    pub pid: u32,
    /// The mount point it unmounts.
    pub mount_point: PathBuf,
}

/// What `fybrk mount --json` prints once the folder is mounted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountReply {
    /// The mount point.
    pub mount_point: PathBuf,
    /// The daemon's process id.
    pub pid: u32,
    /// The state directory it uses.
    pub state_dir: PathBuf,
}

/// A device, by id and name: the reply to `unpair`, and part of the pairing replies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRef {
    /// Its device id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// `peers`: the paired devices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersReply {
    /// Every paired device.
    pub peers: Vec<PeerInfo>,
}

/// One paired device in `peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its device id.
    pub id: String,
    /// The name it gave itself.
    pub name: String,
    /// Where it was reached or seen, most recent first.
    pub addrs: Vec<SocketAddr>,
    /// Whether a connection to it is up.
    pub connected: bool,
    /// Unix seconds it was last seen (`null`: never).
    pub last_seen_unix: Option<u64>,
}

/// Whether a NAT keeps one public address for every destination. On the wire in `status` as
/// `EndpointIndependent`, `EndpointDependent` or `Unknown`; `nat-check --json` spells it in words
/// (see [`NatCheckReport::mapping`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mapping {
    /// Every server saw the same address: peers can punch through to it.
    EndpointIndependent,
    /// Servers saw different addresses (a symmetric NAT): punching is unlikely.
    EndpointDependent,
    /// Fewer than two servers answered.
    Unknown,
}

impl Mapping {
    /// How `nat-check` spells it: `endpoint-independent`, `endpoint-dependent (symmetric)` or
    /// `unknown`.
    pub fn in_words(self) -> &'static str {
        match self {
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::EndpointDependent => "endpoint-dependent (symmetric)",
            Mapping::Unknown => "unknown",
        }
    }
}

/// `fybrk nat-check --json` (run without a daemon).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatCheckReport {
    /// The local UDP socket the check used.
    pub local_addr: SocketAddr,
    /// Whether any STUN server answered.
    pub udp_works: bool,
    /// The public address most servers saw (`null`: none).
    pub public_addr: Option<SocketAddr>,
    /// `endpoint-independent`, `endpoint-dependent (symmetric)` or `unknown`.
    #[serde(with = "mapping_words")]
    pub mapping: Mapping,
    /// Each server asked, with the address it saw (`null`: no answer).
    pub servers: Vec<StunAnswer>,
    /// Each server that failed, with why.
    pub errors: Vec<StunFailure>,
    /// This device's IPv6 address as a STUN server saw it over IPv6 (absent: IPv4 only, or no
    /// server answered over IPv6). IPv6 has no NAT: peers with IPv6 reach it directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<SocketAddr>,
    /// The IPv4 default gateway asked for a port mapping (`null`: none, or `--no-port-mapping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<std::net::IpAddr>,
    /// The port mapping the gateway granted (and `nat-check` deleted again at once); `null`:
    /// none of PCP, NAT-PMP and UPnP answered with one (then left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mapping: Option<crate::PortMappingStatus>,
}

/// One STUN server's answer in [`NatCheckReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StunAnswer {
    /// The server as configured.
    pub server: String,
    /// The address it saw this device at (`null`: no answer).
    pub reflexive: Option<SocketAddr>,
}

/// One STUN server's failure in [`NatCheckReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StunFailure {
    /// The server as configured.
    pub server: String,
    /// Why it failed.
    pub error: String,
}

/// [`Mapping`] in the words `nat-check` has always printed.
mod mapping_words {
    use super::Mapping;
    use serde::{Deserialize, Deserializer, Serializer};

    const ALL: [Mapping; 3] = [
        Mapping::EndpointIndependent,
        Mapping::EndpointDependent,
        Mapping::Unknown,
    ];

    pub fn serialize<S: Serializer>(m: &Mapping, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.in_words())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mapping, D::Error> {
        let text = String::deserialize(d)?;
        ALL.into_iter()
            .find(|m| m.in_words() == text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown NAT mapping {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::{json, Value};
    use std::fmt::Debug;

    /// `value` serializes to `wire` and `wire` parses back to `value`.
    fn same<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T, wire: Value) {
        assert_eq!(serde_json::to_value(&value).unwrap(), wire);
        assert_eq!(serde_json::from_value::<T>(wire).unwrap(), value);
    }

    fn laptop() -> PeerRef {
        PeerRef {
            id: "AAAAAAA".into(),
            name: "laptop".into(),
        }
    }

    #[test]
    fn replies_keep_their_wire_form() {
        same(ErrorReply { error: "no".into() }, json!({"error": "no"}));
        same(
            VerifyReply {
                chunks_checked: 3,
                records_checked: 4,
                problems: vec!["chunk x: bad".into()],
            },
            json!({"chunks_checked": 3, "records_checked": 4, "problems": ["chunk x: bad"]}),
        );
        same(
            GcReply {
                freed_chunks: 1,
                freed_bytes: 2,
                pinned: 3,
                versions_dropped: 4,
                history_bytes: 5,
            },
            json!({"freed_chunks": 1, "freed_bytes": 2, "pinned": 3, "versions_dropped": 4, "history_bytes": 5}),
        );
        same(
            UnmountReply {
                pid: 7,
                mount_point: "/mnt".into(),
            },
            json!({"pid": 7, "mount_point": "/mnt"}),
        );
        same(laptop(), json!({"id": "AAAAAAA", "name": "laptop"}));
        same(
            PeersReply {
                peers: vec![PeerInfo {
                    id: "AAAAAAA".into(),
                    name: "laptop".into(),
                    addrs: vec![],
                    connected: false,
                    last_seen_unix: None,
                }],
            },
            json!({"peers": [{"id": "AAAAAAA", "name": "laptop", "addrs": [],
                              "connected": false, "last_seen_unix": null}]}),
        );
    }

    #[test]
    fn nat_check_spells_the_mapping_in_words() {
        for (m, word) in [
            (Mapping::EndpointIndependent, "endpoint-independent"),
            (Mapping::EndpointDependent, "endpoint-dependent (symmetric)"),
            (Mapping::Unknown, "unknown"),
        ] {
            same(
                NatCheckReport {
                    local_addr: "0.0.0.0:5000".parse().unwrap(),
                    udp_works: true,
                    public_addr: Some("198.51.100.1:5000".parse().unwrap()),
                    mapping: m,
                    servers: vec![StunAnswer {
                        server: "stun.example.org:3478".into(),
                        reflexive: None,
                    }],
                    errors: vec![StunFailure {
                        server: "stun.example.org:3478".into(),
                        error: "timed out".into(),
                    }],
                    ipv6: None,
                    gateway: None,
                    port_mapping: None,
                },
                json!({"local_addr": "0.0.0.0:5000", "udp_works": true,
                       "public_addr": "198.51.100.1:5000", "mapping": word,
                       "servers": [{"server": "stun.example.org:3478", "reflexive": null}],
                       "errors": [{"server": "stun.example.org:3478", "error": "timed out"}]}),
            );
        }
        let bad = json!({"local_addr": "0.0.0.0:5000", "udp_works": true, "public_addr": null,
                         "mapping": "EndpointIndependent", "servers": [], "errors": []});
        assert!(serde_json::from_value::<NatCheckReport>(bad).is_err());
    }

    /// `status` spells the mapping as the variant's name.
    #[test]
    fn status_spells_the_mapping_as_its_name() {
        same(Mapping::EndpointDependent, json!("EndpointDependent"));
    }
}
