//! Test fixtures for the request path: snapshots built by hand, a proxy driven through
//! `listener::run` with a health table the test controls, fake targets that are real HTTP
//! servers on 127.0.0.1, and clients (hyper, and raw TCP for malformed input).

use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use trellis_model::iam::Identities;
use trellis_model::lattice::{HealthCheckConfig, ListenerProtocol};
use trellis_model::snapshot::{
    Action, ListenerView, Listeners, Reach, RuleView, ServiceView, Snapshot, TargetGroupView, TargetView, VpcView,
    WeightedTarget,
};
use trellis_model::tls::Certificates;
use trellis_net::Ports;

use crate::{Error, HealthStatus, HealthTable, InFlight, ProxyConfig, TargetHealth, TargetKey};

/// How long any single await in a test may take.
pub(crate) const T: Duration = Duration::from_secs(5);

/// A snapshot under construction: one VPC (`vpc-1`) with an ingress address, reaching services
/// through `sn-1`.
pub(crate) struct Fixture {
    pub(crate) snapshot: Snapshot,
    pub(crate) ingress: IpAddr,
}

/// The proxy under test.
pub(crate) struct Proxy {
    pub(crate) snapshots: watch::Sender<Arc<Snapshot>>,
    pub(crate) health: watch::Sender<Arc<HealthTable>>,
    pub(crate) certificates: watch::Sender<Arc<Certificates>>,
    pub(crate) identities: watch::Sender<Arc<Identities>>,
    pub(crate) in_flight: Arc<InFlight>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), Error>>,
}

/// A fake target: a real HTTP/1.1 server on 127.0.0.1 that says who it is and what it got.
pub(crate) struct FakeTarget {
    pub(crate) addr: SocketAddr,
    /// Requests it has received.
    pub(crate) hits: Arc<AtomicUsize>,
    /// Connections it has accepted.
    pub(crate) accepted: Arc<AtomicUsize>,
    /// Connections open now.
    pub(crate) open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// A body of `len` bytes sent in 64 KiB chunks; optionally it stops after `gate_after` bytes
/// until the gate opens (so a test can prove the other side sees bytes before the end).
pub(crate) struct Zeros {
    remaining: usize,
    sent: usize,
    gate_after: usize,
    gate: Option<oneshot::Receiver<()>>,
}

/// A fake target's gates: opened when `/count` has received 1 MiB; awaited by `/gated` after
/// its first MiB.
pub(crate) type Gates = (Option<oneshot::Sender<()>>, Option<oneshot::Receiver<()>>);

/// A hyper client for the proxy (keep-alive pool).
pub(crate) type TestClient = Client<HttpConnector, Full<Bytes>>;

static ZEROS: [u8; 64 * 1024] = [b'z'; 64 * 1024];
static NEXT_INGRESS: AtomicU32 = AtomicU32::new(1);

/// A loopback address no other test of this process uses.
pub(crate) fn next_ingress() -> IpAddr {
    let n = NEXT_INGRESS.fetch_add(1, Ordering::Relaxed);
    let third = (std::process::id() % 200) as u8 + 20;
    IpAddr::from([127, 88, third, (n % 250 + 1) as u8])
}

/// Settings for tests: no port offset, loopback mode, short timeouts.
pub(crate) fn config() -> ProxyConfig {
    ProxyConfig {
        ports: Ports::ROOT,
        response_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(2),
        max_connection_age: Duration::from_secs(600),
        max_connections: 10_000,
        max_header_bytes: 64 * 1024,
        max_headers: 100,
        deregistration_delay: Duration::from_secs(60),
        min_health_check_interval: Duration::from_secs(1),
        network: trellis_net::Network::Loopback,
    }
}

/// A service with one HTTP listener.
pub(crate) fn service(id: &str, host: &str, port: u16, default_action: Action) -> ServiceView {
    let listener = ListenerView {
        id: format!("listener-{id}").into(),
        protocol: ListenerProtocol::Http,
        port,
        rules: Vec::new(),
        default_action,
    };
    ServiceView {
        id: id.into(),
        arn: format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{id}").into(),
        dns_name: host.into(),
        custom_domain_name: None,
        certificate_arn: None,
        idle_timeout: Duration::from_secs(60),
        listeners: Listeners::from([(port, listener)]),
    }
}

/// A rule.
pub(crate) fn rule(priority: u32, matcher: trellis_model::lattice::HttpMatch, action: Action) -> RuleView {
    RuleView { id: format!("rule-{priority}"), priority, matcher, action }
}

/// Forward to these target groups with these weights.
pub(crate) fn forward(groups: &[(&str, u32)]) -> Action {
    Action::Forward(
        groups.iter().map(|(id, w)| WeightedTarget { target_group_id: (*id).to_owned(), weight: *w }).collect(),
    )
}

/// An IP target group whose targets are these addresses.
pub(crate) fn target_group(id: &str, targets: &[SocketAddr]) -> TargetGroupView {
    TargetGroupView {
        id: id.to_owned(),
        arn: format!("arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/{id}"),
        region: "us-east-1".into(),
        account: "000000000000".into(),
        target_type: "IP".into(),
        protocol: Some("HTTP".into()),
        protocol_version: Some("HTTP1".into()),
        vpc_id: Some("vpc-1".into()),
        health_check: HealthCheckConfig::default(),
        in_use: true,
        targets: targets.iter().map(|a| target(*a)).collect(),
    }
}

/// A registered target at `addr`.
pub(crate) fn target(addr: SocketAddr) -> TargetView {
    TargetView { id: addr.ip().to_string(), port: addr.port(), addr: Some(addr), draining_since_ms: None }
}

/// The health key of a target of a group.
pub(crate) fn key(tg: &str, addr: SocketAddr) -> TargetKey {
    TargetKey { target_group_id: tg.to_owned(), target_id: addr.ip().to_string(), port: addr.port() }
}

/// A health table.
pub(crate) fn health(entries: &[(TargetKey, HealthStatus)]) -> HealthTable {
    HealthTable {
        targets: entries.iter().map(|(k, s)| (k.clone(), TargetHealth { status: *s, reason: None })).collect(),
    }
}

/// One service `one.example` on port 18080 forwarding to `tg-a` (target `a`).
pub(crate) async fn one_service(config: ProxyConfig) -> (Proxy, Fixture, SocketAddr, FakeTarget) {
    let ip = next_ingress();
    let a = FakeTarget::start("a").await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-a", 1)])));
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config, f.build(), addr).await;
    (proxy, f, addr, a)
}

