//! The ECS API subset (JSON 1.1: `POST /` with `X-Amz-Target:
//! AmazonEC2ContainerServiceV20141113.<Operation>`): clusters, task definitions, services and
//! tasks as records under `ecs/` ([`keys`]), answered by serializing the records of
//! `trellis_model::ecs`. Only the control plane: nothing here runs a task. The scheduler and
//! runner (in the `trellis` binary) move tasks through their lifecycle and act on services,
//! through [`runtime`].
//!
//! Counts (a service's and its deployments' `runningCount`/`pendingCount`, a cluster's task and
//! service counts) are not stored: they are computed from the task records when read, so they
//! always agree with them.

use axum::body::Bytes;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::Value;
use trellis_model::Timestamp;
use trellis_model::ecs::{Cluster, Tag, status};
use trellis_store::Store;

use crate::ControlState;
use crate::dispatch::Ctx;
use crate::repo::{self, Versioned};

mod cluster;
mod error;
mod keys;
mod network;
pub mod runtime;
mod service;
mod tag;
mod task;
mod task_definition;

pub use error::EcsError;
use keys::{EcsArn, EcsKeys};

/// What every ECS `X-Amz-Target` starts with.
pub(crate) const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// The cluster a request means when it names none.
const DEFAULT_CLUSTER: &str = "default";

/// The ECS operations Trellis serves, named as AWS names them, A–Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // The names are AWS's; the API reference documents each.
pub enum Operation {
    CreateCluster,
    CreateService,
    DeleteCluster,
    DeleteService,
    DeregisterTaskDefinition,
    DescribeClusters,
    DescribeServices,
    DescribeTaskDefinition,
    DescribeTasks,
    ListClusters,
    ListServices,
    ListTagsForResource,
    ListTaskDefinitions,
    ListTasks,
    RegisterTaskDefinition,
    RunTask,
    StopTask,
    TagResource,
    UntagResource,
    UpdateService,
}

/// One ECS request, handed to its operation's handler.
pub(crate) struct Req<'a> {
    pub(crate) state: &'a ControlState,
    pub(crate) ctx: &'a Ctx,
    pub(crate) body: &'a Bytes,
    pub(crate) keys: EcsKeys,
}

/// A successful answer's body.
type Reply = Result<Value, EcsError>;

/// Where a page of a listing starts and how long it is (`nextToken`, `maxResults`).
#[derive(Clone, Debug)]
pub(crate) struct Paging {
    limit: usize,
    after: Option<String>,
}

/// Whether the operation named by `target` writes (it takes the node's write turn).
pub(crate) fn is_write(target: &str) -> bool {
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    !(op.starts_with("Describe") || op.starts_with("List"))
}

/// Handles one ECS request.
pub(crate) async fn handle(state: &ControlState, ctx: &Ctx, target: &str, body: &Bytes) -> Response {
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    let req = Req { state, ctx, body, keys: EcsKeys::new(&ctx.region, &ctx.account) };
    crate::json11::reply(dispatch(&req, op).await, &ctx.request_id)
}

async fn dispatch(req: &Req<'_>, op: &str) -> Reply {
    use Operation::*;
    let Some(operation) = Operation::parse(op) else {
        return Err(EcsError::UnknownOperation(format!("{op} is not supported by Trellis")));
    };
    match operation {
        CreateCluster => cluster::create(req).await,
        CreateService => service::create(req).await,
        DeleteCluster => cluster::delete(req).await,
        DeleteService => service::delete(req).await,
        DeregisterTaskDefinition => task_definition::deregister(req).await,
        DescribeClusters => cluster::describe(req).await,
        DescribeServices => service::describe(req).await,
        DescribeTaskDefinition => task_definition::describe(req).await,
        DescribeTasks => task::describe(req).await,
        ListClusters => cluster::list(req).await,
        ListServices => service::list(req).await,
        ListTagsForResource => tag::list(req).await,
        ListTaskDefinitions => task_definition::list(req).await,
        ListTasks => task::list(req).await,
        RegisterTaskDefinition => task_definition::register(req).await,
        RunTask => task::run(req).await,
        StopTask => task::stop(req).await,
        TagResource => tag::tag(req).await,
        UntagResource => tag::untag(req).await,
        UpdateService => service::update(req).await,
    }
}

// === impl Operation ===

impl Operation {
    /// Every operation, A–Z.
    pub const ALL: [Self; 20] = [
        Self::CreateCluster,
        Self::CreateService,
        Self::DeleteCluster,
        Self::DeleteService,
        Self::DeregisterTaskDefinition,
        Self::DescribeClusters,
        Self::DescribeServices,
        Self::DescribeTaskDefinition,
        Self::DescribeTasks,
        Self::ListClusters,
        Self::ListServices,
        Self::ListTagsForResource,
        Self::ListTaskDefinitions,
        Self::ListTasks,
        Self::RegisterTaskDefinition,
        Self::RunTask,
        Self::StopTask,
        Self::TagResource,
        Self::UntagResource,
        Self::UpdateService,
    ];

