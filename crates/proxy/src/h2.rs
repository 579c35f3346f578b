//! HTTP/2 from clients: HTTPS connections that chose `h2` by ALPN. The proxy's own HTTP/2
//! serves the connection (`server`, over `http2::conn`: frames, flow control, streams, all in
//! the connection's task); every request goes through the same phases as on HTTP/1.1
//! (`request::locate`, the listener's rules, `request::select`) and on to a target:
//!
//! - HTTP1 target groups: down to HTTP/1.1, on a connection of the same pools as the HTTP/1.1
//!   path, handed back once the response has been read to its end;
//! - HTTP2 and GRPC target groups: multiplexed on one HTTP/2 connection per target (prior
//!   knowledge in cleartext, ALPN `h2` over TLS), bodies streamed both ways with their trailers;
//!   a client's RST_STREAM (a gRPC cancellation or deadline) resets the target's stream.
//!
//! Spec §3.5's protocol matrix: gRPC (`content-type: application/grpc…`) for an HTTP1 group, or
//! anything but a POST for a GRPC group, is a 400. Headers change as on HTTP/1.1 (`headers`):
//! hop-by-hop fields and incoming `x-amzn-lattice-*` go; `x-forwarded-*`,
//! `x-amzn-lattice-network`, `x-amzn-lattice-target` and `x-amzn-requestid` are added.
//!
//! Clocks: a target must send its response head within the response timeout (504). The
//! connection closes gracefully (GOAWAY, streams in progress finish within the drain grace)
//! once no stream has been open for the idle timeout of the service last used, at the maximum
//! connection age, or when its listener closes.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version as HttpVersion};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::time::Instant;
use trellis_model::route::HeaderLookup;
use trellis_model::snapshot::{Action, ListenerView};

use crate::ProxyConfig;
use crate::access_log::{Entry, Part, RequestText};
use crate::balance::{Group, Version};
use crate::conn::record::millis;
use crate::conn::{Conn, DRAIN_GRACE};
use crate::error::{ErrorKind, ProxyError};
use crate::forward::{InFlightGuard, Pool};
use crate::http2::conn::Head;
use crate::request::{self, LastHost, Located};
use crate::table::{ReachRoute, RouteObs, Routes, VpcRoute};
use crate::tls::ClientStream;

/// How many tries a request gets when targets refuse connections.
const CONNECT_TRIES: usize = 3;
/// Most streams a client may have open at once.
const MAX_STREAMS: u32 = 256;

/// What a request sends a target: the client's body, or nothing (which can be sent again).
pub(crate) type UpBody = Either<ReqBody, Empty<Bytes>>;

pub(crate) use server::ReqBody;

/// What every stream of one connection shares.
struct Ctx {
    conn: Arc<Conn>,
    routes: watch::Receiver<Arc<Routes>>,
    config: Arc<ProxyConfig>,
    activity: Arc<Activity>,
    /// The host the connection's last request named (its streams' futures share the
    /// connection's task: the lock is never contended).
    last_host: Mutex<LastHost>,
    /// The response deadlines of the streams waiting for a target's answer.
    deadlines: Deadlines,
    /// Buffers of HTTP/1.1 heads sent, for the next ones (a connection's streams end in
    /// bursts, and a burst of frees overflows the allocator's per-thread cache, whose next
    /// allocations then cost several times as much).
    spare_heads: Mutex<Vec<Vec<u8>>>,
}

/// HTTP/1.1 head buffers a connection keeps for reuse, at most.
const SPARE_HEADS: usize = 16;

/// A head buffer kept for reuse only while it is this small.
const SPARE_HEAD_BYTES: usize = 16 * 1024;

/// An HTTP/1.1 head being sent: its buffer goes back to the connection's spares when dropped.
struct SpareHead<'c> {
    buf: Vec<u8>,
    ctx: &'c Ctx,
}

/// Response deadlines, kept by the connection rather than by a timer each: a stream waiting
/// for its answer says when it gives up (`arm`), the connection's one timer wakes at the
/// earliest such time and wakes every stream (`expire`), and a stream past its deadline ends
/// with a 504. A timer of its own (`tokio::time::timeout`) cost each request ~1,000
/// instructions to register, poll and remove; a deadline looked at this way costs two atomic
/// loads. Times are whole milliseconds after `base`, deadlines rounded up.
struct Deadlines {
    base: Instant,
    /// The earliest deadline armed since the last expiry (`u64::MAX`: none).
    earliest: AtomicU64,
    /// Deadlines up to this one have passed.
    passed: AtomicU64,
}

/// When a connection was last busy, for its idle clock.
struct Activity {
    start: Instant,
    /// Streams whose response has not ended.
    open: AtomicUsize,
    /// When the last stream ended, in milliseconds after `start`.
    last_ms: AtomicU64,
    /// The idle timeout of the service last used (the header read timeout before any).
    idle_ms: AtomicU64,
}

/// One open stream, for [`Activity`]; ends when dropped.
struct Busy(Arc<Activity>);

/// A response body: one the proxy made, or the target's, streamed (its end releases the
/// target's in-flight count and the stream's hold on the connection's idle clock).
enum RespBody {
    /// Made here.
    Local(Option<Bytes>),
    /// An HTTP/1.1 target's, read here (`down`).
    Down {
        body: down::H1Body,
        /// Held until the body ends.
        _held: (InFlightGuard, Busy),
    },
    /// An HTTP/2 target's, through the proxy's own client.
    H2 {
        body: client::UpstreamBody,
        /// The `x-amzn-requestid` it goes with.
        request_id: [u8; 36],
        /// Held until the body ends.
        _held: (InFlightGuard, Busy),
    },
    /// An HTTP/1.1 target's, through hyper's client.
    Upstream {
        /// The body.
        body: Incoming,
        /// Held until the body ends.
        _held: (InFlightGuard, Busy, GiveBack),
    },
}

/// A request's fields as rules read them.
struct Lookup<'a>(&'a Head);

/// A client's request: its checked head, and its body.
pub(crate) struct Req {
    pub(crate) head: Head,
    pub(crate) body: ReqBody,
}

