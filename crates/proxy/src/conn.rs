//! One client connection, served by one task that does everything itself: it reads request
//! heads (every byte through the framing guard first), routes them (`request`), answers locally
//! or forwards to a target on a socket it owns for the exchange (`forward::exchange`), and keeps
//! the connection's clocks. No HTTP library sits in between: a small keep-alive request costs
//! one read and one write on each side and no allocation beyond the heads' field lists.
//!
//! The clocks ([`Clock`]): a client must send a whole request head within the header read
//! timeout (and its first request within that time too); a connection without traffic for the
//! idle timeout of the service it last used is closed; a target must start answering within the
//! response timeout (504); no connection lives past the maximum connection age, and a listener
//! that closes asks its connections to finish — both close the connection gracefully: the
//! request in progress finishes, then [`DRAIN_GRACE`] at most. One timer per connection serves
//! all of them: it is armed for the earliest deadline and, when it fires, re-armed from the
//! deadlines as they stand then (traffic only moves deadlines later), so a busy connection
//! touches the timer wheel about once per idle timeout, not per request.
//!
//! Heads over the limits: the guard stops the bytes where a head goes over `max_header_bytes`
//! or `max_headers`; the requests before that point are answered, then the proxy's 400, then
//! the connection closes.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use trellis_net::Ports;

use crate::access_log::{Entry, LogRoute, Part};
use crate::error::{ErrorKind, ProxyError};
use crate::guard::{FramingGuard, Limits};
use crate::h1::{Buf, Framing, RequestHead};
use crate::metrics::{ActiveConn, RouteStats};
use crate::request::{self, Decision, LastHost, Seen};
use crate::table::{GroupObs, RouteObs, Routes};
use crate::tls::{ClientStream, TlsDetails};
use crate::{ProxyConfig, Telemetry};

pub(crate) mod record;

#[cfg(test)]
mod tests;

/// How long a connection told to close may take to finish its request in progress.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// How long a connection that reached its maximum age between requests waits for one more:
/// a client that sends its next request as soon as it has an answer has it on the way, and
/// closing under it would reset the connection with the request unanswered. That request is
/// answered with `connection: close`. The same holds for a connection told to close after its
/// answer's head said keep-alive.
pub(crate) const LAST_CALL: Duration = Duration::from_secs(1);

/// How much a read asks for at least.
const READ_CHUNK: usize = 8 * 1024;

/// Capacity a buffer shrinks back to between requests after a large head or body.
const KEEP_BUF: usize = 16 * 1024;

/// What the request path knows about a connection.
pub(crate) struct Conn {
    /// The VPC the connection came from (the one whose ingress socket accepted it).
    pub(crate) vpc: Arc<str>,
    /// The client's address, as a header value.
    pub(crate) client_ip: Box<[u8]>,
    /// The Lattice ports this socket serves (the real port, and the port below 1024 it stands
    /// for when there is an offset), each with its `x-forwarded-port` value.
    pub(crate) lattice_ports: Vec<(u16, Box<[u8]>)>,
    /// The client speaks TLS to us: requests go to HTTPS listeners only.
    pub(crate) tls: bool,
    /// The client's address.
    pub(crate) peer: IpAddr,
    /// The client's port.
    pub(crate) peer_port: u16,
    /// The server name of its ClientHello, for a TLS client.
    pub(crate) sni: Option<Arc<str>>,
    /// What its TLS session negotiated, for a TLS client.
    pub(crate) tls_details: Option<TlsDetails>,
    /// The service its TLS server name routed to: the connection counts there.
    pub(crate) service_stats: Option<Arc<RouteStats>>,
    /// Where metrics and access log records go.
    pub(crate) telemetry: Arc<Telemetry>,
}

/// What one request's exchange with a target was like, for metrics and access logs.
#[derive(Default)]
pub(crate) struct Meter {
    /// The status of the target's response (0 before its head arrived).
    pub(crate) status: u16,
    /// The target the request went to last.
    pub(crate) target: Option<SocketAddr>,
    /// When the whole request had gone to the target.
    pub(crate) sent: Option<Instant>,
    /// When the target's response head arrived.
    pub(crate) answered: Option<Instant>,
    /// The `traceparent` the proxy started, for a request that came without a valid one.
    pub(crate) trace: Option<[u8; crate::headers::TRACEPARENT_LEN]>,
}

