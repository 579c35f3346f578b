//! Watches over etcd's gateway: `POST /v3/watch` answers with one JSON line per watch response,
//! for as long as the connection lasts. A task per watch reads the lines and hands the events
//! on, in revision order, and remembers the revision after the last one it handed on.
//!
//! When the connection breaks (etcd restarted, a member lost its leader, the network went) the
//! task opens the watch again from that revision, on whichever endpoint answers, backing off up
//! to [`MAX_BACKOFF`] between attempts: nothing is lost and nothing repeated. If etcd compacted
//! that revision meanwhile, the stream ends with [`Error::Compacted`], and the consumer reads
//! everything afresh.
//!
//! A watch that has been quiet for [`QUIET`] is not presumed dead (most are quiet most of the
//! time), but checked: a count of the keys under its prefix written since its resume revision,
//! on the same endpoint. If the endpoint does not answer, or the count says a write the watch
//! has not delivered is overdue (a connection that stalled without breaking), the watch is
//! reopened; resuming from its revision makes a needless reopen harmless. etcd's progress
//! notifications (sent to quiet watches) move the resume revision forward, so that a quiet watch
//! does not fall behind compaction for nothing.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::client::{CallError, Client, is_invalid_token};
use super::{Header, Inner, WireKv, WireRange, from_wire, int, key64, prefix_end64, store_error};
use crate::{Error, EventKind, Revision, WatchEvent, WatchStream};

/// How long a watch may be silent before it is checked (shorter in tests, to see it happen).
pub(super) const QUIET: Duration = if cfg!(test) { Duration::from_millis(300) } else { Duration::from_secs(10) };
/// How long that check may take.
const PROBE_TIMEOUT: Duration = if cfg!(test) { Duration::from_secs(1) } else { Duration::from_secs(5) };
/// How long opening a watch may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause before reopening a broken watch; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between attempts to reopen a broken watch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One line of the watch stream.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchLine {
    result: Option<WatchResult>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchResult {
    header: Header,
    created: bool,
    canceled: bool,
    cancel_reason: String,
    #[serde(deserialize_with = "int")]
    compact_revision: i64,
    events: Vec<WireEvent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireEvent {
    /// `PUT` (left out, being the default) or `DELETE`.
    #[serde(rename = "type")]
    kind: String,
    kv: WireKv,
}

/// A watch response body, split into lines.
struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    endpoint: usize,
}

/// The task behind one [`WatchStream`].
struct Watch {
    inner: Weak<Inner>,
    closed: tokio::sync::watch::Receiver<()>,
    /// The watched prefix, namespace included.
    prefix: String,
    namespace: String,
    /// The first revision not yet handed on.
    next: Revision,
    tx: mpsc::Sender<Result<WatchEvent, Error>>,
}

/// Why following a watch stopped.
enum End {
    Compacted(Revision),
    Lost(String),
    Stop,
}

/// Opens a watch of `prefix` from `from` (0: from the next revision) and starts its task.
pub(super) async fn open(inner: Arc<Inner>, prefix: String, from: Revision) -> Result<WatchStream, Error> {
    let prefix = format!("{}{prefix}", inner.namespace);
    let (lines, next) = connect(&inner.client, &prefix, from).await?;
    let (tx, rx) = mpsc::channel(256);
    let namespace = inner.namespace.clone();
    let watch = Watch { inner: Arc::downgrade(&inner), closed: inner.closed.clone(), prefix, namespace, next, tx };
    tokio::spawn(watch.run(lines));
    Ok(rx)
}

/// Opens the watch stream and waits for etcd to confirm it; the revision it starts at.
async fn connect(client: &Client, prefix: &str, from: Revision) -> Result<(Lines, Revision), Error> {
    let mut create = json!({ "key": key64(prefix), "range_end": prefix_end64(prefix), "progress_notify": true });
    if from > 0 {
        create["start_revision"] = json!(from.to_string());
    }
    let body = json!({ "create_request": create });
    let mut renewed = false;
    loop {
        let stream = client.stream("/v3/watch", &body).await.map_err(store_error)?;
        let token = stream.token.clone();
        let mut lines = Lines { body: stream.body, buf: Vec::new(), endpoint: stream.endpoint };
        let first = tokio::time::timeout(OPEN_TIMEOUT, lines.next())
            .await
            .map_err(|_| Error::Backend(format!("etcd did not confirm a watch within {OPEN_TIMEOUT:?}")))?
            .map_err(Error::Backend)?
            .ok_or_else(|| Error::Backend("etcd closed a watch as it was opened".into()))?;
        let result = parse(&first)?;
        if result.canceled {
            if result.compact_revision > 0 {
                return Err(Error::Compacted { requested: from, oldest: result.compact_revision });
            }
            if is_invalid_token(&result.cancel_reason) && !renewed {
                client.renew_token(token.as_deref()).await.map_err(store_error)?;
                renewed = true;
                continue;
            }
            return Err(Error::Backend(format!("etcd refused a watch: {}", result.cancel_reason)));
        }
        if !result.created {
            return Err(Error::Backend("etcd answered a watch without confirming it".into()));
        }
        let next = if from > 0 { from } else { result.header.revision + 1 };
        return Ok((lines, next));
    }
}

