//! One probe: a fresh TCP connection to the target, closed afterwards. TCP checks pass when
//! the connection opens; HTTP checks send `GET <path> HTTP/1.1` with `Host: <ip>:<port>` and
//! `Connection: close`, and pass when the status line arrives within the timeout with a code the
//! matcher accepts. Nothing past the status line is read. HTTPS checks do the same over TLS
//! (1.2 or 1.3) without verifying the target's certificate, as AWS's health checks do: targets
//! commonly serve self-signed certificates, and the check is of health, not identity.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use trellis_net::Place;

use super::check::{Codes, ProbeKind};

/// The longest status line read; a longer one fails the check.
const MAX_STATUS_LINE: usize = 512;

/// Why a probe failed (logged; `ListTargets` shows `HealthCheckFailed` for all of them).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No answer within the timeout.
    Timeout,
    /// The connection could not be opened or broke.
    Io(std::io::ErrorKind),
    /// The answer was not an HTTP status line (or HTTP/2 response).
    Malformed,
    /// The status code is not one the matcher accepts.
    Status(u16),
    /// The TLS handshake failed.
    Tls,
}

/// Runs one probe of `kind` against `addr`, connecting from `place`, within `timeout`.
pub(crate) async fn probe(kind: &ProbeKind, place: &Place, addr: SocketAddr, timeout: Duration) -> Result<(), Failure> {
    let attempt = async {
        let connected = match place {
            Place::Host => TcpStream::connect(addr).await,
            place => match place.tcp_socket(addr).await {
                Ok(socket) => socket.connect(addr).await,
                Err(e) => Err(e),
            },
        };
        let mut stream = connected.map_err(|e| Failure::Io(e.kind()))?;
        match kind {
            ProbeKind::Tcp => Ok(()),
            ProbeKind::Http { path, codes, tls: false, h2: false } => http(&mut stream, addr, path, codes).await,
            ProbeKind::Http { path, codes, tls: false, h2: true } => http2(stream, "http", addr, path, codes).await,
            ProbeKind::Http { path, codes, tls: true, h2 } => {
                let config =
                    if *h2 { crate::tls::target_h2_client_config() } else { crate::tls::target_client_config() };
                let connector = TlsConnector::from(config.ok_or(Failure::Tls)?);
                let name = ServerName::IpAddress(addr.ip().into());
                let mut tls = connector.connect(name, stream).await.map_err(|_| Failure::Tls)?;
                if *h2 { http2(tls, "https", addr, path, codes).await } else { http(&mut tls, addr, path, codes).await }
            }
        }
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(Failure::Timeout))
}

/// `GET path` over HTTP/2 on `stream`: passes when the response's status is in `codes`.
async fn http2<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    scheme: &str,
    addr: SocketAddr,
    path: &str,
    codes: &Codes,
) -> Result<(), Failure> {
    let executor = hyper_util::rt::TokioExecutor::new();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(executor, hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Malformed)?;
    // Ends when the sender is dropped, with this probe.
    tokio::spawn(connection);
    let request = http::Request::get(format!("{scheme}://{addr}{path}"))
        .header(http::header::USER_AGENT, "Trellis-HealthChecker/1.0")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|_| Failure::Malformed)?;
    let response = sender.send_request(request).await.map_err(|_| Failure::Malformed)?;
    let status = response.status().as_u16();
    if codes.contains(status) { Ok(()) } else { Err(Failure::Status(status)) }
}

async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: SocketAddr,
    path: &str,
    codes: &Codes,
) -> Result<(), Failure> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Trellis-HealthChecker/1.0\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| Failure::Io(e.kind()))?;
    let mut buf = [0u8; MAX_STATUS_LINE];
    let mut len = 0;
    let line_end = loop {
        if let Some(end) = buf[..len].iter().position(|&b| b == b'\n') {
            break end;
        }
        if len == buf.len() {
            return Err(Failure::Malformed);
        }
        let n = stream.read(&mut buf[len..]).await.map_err(|e| Failure::Io(e.kind()))?;
        if n == 0 {
            return Err(Failure::Malformed);
        }
        len += n;
    };
    let status = status_code(&buf[..line_end]).ok_or(Failure::Malformed)?;
    if codes.contains(status) { Ok(()) } else { Err(Failure::Status(status)) }
}

/// The code of an HTTP/1 status line (`HTTP/1.1 200 OK`, the line ending optional).
fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    if !minor.is_ascii_digit() || rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !matches!(rest.get(3), None | Some(b' ' | b'\r')) {
        return None;
    }
    rest[..3].iter().try_fold(0u16, |acc, &d| Some(acc * 10 + u16::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::status_code;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503"), Some(503));
        assert_eq!(status_code(b"HTTP/1.1 204 \r"), Some(204));
        for bad in
            [&b"HTTP/2 200 OK"[..], b"HTTP/1.1 20 OK", b"HTTP/1.1 2000", b"SSH-2.0-OpenSSH", b"", b"HTTP/1.x 200"]
        {
            assert_eq!(status_code(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
