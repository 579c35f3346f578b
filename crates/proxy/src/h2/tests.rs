//! HTTP/2 and gRPC through HTTPS listeners, on real sockets: hyper HTTP/2 clients over
//! tokio-rustls, HTTP/1.1 fake targets, and HTTP/2 targets (cleartext and TLS) that echo
//! bodies and trailers and stream.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use trellis_model::lattice::ListenerProtocol;
use trellis_model::snapshot::ListenerView;
use trellis_model::tls::{Certificates, Identity};

use crate::listener::testing::*;

const PORT: u16 = 18444;

/// A body made of the frames given, then the end.
struct Frames(VecDeque<Frame<Bytes>>);

/// A body fed through a channel (a stream that can be cancelled).
struct Channel(mpsc::Receiver<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

impl Body for Channel {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

type TargetBody = http_body_util::Either<Frames, Channel>;

/// What an HTTP/2 target saw and did.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    connections: AtomicUsize,
    cancelled: AtomicBool,
}

/// An HTTP/2 target (cleartext with prior knowledge, or TLS with ALPN h2). `POST /echo` answers
/// with the request's body, then trailers: `grpc-status: 0`, `x-body-frames` and every trailer
/// the request had. `GET /stream` sends a frame every 20 ms until its stream is reset (which it
/// records). Every response carries what the request looked like in `x-seen-*` fields.
async fn h2_target(tls: Option<Arc<rustls::ServerConfig>>) -> (SocketAddr, Arc<Seen>, JoinHandle<()>) {
    h2_target_with(tls, None).await
}

/// [`h2_target`] whose HPACK decoder allows the proxy a dynamic table of `table` bytes.
async fn h2_target_with(
    tls: Option<Arc<rustls::ServerConfig>>,
    table: Option<u32>,
) -> (SocketAddr, Arc<Seen>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            state.connections.fetch_add(1, Ordering::SeqCst);
            let (state, tls) = (state.clone(), tls.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| respond(req, state.clone()));
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder.header_table_size(table);
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(config) => {
                        let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await else { return };
                        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                    }
                }
            });
        }
    });
    (addr, seen, task)
}

async fn respond(req: Request<Incoming>, seen: Arc<Seen>) -> Result<Response<TargetBody>, hyper::Error> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let mut described = HeaderMap::new();
    let text = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("?"));
    described.insert("x-seen-version", text(format!("{:?}", req.version())));
    described.insert("x-seen-authority", text(req.uri().authority().map_or("-".into(), |a| a.to_string())));
    // The proxy puts its own in place of a target's; `trailer` is the connection's.
    described.insert("x-amzn-requestid", HeaderValue::from_static("the-target-s"));
    described.insert("trailer", HeaderValue::from_static("grpc-status"));
    for name in ["te", "content-type", "x-forwarded-proto", "x-amzn-lattice-network", "grpc-timeout"] {
        if let Some(v) = req.headers().get(name) {
            described.insert(HeaderName::from_bytes(format!("x-seen-{name}").as_bytes()).unwrap(), v.clone());
        }
    }
    if req.uri().path() == "/silent" {
        // An answer long after any response timeout.
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    if req.uri().path() == "/pkg.Svc/Missing" {
        // gRPC's trailers-only answer: one HEADERS frame that ends the stream.
        described.insert("content-type", HeaderValue::from_static("application/grpc"));
        described.insert("grpc-status", HeaderValue::from_static("5"));
        described.insert("grpc-message", HeaderValue::from_static("no such thing"));
        let mut response = Response::new(http_body_util::Either::Left(Frames(VecDeque::new())));
        *response.headers_mut() = described;
        return Ok(response);
    }
    let body = if req.uri().path() == "/stream" {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for i in 0..500 {
                if tx.send(Bytes::from(format!("tick {i}\n"))).await.is_err() {
                    seen.cancelled.store(true, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        http_body_util::Either::Right(Channel(rx))
    } else {
        let mut body = req.into_body();
        let mut frames = VecDeque::new();
        let mut trailers = HeaderMap::new();
        let mut count = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            match frame.into_data() {
                // An empty frame may carry only the end of the stream.
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    count += 1;
                    frames.push_back(Frame::data(data));
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers.extend(t);
                    }
                }
            }
        }
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("x-body-frames", HeaderValue::from(count));
        frames.push_back(Frame::trailers(trailers));
        http_body_util::Either::Left(Frames(frames))
    };
    let mut response = Response::new(body);
    *response.headers_mut() = described;
    Ok(response)
}

use http::header::HeaderName;

/// A certificate authority for the proxy's listener, and identities it issues.
fn pki() -> (Vec<u8>, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), rcgen::Issuer::new(params, key))
}

