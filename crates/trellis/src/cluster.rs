//! The nodes of one installation over a shared store: which roles each runs, which are alive,
//! and which holds each piece of work that must happen once.
//!
//! A node joins by writing `cluster/node/<name>` (its [`NodeRecord`]) with a lease of its own,
//! renewed every [`RENEW`]: while the record is there the node is alive. A node that dies
//! (`kill -9`, its machine gone, cut off from the store) stops renewing, and the store deletes
//! the record [`TTL_SECONDS`] later; a node that stops cleanly revokes its lease, and the record
//! goes at once. Work that must happen once (the ECS scheduler of a cluster, placing its tasks,
//! stopping the tasks of dead nodes) is held with a lock, `cluster/lock/<name>`, written with
//! the holder's lease: it moves to another node when the holder dies, without anyone deciding.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use trellis_store::{Compare, LeaseId, Op, Store, StoreExt, Txn};

/// Where nodes say they are alive.
pub use trellis_control::health::NODE_PREFIX;
/// Where locks on once-only work are.
pub const LOCK_PREFIX: &str = "cluster/lock/";
/// How long a node that stopped renewing still counts as alive.
pub const TTL_SECONDS: i64 = 3;
/// How often a node renews its lease.
const RENEW: Duration = Duration::from_millis(750);

/// The roles a node runs (`--role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// The AWS APIs, the console and Trellis's own endpoints. Stateless: any number of API
    /// nodes take writes.
    pub api: bool,
    /// The data plane: ingress addresses, DNS, the proxy and its health checks.
    pub proxy: bool,
    /// ECS: tasks run on this node, and it may hold a cluster's scheduler.
    pub tasks: bool,
}

impl Roles {
    /// Every role: one process is the whole installation (the default).
    pub const ALL: Self = Self { api: true, proxy: true, tasks: true };

    /// Parses `all`, or a comma-separated list of `api`, `proxy` and `tasks`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut roles = Self { api: false, proxy: false, tasks: false };
        for role in text.split(',').map(str::trim) {
            match role {
                "all" => roles = Self::ALL,
                "api" => roles.api = true,
                "proxy" => roles.proxy = true,
                "tasks" => roles.tasks = true,
                other => bail!("role {other:?} must be all, api, proxy or tasks (or a comma-separated list)"),
            }
        }
        Ok(roles)
    }

    /// The roles' names, for records and messages.
    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for (on, name) in [(self.api, "api"), (self.proxy, "proxy"), (self.tasks, "tasks")] {
            if on {
                names.push(name);
            }
        }
        names
    }
}

impl Default for Roles {
    fn default() -> Self {
        Self::ALL
    }
}

/// What a live node says of itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeRecord {
    /// Its name (`--node`).
    pub node: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Where its own endpoints are served (`/_trellis/node`, health, metrics; the APIs too on
    /// an API node).
    pub endpoint: String,
    /// The block its VPC ingress addresses come from (proxy nodes in loopback mode).
    pub ingress_range: Option<String>,
    /// Its process.
    pub pid: u32,
    /// When it joined (milliseconds since the epoch).
    pub started_at: u64,
    /// Its Trellis version.
    pub version: String,
}

impl NodeRecord {
    /// Whether the node runs `role`.
    pub fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// This node's membership: its lease, renewed until the node stops.
pub struct Membership {
    store: Arc<dyn Store>,
    record: NodeRecord,
    lease: watch::Sender<LeaseId>,
}

impl Membership {
    /// Joins: writes this node's record with a new lease. A live node of the same name (its
    /// record held by another lease) is waited out for a lease's lifetime (a node restarted
    /// right after `kill -9`), then refused.
    pub async fn join(store: Arc<dyn Store>, record: NodeRecord) -> anyhow::Result<Arc<Self>> {
        let key = format!("{NODE_PREFIX}{}", record.node);
        let value = serde_json::to_vec(&record).context("encoding the node record")?;
        let lease = store.grant_lease(TTL_SECONDS).await.context("taking a lease for this node")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(TTL_SECONDS as u64 + 2);
        loop {
            let txn = Txn {
                compare: vec![Compare::ModRevision(key.clone(), 0)],
                success: vec![Op::PutLeased(key.clone(), value.clone(), lease)],
                failure: Vec::new(),
            };
            if store.txn(txn).await.context("recording this node")?.succeeded {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = store.revoke_lease(lease).await;
                bail!(
                    "a live node is already named {:?} (give each node its own --node, or TRELLIS_NODE)",
                    record.node
                );
            }
            // Keep our own lease alive while we wait.
            let _ = store.keep_alive(lease).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (lease, _) = watch::channel(lease);
        Ok(Arc::new(Self { store, record, lease }))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.record.node
    }

    /// Renews the lease until `stop`, then revokes it (the record and every lock this node
    /// holds go at once). A lease that ran out (the store was unreachable for longer than its
    /// TTL) is replaced and the record written again: locks held with the old one are lost
    /// and taken again by whoever asks first.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(RENEW) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let lease = *self.lease.borrow();
            match self.store.keep_alive(lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(node = %self.record.node, "this node's lease ran out; joining again");
                    if let Err(e) = self.rejoin().await {
                        tracing::warn!(error = %e, "cannot join again; retrying");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew this node's lease; retrying"),
            }
        }
        let lease = *self.lease.borrow();
        if let Err(e) = self.store.revoke_lease(lease).await {
            tracing::warn!(error = %e, "cannot end this node's lease; it runs out on its own");
        }
    }

