//! Task definitions: RegisterTaskDefinition (checked as ECS checks them; revisions count up per
//! family and are never reused), DescribeTaskDefinition, ListTaskDefinitions,
//! DeregisterTaskDefinition (the revision stays describable as INACTIVE). [`find`] resolves the
//! `family`, `family:revision` and ARN forms other operations accept.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Value, json};
use trellis_model::ecs::{ContainerDefinition, Extra, Tag, TaskDefinition, status};

use super::cluster::with_token;
use super::{EcsArn, EcsError, Paging, Reply, Req, check_tags, keys};
use crate::repo::{self, Attempts, Tx, Versioned};

/// Containers per task definition.
const MAX_CONTAINERS: usize = 10;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterTaskDefinitionRequest {
    family: String,
    container_definitions: Vec<ContainerDefinition>,
    task_role_arn: Option<String>,
    execution_role_arn: Option<String>,
    network_mode: Option<String>,
    #[serde(default)]
    requires_compatibilities: Vec<String>,
    cpu: Option<String>,
    memory: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeTaskDefinitionRequest {
    task_definition: String,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTaskDefinitionsRequest {
    family_prefix: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeregisterTaskDefinitionRequest {
    task_definition: String,
}

pub(super) async fn register(req: &Req<'_>) -> Reply {
    let input: RegisterTaskDefinitionRequest = req.input()?;
    check_tags(&input.tags)?;
    let mut def = TaskDefinition {
        family: input.family,
        container_definitions: input.container_definitions,
        task_role_arn: input.task_role_arn,
        execution_role_arn: input.execution_role_arn,
        network_mode: input.network_mode,
        requires_compatibilities: input.requires_compatibilities,
        cpu: input.cpu,
        memory: input.memory,
        status: status::ACTIVE.into(),
        registered_at: super::now(),
        registered_by: Some(req.caller_arn()),
        extra: input.extra,
        ..Default::default()
    };
    check(&def)?;
    fill_defaults(&mut def);
    let mut attempts = Attempts::default();
    loop {
        let counter = repo::counter(req.store(), req.keys.family(&def.family)).await?;
        def.revision = counter.value() as i32 + 1;
        def.task_definition_arn = req.keys.task_definition_arn(&def.family, def.revision);
        let mut tx = Tx::default();
        tx.count(&counter, 1);
        tx.create(req.keys.task_definition(&def.family, def.revision), &def);
        if !input.tags.is_empty() {
            tx.put(req.keys.task_definition_tags(&def.family, def.revision), &input.tags);
        }
        if attempts.commit(req.store(), tx).await? {
            return Ok(json!({ "taskDefinition": def, "tags": input.tags }));
        }
    }
}

pub(super) async fn describe(req: &Req<'_>) -> Reply {
    let input: DescribeTaskDefinitionRequest = req.input()?;
    let def = find(req, &input.task_definition)
        .await?
        .ok_or_else(|| EcsError::client("Unable to describe task definition."))?
        .value;
    let mut body = json!({ "taskDefinition": def });
    if input.include.iter().any(|i| i == "TAGS") {
        body["tags"] = json!(tags_of(req, &def).await?);
    }
    Ok(body)
}

pub(super) async fn list(req: &Req<'_>) -> Reply {
    let input: ListTaskDefinitionsRequest = req.input()?;
    let wanted = input.status.as_deref().unwrap_or(status::ACTIVE);
    if !matches!(wanted, "ACTIVE" | "INACTIVE" | "DELETE_IN_PROGRESS") {
        return Err(EcsError::invalid(format!("Invalid status: {wanted}")));
    }
    let desc = match input.sort.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => return Err(EcsError::invalid(format!("Invalid sort: {other}"))),
    };
    let prefix = match &input.family_prefix {
        Some(family) => req.keys.task_definitions_of(family),
        None => req.keys.task_definitions(),
    };
    let paging = Paging::new(input.next_token.as_deref(), input.max_results, 100, &prefix)?;
    let (all, _) = repo::list::<TaskDefinition>(req.store(), &prefix, None, 0).await?;
    let mut defs: Vec<(String, String)> =
        all.into_iter().filter(|r| r.value.status == wanted).map(|r| (r.key, r.value.task_definition_arn)).collect();
    if desc {
        defs.reverse();
    }
    let (arns, token) = paging.page(defs, desc);
    Ok(with_token(json!({ "taskDefinitionArns": arns }), token))
}

pub(super) async fn deregister(req: &Req<'_>) -> Reply {
    let input: DeregisterTaskDefinitionRequest = req.input()?;
    let (family, revision) = split(req, &input.task_definition)?;
    let Some(revision) = revision else {
        return Err(EcsError::invalid("Invalid revision number. Number: (none)"));
    };
    let mut attempts = Attempts::default();
    loop {
        let read = repo::load::<TaskDefinition>(req.store(), &req.keys.task_definition(&family, revision))
            .await?
            .ok_or_else(|| EcsError::client("The specified task definition does not exist."))?;
        if read.value.status != status::ACTIVE {
            return Ok(json!({ "taskDefinition": read.value }));
        }
        let mut def = read.value.clone();
        def.status = status::INACTIVE.into();
        def.deregistered_at = Some(super::now());
        let mut tx = Tx::default();
        tx.update(&read, &def);
        if attempts.commit(req.store(), tx).await? {
            return Ok(json!({ "taskDefinition": def }));
        }
    }
}

/// The task definition named by `family`, `family:revision` or its ARN: with no revision, the
/// family's latest ACTIVE one. `None` if there is none; an ARN of another region or account
/// names none.
pub(super) async fn find(req: &Req<'_>, given: &str) -> Result<Option<Versioned<TaskDefinition>>, EcsError> {
    let (family, revision) = match split(req, given) {
        Ok(parts) => parts,
        Err(_) if given.starts_with("arn:") => return Ok(None),
        Err(e) => return Err(e),
    };
    match revision {
        Some(revision) => Ok(repo::load(req.store(), &req.keys.task_definition(&family, revision)).await?),
        None => {
            let (all, _) =
                repo::list::<TaskDefinition>(req.store(), &req.keys.task_definitions_of(&family), None, 0).await?;
            Ok(all.into_iter().rev().find(|r| r.value.status == status::ACTIVE))
        }
    }
}

/// The tags of a task definition.
pub(super) async fn tags_of(req: &Req<'_>, def: &TaskDefinition) -> Result<Vec<Tag>, EcsError> {
    let key = req.keys.task_definition_tags(&def.family, def.revision);
    Ok(repo::load::<Vec<Tag>>(req.store(), &key).await?.map(|r| r.value).unwrap_or_default())
}

/// `family[:revision]` or an ARN → (family, revision).
pub(super) fn split(req: &Req<'_>, given: &str) -> Result<(String, Option<i32>), EcsError> {
    let bad = || EcsError::client(format!("Invalid task definition: {given}"));
    let text = match EcsArn::parse(given) {
        Some(arn) if arn.kind == "task-definition" => {
            if !req.keys.is_local(&arn) {
                return Err(bad());
            }
            arn.path
        }
        Some(_) => return Err(bad()),
        None => given,
    };
    let (family, revision) = match text.split_once(':') {
        Some((family, rev)) => (family, Some(rev.parse::<i32>().ok().filter(|r| *r > 0).ok_or_else(bad)?)),
        None => (text, None),
    };
    if !keys::is_name(family) {
        return Err(bad());
    }
    Ok((family.to_owned(), revision))
}

/// Checks a task definition as ECS does at registration.
pub(super) fn check(def: &TaskDefinition) -> Result<(), EcsError> {
    if !keys::is_name(&def.family) {
        return Err(EcsError::client(
            "Family contains invalid characters: up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
        ));
    }
    if let Some(mode) = &def.network_mode
        && !matches!(mode.as_str(), "bridge" | "host" | "awsvpc" | "none")
    {
        return Err(EcsError::client(format!("Invalid networkMode: {mode}")));
    }
    let awsvpc = def.network_mode.as_deref() == Some("awsvpc");
    for compat in &def.requires_compatibilities {
        if !matches!(compat.as_str(), "EC2" | "FARGATE" | "EXTERNAL" | "MANAGED_INSTANCES") {
            return Err(EcsError::client(format!("Invalid requiresCompatibilities: {compat}")));
        }
    }
    let fargate = def.requires_compatibilities.iter().any(|c| c == "FARGATE");
    if fargate && !awsvpc {
        return Err(EcsError::client("Fargate only supports network mode ‘awsvpc’."));
    }
    if fargate && (def.cpu.is_none() || def.memory.is_none()) {
        return Err(EcsError::client("Fargate requires that 'cpu' and 'memory' be defined at the task level."));
    }
    let containers = &def.container_definitions;
    if containers.is_empty() {
        return Err(EcsError::client("Container list cannot be empty."));
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(EcsError::client(format!("Too many containers: at most {MAX_CONTAINERS} are allowed.")));
    }
    let mut names = HashSet::new();
    let mut port_names = HashSet::new();
    for c in containers {
        check_container(c, def, awsvpc)?;
        if !names.insert(c.name.as_deref().unwrap_or_default()) {
            return Err(EcsError::client("Duplicate container names are not allowed."));
        }
        for name in c.port_mappings.iter().filter_map(|p| p.name.as_deref()) {
            if !port_names.insert(name) {
                return Err(EcsError::client(format!(
                    "Port mapping names must be unique within a task definition: {name} is used more than once."
                )));
            }
        }
    }
    if !containers.iter().any(|c| c.essential.unwrap_or(true)) {
        return Err(EcsError::client("At least one essential container is required."));
    }
    Ok(())
}

fn check_container(c: &ContainerDefinition, def: &TaskDefinition, awsvpc: bool) -> Result<(), EcsError> {
    let name = c.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return Err(EcsError::client("Container.name should not be null or empty."));
    }
    if !keys::is_name(name) {
        return Err(EcsError::client(
            "Container.name contains invalid characters: up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed.",
        ));
    }
    if c.image.as_deref().unwrap_or_default().is_empty() {
        return Err(EcsError::client("Container.image should not be null or empty."));
    }
    if def.memory.is_none() && c.memory.is_none() && c.memory_reservation.is_none() {
        return Err(EcsError::client(format!(
            "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
        )));
    }
    for p in &c.port_mappings {
        match (p.container_port, &p.container_port_range) {
            (Some(port), _) if !(1..=65535).contains(&port) => {
                return Err(EcsError::client(format!("Invalid containerPort: {port}")));
            }
            (None, None) => return Err(EcsError::client("Container port should not be null or empty.")),
            _ => {}
        }
        if awsvpc && p.host_port.is_some() && p.host_port != p.container_port {
            return Err(EcsError::client(
                "When networkMode=awsvpc, the host ports and container ports in port mappings must match.",
            ));
        }
        if let Some(protocol) = &p.protocol
            && !matches!(protocol.as_str(), "tcp" | "udp")
        {
            return Err(EcsError::client(format!("Invalid protocol: {protocol}")));
        }
        if let Some(port_name) = &p.name
            && !is_port_name(port_name)
        {
            return Err(EcsError::client(format!(
                "Invalid port mapping name '{port_name}': up to 64 characters, lowercase letters, numbers, underscores and hyphens, not starting with a hyphen."
            )));
        }
        if let Some(app) = &p.app_protocol {
            if !matches!(app.as_str(), "http" | "http2" | "grpc") {
                return Err(EcsError::client(format!("Invalid appProtocol: {app}")));
            }
            if p.name.is_none() {
                return Err(EcsError::client("appProtocol requires the port mapping to have a name."));
            }
        }
    }
    Ok(())
}

/// `[a-z0-9_-]{1,64}`, not starting with `-`.
fn is_port_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// What ECS writes into a registered definition that the caller left out.
fn fill_defaults(def: &mut TaskDefinition) {
    let awsvpc = def.network_mode.as_deref() == Some("awsvpc");
    def.compatibilities = match awsvpc {
        true => vec!["EC2".into(), "FARGATE".into()],
        false => vec!["EC2".into()],
    };
    for c in &mut def.container_definitions {
        c.cpu.get_or_insert(0);
        c.essential.get_or_insert(true);
        for p in &mut c.port_mappings {
            p.protocol.get_or_insert_with(|| "tcp".into());
            if awsvpc && p.container_port.is_some() {
                p.host_port = p.container_port;
            }
        }
        for member in ["mountPoints", "volumesFrom", "systemControls"] {
            c.extra.entry(member.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
        }
    }
    def.extra.entry("volumes".to_owned()).or_insert_with(|| Value::Array(Vec::new()));
    def.extra.entry("placementConstraints".to_owned()).or_insert_with(|| Value::Array(Vec::new()));
}
