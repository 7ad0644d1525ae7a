//! `fybrk mount`'s options as the command line (and clap's environment variables) gave them,
//! before the config file fills the gaps ([`crate::config::MountOptions`]).

use std::net::SocketAddr;

/// `mount`'s own options: the device name and the network options.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MountArgs {
    /// This device's name as other devices see it (also the config file's `name`;
    /// default: the hostname). Remembered.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// What this device keeps (`mount` options; also the config file's `on_demand` and `cache`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StorageArgs {
    /// Show every file but keep content only as the cache allows: content is fetched from
    /// other devices when read (also the config file's `on_demand = true`).
    #[arg(long, conflicts_with = "full")]
    pub on_demand: bool,
    /// Keep all content on this device (the default; overrides the config file's
    /// `on_demand = true`).
    #[arg(long)]
    pub full: bool,
    /// Most content an on-demand device keeps, e.g. 20G or 512M (implies --on-demand; also the
    /// config file's `cache`). Default 10G.
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_cache_size, conflicts_with = "full")]
    pub cache: Option<u64>,
}

/// How the daemon talks to other devices (`mount` options). Each is also a key of the config
/// file (see [`crate::config::Config`]); a flag or its environment variable wins over the file.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NetArgs {
    /// UDP address for connections from other devices (QUIC; also the config file's
    /// `listen`). Default [::]:22100: IPv6 and IPv4 on one socket (0.0.0.0:22100 where the
    /// host has no IPv6); if that port is taken, a random one (kept for next time).
    /// 0.0.0.0:PORT listens on IPv4 only, an IPv6 address such as [2001:db8::5]:PORT on IPv6
    /// only.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Rendezvous server (`fybrk rendezvous`) through which devices behind NATs find each
    /// other (also the config file's `rendezvous`). Without one, devices are reached at the
    /// addresses they were last seen at.
    #[arg(long, value_name = "HOST:PORT", env = "FYBRK_RENDEZVOUS")]
    pub rendezvous: Option<String>,
    /// STUN server for learning this device's public address (repeat for more; also
    /// FYBRK_STUN, comma separated, or the config file's `stun`). Default:
    /// stun.l.google.com:19302 and stun1..3. Used with --rendezvous, and without one for the
    /// address record published in the DHT (unless --no-dht).
    #[arg(long, value_name = "HOST:PORT")]
    pub stun: Vec<String>,
    /// TURN relay for when no direct path exists: turn:HOST:PORT?user=NAME&pass=SECRET (also
    /// FYBRK_TURN, or the config file's `turn`). Used with --rendezvous; one device of a pair
    /// with a relay is enough (the other reaches its relayed address).
    #[arg(long, value_name = "URL", env = "FYBRK_TURN", hide_env_values = true)]
    pub turn: Option<String>,
    /// Do not announce this device on the LAN nor listen for paired devices' announcements
    /// (also FYBRK_NO_LAN_DISCOVERY=1, or the config file's `lan_discovery = false`).
    #[arg(long, env = "FYBRK_NO_LAN_DISCOVERY", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_lan_discovery: bool,
    /// UDP port of LAN discovery (also the config file's `lan_discovery_port`). Default 22102;
    /// every device of a LAN must use the same.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub lan_discovery_port: Option<u16>,
    /// Do not ask the router for a port mapping (PCP, NAT-PMP, UPnP) of the listen port (also
    /// the config file's `port_mapping = false`). Mapping is tried only with --rendezvous.
    #[arg(long)]
    pub no_port_mapping: bool,
    /// Do not publish this device's addresses in the Mainline DHT nor look paired devices up
    /// there (also FYBRK_NO_DHT=1, or the config file's `dht = false`).
    #[arg(long, env = "FYBRK_NO_DHT", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_dht: bool,
    /// A bootstrap node of the Mainline DHT (repeat for more; also the config file's
    /// `dht_bootstrap`). Default: the public bootstrap nodes (router.bittorrent.com:6881,
    /// dht.transmissionbt.com:6881, dht.libtorrent.org:25401, relay.pkarr.org:6881).
    #[arg(long, value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
}

impl MountArgs {
    /// The same options as command-line arguments, for the daemon child, except `--turn`: its
    /// password would show in `ps`. The child gets that in `FYBRK_TURN` (see
    /// [`crate::daemon::spawn`]).
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(name) = &self.name {
            out.extend(["--name".to_string(), name.clone()]);
        }
        let net = &self.net;
        if let Some(l) = net.listen {
            out.extend(["--listen".to_string(), l.to_string()]);
        }
        if let Some(r) = &net.rendezvous {
            out.extend(["--rendezvous".to_string(), r.clone()]);
        }
        for s in &net.stun {
            out.extend(["--stun".to_string(), s.clone()]);
        }
        if net.no_lan_discovery {
            out.push("--no-lan-discovery".to_string());
        }
        if let Some(p) = net.lan_discovery_port {
            out.extend(["--lan-discovery-port".to_string(), p.to_string()]);
        }
        let storage = &self.storage;
        if storage.on_demand {
            out.push("--on-demand".to_string());
        }
        if storage.full {
            out.push("--full".to_string());
        }
        if let Some(c) = storage.cache {
            out.extend(["--cache".to_string(), c.to_string()]);
        }
        if net.no_port_mapping {
            out.push("--no-port-mapping".to_string());
        }
        if net.no_dht {
            out.push("--no-dht".to_string());
        }
        for b in &net.dht_bootstrap {
            out.extend(["--dht-bootstrap".to_string(), b.clone()]);
        }
        out
    }
}
