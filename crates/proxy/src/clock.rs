//! The kernel's coarse monotonic clock: the time of its last tick, read from the vDSO page
//! without reading a time counter (a few nanoseconds, where the precise clock costs tens on
//! every read). It lags the precise clock by up to a tick (1-10 ms), so it serves what such a
//! lag does not change and what happens on every request: when a pooled connection went idle,
//! when a connection's last stream ended, when bytes last moved on a client's connection.
//! Request and response times keep the precise clock.
//!
//! Read through glibc (as `std` reads the precise clock), not rustix: rustix finds the vDSO
//! itself, and under Valgrind (`CALLGRIND=1 scripts/tlsbench`) what it finds is not mapped.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The kernel's coarse clock `id`.
fn coarse(id: libc::clockid_t) -> libc::timespec {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a live, writable timespec, the only memory clock_gettime(2) writes; for a
    // clock that exists (both used here are in every kernel since 2.6.32) it cannot fail.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::clock_gettime(id, &mut t) };
    t
}

/// Nanoseconds on the coarse monotonic clock.
fn coarse_nanos() -> u64 {
    let t = coarse(libc::CLOCK_MONOTONIC_COARSE);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// Seconds since the Unix epoch on the coarse real-time clock (for checks of minutes).
pub(crate) fn unix_seconds() -> u64 {
    u64::try_from(coarse(libc::CLOCK_REALTIME_COARSE).tv_sec).unwrap_or(0)
}

/// Now on the coarse clock, as an `Instant`, for deadlines a tick does not move: within a tick
/// of `Instant::now()` either way (the two clocks are paired once, when first asked).
pub(crate) fn instant() -> Instant {
    static PAIR: OnceLock<(Instant, u64)> = OnceLock::new();
    let now = coarse_nanos();
    let &(at, nanos) = PAIR.get_or_init(|| (Instant::now(), coarse_nanos()));
    at + Duration::from_nanos(now.saturating_sub(nanos))
}

/// How long before now (on the coarse clock) `earlier` was; zero if it was not before.
pub(crate) fn since(earlier: Instant) -> Duration {
    instant().saturating_duration_since(earlier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_pace_with_the_precise_clock() {
        let (coarse, precise) = (instant(), Instant::now());
        std::thread::sleep(Duration::from_millis(60));
        let (c, p) = (since(coarse), precise.elapsed());
        // Apart by at most a tick at each end (ticks are 10 ms at the slowest kernel rate).
        assert!(c.abs_diff(p) <= Duration::from_millis(25), "coarse {c:?}, precise {p:?}");
        assert_eq!(since(instant() + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn unix_seconds_are_the_system_clocks() {
        let precise = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(unix_seconds().abs_diff(precise) <= 1);
    }

    #[test]
    fn its_instants_are_within_a_tick_of_the_precise_ones() {
        for _ in 0..3 {
            let (coarse, precise) = (instant(), Instant::now());
            let apart = if coarse > precise { coarse - precise } else { precise - coarse };
            assert!(apart <= Duration::from_millis(25), "{apart:?} apart");
            std::thread::sleep(Duration::from_millis(15));
        }
    }
}
