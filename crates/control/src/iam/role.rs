//! Roles: CreateRole, GetRole, ListRoles and DeleteRole. A role lives under
//! `iam/<account>/role/<name in lowercase>`, which makes names unique regardless of case, as
//! in AWS; its trust policy is stored as sent and returned percent-encoded, as AWS returns it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use trellis_model::iam::{Role, new_role_id};

use super::document::check_trust_policy;
use super::error::{Code, IamError};
use super::input::{ARN, DESCRIPTION, PATH, POLICY_DOCUMENT, ROLE_NAME, Violations};
use super::policy::load_role;
use super::tags::{check_tags, tags};
use super::{Req, Xml};
use trellis_store::StoreExt;

use crate::repo::{self, Attempts, Tx};

/// Characters of a trust policy, whitespace not counted (IAM's default `ACLSizePerRole`).
const MAX_TRUST_POLICY: usize = 2048;
/// Everything but RFC 3986's unreserved characters is escaped, spaces as `%20` (botocore
/// decodes with `unquote`, not `unquote_plus`).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Which members a `Role` is shown with: ListRoles leaves out tags and `RoleLastUsed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detail {
    Full,
    Listed,
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let name = req.required("RoleName", &ROLE_NAME, &mut found);
    let path = req.optional("Path", &PATH, &mut found).unwrap_or_else(|| "/".to_owned());
    let document = req.required("AssumeRolePolicyDocument", &POLICY_DOCUMENT, &mut found);
    let description = req.optional("Description", &DESCRIPTION, &mut found);
    let max_session = req.integer("MaxSessionDuration", "maxSessionDuration", 3600, 43_200, &mut found);
    let boundary = req.optional("PermissionsBoundary", &ARN.named("permissionsBoundary"), &mut found);
    let tags = tags(req, &mut found);
    found.finish()?;
    let tags = check_tags(tags, "TagsPerRole")?;
    if boundary.is_some() {
        return Err(IamError::invalid("Trellis does not serve permissions boundaries."));
    }
    if document.chars().filter(|c| !c.is_whitespace()).count() > MAX_TRUST_POLICY {
        return Err(IamError::new(
            Code::LimitExceeded,
            format!("Cannot exceed quota for ACLSizePerRole: {MAX_TRUST_POLICY}"),
        ));
    }
    check_trust_policy(&document)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let key = req.keys.role(&name);
        if store.get(&key).await?.is_some() {
            return Err(IamError::new(Code::EntityAlreadyExists, format!("Role with name {name} already exists.")));
        }
        let role = Role {
            role_name: name.clone(),
            role_id: new_role_id(),
            arn: format!("arn:aws:iam::{}:role{path}{name}", req.ctx.account),
            path: path.clone(),
            create_date: crate::now(),
            assume_role_policy_document: document.clone(),
            description: description.clone().filter(|d| !d.is_empty()),
            max_session_duration: max_session.unwrap_or(3600),
            tags: tags.clone(),
        };
        let mut tx = Tx::default();
        tx.create(key, &role);
        if attempts.commit(store, tx).await? {
            let mut x = Xml::default();
            render(&mut x, &role, "Role", Detail::Full);
            return Ok(Some(x));
        }
    }
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let name = req.required("RoleName", &ROLE_NAME, &mut found);
    found.finish()?;
    let role = load_role(req, &name).await?;
    let mut x = Xml::default();
    render(&mut x, &role.value, "Role", Detail::Full);
    Ok(Some(x))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    fn path_and_name(r: &Role) -> (&str, &str) {
        (&r.path, &r.role_name)
    }
    super::list_by_path(req, &req.keys.roles(), "Roles", path_and_name, |x, r| render(x, r, "member", Detail::Listed))
        .await
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let name = req.required("RoleName", &ROLE_NAME, &mut found);
    found.finish()?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let role = load_role(req, &name).await?;
        let attached = repo::counter(store, req.keys.attachment_count(&name)).await?;
        if attached.value() > 0 {
            return Err(IamError::new(Code::DeleteConflict, "Cannot delete entity, must detach all policies first."));
        }
        let mut tx = Tx::default();
        tx.delete_read(&role);
        // Read as zero and still so at commit: nothing was attached meanwhile.
        tx.retire(&attached);
        if attempts.commit(store, tx).await? {
            return Ok(None);
        }
    }
}

/// A `Role` structure as element `element`.
fn render(x: &mut Xml, role: &Role, element: &str, detail: Detail) {
    x.open(element)
        .leaf("Path", &role.path)
        .leaf("RoleName", &role.role_name)
        .leaf("RoleId", &role.role_id)
        .leaf("Arn", &role.arn)
        .leaf("CreateDate", &role.create_date.iso8601())
        .leaf("AssumeRolePolicyDocument", &utf8_percent_encode(&role.assume_role_policy_document, ENCODE).to_string());
    if let Some(description) = &role.description {
        x.leaf("Description", description);
    }
    x.number("MaxSessionDuration", u64::from(role.max_session_duration));
    if detail == Detail::Full {
        if !role.tags.is_empty() {
            super::tags::render(x, &role.tags);
        }
        x.open("RoleLastUsed").close("RoleLastUsed");
    }
    x.close(element);
}
