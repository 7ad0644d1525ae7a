//! [`TurnClient`] and the tokio task behind it: it feeds the server's datagrams, the owner's
//! requests and the clock into the [`Allocation`] state machine, sends what the machine says,
//! and carries out its events on the mux (routes, channels). No TURN logic lives here.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;
use tracing::{debug, error, info, warn};

use super::allocation::{Allocation, Event, Origin};
use super::{Timers, TurnConfig, TurnError};
use crate::mux::{MuxSocket, RelayRoute, TurnReplies};
use crate::stun::{resolve, ResolveError};

/// What the owner asks the driver for.
enum Command {
    Bind {
        peer: SocketAddr,
        reply: oneshot::Sender<Result<u16, TurnError>>,
    },
    Permit {
        peers: Vec<IpAddr>,
        reply: oneshot::Sender<Result<(), TurnError>>,
    },
    Unbind(SocketAddr),
    Close {
        reply: oneshot::Sender<Result<(), TurnError>>,
    },
}

/// What the client and its driver share.
struct Shared {
    mux: MuxSocket,
    server: SocketAddr,
    active: AtomicBool,
    refreshes: AtomicU64,
    stale_nonces: AtomicU64,
}

impl Shared {
    /// Stops relaying: forget the server and its routes in the mux.
    fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
        self.mux.remove_turn_server(self.server);
    }

    fn inactive(&self) -> TurnError {
        TurnError::Inactive {
            server: self.server,
        }
    }
}

/// A TURN allocation on one server, kept alive in the background. Dropping it stops relaying
/// through it (the server frees the allocation when it expires); [`TurnClient::close`] frees it
/// at once.
pub struct TurnClient {
    shared: Arc<Shared>,
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
    commands: mpsc::UnboundedSender<Command>,
    driver: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.shared.server)
            .field("relayed", &self.relayed)
            .finish_non_exhaustive()
    }
}

