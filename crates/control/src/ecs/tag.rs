//! Tags of clusters, services, tasks and task definitions: TagResource, UntagResource,
//! ListTagsForResource. Clusters, services and tasks keep their tags in their record (answered
//! by Describe* only with `include: TAGS`); a task definition's live under their own key, since
//! its shape has no `tags`.

use serde::Deserialize;
use serde_json::{Value, json};
use trellis_model::ecs::Tag;

use super::{EcsArn, EcsError, Reply, Req, check_tags, keys, task_definition};
use crate::repo::{self, Attempts, Tx, Versioned};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagResourceRequest {
    resource_arn: String,
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UntagResourceRequest {
    resource_arn: String,
    tag_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTagsForResourceRequest {
    resource_arn: String,
}

/// Where a resource's tags are kept.
enum Holder {
    /// In the `tags` member of the record under `key`.
    Record { key: String, missing: fn() -> EcsError },
    /// A task definition's: a list under `key`, for the definition under `def_key`.
    TaskDefinition { key: String, def_key: String },
}

pub(super) async fn tag(req: &Req<'_>) -> Reply {
    let input: TagResourceRequest = req.input()?;
    check_tags(&input.tags)?;
    let holder = locate(req, &input.resource_arn)?;
    change(req, &holder, |tags| {
        for tag in &input.tags {
            match tags.iter_mut().find(|t| t.key == tag.key) {
                Some(existing) => existing.value = tag.value.clone(),
                None => tags.push(tag.clone()),
            }
        }
        check_tags(tags)
    })
    .await
}

pub(super) async fn untag(req: &Req<'_>) -> Reply {
    let input: UntagResourceRequest = req.input()?;
    let holder = locate(req, &input.resource_arn)?;
    change(req, &holder, |tags| {
        tags.retain(|t| !input.tag_keys.contains(&t.key));
        Ok(())
    })
    .await
}

pub(super) async fn list(req: &Req<'_>) -> Reply {
    let input: ListTagsForResourceRequest = req.input()?;
    let holder = locate(req, &input.resource_arn)?;
    let tags = match &holder {
        Holder::Record { key, missing } => tags_of(&find(req, key, *missing).await?.value),
        Holder::TaskDefinition { key, def_key } => {
            require(req, def_key).await?;
            repo::load::<Vec<Tag>>(req.store(), key).await?.map(|r| r.value).unwrap_or_default()
        }
    };
    Ok(json!({ "tags": tags }))
}

/// Applies `edit` to a resource's tags in one compare-and-swap.
async fn change(req: &Req<'_>, holder: &Holder, mut edit: impl FnMut(&mut Vec<Tag>) -> Result<(), EcsError>) -> Reply {
    let mut attempts = Attempts::default();
    loop {
        let mut tx = Tx::default();
        match holder {
            Holder::Record { key, missing } => {
                let read = find(req, key, *missing).await?;
                let mut tags = tags_of(&read.value);
                edit(&mut tags)?;
                let mut record = read.value.clone();
                let Some(map) = record.as_object_mut() else {
                    return Err(EcsError::Server(format!("the record under {key} is not a JSON object")));
                };
                map.insert("tags".to_owned(), json!(tags));
                tx.update(&read, &record);
            }
            Holder::TaskDefinition { key, def_key } => {
                let def = require(req, def_key).await?;
                let read = repo::load::<Vec<Tag>>(req.store(), key).await?;
                let mut tags = read.as_ref().map(|r| r.value.clone()).unwrap_or_default();
                edit(&mut tags)?;
                tx.require_unchanged(def.key, def.revision);
                match &read {
                    Some(read) => tx.update(read, &tags),
                    None => tx.create(key.clone(), &tags),
                }
            }
        }
        if attempts.commit(req.store(), tx).await? {
            return Ok(json!({}));
        }
    }
}

/// Maps a `resourceArn` to where its tags are kept.
fn locate(req: &Req<'_>, given: &str) -> Result<Holder, EcsError> {
    let invalid = || EcsError::invalid(format!("Invalid resourceArn: {given}"));
    let arn = EcsArn::parse(given).ok_or_else(invalid)?;
    let not_found: fn() -> EcsError =
        || EcsError::ResourceNotFound("The specified resource could not be found.".into());
    let cluster_missing: fn() -> EcsError = || EcsError::ClusterNotFound;
    let local = req.keys.is_local(&arn);
    let segments: Vec<&str> = arn.path.split('/').collect();
    let holder = match (arn.kind, segments.as_slice()) {
        ("cluster", [name]) if keys::is_name(name) => {
            Holder::Record { key: req.keys.cluster(name), missing: cluster_missing }
        }
        ("service", [cluster, name]) if keys::is_name(cluster) && keys::is_name(name) => {
            Holder::Record { key: req.keys.service(cluster, name), missing: not_found }
        }
        ("task", [cluster, id]) if keys::is_name(cluster) && keys::is_name(id) => {
            Holder::Record { key: req.keys.task(cluster, id), missing: not_found }
        }
        ("task-definition", [_]) => {
            let (family, revision) = task_definition::split(req, given).map_err(|_| invalid())?;
            let revision = revision.ok_or_else(invalid)?;
            Holder::TaskDefinition {
                key: req.keys.task_definition_tags(&family, revision),
                def_key: req.keys.task_definition(&family, revision),
            }
        }
        _ => return Err(invalid()),
    };
    if !local {
        return Err(match holder {
            Holder::Record { missing, .. } => missing(),
            Holder::TaskDefinition { .. } => not_found(),
        });
    }
    Ok(holder)
}

async fn find(req: &Req<'_>, key: &str, missing: fn() -> EcsError) -> Result<Versioned<Value>, EcsError> {
    repo::load::<Value>(req.store(), key).await?.ok_or_else(missing)
}

/// The task definition's record must exist.
async fn require(req: &Req<'_>, def_key: &str) -> Result<Versioned<Value>, EcsError> {
    repo::load::<Value>(req.store(), def_key)
        .await?
        .ok_or_else(|| EcsError::ResourceNotFound("The specified resource could not be found.".into()))
}

fn tags_of(record: &Value) -> Vec<Tag> {
    record.get("tags").cloned().and_then(|t| serde_json::from_value(t).ok()).unwrap_or_default()
}
