//! The commands that talk to the daemon about other devices: `pair`, `pair-with`, `peers`,
//! `unpair`, and `status --watch`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fybrk_control::{Client, InviteShown, PairWaitReply};

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

/// `fybrk pair`.
pub fn pair(
    state: &StateDir,
    expires: Duration,
    png: Option<PathBuf>,
    no_wait: bool,
    json_out: bool,
) -> Result<ExitCode> {
    let daemon = Client::new(state.socket());
    let inv = daemon.call(
        fybrk_control::Pair {
            expires_secs: expires.as_secs(),
        },
        QUICK,
    )?;
    let png = png.unwrap_or_else(|| PathBuf::from(format!("fybrk-pair-{}.png", unix_now())));
    let png = std::path::absolute(&png).unwrap_or(png);
    fybrk_pair::save_png(&inv.qr, &png)
        .with_context(|| format!("cannot save the QR code to {}", png.display()))?;
    let secs_left = inv.expires_unix.saturating_sub(unix_now());
    if json_out {
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
        println!("QR code saved to {}", png.display());
        println!(
            "The invitation works once and expires in {} (at unix time {}).",
            fmt_secs(secs_left),
            inv.expires_unix
        );
    }
    let _ = std::io::stdout().flush();
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let tty = !json_out && std::io::IsTerminal::is_terminal(&std::io::stdout());
    if !json_out {
        println!("Waiting for a device to join (Ctrl-C stops waiting; the invitation stays valid)");
    }
    let wait = fybrk_control::PairWait {
        invite: inv.invite,
        wait_secs: 1,
    };
    let joined = loop {
        match daemon.call(wait, QUICK)? {
            PairWaitReply::Joined { joined } => break joined,
            PairWaitReply::Waiting { expires_unix, .. } => {
                if tty {
                    let left = expires_unix.saturating_sub(unix_now());
                    print!("\r  {} left   ", fmt_secs(left));
                    let _ = std::io::stdout().flush();
                }
            }
        }
    };
    if tty {
        println!();
    }
    if json_out {
        let reply = PairWaitReply::Joined { joined };
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        println!("Paired with {} ({}). Syncing.", joined.name, joined.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `fybrk pair-with`.
pub fn pair_with(state: &StateDir, payload: &str) -> Result<ExitCode> {
    let r = Client::new(state.socket()).call(
        fybrk_control::PairWith {
            payload: payload.to_owned(),
        },
        Some(Duration::from_secs(300)),
    )?;
    println!(
        "paired with {} ({}); syncing the folder",
        r.peer.name, r.peer.id
    );
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

/// `fybrk unpair`.
pub fn unpair(state: &StateDir, id: &str) -> Result<ExitCode> {
    let r = Client::new(state.socket()).call(fybrk_control::Unpair { id: id.to_owned() }, QUICK)?;
    println!(
        "unpaired {} ({}): it can no longer connect to this device",
        r.name, r.id
    );
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