/// Aborts the driver if `allocate` is dropped before it returns.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl TurnClient {
    /// Allocates a relayed address on the server in `config`. Must be called inside a tokio
    /// runtime.
    pub async fn allocate(mux: &MuxSocket, config: &TurnConfig) -> Result<TurnClient, TurnError> {
        Self::allocate_with(mux, config, Timers::default()).await
    }

    pub(crate) async fn allocate_with(
        mux: &MuxSocket,
        config: &TurnConfig,
        timers: Timers,
    ) -> Result<TurnClient, TurnError> {
        let local = mux.local_addr().map_err(TurnError::Socket)?;
        let name = format!("{}:{}", config.host, config.port);
        let server = resolve(&name, &config.host, config.port, local)
            .await
            .map_err(|e| match e {
                ResolveError::Lookup(source) => TurnError::Resolve {
                    server: name.clone(),
                    source,
                },
                ResolveError::NoAddress => TurnError::NoUsableAddress {
                    server: name.clone(),
                    local,
                },
            })?;
        let shared = Arc::new(Shared {
            mux: mux.clone(),
            server,
            active: AtomicBool::new(true),
            refreshes: AtomicU64::new(0),
            stale_nonces: AtomicU64::new(0),
        });
        let binds = mux.add_turn_server(server);
        let replies = mux.expect_turn_replies(server);
        let machine = Allocation::new(
            server,
            config.username.clone(),
            config.password.clone(),
            timers,
            Instant::now(),
        );
        let (allocated_tx, allocated_rx) = oneshot::channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            shared: Arc::clone(&shared),
            machine,
            replies,
            binds: Some(binds),
            commands: commands_rx,
            allocated: Some(allocated_tx),
            next_id: 0,
            binding: HashMap::new(),
            permitting: HashMap::new(),
            closing: None,
        };
        let driver = tokio::spawn(driver.run());
        let mut cancelled = AbortOnDrop(Some(driver.abort_handle()));
        let granted = match allocated_rx.await {
            Ok(Ok(granted)) => granted,
            Ok(Err(e)) => {
                mux.remove_turn_server(server);
                return Err(e);
            }
            Err(_) => {
                mux.remove_turn_server(server);
                return Err(TurnError::Socket(io::Error::other(
                    "the TURN driver stopped unexpectedly",
                )));
            }
        };
        let (relayed, mapped, lifetime) = granted;
        info!(%server, %relayed, ?lifetime, "TURN allocation");
        cancelled.0 = None;
        Ok(TurnClient {
            shared,
            relayed,
            mapped,
            commands,
            driver,
        })
    }

    /// Our relayed address: peers send to it to reach us through the server.
    pub fn relayed_addr(&self) -> SocketAddr {
        self.relayed
    }

    /// The TURN server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.shared.server
    }

    /// Our address as the TURN server saw it (its XOR-MAPPED-ADDRESS), if it said.
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// Whether the allocation is alive (not expired, lost or closed).
    pub fn is_active(&self) -> bool {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Successful background refreshes of the allocation so far.
    pub fn refreshes(&self) -> u64 {
        self.shared.refreshes.load(Ordering::Relaxed)
    }

    /// Stale-nonce (438) answers handled so far.
    #[cfg(test)]
    pub(crate) fn stale_nonces(&self) -> u64 {
        self.shared.stale_nonces.load(Ordering::Relaxed)
    }

    /// Sends `command` to the driver and waits for its answer; a driver that is gone means the
    /// allocation is.
    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, TurnError>>) -> Command,
    ) -> Result<T, TurnError> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(command(reply)).is_err() {
            return Err(self.shared.inactive());
        }
        answer.await.unwrap_or_else(|_| Err(self.shared.inactive()))
    }

    /// Lets datagrams from these peer IPs through the relay to us (Data indications; TURN drops
    /// everything from peers without a permission). [`bind_peer`](Self::bind_peer) installs
    /// its own permission; this is for traffic before a channel exists. Kept refreshed.
    pub async fn create_permission(&self, peers: &[IpAddr]) -> Result<(), TurnError> {
        if !self.is_active() {
            return Err(self.shared.inactive());
        }
        let peers = peers.to_vec();
        self.call(|reply| Command::Permit { peers, reply }).await
    }

    /// Routes quinn's traffic to and from `peer` through the relay: binds a TURN channel to it
    /// (which also permits it) and registers the route in the mux. Returns the channel number.
    /// Binding an already bound peer only renews it.
    pub async fn bind_peer(&self, peer: SocketAddr) -> Result<u16, TurnError> {
        let number = self.call(|reply| Command::Bind { peer, reply }).await?;
        self.shared.mux.route_via_relay(
            peer,
            RelayRoute {
                server: self.shared.server,
                peer,
                channel: Some(number),
            },
        );
        debug!(%peer, channel = number, "relaying through TURN");
        Ok(number)
    }

    /// Sends quinn's traffic to `peer` directly again (e.g. after a direct path was found). The
    /// channel stays reserved for the peer, so binding it again is cheap.
    pub fn unbind_peer(&self, peer: SocketAddr) {
        // A driver that is gone refreshes nothing anyway.
        let _ = self.commands.send(Command::Unbind(peer));
        self.shared.mux.unroute(peer);
    }

    /// Frees the allocation on the server now and stops relaying through it.
    pub async fn close(self) -> Result<(), TurnError> {
        self.shared.deactivate();
        self.call(|reply| Command::Close { reply }).await
    }
}

impl Drop for TurnClient {
    fn drop(&mut self) {
        self.driver.abort();
        self.shared.deactivate();
    }
}

/// What the allocation granted: relayed address, mapped address, lifetime.
type Granted = (SocketAddr, Option<SocketAddr>, std::time::Duration);

/// The task that runs one [`Allocation`].
struct Driver {
    shared: Arc<Shared>,
    machine: Allocation,
    replies: TurnReplies,
    /// Peers the mux wants a channel to; `None` once the mux forgot the server.
    binds: Option<mpsc::Receiver<SocketAddr>>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Where the outcome of the allocation goes, until it is known.
    allocated: Option<oneshot::Sender<Result<Granted, TurnError>>>,
    next_id: u64,
    binding: HashMap<u64, oneshot::Sender<Result<u16, TurnError>>>,
    permitting: HashMap<u64, oneshot::Sender<Result<(), TurnError>>>,
    closing: Option<oneshot::Sender<Result<(), TurnError>>>,
}

