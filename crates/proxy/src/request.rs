//! Where a request goes, as named phases read top to bottom in [`route`]:
//!
//! ```text
//! host → route (service, listener) → rule → select (group)
//! ```
//!
//! Each phase either moves on or ends the request with a [`ProxyError`]. The target inside the
//! group is picked when the request is forwarded (`forward::exchange`: a target that cannot be
//! connected to is replaced by the next one). Nothing here locks or rebuilds anything: the route
//! table was built when the snapshot or the health table changed.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use trellis_model::lattice::ListenerProtocol;
use trellis_model::route::HeaderLookup;
use trellis_model::route::path::normalize;
use trellis_model::snapshot::{Action, ListenerView, WeightedTarget};

use crate::auth::Facts;
use crate::balance::{self, Group, Version};
use crate::conn::Conn;
use crate::error::{ErrorKind, ProxyError};
use crate::h1::{Field, Name, RequestHead};
use crate::table::{Found, GroupObs, ReachRoute, Routes, VpcRoute};

/// Longest host name accepted (a DNS name is at most 253 characters; room for a trailing dot).
pub(crate) const MAX_HOST: usize = 254;

/// What to do with a request.
pub(crate) enum Decision<'r> {
    /// A `fixedResponse` action: answer with this status.
    Fixed(u16),
    /// Forward to a target of a group.
    Forward(Forward<'r>),
    /// An auth policy refused it: a 403 with this body (spec §3.11).
    Denied {
        /// The body.
        message: String,
        /// Which layer refused (access logs' `authDeniedReason`): `Network`, `Service`, or
        /// `Unauthenticated` for a signature that could not be verified.
        layer: &'static str,
    },
}

/// What the route phase learned on the way, for metrics and access logs (also when it ends
/// the request with an error).
#[derive(Default)]
pub(crate) struct Seen<'r> {
    /// The VPC's entry and the service as it reaches it, once found.
    pub(crate) reach: Option<(&'r VpcRoute, &'r ReachRoute)>,
    /// The listener.
    pub(crate) listener: Option<&'r ListenerView>,
}

/// A request on its way to a target group.
pub(crate) struct Forward<'r> {
    /// The group chosen by weight.
    pub(crate) group: &'r Group,
    /// `x-amzn-lattice-network`.
    pub(crate) network: &'r crate::headers::AddedField,
    /// `x-amzn-lattice-target`.
    pub(crate) target_header: &'r crate::headers::AddedField,
    /// `x-forwarded-port`.
    pub(crate) port: &'r [u8],
    /// The service's idle timeout.
    pub(crate) idle_timeout: Duration,
    /// The request target in origin form (positions in the head's buffer).
    pub(crate) path: Range<usize>,
    /// The request target in origin form with the path normalized, when that changed it
    /// (`trellis_model::route::path`); the target is sent this instead of `path`.
    pub(crate) normalized: Option<Box<[u8]>>,
    /// The authority of an absolute-form request target, which replaces `Host`.
    pub(crate) authority: Option<Range<usize>>,
    /// Who signed the request, when a signature authenticated it (`x-amzn-lattice-identity`).
    pub(crate) identity: Option<std::sync::Arc<trellis_model::iam::Identity>>,
    /// The group's counters and access log facts.
    pub(crate) obs: &'r GroupObs,
}

/// A request's headers, as rules read them.
struct Headers<'m> {
    buf: &'m [u8],
    fields: &'m [Field],
}

/// The request target, split.
struct Target {
    /// Origin form (path and query), as sent on.
    origin: Range<usize>,
    /// The path alone (what rules match).
    path: Range<usize>,
    authority: Option<Range<usize>>,
}