/// `traceparent` (W3C Trace Context).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What a stream learned on its way, for metrics and access logs.
#[derive(Default)]
struct Note {
    /// The counters and log destinations of the service as the VPC reaches it.
    obs: Option<Arc<RouteObs>>,
    /// The target group it went to (an index into `obs.groups`).
    group: Option<usize>,
    /// Its access log record, if a subscription applies (boxed: it is most of a note's size,
    /// and a note is in every request's future).
    entry: Option<Box<Entry>>,
    /// Which auth layer denied it.
    denied: Option<&'static str>,
    target: Option<std::net::SocketAddr>,
    /// When the request went to the target.
    sent: Option<Instant>,
    /// When the target's response head arrived.
    answered: Option<Instant>,
}

/// Serves one HTTP/2 client connection until it closes, idles out, ages out, or `closing` asks
/// it to finish.
pub(crate) async fn serve(
    client: ClientStream,
    conn: Conn,
    routes: watch::Receiver<Arc<Routes>>,
    config: Arc<ProxyConfig>,
    closing: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let activity = Arc::new(Activity {
        start,
        open: AtomicUsize::new(0),
        last_ms: AtomicU64::new(0),
        idle_ms: AtomicU64::new(millis(config.header_read_timeout)),
    });
    let vpc = conn.vpc.clone();
    // Counted as active on the service its TLS server name routed to, until it closes.
    let _active = conn.service_stats.as_ref().map(crate::metrics::RouteStats::connected);
    let ctx = Arc::new(Ctx {
        conn: Arc::new(conn),
        routes,
        config: config.clone(),
        activity: activity.clone(),
        last_host: Mutex::default(),
        deadlines: Deadlines::new(start),
        spare_heads: Mutex::default(),
    });
    let clock = ctx.clone();
    let handler = move |req: Req| -> server::Handling { Box::pin(handle(req, ctx.clone())) };
    let settings = crate::http2::conn::Config {
        max_concurrent_streams: MAX_STREAMS,
        max_header_list_size: u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX),
        ..crate::http2::conn::Config::default()
    };
    let mut driver = server::Driver::new(client, settings, &handler);
    let max_age_at = start + config.max_connection_age;
    let mut drain_until: Option<Instant> = None;
    let sleep = tokio::time::sleep_until(activity.idle_at().min(max_age_at));
    tokio::pin!(sleep);
    let mut closing = crate::conn::Closing::new(closing);
    std::future::poll_fn(|cx| {
        loop {
            if driver.poll_drive(cx).is_ready() {
                return Poll::Ready(());
            }
            if drain_until.is_none() && closing.poll(cx).is_ready() {
                driver.go_away();
                drain_until = Some(Instant::now() + DRAIN_GRACE);
                sleep.as_mut().reset(Instant::now() + DRAIN_GRACE);
                continue;
            }
            // A stream's response deadline before the timer's: the timer wakes for it.
            if let Some(at) = clock.deadlines.next()
                && at < sleep.deadline()
            {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if clock.deadlines.expire(now) {
                driver.wake_all();
            }
            match drain_until {
                // Streams still open after the grace are cut.
                Some(until) if now >= until => {
                    tracing::debug!(%vpc, streams = driver.streams(), "HTTP/2 connection cut after its drain grace");
                    return Poll::Ready(());
                }
                Some(until) => sleep.as_mut().reset(until),
                None if now >= max_age_at || activity.idle_at() <= now => {
                    driver.go_away();
                    drain_until = Some(now + DRAIN_GRACE);
                    sleep.as_mut().reset(now + DRAIN_GRACE);
                }
                None => sleep.as_mut().reset(activity.idle_at().min(max_age_at)),
            }
        }
    })
    .await;
}

/// One request: the target's response, or the proxy's own; counted, and logged if a
/// subscription applies.
async fn handle(req: Req, ctx: Arc<Ctx>) -> Response<RespBody> {
    let ctx = &*ctx;
    let started = Instant::now();
    let request_id = crate::headers::request_id();
    let busy = Busy::start(ctx.activity.clone());
    let received = req.body.size_hint().exact().unwrap_or(0);
    let mut note = Note::default();
    let routes = ctx.routes.borrow().clone();
    let (response, failure) = match forward(req, ctx, &routes, &request_id, busy, &mut note).await {
        Ok(response) => (response, None),
        Err(e) => {
            match e.origin {
                crate::error::Origin::Internal => tracing::warn!(error = %e, "HTTP/2 request failed"),
                _ => tracing::debug!(error = %e, "HTTP/2 request refused"),
            }
            let text = Bytes::from(e.text(std::str::from_utf8(&request_id).unwrap_or_default()));
            (local(e.status(), text, &request_id), Some(e.kind.failure_reason()))
        }
    };
    note.finish(ctx, started, &response, failure, received);
    response
}

/// What [`forward`] gives: the exchange with a target, or the proxy's own answer.
type Forwarding<'a> = Pin<Box<dyn Future<Output = Result<Response<RespBody>, ProxyError>> + Send + 'a>>;

/// The phases (plain work: their locals are not kept across the exchange), then the exchange
/// with a target, boxed on its own. Only the exchange that goes is in the box, and the request's
/// own future holds just the box: each stays under the size glibc's per-thread cache serves
/// quickly (1032 bytes; a larger block costs several times as much to allocate and free).
fn forward<'a>(
    req: Req,
    ctx: &'a Ctx,
    routes: &'a Routes,
    request_id: &'a [u8; 36],
    busy: Busy,
    note: &'a mut Note,
) -> Forwarding<'a> {
    let Req { head, body } = req;
    match prepare(head, body.is_end_stream(), ctx, routes, request_id, note) {
        Ok(Prepared::Up(group, upstream)) => Box::pin(exchange_up(group, upstream, body, ctx, request_id, busy, note)),
        Ok(Prepared::Down { group, head, is_head, idempotent }) => {
            Box::pin(exchange_down(group, head, is_head, idempotent, ctx, request_id, busy, note))
        }
        Ok(Prepared::Local(response)) => Box::pin(std::future::ready(Ok(response))),
        Err(e) => Box::pin(std::future::ready(Err(e))),
    }
}

