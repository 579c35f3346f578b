//! One client connection: hyper's HTTP/1.1 server over the socket, wrapped so that every byte
//! read passes the framing guard first, and the connection's clocks: a client must send a whole
//! request head within the header read timeout (and its first request within that time too); a
//! connection without traffic for the idle timeout of the service it last used is closed; no
//! connection lives past the maximum connection age (it is closed gracefully: the request in
//! progress finishes, then [`DRAIN_GRACE`] at most).
//!
//! hyper's own `header_read_timeout` is off on purpose: hyper also runs it while a keep-alive
//! connection waits for its next request, which would cut every idle connection at the header
//! timeout (10 s) instead of the service's idle timeout (60 s and up).
//!
//! Heads over the limits: the guard stops the bytes where a head goes over
//! `max_header_bytes` or `max_headers` (see `guard`), so hyper holds an incomplete head it will
//! never parse, and no request exists to answer. The socket wrapper answers instead: once hyper
//! has written and flushed every response it owes (responses are counted as they are handed to
//! hyper and as hyper drops their bodies), it writes the proxy's 400 ([`ProxyError::to_http1`])
//! and reports end of stream to hyper, which then drops the connection without writing more.
//! hyper's own limits sit a little above ours ([`HYPER_MARGIN`]) as a backstop.

use std::cell::RefCell;
use std::convert::Infallible;
use std::io::IoSlice;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use trellis_net::Ports;

use crate::ProxyConfig;
use crate::error::ProxyError;
use crate::forward::ProxyBody;
use crate::guard::{FramingGuard, Limits};
use crate::table::Routes;

#[cfg(test)]
mod tests;

/// How long a connection told to close may take to finish its request in progress.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// How far above `max_header_bytes` hyper's own head limit sits. The guard never lets hyper
/// hold more than `max_header_bytes` of a head, so hyper's limit (and its 431) is only a
/// backstop. (hyper's field limit stays at `max_headers`: the guard stops a head before the
/// first byte of a field past the limit, and any limit other than 100 costs an allocation per
/// request.)
const HYPER_MARGIN: usize = 1024;

/// What the request path knows about a connection, and the clocks it shares with the I/O.
pub(crate) struct Conn {
    /// The VPC the connection came from (the one whose ingress socket accepted it).
    pub(crate) vpc: Arc<str>,
    /// The client's address, as a header value.
    pub(crate) client_ip: HeaderValue,
    /// The Lattice ports this socket serves (the real port, and the port below 1024 it stands
    /// for when there is an offset), each with its `x-forwarded-port` value.
    pub(crate) lattice_ports: Vec<(u16, HeaderValue)>,
    /// How long a target may take to start answering.
    pub(crate) response_timeout: Duration,
    start: Instant,
    poisoned: AtomicBool,
    /// A head went over the limits (the connection answers 400 itself and closes).
    refused: AtomicBool,
    last_io_ms: AtomicU64,
    /// When the head in progress began (ms since start, plus one); 0 when none is.
    head_started_ms: AtomicU64,
    /// The idle timeout of the service last used (ms); 0 before the first routed request.
    idle_ms: AtomicU64,
    /// Requests handed to the request path.
    dispatched: AtomicUsize,
    /// Responses whose body hyper has dropped (everything of them is in its write buffer).
    ended: AtomicUsize,
}

/// A client socket whose reads pass the framing guard and whose traffic resets the idle clock.
struct GuardedIo {
    inner: TcpStream,
    guard: FramingGuard,
    conn: Arc<Conn>,
    /// `conn.ended` as of the last completed flush: responses hyper has written out.
    flushed: usize,
    /// The 400 owed for a head over the limits, and how much of it is written.
    refusal: Option<(Vec<u8>, usize)>,
}

/// A response body as hyper gets it: counts the response as ended when hyper drops it.
struct Counted {
    body: ProxyBody,
    conn: Arc<Conn>,
}

