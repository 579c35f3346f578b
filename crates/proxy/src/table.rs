//! The route table: what the request path derives from one snapshot and one health table, built
//! once per change and shared by every connection through a watch channel. Lookups are hash
//! lookups whose cost does not grow with the number of services: ingress address → VPC, host →
//! service (the snapshot's own host index), service → how this VPC reaches it, target group →
//! its [`Group`] (eligible targets with their pools, counters and cursor).
//!
//! It answers the same question as `Snapshot::find_service` (tested against it), in O(1).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use trellis_model::hash::FastState;

use rustls::ServerConfig;
use trellis_model::iam::Identities;
use trellis_model::lattice::ListenerProtocol;
use trellis_model::snapshot::{Action, ListenerView, Reach, ServiceView, Snapshot, VpcView};
use trellis_model::tls::Certificates;
use trellis_net::Network;

use crate::access_log::{LogRoute, RouteFacts};
use crate::auth::AuthCheck;
use crate::balance::{BuildCtx, Group};
use crate::error::ErrorKind;
use crate::forward::Pools;
use crate::metrics::RouteStats;
use crate::tls::{Refused, TlsConfigs, TlsStore};
use crate::{HealthTable, InFlight, Telemetry, headers};

/// Idle timeout of target connections for a target group no listener uses (Lattice's default).
const DEFAULT_IDLE: Duration = Duration::from_secs(60);

/// `x-amzn-lattice-target` values by target group ID.
type TargetHeaders = Box<[(String, headers::AddedField)]>;

/// Maps looked up on every request, by IDs from the configuration (hashed fast: see
/// [`trellis_model::hash`]).
type FastMap<V> = HashMap<String, V, FastState>;

/// Each table's number ([`Routes::id`]).
static TABLES: AtomicU64 = AtomicU64::new(1);

/// A number no table of this process had before.
fn next_table() -> u64 {
    TABLES.fetch_add(1, Ordering::Relaxed)
}

/// Values found by key through a hash map, and again by their place without hashing (see
/// [`Found`]).
struct Indexed<K, V> {
    places: HashMap<K, usize, FastState>,
    values: Vec<V>,
}

/// Everything the request path needs from one snapshot and one health table.
pub(crate) struct Routes {
    /// This table's number: no two tables of a process have the same.
    id: u64,
    snapshot: Arc<Snapshot>,
    vpcs: Indexed<String, VpcRoute>,
    groups: FastMap<Group>,
    tls: TlsConfigs,
    /// The credentials signed requests are verified with.
    pub(crate) identities: Arc<Identities>,
}

/// Where a TLS connection goes, by the server name of its ClientHello.
pub(crate) enum TlsRoute<'r> {
    /// Terminate it with this configuration; the service's stats count the connection.
    Terminate(Arc<ServerConfig>, Arc<RouteStats>),
    /// Pass it through to a target of this listener's default action.
    Passthrough {
        /// The service as the VPC reaches it.
        reach: &'r ReachRoute,
        /// The TLS_PASSTHROUGH listener.
        listener: &'r ListenerView,
    },
}

/// A VPC whose clients reach Lattice.
pub(crate) struct VpcRoute {
    /// `x-amzn-lattice-network` for its requests.
    pub(crate) network: headers::AddedField,
    /// Its access log records' `sourceVpcArn` and `sourceVpcId`.
    pub(crate) log_source: Arc<[u8]>,
    /// The account that owns the VPC (`vpc-lattice-svcs:SourceVpcOwnerAccount`).
    pub(crate) account: Box<str>,
    /// By service ID (the snapshot's shared copy).
    reach: Indexed<Arc<str>, ReachRoute>,
    /// Lattice ports on which a service it reaches has an HTTPS or TLS_PASSTHROUGH listener.
    tls_ports: Vec<u16>,
    /// Lattice ports on which a service it reaches has an HTTP listener.
    http_ports: Vec<u16>,
}

