//! Making VPCs reachable, in one of two modes ([`Network`]). In loopback mode every VPC
//! associated with a service network gets an ingress address of its own in a loopback range; the
//! proxy and its DNS responder listen there, and the address a connection arrived on tells which
//! VPC it came from. In netns mode ([`netns`]) every VPC is a network namespace, and the proxy
//! listens inside each associated VPC at a link-local address; the socket a connection arrived on
//! tells which VPC it came from.
//!
//! Owns: the ingress range and allocation ([`IngressRange`]), the port offset used without root
//! ([`Ports`]), the namespaces and their layout ([`netns`]), and opening sockets in a given
//! network ([`Place`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use trellis_model::cidr::Cidr;

pub mod netns;
mod place;

pub use netns::{Naming, Netns};
pub use place::{Place, in_netns, in_netns_blocking};

/// How VPCs are made real.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// Ingress addresses on loopback; VPCs are bookkeeping only.
    Loopback,
    /// Every VPC a network namespace named by this naming.
    Netns(Naming),
}

impl Network {
    /// Where the clients of VPC `vpc_id` reach Lattice: the place and the address the proxy
    /// listens at, given the VPC's loopback ingress address (loopback mode).
    pub fn ingress(&self, vpc_id: &str, loopback: Option<IpAddr>) -> Option<(Place, IpAddr)> {
        match self {
            Network::Loopback => Some((Place::Host, loopback?)),
            Network::Netns(naming) => Some((Place::netns(&naming.vpc(vpc_id)), IpAddr::V4(netns::LINK_LOCAL))),
        }
    }

    /// Where the DNS responder of VPC `vpc_id` listens: its ingress address in loopback mode;
    /// in netns mode the VPC's DNS address (base + 2 of its block `cidr`) inside its namespace.
    /// (Bound to that address, not to all: a UDP answer must come from the address asked.)
    pub fn dns(&self, vpc_id: &str, loopback: Option<IpAddr>, cidr: Option<Cidr>) -> Option<(Place, IpAddr)> {
        match self {
            Network::Loopback => Some((Place::Host, loopback?)),
            Network::Netns(naming) => Some((Place::netns(&naming.vpc(vpc_id)), IpAddr::V4(netns::dns_address(cidr?)))),
        }
    }

    /// Where targets of VPC `vpc_id` are reached from.
    pub fn targets(&self, vpc_id: Option<&str>) -> Place {
        match (self, vpc_id) {
            (Network::Netns(naming), Some(vpc)) => Place::netns(&naming.vpc(vpc)),
            _ => Place::Host,
        }
    }

    /// Whether targets must be loopback addresses (loopback mode never sends traffic elsewhere).
    pub fn loopback_only(&self) -> bool {
        matches!(self, Network::Loopback)
    }
}

/// A range of loopback addresses handed out as ingress addresses, one per VPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngressRange {
    first: u32,
    last: u32,
}

/// Why a range or an allocation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The range is malformed or not inside 127.0.0.0/8.
    #[error("ingress range {0:?} must be a CIDR block inside 127.0.0.0/8, such as 127.77.0.0/16")]
    BadRange(String),
    /// Every address of the range is taken.
    #[error("the ingress range is full ({0} addresses)")]
    Full(u64),
}

/// Which real port serves a Lattice port: ports below 1024 need root, so without it they are
/// served at `port + offset` (DESIGN.md), and DNS likewise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// Added to ports below 1024 (0 when running as root).
    pub low_port_offset: u16,
}

// === impl IngressRange ===

impl IngressRange {
    /// Parses a CIDR block inside 127.0.0.0/8, e.g. `127.77.0.0/16`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadRange(s.to_owned());
        let cidr: trellis_model::cidr::Cidr = s.parse().map_err(|_| bad())?;
        let base = u32::from(cidr.base());
        if cidr.base().octets()[0] != 127 || cidr.prefix_len() < 8 || cidr.prefix_len() > 30 {
            return Err(bad());
        }
        let last = base + (cidr.size() as u32 - 1);
        Ok(Self { first: base, last })
    }

    /// The first and last usable addresses (the block's network and broadcast addresses
    /// excepted).
    pub fn hosts(&self) -> (Ipv4Addr, Ipv4Addr) {
        (Ipv4Addr::from(self.first + 1), Ipv4Addr::from(self.last.saturating_sub(1).max(self.first + 1)))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => (self.first..=self.last).contains(&u32::from(v4)),
            IpAddr::V6(_) => false,
        }
    }

    /// The first address of the range that is not taken and is usable: not the network or
    /// broadcast address of the block, never 127.0.0.1 (the host's own) or 127.0.0.53 (the
    /// host's stub resolver).
    pub fn allocate(&self, taken: impl Fn(IpAddr) -> bool) -> Result<IpAddr, Error> {
        for n in self.first + 1..self.last {
            let ip = IpAddr::V4(Ipv4Addr::from(n));
            let reserved =
                matches!(ip, IpAddr::V4(v4) if v4 == Ipv4Addr::new(127, 0, 0, 1) || v4 == Ipv4Addr::new(127, 0, 0, 53));
            if !reserved && !taken(ip) {
                return Ok(ip);
            }
        }
        Err(Error::Full(u64::from(self.last - self.first + 1)))
    }
}

// === impl Ports ===

impl Ports {
    /// Ports as root: every port is served as itself.
    pub const ROOT: Self = Self { low_port_offset: 0 };

    /// The offset to use for this process: 0 as root, else `offset`.
    pub fn for_process(is_root: bool, offset: u16) -> Self {
        Self { low_port_offset: if is_root { 0 } else { offset } }
    }

    /// The real port that serves Lattice port `port`.
    pub fn real(&self, port: u16) -> u16 {
        if port < 1024 { port.saturating_add(self.low_port_offset) } else { port }
    }

    /// The socket address that serves `port` on `ip`.
    pub fn addr(&self, ip: IpAddr, port: u16) -> SocketAddr {
        SocketAddr::new(ip, self.real(port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = IngressRange::parse("127.77.0.0/16").unwrap();
        assert_eq!(r.allocate(|_| false).unwrap().to_string(), "127.77.0.1");
        let first = r.allocate(|_| false).unwrap();
        assert_eq!(r.allocate(|ip| ip == first).unwrap().to_string(), "127.77.0.2");
        assert!(IngressRange::parse("10.0.0.0/8").is_err());
        assert!(IngressRange::parse("127.0.0.0/31").is_err());
        // The host's own addresses are never handed out.
        let low = IngressRange::parse("127.0.0.0/24").unwrap();
        assert_eq!(low.allocate(|_| false).unwrap().to_string(), "127.0.0.2");
        let small = IngressRange::parse("127.9.9.0/30").unwrap();
        assert_eq!(small.allocate(|_| true), Err(Error::Full(4)));
    }

    #[test]
    fn ports() {
        let p = Ports::for_process(false, 10000);
        assert_eq!((p.real(80), p.real(53), p.real(8080)), (10080, 10053, 8080));
        assert_eq!(Ports::for_process(true, 10000).real(80), 80);
    }
}
