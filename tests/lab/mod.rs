//! The NAT lab: a small internet in Linux network namespaces, with NAT routers made of nftables,
//! for tests of NAT traversal (hole punching, STUN, TURN through coturn).
//!
//! A test file includes it with `#[path = "lab/mod.rs"] mod lab;`. To run the lab's own tests
//! (as root; they skip loudly otherwise, and fail in CI):
//! `cargo test --release -p fybrk-tests --test nat_lab`. `scripts/lab/shell.sh KIND` builds one
//! by hand; `scripts/lab/README.md` has the picture.
//!
//! ```text
//!  public namespace <id>-p, bridge br0: 203.0.113.1/24 (the routers' gateway) and servers on
//!  198.51.100.0/24: TURN_IP .2 (coturn), RENDEZVOUS_IP .3, public_ip(i) = .10+i
//!     |  veth w<k> (bridge port)       |                                 |
//!     |                                |                                 |
//!  wan 203.0.113.(1+k)          wan 203.0.113.(1+k)                eth0 203.0.113.(1+k)
//!  router <id>-r<k>: NAT        CGNAT <id>-c<k>: NAT               device <id>-d<k>
//!  lan 192.168.k.1/24           lan 100.64.k.1/24                  (RouterKind::Open)
//!     |                                |
//!  eth0 192.168.k.2             wan 100.64.k.2: home router <id>-r<k>, lan 192.168.k.1
//!  device <id>-d<k>                    |
//!                               eth0 192.168.k.2: device <id>-d<k>   (RouterKind::DoubleNat)
//! ```
//!
//! No namespace has a link to the host's network, so nothing a test sends can leave the lab.
//! Between two routers a real internet has routers of its own, the lab only a bridge: the bridge
//! drops what a datagram's TTL would not have carried across two of them ([`nft::TRANSIT`]).
//! `ip_forward` is on in router namespaces only. The public namespace does not route: servers sit
//! on its own addresses and routers share one L2 segment (the bridge), so router-to-router traffic
//! is switched, not forwarded.
//!
//! # API
//!
//! - [`ready`]: the skip rule (root, `ip`, `nft`, `nsenter`): loud SKIP outside CI, panic in CI.
//! - [`Lab::new`]`(tag)`: an empty internet. `tag` (1-4 lowercase letters or digits) starts the
//!   lab's names, `fyl<tag><3 hex>`, so parallel tests and processes never collide.
//!   [`Lab::add_device`]`(RouterKind) -> Device`, [`Lab::public_ip`]`(i)`,
//!   [`Lab::public_udp`]`(addr) -> UdpSocket`, [`Lab::echo`]`(i, port) -> Echo`,
//!   [`Lab::public_cmd`]`(program) -> Command`, [`Lab::spawn_in_public`]`(name, Command) -> LabChild`,
//!   [`Lab::start_coturn`]`(user, pass) -> Coturn`, [`Lab::renumber`]`(&mut Device) -> Ipv4Addr`
//!   (a new public address, as an ISP reassigns one).
//! - [`Device`]: `ns()`, `lan_ip()`, `public_ip()` (its outermost router's WAN address),
//!   `cmd(program) -> Command` (runs in the device's namespace), `udp(port) -> UdpSocket`,
//!   `set_loss(percent)`, `lose_mappings()` (its router forgets every NAT mapping and hands out
//!   new public ports), `unblock_udp()` (a UDP-blocked router lets all UDP out again).
//! - [`Lab::add_lan_device`]`() -> Device`: a device on one router-less LAN (a bridge in
//!   namespace `<id>-b`, 10.77.0.0/24), [`Lab::renumber_lan`]`(&mut Device, Ipv4Addr)` (see
//!   `lan.rs`; for LAN discovery).
//! - [`v6`]: an IPv6-only internet ([`Lab::add_v6_device`], `V6_RENDEZVOUS`; see `v6.rs`).
//! - [`upnp`]: [`Lab::run_miniupnpd`]`(&Device) -> Miniupnpd`, the real miniupnpd (NAT-PMP,
//!   PCP, UPnP IGD) on a device's router.
//! - [`Lab::start_dht`]`(nodes) -> LabDht`: the lab's own Mainline DHT (`fybrk dht-node` in
//!   the public namespace; see `dht.rs`).
//! - [`udp`]: probes in the test process ([`whoami`], [`received`], [`stun_binding`], [`Echo`]).
//!
//! Dropping a `Lab` (also while unwinding from a panic) kills every process in its namespaces and
//! deletes the namespaces, which takes their veths with them. A lab left by a killed test process
//! is removed by the next `Lab::new`: each lab records its owner (pid and start time) in
//! `/run/fybrk-lab/<id>`, and namespaces named `fyl*` whose owner is gone are stale.
//! `FYBRK_KEEP_FAILED=1` keeps the lab's temp dir (process output, coturn's log) after a panic.

