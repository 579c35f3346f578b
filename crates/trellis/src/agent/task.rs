//! One task's life, as an actor: from PROVISIONING to STOPPED, each step written to the task's
//! record as ECS shows it.
//!
//! Start: the images are resolved (built-in ones, `file://` executables; anything else stops the
//! task with `CannotPullContainerError`); the task gets its network (netns mode: its own
//! namespace on its subnet; loopback mode: an address of the task range) → PENDING; its
//! containers start → ACTIVATING; it is registered into the target groups of its deployment's
//! Lattice configurations (its address, the container port of the named port mapping) →
//! RUNNING.
//!
//! Stop, when asked (StopTask, the scheduler, DeleteService): DEACTIVATING — deregistered, and
//! waited for until the target has drained (no request in flight, or the deregistration delay) —
//! then STOPPING (SIGTERM, SIGKILL after the stop timeout), DEPROVISIONING (network removed),
//! STOPPED. When an essential container exits on its own the task stops the same way, without
//! waiting for the drain (nothing serves any more).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use trellis_control::ecs::runtime::{self, Scope};
use trellis_model::Timestamp;
use trellis_model::ecs::{
    Attachment, KeyValuePair, NetworkInterface, Task, TaskDefinition, VpcLatticeConfiguration, status,
};
use trellis_store::Store;
use trellis_tasks::images::Image;
use trellis_tasks::process::{ContainerSpec, Exit, Program, Running, TaskNet, TaskSpec};

use super::{AgentConfig, Lattice, now};
use crate::netmgr::{NetManager, TaskNetwork};

/// How long a container gets between SIGTERM and SIGKILL when its definition says nothing
/// (ECS's default).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Why tasks stop when their server stops (they do not wait for their targets to drain then).
pub(super) const SERVER_STOPPING: &str = "Task stopped because its Trellis server stopped";
/// How often a draining target is looked at.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// What every actor shares.
pub(super) struct Ctx {
    pub(super) store: Arc<dyn Store>,
    pub(super) lattice: Lattice,
    pub(super) netmgr: Option<Arc<NetManager>>,
    pub(super) config: AgentConfig,
}

/// An actor, as the agent holds it.
pub(super) struct Handle {
    stop: watch::Sender<Option<String>>,
    pids: Arc<Mutex<Vec<i32>>>,
    pub(super) join: JoinHandle<()>,
}

/// Where a task's network came from, to give it back.
enum Net {
    Netns(TaskNetwork),
    Loopback(Ipv4Addr),
}

/// One registration of the task.
struct Registration {
    region: String,
    tg_arn: String,
    ip: String,
    port: u16,
}

// === impl Ctx ===

impl Ctx {
    /// The offset of ports below 1024 for task targets (loopback mode without root).
    pub(super) fn port_offset(&self) -> u16 {
        self.config.loopback.map_or(0, |(_, offset)| offset)
    }

    /// The allocator key space of loopback task addresses on this node.
    fn loopback_space(&self) -> String {
        format!("loopback-{}", self.config.node)
    }
}

// === impl Handle ===

