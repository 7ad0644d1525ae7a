//! A fybrk daemon inside a lab device's namespace, with the lab's servers.

use std::net::SocketAddr;
use std::time::Duration;

use fybrk_tests::{describe, fybrk_bin, run_timeout, Mount};

use super::{Coturn, Device, Lab, LabChild, RENDEZVOUS_IP, RENDEZVOUS_PORT};

impl Lab {
    /// `fybrk rendezvous` on the lab's rendezvous address, in the public namespace; it stops
    /// when the returned child drops.
    pub fn start_rendezvous(&self) -> LabChild {
        let mut rdv = std::process::Command::new(fybrk_bin());
        rdv.args([
            "rendezvous",
            "--listen",
            &SocketAddr::from((RENDEZVOUS_IP, RENDEZVOUS_PORT)).to_string(),
        ]);
        self.spawn_in_public("rendezvous", rdv)
    }
}

/// `fybrk mount` for `m` in `dev`'s namespace listening on `listen`, with the lab's rendezvous
/// server, coturn as STUN server and TURN relay (so a relayed path is always possible: what a
/// test watches is whether the direct one wins).
pub fn mount_with_servers(dev: &Device, m: &mut Mount, name: &str, listen: &str, coturn: &Coturn) {
    let rendezvous = SocketAddr::from((RENDEZVOUS_IP, RENDEZVOUS_PORT)).to_string();
    let turn = format!(
        "turn:{}?user={}&pass={}",
        coturn.addr, coturn.user, coturn.pass
    );
    let mut cmd = dev.cmd(fybrk_bin());
    cmd.arg("--state")
        .arg(&m.state)
        .arg("mount")
        .arg(&m.mnt)
        .args(["--listen", listen, "--name", name])
        .args(["--rendezvous", &rendezvous])
        .args(["--stun", &coturn.addr.to_string(), "--turn", &turn]);
    let out = run_timeout(&mut cmd, Duration::from_secs(60));
    if !out.status.success() {
        m.fail(&format!("mount in {} failed\n{}", dev.ns(), describe(&out)));
    }
    m.adopt_daemon();
}
