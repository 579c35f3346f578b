//! The question ECS asks before it uses a role for VPC Lattice ([`check_infrastructure_role`]):
//! does the role exist, does it trust `ecs.amazonaws.com`, and do its attached policies grant
//! what ECS calls on the role's behalf.

use trellis_model::iam::{AttachedPolicy, Role};
use trellis_store::{Store, StoreExt};

use super::document::Document;
use super::policy::find_managed;
use crate::keys::IamKeys;

/// The Lattice actions ECS performs with the infrastructure role (lattice.md §6.2).
const NEEDED: [&str; 4] = [
    "vpc-lattice:RegisterTargets",
    "vpc-lattice:DeregisterTargets",
    "vpc-lattice:GetTargetGroup",
    "vpc-lattice:ListTargets",
];

/// Why a role cannot be ECS's infrastructure role for VPC Lattice, as ECS words it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoleProblem {
    NotFound,
    NotTrusted,
    MissingPermissions,
}

/// Checks `role_arn` (in `account`) is an infrastructure role ECS can use for VPC Lattice: it exists, its trust policy allows `ecs.amazonaws.com` to `sts:AssumeRole` (Principal.Service string or list; Effect Allow), and the attached policies grant vpc-lattice:RegisterTargets, DeregisterTargets, GetTargetGroup and ListTargets (the built-in managed policy does).
pub(crate) async fn check_infrastructure_role(
    store: &dyn trellis_store::Store,
    account: &str,
    role_arn: &str,
) -> Result<Result<(), RoleProblem>, trellis_store::Error> {
    let Some((path, name)) = parse_role_arn(account, role_arn) else {
        return Ok(Err(RoleProblem::NotFound));
    };
    let keys = IamKeys::new(account);
    let Some(kv) = store.get(&keys.role(name)).await? else {
        return Ok(Err(RoleProblem::NotFound));
    };
    let role: Role = decode(&kv.key, &kv.value)?;
    if role.path != path {
        return Ok(Err(RoleProblem::NotFound));
    }
    let trusted = Document::parse(&role.assume_role_policy_document)
        .is_ok_and(|doc| doc.trusts_service("ecs.amazonaws.com", "sts:AssumeRole"));
    if !trusted {
        return Ok(Err(RoleProblem::NotTrusted));
    }
    let policies = attached_documents(store, &keys, name).await?;
    if NEEDED.iter().all(|action| Document::grants(&policies, action)) {
        Ok(Ok(()))
    } else {
        Ok(Err(RoleProblem::MissingPermissions))
    }
}

/// `(path, name)` of `arn:aws:iam::<account>:role<path><name>`.
fn parse_role_arn<'a>(account: &str, arn: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?.strip_prefix(account)?.strip_prefix(":role")?;
    let slash = rest.rfind('/')?;
    let (path, name) = (&rest[..=slash], &rest[slash + 1..]);
    (path.starts_with('/') && !name.is_empty()).then_some((path, name))
}

/// The documents of the policies attached to a role (built-in ones; nothing else can be
/// attached yet).
async fn attached_documents(
    store: &dyn Store,
    keys: &IamKeys,
    role: &str,
) -> Result<Vec<Document>, trellis_store::Error> {
    let listing = store.list_prefix(&keys.attachments(role), None, 0).await?;
    let mut documents = Vec::new();
    for kv in listing.kvs {
        let attached: AttachedPolicy = decode(&kv.key, &kv.value)?;
        if let Some(doc) = find_managed(&attached.policy_arn).and_then(|p| Document::parse(p.document).ok()) {
            documents.push(doc);
        }
    }
    Ok(documents)
}

/// A stored record; one that does not decode is a corrupt store.
fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, trellis_store::Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| trellis_store::Error::Backend(format!("stored value under {key} is unreadable: {e}")))
}

#[cfg(test)]
mod tests;
