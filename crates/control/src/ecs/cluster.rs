//! Clusters: CreateCluster (idempotent; no name means `default`), DescribeClusters (with
//! `MISSING` failures), ListClusters, DeleteCluster (refused while services are ACTIVE or
//! DRAINING, or tasks have not stopped; the cluster stays describable as INACTIVE).

use serde::Deserialize;
use serde_json::{Value, json};
use trellis_model::ecs::{
    CapacityProviderStrategyItem, Cluster, ClusterSetting, KeyValuePair, Service, Tag, Task, status,
};

use super::{DEFAULT_CLUSTER, EcsError, Paging, Reply, Req, check_tags, keys};
use crate::repo::{self, Attempts, Tx};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateClusterRequest {
    cluster_name: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    settings: Vec<ClusterSetting>,
    #[serde(default)]
    capacity_providers: Vec<String>,
    #[serde(default)]
    default_capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeClustersRequest {
    clusters: Option<Vec<String>>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListClustersRequest {
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteClusterRequest {
    cluster: String,
}

pub(super) async fn create(req: &Req<'_>) -> Reply {
    let input: CreateClusterRequest = req.input()?;
    let name = input.cluster_name.unwrap_or_else(|| DEFAULT_CLUSTER.to_owned());
    if !keys::is_name(&name) {
        return Err(EcsError::invalid(
            "Invalid clusterName: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ));
    }
    check_tags(&input.tags)?;
    let settings = match input.settings.is_empty() {
        true => vec![ClusterSetting { name: Some("containerInsights".into()), value: Some("disabled".into()) }],
        false => input.settings,
    };
    let record = Cluster {
        cluster_arn: req.keys.cluster_arn(&name),
        cluster_name: name.clone(),
        status: status::ACTIVE.into(),
        tags: input.tags,
        settings,
        capacity_providers: input.capacity_providers,
        default_capacity_provider_strategy: input.default_capacity_provider_strategy,
        ..Default::default()
    };
    let key = req.keys.cluster(&name);
    let mut attempts = Attempts::default();
    loop {
        let existing = repo::load::<Cluster>(req.store(), &key).await?;
        let mut tx = Tx::default();
        match &existing {
            // CreateCluster of an ACTIVE cluster answers it, as ECS does.
            Some(read) if read.value.status == status::ACTIVE => {
                let mut cluster = read.value.clone();
                fill_counts(req, &mut cluster).await?;
                return Ok(json!({ "cluster": cluster }));
            }
            Some(read) => tx.update(read, &record),
            None => tx.create(key.clone(), &record),
        }
        if attempts.commit(req.store(), tx).await? {
            return Ok(json!({ "cluster": record }));
        }
    }
}

pub(super) async fn describe(req: &Req<'_>) -> Reply {
    let input: DescribeClustersRequest = req.input()?;
    let names = input.clusters.unwrap_or_else(|| vec![DEFAULT_CLUSTER.to_owned()]);
    if names.len() > 100 {
        return Err(EcsError::invalid("clusters can have at most 100 items."));
    }
    let (mut clusters, mut failures) = (Vec::new(), Vec::new());
    for given in &names {
        let found = match req.cluster_name(Some(given)) {
            Ok(name) => repo::load::<Cluster>(req.store(), &req.keys.cluster(&name)).await?.map(|r| r.value),
            Err(_) => None,
        };
        let Some(mut cluster) = found else {
            let arn = if given.starts_with("arn:") { given.clone() } else { req.keys.cluster_arn(given) };
            failures.push(json!({ "arn": arn, "reason": "MISSING" }));
            continue;
        };
        fill_counts(req, &mut cluster).await?;
        let included = |what: &str| input.include.iter().any(|i| i == what);
        if !included("TAGS") {
            cluster.tags.clear();
        }
        if !included("SETTINGS") {
            cluster.settings.clear();
        }
        if included("STATISTICS") {
            cluster.statistics = statistics(&cluster);
        }
        clusters.push(cluster);
    }
    Ok(json!({ "clusters": clusters, "failures": failures }))
}

pub(super) async fn list(req: &Req<'_>) -> Reply {
    let input: ListClustersRequest = req.input()?;
    let prefix = req.keys.clusters();
    let paging = Paging::new(input.next_token.as_deref(), input.max_results, 100, &prefix)?;
    let (all, _) = repo::list::<Cluster>(req.store(), &prefix, None, 0).await?;
    let active =
        all.into_iter().filter(|r| r.value.status == status::ACTIVE).map(|r| (r.key, r.value.cluster_arn)).collect();
    let (arns, token) = paging.page(active, false);
    Ok(with_token(json!({ "clusterArns": arns }), token))
}

pub(super) async fn delete(req: &Req<'_>) -> Reply {
    let input: DeleteClusterRequest = req.input()?;
    let name = req.cluster_name(Some(&input.cluster))?;
    let mut attempts = Attempts::default();
    loop {
        let read = req.cluster(&name).await?;
        if read.value.status != status::ACTIVE {
            return Err(EcsError::ClusterNotFound);
        }
        // Creating a service or a task rewrites the cluster record in the same transaction,
        // so the compare on it below proves nothing was added after these listings.
        let (services, _) = repo::list::<Service>(req.store(), &req.keys.services(&name), None, 0).await?;
        if services.iter().any(|s| s.value.status != status::INACTIVE) {
            return Err(EcsError::ClusterContainsServices);
        }
        let (tasks, _) = repo::list::<Task>(req.store(), &req.keys.tasks(&name), None, 0).await?;
        if tasks.iter().any(|t| t.value.last_status != status::STOPPED) {
            return Err(EcsError::ClusterContainsTasks);
        }
        let mut cluster = read.value.clone();
        cluster.status = status::INACTIVE.into();
        let mut tx = Tx::default();
        tx.update(&read, &cluster);
        if attempts.commit(req.store(), tx).await? {
            return Ok(json!({ "cluster": cluster }));
        }
    }
}

/// Computes a cluster's counts from its service and task records.
pub(super) async fn fill_counts(req: &Req<'_>, cluster: &mut Cluster) -> Result<(), EcsError> {
    let name = cluster.cluster_name.clone();
    let (services, _) = repo::list::<Service>(req.store(), &req.keys.services(&name), None, 0).await?;
    let (tasks, _) = repo::list::<Task>(req.store(), &req.keys.tasks(&name), None, 0).await?;
    cluster.active_services_count = services.iter().filter(|s| s.value.status == status::ACTIVE).count() as i32;
    cluster.running_tasks_count = tasks.iter().filter(|t| t.value.is_running()).count() as i32;
    cluster.pending_tasks_count = tasks.iter().filter(|t| t.value.is_pending()).count() as i32;
    cluster.registered_container_instances_count = 0;
    Ok(())
}

/// The `STATISTICS` ECS shows, from the computed counts (every task runs as Fargate here).
fn statistics(cluster: &Cluster) -> Vec<KeyValuePair> {
    let stat = |name: &str, value: i32| KeyValuePair { name: Some(name.into()), value: Some(value.to_string()) };
    vec![
        stat("runningFargateTasksCount", cluster.running_tasks_count),
        stat("pendingFargateTasksCount", cluster.pending_tasks_count),
        stat("activeFargateServiceCount", cluster.active_services_count),
        stat("runningEC2TasksCount", 0),
        stat("pendingEC2TasksCount", 0),
        stat("activeEC2ServiceCount", 0),
        stat("drainingFargateServiceCount", 0),
        stat("drainingEC2ServiceCount", 0),
    ]
}

/// Adds `nextToken` to a listing's answer when there is a next page.
pub(super) fn with_token(mut body: Value, token: Option<String>) -> Value {
    if let Some(token) = token {
        body["nextToken"] = Value::String(token);
    }
    body
}
