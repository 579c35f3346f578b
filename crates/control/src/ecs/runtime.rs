//! The interface between the ECS API and the scheduler/runner (in the `trellis` binary): read
//! everything under `ecs/` in one listing ([`load`]), make task records the way RunTask does
//! ([`new_task`], [`create_tasks`]), and change one task or service at a time with a retried
//! compare-and-swap ([`update_task`], [`update_service`]). The scheduler owns what happens after
//! a record is written: moving tasks through PENDING … STOPPED, filling their network
//! attachment, registering them with Lattice, pruning STOPPED tasks ([`delete_task`]).
//!
//! Conventions the API's computed counts rely on: a service's tasks are made with group
//! `service:<service name>` and `started_by` the ID of the deployment they belong to
//! (`ecs-svc/…`); a task counts as running when its `lastStatus` is RUNNING and as pending when
//! PROVISIONING, PENDING or ACTIVATING. A service's Lattice target groups are its deployments'
//! `vpcLatticeConfigurations`; a DRAINING service is the scheduler's to stop and mark INACTIVE.

use std::collections::HashMap;

use trellis_model::ec2::Subnet;
use trellis_model::ecs::{
    Attachment, Container, KeyValuePair, NetworkConfiguration, Service, Task, TaskDefinition, status,
};
use trellis_model::{Kind, ecs::Cluster};
use trellis_store::{Error, Store, StoreExt};

use super::keys::{EcsArn, EcsKeys, PREFIX};
use crate::keys::Keys;
use crate::repo::{self, Attempts, RepoError, Tx};

/// Tasks per transaction: two operations each, plus the cluster's, within the store's 128.
const TASKS_PER_TXN: usize = 60;

/// A region and account (ECS records are scoped by both).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The region, e.g. `us-east-1`.
    pub region: String,
    /// The 12-digit account.
    pub account: String,
}

/// Everything the scheduler needs, across regions and accounts.
#[derive(Clone, Debug, Default)]
pub struct EcsState {
    /// The store revision the listing was read at.
    pub revision: i64,
    /// Every service (ACTIVE, DRAINING and INACTIVE).
    pub services: Vec<(Scope, Service)>,
    /// Every task, STOPPED ones included.
    pub tasks: Vec<(Scope, Task)>,
    /// Every task definition (ACTIVE and INACTIVE), by ARN.
    pub task_definitions: HashMap<String /* ARN */, TaskDefinition>,
}

/// Reads every ECS record with one list of `ecs/`. A record that does not decode is skipped
/// (and logged): one bad record must not stop the scheduler.
pub async fn load(store: &dyn Store) -> Result<EcsState, Error> {
    let resp = store.list_prefix(PREFIX, None, 0).await?;
    let mut state = EcsState { revision: resp.revision, ..EcsState::default() };
    for kv in resp.kvs {
        let mut parts = kv.key.splitn(5, '/');
        let (_ecs, region, account, kind) = (parts.next(), parts.next(), parts.next(), parts.next());
        let (Some(region), Some(account), Some(kind)) = (region, account, kind) else { continue };
        let scope = || Scope { region: region.to_owned(), account: account.to_owned() };
        let decoded = match kind {
            "service" => serde_json::from_slice(&kv.value).map(|s| state.services.push((scope(), s))),
            "task" => serde_json::from_slice(&kv.value).map(|t| state.tasks.push((scope(), t))),
            "taskdef" => serde_json::from_slice::<TaskDefinition>(&kv.value).map(|d| {
                state.task_definitions.insert(d.task_definition_arn.clone(), d);
            }),
            _ => Ok(()),
        };
        if let Err(e) = decoded {
            tracing::warn!(key = %kv.key, error = %e, "skipping an ECS record that does not decode");
        }
    }
    Ok(state)
}

