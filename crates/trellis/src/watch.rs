//! Feeding the data plane: watches the store, compiles a new [`Snapshot`] after every change
//! (changes that arrive together are compiled once, and changes the last compile already read
//! are not compiled again), hands VPCs that became reachable an ingress
//! address, and publishes each snapshot on a watch channel. If the store stops answering, the
//! last snapshot stays in force and compiling is retried.
//!
//! Also the other direction: [`StoreSink`] takes the data plane's health reports and writes
//! them to the store, off the data plane's path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use trellis_model::snapshot::Snapshot;
use trellis_net::IngressRange;
use trellis_proxy::{HealthReport, HealthSink};
use trellis_store::{Revision, Store, WatchStream};

/// How long to gather more changes after the first one before compiling.
const DEBOUNCE: Duration = Duration::from_millis(2);
/// How long to wait before retrying when the store fails.
const RETRY: Duration = Duration::from_millis(500);

/// Compiles and publishes snapshots until `stop` is raised.
pub async fn run(
    store: Arc<dyn Store>,
    node: String,
    ingress: Ingress,
    tx: watch::Sender<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes: Option<WatchStream> = None;
    loop {
        let snapshot = match compile_with_ingress(store.as_ref(), &node, ingress).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot compile the configuration; serving the last one");
                changes = None;
                if pause(&mut stop, RETRY).await {
                    return;
                }
                continue;
            }
        };
        let revision = snapshot.revision;
        tx.send_replace(Arc::new(snapshot));
        if changes.is_none() {
            match store.watch(String::new(), revision + 1).await {
                Ok(stream) => changes = Some(stream),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the store; retrying");
                    if pause(&mut stop, RETRY).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(stream) = changes.as_mut() else { continue };
        match next_change(stream, &mut stop, revision).await {
            Change::Config => {}
            // The stream failed (compaction, store gone): compile afresh and watch again.
            Change::Lost => changes = None,
            Change::Stop => return,
        }
    }
}

enum Change {
    Config,
    Lost,
    Stop,
}

/// Waits for a change that matters to the data plane, then gathers what else arrives within
/// [`DEBOUNCE`]. Health records are the data plane's own output: they never need a recompile;
/// IAM, ECS, address and namespace records are not part of the snapshot (see [`not_compiled`]).
/// Nor do changes at or below `compiled`, the revision of the last compile: it read them
/// already. (The stream lags behind the store while compiles are slow: a compile at 10,000
/// services takes tens of milliseconds, and the stream hands over a few hundred events at a
/// time. Compiling again for each of those stale batches kept the loop busy for seconds after
/// the last write, rebuilding the same snapshot.)
async fn next_change(stream: &mut WatchStream, stop: &mut watch::Receiver<bool>, compiled: Revision) -> Change {
    loop {
        let event = tokio::select! {
            event = stream.recv() => event,
            () = stopped(stop) => return Change::Stop,
        };
        match event {
            Some(Ok(e)) if e.kv.mod_revision <= compiled || is_health(&e.kv.key) || not_compiled(&e.kv.key) => continue,
            Some(Ok(_)) => break,
            Some(Err(_)) | None => return Change::Lost,
        }
    }
    tokio::time::sleep(DEBOUNCE).await;
    while let Ok(Ok(_)) = stream.try_recv() {}
    Change::Config
}

fn is_health(key: &str) -> bool {
    key.starts_with("r/") && key.contains("/health/")
}

