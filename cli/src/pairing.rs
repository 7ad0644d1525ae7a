//! The commands that talk to the daemon about other devices: `pair`, `pair-with`, `peers`,
//! `unpair`, and the peer part of `status` (also `--watch`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::control::{self, Request};
use crate::human_bytes;
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `fybrk pair`.
pub fn pair(
    state: &StateDir,
    expires: Duration,
    png: Option<PathBuf>,
    no_wait: bool,
    json_out: bool,
) -> Result<ExitCode> {
    let inv = control::call(
        &state.socket(),
        &Request::Pair {
            expires_secs: expires.as_secs(),
        },
        QUICK,
    )?;
    let payload = inv["payload"].as_str().context("daemon sent no payload")?;
    let qr = inv["qr"].as_str().unwrap_or(payload);
    let expires_unix = inv["expires_unix"].as_u64().unwrap_or(0);
    let number = inv["invite"]
        .as_u64()
        .context("daemon sent no invite number")?;
    let png = png.unwrap_or_else(|| PathBuf::from(format!("fybrk-pair-{}.png", unix_now())));
    let png = std::path::absolute(&png).unwrap_or(png);
    fybrk_pair::save_png(qr, &png)
        .with_context(|| format!("cannot save the QR code to {}", png.display()))?;
    let secs_left = expires_unix.saturating_sub(unix_now());
    if json_out {
        println!(
            "{}",
            json!({ "payload": payload, "expires_unix": expires_unix, "png": png })
        );
    } else {
        match fybrk_pair::render_terminal(qr) {
            Ok(code) => println!("{code}"),
            Err(e) => println!("(cannot draw the QR code here: {e})"),
        }
        println!("Scan the code, or run this on the other device:\n");
        println!("  fybrk pair-with '{payload}'\n");
        println!("QR code saved to {}", png.display());
        println!(
            "The invitation works once and expires in {} (at unix time {expires_unix}).",
            fmt_secs(secs_left)
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
    let joined = loop {
        let r = control::call(
            &state.socket(),
            &Request::PairWait {
                invite: number,
                wait_secs: 1,
            },
            QUICK,
        )?;
        if r["waiting"].as_bool() != Some(true) {
            break r;
        }
        if tty {
            let left = r["expires_unix"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(unix_now());
            print!("\r  {} left   ", fmt_secs(left));
            let _ = std::io::stdout().flush();
        }
    };
    if tty {
        println!();
    }
    if json_out {
        println!("{joined}");
    } else {
        println!(
            "Paired with {} ({}). Syncing.",
            joined["joined"]["name"].as_str().unwrap_or("?"),
            joined["joined"]["id"].as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `fybrk pair-with`.
pub fn pair_with(state: &StateDir, payload: &str) -> Result<ExitCode> {
    let r = control::call(
        &state.socket(),
        &Request::PairWith {
            payload: payload.to_owned(),
        },
        Some(Duration::from_secs(300)),
    )?;
    println!(
        "paired with {} ({}); syncing the folder",
        r["peer"]["name"].as_str().unwrap_or("?"),
        r["peer"]["id"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// `fybrk peers`.
pub fn peers(state: &StateDir, json_out: bool) -> Result<ExitCode> {
    let r = control::call(&state.socket(), &Request::Peers, QUICK)?;
    if json_out {
        println!("{r}");
        return Ok(ExitCode::SUCCESS);
    }
    let list = r["peers"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no paired devices: `fybrk pair` invites one");
    }
    for p in list {
        println!(
            "{:<20} {}  {}",
            p["name"].as_str().unwrap_or("?"),
            p["id"].as_str().unwrap_or("?"),
            if p["connected"].as_bool() == Some(true) {
                "connected".to_string()
            } else {
                last_seen(&p["last_seen_unix"])
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `fybrk unpair`.
pub fn unpair(state: &StateDir, id: &str) -> Result<ExitCode> {
    let r = control::call(
        &state.socket(),
        &Request::Unpair { id: id.to_owned() },
        QUICK,
    )?;
    println!(
        "unpaired {} ({}): it can no longer connect to this device",
        r["name"].as_str().unwrap_or("?"),
        r["id"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

fn fmt_secs(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

fn last_seen(v: &Value) -> String {
    match v.as_u64() {
        Some(t) => format!("last seen {} ago", fmt_secs(unix_now().saturating_sub(t))),
        None => "never connected".into(),
    }
}

/// The peers part of `fybrk status`.
pub fn print_peers_status(s: &Value) {
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        println!("peers         none (`fybrk pair` invites a device)");
        return;
    }
    let items = ["files", "dirs", "symlinks"]
        .iter()
        .map(|k| s[*k].as_u64().unwrap_or(0))
        .sum::<u64>();
    match s["pending_items"].as_u64().unwrap_or(0) {
        0 => println!("sync          {items} items here, nothing to fetch"),
        n => println!(
            "sync          {items} items here, {n} items ({}) still to fetch",
            human_bytes(s["pending_bytes"].as_u64().unwrap_or(0))
        ),
    }
    println!("peers");
    for p in peers {
        let name = p["name"].as_str().unwrap_or("?");
        let id = p["id"].as_str().unwrap_or("?");
        let short: String = id.chars().take(7).collect();
        if p["connected"].as_bool() == Some(true) {
            let state = if p["in_sync"].as_bool() == Some(true) {
                "in sync".to_string()
            } else {
                format!(
                    "syncing: {} items, {} to fetch",
                    p["pending_items"].as_u64().unwrap_or(0),
                    human_bytes(p["pending_bytes"].as_u64().unwrap_or(0))
                )
            };
            println!(
                "  {name:<16} {short}  {} {}  rtt {:.1} ms  {}/s  loss {:.1} %  {}  in {}  out {}  {state}",
                p["path"].as_str().unwrap_or("?"),
                p["addr"].as_str().unwrap_or("?"),
                p["rtt_ms"].as_f64().unwrap_or(0.0),
                human_bytes(p["throughput_bps"].as_f64().unwrap_or(0.0) as u64),
                p["loss"].as_f64().unwrap_or(0.0) * 100.0,
                p["quality"].as_str().unwrap_or("?"),
                human_bytes(p["bytes_in"].as_u64().unwrap_or(0)),
                human_bytes(p["bytes_out"].as_u64().unwrap_or(0)),
            );
        } else {
            println!(
                "  {name:<16} {short}  offline ({})  {}",
                last_seen(&p["last_seen_unix"]),
                p["addr"].as_str().unwrap_or("no known address")
            );
        }
    }
}

/// `fybrk status --watch`: redraws every second; a progress bar while anything is pending.
pub fn watch_status(state: &StateDir) -> Result<ExitCode> {
    let mut peak_bytes = 0u64;
    let mut last_in: Option<(u64, std::time::Instant)> = None;
    loop {
        let s = match control::call(&state.socket(), &Request::Status, QUICK) {
            Ok(s) => s,
            Err(e) => bail!("{e:#}"),
        };
        let pending = s["pending_bytes"].as_u64().unwrap_or(0);
        if pending == 0 {
            peak_bytes = 0;
        }
        peak_bytes = peak_bytes.max(pending);
        let bytes_in: u64 = s["peers"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["bytes_in"].as_u64()).sum())
            .unwrap_or(0);
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
        crate::print_status(&s);
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