fn identity(ca: &(Vec<u8>, rcgen::Issuer<'static, rcgen::KeyPair>), name: &str) -> Arc<Identity> {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &ca.1).unwrap();
    Arc::new(Identity {
        serial: name.to_owned(),
        chain: vec![cert.der().to_vec(), ca.0.clone()],
        key: key.serialize_der(),
        not_after_ms: u64::MAX,
    })
}

fn server_config(id: &Identity, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = id.chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS client connection to the proxy offering `alpn`.
async fn tls_to(
    ca_der: &[u8],
    addr: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap()
}

type Sender = hyper::client::conn::http2::SendRequest<http_body_util::Either<Frames, Channel>>;

/// An HTTP/2 client connection to the proxy for `name`.
async fn h2_client(ca_der: &[u8], addr: SocketAddr, name: &str) -> Sender {
    h2_client_with(ca_der, addr, name, None).await
}

/// [`h2_client`] whose HPACK decoder allows the proxy a dynamic table of `table` bytes.
async fn h2_client_with(ca_der: &[u8], addr: SocketAddr, name: &str, table: Option<u32>) -> Sender {
    let tls = tls_to(ca_der, addr, name, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .header_table_size(table)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn request(method: &str, name: &str, path: &str, body: TargetBody) -> Request<TargetBody> {
    Request::builder().method(method).uri(format!("https://{name}{path}")).body(body).unwrap()
}

fn frames(data: &[&'static str], trailers: Option<(&'static str, &'static str)>) -> TargetBody {
    let mut f: VecDeque<Frame<Bytes>> = data.iter().map(|d| Frame::data(Bytes::from_static(d.as_bytes()))).collect();
    if let Some((k, v)) = trailers {
        let mut t = HeaderMap::new();
        t.insert(k, HeaderValue::from_static(v));
        f.push_back(Frame::trailers(t));
    }
    http_body_util::Either::Left(Frames(f))
}

struct Setup {
    proxy: Proxy,
    addr: SocketAddr,
    ca: Vec<u8>,
    _keep: Vec<JoinHandle<()>>,
    targets: Vec<FakeTarget>,
}

/// Starts a proxy with `f`'s groups and an HTTPS listener on [`PORT`] for each `(service id,
/// name, target group)`, with certificates for `*.zone.test` from `ca`; returns once a handshake
/// for the zone works.
async fn start_https(
    mut f: Fixture,
    ip: std::net::IpAddr,
    services: &[(&str, &str, &str)],
    ca: &(Vec<u8>, rcgen::Issuer<'static, rcgen::KeyPair>),
) -> (Proxy, SocketAddr) {
    for &(id, name, tg) in services {
        let mut s = service(id, name, PORT, forward(&[(tg, 1)]));
        s.listeners = [(
            PORT,
            ListenerView {
                id: format!("listener-{id}").into(),
                protocol: ListenerProtocol::Https,
                port: PORT,
                rules: Vec::new(),
                default_action: forward(&[(tg, 1)]),
            },
        )]
        .into();
        f.add_service(s);
    }
    let addr = SocketAddr::new(ip, PORT);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let mut certificates = Certificates::default();
    certificates.zones.insert("zone.test".into(), identity(ca, "*.zone.test"));
    proxy.certificates.send_replace(Arc::new(certificates));
    // Serving once a handshake for the zone works.
    let name = services.first().map_or("h1.zone.test", |s| s.1);
    for _ in 0..100 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.0.clone())).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        if tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (proxy, addr)
}

/// A proxy with HTTPS services on [`PORT`]: `h1.zone.test` → an HTTP/1.1 target,
/// `h2.zone.test` → an HTTP2 group (cleartext target), `grpc.zone.test` → a GRPC group (TLS
/// target), and the `Seen` of the two HTTP/2 targets.
async fn setup() -> (Setup, Arc<Seen>, Arc<Seen>) {
    let ca = pki();
    let ip = next_ingress();
    let h1 = FakeTarget::start("h1").await;
    let (h2c, h2c_seen, t1) = h2_target(None).await;
    let target_id = identity(&ca, "grpc.internal");
    let (h2s, h2s_seen, t2) = h2_target(Some(server_config(&target_id, &[b"h2"]))).await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-h1", &[h1.addr]));
    let mut g = target_group("tg-h2", &[h2c]);
    g.protocol_version = Some("HTTP2".into());
    f.add_group(g);
    let mut g = target_group("tg-grpc", &[h2s]);
    g.protocol = Some("HTTPS".into());
    g.protocol_version = Some("GRPC".into());
    f.add_group(g);
    let services = [
        ("svc-1", "h1.zone.test", "tg-h1"),
        ("svc-2", "h2.zone.test", "tg-h2"),
        ("svc-3", "grpc.zone.test", "tg-grpc"),
    ];
    let (proxy, addr) = start_https(f, ip, &services, &ca).await;
    let setup = Setup { proxy, addr, ca: ca.0, _keep: vec![t1, t2], targets: vec![h1] };
    (setup, h2c_seen, h2s_seen)
}

#[tokio::test]
async fn http2_clients_reach_http1_targets_many_streams_on_one_connection() {
    let (s, _, _) = setup().await;
    let sender = h2_client(&s.ca, s.addr, "h1.zone.test").await;
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            let path = format!("/item/{i}");
            let response = sender.send_request(request("GET", "h1.zone.test", &path, frames(&[], None))).await.unwrap();
            assert_eq!(response.version(), http::Version::HTTP_2);
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned(), path)
        }));
    }
    for stream in streams {
        let (status, body, path) = stream.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(target_of(&body), "h1");
        assert!(body.contains(&format!("path={path}")), "{body}");
        assert_eq!(seen(&body, "x-forwarded-proto"), ["https"]);
        assert_eq!(seen(&body, "host"), ["h1.zone.test"]);
        assert_eq!(
            seen(&body, "x-amzn-lattice-network"),
            ["SourceVpcArn=arn:aws:ec2:us-east-1:000000000000:vpc/vpc-1"]
        );
    }
    // One after another, the requests share one kept-alive connection to the target.
    let mut sender = sender.clone();
    let before = s.targets[0].accepted.load(Ordering::SeqCst);
    for _ in 0..10 {
        let response = sender.send_request(request("GET", "h1.zone.test", "/", frames(&[], None))).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    let opened = s.targets[0].accepted.load(Ordering::SeqCst) - before;
    assert!(opened <= 1, "{opened} new connections for 10 sequential requests");
    // A body goes down to HTTP/1.1 too.
    let response = sender
        .send_request(request("POST", "h1.zone.test", "/echo", frames(&["hello, ", "world"], None)))
        .await
        .unwrap();
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "hello, world");
    s.proxy.stop().await;
}

