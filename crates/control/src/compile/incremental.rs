//! Building a snapshot from the last one: which views a change touches ([`Dirty`], marked as
//! changes are applied), where the records of one view are ([`Index`], kept as changes are
//! applied), and [`update`], which remakes only the views marked. Every other view stays the
//! same `Arc`.
//!
//! The result must equal a full build ([`super::build`]) of the same records, down to what a
//! damaged store makes of it (two records with one ID, rules whose listener is gone, a forward
//! to a missing target group): the indexes keep every key per ID, in key order, so that the
//! same record wins here as there. The tests check this over random sequences of changes.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use trellis_model::lattice::RuleAction;
use trellis_model::snapshot::{ServiceView, Snapshot, TargetGroupView};

use super::model::Model;
use super::records::{ListenerRec, Rec, RuleRec, TargetRec, split_resource};
use super::{hosts, serves, service_view, target_group_view};

/// Keys by ID, each list sorted (key order).
type Keys = HashMap<Arc<str>, KeyList>;

/// The sorted keys of one ID. Nearly every list holds one key, kept inline (a `Vec` would be
/// one more allocation per ID, three per service).
enum KeyList {
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

/// Where the records each view is made of are.
#[derive(Default)]
pub(super) struct Index {
    /// Service ID → the keys of its records (one, unless the store is damaged: the last wins).
    services: Keys,
    /// Service ID (the listener's `serviceId`) → its listeners' keys.
    listeners: Keys,
    /// Listener ID → the keys of listeners with it (the first takes the rules).
    listener_ids: Keys,
    /// Listener ID (the rule's `listenerId`) → its rules' keys.
    rules: Keys,
    /// Target group ID → the keys of its records (the last wins, with targets only if alone).
    target_groups: Keys,
    /// Target group ID (from the key) → its targets' keys.
    targets: Keys,
    /// Target group ID → how many forward entries of listeners and rules name it.
    uses: HashMap<String, usize>,
    /// Service ID → how many of its service-network associations carry traffic.
    serving: HashMap<Arc<str>, usize>,
}

/// What changed since the last build.
#[derive(Default)]
pub(super) struct Dirty {
    services: HashSet<String>,
    /// Listener IDs whose listeners or rules changed: their services' views change.
    listener_ids: HashSet<String>,
    target_groups: HashSet<String>,
    vpcs: bool,
    networks: bool,
    /// Service networks', services' or auth policies' records changed.
    auth: bool,
    /// Access log subscriptions changed.
    access_logs: bool,
}

// === impl Index ===

impl Index {
    /// The index of a model (nothing is marked: the first build is a full one).
    pub(super) fn of(model: &Model) -> Self {
        let mut index = Self::default();
        let mut dirty = Dirty::default();
        for (key, rec) in model.entries() {
            index.link(key, rec, &mut dirty);
        }
        index
    }

    /// Takes in a record stored under `key`, marking what it changes.
    pub(super) fn link(&mut self, key: &Arc<str>, rec: &Rec, dirty: &mut Dirty) {
        self.touch(key, rec, dirty, true);
    }

    /// Lets go of a record that was under `key`, marking what it changes.
    pub(super) fn unlink(&mut self, key: &Arc<str>, rec: &Rec, dirty: &mut Dirty) {
        self.touch(key, rec, dirty, false);
    }