/// A fresh PROVISIONING task record of `def` in `cluster_arn`: its ARN, one PENDING container
/// per container definition, and for `awsvpc` tasks a PRECREATED `ElasticNetworkInterface`
/// attachment in one of the configuration's subnets (the runner attaches it and fills in
/// `networkInterfaceId` and `privateIPv4Address`). Launch type FARGATE: every Trellis task runs
/// as Fargate would.
pub fn new_task(
    scope: &Scope,
    cluster_arn: &str,
    def: &TaskDefinition,
    group: &str,
    started_by: Option<&str>,
    network: Option<&NetworkConfiguration>,
) -> Task {
    let keys = EcsKeys::new(&scope.region, &scope.account);
    let cluster = cluster_arn.rsplit('/').next().unwrap_or_default();
    let id = random_hex32();
    let task_arn = keys.task_arn(cluster, &id);
    let containers = def
        .container_definitions
        .iter()
        .map(|c| Container {
            container_arn: keys.container_arn(cluster, &id, &super::uuid()),
            task_arn: task_arn.clone(),
            name: c.name.clone().unwrap_or_default(),
            image: c.image.clone(),
            last_status: status::PENDING.into(),
            cpu: Some(c.cpu.unwrap_or(0).to_string()),
            memory: c.memory.map(|m| m.to_string()),
            memory_reservation: c.memory_reservation.map(|m| m.to_string()),
            ..Container::default()
        })
        .collect();
    let subnets = network.and_then(|n| n.awsvpc_configuration.as_ref()).map(|a| a.subnets.as_slice());
    let attachments = match subnets {
        Some(subnets) if !subnets.is_empty() => {
            let subnet = &subnets[random_index(subnets.len())];
            vec![Attachment {
                id: super::uuid(),
                type_: "ElasticNetworkInterface".into(),
                status: "PRECREATED".into(),
                details: vec![KeyValuePair { name: Some("subnetId".into()), value: Some(subnet.clone()) }],
            }]
        }
        _ => Vec::new(),
    };
    Task {
        attachments,
        cluster_arn: cluster_arn.to_owned(),
        containers,
        cpu: def.cpu.clone(),
        created_at: super::now(),
        desired_status: status::RUNNING.into(),
        group: Some(group.to_owned()),
        health_status: Some("UNKNOWN".into()),
        last_status: status::PROVISIONING.into(),
        launch_type: Some("FARGATE".into()),
        memory: def.memory.clone(),
        platform_version: Some("1.4.0".into()),
        platform_family: Some("Linux".into()),
        started_by: started_by.map(str::to_owned),
        task_arn,
        task_definition_arn: def.task_definition_arn.clone(),
        version: 1,
        ..Task::default()
    }
}

/// Writes new task records (from [`new_task`]; all in clusters of `scope`), filling in each
/// one's availability zone from its subnet. Fails if a task's cluster is not ACTIVE.
pub async fn create_tasks(store: &dyn Store, scope: &Scope, tasks: &[Task]) -> Result<(), Error> {
    let mut tasks = tasks.to_vec();
    for chunk in tasks.chunks_mut(TASKS_PER_TXN) {
        if !create_tasks_in(store, scope, chunk).await.map_err(into_store)? {
            return Err(Error::Backend("a task's cluster is missing or not ACTIVE".into()));
        }
    }
    Ok(())
}

/// Read-modify-write one task (CAS, retried); `f` returns false to leave it unchanged. Every
/// change adds one to the task's `version`. None if the task is gone.
pub async fn update_task(
    store: &dyn Store,
    task_arn: &str,
    mut f: impl FnMut(&mut Task) -> bool + Send,
) -> Result<Option<Task>, Error> {
    let Some(key) = task_key(task_arn) else { return Ok(None) };
    let mut attempts = Attempts::default();
    loop {
        let Some(read) = repo::load::<Task>(store, &key).await.map_err(into_store)? else { return Ok(None) };
        let mut task = read.value.clone();
        if !f(&mut task) {
            return Ok(Some(read.value));
        }
        task.version = read.value.version + 1;
        let mut tx = Tx::default();
        tx.update(&read, &task);
        if attempts.commit(store, tx).await.map_err(into_store)? {
            return Ok(Some(task));
        }
    }
}

/// Read-modify-write one service (CAS, retried); `f` returns false to leave it unchanged.
/// Add events with `Service::push_event` (newest first, at most 100). None if the service is
/// gone.
pub async fn update_service(
    store: &dyn Store,
    service_arn: &str,
    mut f: impl FnMut(&mut Service) -> bool + Send,
) -> Result<Option<Service>, Error> {
    let Some(key) = service_key(service_arn) else { return Ok(None) };
    let mut attempts = Attempts::default();
    loop {
        let Some(read) = repo::load::<Service>(store, &key).await.map_err(into_store)? else { return Ok(None) };
        let mut service = read.value.clone();
        if !f(&mut service) {
            return Ok(Some(read.value));
        }
        let mut tx = Tx::default();
        tx.update(&read, &service);
        if attempts.commit(store, tx).await.map_err(into_store)? {
            return Ok(Some(service));
        }
    }
}