/// The phases: where the request whose head is `head` (positions into `buf`) goes.
pub(crate) fn route<'r>(
    conn: &'r Conn,
    routes: &'r Routes,
    buf: &[u8],
    head: &RequestHead,
    seen: &mut Seen<'r>,
    last_host: &mut LastHost,
) -> Result<Decision<'r>, ProxyError> {
    let method = &buf[head.method.clone()];
    if method == b"CONNECT" {
        return Err(ProxyError::new(ErrorKind::UnsupportedMethod));
    }
    let target = request_target(buf, head, method)?;
    // Host.
    let host = host_field(buf, head, target.authority.clone())?;
    // Route: which service, through which VPC and network, on which listener.
    let Located { vpc, reach, listener, port } = locate(conn, routes, last_host, host)?;
    *seen = Seen { reach: Some((vpc, reach)), listener: Some(listener) };
    // Rule.
    let method = std::str::from_utf8(method).map_err(|_| ProxyError::new(ErrorKind::BadFraming))?;
    let path = match std::str::from_utf8(&buf[target.path.clone()]) {
        Ok("") => Cow::Borrowed("/"),
        Ok("*") => Cow::Borrowed("*"),
        Ok(path) => normalize(path).map_err(|_| ProxyError::new(ErrorKind::BadPath))?,
        Err(_) => return Err(ProxyError::new(ErrorKind::BadFraming)),
    };
    // Auth policies, before the rules (spec §3.1).
    let mut identity = None;
    if let Some(auth) = &reach.auth {
        let query = std::str::from_utf8(&buf[target.path.end..target.origin.end]).unwrap_or("");
        let header = |name: &str, each: &mut dyn FnMut(&[u8])| {
            for f in head.fields.iter().filter(|f| buf[f.name.clone()].eq_ignore_ascii_case(name.as_bytes())) {
                each(&buf[f.value.clone()]);
            }
        };
        let fields = head.fields.iter().map(|f| (&buf[f.name.clone()], &buf[f.value.clone()]));
        let facts = Facts {
            method,
            path: &path,
            query: query.strip_prefix('?').unwrap_or(query),
            header: &header,
            signature: crate::auth::SignatureHeaders::find(fields),
            port: listener.port,
            source_vpc: &conn.vpc,
            source_vpc_account: &vpc.account,
            client_ip: conn.peer,
        };
        match auth.check(&facts, &routes.identities, crate::auth::now()) {
            Ok(caller) => identity = caller,
            Err(denied) => {
                let layer = denied_layer(&denied);
                return Ok(Decision::Denied { message: auth.message(&denied, &path), layer });
            }
        }
    }
    let action = trellis_model::route::find(listener, method, &path, &Headers { buf, fields: &head.fields });
    let groups = match action {
        Action::Fixed(status) => return Ok(Decision::Fixed(*status)),
        Action::Forward(groups) => groups,
    };
    // Select: a target group by weight.
    let (group, target_header, obs) = select(routes, reach, groups)?;
    // HTTP2 and GRPC target groups take HTTP/2 requests only (spec §3.5).
    if group.version != Version::Http1 {
        return Err(ProxyError::new(ErrorKind::NeedsHttp2));
    }
    Ok(Decision::Forward(Forward {
        group,
        network: &vpc.network,
        target_header,
        port,
        idle_timeout: reach.service.idle_timeout,
        normalized: match path {
            Cow::Borrowed(_) => None,
            Cow::Owned(path) => Some([path.as_bytes(), &buf[target.path.end..target.origin.end]].concat().into()),
        },
        path: target.origin,
        authority: target.authority,
        identity,
        obs,
    }))
}

/// Access logs' `authDeniedReason` for a denial: the layer whose policy refused, or
/// `Unauthenticated` for a signature that could not be verified.
pub(crate) fn denied_layer(denied: &crate::auth::Denied) -> &'static str {
    match denied {
        crate::auth::Denied::Policy { layer: crate::auth::Layer::Network, .. } => "Network",
        crate::auth::Denied::Policy { layer: crate::auth::Layer::Service, .. } => "Service",
        crate::auth::Denied::Unauthenticated(_) => "Unauthenticated",
    }
}

/// Where a request for a host goes: the VPC's entry, the service as the VPC reaches it, the
/// listener of the port, and that port's `x-forwarded-port` value.
pub(crate) struct Located<'r> {
    pub(crate) vpc: &'r VpcRoute,
    pub(crate) reach: &'r ReachRoute,
    pub(crate) listener: &'r ListenerView,
    pub(crate) port: &'r [u8],
}

