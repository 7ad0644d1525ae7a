//! The config file: `config.toml` in the state dir, or the file named by `--config` /
//! `FYBRK_CONFIG`. It holds defaults for `fybrk mount`'s network options and device name:
//!
//! ```toml
//! listen = "[::]:22100"      # the default: IPv6 and IPv4; "0.0.0.0:22100" for IPv4 only
//! name = "laptop"
//! rendezvous = "rdv.example.org:22101"
//! stun = ["stun.example.org:3478"]
//! turn = "turn:turn.example.org:3478?user=me&pass=secret"
//! lan_discovery = true       # announce on the LAN and listen for paired devices (default)
//! lan_discovery_port = 22102 # the same on every device of a LAN
//! port_mapping = true        # ask the router to map the listen port (PCP, NAT-PMP, UPnP; default)
//! dht = true                 # publish our addresses in the Mainline DHT, look peers up (default)
//! dht_bootstrap = ["router.bittorrent.com:6881"]  # default: the public bootstrap nodes
//! web = true                         # the local web page (default on)
//! web_listen = "127.0.0.1:22103"     # where it is served; loopback addresses only
//! metrics_listen = "127.0.0.1:9102"  # optional: /metrics without the token, on its own port
//!
//! [history]
//! keep = "1y"        # how long old versions are kept (s, m, h, d, w, y); default 1 year
//! max_size = "20G"   # optional: history's disk use; the oldest versions go first (K, M, G, T)
//! ```
//!
//! Every key is optional. The command line wins over the environment (`FYBRK_RENDEZVOUS`,
//! `FYBRK_STUN`, `FYBRK_TURN`), which wins over this file, which wins over the built-in defaults.
//! Values are checked when the file is read, so a mistake stops `fybrk mount` before anything is
//! mounted, with the file, line and column in the message.
//!
//! [`MountOptions`] is the result: the command line ([`MountArgs`]), the environment and this
//! file resolved once, handed to the daemon.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use fybrk_store::history::{Retention, KEEP_ALL};
use serde::Deserialize;
use toml::Spanned;

use crate::args::MountArgs;
use crate::node::{Listen, Traversal};
use crate::state::StateDir;

/// The config file's name in the state dir.
pub const FILE_NAME: &str = "config.toml";

/// The options a config file gave, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// The file they came from; `None` when there is none.
    pub path: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub name: Option<String>,
    pub rendezvous: Option<String>,
    pub stun: Vec<String>,
    pub turn: Option<String>,
    /// `lan_discovery`: `false` switches LAN discovery off.
    pub lan_discovery: Option<bool>,
    /// `lan_discovery_port`.
    pub lan_discovery_port: Option<u16>,
    /// `port_mapping`: `false` switches router port mapping off.
    pub port_mapping: Option<bool>,
    /// `dht`: `false` switches discovery through the Mainline DHT off.
    pub dht: Option<bool>,
    /// `dht_bootstrap`: `HOST:PORT` of the DHT's bootstrap nodes (empty: the public ones).
    pub dht_bootstrap: Vec<String>,
    /// `[history]`: how long old versions are kept and how much space they may take.
    pub retention: Retention,
    /// `web`, `web_listen` and `metrics_listen`.
    pub web: WebOptions,
    /// `on_demand`.
    pub on_demand: Option<bool>,
    /// `cache`, in bytes.
    pub cache: Option<u64>,
}

/// The local web page's and `/metrics`' listeners (`web`, `web_listen`, `metrics_listen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebOptions {
    /// Whether the daemon serves the web page (`web = false` turns it off; `/metrics` on
    /// `metrics_listen` is served either way).
    pub enabled: bool,
    /// Where the page (and `/metrics` with the token) is served: a loopback address.
    pub listen: SocketAddr,
    /// Where `/metrics` is served without the token, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// The web page's default port: next to fybrk's QUIC (22100), rendezvous (22101) and LAN
/// discovery (22102, UDP) ports, and not Syncthing's 8384, so both can run side by side (the
/// sync benchmark does).
pub const DEFAULT_WEB_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 22103);

impl Default for WebOptions {
    fn default() -> WebOptions {
        WebOptions {
            enabled: true,
            listen: DEFAULT_WEB_LISTEN,
            metrics_listen: None,
        }
    }
}

