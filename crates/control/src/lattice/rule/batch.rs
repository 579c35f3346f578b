//! BatchUpdateRule: 1–10 rule updates of one listener, answered item by item
//! (`successful[]`, `unsuccessful[]`, always 200), with every successful item written in one
//! transaction. Priorities are checked against the state after the batch, so two rules can swap
//! priorities in one call.
//!
//! The order of judgement: each item's own shape, then what it names (the rule, its target
//! groups), then priorities after the batch, then target-group ownership and quota. An item that
//! fails at any step changes nothing; when a failure puts a rule back at its old priority, the
//! priorities are judged again.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use trellis_model::lattice::{Rule, RuleAction, RuleMatch};

use super::super::{ApiError, Reply, Req, listener};
use super::{KIND, TgLedger, action, all, body, priority_taken, target_groups};
use crate::repo::{self, Attempts, Tx, Versioned};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchUpdateRuleRequest {
    rules: Vec<RuleUpdate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleUpdate {
    rule_identifier: String,
    #[serde(rename = "match")]
    rule_match: Option<RuleMatch>,
    priority: Option<i64>,
    action: Option<RuleAction>,
}

/// One item's update, checked for shape.
struct Change {
    rule_id: String,
    rule_match: Option<RuleMatch>,
    priority: Option<u32>,
    action: Option<RuleAction>,
}

pub(crate) async fn batch_update(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (service_id, listener_id) = listener::path_ids(req)?;
    let input: BatchUpdateRuleRequest = req.input()?;
    if !(1..=10).contains(&input.rules.len()) {
        return Err(ApiError::field("rules", "must hold 1 to 10 rule updates"));
    }
    let parsed: Vec<Result<Change, ApiError>> =
        input.rules.iter().enumerate().map(|(i, update)| parse(req, i, update)).collect();
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let parent = listener::find(req, &service_id, &listener_id).await?;
        let stored: BTreeMap<String, Versioned<Rule>> =
            all(req, &listener_id).await?.into_iter().map(|r| (r.value.id.clone(), r)).collect();
        let mut failed: BTreeMap<usize, ApiError> = BTreeMap::new();
        let mut changes: Vec<Option<&Change>> = Vec::with_capacity(parsed.len());
        for (i, item) in parsed.iter().enumerate() {
            let change = match item {
                Ok(change) => change,
                Err(e) => {
                    failed.insert(i, clone_error(e));
                    changes.push(None);
                    continue;
                }
            };
            if let Err(e) = judge(req, &parent.value, &stored, i, change).await {
                failed.insert(i, e);
            }
            changes.push(Some(change));
        }
        let ledger = loop {
            settle_priorities(&changes, &stored, &mut failed);
            match account(req, &service_id, &changes, &stored, &failed).await? {
                Ok(ledger) => break ledger,
                Err((i, e)) => {
                    failed.insert(i, e);
                }
            }
        };
        let now = crate::now();
        let mut finals: BTreeMap<&str, Rule> = BTreeMap::new();
        for (_, change) in live(&changes, &failed) {
            let rule = finals.entry(change.rule_id.as_str()).or_insert_with(|| stored[&change.rule_id].value.clone());
            apply(rule, change);
            rule.last_updated_at = now;
        }
        let mut tx = Tx::default();
        if !finals.is_empty() {
            for (id, rule) in &finals {
                tx.update(&stored[*id], rule);
            }
            let counter = repo::counter(store, req.keys.counter(KIND.prefix(), &listener_id)).await?;
            tx.count(&counter, 0);
            tx.require_unchanged(parent.key.clone(), parent.revision);
            ledger.write(req, &mut tx);
        }
        if !attempts.commit(store, tx).await? {
            continue;
        }
        let successful: Vec<_> = live(&changes, &failed).map(|(_, c)| body(&finals[c.rule_id.as_str()])).collect();
        let unsuccessful: Vec<_> = failed
            .iter()
            .map(|(i, e)| {
                json!({
                    "ruleIdentifier": input.rules[*i].rule_identifier,
                    "failureCode": failure_code(e),
                    "failureMessage": e.to_string(),
                })
            })
            .collect();
        return Ok(Reply::ok(json!({ "successful": successful, "unsuccessful": unsuccessful })));
    }
}

/// Checks one item's shape.
fn parse(req: &Req<'_>, i: usize, update: &RuleUpdate) -> Result<Change, ApiError> {
    let field = format!("rules[{i}]");
    let rule_id = req.resolve(&update.rule_identifier, &format!("{field}.ruleIdentifier"), KIND)?;
    if let Some(m) = &update.rule_match {
        action::check_match(&format!("{field}.match"), m)?;
    }
    let priority = update.priority.map(|p| action::check_priority(&format!("{field}.priority"), p)).transpose()?;
    let rule_action =
        update.action.as_ref().map(|a| action::parse_action(req, &format!("{field}.action"), a)).transpose()?;
    Ok(Change { rule_id, rule_match: update.rule_match.clone(), priority, action: rule_action })
}