/// No body, to an HTTP1 group: written and read here (`down`).
#[allow(clippy::too_many_arguments)]
async fn exchange_down(
    group: &Group,
    head: Vec<u8>,
    is_head: bool,
    idempotent: bool,
    ctx: &Ctx,
    request_id: &[u8; 36],
    busy: Busy,
    note: &mut Note,
) -> Result<Response<RespBody>, ProxyError> {
    // Given back to the connection however the exchange ends.
    let head = SpareHead { buf: head, ctx };
    let head = &head.buf;
    let mut tries = 0;
    let (response, guard) = loop {
        tries += 1;
        let target = group.pick().map_err(ProxyError::new)?;
        let guard = InFlightGuard::new(&target.in_flight);
        note.target = Some(target.pool.addr());
        let sent = Instant::now();
        note.sent = Some(sent);
        let deadline = sent + ctx.config.response_timeout;
        let exchange = std::pin::pin!(down::send(&target.pool, head, is_head, idempotent, request_id));
        match ctx.deadlines.within(deadline, exchange).await {
            Ok(response) => {
                note.answered = Some(Instant::now());
                break (response, guard);
            }
            Err(Sent::NotConnected(_)) if tries < CONNECT_TRIES => {}
            Err(Sent::NotConnected(kind) | Sent::Failed(kind)) => return Err(ProxyError::new(kind)),
        }
    };
    // The request id is among the target's fields the body carries.
    let (mut parts, body) = response.into_parts();
    parts.version = HttpVersion::HTTP_2;
    Ok(Response::from_parts(parts, RespBody::Down { body, _held: (guard, busy) }))
}

/// Where [`prepare`] sends a request.
// Only ever on the stack, from `prepare` to `forward`: its size is not kept anywhere.
#[allow(clippy::large_enum_variant)]
enum Prepared<'r> {
    /// The proxy answers it (a fixed response, a denial).
    Local(Response<RespBody>),
    /// To an HTTP1 group without a body, as this HTTP/1.1 head (`is_head`: its method is
    /// HEAD; `idempotent`: it may go to the next target when the first broke).
    Down { group: &'r Group, head: Vec<u8>, is_head: bool, idempotent: bool },
    /// To this target group, as this.
    Up(&'r Group, Upstream),
}

/// The phases of a request (`no_body`: its body is empty): its route, auth policies, the
/// rule, the target group, and what goes up to it.
fn prepare<'r>(
    head: Head,
    no_body: bool,
    ctx: &'r Ctx,
    routes: &'r Routes,
    request_id: &[u8; 36],
    note: &mut Note,
) -> Result<Prepared<'r>, ProxyError> {
    let grpc = is_grpc(&head);
    // The connection checked it is a token, which is ASCII.
    let method =
        std::str::from_utf8(head.method().unwrap_or(b"GET")).map_err(|_| ProxyError::new(ErrorKind::BadFraming))?;
    // Host: the :authority, else the Host field.
    let raw = head.authority().or_else(|| head.get(b"host")).ok_or(ProxyError::new(ErrorKind::BadHost))?;
    // Route.
    let Located { vpc, reach, listener, port } = locate(ctx, routes, raw)?;
    note.begin(ctx, vpc, reach, listener, &head, request_id);
    // The connection checked the path is visible ASCII.
    let full = std::str::from_utf8(head.path().unwrap_or(b"/")).map_err(|_| ProxyError::new(ErrorKind::BadPath))?;
    let (raw_path, query) = full.split_once('?').unwrap_or((full, ""));
    // Auth policies, before the rules (spec §3.1), on the normal form of the path, which is
    // also what the target gets.
    let path = trellis_model::route::path::normalize(raw_path).map_err(|_| ProxyError::new(ErrorKind::BadPath))?;
    let mut identity = None;
    if let Some(auth) = &reach.auth {
        // HTTP/2 carries the host in `:authority`; signatures name it `host`.
        let authority = head.authority();
        let header = |name: &str, each: &mut dyn FnMut(&[u8])| {
            let mut values = 0;
            for value in head.get_all(name.as_bytes()) {
                values += 1;
                each(value);
            }
            if let (0, "host", Some(authority)) = (values, name, authority) {
                each(authority);
            }
        };
        let fields = head.fields().map(|(name, value, _)| (name, value));
        let facts = crate::auth::Facts {
            method,
            path: &path,
            query,
            header: &header,
            signature: crate::auth::SignatureHeaders::find(fields),
            port: listener.port,
            source_vpc: &ctx.conn.vpc,
            source_vpc_account: &vpc.account,
            client_ip: ctx.conn.peer,
        };
        match auth.check(&facts, &routes.identities, crate::auth::now()) {
            Ok(caller) => identity = caller,
            Err(denied) => {
                note.denied = Some(request::denied_layer(&denied));
                let message = auth.message(&denied, &path);
                tracing::debug!(%message, "request denied by an auth policy");
                return Ok(Prepared::Local(local(StatusCode::FORBIDDEN, Bytes::from(message), request_id)));
            }
        }
    }
    // Rule.
    let action = trellis_model::route::find(listener, method, &path, &Lookup(&head));
    let groups = match action {
        Action::Fixed(status) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = Bytes::from_static(status.canonical_reason().unwrap_or("").as_bytes());
            return Ok(Prepared::Local(local(status, body, request_id)));
        }
        Action::Forward(groups) => groups,
    };
    // Select, and the protocol matrix.
    if let Some(entry) = &mut note.entry {
        crate::conn::record::caller(entry, identity.as_ref());
    }
    let (group, target_header, obs) = request::select(routes, reach, groups)?;
    note.group = Some(obs.index);
    match group.version {
        Version::Http1 if grpc => return Err(ProxyError::new(ErrorKind::ProtocolMismatch)),
        Version::Grpc if method != "POST" => return Err(ProxyError::new(ErrorKind::ProtocolMismatch)),
        _ => {}
    }
    ctx.activity.idle_ms.store(millis(reach.service.idle_timeout), Ordering::Relaxed);
    let identity = identity.as_deref().map(crate::auth::identity_header);
    let added = Added {
        identity: identity.as_deref(),
        client_ip: &ctx.conn.client_ip,
        port,
        network: &vpc.network,
        target: target_header,
        request_id,
    };
    // What the target is asked for: the normal form of the path, and the query as sent.
    let target: Cow<'_, str> = match &path {
        Cow::Borrowed(_) => Cow::Borrowed(full),
        Cow::Owned(normal) if !full.contains('?') => Cow::Borrowed(normal.as_str()),
        Cow::Owned(normal) => Cow::Owned(format!("{normal}?{query}")),
    };
    let h2 = group.version != Version::Http1;
    // A request without a valid `traceparent` starts a trace here.
    let traced = {
        let mut client_traces = head.get_all(b"traceparent");
        match (client_traces.next(), client_traces.next()) {
            (Some(v), None) => crate::headers::valid_traceparent(v),
            _ => false,
        }
    };
    let trace = (!traced).then(crate::headers::new_traceparent);
    if let (Some(trace), Some(entry)) = (&trace, &mut note.entry) {
        entry.request.set(Part::Traceparent, trace);
    }
    let trace = trace.as_ref().map(|t| &t[..]);
    Ok(if !h2 && no_body {
        let idempotent = matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE");
        let spare = ctx.spare_heads.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
        let head = h1_head(spare, method, &head, &target, raw, &added, trace);
        Prepared::Down { group, head, is_head: method == "HEAD", idempotent }
    } else if h2 {
        Prepared::Up(group, Upstream::H2(h2_fields(method, &head, &target, raw, group.tls, &added, trace)))
    } else {
        Prepared::Up(group, Upstream::H1(Box::new(h1_parts(method, &head, &target, raw, &added, trace)?)))
    })
}