/// The route phase: the service the host `raw` (as the request gave it) names for the
/// connection's VPC, and its listener for the connection's port and protocol. `last_host` is
/// the connection's.
pub(crate) fn locate<'r>(
    conn: &'r Conn,
    routes: &'r Routes,
    last_host: &mut LastHost,
    raw: &[u8],
) -> Result<Located<'r>, ProxyError> {
    let (vpc, reach) = last_host.find(raw, &conn.vpc, routes)?;
    let (listener, port) = find_listener(conn, reach)?;
    Ok(Located { vpc, reach, listener, port })
}

/// The select phase: a target group of a forward action by weight, with its
/// `x-amzn-lattice-target` field and its counters.
pub(crate) fn select<'r>(
    routes: &'r Routes,
    reach: &'r ReachRoute,
    groups: &[WeightedTarget],
) -> Result<(&'r Group, &'r crate::headers::AddedField, &'r GroupObs), ProxyError> {
    let chosen = balance::pick_group(groups).ok_or(ProxyError::new(ErrorKind::NoAvailableTarget))?;
    let group = routes.group(&chosen.target_group_id).ok_or(ProxyError::new(ErrorKind::NoTargets))?;
    let target_header = reach.target_header(&chosen.target_group_id).ok_or(ProxyError::new(ErrorKind::Internal))?;
    let obs = reach.group_obs(&chosen.target_group_id).ok_or(ProxyError::new(ErrorKind::Internal))?;
    Ok((group, target_header, obs))
}

/// The request target: origin form (`/path?query`), absolute form (`http://host/path`, whose
/// authority is the host), or `*` for OPTIONS.
fn request_target(buf: &[u8], head: &RequestHead, method: &[u8]) -> Result<Target, ProxyError> {
    let bad = || ProxyError::new(ErrorKind::BadFraming);
    let raw = &buf[head.target.clone()];
    let at = head.target.start;
    let path_of = |origin: Range<usize>| {
        let end = buf[origin.clone()].iter().position(|&b| b == b'?').map_or(origin.end, |q| origin.start + q);
        origin.start..end
    };
    if raw.first() == Some(&b'/') {
        return Ok(Target { path: path_of(head.target.clone()), origin: head.target.clone(), authority: None });
    }
    if raw == b"*" && method == b"OPTIONS" {
        return Ok(Target { path: head.target.clone(), origin: head.target.clone(), authority: None });
    }
    let scheme = raw.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let (name, rest) = raw.split_at(scheme);
    if !(name.eq_ignore_ascii_case(b"http") || name.eq_ignore_ascii_case(b"https")) || !rest.starts_with(b"://") {
        return Err(bad());
    }
    let from = at + scheme + 3;
    let end =
        buf[from..head.target.end].iter().position(|&b| b == b'/' || b == b'?').map_or(head.target.end, |p| from + p);
    if end == from {
        return Err(bad());
    }
    let origin = end..head.target.end;
    Ok(Target { path: path_of(origin.clone()), origin, authority: Some(from..end) })
}

/// The request's host as it came: from an absolute URI, else the one `Host` header.
fn host_field<'b>(buf: &'b [u8], head: &RequestHead, authority: Option<Range<usize>>) -> Result<&'b [u8], ProxyError> {
    let bad = || ProxyError::new(ErrorKind::BadHost);
    let raw = match authority {
        Some(a) => &buf[a],
        None => {
            let mut values = head.fields.iter().filter(|f| f.kind == Name::Host);
            match (values.next(), values.next()) {
                (Some(f), None) => &buf[f.value.clone()],
                _ => return Err(bad()),
            }
        }
    };
    Ok(raw)
}

/// The host a connection's last request named, as it came and as checked, and where it led:
/// a connection's requests nearly always name one host, checking one reads each of its bytes,
/// and finding its route hashes it. One connection's (its VPC is always the same).
#[derive(Default)]
pub(crate) struct LastHost {
    raw: Vec<u8>,
    name: String,
    /// Where `name` led in the last table it was looked up in.
    found: Option<Found>,
}

