//! An access log record as its line of JSON, written straight into the writer's buffer: the
//! fields in a fixed order, strings escaped as `serde_json` escapes them (`"`, `\`, and control
//! characters; `\u00xx` in lowercase hex where there is no short form), `-` for a field that
//! does not apply. Nothing here allocates per record except the rare request text that is not
//! valid UTF-8 (read as U+FFFD, as `String::from_utf8_lossy` does).

use std::io::Write as _;
use std::net::SocketAddr;

use super::{Entry, Fields, ListenerLog, LogRoute, Part};
use crate::headers::write_decimal;

/// The start of the current second as ISO-8601 (`YYYY-MM-DDTHH:MM:SS.`), made once a second
/// rather than once a record.
#[derive(Debug, Default)]
pub(super) struct Clock {
    second: Option<u64>,
    prefix: String,
}

/// What each byte becomes inside a JSON string: 0 for itself, `u` for `\u00xx`, any other
/// byte `c` for `\c`.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `,"name":`, the text before a field's value (one copy per field rather than three).
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}

/// `,"name":"`, the text before a string field's value, its opening quote included.
macro_rules! key_quote {
    ($name:literal) => {
        concat!(",\"", $name, "\":\"").as_bytes()
    };
}

/// The fields of a caller's client certificate: listeners take none, so they are always `-`.
macro_rules! no_x509 {
    () => {
        concat!(
            r#","callerX509IssuerOU":"-","callerX509SubjectCN":"-","callerX509SANNameCN":"-","#,
            r#""callerX509SANDNS":"-","callerX509SANURI":"-""#,
        )
    };
}
const NO_X509: &[u8] = no_x509!().as_bytes();

/// The fields of a request that was not over TLS, of one neither refused nor failed, and of
/// one without a caller: most records, each written with one copy.
const NO_TLS: &[u8] = br#","sslCipher":"-","tlsVersion":"-""#;
const NO_REASONS: &[u8] = br#","authDeniedReason":"-","failureReason":"-""#;
const NO_CALLER: &[u8] =
    concat!(r#","resolvedUser":"-","callerPrincipal":"-","callerPrincipalOrgID":"-""#, no_x509!()).as_bytes();

/// The fields of a record without a source VPC, target group or listener.
const NO_SOURCE: &[u8] = br#","sourceVpcArn":"-","sourceVpcId":"-""#;
const NO_DESTINATION: &[u8] = br#","destinationVpcId":"-""#;
const NO_GROUP: &[u8] = br#","targetGroupArn":"-""#;
const NO_LISTENER: &[u8] = br#","listenerId":"-","listenerType":"-""#;

/// `,"key":"value"` for each pair, the values escaped (the keys are the proxy's own names): a
/// part of the lines of many records, made once.
pub(super) fn fields(pairs: &[(&str, &str)]) -> Fields {
    let mut out = Vec::new();
    for (key, value) in pairs {
        debug_assert!(key.bytes().all(|b| ESCAPE[usize::from(b)] == 0), "{key:?} needs escaping");
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":\"");
        string_body(&mut out, value);
        out.push(b'"');
    }
    out.into_boxed_slice()
}

// === impl Entry ===

