//! The state directory: where a daemon keeps its database, key, socket, log and lock.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fybrk_store::keyfile::{self as folder_keys, FolderKeys};

/// Paths inside one state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    /// `--state`/`FYBRK_STATE` if given, else `$XDG_DATA_HOME/fybrk` (`~/.local/share/fybrk`).
    pub fn resolve(explicit: Option<PathBuf>) -> Result<StateDir> {
        let root = match explicit {
            Some(p) => p,
            None => match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
                Some(x) => PathBuf::from(x).join("fybrk"),
                None => {
                    let home = std::env::var_os("HOME")
                        .context("neither --state, XDG_DATA_HOME nor HOME is set")?;
                    PathBuf::from(home).join(".local/share/fybrk")
                }
            },
        };
        let root = std::path::absolute(&root)
            .with_context(|| format!("bad state dir {}", root.display()))?;
        Ok(StateDir { root })
    }

    /// The store of the folder with id `folder` (one per folder: joining another folder builds
    /// a new store beside the old one, then switches).
    pub fn db_for(&self, folder: [u8; 16]) -> PathBuf {
        let hex: String = folder[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.root.join(format!("db-{hex}"))
    }
    /// The store of the folder `keys` are for.
    pub fn db(&self, keys: &FolderKeys) -> PathBuf {
        self.db_for(keys.folder_id)
    }
    /// Store directories in the state dir, whatever folder they belong to.
    pub fn all_dbs(&self) -> Vec<PathBuf> {
        let Ok(rd) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("db-"))
            })
            .collect()
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("folder.key")
    }
    /// The key of a folder being joined, until the switch to it is complete.
    pub fn joining_key(&self) -> PathBuf {
        self.root.join("folder.key.join")
    }
    /// The UDP port picked for `--listen ...:0`, kept across restarts.
    pub fn listen_port(&self) -> PathBuf {
        self.root.join("listen.port")
    }
    /// Paired devices and sync progress.
    pub fn peers(&self) -> PathBuf {
        self.root.join("peers.json")
    }
    /// The folder's member list (`members.log`, postcard).
    pub fn members(&self) -> PathBuf {
        self.root.join("members.log")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    pub fn pid(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }
    pub fn device_key(&self) -> PathBuf {
        self.root.join("device.key")
    }
    pub fn device_name(&self) -> PathBuf {
        self.root.join("device.name")
    }
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Creates the directory tree (private to the user).
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(self.staging())
            .with_context(|| format!("cannot create the state dir {}", self.root.display()))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))?;
        Ok(())
    }

    /// Takes the state dir's lock for the life of the returned file, or explains who holds it.
    pub fn lock(&self) -> Result<File> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(self.pid()).unwrap_or_default();
                bail!(
                    "the state dir {} is locked by another fybrk daemon (pid {}). Unmount it first \
                     (`fybrk --state {} unmount DIR`), or use another --state dir",
                    self.root.display(),
                    pid.trim(),
                    self.root.display()
                )
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e).context("cannot lock the state dir"),
        }
    }

    /// The folder's id and keys, created (random, mode 0600) on first use.
    pub fn load_or_create_keys(&self) -> Result<FolderKeys> {
        let path = self.key();
        match folder_keys::read(&path) {
            Ok(Some(key)) => Ok(key),
            Ok(None) => {
                if !self.all_dbs().is_empty() {
                    bail!(
                        "{} is missing but a store exists in {}: restore the key from your backup \
                         (without it the data cannot be read)",
                        path.display(),
                        self.root.display()
                    );
                }
                let keys = FolderKeys::generate();
                folder_keys::write(&path, &keys)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(keys)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The keys if they exist (for commands that must not create a folder).
    pub fn existing_keys(&self) -> Result<FolderKeys> {
        let path = self.key();
        let keys =
            folder_keys::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        keys.with_context(|| {
            format!(
                "no fybrk folder in {} (run `fybrk mount DIR` first)",
                self.root.display()
            )
        })
    }
}

/// fsyncs the directory holding `path`, so a rename or create in it survives a crash.
pub fn sync_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// This device's name: `--name` if given (and remembered), else the remembered one, else the
/// hostname.
pub fn device_name(state: &StateDir, given: Option<&str>) -> Result<String> {
    if let Some(name) = given {
        if !valid_device_name(name) {
            bail!("--name must be 1 to 64 printable characters");
        }
        let name = name.trim();
        fs::write(state.device_name(), name)
            .with_context(|| format!("cannot save {}", state.device_name().display()))?;
        return Ok(name.to_owned());
    }
    match fs::read_to_string(state.device_name()) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => Ok(fybrk_net::identity::default_device_name()),
    }
}

/// Whether `name` (trimmed) can be a device name: 1 to 64 bytes, no control characters.
pub fn valid_device_name(name: &str) -> bool {
    let name = name.trim();
    !name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control)
}

/// True if `p` is a directory with no entries.
pub fn is_empty_dir(p: &Path) -> std::io::Result<bool> {
    Ok(fs::read_dir(p)?.next().is_none())
}