    fn touch(&mut self, key: &Arc<str>, rec: &Rec, dirty: &mut Dirty, add: bool) {
        // `shared`: the record's own copy of `id`, when it has one to share.
        let keys = |map: &mut Keys, id: &str, shared: Option<&Arc<str>>| {
            if add {
                match map.get_mut(id) {
                    Some(list) => list.insert(key),
                    None => {
                        let id = shared.cloned().unwrap_or_else(|| id.into());
                        map.insert(id, KeyList::One(key.clone()));
                    }
                }
            } else if let Some(list) = map.get_mut(id)
                && list.remove(key)
            {
                map.remove(id);
            }
        };
        match rec {
            Rec::AccessLog(_) => dirty.access_logs = true,
            Rec::AuthPolicy(_) => dirty.auth = true,
            Rec::Network(_) => {
                dirty.vpcs = true;
                dirty.auth = true;
            }
            Rec::Ingress(_) | Rec::VpcAssociation(_) => dirty.vpcs = true,
            Rec::Subnet(_) | Rec::Vpc(_) => dirty.networks = true,
            Rec::Service(s) => {
                dirty.auth = true;
                keys(&mut self.services, &s.id, Some(&s.id));
                dirty.services.insert(s.id.to_string());
            }
            Rec::ServiceAssociation(a) => {
                if serves(a.status) {
                    count(&mut self.serving, &a.service_id, || a.service_id.clone(), add);
                }
                dirty.services.insert(a.service_id.to_string());
                dirty.vpcs = true;
            }
            Rec::Listener(l) => {
                keys(&mut self.listeners, &l.service_id, Some(&l.service_id));
                keys(&mut self.listener_ids, &l.id, Some(&l.id));
                self.count_uses(&l.default_action, add, dirty);
                dirty.services.insert(l.service_id.to_string());
                dirty.listener_ids.insert(l.id.to_string());
            }
            Rec::Rule(r) => {
                keys(&mut self.rules, &r.listener_id, None);
                self.count_uses(&r.action, add, dirty);
                dirty.listener_ids.insert(r.listener_id.clone());
            }
            Rec::TargetGroup(tg) => {
                keys(&mut self.target_groups, &tg.id, None);
                dirty.target_groups.insert(tg.id.clone());
            }
            Rec::Target(_) => {
                // `r/<region>/<account>/target/<tg>/…`: the model holds no other.
                let tg = split_resource(key).and_then(|(_, _, tail)| tail.split_once('/')).map(|(tg, _)| tg);
                if let Some(tg) = tg {
                    keys(&mut self.targets, tg, None);
                    dirty.target_groups.insert(tg.to_owned());
                }
            }
        }
    }

    /// Counts (or uncounts) the target groups an action forwards to; their in-use flag may change.
    fn count_uses(&mut self, action: &RuleAction, add: bool, dirty: &mut Dirty) {
        if let RuleAction::Forward(f) = action {
            for t in &f.target_groups {
                count(&mut self.uses, &t.target_group_identifier, || t.target_group_identifier.clone(), add);
                dirty.target_groups.insert(t.target_group_identifier.clone());
            }
        }
    }

    fn target_group_exists(&self, id: &str) -> bool {
        self.target_groups.contains_key(id)
    }
}

// === impl KeyList ===

impl KeyList {
    /// Adds `key` in order (once).
    fn insert(&mut self, key: &Arc<str>) {
        match self {
            Self::One(one) if one == key => {}
            Self::One(one) => {
                let mut list = vec![one.clone(), key.clone()];
                list.sort();
                *self = Self::Many(list);
            }
            Self::Many(list) => {
                if let Err(at) = list.binary_search(key) {
                    list.insert(at, key.clone());
                }
            }
        }
    }

    /// Removes `key`; whether the list is now empty.
    fn remove(&mut self, key: &Arc<str>) -> bool {
        match self {
            Self::One(one) => one == key,
            Self::Many(list) => {
                if let Ok(at) = list.binary_search(key) {
                    list.remove(at);
                }
                if list.len() == 1
                    && let Some(last) = list.pop()
                {
                    *self = Self::One(last);
                }
                matches!(self, Self::Many(list) if list.is_empty())
            }
        }
    }
}

impl std::ops::Deref for KeyList {
    type Target = [Arc<str>];

