//! Reading the store's key-values for the compiler: which keys matter ([`decode`]), their
//! records decoded into lean shapes that keep only what the data plane needs, and [`Records`],
//! the records of a [`Model`](super::model::Model) filed the way a build looks them up. The
//! stored JSON is that of `trellis_model::lattice`'s records; these shapes read the same JSON but
//! skip names, tags and timestamps, which is most of the bytes and most of the cost of decoding
//! 10,000 services. Records that fail to decode are skipped with a warning.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use trellis_model::Kind;
use trellis_model::Timestamp;
use trellis_model::lattice::{AuthType, ListenerProtocol, RuleAction, RuleMatch, Status, TargetGroupConfig};

/// Where every resource key starts.
pub(super) const RESOURCES: &str = "r/";

/// The region and account a record was stored under.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scope<'k> {
    pub(super) region: &'k str,
    pub(super) account: &'k str,
}

/// A service network (`res/sn/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NetworkRec {
    pub(super) id: String,
    pub(super) arn: String,
    #[serde(default)]
    pub(super) auth_type: AuthType,
}

/// An access log subscription (`res/als/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AccessLogRec {
    pub(super) id: String,
    pub(super) resource_id: String,
    pub(super) destination_arn: String,
    #[serde(default)]
    pub(super) service_network_log_type: Option<String>,
}

/// An auth policy (`authpolicy/<sn-… or svc-…>`): its owner (from the key) and its document.
pub(super) struct AuthPolicyRec {
    pub(super) owner: String,
    pub(super) policy: String,
}

/// A service (`res/svc/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceRec {
    #[serde(deserialize_with = "shared")]
    pub(super) id: Arc<str>,
    #[serde(deserialize_with = "shared")]
    pub(super) arn: Arc<str>,
    #[serde(deserialize_with = "shared")]
    pub(super) dns_name: Arc<str>,
    #[serde(default)]
    pub(super) custom_domain_name: Option<String>,
    #[serde(default)]
    pub(super) certificate_arn: Option<String>,
    #[serde(default)]
    pub(super) auth_type: AuthType,
    #[serde(default)]
    pub(super) idle_timeout_seconds: Option<u32>,
}

/// A listener (`listener/<svc>/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListenerRec {
    #[serde(deserialize_with = "shared")]
    pub(super) id: Arc<str>,
    #[serde(deserialize_with = "shared")]
    pub(super) service_id: Arc<str>,
    pub(super) protocol: ListenerProtocol,
    pub(super) port: u16,
    pub(super) default_action: RuleAction,
}

/// A rule (`rule/<listener>/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RuleRec {
    pub(super) id: String,
    pub(super) listener_id: String,
    pub(super) priority: u32,
    #[serde(rename = "match")]
    pub(super) rule_match: RuleMatch,
    pub(super) action: RuleAction,
}

/// A target group (`res/tg/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TargetGroupRec {
    pub(super) id: String,
    pub(super) arn: String,
    #[serde(rename = "type")]
    pub(super) target_type: String,
    #[serde(default)]
    pub(super) config: Option<TargetGroupConfig>,
}

/// A target (`target/<tg>/<id>/<port>`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TargetRec {
    pub(super) id: String,
    pub(super) port: u16,
    #[serde(default)]
    pub(super) draining_since: Option<Timestamp>,
}

/// A VPC association (`res/snva/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VpcAssociationRec {
    pub(super) id: String,
    pub(super) service_network_id: String,
    pub(super) vpc_id: String,
    pub(super) private_dns_enabled: bool,
    pub(super) status: Status,
}

/// A service association (`res/snsa/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceAssociationRec {
    pub(super) service_network_id: String,
    #[serde(deserialize_with = "shared")]
    pub(super) service_id: Arc<str>,
    pub(super) status: Status,
}

/// A VPC (`res/vpc/…`), as EC2 stores it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VpcRec {
    pub(super) id: String,
    pub(super) cidr_block: String,
}

/// A subnet (`res/subnet/…`), as EC2 stores it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SubnetRec {
    pub(super) id: String,
    pub(super) vpc_id: String,
    pub(super) cidr_block: String,
}

/// One decoded record, as a [`Model`](super::model::Model) keeps it under its store key. Every
/// kind is boxed: a `Rec` is two words, and the model's B-tree nodes (eleven slots each, most
/// of them full or empty whatever is in them) hold keys and pointers, not 64-byte records.
pub(super) enum Rec {
    AccessLog(Box<AccessLogRec>),
    AuthPolicy(Box<AuthPolicyRec>),
    Ingress(Box<IpAddr>),
    Listener(Box<ListenerRec>),
    Network(Box<NetworkRec>),
    Rule(Box<RuleRec>),
    Service(Box<ServiceRec>),
    ServiceAssociation(Box<ServiceAssociationRec>),
    Subnet(Box<SubnetRec>),
    Target(Box<TargetRec>),
    TargetGroup(Box<TargetGroupRec>),
    Vpc(Box<VpcRec>),
    VpcAssociation(Box<VpcAssociationRec>),
}

