//! The service scheduler's decisions, as a pure function of one service, its tasks and what is
//! known of their health: which tasks to launch (for which deployment), which to stop and why,
//! when a deployment has completed, when a deleted service is gone. The caller carries them out
//! and calls again on the next change; nothing here waits or remembers.
//!
//! The rules, after ECS's rolling update:
//! - the PRIMARY deployment wants `desiredCount` tasks; older deployments want none;
//! - tasks are launched while the service has fewer than `maximumPercent` of `desiredCount`
//!   (default 200 %) in flight, and while a launch backoff is not in force (tasks that keep
//!   failing are replaced at a slowing pace);
//! - tasks of older deployments (and surplus ones of the primary) are stopped only while the
//!   service keeps at least `minimumHealthyPercent` (default 100 %) of `desiredCount` healthy
//!   tasks; a healthy task is RUNNING and, when the deployment registers into Lattice target
//!   groups, reported HEALTHY there (or has no health checks to pass);
//! - a RUNNING task whose target is UNHEALTHY after the health-check grace period is replaced;
//! - a deployment is complete when the primary has `desiredCount` healthy tasks and no other
//!   deployment has any;
//! - a DRAINING service (DeleteService) has all its tasks stopped, then is INACTIVE.

use trellis_model::ecs::{Service, Task, status};

/// What the caller knows of a task's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not known yet (starting, health checks pending, or within the grace period).
    Unknown,
    /// Serving: RUNNING and its targets healthy (or nothing to check).
    Healthy,
    /// Failing its target health checks past the grace period.
    Unhealthy,
}

/// One decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a task for this deployment.
    Launch {
        /// The deployment's ID.
        deployment_id: String,
    },
    /// Stop this task.
    Stop {
        /// The task.
        task_arn: String,
        /// `stoppedReason`.
        reason: String,
    },
    /// The PRIMARY deployment is complete: mark it so, drop the others.
    Completed {
        /// The deployment's ID.
        deployment_id: String,
    },
    /// The DRAINING service has no task left: it is INACTIVE now.
    Inactive,
}

/// The decisions for `service`, whose tasks (any status) are `tasks`; `health` tells each
/// task's health; `may_launch` is false while a launch backoff is in force.
pub fn plan(service: &Service, tasks: &[&Task], health: &dyn Fn(&Task) -> Health, may_launch: bool) -> Vec<Action> {
    let live: Vec<&Task> = tasks.iter().copied().filter(|t| t.desired_status != status::STOPPED).collect();
    if service.status == status::DRAINING {
        if tasks.iter().all(|t| t.last_status == status::STOPPED) {
            return vec![Action::Inactive];
        }
        return live.iter().map(|t| stop(t, "Service deletion")).collect();
    }
    if service.status != status::ACTIVE {
        return Vec::new();
    }
    let Some(primary) = service.primary() else { return Vec::new() };
    let desired = usize::try_from(service.desired_count.max(0)).unwrap_or(0);
    let config = service.deployment_configuration.as_ref();
    let max_percent = config.and_then(|c| c.maximum_percent).unwrap_or(200).max(100) as usize;
    let min_percent = config.and_then(|c| c.minimum_healthy_percent).unwrap_or(100).clamp(0, 100) as usize;
    let max_total = (desired * max_percent / 100).max(desired);
    let min_healthy = (desired * min_percent).div_ceil(100);

    let mut out = Vec::new();
    let ours = |t: &&Task| t.started_by.as_deref() == Some(primary.id.as_str());
    let (mut current, mut old): (Vec<&Task>, Vec<&Task>) = live.iter().copied().partition(ours);

    // Unhealthy tasks are replaced (they count as gone from here on).
    let (sick, kept): (Vec<&Task>, Vec<&Task>) = current.into_iter().partition(|t| health(t) == Health::Unhealthy);
    current = kept;
    for t in sick {
        out.push(stop(t, "Task failed VPC Lattice health checks"));
    }
    let (sick_old, kept_old): (Vec<&Task>, Vec<&Task>) = old.into_iter().partition(|t| health(t) == Health::Unhealthy);
    old = kept_old;
    for t in sick_old {
        out.push(stop(t, "Task failed VPC Lattice health checks"));
    }

    let healthy = |ts: &[&Task]| ts.iter().filter(|t| health(t) == Health::Healthy).count();
    let mut in_flight = current.len() + old.len();

    // Scale in: surplus tasks of the primary, the least advanced first.
    if current.len() > desired {
        current.sort_by_key(|t| (health(t) == Health::Healthy, t.is_running(), t.created_at));
        let surplus = current.len() - desired;
        for t in current.drain(..surplus) {
            out.push(stop(t, "Scaling activity initiated by (deployment)"));
            in_flight -= 1;
        }
    }
    // Scale out / roll forward.
    let mut launches = 0;
    while may_launch && current.len() + launches < desired && in_flight < max_total {
        out.push(Action::Launch { deployment_id: primary.id.clone() });
        launches += 1;
        in_flight += 1;
    }
    // Roll old tasks away while enough healthy ones remain; those not serving go first.
    old.sort_by_key(|t| (health(t) == Health::Healthy, t.created_at));
    let mut serving = healthy(&current) + healthy(&old);
    for t in old.iter() {
        let counts = health(t) == Health::Healthy;
        if counts && serving <= min_healthy {
            break;
        }
        out.push(stop(t, "Scaling activity initiated by (deployment)"));
        if counts {
            serving -= 1;
        }
    }
    let stopping_all_old = out.iter().filter(|a| matches!(a, Action::Stop { .. })).count() >= old.len();
    if old.is_empty() && stopping_all_old && current.len() == desired && healthy(&current) == desired {
        let others_left = tasks
            .iter()
            .any(|t| t.started_by.as_deref() != Some(primary.id.as_str()) && t.last_status != status::STOPPED);
        let done = primary.rollout_state.as_deref() == Some("COMPLETED") && service.deployments.len() == 1;
        if !others_left && !done {
            out.push(Action::Completed { deployment_id: primary.id.clone() });
        }
    }
    out
}

