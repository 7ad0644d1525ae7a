//! Mutual TLS pinned to device ids.
//!
//! Every device presents a self-signed certificate for its Ed25519 [`DeviceKey`]. No certificate
//! authority, name or validity period means anything here: a peer is accepted when, and only
//! when, SHA-256 of the public key in its certificate is a device id we expect, and its TLS 1.3
//! handshake signature proves it holds the matching private key. The verifiers below do exactly
//! those two checks and nothing else:
//!
//! - the client accepts the server only if its id equals the one it dialled (the id comes from
//!   the pairing, or from the QR payload when joining, so no relay or rendezvous server in the
//!   path can stand in for the peer);
//! - the server requires a client certificate and asks a [`PeerPolicy`] about its id, so removing
//!   a device from an [`AllowList`] refuses its next connection at once.
//!
//! Session resumption is off on both sides: a resumed session skips the certificate and therefore
//! the policy, which would let an unpaired device back in.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{DeviceId, DeviceKey};

/// The ALPN protocol id of fybrk's QUIC protocol, version 2 (version 1 plus the replication
/// `Offer` message). A peer speaking neither this nor [`ALPN_V1`] fails the handshake instead
/// of misreading our streams.
pub const ALPN: &[u8] = b"fybrk/2";

/// Version 1, still spoken with peers that know no newer one.
pub const ALPN_V1: &[u8] = b"fybrk/1";

/// The protocols offered and accepted, newest first (a server picks the first of its own list
/// the client also offers).
fn alpn_protocols() -> Vec<Vec<u8>> {
    vec![ALPN.to_vec(), ALPN_V1.to_vec()]
}

/// True when `conn` negotiated version 2 or later: the peer understands replication offers.
pub fn speaks_offers(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == ALPN)
}

/// The name in every fybrk certificate (subject CN and SAN), and the SNI a client sends. It
/// carries no meaning: peers are told apart by key, never by name.
pub const CERT_NAME: &str = "fybrk";

/// Why a TLS configuration could not be built, or keying material not exported.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Making the self-signed certificate failed.
    #[error("cannot make the device certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC needs for its initial packets.
    #[error("TLS configuration: {0}")]
    NoInitialCipherSuite(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The connection cannot export keying material (its handshake has not completed).
    #[error("cannot export TLS keying material: the handshake has not completed")]
    Export,
}

/// What the server does with a client whose certificate carries a given device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// A paired device: run replication with it.
    Paired,
    /// An unknown device, let in only to run the pairing handshake (an invitation is open).
    PairingOnly,
    /// Refuse the TLS handshake.
    Deny,
}

/// Decides which client devices the server lets in. Asked during each TLS handshake, and again
/// when the connection is handed to the daemon, so a change takes effect for the next connection.
pub trait PeerPolicy: Send + Sync {
    /// The verdict for a client device. Must be quick: it runs inside the handshake.
    fn allows(&self, id: &DeviceId) -> Allow;
}

/// The set of paired devices, plus whether a pairing invitation is open.
///
/// While at least one [`PairingWindow`] is alive, unknown devices get [`Allow::PairingOnly`];
/// otherwise they are denied.
#[derive(Debug, Default)]
pub struct AllowList {
    paired: RwLock<HashSet<DeviceId>>,
    open_windows: AtomicUsize,
}

/// Keeps pairing open on an [`AllowList`] until dropped (the invitation expired, was used, or was
/// cancelled). Tying it to a value means an early return or a panic cannot leave pairing open.
#[derive(Debug)]
#[must_use = "pairing closes again when the window is dropped"]
pub struct PairingWindow {
    list: Arc<AllowList>,
}

impl AllowList {
    /// An empty list: every device is denied.
    pub fn new() -> Self {
        Self::default()
    }

    /// A list holding `ids`.
    pub fn with_ids(ids: impl IntoIterator<Item = DeviceId>) -> Self {
        AllowList {
            paired: RwLock::new(ids.into_iter().collect()),
            open_windows: AtomicUsize::new(0),
        }
    }

    /// Adds a paired device. Returns whether it was new.
    pub fn add(&self, id: DeviceId) -> bool {
        self.write().insert(id)
    }

    /// Removes a device (unpair). Its next connection attempt is refused; connections already
    /// open are the caller's to close. Returns whether it was present.
    pub fn remove(&self, id: &DeviceId) -> bool {
        self.write().remove(id)
    }

    /// Whether `id` is paired.
    pub fn contains(&self, id: &DeviceId) -> bool {
        self.read().contains(id)
    }

    /// The paired devices, in no particular order.
    pub fn ids(&self) -> Vec<DeviceId> {
        self.read().iter().copied().collect()
    }

