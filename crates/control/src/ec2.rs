//! The EC2 network API subset (EC2's query protocol): VPCs, subnets, security groups and tags.
//!
//! A request is a form (`Action=CreateVpc&CidrBlock=…`); [`handle`] finds its [`Operation`],
//! runs the handler, and renders the XML answer or error ([`xml`]). Records are the model's
//! `trellis_model::ec2` types, stored under `keys.res(Kind::Vpc | Subnet | SecurityGroup, id)`
//! where the Lattice handlers read them. Subnets and security groups are indexed under their
//! VPC (`ref/vpc-subnet/…`, `ref/vpc-sg/…` with counters); security group names are unique
//! within a VPC (`name/sg/<vpc>/<name>`).

use axum::response::Response;
use trellis_store::Store;

use crate::ControlState;
use crate::dispatch::Ctx;
use crate::keys::Keys;

mod error;
mod filter;
pub(crate) mod input;
mod page;
mod security_group;
mod subnet;
mod tags;
mod vpc;
pub(crate) mod xml;

use error::{Code, Ec2Error};
use input::Params;
use xml::Xml;

/// Relation and counter names of the EC2 resources (`ref/<rel>/<from>/<to>`, `count/<rel>/<from>`).
pub(crate) mod rel {
    /// VPC → its subnets.
    pub(crate) const VPC_SUBNET: &str = "vpc-subnet";
    /// VPC → its security groups (the default one included).
    pub(crate) const VPC_SG: &str = "vpc-sg";
    /// Counter only: what uses a subnet (nothing yet; a subnet is deletable while it is zero).
    pub(crate) const SUBNET_USERS: &str = "subnet-users";
    /// Counter only: what uses a security group (Lattice VPC associations).
    pub(crate) const SG_USERS: &str = "sg-users";
}

/// The EC2 operations Trellis serves, as AWS names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    CreateSecurityGroup,
    CreateSubnet,
    CreateTags,
    CreateVpc,
    DeleteSecurityGroup,
    DeleteSubnet,
    DeleteTags,
    DeleteVpc,
    DescribeSecurityGroups,
    DescribeSubnets,
    DescribeVpcs,
}

/// One EC2 request: who, where, and its form parameters (the last of a repeated name wins).
pub(crate) struct Req<'a> {
    pub(crate) state: &'a ControlState,
    pub(crate) ctx: &'a Ctx,
    pub(crate) keys: Keys,
    params: Params,
}

/// Whether a request changes state (and so takes its turn to write).
pub(crate) fn is_write(form: &[(String, String)]) -> bool {
    form.iter().any(|(k, v)| k == "Action" && !v.starts_with("Describe"))
}

/// Handles one EC2 query-protocol request, given its form parameters.
pub(crate) async fn handle(state: &ControlState, ctx: &Ctx, form: Vec<(String, String)>) -> Response {
    let params = Params::new(form);
    let action = params.get("Action").unwrap_or_default().to_owned();
    let req = Req { state, ctx, keys: Keys::new(&ctx.region, &ctx.account), params };
    let result = match Operation::parse(&action) {
        Some(op) => dispatch(op, &req).await,
        None if action.is_empty() => {
            Err(Ec2Error::new(Code::MissingAction, "The request must contain the parameter Action"))
        }
        None => {
            Err(Ec2Error::new(Code::InvalidAction, format!("The action {action} is not valid for this web service.")))
        }
    };
    match result {
        Ok(body) => xml::success(&action, &ctx.request_id, &body),
        Err(err) => {
            if err.code == Code::InternalError {
                // Handled here, so logged here: a person should look at a store failure.
                tracing::error!(message = %err.message, %action, "EC2 API request failed");
            } else {
                tracing::debug!(code = err.code.as_str(), message = %err.message, %action, "EC2 API request refused");
            }
            xml::failure(&err, &ctx.request_id)
        }
    }
}

async fn dispatch(op: Operation, req: &Req<'_>) -> Result<Xml, Ec2Error> {
    use Operation::*;
    match op {
        CreateSecurityGroup => security_group::create(req).await,
        CreateSubnet => subnet::create(req).await,
        CreateTags => tags::create(req).await,
        CreateVpc => vpc::create(req).await,
        DeleteSecurityGroup => security_group::delete(req).await,
        DeleteSubnet => subnet::delete(req).await,
        DeleteTags => tags::delete(req).await,
        DeleteVpc => vpc::delete(req).await,
        DescribeSecurityGroups => security_group::describe(req).await,
        DescribeSubnets => subnet::describe(req).await,
        DescribeVpcs => vpc::describe(req).await,
    }
}

