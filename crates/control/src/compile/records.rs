//! Reading the store's key-values for the compiler: which keys matter, and their records
//! decoded into lean shapes that keep only what the data plane needs. The stored JSON is that of
//! `trellis_model::lattice`'s records; these shapes read the same JSON but skip names, tags and
//! timestamps, which is most of the bytes and most of the cost of a 10,000-service compile.
//! Records that fail to decode are skipped with a warning.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use trellis_model::Kind;
use trellis_model::Timestamp;
use trellis_model::lattice::{ListenerProtocol, RuleAction, RuleMatch, Status, TargetGroupConfig};
use trellis_store::KeyValue;

/// Where every resource key starts.
pub(super) const RESOURCES: &str = "r/";
/// Most threads a compile decodes on.
const MAX_THREADS: usize = 4;
/// Fewest key-values worth a thread of their own.
const MIN_CHUNK: usize = 4096;

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
}

/// A service (`res/svc/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceRec {
    pub(super) id: String,
    pub(super) arn: String,
    pub(super) dns_name: String,
    #[serde(default)]
    pub(super) custom_domain_name: Option<String>,
    #[serde(default)]
    pub(super) idle_timeout_seconds: Option<u32>,
}

/// A listener (`listener/<svc>/…`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListenerRec {
    pub(super) id: String,
    pub(super) arn: String,
    pub(super) service_id: String,
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
    pub(super) service_id: String,
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

/// The decoded records a snapshot is built from, borrowing keys from the key-values.
#[derive(Default)]
pub(super) struct Records<'k> {
    /// By ID.
    pub(super) service_networks: HashMap<String, NetworkRec>,
    /// By ID.
    pub(super) services: BTreeMap<String, ServiceRec>,
    pub(super) listeners: Vec<ListenerRec>,
    /// By listener ID.
    pub(super) rules: HashMap<String, Vec<RuleRec>>,
    pub(super) target_groups: Vec<(Scope<'k>, TargetGroupRec)>,
    /// By target group ID, in key order.
    pub(super) targets: HashMap<&'k str, Vec<TargetRec>>,
    pub(super) vpc_associations: Vec<(Scope<'k>, VpcAssociationRec)>,
    pub(super) service_associations: Vec<ServiceAssociationRec>,
    pub(super) vpcs: Vec<(Scope<'k>, VpcRec)>,
    pub(super) subnets: Vec<SubnetRec>,
    /// By (region, VPC ID).
    pub(super) ingress: HashMap<(&'k str, &'k str), IpAddr>,
}

// === impl Records ===

impl<'k> Records<'k> {
    /// Files every key-value: resources under `r/`, ingress addresses under `ingress_prefix`
    /// (`node/<node>/vpc/`); other keys are ignored. Decoding is most of a compile's work, so
    /// large stores are decoded on several threads, in chunks merged back in key order.
    pub(super) fn read(kvs: &'k [KeyValue], ingress_prefix: &str) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS);
        let chunk = kvs.len().div_ceil(threads).max(MIN_CHUNK);
        if kvs.len() <= chunk {
            return Self::read_chunk(kvs, ingress_prefix);
        }
        std::thread::scope(|scope| {
            let mut chunks = kvs.chunks(chunk);
            let first = chunks.next().unwrap_or_default();
            let others: Vec<_> = chunks.map(|c| scope.spawn(move || Self::read_chunk(c, ingress_prefix))).collect();
            let mut records = Self::read_chunk(first, ingress_prefix);
            for handle in others {
                match handle.join() {
                    Ok(more) => records.merge(more),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            records
        })
    }

    /// Appends records read from the key-values that follow this one's.
    pub(super) fn merge(&mut self, more: Self) {
        self.service_networks.extend(more.service_networks);
        self.services.extend(more.services);
        self.listeners.extend(more.listeners);
        for (listener, rules) in more.rules {
            self.rules.entry(listener).or_default().extend(rules);
        }
        self.target_groups.extend(more.target_groups);
        for (tg, targets) in more.targets {
            self.targets.entry(tg).or_default().extend(targets);
        }
        self.vpc_associations.extend(more.vpc_associations);
        self.service_associations.extend(more.service_associations);
        self.vpcs.extend(more.vpcs);
        self.subnets.extend(more.subnets);
        self.ingress.extend(more.ingress);
    }

    /// Files the key-values of one chunk.
    pub(super) fn read_chunk(kvs: &'k [KeyValue], ingress_prefix: &str) -> Self {
        let mut records = Self::default();
        for kv in kvs {
            if let Some(rest) = kv.key.strip_prefix(RESOURCES) {
                records.resource(kv, rest);
            } else if let Some(rest) = kv.key.strip_prefix(ingress_prefix) {
                records.ingress(kv, rest);
            }
        }
        records
    }

    /// Files one key under `r/` (`rest` is what follows it); ignores index keys.
    fn resource(&mut self, kv: &'k KeyValue, rest: &'k str) {
        let mut parts = rest.splitn(4, '/');
        let (Some(region), Some(account), Some(what), Some(tail)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let scope = Scope { region, account };
        match what {
            "res" => self.top_level(kv, scope, tail),
            "listener" => self.listeners.extend(decode(kv)),
            "rule" => {
                if let Some(rule) = decode::<RuleRec>(kv) {
                    self.rules.entry(rule.listener_id.clone()).or_default().push(rule);
                }
            }
            "target" => {
                if let Some((tg, _)) = tail.split_once('/') {
                    self.targets.entry(tg).or_default().extend(decode(kv));
                }
            }
            _ => {}
        }
    }

    /// Files a top-level resource (`res/<kind>/<id>`, `tail` being `<kind>/<id>`).
    fn top_level(&mut self, kv: &'k KeyValue, scope: Scope<'k>, tail: &str) {
        let Some((kind, _)) = tail.split_once('/') else { return };
        match Kind::from_prefix(kind) {
            Some(Kind::ServiceNetwork) => {
                self.service_networks.extend(decode::<NetworkRec>(kv).map(|sn| (sn.id.clone(), sn)));
            }
            Some(Kind::Service) => self.services.extend(decode::<ServiceRec>(kv).map(|s| (s.id.clone(), s))),
            Some(Kind::TargetGroup) => self.target_groups.extend(decode(kv).map(|tg| (scope, tg))),
            Some(Kind::ServiceNetworkVpcAssociation) => {
                self.vpc_associations.extend(decode(kv).map(|a| (scope, a)));
            }
            Some(Kind::ServiceNetworkServiceAssociation) => self.service_associations.extend(decode(kv)),
            Some(Kind::Vpc) => self.vpcs.extend(decode(kv).map(|v| (scope, v))),
            Some(Kind::Subnet) => self.subnets.extend(decode(kv)),
            _ => {}
        }
    }

    /// Files an ingress address (`rest`: `<region>/<vpc-id>`, value: the address as text).
    fn ingress(&mut self, kv: &'k KeyValue, rest: &'k str) {
        let Some((region, vpc)) = rest.split_once('/') else { return };
        let text = String::from_utf8_lossy(&kv.value);
        match text.trim().parse::<IpAddr>() {
            Ok(addr) => {
                self.ingress.insert((region, vpc), addr);
            }
            Err(_) => tracing::warn!(key = %kv.key, value = %text, "ingress address is not an IP address; ignored"),
        }
    }
}

/// Decodes a record; `None` (and a warning) if it is unreadable.
fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(key = %kv.key, %error, "stored record is unreadable; left out of the data plane");
            None
        }
    }
}
