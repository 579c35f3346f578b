//! What the DNS responder answers, per VPC: a pure index built once per [`Snapshot`] and looked
//! up once per question. Owns the naming rules (which names a VPC resolves, which it is told do
//! not exist, which it is refused); not the wire format or sockets (`server`).
//!
//! For a VPC, the names that resolve are the generated name of every service it reaches and,
//! where its association has private DNS enabled, the service's custom domain name; both point
//! at the VPC's ingress address. Other names under the Lattice zone
//! (`*.vpc-lattice-svcs.<region>.on.aws`, any region) do not exist (NXDOMAIN), except the
//! ancestors of a name that resolves, which exist with no records (RFC 8020: an NXDOMAIN there
//! would let a resolver deny every name below it). Everything else — the Internet, a custom
//! domain name the VPC does not reach — is not ours to answer (REFUSED).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::{DNSClass, Name, RecordType};
use trellis_model::snapshot::{Snapshot, VpcView};

/// TTL of every answer. The ingress address of a VPC never changes while it is associated, so
/// a cached answer stays right; 60 s bounds how long a client keeps resolving a name after its
/// service stops being reachable (requests then get the proxy's 404, not a stranger's server).
pub(crate) const TTL: u32 = 60;

/// The label that, followed by `<region>.on.aws`, makes the Lattice zone.
const LATTICE_LABEL: &[u8] = b"vpc-lattice-svcs";

/// Every VPC's zone, as of one snapshot.
#[derive(Debug, Default)]
pub(crate) struct Zones {
    by_vpc: HashMap<String, Arc<VpcZone>>,
}

/// What one VPC can resolve. The names of services are not copied here: a question is looked up
/// in the snapshot's host index (shared with the proxy), then in what the VPC reaches, so a zone
/// costs the same at 10 services as at 10,000.
#[derive(Debug)]
pub(crate) struct VpcZone {
    /// Where every name that resolves points.
    ingress: IpAddr,
    /// Other live proxy nodes' addresses for this VPC, answered after `ingress`.
    peers: Vec<IpAddr>,
    /// The snapshot the zone was built from.
    snapshot: Arc<Snapshot>,
    /// The VPC (in `snapshot.vpcs`).
    vpc_id: String,
    /// Ancestors of the names that resolve, inside the Lattice zone: they exist, with no records
    /// (fully qualified; hickory's `Name` hashes and compares ignoring case). A handful: every
    /// generated name of a region has the same parent.
    empty: HashSet<Name>,
}

/// Whether a known name carries the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    /// A service's name: it has the ingress address.
    Service,
    /// An ancestor of a service's generated name inside the Lattice zone: exists, no records.
    Empty,
}

/// The answer to one question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// NOERROR with this address (an A or AAAA record, by its family).
    Address(IpAddr),
    /// NXDOMAIN: under the Lattice zone, but nothing this VPC reaches.
    NxDomain,
    /// NOERROR with no records: the name exists but has no record of the asked type.
    NoData,
    /// REFUSED: not a name this responder answers for.
    Refused,
}

// === impl Zones ===

impl Zones {
    /// Indexes every VPC of `snapshot` that has an ingress address.
    pub(crate) fn build(snapshot: &Arc<Snapshot>) -> Self {
        let by_vpc = snapshot
            .vpcs
            .values()
            .filter_map(|vpc| Some((vpc.vpc_id.clone(), Arc::new(VpcZone::build(snapshot, vpc)?))))
            .collect();
        Self { by_vpc }
    }

    /// The zone of a VPC, if it has an ingress address in this snapshot.
    pub(crate) fn find(&self, vpc_id: &str) -> Option<&Arc<VpcZone>> {
        self.by_vpc.get(vpc_id)
    }
}

// === impl VpcZone ===

