//! Health-checker tests on real sockets: fake targets are HTTP servers on 127.0.0.1 whose answer
//! a test can change, and the checker runs with one settings "second" = 50 ms.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use trellis_model::lattice::{HealthCheckConfig, Matcher};
use trellis_model::snapshot::{Snapshot, TargetGroupView, TargetView};
use trellis_net::{Place, Ports};

use super::Checker;
use super::check::{self, Check, Plan};
use crate::{
    HealthReport, HealthSink, HealthStatus, HealthTable, InFlight, ProxyConfig, SharedHealth, TargetHealth, TargetKey,
};
use HealthStatus::{Draining, Healthy, Initial, Unavailable, Unhealthy, Unused};

/// One settings second, in tests.
const UNIT: Duration = Duration::from_millis(50);
/// The longest a test waits for anything.
const WAIT: Duration = Duration::from_secs(5);

pub(super) fn config(delay: Duration) -> ProxyConfig {
    ProxyConfig {
        ports: Ports { low_port_offset: 10000 },
        response_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(10),
        max_connection_age: Duration::from_secs(600),
        max_connections: 10_000,
        max_header_bytes: 65536,
        max_headers: 100,
        deregistration_delay: delay,
        min_health_check_interval: Duration::from_millis(10),
        network: trellis_net::Network::Loopback,
    }
}

/// A target group using `targets`, checked over HTTP every 2 units (timeout 2, thresholds 2),
/// then changed by `f`.
pub(super) fn group(id: &str, targets: Vec<TargetView>, f: impl FnOnce(&mut TargetGroupView)) -> TargetGroupView {
    let mut tg = TargetGroupView {
        id: id.to_owned(),
        arn: format!("arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/{id}"),
        region: "us-east-1".into(),
        account: "000000000000".into(),
        target_type: "IP".into(),
        protocol: Some("HTTP".into()),
        protocol_version: Some("HTTP1".into()),
        vpc_id: Some("vpc-0123456789abcdef0".into()),
        health_check: HealthCheckConfig {
            enabled: Some(true),
            protocol: Some("HTTP".into()),
            protocol_version: Some("HTTP1".into()),
            port: None,
            path: Some("/".into()),
            health_check_interval_seconds: Some(2),
            health_check_timeout_seconds: Some(2),
            healthy_threshold_count: Some(2),
            unhealthy_threshold_count: Some(2),
            matcher: Some(Matcher { http_code: "200".into() }),
        },
        in_use: true,
        targets,
    };
    f(&mut tg);
    tg
}

pub(super) fn at(addr: SocketAddr) -> TargetView {
    TargetView { id: addr.ip().to_string(), port: addr.port(), addr: Some(addr), draining_since_ms: None }
}

pub(super) fn snapshot(groups: Vec<TargetGroupView>) -> Arc<Snapshot> {
    let target_groups = groups.into_iter().map(|g| (g.id.clone(), Arc::new(g))).collect();
    Arc::new(Snapshot { target_groups, ..Default::default() })
}

fn key(tg: &str, addr: SocketAddr) -> TargetKey {
    TargetKey { target_group_id: tg.into(), target_id: addr.ip().to_string(), port: addr.port() }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// --- a fake target ---

/// An HTTP server answering every request with `status` (0: never answers), counting requests
/// and keeping the last request head.
pub(super) struct FakeTarget {
    pub(super) addr: SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    last: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl FakeTarget {
    pub(super) async fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let (hits, last): (Arc<AtomicUsize>, Arc<Mutex<String>>) = (Arc::default(), Arc::default());
        let (s, h, l) = (Arc::clone(&status), Arc::clone(&hits), Arc::clone(&last));
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (s, h, l) = (s.clone(), Arc::clone(&h), Arc::clone(&l));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut len = 0;
                    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        match tokio::time::timeout(WAIT, conn.read(&mut buf[len..])).await {
                            Ok(Ok(n)) if n > 0 => len += n,
                            _ => return,
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    *l.lock().unwrap() = String::from_utf8_lossy(&buf[..len]).into_owned();
                    match s.load(Ordering::SeqCst) {
                        0 => tokio::time::sleep(WAIT).await,
                        code => {
                            let head = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            let _ = conn.write_all(head.as_bytes()).await;
                        }
                    }
                });
            }
        });
        Self { addr, status, hits, last, task }
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub(super) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// --- a running checker ---

#[derive(Default)]
pub(super) struct Sink(Mutex<Vec<HealthReport>>);

