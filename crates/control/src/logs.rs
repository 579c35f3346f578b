//! A CloudWatch Logs read subset (JSON 1.1: `POST /` with `X-Amz-Target:
//! Logs_20140328.<Operation>`): DescribeLogGroups, DescribeLogStreams, GetLogEvents and
//! FilterLogEvents over the access logs this node wrote for CloudWatch Logs destinations.
//!
//! A log group is a directory under the data directory (`trellis_model::access_log`'s layout:
//! `access-logs/cloudwatch/<region>/<account>/<group>/`), or a group an access log subscription
//! of the region and account names (which exists, empty, before its first record). A log stream
//! is a node's file in it (`<node>.log`, with its rotated `<node>.log.N` before it). An event is
//! one line: its timestamp is the entry's `startTime`. Nothing is written through this API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use trellis_model::access_log::{Destination, from_path_component, log_group_dir};
use trellis_model::lattice::AccessLogSubscription;
use trellis_model::{Kind, Timestamp};
use trellis_store::StoreExt;

use crate::ControlState;
use crate::dispatch::Ctx;
use crate::keys::Keys;

mod filter;

use filter::Pattern;

/// What every CloudWatch Logs `X-Amz-Target` starts with.
pub(crate) const TARGET_PREFIX: &str = "Logs_20140328.";

/// The CloudWatch Logs operations Trellis serves, A–Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    DescribeLogGroups,
    DescribeLogStreams,
    FilterLogEvents,
    GetLogEvents,
}

/// A CloudWatch Logs error.
#[derive(Debug)]
pub(crate) enum LogsError {
    /// Bad input.
    InvalidParameter(String),
    /// No such log group or stream.
    ResourceNotFound(String),
    /// Reading the store or the files failed.
    ServiceUnavailable(String),
    /// Not one of the operations served.
    UnknownOperation(String),
}

type Reply = Result<Value, LogsError>;

/// One event of a stream.
#[derive(Clone, Debug)]
struct Event {
    timestamp: u64,
    message: String,
    /// Where it is: the stream's files in order, then the line.
    id: String,
}

/// A log group: its name and directory.
struct Group {
    name: String,
    dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogGroupsRequest {
    log_group_name_prefix: Option<String>,
    log_group_name_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogStreamsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    descending: Option<bool>,
    next_token: Option<String>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetLogEventsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    next_token: Option<String>,
    limit: Option<i64>,
    start_from_head: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterLogEventsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

/// Serves one CloudWatch Logs request.
pub(crate) async fn handle(state: &ControlState, ctx: &Ctx, target: &str, body: &Bytes) -> Response {
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    crate::json11::reply(dispatch(state, ctx, op, body).await, &ctx.request_id)
}

async fn dispatch(state: &ControlState, ctx: &Ctx, op: &str, body: &Bytes) -> Reply {
    let operation = match op {
        "DescribeLogGroups" => Operation::DescribeLogGroups,
        "DescribeLogStreams" => Operation::DescribeLogStreams,
        "FilterLogEvents" => Operation::FilterLogEvents,
        "GetLogEvents" => Operation::GetLogEvents,
        other => return Err(LogsError::UnknownOperation(format!("{other} is not supported by Trellis"))),
    };
    let groups = groups(state, ctx).await?;
    let data_dir = state.config.data_dir.clone();
    let body = body.clone();
    let (region, account) = (ctx.region.clone(), ctx.account.clone());
    // Reading files blocks.
    let run = move || {
        let here = Here { data_dir: data_dir.as_deref(), region: &region, account: &account, groups };
        match operation {
            Operation::DescribeLogGroups => here.describe_log_groups(input(&body)?),
            Operation::DescribeLogStreams => here.describe_log_streams(input(&body)?),
            Operation::FilterLogEvents => here.filter_log_events(input(&body)?),
            Operation::GetLogEvents => here.get_log_events(input(&body)?),
        }
    };
    tokio::task::spawn_blocking(run).await.map_err(|e| LogsError::ServiceUnavailable(e.to_string()))?
}

/// The log groups of the request's region and account: directories, and the groups
/// subscriptions name.
async fn groups(state: &ControlState, ctx: &Ctx) -> Result<BTreeMap<String, Group>, LogsError> {
    let mut out = BTreeMap::new();
    let keys = Keys::new(&ctx.region, &ctx.account);
    let stored = state
        .store
        .list_prefix(&keys.all(Kind::AccessLogSubscription), None, 0)
        .await
        .map_err(|e| LogsError::ServiceUnavailable(e.to_string()))?;
    for kv in stored.kvs {
        let Ok(als) = serde_json::from_slice::<AccessLogSubscription>(&kv.value) else { continue };
        if let Some(Destination::CloudWatchLogs { region, account, group }) = Destination::parse(&als.destination_arn)
            && region == ctx.region
            && account == ctx.account
        {
            out.insert(group.clone(), Group { name: group, dir: None });
        }
    }
    if let Some(data_dir) = &state.config.data_dir {
        let root = data_dir.join(log_group_dir(&ctx.region, &ctx.account, "x"));
        let root = root.parent().map(Path::to_path_buf).unwrap_or_default();
        let dirs = std::fs::read_dir(&root).into_iter().flatten().filter_map(Result::ok);
        for entry in dirs {
            let encoded = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = from_path_component(&encoded) {
                out.insert(name.clone(), Group { name, dir: Some(entry.path()) });
            }
        }
    }
    Ok(out)
}

/// Decodes an operation's input.
fn input<T: DeserializeOwned>(body: &Bytes) -> Result<T, LogsError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| LogsError::InvalidParameter(format!("the request is malformed: {e}")))
}

