//! Feeding the data plane: reads the store once, then follows its changes, hands VPCs that
//! became reachable an ingress address, and publishes a new [`Snapshot`] after every change that
//! matters to it on a watch channel. Changes are applied to a [`Compiler`] one key-value at a
//! time (changes that arrive together are built once); only a lost watch (compaction, a store
//! that went away) reads the whole store again. If the store stops answering, the last snapshot
//! stays in force and reading is retried.
//!
//! Also the other direction: [`StoreSink`] takes the data plane's health reports and writes
//! them to the store, off the data plane's path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use trellis_control::compile::{self, Compiler};
use trellis_model::snapshot::Snapshot;
use trellis_net::IngressRange;
use trellis_proxy::{HealthReport, HealthSink, SharedHealth, TargetHealth, TargetKey};
use trellis_store::{EventKind, Revision, Store, StoreExt, WatchEvent, WatchStream};

use crate::cluster::{NODE_PREFIX, NodeRecord};

/// How long to gather more changes after the first one before building.
const DEBOUNCE: Duration = Duration::from_millis(2);
/// Most changes taken into one build: a long backlog still publishes as it goes.
const MAX_BATCH: usize = 4096;
/// How long to wait before retrying when the store fails.
const RETRY: Duration = Duration::from_millis(500);

/// Compiles and publishes snapshots until `stop` is raised. `seen` follows the newest store
/// revision the loop has read (changes it has no use for included): how far behind the store
/// this node is.
pub async fn run(
    store: Arc<dyn Store>,
    node: String,
    ingress: Ingress,
    tx: watch::Sender<Arc<Snapshot>>,
    shared: watch::Sender<Arc<SharedHealth>>,
    seen: Arc<AtomicI64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (mut peers, mut compiler, mut stream) = match start(store.as_ref(), &node, ingress).await {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the configuration; serving the last one");
                if pause(&mut stop, RETRY).await {
                    return;
                }
                continue;
            }
        };
        let (mut changes, mut revision) = (Vec::new(), compiler.revision());
        seen.fetch_max(revision, Ordering::Relaxed);
        let mut current: Option<Arc<Snapshot>> = None;
        loop {
            let mut membership = false;
            changes.retain(|event: &WatchEvent| match peers.apply(event) {
                Followed::No => true,
                Followed::Node => {
                    membership = true;
                    false
                }
                Followed::Health => false,
            });
            // When only other nodes' health records changed, the snapshot stays as it is.
            if current.is_none() || !changes.is_empty() || membership {
                let built = compile::blocking(move || {
                    for event in &changes {
                        compiler.apply(event);
                    }
                    compiler.advance(revision);
                    let snapshot = compiler.snapshot();
                    (compiler, snapshot)
                })
                .await;
                let Ok((built, mut snapshot)) = built else { return };
                compiler = built;
                peers.fill(&mut snapshot);
                current = Some(snapshot.clone());
                match with_ingress(store.as_ref(), &node, ingress, &mut snapshot).await {
                    // The addresses given arrive as changes; the snapshot that has them is published.
                    Ok(Allocated::Some) => {}
                    Ok(Allocated::None) => {
                        tx.send_replace(snapshot);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot allocate ingress addresses; serving the last configuration");
                        if pause(&mut stop, RETRY).await {
                            return;
                        }
                        changes = Vec::new();
                        continue;
                    }
                }
            }
            if let Some(snapshot) = &current {
                let now = peers.shared(snapshot.target_groups.keys());
                if **shared.borrow() != now {
                    shared.send_replace(Arc::new(now));
                }
            }
            match next_changes(&mut stream, &mut stop, &|key| compiler.reads(key) || peers.reads(key), &seen).await {
                Change::Config(events, seen) => (changes, revision) = (events, seen),
                // The stream failed (compaction, store gone): read afresh and watch again.
                Change::Lost => break,
                Change::Stop => return,
            }
        }
    }
}

/// Reads the other nodes (loopback mode) and the whole configuration, and watches the store
/// from the revision after it.
async fn start(
    store: &dyn Store,
    node: &str,
    ingress: Ingress,
) -> Result<(Peers, Compiler, WatchStream), trellis_store::Error> {
    let peers = match ingress {
        Ingress::Loopback(_) => Peers::load(store, node).await?,
        Ingress::LinkLocal => Peers::none(),
    };
    let compiler = Compiler::load(store, node).await?;
    let stream = store.watch(String::new(), compiler.revision() + 1).await?;
    Ok((peers, compiler, stream))
}

enum Change {
    /// Changes the snapshot is made of, and the revision of the last change seen.
    Config(Vec<WatchEvent>, Revision),
    Lost,
    Stop,
}

