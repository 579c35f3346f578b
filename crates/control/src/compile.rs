//! The compiler from store contents to the data plane's [`Snapshot`]: [`compile`] reads every
//! resource (all regions and accounts, under `r/`) and this node's ingress addresses (under
//! `node/<node>/vpc/<region>/<vpc-id>`, written by whoever allocates them), and
//! [`compile_from`] turns those key-values into a snapshot, as a pure function.
//!
//! What it resolves ahead of time: which VPCs are associated (an `ACTIVE` VPC association, or
//! one being updated) and which services each reaches; each associated service's listeners by
//! port, with rules in evaluation order and actions with weights filled in; the host names that
//! route to each service; every target group with a fully defaulted health check, whether
//! anything forwards to it, and its targets. Records that fail to decode are skipped with a
//! warning: one bad record must not take the data plane's configuration down. Owns no I/O
//! beyond the two range reads, and does not watch the store (the composition root does, and
//! calls [`compile`] again).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use trellis_model::cidr::Cidr;
use trellis_model::lattice::{HealthCheckConfig, Matcher, RuleAction, RuleMatch, Status};
use trellis_model::snapshot::{
    Action, ListenerView, Reach, RuleView, ServiceView, Snapshot, TargetGroupView, TargetView, VpcNetwork, VpcView,
    WeightedTarget,
};
use trellis_model::{Arn, Kind};
use trellis_store::{KeyValue, Revision, Store, StoreExt};

use records::{ListenerRec, Records, RuleRec, Scope, TargetRec, VpcAssociationRec};

mod records;

/// The weight of a forward entry stored without one (the API always stores one).
const DEFAULT_WEIGHT: u32 = 100;
/// A service's idle timeout when it has none (spec §3.9).
const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 60;
/// What a forward whose target groups are all gone answers (the store's delete guards prevent
/// it; a damaged store could still hold one).
const NO_TARGET_GROUP_STATUS: u16 = 503;

/// Reads the store and compiles the snapshot for `node`. The snapshot carries the revision of
/// the first (resource) read: a watch from the revision after it sees every later change.
pub async fn compile(store: &dyn Store, node: &str) -> Result<Snapshot, trellis_store::Error> {
    let resources = store.list_prefix(records::RESOURCES, None, 0).await?;
    let ingress = store.list_prefix(&ingress_prefix(node), None, 0).await?;
    let mut kvs = resources.kvs;
    kvs.extend(ingress.kvs);
    let (revision, node) = (resources.revision, node.to_owned());
    // Tens of milliseconds for 10,000 services: too long for a runtime worker thread.
    tokio::task::spawn_blocking(move || compile_from(&kvs, revision, &node)).await.map_err(|e| {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => trellis_store::Error::Backend(format!("the compile was cancelled: {e}")),
        }
    })
}

/// Compiles key-values read from the store (resources under `r/`, and ingress addresses under
/// `node/<node>/vpc/`; other keys are ignored) into the snapshot of `revision` for `node`.
pub fn compile_from(kvs: &[KeyValue], revision: Revision, node: &str) -> Snapshot {
    build(Records::read(kvs, &ingress_prefix(node)), revision)
}

/// The snapshot of `revision` made of these records.
fn build(mut records: Records<'_>, revision: Revision) -> Snapshot {
    let mut target_groups = records.take_target_groups();
    let services = records.take_services(&mut target_groups);
    let vpcs = records.vpcs(&services);
    let hosts = hosts(&services);
    let target_groups = target_groups.into_iter().map(|(id, tg)| (id, Arc::new(tg))).collect();
    let networks = records.networks();
    Snapshot { revision, vpcs, services, target_groups, hosts, networks }
}

/// Target groups by ID while a snapshot is being built (looked up for every forward action).
type TargetGroups = HashMap<String, TargetGroupView>;

/// The prefix of `node`'s ingress address keys.
fn ingress_prefix(node: &str) -> String {
    format!("node/{node}/vpc/")
}

// === impl Records ===

impl<'k> Records<'k> {
    /// Every VPC with its block and subnets (blocks that do not parse are left out, with a
    /// warning: the API validates them).
    fn networks(&mut self) -> BTreeMap<String, VpcNetwork> {
        let mut out: BTreeMap<String, VpcNetwork> = BTreeMap::new();
        for (scope, vpc) in std::mem::take(&mut self.vpcs) {
            let Ok(cidr) = vpc.cidr_block.parse::<Cidr>() else {
                tracing::warn!(vpc = %vpc.id, cidr = %vpc.cidr_block, "VPC block is unreadable; no network for it");
                continue;
            };
            let network = VpcNetwork {
                vpc_id: vpc.id.clone(),
                region: scope.region.to_owned(),
                account: scope.account.to_owned(),
                cidr,
                subnets: BTreeMap::new(),
            };
            out.insert(vpc.id, network);
        }
        for subnet in std::mem::take(&mut self.subnets) {
            let Some(vpc) = out.get_mut(&subnet.vpc_id) else { continue };
            match subnet.cidr_block.parse::<Cidr>() {
                Ok(cidr) => {
                    vpc.subnets.insert(subnet.id, cidr);
                }
                Err(_) => tracing::warn!(subnet = %subnet.id, "subnet block is unreadable; no network for it"),
            }
        }
        out
    }