impl HealthSink for Sink {
    fn report(&self, reports: Vec<HealthReport>) {
        self.0.lock().unwrap().extend(reports);
    }
}

impl Sink {
    /// The statuses reported for `key`, in order.
    fn statuses(&self, key: &TargetKey) -> Vec<HealthStatus> {
        let reports = self.0.lock().unwrap();
        reports
            .iter()
            .filter_map(|r| match r {
                HealthReport::Status { key: k, health, .. } if k == key => Some(health.status),
                _ => None,
            })
            .collect()
    }

    fn drained(&self, key: &TargetKey) -> usize {
        let reports = self.0.lock().unwrap();
        reports.iter().filter(|r| matches!(r, HealthReport::Drained { key: k, .. } if k == key)).count()
    }
}

pub(super) struct Harness {
    pub(super) snapshots: watch::Sender<Arc<Snapshot>>,
    shared: watch::Sender<Arc<SharedHealth>>,
    table: watch::Receiver<Arc<HealthTable>>,
    pub(super) sink: Arc<Sink>,
    in_flight: Arc<InFlight>,
    /// Every status each target showed in the published tables, consecutive repeats removed.
    seen: Arc<Mutex<HashMap<TargetKey, Vec<HealthStatus>>>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Harness {
    pub(super) fn start(config: ProxyConfig, second: Duration, first: Arc<Snapshot>) -> Self {
        let (snapshots, snapshots_rx) = watch::channel(first);
        let (table_tx, table) = watch::channel(Arc::new(HealthTable::default()));
        let sink = Arc::new(Sink::default());
        let in_flight = Arc::new(InFlight::default());
        let (stop, stop_rx) = watch::channel(false);
        let checker = Checker::new(Arc::new(config), second, sink.clone(), table_tx, in_flight.clone());
        let (shared, shared_rx) = watch::channel(Arc::new(SharedHealth::default()));
        let task = Some(tokio::spawn(checker.run(snapshots_rx, shared_rx, stop_rx)));
        let seen: Arc<Mutex<HashMap<TargetKey, Vec<HealthStatus>>>> = Arc::default();
        let (mut observer, record) = (table.clone(), seen.clone());
        tokio::spawn(async move {
            while observer.changed().await.is_ok() {
                let published = observer.borrow_and_update().clone();
                let mut seen = record.lock().unwrap();
                for (k, h) in &published.targets {
                    let list = seen.entry(k.clone()).or_default();
                    if list.last() != Some(&h.status) {
                        list.push(h.status);
                    }
                }
            }
        });
        Self { snapshots, shared, table, sink, in_flight, seen, stop, task }
    }

    fn health(&self, key: &TargetKey) -> Option<TargetHealth> {
        self.table.borrow().targets.get(key).copied()
    }

    /// Waits until the published table shows `key` with `status`.
    pub(super) async fn wait_for(&mut self, key: &TargetKey, status: HealthStatus) -> TargetHealth {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.table.borrow_and_update().targets.get(key).copied();
            if let Some(h) = now.filter(|h| h.status == status) {
                return h;
            }
            let changed = tokio::time::timeout_at(deadline, self.table.changed()).await;
            assert!(changed.is_ok(), "{key:?} never became {status:?} (last: {now:?})");
            changed.unwrap().unwrap();
        }
    }

    /// Waits until `key` is gone from the published table.
    async fn wait_gone(&mut self, key: &TargetKey) {
        let deadline = Instant::now() + WAIT;
        while self.table.borrow_and_update().targets.contains_key(key) {
            tokio::time::timeout_at(deadline, self.table.changed()).await.expect("still there").unwrap();
        }
    }

    fn seen(&self, key: &TargetKey) -> Vec<HealthStatus> {
        self.seen.lock().unwrap().get(key).cloned().unwrap_or_default()
    }

    pub(super) async fn stop(mut self) {
        self.stop.send_replace(true);
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task).await.expect("the checker stops").unwrap();
    }
}

/// Waits until `f` holds, checking every 10 ms.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// --- the tests ---

