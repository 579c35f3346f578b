//! VPCs: CreateVpc (with the VPC's default security group), DescribeVpcs, DeleteVpc.

use trellis_model::Kind;
use trellis_model::cidr::Cidr;
use trellis_model::ec2::{SecurityGroup, Vpc};

use super::error::{Code, Ec2Error};
use super::filter::{Filters, one};
use super::page::{Page, candidates};
use super::xml::Xml;
use super::{Req, rel, returned_true, tags};
use crate::keys::rel as lattice_rel;
use crate::repo::{self, Attempts, Tx};

const KIND: Kind = Kind::Vpc;

/// The name and description AWS gives a VPC's default security group.
pub(crate) const DEFAULT_GROUP_NAME: &str = "default";
const DEFAULT_GROUP_DESCRIPTION: &str = "default VPC security group";

const FILTERS: &[&str] = &[
    "cidr",
    "cidr-block",
    "cidr-block-association.association-id",
    "cidr-block-association.cidr-block",
    "cidr-block-association.state",
    "dhcp-options-id",
    "is-default",
    "owner-id",
    "state",
    "vpc-id",
];

/// Parameters CreateVpc takes that Trellis does not (IPv6, IPAM pools).
const UNSUPPORTED: &[&str] =
    &["Ipv6CidrBlock", "Ipv6Pool", "Ipv4IpamPoolId", "Ipv6IpamPoolId", "Ipv4NetmaskLength", "Ipv6NetmaskLength"];

pub(crate) async fn create(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    if let Some(name) = UNSUPPORTED.iter().find(|p| req.param(p).is_some()) {
        return Err(Ec2Error::new(
            Code::UnsupportedOperation,
            format!("The parameter {name} is not supported by Trellis."),
        ));
    }
    if req.flag("AmazonProvidedIpv6CidrBlock")? {
        return Err(Ec2Error::new(Code::UnsupportedOperation, "IPv6 CIDR blocks are not supported by Trellis."));
    }
    let raw = req.param("CidrBlock").filter(|c| !c.is_empty()).ok_or_else(|| {
        Ec2Error::new(Code::MissingParameter, "Either 'cidrBlock' or 'ipv4IpamPoolId' should be provided.")
    })?;
    let cidr: Cidr = raw.parse().map_err(|e: trellis_model::cidr::CidrError| Ec2Error::invalid(e.to_string()))?;
    if !(16..=28).contains(&cidr.prefix_len()) {
        return Err(Ec2Error::new(Code::InvalidVpcRange, format!("The CIDR '{raw}' is invalid.")));
    }
    let tenancy = match req.param("InstanceTenancy") {
        None | Some("default") => "default",
        Some("dedicated") => "dedicated",
        Some(other) => {
            return Err(Ec2Error::bad_value("instanceTenancy", other, "Supported values: default, dedicated."));
        }
    };
    let tags = tags::from_specifications(req, "vpc")?;
    req.check_dry_run()?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let vpc = Vpc {
            id: KIND.new_id(),
            cidr_block: cidr.to_string(),
            instance_tenancy: tenancy.to_owned(),
            default_security_group_id: Kind::SecurityGroup.new_id(),
            tags: tags.clone(),
        };
        let group = SecurityGroup {
            id: vpc.default_security_group_id.clone(),
            group_name: DEFAULT_GROUP_NAME.to_owned(),
            description: DEFAULT_GROUP_DESCRIPTION.to_owned(),
            vpc_id: vpc.id.clone(),
            tags: Default::default(),
        };
        let groups = repo::counter(store, req.keys.counter(rel::VPC_SG, &vpc.id)).await?;
        let mut tx = Tx::default();
        tx.create(req.keys.res(KIND, &vpc.id), &vpc);
        tx.create(req.keys.res(Kind::SecurityGroup, &group.id), &group);
        tx.create_index(req.keys.name(Kind::SecurityGroup, &vpc.id, &group.group_name), &group.id);
        tx.create_index(req.keys.reference(rel::VPC_SG, &vpc.id, &group.id), &group.id);
        tx.count(&groups, 1);
        if attempts.commit(store, tx).await? {
            let mut x = Xml::default();
            x.open("vpc");
            render(&mut x, req, &vpc, "pending");
            x.close("vpc");
            return Ok(x);
        }
    }
}

