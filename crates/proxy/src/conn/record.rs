//! The access log record of an HTTP/1.1 request: what is known when it has been routed
//! ([`begin`], read from the head before it is consumed), and the caller once authenticated.
//! `Session::finish` fills in the rest when the exchange ends.

use std::sync::Arc;

use tokio::time::Instant;
use trellis_model::iam::Identity;
use trellis_model::lattice::ListenerProtocol;
use trellis_model::snapshot::ListenerView;

use super::Conn;
use crate::access_log::{Entry, ListenerLog, LogRoute, Part, RequestText};
use crate::h1::RequestHead;
use crate::table::{GroupObs, VpcRoute};

/// The largest buffer of request text a connection keeps for its next record.
pub(super) const KEPT_TEXT: usize = 4096;

/// The facts of the HTTP/1.1 request whose head is `head` (positions into `buf`): its
/// protocol, and its method, target, Host, User-Agent and valid `traceparent` copied into one
/// buffer (`text`, the last record's, emptied), found in one pass over the fields.
pub(super) fn h1_facts(buf: &[u8], head: &RequestHead, text: Vec<u8>) -> (&'static str, RequestText) {
    let (mut host, mut user_agent, mut traceparent, mut traces) = (None, None, None, 0);
    for field in &head.fields {
        let name = &buf[field.name.clone()];
        let slot = match name.len() {
            4 if crate::swar::eq_lowercase(name, b"host") => &mut host,
            10 if crate::swar::eq_lowercase(name, b"user-agent") => &mut user_agent,
            11 if crate::swar::eq_lowercase(name, b"traceparent") => {
                traces += 1;
                &mut traceparent
            }
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(&buf[field.value.clone()]);
        }
    }
    let traceparent = traceparent.filter(|t| traces == 1 && crate::headers::valid_traceparent(t));
    let (method, path) = (&buf[head.method.clone()], &buf[head.target.clone()]);
    let len = [host, user_agent, traceparent].iter().flatten().map(|v| v.len()).sum::<usize>();
    // Room for the `traceparent` the proxy may start for the request, too.
    let mut text = RequestText::reusing(text, method.len() + path.len() + len + crate::headers::TRACEPARENT_LEN);
    text.set(Part::Method, method);
    text.set(Part::Path, path);
    for (part, value) in [(Part::Host, host), (Part::UserAgent, user_agent), (Part::Traceparent, traceparent)] {
        if let Some(value) = value {
            text.set(part, value);
        }
    }
    (if head.minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" }, text)
}

/// The record of a request routed through `vpc` on `listener`, before its answer.
pub(crate) fn begin(
    conn: &Conn,
    vpc: &VpcRoute,
    route: &LogRoute,
    listener: Option<&ListenerView>,
    (protocol, request): (&'static str, RequestText),
    request_id: &[u8; 36],
) -> Entry {
    let (cipher, version) = conn.tls_details.map_or(("-", "-"), |d| (d.cipher, d.version));
    Entry {
        start_time: now_ms(),
        source: Some(vpc.log_source.clone()),
        source_ip_port: Some(std::net::SocketAddr::new(conn.peer, conn.peer_port)),
        listener: listener.map_or(ListenerLog::None, |l| route.listener(&l.id, protocol_name(l.protocol))),
        request,
        protocol,
        server_name_indication: conn.sni.clone(),
        ssl_cipher: cipher,
        tls_version: version,
        auth_denied_reason: "-",
        failure_reason: "-",
        request_id: crate::access_log::RequestId(*request_id),
        ..Entry::default()
    }
}

/// Fills in the caller a signature authenticated.
pub(crate) fn caller(entry: &mut Entry, identity: Option<&Arc<Identity>>) {
    entry.caller = identity.cloned();
}

/// What the exchange adds to a record when it ends.
pub(crate) struct Outcome<'a> {
    pub(crate) status: u16,
    pub(crate) failure: &'static str,
    pub(crate) denied: &'static str,
    pub(crate) group: Option<&'a GroupObs>,
    pub(crate) target: Option<std::net::SocketAddr>,
    pub(crate) bytes: (u64, u64),
    /// When the request started, went to the target (if it did), and ended.
    pub(crate) started: Instant,
    pub(crate) sent: Option<Instant>,
    pub(crate) ended: Instant,
}

/// Completes a record.
pub(crate) fn finish(e: &mut Entry, o: Outcome<'_>) {
    e.response_code = o.status;
    (e.failure_reason, e.auth_denied_reason) = (o.failure, o.denied);
    (e.bytes_received, e.bytes_sent) = o.bytes;
    e.duration = millis(o.ended.saturating_duration_since(o.started));
    e.group = o.group.map(|g| g.index);
    e.target_ip_port = o.target;
    if let Some(at) = o.sent {
        e.request_to_target_duration = millis(at.saturating_duration_since(o.started));
        e.response_from_target_duration = millis(o.ended.saturating_duration_since(at));
    }
}

/// A duration in whole milliseconds (saturating), as records have them. Seconds and
/// milliseconds apart: `as_millis` divides a 128-bit number.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    d.as_secs().saturating_mul(1000).saturating_add(d.subsec_millis().into())
}

/// A listener protocol as the API spells it.
pub(crate) fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "HTTP",
        ListenerProtocol::Https => "HTTPS",
        ListenerProtocol::TlsPassthrough => "TLS_PASSTHROUGH",
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
}
