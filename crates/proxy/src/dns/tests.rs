//! Socket tests of the DNS responder: `run` on real UDP and TCP sockets on 127.53.x.y addresses
//! (port 20053: a port offset of 20000, so no root is needed), queried with hickory-built
//! messages. Each test uses its own addresses so tests can run in parallel.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use trellis_model::snapshot::Snapshot;
use trellis_net::Ports;

use super::zone::tests::{A_NAME, B_NAME, service, vpc};
use crate::{Error, ProxyConfig};

const PORTS: Ports = Ports { low_port_offset: 20000 };
const WAIT: Duration = Duration::from_secs(5);

/// A VPC: its ID, its ingress address, and the services it reaches (ID, private DNS).
type VpcSpec<'a> = (&'a str, Option<Ipv4Addr>, &'a [(&'a str, bool)]);

/// A responder running on its own snapshot channel.
struct Running {
    snapshots: watch::Sender<Arc<Snapshot>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), Error>>,
}

/// What a query got.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    /// NOERROR with these A records' addresses (empty: NODATA).
    Addresses(Vec<Ipv4Addr>),
    /// An error code and no records.
    Code(ResponseCode),
}

fn config() -> Arc<ProxyConfig> {
    Arc::new(ProxyConfig {
        ports: PORTS,
        response_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(10),
        max_connection_age: Duration::from_secs(600),
        max_connections: 10_000,
        max_header_bytes: 64 * 1024,
        max_headers: 100,
        deregistration_delay: Duration::from_secs(60),
        min_health_check_interval: Duration::from_secs(5),
        network: trellis_net::Network::Loopback,
    })
}

fn ip(c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 53, c, d)
}

fn dns_addr(ip: Ipv4Addr) -> SocketAddr {
    PORTS.addr(IpAddr::V4(ip), 53)
}

/// Services alpha (custom name alpha.example.com) and beta (beta.example.com); `vpcs` gives each
/// VPC's ingress and what it reaches (service ID, private DNS).
fn snapshot(vpcs: &[VpcSpec<'_>]) -> Snapshot {
    let mut snapshot = Snapshot {
        revision: 1,
        vpcs: vpcs.iter().map(|&(id, ingress, reach)| vpc(id, ingress.map(IpAddr::V4), reach)).collect(),
        services: [
            service("svc-a", A_NAME, Some("alpha.example.com")),
            service("svc-b", B_NAME, Some("beta.example.com")),
        ]
        .into_iter()
        .collect(),
        ..Snapshot::default()
    };
    snapshot.hosts = trellis_model::snapshot::hosts(&snapshot.services);
    snapshot
}

fn start(snapshot: Snapshot) -> Running {
    let (snapshots, rx) = watch::channel(Arc::new(snapshot));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(super::run(config(), rx, stop_rx));
    Running { snapshots, stop, task }
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    let mut name = Name::from_ascii(name).unwrap();
    name.set_fqdn(true);
    message.add_query(Query::query(name, qtype));
    message
}

fn got(response: &Message) -> Got {
    match response.metadata.response_code {
        ResponseCode::NoError => Got::Addresses(
            response
                .answers
                .iter()
                .map(|r| match r.data {
                    RData::A(A(v4)) => v4,
                    ref other => panic!("unexpected record {other:?}"),
                })
                .collect(),
        ),
        code => {
            assert!(response.answers.is_empty(), "{response:?}");
            Got::Code(code)
        }
    }
}

/// Sends raw bytes over UDP; the reply, `None` if none came within 300 ms, or the error (a
/// closed port refuses: loopback reports it on the connected socket).
async fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(addr).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0; 4096];
    match timeout(Duration::from_millis(300), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Ok(Some(buf[..n].to_vec())),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

async fn udp(addr: SocketAddr, request: &Message) -> io::Result<Message> {
    let reply = udp_raw(addr, &request.to_vec().unwrap()).await?.ok_or(io::ErrorKind::TimedOut)?;
    let response = Message::from_vec(&reply).unwrap();
    assert_eq!((response.metadata.id, &response.queries), (request.metadata.id, &request.queries));
    Ok(response)
}

async fn udp_ask(addr: SocketAddr, name: &str, qtype: RecordType) -> io::Result<Got> {
    Ok(got(&udp(addr, &query(name, qtype)).await?))
}

/// Sends every request on one TCP connection, then reads every response.
async fn tcp(addr: SocketAddr, requests: &[Message]) -> io::Result<Vec<Message>> {
    let mut stream = timeout(WAIT, TcpStream::connect(addr)).await??;
    for request in requests {
        let bytes = request.to_vec().unwrap();
        stream.write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes()).await?;
        stream.write_all(&bytes).await?;
    }
    let mut responses = Vec::new();
    for _ in requests {
        let mut len = [0; 2];
        timeout(WAIT, stream.read_exact(&mut len)).await??;
        let mut buf = vec![0; usize::from(u16::from_be_bytes(len))];
        timeout(WAIT, stream.read_exact(&mut buf)).await??;
        responses.push(Message::from_vec(&buf).unwrap());
    }
    Ok(responses)
}

