//! The control socket: one JSON request per connection, one JSON reply.
//!
//! `fybrk status`, `verify`, `gc` and `unmount` talk to the running daemon through
//! `STATE/control.sock` (mode 0600 inside a 0700 directory: only the owner can connect).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a client asks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Verify,
    Gc,
    Unmount,
    /// Make an invitation valid this long.
    Pair {
        expires_secs: u64,
    },
    /// Wait up to `wait_secs` until invitation `invite` is used or expires.
    PairWait {
        invite: u64,
        wait_secs: u64,
    },
    /// Join the folder of the device that made this invitation.
    PairWith {
        payload: String,
    },
    Peers,
    /// Unpair a device (id, id prefix or name).
    Unpair {
        id: String,
    },
}

/// Sends `req` to the daemon behind `socket` and returns its JSON reply.
pub fn call(socket: &Path, req: &Request, timeout: Option<Duration>) -> Result<Value> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        anyhow!("no fybrk daemon is running for this state dir ({}: {e}). Start one with `fybrk mount DIR`", socket.display())
    })?;
    stream.set_read_timeout(timeout)?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .context("the daemon did not answer")?;
    let value: Value = serde_json::from_str(&reply).context("the daemon sent a malformed reply")?;
    if let Some(err) = value.get("error").and_then(Value::as_str) {
        return Err(anyhow!("{err}"));
    }
    Ok(value)
}

/// Serves requests on `listener` forever, answering each with `handle`.
pub fn serve(
    listener: UnixListener,
    handle: impl Fn(Request) -> Result<Value> + Send + Sync + 'static,
) {
    let handle = std::sync::Arc::new(handle);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let handle = handle.clone();
        // A thread per request: verify can take minutes and must not block status.
        std::thread::spawn(move || {
            if let Err(e) = answer(stream, &*handle) {
                tracing::warn!(error = %e, "control request failed");
            }
        });
    }
}

fn answer(stream: UnixStream, handle: &dyn Fn(Request) -> Result<Value>) -> Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handle(req).unwrap_or_else(|e| serde_json::json!({ "error": format!("{e:#}") })),
        Err(e) => serde_json::json!({ "error": format!("unknown request: {e}") }),
    };
    let mut out = serde_json::to_string(&reply)?;
    out.push('\n');
    (&stream).write_all(out.as_bytes())?;
    Ok(())
}
