//! Target groups: CreateTargetGroup, GetTargetGroup, ListTargetGroups, UpdateTargetGroup,
//! DeleteTargetGroup. Owns the checks and defaults of `TargetGroupConfig` (health checks in
//! [`health_check`]) and the filtered listings shared with targets and associations ([`scan`],
//! [`scan_refs`]). Targets themselves live in `target.rs`; which listeners and rules use a
//! target group is recorded by the listener and rule handlers (relation `tg-users`).

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use trellis_model::Kind;
use trellis_model::ec2::Vpc;
use trellis_model::lattice::{HealthCheckConfig, Status, Tags, TargetGroup, TargetGroupConfig};
use trellis_store::StoreExt;

use super::idempotency::ClientToken;
use super::input::{check_name, check_tags};
use super::page::Page;
use super::quota::Quota;
use super::{ApiError, Reply, Req};
use crate::keys::rel;
use crate::repo::{self, Attempts, Tx};

mod health_check;

const KIND: Kind = Kind::TargetGroup;
const TYPES: &[&str] = &["IP", "LAMBDA", "INSTANCE", "ALB"];

/// The counter of a target group's targets (its quota, L-D71303F3).
pub(crate) const TARGETS: &str = "target";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateTargetGroupRequest {
    name: String,
    #[serde(rename = "type")]
    target_type: String,
    config: Option<TargetGroupConfig>,
    client_token: Option<String>,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateTargetGroupRequest {
    health_check: HealthCheckConfig,
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Reply, ApiError> {
    let input: CreateTargetGroupRequest = req.input()?;
    check_name(KIND, &input.name)?;
    one_of("type", &input.target_type, TYPES)?;
    let config = build_config(&input.target_type, input.config.as_ref(), health_check::Floor::of(req))?;
    check_tags("tags", &input.tags)?;
    let mut token = ClientToken::new(req, input.client_token.as_deref(), KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        if let Some(reply) = token.replay(store).await? {
            return Ok(reply);
        }
        let vpc = match config.as_ref().and_then(|c| c.vpc_identifier.as_deref()) {
            Some(vpc_id) => Some(find_vpc(req, vpc_id).await?),
            None => None,
        };
        let name_key = req.free_name(KIND, "", &input.name).await?;
        let counter = Quota::TargetGroups.check(req, req.keys.counter(KIND.prefix(), ""), 1, KIND, None).await?;
        let id = KIND.new_id();
        let now = crate::now();
        let tg = TargetGroup {
            arn: req.arn(KIND, &[], &id),
            id: id.clone(),
            name: input.name.clone(),
            target_type: input.target_type.clone(),
            config: config.clone(),
            status: Status::Active,
            created_at: now,
            last_updated_at: now,
            tags: input.tags.clone(),
        };
        let mut tx = Tx::default();
        tx.create(req.keys.res(KIND, &id), &tg);
        tx.create_index(name_key, &id);
        tx.count(&counter, 1);
        if let Some(vpc) = &vpc {
            // The VPC must still be there when the target group appears.
            tx.require_unchanged(vpc.key.clone(), vpc.revision);
        }
        let body = json!({
            "id": tg.id, "arn": tg.arn, "name": tg.name, "type": tg.target_type, "config": tg.config,
            "status": Status::CreateInProgress,
        });
        let reply = token.remember(&mut tx, StatusCode::CREATED, body, &id);
        if attempts.commit(store, tx).await? {
            return Ok(reply);
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "targetGroupIdentifier", KIND)?;
    let tg = find(req, &id).await?.value;
    let services = service_arns(req, &tg.id).await?;
    Ok(Reply::ok(json!({
        "id": tg.id,
        "arn": tg.arn,
        "name": tg.name,
        "type": tg.target_type,
        "config": tg.config,
        "createdAt": tg.created_at,
        "lastUpdatedAt": tg.last_updated_at,
        "status": tg.status,
        "serviceArns": services,
    })))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let vpc = req.query("vpcIdentifier");
    if let Some(v) = vpc.filter(|v| !Kind::Vpc.is_id(v)) {
        return Err(ApiError::field("vpcIdentifier", format!("{v:?} is not a valid VPC ID")));
    }
    let target_type = req.query("targetGroupType");
    if let Some(t) = target_type {
        one_of("targetGroupType", t, TYPES)?;
    }
    let page = Page::new(req, req.keys.all(KIND))?;
    let (items, next) = scan::<TargetGroup>(req, &page, |tg| {
        let config = tg.config.as_ref();
        target_type.is_none_or(|t| tg.target_type == t)
            && vpc.is_none_or(|v| config.and_then(|c| c.vpc_identifier.as_deref()) == Some(v))
    })
    .await?;
    let mut out = Vec::with_capacity(items.len());
    for tg in items {
        let services = service_arns(req, &tg.id).await?;
        let c = tg.config.unwrap_or_default();
        out.push(json!({
            "id": tg.id,
            "arn": tg.arn,
            "name": tg.name,
            "type": tg.target_type,
            "createdAt": tg.created_at,
            "port": c.port,
            "protocol": c.protocol,
            "ipAddressType": c.ip_address_type,
            "vpcIdentifier": c.vpc_identifier,
            "lastUpdatedAt": tg.last_updated_at,
            "status": tg.status,
            "serviceArns": services,
            "lambdaEventStructureVersion": c.lambda_event_structure_version,
        }));
    }
    Ok(Reply::ok(json!({ "items": out, "nextToken": next })))
}

pub(crate) async fn update(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "targetGroupIdentifier", KIND)?;
    let input: UpdateTargetGroupRequest = req.input()?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let mut tg = read.value.clone();
        if matches!(tg.target_type.as_str(), "LAMBDA" | "ALB") {
            return Err(ApiError::field(
                "healthCheck",
                format!("health checks are not supported for {} target groups", tg.target_type),
            ));
        }
        let Some(config) = tg.config.as_mut() else {
            return Err(ApiError::invalid(format!("Target group {id} has no configuration to update")));
        };
        let protocol = config.protocol.clone().unwrap_or_default();
        config.health_check = Some(health_check::merge(
            &protocol,
            config.protocol_version.as_deref(),
            config.health_check.as_ref(),
            &input.health_check,
            "healthCheck",
            health_check::Floor::of(req),
        )?);
        tg.last_updated_at = crate::now();
        let mut tx = Tx::default();
        tx.update(&read, &tg);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({
                "id": tg.id, "arn": tg.arn, "name": tg.name, "type": tg.target_type, "config": tg.config, "status": tg.status,
            })));
        }
    }
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "targetGroupIdentifier", KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let users = repo::counter(store, req.keys.counter(rel::TG_USERS, &id)).await?;
        if users.value() > 0 {
            return Err(ApiError::conflict(KIND, &id, format!("Target group {id} is in use by a listener or rule")));
        }
        let counter = repo::counter(store, req.keys.counter(KIND.prefix(), "")).await?;
        let targets = repo::counter(store, req.keys.counter(TARGETS, &id)).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.name(KIND, "", &read.value.name));
        tx.count(&counter, -1);
        // Zero, and still zero at commit: no listener or rule started using it meanwhile.
        tx.retire(&users);
        tx.delete_prefix(req.keys.references(rel::TG_USERS, &id));
        // Its targets go with it; a concurrent RegisterTargets compares this counter and the
        // target group's record, so it cannot leave targets behind.
        tx.retire(&targets);
        tx.delete_prefix(req.keys.targets(&id));
        tx.delete_prefix(crate::health::group_prefix(&req.ctx.region, &req.ctx.account, &id));
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({ "id": id, "arn": read.value.arn, "status": Status::DeleteInProgress })));
        }
    }
}