#[tokio::test]
async fn http2_targets_get_http2_with_bodies_and_trailers_both_ways() {
    let (s, h2c_seen, _) = setup().await;
    let mut sender = h2_client(&s.ca, s.addr, "h2.zone.test").await;
    for _ in 0..3 {
        let body = frames(&["one", "two", "three"], Some(("x-client-trailer", "yes")));
        let response = sender.send_request(request("POST", "h2.zone.test", "/echo", body)).await.unwrap();
        assert_eq!(response.status(), 200);
        let h = response.headers().clone();
        assert_eq!(h["x-seen-version"], "HTTP/2.0");
        assert_eq!(h["x-seen-authority"], "h2.zone.test");
        assert_eq!(h["x-seen-x-forwarded-proto"], "https");
        let ids: Vec<_> = h.get_all("x-amzn-requestid").iter().collect();
        assert!(ids.len() == 1 && ids[0] != "the-target-s" && ids[0].len() == 36, "{ids:?}");
        assert!(!h.contains_key("trailer"), "{h:?}");
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(collected.to_bytes(), "onetwothree");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-client-trailer"], "yes", "the client's trailers reached the target");
    }
    // One connection to the target, multiplexed.
    assert_eq!(h2c_seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(h2c_seen.requests.load(Ordering::SeqCst), 3);
    s.proxy.stop().await;
}

/// An HTTP/2 target that does not answer within the response timeout (5 s here): that
/// stream gets a 504, no sooner, while the connection's other streams are answered.
#[tokio::test]
async fn an_http2_target_silent_past_the_response_timeout_gets_its_stream_a_504() {
    let (s, _, _) = setup().await;
    let sender = h2_client(&s.ca, s.addr, "h2.zone.test").await;
    let started = std::time::Instant::now();
    let silent = {
        let mut sender = sender.clone();
        tokio::spawn(async move {
            let response = sender.send_request(request("GET", "h2.zone.test", "/silent", frames(&[], None))).await;
            (response.map(|r| r.status().as_u16()), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let mut sender = sender.clone();
        let response =
            sender.send_request(request("POST", "h2.zone.test", "/echo", frames(&["x"], None))).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "x");
    }
    let (status, took) = tokio::time::timeout(Duration::from_secs(30), silent).await.unwrap().unwrap();
    assert_eq!(status.unwrap(), 504);
    assert!(took >= Duration::from_millis(4_900), "{took:?}");
    s.proxy.stop().await;
}

#[tokio::test]
async fn heads_both_ways_decode_whatever_header_table_the_peers_allow() {
    // hyper's decoder (the h2 crate's) refuses an index its table does not have and a size
    // update over its limit: with a peer that allows no table, a small one, the default, or
    // more than the proxy keeps, every request and response of a connection must still read
    // back as sent, the repeated ones (indexed where the table allows) as the first.
    for table in [Some(0), Some(200), None, Some(100_000)] {
        let ca = pki();
        let ip = next_ingress();
        let (h2c, seen, task) = h2_target_with(None, table).await;
        let mut f = Fixture::new(ip);
        let mut g = target_group("tg-h2", &[h2c]);
        g.protocol_version = Some("HTTP2".into());
        f.add_group(g);
        let (proxy, addr) = start_https(f, ip, &[("svc-2", "h2.zone.test", "tg-h2")], &ca).await;
        let mut sender = h2_client_with(&ca.0, addr, "h2.zone.test", table).await;
        for i in 0..6 {
            let mut req = request("POST", "h2.zone.test", &format!("/echo?{i}"), frames(&["body"], None));
            req.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
            req.headers_mut().insert("te", HeaderValue::from_static("trailers"));
            req.headers_mut().insert("grpc-timeout", HeaderValue::from(i + 1));
            let response = sender.send_request(req).await.unwrap_or_else(|e| panic!("table {table:?}, {i}: {e}"));
            assert_eq!(response.status(), 200);
            let h = response.headers().clone();
            assert_eq!(h["x-seen-authority"], "h2.zone.test", "table {table:?}, {i}");
            assert_eq!(h["x-seen-content-type"], "application/grpc");
            assert_eq!(h["x-seen-te"], "trailers");
            assert_eq!(h["x-seen-grpc-timeout"], (i + 1).to_string().as_str());
            assert_eq!(h["x-seen-x-forwarded-proto"], "https");
            assert_eq!(h["x-seen-x-amzn-lattice-network"], "SourceVpcArn=arn:aws:ec2:us-east-1:000000000000:vpc/vpc-1");
            let collected = response.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
            assert_eq!(collected.to_bytes(), "body");
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "table {table:?}");
        proxy.stop().await;
        task.abort();
    }
}

fn grpc_request(path: &str, body: TargetBody) -> Request<TargetBody> {
    let mut req = request("POST", "grpc.zone.test", path, body);
    let h = req.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("te", HeaderValue::from_static("trailers"));
    h.insert("grpc-timeout", HeaderValue::from_static("5S"));
    req
}

#[tokio::test]
async fn grpc_unary_client_streaming_and_server_streaming_over_tls_to_the_target() {
    let (s, _, grpc_seen) = setup().await;
    let mut sender = h2_client(&s.ca, s.addr, "grpc.zone.test").await;
    // Unary.
    let response =
        sender.send_request(grpc_request("/pkg.Svc/Unary", frames(&["\0\0\0\0\x02hi"], None))).await.unwrap();
    let h = response.headers().clone();
    assert_eq!(h["x-seen-te"], "trailers");
    assert_eq!(h["x-seen-content-type"], "application/grpc");
    assert_eq!(h["x-seen-grpc-timeout"], "5S");
    assert_eq!(h["x-seen-version"], "HTTP/2.0");
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
    // A trailers-only answer (an error): its fields reach the client in the head that ends
    // the stream, with the proxy's request id.
    let response =
        sender.send_request(grpc_request("/pkg.Svc/Missing", frames(&["\0\0\0\0\x02hi"], None))).await.unwrap();
    let h = response.headers().clone();
    assert_eq!((h["grpc-status"].as_bytes(), h["grpc-message"].as_bytes()), (&b"5"[..], &b"no such thing"[..]));
    assert_eq!(h.get_all("x-amzn-requestid").iter().count(), 1, "{h:?}");
    assert!(response.body().is_end_stream(), "the head ended the stream");
    let collected = response.into_body().collect().await.unwrap();
    assert!(collected.trailers().is_none());
    assert!(collected.to_bytes().is_empty());
    // Client streaming: five messages in five frames.
    let (tx, rx) = mpsc::channel(1);
    let call = tokio::spawn({
        let mut sender = sender.clone();
        async move { sender.send_request(grpc_request("/pkg.Svc/Upload", http_body_util::Either::Right(Channel(rx)))).await }
    });
    for i in 0..5u8 {
        tx.send(Bytes::from(vec![0, 0, 0, 0, 1, b'a' + i])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(tx);
    let response = call.await.unwrap().unwrap();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(collected.to_bytes().len(), 30);
    assert_eq!(trailers["x-body-frames"], "5");
    // Server streaming, then the client cancels: the target's stream is reset.
    let response = sender.send_request(grpc_request("/stream", frames(&[], None))).await.unwrap();
    let mut body = response.into_body();
    for _ in 0..3 {
        let frame = tokio::time::timeout(T, body.frame()).await.expect("a tick in time").unwrap().unwrap();
        assert!(frame.data_ref().is_some_and(|d| d.starts_with(b"tick ")));
    }
    drop(body);
    let mut cancelled = false;
    for _ in 0..100 {
        if grpc_seen.cancelled.load(Ordering::SeqCst) {
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cancelled, "the client's cancellation reached the target");
    s.proxy.stop().await;
}

#[tokio::test]
async fn the_protocol_matrix_refuses_what_cannot_cross() {
    let (s, _, _) = setup().await;
    let mut sender = h2_client(&s.ca, s.addr, "h1.zone.test").await;
    // gRPC for an HTTP1 group.
    let mut req = request("POST", "h1.zone.test", "/pkg.Svc/M", frames(&[], None));
    req.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc+proto"));
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().contains_key("x-amzn-requestid"));
    // Not a POST for a GRPC group.
    let response = sender.send_request(request("GET", "grpc.zone.test", "/", frames(&[], None))).await.unwrap();
    assert_eq!(response.status(), 400);
    // HTTP/1.1 (over TLS) for an HTTP2 group.
    let mut tls = tls_to(&s.ca, s.addr, "h2.zone.test", &[b"http/1.1"]).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET / HTTP/1.1\r\nhost: h2.zone.test\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, tls.read_to_end(&mut out)).await.expect("answered");
    assert!(out.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&out));
    // An unknown name on an HTTP/2 connection (the certificate covers it): 404.
    let response = sender.send_request(request("GET", "nobody.zone.test", "/", frames(&[], None))).await.unwrap();
    assert_eq!(response.status(), 404);
    s.proxy.stop().await;
}

/// An HTTP/1.1 target (over TLS with `tls`) that answers by path with responses written byte
/// for byte: `/length`, `/chunked` (two chunks and a trailer), `/close` (no length: the body
/// ends with the connection), `/interim` (a 103 before the 200), `/garbage` (not HTTP), `/slow`
/// (never answers), `/vanish` (closes without answering), `/upgrade` (a 101), `/short` (half
/// its announced body, then the close), `/huge` (a head of 70 KiB); anything else 204. It keeps every request head it read (`heads`) and counts
/// the connections it accepted.
async fn scripted_target(
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (h, a) = (heads.clone(), accepted.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            a.fetch_add(1, Ordering::SeqCst);
            let heads = h.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(config) => {
                        if let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                            scripted_connection(stream, heads).await;
                        }
                    }
                    None => scripted_connection(tcp, heads).await,
                }
            });
        }
    });
    (addr, heads, accepted, task)
}

