//! Access logs: the record of one request (spec §5.2, [`Entry`]), built only for requests an
//! access log subscription applies to, and the writer that appends records to their
//! destinations' files under the data directory (layout: `trellis_model::access_log`).
//!
//! The request path never waits on the writer. A record is written as its line of JSON
//! (`line.rs`) where the request ends, while what it copies is still in the worker's cache,
//! straight into the pending batch, under a lock held for that line's writing (a few hundred
//! nanoseconds; lines keep the order requests ended in); when the writer has fallen behind (a
//! slow disk, a destination that blocks) and `queue` lines are pending already, the record is
//! dropped and counted (`trellis_access_log_records_dropped_total`), never queued without
//! bound. The writer is a thread of its own (file I/O blocks). Every 20 ms it swaps the pending
//! batch for an empty one, appends the lines to their destinations (one write per destination
//! and batch), rotates a file past its size limit (`<node>.log` → `<node>.log.1` …, keeping a
//! fixed number), and keeps the newest records in memory for `GET /_trellis/access-logs` (the
//! batches themselves, not a copy per record). When a round finds nothing it sleeps until a
//! record comes. Records are per node.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use trellis_model::iam::Identity;

use crate::metrics::ProcessStats;

mod line;

/// Settings of the access log writer.
#[derive(Clone, Debug)]
pub struct AccessLogConfig {
    /// The data directory (files go under `access-logs/`).
    pub data_dir: PathBuf,
    /// This node's name: the file name (and CloudWatch Logs stream) of its records.
    pub node: String,
    /// A file rotates once it is this large.
    pub max_file_bytes: u64,
    /// Rotated files kept per destination (older ones are deleted).
    pub keep_files: usize,
    /// Records waiting for the writer at most; more are dropped.
    pub queue: usize,
    /// Newest records kept in memory for `GET /_trellis/access-logs`.
    pub recent: usize,
}

/// Where the records of requests through one (service network, service) go, and the parts of
/// their lines that are the same for every request through it, as JSON already (escaped once,
/// when the route table is built, not once a record).
#[derive(Debug)]
pub(crate) struct LogRoute {
    /// Where its records go (each record's line holds a reference).
    target: Arc<Target>,
    /// `serviceNetworkArn` and `serviceArn`.
    head: Fields,
    /// Per listener of the service: its ID, and its `listenerId` and `listenerType`.
    listeners: Box<[(Box<str>, Fields)]>,
    /// Per target group the service forwards to, in the order of the route's groups
    /// (`GroupObs::index`): its `destinationVpcId`, and its `targetGroupArn`.
    groups: Box<[(Fields, Fields)]>,
}

/// Fields of a line, as JSON: `,"key":"value"` for each (`line::fields`).
type Fields = Box<[u8]>;

/// What a [`LogRoute`] is made of.
pub(crate) struct RouteFacts<'a> {
    pub(crate) destinations: Vec<PathBuf>,
    pub(crate) service_id: &'a str,
    pub(crate) service_arn: &'a str,
    pub(crate) network_arn: &'a str,
    /// Each listener's ID and protocol as the API spells it.
    pub(crate) listeners: Vec<(&'a str, &'static str)>,
    /// Each target group's VPC ID and ARN, in the order of the route's groups.
    pub(crate) groups: Vec<(&'a str, &'a str)>,
}

/// The listener of a record: one of its route's, or (when the route does not know it) its
/// line's fields made for it.
#[derive(Debug, Default)]
pub(crate) enum ListenerLog {
    #[default]
    None,
    Known(usize),
    Other(Fields),
}

/// One request's access log entry (spec §5.2): `-` where a field does not apply (`None`).
/// Built on the request path, so it holds what is cheap to take there (the source VPC's part
/// of the line, indexes into the [`LogRoute`]'s parts, static names, numbers, and the
/// request's own text copied once into one buffer) and is written as its line where the
/// request ends (`line.rs` writes the JSON, field by field in this order).
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// Milliseconds since the Unix epoch.
    pub(crate) start_time: u64,
    /// `sourceVpcArn` and `sourceVpcId` (the VPC route's [`source_fields`]).
    pub(crate) source: Option<Arc<[u8]>>,
    pub(crate) source_ip_port: Option<SocketAddr>,
    pub(crate) target_ip_port: Option<SocketAddr>,
    /// The target group it went to (an index into the route's groups).
    pub(crate) group: Option<usize>,
    pub(crate) listener: ListenerLog,
    /// `requestMethod`, `requestPath`, `hostHeader`, `userAgent` and `traceparent`.
    pub(crate) request: RequestText,
    pub(crate) protocol: &'static str,
    pub(crate) server_name_indication: Option<Arc<str>>,
    pub(crate) response_code: u16,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) duration: u64,
    pub(crate) request_to_target_duration: u64,
    pub(crate) response_from_target_duration: u64,
    pub(crate) ssl_cipher: &'static str,
    pub(crate) tls_version: &'static str,
    pub(crate) auth_denied_reason: &'static str,
    pub(crate) failure_reason: &'static str,
    /// The caller a signature authenticated: `resolvedUser` and `callerPrincipal` are its
    /// principal's ARN, `callerPrincipalOrgID` its organization.
    pub(crate) caller: Option<Arc<Identity>>,
    pub(crate) request_id: RequestId,
}

