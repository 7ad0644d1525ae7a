//! The commands that talk to the daemon about other devices: `pair` (and `approve`, `deny`,
//! `pair --cancel`), `pair-with`, `peers`, `members`, `remove` (`unpair`), and `status --watch`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fybrk_control::{Client, InviteShown, PairCancel, PairWaitReply, PairWithReply};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::human::{fmt_secs, human_bytes, print_peers, print_status, unix_now};
use crate::state::StateDir;

/// Control calls that should answer at once.
const QUICK: Option<Duration> = Some(Duration::from_secs(10));

/// `600`, `90s`, `10m`, `1h` -> a duration (1 s to 24 h).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 600, 90s, 10m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" | "min" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use s, m or h")),
    };
    if !(1..=86_400).contains(&secs) {
        return Err(format!("{s:?}: an invitation lasts between 1 s and 24 h"));
    }
    Ok(Duration::from_secs(secs))
}

/// What `fybrk pair` was asked to do.
pub struct PairOptions {
    /// How long the invitation is valid.
    pub expires: Duration,
    /// Where to save the QR code (default: the current directory).
    pub png: Option<PathBuf>,
    /// Return after showing the invitation.
    pub no_wait: bool,
    /// Approve the first valid request in advance.
    pub yes: bool,
    /// How long a request waits for approval.
    pub approve_within: Duration,
    /// One JSON line per event.
    pub json: bool,
}

/// Set by SIGINT while `fybrk pair` waits: the invitation is cancelled before exiting.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches Ctrl-C so a waiting `fybrk pair` can cancel its invitation instead of leaving it
/// open. Without `SA_RESTART`, a blocking read (the prompt, the control socket) returns
/// `EINTR` at once, so the loop notices within one step.
fn catch_ctrl_c() {
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe, and touches no
    // other state; replacing SIGINT's disposition affects only this short-lived CLI process.
    if let Err(e) = unsafe { sigaction(Signal::SIGINT, &action) } {
        tracing::debug!(error = %e, "cannot catch Ctrl-C");
    }
}

