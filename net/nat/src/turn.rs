//! TURN client (RFC 8656) over the [`MuxSocket`]: a relayed address on a TURN server (coturn)
//! for when no direct path works, e.g. both devices behind symmetric NATs.
//!
//! [`TurnClient::allocate`] authenticates with long-term credentials (RFC 8489 §9.2: the first
//! request is challenged with 401 and a realm and nonce, the retry carries MESSAGE-INTEGRITY; a
//! 438 "stale nonce" brings a fresh nonce and the request is sent again) and gets a relayed
//! address. [`TurnClient::bind_peer`] binds a channel to a peer and registers the route in the
//! [`MuxSocket`]: quinn's traffic to that peer then travels as ChannelData through the server,
//! and the peer sees the relayed address as ours. A background task refreshes the allocation
//! before it expires and re-binds channels and permissions before they lapse.
//!
//! One allocation per server and socket (TURN keys allocations by the client's 5-tuple).
//! Configuration comes as `turn:HOST:PORT?user=U&pass=P` ([`TurnConfig`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use stun_rs::attributes::stun::{MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress};
use stun_rs::attributes::turn::{
    ChannelNumber, LifeTime, RequestedTrasport, XorPeerAddress, XorRelayedAddress,
};
use stun_rs::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMMISSION, REFRESH};
use stun_rs::{
    Algorithm, AlgorithmId, DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder,
    MessageMethod, StunAttribute, StunMessage, StunMessageBuilder, TransactionId,
};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::mux::{MuxSocket, RelayRoute, CHANNEL_NUMBERS};
use crate::stun::{
    decode_reply, encode, error_code, new_tid, parse_host_port, resolve, transact, ResolveError,
    TransactError,
};

/// The TURN port when a server is given without one (RFC 8656 §18).
pub const DEFAULT_TURN_PORT: u16 = 3478;

/// Allocation lifetime we ask for on refresh: RFC 8656's default of 10 minutes. Longer would
/// leave a dead client's relay port held for longer; shorter only costs more refreshes.
const DESIRED_LIFETIME: Duration = Duration::from_secs(600);

/// Permissions expire after 300 s and channel bindings after 600 s (RFC 8656 §9, §12). A
/// ChannelBind refreshes both, so re-binding every 240 s keeps everything with a minute to spare
/// for retries.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);

/// Re-authentications allowed per request: a 438 (stale nonce) or a 401 after we sent
/// credentials carries a fresh nonce and is worth one more try; a server that keeps saying so is
/// refusing us.
const MAX_STALE_NONCE: u32 = 3;

/// After deleting a stale allocation of ours, how often and how many times to ask for a new one
/// while the server still reports the old one (coturn frees it within about a second).
const STALE_ALLOCATION_POLL: Duration = Duration::from_millis(500);
const STALE_ALLOCATION_TRIES: u32 = 6;

/// When to refresh an allocation granted for `lifetime`: a minute before it expires (room for a
/// 3 s transaction and several retries), or at half-time for short lifetimes.
pub(crate) fn refresh_after(lifetime: Duration) -> Duration {
    let margin = Duration::from_secs(60);
    if lifetime > 2 * margin {
        lifetime - margin
    } else {
        lifetime / 2
    }
}

/// A TURN server with long-term credentials, from `turn:HOST:PORT?user=U&pass=P`.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// Host name or IP address.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// TURN user name.
    pub username: String,
    /// TURN password.
    pub password: String,
}

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl fmt::Display for TurnConfig {
    /// The URL without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("turn:")?;
        crate::stun::fmt_host_port(&self.host, self.port, f)?;
        write!(f, "?user={}", self.username)
    }
}

/// A `turn:` URL that could not be understood. Never shows the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TURN server {value:?}: {why} (expected turn:HOST:PORT?user=USER&pass=PASSWORD)")]
pub struct TurnConfigError {
    /// The value as given, password masked.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl FromStr for TurnConfig {
    type Err = TurnConfigError;

