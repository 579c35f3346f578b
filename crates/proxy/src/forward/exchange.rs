//! One request forwarded to a target and its response brought back, by the client connection's
//! own task: the request head (rewritten, `headers`) and body go out on a socket taken from the
//! target's pool while the response head and body come back, both directions polled together so
//! that a target answering before it has read the whole request body never deadlocks. Bodies
//! stream through fixed buffers (never held whole); chunked bodies are decoded and re-framed.
//!
//! A small keep-alive exchange costs four system calls: the request (head and body in one write),
//! the response (one read), and the answer to the client (head and body in one write), plus the
//! client's read in `conn`.
//!
//! Failures: a target that cannot be connected to never saw the request, which goes to the next
//! target of the group (twice at most); a reused keep-alive socket the target had closed is
//! replaced, once the request is known not to have reached it (no body, no response byte); a
//! target that breaks the exchange or sends something that is not HTTP gets the client a 502
//! before the response started, a closed connection after; a response head later than the
//! response timeout is a 504.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::InFlightGuard;
use crate::conn::{Event, Expired, Next, Session};
use crate::error::{ErrorKind, ProxyError};
use crate::forward::Upstream;
use crate::h1::{Buf, ChunkDecoder, Framing, RequestHead, parse_response_into, response_framing};
use crate::headers::{self, ClientFraming, Forwarded};
use crate::request::Forward;

/// How many more targets a request that could not be connected is offered to.
const CONNECT_RETRIES: usize = 2;

/// How many reused sockets found closed a request may go through before a fresh one.
const STALE_RETRIES: usize = 2;

/// Largest response head a target may send.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How much a read asks for at least.
const READ_CHUNK: usize = 16 * 1024;

/// Output gathered before it is written.
const WRITE_BATCH: usize = 64 * 1024;

/// What is left of a request body to send.
enum ReqBody {
    Done,
    Length(u64),
    Chunked(ChunkDecoder),
}

/// Where the response stands.
enum Resp {
    Head,
    Body { framing: Framing, left: u64, decoder: ChunkDecoder, client: ClientFraming },
    Done,
}

/// The request being forwarded, as the exchange needs it.
#[derive(Clone, Copy)]
struct Req<'h> {
    head: &'h RequestHead,
    request_id: &'h [u8; 36],
}

/// One exchange on one socket.
struct Exchange {
    /// Bytes of `qbuf` written to the target.
    qpos: usize,
    /// The target stopped taking the request (it may still answer).
    req_failed: bool,
    resp: Resp,
    /// Bytes of `out` written to the client.
    opos: usize,
    /// Any byte of a response arrived.
    got_bytes: bool,
    /// The response head went to the client.
    responded: bool,
    /// The response body has all been gathered into `out`.
    body_done: bool,
    /// The target keeps the socket open after this response.
    target_keeps: bool,
    /// The client's connection stays open after this response.
    client_keeps: bool,
    /// A failure before any response byte may send the request again (see [`Outcome::Stale`]).
    retryable: bool,
    /// The response clock runs (it starts once the whole request is sent).
    clock_started: bool,
}

/// How an exchange ended.
enum Outcome {
    /// The response was delivered: whether the socket can serve another request.
    Done { reusable: bool, next: Next },
    /// The socket broke before any response byte, for a request that may be sent again (an
    /// idempotent method without a body: RFC 9110 §9.2.2): try another socket, and another
    /// target unless the socket was a reused one (the target had closed it).
    Stale,
    /// Nothing was sent to the client yet: it gets this error.
    Failed(ErrorKind),
    /// The response broke off after it started: the client connection closes.
    Broken,
}

