//! Access log subscriptions: CreateAccessLogSubscription, GetAccessLogSubscription,
//! ListAccessLogSubscriptions, UpdateAccessLogSubscription, DeleteAccessLogSubscription.
//!
//! A subscription belongs to a service network or service and is indexed from it by
//! `ref/als/<resource>/<als>` entries, which the owner's delete reads to cascade (see
//! `service_network::cascade_policy_and_logs`). A resource has at most one subscription per
//! destination type (CloudWatch Logs, S3, Firehose) and, on service networks, per log type.
//! Delivering the logs is the data plane's business, not this module's.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use trellis_model::lattice::{AccessLogSubscription, Tags};
use trellis_model::{Arn, Kind};
use trellis_store::StoreExt;

use super::auth_policy::{Owner, find_owner, owner_id};
use super::idempotency::ClientToken;
use super::input::check_tags;
use super::page::Page;
use super::{ApiError, Reply, Req};
use crate::keys::rel;
use crate::repo::{self, Attempts, Tx, Versioned};

const KIND: Kind = Kind::AccessLogSubscription;

/// Where a subscription's logs go, by the kind of its destination ARN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Destination {
    CloudWatchLogs,
    Firehose,
    S3,
}

/// `serviceNetworkLogType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum LogType {
    Resource,
    Service,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateAccessLogSubscriptionRequest {
    client_token: Option<String>,
    resource_identifier: String,
    destination_arn: String,
    service_network_log_type: Option<LogType>,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateAccessLogSubscriptionRequest {
    destination_arn: String,
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Reply, ApiError> {
    let input: CreateAccessLogSubscriptionRequest = req.input()?;
    let destination = destination(&input.destination_arn)?;
    check_tags("tags", &input.tags)?;
    let (kind, resource_id) = owner_id(req, &input.resource_identifier, "resourceIdentifier")?;
    let log_type = match (kind, input.service_network_log_type) {
        (Kind::ServiceNetwork, given) => Some(given.unwrap_or(LogType::Service)),
        (_, None) => None,
        (_, Some(_)) => {
            return Err(ApiError::field("serviceNetworkLogType", "applies only to service networks"));
        }
    };
    let log_type = log_type.map(LogType::as_str).map(str::to_owned);
    let mut token = ClientToken::new(req, input.client_token.as_deref(), KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        if let Some(reply) = token.replay(store).await? {
            return Ok(reply);
        }
        let owner = find_owner(req, kind, &resource_id).await?;
        check_slot_free(req, &owner, destination, log_type.as_deref(), None).await?;
        let id = KIND.new_id();
        let now = crate::now();
        let als = AccessLogSubscription {
            arn: req.arn(KIND, &[], &id),
            id: id.clone(),
            resource_id: owner.id.clone(),
            resource_arn: owner.arn.clone(),
            destination_arn: input.destination_arn.clone(),
            service_network_log_type: log_type.clone(),
            created_at: now,
            last_updated_at: now,
            tags: input.tags.clone(),
        };
        let mut tx = Tx::default();
        tx.create(req.keys.res(KIND, &id), &als);
        tx.create_index(req.keys.reference(rel::ALS, &owner.id, &id), &id);
        touch(&mut tx, &owner);
        let body = json!({
            "id": als.id,
            "arn": als.arn,
            "resourceId": als.resource_id,
            "resourceArn": als.resource_arn,
            "serviceNetworkLogType": als.service_network_log_type,
            "destinationArn": als.destination_arn,
        });
        let reply = token.remember(&mut tx, StatusCode::CREATED, body, &id);
        if attempts.commit(store, tx).await? {
            return Ok(reply);
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "accessLogSubscriptionIdentifier", KIND)?;
    let als = find(req, &id).await?.value;
    Ok(Reply::ok(json!({
        "id": als.id,
        "arn": als.arn,
        "resourceId": als.resource_id,
        "resourceArn": als.resource_arn,
        "destinationArn": als.destination_arn,
        "serviceNetworkLogType": als.service_network_log_type,
        "createdAt": als.created_at,
        "lastUpdatedAt": als.last_updated_at,
    })))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let Some(ident) = req.query("resourceIdentifier") else {
        return Err(ApiError::field("resourceIdentifier", "is required"));
    };
    let resource_id = match owner_id(req, ident, "resourceIdentifier") {
        Ok((_, id)) => id,
        // The operation models no ResourceNotFoundException: a resource elsewhere has no
        // subscriptions here.
        Err(ApiError::NotFound { .. }) => return Ok(Reply::ok(json!({ "items": [] }))),
        Err(e) => return Err(e),
    };
    // A resource that does not exist simply has no subscriptions, for the same reason.
    let page = Page::new(req, req.keys.references(rel::ALS, &resource_id))?;
    let resp = req.store().list_prefix(page.prefix(), page.after.as_deref(), page.limit).await?;
    let mut items = Vec::with_capacity(resp.kvs.len());
    for kv in &resp.kvs {
        let als_id = String::from_utf8_lossy(&kv.value);
        // An entry whose subscription is gone is skipped, not reported as an error.
        let Some(read) = repo::load::<AccessLogSubscription>(req.store(), &req.keys.res(KIND, &als_id)).await? else {
            continue;
        };
        let als = read.value;
        items.push(json!({
            "id": als.id,
            "arn": als.arn,
            "resourceId": als.resource_id,
            "resourceArn": als.resource_arn,
            "destinationArn": als.destination_arn,
            "serviceNetworkLogType": als.service_network_log_type,
            "createdAt": als.created_at,
            "lastUpdatedAt": als.last_updated_at,
        }));
    }
    let next = page.next_token(resp.kvs.last().map(|kv| kv.key.as_str()), resp.more);
    Ok(Reply::ok(json!({ "items": items, "nextToken": next })))
}

pub(crate) async fn update(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "accessLogSubscriptionIdentifier", KIND)?;
    let input: UpdateAccessLogSubscriptionRequest = req.input()?;
    let destination = destination(&input.destination_arn)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let owner = owner_of(req, &read.value).await?;
        let log_type = read.value.service_network_log_type.as_deref();
        check_slot_free(req, &owner, destination, log_type, Some(&id)).await?;
        let mut als = read.value.clone();
        als.destination_arn = input.destination_arn.clone();
        als.last_updated_at = crate::now();
        let mut tx = Tx::default();
        tx.update(&read, &als);
        touch(&mut tx, &owner);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({
                "id": als.id,
                "arn": als.arn,
                "resourceId": als.resource_id,
                "resourceArn": als.resource_arn,
                "destinationArn": als.destination_arn,
            })));
        }
    }
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "accessLogSubscriptionIdentifier", KIND)?;
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.reference(rel::ALS, &read.value.resource_id, &id));
        if attempts.commit(req.store(), tx).await? {
            return Ok(Reply::no_content());
        }
    }
}

