//! Who forwards to which target group: the bookkeeping the target-group API reads.
//!
//! For every listener or rule X of service S whose action forwards to target group T there is an
//! entry `ref/tg-users/T/X` holding S's ID, counted by `count/tg-users/T`; and for every target
//! group S uses there is one entry `ref/svc-tg/S/T` holding T's ID, counted by `count/svc-tg/S`
//! (the target-groups-per-service quota). A target group serves one service only, so all the
//! users of T belong to one service, and T's `svc-tg` entry exists exactly while T has users.
//! Every change is written in the transaction that writes the listener or rule; the counters
//! are compared at commit, so concurrent changes retry instead of miscounting.

use std::collections::{BTreeMap, BTreeSet};

use trellis_model::Kind;
use trellis_model::lattice::TargetGroup;

use super::super::quota::Quota;
use super::super::{ApiError, Req};
use crate::keys::rel;
use crate::repo::{self, Counter, Tx, Versioned};

/// The target-group references of one service, as read, and the changes to make to them.
pub(crate) struct TgLedger {
    service_id: String,
    limit: u64,
    /// Per user (listener or rule ID): the target groups it forwards to as stored, and now.
    users: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// Per target group touched: its users counter, and the change to make to it.
    tgs: BTreeMap<String, TgState>,
    /// `count/svc-tg/S`.
    used: Counter,
}

struct TgState {
    users: Counter,
    /// Users that start forwarding to it, and users that stop.
    adds: i64,
    removes: i64,
    /// Whether `ref/svc-tg/S/T` existed when read: T already serves this service.
    ours: bool,
    /// The target group itself, when a user starts forwarding to it (it must still exist at
    /// commit).
    record: Option<Versioned<TargetGroup>>,
}

// === impl TgLedger ===

impl TgLedger {
    fn quota_exceeded(&self) -> ApiError {
        Quota::TargetGroupsPerService.error(Kind::TargetGroup, Some(&self.service_id), self.limit)
    }

    /// Starts the changes to service `service_id`'s references.
    pub(crate) async fn new(req: &Req<'_>, service_id: &str) -> Result<Self, ApiError> {
        let used = repo::counter(req.store(), req.keys.counter(rel::SVC_TG, service_id)).await?;
        Ok(Self {
            service_id: service_id.to_owned(),
            limit: Quota::TargetGroupsPerService.limit(req),
            users: BTreeMap::new(),
            tgs: BTreeMap::new(),
            used,
        })
    }

    /// Records that `user` now forwards to `new`; `stored` is what it forwards to as stored (it
    /// is used only the first time `user` is seen). On error nothing is recorded: a target group
    /// is missing (`ResourceNotFoundException`), serves another service (`ConflictException`),
    /// or the service would use too many target groups (`ServiceQuotaExceededException`).
    pub(crate) async fn change(
        &mut self,
        req: &Req<'_>,
        user: &str,
        stored: &BTreeSet<String>,
        new: &BTreeSet<String>,
    ) -> Result<(), ApiError> {
        let current = self.users.get(user).map_or(stored, |u| &u.1).clone();
        let added: Vec<String> = new.difference(&current).cloned().collect();
        let removed: Vec<String> = current.difference(new).cloned().collect();
        for tg in added.iter().chain(&removed) {
            self.load(req, tg, added.contains(tg)).await?;
        }
        for tg in &added {
            let state = &self.tgs[tg];
            if state.users.value() > 0 && !state.ours {
                return Err(ApiError::conflict(
                    Kind::TargetGroup,
                    tg,
                    format!("Target group {tg} is already used by another service"),
                ));
            }
        }
        let before = self.distinct();
        self.shift(&added, &removed, 1);
        let after = self.distinct();
        if after > before && after > self.limit as i64 {
            self.shift(&added, &removed, -1);
            return Err(self.quota_exceeded());
        }
        let entry = self.users.entry(user.to_owned()).or_insert_with(|| (stored.clone(), stored.clone()));
        entry.1 = new.clone();
        Ok(())
    }

