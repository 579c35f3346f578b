//! Resource kinds, their IDs (`<prefix>-` + 17 lowercase hex) and their ARNs.

use std::fmt;

/// Every kind of resource Trellis stores, with its ID prefix and ARN shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A Lattice access log subscription (`als-`).
    AccessLogSubscription,
    /// A Lattice listener (`listener-`), under a service.
    Listener,
    /// A Lattice listener rule (`rule-`), under a listener.
    Rule,
    /// An EC2 security group (`sg-`).
    SecurityGroup,
    /// A Lattice service (`svc-`).
    Service,
    /// A Lattice service network (`sn-`).
    ServiceNetwork,
    /// A service network ↔ service association (`snsa-`).
    ServiceNetworkServiceAssociation,
    /// A service network ↔ VPC association (`snva-`).
    ServiceNetworkVpcAssociation,
    /// An EC2 subnet (`subnet-`).
    Subnet,
    /// A Lattice target group (`tg-`).
    TargetGroup,
    /// An EC2 VPC (`vpc-`).
    Vpc,
}

/// A parsed Amazon Resource Name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn {
    /// `aws` in every ARN Trellis makes.
    pub partition: String,
    /// `vpc-lattice`, `ec2`, …
    pub service: String,
    /// The region, e.g. `us-east-1`.
    pub region: String,
    /// The 12-digit account.
    pub account: String,
    /// Everything after the account, e.g. `service/svc-…/listener/listener-…`.
    pub resource: String,
}

// === impl Kind ===

impl Kind {
    /// The ID prefix, without the hyphen.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::AccessLogSubscription => "als",
            Self::Listener => "listener",
            Self::Rule => "rule",
            Self::SecurityGroup => "sg",
            Self::Service => "svc",
            Self::ServiceNetwork => "sn",
            Self::ServiceNetworkServiceAssociation => "snsa",
            Self::ServiceNetworkVpcAssociation => "snva",
            Self::Subnet => "subnet",
            Self::TargetGroup => "tg",
            Self::Vpc => "vpc",
        }
    }

    /// The word that names this kind in an ARN's resource part.
    pub fn arn_type(self) -> &'static str {
        match self {
            Self::AccessLogSubscription => "accesslogsubscription",
            Self::Listener => "listener",
            Self::Rule => "rule",
            Self::SecurityGroup => "security-group",
            Self::Service => "service",
            Self::ServiceNetwork => "servicenetwork",
            Self::ServiceNetworkServiceAssociation => "servicenetworkserviceassociation",
            Self::ServiceNetworkVpcAssociation => "servicenetworkvpcassociation",
            Self::Subnet => "subnet",
            Self::TargetGroup => "targetgroup",
            Self::Vpc => "vpc",
        }
    }

    /// The `resourceType` Lattice errors name this kind by.
    pub fn resource_type(self) -> &'static str {
        match self {
            Self::AccessLogSubscription => "ACCESS_LOG_SUBSCRIPTION",
            Self::Listener => "LISTENER",
            Self::Rule => "RULE",
            Self::SecurityGroup => "SECURITY_GROUP",
            Self::Service => "SERVICE",
            Self::ServiceNetwork => "SERVICE_NETWORK",
            Self::ServiceNetworkServiceAssociation => "SERVICE_NETWORK_SERVICE_ASSOCIATION",
            Self::ServiceNetworkVpcAssociation => "SERVICE_NETWORK_VPC_ASSOCIATION",
            Self::Subnet => "SUBNET",
            Self::TargetGroup => "TARGET_GROUP",
            Self::Vpc => "VPC",
        }
    }

    /// The kind whose IDs start with `prefix` (without the hyphen).
    pub fn from_prefix(prefix: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.prefix() == prefix)
    }

    /// Every kind.
    pub const ALL: [Self; 11] = [
        Self::AccessLogSubscription,
        Self::Listener,
        Self::Rule,
        Self::SecurityGroup,
        Self::Service,
        Self::ServiceNetwork,
        Self::ServiceNetworkServiceAssociation,
        Self::ServiceNetworkVpcAssociation,
        Self::Subnet,
        Self::TargetGroup,
        Self::Vpc,
    ];

    /// Makes a fresh random ID of this kind: the prefix, a hyphen and 17 lowercase hex digits,
    /// starting with `0` as AWS's IDs usually do.
    pub fn new_id(self) -> String {
        let mut bytes = [0u8; 8];
        // A failing system RNG leaves nothing sane to do: IDs must be unpredictable and unique.
        getrandom::fill(&mut bytes).expect("the system random number generator failed");
        format!("{}-0{:016x}", self.prefix(), u64::from_le_bytes(bytes))
    }

    /// Whether `id` is a well-formed ID of this kind (`prefix-` + 17 of `[0-9a-z]`; EC2 kinds
    /// also accept AWS's older 8-character form).
    pub fn is_id(self, id: &str) -> bool {
        let Some(rest) = id.strip_prefix(self.prefix()).and_then(|r| r.strip_prefix('-')) else {
            return false;
        };
        let ec2 = matches!(self, Self::Vpc | Self::Subnet | Self::SecurityGroup);
        (rest.len() == 17 || (ec2 && rest.len() == 8))
            && rest.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.resource_type())
    }
}

