//! `fybrk web`: prints the page's URL with the token, and opens it in a browser when there is
//! one (`$BROWSER`, else `xdg-open`) and a display.

use std::net::TcpStream;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::state::StateDir;

/// `fybrk web --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebReply {
    /// The page, with the token (`http://127.0.0.1:PORT/?token=...`).
    pub url: String,
    /// Where the daemon serves it.
    pub addr: String,
    /// The file holding the token (for `Authorization: Bearer` in scripts).
    pub token_file: std::path::PathBuf,
    /// Whether a browser was started.
    pub opened: bool,
}

/// Runs `fybrk web`.
pub fn run(state: &StateDir, json: bool, no_open: bool) -> Result<ExitCode> {
    let addr_file = super::addr_path(state);
    let addr = match std::fs::read_to_string(&addr_file) {
        Ok(a) => a.trim().to_string(),
        Err(_) => bail!(
            "the daemon of {} serves no web page: is the folder mounted? (`web = false` in \
             config.toml turns it off, and a busy port is logged in {})",
            state.root.display(),
            state.log().display()
        ),
    };
    // A daemon killed with -9 leaves web.addr behind: say so rather than print a dead URL.
    let listening = addr
        .parse::<std::net::SocketAddr>()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !listening {
        bail!(
            "nothing answers at {addr} ({} is left from a daemon that is gone?): mount the folder",
            addr_file.display()
        );
    }
    let token_file = super::token_path(state);
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read {}", token_file.display()))?;
    let url = format!("http://{addr}/?token={}", token.trim());
    let opened = !no_open && open(&url);
    let reply = WebReply {
        url,
        addr,
        token_file,
        opened,
    };
    if json {
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        println!("{}", reply.url);
        if opened {
            eprintln!("fybrk: opened it in the browser");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts a browser on `url` if a display is there; does not wait for it.
fn open(url: &str) -> bool {
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
    if !display {
        return false;
    }
    let browser = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .or_else(|| on_path("xdg-open").then(|| "xdg-open".to_string()));
    let Some(browser) = browser else {
        return false;
    };
    std::process::Command::new(browser)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .is_ok()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(tool).is_file()))
}