    /// The operation an `X-Amz-Target` names (after the prefix).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| format!("{op:?}") == name)
    }
}

// === impl Req ===

impl Req<'_> {
    pub(crate) fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }

    /// The request's input shape.
    pub(crate) fn input<T: DeserializeOwned>(&self) -> Result<T, EcsError> {
        Ok(crate::lattice::input::parse_json(self.body)?)
    }

    /// Who is calling, as `createdBy`/`registeredBy` show it.
    pub(crate) fn caller_arn(&self) -> String {
        format!("arn:aws:iam::{}:root", self.ctx.account)
    }

    /// The cluster named by a `cluster` member (a name or an ARN; absent: `default`). An ARN of
    /// another region or account names no cluster here.
    pub(crate) fn cluster_name(&self, given: Option<&str>) -> Result<String, EcsError> {
        let Some(given) = given else { return Ok(DEFAULT_CLUSTER.to_owned()) };
        if let Some(arn) = EcsArn::parse(given) {
            if arn.kind != "cluster" || !keys::is_name(arn.path) {
                return Err(EcsError::invalid(format!("Invalid cluster: {given}")));
            }
            if !self.keys.is_local(&arn) {
                return Err(EcsError::ClusterNotFound);
            }
            return Ok(arn.path.to_owned());
        }
        if !keys::is_name(given) {
            return Err(EcsError::ClusterNotFound);
        }
        Ok(given.to_owned())
    }

    /// The cluster's record; `ClusterNotFoundException` if there is none.
    pub(crate) async fn cluster(&self, name: &str) -> Result<Versioned<Cluster>, EcsError> {
        repo::load::<Cluster>(self.store(), &self.keys.cluster(name)).await?.ok_or(EcsError::ClusterNotFound)
    }

    /// Like [`Req::cluster`], requiring it to be ACTIVE (new services and tasks go only there).
    pub(crate) async fn active_cluster(&self, name: &str) -> Result<Versioned<Cluster>, EcsError> {
        let cluster = self.cluster(name).await?;
        if cluster.value.status != status::ACTIVE {
            return Err(EcsError::invalid(
                "The specified cluster is inactive. Specify an active cluster and try again.",
            ));
        }
        Ok(cluster)
    }
}

// === impl Paging ===

impl Paging {
    /// Reads `maxResults` (1–100; `default` when absent) and `nextToken` for a listing of the
    /// keys under `prefix`.
    pub(crate) fn new(
        next_token: Option<&str>,
        max_results: Option<i64>,
        default: usize,
        prefix: &str,
    ) -> Result<Self, EcsError> {
        let limit = match max_results {
            None => default,
            Some(n @ 1..=100) => n as usize,
            Some(_) => return Err(EcsError::invalid("maxResults must be between 1 and 100.")),
        };
        let after = match next_token {
            None => None,
            Some(token) => Some(
                crate::keys::key_of_token(token)
                    .filter(|k| k.starts_with(prefix))
                    .ok_or_else(|| EcsError::invalid("Invalid nextToken."))?,
            ),
        };
        Ok(Self { limit, after })
    }

    /// One page of `items` (sorted by key, descending if `desc`), and the token of the next.
    pub(crate) fn page<T>(&self, items: Vec<(String, T)>, desc: bool) -> (Vec<T>, Option<String>) {
        let mut rest = items.into_iter().filter(|(key, _)| match &self.after {
            None => true,
            Some(after) if desc => key < after,
            Some(after) => key > after,
        });
        let mut page = Vec::new();
        let mut last = None;
        for (key, item) in rest.by_ref().take(self.limit) {
            last = Some(key);
            page.push(item);
        }
        let token = match rest.next() {
            Some(_) => last.map(|k| crate::keys::token_of(&k)),
            None => None,
        };
        (page, token)
    }
}

/// Checks ECS tags: at most 50, keys 1–128 characters, values at most 256, no key starting with
/// `aws:`.
pub(crate) fn check_tags(tags: &[Tag]) -> Result<(), EcsError> {
    if tags.len() > 50 {
        return Err(EcsError::invalid("The maximum number of tags for a resource is 50."));
    }
    for tag in tags {
        if tag.key.is_empty() || tag.key.chars().count() > 128 {
            return Err(EcsError::invalid("Tag keys must be between 1 and 128 characters."));
        }
        if tag.value.chars().count() > 256 {
            return Err(EcsError::invalid("Tag values must be at most 256 characters."));
        }
        if tag.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(EcsError::invalid("Tag keys may not start with the reserved prefix aws:."));
        }
    }
    Ok(())
}

/// Now.
pub(crate) fn now() -> Timestamp {
    crate::now()
}

/// A fresh UUID (event, container and attachment IDs).
pub(crate) fn uuid() -> String {
    crate::request_id()
}

#[cfg(test)]
mod tests;