/// A connection's deadlines. See the module docs.
pub(crate) struct Clock {
    header_read_timeout: Duration,
    response_timeout: Duration,
    /// Last time bytes moved to or from the client (the coarse clock's: it is read on every
    /// read and write, and a tick does not change an idle timeout).
    last_io: Instant,
    /// When the head in progress began, if one is.
    head_started: Option<Instant>,
    /// The idle timeout of the service last used; the header read timeout before that.
    idle: Option<Duration>,
    /// While waiting for a target's response head: when it is due.
    response_due: Option<Instant>,
    /// When the connection reaches its maximum age.
    max_age_at: Instant,
    /// Once draining: when the connection closes whatever it is doing.
    drain_until: Option<Instant>,
}

/// A deadline that passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    /// No traffic for the idle timeout, or a head too slow.
    Idle,
    /// A target did not start answering in time.
    Response,
    /// The drain grace ran out.
    Drain,
}

/// Why waiting stopped early.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A deadline passed.
    Expired(Expired),
    /// The connection started draining (maximum age, or its listener closing).
    Drain,
}

/// The connection's timer, its clock, and the listener's closing signal.
pub(crate) struct Timers {
    pub(crate) clock: Clock,
    sleep: Pin<Box<Sleep>>,
    /// The waker `sleep` registered when last polled, until it is reset: while it has not
    /// elapsed, polling it again with the same waker would only register that waker again.
    armed: Registered,
    closing: Closing,
}

/// The listener's closing signal, polled on every wakeup of its connection. Once a poll has
/// registered the task's waker, the next polls with that waker only look whether the channel
/// changed (one atomic load) and poll the registered future when it did: polling the future
/// itself takes the channel's locks, some 450 instructions a request.
pub(crate) struct Closing {
    /// A receiver of the same channel, for its version.
    seen: watch::Receiver<bool>,
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The waker `wait` registered last.
    registered: Registered,
}

/// The waker a future registered when it last returned Pending (polled outside the task's
/// budget, so that a Pending always registered one).
#[derive(Default)]
struct Registered(Option<Waker>);

/// Everything one connection owns.
pub(crate) struct Session {
    pub(crate) conn: Arc<Conn>,
    pub(crate) client: ClientStream,
    /// Bytes read from the client and not yet used.
    pub(crate) rbuf: Buf,
    /// Bytes owed to the client.
    pub(crate) out: Vec<u8>,
    pub(crate) guard: FramingGuard,
    /// The guard refused the stream at the end of `rbuf` (a head over the limits).
    pub(crate) refused: Option<ErrorKind>,
    pub(crate) timers: Timers,
    pub(crate) config: Arc<ProxyConfig>,
    /// Bytes read from a target and not yet used (allocated on the first forward).
    pub(crate) ubuf: Buf,
    /// Bytes owed to a target.
    pub(crate) qbuf: Vec<u8>,
    /// The client's stream ended.
    pub(crate) client_eof: bool,
    /// Waiting for a request head (the header read timeout applies only then).
    reading_head: bool,
    /// The exchange of the request in progress.
    pub(crate) meter: Meter,
    /// Bytes read from and written to the client, in all.
    bytes_in: u64,
    bytes_out: u64,
    /// `bytes_in` and `bytes_out` when the last request ended.
    marks: (u64, u64),
    /// Counts the connection as active on the service of its first request.
    active: Option<ActiveConn>,
    /// The host the last request named.
    last_host: LastHost,
    /// The buffer of the last record's request text, for the next record's.
    record_text: Vec<u8>,
    /// The field lists of the last request and response heads, for the next ones.
    pub(crate) spare_fields: SpareFields,
}