/// A VPC's `sourceVpcArn` and `sourceVpcId`, as its records' lines have them.
pub(crate) fn source_fields(vpc_arn: &str, vpc_id: &str) -> Arc<[u8]> {
    line::fields(&[("sourceVpcArn", vpc_arn), ("sourceVpcId", vpc_id)]).into()
}

/// The text a record copies from the request, in one buffer (one allocation per record):
/// each [`Part`] is a span of it, or absent. The bytes are kept as the request sent them; the
/// writer reads invalid UTF-8 as U+FFFD, off the request path.
#[derive(Debug, Default)]
pub(crate) struct RequestText {
    bytes: Vec<u8>,
    spans: [Option<(usize, usize)>; Part::COUNT],
}

/// A piece of [`RequestText`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Part {
    Host,
    Method,
    Path,
    /// The W3C `traceparent` the request went to its target with (a Trellis field).
    Traceparent,
    UserAgent,
}

/// Batches whose buffers the writer keeps for reuse. A round's batch is as large as 20 ms of
/// records (a megabyte at 60,000 requests a second): a fresh one costs a page fault every 4 KiB,
/// and the rounds do not give back exactly one kept batch each.
const SPARE_BATCHES: usize = 4;

/// The writer thread's niceness (Linux's priorities are per thread).
const WRITER_NICE: i32 = 5;

/// How long dropping the log waits for the writer to write what is pending and stop.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the writer lets records gather before it takes them.
const BATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The most of a destination file given blocks at a time, ahead of its writes (its size
/// unchanged): a file that gets its blocks as it grows costs the filesystem a reservation
/// for each page written (ext4's delayed allocation), a fifth of the writer's time a record.
/// A file opened gets [`FIRST_PREALLOCATE`] first, then as much again as it was given since it
/// was opened, up to this: a busy destination soon gets its blocks 4 MiB at a time, while one
/// that gets a record now and then holds little more than it has.
const PREALLOCATE: u64 = 4 << 20;
const FIRST_PREALLOCATE: u64 = 64 << 10;

/// How long a destination file stays open after its last record: then it is closed (its
/// blocks past its end given back) and opened again by its next record. Destinations come and
/// go with subscriptions; the writer is not told, so without this each one it ever wrote would
/// keep a descriptor, and blocks allocated ahead, for as long as the process runs.
const CLOSE_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The request path's end of the writer.
pub(crate) struct AccessLog {
    shared: Arc<Shared>,
    recent: Arc<Mutex<Recent>>,
    /// The writer thread, to wake when records come to an idle writer or the log closes.
    writer: Option<std::thread::Thread>,
}

/// What the request path and the writer share.
struct Shared {
    /// The lines waiting for the writer.
    pending: Mutex<Pending>,
    /// Lines pending at most.
    queue: usize,
    /// The writer found nothing in its last round and sleeps until woken.
    idle: AtomicBool,
    /// The log is closed: the writer takes what is pending and stops.
    closed: AtomicBool,
    /// The writer has stopped, its last records written and its files closed.
    stopped: (Mutex<bool>, std::sync::Condvar),
}

/// The lines waiting for the writer, and the clock their times are written with.
#[derive(Default)]
struct Pending {
    batch: Batch,
    clock: line::Clock,
}

/// The records the writer took in one round, as text: one JSON object a line, each line
/// ending in `\n`.
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    lines: Vec<Line>,
}

/// One line of a [`Batch`]: it ends at `end` and starts where the one before ends.
struct Line {
    target: Arc<Target>,
    end: usize,
}

/// Where the records of a route go.
#[derive(Debug)]
struct Target {
    /// Destination directories (relative to the data directory), deduplicated.
    destinations: Box<[PathBuf]>,
    /// `svc-…` (what `GET /_trellis/access-logs?service=` filters on).
    service_id: Box<str>,
}

/// The newest records written, kept as the batches they were written in (no copy per record).
#[derive(Default)]
struct Recent {
    /// Each batch with the index of its first line still kept.
    batches: VecDeque<(Batch, usize)>,
    /// Lines kept.
    len: usize,
}

/// An open destination file.
struct Open {
    file: File,
    size: u64,
    /// Its size when it was opened.
    opened_at: u64,
    /// How far the file has blocks allocated ahead of its writes (at least `size`); `None`
    /// once its filesystem refused to preallocate.
    allocated: Option<u64>,
    /// When a record was last written to it (or it was opened).
    used: std::time::Instant,
}

/// A write that failed, with the number of lines it left unwritten.
struct Failed(std::io::Error, u64);

// === impl LogRoute ===

impl LogRoute {
    /// The route's destinations, and the fields of its records' lines made for all of them.
    pub(crate) fn new(facts: RouteFacts<'_>) -> Self {
        Self {
            target: Arc::new(Target { destinations: facts.destinations.into(), service_id: facts.service_id.into() }),
            head: line::fields(&[("serviceNetworkArn", facts.network_arn), ("serviceArn", facts.service_arn)]),
            listeners: facts
                .listeners
                .iter()
                .map(|&(id, protocol)| (id.into(), listener_fields(id, protocol)))
                .collect(),
            groups: facts
                .groups
                .iter()
                .map(|&(vpc, arn)| {
                    (line::fields(&[("destinationVpcId", vpc)]), line::fields(&[("targetGroupArn", arn)]))
                })
                .collect(),
        }
    }

