//! The compiled, immutable configuration the data plane runs on. The control plane builds a
//! [`Snapshot`] from the store (`trellis_control::compile`); the proxy, its DNS responder and its
//! health checker read it through an `Arc` swapped atomically, and never see the store.
//!
//! Everything a request needs is resolved here ahead of time: which services each VPC reaches
//! (and through which service network), each listener's rules in priority order with target
//! group IDs already resolved, and each target group's fully defaulted health check. Target
//! *health* is not part of the snapshot: it changes on its own clock and is published by the
//! health checker.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::cidr::Cidr;
use crate::hash::FastState;
use crate::lattice::{HealthCheckConfig, HttpMatch, ListenerProtocol};
use crate::policy::Policy;

/// One compiled configuration, tagged with the store revision it reflects.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The store revision this snapshot was compiled from.
    pub revision: i64,
    /// VPCs associated with at least one service network, by VPC ID.
    pub vpcs: BTreeMap<String, VpcView>,
    /// Every service that is associated with at least one service network, by service ID
    /// (the key is the view's own `id`).
    pub services: BTreeMap<Arc<str>, Arc<ServiceView>>,
    /// Every target group, by ID (including unused ones: health checks report `UNUSED`).
    pub target_groups: BTreeMap<String, Arc<TargetGroupView>>,
    /// Host names (generated and custom, lowercase) → service ID, for routing by `Host`/SNI;
    /// made by [`hosts`], and sharing the views' strings (looked up on every request: hashed
    /// fast).
    pub hosts: HashMap<Arc<str>, Arc<str>, FastState>,
    /// Every VPC's network (associated or not), by VPC ID: what netns mode makes real.
    pub networks: BTreeMap<String, VpcNetwork>,
    /// Service networks and services with `authType: AWS_IAM`, by ID (`sn-…`, `svc-…`); any
    /// other has `NONE`.
    pub iam: HashMap<String, IamAuth>,
    /// Access log subscriptions by owner ID (`sn-…`, `svc-…`), each owner's in ID order.
    pub access_logs: HashMap<String, Arc<[AccessLogView]>>,
}

/// An access log subscription, as the data plane writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogView {
    /// `als-…`.
    pub id: String,
    /// Where its records go.
    pub destination: crate::access_log::Destination,
    /// A service network's `RESOURCE` subscription: stored, and logs nothing until resource
    /// configurations exist (only `SERVICE` subscriptions and services' log requests).
    pub resource_only: bool,
}

/// A service network or service that lets through only what its auth policy allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamAuth {
    /// The policy, compiled; `None` without one (or with one that does not compile): every
    /// request is denied.
    pub policy: Option<Arc<Policy>>,
    /// The document it was compiled from (a new build reuses the compiled policy while this
    /// stays the same).
    pub source: Option<Arc<str>>,
}

/// A VPC's address plan: its block and its subnets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpcNetwork {
    /// `vpc-…`.
    pub vpc_id: String,
    /// The region it lives in.
    pub region: String,
    /// The account that owns it.
    pub account: String,
    /// Its primary IPv4 block.
    pub cidr: Cidr,
    /// Its subnets' blocks, by subnet ID.
    pub subnets: BTreeMap<String, Cidr>,
}

/// A VPC, as the data plane sees it: where its clients enter, and what they can reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpcView {
    /// `vpc-…`.
    pub vpc_id: String,
    /// `arn:aws:ec2:<region>:<account>:vpc/vpc-…` (for `x-amzn-lattice-network`).
    pub vpc_arn: String,
    /// The region the VPC lives in.
    pub region: String,
    /// The account that owns it.
    pub account: String,
    /// The address its clients reach Lattice at (loopback mode: an ingress address on this
    /// node), once allocated.
    pub ingress: Option<IpAddr>,
    /// The ingress addresses other live proxy nodes serve this VPC on (loopback mode over a
    /// shared store): DNS answers list them after this node's own, so that a client can go to
    /// another node when one dies.
    pub peers: Vec<IpAddr>,
    /// The services reachable from this VPC, by service ID. A service reachable through several
    /// service networks appears once (the first network in ID order).
    pub reach: BTreeMap<Arc<str>, Reach>,
}

/// How a VPC reaches one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// The service network through which the VPC reaches the service (one copy per network,
    /// shared by its services).
    pub service_network_id: Arc<str>,
    /// Its ARN (for `x-amzn-lattice-target` and access logs), shared the same way.
    pub service_network_arn: Arc<str>,
    /// Whether the VPC's association has private DNS enabled (custom domain names resolve).
    pub private_dns: bool,
}

/// A service and its listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    /// `svc-…` (shared with the snapshot's maps and the compiler's record).
    pub id: Arc<str>,
    /// Its ARN (shared with the compiler's record).
    pub arn: Arc<str>,
    /// Its generated DNS name (lowercase; shared with [`Snapshot::hosts`]).
    pub dns_name: Arc<str>,
    /// Its custom domain name (lowercase), if any (shared the same way).
    pub custom_domain_name: Option<Arc<str>>,
    /// The customer certificate (ACM ARN) its custom domain name is served with over HTTPS.
    pub certificate_arn: Option<String>,
    /// Idle timeout for client and target connections.
    pub idle_timeout: Duration,
    /// Listeners, by port.
    pub listeners: Listeners,
}

/// A service's listeners by port: a sorted `Vec` with the lookups of a map. A service has one
/// or two listeners, and a `BTreeMap`'s first node has room for eleven (about 1.4 KB a service
/// at 10,000 services).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners(Vec<ListenerView>);

