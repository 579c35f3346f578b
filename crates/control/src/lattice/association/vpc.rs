//! Service network ↔ VPC associations: CreateServiceNetworkVpcAssociation (200, not 201),
//! GetServiceNetworkVpcAssociation, ListServiceNetworkVpcAssociations,
//! UpdateServiceNetworkVpcAssociation, DeleteServiceNetworkVpcAssociation.
//!
//! A VPC belongs to at most one service network: the `vpc-snva` counter of the VPC is read as
//! zero and compared at commit, so two concurrent associations of one VPC cannot both succeed.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use trellis_model::Kind;
use trellis_model::ec2::SecurityGroup;
use trellis_model::lattice::{DnsOptions, ServiceNetwork, ServiceNetworkVpcAssociation, Status, Tags};

use super::super::idempotency::ClientToken;
use super::super::input::check_tags;
use super::super::page::Page;
use super::super::quota::Quota;
use super::super::target_group::{find_vpc, one_of, scan, scan_refs};
use super::super::{ApiError, Reply, Req};
use super::Networks;
use crate::keys::rel;
use crate::repo::{self, Attempts, Tx};

const KIND: Kind = Kind::ServiceNetworkVpcAssociation;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateServiceNetworkVpcAssociationRequest {
    client_token: Option<String>,
    service_network_identifier: String,
    vpc_identifier: String,
    private_dns_enabled: Option<bool>,
    security_group_ids: Option<Vec<String>>,
    #[serde(default)]
    tags: Tags,
    dns_options: Option<DnsOptions>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateServiceNetworkVpcAssociationRequest {
    /// Required by the model (botocore refuses to send without it).
    security_group_ids: Vec<String>,
    private_dns_enabled: Option<bool>,
    dns_options: Option<DnsOptions>,
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Reply, ApiError> {
    let input: CreateServiceNetworkVpcAssociationRequest = req.input()?;
    let sn_id = req.resolve(&input.service_network_identifier, "serviceNetworkIdentifier", Kind::ServiceNetwork)?;
    let vpc_id = input.vpc_identifier.clone();
    if !Kind::Vpc.is_id(&vpc_id) {
        return Err(ApiError::field("vpcIdentifier", format!("{vpc_id:?} is not a valid VPC ID")));
    }
    let security_groups = input.security_group_ids.as_deref().map(|ids| check_sg_ids(ids, 0)).transpose()?;
    if let Some(options) = &input.dns_options {
        check_dns_options(options)?;
    }
    check_tags("tags", &input.tags)?;
    let mut token = ClientToken::new(req, input.client_token.as_deref(), KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        if let Some(reply) = token.replay(store).await? {
            return Ok(reply);
        }
        let sn = super::super::service_network::find(req, &sn_id).await?;
        let vpc = find_vpc(req, &vpc_id).await?;
        let mut tx = Tx::default();
        let groups = security_groups.as_deref().unwrap_or_default();
        check_security_groups(req, &vpc_id, groups, &mut tx).await?;
        shift_sg_users(req, &mut tx, &[], groups).await?;
        let vpc_counter = repo::counter(store, req.keys.counter(rel::VPC_SNVA, &vpc_id)).await?;
        if vpc_counter.value() > 0 {
            let existing = repo::list_index(store, &req.keys.references(rel::VPC_SNVA, &vpc_id)).await?;
            let existing = existing.first().cloned().unwrap_or_default();
            return Err(ApiError::conflict(
                KIND,
                &existing,
                format!(
                    "VPC {vpc_id} is already associated with a service network ({existing}); a VPC can be associated with only one"
                ),
            ));
        }
        let key = req.keys.counter(rel::SN_VPC, &sn_id);
        let sn_counter = Quota::VpcAssociationsPerServiceNetwork.check(req, key, 1, KIND, Some(&sn_id)).await?;
        let id = KIND.new_id();
        let now = crate::now();
        let snva = ServiceNetworkVpcAssociation {
            arn: req.arn(KIND, &[], &id),
            id: id.clone(),
            service_network_id: sn_id.clone(),
            vpc_id: vpc_id.clone(),
            security_group_ids: security_groups.clone(),
            private_dns_enabled: input.private_dns_enabled.unwrap_or(true),
            dns_options: input.dns_options.clone(),
            status: Status::Active,
            created_by: req.ctx.account.clone(),
            created_at: now,
            last_updated_at: now,
            tags: input.tags.clone(),
        };
        tx.create(req.keys.res(KIND, &id), &snva);
        tx.create_index(req.keys.reference(rel::SN_VPC, &sn_id, &id), &id);
        tx.create_index(req.keys.reference(rel::VPC_SNVA, &vpc_id, &id), &id);
        tx.count(&sn_counter, 1);
        tx.count(&vpc_counter, 1);
        tx.require_unchanged(sn.key.clone(), sn.revision);
        tx.require_unchanged(vpc.key.clone(), vpc.revision);
        let body = json!({
            "id": snva.id,
            "status": Status::CreateInProgress,
            "arn": snva.arn,
            "createdBy": snva.created_by,
            "securityGroupIds": snva.security_group_ids,
            "privateDnsEnabled": snva.private_dns_enabled,
            "dnsOptions": snva.dns_options,
        });
        let reply = token.remember(&mut tx, StatusCode::OK, body, &id);
        if attempts.commit(store, tx).await? {
            return Ok(reply);
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceNetworkVpcAssociationIdentifier", KIND)?;
    let a = find(req, &id).await?.value;
    let mut networks = Networks::default();
    let sn = networks.get(req, &a.service_network_id).await?;
    let mut body = summary(&a, sn);
    body["securityGroupIds"] = json!(a.security_group_ids);
    Ok(Reply::ok(body))
}

/// The members Get and List share.
fn summary(a: &ServiceNetworkVpcAssociation, sn: Option<&ServiceNetwork>) -> serde_json::Value {
    json!({
        "id": a.id,
        "arn": a.arn,
        "status": a.status,
        "createdBy": a.created_by,
        "createdAt": a.created_at,
        "serviceNetworkId": a.service_network_id,
        "serviceNetworkName": sn.map(|s| &s.name),
        "serviceNetworkArn": sn.map(|s| &s.arn),
        "privateDnsEnabled": a.private_dns_enabled,
        "dnsOptions": a.dns_options,
        "vpcId": a.vpc_id,
        "lastUpdatedAt": a.last_updated_at,
    })
}

/// Lists by service network (its `sn-vpc` entries), by VPC (its `vpc-snva` entry), by both, or
/// every association when neither filter is given (the model requires neither).
pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let sn_id = match req.query("serviceNetworkIdentifier") {
        Some(ident) => Some(req.resolve(ident, "serviceNetworkIdentifier", Kind::ServiceNetwork)?),
        None => None,
    };
    let vpc_id = req.query("vpcIdentifier");
    if let Some(v) = vpc_id.filter(|v| !Kind::Vpc.is_id(v)) {
        return Err(ApiError::field("vpcIdentifier", format!("{v:?} is not a valid VPC ID")));
    }
    let keep = |a: &ServiceNetworkVpcAssociation| {
        sn_id.as_deref().is_none_or(|s| a.service_network_id == s) && vpc_id.is_none_or(|v| a.vpc_id == v)
    };
    let (items, next) = match (sn_id.as_deref(), vpc_id) {
        (_, Some(vpc)) => scan_refs(req, &Page::new(req, req.keys.references(rel::VPC_SNVA, vpc))?, KIND, keep).await?,
        (Some(sn), None) => scan_refs(req, &Page::new(req, req.keys.references(rel::SN_VPC, sn))?, KIND, keep).await?,
        (None, None) => scan(req, &Page::new(req, req.keys.all(KIND))?, keep).await?,
    };
    let mut networks = Networks::default();
    let mut out = Vec::with_capacity(items.len());
    for a in items {
        let sn = networks.get(req, &a.service_network_id).await?;
        out.push(summary(&a, sn));
    }
    Ok(Reply::ok(json!({ "items": out, "nextToken": next })))
}

/// Updates security groups (1–5: once an association has them it keeps at least one),
/// `privateDnsEnabled` and `dnsOptions`. Answers `UPDATE_IN_PROGRESS`, as AWS does, while the
/// stored association is already `ACTIVE` again.
pub(crate) async fn update(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceNetworkVpcAssociationIdentifier", KIND)?;
    let input: UpdateServiceNetworkVpcAssociationRequest = req.input()?;
    let groups = check_sg_ids(&input.security_group_ids, 1)?;
    if let Some(options) = &input.dns_options {
        check_dns_options(options)?;
    }
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let mut a = read.value.clone();
        let mut tx = Tx::default();
        check_security_groups(req, &a.vpc_id, &groups, &mut tx).await?;
        shift_sg_users(req, &mut tx, a.security_group_ids.as_deref().unwrap_or_default(), &groups).await?;
        a.security_group_ids = Some(groups.clone());
        if let Some(enabled) = input.private_dns_enabled {
            a.private_dns_enabled = enabled;
        }
        if let Some(options) = &input.dns_options {
            a.dns_options = Some(options.clone());
        }
        a.last_updated_at = crate::now();
        tx.update(&read, &a);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({
                "id": a.id,
                "arn": a.arn,
                "status": Status::UpdateInProgress,
                "createdBy": a.created_by,
                "securityGroupIds": a.security_group_ids,
                "privateDnsEnabled": a.private_dns_enabled,
                "dnsOptions": a.dns_options,
            })));
        }
    }
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceNetworkVpcAssociationIdentifier", KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let a = &read.value;
        let sn_counter = repo::counter(store, req.keys.counter(rel::SN_VPC, &a.service_network_id)).await?;
        let vpc_counter = repo::counter(store, req.keys.counter(rel::VPC_SNVA, &a.vpc_id)).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.reference(rel::SN_VPC, &a.service_network_id, &id));
        tx.delete(req.keys.reference(rel::VPC_SNVA, &a.vpc_id, &id));
        tx.count(&sn_counter, -1);
        tx.count(&vpc_counter, -1);
        shift_sg_users(req, &mut tx, a.security_group_ids.as_deref().unwrap_or_default(), &[]).await?;
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({ "id": id, "status": Status::DeleteInProgress, "arn": a.arn })));
        }
    }
}