/// One connection of [`scripted_target`].
async fn scripted_connection(
    mut tcp: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let is_head = head.starts_with("HEAD ");
        heads.lock().unwrap().push(head);
        let answer: &[u8] = match path.as_str() {
            // Names in any case, a field of the connection, a request id of the target's own.
            "/length" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-From: target\r\nKeep-Alive: timeout=5\r\n\
                  X-Amzn-RequestId: the-target-s\r\n\r\nhello"
            }
            "/chunked" => {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n\
                  5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n"
            }
            "/close" => b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
            "/interim" => {
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            }
            "/garbage" => b"SPDY/9 what\r\n\r\n",
            // Gone without a word, like a process killed mid-request.
            "/vanish" => return,
            "/upgrade" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            // Half the body it announces, then the end of the connection.
            "/short" => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
            "/huge" => {
                let filler = format!("x-filler: {}\r\n", "f".repeat(1000)).repeat(70);
                let _ = tcp.write_all(format!("HTTP/1.1 200 OK\r\n{filler}\r\n").as_bytes()).await;
                return;
            }
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            _ => b"HTTP/1.1 204 No Content\r\n\r\n",
        };
        // A HEAD's answer is the head alone.
        let answer = match is_head {
            true => &answer[..answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |i| i + 4)],
            false => answer,
        };
        let last = matches!(path.as_str(), "/close" | "/garbage" | "/upgrade" | "/short");
        if tcp.write_all(answer).await.is_err() || tcp.flush().await.is_err() || last {
            let _ = tcp.shutdown().await;
            return;
        }
    }
}

