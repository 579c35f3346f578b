//! The AWS API endpoint (`trellis_control::router` over a SQLite store in a temp dir, in
//! process, no sockets): request bodies of every protocol it speaks — REST-JSON (VPC Lattice),
//! JSON 1.1 (ECS, ACM; `X-Amz-Target`) and query/form (EC2, IAM, STS; `Version` and `Action`)
//! — and the paths and identifiers in them.
//!
//! Input: an HTTP/1.1 request as text: `METHOD /path?query`, headers as `name: value`, an
//! empty line, the body. Requests are unsigned (the default region); the store persists
//! between inputs, as a server's does.
//! Checked: nothing panics, and no request gets a 5xx (every one of them is either our bug or
//! a store failure, and the store is a local file that does not fail).

#![no_main]

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use trellis_control::{ControlConfig, ControlState, Quotas};
use trellis_store::{SqliteStore, Store};

struct App {
    router: Router,
    runtime: tokio::runtime::Runtime,
    /// Print each response's status and the start of its body (to see what seeds get:
    /// `TRELLIS_FUZZ_SHOW=1 <binary> fuzz/corpus/api/*`).
    show: bool,
    /// Holds the store's files; under `TMPDIR` (scripts/fuzz points it at a directory of its own
    /// and removes it afterwards: libFuzzer exits without running destructors).
    _dir: tempfile::TempDir,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("trellis-fuzz-api").tempdir().expect("a temp dir");
        let store = SqliteStore::open(&dir.path().join("store.db"), Default::default()).expect("the store opens");
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
        let config = ControlConfig {
            default_region: "us-east-1".into(),
            account: "000000000000".into(),
            organization_id: "o-trellis0000".into(),
            partition_label: "7d67968".into(),
            hosted_zone_id: "Z0000000000000000000".into(),
            allowed_hosts: Vec::new(),
            quotas: Quotas::default(),
            relaxed_health_checks: false,
            loopback_targets: true,
            require_signature: false,
            api_token: "trellis-fuzz-token".into(),
            data_dir: Some(dir.path().to_owned()),
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let show = std::env::var_os("TRELLIS_FUZZ_SHOW").is_some();
        App { router: trellis_control::router(ControlState::new(store, config)), runtime, show, _dir: dir }
    })
}

/// The request `data` spells, if it is one `http` accepts.
fn request(data: &[u8]) -> Option<Request<Body>> {
    let split = data.windows(2).position(|w| w == b"\n\n").map_or(data.len(), |at| at + 2);
    let (head, body) = data.split_at(split);
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let (method, uri) = lines.next()?.split_once(' ')?;
    let mut builder = Request::builder().method(method).uri(uri);
    let mut host = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        host |= name.trim().eq_ignore_ascii_case("host");
        builder = builder.header(name.trim(), value.trim());
    }
    if !host {
        builder = builder.header("host", "localhost");
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else { return };
    let app = app();
    let (status, body) = app.runtime.block_on(async {
        let response = app.router.clone().oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        let body = response.into_body().collect().await.expect("a body in memory").to_bytes();
        (status, body)
    });
    if app.show {
        eprintln!("{status} {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
    }
    assert!(!status.is_server_error(), "{status}: {}", String::from_utf8_lossy(&body));
});
