//! Active health checks (spec §3.7): one probe schedule per (target group, target) of the
//! current snapshot, the status machine, draining, and what is published.
//!
//! One task owns everything: a map of targets, a binary heap of deadlines (the next probe of
//! each target, the next look at each draining one) and a bounded set of probes in flight
//! ([`MAX_PROBES`]); no task or timer per target. A probe's result moves its target's
//! [`machine::Machine`]; the next probe is due one interval after the last one started. Each
//! snapshot is reconciled group by group, and groups whose view did not change are skipped.
//!
//! What a target shows, in order: `DRAINING` (`DeregistrationInProgress`) once deregistered,
//! never probed, until it has no request in flight or the deregistration delay has passed since
//! it was deregistered; then the control plane is told it is drained ([`HealthReport::Drained`],
//! repeated every [`DRAINED_AGAIN`] while it is still in the snapshot). `UNUSED`
//! (`TargetGroupNotInUse`) when no listener or rule uses its group. `UNAVAILABLE` for Lambda and
//! ALB targets (`HealthCheckNotSupported`), for a target that is not a loopback address in
//! loopback mode (`TargetNotLoopback`: never contacted), when checks are off
//! (`HealthCheckDisabled`), and for a check of a protocol version other than HTTP1 and HTTP2
//! (`HealthCheckProtocolUnsupported`; AWS has no gRPC checks). Otherwise the machine's
//! `INITIAL`, `HEALTHY` or `UNHEALTHY` (`HealthCheckFailed`). HTTP, HTTPS, TCP, and HTTP/2 in
//! cleartext (prior knowledge) or over TLS (ALPN `h2`) are probed.
//!
//! The whole table is published on the watch channel, and every status change reported to the
//! sink, at most once per [`PUBLISH_GAP`]: changes are batched, never sent per probe.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use trellis_model::snapshot::{Snapshot, TargetGroupView, TargetView};
use trellis_net::Place;

use crate::{
    Error, HealthReport, HealthSink, HealthStatus, HealthTable, InFlight, ProxyConfig, SharedHealth, TargetHealth,
    TargetKey,
};
use check::{Check, Plan};
use machine::Machine;
use probe::Failure;

pub(crate) mod check;
mod machine;
mod probe;
#[cfg(test)]
mod tests;

/// Most probes in flight at once; due probes wait their turn (oldest deadline first).
const MAX_PROBES: usize = 256;
/// Least time between two publications of the table (and two batches of reports).
const PUBLISH_GAP: Duration = Duration::from_millis(20);
/// How often a draining target's requests in flight are looked at.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How often a drained target that is still in the snapshot is reported again (in case the
/// first report was lost).
const DRAINED_AGAIN: Duration = Duration::from_secs(10);

/// Runs the health checker until `stop`.
#[expect(clippy::too_many_arguments, reason = "the channels and shared counters the data plane wires it to")]
pub(crate) async fn run(
    config: Arc<ProxyConfig>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shared: watch::Receiver<Arc<SharedHealth>>,
    sink: Arc<dyn HealthSink>,
    health: watch::Sender<Arc<HealthTable>>,
    in_flight: Arc<InFlight>,
    stats: Arc<crate::metrics::ProcessStats>,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut checker = Checker::new(config, Duration::from_secs(1), sink, health, in_flight);
    checker.stats = stats;
    checker.run(snapshots, shared, stop).await;
    Ok(())
}

/// The health checker's state.
struct Checker {
    config: Arc<ProxyConfig>,
    /// How long one "second" of the health-check settings lasts (one second but in tests).
    second: Duration,
    sink: Arc<dyn HealthSink>,
    publish: watch::Sender<Arc<HealthTable>>,
    in_flight: Arc<InFlight>,
    groups: HashMap<String, Group>,
    slots: HashMap<u64, Slot>,
    next_id: u64,
    due: BinaryHeap<Reverse<Due>>,
    out: Outbox,
    /// Where probes sent are counted.
    stats: Arc<crate::metrics::ProcessStats>,
    /// Which groups other nodes check, and what they found.
    shared: Arc<SharedHealth>,
    /// The snapshot last applied (applied again when `shared` changes).
    last: Arc<Snapshot>,
}

