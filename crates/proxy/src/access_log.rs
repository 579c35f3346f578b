//! Access logs: the record of one request (spec §5.2, [`Entry`]), built only for requests an
//! access log subscription applies to, and the writer that appends records to their
//! destinations' files under the data directory (layout: `trellis_model::access_log`).
//!
//! The request path never waits on the writer: a record goes into a bounded channel with
//! `try_send`, and when the writer has fallen behind (a slow disk, a destination that blocks)
//! the record is dropped and counted (`trellis_access_log_records_dropped_total`), never queued
//! without bound. The writer is a thread of its own (file I/O blocks), which serializes each
//! record once, appends it to each of its destinations (one JSON object a line), rotates a file
//! past its size limit (`<node>.log` → `<node>.log.1` …, keeping a fixed number), and keeps the
//! newest records in memory for `GET /_trellis/access-logs`. Records are per node.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::{Serialize, Serializer};

use crate::metrics::ProcessStats;

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

/// Where the records of requests through one (service network, service) go.
#[derive(Debug)]
pub(crate) struct LogRoute {
    /// Destination directories (relative to the data directory), deduplicated.
    pub(crate) destinations: Arc<[PathBuf]>,
    pub(crate) service_arn: Arc<str>,
    /// `svc-…` (what `GET /_trellis/access-logs?service=` filters on).
    pub(crate) service_id: Arc<str>,
    pub(crate) network_arn: Arc<str>,
}

/// One request's access log entry (spec §5.2): `-` where a field does not apply (`None`).
/// Built on the request path, so it holds what is cheap to take there (shared `Arc`s, static
/// names, numbers, the few strings copied from the request) and is turned into text by the
/// writer.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    /// Milliseconds since the Unix epoch.
    #[serde(serialize_with = "iso8601")]
    pub(crate) start_time: u64,
    #[serde(serialize_with = "dash")]
    pub(crate) service_network_arn: Option<Arc<str>>,
    #[serde(serialize_with = "dash")]
    pub(crate) service_arn: Option<Arc<str>>,
    #[serde(serialize_with = "dash")]
    pub(crate) source_vpc_arn: Option<Arc<str>>,
    #[serde(serialize_with = "dash")]
    pub(crate) source_vpc_id: Option<Arc<str>>,
    #[serde(serialize_with = "dash")]
    pub(crate) destination_vpc_id: Option<Arc<str>>,
    #[serde(serialize_with = "addr")]
    pub(crate) source_ip_port: Option<SocketAddr>,
    #[serde(serialize_with = "addr")]
    pub(crate) target_ip_port: Option<SocketAddr>,
    #[serde(serialize_with = "dash")]
    pub(crate) target_group_arn: Option<Arc<str>>,
    #[serde(serialize_with = "dash")]
    pub(crate) listener_id: Option<String>,
    pub(crate) listener_type: &'static str,
    #[serde(serialize_with = "dash")]
    pub(crate) request_method: Option<String>,
    #[serde(serialize_with = "dash")]
    pub(crate) request_path: Option<String>,
    pub(crate) protocol: &'static str,
    #[serde(serialize_with = "dash")]
    pub(crate) host_header: Option<String>,
    #[serde(serialize_with = "dash")]
    pub(crate) server_name_indication: Option<Box<str>>,
    #[serde(serialize_with = "dash")]
    pub(crate) user_agent: Option<String>,
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
    #[serde(serialize_with = "dash")]
    pub(crate) resolved_user: Option<String>,
    #[serde(serialize_with = "dash")]
    pub(crate) caller_principal: Option<String>,
    #[serde(rename = "callerPrincipalOrgID", serialize_with = "dash")]
    pub(crate) caller_principal_org_id: Option<String>,
    #[serde(rename = "callerX509IssuerOU")]
    pub(crate) caller_x509_issuer_ou: &'static str,
    #[serde(rename = "callerX509SubjectCN")]
    pub(crate) caller_x509_subject_cn: &'static str,
    #[serde(rename = "callerX509SANNameCN")]
    pub(crate) caller_x509_san_name_cn: &'static str,
    #[serde(rename = "callerX509SANDNS")]
    pub(crate) caller_x509_san_dns: &'static str,
    #[serde(rename = "callerX509SANURI")]
    pub(crate) caller_x509_san_uri: &'static str,
    pub(crate) request_id: RequestId,
    /// The W3C `traceparent` the request went to its target with (a Trellis field).
    #[serde(serialize_with = "dash")]
    pub(crate) traceparent: Option<String>,
}