/// Records the snapshot is not made of: IAM (`iam/`), ECS (`ecs/`: the agent watches those),
/// addresses handed out in VPCs (`ipam/`), and a node's instances and namespaces.
fn not_compiled(key: &str) -> bool {
    ["iam/", "ecs/", "ipam/"].iter().any(|p| key.starts_with(p))
        || (key.starts_with("node/") && (key.contains("/instance/") || key.contains("/netns/")))
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Where associated VPCs reach Lattice.
#[derive(Clone, Copy, Debug)]
pub enum Ingress {
    /// An address of this range each, allocated once and recorded in the store (loopback mode).
    Loopback(IngressRange),
    /// The link-local address inside each VPC's own namespace (netns mode).
    LinkLocal,
}

/// Compiles a snapshot; if a reachable VPC has no ingress address yet, gives it one and
/// compiles again (bounded). In netns mode every associated VPC's address is the link-local one.
async fn compile_with_ingress(
    store: &dyn Store,
    node: &str,
    ingress: Ingress,
) -> Result<Snapshot, Box<dyn std::error::Error + Send + Sync>> {
    let range = match ingress {
        Ingress::Loopback(range) => range,
        Ingress::LinkLocal => {
            let mut snapshot = trellis_control::compile::compile(store, node).await?;
            for vpc in snapshot.vpcs.values_mut() {
                vpc.ingress = Some(std::net::IpAddr::V4(trellis_net::netns::LINK_LOCAL));
            }
            return Ok(snapshot);
        }
    };
    for _ in 0..8 {
        let snapshot = trellis_control::compile::compile(store, node).await?;
        let missing: Vec<(String, String)> = snapshot
            .vpcs
            .values()
            .filter(|v| v.ingress.is_none())
            .map(|v| (v.region.clone(), v.vpc_id.clone()))
            .collect();
        if missing.is_empty() {
            return Ok(snapshot);
        }
        for (region, vpc) in missing {
            let taken = trellis_control::ingress::taken(store, node).await?;
            let ip = range.allocate(|ip| taken.contains(&ip))?;
            if trellis_control::ingress::claim(store, node, &region, &vpc, ip).await? {
                tracing::info!(%vpc, %ip, "VPC ingress address allocated");
            }
        }
    }
    Err("ingress allocation kept racing with other writers".into())
}

/// Sleeps, unless stopped first (then returns true).
async fn pause(stop: &mut watch::Receiver<bool>, how_long: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(how_long) => false,
        () = stopped(stop) => true,
    }
}

/// The data plane's [`HealthSink`]: queues reports for a task that writes them to the store.
pub struct StoreSink {
    tx: mpsc::UnboundedSender<Vec<HealthReport>>,
}

impl StoreSink {
    /// The sink, and the task that drains it into `store` as `node`.
    pub fn new(store: Arc<dyn Store>, node: String) -> (Arc<Self>, impl std::future::Future<Output = ()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<HealthReport>>();
        let task = async move {
            while let Some(mut batch) = rx.recv().await {
                // Take whatever else is queued too: statuses are written many per transaction.
                while let Ok(more) = rx.try_recv() {
                    batch.extend(more);
                }
                if let Err(e) = write_reports(store.as_ref(), &node, batch).await {
                    tracing::warn!(error = %e, "cannot record health reports");
                }
            }
        };
        (Arc::new(Self { tx }), task)
    }
}

impl HealthSink for StoreSink {
    fn report(&self, reports: Vec<HealthReport>) {
        // The receiver lives as long as the server; if it is gone, we are shutting down.
        let _ = self.tx.send(reports);
    }
}

async fn write_reports(
    store: &dyn Store,
    node: &str,
    reports: Vec<HealthReport>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use trellis_control::health::{self, StatusUpdate, TargetRef};
    let mut statuses = Vec::new();
    for report in &reports {
        match report {
            HealthReport::Status { region, account, key, health: h } => statuses.push(StatusUpdate {
                target: TargetRef {
                    region,
                    account,
                    target_group_id: &key.target_group_id,
                    target_id: &key.target_id,
                    port: key.port,
                },
                status: health_status_name(h.status),
                reason: h.reason,
            }),
            HealthReport::Drained { region, account, key } => {
                health::remove_drained(store, region, account, &key.target_group_id, &key.target_id, key.port).await?;
            }
        }
    }
    health::record_statuses(store, node, &statuses).await?;
    Ok(())
}

