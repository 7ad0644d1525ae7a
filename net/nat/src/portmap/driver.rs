//! The tokio driver of [`PortMapper`]: a UDP socket of its own towards the gateway's port 5351
//! for PCP and NAT-PMP, the SSDP search and the HTTP exchanges of UPnP; it only carries out
//! what the state machine says.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::lifecycle::{Action, Event, PortMapper, UPNP_WINDOW};
use super::{natpmp, pcp, upnp, Answer, Mapping, Protocol, LIFETIME};

/// How long the SSDP search listens for the gateway's answer (`MX: 1` plus a LAN round trip).
const SSDP_WAIT: Duration = Duration::from_millis(1500);

/// The most bytes read of an HTTP answer (descriptions are a few KiB; a gateway sending more is
/// cut off rather than buffered).
const HTTP_MAX: u64 = 64 * 1024;

/// How long a deletion waits for the gateway's answer before sending once more.
const DELETE_RESEND: Duration = Duration::from_millis(300);

/// What to map where.
#[derive(Debug, Clone)]
pub struct PortMapConfig {
    /// The LAN's gateway (see [`super::gateway::default_gateway`]).
    pub gateway: Ipv4Addr,
    /// The daemon's listen port: the internal port to map (also the external port wished for).
    pub internal_port: u16,
    /// The protocols to try, in order (normally [`Protocol::ALL`]).
    pub protocols: Vec<Protocol>,
}

/// A running port mapper (see [`spawn`]).
#[derive(Debug)]
pub struct PortMapHandle {
    mapping: watch::Receiver<Option<Mapping>>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl PortMapHandle {
    /// The mapping held at the moment, and its changes.
    pub fn mapping(&self) -> watch::Receiver<Option<Mapping>> {
        self.mapping.clone()
    }

    /// Stops and deletes the mapping, waiting at most `within` for the gateway.
    pub async fn stop(mut self, within: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(within, &mut self.done).await.is_err() {
            self.done.abort();
            warn!("port mapping: the gateway did not confirm the deletion in time");
        }
    }
}

/// Starts mapping `config.internal_port` on the gateway and keeps the mapping (renewing it,
/// trying again later when no protocol works). Must be called within a tokio runtime.
pub fn spawn(config: PortMapConfig) -> io::Result<PortMapHandle> {
    let sock = pcp_socket(config.gateway)?;
    let (mapping_tx, mapping) = watch::channel(None);
    let (stop, stop_rx) = oneshot::channel();
    let done = tokio::spawn(async move {
        let _ = run(config, sock, stop_rx, mapping_tx, false).await;
    });
    Ok(PortMapHandle {
        mapping,
        stop: Some(stop),
        done,
    })
}

/// One round, for `nat-check`: asks for a mapping, deletes it at once if one was granted, and
/// returns it (`None`: no protocol answered with a mapping).
pub async fn probe(config: PortMapConfig) -> io::Result<Option<Mapping>> {
    let sock = pcp_socket(config.gateway)?;
    let (mapping_tx, _mapping) = watch::channel(None);
    let (_stop, stop_rx) = oneshot::channel();
    Ok(run(config, sock, stop_rx, mapping_tx, true).await)
}

/// The socket for PCP and NAT-PMP, connected to the gateway (so only its datagrams come in, and
/// its local address is the one the gateway sees, which PCP names in the request).
fn pcp_socket(gateway: Ipv4Addr) -> io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect((gateway, natpmp::PORT))?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// What the driver keeps between requests.
struct Io {
    config: PortMapConfig,
    sock: UdpSocket,
    /// Our address towards the gateway.
    local: Ipv4Addr,
    /// PCP's mapping nonce, one per daemon run.
    nonce: [u8; 12],
    /// NAT-PMP's external address, once the gateway said it.
    natpmp_ip: Option<Ipv4Addr>,
    /// A NAT-PMP mapping answer that came before the address answer: (port, lifetime).
    natpmp_pending: Option<(u16, u32)>,
    /// The UPnP control URL, once found (kept for renewals and the deletion).
    upnp: Option<upnp::Control>,
    upnp_tx: mpsc::Sender<(Option<upnp::Control>, Answer)>,
}

async fn run(
    config: PortMapConfig,
    sock: UdpSocket,
    mut stop: oneshot::Receiver<()>,
    mapping_tx: watch::Sender<Option<Mapping>>,
    one_round: bool,
) -> Option<Mapping> {
    let local = match sock.local_addr() {
        Ok(SocketAddr::V4(a)) => *a.ip(),
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let (upnp_tx, mut upnp_rx) = mpsc::channel(4);
    let mut io = Io {
        config,
        sock,
        local,
        nonce: rand::random(),
        natpmp_ip: None,
        natpmp_pending: None,
        upnp: None,
        upnp_tx,
    };
    let mut mapper = PortMapper::new(&io.config.protocols, Instant::now());
    let mut found = None;
    let mut stopping = false;
    let mut buf = [0u8; 1100];
    loop {
        while let Some(action) = mapper.poll_action() {
            match action {
                Action::Request { protocol } => io.request(protocol, mapper.mapping()).await,
                Action::Delete { mapping } => io.delete(mapping).await,
            }
        }
        while let Some(event) = mapper.poll_event() {
            match event {
                Event::Mapped(m) => {
                    info!(protocol = %m.protocol, external = %m.external, lifetime = ?m.lifetime,
                          "port mapping granted by the gateway");
                    found = Some(m);
                }
                Event::Lost => warn!("port mapping lost; asking again"),
                Event::Unavailable => {
                    debug!(gateway = %io.config.gateway, "no port mapping: the gateway answers none of PCP, NAT-PMP, UPnP");
                    if one_round {
                        stopping = true;
                    }
                }
            }
            mapping_tx.send_replace(mapper.mapping());
        }
        if one_round && found.is_some() && !stopping {
            mapper.stop();
            stopping = true;
            continue;
        }
        if stopping {
            return found;
        }
        let deadline = mapper
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                mapper.handle_timeout(Instant::now());
            }
            r = io.sock.recv(&mut buf) => match r {
                Ok(n) => {
                    if let Some((p, answer)) = io.decode(&buf[..n], mapper.current()) {
                        mapper.handle_answer(p, answer, Instant::now());
                    }
                }
                // ICMP port unreachable comes back as an error on a connected socket: nothing
                // listens on 5351, so neither PCP nor NAT-PMP will answer.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    if let Some(p @ (Protocol::Pcp | Protocol::NatPmp)) = mapper.current() {
                        debug!(protocol = %p, "the gateway does not listen on port 5351");
                        mapper.handle_answer(p, Answer::Refused, Instant::now());
                    }
                }
                Err(e) => {
                    debug!("port mapping socket: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some((control, answer)) = upnp_rx.recv() => {
                if control.is_some() {
                    io.upnp = control;
                }
                mapper.handle_answer(Protocol::Upnp, answer, Instant::now());
            }
            _ = &mut stop, if !stopping => {
                mapper.stop();
                stopping = true;
                mapping_tx.send_replace(None);
            }
        }
    }
}