    /// Every target group with its targets, not yet marked in use.
    fn take_target_groups(&mut self) -> TargetGroups {
        let mut out = HashMap::with_capacity(self.target_groups.len());
        for (scope, tg) in std::mem::take(&mut self.target_groups) {
            let mut config = tg.config.unwrap_or_default();
            let (protocol, version) = (config.protocol.as_deref(), config.protocol_version.as_deref());
            let health_check = health_check(&tg.target_type, protocol, version, config.health_check.take());
            let targets = self.targets.remove(tg.id.as_str()).unwrap_or_default();
            let view = TargetGroupView {
                id: tg.id.clone(),
                arn: tg.arn,
                region: scope.region.to_owned(),
                account: scope.account.to_owned(),
                target_type: tg.target_type,
                protocol: config.protocol,
                protocol_version: config.protocol_version,
                vpc_id: config.vpc_identifier,
                health_check,
                in_use: false,
                targets: targets.into_iter().map(target_view).collect(),
            };
            out.insert(tg.id, view);
        }
        out
    }

    /// Every service with at least one active service-network association, with its listeners.
    /// Marks the target groups that any listener or rule (of any service) forwards to.
    fn take_services(&mut self, tgs: &mut TargetGroups) -> BTreeMap<String, Arc<ServiceView>> {
        let associated: HashSet<&str> =
            self.service_associations.iter().filter(|a| serves(a.status)).map(|a| a.service_id.as_str()).collect();
        let mut listeners: HashMap<String, Vec<ListenerView>> = HashMap::new();
        for l in std::mem::take(&mut self.listeners) {
            let rules = self.rules.remove(&l.id).unwrap_or_default();
            mark_in_use(tgs, rules.iter().map(|r| &r.action).chain([&l.default_action]));
            if associated.contains(l.service_id.as_str()) {
                let service_id = l.service_id.clone();
                listeners.entry(service_id).or_default().push(listener_view(l, rules, tgs));
            }
        }
        // Rules whose listener is gone route nothing, but still count as users.
        mark_in_use(tgs, self.rules.values().flatten().map(|r| &r.action));
        let mut out = BTreeMap::new();
        for (id, svc) in std::mem::take(&mut self.services) {
            if !associated.contains(id.as_str()) {
                continue;
            }
            let (mut dns_name, mut custom_domain_name) = (svc.dns_name, svc.custom_domain_name);
            dns_name.make_ascii_lowercase();
            if let Some(custom) = &mut custom_domain_name {
                custom.make_ascii_lowercase();
            }
            let seconds = svc.idle_timeout_seconds.filter(|s| *s > 0).unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
            let view = ServiceView {
                arn: svc.arn,
                dns_name,
                custom_domain_name,
                idle_timeout: Duration::from_secs(u64::from(seconds)),
                listeners: listeners.remove(&id).unwrap_or_default().into_iter().map(|l| (l.port, l)).collect(),
                id: svc.id,
            };
            out.insert(id, Arc::new(view));
        }
        out
    }

    /// Every VPC with an active association, and the services it reaches: those associated with
    /// any of its service networks, each through the lowest service network ID.
    fn vpcs(&self, services: &BTreeMap<String, Arc<ServiceView>>) -> BTreeMap<String, VpcView> {
        let mut by_network: HashMap<&str, Vec<&str>> = HashMap::new();
        for a in self.service_associations.iter().filter(|a| serves(a.status)) {
            if services.contains_key(&a.service_id) {
                by_network.entry(a.service_network_id.as_str()).or_default().push(a.service_id.as_str());
            }
        }
        let mut associations: Vec<&(Scope<'k>, VpcAssociationRec)> =
            self.vpc_associations.iter().filter(|(_, a)| serves(a.status)).collect();
        associations.sort_by(|(_, a), (_, b)| (&a.service_network_id, &a.id).cmp(&(&b.service_network_id, &b.id)));
        let mut out = BTreeMap::new();
        for (scope, a) in associations {
            let view = out.entry(a.vpc_id.clone()).or_insert_with(|| VpcView {
                vpc_id: a.vpc_id.clone(),
                vpc_arn: format!("arn:aws:ec2:{}:{}:vpc/{}", scope.region, scope.account, a.vpc_id),
                region: scope.region.to_owned(),
                account: scope.account.to_owned(),
                ingress: self.ingress.get(&(scope.region, a.vpc_id.as_str())).copied(),
                reach: BTreeMap::new(),
            });
            let sn_id = a.service_network_id.as_str();
            let sn_arn = match self.service_networks.get(sn_id) {
                Some(sn) => sn.arn.clone(),
                None => Arn::lattice(scope.region, scope.account, Kind::ServiceNetwork, &[], sn_id),
            };
            for svc in by_network.get(sn_id).map_or(&[][..], Vec::as_slice) {
                view.reach.entry((*svc).to_owned()).or_insert_with(|| Reach {
                    service_network_id: sn_id.to_owned(),
                    service_network_arn: sn_arn.clone(),
                    private_dns: a.private_dns_enabled,
                });
            }
        }
        out
    }
}

/// Whether an association in this status carries traffic: an active one does, and so does one
/// whose settings are being updated (it stays in force meanwhile).
fn serves(status: Status) -> bool {
    matches!(status, Status::Active | Status::UpdateInProgress)
}

fn listener_view(l: ListenerRec, rules: Vec<RuleRec>, tgs: &TargetGroups) -> ListenerView {
    let mut rules: Vec<RuleView> = rules
        .into_iter()
        .map(|r| RuleView {
            action: action(r.action, tgs),
            id: r.id,
            priority: r.priority,
            matcher: match r.rule_match {
                RuleMatch::HttpMatch(m) => m,
            },
        })
        .collect();
    rules.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
    ListenerView {
        default_action: action(l.default_action, tgs),
        id: l.id,
        arn: l.arn,
        protocol: l.protocol,
        port: l.port,
        rules,
    }
}

/// Marks the target groups these actions forward to as in use.
fn mark_in_use<'a>(tgs: &mut TargetGroups, actions: impl Iterator<Item = &'a RuleAction>) {
    for action in actions {
        if let RuleAction::Forward(f) = action {
            for t in &f.target_groups {
                if let Some(tg) = tgs.get_mut(&t.target_group_identifier) {
                    tg.in_use = true;
                }
            }
        }
    }
}