/// Deletes a task record (pruning STOPPED tasks). Deleting a task that is gone is no error.
pub async fn delete_task(store: &dyn Store, task_arn: &str) -> Result<(), Error> {
    let Some(key) = task_key(task_arn) else { return Ok(()) };
    let mut tx = Tx::default();
    tx.delete(key);
    let mut attempts = Attempts::default();
    attempts.commit(store, tx).await.map_err(into_store)?;
    Ok(())
}

/// Fills in the tasks' availability zones and writes them (at most [`TASKS_PER_TXN`]) in one
/// transaction that also rewrites their
/// clusters' records unchanged, so that a DeleteCluster that listed the tasks before fails its
/// compare. `false` if a cluster is missing or not ACTIVE.
pub(super) async fn create_tasks_in(store: &dyn Store, scope: &Scope, tasks: &mut [Task]) -> Result<bool, RepoError> {
    let keys = EcsKeys::new(&scope.region, &scope.account);
    let ec2 = Keys::new(&scope.region, &scope.account);
    let mut zones: HashMap<String, Option<String>> = HashMap::new();
    for task in tasks.iter_mut() {
        let Some(subnet) = subnet_of(task).map(str::to_owned) else { continue };
        if !zones.contains_key(&subnet) {
            let found = repo::load::<Subnet>(store, &ec2.res(Kind::Subnet, &subnet)).await?;
            zones.insert(subnet.clone(), found.map(|s| s.value.availability_zone));
        }
        task.availability_zone = zones.get(&subnet).cloned().flatten();
    }
    let mut clusters: Vec<&str> = tasks.iter().map(|t| cluster_of(&t.cluster_arn)).collect();
    clusters.sort_unstable();
    clusters.dedup();
    let mut attempts = Attempts::default();
    loop {
        let mut tx = Tx::default();
        for name in &clusters {
            let Some(read) = repo::load::<Cluster>(store, &keys.cluster(name)).await? else { return Ok(false) };
            if read.value.status != status::ACTIVE {
                return Ok(false);
            }
            tx.update(&read, &read.value);
        }
        for task in tasks.iter() {
            tx.create(keys.task(cluster_of(&task.cluster_arn), task.id()), task);
        }
        if attempts.commit(store, tx).await? {
            return Ok(true);
        }
    }
}

fn subnet_of(task: &Task) -> Option<&str> {
    task.attachments
        .iter()
        .flat_map(|a| &a.details)
        .find(|d| d.name.as_deref() == Some("subnetId"))
        .and_then(|d| d.value.as_deref())
}

fn cluster_of(cluster_arn: &str) -> &str {
    cluster_arn.rsplit('/').next().unwrap_or_default()
}

/// The store key of a task ARN (`…:task/<cluster>/<id>`).
fn task_key(task_arn: &str) -> Option<String> {
    let arn = EcsArn::parse(task_arn).filter(|a| a.kind == "task")?;
    let (cluster, id) = arn.path.split_once('/')?;
    Some(EcsKeys::new(arn.region, arn.account).task(cluster, id))
}

/// The store key of a service ARN (`…:service/<cluster>/<name>`).
fn service_key(service_arn: &str) -> Option<String> {
    let arn = EcsArn::parse(service_arn).filter(|a| a.kind == "service")?;
    let (cluster, name) = arn.path.split_once('/')?;
    Some(EcsKeys::new(arn.region, arn.account).service(cluster, name))
}

fn into_store(e: RepoError) -> Error {
    match e {
        RepoError::Store(e) => e,
        other => Error::Backend(other.to_string()),
    }
}

/// A task ID: 32 random hex digits.
fn random_hex32() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the system random number generator failed");
    b.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A random index below `n` (n > 0).
fn random_index(n: usize) -> usize {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the system random number generator failed");
    (u64::from_le_bytes(b) % n as u64) as usize
}