#[tokio::test]
async fn http_transitions_initial_healthy_unhealthy_healthy() {
    let target = FakeTarget::start(500).await;
    let tg = group("tg-1", vec![at(target.addr)], |g| g.health_check.unhealthy_threshold_count = Some(3));
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(vec![tg]));
    let k = key("tg-1", target.addr);

    // Failing, but fewer times than the threshold: still INITIAL.
    let initial = h.wait_for(&k, Initial).await;
    assert_eq!(initial.reason, None);
    eventually("a first probe", || target.hits() >= 1).await;
    assert_eq!(h.health(&k).unwrap().status, Initial);

    target.answer(200);
    h.wait_for(&k, Healthy).await;
    target.answer(500);
    let started = Instant::now();
    let unhealthy = h.wait_for(&k, Unhealthy).await;
    assert_eq!(unhealthy.reason, Some(check::FAILED));
    assert!(started.elapsed() >= UNIT * 4, "three failures 2 units apart take at least 4 units");
    target.answer(200);
    h.wait_for(&k, Healthy).await;

    let expected = [Initial, Healthy, Unhealthy, Healthy];
    assert_eq!(h.seen(&k), expected, "published tables");
    eventually("the last report", || h.sink.statuses(&k).len() == 4).await;
    assert_eq!(h.sink.statuses(&k), expected, "reports to the sink: changes only");
    h.stop().await;
}

#[tokio::test]
async fn probes_are_get_requests_on_fresh_connections() {
    let target = FakeTarget::start(200).await;
    let traffic = closed_port().await;
    let tg = group("tg-1", vec![at(traffic)], |g| {
        g.health_check.path = Some("/status?probe=1".into());
        g.health_check.port = Some(target.addr.port());
    });
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(vec![tg]));
    h.wait_for(&key("tg-1", traffic), Healthy).await;
    eventually("three probes", || target.hits() >= 3).await;
    let head = target.last.lock().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /status?probe=1 http/1.1\r\n"), "{head}");
    // Host names the address probed, as a client connecting there would.
    assert!(head.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", target.addr.port())), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    h.stop().await;
}

#[tokio::test]
async fn the_first_probe_does_not_wait_an_interval() {
    let target = FakeTarget::start(200).await;
    // A 100-unit (5 s) interval: the first probe still runs at once.
    let tg = group("tg-1", vec![at(target.addr)], |g| g.health_check.health_check_interval_seconds = Some(100));
    let started = Instant::now();
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(vec![tg]));
    h.wait_for(&key("tg-1", target.addr), Healthy).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    h.stop().await;
}

#[tokio::test]
async fn matchers_lists_and_ranges() {
    let (t202, t204) = (FakeTarget::start(202).await, FakeTarget::start(204).await);
    let code = |c: &str| {
        let c = c.to_owned();
        move |g: &mut TargetGroupView| g.health_check.matcher = Some(Matcher { http_code: c })
    };
    let groups = vec![
        group("tg-range", vec![at(t202.addr), at(t204.addr)], code("200-299")),
        group("tg-list", vec![at(t202.addr), at(t204.addr)], code("200,202")),
        group("tg-default", vec![at(t202.addr)], code("200")),
    ];
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(groups));
    h.wait_for(&key("tg-range", t202.addr), Healthy).await;
    h.wait_for(&key("tg-range", t204.addr), Healthy).await;
    h.wait_for(&key("tg-list", t202.addr), Healthy).await;
    h.wait_for(&key("tg-list", t204.addr), Unhealthy).await;
    h.wait_for(&key("tg-default", t202.addr), Unhealthy).await;
    h.stop().await;
}

#[tokio::test]
async fn a_target_that_does_not_answer_in_time_fails() {
    let silent = FakeTarget::start(0).await;
    let tg = group("tg-1", vec![at(silent.addr)], |g| {
        g.health_check.health_check_interval_seconds = Some(4);
        g.health_check.health_check_timeout_seconds = Some(1);
    });
    let started = Instant::now();
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(vec![tg]));
    let k = key("tg-1", silent.addr);
    h.wait_for(&k, Unhealthy).await;
    // Two timeouts of one unit, four units apart; a probe never waits longer than its timeout.
    assert!(started.elapsed() >= UNIT * 4 + UNIT, "{:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(h.sink.statuses(&k), [Initial, Unhealthy]);
    h.stop().await;
}

#[tokio::test]
async fn tcp_checks_connect_only() {
    let open = FakeTarget::start(0).await;
    let closed = closed_port().await;
    let tg = group("tg-1", vec![at(open.addr), at(closed)], |g| g.health_check.protocol = Some("TCP".into()));
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(vec![tg]));
    h.wait_for(&key("tg-1", open.addr), Healthy).await;
    h.wait_for(&key("tg-1", closed), Unhealthy).await;
    tokio::time::sleep(UNIT * 4).await;
    assert_eq!(open.hits(), 0, "a TCP check sends nothing");
    h.stop().await;
}