/// A listener: its protocol, its rules in evaluation order, and its default action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerView {
    /// `listener-…` (shared with the compiler's record). No ARN: the data plane names a
    /// listener by its ID alone, and 10,000 ARNs were a megabyte.
    pub id: Arc<str>,
    /// HTTP, HTTPS or TLS_PASSTHROUGH.
    pub protocol: ListenerProtocol,
    /// The port it listens on.
    pub port: u16,
    /// Custom rules, sorted by ascending priority (evaluation order).
    pub rules: Vec<RuleView>,
    /// What happens when no rule matches.
    pub default_action: Action,
}

/// A custom rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleView {
    /// `rule-…`.
    pub id: String,
    /// 1–2000; lower is evaluated first.
    pub priority: u32,
    /// What it matches (as the API stores it).
    pub matcher: HttpMatch,
    /// What it does.
    pub action: Action,
}

/// What a rule does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer with this status and no target.
    Fixed(u16),
    /// Pick a target group by weight (weights may be 0; at least one entry).
    Forward(Vec<WeightedTarget>),
}

/// One target group of a forward action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedTarget {
    /// `tg-…` (always present in [`Snapshot::target_groups`]).
    pub target_group_id: String,
    /// 0–999.
    pub weight: u32,
}

/// A target group and its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroupView {
    /// `tg-…`.
    pub id: String,
    /// Its ARN.
    pub arn: String,
    /// The region it lives in.
    pub region: String,
    /// The account that owns it.
    pub account: String,
    /// `IP`, `INSTANCE`, `LAMBDA` or `ALB`.
    pub target_type: String,
    /// `HTTP`, `HTTPS` or `TCP` (absent for Lambda).
    pub protocol: Option<String>,
    /// `HTTP1`, `HTTP2` or `GRPC`.
    pub protocol_version: Option<String>,
    /// The VPC its targets live in.
    pub vpc_id: Option<String>,
    /// Fully defaulted health check (every member present).
    pub health_check: HealthCheckConfig,
    /// Whether any listener or rule forwards to it (else its targets are `UNUSED`).
    pub in_use: bool,
    /// Registered targets, including draining ones.
    pub targets: Vec<TargetView>,
}

/// A registered target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetView {
    /// As registered (an IP address for IP target groups).
    pub id: String,
    /// The port traffic goes to.
    pub port: u16,
    /// Where to connect, when `id` is an address.
    pub addr: Option<SocketAddr>,
    /// Deregistered and draining since this many milliseconds after the Unix epoch: it gets no
    /// new requests.
    pub draining_since_ms: Option<u64>,
}

/// Generated and custom names (lowercase) → service ID, sharing the views' strings. Should two
/// services claim one custom name (possible across service networks), the lower service ID
/// keeps it.
pub fn hosts(services: &BTreeMap<Arc<str>, Arc<ServiceView>>) -> HashMap<Arc<str>, Arc<str>, FastState> {
    let custom = services.values().filter(|s| s.custom_domain_name.is_some()).count();
    let mut hosts = HashMap::with_capacity_and_hasher(services.len() + custom, FastState::default());
    for (id, svc) in services {
        hosts.insert(svc.dns_name.clone(), id.clone());
        if let Some(custom) = &svc.custom_domain_name {
            hosts.entry(custom.clone()).or_insert_with(|| id.clone());
        }
    }
    hosts
}

// === impl Snapshot ===

impl Snapshot {
    /// The service a request to `host` (a name, lowercase, without port) on `port` from `vpc_id`
    /// is for, and how the VPC reaches it. Looks at generated and custom domain names.
    pub fn find_service(&self, vpc_id: &str, host: &str) -> Option<(&Arc<ServiceView>, &Reach)> {
        let id = self.hosts.get(host)?;
        let reach = self.vpcs.get(vpc_id)?.reach.get(id)?;
        Some((self.services.get(id)?, reach))
    }
}

// === impl Listeners ===

impl Listeners {
    /// The listener on `port`.
    pub fn get(&self, port: &u16) -> Option<&ListenerView> {
        self.find(*port).ok().map(|at| &self.0[at])
    }

    /// The listener on `port`, to change (tests build snapshots by hand).
    pub fn get_mut(&mut self, port: &u16) -> Option<&mut ListenerView> {
        self.find(*port).ok().map(|at| &mut self.0[at])
    }

    /// The ports, ascending.
    pub fn keys(&self) -> impl Iterator<Item = &u16> {
        self.0.iter().map(|l| &l.port)
    }

    /// The listeners, by ascending port.
    pub fn values(&self) -> impl Iterator<Item = &ListenerView> {
        self.0.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, port: u16) -> Result<usize, usize> {
        self.0.binary_search_by_key(&port, |l| l.port)
    }
}

/// As a map collects: by port, the last of listeners on one port wins (the key is the port the
/// pair names, which is the view's own).
impl FromIterator<(u16, ListenerView)> for Listeners {
    fn from_iter<I: IntoIterator<Item = (u16, ListenerView)>>(iter: I) -> Self {
        let mut out = Self(Vec::new());
        for (port, mut view) in iter {
            view.port = port;
            match out.find(port) {
                Ok(at) => out.0[at] = view,
                Err(at) => out.0.insert(at, view),
            }
        }
        out.0.shrink_to_fit();
        out
    }
}

impl<const N: usize> From<[(u16, ListenerView); N]> for Listeners {
    fn from(pairs: [(u16, ListenerView); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl std::ops::Index<&u16> for Listeners {
    type Output = ListenerView;

    fn index(&self, port: &u16) -> &ListenerView {
        self.get(port).expect("no listener on that port")
    }
}
