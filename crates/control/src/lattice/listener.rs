//! Listeners: CreateListener, GetListener, ListListeners, UpdateListener, DeleteListener.
//!
//! A listener lives under its service (`keys.listener(svc, id)`), its name is unique within the
//! service, and it carries its default rule: the rule's ID (`default_rule_id`) and its action
//! (`default_action`); the rule is not stored on its own ([`super::rule`] derives it). Listener
//! writes on one service are serialised by the service's listener counter, which every create
//! and delete moves, so a port or quota check read before a commit still holds at it. Actions are
//! checked, and their target-group references kept, by [`super::rule`]'s helpers.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use trellis_model::Kind;
use trellis_model::lattice::{Listener, ListenerProtocol, Rule, RuleAction, Tags};

use super::idempotency::ClientToken;
use super::input::{check_name, check_tags};
use super::page::Page;
use super::quota::Quota;
use super::rule::{TgLedger, check_targets, parse_action, target_groups};
use super::{ApiError, Reply, Req, service};
use crate::repo::{self, Attempts, Tx, Versioned};

const KIND: Kind = Kind::Listener;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateListenerRequest {
    client_token: Option<String>,
    name: String,
    protocol: ListenerProtocol,
    port: Option<i64>,
    default_action: RuleAction,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateListenerRequest {
    default_action: RuleAction,
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Reply, ApiError> {
    let service_id = req.path_id(0, "serviceIdentifier", Kind::Service)?;
    let input: CreateListenerRequest = req.input()?;
    check_name(KIND, &input.name)?;
    check_tags("tags", &input.tags)?;
    let port = port(input.protocol, input.port)?;
    let action = parse_action(req, "defaultAction", &input.default_action)?;
    let mut token = ClientToken::new(req, input.client_token.as_deref(), KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        if let Some(reply) = token.replay(store).await? {
            return Ok(reply);
        }
        let svc = service::find(req, &service_id).await?;
        if input.protocol == ListenerProtocol::TlsPassthrough && svc.value.custom_domain_name.is_none() {
            return Err(ApiError::invalid(
                "A TLS_PASSTHROUGH listener needs its service to have a customDomainName (it routes by SNI)",
            ));
        }
        check_targets(req, "defaultAction", &action, input.protocol).await?;
        let name_key = req.free_name(KIND, &service_id, &input.name).await?;
        let (siblings, _) = repo::list::<Listener>(store, &req.keys.listeners(&service_id), None, 0).await?;
        if let Some(other) = siblings.iter().find(|l| l.value.port == port) {
            return Err(ApiError::conflict(
                KIND,
                &other.value.id,
                format!("Listener {} of service {service_id} already listens on port {port}", other.value.id),
            ));
        }
        let key = req.keys.counter(KIND.prefix(), &service_id);
        let counter = Quota::ListenersPerService.check(req, key, 1, KIND, Some(&service_id)).await?;
        let id = KIND.new_id();
        let mut ledger = TgLedger::new(req, &service_id).await?;
        ledger.change(req, &id, &BTreeSet::new(), &target_groups(&action)).await?;
        let now = crate::now();
        let listener = Listener {
            arn: req.arn(KIND, &[&service_id], &id),
            id: id.clone(),
            name: input.name.clone(),
            service_id: service_id.clone(),
            service_arn: svc.value.arn.clone(),
            protocol: input.protocol,
            port,
            default_action: action.clone(),
            default_rule_id: Kind::Rule.new_id(),
            created_at: now,
            last_updated_at: now,
            tags: input.tags.clone(),
        };
        let mut tx = Tx::default();
        tx.create(req.keys.listener(&service_id, &id), &listener);
        tx.create_index(name_key, &id);
        tx.count(&counter, 1);
        // The service must still be there: its deletion may not have seen this listener.
        tx.require_unchanged(svc.key.clone(), svc.revision);
        ledger.write(req, &mut tx);
        let reply = token.remember(&mut tx, StatusCode::CREATED, body(&listener), &id);
        if attempts.commit(store, tx).await? {
            return Ok(reply);
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (service_id, listener_id) = path_ids(req)?;
    let listener = find(req, &service_id, &listener_id).await?.value;
    let mut out = body(&listener);
    out["createdAt"] = json!(listener.created_at);
    out["lastUpdatedAt"] = json!(listener.last_updated_at);
    Ok(Reply::ok(out))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let service_id = req.path_id(0, "serviceIdentifier", Kind::Service)?;
    let page = Page::new(req, req.keys.listeners(&service_id))?;
    service::find(req, &service_id).await?;
    let (items, more) = repo::list::<Listener>(req.store(), page.prefix(), page.after.as_deref(), page.limit).await?;
    let out: Vec<_> = items
        .iter()
        .map(|item| {
            let l = &item.value;
            json!({
                "arn": l.arn,
                "id": l.id,
                "name": l.name,
                "protocol": l.protocol,
                "port": l.port,
                "createdAt": l.created_at,
                "lastUpdatedAt": l.last_updated_at,
            })
        })
        .collect();
    let next = page.next_token(items.last().map(|i| i.key.as_str()), more);
    Ok(Reply::ok(json!({ "items": out, "nextToken": next })))
}

pub(crate) async fn update(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (service_id, listener_id) = path_ids(req)?;
    let input: UpdateListenerRequest = req.input()?;
    let action = parse_action(req, "defaultAction", &input.default_action)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &service_id, &listener_id).await?;
        let mut listener = read.value.clone();
        check_targets(req, "defaultAction", &action, listener.protocol).await?;
        let mut ledger = TgLedger::new(req, &service_id).await?;
        ledger.change(req, &listener.id, &target_groups(&listener.default_action), &target_groups(&action)).await?;
        listener.default_action = action.clone();
        listener.last_updated_at = crate::now();
        let mut tx = Tx::default();
        tx.update(&read, &listener);
        ledger.write(req, &mut tx);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(body(&listener)));
        }
    }
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (service_id, listener_id) = path_ids(req)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = find(req, &service_id, &listener_id).await?;
        let listener = &read.value;
        // Counters before the listing they guard (see `repo`): a rule created after this read
        // moves the counter and fails our commit, instead of slipping past the listing.
        let listeners = repo::counter(store, req.keys.counter(KIND.prefix(), &service_id)).await?;
        let rule_count = repo::counter(store, req.keys.counter(Kind::Rule.prefix(), &listener.id)).await?;
        let (rules, _) = repo::list::<Rule>(store, &req.keys.rules(&listener.id), None, 0).await?;
        let none = BTreeSet::new();
        let mut ledger = TgLedger::new(req, &service_id).await?;
        ledger.change(req, &listener.id, &target_groups(&listener.default_action), &none).await?;
        for rule in &rules {
            ledger.change(req, &rule.value.id, &target_groups(&rule.value.action), &none).await?;
        }
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.name(KIND, &service_id, &listener.name));
        tx.count(&listeners, -1);
        cascade_rules(req, &mut tx, &listener.id, &rule_count);
        ledger.write(req, &mut tx);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::no_content());
        }
    }
}

