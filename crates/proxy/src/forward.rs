//! Connections to targets: one [`Pool`] per (place, target address, idle timeout), each a stack
//! of idle keep-alive sockets behind its own short lock (never held across an await, never
//! shared between targets). A request takes the most recently used idle socket, or opens one,
//! and owns it for the whole exchange: the connection's task writes the request and reads the
//! response itself (`exchange`), with no task or channel in between. The socket goes back when
//! the response was read to its end and both sides may keep it; otherwise it is closed. Idle
//! sockets close after the idle timeout, or within a second once the target has closed them:
//! checked when they are taken, and by one reaper task per pool while it has idle sockets.
//!
//! Also the in-flight count: a guard increments a target's counter before the request goes out
//! and decrements it when the exchange ends, which is what a draining target waits for.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use trellis_net::Place;

use crate::error::ErrorKind;

pub(crate) mod exchange;

/// Probes on target connections: first after 1 s without traffic, then every second; the
/// connection fails after 2 unanswered (about 3 s).
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(1))
    .with_interval(Duration::from_secs(1))
    .with_retries(2);

/// What tells pools apart: where targets are reached from (the host, or the namespace of the
/// target group's VPC), the target's address, the idle timeout, and for HTTPS target groups the
/// server name sent in the ClientHello.
pub(crate) type PoolKey = (Place, SocketAddr, Duration, Option<Arc<str>>);

/// The pools, kept across snapshots so that connections survive configuration changes.
pub(crate) struct Pools {
    pools: HashMap<PoolKey, Arc<Pool>>,
    connect_timeout: Duration,
}

/// Idle connections to one target.
pub(crate) struct Pool {
    place: Place,
    addr: SocketAddr,
    /// TLS towards the target, with this server name (HTTPS target groups).
    tls: Option<ServerName<'static>>,
    idle_timeout: Duration,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    reaping: AtomicBool,
    /// The HTTP/2 connection, for HTTP2 and GRPC target groups.
    h2: Mutex<Option<Arc<H2Client>>>,
    /// HTTP/1.1 connections driven by hyper (HTTP/2 clients' requests going down to HTTP/1.1),
    /// each with when it was last given back.
    h1: Mutex<Vec<(H1Sender, Instant)>>,
}

/// Sends requests on an HTTP/1.1 connection to a target, for HTTP/2 clients.
pub(crate) type H1Sender = hyper::client::conn::http1::SendRequest<crate::h2::UpBody>;

/// Most idle HTTP/1.1 senders a pool keeps.
const MAX_IDLE_SENDERS: usize = 256;

use crate::h2::client::H2Client;

struct Idle {
    stream: Upstream,
    /// When it was given back (the coarse clock: a pool's idle time is seconds).
    since: Instant,
}

/// A connection to a target: cleartext, or TLS (HTTPS target groups; the target's certificate
/// is not verified, as in AWS).
pub(crate) enum Upstream {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::client::TlsStream<crate::tls::Socket>>),
}

/// One request in flight to a target; decrements the target's counter when dropped.
pub(crate) struct InFlightGuard {
    counter: Arc<AtomicUsize>,
}

// === impl Pools ===

