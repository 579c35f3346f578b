//! Bad input and the connection clocks, on real sockets with raw TCP clients.

use std::sync::atomic::Ordering;
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