/// Waits for a change that matters to the data plane, then gathers what else arrives within
/// [`DEBOUNCE`] of it, and the whole of a backlog (up to [`MAX_BATCH`] changes). Which changes matter is the compiler's to say:
/// health records (the data plane's own output), IAM, ECS, indexes and the like never need a
/// build, and are dropped here (only their revision is kept).
///
/// A transaction's changes arrive one by one: a batch can end inside one, and the build then
/// shows part of it until the rest arrives, a moment later.
async fn next_changes(
    stream: &mut WatchStream,
    stop: &mut watch::Receiver<bool>,
    reads: &(dyn Fn(&str) -> bool + Sync),
    seen: &AtomicI64,
) -> Change {
    let mut events = Vec::new();
    let mut revision = 0;
    while events.is_empty() {
        let event = tokio::select! {
            event = stream.recv() => event,
            () = stopped(stop) => return Change::Stop,
        };
        match event {
            Some(Ok(e)) => {
                revision = revision.max(e.kv.mod_revision);
                seen.fetch_max(revision, Ordering::Relaxed);
                if reads(&e.kv.key) {
                    events.push(e);
                }
            }
            Some(Err(_)) | None => return Change::Lost,
        }
    }
    // Take what arrives within DEBOUNCE of the first change, and all of a backlog (the stream
    // refills as it is read), up to MAX_BATCH.
    let deadline = tokio::time::Instant::now() + DEBOUNCE;
    while events.len() < MAX_BATCH {
        let event = match stream.try_recv() {
            Ok(event) => event,
            Err(mpsc::error::TryRecvError::Disconnected) => return Change::Lost,
            Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, stream.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => return Change::Lost,
                Err(_) => break,
            },
        };
        match event {
            Ok(e) => {
                revision = revision.max(e.kv.mod_revision);
                seen.fetch_max(revision, Ordering::Relaxed);
                if reads(&e.kv.key) {
                    events.push(e);
                }
            }
            Err(_) => return Change::Lost,
        }
    }
    Change::Config(events, revision)
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The ingress addresses other live proxy nodes gave each VPC (loopback mode over a shared
/// store), which this node's DNS answers list after its own.
struct Peers {
    /// This node (its own addresses are in the snapshot already).
    node: String,
    /// Whether peers are followed at all (not in netns mode, where every node's address is the
    /// same link-local one).
    on: bool,
    /// Live nodes that run the data plane.
    live: BTreeSet<String>,
    /// Every other node's address for each VPC: node → VPC ID → address.
    addresses: BTreeMap<String, BTreeMap<String, IpAddr>>,
    /// Whether the last snapshot was given any peers (so that losing them all is written too).
    filled: bool,
    /// Every node's health records, by target: what the node that checks a group found.
    health: HashMap<TargetKey, BTreeMap<String, TargetHealth>>,
}

/// Whether a change was one [`Peers`] follows, and of what.
enum Followed {
    No,
    /// A node's record or another node's VPC address.
    Node,
    /// A health record.
    Health,
}

impl Peers {
    fn none() -> Self {
        Self {
            node: String::new(),
            on: false,
            live: BTreeSet::new(),
            addresses: BTreeMap::new(),
            filled: false,
            health: HashMap::new(),
        }
    }

    async fn load(store: &dyn Store, node: &str) -> Result<Self, trellis_store::Error> {
        let mut peers = Self { node: node.to_owned(), on: true, ..Self::none() };
        for kv in store.list_prefix(NODE_PREFIX, None, 0).await?.kvs {
            peers.apply(&WatchEvent { kind: EventKind::Put, kv });
        }
        for kv in store.list_prefix("node/", None, 0).await?.kvs {
            if peers.reads(&kv.key) {
                peers.apply(&WatchEvent { kind: EventKind::Put, kv });
            }
        }
        // Other nodes' findings, when there are other nodes (a node alone finds all itself;
        // the records of nodes that join later arrive as changes).
        if !peers.live.is_empty() {
            for kv in store.list_prefix("r/", None, 0).await?.kvs {
                if health_key(&kv.key).is_some() {
                    peers.apply(&WatchEvent { kind: EventKind::Put, kv });
                }
            }
        }
        Ok(peers)
    }

    /// Which of `groups` other live proxy nodes check (each group is checked by
    /// one node: the one that ranks first for it among the live ones, so that all agree without
    /// talking, and a group moves only when its node comes or goes), and what they found.
    fn shared<'g>(&self, groups: impl Iterator<Item = &'g String>) -> SharedHealth {
        if !self.on || self.live.is_empty() {
            return SharedHealth::default();
        }
        let nodes: Vec<&str> = self.live.iter().map(String::as_str).chain([self.node.as_str()]).collect();
        let mut out = SharedHealth::default();
        for tg in groups {
            if checker_of(tg, &nodes) != self.node {
                out.elsewhere.insert(tg.clone());
            }
        }
        for (key, by_node) in &self.health {
            if !out.elsewhere.contains(&key.target_group_id) {
                continue;
            }
            let checker = checker_of(&key.target_group_id, &nodes);
            if let Some(found) = by_node.get(checker) {
                out.statuses.insert(key.clone(), *found);
            }
        }
        out
    }

    /// Whether `key` is a node's record, another node's VPC address, or a health record.
    fn reads(&self, key: &str) -> bool {
        self.on && (key.starts_with(NODE_PREFIX) || self.address_key(key).is_some() || health_key(key).is_some())
    }

    /// `(node, VPC ID)` of another node's `node/<node>/vpc/<region>/<vpc-id>`.
    fn address_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix("node/")?;
        let (node, rest) = rest.split_once('/')?;
        let (_region, vpc) = rest.strip_prefix("vpc/")?.split_once('/')?;
        (node != self.node).then_some((node, vpc))
    }

    /// Takes in a change if it is one of ours; what it was.
    fn apply(&mut self, event: &WatchEvent) -> Followed {
        if !self.reads(&event.kv.key) {
            return Followed::No;
        }
        let put = event.kind == EventKind::Put;
        if let Some((key, node)) = health_key(&event.kv.key) {
            let found = put.then(|| health_of(&event.kv.value)).flatten();
            match found {
                Some(found) => {
                    self.health.entry(key).or_default().insert(node.to_owned(), found);
                }
                None => {
                    if let Some(by_node) = self.health.get_mut(&key) {
                        by_node.remove(node);
                        if by_node.is_empty() {
                            self.health.remove(&key);
                        }
                    }
                }
            }
            return Followed::Health;
        }
        if let Some(name) = event.kv.key.strip_prefix(NODE_PREFIX) {
            let proxy = put && serde_json::from_slice::<NodeRecord>(&event.kv.value).is_ok_and(|r| r.has("proxy"));
            if proxy && name != self.node {
                self.live.insert(name.to_owned());
            } else {
                self.live.remove(name);
            }
        } else if let Some((node, vpc)) = self.address_key(&event.kv.key) {
            let ip = put.then(|| std::str::from_utf8(&event.kv.value).ok()?.parse::<IpAddr>().ok()).flatten();
            let (node, vpc) = (node.to_owned(), vpc.to_owned());
            match ip {
                Some(ip) => {
                    self.addresses.entry(node).or_default().insert(vpc, ip);
                }
                None => {
                    if let Some(vpcs) = self.addresses.get_mut(&node) {
                        vpcs.remove(&vpc);
                    }
                }
            }
        }
        Followed::Node
    }

    /// Gives each VPC of `snapshot` the addresses live peers serve it on.
    fn fill(&mut self, snapshot: &mut Arc<Snapshot>) {
        let any = self.live.iter().any(|n| self.addresses.get(n).is_some_and(|a| !a.is_empty()));
        if !any && !std::mem::take(&mut self.filled) {
            return;
        }
        self.filled = any;
        for vpc in Arc::make_mut(snapshot).vpcs.values_mut() {
            vpc.peers = self.live.iter().filter_map(|n| self.addresses.get(n)?.get(&vpc.vpc_id).copied()).collect();
        }
    }
}