/// The kinds of [`Rec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RecKind {
    AccessLog,
    AuthPolicy,
    Ingress,
    Listener,
    Network,
    Rule,
    Service,
    ServiceAssociation,
    Subnet,
    Target,
    TargetGroup,
    Vpc,
    VpcAssociation,
}

/// What a key-value is to the compiler.
pub(super) enum Decoded {
    /// Not part of the data plane's configuration (indexes, counters, health, other nodes…).
    Ignored,
    /// A record the compiler reads, which failed to decode (already warned about).
    Unreadable,
    /// A record.
    Rec(Rec),
}

/// The records of a model filed for a full build, borrowing from the model.
#[derive(Default)]
pub(super) struct Records<'m> {
    /// By ID.
    pub(super) service_networks: HashMap<&'m str, &'m NetworkRec>,
    /// By ID.
    pub(super) services: BTreeMap<&'m str, &'m ServiceRec>,
    /// In key order.
    pub(super) listeners: Vec<&'m ListenerRec>,
    /// By listener ID, in key order.
    pub(super) rules: HashMap<&'m str, Vec<&'m RuleRec>>,
    /// In key order.
    pub(super) target_groups: Vec<(Scope<'m>, &'m TargetGroupRec)>,
    /// By target group ID (from the key), in key order.
    pub(super) targets: HashMap<&'m str, Vec<&'m TargetRec>>,
    pub(super) vpc_associations: Vec<(Scope<'m>, &'m VpcAssociationRec)>,
    pub(super) service_associations: Vec<&'m ServiceAssociationRec>,
    pub(super) vpcs: Vec<(Scope<'m>, &'m VpcRec)>,
    pub(super) subnets: Vec<&'m SubnetRec>,
    /// By (region, VPC ID).
    pub(super) ingress: HashMap<(&'m str, &'m str), IpAddr>,
    /// Auth policy documents by owner ID.
    pub(super) auth_policies: HashMap<&'m str, &'m str>,
    /// Access log subscriptions, in key order.
    pub(super) access_logs: Vec<&'m AccessLogRec>,
}

// === impl Records ===

impl<'m> Records<'m> {
    /// Files every entry of a model, given in key order (ingress addresses are under
    /// `ingress_prefix`).
    pub(super) fn file(entries: impl Iterator<Item = (&'m str, &'m Rec)>, ingress_prefix: &str) -> Self {
        let mut records = Self::default();
        for (key, rec) in entries {
            records.file_one(key, rec, ingress_prefix);
        }
        records
    }

    fn file_one(&mut self, key: &'m str, rec: &'m Rec, ingress_prefix: &str) {
        if let Rec::Ingress(addr) = rec {
            // `<ingress_prefix><region>/<vpc-id>`.
            if let Some((region, vpc)) = key.strip_prefix(ingress_prefix).and_then(|rest| rest.split_once('/')) {
                self.ingress.insert((region, vpc), **addr);
            }
            return;
        }
        let Some((scope, what, tail)) = split_resource(key) else { return };
        match rec {
            Rec::AccessLog(a) => self.access_logs.push(a),
            Rec::AuthPolicy(p) => {
                self.auth_policies.insert(&p.owner, &p.policy);
            }
            Rec::Ingress(_) => {}
            Rec::Listener(l) => self.listeners.push(l),
            Rec::Network(sn) => {
                self.service_networks.insert(&sn.id, sn);
            }
            Rec::Rule(r) => self.rules.entry(r.listener_id.as_str()).or_default().push(r),
            Rec::Service(s) => {
                self.services.insert(&s.id, s);
            }
            Rec::ServiceAssociation(a) => self.service_associations.push(a),
            Rec::Subnet(s) => self.subnets.push(s),
            Rec::Target(t) => {
                debug_assert_eq!(what, "target");
                if let Some((tg, _)) = tail.split_once('/') {
                    self.targets.entry(tg).or_default().push(t);
                }
            }
            Rec::TargetGroup(tg) => self.target_groups.push((scope, tg)),
            Rec::Vpc(v) => self.vpcs.push((scope, v)),
            Rec::VpcAssociation(a) => self.vpc_associations.push((scope, a)),
        }
    }
}

