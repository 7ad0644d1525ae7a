//! The local web page and `/metrics`, served by the daemon on loopback.
//!
//! [`start`] binds `web_listen` (default [`crate::config::DEFAULT_WEB_LISTEN`]) and, if set,
//! `metrics_listen`; a port that is taken is a warning in the log, never a failed mount. The
//! page needs the per-state-dir token (`STATE/web.token`, see [`auth`]); the address actually
//! bound goes to `STATE/web.addr` for `fybrk web` ([`cmd`]).
//!
//! # Layout
//!
//! - [`http`]: reading a bounded HTTP/1.1 request, writing a response.
//! - [`auth`]: the token, and the Host / Origin checks.
//! - [`routes`]: pages and actions, through the daemon's [`fybrk_control::Handler`].
//! - [`pages`]: the HTML; [`chart`] and [`qr`] its SVG pictures.
//! - [`samples`]: the ring of each peer's recent round trip and throughput, for the chart.
//! - [`metrics`]: the Prometheus text.
//! - [`cmd`]: `fybrk web`.

pub mod auth;
pub mod chart;
pub mod cmd;
#[cfg(test)]
mod fake;
pub mod http;
pub mod metrics;
pub mod pages;
pub mod qr;
pub mod routes;
#[cfg(test)]
mod routes_tests;
pub mod samples;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fybrk_control::{Handler, Status};

use crate::config::WebOptions;
use crate::state::StateDir;
use auth::{Token, Verdict};
use http::{HttpError, Response};
use routes::Site;

/// Connections served at once, at most; more are answered 503 at once. A page load is one or
/// two; this only stops a local program from tying up threads.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `STATE/web.token`.
pub fn token_path(state: &StateDir) -> PathBuf {
    state.root.join("web.token")
}

/// `STATE/web.addr`: where the running daemon serves the page (absent: it does not).
pub fn addr_path(state: &StateDir) -> PathBuf {
    state.root.join("web.addr")
}

/// Starts the listeners `options` ask for, serving with `handler`. Never fails: what cannot be
/// served is logged.
pub fn start<H>(state: &StateDir, options: WebOptions, handler: H)
where
    H: Handler<Error = anyhow::Error> + Send + Sync + 'static,
{
    let _ = std::fs::remove_file(addr_path(state));
    let site = Arc::new(Site {
        handler,
        samples: Mutex::new(samples::Samples::default()),
    });
    if let Some(addr) = options.metrics_listen {
        match TcpListener::bind(addr) {
            Ok(l) => {
                tracing::info!(addr = %addr, "serving /metrics without a token");
                let site = site.clone();
                spawn("web-metrics", move || serve(l, site, None));
            }
            Err(e) => {
                tracing::warn!(addr = %addr, error = %e, "cannot serve /metrics on metrics_listen")
            }
        }
    }
    if !options.enabled {
        return;
    }
    let token = match Token::load_or_create(&token_path(state)) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "no web page: cannot read or make its token");
            return;
        }
    };
    let listener = match TcpListener::bind(options.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(addr = %options.listen, error = %e, "no web page: cannot listen (set web_listen in config.toml to another port, or web = false)");
            return;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    if let Err(e) = std::fs::write(addr_path(state), format!("{addr}\n")) {
        tracing::warn!(error = %e, "cannot write web.addr; `fybrk web` will not find the page");
    }
    tracing::info!(url = %format!("http://{addr}/"), "serving the web page (`fybrk web` opens it)");
    {
        let site = site.clone();
        spawn("web-samples", move || sample(&site));
    }
    spawn("web", move || {
        serve(listener, site, Some((token, addr.port())))
    });
}

/// Forgets `web.addr` (the daemon stops).
pub fn stopped(state: &StateDir) {
    let _ = std::fs::remove_file(addr_path(state));
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        tracing::warn!(error = %e, thread = name, "cannot start a web thread");
    }
}

/// Feeds the chart's ring every [`samples::INTERVAL_SECS`].
fn sample<H: Handler<Error = anyhow::Error>>(site: &Site<H>) {
    loop {
        if let Ok(s) = site.handler.status(Status) {
            let now = crate::human::unix_now();
            site.samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .handle_status(now, &s);
        }
        std::thread::sleep(Duration::from_secs(samples::INTERVAL_SECS));
    }
}

/// Accepts forever. `auth`: the token and port (`None`: the token-free `/metrics` listener).
fn serve<H>(listener: TcpListener, site: Arc<Site<H>>, auth: Option<(Token, u16)>)
where
    H: Handler<Error = anyhow::Error> + Send + Sync + 'static,
{
    let active = Arc::new(AtomicUsize::new(0));
    let auth = Arc::new(auth);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            let _ = Response::text(503, "busy\n").write_to(&mut stream, false);
            continue;
        }
        let (site, auth, active) = (site.clone(), auth.clone(), active.clone());
        // A thread per connection, like the control socket: a restore may take a while.
        let spawned = std::thread::Builder::new()
            .name("web-conn".into())
            .spawn(move || {
                answer(stream, &site, auth.as_ref().as_ref());
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a thread for a web request");
        }
    }
}

fn answer<H: Handler<Error = anyhow::Error>>(
    mut stream: TcpStream,
    site: &Site<H>,
    auth: Option<&(Token, u16)>,
) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut head_only = false;
    let response = match http::read_request(&mut stream) {
        Err(HttpError::Io(_)) => return,
        Err(HttpError::TooLarge(code)) => Response::text(code, "request too large\n"),
        Err(HttpError::Malformed(why)) => Response::text(400, format!("bad request: {why}\n")),
        Ok(req) => {
            head_only = req.method == "HEAD";
            respond(&req, site, auth)
        }
    };
    let _ = response.write_to(&mut stream, head_only);
}

fn respond<H: Handler<Error = anyhow::Error>>(
    req: &http::Request,
    site: &Site<H>,
    auth: Option<&(Token, u16)>,
) -> Response {
    match auth {
        None if req.path == "/metrics" && (req.method == "GET" || req.method == "HEAD") => {
            site.metrics()
        }
        None => Response::text(404, "only /metrics is served here\n"),
        Some((token, port)) => match auth::check(req, token, *port) {
            Verdict::Answer(r) => r,
            Verdict::Allow => site.route(req),
        },
    }
}
