//! Service networks: CreateServiceNetwork, GetServiceNetwork, ListServiceNetworks,
//! UpdateServiceNetwork, DeleteServiceNetwork.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use trellis_model::Kind;
use trellis_model::lattice::{AuthType, ServiceNetwork, SharingConfig, Tags};

use super::idempotency::ClientToken;
use super::input::{check_name, check_tags};
use super::page::Page;
use super::quota::Quota;
use super::{ApiError, Reply, Req};
use crate::keys::rel;
use crate::repo::{self, Attempts, Tx};

const KIND: Kind = Kind::ServiceNetwork;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateServiceNetworkRequest {
    client_token: Option<String>,
    name: String,
    auth_type: Option<AuthType>,
    sharing_config: Option<SharingConfig>,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateServiceNetworkRequest {
    auth_type: AuthType,
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Reply, ApiError> {
    let input: CreateServiceNetworkRequest = req.input()?;
    check_name(KIND, &input.name)?;
    check_tags("tags", &input.tags)?;
    let mut token = ClientToken::new(req, input.client_token.as_deref(), KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        if let Some(reply) = token.replay(store).await? {
            return Ok(reply);
        }
        let name_key = req.free_name(KIND, "", &input.name).await?;
        let counter = Quota::ServiceNetworks.check(req, req.keys.counter(KIND.prefix(), ""), 1, KIND, None).await?;
        let id = KIND.new_id();
        let now = crate::now();
        let sn = ServiceNetwork {
            arn: req.arn(KIND, &[], &id),
            id: id.clone(),
            name: input.name.clone(),
            auth_type: input.auth_type.unwrap_or_default(),
            sharing_config: input.sharing_config,
            created_at: now,
            last_updated_at: now,
            tags: input.tags.clone(),
        };
        let mut tx = Tx::default();
        tx.create(req.keys.res(KIND, &id), &sn);
        tx.create_index(name_key, &id);
        tx.count(&counter, 1);
        let body = json!({
            "id": sn.id, "name": sn.name, "arn": sn.arn, "authType": sn.auth_type, "sharingConfig": sn.sharing_config,
        });
        let reply = token.remember(&mut tx, StatusCode::CREATED, body, &id);
        if attempts.commit(store, tx).await? {
            return Ok(reply);
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceNetworkIdentifier", KIND)?;
    let sn = find(req, &id).await?.value;
    let (vpcs, services) = counts(req, &sn.id).await?;
    Ok(Reply::ok(json!({
        "id": sn.id,
        "name": sn.name,
        "arn": sn.arn,
        "authType": sn.auth_type,
        "sharingConfig": sn.sharing_config,
        "createdAt": sn.created_at,
        "lastUpdatedAt": sn.last_updated_at,
        "numberOfAssociatedVPCs": vpcs,
        "numberOfAssociatedServices": services,
    })))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let page = Page::new(req, req.keys.all(KIND))?;
    let (items, more) =
        repo::list::<ServiceNetwork>(req.store(), page.prefix(), page.after.as_deref(), page.limit).await?;
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let sn = &item.value;
        let (vpcs, services) = counts(req, &sn.id).await?;
        out.push(json!({
            "id": sn.id,
            "name": sn.name,
            "arn": sn.arn,
            "createdAt": sn.created_at,
            "lastUpdatedAt": sn.last_updated_at,
            "numberOfAssociatedVPCs": vpcs,
            "numberOfAssociatedServices": services,
            "numberOfAssociatedResourceConfigurations": 0,
        }));
    }
    let next = page.next_token(items.last().map(|i| i.key.as_str()), more);
    Ok(Reply::ok(json!({ "items": out, "nextToken": next })))
}

pub(crate) async fn update(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceNetworkIdentifier", KIND)?;
    let input: UpdateServiceNetworkRequest = req.input()?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let mut sn = read.value.clone();
        sn.auth_type = input.auth_type;
        sn.last_updated_at = crate::now();
        let mut tx = Tx::default();
        tx.update(&read, &sn);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({ "id": sn.id, "name": sn.name, "arn": sn.arn, "authType": sn.auth_type })));
        }
    }
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceNetworkIdentifier", KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let vpcs = repo::counter(store, req.keys.counter(rel::SN_VPC, &id)).await?;
        let services = repo::counter(store, req.keys.counter(rel::SN_SVC, &id)).await?;
        if vpcs.value() > 0 || services.value() > 0 {
            return Err(ApiError::conflict(
                KIND,
                &id,
                format!(
                    "Service network {id} still has {} VPC and {} service associations",
                    vpcs.value(),
                    services.value()
                ),
            ));
        }
        let counter = repo::counter(store, req.keys.counter(KIND.prefix(), "")).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.name(KIND, "", &read.value.name));
        tx.count(&counter, -1);
        // Zero, and still zero at commit: no association slipped in meanwhile.
        tx.retire(&vpcs);
        tx.retire(&services);
        cascade_policy_and_logs(req, &mut tx, &id).await?;
        if attempts.commit(store, tx).await? {
            return Ok(Reply::no_content());
        }
    }
}