#![allow(dead_code)] // each test file uses part of the lab

pub mod coturn;
pub mod daemon;
pub mod dht;
mod lan;
mod nft;
pub mod udp;
pub mod upnp;
pub mod v6;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // not every test file names it
pub use coturn::Coturn;
#[allow(unused_imports)] // re-exports for test files; each uses some
pub use udp::{received, stun_binding, udp_in, whoami, Echo};

/// coturn's address (see [`Lab::start_coturn`]).
pub const TURN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Kept free for `fybrk rendezvous`.
pub const RENDEZVOUS_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// The port the lab's rendezvous server listens on (fybrk's default).
pub const RENDEZVOUS_PORT: u16 = 22101;
/// How many general-purpose server addresses [`Lab::public_ip`] offers.
pub const PUBLIC_IPS: u8 = 16;
/// The public namespace's address on the routers' segment: every WAN's default gateway.
const WAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Every lab namespace name starts with this; stale-lab cleanup looks at nothing else.
const NS_PREFIX: &str = "fyl";
/// Owner records of live labs (tmpfs: gone after a reboot, like the namespaces).
const OWNER_DIR: &str = "/run/fybrk-lab";
/// Devices per lab: the device number is an octet of its addresses (192.168.k.2, 203.0.113.1+k).
const MAX_DEVICES: u32 = 250;
/// [`Lab::renumber`] hands out WAN addresses from 203.0.113.254 down; they must not meet the
/// devices' (203.0.113.2 up).
const LAST_WAN_OCTET: u32 = 254;
/// A setup command (`ip`, `nft`) runs in milliseconds; this only catches a hung one.
const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long teardown waits for killed processes to leave a namespace.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// `ip netns add` races with itself when several threads make the first namespace (each tries to
/// turn /run/netns into a shared mount point), so this process creates namespaces one at a time.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// The router in front of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterKind {
    /// Endpoint-independent mapping (`masquerade`), address-dependent filtering: after the device
    /// sent to an address, that address may answer from any port ("restricted cone").
    Home,
    /// Endpoint-independent mapping, address- and port-dependent filtering (plain conntrack): only
    /// the exact address and port the device sent to may answer ("port-restricted cone").
    PortRestricted,
    /// [`RouterKind::PortRestricted`] as a Linux box with nothing but an nftables `masquerade`
    /// rule: it accepts new flows addressed to itself (and answers them with ICMP port
    /// unreachable), so a peer's probe that arrives before the device wrote to that peer leaves a
    /// confirmed conntrack entry, and the device's own datagrams to that peer then leave from
    /// another public port (still one port for every destination). What plain home routers do.
    Masquerade,
    /// Endpoint-dependent mapping (`masquerade random`, a new public port per destination) and
    /// address- and port-dependent filtering: the corporate firewall.
    Symmetric,
    /// A Home router whose WAN is on a carrier's 100.64.0.0/10 network behind a CGNAT
    /// (endpoint-independent mapping, address- and port-dependent filtering).
    DoubleNat,
    /// A port-restricted NAT that drops every UDP datagram from the LAN except to this address
    /// (the TURN server); TCP passes.
    UdpBlockedExceptTurn(SocketAddr),
    /// No NAT: the device's own interface has a public address on the routers' segment.
    Open,
}

