//! The headers the proxy adds and strips (spec §3.8). On the way to a target: hop-by-hop headers
//! go (`Connection` and the headers it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Transfer-Encoding` — hyper re-frames the body —, `Upgrade`, and `Expect`, which the proxy
//! answered itself), every incoming `x-amzn-lattice-*` goes (they cannot be spoofed), and the
//! proxy adds `x-forwarded-for` (the client's address appended to any it sent),
//! `x-forwarded-port` (the Lattice listener port), `x-forwarded-proto: http`,
//! `x-amzn-lattice-network`, `x-amzn-lattice-target` and `x-amzn-requestid`. `Host` is kept.
//!
//! The spec also mentions `x-forwarded-for-port` / `x-forwarded-for-proto` spellings from one
//! AWS page; what ELB and every proxy send is `x-forwarded-port` / `x-forwarded-proto`, so we
//! send those only.
//!
//! On the way back: hop-by-hop headers go; the request path adds `x-amzn-requestid`.

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// `x-forwarded-for`.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-port`.
pub(crate) const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `x-forwarded-proto`.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-amzn-lattice-network`.
pub(crate) const X_AMZN_LATTICE_NETWORK: HeaderName = HeaderName::from_static("x-amzn-lattice-network");
/// `x-amzn-lattice-target`.
pub(crate) const X_AMZN_LATTICE_TARGET: HeaderName = HeaderName::from_static("x-amzn-lattice-target");
/// `x-amzn-requestid`.
pub(crate) const X_AMZN_REQUESTID: HeaderName = HeaderName::from_static("x-amzn-requestid");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const LATTICE_PREFIX: &str = "x-amzn-lattice-";

/// What the proxy tells a target about a request.
pub(crate) struct Forwarded<'a> {
    /// The client's IP address.
    pub(crate) client_ip: &'a HeaderValue,
    /// The Lattice port the request arrived on.
    pub(crate) port: &'a HeaderValue,
    /// `SourceVpcArn=…`.
    pub(crate) network: &'a HeaderValue,
    /// `ServiceArn=…;ServiceNetworkArn=…;TargetGroupArn=…`.
    pub(crate) target: &'a HeaderValue,
    /// The request id.
    pub(crate) request_id: &'a HeaderValue,
}

/// A request id: a random UUID (version 4), as a header value.
pub(crate) fn request_id() -> HeaderValue {
    let (hi, lo) = (crate::balance::random_u64(), crate::balance::random_u64());
    let bits = (u128::from(hi) << 64 | u128::from(lo)) & !(0xf << 76 | 0x3 << 62) | (0x4 << 76 | 0x2 << 62);
    let mut buf = [0u8; 36];
    let mut n = 0;
    for (i, slot) in buf.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
            continue;
        }
        let nibble = (bits >> (124 - 4 * n)) & 0xf;
        *slot = b"0123456789abcdef"[nibble as usize];
        n += 1;
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `x-amzn-lattice-network` for a VPC.
pub(crate) fn lattice_network(vpc_arn: &str) -> Option<HeaderValue> {
    HeaderValue::try_from(format!("SourceVpcArn={vpc_arn}")).ok()
}

/// `x-amzn-lattice-target` for a request.
pub(crate) fn lattice_target(service_arn: &str, network_arn: &str, group_arn: &str) -> Option<HeaderValue> {
    let value = format!("ServiceArn={service_arn};ServiceNetworkArn={network_arn};TargetGroupArn={group_arn}");
    HeaderValue::try_from(value).ok()
}

/// Rewrites a client's request headers for a target.
pub(crate) fn prepare_request(headers: &mut HeaderMap, f: Forwarded<'_>) {
    // Room for the six headers added below, so the map grows at most once.
    headers.reserve(6);
    strip_hop_by_hop(headers);
    headers.remove(EXPECT);
    strip_lattice(headers);
    append_forwarded_for(headers, f.client_ip);
    headers.insert(X_FORWARDED_PORT, f.port.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    headers.insert(X_AMZN_LATTICE_NETWORK, f.network.clone());
    headers.insert(X_AMZN_LATTICE_TARGET, f.target.clone());
    headers.insert(X_AMZN_REQUESTID, f.request_id.clone());
}

/// Rewrites a target's response headers for the client (the request path adds the request id
/// to every response, the proxy's own included).
pub(crate) fn prepare_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

/// Removes the hop-by-hop headers, including those `Connection` names (except `Host` and
/// `Content-Length`, which a client cannot make us drop).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let http::header::Entry::Occupied(e) = headers.entry(CONNECTION) {
        let named: Vec<HeaderValue> = e.remove_entry_mult().1.collect();
        for value in &named {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',') {
                let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) else { continue };
                if name != HOST && name != CONTENT_LENGTH {
                    headers.remove(name);
                }
            }
        }
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
}

/// Removes every `x-amzn-lattice-*` header.
fn strip_lattice(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().starts_with(LATTICE_PREFIX)) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with(LATTICE_PREFIX)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Appends the client's address to `x-forwarded-for` (all values the client sent, joined).
fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    let mut existing = headers.get_all(X_FORWARDED_FOR).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(X_FORWARDED_FOR, client_ip.clone());
        return;
    }
    let mut joined = Vec::with_capacity(64);
    for v in existing {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client_ip.as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => headers.insert(X_FORWARDED_FOR, v),
        Err(_) => headers.insert(X_FORWARDED_FOR, client_ip.clone()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn request_headers_are_rewritten() {
        let mut h = map(&[
            ("host", "svc.example"),
            ("connection", "keep-alive, x-secret, host"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("x-amzn-lattice-identity", "Principal=forged"),
            ("X-Amzn-Lattice-Network", "forged"),
            ("x-amzn-requestid", "forged"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-port", "1"),
            ("x-other", "kept"),
        ]);
        let (ip, port, net, id) = (
            HeaderValue::from_static("127.0.0.9"),
            HeaderValue::from_static("80"),
            HeaderValue::from_static("SourceVpcArn=arn:aws:ec2:us-east-1:000000000000:vpc/vpc-1"),
            request_id(),
        );
        let target = lattice_target("arn:svc", "arn:sn", "arn:tg").unwrap();
        prepare_request(
            &mut h,
            Forwarded { client_ip: &ip, port: &port, network: &net, target: &target, request_id: &id },
        );
        for gone in ["connection", "x-secret", "keep-alive", "te", "upgrade", "proxy-connection", "transfer-encoding"] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
        assert!(!h.contains_key("expect"));
        assert!(!h.contains_key("x-amzn-lattice-identity"));
        assert_eq!(h["host"], "svc.example");
        assert_eq!(h["x-other"], "kept");
        assert_eq!(h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["10.0.0.1, 10.0.0.2, 127.0.0.9"]);
        assert_eq!(h["x-forwarded-port"], "80");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h.get_all("x-amzn-lattice-network").iter().count(), 1);
        assert_eq!(h["x-amzn-lattice-network"], net);
        assert_eq!(h["x-amzn-lattice-target"], "ServiceArn=arn:svc;ServiceNetworkArn=arn:sn;TargetGroupArn=arn:tg");
        assert_eq!(h["x-amzn-requestid"], id);
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = request_id();
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        let groups: Vec<&str> = s.split('-').collect();
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(groups[2].starts_with('4'), "{s}");
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "{s}");
        assert_ne!(request_id(), a);
    }

    #[test]
    fn response_loses_hop_by_hop() {
        let mut h = map(&[("connection", "close"), ("transfer-encoding", "chunked"), ("content-type", "text/plain")]);
        prepare_response(&mut h);
        assert!(!h.contains_key("connection") && !h.contains_key("transfer-encoding"));
        assert_eq!(h["content-type"], "text/plain");
    }
}
