//! The paired devices this device remembers (`STATE/peers.json`): who they are, where they were
//! last reached, and how far their change logs are applied here (offline catch-up resumes from
//! there instead of from the start).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fybrk_net::identity::DeviceId;
use serde::{Deserialize, Serialize};

/// Addresses remembered per peer: the latest ones first.
const MAX_ADDRS: usize = 8;

/// One paired device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Peer {
    /// The name the device gave itself when pairing (display only).
    pub name: String,
    /// Where it was reached or seen, most recent first.
    #[serde(default)]
    pub addrs: Vec<SocketAddr>,
    /// Unix seconds of the last connection that ended or was active.
    #[serde(default)]
    pub last_seen_unix: Option<u64>,
    /// The peer's change log is applied here up to this sequence.
    #[serde(default)]
    pub seen: u64,
    /// Its raw Ed25519 public key (its id is the key's SHA-256), learnt from its TLS
    /// certificate at a connection: the DHT record it publishes is found under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<[u8; 32]>,
}

impl Peer {
    /// Puts `addr` first in the remembered addresses.
    pub fn remember_addr(&mut self, addr: SocketAddr) {
        self.addrs.retain(|a| *a != addr);
        self.addrs.insert(0, addr);
        self.addrs.truncate(MAX_ADDRS);
    }
}

/// The file's layout.
#[derive(Default, Serialize, Deserialize)]
struct File {
    /// By device id text.
    peers: BTreeMap<String, Peer>,
}

/// The paired devices, backed by `peers.json`.
pub struct PeerBook {
    path: PathBuf,
    peers: BTreeMap<DeviceId, Peer>,
    dirty: bool,
}

impl PeerBook {
    /// Loads `path`, or an empty book if it does not exist.
    pub fn load(path: &Path) -> Result<PeerBook> {
        let file: File = match std::fs::read(path) {
            Ok(raw) => serde_json::from_slice(&raw).with_context(|| {
                format!(
                    "{} is damaged; fix or delete it (and pair again)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut peers = BTreeMap::new();
        for (id, peer) in file.peers {
            let id: DeviceId = id
                .parse()
                .with_context(|| format!("{}: bad device id {id:?}", path.display()))?;
            peers.insert(id, peer);
        }
        Ok(PeerBook {
            path: path.to_path_buf(),
            peers,
            dirty: false,
        })
    }

    /// Writes the book if it changed since the last save (atomically: temp file + rename).
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let file = File {
            peers: self
                .peers
                .iter()
                .map(|(id, p)| (id.to_string(), p.clone()))
                .collect(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(&file)?;
        std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        crate::state::sync_dir(&self.path)?;
        self.dirty = false;
        Ok(())
    }

    /// Whether something changed since the last save.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The paired device `id`.
    pub fn get(&self, id: &DeviceId) -> Option<&Peer> {
        self.peers.get(id)
    }

    /// Changes the entry of `id` (if paired); the book is saved by the next [`PeerBook::save`].
    pub fn update(&mut self, id: &DeviceId, f: impl FnOnce(&mut Peer)) {
        if let Some(p) = self.peers.get_mut(id) {
            f(p);
            self.dirty = true;
        }
    }

    /// Adds or replaces a paired device.
    pub fn insert(&mut self, id: DeviceId, peer: Peer) {
        self.peers.insert(id, peer);
        self.dirty = true;
    }

    /// Removes a device; returns it if it was paired.
    pub fn remove(&mut self, id: &DeviceId) -> Option<Peer> {
        let p = self.peers.remove(id);
        self.dirty |= p.is_some();
        p
    }

    /// Every paired device.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &Peer)> {
        self.peers.iter()
    }

    /// Forgets all sync progress (the folder changed: sequences of the old one mean nothing).
    pub fn reset_progress(&mut self) {
        for p in self.peers.values_mut() {
            p.seen = 0;
        }
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fybrk_net::identity::DeviceKey;

    #[test]
    fn book_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let a = DeviceKey::generate().unwrap().id();
        let b = DeviceKey::generate().unwrap().id();
        let mut book = PeerBook::load(&path).unwrap();
        book.insert(
            a,
            Peer {
                name: "laptop".into(),
                addrs: vec![],
                last_seen_unix: None,
                seen: 7,
                public_key: None,
            },
        );
        book.insert(
            b,
            Peer {
                name: "phone".into(),
                addrs: vec![],
                last_seen_unix: Some(5),
                seen: 0,
                public_key: None,
            },
        );
        book.update(&a, |p| p.remember_addr("127.0.0.1:4000".parse().unwrap()));
        book.save().unwrap();

        let book = PeerBook::load(&path).unwrap();
        assert_eq!(book.get(&a).unwrap().seen, 7);
        assert_eq!(book.get(&a).unwrap().addrs.len(), 1);
        assert_eq!(book.get(&b).unwrap().name, "phone");
    }
}