#[tokio::test]
async fn bodiless_requests_to_http1_targets_are_written_and_read_by_the_proxy() {
    let ca = pki();
    let ip = next_ingress();
    let (target, heads, accepted, task) = scripted_target(None).await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-s", &[target]));
    let (proxy, addr) = start_https(f, ip, &[("svc-1", "s.zone.test", "tg-s")], &ca).await;
    let mut sender = h2_client(&ca.0, addr, "s.zone.test").await;
    let mut with_cookies = sender.clone();
    let mut get = async |method: &str, path: &str| {
        let response = sender.send_request(request(method, "s.zone.test", path, frames(&[], None))).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned());
        (parts, body.unwrap_or_else(|e| format!("body error: {e}")))
    };
    // A length, chunks (trailers are the connection's: dropped), a 103 skipped: one connection.
    let (parts, body) = get("GET", "/length").await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "hello"));
    // Lowercased (an HTTP/2 client refuses capitals), without the connection's fields, with the
    // proxy's request id alone.
    assert_eq!(parts.headers["x-from"], "target");
    assert_eq!(parts.headers["content-length"], "5");
    assert!(!parts.headers.contains_key("keep-alive"), "{:?}", parts.headers);
    let ids: Vec<_> = parts.headers.get_all("x-amzn-requestid").iter().collect();
    assert!(ids.len() == 1 && ids[0] != "the-target-s", "{ids:?}");
    let (parts, body) = get("GET", "/chunked").await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "hello, world"));
    let (parts, body) = get("GET", "/interim").await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "ok"));
    let (parts, body) = get("HEAD", "/length").await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, ""));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "kept alive across the responses");
    // A body that ends with the connection: whole, and the connection is not used again.
    let (parts, body) = get("GET", "/close").await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "until the end"));
    let (parts, _) = get("POST", "/empty").await;
    assert_eq!(parts.status.as_u16(), 204);
    // A 204 has no body even without a length: its connection is used again.
    let mut req = request("GET", "s.zone.test", "/length", frames(&[], None));
    for cookie in ["a=1", "b=2"] {
        req.headers_mut().append("cookie", HeaderValue::from_static(cookie));
    }
    req.headers_mut().insert("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
    let response = with_cookies.send_request(req).await.unwrap();
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "hello");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // What the target read: Host, the proxy's fields, a length for an empty POST.
    let seen = heads.lock().unwrap().clone();
    assert!(seen[0].starts_with("GET /length HTTP/1.1\r\nhost: s.zone.test\r\n"), "{}", seen[0]);
    for field in ["x-forwarded-proto: https\r\n", "x-amzn-lattice-target: ", "x-forwarded-for: ", "traceparent: 00-"] {
        assert!(seen[0].contains(field), "{field} in {}", seen[0]);
    }
    let post = seen.iter().find(|h| h.starts_with("POST /empty ")).expect("the POST arrived");
    assert!(post.contains("content-length: 0\r\n"), "{post}");
    // Cookies split over HTTP/2 fields arrive as one field.
    let last = seen.last().expect("the last GET arrived");
    assert!(last.contains("cookie: a=1; b=2\r\n"), "{last}");
    // The client's x-forwarded-for is extended with the client's address.
    assert!(last.contains("x-forwarded-for: 10.1.1.1, 127.0.0.1\r\n"), "{last}");
    // Not HTTP, an upgrade (which cannot cross to HTTP/2), a head over 64 KiB: 502.
    for path in ["/garbage", "/upgrade", "/huge"] {
        let (parts, body) = get("GET", path).await;
        assert_eq!(parts.status.as_u16(), 502, "{path}: {body}");
    }
    // A body cut short: the stream is reset, never ended as if whole.
    let short = with_cookies.send_request(request("GET", "s.zone.test", "/short", frames(&[], None))).await;
    let whole = match short {
        Ok(response) => response.into_body().collect().await.is_ok(),
        Err(_) => false,
    };
    assert!(!whole, "a body cut short ended cleanly");
    // No answer within the response timeout: 504.
    let (parts, _) = get("GET", "/slow").await;
    assert_eq!(parts.status.as_u16(), 504);
    task.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn bodiless_requests_reach_https_http1_targets_over_tls() {
    let ca = pki();
    let ip = next_ingress();
    let target_id = identity(&ca, "target.internal");
    let (target, heads, accepted, task) = scripted_target(Some(server_config(&target_id, &[b"http/1.1"]))).await;
    let mut f = Fixture::new(ip);
    let mut g = target_group("tg-tls", &[target]);
    g.protocol = Some("HTTPS".into());
    f.add_group(g);
    let (proxy, addr) = start_https(f, ip, &[("svc-1", "t.zone.test", "tg-tls")], &ca).await;
    let mut sender = h2_client(&ca.0, addr, "t.zone.test").await;
    for (path, want) in [("/length", "hello"), ("/chunked", "hello, world"), ("/length", "hello")] {
        let response = sender.send_request(request("GET", "t.zone.test", path, frames(&[], None))).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), want);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one kept-alive TLS connection");
    assert_eq!(heads.lock().unwrap().len(), 3);
    task.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn an_idempotent_request_whose_target_breaks_before_answering_goes_to_the_next() {
    let ca = pki();
    let ip = next_ingress();
    let (vanishing, _, accepted, task) = scripted_target(None).await;
    let answering = FakeTarget::start("answering").await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-2", &[vanishing, answering.addr]));
    let (proxy, addr) = start_https(f, ip, &[("svc-1", "v.zone.test", "tg-2")], &ca).await;
    let mut sender = h2_client(&ca.0, addr, "v.zone.test").await;
    // Round robin: one of the two starts with the target that breaks; both are answered.
    for _ in 0..2 {
        let response = sender.send_request(request("GET", "v.zone.test", "/vanish", frames(&[], None))).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(target_of(&String::from_utf8_lossy(&body)), "answering");
    }
    assert!(accepted.load(Ordering::SeqCst) >= 1, "the breaking target was tried");
    task.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn bodies_larger_than_every_window_cross_both_ways() {
    let (s, _, _) = setup().await;
    let mut sender = h2_client(&s.ca, s.addr, "h2.zone.test").await;
    // 6 MiB in 64 KiB frames: beyond the proxy's stream (1 MiB) and connection (4 MiB) windows,
    // and the target's; every byte comes back, in order.
    let chunks: Vec<Bytes> = (0..96u8).map(|i| Bytes::from(vec![i; 64 << 10])).collect();
    let (tx, rx) = mpsc::channel(4);
    let call = tokio::spawn({
        let mut sender = sender.clone();
        async move {
            sender
                .send_request(request("POST", "h2.zone.test", "/echo", http_body_util::Either::Right(Channel(rx))))
                .await
        }
    });
    for chunk in &chunks {
        tx.send(chunk.clone()).await.unwrap();
    }
    drop(tx);
    let response = tokio::time::timeout(T, call).await.expect("in time").unwrap().unwrap();
    let collected = tokio::time::timeout(T, response.into_body().collect()).await.expect("in time").unwrap();
    let body = collected.to_bytes();
    assert_eq!(body.len(), 96 * (64 << 10));
    assert!(body.chunks(64 << 10).enumerate().all(|(i, c)| c.iter().all(|&b| usize::from(b) == i)));
    // The connection serves on.
    let response = sender.send_request(request("POST", "h2.zone.test", "/echo", frames(&["x"], None))).await.unwrap();
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "x");
    s.proxy.stop().await;
}