/// The route table a connection uses, refreshed when a new one is published (an atomic load per
/// request; the watch's lock only when it changed).
struct RoutesCache {
    rx: watch::Receiver<Arc<Routes>>,
    current: Arc<Routes>,
}

/// The hyper server settings every connection uses.
pub(crate) fn http_builder(config: &ProxyConfig) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.keep_alive(true)
        .half_close(false)
        .max_header_size(config.max_header_bytes + HYPER_MARGIN)
        .max_buf_size((config.max_header_bytes + HYPER_MARGIN + 8192).max(64 * 1024))
        .header_read_timeout(None);
    // hyper keeps up to 100 header slots on the stack; any other limit costs a heap allocation
    // per request.
    if config.max_headers != 100 {
        b.max_headers(config.max_headers);
    }
    b
}

/// Serves one client connection until it closes, idles out, ages out, or `closing` asks it to
/// finish.
pub(crate) async fn serve(
    stream: TcpStream,
    conn: Arc<Conn>,
    builder: &http1::Builder,
    routes: watch::Receiver<Arc<Routes>>,
    config: &ProxyConfig,
    mut closing: watch::Receiver<bool>,
) {
    let limits = Limits { head_bytes: config.max_header_bytes, headers: config.max_headers };
    let guard = FramingGuard::new(limits);
    let io = TokioIo::new(GuardedIo { inner: stream, guard, conn: conn.clone(), flushed: 0, refusal: None });
    let current = routes.borrow().clone();
    let cache = RefCell::new(RoutesCache { rx: routes, current });
    let for_service = conn.clone();
    let service = service_fn(move |req| {
        let routes = cache.borrow_mut().current();
        let conn = for_service.clone();
        conn.dispatched.fetch_add(1, Ordering::Relaxed);
        let response = crate::request::handle(conn.clone(), routes, req);
        async move { Ok::<_, Infallible>(response.await?.map(|body| Counted { body, conn })) }
    });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let hrt = config.header_read_timeout;
    let idle = tokio::time::sleep_until(conn.deadline(hrt).unwrap_or_else(Instant::now));
    let drain = tokio::time::sleep(config.max_connection_age);
    tokio::pin!(idle, drain);
    let mut draining = false;
    loop {
        tokio::select! {
            // The connection first: it is what wakes this task almost every time.
            biased;
            done = connection.as_mut() => {
                match done {
                    // After a refusal hyper sees the stream end inside a head: expected.
                    Err(_) if conn.refused.load(Ordering::Relaxed) => {}
                    Err(e) => tracing::debug!(error = %e, "client connection ended with an error"),
                    Ok(()) => {}
                }
                return;
            }
            () = &mut idle => match conn.deadline(hrt) {
                Some(next) => idle.as_mut().reset(next),
                None => {
                    tracing::debug!("client connection idle or too slow sending a request head: closed");
                    return;
                }
            },
            () = &mut drain => {
                if draining {
                    return;
                }
                draining = true;
                connection.as_mut().graceful_shutdown();
                drain.as_mut().reset(Instant::now() + DRAIN_GRACE);
            }
            _ = closing.wait_for(|c| *c), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
                drain.as_mut().reset(Instant::now() + DRAIN_GRACE);
            }
        }
    }
}

// === impl Conn ===

impl Conn {
    /// A connection from VPC `vpc`, accepted on `real_port` from `client`.
    pub(crate) fn new(vpc: Arc<str>, real_port: u16, client: IpAddr, ports: Ports, config: &ProxyConfig) -> Self {
        let offset = ports.low_port_offset;
        let lattice_ports = [real_port.checked_sub(offset).filter(|_| offset > 0), Some(real_port)]
            .into_iter()
            .flatten()
            .filter(|&p| ports.real(p) == real_port)
            .map(|p| (p, HeaderValue::from(p)))
            .collect();
        Self {
            vpc,
            client_ip: HeaderValue::try_from(client.to_string()).unwrap_or_else(|_| HeaderValue::from_static("")),
            lattice_ports,
            response_timeout: config.response_timeout,
            start: Instant::now(),
            poisoned: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            last_io_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            idle_ms: AtomicU64::new(0),
            dispatched: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
        }
    }

