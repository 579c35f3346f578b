//! Errors the proxy makes itself, and the one place they become responses. Each [`ProxyError`]
//! knows who caused it ([`Origin`]), which decides the status, whether the client connection is
//! closed, and the log level; what the client reads comes from [`ProxyError::client_message`],
//! which never carries internal detail (target addresses, OS errors). The request id is in the
//! body so a client can quote it.
//!
//! Responses are written as HTTP/1.1 bytes ([`ProxyError::write_http1`], [`local_response`]):
//! the connection writes them into its output buffer like any other head.

use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;

/// Who caused an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The client sent something we refuse or cannot route.
    Client,
    /// A bug or an impossible state on our side.
    Internal,
    /// The target, or the service's configuration of its targets.
    Upstream,
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The request's framing is ambiguous or malformed (both Content-Length and
    /// Transfer-Encoding, a bare LF, a bad chunk), detected by the connection's framing guard.
    BadFraming,
    /// The `Host` header is missing, repeated or not a host name.
    BadHost,
    /// The request path has no safe normal form (a dot segment, an encoded separator, a bad
    /// escape; `trellis_model::route::path`).
    BadPath,
    /// The client's request body broke off or was malformed mid-stream.
    ClientBody,
    /// The request head is longer than `ProxyConfig::max_header_bytes`.
    HeadTooLarge,
    /// The target refused the connection, or could not be reached.
    ConnectFailed,
    /// The upstream request could not be built from the client's request.
    Internal,
    /// A target group has registered targets, but none can take requests (all draining or
    /// unreachable in this mode).
    NoAvailableTarget,
    /// No service listens on this port for this host name.
    NoListener,
    /// Cleartext HTTP on a port whose listeners all speak TLS.
    PlainOnTlsPort,
    /// An HTTP/1.1 request for an HTTP2 or GRPC target group.
    NeedsHttp2,
    /// A gRPC request for an HTTP1 target group, or a request other than a POST for a GRPC
    /// one (spec §3.5).
    ProtocolMismatch,
    /// The request head has more header fields than `ProxyConfig::max_headers`.
    TooManyHeaders,
    /// A target group has no registered targets.
    NoTargets,
    /// The target did not start answering within the response timeout.
    Timeout,
    /// The host name is not a service reachable from the client's VPC.
    UnknownHost,
    /// A method this listener cannot serve (CONNECT).
    UnsupportedMethod,
    /// The target broke the connection or answered with something that is not HTTP.
    UpstreamBroken,
}

/// An error the proxy answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProxyError {
    /// What went wrong.
    pub(crate) kind: ErrorKind,
    /// Who caused it.
    pub(crate) origin: Origin,
}

// === impl ErrorKind ===

impl ErrorKind {
    /// The status the client gets.
    /// Access logs' `failureReason` for a request that ended with this error.
    pub(crate) fn failure_reason(self) -> &'static str {
        match self {
            Self::BadFraming | Self::BadPath | Self::ClientBody | Self::HeadTooLarge | Self::TooManyHeaders => {
                "ClientRequestInvalid"
            }
            Self::BadHost | Self::UnknownHost => "UnknownHost",
            Self::ConnectFailed => "TargetConnectionError",
            Self::Internal => "InternalError",
            Self::NoAvailableTarget | Self::NoTargets => "NoHealthyTargets",
            Self::NoListener | Self::PlainOnTlsPort => "NoListener",
            Self::NeedsHttp2 | Self::ProtocolMismatch => "ProtocolMismatch",
            Self::Timeout => "TargetTimeout",
            Self::UnsupportedMethod => "UnsupportedMethod",
            Self::UpstreamBroken => "TargetResponseError",
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::BadFraming
            | Self::BadHost
            | Self::BadPath
            | Self::ClientBody
            | Self::HeadTooLarge
            | Self::TooManyHeaders
            | Self::PlainOnTlsPort
            | Self::NeedsHttp2
            | Self::ProtocolMismatch
            | Self::UnsupportedMethod => StatusCode::BAD_REQUEST,
            Self::UnknownHost | Self::NoListener => StatusCode::NOT_FOUND,
            Self::ConnectFailed | Self::UpstreamBroken => StatusCode::BAD_GATEWAY,
            Self::NoAvailableTarget | Self::NoTargets => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn origin(self) -> Origin {
        match self {
            Self::BadFraming
            | Self::BadHost
            | Self::BadPath
            | Self::ClientBody
            | Self::HeadTooLarge
            | Self::NoListener
            | Self::PlainOnTlsPort
            | Self::NeedsHttp2
            | Self::ProtocolMismatch
            | Self::TooManyHeaders
            | Self::UnknownHost
            | Self::UnsupportedMethod => Origin::Client,
            Self::ConnectFailed | Self::NoAvailableTarget | Self::NoTargets | Self::Timeout | Self::UpstreamBroken => {
                Origin::Upstream
            }
            Self::Internal => Origin::Internal,
        }
    }
}

// === impl ProxyError ===

impl ProxyError {
    /// An error of this kind, with the origin the kind implies.
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self { kind, origin: kind.origin() }
    }