    /// A record's reference to listener `id` (of protocol `protocol`).
    pub(crate) fn listener(&self, id: &str, protocol: &str) -> ListenerLog {
        match self.listeners.iter().position(|(l, _)| **l == *id) {
            Some(i) => ListenerLog::Known(i),
            None => ListenerLog::Other(listener_fields(id, protocol)),
        }
    }
}

/// A listener's `listenerId` and `listenerType`.
fn listener_fields(id: &str, protocol: &str) -> Fields {
    line::fields(&[("listenerId", id), ("listenerType", protocol)])
}

// === impl AccessLog ===

impl AccessLog {
    /// Starts the writer thread.
    pub(crate) fn start(config: AccessLogConfig, stats: Arc<ProcessStats>) -> Self {
        Self::start_closing_idle_after(config, stats, CLOSE_IDLE_AFTER)
    }

    /// [`AccessLog::start`], with files closed after `close_idle_after` without a record.
    fn start_closing_idle_after(
        config: AccessLogConfig,
        stats: Arc<ProcessStats>,
        close_idle_after: std::time::Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            queue: config.queue.max(1),
            idle: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stopped: (Mutex::new(false), std::sync::Condvar::new()),
        });
        let recent = Arc::new(Mutex::new(Recent::default()));
        let writer = Writer {
            config,
            stats,
            shared: shared.clone(),
            recent: recent.clone(),
            files: HashMap::new(),
            failing: HashSet::new(),
            hint: (0, 0),
            swept: std::time::Instant::now(),
            close_idle_after,
        };
        let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || writer.run());
        let writer = match spawned {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access log writer; records will be dropped");
                // Nothing takes the pending records: once full, each new one is dropped.
                None
            }
        };
        Self { shared, recent, writer }
    }

    /// Writes a record's line for the writer to take, or counts it dropped when the writer is
    /// behind.
    pub(crate) fn send(&self, route: &LogRoute, entry: &Entry, stats: &ProcessStats) {
        {
            let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.batch.lines.len() >= self.shared.queue {
                drop(pending);
                stats.log_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let Pending { batch, clock } = &mut *pending;
            entry.write_line(route, &mut batch.text, clock);
            batch.text.push(b'\n');
            let end = batch.text.len();
            batch.lines.push(Line { target: route.target.clone(), end });
        }
        // A writer that found nothing sleeps: the first record after wakes it.
        if self.shared.idle.load(Ordering::SeqCst)
            && self.shared.idle.swap(false, Ordering::SeqCst)
            && let Some(writer) = &self.writer
        {
            writer.unpark();
        }
    }

    /// Closes the log: the writer writes what is pending, closes its files and stops. Waits
    /// for that at most `wait` (a writer stuck on its destination is left to it). Records sent
    /// after are not written.
    pub(crate) fn close(&self, wait: std::time::Duration) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let Some(writer) = &self.writer else { return };
        writer.unpark();
        let (stopped, changed) = &self.shared.stopped;
        let stopped = stopped.lock().unwrap_or_else(|p| p.into_inner());
        let _ = changed.wait_timeout_while(stopped, wait, |stopped| !*stopped);
    }

    /// The newest `limit` records written (for `service` alone if given), oldest first, one
    /// JSON object a line.
    pub(crate) fn recent(&self, service: Option<&str>, limit: usize) -> String {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut picked: Vec<&[u8]> = recent
            .lines()
            .filter(|(svc, _)| service.is_none_or(|s| *svc == s))
            .take(limit)
            .map(|(_, line)| line)
            .collect();
        picked.reverse();
        let mut out = String::with_capacity(picked.iter().map(|l| l.len()).sum());
        for line in picked {
            out.push_str(&String::from_utf8_lossy(line));
        }
        out
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.close(CLOSE_WAIT);
    }
}

// === impl Batch ===

impl Batch {
    /// Where line `i` starts.
    fn start(&self, i: usize) -> usize {
        i.checked_sub(1).map_or(0, |prev| self.lines[prev].end)
    }

    /// The line the byte at `at` of the text belongs to.
    fn index_at(&self, at: usize) -> usize {
        self.lines.partition_point(|line| line.end <= at)
    }
}

// === impl Recent ===

impl Recent {
    /// Keeps `batch`, and of all lines kept the newest `keep` only; the batches no longer kept
    /// go to `spare` (up to [`SPARE_BATCHES`]), for their buffers to be used again.
    fn push(&mut self, batch: Batch, keep: usize, spare: &mut Vec<Batch>) {
        self.len += batch.lines.len();
        self.batches.push_back((batch, 0));
        while self.len > keep {
            let Some((oldest, first)) = self.batches.front_mut() else { break };
            let dropped = (self.len - keep).min(oldest.lines.len() - *first);
            *first += dropped;
            self.len -= dropped;
            if *first == oldest.lines.len()
                && let Some((batch, _)) = self.batches.pop_front()
                && spare.len() < SPARE_BATCHES
            {
                spare.push(batch);
            }
        }
    }

    /// The lines kept, newest first, each with its service ID (each line ends in `\n`).
    fn lines(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.batches.iter().rev().flat_map(|(batch, first)| {
            (*first..batch.lines.len())
                .rev()
                .map(move |i| (&*batch.lines[i].target.service_id, &batch.text[batch.start(i)..batch.lines[i].end]))
        })
    }
}