    /// Lets unknown devices in for pairing until the returned window is dropped.
    pub fn open_pairing(self: &Arc<Self>) -> PairingWindow {
        self.open_windows.fetch_add(1, Ordering::SeqCst);
        PairingWindow {
            list: Arc::clone(self),
        }
    }

    /// Whether a pairing window is open.
    pub fn is_pairing_open(&self) -> bool {
        self.open_windows.load(Ordering::SeqCst) > 0
    }

    // A panic while holding the lock cannot leave a HashSet half-updated in a way that matters
    // here (insert/remove are the only writes), so a poisoned lock is used as is.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<DeviceId>> {
        self.paired.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<DeviceId>> {
        self.paired.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PeerPolicy for AllowList {
    fn allows(&self, id: &DeviceId) -> Allow {
        if self.contains(id) {
            Allow::Paired
        } else if self.is_pairing_open() {
            Allow::PairingOnly
        } else {
            Allow::Deny
        }
    }
}

impl Drop for PairingWindow {
    fn drop(&mut self) {
        self.list.open_windows.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A device's TLS credentials: its self-signed certificate and private key, made once and
/// reused for every connection.
pub struct TlsIdentity {
    id: DeviceId,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// Makes the self-signed certificate (subject CN and SAN "fybrk") for `key`.
    pub fn new(key: &DeviceKey) -> Result<Self, TlsError> {
        let mut params = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, CERT_NAME);
        // rcgen's default validity (1975 to 4096) is kept: our verifiers ignore dates, since
        // trust comes from pairing, and a device whose clock is wrong must still connect.
        let cert = params.self_signed(key.key_pair())?;
        Ok(TlsIdentity {
            id: key.id(),
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(key.pkcs8_der()),
        })
    }

    /// The device id this identity proves.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The DER certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The device id of a certificate: SHA-256 of its raw Ed25519 public key, the same value as
/// [`DeviceKey::id`]. `None` if the certificate does not parse or its key is not Ed25519.
pub fn device_id_of_cert(cert: &CertificateDer<'_>) -> Option<DeviceId> {
    let parsed = ParsedCertificate::try_from(cert).ok()?;
    DeviceId::from_spki_der(parsed.subject_public_key_info().as_ref())
}

/// The verified device id of the peer of an established connection.
pub fn peer_id(conn: &quinn::Connection) -> Option<DeviceId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    device_id_of_cert(certs.first()?)
}

/// The raw Ed25519 public key of the peer of an established connection (its device id is
/// the key's SHA-256): what a paired device's record in the DHT is published under.
pub fn peer_public_key(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let parsed = ParsedCertificate::try_from(certs.first()?).ok()?;
    crate::identity::ed25519_public_key_of_spki(parsed.subject_public_key_info().as_ref())
}

/// 32 bytes of keying material exported from the connection's TLS session (RFC 5705 / 8446
/// section 7.5) under `label` and `context`.
///
/// Both ends of one connection get the same value; any other connection (even between the same
/// two devices) gets a different one. Pairing signs its proof over this so that a proof seen on
/// one session cannot be replayed on another.
pub fn channel_binding(
    conn: &quinn::Connection,
    label: &[u8],
    context: &[u8],
) -> Result<[u8; 32], TlsError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, label, context)
        .map_err(|_| TlsError::Export)?;
    Ok(out)
}

/// The quinn server crypto config: requires a client certificate and lets in only the devices
/// `policy` allows. The caller adds the transport config.
pub fn server_config(
    identity: &TlsIdentity,
    policy: Arc<dyn PeerPolicy>,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PolicyClientVerifier {
        policy,
        provider: Arc::clone(&provider),
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    tls.alpn_protocols = alpn_protocols();
    // No tickets, no session cache: resumption would skip the client certificate and the policy.
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let crypto = QuicServerConfig::try_from(tls)?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// The quinn client config for dialling the device `expected`: the server must prove that id.
pub fn client_config(
    identity: &TlsIdentity,
    expected: DeviceId,
) -> Result<quinn::ClientConfig, TlsError> {
    client_config_observed(identity, expected).map(|(config, _)| config)
}

/// Like [`client_config`], and also returns where the verifier records the id the server
/// actually presented, so a failed connect can say "that address is another device".
pub(crate) fn client_config_observed(
    identity: &TlsIdentity,
    expected: DeviceId,
) -> Result<(quinn::ClientConfig, Arc<OnceLock<DeviceId>>), TlsError> {
    let provider = provider();
    let seen = Arc::new(OnceLock::new());
    let verifier = Arc::new(PinnedServerVerifier {
        expected,
        seen: Arc::clone(&seen),
        provider: Arc::clone(&provider),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    tls.alpn_protocols = alpn_protocols();
    // Every peer uses the server name "fybrk", so a cached session could be offered to the
    // wrong device; and a resumed session would skip the certificate check. Always do a full
    // handshake.
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto = QuicClientConfig::try_from(tls)?;
    Ok((quinn::ClientConfig::new(Arc::new(crypto)), seen))
}

/// ring, the project's only crypto provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Our keys are Ed25519, so that is the only handshake signature scheme we offer or accept.
const SCHEMES: &[SignatureScheme] = &[SignatureScheme::ED25519];

fn refuse() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

fn not_ed25519() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

fn verify13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if !SCHEMES.contains(&dss.scheme) {
        return Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    }
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// Client side: the server must be the device we dialled.
#[derive(Debug)]
struct PinnedServerVerifier {
    expected: DeviceId,
    seen: Arc<OnceLock<DeviceId>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // No chain, name or date checks: the id pins the key, and the handshake signature
        // (checked next by rustls through `verify_tls13_signature` below) proves possession.
        let id = device_id_of_cert(end_entity).ok_or_else(not_ed25519)?;
        let _ = self.seen.set(id);
        if id == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::debug!(expected = %self.expected, actual = %id, "server is another device");
            Err(refuse())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with QUIC (TLS 1.3 only), but verify properly rather than assume.
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

/// Server side: the client must present a certificate whose id the policy lets in.
struct PolicyClientVerifier {
    policy: Arc<dyn PeerPolicy>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PolicyClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyClientVerifier")
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for PolicyClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Self-signed certificates have no CA to hint at.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = device_id_of_cert(end_entity).ok_or_else(not_ed25519)?;
        match self.policy.allows(&id) {
            Allow::Paired | Allow::PairingOnly => Ok(ClientCertVerified::assertion()),
            Allow::Deny => {
                tracing::info!(peer = %id, "refused a connection from a device we are not paired with");
                Err(refuse())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_id_is_the_key_id() {
        let key = DeviceKey::generate().expect("key");
        let identity = TlsIdentity::new(&key).expect("cert");
        assert_eq!(device_id_of_cert(identity.certificate()), Some(key.id()));
        assert_eq!(identity.id(), key.id());
    }

    #[test]
    fn garbage_certificate_has_no_id() {
        assert_eq!(
            device_id_of_cert(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            None
        );
    }

    #[test]
    fn allow_list_verdicts() {
        let list = Arc::new(AllowList::new());
        let a = DeviceKey::generate().expect("key").id();
        assert_eq!(list.allows(&a), Allow::Deny);
        {
            let _w1 = list.open_pairing();
            let w2 = list.open_pairing();
            assert_eq!(list.allows(&a), Allow::PairingOnly);
            drop(w2);
            assert_eq!(list.allows(&a), Allow::PairingOnly, "one window still open");
        }
        assert_eq!(list.allows(&a), Allow::Deny);
        assert!(list.add(a));
        assert!(!list.add(a));
        assert_eq!(list.allows(&a), Allow::Paired);
        assert_eq!(list.ids(), vec![a]);
        assert!(list.remove(&a));
        assert_eq!(list.allows(&a), Allow::Deny);
    }

    /// Impostor tests: a device that shows another device's certificate but signs the handshake
    /// with its own key must be rejected by the signature check, not let in by the id check.
    mod impostor {
        use super::*;
        use crate::transport::{Admission, ConnectError, Transport};
        use rustls::client::ResolvesClientCert;
        use rustls::server::{ClientHello, ResolvesServerCert};
        use rustls::sign::CertifiedKey;
        use std::net::{SocketAddr, UdpSocket};
        use std::time::Duration;

        const WAIT: Duration = Duration::from_secs(5);

        /// Presents `cert` and signs with `signer`, which need not match.
        #[derive(Debug)]
        struct Fixed(Arc<CertifiedKey>);

        impl Fixed {
            fn new(cert: &CertificateDer<'static>, signer: &DeviceKey) -> Arc<Fixed> {
                let key = provider()
                    .key_provider
                    .load_private_key(PrivateKeyDer::Pkcs8(signer.pkcs8_der()))
                    .expect("signing key");
                Arc::new(Fixed(Arc::new(CertifiedKey::new(vec![cert.clone()], key))))
            }
        }

        impl ResolvesServerCert for Fixed {
            fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
                Some(Arc::clone(&self.0))
            }
        }

        impl ResolvesClientCert for Fixed {
            fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
                Some(Arc::clone(&self.0))
            }
            fn has_certs(&self) -> bool {
                true
            }
        }

        struct AllowAll;
        impl PeerPolicy for AllowAll {
            fn allows(&self, _: &DeviceId) -> Allow {
                Allow::Paired
            }
        }

        fn loopback() -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], 0))
        }

        /// A bare quinn server presenting `shown` signed by `signer`, accepting any client.
        fn raw_server(shown: &CertificateDer<'static>, signer: &DeviceKey) -> quinn::Endpoint {
            let provider = provider();
            let verifier = Arc::new(PolicyClientVerifier {
                policy: Arc::new(AllowAll),
                provider: provider.clone(),
            });
            let mut tls = rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("tls13")
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(Fixed::new(shown, signer));
            tls.alpn_protocols = alpn_protocols();
            let crypto = QuicServerConfig::try_from(tls).expect("quic server");
            let endpoint = quinn::Endpoint::server(
                quinn::ServerConfig::with_crypto(Arc::new(crypto)),
                loopback(),
            )
            .expect("server endpoint");
            let serving = endpoint.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Some(incoming) = serving.accept().await {
                    if let Ok(conn) = incoming.await {
                        held.push(conn);
                    }
                }
            });
            endpoint
        }

        /// A bare quinn client to `server_id` at `addr`, presenting `shown` signed by `signer`.
        async fn raw_connect(
            addr: SocketAddr,
            server_id: DeviceId,
            shown: &CertificateDer<'static>,
            signer: &DeviceKey,
        ) -> Result<quinn::Connection, quinn::ConnectionError> {
            let provider = provider();
            let verifier = Arc::new(PinnedServerVerifier {
                expected: server_id,
                seen: Arc::new(OnceLock::new()),
                provider: provider.clone(),
            });
            let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("tls13")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_client_cert_resolver(Fixed::new(shown, signer));
            tls.alpn_protocols = alpn_protocols();
            let crypto = QuicClientConfig::try_from(tls).expect("quic client");
            let endpoint = quinn::Endpoint::client(loopback()).expect("client endpoint");
            endpoint
                .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), addr, CERT_NAME)
                .expect("start")
                .await
        }