#[tokio::test]
async fn targets_that_are_never_probed() {
    let target = FakeTarget::start(200).await;
    let remote: SocketAddr = "10.255.255.1:80".parse().unwrap();
    let instance = TargetView { id: "i-0123456789abcdef0".into(), port: 80, addr: None, draining_since_ms: None };
    let groups = vec![
        group("tg-unused", vec![at(target.addr)], |g| g.in_use = false),
        group("tg-off", vec![at(target.addr)], |g| g.health_check.enabled = Some(false)),
        group("tg-remote", vec![at(remote), instance.clone()], |_| {}),
        group("tg-lambda", vec![at(target.addr)], |g| g.target_type = "LAMBDA".into()),
    ];
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(groups));
    let expect = [
        (key("tg-unused", target.addr), Unused, check::NOT_IN_USE),
        (key("tg-off", target.addr), Unavailable, check::DISABLED),
        (key("tg-remote", remote), Unavailable, check::NOT_LOOPBACK),
        (
            TargetKey { target_group_id: "tg-remote".into(), target_id: instance.id.clone(), port: 80 },
            Unavailable,
            check::NOT_LOOPBACK,
        ),
        (key("tg-lambda", target.addr), Unavailable, check::NOT_SUPPORTED),
    ];
    for (k, status, reason) in &expect {
        let health = h.wait_for(k, *status).await;
        assert_eq!(health.reason, Some(*reason), "{k:?}");
    }
    tokio::time::sleep(UNIT * 6).await;
    assert_eq!(target.hits(), 0, "none of them is probed");
    for (k, status, _) in &expect {
        assert_eq!(h.sink.statuses(k), [*status], "{k:?} is reported once");
    }
    h.stop().await;
}

#[tokio::test]
async fn intervals_are_raised_to_the_floor() {
    let target = FakeTarget::start(200).await;
    let tg = group("tg-1", vec![at(target.addr)], |g| g.health_check.health_check_interval_seconds = Some(1));
    let config = ProxyConfig { min_health_check_interval: Duration::from_millis(200), ..config(Duration::ZERO) };
    // One unit is 5 ms: without the floor, 100 probes a second.
    let mut h = Harness::start(config, Duration::from_millis(5), snapshot(vec![tg]));
    h.wait_for(&key("tg-1", target.addr), Healthy).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let hits = target.hits();
    assert!((3..=8).contains(&hits), "{hits} probes in about a second with a 200 ms floor");
    h.stop().await;
}

#[tokio::test]
async fn draining_ends_when_nothing_is_in_flight() {
    let target = FakeTarget::start(200).await;
    let mut h = Harness::start(
        config(Duration::from_secs(60)),
        UNIT,
        snapshot(vec![group("tg-1", vec![at(target.addr)], |_| {})]),
    );
    let k = key("tg-1", target.addr);
    h.wait_for(&k, Healthy).await;
    let in_flight = h.in_flight.counter(&k);
    in_flight.fetch_add(1, Ordering::AcqRel);
    let mut draining = at(target.addr);
    draining.draining_since_ms = Some(now_ms());
    h.snapshots.send_replace(snapshot(vec![group("tg-1", vec![draining], |_| {})]));
    let health = h.wait_for(&k, Draining).await;
    assert_eq!(health.reason, Some(check::DRAINING));
    let hits = target.hits();
    tokio::time::sleep(UNIT * 6).await;
    assert_eq!(h.sink.drained(&k), 0, "a request is still in flight");
    assert_eq!(target.hits(), hits, "a draining target is not probed");
    in_flight.fetch_sub(1, Ordering::AcqRel);
    eventually("the drained report", || h.sink.drained(&k) == 1).await;
    assert_eq!(h.health(&k).unwrap().status, Draining, "it shows DRAINING until it leaves the snapshot");
    // Reports are batched (a flush at most every PUBLISH_GAP): when the first probe answers
    // before the first flush, Initial is never reported on its own.
    let statuses = h.sink.statuses(&k);
    assert!(statuses == [Initial, Healthy, Draining] || statuses == [Healthy, Draining], "{statuses:?}");

    // The control plane removes it.
    h.snapshots.send_replace(snapshot(vec![group("tg-1", vec![], |_| {})]));
    h.wait_gone(&k).await;
    h.stop().await;
}