/// How long the writer lets records gather before it takes them.
const BATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The newest records written, each with its service ID.
type Recent = Arc<Mutex<VecDeque<(Arc<str>, String)>>>;

/// A record on its way to the writer.
struct Job {
    destinations: Arc<[PathBuf]>,
    service_id: Arc<str>,
    entry: Entry,
}

/// The request path's end of the writer.
pub(crate) struct AccessLog {
    tx: SyncSender<Job>,
    recent: Recent,
}

/// An open destination file.
struct Open {
    file: std::io::BufWriter<File>,
    size: u64,
}

// === impl AccessLog ===

impl AccessLog {
    /// Starts the writer thread.
    pub(crate) fn start(config: AccessLogConfig, stats: Arc<ProcessStats>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue.max(1));
        let recent = Arc::new(Mutex::new(VecDeque::with_capacity(config.recent.min(1 << 16))));
        let writer = Writer { config, stats, recent: recent.clone(), files: HashMap::new(), failing: HashSet::new() };
        let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || writer.run(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access log writer; records will be dropped");
        }
        Self { tx, recent }
    }

    /// Hands a record to the writer, or counts it dropped when the writer is behind.
    pub(crate) fn send(&self, route: &LogRoute, entry: Entry, stats: &ProcessStats) {
        let job = Job { destinations: route.destinations.clone(), service_id: route.service_id.clone(), entry };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                stats.log_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The newest `limit` records written (for `service` alone if given), oldest first, one
    /// JSON object a line.
    pub(crate) fn recent(&self, service: Option<&str>, limit: usize) -> String {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut picked: Vec<&str> = recent
            .iter()
            .rev()
            .filter(|(svc, _)| service.is_none_or(|s| &**svc == s))
            .take(limit)
            .map(|(_, line)| line.as_str())
            .collect();
        picked.reverse();
        let mut out = String::with_capacity(picked.iter().map(|l| l.len() + 1).sum());
        for line in picked {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

struct Writer {
    config: AccessLogConfig,
    stats: Arc<ProcessStats>,
    recent: Recent,
    files: HashMap<PathBuf, Open>,
    /// Destinations whose last write failed.
    failing: HashSet<PathBuf>,
}

// === impl Writer ===

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        let mut written = Vec::new();
        // Waits for a record only when idle; while busy it takes what queued up every
        // `BATCH_EVERY`, so that a request's `try_send` almost never has a sleeping writer to
        // wake (a futex call and a context switch per request), and files are written in
        // batches.
        while let Ok(job) = rx.recv() {
            written.extend(self.write(job));
            std::thread::sleep(BATCH_EVERY);
            while let Ok(job) = rx.try_recv() {
                written.extend(self.write(job));
            }
            self.flush();
            // Readers of the recent records find them in the files too.
            self.remember(written.drain(..));
        }
        self.flush();
    }

    fn remember(&self, written: impl Iterator<Item = (Arc<str>, String)>) {
        if self.config.recent == 0 {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for record in written {
            if recent.len() >= self.config.recent {
                recent.pop_front();
            }
            recent.push_back(record);
        }
    }

    /// Appends a record to its destinations; the record, for the recent ones.
    fn write(&mut self, job: Job) -> Option<(Arc<str>, String)> {
        // A record's line is about 1 KiB: one allocation, not a string grown by doubling.
        let mut buf = Vec::with_capacity(1536);
        let line = match serde_json::to_writer(&mut buf, &job.entry).map(|()| String::from_utf8(buf)) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "an access log record serialized to invalid UTF-8");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialize an access log record");
                return None;
            }
        };
        for dir in job.destinations.iter() {
            match self.append(dir, &line) {
                Ok(()) => {
                    if self.failing.remove(dir) {
                        tracing::info!(dir = %dir.display(), "access log records are written again");
                    }
                }
                Err(e) => {
                    self.stats.log_errors.fetch_add(1, Ordering::Relaxed);
                    self.files.remove(dir);
                    // Said once per destination until it works again, not once per record.
                    if self.failing.insert(dir.clone()) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot write access log records");
                    }
                }
            }
        }
        self.stats.log_written.fetch_add(1, Ordering::Relaxed);
        Some((job.service_id, line))
    }

    fn append(&mut self, dir: &Path, line: &str) -> std::io::Result<()> {
        // The file's path is made only to open or rotate it, not per record.
        let path = || self.config.data_dir.join(dir).join(format!("{}.log", self.config.node));
        if !self.files.contains_key(dir) {
            let open = open(&path())?;
            self.files.insert(dir.to_owned(), open);
        }
        let Some(current) = self.files.get_mut(dir) else { return Ok(()) };
        if current.size > 0 && current.size + line.len() as u64 + 1 > self.config.max_file_bytes {
            current.file.flush()?;
            self.files.remove(dir);
            let path = path();
            rotate(&path, self.config.keep_files)?;
            self.files.insert(dir.to_owned(), open(&path)?);
        }
        let Some(current) = self.files.get_mut(dir) else { return Ok(()) };
        current.file.write_all(line.as_bytes())?;
        current.file.write_all(b"\n")?;
        current.size += line.len() as u64 + 1;
        Ok(())
    }

    fn flush(&mut self) {
        let mut failed = Vec::new();
        for (dir, open) in &mut self.files {
            if let Err(e) = open.file.flush() {
                failed.push((dir.clone(), e));
            }
        }
        for (dir, e) in failed {
            self.stats.log_errors.fetch_add(1, Ordering::Relaxed);
            self.files.remove(&dir);
            if self.failing.insert(dir.clone()) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot write access log records");
            }
        }
    }
}