async fn find(req: &Req<'_>, id: &str) -> Result<repo::Versioned<ServiceNetworkVpcAssociation>, ApiError> {
    repo::load(req.store(), &req.keys.res(KIND, id)).await?.ok_or_else(|| ApiError::not_found(KIND, id))
}

/// Checks the shape of `securityGroupIds` (`min` to 5 security group IDs); drops repeats.
fn check_sg_ids(ids: &[String], min: usize) -> Result<Vec<String>, ApiError> {
    if !(min..=5).contains(&ids.len()) {
        return Err(ApiError::field("securityGroupIds", format!("must hold {min} to 5 security group IDs")));
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !Kind::SecurityGroup.is_id(id) {
            return Err(ApiError::field("securityGroupIds", format!("{id:?} is not a valid security group ID")));
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// Each security group must exist (`ResourceNotFoundException`, `SECURITY_GROUP`) and belong
/// to the VPC (`ValidationException`); `tx` then requires them unchanged at commit.
async fn check_security_groups(req: &Req<'_>, vpc_id: &str, ids: &[String], tx: &mut Tx) -> Result<(), ApiError> {
    for id in ids {
        let sg = repo::load::<SecurityGroup>(req.store(), &req.keys.res(Kind::SecurityGroup, id))
            .await?
            .ok_or_else(|| ApiError::not_found(Kind::SecurityGroup, id))?;
        if sg.value.vpc_id != vpc_id {
            return Err(ApiError::field(
                "securityGroupIds",
                format!("security group {id} belongs to {}, not to {vpc_id}", sg.value.vpc_id),
            ));
        }
        tx.require_unchanged(sg.key, sg.revision);
    }
    Ok(())
}

/// Moves the `sg-users` counters (what EC2's DeleteSecurityGroup guards on) of the groups an
/// association stops and starts using.
async fn shift_sg_users(req: &Req<'_>, tx: &mut Tx, before: &[String], after: &[String]) -> Result<(), ApiError> {
    for (groups, others, delta) in [(before, after, -1), (after, before, 1)] {
        for sg in groups.iter().filter(|g| !others.contains(g)) {
            let users = repo::counter(req.store(), req.keys.counter(crate::ec2::rel::SG_USERS, sg)).await?;
            tx.count(&users, delta);
        }
    }
    Ok(())
}

/// `privateDnsPreference` is an enum; the two `…SPECIFIED_DOMAINS…` preferences need 1–10
/// domains, and the others take none.
fn check_dns_options(options: &DnsOptions) -> Result<(), ApiError> {
    let preference = options.private_dns_preference.as_deref();
    if let Some(p) = preference {
        one_of(
            "dnsOptions.privateDnsPreference",
            p,
            &[
                "VERIFIED_DOMAINS_ONLY",
                "ALL_DOMAINS",
                "VERIFIED_DOMAINS_AND_SPECIFIED_DOMAINS",
                "SPECIFIED_DOMAINS_ONLY",
            ],
        )?;
    }
    let field = "dnsOptions.privateDnsSpecifiedDomains";
    let wants_domains = preference.is_some_and(|p| p.contains("SPECIFIED_DOMAINS"));
    match &options.private_dns_specified_domains {
        None if wants_domains => Err(ApiError::field(field, "is required with this privateDnsPreference")),
        None => Ok(()),
        Some(_) if !wants_domains => {
            Err(ApiError::field(field, "is only allowed with a SPECIFIED_DOMAINS privateDnsPreference"))
        }
        Some(domains) if domains.is_empty() || domains.len() > 10 => {
            Err(ApiError::field(field, "must hold 1 to 10 domains"))
        }
        Some(domains) => match domains.iter().find(|d| d.is_empty() || d.len() > 255) {
            Some(d) => Err(ApiError::field(field, format!("{d:?} is not a valid domain"))),
            None => Ok(()),
        },
    }
}
