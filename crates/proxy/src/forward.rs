//! Forwarding to targets: the request goes out on a pooled keep-alive connection (`pool`), bodies
//! stream both ways without ever being held whole, the response head must arrive within the
//! response timeout, and upstream failures become [`ProxyError`]s. Also the in-flight count: a
//! guard increments a target's counter before the request goes out and decrements it when the
//! response body is done (or dropped), which is what a draining target waits for.
//!
//! Not here: which target (`balance`), which headers (`headers`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::conn::Conn;
use crate::error::{ErrorKind, ProxyError};

mod pool;

pub(crate) use pool::{Lease, Pool, PoolKey, Pools};

/// A client's request body on its way to a target. It refuses to yield data once the client's
/// stream is poisoned (see `guard`), so nothing after an ambiguity reaches a target.
pub(crate) struct ClientBody {
    inner: Incoming,
    conn: Arc<Conn>,
}

/// Why a client's request body stopped: it was malformed, cut short, or followed ambiguous
/// framing.
#[derive(Debug)]
pub(crate) struct ClientBodyError;

/// A response body: a target's, streamed, or one the proxy made.
pub(crate) struct ProxyBody {
    kind: BodyKind,
}

enum BodyKind {
    Local(Option<Bytes>),
    Upstream(Upstream),
}

/// A target's response body, with the connection it arrives on and the request's in-flight
/// count.
struct Upstream {
    body: Incoming,
    lease: Option<Lease>,
    done: bool,
    _in_flight: InFlightGuard,
}

/// One request in flight to a target; decrements the target's counter when dropped.
pub(crate) struct InFlightGuard {
    counter: Arc<AtomicUsize>,
}

/// Sends `req` to a target through `pool` and waits at most `timeout` for the response head. A
/// request that could not be sent at all (no connection could be opened) comes back with the
/// error.
pub(crate) async fn send(
    pool: &Arc<Pool>,
    req: Request<ClientBody>,
    timeout: Duration,
) -> Result<(Response<Incoming>, Lease), (ProxyError, Option<Request<ClientBody>>)> {
    match tokio::time::timeout(timeout, pool.send(req)).await {
        Ok(result) => result,
        Err(_) => Err((ProxyError::new(ErrorKind::Timeout), None)),
    }
}

/// Who broke a request that was sent: the client's body, or the target.
fn classify(e: &hyper::Error) -> ErrorKind {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<ClientBodyError>() {
            return ErrorKind::ClientBody;
        }
        source = s.source();
    }
    tracing::debug!(error = %e, "target request failed");
    ErrorKind::UpstreamBroken
}

// === impl ClientBody ===

impl ClientBody {
    /// The body of a request that arrived on `conn`.
    pub(crate) fn new(inner: Incoming, conn: Arc<Conn>) -> Self {
        Self { inner, conn }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.conn.is_poisoned() {
            return Poll::Ready(Some(Err(ClientBodyError)));
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        // The guard has seen these bytes before hyper decoded them.
        if self.conn.is_poisoned() {
            return Poll::Ready(Some(Err(ClientBodyError)));
        }
        Poll::Ready(frame.map(|f| f.map_err(|_| ClientBodyError)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl ClientBodyError ===

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client's request body is malformed or was cut short")
    }
}

impl std::error::Error for ClientBodyError {}

// === impl ProxyBody ===

impl ProxyBody {
    /// A body the proxy made.
    pub(crate) fn local(bytes: Bytes) -> Self {
        Self { kind: BodyKind::Local(Some(bytes).filter(|b| !b.is_empty())) }
    }

    /// A target's body, arriving on `lease`; `in_flight` is released when it ends.
    pub(crate) fn upstream(body: Incoming, lease: Lease, in_flight: InFlightGuard) -> Self {
        Self { kind: BodyKind::Upstream(Upstream { body, lease: Some(lease), done: false, _in_flight: in_flight }) }
    }

    /// The bytes of a body the proxy made (tests).
    #[cfg(test)]
    pub(crate) fn into_local(self) -> Option<Bytes> {
        match self.kind {
            BodyKind::Local(b) => Some(b.unwrap_or_default()),
            BodyKind::Upstream(_) => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.kind {
            BodyKind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Upstream(up) => {
                let frame = ready!(Pin::new(&mut up.body).poll_frame(cx));
                up.done = frame.is_none();
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Local(bytes) => bytes.is_none(),
            BodyKind::Upstream(up) => up.done || up.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            BodyKind::Upstream(up) => up.body.size_hint(),
        }
    }
}

// === impl Upstream ===

impl Drop for Upstream {
    fn drop(&mut self) {
        // A connection whose response was not read to its end cannot carry another request.
        if (self.done || self.body.is_end_stream())
            && let Some(lease) = self.lease.take()
        {
            lease.release();
        }
    }
}

// === impl InFlightGuard ===

impl InFlightGuard {
    /// Counts one more request in flight on `counter`.
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self { counter: counter.clone() }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}
