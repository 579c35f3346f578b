//! An HTTP/2 request without a body, to an HTTP1 target group: written here as an HTTP/1.1 head
//! on a connection of the pools the HTTP/1.1 path uses, and its response read in place (the
//! head parsed where it lies in the buffer, the body framed by its length, chunks or the
//! connection's end). No client task, channel or header map on the way down; the connection
//! goes back to its pool when the body has been read to its end.
//!
//! Requests with a body keep hyper's client (`send_h1`): their body has to be sent while the
//! target may already answer, which a sender task does well.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use super::Sent;
use crate::error::ErrorKind;
use crate::forward::exchange::poll_read;
use crate::forward::{Pool, Upstream};
use crate::h1::{
    Buf, ChunkDecoder, Field, Framing, Name, ResponseHead, parse_response, response_framing, target_keeps,
};

/// The longest response head a target may send.
const MAX_HEAD: usize = 64 * 1024;
/// How much a read takes at most.
const READ_CHUNK: usize = 16 * 1024;

/// A target's response body, read from its HTTP/1.1 connection as the client's stream asks,
/// and the fields of its head.
pub(crate) struct H1Body {
    /// The response head's fields, sent with the status before the body.
    fields: TargetFields,
    /// The connection, until the body ends (then back to the pool, or closed).
    stream: Option<Upstream>,
    buf: Buf,
    state: State,
    pool: Arc<Pool>,
    /// The target keeps the connection after this response.
    keep_alive: bool,
}

/// Where the body is.
enum State {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(ChunkDecoder),
    /// Until the target closes.
    Close,
    Done,
}

/// Sends `head` (a whole HTTP/1.1 request head, no body) to the pool's target and reads the
/// response head (the caller bounds how long that may take). `is_head`: the request's method
/// is HEAD (no body follows the response head); `idempotent`: the request may be sent again (to
/// the next target) when the connection broke before any answer: a kept-alive one the target
/// closed meanwhile, or a target that went away (as on HTTP/1.1, a killed task loses no GET).
pub(crate) async fn send(
    pool: &Arc<Pool>,
    head: &[u8],
    is_head: bool,
    idempotent: bool,
    request_id: &[u8; 36],
) -> Result<Response<H1Body>, Sent> {
    let mut stream = match pool.take() {
        Some(stream) => stream,
        None => Box::pin(pool.connect()).await.map_err(Sent::NotConnected)?,
    };
    // The connection broke before any answer: an idempotent request may go again.
    let stale = |kind| if idempotent { Sent::NotConnected(kind) } else { Sent::Failed(kind) };
    // Flushed: over TLS, a write may leave records in the session's buffer.
    let written = match stream.write_all(head).await {
        Ok(()) => stream.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::debug!(error = %e, "cannot write the request to the target");
        return Err(stale(ErrorKind::UpstreamBroken));
    }
    let mut buf = Buf::pooled();
    // Whether the target sent anything at all (after which the request is never sent again).
    let mut answered = false;
    let broken = || Sent::Failed(ErrorKind::UpstreamBroken);
    let (status, fields, framing, keep_alive) = loop {
        match parse_response(buf.bytes()).map_err(|()| broken())? {
            // An interim response (100 Continue, 103 Early Hints): the final one follows.
            Some(h) if (100..200).contains(&h.status) && h.status != 101 => buf.consume(h.len),
            // Nothing can be upgraded across HTTP/2.
            Some(h) if h.status == 101 => return Err(broken()),
            Some(h) => {
                let framing = response_framing(&h, is_head);
                let keep_alive = target_keeps(&h, framing);
                let status = StatusCode::from_u16(h.status).map_err(|_| broken())?;
                let len = h.len;
                let fields = TargetFields::new(buf.bytes(), h, request_id);
                buf.consume(len);
                break (status, fields, framing, keep_alive);
            }
            None if buf.len() >= MAX_HEAD => return Err(broken()),
            None => {
                match std::future::poll_fn(|cx| poll_read(&mut stream, &mut buf, cx, MAX_HEAD + READ_CHUNK)).await {
                    Ok(0) if !answered => return Err(stale(ErrorKind::UpstreamBroken)),
                    Ok(0) => return Err(broken()),
                    Ok(_) => answered = true,
                    Err(e) => {
                        tracing::debug!(error = %e, "target broke the exchange");
                        return Err(if answered { broken() } else { stale(ErrorKind::UpstreamBroken) });
                    }
                }
            }
        }
    };
    let state = match framing {
        Framing::Empty | Framing::Length(0) => State::Done,
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::Chunked(ChunkDecoder::default()),
        Framing::Close => State::Close,
    };
    let mut body = H1Body { fields, stream: Some(stream), buf, state, pool: pool.clone(), keep_alive };
    if matches!(body.state, State::Done) {
        body.end();
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    Ok(response)
}

/// A target's response fields as HTTP/2 carries them: its head copied, with the names
/// lowercased, and the fields kept; those of the connection go, and so does a `Content-Length`
/// that does not frame the body (one beside `Transfer-Encoding`, which would contradict the
/// body HTTP/2 carries), and `x-amzn-requestid`: the proxy's own follows the target's fields
/// (kept after them in `text`, so that the response needs no header map). The parser checked
/// names are tokens and values have no CR, LF or NUL.
struct TargetFields {
    text: Vec<u8>,
    fields: Vec<Field>,
}

impl TargetFields {
    fn new(buf: &[u8], head: ResponseHead, request_id: &[u8; 36]) -> Self {
        let length_frames = matches!(head.framing, Framing::Length(_));
        let mut text = Vec::with_capacity(head.len + request_id.len());
        text.extend_from_slice(&buf[..head.len]);
        text.extend_from_slice(request_id);
        let mut fields = head.fields;
        // Fields of the HTTP/1.1 connection, which HTTP/2 does not carry, go.
        fields.retain(|f| match f.kind {
            Name::Connection | Name::HopByHop | Name::TransferEncoding | Name::RequestId => false,
            Name::ContentLength => length_frames,
            _ => true,
        });
        for f in &fields {
            text[f.name.clone()].make_ascii_lowercase();
        }
        Self { text, fields }
    }

    /// Each field: name, value, and whether it is sensitive (never, here).
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], bool)> {
        let fields = self.fields.iter().map(|f| (&self.text[f.name.clone()], &self.text[f.value.clone()], false));
        let request_id = &self.text[self.text.len() - 36..];
        fields.chain(std::iter::once((&b"x-amzn-requestid"[..], request_id, false)))
    }
}

