//! Talking to the user's systemd manager through `systemctl --user` and `loginctl` (their
//! command lines are the stable interface; no D-Bus library needed for a handful of calls).

use std::collections::BTreeMap;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// `systemctl --user ARGS`, its output captured.
pub fn systemctl(args: &[&str]) -> Result<Output> {
    Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .context("cannot run systemctl (this system does not seem to use systemd)")
}

/// `systemctl --user ARGS`, failing with its own words when it fails.
pub fn systemctl_ok(args: &[&str]) -> Result<()> {
    let out = systemctl(args)?;
    if !out.status.success() {
        bail!(
            "`systemctl --user {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Why no user manager answered, with what to do about it; `None` when one does.
pub fn session_problem() -> Option<String> {
    let why = match systemctl(&["show", "--property=Version"]) {
        Ok(out) if out.status.success() => return None,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("{e:#}"),
    };
    Some(format!(
        "no systemd user session is reachable ({why}).\n\
         The service runs under your systemd user manager, which a normal login starts (a desktop\n\
         or ssh session; `su` and `sudo -i` shells have none). To reach it from this shell:\n\
         \x20   sudo loginctl enable-linger $USER && export XDG_RUNTIME_DIR=/run/user/$(id -u)\n\
         Without systemd (a container, WSL without systemd), mount by hand: fybrk mount DIR"
    ))
}

/// Whether the user manager keeps running without a login (`loginctl enable-linger`); `None`
/// when logind cannot say.
pub fn linger() -> Option<bool> {
    let uid = nix::unistd::getuid().to_string();
    let out = Command::new("loginctl")
        .args(["show-user", &uid, "--property=Linger", "--value"])
        .output()
        .ok()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" if out.status.success() => Some(true),
        "no" if out.status.success() => Some(false),
        _ => None,
    }
}

/// The properties `status` shows, from `systemctl --user show UNIT`.
pub fn show(unit: &str) -> Result<BTreeMap<String, String>> {
    let out = systemctl(&[
        "show",
        unit,
        "--property=LoadState,ActiveState,SubState,MainPID,ActiveEnterTimestamp,UnitFileState,NRestarts,Result,StatusText",
    ])?;
    if !out.status.success() {
        bail!(
            "`systemctl --user show {unit}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_properties(&String::from_utf8_lossy(&out.stdout)))
}

/// `KEY=VALUE` lines.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The last lines the unit logged, for a failed start.
pub fn journal_tail(unit: &str, lines: u32) -> String {
    Command::new("journalctl")
        .args(["--user", "-u", unit, "--no-pager", "-o", "cat", "-n"])
        .arg(lines.to_string())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_show_output() {
        let p = parse_properties("ActiveState=active\nMainPID=42\nStatusText=serving /a=b\n");
        assert_eq!(p["ActiveState"], "active");
        assert_eq!(p["MainPID"], "42");
        assert_eq!(p["StatusText"], "serving /a=b");
    }
}