    /// Adds the recorded changes to `tx`.
    pub(crate) fn write(&self, req: &Req<'_>, tx: &mut Tx) {
        let keys = &req.keys;
        for (user, (stored, now)) in &self.users {
            for tg in now.difference(stored) {
                tx.put_raw(keys.reference(rel::TG_USERS, tg, user), self.service_id.as_bytes().to_vec());
            }
            for tg in stored.difference(now) {
                if !self.tgs.get(tg).is_some_and(|s| s.clears()) {
                    tx.delete(keys.reference(rel::TG_USERS, tg, user));
                }
            }
        }
        for (tg, state) in &self.tgs {
            tx.count(&state.users, state.adds - state.removes);
            if let Some(record) = &state.record {
                tx.require_unchanged(record.key.clone(), record.revision);
            }
            let (was, is) = (state.users.value() > 0, state.after() > 0);
            if state.clears() {
                // The last users go: one range delete, however many entries there were.
                tx.delete_prefix(keys.references(rel::TG_USERS, tg));
            }
            if was && !is && state.ours {
                tx.delete(keys.reference(rel::SVC_TG, &self.service_id, tg));
            } else if !was && is {
                tx.put_raw(keys.reference(rel::SVC_TG, &self.service_id, tg), tg.as_bytes().to_vec());
            }
        }
        let delta = self.distinct() - self.used.value() as i64;
        if delta != 0 {
            tx.count(&self.used, delta);
        }
    }

    async fn load(&mut self, req: &Req<'_>, tg: &str, need_record: bool) -> Result<(), ApiError> {
        let store = req.store();
        if !self.tgs.contains_key(tg) {
            let users = repo::counter(store, req.keys.counter(rel::TG_USERS, tg)).await?;
            let ours = repo::load_index(store, &req.keys.reference(rel::SVC_TG, &self.service_id, tg)).await?.is_some();
            self.tgs.insert(tg.to_owned(), TgState { users, adds: 0, removes: 0, ours, record: None });
        }
        if need_record && self.tgs.get(tg).is_some_and(|s| s.record.is_none()) {
            let record = repo::load::<TargetGroup>(store, &req.keys.res(Kind::TargetGroup, tg))
                .await?
                .ok_or_else(|| ApiError::not_found(Kind::TargetGroup, tg))?;
            if let Some(state) = self.tgs.get_mut(tg) {
                state.record = Some(record);
            }
        }
        Ok(())
    }

    fn shift(&mut self, added: &[String], removed: &[String], sign: i64) {
        for tg in added {
            if let Some(s) = self.tgs.get_mut(tg) {
                s.adds += sign;
            }
        }
        for tg in removed {
            if let Some(s) = self.tgs.get_mut(tg) {
                s.removes += sign;
            }
        }
    }

    /// How many target groups the service uses after the recorded changes.
    fn distinct(&self) -> i64 {
        let mut n = self.used.value() as i64;
        for state in self.tgs.values().filter(|s| s.ours || s.users.value() == 0) {
            match (state.users.value() > 0, state.after() > 0) {
                (true, false) => n -= 1,
                (false, true) => n += 1,
                _ => {}
            }
        }
        n
    }
}

// === impl TgState ===

impl TgState {
    fn after(&self) -> i64 {
        self.users.value() as i64 + self.adds - self.removes
    }

    /// Whether every user of this (our) target group goes and none comes, so its entries can go
    /// as one range delete (which must not overlap a put in the same transaction).
    fn clears(&self) -> bool {
        self.ours && self.adds == 0 && self.users.value() > 0 && self.after() <= 0
    }
}

/// Adds to `tx` the end of every reference of a service being deleted with all its listeners
/// and rules: its target groups' user entries and counters, and its own `svc-tg` entries and
/// counter. (A target group serves one service only, so all its users go with the service.)
pub(crate) async fn retire_service(req: &Req<'_>, tx: &mut Tx, service_id: &str) -> Result<(), ApiError> {
    let store = req.store();
    // The counter before the listing it guards (see `repo`).
    let used = repo::counter(store, req.keys.counter(rel::SVC_TG, service_id)).await?;
    for tg in repo::list_index(store, &req.keys.references(rel::SVC_TG, service_id)).await? {
        let users = repo::counter(store, req.keys.counter(rel::TG_USERS, &tg)).await?;
        tx.count(&users, -(users.value() as i64));
        tx.delete_prefix(req.keys.references(rel::TG_USERS, &tg));
    }
    tx.delete_prefix(req.keys.references(rel::SVC_TG, service_id));
    tx.retire(&used);
    Ok(())
}
