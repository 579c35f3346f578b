//! The DNS responder (not built yet): answers for each VPC's reachable services on its ingress
//! address.

use std::sync::Arc;

use tokio::sync::watch;
use trellis_model::snapshot::Snapshot;

use crate::{Error, ProxyConfig};

pub(crate) async fn run(
    _config: Arc<ProxyConfig>,
    _snapshots: watch::Receiver<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    crate::stopped(&mut stop).await;
    Ok(())
}