    fn deref(&self) -> &[Arc<str>] {
        match self {
            Self::One(key) => std::slice::from_ref(key),
            Self::Many(keys) => keys,
        }
    }
}

impl<'a> IntoIterator for &'a KeyList {
    type Item = &'a Arc<str>;
    type IntoIter = std::slice::Iter<'a, Arc<str>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Moves a counter up or down, forgetting it at zero.
fn count<K: Borrow<str> + Hash + Eq>(map: &mut HashMap<K, usize>, id: &str, owned: impl FnOnce() -> K, add: bool) {
    if add {
        match map.get_mut(id) {
            Some(n) => *n += 1,
            None => {
                map.insert(owned(), 1);
            }
        }
    } else if let Some(n) = map.get_mut(id) {
        *n -= 1;
        if *n == 0 {
            map.remove(id);
        }
    }
}

/// Remakes the views of `last` that the changes marked in `dirty` touch.
pub(super) fn update(last: &mut Snapshot, model: &Model, index: &Index, mut dirty: Dirty) {
    for id in &dirty.listener_ids {
        for key in index.listener_ids.get(id.as_str()).into_iter().flatten() {
            if let Some(Rec::Listener(l)) = model.get(key) {
                dirty.services.insert(l.service_id.to_string());
            }
        }
    }
    // A target group appearing or going changes the actions that name it (the API's delete
    // guards make this rare: remake every service then).
    let flipped = dirty
        .target_groups
        .iter()
        .any(|id| index.target_group_exists(id) != last.target_groups.contains_key(id) && index.uses.contains_key(id));
    if flipped {
        dirty.services.extend(index.services.keys().map(|id| id.to_string()));
        dirty.services.extend(last.services.keys().map(|id| id.to_string()));
    }
    let services_changed = !dirty.services.is_empty();
    for id in &dirty.services {
        let was_served = last.services.contains_key(id.as_str());
        match service(model, index, id) {
            Some(view) => {
                // A new key, not the old one kept: the maps share the view's own ID.
                last.services.remove(id.as_str());
                last.services.insert(view.id.clone(), Arc::new(view));
            }
            None => {
                last.services.remove(id.as_str());
            }
        }
        dirty.vpcs |= was_served != last.services.contains_key(id.as_str());
    }
    for id in &dirty.target_groups {
        match target_group(model, index, id) {
            Some(view) => {
                last.target_groups.insert(id.clone(), Arc::new(view));
            }
            None => {
                last.target_groups.remove(id);
            }
        }
    }
    if dirty.vpcs {
        let wanted = |r: &Rec| {
            matches!(r, Rec::Ingress(_) | Rec::Network(_) | Rec::ServiceAssociation(_) | Rec::VpcAssociation(_))
        };
        last.vpcs = model.records_of(wanted).vpcs(&last.services);
    }
    if dirty.networks {
        last.networks = model.records_of(|r| matches!(r, Rec::Subnet(_) | Rec::Vpc(_))).networks();
    }
    if dirty.auth {
        let wanted = |r: &Rec| matches!(r, Rec::AuthPolicy(_) | Rec::Network(_) | Rec::Service(_));
        last.iam = model.records_of(wanted).iam(&last.iam);
    }
    if dirty.access_logs {
        last.access_logs = model.records_of(|r| matches!(r, Rec::AccessLog(_))).access_logs();
    }
    if services_changed {
        last.hosts = hosts(&last.services);
    }
}

/// Service `id`'s view, if it is served: it has a record and an association that carries
/// traffic.
fn service(model: &Model, index: &Index, id: &str) -> Option<ServiceView> {
    if !index.serving.contains_key(id) {
        return None;
    }
    let Some(Rec::Service(svc)) = model.get(index.services.get(id)?.last()?) else { return None };
    let mut listeners: Vec<(&ListenerRec, Vec<&RuleRec>)> = Vec::new();
    for key in index.listeners.get(id).into_iter().flatten() {
        let Some(Rec::Listener(l)) = model.get(key) else { continue };
        // Of listeners sharing an ID (a damaged store), the first in key order has the rules.
        let first = index.listener_ids.get(&*l.id).and_then(|keys| keys.first()) == Some(key);
        let rules = match index.rules.get(&*l.id) {
            Some(keys) if first => keys
                .iter()
                .filter_map(|k| if let Some(Rec::Rule(r)) = model.get(k) { Some(&**r) } else { None })
                .collect(),
            _ => Vec::new(),
        };
        listeners.push((l, rules));
    }
    Some(service_view(svc, &listeners, &|tg| index.target_group_exists(tg)))
}

/// Target group `id`'s view, if it exists.
fn target_group(model: &Model, index: &Index, id: &str) -> Option<TargetGroupView> {
    let keys = index.target_groups.get(id)?;
    let key = keys.last()?;
    let Some(Rec::TargetGroup(tg)) = model.get(key) else { return None };
    let (scope, _, _) = split_resource(key)?;
    // Of records sharing an ID (a damaged store), the last wins, and has targets only if alone.
    let targets: Vec<&TargetRec> = match index.targets.get(id) {
        Some(targets) if keys.len() == 1 => targets
            .iter()
            .filter_map(|k| if let Some(Rec::Target(t)) = model.get(k) { Some(&**t) } else { None })
            .collect(),
        _ => Vec::new(),
    };
    Some(target_group_view(scope, tg, &targets, index.uses.contains_key(id)))
}
