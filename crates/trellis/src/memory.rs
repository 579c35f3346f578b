//! Handing freed heap memory back to the system after the configuration changes. glibc's malloc
//! keeps what a process frees (in every thread's arena, and in the middle of its heaps) for reuse,
//! so the transient peaks of building 10,000 services' snapshots, route tables and DNS zones would
//! otherwise stay in the process's RSS for good. [`trim_after_changes`] asks malloc to return
//! free pages a moment after each burst of new snapshots (once the data plane has let go of the
//! old ones). Elsewhere than glibc this does nothing. Owns no allocation policy beyond that.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trellis_model::snapshot::Snapshot;

/// How long after a new snapshot to trim: long enough for the data plane to have dropped the
/// last one, short enough that RSS follows the configuration. Also the most a trim can be
/// repeated while snapshots keep coming.
const SETTLE: Duration = Duration::from_secs(1);

/// Trims the heap [`SETTLE`] after every new snapshot (at most once per [`SETTLE`]), until
/// `stop` is raised.
pub async fn trim_after_changes(mut snapshots: watch::Receiver<Arc<Snapshot>>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(SETTLE) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Walking the arenas takes milliseconds: off the runtime's workers.
        if tokio::task::spawn_blocking(release).await.is_err() {
            return;
        }
    }
}

/// Returns the heap's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release() {
    // The one foreign call: glibc's `malloc_trim(3)` takes no pointer and works under malloc's
    // own locks, so it is sound from any thread at any time.
    #[allow(unsafe_code)]
    unsafe extern "C" {
        safe fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    malloc_trim(0);
}

/// Returns the heap's free pages to the system (a no-op off glibc).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() {}