impl Handle {
    /// Asks the task to stop, for `reason` (the first reason given is the one kept).
    pub(super) fn stop(&self, reason: &str) {
        self.stop.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            *r = Some(reason.to_owned());
            true
        });
    }

    /// Its containers' process IDs.
    pub(super) fn pids(&self) -> Vec<i32> {
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Starts the actor of `task`.
pub(super) fn spawn(
    ctx: Arc<Ctx>,
    scope: Scope,
    task: Task,
    def: TaskDefinition,
    lattice: Vec<VpcLatticeConfiguration>,
) -> Handle {
    let (stop, stop_rx) = watch::channel(None);
    let pids = Arc::new(Mutex::new(Vec::new()));
    let shared = pids.clone();
    let join = tokio::spawn(async move {
        let arn = task.task_arn.clone();
        if let Err(e) = run(&ctx, &scope, task, &def, &lattice, stop_rx, shared).await {
            tracing::warn!(task = %arn, error = %e, "task record could not be updated");
        }
    });
    Handle { stop, pids, join }
}

/// How long a task actor keeps trying to update its task's record while the store fails: a
/// blip (an etcd leader election, a busy database) passes well within it, and a server
/// stopping while its store is gone waits no longer than this for its tasks.
const STORE_PATIENCE: Duration = Duration::from_secs(10);

/// [`runtime::update_task`], made again while the store fails (for up to [`STORE_PATIENCE`],
/// waiting 100 ms, doubling to 2 s): an actor that gave up at the first failed write would
/// leave its task's record as it stood (PENDING or ACTIVATING and never replaced, or RUNNING
/// after its process ended).
async fn update_task(
    store: &dyn Store,
    arn: &str,
    mut f: impl FnMut(&mut Task) -> bool + Send,
) -> Result<Option<Task>, trellis_store::Error> {
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match runtime::update_task(store, arn, &mut f).await {
            Err(e) if started.elapsed() < STORE_PATIENCE => {
                tracing::warn!(task = %arn, error = %e, "task record could not be updated; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}

/// The life of one task.
async fn run(
    ctx: &Ctx,
    scope: &Scope,
    task: Task,
    def: &TaskDefinition,
    lattice: &[VpcLatticeConfiguration],
    mut stop: watch::Receiver<Option<String>>,
    pids: Arc<Mutex<Vec<i32>>>,
) -> Result<(), trellis_store::Error> {
    let arn = task.task_arn.clone();
    let store = ctx.store.as_ref();
    // Images first: one that cannot be had stops the task before anything is made.
    let containers = match containers(&task, def) {
        Ok(c) => c,
        Err(reason) => {
            let t = now();
            update_task(store, &arn, |t_| {
                mark_stopped(t_, t, &reason, "TaskFailedToStart");
                for c in &mut t_.containers {
                    c.reason = Some(reason.clone());
                }
                true
            })
            .await?;
            return Ok(());
        }
    };
    let net = match attach(ctx, &task).await {
        Ok(net) => net,
        Err(reason) => {
            let t = now();
            update_task(store, &arn, |t_| {
                mark_stopped(t_, t, &reason, "TaskFailedToStart");
                true
            })
            .await?;
            return Ok(());
        }
    };
    let address = match &net {
        Net::Netns(n) => n.address,
        Net::Loopback(a) => *a,
    };
    let task_net = match &net {
        Net::Netns(n) => TaskNet::Netns { netns: n.netns.clone(), address: IpAddr::V4(address) },
        Net::Loopback(a) => TaskNet::Loopback { address: IpAddr::V4(*a), low_port_offset: ctx.port_offset() },
    };
    let pulled = now();
    update_task(store, &arn, |t| {
        t.last_status = status::PENDING.into();
        t.pull_started_at = Some(pulled);
        t.pull_stopped_at = Some(pulled);
        t.connectivity = Some("CONNECTED".into());
        t.connectivity_at = Some(pulled);
        attach_interface(t, address);
        t.version += 1;
        true
    })
    .await?;

    let spec = TaskSpec {
        task_arn: arn.clone(),
        net: task_net,
        containers,
        log_dir: log_dir(&ctx.config.data_dir, task.id()),
        trellis: ctx.config.trellis.clone(),
    };
    let mut running = match Running::start(&spec) {
        Ok(r) => r,
        Err(e) => {
            let reason = format!("CannotStartContainerError: {e}");
            release(ctx, &net).await;
            let t = now();
            update_task(store, &arn, |t_| {
                mark_stopped(t_, t, &reason, "TaskFailedToStart");
                true
            })
            .await?;
            return Ok(());
        }
    };
    *pids.lock().unwrap_or_else(|p| p.into_inner()) = running.pids();
    let started = now();
    update_task(store, &arn, |t| {
        t.last_status = if lattice.is_empty() { status::RUNNING } else { status::ACTIVATING }.into();
        for c in &mut t.containers {
            c.last_status = status::RUNNING.into();
            c.runtime_id = Some(format!("{}-{}", t.task_arn.rsplit('/').next().unwrap_or_default(), c.name));
        }
        if lattice.is_empty() {
            t.started_at = Some(started);
        }
        t.version += 1;
        true
    })
    .await?;

    // Registration, as ECS does while the task is ACTIVATING.
    let mut registered = Vec::new();
    for c in lattice {
        let Some(port) = named_port(def, &c.port_name) else { continue };
        let reg = Registration {
            region: region_of(&c.target_group_arn).unwrap_or(&scope.region).to_owned(),
            tg_arn: c.target_group_arn.clone(),
            ip: address.to_string(),
            port: target_port(ctx.port_offset(), port),
        };
        match ctx.lattice.register(&reg.region, &reg.tg_arn, &reg.ip, reg.port).await {
            Ok(()) => registered.push(reg),
            Err(e) => {
                tracing::warn!(task = %arn, target_group = %c.target_group_arn, error = %e, "registration refused")
            }
        }
    }
    if !lattice.is_empty() {
        let at = now();
        update_task(store, &arn, |t| {
            t.last_status = status::RUNNING.into();
            t.started_at = Some(at);
            t.version += 1;
            true
        })
        .await?;
    }
    tracing::info!(task = %arn, %address, "task running");

    // Serving until asked to stop or an essential container exits.
    let (reason, code, exited) = tokio::select! {
        exits = running.essential_exit() => {
            ("Essential container in task exited".to_owned(), "EssentialContainerExited", Some(exits))
        }
        reason = wait_stop(&mut stop) => (reason, "", None),
    };
    let stopping = now();
    update_task(store, &arn, |t| {
        t.last_status = status::DEACTIVATING.into();
        t.desired_status = status::STOPPED.into();
        t.stopping_at.get_or_insert(stopping);
        if exited.is_some() {
            t.stopped_reason = Some(reason.clone());
            t.stop_code = Some(code.into());
            t.execution_stopped_at = Some(stopping);
        } else if t.stopped_reason.is_none() {
            t.stopped_reason = Some(reason.clone());
        }
        t.version += 1;
        true
    })
    .await?;
    for r in &registered {
        if let Err(e) = ctx.lattice.deregister(&r.region, &r.tg_arn, &r.ip, r.port).await {
            tracing::warn!(task = %arn, error = %e, "deregistration failed");
        }
    }
    if exited.is_none() && reason != SERVER_STOPPING {
        drain(ctx, &registered).await;
    }
    update_task(store, &arn, |t| {
        t.last_status = status::STOPPING.into();
        t.version += 1;
        true
    })
    .await?;
    let timeout = def
        .container_definitions
        .iter()
        .filter_map(|c| c.stop_timeout)
        .max()
        .map_or(STOP_TIMEOUT, |s| Duration::from_secs(s.clamp(0, 120) as u64));
    let exits = running.stop(timeout).await;
    pids.lock().unwrap_or_else(|p| p.into_inner()).clear();
    update_task(store, &arn, |t| {
        t.last_status = status::DEPROVISIONING.into();
        t.version += 1;
        true
    })
    .await?;
    release(ctx, &net).await;
    let stopped = now();
    update_task(store, &arn, |t| {
        record_exits(t, &exits);
        mark_stopped(t, stopped, &reason, "");
        true
    })
    .await?;
    tracing::info!(task = %arn, "task stopped");
    Ok(())
}

/// Waits until the task is asked to stop; the reason.
async fn wait_stop(stop: &mut watch::Receiver<Option<String>>) -> String {
    match stop.wait_for(Option::is_some).await {
        Ok(reason) => reason.clone().unwrap_or_default(),
        // The agent is gone: the server is stopping.
        Err(_) => SERVER_STOPPING.to_owned(),
    }
}

/// Waits until every deregistered target has drained (it is gone from its target group), or
/// the drain timeout.
async fn drain(ctx: &Ctx, registered: &[Registration]) {
    let deadline = tokio::time::Instant::now() + ctx.config.drain_timeout;
    for r in registered {
        while tokio::time::Instant::now() < deadline {
            match ctx.lattice.list_targets(&r.region, &r.tg_arn).await {
                Ok(targets) if !targets.iter().any(|(id, port, _)| *id == r.ip && *port == r.port) => break,
                Err(_) => break,
                Ok(_) => tokio::time::sleep(DRAIN_POLL).await,
            }
        }
    }
}

/// The containers to run, with their images resolved; `Err` with ECS's reason when an image
/// cannot be had.
fn containers(task: &Task, def: &TaskDefinition) -> Result<Vec<ContainerSpec>, String> {
    let overrides = task.overrides.as_ref().map(|o| o.container_overrides.as_slice()).unwrap_or_default();
    let mut out = Vec::new();
    for c in &def.container_definitions {
        let name = c.name.clone().unwrap_or_default();
        let image = c.image.clone().unwrap_or_default();
        let program = resolve(&image)?;
        let over = overrides.iter().find(|o| o.name.as_deref() == Some(name.as_str()));
        let mut environment: Vec<(String, String)> = c
            .environment
            .iter()
            .filter_map(|kv| Some((kv.name.clone()?, kv.value.clone().unwrap_or_default())))
            .collect();
        for kv in over.map(|o| o.environment.as_slice()).unwrap_or_default() {
            let Some(key) = kv.name.clone() else { continue };
            environment.retain(|(k, _)| *k != key);
            environment.push((key, kv.value.clone().unwrap_or_default()));
        }
        out.push(ContainerSpec {
            name,
            program,
            entry_point: c.entry_point.clone(),
            command: over.and_then(|o| o.command.clone()).unwrap_or_else(|| c.command.clone()),
            environment,
            user: c.user.clone(),
            essential: c.essential.unwrap_or(true),
            ports: c.port_mappings.iter().filter_map(|p| u16::try_from(p.container_port?).ok()).collect(),
        });
    }
    Ok(out)
}

/// What an image reference runs here.
fn resolve(image: &str) -> Result<Program, String> {
    if let Some(builtin) = Image::named(image) {
        return Ok(Program::Builtin(builtin));
    }
    if let Some(path) = image.strip_prefix("file://") {
        let path = PathBuf::from(path);
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Program::File(path)),
            _ => Err(format!("CannotPullContainerError: {image}: no such executable on this host")),
        };
    }
    Err(format!(
        "CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref {image}: \
         Trellis runs its built-in images (amazon/amazon-ecs-sample, trellis/echo) and file:// executables only"
    ))
}

/// Gives the task its network.
async fn attach(ctx: &Ctx, task: &Task) -> Result<Net, String> {
    match (&ctx.netmgr, ctx.config.loopback) {
        (Some(netmgr), _) => {
            let subnet = subnet_of(task).ok_or("the task has no subnet (awsvpc networkConfiguration)")?;
            let vpc =
                netmgr.vpc_of_subnet(&subnet).await.ok_or_else(|| format!("the subnet {subnet} does not exist"))?;
            netmgr
                .attach_task(task.id(), &vpc, &subnet, &task.task_arn)
                .await
                .map(Net::Netns)
                .map_err(|e| e.to_string())
        }
        (None, Some((range, _))) => {
            let (first, last) = range.hosts();
            let ip =
                trellis_control::ipam::claim(ctx.store.as_ref(), &ctx.loopback_space(), (first, last), &task.task_arn)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the task address range is full")?;
            Ok(Net::Loopback(ip))
        }
        (None, None) => Err("no network to run tasks in".into()),
    }
}

/// Gives the task's network back.
async fn release(ctx: &Ctx, net: &Net) {
    match (net, &ctx.netmgr) {
        (Net::Netns(n), Some(netmgr)) => netmgr.detach_task(n).await,
        (Net::Loopback(ip), _) => {
            if let Err(e) = trellis_control::ipam::release(ctx.store.as_ref(), &ctx.loopback_space(), *ip).await {
                tracing::warn!(%ip, error = %e, "cannot release a task address");
            }
        }
        _ => {}
    }
}

/// Gives back what a task of an earlier server held (its namespace is removed by the network
/// manager's reconcile; its address is released here).
pub(super) async fn release_orphan(ctx: &Ctx, task: &Task) {
    let Some(ip) = task.private_ipv4_address().and_then(|a| a.parse::<Ipv4Addr>().ok()) else { return };
    let space = match &ctx.netmgr {
        Some(netmgr) => match subnet_of(task) {
            Some(subnet) => match netmgr.vpc_of_subnet(&subnet).await {
                Some(vpc) => vpc,
                None => return,
            },
            None => return,
        },
        None => ctx.loopback_space(),
    };
    let _ = trellis_control::ipam::release(ctx.store.as_ref(), &space, ip).await;
}

/// The subnet a task's interface is on (set when the task was created).
fn subnet_of(task: &Task) -> Option<String> {
    detail(task, "subnetId")
}

fn detail(task: &Task, name: &str) -> Option<String> {
    task.attachments
        .iter()
        .filter(|a| a.type_ == "ElasticNetworkInterface")
        .find_map(|a| a.details.iter().find(|d| d.name.as_deref() == Some(name)).and_then(|d| d.value.clone()))
}

/// Records the task's interface as attached, with its address.
fn attach_interface(t: &mut Task, address: Ipv4Addr) {
    let hex = t.task_arn.rsplit('/').next().unwrap_or_default().to_owned();
    if t.attachments.is_empty() {
        t.attachments.push(Attachment { id: uuid(), type_: "ElasticNetworkInterface".into(), ..Default::default() });
    }
    let attachment = &mut t.attachments[0];
    attachment.status = "ATTACHED".into();
    let set = |details: &mut Vec<KeyValuePair>, name: &str, value: String| {
        details.retain(|d| d.name.as_deref() != Some(name));
        details.push(KeyValuePair { name: Some(name.into()), value: Some(value) });
    };
    set(&mut attachment.details, "networkInterfaceId", format!("eni-{}", &hex[..hex.len().min(17)]));
    set(&mut attachment.details, "macAddress", mac(&hex));
    set(
        &mut attachment.details,
        "privateDnsName",
        format!("ip-{}.ec2.internal", address.to_string().replace('.', "-")),
    );
    set(&mut attachment.details, "privateIPv4Address", address.to_string());
    let interface = NetworkInterface {
        attachment_id: Some(attachment.id.clone()),
        private_ipv4_address: Some(address.to_string()),
        ipv6_address: None,
    };
    for c in &mut t.containers {
        c.network_interfaces = vec![interface.clone()];
    }
}

/// A stable MAC address for a task (locally administered).
fn mac(hex: &str) -> String {
    let b: Vec<&str> = (0..5).map(|i| hex.get(i * 2..i * 2 + 2).unwrap_or("00")).collect();
    format!("02:{}:{}:{}:{}:{}", b[0], b[1], b[2], b[3], b[4])
}

/// Writes the containers' exit codes.
fn record_exits(t: &mut Task, exits: &[Exit]) {
    for c in &mut t.containers {
        if let Some(e) = exits.iter().find(|e| e.name == c.name) {
            c.exit_code = Some(e.code);
        }
    }
}

/// Marks a task STOPPED (and its containers), keeping a reason and code already recorded.
pub(super) fn mark_stopped(t: &mut Task, at: Timestamp, reason: &str, code: &str) {
    t.last_status = status::STOPPED.into();
    t.desired_status = status::STOPPED.into();
    t.stopped_at = Some(at);
    t.stopping_at.get_or_insert(at);
    t.execution_stopped_at.get_or_insert(at);
    if t.stopped_reason.is_none() {
        t.stopped_reason = Some(reason.to_owned());
    }
    if t.stop_code.is_none() && !code.is_empty() {
        t.stop_code = Some(code.to_owned());
    }
    for c in &mut t.containers {
        c.last_status = status::STOPPED.into();
    }
    for a in &mut t.attachments {
        a.status = "DELETED".into();
    }
    t.version += 1;
}

/// The container port of the port mapping named `name`.
pub(super) fn named_port(def: &TaskDefinition, name: &str) -> Option<u16> {
    def.container_definitions
        .iter()
        .flat_map(|c| &c.port_mappings)
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port?).ok())
}

/// The port a target is registered on: the container port, offset below 1024 in loopback mode
/// without root (where the process serves it).
pub(super) fn target_port(offset: u16, port: u16) -> u16 {
    if port < 1024 { port.saturating_add(offset) } else { port }
}

/// The region of an ARN.
fn region_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// Where a task's container logs go.
pub(crate) fn log_dir(data_dir: &std::path::Path, task_id: &str) -> PathBuf {
    data_dir.join("tasks").join(task_id)
}

/// A random UUID (version 4), as ECS's IDs.
pub(super) fn uuid() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use trellis_store::{Op, SqliteStore, StoreExt, Txn};

    use super::*;
    use crate::testing::Flaky;

    #[tokio::test]
    async fn a_task_record_is_updated_once_the_store_answers_again() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("store.db"), Default::default()).unwrap();
        let arn = "arn:aws:ecs:us-east-1:000000000000:task/c1/0123456789abcdef0123456789abcdef";
        let key = "ecs/us-east-1/000000000000/task/c1/0123456789abcdef0123456789abcdef";
        let task = Task { task_arn: arn.into(), last_status: status::PENDING.into(), version: 1, ..Task::default() };
        let put = Txn { success: vec![Op::Put(key.into(), serde_json::to_vec(&task).unwrap())], ..Txn::default() };
        inner.txn(put).await.unwrap();
        let store = Arc::new(Flaky { inner: inner.clone(), down: Arc::new(AtomicBool::new(true)) });
        let down = store.down.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            down.store(false, Ordering::SeqCst);
        });
        let updated = update_task(store.as_ref(), arn, |t| {
            t.last_status = status::RUNNING.into();
            true
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(updated.last_status, status::RUNNING);
        let stored: Task = serde_json::from_slice(&inner.get(key).await.unwrap().unwrap().value).unwrap();
        assert_eq!((stored.last_status.as_str(), stored.version), (status::RUNNING, 2));
    }

    #[test]
    fn images_resolve_or_cannot_be_pulled() {
        assert_eq!(resolve("amazon/amazon-ecs-sample:latest"), Ok(Program::Builtin(Image::Sample)));
        assert_eq!(resolve("file:///bin/sh"), Ok(Program::File("/bin/sh".into())));
        assert!(resolve("file:///no/such/thing").unwrap_err().starts_with("CannotPullContainerError"));
        assert!(resolve("nginx:latest").unwrap_err().starts_with("CannotPullContainerError"));
    }

    #[test]
    fn ports_and_ids() {
        assert_eq!((target_port(10000, 80), target_port(10000, 8080), target_port(0, 80)), (10080, 8080, 80));
        assert_eq!(region_of("arn:aws:vpc-lattice:eu-west-1:000000000000:targetgroup/tg-1"), Some("eu-west-1"));
        let id = uuid();
        assert_eq!((id.len(), &id[14..15]), (36, "4"));
        assert_eq!(mac("0123456789"), "02:01:23:45:67:89");
    }
}