fn stop(task: &Task, reason: &str) -> Action {
    Action::Stop { task_arn: task.task_arn.clone(), reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use trellis_model::Timestamp;
    use trellis_model::ecs::{Deployment, DeploymentConfiguration};

    use super::*;

    fn service(desired: i32, deployments: &[&str]) -> Service {
        Service {
            service_arn: "arn:svc".into(),
            status: status::ACTIVE.into(),
            desired_count: desired,
            deployments: deployments
                .iter()
                .enumerate()
                .map(|(i, id)| Deployment {
                    id: (*id).into(),
                    status: if i == 0 { status::PRIMARY.into() } else { status::ACTIVE.into() },
                    desired_count: desired,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn task(n: u64, deployment: &str, last: &str) -> Task {
        Task {
            task_arn: format!("arn:task/{n}"),
            started_by: Some(deployment.into()),
            desired_status: status::RUNNING.into(),
            last_status: last.into(),
            created_at: Timestamp(n),
            ..Default::default()
        }
    }

    fn by_status(t: &Task) -> Health {
        if t.is_running() { Health::Healthy } else { Health::Unknown }
    }

    fn launches(actions: &[Action]) -> usize {
        actions.iter().filter(|a| matches!(a, Action::Launch { .. })).count()
    }

    fn stops(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { task_arn, .. } => Some(task_arn.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_service_launches_its_desired_count_and_completes_when_healthy() {
        let s = service(2, &["d1"]);
        assert_eq!(launches(&plan(&s, &[], &by_status, true)), 2);
        assert_eq!(launches(&plan(&s, &[], &by_status, false)), 0, "backoff");
        let (a, b) = (task(1, "d1", status::RUNNING), task(2, "d1", status::PENDING));
        assert!(plan(&s, &[&a, &b], &by_status, true).is_empty(), "waits for the second");
        let b = task(2, "d1", status::RUNNING);
        assert_eq!(plan(&s, &[&a, &b], &by_status, true), vec![Action::Completed { deployment_id: "d1".into() }]);
    }

    #[test]
    fn rolling_keeps_the_minimum_healthy_and_respects_the_maximum() {
        let mut s = service(2, &["d2", "d1"]);
        s.deployment_configuration = Some(DeploymentConfiguration {
            maximum_percent: Some(150),
            minimum_healthy_percent: Some(50),
            ..Default::default()
        });
        let (o1, o2) = (task(1, "d1", status::RUNNING), task(2, "d1", status::RUNNING));
        // 150 % of 2 = 3 in flight: one launch; 50 % of 2 = 1 healthy: one old task may go.
        let actions = plan(&s, &[&o1, &o2], &by_status, true);
        assert_eq!(launches(&actions), 1);
        assert_eq!(stops(&actions), vec!["arn:task/1"]);
        // The new one is not healthy yet: the last old one stays.
        let n1 = task(3, "d2", status::ACTIVATING);
        let actions = plan(&s, &[&o2, &n1], &by_status, true);
        assert_eq!(launches(&actions), 1);
        assert!(stops(&actions).is_empty());
        let (n1, n2) = (task(3, "d2", status::RUNNING), task(4, "d2", status::PENDING));
        assert_eq!(stops(&plan(&s, &[&o2, &n1, &n2], &by_status, true)), vec!["arn:task/2"]);
        let n2 = task(4, "d2", status::RUNNING);
        let mut gone = task(2, "d1", status::STOPPED);
        gone.desired_status = status::STOPPED.into();
        assert_eq!(
            plan(&s, &[&gone, &n1, &n2], &by_status, true),
            vec![Action::Completed { deployment_id: "d2".into() }]
        );
    }

    #[test]
    fn default_rolling_starts_new_tasks_before_stopping_old_ones() {
        let s = service(1, &["d2", "d1"]);
        let o = task(1, "d1", status::RUNNING);
        let actions = plan(&s, &[&o], &by_status, true);
        assert_eq!((launches(&actions), stops(&actions).len()), (1, 0));
        let n = task(2, "d2", status::RUNNING);
        assert_eq!(stops(&plan(&s, &[&o, &n], &by_status, true)), vec!["arn:task/1"]);
    }

    #[test]
    fn scale_in_stops_the_least_advanced_and_unhealthy_tasks_are_replaced() {
        let s = service(1, &["d1"]);
        let (a, b) = (task(1, "d1", status::RUNNING), task(2, "d1", status::PENDING));
        assert_eq!(stops(&plan(&s, &[&a, &b], &by_status, true)), vec!["arn:task/2"]);
        let sick = |t: &Task| if t.task_arn == "arn:task/1" { Health::Unhealthy } else { by_status(t) };
        let actions = plan(&s, &[&a], &sick, true);
        assert_eq!(stops(&actions), vec!["arn:task/1"]);
        assert_eq!(launches(&actions), 1);
    }

    #[test]
    fn a_deleted_service_stops_everything_then_is_inactive() {
        let mut s = service(0, &["d1"]);
        s.status = status::DRAINING.into();
        let a = task(1, "d1", status::RUNNING);
        assert_eq!(stops(&plan(&s, &[&a], &by_status, true)), vec!["arn:task/1"]);
        let mut a = task(1, "d1", status::STOPPED);
        a.desired_status = status::STOPPED.into();
        assert_eq!(plan(&s, &[&a], &by_status, true), vec![Action::Inactive]);
    }
}
