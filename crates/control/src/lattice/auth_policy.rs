//! Auth policies: PutAuthPolicy, GetAuthPolicy, DeleteAuthPolicy. One policy document per service
//! network or service, stored under `keys.auth_policy(id)` and deleted with its owner (see
//! `service_network::cascade_policy_and_logs`). Documents are checked by compiling them
//! with `trellis_model::policy`, as the data plane does to evaluate them.
//!
//! Also owns [`Owner`]: resolving the `resourceIdentifier` that auth policies and access log
//! subscriptions share (a service network or service, by ID or ARN).

use serde::Deserialize;
use serde_json::{Value, json};
use trellis_model::lattice::{AuthPolicy, AuthType};
use trellis_model::{Arn, Kind};

use super::{ApiError, Reply, Req};
use crate::repo::{self, Attempts, Tx, Versioned};

/// The service network or service an auth policy or access log subscription belongs to.
pub(super) struct Owner {
    pub(super) kind: Kind,
    pub(super) id: String,
    pub(super) arn: String,
    pub(super) auth_type: AuthType,
    /// The stored record, to compare at commit (or rewrite unchanged, to serialize writers).
    pub(super) read: Versioned<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutAuthPolicyRequest {
    policy: String,
}

pub(crate) async fn put(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (kind, id) = owner_id(req, path_ident(req), FIELD)?;
    let input: PutAuthPolicyRequest = req.input()?;
    check_policy(&input.policy)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let owner = find_owner(req, kind, &id).await?;
        let key = req.keys.auth_policy(&id);
        let existing = repo::load::<AuthPolicy>(store, &key).await?;
        let now = crate::now();
        let mut tx = Tx::default();
        // The owner must still be there at commit: its delete removes the policy, and a policy
        // written after that would be orphaned.
        tx.require_unchanged(owner.read.key.clone(), owner.read.revision);
        let created_at = existing.as_ref().map_or(now, |read| read.value.created_at);
        let policy = AuthPolicy { policy: input.policy.clone(), created_at, last_updated_at: now };
        match &existing {
            Some(read) => tx.update(read, &policy),
            None => tx.create(key, &policy),
        }
        if attempts.commit(store, tx).await? {
            return Ok(Reply::ok(json!({ "policy": input.policy, "state": state(&owner) })));
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (kind, id) = owner_id(req, path_ident(req), FIELD)?;
    let owner = find_owner(req, kind, &id).await?;
    match repo::load::<AuthPolicy>(req.store(), &req.keys.auth_policy(&id)).await? {
        Some(read) => Ok(Reply::ok(json!({
            "policy": read.value.policy,
            "state": state(&owner),
            "createdAt": read.value.created_at,
            "lastUpdatedAt": read.value.last_updated_at,
        }))),
        // AWS answers 200 without a `policy` when none is set, not ResourceNotFoundException
        // (hashicorp/terraform-provider-aws#49721 found this against AWS; its reader treats both
        // a 404 and a missing policy as "gone").
        None => Ok(Reply::ok(json!({}))),
    }
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    let (kind, id) = owner_id(req, path_ident(req), FIELD)?;
    let mut attempts = Attempts::default();
    loop {
        find_owner(req, kind, &id).await?;
        // Deleting a policy that is not there succeeds too: what the caller asked for holds.
        let mut tx = Tx::default();
        tx.delete(req.keys.auth_policy(&id));
        if attempts.commit(req.store(), tx).await? {
            return Ok(Reply::no_content());
        }
    }
}

const FIELD: &str = "resourceIdentifier";

fn path_ident<'a>(req: &'a Req<'_>) -> &'a str {
    req.path.first().map(String::as_str).unwrap_or_default()
}

/// `Active` when the owner's auth type is `AWS_IAM`, else `Inactive`.
fn state(owner: &Owner) -> &'static str {
    match owner.auth_type {
        AuthType::AwsIam => "Active",
        AuthType::None => "Inactive",
    }
}

/// Resolves a `resourceIdentifier` (the ID or ARN of a service network or service) to its kind
/// and ID. Anything else (resource configurations included: Trellis has none) is a
/// `ValidationException` naming `field`.
pub(super) fn owner_id(req: &Req<'_>, ident: &str, field: &str) -> Result<(Kind, String), ApiError> {
    let kind = if ident.starts_with("sn-") {
        Some(Kind::ServiceNetwork)
    } else if ident.starts_with("svc-") {
        Some(Kind::Service)
    } else {
        Arn::parse(ident).and_then(|arn| match arn.lattice_path()?.as_slice() {
            [(kind @ (Kind::ServiceNetwork | Kind::Service), _)] => Some(*kind),
            _ => None,
        })
    };
    let kind = kind.ok_or_else(|| {
        ApiError::field(field, format!("{ident:?} is not the ID or ARN of a service network or service"))
    })?;
    Ok((kind, req.resolve(ident, field, kind)?))
}

/// Loads the owner named by [`owner_id`]; `ResourceNotFoundException` if it is not there.
pub(super) async fn find_owner(req: &Req<'_>, kind: Kind, id: &str) -> Result<Owner, ApiError> {
    let read = repo::load::<Value>(req.store(), &req.keys.res(kind, id))
        .await?
        .ok_or_else(|| ApiError::not_found(kind, id))?;
    let arn = read.value.get("arn").and_then(Value::as_str).map_or_else(|| req.arn(kind, &[], id), str::to_owned);
    let auth_type =
        read.value.get("authType").cloned().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    Ok(Owner { kind, id: id.to_owned(), arn, auth_type, read })
}

/// Checks a policy document by compiling it as the data plane will (`trellis_model::policy`): at
/// most 10 KB, JSON, the IAM grammar subset Lattice evaluates; the message says what is wrong.
/// Whitespace and newlines are accepted although AWS documents that they must not appear:
/// `--policy file://policy.json` sends them, and they change nothing.
fn check_policy(policy: &str) -> Result<(), ApiError> {
    trellis_model::policy::Policy::compile(policy).map(drop).map_err(|e| ApiError::field("policy", e.0))
}

#[cfg(test)]
mod tests;