/// Whether lab tests can run here: root (namespaces, nftables) and `ip`, `nft`, `nsenter`.
/// Outside CI a missing piece prints a loud `SKIPPED` line and returns false; in CI it panics.
pub fn ready() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        if fybrk_tests::in_ci() {
            panic!("CI must run the NAT lab tests, but this process is not root (test {test})");
        }
        let line = format!(
            "\n!!!!!!!!!! SKIPPED: the NAT lab needs root; runs in CI (test {test}) !!!!!!!!!!\n"
        );
        let _ = io::stderr().write_all(line.as_bytes());
        return false;
    }
    fybrk_tests::have_tool("ip")
        && fybrk_tests::have_tool("nft")
        && fybrk_tests::have_tool("nsenter")
}

/// One lab: the public namespace and every device added to it. Dropping it tears all down.
pub struct Lab {
    id: String,
    dir: Option<tempfile::TempDir>,
    /// In creation order; teardown goes backwards.
    namespaces: Mutex<Vec<String>>,
    devices: AtomicU32,
    /// WAN addresses handed out by [`Lab::renumber`].
    renumbered: AtomicU32,
}

impl Lab {
    /// Builds an empty internet: the public namespace with its bridge and server addresses.
    /// First removes stale labs left by killed processes.
    pub fn new(tag: &str) -> Lab {
        assert!(
            (1..=4).contains(&tag.len())
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "lab tag {tag:?}: 1-4 lowercase letters or digits (names must fit in 15 chars)"
        );
        clean_stale();
        fs::create_dir_all(OWNER_DIR).unwrap_or_else(|e| panic!("create {OWNER_DIR}: {e}"));
        // The owner record is written whole, then linked into place: link(2) fails if the id is
        // taken (by a lab in any process), and nobody ever sees a half-written record (which
        // would look stale).
        let me = std::process::id() as i32;
        let record = Path::new(OWNER_DIR).join(format!(".new-{me}-{}", rand::random::<u32>()));
        fs::write(
            &record,
            format!("{me} {}\n", start_time(me).expect("own start time")),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", record.display()));
        let id = loop {
            let id = format!("{NS_PREFIX}{tag}{:03x}", rand::random::<u16>() & 0xfff);
            match fs::hard_link(&record, owner_file(&id)) {
                Ok(()) => break id,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("create {}: {e}", owner_file(&id).display()),
            }
        };
        let _ = fs::remove_file(&record);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}-"))
            .tempdir()
            .expect("temp dir");
        let lab = Lab {
            id,
            dir: Some(dir),
            namespaces: Mutex::new(Vec::new()),
            devices: AtomicU32::new(0),
            renumbered: AtomicU32::new(0),
        };
        // From here a panic unwinds through Lab::drop, which removes what exists so far.
        let p = lab.add_ns("p");
        let mut setup = vec![
            "link add br0 type bridge".to_string(),
            "link set br0 up".to_string(),
            format!("addr add {WAN_GATEWAY}/24 dev br0"),
            format!("addr add {TURN_IP}/24 dev br0"),
            format!("addr add {RENDEZVOUS_IP}/24 dev br0"),
        ];
        for i in 0..PUBLIC_IPS {
            setup.push(format!("addr add {}/24 dev br0", lab.public_ip(i)));
        }
        ip_batch(&p, &setup);
        nft_load(&p, nft::TRANSIT);
        lab
    }

    /// The lab's id, the prefix of all its namespace names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public namespace.
    pub fn public_ns(&self) -> String {
        format!("{}-p", self.id)
    }

