//! Wiring: opens the store in the data directory, binds the API socket and serves until a
//! shutdown signal. Binding happens in [`build`], never at configuration time, so that callers
//! (and tests) can bind port 0 and read the address back.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;

use anyhow::Context;
use trellis_control::{ControlConfig, ControlState};
use trellis_store::SqliteStore;

use crate::config::Config;

/// A server with its sockets bound, ready to run.
pub struct Bound {
    listener: tokio::net::TcpListener,
    state: ControlState,
}

/// Opens the store and binds the API.
pub async fn build(config: Config) -> anyhow::Result<Bound> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    // Only the installation may read its store (it will hold certificates and credentials).
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", config.data_dir.display()))?;
    let path = config.data_dir.join("store.db");
    let store = SqliteStore::open(&path, config.durability).with_context(|| format!("opening {}", path.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.listen))?;
    let control = ControlConfig {
        default_region: config.region.clone(),
        account: config.account.clone(),
        partition_label: config.partition_label.clone(),
        hosted_zone_id: config.hosted_zone_id.clone(),
        allowed_hosts: config.allowed_hosts(listener.local_addr().context("reading the bound address")?),
        quotas: config.quotas.clone(),
    };
    let state = ControlState::new(Arc::new(store), control);
    Ok(Bound { listener, state })
}

impl Bound {
    /// The API's bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn wait_termination(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "Trellis API listening");
        trellis_control::serve(self.listener, self.state, shutdown).await.context("serving the API")?;
        tracing::info!("stopped");
        Ok(())
    }
}