    async fn rejoin(&self) -> anyhow::Result<()> {
        let lease = self.store.grant_lease(TTL_SECONDS).await?;
        let key = format!("{NODE_PREFIX}{}", self.record.node);
        let value = serde_json::to_vec(&self.record)?;
        let txn = Txn { success: vec![Op::PutLeased(key, value, lease)], ..Txn::default() };
        self.store.txn(txn).await?;
        self.lease.send_replace(lease);
        Ok(())
    }

    /// Whether this node holds the lock `name`, taking it if nobody does. A lock is held for
    /// as long as the node's lease lives.
    pub async fn hold(&self, name: &str) -> Result<bool, trellis_store::Error> {
        let key = format!("{LOCK_PREFIX}{name}");
        let lease = *self.lease.borrow();
        let txn = Txn {
            compare: vec![Compare::ModRevision(key.clone(), 0)],
            success: vec![Op::PutLeased(key.clone(), self.record.node.clone().into_bytes(), lease)],
            failure: Vec::new(),
        };
        if self.store.txn(txn).await?.succeeded {
            tracing::info!(lock = name, node = %self.record.node, "took over once-only work");
            return Ok(true);
        }
        Ok(self.store.get(&key).await?.is_some_and(|kv| kv.value == self.record.node.as_bytes()))
    }
}

/// What `/_trellis/node` and `/_trellis/nodes` read.
#[derive(Clone)]
pub struct NodeState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// This node's name.
    pub node: String,
    /// Its roles.
    pub roles: Roles,
    /// The data plane's snapshots (a node without the proxy role has only the empty one).
    pub snapshots: watch::Receiver<Arc<trellis_model::snapshot::Snapshot>>,
    /// The newest store revision the snapshot compiler has read.
    pub seen: Arc<std::sync::atomic::AtomicI64>,
    /// The API token, to ask the other nodes (their endpoints need it under
    /// `--require-signature`).
    pub token: String,
}

/// `GET /_trellis/node` (this node) and `GET /_trellis/nodes` (every live node, each asked).
pub fn router(state: NodeState) -> axum::Router {
    axum::Router::new()
        .route("/_trellis/node", axum::routing::get(this_node))
        .route("/_trellis/nodes", axum::routing::get(all_nodes))
        .with_state(state)
}

/// This node's view: its roles, the revision its data plane serves, and how far behind the
/// store it is.
async fn describe(state: &NodeState) -> Result<serde_json::Value, trellis_store::Error> {
    let probe =
        trellis_store::RangeRequest { start: NODE_PREFIX.into(), limit: 1, count_only: true, ..Default::default() };
    let store_revision = state.store.range(probe).await?.revision;
    let mut out = serde_json::json!({
        "node": state.node,
        "roles": state.roles.names(),
        "storeRevision": store_revision,
    });
    if state.roles.proxy {
        let seen = state.seen.load(std::sync::atomic::Ordering::Relaxed);
        out["revision"] = serde_json::json!(state.snapshots.borrow().revision);
        out["seenRevision"] = serde_json::json!(seen);
        out["lag"] = serde_json::json!((store_revision - seen).max(0));
    }
    Ok(out)
}

async fn this_node(axum::extract::State(state): axum::extract::State<NodeState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match describe(&state).await {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => store_failed(&e),
    }
}

async fn all_nodes(axum::extract::State(state): axum::extract::State<NodeState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let nodes = match live_nodes(state.store.as_ref()).await {
        Ok(nodes) => nodes,
        Err(e) => return store_failed(&e),
    };
    let asked = nodes.into_iter().map(|record| {
        let state = state.clone();
        async move {
            let view = if record.node == state.node {
                describe(&state).await.map_err(anyhow::Error::from)
            } else {
                ask(&record.endpoint, &state.token).await
            };
            let mut out = serde_json::to_value(&record).unwrap_or_default();
            match view {
                Ok(view) => {
                    for field in ["revision", "seenRevision", "lag", "storeRevision"] {
                        if let Some(v) = view.get(field) {
                            out[field] = v.clone();
                        }
                    }
                    out["reachable"] = serde_json::json!(true);
                }
                Err(e) => {
                    out["reachable"] = serde_json::json!(false);
                    out["error"] = serde_json::json!(format!("{e:#}"));
                }
            }
            out
        }
    });
    // All asked at once; answered in name order.
    let handles: Vec<_> = asked.map(tokio::spawn).collect();
    let mut nodes = Vec::with_capacity(handles.len());
    for handle in handles {
        nodes.push(handle.await.unwrap_or_default());
    }
    axum::Json(serde_json::json!({ "nodes": nodes })).into_response()
}

