//! The data plane: listeners on each associated VPC's ingress address, the request path
//! (route → select → forward), active health checks, and the DNS responder. It runs on the
//! [`Snapshot`]s it is handed and never touches the store; what it learns (target health,
//! targets done draining) it reports through a [`HealthSink`] the composition root implements.
//!
//! Modules: `listener` (which sockets are open, accept loops), `conn` (one client connection,
//! served by one task: heads, clocks, local answers), `guard` (refuses ambiguous framing and
//! oversized heads before they are parsed), `h1` (HTTP/1.1 heads and chunked bodies on the
//! wire), `table` (per-snapshot lookups), `request` (the routing phases), `balance` (weighted
//! and round-robin selection), `forward` (upstream pools, and the exchange with a target),
//! `headers` (what targets and clients see), `error` (errors the proxy makes itself), `health`
//! (probes and the status machine), `dns` (answers from the snapshot), `tls` (telling TLS from
//! cleartext, SNI, certificates, passthrough).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use trellis_model::iam::Identities;
use trellis_model::snapshot::Snapshot;
use trellis_model::tls::Certificates;
use trellis_net::{Network, Ports};

mod access_log;
mod auth;
mod balance;
mod clock;
mod conn;
mod dns;
mod error;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod h1;
mod h2;
mod headers;
mod health;
pub mod http2;
mod listener;
mod metrics;
mod request;
mod swar;
mod table;
mod telemetry;
mod tls;

pub use access_log::AccessLogConfig;
pub use telemetry::Telemetry;

/// Settings of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Which real port serves each Lattice port (offset below 1024 without root).
    pub ports: Ports,
    /// How long a target may take to start answering a request before the client gets a 504.
    pub response_timeout: Duration,
    /// A connection to a target not made by then fails, and the request goes to another target
    /// when it may (a target that vanished, as a stopped task's address does, answers nothing).
    pub connect_timeout: Duration,
    /// How long a client may take to send a whole request head.
    pub header_read_timeout: Duration,
    /// No connection lives longer than this (Lattice: 10 minutes).
    pub max_connection_age: Duration,
    /// Most client connections open at once, over every listener of this node; more are
    /// closed as soon as they are accepted (and counted).
    pub max_connections: usize,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields accepted in a request head.
    pub max_headers: usize,
    /// How long a deregistered target drains at most before it is removed.
    pub deregistration_delay: Duration,
    /// Lowest health-check interval accepted (AWS: 5 s); tests and demos lower it.
    pub min_health_check_interval: Duration,
    /// How VPCs are made real: where each VPC's clients enter, where targets are reached from
    /// (in loopback mode targets outside 127.0.0.0/8 and ::1 are never contacted).
    pub network: Network,
}

/// Which target a health fact is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    /// `tg-…`.
    pub target_group_id: String,
    /// The target's ID as registered.
    pub target_id: String,
    /// Its port.
    pub port: u16,
}

/// A target's status, as `ListTargets` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Deregistered; finishing requests in flight.
    Draining,
    /// Passing checks.
    Healthy,
    /// Registered; no check has passed yet.
    Initial,
    /// Checks are off, or the target cannot be checked.
    Unavailable,
    /// Failing checks.
    Unhealthy,
    /// No listener or rule uses the target group.
    Unused,
}

/// A target's status and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetHealth {
    /// The status.
    pub status: HealthStatus,
    /// `ListTargets`'s `reasonCode`, if any.
    pub reason: Option<&'static str>,
}

impl HealthStatus {
    /// The status named as `ListTargets` names it (`HEALTHY`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "DRAINING" => Self::Draining,
            "HEALTHY" => Self::Healthy,
            "INITIAL" => Self::Initial,
            "UNAVAILABLE" => Self::Unavailable,
            "UNHEALTHY" => Self::Unhealthy,
            "UNUSED" => Self::Unused,
            _ => return None,
        })
    }
}

/// The `reasonCode` the health checker gives that reads `text` (another node's finding).
pub fn reason_code(text: &str) -> Option<&'static str> {
    use health::check::*;
    [
        DRAINING,
        NOT_IN_USE,
        DISABLED,
        NOT_SUPPORTED,
        PROTOCOL_UNSUPPORTED,
        CONFIG_INVALID,
        NOT_LOOPBACK,
        NO_ADDRESS,
        FAILED,
    ]
    .into_iter()
    .find(|known| *known == text)
}

/// The health of every target, as the health checker last published it.
#[derive(Clone, Debug, Default)]
pub struct HealthTable {
    /// By target.
    pub targets: HashMap<TargetKey, TargetHealth>,
}