    /// The `i`-th general-purpose server address in the public namespace (198.51.100.10 + i).
    pub fn public_ip(&self, i: u8) -> Ipv4Addr {
        assert!(i < PUBLIC_IPS, "public_ip({i}): the lab has {PUBLIC_IPS}");
        Ipv4Addr::new(198, 51, 100, 10 + i)
    }

    /// `public_ip(i):port`.
    pub fn public_addr(&self, i: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.public_ip(i)), port)
    }

    /// A UDP socket bound to `addr` in the public namespace.
    pub fn public_udp(&self, addr: SocketAddr) -> UdpSocket {
        udp_in(&self.public_ns(), addr)
    }

    /// An [`Echo`] server on `public_ip(i):port`.
    pub fn echo(&self, i: u8, port: u16) -> Echo {
        Echo::start(self.public_udp(self.public_addr(i, port)))
    }

    /// An [`Echo`] server on any address of the public namespace (e.g. `TURN_IP`).
    pub fn echo_at(&self, addr: SocketAddr) -> Echo {
        Echo::start(self.public_udp(addr))
    }

    /// `program` to be run in the public namespace.
    pub fn public_cmd(&self, program: impl AsRef<OsStr>) -> Command {
        ns_command(&self.public_ns(), program)
    }

    /// Spawns `cmd` (built as if for the host: program, arguments, environment, working dir) in
    /// the public namespace, its output going to `<lab dir>/<name>.out`. Killed when the returned
    /// handle or the lab is dropped.
    pub fn spawn_in_public(&self, name: &str, cmd: Command) -> LabChild {
        let mut wrapped = self.public_cmd(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            wrapped.current_dir(d);
        }
        LabChild::spawn(name, wrapped, &self.dir().join(format!("{name}.out")))
    }

    /// The lab's temp dir (process output, coturn's files).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("lab dir").path()
    }

    /// Adds a device behind a router of `kind`.
    pub fn add_device(&self, kind: RouterKind) -> Device {
        let k = self.devices.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(
            k <= MAX_DEVICES && 1 + k < LAST_WAN_OCTET - self.renumbered.load(Ordering::Relaxed),
            "a lab holds at most {MAX_DEVICES} devices, renumbered ones included"
        );
        let wan = Ipv4Addr::new(203, 0, 113, (1 + k) as u8);
        let lan_router = Ipv4Addr::new(192, 168, k as u8, 1);
        let lan = Ipv4Addr::new(192, 168, k as u8, 2);
        let nat = |random_port, filtering, udp_only_to| nft::Nat {
            random_port,
            filtering,
            udp_only_to,
            port_xor: 0,
            accept_input: false,
        };
        let (router_nat, cgnat) = match kind {
            RouterKind::Open => {
                let d = self.add_ns(&format!("d{k}"));
                self.attach_to_public(&d, "eth0", wan, k);
                return Device {
                    kind,
                    index: k,
                    ns: d,
                    router_ns: None,
                    cgnat_ns: None,
                    outer_nat: None,
                    lan_ip: wan,
                    public_ip: wan,
                };
            }
            RouterKind::Home => (nat(false, nft::Filtering::Address, None), false),
            RouterKind::PortRestricted => (nat(false, nft::Filtering::AddressAndPort, None), false),
            RouterKind::Masquerade => (
                nft::Nat {
                    accept_input: true,
                    ..nat(false, nft::Filtering::AddressAndPort, None)
                },
                false,
            ),
            RouterKind::Symmetric => (nat(true, nft::Filtering::AddressAndPort, None), false),
            RouterKind::UdpBlockedExceptTurn(turn) => (
                nat(false, nft::Filtering::AddressAndPort, Some(turn)),
                false,
            ),
            RouterKind::DoubleNat => (nat(false, nft::Filtering::Address, None), true),
        };
        let cgnat_nat = nat(false, nft::Filtering::AddressAndPort, None);
        let r = self.add_ns(&format!("r{k}"));
        let d = self.add_ns(&format!("d{k}"));
        let cgnat_ns = if cgnat {
            let c = self.add_ns(&format!("c{k}"));
            self.attach_to_public(&c, "wan", wan, k);
            let carrier = Ipv4Addr::new(100, 64, k as u8, 1);
            link_below(&c, &r, "wan", carrier, Ipv4Addr::new(100, 64, k as u8, 2));
            make_router(&c, &cgnat_nat);
            Some(c)
        } else {
            self.attach_to_public(&r, "wan", wan, k);
            None
        };
        link_below(&r, &d, "eth0", lan_router, lan);
        make_router(&r, &router_nat);
        Device {
            kind,
            index: k,
            ns: d,
            router_ns: Some(r),
            outer_nat: Some(if cgnat_ns.is_some() {
                cgnat_nat
            } else {
                router_nat
            }),
            cgnat_ns,
            lan_ip: lan,
            public_ip: wan,
        }
    }

    /// Gives `dev` a new public address, as when an ISP reassigns one: its outermost router's
    /// WAN (an Open device's own interface) moves to a fresh address of 203.0.113.0/24, and the
    /// router forgets its NAT mappings. Returns the new address.
    pub fn renumber(&self, dev: &mut Device) -> Ipv4Addr {
        let n = self.renumbered.fetch_add(1, Ordering::Relaxed);
        let octet = LAST_WAN_OCTET - n;
        assert!(
            octet > 1 + self.devices.load(Ordering::Relaxed),
            "no free WAN address left to renumber to"
        );
        let new = Ipv4Addr::new(203, 0, 113, octet as u8);
        let (ns, ifname) = dev.outer();
        // Removing the address takes the routes through it along.
        ip_batch(
            ns,
            &[
                format!("addr del {}/24 dev {ifname}", dev.public_ip),
                format!("addr add {new}/24 dev {ifname}"),
                format!("route replace default via {WAN_GATEWAY}"),
            ],
        );
        if dev.outer_nat.is_some() {
            flush_conntrack(ns);
        }
        dev.public_ip = new;
        new
    }

    /// Creates namespace `<id>-<role>` with its loopback up, and records it for teardown.
    fn add_ns(&self, role: &str) -> String {
        let name = format!("{}-{role}", self.id);
        assert!(name.len() <= 15, "namespace name {name} is over 15 chars");
        create_netns(&name);
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        ip_batch(&name, &["link set lo up".to_string()]);
        name
    }

    /// A veth from `ns` (`ifname`, address `addr`/24, default route via the public namespace) to
    /// a port `w<k>` of the public bridge.
    fn attach_to_public(&self, ns: &str, ifname: &str, addr: Ipv4Addr, k: u32) {
        let p = self.public_ns();
        ip_batch(
            ns,
            &[
                format!("link add {ifname} type veth peer name w{k} netns {p}"),
                format!("addr add {addr}/24 dev {ifname}"),
                format!("link set {ifname} up"),
                format!("route add default via {WAN_GATEWAY}"),
            ],
        );
        ip_batch(
            &p,
            &[
                format!("link set w{k} master br0"),
                format!("link set w{k} up"),
            ],
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut names =
            std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|e| e.into_inner()));
        names.reverse();
        destroy_namespaces(&names);
        let _ = fs::remove_file(owner_file(&self.id));
        if std::thread::panicking() && std::env::var_os("FYBRK_KEEP_FAILED").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("nat lab {}: kept {}", self.id, dir.keep().display());
            }
        }
    }
}

