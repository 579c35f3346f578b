//! Target health as the data plane reports it, kept in the store for `ListTargets`, and the
//! removal of targets that have finished draining. Plain functions over plain values: the
//! composition root turns the proxy's reports into these calls (control never imports the proxy).
//!
//! Layout: `r/<region>/<account>/health/<tg>/<target>/<port:05>/<node>` holds
//! `{"status": "HEALTHY", "reasonCode": "…"}`, one record per node that checks the target. The
//! target group comes first so that one range read serves a page of `ListTargets` and one prefix
//! delete forgets a target (or a whole target group); the node comes last.
//!
//! A status is written only while its target is registered (its record is compared in the same
//! transaction), so a late report never leaves a record behind for a target that is gone.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use trellis_model::lattice::Target;
use trellis_store::{RangeRequest, Store, StoreExt, prefix_end};

use crate::keys::Keys;
use crate::repo::{self, Attempts, RepoError, Tx};

/// The statuses `ListTargets` knows.
pub const STATUSES: [&str; 6] = ["DRAINING", "HEALTHY", "INITIAL", "UNAVAILABLE", "UNHEALTHY", "UNUSED"];

/// The counter of a target group's targets (`count/target/<tg>`), as `lattice::target_group`
/// names it.
pub(crate) const TARGET_COUNTER: &str = "target";

/// Status records written per transaction (each also compares its target's record), within
/// etcd's 128 operations.
const BATCH: usize = 60;

/// Which target a health fact is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetRef<'a> {
    /// The region of its target group.
    pub region: &'a str,
    /// The account that owns it.
    pub account: &'a str,
    /// `tg-…`.
    pub target_group_id: &'a str,
    /// The target's ID as registered.
    pub target_id: &'a str,
    /// Its port (0 for a Lambda function).
    pub port: u16,
}

/// A target's status as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusUpdate<'a> {
    /// Which target.
    pub target: TargetRef<'a>,
    /// One of [`STATUSES`].
    pub status: &'a str,
    /// `ListTargets`'s `reasonCode`.
    pub reason: Option<&'a str>,
}

/// Why health could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct HealthError(Inner);