/// A config file that cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config FILE` names a file that is not there (the default file may be missing).
    #[error("the config file {} does not exist (given by --config or FYBRK_CONFIG)", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad TOML, an unknown key, a value of the wrong type, or a value that does not parse.
    #[error("config file {}:{line}:{column}: {what}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        what: String,
    },
}

/// The file as written, with where each value is (for error messages).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    rendezvous: Option<Spanned<String>>,
    stun: Option<Vec<Spanned<String>>>,
    turn: Option<Spanned<String>>,
    lan_discovery: Option<bool>,
    lan_discovery_port: Option<Spanned<i64>>,
    port_mapping: Option<bool>,
    dht: Option<bool>,
    dht_bootstrap: Option<Vec<Spanned<String>>>,
    history: Option<RawHistory>,
    web: Option<bool>,
    web_listen: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
    on_demand: Option<bool>,
    cache: Option<Spanned<String>>,
}

/// `[history]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    keep: Option<Spanned<String>>,
    max_size: Option<Spanned<String>>,
}

impl Config {
    /// Reads `explicit` (`--config`), else `STATE/config.toml`. A missing default file is no
    /// config; a missing explicit one is an error.
    pub fn load(explicit: Option<&Path>, state: &StateDir) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
            None => state.root.join(FILE_NAME),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match explicit {
                Some(_) => Err(ConfigError::Missing { path }),
                None => Ok(Config::default()),
            },
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses and checks the text of the config file at `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |span: Option<Range<usize>>, what: String| {
            let (line, column) = line_column(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                what,
            }
        };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            // serde speaks of fields and sequences; a TOML file has keys and arrays. One line:
            // the daemon reports its start-up error to `fybrk mount` as one line.
            let mut what = e
                .message()
                .trim()
                .replace("unknown field", "unknown key")
                .replace("a sequence", "an array")
                .replace('\n', "; ");
            // A value of the wrong type: say whose.
            if let Some(key) = e.span().and_then(|s| key_of_value_at(text, s.start)) {
                what = format!("{key}: {what}");
            }
            invalid(e.span(), what)
        })?;
        // Each value is checked where it is, so the message can point at it.
        let check = |key: &str, v: &Spanned<String>, ok: Result<(), String>| {
            ok.map_err(|why| invalid(Some(v.span()), format!("{key}: {why}")))
        };
        let listen = match &raw.listen {
            None => None,
            Some(v) => {
                let addr = v.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        Some(v.span()),
                        format!(
                            "listen: {:?} is not an IP:PORT address (e.g. 0.0.0.0:22100)",
                            v.get_ref()
                        ),
                    )
                })?;
                Some(addr)
            }
        };
        if let Some(v) = &raw.name {
            let ok = crate::state::valid_device_name(v.get_ref())
                .then_some(())
                .ok_or_else(|| "a device name is 1 to 64 printable characters".to_string());
            check("name", v, ok)?;
        }
        if let Some(v) = &raw.rendezvous {
            check("rendezvous", v, check_host_port(v.get_ref()))?;
        }
        for v in raw.stun.iter().flatten() {
            let ok = v
                .get_ref()
                .parse::<fybrk_net::stun::StunServer>()
                .map(|_| ())
                .map_err(|e| e.to_string());
            check("stun", v, ok)?;
        }
        if let Some(v) = &raw.turn {
            // The error masks the password.
            let ok = v
                .get_ref()
                .parse::<fybrk_net::turn::TurnConfig>()
                .map(|_| ())
                .map_err(|e| e.to_string());
            check("turn", v, ok)?;
        }
        for v in raw.dht_bootstrap.iter().flatten() {
            check("dht_bootstrap", v, check_host_port(v.get_ref()))?;
        }
        let lan_discovery_port = match &raw.lan_discovery_port {
            None => None,
            Some(v) => Some(
                u16::try_from(*v.get_ref())
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        invalid(
                            Some(v.span()),
                            format!(
                                "lan_discovery_port: {} is not a UDP port (1-65535)",
                                v.get_ref()
                            ),
                        )
                    })?,
            ),
        };
        let mut retention = Retention::default();
        if let Some(h) = &raw.history {
            if let Some(v) = &h.keep {
                retention.max_age = parse_age(v.get_ref())
                    .map_err(|why| invalid(Some(v.span()), format!("history.keep: {why}")))?;
            }
            if let Some(v) = &h.max_size {
                retention.max_bytes =
                    Some(parse_size(v.get_ref()).map_err(|why| {
                        invalid(Some(v.span()), format!("history.max_size: {why}"))
                    })?);
            }
        }
        let addr = |key: &str, v: &Spanned<String>| {
            v.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                invalid(
                    Some(v.span()),
                    format!("{key}: {:?} is not an IP:PORT address", v.get_ref()),
                )
            })
        };
        let mut web = WebOptions::default();
        if let Some(on) = raw.web {
            web.enabled = on;
        }
        if let Some(v) = &raw.web_listen {
            let a = addr("web_listen", v)?;
            // The page drives the folder: other machines must never reach it.
            if !a.ip().is_loopback() {
                return Err(invalid(
                    Some(v.span()),
                    format!("web_listen: {a} is not a loopback address (127.0.0.1 or [::1])"),
                ));
            }
            web.listen = a;
        }
        if let Some(v) = &raw.metrics_listen {
            web.metrics_listen = Some(addr("metrics_listen", v)?);
        }
        let cache = match &raw.cache {
            None => None,
            Some(v) => Some(
                parse_cache_size(v.get_ref())
                    .map_err(|why| invalid(Some(v.span()), format!("cache: {why}")))?,
            ),
        };
        let text = |v: Option<Spanned<String>>| v.map(|v| v.into_inner().trim().to_string());
        Ok(Config {
            on_demand: raw.on_demand,
            cache,
            web,
            retention,
            path: Some(path.to_path_buf()),
            listen,
            name: text(raw.name),
            rendezvous: text(raw.rendezvous),
            stun: raw
                .stun
                .into_iter()
                .flatten()
                .map(Spanned::into_inner)
                .collect(),
            turn: text(raw.turn),
            lan_discovery: raw.lan_discovery,
            lan_discovery_port,
            port_mapping: raw.port_mapping,
            dht: raw.dht,
            dht_bootstrap: raw
                .dht_bootstrap
                .into_iter()
                .flatten()
                .map(|v| v.into_inner().trim().to_string())
                .collect(),
        })
    }
}

/// The options `fybrk mount` runs with: the command line, the environment and the config file
/// resolved once ([`MountOptions::load`]), then handed to the daemon, which takes everything
/// from here.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// The config file that was read (`None`: there is none).
    pub config_file: Option<PathBuf>,
    /// This device's name (`None`: the remembered one, else the hostname).
    pub name: Option<String>,
    /// Where the daemon listens.
    pub listen: Listen,
    /// How it reaches devices that are not on its network.
    pub traversal: Traversal,
    /// How long history keeps old versions (the file's `[history]`; no flag).
    pub retention: Retention,
    /// The web page and `/metrics` (the file's `web`, `web_listen`, `metrics_listen`; no flag).
    pub web: WebOptions,
    /// `Some(bytes)`: an on-demand device with this cache (`--on-demand`, `--cache`, the
    /// file's `on_demand` and `cache`; `--full` wins). `None`: a full device.
    pub cache_budget: Option<u64>,
}

impl MountOptions {
    /// Reads the config file (`explicit`, else `STATE/config.toml`) and `FYBRK_STUN`, and
    /// resolves them with `args` ([`MountOptions::resolve`]).
    pub fn load(
        explicit: Option<&Path>,
        state: &StateDir,
        args: &MountArgs,
    ) -> Result<MountOptions, ConfigError> {
        let file = Config::load(explicit, state)?;
        let stun_env = std::env::var(fybrk_net::stun::STUN_ENV).ok();
        Ok(MountOptions::resolve(&file, args, stun_env.as_deref()))
    }

    /// The options in force: `args` from the command line (clap has already put
    /// `FYBRK_RENDEZVOUS` and `FYBRK_TURN` in where no flag was given), `stun_env` the value of
    /// `FYBRK_STUN`, and `file` for whatever is still unset.
    pub fn resolve(file: &Config, args: &MountArgs, stun_env: Option<&str>) -> MountOptions {
        let net = &args.net;
        let stun = if !net.stun.is_empty() || stun_env.is_some_and(|e| !e.trim().is_empty()) {
            // Left to `stun_servers`, which takes the flags, else the environment.
            net.stun.clone()
        } else {
            file.stun.clone()
        };
        let listen = match net.listen.or(file.listen) {
            Some(addr) => Listen {
                addr,
                explicit: true,
            },
            None => Listen::default(),
        };
        MountOptions {
            config_file: file.path.clone(),
            name: args.name.clone().or_else(|| file.name.clone()),
            listen,
            traversal: Traversal {
                rendezvous: net.rendezvous.clone().or_else(|| file.rendezvous.clone()),
                stun,
                turn: net.turn.clone().or_else(|| file.turn.clone()),
                lan: crate::node::LanOptions {
                    enabled: !net.no_lan_discovery && file.lan_discovery.unwrap_or(true),
                    port: net
                        .lan_discovery_port
                        .or(file.lan_discovery_port)
                        .unwrap_or(fybrk_net::lan::DEFAULT_PORT),
                },
                port_mapping: !net.no_port_mapping && file.port_mapping.unwrap_or(true),
                dht: crate::node::DhtOptions {
                    enabled: !net.no_dht && file.dht.unwrap_or(true),
                    bootstrap: if net.dht_bootstrap.is_empty() {
                        file.dht_bootstrap.clone()
                    } else {
                        net.dht_bootstrap.clone()
                    },
                },
            },
            retention: file.retention,
            web: file.web,
            cache_budget: {
                let s = &args.storage;
                let on_demand = !s.full
                    && (s.on_demand || s.cache.is_some() || file.on_demand.unwrap_or(false));
                on_demand.then(|| s.cache.or(file.cache).unwrap_or(DEFAULT_CACHE))
            },
        }
    }
}

/// An on-demand device's cache when neither `--cache` nor `cache` says.
pub const DEFAULT_CACHE: u64 = 10 << 30;

/// The smallest cache: a few chunks of the largest size for every read in flight, and room
/// for the content written here that no other device has yet.
const MIN_CACHE: u64 = 16 << 20;

/// `--cache` and `cache`: a size ([`parse_size`]) of at least 16 MiB.
pub fn parse_cache_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < MIN_CACHE {
        return Err(format!("{s:?} is less than the smallest cache, 16M"));
    }
    Ok(n)
}

/// Checks `HOST:PORT` (a rendezvous server's port has no default). The name is looked up when
/// the daemon starts.
fn check_host_port(s: &str) -> Result<(), String> {
    let bad = || format!("{s:?} is not HOST:PORT (e.g. rdv.example.org:22101)");
    let (host, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if host.is_empty() || host.contains(char::is_whitespace) || !port_ok {
        return Err(bad());
    }
    Ok(())
}

/// `history.keep`: a whole number and a unit, `s`, `m`, `h`, `d`, `w` or `y` (365 days). At
/// least an hour: history always keeps the last hour ([`KEEP_ALL`]).
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not an age: use a number and a unit, e.g. 90d, 6w or 1y");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: u64 = s[..split].parse().map_err(|_| bad())?;
    let unit: u64 = match &s[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(unit).ok_or_else(bad)?;
    let age = std::time::Duration::from_secs(secs);
    if age < KEEP_ALL {
        return Err(format!(
            "{s:?} is less than an hour; history always keeps the last hour"
        ));
    }
    Ok(age)
}

/// `history.max_size`: bytes, or a whole number with `K`, `M`, `G` or `T` (powers of 1024,
/// optionally followed by `B` or `iB`).
fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size: use e.g. 500M, 20G or 1T");
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().map_err(|_| bad())?;
    let shift = match t[split..].to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// The key whose value is at byte `offset` of `text`, if `text` is valid TOML.
fn key_of_value_at(text: &str, offset: usize) -> Option<String> {
    let table: std::collections::BTreeMap<String, Spanned<toml::Value>> =
        toml::from_str(text).ok()?;
    table
        .into_iter()
        .find(|(_, v)| v.span().contains(&offset))
        .map(|(k, _)| k)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::NetArgs;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/fybrk.toml"))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("{text:?} parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_key() {
        let c = parse(
            r#"
listen = "127.0.0.1:9000"
name = "laptop"
rendezvous = "rdv.example.org:22101"
stun = ["stun.example.org:3478", "192.0.2.1"]
turn = "turn:turn.example.org:3478?user=u&pass=p"

[history]
keep = "90d"
max_size = "20G"
"#,
        )
        .unwrap();
        assert_eq!(
            c.retention.max_age,
            std::time::Duration::from_secs(90 * 86_400)
        );
        assert_eq!(c.retention.max_bytes, Some(20 << 30));
        assert_eq!(c.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(c.name.as_deref(), Some("laptop"));
        assert_eq!(c.rendezvous.as_deref(), Some("rdv.example.org:22101"));
        assert_eq!(c.stun, ["stun.example.org:3478", "192.0.2.1"]);
        assert_eq!(
            c.turn.as_deref(),
            Some("turn:turn.example.org:3478?user=u&pass=p")
        );
        assert_eq!(c.path.as_deref(), Some(Path::new("/etc/fybrk.toml")));
    }

    #[test]
    fn history_values_are_checked() {
        assert_eq!(parse("").unwrap().retention, Retention::default());
        for (text, want) in [
            (
                "[history]\nkeep = \"10m\"\n",
                "history.keep: \"10m\" is less than an hour",
            ),
            (
                "[history]\nkeep = \"forever\"\n",
                "history.keep: \"forever\" is not an age",
            ),
            ("[history]\nkeep = \"99999999999999y\"\n", "is not an age"),
            (
                "[history]\nmax_size = \"lots\"\n",
                "history.max_size: \"lots\" is not a size",
            ),
            ("[history]\nmax_size = \"99999999999T\"\n", "is not a size"),
            ("[history]\nkept = \"1y\"\n", "unknown key"),
        ] {
            let e = error(text);
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains(":2:"), "points at the line: {e}");
        }
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(
            parse_age("2w"),
            Ok(std::time::Duration::from_secs(14 * 86_400))
        );
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        let c = parse("# nothing here\n").unwrap();
        assert_eq!(
            c,
            Config {
                path: Some("/etc/fybrk.toml".into()),
                ..Config::default()
            }
        );
    }

    #[test]
    fn bad_toml_names_the_file_line_and_column() {
        let e = error("name = \"a\"\nrendezvous = \n");
        assert!(e.starts_with("config file /etc/fybrk.toml:2:"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn web_keys() {
        assert_eq!(parse("").unwrap().web, WebOptions::default());
        let c =
            parse("web = false\nweb_listen = \"127.0.0.1:0\"\nmetrics_listen = \"0.0.0.0:9102\"\n")
                .unwrap();
        assert!(!c.web.enabled);
        assert_eq!(c.web.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.web.metrics_listen, Some("0.0.0.0:9102".parse().unwrap()));
        let e = error("web_listen = \"0.0.0.0:22102\"\n");
        assert!(
            e.contains("web_listen: 0.0.0.0:22102 is not a loopback address"),
            "{e}"
        );
        let e = error("metrics_listen = \"nowhere\"\n");
        assert!(
            e.contains("metrics_listen: \"nowhere\" is not an IP:PORT"),
            "{e}"
        );
        let o = MountOptions::resolve(&c, &MountArgs::default(), None);
        assert_eq!(o.web, c.web);
    }

    #[test]
    fn an_unknown_key_is_named_with_the_valid_ones() {
        let e = error("listen = \"0.0.0.0:1\"\nrendevous = \"x:1\"\n");
        assert!(e.starts_with("config file /etc/fybrk.toml:2:1: "), "{e}");
        assert!(e.contains("unknown key `rendevous`"), "{e}");
        for key in ["listen", "name", "rendezvous", "stun", "turn"] {
            assert!(e.contains(&format!("`{key}`")), "{e}");
        }
    }

    #[test]
    fn a_wrong_type_is_an_error() {
        let e = error("stun = \"stun.example.org:3478\"\n");
        assert!(
            e.starts_with("config file /etc/fybrk.toml:1:8: stun: "),
            "{e}"
        );
        assert!(e.contains("expected an array"), "{e}");
        let e = error("name = \"a\"\nlisten = 22100\n");
        assert!(
            e.starts_with("config file /etc/fybrk.toml:2:10: listen: "),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_key_and_position() {
        let e = error("\n\nlisten = \"localhost\"\n");
        assert!(
            e.starts_with("config file /etc/fybrk.toml:3:10: listen:"),
            "{e}"
        );
        let e = error("rendezvous = \"rdv.example.org\"\n");
        assert!(e.contains(":1:14: rendezvous:"), "{e}");
        let e = error("stun = [\"a:1\",\n  \"b:port\"]\n");
        assert!(e.contains(":2:3: stun:"), "{e}");
        let e = error("name = \"\"\n");
        assert!(e.contains(":1:8: name:"), "{e}");
    }

    #[test]
    fn a_bad_turn_url_names_the_key_and_hides_the_password() {
        let e = error("turn = \"turn:relay.example.org:3478?pass=hunter2\"\n");
        assert!(e.contains(":1:8: turn:"), "{e}");
        assert!(e.contains("user= is missing"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_missing_default_file_is_no_config_but_a_missing_explicit_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: dir.path().to_path_buf(),
        };
        assert_eq!(Config::load(None, &state).unwrap(), Config::default());
        let named = dir.path().join("nope.toml");
        let e = Config::load(Some(&named), &state).unwrap_err().to_string();
        assert!(e.contains("nope.toml does not exist"), "{e}");

        std::fs::write(dir.path().join(FILE_NAME), "name = \"from-state\"\n").unwrap();
        let c = Config::load(None, &state).unwrap();
        assert_eq!(c.name.as_deref(), Some("from-state"));
        std::fs::write(&named, "name = \"named\"\n").unwrap();
        let c = Config::load(Some(&named), &state).unwrap();
        assert_eq!(c.name.as_deref(), Some("named"));
    }

    fn file() -> Config {
        parse(
            r#"
listen = "127.0.0.1:9000"
name = "file-name"
rendezvous = "file.example.org:1"
stun = ["file-stun.example.org:1"]
turn = "turn:file.example.org:1?user=u&pass=p"
"#,
        )
        .unwrap()
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_unset() {
        let o = MountOptions::resolve(&file(), &MountArgs::default(), None);
        assert_eq!(o.listen.addr, "127.0.0.1:9000".parse().unwrap());
        assert!(o.listen.explicit);
        let net = &o.traversal;
        assert_eq!(net.rendezvous.as_deref(), Some("file.example.org:1"));
        assert_eq!(net.stun, ["file-stun.example.org:1"]);
        assert_eq!(
            net.turn.as_deref(),
            Some("turn:file.example.org:1?user=u&pass=p")
        );
        assert_eq!(o.name.as_deref(), Some("file-name"));
        assert_eq!(o.config_file.as_deref(), Some(Path::new("/etc/fybrk.toml")));
    }

    #[test]
    fn on_demand_and_its_cache_come_from_flags_or_the_file() {
        let path = Path::new("/etc/fybrk.toml");
        let file = Config::parse("on_demand = true\ncache = \"20G\"\n", path).unwrap();
        let none = MountArgs::default();
        let o = MountOptions::resolve(&file, &none, None);
        assert_eq!(o.cache_budget, Some(20 << 30));
        let mut full = MountArgs::default();
        full.storage.full = true;
        assert_eq!(MountOptions::resolve(&file, &full, None).cache_budget, None);
        let mut small = MountArgs::default();
        small.storage.cache = Some(64 << 20);
        let plain = Config::default();
        assert_eq!(
            MountOptions::resolve(&plain, &small, None).cache_budget,
            Some(64 << 20),
            "--cache implies --on-demand"
        );
        assert_eq!(
            MountOptions::resolve(&plain, &none, None).cache_budget,
            None
        );
        let mut flag = MountArgs::default();
        flag.storage.on_demand = true;
        assert_eq!(
            MountOptions::resolve(&plain, &flag, None).cache_budget,
            Some(DEFAULT_CACHE)
        );
        let bad = Config::parse("cache = \"1M\"\n", path)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("cache") && bad.contains("16M"), "{bad}");
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let cli = MountArgs {
            name: Some("cli-name".into()),
            net: NetArgs {
                listen: Some("127.0.0.1:1".parse().unwrap()),
                rendezvous: Some("cli.example.org:2".into()),
                stun: vec!["cli-stun.example.org:2".into()],
                turn: Some("turn:cli.example.org:2?user=c&pass=c".into()),
                ..NetArgs::default()
            },
            storage: Default::default(),
        };
        let o = MountOptions::resolve(&file(), &cli, Some("env-stun:3"));
        assert_eq!(Some(o.listen.addr), cli.net.listen);
        assert!(o.listen.explicit);
        let net = &o.traversal;
        assert_eq!(net.rendezvous, cli.net.rendezvous);
        assert_eq!(net.stun, cli.net.stun);
        assert_eq!(net.turn, cli.net.turn);
        assert_eq!(o.name.as_deref(), Some("cli-name"));
    }

    #[test]
    fn fybrk_stun_wins_over_the_file() {
        // An empty list tells `stun_servers` to read FYBRK_STUN.
        let o = MountOptions::resolve(&file(), &MountArgs::default(), Some("env-stun:3"));
        assert!(o.traversal.stun.is_empty());
        // An empty FYBRK_STUN is no setting.
        let o = MountOptions::resolve(&file(), &MountArgs::default(), Some(" "));
        assert_eq!(o.traversal.stun, ["file-stun.example.org:1"]);
    }

    #[test]
    fn no_file_and_no_flags_leave_the_defaults() {
        let o = MountOptions::resolve(&Config::default(), &MountArgs::default(), None);
        let net = &o.traversal;
        assert!(!o.listen.explicit && net.rendezvous.is_none() && net.turn.is_none());
        assert_eq!(o.listen.addr, Listen::default().addr);
        assert!(net.stun.is_empty() && o.name.is_none() && o.config_file.is_none());
    }

    #[test]
    fn dht_keys() {
        let o = MountOptions::resolve(&Config::default(), &MountArgs::default(), None);
        assert!(o.traversal.dht.enabled);
        assert!(o.traversal.dht.bootstrap.is_empty());
        let c =
            parse("dht = false\ndht_bootstrap = [\"10.0.0.1:6881\", \"dht.example.org:6881\"]\n")
                .unwrap();
        let o = MountOptions::resolve(&c, &MountArgs::default(), None);
        assert!(!o.traversal.dht.enabled);
        assert_eq!(
            o.traversal.dht.bootstrap,
            vec![
                "10.0.0.1:6881".to_string(),
                "dht.example.org:6881".to_string()
            ]
        );
        let cli = MountArgs {
            net: crate::args::NetArgs {
                no_dht: true,
                dht_bootstrap: vec!["10.0.0.2:6881".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let o = MountOptions::resolve(&Config::default(), &cli, None);
        assert!(!o.traversal.dht.enabled);
        assert_eq!(o.traversal.dht.bootstrap, vec!["10.0.0.2:6881".to_string()]);
        let args = cli.to_args();
        assert!(args.contains(&"--no-dht".to_string()));
        assert!(args.contains(&"--dht-bootstrap".to_string()));
        let e = parse("dht_bootstrap = [\"nope\"]").unwrap_err().to_string();
        assert!(e.contains("dht_bootstrap"), "{e}");
    }

    #[test]
    fn lan_discovery_keys() {
        let o = MountOptions::resolve(&Config::default(), &MountArgs::default(), None);
        assert_eq!(o.traversal.lan, crate::node::LanOptions::default());
        assert!(o.traversal.lan.enabled);
        let c = parse("lan_discovery = false\nlan_discovery_port = 23000\n").unwrap();
        let o = MountOptions::resolve(&c, &MountArgs::default(), None);
        assert!(!o.traversal.lan.enabled);
        assert_eq!(o.traversal.lan.port, 23000);
        let cli = MountArgs {
            net: NetArgs {
                no_lan_discovery: true,
                lan_discovery_port: Some(24000),
                ..NetArgs::default()
            },
            ..MountArgs::default()
        };
        let o = MountOptions::resolve(&Config::default(), &cli, None);
        assert!(!o.traversal.lan.enabled);
        assert_eq!(o.traversal.lan.port, 24000);
        assert!(cli.to_args().contains(&"--no-lan-discovery".to_string()));
        for bad in ["lan_discovery_port = 0", "lan_discovery_port = 70000"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("lan_discovery_port"), "{e}");
        }
    }

    #[test]
    fn port_mapping_key() {
        let o = MountOptions::resolve(&Config::default(), &MountArgs::default(), None);
        assert!(o.traversal.port_mapping);
        let c = parse("port_mapping = false\n").unwrap();
        assert!(
            !MountOptions::resolve(&c, &MountArgs::default(), None)
                .traversal
                .port_mapping
        );
        let cli = MountArgs {
            net: NetArgs {
                no_port_mapping: true,
                ..NetArgs::default()
            },
            ..MountArgs::default()
        };
        let o = MountOptions::resolve(&Config::default(), &cli, None);
        assert!(!o.traversal.port_mapping);
        assert!(cli.to_args().contains(&"--no-port-mapping".to_string()));
    }

    #[test]
    fn host_port() {
        assert!(check_host_port("rdv.example.org:22101").is_ok());
        assert!(check_host_port("[2001:db8::1]:22101").is_ok());
        for bad in ["rdv.example.org", ":22101", "rdv:0", "rdv:x", "a b:1", ""] {
            assert!(check_host_port(bad).is_err(), "{bad:?}");
        }
    }
}
