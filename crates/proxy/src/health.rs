//! Active health checks (not built yet): probes targets and publishes their health.

use std::sync::Arc;

use tokio::sync::watch;
use trellis_model::snapshot::Snapshot;

use crate::{Error, HealthSink, HealthTable, InFlight, ProxyConfig};

pub(crate) async fn run(
    _config: Arc<ProxyConfig>,
    _snapshots: watch::Receiver<Arc<Snapshot>>,
    _sink: Arc<dyn HealthSink>,
    _health: watch::Sender<Arc<HealthTable>>,
    _in_flight: Arc<InFlight>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    crate::stopped(&mut stop).await;
    Ok(())
}
