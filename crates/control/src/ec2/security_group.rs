//! Security groups: CreateSecurityGroup, DescribeSecurityGroups, DeleteSecurityGroup. Every
//! group belongs to a VPC (Trellis has no default VPC, so `VpcId` is required and group names
//! alone identify nothing); names are unique within the VPC. Rules are not modelled yet: every
//! group shows no ingress and AWS's default allow-all egress.

use trellis_model::Kind;
use trellis_model::ec2::{SecurityGroup, Vpc};

use super::error::{Code, Ec2Error};
use super::filter::{Filters, one};
use super::page::{Page, candidates};
use super::vpc::DEFAULT_GROUP_NAME;
use super::xml::Xml;
use super::{Req, rel, tags};
use crate::repo::{self, Attempts, Tx};

const KIND: Kind = Kind::SecurityGroup;

const FILTERS: &[&str] = &[
    "description",
    "egress.ip-permission.cidr",
    "egress.ip-permission.protocol",
    "group-id",
    "group-name",
    "ip-permission.cidr",
    "ip-permission.protocol",
    "owner-id",
    "vpc-id",
];

/// Characters AWS allows in a VPC security group's name and description (besides ASCII
/// letters and digits).
const ALLOWED_PUNCTUATION: &str = " ._-:/()#,@[]+=&;{}!$*";

pub(crate) async fn create(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let name = req.required("GroupName")?.to_owned();
    let description = req.required("GroupDescription")?.to_owned();
    check_text("GroupName", &name)?;
    check_text("GroupDescription", &description)?;
    if name.starts_with("sg-") {
        return Err(Ec2Error::invalid("Group names may not be in the format sg-*."));
    }
    if name == DEFAULT_GROUP_NAME {
        return Err(Ec2Error::new(Code::InvalidGroupReserved, "The security group name 'default' is reserved."));
    }
    let Some(vpc_id) = req.param("VpcId").filter(|v| !v.is_empty()) else {
        return Err(no_default_vpc());
    };
    super::input::check_id(Kind::Vpc, vpc_id)?;
    let tags = tags::from_specifications(req, "security-group")?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let vpc = repo::load::<Vpc>(store, &req.keys.res(Kind::Vpc, vpc_id))
            .await?
            .ok_or_else(|| Ec2Error::not_found(Kind::Vpc, &[vpc_id]))?;
        let name_key = req.keys.name(KIND, vpc_id, &name);
        if repo::load_index(store, &name_key).await?.is_some() {
            return Err(Ec2Error::new(
                Code::InvalidGroupDuplicate,
                format!("The security group '{name}' already exists for VPC '{vpc_id}'"),
            ));
        }
        let counter = repo::counter(store, req.keys.counter(rel::VPC_SG, vpc_id)).await?;
        req.check_dry_run()?;
        let group = SecurityGroup {
            id: KIND.new_id(),
            group_name: name.clone(),
            description: description.clone(),
            vpc_id: vpc_id.to_owned(),
            tags: tags.clone(),
        };
        let mut tx = Tx::default();
        // The VPC must still be there at commit (DeleteVpc retires the counter, too).
        tx.require_unchanged(vpc.key.clone(), vpc.revision);
        tx.create(req.keys.res(KIND, &group.id), &group);
        tx.create_index(name_key, &group.id);
        tx.create_index(req.keys.reference(rel::VPC_SG, vpc_id, &group.id), &group.id);
        tx.count(&counter, 1);
        if attempts.commit(store, tx).await? {
            let mut x = Xml::default();
            x.leaf("return", "true")
                .leaf("groupId", &group.id)
                .leaf("securityGroupArn", &req.arn(KIND, &group.id))
                .tag_set(&group.tags);
            return Ok(x);
        }
    }
}

