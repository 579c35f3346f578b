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
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
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
    for name in ["te", "content-type", "x-forwarded-proto", "x-amzn-lattice-network", "grpc-timeout"] {
        if let Some(v) = req.headers().get(name) {
            described.insert(HeaderName::from_bytes(format!("x-seen-{name}").as_bytes()).unwrap(), v.clone());
        }
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
    let tls = tls_to(ca_der, addr, name, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
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
    for (id, name, tg) in
        [("svc-1", "h1.zone.test", "tg-h1"), ("svc-2", "h2.zone.test", "tg-h2"), ("svc-3", "grpc.zone.test", "tg-grpc")]
    {
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
    certificates.zones.insert("zone.test".into(), identity(&ca, "*.zone.test"));
    proxy.certificates.send_replace(Arc::new(certificates));
    // Serving once a handshake for the zone works.
    for _ in 0..100 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.0.clone())).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("h1.zone.test").unwrap();
        if tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