/// A service as one VPC reaches it.
pub(crate) struct ReachRoute {
    /// The service.
    pub(crate) service: Arc<ServiceView>,
    /// The auth policies guarding the service through that network, if any guards it.
    pub(crate) auth: Option<Arc<AuthCheck>>,
    /// Its metrics and access log destinations (shared by the VPCs that reach the service
    /// through the same network).
    pub(crate) obs: Arc<RouteObs>,
}

/// What counts and logs the requests to a service through a service network.
pub(crate) struct RouteObs {
    /// The (network, service) series: requests no target group took, connections, denials.
    pub(crate) stats: Arc<RouteStats>,
    /// Per target group the service forwards to.
    pub(crate) groups: Box<[GroupObs]>,
    /// Where access log records go, if a subscription applies.
    pub(crate) log: Option<LogRoute>,
    /// `x-amzn-lattice-target` per target group the service forwards to (through this
    /// service network).
    target_headers: TargetHeaders,
    /// The ARN of that service network (the snapshot's shared copy).
    network_arn: Arc<str>,
}

/// A target group, as metrics and access logs see it.
pub(crate) struct GroupObs {
    /// `tg-…`.
    pub(crate) id: String,
    /// The (network, service, target group) series.
    pub(crate) stats: Arc<RouteStats>,
    /// Its place among its route's groups (and their access log fields, `LogRoute`).
    pub(crate) index: usize,
}

/// Where a host led a connection in one table: the VPC's entry and the service as it reaches
/// it, by place. A connection's requests nearly always name one host, so it keeps this with
/// the host ([`crate::request::LastHost`]) and finds the route again without hashing the VPC,
/// the host and the service while the table is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    table: u64,
    vpc: usize,
    reach: usize,
}

/// What building a table needs besides the snapshot.
pub(crate) struct TableInputs<'a> {
    /// The health checker's last table.
    pub(crate) health: &'a HealthTable,
    /// In-flight counters.
    pub(crate) in_flight: &'a InFlight,
    /// Upstream pools, kept across builds.
    pub(crate) pools: &'a mut Pools,
    /// How VPCs are made real.
    pub(crate) network: &'a Network,
    /// The table this one replaces (round-robin goes on where it stood).
    pub(crate) previous: &'a Routes,
    /// The certificates to serve.
    pub(crate) certificates: &'a Certificates,
    /// Server configurations, kept across builds.
    pub(crate) tls: &'a mut TlsStore,
    /// The credentials signed requests are verified with.
    pub(crate) identities: Arc<Identities>,
    /// Where the series' counters are kept across tables.
    pub(crate) telemetry: &'a Telemetry,
}

// === impl Routes ===

impl Routes {
    /// A table that routes nothing.
    pub(crate) fn empty() -> Self {
        Self {
            id: next_table(),
            snapshot: Arc::new(Snapshot::default()),
            vpcs: Indexed::default(),
            groups: FastMap::default(),
            tls: TlsConfigs::default(),
            identities: Arc::default(),
        }
    }

    /// Builds the table for `snapshot`.
    pub(crate) fn build(snapshot: Arc<Snapshot>, inputs: TableInputs<'_>) -> Self {
        let mut labels = HashMap::new();
        let vpcs = snapshot
            .vpcs
            .values()
            .filter(|v| v.ingress.is_some())
            .filter_map(|v| {
                let route = vpc_route(&snapshot, v, &mut labels, inputs.previous, inputs.telemetry)?;
                Some((v.vpc_id.clone(), route))
            })
            .collect();
        drop(labels);
        let tls = inputs.tls.configs(inputs.certificates);
        let identities = inputs.identities.clone();
        let groups = build_groups(&snapshot, inputs);
        Self { id: next_table(), snapshot, vpcs, groups, tls, identities }
    }

    /// Whether a connection to one of `ports` from `vpc_id` may be TLS.
    pub(crate) fn has_tls(&self, vpc_id: &str, ports: &[(u16, Box<[u8]>)]) -> bool {
        self.vpcs.get(vpc_id).is_some_and(|v| ports.iter().any(|(p, _)| v.tls_ports.contains(p)))
    }