/// Whether the driver goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl Driver {
    async fn run(mut self) {
        loop {
            let now = Instant::now();
            self.machine.handle_timeout(now);
            while let Some(transmit) = self.machine.poll_transmit(now) {
                if let Err(e) = self
                    .shared
                    .mux
                    .send_to(&transmit.data, self.shared.server)
                    .await
                {
                    self.machine
                        .handle_send_error(Instant::now(), transmit.tid, e);
                }
            }
            while let Some(event) = self.machine.poll_event() {
                if self.on_event(event) == Flow::Stop {
                    return;
                }
            }
            let s = &self.shared;
            s.refreshes
                .store(self.machine.refreshes(), Ordering::Relaxed);
            s.stale_nonces
                .store(self.machine.stale_nonces(), Ordering::Relaxed);
            let deadline = self.machine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // The mux's requests wait until the allocation is granted (a relayed address to
            // bind against); they queue in the channel meanwhile.
            let take_binds = self.allocated.is_none() && self.binds.is_some();
            tokio::select! {
                datagram = self.replies.recv() => match datagram {
                    Some(d) => self.machine.handle_datagram(Instant::now(), &d.data),
                    // The socket is gone.
                    None => return,
                },
                peer = recv_bind(&mut self.binds), if take_binds => match peer {
                    Some(peer) => self.machine.handle_bind(Instant::now(), peer, Origin::Mux),
                    None => self.binds = None,
                },
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    // The client is gone (it aborts us too).
                    None => return,
                },
                () = sleep => {}
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Bind { peer, reply } => {
                let id = self.new_id();
                self.binding.insert(id, reply);
                self.machine.handle_bind(now, peer, Origin::User(id));
            }
            Command::Permit { peers, reply } => {
                let id = self.new_id();
                self.permitting.insert(id, reply);
                self.machine.handle_create_permission(now, id, peers);
            }
            Command::Unbind(peer) => self.machine.handle_unbind(peer),
            Command::Close { reply } => {
                // Requests in flight are dropped: their callers hear that the allocation is
                // gone.
                self.binding.clear();
                self.permitting.clear();
                self.closing = Some(reply);
                self.machine.handle_close(now);
            }
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn on_event(&mut self, event: Event) -> Flow {
        let server = self.shared.server;
        match event {
            Event::Allocated {
                relayed,
                mapped,
                lifetime,
            } => {
                if let Some(tx) = self.allocated.take() {
                    // `allocate` gave up waiting: nobody holds the allocation.
                    if tx.send(Ok((relayed, mapped, lifetime))).is_err() {
                        return Flow::Stop;
                    }
                }
            }
            Event::AllocateFailed(e) => {
                if let Some(tx) = self.allocated.take() {
                    let _ = tx.send(Err(e));
                }
                return Flow::Stop;
            }
            Event::Lost(e) => {
                error!(%server, "TURN allocation lost, relaying through it stops: {e}");
                self.shared.deactivate();
            }
            Event::Bound {
                origin: Origin::Mux,
                peer,
                number,
            } => {
                debug!(%peer, channel = number, "TURN channel for a relayed peer");
                self.shared.mux.channel_bound(server, peer, number);
            }
            Event::BindFailed {
                origin: Origin::Mux,
                peer,
                error,
            } => {
                warn!(%server, %peer, "cannot bind a TURN channel: {error}");
                self.shared.mux.channel_failed(server, peer);
            }
            Event::Bound {
                origin: Origin::User(id),
                number,
                ..
            } => {
                if let Some(reply) = self.binding.remove(&id) {
                    let _ = reply.send(Ok(number));
                }
            }
            Event::BindFailed {
                origin: Origin::User(id),
                error,
                ..
            } => {
                if let Some(reply) = self.binding.remove(&id) {
                    let _ = reply.send(Err(error));
                }
            }
            Event::Permitted { id, result } => {
                if let Some(reply) = self.permitting.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            Event::Closed(result) => {
                if let Some(reply) = self.closing.take() {
                    let _ = reply.send(result);
                }
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}

/// The next peer the mux wants a channel to (never, without a receiver).
async fn recv_bind(binds: &mut Option<mpsc::Receiver<SocketAddr>>) -> Option<SocketAddr> {
    match binds {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
