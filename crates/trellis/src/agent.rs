//! The ECS agent of this node: runs tasks as processes and schedules services, the work ECS's
//! control plane and its container agent share in AWS.
//!
//! Each pass ([`Agent::step`], on every ECS change and every [`TICK`]):
//! - a task created PROVISIONING (by RunTask or by a service) gets an actor (`agent::task`) that
//!   walks it through PENDING, ACTIVATING (registered into its Lattice target groups) and
//!   RUNNING, and when it must stop through DEACTIVATING (deregistered, drained), STOPPING
//!   (SIGTERM, SIGKILL after the stop timeout), DEPROVISIONING and STOPPED;
//! - a task whose `desiredStatus` turned STOPPED has its actor told why;
//! - every service is planned (`trellis_tasks::plan`) with its tasks and their Lattice target
//!   health (read with ListTargets, as ECS's infrastructure role does), and the plan carried out:
//!   tasks launched (with a backoff for tasks that keep failing) or stopped, deployments
//!   completed, deleted services made INACTIVE, each with the service event ECS writes;
//! - STOPPED tasks are forgotten after an hour, as ECS does.
//!
//! Lattice is called through the API itself, in process (`agent::lattice`), as ECS calls it. A
//! task does not outlive its server: tasks this process did not start (their server stopped)
//! are marked STOPPED on the first pass, and tasks still running when the server stops are
//! stopped with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trellis_control::ecs::runtime::{self, EcsState, Scope};
use trellis_model::Timestamp;
use trellis_model::ecs::{Service, Task, status};
use trellis_store::{Store, StoreExt};
use trellis_tasks::plan::{self, Action, Health};

use crate::cluster::{self, Membership};
use crate::netmgr::NetManager;

mod lattice;
mod task;

pub use lattice::Lattice;
pub(crate) use task::log_dir;

/// How often the agent looks again without being told of a change (target health changes on
/// its own clock).
const TICK: Duration = Duration::from_millis(500);
/// How long STOPPED tasks stay describable.
const KEEP_STOPPED: Duration = Duration::from_secs(3600);
/// The longest pause between launches for a service whose tasks keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the output directories of tasks no longer recorded are looked for.
const LOGS_SWEPT_EVERY: Duration = Duration::from_secs(60);
/// An output directory made this recently is kept whatever the records say (a task placed
/// after a pass read them may have made it).
const LOGS_GRACE: Duration = Duration::from_secs(600);

/// What the agent needs from its server.
pub struct AgentConfig {
    /// Where task output goes: `<data_dir>/tasks/<task-id>/<container>.log`.
    pub data_dir: PathBuf,
    /// This node's name.
    pub node: String,
    /// The `trellis` binary (it runs the built-in images).
    pub trellis: PathBuf,
    /// Loopback mode: the block task addresses come from, and the port offset below 1024.
    pub loopback: Option<(trellis_net::IngressRange, u16)>,
    /// The longest a deregistered target drains before its task is stopped anyway.
    pub drain_timeout: Duration,
}

/// The agent.
pub struct Agent {
    ctx: Arc<task::Ctx>,
    /// This node among the others (tasks run on the node they are placed on; a cluster's
    /// scheduler on the node that holds its lock). `None`: the only node.
    membership: Option<Arc<Membership>>,
    actors: HashMap<String, task::Handle>,
    /// When each service last had a task fail, and how many recently.
    failures: HashMap<String, (u32, Timestamp)>,
    first_pass: bool,
    /// When the output directories were last swept.
    logs_swept: Option<std::time::Instant>,
}

// === impl Agent ===

impl Agent {
    /// An agent over `store`, calling Lattice through `lattice`, making task networks with
    /// `netmgr` (netns mode).
    pub fn new(
        store: Arc<dyn Store>,
        lattice: Lattice,
        netmgr: Option<Arc<NetManager>>,
        membership: Option<Arc<Membership>>,
        config: AgentConfig,
    ) -> Self {
        let ctx = Arc::new(task::Ctx { store, lattice, netmgr, config });
        Self { ctx, membership, actors: HashMap::new(), failures: HashMap::new(), first_pass: true, logs_swept: None }
    }