    /// Whether a connection to one of `ports` from `vpc_id` may be cleartext HTTP.
    pub(crate) fn has_http(&self, vpc_id: &str, ports: &[(u16, Box<[u8]>)]) -> bool {
        self.vpcs.get(vpc_id).is_some_and(|v| ports.iter().any(|(p, _)| v.http_ports.contains(p)))
    }

    /// Where a TLS connection from `vpc_id` on one of `ports` for server name `name` (lowercase)
    /// goes.
    pub(crate) fn tls_route(
        &self,
        vpc_id: &str,
        name: &str,
        ports: &[(u16, Box<[u8]>)],
    ) -> Result<TlsRoute<'_>, Refused> {
        let unknown = || Refused::UnknownName(name.to_owned());
        let (_, reach) = self.find(vpc_id, name).map_err(|_| unknown())?;
        let service = &reach.service;
        let listener = ports.iter().find_map(|(p, _)| service.listeners.get(p)).ok_or_else(unknown)?;
        let custom = service.custom_domain_name.as_deref() == Some(name);
        match listener.protocol {
            ListenerProtocol::Https => self
                .tls
                .for_name(name, custom, service.certificate_arn.as_deref())
                .map(|config| TlsRoute::Terminate(config, reach.obs.stats.clone()))
                .ok_or_else(|| Refused::NoCertificate(name.to_owned())),
            // Passthrough routes on the custom domain name alone (spec §3.2).
            ListenerProtocol::TlsPassthrough if custom => Ok(TlsRoute::Passthrough { reach, listener }),
            _ => Err(unknown()),
        }
    }

    /// VPC `vpc_id` and the service it reaches as `host` (lowercase, no port).
    pub(crate) fn find(&self, vpc_id: &str, host: &str) -> Result<(&VpcRoute, &ReachRoute), ErrorKind> {
        self.find_again(vpc_id, host, &mut None)
    }

    /// [`Self::find`], by `found` when it is where `host` led `vpc_id` in this table; else looked
    /// up and kept there. The caller clears `found` when the host or VPC is another.
    pub(crate) fn find_again(
        &self,
        vpc_id: &str,
        host: &str,
        found: &mut Option<Found>,
    ) -> Result<(&VpcRoute, &ReachRoute), ErrorKind> {
        if let Some(f) = *found
            && f.table == self.id
            && let Some(vpc) = self.vpcs.values.get(f.vpc)
            && let Some(reach) = vpc.reach.values.get(f.reach)
        {
            return Ok((vpc, reach));
        }
        *found = None;
        let place = *self.vpcs.places.get(vpc_id).ok_or(ErrorKind::UnknownHost)?;
        let vpc = &self.vpcs.values[place];
        let id = self.snapshot.hosts.get(host).ok_or(ErrorKind::UnknownHost)?;
        let at = *vpc.reach.places.get(&**id).ok_or(ErrorKind::UnknownHost)?;
        *found = Some(Found { table: self.id, vpc: place, reach: at });
        Ok((vpc, &vpc.reach.values[at]))
    }

    /// The table of `snapshot` alone (no health table, certificates or previous table).
    #[cfg(test)]
    pub(crate) fn for_tests(snapshot: &Snapshot) -> Self {
        let inputs = TableInputs {
            health: &HealthTable::default(),
            in_flight: &InFlight::default(),
            pools: &mut Pools::new(Duration::from_secs(1)),
            network: &trellis_net::Network::Loopback,
            previous: &Routes::empty(),
            certificates: &Certificates::default(),
            tls: &mut TlsStore::new(),
            identities: Arc::default(),
            telemetry: &Telemetry::for_tests(),
        };
        Self::build(Arc::new(snapshot.clone()), inputs)
    }

    /// A target group, ready for picking.
    pub(crate) fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }
}