/// The target and node of a health record,
/// `r/<region>/<account>/health/<tg>/<target-id>/<port:05>/<node>` (target IDs may hold '/').
fn health_key(key: &str) -> Option<(TargetKey, &str)> {
    let rest = key.strip_prefix("r/")?;
    let mut parts = rest.splitn(4, '/');
    let (_region, _account, kind, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if kind != "health" {
        return None;
    }
    let (tg, rest) = rest.split_once('/')?;
    let mut back = rest.rsplitn(3, '/');
    let (node, port, id) = (back.next()?, back.next()?, back.next()?);
    let key = TargetKey { target_group_id: tg.to_owned(), target_id: id.to_owned(), port: port.parse().ok()? };
    Some((key, node))
}

/// A health record's status.
fn health_of(value: &[u8]) -> Option<TargetHealth> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Recorded {
        status: String,
        #[serde(default)]
        reason_code: Option<String>,
    }
    let recorded: Recorded = serde_json::from_slice(value).ok()?;
    let status = trellis_proxy::HealthStatus::from_name(&recorded.status)?;
    Some(TargetHealth { status, reason: recorded.reason_code.as_deref().and_then(trellis_proxy::reason_code) })
}

/// The node that checks target group `tg`: the one that ranks first for it (rendezvous
/// hashing: FNV-1a, then a 64-bit finalizer to spread its high bits, so that every node
/// computes the same ranks).
fn checker_of<'a>(tg: &str, nodes: &[&'a str]) -> &'a str {
    let rank = |node: &str| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in node.bytes().chain([b'/']).chain(tg.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    };
    nodes.iter().copied().max_by_key(|n| (rank(n), *n)).unwrap_or("")
}