pub(crate) fn target_of(body: &str) -> &str {
    body.lines().next().and_then(|l| l.strip_prefix("target=")).unwrap_or(body)
}

/// The value of `name` in a fake target's header dump.
pub(crate) fn seen<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines().filter_map(|l| l.strip_prefix(name)?.strip_prefix(": ")).collect()
}

// === impl Fixture ===

impl Fixture {
    /// One VPC (`vpc-1`) entering at `ingress`.
    pub(crate) fn new(ingress: IpAddr) -> Self {
        let mut f = Self { snapshot: Snapshot { revision: 1, ..Snapshot::default() }, ingress };
        f.add_vpc("vpc-1", Some(ingress), &[]);
        f
    }

    /// Adds a VPC reaching these services through `sn-1`.
    pub(crate) fn add_vpc(&mut self, id: &str, ingress: Option<IpAddr>, reach: &[&str]) {
        let reach = reach.iter().map(|s| ((*s).into(), sn_reach())).collect();
        let vpc = VpcView {
            peers: Vec::new(),
            vpc_id: id.to_owned(),
            vpc_arn: format!("arn:aws:ec2:us-east-1:000000000000:vpc/{id}"),
            region: "us-east-1".into(),
            account: "000000000000".into(),
            ingress,
            reach,
        };
        self.snapshot.vpcs.insert(id.to_owned(), vpc);
    }

    /// Adds a service reachable from `vpc-1`.
    pub(crate) fn add_service(&mut self, s: ServiceView) {
        self.snapshot.hosts.insert(s.dns_name.clone(), s.id.clone());
        if let Some(custom) = &s.custom_domain_name {
            self.snapshot.hosts.insert(custom.clone(), s.id.clone());
        }
        if let Some(vpc) = self.snapshot.vpcs.get_mut("vpc-1") {
            vpc.reach.insert(s.id.clone(), sn_reach());
        }
        self.snapshot.services.insert(s.id.clone(), Arc::new(s));
    }

