//! coturn (Debian's `turnserver`) in the lab's public namespace: STUN and TURN on
//! [`TURN_IP`](super::TURN_IP):3478, long-term credentials, plain UDP/TCP only.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{udp, Lab, LabChild, TURN_IP};

/// coturn's standard port.
pub const TURN_PORT: u16 = 3478;
/// The realm of the long-term credentials.
pub const TURN_REALM: &str = "fybrk.lab";
/// Relayed addresses use ports from this range on `TURN_IP` (a few hundred allocations is far
/// more than a test makes; a small range keeps them easy to spot in captures).
pub const RELAY_PORTS: (u16, u16) = (49152, 49407);
/// How long coturn may take to answer its first Binding request.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running coturn; killed on drop.
pub struct Coturn {
    /// Where it listens for STUN and TURN (UDP and TCP).
    pub addr: SocketAddr,
    /// TURN user name.
    pub user: String,
    /// TURN password.
    pub pass: String,
    /// TURN realm.
    pub realm: String,
    /// Its log file.
    pub log: PathBuf,
    /// The process; killing it is its drop.
    pub process: LabChild,
}

impl Coturn {
    /// The last `lines` lines of coturn's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Lab {
    /// Starts coturn on `TURN_IP:3478` with one long-term-credential user, and waits until it
    /// answers a STUN Binding request.
    pub fn start_coturn(&self, user: &str, pass: &str) -> Coturn {
        let addr = SocketAddr::new(IpAddr::V4(TURN_IP), TURN_PORT);
        let dir = self.dir();
        let log = dir.join("coturn.log");
        let mut cmd = Command::new("turnserver");
        cmd.arg("-n") // no config file: everything is on this command line
            .args(["--listening-ip", &TURN_IP.to_string()])
            .args(["--relay-ip", &TURN_IP.to_string()])
            .args(["--listening-port", &TURN_PORT.to_string()])
            .args(["--min-port", &RELAY_PORTS.0.to_string()])
            .args(["--max-port", &RELAY_PORTS.1.to_string()])
            .args(["--realm", TURN_REALM])
            .arg("--lt-cred-mech")
            .args(["--user", &format!("{user}:{pass}")])
            .arg("--fingerprint")
            .args(["--no-tls", "--no-dtls", "--no-cli"])
            // One address cannot answer RFC 5780 CHANGE-REQUEST; say so instead of warning.
            .arg("--no-rfc5780")
            .arg("--log-file")
            .arg(&log)
            .args(["--simple-log", "--no-stdout-log"])
            // Keep its state out of /var: the pid file and the (unused) user database.
            .arg("--pidfile")
            .arg(dir.join("coturn.pid"))
            .arg("--userdb")
            .arg(dir.join("coturn.db"));
        let process = self.spawn_in_public("coturn", cmd);
        let probe = self.public_udp(SocketAddr::new(IpAddr::V4(TURN_IP), 0));
        let coturn = Coturn {
            addr,
            user: user.to_string(),
            pass: pass.to_string(),
            realm: TURN_REALM.to_string(),
            log,
            process,
        };
        if udp::stun_binding(&probe, addr, START_TIMEOUT).is_none() {
            panic!(
                "coturn did not answer a STUN Binding request on {addr} within {START_TIMEOUT:?}\n\
                 --- its output\n{}\n--- its log\n{}",
                coturn.process.output_tail(40),
                coturn.log_tail(40)
            );
        }
        coturn
    }
}
