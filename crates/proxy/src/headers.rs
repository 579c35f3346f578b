//! The heads the proxy writes (spec §3.8). On the way to a target: hop-by-hop headers go
//! (`Connection` and the headers it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Transfer-Encoding` and `Content-Length` — the proxy frames the body itself —, `Upgrade`, and
//! `Expect`, which the proxy answers itself), every incoming `x-amzn-lattice-*` goes (they cannot
//! be spoofed), and the proxy adds `x-forwarded-for` (the client's address appended to any it
//! sent), `x-forwarded-port` (the Lattice listener port), `x-forwarded-proto: http`,
//! `x-amzn-lattice-network`, `x-amzn-lattice-target` and `x-amzn-requestid`. `Host` is kept.
//!
//! The spec also mentions `x-forwarded-for-port` / `x-forwarded-for-proto` spellings from one
//! AWS page; what ELB and every proxy send is `x-forwarded-port` / `x-forwarded-proto`, so we
//! send those only.
//!
//! On the way back: hop-by-hop headers go, the proxy frames the body for the client and adds
//! `x-amzn-requestid` (every response has one, the proxy's own included).
//!
//! Heads are written straight into the connection's output buffer from the parsed head's
//! positions: no header map, no allocation per field.

use crate::h1::{Field, Framing, Name, RequestHead, ResponseHead, tokens};

/// What the proxy tells a target about a request.
pub(crate) struct Forwarded<'a> {
    /// The client's IP address.
    pub(crate) client_ip: &'a [u8],
    /// The Lattice port the request arrived on.
    pub(crate) port: &'a [u8],
    /// The client spoke TLS (`x-forwarded-proto: https`, else `http`).
    pub(crate) tls: bool,
    /// `x-amzn-lattice-network: SourceVpcArn=…`.
    pub(crate) network: &'a AddedField,
    /// `x-amzn-lattice-target: ServiceArn=…;ServiceNetworkArn=…;TargetGroupArn=…`.
    pub(crate) target: &'a AddedField,
    /// The request id.
    pub(crate) request_id: &'a [u8],
    /// The authenticated caller, named in `x-amzn-lattice-identity`.
    pub(crate) identity: Option<&'a trellis_model::iam::Identity>,
    /// A `traceparent` the proxy started (the client sent no valid one): sent instead of any
    /// the client sent.
    pub(crate) traceparent: Option<&'a [u8]>,
}

/// Length of a version-00 `traceparent` value.
pub(crate) const TRACEPARENT_LEN: usize = 55;

/// The request's `traceparent` value (W3C Trace Context), if it has exactly one valid one.
pub(crate) fn find_traceparent<'b>(buf: &'b [u8], fields: &[Field]) -> Option<&'b [u8]> {
    let mut values = fields.iter().filter(|f| f.kind == Name::Traceparent);
    let value = &buf[values.next()?.value.clone()];
    (values.next().is_none() && valid_traceparent(value)).then_some(value)
}

/// Whether `v` is a `traceparent` a participant may pass on: `vv-<32 hex>-<16 hex>-<2 hex>`
/// in lowercase, version not `ff`, IDs not all zero (a later version may append fields).
pub(crate) fn valid_traceparent(v: &[u8]) -> bool {
    let hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let zero = |s: &[u8]| s.iter().all(|&b| b == b'0');
    if v.len() < TRACEPARENT_LEN || (v.len() > TRACEPARENT_LEN && (v[..2] == *b"00" || v[TRACEPARENT_LEN] != b'-')) {
        return false;
    }
    let (version, trace, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    v[2] == b'-'
        && v[35] == b'-'
        && v[52] == b'-'
        && hex(version)
        && version != b"ff"
        && hex(trace)
        && !zero(trace)
        && hex(parent)
        && !zero(parent)
        && hex(flags)
}

/// A new trace: `00-<random trace id>-<random parent id>-01`.
pub(crate) fn new_traceparent() -> [u8; TRACEPARENT_LEN] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    out[3..19].copy_from_slice(&hex16(crate::balance::random_u64() | 1));
    out[19..35].copy_from_slice(&hex16(crate::balance::random_u64()));
    out[36..52].copy_from_slice(&hex16(crate::balance::random_u64() | 1));
    out
}