/// A device: a LAN namespace behind its router(s). A plain description; the [`Lab`] owns the
/// namespaces, so a `Device` must not outlive its lab.
#[derive(Clone, Debug)]
pub struct Device {
    kind: RouterKind,
    index: u32,
    ns: String,
    router_ns: Option<String>,
    cgnat_ns: Option<String>,
    /// The NAT of the outermost router (the one the internet sees); `None` for Open.
    outer_nat: Option<nft::Nat>,
    lan_ip: Ipv4Addr,
    public_ip: Ipv4Addr,
}

impl Device {
    /// The device's namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The router it sits behind.
    pub fn kind(&self) -> RouterKind {
        self.kind
    }

    /// Its number in the lab (1, 2, ...), the `k` of its addresses.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The namespace of its (home) router; `None` for [`RouterKind::Open`].
    pub fn router_ns(&self) -> Option<&str> {
        self.router_ns.as_deref()
    }

    /// The namespace of the carrier's NAT of a [`RouterKind::DoubleNat`] device.
    pub fn cgnat_ns(&self) -> Option<&str> {
        self.cgnat_ns.as_deref()
    }

    /// Its own address (the public address for [`RouterKind::Open`]).
    pub fn lan_ip(&self) -> Ipv4Addr {
        self.lan_ip
    }

