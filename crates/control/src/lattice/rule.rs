//! Listener rules: CreateRule, GetRule, ListRules, UpdateRule, DeleteRule, and BatchUpdateRule
//! ([`batch`]).
//!
//! Rules live under their listener (`keys.rule(listener, id)`), names are unique within the
//! listener, priorities too. Every write of a listener's rules moves (or touches) the listener's
//! rule counter, so a priority check read before a commit still holds at it. Each listener's
//! default rule is not stored: it is derived from the listener (its `default_rule_id` and
//! `default_action`), named `default`, without match or priority, and is listed last.
//!
//! Also owns what listeners share with rules: checking actions and matches ([`action`]) and the
//! target-group references of a service's actions ([`refs`]).

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use trellis_model::Kind;
use trellis_model::lattice::{Listener, ListenerProtocol, Rule, RuleAction, RuleMatch, Tags};

use super::idempotency::ClientToken;
use super::input::{check_name, check_tags};
use super::listener;
use super::page::Page;
use super::quota::Quota;
use super::{ApiError, Reply, Req};
use crate::repo::{self, Attempts, Tx, Versioned};

mod action;
mod batch;
mod refs;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub(crate) use action::{check_targets, parse_action, target_groups};
pub(crate) use batch::batch_update;
pub(crate) use refs::{TgLedger, retire_service};

const KIND: Kind = Kind::Rule;

/// Where the default rule sorts among a listener's rules: after every priority (1–2000).
const DEFAULT_POSITION: u32 = 9999;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRuleRequest {
    client_token: Option<String>,
    name: String,
    #[serde(rename = "match")]
    rule_match: RuleMatch,
    priority: i64,
    action: RuleAction,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateRuleRequest {
    #[serde(rename = "match")]
    rule_match: Option<RuleMatch>,
    priority: Option<i64>,
    action: Option<RuleAction>,
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (service_id, listener_id) = listener::path_ids(req)?;
    let input: CreateRuleRequest = req.input()?;
    check_name(KIND, &input.name)?;
    check_tags("tags", &input.tags)?;
    action::check_match("match", &input.rule_match)?;
    let priority = action::check_priority("priority", input.priority)?;
    let rule_action = parse_action(req, "action", &input.action)?;
    let mut token = ClientToken::new(req, input.client_token.as_deref(), KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        if let Some(reply) = token.replay(store).await? {
            return Ok(reply);
        }
        let parent = listener::find(req, &service_id, &listener_id).await?;
        if parent.value.protocol == ListenerProtocol::TlsPassthrough {
            return Err(ApiError::invalid("A TLS_PASSTHROUGH listener has only its default rule"));
        }
        check_targets(req, "action", &rule_action, parent.value.protocol).await?;
        let name_key = req.free_name(KIND, &listener_id, &input.name).await?;
        if let Some(other) = all(req, &listener_id).await?.iter().find(|r| r.value.priority == priority) {
            return Err(priority_taken(priority, &other.value.id));
        }
        let key = req.keys.counter(KIND.prefix(), &listener_id);
        let counter = Quota::RulesPerListener.check(req, key, 1, KIND, Some(&listener_id)).await?;
        let id = KIND.new_id();
        let mut ledger = TgLedger::new(req, &service_id).await?;
        ledger.change(req, &id, &BTreeSet::new(), &target_groups(&rule_action)).await?;
        let now = crate::now();
        let rule = Rule {
            arn: format!("{}/rule/{id}", parent.value.arn),
            id: id.clone(),
            name: input.name.clone(),
            service_id: service_id.clone(),
            listener_id: listener_id.clone(),
            priority,
            rule_match: input.rule_match.clone(),
            action: rule_action.clone(),
            created_at: now,
            last_updated_at: now,
            tags: input.tags.clone(),
        };
        let mut tx = Tx::default();
        tx.create(req.keys.rule(&listener_id, &id), &rule);
        tx.create_index(name_key, &id);
        tx.count(&counter, 1);
        tx.require_unchanged(parent.key.clone(), parent.revision);
        ledger.write(req, &mut tx);
        let body = json!({
            "arn": rule.arn, "id": rule.id, "name": rule.name, "match": rule.rule_match,
            "priority": rule.priority, "action": rule.action,
        });
        let reply = token.remember(&mut tx, StatusCode::CREATED, body, &id);
        if attempts.commit(store, tx).await? {
            return Ok(reply);
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (service_id, listener_id) = listener::path_ids(req)?;
    let rule_id = req.path_id(2, "ruleIdentifier", KIND)?;
    let parent = listener::find(req, &service_id, &listener_id).await?.value;
    let out = if rule_id == parent.default_rule_id {
        default_rule(&parent)
    } else {
        let rule = find(req, &listener_id, &rule_id).await?.value;
        let mut out = body(&rule);
        out["createdAt"] = json!(rule.created_at);
        out["lastUpdatedAt"] = json!(rule.last_updated_at);
        out
    };
    Ok(Reply::ok(out))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (service_id, listener_id) = listener::path_ids(req)?;
    let prefix = req.keys.rules(&listener_id);
    let page = Page::new(req, prefix.clone())?;
    // Rules are listed by priority, not by key: the token holds the last position listed.
    let after = match page.after.as_deref() {
        None => None,
        Some(key) => Some(
            key.get(prefix.len()..)
                .and_then(|p| p.strip_prefix('~'))
                .and_then(|p| p.parse::<u32>().ok())
                .ok_or_else(|| ApiError::field("nextToken", "is not a token this listing returned"))?,
        ),
    };
    let parent = listener::find(req, &service_id, &listener_id).await?.value;
    let mut entries: Vec<(u32, serde_json::Value)> = all(req, &listener_id)
        .await?
        .into_iter()
        .map(|r| {
            let r = r.value;
            let summary = json!({
                "arn": r.arn, "id": r.id, "name": r.name, "isDefault": false, "priority": r.priority,
                "createdAt": r.created_at, "lastUpdatedAt": r.last_updated_at,
            });
            (r.priority, summary)
        })
        .collect();
    entries.push((
        DEFAULT_POSITION,
        json!({
            "arn": default_rule_arn(&parent), "id": parent.default_rule_id, "name": "default", "isDefault": true,
            "createdAt": parent.created_at, "lastUpdatedAt": parent.last_updated_at,
        }),
    ));
    entries.sort_by_key(|e| e.0);
    let mut remaining = entries.into_iter().filter(|e| after.is_none_or(|a| e.0 > a)).peekable();
    let mut items = Vec::new();
    let mut last = None;
    while items.len() < page.limit {
        let Some((position, item)) = remaining.next() else {
            break;
        };
        items.push(item);
        last = Some(format!("{prefix}~{position:04}"));
    }
    let next = page.next_token(last.as_deref(), remaining.peek().is_some());
    Ok(Reply::ok(json!({ "items": items, "nextToken": next })))
}

pub(crate) async fn update(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (service_id, listener_id) = listener::path_ids(req)?;
    let rule_id = req.path_id(2, "ruleIdentifier", KIND)?;
    let input: UpdateRuleRequest = req.input()?;
    if let Some(m) = &input.rule_match {
        action::check_match("match", m)?;
    }
    let priority = input.priority.map(|p| action::check_priority("priority", p)).transpose()?;
    let new_action = input.action.as_ref().map(|a| parse_action(req, "action", a)).transpose()?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let parent = listener::find(req, &service_id, &listener_id).await?;
        if rule_id == parent.value.default_rule_id {
            return Err(ApiError::invalid(format!(
                "Rule {rule_id} is the default rule of listener {listener_id}: change it with UpdateListener"
            )));
        }
        let read = find(req, &listener_id, &rule_id).await?;
        let mut rule = read.value.clone();
        let mut ledger = TgLedger::new(req, &service_id).await?;
        if let Some(a) = &new_action {
            check_targets(req, "action", a, parent.value.protocol).await?;
            ledger.change(req, &rule.id, &target_groups(&rule.action), &target_groups(a)).await?;
            rule.action = a.clone();
        }
        if let Some(p) = priority.filter(|p| *p != rule.priority) {
            if let Some(other) = all(req, &listener_id).await?.iter().find(|r| r.value.priority == p) {
                return Err(priority_taken(p, &other.value.id));
            }
            rule.priority = p;
        }
        if let Some(m) = &input.rule_match {
            rule.rule_match = m.clone();
        }
        rule.last_updated_at = crate::now();
        let counter = repo::counter(store, req.keys.counter(KIND.prefix(), &listener_id)).await?;
        let mut tx = Tx::default();
        tx.update(&read, &rule);
        tx.count(&counter, 0);
        tx.require_unchanged(parent.key.clone(), parent.revision);
        ledger.write(req, &mut tx);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(body(&rule)));
        }
    }
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (service_id, listener_id) = listener::path_ids(req)?;
    let rule_id = req.path_id(2, "ruleIdentifier", KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let parent = listener::find(req, &service_id, &listener_id).await?;
        if rule_id == parent.value.default_rule_id {
            return Err(ApiError::invalid(format!(
                "Rule {rule_id} is the default rule of listener {listener_id}: it goes only with the listener"
            )));
        }
        let read = find(req, &listener_id, &rule_id).await?;
        let rule = &read.value;
        let mut ledger = TgLedger::new(req, &service_id).await?;
        ledger.change(req, &rule.id, &target_groups(&rule.action), &BTreeSet::new()).await?;
        let counter = repo::counter(store, req.keys.counter(KIND.prefix(), &listener_id)).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.name(KIND, &listener_id, &rule.name));
        tx.count(&counter, -1);
        ledger.write(req, &mut tx);
        if attempts.commit(store, tx).await? {
            return Ok(Reply::no_content());
        }
    }
}

