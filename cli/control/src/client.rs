//! [`Client`]: a blocking typed client for the daemon's control socket. One connection per
//! request: write the request line, read the reply line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::request::{Call, Request};

/// Why a call got no typed reply.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket.
    #[error("no fybrk daemon is running for this state dir ({}: {cause}). Start one with `fybrk mount DIR`", socket.display())]
    NoDaemon {
        /// The socket.
        socket: PathBuf,
        /// Why connecting failed.
        cause: std::io::Error,
    },
    /// Setting the timeout or writing the request failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The reply did not come (within the timeout).
    #[error("the daemon did not answer")]
    NoAnswer(#[source] std::io::Error),
    /// The reply is not JSON, or not the request's reply type.
    #[error("the daemon sent a malformed reply")]
    Malformed(#[source] serde_json::Error),
    /// The daemon answered with an error (its message).
    #[error("{0}")]
    Daemon(String),
}

/// The daemon behind one control socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

/// Reads `{"error": ..}` out of any reply; other fields are ignored.
#[derive(Deserialize)]
struct MaybeError {
    error: Option<String>,
}

impl Client {
    /// A client for the daemon listening on `socket` (`STATE/control.sock`).
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` and waits up to `timeout` (`None`: for ever) for its reply.
    pub fn call<C: Call>(
        &self,
        req: C,
        timeout: Option<Duration>,
    ) -> Result<C::Reply, ControlError> {
        let line = self.exchange(&req.into(), timeout)?;
        parse_reply::<C>(&line)
    }

    /// Sends one request line and reads one reply line.
    fn exchange(&self, req: &Request, timeout: Option<Duration>) -> Result<String, ControlError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|cause| ControlError::NoDaemon {
                socket: self.socket.clone(),
                cause,
            })?;
        stream.set_read_timeout(timeout)?;
        let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
        line.push('\n');
        stream.write_all(line.as_bytes())?;
        let mut reply = String::new();
        BufReader::new(stream)
            .read_line(&mut reply)
            .map_err(ControlError::NoAnswer)?;
        Ok(reply)
    }
}

/// A reply line: the daemon's error, or `C`'s reply.
pub fn parse_reply<C: Call>(line: &str) -> Result<C::Reply, ControlError> {
    let maybe: MaybeError = serde_json::from_str(line).map_err(ControlError::Malformed)?;
    if let Some(error) = maybe.error {
        return Err(ControlError::Daemon(error));
    }
    serde_json::from_str(line).map_err(ControlError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairing::Pair;
    use crate::request::{Gc, Status};
    use crate::server::{self, Handler};
    use crate::{
        GcReply, Invite, PairWaitReply, PairWithReply, PeerRef, PeersReply, StatusReply,
        UnmountReply, VerifyReply,
    };
    use std::os::unix::net::UnixListener;

    /// Answers `gc` and `pair`; everything else fails.
    struct Fake;

    impl Handler for Fake {
        type Error = String;
        fn status(&self, _: Status) -> Result<StatusReply, String> {
            Err("no status here".into())
        }
        fn verify(&self, _: crate::Verify) -> Result<VerifyReply, String> {
            Err("no".into())
        }
        fn gc(&self, _: Gc) -> Result<GcReply, String> {
            Ok(GcReply {
                freed_chunks: 2,
                freed_bytes: 100,
                pinned: 0,
                ..GcReply::default()
            })
        }
        fn log(&self, _: crate::Log) -> Result<crate::LogReply, String> {
            Err("no log".into())
        }
        fn restore(&self, _: crate::Restore) -> Result<crate::RestoreReply, String> {
            Err("no restore".into())
        }
        fn ping(&self, _: crate::Ping) -> Result<crate::PingReply, String> {
            Err("not here".into())
        }
        fn pin(&self, _: crate::Pin) -> Result<crate::PinReply, String> {
            Err("not here".into())
        }
        fn unpin(&self, _: crate::Unpin) -> Result<crate::PinReply, String> {
            Err("not here".into())
        }
        fn free(&self, _: crate::Free) -> Result<crate::FreeReply, String> {
            Err("not here".into())
        }
        fn ls(&self, _: crate::Ls) -> Result<crate::LsReply, String> {
            Err("not here".into())
        }
        fn unmount(&self, _: crate::Unmount) -> Result<UnmountReply, String> {
            Err("no".into())
        }
        fn pair(&self, req: Pair) -> Result<Invite, String> {
            Ok(Invite {
                invite: 1,
                payload: "fybrk1:x".into(),
                qr: "FYBRK1:X".into(),
                expires_unix: req.expires_secs,
                addrs: vec![],
            })
        }
        fn pair_wait(&self, _: crate::PairWait) -> Result<PairWaitReply, String> {
            Err("no".into())
        }
        fn pair_with(&self, _: crate::PairWith) -> Result<PairWithReply, String> {
            Err("no".into())
        }
        fn pair_with_wait(&self, _: crate::PairWithWait) -> Result<PairWithReply, String> {
            Err("no".into())
        }
        fn approve(&self, _: crate::Approve) -> Result<PeerRef, String> {
            Err("no".into())
        }
        fn deny(&self, _: crate::Deny) -> Result<PeerRef, String> {
            Err("no".into())
        }
        fn pair_cancel(&self, _: crate::PairCancel) -> Result<crate::PairCancelReply, String> {
            Err("no".into())
        }
        fn members(&self, _: crate::Members) -> Result<crate::MembersReply, String> {
            Err("no".into())
        }
        fn remove(&self, _: crate::Remove) -> Result<PeerRef, String> {
            Err("no".into())
        }
        fn peers(&self, _: crate::Peers) -> Result<PeersReply, String> {
            Err("no".into())
        }
        fn unpair(&self, _: crate::Unpair) -> Result<PeerRef, String> {
            Err("no".into())
        }
    }

    /// A server answering `n` connections with [`Fake`] on a socket in a temp dir.
    fn serve(n: usize) -> (Client, std::thread::JoinHandle<()>, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "fybrk-control-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("control.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let stream = stream.unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                (&stream)
                    .write_all(server::answer(&line, &Fake).as_bytes())
                    .unwrap();
            }
        });
        (Client::new(&socket), server, dir)
    }

    #[test]
    fn typed_calls_over_a_socket() {
        let (client, server, dir) = serve(3);
        let timeout = Some(Duration::from_secs(10));
        let gc = client.call(Gc, timeout).unwrap();
        assert_eq!(gc.freed_chunks, 2);
        let inv = client.call(Pair::expiring(60), timeout).unwrap();
        assert_eq!(inv.expires_unix, 60);
        match client.call(Status, timeout) {
            Err(ControlError::Daemon(e)) => assert_eq!(e, "no status here"),
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn no_daemon_says_how_to_start_one() {
        let client = Client::new("/nonexistent/fybrk/control.sock");
        let e = client.call(Status, None).unwrap_err();
        assert!(matches!(e, ControlError::NoDaemon { .. }), "{e:?}");
        assert!(e.to_string().contains("fybrk mount DIR"), "{e}");
    }

    #[test]
    fn a_reply_of_the_wrong_type_is_malformed() {
        let e = parse_reply::<Gc>(r#"{"peers": []}"#).unwrap_err();
        assert!(matches!(e, ControlError::Malformed(_)), "{e:?}");
        let e = parse_reply::<Gc>("").unwrap_err();
        assert!(matches!(e, ControlError::Malformed(_)), "{e:?}");
        let e = parse_reply::<Gc>(r#"{"error": "disk on fire"}"#).unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
    }
}
