//! Services: CreateService, GetService, ListServices, UpdateService, DeleteService.
//!
//! A service's name is unique per account and region; its generated DNS name is fixed at create
//! (spec §2.4). Deleting a service is refused while it is associated with a service network
//! (the associations keep `count/svc-sn/<svc>`), and takes with it, in one transaction, its
//! listeners and rules, their target-group references, its auth policy and its access log
//! subscriptions.
//!
//! A `certificateArn` must name an ACM certificate of the service's region and account; the
//! service's use of it is recorded in the same transaction as the service ([`crate::acm::acquire`],
//! released on update and delete), which is what DeleteCertificate's refusal and
//! DescribeCertificate's `InUseBy` read.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use trellis_model::Kind;
use trellis_model::lattice::{AuthType, Listener, Service, Status, Tags};

use super::idempotency::ClientToken;
use super::input::{check_name, check_tags};
use super::page::Page;
use super::quota::Quota;
use super::service_network::cascade_policy_and_logs;
use super::{ApiError, Reply, Req, listener, rule};
use crate::keys::rel;
use crate::repo::{self, Attempts, Tx, Versioned};

const KIND: Kind = Kind::Service;

/// What a service without `idleTimeoutSeconds` uses (spec §2.3).
const DEFAULT_IDLE_TIMEOUT: u32 = 60;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateServiceRequest {
    client_token: Option<String>,
    name: String,
    #[serde(default)]
    tags: Tags,
    custom_domain_name: Option<String>,
    certificate_arn: Option<String>,
    auth_type: Option<AuthType>,
    idle_timeout_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateServiceRequest {
    certificate_arn: Option<String>,
    auth_type: Option<AuthType>,
    idle_timeout_seconds: Option<i64>,
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Reply, ApiError> {
    let input: CreateServiceRequest = req.input()?;
    check_name(KIND, &input.name)?;
    check_tags("tags", &input.tags)?;
    if let Some(domain) = &input.custom_domain_name {
        check_domain(domain)?;
    }
    let certificate_arn = check_certificate(input.certificate_arn.as_deref())?;
    let idle_timeout = input.idle_timeout_seconds.map(check_idle_timeout).transpose()?;
    let mut token = ClientToken::new(req, input.client_token.as_deref(), KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        if let Some(reply) = token.replay(store).await? {
            return Ok(reply);
        }
        let name_key = req.free_name(KIND, "", &input.name).await?;
        let counter = Quota::Services.check(req, req.keys.counter(KIND.prefix(), ""), 1, KIND, None).await?;
        let id = KIND.new_id();
        let now = crate::now();
        let config = &req.state.config;
        let svc = Service {
            arn: req.arn(KIND, &[], &id),
            dns_name: trellis_model::dns_name::service_dns_name(
                &input.name,
                &id,
                &config.partition_label,
                &req.ctx.region,
            ),
            id: id.clone(),
            name: input.name.clone(),
            auth_type: input.auth_type.unwrap_or_default(),
            custom_domain_name: input.custom_domain_name.clone(),
            certificate_arn: certificate_arn.clone(),
            idle_timeout_seconds: idle_timeout,
            status: Status::Active,
            created_at: now,
            last_updated_at: now,
            tags: input.tags.clone(),
        };
        let mut tx = Tx::default();
        if let Some(arn) = &certificate_arn {
            use_certificate(req, arn, &id, &mut tx).await?;
        }
        tx.create(req.keys.res(KIND, &id), &svc);
        tx.create_index(name_key, &id);
        tx.count(&counter, 1);
        let body = json!({
            "id": svc.id,
            "arn": svc.arn,
            "name": svc.name,
            "customDomainName": svc.custom_domain_name,
            "certificateArn": svc.certificate_arn,
            "status": Status::CreateInProgress,
            "authType": svc.auth_type,
            "idleTimeoutSeconds": idle_timeout_of(&svc),
            "dnsEntry": dns_entry(req, &svc),
        });
        let reply = token.remember(&mut tx, StatusCode::CREATED, body, &id);
        if attempts.commit(store, tx).await? {
            return Ok(reply);
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceIdentifier", KIND)?;
    let svc = find(req, &id).await?.value;
    Ok(Reply::ok(json!({
        "id": svc.id,
        "name": svc.name,
        "arn": svc.arn,
        "createdAt": svc.created_at,
        "lastUpdatedAt": svc.last_updated_at,
        "dnsEntry": dns_entry(req, &svc),
        "customDomainName": svc.custom_domain_name,
        "certificateArn": svc.certificate_arn,
        "status": svc.status,
        "authType": svc.auth_type,
        "idleTimeoutSeconds": idle_timeout_of(&svc),
    })))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let page = Page::new(req, req.keys.all(KIND))?;
    let (items, more) = repo::list::<Service>(req.store(), page.prefix(), page.after.as_deref(), page.limit).await?;
    let out: Vec<_> = items
        .iter()
        .map(|item| {
            let svc = &item.value;
            json!({
                "id": svc.id,
                "name": svc.name,
                "arn": svc.arn,
                "createdAt": svc.created_at,
                "lastUpdatedAt": svc.last_updated_at,
                "dnsEntry": dns_entry(req, svc),
                "customDomainName": svc.custom_domain_name,
                "status": svc.status,
            })
        })
        .collect();
    let next = page.next_token(items.last().map(|i| i.key.as_str()), more);
    Ok(Reply::ok(json!({ "items": out, "nextToken": next })))
}

pub(crate) async fn update(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceIdentifier", KIND)?;
    let input: UpdateServiceRequest = req.input()?;
    // An empty certificateArn (the model allows it) removes the certificate.
    let certificate_arn = input.certificate_arn.as_deref().map(|c| check_certificate(Some(c))).transpose()?;
    let idle_timeout = input.idle_timeout_seconds.map(check_idle_timeout).transpose()?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let mut svc = read.value.clone();
        let mut tx = Tx::default();
        if let Some(cert) = &certificate_arn
            && *cert != svc.certificate_arn
        {
            if let Some(old) = &svc.certificate_arn {
                release_certificate(req, old, &id, &mut tx).await?;
            }
            if let Some(new) = cert {
                use_certificate(req, new, &id, &mut tx).await?;
            }
            svc.certificate_arn = cert.clone();
        }
        if let Some(auth_type) = input.auth_type {
            svc.auth_type = auth_type;
        }
        if let Some(timeout) = idle_timeout {
            svc.idle_timeout_seconds = Some(timeout);
        }
        svc.last_updated_at = crate::now();
        tx.update(&read, &svc);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({
                "id": svc.id,
                "arn": svc.arn,
                "name": svc.name,
                "customDomainName": svc.custom_domain_name,
                "certificateArn": svc.certificate_arn,
                "authType": svc.auth_type,
                "idleTimeoutSeconds": idle_timeout_of(&svc),
            })));
        }
    }
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    let id = req.path_id(0, "serviceIdentifier", KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &id).await?;
        let networks = repo::counter(store, req.keys.counter(rel::SVC_SN, &id)).await?;
        if networks.value() > 0 {
            return Err(ApiError::conflict(
                KIND,
                &id,
                format!("Service {id} is still associated with {} service networks", networks.value()),
            ));
        }
        let services = repo::counter(store, req.keys.counter(KIND.prefix(), "")).await?;
        let listeners = repo::counter(store, req.keys.counter(Kind::Listener.prefix(), &id)).await?;
        let (children, _) = repo::list::<Listener>(store, &req.keys.listeners(&id), None, 0).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.name(KIND, "", &read.value.name));
        tx.count(&services, -1);
        if let Some(arn) = &read.value.certificate_arn {
            release_certificate(req, arn, &id, &mut tx).await?;
        }
        // Zero, and still zero at commit: no association slipped in meanwhile.
        tx.retire(&networks);
        for child in &children {
            let rules = repo::counter(store, req.keys.counter(Kind::Rule.prefix(), &child.value.id)).await?;
            listener::cascade_rules(req, &mut tx, &child.value.id, &rules);
        }
        tx.delete_prefix(req.keys.listeners(&id));
        tx.delete_prefix(req.keys.name(Kind::Listener, &id, ""));
        tx.retire(&listeners);
        rule::retire_service(req, &mut tx, &id).await?;
        cascade_policy_and_logs(req, &mut tx, &id).await?;
        if attempts.commit(store, tx).await? {
            let svc = &read.value;
            return Ok(Reply::ok(json!({
                "id": svc.id, "arn": svc.arn, "name": svc.name, "status": Status::DeleteInProgress,
            })));
        }
    }
}

