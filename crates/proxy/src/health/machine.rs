//! The status machine of a probed target (spec §3.7): `INITIAL` until the first check passes
//! (one pass is enough) or `unhealthy_threshold` checks in a row fail; then `HEALTHY` ↔
//! `UNHEALTHY`, each way after its threshold of consecutive results. Pure.

use super::check::FAILED;
use crate::{HealthStatus, TargetHealth};

/// Where a probed target stands, and the run of results that may move it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Machine {
    status: HealthStatus,
    /// Consecutive passes (reset by a failure).
    passes: u32,
    /// Consecutive failures (reset by a pass).
    failures: u32,
}

impl Machine {
    /// A target not yet checked.
    pub(crate) fn new() -> Self {
        Self { status: HealthStatus::Initial, passes: 0, failures: 0 }
    }

    /// Takes one probe's result; returns the (possibly new) status.
    pub(crate) fn record(&mut self, passed: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> HealthStatus {
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
        }
        self.status = match self.status {
            HealthStatus::Initial if passed => HealthStatus::Healthy,
            HealthStatus::Unhealthy if self.passes >= healthy_threshold.max(1) => HealthStatus::Healthy,
            HealthStatus::Initial | HealthStatus::Healthy if self.failures >= unhealthy_threshold.max(1) => {
                HealthStatus::Unhealthy
            }
            other => other,
        };
        self.status
    }

    /// The status as `ListTargets` shows it.
    pub(crate) fn health(&self) -> TargetHealth {
        let reason = (self.status == HealthStatus::Unhealthy).then_some(FAILED);
        TargetHealth { status: self.status, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Healthy, Initial, Unhealthy};

    fn run(results: &str, healthy: u32, unhealthy: u32) -> Vec<HealthStatus> {
        let mut m = Machine::new();
        results.chars().map(|c| m.record(c == '+', healthy, unhealthy)).collect()
    }

    #[test]
    fn one_pass_makes_a_new_target_healthy() {
        assert_eq!(run("+", 5, 2), [Healthy]);
        assert_eq!(run("-+", 5, 2), [Initial, Healthy]);
    }

    #[test]
    fn failures_from_initial_need_the_threshold() {
        assert_eq!(run("---", 5, 3), [Initial, Initial, Unhealthy]);
    }

    #[test]
    fn thresholds_govern_later_transitions() {
        assert_eq!(
            run("+-+--+++", 3, 2),
            [Healthy, Healthy, Healthy, Healthy, Unhealthy, Unhealthy, Unhealthy, Healthy],
            "a pass resets the failure run; three passes in a row recover"
        );
        assert_eq!(run("+--+-++", 2, 2), [Healthy, Healthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy]);
    }

    #[test]
    fn reasons() {
        let mut m = Machine::new();
        assert_eq!(m.health(), TargetHealth { status: Initial, reason: None });
        m.record(false, 2, 1);
        assert_eq!(m.health(), TargetHealth { status: Unhealthy, reason: Some(FAILED) });
    }
}
