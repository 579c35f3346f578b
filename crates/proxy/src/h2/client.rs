//! HTTP/2 towards targets (HTTP2 and GRPC target groups): one connection per target, shared by
//! every request to it, run on the proxy's own HTTP/2 ([`http2::conn`](crate::http2::conn)) in
//! [`Role::Client`].
//!
//! The connection's state sits behind one lock, with every exchange on it: a request opens its
//! stream under the lock from the task that makes it (no channel, no task per request), and
//! the connection's task reads the target's frames and hands each exchange its head, data and
//! trailers, waking whoever waits. Request bodies that are not whole when the request goes
//! (streaming calls) are pumped by the connection's task as they fill and as the target's
//! windows allow; response data is given back to the target's window as the response body is
//! read, so a slow client slows the target rather than filling memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Chunks, Piece, Pieces, Pumped, UpBody, pump_body};
use crate::forward::Upstream;
use crate::http2::conn::{Config, Connection, Event, Head, IdState, Role};
use crate::http2::frame::Reason;

/// What the connection reads into.
const READ_BUF: usize = 64 << 10;
/// Rounds of reading, pumping and writing in one poll of the connection before it yields.
const ROUNDS: usize = 16;

/// A target's HTTP/2 connection. Dropping the last handle lets the connection close once its
/// exchanges are over.
pub(crate) struct H2Client {
    shared: Arc<Shared>,
}

/// Why an exchange gave no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The target did not take the request (refused, or above its GOAWAY): it may go again,
    /// on another connection.
    Refused,
    /// The connection or stream broke after the request went.
    Broken,
}

/// A request sent: resolves to the response head.
pub(crate) struct Responding {
    shared: Arc<Shared>,
    stream: u32,
    /// The response (or failure) was taken; the body owns the exchange from then on.
    done: bool,
}

/// A response body from a target, with the fields of the response's head (they go to the
/// client as they came, without a `HeaderMap` between).
pub(crate) struct UpstreamBody {
    shared: Arc<Shared>,
    stream: u32,
    /// Known from `content-length`.
    length: Option<u64>,
    ended: bool,
    head: Head,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    conn: Connection,
    /// By stream id (hashed as the connection's own streams are: ids are odd and go up).
    exchanges: HashMap<u32, Exchange, IdState>,
    /// The connection's task, woken when there is output or a body to pump.
    task: Option<Waker>,
    /// Requests waiting for a stream (the target's concurrency limit).
    waiting: Vec<Waker>,
    /// Exchanges with a request body still to send.
    pumping: Vec<u32>,
    /// The connection is over: no new exchanges, and those left have failed.
    closed: bool,
    /// No handle is left: close once no exchange is.
    abandoned: bool,
}

/// One request and its response, as far as they have come.
#[derive(Default)]
struct Exchange {
    /// The request body still to send, and the bytes of it the target's window held back.
    body: Option<UpBody>,
    pending: Bytes,
    /// The response head.
    head: Option<(StatusCode, Head)>,
    data: Chunks,
    /// As they came: made into a `HeaderMap` only for a body read through `Body`.
    trailers: Option<Head>,
    /// The target ended its response.
    ended: bool,
    failed: Option<Failure>,
    /// Whoever waits on the response.
    waker: Option<Waker>,
}

// === impl H2Client ===

impl H2Client {
    /// Starts a connection over `io` (the preface goes with the first request).
    pub(crate) fn start(io: Upstream, addr: SocketAddr) -> Self {
        // Targets open no streams; their responses' fields may run to 256 KiB.
        let config = Config { max_concurrent_streams: 0, max_header_list_size: 256 << 10, ..Config::default() };
        let state = State {
            conn: Connection::new(Role::Client, config),
            exchanges: HashMap::default(),
            task: None,
            waiting: Vec::new(),
            pumping: Vec::new(),
            closed: false,
            abandoned: false,
        };
        let shared = Arc::new(Shared { state: Mutex::new(state) });
        tokio::spawn(run(io, shared.clone(), addr));
        Self { shared }
    }

    /// Whether the connection can take no more requests (closed, or closing).
    pub(crate) fn is_closed(&self) -> bool {
        let state = self.shared.lock();
        state.closed || state.conn.is_closing()
    }

    /// Sends a request.
    pub(crate) fn send(&self, head: Fields, body: UpBody) -> Sending {
        Sending { shared: self.shared.clone(), head: Some((head, body)) }
    }
}

