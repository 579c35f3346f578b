//! ECS resources as Trellis stores them: clusters, task definitions, services and tasks, spelled
//! exactly as the `ecs` API (2014-11-13, JSON 1.1) spells its output shapes, so that the API
//! answers by serializing the stored record. Unset optional members and empty lists are skipped
//! when written, as ECS omits them; timestamps are epoch seconds (JSON 1.1's format).
//!
//! Statuses are the strings ECS uses (`lastStatus`, `desiredStatus`, `status` are plain strings
//! in the model too); the constants in [`status`] name the ones Trellis writes.
//!
//! Members the API accepts but Trellis does not act on (volumes, log configuration, …) ride in
//! the `extra` maps of [`TaskDefinition`] and [`ContainerDefinition`], so that they are echoed
//! back unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Members kept as given and echoed back, by name.
pub type Extra = BTreeMap<String, serde_json::Value>;

/// Status strings Trellis writes.
pub mod status {
    /// Clusters, services, task definitions: in use.
    pub const ACTIVE: &str = "ACTIVE";
    /// Services being deleted: the scheduler stops their tasks, then marks them INACTIVE.
    pub const DRAINING: &str = "DRAINING";
    /// Clusters and services deleted; task definitions deregistered.
    pub const INACTIVE: &str = "INACTIVE";
    /// Deployments: the one being rolled out.
    pub const PRIMARY: &str = "PRIMARY";
    /// Tasks: created, its network not made yet.
    pub const PROVISIONING: &str = "PROVISIONING";
    /// Tasks: network made, containers starting. Containers: not started yet.
    pub const PENDING: &str = "PENDING";
    /// Tasks: containers running, being registered with target groups.
    pub const ACTIVATING: &str = "ACTIVATING";
    /// Tasks and containers: running.
    pub const RUNNING: &str = "RUNNING";
    /// Tasks: being deregistered from target groups.
    pub const DEACTIVATING: &str = "DEACTIVATING";
    /// Tasks: containers being stopped.
    pub const STOPPING: &str = "STOPPING";
    /// Tasks: network being removed.
    pub const DEPROVISIONING: &str = "DEPROVISIONING";
    /// Tasks and containers: stopped.
    pub const STOPPED: &str = "STOPPED";
}

/// A tag (`{"key", "value"}`; ECS's tags are a list).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// 1–128 characters.
    pub key: String,
    /// 0–256 characters.
    #[serde(default)]
    pub value: String,
}

/// A name and a value (environment variables, statistics, attachment details).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValuePair {
    /// The name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// `arn:aws:ecs:<region>:<account>:cluster/<name>`.
    pub cluster_arn: String,
    /// 1–255 letters, digits, `-` and `_`.
    pub cluster_name: String,
    /// `ACTIVE` or `INACTIVE`.
    pub status: String,
    /// Always 0: Trellis has no container instances.
    #[serde(default)]
    pub registered_container_instances_count: i32,
    /// Computed when read: tasks whose lastStatus is RUNNING.
    #[serde(default)]
    pub running_tasks_count: i32,
    /// Computed when read: tasks PROVISIONING, PENDING or ACTIVATING.
    #[serde(default)]
    pub pending_tasks_count: i32,
    /// Computed when read: ACTIVE services.
    #[serde(default)]
    pub active_services_count: i32,
    /// Only with `include: STATISTICS`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<KeyValuePair>,
    /// Stored here; answered only with `include: TAGS`, and on create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// `containerInsights`, as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<ClusterSetting>,
    /// As given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_providers: Vec<String>,
    /// As given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
}

/// A cluster setting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSetting {
    /// `containerInsights`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `enhanced`, `enabled` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A capacity provider and its share.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityProviderStrategyItem {
    /// `FARGATE`, `FARGATE_SPOT` or a provider's name.
    pub capacity_provider: String,
    /// Relative share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Tasks placed first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<i32>,
}