impl LastHost {
    /// [`host_name`] of `raw`: the last one's when `raw` is the same as the last.
    pub(crate) fn name(&mut self, raw: &[u8]) -> Option<&str> {
        if self.name.is_empty() || self.raw != raw {
            let mut buf = [0u8; MAX_HOST];
            let name = host_name(raw, &mut buf)?;
            self.raw.clear();
            self.raw.extend_from_slice(raw);
            self.name.clear();
            self.name.push_str(name);
            self.found = None;
        }
        Some(&self.name)
    }

    /// VPC `vpc` (the connection's) and the service the host `raw` names for it in `routes`.
    fn find<'r>(
        &mut self,
        raw: &[u8],
        vpc: &str,
        routes: &'r Routes,
    ) -> Result<(&'r VpcRoute, &'r ReachRoute), ProxyError> {
        self.name(raw).ok_or(ProxyError::new(ErrorKind::BadHost))?;
        routes.find_again(vpc, &self.name, &mut self.found).map_err(ProxyError::new)
    }
}

/// `name[:port]` or `[v6][:port]` → the name, lowercase, without a trailing dot. A name is
/// checked in one pass (a table lookup a byte, no store), then copied and lowercased a vector
/// at a time.
pub(crate) fn host_name<'b>(raw: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    if raw.first() == Some(&b'[') {
        return literal_host(raw, buf);
    }
    // The name ends at the first byte no name has: only a port may follow it.
    let end = raw.iter().position(|&b| !HOST_BYTE[usize::from(b)]).unwrap_or(raw.len());
    let (name, rest) = raw.split_at(end);
    match rest.split_first() {
        None => {}
        Some((b':', port)) if is_port(port) => {}
        Some(_) => return None,
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// One to five digits.
fn is_port(port: &[u8]) -> bool {
    !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

/// Whether a host name may have each byte.
const HOST_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_') {
            table[b] = true;
        }
        b += 1;
    }
    table
};

/// `[v6][:port]` → `[v6]`, lowercase.
fn literal_host<'b>(raw: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let end = raw.iter().position(|&b| b == b']')? + 1;
    let (name, rest) = raw.split_at(end);
    match rest.strip_prefix(b":") {
        Some(port) if !is_port(port) => return None,
        None if !rest.is_empty() => return None,
        _ => {}
    }
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// The service's listener for the port the request arrived on (the real port may stand for a
/// Lattice port below 1024), and that port's `x-forwarded-port` value: an HTTPS listener when
/// the client spoke TLS, else an HTTP one.
fn find_listener<'a>(conn: &'a Conn, reach: &'a ReachRoute) -> Result<(&'a ListenerView, &'a [u8]), ProxyError> {
    let wanted = if conn.tls { ListenerProtocol::Https } else { ListenerProtocol::Http };
    conn.lattice_ports
        .iter()
        .find_map(|(port, header)| {
            let listener = reach.service.listeners.get(port)?;
            (listener.protocol == wanted).then_some((listener, &**header))
        })
        .ok_or(ProxyError::new(ErrorKind::NoListener))
}

// === impl Headers ===

