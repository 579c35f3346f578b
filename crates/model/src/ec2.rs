//! The EC2 network resources Lattice users touch: VPCs, subnets and security groups, as stored.

use serde::{Deserialize, Serialize};

use crate::lattice::Tags;

/// A VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vpc {
    /// `vpc-…`.
    pub id: String,
    /// The primary IPv4 block.
    pub cidr_block: String,
    /// `default` or `dedicated`.
    pub instance_tenancy: String,
    /// The VPC's default security group.
    pub default_security_group_id: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A subnet of a VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subnet {
    /// `subnet-…`.
    pub id: String,
    /// The VPC.
    pub vpc_id: String,
    /// Its IPv4 block, inside the VPC's.
    pub cidr_block: String,
    /// Availability zone, e.g. `us-east-1a`.
    pub availability_zone: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A security group of a VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: String,
    /// Unique within the VPC.
    pub group_name: String,
    /// Free text.
    pub description: String,
    /// The VPC.
    pub vpc_id: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}