impl Entry {
    /// Appends the record, a request through `route`, as one JSON object (no newline).
    pub(super) fn write_line(&self, route: &LogRoute, out: &mut Vec<u8>, clock: &mut Clock) {
        // A typical line is 1–1.5 KiB: room for it at once.
        out.reserve(2048);
        out.extend_from_slice(b"{\"startTime\":\"");
        clock.write(self.start_time, out);
        out.push(b'"');
        out.extend_from_slice(&route.head);
        out.extend_from_slice(self.source.as_deref().unwrap_or(NO_SOURCE));
        let group = self.group.and_then(|i| route.groups.get(i));
        out.extend_from_slice(group.map_or(NO_DESTINATION, |(vpc, _)| vpc));
        address(out, key!("sourceIpPort"), self.source_ip_port);
        address(out, key!("targetIpPort"), self.target_ip_port);
        out.extend_from_slice(group.map_or(NO_GROUP, |(_, arn)| arn));
        out.extend_from_slice(match &self.listener {
            ListenerLog::None => NO_LISTENER,
            ListenerLog::Known(i) => route.listeners.get(*i).map_or(NO_LISTENER, |(_, fields)| fields),
            ListenerLog::Other(fields) => fields,
        });
        raw(out, key_quote!("requestMethod"), self.request.find(Part::Method));
        raw(out, key_quote!("requestPath"), self.request.find(Part::Path));
        known(out, key_quote!("protocol"), self.protocol);
        raw(out, key_quote!("hostHeader"), self.request.find(Part::Host));
        text(out, key_quote!("serverNameIndication"), self.server_name_indication.as_deref());
        raw(out, key_quote!("userAgent"), self.request.find(Part::UserAgent));
        number(out, key!("responseCode"), self.response_code.into());
        number(out, key!("bytesReceived"), self.bytes_received);
        number(out, key!("bytesSent"), self.bytes_sent);
        number(out, key!("duration"), self.duration);
        number(out, key!("requestToTargetDuration"), self.request_to_target_duration);
        number(out, key!("responseFromTargetDuration"), self.response_from_target_duration);
        if (self.ssl_cipher, self.tls_version) == ("-", "-") {
            out.extend_from_slice(NO_TLS);
        } else {
            known(out, key_quote!("sslCipher"), self.ssl_cipher);
            known(out, key_quote!("tlsVersion"), self.tls_version);
        }
        if (self.auth_denied_reason, self.failure_reason) == ("-", "-") {
            out.extend_from_slice(NO_REASONS);
        } else {
            known(out, key_quote!("authDeniedReason"), self.auth_denied_reason);
            known(out, key_quote!("failureReason"), self.failure_reason);
        }
        match &self.caller {
            None => out.extend_from_slice(NO_CALLER),
            Some(caller) => {
                let principal = Some(caller.principal.arn());
                text(out, key_quote!("resolvedUser"), principal);
                text(out, key_quote!("callerPrincipal"), principal);
                text(out, key_quote!("callerPrincipalOrgID"), Some(&caller.organization_id));
                out.extend_from_slice(NO_X509);
            }
        }
        // The proxy's own request ids are a UUID's hex digits and dashes: nothing to escape.
        out.extend_from_slice(key_quote!("requestId"));
        out.extend_from_slice(&self.request_id.0);
        out.push(b'"');
        raw(out, key_quote!("traceparent"), self.request.find(Part::Traceparent));
        out.push(b'}');
    }
}

// === impl Clock ===

impl Clock {
    /// Appends epoch milliseconds `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
    pub(super) fn write(&mut self, ms: u64, out: &mut Vec<u8>) {
        let (second, millis) = (ms / 1000, ms % 1000);
        if self.second != Some(second) {
            let mut text = trellis_model::Timestamp(second * 1000).iso8601();
            // `….000Z`: the prefix keeps the `.`.
            text.truncate(text.len() - 4);
            self.prefix = text;
            self.second = Some(second);
        }
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(&[
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ]);
    }
}

/// A string field, `-` when absent (`key` ends in the opening quote).
fn text(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    out.extend_from_slice(key);
    string_body(out, value.unwrap_or("-"));
    out.push(b'"');
}