    /// Adds a target group.
    pub(crate) fn add_group(&mut self, tg: TargetGroupView) {
        self.snapshot.target_groups.insert(tg.id.clone(), Arc::new(tg));
    }

    /// The snapshot, as the proxy gets it (revision bumped).
    pub(crate) fn build(&mut self) -> Arc<Snapshot> {
        self.snapshot.revision += 1;
        Arc::new(self.snapshot.clone())
    }
}

fn sn_reach() -> Reach {
    Reach {
        service_network_id: "sn-1".into(),
        service_network_arn: "arn:aws:vpc-lattice:us-east-1:000000000000:servicenetwork/sn-1".into(),
        private_dns: true,
    }
}

// === impl Proxy ===

impl Proxy {
    /// Runs `listener::run` on `snapshot` with `config`; returns once `ready` accepts.
    pub(crate) async fn start(config: ProxyConfig, snapshot: Arc<Snapshot>, ready: SocketAddr) -> Self {
        let (snapshots, snapshots_rx) = watch::channel(snapshot);
        let (health, health_rx) = watch::channel(Arc::new(HealthTable::default()));
        let (certificates, certificates_rx) = watch::channel(Arc::new(Certificates::default()));
        let (identities, identities_rx) = watch::channel(Arc::new(Identities::default()));
        let (stop, stop_rx) = watch::channel(false);
        let in_flight = Arc::new(InFlight::default());
        let inputs = crate::Inputs {
            shared_health: tokio::sync::watch::channel(Default::default()).1,
            snapshots: snapshots_rx,
            certificates: certificates_rx,
            identities: identities_rx,
            telemetry: crate::Telemetry::for_tests(),
        };
        let task = tokio::spawn(super::run(Arc::new(config), inputs, health_rx, in_flight.clone(), stop_rx));
        wait_listening(ready).await;
        Self { snapshots, health, certificates, identities, in_flight, stop, task }
    }

    /// Publishes a snapshot.
    pub(crate) fn set(&self, snapshot: Arc<Snapshot>) {
        self.snapshots.send_replace(snapshot);
    }

    /// Publishes a health table.
    pub(crate) fn set_health(&self, table: HealthTable) {
        self.health.send_replace(Arc::new(table));
    }

    /// Stops the proxy and waits for it.
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(T, self.task).await.expect("proxy stops").expect("no panic").expect("no error");
    }
}

/// Waits (bounded) until something accepts on `addr`.
pub(crate) async fn wait_listening(addr: SocketAddr) {
    for _ in 0..250 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on {addr}");
}

/// Waits (bounded) until nothing accepts on `addr`.
pub(crate) async fn wait_closed(addr: SocketAddr) {
    for _ in 0..250 {
        if TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} still accepts");
}

// === impl FakeTarget ===

impl FakeTarget {
    /// Starts a target named `name` on 127.0.0.1.
    ///
    /// It answers `GET /slow?ms=N` after N ms; `POST /echo` with the body it got (streamed);
    /// `GET /big?n=N` with N bytes; `POST /count` with how many body bytes it got (opening
    /// `gate.0` once it has 1 MiB); `GET /gated?n=N` with N bytes of which all but the first MiB
    /// wait for `gate.1`; anything else with its name, the method, the path and every
    /// header it got, one per line. Every response has `x-target: <name>`.
    pub(crate) async fn start(name: &'static str) -> Self {
        Self::start_with_gates(name, (None, None)).await
    }

    /// As [`FakeTarget::start`], with the gates of `/count` and `/gated`.
    pub(crate) async fn start_with_gates(name: &'static str, gate: Gates) -> Self {
        Self::serve(name, gate, None).await
    }

    /// As [`FakeTarget::start`], closing connections idle for `idle`.
    pub(crate) async fn start_closing_idle(name: &'static str, idle: Duration) -> Self {
        Self::serve(name, (None, None), Some(idle)).await
    }

