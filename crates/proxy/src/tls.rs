//! TLS on Lattice ports. One port of a VPC's entry may carry HTTP, HTTPS and TLS_PASSTHROUGH
//! listeners of different services, so every connection on a port with a TLS listener is told
//! apart by its first byte (a TLS handshake record starts with 22, an HTTP method never does),
//! then by the ClientHello's server name:
//!
//! - a service's generated name or custom domain name with an HTTPS listener on that port: the
//!   handshake completes with that name's certificate (the installation's managed certificate of
//!   the generated zone, or the service's ACM certificate for its custom name; none, none
//!   served), and the connection is served like a cleartext one (`conn`), routed to HTTPS
//!   listeners only;
//! - a custom domain name whose service has a TLS_PASSTHROUGH listener there: the bytes read so
//!   far and everything after them are spliced to a target of the listener's TCP target groups,
//!   unterminated ([`splice`]);
//! - anything else (no name, an unknown one, a name this VPC does not reach, a garbled or
//!   truncated ClientHello): the connection is closed, and the reason logged.
//!
//! Server configurations are made once per certificate (kept while its serial stays the same)
//! and share one session cache and one ticket key, so resumption survives configuration
//! changes.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{Accepted, Acceptor, ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls::{ServerConfig, server::ProducesTickets};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use trellis_model::tls::{Certificates, Identity};

mod splice;

pub(crate) use splice::splice;

/// A TLS handshake record's first byte.
const HANDSHAKE: u8 = 22;
/// Largest ClientHello read (a post-quantum key share makes them a few KiB).
const MAX_HELLO: usize = 64 * 1024;
/// ALPN protocols offered to clients, preferred first.
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A client connection: cleartext, or TLS terminated here.
pub(crate) enum ClientStream {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS, terminated by the proxy.
    Tls(Box<tokio_rustls::server::TlsStream<Socket>>),
}

/// The TCP connection under a TLS session (a client's, or a target's). rustls hands the
/// records it has sealed to its socket as one vectored write; a single slice, the usual case
/// (a response in one record), goes as a `send`, which costs the kernel less than a `writev`
/// of one slice (that passes through the file layer first: ~0.18 µs a call here, a percent of
/// an HTTPS request's CPU).
pub(crate) struct Socket(pub(crate) TcpStream);

/// What a terminated TLS session negotiated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TlsDetails {
    /// `TLSv1.2`, `TLSv1.3`.
    pub(crate) version: &'static str,
    /// The cipher suite (OpenSSL's name for TLS 1.2 suites, as AWS logs them).
    pub(crate) cipher: &'static str,
}

/// Server configurations per certificate, kept across route tables.
pub(crate) struct TlsStore {
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    tickets: Option<Arc<dyn ProducesTickets>>,
    by_serial: HashMap<String, Arc<ServerConfig>>,
}

/// The server configurations one route table serves with.
#[derive(Default)]
pub(crate) struct TlsConfigs {
    /// Managed certificates of generated names, by zone.
    zones: HashMap<String, Arc<ServerConfig>>,
    /// Customer certificates, by ACM ARN.
    by_arn: HashMap<String, Arc<ServerConfig>>,
}

/// Why a TLS connection was refused before its handshake.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Not a ClientHello, or a broken one.
    BadHello(String),
    /// The client went away or was too slow.
    Gone,
    /// No server name was sent.
    NoName,
    /// The name is not a service this VPC reaches with a TLS listener on this port.
    UnknownName(String),
    /// The service has no certificate for the name.
    NoCertificate(String),
}

/// Always the same certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

