//! The transport to etcd: its v3 JSON gateway over HTTP/1.1 (TLS optional), a small pool of
//! connections per endpoint, failover to the next endpoint when one cannot be reached, and the
//! auth token (made from a user name and password, made again when etcd calls it invalid).
//!
//! Knows nothing of the store's semantics: callers send JSON bodies to gateway paths and get
//! JSON back, or a streaming body for watches.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{EtcdConfig, Scheme};
use crate::Error;

/// How long reaching one endpoint (TCP and TLS) may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one unary call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per endpoint.
const POOL: usize = 16;

type Sender = http1::SendRequest<Full<Bytes>>;

/// A connection to one of the cluster's endpoints.
pub(super) struct Client {
    endpoints: Vec<String>,
    tls: Option<TlsConnector>,
    /// The endpoint tried first: the last one that answered.
    preferred: AtomicUsize,
    idle: Vec<Mutex<Vec<Sender>>>,
    credentials: Option<(String, String)>,
    token: tokio::sync::Mutex<Option<String>>,
}

/// A failed call, before it is turned into a store error.
#[derive(Debug)]
pub(super) enum CallError {
    /// etcd answered with an error.
    Etcd { code: i64, message: String },
    /// The connection broke after the request was written (it may have been applied).
    Broken(String),
    /// No endpoint could be reached.
    Unreachable(String),
}

/// The error body etcd's gateway answers with.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    message: String,
    error: serde_json::Value,
    code: i64,
}

/// An open streaming response (a watch), with the endpoint it came from.
pub(super) struct Stream {
    pub(super) body: Incoming,
    pub(super) endpoint: usize,
    /// The auth token it was opened with.
    pub(super) token: Option<String>,
}

// === impl Client ===

impl Client {
    pub(super) fn new(config: &EtcdConfig) -> Result<Self, Error> {
        let tls = match config.scheme {
            Scheme::Http => {
                if config.ca_file.is_some() || config.cert_file.is_some() {
                    return Err(Error::Backend("TLS files are given for etcd://; use etcds:// for TLS".into()));
                }
                None
            }
            Scheme::Https => Some(tls_connector(config)?),
        };
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (None, None) => None,
            _ => return Err(Error::Backend("etcd auth needs both a user name and a password".into())),
        };
        Ok(Self {
            idle: config.endpoints.iter().map(|_| Mutex::new(Vec::new())).collect(),
            endpoints: config.endpoints.clone(),
            tls,
            preferred: AtomicUsize::new(0),
            credentials,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The endpoints, for messages.
    pub(super) fn describe(&self) -> String {
        self.endpoints.join(", ")
    }

    /// Posts `body` to `path` and parses the answer, authenticating (again) when needed.
    pub(super) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, CallError> {
        let body = Bytes::from(body.to_string());
        let token = self.token(None).await?;
        let answer = match self.post(path, body.clone(), token.as_deref()).await {
            Err(CallError::Etcd { message, .. }) if is_invalid_token(&message) && self.credentials.is_some() => {
                let token = self.token(token.as_deref()).await?;
                self.post(path, body, token.as_deref()).await?
            }
            other => other?,
        };
        serde_json::from_slice(&answer).map_err(|e| CallError::Broken(format!("unreadable answer from etcd: {e}")))
    }

    /// Posts to `path` on `endpoint` only, waiting at most `within` (the probe of a quiet
    /// watch).
    pub(super) async fn call_at<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: usize,
        path: &str,
        body: &serde_json::Value,
        within: Duration,
    ) -> Result<T, CallError> {
        let call = async {
            let token = self.token(None).await?;
            self.post_to(endpoint, path, Bytes::from(body.to_string()), token.as_deref()).await
        };
        let answer = tokio::time::timeout(within, call)
            .await
            .map_err(|_| CallError::Unreachable(format!("etcd at {} did not answer", self.endpoints[endpoint])))??;
        serde_json::from_slice(&answer).map_err(|e| CallError::Broken(format!("unreadable answer from etcd: {e}")))
    }

    /// Opens a streaming call (a watch) on a connection of its own, trying each endpoint.
    pub(super) async fn stream(&self, path: &str, body: &serde_json::Value) -> Result<Stream, CallError> {
        let body = Bytes::from(body.to_string());
        let mut token = self.token(None).await?;
        let mut reauthenticated = false;
        loop {
            let (mut last, mut retry) = (String::new(), false);
            for endpoint in self.order() {
                let sender = match self.connect(endpoint).await {
                    Ok(sender) => sender,
                    Err(e) => {
                        last = e;
                        continue;
                    }
                };
                let request = self.request(endpoint, path, body.clone(), token.as_deref())?;
                let response = match tokio::time::timeout(CALL_TIMEOUT, send(sender, request)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(e)) => {
                        last = e;
                        continue;
                    }
                    Err(_) => {
                        last = format!("{} did not answer", self.endpoints[endpoint]);
                        continue;
                    }
                };
                if response.status() == StatusCode::OK {
                    self.preferred.store(endpoint, Ordering::Relaxed);
                    return Ok(Stream { body: response.into_body(), endpoint, token });
                }
                let status = response.status();
                let bytes = collect(response.into_body()).await?;
                match etcd_error(status, &bytes) {
                    CallError::Etcd { message, .. }
                        if is_invalid_token(&message) && self.credentials.is_some() && !reauthenticated =>
                    {
                        token = self.token(token.as_deref()).await?;
                        (reauthenticated, retry) = (true, true);
                        break;
                    }
                    e => return Err(e),
                }
            }
            if !retry {
                return Err(CallError::Unreachable(format!("cannot reach etcd at {}: {last}", self.describe())));
            }
        }
    }

