//! The IAM API subset (query protocol, `Version=2010-05-08`): what ECS's infrastructure role for
//! VPC Lattice needs (issue 5) and the identities that sign requests (issue 7). Roles:
//! CreateRole, GetRole, ListRoles, DeleteRole ([`role`]); managed policies: AttachRolePolicy,
//! DetachRolePolicy, ListAttachedRolePolicies ([`policy`]); users: CreateUser, GetUser,
//! ListUsers, DeleteUser ([`user`]); access keys: CreateAccessKey, DeleteAccessKey,
//! ListAccessKeys ([`access_key`]); tags of roles and users ([`tags`]); and
//! [`check_infrastructure_role`] for the ECS API.
//!
//! Requests are not verified yet (SigV4 comes later): every call acts in the configured
//! account, and where IAM means "the caller" (GetUser or the access-key calls without
//! `UserName`), the caller is the principal of the access key the request names, else the root
//! ([`Req::caller`]).
//!
//! IAM is global: records live under `iam/<account>/` ([`crate::keys::IamKeys`]), outside
//! every region, so a role made through any region's endpoint is the same role. Each call is one
//! store transaction.
//!
//! Only the built-in AWS-managed policies ([`policy::BUILT_IN`]:
//! `AmazonECSInfrastructureRolePolicyForVpcLattice`) can be attached. Customer-managed policies
//! are out of scope: Trellis does not serve CreatePolicy yet, so attaching
//! `arn:aws:iam::<account>:policy/…` is `NoSuchEntity`, with a message that says so, as is any
//! AWS-managed policy Trellis does not know. Not served either: inline role policies, instance
//! profiles, permissions boundaries (refused with `InvalidInput`), role and user updates,
//! UpdateAccessKey (keys are always `Active`).

use axum::response::Response;
use trellis_store::Store;

use trellis_model::iam::{CredentialError, Principal};

use crate::ControlState;
use crate::dispatch::Ctx;
use crate::ec2::input::Params;
use crate::ec2::xml::Xml;
use crate::identity::{ResolveError, Resolver, root_arn};
use crate::keys::IamKeys;

mod access_key;
pub(crate) mod document;
pub(crate) mod error;
mod infra;
pub(crate) mod input;
pub(crate) mod policy;
mod role;
pub(crate) mod tags;
mod user;
pub(crate) mod xml;

pub(crate) use infra::{RoleProblem, check_infrastructure_role};

pub(crate) use error::{Code, IamError};

/// The IAM operations Trellis serves, as AWS names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    AttachRolePolicy,
    CreateAccessKey,
    CreateRole,
    CreateUser,
    DeleteAccessKey,
    DeleteRole,
    DeleteUser,
    DetachRolePolicy,
    GetRole,
    GetUser,
    ListAccessKeys,
    ListAttachedRolePolicies,
    ListRoleTags,
    ListRoles,
    ListUserTags,
    ListUsers,
    TagRole,
    TagUser,
    UntagRole,
    UntagUser,
}

/// One IAM (or STS) request: who, and its form parameters.
pub(crate) struct Req<'a> {
    pub(crate) state: &'a ControlState,
    pub(crate) ctx: &'a Ctx,
    pub(crate) keys: IamKeys,
    pub(crate) params: Params,
}

/// Who is calling (not verified): a principal and its account.
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) account: String,
}

/// Whether the form's `Action` writes (it takes the node's write turn).
pub(crate) fn is_write(form: &[(String, String)]) -> bool {
    let action = form.iter().find(|(k, _)| k == "Action").map_or("", |(_, v)| v.as_str());
    !(action.starts_with("Get") || action.starts_with("List"))
}

/// Handles one IAM request.
pub(crate) async fn handle(state: &ControlState, ctx: &Ctx, form: Vec<(String, String)>) -> Response {
    let req = Req::new(state, ctx, form);
    let action = req.params.get("Action").unwrap_or_default().to_owned();
    let result = match Operation::parse(&action) {
        Some(op) => dispatch(op, &req).await,
        None if action.is_empty() => {
            Err(IamError::new(Code::MissingAction, "The request must contain the parameter Action"))
        }
        None => {
            Err(IamError::new(Code::InvalidAction, format!("The action {action} is not valid for this web service.")))
        }
    };
    respond(xml::IAM, &action, ctx, result)
}

/// The answer to an IAM or STS request (`namespace`), logging a failure once, here.
pub(crate) fn respond(namespace: &str, action: &str, ctx: &Ctx, result: Result<Option<Xml>, IamError>) -> Response {
    match result {
        Ok(body) => xml::success(namespace, action, &ctx.request_id, body.as_ref()),
        Err(err) => {
            if err.code == Code::ServiceFailure {
                // Handled here, so logged here: a person should look at a store failure.
                tracing::error!(message = %err.message, %action, "IAM/STS API request failed");
            } else {
                tracing::debug!(code = err.code.as_str(), message = %err.message, %action, "IAM/STS API request refused");
            }
            xml::failure(namespace, &err, &ctx.request_id)
        }
    }
}

