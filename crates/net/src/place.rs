//! Opening sockets in a network: the host's, or a named network namespace. A socket belongs to
//! the namespace of the thread that created it and keeps it for life, whichever thread uses it
//! afterwards; so sockets for namespaces are created on one dedicated thread that enters the
//! namespace, creates the socket and returns to the host's namespace, and everything else
//! (binding, listening, connecting, all I/O) happens on the runtime as usual. One process thus
//! serves every VPC from one runtime.
//!
//! Owns: [`Place`], the namespace thread, and the socket constructors the proxy uses.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use socket2::{Domain, Protocol, Socket, Type};

/// Where a socket is opened: the host's network, or the named network namespace (a name under
/// `/run/netns`, as `ip netns` makes them).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// The host's network (loopback mode).
    Host,
    /// A network namespace, by name.
    Netns(Arc<str>),
}

/// Work for the namespace thread: a closure it runs inside a namespace, told whether it could
/// enter it.
struct Job {
    netns: Arc<str>,
    work: Box<dyn FnOnce(io::Result<()>) + Send>,
}

/// Where the namespace thread takes work from (started on first use).
static JOBS: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();

// === impl Place ===

impl Place {
    /// The namespace `name`.
    pub fn netns(name: &str) -> Self {
        Self::Netns(Arc::from(name))
    }

    /// A listening TCP socket on `addr` (address reuse on, as servers want).
    pub async fn tcp_listener(&self, addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
        let socket = self.socket(addr, Type::STREAM, Protocol::TCP).await?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        Ok(socket.into())
    }

    /// A UDP socket bound to `addr`.
    pub async fn udp_socket(&self, addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        let socket = self.socket(addr, Type::DGRAM, Protocol::UDP).await?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        Ok(socket.into())
    }

    /// An unconnected TCP socket, of `addr`'s family, ready to connect to it.
    pub async fn tcp_socket(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
        let socket = self.socket(addr, Type::STREAM, Protocol::TCP).await?;
        Ok(tokio::net::TcpSocket::from_std_stream(socket.into()))
    }

    /// A new non-blocking socket in this place.
    async fn socket(&self, addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
        let domain = Domain::for_address(addr);
        let make = move || {
            let socket = Socket::new(domain, ty.nonblocking().cloexec(), Some(protocol))?;
            Ok(socket)
        };
        match self {
            Place::Host => make(),
            Place::Netns(name) => in_netns(name, make).await,
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Host => f.write_str("host"),
            Place::Netns(name) => write!(f, "netns {name}"),
        }
    }
}

/// Runs `work` inside the network namespace `name` (on the namespace thread) and returns what
/// it returns. Fails without running it if the namespace does not exist.
pub async fn in_netns<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(name, move |entered| {
        let _ = tx.send(entered.and_then(|()| work()));
    })?;
    rx.await.map_err(|_| gone())?
}

/// Runs `work` inside the namespace `name`, blocking the calling thread (for code outside the
/// runtime, such as the network reconciler's blocking tasks).
pub fn in_netns_blocking<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    submit(name, move |entered| {
        let _ = tx.send(entered.and_then(|()| work()));
    })?;
    rx.recv().map_err(|_| gone())?
}

fn submit(name: &str, work: impl FnOnce(io::Result<()>) + Send + 'static) -> io::Result<()> {
    jobs().send(Job { netns: Arc::from(name), work: Box::new(work) }).map_err(|_| gone())
}

fn gone() -> io::Error {
    io::Error::other("the network namespace thread has stopped")
}

/// The namespace thread's queue, starting the thread on first use.
fn jobs() -> mpsc::Sender<Job> {
    let queue = JOBS.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new().name("trellis-netns".into()).spawn(move || run_jobs(rx));
        if let Err(e) = spawned {
            tracing::error!("{}", format!("cannot start the network namespace thread: {e}"));
        }
        Mutex::new(tx)
    });
    queue.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The namespace thread: for each job, enter the namespace, run the work, come back. If it
/// cannot come back to the host's namespace it stops (every later job then fails), rather than
/// create a socket in the wrong network.
fn run_jobs(rx: mpsc::Receiver<Job>) {
    let home = match File::open("/proc/thread-self/ns/net") {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("{}", format!("cannot open this thread's network namespace: {e}"));
            return;
        }
    };
    while let Ok(job) = rx.recv() {
        let entered = File::open(format!("/run/netns/{}", job.netns))
            .map_err(|e| io::Error::new(e.kind(), format!("network namespace {}: {e}", job.netns)))
            .and_then(|target| enter(&target));
        let moved = entered.is_ok();
        (job.work)(entered);
        if !moved {
            continue;
        }
        if let Err(e) = enter(&home) {
            tracing::error!("{}", format!("cannot return to the host's network namespace: {e}; stopping"));
            return;
        }
    }
}

fn enter(ns: &File) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .map_err(io::Error::from)
}