impl Drop for H2Client {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.abandoned = true;
        state.wake_task();
    }
}

/// A request waiting for a stream on the connection (rarely: only at the target's limit).
pub(crate) struct Sending {
    shared: Arc<Shared>,
    head: Option<(Fields, UpBody)>,
}

/// A request head as HTTP/2 fields, pseudo-fields first: their bytes, and where each name and
/// value is in them.
#[derive(Clone)]
pub(crate) struct Fields {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize, usize, bool)>,
    /// A HEAD request, whose response has no body whatever its `content-length` says.
    pub(crate) bodiless: bool,
}

impl Fields {
    /// Room for `fields` fields of `bytes` bytes in all.
    pub(crate) fn with_capacity(fields: usize, bytes: usize) -> Self {
        Self { bytes: Vec::with_capacity(bytes), spans: Vec::with_capacity(fields), bodiless: false }
    }

    /// Adds a field (`sensitive`: never indexed, by this hop or any after it).
    pub(crate) fn push(&mut self, name: &[u8], value: &[u8], sensitive: bool) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.spans.push((at, name.len(), value.len(), sensitive));
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], bool)> {
        self.spans
            .iter()
            .map(|&(at, n, v, sensitive)| (&self.bytes[at..at + n], &self.bytes[at + n..at + n + v], sensitive))
    }
}

impl Future for Sending {
    type Output = Result<Responding, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.shared.lock();
        if state.closed || state.conn.is_closing() {
            return Poll::Ready(Err(Failure::Refused));
        }
        if !state.conn.can_open() {
            state.waiting.push(cx.waker().clone());
            return Poll::Pending;
        }
        let Some((fields, mut body)) = this.head.take() else { return Poll::Ready(Err(Failure::Broken)) };
        let end = body.is_end_stream();
        let stream = state.conn.open(fields.iter(), end, fields.bodiless).ok_or(Failure::Refused)?;
        let mut exchange = Exchange::default();
        if !end {
            // What the body holds already goes now (a unary call's message, say); the rest as
            // it comes, pumped by the connection's task, which its body wakes.
            let task = state.task.clone().unwrap_or_else(|| cx.waker().clone());
            if !pump(&mut state.conn, stream, &mut body, &mut exchange.pending, &task) {
                exchange.body = Some(body);
                state.pumping.push(stream);
            }
        }
        state.exchanges.insert(stream, exchange);
        state.wake_task();
        Poll::Ready(Ok(Responding { shared: this.shared.clone(), stream, done: false }))
    }
}

/// Moves what a request body has ready onto its stream ([`pump_body`]): `true` once it has
/// all gone, or failed (the stream is then reset).
fn pump(conn: &mut Connection, stream: u32, body: &mut UpBody, pending: &mut Bytes, task: &Waker) -> bool {
    match pump_body(conn, stream, body, pending, &mut Context::from_waker(task)) {
        Pumped::Blocked | Pumped::Waiting => false,
        Pumped::Done => true,
        Pumped::Failed => {
            conn.reset(stream, Reason::CANCEL);
            true
        }
    }
}

// === impl Responding ===

impl Future for Responding {
    type Output = Result<Response<UpstreamBody>, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.shared.lock();
        let Some(exchange) = state.exchanges.get_mut(&this.stream) else {
            this.done = true;
            return Poll::Ready(Err(Failure::Broken));
        };
        if let Some((status, head)) = exchange.head.take() {
            this.done = true;
            let length = head.content_length();
            let body = UpstreamBody { shared: this.shared.clone(), stream: this.stream, length, ended: false, head };
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.version_mut() = http::Version::HTTP_2;
            return Poll::Ready(Ok(response));
        }
        if let Some(failure) = exchange.failed {
            this.done = true;
            state.forget(this.stream);
            return Poll::Ready(Err(failure));
        }
        if !exchange.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            exchange.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Responding {
    fn drop(&mut self) {
        if !self.done {
            // Given up before the response came (a timeout, the client's reset).
            self.shared.lock().forget(self.stream);
        }
    }
}

// === impl UpstreamBody ===

impl UpstreamBody {
    /// The fields of the response's head that go on to the client: not those of a
    /// connection (which HTTP/2 refuses as they come, but `te` and `trailer`), nor
    /// `x-amzn-requestid`, which the proxy sets.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8], bool)> {
        self.head.fields().filter(|(name, ..)| !super::is_hop_by_hop(name) && *name != b"x-amzn-requestid")
    }
}