/// What one request reads.
struct Here<'a> {
    data_dir: Option<&'a Path>,
    region: &'a str,
    account: &'a str,
    groups: BTreeMap<String, Group>,
}

// === impl Here ===

impl Here<'_> {
    fn describe_log_groups(&self, input: DescribeLogGroupsRequest) -> Reply {
        let limit = limit(input.limit, 50, 50)?;
        if input.log_group_name_prefix.is_some() && input.log_group_name_pattern.is_some() {
            return Err(invalid("logGroupNamePrefix and logGroupNamePattern are mutually exclusive"));
        }
        let prefix = input.log_group_name_prefix.unwrap_or_default();
        let pattern = input.log_group_name_pattern.unwrap_or_default();
        let after = input.next_token.unwrap_or_default();
        let mut matching = self
            .groups
            .values()
            .filter(|g| g.name.starts_with(&prefix) && g.name.contains(&pattern))
            .filter(|g| after.is_empty() || g.name > after);
        let page: Vec<&Group> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        let items: Vec<Value> = page
            .iter()
            .map(|g| {
                let files = g.dir.as_deref().map(stream_files).unwrap_or_default();
                let stored: u64 = files.values().flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
                let arn = self.group_arn(&g.name);
                json!({
                    "logGroupName": g.name,
                    "creationTime": created(g.dir.as_deref()),
                    "metricFilterCount": 0,
                    "arn": format!("{arn}:*"),
                    "logGroupArn": arn,
                    "storedBytes": stored,
                    "logGroupClass": "STANDARD",
                })
            })
            .collect();
        let mut out = json!({ "logGroups": items });
        if more && let Some(last) = page.last() {
            out["nextToken"] = json!(last.name);
        }
        Ok(out)
    }

    fn describe_log_streams(&self, input: DescribeLogStreamsRequest) -> Reply {
        let limit = limit(input.limit, 50, 50)?;
        let group = self.group(input.log_group_name, input.log_group_identifier)?;
        let prefix = input.log_stream_name_prefix.unwrap_or_default();
        let files = group.dir.as_deref().map(stream_files).unwrap_or_default();
        let mut names: Vec<&String> = files.keys().filter(|n| n.starts_with(&prefix)).collect();
        if input.descending.unwrap_or(false) {
            names.reverse();
        }
        let start = match input.next_token.as_deref() {
            None => 0,
            Some(t) => t.parse::<usize>().map_err(|_| invalid("the next token is not valid"))?,
        };
        let page: Vec<&&String> = names.iter().skip(start).take(limit).collect();
        let arn = self.group_arn(&group.name);
        let items: Vec<Value> = page
            .iter()
            .map(|name| {
                let paths = &files[name.as_str()];
                let events = read_events(paths);
                let stored: u64 = paths.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
                let mut s = json!({
                    "logStreamName": name,
                    "creationTime": created(paths.first().map(PathBuf::as_path)),
                    "arn": format!("{arn}:log-stream:{name}"),
                    "storedBytes": stored,
                });
                if let (Some(first), Some(last)) = (events.first(), events.last()) {
                    s["firstEventTimestamp"] = json!(first.timestamp);
                    s["lastEventTimestamp"] = json!(last.timestamp);
                    s["lastIngestionTime"] = json!(last.timestamp);
                }
                s
            })
            .collect();
        let mut out = json!({ "logStreams": items });
        if start + page.len() < names.len() {
            out["nextToken"] = json!((start + page.len()).to_string());
        }
        Ok(out)
    }

    fn get_log_events(&self, input: GetLogEventsRequest) -> Reply {
        let limit = limit(input.limit, 10_000, 10_000)?;
        let group = self.group(input.log_group_name, input.log_group_identifier)?;
        let stream = input.log_stream_name.ok_or_else(|| invalid("logStreamName is required"))?;
        let files = group.dir.as_deref().map(stream_files).unwrap_or_default();
        let paths = files
            .get(&stream)
            .ok_or_else(|| LogsError::ResourceNotFound("The specified log stream does not exist.".into()))?;
        let (from, to) = window(input.start_time, input.end_time)?;
        let events: Vec<Event> =
            read_events(paths).into_iter().filter(|e| e.timestamp >= from && e.timestamp < to).collect();
        let n = events.len();
        // Tokens: `f/<index>` reads forward from the index, `b/<index>` backward up to it.
        let (start, end) = match input.next_token.as_deref() {
            Some(t) => match t.split_once('/') {
                Some(("f", i)) => {
                    let i = i.parse::<usize>().map_err(|_| invalid("the next token is not valid"))?.min(n);
                    (i, (i + limit).min(n))
                }
                Some(("b", i)) => {
                    let i = i.parse::<usize>().map_err(|_| invalid("the next token is not valid"))?.min(n);
                    (i.saturating_sub(limit), i)
                }
                _ => return Err(invalid("the next token is not valid")),
            },
            None if input.start_from_head.unwrap_or(false) => (0, limit.min(n)),
            None => (n.saturating_sub(limit), n),
        };
        let items: Vec<Value> = events[start..end]
            .iter()
            .map(|e| json!({ "timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp }))
            .collect();
        Ok(json!({
            "events": items,
            "nextForwardToken": format!("f/{end}"),
            "nextBackwardToken": format!("b/{start}"),
        }))
    }

    fn filter_log_events(&self, input: FilterLogEventsRequest) -> Reply {
        let limit = limit(input.limit, 10_000, 10_000)?;
        let group = self.group(input.log_group_name, input.log_group_identifier)?;
        if input.log_stream_names.is_some() && input.log_stream_name_prefix.is_some() {
            return Err(invalid("logStreamNames and logStreamNamePrefix are mutually exclusive"));
        }
        let pattern = Pattern::parse(input.filter_pattern.as_deref().unwrap_or(""))
            .map_err(|why| invalid(&format!("Invalid filter pattern: {why}")))?;
        let (from, to) = window(input.start_time, input.end_time)?;
        let files = group.dir.as_deref().map(stream_files).unwrap_or_default();
        let prefix = input.log_stream_name_prefix.unwrap_or_default();
        let wanted = |name: &str| match &input.log_stream_names {
            Some(names) => names.iter().any(|n| n == name),
            None => name.starts_with(&prefix),
        };
        let mut searched = Vec::new();
        let mut events: Vec<(String, Event)> = Vec::new();
        for (name, paths) in files.iter().filter(|(n, _)| wanted(n)) {
            searched.push(json!({ "logStreamName": name, "searchedCompletely": true }));
            for e in read_events(paths) {
                if e.timestamp >= from && e.timestamp < to && pattern.matches(&e.message) {
                    events.push((name.clone(), e));
                }
            }
        }
        events.sort_by_key(|(_, e)| e.timestamp);
        let start = match input.next_token.as_deref() {
            None => 0,
            Some(t) => t.parse::<usize>().map_err(|_| invalid("the next token is not valid"))?,
        };
        let page: Vec<Value> = events
            .iter()
            .skip(start)
            .take(limit)
            .map(|(stream, e)| {
                json!({
                    "logStreamName": stream,
                    "timestamp": e.timestamp,
                    "message": e.message,
                    "ingestionTime": e.timestamp,
                    "eventId": e.id,
                })
            })
            .collect();
        let shown = page.len();
        let mut out = json!({ "events": page, "searchedLogStreams": searched });
        if start + shown < events.len() {
            out["nextToken"] = json!((start + shown).to_string());
        }
        Ok(out)
    }

    /// The group a request names (by name, or by name or ARN as its identifier).
    fn group(&self, name: Option<String>, identifier: Option<String>) -> Result<&Group, LogsError> {
        let name = match (name, identifier) {
            (Some(_), Some(_)) => return Err(invalid("logGroupName and logGroupIdentifier are mutually exclusive")),
            (Some(name), None) => name,
            (None, Some(id)) => match Destination::parse(&id) {
                Some(Destination::CloudWatchLogs { group, .. }) => group,
                _ => id,
            },
            (None, None) => return Err(invalid("logGroupName or logGroupIdentifier is required")),
        };
        if name.is_empty() || name.len() > 512 {
            return Err(invalid("logGroupName must be 1 to 512 characters"));
        }
        self.groups
            .get(&name)
            .ok_or_else(|| LogsError::ResourceNotFound("The specified log group does not exist.".into()))
    }

    fn group_arn(&self, name: &str) -> String {
        let _ = self.data_dir;
        format!("arn:aws:logs:{}:{}:log-group:{name}", self.region, self.account)
    }
}

/// A group directory's streams: each node's files, oldest first (`x.log.N` … `x.log.1`, `x.log`).
fn stream_files(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<(u32, PathBuf)>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        let (stream, n) = match file.rsplit_once(".log") {
            Some((stream, "")) => (stream, 0),
            Some((stream, rest)) => match rest.strip_prefix('.').and_then(|n| n.parse::<u32>().ok()) {
                Some(n) => (stream, n),
                None => continue,
            },
            None => continue,
        };
        out.entry(stream.to_owned()).or_default().push((n, entry.path()));
    }
    out.into_iter()
        .map(|(stream, mut files)| {
            files.sort_by_key(|f| std::cmp::Reverse(f.0));
            (stream, files.into_iter().map(|(_, p)| p).collect())
        })
        .collect()
}

/// Every event of a stream's files, in order (unreadable lines are skipped).
fn read_events(paths: &[PathBuf]) -> Vec<Event> {
    let mut out = Vec::new();
    for (f, path) in paths.iter().enumerate() {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let timestamp = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("startTime").and_then(Value::as_str).and_then(Timestamp::parse))
                .map_or(0, |t| t.0);
            out.push(Event { timestamp, message: line.to_owned(), id: format!("{f:04}{i:012}") });
        }
    }
    out
}

