//! systemd's readiness protocol (`sd_notify`), without libsystemd: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET`.
//!
//! With `Type=notify`, `systemctl start` (and `enable --now`) return only when the daemon says
//! `READY=1`, so `systemctl --user status` shows "active" only once the folder is really mounted.
//! Outside systemd the variable is unset and nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// Tells systemd how the start went: `READY=1` once the kernel mount and the control socket
/// exist, or the reason it failed as the unit's status line (the exit code does the rest).
pub fn started(error: Option<&anyhow::Error>, mnt: &Path) {
    let message = match error {
        None => format!("READY=1\nSTATUS=serving {}", mnt.display()),
        Some(e) => format!("STATUS=failed: {e:#}"),
    };
    if let Err(e) = notify(&message) {
        // Not fatal: systemd would time the start out, which the log line explains.
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Sends `message` to `$NOTIFY_SOCKET`. `Ok(false)`: not started by systemd (no variable).
pub fn notify(message: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => send(&socket, message).map(|()| true),
        None => Ok(false),
    }
}

/// One datagram to `socket`: an absolute path, or an abstract name written with a leading `@`
/// (systemd's convention; the kernel's abstract namespace starts with a NUL byte instead).
pub fn send(socket: &OsStr, message: &str) -> io::Result<()> {
    let bytes = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    let sent = match bytes.first() {
        Some(b'@') => {
            let addr = SocketAddr::from_abstract_name(&bytes[1..])?;
            sock.send_to_addr(message.as_bytes(), &addr)?
        }
        Some(b'/') => sock.send_to(message.as_bytes(), Path::new(socket))?,
        // systemd also knows vsock: addresses (for VMs); a user service never gets one.
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NOTIFY_SOCKET={} is neither a path nor an @abstract name",
                    socket.to_string_lossy()
                ),
            ))
        }
    };
    // A datagram goes whole or not at all; a short count would mean a truncated message.
    if sent != message.len() {
        return Err(io::Error::other("short datagram to NOTIFY_SOCKET"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=x").unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=x");
    }

    #[test]
    fn sends_to_an_abstract_name() {
        let name = format!("fybrk-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn refuses_other_addresses() {
        let e = send(OsStr::new("vsock:2:1234"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // Nobody listens there: the error is the kernel's, not a panic.
        assert!(send(OsStr::new("/nonexistent/notify"), "READY=1").is_err());
    }
}
