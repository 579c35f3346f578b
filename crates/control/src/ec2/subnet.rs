//! Subnets: CreateSubnet, DescribeSubnets, DeleteSubnet. A subnet's block lies inside its VPC's
//! and overlaps no other subnet of the VPC; creations in one VPC are serialised by the VPC's
//! subnet counter, so two overlapping ones cannot both commit.

use trellis_model::Kind;
use trellis_model::cidr::Cidr;
use trellis_model::ec2::{Subnet, Vpc};

use super::error::{Code, Ec2Error};
use super::filter::{Filters, one};
use super::page::{Page, candidates};
use super::xml::Xml;
use super::{Req, rel, returned_true, tags};
use crate::repo::{self, Attempts, Tx};

const KIND: Kind = Kind::Subnet;

/// Availability zones per region: `<region>a` to `<region>f`.
const ZONES: &str = "abcdef";

const FILTERS: &[&str] = &[
    "availability-zone",
    "availability-zone-id",
    "availabilityZone",
    "available-ip-address-count",
    "cidr",
    "cidr-block",
    "cidrBlock",
    "default-for-az",
    "defaultForAz",
    "ipv6-native",
    "map-public-ip-on-launch",
    "owner-id",
    "state",
    "subnet-arn",
    "subnet-id",
    "vpc-id",
];

/// Parameters CreateSubnet takes that Trellis does not (IPv6, IPAM pools, Outposts).
const UNSUPPORTED: &[&str] =
    &["Ipv6CidrBlock", "Ipv4IpamPoolId", "Ipv6IpamPoolId", "Ipv4NetmaskLength", "Ipv6NetmaskLength", "OutpostArn"];

pub(crate) async fn create(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let vpc_id = req.required_id("VpcId", Kind::Vpc)?;
    if let Some(name) = UNSUPPORTED.iter().find(|p| req.param(p).is_some()) {
        return Err(Ec2Error::new(
            Code::UnsupportedOperation,
            format!("The parameter {name} is not supported by Trellis."),
        ));
    }
    if req.flag("Ipv6Native")? {
        return Err(Ec2Error::new(Code::UnsupportedOperation, "IPv6-only subnets are not supported by Trellis."));
    }
    let raw = req.param("CidrBlock").filter(|c| !c.is_empty()).ok_or_else(|| {
        Ec2Error::new(Code::MissingParameter, "Either 'cidrBlock' or 'ipv6CidrBlock' should be provided.")
    })?;
    let cidr: Cidr = raw.parse().map_err(|e: trellis_model::cidr::CidrError| Ec2Error::invalid(e.to_string()))?;
    let out_of_range = || Ec2Error::new(Code::InvalidSubnetRange, format!("The CIDR '{raw}' is invalid."));
    if !(16..=28).contains(&cidr.prefix_len()) {
        return Err(out_of_range());
    }
    let zone = zone(req)?;
    let tags = tags::from_specifications(req, "subnet")?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let vpc = repo::load::<Vpc>(store, &req.keys.res(Kind::Vpc, &vpc_id))
            .await?
            .ok_or_else(|| Ec2Error::not_found(Kind::Vpc, &[&vpc_id]))?;
        let vpc_cidr: Option<Cidr> = vpc.value.cidr_block.parse().ok();
        if !vpc_cidr.is_some_and(|v| v.contains(cidr)) {
            return Err(out_of_range());
        }
        let counter = repo::counter(store, req.keys.counter(rel::VPC_SUBNET, &vpc_id)).await?;
        for other in repo::list_index(store, &req.keys.references(rel::VPC_SUBNET, &vpc_id)).await? {
            let Some(other) = repo::load::<Subnet>(store, &req.keys.res(KIND, &other)).await? else {
                continue;
            };
            if other.value.cidr_block.parse::<Cidr>().is_ok_and(|o| o.overlaps(cidr)) {
                return Err(Ec2Error::new(
                    Code::InvalidSubnetConflict,
                    format!("The CIDR '{raw}' conflicts with another subnet"),
                ));
            }
        }
        req.check_dry_run()?;
        let subnet = Subnet {
            id: KIND.new_id(),
            vpc_id: vpc_id.clone(),
            cidr_block: cidr.to_string(),
            availability_zone: zone.clone(),
            tags: tags.clone(),
        };
        let mut tx = Tx::default();
        // The VPC must still be there at commit (DeleteVpc retires the counter, too).
        tx.require_unchanged(vpc.key.clone(), vpc.revision);
        tx.create(req.keys.res(KIND, &subnet.id), &subnet);
        tx.create_index(req.keys.reference(rel::VPC_SUBNET, &vpc_id, &subnet.id), &subnet.id);
        tx.count(&counter, 1);
        if attempts.commit(store, tx).await? {
            let mut x = Xml::default();
            x.open("subnet");
            render(&mut x, req, &subnet);
            x.close("subnet");
            return Ok(x);
        }
    }
}