/// Where associated VPCs reach Lattice.
#[derive(Clone, Copy, Debug)]
pub enum Ingress {
    /// An address of this range each, allocated once and recorded in the store (loopback mode).
    Loopback(IngressRange),
    /// The link-local address inside each VPC's own namespace (netns mode).
    LinkLocal,
}

/// Whether addresses were just given out (their records are on their way as changes).
enum Allocated {
    None,
    Some,
}

/// Gives every reachable VPC of `snapshot` its ingress address: in netns mode the link-local
/// one, in place; in loopback mode an address of the range recorded in the store for each VPC
/// without one (if any was recorded, the snapshot is stale: the records arrive as changes). A
/// VPC whose address another writer recorded first is served once that record arrives.
async fn with_ingress(
    store: &dyn Store,
    node: &str,
    ingress: Ingress,
    snapshot: &mut Arc<Snapshot>,
) -> Result<Allocated, Box<dyn std::error::Error + Send + Sync>> {
    let range = match ingress {
        Ingress::Loopback(range) => range,
        Ingress::LinkLocal => {
            // A copy: the compiler keeps the one without addresses to build the next from.
            for vpc in Arc::make_mut(snapshot).vpcs.values_mut() {
                vpc.ingress = Some(std::net::IpAddr::V4(trellis_net::netns::LINK_LOCAL));
            }
            return Ok(Allocated::None);
        }
    };
    let missing: Vec<(&str, &str)> = snapshot
        .vpcs
        .values()
        .filter(|v| v.ingress.is_none())
        .map(|v| (v.region.as_str(), v.vpc_id.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok(Allocated::None);
    }
    let mut allocated = Allocated::None;
    for (region, vpc) in missing {
        let taken = trellis_control::ingress::taken(store, node).await?;
        let ip = range.allocate(|ip| taken.contains(&ip))?;
        // Lost to another writer: its record arrives as a change, and a later build sees it.
        if trellis_control::ingress::claim(store, node, region, vpc, ip).await? {
            tracing::info!(%vpc, %ip, "VPC ingress address allocated");
            allocated = Allocated::Some;
        }
    }
    Ok(allocated)
}

/// Sleeps, unless stopped first (then returns true).
async fn pause(stop: &mut watch::Receiver<bool>, how_long: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(how_long) => false,
        () = stopped(stop) => true,
    }
}

/// The data plane's [`HealthSink`]: queues reports for a task that writes them to the store.
/// Reports the store did not take are kept (the last status of each target) and written again,
/// sooner or later as the store keeps failing: the data plane says a status once, when it
/// changes, so one lost write would leave `ListTargets` (and ECS, which replaces tasks by it)
/// with a stale status for as long as the target's health stays the same.
pub struct StoreSink {
    tx: mpsc::UnboundedSender<Vec<HealthReport>>,
}

/// How long the first retry of reports the store did not take waits, and the longest wait.
const REPORT_RETRY_FIRST: Duration = Duration::from_millis(100);
const REPORT_RETRY_MOST: Duration = Duration::from_secs(5);

/// Which target, of which account in which region.
type ReportedTarget = (String, String, TargetKey);

/// Reports waiting to be written: the last status of each target, and the drained targets.
#[derive(Default)]
struct PendingReports {
    statuses: BTreeMap<ReportedTarget, TargetHealth>,
    drained: BTreeSet<ReportedTarget>,
}