impl HeaderLookup for Headers<'_> {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| self.buf[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| &self.buf[f.value.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_host_is_checked_again_only_when_it_changes() {
        let mut last = LastHost::default();
        assert_eq!(last.name(b"A.Example:80"), Some("a.example"));
        assert_eq!(last.name(b"A.Example:80"), Some("a.example"));
        assert_eq!(last.name(b"b.example"), Some("b.example"));
        assert_eq!(last.raw, b"b.example");
        // A bad one is refused, and does not replace the last good one.
        assert_eq!(last.name(b"b example"), None);
        assert_eq!((&last.raw[..], &last.name[..]), (&b"b.example"[..], "b.example"));
        assert_eq!(last.name(b"b.example"), Some("b.example"));
        assert_eq!(last.name(b"B.example."), Some("b.example"));
    }

    #[test]
    fn a_connection_naming_hosts_in_turn_reaches_each_ones_service() {
        use crate::listener::testing::{Fixture, service};
        use trellis_model::snapshot::Action;
        let mut f = Fixture::new("127.88.1.1".parse().unwrap());
        f.add_service(service("svc-a", "a.example", 18080, Action::Fixed(404)));
        f.add_service(service("svc-b", "b.example", 18080, Action::Fixed(404)));
        let (first, second) = (Routes::for_tests(&f.snapshot), Routes::for_tests(&f.snapshot));
        let mut last = LastHost::default();
        let mut service_of =
            |raw: &[u8], routes: &Routes| last.find(raw, "vpc-1", routes).map(|(_, r)| r.service.id.clone());
        for (raw, routes, want) in [
            (&b"a.example"[..], &first, "svc-a"),
            (b"A.example:18080", &first, "svc-a"),
            (b"b.example", &first, "svc-b"),
            (b"a.example", &first, "svc-a"),
            (b"a.example", &second, "svc-a"),
            (b"b.example", &second, "svc-b"),
            (b"b.example", &first, "svc-b"),
        ] {
            assert_eq!(service_of(raw, routes).ok().as_deref(), Some(want), "{}", String::from_utf8_lossy(raw));
        }
        assert_eq!(service_of(b"c.example", &first).err().map(|e| e.kind), Some(ErrorKind::UnknownHost));
        assert_eq!(service_of(b"a example", &first).err().map(|e| e.kind), Some(ErrorKind::BadHost));
        assert_eq!(service_of(b"a.example", &first).ok().as_deref(), Some("svc-a"));
    }

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
            ("[::1]x", None),
            (".", None),
            ("..", Some(".")),
            ("a_b-C.9", Some("a_b-c.9")),
            ("svc.example:80:80", None),
            ("svc.\u{e9}xample", None),
        ];
        for (raw, want) in table {
            let mut buf = [0u8; MAX_HOST];
            assert_eq!(host_name(raw.as_bytes(), &mut buf), *want, "{raw:?}");
        }
        // The longest name, with and without its trailing dot; one byte more is too long.
        let longest = "a".repeat(MAX_HOST);
        for raw in [longest.clone(), format!("{longest}."), format!("{longest}.:443")] {
            assert_eq!(host_name(raw.as_bytes(), &mut [0u8; MAX_HOST]), Some(longest.as_str()), "{raw}");
        }
        let long = "a".repeat(MAX_HOST + 1);
        assert_eq!(host_name(long.as_bytes(), &mut [0u8; MAX_HOST]), None);
        assert_eq!(host_name(format!("{long}.").as_bytes(), &mut [0u8; MAX_HOST]), None);
    }

    #[test]
    fn request_targets() {
        // (method, target) → (origin form, path, authority), or None when refused.
        type Split<'a> = Option<(&'a str, &'a str, Option<&'a str>)>;
        let table: &[(&str, &str, Split<'_>)] = &[
            ("GET", "/p?q=1", Some(("/p?q=1", "/p", None))),
            ("GET", "/", Some(("/", "/", None))),
            ("GET", "http://Svc.Example:80/x?y", Some(("/x?y", "/x", Some("Svc.Example:80")))),
            ("GET", "HTTPS://svc/", Some(("/", "/", Some("svc")))),
            ("GET", "http://svc", Some(("", "", Some("svc")))),
            ("GET", "http://svc?q", Some(("?q", "", Some("svc")))),
            ("OPTIONS", "*", Some(("*", "*", None))),
            ("GET", "*", None),
            ("GET", "ftp://svc/", None),
            ("GET", "http:/svc/", None),
            ("GET", "http:///x", None),
            ("GET", "svc", None),
        ];
        for (method, target, want) in table {
            let raw = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let head = crate::h1::parse_request(raw.as_bytes(), 100).unwrap().unwrap();
            let got = request_target(raw.as_bytes(), &head, method.as_bytes()).ok().map(|t| {
                let text = |r: Range<usize>| &raw[r];
                (text(t.origin), text(t.path), t.authority.map(text))
            });
            assert_eq!(got, *want, "{method} {target}");
        }
    }
}