    /// Runs until `stop`; then stops every task this process runs.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut changes = self.ctx.store.watch("ecs/".to_owned(), 0).await.ok();
        loop {
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "ECS agent pass failed; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                changed = next_change(&mut changes) => if !changed {
                    changes = self.ctx.store.watch("ecs/".to_owned(), 0).await.ok();
                },
                () = stopped(&mut stop) => break,
            }
        }
        // Every task at once: they stop without waiting for their targets to drain (the data
        // plane is stopping too).
        let actors: Vec<task::Handle> = self.actors.drain().map(|(_, a)| a).collect();
        for actor in &actors {
            actor.stop(task::SERVER_STOPPING);
        }
        for actor in actors {
            let _ = tokio::time::timeout(Duration::from_secs(35), actor.join).await;
        }
    }

    /// One pass.
    async fn step(&mut self) -> Result<(), trellis_store::Error> {
        let state = runtime::load(self.ctx.store.as_ref()).await?;
        let mut world = self.world(&state).await?;
        self.actors.retain(|_, a| !a.join.is_finished());
        if std::mem::take(&mut self.first_pass) {
            self.orphans(&state, &world).await?;
        }
        self.place(&state, &mut world).await?;
        self.tasks(&state, &world);
        self.abandoned(&state, &world).await?;
        let health = self.target_health(&state).await;
        for (scope, service) in &state.services {
            if world.schedules(&service.cluster_arn) {
                self.service(&state, scope, service, &health).await?;
            }
        }
        self.prune(&state, &world).await?;
        if self.logs_swept.is_none_or(|at| at.elapsed() >= LOGS_SWEPT_EVERY) {
            self.logs_swept = Some(std::time::Instant::now());
            let known: HashSet<String> = state
                .tasks
                .iter()
                .map(|(_, t)| t.id().to_owned())
                .chain(self.actors.keys().map(|arn| id_of(arn)))
                .collect();
            let dir = self.ctx.config.data_dir.join("tasks");
            let removed = tokio::task::spawn_blocking(move || sweep_task_logs(&dir, &known, LOGS_GRACE)).await;
            if let Ok(n @ 1..) = removed {
                tracing::debug!(removed = n, "removed the output of tasks no longer recorded");
            }
        }
        Ok(())
    }

    /// Where tasks are placed, which nodes can run them, and which clusters this node
    /// schedules (their locks taken when free).
    async fn world(&self, state: &EcsState) -> Result<World, trellis_store::Error> {
        let node = self.ctx.config.node.clone();
        let Some(membership) = &self.membership else {
            return Ok(World { node: node.clone(), placed: HashMap::new(), runners: vec![node], clusters: None });
        };
        let listed = self.ctx.store.list_prefix(PLACEMENT_PREFIX, None, 0).await?;
        let placed = listed
            .kvs
            .into_iter()
            .filter_map(|kv| {
                let arn = kv.key.strip_prefix(PLACEMENT_PREFIX)?.to_owned();
                Some((arn, String::from_utf8(kv.value).ok()?))
            })
            .collect();
        let runners = cluster::live_nodes(self.ctx.store.as_ref())
            .await?
            .into_iter()
            .filter(|n| n.has("tasks"))
            .map(|n| n.node)
            .collect();
        let mut clusters = BTreeMap::new();
        let names =
            state.services.iter().map(|(_, s)| &s.cluster_arn).chain(state.tasks.iter().map(|(_, t)| &t.cluster_arn));
        for cluster in names {
            if !clusters.contains_key(cluster) {
                let held = membership.hold(&format!("ecs/{cluster}")).await?;
                clusters.insert(cluster.clone(), held);
            }
        }
        Ok(World { node, placed, runners, clusters: Some(clusters) })
    }

    /// Places the new tasks of the clusters this node schedules on the live node with the
    /// fewest tasks (a task is placed once, for its whole life).
    async fn place(&self, state: &EcsState, world: &mut World) -> Result<(), trellis_store::Error> {
        if world.clusters.is_none() || world.runners.is_empty() {
            return Ok(());
        }
        for (_, t) in &state.tasks {
            if t.last_status != status::PROVISIONING
                || world.placed.contains_key(&t.task_arn)
                || !world.schedules(&t.cluster_arn)
            {
                continue;
            }
            let mut load: BTreeMap<&str, usize> = world.runners.iter().map(|n| (n.as_str(), 0)).collect();
            for node in world.placed.values() {
                if let Some(count) = load.get_mut(node.as_str()) {
                    *count += 1;
                }
            }
            let Some(node) = load.iter().min_by_key(|(name, count)| (**count, **name)).map(|(n, _)| (*n).to_owned())
            else {
                continue;
            };
            let key = format!("{PLACEMENT_PREFIX}{}", t.task_arn);
            let txn = trellis_store::Txn {
                compare: vec![trellis_store::Compare::ModRevision(key.clone(), 0)],
                success: vec![trellis_store::Op::Put(key, node.clone().into_bytes())],
                failure: Vec::new(),
            };
            if self.ctx.store.txn(txn).await?.succeeded {
                tracing::info!(task = %t.task_arn, %node, "task placed");
                world.placed.insert(t.task_arn.clone(), node);
            }
        }
        Ok(())
    }

    /// Marks STOPPED the tasks this node's previous run ran (their processes are gone).
    async fn orphans(&self, state: &EcsState, world: &World) -> Result<(), trellis_store::Error> {
        for (_, t) in &state.tasks {
            if t.last_status == status::STOPPED || t.last_status == status::PROVISIONING {
                continue;
            }
            if !world.runs_here(&t.task_arn) {
                continue;
            }
            task::release_orphan(&self.ctx, t).await;
            let now = now();
            runtime::update_task(self.ctx.store.as_ref(), &t.task_arn, |t| {
                task::mark_stopped(
                    t,
                    now,
                    "Task stopped because the Trellis server that ran it restarted",
                    "TaskFailedToStart",
                );
                true
            })
            .await?;
        }
        Ok(())
    }

    /// Marks STOPPED the tasks of the clusters this node schedules that were placed on a node
    /// that is no longer alive (killed, or cut off for longer than its lease), and takes their
    /// targets out of their target groups: the scheduler then replaces them.
    async fn abandoned(&self, state: &EcsState, world: &World) -> Result<(), trellis_store::Error> {
        if world.clusters.is_none() {
            return Ok(());
        }
        for (scope, t) in &state.tasks {
            if t.last_status == status::STOPPED || !world.schedules(&t.cluster_arn) {
                continue;
            }
            let Some(node) = world.placed.get(&t.task_arn) else { continue };
            if world.runners.contains(node) {
                continue;
            }
            tracing::warn!(task = %t.task_arn, %node, "the node that ran this task is gone; stopping it");
            self.deregister_all(state, scope, t).await;
            let now = now();
            let reason = format!("Task stopped because the Trellis node that ran it ({node}) is gone");
            runtime::update_task(self.ctx.store.as_ref(), &t.task_arn, |t| {
                task::mark_stopped(t, now, &reason, "TaskFailedToStart");
                true
            })
            .await?;
        }
        Ok(())
    }

    /// Deregisters every target a task of a service registered (its node is gone and cannot).
    async fn deregister_all(&self, state: &EcsState, scope: &Scope, t: &Task) {
        let Some(ip) = t.private_ipv4_address() else { return };
        let def = state.task_definitions.get(&t.task_definition_arn);
        let configs = deployment_of(state, t).map(|d| d.vpc_lattice_configurations.as_slice()).unwrap_or_default();
        for c in configs {
            let Some(port) = def.and_then(|d| task::named_port(d, &c.port_name)) else { continue };
            let port = task::target_port(self.ctx.port_offset(), port);
            if let Err(e) = self.ctx.lattice.deregister(&scope.region, &c.target_group_arn, ip, port).await {
                tracing::warn!(task = %t.task_arn, error = %e, "deregistration failed");
            }
        }
    }

    /// Starts actors for new tasks placed here; tells actors of tasks asked to stop.
    fn tasks(&mut self, state: &EcsState, world: &World) {
        for (scope, t) in &state.tasks {
            match self.actors.get(&t.task_arn) {
                Some(actor) if t.desired_status == status::STOPPED => {
                    actor.stop(t.stopped_reason.as_deref().unwrap_or("Task stopped"));
                }
                Some(_) => {}
                None if t.last_status == status::PROVISIONING && world.runs_here(&t.task_arn) => {
                    let Some(def) = state.task_definitions.get(&t.task_definition_arn) else {
                        tracing::warn!(task = %t.task_arn, "task definition missing; task not started");
                        continue;
                    };
                    let lattice =
                        deployment_of(state, t).map(|d| d.vpc_lattice_configurations.clone()).unwrap_or_default();
                    let handle = task::spawn(self.ctx.clone(), scope.clone(), t.clone(), def.clone(), lattice);
                    if t.desired_status == status::STOPPED {
                        handle.stop(t.stopped_reason.as_deref().unwrap_or("Task stopped"));
                    }
                    self.actors.insert(t.task_arn.clone(), handle);
                }
                None => {}
            }
        }
    }

    /// The status of every target of the target groups services register into, by (target
    /// group ARN, address, port).
    async fn target_health(&self, state: &EcsState) -> HashMap<(String, String, u16), String> {
        let mut out = HashMap::new();
        let mut groups: BTreeMap<&str, &str> = BTreeMap::new();
        for (scope, s) in &state.services {
            for d in &s.deployments {
                for c in &d.vpc_lattice_configurations {
                    groups.insert(&c.target_group_arn, &scope.region);
                }
            }
        }
        for (tg, region) in groups {
            match self.ctx.lattice.list_targets(region, tg).await {
                Ok(targets) => {
                    for (id, port, st) in targets {
                        out.insert((tg.to_owned(), id, port), st);
                    }
                }
                Err(e) => tracing::debug!(target_group = tg, error = %e, "cannot list targets"),
            }
        }
        out
    }

    /// Plans one service and carries the plan out.
    async fn service(
        &mut self,
        state: &EcsState,
        scope: &Scope,
        service: &Service,
        health: &HashMap<(String, String, u16), String>,
    ) -> Result<(), trellis_store::Error> {
        if service.status == status::INACTIVE {
            return Ok(());
        }
        let group = format!("service:{}", service.service_name);
        let tasks: Vec<&Task> = state
            .tasks
            .iter()
            .map(|(_, t)| t)
            .filter(|t| t.cluster_arn == service.cluster_arn && t.group.as_deref() == Some(group.as_str()))
            .collect();
        let now = now();
        let grace = Duration::from_secs(service.health_check_grace_period_seconds.unwrap_or(0).max(0) as u64);
        let offset = self.ctx.port_offset();
        let judge = |t: &Task| task_health(state, t, health, now, grace, offset);
        let may_launch = self.may_launch(service, &tasks, now);
        let actions = plan::plan(service, &tasks, &judge, may_launch);
        let (mut started, mut stopped) = (Vec::new(), Vec::new());
        for action in actions {
            match action {
                Action::Launch { deployment_id } => {
                    let Some(d) = service.deployments.iter().find(|d| d.id == deployment_id) else { continue };
                    let Some(def) = state.task_definitions.get(&d.task_definition) else { continue };
                    let t = runtime::new_task(
                        scope,
                        &service.cluster_arn,
                        def,
                        &group,
                        Some(&deployment_id),
                        d.network_configuration.as_ref(),
                    );
                    started.push(t);
                }
                Action::Stop { task_arn, reason } => {
                    let changed = runtime::update_task(self.ctx.store.as_ref(), &task_arn, |t| {
                        if t.desired_status == status::STOPPED {
                            return false;
                        }
                        t.desired_status = status::STOPPED.into();
                        t.stopped_reason = Some(reason.clone());
                        t.stop_code = Some("ServiceSchedulerInitiated".into());
                        t.stopping_at = Some(now);
                        t.version += 1;
                        true
                    })
                    .await?;
                    if changed.is_some() {
                        stopped.push(task_arn);
                    }
                }
                Action::Completed { deployment_id } => {
                    let name = service.service_name.clone();
                    runtime::update_service(self.ctx.store.as_ref(), &service.service_arn, |s| {
                        s.deployments.retain(|d| d.id == deployment_id);
                        let Some(d) = s.deployments.first_mut() else { return false };
                        d.rollout_state = Some("COMPLETED".into());
                        d.rollout_state_reason = Some(format!("ECS deployment {deployment_id} completed."));
                        d.updated_at = now;
                        event(s, now, format!("(service {name}) (deployment {deployment_id}) deployment completed."));
                        event(s, now, format!("(service {name}) has reached a steady state."));
                        true
                    })
                    .await?;
                }
                Action::Inactive => {
                    runtime::update_service(self.ctx.store.as_ref(), &service.service_arn, |s| {
                        s.status = status::INACTIVE.into();
                        true
                    })
                    .await?;
                }
            }
        }
        if !started.is_empty() {
            runtime::create_tasks(self.ctx.store.as_ref(), scope, &started).await?;
            let ids: Vec<String> = started.iter().map(|t| format!("(task {})", t.id())).collect();
            let message =
                format!("(service {}) has started {} tasks: {}.", service.service_name, ids.len(), ids.join(" "));
            runtime::update_service(self.ctx.store.as_ref(), &service.service_arn, |s| {
                event(s, now, message.clone());
                true
            })
            .await?;
        }
        if !stopped.is_empty() {
            let ids: Vec<String> =
                stopped.iter().map(|a| format!("(task {})", a.rsplit('/').next().unwrap_or(a))).collect();
            let message = format!(
                "(service {}) has stopped {} running tasks: {}.",
                service.service_name,
                ids.len(),
                ids.join(" ")
            );
            runtime::update_service(self.ctx.store.as_ref(), &service.service_arn, |s| {
                event(s, now, message.clone());
                true
            })
            .await?;
        }
        Ok(())
    }

    /// Whether `service` may launch now: after tasks of it failed to start or exited on their
    /// own, launches slow down (1 s, 2 s, 4 s … up to a minute after the last failure).
    fn may_launch(&mut self, service: &Service, tasks: &[&Task], now: Timestamp) -> bool {
        let recent = now.0.saturating_sub(300_000);
        let failed: Vec<Timestamp> = tasks
            .iter()
            .filter(|t| matches!(t.stop_code.as_deref(), Some("TaskFailedToStart" | "EssentialContainerExited")))
            .filter_map(|t| t.stopped_at)
            .filter(|at| at.0 >= recent)
            .collect();
        let Some(last) = failed.iter().max().copied() else {
            self.failures.remove(&service.service_arn);
            return true;
        };
        let n = u32::try_from(failed.len()).unwrap_or(u32::MAX);
        self.failures.insert(service.service_arn.clone(), (n, last));
        if n < 2 {
            return true;
        }
        let wait = Duration::from_secs(1u64 << (n - 2).min(6)).min(MAX_BACKOFF);
        now.0 >= last.0 + wait.as_millis() as u64
    }

    /// Forgets STOPPED tasks older than an hour, and the placement of every STOPPED task.
    async fn prune(&self, state: &EcsState, world: &World) -> Result<(), trellis_store::Error> {
        let cutoff = now().0.saturating_sub(KEEP_STOPPED.as_millis() as u64);
        for (_, t) in &state.tasks {
            if t.last_status != status::STOPPED || !world.schedules(&t.cluster_arn) {
                continue;
            }
            if world.placed.contains_key(&t.task_arn) {
                let key = format!("{PLACEMENT_PREFIX}{}", t.task_arn);
                let txn = trellis_store::Txn { success: vec![trellis_store::Op::Delete(key)], ..Default::default() };
                self.ctx.store.txn(txn).await?;
            }
            if t.stopped_at.is_some_and(|at| at.0 < cutoff) {
                runtime::delete_task(self.ctx.store.as_ref(), &t.task_arn).await?;
            }
        }
        Ok(())
    }

    /// The PIDs of the containers of the tasks this process runs, by task ARN (tests: `kill -9`).
    pub fn pids(&self) -> BTreeMap<String, Vec<i32>> {
        self.actors.iter().map(|(arn, a)| (arn.clone(), a.pids())).collect()
    }
}