#[tokio::test]
async fn draining_ends_at_the_deadline() {
    let target = FakeTarget::start(200).await;
    let mut draining = at(target.addr);
    draining.draining_since_ms = Some(now_ms());
    let started = Instant::now();
    let mut h = Harness::start(
        config(Duration::from_millis(400)),
        UNIT,
        snapshot(vec![group("tg-1", vec![draining.clone()], |_| {})]),
    );
    let k = key("tg-1", target.addr);
    h.in_flight.counter(&k).fetch_add(1, Ordering::AcqRel);
    h.wait_for(&k, Draining).await;
    eventually("the drained report", || h.sink.drained(&k) == 1).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(2), "{took:?}");

    // Registered again before the control plane removed it: probed afresh.
    h.snapshots.send_replace(snapshot(vec![group("tg-1", vec![at(target.addr)], |_| {})]));
    h.wait_for(&k, Healthy).await;
    // INITIAL may last less than one publication gap.
    let seen = h.seen(&k);
    assert!(seen == [Draining, Initial, Healthy] || seen == [Draining, Healthy], "{seen:?}");
    h.stop().await;
}

#[tokio::test]
async fn snapshots_change_what_is_checked() {
    let (a, b) = (FakeTarget::start(200).await, FakeTarget::start(200).await);
    let mut h = Harness::start(
        config(Duration::from_secs(60)),
        UNIT,
        snapshot(vec![group("tg-1", vec![at(a.addr), at(b.addr)], |g| g.in_use = false)]),
    );
    let (ka, kb) = (key("tg-1", a.addr), key("tg-1", b.addr));
    h.wait_for(&ka, Unused).await;
    h.wait_for(&kb, Unused).await;

    // Now used: probed; then b is deregistered and gone, a's group switches checks off.
    h.snapshots.send_replace(snapshot(vec![group("tg-1", vec![at(a.addr), at(b.addr)], |_| {})]));
    h.wait_for(&ka, Healthy).await;
    h.wait_for(&kb, Healthy).await;
    h.snapshots.send_replace(snapshot(vec![group("tg-1", vec![at(a.addr)], |_| {})]));
    h.wait_gone(&kb).await;
    h.snapshots.send_replace(snapshot(vec![group("tg-1", vec![at(a.addr)], |g| g.health_check.enabled = Some(false))]));
    h.wait_for(&ka, Unavailable).await;
    let hits = a.hits();
    tokio::time::sleep(UNIT * 6).await;
    assert!(a.hits() <= hits + 1, "no probes once checks are off (one may have been out)");

    // The whole group goes away.
    h.snapshots.send_replace(snapshot(vec![]));
    h.wait_gone(&ka).await;
    h.stop().await;
}

#[test]
fn plans_put_draining_first() {
    let config = config(Duration::from_secs(60));
    let addr: SocketAddr = "127.0.0.2:8080".parse().unwrap();
    let tg = group("tg-1", vec![], |g| g.in_use = false);
    let mut t = at(addr);
    t.draining_since_ms = Some(5);
    let c = Check::new(&tg.health_check, Duration::ZERO, UNIT);
    assert_eq!(check::plan(&config, &tg, &c, &t), Plan::Drain(5));
    t.draining_since_ms = None;
    let unused = TargetHealth { status: Unused, reason: Some(check::NOT_IN_USE) };
    assert_eq!(check::plan(&config, &tg, &c, &t), Plan::Fixed(unused));
    let tg = group("tg-1", vec![], |g| g.health_check.port = Some(9000));
    let c = Check::new(&tg.health_check, Duration::ZERO, UNIT);
    assert_eq!(check::plan(&config, &tg, &c, &t), Plan::Probe(Place::Host, "127.0.0.2:9000".parse().unwrap()));
    let remote = at("192.0.2.1:80".parse().unwrap());
    // netns mode: any address, probed from inside the target group's VPC.
    let open =
        ProxyConfig { network: trellis_net::Network::Netns(trellis_net::Naming::new("tnone").unwrap()), ..config };
    let place = open.network.targets(tg.vpc_id.as_deref());
    assert!(matches!(&place, Place::Netns(name) if name.starts_with("tnone-vpc-")), "{place:?}");
    assert_eq!(check::plan(&open, &tg, &c, &remote), Plan::Probe(place, "192.0.2.1:9000".parse().unwrap()));
}

mod scale;

/// A TLS server with a self-signed certificate that answers every request with `status`, and
/// counts them.
async fn tls_target(status: u16) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["target.example".into()]).unwrap().self_signed(&key).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let mut buf = [0u8; 1024];
                if matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, hits, task)
}