pub(crate) async fn describe(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let ids = req.id_list("VpcId", KIND)?;
    let filters = Filters::parse(req, FILTERS)?;
    let page = Page::new(req, KIND)?;
    req.check_dry_run()?;
    let owner = req.ctx.account.as_str();
    let vpcs: Vec<Vpc> = candidates(req, KIND, &ids).await?;
    let matching = vpcs
        .into_iter()
        .filter(|v| {
            filters.matches(&v.tags, |name| match name {
                "cidr" | "cidr-block" | "cidr-block-association.cidr-block" => one(&v.cidr_block),
                "cidr-block-association.association-id" => one(association_id(&v.id)),
                "cidr-block-association.state" => one("associated"),
                "dhcp-options-id" => one("default"),
                "is-default" => one("false"),
                "owner-id" => one(owner),
                "state" => one("available"),
                "vpc-id" => one(&v.id),
                _ => Vec::new(),
            })
        })
        .map(|v| (v.id.clone(), v))
        .collect();
    let (vpcs, next) = page.take(matching);
    let mut x = Xml::default();
    x.open("vpcSet");
    for vpc in &vpcs {
        x.open("item");
        render(&mut x, req, vpc, "available");
        x.close("item");
    }
    x.close("vpcSet");
    if let Some(token) = next {
        x.leaf("nextToken", &token);
    }
    Ok(x)
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let id = req.required_id("VpcId", KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = repo::load::<Vpc>(store, &req.keys.res(KIND, &id))
            .await?
            .ok_or_else(|| Ec2Error::not_found(KIND, &[&id]))?;
        let vpc = &read.value;
        let subnets = repo::counter(store, req.keys.counter(rel::VPC_SUBNET, &id)).await?;
        let groups = repo::counter(store, req.keys.counter(rel::VPC_SG, &id)).await?;
        let associations = repo::counter(store, req.keys.counter(lattice_rel::VPC_SNVA, &id)).await?;
        let default_users =
            repo::counter(store, req.keys.counter(rel::SG_USERS, &vpc.default_security_group_id)).await?;
        // The default security group goes with the VPC; any other is a dependency.
        if subnets.value() > 0 || groups.value() > 1 || associations.value() > 0 || default_users.value() > 0 {
            return Err(Ec2Error::new(
                Code::DependencyViolation,
                format!("The vpc '{id}' has dependencies and cannot be deleted."),
            ));
        }
        req.check_dry_run()?;
        let group = &vpc.default_security_group_id;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.res(Kind::SecurityGroup, group));
        tx.delete(req.keys.name(Kind::SecurityGroup, &id, DEFAULT_GROUP_NAME));
        tx.delete_prefix(req.keys.references(rel::VPC_SG, &id));
        tx.delete_prefix(req.keys.references(rel::VPC_SUBNET, &id));
        // No subnet, so no address is claimed: what remains is the allocator's cursor.
        tx.delete_prefix(crate::ipam::prefix(&id));
        // Each read as allowed and still so at commit: nothing was added meanwhile.
        tx.retire(&subnets);
        tx.retire(&groups);
        tx.retire(&associations);
        tx.retire(&default_users);
        if attempts.commit(store, tx).await? {
            return Ok(returned_true());
        }
    }
}

/// The ID of a VPC's primary CIDR block association, derived from the VPC's so it is stable.
fn association_id(vpc_id: &str) -> String {
    format!("vpc-cidr-assoc-{}", vpc_id.strip_prefix("vpc-").unwrap_or(vpc_id))
}

/// The members of a `Vpc` structure.
fn render(x: &mut Xml, req: &Req<'_>, vpc: &Vpc, state: &str) {
    x.leaf("vpcId", &vpc.id)
        .leaf("ownerId", &req.ctx.account)
        .leaf("state", state)
        .leaf("cidrBlock", &vpc.cidr_block)
        .open("cidrBlockAssociationSet")
        .open("item")
        .leaf("associationId", &association_id(&vpc.id))
        .leaf("cidrBlock", &vpc.cidr_block)
        .open("cidrBlockState")
        .leaf("state", "associated")
        .close("cidrBlockState")
        .close("item")
        .close("cidrBlockAssociationSet")
        .leaf("dhcpOptionsId", "default")
        .leaf("instanceTenancy", &vpc.instance_tenancy)
        .flag("isDefault", false)
        .open("blockPublicAccessStates")
        .leaf("internetGatewayBlockMode", "off")
        .close("blockPublicAccessStates")
        .tag_set(&vpc.tags);
}

#[cfg(test)]
mod tests;