struct Writer {
    config: AccessLogConfig,
    stats: Arc<ProcessStats>,
    shared: Arc<Shared>,
    recent: Arc<Mutex<Recent>>,
    files: HashMap<PathBuf, Open>,
    /// Destinations whose last write failed.
    failing: HashSet<PathBuf>,
    /// The last round's size (text bytes and lines), with some room to grow.
    hint: (usize, usize),
    /// When files unused for `close_idle_after` were last looked for.
    swept: std::time::Instant,
    /// [`CLOSE_IDLE_AFTER`], but in tests.
    close_idle_after: std::time::Duration,
}

// === impl Writer ===

impl Writer {
    fn run(mut self) {
        // Requests come before their records: where the writer shares a busy core with a
        // worker, its round of file work waits for the worker instead of stalling requests
        // behind it (at nice 5 it still gets a quarter of a contended core, several times what
        // a core's worth of requests needs; when it does fall behind, records are dropped and
        // counted, as ever).
        if let Err(e) = rustix::process::nice(WRITER_NICE) {
            tracing::debug!(error = %e, "cannot lower the access log writer's priority");
        }
        // A round's batches are swapped for spare ones of about their size; the buffers of a
        // batch the recent records no longer keep are used again (fresh ones would cost a page
        // fault every 4 KiB).
        let mut spare: Vec<Batch> = Vec::with_capacity(SPARE_BATCHES);
        loop {
            // The round of records that gathered while the last one was written (or while
            // the writer slept); when there were none, sleep until a record comes.
            let closed = self.shared.closed.load(Ordering::SeqCst);
            let batch = match self.take(&mut spare) {
                Some(batch) => batch,
                None if closed => break,
                None => {
                    // Said idle before looking again, so that a record written after this
                    // look finds the flag and wakes the writer.
                    self.shared.idle.store(true, Ordering::SeqCst);
                    let batch = self.take(&mut spare);
                    self.shared.idle.store(batch.is_none(), Ordering::SeqCst);
                    match batch {
                        Some(batch) => batch,
                        None => {
                            // Woken by a record, or in time to close the files it left open.
                            if self.files.is_empty() {
                                std::thread::park();
                            } else {
                                std::thread::park_timeout(self.close_idle_after);
                            }
                            self.shared.idle.store(false, Ordering::SeqCst);
                            self.close_idle();
                            continue;
                        }
                    }
                }
            };
            let written = self.write(&batch);
            // Readers of the recent records find them in the files too.
            if self.config.recent > 0 {
                let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                recent.push(batch, self.config.recent, &mut spare);
            } else if spare.len() < SPARE_BATCHES {
                spare.push(batch);
            }
            // Counted once in the files (written above), not before.
            self.stats.log_written.fetch_add(written, Ordering::Relaxed);
            self.close_idle();
            if !closed {
                // Woken early only by `close` (a record wakes a writer that found none).
                std::thread::park_timeout(BATCH_EVERY);
            }
        }
        // Closed now (giving back blocks allocated ahead) rather than when the thread ends.
        self.files.clear();
        let (stopped, changed) = &self.shared.stopped;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        changed.notify_all();
    }

    /// Closes the files no record was written to for `close_idle_after` (looked for once a
    /// second at most).
    fn close_idle(&mut self) {
        let now = std::time::Instant::now();
        let every = std::time::Duration::from_secs(1).min(self.close_idle_after);
        if now.duration_since(self.swept) < every {
            return;
        }
        self.swept = now;
        let after = self.close_idle_after;
        self.files.retain(|_, open| now.duration_since(open.used) < after);
    }

    /// Takes the pending batch, if it has lines, leaving an empty one in its place: a spare
    /// (or new) one made ready before the lock is taken, with room for as much as the last
    /// round had (grown once, not by doubling).
    fn take(&mut self, spare: &mut Vec<Batch>) -> Option<Batch> {
        let mut empty = spare.pop().unwrap_or_default();
        empty.text.clear();
        empty.lines.clear();
        empty.text.reserve(self.hint.0);
        empty.lines.reserve(self.hint.1);
        let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.batch.lines.is_empty() {
            drop(pending);
            spare.push(empty);
            return None;
        }
        let batch = std::mem::replace(&mut pending.batch, empty);
        drop(pending);
        self.hint = (batch.text.len() + batch.text.len() / 8, batch.lines.len() + batch.lines.len() / 8);
        Some(batch)
    }

