//! The systemd user unit for one mounted folder, as text: its name, its command lines, and the
//! two marker comments that let `status`/`uninstall` find the units of a state dir again.
//!
//! One generated unit per mount point (`fybrk-<escaped path>.service`) rather than a template
//! `fybrk@.service`: a template's instance can carry only one string (the mount point), but the
//! daemon also needs its state dir, the binary's path and possibly `--config`, which differ per
//! folder. A generated unit holds the exact command it runs, so `systemctl --user cat` shows it.
//! Pure functions, no I/O: the tests compare the text and `systemd-analyze verify` it.

use std::path::Path;

use anyhow::{bail, Result};

/// systemd refuses unit names longer than this (`UNIT_NAME_MAX`).
const UNIT_NAME_MAX: usize = 255;
/// Marker comments (systemd ignores `#` lines), written first in the file.
const MARK_MOUNT: &str = "# fybrk-mount: ";
const MARK_STATE: &str = "# fybrk-state: ";

/// Everything one unit depends on. Paths are absolute and valid UTF-8 (unit files are UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitSpec {
    /// The `fybrk` binary the unit runs.
    pub exe: String,
    /// `--state`.
    pub state: String,
    /// `--config`, when one was given explicitly (else the daemon reads STATE/config.toml).
    pub config: Option<String>,
    /// The mount point.
    pub mount_point: String,
}

impl UnitSpec {
    /// Checks that every path can be written into a unit file.
    pub fn new(
        exe: &Path,
        state: &Path,
        config: Option<&Path>,
        mount_point: &Path,
    ) -> Result<Self> {
        let text = |p: &Path| -> Result<String> {
            let Some(s) = p.to_str() else {
                bail!(
                    "{} is not valid UTF-8, which a systemd unit cannot hold",
                    p.display()
                )
            };
            if !p.is_absolute() {
                bail!("{s} is not an absolute path");
            }
            // A newline would end the unit line; other control characters have no place in it.
            if s.chars().any(char::is_control) {
                bail!("{s:?} contains control characters, which a systemd unit cannot hold");
            }
            Ok(s.to_string())
        };
        let spec = UnitSpec {
            exe: text(exe)?,
            state: text(state)?,
            config: config.map(text).transpose()?,
            mount_point: text(mount_point)?,
        };
        if spec.name().len() > UNIT_NAME_MAX {
            bail!(
                "the mount point path {} is too long for a systemd unit name; pick a shorter one",
                spec.mount_point
            );
        }
        Ok(spec)
    }

    /// `fybrk-<systemd-escape --path MOUNT>.service`.
    pub fn name(&self) -> String {
        unit_name(&self.mount_point)
    }

    /// The daemon in the foreground: its main process is the one systemd supervises.
    pub fn exec_start(&self) -> Vec<String> {
        let mut argv = self.global_args();
        argv.extend([
            "mount".into(),
            self.mount_point.clone(),
            "--foreground".into(),
        ]);
        argv
    }

    /// Asks the daemon to commit open files and unmount; after a crash it clears the stale
    /// kernel mount instead.
    pub fn exec_stop(&self) -> Vec<String> {
        let mut argv = self.global_args();
        argv.extend(["unmount".into(), self.mount_point.clone()]);
        argv
    }

    fn global_args(&self) -> Vec<String> {
        let mut argv = vec![self.exe.clone(), "--state".into(), self.state.clone()];
        if let Some(c) = &self.config {
            argv.extend(["--config".into(), c.clone()]);
        }
        argv
    }

    /// The unit file.
    pub fn render(&self) -> String {
        let start = command_line(&self.exec_start());
        let stop = command_line(&self.exec_stop());
        let description = escape_specifiers(&self.mount_point);
        format!(
            "\
{MARK_MOUNT}{mount}
{MARK_STATE}{state}
# Written by `fybrk service install`; `fybrk service uninstall` stops and removes it.

[Unit]
Description=fybrk folder at {description}
Documentation=man:fybrk(1)
# Give up after 5 failed starts within 5 minutes (a broken store must not loop forever);
# `systemctl --user reset-failed` and a start try again.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
# The daemon sends READY=1 to $NOTIFY_SOCKET once the kernel mount and its control socket
# exist: `systemctl --user start` returns, and status says active, only when the folder works.
Type=notify
ExecStart={start}
# Commits open files and unmounts, waiting for the daemon to exit; after a crash, clears the
# stale mount. '-': nothing left to unmount (stopped by `fybrk unmount`) is not a failure.
ExecStop=-{stop}
# Then SIGTERM (which also unmounts) to the daemon alone, SIGKILL to anything left at the
# timeout. The timeout covers committing large open files; `fybrk unmount` waits 60 s itself.
KillMode=mixed
TimeoutStopSec=90
# Opening a large store and finishing an interrupted join take a while on a slow disk.
TimeoutStartSec=300
# A crash, kill -9 or error exit restarts it (its start clears the stale mount); a clean exit
# after `fybrk unmount` is the user's choice and stays stopped.
Restart=on-failure
RestartSec=2

[Install]
WantedBy=default.target
",
            mount = self.mount_point,
            state = self.state,
        )
    }
}

