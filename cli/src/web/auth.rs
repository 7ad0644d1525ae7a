//! Who may use the page: the per-state-dir token (`STATE/web.token`), and the checks that keep
//! other web pages in the same browser out (a wrong `Host` is DNS rebinding; a foreign `Origin`
//! on a POST is a cross-site form).
//!
//! [`check`] is the whole policy, a pure function of the request: the server calls it before
//! routing anything.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;

use super::http::{Request, Response};

/// Random bytes in a token: 256 bits, so guessing is not an option.
const TOKEN_BYTES: usize = 32;

/// The token, as lower-case hex.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The hex text (for the URL `fybrk web` prints).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads `path`, or makes it (0600, once) with fresh random bytes.
    pub fn load_or_create(path: &Path) -> std::io::Result<Token> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let t = text.trim();
                if t.len() == 2 * TOKEN_BYTES && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Ok(Token(t.to_ascii_lowercase()));
                }
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a token: delete it to make a new one",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; TOKEN_BYTES];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                f.write_all(format!("{hex}\n").as_bytes())?;
                Ok(Token(hex))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `given` is this token, in time independent of where they differ.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// Answer this instead (a refusal, or the redirect that trades `?token=` for a cookie).
    Answer(Response),
}

/// The cookie's name: per port, since cookies ignore ports and two daemons on one machine have
/// two tokens.
pub fn cookie_name(port: u16) -> String {
    format!("fybrk_token_{port}")
}

/// Whether `host` (a `Host` header) names this server on loopback: `127.0.0.1`, `localhost` or
/// `[::1]`, with our port (or none when the port is 80). Anything else is a name some web page
/// pointed at 127.0.0.1 (DNS rebinding).
pub fn host_ok(host: &str, port: u16) -> bool {
    let (name, p) = match host.rsplit_once(':') {
        Some((n, p)) if !p.contains(']') => (n, p.parse::<u16>().ok()),
        _ => (host, Some(80)),
    };
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "127.0.0.1" | "localhost" | "[::1]") && p == Some(port)
}

/// The policy. `port` is the one the server listens on.
pub fn check(req: &Request, token: &Token, port: u16) -> Verdict {
    let refuse =
        |status: u16, why: &str| Verdict::Answer(Response::text(status, format!("{why}\n")));
    let Some(host) = req.header("host").filter(|h| host_ok(h, port)) else {
        return refuse(
            403,
            "forbidden: wrong Host header (use http://127.0.0.1:PORT/)",
        );
    };
    if req.method != "GET" && req.method != "HEAD" {
        // A browser sends Origin with every POST, and Sec-Fetch-Site; a page elsewhere can fake
        // neither. Origin is `null` when a referrer policy hides it: then Sec-Fetch-Site
        // decides. Scripts (curl with the bearer token) send neither.
        let same = format!("http://{host}");
        match (req.header("origin"), req.header("sec-fetch-site")) {
            (Some(o), None | Some("same-origin")) if o.eq_ignore_ascii_case(&same) => {}
            (Some("null") | None, Some("same-origin")) => {}
            (None, None) => {}
            _ => return refuse(403, "forbidden: cross-origin request"),
        }
    }
    let bearer = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = cookie_value(req, &cookie_name(port));
    let query = req.query("token");
    let given = bearer.or(cookie.as_deref()).or(query);
    match given {
        None => refuse(
            401,
            "unauthorized: open the URL `fybrk web` prints (it carries the token)",
        ),
        Some(t) if !token.matches(t) => refuse(403, "forbidden: wrong token"),
        Some(_) if bearer.is_none() && cookie.is_none() && req.method == "GET" => {
            // From the URL: keep it in a cookie the browser sends only to this page, and take
            // it out of the address bar (and history).
            let rest: Vec<String> = req
                .query
                .iter()
                .filter(|(k, _)| k != "token")
                .map(|(k, v)| format!("{}={}", super::http::encode(k), super::http::encode(v)))
                .collect();
            let mut location = super::http::encode(&req.path);
            if !rest.is_empty() {
                location = format!("{location}?{}", rest.join("&"));
            }
            let mut r = Response::redirect(&location);
            r.headers.push((
                "Set-Cookie".into(),
                format!(
                    "{}={}; HttpOnly; SameSite=Strict; Path=/",
                    cookie_name(port),
                    token.as_str()
                ),
            ));
            Verdict::Answer(r)
        }
        Some(_) => Verdict::Allow,
    }
}

