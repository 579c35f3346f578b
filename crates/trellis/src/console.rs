//! The web console at `/_trellis/console`: a page, a stylesheet and a script, all compiled into
//! the binary (`console/`), so nothing is fetched at run time and nothing is built on the user's
//! machine. This module owns signing in and out and serving those files; the page itself reads
//! and writes through the same AWS APIs as every other client (VPC Lattice, EC2, ECS), with the
//! session cookie in place of a signature, and polls `/_trellis/metrics` and
//! `/_trellis/access-logs` where this node serves them.
//!
//! [`trellis_control`]'s guard exempts the console's paths from the bearer-token check, so every
//! route here checks the session itself; the guard still refuses what a web page could forge
//! (a foreign `Origin`, `Sec-Fetch-Site: cross-site`, a foreign `Host`), which is what keeps a
//! cross-site form from signing anyone in or out. DESIGN.md's "Security baseline" is the
//! contract.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use trellis_control::ControlState;
use trellis_control::access::{SESSION_COOKIE, session_cookie};
use trellis_model::sigv4::constant_time_eq;

/// Where the console is served.
pub const PATH: &str = "/_trellis/console";

/// The page of a signed-in user.
const APP_HTML: &str = include_str!("console/index.html");
/// The sign-in page; `{message}` is replaced by a (fixed, HTML-free) message or nothing.
const SIGN_IN_HTML: &str = include_str!("console/signin.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/console.css");
const ICON_SVG: &str = include_str!("console/icon.svg");

/// Only this origin's files, no inline script or style, no framing, forms post only here.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   object-src 'none'";

/// What the page shows about the node it talks to.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The account every caller acts in.
    pub account: String,
    /// The region of unsigned requests (the console's).
    pub region: String,
    /// This node's name.
    pub node: String,
}

#[derive(Clone)]
struct Console {
    control: ControlState,
    info: NodeInfo,
}

/// The console's routes; `control` must be the state the API runs with, so that the sessions
/// opened here are the ones the API accepts.
pub fn router(control: ControlState, info: NodeInfo) -> axum::Router {
    axum::Router::new()
        .route(PATH, get(page))
        .route("/_trellis/console/", get(|| async { see_other() }))
        .route("/_trellis/console/session", post(sign_in))
        .route("/_trellis/console/signout", post(sign_out))
        .route("/_trellis/console/info", get(node_info))
        .route("/_trellis/console/app.js", get(script))
        .route("/_trellis/console/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/_trellis/console/icon.svg", get(|| async { asset("image/svg+xml", ICON_SVG) }))
        .with_state(Console { control, info })
}

/// `GET /_trellis/console`: the console if signed in, else the sign-in form.
async fn page(State(console): State<Console>, headers: HeaderMap) -> Response {
    if console.control.sessions.carried_by(&headers) {
        html(StatusCode::OK, APP_HTML.to_owned())
    } else {
        sign_in_page(StatusCode::OK, "")
    }
}

/// `POST /_trellis/console/session` (`token=…`): opens a session if the token is the API token.
async fn sign_in(State(console): State<Console>, body: Bytes) -> Response {
    let expected = console.control.config.api_token.as_bytes();
    let right = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .is_some_and(|(_, given)| !expected.is_empty() && constant_time_eq(given.trim().as_bytes(), expected));
    if !right {
        tracing::debug!("console sign-in refused: wrong token");
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            "That is not this installation's API token. <code>trellis credentials</code> prints it.",
        );
    }
    let id = console.control.sessions.open();
    let cookie = format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
    let mut resp = see_other();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, value);
    }
    resp
}

/// `POST /_trellis/console/signout`: closes the session and forgets the cookie.
async fn sign_out(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        console.control.sessions.close(id);
    }
    let mut resp = see_other();
    let expired = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&expired) {
        resp.headers_mut().insert(header::SET_COOKIE, value);
    }
    resp
}

/// `GET /_trellis/console/info`: the account, region and node, for a signed-in page.
async fn node_info(State(console): State<Console>, headers: HeaderMap) -> Response {
    if !console.control.sessions.carried_by(&headers) {
        return refused();
    }
    let body = serde_json::json!({
        "account": console.info.account,
        "region": console.info.region,
        "node": console.info.node,
        "requireSignature": console.control.config.require_signature,
    });
    secured(StatusCode::OK, "application/json", body.to_string())
}

/// `GET /_trellis/console/app.js`: the page's script, for signed-in pages only (the sign-in
/// page runs none).
async fn script(State(console): State<Console>, headers: HeaderMap) -> Response {
    if !console.control.sessions.carried_by(&headers) {
        return refused();
    }
    asset("text/javascript; charset=utf-8", APP_JS)
}

fn sign_in_page(status: StatusCode, message: &str) -> Response {
    let message = if message.is_empty() { String::new() } else { format!("<p class=\"error\">{message}</p>") };
    html(status, SIGN_IN_HTML.replace("{message}", &message))
}

fn html(status: StatusCode, body: String) -> Response {
    secured(status, "text/html; charset=utf-8", body)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    secured(StatusCode::OK, content_type, body.to_owned())
}

/// A 303 back to the console (after signing in or out, so a reload does not post again).
fn see_other() -> Response {
    let mut resp = secured(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", String::new());
    resp.headers_mut().insert(header::LOCATION, HeaderValue::from_static(PATH));
    resp
}

/// The 401 of a console endpoint without an open session.
fn refused() -> Response {
    let body = serde_json::json!({ "message": "sign in to the console first" }).to_string();
    secured(StatusCode::UNAUTHORIZED, "application/json", body)
}

/// Every console answer: never cached, never framed, never sniffed, and under [`CSP`].
fn secured(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: with it, Chromium sends `Origin: null` on the page's own form posts,
    // which the forgery guard (rightly) refuses.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

#[cfg(test)]
mod tests;