// === impl ReachRoute ===

impl ReachRoute {
    /// Metrics and access log facts of target group `tg_id`.
    pub(crate) fn group_obs(&self, tg_id: &str) -> Option<&GroupObs> {
        self.obs.groups.iter().find(|g| g.id == tg_id)
    }

    /// `x-amzn-lattice-target` for a request forwarded to target group `tg_id`.
    pub(crate) fn target_header(&self, tg_id: &str) -> Option<&headers::AddedField> {
        self.obs.target_headers.iter().find_map(|(id, v)| (id == tg_id).then_some(v))
    }
}

// === impl Indexed ===

impl<K, V> Default for Indexed<K, V> {
    fn default() -> Self {
        Self { places: HashMap::default(), values: Vec::new() }
    }
}

impl<K: Hash + Eq, V> Indexed<K, V> {
    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.places.get(key).map(|&at| &self.values[at])
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for Indexed<K, V> {
    /// A key given twice keeps its last value (as a map collected from the same would).
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut map = Self::default();
        for (key, value) in pairs {
            match map.places.entry(key) {
                std::collections::hash_map::Entry::Occupied(at) => map.values[*at.get()] = value,
                std::collections::hash_map::Entry::Vacant(place) => {
                    place.insert(map.values.len());
                    map.values.push(value);
                }
            }
        }
        map
    }
}