fn cookie_value(req: &Request, name: &str) -> Option<String> {
    req.headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: u16 = 22102;

    fn token() -> Token {
        Token("ab".repeat(TOKEN_BYTES))
    }

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        super::super::http::parse_head(head.trim_end().as_bytes()).unwrap()
    }

    fn status(v: Verdict) -> u16 {
        match v {
            Verdict::Allow => 200,
            Verdict::Answer(r) => r.status,
        }
    }

    #[test]
    fn hosts() {
        assert!(host_ok("127.0.0.1:22102", PORT));
        assert!(host_ok("localhost:22102", PORT));
        assert!(host_ok("[::1]:22102", PORT));
        assert!(!host_ok("127.0.0.1:1", PORT));
        assert!(!host_ok("evil.example:22102", PORT));
        assert!(!host_ok("127.0.0.1", PORT));
        assert!(host_ok("localhost", 80));
    }

    #[test]
    fn the_token_is_required_and_traded_for_a_cookie() {
        let t = token();
        let host = ("Host", "127.0.0.1:22102");
        assert_eq!(status(check(&req("GET", "/", &[host]), &t, PORT)), 401);
        let wrong = format!("/?token={}", "cd".repeat(TOKEN_BYTES));
        assert_eq!(status(check(&req("GET", &wrong, &[host]), &t, PORT)), 403);
        let url = format!("/history?path=a%20b&token={}", t.as_str());
        let Verdict::Answer(r) = check(&req("GET", &url, &[host]), &t, PORT) else {
            panic!("no redirect")
        };
        assert_eq!(r.status, 303);
        let get = |n: &str| r.headers.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("Location"), "/history?path=a%20b");
        assert!(get("Set-Cookie").starts_with("fybrk_token_22102=abab"));
        assert!(get("Set-Cookie").contains("HttpOnly; SameSite=Strict"));
        let cookie = format!("other=1; fybrk_token_22102={}", t.as_str());
        let by_cookie = req("GET", "/", &[host, ("Cookie", &cookie)]);
        assert_eq!(status(check(&by_cookie, &t, PORT)), 200);
        let bearer = format!("Bearer {}", t.as_str());
        let by_bearer = req("GET", "/metrics", &[host, ("Authorization", &bearer)]);
        assert_eq!(status(check(&by_bearer, &t, PORT)), 200);
    }

    #[test]
    fn rebinding_and_cross_site_posts_are_refused() {
        let t = token();
        let bearer = format!("Bearer {}", t.as_str());
        let auth = ("Authorization", bearer.as_str());
        let evil = req("GET", "/", &[("Host", "evil.example:22102"), auth]);
        assert_eq!(status(check(&evil, &t, PORT)), 403);
        let no_host = req("GET", "/", &[auth]);
        assert_eq!(status(check(&no_host, &t, PORT)), 403);
        let host = ("Host", "127.0.0.1:22102");
        let cross = req(
            "POST",
            "/restore",
            &[host, auth, ("Origin", "http://evil.example")],
        );
        assert_eq!(status(check(&cross, &t, PORT)), 403);
        let null = req("POST", "/restore", &[host, auth, ("Origin", "null")]);
        assert_eq!(status(check(&null, &t, PORT)), 403);
        let hidden = [
            host,
            auth,
            ("Origin", "null"),
            ("Sec-Fetch-Site", "same-origin"),
        ];
        assert_eq!(
            status(check(&req("POST", "/restore", &hidden), &t, PORT)),
            200
        );
        let lying = [
            host,
            auth,
            ("Origin", "http://127.0.0.1:22102"),
            ("Sec-Fetch-Site", "cross-site"),
        ];
        assert_eq!(
            status(check(&req("POST", "/restore", &lying), &t, PORT)),
            403
        );
        let site = req(
            "POST",
            "/restore",
            &[host, auth, ("Sec-Fetch-Site", "cross-site")],
        );
        assert_eq!(status(check(&site, &t, PORT)), 403);
        let same = req(
            "POST",
            "/restore",
            &[host, auth, ("Origin", "http://127.0.0.1:22102")],
        );
        assert_eq!(status(check(&same, &t, PORT)), 200);
        let script = req("POST", "/restore", &[host, auth]);
        assert_eq!(status(check(&script, &t, PORT)), 200);
    }

    #[test]
    fn the_token_file_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.token");
        let a = Token::load_or_create(&path).unwrap();
        let b = Token::load_or_create(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "short\n").unwrap();
        assert!(Token::load_or_create(&path).is_err());
    }
}
