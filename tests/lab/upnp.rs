//! The real `miniupnpd` (Debian's `miniupnpd-nftables`) on a device's router: NAT-PMP, PCP and
//! UPnP IGD on the router's `lan` side, its redirects in nftables (table `inet miniupnpd`,
//! beside the router's own `ip lab`), for the port-mapping tests.
//!
//! miniupnpd refuses to map anything when its external address is reserved, and the lab's WAN
//! addresses are TEST-NET-3 (203.0.113.0/24). So the router gets a second, unreserved WAN
//! address, [`external_ip`]`(k)` = 11.0.0.k, which miniupnpd reports (`ext_ip`) and which every
//! other namespace on the routers' segment (the other routers, the public namespace, Open
//! devices) reaches through a host route via the router's WAN address. Nothing leaves the lab:
//! no namespace has a link to the host's network. Call [`Lab::run_miniupnpd`] after adding the
//! devices (later ones get no route to it).
//!
//! The process is killed when the returned [`Miniupnpd`] or the lab is dropped.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{nft_load, ns_command, Device, Lab, LabChild};

/// How long miniupnpd may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The chains miniupnpd fills, hooked in the router with `accept` policies (Debian's
/// `nft_init.sh` drops everything else forwarded, which would break the lab's routers). The
/// forward chain runs before the lab's `forward_f`, which lets DNATed flows in anyway.
const TABLES: &str = "table inet miniupnpd
delete table inet miniupnpd
table inet miniupnpd {
  chain miniupnpd { }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
  chain forward { type filter hook forward priority filter - 5; policy accept; jump miniupnpd; }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority srcnat - 5; policy accept; jump postrouting_miniupnpd; }
}
";

/// The unreserved public address miniupnpd reports on device `k`'s router.
pub fn external_ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::new(11, 0, 0, k as u8)
}

/// A running miniupnpd.
pub struct Miniupnpd {
    /// The router's namespace.
    pub ns: String,
    /// The external address it reports (see [`external_ip`]).
    pub external_ip: Ipv4Addr,
    /// Its lease file: one line per mapping (`UDP:EXT:CLIENT:INT:EXPIRY:DESC`).
    pub lease_file: PathBuf,
    /// The process; killing it is its drop.
    pub process: LabChild,
}

impl Miniupnpd {
    /// The DNAT rules of its mappings, as `nft` lists them (empty: no mapping).
    pub fn redirects(&self) -> Vec<String> {
        let out = ns_command(&self.ns, "nft")
            .args(["list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd"])
            .output()
            .expect("nft list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("dnat"))
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// The lines of its lease file (empty: no mapping, or none written yet).
    pub fn leases(&self) -> Vec<String> {
        fs::read_to_string(&self.lease_file)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.output_tail(lines)
    }
}

impl Lab {
    /// Starts miniupnpd on `dev`'s router (not a double NAT's, not an Open device): NAT-PMP,
    /// PCP and UPnP IGD listening on `lan`, secure mode (a client maps only to itself), ports
    /// 1024-65535. Waits until it listens.
    pub fn run_miniupnpd(&self, dev: &Device) -> Miniupnpd {
        assert!(
            dev.cgnat_ns().is_none(),
            "miniupnpd runs on a router whose WAN is on the public segment"
        );
        let ns = dev
            .router_ns()
            .unwrap_or_else(|| panic!("{} has no router", dev.ns()))
            .to_string();
        let k = dev.index();
        let ext = external_ip(k);
        let wan = Ipv4Addr::new(203, 0, 113, (1 + k) as u8);
        let mut add = ns_command(&ns, "ip");
        add.args(["addr", "add", &format!("{ext}/32"), "dev", "wan"]);
        super::run_ok(&mut add);
        let others: Vec<String> = self
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|n| **n != ns)
            .cloned()
            .collect();
        for other in others {
            // Only namespaces on the routers' segment accept the route; the rest (LANs) go
            // through their router anyway.
            let _ = ns_command(&other, "ip")
                .args([
                    "route",
                    "add",
                    &format!("{ext}/32"),
                    "via",
                    &wan.to_string(),
                ])
                .output();
        }
        nft_load(&ns, TABLES);
        let dir = self.dir();
        let conf = dir.join(format!("miniupnpd-{k}.conf"));
        let lease_file = dir.join(format!("miniupnpd-{k}.leases"));
        fs::write(
            &conf,
            format!(
                "ext_ifname=wan\nlistening_ip=lan\nport=0\nenable_natpmp=yes\nenable_upnp=yes\n\
                 secure_mode=yes\nsystem_uptime=no\next_ip={ext}\nlease_file={}\n\
                 upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\n\
                 uuid=fc4ec57e-b051-11db-88f8-0060085db3f{k:x}\n\
                 allow 1024-65535 0.0.0.0/0 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                lease_file.display()
            ),
        )
        .expect("write miniupnpd.conf");
        let mut cmd = ns_command(&ns, "miniupnpd");
        cmd.arg("-d")
            .arg("-f")
            .arg(&conf)
            .arg("-P")
            .arg(dir.join(format!("miniupnpd-{k}.pid")));
        let mut process = LabChild::spawn(
            &format!("miniupnpd-{k}"),
            cmd,
            &dir.join(format!("miniupnpd-{k}.out")),
        );
        let start = Instant::now();
        while !process
            .output_tail(50)
            .contains("Listening for NAT-PMP/PCP traffic")
        {
            assert!(
                process.running() && start.elapsed() < START_TIMEOUT,
                "miniupnpd did not start:\n{}",
                process.output_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Miniupnpd {
            ns,
            external_ip: ext,
            lease_file,
            process,
        }
    }
}

/// Whether `miniupnpd` is installed (`scripts/setup-deps.sh --test`).
pub fn have_miniupnpd() -> bool {
    Command::new("miniupnpd").arg("--version").output().is_ok()
}
