//! Which page or action a request is: every action calls the same typed control API the CLI
//! uses ([`fybrk_control::Handler`], in process), so the page can do nothing the socket cannot.

use std::sync::Mutex;

use fybrk_control::{Approve, Deny, Handler, Log, Members, Pair, Restore, Status};

use super::http::{Request, Response};
use super::pages;
use super::samples::Samples;

/// Versions listed on the history page, at most.
const LOG_LIMIT: u64 = 200;
/// How long an invitation made on the page is valid (as `fybrk pair`'s default).
const INVITE_SECS: u64 = 600;

/// What the routes need: the daemon's handler and the chart's samples.
pub struct Site<H> {
    /// The daemon's control handler.
    pub handler: H,
    /// The ring the sampler fills.
    pub samples: Mutex<Samples>,
}

impl<H: Handler<Error = anyhow::Error>> Site<H> {
    /// Answers an authorised request.
    pub fn route(&self, req: &Request) -> Response {
        let get = req.method == "GET" || req.method == "HEAD";
        let post = req.method == "POST";
        match (req.path.as_str(), get, post) {
            ("/", true, _) => self.overview(),
            ("/metrics", true, _) => self.metrics(),
            ("/pair", true, _) => self.pair_page(false),
            ("/pair", _, true) => self.pair_page(true),
            ("/approve" | "/deny", _, true) => self.decide(req),
            ("/history", true, _) => self.history(req),
            ("/restore", _, true) => self.restore(req),
            ("/" | "/metrics" | "/pair" | "/approve" | "/deny" | "/history" | "/restore", _, _) => {
                Response::text(405, "method not allowed\n")
            }
            _ => Response::text(404, "not found\n"),
        }
    }

    fn device(&self) -> String {
        self.handler
            .status(Status)
            .map(|s| s.device_name)
            .unwrap_or_default()
    }

    fn failed(&self, what: &str, e: &anyhow::Error) -> Response {
        Response::html(500, pages::failed(&self.device(), what, &format!("{e:#}")))
    }

    fn overview(&self) -> Response {
        let status = match self.handler.status(Status) {
            Ok(s) => s,
            Err(e) => return self.failed("Overview", &e),
        };
        let members = self.handler.members(Members).unwrap_or_default();
        let now = crate::human::unix_now();
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let page = pages::overview(&status, &members, |p| {
            pages::chart_of(&samples.of(&p.id), now)
        });
        Response::html(200, page)
    }

    /// `/metrics` (also served alone on `metrics_listen`).
    pub fn metrics(&self) -> Response {
        match self.handler.status(Status) {
            Ok(s) => {
                let mut r = Response::text(
                    200,
                    super::metrics::render(&s, &fybrk_fs::metrics::snapshot()),
                );
                r.content_type = super::metrics::CONTENT_TYPE;
                r
            }
            Err(e) => Response::text(500, format!("status failed: {e:#}\n")),
        }
    }

    fn pair_page(&self, make: bool) -> Response {
        let status = match self.handler.status(Status) {
            Ok(s) => s,
            Err(e) => return self.failed("Pair", &e),
        };
        if !make {
            return Response::html(200, pages::pair(&status, None));
        }
        // Asking before anyone joins (`yes: false`), as `fybrk pair` does by default.
        match self.handler.pair(Pair::expiring(INVITE_SECS)) {
            Ok(inv) => {
                let qr = super::qr::svg(&inv.qr);
                Response::html(200, pages::pair(&status, Some((&inv, qr))))
            }
            Err(e) => self.failed("Pair", &e),
        }
    }

    fn decide(&self, req: &Request) -> Response {
        let Some(id) = req.form("id") else {
            return Response::text(400, "no device id\n");
        };
        let r = if req.path == "/approve" {
            self.handler.approve(Approve { id })
        } else {
            self.handler.deny(Deny { id })
        };
        match r {
            Ok(_) => Response::redirect("/"),
            Err(e) => self.failed("Approve or deny", &e),
        }
    }

    fn history(&self, req: &Request) -> Response {
        let path = clean(req.query("path").unwrap_or_default());
        let log = self.handler.log(Log {
            path: path.clone(),
            limit: Some(LOG_LIMIT),
        });
        let note = req.query("restored").map(|n| {
            format!("Restored {n} path(s): the old version is now the current one on every device.")
        });
        let page = pages::history(
            &self.device(),
            &path,
            log.as_ref().map_err(|e| format!("{e:#}")),
            note.as_deref(),
        );
        Response::html(200, page)
    }

    fn restore(&self, req: &Request) -> Response {
        let path = clean(&req.form("path").unwrap_or_default());
        let Some(version) = req.form("version").and_then(|v| v.parse::<u64>().ok()) else {
            return Response::text(400, "no version\n");
        };
        let r = self.handler.restore(Restore {
            path: path.clone(),
            at_ns: None,
            version: Some(version),
            to: None,
        });
        match r {
            Ok(r) => Response::redirect(&format!(
                "{}&restored={}",
                pages::history_link(&path),
                r.restored
            )),
            Err(e) => self.failed("Restore", &e),
        }
    }
}

/// A folder path as the protocol takes it: `/`-separated, no leading or trailing slash.
fn clean(path: &str) -> String {
    path.trim().trim_matches('/').to_string()
}