impl Pools {
    /// Pools whose new connections give up after `connect_timeout`.
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Self { pools: HashMap::new(), connect_timeout }
    }

    /// The pool for `key`: connections opened from `place` to `addr` that idle out after `idle`.
    pub(crate) fn pool(&mut self, key: &PoolKey) -> Arc<Pool> {
        let connect_timeout = self.connect_timeout;
        let (place, addr, idle, sni) = key.clone();
        self.pools
            .entry(key.clone())
            .or_insert_with(|| {
                let tls = sni.map(|name| {
                    ServerName::try_from(name.to_string()).unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()))
                });
                Arc::new(Pool {
                    place,
                    addr,
                    tls,
                    idle_timeout: idle,
                    connect_timeout,
                    idle: Mutex::new(Vec::new()),
                    reaping: AtomicBool::new(false),
                    h2: Mutex::new(None),
                    h1: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// Forgets the pools not in `used` (their idle connections close once no request holds them).
    pub(crate) fn retain(&mut self, used: &HashSet<PoolKey>) {
        self.pools.retain(|key, _| used.contains(key));
    }
}

// === impl Pool ===

impl Pool {
    /// The target's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The most recently used idle connection that is still open and fresh.
    pub(crate) fn take(&self) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = idle.pop() {
            if crate::clock::since(i.since) < self.idle_timeout && is_quiet(i.stream.tcp()) {
                return Some(i.stream);
            }
        }
        None
    }

    /// A new connection to the target.
    pub(crate) async fn connect(&self) -> Result<Upstream, ErrorKind> {
        self.connect_with(crate::tls::target_client_config).await
    }

    /// The target's HTTP/2 connection (HTTP2 and GRPC target groups): one per target, shared by
    /// every request to it; a new one when there is none or it closed.
    pub(crate) async fn h2(&self) -> Result<Arc<H2Client>, ErrorKind> {
        if let Some(client) = self.h2_open() {
            return Ok(client);
        }
        let stream = self.connect_with(crate::tls::target_h2_client_config).await?;
        let client = Arc::new(H2Client::start(stream, self.addr));
        let mut slot = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        // Another request may have connected meanwhile: its connection is kept, and this one
        // closes unused.
        if let Some(open) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(open.clone());
        }
        *slot = Some(client.clone());
        Ok(client)
    }

    /// An idle HTTP/1.1 sender ready for a request, the most recently used first; closed or
    /// stale ones are dropped, busy ones (a response still being read) stay.
    pub(crate) fn take_h1(&self) -> Option<H1Sender> {
        let mut senders = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = senders.len();
        while i > 0 {
            i -= 1;
            let (sender, since) = &senders[i];
            if sender.is_closed() || crate::clock::since(*since) >= self.idle_timeout {
                senders.swap_remove(i);
            } else if sender.is_ready() {
                return Some(senders.swap_remove(i).0);
            }
        }
        None
    }

    /// Gives back an HTTP/1.1 sender whose response was read (or abandoned: hyper then closes
    /// its connection, and [`Pool::take_h1`] drops it).
    pub(crate) fn put_h1(&self, sender: H1Sender) {
        let mut senders = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        if senders.len() < MAX_IDLE_SENDERS && !sender.is_closed() {
            senders.push((sender, crate::clock::instant()));
        }
    }

    /// The target's HTTP/2 connection, if one is open (no waiting).
    pub(crate) fn h2_open(&self) -> Option<Arc<H2Client>> {
        self.h2.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|c| !c.is_closed()).cloned()
    }

    async fn connect_with(&self, tls_config: fn() -> Option<Arc<rustls::ClientConfig>>) -> Result<Upstream, ErrorKind> {
        let connect = async {
            let stream = match &self.place {
                Place::Host => TcpStream::connect(self.addr).await?,
                place => place.tcp_socket(self.addr).await?.connect(self.addr).await?,
            };
            let _ = stream.set_nodelay(true);
            // A target whose host vanished (a task's namespace removed with it, say) never
            // closes the connection: keep-alive probes find it within a few seconds, so the
            // request waiting on it fails (and an idempotent one goes to the next target)
            // instead of waiting out the response timeout.
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&KEEPALIVE);
            let Some(name) = &self.tls else { return Ok(Upstream::Plain(stream)) };
            let config = tls_config().ok_or_else(|| std::io::Error::other("no TLS"))?;
            let tls =
                tokio_rustls::TlsConnector::from(config).connect(name.clone(), crate::tls::Socket(stream)).await?;
            Ok::<_, std::io::Error>(Upstream::Tls(Box::new(tls)))
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => {
                tracing::debug!(addr = %self.addr, error = %e, "cannot connect to target");
                Err(ErrorKind::ConnectFailed)
            }
            Err(_) => Err(ErrorKind::ConnectFailed),
        }
    }

    /// Takes back a connection whose exchange ended cleanly.
    pub(crate) fn put(self: &Arc<Self>, stream: Upstream) {
        let idle = Idle { stream, since: crate::clock::instant() };
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(idle);
        if !self.reaping.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }
}

/// Whether an idle connection has nothing to read: a target that closed it (or sent bytes no
/// request asked for) makes it readable. Costs a system call only when the socket was seen
/// readable.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

/// Closes a pool's connections once they have been idle for `idle`, and within a second those
/// the target closed (they would otherwise sit in CLOSE_WAIT, holding a descriptor, until their
/// idle time ran out); ends when the pool has no idle connection left (or is gone).
async fn reap(pool: Weak<Pool>, idle: Duration) {
    let tick = idle.min(Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut conns = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|i| crate::clock::since(i.since) < idle && is_quiet(i.stream.tcp()));
        if conns.is_empty() {
            // Under the lock, so that a connection put back now starts a new reaper.
            pool.reaping.store(false, Ordering::Release);
            return;
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

// === impl Upstream ===

impl Upstream {
    /// The TCP connection underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.get_ref().0.0,
        }
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(_) => Poll::Ready(Ok(())),
            Self::Tls(s) => std::pin::Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => std::pin::Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_connection_the_target_closes_is_let_go_within_seconds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // An idle timeout far longer than the test: only the target's close lets it go.
        let pool = Pools::new(Duration::from_secs(5)).pool(&(Place::Host, addr, Duration::from_secs(600), None));
        let stream = pool.connect().await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        pool.put(stream);
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
        drop(accepted);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pool.idle.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the closed connection is still pooled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