    fn from_str(s: &str) -> Result<Self, TurnConfigError> {
        let fail = |why: String| TurnConfigError {
            value: mask_password(s),
            why,
        };
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("turns:") {
            return Err(fail(
                "turns: (TURN over TLS) is not supported; use turn: (UDP)".into(),
            ));
        }
        if !lower.starts_with("turn:") {
            return Err(fail("it must start with turn:".into()));
        }
        let rest = &s["turn:".len()..];
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, port) = parse_host_port(authority, DEFAULT_TURN_PORT).map_err(fail)?;
        let (mut username, mut password) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).map_err(&fail)?;
            match key {
                "user" | "username" => username = Some(value),
                "pass" | "password" | "credential" => password = Some(value),
                "transport" if value.eq_ignore_ascii_case("udp") => {}
                "transport" => {
                    return Err(fail(format!(
                        "transport={value} is not supported; fybrk talks to TURN over UDP"
                    )))
                }
                other => {
                    return Err(fail(format!(
                        "unknown parameter {other:?}; known: user, pass, transport=udp"
                    )))
                }
            }
        }
        let username = username
            .filter(|u| !u.is_empty())
            .ok_or_else(|| fail("user= is missing (TURN needs long-term credentials)".into()))?;
        let password = password
            .filter(|p| !p.is_empty())
            .ok_or_else(|| fail("pass= is missing (TURN needs long-term credentials)".into()))?;
        Ok(TurnConfig {
            host,
            port,
            username,
            password,
        })
    }
}

/// `s` with the value of `pass=` (or `password=`, `credential=`) replaced by `***`.
fn mask_password(s: &str) -> String {
    let Some((before, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if matches!(k, "pass" | "password" | "credential") => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{before}?{}", masked.join("&"))
}

/// Decodes `%XX` escapes (so a password may contain `&`, `=` or `?`).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?} (use %XX with two hex digits)"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// Why a TURN operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The server name did not resolve.
    #[error("cannot resolve TURN server {server}: {source} (check the name and DNS)")]
    Resolve {
        /// The server as configured.
        server: String,
        /// The resolver's reason.
        source: io::Error,
    },
    /// The server has no address of our socket's IP family.
    #[error("TURN server {server} has no address reachable from the socket on {local} (IPv4/IPv6 mismatch)")]
    NoUsableAddress {
        /// The server as configured.
        server: String,
        /// Our socket's address.
        local: SocketAddr,
    },
    /// Our socket is unusable.
    #[error("the UDP socket is unusable: {0}")]
    Socket(#[source] io::Error),
    /// A request could not be sent.
    #[error("cannot send to TURN server {server}: {source} (is the network up?)")]
    Send {
        /// The server's address.
        server: SocketAddr,
        /// The OS's reason.
        source: io::Error,
    },
    /// No answer in time.
    #[error(
        "no answer from TURN server {server} within {}s: UDP may be blocked on this network, or \
         the server is down", after.as_secs()
    )]
    Timeout {
        /// The server's address.
        server: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// The credentials were refused.
    #[error(
        "TURN server refused the credentials for user {user:?} at {server} ({code} {reason}): \
         check user= and pass= in the turn: setting"
    )]
    Unauthorized {
        /// The server's address.
        server: SocketAddr,
        /// The user name we tried.
        user: String,
        /// STUN error code (401 or 441).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// The server refused a request for another reason.
    #[error("TURN server {server} refused {request}: {code} {reason}{}", hint(*code))]
    Rejected {
        /// The server's address.
        server: SocketAddr,
        /// What we asked for.
        request: &'static str,
        /// STUN error code.
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// The answer was not a valid TURN response.
    #[error("malformed reply from TURN server {server}: {reason}")]
    Malformed {
        /// The server's address.
        server: SocketAddr,
        /// What is wrong with it.
        reason: String,
    },
    /// The user name, realm or password cannot be used in STUN.
    #[error("the TURN credentials cannot be used: {0}")]
    Credentials(String),
    /// Every channel number is taken.
    #[error("all 4096 TURN channels on {server} are in use")]
    ChannelsExhausted {
        /// The server's address.
        server: SocketAddr,
    },
    /// The peer's IP family differs from the relayed address's.
    #[error("cannot relay to {peer}: the relayed address {relayed} is of the other IP family")]
    FamilyMismatch {
        /// The peer asked for.
        peer: SocketAddr,
        /// Our relayed address.
        relayed: SocketAddr,
    },
    /// The allocation expired or was closed.
    #[error("the TURN allocation on {server} is gone (expired or closed); allocate a new one")]
    Inactive {
        /// The server's address.
        server: SocketAddr,
    },
}

/// What to try for a TURN error code (RFC 8656 §19, RFC 8489 §14.8).
fn hint(code: u16) -> &'static str {
    match code {
        403 => " (the server's policy forbids it, e.g. that peer address is not allowed)",
        437 => {
            " (the server holds another allocation for this socket; it expires within 10 minutes)"
        }
        441 => " (wrong credentials for this allocation)",
        442 => " (the server does not relay UDP)",
        486 => " (this user has reached the server's allocation quota)",
        508 => " (the server is out of relay ports; try later or another server)",
        _ => "",
    }
}

