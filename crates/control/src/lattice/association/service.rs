//! Service network ↔ service associations: CreateServiceNetworkServiceAssociation (200, not
//! 201), GetServiceNetworkServiceAssociation, ListServiceNetworkServiceAssociations,
//! DeleteServiceNetworkServiceAssociation.
//!
//! Two unique indexes guard a network's services: the pair entry `sn-svc-pair/<sn>/<svc>` (a
//! service joins a network once) and, for services with a custom domain name, the name index
//! `name/snsa/<sn>/<domain>` (a custom domain means one service within a network).

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use trellis_model::Kind;
use trellis_model::lattice::{Service, ServiceNetworkServiceAssociation, Status, Tags};

use super::super::idempotency::ClientToken;
use super::super::input::check_tags;
use super::super::page::Page;
use super::super::quota::Quota;
use super::super::target_group::{scan, scan_refs};
use super::super::{ApiError, Reply, Req};
use super::Networks;
use crate::keys::rel;
use crate::repo::{self, Attempts, Tx};

const KIND: Kind = Kind::ServiceNetworkServiceAssociation;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateServiceNetworkServiceAssociationRequest {
    client_token: Option<String>,
    service_identifier: String,
    service_network_identifier: String,
    #[serde(default)]
    tags: Tags,
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Reply, ApiError> {
    let input: CreateServiceNetworkServiceAssociationRequest = req.input()?;
    let svc_id = req.resolve(&input.service_identifier, "serviceIdentifier", Kind::Service)?;
    let sn_id = req.resolve(&input.service_network_identifier, "serviceNetworkIdentifier", Kind::ServiceNetwork)?;
    check_tags("tags", &input.tags)?;
    let mut token = ClientToken::new(req, input.client_token.as_deref(), KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        if let Some(reply) = token.replay(store).await? {
            return Ok(reply);
        }
        let sn = super::super::service_network::find(req, &sn_id).await?;
        let svc = super::super::service::find(req, &svc_id).await?;
        let pair_key = req.keys.reference(rel::SN_SVC_PAIR, &sn_id, &svc_id);
        if let Some(existing) = repo::load_index(store, &pair_key).await? {
            return Err(ApiError::conflict(
                KIND,
                &existing,
                format!("Service {svc_id} is already associated with service network {sn_id} ({existing})"),
            ));
        }
        let domain_key = svc.value.custom_domain_name.as_deref().map(|d| req.keys.name(KIND, &sn_id, d));
        if let Some(key) = &domain_key
            && let Some(existing) = repo::load_index(store, key).await?
        {
            let domain = svc.value.custom_domain_name.as_deref().unwrap_or_default();
            return Err(ApiError::conflict(
                KIND,
                &existing,
                format!(
                    "Another service in service network {sn_id} already uses the custom domain name {domain} ({existing})"
                ),
            ));
        }
        let key = req.keys.counter(rel::SN_SVC, &sn_id);
        let sn_counter = Quota::ServiceAssociationsPerServiceNetwork.check(req, key, 1, KIND, Some(&sn_id)).await?;
        let svc_counter = repo::counter(store, req.keys.counter(rel::SVC_SN, &svc_id)).await?;
        let id = KIND.new_id();
        let snsa = ServiceNetworkServiceAssociation {
            arn: req.arn(KIND, &[], &id),
            id: id.clone(),
            service_network_id: sn_id.clone(),
            service_id: svc_id.clone(),
            status: Status::Active,
            created_by: req.ctx.account.clone(),
            created_at: crate::now(),
            tags: input.tags.clone(),
        };
        let mut tx = Tx::default();
        tx.create(req.keys.res(KIND, &id), &snsa);
        tx.create_index(pair_key, &id);
        if let Some(key) = domain_key {
            tx.create_index(key, &id);
        }
        tx.create_index(req.keys.reference(rel::SN_SVC, &sn_id, &id), &id);
        tx.create_index(req.keys.reference(rel::SVC_SN, &svc_id, &id), &id);
        tx.count(&sn_counter, 1);
        tx.count(&svc_counter, 1);
        tx.require_unchanged(sn.key.clone(), sn.revision);
        tx.require_unchanged(svc.key.clone(), svc.revision);
        let body = json!({
            "id": snsa.id,
            "status": Status::CreateInProgress,
            "arn": snsa.arn,
            "createdBy": snsa.created_by,
            "customDomainName": svc.value.custom_domain_name,
            "dnsEntry": super::super::service::dns_entry(req, &svc.value),
        });
        let reply = token.remember(&mut tx, StatusCode::OK, body, &id);
        if attempts.commit(store, tx).await? {
            return Ok(reply);
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceNetworkServiceAssociationIdentifier", KIND)?;
    let a = find(req, &id).await?.value;
    let mut networks = Networks::default();
    let mut body = summary(req, &a, &mut networks).await?;
    body["createdAt"] = json!(a.created_at);
    Ok(Reply::ok(body))
}

/// Lists by service network (its `sn-svc` entries), by service (its `svc-sn` entries), by both,
/// or every association when neither filter is given (the model requires neither).
pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let sn_id = match req.query("serviceNetworkIdentifier") {
        Some(ident) => Some(req.resolve(ident, "serviceNetworkIdentifier", Kind::ServiceNetwork)?),
        None => None,
    };
    let svc_id = match req.query("serviceIdentifier") {
        Some(ident) => Some(req.resolve(ident, "serviceIdentifier", Kind::Service)?),
        None => None,
    };
    let keep = |a: &ServiceNetworkServiceAssociation| {
        sn_id.as_deref().is_none_or(|s| a.service_network_id == s)
            && svc_id.as_deref().is_none_or(|s| a.service_id == s)
    };
    let (items, next) = match (sn_id.as_deref(), svc_id.as_deref()) {
        (Some(sn), _) => scan_refs(req, &Page::new(req, req.keys.references(rel::SN_SVC, sn))?, KIND, keep).await?,
        (None, Some(svc)) => {
            scan_refs(req, &Page::new(req, req.keys.references(rel::SVC_SN, svc))?, KIND, keep).await?
        }
        (None, None) => scan(req, &Page::new(req, req.keys.all(KIND))?, keep).await?,
    };
    let mut networks = Networks::default();
    let mut out = Vec::with_capacity(items.len());
    for a in items {
        let mut item = summary(req, &a, &mut networks).await?;
        item["createdAt"] = json!(a.created_at);
        out.push(item);
    }
    Ok(Reply::ok(json!({ "items": out, "nextToken": next })))
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceNetworkServiceAssociationIdentifier", KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let a = &read.value;
        let sn_counter = repo::counter(store, req.keys.counter(rel::SN_SVC, &a.service_network_id)).await?;
        let svc_counter = repo::counter(store, req.keys.counter(rel::SVC_SN, &a.service_id)).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.reference(rel::SN_SVC_PAIR, &a.service_network_id, &a.service_id));
        tx.delete(req.keys.reference(rel::SN_SVC, &a.service_network_id, &id));
        tx.delete(req.keys.reference(rel::SVC_SN, &a.service_id, &id));
        // The custom domain's index entry, if this association holds it.
        let domain = repo::load::<Service>(store, &req.keys.res(Kind::Service, &a.service_id))
            .await?
            .and_then(|s| s.value.custom_domain_name);
        if let Some(domain) = domain {
            let key = req.keys.name(KIND, &a.service_network_id, &domain);
            if repo::load_index(store, &key).await?.as_deref() == Some(id.as_str()) {
                tx.delete(key);
            }
        }
        tx.count(&sn_counter, -1);
        tx.count(&svc_counter, -1);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({ "id": id, "status": Status::DeleteInProgress, "arn": a.arn })));
        }
    }
}

