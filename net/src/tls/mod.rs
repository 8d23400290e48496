//! TLS for QUIC with mutual authentication: loading a node's or operator's credentials and
//! building the quinn server and client configurations from them.
//!
//! Both sides use TLS 1.3 only, the aws-lc-rs provider passed explicitly to every builder (ring is
//! also compiled into this workspace, so the process default is never relied on), the single ALPN
//! [`ferry_proto::ALPN`], no 0-RTT and no session resumption (a resumed session would skip the
//! certificate and CRL checks). The serving side requires a client certificate issued by the
//! ministry CA and not listed in the CRL; the connecting side checks the node's certificate
//! against the same CA and CRL and by the node's name (a DNS SAN written by the CA).
//!
//! Neighbours: the client's `ferry_client::pki` (the CA) writes the files loaded here; the
//! `refusal` submodule explains failed handshakes; [`crate::sign`] reuses [`Credentials`] to sign
//! and verify manifests and documents. The daemon polls the CRL with [`Credentials::reload_crl`]
//! and, when it changed, installs a new [`server_config`] with `Endpoint::set_server_config`.

pub mod congestion;
mod keys;
mod refusal;
pub mod revocation;
pub mod socket;

pub(crate) use keys::read_private_key;
pub use refusal::{
    HandshakeObserver, HandshakeRefusal, IgnoreRefusals, classify_server_side, explain_connection_error,
    explain_local_refusal, observe_failed_handshake, refusal_message,
};

use crate::identity::{IdentityError, principal_from_cert};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use ferry_proto::Principal;
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// Where a node's or operator's credentials live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The ministry CA certificate(s), PEM (`ca.pem`).
    pub ca: PathBuf,
    /// Our certificate, PEM; the leaf first.
    pub cert: PathBuf,
    /// Our ECDSA P-256 key, PEM: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`, what
    /// `openssl ecparam -genkey` and `openssl ec` write).
    pub key: PathBuf,
    /// The CA's CRL, PEM. Without it, revoked certificates are accepted. Re-read whenever it
    /// changes ([`Credentials::crls`]).
    pub crl: Option<PathBuf>,
}

