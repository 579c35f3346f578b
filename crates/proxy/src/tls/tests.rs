//! TLS listeners end to end on real sockets: a certificate authority made here, clients that
//! trust it (tokio-rustls), fake HTTP targets and a TLS target for passthrough.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use trellis_model::lattice::ListenerProtocol;
use trellis_model::snapshot::{ListenerView, ServiceView};
use trellis_model::tls::{Certificates, Identity};

use crate::listener::testing::*;

/// A certificate authority for tests.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        Self { der: cert.der().to_vec(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A leaf for `names`, as the data plane gets it.
    fn identity(&self, serial: &str, names: &[&str]) -> Arc<Identity> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Arc::new(Identity {
            serial: serial.to_owned(),
            chain: vec![cert.der().to_vec(), self.der.clone()],
            key: key.serialize_der(),
            not_after_ms: u64::MAX,
        })
    }

    fn client(&self, alpn: &[&[u8]], tls12_only: bool) -> tokio_rustls::TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(self.der.clone())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] =
            if tls12_only { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

const PORT: u16 = 18443;

fn listener(id: &str, protocol: ListenerProtocol, default_action: trellis_model::snapshot::Action) -> ListenerView {
    ListenerView { id: format!("listener-{id}").into(), protocol, port: PORT, rules: Vec::new(), default_action }
}

/// A service on [`PORT`] with one listener of `protocol`.
fn tls_service(id: &str, host: &str, protocol: ListenerProtocol, tg: &str) -> ServiceView {
    let mut s = service(id, host, PORT, forward(&[(tg, 1)]));
    s.listeners = [(PORT, listener(id, protocol, forward(&[(tg, 1)])))].into();
    s
}

/// TLS to `addr` with server name `sni`, then one `GET /` with `Host: host` and
/// `connection: close`: the response, or the error.
async fn https_get(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    sni: &str,
    host: &str,
) -> std::io::Result<(String, Option<Vec<u8>>)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let mut tls = tokio::time::timeout(T, connector.connect(name, tcp)).await.expect("handshake in time")?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let request = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(T, tls.read_to_end(&mut out)).await.expect("response in time")?;
    Ok((String::from_utf8_lossy(&out).into_owned(), alpn))
}

/// The DER of the leaf a server presents to `sni` (verified against `connector`'s roots).
async fn presented(connector: &tokio_rustls::TlsConnector, addr: SocketAddr, sni: &str) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tokio::time::timeout(T, connector.connect(name, tcp)).await.expect("handshake in time")?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

/// A TLS acceptor serving `id`, and a socket on 127.0.0.1 for it.
fn tls_listener(id: &Identity) -> (tokio_rustls::TlsAcceptor, std::net::TcpListener, SocketAddr) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = id.chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.clone()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std.set_nonblocking(true).unwrap();
    let addr = std.local_addr().unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), std, addr)
}

