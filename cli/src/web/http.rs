//! Just enough HTTP/1.1 for a page on loopback: one request per connection (`Connection:
//! close`), a bounded head and body, no chunked uploads.
//!
//! Why not hyper/axum: the page needs GET, form POSTs and one response per connection; the
//! parsing below is ~150 lines with its limits in plain sight, adds no dependency and no build
//! time, and runs on plain threads like the control socket (the handler's calls block anyway).
//! Every limit is checked before memory is taken, and nothing here can panic on any input
//! (`parse_head` is property-tested on arbitrary bytes).

use std::io::{Read, Write};

/// The request line and headers together, at most (browsers send 1-2 KiB).
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers, at most.
pub const MAX_HEADERS: usize = 64;
/// A request body (a form with a path and a version), at most.
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query's pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body (at most [`MAX_BODY`]).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter called `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first field called `name` of an `application/x-www-form-urlencoded` body.
    pub fn form(&self, name: &str) -> Option<String> {
        let body = std::str::from_utf8(&self.body).ok()?;
        parse_pairs(body)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// Why a request was not read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Over one of the limits: answered 413 or 431.
    #[error("request too large")]
    TooLarge(u16),
    /// Not HTTP/1.x as we take it: answered 400.
    #[error("bad request: {0}")]
    Malformed(&'static str),
    /// The connection failed or timed out: nothing is answered.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request from `r`.
pub fn read_request(r: &mut impl Read) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::TooLarge(431));
        }
        let n = r.read(&mut chunk)?;
        if n == 0 {
            return Err(HttpError::Malformed("connection closed mid-request"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEAD {
        return Err(HttpError::TooLarge(431));
    }
    let mut req = parse_head(&buf[..head_end])?;
    if req.header("transfer-encoding").is_some() {
        return Err(HttpError::Malformed("chunked bodies are not accepted"));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| HttpError::Malformed("bad content-length"))?,
    };
    if len > MAX_BODY {
        return Err(HttpError::TooLarge(413));
    }
    let mut body = buf.get(head_end + 4..).unwrap_or_default().to_vec();
    body.truncate(len);
    while body.len() < len {
        let n = r.read(&mut chunk)?;
        if n == 0 {
            return Err(HttpError::Malformed("connection closed mid-body"));
        }
        let want = len - body.len();
        body.extend_from_slice(&chunk[..n.min(want)]);
    }
    req.body = body;
    Ok(req)
}

/// The request line and headers (without the blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| HttpError::Malformed("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed("bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not HTTP/1.x"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed("bad method"));
    }
    if !target.starts_with('/') {
        return Err(HttpError::Malformed("the target must be a path"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::TooLarge(431));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("bad header line"))?;
        if name.is_empty() || name.contains(' ') {
            return Err(HttpError::Malformed("bad header name"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        path: decode(path),
        query: parse_pairs(query),
        headers,
        body: Vec::new(),
    })
}

/// `a=1&b=x+y` as pairs, decoded.
pub fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding (and `+` as a space); invalid escapes stay as they are.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but unreserved characters and `/` (for a path in a query).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A response, always sent with `Connection: close`.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// An HTML page.
    pub fn html(status: u16, body: String) -> Response {
        Response {
            status,
            headers: Vec::new(),
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
        }
    }

    /// A short plain-text answer (errors, `/metrics`).
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    /// A `303 See Other` to `location` (after a form, and to drop the token from the URL).
    pub fn redirect(location: &str) -> Response {
        let mut r = Response::text(303, "see other\n");
        r.headers.push(("Location".into(), location.to_string()));
        r
    }

    /// Writes the response to `w`; without the body when `head_only` (a `HEAD` request: the
    /// headers, `Content-Length` included, are those of the `GET`).
    pub fn write_to(&self, w: &mut impl Write, head_only: bool) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        // The pages are the folder's private view: never cached, never framed, nothing loaded
        // from elsewhere, no referrer to other sites (`same-origin`, not `no-referrer`: with
        // that, Chromium sends `Origin: null` on the page's own forms).
        head.push_str(
            "Cache-Control: no-store\r\nReferrer-Policy: same-origin\r\nX-Frame-Options: DENY\r\n\
             X-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'; \
             style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
             frame-ancestors 'none'\r\n",
        );
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        if !head_only {
            w.write_all(&self.body)?;
        }
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_form_post() {
        let raw = b"POST /restore?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nContent-Length: 21\r\n\r\npath=a%2Fb+c&version=7";
        let req = read_request(&mut &raw[..]).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/restore");
        assert_eq!(req.query("x"), Some("1"));
        assert_eq!(req.header("host"), Some("127.0.0.1:9"));
        assert_eq!(req.form("path").as_deref(), Some("a/b c"));
        // Content-Length 21 cuts the last digit: exactly what was declared is read.
        assert_eq!(req.form("version").as_deref(), Some(""));
    }

    #[test]
    fn limits() {
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            read_request(&mut raw.as_bytes()),
            Err(HttpError::TooLarge(431))
        ));
        let raw = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(
            read_request(&mut raw.as_bytes()),
            Err(HttpError::TooLarge(431))
        ));
        let raw = "POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n";
        assert!(matches!(
            read_request(&mut raw.as_bytes()),
            Err(HttpError::TooLarge(413))
        ));
        for bad in [
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "GET / SPDY\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(
                    read_request(&mut bad.as_bytes()),
                    Err(HttpError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn decoding_round_trips() {
        assert_eq!(decode(&encode("a b/ü?&=%")), "a b/ü?&=%");
        assert_eq!(decode("%zz%4"), "%zz%4");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes);
            let _ = read_request(&mut &bytes[..]);
            let _ = decode(&String::from_utf8_lossy(&bytes));
        }
    }
}