/// Reads a target group or answers `ResourceNotFoundException`.
pub(crate) async fn find(req: &Req<'_>, id: &str) -> Result<repo::Versioned<TargetGroup>, ApiError> {
    repo::load(req.store(), &req.keys.res(KIND, id)).await?.ok_or_else(|| ApiError::not_found(KIND, id))
}

/// Reads a VPC (written by the EC2 API) or answers `ResourceNotFoundException` (`VPC`).
pub(crate) async fn find_vpc(req: &Req<'_>, id: &str) -> Result<repo::Versioned<Vpc>, ApiError> {
    repo::load(req.store(), &req.keys.res(Kind::Vpc, id)).await?.ok_or_else(|| ApiError::not_found(Kind::Vpc, id))
}

/// The ARNs of the services whose listeners and rules forward to a target group (`None` when
/// there are none, so the member is omitted).
async fn service_arns(req: &Req<'_>, tg_id: &str) -> Result<Option<Vec<String>>, ApiError> {
    let services: BTreeSet<String> =
        repo::list_index(req.store(), &req.keys.references(rel::TG_USERS, tg_id)).await?.into_iter().collect();
    Ok((!services.is_empty()).then(|| services.iter().map(|s| req.arn(Kind::Service, &[], s)).collect()))
}

/// Checks an enum member.
pub(crate) fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(ApiError::field(field, format!("{value:?} is not one of {}", allowed.join(", "))))
}