impl Io {
    async fn request(&mut self, protocol: Protocol, current: Option<Mapping>) {
        let external_port = current.map_or(self.config.internal_port, |m| m.external.port());
        let lifetime = u32::try_from(LIFETIME.as_secs()).unwrap_or(u32::MAX);
        match protocol {
            Protocol::Pcp => {
                let req = pcp::encode_map(&pcp::MapRequest {
                    lifetime_secs: lifetime,
                    client: self.local,
                    nonce: self.nonce,
                    internal_port: self.config.internal_port,
                    external_port,
                });
                self.send(&req).await;
            }
            Protocol::NatPmp => {
                // The address is asked each time (it may have changed since the last grant):
                // a mapping answer waits for it.
                self.natpmp_ip = None;
                self.send(&natpmp::encode_address_request()).await;
                let req =
                    natpmp::encode_map_request(self.config.internal_port, external_port, lifetime);
                self.send(&req).await;
            }
            Protocol::Upnp => {
                let renewing = current.is_some();
                let (gateway, internal, control, tx) = (
                    self.config.gateway,
                    self.config.internal_port,
                    self.upnp.clone(),
                    self.upnp_tx.clone(),
                );
                tokio::spawn(async move {
                    let work = upnp_map(gateway, internal, external_port, control);
                    let result = match tokio::time::timeout(UPNP_WINDOW, work).await {
                        Ok(Ok((control, answer))) => (Some(control), answer),
                        // No gateway answering UPnP: refused, so the round ends now rather than
                        // at the end of the UPnP window. A renewal that fails so is left
                        // unanswered instead: the state machine tries it again before the
                        // mapping expires.
                        Ok(Err(e)) if renewing => {
                            debug!("UPnP renewal: {e}");
                            return;
                        }
                        Ok(Err(e)) => {
                            debug!("UPnP: {e}");
                            (None, Answer::Refused)
                        }
                        Err(_) if renewing => return,
                        Err(_) => (None, Answer::Refused),
                    };
                    let _ = tx.send(result).await;
                });
            }
        }
    }