/// Checks what one item names: a stored, non-default rule of the listener, and target groups
/// that exist and suit the listener.
async fn judge(
    req: &Req<'_>,
    parent: &trellis_model::lattice::Listener,
    stored: &BTreeMap<String, Versioned<Rule>>,
    i: usize,
    change: &Change,
) -> Result<(), ApiError> {
    if change.rule_id == parent.default_rule_id {
        return Err(ApiError::invalid(format!(
            "Rule {} is the default rule of listener {}: change it with UpdateListener",
            change.rule_id, parent.id
        )));
    }
    if !stored.contains_key(&change.rule_id) {
        return Err(ApiError::not_found(KIND, &change.rule_id));
    }
    if let Some(a) = &change.action {
        action::check_targets(req, &format!("rules[{i}].action"), a, parent.protocol).await?;
    }
    Ok(())
}

/// Fails, one at a time and latest first, the items whose priority another rule holds after the
/// batch, until none does.
fn settle_priorities(
    changes: &[Option<&Change>],
    stored: &BTreeMap<String, Versioned<Rule>>,
    failed: &mut BTreeMap<usize, ApiError>,
) {
    loop {
        let mut after: BTreeMap<&str, u32> = stored.iter().map(|(id, r)| (id.as_str(), r.value.priority)).collect();
        for (_, change) in live(changes, failed) {
            if let Some(p) = change.priority {
                after.insert(&change.rule_id, p);
            }
        }
        let clash = live(changes, failed).collect::<Vec<_>>().into_iter().rev().find_map(|(i, change)| {
            let p = change.priority.filter(|p| after.get(change.rule_id.as_str()) == Some(p))?;
            let other = after.iter().find(|(id, q)| **id != change.rule_id && **q == p)?.0;
            Some((i, priority_taken(p, other)))
        });
        match clash {
            Some((i, e)) => {
                failed.insert(i, e);
            }
            None => return,
        }
    }
}

/// Records the live items' target-group changes; `Ok(Err)` names the first item whose change
/// the references refuse (a target group of another service, or over the quota).
async fn account(
    req: &Req<'_>,
    service_id: &str,
    changes: &[Option<&Change>],
    stored: &BTreeMap<String, Versioned<Rule>>,
    failed: &BTreeMap<usize, ApiError>,
) -> Result<Result<TgLedger, (usize, ApiError)>, ApiError> {
    let mut ledger = TgLedger::new(req, service_id).await?;
    for (i, change) in live(changes, failed) {
        let Some(a) = &change.action else { continue };
        let old = target_groups(&stored[&change.rule_id].value.action);
        match ledger.change(req, &change.rule_id, &old, &target_groups(a)).await {
            Ok(()) => {}
            Err(e @ (ApiError::Conflict { .. } | ApiError::NotFound { .. } | ApiError::QuotaExceeded { .. })) => {
                return Ok(Err((i, e)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Ok(ledger))
}

/// The items not (yet) failed, with their positions.
fn live<'a>(
    changes: &'a [Option<&'a Change>],
    failed: &'a BTreeMap<usize, ApiError>,
) -> impl Iterator<Item = (usize, &'a Change)> + 'a {
    changes.iter().enumerate().filter(|(i, _)| !failed.contains_key(i)).filter_map(|(i, c)| c.map(|c| (i, c)))
}

fn apply(rule: &mut Rule, change: &Change) {
    if let Some(m) = &change.rule_match {
        rule.rule_match = m.clone();
    }
    if let Some(p) = change.priority {
        rule.priority = p;
    }
    if let Some(a) = &change.action {
        rule.action = a.clone();
    }
}

/// `RuleUpdateFailure.failureCode`: AWS documents no values; Trellis names the exception.
fn failure_code(e: &ApiError) -> &'static str {
    match e {
        ApiError::AccessDenied { .. } => "AccessDenied",
        ApiError::Conflict { .. } => "Conflict",
        ApiError::Internal { .. } => "InternalError",
        ApiError::NotFound { .. } => "ResourceNotFound",
        ApiError::QuotaExceeded { .. } => "ServiceQuotaExceeded",
        ApiError::Throttling { .. } => "Throttling",
        ApiError::Validation { .. } => "ValidationError",
    }
}

/// A copy of an item's shape error, for each attempt's answer.
fn clone_error(e: &ApiError) -> ApiError {
    match e {
        ApiError::NotFound { message, resource_id, resource_type } => ApiError::NotFound {
            message: message.clone(),
            resource_id: resource_id.clone(),
            resource_type: resource_type.clone(),
        },
        other => ApiError::invalid(other.to_string()),
    }
}