fn parse(line: &[u8]) -> Result<WatchResult, Error> {
    let line: WatchLine =
        serde_json::from_slice(line).map_err(|e| Error::Backend(format!("unreadable watch response: {e}")))?;
    match (line.result, line.error) {
        (_, Some(error)) => Err(Error::Backend(format!("etcd: watch failed: {error}"))),
        (Some(result), None) => Ok(result),
        (None, None) => Err(Error::Backend("etcd sent an empty watch response".into())),
    }
}

// === impl Watch ===

impl Watch {
    async fn run(mut self, mut lines: Lines) {
        loop {
            match self.follow(&mut lines).await {
                End::Stop => return,
                End::Compacted(oldest) => {
                    let _ = self.tx.send(Err(Error::Compacted { requested: self.next, oldest })).await;
                    return;
                }
                End::Lost(why) => {
                    tracing::debug!(prefix = %self.prefix, next = self.next, %why, "etcd watch lost; reopening")
                }
            }
            lines = match self.reopen().await {
                Some(lines) => lines,
                None => return,
            };
        }
    }

    /// Hands on the events of one watch stream until it ends.
    async fn follow(&mut self, lines: &mut Lines) -> End {
        loop {
            let line = tokio::select! {
                line = tokio::time::timeout(QUIET, lines.next()) => line,
                _ = self.closed.changed() => return End::Stop,
                () = self.tx.closed() => return End::Stop,
            };
            let line = match line {
                Err(_quiet) => {
                    if let Err(why) = self.probe(lines.endpoint).await {
                        return End::Lost(why);
                    }
                    continue;
                }
                Ok(Err(why)) => return End::Lost(why),
                Ok(Ok(None)) => return End::Lost("etcd ended the watch".into()),
                Ok(Ok(Some(line))) => line,
            };
            let result = match parse(&line) {
                Ok(result) => result,
                Err(e) => return End::Lost(e.to_string()),
            };
            if result.canceled {
                if result.compact_revision > 0 {
                    return End::Compacted(result.compact_revision);
                }
                return End::Lost(format!("etcd cancelled the watch: {}", result.cancel_reason));
            }
            if result.events.is_empty() {
                // A progress notification: every change up to its revision was sent.
                if !result.created {
                    self.next = self.next.max(result.header.revision + 1);
                }
                continue;
            }
            // etcd never splits a revision's events across responses, so a response is
            // handed on whole and a reopened watch starts after its last revision.
            let mut last = self.next - 1;
            for event in result.events {
                let kind = if event.kind == "DELETE" { EventKind::Delete } else { EventKind::Put };
                let kv = match from_wire(event.kv, &self.namespace) {
                    Ok(kv) => kv,
                    Err(e) => return End::Lost(e.to_string()),
                };
                if kv.mod_revision < self.next {
                    continue;
                }
                last = last.max(kv.mod_revision);
                if self.tx.send(Ok(WatchEvent { kind, kv })).await.is_err() {
                    return End::Stop;
                }
            }
            self.next = self.next.max(last + 1);
        }
    }

    /// Whether a quiet watch is still delivering: its endpoint answers, and holds no key under
    /// the prefix written at or after the resume revision (which the watch would have sent).
    async fn probe(&self, endpoint: usize) -> Result<(), String> {
        let Some(inner) = self.inner.upgrade() else { return Ok(()) };
        let body = json!({
            "key": key64(&self.prefix),
            "range_end": prefix_end64(&self.prefix),
            "count_only": true,
            "min_mod_revision": self.next.to_string(),
        });
        match inner.client.call_at::<WireRange>(endpoint, "/v3/kv/range", &body, PROBE_TIMEOUT).await {
            Ok(range) if range.count > 0 => {
                Err(format!("{} writes since revision {} are overdue", range.count, self.next))
            }
            Err(CallError::Broken(why) | CallError::Unreachable(why)) => Err(why),
            // Answering at all (an expired token included) is alive.
            Ok(_) | Err(CallError::Etcd { .. }) => Ok(()),
        }
    }

    /// Opens the watch again from `next`, until it opens, the store is dropped or the consumer
    /// goes away. `None` when the stream is over.
    async fn reopen(&mut self) -> Option<Lines> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let inner = self.inner.upgrade()?;
            let opened = connect(&inner.client, &self.prefix, self.next).await;
            drop(inner);
            match opened {
                Ok((lines, _)) => return Some(lines),
                Err(e @ Error::Compacted { .. }) => {
                    let _ = self.tx.send(Err(e)).await;
                    return None;
                }
                Err(e) => tracing::debug!(prefix = %self.prefix, error = %e, "cannot reopen an etcd watch yet"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = self.closed.changed() => return None,
                () = self.tx.closed() => return None,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

// === impl Lines ===

impl Lines {
    /// The next non-empty line; `None` at the end of the stream. Cancel-safe: a frame is either
    /// still in the body or already in the buffer.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("watch connection broke: {e}")),
                Some(Ok(frame)) => {
                    // Trailers carry nothing a watch needs.
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