/// A string field whose value is one of the proxy's own names (a protocol, a cipher suite, a
/// reason): text with nothing to escape, copied as it is.
fn known(out: &mut Vec<u8>, key: &[u8], value: &'static str) {
    debug_assert!(value.bytes().all(|b| ESCAPE[usize::from(b)] == 0), "{value:?} needs escaping");
    out.extend_from_slice(key);
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// A string field from bytes a request sent, `-` when absent (`key` ends in the opening
/// quote).
fn raw(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    out.extend_from_slice(key);
    // Most requests' text is ASCII with nothing to escape: one look at it, then a copy.
    if let Some(bytes) = value
        && plain_ascii(bytes)
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    match value.map(std::str::from_utf8) {
        None => string_body(out, "-"),
        Some(Ok(s)) => string_body(out, s),
        Some(Err(_)) => string_body(out, &String::from_utf8_lossy(value.unwrap_or_default())),
    }
    out.push(b'"');
}

/// An address field as `ip:port`, `-` when absent.
fn address(out: &mut Vec<u8>, key: &[u8], value: Option<SocketAddr>) {
    out.extend_from_slice(key);
    match value {
        // Neither form has a character to escape.
        Some(SocketAddr::V4(a)) => ipv4(out, a),
        Some(a @ SocketAddr::V6(_)) => {
            let _ = write!(out, "\"{a}\"");
        }
        None => string(out, "-"),
    }
}

/// An IPv4 address and port as a JSON string, `"a.b.c.d:port"`: made on the stack and copied
/// once, rather than in eleven appends to the line.
fn ipv4(out: &mut Vec<u8>, addr: std::net::SocketAddrV4) {
    // The longest is `"255.255.255.255:65535"`.
    let mut text = [0u8; 23];
    text[0] = b'"';
    let mut at = 1;
    for (i, octet) in addr.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text[at] = b'.';
            at += 1;
        }
        // Three bytes copied whatever the length (the rest is overwritten or not used).
        let [d0, d1, d2, len] = OCTETS[usize::from(octet)];
        text[at..at + 3].copy_from_slice(&[d0, d1, d2]);
        at += usize::from(len);
    }
    text[at] = b':';
    at = put_decimal(&mut text, at + 1, addr.port());
    text[at] = b'"';
    out.extend_from_slice(&text[..=at]);
}

/// Each byte value in decimal: its digits, then how many there are.
const OCTETS: [[u8; 4]; 256] = {
    let mut table = [[0u8; 4]; 256];
    let mut n = 0;
    while n < 256 {
        let (hundreds, tens, ones) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
        table[n] = match n {
            0..10 => [b'0' + ones, 0, 0, 1],
            10..100 => [b'0' + tens, b'0' + ones, 0, 2],
            _ => [b'0' + hundreds, b'0' + tens, b'0' + ones, 3],
        };
        n += 1;
    }
    table
};

/// Writes `n` in decimal into `text` from `at` on; returns where it ends.
fn put_decimal(text: &mut [u8; 23], at: usize, mut n: u16) -> usize {
    let len = match n {
        0..10 => 1,
        10..100 => 2,
        100..1_000 => 3,
        1_000..10_000 => 4,
        _ => 5,
    };
    for d in text[at..at + len].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    at + len
}

/// A number field.
fn number(out: &mut Vec<u8>, key: &[u8], value: u64) {
    out.extend_from_slice(key);
    write_decimal(out, value);
}

/// Appends `s` as a JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    string_body(out, s);
    out.push(b'"');
}

