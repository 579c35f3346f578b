//! The control-plane API benchmark: a Rust load client against a real `trellis serve` process on
//! loopback, with 10,000 services (the services quota raised by setting).
//!
//! `cargo bench -p trellis --bench api` prints creates/s, gets/s, list latency percentiles and
//! the server's CPU time per request (from /proc). Sizes: BENCH_SERVICES (10000), BENCH_GETS
//! (200000), BENCH_LISTS (2000), BENCH_CONCURRENCY (32).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Http = Client<HttpConnector, Full<Bytes>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(services: usize) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("TRELLIS_QUOTAS_SERVICES", (services + 100).to_string())
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn trellis");
    Server { child, base: format!("http://127.0.0.1:{port}"), _dir: dir }
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")" as 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

async fn call(http: &Http, method: &str, uri: &str, body: Option<String>) -> (u16, Bytes) {
    let mut req = http::Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("request");
    let resp = http.request(req).await.expect("request failed");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes)
}

/// Runs `total` calls of `one(i)` over `concurrency` workers; returns per-call latencies.
async fn drive<F, Fut>(total: usize, concurrency: usize, one: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let one = Arc::new(one);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, one) = (next.clone(), one.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let t = Instant::now();
                one(i).await;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    all
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(name: &str, n: usize, elapsed: Duration, cpu: f64, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{name:<8} {n:>7} calls  {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  server CPU {:>6.1} µs/call",
        n as f64 / elapsed.as_secs_f64(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        cpu * 1e6 / n as f64,
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run this too: do nothing then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let services = env_usize("BENCH_SERVICES", 10_000);
    let gets = env_usize("BENCH_GETS", 200_000);
    let lists = env_usize("BENCH_LISTS", 2_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 32);
    let server = start_server(services);
    let pid = server.child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let http: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(concurrency).build_http();
        let base = server.base.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        while call_ok(&http, &format!("{base}/_trellis/health")).await.is_none() {
            assert!(Instant::now() < deadline, "trellis did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("trellis API benchmark: {services} services, concurrency {concurrency}");

        let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); services]));
        let (h, b, ids2) = (http.clone(), base.clone(), ids.clone());
        let cpu0 = cpu_seconds(pid);
        let t = Instant::now();
        let lat = drive(services, concurrency, move |i| {
            let (h, b, ids) = (h.clone(), b.clone(), ids2.clone());
            async move {
                let (status, body) =
                    call(&h, "POST", &format!("{b}/services"), Some(format!("{{\"name\":\"bench-{i}\"}}"))).await;
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
                let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
                ids.lock().expect("ids")[i] = v["id"].as_str().expect("id").to_owned();
            }
        })
        .await;
        report("create", services, t.elapsed(), cpu_seconds(pid) - cpu0, lat);

        let ids: Arc<Vec<String>> = Arc::new(ids.lock().expect("ids").clone());
        let (h, b, ids2) = (http.clone(), base.clone(), ids.clone());
        let cpu0 = cpu_seconds(pid);
        let t = Instant::now();
        let lat = drive(gets, concurrency, move |i| {
            let (h, b, ids) = (h.clone(), b.clone(), ids2.clone());
            async move {
                let id = &ids[(i * 7919) % ids.len()];
                let (status, _) = call(&h, "GET", &format!("{b}/services/{id}"), None).await;
                assert_eq!(status, 200);
            }
        })
        .await;
        report("get", gets, t.elapsed(), cpu_seconds(pid) - cpu0, lat);

        // Page through the whole listing repeatedly, 100 per page, following nextToken.
        let tokens = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
        let (h, b, tokens2) = (http.clone(), base.clone(), tokens.clone());
        let cpu0 = cpu_seconds(pid);
        let t = Instant::now();
        let lat = drive(lists, concurrency.min(8), move |_| {
            let (h, b, tokens) = (h.clone(), b.clone(), tokens2.clone());
            async move {
                let token = tokens.lock().expect("tokens").pop().flatten();
                let uri = match token {
                    Some(t) => format!("{b}/services?maxResults=100&nextToken={t}"),
                    None => format!("{b}/services?maxResults=100"),
                };
                let (status, body) = call(&h, "GET", &uri, None).await;
                assert_eq!(status, 200);
                let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
                assert!(v["items"].as_array().is_some_and(|i| !i.is_empty()));
                tokens.lock().expect("tokens").push(v["nextToken"].as_str().map(str::to_owned));
            }
        })
        .await;
        report("list", lists, t.elapsed(), cpu_seconds(pid) - cpu0, lat);
        drop(server);
    });
}

async fn call_ok(http: &Http, uri: &str) -> Option<()> {
    let req = http::Request::get(uri).body(Full::new(Bytes::new())).ok()?;
    let resp = http.request(req).await.ok()?;
    resp.status().is_success().then_some(())
}