/// Runs an operation: its `<{Op}Result>` members, or `None` for operations without output.
async fn dispatch(op: Operation, req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    use Operation::*;
    match op {
        AttachRolePolicy => policy::attach(req).await,
        CreateAccessKey => access_key::create(req).await,
        CreateRole => role::create(req).await,
        CreateUser => user::create(req).await,
        DeleteAccessKey => access_key::delete(req).await,
        DeleteRole => role::delete(req).await,
        DeleteUser => user::delete(req).await,
        DetachRolePolicy => policy::detach(req).await,
        GetRole => role::get(req).await,
        GetUser => user::get(req).await,
        ListAccessKeys => access_key::list(req).await,
        ListAttachedRolePolicies => policy::list_attached(req).await,
        ListRoleTags => tags::list_role_tags(req).await,
        ListRoles => role::list(req).await,
        ListUserTags => tags::list_user_tags(req).await,
        ListUsers => user::list(req).await,
        TagRole => tags::tag_role(req).await,
        TagUser => tags::tag_user(req).await,
        UntagRole => tags::untag_role(req).await,
        UntagUser => tags::untag_user(req).await,
    }
}

/// ListUsers and ListRoles: the records under `store_prefix` whose path (`path_and_name`'s
/// first) starts with the request's `PathPrefix`, paged in name order, each rendered by
/// `render` inside `<wrapper>`.
pub(crate) async fn list_by_path<T: serde::de::DeserializeOwned>(
    req: &Req<'_>,
    store_prefix: &str,
    wrapper: &str,
    path_and_name: impl Fn(&T) -> (&str, &str),
    render: impl Fn(&mut Xml, &T),
) -> Result<Option<Xml>, IamError> {
    let mut found = input::Violations::default();
    let prefix = req.optional("PathPrefix", &input::PATH_PREFIX, &mut found).unwrap_or_else(|| "/".to_owned());
    let page = req.page(&mut found);
    found.finish()?;
    let (records, _) = crate::repo::list::<T>(req.store(), store_prefix, None, 0).await?;
    let matching = records
        .into_iter()
        .map(|v| v.value)
        .filter(|r| path_and_name(r).0.starts_with(prefix.as_str()))
        .map(|r| (path_and_name(&r).1.to_ascii_lowercase(), r))
        .collect();
    let (records, next) = page.take(matching)?;
    let mut x = Xml::default();
    x.open(wrapper);
    for r in &records {
        render(&mut x, r);
    }
    x.close(wrapper);
    truncation(&mut x, next);
    Ok(Some(x))
}

/// `<IsTruncated>` and, when truncated, the `<Marker>` of the next page.
pub(crate) fn truncation(x: &mut Xml, next: Option<String>) {
    x.flag("IsTruncated", next.is_some());
    if let Some(marker) = next {
        x.leaf("Marker", &marker);
    }
}

// === impl Operation ===

impl Operation {
    const ALL: [Self; 20] = [
        Self::AttachRolePolicy,
        Self::CreateAccessKey,
        Self::CreateRole,
        Self::CreateUser,
        Self::DeleteAccessKey,
        Self::DeleteRole,
        Self::DeleteUser,
        Self::DetachRolePolicy,
        Self::GetRole,
        Self::GetUser,
        Self::ListAccessKeys,
        Self::ListAttachedRolePolicies,
        Self::ListRoleTags,
        Self::ListRoles,
        Self::ListUserTags,
        Self::ListUsers,
        Self::TagRole,
        Self::TagUser,
        Self::UntagRole,
        Self::UntagUser,
    ];

    /// The operation an `Action` names.
    fn parse(action: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| format!("{op:?}") == action)
    }
}

// === impl Req ===

impl<'a> Req<'a> {
    /// The request of `form` in `ctx`'s account.
    pub(crate) fn new(state: &'a ControlState, ctx: &'a Ctx, form: Vec<(String, String)>) -> Self {
        Self { state, ctx, keys: IamKeys::new(&ctx.account), params: Params::new(form) }
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }

    /// Who is calling: the principal of the access key the request names, if Trellis knows
    /// it; otherwise (no key, or one Trellis never issued) the root, as every unverified call
    /// acts in the configured account. A known session whose token is missing or wrong is
    /// `InvalidClientTokenId`, an expired one `ExpiredToken`, as AWS answers them.
    pub(crate) async fn caller(&self) -> Result<Caller, IamError> {
        let root = || Caller {
            principal: Principal::Root { arn: root_arn(&self.ctx.account) },
            account: self.ctx.account.clone(),
        };
        let Some(key) = &self.ctx.access_key_id else { return Ok(root()) };
        let resolver = Resolver::new(self.state.store.clone(), self.state.config.organization_id.clone());
        match resolver.resolve(key, self.ctx.session_token.as_deref()).await {
            Ok(identity) => Ok(Caller { principal: identity.principal.clone(), account: identity.account.clone() }),
            Err(ResolveError::Credential(CredentialError::UnknownKey)) => Ok(root()),
            Err(ResolveError::Credential(CredentialError::Expired)) => {
                Err(IamError::new(Code::ExpiredToken, "The security token included in the request is expired"))
            }
            Err(ResolveError::Credential(_)) => {
                Err(IamError::new(Code::InvalidClientTokenId, "The security token included in the request is invalid."))
            }
            Err(ResolveError::Store(e)) => Err(IamError::new(Code::ServiceFailure, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
