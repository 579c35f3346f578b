//! The life of one request, as named phases read top to bottom in [`proxy`]:
//!
//! ```text
//! framing → host → route (service, listener) → rule → select (group, target) → forward
//! ```
//!
//! Each phase either moves on or ends the request with a [`ProxyError`], which [`handle`] turns
//! into the response (the one place errors are logged). Every response carries the request id.
//! Nothing here locks or rebuilds anything: the route table was built when the snapshot or the
//! health table changed.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use trellis_model::lattice::ListenerProtocol;
use trellis_model::route::HeaderLookup;
use trellis_model::snapshot::{Action, ListenerView};

use crate::balance;
use crate::conn::Conn;
use crate::error::{ErrorKind, Origin, ProxyError};
use crate::forward::{self, ClientBody, InFlightGuard, ProxyBody};
use crate::headers::{self, Forwarded, X_AMZN_REQUESTID};
use crate::table::{ReachRoute, Routes};

/// Longest host name accepted (a DNS name is at most 253 characters; room for a trailing dot).
const MAX_HOST: usize = 254;

/// How many more targets a request that could not be connected is offered to.
const CONNECT_RETRIES: usize = 2;

/// A request's headers, as rules read them.
struct Headers<'m>(&'m HeaderMap);

/// Serves one request: the response of the target, or the one the proxy makes.
pub(crate) async fn handle(
    conn: Arc<Conn>,
    routes: Arc<Routes>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let request_id = headers::request_id();
    let mut response = match proxy(&conn, &routes, req, &request_id).await {
        Ok(response) => response,
        Err(e) => {
            match e.origin {
                Origin::Client | Origin::Upstream => tracing::debug!(error = %e, "request refused"),
                Origin::Internal => tracing::warn!(error = %e, "request failed"),
            }
            e.to_response(request_id.to_str().unwrap_or_default())
        }
    };
    response.headers_mut().insert(X_AMZN_REQUESTID, request_id);
    Ok(response)
}

/// The phases.
async fn proxy(
    conn: &Arc<Conn>,
    routes: &Routes,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> Result<Response<ProxyBody>, ProxyError> {
    // Framing: hyper parsed the head; the guard may still have found it ambiguous.
    if conn.is_poisoned() {
        return Err(ProxyError::new(ErrorKind::BadFraming));
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::new(ErrorKind::UnsupportedMethod));
    }
    // Host.
    let mut host_buf = [0u8; MAX_HOST];
    let host = parse_host(&req, &mut host_buf)?;
    // Route: which service, through which VPC and network, on which listener.
    let (vpc, reach) = routes.find(&conn.vpc, host).map_err(ProxyError::new)?;
    let (listener, port) = find_listener(conn, reach)?;
    conn.set_idle_timeout(reach.service.idle_timeout);
    // Rule.
    let action = trellis_model::route::find(listener, req.method().as_str(), req.uri().path(), &Headers(req.headers()));
    let groups = match action {
        Action::Fixed(status) => return Ok(fixed_response(*status)),
        Action::Forward(groups) => groups,
    };
    // Select: a target group by weight, a target by round-robin.
    let chosen = balance::pick_group(groups).ok_or(ProxyError::new(ErrorKind::NoAvailableTarget))?;
    let group = routes.group(&chosen.target_group_id).ok_or(ProxyError::new(ErrorKind::NoTargets))?;
    let mut target = group.pick().map_err(ProxyError::new)?;
    // Forward.
    let target_header = reach.target_header(&chosen.target_group_id).ok_or(ProxyError::new(ErrorKind::Internal))?;
    let forwarded =
        Forwarded { client_ip: &conn.client_ip, port, network: &vpc.network, target: target_header, request_id };
    let mut upstream = upstream_request(conn, req, forwarded)?;
    // A target that cannot be connected to (its process just died, say) never saw the request:
    // it goes to the next target of the group, a few times at most.
    let mut attempts = 0;
    let (mut response, lease, in_flight) = loop {
        let in_flight = InFlightGuard::new(&target.in_flight);
        match forward::send(&target.pool, upstream, conn.response_timeout).await {
            Ok((response, lease)) => break (response, lease, in_flight),
            Err((e, Some(unsent))) if e.kind == ErrorKind::ConnectFailed && attempts < CONNECT_RETRIES => {
                attempts += 1;
                upstream = unsent;
                target = group.pick().map_err(ProxyError::new)?;
            }
            Err((e, _)) => return Err(e),
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The proxy never asks a target to upgrade (it strips `Upgrade`).
        return Err(ProxyError::new(ErrorKind::UpstreamBroken));
    }
    headers::prepare_response(response.headers_mut());
    tracing::trace!(to = ?target.key, status = %response.status(), "forwarded");
    Ok(response.map(|body| ProxyBody::upstream(body, lease, in_flight)))
}

/// The request's host name: from an absolute URI, else the one `Host` header; port and a
/// trailing dot removed, lowercased into `buf`.
fn parse_host<'b>(req: &Request<Incoming>, buf: &'b mut [u8; MAX_HOST]) -> Result<&'b str, ProxyError> {
    let bad = || ProxyError::new(ErrorKind::BadHost);
    let raw = match req.uri().authority() {
        Some(authority) => authority.as_str().as_bytes(),
        None => {
            let mut values = req.headers().get_all(HOST).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => v.as_bytes(),
                _ => return Err(bad()),
            }
        }
    };
    host_name(raw, buf).ok_or_else(bad)
}