impl Pieces for UpstreamBody {
    /// The next piece of the body; trailers as the target's fields.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piece, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut state = self.shared.lock();
        let state = &mut *state;
        let Some(exchange) = state.exchanges.get_mut(&self.stream) else {
            self.ended = true;
            return Poll::Ready(Some(Err(broken())));
        };
        if let Some(data) = exchange.data.pop_front() {
            state.conn.release(self.stream, data.len());
            if state.conn.has_output() {
                state.wake_task();
            }
            return Poll::Ready(Some(Ok(Piece::Frame(Frame::data(data)))));
        }
        if let Some(trailers) = exchange.trailers.take() {
            return Poll::Ready(Some(Ok(Piece::Fields(trailers))));
        }
        if exchange.ended {
            self.ended = true;
            state.forget(self.stream);
            return Poll::Ready(None);
        }
        if exchange.failed.is_some() {
            self.ended = true;
            state.forget(self.stream);
            return Poll::Ready(Some(Err(broken())));
        }
        if !exchange.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            exchange.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.poll_piece(cx).map_ok(|piece| match piece {
            Piece::Frame(frame) => frame,
            Piece::Fields(trailers) => Frame::trailers(super::server::header_map(&trailers)),
        })
    }

    fn is_end_stream(&self) -> bool {
        if self.ended {
            return true;
        }
        let state = self.shared.lock();
        state.exchanges.get(&self.stream).is_some_and(|e| e.ended && e.data.is_empty() && e.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.length.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if !self.ended {
            // The client went away mid-response: the target's stream is reset.
            self.shared.lock().forget(self.stream);
        }
    }
}

fn broken() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the target broke the stream")
}

// === impl Shared, State ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn wake_task(&mut self) {
        if let Some(task) = &self.task {
            task.wake_by_ref();
        }
    }

    /// The exchange is over on the requester's side: the response came whole, or it gave up
    /// (dropped before it ended). A stream still open is reset (a request body still going
    /// need not).
    fn forget(&mut self, stream: u32) {
        let Some(mut exchange) = self.exchanges.remove(&stream) else { return };
        // Data nobody will read goes back to the connection's window.
        let unread = exchange.data.clear();
        if unread > 0 {
            self.conn.release(stream, unread);
        }
        if self.conn.is_open(stream) {
            self.conn.reset(stream, Reason::CANCEL);
        }
        if self.conn.has_output()
            || (self.exchanges.is_empty() && (self.abandoned || self.conn.is_closing() || self.closed))
        {
            // Output to write, or a connection that may now end.
            self.wake_task();
        }
        self.wake_waiting();
    }

    fn wake_waiting(&mut self) {
        for waker in self.waiting.drain(..) {
            waker.wake();
        }
    }

    /// Hands an event to its exchange.
    fn dispatch(&mut self, event: Event<'_>) {
        match event {
            Event::Head { stream, head, end_stream } => {
                let Some(exchange) = self.exchanges.get_mut(&stream) else { return };
                match head.status().and_then(|s| StatusCode::from_u16(s).ok()) {
                    Some(status) => {
                        exchange.head = Some((status, head));
                        exchange.ended = end_stream;
                    }
                    None => {
                        exchange.failed = Some(Failure::Broken);
                        self.conn.reset(stream, Reason::PROTOCOL_ERROR);
                    }
                }
                exchange.wake();
            }
            Event::Data { stream, data, end_stream } => {
                let Some(exchange) = self.exchanges.get_mut(&stream) else {
                    self.conn.release(stream, data.len());
                    return;
                };
                if !data.is_empty() {
                    exchange.data.push_back(Bytes::copy_from_slice(data));
                }
                exchange.ended |= end_stream;
                exchange.wake();
            }
            Event::Trailers { stream, trailers } => {
                let Some(exchange) = self.exchanges.get_mut(&stream) else { return };
                exchange.trailers = Some(trailers);
                exchange.ended = true;
                exchange.wake();
            }
            Event::Reset { stream, reason, .. } => {
                let Some(exchange) = self.exchanges.get_mut(&stream) else { return };
                // A target that answered in full may reset the rest of the request (NO_ERROR).
                if !(exchange.ended && reason == Reason::NO_ERROR) {
                    let refused = reason == Reason::REFUSED_STREAM && exchange.head.is_none();
                    exchange.failed = Some(if refused { Failure::Refused } else { Failure::Broken });
                }
                exchange.body = None;
                exchange.wake();
                self.wake_waiting();
            }
            Event::GoAway { last_stream, .. } => {
                for (&stream, exchange) in &mut self.exchanges {
                    if stream > last_stream {
                        exchange.failed = Some(Failure::Refused);
                        exchange.body = None;
                        exchange.wake();
                    }
                }
                self.wake_waiting();
            }
        }
    }

    /// The connection is over: every exchange still waiting fails.
    fn close(&mut self) {
        self.closed = true;
        for exchange in self.exchanges.values_mut() {
            if !exchange.ended {
                exchange.failed.get_or_insert(Failure::Broken);
            }
            exchange.body = None;
            exchange.wake();
        }
        self.wake_waiting();
    }

    /// Pumps every request body that has something to send.
    fn pump_bodies(&mut self, task: &Waker) {
        let conn = &mut self.conn;
        let exchanges = &mut self.exchanges;
        self.pumping.retain(|stream| {
            let Some(exchange) = exchanges.get_mut(stream) else { return false };
            let Some(body) = &mut exchange.body else { return false };
            let done = pump(conn, *stream, body, &mut exchange.pending, task);
            if done {
                exchange.body = None;
            }
            !done
        });
    }
}

