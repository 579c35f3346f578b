//! Bad input, the connection clocks, and HTTP/1.1 on the wire (framing both ways, HEAD, 1xx,
//! Expect, absolute form, HTTP/1.0, broken targets), on real sockets with raw TCP clients and
//! targets.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::listener::testing::*;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: one.example\r\n\r\n";

/// Sends a GET on `stream` and reads one response (framed by Content-Length); `None` if the
/// connection closed instead.
async fn request(stream: &mut TcpStream) -> Option<String> {
    stream.write_all(GET).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")?.parse().ok()).unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&got).into_owned());
            }
        }
        match tokio::time::timeout(T, stream.read(&mut buf)).await.expect("answer in time") {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn bad_input_gets_4xx_and_close() {
    let (proxy, _f, addr, target) = one_service(config()).await;
    let big = format!("GET / HTTP/1.1\r\nHost: one.example\r\nX-Big: {}\r\n\r\n", "b".repeat(70 * 1024));
    let many = format!("GET / HTTP/1.1\r\nHost: one.example\r\n{}\r\n", "X-H: 1\r\n".repeat(101));
    let post = "POST / HTTP/1.1\r\nHost: one.example\r\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "CL then TE",
            format!("{post}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            "400",
        ),
        (
            "TE then CL",
            format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            "400",
        ),
        ("two lengths", format!("{post}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), "400"),
        ("bad length", format!("{post}Content-Length: 5x\r\n\r\nhello"), "400"),
        ("TE not chunked", format!("{post}Transfer-Encoding: gzip\r\n\r\nhello"), "400"),
        (
            "TE in HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: one.example\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            "400",
        ),
        ("bad chunk size", format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"), "400"),
        ("chunk too long", format!("{post}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"), "400"),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: one.example\r\nX-A: a\r\n b\r\n\r\n".into(), "400"),
        ("bare CR", "GET / HTTP/1.1\r\nHost: one.example\r\nX-A: a\rb\r\n\r\n".into(), "400"),
        ("bare LF", "GET / HTTP/1.1\nHost: one.example\n\n".into(), "400"),
        ("space in name", "GET / HTTP/1.1\r\nHost: one.example\r\nX A: b\r\n\r\n".into(), "400"),
        ("space before colon", "GET / HTTP/1.1\r\nHost: one.example\r\nX-A : b\r\n\r\n".into(), "400"),
        ("bad name", "GET / HTTP/1.1\r\nHost: one.example\r\nX(A): b\r\n\r\n".into(), "400"),
        ("no Host", "GET / HTTP/1.1\r\n\r\n".into(), "400"),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: one.example\r\nHost: one.example\r\n\r\n".into(), "400"),
        ("bad Host", "GET / HTTP/1.1\r\nHost: one example\r\n\r\n".into(), "400"),
        ("CONNECT", "CONNECT one.example:443 HTTP/1.1\r\nHost: one.example:443\r\n\r\n".into(), "400"),
        ("not HTTP", "HELLO\r\n\r\n".into(), "400"),
        // The framing guard stops heads over the limits before hyper (which would say 431).
        ("head over 64 KiB", big.clone(), "400"),
        ("101 headers", many.clone(), "400"),
    ];
    for (name, input, status) in cases {
        let response = raw(addr, input.as_bytes()).await;
        assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{name}: {response:?}");
        assert_eq!(target.hits.load(Ordering::SeqCst), 0, "{name} reached the target");
    }
    // Over the limits: the proxy's own 400, with its reason, request id, and close.
    for (input, reason) in [(&big, "the request head is too large"), (&many, "the request has too many header fields")]
    {
        let response = raw(addr, input.as_bytes()).await;
        let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
        let id = head.lines().find_map(|l| l.strip_prefix("x-amzn-requestid: ")).expect("request id");
        assert_eq!(body, format!("400 Bad Request: {reason}\nrequest id: {id}\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
    }
    assert_eq!(target.hits.load(Ordering::SeqCst), 0);
    // The same connection works for clean requests, and the target is fine.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert!(request(&mut stream).await.unwrap().starts_with("HTTP/1.1 200 "));
    proxy.stop().await;
}

/// A GET of exactly `len` head bytes and `fields` header fields (Host and `Connection: close`
/// among them), padded in its last field.
fn head_of(len: usize, fields: usize) -> String {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: one.example\r\nConnection: close\r\n");
    for i in 3..fields {
        head.push_str(&format!("X-F{i}: 1\r\n"));
    }
    head.push_str("X-Pad: ");
    let pad = len - head.len() - 4;
    head.push_str(&"p".repeat(pad));
    head.push_str("\r\n\r\n");
    assert_eq!(head.len(), len);
    head
}

#[tokio::test]
async fn heads_at_the_limits_pass_one_more_is_refused() {
    let (proxy, _f, addr, target) = one_service(config()).await;
    let limit = config().max_header_bytes;
    let cases = [
        ("64 KiB head", head_of(limit, 3), "200"),
        ("100 fields", head_of(4096, 100), "200"),
        ("100 fields in 64 KiB", head_of(limit, 100), "200"),
        ("64 KiB + 1 head", head_of(limit + 1, 3), "400"),
        ("101 fields", head_of(4096, 101), "400"),
    ];
    let mut hits = 0;
    for (name, input, status) in cases {
        let response = raw(addr, input.as_bytes()).await;
        assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{name}: {response:?}");
        hits += usize::from(status == "200");
        assert_eq!(target.hits.load(Ordering::SeqCst), hits, "{name}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_refused_head_waits_for_the_responses_before_it() {
    let (proxy, _f, addr, target) = one_service(config()).await;
    // Two requests pipelined, then a head over the limit, in one write: both requests are
    // answered in order, then the 400, then the connection closes.
    let big = format!("GET / HTTP/1.1\r\nHost: one.example\r\nX-Big: {}\r\n\r\n", "b".repeat(70 * 1024));
    let tiny = b"GET /tiny HTTP/1.1\r\nHost: one.example\r\n\r\n".as_slice();
    let input = [tiny, tiny, big.as_bytes()].concat();
    let response = raw(addr, &input).await;
    let statuses: Vec<&str> = response.match_indices("HTTP/1.1 ").map(|(at, _)| &response[at + 9..at + 12]).collect();
    assert_eq!(statuses, ["200", "200", "400"], "{response}");
    assert_eq!(response.matches("hello, world\n").count(), 2, "{response}");
    assert!(response.contains("\r\n\r\n400 Bad Request: the request head is too large\n"), "{response}");
    assert_eq!(target.hits.load(Ordering::SeqCst), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn a_bad_chunk_after_the_head_is_not_forwarded() {
    let (proxy, _f, addr, target) = one_service(config()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: one.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    // The head and the first chunk went through; now a malformed chunk.
    for _ in 0..250 {
        if target.hits.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.write_all(b"5\nworld\r\n0\r\n\r\n").await.unwrap();
    let response = read_until_closed(&mut stream).await;
    // The target got the head and "hello", never "world"; the client's response is cut short
    // (no last chunk) and the connection closed.
    assert_eq!(target.hits.load(Ordering::SeqCst), 1);
    assert!(!response.contains("world"), "{response}");
    assert!(!response.ends_with("0\r\n\r\n"), "{response}");
    proxy.stop().await;
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off() {
    let config = crate::ProxyConfig { header_read_timeout: Duration::from_millis(300), ..config() };
    let (proxy, _f, addr, target) = one_service(config).await;
    // Silent: never sends a byte.
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Slow: trickles a head, a byte every 50 ms, and never finishes.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: one.example\r\nX-Slow: ";
    slow.write_all(head).await.unwrap();
    let mut closed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if slow.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut byte)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "slow head not cut off");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(target.hits.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn idle_connections_close_at_the_service_idle_timeout() {
    let ip = next_ingress();
    let a = FakeTarget::start("a").await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    let mut svc = service("svc-1", "one.example", 18080, forward(&[("tg-a", 1)]));
    svc.idle_timeout = Duration::from_millis(400);
    f.add_service(svc);
    let addr = std::net::SocketAddr::new(ip, 18080);
    // The header timeout is shorter than the idle timeout: idle keep-alive connections follow
    // the service's idle timeout, not the header timeout.
    let config = crate::ProxyConfig { header_read_timeout: Duration::from_millis(200), ..config() };
    let proxy = Proxy::start(config, f.build(), addr).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Busy: a request every 150 ms for 900 ms keeps it open.
    for _ in 0..6 {
        assert!(request(&mut stream).await.unwrap().starts_with("HTTP/1.1 200 "));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Idle: closed after about 400 ms.
    assert!(request(&mut stream).await.is_some());
    let idle_from = Instant::now();
    assert_eq!(read_until_closed(&mut stream).await, "");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(300) && idle < Duration::from_secs(2), "{idle:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn connections_are_closed_at_their_maximum_age() {
    let config = crate::ProxyConfig { max_connection_age: Duration::from_millis(500), ..config() };
    let (proxy, _f, addr, _a) = one_service(config).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut answered = 0;
    for _ in 0..40 {
        match request(&mut stream).await {
            Some(r) => {
                assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
                answered += 1;
            }
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let age = started.elapsed();
    assert!(answered >= 3, "{answered}");
    assert!(age >= Duration::from_millis(450) && age < Duration::from_millis(1500), "{age:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_sent_as_the_maximum_age_passes_is_answered_and_then_the_connection_closes() {
    let config = crate::ProxyConfig { max_connection_age: Duration::from_millis(300), ..config() };
    let (proxy, _f, addr, _a) = one_service(config).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let first = request(&mut stream).await.expect("answered");
    assert!(!first.to_ascii_lowercase().contains("connection: close"), "{first}");
    // The age passes while the client is between requests; its next one comes soon after.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let last = request(&mut stream).await.expect("the request on its way is answered");
    assert!(last.starts_with("HTTP/1.1 200 "), "{last}");
    assert!(last.to_ascii_lowercase().contains("connection: close"), "{last}");
    assert_eq!(read_until_closed(&mut stream).await, "");
    // A client quiet after the age passes is closed after the last call.
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    assert!(request(&mut quiet).await.is_some());
    let from = Instant::now();
    assert_eq!(read_until_closed(&mut quiet).await, "");
    assert!(from.elapsed() < Duration::from_secs(3), "{:?}", from.elapsed());
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_sending_back_to_back_is_told_to_close_at_the_maximum_age_and_loses_no_request() {
    // A target that sends its answer's head, then its body 30 ms later: the age passes while
    // an answer is half sent, after its head said keep-alive.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while read_request(&mut stream, &mut got).await.is_some() {
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    if stream.write_all(b"ok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = crate::ProxyConfig { max_connection_age: Duration::from_millis(300), ..config() };
    let (proxy, addr) = behind_all(&[target], config).await;
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut answered = 0;
        loop {
            // Each request is sent as soon as the last answer is read, as wrk and pooled clients do.
            let r = request(&mut stream).await.unwrap_or_else(|| panic!("closed under request {}", answered + 1));
            answered += 1;
            if r.to_ascii_lowercase().contains("connection: close") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "never told to close");
        }
        assert_eq!(read_until_closed(&mut stream).await, "");
        assert!(answered > 1, "{answered}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_target_that_never_answers_the_connect_is_given_up_and_the_next_one_serves() {
    // A listener whose accept queue is full and never drained: its SYNs go unanswered, as a
    // stopped task's vanished address does.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let silent = socket.local_addr().unwrap();
    let _listener = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(silent)).await {
            fillers.push(s);
        }
    }
    let good = FakeTarget::start("good").await;
    let config = crate::ProxyConfig { connect_timeout: Duration::from_millis(300), ..config() };
    let (proxy, addr) = behind_all(&[silent, good.addr], config).await;
    for _ in 0..6 {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let r = request(&mut stream).await.expect("an answer");
        assert!(r.starts_with("HTTP/1.1 200 ") && r.contains("target=good"), "{r}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
    proxy.stop().await;
}

/// A target that answers every request on a connection with `response`, as raw bytes, after
/// reading its head (and a body framed by Content-Length); closes the connection after it when
/// `close`. Records each request (head and body) it got.
async fn raw_target(response: &'static [u8], close: bool) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    // One request: its head, then its Content-Length body.
                    let request = loop {
                        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: ")?.parse().ok())
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break got.drain(..end + 4 + len).collect::<Vec<u8>>();
                            }
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    };
                    record.lock().unwrap().push(String::from_utf8_lossy(&request).into_owned());
                    if stream.write_all(response).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// The proxy in front of one raw target, as `one.example` on port 18080.
async fn behind(target: std::net::SocketAddr) -> (Proxy, std::net::SocketAddr) {
    behind_all(&[target], config()).await
}

/// The proxy, set up by `config`, in front of `targets` (one group), as `one.example` on port
/// 18080.
async fn behind_all(targets: &[std::net::SocketAddr], config: crate::ProxyConfig) -> (Proxy, std::net::SocketAddr) {
    let ip = next_ingress();
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", targets));
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-a", 1)])));
    let addr = std::net::SocketAddr::new(ip, 18080);
    (Proxy::start(config, f.build(), addr).await, addr)
}

/// Reads one response off `stream`: its head, and its body as framed by Content-Length or
/// chunked encoding (decoded); `None` if the connection closed first.
async fn response(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let rest = &got[end + 4..];
            if head.contains("\r\ntransfer-encoding: chunked") {
                let text = String::from_utf8_lossy(rest).into_owned();
                if let Some(body) = dechunk(&text) {
                    return Some((head, body));
                }
            } else {
                let len: usize =
                    head.lines().find_map(|l| l.strip_prefix("content-length: ")?.parse().ok()).unwrap_or(0);
                if rest.len() >= len {
                    return Some((head, String::from_utf8_lossy(&rest[..len]).into_owned()));
                }
            }
        }
        match tokio::time::timeout(T, stream.read(&mut buf)).await.expect("answer in time") {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A whole chunked body, decoded; `None` while incomplete.
fn dechunk(mut text: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, rest) = text.split_once("\r\n")?;
        let size = usize::from_str_radix(size, 16).expect("a chunk size");
        if size == 0 {
            return rest.starts_with("\r\n").then_some(body);
        }
        body.push_str(rest.get(..size)?);
        text = rest.get(size + 2..)?;
    }
}

#[tokio::test]
async fn target_bodies_are_reframed_for_the_client() {
    // A body that runs to the target's close: chunked for HTTP/1.1 clients (which keep their
    // connection), as it is then close for HTTP/1.0 clients.
    let (target, _) = raw_target(b"HTTP/1.1 200 OK\r\nx-t: 1\r\n\r\nuntil close", true).await;
    let (proxy, addr) = behind(target).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(GET).await.unwrap();
        let (head, body) = response(&mut stream).await.expect("a response");
        assert!(head.starts_with("http/1.1 200 ok\r\n") && head.contains("\r\nx-t: 1"), "{head}");
        assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
        assert_eq!(body, "until close");
    }
    let old = raw(addr, b"GET / HTTP/1.0\r\nHost: one.example\r\nConnection: keep-alive\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.1 200 OK\r\n") && old.ends_with("\r\n\r\nuntil close"), "{old}");
    assert!(old.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{old}");
    proxy.stop().await;
    // Chunked from the target, with extensions and trailers: re-chunked for HTTP/1.1, plain for
    // HTTP/1.0; the target's socket is reused.
    let (target, seen) = raw_target(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n2\r\nef\r\n0\r\nT: 1\r\n\r\n",
        false,
    )
    .await;
    let (proxy, addr) = behind(target).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert_eq!(response(&mut stream).await.expect("a response").1, "abcdef");
    let old = raw(addr, b"GET / HTTP/1.0\r\nHost: one.example\r\n\r\n").await;
    assert!(old.ends_with("\r\n\r\nabcdef"), "{old}");
    assert_eq!(seen.lock().unwrap().len(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn heads_informational_responses_and_expect() {
    // A HEAD's response keeps its length and has no body; 1xx responses of the target are not
    // passed on.
    let (target, seen) = raw_target(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        false,
    )
    .await;
    let (proxy, addr) = behind(target).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"HEAD / HTTP/1.1\r\nHost: one.example\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(T, stream.read(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n") && text.ends_with("\r\n\r\n"), "{text}");
    assert!(text.contains("\r\ncontent-length: 5\r\n") && !text.contains("103"), "{text}");
    proxy.stop().await;
    // Expect: 100-continue is answered by the proxy, and not sent on.
    let (target, seen2) = raw_target(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let (proxy, addr) = behind(target).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /p HTTP/1.1\r\nHost: one.example\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(T, stream.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let (head, body) = response(&mut stream).await.expect("a response");
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert_eq!(body, "ok");
    let request = seen2.lock().unwrap()[0].to_ascii_lowercase();
    assert!(request.ends_with("\r\ncontent-length: 5\r\n\r\nhello") && !request.contains("expect"), "{request}");
    drop(seen);
    proxy.stop().await;
}

#[tokio::test]
async fn absolute_form_and_http_1_0() {
    let (target, seen) = raw_target(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let (proxy, addr) = behind(target).await;
    // Absolute form: the URI's authority is the host; the target gets origin form.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET http://ONE.example:18080?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut stream).await.expect("a response").1, "ok");
    let request = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(request.starts_with("get /?q=1 http/1.1\r\n"), "{request}");
    assert!(request.contains("\r\nhost: one.example:18080\r\n"), "{request}");
    // HTTP/1.0 with keep-alive keeps the connection and says so; without it, closes.
    stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(b"GET / HTTP/1.0\r\nHost: one.example\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        let (head, _) = response(&mut stream).await.expect("a response");
        assert!(head.contains("\r\nconnection: keep-alive"), "{head}");
    }
    let closed = raw(addr, b"GET / HTTP/1.0\r\nHost: one.example\r\n\r\n").await;
    assert!(closed.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{closed}");
    proxy.stop().await;
}

#[tokio::test]
async fn broken_targets() {
    // Not HTTP: 502, and the client's connection goes on.
    let (target, _) = raw_target(b"SSH-2.0-OpenSSH\r\n\r\n", true).await;
    let (proxy, addr) = behind(target).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let (head, body) = response(&mut stream).await.expect("a response");
    assert!(head.starts_with("http/1.1 502 "), "{head}");
    assert!(body.contains("the target closed or broke the connection"), "{body}");
    stream.write_all(GET).await.unwrap();
    assert!(response(&mut stream).await.expect("a second response").0.starts_with("http/1.1 502 "));
    proxy.stop().await;
    // A body cut short: the client's connection closes without a complete response.
    let (target, _) = raw_target(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", true).await;
    let (proxy, addr) = behind(target).await;
    let got = raw(addr, GET).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("only this"), "{got}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_target_that_drops_requests_loses_no_idempotent_request() {
    // One target reads each request and closes without answering (its process died, say); the
    // other answers. GETs all succeed, from the live one; a POST with a body, which cannot be
    // sent again, gets a 502.
    let (dead, seen) = raw_target(b"", true).await;
    let live = FakeTarget::start("live").await;
    let (proxy, addr) = behind_all(&[dead, live.addr], config()).await;
    let c = client();
    for _ in 0..20 {
        let (status, body) = get(&c, addr, "one.example", "/").await;
        assert_eq!((status, target_of(&body)), (200, "live"));
    }
    assert!(seen.lock().unwrap().len() >= 5, "the dead target was tried");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"POST /p HTTP/1.1\r\nHost: one.example\r\nContent-Length: 2\r\n\r\nhi").await.unwrap();
        statuses.push(response(&mut stream).await.expect("a response").0[9..12].to_string());
    }
    assert!(statuses.iter().any(|s| s == "502"), "{statuses:?}");
    assert!(statuses.iter().all(|s| s == "502" || s == "200"), "{statuses:?}");
    proxy.stop().await;
}

// === review: failing tests for bugs found in the engine ===

/// Reads one request (head, then a Content-Length body) off `stream`, keeping extra bytes in
/// `got`; `None` when the peer closed first.
async fn read_request(stream: &mut TcpStream, got: &mut Vec<u8>) -> Option<String> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")?.parse().ok()).unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&got.drain(..end + 4 + len).collect::<Vec<u8>>()).into_owned());
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn extra_target_bytes_do_not_become_the_next_response() {
    // Target A answers with its response followed by bytes no request asked for (a second,
    // forged response). They are dropped with A's socket: the client's next request, to another
    // service, gets that service's answer.
    let (a, _) = raw_target(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
        true,
    )
    .await;
    let b = FakeTarget::start("b").await;
    let ip = next_ingress();
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a]));
    f.add_group(target_group("tg-b", &[b.addr]));
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-a", 1)])));
    f.add_service(service("svc-2", "two.example", 18080, forward(&[("tg-b", 1)])));
    let addr = std::net::SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert_eq!(response(&mut stream).await.expect("a response").1, "ok");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: two.example\r\n\r\n").await.unwrap();
    let (_, body) = response(&mut stream).await.expect("a second response");
    assert_eq!(target_of(&body), "b", "service two got service one's leftover bytes: {body:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_slow_upload_is_not_a_response_timeout() {
    // The response clock starts once the request body has been sent: an upload longer than
    // the response timeout, with the client sending all along, is no 504.
    let config = crate::ProxyConfig { response_timeout: Duration::from_millis(400), ..config() };
    let (proxy, _f, addr, _a) = one_service(config).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"POST /count HTTP/1.1\r\nHost: one.example\r\nContent-Length: 8\r\n\r\n").await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(b"x").await.is_err() {
            break;
        }
    }
    let (head, body) = response(&mut stream).await.expect("a response");
    assert!(head.starts_with("http/1.1 200 "), "{head}\n{body}");
    assert_eq!(body, "received=8");
    proxy.stop().await;
}

#[tokio::test]
async fn a_pipelined_partial_head_does_not_time_out_the_exchange() {
    // A target that reads a request and answers after 700 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while read_request(&mut s, &mut got).await.is_some() {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = crate::ProxyConfig { header_read_timeout: Duration::from_millis(300), ..config() };
    let (proxy, addr) = behind_all(&[target], config).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"POST /p HTTP/1.1\r\nHost: one.example\r\nContent-Length: 5\r\n\r\nhel").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The end of the body and the start of the next (pipelined) head, read during the
    // exchange: the header read timeout is for heads awaited, not for this exchange.
    stream.write_all(b"loGET / HTTP/1.1\r\nHost: one").await.unwrap();
    let (head, body) = response(&mut stream).await.expect("a response");
    assert!(head.starts_with("http/1.1 200 "), "{head}\n{body}");
    proxy.stop().await;
}

#[tokio::test]
async fn content_length_zero_reaches_the_target() {
    // The target gets `Content-Length: 0` as sent (many servers answer a POST without a length
    // with 411 Length Required).
    let (target, seen) = raw_target(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let (proxy, addr) = behind(target).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"POST /p HTTP/1.1\r\nHost: one.example\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    assert_eq!(response(&mut stream).await.expect("a response").1, "ok");
    let request = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(request.contains("\r\ncontent-length: 0\r\n"), "{request}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_post_the_target_received_is_not_sent_twice() {
    // On each connection the target answers the first request, then reads the second one and
    // closes without answering (it crashed while handling it). A POST that went out on the
    // reused socket is not sent again (RFC 9110 §9.2.2: a proxy must not retry a
    // non-idempotent request automatically).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let Some(first) = read_request(&mut s, &mut got).await else { return };
                record.lock().unwrap().push(first);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                if let Some(second) = read_request(&mut s, &mut got).await {
                    record.lock().unwrap().push(second);
                }
            });
        }
    });
    let (proxy, addr) = behind(target).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert_eq!(response(&mut stream).await.expect("a response").1, "ok");
    stream.write_all(b"POST /charge HTTP/1.1\r\nHost: one.example\r\n\r\n").await.unwrap();
    let _ = response(&mut stream).await;
    let posts = seen.lock().unwrap().iter().filter(|r| r.starts_with("POST /charge")).count();
    assert_eq!(posts, 1, "the POST reached the target {posts} times");
    proxy.stop().await;
}

#[tokio::test]
async fn a_status_line_without_reason_phrase_is_forwarded() {
    // `HTTP/1.1 200` without a reason phrase (httparse reports it as a `""` outside the
    // buffer) is passed on.
    let (target, _) = raw_target(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", false).await;
    let (proxy, addr) = behind(target).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let (head, body) = response(&mut stream).await.expect("a response");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    proxy.stop().await;
}

#[tokio::test]
async fn a_partial_head_pipelined_behind_a_request_is_held_to_the_header_timeout() {
    // The start of a second head arrives in the same read as the first head: it is held to
    // the header read timeout (300 ms), not to the service's idle timeout (60 s).
    let config = crate::ProxyConfig { header_read_timeout: Duration::from_millis(300), ..config() };
    let (proxy, _f, addr, _a) = one_service(config).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&[GET, b"GET / HTTP/1.1\r\nHost: one".as_slice()].concat()).await.unwrap();
    assert!(response(&mut stream).await.expect("a response").0.starts_with("http/1.1 200 "));
    let started = Instant::now();
    let _ = read_until_closed(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_gone_before_its_response_releases_the_target() {
    let (proxy, _f, addr, target) = one_service(config()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /slow?ms=3000 HTTP/1.1\r\nHost: one.example\r\n\r\n").await.unwrap();
    let k = key("tg-a", target.addr);
    for _ in 0..250 {
        if proxy.in_flight.get(&k) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.in_flight.get(&k), 1, "the request is in flight");
    drop(stream);
    let gone = Instant::now();
    while proxy.in_flight.get(&k) != 0 && gone.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone.elapsed() < Duration::from_secs(1), "released after {:?}", gone.elapsed());
    proxy.stop().await;
}

/// A waker that counts its wakes.
struct Counting(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_closing_signal_wakes_the_waker_it_last_registered_even_on_a_spent_budget() {
    use std::task::{Context, Poll, Waker};
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut closing = super::Closing::new(rx);
    let (a, b) = (Arc::new(Counting(0.into())), Arc::new(Counting(0.into())));
    let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
    // The task's budget spent: a constrained poll would be Pending without registering.
    while tokio::task::coop::has_budget_remaining() {
        tokio::task::coop::consume_budget().await;
    }
    assert!(closing.poll(&mut Context::from_waker(&wa)).is_pending());
    assert!(closing.poll(&mut Context::from_waker(&wa)).is_pending());
    // Another waker is registered in its turn.
    assert!(closing.poll(&mut Context::from_waker(&wb)).is_pending());
    tx.send_replace(true);
    assert_eq!(b.0.load(Ordering::SeqCst), 1, "the last waker registered is woken");
    assert_eq!(closing.poll(&mut Context::from_waker(&wb)), Poll::Ready(()));
}