/// `name[:port]` or `[v6][:port]` → the name, lowercase, without a trailing dot.
fn host_name<'b>(raw: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let (name, rest) = if raw.first() == Some(&b'[') {
        let end = raw.iter().position(|&b| b == b']')? + 1;
        raw.split_at(end)
    } else {
        raw.split_at(raw.iter().position(|&b| b == b':').unwrap_or(raw.len()))
    };
    if let Some(port) = rest.strip_prefix(b":") {
        if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
            return None;
        }
    } else if !rest.is_empty() {
        return None;
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    let literal = name.first() == Some(&b'[');
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') || literal;
    if name.is_empty() || name.len() > buf.len() || !name.iter().all(valid) {
        return None;
    }
    let out = &mut buf[..name.len()];
    out.copy_from_slice(name);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// The service's HTTP listener for the port the request arrived on (the real port may stand for
/// a Lattice port below 1024), and that port's `x-forwarded-port` value.
fn find_listener<'a>(conn: &'a Conn, reach: &'a ReachRoute) -> Result<(&'a ListenerView, &'a HeaderValue), ProxyError> {
    conn.lattice_ports
        .iter()
        .find_map(|(port, header)| {
            let listener = reach.service.listeners.get(port)?;
            (listener.protocol == ListenerProtocol::Http).then_some((listener, header))
        })
        .ok_or(ProxyError::new(ErrorKind::NoListener))
}

/// A `fixedResponse` action's answer: the status, and its reason as a short body.
fn fixed_response(status: u16) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Bytes::from_static(status.canonical_reason().unwrap_or("").as_bytes());
    let mut response = Response::new(ProxyBody::local(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The request as the target gets it: origin-form, HTTP/1.1, headers rewritten, the body
/// streamed through.
fn upstream_request(
    conn: &Arc<Conn>,
    req: Request<Incoming>,
    forwarded: Forwarded<'_>,
) -> Result<Request<ClientBody>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    if let Some(authority) = parts.uri.authority() {
        // Absolute-form: the URI's authority is the host (RFC 9112 §3.2.2).
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::new(ErrorKind::BadHost))?;
        parts.headers.insert(HOST, host);
    }
    let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    headers::prepare_request(&mut parts.headers, forwarded);
    Ok(Request::from_parts(parts, ClientBody::new(body, conn.clone())))
}

// === impl Headers ===

impl HeaderLookup for Headers<'_> {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0.get_all(name).into_iter().map(HeaderValue::as_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        let table: &[(&str, Option<&str>)] = &[
            ("svc.example", Some("svc.example")),
            ("SVC.Example:8080", Some("svc.example")),
            ("svc.example.", Some("svc.example")),
            ("svc.example.:80", Some("svc.example")),
            ("[::1]:80", Some("[::1]")),
            ("", None),
            (":80", None),
            ("svc.example:", None),
            ("svc.example:80x", None),
            ("svc.example:123456", None),
            ("user@svc.example", None),
            ("svc example", None),
            ("svc.example/x", None),
            ("[::1", None),
        ];
        for (raw, want) in table {
            let mut buf = [0u8; MAX_HOST];
            assert_eq!(host_name(raw.as_bytes(), &mut buf), *want, "{raw:?}");
        }
        let long = "a".repeat(MAX_HOST + 1);
        assert_eq!(host_name(long.as_bytes(), &mut [0u8; MAX_HOST]), None);
    }
}