/// What a raw HTTP/2 client reads: frames as text (`HEADERS 1 :status=200 end`, `RST_STREAM 1
/// 1`, ...) until `done` says so or the connection closes (`EOF`).
async fn read_frames(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    decoder: &mut crate::http2::hpack::Decoder,
    seen: &mut Vec<String>,
    done: impl Fn(&[String]) -> bool,
) {
    use crate::http2::frame::{self, Frame};
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    while !done(seen) {
        let mut chunk = [0u8; 16 << 10];
        let n = tokio::time::timeout(T, tls.read(&mut chunk)).await.expect("the proxy answers in time").unwrap_or(0);
        if n == 0 {
            seen.push("EOF".into());
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some((f, used)) = frame::parse(&buf, frame::MAX_MAX_FRAME_SIZE).unwrap() {
            let line = match f {
                Frame::Headers { stream, end_stream, block, .. } => {
                    let mut status = String::new();
                    decoder
                        .decode(block, |n, v, _| {
                            if n == b":status" {
                                status = String::from_utf8_lossy(v).into_owned();
                            }
                        })
                        .unwrap();
                    format!("HEADERS {stream} :status={status}{}", if end_stream { " end" } else { "" })
                }
                Frame::Data { stream, end_stream, .. } => {
                    format!("DATA {stream}{}", if end_stream { " end" } else { "" })
                }
                Frame::RstStream { stream, reason } => format!("RST_STREAM {stream} {}", reason.0),
                Frame::GoAway { reason, .. } => format!("GOAWAY {}", reason.0),
                Frame::Ping { ack: true, .. } => "PING ack".into(),
                _ => String::new(),
            };
            if !line.is_empty() {
                seen.push(line);
            }
            buf.drain(..used);
        }
    }
}

#[tokio::test]
async fn a_client_that_breaks_the_rules_loses_the_stream_or_the_connection() {
    use crate::http2::{conn::PREFACE, frame, hpack};
    use tokio::io::AsyncWriteExt;
    let (s, _, _) = setup().await;
    let mut tls = tls_to(&s.ca, s.addr, "h1.zone.test", &[b"h2"]).await;
    let block = |extra: &[(&str, &str)]| {
        let mut out = Vec::new();
        for (n, v) in [(":method", "GET"), (":scheme", "https"), (":authority", "h1.zone.test"), (":path", "/")]
            .iter()
            .chain(extra)
        {
            hpack::encode(&mut out, n.as_bytes(), v.as_bytes(), false);
        }
        out
    };
    let mut out = PREFACE.to_vec();
    frame::write_settings(&mut out, &[], false);
    // A malformed request (an uppercase name): that stream is reset.
    frame::write_headers(&mut out, 1, &block(&[("X-Upper", "1")]), true, 16_384);
    // A header list over the limit (64 KiB): answered 431.
    let big = "v".repeat(70_000);
    frame::write_headers(&mut out, 3, &block(&[("x-big", &big)]), true, 16_384);
    // A sound request after both is served.
    frame::write_headers(&mut out, 5, &block(&[]), true, 16_384);
    // A path HTTP/2 allows and the proxy does not take (a space in it): answered 400.
    let mut spaced = Vec::new();
    for (n, v) in [(":method", "GET"), (":scheme", "https"), (":authority", "h1.zone.test"), (":path", "/a b")] {
        hpack::encode(&mut spaced, n.as_bytes(), v.as_bytes(), false);
    }
    frame::write_headers(&mut out, 7, &spaced, true, 16_384);
    frame::write_ping(&mut out, *b"pingpong", false);
    tls.write_all(&out).await.unwrap();
    let mut decoder = hpack::Decoder::new(4096);
    let mut seen = Vec::new();
    let done = |s: &[String]| ["DATA 5 end", "HEADERS 7 :status=400 end"].iter().all(|l| s.iter().any(|x| x == l));
    read_frames(&mut tls, &mut decoder, &mut seen, done).await;
    assert!(seen.contains(&"RST_STREAM 1 1".to_string()), "{seen:?}");
    assert!(seen.contains(&"HEADERS 3 :status=431 end".to_string()), "{seen:?}");
    assert!(seen.contains(&"HEADERS 5 :status=200".to_string()), "{seen:?}");
    assert!(seen.contains(&"PING ack".to_string()), "{seen:?}");
    // DATA on stream 0 breaks the connection: GOAWAY, then the proxy closes it.
    let mut out = Vec::new();
    frame::write_data(&mut out, 0, b"x", false);
    tls.write_all(&out).await.unwrap();
    seen.clear();
    read_frames(&mut tls, &mut decoder, &mut seen, |s| s.last().is_some_and(|l| l == "EOF")).await;
    assert_eq!(seen, ["GOAWAY 1", "EOF"]);
    s.proxy.stop().await;
}

/// An HTTP/2 target on the proxy's own connection code, scripted by path: `/refuse` is
/// answered by a GOAWAY that takes no stream, on the first connection only; `/vanish` closes
/// the connection; `/reset` resets the stream; anything else is a 200 with the path as body,
/// after 20 ms. It allows one stream at a time, and counts the connections it accepted.
async fn scripted_h2_target() -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    use crate::http2::conn::{Config, Connection, Event, Role};
    use crate::http2::frame::Reason;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            let nth = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut conn = Connection::new(Role::Server, Config { max_concurrent_streams: 1, ..Config::default() });
                let mut buf = Vec::new();
                loop {
                    if tcp.write_all(&std::mem::take(conn.out())).await.is_err() {
                        return;
                    }
                    let mut chunk = [0u8; 16 << 10];
                    let n = match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut at = 0;
                    while let Ok((used, Some(event))) = conn.read(&buf[at..]) {
                        at += used;
                        let Event::Head { stream, head, .. } = event else { continue };
                        let path = String::from_utf8_lossy(head.path().unwrap_or_default()).into_owned();
                        match path.as_str() {
                            "/refuse" if nth == 0 => {
                                crate::http2::frame::write_goaway(conn.out(), 0, Reason::NO_ERROR, b"");
                            }
                            "/vanish" => return,
                            "/reset" => conn.reset(stream, Reason::INTERNAL_ERROR),
                            _ => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                conn.send_headers(stream, [(&b":status"[..], &b"200"[..], false)], false);
                                conn.send_data(stream, path.as_bytes(), true);
                            }
                        }
                    }
                    buf.drain(..at);
                }
            });
        }
    });
    (addr, accepted, task)
}