/// The last part of a task's ARN: its ID.
fn id_of(task_arn: &str) -> String {
    task_arn.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Removes the output directories under `dir` (`<data_dir>/tasks`) of tasks not in `known`,
/// untouched for `grace`: a task's output is kept as long as the task is recorded (an hour
/// after it stops, as ECS lists it), not for as long as the node lives. Returns how many went.
fn sweep_task_logs(dir: &std::path::Path, known: &HashSet<String>, grace: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        // Only the directories the agent makes: named by a task's ID, which is hex.
        let Some(id) = name.to_str().filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_hexdigit())) else {
            continue;
        };
        if known.contains(id) {
            continue;
        }
        let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|e| e >= grace));
        if old && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Where each task runs: `cluster/task/<task-arn>` → the node's name.
const PLACEMENT_PREFIX: &str = "cluster/task/";

/// One pass's view of the nodes.
struct World {
    /// This node.
    node: String,
    /// Where each task was placed.
    placed: HashMap<String, String>,
    /// Live nodes that run tasks.
    runners: Vec<String>,
    /// Whether this node holds each cluster's scheduler; `None`: the only node, which does
    /// everything.
    clusters: Option<BTreeMap<String, bool>>,
}

impl World {
    fn schedules(&self, cluster_arn: &str) -> bool {
        self.clusters.as_ref().is_none_or(|c| c.get(cluster_arn).copied().unwrap_or(false))
    }