/// Field lists kept between a connection's heads ([`crate::h1::parse_request_into`]).
#[derive(Default)]
pub(crate) struct SpareFields {
    pub(crate) request: Vec<crate::h1::Field>,
    pub(crate) response: Vec<crate::h1::Field>,
}

/// How an exchange left the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Ready for the next request.
    KeepAlive,
    /// Must close (after what is owed was written).
    Close,
}

/// The route table a connection uses, refreshed when a new one is published (an atomic load per
/// request; the watch's lock only when it changed).
struct RoutesCache {
    rx: watch::Receiver<Arc<Routes>>,
    current: Arc<Routes>,
}

/// Serves one client connection until it closes, idles out, ages out, or `closing` asks it to
/// finish.
pub(crate) async fn serve(
    client: ClientStream,
    conn: Conn,
    routes: watch::Receiver<Arc<Routes>>,
    config: Arc<ProxyConfig>,
    closing: watch::Receiver<bool>,
) {
    let now = Instant::now();
    let clock = Clock {
        header_read_timeout: config.header_read_timeout,
        response_timeout: config.response_timeout,
        last_io: now,
        head_started: None,
        idle: None,
        response_due: None,
        max_age_at: later(now, config.max_connection_age),
        drain_until: None,
    };
    let closing = Closing::new(closing);
    let sleep = Box::pin(tokio::time::sleep_until(clock.next_deadline()));
    let limits = Limits { head_bytes: config.max_header_bytes, headers: config.max_headers };
    let mut s = Session {
        conn: Arc::new(conn),
        client,
        rbuf: Buf::with_capacity(4 * 1024),
        out: Vec::with_capacity(1024),
        guard: FramingGuard::new(limits),
        refused: None,
        timers: Timers { clock, sleep, armed: Registered::default(), closing },
        config,
        ubuf: Buf::with_capacity(0),
        qbuf: Vec::new(),
        client_eof: false,
        reading_head: false,
        meter: Meter::default(),
        bytes_in: 0,
        bytes_out: 0,
        marks: (0, 0),
        active: None,
        last_host: LastHost::default(),
        record_text: Vec::new(),
        spare_fields: SpareFields::default(),
    };
    s.active = s.conn.service_stats.as_ref().map(RouteStats::connected);
    let current = routes.borrow().clone();
    let mut cache = RoutesCache { rx: routes, current };
    loop {
        let head = match s.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(kind) => {
                let e = ProxyError::new(kind);
                tracing::debug!(error = %e, "request refused");
                let id = crate::headers::request_id();
                e.write_http1(&mut s.out, &id, true, false);
                break;
            }
        };
        let routes = cache.current();
        let next = s.handle(&routes, head).await;
        if next == Next::Close {
            break;
        }
        if s.timers.clock.draining() {
            // Told to close after the answer had said keep-alive: the client may send its next
            // request at once. One already on its way is answered, with `connection: close`.
            s.timers.clock.last_call(Instant::now());
        }
        s.rbuf.shrink(KEEP_BUF);
        s.ubuf.shrink(KEEP_BUF);
    }
    // What is owed goes out (bounded by the clocks), then the connection closes (TLS says so
    // first).
    if !s.out.is_empty() {
        let _ = s.flush().await;
    }
    if s.client.is_tls() {
        let _ = tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncWriteExt::shutdown(&mut s.client)).await;
    }
}

// === impl Session ===

impl Session {
    /// The next request head: `None` when the connection should close quietly (the client left,
    /// went idle or too slow, or the connection is draining between requests).
    async fn read_head(&mut self) -> Result<Option<RequestHead>, ErrorKind> {
        // Part of a head may have come with the previous request: its clock starts from that
        // read.
        if !self.rbuf.is_empty() {
            self.timers.clock.head_started = Some(self.timers.clock.last_io);
        }
        self.reading_head = true;
        let head = self.next_head().await;
        self.reading_head = false;
        self.timers.clock.head_started = None;
        head
    }