// === impl Arn ===

impl Arn {
    /// The ARN of a Lattice resource; `parents` are the IDs of the service and listener above a
    /// listener or rule, outermost first.
    pub fn lattice(region: &str, account: &str, kind: Kind, parents: &[&str], id: &str) -> String {
        let mut resource = String::new();
        let chain: &[Kind] = match kind {
            Kind::Listener => &[Kind::Service],
            Kind::Rule => &[Kind::Service, Kind::Listener],
            _ => &[],
        };
        for (parent_kind, parent) in chain.iter().zip(parents) {
            resource.push_str(parent_kind.arn_type());
            resource.push('/');
            resource.push_str(parent);
            resource.push('/');
        }
        resource.push_str(kind.arn_type());
        resource.push('/');
        resource.push_str(id);
        format!("arn:aws:vpc-lattice:{region}:{account}:{resource}")
    }

    /// Parses `arn:partition:service:region:account:resource`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let arn = Self {
            partition: parts.next()?.to_owned(),
            service: parts.next()?.to_owned(),
            region: parts.next()?.to_owned(),
            account: parts.next()?.to_owned(),
            resource: parts.next()?.to_owned(),
        };
        (!arn.partition.is_empty() && !arn.service.is_empty() && !arn.resource.is_empty()).then_some(arn)
    }

    /// The resource part as (kind, id) pairs, outermost first: `service/svc-1/listener/listener-2`
    /// gives `[(Service, "svc-1"), (Listener, "listener-2")]`. `None` if a type word is unknown.
    pub fn lattice_path(&self) -> Option<Vec<(Kind, &str)>> {
        let segments: Vec<&str> = self.resource.split('/').collect();
        if !segments.len().is_multiple_of(2) {
            return None;
        }
        segments
            .chunks(2)
            .map(|pair| Kind::ALL.into_iter().find(|k| k.arn_type() == pair[0]).map(|k| (k, pair[1])))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_well_formed() {
        for kind in Kind::ALL {
            let id = kind.new_id();
            assert!(kind.is_id(&id), "{id}");
            assert_eq!(id.len(), kind.prefix().len() + 18);
        }
    }

    #[test]
    fn is_id_rejects_others() {
        assert!(!Kind::Service.is_id("svc-0123"));
        assert!(!Kind::Service.is_id("sn-0123456789abcdef0"));
        assert!(!Kind::Service.is_id("svc-0123456789ABCDEF0"));
        assert!(Kind::Vpc.is_id("vpc-1a2b3c4d"));
    }

    #[test]
    fn arns_round_trip() {
        let arn = Arn::lattice("us-east-1", "000000000000", Kind::Rule, &["svc-1", "listener-2"], "rule-3");
        assert_eq!(arn, "arn:aws:vpc-lattice:us-east-1:000000000000:service/svc-1/listener/listener-2/rule/rule-3");
        let parsed = Arn::parse(&arn).unwrap();
        assert_eq!(parsed.region, "us-east-1");
        assert_eq!(
            parsed.lattice_path().unwrap(),
            vec![(Kind::Service, "svc-1"), (Kind::Listener, "listener-2"), (Kind::Rule, "rule-3")]
        );
        assert!(Arn::parse("arn:aws").is_none());
        assert!(Arn::parse("nope").is_none());
    }
}