    /// The status the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// What the client reads: why, in a few words, without internal detail.
    pub(crate) fn client_message(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadFraming => "the request's framing is ambiguous or malformed",
            ErrorKind::BadHost => "the request has no valid Host header",
            ErrorKind::BadPath => {
                "the request path has a dot segment, an encoded slash or backslash, a backslash or a bad escape"
            }
            ErrorKind::ClientBody => "the request body is malformed or was cut short",
            ErrorKind::ConnectFailed => "the target refused the connection or could not be reached",
            ErrorKind::HeadTooLarge => "the request head is too large",
            ErrorKind::Internal => "the proxy could not build the request to the target",
            ErrorKind::NoAvailableTarget => "no target of the target group can take requests",
            ErrorKind::NoListener => "the service has no listener on this port",
            ErrorKind::PlainOnTlsPort => "this port speaks TLS only: use https://",
            ErrorKind::NeedsHttp2 => "the target group takes HTTP/2 requests only",
            ErrorKind::ProtocolMismatch => {
                "the target group cannot take this kind of request (gRPC needs a GRPC or \
                                           HTTP2 target group; a GRPC one takes POST only)"
            }
            ErrorKind::NoTargets => "the target group has no registered targets",
            ErrorKind::Timeout => "the target did not answer in time",
            ErrorKind::TooManyHeaders => "the request has too many header fields",
            ErrorKind::UnknownHost => "no service with this host name is reachable from this VPC",
            ErrorKind::UnsupportedMethod => "CONNECT is not supported",
            ErrorKind::UpstreamBroken => "the target closed or broke the connection",
        }
    }

    /// Whether the client connection must close after this answer: after a request we could
    /// not frame or read, the bytes that follow cannot be trusted.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(self.origin, Origin::Client)
            && !matches!(
                self.kind,
                ErrorKind::UnknownHost
                    | ErrorKind::NoListener
                    | ErrorKind::NeedsHttp2
                    | ErrorKind::ProtocolMismatch
                    | ErrorKind::BadPath
            )
    }

    /// The short text body naming the status, the reason and the request id.
    pub(crate) fn text(&self, request_id: &str) -> String {
        let status = self.status();
        format!(
            "{} {}: {}\nrequest id: {request_id}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.client_message()
        )
    }
}

impl ProxyError {
    /// The response, as HTTP/1.1 bytes appended to `out`: the status, a body naming the reason
    /// and the request id, and `connection: close` when the connection closes after it.
    pub(crate) fn write_http1(self, out: &mut Vec<u8>, request_id: &[u8], close: bool, head_only: bool) {
        let status = self.status();
        let body = self.text(std::str::from_utf8(request_id).unwrap_or_default());
        local_response(out, status, body.as_bytes(), request_id, close, head_only);
    }

    /// [`ProxyError::write_http1`] on its own, closing (tests).
    #[cfg(test)]
    pub(crate) fn to_http1(self, request_id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_http1(&mut out, request_id.as_bytes(), true, false);
        out
    }
}

/// A response the proxy makes: `status`, a plain-text `body` (left out for a HEAD, its length
/// kept), the request id, a `date`, and `connection: close` when `close`.
pub(crate) fn local_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    body: &[u8],
    request_id: &[u8],
    close: bool,
    head_only: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"x-amzn-requestid: ");
    out.extend_from_slice(request_id);
    out.extend_from_slice(b"\r\ncontent-length: ");
    crate::headers::write_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\ndate: ");
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if cached.0 != secs {
            *cached = (secs, http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

thread_local! {
    /// The `date` value of the current second.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), in March-based years.
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({:?}): {}", self.kind, self.origin, self.client_message())
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_origins() {
        let table = [
            (ErrorKind::BadFraming, 400, Origin::Client, true),
            (ErrorKind::BadHost, 400, Origin::Client, true),
            (ErrorKind::ClientBody, 400, Origin::Client, true),
            (ErrorKind::HeadTooLarge, 400, Origin::Client, true),
            (ErrorKind::TooManyHeaders, 400, Origin::Client, true),
            (ErrorKind::UnknownHost, 404, Origin::Client, false),
            (ErrorKind::NoListener, 404, Origin::Client, false),
            (ErrorKind::ConnectFailed, 502, Origin::Upstream, false),
            (ErrorKind::UpstreamBroken, 502, Origin::Upstream, false),
            (ErrorKind::NoTargets, 503, Origin::Upstream, false),
            (ErrorKind::NoAvailableTarget, 503, Origin::Upstream, false),
            (ErrorKind::Timeout, 504, Origin::Upstream, false),
            (ErrorKind::Internal, 500, Origin::Internal, false),
        ];
        for (kind, status, origin, closes) in table {
            let e = ProxyError::new(kind);
            assert_eq!((e.status().as_u16(), e.origin, e.closes_connection()), (status, origin, closes), "{kind:?}");
        }
    }

    #[test]
    fn response_names_reason_and_request_id() {
        let mut out = Vec::new();
        ProxyError::new(ErrorKind::NoTargets).write_http1(&mut out, b"abc-123", false, false);
        let text = std::str::from_utf8(&out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        assert!(body.starts_with("503 Service Unavailable: the target group has no registered targets"), "{body}");
        assert!(body.contains("request id: abc-123"), "{body}");
        // A HEAD gets the head alone, with the length of the body it would have had.
        let mut head_only = Vec::new();
        ProxyError::new(ErrorKind::NoTargets).write_http1(&mut head_only, b"abc-123", false, true);
        assert_eq!(head_only.len(), out.len() - body.len());
    }

    #[test]
    fn http1_bytes_match_the_response() {
        let raw = ProxyError::new(ErrorKind::HeadTooLarge).to_http1("abc-123");
        let text = std::str::from_utf8(&raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        for line in ["connection: close", "x-amzn-requestid: abc-123", &format!("content-length: {}", body.len())] {
            assert!(head.split("\r\n").any(|l| l == line), "{line} in {head}");
        }
        assert_eq!(body, "400 Bad Request: the request head is too large\nrequest id: abc-123\n");
    }

    #[test]
    fn http_dates() {
        let at = |secs| http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
    }
}