/// The `TargetStatus` enum value of a status.
fn health_status_name(status: trellis_proxy::HealthStatus) -> &'static str {
    use trellis_proxy::HealthStatus::*;
    match status {
        Draining => "DRAINING",
        Healthy => "HEALTHY",
        Initial => "INITIAL",
        Unavailable => "UNAVAILABLE",
        Unhealthy => "UNHEALTHY",
        Unused => "UNUSED",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use trellis_store::{
        BoxFuture, Error, EventKind, KeyValue, Op, RangeRequest, RangeResponse, SqliteStore, Txn, TxnResponse,
        WatchEvent,
    };

    use super::*;

    /// A store whose reads can be made to fail, as a store that stopped answering would.
    struct Flaky {
        inner: SqliteStore,
        down: AtomicBool,
    }

    impl Store for Flaky {
        fn range(&self, req: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, Error>> {
            if self.down.load(Ordering::SeqCst) {
                return Box::pin(std::future::ready(Err(Error::Backend("store is down".into()))));
            }
            self.inner.range(req)
        }

        fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse, Error>> {
            self.inner.txn(txn)
        }

        fn watch(&self, prefix: String, from: i64) -> BoxFuture<'_, Result<WatchStream, Error>> {
            self.inner.watch(prefix, from)
        }
    }

    async fn put(store: &SqliteStore, key: &str) {
        let txn = Txn { success: vec![Op::Put(key.into(), b"x".to_vec())], ..Txn::default() };
        store.txn(txn).await.unwrap();
    }

    async fn wait_for_revision(rx: &mut watch::Receiver<Arc<Snapshot>>, revision: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while rx.borrow().revision < revision {
            assert!(Instant::now() < deadline, "no snapshot of revision {revision}");
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    #[tokio::test]
    async fn the_last_snapshot_stays_while_the_store_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("store.db"), Default::default()).unwrap();
        put(&inner, "unrelated/1").await;
        let store = Arc::new(Flaky { inner: inner.clone(), down: AtomicBool::new(false) });
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        let (stop_tx, stop) = watch::channel(false);
        let range = IngressRange::parse("127.201.0.0/24").unwrap();
        let task = tokio::spawn(run(store.clone(), "n1".into(), Ingress::Loopback(range), tx, stop));
        wait_for_revision(&mut rx, 1).await;

        // The store stops answering reads; a change arrives; the data plane keeps what it had.
        store.down.store(true, Ordering::SeqCst);
        put(&inner, "unrelated/2").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rx.borrow().revision, 1, "a failed compile must not replace the snapshot");

        // Once it answers again, the change is compiled without anyone asking.
        store.down.store(false, Ordering::SeqCst);
        wait_for_revision(&mut rx, 2).await;
        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    fn event(key: &str, revision: Revision) -> Result<WatchEvent, Error> {
        let kv = KeyValue {
            key: key.to_owned(),
            value: vec![],
            create_revision: revision,
            mod_revision: revision,
            version: 1,
        };
        Ok(WatchEvent { kind: EventKind::Put, kv })
    }

    #[tokio::test]
    async fn changes_the_last_compile_read_do_not_compile_again() {
        let (tx, mut stream) = tokio::sync::mpsc::channel(256);
        let (_stop_tx, mut stop) = watch::channel(false);
        // A backlog the stream still holds, all at or below the compiled revision 200.
        for revision in 1..=200 {
            tx.send(event(&format!("r/us-east-1/111122223333/res/svc/svc-{revision}"), revision)).await.unwrap();
        }
        let waiting = tokio::time::timeout(Duration::from_millis(50), next_change(&mut stream, &mut stop, 200));
        assert!(waiting.await.is_err(), "a backlog already compiled must not trigger a compile");
        assert!(stream.is_empty(), "the backlog is consumed");
        // A health record or an IAM role after it changes nothing either; a resource after it does.
        tx.send(event("r/us-east-1/111122223333/health/tg-1/10.0.0.1/80/node-1", 201)).await.unwrap();
        tx.send(event("iam/111122223333/role/ecsinfrastructurerole", 201)).await.unwrap();
        tx.send(event("r/us-east-1/111122223333/res/svc/svc-new", 202)).await.unwrap();
        let change = tokio::time::timeout(Duration::from_secs(5), next_change(&mut stream, &mut stop, 200)).await;
        assert!(matches!(change, Ok(Change::Config)));
    }

    #[tokio::test]
    async fn a_change_after_the_compile_is_compiled() {
        let (tx, mut stream) = tokio::sync::mpsc::channel(256);
        let (_stop_tx, mut stop) = watch::channel(false);
        tx.send(event("r/us-east-1/111122223333/res/svc/svc-1", 7)).await.unwrap();
        let change = tokio::time::timeout(Duration::from_secs(5), next_change(&mut stream, &mut stop, 6)).await;
        assert!(matches!(change, Ok(Change::Config)));
    }
}