/// A value, or `-`.
fn dash<S: Serializer, T: AsRef<str>>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_ref().map_or("-", AsRef::as_ref))
}

/// An address as `ip:port`, or `-`.
fn addr<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.collect_str(a),
        None => s.serialize_str("-"),
    }
}

/// Epoch milliseconds as ISO-8601 UTC.
fn iso8601<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&trellis_model::Timestamp(*ms).iso8601())
}

/// A request id as the proxy makes them (a UUID's 36 characters).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestId(pub(crate) [u8; 36]);

impl Default for RequestId {
    fn default() -> Self {
        Self([b'0'; 36])
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.0).unwrap_or("-"))
    }
}

/// Opens (creating) a destination file for appending.
fn open(path: &Path) -> std::io::Result<Open> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata().map_or(0, |m| m.len());
    Ok(Open { file: std::io::BufWriter::with_capacity(64 * 1024, file), size })
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
        LogRoute {
            destinations: dests.iter().map(PathBuf::from).collect(),
            service_arn: "arn:aws:vpc-lattice:us-east-1:0:service/svc-1".into(),
            service_id: "svc-1".into(),
            network_arn: "-".into(),
        }
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
            log.send(&r, entry, &stats);
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
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Request id `i`, 36 characters long.
    fn padded(i: u64) -> String {
        format!("{:0>36}", format!("req-{i}"))
    }

    /// A fresh directory under the system's temporary directory.
    fn tempfile_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("trellis-al-{}-{}", std::process::id(), crate::balance::random_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