    /// The address the internet sees it from: the WAN address of its outermost router.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }

    /// `program` to be run in the device's namespace. It goes through `nsenter --net`, not
    /// `ip netns exec`: only the network namespace changes, so a FUSE mount made by the command
    /// stays visible to the test. DHT discovery is off (`FYBRK_NO_DHT`) unless a test removes
    /// that variable and names the lab's own DHT (`dht.rs`).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = ns_command(&self.ns, program);
        c.env("FYBRK_NO_DHT", "1");
        c
    }

    /// A UDP socket bound to `lan_ip:port` in the device's namespace (0: any port).
    pub fn udp(&self, port: u16) -> UdpSocket {
        udp_in(&self.ns, SocketAddr::new(IpAddr::V4(self.lan_ip), port))
    }

    /// The namespace and interface of its public address: the outermost router's `wan`, or an
    /// Open device's `eth0`.
    fn outer(&self) -> (&str, &str) {
        match (&self.cgnat_ns, &self.router_ns) {
            (Some(c), _) => (c, "wan"),
            (None, Some(r)) => (r, "wan"),
            (None, None) => (&self.ns, "eth0"),
        }
    }

    /// Its outermost router forgets every NAT mapping (conntrack flushed, filtering state
    /// reloaded) and from now on maps each device port to another public port, as a router that
    /// rebooted does: the device's next packets leave from a new public port, and nothing sent
    /// to the old one gets in. Each call picks other ports. Panics for an Open device.
    pub fn lose_mappings(&mut self) {
        let ns = self.change_router("lose_mappings", |nat| {
            // Below 0x8000: a port from the ephemeral range (32768 up) stays in it.
            nat.port_xor = (nat.port_xor + 0x1000) % 0x8000;
            if nat.port_xor == 0 {
                nat.port_xor = 0x1000;
            }
        });
        flush_conntrack(&ns);
    }

    /// Edits the outermost router's NAT settings with `edit` and reloads its rules; returns the
    /// router's namespace. Panics (naming `what`) for an Open device.
    fn change_router(&mut self, what: &str, edit: impl FnOnce(&mut nft::Nat)) -> String {
        let ns = self.outer().0.to_string();
        let nat = self
            .outer_nat
            .as_mut()
            .unwrap_or_else(|| panic!("{what}: {} has no router", self.ns));
        edit(nat);
        nft_load(&ns, &nft::router(nat));
        ns
    }

    /// Its router lets all UDP out again (a `UdpBlockedExceptTurn` router becomes an ordinary
    /// port-restricted one, as when a laptop leaves a locked-down network for a normal one);
    /// mappings and filtering state survive. Panics for an Open device.
    pub fn unblock_udp(&mut self) {
        self.change_router("unblock_udp", |nat| nat.udp_only_to = None);
    }

    /// Drops `percent` % of the packets its router forwards, in each direction independently
    /// (nftables `numgen random mod 100 < N drop`); for an Open device, of those entering and
    /// leaving its interface. Replaces the previous setting; 0 turns loss off.
    pub fn set_loss(&self, percent: u8) {
        match &self.router_ns {
            Some(r) => nft_load(r, &nft::loss(percent, true)),
            None => nft_load(&self.ns, &nft::loss(percent, false)),
        }
    }
}