/// Asks over UDP until the answer is `want` (sockets open and snapshots apply asynchronously).
async fn eventually(addr: SocketAddr, name: &str, qtype: RecordType, want: Got) {
    let mut last = None;
    for _ in 0..100 {
        let now = udp_ask(addr, name, qtype).await.map_err(|e| e.kind());
        if now.as_ref() == Ok(&want) {
            return;
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} {name} {qtype}: wanted {want:?}, last got {last:?}");
}

/// Waits until nothing listens on `addr` any more (UDP refused, TCP refused).
async fn eventually_closed(addr: SocketAddr) {
    for _ in 0..100 {
        let udp_closed = udp_ask(addr, A_NAME, RecordType::A).await.is_err();
        if udp_closed && TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} still open");
}

// === impl Running ===

impl Running {
    fn update(&self, snapshot: Snapshot) {
        self.snapshots.send_replace(Arc::new(snapshot));
    }

    async fn shutdown(self) {
        self.stop.send_replace(true);
        timeout(WAIT, self.task).await.unwrap().unwrap().unwrap();
    }
}

#[tokio::test]
async fn answers_over_udp_and_tcp() {
    let ingress = ip(1, 1);
    let addr = dns_addr(ingress);
    let running = start(snapshot(&[("vpc-1", Some(ingress), &[("svc-a", true), ("svc-b", false)])]));
    let v4 = Got::Addresses(vec![ingress]);
    eventually(addr, A_NAME, RecordType::A, Got::Addresses(vec![ingress])).await;
    let cases = [
        (A_NAME, RecordType::A, v4.clone()),
        (B_NAME, RecordType::A, v4.clone()),
        (A_NAME, RecordType::AAAA, Got::Addresses(vec![])),
        (A_NAME, RecordType::TXT, Got::Addresses(vec![])),
        ("Alpha.Example.Com.", RecordType::A, v4.clone()),
        ("beta.example.com", RecordType::A, Got::Code(ResponseCode::Refused)),
        (
            "gone-0123456789abcdef7.7d67968.vpc-lattice-svcs.us-east-1.on.aws",
            RecordType::A,
            Got::Code(ResponseCode::NXDomain),
        ),
        ("x.vpc-lattice-svcs.eu-west-1.on.aws", RecordType::AAAA, Got::Code(ResponseCode::NXDomain)),
        ("example.org", RecordType::A, Got::Code(ResponseCode::Refused)),
    ];
    for (name, qtype, want) in &cases {
        assert_eq!(&udp_ask(addr, name, *qtype).await.unwrap(), want, "UDP {name} {qtype}");
    }
    // The same questions, pipelined on one TCP connection.
    let requests: Vec<Message> = cases.iter().map(|(name, qtype, _)| query(name, *qtype)).collect();
    let responses = tcp(addr, &requests).await.unwrap();
    for ((request, response), (name, qtype, want)) in requests.iter().zip(&responses).zip(&cases) {
        assert_eq!(response.metadata.id, request.metadata.id);
        assert_eq!(&got(response), want, "TCP {name} {qtype}");
    }
    running.shutdown().await;
    eventually_closed(addr).await;
}

#[tokio::test]
async fn only_vpcs_with_an_ingress_get_a_socket() {
    let (one, two) = (ip(2, 1), ip(2, 2));
    let running = start(snapshot(&[
        ("vpc-1", Some(one), &[("svc-a", true)]),
        ("vpc-2", Some(two), &[("svc-b", true)]),
        ("vpc-3", None, &[("svc-a", true)]),
    ]));
    eventually(dns_addr(one), A_NAME, RecordType::A, Got::Addresses(vec![one])).await;
    eventually(dns_addr(two), B_NAME, RecordType::A, Got::Addresses(vec![two])).await;
    // Each VPC sees its own services only, at its own address.
    let nx = Got::Code(ResponseCode::NXDomain);
    assert_eq!(udp_ask(dns_addr(one), B_NAME, RecordType::A).await.unwrap(), nx);
    assert_eq!(udp_ask(dns_addr(two), A_NAME, RecordType::A).await.unwrap(), nx);
    assert_eq!(
        udp_ask(dns_addr(two), "alpha.example.com", RecordType::A).await.unwrap(),
        Got::Code(ResponseCode::Refused)
    );
    // An address that is no VPC's ingress has no socket at all.
    let nobody = dns_addr(ip(2, 9));
    assert_eq!(udp_ask(nobody, A_NAME, RecordType::A).await.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
    assert!(TcpStream::connect(nobody).await.is_err());
    running.shutdown().await;
}

#[tokio::test]
async fn malformed_input_does_not_kill_the_server() {
    let ingress = ip(3, 1);
    let addr = dns_addr(ingress);
    let running = start(snapshot(&[("vpc-1", Some(ingress), &[("svc-a", true)])]));
    let ok = Got::Addresses(vec![ingress]);
    eventually(addr, A_NAME, RecordType::A, ok.clone()).await;
    // Runts and responses get no answer; a header with a missing question gets FORMERR.
    assert_eq!(udp_raw(addr, &[]).await.unwrap(), None);
    assert_eq!(udp_raw(addr, &[0xde, 0xad, 0xbe]).await.unwrap(), None);
    let mut response = query(A_NAME, RecordType::A);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    assert_eq!(udp_raw(addr, &response.to_vec().unwrap()).await.unwrap(), None);
    let garbage = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'x'];
    let reply = Message::from_vec(&udp_raw(addr, &garbage).await.unwrap().unwrap()).unwrap();
    assert_eq!((reply.metadata.id, reply.metadata.response_code), (0xabcd, ResponseCode::FormErr));
    let noise: Vec<u8> = (0..=255u8).cycle().skip(7).step_by(13).take(3000).collect();
    let _ = udp_raw(addr, &noise).await.unwrap();
    // TCP: an oversized frame and an empty frame close the connection; a truncated one times out.
    for frame in [&[0xff, 0xff][..], &[0, 0][..]] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(frame).await.unwrap();
        let mut buf = [0; 16];
        assert_eq!(timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap(), 0);
    }
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&[0, 40, 1, 2]).await.unwrap();
    // Still serving, on both transports, while the half-sent query is pending.
    assert_eq!(udp_ask(addr, A_NAME, RecordType::A).await.unwrap(), ok);
    let responses = tcp(addr, &[query(A_NAME, RecordType::A)]).await.unwrap();
    assert_eq!(got(&responses[0]), ok);
    drop(half);
    running.shutdown().await;
}