    async fn serve(name: &'static str, gate: Gates, idle: Option<Duration>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hits, accepted, open): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let (counter, accepted2, open2) = (Arc::clone(&hits), accepted.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                accepted2.fetch_add(1, Ordering::SeqCst);
                open2.fetch_add(1, Ordering::SeqCst);
                let (counter, gate, open) = (Arc::clone(&counter), gate.clone(), open2.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        respond(name, req, gate.clone())
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    // Room for a request at the proxy's field limit plus the headers it adds.
                    builder.max_headers(200);
                    if let Some(idle) = idle {
                        // hyper's header timeout also runs between requests: an idle timeout.
                        builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle);
                    }
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, hits, accepted, open, task }
    }
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type TargetBody = http_body_util::Either<Full<Bytes>, http_body_util::Either<Incoming, Zeros>>;

async fn respond(
    name: &'static str,
    req: Request<Incoming>,
    gate: Arc<std::sync::Mutex<Gates>>,
) -> Result<Response<TargetBody>, hyper::Error> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let number = query.split('=').nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let body = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/slow") => {
            tokio::time::sleep(Duration::from_millis(number)).await;
            http_body_util::Either::Left(Full::new(Bytes::from(name)))
        }
        ("GET", "/tiny") => http_body_util::Either::Left(Full::new(Bytes::from_static(b"hello, world\n"))),
        ("POST", "/echo") => http_body_util::Either::Right(http_body_util::Either::Left(req.into_body())),
        ("GET", "/big") => http_body_util::Either::Right(http_body_util::Either::Right(Zeros::new(number as usize))),
        ("GET", "/gated") => {
            let g = gate.lock().unwrap().1.take().expect("one gated download");
            http_body_util::Either::Right(http_body_util::Either::Right(Zeros::gated(number as usize, 1 << 20, g)))
        }
        ("POST", "/count") => {
            let mut body = req.into_body();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                total += frame?.data_ref().map_or(0, Bytes::len);
                if total >= 1 << 20
                    && let Some(g) = gate.lock().unwrap().0.take()
                {
                    let _ = g.send(());
                }
            }
            http_body_util::Either::Left(Full::new(Bytes::from(format!("received={total}"))))
        }
        _ => {
            let mut text = format!("target={name}\nmethod={}\npath={}\n", req.method(), req.uri());
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            http_body_util::Either::Left(Full::new(Bytes::from(text)))
        }
    };
    let mut response = Response::new(body);
    response.headers_mut().insert("x-target", http::HeaderValue::from_static(name));
    Ok(response)
}

// === impl Zeros ===

impl Zeros {
    /// `len` bytes, no gate.
    pub(crate) fn new(len: usize) -> Self {
        Self { remaining: len, sent: 0, gate_after: usize::MAX, gate: None }
    }

    /// `len` bytes; after `after` bytes it waits for `gate`.
    pub(crate) fn gated(len: usize, after: usize, gate: oneshot::Receiver<()>) -> Self {
        Self { remaining: len, sent: 0, gate_after: after, gate: Some(gate) }
    }
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent >= self.gate_after
            && let Some(gate) = self.gate.as_mut()
        {
            let _ = std::task::ready!(Pin::new(gate).poll(cx));
            self.gate = None;
        }
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(ZEROS.len());
        self.remaining -= n;
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining as u64)
    }
}

// === clients ===

/// A keep-alive client.
pub(crate) fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// `method path` to the proxy at `addr` with `Host: host` and extra headers; returns the
/// status, the response headers and the body as text.
pub(crate) async fn send(
    client: &TestClient,
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(format!("http://{addr}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(T, client.request(req)).await.expect("answer in time").expect("answer");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(T, body.collect()).await.expect("body in time").expect("body").to_bytes();
    (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// `GET path` with `Host: host`; the status and body.
pub(crate) async fn get(client: &TestClient, addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let (status, _, body) = send(client, addr, host, "GET", path, &[]).await;
    (status, body)
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes it (bounded); returns
/// what came back.
pub(crate) async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_until_closed(&mut stream).await
}

/// Reads until the peer closes (or resets) the connection, at most [`T`]; panics if it does not.
pub(crate) async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = tokio::time::timeout(T, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection not closed; got {:?}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}