/// Asks another node for its view, within a second.
async fn ask(endpoint: &str, token: &str) -> anyhow::Result<serde_json::Value> {
    let client = crate::client::Client::new(&format!("http://{endpoint}"))?.with_token(Some(token.to_owned()));
    tokio::time::timeout(Duration::from_secs(1), client.call("GET", "/_trellis/node", None))
        .await
        .context("no answer within a second")?
}

fn store_failed(e: &trellis_store::Error) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({ "message": format!("the store cannot be read: {e}") });
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

/// Every live node, by name.
pub async fn live_nodes(store: &dyn Store) -> Result<Vec<NodeRecord>, trellis_store::Error> {
    let listed = store.list_prefix(NODE_PREFIX, None, 0).await?;
    Ok(listed.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = trellis_store::SqliteStore::open(&dir.path().join("store.db"), Default::default()).unwrap();
        (Arc::new(store), dir)
    }

    fn record(node: &str) -> NodeRecord {
        NodeRecord { node: node.into(), roles: vec!["proxy".into()], ..NodeRecord::default() }
    }

    #[test]
    fn roles_parse() {
        assert_eq!(Roles::parse("all").unwrap(), Roles::ALL);
        assert_eq!(Roles::parse("api,proxy").unwrap(), Roles { api: true, proxy: true, tasks: false });
        assert_eq!(Roles::parse("tasks").unwrap().names(), ["tasks"]);
        assert!(Roles::parse("api,web").is_err());
        assert!(Roles::parse("").is_err());
    }

    #[tokio::test]
    async fn a_lock_is_held_by_one_node_and_moves_when_it_leaves() {
        let (store, _dir) = store();
        let a = Membership::join(store.clone(), record("a")).await.unwrap();
        let b = Membership::join(store.clone(), record("b")).await.unwrap();
        assert!(a.hold("ecs/cluster-1").await.unwrap());
        assert!(a.hold("ecs/cluster-1").await.unwrap(), "the holder keeps it");
        assert!(!b.hold("ecs/cluster-1").await.unwrap(), "one holder at a time");
        assert!(b.hold("ecs/cluster-2").await.unwrap(), "locks are per name");
        let names: Vec<String> = live_nodes(store.as_ref()).await.unwrap().into_iter().map(|n| n.node).collect();
        assert_eq!(names, ["a", "b"]);
        // a stops cleanly: its record and its lock go at once, and b takes the work over.
        let (stop_tx, stop) = watch::channel(false);
        let running = tokio::spawn(a.clone().run(stop));
        stop_tx.send(true).unwrap();
        running.await.unwrap();
        assert_eq!(live_nodes(store.as_ref()).await.unwrap().len(), 1);
        assert!(b.hold("ecs/cluster-1").await.unwrap());
    }

    #[tokio::test]
    async fn a_node_whose_lease_ran_out_joins_again() {
        let (store, _dir) = store();
        let a = Membership::join(store.clone(), record("a")).await.unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let renewing = tokio::spawn(a.clone().run(stop));
        // The lease ends under it (the store was cut off for longer than its TTL, say).
        store.revoke_lease(*a.lease.borrow()).await.unwrap();
        assert!(live_nodes(store.as_ref()).await.unwrap().is_empty());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while live_nodes(store.as_ref()).await.unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the node did not join again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(a.hold("ecs/cluster-1").await.unwrap(), "locks are taken with the new lease");
        stop_tx.send(true).unwrap();
        renewing.await.unwrap();
    }

    #[tokio::test]
    async fn a_second_live_node_of_the_same_name_is_refused() {
        let (store, _dir) = store();
        let a = Membership::join(store.clone(), record("a")).await.unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let renewing = tokio::spawn(a.run(stop));
        let again = Membership::join(store.clone(), record("a")).await;
        assert!(again.is_err(), "two live nodes cannot share a name");
        // Once the first is gone (its lease not renewed: killed), the name is free again.
        renewing.abort();
        let _ = renewing.await;
        let later = Membership::join(store.clone(), record("a")).await;
        assert!(later.is_ok(), "a dead node's name is free once its lease runs out: {:?}", later.err());
        drop(stop_tx);
    }
}