/// One revision of a task definition family.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    /// `arn:aws:ecs:<region>:<account>:task-definition/<family>:<revision>`.
    pub task_definition_arn: String,
    /// 1–10 containers.
    pub container_definitions: Vec<ContainerDefinition>,
    /// The family name.
    pub family: String,
    /// The role the task's containers get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    /// The role the agent uses to pull images and write logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// `bridge`, `host`, `awsvpc` or `none`. Lattice needs `awsvpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// 1, 2, … within the family.
    pub revision: i32,
    /// `ACTIVE` or `INACTIVE` (deregistered).
    pub status: String,
    /// `EC2`, `FARGATE`, … as ECS computes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compatibilities: Vec<String>,
    /// As given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_compatibilities: Vec<String>,
    /// Task-level CPU units, as given (`"256"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Task-level memory in MiB, as given (`"512"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// When registered.
    #[serde(with = "crate::time::epoch")]
    pub registered_at: Timestamp,
    /// When deregistered.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::epoch_opt")]
    pub deregistered_at: Option<Timestamp>,
    /// Who registered it (an ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_by: Option<String>,
    /// Members accepted and echoed but not acted on (`volumes`, `placementConstraints`,
    /// `runtimePlatform`, `pidMode`, `ipcMode`, `ephemeralStorage`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// A container of a task definition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    /// Unique within the task definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i32>,
    /// Hard memory limit, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i32>,
    /// Soft memory limit, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i32>,
    /// The ports the container listens on. ECS echoes an empty list.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Whether the task stops when this container does (ECS writes `true` when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    /// Replaces the image's entry point.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_point: Vec<String>,
    /// Replaces the image's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables. ECS echoes an empty list.
    #[serde(default)]
    pub environment: Vec<KeyValuePair>,
    /// The working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// The user to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i32>,
    /// Seconds to wait for dependencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<i32>,
    /// The container's health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Members accepted and echoed but not acted on (`logConfiguration`, `mountPoints`,
    /// `volumesFrom`, `dockerLabels`, `ulimits`, `secrets`, …). ECS echoes `mountPoints`,
    /// `volumesFrom` and `systemControls` as empty lists.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A port a container listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i32>,
    /// The host port (awsvpc: equal to `containerPort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// What `vpcLatticeConfigurations[].portName` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `http`, `http2` or `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// `"8000-8010"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port_range: Option<String>,
}

/// A container's health check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `["CMD", …]` or `["CMD-SHELL", "…"]`.
    pub command: Vec<String>,
    /// Seconds between checks (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i32>,
    /// Seconds before a check fails (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i32>,
    /// Failures before unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    /// Grace period in seconds (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i32>,
}

/// A service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `arn:aws:ecs:<region>:<account>:service/<cluster>/<name>`.
    pub service_arn: String,
    /// Unique among the cluster's ACTIVE and DRAINING services.
    pub service_name: String,
    /// Its cluster.
    pub cluster_arn: String,
    /// `ACTIVE`, `DRAINING` or `INACTIVE`.
    pub status: String,
    /// How many tasks the scheduler keeps running.
    pub desired_count: i32,
    /// Computed when read: the service's tasks whose lastStatus is RUNNING.
    #[serde(default)]
    pub running_count: i32,
    /// Computed when read: the service's tasks PROVISIONING, PENDING or ACTIVATING.
    #[serde(default)]
    pub pending_count: i32,
    /// `FARGATE` (default), `EC2`, `EXTERNAL`, `MANAGED_INSTANCES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    /// `LATEST` for Fargate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<String>,
    /// `Linux` for Fargate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_family: Option<String>,
    /// The primary deployment's task definition ARN.
    pub task_definition: String,
    /// Rollout limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    /// Newest first: the PRIMARY one, then ACTIVE ones still draining.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<Deployment>,
    /// Newest first, at most 100.
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
    /// When created.
    #[serde(with = "crate::time::epoch")]
    pub created_at: Timestamp,
    /// The primary deployment's network configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
    /// Seconds after a task starts during which failed health checks are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<i32>,
    /// `REPLICA` (default) or `DAEMON`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_strategy: Option<String>,
    /// `{"type": "ECS"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_controller: Option<DeploymentController>,
    /// Stored here; answered only with `include: TAGS`, and on create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Who created it (an ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// As given (default false).
    #[serde(default, rename = "enableECSManagedTags")]
    pub enable_ecs_managed_tags: bool,
    /// `TASK_DEFINITION`, `SERVICE` or `NONE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<String>,
    /// As given (default false).
    #[serde(default)]
    pub enable_execute_command: bool,
}

/// One rollout of a service's configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/<19 digits>`; the service's tasks carry it as `startedBy`.
    pub id: String,
    /// `PRIMARY` (the newest), `ACTIVE` (older ones still running tasks) or `INACTIVE`.
    pub status: String,
    /// Its task definition ARN.
    pub task_definition: String,
    /// Tasks wanted (the primary: the service's desiredCount).
    pub desired_count: i32,
    /// Computed when read.
    #[serde(default)]
    pub pending_count: i32,
    /// Computed when read.
    #[serde(default)]
    pub running_count: i32,
    /// Tasks that failed to start.
    #[serde(default)]
    pub failed_tasks: i32,
    /// When created.
    #[serde(with = "crate::time::epoch")]
    pub created_at: Timestamp,
    /// When last changed.
    #[serde(with = "crate::time::epoch")]
    pub updated_at: Timestamp,
    /// As the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    /// As the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<String>,
    /// As the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_family: Option<String>,
    /// The tasks' network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state_reason: Option<String>,
    /// The Lattice target groups the deployment's tasks are registered with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpc_lattice_configurations: Vec<VpcLatticeConfiguration>,
}