/// The unit name for a mount point.
pub fn unit_name(mount_point: &str) -> String {
    format!("fybrk-{}.service", escape_path(mount_point))
}

/// True for the file names of fybrk's units.
pub fn is_unit_name(name: &str) -> bool {
    name.starts_with("fybrk-") && name.ends_with(".service")
}

/// The mount point and state dir a unit written by [`UnitSpec::render`] names.
pub fn parse_markers(text: &str) -> Option<(String, String)> {
    let mut mount = None;
    let mut state = None;
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(m) = line.strip_prefix(MARK_MOUNT) {
            mount = Some(m.to_string());
        } else if let Some(s) = line.strip_prefix(MARK_STATE) {
            state = Some(s.to_string());
        }
    }
    Some((mount?, state?))
}

/// `systemd-escape --path`: the path without its outer slashes, `/` as `-`, and every byte
/// that is not ASCII alphanumeric, `:`, `_` or `.` (nor a leading `.`) as `\xNN`.
pub fn escape_path(path: &str) -> String {
    // systemd simplifies first: repeated and trailing slashes go, "/" alone is "-".
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return "-".into();
    }
    let joined = parts.join("/");
    let mut out = String::with_capacity(joined.len());
    for (i, b) in joined.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => {
                out.push(char::from(b))
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// One command line for `ExecStart=`/`ExecStop=`: words with anything unusual in double quotes
/// (backslash and quote escaped), `%` and `$` doubled so systemd expands no specifier or
/// variable in a path.
pub fn command_line(argv: &[String]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

fn quote(word: &str) -> String {
    let word = escape_specifiers(word).replace('$', "$$");
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,=:@%$".contains(c));
    if plain {
        return word;
    }
    format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `%` starts a specifier (`%h`, `%n`) in most unit settings.
fn escape_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(mnt: &str) -> UnitSpec {
        UnitSpec::new(
            Path::new("/home/u/.local/bin/fybrk"),
            Path::new("/home/u/.local/share/fybrk"),
            None,
            Path::new(mnt),
        )
        .unwrap()
    }

    #[test]
    fn escapes_paths_like_systemd_escape() {
        // Expected values from `systemd-escape --path` (systemd 252).
        assert_eq!(escape_path("/home/u/Fybrk"), "home-u-Fybrk");
        assert_eq!(escape_path("/"), "-");
        assert_eq!(escape_path("/a//b/"), "a-b");
        assert_eq!(escape_path("/my-files/x y"), "my\\x2dfiles-x\\x20y");
        assert_eq!(escape_path("/.hidden/a.b"), "\\x2ehidden-a.b");
        assert_eq!(escape_path("/é"), "\\xc3\\xa9");
        assert_eq!(spec("/home/u/Fybrk").name(), "fybrk-home-u-Fybrk.service");
    }

    #[test]
    fn quotes_command_words() {
        let argv: Vec<String> = ["/bin/fybrk", "--state", "/a b/%h", "x\"y\\z", "$HOME"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            command_line(&argv),
            r#"/bin/fybrk --state "/a b/%%h" "x\"y\\z" $$HOME"#
        );
    }

    #[test]
    fn the_unit_runs_the_daemon_in_the_foreground() {
        let s = spec("/home/u/My Files");
        let text = s.render();
        assert!(text.contains("\nType=notify\n"));
        assert!(text.contains(
            "\nExecStart=/home/u/.local/bin/fybrk --state /home/u/.local/share/fybrk mount \"/home/u/My Files\" --foreground\n"
        ));
        assert!(text.contains(
            "\nExecStop=-/home/u/.local/bin/fybrk --state /home/u/.local/share/fybrk unmount \"/home/u/My Files\"\n"
        ));
        assert!(text.contains("\nRestart=on-failure\n"));
        assert!(text.contains("\nWantedBy=default.target\n"));
        assert_eq!(
            parse_markers(&text),
            Some((
                "/home/u/My Files".to_string(),
                "/home/u/.local/share/fybrk".to_string()
            ))
        );
        assert!(is_unit_name(&s.name()));
    }

    #[test]
    fn passes_an_explicit_config() {
        let s = UnitSpec::new(
            Path::new("/bin/fybrk"),
            Path::new("/s"),
            Some(Path::new("/etc/fybrk.toml")),
            Path::new("/m"),
        )
        .unwrap();
        assert_eq!(
            s.exec_start(),
            [
                "/bin/fybrk",
                "--state",
                "/s",
                "--config",
                "/etc/fybrk.toml",
                "mount",
                "/m",
                "--foreground"
            ]
        );
    }

    #[test]
    fn refuses_what_a_unit_cannot_hold() {
        let bad =
            |m: &str| UnitSpec::new(Path::new("/bin/fybrk"), Path::new("/s"), None, Path::new(m));
        assert!(bad("relative").is_err());
        assert!(bad("/a\nb").is_err());
        assert!(bad(&format!("/{}", "x".repeat(300))).is_err());
        let non_utf8 = PathBuf::from(std::ffi::OsStr::from_bytes(b"/\xff"));
        assert!(UnitSpec::new(Path::new("/bin/fybrk"), Path::new("/s"), None, &non_utf8).is_err());
    }

    use std::os::unix::ffi::OsStrExt;
}
