//! Keep-alive connections to targets: one [`Pool`] per (target address, idle timeout), each a
//! stack of idle HTTP/1.1 connections behind its own short lock (never held across an await, never
//! shared between targets). A request takes the most recently used idle connection, or opens one;
//! its [`Lease`] puts the connection back when the response has been read to its end, and drops
//! it otherwise (hyper then closes it). Idle connections close after the idle timeout: checked
//! when they are taken, and by one reaper task per pool while the pool has idle connections.
//!
//! Why not `hyper_util`'s pooled client: per request it hashes the authority into a shared map,
//! rewrites the URI, and spawns a task to return the connection to the pool; measured, it was
//! about half of the proxy's user-space CPU per request.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use trellis_net::Place;

use super::{ClientBody, classify};
use crate::error::{ErrorKind, ProxyError};

/// What tells pools apart: where targets are reached from (the host, or the namespace of the
/// target group's VPC), the target's address, and the idle timeout.
pub(crate) type PoolKey = (Place, SocketAddr, Duration);

/// The pools, kept across snapshots so that connections survive configuration changes.
pub(crate) struct Pools {
    pools: HashMap<PoolKey, Arc<Pool>>,
    connect_timeout: Duration,
}

/// Idle connections to one target.
pub(crate) struct Pool {
    place: Place,
    addr: SocketAddr,
    idle_timeout: Duration,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    reaping: AtomicBool,
}

struct Idle {
    sender: SendRequest<ClientBody>,
    since: Instant,
}

/// A connection lent to one request.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    sender: SendRequest<ClientBody>,
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
        let (place, addr, idle) = key.clone();
        self.pools
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Pool {
                    place,
                    addr,
                    idle_timeout: idle,
                    connect_timeout,
                    idle: Mutex::new(Vec::new()),
                    reaping: AtomicBool::new(false),
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
    /// Sends `req` on an idle connection, or on a new one. A request that a reused connection
    /// could not even start sending (the target had closed it) is sent again on another. When
    /// no connection can be opened at all the request comes back with the error, unsent (the
    /// caller may try another target).
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<ClientBody>,
    ) -> Result<(Response<Incoming>, Lease), (ProxyError, Option<Request<ClientBody>>)> {
        loop {
            let (mut sender, reused) = match self.take() {
                Some(sender) => (sender, true),
                None => match self.connect().await {
                    Ok(sender) => (sender, false),
                    Err(kind) => return Err((ProxyError::new(kind), Some(req))),
                },
            };
            if reused && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, Lease { pool: self.clone(), sender })),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err((ProxyError::new(classify(&e.into_error())), None)),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open and fresh.
    fn take(&self) -> Option<SendRequest<ClientBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = idle.pop() {
            if !i.sender.is_closed() && i.since.elapsed() < self.idle_timeout {
                return Some(i.sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<ClientBody>, ErrorKind> {
        let connect = async {
            match &self.place {
                Place::Host => TcpStream::connect(self.addr).await,
                place => place.tcp_socket(self.addr).await?.connect(self.addr).await,
            }
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(addr = %self.addr, error = %e, "cannot connect to target");
                return Err(ErrorKind::ConnectFailed);
            }
            Err(_) => return Err(ErrorKind::ConnectFailed),
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(|_| ErrorKind::ConnectFailed)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "target connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn put(self: &Arc<Self>, sender: SendRequest<ClientBody>) {
        if sender.is_closed() {
            return;
        }
        let idle = Idle { sender, since: Instant::now() };
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(idle);
        if !self.reaping.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }
}

/// Closes a pool's connections once they have been idle for `idle`; ends when the pool has no
/// idle connection left (or is gone).
async fn reap(pool: Weak<Pool>, idle: Duration) {
    loop {
        tokio::time::sleep(idle).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut conns = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|i| !i.sender.is_closed() && i.since.elapsed() < idle);
        if conns.is_empty() {
            // Under the lock, so that a connection put back now starts a new reaper.
            pool.reaping.store(false, Ordering::Release);
            return;
        }
    }
}

// === impl Lease ===

impl Lease {
    /// The response was read to its end: the connection can serve another request.
    pub(crate) fn release(self) {
        self.pool.put(self.sender);
    }
}
