//! Targets of a target group: RegisterTargets, DeregisterTargets, ListTargets. A target is
//! stored under its target group (`target/<tg>/<id>/<port>`), so deleting the group deletes
//! them with one prefix delete; a counter per group holds the quota (L-D71303F3).
//!
//! Per-target problems (an address outside the VPC, a second Lambda function) are reported in
//! `unsuccessful` with HTTP 200, as AWS does; only malformed requests, unknown target groups and
//! the quota fail the whole call.
//!
//! Deregistration does not remove a target: it sets `draining_since`, and the target shows as
//! `DRAINING` (and gets no new requests) until the data plane reports that nothing is in flight
//! to it or the deregistration delay has passed; then `crate::health::remove_drained` deletes it
//! and moves the counter. Registering it again meanwhile puts it back in service.
//!
//! `ListTargets` shows the status the data plane recorded (`crate::health`) when there is one,
//! else what the configuration alone tells (`UNUSED`, `UNAVAILABLE`, `INITIAL`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::json;
use trellis_model::cidr::Cidr;
use trellis_model::lattice::{Target, TargetGroup};
use trellis_model::{Arn, Kind};

use super::page::Page;
use super::quota::Quota;
use super::target_group::{self, TARGETS};
use super::{ApiError, Reply, Req};
use crate::health;
use crate::keys::rel;
use crate::repo::{self, Attempts, Tx};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsRequest {
    targets: Vec<TargetInput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTargetsRequest {
    targets: Option<Vec<TargetInput>>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetInput {
    id: String,
    port: Option<u16>,
}

/// Why one target of a call was refused: (failureCode, failureMessage).
type Refusal = (&'static str, String);

pub(crate) async fn register(req: &Req<'_>) -> Result<Reply, ApiError> {
    let tg_id = req.path_id(0, "targetGroupIdentifier", Kind::TargetGroup)?;
    let input: TargetsRequest = req.input()?;
    check_targets(&input.targets, 1, 100)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let tg_read = target_group::find(req, &tg_id).await?;
        let tg = &tg_read.value;
        let cidr = vpc_cidr(req, tg).await?;
        let counter = repo::counter(store, req.keys.counter(TARGETS, &tg_id)).await?;
        // A LAMBDA target group holds one function.
        let mut lambda_slots = if tg.target_type == "LAMBDA" { 1u64.saturating_sub(counter.value()) } else { u64::MAX };
        let (mut successful, mut unsuccessful) = (Vec::new(), Vec::new());
        let mut seen = BTreeSet::new();
        let mut tx = Tx::default();
        let mut added = 0u64;
        for t in &input.targets {
            let port = target_port(tg, t.port);
            if let Err((code, message)) = check_target(tg, cidr, &t.id, req.state.config.loopback_targets) {
                unsuccessful
                    .push(json!({ "id": t.id, "port": shown(port), "failureCode": code, "failureMessage": message }));
                continue;
            }
            if seen.insert((t.id.clone(), port)) {
                let key = req.keys.target(&tg_id, &t.id, port);
                match repo::load::<Target>(store, &key).await? {
                    // Registered again: idempotent; a draining target is back in service.
                    Some(existing) if existing.value.draining_since.is_some() => {
                        tx.update(&existing, &Target { draining_since: None, ..existing.value.clone() });
                    }
                    Some(_) => {}
                    None if lambda_slots == 0 => {
                        let message = "A LAMBDA target group can have only one target".to_owned();
                        unsuccessful
                            .push(json!({ "id": t.id, "failureCode": "UnsupportedTarget", "failureMessage": message }));
                        continue;
                    }
                    None => {
                        lambda_slots -= 1;
                        added += 1;
                        tx.create(
                            key,
                            &Target { id: t.id.clone(), port, registered_at: crate::now(), draining_since: None },
                        );
                    }
                }
            }
            successful.push(json!({ "id": t.id, "port": shown(port) }));
        }
        if counter.value() + added > Quota::TargetsPerTargetGroup.limit(req) {
            return Err(Quota::TargetsPerTargetGroup.exceeded(req, Kind::TargetGroup, Some(&tg_id)));
        }
        if added > 0 {
            tx.count(&counter, added as i64);
        }
        // The target group must still exist (DeleteTargetGroup deletes its targets by prefix).
        tx.require_unchanged(tg_read.key.clone(), tg_read.revision);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({ "successful": successful, "unsuccessful": unsuccessful })));
        }
    }
}