/// A request id: a random UUID (version 4).
pub(crate) fn request_id() -> [u8; 36] {
    const VERSION: u64 = 0xf << 12;
    const VARIANT: u64 = 0x3 << 62;
    let hi = hex16(crate::balance::random_u64() & !VERSION | 0x4 << 12);
    let lo = hex16(crate::balance::random_u64() & !VARIANT | 0x2 << 62);
    let mut buf = [b'-'; 36];
    buf[..8].copy_from_slice(&hi[..8]);
    buf[9..13].copy_from_slice(&hi[8..12]);
    buf[14..18].copy_from_slice(&hi[12..]);
    buf[19..23].copy_from_slice(&lo[..4]);
    buf[24..].copy_from_slice(&lo[4..]);
    buf
}

/// The 16 lowercase hex digits of `x`, most significant first, eight at a time: each nibble
/// spread into a byte of its own, then turned into its digit (`0`–`9` or `a`–`f`).
fn hex16(x: u64) -> [u8; 16] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let digits = |half: u64| {
        let mut v = half;
        v = (v | v << 16) & 0x0000_ffff_0000_ffff;
        v = (v | v << 8) & 0x00ff_00ff_00ff_00ff;
        v = (v | v << 4) & 0x0f0f_0f0f_0f0f_0f0f;
        // A nibble of 10 or more carries into its byte's 0x10 bit once 6 is added.
        let letters = ((v + 6 * ONES) >> 4) & ONES;
        (v + u64::from(b'0') * ONES + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
    };
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&digits(x >> 32));
    out[8..].copy_from_slice(&digits(x & 0xffff_ffff));
    out
}

/// A field the proxy adds to requests, made once where its value is known: its whole
/// HTTP/1.1 line (`name: value` and CR LF, written with one copy), and its value (HTTP/2).
#[derive(Debug)]
pub(crate) struct AddedField {
    line: Box<[u8]>,
    name_len: usize,
}

impl AddedField {
    fn new(name: &str, value: &str) -> Self {
        Self { line: format!("{name}: {value}\r\n").into_bytes().into(), name_len: name.len() }
    }

    /// `name: value` and CR LF.
    pub(crate) fn line(&self) -> &[u8] {
        &self.line
    }

    /// The value.
    pub(crate) fn value(&self) -> &[u8] {
        &self.line[self.name_len + 2..self.line.len() - 2]
    }
}

/// `x-amzn-lattice-network` for a VPC.
pub(crate) fn lattice_network(vpc_arn: &str) -> AddedField {
    AddedField::new("x-amzn-lattice-network", &format!("SourceVpcArn={vpc_arn}"))
}

/// `x-amzn-lattice-target` for a request.
pub(crate) fn lattice_target(service_arn: &str, network_arn: &str, group_arn: &str) -> AddedField {
    AddedField::new(
        "x-amzn-lattice-target",
        &format!("ServiceArn={service_arn};ServiceNetworkArn={network_arn};TargetGroupArn={group_arn}"),
    )
}

/// The header names the `Connection` fields of a head list, other than `close` and `keep-alive`
/// (which the proxy handles itself): those headers do not cross the proxy. Never `Host` or
/// `Content-Length`, which a client cannot make us drop.
struct Named<'b> {
    buf: &'b [u8],
    fields: &'b [Field],
    /// The first names, when there are few (the usual case: none).
    first: [&'b [u8]; 4],
    n: usize,
    /// More than `first` holds: look through the fields again.
    many: bool,
}