/// `fybrk pair`.
pub fn pair(state: &StateDir, opts: PairOptions) -> Result<ExitCode> {
    let daemon = Client::new(state.socket());
    let png = opts
        .png
        .unwrap_or_else(|| PathBuf::from(format!("fybrk-pair-{}.png", unix_now())));
    let png = std::path::absolute(&png).unwrap_or(png);
    let inv = daemon.call(
        fybrk_control::Pair {
            expires_secs: opts.expires.as_secs(),
            yes: opts.yes,
            approve_within_secs: Some(opts.approve_within.as_secs()),
            png: Some(png.clone()),
        },
        QUICK,
    )?;
    if let Err(e) = fybrk_pair::save_png(&inv.qr, &png) {
        let _ = daemon.call(
            PairCancel {
                invite: Some(inv.invite),
            },
            QUICK,
        );
        return Err(e).with_context(|| format!("cannot save the QR code to {}", png.display()));
    }
    let secs_left = inv.expires_unix.saturating_sub(unix_now());
    if opts.json {
        let shown = InviteShown {
            payload: inv.payload.clone(),
            expires_unix: inv.expires_unix,
            png: png.clone(),
        };
        println!("{}", serde_json::to_string(&shown)?);
    } else {
        match fybrk_pair::render_terminal(&inv.qr) {
            Ok(code) => println!("{code}"),
            Err(e) => println!("(cannot draw the QR code here: {e})"),
        }
        println!("Scan the code, or run this on the other device:\n");
        println!("  fybrk pair-with '{}'\n", inv.payload);
        println!(
            "QR code saved to {} (readable by you only; deleted when the invitation ends)",
            png.display()
        );
        println!(
            "The invitation works once and expires in {} (at unix time {}).",
            fmt_secs(secs_left),
            inv.expires_unix
        );
        if opts.yes {
            println!("Whoever uses it first gets the folder without being asked (--yes).");
        }
    }
    let _ = std::io::stdout().flush();
    if opts.no_wait {
        if !opts.json && !opts.yes {
            println!(
                "When a device asks, `fybrk status` lists it; allow it with `fybrk approve ID` \
                 or refuse with `fybrk deny ID`. `fybrk pair --cancel` ends the invitation."
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    catch_ctrl_c();
    let outcome = wait_for_join(&daemon, inv.invite, opts.json);
    // The daemon deletes it too; the CLI wrote it, so it cleans up whatever happened.
    let _ = std::fs::remove_file(&png);
    let joined = outcome?;
    if opts.json {
        let reply = PairWaitReply::Joined { joined };
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        println!("Paired with {} ({}). Syncing.", joined.name, joined.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows invitation `invite` until a device joins; asks the person about each request when
/// there is a terminal, prints it (JSON or how to approve) otherwise. Ctrl-C cancels.
fn wait_for_join(daemon: &Client, invite: u64, json_out: bool) -> Result<fybrk_control::PeerRef> {
    let ask = !json_out && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let tty = !json_out && std::io::stdout().is_terminal();
    if !json_out {
        println!("Waiting for a device to join (Ctrl-C cancels the invitation)");
    }
    let wait = fybrk_control::PairWait {
        invite,
        wait_secs: 1,
    };
    let mut shown: Option<String> = None;
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            let _ = daemon.call(
                PairCancel {
                    invite: Some(invite),
                },
                QUICK,
            );
            bail!("interrupted: the invitation was cancelled");
        }
        let reply = match daemon.call(wait, QUICK) {
            Ok(r) => r,
            Err(_) if INTERRUPTED.load(Ordering::SeqCst) => continue,
            Err(e) => return Err(e.into()),
        };
        match reply {
            PairWaitReply::Joined { joined } => {
                if tty {
                    println!();
                }
                return Ok(joined);
            }
            PairWaitReply::Request { request } => {
                if shown.as_deref() == Some(request.id.as_str()) {
                    continue;
                }
                shown = Some(request.id.clone());
                if json_out {
                    println!(
                        "{}",
                        serde_json::to_string(&PairWaitReply::Request { request })?
                    );
                    let _ = std::io::stdout().flush();
                    continue;
                }
                println!(
                    "\n{} ({}) asks to join this folder.\nIts screen must show the same words:\n\n    {}\n",
                    request.name, request.id, request.code
                );
                if !ask {
                    println!(
                        "Allow it with `fybrk approve {}`, or refuse with `fybrk deny {}`.",
                        request.id, request.id
                    );
                    continue;
                }
                let allow = prompt("Allow? [y/N] ")?;
                if INTERRUPTED.load(Ordering::SeqCst) {
                    continue;
                }
                let decision = if allow {
                    daemon
                        .call(fybrk_control::Approve { id: request.id }, QUICK)
                        .map(|_| ())
                } else {
                    daemon
                        .call(fybrk_control::Deny { id: request.id }, QUICK)
                        .map(|_| ())
                };
                decision?;
            }
            PairWaitReply::Waiting { expires_unix, .. } => {
                if tty {
                    let left = expires_unix.saturating_sub(unix_now());
                    print!("\r  {} left   ", fmt_secs(left));
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }
}

/// Asks a yes/no question on the terminal; anything but y/yes is no (so is Ctrl-C).
fn prompt(question: &str) -> Result<bool> {
    print!("{question}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(_) => Ok(matches!(
            line.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `fybrk pair --cancel`.
pub fn cancel(state: &StateDir, json_out: bool) -> Result<ExitCode> {
    let r = Client::new(state.socket()).call(PairCancel { invite: None }, QUICK)?;
    if json_out {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("cancelled {} open invitation(s)", r.cancelled);
    }
    Ok(ExitCode::SUCCESS)
}

/// `fybrk approve` / `fybrk deny`.
pub fn decide(state: &StateDir, id: &str, approve: bool, json_out: bool) -> Result<ExitCode> {
    let daemon = Client::new(state.socket());
    let id = id.to_owned();
    let who = if approve {
        daemon.call(fybrk_control::Approve { id }, QUICK)?
    } else {
        daemon.call(fybrk_control::Deny { id }, QUICK)?
    };
    if json_out {
        println!("{}", serde_json::to_string(&who)?);
    } else if approve {
        println!("allowed {} ({}) to join", who.name, who.id);
    } else {
        println!(
            "refused {} ({}); the invitation has ended",
            who.name, who.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The invitation text: the argument, standard input for `-`, or the QR code in a picture.
fn invitation_text(payload: Option<&str>, qr: Option<&Path>) -> Result<String> {
    if let Some(path) = qr {
        return Ok(fybrk_pair::read_image(path)?);
    }
    match payload {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the invitation from standard input")?;
            Ok(line.trim().to_owned())
        }
        Some(p) => Ok(p.to_owned()),
        None => {
            bail!("give the invitation's text, `-` to read it from standard input, or --qr FILE")
        }
    }
}

/// Asks before this device's own files are merged into another folder (they will be shared
/// with every device of that folder). `yes` answers for the user; without a terminal the
/// answer is no, with a message saying how to agree.
fn confirm_merge(daemon: &Client, payload: &str, yes: bool) -> Result<()> {
    let status = daemon.call(fybrk_control::Status, QUICK)?;
    let entries = status.files + status.symlinks + status.dirs;
    if entries == 0 || yes {
        return Ok(());
    }
    // A malformed invitation is reported by the daemon, with its reasons.
    let inviter = fybrk_pair::Invitation::parse(payload, unix_now())
        .map(|i| fybrk_pair::sanitize_name(&i.inviter_name))
        .unwrap_or_else(|_| "the inviting device".into());
    let question = format!(
        "This folder holds {} files ({}). Joining shares them with {inviter}'s folder and every \
         device in it.",
        status.files,
        human_bytes(status.logical_bytes)
    );
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        bail!("{question} Run `fybrk pair-with --yes ...` to agree to that.");
    }
    println!("{question}");
    if prompt("Share them and join? [y/N] ")? {
        Ok(())
    } else {
        bail!("not joined; nothing was shared")
    }
}

/// `fybrk pair-with`. With `json_out`, the daemon's answers are JSON lines (`PairWithReply`:
/// `{"waiting": true, ...}` once when the inviting device asks its user, then `{"peer": ...}`).
pub fn pair_with(
    state: &StateDir,
    payload: Option<&str>,
    qr: Option<&Path>,
    yes: bool,
    json_out: bool,
) -> Result<ExitCode> {
    let payload = invitation_text(payload, qr)?;
    let daemon = Client::new(state.socket());
    confirm_merge(&daemon, &payload, yes)?;
    // The daemon copies this device's files into the joined folder before it answers
    // `joined`: that is the long part, drawn as the `join` operation on a terminal.
    let mut reply = crate::progress::with_progress(state, "join", || {
        daemon.call(
            fybrk_control::PairWith { payload },
            Some(Duration::from_secs(300)),
        )
    })?;
    let mut told = false;
    let peer = loop {
        if json_out && (!told || matches!(reply, PairWithReply::Joined { .. })) {
            println!("{}", serde_json::to_string(&reply)?);
        }
        match reply {
            PairWithReply::Joined { peer } => break peer,
            PairWithReply::Waiting {
                join,
                code,
                inviter,
                deadline_unix,
                ..
            } => {
                if !told && !json_out {
                    println!(
                        "{} ({}) is asking its user to allow this device.\n\
                         It must show the same words:\n\n    {code}\n\n\
                         Waiting for approval (up to {})...",
                        inviter.name,
                        inviter.id,
                        fmt_secs(deadline_unix.saturating_sub(unix_now()))
                    );
                }
                told = true;
                let _ = std::io::stdout().flush();
                reply = crate::progress::with_progress(state, "join", || {
                    daemon.call(
                        fybrk_control::PairWithWait { join, wait_secs: 2 },
                        Some(Duration::from_secs(30)),
                    )
                })?;
            }
        }
    };
    if !json_out {
        println!(
            "paired with {} ({}); syncing the folder",
            peer.name, peer.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `fybrk peers`.
pub fn peers(state: &StateDir, json_out: bool) -> Result<ExitCode> {
    let r = Client::new(state.socket()).call(fybrk_control::Peers, QUICK)?;
    if json_out {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_peers(&r);
    }
    Ok(ExitCode::SUCCESS)
}

/// `fybrk remove` (`unpair`).
pub fn remove(state: &StateDir, id: &str, json_out: bool) -> Result<ExitCode> {
    let r = Client::new(state.socket()).call(fybrk_control::Remove { id: id.to_owned() }, QUICK)?;
    if json_out {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "removed {} ({}) from the folder: no member accepts it any more",
        r.name, r.id
    );
    Ok(ExitCode::SUCCESS)
}

/// `fybrk members`.
pub fn members(state: &StateDir, json_out: bool) -> Result<ExitCode> {
    let r = Client::new(state.socket()).call(fybrk_control::Members, QUICK)?;
    if json_out {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !r.founded {
        println!("no member list yet: it arrives from the folder's members once one is connected");
    }
    for m in &r.members {
        let short: String = m.id.chars().take(7).collect();
        let by = if m.added_by == m.id {
            "founded the folder".to_string()
        } else if m.added_by_name.is_empty() {
            format!(
                "added by {}",
                m.added_by.chars().take(7).collect::<String>()
            )
        } else {
            format!("added by {}", m.added_by_name)
        };
        let state = if m.this_device {
            "this device".to_string()
        } else if m.connected {
            match (m.path, m.quality, m.rtt_ms) {
                (Some(path), Some(q), Some(rtt)) => {
                    format!("connected ({}, {rtt:.1} ms, {})", path.as_str(), q.as_str())
                }
                _ => "connected".to_string(),
            }
        } else {
            match m.last_seen_unix {
                Some(t) => format!("last seen {} ago", fmt_secs(unix_now().saturating_sub(t))),
                None => "never connected to this device".to_string(),
            }
        };
        println!(
            "{:<16} {short}  {by}, {}  {state}",
            m.name,
            fmt_secs(unix_now().saturating_sub(m.added_unix)) + " ago"
        );
    }
    if r.keys > 1 {
        println!(
            "the folder key was rotated {} time(s), after removals: new files are sealed under \
             key {}, which removed devices never got",
            r.keys - 1,
            r.current_key
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `fybrk status --watch`: redraws every second; a progress bar while anything is pending.
pub fn watch_status(state: &StateDir) -> Result<ExitCode> {
    let daemon = Client::new(state.socket());
    let mut peak_bytes = 0u64;
    let mut last_in: Option<(u64, std::time::Instant)> = None;
    loop {
        let s = match daemon.call(fybrk_control::Status, QUICK) {
            Ok(s) => s,
            Err(e) => bail!("{e:#}"),
        };
        let pending = s.network.pending_bytes;
        if pending == 0 {
            peak_bytes = 0;
        }
        peak_bytes = peak_bytes.max(pending);
        let bytes_in: u64 = s.network.peers.iter().map(|p| p.bytes_in).sum();
        let now = std::time::Instant::now();
        let rate = match last_in {
            Some((b, t)) if bytes_in >= b => {
                (bytes_in - b) as f64 / now.duration_since(t).as_secs_f64().max(0.001)
            }
            _ => 0.0,
        };
        last_in = Some((bytes_in, now));
        // Clear the screen and go home.
        print!("\x1b[2J\x1b[H");
        print_status(&s);
        if peak_bytes > 0 {
            let done = peak_bytes - pending;
            let frac = done as f64 / peak_bytes as f64;
            let width = 40;
            let filled = (frac * width as f64).round() as usize;
            println!(
                "\n[{}{}] {:5.1} %  {} of {}  {}/s",
                "#".repeat(filled),
                "-".repeat(width - filled),
                frac * 100.0,
                human_bytes(done),
                human_bytes(peak_bytes),
                human_bytes(rate as u64)
            );
        } else {
            println!("\nup to date");
        }
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("48h").is_err());
    }
}
