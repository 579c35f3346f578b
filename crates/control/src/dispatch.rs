//! One endpoint, several AWS services. A request is refused if a web page could have forged it,
//! or (with `--require-signature`) if it does not prove who sent it ([`crate::access`]);
//! otherwise its AWS service is found, in this order: the SigV4 credential scope, the
//! `X-Amz-Target` prefix, the form body's `Version` (EC2, IAM, STS), and last the REST path (VPC Lattice).
//! The scope also gives the request's region; unsigned requests use the default region.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ControlState;
use crate::access::{self, Protocol};
use crate::identity::Resolver;

/// Who is calling, where, and which request this is.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    /// The request's region.
    pub(crate) region: String,
    /// The caller's account.
    pub(crate) account: String,
    /// This request's ID (`x-amzn-RequestId`).
    pub(crate) request_id: String,
    /// The access key ID the request's `Authorization` names, if any: verified with
    /// `--require-signature`, else only claimed. STS and IAM use it to say who the caller is.
    pub(crate) access_key_id: Option<String>,
    /// `X-Amz-Security-Token`, if sent.
    pub(crate) session_token: Option<String>,
}

/// The AWS services the endpoint knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Acm,
    Ec2,
    Ecs,
    Iam,
    Lattice,
    Logs,
    Sts,
}

pub(crate) fn router(state: ControlState, extra: Router) -> Router {
    Router::new()
        .route("/_trellis/health", get(health))
        .fallback(aws)
        .with_state(state.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(state, guard))
}

/// The router of a node that does not serve the AWS APIs (`--role` without `api`): Trellis's
/// own endpoints, with the same guard; every other request is turned away with a message
/// that says where the APIs are.
pub(crate) fn node_router(state: ControlState, extra: Router, roles: String) -> Router {
    let not_here = move || {
        let message = format!(
            "this Trellis node does not serve the AWS APIs (its roles: {roles}); send API calls to a node with the api role"
        );
        async move { rest_json_error(StatusCode::NOT_FOUND, "UnknownOperationException", &message) }
    };
    Router::new()
        .route("/_trellis/health", get(health))
        .fallback(not_here)
        .with_state(state.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(state, guard))
}

async fn health() -> &'static str {
    "ok\n"
}

/// Refuses what a web page could send ([`forged`]) and, with `--require-signature`, calls of
/// Trellis's own endpoints without the API token (AWS calls are verified in [`aws`], which has
/// the body).
async fn guard(State(state): State<ControlState>, req: Request, next: Next) -> Response {
    if let Some(refused) = forged(&state, req.headers()) {
        return refused;
    }
    let path = req.uri().path();
    let ours = path.starts_with("/_trellis/")
        && path != "/_trellis/health"
        // The console answers its sign-in page to anyone and checks its session itself.
        && path != "/_trellis/console"
        && !path.starts_with("/_trellis/console/");
    // The credentials (the root key and the token itself) outlive any session: only the token
    // reads them, so a stolen session cookie cannot turn into permanent secrets.
    let sessions = (path != "/_trellis/credentials").then_some(&state.sessions);
    if state.config.require_signature
        && ours
        && !access::bearer_allowed(req.headers(), &state.config.api_token, sessions)
    {
        return access::bearer_refused();
    }
    next.run(req).await
}

/// Refuses what a web page could send: a foreign `Origin`, `Sec-Fetch-Site: cross-site`, or a
/// `Host` that is not the API's own (DNS rebinding).
fn forged(state: &ControlState, headers: &HeaderMap) -> Option<Response> {
    let allowed = &state.config.allowed_hosts;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let mut why = None;
    if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        why = Some(format!("Host {host:?} is not this API's address"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin.strip_prefix("http://").is_some_and(|o| {
            if allowed.is_empty() {
                o.eq_ignore_ascii_case(host)
            } else {
                allowed.iter().any(|a| a.eq_ignore_ascii_case(o))
            }
        });
        if !own {
            why = Some(format!("cross-origin requests are refused (Origin {origin:?})"));
        }
    }
    if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")) {
        why = Some("cross-site requests are refused".to_owned());
    }
    let message = why?;
    tracing::debug!(%message, "refused a request a web page could have forged");
    Some(rest_json_error(StatusCode::FORBIDDEN, "AccessDeniedException", &message))
}