    /// Whether the client's framing was ambiguous (the connection must close).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Records the idle timeout of the service a request was routed to.
    pub(crate) fn set_idle_timeout(&self, idle: Duration) {
        let ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX).max(1);
        if self.idle_ms.load(Ordering::Relaxed) != ms {
            self.idle_ms.store(ms, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the connection expires if nothing happens, or `None` if it has.
    fn deadline(&self, header_read_timeout: Duration) -> Option<Instant> {
        let hrt = u64::try_from(header_read_timeout.as_millis()).unwrap_or(u64::MAX);
        let idle = match self.idle_ms.load(Ordering::Relaxed) {
            0 => hrt,
            ms => ms,
        };
        let mut at = self.last_io_ms.load(Ordering::Relaxed).saturating_add(idle);
        if let Some(head) = self.head_started_ms.load(Ordering::Relaxed).checked_sub(1) {
            at = at.min(head.saturating_add(hrt));
        }
        (at > self.now_ms()).then(|| self.start + Duration::from_millis(at))
    }

    /// Follows bytes read; returns how many of them may reach hyper.
    fn on_read(&self, bytes: &[u8], guard: &mut FramingGuard) -> usize {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        let pass = guard.scan(bytes);
        if guard.is_poisoned() {
            self.poisoned.store(true, Ordering::Relaxed);
        }
        let head = self.head_started_ms.load(Ordering::Relaxed);
        match (guard.mid_head(), head) {
            (true, 0) => self.head_started_ms.store(now + 1, Ordering::Relaxed),
            (false, h) if h != 0 => self.head_started_ms.store(0, Ordering::Relaxed),
            _ => {}
        }
        pass
    }

    fn on_write(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }
}

// === impl GuardedIo ===

impl GuardedIo {
    /// Notes that the guard refused the stream: a 400 is owed.
    fn refuse(&mut self) {
        let Some(kind) = self.guard.refusal() else { return };
        let e = ProxyError::new(kind);
        let request_id = crate::headers::request_id();
        tracing::debug!(error = %e, "request refused");
        self.refusal = Some((e.to_http1(request_id.to_str().unwrap_or_default()), 0));
        self.conn.refused.store(true, Ordering::Relaxed);
    }

    /// A read once the stream is refused. While hyper still owes responses (or has not flushed
    /// them), nothing to read: hyper's writes keep the task awake, and the flush after the last
    /// one wakes it (see `poll_flush`). Then the 400 is written and hyper is told the stream
    /// ended: it holds an incomplete head, so it gives up without writing anything.
    fn poll_refused(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.flushed != self.conn.dispatched.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        let Some((bytes, written)) = &mut self.refusal else { return Poll::Ready(Ok(())) };
        while let Some(rest) = bytes.get(*written..).filter(|r| !r.is_empty()) {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, rest)) {
                Ok(0) => break,
                Ok(n) => *written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if *written > 0 {
            self.conn.on_write();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            return this.poll_refused(cx);
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let read = new.len();
                let pass = this.conn.on_read(new, &mut this.guard);
                if pass < read {
                    // A head went over a limit: hyper gets the bytes before that point only.
                    buf.set_filled(before + pass);
                    this.refuse();
                    if pass == 0 {
                        // An empty read would tell hyper the stream ended.
                        return this.poll_refused(cx);
                    }
                }
            }
        }
        result
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.on_write();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.on_write();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = result {
            // hyper flushes the socket only once its own buffer is written out.
            let ended = this.conn.ended.load(Ordering::Relaxed);
            if ended != this.flushed {
                this.flushed = ended;
                if this.refusal.is_some() && ended == this.conn.dispatched.load(Ordering::Relaxed) {
                    // The last response owed is out: the refusal can go (hyper may not read
                    // again on its own).
                    cx.waker().wake_by_ref();
                }
            }
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// === impl Counted ===

impl Body for Counted {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.conn.ended.fetch_add(1, Ordering::Relaxed);
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
