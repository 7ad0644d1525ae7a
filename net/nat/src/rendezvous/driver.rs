//! Thin tokio drivers: receive, hand to the state machine, send what it says.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, Instrument};

use super::client::{Client, ClientEvent};
use super::messages::MAX_DATAGRAM;
use super::puncher::PunchPath;
use super::server::{Server, ServerConfig};
use super::WallClock;
use crate::identity::DeviceId;

/// How often the drivers re-read the system clock, so a wall-clock step (NTP) reaches the
/// timestamps within a minute.
const WALL_CLOCK_REFRESH: Duration = Duration::from_secs(60);

/// Runs a rendezvous server with default limits on `socket` until an I/O error. For
/// `fybrk rendezvous --listen ADDR`.
pub async fn run_server(socket: std::net::UdpSocket) -> io::Result<()> {
    run_server_with(socket, ServerConfig::default(), std::future::pending()).await
}

/// Runs a rendezvous server on `socket` until `shutdown` completes (`Ok`) or an I/O error.
pub async fn run_server_with(
    socket: std::net::UdpSocket,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut server = Server::new(config, now, WallClock::system(now));
    let mut wall_read = now;
    // One byte more than the limit: a longer datagram arrives truncated to MAX_DATAGRAM + 1
    // bytes and is then rejected as too large instead of being read as a shorter message.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    info!(%local, "rendezvous server listening");
    tokio::pin!(shutdown);
    loop {
        let deadline = server
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + WALL_CLOCK_REFRESH);
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            received = socket.recv_from(&mut buf) => {
                let (len, from) = match received {
                    Ok(r) => r,
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => return Err(e),
                };
                let now = Instant::now();
                // On a dual-stack socket IPv4 clients arrive as mapped addresses: the server
                // (and the observed addresses it hands out) knows them as plain IPv4.
                let from = crate::mux::canonical(from);
                for (to, datagram) in server.handle_datagram(from, &buf[..len], now) {
                    let to = match to {
                        SocketAddr::V4(v4) if local.is_ipv6() => {
                            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
                        }
                        _ => to,
                    };
                    if let Err(e) = socket.send_to(&datagram, to).await {
                        debug!(%to, error = %e, "rendezvous send failed");
                    }
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                server.handle_timeout(now);
                if now.duration_since(wall_read) >= WALL_CLOCK_REFRESH {
                    server.set_wall_clock(WallClock::system(now));
                    wall_read = now;
                }
            }
        }
    }
}

/// Errors a UDP receive reports for an earlier send (an ICMP "port unreachable" surfaces as
/// `ConnectionRefused`/`ConnectionReset` on some systems): nothing is wrong with the socket.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Why [`ClientHandle::connect`] found no direct path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The server does not know the device.
    #[error("the rendezvous server does not know device {0}: it is offline or uses another rendezvous server")]
    PeerUnknown(String),
    /// The server did not answer.
    #[error("the rendezvous server did not answer: check the rendezvous address and this device's network")]
    ServerUnreachable,
    /// No candidate of the peer answered a probe.
    #[error("no direct path to device {peer} (hole punching failed, e.g. both sides behind symmetric NATs): use the relay")]
    PunchFailed {
        /// The device.
        peer: String,
        /// Its TURN relayed address, if it registered one.
        relay: Option<SocketAddr>,
    },
    /// The client driver stopped.
    #[error("the rendezvous client stopped")]
    Stopped,
}

/// Commands to the client driver.
#[derive(Debug)]
pub enum ClientMessage {
    /// Find a direct path to a device.
    Connect {
        /// The device.
        peer: DeviceId,
        /// Gets the outcome.
        reply: oneshot::Sender<Result<PunchPath, ConnectError>>,
    },
    /// This device's own addresses changed.
    SetLanCandidates(Vec<SocketAddr>),
    /// This device's TURN relayed address (or none any more).
    SetRelay(Option<SocketAddr>),
    /// The path to the server changed: register again now.
    RegisterNow,
}

/// Talks to a running client driver. Dropping every handle stops the driver.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    commands: mpsc::Sender<ClientMessage>,
}

impl ClientHandle {
    /// Asks the server for `peer` and waits for the hole punch: the path to hand to QUIC.
    pub async fn connect(&self, peer: DeviceId) -> Result<PunchPath, ConnectError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(ClientMessage::Connect { peer, reply })
            .await
            .map_err(|_| ConnectError::Stopped)?;
        answer.await.map_err(|_| ConnectError::Stopped)?
    }

    /// Announces this device's TURN relayed address.
    pub async fn set_relay(&self, relay: Option<SocketAddr>) -> Result<(), ConnectError> {
        self.commands
            .send(ClientMessage::SetRelay(relay))
            .await
            .map_err(|_| ConnectError::Stopped)
    }

    /// Registers again now (the path to the server changed, e.g. it goes through a relay).
    pub async fn register_now(&self) -> Result<(), ConnectError> {
        self.commands
            .send(ClientMessage::RegisterNow)
            .await
            .map_err(|_| ConnectError::Stopped)
    }

    /// Announces new own addresses.
    pub async fn set_lan_candidates(&self, lan: Vec<SocketAddr>) -> Result<(), ConnectError> {
        self.commands
            .send(ClientMessage::SetLanCandidates(lan))
            .await
            .map_err(|_| ConnectError::Stopped)
    }
}