/// A request to an HTTP2 or GRPC group, or with a body to an HTTP1 group (hyper's client).
async fn exchange_up(
    group: &Group,
    mut upstream: Upstream,
    body: ReqBody,
    ctx: &Ctx,
    request_id: &[u8; 36],
    busy: Busy,
    note: &mut Note,
) -> Result<Response<RespBody>, ProxyError> {
    let mut body = if body.is_end_stream() { Either::Right(Empty::new()) } else { Either::Left(body) };
    let resend = matches!(body, Either::Right(_));
    // A target that refuses the connection is replaced by the next (the request was not sent).
    let mut tries = 0;
    let (response, guard) = loop {
        tries += 1;
        // The head is copied only for a request that may go again.
        let last = !resend || tries >= CONNECT_TRIES;
        let up = if last { std::mem::replace(&mut upstream, Upstream::Gone) } else { upstream.clone() };
        let target = group.pick().map_err(ProxyError::new)?;
        let pool = target.pool.clone();
        let guard = InFlightGuard::new(&target.in_flight);
        note.target = Some(pool.addr());
        let sent_at = Instant::now();
        note.sent = Some(sent_at);
        let body = std::mem::replace(&mut body, Either::Right(Empty::new()));
        let sent = match up {
            Upstream::H2(fields) => {
                let deadline = sent_at + ctx.config.response_timeout;
                send_h2(&pool, fields, body, &ctx.deadlines, deadline).await.map(|r| r.map(Answer::H2))
            }
            // Boxed: hyper's exchange is large, and in this future it would make every
            // request's larger.
            Upstream::H1(parts) => {
                Box::pin(send_h1(&pool, Request::from_parts(*parts, body), ctx.config.response_timeout))
                    .await
                    .map(|(r, give_back)| r.map(|body| Answer::H1(body, give_back)))
            }
            Upstream::Gone => return Err(ProxyError::new(ErrorKind::Internal)),
        };
        match sent {
            Ok(response) => {
                note.answered = Some(Instant::now());
                break (response, guard);
            }
            Err(Sent::NotConnected(_)) if tries < CONNECT_TRIES && resend => {}
            Err(Sent::NotConnected(kind) | Sent::Failed(kind)) => return Err(ProxyError::new(kind)),
        }
    };
    let (mut parts, answer) = response.into_parts();
    parts.version = HttpVersion::HTTP_2;
    let body = match answer {
        Answer::H1(body, give_back) => {
            strip_hop_by_hop(&mut parts.headers);
            parts.headers.insert(X_AMZN_REQUESTID, request_id_value(request_id));
            RespBody::Upstream { body, _held: (guard, busy, give_back) }
        }
        // Its fields and the request id are in the body (`RespBody::target_fields`).
        Answer::H2(body) => RespBody::H2 { body, request_id: *request_id, _held: (guard, busy) },
    };
    Ok(Response::from_parts(parts, body))
}

/// A request as it goes to a target.
#[derive(Clone)]
enum Upstream {
    /// HTTP/2 fields (HTTP2 and GRPC target groups).
    H2(client::Fields),
    /// An HTTP/1.1 head, for hyper's client (boxed: it is four times the size of the
    /// other, and the exchange's future holds two).
    H1(Box<http::request::Parts>),
    /// Sent, and not to be sent again.
    Gone,
}

/// How far [`pump_body`] got.
enum Pumped {
    /// The stream's windows are full: `pending` waits for them to open.
    Blocked,
    /// The body has nothing more yet (it wakes the context's task when it has).
    Waiting,
    /// All of it went, with its end; or the stream is gone.
    Done,
    /// The body broke off: the caller resets the stream, with the reason its side gives.
    Failed,
}

/// A body's data waiting to be read, in order. Most bodies come as one piece, which is kept
/// without the queue's allocation.
#[derive(Default)]
pub(crate) struct Chunks {
    /// Before all of `rest`.
    first: Option<Bytes>,
    rest: std::collections::VecDeque<Bytes>,
}