/// A device's outermost router, to change its rules while the device is in use elsewhere.
#[derive(Debug, Clone)]
pub struct Router {
    ns: String,
}

impl Router {
    /// Makes the router drop everything it would forward to or from `ips` (e.g. another
    /// device's public address: no direct path between the two); replaces the previous list, an
    /// empty one lifts the block.
    pub fn block(&self, ips: &[Ipv4Addr]) {
        nft_load(&self.ns, &nft::block(ips));
    }
}

impl Device {
    /// Its outermost router (the CGNAT of a double NAT); `None` for [`RouterKind::Open`].
    pub fn router(&self) -> Option<Router> {
        let ns = self.cgnat_ns.as_ref().or(self.router_ns.as_ref())?;
        Some(Router { ns: ns.clone() })
    }
}

/// A process spawned in the lab; killed (SIGKILL) and reaped on drop.
pub struct LabChild {
    name: String,
    child: Child,
    output: PathBuf,
}

impl LabChild {
    fn spawn(name: &str, mut cmd: Command, output: &Path) -> LabChild {
        let out = File::create(output).unwrap_or_else(|e| panic!("{}: {e}", output.display()));
        let err = out.try_clone().expect("dup");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {cmd:?}: {e}"));
        LabChild {
            name: name.to_string(),
            child,
            output: output.to_path_buf(),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines of its stdout and stderr.
    pub fn output_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.output).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

/// `ip netns add NAME`, one at a time in this process (see [`NETNS_ADD`]).
pub fn create_netns(name: &str) {
    let _one_at_a_time = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
    run_ok(Command::new("ip").args(["netns", "add", name]));
}

/// `program` under `nsenter --net=/run/netns/NS`.
pub fn ns_command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

/// A veth from `upper` (`lan`, `upper_ip`/24) down to `lower` (`lower_if`, `lower_ip`/24, default
/// route via `upper_ip`).
fn link_below(upper: &str, lower: &str, lower_if: &str, upper_ip: Ipv4Addr, lower_ip: Ipv4Addr) {
    ip_batch(
        upper,
        &[
            format!("link add lan type veth peer name {lower_if} netns {lower}"),
            format!("addr add {upper_ip}/24 dev lan"),
            "link set lan up".to_string(),
        ],
    );
    ip_batch(
        lower,
        &[
            format!("addr add {lower_ip}/24 dev {lower_if}"),
            format!("link set {lower_if} up"),
            format!("route add default via {upper_ip}"),
        ],
    );
}

/// Turns namespace `ns` (with `wan` and `lan`) into a NAT router.
fn make_router(ns: &str, nat: &nft::Nat) {
    let ns2 = ns.to_string();
    udp::in_netns(ns, move || {
        // /proc/sys/net belongs to the namespace of the thread that opens it.
        fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .unwrap_or_else(|e| panic!("ip_forward in {ns2}: {e}"))
    });
    nft_load(ns, &nft::router(nat));
}

/// Empties namespace `ns`'s conntrack table (`conntrack -F`): every NAT mapping is gone.
fn flush_conntrack(ns: &str) {
    run_ok(ns_command(ns, "conntrack").arg("-F"));
}

/// Runs `ip -n NS -batch -` with `lines` on stdin.
fn ip_batch(ns: &str, lines: &[String]) {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", ns, "-batch", "-"]);
    run_with_stdin(cmd, &lines.join("\n"));
}

/// Loads an nftables ruleset into namespace `ns`.
fn nft_load(ns: &str, ruleset: &str) {
    let mut cmd = ns_command(ns, "nft");
    cmd.args(["-f", "-"]);
    run_with_stdin(cmd, ruleset);
}

/// Runs `cmd` with `input` on stdin; panics with its output unless it exits 0 within
/// [`CMD_TIMEOUT`].
fn run_with_stdin(mut cmd: Command, input: &str) {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    // Small inputs: the whole text fits in the pipe before the tool reads it.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .unwrap_or_else(|e| panic!("{desc}: write stdin: {e}"));
    drop(stdin);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > CMD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within {CMD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if !status.success() {
        let mut out = String::new();
        let mut err = String::new();
        let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
        let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
        panic!(
            "{desc} failed ({status})\n--- input\n{input}\n--- stdout\n{out}\n--- stderr\n{err}"
        );
    }
}

/// Runs `cmd`; panics with its output unless it exits 0.
fn run_ok(cmd: &mut Command) {
    let out = fybrk_tests::run_timeout(cmd, CMD_TIMEOUT);
    if !out.status.success() {
        panic!("{cmd:?} failed\n{}", fybrk_tests::describe(&out));
    }
}

// ---------------------------------------------------------------------------------------------
// Teardown and stale labs
// ---------------------------------------------------------------------------------------------

/// Where lab `id` records its owner.
pub fn owner_file(id: &str) -> PathBuf {
    Path::new(OWNER_DIR).join(id)
}

/// Field 22 of /proc/PID/stat: the start time in clock ticks since boot, which tells a live
/// owner from an unrelated process that reused its pid. `None` for a zombie: a test process
/// killed a moment ago may not be reaped yet, and its lab is stale all the same.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the process that created lab `id` is still running.
fn owner_alive(id: &str) -> bool {
    let Ok(text) = fs::read_to_string(owner_file(id)) else {
        return false;
    };
    let mut words = text.split_whitespace();
    let (Some(pid), Some(start)) = (
        words.next().and_then(|w| w.parse::<i32>().ok()),
        words.next().and_then(|w| w.parse::<u64>().ok()),
    ) else {
        return false;
    };
    start_time(pid) == Some(start)
}

/// Removes every lab whose owner process is gone: kills what runs in its namespaces, deletes
/// them, and drops the owner record. Labs of live processes (this one included) are left alone.
pub fn clean_stale() {
    let mut stale: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(NS_PREFIX) {
                continue;
            }
            let id = name.split('-').next().unwrap_or("").to_string();
            if !owner_alive(&id) {
                stale.entry(id).or_default().push(name);
            }
        }
    }
    for (id, names) in &stale {
        eprintln!("nat lab: removing stale lab {id}: {}", names.join(" "));
        destroy_namespaces(names);
        let _ = fs::remove_file(owner_file(id));
        remove_temp_dirs(id);
    }
    // Owner records of labs that died without namespaces (killed while starting).
    if let Ok(entries) = fs::read_dir(OWNER_DIR) {
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if id.starts_with(NS_PREFIX) && !owner_alive(&id) {
                let _ = fs::remove_file(e.path());
                remove_temp_dirs(&id);
            }
        }
    }
}

/// Removes the temp dirs (`<tmp>/<id>-*`) of dead lab `id`.
fn remove_temp_dirs(id: &str) {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = fs::read_dir(&tmp) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{id}-"))
            {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// (device, inode) of a network namespace file.
fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Processes (other than this one) whose network namespace is `ns`.
pub fn pids_in(ns: &str) -> Vec<i32> {
    let Some(want) = ns_identity(&Path::new("/run/netns").join(ns)) else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid != me && ns_identity(&e.path().join("ns/net")) == Some(want) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Kills every process in `names` and deletes the namespaces (their veths go with them).
/// Best effort: never panics, since it runs in `Drop`.
fn destroy_namespaces(names: &[String]) {
    for ns in names {
        for pid in pids_in(ns) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let start = Instant::now();
    while names.iter().any(|ns| !pids_in(ns).is_empty()) && start.elapsed() < KILL_WAIT {
        std::thread::sleep(Duration::from_millis(10));
    }
    for ns in names {
        // What `ip netns delete` does: detach the bind mount that keeps the namespace alive,
        // then remove the name. The namespace goes when its last process or socket does.
        let path = Path::new("/run/netns").join(ns);
        if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_file(&path);
    }
}