#[tokio::test]
async fn snapshots_change_answers_and_sockets() {
    let (one, two, moved) = (ip(4, 1), ip(4, 2), ip(4, 3));
    let running = start(snapshot(&[("vpc-1", Some(one), &[("svc-a", false)])]));
    let refused = Got::Code(ResponseCode::Refused);
    let nx = Got::Code(ResponseCode::NXDomain);
    eventually(dns_addr(one), A_NAME, RecordType::A, Got::Addresses(vec![one])).await;
    assert_eq!(udp_ask(dns_addr(one), "alpha.example.com", RecordType::A).await.unwrap(), refused);
    assert_eq!(udp_ask(dns_addr(one), B_NAME, RecordType::A).await.unwrap(), nx);
    // Beta becomes reachable and alpha's private DNS is turned on; a second VPC appears.
    running.update(snapshot(&[
        ("vpc-1", Some(one), &[("svc-a", true), ("svc-b", true)]),
        ("vpc-2", Some(two), &[("svc-a", true)]),
    ]));
    eventually(dns_addr(one), B_NAME, RecordType::A, Got::Addresses(vec![one])).await;
    eventually(dns_addr(one), "alpha.example.com", RecordType::A, Got::Addresses(vec![one])).await;
    eventually(dns_addr(two), A_NAME, RecordType::A, Got::Addresses(vec![two])).await;
    // Alpha is no longer reachable from vpc-1; vpc-2 is gone; vpc-1 keeps its socket.
    running.update(snapshot(&[("vpc-1", Some(one), &[("svc-b", true)])]));
    eventually(dns_addr(one), A_NAME, RecordType::A, nx.clone()).await;
    eventually(dns_addr(one), "alpha.example.com", RecordType::A, refused).await;
    eventually_closed(dns_addr(two)).await;
    assert_eq!(udp_ask(dns_addr(one), B_NAME, RecordType::A).await.unwrap(), Got::Addresses(vec![one]));
    // vpc-1's ingress moves: the old address closes, the new one answers with itself.
    running.update(snapshot(&[("vpc-1", Some(moved), &[("svc-b", true)])]));
    eventually(dns_addr(moved), B_NAME, RecordType::A, Got::Addresses(vec![moved])).await;
    eventually_closed(dns_addr(one)).await;
    // vpc-2 comes back on its old address (bound again at once).
    running.update(snapshot(&[("vpc-2", Some(two), &[("svc-a", true)])]));
    eventually(dns_addr(two), A_NAME, RecordType::A, Got::Addresses(vec![two])).await;
    eventually_closed(dns_addr(moved)).await;
    running.shutdown().await;
    eventually_closed(dns_addr(two)).await;
}