/// Checks a create's `config` for a target group of `target_type` and fills in its defaults.
/// A LAMBDA target group takes only `lambdaEventStructureVersion` (and may have no config at
/// all); the others need `protocol` and `vpcIdentifier` (port defaults to 80 or 443, but TCP
/// needs one). ALB target groups have no health checks; `ipAddressType` applies to IP targets.
fn build_config(
    target_type: &str,
    given: Option<&TargetGroupConfig>,
    floor: health_check::Floor,
) -> Result<Option<TargetGroupConfig>, ApiError> {
    if target_type == "LAMBDA" {
        return lambda_config(given);
    }
    let c = given.ok_or_else(|| ApiError::field("config", format!("is required for {target_type} target groups")))?;
    let unsupported =
        |member: &str, what: &str| ApiError::field(&format!("config.{member}"), format!("is not supported for {what}"));
    if c.lambda_event_structure_version.is_some() {
        return Err(unsupported("lambdaEventStructureVersion", &format!("{target_type} target groups")));
    }
    let protocol = c.protocol.clone().ok_or_else(|| ApiError::field("config.protocol", "is required"))?;
    one_of("config.protocol", &protocol, &["HTTP", "HTTPS", "TCP"])?;
    let vpc = c.vpc_identifier.clone().ok_or_else(|| ApiError::field("config.vpcIdentifier", "is required"))?;
    if !Kind::Vpc.is_id(&vpc) {
        return Err(ApiError::field("config.vpcIdentifier", format!("{vpc:?} is not a valid VPC ID")));
    }
    let port = match (c.port, protocol.as_str()) {
        (Some(0), _) => return Err(ApiError::field("config.port", "must be from 1 to 65535")),
        (Some(p), _) => p,
        (None, "HTTP") => 80,
        (None, "HTTPS") => 443,
        (None, _) => return Err(ApiError::field("config.port", "is required for TCP target groups")),
    };
    let version = match (c.protocol_version.as_deref(), protocol.as_str()) {
        (Some(v), "TCP") if v != "HTTP1" => return Err(unsupported("protocolVersion", "TCP target groups")),
        (v, "TCP") => v.map(str::to_owned),
        (v, _) => Some(v.unwrap_or("HTTP1").to_owned()),
    };
    if let Some(v) = version.as_deref() {
        one_of("config.protocolVersion", v, &["HTTP1", "HTTP2", "GRPC"])?;
        if target_type == "ALB" && v != "HTTP1" {
            return Err(unsupported("protocolVersion", &format!("{v} with ALB target groups")));
        }
    }
    let ip_address_type = match (c.ip_address_type.as_deref(), target_type) {
        (t, "IP") => Some(t.unwrap_or("IPV4").to_owned()),
        (Some("IPV4"), _) | (None, _) => c.ip_address_type.clone(),
        (Some(_), _) => return Err(unsupported("ipAddressType", &format!("{target_type} target groups"))),
    };
    if let Some(t) = ip_address_type.as_deref() {
        one_of("config.ipAddressType", t, &["IPV4", "IPV6"])?;
    }
    let health_check = if target_type == "ALB" {
        if c.health_check.is_some() {
            return Err(unsupported("healthCheck", "ALB target groups"));
        }
        None
    } else {
        let given = c.health_check.clone().unwrap_or_default();
        Some(health_check::merge(&protocol, version.as_deref(), None, &given, "config.healthCheck", floor)?)
    };
    Ok(Some(TargetGroupConfig {
        port: Some(port),
        protocol: Some(protocol),
        protocol_version: version,
        ip_address_type,
        vpc_identifier: Some(vpc),
        health_check,
        lambda_event_structure_version: None,
    }))
}

