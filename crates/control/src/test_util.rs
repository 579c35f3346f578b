//! In-process helpers for handler tests: a router over a fresh SQLite store in a temp dir, and
//! a one-call request helper (`router(state).oneshot(request)`, no sockets).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use trellis_store::Store;

use crate::{ControlConfig, ControlState, Quotas};

/// A router on an empty store, and the temp dir that holds it (keep it alive).
pub(crate) fn app() -> (Router, tempfile::TempDir) {
    app_with(Quotas::default())
}

/// Like [`app`], with the given quotas.
pub(crate) fn app_with(quotas: Quotas) -> (Router, tempfile::TempDir) {
    let (app, _store, dir) = app_and_store_with(quotas);
    (app, dir)
}

/// Like [`app`], also handing back the store, for tests that seed records directly (resources
/// whose create operations live in other modules).
pub(crate) fn app_and_store() -> (Router, Arc<dyn Store>, tempfile::TempDir) {
    app_and_store_with(Quotas::default())
}

/// Like [`app_and_store`], with the given quotas.
pub(crate) fn app_and_store_with(quotas: Quotas) -> (Router, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = trellis_store::SqliteStore::open(&dir.path().join("store.db"), Default::default()).expect("store");
    let store: Arc<dyn Store> = Arc::new(store);
    let config = ControlConfig {
        default_region: "us-east-1".into(),
        account: "000000000000".into(),
        organization_id: "o-trellis0000".into(),
        partition_label: "7d67968".into(),
        hosted_zone_id: "Z0000000000000000000".into(),
        allowed_hosts: Vec::new(),
        quotas,
        relaxed_health_checks: false,
        loopback_targets: true,
        require_signature: false,
        api_token: "trellis-test-token".into(),
        data_dir: Some(dir.path().to_owned()),
    };
    (crate::router(ControlState::new(store.clone(), config)), store, dir)
}

/// Sends a Lattice request (unsigned, so the default region); returns the status, the error
/// code header (if any) and the JSON body (`Null` when empty).
pub(crate) async fn call(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path).header("host", "localhost");
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).expect("request")).await.expect("infallible");
    let status = resp.status();
    let code = resp.headers().get("x-amzn-errortype").map(|v| v.to_str().unwrap_or_default().to_owned());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    };
    (status, code, json)
}

/// Sends an EC2 query request (form body); returns the status and the XML text.
pub(crate) async fn ec2(app: &Router, params: &[(&str, &str)]) -> (StatusCode, String) {
    query(app, "2016-11-15", params).await
}

/// Sends an IAM query request (form body); returns the status and the XML text.
pub(crate) async fn iam(app: &Router, params: &[(&str, &str)]) -> (StatusCode, String) {
    query(app, "2010-05-08", params).await
}

/// Sends a query-protocol request of API `version`.
async fn query(app: &Router, version: &str, params: &[(&str, &str)]) -> (StatusCode, String) {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Version", version);
    for (k, v) in params {
        form.append_pair(k, v);
    }
    let req = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(Body::from(form.finish()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Sends an ECS request (JSON 1.1, unsigned); returns the status and the JSON body (errors
/// carry `__type`).
pub(crate) async fn ecs(app: &Router, operation: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    json11(app, &format!("AmazonEC2ContainerServiceV20141113.{operation}"), body).await
}

/// Sends an ACM request (JSON 1.1, unsigned); returns the status and the JSON body (errors
/// carry `__type`).
pub(crate) async fn acm(app: &Router, operation: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    json11(app, &format!("CertificateManager.{operation}"), body).await
}

/// Sends a JSON 1.1 request (unsigned) with `X-Amz-Target: target`; returns the status and the
/// JSON body (errors carry `__type`).
pub(crate) async fn json11(app: &Router, target: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "localhost")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", target)
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}