pub(crate) async fn deregister(req: &Req<'_>) -> Result<Reply, ApiError> {
    let tg_id = req.path_id(0, "targetGroupIdentifier", Kind::TargetGroup)?;
    let input: TargetsRequest = req.input()?;
    check_targets(&input.targets, 1, 100)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let tg_read = target_group::find(req, &tg_id).await?;
        let tg = &tg_read.value;
        let mut successful = Vec::new();
        let mut seen = BTreeSet::new();
        let mut tx = Tx::default();
        let now = crate::now();
        for t in &input.targets {
            let port = target_port(tg, t.port);
            // A target that is not registered is reported as deregistered: the caller's wish
            // holds, and ECS may repeat a deregistration. One already draining keeps its start.
            if seen.insert((t.id.clone(), port))
                && let Some(existing) = repo::load::<Target>(store, &req.keys.target(&tg_id, &t.id, port)).await?
                && existing.value.draining_since.is_none()
            {
                tx.update(&existing, &Target { draining_since: Some(now), ..existing.value.clone() });
            }
            successful.push(json!({ "id": t.id, "port": shown(port) }));
        }
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({ "successful": successful, "unsuccessful": [] })));
        }
    }
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let tg_id = req.path_id(0, "targetGroupIdentifier", Kind::TargetGroup)?;
    let input: ListTargetsRequest = req.input()?;
    let filter = input.targets.unwrap_or_default();
    check_targets(&filter, 0, 20)?;
    let tg = target_group::find(req, &tg_id).await?.value;
    let in_use = repo::counter(req.store(), req.keys.counter(rel::TG_USERS, &tg_id)).await?.value() > 0;
    let page = Page::new(req, req.keys.targets(&tg_id))?;
    // A filter without a port matches the target on any port.
    let (targets, next) = target_group::scan::<Target>(req, &page, |t| {
        filter.is_empty() || filter.iter().any(|f| f.id == t.id && f.port.is_none_or(|p| p == t.port))
    })
    .await?;
    let at: Vec<(&str, u16)> = targets.iter().map(|t| (t.id.as_str(), t.port)).collect();
    let recorded = health::recorded(req.store(), &req.ctx.region, &req.ctx.account, &tg_id, &at).await?;
    let items: Vec<_> = targets
        .iter()
        .zip(&recorded)
        .map(|(t, r)| {
            let (status, reason) = status(&tg, t, in_use, r.as_ref());
            json!({ "id": t.id, "port": shown(t.port), "status": status, "reasonCode": reason })
        })
        .collect();
    Ok(Reply::ok(json!({ "items": items, "nextToken": next })))
}

/// A target's status and reason code: `DRAINING` while it drains, else what the data plane
/// recorded, else what the configuration alone tells. A recorded `DRAINING` of a target that is
/// no longer draining (registered again before the data plane saw it go) is stale and ignored.
/// `reasonCode` values follow what AWS shows: `TargetGroupNotInUse` for `UNUSED`,
/// `HealthCheckNotSupported` for Lambda targets and `HealthCheckFailed` for `UNHEALTHY` are
/// observed in the wild; `HealthCheckDisabled`, `DeregistrationInProgress` and the data plane's
/// own (`TargetNotLoopback`, `HealthCheckProtocolUnsupported`, …) are Trellis's words in the same
/// style (unconfirmed). `INITIAL` and `HEALTHY` carry no reason code.
fn status<'a>(
    tg: &TargetGroup,
    target: &Target,
    in_use: bool,
    recorded: Option<&'a health::Recorded>,
) -> (&'a str, Option<&'a str>) {
    let checks_on = tg.config.as_ref().and_then(|c| c.health_check.as_ref()).and_then(|h| h.enabled).unwrap_or(false);
    if target.draining_since.is_some() {
        ("DRAINING", Some("DeregistrationInProgress"))
    } else if let Some(r) = recorded.filter(|r| r.status != "DRAINING") {
        (r.status.as_str(), r.reason_code.as_deref())
    } else if !in_use {
        ("UNUSED", Some("TargetGroupNotInUse"))
    } else if matches!(tg.target_type.as_str(), "LAMBDA" | "ALB") {
        ("UNAVAILABLE", Some("HealthCheckNotSupported"))
    } else if !checks_on {
        ("UNAVAILABLE", Some("HealthCheckDisabled"))
    } else {
        ("INITIAL", None)
    }
}