#[tokio::test]
async fn https_checks_speak_tls_and_accept_any_certificate() {
    let (good, good_hits, t1) = tls_target(200).await;
    let (bad, _, t2) = tls_target(503).await;
    // A plaintext HTTP server fails an HTTPS check (no TLS handshake).
    let plain = FakeTarget::start(200).await;
    let targets = vec![at(good), at(bad), at(plain.addr)];
    let tg = group("tg-1", targets, |g| g.health_check.protocol = Some("HTTPS".into()));
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(vec![tg]));
    h.wait_for(&key("tg-1", good), Healthy).await;
    h.wait_for(&key("tg-1", bad), Unhealthy).await;
    h.wait_for(&key("tg-1", plain.addr), Unhealthy).await;
    assert!(good_hits.load(Ordering::SeqCst) >= 1);
    h.stop().await;
    t1.abort();
    t2.abort();
}

/// An HTTP/2 (prior knowledge) server on 127.0.0.1 answering every request with `status`.
async fn h2_target(status: u16) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let ok = req.version() == http::Version::HTTP_2;
                    async move {
                        let mut response = http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                        *response.status_mut() = http::StatusCode::from_u16(if ok { status } else { 505 }).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, hits, task)
}

#[tokio::test]
async fn http2_checks_speak_http2() {
    let (good, good_hits, _g) = h2_target(200).await;
    let (bad, _, _b) = h2_target(503).await;
    let groups = vec![
        group("tg-1", vec![at(good)], |g| g.health_check.protocol_version = Some("HTTP2".into())),
        group("tg-2", vec![at(bad)], |g| g.health_check.protocol_version = Some("HTTP2".into())),
    ];
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(groups));
    h.wait_for(&key("tg-1", good), Healthy).await;
    let health = h.wait_for(&key("tg-2", bad), Unhealthy).await;
    assert_eq!(health.reason, Some(check::FAILED));
    assert!(good_hits.load(Ordering::SeqCst) >= 1);
    h.stop().await;
}

#[tokio::test]
async fn groups_another_node_checks_are_not_probed_and_show_what_it_found() {
    let (ours, theirs) = (FakeTarget::start(200).await, FakeTarget::start(200).await);
    let groups = vec![group("tg-ours", vec![at(ours.addr)], |_| {}), group("tg-theirs", vec![at(theirs.addr)], |_| {})];
    let mut h = Harness::start(config(Duration::from_secs(60)), UNIT, snapshot(groups));
    let (k_ours, k_theirs) = (key("tg-ours", ours.addr), key("tg-theirs", theirs.addr));
    h.wait_for(&k_ours, Healthy).await;
    h.wait_for(&k_theirs, Healthy).await;
    // Another node takes tg-theirs over: no more probes of it; INITIAL until its finding comes.
    let elsewhere = std::collections::HashSet::from(["tg-theirs".to_owned()]);
    h.shared.send_replace(Arc::new(SharedHealth { elsewhere: elsewhere.clone(), statuses: HashMap::new() }));
    h.wait_for(&k_theirs, Initial).await;
    let hits = theirs.hits();
    let found = TargetHealth { status: Unhealthy, reason: Some(check::FAILED) };
    let statuses = HashMap::from([(k_theirs.clone(), found)]);
    h.shared.send_replace(Arc::new(SharedHealth { elsewhere, statuses }));
    assert_eq!(h.wait_for(&k_theirs, Unhealthy).await, found);
    tokio::time::sleep(UNIT * 6).await;
    assert!(theirs.hits() <= hits + 1, "a group another node checks is not probed here");
    assert!(ours.hits() >= 3, "ours still is");
    assert_eq!(h.sink.statuses(&k_theirs), [Initial, Healthy], "another node's finding is not reported as ours");
    // It comes back to this node: probed again from INITIAL, and reported.
    h.shared.send_replace(Arc::new(SharedHealth::default()));
    h.wait_for(&k_theirs, Healthy).await;
    // Reported again: INITIAL too, unless the first probe answered before the next flush.
    eventually("reported again", || {
        let statuses = h.sink.statuses(&k_theirs);
        statuses.len() >= 3 && statuses.last() == Some(&Healthy)
    })
    .await;
    let statuses = h.sink.statuses(&k_theirs);
    assert!(
        statuses == [Initial, Healthy, Initial, Healthy] || statuses == [Initial, Healthy, Healthy],
        "{statuses:?}"
    );
    h.stop().await;
}