/// An action as the data plane runs it: target groups that exist, weights filled in.
fn action(action: RuleAction, tgs: &TargetGroups) -> Action {
    match action {
        RuleAction::FixedResponse(f) => Action::Fixed(f.status_code),
        RuleAction::Forward(f) => {
            let list: Vec<WeightedTarget> = f
                .target_groups
                .into_iter()
                .filter(|t| tgs.contains_key(&t.target_group_identifier))
                .map(|t| WeightedTarget {
                    weight: t.weight.unwrap_or(DEFAULT_WEIGHT),
                    target_group_id: t.target_group_identifier,
                })
                .collect();
            if list.is_empty() {
                tracing::warn!("a forward action names no existing target group; it answers {NO_TARGET_GROUP_STATUS}");
                return Action::Fixed(NO_TARGET_GROUP_STATUS);
            }
            Action::Forward(list)
        }
    }
}

fn target_view(t: TargetRec) -> TargetView {
    TargetView {
        addr: t.id.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, t.port)),
        id: t.id,
        port: t.port,
        draining_since_ms: t.draining_since.map(|ts| ts.0),
    }
}

/// Generated and custom names (lowercase) → service ID. Should two services claim one custom
/// name (possible across service networks), the lower service ID keeps it.
fn hosts(services: &BTreeMap<String, Arc<ServiceView>>) -> HashMap<String, String> {
    let mut hosts = HashMap::with_capacity(services.len() * 2);
    for (id, svc) in services {
        hosts.insert(svc.dns_name.clone(), id.clone());
        if let Some(custom) = &svc.custom_domain_name {
            hosts.entry(custom.clone()).or_insert_with(|| id.clone());
        }
    }
    hosts
}

/// A target group's health check with every member filled in (spec §3.7): what is stored (the
/// API stores complete blocks), with gaps and zeros taking the defaults. Checks default to on
/// for HTTP1 target groups and off for HTTP2, GRPC and TCP ones, and are always off for LAMBDA
/// and ALB target groups, which cannot be checked. `port` stays absent when not set: it means
/// each target's own port.
fn health_check(
    target_type: &str,
    protocol: Option<&str>,
    version: Option<&str>,
    given: Option<HealthCheckConfig>,
) -> HealthCheckConfig {
    let (protocol, version) = (protocol.unwrap_or("HTTP"), version.unwrap_or("HTTP1"));
    let checkable = !matches!(target_type, "LAMBDA" | "ALB");
    let given = given.unwrap_or_default();
    let number = |v: Option<u32>, default: u32| Some(v.filter(|v| *v != 0).unwrap_or(default));
    HealthCheckConfig {
        enabled: Some(checkable && given.enabled.unwrap_or(protocol != "TCP" && version == "HTTP1")),
        protocol: Some(given.protocol.unwrap_or_else(|| if protocol == "HTTPS" { "HTTPS" } else { "HTTP" }.to_owned())),
        protocol_version: Some(given.protocol_version.unwrap_or_else(|| "HTTP1".to_owned())),
        port: given.port.filter(|p| *p != 0),
        path: Some(given.path.filter(|p| !p.is_empty()).unwrap_or_else(|| "/".to_owned())),
        health_check_interval_seconds: number(given.health_check_interval_seconds, 30),
        health_check_timeout_seconds: number(given.health_check_timeout_seconds, 5),
        healthy_threshold_count: number(given.healthy_threshold_count, 5),
        unhealthy_threshold_count: number(given.unhealthy_threshold_count, 2),
        matcher: Some(given.matcher.unwrap_or_else(|| Matcher { http_code: "200".to_owned() })),
    }
}

#[cfg(test)]
mod tests;
