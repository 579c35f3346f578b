//! IPv4 CIDR blocks, as EC2 takes them for VPCs and subnets.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: a base address with no host bits set, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    base: u32,
    len: u8,
}

impl Cidr {
    /// The network's first address.
    pub fn base(self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The prefix length.
    pub fn prefix_len(self) -> u8 {
        self.len
    }

    /// How many addresses the block holds.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    fn mask(self) -> u32 {
        if self.len == 0 { 0 } else { u32::MAX << (32 - self.len) }
    }

    /// Whether `other` lies wholly inside `self`.
    pub fn contains(self, other: Self) -> bool {
        other.len >= self.len && other.base & self.mask() == self.base
    }

    /// Whether the two blocks share any address.
    pub fn overlaps(self, other: Self) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// Whether `addr` is in the block.
    pub fn contains_addr(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == self.base
    }
}

/// Why a CIDR string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || CidrError(format!("Value ({s}) for parameter cidrBlock is invalid. This is not a valid CIDR block."));
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u8 = len.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let cidr = Self { base: u32::from(addr), len };
        // EC2 takes host bits set and clears them (10.0.0.1/16 → 10.0.0.0/16).
        Ok(Self { base: cidr.base & cidr.mask(), len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_relations() {
        let vpc: Cidr = "10.0.0.0/16".parse().unwrap();
        let a: Cidr = "10.0.1.0/24".parse().unwrap();
        let b: Cidr = "10.0.1.128/25".parse().unwrap();
        let out: Cidr = "10.1.0.0/24".parse().unwrap();
        assert!(vpc.contains(a) && a.overlaps(b) && !vpc.contains(out) && !a.overlaps(out));
        assert_eq!("10.0.0.1/16".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/16");
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0/16", "x/8", "10.0.0.0/", "10.0.0.0/+8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(a.size(), 256);
        assert!(a.contains_addr("10.0.1.9".parse().unwrap()));
    }
}
