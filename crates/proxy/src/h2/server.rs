//! The socket side of HTTP/2 from clients: one task per connection runs the connection's rules
//! ([`http2::conn`](crate::http2::conn)), its socket and every one of its streams. A stream is
//! a slot polled in that task with a waker of its own (so a wake polls that stream alone):
//! first the request's future (`handle`: routing, auth, the exchange with a target), then the
//! response body, written as the client's windows allow. No task, channel or lock per stream
//! but the request body's pipe, which hyper's client reads from another task.
//!
//! Flow control is end to end: the client's DATA goes into the stream's pipe, and is given back
//! to the client's window only when the target's side has taken it; a response body is read
//! from the target only while the client's window has room.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Chunks, Pumped, Req, RespBody, pump_body};
use crate::http2::conn::{Config, Connection, Event, Head, IdState, Role};
use crate::http2::frame::Reason;

/// What the connection reads into: room for the largest frame (16 KiB and its header) and
/// most of the next.
const READ_BUF: usize = 32 << 10;
/// Output beyond this stops reading from the client until it is written (a client that sends
/// PINGs or requests and reads nothing cannot grow it without bound).
const OUT_HIGH: usize = 256 << 10;
/// Rounds of reading, polling and writing in one poll of the connection before it yields.
const ROUNDS: usize = 16;

/// A request's future, from its head to the response head.
pub(super) type Handling = Pin<Box<dyn Future<Output = Response<RespBody>> + Send>>;

/// Makes a request's future (`handle` over the connection's context).
pub(super) type Handler = dyn Fn(Req) -> Handling + Send + Sync;