/// What a key-value under `r/` or `ingress_prefix` (`node/<node>/vpc/`) holds for the compiler.
pub(super) fn decode(key: &str, value: &[u8], ingress_prefix: &str) -> Decoded {
    let Some(kind) = kind(key, ingress_prefix) else { return Decoded::Ignored };
    match kind {
        RecKind::AccessLog => read(key, value, |a| Rec::AccessLog(Box::new(a))),
        RecKind::AuthPolicy => auth_policy(key, value),
        RecKind::Ingress => ingress(key, value),
        RecKind::Listener => read(key, value, |l| Rec::Listener(Box::new(l))),
        RecKind::Network => read(key, value, |n| Rec::Network(Box::new(n))),
        RecKind::Rule => read(key, value, |r| Rec::Rule(Box::new(r))),
        RecKind::Service => read(key, value, |s| Rec::Service(Box::new(s))),
        RecKind::ServiceAssociation => read(key, value, |a| Rec::ServiceAssociation(Box::new(a))),
        RecKind::Subnet => read(key, value, |s| Rec::Subnet(Box::new(s))),
        RecKind::Target => read(key, value, |t| Rec::Target(Box::new(t))),
        RecKind::TargetGroup => read(key, value, |tg| Rec::TargetGroup(Box::new(tg))),
        RecKind::Vpc => read(key, value, |v| Rec::Vpc(Box::new(v))),
        RecKind::VpcAssociation => read(key, value, |a| Rec::VpcAssociation(Box::new(a))),
    }
}

/// Which record a key holds, if the compiler reads it (index keys, health and the rest it
/// does not).
pub(super) fn kind(key: &str, ingress_prefix: &str) -> Option<RecKind> {
    if let Some(rest) = key.strip_prefix(ingress_prefix) {
        // `<region>/<vpc-id>`.
        return rest.contains('/').then_some(RecKind::Ingress);
    }
    let (_, what, tail) = split_resource(key)?;
    match what {
        "res" => {
            let (kind, _) = tail.split_once('/')?;
            match Kind::from_prefix(kind)? {
                Kind::AccessLogSubscription => Some(RecKind::AccessLog),
                Kind::ServiceNetwork => Some(RecKind::Network),
                Kind::Service => Some(RecKind::Service),
                Kind::TargetGroup => Some(RecKind::TargetGroup),
                Kind::ServiceNetworkVpcAssociation => Some(RecKind::VpcAssociation),
                Kind::ServiceNetworkServiceAssociation => Some(RecKind::ServiceAssociation),
                Kind::Vpc => Some(RecKind::Vpc),
                Kind::Subnet => Some(RecKind::Subnet),
                _ => None,
            }
        }
        "authpolicy" => Some(RecKind::AuthPolicy),
        "listener" => Some(RecKind::Listener),
        "rule" => Some(RecKind::Rule),
        "target" if tail.contains('/') => Some(RecKind::Target),
        _ => None,
    }
}

/// `r/<region>/<account>/<what>/<tail>`, split.
pub(super) fn split_resource(key: &str) -> Option<(Scope<'_>, &str, &str)> {
    let mut parts = key.strip_prefix(RESOURCES)?.splitn(4, '/');
    let (Some(region), Some(account), Some(what), Some(tail)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((Scope { region, account }, what, tail))
}

/// An auth policy: the owner from the key, the document from the stored record.
fn auth_policy(key: &str, value: &[u8]) -> Decoded {
    #[derive(Deserialize)]
    struct Stored {
        policy: String,
    }
    let owner = split_resource(key).map(|(_, _, tail)| tail.to_owned()).unwrap_or_default();
    read(key, value, |s: Stored| Rec::AuthPolicy(Box::new(AuthPolicyRec { owner, policy: s.policy })))
}

/// An ingress address (value: the address as text).
fn ingress(key: &str, value: &[u8]) -> Decoded {
    let text = String::from_utf8_lossy(value);
    match text.trim().parse::<IpAddr>() {
        Ok(addr) => Decoded::Rec(Rec::Ingress(Box::new(addr))),
        Err(_) => {
            tracing::warn!(%key, value = %text, "ingress address is not an IP address; ignored");
            Decoded::Unreadable
        }
    }
}

/// A string the snapshot's views share with the record (no copy per build).
fn shared<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    String::deserialize(d).map(Arc::from)
}

/// Decodes a record; [`Decoded::Unreadable`] (and a warning) if it is unreadable.
fn read<T: DeserializeOwned>(key: &str, value: &[u8], rec: impl FnOnce(T) -> Rec) -> Decoded {
    match serde_json::from_slice(value) {
        Ok(value) => Decoded::Rec(rec(value)),
        Err(error) => {
            tracing::warn!(%key, %error, "stored record is unreadable; left out of the data plane");
            Decoded::Unreadable
        }
    }
}
