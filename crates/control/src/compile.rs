//! The compiler from store contents to the data plane's [`Snapshot`]. [`Compiler`] reads every
//! resource once (all regions and accounts, under `r/`) and this node's ingress addresses (under
//! `node/<node>/vpc/<region>/<vpc-id>`, written by whoever allocates them), keeps them decoded,
//! takes the store's changes one key-value at a time, and builds a snapshot whenever asked.
//! [`compile`] and [`compile_from`] are the one-shot forms.
//!
//! What it resolves ahead of time: which VPCs are associated (an `ACTIVE` VPC association, or
//! one being updated) and which services each reaches; each associated service's listeners by
//! port, with rules in evaluation order and actions with weights filled in; the host names that
//! route to each service; every target group with a fully defaulted health check, whether
//! anything forwards to it, and its targets. Records that fail to decode are skipped with a
//! warning: one bad record must not take the data plane's configuration down.
//!
//! The first build after a full read files every record and builds every view ([`build`]).
//! After that, each change marks the views it can touch and a build remakes only those
//! (`incremental`): an unchanged service or target group stays the same `Arc` from snapshot to
//! snapshot, so a change costs neither the time nor the memory of the whole configuration. Owns
//! no I/O beyond the range reads of a full read, and does not watch the store (the composition
//! root does, and feeds the changes in).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use trellis_model::access_log::Destination;
use trellis_model::cidr::Cidr;
use trellis_model::lattice::{AuthType, HealthCheckConfig, Matcher, RuleAction, RuleMatch, Status};
use trellis_model::policy::Policy;
use trellis_model::snapshot::{
    AccessLogView, Action, IamAuth, ListenerView, Reach, RuleView, ServiceView, Snapshot, TargetGroupView, TargetView,
    VpcNetwork, VpcView, WeightedTarget, hosts,
};
use trellis_model::{Arn, Kind};
use trellis_store::{EventKind, KeyValue, Revision, Store, StoreExt, WatchEvent};

use incremental::{Dirty, Index};
use model::Model;
use records::{Decoded, ListenerRec, Records, RuleRec, ServiceRec, TargetGroupRec, TargetRec};

mod incremental;
mod model;
mod records;

/// The weight of a forward entry stored without one (the API always stores one).
const DEFAULT_WEIGHT: u32 = 100;
/// A service's idle timeout when it has none (spec §3.9).
const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 60;
/// What a forward whose target groups are all gone answers (the store's delete guards prevent
/// it; a damaged store could still hold one).
const NO_TARGET_GROUP_STATUS: u16 = 503;

/// The decoded store of one node, kept current by the store's changes, and its last build.
pub struct Compiler {
    model: Model,
    index: Index,
    dirty: Dirty,
    /// The last build (`None` before the first).
    built: Option<Arc<Snapshot>>,
    revision: Revision,
}

/// Every target group's ID while a snapshot is being built, and whether anything forwards to it.
type TargetGroups<'m> = HashMap<&'m str, bool>;

/// Reads the store and compiles the snapshot for `node`. The snapshot carries the revision of
/// the first (resource) read: a watch from the revision after it sees every later change.
pub async fn compile(store: &dyn Store, node: &str) -> Result<Snapshot, trellis_store::Error> {
    let compiler = Compiler::load(store, node).await?;
    blocking(move || compiler.into_snapshot()).await
}

/// Compiles key-values read from the store (resources under `r/`, and ingress addresses under
/// `node/<node>/vpc/`; other keys are ignored) into the snapshot of `revision` for `node`.
pub fn compile_from(kvs: &[KeyValue], revision: Revision, node: &str) -> Snapshot {
    Compiler::from_kvs(kvs, revision, node).into_snapshot()
}

/// Runs `f` off the runtime's workers: decoding or building 10,000 services takes tens of
/// milliseconds. A panic in it is a panic here.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, trellis_store::Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(e) => trellis_store::Error::Backend(format!("the compile was cancelled: {e}")),
    })
}