#[tokio::test]
async fn keeps_serving_when_the_snapshot_source_is_gone() {
    let ingress = ip(5, 1);
    let addr = dns_addr(ingress);
    let Running { snapshots, stop, task } = start(snapshot(&[("vpc-1", Some(ingress), &[("svc-a", true)])]));
    eventually(addr, A_NAME, RecordType::A, Got::Addresses(vec![ingress])).await;
    drop(snapshots);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(udp_ask(addr, A_NAME, RecordType::A).await.unwrap(), Got::Addresses(vec![ingress]));
    stop.send_replace(true);
    timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    eventually_closed(addr).await;
}

#[tokio::test]
async fn a_taken_address_is_retried_and_others_still_served() {
    let (taken, free) = (ip(6, 1), ip(6, 2));
    // Something else holds the TCP port of one ingress address.
    let squatter = std::net::TcpListener::bind(dns_addr(taken)).unwrap();
    let running =
        start(snapshot(&[("vpc-1", Some(taken), &[("svc-a", true)]), ("vpc-2", Some(free), &[("svc-a", true)])]));
    eventually(dns_addr(free), A_NAME, RecordType::A, Got::Addresses(vec![free])).await;
    drop(squatter);
    // The responder binds it on its next attempt (every 200 ms in tests), with no new snapshot.
    let mut answered = false;
    for _ in 0..40 {
        if udp_ask(dns_addr(taken), A_NAME, RecordType::A).await.ok() == Some(Got::Addresses(vec![taken])) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(answered, "the freed address was never bound");
    running.shutdown().await;
}
