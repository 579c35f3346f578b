//! Tags: TagResource, UntagResource, ListTagsForResource. The resource is named by its ARN (spec
//! §2.1); every stored Lattice record carries a `tags` map, so the handlers edit that member of
//! the stored JSON without knowing the record's type. Tag rules (count, key and value lengths,
//! no `aws:` keys) are `input::check_tags`'s.

use serde::Deserialize;
use serde_json::{Value, json};
use trellis_model::lattice::Tags;
use trellis_model::{Arn, Kind};

use super::input::check_tags;
use super::{ApiError, Reply, Req};
use crate::repo::{self, Attempts, Tx, Versioned};

/// At most this many tags per resource (spec §7).
const MAX_TAGS: usize = 200;
/// The model's length limit on `resourceArn`.
const MAX_ARN_CHARS: usize = 1224;

/// A taggable resource, located from its ARN.
struct Taggable {
    kind: Kind,
    /// The ARN as given, which errors name.
    arn: String,
    key: String,
    /// For a rule: the service the ARN puts it under, which its record must agree with.
    service_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagResourceRequest {
    tags: Tags,
}

pub(crate) async fn tag(req: &Req<'_>) -> Result<Reply, ApiError> {
    let target = locate(req)?;
    let input: TagResourceRequest = req.input()?;
    check_tags("tags", &input.tags)?;
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &target).await?;
        let mut tags = tags_of(&read.value);
        tags.extend(input.tags.clone());
        if tags.len() > MAX_TAGS {
            return Err(ApiError::field(
                "tags",
                format!("a resource can have at most {MAX_TAGS} tags; this request would give it {}", tags.len()),
            ));
        }
        let mut tx = Tx::default();
        tx.update(&read, &with_tags(&read, &tags)?);
        if attempts.commit(req.store(), tx).await? {
            return Ok(Reply::ok(json!({})));
        }
    }
}

pub(crate) async fn untag(req: &Req<'_>) -> Result<Reply, ApiError> {
    let target = locate(req)?;
    let keys = req.query_all("tagKeys");
    if keys.is_empty() {
        return Err(ApiError::field("tagKeys", "at least one tag key is required"));
    }
    if keys.len() > MAX_TAGS {
        return Err(ApiError::field("tagKeys", format!("at most {MAX_TAGS} tag keys")));
    }
    if let Some(bad) = keys.iter().find(|k| k.is_empty() || k.chars().count() > 128) {
        return Err(ApiError::field("tagKeys", format!("tag key {bad:?} must be 1 to 128 characters")));
    }
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &target).await?;
        let mut tags = tags_of(&read.value);
        let before = tags.len();
        tags.retain(|k, _| !keys.contains(&k.as_str()));
        if tags.len() == before {
            // Removing tags that are not there is a success that changes nothing.
            return Ok(Reply::ok(json!({})));
        }
        let mut tx = Tx::default();
        tx.update(&read, &with_tags(&read, &tags)?);
        if attempts.commit(req.store(), tx).await? {
            return Ok(Reply::ok(json!({})));
        }
    }
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let target = locate(req)?;
    let read = find(req, &target).await?;
    // `tags` is emitted even when empty: clients read `response["tags"]`.
    Ok(Reply::ok(json!({ "tags": tags_of(&read.value) })))
}

/// Maps the `resourceArn` path member to the store key of the resource it names. A malformed
/// ARN, or one of a kind that cannot be tagged here, is a `ValidationException`; a well-formed
/// ARN of another region or account names nothing here (`ResourceNotFoundException`).
fn locate(req: &Req<'_>) -> Result<Taggable, ApiError> {
    let raw = req.path.first().map(String::as_str).unwrap_or_default();
    let malformed =
        || ApiError::field("resourceArn", format!("{raw:?} is not the ARN of a taggable VPC Lattice resource"));
    if raw.chars().count() > MAX_ARN_CHARS {
        return Err(malformed());
    }
    let arn = Arn::parse(raw).filter(|a| a.service == "vpc-lattice").ok_or_else(malformed)?;
    let path = arn.lattice_path().ok_or_else(malformed)?;
    if !path.iter().all(|(kind, id)| kind.is_id(id)) {
        return Err(malformed());
    }
    let keys = &req.keys;
    let (kind, key, service_id) = match path.as_slice() {
        [(Kind::Service, svc), (Kind::Listener, listener)] => (Kind::Listener, keys.listener(svc, listener), None),
        [(Kind::Service, svc), (Kind::Listener, listener), (Kind::Rule, rule)] => {
            (Kind::Rule, keys.rule(listener, rule), Some((*svc).to_owned()))
        }
        [
            (
                kind @ (Kind::AccessLogSubscription
                | Kind::Service
                | Kind::ServiceNetwork
                | Kind::ServiceNetworkServiceAssociation
                | Kind::ServiceNetworkVpcAssociation
                | Kind::TargetGroup),
                id,
            ),
        ] => (*kind, keys.res(*kind, id), None),
        _ => return Err(malformed()),
    };
    if arn.region != req.ctx.region || arn.account != req.ctx.account {
        return Err(ApiError::not_found(kind, raw));
    }
    Ok(Taggable { kind, arn: raw.to_owned(), key, service_id })
}

/// Loads the resource's stored record. A listener's default rule has no record of its own, so
/// its ARN names nothing taggable (`ResourceNotFoundException`).
async fn find(req: &Req<'_>, target: &Taggable) -> Result<Versioned<Value>, ApiError> {
    let read = repo::load::<Value>(req.store(), &target.key).await?;
    read.filter(|r| match &target.service_id {
        Some(svc) => r.value.get("serviceId").and_then(Value::as_str) == Some(svc.as_str()),
        None => true,
    })
    .ok_or_else(|| ApiError::not_found(target.kind, &target.arn))
}

fn tags_of(record: &Value) -> Tags {
    record.get("tags").cloned().and_then(|t| serde_json::from_value(t).ok()).unwrap_or_default()
}

/// The record with its `tags` member replaced.
fn with_tags(read: &Versioned<Value>, tags: &Tags) -> Result<Value, ApiError> {
    let mut value = read.value.clone();
    let Some(map) = value.as_object_mut() else {
        return Err(ApiError::Internal { message: format!("the record under {} is not a JSON object", read.key) });
    };
    map.insert("tags".to_owned(), json!(tags));
    Ok(value)
}

#[cfg(test)]
mod tests;
