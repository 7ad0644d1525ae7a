//! Questions about the kernel's mount table and the pre-mount checks with their advice.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// One line of `/proc/self/mountinfo` that matters here.
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem (its backing-device info in /sys/class/bdi).
    pub dev: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    /// A fybrk mount: type `fuse.fybrk` (via fusermount3) or `fuse` with source `fybrk` (mount(2)).
    pub fn is_fybrk(&self) -> bool {
        self.fs_type.contains("fybrk")
            || (self.fs_type.starts_with("fuse") && self.source == "fybrk")
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of this process's mount namespace.
pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                dev: fields.get(2)?.to_string(),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fs_type: fields.get(dash + 1)?.to_string(),
                source: unescape(fields.get(dash + 2)?),
            })
        })
        .collect()
}

/// The mount at exactly `path`, if any (the last one wins, as in the kernel).
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    mounts().into_iter().rfind(|m| m.mount_point == path)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Detaches the mount at `path` even if busy (root: umount2 MNT_DETACH; else fusermount3 -uz).
pub fn lazy_unmount(path: &Path) -> Result<()> {
    if is_root() {
        nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("cannot unmount {}", path.display()))?;
    } else {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(path)
            .status()
            .context("cannot run fusermount3 (install the fuse3 package)")?;
        if !st.success() {
            bail!("fusermount3 -u -z {} failed", path.display());
        }
    }
    Ok(())
}

/// Raises the kernel's read-ahead for the fybrk mount at `mnt` to `kib`. FUSE starts at 128 KiB;
/// larger windows make the kernel send 1 MiB reads and keep several in flight, so decryption
/// runs on every FUSE thread at once. Cold 1 GiB sequential read here: 128 KiB 6.0 s,
/// 1 MiB 2.15 s, 4 MiB 1.65 s, 8 MiB 1.82 s, 16 MiB 1.96 s. Best effort: needs root, and
/// nothing breaks without it.
pub fn raise_readahead(mnt: &Path, kib: u32) {
    let Some(m) = mount_at(mnt) else { return };
    let knob = PathBuf::from(format!("/sys/class/bdi/{}/read_ahead_kb", m.dev));
    if let Err(e) = std::fs::write(&knob, kib.to_string()) {
        tracing::debug!(error = %e, knob = %knob.display(), "could not raise read-ahead");
    }
}

/// Makes `dir` absolute without resolving a stale mount (canonicalize would fail on one).
pub fn absolute(dir: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(dir).with_context(|| format!("bad path {}", dir.display()))?;
    // Resolve symlinks in the parent, so the path matches the mount table.
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => match parent.canonicalize() {
            Ok(p) => Ok(p.join(name)),
            Err(_) => Ok(abs),
        },
        _ => Ok(abs),
    }
}

/// Everything that must hold before mounting at `mnt`, each failure with what to do about it.
/// A stale fybrk mount (its daemon died) is cleared.
pub fn check_mount_point(mnt: &Path) -> Result<()> {
    if let Some(m) = mount_at(mnt) {
        let stale =
            matches!(std::fs::metadata(mnt), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN));
        if stale && m.is_fybrk() {
            tracing::warn!(mount = %mnt.display(), "clearing a stale fybrk mount left by a dead daemon");
            lazy_unmount(mnt)?;
        } else if m.is_fybrk() {
            bail!(
                "{} is already mounted by fybrk. See `fybrk status`, or `fybrk unmount {}` first",
                mnt.display(),
                mnt.display()
            );
        } else {
            bail!(
                "{} is already mounted ({}); choose another directory",
                mnt.display(),
                m.fs_type
            );
        }
    }
    match std::fs::metadata(mnt) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => bail!("{} is not a directory", mnt.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            bail!(
                "the mount point {} does not exist; create it with `mkdir -p {}`",
                mnt.display(),
                mnt.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot use {}", mnt.display())),
    }
    if !crate::state::is_empty_dir(mnt)? {
        bail!(
            "the mount point {} is not empty; fybrk mounts over an empty directory. Move its files \
             away (you can copy them into the folder once it is mounted) or pick another directory",
            mnt.display()
        );
    }
    Ok(())
}

/// FUSE itself is usable: `/dev/fuse` present and, for non-root users, `fusermount3`.
pub fn check_fuse() -> Result<()> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "/dev/fuse does not exist: load the FUSE module (`sudo modprobe fuse`); in a container, \
             start it with `--device /dev/fuse --cap-add SYS_ADMIN`"
        ),
        Err(e) => bail!("cannot open /dev/fuse ({e}); check its permissions (it should be mode 0666)"),
    }
    if !is_root() {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").exists()))
            .unwrap_or(false);
        if !found {
            bail!("fusermount3 is missing: install it with `sudo apt-get install fuse3`");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/x\\"), r"/x\\");
    }

    #[test]
    fn finds_the_root_mount() {
        assert!(mounts().iter().any(|m| m.mount_point == Path::new("/")));
    }
}