/// A LAMBDA target group's config: none, or only `lambdaEventStructureVersion` (default V1).
fn lambda_config(given: Option<&TargetGroupConfig>) -> Result<Option<TargetGroupConfig>, ApiError> {
    let Some(c) = given else { return Ok(None) };
    let others = [
        ("port", c.port.is_some()),
        ("protocol", c.protocol.is_some()),
        ("protocolVersion", c.protocol_version.is_some()),
        ("ipAddressType", c.ip_address_type.is_some()),
        ("vpcIdentifier", c.vpc_identifier.is_some()),
        ("healthCheck", c.health_check.is_some()),
    ];
    if let Some((member, _)) = others.iter().find(|(_, set)| *set) {
        return Err(ApiError::field(&format!("config.{member}"), "is not supported for LAMBDA target groups"));
    }
    let version = c.lambda_event_structure_version.clone().unwrap_or_else(|| "V1".to_owned());
    one_of("config.lambdaEventStructureVersion", &version, &["V1", "V2"])?;
    Ok(Some(TargetGroupConfig { lambda_event_structure_version: Some(version), ..TargetGroupConfig::default() }))
}

// === filtered listings ===

/// One page of records under the page's prefix that `keep` accepts. Reads in batches and keeps
/// going until the page is full or the prefix is exhausted, so a filter never shortens a page
/// that could have been filled. A full page looks ahead for one more match, so a token is only
/// given when another page has something in it; it resumes right after the last record returned.
pub(crate) async fn scan<T: DeserializeOwned>(
    req: &Req<'_>,
    page: &Page,
    mut keep: impl FnMut(&T) -> bool,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    let mut after = page.after.clone();
    loop {
        let (items, more) = repo::list::<T>(req.store(), page.prefix(), after.as_deref(), page.limit).await?;
        for item in items {
            if keep(&item.value) {
                if out.len() == page.limit {
                    return Ok((out, page.next_token(last.as_deref(), true)));
                }
                out.push(item.value);
                last = Some(item.key.clone());
            }
            after = Some(item.key);
        }
        if !more {
            return Ok((out, None));
        }
    }
}

/// Like [`scan`], over reference index entries (`ref/<relation>/<from>/…`, each holding an ID of
/// `kind`): loads each record and keeps those `keep` accepts. Entries whose record is gone
/// (deleted meanwhile) are skipped.
pub(crate) async fn scan_refs<T: DeserializeOwned>(
    req: &Req<'_>,
    page: &Page,
    kind: Kind,
    mut keep: impl FnMut(&T) -> bool,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    let mut after = page.after.clone();
    loop {
        let resp = req.store().list_prefix(page.prefix(), after.as_deref(), page.limit).await?;
        for kv in resp.kvs {
            let id = String::from_utf8_lossy(&kv.value).into_owned();
            if let Some(record) = repo::load::<T>(req.store(), &req.keys.res(kind, &id)).await?
                && keep(&record.value)
            {
                if out.len() == page.limit {
                    return Ok((out, page.next_token(last.as_deref(), true)));
                }
                out.push(record.value);
                last = Some(kv.key.clone());
            }
            after = Some(kv.key);
        }
        if !resp.more {
            return Ok((out, None));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
