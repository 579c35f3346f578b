//! Being a client inside a VPC, for `trellis demo`: asking a VPC's resolver for a name, and
//! fetching a page, with sockets opened in a [`Place`] (the host, or an instance's namespace),
//! so the demo needs no `curl` or `dig`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use trellis_net::Place;

/// What a resolver said of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Its addresses.
    Address(Vec<IpAddr>),
    /// No such name, or the resolver refused: the code.
    Refused(String),
    /// No answer at all (no resolver there).
    Silent,
}

/// Asks the resolver at `server` (from `place`) for `name`'s A records, within `timeout`.
pub async fn resolve(place: &Place, server: SocketAddr, name: &str, timeout: Duration) -> anyhow::Result<Resolved> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    let mut fqdn = Name::from_ascii(name).context("not a DNS name")?;
    fqdn.set_fqdn(true);
    query.add_query(Query::query(fqdn, RecordType::A));
    let bytes = query.to_vec().context("encoding the query")?;
    let bind = SocketAddr::new(if server.is_ipv4() { [0, 0, 0, 0].into() } else { [0u16; 8].into() }, 0);
    let socket = tokio::net::UdpSocket::from_std(place.udp_socket(bind).await?)?;
    socket.send_to(&bytes, server).await?;
    let mut buf = vec![0u8; 4096];
    // ICMP port unreachable comes back as an error: nobody answers there.
    let Ok(Ok(n)) = tokio::time::timeout(timeout, socket.recv(&mut buf)).await else {
        return Ok(Resolved::Silent);
    };
    let answer = Message::from_vec(&buf[..n]).context("decoding the answer")?;
    Ok(match answer.metadata.response_code {
        ResponseCode::NoError => Resolved::Address(
            answer
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect(),
        ),
        code => Resolved::Refused(code.to_string()),
    })
}

/// TLS settings that trust the certificate authority in `pem` (and nothing else).
pub fn trusting(pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for der in trellis_control::pki::pem_blocks(pem) {
        roots.add(rustls::pki_types::CertificateDer::from(der)).context("the CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `GET http://host/path` at `addr` (from `place`), within `timeout`: the status and the body.
/// With `tls`, `https://` instead: the certificate must be valid for `host`.
pub async fn get(
    place: &Place,
    addr: SocketAddr,
    host: &str,
    path: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let attempt = async {
        let stream =
            place.tcp_socket(addr).await?.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let (mut sender, _connection) = match tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                (sender, tokio::spawn(async move { conn.await.map_err(anyhow::Error::from) }))
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned()).context("not a server name")?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .with_context(|| format!("TLS with {host} at {addr}"))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                (sender, tokio::spawn(async move { conn.await.map_err(anyhow::Error::from) }))
            }
        };
        let req = http::Request::get(path).header(http::header::HOST, host).body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => bail!("no answer from {addr} within {timeout:?}"),
    }
}