impl VpcZone {
    /// Indexes what `vpc` resolves; `None` when it has no ingress address (no responder).
    fn build(snapshot: &Arc<Snapshot>, vpc: &VpcView) -> Option<Self> {
        let ingress = vpc.ingress?;
        // The parents of the names that resolve, once each (text: no allocation per service).
        let mut parents: HashSet<&str> = HashSet::new();
        for (service_id, reach) in &vpc.reach {
            let Some(service) = snapshot.services.get(service_id) else { continue };
            let custom = service.custom_domain_name.as_deref().filter(|_| reach.private_dns);
            for name in [Some(&*service.dns_name), custom].into_iter().flatten() {
                if let Some((_, parent)) = name.split_once('.') {
                    parents.insert(parent);
                }
            }
        }
        let mut empty = HashSet::new();
        for parent in parents {
            let Ok(mut ancestor) = Name::from_ascii(parent) else {
                tracing::debug!(name = parent, "not a DNS name; not served");
                continue;
            };
            ancestor.set_fqdn(true);
            while lattice_zone_depth(&ancestor).is_some() {
                let next = ancestor.base_name();
                empty.insert(ancestor);
                ancestor = next;
            }
        }
        let (peers, vpc_id, snapshot) = (vpc.peers.clone(), vpc.vpc_id.clone(), snapshot.clone());
        Some(Self { ingress, peers, snapshot, vpc_id, empty })
    }

    /// Other nodes' addresses of the same family as `ip` (for a question of type ANY: all),
    /// answered after this node's.
    pub(crate) fn peers(&self, ip: IpAddr, any: bool) -> impl Iterator<Item = IpAddr> + '_ {
        self.peers.iter().copied().filter(move |p| any || p.is_ipv4() == ip.is_ipv4())
    }

    /// What `name` (fully qualified) is in this zone: the generated name of a service the VPC
    /// reaches, or its custom domain name where the VPC's association has private DNS; else an
    /// ancestor of one inside the Lattice zone; else nothing.
    fn find(&self, name: &Name) -> Option<Node> {
        let text = name.to_lowercase().to_ascii();
        let text = text.strip_suffix('.').unwrap_or(&text);
        let snapshot = &*self.snapshot;
        let service = snapshot.hosts.get(text).and_then(|id| {
            let reach = snapshot.vpcs.get(&self.vpc_id)?.reach.get(&**id)?;
            Some((snapshot.services.get(&**id)?, reach))
        });
        if let Some((service, reach)) = service {
            let custom = reach.private_dns && service.custom_domain_name.as_deref() == Some(text);
            if *service.dns_name == *text || custom {
                return Some(Node::Service);
            }
        }
        self.empty.contains(name).then_some(Node::Empty)
    }

    /// Answers a question for `name` (any case, with or without the trailing dot). Class IN or
    /// ANY; other classes are refused. A question of type ANY gets the address (RFC 8482 lets a
    /// responder answer ANY with a subset).
    pub(crate) fn answer(&self, name: &Name, qtype: RecordType, qclass: DNSClass) -> Answer {
        if !matches!(qclass, DNSClass::IN | DNSClass::ANY) {
            return Answer::Refused;
        }
        let node = if name.is_fqdn() {
            self.find(name)
        } else {
            // Names off the wire are always fully qualified; this is for callers holding text.
            let mut fqdn = name.clone();
            fqdn.set_fqdn(true);
            self.find(&fqdn)
        };
        match node {
            Some(Node::Service) => match (qtype, self.ingress) {
                (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)) | (RecordType::ANY, _) => {
                    Answer::Address(self.ingress)
                }
                _ => Answer::NoData,
            },
            Some(Node::Empty) => Answer::NoData,
            None if lattice_zone_depth(name).is_some() => Answer::NxDomain,
            None => Answer::Refused,
        }
    }
}

