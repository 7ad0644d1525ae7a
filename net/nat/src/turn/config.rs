//! TURN server settings: `turn:HOST:PORT?user=U&pass=P` URLs ([`TurnConfig`]), parsed with the
//! password kept out of every message.

use std::fmt;
use std::str::FromStr;

use crate::stun::parse_host_port;

/// The TURN port when a server is given without one (RFC 8656 §18).
pub const DEFAULT_TURN_PORT: u16 = 3478;

/// A TURN server with long-term credentials, from `turn:HOST:PORT?user=U&pass=P`.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// Host name or IP address.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// TURN user name.
    pub username: String,
    /// TURN password.
    pub password: String,
}

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl fmt::Display for TurnConfig {
    /// The URL without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("turn:")?;
        crate::stun::fmt_host_port(&self.host, self.port, f)?;
        write!(f, "?user={}", self.username)
    }
}

/// A `turn:` URL that could not be understood. Never shows the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TURN server {value:?}: {why} (expected turn:HOST:PORT?user=USER&pass=PASSWORD)")]
pub struct TurnConfigError {
    /// The value as given, password masked.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl FromStr for TurnConfig {
    type Err = TurnConfigError;

    fn from_str(s: &str) -> Result<Self, TurnConfigError> {
        let fail = |why: String| TurnConfigError {
            value: mask_password(s),
            why,
        };
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("turns:") {
            return Err(fail(
                "turns: (TURN over TLS) is not supported; use turn: (UDP)".into(),
            ));
        }
        if !lower.starts_with("turn:") {
            return Err(fail("it must start with turn:".into()));
        }
        let rest = &s["turn:".len()..];
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, port) = parse_host_port(authority, DEFAULT_TURN_PORT).map_err(fail)?;
        let (mut username, mut password) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).map_err(&fail)?;
            match key {
                "user" | "username" => username = Some(value),
                "pass" | "password" | "credential" => password = Some(value),
                "transport" if value.eq_ignore_ascii_case("udp") => {}
                "transport" => {
                    return Err(fail(format!(
                        "transport={value} is not supported; fybrk talks to TURN over UDP"
                    )))
                }
                other => {
                    return Err(fail(format!(
                        "unknown parameter {other:?}; known: user, pass, transport=udp"
                    )))
                }
            }
        }
        let username = username
            .filter(|u| !u.is_empty())
            .ok_or_else(|| fail("user= is missing (TURN needs long-term credentials)".into()))?;
        let password = password
            .filter(|p| !p.is_empty())
            .ok_or_else(|| fail("pass= is missing (TURN needs long-term credentials)".into()))?;
        Ok(TurnConfig {
            host,
            port,
            username,
            password,
        })
    }
}

/// `s` with the value of `pass=` (or `password=`, `credential=`) replaced by `***`.
fn mask_password(s: &str) -> String {
    let Some((before, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if matches!(k, "pass" | "password" | "credential") => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{before}?{}", masked.join("&"))
}

/// Decodes `%XX` escapes (so a password may contain `&`, `=` or `?`).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?} (use %XX with two hex digits)"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}