/// When a file or directory was made (its modification time stands in), in epoch ms.
fn created(path: Option<&Path>) -> u64 {
    path.and_then(|p| p.metadata().ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// `[startTime, endTime)` in epoch ms.
fn window(start: Option<i64>, end: Option<i64>) -> Result<(u64, u64), LogsError> {
    let ms = |v: Option<i64>, default: u64| match v {
        None => Ok(default),
        Some(v) => u64::try_from(v).map_err(|_| invalid("startTime and endTime must not be negative")),
    };
    Ok((ms(start, 0)?, ms(end, u64::MAX)?))
}

/// A `limit` within `1..=max`, or `default`.
fn limit(given: Option<i64>, default: usize, max: usize) -> Result<usize, LogsError> {
    match given {
        None => Ok(default),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => Err(invalid(&format!("limit {n} must be between 1 and {max}"))),
    }
}

fn invalid(message: &str) -> LogsError {
    LogsError::InvalidParameter(message.to_owned())
}

// === impl LogsError ===

impl IntoResponse for LogsError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::InvalidParameter(m) => (StatusCode::BAD_REQUEST, "InvalidParameterException", m),
            Self::ResourceNotFound(m) => (StatusCode::BAD_REQUEST, "ResourceNotFoundException", m),
            Self::ServiceUnavailable(m) => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceUnavailableException", m),
            Self::UnknownOperation(m) => (StatusCode::BAD_REQUEST, "UnknownOperationException", m),
        };
        crate::json11::error(status, code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_read_oldest_file_first() {
        let dir = std::env::temp_dir().join(format!("trellis-logs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |t: &str, id: &str| format!("{{\"startTime\":\"{t}\",\"requestId\":\"{id}\"}}\n");
        std::fs::write(dir.join("n1.log.2"), line("2026-01-01T00:00:00.001Z", "a")).unwrap();
        std::fs::write(dir.join("n1.log.1"), line("2026-01-01T00:00:00.002Z", "b")).unwrap();
        std::fs::write(dir.join("n1.log"), line("2026-01-01T00:00:00.003Z", "c")).unwrap();
        std::fs::write(dir.join("n2.log"), "not json\n").unwrap();
        std::fs::write(dir.join("other.txt"), "x").unwrap();
        let files = stream_files(&dir);
        assert_eq!(files.keys().collect::<Vec<_>>(), ["n1", "n2"]);
        let events = read_events(&files["n1"]);
        let ids: Vec<_> = events.iter().map(|e| e.message.contains("\"c\"")).collect();
        assert_eq!(ids, [false, false, true]);
        assert!(events.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        assert_eq!(read_events(&files["n2"])[0].timestamp, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn logs(app: &axum::Router, op: &str, body: Value) -> (StatusCode, Value) {
        crate::test_util::json11(app, &format!("{TARGET_PREFIX}{op}"), body).await
    }

    #[tokio::test]
    async fn reads_a_group_through_the_api() {
        let (app, _store, dir) = crate::test_util::app_and_store();
        let group = dir.path().join(log_group_dir("us-east-1", "000000000000", "/aws/g"));
        std::fs::create_dir_all(&group).unwrap();
        let line = |ms: u32, code: u16| {
            format!("{{\"startTime\":\"2026-01-01T00:00:00.{ms:03}Z\",\"responseCode\":{code}}}\n")
        };
        std::fs::write(group.join("n1.log"), [line(1, 200), line(2, 404), line(3, 200)].concat()).unwrap();

        let (status, out) = logs(&app, "DescribeLogGroups", json!({"logGroupNamePrefix": "/aws/"})).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out["logGroups"][0]["logGroupName"], "/aws/g");
        let (_, out) = logs(&app, "DescribeLogStreams", json!({"logGroupName": "/aws/g"})).await;
        assert_eq!(out["logStreams"][0]["logStreamName"], "n1");
        assert_eq!(out["logStreams"][0]["lastEventTimestamp"], 1_767_225_600_003_u64);
        let page = json!({"logGroupName": "/aws/g", "logStreamName": "n1", "limit": 2, "startFromHead": true});
        let (_, out) = logs(&app, "GetLogEvents", page).await;
        assert_eq!(out["events"].as_array().unwrap().len(), 2);
        assert_eq!(out["nextForwardToken"], "f/2");
        let next = json!({"logGroupName": "/aws/g", "logStreamName": "n1", "nextToken": "f/2"});
        let (_, out) = logs(&app, "GetLogEvents", next).await;
        assert_eq!(out["events"][0]["timestamp"], 1_767_225_600_003_u64);
        let filter = json!({"logGroupName": "/aws/g", "filterPattern": "{ $.responseCode = 404 }"});
        let (_, out) = logs(&app, "FilterLogEvents", filter).await;
        assert_eq!(out["events"].as_array().unwrap().len(), 1);
        assert!(out.get("nextToken").is_none());

        let (status, out) = logs(&app, "FilterLogEvents", json!({"logGroupName": "nope"})).await;
        assert_eq!((status, &out["__type"]), (StatusCode::BAD_REQUEST, &json!("ResourceNotFoundException")));
        let (status, out) = logs(&app, "DescribeLogGroups", json!({"limit": 51})).await;
        assert_eq!((status, &out["__type"]), (StatusCode::BAD_REQUEST, &json!("InvalidParameterException")));
        let (_, out) = logs(&app, "PutLogEvents", json!({})).await;
        assert_eq!(out["__type"], "UnknownOperationException");
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None, 50, 50).unwrap(), 50);
        assert!(limit(Some(0), 50, 50).is_err());
        assert!(limit(Some(51), 50, 50).is_err());
        assert_eq!(limit(Some(7), 50, 50).unwrap(), 7);
    }
}