impl Chunks {
    pub(crate) fn push_back(&mut self, chunk: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    /// Empties it; the bytes it held.
    pub(crate) fn clear(&mut self) -> usize {
        let first = self.first.take().map_or(0, |c| c.len());
        first + self.rest.drain(..).map(|c| c.len()).sum::<usize>()
    }
}

/// A piece of a body as [`pump_body`] takes it: a frame, or trailers as the HTTP/2 fields they
/// came as (from a target's HTTP/2 connection to a client's, they need no `HeaderMap`).
pub(crate) enum Piece {
    Frame(Frame<Bytes>),
    Fields(Head),
}

/// A body [`pump_body`] can move: its frames, or its pieces where it has its trailers as fields.
pub(crate) trait Pieces: Body<Data = Bytes> + Unpin {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piece, Self::Error>>> {
        Pin::new(self).poll_frame(cx).map_ok(Piece::Frame)
    }
}

impl Pieces for UpBody {}

impl Pieces for RespBody {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piece, Self::Error>>> {
        match self {
            Self::H2 { body, .. } => body.poll_piece(cx).map_err(Into::into),
            _ => Pin::new(self).poll_frame(cx).map_ok(Piece::Frame),
        }
    }
}

/// Moves a body onto an HTTP/2 stream as far as it goes now: what it has ready, as the peer's
/// windows allow (what they hold back stays in `pending`), its trailers, its end. Both ends use
/// it: the server for responses, the client for requests.
fn pump_body<B>(
    conn: &mut crate::http2::conn::Connection,
    stream: u32,
    body: &mut B,
    pending: &mut Bytes,
    cx: &mut Context<'_>,
) -> Pumped
where
    B: Pieces,
    B::Error: std::fmt::Display,
{
    loop {
        if !pending.is_empty() {
            let end = body.is_end_stream();
            let Some(sent) = conn.send_data(stream, pending, end) else { return Pumped::Done };
            pending.advance(sent);
            if !pending.is_empty() {
                return Pumped::Blocked;
            }
            if end {
                return Pumped::Done;
            }
        }
        let frame = match body.poll_piece(cx) {
            Poll::Pending => return Pumped::Waiting,
            Poll::Ready(None) => {
                conn.send_data(stream, &[], true);
                return Pumped::Done;
            }
            Poll::Ready(Some(Ok(Piece::Frame(frame)))) => frame,
            Poll::Ready(Some(Ok(Piece::Fields(trailers)))) => {
                conn.send_headers(stream, trailers.fields(), true);
                return Pumped::Done;
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(stream, error = %e, "a body broke off");
                return Pumped::Failed;
            }
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {
                if body.is_end_stream() {
                    conn.send_data(stream, &[], true);
                    return Pumped::Done;
                }
            }
            Ok(data) => *pending = data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let fields = trailers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes(), false));
                    conn.send_headers(stream, fields, true);
                }
                return Pumped::Done;
            }
        }
    }
}

/// A target's response body: from an HTTP/1.1 connection driven by hyper (given back to its
/// pool when the body ends), or from the target's HTTP/2 connection.
enum Answer {
    H1(Incoming, GiveBack),
    H2(client::UpstreamBody),
}

// === impl Note ===

impl Note {
    /// The request was routed to a service: counters, and the record if one is kept.
    fn begin(
        &mut self,
        ctx: &Ctx,
        vpc: &VpcRoute,
        reach: &ReachRoute,
        listener: &ListenerView,
        head: &Head,
        request_id: &[u8; 36],
    ) {
        self.obs = Some(reach.obs.clone());
        let Some(route) = &reach.obs.log else { return };
        let path = head.path().unwrap_or(b"/");
        let host = head.authority().or_else(|| head.get(b"host"));
        let user_agent = head.get(b"user-agent");
        let mut traces = head.get_all(b"traceparent");
        let traceparent = match (traces.next(), traces.next()) {
            (Some(t), None) if crate::headers::valid_traceparent(t) => Some(t),
            _ => None,
        };
        let method = head.method().unwrap_or(b"GET");
        let len = [host, user_agent, traceparent].iter().flatten().map(|v| v.len()).sum::<usize>();
        // Room for the `traceparent` the proxy may start for the request, too.
        let mut text = RequestText::with_capacity(method.len() + path.len() + len + crate::headers::TRACEPARENT_LEN);
        text.set(Part::Method, method);
        text.set(Part::Path, path);
        for (part, value) in [(Part::Host, host), (Part::UserAgent, user_agent), (Part::Traceparent, traceparent)] {
            if let Some(value) = value {
                text.set(part, value);
            }
        }
        let facts = ("HTTP/2.0", text);
        self.entry =
            Some(Box::new(crate::conn::record::begin(&ctx.conn, vpc, route, Some(listener), facts, request_id)));
    }

    /// Counts the stream's answer and sends its record.
    fn finish(
        self,
        ctx: &Ctx,
        started: Instant,
        response: &Response<RespBody>,
        failure: Option<&'static str>,
        received: u64,
    ) {
        let Some(obs) = self.obs else { return };
        // The response head is what ends the request's clock: when it came from a target,
        // that instant (read already) serves.
        let now = self.answered.unwrap_or_else(Instant::now);
        let elapsed = now.saturating_duration_since(started);
        let status = response.status().as_u16();
        let group = self.group.and_then(|i| obs.groups.get(i));
        group.map_or(&obs.stats, |g| &g.stats).request(status, elapsed);
        if self.denied.is_some() {
            obs.stats.auth_denied();
        }
        if let (Some(g), Some(sent), Some(answered)) = (group, self.sent, self.answered) {
            g.stats.target_time(answered.saturating_duration_since(sent));
        }
        let (Some(route), Some(mut e)) = (&obs.log, self.entry) else { return };
        let failure = match (failure, self.denied) {
            (Some(f), _) => f,
            (None, Some(_)) => "ClientAccessDenied",
            (None, None) => "-",
        };
        let outcome = crate::conn::record::Outcome {
            status,
            failure,
            denied: self.denied.unwrap_or("-"),
            group,
            target: self.target,
            bytes: (received, response.body().size_hint().exact().unwrap_or(0)),
            started,
            sent: self.sent,
            ended: now,
        };
        crate::conn::record::finish(&mut e, outcome);
        ctx.conn.telemetry.log.send(route, &e, &ctx.conn.telemetry.process);
    }
}

/// Why an exchange gave no response.
enum Sent {
    /// No connection to the target (the request never left).
    NotConnected(ErrorKind),
    /// The target broke the exchange or did not answer in time.
    Failed(ErrorKind),
}