pub(crate) async fn describe(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let ids = req.id_list("GroupId", KIND)?;
    if !req.list("GroupName").is_empty() {
        return Err(no_default_vpc());
    }
    let filters = Filters::parse(req, FILTERS)?;
    let page = Page::new(req, KIND)?;
    req.check_dry_run()?;
    let owner = req.ctx.account.as_str();
    let groups: Vec<SecurityGroup> = candidates(req, KIND, &ids).await?;
    let matching = groups
        .into_iter()
        .filter(|g| {
            filters.matches(&g.tags, |name| match name {
                "description" => one(&g.description),
                "egress.ip-permission.cidr" => one("0.0.0.0/0"),
                "egress.ip-permission.protocol" => one("-1"),
                "group-id" => one(&g.id),
                "group-name" => one(&g.group_name),
                "owner-id" => one(owner),
                "vpc-id" => one(&g.vpc_id),
                _ => Vec::new(),
            })
        })
        .map(|g| (g.id.clone(), g))
        .collect();
    let (groups, next) = page.take(matching);
    let mut x = Xml::default();
    x.open("securityGroupInfo");
    for group in &groups {
        x.open("item");
        render(&mut x, req, group);
        x.close("item");
    }
    x.close("securityGroupInfo");
    if let Some(token) = next {
        x.leaf("nextToken", &token);
    }
    Ok(x)
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let id = match (req.param("GroupId").filter(|v| !v.is_empty()), req.param("GroupName").filter(|v| !v.is_empty())) {
        (Some(id), _) => id,
        (None, Some(_)) => return Err(no_default_vpc()),
        (None, None) => {
            return Err(Ec2Error::new(
                Code::MissingParameter,
                "The request must contain the parameter groupName or groupId",
            ));
        }
    };
    super::input::check_id(KIND, id)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = repo::load::<SecurityGroup>(store, &req.keys.res(KIND, id))
            .await?
            .ok_or_else(|| Ec2Error::not_found(KIND, &[id]))?;
        let group = &read.value;
        if group.group_name == DEFAULT_GROUP_NAME {
            return Err(Ec2Error::new(
                Code::CannotDelete,
                format!("the specified group: \"{id}\" name: \"{DEFAULT_GROUP_NAME}\" cannot be deleted by a user"),
            ));
        }
        let users = repo::counter(store, req.keys.counter(rel::SG_USERS, id)).await?;
        if users.value() > 0 {
            return Err(Ec2Error::dependency(id));
        }
        req.check_dry_run()?;
        let groups = repo::counter(store, req.keys.counter(rel::VPC_SG, &group.vpc_id)).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.name(KIND, &group.vpc_id, &group.group_name));
        tx.delete(req.keys.reference(rel::VPC_SG, &group.vpc_id, id));
        tx.count(&groups, -1);
        tx.retire(&users);
        if attempts.commit(store, tx).await? {
            let mut x = Xml::default();
            x.leaf("return", "true").leaf("groupId", id);
            return Ok(x);
        }
    }
}

/// What AWS answers when a group is named without a VPC and the account has no default VPC.
fn no_default_vpc() -> Ec2Error {
    Ec2Error::new(
        Code::VpcIdNotSpecified,
        "No default VPC for this user. GroupName is only supported for EC2-Classic and default VPC.",
    )
}

/// A group name or description: 1–255 characters AWS allows in a VPC.
fn check_text(param: &str, value: &str) -> Result<(), Ec2Error> {
    if value.len() > 255 {
        return Err(Ec2Error::bad_value(param, value, "Length exceeds maximum of 255 characters."));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || ALLOWED_PUNCTUATION.contains(c)) {
        return Err(Ec2Error::bad_value(
            param,
            value,
            "Valid characters are: a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*",
        ));
    }
    Ok(())
}

/// The members of a `SecurityGroup` structure.
fn render(x: &mut Xml, req: &Req<'_>, group: &SecurityGroup) {
    x.leaf("ownerId", &req.ctx.account)
        .leaf("groupId", &group.id)
        .leaf("groupName", &group.group_name)
        .leaf("groupDescription", &group.description)
        .leaf("vpcId", &group.vpc_id)
        .open("ipPermissions")
        .close("ipPermissions")
        .open("ipPermissionsEgress")
        .open("item")
        .leaf("ipProtocol", "-1")
        .open("groups")
        .close("groups")
        .open("ipRanges")
        .open("item")
        .leaf("cidrIp", "0.0.0.0/0")
        .close("item")
        .close("ipRanges")
        .open("ipv6Ranges")
        .close("ipv6Ranges")
        .open("prefixListIds")
        .close("prefixListIds")
        .close("item")
        .close("ipPermissionsEgress")
        .leaf("securityGroupArn", &req.arn(KIND, &group.id))
        .tag_set(&group.tags);
}

#[cfg(test)]
mod tests;
