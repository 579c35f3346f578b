//! Choosing where a request goes inside a forward action (spec §3.6): a target group by weight
//! (a random roll into `trellis_model::route::pick_weighted`), then a target of that group by
//! round-robin over its healthy targets, failing open to every target that can take requests
//! when none is healthy. Draining targets never get new requests, and neither do targets the
//! proxy may not contact (no address; outside loopback in loopback mode): they count as absent.
//!
//! A [`Group`] is built once per snapshot or health change (never per request): the eligible
//! targets with their connection pools and in-flight counters, the healthy subset, and a cursor.
//! Picking costs one atomic increment.

use std::cell::Cell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use trellis_net::Network;

use trellis_model::snapshot::{TargetGroupView, TargetView, WeightedTarget};

use crate::error::ErrorKind;
use crate::forward::{Pool, PoolKey, Pools};
use crate::{HealthStatus, HealthTable, InFlight, TargetKey};

/// A target that may get requests.
pub(crate) struct Target {
    /// Which target (for logs).
    pub(crate) key: TargetKey,
    /// Its keep-alive connections.
    pub(crate) pool: Arc<Pool>,
    /// Its requests in flight (shared with the health checker).
    pub(crate) in_flight: Arc<AtomicUsize>,
}

/// A target group's protocol version: what its targets speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge in cleartext, ALPN `h2` over TLS).
    Http2,
    /// gRPC over HTTP/2.
    Grpc,
}

/// A target group, ready for picking.
pub(crate) struct Group {
    /// What its targets speak.
    pub(crate) version: Version,
    /// Its connections to targets speak TLS (an HTTPS target group).
    pub(crate) tls: bool,
    /// Targets that may get requests (not draining, contactable).
    targets: Vec<Target>,
    /// Indexes into `targets` of the healthy ones.
    healthy: Vec<usize>,
    /// Whether any target is registered at all (draining ones included).
    registered: bool,
    cursor: AtomicUsize,
}

/// What building groups needs besides the group itself.
pub(crate) struct BuildCtx<'a> {
    /// The health checker's last table.
    pub(crate) health: &'a HealthTable,
    /// Where in-flight counters live.
    pub(crate) in_flight: &'a InFlight,
    /// Upstream pools, kept across builds.
    pub(crate) pools: &'a mut Pools,
    /// The pools used by this build (the rest of `pools` is dropped).
    pub(crate) used: HashSet<PoolKey>,
    /// How VPCs are made real (where targets are reached from; in loopback mode only loopback
    /// targets are contacted).
    pub(crate) network: &'a Network,
}

// === impl Group ===

impl Group {
    /// Builds the group; its idle upstream connections close after `idle`; round-robin goes on
    /// from `cursor`. Connections to the targets of an HTTPS group speak TLS and send `sni`.
    pub(crate) fn build(
        view: &TargetGroupView,
        idle: Duration,
        sni: &Arc<str>,
        cursor: usize,
        ctx: &mut BuildCtx<'_>,
    ) -> Self {
        let tls = (view.protocol.as_deref() == Some("HTTPS")).then(|| sni.clone());
        let mut targets = Vec::with_capacity(view.targets.len());
        let mut healthy = Vec::new();
        let place = ctx.network.targets(view.vpc_id.as_deref());
        for t in &view.targets {
            let key = TargetKey { target_group_id: view.id.clone(), target_id: t.id.clone(), port: t.port };
            let status = ctx.health.targets.get(&key).map(|h| h.status);
            let Some(addr) = contactable(t, status, ctx.network.loopback_only()) else { continue };
            if status == Some(HealthStatus::Healthy) {
                healthy.push(targets.len());
            }
            let pool_key = (place.clone(), addr, idle, tls.clone());
            let pool = ctx.pools.pool(&pool_key);
            ctx.used.insert(pool_key);
            let in_flight = ctx.in_flight.counter(&key);
            targets.push(Target { key, pool, in_flight });
        }
        let version = match view.protocol_version.as_deref() {
            Some("HTTP2") => Version::Http2,
            Some("GRPC") => Version::Grpc,
            _ => Version::Http1,
        };
        Self {
            version,
            tls: tls.is_some(),
            targets,
            healthy,
            registered: !view.targets.is_empty(),
            cursor: AtomicUsize::new(cursor),
        }
    }

    /// Where round-robin stands (carried into the next build).
    pub(crate) fn cursor(&self) -> usize {
        self.cursor.load(Ordering::Relaxed)
    }

    /// The next target: round-robin over the healthy ones, else over all that may get requests.
    pub(crate) fn pick(&self) -> Result<&Target, ErrorKind> {
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        if !self.healthy.is_empty() {
            let i = self.healthy[n % self.healthy.len()];
            return self.targets.get(i).ok_or(ErrorKind::Internal);
        }
        if !self.targets.is_empty() {
            return Ok(&self.targets[n % self.targets.len()]);
        }
        Err(if self.registered { ErrorKind::NoAvailableTarget } else { ErrorKind::NoTargets })
    }
}

/// Where a target can be reached, if it may get new requests at all.
fn contactable(t: &TargetView, status: Option<HealthStatus>, loopback_only: bool) -> Option<SocketAddr> {
    if t.draining_since_ms.is_some() || status == Some(HealthStatus::Draining) {
        return None;
    }
    t.addr.filter(|a| !loopback_only || a.ip().is_loopback())
}

/// The target group of a forward action that gets this request, by weight.
pub(crate) fn pick_group(groups: &[WeightedTarget]) -> Option<&WeightedTarget> {
    if let [only] = groups {
        return (only.weight > 0).then_some(only);
    }
    trellis_model::route::pick_weighted(groups, random_u64())
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

/// A fast, non-cryptographic random number (wyrand), per thread: for weighted picks and request
/// ids, where an attacker gains nothing by predicting it.
pub(crate) fn random_u64() -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    })
}

fn seed() -> u64 {
    // The address of a thread-local differs per thread; it is a fallback only.
    let fallback = {
        let x = 0u8;
        std::ptr::from_ref(&x) as u64
    };
    getrandom::u64().unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weighted(ws: &[u32]) -> Vec<WeightedTarget> {
        ws.iter().enumerate().map(|(i, &w)| WeightedTarget { target_group_id: format!("tg-{i}"), weight: w }).collect()
    }

    #[test]
    fn single_group_needs_no_roll_and_weight_zero_gets_nothing() {
        assert_eq!(pick_group(&weighted(&[5])).unwrap().target_group_id, "tg-0");
        assert!(pick_group(&weighted(&[0])).is_none());
        assert!(pick_group(&weighted(&[0, 0])).is_none());
        let groups = weighted(&[0, 7]);
        for _ in 0..100 {
            assert_eq!(pick_group(&groups).unwrap().target_group_id, "tg-1");
        }
    }

    #[test]
    fn random_numbers_spread() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            seen.insert(random_u64() % 16);
        }
        assert_eq!(seen.len(), 16);
    }
}
