//! UDP probes for the lab, in the test process itself: a socket is created on a thread that
//! entered a namespace (`setns`), and stays in that namespace for life while any thread uses it.
//! No helper program, no parsing of another process's output.
//!
//! - [`udp_in`]: a socket bound inside a namespace.
//! - [`Echo`]: a server thread that tells each client the address it sees (`whoami`), and counts
//!   what it receives.
//! - [`whoami`], [`whoami_within`], [`received`]: the client side.
//! - [`stun_binding`]: a minimal RFC 8489 Binding request, for coturn.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a probe waits for an answer that should come. Inside the lab a datagram crosses
/// three namespaces in well under a millisecond; this is slack for a loaded 2-core CI machine.
pub const ANSWER_WAIT: Duration = Duration::from_millis(300);
/// How long a test waits before concluding a datagram was dropped: the same slack, since a
/// delivered datagram would have arrived within it.
pub const SILENCE_WAIT: Duration = Duration::from_millis(300);

/// Runs `f` on a new thread that entered the network namespace `ns` (its `/run/netns` name).
/// Sockets created in `f` belong to `ns` wherever they are used later.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // Only this thread moves; it ends with `f`.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns {path}: {}", io::Error::last_os_error());
        }
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A UDP socket bound to `addr` inside namespace `ns`.
pub fn udp_in(ns: &str, addr: SocketAddr) -> UdpSocket {
    let what = format!("bind udp {addr} in {ns}");
    in_netns(ns, move || UdpSocket::bind(addr)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Every datagram `sock` receives within `window`, with its source.
pub fn received(sock: &UdpSocket, window: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        sock.set_read_timeout(Some(left)).expect("set_read_timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => out.push((from, buf[..n].to_vec())),
            Err(e) if is_timeout(&e) => return out,
            Err(e) => panic!("recv_from: {e}"),
        }
    }
}

/// Whether `e` is a read timeout.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Asks the [`Echo`] at `server` which address `sock` reaches it from (the NAT mapping towards
/// `server`). Tries three times, waiting longer each time; `None` if no answer came. Other
/// datagrams arriving meanwhile are discarded.
pub fn whoami(sock: &UdpSocket, server: SocketAddr) -> Option<SocketAddr> {
    (1..=3).find_map(|attempt| whoami_within(sock, server, ANSWER_WAIT * attempt))
}

/// One [`whoami`] question, waiting `wait` for the answer: for checks that expect none (in a lab
/// without loss, one unanswered question is the answer).
pub fn whoami_within(sock: &UdpSocket, server: SocketAddr, wait: Duration) -> Option<SocketAddr> {
    let mut buf = [0u8; 2048];
    let nonce: u64 = rand::random();
    let ask = format!("whoami {nonce}");
    sock.send_to(ask.as_bytes(), server)
        .unwrap_or_else(|e| panic!("send to {server}: {e}"));
    let end = Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).expect("set_read_timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == server => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let mut words = text.split_whitespace();
                if words.next() == Some("you-are") && words.next() == Some(&nonce.to_string()) {
                    return words.next().and_then(|a| a.parse().ok());
                }
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return None,
            Err(e) => panic!("recv_from: {e}"),
        }
    }
}

/// A UDP server thread: answers `whoami NONCE` with `you-are NONCE ADDR` (the source address it
/// saw) and counts every datagram it receives. Stops on drop.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Serves on `sock` (already bound, e.g. by [`udp_in`]).
    pub fn start(sock: UdpSocket) -> Echo {
        let addr = sock.local_addr().expect("local_addr");
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // Checks `stop` this often.
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                let (n, from) = match sock.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if is_timeout(&e) => continue,
                    Err(e) => panic!("echo {addr}: recv_from: {e}"),
                };
                c.fetch_add(1, Ordering::Relaxed);
                let text = String::from_utf8_lossy(&buf[..n]);
                if let Some(nonce) = text.strip_prefix("whoami ") {
                    let reply = format!("you-are {nonce} {from}");
                    let _ = sock.send_to(reply.as_bytes(), from);
                }
            }
        });
        Echo {
            addr,
            count,
            stop,
            thread: Some(thread),
        }
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// STUN (RFC 8489), just a Binding request
// ---------------------------------------------------------------------------------------------

const STUN_MAGIC: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Sends a STUN Binding request from `sock` to `server` and returns the reflexive address in the
/// answer, retrying until `timeout`; `None` if nothing answered.
pub fn stun_binding(sock: &UdpSocket, server: SocketAddr, timeout: Duration) -> Option<SocketAddr> {
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let txid: [u8; 12] = rand::random();
        let mut req = Vec::with_capacity(20);
        req.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes());
        req.extend_from_slice(&STUN_MAGIC.to_be_bytes());
        req.extend_from_slice(&txid);
        // A refused send (nothing listening yet sends ICMP back) is retried like a lost one.
        let _ = sock.send_to(&req, server);
        let wait = ANSWER_WAIT.min(end.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(wait)).expect("set_read_timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == server => {
                if let Some(a) = parse_binding_success(&buf[..n], &txid) {
                    return Some(a);
                }
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("recv_from: {e}"),
        }
    }
    None
}

fn parse_binding_success(msg: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if msg.len() < 20
        || u16::from_be_bytes([msg[0], msg[1]]) != BINDING_SUCCESS
        || u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]) != STUN_MAGIC
        || &msg[8..20] != txid
    {
        return None;
    }
    let mut attrs = &msg[20..];
    let mut mapped = None;
    while attrs.len() >= 4 {
        let ty = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = u16::from_be_bytes([attrs[2], attrs[3]]) as usize;
        let value = attrs.get(4..4 + len)?;
        // IPv4 only: family 0x01, port, address.
        if value.len() >= 8 && value[1] == 0x01 {
            let port = u16::from_be_bytes([value[2], value[3]]);
            let ip = u32::from_be_bytes([value[4], value[5], value[6], value[7]]);
            match ty {
                ATTR_XOR_MAPPED_ADDRESS => {
                    let port = port ^ (STUN_MAGIC >> 16) as u16;
                    let ip = Ipv4Addr::from(ip ^ STUN_MAGIC);
                    return Some(SocketAddr::new(IpAddr::V4(ip), port));
                }
                ATTR_MAPPED_ADDRESS => {
                    mapped = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
                }
                _ => {}
            }
        }
        // Attributes are padded to 4 bytes.
        let step = 4 + len.div_ceil(4) * 4;
        attrs = attrs.get(step..).unwrap_or(&[]);
    }
    mapped
}