/// Checks a `targets` list: its length, and each member's shape.
fn check_targets(targets: &[TargetInput], min: usize, max: usize) -> Result<(), ApiError> {
    if !(min..=max).contains(&targets.len()) {
        return Err(ApiError::field("targets", format!("must hold {min} to {max} targets")));
    }
    for (i, t) in targets.iter().enumerate() {
        if t.id.is_empty() || t.id.chars().count() > 200 {
            return Err(ApiError::field(&format!("targets[{i}].id"), "must be 1 to 200 characters"));
        }
        if t.port == Some(0) {
            return Err(ApiError::field(&format!("targets[{i}].port"), "must be from 1 to 65535"));
        }
    }
    Ok(())
}

/// The port a target is registered on: the one given, else the target group's. Lambda
/// functions have no port; they are stored on port 0, which is never shown.
fn target_port(tg: &TargetGroup, given: Option<u16>) -> u16 {
    if tg.target_type == "LAMBDA" {
        return 0;
    }
    given.or_else(|| tg.config.as_ref().and_then(|c| c.port)).unwrap_or(0)
}

fn shown(port: u16) -> Option<u16> {
    (port != 0).then_some(port)
}

/// The IPv4 block of an IP target group's VPC, if the VPC is still known.
async fn vpc_cidr(req: &Req<'_>, tg: &TargetGroup) -> Result<Option<Cidr>, ApiError> {
    let Some(vpc_id) = tg.config.as_ref().and_then(|c| c.vpc_identifier.as_deref()).filter(|_| tg.target_type == "IP")
    else {
        return Ok(None);
    };
    let vpc = repo::load::<trellis_model::ec2::Vpc>(req.store(), &req.keys.res(Kind::Vpc, vpc_id)).await?;
    Ok(vpc.and_then(|v| v.value.cidr_block.parse().ok()))
}

/// Whether `id` can be a target of this target group: an IP of the group's family inside its
/// VPC, an instance ID, a Lambda function ARN or an Application Load Balancer ARN.
fn check_target(tg: &TargetGroup, cidr: Option<Cidr>, id: &str, loopback: bool) -> Result<(), Refusal> {
    match tg.target_type.as_str() {
        "IP" => check_ip(tg, cidr, id, loopback),
        "INSTANCE" => {
            let hex = id
                .strip_prefix("i-")
                .filter(|h| (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit()));
            hex.map(|_| ()).ok_or_else(|| ("InvalidTarget", format!("{id} is not a valid EC2 instance ID")))
        }
        "LAMBDA" => Arn::parse(id)
            .filter(|a| a.service == "lambda" && a.resource.starts_with("function:"))
            .map(|_| ())
            .ok_or_else(|| ("InvalidTarget", format!("{id} is not a Lambda function ARN"))),
        _ => Arn::parse(id)
            .filter(|a| a.service == "elasticloadbalancing" && a.resource.starts_with("loadbalancer/app/"))
            .map(|_| ())
            .ok_or_else(|| ("InvalidTarget", format!("{id} is not an Application Load Balancer ARN"))),
    }
}

/// An IP target must be of the target group's address family and, for IPv4, inside its VPC's
/// block. Trellis extension: in loopback mode (`loopback`) loopback addresses (127.0.0.0/8, ::1)
/// are accepted, since that mode (DESIGN.md) forwards only to them and no VPC block can hold
/// them; in netns mode they are refused like any other address outside the block. IPv6
/// addresses are not range-checked: Trellis's VPCs have no IPv6 block.
fn check_ip(tg: &TargetGroup, cidr: Option<Cidr>, id: &str, loopback: bool) -> Result<(), Refusal> {
    let ip: IpAddr = id.parse().map_err(|_| ("InvalidTarget", format!("{id} is not a valid IP address")))?;
    let family = tg.config.as_ref().and_then(|c| c.ip_address_type.as_deref()).unwrap_or("IPV4");
    match (ip, family) {
        (IpAddr::V4(_), "IPV6") => {
            Err(("UnsupportedTarget", format!("{id} is an IPv4 address; the target group's IP address type is IPV6")))
        }
        (IpAddr::V6(_), "IPV4") => {
            Err(("UnsupportedTarget", format!("{id} is an IPv6 address; the target group's IP address type is IPV4")))
        }
        (ip, _) if ip.is_loopback() && loopback => Ok(()),
        (IpAddr::V4(v4), _) => match cidr {
            Some(block) if !block.contains_addr(v4) => {
                let vpc = tg.config.as_ref().and_then(|c| c.vpc_identifier.as_deref()).unwrap_or_default();
                Err((
                    "UnsupportedTarget",
                    format!(
                        "IP targets must be in the same VPC as their target group: {id} is outside {vpc} ({block})"
                    ),
                ))
            }
            _ => Ok(()),
        },
        (IpAddr::V6(_), _) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