/// Rollout limits of a service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    /// Stop a failing rollout (and roll back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_circuit_breaker: Option<DeploymentCircuitBreaker>,
    /// Upper bound on running tasks during a rollout, percent of desiredCount (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_percent: Option<i32>,
    /// Lower bound on healthy tasks during a rollout, percent of desiredCount (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_healthy_percent: Option<i32>,
    /// `ROLLING` (default), `BLUE_GREEN`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Members accepted and echoed but not acted on (`alarms`, `bakeTimeInMinutes`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The deployment circuit breaker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCircuitBreaker {
    /// Whether a failing rollout is stopped.
    pub enable: bool,
    /// Whether it is then rolled back.
    pub rollback: bool,
}

/// `{"type": "ECS"}` (`CODE_DEPLOY` and `EXTERNAL` are accepted and stored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentController {
    /// `ECS`, `CODE_DEPLOY` or `EXTERNAL`.
    #[serde(rename = "type")]
    pub type_: String,
}

/// A task's network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfiguration {
    /// For `awsvpc` tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awsvpc_configuration: Option<AwsVpcConfiguration>,
}

/// Where an `awsvpc` task's network interface goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsVpcConfiguration {
    /// 1–16 subnets of one VPC.
    pub subnets: Vec<String>,
    /// 0–5 security groups of that VPC (none: the VPC's default group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// `ENABLED` or `DISABLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_public_ip: Option<String>,
}

/// A Lattice target group a service's tasks are registered with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcLatticeConfiguration {
    /// The infrastructure role ECS assumes to call Lattice.
    pub role_arn: String,
    /// An IP target group in the tasks' VPC.
    pub target_group_arn: String,
    /// Names a `portMappings[].name` of the task definition: the targets' port.
    pub port_name: String,
}

/// One line of a service's event log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    /// A UUID.
    pub id: String,
    /// When.
    #[serde(with = "crate::time::epoch")]
    pub created_at: Timestamp,
    /// `(service web) has reached a steady state.`
    pub message: String,
}

/// A task: one run of a task definition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Its network interface (`ElasticNetworkInterface`) for `awsvpc` tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// The zone of its subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Its cluster.
    pub cluster_arn: String,
    /// `CONNECTED` once running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity: Option<String>,
    /// When it became CONNECTED.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::epoch_opt")]
    pub connectivity_at: Option<Timestamp>,
    /// One per container definition.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Task-level CPU units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// When created.
    #[serde(with = "crate::time::epoch")]
    pub created_at: Timestamp,
    /// `RUNNING` or `STOPPED`.
    pub desired_status: String,
    /// When its essential containers exited.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::epoch_opt")]
    pub execution_stopped_at: Option<Timestamp>,
    /// `family:<family>` or `service:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    /// PROVISIONING → PENDING → ACTIVATING → RUNNING → DEACTIVATING → STOPPING →
    /// DEPROVISIONING → STOPPED.
    pub last_status: String,
    /// `FARGATE`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    /// Task-level memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Per-container command and environment overrides (RunTask).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverride>,
    /// `LATEST` for Fargate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<String>,
    /// `Linux` for Fargate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_family: Option<String>,
    /// When its images started being pulled.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::epoch_opt")]
    pub pull_started_at: Option<Timestamp>,
    /// When its images were pulled.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::epoch_opt")]
    pub pull_stopped_at: Option<Timestamp>,
    /// When it became RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::epoch_opt")]
    pub started_at: Option<Timestamp>,
    /// Who started it: RunTask's `startedBy`, or the service deployment's ID (`ecs-svc/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// `UserInitiated`, `EssentialContainerExited`, `ServiceSchedulerInitiated`,
    /// `TaskFailedToStart`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    /// When it became STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::epoch_opt")]
    pub stopped_at: Option<Timestamp>,
    /// Why it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// When it was asked to stop.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::epoch_opt")]
    pub stopping_at: Option<Timestamp>,
    /// Stored here; answered only with `include: TAGS`, and by RunTask.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// `arn:aws:ecs:<region>:<account>:task/<cluster>/<32 hex>`.
    pub task_arn: String,
    /// Its task definition.
    pub task_definition_arn: String,
    /// 1 when created; every change adds one.
    pub version: i64,
    /// As given.
    #[serde(default)]
    pub enable_execute_command: bool,
}

/// A container of a task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `arn:aws:ecs:<region>:<account>:container/<cluster>/<task-id>/<uuid>`.
    pub container_arn: String,
    /// Its task.
    pub task_arn: String,
    /// Its container definition's name.
    pub name: String,
    /// The image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `sha256:…` once pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The runtime's ID for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// `PENDING`, `RUNNING` or `STOPPED`.
    pub last_status: String,
    /// Once STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it stopped abnormally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ports bound (not used by `awsvpc` tasks). ECS echoes an empty list.
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    /// The task's interface, as the container sees it.
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    /// CPU units, as the definition's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory, as the definition's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Memory reservation, as the definition's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<String>,
}