/// The prefix of `node`'s ingress address keys.
fn ingress_prefix(node: &str) -> String {
    format!("node/{node}/vpc/")
}

// === impl Compiler ===

impl Compiler {
    /// Reads the store for `node` and decodes it. [`Compiler::revision`] is that of the first
    /// (resource) read: a watch from the revision after it sees every later change.
    pub async fn load(store: &dyn Store, node: &str) -> Result<Self, trellis_store::Error> {
        let resources = store.list_prefix(records::RESOURCES, None, 0).await?;
        let ingress = store.list_prefix(&ingress_prefix(node), None, 0).await?;
        let mut kvs = resources.kvs;
        kvs.extend(ingress.kvs);
        let (revision, node) = (resources.revision, node.to_owned());
        blocking(move || Self::from_kvs(&kvs, revision, &node)).await
    }

    /// The compiler of key-values read from the store at `revision`, in key order.
    pub fn from_kvs(kvs: &[KeyValue], revision: Revision, node: &str) -> Self {
        let model = Model::from_kvs(kvs, ingress_prefix(node));
        let index = Index::of(&model);
        Self { model, index, dirty: Dirty::default(), built: None, revision }
    }

    /// The store revision the next snapshot reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Takes one change from a watch of the whole store (in revision order, every event after
    /// [`Compiler::revision`]); whether the next snapshot differs because of it. Changes to keys
    /// that are not part of the configuration (health, indexes, IAM, ECS…) only move the
    /// revision on.
    pub fn apply(&mut self, event: &WatchEvent) -> bool {
        self.revision = self.revision.max(event.kv.mod_revision);
        let key = event.kv.key.as_str();
        let new = match event.kind {
            EventKind::Put => match self.model.decode(key, &event.kv.value) {
                Decoded::Ignored => return false,
                // The full compile leaves an unreadable record out: so does the model.
                Decoded::Unreadable => None,
                Decoded::Rec(rec) => Some(rec),
            },
            EventKind::Delete => None,
        };
        let old = self.model.remove(key);
        if old.is_none() && new.is_none() {
            return false;
        }
        let key: Arc<str> = match old {
            Some((key, rec)) => {
                self.index.unlink(&key, &rec, &mut self.dirty);
                key
            }
            None => Arc::from(key),
        };
        if let Some(rec) = new {
            self.index.link(&key, &rec, &mut self.dirty);
            self.model.insert(key, rec);
        }
        true
    }

    /// Records that the store reached `revision` (through changes the snapshot is not made of).
    pub fn advance(&mut self, revision: Revision) {
        self.revision = self.revision.max(revision);
    }

    /// Whether a change of `key` can change the snapshot.
    pub fn reads(&self, key: &str) -> bool {
        self.model.reads(key)
    }

    /// The snapshot of everything applied so far. The compiler keeps it (shared, not copied)
    /// to build the next one from.
    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        let dirty = std::mem::take(&mut self.dirty);
        let built = match self.built.take() {
            None => Arc::new(build(self.model.records(), self.revision)),
            Some(last) => {
                // The data plane holds the last one: the next is a copy (views are shared).
                let mut next = Arc::unwrap_or_clone(last);
                incremental::update(&mut next, &self.model, &self.index, dirty);
                next.revision = self.revision;
                Arc::new(next)
            }
        };
        self.built = Some(built.clone());
        built
    }

    fn into_snapshot(mut self) -> Snapshot {
        match self.built.take() {
            None => build(self.model.records(), self.revision),
            Some(_) => Arc::unwrap_or_clone(self.snapshot()),
        }
    }
}

/// The snapshot of `revision` made of these records, every view built afresh.
fn build(records: Records<'_>, revision: Revision) -> Snapshot {
    let mut target_groups: TargetGroups<'_> =
        records.target_groups.iter().map(|(_, tg)| (tg.id.as_str(), false)).collect();
    let services = records.services(&mut target_groups);
    let target_groups = records.target_groups(&target_groups);
    let vpcs = records.vpcs(&services);
    let hosts = hosts(&services);
    let networks = records.networks();
    let iam = records.iam(&HashMap::new());
    let access_logs = records.access_logs();
    Snapshot { revision, vpcs, services, target_groups, hosts, networks, iam, access_logs }
}

