//! The scale measurement (ignored by default; about half a minute): 10,000 targets checked every
//! 5 s by a checker on one thread, the fake targets on other threads. Prints the checker's CPU.
//!
//! `cargo test -p trellis-proxy --release ten_thousand -- --ignored --nocapture`
//! (`TRELLIS_SCALE_SECS` sets the steady-state window, default 20; `TRELLIS_SCALE_REFUSED=1`
//! points every target at a closed port instead: connection refused, every check failing).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{FakeTarget, Harness, at, closed_port, config, group, snapshot};
use crate::{HealthStatus, ProxyConfig};

const GROUPS: usize = 100;
const PER_GROUP: usize = 100;

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(stat.split_whitespace().next().unwrap().parse().unwrap())
}

#[test]
#[ignore = "a measurement, about 30 s: run with --ignored --nocapture"]
fn ten_thousand_targets_on_one_core() {
    let secs: u64 = std::env::var("TRELLIS_SCALE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let refused = std::env::var_os("TRELLIS_SCALE_REFUSED").is_some();
    let servers_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // 100 servers; each target group holds one target on each, so 100 × 100 distinct targets.
    let (servers, addrs) = servers_rt.block_on(async {
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..PER_GROUP {
            if refused {
                addrs.push(closed_port().await);
            } else {
                let s = FakeTarget::start(200).await;
                addrs.push(s.addr);
                servers.push(s);
            }
        }
        (servers, addrs)
    });
    let hits: Vec<_> = servers.iter().map(|s| s.hits.clone()).collect();
    let total_hits = move || hits.iter().map(|h| h.load(Ordering::SeqCst)).sum::<usize>();
    let want = if refused { HealthStatus::Unhealthy } else { HealthStatus::Healthy };

    let checker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let groups = (0..GROUPS)
                .map(|g| {
                    group(&format!("tg-{g:04}"), addrs.iter().copied().map(at).collect(), |g| {
                        g.health_check.health_check_interval_seconds = Some(5);
                        g.health_check.health_check_timeout_seconds = Some(2);
                    })
                })
                .collect();
            let config = ProxyConfig { min_health_check_interval: Duration::from_secs(5), ..config(Duration::ZERO) };
            let (cpu0, t0) = (thread_cpu(), Instant::now());
            let mut h = Harness::start(config, Duration::from_secs(1), snapshot(groups));
            let deadline = t0 + Duration::from_secs(60);
            loop {
                let n = h.table.borrow_and_update().targets.values().filter(|t| t.status == want).count();
                if n == GROUPS * PER_GROUP {
                    break;
                }
                tokio::time::timeout_at(deadline, h.table.changed()).await.expect("all targets settle").unwrap();
            }
            let (settled, settle_cpu) = (t0.elapsed(), thread_cpu() - cpu0);
            let (cpu1, t1, hits1) = (thread_cpu(), Instant::now(), total_hits());
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let (cpu, wall, probes) = (thread_cpu() - cpu1, t1.elapsed(), total_hits() - hits1);
            h.stop().await;
            (settled, settle_cpu, cpu, wall, probes)
        })
    });
    let (settled, settle_cpu, cpu, wall, probes) = checker.join().unwrap();
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "{} targets ({}): all {want:?} after {settled:?} ({settle_cpu:?} CPU); steady state over {wall:.1?}: \
         checker thread {cpu:?} CPU = {:.1}% of a core{}",
        GROUPS * PER_GROUP,
        if refused { "connection refused" } else { "HTTP 200" },
        share * 100.0,
        if refused {
            String::new()
        } else {
            format!(
                ", {probes} probes ({:.0}/s, {:.1} µs CPU each)",
                probes as f64 / wall.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / probes.max(1) as f64
            )
        },
    );
    assert!(share < 0.5, "the checker used {:.0}% of a core", share * 100.0);
    drop(servers);
}
