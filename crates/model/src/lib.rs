//! Trellis's domain vocabulary: the resources of VPC Lattice, the EC2 network API and IAM as AWS
//! names them, their identifiers, ARNs, names and generated DNS names. Pure data and functions:
//! no I/O, no clock, no tokio.
//!
//! Modules: [`access_log`] (where access logs land), [`id`] (resource kinds, IDs, ARNs), [`name`] (name rules), [`time`] (timestamps),
//! [`dns_name`] (generated service names), [`lattice`], [`ec2`], [`ecs`], [`acm`] and [`iam`]
//! (stored records), [`cidr`] (IPv4 CIDR blocks), [`snapshot`] and [`tls`] (what the data plane runs on).

pub mod access_log;
pub mod acm;
pub mod cidr;
pub mod dns_name;
pub mod ec2;
pub mod ecs;
pub mod hash;
pub mod iam;
pub mod id;
pub mod lattice;
pub mod name;
pub mod policy;
pub mod route;
pub mod sigv4;
pub mod snapshot;
pub mod time;
pub mod tls;

pub use id::{Arn, Kind};
pub use time::Timestamp;
