//! The access log record of an HTTP/1.1 request: what is known when it has been routed
//! ([`begin`], read from the head before it is consumed), and the caller once authenticated.
//! `Session::finish` fills in the rest when the exchange ends.

use trellis_model::Timestamp;
use trellis_model::lattice::ListenerProtocol;
use trellis_model::snapshot::ListenerView;

use super::Conn;
use crate::access_log::{Entry, LogRoute};
use crate::h1::RequestHead;
use crate::table::VpcRoute;

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
    let dash = || "-".to_owned();
    let (cipher, version) = conn.tls_details.map_or(("-", "-"), |d| (d.cipher, d.version));
    Entry {
        start_time: Timestamp(now_ms()).iso8601(),
        service_network_arn: route.network_arn.to_string(),
        service_arn: route.service_arn.to_string(),
        source_vpc_arn: vpc.vpc_arn.to_string(),
        source_vpc_id: conn.vpc.to_string(),
        destination_vpc_id: dash(),
        source_ip_port: std::net::SocketAddr::new(conn.peer, conn.peer_port).to_string(),
        target_ip_port: dash(),
        target_group_arn: dash(),
        listener_id: listener.map_or_else(dash, |l| l.id.clone()),
        listener_type: listener.map_or_else(dash, |l| protocol_name(l.protocol).to_owned()),
        request_method: facts.method,
        request_path: facts.path,
        protocol: facts.protocol,
        host_header: facts.host.unwrap_or_else(dash),
        server_name_indication: conn.sni.as_deref().map_or_else(dash, str::to_owned),
        user_agent: facts.user_agent.unwrap_or_else(dash),
        ssl_cipher: cipher.to_owned(),
        tls_version: version.to_owned(),
        auth_denied_reason: dash(),
        failure_reason: dash(),
        resolved_user: dash(),
        caller_principal: dash(),
        caller_principal_org_id: dash(),
        caller_x509_issuer_ou: "-",
        caller_x509_subject_cn: "-",
        caller_x509_san_name_cn: "-",
        caller_x509_san_dns: "-",
        caller_x509_san_uri: "-",
        request_id: String::from_utf8_lossy(request_id).into_owned(),
        traceparent: facts.traceparent.unwrap_or_else(dash),
        ..Entry::default()
    }
}

/// Fills in the caller from `x-amzn-lattice-identity` (`Principal=…;PrincipalOrgID=…`), or
/// `Anonymous` for a request on a guarded service that was not signed.
pub(crate) fn caller(entry: &mut Entry, identity: Option<&str>) {
    let Some(identity) = identity else { return };
    for part in identity.split(';') {
        if let Some(arn) = part.strip_prefix("Principal=") {
            entry.caller_principal = arn.to_owned();
            entry.resolved_user = arn.to_owned();
        } else if let Some(org) = part.strip_prefix("PrincipalOrgID=") {
            entry.caller_principal_org_id = org.to_owned();
        }
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