/// The body of the answer to a delete or a tagging call: `<return>true</return>`.
fn returned_true() -> Xml {
    let mut x = Xml::default();
    x.flag("return", true);
    x
}

// === impl Operation ===

impl Operation {
    const ALL: [Self; 11] = [
        Self::CreateSecurityGroup,
        Self::CreateSubnet,
        Self::CreateTags,
        Self::CreateVpc,
        Self::DeleteSecurityGroup,
        Self::DeleteSubnet,
        Self::DeleteTags,
        Self::DeleteVpc,
        Self::DescribeSecurityGroups,
        Self::DescribeSubnets,
        Self::DescribeVpcs,
    ];

    /// The operation an `Action` names.
    fn parse(action: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| format!("{op:?}") == action)
    }
}

// === impl Req ===

impl Req<'_> {
    pub(crate) fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }

    /// The ARN of an EC2 resource in this region and account (`arn:aws:ec2:…:subnet/subnet-…`).
    pub(crate) fn arn(&self, kind: trellis_model::Kind, id: &str) -> String {
        format!("arn:aws:ec2:{}:{}:{}/{id}", self.ctx.region, self.ctx.account, kind.arn_type())
    }
}

/// Helpers for the EC2 handler tests.
#[cfg(test)]
pub(crate) mod testing {
    use axum::Router;
    use trellis_store::Store;

    use crate::test_util::ec2;

    /// Moves the counter `count/<what>/<scope>` in the default region and account by `delta`.
    pub(crate) async fn bump(store: &dyn Store, what: &str, scope: &str, delta: i64) {
        let keys = crate::keys::Keys::new("us-east-1", "000000000000");
        let counter = crate::repo::counter(store, keys.counter(what, scope)).await.expect("counter");
        let mut tx = crate::repo::Tx::default();
        tx.count(&counter, delta);
        assert!(crate::repo::Attempts::default().commit(store, tx).await.expect("commit"));
    }

    /// The text between the first `open` and the `close` after it (empty if absent).
    pub(crate) fn between<'a>(body: &'a str, open: &str, close: &str) -> &'a str {
        let Some(start) = body.find(open).map(|i| i + open.len()) else {
            return "";
        };
        let end = body[start..].find(close).map_or(body.len(), |i| start + i);
        &body[start..end]
    }

    /// The `<Code>` of an error answer.
    pub(crate) fn code(body: &str) -> &str {
        between(body, "<Code>", "</Code>")
    }

    /// Creates a VPC and returns its ID.
    pub(crate) async fn vpc(app: &Router, cidr: &str) -> String {
        let (status, body) = ec2(app, &[("Action", "CreateVpc"), ("CidrBlock", cidr)]).await;
        assert_eq!(status, 200, "{body}");
        between(&body, "<vpcId>", "</vpcId>").to_owned()
    }

    /// Creates a subnet and returns its ID.
    pub(crate) async fn subnet(app: &Router, vpc: &str, cidr: &str) -> String {
        let (status, body) = ec2(app, &[("Action", "CreateSubnet"), ("VpcId", vpc), ("CidrBlock", cidr)]).await;
        assert_eq!(status, 200, "{body}");
        between(&body, "<subnetId>", "</subnetId>").to_owned()
    }

    /// Creates a security group and returns its ID.
    pub(crate) async fn group(app: &Router, vpc: &str, name: &str) -> String {
        let params = [
            ("Action", "CreateSecurityGroup"),
            ("VpcId", vpc),
            ("GroupName", name),
            ("GroupDescription", "test group"),
        ];
        let (status, body) = ec2(app, &params).await;
        assert_eq!(status, 200, "{body}");
        between(&body, "<groupId>", "</groupId>").to_owned()
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{app, ec2};

    #[tokio::test]
    async fn unknown_and_missing_actions() {
        let (app, _dir) = app();
        let (status, body) = ec2(&app, &[("Action", "RunInstances")]).await;
        assert_eq!(status, 400);
        assert!(body.contains("<Code>InvalidAction</Code>"), "{body}");
        assert!(body.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>"#), "{body}");
        assert!(body.contains("<RequestID>"), "{body}");
        let (status, body) = ec2(&app, &[]).await;
        assert_eq!(status, 400);
        assert!(body.contains("<Code>MissingAction</Code>"), "{body}");
    }
}