impl Session {
    /// Forwards the request whose head is at the start of `rbuf` to a target of `fw.group` and
    /// brings its response back. `Err` carries the error the client gets, and whether the
    /// request body was left unread (the connection must then close). `started`: when the
    /// proxy took the request.
    pub(crate) async fn forward(
        &mut self,
        head: &RequestHead,
        fw: Forward<'_>,
        request_id: &[u8; 36],
        started: tokio::time::Instant,
    ) -> Result<Next, (ProxyError, bool)> {
        if self.ubuf.capacity() == 0 {
            self.ubuf = Buf::with_capacity(READ_CHUNK);
        }
        self.qbuf.clear();
        {
            let buf = self.rbuf.bytes();
            // A request without a valid `traceparent` starts a trace here.
            if headers::find_traceparent(buf, &head.fields).is_none() {
                self.meter.trace = Some(headers::new_traceparent());
            }
            let f = Forwarded {
                client_ip: &self.conn.client_ip,
                port: fw.port,
                tls: self.conn.tls,
                network: fw.network,
                target: fw.target_header,
                request_id,
                identity: fw.identity.as_deref(),
                traceparent: self.meter.trace.as_ref().map(|t| &t[..]),
            };
            let authority = fw.authority.clone().map(|a| &buf[a]);
            // An absolute-form target without a path asks for `/` (RFC 9112 §3.2.1).
            let path = fw.normalized.as_deref().unwrap_or(&buf[fw.path.clone()]);
            let rooted;
            let path = match path.first() {
                Some(b'/' | b'*') => path,
                _ => {
                    rooted = [b"/", path].concat();
                    &rooted
                }
            };
            headers::write_request(&mut self.qbuf, buf, head, path, authority, head.framing, &f);
        }
        self.rbuf.consume(head.len);
        let mut body = match head.framing {
            Framing::Length(n) => ReqBody::Length(n),
            Framing::Chunked => ReqBody::Chunked(ChunkDecoder::default()),
            Framing::Empty | Framing::Close => ReqBody::Done,
        };
        let left = |body: &ReqBody| !matches!(body, ReqBody::Done);
        // The body bytes already here go out with the head.
        if let Err(kind) = self.move_body(&mut body) {
            return Err((ProxyError::new(kind), true));
        }
        if head.expects_continue && left(&body) && self.rbuf.is_empty() {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if self.flush().await.is_err() {
                return Ok(Next::Close);
            }
        }
        let retry_safe = head.idempotent && matches!(head.framing, Framing::Empty | Framing::Length(0));
        let mut target = fw.group.pick().map_err(|k| (ProxyError::new(k), left(&body)))?;
        let (mut connect_failures, mut stale, mut broken) = (0, 0, 0);
        loop {
            self.meter.target = Some(target.pool.addr());
            let idle = if stale < STALE_RETRIES { target.pool.take() } else { None };
            let (mut stream, reused) = match idle {
                Some(stream) => (stream, true),
                None => match target.pool.connect().await {
                    Ok(stream) => (stream, false),
                    Err(kind) => {
                        if connect_failures < CONNECT_RETRIES {
                            // The target never saw the request: the next one gets it.
                            connect_failures += 1;
                            target = fw.group.pick().map_err(|k| (ProxyError::new(k), left(&body)))?;
                            continue;
                        }
                        return Err((ProxyError::new(kind), left(&body)));
                    }
                },
            };
            let _in_flight = InFlightGuard::new(&target.in_flight);
            let mut x = Exchange {
                qpos: 0,
                req_failed: false,
                resp: Resp::Head,
                opos: 0,
                got_bytes: false,
                responded: false,
                body_done: false,
                target_keeps: false,
                client_keeps: head.keep_alive && !self.timers.clock.draining(),
                retryable: retry_safe && (reused || broken < CONNECT_RETRIES),
                clock_started: false,
            };
            if matches!(body, ReqBody::Done) {
                // All of the request goes out at once, in the turn that took it: the target's
                // time starts with the request's (the clock is not read again).
                self.timers.clock.await_response(started);
                self.meter.sent = Some(started);
                x.clock_started = true;
            }
            let req = Req { head, request_id };
            let outcome = self.run(&mut stream, &mut x, &mut body, req).await;
            self.timers.clock.response_arrived();
            match outcome {
                Outcome::Done { reusable, next } => {
                    tracing::trace!(to = ?target.key, "forwarded");
                    // Bytes past the response's end answer nothing: they never reach the next
                    // request (on this connection or another), and the socket is not reused.
                    let clean = self.ubuf.is_empty();
                    self.ubuf.consume(self.ubuf.len());
                    if reusable && clean {
                        target.pool.put(stream);
                    }
                    return Ok(next);
                }
                Outcome::Stale => {
                    self.ubuf.consume(self.ubuf.len());
                    if reused {
                        stale += 1;
                    } else {
                        // A target that breaks a fresh connection (its process died, say): an
                        // idempotent request without a body goes to the next target.
                        tracing::debug!(to = ?target.key, "target broke the connection; trying another");
                        broken += 1;
                        target = fw.group.pick().map_err(|k| (ProxyError::new(k), left(&body)))?;
                    }
                }
                Outcome::Failed(kind) => {
                    self.ubuf.consume(self.ubuf.len());
                    return Err((ProxyError::new(kind), left(&body)));
                }
                Outcome::Broken => {
                    self.ubuf.consume(self.ubuf.len());
                    self.out.clear();
                    return Ok(Next::Close);
                }
            }
        }
    }