/// Adds to `tx` the deletion of every rule of a listener that goes, with their names, and the
/// retirement of its rule counter (read as `rule_count`: no rule may have come meanwhile). The
/// rules' target-group references are the caller's to end.
pub(crate) fn cascade_rules(req: &Req<'_>, tx: &mut Tx, listener_id: &str, rule_count: &repo::Counter) {
    tx.delete_prefix(req.keys.rules(listener_id));
    tx.delete_prefix(req.keys.name(Kind::Rule, listener_id, ""));
    tx.retire(rule_count);
}

/// The service and listener IDs of a request's path (`/services/{svc}/listeners/{listener}…`).
pub(crate) fn path_ids(req: &Req<'_>) -> Result<(String, String), ApiError> {
    Ok((req.path_id(0, "serviceIdentifier", Kind::Service)?, req.path_id(1, "listenerIdentifier", KIND)?))
}

/// A listener of a service; `ResourceNotFoundException` names the service if it is the service
/// that is missing.
pub(crate) async fn find(req: &Req<'_>, service_id: &str, listener_id: &str) -> Result<Versioned<Listener>, ApiError> {
    if let Some(listener) = repo::load(req.store(), &req.keys.listener(service_id, listener_id)).await? {
        return Ok(listener);
    }
    service::find(req, service_id).await?;
    Err(ApiError::not_found(KIND, listener_id))
}

/// The listener port: as given (1–65535), else 80 for HTTP and 443 for HTTPS; TLS_PASSTHROUGH
/// listeners must give one.
fn port(protocol: ListenerProtocol, port: Option<i64>) -> Result<u16, ApiError> {
    match (protocol, port) {
        (_, Some(p)) => {
            u16::try_from(p).ok().filter(|p| *p >= 1).ok_or_else(|| ApiError::field("port", "must be from 1 to 65535"))
        }
        (ListenerProtocol::Http, None) => Ok(80),
        (ListenerProtocol::Https, None) => Ok(443),
        (ListenerProtocol::TlsPassthrough, None) => {
            Err(ApiError::field("port", "is required for TLS_PASSTHROUGH listeners"))
        }
    }
}

/// The members of the Create/UpdateListener answers (GetListener adds the timestamps).
fn body(l: &Listener) -> serde_json::Value {
    json!({
        "arn": l.arn,
        "id": l.id,
        "name": l.name,
        "protocol": l.protocol,
        "port": l.port,
        "serviceArn": l.service_arn,
        "serviceId": l.service_id,
        "defaultAction": l.default_action,
    })
}

#[cfg(test)]
mod tests;