// === impl ClientStream ===

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            // The plaintext of the records at hand, one at a time: tokio-rustls's own read
            // would go on to ask for more at once, which (the socket just drained) only
            // registers the task again, through the record layer: ~400 instructions a read.
            Self::Tls(s) => {
                let mut s = Pin::new(&mut **s);
                let data = ready!(s.as_mut().poll_fill_buf(cx))?;
                let n = data.len().min(buf.remaining());
                buf.put_slice(&data[..n]);
                s.consume(n);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(_) => Poll::Ready(Ok(())),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl ClientStream {
    /// Pending (the task registered for the socket's readiness) when a read could only be
    /// Pending: a TLS session holding no plaintext, over a socket not readable. A read through
    /// the session would find just that, by way of its record layer (some 1,000 instructions);
    /// an HTTP/1.1 connection polls its client's read this way about three times a request,
    /// as it waits for the target and then for the next request. Ready means: read.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Self::Plain(_) => Poll::Ready(()),
            // No plaintext waits and no close_notify came: only the socket can bring anything.
            Self::Tls(s) if s.get_ref().1.wants_read() => s.get_ref().0.0.poll_read_ready(cx).map(|_| ()),
            Self::Tls(_) => Poll::Ready(()),
        }
    }

    /// The negotiated protocol version and cipher suite (access logs' `tlsVersion` and
    /// `sslCipher`), for a TLS client.
    pub(crate) fn tls_details(&self) -> Option<TlsDetails> {
        let Self::Tls(s) = self else { return None };
        let session = s.get_ref().1;
        let version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "-",
        };
        let suite = session.negotiated_cipher_suite().map(|s| s.suite());
        let cipher = match suite {
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256) => "TLS_AES_128_GCM_SHA256",
            Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384) => "TLS_AES_256_GCM_SHA384",
            Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256) => "TLS_CHACHA20_POLY1305_SHA256",
            Some(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) => "ECDHE-RSA-AES128-GCM-SHA256",
            Some(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) => "ECDHE-RSA-AES256-GCM-SHA384",
            Some(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256) => "ECDHE-RSA-CHACHA20-POLY1305",
            Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) => "ECDHE-ECDSA-AES128-GCM-SHA256",
            Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384) => "ECDHE-ECDSA-AES256-GCM-SHA384",
            Some(other) => other.as_str().unwrap_or("-"),
            None => "-",
        };
        Some(TlsDetails { version, cipher })
    }

    /// Whether the client speaks TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Whether the client chose HTTP/2 by ALPN.
    pub(crate) fn is_h2(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

// === impl Socket ===

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = Pin::new(&mut self.get_mut().0);
        let mut full = bufs.iter().filter(|b| !b.is_empty());
        match (full.next(), full.next()) {
            (Some(one), None) => stream.poll_write(cx, one),
            (None, _) => Poll::Ready(Ok(0)),
            _ => stream.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

// === impl TlsStore ===

impl TlsStore {
    /// An empty store with a fresh session cache and ticket key.
    pub(crate) fn new() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tickets = match rustls::crypto::ring::Ticketer::new() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "no TLS session tickets");
                None
            }
        };
        Self {
            provider,
            sessions: rustls::server::ServerSessionMemoryCache::new(16 * 1024),
            tickets,
            by_serial: HashMap::new(),
        }
    }

    /// The configurations for `certificates`, reusing those whose certificate did not change;
    /// the others are forgotten.
    pub(crate) fn configs(&mut self, certificates: &Certificates) -> TlsConfigs {
        let mut used = HashMap::new();
        let mut get = |identity: &Identity| -> Option<Arc<ServerConfig>> {
            let config = match self.by_serial.get(&identity.serial) {
                Some(c) => c.clone(),
                None => match self.server_config(identity) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(serial = %identity.serial, error = %e, "certificate cannot be served");
                        return None;
                    }
                },
            };
            used.insert(identity.serial.clone(), config.clone());
            Some(config)
        };
        let zones = certificates.zones.iter().filter_map(|(z, id)| Some((z.clone(), get(id)?))).collect();
        let by_arn = certificates.by_arn.iter().filter_map(|(a, id)| Some((a.clone(), get(id)?))).collect();
        self.by_serial = used;
        TlsConfigs { zones, by_arn }
    }

    fn server_config(&self, identity: &Identity) -> Result<Arc<ServerConfig>, rustls::Error> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
        let signer = self.provider.key_provider.load_private_key(key)?;
        let chain = identity.chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
        let certified = Arc::new(CertifiedKey::new(chain, signer));
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(certified)));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        config.session_storage = self.sessions.clone();
        if let Some(tickets) = &self.tickets {
            config.ticketer = tickets.clone();
        }
        Ok(Arc::new(config))
    }
}

// === impl TlsConfigs ===

