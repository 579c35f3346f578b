//! The request path end to end on real sockets: a proxy run by `listener::run` on hand-built
//! snapshots, fake targets that are real servers, hyper and raw TCP clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use trellis_model::lattice::{HeaderMatch, HeaderMatchType, HttpMatch, PathMatch, PathMatchType};
use trellis_model::snapshot::Action;

use super::testing::*;
use crate::HealthStatus;

#[tokio::test]
async fn routes_by_host_and_port() {
    let ip = next_ingress();
    let (a, b, c) = (FakeTarget::start("a").await, FakeTarget::start("b").await, FakeTarget::start("c").await);
    let mut f = Fixture::new(ip);
    for (tg, t) in [("tg-a", &a), ("tg-b", &b), ("tg-c", &c)] {
        f.add_group(target_group(tg, &[t.addr]));
    }
    let mut one = service("svc-1", "one.example", 18080, forward(&[("tg-a", 1)]));
    one.custom_domain_name = Some("custom.example".into());
    f.add_service(one);
    f.add_service(service("svc-2", "two.example", 18080, forward(&[("tg-b", 1)])));
    f.add_service(service("svc-3", "three.example", 18081, forward(&[("tg-c", 1)])));
    let (p0, p1) = (SocketAddr::new(ip, 18080), SocketAddr::new(ip, 18081));
    let proxy = Proxy::start(config(), f.build(), p0).await;
    wait_listening(p1).await;
    let c = client();
    for (addr, host, want) in [
        (p0, "one.example", "a"),
        (p0, "ONE.Example:18080", "a"),
        (p0, "one.example.", "a"),
        (p0, "custom.example", "a"),
        (p0, "two.example", "b"),
        (p1, "three.example", "c"),
    ] {
        let (status, body) = get(&c, addr, host, "/").await;
        assert_eq!((status, target_of(&body)), (200, want), "{host} on {addr}");
    }
    // Known hosts on a port their service does not listen on, and unknown hosts: 404.
    for (addr, host) in [(p1, "one.example"), (p0, "three.example"), (p0, "nobody.example")] {
        let (status, headers, body) = send(&c, addr, host, "GET", "/", &[]).await;
        assert_eq!(status, 404, "{host} on {addr}: {body}");
        let id = headers["x-amzn-requestid"].to_str().unwrap();
        assert!(body.contains(id), "{body}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn every_match_kind_reaches_its_target() {
    let ip = next_ingress();
    let names = ["method", "exact", "prefix", "hexact", "hprefix", "hcontains", "first", "default"];
    let mut targets = Vec::new();
    let mut f = Fixture::new(ip);
    for name in names {
        let t = FakeTarget::start(name).await;
        f.add_group(target_group(&format!("tg-{name}"), &[t.addr]));
        targets.push(t);
    }
    let to = |name: &str| forward(&[(format!("tg-{name}").as_str(), 1)]);
    let path = |m: PathMatchType, cs: Option<bool>| HttpMatch {
        path_match: Some(PathMatch { match_type: m, case_sensitive: cs }),
        ..HttpMatch::default()
    };
    let header = |m: HeaderMatchType, cs: Option<bool>| HttpMatch {
        header_matches: Some(vec![HeaderMatch { name: "X-Kind".into(), match_type: m, case_sensitive: cs }]),
        ..HttpMatch::default()
    };
    let mut svc = service("svc-1", "one.example", 18080, to("default"));
    let listener = svc.listeners.get_mut(&18080).unwrap();
    listener.rules = vec![
        rule(1, HttpMatch { method: Some("PUT".into()), ..HttpMatch::default() }, to("method")),
        rule(2, path(PathMatchType::Exact("/exact".into()), None), to("exact")),
        rule(3, path(PathMatchType::Prefix("/pre".into()), Some(false)), to("prefix")),
        rule(4, header(HeaderMatchType::Exact("e".into()), None), to("hexact")),
        rule(5, header(HeaderMatchType::Prefix("pre".into()), None), to("hprefix")),
        rule(6, header(HeaderMatchType::Contains("Mid".into()), Some(true)), to("hcontains")),
        // Priority: both rules match /both; the lower number wins.
        rule(7, path(PathMatchType::Exact("/both".into()), None), to("first")),
        rule(8, path(PathMatchType::Prefix("/both".into()), None), to("default")),
    ];
    f.add_service(svc);
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let c = client();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("PUT", "/anything", &[], "method"),
        ("GET", "/exact", &[], "exact"),
        ("GET", "/exact?q=1", &[], "exact"),
        ("GET", "/exact/more", &[], "default"),
        ("GET", "/PREfix", &[], "prefix"),
        ("GET", "/x", &[("x-kind", "E")], "hexact"),
        ("GET", "/x", &[("x-kind", "PREFIXED")], "hprefix"),
        ("GET", "/x", &[("x-kind", "a-Mid-b")], "hcontains"),
        ("GET", "/x", &[("x-kind", "a-mid-b")], "default"),
        ("GET", "/both", &[], "first"),
        ("GET", "/", &[], "default"),
    ];
    for (method, path, headers, want) in cases {
        let (status, _, body) = send(&c, addr, "one.example", method, path, headers).await;
        assert_eq!((status, target_of(&body)), (200, *want), "{method} {path} {headers:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn fixed_responses() {
    let ip = next_ingress();
    let mut f = Fixture::new(ip);
    let mut svc = service("svc-1", "one.example", 18080, Action::Fixed(404));
    let broken = HttpMatch {
        path_match: Some(PathMatch { match_type: PathMatchType::Prefix("/broken".into()), case_sensitive: None }),
        ..HttpMatch::default()
    };
    svc.listeners.get_mut(&18080).unwrap().rules = vec![rule(1, broken, Action::Fixed(500))];
    f.add_service(svc);
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let c = client();
    let (status, headers, body) = send(&c, addr, "one.example", "GET", "/", &[]).await;
    assert_eq!((status, body.as_str()), (404, "Not Found"));
    assert!(headers.contains_key("x-amzn-requestid"));
    assert_eq!(get(&c, addr, "one.example", "/broken/x").await, (500, "Internal Server Error".into()));
    proxy.stop().await;
}

#[tokio::test]
async fn weights_split_traffic() {
    let ip = next_ingress();
    let (a, b, z) = (FakeTarget::start("a").await, FakeTarget::start("b").await, FakeTarget::start("z").await);
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    f.add_group(target_group("tg-b", &[b.addr]));
    f.add_group(target_group("tg-z", &[z.addr]));
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-a", 10), ("tg-b", 30), ("tg-z", 0)])));
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let c = client();
    let n = 2000;
    for _ in 0..n {
        let (status, _) = get(&c, addr, "one.example", "/").await;
        assert_eq!(status, 200);
    }
    let share = a.hits.load(Ordering::SeqCst) as f64 / n as f64;
    // Expected 0.25; the standard deviation over 2,000 requests is about 0.01.
    assert!((share - 0.25).abs() < 0.05, "tg-a got {share}");
    assert_eq!(a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst), n);
    assert_eq!(z.hits.load(Ordering::SeqCst), 0, "weight 0 gets nothing");
    proxy.stop().await;
}

#[tokio::test]
async fn round_robin_fail_open_and_draining() {
    let ip = next_ingress();
    let ts = [FakeTarget::start("a").await, FakeTarget::start("b").await, FakeTarget::start("c").await];
    let d = FakeTarget::start("d").await;
    let mut f = Fixture::new(ip);
    let mut tg = target_group("tg-1", &[ts[0].addr, ts[1].addr, ts[2].addr, d.addr]);
    tg.targets[3].draining_since_ms = Some(1);
    f.add_group(tg);
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-1", 1)])));
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let c = client();
    let k = |i: usize| key("tg-1", ts[i].addr);
    let count = async |n: usize| {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut order = Vec::new();
        for _ in 0..n {
            let (status, body) = get(&c, addr, "one.example", "/").await;
            assert_eq!(status, 200);
            order.push(target_of(&body).to_owned());
            *seen.entry(target_of(&body).to_owned()).or_default() += 1;
        }
        (seen, order)
    };
    // a and b healthy, c unhealthy: strict alternation between a and b.
    proxy.set_health(health(&[
        (k(0), HealthStatus::Healthy),
        (k(1), HealthStatus::Healthy),
        (k(2), HealthStatus::Unhealthy),
    ]));
    let mut stable = false;
    for _ in 0..50 {
        let (seen, order) = count(10).await;
        if seen.len() == 2 && !seen.contains_key("c") {
            assert!(order.windows(2).all(|w| w[0] != w[1]), "round-robin: {order:?}");
            assert_eq!(seen.values().copied().collect::<Vec<_>>(), [5, 5]);
            stable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stable, "the health table was applied");
    // None healthy: fail open to a, b and c, never the draining d.
    proxy.set_health(health(&[(k(0), HealthStatus::Unhealthy), (k(1), HealthStatus::Initial)]));
    let mut open = false;
    for _ in 0..50 {
        let (seen, _) = count(30).await;
        if seen.len() == 3 {
            assert_eq!(seen.values().copied().collect::<Vec<_>>(), [10, 10, 10]);
            open = true;
            break;
        }
    }
    assert!(open, "fail-open to every target");
    // A target the health checker reports DRAINING gets nothing either.
    proxy.set_health(health(&[(k(2), HealthStatus::Draining)]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (seen, _) = count(20).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(!seen.contains_key("c"));
    assert_eq!(d.hits.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.in_flight.get(&k(0)), 0, "in-flight counts return to zero");
    proxy.stop().await;
}

/// Targets that leave the configuration take their in-flight counters with them (once no
/// route table or request holds them): the map does not keep every target there ever was.
#[tokio::test]
async fn counters_of_targets_gone_from_the_configuration_are_forgotten() {
    let (proxy, mut f, addr, a) = one_service(config()).await;
    let b = FakeTarget::start("b").await;
    let c = client();
    assert_eq!(get(&c, addr, "one.example", "/").await.0, 200);
    assert_eq!(proxy.in_flight.len(), 1);
    // `a` replaced by `b` (a task replaced by another, at another address). A counter is
    // forgotten by a later rebuild than the one that left its target out, once the
    // connections have moved on from the tables that had it: changes elsewhere go on.
    f.add_group(target_group("tg-a", &[b.addr]));
    proxy.set(f.build());
    let started = std::time::Instant::now();
    for round in 0.. {
        let (status, body) = get(&c, addr, "one.example", "/").await;
        assert_eq!(status, 200);
        if target_of(&body) == "b" && proxy.in_flight.len() == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{} counters kept", proxy.in_flight.len());
        f.add_group(target_group(&format!("tg-x{round}"), &[]));
        proxy.set(f.build());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.in_flight.get(&key("tg-a", a.addr)), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn proxy_made_errors() {
    let ip = next_ingress();
    let slow = FakeTarget::start("slow").await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-empty", &[]));
    let mut draining = target_group("tg-draining", &[slow.addr]);
    draining.targets[0].draining_since_ms = Some(1);
    f.add_group(draining);
    // 0.0.0.0 is not loopback (but would reach this host if a bug let it through).
    f.add_group(target_group("tg-outside", &["0.0.0.0:9".parse().unwrap()]));
    f.add_group(target_group("tg-refused", &[refused]));
    f.add_group(target_group("tg-slow", &[slow.addr]));
    for (i, tg) in ["tg-empty", "tg-draining", "tg-outside", "tg-refused", "tg-slow"].iter().enumerate() {
        f.add_service(service(&format!("svc-{i}"), &format!("{tg}.example"), 18080, forward(&[(tg, 1)])));
    }
    let addr = SocketAddr::new(ip, 18080);
    let config = crate::ProxyConfig { response_timeout: Duration::from_millis(300), ..config() };
    let proxy = Proxy::start(config, f.build(), addr).await;
    let c = client();
    for (host, path, status, reason) in [
        ("tg-empty.example", "/", 503, "no registered targets"),
        ("tg-draining.example", "/", 503, "no target"),
        ("tg-outside.example", "/", 503, "no target"),
        ("tg-refused.example", "/", 502, "refused"),
        ("tg-slow.example", "/slow?ms=2000", 504, "did not answer in time"),
        ("unknown.example", "/", 404, "no service"),
    ] {
        let (got, headers, body) = send(&c, addr, host, "GET", path, &[]).await;
        assert_eq!(got, status, "{host}: {body}");
        assert!(body.contains(reason), "{host}: {body}");
        let id = headers["x-amzn-requestid"].to_str().unwrap();
        assert!(body.contains(&format!("request id: {id}")), "{body}");
    }
    // The slow target still answers within the timeout.
    assert_eq!(get(&c, addr, "tg-slow.example", "/slow?ms=10").await, (200, "slow".into()));
    proxy.stop().await;
}

#[tokio::test]
async fn target_sees_forwarding_headers() {
    let (proxy, _f, addr, _a) = one_service(config()).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let me = stream.local_addr().unwrap().ip();
    let head = "GET /p?q=1 HTTP/1.1\r\nHost: one.example\r\nX-Forwarded-For: 192.0.2.7\r\n\
                x-amzn-lattice-identity: Principal=forged\r\nX-Amzn-Lattice-Network: forged\r\n\
                x-amzn-requestid: forged\r\nConnection: close, x-drop\r\nx-drop: 1\r\nx-keep: 2\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut stream).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let id = head.lines().find_map(|l| l.strip_prefix("x-amzn-requestid: ")).unwrap();
    assert_eq!(seen(body, "x-amzn-requestid"), [id]);
    assert_ne!(id, "forged");
    assert_eq!(seen(body, "host"), ["one.example"]);
    assert!(body.contains("path=/p?q=1\n"), "{body}");
    assert_eq!(seen(body, "x-forwarded-for"), [format!("192.0.2.7, {me}").as_str()]);
    assert_eq!(seen(body, "x-forwarded-port"), ["18080"]);
    assert_eq!(seen(body, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(body, "x-amzn-lattice-network"), ["SourceVpcArn=arn:aws:ec2:us-east-1:000000000000:vpc/vpc-1"]);
    assert_eq!(
        seen(body, "x-amzn-lattice-target"),
        ["ServiceArn=arn:aws:vpc-lattice:us-east-1:000000000000:service/svc-1;\
          ServiceNetworkArn=arn:aws:vpc-lattice:us-east-1:000000000000:servicenetwork/sn-1;\
          TargetGroupArn=arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/tg-a"]
    );
    assert!(seen(body, "x-amzn-lattice-identity").is_empty(), "{body}");
    assert!(seen(body, "x-drop").is_empty(), "{body}");
    assert_eq!(seen(body, "x-keep"), ["2"]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_large_bodies_both_ways() {
    const SIZE: usize = 20 << 20;
    let ip = next_ingress();
    let (upload_gate_tx, upload_gate) = oneshot::channel();
    let (download_gate, download_gate_rx) = oneshot::channel();
    let t = FakeTarget::start_with_gates("t", (Some(upload_gate_tx), Some(download_gate_rx))).await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-t", &[t.addr]));
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-t", 1)])));
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    // Upload: the client holds back all but the first MiB until the target has received that
    // MiB, which it can only if the proxy streams.
    let uploader: Client<HttpConnector, Zeros> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = Request::post(format!("http://{addr}/count"))
        .header("host", "one.example")
        .body(Zeros::gated(SIZE, 1 << 20, upload_gate))
        .unwrap();
    let response = tokio::time::timeout(T * 2, uploader.request(req)).await.unwrap().unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from(format!("received={SIZE}")));
    // Download: the target holds back all but the first MiB until the client has received
    // bytes, which it can only if the proxy streams.
    let c = client();
    let req = Request::get(format!("http://{addr}/gated?n={SIZE}"))
        .header("host", "one.example")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(T, c.request(req)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut total = 0;
    let mut open = Some(download_gate);
    while let Some(frame) = tokio::time::timeout(T, body.frame()).await.unwrap() {
        total += frame.unwrap().data_ref().map_or(0, Bytes::len);
        if let Some(gate) = open.take() {
            gate.send(()).unwrap();
        }
    }
    assert_eq!(total, SIZE);
    // Echo: what goes up comes back down, streamed.
    let req =
        Request::post(format!("http://{addr}/echo")).header("host", "one.example").body(Zeros::new(SIZE)).unwrap();
    let response = tokio::time::timeout(T, uploader.request(req)).await.unwrap().unwrap();
    let mut body = response.into_body();
    let mut total = 0;
    while let Some(frame) = tokio::time::timeout(T, body.frame()).await.unwrap() {
        total += frame.unwrap().data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(total, SIZE);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_swaps_under_load_lose_nothing() {
    let ip = next_ingress();
    let (a, b) = (FakeTarget::start("a").await, FakeTarget::start("b").await);
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    f.add_group(target_group("tg-b", &[b.addr]));
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-a", 1)])));
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Arc::new(Proxy::start(config(), f.build(), addr).await);
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (ok, failed) = (ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..100_000 {
                if tokio::time::Instant::now() > deadline {
                    break;
                }
                let (status, body) = get(&c, addr, "one.example", "/").await;
                let counter = if status == 200 && matches!(target_of(&body), "a" | "b") { &ok } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Swap while they run: move the service between groups, add and remove another service on
    // another port, change weights.
    for i in 0..30u32 {
        let action = match i % 3 {
            0 => forward(&[("tg-b", 1)]),
            1 => forward(&[("tg-a", 1), ("tg-b", 1)]),
            _ => forward(&[("tg-a", 1)]),
        };
        f.add_service(service("svc-1", "one.example", 18080, action));
        if i % 2 == 0 {
            f.add_service(service("svc-2", "two.example", 18090, Action::Fixed(404)));
        } else {
            f.snapshot.services.remove("svc-2");
            f.snapshot.vpcs.get_mut("vpc-1").unwrap().reach.remove("svc-2");
        }
        proxy.set(f.build());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for c in clients {
        tokio::time::timeout(T, c).await.unwrap().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "{} requests succeeded", ok.load(Ordering::SeqCst));
    assert!(ok.load(Ordering::SeqCst) > 100);
    assert!(a.hits.load(Ordering::SeqCst) > 0 && b.hits.load(Ordering::SeqCst) > 0);
    Arc::into_inner(proxy).unwrap().stop().await;
}

#[tokio::test]
async fn listeners_follow_snapshots() {
    let (proxy, mut f, addr, _a) = one_service(config()).await;
    let ip = f.ingress;
    // A port someone else holds is skipped; the others are served.
    let taken = std::net::TcpListener::bind(SocketAddr::new(ip, 18082)).unwrap();
    f.add_service(service("svc-2", "two.example", 18081, Action::Fixed(404)));
    f.add_service(service("svc-3", "three.example", 18082, Action::Fixed(404)));
    proxy.set(f.build());
    let second = SocketAddr::new(ip, 18081);
    wait_listening(second).await;
    assert_eq!(get(&client(), second, "two.example", "/").await.0, 404);
    drop(taken);
    // Removing the listener closes its socket; the first port stays.
    f.snapshot.services.remove("svc-2");
    f.snapshot.vpcs.get_mut("vpc-1").unwrap().reach.remove("svc-2");
    proxy.set(f.build());
    wait_closed(second).await;
    assert_eq!(get(&client(), addr, "one.example", "/").await.0, 200);
    // Gone and back at once: the new socket opens even if the old one is still closing.
    f.add_service(service("svc-2", "two.example", 18081, Action::Fixed(404)));
    proxy.set(f.build());
    wait_listening(second).await;
    f.snapshot.services.remove("svc-2");
    f.snapshot.vpcs.get_mut("vpc-1").unwrap().reach.remove("svc-2");
    proxy.set(f.build());
    tokio::task::yield_now().await;
    f.add_service(service("svc-2", "two.example", 18081, Action::Fixed(404)));
    proxy.set(f.build());
    tokio::time::sleep(Duration::from_millis(50)).await;
    wait_listening(second).await;
    assert_eq!(get(&client(), second, "two.example", "/").await.0, 404);
    // The port someone else held is bound once it is free, without a new snapshot.
    let third = SocketAddr::new(ip, 18082);
    wait_listening(third).await;
    assert_eq!(get(&client(), third, "three.example", "/").await.0, 404);
    // A VPC without an ingress address adds nothing.
    f.add_vpc("vpc-2", None, &["svc-1"]);
    proxy.set(f.build());
    assert_eq!(get(&client(), addr, "one.example", "/").await.0, 200);
    // The VPC loses its association (no ingress, no reach): everything closes.
    f.snapshot.vpcs.remove("vpc-1");
    proxy.set(f.build());
    wait_closed(addr).await;
    proxy.stop().await;
}

#[tokio::test]
async fn ports_below_1024_are_served_at_their_offset() {
    let ip = next_ingress();
    let a = FakeTarget::start("a").await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    f.add_service(service("svc-1", "one.example", 80, forward(&[("tg-a", 1)])));
    let config = crate::ProxyConfig { ports: trellis_net::Ports { low_port_offset: 10000 }, ..config() };
    let addr = SocketAddr::new(ip, 10080);
    let proxy = Proxy::start(config, f.build(), addr).await;
    let (status, _, body) = send(&client(), addr, "one.example", "GET", "/", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(seen(&body, "x-forwarded-port"), ["80"]);
    proxy.stop().await;
}

/// CPU time of the calling thread, in seconds (from /proc; 10 ms resolution).
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Proxy CPU per request, in-process: the proxy on a current-thread runtime of its own thread
/// (`service one.example:18080` → weights 3:1 over two targets), loaded from outside with wrk,
/// e.g. with the proxy thread pinned to core 1 and wrk to core 0. `PERF_SECS` (20) is how long
/// it runs; `PB_BACKEND_A`/`PB_BACKEND_B` forward to other backends (then the request count is
/// not known here: use `perf stat -t <thread>` and wrk's count) and `PERF_INGRESS` sets the
/// listening address, so that `../shared/bench/proxybench.sh` can drive it as `PROXY_CMD`.
#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture and load it with wrk (see the output)"]
fn perf_probe() {
    let secs: u64 = std::env::var("PERF_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let targets_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (a, b) = targets_rt.block_on(async { (FakeTarget::start("a").await, FakeTarget::start("b").await) });
    let backend =
        |var: &str, default: SocketAddr| std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (a_addr, b_addr) = (backend("PB_BACKEND_A", a.addr), backend("PB_BACKEND_B", b.addr));
    let proxy_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let ip = std::env::var("PERF_INGRESS").ok().and_then(|v| v.parse().ok()).unwrap_or_else(next_ingress);
            let mut f = Fixture::new(ip);
            f.add_group(target_group("tg-1", &[a_addr]));
            f.add_group(target_group("tg-2", &[b_addr]));
            f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-1", 3), ("tg-2", 1)])));
            let addr = SocketAddr::new(ip, 18080);
            let proxy = Proxy::start(config(), f.build(), addr).await;
            eprintln!("run: taskset -c 0 wrk -t1 -c50 -d{}s -H 'Host: one.example' http://{addr}/tiny", secs - 4);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let cpu0 = thread_cpu();
            tokio::time::sleep(Duration::from_secs(secs - 2)).await;
            let cpu = thread_cpu() - cpu0;
            proxy.stop().await;
            cpu
        })
    });
    let cpu = proxy_thread.join().unwrap();
    let n = a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst);
    eprintln!("requests {n}, proxy CPU {cpu:.2} s, {:.2} us/request", cpu * 1e6 / n.max(1) as f64);
    drop((a, b));
}

#[tokio::test]
async fn target_connections_are_reused_then_reaped() {
    let ip = next_ingress();
    let a = FakeTarget::start("a").await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    let mut svc = service("svc-1", "one.example", 18080, forward(&[("tg-a", 1)]));
    svc.idle_timeout = Duration::from_millis(300);
    f.add_service(svc);
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let c = client();
    for _ in 0..50 {
        assert_eq!(get(&c, addr, "one.example", "/").await.0, 200);
    }
    // Chunked responses and streamed bodies give their connection back too.
    assert_eq!(get(&c, addr, "one.example", "/big?n=100000").await.0, 200);
    assert_eq!(get(&c, addr, "one.example", "/").await.0, 200);
    assert_eq!(a.accepted.load(Ordering::SeqCst), 1, "one keep-alive connection");
    // Idle past the service's idle timeout: the proxy closes it.
    for _ in 0..100 {
        if a.open.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.open.load(Ordering::SeqCst), 0, "idle target connection closed");
    assert_eq!(get(&c, addr, "one.example", "/").await.0, 200);
    assert_eq!(a.accepted.load(Ordering::SeqCst), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn targets_closing_idle_connections_lose_no_request() {
    let ip = next_ingress();
    let a = FakeTarget::start_closing_idle("a", Duration::from_millis(30)).await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-a", 1)])));
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let c = client();
    for i in 0..20u64 {
        assert_eq!(get(&c, addr, "one.example", "/").await.0, 200, "request {i}");
        // Around the target's idle timeout, so some requests race its close.
        tokio::time::sleep(Duration::from_millis(20 + (i % 4) * 5)).await;
    }
    assert!(a.accepted.load(Ordering::SeqCst) > 1);
    proxy.stop().await;
}

/// A target that refuses connections (its process died) never loses a request: the request,
/// unsent, goes to another target of the group.
#[tokio::test]
async fn a_dead_target_loses_no_request() {
    let ip = next_ingress();
    let live = FakeTarget::start("live").await;
    // A port nobody listens on: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-1", &[dead, live.addr]));
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-1", 1)])));
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    let c = client();
    for _ in 0..50 {
        let (status, body) = get(&c, addr, "one.example", "/").await;
        assert_eq!((status, target_of(&body)), (200, "live"));
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 50);
    proxy.stop().await;
}
