//! Managed policies and their attachment to roles: the built-in AWS-managed policies Trellis
//! knows ([`BUILT_IN`]), AttachRolePolicy, DetachRolePolicy and ListAttachedRolePolicies.
//! Attachments live under `iam/<account>/attached/<role>/<policy-arn>`, counted by
//! `iam/<account>/count/attached/<role>` so that DeleteRole can prove none was added meanwhile.

use trellis_model::iam::{AttachedPolicy, Role};

use super::error::{Code, IamError};
use super::input::{ARN, POLICY_PATH_PREFIX, ROLE_NAME, Violations};
use super::{Req, Xml};
use trellis_store::StoreExt;

use crate::repo::{self, Attempts, Tx};

/// An AWS-managed policy Trellis serves.
#[derive(Debug)]
pub(crate) struct ManagedPolicy {
    pub(crate) name: &'static str,
    /// `/` or `/…/`.
    pub(crate) path: &'static str,
    /// The policy's (default version's) document.
    pub(crate) document: &'static str,
}

/// The managed policy ECS's infrastructure role for VPC Lattice uses (v1, 2024-11-15;
/// lattice.md §6.2).
pub(crate) const ECS_INFRASTRUCTURE_FOR_VPC_LATTICE: ManagedPolicy = ManagedPolicy {
    name: "AmazonECSInfrastructureRolePolicyForVpcLattice",
    path: "/",
    document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ManageVpcLatticeTargets",
      "Effect": "Allow",
      "Action": [
        "vpc-lattice:RegisterTargets",
        "vpc-lattice:DeregisterTargets",
        "vpc-lattice:GetTargetGroup",
        "vpc-lattice:ListTargets"
      ],
      "Resource": "arn:aws:vpc-lattice:*:*:targetgroup/*"
    },
    {
      "Sid": "DescribeEc2Resources",
      "Effect": "Allow",
      "Action": ["ec2:DescribeSubnets", "ec2:DescribeVpcs", "ec2:DescribeInstances"],
      "Resource": "*"
    }
  ]
}"#,
};

/// Every AWS-managed policy Trellis serves.
pub(crate) const BUILT_IN: &[ManagedPolicy] = &[ECS_INFRASTRUCTURE_FOR_VPC_LATTICE];

/// Roles may have this many managed policies attached (IAM's default quota).
const MAX_ATTACHED: u64 = 10;

/// The built-in policy an ARN names.
pub(crate) fn find_managed(arn: &str) -> Option<&'static ManagedPolicy> {
    BUILT_IN.iter().find(|p| p.arn() == arn)
}

/// The policy `arn` names, if it can be attached: a built-in AWS-managed policy.
fn resolve(req: &Req<'_>, arn: &str) -> Result<&'static ManagedPolicy, IamError> {
    let Some((account, resource)) = arn.strip_prefix("arn:aws:iam::").and_then(|r| r.split_once(':')) else {
        return Err(IamError::invalid(format!("ARN {arn} is not valid.")));
    };
    if !resource.starts_with("policy/") {
        return Err(IamError::invalid(format!("ARN {arn} is not valid.")));
    }
    if let Some(policy) = find_managed(arn) {
        return Ok(policy);
    }
    let message = if account == req.ctx.account {
        format!(
            "Policy {arn} does not exist or is not attachable. Trellis does not serve CreatePolicy yet: \
             only its built-in AWS-managed policies can be attached."
        )
    } else {
        format!("Policy {arn} does not exist or is not attachable.")
    };
    Err(IamError::new(Code::NoSuchEntity, message))
}

/// RoleName and PolicyArn, checked.
fn role_and_policy(req: &Req<'_>) -> Result<(String, String), IamError> {
    let mut found = Violations::default();
    let role = req.required("RoleName", &ROLE_NAME, &mut found);
    let arn = req.required("PolicyArn", &ARN, &mut found);
    found.finish()?;
    Ok((role, arn))
}

/// Loads a role; `NoSuchEntity` if there is none of that name.
pub(crate) async fn load_role(req: &Req<'_>, name: &str) -> Result<repo::Versioned<Role>, IamError> {
    repo::load::<Role>(req.store(), &req.keys.role(name)).await?.ok_or_else(|| IamError::no_role(name))
}

pub(crate) async fn attach(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let (role_name, arn) = role_and_policy(req)?;
    let policy = resolve(req, &arn)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let role = load_role(req, &role_name).await?;
        let count = repo::counter(store, req.keys.attachment_count(&role_name)).await?;
        let key = req.keys.attached(&role_name, &arn);
        if store.get(&key).await?.is_some() {
            return Ok(None);
        }
        if count.value() >= MAX_ATTACHED {
            return Err(IamError::new(
                Code::LimitExceeded,
                format!("Cannot exceed quota for PoliciesPerRole: {MAX_ATTACHED}"),
            ));
        }
        let mut tx = Tx::default();
        tx.require_unchanged(role.key.clone(), role.revision);
        tx.count(&count, 1);
        tx.create(key, &AttachedPolicy { policy_name: policy.name.to_owned(), policy_arn: arn.clone() });
        if attempts.commit(store, tx).await? {
            return Ok(None);
        }
    }
}

