//! `fybrk service install|uninstall|status|unit`: the folder as a systemd user service, mounted
//! at login (at boot with linger) and restarted when the daemon dies.
//!
//! `unit` holds the unit text (pure), `systemctl` the calls to the user manager, `notify` the
//! daemon's readiness message. This file is the commands: where units live, which unit belongs
//! to which state dir, and what each command prints.

pub mod notify;
mod systemctl;
mod unit;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fybrk_control::Client;
use serde::Serialize;

use crate::mounts;
use crate::state::StateDir;
use systemctl::{session_problem, systemctl_ok};
use unit::UnitSpec;

/// `fybrk service ...`.
#[derive(clap::Subcommand)]
pub enum ServiceCmd {
    /// Write a systemd user unit that mounts DIR at login and restarts the daemon if it dies,
    /// then enable and start it (a running `fybrk mount` of DIR is handed over).
    Install {
        /// The mount point (created if missing). Default: ~/Fybrk.
        dir: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stop the service (unmounting the folder), disable it and remove its unit.
    Uninstall {
        /// The mount point. Default: the service of this state dir.
        dir: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Whether the service runs: active state, daemon pid, since when, restarts.
    Status {
        /// The mount point. Default: every fybrk service of this user.
        dir: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the unit `install` would write, without installing it (to review it, or to
    /// install it by hand).
    Unit {
        /// The mount point. Default: ~/Fybrk.
        dir: Option<PathBuf>,
    },
}

/// What `install` did (`--json`).
#[derive(Serialize)]
struct Installed {
    unit: String,
    unit_file: PathBuf,
    mount_point: String,
    state_dir: String,
    /// The unit's text changed while it was running: restart it to apply.
    restart_needed: bool,
    /// `loginctl`'s linger setting (`None`: logind could not say).
    linger: Option<bool>,
}

/// What `uninstall` removed (`--json`).
#[derive(Serialize)]
struct Uninstalled {
    removed: Vec<String>,
}

/// One service as `status` shows it (`--json`: `{"services": [...]}`).
#[derive(Serialize)]
struct ServiceStatus {
    unit: String,
    unit_file: PathBuf,
    mount_point: String,
    state_dir: String,
    /// systemd's `ActiveState` (active, activating, failed, inactive, ...); `None` when no user
    /// manager answered.
    active_state: Option<String>,
    sub_state: Option<String>,
    /// The daemon's pid while it runs.
    main_pid: Option<u32>,
    /// When it last became active, as systemd prints it.
    since: Option<String>,
    /// `enabled`, `disabled`, ...
    enabled: Option<String>,
    /// Automatic restarts since the unit was loaded.
    restarts: Option<u32>,
    /// The daemon's own status line (`serving DIR`, or why it failed).
    status_text: Option<String>,
}

#[derive(Serialize)]
struct StatusReport {
    services: Vec<ServiceStatus>,
    /// Why systemd could not be asked, when it could not.
    systemd_problem: Option<String>,
}

/// Runs one `service` command.
pub fn run(cmd: ServiceCmd, state: &StateDir, config: Option<&Path>) -> Result<ExitCode> {
    match cmd {
        ServiceCmd::Install { dir, json } => install(state, config, dir, json),
        ServiceCmd::Uninstall { dir, json } => uninstall(state, dir, json),
        ServiceCmd::Status { dir, json } => status(dir, json),
        ServiceCmd::Unit { dir } => {
            print!("{}", spec(state, config, dir)?.render());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `$XDG_CONFIG_HOME/systemd/user`, where the user manager looks for units.
fn unit_dir() -> Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(config.join("systemd/user"))
}

/// The default mount point, as `scripts/run.sh` uses it.
fn default_dir() -> Result<PathBuf> {
    Ok(PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join("Fybrk"))
}

fn spec(state: &StateDir, config: Option<&Path>, dir: Option<PathBuf>) -> Result<UnitSpec> {
    let mnt = mounts::absolute(&dir.map_or_else(default_dir, Ok)?)?;
    let exe = std::env::current_exe().context("cannot find the fybrk executable")?;
    let config = config.map(std::path::absolute).transpose()?;
    UnitSpec::new(&exe, &state.root, config.as_deref(), &mnt)
}

/// The fybrk units installed, with the (mount point, state dir) each names.
fn installed() -> Result<Vec<(String, PathBuf, String, String)>> {
    let dir = unit_dir()?;
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !unit::is_unit_name(&name) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if let Some((mount, state)) = unit::parse_markers(&text) {
            out.push((name, e.path(), mount, state));
        }
    }
    out.sort();
    Ok(out)
}

fn install(
    state: &StateDir,
    config: Option<&Path>,
    dir: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let spec = spec(state, config, dir)?;
    let name = spec.name();
    let path = unit_dir()?.join(&name);
    // Checked before anything is written: a unit nobody can start is worse than none.
    if let Some(problem) = session_problem() {
        bail!("{problem}");
    }
    // One daemon per state dir: a second unit on it would fail to start, again and again.
    for (other, _, mount, st) in installed()? {
        if other != name && Path::new(&st) == state.root {
            bail!(
                "the service {other} already mounts this state dir ({}) at {mount}: run \
                 `fybrk service uninstall {mount}` first, or use another --state",
                state.root.display()
            );
        }
    }
    let mnt = Path::new(&spec.mount_point);
    // mkdir -p, unless something (a stale mount, which would answer ENOTCONN) is mounted there.
    if mounts::mount_at(mnt).is_none() {
        std::fs::create_dir_all(mnt).with_context(|| format!("cannot create {}", mnt.display()))?;
    }
    let props = systemctl::show(&name)?;
    let unit_pid: u32 = props
        .get("MainPID")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    hand_over(state, mnt, unit_pid)?;

    let text = spec.render();
    let unchanged = std::fs::read_to_string(&path).is_ok_and(|old| old == text);
    if !unchanged {
        write_unit(&path, &text)?;
    }
    systemctl_ok(&["daemon-reload"])?;
    // Type=notify: this returns once the daemon has said READY=1, or fails with the start.
    if let Err(e) = systemctl_ok(&["enable", "--now", &name]) {
        let log = systemctl::journal_tail(&name, 15);
        return Err(e.context(format!(
            "the service did not start; its last log lines:\n{log}\n(more: journalctl --user -u {name})"
        )));
    }
    let running_before = props.get("ActiveState").is_some_and(|s| s == "active");
    let report = Installed {
        unit: name.clone(),
        unit_file: path.clone(),
        mount_point: spec.mount_point.clone(),
        state_dir: spec.state.clone(),
        restart_needed: running_before && !unchanged,
        linger: systemctl::linger(),
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "fybrk: service {name} installed and started: {} is mounted now and at every login",
        spec.mount_point
    );
    println!("  unit file: {}", path.display());
    println!("  status:    fybrk service status   (log: journalctl --user -u {name})");
    if report.restart_needed {
        println!("  the unit changed while it ran; apply it with: systemctl --user restart {name}");
    }
    if report.linger == Some(false) {
        println!(
            "  linger is off: the folder is unmounted when your last session ends and mounted at \
             your next login. To keep it mounted without a login (and mount it at boot):\n    \
             loginctl enable-linger $USER"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A daemon of this state dir started by hand (`fybrk mount`) holds the state lock, so the
/// service could not start: unmount it first if it serves the same folder, refuse otherwise.
fn hand_over(state: &StateDir, mnt: &Path, unit_pid: u32) -> Result<()> {
    let Ok(s) =
        Client::new(state.socket()).call(fybrk_control::Status, Some(Duration::from_secs(10)))
    else {
        return Ok(());
    };
    if s.pid == unit_pid {
        return Ok(()); // the service's own daemon: installing again
    }
    if s.mount_point != mnt {
        bail!(
            "a fybrk daemon (pid {}) already runs this state dir ({}) at {}: `fybrk unmount {}` \
             first, or use another --state",
            s.pid,
            state.root.display(),
            s.mount_point.display(),
            s.mount_point.display()
        );
    }
    // stderr: with --json, stdout carries only the report.
    eprintln!(
        "fybrk: {} is mounted by hand (pid {}); unmounting it so systemd can take over",
        mnt.display(),
        s.pid
    );
    crate::unmount(state, mnt).map(drop)
}

/// Replaces the unit file atomically (a half-written unit must never be loaded).
fn write_unit(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow!("bad unit path"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".fybrk-unit.{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn uninstall(state: &StateDir, dir: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let units: Vec<(String, PathBuf)> = match dir {
        Some(d) => {
            let mnt = mounts::absolute(&d)?;
            let mnt = mnt
                .to_str()
                .ok_or_else(|| anyhow!("{} is not UTF-8", mnt.display()))?;
            let name = unit::unit_name(mnt);
            let path = unit_dir()?.join(&name);
            if path.exists() {
                vec![(name, path)]
            } else {
                Vec::new()
            }
        }
        None => installed()?
            .into_iter()
            .filter(|(_, _, _, st)| Path::new(st) == state.root)
            .map(|(name, path, _, _)| (name, path))
            .collect(),
    };
    if !units.is_empty() {
        // Stopping needs the manager; removing the file of a running unit would orphan it.
        if let Some(problem) = session_problem() {
            bail!("{problem}");
        }
    }
    for (name, path) in &units {
        // `disable --now` stops it first: ExecStop unmounts the folder.
        systemctl_ok(&["disable", "--now", name])?;
        std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
        // Forget a failed state, so `status` does not list a unit that is gone.
        let _ = systemctl::systemctl(&["reset-failed", name]);
    }
    if !units.is_empty() {
        systemctl_ok(&["daemon-reload"])?;
    }
    let removed: Vec<String> = units.into_iter().map(|(n, _)| n).collect();
    if json {
        println!("{}", serde_json::to_string(&Uninstalled { removed })?);
    } else if removed.is_empty() {
        println!(
            "fybrk: no fybrk service to remove (state dir {})",
            state.root.display()
        );
    } else {
        for name in &removed {
            println!("fybrk: stopped, disabled and removed {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(dir: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let mut units = installed()?;
    if let Some(d) = dir {
        let mnt = mounts::absolute(&d)?;
        units.retain(|(_, _, m, _)| Path::new(m) == mnt);
    }
    let problem = if units.is_empty() {
        None
    } else {
        session_problem()
    };
    let mut services = Vec::new();
    for (unit, unit_file, mount_point, state_dir) in units {
        let props = match problem {
            None => systemctl::show(&unit)?,
            Some(_) => Default::default(),
        };
        let get = |k: &str| props.get(k).filter(|v| !v.is_empty()).cloned();
        services.push(ServiceStatus {
            active_state: get("ActiveState"),
            sub_state: get("SubState"),
            main_pid: get("MainPID")
                .and_then(|p| p.parse().ok())
                .filter(|p| *p != 0),
            since: get("ActiveEnterTimestamp"),
            enabled: get("UnitFileState"),
            restarts: get("NRestarts").and_then(|n| n.parse().ok()),
            status_text: get("StatusText"),
            unit,
            unit_file,
            mount_point,
            state_dir,
        });
    }
    let report = StatusReport {
        services,
        systemd_problem: problem,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_status(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(r: &StatusReport) {
    if r.services.is_empty() {
        println!("no fybrk service is installed (`fybrk service install DIR` adds one)");
    }
    for s in &r.services {
        println!("{}  {}", s.unit, s.mount_point);
        let state = match (&s.active_state, &s.sub_state) {
            (Some(a), Some(sub)) => format!("{a} ({sub})"),
            (Some(a), None) => a.clone(),
            _ => "unknown".into(),
        };
        let mut line = format!("  {state}");
        if let Some(since) = &s.since {
            line += &format!(" since {since}");
        }
        if let Some(pid) = s.main_pid {
            line += &format!(", pid {pid}");
        }
        if let Some(e) = &s.enabled {
            line += &format!(", {e}");
        }
        if let Some(n) = s.restarts.filter(|n| *n > 0) {
            line += &format!(", restarts: {n}");
        }
        println!("{line}");
        if let Some(t) = &s.status_text {
            println!("  daemon: {t}");
        }
        println!(
            "  state dir {}; log: journalctl --user -u {}",
            s.state_dir, s.unit
        );
    }
    if let Some(p) = &r.systemd_problem {
        println!("({p})");
    }
}
