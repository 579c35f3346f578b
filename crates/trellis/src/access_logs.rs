//! This node's metrics and access logs over HTTP: `GET /_trellis/metrics` (the Prometheus text
//! format) and `GET /_trellis/access-logs?service=<svc-…>&limit=<N>` (the newest N access log
//! entries this node wrote, all destinations merged and each request once, oldest first, as
//! NDJSON), both read from the data plane's [`Telemetry`]; and `trellis logs access`, which
//! prints the latter (`--follow` polls it and prints each new entry once).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use trellis_proxy::Telemetry;

use crate::client::Client;

/// Most entries one answer holds.
const MAX_LIMIT: usize = 10_000;

/// What `trellis logs access` prints.
#[derive(Debug)]
pub struct Options {
    /// Only this service's entries.
    pub service: Option<String>,
    /// How many of the newest.
    pub limit: usize,
    /// Keep printing new ones.
    pub follow: bool,
}

/// `/_trellis/metrics` and `/_trellis/access-logs`.
pub fn router(telemetry: Arc<Telemetry>) -> axum::Router {
    axum::Router::new()
        .route("/_trellis/access-logs", get(access_logs))
        .with_state(telemetry.clone())
        .merge(metrics_router(telemetry))
}

/// `/_trellis/metrics` alone (what `--metrics-listen` serves: read-only, so it has no
/// forgery guard of its own).
pub fn metrics_router(telemetry: Arc<Telemetry>) -> axum::Router {
    axum::Router::new().route("/_trellis/metrics", get(metrics)).with_state(telemetry)
}

async fn metrics(State(telemetry): State<Arc<Telemetry>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], telemetry.metrics()).into_response()
}

async fn access_logs(State(telemetry): State<Arc<Telemetry>>, RawQuery(query): RawQuery) -> Response {
    let (mut service, mut limit) = (None, 100);
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match &*k {
            "service" if !v.is_empty() => service = Some(v.into_owned()),
            "service" => {}
            "limit" => match v.parse::<usize>() {
                Ok(n) => limit = n.min(MAX_LIMIT),
                Err(_) => return (StatusCode::BAD_REQUEST, format!("limit {v:?} is not a number\n")).into_response(),
            },
            _ => return (StatusCode::BAD_REQUEST, format!("unknown parameter {k:?}\n")).into_response(),
        }
    }
    let body = telemetry.access_logs(service.as_deref(), limit);
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// `trellis logs access`: prints the newest entries; with `follow`, then every new one once a
/// second (each printed once, by `requestId`).
pub async fn print(client: &Client, options: Options) -> anyhow::Result<()> {
    let mut path = format!("/_trellis/access-logs?limit={}", options.limit.min(MAX_LIMIT));
    if let Some(svc) = &options.service {
        let encoded: String = form_urlencoded::byte_serialize(svc.as_bytes()).collect();
        path.push_str(&format!("&service={encoded}"));
    }
    let text = client.text("GET", &path).await?;
    print!("{text}");
    if !options.follow {
        return Ok(());
    }
    let mut seen: HashSet<String> = text.lines().filter_map(request_id).collect();
    let follow_path = match &options.service {
        Some(_) => path.replace(&format!("limit={}", options.limit.min(MAX_LIMIT)), &format!("limit={MAX_LIMIT}")),
        None => format!("/_trellis/access-logs?limit={MAX_LIMIT}"),
    };
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let text = client.text("GET", &follow_path).await?;
        let mut now_seen = HashSet::new();
        for line in text.lines() {
            let Some(id) = request_id(line) else { continue };
            if !seen.contains(&id) {
                println!("{line}");
            }
            now_seen.insert(id);
        }
        // What fell out of the server's window cannot come back: forget it.
        seen = now_seen;
    }
}

/// An entry's `requestId`.
fn request_id(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("requestId")?.as_str().map(str::to_owned)
}