    /// Appends a batch's lines to their destinations: all of a destination's lines in one
    /// vectored write, straight from the batch (not copied into a buffer first), unless its
    /// file rotates between them. The number of records written to every destination of
    /// theirs.
    fn write(&mut self, batch: &Batch) -> u64 {
        // Each destination's lines, as ranges of the batch's text, in order.
        let mut by_dir: Vec<(&Path, Vec<(usize, usize)>)> = Vec::new();
        // Which records a destination's write left unwritten (by their place in the batch).
        let mut failed: Vec<bool> = Vec::new();
        let mut index: HashMap<&Path, usize> = HashMap::new();
        let mut first = 0;
        while first < batch.lines.len() {
            let target = &batch.lines[first].target;
            let run = batch.lines[first..].iter().take_while(|l| Arc::ptr_eq(&l.target, target)).count();
            for dir in target.destinations.iter() {
                let at = *index.entry(dir).or_insert_with(|| {
                    by_dir.push((dir, Vec::new()));
                    by_dir.len() - 1
                });
                let lines = &mut by_dir[at].1;
                lines.extend((first..first + run).map(|i| (batch.start(i), batch.lines[i].end)));
            }
            first += run;
        }
        for (dir, lines) in by_dir {
            match self.append(dir, &batch.text, &lines) {
                Ok(()) => {
                    if self.failing.remove(dir) {
                        tracing::info!(dir = %dir.display(), "access log records are written again");
                    }
                }
                Err(Failed(e, unwritten)) => {
                    self.stats.log_errors.fetch_add(unwritten, Ordering::Relaxed);
                    // A destination's lines are written in order: those left are its last.
                    failed.resize(batch.lines.len(), false);
                    for &(start, _) in &lines[lines.len() - unwritten as usize..] {
                        failed[batch.index_at(start)] = true;
                    }
                    self.files.remove(dir);
                    // Said once per destination until it works again, not once per record.
                    if self.failing.insert(dir.to_owned()) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot write access log records");
                    }
                }
            }
        }
        (batch.lines.len() - failed.iter().filter(|&&f| f).count()) as u64
    }

    /// Appends `lines` (ranges of `text`) to `dir`'s file, rotating it before a line that
    /// would take it past its size limit.
    fn append(&mut self, dir: &Path, text: &[u8], lines: &[(usize, usize)]) -> Result<(), Failed> {
        // The file's path is made only to open or rotate it, not per record.
        let path = |config: &AccessLogConfig| config.data_dir.join(dir).join(format!("{}.log", config.node));
        let mut done = 0;
        let mut rotated = false;
        while done < lines.len() {
            let unwritten = (lines.len() - done) as u64;
            if !self.files.contains_key(dir) {
                let open = open(&path(&self.config)).map_err(|e| Failed(e, unwritten))?;
                self.files.insert(dir.to_owned(), open);
            }
            let Some(current) = self.files.get_mut(dir) else { return Ok(()) };
            // The lines that fit (at least one into a file just rotated).
            let (mut size, mut fit) = (current.size, 0);
            for &(start, end) in &lines[done..] {
                let len = (end - start) as u64;
                if size > 0 && size + len > self.config.max_file_bytes && !(rotated && fit == 0) {
                    break;
                }
                (size, fit) = (size + len, fit + 1);
            }
            if fit > 0 {
                current.preallocate(size, self.config.max_file_bytes);
                write_lines(&current.file, text, &lines[done..done + fit]).map_err(|e| Failed(e, unwritten))?;
                current.size = size;
                current.used = std::time::Instant::now();
                (done, rotated) = (done + fit, false);
                continue;
            }
            self.files.remove(dir);
            let path = path(&self.config);
            rotate(&path, self.config.keep_files).map_err(|e| Failed(e, unwritten))?;
            rotated = true;
        }
        Ok(())
    }
}

/// Writes `lines` (ranges of `text`, in order) to `file`: adjacent ones as one slice, in as
/// few `writev` calls as the kernel takes them in (the standard library passes at most
/// `IOV_MAX` slices to one).
fn write_lines(mut file: &File, text: &[u8], lines: &[(usize, usize)]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for &(start, end) in lines {
        match &mut run {
            Some((_, last)) if *last == start => *last = end,
            _ => {
                if let Some((a, b)) = run.replace((start, end)) {
                    slices.push(IoSlice::new(&text[a..b]));
                }
            }
        }
    }
    if let Some((a, b)) = run {
        slices.push(IoSlice::new(&text[a..b]));
    }
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = file.write_vectored(rest)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

// === impl RequestText ===

impl RequestText {
    /// An empty text with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self { bytes: Vec::with_capacity(capacity), spans: [None; Part::COUNT] }
    }

    /// An empty text in `bytes` (emptied), with room for `capacity` bytes: a record's buffer
    /// used again for the next record's.
    pub(crate) fn reusing(mut bytes: Vec<u8>, capacity: usize) -> Self {
        bytes.clear();
        bytes.reserve(capacity);
        Self { bytes, spans: [None; Part::COUNT] }
    }

    /// The text's buffer, to be used again.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Sets `part` to `value` (a part set again takes the new value).
    pub(crate) fn set(&mut self, part: Part, value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.spans[part as usize] = Some((start, self.bytes.len()));
    }

    /// The bytes of `part`, if it is set.
    pub(crate) fn find(&self, part: Part) -> Option<&[u8]> {
        self.spans[part as usize].map(|(start, end)| &self.bytes[start..end])
    }
}

// === impl Part ===

impl Part {
    const COUNT: usize = 5;
}

/// A request id as the proxy makes them (a UUID's 36 characters).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestId(pub(crate) [u8; 36]);

impl Default for RequestId {
    fn default() -> Self {
        Self([b'0'; 36])
    }
}

/// Opens (creating) a destination file for appending.
fn open(path: &Path) -> std::io::Result<Open> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata().map_or(0, |m| m.len());
    Ok(Open { file, size, opened_at: size, allocated: Some(size), used: std::time::Instant::now() })
}

// === impl Open ===

impl Open {
    /// Gives the file blocks for its first `size` bytes if it lacks them: as much again as
    /// it was given since it was opened, from [`FIRST_PREALLOCATE`] up to [`PREALLOCATE`] at a
    /// time, up to `limit` (where it rotates) unless `size` is past it. Nothing changes for
    /// readers: the file's length stays what was written.
    fn preallocate(&mut self, size: u64, limit: u64) {
        let Some(allocated) = self.allocated else { return };
        if size <= allocated {
            return;
        }
        let step = allocated.saturating_sub(self.opened_at).clamp(FIRST_PREALLOCATE, PREALLOCATE);
        let to = (allocated + step).min(limit).max(size);
        let flags = rustix::fs::FallocateFlags::KEEP_SIZE;
        self.allocated = match rustix::fs::fallocate(&self.file, flags, allocated, to - allocated) {
            Ok(()) => Some(to),
            // Not supported here (or no room: the write says so): the file grows as written.
            Err(_) => None,
        };
    }
}