/// A bound port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    /// The host address.
    #[serde(default, rename = "bindIP", skip_serializing_if = "Option::is_none")]
    pub bind_ip: Option<String>,
    /// The container's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i32>,
    /// The host's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
    /// `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// Something attached to a task: for `awsvpc` tasks, its network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// A UUID.
    pub id: String,
    /// `ElasticNetworkInterface`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `PRECREATED`, `CREATED`, `ATTACHING`, `ATTACHED`, `DETACHING`, `DETACHED`, `DELETED`.
    pub status: String,
    /// `subnetId` (from the start), then `networkInterfaceId`, `macAddress`,
    /// `privateDnsName`, `privateIPv4Address` once attached.
    #[serde(default)]
    pub details: Vec<KeyValuePair>,
}

/// A task's network interface as its containers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// The attachment's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
    /// The task's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ipv4_address: Option<String>,
    /// Its IPv6 address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

/// RunTask's overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverride {
    /// Per container, by name.
    #[serde(default)]
    pub container_overrides: Vec<ContainerOverride>,
    /// Task-level CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Task-level memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// The task role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    /// The execution role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
}

/// One container's overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    /// The container definition's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Replaces the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Added to (and overriding) the environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValuePair>,
    /// CPU units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i32>,
    /// Memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i32>,
    /// Memory reservation, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i32>,
}

// === impl Task ===

impl Task {
    /// The task's ID (the last segment of its ARN).
    pub fn id(&self) -> &str {
        self.task_arn.rsplit('/').next().unwrap_or_default()
    }

    /// The private IPv4 address of its network interface, once attached.
    pub fn private_ipv4_address(&self) -> Option<&str> {
        self.attachments.iter().filter(|a| a.type_ == "ElasticNetworkInterface").find_map(|a| {
            a.details.iter().find(|d| d.name.as_deref() == Some("privateIPv4Address")).and_then(|d| d.value.as_deref())
        })
    }

    /// Whether the task counts as pending (PROVISIONING, PENDING or ACTIVATING).
    pub fn is_pending(&self) -> bool {
        matches!(self.last_status.as_str(), status::PROVISIONING | status::PENDING | status::ACTIVATING)
    }

    /// Whether the task counts as running.
    pub fn is_running(&self) -> bool {
        self.last_status == status::RUNNING
    }
}

// === impl Service ===

impl Service {
    /// Events a service keeps.
    pub const MAX_EVENTS: usize = 100;

    /// Adds an event as ECS shows them: newest first, the newest [`Service::MAX_EVENTS`] kept.
    pub fn push_event(&mut self, event: ServiceEvent) {
        self.events.insert(0, event);
        self.events.truncate(Self::MAX_EVENTS);
    }

    /// The PRIMARY deployment.
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.status == status::PRIMARY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_definitions_echo_unknown_members_and_skip_unset_ones() {
        let text = r#"{"taskDefinitionArn":"arn:aws:ecs:us-east-1:000000000000:task-definition/web:1",
            "containerDefinitions":[{"name":"web","image":"nginx","portMappings":[{"containerPort":80,"name":"http"}],
              "environment":[],"logConfiguration":{"logDriver":"awslogs"}}],
            "family":"web","revision":1,"status":"ACTIVE","registeredAt":1683322529.339,"volumes":[]}"#;
        let def: TaskDefinition = serde_json::from_str(text).unwrap();
        assert_eq!(def.container_definitions[0].extra["logConfiguration"]["logDriver"], "awslogs");
        assert_eq!(def.extra["volumes"], serde_json::json!([]));
        let back = serde_json::to_value(&def).unwrap();
        assert_eq!(back["registeredAt"], 1683322529.339);
        assert!(back.get("networkMode").is_none() && back.get("deregisteredAt").is_none());
        assert_eq!(serde_json::from_value::<TaskDefinition>(back).unwrap(), def);
    }

    #[test]
    fn task_helpers() {
        let task = Task {
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/default/0123456789abcdef0123456789abcdef".into(),
            last_status: status::ACTIVATING.into(),
            attachments: vec![Attachment {
                id: "a".into(),
                type_: "ElasticNetworkInterface".into(),
                status: "ATTACHED".into(),
                details: vec![KeyValuePair { name: Some("privateIPv4Address".into()), value: Some("10.0.0.5".into()) }],
            }],
            ..Default::default()
        };
        assert_eq!(task.id(), "0123456789abcdef0123456789abcdef");
        assert_eq!(task.private_ipv4_address(), Some("10.0.0.5"));
        assert!(task.is_pending() && !task.is_running());
    }
}