/// Requests in flight per target, kept by the request path and read by the health checker
/// (a draining target is gone once it has none).
#[derive(Debug, Default)]
pub struct InFlight {
    counts: RwLock<HashMap<TargetKey, Arc<AtomicUsize>>>,
}

/// A change the data plane reports to the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthReport {
    /// A target's status changed.
    Status {
        /// The region and account of its target group.
        region: String,
        /// The account.
        account: String,
        /// Which target.
        key: TargetKey,
        /// Its new health.
        health: TargetHealth,
    },
    /// A draining target has no request in flight (or its delay passed): remove it.
    Drained {
        /// The region of its target group.
        region: String,
        /// The account.
        account: String,
        /// Which target.
        key: TargetKey,
    },
}

/// Where the data plane's reports go (the composition root writes them to the store).
pub trait HealthSink: Send + Sync + 'static {
    /// Takes a batch of reports. Must not block: queue and return.
    fn report(&self, reports: Vec<HealthReport>);
}

/// Why the data plane stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound or served.
    #[error("data plane I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What the data plane runs on.
pub struct Inputs {
    /// The compiled configuration.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The certificates HTTPS listeners serve.
    pub certificates: watch::Receiver<Arc<Certificates>>,
    /// The credentials signed requests are verified with.
    pub identities: watch::Receiver<Arc<Identities>>,
    /// Where metrics and access log records go.
    pub telemetry: Arc<Telemetry>,
    /// Health checks divided among proxy nodes (the default: this node checks everything).
    pub shared_health: watch::Receiver<Arc<SharedHealth>>,
}

/// Health checks divided among the proxy nodes that share a store: the target groups another
/// node checks, and what the nodes that check them found. This node does not probe those
/// groups' targets; it routes on the statuses found (a target no status was found for yet shows
/// `INITIAL`). Draining stays this node's own: it knows its requests in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedHealth {
    /// Target groups (by ID) another node checks.
    pub elsewhere: std::collections::HashSet<String>,
    /// What was found, by target.
    pub statuses: HashMap<TargetKey, TargetHealth>,
}

/// Runs the data plane until `shutdown` completes: listeners and DNS follow the snapshots, the
/// health checker probes the targets in them and reports through `sink`.
pub async fn run(
    config: ProxyConfig,
    inputs: Inputs,
    sink: Arc<dyn HealthSink>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Inputs { snapshots, certificates, identities, telemetry, shared_health } = inputs;
    let (stop_tx, stop) = watch::channel(false);
    let (health_tx, health) = watch::channel(Arc::new(HealthTable::default()));
    telemetry.watch_health(health.clone());
    let in_flight = Arc::new(InFlight::default());
    let config = Arc::new(config);
    let checker = tokio::spawn(health::run(
        config.clone(),
        snapshots.clone(),
        shared_health.clone(),
        sink,
        health_tx,
        in_flight.clone(),
        telemetry.process.clone(),
        stop.clone(),
    ));
    let dns = tokio::spawn(dns::run(config.clone(), snapshots.clone(), stop.clone()));
    let inputs = Inputs { snapshots, certificates, identities, telemetry, shared_health };
    let listeners = tokio::spawn(listener::run(config, inputs, health, in_flight, stop));
    shutdown.await;
    let _ = stop_tx.send(true);
    for task in [checker, dns, listeners] {
        match task.await {
            Ok(result) => result?,
            Err(e) => tracing::error!(error = %e, "a data-plane task panicked"),
        }
    }
    Ok(())
}

/// Completes once the stop signal is raised (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl InFlight {
    /// The counter for a target, created on first use.
    pub fn counter(&self, key: &TargetKey) -> Arc<AtomicUsize> {
        if let Some(c) = self.counts.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return c.clone();
        }
        self.counts.write().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone()
    }

    /// Forgets the counters nothing else holds: those of targets no route table has (the
    /// tables' targets hold theirs) with no request in flight (each holds its target's). A
    /// target's key is forgotten some time after it left the configuration, so the map does
    /// not grow with every target there ever was (each ECS task is a new one); a counter with
    /// requests in flight stays, and one made again for a key starts at zero, as it would.
    pub(crate) fn forget_unheld(&self) {
        self.counts.write().unwrap_or_else(|p| p.into_inner()).retain(|_, c| Arc::strong_count(c) > 1);
    }

    /// How many targets have a counter.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.counts.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Requests in flight to a target now.
    pub fn get(&self, key: &TargetKey) -> usize {
        self.counts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Acquire))
    }
}