impl TurnError {
    /// Whether retrying the same request cannot help: the allocation is gone or refused.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            TurnError::Unauthorized { .. }
                | TurnError::Inactive { .. }
                | TurnError::Rejected { code: 437, .. }
        )
    }
}

/// Long-term credential state from the server's last challenge.
#[derive(Clone)]
struct Auth {
    realm: String,
    nonce: String,
    key: HMACKey,
}

/// Request/response with one TURN server, authenticated once challenged.
struct Session {
    mux: MuxSocket,
    server: SocketAddr,
    username: String,
    password: String,
    auth: Mutex<Option<Auth>>,
    /// 438 answers handled, for tests and diagnostics.
    stale_nonces: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    fn malformed(&self, reason: impl Into<String>) -> TurnError {
        TurnError::Malformed {
            server: self.server,
            reason: reason.into(),
        }
    }

    /// Sends a `method` request with `attrs` (built afresh for every try), handling the
    /// long-term credential dance, and returns the success response.
    async fn request(
        &self,
        method: MessageMethod,
        what: &'static str,
        attrs: &(dyn Fn() -> Vec<StunAttribute> + Send + Sync),
    ) -> Result<StunMessage, TurnError> {
        let mut stale = 0;
        loop {
            let auth = lock(&self.auth).clone();
            let tid = new_tid();
            let request = self.build(method, tid, attrs(), auth.as_ref())?;
            let request = encode(&request)
                .map_err(|e| self.malformed(format!("cannot encode our own request: {e}")))?;
            let reply = transact(&self.mux, self.server, tid, &request)
                .await
                .map_err(|e| self.transact_error(e))?;
            let decoder = match &auth {
                Some(a) => MessageDecoderBuilder::default()
                    .with_context(
                        DecoderContextBuilder::default()
                            .with_key(a.key.clone())
                            .with_validation()
                            .build(),
                    )
                    .build(),
                None => MessageDecoderBuilder::default().build(),
            };
            let msg = decode_reply(tid, &reply.data, &decoder).map_err(|e| self.malformed(e))?;
            if msg.method() != method {
                return Err(self.malformed(format!(
                    "answer to method {:#06x}, not {what}",
                    msg.method().as_u16()
                )));
            }
            match msg.class() {
                MessageClass::SuccessResponse => {
                    // With credentials sent, RFC 8489 §9.2.4 has the server sign its answer;
                    // an unsigned "success" could be forged by anyone on the path.
                    if auth.is_some() && msg.get::<MessageIntegrity>().is_none() {
                        return Err(self.malformed("a success response without MESSAGE-INTEGRITY"));
                    }
                    return Ok(msg);
                }
                MessageClass::ErrorResponse => {}
                other => return Err(self.malformed(format!("a {other:?} instead of a response"))),
            }
            let (code, reason) =
                error_code(&msg).ok_or_else(|| self.malformed("an error without ERROR-CODE"))?;
            match code {
                // First contact: the challenge. Or a stale nonce (438), or a 401 after we sent
                // credentials, which some servers use for a nonce they rotated: learn the new
                // realm/nonce and try again, a bounded number of times.
                401 if auth.is_none() => self.learn_challenge(&msg)?,
                401 if stale == 0 => {
                    stale += 1;
                    self.learn_challenge(&msg)?;
                }
                438 if stale < MAX_STALE_NONCE => {
                    stale += 1;
                    self.stale_nonces.fetch_add(1, Ordering::Relaxed);
                    debug!(server = %self.server, "stale nonce; retrying with the new one");
                    self.learn_challenge(&msg)?;
                }
                401 | 441 => {
                    return Err(TurnError::Unauthorized {
                        server: self.server,
                        user: self.username.clone(),
                        code,
                        reason,
                    })
                }
                _ => {
                    return Err(TurnError::Rejected {
                        server: self.server,
                        request: what,
                        code,
                        reason,
                    })
                }
            }
        }
    }

