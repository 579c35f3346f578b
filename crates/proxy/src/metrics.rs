//! The data plane's metrics, kept as atomics and rendered in the Prometheus text format.
//!
//! Per (service network, service, target group) the request path counts through a
//! [`RouteStats`] it reaches from the route table: the table is built with an `Arc` to each
//! pair's and each target group's stats (from the registry here, so that counts survive
//! snapshots), and a request then only adds to atomics — no map lookup, lock or allocation.
//! Labels are the IDs of configured resources and a status class, so the number of series is
//! bounded by the configuration, never by traffic. Per process: the snapshot revision, how long
//! applying a snapshot took, health checks run, TLS handshakes that failed before a service was
//! known, and the access log's written and dropped records.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::{HealthStatus, HealthTable};

/// Upper bounds of the latency histograms' buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The same bounds in microseconds (what observations are compared with).
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// Which series a [`RouteStats`] is: service network ID (or ""), service ID, target group ID
/// (or "" for requests no target group took: fixed responses, denials, errors before one was
/// chosen).
pub(crate) type RouteKey = (Arc<str>, Arc<str>, Arc<str>);

/// A per-service series: its name, type, help and how it is read.
type Counter = (&'static str, &'static str, &'static str, fn(&RouteStats) -> i64);

/// Counters of one (service network, service, target group).
#[derive(Default)]
pub(crate) struct RouteStats {
    /// Requests answered, by status class (2xx, 3xx, 4xx, 5xx; 1xx counts as 2xx).
    requests: [AtomicU64; 4],
    /// The latency histograms, made at the first observation: most of a series' size, and
    /// most of 10,000 services' series never see a request (an unset pair renders as zeros).
    times: OnceLock<Box<Times>>,
    /// Client connections whose first request (or TLS server name) was for this service.
    connections: AtomicU64,
    /// Of those, open now.
    active: AtomicI64,
    /// TLS handshakes for this service's names that failed.
    tls_failures: AtomicU64,
    /// Requests an auth policy denied.
    auth_denies: AtomicU64,
}

/// A series' latency histograms.
#[derive(Default)]
struct Times {
    /// Time from a request's head to the end of its response.
    request: Histogram,
    /// Time a target took to start answering (forwarded requests only).
    target: Histogram,
}

/// What a series without observations renders.
static NO_TIMES: Times = Times { request: Histogram::empty(), target: Histogram::empty() };

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative), the last one past every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of observations, in microseconds.
    sum_us: AtomicU64,
}

/// Per-process figures.
#[derive(Default)]
pub(crate) struct ProcessStats {
    /// Revision of the snapshot the data plane runs on.
    pub(crate) revision: AtomicI64,
    /// Time to build the route table of a new snapshot.
    pub(crate) apply: Histogram,
    /// Health-check probes sent.
    pub(crate) health_checks: AtomicU64,
    /// Client connections closed when accepted: `max_connections` were open.
    pub(crate) connections_refused: AtomicU64,
    /// TLS handshakes that failed before a service was known (no or unknown server name).
    pub(crate) tls_failures: AtomicU64,
    /// Access log records written to every destination of theirs (once per request, whatever
    /// the number of destinations).
    pub(crate) log_written: AtomicU64,
    /// Access log records dropped because the writer fell behind.
    pub(crate) log_dropped: AtomicU64,
    /// Access log records a destination could not take (it could not be opened or written):
    /// once per record and destination.
    pub(crate) log_errors: AtomicU64,
}

/// Every series' counters, by key; read at table builds and scrapes only.
#[derive(Default)]
pub(crate) struct Registry {
    routes: Mutex<Series>,
}

/// The series, and the network and target group IDs their keys share (one copy of a service
/// network's ID for all of its services' series, not one each).
#[derive(Default)]
struct Series {
    by_key: BTreeMap<RouteKey, Arc<RouteStats>>,
    names: HashSet<Arc<str>>,
}

/// Keeps a connection counted as active on a service until it closes.
pub(crate) struct ActiveConn(Arc<RouteStats>);

// === impl RouteStats ===

impl RouteStats {
    /// Counts a request answered with `status` after `elapsed`.
    pub(crate) fn request(&self, status: u16, elapsed: Duration) {
        let class = match status {
            300..=399 => 1,
            400..=499 => 2,
            500.. => 3,
            _ => 0,
        };
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        self.times_mut().request.observe(elapsed);
    }

    /// Counts a target's time to first byte.
    pub(crate) fn target_time(&self, elapsed: Duration) {
        self.times_mut().target.observe(elapsed);
    }

    /// The histograms, to add to (made on first use).
    fn times_mut(&self) -> &Times {
        self.times.get_or_init(Box::default)
    }

    /// The histograms, to read (zeros before the first observation).
    fn times(&self) -> &Times {
        self.times.get().map_or(&NO_TIMES, |t| t)
    }

