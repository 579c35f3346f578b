//! The data plane's observability handle: metrics ([`crate::metrics`]) and access logs
//! ([`crate::access_log`]), made by the composition root, handed to [`crate::run`], and read
//! by the root's `/_trellis/metrics` and `/_trellis/access-logs` endpoints.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::HealthTable;
use crate::access_log::{AccessLog, AccessLogConfig};
use crate::metrics::{ProcessStats, Registry};

/// Metrics and access logs of one data plane.
pub struct Telemetry {
    pub(crate) registry: Registry,
    pub(crate) process: Arc<ProcessStats>,
    pub(crate) log: AccessLog,
    /// The health checker's table, once the data plane runs (for target health counts).
    health: Mutex<Option<watch::Receiver<Arc<HealthTable>>>>,
}

impl Telemetry {
    /// Starts the access log writer with `config`.
    pub fn new(config: AccessLogConfig) -> Arc<Self> {
        let process = Arc::new(ProcessStats::default());
        let log = AccessLog::start(config, process.clone());
        Arc::new(Self { registry: Registry::default(), process, log, health: Mutex::new(None) })
    }

    /// Every metric, in the Prometheus text format (version 0.0.4).
    pub fn metrics(&self) -> String {
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|rx| rx.borrow().clone());
        self.registry.render(&self.process, health.as_deref())
    }

    /// Closes the access log when the data plane has stopped: what is pending is written and
    /// the files closed before the process ends (waiting at most `wait`).
    pub fn close_access_log(&self, wait: std::time::Duration) {
        self.log.close(wait);
    }

    /// The newest `limit` access log records this node wrote (for one service if given),
    /// oldest first, one JSON object a line.
    pub fn access_logs(&self, service: Option<&str>, limit: usize) -> String {
        self.log.recent(service, limit)
    }

    /// A handle for tests: records go to a directory of their own under the system's
    /// temporary directory (only if a test subscribes).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Arc<Self> {
        let data_dir = std::env::temp_dir().join(format!("trellis-test-logs-{}", std::process::id()));
        Self::new(AccessLogConfig {
            data_dir,
            node: "test".into(),
            max_file_bytes: 1 << 20,
            keep_files: 1,
            queue: 1024,
            recent: 1024,
        })
    }

    /// Follows the health checker's table.
    pub(crate) fn watch_health(&self, rx: watch::Receiver<Arc<HealthTable>>) {
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
    }
}