/// Adds to `tx` the deletion of the auth policy and the access log subscriptions of a service
/// network or service, which go with it.
pub(crate) async fn cascade_policy_and_logs(req: &Req<'_>, tx: &mut Tx, resource_id: &str) -> Result<(), ApiError> {
    let subscriptions = repo::list_index(req.store(), &req.keys.references(rel::ALS, resource_id)).await?;
    for als in subscriptions {
        tx.delete(req.keys.res(Kind::AccessLogSubscription, &als));
    }
    tx.delete_prefix(req.keys.references(rel::ALS, resource_id));
    tx.delete(req.keys.auth_policy(resource_id));
    Ok(())
}

pub(crate) async fn find(req: &Req<'_>, id: &str) -> Result<repo::Versioned<ServiceNetwork>, ApiError> {
    repo::load(req.store(), &req.keys.res(KIND, id)).await?.ok_or_else(|| ApiError::not_found(KIND, id))
}

/// How many VPCs and services are associated with a service network.
pub(crate) async fn counts(req: &Req<'_>, id: &str) -> Result<(u64, u64), ApiError> {
    let store = req.store();
    let vpcs = repo::counter(store, req.keys.counter(rel::SN_VPC, id)).await?.value();
    let services = repo::counter(store, req.keys.counter(rel::SN_SVC, id)).await?.value();
    Ok((vpcs, services))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::test_util::{app, app_with, call};

    #[tokio::test]
    async fn create_get_list_delete() {
        let (app, _dir) = app();
        let (status, _, sn) =
            call(&app, "POST", "/servicenetworks", Some(json!({"name": "net-one", "clientToken": "t1"}))).await;
        assert_eq!(status, 201, "{sn}");
        let id = sn["id"].as_str().unwrap().to_owned();
        assert!(sn.get("sharingConfig").is_none());
        let (status, _, again) =
            call(&app, "POST", "/servicenetworks", Some(json!({"name": "net-one", "clientToken": "t1"}))).await;
        assert_eq!((status, &again["id"]), (201.try_into().unwrap(), &sn["id"]));
        let (status, code, _) =
            call(&app, "POST", "/servicenetworks", Some(json!({"name": "net-two", "clientToken": "t1"}))).await;
        assert_eq!((status.as_u16(), code.as_deref()), (409, Some("ConflictException")));
        let (status, code, _) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "net-one"}))).await;
        assert_eq!((status.as_u16(), code.as_deref()), (409, Some("ConflictException")));
        let arn = sn["arn"].as_str().unwrap().replace(':', "%3A").replace('/', "%2F");
        let (status, _, got) = call(&app, "GET", &format!("/servicenetworks/{arn}"), None).await;
        assert_eq!((status.as_u16(), &got["numberOfAssociatedVPCs"]), (200, &json!(0)));
        let (_, _, list) = call(&app, "GET", "/servicenetworks", None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert!(list.get("nextToken").is_none());
        let (status, _, _) = call(&app, "DELETE", &format!("/servicenetworks/{id}"), None).await;
        assert_eq!(status, 204);
        let (status, code, body) = call(&app, "GET", &format!("/servicenetworks/{id}"), None).await;
        assert_eq!((status.as_u16(), code.as_deref()), (404, Some("ResourceNotFoundException")));
        assert_eq!(body["resourceType"], "SERVICE_NETWORK");
    }

    #[tokio::test]
    async fn quota_and_validation() {
        let (app, _dir) = app_with(crate::Quotas { service_networks: 1, ..Default::default() });
        call(&app, "POST", "/servicenetworks", Some(json!({"name": "aaa"}))).await;
        let (status, code, body) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "bbb"}))).await;
        assert_eq!((status.as_u16(), code.as_deref()), (402, Some("ServiceQuotaExceededException")));
        assert_eq!((&body["quotaCode"], &body["serviceCode"]), (&json!("L-9CAD07FB"), &json!("vpc-lattice")));
        let (status, _, body) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "Bad_Name"}))).await;
        assert_eq!((status.as_u16(), &body["fieldList"][0]["name"]), (400, &json!("name")));
        let (_, _, body) =
            call(&app, "POST", "/servicenetworks", Some(json!({"name": "ccc", "authType": "NOPE"}))).await;
        assert_eq!(body["reason"], "fieldValidationFailed");
        let (_, _, body) = call(&app, "GET", "/servicenetworks?maxResults=0", None).await;
        assert_eq!(body["fieldList"][0]["name"], "maxResults");
    }
}
