//! Test support: a real coturn (`turnserver`) per test on loopback, and the CI rule.
//!
//! Tests that need coturn call [`Coturn::start`]. Without the `turnserver` binary they skip
//! loudly, unless `CI` is set, where they fail: CI installs coturn (`scripts/setup-deps.sh
//! --test`) and must run them. Nothing here talks to anything but 127.0.0.1.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The user and password every test coturn accepts, in realm [`REALM`].
pub(crate) const USER: &str = "u";
pub(crate) const PASS: &str = "p";
pub(crate) const REALM: &str = "fybrk";

/// How long coturn may take to answer its first STUN request: it starts a relay thread per core
/// and opens its database, well under a second normally, more on a loaded 2-core CI machine.
const STARTUP: Duration = Duration::from_secs(15);

/// Whether this is CI (`CI` set, and not empty/"0"/"false"), as in `tests/lib.rs`.
pub(crate) fn in_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")),
        Err(_) => false,
    }
}

/// Writes straight to fd 2, past libtest's capture, so a skip is seen even on success.
fn loud(msg: &str) {
    let line = format!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string()
}

fn find_turnserver() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join("turnserver"))
        .find(|p| p.is_file())
}

/// Relay port ranges handed to successive coturns of this process: above Linux's ephemeral
/// range (32768-60999) so they never collide with test sockets bound to port 0, and disjoint
/// between the coturns of one test run.
fn relay_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const FIRST: u16 = 61_000;
    const WIDTH: u16 = 100;
    const SLOTS: u16 = 40;
    let slot = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    let low = FIRST + slot * WIDTH;
    (low, low + WIDTH - 1)
}

/// A UDP port free on 127.0.0.1 now (coturn binds it a moment later; a clash is retried).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
        let port = udp.local_addr().expect("local addr").port();
        // coturn opens TCP on the listening port unless told not to; keep it free anyway.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running coturn on 127.0.0.1; killed when dropped.