/// Every (non-default) rule of a listener.
async fn all(req: &Req<'_>, listener_id: &str) -> Result<Vec<Versioned<Rule>>, ApiError> {
    Ok(repo::list::<Rule>(req.store(), &req.keys.rules(listener_id), None, 0).await?.0)
}

async fn find(req: &Req<'_>, listener_id: &str, rule_id: &str) -> Result<Versioned<Rule>, ApiError> {
    repo::load(req.store(), &req.keys.rule(listener_id, rule_id))
        .await?
        .ok_or_else(|| ApiError::not_found(KIND, rule_id))
}

fn priority_taken(priority: u32, other: &str) -> ApiError {
    ApiError::conflict(KIND, other, format!("Priority {priority} is already used by rule {other}"))
}

/// A rule as UpdateRule and BatchUpdateRule answer it (GetRule adds the timestamps).
fn body(rule: &Rule) -> serde_json::Value {
    json!({
        "arn": rule.arn, "id": rule.id, "name": rule.name, "isDefault": false, "match": rule.rule_match,
        "priority": rule.priority, "action": rule.action,
    })
}

fn default_rule_arn(listener: &Listener) -> String {
    format!("{}/rule/{}", listener.arn, listener.default_rule_id)
}

/// The default rule of a listener as GetRule shows it: no match, no priority.
fn default_rule(listener: &Listener) -> serde_json::Value {
    json!({
        "arn": default_rule_arn(listener), "id": listener.default_rule_id, "name": "default", "isDefault": true,
        "action": listener.default_action, "createdAt": listener.created_at, "lastUpdatedAt": listener.last_updated_at,
    })
}