impl<'b> Named<'b> {
    fn new(buf: &'b [u8], fields: &'b [Field]) -> Self {
        let mut named = Self { buf, fields, first: [&[]; 4], n: 0, many: false };
        for f in fields.iter().filter(|f| f.kind == Name::Connection) {
            let value = &buf[f.value.clone()];
            // The usual values, whole, name nothing.
            if crate::swar::eq_lowercase(value, b"keep-alive") || crate::swar::eq_lowercase(value, b"close") {
                continue;
            }
            for token in tokens(value) {
                if crate::swar::eq_lowercase(token, b"close") || crate::swar::eq_lowercase(token, b"keep-alive") {
                    continue;
                }
                match named.first.get_mut(named.n) {
                    Some(slot) => {
                        *slot = token;
                        named.n += 1;
                    }
                    None => named.many = true,
                }
            }
        }
        named
    }

    fn contains(&self, name: &[u8]) -> bool {
        if self.n == 0 || crate::swar::eq_lowercase(name, b"host") {
            return false;
        }
        if self.many {
            return self
                .fields
                .iter()
                .filter(|f| f.kind == Name::Connection)
                .any(|f| tokens(&self.buf[f.value.clone()]).any(|t| t.eq_ignore_ascii_case(name)));
        }
        self.first[..self.n].iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// `name: value` and its line's end.
pub(crate) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the head a target gets for the request whose head is `head` (positions into `buf`):
/// `path` in origin form, `host` replacing the `Host` header when the client used absolute form,
/// the body framed as `framing`.
pub(crate) fn write_request(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    path: &[u8],
    host: Option<&[u8]>,
    framing: Framing,
    f: &Forwarded<'_>,
) {
    out.extend_from_slice(&buf[head.method.clone()]);
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let named = Named::new(buf, &head.fields);
    let (mut forwarded_for, mut wrote_host) = (false, false);
    for fl in &head.fields {
        let name = &buf[fl.name.clone()];
        let value = &buf[fl.value.clone()];
        let dropped = match fl.kind {
            Name::Expect | Name::RequestId | Name::ForwardedPort | Name::ForwardedProto | Name::Lattice => true,
            Name::Traceparent => f.traceparent.is_some(),
            kind => kind.hop_by_hop(),
        };
        if dropped || named.contains(name) {
            continue;
        }
        if fl.kind == Name::ForwardedFor {
            if !forwarded_for {
                // Every value the client sent, joined, then the client's address.
                forwarded_for = true;
                out.extend_from_slice(b"x-forwarded-for: ");
                for other in head.fields.iter().filter(|o| o.kind == Name::ForwardedFor) {
                    out.extend_from_slice(&buf[other.value.clone()]);
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(f.client_ip);
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        if let Some(host) = host.filter(|_| fl.kind == Name::Host) {
            // The URI's authority, once, whatever Host lines came with it.
            if !wrote_host {
                wrote_host = true;
                field(out, name, host);
            }
            continue;
        }
        field(out, name, value);
    }
    if let Some(host) = host
        && !head.fields.iter().any(|fl| fl.kind == Name::Host)
    {
        field(out, b"host", host);
    }
    if !forwarded_for {
        field(out, b"x-forwarded-for", f.client_ip);
    }
    out.extend_from_slice(b"x-forwarded-port: ");
    out.extend_from_slice(f.port);
    out.extend_from_slice(if f.tls { b"\r\nx-forwarded-proto: https\r\n" } else { b"\r\nx-forwarded-proto: http\r\n" });
    out.extend_from_slice(f.network.line());
    out.extend_from_slice(f.target.line());
    if let Some(identity) = f.identity {
        out.extend_from_slice(b"x-amzn-lattice-identity: ");
        crate::auth::write_identity(out, identity);
        out.extend_from_slice(b"\r\n");
    }
    field(out, b"x-amzn-requestid", f.request_id);
    if let Some(trace) = f.traceparent {
        field(out, b"traceparent", trace);
    }
    write_framing(out, framing);
    out.extend_from_slice(b"\r\n");
}

/// How the proxy frames a response body for its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientFraming {
    /// No body follows (HEAD, 204, 304, or an empty body): the target's `Content-Length`, if
    /// any, is passed on as it is.
    None,
    /// `Content-Length`.
    Length(u64),
    /// Chunked (HTTP/1.1 clients, when the target's body has no length).
    Chunked,
    /// Until the proxy closes the connection (HTTP/1.0 clients, when the body has no length).
    Close,
}

/// Writes the head a client gets for a target's response whose head is `head` (positions into
/// `buf`).
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    framing: ClientFraming,
    request_id: &[u8],
    keep_alive: Option<bool>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let status = head.status;
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(&buf[head.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    let named = Named::new(buf, &head.fields);
    for fl in &head.fields {
        let name = &buf[fl.name.clone()];
        let length = fl.kind == Name::ContentLength;
        // A body-less response keeps the length the target gave it (a HEAD's, a 304's; never
        // a 204's, which has no body to describe).
        if (length && framing == ClientFraming::None && head.framing != Framing::Chunked && status != 204)
            || !(fl.kind.hop_by_hop() || fl.kind == Name::RequestId || named.contains(name))
        {
            field(out, name, &buf[fl.value.clone()]);
        }
    }
    field(out, b"x-amzn-requestid", request_id);
    match framing {
        ClientFraming::Length(n) => write_framing(out, Framing::Length(n)),
        ClientFraming::Chunked => write_framing(out, Framing::Chunked),
        ClientFraming::None | ClientFraming::Close => {}
    }
    match keep_alive {
        Some(false) => out.extend_from_slice(b"connection: close\r\n"),
        Some(true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        None => {}
    }
    out.extend_from_slice(b"\r\n");
}

fn write_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            write_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::Close => {}
    }
}

/// `n` in decimal.
pub(crate) fn write_decimal(out: &mut Vec<u8>, n: u64) {
    // Most numbers written (status codes, ports, octets, sizes, milliseconds) are short: those
    // are written as a fixed number of digits, a copy of known length rather than a call.
    match n {
        0..10 => out.push(b'0' + n as u8),
        10..100 => digits::<2>(out, n),
        100..1_000 => digits::<3>(out, n),
        1_000..10_000 => digits::<4>(out, n),
        10_000..100_000 => digits::<5>(out, n),
        _ => long_decimal(out, n),
    }
}

/// `n`, which has `N` digits, in decimal.
#[inline]
fn digits<const N: usize>(out: &mut Vec<u8>, mut n: u64) {
    let mut text = [0u8; N];
    for d in text.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&text);
}

fn long_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut text = [0u8; 20];
    let mut i = text.len();
    loop {
        i -= 1;
        text[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&text[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::{parse_request, parse_response};

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out).split("\r\n").map(str::to_ascii_lowercase).collect()
    }

    #[test]
    fn request_headers_are_rewritten() {
        let raw = b"POST /p HTTP/1.1\r\nhost: svc.example\r\nconnection: keep-alive, x-secret, host\r\n\
            x-secret: 1\r\nkeep-alive: timeout=5\r\nte: trailers\r\nupgrade: websocket\r\n\
            proxy-connection: keep-alive\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\
            x-amzn-lattice-identity: Principal=forged\r\nX-Amzn-Lattice-Network: forged\r\n\
            x-amzn-requestid: forged\r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n\
            x-forwarded-port: 1\r\nx-other: kept\r\n\r\n";
        let head = parse_request(raw, 100).unwrap().unwrap();
        let target = lattice_target("arn:svc", "arn:sn", "arn:tg");
        let net = lattice_network("arn:aws:ec2:us-east-1:000000000000:vpc/vpc-1");
        let id = request_id();
        let f = Forwarded {
            client_ip: b"127.0.0.9",
            port: b"80",
            tls: false,
            network: &net,
            target: &target,
            request_id: &id,
            identity: None,
            traceparent: None,
        };
        let mut out = Vec::new();
        write_request(&mut out, raw, &head, b"/p", None, Framing::Length(3), &f);
        let got_lines = lines(&out);
        let id = String::from_utf8_lossy(&id).into_owned();
        let want = [
            "post /p http/1.1",
            "host: svc.example",
            "x-other: kept",
            "x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.9",
            "x-forwarded-port: 80",
            "x-forwarded-proto: http",
            "x-amzn-lattice-network: sourcevpcarn=arn:aws:ec2:us-east-1:000000000000:vpc/vpc-1",
            "x-amzn-lattice-target: servicearn=arn:svc;servicenetworkarn=arn:sn;targetgrouparn=arn:tg",
            &format!("x-amzn-requestid: {id}"),
            "content-length: 3",
            "",
            "",
        ];
        // x-forwarded-for takes the place of the first value the client sent.
        let mut got = got_lines.clone();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{got_lines:?}");
        // Absolute form: the URI's authority is the host.
        let mut out = Vec::new();
        write_request(&mut out, raw, &head, b"/p", Some(b"other.example"), Framing::Empty, &f);
        assert!(lines(&out).contains(&"host: other.example".to_string()));
    }

    #[test]
    fn hex_digits_as_format_writes_them() {
        let mut x = 0x0123_4567_89ab_cdef_u64;
        for v in [0, 1, 9, 10, 15, 16, u64::MAX, 0xa0b0_c0d0_e0f0_9080, 0x0f0f_0f0f_0f0f_0f0f].into_iter().chain(
            (0..1000).map(|_| {
                x = x.rotate_left(7).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                x
            }),
        ) {
            assert_eq!(std::str::from_utf8(&hex16(v)).unwrap(), format!("{v:016x}"));
        }
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = request_id();
        let s = std::str::from_utf8(&a).unwrap();
        let groups: Vec<&str> = s.split('-').collect();
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(groups[2].starts_with('4'), "{s}");
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "{s}");
        assert_ne!(request_id(), a);
    }

    #[test]
    fn response_loses_hop_by_hop() {
        let raw = b"HTTP/1.1 200 OK\r\nconnection: close, x-c\r\nx-c: 1\r\ntransfer-encoding: chunked\r\n\
            content-type: text/plain\r\nx-amzn-requestid: forged\r\n\r\n";
        let head = parse_response(raw).unwrap().unwrap();
        let mut out = Vec::new();
        write_response(&mut out, raw, &head, ClientFraming::Chunked, b"id-1", Some(false));
        assert_eq!(
            lines(&out),
            [
                "http/1.1 200 ok",
                "content-type: text/plain",
                "x-amzn-requestid: id-1",
                "transfer-encoding: chunked",
                "connection: close",
                "",
                ""
            ]
        );
        // A HEAD's response keeps its length.
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n";
        let head = parse_response(raw).unwrap().unwrap();
        let mut out = Vec::new();
        write_response(&mut out, raw, &head, ClientFraming::None, b"id-2", None);
        assert!(lines(&out).contains(&"content-length: 12".to_string()));
    }

    #[test]
    fn traceparents() {
        let table: &[(&str, bool)] = &[
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false),
            ("", false),
        ];
        for (v, want) in table {
            assert_eq!(valid_traceparent(v.as_bytes()), *want, "{v}");
        }
        let made = new_traceparent();
        assert!(valid_traceparent(&made), "{}", String::from_utf8_lossy(&made));
        assert_ne!(made, new_traceparent());
        // A request's one valid value is found; two are none.
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
        let head = parse_request(raw, 100).unwrap().unwrap();
        assert!(find_traceparent(raw, &head.fields).is_some());
        let raw = b"GET / HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nTraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
        let head = parse_request(raw, 100).unwrap().unwrap();
        assert!(find_traceparent(raw, &head.fields).is_none());
    }
}