async fn find(req: &Req<'_>, id: &str) -> Result<Versioned<AccessLogSubscription>, ApiError> {
    repo::load(req.store(), &req.keys.res(KIND, id)).await?.ok_or_else(|| ApiError::not_found(KIND, id))
}

/// The service network or service a stored subscription belongs to. A subscription outliving
/// its owner cannot happen (the owner's delete takes its subscriptions along); should one be
/// found, it reads as not found itself.
async fn owner_of(req: &Req<'_>, als: &AccessLogSubscription) -> Result<Owner, ApiError> {
    let kind = if als.resource_id.starts_with("sn-") { Kind::ServiceNetwork } else { Kind::Service };
    match find_owner(req, kind, &als.resource_id).await {
        Err(ApiError::NotFound { .. }) => Err(ApiError::not_found(KIND, &als.id)),
        other => other,
    }
}

/// Refuses a second subscription of the same destination type (and log type) on one resource,
/// `except` the subscription being updated.
async fn check_slot_free(
    req: &Req<'_>,
    owner: &Owner,
    destination: Destination,
    log_type: Option<&str>,
    except: Option<&str>,
) -> Result<(), ApiError> {
    let store = req.store();
    for als_id in repo::list_index(store, &req.keys.references(rel::ALS, &owner.id)).await? {
        if Some(als_id.as_str()) == except {
            continue;
        }
        let Some(other) = repo::load::<AccessLogSubscription>(store, &req.keys.res(KIND, &als_id)).await? else {
            continue;
        };
        let other = other.value;
        let same_type = self::destination(&other.destination_arn).ok() == Some(destination);
        if same_type && other.service_network_log_type.as_deref() == log_type {
            return Err(ApiError::conflict(
                KIND,
                &other.id,
                format!(
                    "{} {} already has an access log subscription to {} ({}): {}",
                    owner.kind.arn_type(),
                    owner.id,
                    destination.words(),
                    other.destination_arn,
                    other.id
                ),
            ));
        }
    }
    Ok(())
}