    async fn send(&self, datagram: &[u8]) {
        if let Err(e) = self.sock.send(datagram).await {
            debug!(gateway = %self.config.gateway, "port mapping request not sent: {e}");
        }
    }

    /// Deletes `m`, best effort: a datagram protocol's request goes out twice unless answered.
    async fn delete(&mut self, m: Mapping) {
        info!(protocol = %m.protocol, external = %m.external, "deleting the port mapping");
        let datagram: Vec<u8> = match m.protocol {
            Protocol::Pcp => pcp::encode_map(&pcp::MapRequest {
                lifetime_secs: 0,
                client: self.local,
                nonce: self.nonce,
                internal_port: self.config.internal_port,
                external_port: m.external.port(),
            })
            .to_vec(),
            Protocol::NatPmp => {
                natpmp::encode_map_request(self.config.internal_port, 0, 0).to_vec()
            }
            Protocol::Upnp => {
                if let Some(control) = &self.upnp {
                    let body = upnp::soap_body(
                        control.service,
                        "DeletePortMapping",
                        &upnp::delete_port_mapping_args(m.external.port()),
                    );
                    let req = upnp::soap_request(control, "DeletePortMapping", &body);
                    match tokio::time::timeout(UPNP_WINDOW, http(control.addr, &req)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => debug!("UPnP DeletePortMapping: {e}"),
                        Err(_) => debug!("UPnP DeletePortMapping: no answer"),
                    }
                }
                return;
            }
        };
        let mut buf = [0u8; 1100];
        for _ in 0..2 {
            self.send(&datagram).await;
            if let Ok(Ok(_)) = tokio::time::timeout(DELETE_RESEND, self.sock.recv(&mut buf)).await {
                return;
            }
        }
    }

    /// The answer in a datagram from the gateway, for the protocol being asked.
    fn decode(&mut self, datagram: &[u8], asking: Option<Protocol>) -> Option<(Protocol, Answer)> {
        match datagram.first()? {
            2 => {
                let a = pcp::decode_map(datagram).ok()?;
                if a.nonce != self.nonce || a.internal_port != self.config.internal_port {
                    return None;
                }
                let answer = match (a.result, a.external_ip) {
                    (0, Some(ip)) => Answer::Granted {
                        external: SocketAddrV4::new(ip, a.external_port),
                        lifetime: Duration::from_secs(a.lifetime_secs.into()),
                    },
                    _ => {
                        debug!(result = a.result, "PCP refused the mapping");
                        Answer::Refused
                    }
                };
                Some((Protocol::Pcp, answer))
            }
            0 => {
                let a = natpmp::decode(datagram).ok()?;
                if asking == Some(Protocol::Pcp) {
                    // RFC 6887 section 9: a NAT-PMP-only gateway answers PCP with its own
                    // "unsupported version": PCP is refused, NAT-PMP comes next.
                    return Some((Protocol::Pcp, Answer::Refused));
                }
                match a {
                    natpmp::Answer::Address { result: 0, ip } => {
                        self.natpmp_ip = Some(ip);
                        let (port, life) = self.natpmp_pending.take()?;
                        Some((Protocol::NatPmp, natpmp_granted(ip, port, life)))
                    }
                    natpmp::Answer::Map {
                        result: 0,
                        internal_port,
                        external_port,
                        lifetime_secs,
                    } if internal_port == self.config.internal_port => match self.natpmp_ip {
                        Some(ip) => Some((
                            Protocol::NatPmp,
                            natpmp_granted(ip, external_port, lifetime_secs),
                        )),
                        None => {
                            self.natpmp_pending = Some((external_port, lifetime_secs));
                            None
                        }
                    },
                    natpmp::Answer::Map { internal_port, .. }
                        if internal_port != self.config.internal_port =>
                    {
                        None
                    }
                    other => {
                        debug!(answer = ?other, "NAT-PMP refused the mapping");
                        Some((Protocol::NatPmp, Answer::Refused))
                    }
                }
            }
            _ => None,
        }
    }
}

fn natpmp_granted(ip: Ipv4Addr, port: u16, lifetime_secs: u32) -> Answer {
    Answer::Granted {
        external: SocketAddrV4::new(ip, port),
        lifetime: Duration::from_secs(lifetime_secs.into()),
    }
}

