//! One LAN without a router: a namespace `<id>-b` holding a bridge, and devices whose `eth0` is
//! a port of it, on 10.77.0.0/24 (private), with no route anywhere else. For LAN discovery:
//! devices that find each other with no server at all.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;

use super::{ip_batch, Device, Lab, RouterKind};

/// The LAN's prefix: device `k` is 10.77.0.(10+k)/24 until renumbered.
const LAN_PREFIX: [u8; 3] = [10, 77, 0];

impl Lab {
    /// The bridge namespace of the router-less LAN, made at the first call.
    fn lan_bridge(&self) -> String {
        let name = format!("{}-b", self.id());
        let exists = self
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&name);
        if !exists {
            let b = self.add_ns("b");
            ip_batch(
                &b,
                &[
                    "link add br0 type bridge".to_string(),
                    "link set br0 up".to_string(),
                ],
            );
        }
        name
    }

    /// Adds a device on the router-less LAN (see the module doc). Its kind is
    /// [`RouterKind::Open`] (no NAT), its LAN and "public" address the same private one.
    pub fn add_lan_device(&self) -> Device {
        let b = self.lan_bridge();
        let k = self.devices.fetch_add(1, Ordering::Relaxed) + 1;
        let ip = Ipv4Addr::new(LAN_PREFIX[0], LAN_PREFIX[1], LAN_PREFIX[2], (10 + k) as u8);
        let d = self.add_ns(&format!("d{k}"));
        ip_batch(
            &d,
            &[
                format!("link add eth0 type veth peer name l{k} netns {b}"),
                format!("addr add {ip}/24 dev eth0"),
                "link set eth0 up".to_string(),
            ],
        );
        ip_batch(
            &b,
            &[
                format!("link set l{k} master br0"),
                format!("link set l{k} up"),
            ],
        );
        Device {
            kind: RouterKind::Open,
            index: k,
            ns: d,
            router_ns: None,
            cgnat_ns: None,
            outer_nat: None,
            lan_ip: ip,
            public_ip: ip,
        }
    }

    /// Gives a device of the router-less LAN the address `new` (as a DHCP server might): the
    /// old one is removed from `eth0`, so nothing reaches it there any more.
    pub fn renumber_lan(&self, dev: &mut Device, new: Ipv4Addr) {
        ip_batch(
            dev.ns(),
            &[
                format!("addr del {}/24 dev eth0", dev.lan_ip),
                format!("addr add {new}/24 dev eth0"),
            ],
        );
        dev.lan_ip = new;
        dev.public_ip = new;
    }
}
