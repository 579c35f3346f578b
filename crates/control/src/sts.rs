//! The STS API subset (query protocol, `Version=2011-06-15`, signing name `sts`):
//! GetCallerIdentity and AssumeRole of the account's IAM roles. It shares IAM's envelopes,
//! errors and parameter checks ([`crate::iam`]) in its own XML namespace.
//!
//! Requests are not verified yet: the caller is the principal of the access key the request
//! names, if Trellis issued it, else the account's root ([`crate::iam::Req::caller`]).
//!
//! AssumeRole answers temporary credentials (`ASIA…`, a secret, a session token, an expiry)
//! stored under `cred/<key id>` like access keys, so that the identity resolver finds them.
//! The role's trust policy must allow the caller `sts:AssumeRole`
//! ([`crate::iam::document::Document::trusts_principal`]). Not served: session policies
//! (`Policy`, `PolicyArns` are accepted and ignored: with no identity-based policies there is
//! nothing for them to narrow), MFA (`SerialNumber`, `TokenCode`), `ProvidedContexts`,
//! `TransitiveTagKeys`, `SourceIdentity`.

use axum::response::Response;
use trellis_model::iam::{Credential, Owner, Principal, new_secret, new_session_key_id, new_session_token};

use crate::ControlState;
use crate::dispatch::Ctx;
use crate::ec2::xml::Xml;
use crate::iam::document::{Document, TrustedCaller};
use crate::iam::input::{ROLE_ARN, ROLE_SESSION_NAME, Violations};
use crate::iam::policy::load_role;
use crate::iam::tags::{check_tags, tags};
use crate::iam::{Code, IamError, Req, respond, xml};
use crate::identity::{assumed_role_arn, expiry_in};
use crate::keys;
use crate::repo::{Attempts, Tx};

/// Default session length.
const DEFAULT_DURATION: u32 = 3600;
/// Longest session of a role assumed by a role session (role chaining).
const CHAINED_MAX: u32 = 3600;

/// The STS operations Trellis serves, as AWS names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    AssumeRole,
    GetCallerIdentity,
}

/// Whether the form's `Action` writes (it takes the node's write turn).
pub(crate) fn is_write(form: &[(String, String)]) -> bool {
    form.iter().any(|(k, v)| k == "Action" && v == "AssumeRole")
}

/// Handles one STS request.
pub(crate) async fn handle(state: &ControlState, ctx: &Ctx, form: Vec<(String, String)>) -> Response {
    let req = Req::new(state, ctx, form);
    let action = req.params.get("Action").unwrap_or_default().to_owned();
    let result = match action.as_str() {
        "AssumeRole" => dispatch(Operation::AssumeRole, &req).await,
        "GetCallerIdentity" => dispatch(Operation::GetCallerIdentity, &req).await,
        "" => Err(IamError::new(Code::MissingAction, "The request must contain the parameter Action")),
        other => {
            Err(IamError::new(Code::InvalidAction, format!("Could not find operation {other} for version 2011-06-15")))
        }
    };
    respond(xml::STS, &action, ctx, result)
}

async fn dispatch(op: Operation, req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    match op {
        Operation::AssumeRole => assume_role(req).await,
        Operation::GetCallerIdentity => caller_identity(req).await,
    }
}

async fn caller_identity(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let caller = req.caller().await?;
    let mut x = Xml::default();
    x.leaf("UserId", caller.principal.user_id(&caller.account))
        .leaf("Account", &caller.account)
        .leaf("Arn", caller.principal.arn());
    Ok(Some(x))
}