    /// Whether a task is this node's to run.
    fn runs_here(&self, task_arn: &str) -> bool {
        match &self.clusters {
            None => true,
            Some(_) => self.placed.get(task_arn).is_some_and(|n| *n == self.node),
        }
    }
}

/// The deployment a service task belongs to.
fn deployment_of<'a>(state: &'a EcsState, t: &Task) -> Option<&'a trellis_model::ecs::Deployment> {
    let id = t.started_by.as_deref()?;
    state.services.iter().flat_map(|(_, s)| &s.deployments).find(|d| d.id == id)
}

/// A task's health for the scheduler: HEALTHY when RUNNING and every target of its deployment's
/// Lattice configurations is HEALTHY (or UNAVAILABLE: health checks off); UNHEALTHY when one
/// is UNHEALTHY past the grace period.
fn task_health(
    state: &EcsState,
    t: &Task,
    health: &HashMap<(String, String, u16), String>,
    now: Timestamp,
    grace: Duration,
    offset: u16,
) -> Health {
    if !t.is_running() {
        return Health::Unknown;
    }
    let configs = deployment_of(state, t).map(|d| d.vpc_lattice_configurations.as_slice()).unwrap_or_default();
    if configs.is_empty() {
        return Health::Healthy;
    }
    let Some(ip) = t.private_ipv4_address() else { return Health::Unknown };
    let def = state.task_definitions.get(&t.task_definition_arn);
    let mut all_healthy = true;
    for c in configs {
        let Some(port) = def.and_then(|d| task::named_port(d, &c.port_name)) else { return Health::Unknown };
        let port = task::target_port(offset, port);
        match health.get(&(c.target_group_arn.clone(), ip.to_owned(), port)).map(String::as_str) {
            Some("HEALTHY" | "UNAVAILABLE") => {}
            Some("UNHEALTHY") => {
                let started = t.started_at.map_or(now.0, |s| s.0);
                if now.0 >= started + grace.as_millis() as u64 {
                    return Health::Unhealthy;
                }
                all_healthy = false;
            }
            _ => all_healthy = false,
        }
    }
    if all_healthy { Health::Healthy } else { Health::Unknown }
}

