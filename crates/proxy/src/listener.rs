//! Listeners (not built yet): one socket per ingress address and listener port.

use std::sync::Arc;

use tokio::sync::watch;
use trellis_model::snapshot::Snapshot;

use crate::{Error, HealthTable, InFlight, ProxyConfig};

pub(crate) async fn run(
    _config: Arc<ProxyConfig>,
    _snapshots: watch::Receiver<Arc<Snapshot>>,
    _health: watch::Receiver<Arc<HealthTable>>,
    _in_flight: Arc<InFlight>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    crate::stopped(&mut stop).await;
    Ok(())
}