pub(crate) struct Coturn {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Coturn {
    /// Starts coturn, or returns `None` (after a loud notice) when `turnserver` is missing
    /// outside CI. Panics in CI when it is missing, and whenever it does not come up.
    pub(crate) fn start() -> Option<Coturn> {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with extra configuration lines.
    pub(crate) fn start_with(extra: &[&str]) -> Option<Coturn> {
        let Some(binary) = find_turnserver() else {
            if in_ci() {
                panic!(
                    "CI must have coturn's `turnserver` installed (scripts/setup-deps.sh --test); \
                     test {}",
                    current_test()
                );
            }
            loud(&format!(
                "SKIPPED: needs coturn's `turnserver` (apt-get install -y coturn); runs in CI \
                 (test {})",
                current_test()
            ));
            return None;
        };
        for _attempt in 0..3 {
            if let Some(coturn) = Self::try_start(&binary, extra) {
                return Some(coturn);
            }
        }
        panic!("coturn did not come up after 3 attempts (see the logs above)");
    }

    fn try_start(binary: &Path, extra: &[&str]) -> Option<Coturn> {
        let dir = tempfile::tempdir().expect("temp dir for coturn");
        let port = free_port();
        let (min_port, max_port) = relay_range();
        let config = dir.path().join("turnserver.conf");
        let log = dir.path().join("turnserver.log");
        let mut lines = vec![
            "listening-ip=127.0.0.1".to_string(),
            format!("listening-port={port}"),
            "relay-ip=127.0.0.1".into(),
            format!("min-port={min_port}"),
            format!("max-port={max_port}"),
            "lt-cred-mech".into(),
            format!("user={USER}:{PASS}"),
            format!("realm={REALM}"),
            "no-tls".into(),
            "no-dtls".into(),
            "no-tcp".into(),
            "no-tcp-relay".into(),
            "allow-loopback-peers".into(),
            "no-cli".into(),
            "no-multicast-peers".into(),
            format!("pidfile={}", dir.path().join("turnserver.pid").display()),
            format!("userdb={}", dir.path().join("turndb").display()),
        ];
        lines.extend(extra.iter().map(|l| l.to_string()));
        std::fs::write(&config, lines.join("\n") + "\n").expect("write coturn config");
        let stdout = std::fs::File::create(&log).expect("create coturn log");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .args(["--log-file", "stdout"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        let mut coturn = Coturn {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        match coturn.wait_ready() {
            Ok(()) => Some(coturn),
            Err(why) => {
                loud(&format!(
                    "coturn on port {port} did not start ({why}); its log:\n{}",
                    coturn.log()
                ));
                None
            }
        }
    }

    /// Waits until coturn answers a STUN Binding request.
    fn wait_ready(&mut self) -> Result<(), String> {
        let probe = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        // A Binding request: type 0x0001, length 0, magic cookie, transaction id.
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        request.extend_from_slice(b"fybrk-probe!");
        let deadline = Instant::now() + STARTUP;
        let mut reply = [0u8; 1500];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("turnserver exited with {status}"));
            }
            let _ = probe.send_to(&request, self.addr);
            match probe.recv_from(&mut reply) {
                Ok((n, from)) if from == self.addr && n >= 20 && reply[0] == 0x01 => return Ok(()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // ECONNREFUSED while nothing listens yet.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Err(format!("no STUN answer within {STARTUP:?}"))
    }

    /// coturn's address (STUN and TURN).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `turn:` URL for this server with the given password.
    pub(crate) fn url(&self, pass: &str) -> String {
        format!("turn:{}?user={USER}&pass={pass}", self.addr)
    }

    /// coturn's log so far (for assertions and failure messages).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One QUIC endpoint on a [`crate::mux::MuxSocket`] on loopback, with an empty allow list:
/// the mux and TURN tests' device.
pub(crate) struct Node {
    pub(crate) mux: crate::mux::MuxSocket,
    pub(crate) key: std::sync::Arc<crate::identity::DeviceKey>,
    pub(crate) allow: std::sync::Arc<crate::tls::AllowList>,
    pub(crate) transport: std::sync::Arc<crate::transport::Transport>,
    /// How far its MTU discovery may go: the daemon's rule for its buffer and interface.
    pub(crate) largest_datagram: u16,
}

impl Node {
    /// Must be called inside a tokio runtime.
    pub(crate) fn new() -> Node {
        Node::on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A node whose socket is bound on `addr`. Must be called inside a tokio runtime.
    pub(crate) fn on(addr: SocketAddr) -> Node {
        use nix::sys::socket::{getsockopt, setsockopt, sockopt};
        use std::sync::Arc;
        // The daemon's socket buffers (`cli/src/node/socket.rs`), which decide how large its
        // datagrams may be.
        let udp = UdpSocket::bind(addr).expect("bind");
        let want = crate::transport::LARGE_DATAGRAM_BUFFER;
        let _ = setsockopt(&udp, sockopt::RcvBufForce, &want)
            .or_else(|_| setsockopt(&udp, sockopt::RcvBuf, &want));
        let _ = setsockopt(&udp, sockopt::SndBufForce, &want)
            .or_else(|_| setsockopt(&udp, sockopt::SndBuf, &want));
        // The daemon's interface rule (`cli/src/node/socket.rs`, `link_mtu`) for these sockets:
        // Linux's loopback MTU on loopback, Ethernet's elsewhere.
        let link_mtu = if addr.ip().is_loopback() {
            65_536
        } else {
            1500
        };
        let largest_datagram = crate::transport::largest_datagram(
            getsockopt(&udp, sockopt::RcvBuf).unwrap_or(0),
            link_mtu,
        );
        let mux = crate::mux::MuxSocket::from_std(udp).expect("mux");
        let key = Arc::new(crate::identity::DeviceKey::generate().expect("key"));
        let allow = Arc::new(crate::tls::AllowList::new());
        let policy: Arc<dyn crate::tls::PeerPolicy> = allow.clone();
        let socket = mux.quinn_socket().expect("attach quinn");
        let transport = Arc::new(
            crate::transport::Transport::bind_with(socket, &key, policy, largest_datagram)
                .expect("transport"),
        );
        Node {
            mux,
            key,
            allow,
            transport,
            largest_datagram,
        }
    }
}