    /// Takes the realm and nonce from a 401/438 and derives the key.
    fn learn_challenge(&self, msg: &StunMessage) -> Result<(), TurnError> {
        let mut auth = lock(&self.auth);
        let realm = match msg.get::<Realm>() {
            Some(attr) => attr
                .as_realm()
                .map_err(|e| self.malformed(e.to_string()))?
                .as_str()
                .to_string(),
            None => match auth.as_ref() {
                Some(a) => a.realm.clone(),
                None => return Err(self.malformed("a 401 challenge without REALM")),
            },
        };
        let nonce = msg
            .get::<Nonce>()
            .ok_or_else(|| self.malformed("a challenge without NONCE"))?
            .as_nonce()
            .map_err(|e| self.malformed(e.to_string()))?
            .as_str()
            .to_string();
        let key = match auth.as_ref() {
            Some(a) if a.realm == realm => a.key.clone(),
            _ => HMACKey::new_long_term(
                &self.username,
                &realm,
                &self.password,
                Algorithm::from(AlgorithmId::MD5),
            )
            .map_err(|e| TurnError::Credentials(e.to_string()))?,
        };
        *auth = Some(Auth { realm, nonce, key });
        Ok(())
    }

    fn build(
        &self,
        method: MessageMethod,
        tid: [u8; 12],
        attrs: Vec<StunAttribute>,
        auth: Option<&Auth>,
    ) -> Result<StunMessage, TurnError> {
        let mut msg = StunMessageBuilder::new(method, MessageClass::Request)
            .with_transaction_id(TransactionId::from(tid));
        for attr in attrs {
            msg = msg.with_attribute(attr);
        }
        if let Some(auth) = auth {
            let cred = |e: stun_rs::StunError| TurnError::Credentials(e.to_string());
            msg = msg
                .with_attribute(UserName::new(&self.username).map_err(cred)?)
                .with_attribute(Realm::new(&auth.realm).map_err(|e| self.malformed(e.to_string()))?)
                .with_attribute(Nonce::new(&auth.nonce).map_err(|e| self.malformed(e.to_string()))?)
                .with_attribute(MessageIntegrity::new(auth.key.clone()));
        }
        Ok(msg.build())
    }

    fn transact_error(&self, e: TransactError) -> TurnError {
        let server = self.server;
        match e {
            TransactError::Timeout(after) => TurnError::Timeout { server, after },
            TransactError::Send(source) => TurnError::Send { server, source },
            TransactError::Closed => TurnError::Socket(io::Error::new(
                io::ErrorKind::NotConnected,
                "the socket was closed",
            )),
        }
    }

    /// Asks for `lifetime` more; returns what the server granted. Zero deletes the allocation.
    async fn refresh(&self, lifetime: Duration) -> Result<Duration, TurnError> {
        let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        let reply = self
            .request(REFRESH, "the allocation refresh", &move || {
                vec![StunAttribute::from(LifeTime::new(secs))]
            })
            .await?;
        Ok(granted_lifetime(&reply).unwrap_or(lifetime))
    }
}

fn granted_lifetime(msg: &StunMessage) -> Option<Duration> {
    let secs = msg.get::<LifeTime>()?.as_life_time().ok()?.as_u32();
    Some(Duration::from_secs(u64::from(secs)))
}

/// Timers of the background refresh; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timers {
    /// Refresh the allocation this often instead of [`refresh_after`] its lifetime.
    pub(crate) allocation: Option<Duration>,
    /// Re-bind channels and permissions this often.
    pub(crate) permissions: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            allocation: None,
            permissions: PERMISSION_REFRESH,
        }
    }
}