pub(crate) async fn detach(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let (role_name, arn) = role_and_policy(req)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        load_role(req, &role_name).await?;
        let count = repo::counter(store, req.keys.attachment_count(&role_name)).await?;
        let Some(attached) = repo::load::<AttachedPolicy>(store, &req.keys.attached(&role_name, &arn)).await? else {
            return Err(IamError::new(Code::NoSuchEntity, format!("Policy {arn} was not found.")));
        };
        let mut tx = Tx::default();
        tx.delete_read(&attached);
        tx.count(&count, -1);
        if attempts.commit(store, tx).await? {
            return Ok(None);
        }
    }
}

pub(crate) async fn list_attached(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let role_name = req.required("RoleName", &ROLE_NAME, &mut found);
    let prefix = req.optional("PathPrefix", &POLICY_PATH_PREFIX, &mut found).unwrap_or_else(|| "/".to_owned());
    let page = req.page(&mut found);
    found.finish()?;
    load_role(req, &role_name).await?;
    let (attached, _) = repo::list::<AttachedPolicy>(req.store(), &req.keys.attachments(&role_name), None, 0).await?;
    let matching = attached
        .into_iter()
        .map(|v| v.value)
        .filter(|p| policy_path(&p.policy_arn).starts_with(prefix.as_str()))
        .map(|p| (p.policy_arn.clone(), p))
        .collect();
    let (policies, next) = page.take(matching)?;
    let mut x = Xml::default();
    x.open("AttachedPolicies");
    for p in &policies {
        x.open("member").leaf("PolicyName", &p.policy_name).leaf("PolicyArn", &p.policy_arn).close("member");
    }
    x.close("AttachedPolicies");
    super::truncation(&mut x, next);
    Ok(Some(x))
}

/// The path of a policy ARN (`arn:aws:iam::aws:policy/service-role/X` → `/service-role/`).
fn policy_path(arn: &str) -> &str {
    let resource = arn.split_once(":policy").map_or("/", |(_, r)| r);
    resource.rfind('/').map_or("/", |i| &resource[..=i])
}

// === impl ManagedPolicy ===

impl ManagedPolicy {
    /// `arn:aws:iam::aws:policy<path><name>`.
    pub(crate) fn arn(&self) -> String {
        format!("arn:aws:iam::aws:policy{}{}", self.path, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_policies_parse_and_have_their_arns() {
        for policy in BUILT_IN {
            assert!(super::super::document::Document::parse(policy.document).is_ok(), "{}", policy.name);
            assert_eq!(find_managed(&policy.arn()).map(|p| p.name), Some(policy.name));
        }
        assert_eq!(
            ECS_INFRASTRUCTURE_FOR_VPC_LATTICE.arn(),
            "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice"
        );
    }

    #[test]
    fn policy_paths() {
        assert_eq!(policy_path("arn:aws:iam::aws:policy/X"), "/");
        assert_eq!(policy_path("arn:aws:iam::aws:policy/service-role/X"), "/service-role/");
    }
}
