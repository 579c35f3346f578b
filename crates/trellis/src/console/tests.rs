use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use trellis_control::{ControlConfig, ControlState, Quotas};
use trellis_store::{Durability, SqliteStore};

use super::*;

const TOKEN: &str = "the-token";

fn state(dir: &tempfile::TempDir) -> ControlState {
    let store = SqliteStore::open(&dir.path().join("store.db"), Durability::Process).unwrap();
    let config = ControlConfig {
        default_region: "us-east-1".into(),
        account: "000000000000".into(),
        organization_id: "o-test".into(),
        partition_label: "7d67968".into(),
        hosted_zone_id: "Z0".into(),
        allowed_hosts: vec![],
        quotas: Quotas::default(),
        relaxed_health_checks: false,
        loopback_targets: true,
        require_signature: false,
        api_token: TOKEN.into(),
        data_dir: None,
    };
    ControlState::new(Arc::new(store), config)
}

fn app(state: &ControlState) -> axum::Router {
    let info = NodeInfo { account: "000000000000".into(), region: "us-east-1".into(), node: "n1".into() };
    router(state.clone(), info)
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::empty()).unwrap()
}

fn sign_in_with(token: &str) -> Request<Body> {
    Request::post("/_trellis/console/session")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap()
}

#[tokio::test]
async fn signing_in_opens_a_session_the_api_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir);
    let app = app(&state);

    let (status, headers, body) = send(&app, get(PATH, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("id=\"signin\"") && !body.contains("app.js"), "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    // Not no-referrer: Chromium would then send `Origin: null` with the sign-in form.
    assert_eq!(headers[header::REFERRER_POLICY], "same-origin");
    assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().starts_with("default-src 'self'"));
    for path in ["/_trellis/console/info", "/_trellis/console/app.js"] {
        assert_eq!(send(&app, get(path, None)).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }

    let (status, headers, body) = send(&app, sign_in_with("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(body.contains("class=\"error\"") && body.contains("id=\"signin\""), "{body}");

    let (status, headers, _) = send(&app, sign_in_with(TOKEN)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], PATH);
    let set = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let id = cookie.strip_prefix("trellis_session=").unwrap();
    assert!(state.sessions.check(id), "the API's sessions know it");

    let (status, _, body) = send(&app, get(PATH, Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("/_trellis/console/app.js"), "{body}");
    let (status, headers, body) = send(&app, get("/_trellis/console/info", Some(&cookie))).await;
    assert_eq!((status, headers[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "application/json"));
    assert!(body.contains("\"node\":\"n1\""), "{body}");
    let (status, headers, _) = send(&app, get("/_trellis/console/app.js", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));

    let out = Request::post("/_trellis/console/signout").header(header::COOKIE, &cookie).body(Body::empty()).unwrap();
    let (status, headers, _) = send(&app, out).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert!(!state.sessions.check(id));
    assert_eq!(send(&app, get("/_trellis/console/info", Some(&cookie))).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_trailing_slash_leads_to_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let (status, headers, _) = send(&app(&state(&dir)), get("/_trellis/console/", None)).await;
    assert_eq!((status, &headers[header::LOCATION]), (StatusCode::SEE_OTHER, &HeaderValue::from_static(PATH)));
}

#[tokio::test]
async fn the_stylesheet_is_public_and_typed() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&state(&dir));
    let (status, headers, body) = send(&app, get("/_trellis/console/console.css", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert!(!body.is_empty());
}