    /// Makes a new token if `stale` is still the current one (etcd refused it).
    pub(super) async fn renew_token(&self, stale: Option<&str>) -> Result<(), CallError> {
        self.token(stale).await.map(drop)
    }

    /// The current token, or a fresh one when `stale` is the current one (etcd refused it).
    async fn token(&self, stale: Option<&str>) -> Result<Option<String>, CallError> {
        let Some((name, password)) = &self.credentials else { return Ok(None) };
        let mut token = self.token.lock().await;
        if token.is_some() && token.as_deref() != stale {
            return Ok(token.clone());
        }
        #[derive(Deserialize)]
        struct Authenticated {
            token: String,
        }
        let body = serde_json::json!({ "name": name, "password": password });
        let answer = self.post("/v3/auth/authenticate", Bytes::from(body.to_string()), None).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(CallError::Etcd { message, .. }) if message.contains("authentication is not enabled") => {
                return Ok(None);
            }
            Err(CallError::Etcd { code, message }) if message.contains("authentication failed") => {
                return Err(CallError::Etcd {
                    code,
                    message: format!("authentication as {name:?} failed: wrong user name or password"),
                });
            }
            Err(e) => return Err(e),
        };
        let fresh: Authenticated = serde_json::from_slice(&answer)
            .map_err(|e| CallError::Broken(format!("unreadable authentication answer: {e}")))?;
        *token = Some(fresh.token.clone());
        Ok(Some(fresh.token))
    }

    /// One unary call, on the first endpoint that can be reached. A read is also tried on the
    /// next endpoint when its connection broke or the member has no leader (a member killed,
    /// an election): it changes nothing, so asking again cannot apply anything twice.
    async fn post(&self, path: &str, body: Bytes, token: Option<&str>) -> Result<Bytes, CallError> {
        let read = path == "/v3/kv/range";
        let attempt = async {
            let mut last = String::new();
            for endpoint in self.order() {
                match self.post_to(endpoint, path, body.clone(), token).await {
                    Err(CallError::Unreachable(e)) => last = e,
                    Err(CallError::Broken(e)) if read => last = e,
                    // gRPC's UNAVAILABLE: no leader, or the leader changed under the request.
                    Err(CallError::Etcd { code: 14, message }) if read => last = message,
                    other => {
                        self.preferred.store(endpoint, Ordering::Relaxed);
                        return other;
                    }
                }
            }
            Err(CallError::Unreachable(format!("cannot reach etcd at {}: {last}", self.describe())))
        };
        tokio::time::timeout(CALL_TIMEOUT, attempt).await.map_err(|_| {
            CallError::Unreachable(format!("etcd at {} did not answer within {CALL_TIMEOUT:?}", self.describe()))
        })?
    }

    /// One unary call on one endpoint: a pooled connection, else a new one. Only a failure to
    /// connect is a [`CallError::Transport`] that may be retried elsewhere; once a request is
    /// written, a broken connection is reported as is (the write may have been applied).
    async fn post_to(&self, endpoint: usize, path: &str, body: Bytes, token: Option<&str>) -> Result<Bytes, CallError> {
        let mut pooled = self.pooled(endpoint);
        let response = loop {
            let (sender, fresh) = match pooled.take() {
                Some(sender) => (sender, false),
                None => (self.connect(endpoint).await.map_err(CallError::Unreachable)?, true),
            };
            let request = self.request(endpoint, path, body.clone(), token)?;
            let mut sender = sender;
            if !fresh && sender.ready().await.is_err() {
                // Closed while idle (etcd restarted, say): nothing was sent.
                pooled = self.pooled(endpoint);
                continue;
            }
            match sender.send_request(request).await {
                Ok(response) => break (response, sender),
                // A pooled connection the server closed before the request went out: retry on
                // a fresh one (nothing was sent).
                Err(e) if !fresh && e.is_canceled() => pooled = self.pooled(endpoint),
                Err(e) => return Err(CallError::Broken(format!("connection to etcd broke: {e}"))),
            }
        };
        let (response, sender) = response;
        let status = response.status();
        let bytes = collect(response.into_body()).await?;
        self.release(endpoint, sender);
        if status == StatusCode::OK { Ok(bytes) } else { Err(etcd_error(status, &bytes)) }
    }

    fn request(
        &self,
        endpoint: usize,
        path: &str,
        body: Bytes,
        token: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        let mut request = Request::post(path)
            .header(hyper::header::HOST, &self.endpoints[endpoint])
            .header(hyper::header::CONTENT_TYPE, "application/json")
            // Watches are cancelled by a member that loses its leader, so that they move to
            // one that has it.
            .header("grpc-metadata-hasleader", "true");
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, token);
        }
        request.body(Full::new(body)).map_err(|e| CallError::Unreachable(format!("building a request: {e}")))
    }

    fn pooled(&self, endpoint: usize) -> Option<Sender> {
        let mut idle = self.idle[endpoint].lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn release(&self, endpoint: usize, sender: Sender) {
        let mut idle = self.idle[endpoint].lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL && !sender.is_closed() {
            idle.push(sender);
        }
    }

    /// Endpoint indexes, the preferred one first.
    fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(move |i| (first + i) % n)
    }

    async fn connect(&self, endpoint: usize) -> Result<Sender, String> {
        let address = &self.endpoints[endpoint];
        let connect = async {
            let tcp = TcpStream::connect(address.as_str()).await.map_err(|e| format!("{address}: {e}"))?;
            tcp.set_nodelay(true).map_err(|e| format!("{address}: {e}"))?;
            match &self.tls {
                None => handshake(tcp).await,
                Some(tls) => {
                    let host = address.rsplit_once(':').map_or(address.as_str(), |(host, _)| host);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{address}: {e}"))?;
                    let stream = tls.connect(name, tcp).await.map_err(|e| format!("{address}: TLS: {e}"))?;
                    handshake(stream).await
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("{address}: no connection within {CONNECT_TIMEOUT:?}"))?
    }
}

async fn handshake<T>(io: T) -> Result<Sender, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // Ends when the connection closes; an error then is the peer going away.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn send(mut sender: Sender, request: Request<Full<Bytes>>) -> Result<hyper::Response<Incoming>, String> {
    sender.send_request(request).await.map_err(|e| e.to_string())
}