/// A channel bound to a peer.
#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    /// Whether the mux routes the peer's traffic through it (and the refresh keeps it).
    routed: bool,
}

struct State {
    channels: HashMap<SocketAddr, Channel>,
    next_channel: u16,
    permissions: HashSet<IpAddr>,
    expires: Instant,
}

struct Inner {
    session: Session,
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
    state: Mutex<State>,
    /// Serialises channel binds, so two binds for one peer do not take two channels.
    binding: tokio::sync::Mutex<()>,
    active: AtomicBool,
    refreshes: AtomicU64,
}

/// A TURN allocation on one server, kept alive in the background. Dropping it stops relaying
/// through it (the server frees the allocation when it expires); [`TurnClient::close`] frees it
/// at once.
pub struct TurnClient {
    inner: Arc<Inner>,
    maintainer: tokio::task::JoinHandle<()>,
    /// Binds the channels the mux asks for (see [`bind_requested`]).
    binder: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.inner.session.server)
            .field("relayed", &self.inner.relayed)
            .finish_non_exhaustive()
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
        let session = Session {
            mux: mux.clone(),
            server,
            username: config.username.clone(),
            password: config.password.clone(),
            auth: Mutex::new(None),
            stale_nonces: AtomicU64::new(0),
        };
        let binds = mux.add_turn_server(server);
        let granted = match allocate_on(&session).await {
            Ok(granted) => granted,
            Err(e) => {
                mux.remove_turn_server(server);
                return Err(e);
            }
        };
        info!(%server, relayed = %granted.relayed, lifetime = ?granted.lifetime, "TURN allocation");
        let inner = Arc::new(Inner {
            session,
            relayed: granted.relayed,
            mapped: granted.mapped,
            state: Mutex::new(State {
                channels: HashMap::new(),
                next_channel: *CHANNEL_NUMBERS.start(),
                permissions: HashSet::new(),
                expires: Instant::now() + granted.lifetime,
            }),
            binding: tokio::sync::Mutex::new(()),
            active: AtomicBool::new(true),
            refreshes: AtomicU64::new(0),
        });
        let maintainer = tokio::spawn(maintain(Arc::clone(&inner), timers, granted.lifetime));
        let binder = tokio::spawn(bind_requested(Arc::clone(&inner), binds));
        Ok(TurnClient {
            inner,
            maintainer,
            binder,
        })
    }

    /// Our relayed address: peers send to it to reach us through the server.
    pub fn relayed_addr(&self) -> SocketAddr {
        self.inner.relayed
    }

    /// The TURN server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.inner.session.server
    }

    /// Our address as the TURN server saw it (its XOR-MAPPED-ADDRESS), if it said.
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        self.inner.mapped
    }

    /// Whether the allocation is alive (not expired, lost or closed).
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Successful background refreshes of the allocation so far.
    pub fn refreshes(&self) -> u64 {
        self.inner.refreshes.load(Ordering::Relaxed)
    }

    /// Stale-nonce (438) answers handled so far.
    #[cfg(test)]
    pub(crate) fn stale_nonces(&self) -> u64 {
        self.inner.session.stale_nonces.load(Ordering::Relaxed)
    }

    /// Lets datagrams from these peer IPs through the relay to us (Data indications; TURN drops
    /// everything from peers without a permission). [`bind_peer`](Self::bind_peer) installs
    /// its own permission; this is for traffic before a channel exists. Kept refreshed.
    pub async fn create_permission(&self, peers: &[IpAddr]) -> Result<(), TurnError> {
        self.inner.ensure_active()?;
        self.inner.create_permission(peers).await?;
        lock(&self.inner.state).permissions.extend(peers);
        Ok(())
    }

    /// Routes quinn's traffic to and from `peer` through the relay: binds a TURN channel to it
    /// (which also permits it) and registers the route in the [`MuxSocket`]. Returns the channel
    /// number. Binding an already bound peer only renews it.
    pub async fn bind_peer(&self, peer: SocketAddr) -> Result<u16, TurnError> {
        let number = self.inner.bind_channel(peer).await?;
        self.inner.session.mux.route_via_relay(
            peer,
            RelayRoute {
                server: self.inner.session.server,
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
        if let Some(c) = lock(&self.inner.state).channels.get_mut(&peer) {
            c.routed = false;
        }
        self.inner.session.mux.unroute(peer);
    }

    /// Frees the allocation on the server now and stops relaying through it.
    pub async fn close(self) -> Result<(), TurnError> {
        self.maintainer.abort();
        self.binder.abort();
        self.inner.deactivate();
        self.inner.session.refresh(Duration::ZERO).await.map(|_| ())
    }
}

impl Drop for TurnClient {
    fn drop(&mut self) {
        self.maintainer.abort();
        self.binder.abort();
        self.inner.deactivate();
    }
}

struct Granted {
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
    lifetime: Duration,
}

/// The Allocate transaction, clearing a stale allocation of ours if the server holds one.
async fn allocate_on(session: &Session) -> Result<Granted, TurnError> {
    let attrs = || {
        vec![StunAttribute::from(RequestedTrasport::new(
            stun_rs::protocols::UDP,
        ))]
    };
    let reply = match session.request(ALLOCATE, "the allocation", &attrs).await {
        // A previous run on this port still holds an allocation (RFC 8656 §7.2). It is ours
        // (same 5-tuple, and the server checks the user): delete it and allocate afresh.
        Err(TurnError::Rejected { code: 437, .. }) => {
            warn!(server = %session.server, "replacing a stale TURN allocation for this socket");
            session.refresh(Duration::ZERO).await?;
            let mut tries = 1;
            loop {
                // coturn frees a deleted allocation on its next one-second timer tick and says
                // 437 until then.
                tokio::time::sleep(STALE_ALLOCATION_POLL).await;
                match session.request(ALLOCATE, "the allocation", &attrs).await {
                    Err(TurnError::Rejected { code: 437, .. })
                        if tries < STALE_ALLOCATION_TRIES =>
                    {
                        tries += 1;
                    }
                    other => break other?,
                }
            }
        }
        other => other?,
    };
    let relayed = reply
        .get::<XorRelayedAddress>()
        .ok_or_else(|| session.malformed("an allocation without XOR-RELAYED-ADDRESS"))?
        .as_xor_relayed_address()
        .map_err(|e| session.malformed(e.to_string()))?
        .socket_address()
        .to_owned();
    let mapped = reply
        .get::<XorMappedAddress>()
        .and_then(|a| a.as_xor_mapped_address().ok())
        .map(|a| *a.socket_address());
    let lifetime = granted_lifetime(&reply).unwrap_or(DESIRED_LIFETIME);
    Ok(Granted {
        relayed,
        mapped,
        lifetime,
    })
}

impl Inner {
    fn ensure_active(&self) -> Result<(), TurnError> {
        if self.active.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(TurnError::Inactive {
                server: self.session.server,
            })
        }
    }

    /// Stops relaying: forget the server and its routes in the mux.
    fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
        self.session.mux.remove_turn_server(self.session.server);
    }

    /// Binds a channel to `peer` (which also permits it), or renews the one it has, and keeps
    /// it refreshed. Returns the channel number.
    async fn bind_channel(&self, peer: SocketAddr) -> Result<u16, TurnError> {
        self.ensure_active()?;
        if peer.is_ipv4() != self.relayed.is_ipv4() {
            return Err(TurnError::FamilyMismatch {
                peer,
                relayed: self.relayed,
            });
        }
        let _one_at_a_time = self.binding.lock().await;
        let number = {
            let mut state = lock(&self.state);
            match state.channels.get(&peer) {
                Some(c) => c.number,
                None => {
                    let number = state.next_channel;
                    if !CHANNEL_NUMBERS.contains(&number) {
                        return Err(TurnError::ChannelsExhausted {
                            server: self.session.server,
                        });
                    }
                    state.next_channel += 1;
                    number
                }
            }
        };
        self.channel_bind(peer, number).await?;
        lock(&self.state).channels.insert(
            peer,
            Channel {
                number,
                routed: true,
            },
        );
        Ok(number)
    }

    async fn channel_bind(&self, peer: SocketAddr, number: u16) -> Result<(), TurnError> {
        self.session
            .request(CHANNEL_BIND, "the channel binding", &move || {
                vec![
                    StunAttribute::from(ChannelNumber::new(number)),
                    StunAttribute::from(XorPeerAddress::from(peer)),
                ]
            })
            .await
            .map(|_| ())
    }

    async fn create_permission(&self, peers: &[IpAddr]) -> Result<(), TurnError> {
        if peers.is_empty() {
            return Ok(());
        }
        let peers = peers.to_vec();
        self.session
            .request(CREATE_PERMMISSION, "the permission", &move || {
                // The port of XOR-PEER-ADDRESS is ignored for permissions (RFC 8656 §9).
                peers
                    .iter()
                    .map(|ip| StunAttribute::from(XorPeerAddress::from(SocketAddr::new(*ip, 0))))
                    .collect()
            })
            .await
            .map(|_| ())
    }

    /// Re-binds every routed channel and renews explicit permissions.
    async fn refresh_bindings(&self) -> Result<(), TurnError> {
        let (channels, permissions): (Vec<_>, Vec<_>) = {
            let state = lock(&self.state);
            (
                state
                    .channels
                    .iter()
                    .filter(|(_, c)| c.routed)
                    .map(|(peer, c)| (*peer, c.number))
                    .collect(),
                state.permissions.iter().copied().collect(),
            )
        };
        for (peer, number) in channels {
            self.channel_bind(peer, number).await?;
        }
        self.create_permission(&permissions).await
    }
}