/// Adds a service event (newest first, 100 kept).
fn event(s: &mut Service, now: Timestamp, message: String) {
    let id = task::uuid();
    s.events.insert(0, trellis_model::ecs::ServiceEvent { id, created_at: now, message });
    s.events.truncate(100);
}

/// Now, as ECS timestamps are kept.
pub(crate) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Waits until `stop` is raised (the guard `wait_for` hands out is not kept across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Waits for the next batch of ECS changes; false when the watch is gone.
async fn next_change(changes: &mut Option<trellis_store::WatchStream>) -> bool {
    match changes {
        Some(stream) => matches!(stream.recv().await, Some(Ok(_))),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The output of a task no longer recorded goes once it is old enough; a recorded task's
    /// stays, a recent directory stays, and what the agent did not make is left alone.
    #[test]
    fn output_of_tasks_no_longer_recorded_is_removed() {
        let root = std::env::temp_dir().join(format!("trellis-sweep-{}", std::process::id()));
        let dir = root.join("tasks");
        for name in ["0a1b", "2c3d", "4e5f", "not-a-task"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("app.log"), "out\n").unwrap();
        }
        let known: HashSet<String> = ["0a1b".to_owned()].into();
        // Recent: nothing goes yet.
        assert_eq!(sweep_task_logs(&dir, &known, Duration::from_secs(600)), 0);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4);
        // Old enough: the two unknown tasks' directories go.
        assert_eq!(sweep_task_logs(&dir, &known, Duration::ZERO), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["0a1b", "not-a-task"]);
        assert_eq!(sweep_task_logs(&root.join("missing"), &known, Duration::ZERO), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