/// HTTP/2 to the target, on its shared connection; its response head by `deadline`.
async fn send_h2(
    pool: &Arc<Pool>,
    head: client::Fields,
    body: UpBody,
    deadlines: &Deadlines,
    deadline: Instant,
) -> Result<Response<client::UpstreamBody>, Sent> {
    // Connecting is rare and its future large: boxed, so that every request's future stays
    // small.
    let client = match pool.h2_open() {
        Some(client) => client,
        None => Box::pin(pool.h2()).await.map_err(Sent::NotConnected)?,
    };
    let failed = |failure| match failure {
        client::Failure::Refused => Sent::NotConnected(ErrorKind::ConnectFailed),
        client::Failure::Broken => Sent::Failed(ErrorKind::UpstreamBroken),
    };
    let sending = client.send(head, body);
    drop(client);
    let answer = std::pin::pin!(async { sending.await.map_err(failed)?.await.map_err(failed) });
    deadlines.within(deadline, answer).await
}

/// HTTP/1.1 to the target, on a kept-alive connection of the pool (its sender goes back when the
/// response body ends: [`GiveBack`]).
async fn send_h1(
    pool: &Arc<Pool>,
    req: Request<UpBody>,
    timeout: Duration,
) -> Result<(Response<Incoming>, GiveBack), Sent> {
    let mut sender = match pool.take_h1() {
        Some(sender) => sender,
        // Boxed: see `send_h2`.
        None => Box::pin(new_h1(pool)).await?,
    };
    let response = exchange(sender.send_request(req), timeout).await?;
    Ok((response, GiveBack(Some((pool.clone(), sender)))))
}

/// A new HTTP/1.1 connection to the pool's target, driven by its own task.
async fn new_h1(pool: &Arc<Pool>) -> Result<crate::forward::H1Sender, Sent> {
    let stream = match pool.take() {
        Some(stream) => stream,
        None => pool.connect().await.map_err(Sent::NotConnected)?,
    };
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Sent::NotConnected(ErrorKind::ConnectFailed))?;
    // Runs while a sender is kept, until the target closes or the pool lets it go.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Gives an HTTP/1.1 sender back to its pool when dropped (with the response body).
struct GiveBack(Option<(Arc<Pool>, crate::forward::H1Sender)>);

impl Drop for GiveBack {
    fn drop(&mut self) {
        if let Some((pool, sender)) = self.0.take() {
            pool.put_h1(sender);
        }
    }
}

/// Waits for the target's response head, at most `timeout`.
async fn exchange(
    sent: impl Future<Output = hyper::Result<Response<Incoming>>>,
    timeout: Duration,
) -> Result<Response<Incoming>, Sent> {
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "target broke the exchange");
            Err(Sent::Failed(ErrorKind::UpstreamBroken))
        }
        Err(_) => Err(Sent::Failed(ErrorKind::Timeout)),
    }
}

/// What the proxy adds to a request.
struct Added<'a> {
    identity: Option<&'a str>,
    client_ip: &'a [u8],
    port: &'a [u8],
    network: &'a crate::headers::AddedField,
    target: &'a crate::headers::AddedField,
    request_id: &'a [u8],
}

const X_AMZN_REQUESTID: HeaderName = HeaderName::from_static("x-amzn-requestid");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The HTTP/1.1 head a request with a body goes up with, for hyper's client: origin form,
/// `Host`, the client's fields but those of the connection and `x-amzn-lattice-*` (cookies
/// joined into one, RFC 9113 §8.2.3), the proxy's fields, and `trace` as `traceparent` when
/// the proxy started the trace.
fn h1_parts(
    method: &str,
    head: &Head,
    target: &str,
    authority: &[u8],
    added: &Added<'_>,
    trace: Option<&[u8]>,
) -> Result<http::request::Parts, ProxyError> {
    let bad = |_| ProxyError::new(ErrorKind::Internal);
    let (mut parts, ()) = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).map_err(|_| ProxyError::new(ErrorKind::BadFraming))?)
        .uri(PathAndQuery::try_from(target).map_err(|_| ProxyError::new(ErrorKind::BadPath))?)
        .version(HttpVersion::HTTP_11)
        .body(())
        .map_err(|_| ProxyError::new(ErrorKind::BadFraming))?
        .into_parts();
    let h = &mut parts.headers;
    h.insert(HOST, HeaderValue::from_bytes(authority).map_err(|_| ProxyError::new(ErrorKind::BadHost))?);
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut cookies: Option<Vec<u8>> = None;
    for (name, value, _) in head.fields() {
        match name {
            b"cookie" => join_value(&mut cookies, value, b"; "),
            b"x-forwarded-for" => join_value(&mut forwarded_for, value, b", "),
            b"traceparent" if trace.is_some() => {}
            _ if is_hop_by_hop(name) || replaced_by_proxy(name) => {}
            _ => {
                let name = HeaderName::from_bytes(name).map_err(|_| ProxyError::new(ErrorKind::BadFraming))?;
                h.append(name, HeaderValue::from_bytes(value).map_err(|_| ProxyError::new(ErrorKind::BadFraming))?);
            }
        }
    }
    if let Some(cookies) = cookies {
        h.insert(http::header::COOKIE, HeaderValue::from_bytes(&cookies).map_err(bad)?);
    }
    join_value(&mut forwarded_for, added.client_ip, b", ");
    h.insert(X_FORWARDED_FOR, HeaderValue::from_bytes(&forwarded_for.unwrap_or_default()).map_err(bad)?);
    h.insert(HeaderName::from_static("x-forwarded-port"), HeaderValue::from_bytes(added.port).map_err(bad)?);
    h.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("https"));
    h.insert(
        HeaderName::from_static("x-amzn-lattice-network"),
        HeaderValue::from_bytes(added.network.value()).map_err(bad)?,
    );
    h.insert(
        HeaderName::from_static("x-amzn-lattice-target"),
        HeaderValue::from_bytes(added.target.value()).map_err(bad)?,
    );
    h.insert(X_AMZN_REQUESTID, request_id_value(added.request_id));
    if let Some(identity) = added.identity {
        h.insert(HeaderName::from_static("x-amzn-lattice-identity"), HeaderValue::from_str(identity).map_err(bad)?);
    }
    if let Some(trace) = trace {
        let mut value = HeaderValue::from_bytes(trace).map_err(bad)?;
        // New on every request, like the request id: never indexed.
        value.set_sensitive(true);
        h.insert(TRACEPARENT, value);
    }
    Ok(parts)
}