/// Binds a channel for each peer the mux asks for: peers that reached our relayed address (a
/// learned route, answered with Send indications until then), and destinations while the mux
/// relays everything. One at a time, in order; a failed bind drops the route so the next
/// datagram asks again.
async fn bind_requested(inner: Arc<Inner>, mut requests: tokio::sync::mpsc::Receiver<SocketAddr>) {
    let server = inner.session.server;
    while let Some(peer) = requests.recv().await {
        match inner.bind_channel(peer).await {
            Ok(number) => {
                debug!(%peer, channel = number, "TURN channel for a relayed peer");
                inner.session.mux.channel_bound(server, peer, number);
            }
            Err(e) => {
                warn!(%server, %peer, "cannot bind a TURN channel: {e}");
                inner.session.mux.channel_failed(server, peer);
            }
        }
    }
}

/// Keeps the allocation, its channels and permissions alive until it is lost or dropped.
async fn maintain(inner: Arc<Inner>, timers: Timers, lifetime: Duration) {
    let server = inner.session.server;
    // Retries of a failed refresh: quick at first, then no more than twice a minute, always
    // well inside the minute of margin `refresh_after` leaves.
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let start = Instant::now();
    let mut next_alloc = start + timers.allocation.unwrap_or_else(|| refresh_after(lifetime));
    let mut next_perm = start + timers.permissions;
    loop {
        sleep_until(next_alloc.min(next_perm)).await;
        let now = Instant::now();
        if now >= next_alloc {
            match inner.session.refresh(DESIRED_LIFETIME).await {
                Ok(granted) => {
                    backoff.reset();
                    inner.refreshes.fetch_add(1, Ordering::Relaxed);
                    lock(&inner.state).expires = now + granted;
                    next_alloc = now + timers.allocation.unwrap_or_else(|| refresh_after(granted));
                }
                Err(e) if e.is_fatal() || now >= lock(&inner.state).expires => {
                    error!(%server, "TURN allocation lost, relaying through it stops: {e}");
                    inner.deactivate();
                    return;
                }
                Err(e) => {
                    let delay = backoff.next_delay(&mut rand::thread_rng());
                    warn!(%server, "TURN refresh failed, retrying in {delay:?}: {e}");
                    next_alloc = now + delay;
                }
            }
        }
        if now >= next_perm {
            match inner.refresh_bindings().await {
                Ok(()) => next_perm = now + timers.permissions,
                Err(e) => {
                    // Permissions have a minute of margin (see PERMISSION_REFRESH).
                    let delay = Duration::from_secs(5).min(timers.permissions);
                    warn!(%server, "TURN channel refresh failed, retrying in {delay:?}: {e}");
                    next_perm = now + delay;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
