//! Handing freed heap memory back to the system after the configuration changes. glibc's malloc
//! keeps what a process frees (in every thread's arena, and in the middle of its heaps) for reuse,
//! so the transient peaks of building 10,000 services' snapshots, route tables and DNS zones would
//! otherwise stay in the process's RSS for good. [`trim_after_changes`] asks malloc to return
//! free pages a moment after each burst of new snapshots (once the data plane has let go of the
//! old ones), and [`limit_arenas`] keeps the blocking pool's many threads from each growing an
//! arena of their own (glibc allows eight per core), whose free space one trim cannot all give
//! back. Elsewhere than glibc these do nothing. Owns no allocation policy beyond that.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trellis_model::snapshot::Snapshot;

/// How long the configuration must stay unchanged before a trim: long enough for the data
/// plane to have dropped the last snapshot, and to keep trims (which hold malloc's locks for
/// milliseconds at 10,000 services) out of a burst of changes, whose propagation they would slow.
const SETTLE: Duration = Duration::from_millis(500);
/// The longest a trim waits while changes keep coming.
const AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// Trims the heap once the snapshots have stopped changing for [`SETTLE`] (or [`AT_MOST_EVERY`]
/// into a run of changes), until `stop` is raised.
pub async fn trim_after_changes(mut snapshots: watch::Receiver<Arc<Snapshot>>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let deadline = tokio::time::Instant::now() + AT_MOST_EVERY;
        loop {
            let quiet = (tokio::time::Instant::now() + SETTLE).min(deadline);
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(quiet) => break,
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        // Walking the arenas takes milliseconds: off the runtime's workers.
        if tokio::task::spawn_blocking(release).await.is_err() {
            return;
        }
    }
}

/// Most malloc arenas: one per runtime worker on the 2-core machines Trellis is measured on.
/// More cost RSS (each keeps its own free space), fewer cost contention on malloc's locks.
const MAX_ARENAS: std::ffi::c_int = 2;

// The crate's one foreign interface: glibc's `malloc_trim(3)` and `mallopt(3)` take no pointer
// and work under malloc's own locks, so they are sound from any thread at any time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
unsafe extern "C" {
    safe fn malloc_trim(pad: usize) -> std::ffi::c_int;
    safe fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
}

/// `M_ARENA_MAX` of glibc's `malloc.h`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const M_ARENA_MAX: std::ffi::c_int = -8;

/// Returns the heap's free pages to the system.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    malloc_trim(0);
}

/// Caps the number of malloc arenas at [`MAX_ARENAS`]; called before the runtime's threads
/// start. A server setting `MALLOC_ARENA_MAX` itself keeps its own value.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        mallopt(M_ARENA_MAX, MAX_ARENAS);
    }
}