        fn transport(key: &DeviceKey, allow: &[DeviceId]) -> Transport {
            let socket = UdpSocket::bind(loopback()).expect("bind");
            Transport::bind(
                socket,
                key,
                Arc::new(AllowList::with_ids(allow.iter().copied())),
            )
            .expect("transport")
        }

        #[tokio::test]
        async fn server_with_stolen_certificate_is_rejected() {
            let victim = DeviceKey::generate().expect("key");
            let thief = DeviceKey::generate().expect("key");
            let victim_cert = TlsIdentity::new(&victim).expect("cert").cert;
            let thief_cert = TlsIdentity::new(&thief).expect("cert").cert;
            let client = transport(&DeviceKey::generate().expect("key"), &[]);

            // Control: with its own certificate the raw server is reachable as itself.
            let honest = raw_server(&thief_cert, &thief);
            let addr = honest.local_addr().expect("addr");
            let (_conn, peer) = client
                .connect(addr, thief.id())
                .await
                .expect("control connect");
            assert_eq!(peer, thief.id());

            // The same server showing the victim's certificate fails the signature check.
            let forged = raw_server(&victim_cert, &thief);
            let addr = forged.local_addr().expect("addr");
            let err = client
                .connect(addr, victim.id())
                .await
                .expect_err("forgery accepted");
            assert!(
                matches!(err, ConnectError::Failed { .. }),
                "unexpected error: {err}"
            );
        }