/// The HTTP/2 fields a request goes up with (HTTP2 and GRPC target groups): the pseudo-fields
/// (`tls`: the target's connection speaks TLS), the client's fields but those of the
/// connection and `x-amzn-lattice-*` (`te: trailers` kept, which gRPC needs; cookies may stay
/// split on HTTP/2), then the proxy's fields; the ones new on every request never indexed.
fn h2_fields(
    method: &str,
    head: &Head,
    target: &str,
    authority: &[u8],
    tls: bool,
    added: &Added<'_>,
    trace: Option<&[u8]>,
) -> client::Fields {
    let mut f = client::Fields::with_capacity(head.fields().len() + 12, head.list_size() + 512);
    f.bodiless = method == "HEAD";
    f.push(b":method", method.as_bytes(), false);
    f.push(b":scheme", if tls { b"https" } else { b"http" }, false);
    f.push(b":authority", authority, false);
    f.push(b":path", target.as_bytes(), false);
    let mut forwarded_for: Option<Vec<u8>> = None;
    for (name, value, sensitive) in head.fields() {
        match name {
            b"x-forwarded-for" => join_value(&mut forwarded_for, value, b", "),
            b"te" => f.push(name, value, false),
            b"traceparent" if trace.is_some() => {}
            _ if is_hop_by_hop(name) || replaced_by_proxy(name) => {}
            _ => f.push(name, value, sensitive),
        }
    }
    match &mut forwarded_for {
        Some(list) => {
            list.extend_from_slice(b", ");
            list.extend_from_slice(added.client_ip);
            f.push(b"x-forwarded-for", list, false);
        }
        None => f.push(b"x-forwarded-for", added.client_ip, false),
    }
    f.push(b"x-forwarded-port", added.port, false);
    f.push(b"x-forwarded-proto", b"https", false);
    f.push(b"x-amzn-lattice-network", added.network.value(), false);
    f.push(b"x-amzn-lattice-target", added.target.value(), false);
    f.push(b"x-amzn-requestid", added.request_id, true);
    if let Some(identity) = added.identity {
        f.push(b"x-amzn-lattice-identity", identity.as_bytes(), false);
    }
    if let Some(trace) = trace {
        f.push(b"traceparent", trace, true);
    }
    f
}