    /// Counts an auth denial.
    pub(crate) fn auth_denied(&self) {
        self.auth_denies.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed TLS handshake.
    pub(crate) fn tls_failed(&self) {
        self.tls_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a new connection, active until the guard is dropped.
    pub(crate) fn connected(self: &Arc<Self>) -> ActiveConn {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveConn(self.clone())
    }
}

impl Drop for ActiveConn {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Histogram ===

impl Histogram {
    /// A histogram without observations.
    const fn empty() -> Self {
        Self { counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1], sum_us: AtomicU64::new(0) }
    }

    /// Adds one observation.
    pub(crate) fn observe(&self, d: Duration) {
        // Seconds and microseconds apart (saturating): `as_micros` divides a 128-bit number.
        let us = d.as_secs().saturating_mul(1_000_000).saturating_add(d.subsec_micros().into());
        let at = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
        self.counts[at].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of `name` with `labels` (`a="b",…` or "").
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut total = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            total += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {total}");
        }
        total += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| if s.is_empty() { String::new() } else { format!("{{{s}}}") };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {total}", braces(labels));
    }
}

// === impl Registry ===

impl Registry {
    /// The stats of a series, made on first use.
    pub(crate) fn route(&self, network: &str, service: &Arc<str>, target_group: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let key: RouteKey = (routes.name(network), service.clone(), routes.name(target_group));
        routes.by_key.entry(key).or_default().clone()
    }

    /// Forgets the series no route table holds any more (their services, networks or target
    /// groups are gone, or no longer connected); a series that comes back starts from zero,
    /// which Prometheus reads as a counter reset. Called after a new table replaced the old.
    pub(crate) fn prune(&self) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.by_key.retain(|_, stats| Arc::strong_count(stats) > 1);
        routes.names.retain(|name| Arc::strong_count(name) > 1);
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub(crate) fn render(&self, process: &ProcessStats, health: Option<&HealthTable>) -> String {
        let routes: Vec<(RouteKey, Arc<RouteStats>)> = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = String::with_capacity(4096 + routes.len() * 2048);
        let labels = |(sn, svc, tg): &RouteKey| {
            format!("service_network=\"{}\",service=\"{}\",target_group=\"{}\"", escape(sn), escape(svc), escape(tg))
        };
        header(&mut out, "trellis_requests_total", "counter", "Requests answered, by status class.");
        for (key, s) in &routes {
            for (i, code) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let n = s.requests[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "trellis_requests_total{{{},code=\"{code}\"}} {n}", labels(key));
            }
        }
        header(&mut out, "trellis_request_duration_seconds", "histogram", "Time from request head to response end.");
        for (key, s) in &routes {
            s.times().request.render(&mut out, "trellis_request_duration_seconds", &labels(key));
        }
        let forwarded = routes.iter().filter(|((_, _, tg), _)| !tg.is_empty());
        header(
            &mut out,
            "trellis_target_response_duration_seconds",
            "histogram",
            "Time a target took to start its response.",
        );
        for (key, s) in forwarded {
            s.times().target.render(&mut out, "trellis_target_response_duration_seconds", &labels(key));
        }
        let services: Vec<_> = routes.iter().filter(|((_, _, tg), _)| tg.is_empty()).collect();
        let service_labels =
            |(sn, svc, _): &RouteKey| format!("service_network=\"{}\",service=\"{}\"", escape(sn), escape(svc));
        let counters: [Counter; 4] = [
            (
                "trellis_connections_total",
                "counter",
                "Client connections, by the service of their first request.",
                |s| s.connections.load(Ordering::Relaxed) as i64,
            ),
            ("trellis_connections_active", "gauge", "Client connections open now, by service.", |s| {
                s.active.load(Ordering::Relaxed)
            }),
            ("trellis_tls_handshake_failures_total", "counter", "TLS handshakes that failed, by service.", |s| {
                s.tls_failures.load(Ordering::Relaxed) as i64
            }),
            ("trellis_auth_denies_total", "counter", "Requests an auth policy denied.", |s| {
                s.auth_denies.load(Ordering::Relaxed) as i64
            }),
        ];
        for (name, kind, help, read) in counters {
            header(&mut out, name, kind, help);
            for (key, s) in &services {
                let _ = writeln!(out, "{name}{{{}}} {}", service_labels(key), read(s));
            }
        }
        render_health(&mut out, health);
        render_process(&mut out, process);
        out
    }
}

// === impl Series ===

impl Series {
    /// The shared copy of a network or target group ID.
    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.names.insert(shared.clone());
        shared
    }
}

/// `trellis_targets{target_group, state}`: targets by health status.
fn render_health(out: &mut String, health: Option<&HealthTable>) {
    header(out, "trellis_targets", "gauge", "Registered targets, by target group and health status.");
    let Some(health) = health else { return };
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (key, h) in &health.targets {
        let state = match h.status {
            HealthStatus::Draining => "draining",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Initial => "initial",
            HealthStatus::Unavailable => "unavailable",
            HealthStatus::Unhealthy => "unhealthy",
            HealthStatus::Unused => "unused",
        };
        *counts.entry((key.target_group_id.as_str(), state)).or_default() += 1;
    }
    for ((tg, state), n) in counts {
        let _ = writeln!(out, "trellis_targets{{target_group=\"{}\",state=\"{state}\"}} {n}", escape(tg));
    }
}