async fn collect(body: Incoming) -> Result<Bytes, CallError> {
    body.collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| CallError::Broken(format!("connection to etcd broke: {e}")))
}

fn etcd_error(status: StatusCode, bytes: &[u8]) -> CallError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => {
            let message = match (body.message.is_empty(), &body.error) {
                (false, _) => body.message,
                (true, serde_json::Value::String(s)) => s.clone(),
                (true, other) => other.to_string(),
            };
            CallError::Etcd { code: body.code, message }
        }
        Err(_) => CallError::Etcd {
            code: -1,
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)])),
        },
    }
}

pub(super) fn is_invalid_token(message: &str) -> bool {
    message.contains("invalid auth token")
}

fn tls_connector(config: &EtcdConfig) -> Result<TlsConnector, Error> {
    let Some(ca_file) = &config.ca_file else {
        return Err(Error::Backend("etcds:// needs a CA file (store_ca_file) to verify etcd with".into()));
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca_file)? {
        roots.add(cert).map_err(|e| Error::Backend(format!("CA file {}: {e}", ca_file.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Backend(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let tls = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::Backend(format!("client key file {}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| Error::Backend(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(Error::Backend("a client certificate needs both store_cert_file and store_key_file".into())),
    };
    Ok(TlsConnector::from(Arc::new(tls)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Backend(format!("certificate file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Backend(format!("certificate file {} holds no certificate", path.display())));
    }
    Ok(certs)
}