/// The HTTP/1.1 head of a request without a body, written straight to bytes (into `out`,
/// emptied first, whose room is used again): origin form, `Host`, the client's fields but
/// those of the connection and `x-amzn-lattice-*` (cookies joined), the proxy's fields, and
/// `trace` as `traceparent` when the proxy started the trace. A POST, PUT or PATCH without a
/// `Content-Length` says 0 (servers may refuse one with no length).
fn h1_head(
    mut out: Vec<u8>,
    method: &str,
    head: &Head,
    target: &str,
    authority: &[u8],
    added: &Added<'_>,
    trace: Option<&[u8]>,
) -> Vec<u8> {
    out.clear();
    out.reserve(512 + target.len() + authority.len() + head.list_size());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority);
    out.extend_from_slice(b"\r\n");
    let mut cookies: Option<Vec<u8>> = None;
    let mut has_length = false;
    for (name, value, _) in head.fields() {
        match name {
            b"x-forwarded-for" => {}
            b"cookie" => join_value(&mut cookies, value, b"; "),
            b"traceparent" if trace.is_some() => {}
            _ if is_hop_by_hop(name) || replaced_by_proxy(name) => {}
            _ => {
                has_length |= name == b"content-length";
                crate::headers::field(&mut out, name, value);
            }
        }
    }
    if let Some(cookies) = &cookies {
        crate::headers::field(&mut out, b"cookie", cookies);
    }
    if !has_length && matches!(method, "POST" | "PUT" | "PATCH") {
        crate::headers::field(&mut out, b"content-length", b"0");
    }
    // The client's `x-forwarded-for` list (in one field or several), then the client.
    out.extend_from_slice(b"x-forwarded-for: ");
    for value in head.get_all(b"x-forwarded-for") {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(added.client_ip);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"x-forwarded-port: ");
    out.extend_from_slice(added.port);
    out.extend_from_slice(b"\r\nx-forwarded-proto: https\r\n");
    out.extend_from_slice(added.network.line());
    out.extend_from_slice(added.target.line());
    crate::headers::field(&mut out, b"x-amzn-requestid", added.request_id);
    if let Some(identity) = added.identity {
        crate::headers::field(&mut out, b"x-amzn-lattice-identity", identity.as_bytes());
    }
    if let Some(trace) = trace {
        crate::headers::field(&mut out, TRACEPARENT.as_str().as_bytes(), trace);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Adds a field's value to those of the same name before it, `sep` between them: the
/// `x-forwarded-for` list the proxy extends, and `cookie`, which HTTP/2 clients may split into
/// several fields and HTTP/1.1 carries as one joined by `; ` (RFC 9113 §8.2.3).
fn join_value(joined: &mut Option<Vec<u8>>, value: &[u8], sep: &[u8]) {
    let joined = joined.get_or_insert_with(Vec::new);
    if !joined.is_empty() {
        joined.extend_from_slice(sep);
    }
    joined.extend_from_slice(value);
}

/// Fields the proxy removes or sets itself: the Lattice ones, `x-forwarded-port` and
/// `-proto`, the request id, and `host` (from the authority).
fn replaced_by_proxy(name: &[u8]) -> bool {
    name.starts_with(b"x-amzn-lattice-")
        || matches!(name, b"x-forwarded-port" | b"x-forwarded-proto" | b"x-amzn-requestid" | b"host")
}

/// Fields that belong to one connection, not the message (lowercase).
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Whether a (lowercase) field name is one of [`HOP_BY_HOP`] (a `match`: a switch on the
/// length and a comparison, for each field of each HTTP/2 request).
fn is_hop_by_hop(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"te" | b"trailer" | b"transfer-encoding" | b"upgrade"
    )
}

/// Removes [`HOP_BY_HOP`] fields from a response's map. Usually there is none (an HTTP/2
/// target may not send them): each name is looked at once, and the map is searched by name
/// (which parses and hashes each) only when one is there.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| is_hop_by_hop(name.as_str().as_bytes())) {
        return;
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The listener and service the lowercase form of `raw` (the request's host) names.
fn locate<'r>(ctx: &'r Ctx, routes: &'r Routes, raw: &[u8]) -> Result<Located<'r>, ProxyError> {
    let mut last_host = ctx.last_host.lock().unwrap_or_else(|e| e.into_inner());
    request::locate(&ctx.conn, routes, &mut last_host, raw)
}

/// Whether a request is gRPC (`content-type: application/grpc`, `+proto` and the like).
fn is_grpc(head: &Head) -> bool {
    head.get(b"content-type").is_some_and(|v| v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/grpc"))
}

/// A response the proxy makes: `status`, a text body, the request id.
fn local(status: StatusCode, body: Bytes, request_id: &[u8]) -> Response<RespBody> {
    let mut response = Response::new(RespBody::Local(Some(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(X_AMZN_REQUESTID, request_id_value(request_id));
    response
}

/// A request id as a field value. Marked sensitive, which in HPACK means "never indexed": a
/// value that is new on every message would only churn the connection's dynamic tables (each
/// one searched through the ids before it, inserted, then evicted).
fn request_id_value(id: &[u8]) -> HeaderValue {
    let mut value = HeaderValue::from_bytes(id).unwrap_or_else(|_| HeaderValue::from_static("-"));
    value.set_sensitive(true);
    value
}

// === impl SpareHead ===

impl Drop for SpareHead<'_> {
    fn drop(&mut self) {
        if self.buf.capacity() > SPARE_HEAD_BYTES {
            return;
        }
        let mut spare = self.ctx.spare_heads.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_HEADS {
            spare.push(std::mem::take(&mut self.buf));
        }
    }
}

// === impl Deadlines ===

impl Deadlines {
    fn new(base: Instant) -> Self {
        Self { base, earliest: AtomicU64::new(u64::MAX), passed: AtomicU64::new(0) }
    }

    /// `at` in the clock's milliseconds, rounded up (a deadline never passes early).
    fn ms(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base);
        u64::try_from(since.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX - 1)
    }

    /// Whether deadline `ms` has passed.
    fn passed(&self, ms: u64) -> bool {
        self.passed.load(Ordering::Acquire) >= ms
    }

    /// A stream waits until `ms`: the connection's timer wakes by then.
    fn arm(&self, ms: u64) {
        if self.earliest.load(Ordering::Relaxed) > ms {
            self.earliest.fetch_min(ms, Ordering::Relaxed);
        }
    }

    /// When the connection's timer must wake for a deadline, if one is armed.
    fn next(&self) -> Option<Instant> {
        let ms = self.earliest.load(Ordering::Relaxed);
        (ms != u64::MAX).then(|| self.base + Duration::from_millis(ms))
    }

    /// At `now`: whether an armed deadline passed, in which case every waiting stream must be
    /// woken to look at its own (those still waiting arm theirs again).
    fn expire(&self, now: Instant) -> bool {
        // Due within the millisecond counts (the timer wakes on whole milliseconds), but only
        // whole milliseconds gone count as passed: a stream due in this one arms again.
        if self.earliest.load(Ordering::Relaxed) > self.ms(now) {
            return false;
        }
        let gone = u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX - 1);
        self.earliest.store(u64::MAX, Ordering::Relaxed);
        self.passed.fetch_max(gone, Ordering::Release);
        true
    }

    /// `exchange` unless it has not ended by `deadline`: then a timeout. The exchange is
    /// pinned where its caller made it (a future of some hundred bytes, not moved again).
    fn within<'a, T, F: Future<Output = Result<T, Sent>>>(
        &'a self,
        deadline: Instant,
        mut exchange: Pin<&'a mut F>,
    ) -> impl Future<Output = Result<T, Sent>> + 'a {
        let ms = self.ms(deadline);
        std::future::poll_fn(move |cx| match exchange.as_mut().poll(cx) {
            Poll::Ready(answer) => Poll::Ready(answer),
            Poll::Pending if self.passed(ms) => Poll::Ready(Err(Sent::Failed(ErrorKind::Timeout))),
            Poll::Pending => {
                self.arm(ms);
                Poll::Pending
            }
        })
    }
}

// === impl Activity ===

impl Activity {
    /// When the connection counts as idle (far away while a stream is open).
    fn idle_at(&self) -> Instant {
        if self.open.load(Ordering::Acquire) > 0 {
            return self.start + Duration::from_secs(365 * 24 * 3600);
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start + last + Duration::from_millis(self.idle_ms.load(Ordering::Relaxed))
    }
}

impl Busy {
    fn start(activity: Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        // The coarse clock: a precise read a request saved; idle timeouts are seconds.
        a.last_ms.store(millis(crate::clock::since(a.start)), Ordering::Relaxed);
        a.open.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl RespBody ===

impl RespBody {
    /// Fields of the response that the body carries rather than the response's map: an
    /// HTTP/1.1 target's read here (`down`) and an HTTP/2 target's go to the client without
    /// a map between.
    fn target_fields(&self) -> impl Iterator<Item = (&[u8], &[u8], bool)> {
        let down = match self {
            Self::Down { body, .. } => Some(body.fields()),
            _ => None,
        };
        let h2 = match self {
            Self::H2 { body, request_id, .. } => {
                Some(body.fields().chain(std::iter::once((&b"x-amzn-requestid"[..], &request_id[..], true))))
            }
            _ => None,
        };
        down.into_iter().flatten().chain(h2.into_iter().flatten())
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Down { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::H2 { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Upstream { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Local(bytes) => bytes.is_none(),
            Self::Down { body, .. } => body.is_end_stream(),
            Self::H2 { body, .. } => body.is_end_stream(),
            Self::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Local(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Local(None) => SizeHint::with_exact(0),
            Self::Down { body, .. } => body.size_hint(),
            Self::H2 { body, .. } => body.size_hint(),
            Self::Upstream { body, .. } => body.size_hint(),
        }
    }
}

impl HeaderLookup for Lookup<'_> {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0.get_all(name.as_bytes())
    }
}

pub(crate) mod client;
mod down;
mod server;
#[cfg(test)]
mod tests;
