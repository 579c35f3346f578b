//! Wiring: opens the store in the data directory, binds the API socket, and runs the API, the
//! snapshot compiler and the data plane until a shutdown signal. Binding happens in [`build`],
//! never at configuration time, so that callers (and tests) can bind port 0 and read the
//! address back.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use trellis_control::pki::PkiSettings;
use trellis_control::{ControlConfig, ControlState};
use trellis_model::snapshot::Snapshot;
use trellis_model::tls::Certificates;
use trellis_store::{EtcdStore, SqliteStore, Store};

use crate::agent::{Agent, AgentConfig, Lattice};
use crate::cluster::{Membership, NodeRecord};
use crate::config::{Config, StoreConfig};
use crate::netmgr::NetManager;
use crate::watch::Ingress;
use std::sync::atomic::AtomicI64;
use trellis_net::{Netns, Network};

/// The file in the data directory that holds the API token (readable only by the
/// installation's user), where the CLI on this machine finds it.
pub const TOKEN_FILE: &str = "api-token";

/// A server with its sockets bound, ready to run.
pub struct Bound {
    /// This node's place among the nodes sharing the store.
    membership: Arc<Membership>,
    /// The newest store revision the snapshot compiler has read.
    seen: Arc<AtomicI64>,
    listener: tokio::net::TcpListener,
    /// `--metrics-listen`'s socket.
    metrics_listener: Option<tokio::net::TcpListener>,
    telemetry: Arc<trellis_proxy::Telemetry>,
    /// What the listener serves (the API, or a node's own endpoints only).
    router: axum::Router,
    /// The API, for the agent's calls in process.
    api: axum::Router,
    store: Arc<dyn Store>,
    config: Config,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// netns mode's network manager.
    netmgr: Option<Arc<NetManager>>,
}