impl Drop for Open {
    /// Gives back the blocks allocated past what was written (a file closed by a rotation
    /// has at most one line's worth; the one open when the log closes, up to
    /// [`PREALLOCATE`]; a failed `fallocate` may have allocated some). Only when the file's
    /// length is what this writer wrote: a length it did not write (a failed write, another
    /// writer) is left as it is.
    fn drop(&mut self) {
        if self.file.metadata().is_ok_and(|m| m.len() == self.size) {
            let _ = self.file.set_len(self.size);
        }
    }
}

/// `x.log` → `x.log.1`, `x.log.1` → `x.log.2`, …, keeping `keep` rotated files.
fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let numbered = |n: usize| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn config(dir: &Path) -> AccessLogConfig {
        AccessLogConfig {
            data_dir: dir.to_owned(),
            node: "n1".into(),
            max_file_bytes: 2048,
            keep_files: 2,
            queue: 1024,
            recent: 5,
        }
    }

    fn route(dests: &[&str]) -> LogRoute {
        LogRoute::new(RouteFacts {
            destinations: dests.iter().map(PathBuf::from).collect(),
            service_id: "svc-1",
            service_arn: "arn:aws:vpc-lattice:us-east-1:0:service/svc-1",
            network_arn: "-",
            listeners: Vec::new(),
            groups: Vec::new(),
        })
    }

    fn wait_written(stats: &ProcessStats, n: u64) {
        for _ in 0..500 {
            if stats.log_written.load(Ordering::Relaxed) >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("records not written");
    }

    #[test]
    fn writes_rotates_and_keeps_recent() {
        let dir = tempfile_dir();
        let stats = Arc::new(ProcessStats::default());
        let log = AccessLog::start(config(&dir), stats.clone());
        let r = route(&["a", "b/c"]);
        for i in 0..100 {
            let mut entry = Entry::default();
            entry.request_id.0.copy_from_slice(padded(i).as_bytes());
            log.send(&r, &entry, &stats);
            // The queue is large enough here; a pause keeps the writer's pace irrelevant.
            if i % 10 == 0 {
                wait_written(&stats, i + 1);
            }
        }
        wait_written(&stats, 100);
        std::thread::sleep(std::time::Duration::from_millis(50));
        for d in ["a", "b/c"] {
            let current = std::fs::read_to_string(dir.join(d).join("n1.log")).unwrap();
            assert!(current.len() <= 2048, "{}", current.len());
            assert!(dir.join(d).join("n1.log.1").exists());
            assert!(dir.join(d).join("n1.log.2").exists());
            assert!(!dir.join(d).join("n1.log.3").exists());
            let last: serde_json::Value = serde_json::from_str(current.lines().last().unwrap()).unwrap();
            assert_eq!(last["requestId"], padded(99));
            assert_eq!(last["traceparent"], "-");
            assert_eq!(last["startTime"], "1970-01-01T00:00:00.000Z");
        }
        let recent = log.recent(None, 3);
        let ids: Vec<_> = recent
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["requestId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, [padded(97), padded(98), padded(99)]);
        assert_eq!(log.recent(Some("svc-2"), 3), "");
        assert_eq!(log.recent(Some("svc-1"), 100).lines().count(), 5);
    }

    /// The descriptors this process holds open on `path`.
    fn open_on(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == path)))
            .count()
    }

    /// A destination no record went to for a while is closed, its blocks ahead given back,
    /// while one still written to stays open (a subscription deleted, or one per churned
    /// destination, once kept a descriptor and 4 MiB of blocks each for good); a record for a
    /// closed one opens it again and appends.
    #[test]
    fn a_destination_without_records_is_closed_and_opened_again_by_the_next() {
        let dir = tempfile_dir();
        let stats = Arc::new(ProcessStats::default());
        // Long enough that a test thread held up for a while does not see a file it just
        // wrote to closed.
        let idle = std::time::Duration::from_secs(1);
        let log = AccessLog::start_closing_idle_after(config(&dir), stats.clone(), idle);
        let (gone, busy) = (route(&["gone"]), route(&["busy"]));
        let (gone_path, busy_path) = (dir.join("gone").join("n1.log"), dir.join("busy").join("n1.log"));
        let first_sent = std::time::Instant::now();
        log.send(&gone, &Entry::default(), &stats);
        log.send(&busy, &Entry::default(), &stats);
        wait_written(&stats, 2);
        assert_eq!((open_on(&gone_path), open_on(&busy_path)), (1, 1));
        // `busy` gets a record every 50 ms; `gone` none. The writer sleeps between records,
        // and also when none come at all (checked last).
        let started = std::time::Instant::now();
        let mut sent = 2;
        while open_on(&gone_path) == 1 {
            assert!(started.elapsed() < std::time::Duration::from_secs(20), "the idle file is still open");
            log.send(&busy, &Entry::default(), &stats);
            sent += 1;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(first_sent.elapsed() >= idle, "closed only once idle that long");
        wait_written(&stats, sent);
        assert_eq!(open_on(&busy_path), 1, "a destination written to stays open");
        assert!(std::fs::metadata(&gone_path).unwrap().blocks() * 512 < 64 << 10, "blocks given back");
        log.send(&gone, &Entry::default(), &stats);
        wait_written(&stats, sent + 1);
        assert_eq!(std::fs::read(&gone_path).unwrap().iter().filter(|&&b| b == b'\n').count(), 2);
        assert_eq!(open_on(&gone_path), 1);
        // With no records at all, the sleeping writer closes both.
        let started = std::time::Instant::now();
        while open_on(&gone_path) + open_on(&busy_path) > 0 {
            assert!(started.elapsed() < std::time::Duration::from_secs(20), "files still open while idle");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(stats.log_written.load(Ordering::Relaxed), sent + 1);
    }

    #[test]
    fn an_idle_writer_wakes_for_a_record_and_a_closed_log_writes_what_is_pending() {
        let dir = tempfile_dir();
        let stats = Arc::new(ProcessStats::default());
        let log = AccessLog::start(config(&dir), stats.clone());
        let r = route(&["a"]);
        // Long enough for the writer to find nothing and sleep.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(log.shared.idle.load(Ordering::SeqCst), "the writer sleeps while there is nothing");
        log.send(&r, &Entry::default(), &stats);
        wait_written(&stats, 1);
        // Records from several threads, then the log closes at once: all are written.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..25 {
                        log.send(&r, &Entry::default(), &stats);
                    }
                });
            }
        });
        drop(log);
        wait_written(&stats, 101);
        let written = std::fs::read_to_string(dir.join("a").join("n1.log")).unwrap_or_default();
        let rotated = std::fs::read_to_string(dir.join("a").join("n1.log.1")).unwrap_or_default();
        assert!(written.lines().count() + rotated.lines().count() > 0);
        assert_eq!(stats.log_dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_writer_stuck_on_its_destination_drops_what_the_pending_batch_cannot_hold() {
        let dir = tempfile_dir();
        // A FIFO nobody reads: opening it for writing blocks the writer.
        std::fs::create_dir_all(dir.join("a")).unwrap();
        let fifo = dir.join("a").join("n1.log");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let stats = Arc::new(ProcessStats::default());
        let log = AccessLog::start(AccessLogConfig { queue: 10, ..config(&dir) }, stats.clone());
        let r = route(&["a"]);
        log.send(&r, &Entry::default(), &stats);
        // Taken by the writer, which is now stuck opening the FIFO.
        for _ in 0..500 {
            if log.shared.pending.lock().unwrap().batch.lines.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(log.shared.pending.lock().unwrap().batch.lines.is_empty(), "the writer takes the first record");
        for _ in 0..15 {
            log.send(&r, &Entry::default(), &stats);
        }
        assert_eq!(log.shared.pending.lock().unwrap().batch.lines.len(), 10);
        assert_eq!(stats.log_dropped.load(Ordering::Relaxed), 5);
        // Unstick the writer (a reader opens the FIFO), and let it go.
        let reader = std::thread::spawn(move || {
            let mut f = File::open(&fifo).unwrap();
            std::io::copy(&mut f, &mut std::io::sink()).unwrap()
        });
        drop(log);
        wait_written(&stats, 11);
        assert!(reader.join().unwrap() > 0);
    }

    /// A destination file gets its blocks ahead of its writes, with its length what was
    /// written; when the log closes, the blocks past its end are given back. (Where the
    /// filesystem cannot preallocate, only the second half holds.)
    #[test]
    fn a_file_gets_blocks_ahead_and_gives_back_those_past_its_end() {
        let dir = tempfile_dir();
        // Some filesystems accept the call and allocate nothing.
        let can_preallocate = {
            let probe = File::create(dir.join("probe")).unwrap();
            rustix::fs::fallocate(&probe, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 1 << 20).is_ok()
                && probe.metadata().unwrap().blocks() * 512 >= 1 << 20
        };
        let stats = Arc::new(ProcessStats::default());
        let log = AccessLog::start(AccessLogConfig { max_file_bytes: 64 << 20, ..config(&dir) }, stats.clone());
        let r = route(&["a"]);
        for _ in 0..10 {
            log.send(&r, &Entry::default(), &stats);
        }
        wait_written(&stats, 10);
        let path = dir.join("a").join("n1.log");
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 10);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), written.len() as u64, "the length is what was written");
        if can_preallocate {
            assert!(meta.blocks() * 512 >= FIRST_PREALLOCATE, "{} bytes of blocks", meta.blocks() * 512);
        }
        // Dropping the log waits for the writer to close its files.
        drop(log);
        let held = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(held < 64 << 10, "{held} bytes of blocks held after the log closed");
        assert_eq!(std::fs::read(&path).unwrap(), written);
    }

    /// Blocks come 64 KiB first, then as much again as the file was given since it was
    /// opened, up to [`PREALLOCATE`] at a time, and stop at the rotation size unless a write
    /// needs more; a file whose filesystem refuses (here: opened read-only) is not asked again.
    #[test]
    fn preallocation_steps_grow_stop_at_the_limit_and_end_at_a_refusal() {
        let dir = tempfile_dir();
        std::fs::write(dir.join("f.log"), [b'x'; 1000]).unwrap();
        let mut open = super::open(&dir.join("f.log")).unwrap();
        assert_eq!((open.size, open.allocated), (1000, Some(1000)), "a file opened again starts at its length");
        open.preallocate(1010, 64 << 20);
        if open.allocated.is_some() {
            let given = |open: &Open| open.allocated.unwrap() - 1000;
            assert_eq!(given(&open), FIRST_PREALLOCATE);
            open.preallocate(1000 + FIRST_PREALLOCATE, 64 << 20);
            assert_eq!(given(&open), FIRST_PREALLOCATE, "already there");
            let mut steps = Vec::new();
            while given(&open) < 16 << 20 {
                let before = given(&open);
                open.preallocate(open.allocated.unwrap() + 1, 64 << 20);
                steps.push(given(&open) - before);
            }
            assert_eq!(steps[..7], [64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20]);
            assert!(steps[7..].iter().all(|&s| s == PREALLOCATE), "{steps:?}");
            let at = open.allocated.unwrap();
            open.preallocate(at + 1, at + 100);
            assert_eq!(open.allocated, Some(at + 100), "stops at the limit");
            open.preallocate(at + 200, at + 100);
            assert_eq!(open.allocated, Some(at + 200), "past the limit: what the write needs");
        }
        let file = File::open(dir.join("f.log")).unwrap();
        let mut refused = Open { file, size: 0, opened_at: 0, allocated: Some(0), used: std::time::Instant::now() };
        refused.preallocate(10, 64 << 20);
        assert_eq!(refused.allocated, None);
        refused.preallocate(PREALLOCATE * 2, 64 << 20);
        assert_eq!(refused.allocated, None, "not asked again");
    }

    /// Lines of two routes with destinations of their own, interleaved in one batch: each file
    /// gets its own lines in order (more slices of them than one `writev` takes, when they
    /// fall in one round).
    #[test]
    fn interleaved_destinations_each_get_their_lines_in_order() {
        let dir = tempfile_dir();
        let stats = Arc::new(ProcessStats::default());
        let cfg = AccessLogConfig { queue: 10_000, max_file_bytes: 64 << 20, ..config(&dir) };
        let log = AccessLog::start(cfg, stats.clone());
        let (a, b) = (route(&["a"]), route(&["b"]));
        let n = 2 * 1024 + 100;
        for i in 0..n {
            let mut entry = Entry::default();
            entry.request_id.0.copy_from_slice(padded(i).as_bytes());
            log.send(if i % 2 == 0 { &a } else { &b }, &entry, &stats);
        }
        drop(log);
        assert_eq!(stats.log_written.load(Ordering::Relaxed), n);
        for (d, parity) in [("a", 0), ("b", 1)] {
            let text = std::fs::read_to_string(dir.join(d).join("n1.log")).unwrap();
            let ids: Vec<String> = text
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["requestId"].as_str().unwrap().to_owned()
                })
                .collect();
            let expected: Vec<String> = (0..n).filter(|i| i % 2 == parity).map(padded).collect();
            assert_eq!(ids, expected, "{d}");
        }
    }

    /// A destination whose writes fail (its file is `/dev/full`) counts its records as errors
    /// and is opened again for the next round: once it is an ordinary file, records reach it.
    #[test]
    fn a_failed_write_counts_its_records_and_the_next_round_tries_again() {
        let dir = tempfile_dir();
        let stats = Arc::new(ProcessStats::default());
        let log = AccessLog::start(config(&dir), stats.clone());
        let r = route(&["a"]);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        let path = dir.join("a").join("n1.log");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        for _ in 0..5 {
            log.send(&r, &Entry::default(), &stats);
        }
        let errors = || stats.log_errors.load(Ordering::Relaxed);
        for _ in 0..500 {
            if errors() >= 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(errors(), 5, "each record of the failed write is counted");
        std::fs::remove_file(&path).unwrap();
        log.send(&r, &Entry::default(), &stats);
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(errors(), 5);
        assert_eq!(stats.log_written.load(Ordering::Relaxed), 1, "only the record that reached its file");
    }

    #[test]
    fn a_record_counts_as_written_once_every_destination_of_its_has_it() {
        let dir = tempfile_dir();
        let stats = Arc::new(ProcessStats::default());
        let log = AccessLog::start(AccessLogConfig { max_file_bytes: 1 << 20, ..config(&dir) }, stats.clone());
        // Two routes: one to a good destination alone, one also to a destination that fails.
        let (good, both) = (route(&["good"]), route(&["good", "bad"]));
        std::fs::create_dir_all(dir.join("bad")).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.join("bad").join("n1.log")).unwrap();
        for i in 0..12 {
            log.send(if i % 3 == 0 { &both } else { &good }, &Entry::default(), &stats);
        }
        drop(log);
        let lines = std::fs::read_to_string(dir.join("good").join("n1.log")).unwrap().lines().count();
        assert_eq!(lines, 12, "the good destination has every record");
        assert_eq!(stats.log_errors.load(Ordering::Relaxed), 4, "the failed destination's lines");
        assert_eq!(stats.log_written.load(Ordering::Relaxed), 8, "the records that reached every destination");
    }

    /// Request id `i`, 36 characters long.
    fn padded(i: u64) -> String {
        format!("{:0>36}", format!("req-{i}"))
    }

    /// A fresh directory under the system's temporary directory, removed when dropped (a
    /// test that fails leaves nothing behind either).
    fn tempfile_dir() -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("trellis-al-{}-{}", std::process::id(), crate::balance::random_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
