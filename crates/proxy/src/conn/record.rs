//! The access log record of an HTTP/1.1 request: what is known when it has been routed
//! ([`begin`], read from the head before it is consumed), and the caller once authenticated.
//! `Session::finish` fills in the rest when the exchange ends.

use tokio::time::Instant;
use trellis_model::iam::Identity;
use trellis_model::lattice::ListenerProtocol;
use trellis_model::snapshot::ListenerView;

use super::Conn;
use crate::access_log::{Entry, LogRoute};
use crate::h1::RequestHead;
use crate::table::{GroupObs, VpcRoute};

/// What a record takes from the request itself.
pub(crate) struct RequestFacts {
    pub(crate) method: String,
    /// The request target as sent.
    pub(crate) path: String,
    pub(crate) protocol: &'static str,
    pub(crate) host: Option<String>,
    pub(crate) user_agent: Option<String>,
    /// The client's valid `traceparent`.
    pub(crate) traceparent: Option<String>,
}

/// The facts of the HTTP/1.1 request whose head is `head` (positions into `buf`).
pub(super) fn h1_facts(buf: &[u8], head: &RequestHead) -> RequestFacts {
    let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&buf[r]).into_owned();
    let field = |name: &[u8]| {
        head.fields.iter().find(|f| buf[f.name.clone()].eq_ignore_ascii_case(name)).map(|f| text(f.value.clone()))
    };
    RequestFacts {
        method: text(head.method.clone()),
        path: text(head.target.clone()),
        protocol: if head.minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" },
        host: field(b"host"),
        user_agent: field(b"user-agent"),
        traceparent: crate::headers::find_traceparent(buf, &head.fields)
            .map(|t| String::from_utf8_lossy(t).into_owned()),
    }
}

/// The record of a request routed through `vpc` on `listener`, before its answer.
pub(crate) fn begin(
    conn: &Conn,
    vpc: &VpcRoute,
    route: &LogRoute,
    listener: Option<&ListenerView>,
    facts: RequestFacts,
    request_id: &[u8; 36],
) -> Entry {
    let (cipher, version) = conn.tls_details.map_or(("-", "-"), |d| (d.cipher, d.version));
    Entry {
        start_time: now_ms(),
        service_network_arn: Some(route.network_arn.clone()),
        service_arn: Some(route.service_arn.clone()),
        source_vpc_arn: Some(vpc.vpc_arn.clone()),
        source_vpc_id: Some(conn.vpc.clone()),
        source_ip_port: Some(std::net::SocketAddr::new(conn.peer, conn.peer_port)),
        listener_id: listener.map(|l| l.id.clone()),
        listener_type: listener.map_or("-", |l| protocol_name(l.protocol)),
        request_method: Some(facts.method),
        request_path: Some(facts.path),
        protocol: facts.protocol,
        host_header: facts.host,
        server_name_indication: conn.sni.clone(),
        user_agent: facts.user_agent,
        ssl_cipher: cipher,
        tls_version: version,
        auth_denied_reason: "-",
        failure_reason: "-",
        caller_x509_issuer_ou: "-",
        caller_x509_subject_cn: "-",
        caller_x509_san_name_cn: "-",
        caller_x509_san_dns: "-",
        caller_x509_san_uri: "-",
        request_id: crate::access_log::RequestId(*request_id),
        traceparent: facts.traceparent,
        ..Entry::default()
    }
}

/// Fills in the caller a signature authenticated.
pub(crate) fn caller(entry: &mut Entry, identity: Option<&Identity>) {
    let Some(identity) = identity else { return };
    let arn = identity.principal.arn();
    entry.caller_principal = Some(arn.to_owned());
    entry.resolved_user = Some(arn.to_owned());
    entry.caller_principal_org_id = Some(identity.organization_id.clone());
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
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    e.response_code = o.status;
    (e.failure_reason, e.auth_denied_reason) = (o.failure, o.denied);
    (e.bytes_received, e.bytes_sent) = o.bytes;
    e.duration = ms(o.ended.saturating_duration_since(o.started));
    if let Some(group) = o.group {
        e.target_group_arn = Some(group.arn.clone());
        e.destination_vpc_id = Some(group.vpc_id.clone());
    }
    e.target_ip_port = o.target;
    if let Some(at) = o.sent {
        e.request_to_target_duration = ms(at.saturating_duration_since(o.started));
        e.response_from_target_duration = ms(o.ended.saturating_duration_since(at));
    }
}

/// A listener protocol as the API spells it.
fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "HTTP",
        ListenerProtocol::Https => "HTTPS",
        ListenerProtocol::TlsPassthrough => "TLS_PASSTHROUGH",
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