/// Opens the store and binds the API.
pub async fn build(config: Config) -> anyhow::Result<Bound> {
    // Before anything else: without the privileges, this is the one error to see.
    let netns = match &config.network {
        Network::Loopback => None,
        Network::Netns(naming) => {
            let netns = Netns::new(naming.clone());
            let check = netns.clone();
            tokio::task::spawn_blocking(move || check.check_privileges())
                .await
                .context("checking privileges")?
                .context("--network netns")?;
            Some(netns)
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    // Only the installation may read its store (it will hold certificates and credentials).
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", config.data_dir.display()))?;
    let store = open_store(&config).await?;
    // The account's root access key exists from the first start (`trellis credentials`).
    trellis_control::identity::ensure_root_key(store.as_ref(), &config.account)
        .await
        .context("making the account's root access key")?;
    // The API token (`--require-signature`, the console) exists from the first start too, and
    // the CLI on this machine reads it from the data directory.
    let api_token = trellis_control::access::ensure_api_token(store.as_ref()).await.context("making the API token")?;
    write_private(&config.data_dir.join(TOKEN_FILE), &api_token)?;
    let roles = config.roles;
    // The network manager makes VPC networks for the data plane and task networks for tasks.
    let netmgr = match netns {
        Some(netns) if roles.proxy || roles.tasks => Some(NetManager::new(store.clone(), config.node.clone(), netns)),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.listen))?;
    let record = NodeRecord {
        node: config.node.clone(),
        roles: roles.names().into_iter().map(str::to_owned).collect(),
        endpoint: listener.local_addr().context("reading the bound address")?.to_string(),
        ingress_range: (roles.proxy && matches!(config.network, Network::Loopback)).then(|| {
            let (first, last) = config.ingress_range.hosts();
            format!("{first}-{last}")
        }),
        pid: std::process::id(),
        started_at: crate::cluster::now_ms(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let membership = Membership::join(store.clone(), record).await?;
    // A netns-mode VPC is a network on one host: a second data-plane node would make a second,
    // separate network for it (spanning hosts needs an overlay, out of scope).
    if matches!(config.network, Network::Netns(_)) && (roles.proxy || roles.tasks) {
        let others = crate::cluster::live_nodes(store.as_ref()).await.context("listing the live nodes")?;
        if let Some(other) = others.iter().find(|n| n.node != config.node && (n.has("proxy") || n.has("tasks"))) {
            bail!(
                "node {:?} already runs a data plane or tasks, and --network netns runs them on one node only; \
                 use --network loopback for several data-plane nodes",
                other.node
            );
        }
    }
    let seen = Arc::new(AtomicI64::new(0));
    let control = ControlConfig {
        default_region: config.region.clone(),
        account: config.account.clone(),
        organization_id: config.organization_id.clone(),
        partition_label: config.partition_label.clone(),
        hosted_zone_id: config.hosted_zone_id.clone(),
        allowed_hosts: config.allowed_hosts(listener.local_addr().context("reading the bound address")?),
        quotas: config.quotas.clone(),
        relaxed_health_checks: config.relaxed_health_checks,
        loopback_targets: config.network.loopback_only(),
        require_signature: config.require_signature,
        api_token: api_token.clone(),
        data_dir: Some(config.data_dir.clone()),
    };
    let metrics_listener = match config.metrics_listen {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener to {addr}"))?,
        ),
    };
    let telemetry = trellis_proxy::Telemetry::new(config.access_log.clone());
    // One state for the API and the console, so that the sessions the console opens are the
    // ones the API accepts in place of a signature.
    let state = ControlState::new(store.clone(), control);
    let (snapshots, _) = watch::channel(Arc::new(Snapshot::default()));
    let ours = axum::Router::new()
        .route("/_trellis/vpcs/{vpc}/ingress", get(vpc_ingress))
        .with_state(IngressState {
            snapshots: snapshots.subscribe(),
            offset: config.proxy.ports.low_port_offset,
            netns: matches!(config.network, Network::Netns(_)),
        })
        .merge(crate::cluster::router(crate::cluster::NodeState {
            store: store.clone(),
            node: config.node.clone(),
            roles,
            snapshots: snapshots.subscribe(),
            seen: seen.clone(),
            token: api_token.clone(),
        }))
        .merge(crate::instances::router(netmgr.clone()))
        .merge(crate::logs::router(config.data_dir.clone()))
        .merge(crate::access_logs::router(telemetry.clone()))
        .merge(trellis_control::pki::router(store.clone()))
        .merge(trellis_control::identity::router(
            store.clone(),
            config.account.clone(),
            api_token,
            config.region.clone(),
        ))
        .merge(crate::console::router(
            state.clone(),
            crate::console::NodeInfo {
                account: config.account.clone(),
                region: config.region.clone(),
                node: config.node.clone(),
            },
        ));
    // The router the API answers with; the agent calls Lattice through it in process, so a
    // tasks node builds it too.
    let api = trellis_control::router_with(state.clone(), ours.clone());
    let router =
        if roles.api { api.clone() } else { trellis_control::node_router(state, ours, roles.names().join(",")) };
    Ok(Bound { membership, seen, listener, metrics_listener, telemetry, router, api, store, config, snapshots, netmgr })
}

/// Opens the configured store: the embedded one in the data directory, or etcd (which must
/// answer now: a store that cannot be reached at start is an error, not a retry loop).
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.store {
        StoreConfig::Embedded => {
            let path = config.data_dir.join("store.db");
            let store =
                SqliteStore::open(&path, config.durability).with_context(|| format!("opening {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreConfig::Etcd(etcd) => {
            let store = EtcdStore::connect(etcd).await.context("opening the etcd store")?;
            Ok(Arc::new(store))
        }
    }
}

impl Bound {
    /// The API's bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn wait_termination(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let Self {
            membership,
            seen,
            listener,
            metrics_listener,
            telemetry,
            router,
            api,
            store,
            config,
            snapshots,
            netmgr,
        } = self;
        let roles = config.roles;
        let (stop_tx, stop) = watch::channel(false);
        // The node stays a member until its work has stopped (tasks drain through the data
        // plane, its locks must not move while it still acts on them).
        let (leave_tx, leave) = watch::channel(false);
        let member = tokio::spawn(membership.clone().run(leave));
        // Every part this node runs stops when `stop` is raised; what it does not run is not
        // started (`roles`).
        let mut parts: Vec<(&'static str, tokio::task::JoinHandle<()>)> = Vec::new();
        if roles.api {
            parts.push(("sweeper", tokio::spawn(sweep_tokens(store.clone(), stop.clone()))));
        }
        // netns mode: the network manager stands between the compiler and the data plane, so
        // that a VPC's network exists before the proxy opens sockets in it.
        let netmgr_for_agent = netmgr.clone();
        let mut proxy = None;
        let mut reports = None;
        if roles.proxy {
            let (compiled, ingress) = match netmgr {
                None => (snapshots.clone(), Ingress::Loopback(config.ingress_range)),
                Some(mgr) => {
                    let (raw, raw_rx) = watch::channel(Arc::new(Snapshot::default()));
                    parts.push(("network", tokio::spawn(mgr.run(raw_rx, snapshots.clone(), stop.clone()))));
                    (raw, Ingress::LinkLocal)
                }
            };
            let (shared_tx, shared_health) = watch::channel(Arc::new(trellis_proxy::SharedHealth::default()));
            let compiler =
                crate::watch::run(store.clone(), config.node.clone(), ingress, compiled, shared_tx, seen, stop.clone());
            parts.push(("compiler", tokio::spawn(compiler)));
            let trimmer = crate::memory::trim_after_changes(snapshots.subscribe(), stop.clone());
            parts.push(("trimmer", tokio::spawn(trimmer)));
            let (sink, drain_reports) = crate::watch::StoreSink::new(store.clone(), config.node.clone());
            reports = Some(tokio::spawn(drain_reports));
            let (certificates_tx, certificates) = watch::channel(Arc::new(Certificates::default()));
            let pki_settings = PkiSettings {
                lifetime: config.certificate_lifetime,
                zones: vec![trellis_model::dns_name::zone(&config.partition_label, &config.region)],
            };
            let pki = trellis_control::pki::run(
                store.clone(),
                pki_settings,
                snapshots.subscribe(),
                certificates_tx,
                stop.clone(),
            );
            parts.push(("pki", tokio::spawn(pki)));
            let (identities_tx, identities) = watch::channel(Arc::new(trellis_model::iam::Identities::default()));
            let credentials = trellis_control::identity::run(
                store.clone(),
                config.organization_id.clone(),
                identities_tx,
                stop.clone(),
            );
            parts.push(("credentials", tokio::spawn(credentials)));
            let inputs = trellis_proxy::Inputs {
                snapshots: snapshots.subscribe(),
                certificates,
                identities,
                telemetry: telemetry.clone(),
                shared_health,
            };
            let mut proxy_stop = stop.clone();
            proxy = Some(tokio::spawn(trellis_proxy::run(config.proxy.clone(), inputs, sink, async move {
                let _ = proxy_stop.wait_for(|s| *s).await;
            })));
        }
        let agent = if roles.tasks {
            let agent = Agent::new(
                store.clone(),
                Lattice::new(api, addr.to_string()),
                netmgr_for_agent,
                Some(membership.clone()),
                AgentConfig {
                    data_dir: config.data_dir.clone(),
                    node: config.node.clone(),
                    trellis: std::env::current_exe().context("finding the trellis binary")?,
                    loopback: matches!(config.network, Network::Loopback)
                        .then_some((config.task_range, config.task_port_offset)),
                    drain_timeout: config.proxy.deregistration_delay + std::time::Duration::from_secs(5),
                },
            );
            Some(tokio::spawn(agent.run(stop.clone())))
        } else {
            None
        };
        let metrics = metrics_listener.map(|l| {
            let router = crate::access_logs::metrics_router(telemetry.clone());
            let mut stop = stop.clone();
            tokio::spawn(trellis_control::serve(l, router, async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        });
        tracing::info!(%addr, node = %config.node, roles = %roles.names().join(","), "Trellis listening");
        let mut api_stop = stop.clone();
        let served = trellis_control::serve(listener, router, async move {
            let _ = api_stop.wait_for(|s| *s).await;
        });
        // Whichever ends first, the signal or the API (if it fails), stops everything else.
        tokio::pin!(served);
        let served = tokio::select! {
            () = shutdown => {
                let _ = stop_tx.send(true);
                served.await
            }
            result = &mut served => {
                let _ = stop_tx.send(true);
                result
            }
        };
        served.context("serving the API")?;
        // Tasks stop before the data plane does (they deregister and drain through it).
        if let Some(agent) = agent {
            let _ = agent.await;
        }
        for (_, part) in parts {
            let _ = part.await;
        }
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        if let Some(proxy) = proxy {
            match proxy.await {
                Ok(result) => result.context("running the data plane")?,
                Err(e) => anyhow::bail!("the data plane panicked: {e}"),
            }
        }
        // The sink's task ends once the data plane (its last sender) is gone.
        if let Some(reports) = reports {
            let _ = reports.await;
        }
        // Records of the last requests reach their files before the process ends.
        let log = telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || log.close_access_log(std::time::Duration::from_secs(5))).await;
        // Last: the node leaves (its record and locks go) once its work has stopped.
        let _ = leave_tx.send(true);
        let _ = member.await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Writes `text` to `path`, readable and writable by this user only: into a new file beside it,
/// then renamed over it, so that a reader sees the old text or the new, never a part, and a
/// descriptor opened on an older file with a wider mode never sees the new one.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let fresh = path.with_extension(format!("new-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&fresh)
        .and_then(|mut file| file.write_all(format!("{text}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&fresh, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&fresh);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

/// Every ten minutes, forgets `clientToken` answers past their lifetime and long expired STS
/// sessions.
async fn sweep_tokens(store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(600);
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        match trellis_control::sweep_tokens(store.as_ref(), now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired client tokens swept"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep expired client tokens"),
        }
        match trellis_control::identity::sweep_sessions(store.as_ref(), now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "long expired STS sessions swept"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep expired STS sessions"),
        }
    }
}

#[derive(Clone)]
struct IngressState {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    offset: u16,
    netns: bool,
}

/// `GET /_trellis/vpcs/{vpc}/ingress`: where clients in that VPC reach Lattice.
async fn vpc_ingress(State(ingress): State<IngressState>, Path(vpc): Path<String>) -> Response {
    let snapshot = ingress.snapshots.borrow().clone();
    let found = snapshot.vpcs.get(&vpc).and_then(|v| v.ingress.map(|ip| (v, ip)));
    match found {
        Some((view, ip)) => {
            let ports: std::collections::BTreeSet<u16> = view
                .reach
                .keys()
                .filter_map(|id| snapshot.services.get(id))
                .flat_map(|s| s.listeners.keys().copied())
                .collect();
            let dns_port = if ingress.offset == 0 { 53 } else { 53 + ingress.offset };
            // This node's address, then the other live proxy nodes' (what DNS answers too).
            let addresses: Vec<String> =
                std::iter::once(ip).chain(view.peers.iter().copied()).map(|a| a.to_string()).collect();
            axum::Json(serde_json::json!({
                "vpcId": vpc,
                "network": if ingress.netns { "netns" } else { "loopback" },
                "address": ip.to_string(),
                "addresses": addresses,
                "dnsPort": dns_port,
                "lowPortOffset": ingress.offset,
                "listenerPorts": ports,
            }))
            .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "message": format!("VPC {vpc} has no ingress address: it is not associated with any service network"),
            })),
        )
            .into_response(),
    }
}