#[derive(Debug, thiserror::Error)]
enum Inner {
    #[error("{0:?} is not a target status (one of {STATUSES:?})")]
    Status(String),
    #[error("node name {0:?} must be 1 to 128 characters without '/'")]
    Node(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// A stored status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Recorded {
    pub(crate) status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason_code: Option<String>,
    /// The node has no request in flight to this draining target any more (or gave up
    /// waiting): the target goes once every live proxy node says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) drained: bool,
}

/// Where live nodes keep their records (`cluster/node/<name>`, written with each node's lease),
/// as the composition root writes them: a JSON object with the node's `roles`.
pub const NODE_PREFIX: &str = "cluster/node/";

/// The live nodes that run the data plane (the `proxy` role), by name.
pub async fn live_proxy_nodes(store: &dyn Store) -> Result<std::collections::BTreeSet<String>, trellis_store::Error> {
    #[derive(Deserialize)]
    struct Node {
        #[serde(default)]
        roles: Vec<String>,
    }
    let listed = store.list_prefix(NODE_PREFIX, None, 0).await?;
    Ok(listed
        .kvs
        .iter()
        .filter(|kv| serde_json::from_slice::<Node>(&kv.value).is_ok_and(|n| n.roles.iter().any(|r| r == "proxy")))
        .filter_map(|kv| kv.key.strip_prefix(NODE_PREFIX).map(str::to_owned))
        .collect())
}

/// Records one target's status as `node` sees it. Returns whether it was written (`false`: the
/// target is not registered, so there is nothing to record). [`record_statuses`] writes many
/// in few transactions.
#[expect(clippy::too_many_arguments, reason = "plain values, as the composition root holds them")]
pub async fn record_status(
    store: &dyn Store,
    node: &str,
    region: &str,
    account: &str,
    target_group_id: &str,
    target_id: &str,
    port: u16,
    status: &str,
    reason: Option<&str>,
) -> Result<bool, HealthError> {
    let target = TargetRef { region, account, target_group_id, target_id, port };
    let update = StatusUpdate { target, status, reason };
    Ok(record_statuses(store, node, std::slice::from_ref(&update)).await? == 1)
}

/// Records a batch of statuses as `node` sees them (the last one wins when a target appears
/// twice), in transactions of up to 60 records. Returns how many were written; targets that are
/// not registered are skipped.
pub async fn record_statuses(
    store: &dyn Store,
    node: &str,
    updates: &[StatusUpdate<'_>],
) -> Result<usize, HealthError> {
    if node.is_empty() || node.len() > 128 || node.contains('/') {
        return Err(HealthError(Inner::Node(node.to_owned())));
    }
    if let Some(bad) = updates.iter().find(|u| !STATUSES.contains(&u.status)) {
        return Err(HealthError(Inner::Status(bad.status.to_owned())));
    }
    // (target key, health key, value), the last update of each target kept.
    let mut writes: Vec<(String, String, Recorded)> = Vec::with_capacity(updates.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(updates.len());
    for u in updates {
        let t = &u.target;
        let target_key = Keys::new(t.region, t.account).target(t.target_group_id, t.target_id, t.port);
        let value = Recorded { status: u.status.to_owned(), reason_code: u.reason.map(str::to_owned), drained: false };
        let write = (target_key, key(t, node), value);
        match index.get(&write.1) {
            Some(&i) => writes[i] = write,
            None => {
                index.insert(write.1.clone(), writes.len());
                writes.push(write);
            }
        }
    }
    let mut written = 0;
    for chunk in writes.chunks(BATCH) {
        written += record_chunk(store, chunk).await.map_err(|e| HealthError(e.into()))?;
    }
    Ok(written)
}

async fn record_chunk(store: &dyn Store, chunk: &[(String, String, Recorded)]) -> Result<usize, RepoError> {
    let mut attempts = Attempts::default();
    loop {
        let mut tx = Tx::default();
        let mut n = 0;
        for (target_key, health_key, value) in chunk {
            let Some(kv) = store.get(target_key).await? else { continue };
            tx.require_unchanged(target_key.clone(), kv.mod_revision);
            tx.put(health_key.clone(), value);
            n += 1;
        }
        if attempts.commit(store, tx).await? {
            return Ok(n);
        }
    }
}

/// Takes `node`'s word that a draining target has no request in flight from it any more. The
/// target is removed (its record, its health records, and one from its group's target counter,
/// in one transaction) once every live proxy node has said so; until then `node`'s word is kept
/// in its health record. Returns whether the target was removed; `Ok(false)` also when it is gone
/// already or no longer draining (registered again meanwhile). The data plane repeats its word
/// while the target stays, so a node that dies before it spoke holds nothing up for long: it is
/// no longer live.
pub async fn remove_drained(
    store: &dyn Store,
    node: &str,
    region: &str,
    account: &str,
    target_group_id: &str,
    target_id: &str,
    port: u16,
) -> Result<bool, HealthError> {
    let t = &TargetRef { region, account, target_group_id, target_id, port };
    let keys = Keys::new(region, account);
    let target_key = keys.target(target_group_id, target_id, port);
    let mut attempts = Attempts::default();
    let removed: Result<bool, RepoError> = async {
        loop {
            let Some(read) = repo::load::<Target>(store, &target_key).await? else { return Ok(false) };
            if read.value.draining_since.is_none() {
                return Ok(false);
            }
            let live = live_proxy_nodes(store).await?;
            let mut drained: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
            let prefix = target_prefix(t);
            for kv in store.list_prefix(&prefix, None, 0).await?.kvs {
                let said = serde_json::from_slice::<Recorded>(&kv.value).is_ok_and(|r| r.drained);
                if said && let Some(name) = kv.key.strip_prefix(&prefix) {
                    drained.insert(name.to_owned());
                }
            }
            drained.insert(node.to_owned());
            let mut tx = Tx::default();
            let everyone = live.iter().all(|n| drained.contains(n));
            if everyone {
                let counter = repo::counter(store, keys.counter(TARGET_COUNTER, t.target_group_id)).await?;
                tx.delete_read(&read);
                tx.delete_prefix(prefix);
                tx.count(&counter, -1);
            } else {
                let word = Recorded {
                    status: "DRAINING".into(),
                    reason_code: Some("Target.DeregistrationInProgress".into()),
                    drained: true,
                };
                tx.require_unchanged(target_key.clone(), read.revision);
                tx.put(key(t, node), &word);
            }
            if attempts.commit(store, tx).await? {
                return Ok(everyone);
            }
        }
    }
    .await;
    removed.map_err(|e| HealthError(e.into()))
}

/// Every health record of a target group (for deleting them with the group).
pub fn group_prefix(region: &str, account: &str, target_group_id: &str) -> String {
    format!("r/{region}/{account}/health/{target_group_id}/")
}

/// Every node's health record of one target.
fn target_prefix(t: &TargetRef<'_>) -> String {
    format!("{}{}/{:05}/", group_prefix(t.region, t.account, t.target_group_id), t.target_id, t.port)
}

/// One node's health record of one target.
fn key(t: &TargetRef<'_>, node: &str) -> String {
    format!("{}{node}", target_prefix(t))
}

/// The recorded status of each of `targets` (ID, port) of one target group, from any live
/// proxy node (the first in name order; a dead node's records are stale) or, when no node says
/// it is live (a store no node has joined), from any node, in the order given. `targets` must be in key order, as a listing
/// returns them: one range read covers them all.
pub(crate) async fn recorded(
    store: &dyn Store,
    region: &str,
    account: &str,
    target_group_id: &str,
    targets: &[(&str, u16)],
) -> Result<Vec<Option<Recorded>>, RepoError> {
    let (Some(first), Some(last)) = (targets.first(), targets.last()) else { return Ok(Vec::new()) };
    let prefix = group_prefix(region, account, target_group_id);
    let at = |&(id, port): &(&str, u16)| format!("{prefix}{id}/{port:05}/");
    let range = RangeRequest { start: at(first), end: Some(prefix_end(&at(last))), ..Default::default() };
    let live = live_proxy_nodes(store).await?;
    let mut found: HashMap<(String, u16), Recorded> = HashMap::new();
    for kv in store.range(range).await?.kvs {
        // `<id>/<port>/<node>`: IDs may hold '/' (ALB ARNs), ports and nodes do not.
        let Some(rest) = kv.key.strip_prefix(&prefix) else { continue };
        let mut parts = rest.rsplitn(3, '/');
        let (Some(node), Some(port), Some(id)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if !live.is_empty() && !live.contains(node) {
            continue;
        }
        let (Ok(port), Ok(value)) = (port.parse::<u16>(), serde_json::from_slice::<Recorded>(&kv.value)) else {
            continue;
        };
        found.entry((id.to_owned(), port)).or_insert(value);
    }
    Ok(targets.iter().map(|&(id, port)| found.get(&(id.to_owned(), port)).cloned()).collect())
}

#[cfg(test)]
mod tests;