fn render_process(out: &mut String, p: &ProcessStats) {
    let gauges: [(&str, &str, &str, i64); 7] = [
        (
            "trellis_config_revision",
            "gauge",
            "Store revision of the configuration the data plane runs on.",
            p.revision.load(Ordering::Relaxed),
        ),
        (
            "trellis_health_checks_total",
            "counter",
            "Health-check probes sent.",
            p.health_checks.load(Ordering::Relaxed) as i64,
        ),
        (
            "trellis_connections_refused_total",
            "counter",
            "Client connections closed when accepted because max_connections were open.",
            p.connections_refused.load(Ordering::Relaxed) as i64,
        ),
        (
            "trellis_tls_handshake_failures_unrouted_total",
            "counter",
            "TLS handshakes that failed before a service was known.",
            p.tls_failures.load(Ordering::Relaxed) as i64,
        ),
        (
            "trellis_access_log_records_written_total",
            "counter",
            "Access log records written to every destination of theirs (once per request).",
            p.log_written.load(Ordering::Relaxed) as i64,
        ),
        (
            "trellis_access_log_records_dropped_total",
            "counter",
            "Access log records dropped because the writer fell behind.",
            p.log_dropped.load(Ordering::Relaxed) as i64,
        ),
        (
            "trellis_access_log_write_errors_total",
            "counter",
            "Access log records that a destination could not take (once per destination).",
            p.log_errors.load(Ordering::Relaxed) as i64,
        ),
    ];
    for (name, kind, help, value) in gauges {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    header(out, "trellis_snapshot_apply_duration_seconds", "histogram", "Time to apply a new configuration snapshot.");
    p.apply.render(out, "trellis_snapshot_apply_duration_seconds", "");
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it (IDs never need it; a damaged store might).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An observation lands in the first bucket whose bound it does not pass, in microseconds;
    /// the longest durations in the last, their sum saturated rather than wrapped.
    #[test]
    fn observations_land_in_their_buckets() {
        for (i, &bound) in BUCKETS_US.iter().enumerate() {
            for (us, at) in [(bound - 1, i), (bound, i), (bound + 1, i + 1)] {
                let h = Histogram::empty();
                h.observe(Duration::from_micros(us) + Duration::from_nanos(999));
                let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                assert_eq!(counts.iter().position(|&c| c == 1), Some(at), "{us} us");
                assert_eq!(h.sum_us.load(Ordering::Relaxed), us);
            }
        }
        let h = Histogram::empty();
        h.observe(Duration::MAX);
        assert_eq!(h.counts[BUCKETS_US.len()].load(Ordering::Relaxed), 1);
        assert_eq!(h.sum_us.load(Ordering::Relaxed), u64::MAX);
    }

    #[test]
    fn renders_counters_and_histograms() {
        let registry = Registry::default();
        let s = registry.route("sn-1", &Arc::from("svc-1"), "tg-1");
        s.request(200, Duration::from_millis(3));
        s.request(503, Duration::from_secs(20));
        s.target_time(Duration::from_micros(400));
        let none = registry.route("sn-1", &Arc::from("svc-1"), "");
        none.auth_denied();
        let _conn = none.connected();
        let text = registry.render(&ProcessStats::default(), None);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        has(r#"trellis_requests_total{service_network="sn-1",service="svc-1",target_group="tg-1",code="2xx"} 1"#);
        has(r#"trellis_requests_total{service_network="sn-1",service="svc-1",target_group="tg-1",code="5xx"} 1"#);
        has(
            r#"trellis_request_duration_seconds_bucket{service_network="sn-1",service="svc-1",target_group="tg-1",le="0.005"} 1"#,
        );
        has(
            r#"trellis_request_duration_seconds_bucket{service_network="sn-1",service="svc-1",target_group="tg-1",le="+Inf"} 2"#,
        );
        has(
            r#"trellis_target_response_duration_seconds_bucket{service_network="sn-1",service="svc-1",target_group="tg-1",le="0.0005"} 1"#,
        );
        has(r#"trellis_auth_denies_total{service_network="sn-1",service="svc-1"} 1"#);
        has(r#"trellis_connections_active{service_network="sn-1",service="svc-1"} 1"#);
        has("trellis_snapshot_apply_duration_seconds_count 0");
        // The same key is the same counters.
        assert!(Arc::ptr_eq(&s, &registry.route("sn-1", &Arc::from("svc-1"), "tg-1")));
        // Series no table holds are forgotten.
        drop((s, none, _conn));
        registry.prune();
        assert!(!registry.render(&ProcessStats::default(), None).contains("svc-1"));
    }
}