impl TlsConfigs {
    /// The configuration serving `name`: its service's customer certificate when `name` is the
    /// custom domain name, else the managed certificate of its zone.
    pub(crate) fn for_name(
        &self,
        name: &str,
        custom: bool,
        certificate_arn: Option<&str>,
    ) -> Option<Arc<ServerConfig>> {
        if custom {
            return self.by_arn.get(certificate_arn?).cloned();
        }
        self.zones.get(trellis_model::tls::zone_of(name)?).cloned()
    }
}

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Whether the client's first byte starts a TLS handshake; waits until `deadline` for it.
/// `None` if the client sent nothing by then, or left.
pub(crate) async fn starts_tls(stream: &TcpStream, deadline: Instant) -> Option<bool> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => Some(first[0] == HANDSHAKE),
        _ => None,
    }
}

/// Reads the ClientHello, until `deadline`: every byte read (for a passthrough, which replays
/// them), and the hello, parsed.
pub(crate) async fn read_hello(stream: &mut TcpStream, deadline: Instant) -> Result<(Vec<u8>, Accepted), Refused> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut acceptor = Acceptor::default();
    let mut raw = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return Err(Refused::Gone),
            Ok(Ok(n)) => n,
        };
        raw.extend_from_slice(&chunk[..n]);
        match feed_hello(&mut acceptor, &chunk[..n], raw.len()) {
            Ok(Some(accepted)) => return Ok((raw, accepted)),
            // A hello split over several reads: read on.
            Ok(None) => {}
            Err((why, alert)) => {
                if !alert.is_empty() {
                    let _ = tokio::time::timeout_at(deadline, stream.write_all(&alert)).await;
                }
                return Err(why);
            }
        }
    }
}

/// Hands `fresh`, the bytes of the latest read, to `acceptor`, `total` bytes having been read
/// in all: the hello once it is whole, or why it is refused with the alert to send (maybe
/// none). The I/O-free part of [`read_hello`], kept apart so it can be fuzzed.
pub(crate) fn feed_hello(
    acceptor: &mut Acceptor,
    mut fresh: &[u8],
    total: usize,
) -> Result<Option<Accepted>, (Refused, Vec<u8>)> {
    if total > MAX_HELLO {
        return Err((Refused::BadHello("ClientHello over 64 KiB".into()), Vec::new()));
    }
    while !fresh.is_empty() {
        match acceptor.read_tls(&mut fresh) {
            Ok(0) => return Err((Refused::BadHello("ClientHello does not fit".into()), Vec::new())),
            Ok(_) => {}
            Err(e) => return Err((Refused::BadHello(e.to_string()), Vec::new())),
        }
    }
    match acceptor.accept() {
        Ok(accepted) => Ok(accepted),
        Err((e, mut alert)) => {
            let mut bytes = Vec::new();
            let _ = alert.write_all(&mut bytes);
            Err((Refused::BadHello(e.to_string()), bytes))
        }
    }
}

/// Completes the handshake of an accepted hello with `config`, until `deadline`.
pub(crate) async fn handshake(
    stream: TcpStream,
    accepted: Accepted,
    config: Arc<ServerConfig>,
    deadline: Instant,
) -> io::Result<ClientStream> {
    let start = tokio_rustls::StartHandshake::from_parts(accepted, Socket(stream));
    match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(tls)) => Ok(ClientStream::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadHello(why) => write!(f, "not a valid TLS ClientHello: {why}"),
            Self::Gone => f.write_str("client left or was too slow before its ClientHello was complete"),
            Self::NoName => f.write_str("no server name (SNI) in the ClientHello"),
            Self::UnknownName(name) => {
                write!(f, "{name:?} is not a service this VPC reaches with a TLS listener on this port")
            }
            Self::NoCertificate(name) => write!(f, "no certificate for {name:?}"),
        }
    }
}

/// The TLS settings of every connection to a target (HTTPS target groups, HTTPS health
/// checks), made once: any certificate is accepted, as AWS does (targets' certificates are not
/// validated), but handshake signatures are still checked; ALPN offers HTTP/1.1. `None` if the
/// crypto provider offers no protocol version (it always does).
pub(crate) fn target_client_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .ok()?;
            let mut config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(config))
        })
        .clone()
}

/// As [`target_client_config`], offering `h2` by ALPN (HTTP2 and GRPC target groups).
pub(crate) fn target_h2_client_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut config = (*target_client_config()?).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            Some(Arc::new(config))
        })
        .clone()
}

/// Accepts any certificate; handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