#[tokio::test]
async fn http2_targets_that_limit_refuse_or_break_streams() {
    let ca = pki();
    let ip = next_ingress();
    let (target, accepted, task) = scripted_h2_target().await;
    let mut f = Fixture::new(ip);
    let mut g = target_group("tg-s", &[target]);
    g.protocol_version = Some("HTTP2".into());
    f.add_group(g);
    let (proxy, addr) = start_https(f, ip, &[("svc-9", "h2s.zone.test", "tg-s")], &ca).await;
    let sender = h2_client(&ca.0, addr, "h2s.zone.test").await;
    let get = |path: &'static str| {
        let mut sender = sender.clone();
        async move {
            let response = sender.send_request(request("GET", "h2s.zone.test", path, frames(&[], None))).await.unwrap();
            let status = response.status().as_u16();
            (status, response.into_body().collect().await.unwrap().to_bytes())
        }
    };
    // A GOAWAY that took nothing: the request goes again, on a new connection.
    assert_eq!(get("/refuse").await, (200, Bytes::from("/refuse")));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // One stream at a time: the others wait for it, none fails.
    let calls: Vec<_> = (0..6).map(|_| tokio::spawn(get("/one"))).collect();
    for call in calls {
        assert_eq!(tokio::time::timeout(T, call).await.expect("in time").unwrap(), (200, Bytes::from("/one")));
    }
    // A reset stream, and a connection that goes: 502s, and the connection after serves.
    assert_eq!(get("/reset").await.0, 502);
    assert_eq!(get("/vanish").await.0, 502);
    assert_eq!(get("/after").await, (200, Bytes::from("/after")));
    proxy.stop().await;
    task.abort();
}