    async fn next_head(&mut self) -> Result<Option<RequestHead>, ErrorKind> {
        loop {
            if !self.rbuf.is_empty() {
                if self.guard.is_poisoned() {
                    return Err(ErrorKind::BadFraming);
                }
                let (buf, spare) = (self.rbuf.bytes(), &mut self.spare_fields.request);
                if let Some(head) = crate::h1::parse_request_into(buf, self.config.max_headers, spare)? {
                    return Ok(Some(head));
                }
            }
            if let Some(kind) = self.refused {
                return Err(kind);
            }
            if self.client_eof {
                return Ok(None);
            }
            let between = self.rbuf.is_empty();
            match self.wait(|s, cx| s.poll_read_client(cx)).await {
                Ok(Ok(0)) => self.client_eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "client connection ended with an error");
                    return Ok(None);
                }
                Err(Event::Drain) if between && !self.timers.clock.aged(Instant::now()) => return Ok(None),
                // Aged between requests: one more may already be on its way.
                Err(Event::Drain) if between => self.timers.clock.last_call(Instant::now()),
                Err(Event::Drain) => {}
                Err(Event::Expired(_)) => {
                    tracing::debug!("client connection idle or too slow sending a request head: closed");
                    return Ok(None);
                }
            }
        }
    }

    /// Answers one request whose head is at the start of `rbuf`, then counts it (and logs it,
    /// if a subscription applies).
    async fn handle(&mut self, routes: &Routes, head: RequestHead) -> Next {
        let started = Instant::now();
        let request_id = crate::headers::request_id();
        let conn = self.conn.clone();
        self.meter = Meter::default();
        let mut seen = Seen::default();
        let decision = request::route(&conn, routes, self.rbuf.bytes(), &head, &mut seen, &mut self.last_host);
        let obs = seen.reach.map(|(_, r)| &*r.obs);
        if self.active.is_none()
            && let Some(obs) = obs
        {
            self.active = Some(obs.stats.connected());
        }
        // The record is only made when a subscription applies.
        let mut entry = match (seen.reach, obs.and_then(|o| o.log.as_ref())) {
            (Some((vpc, _)), Some(log)) => {
                let facts = record::h1_facts(self.rbuf.bytes(), &head, std::mem::take(&mut self.record_text));
                Some((log, record::begin(&conn, vpc, log, seen.listener, facts, &request_id)))
            }
            _ => None,
        };
        let mut done = Done { status: 0, failure: "-", denied: "-", group: None };
        // A local answer leaves any request body unread: the connection closes after it (and
        // after any answer once the connection is draining).
        let has_body = !matches!(head.framing, Framing::Empty | Framing::Length(0));
        let local_close = has_body || !head.keep_alive || self.timers.clock.draining();
        let next = match decision {
            Ok(Decision::Fixed(status)) => {
                let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                done.status = status.as_u16();
                let body = status.canonical_reason().unwrap_or("").as_bytes();
                crate::error::local_response(&mut self.out, status, body, &request_id, local_close, head.is_head);
                self.rbuf.consume(head.len);
                if local_close { Next::Close } else { Next::KeepAlive }
            }
            Ok(Decision::Denied { message, layer }) => {
                tracing::debug!(%message, "request denied by an auth policy");
                let status = http::StatusCode::FORBIDDEN;
                (done.status, done.denied, done.failure) = (403, layer, "ClientAccessDenied");
                crate::error::local_response(
                    &mut self.out,
                    status,
                    message.as_bytes(),
                    &request_id,
                    local_close,
                    head.is_head,
                );
                self.rbuf.consume(head.len);
                if local_close { Next::Close } else { Next::KeepAlive }
            }
            Ok(Decision::Forward(forward)) => {
                self.timers.clock.idle = Some(forward.idle_timeout);
                done.group = Some(forward.obs);
                if let Some((_, e)) = &mut entry {
                    record::caller(e, forward.identity.as_ref());
                }
                match self.forward(&head, forward, &request_id, started).await {
                    Ok(next) => {
                        done.status = self.meter.status;
                        if done.status == 0 {
                            done.failure = "ClientClosed";
                        }
                        next
                    }
                    Err((e, body_left)) => {
                        let close =
                            body_left || e.closes_connection() || !head.keep_alive || self.timers.clock.draining();
                        log(&e);
                        (done.status, done.failure) = (e.status().as_u16(), e.kind.failure_reason());
                        e.write_http1(&mut self.out, &request_id, close, head.is_head);
                        if close { Next::Close } else { Next::KeepAlive }
                    }
                }
            }
            Err(e) => {
                log(&e);
                let close = local_close || e.closes_connection();
                (done.status, done.failure) = (e.status().as_u16(), e.kind.failure_reason());
                e.write_http1(&mut self.out, &request_id, close, head.is_head);
                self.rbuf.consume(head.len);
                if close { Next::Close } else { Next::KeepAlive }
            }
        };
        // Counted before the answer's last bytes go out: whoever reads the metrics after the
        // answer arrived sees it.
        self.finish(started, obs, done, entry.as_mut().map(|(route, e)| (*route, e)));
        if let Some((_, e)) = entry {
            let text = e.request.into_bytes();
            // Kept unless a long request made it large.
            if text.capacity() <= record::KEPT_TEXT {
                self.record_text = text;
            }
        }
        crate::h1::give_back(&mut self.spare_fields.request, head.fields);
        if !self.out.is_empty() && self.flush().await.is_err() {
            return Next::Close;
        }
        next
    }

    /// Counts a request that ended (its answer written, or about to be), and sends its record
    /// to the access log.
    fn finish(
        &mut self,
        started: Instant,
        obs: Option<&RouteObs>,
        done: Done<'_>,
        entry: Option<(&LogRoute, &mut Entry)>,
    ) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(started);
        if let Some(obs) = obs {
            let stats = done.group.map_or(&obs.stats, |g| &g.stats);
            if done.status != 0 {
                stats.request(done.status, elapsed);
            }
            if done.denied != "-" {
                obs.stats.auth_denied();
            }
            if let (Some(group), Some(sent), Some(answered)) = (done.group, self.meter.sent, self.meter.answered) {
                group.stats.target_time(answered.saturating_duration_since(sent));
            }
        }
        // What is still owed to the client is about to be written.
        let owed = self.out.len() as u64;
        let received = self.bytes_in.saturating_sub(self.marks.0);
        let sent = (self.bytes_out + owed).saturating_sub(self.marks.1);
        self.marks = (self.bytes_in, self.bytes_out + owed);
        let Some((route, e)) = entry else { return };
        let outcome = record::Outcome {
            status: done.status,
            failure: done.failure,
            denied: done.denied,
            group: done.group,
            target: self.meter.target,
            bytes: (received, sent),
            started,
            sent: self.meter.sent,
            ended: now,
        };
        record::finish(e, outcome);
        if let Some(trace) = &self.meter.trace {
            e.request.set(Part::Traceparent, trace);
        }
        self.conn.telemetry.log.send(route, e, &self.conn.telemetry.process);
    }

    /// Writes everything owed to the client.
    pub(crate) async fn flush(&mut self) -> Result<(), ()> {
        let mut written = 0;
        let result = loop {
            match self.wait(|s, cx| s.poll_write_client(cx, &mut written)).await {
                // Draining lets what is owed go out.
                Err(Event::Drain) => continue,
                result => break result,
            }
        };
        self.out.clear();
        match result {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Polls `f` until it is ready, while the clocks run: an expired deadline or the start of
    /// draining ends the wait early.
    pub(crate) async fn wait<T>(
        &mut self,
        mut f: impl FnMut(&mut Self, &mut Context<'_>) -> Poll<T>,
    ) -> Result<T, Event> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = f(self, cx) {
                return Poll::Ready(Ok(v));
            }
            self.timers.poll(cx).map(Err)
        })
        .await
    }

    /// Reads what the client sent into `rbuf`, through the guard: `Ok(0)` at end of stream.
    pub(crate) fn poll_read_client(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        ready!(self.client.poll_read_ready(cx));
        let limit = self.config.max_header_bytes + 2 * READ_CHUNK;
        let Some(spare) = self.rbuf.spare(READ_CHUNK, limit) else {
            // Full of a head the guard has not refused: cannot happen (its limit is lower).
            return Poll::Ready(Err(std::io::Error::other("request head over the buffer")));
        };
        let mut rb = ReadBuf::new(spare);
        ready!(Pin::new(&mut self.client).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        self.bytes_in += n as u64;
        let now = crate::clock::instant();
        self.timers.clock.last_io = now;
        let pass = self.guard.scan(&self.rbuf.spare_bytes()[..n]);
        if pass < n {
            self.refused = self.guard.refusal();
        }
        self.rbuf.filled(pass);
        if self.reading_head && self.guard.mid_head() && self.timers.clock.head_started.is_none() {
            self.timers.clock.head_started = Some(now);
        }
        // A refusal with nothing before it reads as more bytes to look at, not the end.
        Poll::Ready(Ok(pass.max(usize::from(self.refused.is_some()))))
    }

    /// Writes `out[*written..]` to the client.
    pub(crate) fn poll_write_client(&mut self, cx: &mut Context<'_>, written: &mut usize) -> Poll<std::io::Result<()>> {
        while *written < self.out.len() {
            let n = ready!(Pin::new(&mut self.client).poll_write(cx, &self.out[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            self.bytes_out += n as u64;
            self.timers.clock.last_io = crate::clock::instant();
        }
        // TLS records still in the session's buffer go out too (a no-op for cleartext).
        ready!(Pin::new(&mut self.client).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }
}

/// How a request ended, for [`Session::finish`].
struct Done<'r> {
    /// The status the client got (0: none, the connection broke).
    status: u16,
    failure: &'static str,
    denied: &'static str,
    /// The target group it was forwarded to.
    group: Option<&'r GroupObs>,
}

fn log(e: &ProxyError) {
    match e.origin {
        crate::error::Origin::Client | crate::error::Origin::Upstream => tracing::debug!(error = %e, "request refused"),
        crate::error::Origin::Internal => tracing::warn!(error = %e, "request failed"),
    }
}

// === impl Conn ===

impl Conn {
    /// A connection from VPC `vpc`, accepted on `real_port` from `peer`.
    pub(crate) fn new(
        vpc: Arc<str>,
        real_port: u16,
        peer: SocketAddr,
        ports: Ports,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let client = peer.ip();
        let offset = ports.low_port_offset;
        let lattice_ports = [real_port.checked_sub(offset).filter(|_| offset > 0), Some(real_port)]
            .into_iter()
            .flatten()
            .filter(|&p| ports.real(p) == real_port)
            .map(|p| (p, p.to_string().into_bytes().into_boxed_slice()))
            .collect();
        Self {
            vpc,
            client_ip: client.to_string().into_bytes().into_boxed_slice(),
            lattice_ports,
            tls: false,
            peer: client,
            peer_port: peer.port(),
            sni: None,
            tls_details: None,
            service_stats: None,
            telemetry,
        }
    }
}

// === impl Clock ===

impl Clock {
    /// Whether the connection is finishing (no request after the one in progress).
    pub(crate) fn draining(&self) -> bool {
        self.drain_until.is_some()
    }

    /// Starts waiting for a target's response head: the request was all sent at `sent`.
    pub(crate) fn await_response(&mut self, sent: Instant) {
        self.response_due = Some(later(sent, self.response_timeout));
    }

    /// The response head arrived (or the exchange ended).
    pub(crate) fn response_arrived(&mut self) {
        self.response_due = None;
    }

    /// Whether the connection is past its maximum age.
    fn aged(&self, now: Instant) -> bool {
        now >= self.max_age_at
    }

    /// Draining ends [`LAST_CALL`] after `now` at the latest.
    fn last_call(&mut self, now: Instant) {
        let until = later(now, LAST_CALL);
        self.drain_until = Some(self.drain_until.map_or(until, |d| d.min(until)));
    }

    fn start_draining(&mut self, now: Instant) {
        if self.drain_until.is_none() {
            self.drain_until = Some(later(now, DRAIN_GRACE));
        }
    }

    /// The earliest deadline.
    fn next_deadline(&self) -> Instant {
        let idle = later(self.last_io, self.idle.unwrap_or(self.header_read_timeout));
        let mut at = match self.response_due {
            // Waiting on a target: its deadline, not the client's idleness.
            Some(due) => due,
            None => idle,
        };
        if let Some(head) = self.head_started {
            at = at.min(later(head, self.header_read_timeout));
        }
        match self.drain_until {
            Some(drain) => at.min(drain),
            None => at.min(self.max_age_at),
        }
    }

    /// What passed at `now`, if anything.
    fn check(&mut self, now: Instant) -> Option<Event> {
        if self.drain_until.is_some_and(|d| now >= d) {
            return Some(Event::Expired(Expired::Drain));
        }
        if self.drain_until.is_none() && now >= self.max_age_at {
            self.start_draining(now);
            return Some(Event::Drain);
        }
        if self.response_due.is_some_and(|d| now >= d) {
            return Some(Event::Expired(Expired::Response));
        }
        let idle = later(self.last_io, self.idle.unwrap_or(self.header_read_timeout));
        let head = self.head_started.map(|h| later(h, self.header_read_timeout));
        if (self.response_due.is_none() && now >= idle) || head.is_some_and(|h| now >= h) {
            return Some(Event::Expired(Expired::Idle));
        }
        None
    }
}

/// `at + d`, or a year on when that cannot be told (a timeout set absurdly large).
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or_else(|| at + Duration::from_secs(365 * 24 * 3600))
}

// === impl Timers ===

impl Timers {
    /// Ready when a deadline passes or draining starts; otherwise registers for both.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if !self.clock.draining() && self.closing.poll(cx).is_ready() {
            self.clock.start_draining(Instant::now());
            self.reset(self.clock.next_deadline());
            return Poll::Ready(Event::Drain);
        }
        // A deadline moved earlier than the armed one (a response became due): re-arm.
        let next = self.clock.next_deadline();
        if next < self.sleep.deadline() {
            self.reset(next);
        }
        if self.armed.wakes(cx) && !self.sleep.is_elapsed() {
            // The registered waker wakes this task when the deadline passes.
            return Poll::Pending;
        }
        loop {
            // Unconstrained: a Pending for the task's budget would not have registered the waker.
            if self.armed.poll(self.sleep.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some(event) = self.clock.check(now) {
                self.reset(self.clock.next_deadline().max(now + Duration::from_millis(1)));
                return Poll::Ready(event);
            }
            self.reset(self.clock.next_deadline());
        }
    }

    fn reset(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.armed = Registered::default();
    }
}

// === impl Closing ===

impl Closing {
    pub(crate) fn new(mut rx: watch::Receiver<bool>) -> Self {
        let seen = rx.clone();
        let wait = Box::pin(async move {
            let _ = rx.wait_for(|c| *c).await;
        });
        Closing { seen, wait, registered: Registered::default() }
    }

    /// Ready once the listener closes (or its sender is gone).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let unchanged = !self.seen.has_changed().unwrap_or(true);
        if unchanged && self.registered.wakes(cx) {
            // The registered waker wakes this task when the channel changes.
            return Poll::Pending;
        }
        self.registered.poll(self.wait.as_mut(), cx)
    }
}

// === impl Registered ===

impl Registered {
    /// Whether the registered waker is this context's.
    fn wakes(&self, cx: &Context<'_>) -> bool {
        self.0.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
    }

    /// Polls `future` unconstrained (a Pending for the task's budget would register nothing),
    /// noting the waker it registered when it is Pending.
    fn poll<F: Future + ?Sized>(&mut self, future: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let poll = Pin::new(&mut tokio::task::coop::unconstrained(future)).poll(cx);
        if poll.is_pending() && !self.wakes(cx) {
            self.0 = Some(cx.waker().clone());
        }
        poll
    }
}

// === impl RoutesCache ===

impl RoutesCache {
    fn current(&mut self) -> Arc<Routes> {
        if self.rx.has_changed().unwrap_or(false) {
            self.current = self.rx.borrow_and_update().clone();
        }
        self.current.clone()
    }
}