        #[tokio::test]
        async fn client_with_stolen_certificate_is_rejected() {
            let server_key = DeviceKey::generate().expect("key");
            let victim = DeviceKey::generate().expect("key");
            let thief = DeviceKey::generate().expect("key");
            let victim_cert = TlsIdentity::new(&victim).expect("cert").cert;
            let server = Arc::new(transport(&server_key, &[victim.id()]));
            let addr = server.local_addr().expect("addr");
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let acceptor = Arc::clone(&server);
            tokio::spawn(async move {
                while let Some(accepted) = acceptor.accept().await {
                    let _ = tx.send(accepted);
                }
            });

            // Control: the victim's real key gets in.
            let conn = raw_connect(addr, server_key.id(), &victim_cert, &victim)
                .await
                .expect("control connect");
            let accepted = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("yield")
                .expect("open");
            assert_eq!(
                (accepted.peer, accepted.admission),
                (victim.id(), Admission::Paired)
            );
            drop(conn);

            // The thief showing the victim's certificate is closed and never yielded.
            let outcome = match raw_connect(addr, server_key.id(), &victim_cert, &thief).await {
                Err(e) => e,
                Ok(conn) => tokio::time::timeout(WAIT, conn.closed())
                    .await
                    .expect("closed"),
            };
            assert!(
                matches!(outcome, quinn::ConnectionError::ConnectionClosed(_)),
                "{outcome}"
            );
            if let Ok(Some(a)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
                panic!("server yielded a forged connection from {}", a.peer);
            }
        }
    }

    #[test]
    fn configs_build() {
        let key = DeviceKey::generate().expect("key");
        let identity = TlsIdentity::new(&key).expect("cert");
        server_config(&identity, Arc::new(AllowList::new())).expect("server");
        client_config(&identity, key.id()).expect("client");
    }
}