#[test]
fn connection_fields_are_recognised_by_name_and_nothing_else_is() {
    for name in super::HOP_BY_HOP {
        assert!(super::is_hop_by_hop(name.as_bytes()), "{name}");
    }
    for other in [&b""[..], b"t", b"tes", b"trailers", b"connectio", b"upgrade-insecure-requests", b"Connection"] {
        assert!(!super::is_hop_by_hop(other), "{}", String::from_utf8_lossy(other));
    }
    // A response's map loses them all, and keeps the rest (also when it has none of them).
    let mut map = HeaderMap::new();
    for (name, value) in [("content-type", "text/plain"), ("x-custom", "1"), ("x-custom", "2")] {
        map.append(name, HeaderValue::from_static(value));
    }
    let plain = map.clone();
    super::strip_hop_by_hop(&mut map);
    assert_eq!(map, plain);
    for name in super::HOP_BY_HOP {
        map.append(name, HeaderValue::from_static("x"));
    }
    map.append("connection", HeaderValue::from_static("y"));
    super::strip_hop_by_hop(&mut map);
    assert_eq!(map, plain);
}

#[test]
fn chunks_come_out_in_the_order_they_went_in() {
    // Pushes and pops interleaved every way up to six operations deep, against a VecDeque.
    for ops in 0u32..(1 << 12) {
        let mut chunks = super::Chunks::default();
        let mut model = VecDeque::new();
        let mut next = 0u8;
        for step in 0..12 {
            if ops >> step & 1 == 1 {
                let chunk = Bytes::from(vec![next; usize::from(next) + 1]);
                next += 1;
                chunks.push_back(chunk.clone());
                model.push_back(chunk);
            } else {
                assert_eq!(chunks.pop_front(), model.pop_front(), "ops {ops:b}, step {step}");
            }
            assert_eq!(chunks.is_empty(), model.is_empty());
        }
        let left: usize = model.iter().map(Bytes::len).sum();
        assert_eq!(chunks.clear(), left);
        assert!(chunks.is_empty() && chunks.pop_front().is_none());
    }
}

/// A connection's response deadlines: the earliest armed is when its timer wakes; one due
/// within the millisecond wakes the streams but has not passed; none passes early.
#[test]
fn response_deadlines_pass_no_sooner_than_they_are_due() {
    let base = tokio::time::Instant::now();
    let at = |micros: u64| base + Duration::from_micros(micros);
    let deadlines = super::Deadlines::new(base);
    assert_eq!(deadlines.next(), None);
    let (soon, late) = (deadlines.ms(at(10_500)), deadlines.ms(at(50_000)));
    assert_eq!((soon, late), (11, 50), "rounded up");
    for ms in [late, soon, late] {
        deadlines.arm(ms);
    }
    assert_eq!(deadlines.next(), Some(at(11_000)));
    assert!(!deadlines.expire(at(5_000)), "nothing due yet");
    assert!(!deadlines.passed(soon));
    assert!(deadlines.expire(at(10_600)), "due within the millisecond");
    assert!(!deadlines.passed(soon), "not passed before it is due");
    assert_eq!(deadlines.next(), None, "the streams arm theirs again");
    deadlines.arm(late);
    deadlines.arm(soon);
    assert!(deadlines.expire(at(11_000)));
    assert!(deadlines.passed(soon));
    assert!(!deadlines.passed(late));
    assert_eq!(deadlines.next(), None);
}
