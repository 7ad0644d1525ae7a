//! An IPv6-only internet: no IPv4 anywhere but loopback, and no NAT (IPv6 has none). For the
//! dual-stack tests (`tests/ipv6.rs`).
//!
//! ```text
//!  core namespace <id>-6, IPv6 forwarding on: lo V6_RENDEZVOUS 2001:db8::3
//!     |  veth v<k> fe80::1, route 2001:db8:<k>::/64
//!  eth0 2001:db8:<k>::2/64, default route via fe80::1: device <id>-d<k>
//! ```
//!
//! Every device has a global address (the 2001:db8::/32 documentation prefix) on a link of its
//! own, so its peers reach it only through the core, never on a shared link: what two IPv6
//! devices on different networks see. Link-local multicast (LAN discovery) does not cross the
//! core. The core's only global address is the server's, and its links to the devices have
//! link-local addresses only: a server bound to `[::]` answers from the address it was asked
//! at because it is the only one the kernel can choose (with a global address per link the
//! answer would leave from the link's, and clients drop answers from another address).
//! Addresses are added with `nodad`, so they work at once (duplicate address detection would
//! hold them back for a second or two). The core is made at the first call and torn down
//! with the lab, like every namespace of it.

use std::ffi::OsStr;
use std::fs;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{ip_batch, ns_command, udp, Lab, LabChild, MAX_DEVICES};

/// The rendezvous server's address in the core.
pub const V6_RENDEZVOUS: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 3);
/// The core's side of every device link (link-local: see the module doc).
const V6_GATEWAY: &str = "fe80::1";

/// A device of the IPv6-only internet (see the module doc). A plain description, like
/// [`super::Device`]: the lab owns the namespace.
#[derive(Clone, Debug)]
pub struct V6Device {
    ns: String,
    ip: Ipv6Addr,
}

impl V6Device {
    /// The device's namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Its global address, 2001:db8:<k>::2.
    pub fn ip(&self) -> Ipv6Addr {
        self.ip
    }

    /// `program` to be run in the device's namespace (through `nsenter --net`, as
    /// [`super::Device::cmd`]).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        ns_command(&self.ns, program)
    }

    /// A UDP socket bound to `[ip]:port` in the device's namespace (0: any port).
    pub fn udp(&self, port: u16) -> UdpSocket {
        udp::udp_in(&self.ns, SocketAddr::new(IpAddr::V6(self.ip), port))
    }
}

impl Lab {
    /// The core namespace of the IPv6-only internet, made at the first call.
    pub fn v6_core(&self) -> String {
        let name = format!("{}-6", self.id());
        let exists = self
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&name);
        if !exists {
            let core = self.add_ns("6");
            ip_batch(
                &core,
                &[
                    // On loopback: a bridge without ports has no carrier, and IPv6 addresses on
                    // a link without carrier are unreachable (no dummy module here either).
                    format!("addr add {V6_RENDEZVOUS}/128 dev lo nodad"),
                ],
            );
            let ns = core.clone();
            udp::in_netns(&core, move || {
                // /proc/sys/net belongs to the namespace of the thread that opens it.
                fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
                    .unwrap_or_else(|e| panic!("IPv6 forwarding in {ns}: {e}"))
            });
        }
        name
    }

    /// Adds a device with only an IPv6 address (see the module doc).
    pub fn add_v6_device(&self) -> V6Device {
        let core = self.v6_core();
        let k = self.devices.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(
            k <= MAX_DEVICES,
            "a lab holds at most {MAX_DEVICES} devices"
        );
        let ip = Ipv6Addr::new(0x2001, 0xdb8, k as u16, 0, 0, 0, 0, 2);
        let d = self.add_ns(&format!("d{k}"));
        ip_batch(
            &core,
            &[
                format!("link add v{k} type veth peer name eth0 netns {d}"),
                format!("addr add {V6_GATEWAY}/64 dev v{k} nodad"),
                format!("link set v{k} up"),
                format!("route add 2001:db8:{k:x}::/64 dev v{k}"),
            ],
        );
        ip_batch(
            &d,
            &[
                format!("addr add {ip}/64 dev eth0 nodad"),
                "link set eth0 up".to_string(),
                format!("route add default via {V6_GATEWAY} dev eth0"),
            ],
        );
        V6Device { ns: d, ip }
    }

    /// `program` to be run in the IPv6 core (where [`V6_RENDEZVOUS`] is).
    pub fn v6_core_cmd(&self, program: impl AsRef<OsStr>) -> Command {
        ns_command(&self.v6_core(), program)
    }

    /// Spawns `cmd` in the IPv6 core, its output going to `<lab dir>/<name>.out`; like
    /// [`Lab::spawn_in_public`].
    pub fn spawn_in_v6_core(&self, name: &str, cmd: Command) -> LabChild {
        let mut wrapped = self.v6_core_cmd(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        LabChild::spawn(name, wrapped, &self.dir().join(format!("{name}.out")))
    }
}

/// Where [`Lab::start_v6_stun`] answers.
pub const V6_STUN_PORT: u16 = 3478;

/// A STUN server thread (Binding requests only, RFC 8489) on `[V6_RENDEZVOUS]:3478`: answers
/// each request with the source address it saw in an XOR-MAPPED-ADDRESS. Stops on drop. coturn
/// would do, but this needs no config file and answers over IPv6 only, as this lab has no IPv4.
pub struct V6Stun {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Lab {
    /// Starts a [`V6Stun`] in the IPv6 core.
    pub fn start_v6_stun(&self) -> V6Stun {
        let addr = SocketAddr::new(IpAddr::V6(V6_RENDEZVOUS), V6_STUN_PORT);
        let sock = udp::udp_in(&self.v6_core(), addr);
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let (n, from) = match sock.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if udp::is_timeout(&e) => continue,
                    Err(e) => panic!("STUN {addr}: recv_from: {e}"),
                };
                if let Some(reply) = binding_success(&buf[..n], from) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        V6Stun {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for V6Stun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The Binding success response to `request` (a Binding request, else `None`), naming `from`.
fn binding_success(request: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    if request.len() < 20 || request[..2] != [0, 1] || request[4..8] != COOKIE {
        return None;
    }
    let tid = &request[8..20];
    let mut key = COOKIE.to_vec();
    key.extend_from_slice(tid);
    let (family, ip): (u8, Vec<u8>) = match from.ip().to_canonical() {
        IpAddr::V4(v4) => (1, v4.octets().to_vec()),
        IpAddr::V6(v6) => (2, v6.octets().to_vec()),
    };
    let port = from.port() ^ 0x2112;
    let mut value = vec![0, family];
    value.extend_from_slice(&port.to_be_bytes());
    value.extend(ip.iter().zip(&key).map(|(b, k)| b ^ k));
    let mut out = vec![0x01, 0x01];
    out.extend_from_slice(&(4 + value.len() as u16).to_be_bytes());
    out.extend_from_slice(&COOKIE);
    out.extend_from_slice(tid);
    out.extend_from_slice(&[0x00, 0x20]);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend(value);
    Some(out)
}