/// Adds to `tx` a rewrite of the owner's record, unchanged. Subscription writes then serialize
/// on the owner: two creates racing for one destination type cannot both pass the check above,
/// and a create cannot slip in between the owner's delete reading its subscriptions and
/// committing (that delete compares the owner's record too).
fn touch(tx: &mut Tx, owner: &Owner) {
    tx.update(&owner.read, &owner.read.value);
}

/// Classifies a destination ARN: a CloudWatch Logs log group
/// (`arn:aws:logs:<region>:<account>:log-group:<name>[:*]`), an S3 bucket
/// (`arn:aws:s3:::<bucket>[/<prefix>]`) or a Kinesis Data Firehose delivery stream
/// (`arn:aws:firehose:<region>:<account>:deliverystream/<name>`).
fn destination(raw: &str) -> Result<Destination, ApiError> {
    let len = raw.chars().count();
    let parsed = Arn::parse(raw).filter(|a| (20..=2048).contains(&len) && is_label(&a.partition));
    let dest = parsed.and_then(|arn| {
        let located =
            is_label(&arn.region) && arn.account.len() == 12 && arn.account.bytes().all(|b| b.is_ascii_digit());
        match arn.service.as_str() {
            "logs" if located => {
                let name = arn.resource.strip_prefix("log-group:")?;
                let name = name.strip_suffix(":*").unwrap_or(name);
                let ok = (1..=512).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-/.#".contains(&b));
                ok.then_some(Destination::CloudWatchLogs)
            }
            "s3" if arn.region.is_empty() && arn.account.is_empty() => {
                let bucket = arn.resource.split('/').next()?;
                let ok = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
                    && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
                ok.then_some(Destination::S3)
            }
            "firehose" if located => {
                let name = arn.resource.strip_prefix("deliverystream/")?;
                let ok = (1..=64).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
                ok.then_some(Destination::Firehose)
            }
            _ => None,
        }
    });
    dest.ok_or_else(|| {
        ApiError::field(
            "destinationArn",
            format!("{raw:?} is not the ARN of a CloudWatch Logs log group, an S3 bucket or a Kinesis Data Firehose delivery stream"),
        )
    })
}

/// A non-empty run of `[a-z0-9-]`, as partitions and regions are.
fn is_label(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

// === impl Destination ===

impl Destination {
    fn words(self) -> &'static str {
        match self {
            Self::CloudWatchLogs => "CloudWatch Logs",
            Self::Firehose => "Kinesis Data Firehose",
            Self::S3 => "S3",
        }
    }
}

// === impl LogType ===

impl LogType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Resource => "RESOURCE",
            Self::Service => "SERVICE",
        }
    }
}

#[cfg(test)]
mod tests;