/// How many labels `name` has below the Lattice zone apex (`vpc-lattice-svcs.<region>.on.aws`),
/// 0 for the apex itself; `None` outside the zone.
fn lattice_zone_depth(name: &Name) -> Option<usize> {
    let labels = usize::from(name.num_labels());
    let mut rev = name.iter().rev();
    let suffix = [Some(&b"aws"[..]), Some(&b"on"[..])];
    for want in suffix {
        if !rev.next().zip(want).is_some_and(|(got, want)| got.eq_ignore_ascii_case(want)) {
            return None;
        }
    }
    let region = rev.next()?;
    let lattice = rev.next()?;
    (!region.is_empty() && lattice.eq_ignore_ascii_case(LATTICE_LABEL)).then(|| labels - 4)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use trellis_model::snapshot::{Reach, ServiceView, hosts};

    use super::*;

    pub(crate) const A_NAME: &str = "alpha-0123456789abcdef0.7d67968.vpc-lattice-svcs.us-east-1.on.aws";
    pub(crate) const B_NAME: &str = "beta-0123456789abcdef1.7d67968.vpc-lattice-svcs.us-east-1.on.aws";

    pub(crate) fn service(id: &str, dns_name: &str, custom: Option<&str>) -> (Arc<str>, Arc<ServiceView>) {
        let view = ServiceView {
            id: id.into(),
            arn: format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{id}").into(),
            dns_name: dns_name.into(),
            custom_domain_name: custom.map(Arc::from),
            certificate_arn: None,
            idle_timeout: Duration::from_secs(60),
            listeners: Default::default(),
        };
        (id.into(), Arc::new(view))
    }

    pub(crate) fn vpc(id: &str, ingress: Option<IpAddr>, reach: &[(&str, bool)]) -> (String, VpcView) {
        let reach = reach
            .iter()
            .map(|&(svc, private_dns)| {
                let reach = Reach {
                    service_network_id: "sn-0123456789abcdef0".into(),
                    service_network_arn:
                        "arn:aws:vpc-lattice:us-east-1:000000000000:servicenetwork/sn-0123456789abcdef0".into(),
                    private_dns,
                };
                (svc.into(), reach)
            })
            .collect();
        let view = VpcView {
            peers: Vec::new(),
            vpc_id: id.to_owned(),
            vpc_arn: format!("arn:aws:ec2:us-east-1:000000000000:vpc/{id}"),
            region: "us-east-1".to_owned(),
            account: "000000000000".to_owned(),
            ingress,
            reach,
        };
        (id.to_owned(), view)
    }

    /// Two services, both with custom names; vpc-1 reaches alpha with private DNS and beta
    /// without; vpc-2 (IPv6 ingress) reaches beta with private DNS; vpc-3 has no ingress.
    pub(crate) fn snapshot() -> Snapshot {
        let v4 = IpAddr::V4(Ipv4Addr::new(127, 77, 0, 1));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let mut snapshot = Snapshot {
            revision: 1,
            vpcs: [
                vpc("vpc-1", Some(v4), &[("svc-a", true), ("svc-b", false)]),
                vpc("vpc-2", Some(v6), &[("svc-b", true)]),
                vpc("vpc-3", None, &[("svc-a", true)]),
            ]
            .into_iter()
            .collect(),
            services: [
                service("svc-a", A_NAME, Some("alpha.example.com")),
                service("svc-b", B_NAME, Some("beta.example.com")),
            ]
            .into_iter()
            .collect(),
            ..Snapshot::default()
        };
        snapshot.hosts = hosts(&snapshot.services);
        snapshot
    }

    fn ask(zones: &Zones, vpc: &str, name: &str, qtype: RecordType) -> Answer {
        let name = Name::from_ascii(name).unwrap();
        zones.find(vpc).unwrap().answer(&name, qtype, DNSClass::IN)
    }

    #[test]
    fn answers_per_vpc() {
        let zones = Zones::build(&Arc::new(snapshot()));
        let v4 = Answer::Address(IpAddr::V4(Ipv4Addr::new(127, 77, 0, 1)));
        let v6 = Answer::Address(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let upper = A_NAME.to_uppercase();
        let dotted = format!("{A_NAME}.");
        let apex = "vpc-lattice-svcs.us-east-1.on.aws";
        let cases: &[(&str, &str, RecordType, Answer)] = &[
            // Generated names of reachable services, any case, with or without the dot.
            ("vpc-1", A_NAME, RecordType::A, v4),
            ("vpc-1", &upper, RecordType::A, v4),
            ("vpc-1", &dotted, RecordType::A, v4),
            ("vpc-1", B_NAME, RecordType::A, v4),
            ("vpc-1", A_NAME, RecordType::ANY, v4),
            // Other types of a known name: NODATA.
            ("vpc-1", A_NAME, RecordType::AAAA, Answer::NoData),
            ("vpc-1", A_NAME, RecordType::TXT, Answer::NoData),
            ("vpc-1", A_NAME, RecordType::MX, Answer::NoData),
            // Custom names: private DNS on (alpha) resolves, off (beta) is refused.
            ("vpc-1", "alpha.example.com", RecordType::A, v4),
            ("vpc-1", "ALPHA.Example.COM.", RecordType::A, v4),
            ("vpc-1", "alpha.example.com", RecordType::AAAA, Answer::NoData),
            ("vpc-1", "beta.example.com", RecordType::A, Answer::Refused),
            ("vpc-1", "www.alpha.example.com", RecordType::A, Answer::Refused),
            ("vpc-1", "example.com", RecordType::A, Answer::Refused),
            // Under the Lattice zone, any region: NXDOMAIN, but ancestors of known names exist.
            (
                "vpc-1",
                "nope-0123456789abcdef9.7d67968.vpc-lattice-svcs.us-east-1.on.aws",
                RecordType::A,
                Answer::NxDomain,
            ),
            ("vpc-1", "x.7d67968.vpc-lattice-svcs.eu-west-3.on.aws", RecordType::A, Answer::NxDomain),
            ("vpc-1", "X.VPC-LATTICE-SVCS.AP-SOUTH-1.ON.AWS.", RecordType::AAAA, Answer::NxDomain),
            ("vpc-1", &format!("www.{A_NAME}"), RecordType::A, Answer::NxDomain),
            ("vpc-1", "7d67968.vpc-lattice-svcs.us-east-1.on.aws", RecordType::A, Answer::NoData),
            ("vpc-1", apex, RecordType::SOA, Answer::NoData),
            ("vpc-1", "vpc-lattice-svcs.eu-west-3.on.aws", RecordType::A, Answer::NxDomain),
            // Not the zone: refused.
            ("vpc-1", "on.aws", RecordType::A, Answer::Refused),
            ("vpc-1", "foo.vpc-lattice-svcs.on.aws", RecordType::A, Answer::Refused),
            ("vpc-1", "example.org", RecordType::A, Answer::Refused),
            ("vpc-1", ".", RecordType::NS, Answer::Refused),
            // vpc-2 reaches beta only (private DNS on), and its ingress is IPv6.
            ("vpc-2", B_NAME, RecordType::AAAA, v6),
            ("vpc-2", B_NAME, RecordType::A, Answer::NoData),
            ("vpc-2", "beta.example.com", RecordType::AAAA, v6),
            ("vpc-2", A_NAME, RecordType::A, Answer::NxDomain),
            ("vpc-2", "alpha.example.com", RecordType::A, Answer::Refused),
        ];
        for (vpc, name, qtype, want) in cases {
            assert_eq!(ask(&zones, vpc, name, *qtype), *want, "{vpc} {name} {qtype}");
        }
    }

    #[test]
    fn vpcs_without_ingress_or_unknown_have_no_zone() {
        let zones = Zones::build(&Arc::new(snapshot()));
        assert!(zones.find("vpc-3").is_none());
        assert!(zones.find("vpc-9").is_none());
        assert_eq!(zones.find("vpc-1").unwrap().ingress, IpAddr::V4(Ipv4Addr::new(127, 77, 0, 1)));
    }

    #[test]
    fn other_classes_are_refused() {
        let zones = Zones::build(&Arc::new(snapshot()));
        let zone = zones.find("vpc-1").unwrap();
        let name = Name::from_ascii(A_NAME).unwrap();
        assert_eq!(zone.answer(&name, RecordType::A, DNSClass::CH), Answer::Refused);
        assert!(matches!(zone.answer(&name, RecordType::A, DNSClass::ANY), Answer::Address(_)));
    }

    #[test]
    fn zone_depth() {
        let depth = |s: &str| lattice_zone_depth(&Name::from_ascii(s).unwrap());
        assert_eq!(depth("vpc-lattice-svcs.us-east-1.on.aws"), Some(0));
        assert_eq!(depth(A_NAME), Some(2));
        assert_eq!(depth("on.aws"), None);
        assert_eq!(depth("aws"), None);
        assert_eq!(depth("vpc-lattice-svcs.us-east-1.on.aws.example.com"), None);
    }

    #[test]
    fn services_missing_from_the_snapshot_are_skipped() {
        let mut snap = snapshot();
        snap.services.remove("svc-a");
        let zones = Zones::build(&Arc::new(snap));
        assert_eq!(ask(&zones, "vpc-1", A_NAME, RecordType::A), Answer::NxDomain);
        assert_eq!(ask(&zones, "vpc-1", "alpha.example.com", RecordType::A), Answer::Refused);
    }
}