// === impl Records ===

impl<'m> Records<'m> {
    /// Every VPC with its block and subnets (blocks that do not parse are left out, with a
    /// warning: the API validates them).
    /// Every service network and service with `authType: AWS_IAM`, with its policy compiled
    /// (reused from `previous` while its document is the same). A document that does not
    /// compile (stored before policies were checked, or damaged) counts as none: every request
    /// is denied, and a warning says why.
    fn iam(&self, previous: &HashMap<String, IamAuth>) -> HashMap<String, IamAuth> {
        let owners = self
            .service_networks
            .values()
            .filter(|sn| sn.auth_type == AuthType::AwsIam)
            .map(|sn| sn.id.as_str())
            .chain(self.services.values().filter(|s| s.auth_type == AuthType::AwsIam).map(|s| &*s.id));
        let mut out = HashMap::new();
        for id in owners {
            let source = self.auth_policies.get(id).copied();
            let auth = match (source, previous.get(id)) {
                (Some(text), Some(prev)) if prev.source.as_deref() == Some(text) => prev.clone(),
                (Some(text), _) => match Policy::compile(text) {
                    Ok(policy) => IamAuth { policy: Some(Arc::new(policy)), source: Some(Arc::from(text)) },
                    Err(e) => {
                        tracing::warn!(resource = %id, error = %e, "stored auth policy does not compile; denying every request");
                        IamAuth { policy: None, source: Some(Arc::from(text)) }
                    }
                },
                (None, _) => IamAuth { policy: None, source: None },
            };
            out.insert(id.to_owned(), auth);
        }
        out
    }

    /// Every access log subscription whose destination parses, by owner (a stored one that
    /// does not is left out with a warning: the API validates them).
    fn access_logs(&self) -> HashMap<String, Arc<[AccessLogView]>> {
        let mut by_owner: BTreeMap<&str, Vec<AccessLogView>> = BTreeMap::new();
        for rec in &self.access_logs {
            let Some(destination) = Destination::parse(&rec.destination_arn) else {
                tracing::warn!(subscription = %rec.id, arn = %rec.destination_arn, "access log destination is unreadable; nothing is logged for it");
                continue;
            };
            let resource_only = rec.service_network_log_type.as_deref() == Some("RESOURCE");
            by_owner.entry(&rec.resource_id).or_default().push(AccessLogView {
                id: rec.id.clone(),
                destination,
                resource_only,
            });
        }
        by_owner
            .into_iter()
            .map(|(owner, mut views)| {
                views.sort_by(|a, b| a.id.cmp(&b.id));
                (owner.to_owned(), Arc::from(views))
            })
            .collect()
    }

    fn networks(&self) -> BTreeMap<String, VpcNetwork> {
        let mut out: BTreeMap<String, VpcNetwork> = BTreeMap::new();
        for (scope, vpc) in &self.vpcs {
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
            out.insert(vpc.id.clone(), network);
        }
        for subnet in &self.subnets {
            let Some(vpc) = out.get_mut(&subnet.vpc_id) else { continue };
            match subnet.cidr_block.parse::<Cidr>() {
                Ok(cidr) => {
                    vpc.subnets.insert(subnet.id.clone(), cidr);
                }
                Err(_) => tracing::warn!(subnet = %subnet.id, "subnet block is unreadable; no network for it"),
            }
        }
        out
    }

    /// Every target group with its targets (`tgs` says which are in use).
    fn target_groups(&self, tgs: &TargetGroups<'m>) -> BTreeMap<String, Arc<TargetGroupView>> {
        let mut targets = self.targets.clone();
        let mut out = BTreeMap::new();
        for (scope, tg) in &self.target_groups {
            let targets = targets.remove(tg.id.as_str()).unwrap_or_default();
            let in_use = tgs.get(tg.id.as_str()).copied().unwrap_or(false);
            out.insert(tg.id.clone(), Arc::new(target_group_view(*scope, tg, &targets, in_use)));
        }
        out
    }