/// A target group as last reconciled.
struct Group {
    view: Arc<TargetGroupView>,
    check: Arc<Result<Check, &'static str>>,
    /// Its targets' slots, by (target ID, port).
    targets: HashMap<(String, u16), u64>,
}

/// One target.
struct Slot {
    key: TargetKey,
    group: Arc<TargetGroupView>,
    check: Arc<Result<Check, &'static str>>,
    state: State,
    health: TargetHealth,
    /// What the sink was last told.
    reported: Option<TargetHealth>,
    /// Listed in [`Outbox::changed`].
    changed: bool,
    /// A probe is in flight.
    probing: bool,
    /// Which heap entry is live (older ones are skipped).
    seq: u64,
    /// Its status is another node's finding: shown, never reported as this node's.
    remote: bool,
    /// When it is next due, if scheduled.
    next: Option<Instant>,
}

enum State {
    /// Probed at `addr` from `place`; `epoch` tells this stint of probing from an earlier one.
    Probe { place: Place, addr: SocketAddr, machine: Machine, epoch: u64 },
    /// Shows a fixed status.
    Fixed,
    /// Draining until `deadline`; `told` once the sink has been told it is drained.
    Drain { deadline: Instant, told: bool },
}

/// A heap entry: `id` is due at `at`, if its slot's `seq` is still `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    id: u64,
    seq: u64,
}

/// What a finished probe hands back: which slot, which stint, when it started, how it went.
type Done = (u64, u64, Instant, Result<(), Failure>);

/// What is waiting to be published and reported.
#[derive(Default)]
struct Outbox {
    table: HashMap<TargetKey, TargetHealth>,
    table_dirty: bool,
    /// Slots whose health changed since the last flush.
    changed: Vec<u64>,
    drained: Vec<HealthReport>,
    last_flush: Option<Instant>,
    next_epoch: u64,
}

// === impl Checker ===

impl Checker {
    fn new(
        config: Arc<ProxyConfig>,
        second: Duration,
        sink: Arc<dyn HealthSink>,
        publish: watch::Sender<Arc<HealthTable>>,
        in_flight: Arc<InFlight>,
    ) -> Self {
        Self {
            config,
            second,
            sink,
            publish,
            in_flight,
            groups: HashMap::new(),
            slots: HashMap::new(),
            next_id: 0,
            due: BinaryHeap::new(),
            out: Outbox::default(),
            stats: Arc::default(),
            shared: Arc::default(),
            last: Arc::default(),
        }
    }