/// A TLS server on 127.0.0.1 with its own certificate: answers every connection with
/// `hello from <name>` and the first line it read, then closes.
fn tls_target(ca: &Ca, name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let id = ca.identity("target", &[name]);
    let (acceptor, std, addr) = tls_listener(&id);
    let task = tokio::spawn(async move {
        let listener = TcpListener::from_std(std).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let mut buf = vec![0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned();
                let _ = tls.write_all(format!("hello from {name}: {line}\n").as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A proxy whose one port carries an HTTPS service (`a-1.zone.test`, also `shop.example` with
/// a customer certificate), an HTTP service (`b-1.zone.test`) and a passthrough service
/// (`pass.example`, to a TLS target).
struct Mixed {
    proxy: Proxy,
    addr: SocketAddr,
    ca: Ca,
    target_ca: Ca,
    _targets: (FakeTarget, FakeTarget, JoinHandle<()>),
}

async fn mixed() -> Mixed {
    let ip = next_ingress();
    let (a, b) = (FakeTarget::start("a").await, FakeTarget::start("b").await);
    let ca = Ca::new("Test CA");
    let target_ca = Ca::new("Target CA");
    let (pass_addr, pass_task) = tls_target(&target_ca, "pass.example");
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    f.add_group(target_group("tg-b", &[b.addr]));
    let mut tcp = target_group("tg-pass", &[pass_addr]);
    tcp.protocol = Some("TCP".into());
    f.add_group(tcp);
    let mut https = tls_service("svc-a", "a-1.zone.test", ListenerProtocol::Https, "tg-a");
    https.custom_domain_name = Some("shop.example".into());
    https.certificate_arn = Some("arn:aws:acm:us-east-1:000000000000:certificate/shop".into());
    f.add_service(https);
    f.add_service(tls_service("svc-b", "b-1.zone.test", ListenerProtocol::Http, "tg-b"));
    let mut pass = tls_service("svc-p", "p-1.zone.test", ListenerProtocol::TlsPassthrough, "tg-pass");
    pass.custom_domain_name = Some("pass.example".into());
    f.add_service(pass);
    let addr = SocketAddr::new(ip, PORT);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let mut certificates = Certificates::default();
    certificates.zones.insert("zone.test".into(), ca.identity("zone-1", &["*.zone.test"]));
    certificates
        .by_arn
        .insert("arn:aws:acm:us-east-1:000000000000:certificate/shop".into(), ca.identity("shop-1", &["shop.example"]));
    proxy.certificates.send_replace(Arc::new(certificates));
    // The table with the certificates is in place once a handshake works.
    let client = ca.client(&[b"http/1.1"], false);
    for _ in 0..100 {
        if https_get(&client, addr, "a-1.zone.test", "a-1.zone.test").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Mixed { proxy, addr, ca, target_ca, _targets: (a, b, pass_task) }
}

#[tokio::test]
async fn https_listeners_terminate_with_the_managed_certificate() {
    let m = mixed().await;
    for tls12 in [false, true] {
        let client = m.ca.client(&[b"http/1.1"], tls12);
        let (response, alpn) = https_get(&client, m.addr, "a-1.zone.test", "a-1.zone.test").await.expect("served");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(target_of(body), "a");
        assert_eq!(seen(body, "x-forwarded-proto"), ["https"]);
        assert_eq!(seen(body, "host"), ["a-1.zone.test"]);
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN");
    }
    // No ALPN at all is HTTP/1.1 too.
    let (response, alpn) =
        https_get(&m.ca.client(&[], false), m.addr, "a-1.zone.test", "a-1.zone.test").await.expect("served");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(alpn, None);
    m.proxy.stop().await;
}

#[tokio::test]
async fn a_custom_domain_is_served_with_its_customer_certificate() {
    let m = mixed().await;
    let client = m.ca.client(&[b"http/1.1"], false);
    let (response, _) = https_get(&client, m.addr, "shop.example", "shop.example").await.expect("served");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(target_of(response.split("\r\n\r\n").nth(1).unwrap()), "a");
    // The leaf presented names shop.example (the client verified it), not the wildcard.
    let leaf = presented(&client, m.addr, "shop.example").await.expect("handshake");
    assert!(leaf.windows(12).any(|w| w == b"shop.example"));
    // Without its certificate the custom name gets no handshake (there is no fallback); the
    // generated name still does.
    let mut certificates = (**m.proxy.certificates.borrow()).clone();
    certificates.by_arn.clear();
    m.proxy.certificates.send_replace(Arc::new(certificates));
    let mut refused = false;
    for _ in 0..100 {
        if presented(&client, m.addr, "shop.example").await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "no handshake without the customer certificate");
    assert!(presented(&client, m.addr, "a-1.zone.test").await.is_ok());
    m.proxy.stop().await;
}

#[tokio::test]
async fn one_port_tells_cleartext_https_and_passthrough_apart() {
    let m = mixed().await;
    // Cleartext to the HTTP service.
    let (status, body) = get(&client(), m.addr, "b-1.zone.test", "/").await;
    assert_eq!((status, target_of(&body)), (200, "b"));
    // Cleartext to the HTTPS service's name: it has no HTTP listener here.
    let (status, _) = get(&client(), m.addr, "a-1.zone.test", "/").await;
    assert_eq!(status, 404);
    // TLS to the HTTP service's name: no TLS listener for it, so no handshake.
    let tls = m.ca.client(&[b"http/1.1"], false);
    assert!(https_get(&tls, m.addr, "b-1.zone.test", "b-1.zone.test").await.is_err());
    // Passthrough: the target's own certificate reaches the client, and the bytes both ways.
    let through = m.target_ca.client(&[], false);
    let (response, _) = https_get(&through, m.addr, "pass.example", "pass.example").await.expect("spliced");
    assert_eq!(response, "hello from pass.example: GET / HTTP/1.1\n");
    // The passthrough service's generated name is not a passthrough route (SNI must be the
    // custom name).
    assert!(https_get(&through, m.addr, "p-1.zone.test", "p-1.zone.test").await.is_err());
    m.proxy.stop().await;
}

#[tokio::test]
async fn bad_tls_input_closes_that_connection_only() {
    let m = mixed().await;
    let client = m.ca.client(&[b"http/1.1"], false);
    // A connection open before, kept alive across the bad ones.
    let tcp = TcpStream::connect(m.addr).await.unwrap();
    let mut kept = client.connect(ServerName::try_from("a-1.zone.test").unwrap(), tcp).await.unwrap();
    let ask = b"GET / HTTP/1.1\r\nhost: a-1.zone.test\r\n\r\n";
    kept.write_all(ask).await.unwrap();
    let mut first = vec![0u8; 8192];
    let n = kept.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));

    // Garbage after a handshake record's first byte; a truncated hello; a hello of a client
    // that then goes quiet until the proxy gives up (header read timeout, 2 s here).
    for bytes in [&b"\x16\x03\x01\x00\x05hello, this is not TLS at all"[..], &b"\x16\x03\x01\x02\x00\x01\x00"[..]] {
        let mut s = TcpStream::connect(m.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let _ = s.shutdown().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(T, s.read_to_end(&mut rest)).await.expect("closed in time");
        assert!(read.is_err() || !String::from_utf8_lossy(&rest).contains("HTTP/1.1"), "{rest:?}");
    }
    let mut quiet = TcpStream::connect(m.addr).await.unwrap();
    quiet.write_all(b"\x16\x03\x01\x02\x00\x01\x00").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), quiet.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a stalled hello is closed after the header read timeout");
    // Unknown names, and no name at all (a client connecting to an address sends none).
    assert!(https_get(&client, m.addr, "nobody.zone.test", "nobody.zone.test").await.is_err());
    assert!(https_get(&client, m.addr, "shop2.example", "shop2.example").await.is_err());
    assert!(https_get(&client, m.addr, &m.addr.ip().to_string(), "a-1.zone.test").await.is_err());

    // The first connection still works.
    kept.write_all(ask).await.unwrap();
    let n = kept.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&first[..n]));
    m.proxy.stop().await;
}

#[tokio::test]
async fn cleartext_on_a_port_with_only_tls_listeners_gets_400_and_closes() {
    let ip = next_ingress();
    let a = FakeTarget::start("a").await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    f.add_service(tls_service("svc-a", "a-1.zone.test", ListenerProtocol::Https, "tg-a"));
    let addr = SocketAddr::new(ip, PORT);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let answer = raw(addr, b"GET / HTTP/1.1\r\nhost: a-1.zone.test\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("connection: close") && answer.contains("TLS only"), "{answer}");
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_renewed_certificate_serves_the_next_handshakes() {
    let m = mixed().await;
    let client = m.ca.client(&[b"http/1.1"], false);
    let before = presented(&client, m.addr, "a-1.zone.test").await.unwrap();
    let mut certificates = (**m.proxy.certificates.borrow()).clone();
    certificates.zones.insert("zone.test".into(), m.ca.identity("zone-2", &["*.zone.test"]));
    m.proxy.certificates.send_replace(Arc::new(certificates));
    let mut after = before.clone();
    for _ in 0..100 {
        after = presented(&client, m.addr, "a-1.zone.test").await.unwrap();
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(after, before, "the new certificate is presented");
    m.proxy.stop().await;
}

/// An HTTPS target on 127.0.0.1 with a certificate no one trusts: answers each request on a
/// keep-alive connection with the server name the client sent; counts its connections.
fn https_target(ca: &Ca) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>, JoinHandle<()>) {
    let id = ca.identity("https-target", &["target.internal"]);
    let (acceptor, std, addr) = tls_listener(&id);
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    let task = tokio::spawn(async move {
        let listener = TcpListener::from_std(std).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = tls.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let text = String::from_utf8_lossy(&head[..end]).into_owned();
                        head.drain(..end + 4);
                        let proto =
                            text.lines().find_map(|l| l.strip_prefix("x-forwarded-proto: ")).unwrap_or("-").to_owned();
                        let body = format!("sni={sni} proto={proto}");
                        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if tls.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, connections, task)
}

#[tokio::test]
async fn https_target_groups_get_tls_with_the_service_name_and_keep_alive() {
    let ip = next_ingress();
    let target_ca = Ca::new("Nobody trusts this");
    let (target, connections, _task) = https_target(&target_ca);
    let mut f = Fixture::new(ip);
    let mut tg = target_group("tg-tls", &[target]);
    tg.protocol = Some("HTTPS".into());
    f.add_group(tg);
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-tls", 1)])));
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let c = client();
    for _ in 0..3 {
        let (status, body) = get(&c, addr, "one.example", "/").await;
        assert_eq!((status, body.as_str()), (200, "sni=one.example proto=http"));
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1, "one TLS connection, kept alive");
    proxy.stop().await;
}

/// A socket under a TLS session takes vectored writes whatever their shape: one slice among
/// empty ones (sent as one plain write), several, or none; the peer gets every byte in order.
#[tokio::test]
async fn a_session_socket_takes_vectored_writes_of_any_shape() {
    use std::io::IoSlice;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let mut socket = super::Socket(client.unwrap());
    let (mut peer, _) = accepted.unwrap();
    let writes: [&[&[u8]]; 4] = [&[b"", b"one", b""], &[b"two", b"-", b"three"], &[], &[b"", b""]];
    let mut sent = Vec::new();
    for slices in writes {
        let bufs: Vec<IoSlice<'_>> = slices.iter().map(|s| IoSlice::new(s)).collect();
        let n = socket.write_vectored(&bufs).await.unwrap();
        let all: Vec<u8> = slices.concat();
        // Loopback takes small writes whole.
        assert_eq!(n, all.len(), "{slices:?}");
        sent.extend_from_slice(&all);
    }
    drop(socket);
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, sent);
    assert_eq!(got, b"onetwo-three");
}