    /// Every service with at least one active service-network association, with its listeners.
    /// Marks the target groups that any listener or rule (of any service) forwards to.
    fn services(&self, tgs: &mut TargetGroups<'m>) -> BTreeMap<Arc<str>, Arc<ServiceView>> {
        let associated: HashSet<&str> =
            self.service_associations.iter().filter(|a| serves(a.status)).map(|a| &*a.service_id).collect();
        let mut rules = self.rules.clone();
        let mut listeners: HashMap<&str, Vec<(&ListenerRec, Vec<&RuleRec>)>> = HashMap::new();
        for l in &self.listeners {
            let rules = rules.remove(&*l.id).unwrap_or_default();
            mark_in_use(tgs, rules.iter().map(|r| &r.action).chain([&l.default_action]));
            if associated.contains(&*l.service_id) {
                listeners.entry(&*l.service_id).or_default().push((l, rules));
            }
        }
        // Rules whose listener is gone route nothing, but still count as users.
        mark_in_use(tgs, rules.values().flatten().map(|r| &r.action));
        let exists = |id: &str| tgs.contains_key(id);
        let mut out = BTreeMap::new();
        for (id, svc) in &self.services {
            if associated.contains(id) {
                let listeners = listeners.remove(id).unwrap_or_default();
                let view = service_view(svc, &listeners, &exists);
                out.insert(view.id.clone(), Arc::new(view));
            }
        }
        out
    }

    /// Every VPC with an active association, and the services it reaches: those associated with
    /// any of its service networks, each through the lowest service network ID.
    fn vpcs(&self, services: &BTreeMap<Arc<str>, Arc<ServiceView>>) -> BTreeMap<String, VpcView> {
        let mut by_network: HashMap<&str, Vec<&Arc<str>>> = HashMap::new();
        for a in self.service_associations.iter().filter(|a| serves(a.status)) {
            if let Some((id, _)) = services.get_key_value(&*a.service_id) {
                by_network.entry(a.service_network_id.as_str()).or_default().push(id);
            }
        }
        let mut associations: Vec<_> = self.vpc_associations.iter().filter(|(_, a)| serves(a.status)).collect();
        associations.sort_by(|(_, a), (_, b)| (&a.service_network_id, &a.id).cmp(&(&b.service_network_id, &b.id)));
        let mut out = BTreeMap::new();
        for (scope, a) in associations {
            let view = out.entry(a.vpc_id.clone()).or_insert_with(|| VpcView {
                peers: Vec::new(),
                vpc_id: a.vpc_id.clone(),
                vpc_arn: format!("arn:aws:ec2:{}:{}:vpc/{}", scope.region, scope.account, a.vpc_id),
                region: scope.region.to_owned(),
                account: scope.account.to_owned(),
                ingress: self.ingress.get(&(scope.region, a.vpc_id.as_str())).copied(),
                reach: BTreeMap::new(),
            });
            let sn_id = a.service_network_id.as_str();
            let sn_arn: Arc<str> = match self.service_networks.get(sn_id) {
                Some(sn) => sn.arn.as_str().into(),
                None => Arn::lattice(scope.region, scope.account, Kind::ServiceNetwork, &[], sn_id).into(),
            };
            let shared_id: Arc<str> = sn_id.into();
            for svc in by_network.get(sn_id).map_or(&[][..], Vec::as_slice) {
                view.reach.entry(Arc::clone(svc)).or_insert_with(|| Reach {
                    service_network_id: shared_id.clone(),
                    service_network_arn: sn_arn.clone(),
                    private_dns: a.private_dns_enabled,
                });
            }
        }
        out
    }
}