/// A service of this region and account.
pub(crate) async fn find(req: &Req<'_>, id: &str) -> Result<Versioned<Service>, ApiError> {
    repo::load(req.store(), &req.keys.res(KIND, id)).await?.ok_or_else(|| ApiError::not_found(KIND, id))
}

/// Records in `tx` that service `id` uses certificate `arn`, which must exist. A certificate
/// that does not exist (or is of another region or account) is a `ResourceNotFoundException`:
/// the Lattice model documents that exception as "the request references a resource that does
/// not exist", and a well-formed ARN naming nothing is that, not a malformed input.
async fn use_certificate(req: &Req<'_>, arn: &str, id: &str, tx: &mut Tx) -> Result<(), ApiError> {
    let scope = (req.ctx.region.as_str(), req.ctx.account.as_str());
    crate::acm::acquire(req.store(), &req.keys, scope, arn, id, tx).await.map_err(|e| match e {
        crate::acm::UseError::NotFound => ApiError::NotFound {
            message: format!("Certificate {arn} not found"),
            resource_id: arn.to_owned(),
            resource_type: "CERTIFICATE".to_owned(),
        },
        crate::acm::UseError::Repo(e) => e.into(),
    })
}

/// Records in `tx` that service `id` no longer uses certificate `arn`.
async fn release_certificate(req: &Req<'_>, arn: &str, id: &str, tx: &mut Tx) -> Result<(), ApiError> {
    let scope = (req.ctx.region.as_str(), req.ctx.account.as_str());
    Ok(crate::acm::release(req.store(), &req.keys, scope, arn, id, tx).await?)
}