/// A VPC's entry: its network header and the services it reaches. `labels` shares the
/// [`RouteObs`] of a (service, service network) pair between VPCs. A service
/// whose entry in `previous` was made of the same views keeps that entry's parts (shared, not
/// rebuilt): a change to one service of 10,000 allocates for that one, and the heap is not
/// churned into fragments by every other service's copies.
fn vpc_route<'s>(
    snapshot: &'s Snapshot,
    vpc: &'s VpcView,
    labels: &mut HashMap<(&'s str, &'s str), Arc<RouteObs>>,
    previous: &Routes,
    telemetry: &Telemetry,
) -> Option<VpcRoute> {
    let network = headers::lattice_network(&vpc.vpc_arn);
    let before = previous.vpcs.get(&vpc.vpc_id);
    let reach = vpc
        .reach
        .iter()
        .filter_map(|(id, r)| {
            let service = snapshot.services.get(id)?;
            let network_arn = &*r.service_network_arn;
            let same = before
                .and_then(|b| b.reach.get(&**id))
                .filter(|old| unchanged(old, service, r, snapshot, &previous.snapshot));
            let obs = labels
                .entry((&**id, network_arn))
                .or_insert_with(|| match same {
                    Some(old) => old.obs.clone(),
                    None => Arc::new(route_obs(snapshot, service, r, telemetry)),
                })
                .clone();
            let auth = match same {
                Some(old) => old.auth.clone(),
                None => auth_check(snapshot, service, r),
            };
            Some((id.clone(), ReachRoute { service: service.clone(), auth, obs }))
        })
        .collect::<Indexed<_, _>>();
    let ports = |tls: bool| {
        let mut ports: Vec<u16> = reach
            .values
            .iter()
            .flat_map(|r| r.service.listeners.values())
            .filter(|l| (l.protocol != ListenerProtocol::Http) == tls)
            .map(|l| l.port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    };
    let (tls_ports, http_ports) = (ports(true), ports(false));
    let log_source = crate::access_log::source_fields(&vpc.vpc_arn, &vpc.vpc_id);
    Some(VpcRoute { network, log_source, account: vpc.account.as_str().into(), reach, tls_ports, http_ports })
}

/// Whether `old` (built from `before`) still stands for `service` reached as `reach` in `now`:
/// the same service view, through the same network, with the same auth policies, access log
/// subscriptions and target group views.
fn unchanged(old: &ReachRoute, service: &Arc<ServiceView>, reach: &Reach, now: &Snapshot, before: &Snapshot) -> bool {
    let same_tg = |tg: &str| match (now.target_groups.get(tg), before.target_groups.get(tg)) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    let owners = [&*reach.service_network_id, &*service.id];
    Arc::ptr_eq(&old.service, service)
        && old.obs.network_arn == reach.service_network_arn
        && owners.iter().all(|o| now.iam.get(*o) == before.iam.get(*o))
        && owners.iter().all(|o| now.access_logs.get(*o) == before.access_logs.get(*o))
        && forwarded_groups(service).all(same_tg)
}

/// The auth policies guarding `service` reached as `reach`, if any does.
fn auth_check(snapshot: &Snapshot, service: &ServiceView, reach: &Reach) -> Option<Arc<AuthCheck>> {
    let (network, guarded) = (snapshot.iam.get(&*reach.service_network_id), snapshot.iam.get(&*service.id));
    (network.is_some() || guarded.is_some()).then(|| {
        Arc::new(AuthCheck::new(
            network.cloned(),
            guarded.cloned(),
            reach.service_network_arn.to_string(),
            service.arn.to_string(),
        ))
    })
}

/// The counters and log destinations of requests to `service` reached as `reach` (through its
/// service network): the network's `SERVICE` subscriptions and the service's own, each
/// destination once.
fn route_obs(snapshot: &Snapshot, service: &ServiceView, reach: &Reach, telemetry: &Telemetry) -> RouteObs {
    let (network_id, network_arn) = (&*reach.service_network_id, &*reach.service_network_arn);
    let registry = &telemetry.registry;
    let stats = registry.route(network_id, &service.id, "");
    let mut groups: Vec<GroupObs> = Vec::new();
    // Each group's `destinationVpcId` and `targetGroupArn`, for access logs.
    let mut group_fields = Vec::new();
    for tg_id in forwarded_groups(service) {
        if groups.iter().any(|g| g.id == tg_id) {
            continue;
        }
        let Some(tg) = snapshot.target_groups.get(tg_id) else { continue };
        groups.push(GroupObs {
            id: tg_id.to_owned(),
            stats: registry.route(network_id, &service.id, tg_id),
            index: groups.len(),
        });
        group_fields.push((tg.vpc_id.as_deref().unwrap_or("-"), tg.arn.as_str()));
    }
    let subscriptions = [network_id, &*service.id]
        .into_iter()
        .filter_map(|owner| snapshot.access_logs.get(owner))
        .flat_map(|subs| subs.iter())
        .filter(|s| !s.resource_only);
    let mut destinations: Vec<std::path::PathBuf> = Vec::new();
    for sub in subscriptions {
        let dir = sub.destination.dir();
        if !destinations.contains(&dir) {
            destinations.push(dir);
        }
    }
    let log = (!destinations.is_empty()).then(|| {
        LogRoute::new(RouteFacts {
            destinations,
            service_id: &service.id,
            service_arn: &service.arn,
            network_arn,
            listeners: service
                .listeners
                .values()
                .map(|l| (&*l.id, crate::conn::record::protocol_name(l.protocol)))
                .collect(),
            groups: group_fields,
        })
    });
    let target_headers = target_headers(snapshot, service, network_arn);
    let network_arn = reach.service_network_arn.clone();
    RouteObs { stats, groups: groups.into(), log, target_headers, network_arn }
}

/// `x-amzn-lattice-target` for each target group `service` forwards to, reached through
/// `network_arn`.
fn target_headers(snapshot: &Snapshot, service: &ServiceView, network_arn: &str) -> TargetHeaders {
    let mut out: Vec<(String, headers::AddedField)> = Vec::new();
    for tg_id in forwarded_groups(service) {
        if out.iter().any(|(id, _)| id == tg_id) {
            continue;
        }
        let Some(tg) = snapshot.target_groups.get(tg_id) else { continue };
        out.push((tg_id.to_owned(), headers::lattice_target(&service.arn, network_arn, &tg.arn)));
    }
    out.into()
}

/// The target group IDs a service's listeners forward to (with repeats).
fn forwarded_groups(service: &ServiceView) -> impl Iterator<Item = &str> {
    service
        .listeners
        .values()
        .flat_map(|l| l.rules.iter().map(|r| &r.action).chain([&l.default_action]))
        .flat_map(|action| match action {
            Action::Forward(groups) => groups.as_slice(),
            Action::Fixed(_) => &[],
        })
        .map(|g| g.target_group_id.as_str())
}

/// Every target group, ready for picking; each target group's connections idle out after the
/// idle timeout of the service that forwards to it (a target group serves one service).
fn build_groups(snapshot: &Snapshot, inputs: TableInputs<'_>) -> FastMap<Group> {
    // A target group serves one service: its idle timeout, and its name (the custom domain
    // name if it has one) as the server name of TLS connections to the targets.
    let mut served = HashMap::new();
    for s in snapshot.services.values() {
        let name: Arc<str> = Arc::from(s.custom_domain_name.as_deref().unwrap_or(&s.dns_name));
        for tg_id in forwarded_groups(s) {
            served.insert(tg_id, (s.idle_timeout, name.clone()));
        }
    }
    let unnamed: Arc<str> = Arc::from("");
    let mut ctx = BuildCtx {
        health: inputs.health,
        in_flight: inputs.in_flight,
        pools: inputs.pools,
        used: HashSet::new(),
        network: inputs.network,
    };
    let groups = snapshot
        .target_groups
        .values()
        .map(|tg| {
            let cursor = inputs.previous.groups.get(&tg.id).map_or(0, Group::cursor);
            let (idle, sni) = served.get(tg.id.as_str()).map_or((DEFAULT_IDLE, &unnamed), |(i, n)| (*i, n));
            (tg.id.clone(), Group::build(tg, idle, sni, cursor, &mut ctx))
        })
        .collect();
    let used = ctx.used;
    inputs.pools.retain(&used);
    inputs.in_flight.forget_unheld();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::testing::{Fixture, service, target_group};

    #[test]
    fn find_agrees_with_the_snapshot() {
        let mut f = Fixture::new("127.88.1.1".parse().unwrap());
        f.add_service(service("svc-a", "a.example", 18080, Action::Fixed(404)));
        f.add_service(service("svc-b", "b.example", 18080, Action::Fixed(404)));
        f.snapshot.target_groups.insert("tg-1".into(), Arc::new(target_group("tg-1", &[])));
        // A second VPC that reaches only svc-b; a third without ingress.
        f.add_vpc("vpc-2", Some("127.88.1.2".parse().unwrap()), &["svc-b"]);
        f.add_vpc("vpc-3", None, &["svc-a"]);
        let snapshot = &f.snapshot;
        let routes = Routes::for_tests(snapshot);
        for vpc in ["vpc-1", "vpc-2"] {
            for host in ["a.example", "b.example", "c.example"] {
                let ours = routes.find(vpc, host).ok().map(|(_, r)| r.service.id.clone());
                let theirs = snapshot.find_service(vpc, host).map(|(s, _)| s.id.clone());
                assert_eq!(ours, theirs, "{vpc} {host}");
            }
        }
        assert!(routes.find("vpc-3", "a.example").is_err());
        assert!(routes.group("tg-1").is_some());
    }

    #[test]
    fn a_route_is_found_again_by_place_only_in_the_table_that_found_it() {
        let mut f = Fixture::new("127.88.1.1".parse().unwrap());
        for (id, host) in [("svc-a", "a.example"), ("svc-b", "b.example"), ("svc-c", "c.example")] {
            f.add_service(service(id, host, 18080, Action::Fixed(404)));
        }
        let first = Routes::for_tests(&f.snapshot);
        let service_of = |found: Result<(&VpcRoute, &ReachRoute), ErrorKind>| found.map(|(_, r)| r.service.id.clone());
        let mut found = None;
        for host in ["a.example", "b.example", "c.example"] {
            found = None;
            let looked_up = service_of(first.find_again("vpc-1", host, &mut found));
            assert_eq!(looked_up, service_of(first.find("vpc-1", host)));
            assert!(found.is_some(), "{host}");
            // Again, by place: the same entry.
            let (vpc, reach) = first.find_again("vpc-1", host, &mut found).unwrap();
            let (vpc2, reach2) = first.find("vpc-1", host).unwrap();
            assert!(std::ptr::eq(vpc, vpc2) && std::ptr::eq(reach, reach2), "{host}");
        }
        // The VPC no longer reaches c.example, and reaches d.example instead: the second table
        // has as many entries, so c.example's place in the first is one of its places, and it
        // must not answer by it.
        f.snapshot.vpcs.get_mut("vpc-1").unwrap().reach.remove("svc-c");
        f.add_service(service("svc-d", "d.example", 18080, Action::Fixed(404)));
        let second = Routes::for_tests(&f.snapshot);
        assert!(second.find("vpc-1", "d.example").is_ok());
        assert_eq!(second.find_again("vpc-1", "c.example", &mut found).err(), Some(ErrorKind::UnknownHost));
        assert_eq!(found, None);
        // An unknown host, VPC or service is not remembered.
        for (vpc, host) in [("vpc-1", "nowhere.example"), ("vpc-9", "a.example")] {
            assert!(second.find_again(vpc, host, &mut found).is_err());
            assert_eq!(found, None);
        }
    }

    #[test]
    fn a_rebuild_keeps_the_entries_of_unchanged_services() {
        let mut f = Fixture::new("127.88.1.1".parse().unwrap());
        f.add_service(service("svc-a", "a.example", 18080, Action::Fixed(404)));
        f.add_service(service("svc-b", "b.example", 18080, Action::Fixed(404)));
        let (pools, telemetry) = (&mut Pools::new(Duration::from_secs(1)), Telemetry::for_tests());
        let mut tls = TlsStore::new();
        let mut build = |snapshot: &Snapshot, previous: &Routes| {
            let inputs = TableInputs {
                health: &HealthTable::default(),
                in_flight: &InFlight::default(),
                pools: &mut *pools,
                network: &trellis_net::Network::Loopback,
                previous,
                certificates: &Certificates::default(),
                tls: &mut tls,
                identities: Arc::default(),
                telemetry: &telemetry,
            };
            Routes::build(Arc::new(snapshot.clone()), inputs)
        };
        let obs = |routes: &Routes, host: &str| routes.find("vpc-1", host).unwrap().1.obs.clone();
        let first = build(&f.snapshot, &Routes::empty());
        // svc-b changes (a new view); svc-a does not.
        f.add_service(service("svc-b", "b.example", 18080, Action::Fixed(503)));
        let second = build(&f.snapshot, &first);
        assert!(Arc::ptr_eq(&obs(&first, "a.example"), &obs(&second, "a.example")));
        assert!(!Arc::ptr_eq(&obs(&first, "b.example"), &obs(&second, "b.example")));
        let b = &second.find("vpc-1", "b.example").unwrap().1.service;
        assert_eq!(b.listeners[&18080].default_action, Action::Fixed(503));
        // The same series counts the requests of both tables.
        assert!(Arc::ptr_eq(&obs(&first, "b.example").stats, &obs(&second, "b.example").stats));
        // An access log subscription of svc-a's network makes its entry anew.
        let destination = trellis_model::access_log::Destination::parse("arn:aws:s3:::trellis-test-bucket").unwrap();
        let view = trellis_model::snapshot::AccessLogView { id: "als-1".into(), destination, resource_only: false };
        f.snapshot.access_logs.insert("sn-1".into(), Arc::from(vec![view]));
        let third = build(&f.snapshot, &second);
        assert!(!Arc::ptr_eq(&obs(&second, "a.example"), &obs(&third, "a.example")));
        assert!(obs(&third, "a.example").log.is_some());
    }
}
