//! TLS passthrough's byte pipe: both directions copied as they come, each half closed when its
//! side finishes, under the connection's clocks (idle timeout, maximum age, the listener's
//! closing signal plus a grace).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// Bytes each direction moves at a time.
const CHUNK: usize = 16 * 1024;

/// One direction: what was read and not yet written.
struct Pipe {
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    read_done: bool,
    done: bool,
}

/// How a splice ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Both sides finished.
    Closed,
    /// No bytes moved for the idle timeout.
    Idle,
    /// The maximum connection age, or the drain grace after the listener closed.
    Deadline,
    /// A side failed.
    Failed(io::ErrorKind),
}

/// Copies bytes both ways between `client` and `target` (starting with `first`, already read
/// from the client) until both directions end, nothing moves for `idle`, `max_age_at` comes, or
/// `grace` after `closing` is raised.
pub(crate) async fn splice(
    mut client: TcpStream,
    mut target: TcpStream,
    first: Vec<u8>,
    idle: Duration,
    max_age_at: Instant,
    grace: Duration,
    mut closing: watch::Receiver<bool>,
) -> Ended {
    let mut up = Pipe::new(first);
    let mut down = Pipe::new(Vec::new());
    let (mut cr, mut cw) = client.split();
    let (mut tr, mut tw) = target.split();
    let mut last_io = Instant::now();
    let mut drain_until: Option<Instant> = None;
    let mut sleep = Box::pin(tokio::time::sleep_until(max_age_at.min(last_io + idle)));
    let mut closing = Box::pin(async move {
        let _ = closing.wait_for(|c| *c).await;
    });
    let mut closing_done = false;
    std::future::poll_fn(|cx| {
        let mut moved = false;
        for (pipe, from, to) in [
            (&mut up, &mut cr as &mut (dyn AsyncRead + Unpin + Send), &mut tw as &mut (dyn AsyncWrite + Unpin + Send)),
            (&mut down, &mut tr, &mut cw),
        ] {
            if pipe.done {
                continue;
            }
            match pipe.poll(cx, from, to, &mut moved) {
                Poll::Ready(Ok(())) => pipe.done = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Ended::Failed(e.kind())),
                Poll::Pending => {}
            }
        }
        if up.done && down.done {
            return Poll::Ready(Ended::Closed);
        }
        let now = Instant::now();
        if moved {
            last_io = now;
        }
        if !closing_done && closing.as_mut().poll(cx).is_ready() {
            closing_done = true;
            drain_until = Some(now + grace);
        }
        loop {
            let idle_at = last_io + idle;
            let deadline = drain_until.map_or(max_age_at, |d| d.min(max_age_at));
            if now >= idle_at {
                return Poll::Ready(Ended::Idle);
            }
            if now >= deadline {
                return Poll::Ready(Ended::Deadline);
            }
            let at = idle_at.min(deadline);
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            ready!(sleep.as_mut().poll(cx));
        }
    })
    .await
}

impl Pipe {
    fn new(first: Vec<u8>) -> Self {
        let len = first.len();
        let mut buf = first;
        buf.resize(len.max(CHUNK), 0);
        Self { buf, pos: 0, len, read_done: false, done: false }
    }

    /// Moves what it can; ready once the source ended and everything was written and the
    /// destination's write half shut.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut (dyn AsyncRead + Unpin + Send),
        to: &mut (dyn AsyncWrite + Unpin + Send),
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.len {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &self.buf[self.pos..self.len]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                *moved = true;
                continue;
            }
            if self.read_done {
                return Pin::new(&mut *to).poll_shutdown(cx);
            }
            let mut rb = ReadBuf::new(&mut self.buf);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            (self.pos, self.len) = (0, n);
            if n == 0 {
                self.read_done = true;
            } else {
                *moved = true;
            }
        }
    }
}