pub(crate) async fn describe(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let ids = req.id_list("SubnetId", KIND)?;
    let filters = Filters::parse(req, FILTERS)?;
    let page = Page::new(req, KIND)?;
    req.check_dry_run()?;
    let owner = req.ctx.account.as_str();
    let subnets: Vec<Subnet> = candidates(req, KIND, &ids).await?;
    let matching = subnets
        .into_iter()
        .filter(|s| {
            filters.matches(&s.tags, |name| match name {
                "availability-zone" | "availabilityZone" => one(&s.availability_zone),
                "availability-zone-id" => one(zone_id(&req.ctx.region, &s.availability_zone)),
                "available-ip-address-count" => one(available(s).to_string()),
                "cidr" | "cidr-block" | "cidrBlock" => one(&s.cidr_block),
                "default-for-az" | "defaultForAz" | "ipv6-native" | "map-public-ip-on-launch" => one("false"),
                "owner-id" => one(owner),
                "state" => one("available"),
                "subnet-arn" => one(req.arn(KIND, &s.id)),
                "subnet-id" => one(&s.id),
                "vpc-id" => one(&s.vpc_id),
                _ => Vec::new(),
            })
        })
        .map(|s| (s.id.clone(), s))
        .collect();
    let (subnets, next) = page.take(matching);
    let mut x = Xml::default();
    x.open("subnetSet");
    for subnet in &subnets {
        x.open("item");
        render(&mut x, req, subnet);
        x.close("item");
    }
    x.close("subnetSet");
    if let Some(token) = next {
        x.leaf("nextToken", &token);
    }
    Ok(x)
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let id = req.required_id("SubnetId", KIND)?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let read = repo::load::<Subnet>(store, &req.keys.res(KIND, &id))
            .await?
            .ok_or_else(|| Ec2Error::not_found(KIND, &[&id]))?;
        let users = repo::counter(store, req.keys.counter(rel::SUBNET_USERS, &id)).await?;
        // Instances (netns mode) hold addresses of the subnet: they are its dependencies too.
        let block = read.value.cidr_block.parse().ok();
        let addressed = match block {
            Some(block) => crate::ipam::in_use(store, &read.value.vpc_id, block).await?,
            None => false,
        };
        if users.value() > 0 || addressed {
            return Err(Ec2Error::new(
                Code::DependencyViolation,
                format!("The subnet '{id}' has dependencies and cannot be deleted."),
            ));
        }
        req.check_dry_run()?;
        let vpc_id = &read.value.vpc_id;
        let subnets = repo::counter(store, req.keys.counter(rel::VPC_SUBNET, vpc_id)).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.delete(req.keys.reference(rel::VPC_SUBNET, vpc_id, &id));
        tx.count(&subnets, -1);
        tx.retire(&users);
        if attempts.commit(store, tx).await? {
            return Ok(returned_true());
        }
    }
}

/// The zone of a new subnet: `AvailabilityZone` or `AvailabilityZoneId` (not both), else the
/// region's first.
fn zone(req: &Req<'_>) -> Result<String, Ec2Error> {
    let region = &req.ctx.region;
    let zones = || ZONES.chars().map(|c| format!("{region}{c}")).collect::<Vec<_>>();
    match (req.param("AvailabilityZone"), req.param("AvailabilityZoneId")) {
        (Some(_), Some(_)) => Err(Ec2Error::new(
            Code::InvalidParameterCombination,
            "Only one of availabilityZone and availabilityZoneId may be specified.",
        )),
        (Some(zone), None) => zones().into_iter().find(|z| z == zone).ok_or_else(|| {
            Ec2Error::bad_value(
                "availabilityZone",
                zone,
                &format!(
                    "Subnets can currently only be created in the following availability zones: {}.",
                    zones().join(", ")
                ),
            )
        }),
        (None, Some(id)) => zones()
            .into_iter()
            .find(|z| zone_id(region, z) == id)
            .ok_or_else(|| Ec2Error::bad_value("availabilityZoneId", id, "No such availability zone in this region.")),
        (None, None) => Ok(format!("{region}a")),
    }
}

/// AWS-style zone ID of a zone: `us-east-1b` → `use1-az2`.
fn zone_id(region: &str, zone: &str) -> String {
    let letter = zone.strip_prefix(region).and_then(|l| l.chars().next()).unwrap_or('a');
    let n = ZONES.find(letter).map_or(1, |i| i + 1);
    let abbreviation: String = region
        .split('-')
        .map(|part| {
            let first = part.get(..1).unwrap_or_default();
            if part.bytes().all(|b| b.is_ascii_digit()) || part.len() == 2 {
                part.to_owned()
            } else if part.starts_with("north") || part.starts_with("south") {
                // northeast → ne, southwest → sw, north → n
                format!("{first}{}", part.get(5..6).unwrap_or_default())
            } else {
                first.to_owned()
            }
        })
        .collect();
    format!("{abbreviation}-az{n}")
}

/// Addresses left for use: the block less the five AWS reserves.
fn available(subnet: &Subnet) -> u64 {
    subnet.cidr_block.parse::<Cidr>().map_or(0, |c| c.size().saturating_sub(5))
}

/// The members of a `Subnet` structure.
fn render(x: &mut Xml, req: &Req<'_>, subnet: &Subnet) {
    x.leaf("subnetId", &subnet.id)
        .leaf("subnetArn", &req.arn(KIND, &subnet.id))
        .leaf("state", "available")
        .leaf("vpcId", &subnet.vpc_id)
        .leaf("cidrBlock", &subnet.cidr_block)
        .number("availableIpAddressCount", available(subnet))
        .leaf("availabilityZone", &subnet.availability_zone)
        .leaf("availabilityZoneId", &zone_id(&req.ctx.region, &subnet.availability_zone))
        .flag("defaultForAz", false)
        .flag("mapPublicIpOnLaunch", false)
        .flag("mapCustomerOwnedIpOnLaunch", false)
        .flag("assignIpv6AddressOnCreation", false)
        .leaf("ownerId", &req.ctx.account)
        .flag("enableDns64", false)
        .flag("ipv6Native", false)
        .open("privateDnsNameOptionsOnLaunch")
        .leaf("hostnameType", "ip-name")
        .flag("enableResourceNameDnsARecord", false)
        .flag("enableResourceNameDnsAAAARecord", false)
        .close("privateDnsNameOptionsOnLaunch")
        .open("blockPublicAccessStates")
        .leaf("internetGatewayBlockMode", "off")
        .close("blockPublicAccessStates")
        .tag_set(&subnet.tags);
}

#[cfg(test)]
mod tests;