impl PendingReports {
    fn add(&mut self, reports: Vec<HealthReport>) {
        for report in reports {
            match report {
                HealthReport::Status { region, account, key, health } => {
                    self.statuses.insert((region, account, key), health);
                }
                HealthReport::Drained { region, account, key } => {
                    self.drained.insert((region, account, key));
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.drained.is_empty()
    }
}

impl StoreSink {
    /// The sink, and the task that drains it into `store` as `node` (it ends when the sink is
    /// dropped).
    pub fn new(store: Arc<dyn Store>, node: String) -> (Arc<Self>, impl std::future::Future<Output = ()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<HealthReport>>();
        let task = async move {
            let mut pending = PendingReports::default();
            let mut retry = REPORT_RETRY_FIRST;
            loop {
                if pending.is_empty() {
                    let Some(batch) = rx.recv().await else { return };
                    pending.add(batch);
                } else {
                    // Reports the store did not take: new ones join them until it is time to
                    // try again.
                    let at = tokio::time::Instant::now() + retry;
                    loop {
                        tokio::select! {
                            batch = rx.recv() => match batch {
                                Some(batch) => pending.add(batch),
                                None => return,
                            },
                            () = tokio::time::sleep_until(at) => break,
                        }
                    }
                }
                // Take whatever else is queued too: statuses are written many per transaction.
                while let Ok(more) = rx.try_recv() {
                    pending.add(more);
                }
                match write_reports(store.as_ref(), &node, std::mem::take(&mut pending)).await {
                    Ok(()) => retry = REPORT_RETRY_FIRST,
                    Err((e, left)) => {
                        tracing::warn!(error = %e, retry_in = ?retry, "cannot record health reports; trying again");
                        pending = left;
                        retry = (retry * 2).min(REPORT_RETRY_MOST);
                    }
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

/// Writes `reports`: the drained targets' removals, then the statuses. What the store did not
/// take comes back with the first error.
async fn write_reports(
    store: &dyn Store,
    node: &str,
    reports: PendingReports,
) -> Result<(), (Box<dyn std::error::Error + Send + Sync>, PendingReports)> {
    use trellis_control::health::{self, StatusUpdate, TargetRef};
    let mut left = PendingReports::default();
    let mut error: Option<Box<dyn std::error::Error + Send + Sync>> = None;
    for (region, account, key) in reports.drained {
        let removed =
            health::remove_drained(store, node, &region, &account, &key.target_group_id, &key.target_id, key.port);
        if let Err(e) = removed.await {
            error.get_or_insert(e.into());
            left.drained.insert((region, account, key));
        }
    }
    let statuses: Vec<StatusUpdate<'_>> = reports
        .statuses
        .iter()
        .map(|((region, account, key), h)| StatusUpdate {
            target: TargetRef {
                region,
                account,
                target_group_id: &key.target_group_id,
                target_id: &key.target_id,
                port: key.port,
            },
            status: health_status_name(h.status),
            reason: h.reason,
        })
        .collect();
    let written = health::record_statuses(store, node, &statuses).await;
    drop(statuses);
    if let Err(e) = written {
        error.get_or_insert(e.into());
        left.statuses = reports.statuses;
    }
    match error {
        None => Ok(()),
        Some(e) => Err((e, left)),
    }
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

    use trellis_store::{Error, EventKind, KeyValue, Op, SqliteStore, Txn};

    use super::*;
    use crate::testing::Flaky;

    /// Writes a VPC record.
    async fn put_vpc(store: &SqliteStore, id: &str) {
        let key = format!("r/us-east-1/111122223333/res/vpc/{id}");
        let value = serde_json::json!({"id": id, "cidrBlock": "10.0.0.0/16"}).to_string().into_bytes();
        store.txn(Txn { success: vec![Op::Put(key, value)], ..Txn::default() }).await.unwrap();
    }

    async fn wait_for_revision(rx: &mut watch::Receiver<Arc<Snapshot>>, revision: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while rx.borrow().revision < revision {
            assert!(Instant::now() < deadline, "no snapshot of revision {revision}");
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    /// [`run`] as node `n1` in loopback mode on `range`, in a task of its own.
    fn spawn_run(store: Arc<dyn Store>, range: &str) -> (watch::Receiver<Arc<Snapshot>>, Running) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let (stop, stopped) = watch::channel(false);
        let ingress = Ingress::Loopback(IngressRange::parse(range).unwrap());
        let task = tokio::spawn(run(
            store,
            "n1".into(),
            ingress,
            tx,
            watch::channel(Default::default()).0,
            Default::default(),
            stopped,
        ));
        (rx, Running { stop, task })
    }

    /// A [`run`] in a task, and what stops it.
    struct Running {
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        /// Tells it to stop, and waits (5 s at most) until it has.
        async fn stop(self) {
            let _ = self.stop.send(true);
            tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn health_reports_the_store_did_not_take_are_written_once_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("store.db"), Default::default()).unwrap();
        let base = "r/us-east-1/000000000000/";
        let (tg, ip) = ("tg-0123456789abcdef0", "10.0.0.7");
        // Three targets (the group's counter says so), the one on port 82 draining.
        store_put(&inner, format!("{base}count/target/{tg}"), b"3".to_vec()).await;
        for port in [80, 81, 82] {
            let mut target = serde_json::json!({"id": ip, "port": port, "registeredAt": "2026-12-07T10:00:00.000Z"});
            if port == 82 {
                target["drainingSince"] = "2026-12-07T10:00:01.000Z".into();
            }
            let key = format!("{base}target/{tg}/{ip}/{port:05}");
            store_put(&inner, key, target.to_string().into_bytes()).await;
        }
        let store = Arc::new(Flaky { inner: inner.clone(), down: Arc::new(AtomicBool::new(true)) });
        let (sink, task) = StoreSink::new(store.clone(), "n1".into());
        let task = tokio::spawn(task);
        let report = |port, status| HealthReport::Status {
            region: "us-east-1".into(),
            account: "000000000000".into(),
            key: TargetKey { target_group_id: tg.into(), target_id: ip.into(), port },
            health: TargetHealth { status, reason: None },
        };
        let target = |port: u16| {
            let inner = inner.clone();
            async move { inner.get(&format!("{base}target/{tg}/{ip}/{port:05}")).await.unwrap() }
        };
        let recorded = |port: u16| {
            let inner = inner.clone();
            async move {
                let key = format!("{base}health/{tg}/{ip}/{port:05}/n1");
                inner.get(&key).await.unwrap().map(|kv| String::from_utf8(kv.value).unwrap())
            }
        };
        // The store is down: the reports are not written, and later ones join them (the last
        // status of a target wins).
        sink.report(vec![report(80, trellis_proxy::HealthStatus::Initial)]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        sink.report(vec![
            report(80, trellis_proxy::HealthStatus::Healthy),
            report(81, trellis_proxy::HealthStatus::Unhealthy),
            HealthReport::Drained {
                region: "us-east-1".into(),
                account: "000000000000".into(),
                key: TargetKey { target_group_id: tg.into(), target_id: ip.into(), port: 82 },
            },
        ]);
        // Long enough for the store to refuse these at least once (it is tried again after
        // 100, 200, 400 and 800 ms).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(recorded(80).await, None);
        assert!(target(82).await.is_some());
        // Once it answers again, they are written without the data plane saying them again.
        store.down.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while recorded(81).await.is_none() {
            assert!(Instant::now() < deadline, "the reports were never written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(recorded(80).await.as_deref(), Some(r#"{"status":"HEALTHY"}"#));
        assert_eq!(recorded(81).await.as_deref(), Some(r#"{"status":"UNHEALTHY"}"#));
        // The drained target's removal was made again too (no proxy node is live: nobody else
        // has to say so).
        while target(82).await.is_some() {
            assert!(Instant::now() < deadline, "the drained target was never removed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The task ends with the sink.
        drop(sink);
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    async fn store_put(store: &SqliteStore, key: String, value: Vec<u8>) {
        store.txn(Txn { success: vec![Op::Put(key, value)], ..Txn::default() }).await.unwrap();
    }

    #[tokio::test]
    async fn changes_are_published_and_the_last_snapshot_stays_while_the_store_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("store.db"), Default::default()).unwrap();
        put_vpc(&inner, "vpc-1").await;
        let store = Arc::new(Flaky { inner: inner.clone(), down: Arc::new(AtomicBool::new(false)) });
        let (mut rx, running) = spawn_run(store.clone(), "127.201.0.0/24");
        wait_for_revision(&mut rx, 1).await;
        // A change is applied without reading the store again.
        put_vpc(&inner, "vpc-2").await;
        wait_for_revision(&mut rx, 2).await;
        assert_eq!(rx.borrow().networks.keys().collect::<Vec<_>>(), ["vpc-1", "vpc-2"]);

        // The store stops answering: the watch fails, so does reading afresh; the data plane
        // keeps what it had.
        store.down.store(true, Ordering::SeqCst);
        put_vpc(&inner, "vpc-3").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rx.borrow().revision, 2, "a failed read must not replace the snapshot");

        // Once it answers again, the change is compiled without anyone asking.
        store.down.store(false, Ordering::SeqCst);
        wait_for_revision(&mut rx, 3).await;
        assert_eq!(rx.borrow().networks.len(), 3);
        running.stop().await;
    }

    /// A record for a small random world: services, listeners, target groups and targets,
    /// associations, under a handful of IDs so that writes overwrite and delete each other's.
    fn random_op(seed: &mut u64) -> Op {
        let mut next = |n: u64| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed % n
        };
        let base = "r/us-east-1/111122223333/";
        let (svc, tg, sn) = (format!("svc-{}", next(6)), format!("tg-{}", next(3)), format!("sn-{}", next(2)));
        let (key, value) = match next(7) {
            0 => (
                format!("{base}res/svc/{svc}"),
                serde_json::json!({"id": svc, "arn": "a", "dnsName": format!("{svc}.x")}),
            ),
            1 => {
                let action = if next(2) == 0 {
                    serde_json::json!({"forward": {"targetGroups": [{"targetGroupIdentifier": tg}]}})
                } else {
                    serde_json::json!({"fixedResponse": {"statusCode": 404}})
                };
                let value = serde_json::json!({"id": format!("listener-{svc}"), "arn": "a", "serviceId": svc,
                                               "protocol": "HTTP", "port": 80 + next(2), "defaultAction": action});
                (format!("{base}listener/{svc}/listener-{svc}"), value)
            }
            2 => (format!("{base}res/tg/{tg}"), serde_json::json!({"id": tg, "arn": "a", "type": "IP"})),
            3 => {
                let ip = format!("127.0.0.{}", 1 + next(3));
                (format!("{base}target/{tg}/{ip}/00080"), serde_json::json!({"id": ip, "port": 80}))
            }
            4 => (
                format!("{base}res/snsa/snsa-{sn}-{svc}"),
                serde_json::json!({"serviceNetworkId": sn, "serviceId": svc, "status": "ACTIVE"}),
            ),
            5 => {
                let vpc = format!("vpc-{}", next(2));
                let value = serde_json::json!({"id": format!("snva-{vpc}"), "serviceNetworkId": sn, "vpcId": vpc,
                                               "privateDnsEnabled": true, "status": "ACTIVE"});
                (format!("{base}res/snva/snva-{vpc}"), value)
            }
            _ => return Op::DeletePrefix(format!("{base}target/{tg}/")),
        };
        if next(5) == 0 { Op::Delete(key) } else { Op::Put(key, value.to_string().into_bytes()) }
    }

    #[tokio::test]
    async fn after_many_changes_the_published_snapshot_is_a_full_compile_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("store.db"), Default::default()).unwrap();
        let (mut rx, running) = spawn_run(Arc::new(store.clone()), "127.202.0.0/24");
        let mut seed = 0x2545_F491_4F6C_DD1D_u64;
        for round in 0..300 {
            // Transactions of one to a few writes, some back to back, some spaced out.
            let ops: Vec<Op> = (0..1 + round % 4).map(|_| random_op(&mut seed)).collect();
            store.txn(Txn { success: ops, ..Txn::default() }).await.unwrap();
            if round % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
        // Once the loop has caught up (ingress claims included), it serves exactly the store.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let published = rx.borrow_and_update().clone();
            if published.revision == store.revision() {
                let full = trellis_control::compile::compile(&store, "n1").await.unwrap();
                assert_eq!(published.services, full.services);
                assert_eq!(published.target_groups, full.target_groups);
                assert_eq!(published.vpcs, full.vpcs);
                assert_eq!(published.hosts, full.hosts);
                assert!(!full.services.is_empty() && !full.vpcs.is_empty(), "the world is not empty");
                assert!(full.vpcs.values().all(|v| v.ingress.is_some()));
                break;
            }
            assert!(Instant::now() < deadline, "the loop did not catch up");
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
        running.stop().await;
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
    async fn changes_the_compiler_does_not_read_do_not_build() {
        let (tx, mut stream) = tokio::sync::mpsc::channel(256);
        let (_stop_tx, mut stop) = watch::channel(false);
        let compiler = Compiler::from_kvs(&[], 0, "n1");
        // Health records, IAM roles, index keys and other nodes' addresses change nothing.
        tx.send(event("r/us-east-1/111122223333/health/tg-1/10.0.0.1/80/node-1", 1)).await.unwrap();
        tx.send(event("iam/111122223333/role/ecsinfrastructurerole", 2)).await.unwrap();
        tx.send(event("r/us-east-1/111122223333/name/svc/web", 3)).await.unwrap();
        tx.send(event("node/n2/vpc/us-east-1/vpc-1", 4)).await.unwrap();
        let (reads, seen) = (|k: &str| compiler.reads(k), AtomicI64::new(0));
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), next_changes(&mut stream, &mut stop, &reads, &seen));
        assert!(waiting.await.is_err(), "no build for changes the snapshot is not made of");
        // A resource after them does; every change is handed over, so the revision moves on.
        tx.send(event("r/us-east-1/111122223333/res/svc/svc-new", 5)).await.unwrap();
        tx.send(event("r/us-east-1/111122223333/health/tg-1/10.0.0.1/80/node-1", 6)).await.unwrap();
        let change = tokio::time::timeout(
            Duration::from_secs(5),
            next_changes(&mut stream, &mut stop, &|k| compiler.reads(k), &AtomicI64::new(0)),
        )
        .await;
        let Ok(Change::Config(events, revision)) = change else { panic!("a change is expected") };
        assert_eq!(events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(), [5]);
        assert_eq!(revision, 6, "the revision moves past changes that are not read");
    }

    #[test]
    fn health_records_are_read_back() {
        let (key, node) = health_key("r/us-east-1/111122223333/health/tg-1/arn:aws:x/y/00080/n2").unwrap();
        assert_eq!(
            (key.target_group_id.as_str(), key.target_id.as_str(), key.port, node),
            ("tg-1", "arn:aws:x/y", 80, "n2")
        );
        assert!(health_key("r/us-east-1/111122223333/res/tg/tg-1").is_none());
        let found = health_of(br#"{"status":"UNHEALTHY","reasonCode":"HealthCheckFailed"}"#).unwrap();
        assert_eq!(found.status, trellis_proxy::HealthStatus::Unhealthy);
        assert_eq!(found.reason, Some("HealthCheckFailed"));
        assert!(health_of(br#"{"status":"ASLEEP"}"#).is_none());
    }

    #[test]
    fn each_group_has_one_checker_that_moves_only_with_its_node() {
        let groups: Vec<String> = (0..300).map(|i| format!("tg-{i:017x}")).collect();
        let three = ["n1", "n2", "n3"];
        let mut per_node = std::collections::HashMap::new();
        for tg in &groups {
            *per_node.entry(checker_of(tg, &three)).or_insert(0) += 1;
            // The order nodes are listed in does not matter.
            assert_eq!(checker_of(tg, &three), checker_of(tg, &["n3", "n1", "n2"]));
        }
        assert!(three.iter().all(|n| per_node.get(n).copied().unwrap_or(0) > 50), "{per_node:?}");
        // n3 leaves: only its groups move.
        for tg in &groups {
            let before = checker_of(tg, &three);
            if before != "n3" {
                assert_eq!(checker_of(tg, &["n1", "n2"]), before);
            }
        }
    }

    #[test]
    fn groups_of_other_live_nodes_are_shared_with_their_findings() {
        let mut peers = Peers { node: "n1".into(), on: true, ..Peers::none() };
        let put = |key: &str, value: &str| WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: value.as_bytes().to_vec(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
            },
        };
        let groups: Vec<String> = (0..20).map(|i| format!("tg-{i}")).collect();
        // Alone: everything is ours.
        assert_eq!(peers.shared(groups.iter()), SharedHealth::default());
        peers.apply(&put("cluster/node/n2", r#"{"node":"n2","roles":["proxy"]}"#));
        let theirs = groups.iter().find(|tg| checker_of(tg, &["n1", "n2"]) == "n2").unwrap().clone();
        peers.apply(&put(&format!("r/us-east-1/1/health/{theirs}/127.0.0.9/00080/n2"), r#"{"status":"HEALTHY"}"#));
        // A record of a node that does not check the group is not its finding.
        peers.apply(&put(&format!("r/us-east-1/1/health/{theirs}/127.0.0.8/00080/n1"), r#"{"status":"HEALTHY"}"#));
        let shared = peers.shared(groups.iter());
        assert!(shared.elsewhere.contains(&theirs));
        assert!(!shared.elsewhere.is_empty() && shared.elsewhere.len() < 20, "{:?}", shared.elsewhere);
        let key = TargetKey { target_group_id: theirs, target_id: "127.0.0.9".into(), port: 80 };
        assert_eq!(shared.statuses.get(&key).map(|h| h.status), Some(trellis_proxy::HealthStatus::Healthy));
        assert_eq!(shared.statuses.len(), 1);
        // n2 leaves: everything is ours again.
        peers.apply(&WatchEvent { kind: EventKind::Delete, ..put("cluster/node/n2", "") });
        assert_eq!(peers.shared(groups.iter()), SharedHealth::default());
    }

    #[tokio::test]
    async fn a_failed_stream_is_lost() {
        let (tx, mut stream) = tokio::sync::mpsc::channel(256);
        let (_stop_tx, mut stop) = watch::channel(false);
        let compiler = Compiler::from_kvs(&[], 0, "n1");
        tx.send(Err(Error::Compacted { requested: 1, oldest: 5 })).await.unwrap();
        let change = tokio::time::timeout(
            Duration::from_secs(5),
            next_changes(&mut stream, &mut stop, &|k| compiler.reads(k), &AtomicI64::new(0)),
        )
        .await;
        assert!(matches!(change, Ok(Change::Lost)));
    }
}