/// One UPnP mapping exchange: find the control URL (unless known), ask for the external
/// address, add the mapping.
async fn upnp_map(
    gateway: Ipv4Addr,
    internal_port: u16,
    external_port: u16,
    control: Option<upnp::Control>,
) -> io::Result<(upnp::Control, Answer)> {
    let control = match control {
        Some(c) => c,
        None => discover(gateway).await?,
    };
    let body = upnp::soap_body(control.service, "GetExternalIPAddress", &[]);
    let req = upnp::soap_request(&control, "GetExternalIPAddress", &body);
    let (raw, _) = http(control.addr, &req).await?;
    let ip = match upnp::parse_http_answer(&raw) {
        Ok((200, body)) => {
            upnp::soap_value(body, "NewExternalIPAddress").and_then(|v| v.parse::<Ipv4Addr>().ok())
        }
        _ => None,
    };
    let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) else {
        return Ok((control, Answer::Refused));
    };
    let mut lease = u32::try_from(LIFETIME.as_secs()).unwrap_or(u32::MAX);
    let mut external_port = external_port;
    // Our address as the gateway sees it: the local end of a connection to it.
    let client = local_ipv4(control.addr).await?;
    // At most three calls: the first, then one for each answer below that can be fixed.
    for _ in 0..3 {
        let body = upnp::soap_body(
            control.service,
            "AddPortMapping",
            &upnp::add_port_mapping_args(external_port, client, internal_port, lease),
        );
        let req = upnp::soap_request(&control, "AddPortMapping", &body);
        let (raw, _) = http(control.addr, &req).await?;
        match upnp::parse_http_answer(&raw) {
            Ok((200, _)) => {
                let granted = Answer::Granted {
                    external: SocketAddrV4::new(ip, external_port),
                    // A permanent mapping (lease 0) is renewed and deleted like the others.
                    lifetime: LIFETIME,
                };
                return Ok((control, granted));
            }
            Ok((_, body)) => match upnp::soap_error(body) {
                // OnlyPermanentLeasesSupported (IGD v1 devices).
                Some(725) if lease != 0 => lease = 0,
                // ConflictInMappingEntry: another device holds the port; any other will do.
                Some(718) => external_port = rand::thread_rng().gen_range(1024..=65535),
                code => {
                    debug!(?code, "UPnP AddPortMapping refused");
                    break;
                }
            },
            Err(_) => break,
        }
    }
    Ok((control, Answer::Refused))
}

/// The SSDP search and the description: the gateway's control URL.
async fn discover(gateway: Ipv4Addr) -> io::Result<upnp::Control> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    let search = upnp::m_search();
    // The multicast group as the protocol says, and the gateway itself: some gateways answer
    // only one of them.
    let _ = sock.send_to(&search, SocketAddr::V4(upnp::SSDP)).await;
    let _ = sock.send_to(&search, (gateway, upnp::SSDP.port())).await;
    let mut buf = [0u8; 2048];
    let until = tokio::time::Instant::now() + SSDP_WAIT;
    let location = loop {
        let (n, from) = tokio::time::timeout_at(until, sock.recv_from(&mut buf))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "no SSDP answer from the gateway")
            })??;
        // Only the gateway's answer: another device on the LAN cannot map ports on it.
        if from.ip() != IpAddr::V4(gateway) {
            continue;
        }
        if let Ok(l) = upnp::parse_search_answer(&buf[..n]) {
            break l;
        }
    };
    let (addr, path) = location;
    let (raw, _) = http(addr, &upnp::get_request(addr, &path)).await?;
    let (_, body) =
        upnp::parse_http_answer(&raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    upnp::parse_description(body, addr).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One HTTP exchange (the server closes the connection: `CONNECTION: close`): the raw answer.
async fn http(addr: SocketAddr, request: &[u8]) -> io::Result<(Vec<u8>, SocketAddr)> {
    let mut s = TcpStream::connect(addr).await?;
    let local = s.local_addr()?;
    s.write_all(request).await?;
    let mut raw = Vec::new();
    (&mut s).take(HTTP_MAX).read_to_end(&mut raw).await?;
    Ok((raw, local))
}

/// Our IPv4 address on the way to `addr`.
async fn local_ipv4(addr: SocketAddr) -> io::Result<Ipv4Addr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    s.connect(addr).await?;
    match s.local_addr()? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "IPv6")),
    }
}
