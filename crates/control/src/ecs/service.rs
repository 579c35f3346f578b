//! Services: CreateService (one PRIMARY deployment), UpdateService (a new task definition,
//! network or Lattice configuration, or `forceNewDeployment`, makes a new PRIMARY deployment and
//! the old one ACTIVE; a desiredCount change alone updates the primary), DescribeServices (with
//! `MISSING` failures), ListServices, DeleteService (DRAINING: the scheduler stops its tasks and
//! marks it INACTIVE). Counts are computed from the task records when read.

use serde::Deserialize;
use serde_json::{Value, json};
use trellis_model::ecs::{
    Deployment, DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentController, NetworkConfiguration, Service,
    Tag, Task, TaskDefinition, VpcLatticeConfiguration, status,
};

use super::cluster::with_token;
use super::{
    EcsArn, EcsError, Paging, Reply, Req, check_tags, keys, network, task::check_launch_type, task_definition,
};
use crate::repo::{self, Attempts, Tx, Versioned};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateServiceRequest {
    cluster: Option<String>,
    service_name: String,
    task_definition: Option<String>,
    desired_count: Option<i32>,
    launch_type: Option<String>,
    platform_version: Option<String>,
    deployment_configuration: Option<DeploymentConfiguration>,
    network_configuration: Option<NetworkConfiguration>,
    health_check_grace_period_seconds: Option<i32>,
    scheduling_strategy: Option<String>,
    deployment_controller: Option<DeploymentController>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default, rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: bool,
    propagate_tags: Option<String>,
    #[serde(default)]
    enable_execute_command: bool,
    #[serde(default)]
    vpc_lattice_configurations: Vec<VpcLatticeConfiguration>,
    #[serde(default)]
    load_balancers: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateServiceRequest {
    cluster: Option<String>,
    service: String,
    desired_count: Option<i32>,
    task_definition: Option<String>,
    network_configuration: Option<NetworkConfiguration>,
    #[serde(default)]
    force_new_deployment: bool,
    vpc_lattice_configurations: Option<Vec<VpcLatticeConfiguration>>,
    deployment_configuration: Option<DeploymentConfiguration>,
    health_check_grace_period_seconds: Option<i32>,
    enable_execute_command: Option<bool>,
    #[serde(rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
    propagate_tags: Option<String>,
    platform_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteServiceRequest {
    cluster: Option<String>,
    service: String,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeServicesRequest {
    cluster: Option<String>,
    services: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListServicesRequest {
    cluster: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    launch_type: Option<String>,
    scheduling_strategy: Option<String>,
}

/// What a deployment runs.
struct Rollout {
    def: TaskDefinition,
    network: Option<NetworkConfiguration>,
    lattice: Vec<VpcLatticeConfiguration>,
}

pub(super) async fn create(req: &Req<'_>) -> Reply {
    let input: CreateServiceRequest = req.input()?;
    check_create(&input)?;
    let cluster_name = req.cluster_name(input.cluster.as_deref())?;
    req.active_cluster(&cluster_name).await?;
    let given =
        input.task_definition.as_deref().ok_or_else(|| EcsError::invalid("TaskDefinition must be specified."))?;
    let def = active_definition(req, given).await?;
    let rollout = check_rollout(req, def, input.network_configuration, input.vpc_lattice_configurations).await?;
    let now = super::now();
    let launch_type = input.launch_type.unwrap_or_else(|| "FARGATE".into());
    let platform_version = input.platform_version.unwrap_or_else(|| "LATEST".into());
    let desired = input.desired_count.unwrap_or(0);
    let mut service = Service {
        service_arn: req.keys.service_arn(&cluster_name, &input.service_name),
        service_name: input.service_name.clone(),
        cluster_arn: req.keys.cluster_arn(&cluster_name),
        status: status::ACTIVE.into(),
        desired_count: desired,
        launch_type: Some(launch_type),
        platform_version: Some(platform_version),
        platform_family: Some("Linux".into()),
        task_definition: rollout.def.task_definition_arn.clone(),
        deployment_configuration: Some(with_defaults(input.deployment_configuration)),
        created_at: now,
        network_configuration: rollout.network.clone(),
        health_check_grace_period_seconds: input.health_check_grace_period_seconds,
        scheduling_strategy: Some(input.scheduling_strategy.unwrap_or_else(|| "REPLICA".into())),
        deployment_controller: Some(
            input.deployment_controller.unwrap_or(DeploymentController { type_: "ECS".into() }),
        ),
        tags: input.tags,
        created_by: Some(req.caller_arn()),
        enable_ecs_managed_tags: input.enable_ecs_managed_tags,
        propagate_tags: Some(input.propagate_tags.unwrap_or_else(|| "NONE".into())),
        enable_execute_command: input.enable_execute_command,
        ..Default::default()
    };
    service.deployments = vec![deployment(&service, &rollout, desired, now)];
    let key = req.keys.service(&cluster_name, &input.service_name);
    let mut attempts = Attempts::default();
    loop {
        let cluster = req.active_cluster(&cluster_name).await?;
        let existing = repo::load::<Service>(req.store(), &key).await?;
        let mut tx = Tx::default();
        match &existing {
            Some(read) if read.value.status == status::ACTIVE => {
                return Err(EcsError::invalid("Creation of service was not idempotent."));
            }
            Some(read) if read.value.status == status::DRAINING => {
                return Err(EcsError::invalid("Unable to Start a service that is still Draining."));
            }
            Some(read) => tx.update(read, &service),
            None => tx.create(key.clone(), &service),
        }
        // Rewritten unchanged, so that a DeleteCluster that listed the services first fails.
        tx.update(&cluster, &cluster.value);
        if attempts.commit(req.store(), tx).await? {
            break;
        }
    }
    fill_counts(req, &cluster_name, std::slice::from_mut(&mut service)).await?;
    Ok(json!({ "service": service }))
}

pub(super) async fn update(req: &Req<'_>) -> Reply {
    let input: UpdateServiceRequest = req.input()?;
    if input.desired_count.is_some_and(|n| n < 0) {
        return Err(EcsError::invalid("desiredCount must be at least 0."));
    }
    let (cluster_name, name) = service_ref(req, input.cluster.as_deref(), &input.service)?;
    req.cluster(&cluster_name).await?;
    let new_def = match &input.task_definition {
        Some(given) => Some(active_definition(req, given).await?),
        None => None,
    };
    let key = req.keys.service(&cluster_name, &name);
    let mut attempts = Attempts::default();
    let mut service = loop {
        let read = find(req, &key).await?;
        if read.value.status != status::ACTIVE {
            return Err(EcsError::ServiceNotActive);
        }
        let mut service = read.value.clone();
        let now = super::now();
        if let Some(rollout) = new_rollout(req, &service, &input, new_def.clone()).await? {
            for d in &mut service.deployments {
                if d.status == status::PRIMARY {
                    d.status = status::ACTIVE.into();
                    d.updated_at = now;
                }
            }
            service.task_definition = rollout.def.task_definition_arn.clone();
            service.network_configuration = rollout.network.clone();
            let primary = deployment(&service, &rollout, input.desired_count.unwrap_or(service.desired_count), now);
            service.deployments.insert(0, primary);
        }
        apply_settings(&mut service, &input, now);
        let mut tx = Tx::default();
        tx.update(&read, &service);
        if attempts.commit(req.store(), tx).await? {
            break service;
        }
    };
    fill_counts(req, &cluster_name, std::slice::from_mut(&mut service)).await?;
    Ok(json!({ "service": service }))
}

pub(super) async fn delete(req: &Req<'_>) -> Reply {
    let input: DeleteServiceRequest = req.input()?;
    let (cluster_name, name) = service_ref(req, input.cluster.as_deref(), &input.service)?;
    req.cluster(&cluster_name).await?;
    let key = req.keys.service(&cluster_name, &name);
    let mut attempts = Attempts::default();
    let mut service = loop {
        let read = find(req, &key).await?;
        match read.value.status.as_str() {
            status::ACTIVE => {}
            status::DRAINING => return Err(EcsError::ServiceNotActive),
            _ => return Err(EcsError::ServiceNotFound),
        }
        if read.value.desired_count > 0 && !input.force {
            return Err(EcsError::invalid("The service cannot be stopped while it is scaled above 0."));
        }
        let now = super::now();
        let mut service = read.value.clone();
        service.status = status::DRAINING.into();
        service.desired_count = 0;
        for d in service.deployments.iter_mut().filter(|d| d.status == status::PRIMARY) {
            d.desired_count = 0;
            d.updated_at = now;
        }
        let mut tx = Tx::default();
        tx.update(&read, &service);
        if attempts.commit(req.store(), tx).await? {
            break service;
        }
    };
    fill_counts(req, &cluster_name, std::slice::from_mut(&mut service)).await?;
    Ok(json!({ "service": service }))
}

pub(super) async fn describe(req: &Req<'_>) -> Reply {
    let input: DescribeServicesRequest = req.input()?;
    if input.services.is_empty() || input.services.len() > 10 {
        return Err(EcsError::invalid("services must have between 1 and 10 items."));
    }
    let cluster_name = req.cluster_name(input.cluster.as_deref())?;
    req.cluster(&cluster_name).await?;
    let (mut services, mut failures) = (Vec::new(), Vec::new());
    for given in &input.services {
        let found = match service_ref(req, Some(&cluster_name), given) {
            Ok((cluster, name)) => repo::load::<Service>(req.store(), &req.keys.service(&cluster, &name)).await?,
            Err(_) => None,
        };
        match found {
            Some(read) => services.push(read.value),
            None => {
                let arn =
                    if given.starts_with("arn:") { given.clone() } else { req.keys.service_arn(&cluster_name, given) };
                failures.push(json!({ "arn": arn, "reason": "MISSING" }));
            }
        }
    }
    fill_counts(req, &cluster_name, &mut services).await?;
    if !input.include.iter().any(|i| i == "TAGS") {
        services.iter_mut().for_each(|s| s.tags.clear());
    }
    Ok(json!({ "services": services, "failures": failures }))
}

pub(super) async fn list(req: &Req<'_>) -> Reply {
    let input: ListServicesRequest = req.input()?;
    check_launch_type(input.launch_type.as_deref())?;
    let cluster_name = req.cluster_name(input.cluster.as_deref())?;
    req.cluster(&cluster_name).await?;
    let prefix = req.keys.services(&cluster_name);
    let paging = Paging::new(input.next_token.as_deref(), input.max_results, 10, &prefix)?;
    let (all, _) = repo::list::<Service>(req.store(), &prefix, None, 0).await?;
    let matching = all
        .into_iter()
        .filter(|r| {
            let s = &r.value;
            s.status != status::INACTIVE
                && input.launch_type.as_ref().is_none_or(|l| s.launch_type.as_ref() == Some(l))
                && input.scheduling_strategy.as_ref().is_none_or(|l| s.scheduling_strategy.as_ref() == Some(l))
        })
        .map(|r| (r.key, r.value.service_arn))
        .collect();
    let (arns, token) = paging.page(matching, false);
    Ok(with_token(json!({ "serviceArns": arns }), token))
}

/// CreateService's members that need no reads.
fn check_create(input: &CreateServiceRequest) -> Result<(), EcsError> {
    if !keys::is_name(&input.service_name) {
        return Err(EcsError::invalid(
            "Invalid serviceName: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    if input.desired_count.is_some_and(|n| n < 0) {
        return Err(EcsError::invalid("desiredCount must be at least 0."));
    }
    check_launch_type(input.launch_type.as_deref())?;
    check_tags(&input.tags)?;
    match input.scheduling_strategy.as_deref() {
        None | Some("REPLICA") => {}
        Some("DAEMON") if input.launch_type.as_deref().unwrap_or("FARGATE") == "FARGATE" => {
            return Err(EcsError::invalid("The daemon scheduling strategy does not support the FARGATE launch type."));
        }
        Some("DAEMON") => return Err(EcsError::invalid("Trellis does not support the DAEMON scheduling strategy.")),
        Some(other) => return Err(EcsError::invalid(format!("Invalid schedulingStrategy: {other}"))),
    }
    if input.deployment_controller.as_ref().is_some_and(|c| c.type_ != "ECS") {
        return Err(EcsError::invalid("Trellis supports only the ECS deployment controller."));
    }
    if !input.load_balancers.is_empty() {
        return Err(EcsError::invalid("Trellis has no Elastic Load Balancing: use vpcLatticeConfigurations."));
    }
    Ok(())
}

/// The task definition a CreateService or UpdateService names; it must be ACTIVE.
async fn active_definition(req: &Req<'_>, given: &str) -> Result<TaskDefinition, EcsError> {
    let def = task_definition::find(req, given).await?.ok_or_else(|| EcsError::client("TaskDefinition not found."))?;
    if def.value.status != status::ACTIVE {
        return Err(EcsError::client("TaskDefinition is inactive."));
    }
    Ok(def.value)
}

/// Checks what a deployment would run: the network against the definition, the Lattice
/// configurations against both.
async fn check_rollout(
    req: &Req<'_>,
    def: TaskDefinition,
    network: Option<NetworkConfiguration>,
    lattice: Vec<VpcLatticeConfiguration>,
) -> Result<Rollout, EcsError> {
    let vpc = network::check_network(req, &def, network.as_ref()).await?;
    network::check_lattice(req, &lattice, &def, vpc.as_deref()).await?;
    Ok(Rollout { def, network, lattice })
}

/// The rollout an UpdateService asks for, if it asks for a new deployment: a different task
/// definition, network or Lattice configuration, or `forceNewDeployment`.
async fn new_rollout(
    req: &Req<'_>,
    service: &Service,
    input: &UpdateServiceRequest,
    new_def: Option<TaskDefinition>,
) -> Result<Option<Rollout>, EcsError> {
    let primary = service.primary().cloned().unwrap_or_default();
    let changed = new_def.as_ref().is_some_and(|d| d.task_definition_arn != primary.task_definition)
        || input.network_configuration.as_ref().is_some_and(|n| Some(n) != primary.network_configuration.as_ref())
        || input.vpc_lattice_configurations.as_ref().is_some_and(|l| *l != primary.vpc_lattice_configurations);
    if !changed && !input.force_new_deployment {
        return Ok(None);
    }
    let def = match new_def {
        Some(def) => def,
        None => {
            task_definition::find(req, &primary.task_definition)
                .await?
                .ok_or_else(|| EcsError::client("TaskDefinition not found."))?
                .value
        }
    };
    let network = input.network_configuration.clone().or(primary.network_configuration);
    let lattice = input.vpc_lattice_configurations.clone().unwrap_or(primary.vpc_lattice_configurations);
    check_rollout(req, def, network, lattice).await.map(Some)
}

/// UpdateService's members that change the service in place.
fn apply_settings(service: &mut Service, input: &UpdateServiceRequest, now: trellis_model::Timestamp) {
    if let Some(count) = input.desired_count {
        service.desired_count = count;
        for d in service.deployments.iter_mut().filter(|d| d.status == status::PRIMARY) {
            d.desired_count = count;
            d.updated_at = now;
        }
    }
    if let Some(given) = &input.deployment_configuration {
        let mut config = service.deployment_configuration.clone().unwrap_or_default();
        config.maximum_percent = given.maximum_percent.or(config.maximum_percent);
        config.minimum_healthy_percent = given.minimum_healthy_percent.or(config.minimum_healthy_percent);
        config.deployment_circuit_breaker =
            given.deployment_circuit_breaker.clone().or(config.deployment_circuit_breaker);
        config.strategy = given.strategy.clone().or(config.strategy);
        config.extra.extend(given.extra.clone());
        service.deployment_configuration = Some(config);
    }
    if let Some(seconds) = input.health_check_grace_period_seconds {
        service.health_check_grace_period_seconds = Some(seconds);
    }
    if let Some(on) = input.enable_execute_command {
        service.enable_execute_command = on;
    }
    if let Some(on) = input.enable_ecs_managed_tags {
        service.enable_ecs_managed_tags = on;
    }
    if let Some(propagate) = &input.propagate_tags {
        service.propagate_tags = Some(propagate.clone());
    }
    if let Some(version) = &input.platform_version {
        service.platform_version = Some(version.clone());
    }
}

/// A new PRIMARY deployment of `rollout`.
fn deployment(service: &Service, rollout: &Rollout, desired: i32, now: trellis_model::Timestamp) -> Deployment {
    Deployment {
        id: deployment_id(),
        status: status::PRIMARY.into(),
        task_definition: rollout.def.task_definition_arn.clone(),
        desired_count: desired,
        created_at: now,
        updated_at: now,
        launch_type: service.launch_type.clone(),
        platform_version: service.platform_version.clone(),
        platform_family: service.platform_family.clone(),
        network_configuration: rollout.network.clone(),
        rollout_state: Some("IN_PROGRESS".into()),
        rollout_state_reason: Some("ECS deployment ecs-svc in progress.".into()),
        vpc_lattice_configurations: rollout.lattice.clone(),
        ..Default::default()
    }
}

/// `ecs-svc/` and 19 random digits.
fn deployment_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the system random number generator failed");
    let n = u64::from_le_bytes(b) % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000;
    format!("ecs-svc/{n}")
}

/// ECS's defaults for what the caller left out.
fn with_defaults(given: Option<DeploymentConfiguration>) -> DeploymentConfiguration {
    let mut config = given.unwrap_or_default();
    config.deployment_circuit_breaker.get_or_insert(DeploymentCircuitBreaker { enable: false, rollback: false });
    config.maximum_percent.get_or_insert(200);
    config.minimum_healthy_percent.get_or_insert(100);
    config.strategy.get_or_insert_with(|| "ROLLING".into());
    config
}

/// The service record; `ServiceNotFoundException` if there is none.
async fn find(req: &Req<'_>, key: &str) -> Result<Versioned<Service>, EcsError> {
    repo::load::<Service>(req.store(), key).await?.ok_or(EcsError::ServiceNotFound)
}

/// (cluster, name) of a service given by name (in `cluster`) or ARN (`service/<cluster>/<name>`
/// or the old `service/<name>`).
fn service_ref(req: &Req<'_>, cluster: Option<&str>, given: &str) -> Result<(String, String), EcsError> {
    let cluster = req.cluster_name(cluster)?;
    let Some(arn) = EcsArn::parse(given) else {
        return match keys::is_name(given) {
            true => Ok((cluster, given.to_owned())),
            false => Err(EcsError::ServiceNotFound),
        };
    };
    if arn.kind != "service" || !req.keys.is_local(&arn) {
        return Err(EcsError::ServiceNotFound);
    }
    let (cluster, name) = match arn.path.split_once('/') {
        Some((c, n)) => (c.to_owned(), n),
        None => (cluster, arn.path),
    };
    match keys::is_name(&cluster) && keys::is_name(name) {
        true => Ok((cluster, name.to_owned())),
        false => Err(EcsError::ServiceNotFound),
    }
}

/// Computes the services' and their deployments' running and pending counts from the tasks of
/// their cluster: a service's tasks are in group `service:<name>`, a deployment's were started
/// by its ID.
async fn fill_counts(req: &Req<'_>, cluster: &str, services: &mut [Service]) -> Result<(), EcsError> {
    if services.is_empty() {
        return Ok(());
    }
    let (tasks, _) = repo::list::<Task>(req.store(), &req.keys.tasks(cluster), None, 0).await?;
    let count = |pred: &dyn Fn(&Task) -> bool, state: fn(&Task) -> bool| {
        tasks.iter().filter(|t| pred(&t.value) && state(&t.value)).count() as i32
    };
    for service in services {
        let group = format!("service:{}", service.service_name);
        let in_service = |t: &Task| t.group.as_deref() == Some(group.as_str());
        service.running_count = count(&in_service, Task::is_running);
        service.pending_count = count(&in_service, Task::is_pending);
        for d in &mut service.deployments {
            let id = d.id.clone();
            let in_deployment = |t: &Task| t.started_by.as_deref() == Some(id.as_str());
            d.running_count = count(&in_deployment, Task::is_running);
            d.pending_count = count(&in_deployment, Task::is_pending);
        }
    }
    Ok(())
}
