//! `STATE/folder.key`: the folder's id and every key it has had.
//!
//! A folder has a random id and a first key; removing a member adds a later key (see
//! `fybrk_store::keys`). The file holds all of them, because chunks written under an old key
//! stay under it. Two layouts:
//!
//! - 32 bytes: a folder from before keys rotated. Its only key is the first, and its id is the
//!   one folders then derived from that key (kept, so its devices still agree on it).
//! - `fybrk folder keys v1\n` then postcard [`OnDisk`]: every folder created or rekeyed since.
//!
//! The file is replaced atomically (written aside, fsynced, renamed), mode 0600: losing a
//! later key would make the chunks sealed under it unreadable here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Crypto, FolderKey, Store, StoreOptions};

/// First bytes of the current layout (a 32-byte legacy key cannot start with it by chance
/// often enough to matter, and it is longer than 32 bytes in any case).
const MAGIC: &[u8] = b"fybrk folder keys v1\n";

/// More later keys than any folder gets (one per removal; the member list holds at most 4,096
/// entries): a bigger count means a damaged file.
const MAX_LATER_KEYS: usize = 4096;

/// The folder's id and keys.
pub struct FolderKeys {
    /// The folder's id (random, or derived from the first key for an old folder).
    pub folder_id: [u8; 16],
    /// The key the folder was created with.
    pub first: FolderKey,
    /// Keys added since (one per removed member), oldest first.
    pub later: Vec<FolderKey>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    folder_id: [u8; 16],
    first: [u8; 32],
    later: Vec<[u8; 32]>,
}

impl FolderKeys {
    /// A new folder: a random id and a random first key.
    pub fn generate() -> FolderKeys {
        FolderKeys {
            folder_id: crate::crypto::random_bytes(),
            first: FolderKey::generate(),
            later: Vec::new(),
        }
    }

    /// A folder someone shared: its id, first key and later keys as they were sent.
    pub fn shared(folder_id: [u8; 16], first: [u8; 32], later: &[[u8; 32]]) -> FolderKeys {
        FolderKeys {
            folder_id,
            first: FolderKey::from_bytes(first),
            later: later.iter().map(|k| FolderKey::from_bytes(*k)).collect(),
        }
    }

    /// The raw later keys, for sending to a member.
    pub fn later_bytes(&self) -> Vec<[u8; 32]> {
        self.later.iter().map(|k| *k.as_bytes()).collect()
    }

    /// Adds `key` unless it is already here; true when it was new.
    pub fn add_later(&mut self, key: FolderKey) -> bool {
        if self.later.iter().any(|k| k.as_bytes() == key.as_bytes()) {
            return false;
        }
        self.later.push(key);
        true
    }

    /// Opens (creating) this folder's store in `dir` and gives it every later key.
    pub fn open_store(&self, dir: &Path, options: StoreOptions) -> crate::Result<Store> {
        let store = Store::open(
            dir,
            &self.first,
            StoreOptions {
                folder_id: Some(self.folder_id),
                ..options
            },
        )?;
        let mut newest = None;
        for k in &self.later {
            newest = Some(store.add_key(k));
        }
        // Until the member list says otherwise (the daemon asks it at start), new chunks go
        // under the newest key: never under an older one a removed device may hold.
        if let Some(id) = newest {
            store.use_key(id)?;
        }
        Ok(store)
    }

    fn encode(&self) -> Vec<u8> {
        let on_disk = OnDisk {
            folder_id: self.folder_id,
            first: *self.first.as_bytes(),
            later: self.later_bytes(),
        };
        let mut out = MAGIC.to_vec();
        // Arrays and a vector of arrays: postcard cannot fail on them.
        out.extend(postcard::to_stdvec(&on_disk).unwrap_or_default());
        out
    }

    fn decode(raw: &[u8]) -> Option<FolderKeys> {
        if let Ok(first) = <[u8; 32]>::try_from(raw) {
            let first = FolderKey::from_bytes(first);
            return Some(FolderKeys {
                folder_id: Crypto::new(&first).legacy_folder_id(),
                first,
                later: Vec::new(),
            });
        }
        let body = raw.strip_prefix(MAGIC)?;
        let d: OnDisk = postcard::from_bytes(body).ok()?;
        if d.later.len() > MAX_LATER_KEYS {
            return None;
        }
        Some(FolderKeys::shared(d.folder_id, d.first, &d.later))
    }
}

/// Reads a key file; `None` if it does not exist. A damaged file is an `InvalidData` error
/// that says what to do.
pub fn read(path: &Path) -> io::Result<Option<FolderKeys>> {
    let mut raw = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut raw)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match FolderKeys::decode(&raw) {
        Some(keys) => Ok(Some(keys)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} ({} bytes) is damaged: restore it from your backup (without it the folder's \
                 files cannot be read here), or pair this device again",
                path.display(),
                raw.len()
            ),
        )),
    }
}

/// Writes a key file (mode 0600) durably, replacing any file at `path` atomically: written
/// aside, fsynced, renamed, and the directory fsynced.
pub fn write(path: &Path, keys: &FolderKeys) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&keys.encode())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_legacy_key_file_keeps_its_derived_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("folder.key");
        std::fs::write(&path, [7u8; 32]).unwrap();
        let keys = read(&path).unwrap().unwrap();
        let derived = Crypto::new(&FolderKey::from_bytes([7; 32])).legacy_folder_id();
        assert_eq!(keys.folder_id, derived);
        assert!(keys.later.is_empty());
    }

    #[test]
    fn keys_round_trip_with_their_random_id_and_later_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("folder.key");
        let mut keys = FolderKeys::generate();
        assert_ne!(
            keys.folder_id,
            Crypto::new(&keys.first).legacy_folder_id(),
            "a new folder's id does not come from its key"
        );
        assert!(keys.add_later(FolderKey::from_bytes([1; 32])));
        assert!(!keys.add_later(FolderKey::from_bytes([1; 32])), "once");
        assert!(keys.add_later(FolderKey::from_bytes([2; 32])));
        write(&path, &keys).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.folder_id, keys.folder_id);
        assert_eq!(back.first.as_bytes(), keys.first.as_bytes());
        assert_eq!(back.later_bytes(), vec![[1; 32], [2; 32]]);
    }

    #[test]
    fn damaged_files_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("folder.key");
        for bad in [
            &b"short"[..],
            &[0u8; 33][..],
            MAGIC,
            &[MAGIC, &[0xff; 40][..]].concat(),
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = read(&path).err().expect("refused").to_string();
            assert!(e.contains("is damaged"), "{e}");
        }
        assert!(read(&dir.path().join("absent")).unwrap().is_none());
    }
}