    /// Follows `snapshots` and probes until `stop`.
    async fn run(
        mut self,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        mut shared: watch::Receiver<Arc<SharedHealth>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut probes: JoinSet<Done> = JoinSet::new();
        let mut flush_at: Option<Instant> = None;
        let (mut watching, mut sharing) = (true, true);
        self.shared = shared.borrow_and_update().clone();
        let first = snapshots.borrow_and_update().clone();
        self.apply(&first);
        loop {
            if flush_at.is_none() && self.out.dirty() {
                flush_at = Some(self.out.next_flush());
            }
            let next_due = if probes.len() < MAX_PROBES { self.due.peek().map(|Reverse(d)| d.at) } else { None };
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                biased;
                () = crate::stopped(&mut stop) => break,
                changed = snapshots.changed(), if watching => match changed {
                    Ok(()) => {
                        let snapshot = snapshots.borrow_and_update().clone();
                        self.apply(&snapshot);
                    }
                    // Nobody compiles snapshots any more: keep checking the last one.
                    Err(_) => watching = false,
                },
                changed = shared.changed(), if sharing => match changed {
                    Ok(()) => {
                        self.shared = shared.borrow_and_update().clone();
                        // Every group again: which are ours, or what was found, changed.
                        let last = self.last.clone();
                        self.reconcile(&last, true);
                    }
                    Err(_) => sharing = false,
                },
                Some(joined) = probes.join_next(), if !probes.is_empty() => {
                    self.joined(joined);
                    while let Some(joined) = probes.try_join_next() {
                        self.joined(joined);
                    }
                }
                () = sleep_until(next_due.unwrap_or(far)), if next_due.is_some() => self.launch_due(&mut probes),
                () = sleep_until(flush_at.unwrap_or(far)), if flush_at.is_some() => {
                    flush_at = None;
                    self.flush();
                }
            }
        }
    }

    // --- reconciling snapshots ---

    /// Brings the targets in line with `snapshot`; groups whose view is unchanged are skipped.
    fn apply(&mut self, snapshot: &Arc<Snapshot>) {
        self.reconcile(snapshot, false);
    }

    /// [`Self::apply`]; with `every`, groups whose view did not change are reconciled too.
    fn reconcile(&mut self, snapshot: &Arc<Snapshot>, every: bool) {
        self.last = snapshot.clone();
        for (tg_id, view) in &snapshot.target_groups {
            if !every && self.groups.get(tg_id).is_some_and(|g| Arc::ptr_eq(&g.view, view) || g.view == *view) {
                continue;
            }
            self.apply_group(tg_id, view);
        }
        let gone: Vec<String> =
            self.groups.keys().filter(|id| !snapshot.target_groups.contains_key(*id)).cloned().collect();
        for tg_id in gone {
            if let Some(group) = self.groups.remove(&tg_id) {
                for id in group.targets.into_values() {
                    self.remove(id);
                }
            }
        }
    }

    fn apply_group(&mut self, tg_id: &str, view: &Arc<TargetGroupView>) {
        let check = Check::new(&view.health_check, self.config.min_health_check_interval, self.second);
        let (mut old, check) = match self.groups.remove(tg_id) {
            // Keep the same `Arc` when the check did not change: slots compare it by pointer.
            Some(g) if *g.check == check => (g.targets, g.check),
            Some(g) => (g.targets, Arc::new(check)),
            None => (HashMap::new(), Arc::new(check)),
        };
        let now = Instant::now();
        let mut targets = HashMap::with_capacity(view.targets.len());
        for target in &view.targets {
            let at = (target.id.clone(), target.port);
            if targets.contains_key(&at) {
                continue;
            }
            let mut plan = check::plan(&self.config, view, &check, target);
            let remote = matches!(plan, Plan::Probe(..)) && self.shared.elsewhere.contains(tg_id);
            if remote {
                let key =
                    TargetKey { target_group_id: tg_id.to_owned(), target_id: target.id.clone(), port: target.port };
                let found = self.shared.statuses.get(&key).copied();
                plan = Plan::Fixed(found.unwrap_or(TargetHealth { status: HealthStatus::Initial, reason: None }));
            }
            let id = match old.remove(&at) {
                Some(id) => id,
                None => self.create(view, target),
            };
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.remote = remote;
            }
            self.enter(id, view, &check, plan, now);
            targets.insert(at, id);
        }
        for id in old.into_values() {
            self.remove(id);
        }
        self.groups.insert(tg_id.to_owned(), Group { view: view.clone(), check, targets });
    }

    /// A slot for a target seen for the first time (its state is set by [`Self::enter`]).
    fn create(&mut self, view: &Arc<TargetGroupView>, target: &TargetView) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let key = TargetKey { target_group_id: view.id.clone(), target_id: target.id.clone(), port: target.port };
        let slot = Slot {
            key,
            group: view.clone(),
            check: Arc::new(Err(check::DISABLED)),
            state: State::Fixed,
            health: TargetHealth { status: HealthStatus::Initial, reason: None },
            reported: None,
            changed: false,
            probing: false,
            seq: 0,
            next: None,
            remote: false,
        };
        self.slots.insert(id, slot);
        id
    }

    /// Puts a target in the state its plan asks for, keeping what still holds: a probed target
    /// keeps its status when only its settings change (its next probe comes no later than one
    /// new interval from now); a draining one keeps its deadline.
    fn enter(
        &mut self,
        id: u64,
        view: &Arc<TargetGroupView>,
        check: &Arc<Result<Check, &'static str>>,
        plan: Plan,
        now: Instant,
    ) {
        let Some(slot) = self.slots.get_mut(&id) else { return };
        slot.group = view.clone();
        let check_changed = !Arc::ptr_eq(&slot.check, check);
        slot.check = check.clone();
        match plan {
            Plan::Probe(place, addr) => match &slot.state {
                State::Probe { place: p, addr: a, .. } if *a == addr && *p == place => {
                    if let (true, Ok(c)) = (check_changed, &**check) {
                        let at = now + c.interval;
                        if slot.next.is_some_and(|n| n > at) {
                            schedule(&mut self.due, id, slot, at);
                        }
                    }
                }
                _ => {
                    let epoch = self.out.epoch();
                    let machine = Machine::new();
                    self.out.show(id, slot, machine.health());
                    slot.state = State::Probe { place, addr, machine, epoch };
                    schedule(&mut self.due, id, slot, now);
                }
            },
            Plan::Fixed(health) => {
                slot.state = State::Fixed;
                unschedule(slot);
                self.out.show(id, slot, health);
            }
            Plan::Drain(since_ms) => {
                if !matches!(slot.state, State::Drain { .. }) {
                    let deadline = drain_deadline(since_ms, self.config.deregistration_delay, now);
                    slot.state = State::Drain { deadline, told: false };
                    let draining = TargetHealth { status: HealthStatus::Draining, reason: Some(check::DRAINING) };
                    self.out.show(id, slot, draining);
                    schedule(&mut self.due, id, slot, now);
                }
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(slot) = self.slots.remove(&id) {
            self.out.table.remove(&slot.key);
            self.out.table_dirty = true;
        }
    }

    // --- probing and draining ---

    /// Starts the probes that are due (as many as may run) and looks at due draining targets.
    fn launch_due(&mut self, probes: &mut JoinSet<Done>) {
        let now = Instant::now();
        while probes.len() < MAX_PROBES {
            let Some(&Reverse(due)) = self.due.peek() else { break };
            if due.at > now {
                break;
            }
            self.due.pop();
            let Some(slot) = self.slots.get_mut(&due.id) else { continue };
            if slot.seq != due.seq {
                continue;
            }
            slot.next = None;
            match &slot.state {
                // A probe of an earlier stint is still out: it reschedules when it lands.
                State::Probe { .. } if slot.probing => {}
                State::Probe { place, addr, epoch, .. } => {
                    let (place, addr, epoch, check, id) = (place.clone(), *addr, *epoch, slot.check.clone(), due.id);
                    slot.probing = true;
                    self.stats.health_checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    probes.spawn(async move {
                        let result = match &*check {
                            Ok(c) => probe::probe(&c.probe, &place, addr, c.timeout).await,
                            Err(_) => Err(Failure::Malformed),
                        };
                        (id, epoch, now, result)
                    });
                }
                State::Drain { .. } => self.look_at_draining(due.id, now),
                State::Fixed => {}
            }
        }
    }

    fn joined(&mut self, joined: Result<Done, tokio::task::JoinError>) {
        match joined {
            Ok(done) => self.finish(done),
            // Probes do not panic; if one did, its target would never be probed again.
            Err(e) => tracing::error!(error = %e, "a health-check probe panicked"),
        }
    }

    /// Takes a probe's result: moves the target's machine and schedules its next probe one
    /// interval after this one started.
    fn finish(&mut self, (id, epoch, started, result): Done) {
        let now = Instant::now();
        let Some(slot) = self.slots.get_mut(&id) else { return };
        slot.probing = false;
        let State::Probe { addr, machine, epoch: current, .. } = &mut slot.state else { return };
        let Ok(check) = &*slot.check else { return };
        if *current != epoch {
            // Probing stopped and started again while this probe was out: probe afresh.
            schedule(&mut self.due, id, slot, now);
            return;
        }
        if let Err(failure) = &result {
            tracing::debug!(target_id = %slot.key.target_id, port = slot.key.port, %addr, ?failure, "health check failed");
        }
        machine.record(result.is_ok(), check.healthy_threshold, check.unhealthy_threshold);
        let (health, next) = (machine.health(), (started + check.interval).max(now));
        self.out.show(id, slot, health);
        schedule(&mut self.due, id, slot, next);
    }

    /// A draining target is drained once nothing is in flight to it or its deadline passed.
    fn look_at_draining(&mut self, id: u64, now: Instant) {
        let Some(slot) = self.slots.get_mut(&id) else { return };
        let State::Drain { deadline, told } = &mut slot.state else { return };
        if *told || now >= *deadline || self.in_flight.get(&slot.key) == 0 {
            *told = true;
            self.out.drained.push(HealthReport::Drained {
                region: slot.group.region.clone(),
                account: slot.group.account.clone(),
                key: slot.key.clone(),
            });
            schedule(&mut self.due, id, slot, now + DRAINED_AGAIN);
        } else {
            let at = (now + DRAIN_POLL).min(*deadline);
            schedule(&mut self.due, id, slot, at);
        }
    }

    // --- publishing ---

    /// Publishes the table (if it changed) and reports what changed since the last flush.
    fn flush(&mut self) {
        let out = &mut self.out;
        out.last_flush = Some(Instant::now());
        if out.table_dirty {
            out.table_dirty = false;
            self.publish.send_replace(Arc::new(HealthTable { targets: out.table.clone() }));
        }
        let mut reports = Vec::with_capacity(out.changed.len() + out.drained.len());
        for id in std::mem::take(&mut out.changed) {
            let Some(slot) = self.slots.get_mut(&id) else { continue };
            slot.changed = false;
            if slot.remote {
                // Another node's finding, in its own record: nothing of this node's to say.
                slot.reported = None;
                continue;
            }
            if slot.reported != Some(slot.health) {
                slot.reported = Some(slot.health);
                reports.push(HealthReport::Status {
                    region: slot.group.region.clone(),
                    account: slot.group.account.clone(),
                    key: slot.key.clone(),
                    health: slot.health,
                });
            }
        }
        reports.append(&mut out.drained);
        if !reports.is_empty() {
            self.sink.report(reports);
        }
    }
}

// === impl Outbox ===

impl Outbox {
    /// Sets a slot's health and notes the change.
    fn show(&mut self, id: u64, slot: &mut Slot, health: TargetHealth) {
        if health == slot.health && self.table.contains_key(&slot.key) {
            return;
        }
        slot.health = health;
        self.table.insert(slot.key.clone(), health);
        self.table_dirty = true;
        if !slot.changed {
            slot.changed = true;
            self.changed.push(id);
        }
    }

    fn dirty(&self) -> bool {
        self.table_dirty || !self.changed.is_empty() || !self.drained.is_empty()
    }

    /// When the next flush may happen: now, unless the last one was less than a gap ago.
    fn next_flush(&self) -> Instant {
        let now = Instant::now();
        self.last_flush.map_or(now, |t| (t + PUBLISH_GAP).max(now))
    }

    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }
}

/// Makes `slot` due at `at` (replacing any earlier schedule).
fn schedule(due: &mut BinaryHeap<Reverse<Due>>, id: u64, slot: &mut Slot, at: Instant) {
    slot.seq += 1;
    slot.next = Some(at);
    due.push(Reverse(Due { at, id, seq: slot.seq }));
}

/// Cancels `slot`'s schedule (its heap entry is skipped when it comes up).
fn unschedule(slot: &mut Slot) {
    slot.seq += 1;
    slot.next = None;
}

/// When a target deregistered at `since_ms` (Unix milliseconds) has drained at the latest.
fn drain_deadline(since_ms: u64, delay: Duration, now: Instant) -> Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let end_ms = since_ms.saturating_add(delay.as_millis() as u64);
    now + Duration::from_millis(end_ms.saturating_sub(now_ms))
}