/// A service's `dnsEntry`.
pub(crate) fn dns_entry(req: &Req<'_>, svc: &Service) -> serde_json::Value {
    json!({ "domainName": svc.dns_name, "hostedZoneId": req.state.config.hosted_zone_id })
}

fn idle_timeout_of(svc: &Service) -> u32 {
    svc.idle_timeout_seconds.unwrap_or(DEFAULT_IDLE_TIMEOUT)
}

fn check_idle_timeout(seconds: i64) -> Result<u32, ApiError> {
    match u32::try_from(seconds) {
        Ok(s @ 60..=600) => Ok(s),
        _ => Err(ApiError::field("idleTimeoutSeconds", "must be from 60 to 600")),
    }
}

/// `customDomainName`: 3–255 characters of a DNS name (letters, digits, hyphens, dots, and a
/// leading `*.` wildcard label).
fn check_domain(domain: &str) -> Result<(), ApiError> {
    let bare = domain.strip_prefix("*.").unwrap_or(domain);
    let ok = (3..=255).contains(&domain.len())
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok { Ok(()) } else { Err(ApiError::field("customDomainName", "must be a domain name of 3 to 255 characters")) }
}

/// `certificateArn` (model pattern
/// `(arn(:[a-z0-9]+([.-][a-z0-9]+)*){2}(:([a-z0-9]+([.-][a-z0-9]+)*)?){2}:certificate/[0-9a-z-]+)?`).
/// The empty string, which the pattern allows, means no certificate.
fn check_certificate(arn: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(arn) = arn.filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = arn.len() <= 2048
        && parts.len() == 6
        && parts[0] == "arn"
        && is_arn_word(parts[1])
        && is_arn_word(parts[2])
        && (parts[3].is_empty() || is_arn_word(parts[3]))
        && (parts[4].is_empty() || is_arn_word(parts[4]))
        && parts[5].strip_prefix("certificate/").is_some_and(|id| {
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(Some(arn.to_owned()))
    } else {
        Err(ApiError::field(
            "certificateArn",
            "must be the ARN of a certificate (arn:aws:acm:<region>:<account>:certificate/<id>)",
        ))
    }
}

/// `[a-z0-9]+([.-][a-z0-9]+)*`.
fn is_arn_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .split(['.', '-'])
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

#[cfg(test)]
mod tests;