/// A service's view: its record, and its listeners with their rules (in key order); `exists`
/// says which target groups exist.
fn service_view(
    svc: &ServiceRec,
    listeners: &[(&ListenerRec, Vec<&RuleRec>)],
    exists: &dyn Fn(&str) -> bool,
) -> ServiceView {
    let seconds = svc.idle_timeout_seconds.filter(|s| *s > 0).unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
    ServiceView {
        id: svc.id.clone(),
        arn: svc.arn.clone(),
        dns_name: lowercase(&svc.dns_name),
        custom_domain_name: svc.custom_domain_name.as_ref().map(|c| c.to_ascii_lowercase().into()),
        certificate_arn: svc.certificate_arn.clone().filter(|c| !c.is_empty()),
        idle_timeout: Duration::from_secs(u64::from(seconds)),
        listeners: listeners.iter().map(|(l, rules)| (l.port, listener_view(l, rules, exists))).collect(),
    }
}

fn target_group_view(
    scope: records::Scope<'_>,
    tg: &TargetGroupRec,
    targets: &[&TargetRec],
    in_use: bool,
) -> TargetGroupView {
    let mut config = tg.config.clone().unwrap_or_default();
    let (protocol, version) = (config.protocol.as_deref(), config.protocol_version.as_deref());
    let health_check = health_check(&tg.target_type, protocol, version, config.health_check.take());
    TargetGroupView {
        id: tg.id.clone(),
        arn: tg.arn.clone(),
        region: scope.region.to_owned(),
        account: scope.account.to_owned(),
        target_type: tg.target_type.clone(),
        protocol: config.protocol,
        protocol_version: config.protocol_version,
        vpc_id: config.vpc_identifier,
        health_check,
        in_use,
        targets: targets.iter().map(|t| target_view(t)).collect(),
    }
}

/// `name` in lowercase: the same string when it already is (generated names are).
fn lowercase(name: &Arc<str>) -> Arc<str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) { name.to_ascii_lowercase().into() } else { name.clone() }
}

/// Whether an association in this status carries traffic: an active one does, and so does one
/// whose settings are being updated (it stays in force meanwhile).
fn serves(status: Status) -> bool {
    matches!(status, Status::Active | Status::UpdateInProgress)
}

fn listener_view(l: &ListenerRec, rules: &[&RuleRec], exists: &dyn Fn(&str) -> bool) -> ListenerView {
    let mut rules: Vec<RuleView> = rules
        .iter()
        .map(|r| RuleView {
            action: action(&r.action, exists),
            id: r.id.clone(),
            priority: r.priority,
            matcher: match &r.rule_match {
                RuleMatch::HttpMatch(m) => m.clone(),
            },
        })
        .collect();
    rules.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
    ListenerView {
        default_action: action(&l.default_action, exists),
        id: l.id.clone(),
        protocol: l.protocol,
        port: l.port,
        rules,
    }
}

/// Marks the target groups these actions forward to as in use.
fn mark_in_use<'a>(tgs: &mut TargetGroups<'_>, actions: impl Iterator<Item = &'a RuleAction>) {
    for action in actions {
        if let RuleAction::Forward(f) = action {
            for t in &f.target_groups {
                if let Some(in_use) = tgs.get_mut(t.target_group_identifier.as_str()) {
                    *in_use = true;
                }
            }
        }
    }
}

/// An action as the data plane runs it: target groups that exist, weights filled in.
fn action(action: &RuleAction, exists: &dyn Fn(&str) -> bool) -> Action {
    match action {
        RuleAction::FixedResponse(f) => Action::Fixed(f.status_code),
        RuleAction::Forward(f) => {
            let list: Vec<WeightedTarget> = f
                .target_groups
                .iter()
                .filter(|t| exists(&t.target_group_identifier))
                .map(|t| WeightedTarget {
                    weight: t.weight.unwrap_or(DEFAULT_WEIGHT),
                    target_group_id: t.target_group_identifier.clone(),
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

fn target_view(t: &TargetRec) -> TargetView {
    TargetView {
        addr: t.id.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, t.port)),
        id: t.id.clone(),
        port: t.port,
        draining_since_ms: t.draining_since.map(|ts| ts.0),
    }
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