async fn find(req: &Req<'_>, id: &str) -> Result<repo::Versioned<ServiceNetworkServiceAssociation>, ApiError> {
    repo::load(req.store(), &req.keys.res(KIND, id)).await?.ok_or_else(|| ApiError::not_found(KIND, id))
}

/// The members Get and List share (all but `createdAt`, which the caller adds). The service
/// and network exist while the association does (their deletes are refused until then); if
/// one vanished anyway, its name and DNS members are left out.
async fn summary(
    req: &Req<'_>,
    a: &ServiceNetworkServiceAssociation,
    networks: &mut Networks,
) -> Result<serde_json::Value, ApiError> {
    let svc = repo::load::<Service>(req.store(), &req.keys.res(Kind::Service, &a.service_id)).await?.map(|s| s.value);
    let sn = networks.get(req, &a.service_network_id).await?;
    Ok(json!({
        "id": a.id,
        "status": a.status,
        "arn": a.arn,
        "createdBy": a.created_by,
        "serviceId": a.service_id,
        "serviceName": svc.as_ref().map(|s| &s.name),
        "serviceArn": req.arn(Kind::Service, &[], &a.service_id),
        "serviceNetworkId": a.service_network_id,
        "serviceNetworkName": sn.map(|s| &s.name),
        "serviceNetworkArn": req.arn(Kind::ServiceNetwork, &[], &a.service_network_id),
        "dnsEntry": svc.as_ref().map(|s| super::super::service::dns_entry(req, s)),
        "customDomainName": svc.as_ref().and_then(|s| s.custom_domain_name.as_ref()),
    }))
}