impl Exchange {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

// === the connection's task ===

/// Runs the connection until it closes or is abandoned with nothing in flight.
async fn run(mut io: Upstream, shared: Arc<Shared>, addr: SocketAddr) {
    let mut rbuf = vec![0u8; READ_BUF].into_boxed_slice();
    let (mut start, mut end) = (0, 0);
    let mut wbuf: Vec<u8> = Vec::new();
    let mut wpos = 0;
    let mut unflushed = false;
    let mut read_closed = false;
    let done = std::future::poll_fn(|cx| {
        for _ in 0..ROUNDS {
            let mut busy = false;
            // Read, without the lock.
            if !read_closed {
                if rbuf.len() - end < 16 << 10 {
                    rbuf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                let mut buf = ReadBuf::new(&mut rbuf[end..]);
                match Pin::new(&mut io).poll_read(cx, &mut buf) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) if buf.filled().is_empty() => read_closed = true,
                    Poll::Ready(Ok(())) => {
                        end += buf.filled().len();
                        busy = true;
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "HTTP/2 connection to target failed");
                        read_closed = true;
                    }
                }
            }
            {
                let mut state = shared.lock();
                let state = &mut *state;
                if !state.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                    state.task = Some(cx.waker().clone());
                }
                while start < end {
                    match state.conn.read(&rbuf[start..end]) {
                        Ok((used, event)) => {
                            start += used;
                            match event {
                                Some(event) => state.dispatch(event),
                                None => break,
                            }
                        }
                        Err(e) => {
                            tracing::debug!(%addr, error = %e, "target broke HTTP/2");
                            read_closed = true;
                            break;
                        }
                    }
                }
                if start == end {
                    (start, end) = (0, 0);
                }
                if read_closed && !state.closed {
                    state.close();
                }
                // Bodies are pumped on every round: they wake this task when they fill, and a
                // window may have opened (so `take_writable` need not be asked).
                if !state.pumping.is_empty() {
                    state.pump_bodies(cx.waker());
                }
                if wpos >= wbuf.len() && state.conn.has_output() {
                    wbuf.clear();
                    wpos = 0;
                    std::mem::swap(&mut wbuf, state.conn.out());
                }
                if state.closed {
                    // Broken: what is in flight has failed already.
                    return Poll::Ready(());
                }
                let quiet = state.exchanges.is_empty() && wpos >= wbuf.len();
                if quiet && (state.abandoned || state.conn.is_closing()) {
                    state.closed = true;
                    return Poll::Ready(());
                }
            }
            // Write, without the lock.
            while wpos < wbuf.len() {
                match Pin::new(&mut io).poll_write(cx, &wbuf[wpos..]) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(n)) if n > 0 => {
                        wpos += n;
                        unflushed = true;
                        busy = true;
                    }
                    Poll::Ready(_) => {
                        shared.lock().close();
                        return Poll::Ready(());
                    }
                }
            }
            if unflushed {
                match Pin::new(&mut io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(_)) => {
                        shared.lock().close();
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
            }
            if !busy {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    });
    done.await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
}