/// Why credentials could not be loaded or a configuration not built. Load errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("{path} does not name a ferry identity: {source}")]
    Identity { path: PathBuf, source: IdentityError },
    #[error("{path} is not an ECDSA P-256 key: {detail}")]
    UnsupportedKey { path: PathBuf, detail: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
    #[error("certificate verifier refused its configuration: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("QUIC needs a TLS 1.3 AES-128-GCM cipher suite: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// A loaded certificate, key, CA and CRL; the material every TLS configuration is built from.
pub struct Credentials {
    paths: TlsPaths,
    ca_certs: Vec<CertificateDer<'static>>,
    cert_chain: Vec<CertificateDer<'static>>,
    /// The key as PKCS#8, whatever form the file held.
    key: PrivatePkcs8KeyDer<'static>,
    /// The CRL(s) in force and the stamp of the file they were read from.
    crl: RwLock<CrlState>,
    identity: Principal,
}

/// The CRLs of the last good read of the CRL file.
#[derive(Debug, Clone, Default)]
struct CrlState {
    crls: CrlSet,
    stamp: Option<FileStamp>,
}

/// The CRL(s) in force at one moment, DER; cheap to clone. Dereferences to a slice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrlSet(Arc<Vec<CertificateRevocationListDer<'static>>>);

impl std::ops::Deref for CrlSet {
    type Target = [CertificateRevocationListDer<'static>];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// What tells us a file changed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Clone for Credentials {
    /// A copy that follows the CRL file on its own (from the CRL in force now).
    fn clone(&self) -> Self {
        Self {
            paths: self.paths.clone(),
            ca_certs: self.ca_certs.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            crl: RwLock::new(self.crl_state().clone()),
            identity: self.identity.clone(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("paths", &self.paths)
            .field("identity", &self.identity)
            .field("ca_certs", &self.ca_certs.len())
            .field("crls", &self.crls().len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads and checks every file: PEM syntax, our identity in the certificate, and that the
    /// key is ECDSA P-256 (in any form [`read_private_key`] reads) and belongs to the certificate.
    pub fn load(paths: &TlsPaths) -> Result<Self, TlsError> {
        let ca_certs = read_pem_all::<CertificateDer<'static>>(&paths.ca, "certificate")?;
        let cert_chain = read_pem_all::<CertificateDer<'static>>(&paths.cert, "certificate")?;
        let key = read_private_key(&paths.key)?;
        // Invariant: read_pem_all returns at least one item or an error.
        let leaf = &cert_chain[0];
        let identity = principal_from_cert(leaf)
            .map_err(|source| TlsError::Identity { path: paths.cert.clone(), source })?;
        check_key_matches(leaf, &key, &paths.cert, &paths.key)?;
        let crl = match &paths.crl {
            Some(path) => {
                let stamp = stamp(path)?;
                CrlState { crls: CrlSet(Arc::new(read_crls(path)?)), stamp: Some(stamp) }
            }
            None => CrlState::default(),
        };
        let crl = RwLock::new(crl);
        Ok(Self { paths: paths.clone(), ca_certs, cert_chain, key, crl, identity })
    }

    /// Who these credentials speak for.
    pub fn principal(&self) -> &Principal {
        &self.identity
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// The trusted CA certificate(s), DER.
    pub fn ca_certs(&self) -> &[CertificateDer<'static>] {
        &self.ca_certs
    }

    /// Our certificate, DER.
    pub fn cert(&self) -> &CertificateDer<'static> {
        // Invariant: load() refuses a certificate file without certificates.
        &self.cert_chain[0]
    }

    /// Our certificate chain as loaded (leaf first), DER.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// Our private key, PKCS#8 DER.
    pub fn private_key(&self) -> &PrivatePkcs8KeyDer<'static> {
        &self.key
    }

    /// The CRL(s) in force, DER; empty when no CRL file is configured. The file is re-read
    /// first when it changed since the last read, so every holder of these credentials (the
    /// manifest checks, the configurations of outgoing connections) follows a revocation
    /// without a restart. A file that cannot be read or parsed keeps the previous CRL in force.
    pub fn crls(&self) -> CrlSet {
        if let Err(e) = self.reload_crl() {
            tracing::warn!(error = %e, "cannot re-read the CRL; the previous one stays in force");
        }
        self.crl_state().crls.clone()
    }

    fn crl_state(&self) -> std::sync::RwLockReadGuard<'_, CrlState> {
        // Every write replaces the whole state, so a poisoned lock still holds a consistent one.
        self.crl.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Re-reads the CRL file if its modification time or size changed. Returns whether the CRLs
    /// changed; a server must then build and install a new [`server_config`]. A CRL that fails
    /// to parse is an error and the previous one stays in force.
    pub fn reload_crl(&self) -> Result<bool, TlsError> {
        let Some(path) = &self.paths.crl else {
            return Ok(false);
        };
        let current = stamp(path)?;
        if Some(current) == self.crl_state().stamp {
            return Ok(false);
        }
        let crls = read_crls(path)?;
        let mut state = self.crl.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.stamp = Some(current);
        if *state.crls.0 == crls {
            return Ok(false);
        }
        state.crls = CrlSet(Arc::new(crls));
        Ok(true)
    }

    fn root_store(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.ca_certs {
            roots.add(ca.clone()).map_err(|e| TlsError::Pem {
                path: self.paths.ca.clone(),
                detail: format!("not a usable CA certificate: {e}"),
            })?;
        }
        Ok(Arc::new(roots))
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// The crypto provider of every ferry TLS configuration.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Serving side: requires and verifies a client certificate (CA + CRL), reporting refusals to
/// `observer`.
pub fn server_config(
    creds: &Credentials,
    observer: Arc<dyn HandshakeObserver>,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let mut verifier = WebPkiClientVerifier::builder_with_provider(creds.root_store()?, provider.clone());
    let crls = creds.crls();
    if !crls.is_empty() {
        // Our CA signs leaves directly; the CRL covers exactly those. Unknown revocation status
        // stays an error (fail closed).
        verifier = verifier.with_crls(crls.iter().cloned()).only_check_end_entity_revocation();
    }
    let verifier = Arc::new(refusal::ObservedClientVerifier { inner: verifier.build()?, observer });
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.cert_chain.clone(), creds.key_der())?;
    tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(NoServerSessionStorage {});
    let quic = QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(server_transport_config(false, DEFAULT_STREAMS_PER_CONNECTION)));
    Ok(config)
}

/// Connecting side: verifies the node against the CA (+ CRL) and the server name passed to
/// `Endpoint::connect_with`, and authenticates with our certificate.
pub fn client_config(creds: &Credentials) -> Result<quinn::ClientConfig, TlsError> {
    let tls = rustls_client_config(
        creds.root_store()?,
        &creds.crls(),
        Some((creds.cert_chain.clone(), creds.key_der())),
    )?;
    quic_client_config(tls)
}

/// A client that trusts `ca_certs` but presents no certificate. For tests and diagnostics: every
/// ferry node refuses it with [`HandshakeRefusal::NoCertificate`].
pub fn client_config_without_cert(
    ca_certs: &[CertificateDer<'static>],
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in ca_certs {
        roots.add(ca.clone())?;
    }
    quic_client_config(rustls_client_config(Arc::new(roots), &[], None)?)
}

fn rustls_client_config(
    roots: Arc<RootCertStore>,
    crls: &[CertificateRevocationListDer<'static>],
    auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let mut verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
    if !crls.is_empty() {
        verifier = verifier.with_crls(crls.iter().cloned()).only_check_end_entity_revocation();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier.build()?);
    let mut tls = match auth {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    tls.enable_early_data = false;
    tls.resumption = Resumption::disabled();
    Ok(tls)
}

/// Interval of the keep-alive PINGs a client sends. A request can keep the node busy without a
/// byte on the wire for longer than QUIC's 30 s idle timeout (publishing a large table sorts and
/// diffs it before answering); the PINGs keep such a connection alive.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

fn quic_client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let quic = QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = transport_config();
    transport.receive_window(quinn::VarInt::from_u32(CLIENT_INITIAL_RECEIVE_WINDOW));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Bytes a node may send across all streams of a client's connection ahead of the reader,
/// until the client raises it (`quinn::Connection::set_receive_window`): one stream's window.
/// A puller raises it once it knows the path (the client's `transfer` module): without bound on
/// a long path, to a chunk per stream on a short one. The bound must start at the handshake:
/// quinn cannot take back credit once granted, and its default grants all it can.
pub const CLIENT_INITIAL_RECEIVE_WINDOW: u32 = STREAM_RECEIVE_WINDOW;

/// Largest UDP payload MTU discovery probes for. Paths that do not carry it (most WANs stop at
/// 1500) lose a few probes and settle lower; loopback and jumbo-frame LANs send fewer, larger
/// datagrams, which is most of the per-byte cost of QUIC.
pub const MTU_UPPER_BOUND: u16 = 65_000;

/// Bytes a peer may send on one stream ahead of what the reader has taken.
pub const STREAM_RECEIVE_WINDOW: u32 = 4 << 20;

/// Bytes of application writes QUIC keeps for one connection until the peer has acknowledged
/// them (and every byte before them on their stream): what eight streams' windows
/// ([`STREAM_RECEIVE_WINDOW`]) let a peer grant, as a puller does on a long path. quinn's default
/// (10 MB) ran out on the emulated 1 Gbit/s, 30 ms link with 0.5% loss, where each lost packet
/// holds what its stream sent after it for two round trips more: the node stopped writing with
/// the window open (`ferry-bench wan --profiles wan30`: 0.832 and 0.885 of the link with it,
/// 0.900–0.909 with this, alternated). Memory is bounded elsewhere: the peer's flow-control
/// credit, and on a node the serve budget over all connections (`ferryd`'s `serve-buffer`).
pub const SEND_WINDOW: u64 = 8 * STREAM_RECEIVE_WINDOW as u64;

/// [`STREAM_RECEIVE_WINDOW`] for a peer on this host: two 1 MiB chunks, so one can arrive while
/// the other is verified and written. The round trip is well under a millisecond, so this keeps
/// a stream going at several GB/s; what a puller may have buffered in QUIC (and its peak RSS)
/// is a quarter of what the WAN-sized window allows.
pub const LOOPBACK_STREAM_RECEIVE_WINDOW: u32 = 2 << 20;

/// Bytes a peer on this host may send across all streams of a connection ahead of the reader:
/// half of what four streams' windows add up to. A stream whose chunk is being verified and
/// written still gets its two chunks' worth while the others have room, but what QUIC buffers
/// for a puller (and the datagram buffers behind it) is bounded by this, not by the number of
/// streams.
pub const LOOPBACK_RECEIVE_WINDOW: u32 = 4 << 20;

/// The QUIC transport settings of every ferry endpoint, client and node alike.
///
/// Congestion control follows the path: Cubic on short paths, BBR on long, lossy ones (see
/// [`congestion`]).
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.congestion_controller_factory(Arc::new(congestion::PathAdaptiveConfig::default()));
    // quinn's default (1.25 MB per stream) holds about one round trip of a 1 Gbit/s, 30 ms link
    // over a puller's streams; a lost packet then stalls its stream until the repair arrives.
    transport.stream_receive_window(quinn::VarInt::from_u32(STREAM_RECEIVE_WINDOW));
    transport.send_window(SEND_WINDOW);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    transport.mtu_discovery_config(Some(mtu));
    transport
}

/// The transport settings for a peer on this host: datagrams of [`MTU_UPPER_BOUND`] from the
/// first packet, and stream windows of [`LOOPBACK_STREAM_RECEIVE_WINDOW`]. Linux's loopback
/// carries 65,536-byte packets; discovering that by probing costs a dozen padded probes
/// (~660 KB), more than a small delta sync moves.
pub fn loopback_transport_config() -> quinn::TransportConfig {
    let mut transport = transport_config();
    transport.initial_mtu(MTU_UPPER_BOUND);
    transport.stream_receive_window(quinn::VarInt::from_u32(LOOPBACK_STREAM_RECEIVE_WINDOW));
    transport.receive_window(quinn::VarInt::from_u32(LOOPBACK_RECEIVE_WINDOW));
    // Ten datagrams, as the usual initial window; quinn's default holds less than one of these.
    let window = 10 * u64::from(MTU_UPPER_BOUND);
    transport
        .congestion_controller_factory(Arc::new(congestion::PathAdaptiveConfig::with_initial_window(window)));
    transport
}

/// Request streams a node lets one connection have open at once unless its config says otherwise
/// (`[limits] streams-per-connection`): a node's widest pull (64 streams) and a request beside.
pub const DEFAULT_STREAMS_PER_CONNECTION: u32 = 72;

/// The transport settings a node accepts a connection with: [`transport_config`] (or
/// [`loopback_transport_config`] for a peer on this host), at most `streams_per_connection`
/// bidirectional streams open at once (QUIC gives a client no credit for more, so it waits),
/// and no unidirectional stream at all — no request uses one, and each would hold up to a
/// stream receive window that nothing reads.
pub fn server_transport_config(loopback: bool, streams_per_connection: u32) -> quinn::TransportConfig {
    let mut transport = if loopback { loopback_transport_config() } else { transport_config() };
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(streams_per_connection));
    transport
}

/// Whether `addr` is on this host's loopback (IPv4, IPv6, or IPv4 mapped into IPv6).
pub fn is_loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// [`client_config`] with [`loopback_transport_config`], for a node on this host.
pub fn loopback_client_config(creds: &Credentials) -> Result<quinn::ClientConfig, TlsError> {
    let mut config = client_config(creds)?;
    config.transport_config(Arc::new(loopback_transport_config()));
    Ok(config)
}

/// Bytes asked for as the UDP socket's receive and send buffers. Linux's default (208 KiB) holds
/// about 25 full datagrams: a burst larger than that, or a receiver thread a little late, drops
/// packets that the sender then reads as congestion. The kernel caps the request at
/// `net.core.rmem_max`/`wmem_max` (see the deployment notes); the size obtained is logged.
pub const UDP_BUFFER_BYTES: usize = 8 << 20;

/// A QUIC endpoint on a UDP socket bound to `addr` with [`UDP_BUFFER_BYTES`] buffers; `server`
/// makes it accept connections.
pub fn endpoint(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    let domain = if addr.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped peers on `[::]` as the std socket would.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a smaller buffer than asked for still works.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    tracing::debug!(
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "UDP socket buffers"
    );
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    // Accept the datagrams MTU discovery may reach (quinn's default advertises 1,472 bytes, which
    // caps the peer's datagrams there whatever its own upper bound).
    let mut config = quinn::EndpointConfig::default();
    config.max_udp_payload_size(MTU_UPPER_BOUND).map_err(std::io::Error::other)?;
    let socket = Arc::new(socket::SplitSends::new(runtime.wrap_udp_socket(socket.into())?));
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn stamp(path: &Path) -> Result<FileStamp, TlsError> {
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    Ok(FileStamp { modified: meta.modified().ok(), len: meta.len() })
}

/// Every PEM section of type `T` in `path`; at least one.
pub(crate) fn read_pem_all<T: PemObject>(path: &Path, what: &str) -> Result<Vec<T>, TlsError> {
    let bytes = read_file(path)?;
    let items = T::pem_slice_iter(&bytes)
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_owned(), detail: format!("bad PEM: {e}") })?;
    if items.is_empty() {
        return Err(TlsError::Pem { path: path.to_owned(), detail: format!("no {what} found") });
    }
    Ok(items)
}

/// The CRLs in `path`, each checked to parse (so a bad file is named here, not in rustls).
pub(crate) fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = read_pem_all::<CertificateRevocationListDer<'static>>(path, "CRL")?;
    for crl in &crls {
        x509_parser::parse_x509_crl(crl)
            .map_err(|e| TlsError::Pem { path: path.to_owned(), detail: format!("not a valid CRL: {e}") })?;
    }
    Ok(crls)
}

/// Checks that `key` (read from `key_path`) is ECDSA P-256 and belongs to `leaf` (from `cert_path`).
pub(crate) fn check_key_matches(
    leaf: &CertificateDer<'_>,
    key: &PrivatePkcs8KeyDer<'_>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.secret_pkcs8_der())
        .map_err(|e| TlsError::UnsupportedKey { path: key_path.to_owned(), detail: e.to_string() })?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::Pem {
        path: cert_path.to_owned(),
        detail: format!("not a valid certificate: {e}"),
    })?;
    if cert.public_key().subject_public_key.data.as_ref() != pair.public_key().as_ref() {
        return Err(TlsError::KeyMismatch { cert: cert_path.to_owned(), key: key_path.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