// === impl H1Body ===

impl H1Body {
    /// The fields of the target's response head.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8], bool)> {
        self.fields.iter()
    }

    /// The body has been read to its end: the connection goes back to its pool when the target
    /// keeps it and sent nothing more.
    fn end(&mut self) {
        self.state = State::Done;
        if let Some(stream) = self.stream.take()
            && self.keep_alive
            && self.buf.is_empty()
        {
            self.pool.put(stream);
        }
    }

    /// Reads more of the body into the buffer: `Ok(0)` at the connection's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        match self.stream.as_mut() {
            Some(stream) => poll_read(stream, &mut self.buf, cx, READ_CHUNK),
            None => Poll::Ready(Ok(0)),
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            if !this.buf.is_empty() {
                let data = match &mut this.state {
                    State::Done => return Poll::Ready(None),
                    State::Length(left) => {
                        let n = usize::try_from(*left).map_or(this.buf.len(), |l| l.min(this.buf.len()));
                        let data = Bytes::copy_from_slice(&this.buf.bytes()[..n]);
                        this.buf.consume(n);
                        *left -= n as u64;
                        if *left == 0 {
                            this.end();
                        }
                        Some(data)
                    }
                    State::Chunked(decoder) => {
                        let step = decoder
                            .decode(this.buf.bytes())
                            .map_err(|()| std::io::Error::other("the target's chunked body is malformed"))?;
                        let data = step.data.map(|r| Bytes::copy_from_slice(&this.buf.bytes()[r]));
                        this.buf.consume(step.used);
                        if step.done {
                            this.end();
                        }
                        data
                    }
                    State::Close => {
                        let data = Bytes::copy_from_slice(this.buf.bytes());
                        this.buf.consume(data.len());
                        Some(data)
                    }
                };
                match data {
                    Some(data) if !data.is_empty() => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    _ if matches!(this.state, State::Done) => return Poll::Ready(None),
                    _ => continue,
                }
            }
            match this.state {
                State::Done => return Poll::Ready(None),
                _ => match std::task::ready!(this.poll_fill(cx)) {
                    Ok(0) if matches!(this.state, State::Close) => {
                        this.state = State::Done;
                        this.stream = None;
                        return Poll::Ready(None);
                    }
                    Ok(0) => {
                        this.stream = None;
                        return Poll::Ready(Some(Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        this.stream = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            State::Chunked(_) | State::Close => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_the_connection_and_a_length_that_does_not_frame_the_body_are_left_out() {
        let names = |raw: &[u8]| {
            let head = parse_response(raw).unwrap().unwrap();
            let fields = TargetFields::new(raw, head, &[b'7'; 36]);
            fields
                .iter()
                .map(|(n, v, _)| format!("{}={}", String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
        };
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\
                    Keep-Alive: timeout=5\r\nX-Kept: Yes\r\nx-amzn-requestid: 1\r\n\r\n";
        let id = "7".repeat(36);
        assert_eq!(names(raw), ["x-kept=Yes".to_string(), format!("x-amzn-requestid={id}")]);
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nUpgrade: h2c\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\r\n";
        let kept = ["content-length=3", "set-cookie=a=1", "set-cookie=b=2"].map(String::from);
        assert_eq!(names(raw)[..3], kept);
    }
}
