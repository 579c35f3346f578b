//! Tasks: RunTask (records only, made with [`runtime::new_task`] and written with
//! [`runtime::create_tasks`], as the scheduler makes its own), StopTask (asks: the runner
//! stops), DescribeTasks (with `MISSING` failures), ListTasks.

use serde::Deserialize;
use serde_json::json;
use trellis_model::ecs::{NetworkConfiguration, Tag, Task, TaskOverride, status};

use super::cluster::with_token;
use super::runtime::{self, Scope};
use super::{EcsArn, EcsError, Paging, Reply, Req, check_tags, network, task_definition};
use crate::repo;

/// Tasks per RunTask.
const MAX_COUNT: i32 = 10;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunTaskRequest {
    cluster: Option<String>,
    task_definition: String,
    count: Option<i32>,
    started_by: Option<String>,
    group: Option<String>,
    network_configuration: Option<NetworkConfiguration>,
    overrides: Option<TaskOverride>,
    launch_type: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    enable_execute_command: bool,
    propagate_tags: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopTaskRequest {
    cluster: Option<String>,
    task: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeTasksRequest {
    cluster: Option<String>,
    tasks: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTasksRequest {
    cluster: Option<String>,
    container_instance: Option<String>,
    family: Option<String>,
    started_by: Option<String>,
    service_name: Option<String>,
    desired_status: Option<String>,
    launch_type: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

pub(super) async fn run(req: &Req<'_>) -> Reply {
    let input: RunTaskRequest = req.input()?;
    let count = input.count.unwrap_or(1);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(EcsError::invalid(format!("count must be between 1 and {MAX_COUNT}.")));
    }
    if input.started_by.as_ref().is_some_and(|s| s.chars().count() > 128) {
        return Err(EcsError::invalid("startedBy must be at most 128 characters."));
    }
    check_launch_type(input.launch_type.as_deref())?;
    check_tags(&input.tags)?;
    let cluster_name = req.cluster_name(input.cluster.as_deref())?;
    let cluster = req.active_cluster(&cluster_name).await?.value;
    let def = task_definition::find(req, &input.task_definition)
        .await?
        .ok_or_else(|| EcsError::client("TaskDefinition not found."))?
        .value;
    if def.status != status::ACTIVE {
        return Err(EcsError::client("TaskDefinition is inactive."));
    }
    network::check_network(req, &def, input.network_configuration.as_ref()).await?;
    if let Some(overrides) = &input.overrides {
        for name in overrides.container_overrides.iter().filter_map(|o| o.name.as_deref()) {
            if !def.container_definitions.iter().any(|c| c.name.as_deref() == Some(name)) {
                return Err(EcsError::invalid(format!(
                    "Override for container named {name} is not a container in the TaskDefinition."
                )));
            }
        }
    }
    let mut tags = input.tags.clone();
    if input.propagate_tags.as_deref() == Some("TASK_DEFINITION") {
        tags.extend(task_definition::tags_of(req, &def).await?);
    }
    let scope = Scope { region: req.ctx.region.clone(), account: req.ctx.account.clone() };
    let group = input.group.clone().unwrap_or_else(|| format!("family:{}", def.family));
    let mut tasks: Vec<Task> = (0..count)
        .map(|_| {
            let network = input.network_configuration.as_ref();
            let mut task =
                runtime::new_task(&scope, &cluster.cluster_arn, &def, &group, input.started_by.as_deref(), network);
            task.overrides = input.overrides.clone();
            task.tags = tags.clone();
            task.enable_execute_command = input.enable_execute_command;
            if let Some(launch_type) = &input.launch_type {
                task.launch_type = Some(launch_type.clone());
            }
            task
        })
        .collect();
    if !runtime::create_tasks_in(req.store(), &scope, &mut tasks).await? {
        return Err(EcsError::invalid("The specified cluster is inactive. Specify an active cluster and try again."));
    }
    Ok(json!({ "tasks": tasks, "failures": [] }))
}

pub(super) async fn stop(req: &Req<'_>) -> Reply {
    let input: StopTaskRequest = req.input()?;
    if input.reason.as_ref().is_some_and(|r| r.chars().count() > 255) {
        return Err(EcsError::invalid("reason must be at most 255 characters."));
    }
    let cluster_name = req.cluster_name(input.cluster.as_deref())?;
    req.cluster(&cluster_name).await?;
    let not_found = || EcsError::invalid("The referenced task was not found.");
    let arn = task_arn(req, &cluster_name, &input.task).ok_or_else(not_found)?;
    let reason = input.reason.unwrap_or_else(|| "Task stopped by user".to_owned());
    let now = super::now();
    let task = runtime::update_task(req.store(), &arn, |task| {
        if task.desired_status == status::STOPPED {
            return false;
        }
        task.desired_status = status::STOPPED.into();
        task.stopping_at = Some(now);
        task.stopped_reason = Some(reason.clone());
        task.stop_code = Some("UserInitiated".into());
        true
    })
    .await?
    .ok_or_else(not_found)?;
    Ok(json!({ "task": task }))
}

pub(super) async fn describe(req: &Req<'_>) -> Reply {
    let input: DescribeTasksRequest = req.input()?;
    if input.tasks.is_empty() || input.tasks.len() > 100 {
        return Err(EcsError::invalid("tasks must have between 1 and 100 items."));
    }
    let cluster_name = req.cluster_name(input.cluster.as_deref())?;
    req.cluster(&cluster_name).await?;
    let tags = input.include.iter().any(|i| i == "TAGS");
    let (mut tasks, mut failures) = (Vec::new(), Vec::new());
    for given in &input.tasks {
        let arn = task_arn(req, &cluster_name, given);
        let found = match arn.as_deref().and_then(|a| key_of(req, a)) {
            Some(key) => repo::load::<Task>(req.store(), &key).await?.map(|r| r.value),
            None => None,
        };
        match found {
            Some(mut task) => {
                if !tags {
                    task.tags.clear();
                }
                tasks.push(task);
            }
            None => failures.push(json!({ "arn": arn.unwrap_or_else(|| given.clone()), "reason": "MISSING" })),
        }
    }
    Ok(json!({ "tasks": tasks, "failures": failures }))
}

pub(super) async fn list(req: &Req<'_>) -> Reply {
    let input: ListTasksRequest = req.input()?;
    let desired = input.desired_status.as_deref().unwrap_or(status::RUNNING);
    if !matches!(desired, "RUNNING" | "PENDING" | "STOPPED") {
        return Err(EcsError::invalid(format!("Invalid desiredStatus: {desired}")));
    }
    check_launch_type(input.launch_type.as_deref())?;
    let cluster_name = req.cluster_name(input.cluster.as_deref())?;
    req.cluster(&cluster_name).await?;
    let prefix = req.keys.tasks(&cluster_name);
    let paging = Paging::new(input.next_token.as_deref(), input.max_results, 100, &prefix)?;
    if input.container_instance.is_some() {
        // Trellis has no container instances, so no task runs on one.
        return Ok(json!({ "taskArns": [] }));
    }
    let family = input.family.as_ref().map(|f| format!(":task-definition/{f}:"));
    let group = input.service_name.as_ref().map(|s| format!("service:{s}"));
    let (all, _) = repo::list::<Task>(req.store(), &prefix, None, 0).await?;
    let matching = all
        .into_iter()
        .filter(|r| {
            let t = &r.value;
            t.desired_status == desired
                && family.as_ref().is_none_or(|f| t.task_definition_arn.contains(f.as_str()))
                && group.as_ref().is_none_or(|g| t.group.as_ref() == Some(g))
                && input.started_by.as_ref().is_none_or(|s| t.started_by.as_ref() == Some(s))
                && input.launch_type.as_ref().is_none_or(|l| t.launch_type.as_ref() == Some(l))
        })
        .map(|r| (r.key, r.value.task_arn))
        .collect();
    let (arns, token) = paging.page(matching, false);
    Ok(with_token(json!({ "taskArns": arns }), token))
}

/// The ARN of the task `given` names (its ID, or its ARN in either the `task/<cluster>/<id>` or
/// the old `task/<id>` form); `None` if it names no task here.
fn task_arn(req: &Req<'_>, cluster: &str, given: &str) -> Option<String> {
    let Some(arn) = EcsArn::parse(given) else {
        let ok = !given.is_empty() && given.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        return ok.then(|| req.keys.task_arn(cluster, given));
    };
    if arn.kind != "task" || !req.keys.is_local(&arn) {
        return None;
    }
    match arn.path.split_once('/') {
        Some((in_cluster, id)) => Some(req.keys.task_arn(in_cluster, id)),
        None => Some(req.keys.task_arn(cluster, arn.path)),
    }
}

/// The store key of one of this scope's task ARNs.
fn key_of(req: &Req<'_>, arn: &str) -> Option<String> {
    let arn = EcsArn::parse(arn)?;
    let (cluster, id) = arn.path.split_once('/')?;
    Some(req.keys.task(cluster, id))
}

/// `launchType`, if given, is one ECS knows.
pub(super) fn check_launch_type(launch_type: Option<&str>) -> Result<(), EcsError> {
    match launch_type {
        None | Some("EC2" | "FARGATE" | "EXTERNAL" | "MANAGED_INSTANCES") => Ok(()),
        Some(other) => Err(EcsError::invalid(format!("Invalid launchType: {other}"))),
    }
}