async fn aws(State(state): State<ControlState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let scope = credential_scope(&headers);
    let mut ctx = Ctx {
        region: scope.as_ref().map_or_else(|| state.config.default_region.clone(), |s| s.region.clone()),
        account: state.config.account.clone(),
        request_id: crate::request_id(),
        access_key_id: scope.as_ref().map(|s| s.access_key_id.clone()).filter(|k| !k.is_empty()),
        session_token: headers.get("x-amz-security-token").and_then(|v| v.to_str().ok()).map(str::to_owned),
    };
    let form = is_form(&headers).then(|| form_urlencoded::parse(&body).into_owned().collect::<Vec<_>>());
    let service = match scope.as_ref().map(|s| s.service.as_str()) {
        Some("vpc-lattice") => Some(Service::Lattice),
        Some("acm") => Some(Service::Acm),
        Some("ec2") => Some(Service::Ec2),
        Some("ecs") => Some(Service::Ecs),
        Some("iam") => Some(Service::Iam),
        Some("logs") => Some(Service::Logs),
        Some("sts") => Some(Service::Sts),
        Some(other) => return unknown(&ctx, &format!("the service {other:?} is not served here")),
        None => detect_unsigned(&headers, form.as_deref()),
    };
    if state.config.require_signature
        && let Some(service) = service
        && !state.sessions.carried_by(&headers)
    {
        let resolver = Resolver::new(state.store.clone(), state.config.organization_id.clone());
        let now = crate::now().0 / 1000;
        match access::verify(&resolver, &method, &uri, &headers, &body, now).await {
            Ok(access_key_id) => ctx.access_key_id = Some(access_key_id),
            Err(refusal) => return refusal.response(service.protocol(), service.server_error(), &ctx.request_id),
        }
    }
    let writes = match service {
        Some(Service::Lattice) => method != Method::GET && !uri.path().ends_with("/listtargets"),
        Some(Service::Acm) => crate::acm::is_write(target(&headers)),
        Some(Service::Ec2) => form.as_deref().is_some_and(crate::ec2::is_write),
        Some(Service::Ecs) => crate::ecs::is_write(target(&headers)),
        Some(Service::Iam) => form.as_deref().is_some_and(crate::iam::is_write),
        // The subset served only reads.
        Some(Service::Logs) => false,
        Some(Service::Sts) => form.as_deref().is_some_and(crate::sts::is_write),
        None => false,
    };
    let _turn = match writes {
        true => Some(state.write_turn().await),
        false => None,
    };
    match service {
        Some(Service::Lattice) => crate::lattice::handle(&state, &ctx, &method, &uri, &body).await,
        Some(Service::Acm) => crate::acm::handle(&state, &ctx, target(&headers), &body).await,
        Some(Service::Ec2) => crate::ec2::handle(&state, &ctx, form.unwrap_or_default()).await,
        Some(Service::Ecs) => crate::ecs::handle(&state, &ctx, target(&headers), &body).await,
        Some(Service::Iam) => crate::iam::handle(&state, &ctx, form.unwrap_or_default()).await,
        Some(Service::Logs) => crate::logs::handle(&state, &ctx, target(&headers), &body).await,
        Some(Service::Sts) => crate::sts::handle(&state, &ctx, form.unwrap_or_default()).await,
        None => unknown(&ctx, "no AWS service recognised: no SigV4 scope, X-Amz-Target or form Version"),
    }
}

// === impl Service ===

impl Service {
    /// The protocol its answers are in.
    fn protocol(self) -> Protocol {
        match self {
            Self::Lattice => Protocol::RestJson,
            Self::Acm | Self::Ecs | Self::Logs => Protocol::Json11,
            Self::Ec2 => Protocol::Ec2,
            Self::Iam => Protocol::Query(crate::iam::xml::IAM),
            Self::Sts => Protocol::Query(crate::iam::xml::STS),
        }
    }

    /// Its error code for a failure of its own (retryable), as its handlers answer a store failure.
    fn server_error(self) -> &'static str {
        match self {
            Self::Lattice => "InternalServerException",
            Self::Acm => "InternalFailure",
            Self::Ec2 => "InternalError",
            Self::Ecs => "ServerException",
            Self::Iam | Self::Sts => "ServiceFailure",
            Self::Logs => "ServiceUnavailableException",
        }
    }
}

fn detect_unsigned(headers: &HeaderMap, form: Option<&[(String, String)]>) -> Option<Service> {
    if headers.contains_key("x-amz-target") {
        let target = target(headers);
        return if target.starts_with(crate::ecs::TARGET_PREFIX) {
            Some(Service::Ecs)
        } else if target.starts_with(crate::acm::TARGET_PREFIX) {
            Some(Service::Acm)
        } else if target.starts_with(crate::logs::TARGET_PREFIX) {
            Some(Service::Logs)
        } else {
            None
        };
    }
    if let Some(form) = form {
        let version = form.iter().find(|(k, _)| k == "Version").map(|(_, v)| v.as_str());
        return match version {
            Some("2016-11-15") => Some(Service::Ec2),
            Some("2010-05-08") => Some(Service::Iam),
            Some("2011-06-15") => Some(Service::Sts),
            _ => None,
        };
    }
    Some(Service::Lattice)
}

/// The `X-Amz-Target` header (JSON 1.1 services), or "".
fn target(headers: &HeaderMap) -> &str {
    headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The `Credential=AKID/date/region/service/aws4_request` of a SigV4 `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Scope {
    access_key_id: String,
    region: String,
    service: String,
}

/// The scope of `Authorization: AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, …`.
fn credential_scope(headers: &HeaderMap) -> Option<Scope> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let cred = auth.split([' ', ',']).find_map(|part| part.trim().strip_prefix("Credential="))?;
    let mut parts = cred.split('/');
    let (key, _date, region, service) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(Scope { access_key_id: key.to_owned(), region: region.to_owned(), service: service.to_owned() })
}

fn unknown(ctx: &Ctx, message: &str) -> Response {
    let mut resp = rest_json_error(StatusCode::BAD_REQUEST, "UnknownOperationException", message);
    if let Ok(id) = header::HeaderValue::from_str(&ctx.request_id) {
        resp.headers_mut().insert("x-amzn-requestid", id);
    }
    resp
}

/// An error with no members but its message, as a REST-JSON service (and the endpoint before it
/// knows the service) answers it: `{"message"}` with the code in `x-amzn-errortype`.
pub(crate) fn rest_json_error(status: StatusCode, code: &'static str, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    h.insert("x-amzn-errortype", header::HeaderValue::from_static(code));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_parsed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKID/20261125/eu-west-1/vpc-lattice/aws4_request, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        let scope = Scope { access_key_id: "AKID".into(), region: "eu-west-1".into(), service: "vpc-lattice".into() };
        assert_eq!(credential_scope(&h), Some(scope));
    }
}