/// One client connection's driver.
pub(super) struct Driver<'h, S> {
    io: S,
    conn: Connection,
    handler: &'h Handler,
    shared: Arc<Shared>,
    /// Read bytes `rbuf[start..end]` not yet taken by the connection.
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes being written: `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Written and not yet flushed.
    unflushed: bool,
    /// The client closed its side, or the socket failed: nothing more is read.
    read_closed: bool,
    slots: Vec<Option<Slot>>,
    /// Each slot's waker, made with the slot and kept for the streams it serves after (a wake
    /// of a finished stream polls the next one for nothing, which any future allows).
    wakers: Vec<(Waker, Arc<SlotWake>)>,
    /// The other of the two lists of woken slots.
    woken_spare: Vec<usize>,
    free: Vec<usize>,
    /// Which slot serves each open stream.
    by_stream: HashMap<u32, usize, IdState>,
    /// Slots whose response data waits for the client's window.
    blocked: Vec<usize>,
    /// The driver is finished: closing the socket, then done.
    shutting: bool,
}

/// One stream being served.
struct Slot {
    stream: u32,
    waker: Waker,
    /// The request body's pipe, while the client may still send on it.
    pipe: Option<Arc<Pipe>>,
    phase: Phase,
}

#[expect(
    clippy::large_enum_variant,
    reason = "a slot sends its body for most of its life: boxing the body would cost an allocation a stream"
)]
enum Phase {
    /// Routing and the exchange with a target.
    Waiting(Handling),
    /// The response body, its `pending` bytes waiting for the client's window.
    Sending { body: RespBody, pending: Bytes },
}

/// What the driver and its wakers share.
struct Shared {
    woken: Mutex<Woken>,
}

#[derive(Default)]
struct Woken {
    /// Slots to poll.
    slots: Vec<usize>,
    /// Pipes whose reader took data to give back to the client's window.
    released: Vec<Arc<Pipe>>,
    /// The connection's task.
    task: Option<Waker>,
}

/// A slot's waker: queues the slot and wakes the connection's task.
struct SlotWake {
    slot: usize,
    queued: AtomicBool,
    shared: Arc<Shared>,
}

/// The request body between the connection (which fills it) and the target's side (which reads
/// it, in hyper's client).
pub(crate) struct ReqBody {
    /// `None`: the request had no body (its head ended the stream), and nothing is shared.
    pipe: Option<Arc<Pipe>>,
}

struct Pipe {
    stream: u32,
    /// The body's length, from `content-length`.
    length: Option<u64>,
    state: Mutex<PipeState>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct PipeState {
    chunks: Chunks,
    trailers: Option<HeaderMap>,
    /// The client sent all of it.
    ended: bool,
    /// The client reset the stream.
    reset: bool,
    /// The reader let go of the body: what comes is given back at once.
    dropped: bool,
    /// Taken by the reader, not yet given back.
    taken: usize,
    /// This pipe is in [`Woken::released`].
    queued: bool,
    waker: Option<Waker>,
}

// === impl Driver ===

impl<'h, S: AsyncRead + AsyncWrite + Unpin> Driver<'h, S> {
    pub(super) fn new(io: S, config: Config, handler: &'h Handler) -> Self {
        Self {
            io,
            conn: Connection::new(Role::Server, config),
            handler,
            shared: Arc::new(Shared { woken: Mutex::new(Woken::default()) }),
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            wbuf: Vec::new(),
            wpos: 0,
            unflushed: false,
            read_closed: false,
            slots: Vec::new(),
            wakers: Vec::new(),
            woken_spare: Vec::new(),
            free: Vec::new(),
            by_stream: HashMap::default(),
            blocked: Vec::new(),
            shutting: false,
        }
    }

    /// Streams being served.
    pub(super) fn streams(&self) -> usize {
        self.by_stream.len()
    }

    /// Starts closing gracefully: streams the client opened finish, new ones are refused.
    pub(super) fn go_away(&mut self) {
        self.conn.go_away(Reason::NO_ERROR, b"");
    }

    /// Runs the connection until it is over: `Ready` once it is closed.
    pub(super) fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut woken = self.shared.woken.lock().unwrap_or_else(|e| e.into_inner());
            if !woken.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                woken.task = Some(cx.waker().clone());
            }
        }
        for _ in 0..ROUNDS {
            if self.shutting {
                return self.poll_shutdown(cx);
            }
            let Ok(mut busy) = self.poll_read(cx) else { return Poll::Ready(()) };
            busy |= self.run_woken();
            match self.poll_write(cx) {
                Ok(wrote) => busy |= wrote,
                Err(()) => return Poll::Ready(()),
            }
            if self.finished() {
                self.shutting = true;
                continue;
            }
            if !busy {
                return Poll::Pending;
            }
        }
        // Others' turn; this connection goes on at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Whether nothing is left to do: the connection failed, or is closing with no stream left;
    /// and all that was to be written is.
    fn finished(&self) -> bool {
        let quiet = self.by_stream.is_empty() && !self.conn.has_output() && self.wpos >= self.wbuf.len();
        quiet && (self.conn.is_closing() || self.read_closed)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A TLS close_notify, then the socket's write side; an error here changes nothing.
        let _ = std::task::ready!(Pin::new(&mut self.io).poll_shutdown(cx));
        Poll::Ready(())
    }

    /// Reads once, if there is room, and handles what came. `Err`: the socket failed.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, ()> {
        if self.read_closed || self.conn.out().len() + self.wbuf.len() > OUT_HIGH {
            return Ok(false);
        }
        if self.rbuf.len() - self.end < 16 << 10 {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut buf = ReadBuf::new(&mut self.rbuf[self.end..]);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Pending => return Ok(false),
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/2 client connection failed");
                return Err(());
            }
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.filled().len();
        if n == 0 {
            // The client is gone: its streams go with it.
            self.read_closed = true;
            self.clear();
            return Ok(true);
        }
        self.end += n;
        self.feed();
        Ok(true)
    }

    /// Hands what has been read to the connection, and its events to the streams.
    fn feed(&mut self) {
        loop {
            let (used, event) = match self.conn.read(&self.rbuf[self.start..self.end]) {
                Ok(step) => step,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/2 client broke the protocol");
                    self.read_closed = true;
                    self.clear();
                    return;
                }
            };
            self.start += used;
            let Some(event) = event else { break };
            match event {
                Event::Head { stream, head, end_stream } => self.open(stream, head, end_stream),
                Event::Data { stream, data, end_stream } => {
                    let len = data.len();
                    let pipe = self.by_stream.get(&stream).and_then(|&i| self.slots[i].as_ref()?.pipe.clone());
                    let kept = pipe.is_some_and(|pipe| pipe.push(data, end_stream));
                    if !kept {
                        // Nobody reads it: given back at once.
                        self.conn.release(stream, len);
                    }
                    if end_stream {
                        self.drop_pipe(stream);
                    }
                }
                Event::Trailers { stream, trailers } => {
                    if let Some(pipe) = self.by_stream.get(&stream).and_then(|&i| self.slots[i].as_ref()?.pipe.clone())
                    {
                        pipe.end_with(header_map(&trailers));
                    }
                    self.drop_pipe(stream);
                }
                Event::Reset { stream, .. } => self.remove(stream),
                // Clients send GOAWAY as they leave; what they opened still finishes.
                Event::GoAway { .. } => {}
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// A new stream: its request's future, polled at once.
    fn open(&mut self, stream: u32, head: Head, end_stream: bool) {
        let pipe = (!end_stream).then(|| {
            Arc::new(Pipe {
                stream,
                length: head.content_length(),
                state: Mutex::new(PipeState::default()),
                shared: self.shared.clone(),
            })
        });
        let body = ReqBody { pipe: pipe.clone() };
        if !sound(&head) {
            // A head HTTP/2 allows and the proxy does not take: CONNECT (no path), a method
            // that is not a token, a path with spaces or control bytes.
            let fields: [(&[u8], &[u8], bool); 1] = [(b":status", b"400", false)];
            self.conn.send_headers(stream, fields, true);
            if !end_stream {
                self.conn.reset(stream, Reason::NO_ERROR);
            }
            return;
        };
        let index = self.free.pop().unwrap_or_else(|| {
            let index = self.slots.len();
            let wake = Arc::new(SlotWake { slot: index, queued: AtomicBool::new(false), shared: self.shared.clone() });
            self.wakers.push((Waker::from(wake.clone()), wake));
            self.slots.push(None);
            index
        });
        let waker = self.wakers[index].0.clone();
        let phase = Phase::Waiting((self.handler)(Req { head, body }));
        self.slots[index] = Some(Slot { stream, waker, pipe, phase });
        self.by_stream.insert(stream, index);
        self.poll_slot(index);
    }

    /// Wakes every slot: each stream looks again at what it waits for (its response deadline).
    pub(super) fn wake_all(&self) {
        for (waker, _) in &self.wakers {
            waker.wake_by_ref();
        }
    }

    /// Polls the slots that were woken, and those whose data waited for a window that opened.
    fn run_woken(&mut self) -> bool {
        // The woken list trades places with an empty one of the same capacity: no allocation
        // a turn.
        let mut slots = std::mem::take(&mut self.woken_spare);
        let released = {
            let mut woken = self.shared.woken.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut woken.slots, &mut slots);
            std::mem::take(&mut woken.released)
        };
        let mut busy = !slots.is_empty() || !released.is_empty();
        for pipe in released {
            let taken = pipe.take_released();
            if taken > 0 {
                self.conn.release(pipe.stream, taken);
            }
        }
        for &index in &slots {
            // Cleared even when the slot's stream is gone: the waker serves the slot's next
            // stream, whose wakes a flag left set would drop.
            if let Some((_, wake)) = self.wakers.get(index) {
                wake.queued.store(false, Ordering::Release);
            }
            if self.slots.get(index).is_some_and(Option::is_some) {
                self.poll_slot(index);
            }
        }
        slots.clear();
        self.woken_spare = slots;
        if self.conn.take_writable() && !self.blocked.is_empty() {
            busy = true;
            for index in std::mem::take(&mut self.blocked) {
                if self.slots.get(index).is_some_and(Option::is_some) {
                    self.poll_slot(index);
                }
            }
        }
        busy
    }

    /// Moves a stream on as far as it goes now.
    fn poll_slot(&mut self, index: usize) {
        // Worked on in its place (a slot is a few hundred bytes, moved out and back otherwise).
        let Some(Some(slot)) = self.slots.get_mut(index) else { return };
        if !Self::step(&mut self.conn, &mut self.blocked, slot, index) {
            let (stream, pipe) = (slot.stream, slot.pipe.take());
            // Dropped where it is.
            self.slots[index] = None;
            self.finish(index, stream, pipe);
        }
    }

    /// [`Driver::poll_slot`]'s work: `false` once the stream is done. `blocked` takes the slot
    /// if its data waits for the client's window.
    fn step(conn: &mut Connection, blocked: &mut Vec<usize>, slot: &mut Slot, index: usize) -> bool {
        let stream = slot.stream;
        let mut cx = Context::from_waker(&slot.waker);
        loop {
            match &mut slot.phase {
                Phase::Waiting(handling) => {
                    let Poll::Ready(response) = handling.as_mut().poll(&mut cx) else { return true };
                    let (parts, body) = response.into_parts();
                    let end = body.is_end_stream();
                    let status = [(&b":status"[..], parts.status.as_str().as_bytes(), false)];
                    let own =
                        parts.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes(), v.is_sensitive()));
                    let fields = status.into_iter().chain(body.target_fields()).chain(own);
                    if !conn.send_headers(stream, fields, end) || end {
                        return false;
                    }
                    slot.phase = Phase::Sending { body, pending: Bytes::new() };
                }
                Phase::Sending { body, pending } => {
                    return match pump_body(conn, stream, body, pending, &mut cx) {
                        Pumped::Blocked => {
                            blocked.push(index);
                            true
                        }
                        Pumped::Waiting => true,
                        Pumped::Done => false,
                        Pumped::Failed => {
                            conn.reset(stream, Reason::INTERNAL_ERROR);
                            false
                        }
                    };
                }
            }
        }
    }

    /// A stream whose response has ended (or cannot go on), its slot emptied. A client still
    /// sending its request is told it need not (RST_STREAM NO_ERROR, RFC 9113 §8.1).
    fn finish(&mut self, index: usize, stream: u32, pipe: Option<Arc<Pipe>>) {
        self.free.push(index);
        self.by_stream.remove(&stream);
        if self.conn.is_open(stream) {
            self.conn.reset(stream, Reason::NO_ERROR);
        }
        if let Some(pipe) = pipe {
            pipe.close(false);
        }
    }

    /// A stream the client reset: its work is dropped (which cancels the target's stream).
    fn remove(&mut self, stream: u32) {
        let Some(index) = self.by_stream.remove(&stream) else { return };
        if let Some(slot) = self.slots[index].take() {
            self.free.push(index);
            if let Some(pipe) = slot.pipe {
                pipe.close(true);
            }
        }
    }

    /// The client has sent all of a stream's request.
    fn drop_pipe(&mut self, stream: u32) {
        if let Some(&index) = self.by_stream.get(&stream)
            && let Some(slot) = self.slots[index].as_mut()
        {
            slot.pipe = None;
        }
    }

    /// Every stream goes (the connection is over).
    fn clear(&mut self) {
        let streams: Vec<u32> = self.by_stream.keys().copied().collect();
        for stream in streams {
            self.remove(stream);
        }
    }

    /// Writes what the connection has to say. `Err`: the socket failed.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, ()> {
        let mut wrote = false;
        loop {
            if self.wpos >= self.wbuf.len() {
                self.wbuf.clear();
                self.wpos = 0;
                if !self.conn.has_output() {
                    break;
                }
                std::mem::swap(&mut self.wbuf, self.conn.out());
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Pending => return Ok(wrote),
                Poll::Ready(Ok(0)) => return Err(()),
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    wrote = true;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "HTTP/2 client connection failed");
                    return Err(());
                }
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {}
            }
        }
        Ok(wrote)
    }
}

impl<S> Drop for Driver<'_, S> {
    fn drop(&mut self) {
        // Readers of request bodies learn that no more is coming.
        for slot in self.slots.iter_mut().filter_map(Option::take) {
            if let Some(pipe) = slot.pipe {
                pipe.close(true);
            }
        }
    }
}

/// Whether the proxy takes a request head: a path (so not CONNECT's authority form) of visible
/// ASCII, and a method that is a token.
fn sound(head: &Head) -> bool {
    let path_ok = head.path().is_some_and(|p| p.iter().fold(true, |ok, &b| ok & (b > 0x20) & (b < 0x7f)));
    path_ok && head.method().is_some_and(|m| Method::from_bytes(m).is_ok())
}

/// Trailers as a header map (fields `http` refuses are left out).
pub(super) fn header_map(trailers: &Head) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(trailers.fields().len());
    for (name, value, _) in trailers.fields() {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    map
}

// === impl SlotWake ===

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let task = {
            let mut woken = self.shared.woken.lock().unwrap_or_else(|e| e.into_inner());
            woken.slots.push(self.slot);
            woken.task.clone()
        };
        if let Some(task) = task {
            task.wake();
        }
    }
}

// === impl Pipe ===

impl Pipe {
    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Data from the client; `false` when nobody will read it (the caller gives it back).
    fn push(&self, data: &[u8], end: bool) -> bool {
        let mut state = self.lock();
        if state.dropped {
            return false;
        }
        if !data.is_empty() {
            state.chunks.push_back(Bytes::copy_from_slice(data));
        }
        state.ended |= end;
        wake_reader(state);
        !data.is_empty()
    }

    fn end_with(&self, trailers: HeaderMap) {
        let mut state = self.lock();
        state.trailers = Some(trailers);
        state.ended = true;
        wake_reader(state);
    }

    /// The stream is over on the client's side: `reset` if it broke off.
    fn close(&self, reset: bool) {
        let mut state = self.lock();
        if reset && !state.ended {
            state.reset = true;
        }
        state.ended = true;
        wake_reader(state);
    }

    /// What the reader took since the last call.
    fn take_released(&self) -> usize {
        let mut state = self.lock();
        state.queued = false;
        std::mem::take(&mut state.taken)
    }

    /// `n` bytes were taken: queued to be given back to the client's window.
    fn taken(self: &Arc<Self>, state: &mut PipeState, n: usize) -> Option<Waker> {
        state.taken += n;
        if std::mem::replace(&mut state.queued, true) {
            return None;
        }
        let mut woken = self.shared.woken.lock().unwrap_or_else(|e| e.into_inner());
        woken.released.push(self.clone());
        woken.task.clone()
    }
}

/// Wakes the pipe's reader, after letting go of the lock.
fn wake_reader(mut state: std::sync::MutexGuard<'_, PipeState>) {
    let waker = state.waker.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

// === impl ReqBody ===

impl Body for ReqBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let Some(pipe) = &self.pipe else { return Poll::Ready(None) };
        let mut state = pipe.lock();
        if let Some(chunk) = state.chunks.pop_front() {
            let task = pipe.taken(&mut state, chunk.len());
            drop(state);
            if let Some(task) = task {
                task.wake();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if state.reset {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the client reset the stream",
            ))));
        }
        if let Some(trailers) = state.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let Some(pipe) = &self.pipe else { return true };
        let state = pipe.lock();
        state.ended && state.chunks.is_empty() && state.trailers.is_none() && !state.reset
    }

    fn size_hint(&self) -> SizeHint {
        match self.pipe.as_ref().map_or(Some(0), |pipe| pipe.length) {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for ReqBody {
    fn drop(&mut self) {
        // What the reader leaves, and all that comes after, goes back to the client's window.
        let Some(pipe) = &self.pipe else { return };
        let mut state = pipe.lock();
        state.dropped = true;
        let left = state.chunks.clear();
        let task = if left > 0 { pipe.taken(&mut state, left) } else { None };
        drop(state);
        if let Some(task) = task {
            task.wake();
        }
    }
}