async fn assume_role(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let role_arn = req.required("RoleArn", &ROLE_ARN, &mut found);
    let session_name = req.required("RoleSessionName", &ROLE_SESSION_NAME, &mut found);
    let duration = req.integer("DurationSeconds", "durationSeconds", 900, 43_200, &mut found);
    let session_tags = tags(req, &mut found);
    found.finish()?;
    let session_tags = check_tags(session_tags, "SessionTags")?;
    let caller = req.caller().await?;
    let denied = || {
        IamError::new(
            Code::AccessDenied,
            format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                caller.principal.arn()
            ),
        )
    };
    // `arn:aws:iam::<account>:role/<path><name>`: a role of another account, or none of that
    // name, is a role the caller may not assume (AWS says no more than that either).
    let Some(name) = role_name(&role_arn, &req.ctx.account) else {
        return Err(if role_arn.starts_with("arn:") { denied() } else { invalid_arn(&role_arn) });
    };
    let role = match load_role(req, name).await {
        Ok(role) if role.value.arn == role_arn => role,
        Ok(_) => return Err(denied()),
        Err(e) if e.code == Code::NoSuchEntity => return Err(denied()),
        Err(e) => return Err(e),
    };
    let trust = Document::parse(&role.value.assume_role_policy_document).map_err(|_| denied())?;
    let who = TrustedCaller {
        account: &caller.account,
        arn: caller.principal.arn(),
        role_arn: match &caller.principal {
            Principal::AssumedRole { role_arn, .. } => Some(role_arn),
            _ => None,
        },
    };
    if !trust.trusts_principal(&who, "sts:AssumeRole") {
        return Err(denied());
    }
    let chained = matches!(caller.principal, Principal::AssumedRole { .. });
    let duration = duration.unwrap_or(DEFAULT_DURATION);
    if chained && duration > CHAINED_MAX {
        return Err(IamError::new(
            Code::ValidationError,
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
        ));
    }
    if duration > role.value.max_session_duration {
        return Err(IamError::new(
            Code::ValidationError,
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ));
    }
    let role = role.value;
    let credential = Credential {
        access_key_id: new_session_key_id(),
        secret_access_key: new_secret(),
        account: req.ctx.account.clone(),
        owner: Owner::AssumedRole {
            role_name: role.role_name.clone(),
            role_arn: role.arn.clone(),
            role_id: role.role_id.clone(),
            session_name: session_name.clone(),
            session_tags,
        },
        status: "Active".to_owned(),
        create_date: crate::now(),
        expiration: Some(expiry_in(duration)),
        session_token: Some(new_session_token()),
    };
    let mut tx = Tx::default();
    tx.create(keys::credential(&credential.access_key_id), &credential);
    // A fresh random key ID cannot collide but for a broken RNG; one attempt says so.
    if !Attempts::default().commit(req.store(), tx).await? {
        return Err(IamError::new(Code::ServiceFailure, "a session key ID collided; try again"));
    }
    let mut x = Xml::default();
    x.open("Credentials")
        .leaf("AccessKeyId", &credential.access_key_id)
        .leaf("SecretAccessKey", &credential.secret_access_key)
        .leaf("SessionToken", credential.session_token.as_deref().unwrap_or_default())
        .leaf("Expiration", &credential.expiration.unwrap_or_default().iso8601())
        .close("Credentials");
    x.open("AssumedRoleUser")
        .leaf("AssumedRoleId", &format!("{}:{session_name}", role.role_id))
        .leaf("Arn", &assumed_role_arn(&req.ctx.account, &role.role_name, &session_name))
        .close("AssumedRoleUser");
    Ok(Some(x))
}

/// The role name of `arn:aws:iam::<account>:role/<path><name>` in `account`.
fn role_name<'a>(arn: &'a str, account: &str) -> Option<&'a str> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (acct, resource) = rest.split_once(':')?;
    let path_and_name = resource.strip_prefix("role/")?;
    let name = path_and_name.rsplit('/').next()?;
    (acct == account && !name.is_empty()).then_some(name)
}

fn invalid_arn(arn: &str) -> IamError {
    IamError::new(Code::ValidationError, format!("{arn} is invalid"))
}

#[cfg(test)]
mod tests;