/// Appends `s` as the inside of a JSON string. Eight bytes at a time are checked for one that
/// needs an escape; a string with none (nearly every one) is copied whole.
fn string_body(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut words = bytes.chunks_exact(8);
    let escapes = words.by_ref().any(|w| needs_escape(u64::from_ne_bytes(w.try_into().unwrap_or([0; 8]))))
        // The last few bytes one by one (gathering them into a word would cost a stalled
        // load).
        || words.remainder().iter().any(|&b| ESCAPE[usize::from(b)] != 0);
    if escapes {
        escaped(out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
}

/// Appends `bytes` with each byte that needs it escaped, runs of bytes that do not copied whole.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[copied..i]);
        if escape == b'u' {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        copied = i + 1;
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// Whether every byte of `bytes` is ASCII and stands for itself in a JSON string.
fn plain_ascii(bytes: &[u8]) -> bool {
    !crate::swar::any(bytes, b'a', |word| crate::swar::has_more(word, 0x7f) || needs_escape(word))
}

/// Whether one of the eight bytes in `word` is below 0x20, `"` or `\` (it may say yes for a
/// word with none, never no for a word with one).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    below(word, 0x20) | below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1) != 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use trellis_model::iam::{Identity, Principal};

    use super::*;
    use crate::access_log::{RequestId, RequestText, RouteFacts, source_fields};

    /// `s` as `serde_json` writes a string.
    fn json(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    #[test]
    fn strings_escape_as_serde_json_does() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("ü€😀\u{7f}\u{2028}");
        let table = [
            "",
            "-",
            "plain text that needs nothing",
            "\"",
            "\\",
            "a\"b\\c\nd\te\u{1}f\u{1f}g",
            "12345678\"2345678",
            "1234567\n",
            "abcdefgh\"",
            "abcdefghi\\",
            "abcdefg\u{1f}abcdefgh",
            "/aws/vpc-lattice/ü",
            all.as_str(),
        ];
        for s in table {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), json(s), "{s:?}");
        }
    }

    #[test]
    fn escape_check_misses_no_byte() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = b;
                if ESCAPE[usize::from(b)] != 0 {
                    assert!(needs_escape(u64::from_ne_bytes(word)), "{b:#x} at {at}");
                }
            }
        }
        assert!(!needs_escape(u64::from_ne_bytes(*b"arn:aws:")));
    }

    /// `plain_ascii` says no for every byte that is not ASCII or needs escaping, wherever it
    /// is in a word or the tail after the words, and yes for text with none.
    #[test]
    fn plain_ascii_misses_no_byte() {
        for b in 0..=255u8 {
            let plain = b < 0x80 && ESCAPE[usize::from(b)] == 0;
            for len in 1..=25 {
                for at in 0..len {
                    let mut text = [b'a'; 25];
                    text[at] = b;
                    assert_eq!(plain_ascii(&text[..len]), plain, "{b:#x} at {at} of {len}");
                }
            }
        }
        assert!(plain_ascii(b""));
        assert!(plain_ascii(b"/a/b?c=d&e=f"));
    }

    #[test]
    fn timestamps_and_numbers() {
        let mut clock = Clock::default();
        for ms in [0, 999, 1_000, 1_764_892_800_123, 1_764_892_800_999, 1_764_892_801_007, 253_402_300_799_999] {
            let mut out = Vec::new();
            clock.write(ms, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), trellis_model::Timestamp(ms).iso8601());
        }
        for n in [0, 7, 9, 10, 99, 100, 255, 999, 1_000, 9_999, 10_000, 65_535, 99_999, 100_000, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn ipv4_addresses_at_every_length() {
        let octets = [0, 7, 10, 99, 100, 255];
        let ports = [0, 9, 10, 99, 100, 999, 1_000, 9_999, 10_000, 65_535];
        for (i, &a) in octets.iter().enumerate() {
            for &b in &octets[i..] {
                for &port in &ports {
                    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(a, b, 255 - a, b), port);
                    let mut out = Vec::new();
                    address(&mut out, b"", Some(addr.into()));
                    assert_eq!(String::from_utf8(out).unwrap(), format!("\"{addr}\""));
                }
            }
        }
    }

    /// `cargo test --release -p trellis-proxy -- --ignored access_log_line_cost --nocapture`.
    /// What writing one typical record's line costs the writer thread.
    #[test]
    #[ignore]
    fn access_log_line_cost() {
        let mut request = RequestText::with_capacity(0);
        request.set(Part::Method, b"GET");
        request.set(Part::Path, b"/");
        request.set(Part::Host, b"bench-05c0105fc3d252936.7d67968.vpc-lattice-svcs.us-east-1.on.aws");
        request.set(Part::UserAgent, b"wrk/4.1.0");
        request.set(Part::Traceparent, b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let arn = |s: &str| format!("arn:aws:vpc-lattice:us-east-1:000000000000:{s}");
        let route = LogRoute::new(RouteFacts {
            destinations: Vec::new(),
            service_id: "svc-05c0105fc3d252936",
            service_arn: &arn("service/svc-05c0105fc3d252936"),
            network_arn: &arn("servicenetwork/sn-05e4735cdbb4027c1"),
            listeners: vec![("listener-0123456789abcdef0", "HTTP")],
            groups: vec![("vpc-0123456789abcdef0", &arn("targetgroup/tg-0123456789abcdef0"))],
        });
        let entry = Entry {
            start_time: 1_764_892_800_123,
            source: Some(source_fields(
                "arn:aws:ec2:us-east-1:000000000000:vpc/vpc-0123456789abcdef0",
                "vpc-0123456789abcdef0",
            )),
            source_ip_port: Some("127.100.5.1:40000".parse().unwrap()),
            target_ip_port: Some("127.0.0.1:18101".parse().unwrap()),
            group: Some(0),
            listener: route.listener("listener-0123456789abcdef0", "HTTP"),
            request,
            protocol: "HTTP/1.1",
            response_code: 200,
            bytes_received: 120,
            bytes_sent: 160,
            ssl_cipher: "-",
            tls_version: "-",
            auth_denied_reason: "-",
            failure_reason: "-",
            ..Entry::default()
        };
        let mut clock = Clock::default();
        let mut out = Vec::with_capacity(1 << 20);
        const N: u64 = 200_000;
        let t = std::time::Instant::now();
        for _ in 0..N {
            if out.len() > (1 << 20) - 2048 {
                out.clear();
            }
            std::hint::black_box(&entry).write_line(&route, &mut out, &mut clock);
        }
        let each = t.elapsed() / N as u32;
        let mut line = Vec::new();
        entry.write_line(&route, &mut line, &mut clock);
        println!("access log line: {each:?} per record, {} bytes", line.len());
    }

    /// Every field, in the order and the form the record has had since it was written by
    /// `serde_json`.
    #[test]
    fn a_full_line() {
        let mut request = RequestText::with_capacity(0);
        request.set(Part::Method, b"GET");
        request.set(Part::Path, b"/a?b=\"c\"");
        request.set(Part::Host, b"svc.example");
        request.set(Part::UserAgent, b"agent\xff/1");
        request.set(Part::Traceparent, b"00-1-2-01");
        let route = LogRoute::new(RouteFacts {
            destinations: Vec::new(),
            service_id: "svc-1",
            service_arn: "arn:svc",
            network_arn: "arn:sn",
            listeners: vec![("listener-0", "HTTPS"), ("listener-1", "HTTP")],
            groups: vec![("vpc-0", "arn:tg0"), ("-", "arn:\"tg\"")],
        });
        let entry = Entry {
            start_time: 1_764_892_800_123,
            source: Some(source_fields("arn:vpc", "vpc-1")),
            source_ip_port: Some("10.0.0.1:5000".parse().unwrap()),
            target_ip_port: Some("[::1]:80".parse().unwrap()),
            group: Some(1),
            listener: route.listener("listener-1", "HTTP"),
            request,
            protocol: "HTTP/1.1",
            server_name_indication: None,
            response_code: 200,
            bytes_received: 1,
            bytes_sent: 22,
            duration: 3,
            request_to_target_duration: 4,
            response_from_target_duration: 5,
            ssl_cipher: "-",
            tls_version: "-",
            auth_denied_reason: "-",
            failure_reason: "-",
            caller: None,
            request_id: RequestId([b'r'; 36]),
        };
        let mut out = Vec::new();
        entry.write_line(&route, &mut out, &mut Clock::default());
        let want = concat!(
            r#"{"startTime":"2025-12-05T00:00:00.123Z","serviceNetworkArn":"arn:sn","serviceArn":"arn:svc","#,
            r#""sourceVpcArn":"arn:vpc","sourceVpcId":"vpc-1","destinationVpcId":"-","sourceIpPort":"10.0.0.1:5000","#,
            r#""targetIpPort":"[::1]:80","targetGroupArn":"arn:\"tg\"","listenerId":"listener-1","listenerType":"HTTP","#,
            r#""requestMethod":"GET","requestPath":"/a?b=\"c\"","protocol":"HTTP/1.1","hostHeader":"svc.example","#,
            r#""serverNameIndication":"-","userAgent":"agent�/1","responseCode":200,"bytesReceived":1,"#,
            r#""bytesSent":22,"duration":3,"requestToTargetDuration":4,"responseFromTargetDuration":5,"#,
            r#""sslCipher":"-","tlsVersion":"-","authDeniedReason":"-","failureReason":"-","resolvedUser":"-","#,
            r#""callerPrincipal":"-","callerPrincipalOrgID":"-","callerX509IssuerOU":"-","callerX509SubjectCN":"-","#,
            r#""callerX509SANNameCN":"-","callerX509SANDNS":"-","callerX509SANURI":"-","#,
            r#""requestId":"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr","traceparent":"00-1-2-01"}"#,
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    /// A route with no listener or target group known.
    fn bare_route() -> LogRoute {
        LogRoute::new(RouteFacts {
            destinations: Vec::new(),
            service_id: "svc-1",
            service_arn: "arn:svc",
            network_arn: "arn:sn",
            listeners: Vec::new(),
            groups: Vec::new(),
        })
    }

    /// A record with a caller, over TLS, refused or failed: each of those fields is written
    /// as it is (the usual `-`s are copied whole; these must not be).
    #[test]
    fn a_caller_tls_and_reasons() {
        let route = bare_route();
        let caller = Identity {
            access_key_id: "AKIA".into(),
            secret_access_key: "s".into(),
            session_token: None,
            expiration: None,
            account: "000000000000".into(),
            organization_id: "o-\"x\"".into(),
            principal: Principal::Root { arn: "arn:aws:iam::000000000000:root".into() },
            principal_tags: Vec::new(),
        };
        let line = |entry: Entry| {
            let mut out = Vec::new();
            entry.write_line(&route, &mut out, &mut Clock::default());
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            value
        };
        let base = || Entry {
            ssl_cipher: "-",
            tls_version: "-",
            auth_denied_reason: "-",
            failure_reason: "-",
            ..Entry::default()
        };
        let v = line(Entry {
            ssl_cipher: "TLS_AES_128_GCM_SHA256",
            tls_version: "TLSv1.3",
            auth_denied_reason: "-",
            failure_reason: "TargetUnreachable",
            caller: Some(Arc::new(caller)),
            ..base()
        });
        let fields = [
            ("sslCipher", "TLS_AES_128_GCM_SHA256"),
            ("tlsVersion", "TLSv1.3"),
            ("authDeniedReason", "-"),
            ("failureReason", "TargetUnreachable"),
            ("resolvedUser", "arn:aws:iam::000000000000:root"),
            ("callerPrincipal", "arn:aws:iam::000000000000:root"),
            ("callerPrincipalOrgID", "o-\"x\""),
            ("callerX509SubjectCN", "-"),
        ];
        for (key, want) in fields {
            assert_eq!(v[key], want, "{key}");
        }
        let v = line(Entry { auth_denied_reason: "Policy", ..base() });
        assert_eq!((&v["authDeniedReason"], &v["failureReason"]), (&"Policy".into(), &"-".into()));
        assert_eq!(
            (&v["sslCipher"], &v["resolvedUser"], &v["callerX509SANURI"]),
            (&"-".into(), &"-".into(), &"-".into())
        );
    }

    /// A record without a source VPC, target group or listener has `-` for each of their
    /// fields; a listener its route does not know is written from its own fields.
    #[test]
    fn parts_a_record_lacks_or_its_route_does_not_know() {
        let route = bare_route();
        let line = |entry: &Entry| {
            let mut out = Vec::new();
            entry.write_line(&route, &mut out, &mut Clock::default());
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        let bare = line(&Entry { group: Some(3), ..Entry::default() });
        for key in ["sourceVpcArn", "sourceVpcId", "destinationVpcId", "targetGroupArn", "listenerId", "listenerType"] {
            assert_eq!(bare[key], "-", "{key}");
        }
        let other = line(&Entry { listener: route.listener("listener-\"9", "HTTPS"), ..Entry::default() });
        assert_eq!(
            (other["listenerId"].as_str(), other["listenerType"].as_str()),
            (Some("listener-\"9"), Some("HTTPS"))
        );
    }
}