    /// Drives one exchange to its end, with the clocks running.
    async fn run(&mut self, up: &mut Upstream, x: &mut Exchange, body: &mut ReqBody, req: Req<'_>) -> Outcome {
        loop {
            match self.wait(|s, cx| s.poll_exchange(cx, up, x, body, req)).await {
                Ok(outcome) => return outcome,
                // Told to close: the response says so if its head has not gone out yet; once
                // it said keep-alive, the connection answers one more request (`LAST_CALL`)
                // rather than close under a client that may already be sending it.
                Err(Event::Drain) if !x.responded => x.client_keeps = false,
                Err(Event::Drain) => {}
                Err(Event::Expired(Expired::Response)) if !x.responded => return Outcome::Failed(ErrorKind::Timeout),
                Err(Event::Expired(_)) => {
                    return if x.responded { Outcome::Broken } else { Outcome::Failed(ErrorKind::Timeout) };
                }
            }
        }
    }

    /// Moves the request body bytes in `rbuf` to `qbuf`, framed for the target.
    fn move_body(&mut self, body: &mut ReqBody) -> Result<(), ErrorKind> {
        if self.guard.is_poisoned() {
            return Err(ErrorKind::ClientBody);
        }
        match body {
            ReqBody::Done => {}
            ReqBody::Length(left) => {
                let n = usize::try_from(*left).map_or(self.rbuf.len(), |l| l.min(self.rbuf.len()));
                self.qbuf.extend_from_slice(&self.rbuf.bytes()[..n]);
                self.rbuf.consume(n);
                *left -= n as u64;
                if *left == 0 {
                    *body = ReqBody::Done;
                }
            }
            ReqBody::Chunked(decoder) => {
                while !self.rbuf.is_empty() && self.qbuf.len() < WRITE_BATCH {
                    let step = decoder.decode(self.rbuf.bytes()).map_err(|()| ErrorKind::ClientBody)?;
                    if let Some(data) = step.data.filter(|d| !d.is_empty()) {
                        chunk(&mut self.qbuf, &self.rbuf.bytes()[data]);
                    }
                    self.rbuf.consume(step.used);
                    if step.done {
                        self.qbuf.extend_from_slice(b"0\r\n\r\n");
                        *body = ReqBody::Done;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves response body bytes from `ubuf` to `out`, framed for the client; true once the
    /// body has ended.
    fn move_response(&mut self, resp: &mut Resp, eof: bool) -> Result<bool, ()> {
        let Resp::Body { framing, left, decoder, client } = resp else { return Ok(true) };
        let chunked = *client == ClientFraming::Chunked;
        let done = match framing {
            Framing::Empty => true,
            Framing::Length(_) => {
                let n = usize::try_from(*left).map_or(self.ubuf.len(), |l| l.min(self.ubuf.len()));
                self.out.extend_from_slice(&self.ubuf.bytes()[..n]);
                self.ubuf.consume(n);
                *left -= n as u64;
                *left == 0
            }
            Framing::Close => {
                if chunked {
                    chunk(&mut self.out, self.ubuf.bytes());
                } else {
                    self.out.extend_from_slice(self.ubuf.bytes());
                }
                self.ubuf.consume(self.ubuf.len());
                eof
            }
            Framing::Chunked => {
                let mut done = false;
                while !self.ubuf.is_empty() && self.out.len() < WRITE_BATCH {
                    let step = decoder.decode(self.ubuf.bytes())?;
                    if let Some(data) = step.data.filter(|d| !d.is_empty()) {
                        let data = &self.ubuf.bytes()[data];
                        if chunked {
                            chunk(&mut self.out, data);
                        } else {
                            self.out.extend_from_slice(data);
                        }
                    }
                    self.ubuf.consume(step.used);
                    if step.done {
                        done = true;
                        break;
                    }
                }
                done
            }
        };
        if done && chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(done)
    }

    /// Both directions of an exchange, as far as they go without waiting.
    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        up: &mut Upstream,
        x: &mut Exchange,
        body: &mut ReqBody,
        req: Req<'_>,
    ) -> Poll<Outcome> {
        let Req { head, request_id } = req;
        // The request: what is owed to the target, then more of the body.
        while !x.req_failed {
            if x.qpos < self.qbuf.len() {
                match Pin::new(&mut *up).poll_write(cx, &self.qbuf[x.qpos..]) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(n)) if n > 0 => {
                        x.qpos += n;
                        continue;
                    }
                    Poll::Ready(_) => {
                        if x.retryable && !x.got_bytes {
                            return Poll::Ready(Outcome::Stale);
                        }
                        // The target stopped reading; it may still have answered.
                        x.req_failed = true;
                        break;
                    }
                }
            }
            // TLS records still in the session's buffer (a no-op in cleartext).
            match Pin::new(&mut *up).poll_flush(cx) {
                Poll::Pending => break,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    if x.retryable && !x.got_bytes {
                        return Poll::Ready(Outcome::Stale);
                    }
                    x.req_failed = true;
                    break;
                }
            }
            if matches!(body, ReqBody::Done) {
                break;
            }
            if self.rbuf.is_empty() {
                if self.client_eof {
                    return Poll::Ready(self.client_body_broke(x));
                }
                match self.poll_read_client(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(0)) => {
                        self.client_eof = true;
                        return Poll::Ready(self.client_body_broke(x));
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(self.client_body_broke(x)),
                    Poll::Ready(Ok(_)) => {}
                }
            }
            self.qbuf.clear();
            x.qpos = 0;
            if self.move_body(body).is_err() {
                return Poll::Ready(self.client_body_broke(x));
            }
        }
        // The whole request is out (or the target stopped taking it): its response is due.
        if !x.clock_started && (x.req_failed || (matches!(body, ReqBody::Done) && x.qpos == self.qbuf.len())) {
            let now = tokio::time::Instant::now();
            self.timers.clock.await_response(now);
            self.meter.sent = Some(now);
            x.clock_started = true;
        }
        // The response: its head, then its body, gathered and written.
        loop {
            match &mut x.resp {
                Resp::Head => {
                    if !self.ubuf.is_empty() {
                        match parse_response_into(self.ubuf.bytes(), &mut self.spare_fields.response) {
                            Err(()) => return Poll::Ready(Outcome::Failed(ErrorKind::UpstreamBroken)),
                            Ok(Some(h)) if h.status == 101 => {
                                // The proxy never asks a target to upgrade (it strips `Upgrade`).
                                return Poll::Ready(Outcome::Failed(ErrorKind::UpstreamBroken));
                            }
                            Ok(Some(h)) if (100..200).contains(&h.status) => {
                                self.ubuf.consume(h.len);
                                continue;
                            }
                            Ok(Some(h)) => {
                                self.timers.clock.response_arrived();
                                self.meter.status = h.status;
                                self.meter.answered = Some(tokio::time::Instant::now());
                                let framing = response_framing(&h, head.is_head);
                                let client = match framing {
                                    Framing::Empty => ClientFraming::None,
                                    Framing::Length(n) => ClientFraming::Length(n),
                                    Framing::Chunked | Framing::Close if head.minor == 1 => ClientFraming::Chunked,
                                    Framing::Chunked | Framing::Close => ClientFraming::Close,
                                };
                                if client == ClientFraming::Close {
                                    x.client_keeps = false;
                                }
                                let keep = match (x.client_keeps, head.minor) {
                                    (false, _) => Some(false),
                                    (true, 0) => Some(true),
                                    (true, _) => None,
                                };
                                x.target_keeps = crate::h1::target_keeps(&h, framing);
                                headers::write_response(&mut self.out, self.ubuf.bytes(), &h, client, request_id, keep);
                                self.ubuf.consume(h.len);
                                crate::h1::give_back(&mut self.spare_fields.response, h.fields);
                                let left = match framing {
                                    Framing::Length(n) => n,
                                    _ => 0,
                                };
                                x.resp = Resp::Body { framing, left, decoder: ChunkDecoder::default(), client };
                                x.responded = true;
                                continue;
                            }
                            Ok(None) => {
                                if self.ubuf.len() >= MAX_RESPONSE_HEAD {
                                    return Poll::Ready(Outcome::Failed(ErrorKind::UpstreamBroken));
                                }
                            }
                        }
                    }
                    match poll_read(up, &mut self.ubuf, cx, MAX_RESPONSE_HEAD + READ_CHUNK) {
                        Poll::Pending => {
                            if self.client_left(body, cx) {
                                return Poll::Ready(Outcome::Broken);
                            }
                            break;
                        }
                        Poll::Ready(Ok(n)) if n > 0 => x.got_bytes = true,
                        Poll::Ready(_) => {
                            if x.retryable && !x.got_bytes {
                                return Poll::Ready(Outcome::Stale);
                            }
                            return Poll::Ready(Outcome::Failed(ErrorKind::UpstreamBroken));
                        }
                    }
                }
                Resp::Body { .. } => {
                    if !x.body_done {
                        match self.move_response(&mut x.resp, false) {
                            Ok(done) => x.body_done = done,
                            Err(()) => return Poll::Ready(Outcome::Broken),
                        }
                    }
                    if x.opos < self.out.len() {
                        match self.poll_write_client(cx, &mut x.opos) {
                            Poll::Pending => break,
                            Poll::Ready(Err(_)) => return Poll::Ready(Outcome::Broken),
                            Poll::Ready(Ok(())) => {
                                self.out.clear();
                                x.opos = 0;
                            }
                        }
                    }
                    if x.body_done {
                        if self.out.is_empty() {
                            x.resp = Resp::Done;
                        }
                        continue;
                    }
                    if self.ubuf.is_empty() {
                        match poll_read(up, &mut self.ubuf, cx, READ_CHUNK) {
                            Poll::Pending => break,
                            Poll::Ready(Ok(n)) if n > 0 => {}
                            Poll::Ready(Ok(_)) => {
                                // The target closed: the end of a body that runs to close,
                                // else a body cut short.
                                let ends = matches!(&x.resp, Resp::Body { framing: Framing::Close, .. });
                                if !ends {
                                    return Poll::Ready(Outcome::Broken);
                                }
                                x.body_done = self.move_response(&mut x.resp, true).unwrap_or(true);
                                x.target_keeps = false;
                            }
                            Poll::Ready(Err(_)) => return Poll::Ready(Outcome::Broken),
                        }
                    }
                }
                Resp::Done => {
                    let sent = matches!(body, ReqBody::Done) && !x.req_failed && x.qpos == self.qbuf.len();
                    // A response that came before the whole request body leaves the client's
                    // stream mid-body: that connection cannot go on.
                    let next = if x.client_keeps && sent { Next::KeepAlive } else { Next::Close };
                    return Poll::Ready(Outcome::Done { reusable: x.target_keeps && sent, next });
                }
            }
        }
        Poll::Pending
    }

    /// Whether the client went away while its response is awaited (the target's head not yet
    /// whole, `body` all sent): it gets none, and the target's socket and its in-flight count
    /// are let go now, not at the response timeout. (A client that shuts its side after the
    /// request is gone too: there is no half-close.) Asked only when the target has nothing
    /// more to read, so that the client's socket is watched while the exchange waits; a read
    /// here costs no system call until the client's socket is readable.
    fn client_left(&mut self, body: &ReqBody, cx: &mut Context<'_>) -> bool {
        if !matches!(body, ReqBody::Done) || self.client_eof || self.refused.is_some() || self.rbuf.len() >= READ_CHUNK
        {
            return false;
        }
        match self.poll_read_client(cx) {
            Poll::Pending | Poll::Ready(Ok(1..)) => false,
            Poll::Ready(_) => {
                self.client_eof = true;
                true
            }
        }
    }

    /// The client's request body broke off or was malformed: before the response, a 400; after
    /// it started, the connection closes.
    fn client_body_broke(&self, x: &Exchange) -> Outcome {
        if x.responded { Outcome::Broken } else { Outcome::Failed(ErrorKind::ClientBody) }
    }
}

/// Reads from `stream` into `buf` (which may grow to `limit`): `Ok(0)` at end of stream.
pub(crate) fn poll_read(
    stream: &mut Upstream,
    buf: &mut Buf,
    cx: &mut Context<'_>,
    limit: usize,
) -> Poll<std::io::Result<usize>> {
    let Some(spare) = buf.spare(READ_CHUNK.min(limit), limit) else {
        return Poll::Ready(Err(std::io::Error::other("response head too large")));
    };
    let mut rb = ReadBuf::new(spare);
    match Pin::new(stream).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            buf.filled(n);
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// `data` as one chunk of a chunked body.
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut len = data.len();
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[len & 0xf];
        len >>= 4;
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}
