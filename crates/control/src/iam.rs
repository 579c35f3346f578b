//! The IAM API subset (query protocol, `Version=2010-05-08`): what ECS's infrastructure role for
//! VPC Lattice needs (issue 5). Roles: CreateRole, GetRole, ListRoles, DeleteRole ([`role`]);
//! managed policies: AttachRolePolicy, DetachRolePolicy, ListAttachedRolePolicies ([`policy`]);
//! and [`check_infrastructure_role`] for the ECS API.
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
//! profiles, permissions boundaries (refused with `InvalidInput`), role updates and tagging calls.

use axum::response::Response;
use trellis_store::Store;

use crate::ControlState;
use crate::dispatch::Ctx;
use crate::ec2::input::Params;
use crate::ec2::xml::Xml;
use crate::keys::IamKeys;

mod document;
mod error;
mod infra;
mod input;
mod policy;
mod role;
mod xml;

pub(crate) use infra::{RoleProblem, check_infrastructure_role};

use error::{Code, IamError};

/// The IAM operations Trellis serves, as AWS names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    AttachRolePolicy,
    CreateRole,
    DeleteRole,
    DetachRolePolicy,
    GetRole,
    ListAttachedRolePolicies,
    ListRoles,
}

/// One IAM request: who, and its form parameters.
pub(crate) struct Req<'a> {
    state: &'a ControlState,
    ctx: &'a Ctx,
    keys: IamKeys,
    params: Params,
}

/// Whether the form's `Action` writes (it takes the node's write turn).
pub(crate) fn is_write(form: &[(String, String)]) -> bool {
    let action = form.iter().find(|(k, _)| k == "Action").map_or("", |(_, v)| v.as_str());
    !(action.starts_with("Get") || action.starts_with("List"))
}

/// Handles one IAM request.
pub(crate) async fn handle(state: &ControlState, ctx: &Ctx, form: Vec<(String, String)>) -> Response {
    let params = Params::new(form);
    let action = params.get("Action").unwrap_or_default().to_owned();
    let req = Req { state, ctx, keys: IamKeys::new(&ctx.account), params };
    let result = match Operation::parse(&action) {
        Some(op) => dispatch(op, &req).await,
        None if action.is_empty() => {
            Err(IamError::new(Code::MissingAction, "The request must contain the parameter Action"))
        }
        None => {
            Err(IamError::new(Code::InvalidAction, format!("The action {action} is not valid for this web service.")))
        }
    };
    match result {
        Ok(body) => xml::success(&action, &ctx.request_id, body.as_ref()),
        Err(err) => {
            if err.code == Code::ServiceFailure {
                // Handled here, so logged here: a person should look at a store failure.
                tracing::error!(message = %err.message, %action, "IAM API request failed");
            } else {
                tracing::debug!(code = err.code.as_str(), message = %err.message, %action, "IAM API request refused");
            }
            xml::failure(&err, &ctx.request_id)
        }
    }
}

/// Runs an operation: its `<{Op}Result>` members, or `None` for operations without output.
async fn dispatch(op: Operation, req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    use Operation::*;
    match op {
        AttachRolePolicy => policy::attach(req).await,
        CreateRole => role::create(req).await,
        DeleteRole => role::delete(req).await,
        DetachRolePolicy => policy::detach(req).await,
        GetRole => role::get(req).await,
        ListAttachedRolePolicies => policy::list_attached(req).await,
        ListRoles => role::list(req).await,
    }
}

/// `<IsTruncated>` and, when truncated, the `<Marker>` of the next page.
fn truncation(x: &mut Xml, next: Option<String>) {
    x.flag("IsTruncated", next.is_some());
    if let Some(marker) = next {
        x.leaf("Marker", &marker);
    }
}

// === impl Operation ===

impl Operation {
    const ALL: [Self; 7] = [
        Self::AttachRolePolicy,
        Self::CreateRole,
        Self::DeleteRole,
        Self::DetachRolePolicy,
        Self::GetRole,
        Self::ListAttachedRolePolicies,
        Self::ListRoles,
    ];

    /// The operation an `Action` names.
    fn parse(action: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| format!("{op:?}") == action)
    }
}

// === impl Req ===

impl Req<'_> {
    fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }
}

#[cfg(test)]
mod tests;