/// Starts the client driver as a tokio task.
///
/// `send` puts a datagram on the shared socket; it must not block (a datagram that cannot go
/// out now is dropped like any lost UDP packet, and the protocol retries). A plain
/// non-blocking `std::net::UdpSocket::send_to` (on a clone of the socket) fits; tokio's
/// `try_send_to` does not quite, as it reports `WouldBlock` until its reactor has seen the
/// socket writable, which loses the first `Register` and delays registration by a retry. `incoming` carries
/// the datagrams of the shared socket whose first byte is in [`super::TYPE_RANGE`]. Events
/// (registrations, punches this device did not ask for, ...) come out of the returned receiver;
/// outcomes of [`ClientHandle::connect`] go to its caller too. The task ends when every
/// [`ClientHandle`] is dropped or `incoming` closes.
pub fn spawn_client<S>(
    client: Client,
    mut send: S,
    incoming: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
) -> (
    ClientHandle,
    mpsc::UnboundedReceiver<ClientEvent>,
    JoinHandle<()>,
)
where
    S: FnMut(SocketAddr, &[u8]) -> io::Result<()> + Send + 'static,
{
    // Without a way to set a TTL, the puncher's low-TTL probes go out as ordinary ones.
    spawn_client_with_ttl(client, move |to, data, _ttl| send(to, data), incoming)
}

/// [`spawn_client`] with a send function that takes an IP TTL (`Some` for the puncher's first
/// probes to public addresses, see [`super::Puncher::handle_timeout_ttl`]; `None`: the socket's
/// default), e.g. [`crate::mux::MuxSocket::try_send_to_with_ttl`].
pub fn spawn_client_with_ttl<S>(
    client: Client,
    send: S,
    incoming: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
) -> (
    ClientHandle,
    mpsc::UnboundedReceiver<ClientEvent>,
    JoinHandle<()>,
)
where
    S: FnMut(SocketAddr, &[u8], Option<u8>) -> io::Result<()> + Send + 'static,
{
    let (commands_tx, commands) = mpsc::channel(16);
    let (events, events_rx) = mpsc::unbounded_channel();
    let span = info_span!("rendezvous", device = %client.id().abbrev(), server = %client.server());
    let actor = ClientActor {
        client,
        send,
        incoming,
        commands,
        events,
        waiting: HashMap::new(),
    };
    let task = tokio::spawn(actor.run().instrument(span));
    (
        ClientHandle {
            commands: commands_tx,
        },
        events_rx,
        task,
    )
}

/// The client driver's task.
struct ClientActor<S> {
    client: Client,
    send: S,
    incoming: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    commands: mpsc::Receiver<ClientMessage>,
    events: mpsc::UnboundedSender<ClientEvent>,
    /// `connect` callers by nonce.
    waiting: HashMap<u64, oneshot::Sender<Result<PunchPath, ConnectError>>>,
}

impl<S> ClientActor<S>
where
    S: FnMut(SocketAddr, &[u8], Option<u8>) -> io::Result<()>,
{
    async fn run(mut self) {
        let mut wall_read = Instant::now();
        let mut out = self.client.handle_timeout(wall_read);
        loop {
            for (to, datagram) in out.drain(..) {
                if let Err(e) = (self.send)(to, &datagram, None) {
                    debug!(%to, error = %e, "rendezvous send failed");
                }
            }
            while let Some((to, datagram, ttl)) = self.client.poll_low_ttl() {
                if let Err(e) = (self.send)(to, &datagram, Some(ttl)) {
                    debug!(%to, ttl, error = %e, "low-TTL probe send failed");
                }
            }
            self.dispatch_events();
            let deadline = self
                .client
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + WALL_CLOCK_REFRESH);
            tokio::select! {
                datagram = self.incoming.recv() => {
                    let Some((from, bytes)) = datagram else { break };
                    out = self.client.handle_datagram(from, &bytes, Instant::now());
                }
                command = self.commands.recv() => match command {
                    None => break,
                    Some(ClientMessage::Connect { peer, reply }) => {
                        let (nonce, sends) = self.client.connect(peer, Instant::now());
                        self.waiting.insert(nonce, reply);
                        out = sends;
                    }
                    Some(ClientMessage::SetLanCandidates(lan)) => {
                        out = self.client.set_lan_candidates(lan, Instant::now());
                    }
                    Some(ClientMessage::SetRelay(relay)) => {
                        out = self.client.set_relay(relay, Instant::now());
                    }
                    Some(ClientMessage::RegisterNow) => {
                        out = self.client.register_now(Instant::now());
                    }
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if now.duration_since(wall_read) >= WALL_CLOCK_REFRESH {
                        self.client.set_wall_clock(WallClock::system(now));
                        wall_read = now;
                    }
                    out = self.client.handle_timeout(now);
                }
            }
        }
        debug!("rendezvous client stopped");
    }

    /// Answers `connect` callers and forwards every event.
    fn dispatch_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            let answer = match &event {
                ClientEvent::Punched { nonce, path, .. } => Some((*nonce, Ok(*path))),
                ClientEvent::PunchFailed {
                    nonce,
                    peer,
                    peer_relay,
                    ..
                } => Some((
                    *nonce,
                    Err(ConnectError::PunchFailed {
                        peer: peer.to_string(),
                        relay: *peer_relay,
                    }),
                )),
                ClientEvent::PeerUnknown { nonce, peer } => {
                    Some((*nonce, Err(ConnectError::PeerUnknown(peer.to_string()))))
                }
                ClientEvent::ConnectTimedOut { nonce, .. } => {
                    Some((*nonce, Err(ConnectError::ServerUnreachable)))
                }
                _ => None,
            };
            if let Some((nonce, result)) = answer {
                if let Some(reply) = self.waiting.remove(&nonce) {
                    // The caller may have given up; that is fine.
                    let _ = reply.send(result);
                }
            }
            // Nobody listening is fine too: events are informational for the daemon.
            let _ = self.events.send(event);
        }
    }
}
