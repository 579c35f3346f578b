//! Which sockets are open, and accepting on them. On every snapshot (and every health table) the
//! route table is rebuilt and published to the connections; then the set of listening sockets
//! is reconciled with the snapshot: one socket per ingress of an associated VPC and per HTTP
//! listener port of each service that VPC reaches (ports below 1024 at their offset). An
//! ingress is an address on the host (loopback mode) or the link-local address inside the VPC's
//! namespace (netns mode; see `trellis_net::Network`). A socket no longer wanted stops
//! accepting, and its connections finish the request in progress and close. A socket that
//! cannot be opened (a port taken, a namespace or address not there yet) is logged and retried
//! every [`BIND_RETRY`]; the others are served.
//!
//! The source VPC of a connection is the VPC whose ingress socket accepted it. A port with an
//! HTTPS or TLS_PASSTHROUGH listener of a service the VPC reaches tells each connection apart
//! (`tls`); other ports serve cleartext HTTP straight away.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use trellis_model::snapshot::{Action, ListenerView, Snapshot};
use trellis_net::Place;

use crate::conn::{self, Conn, DRAIN_GRACE};
use crate::error::{ErrorKind, ProxyError};
use crate::forward::{InFlightGuard, Pools, Upstream};
use crate::table::{Routes, TableInputs, TlsRoute};
use crate::tls::{self, ClientStream, Refused, TlsStore};
use crate::{Error, HealthTable, InFlight, Inputs, ProxyConfig, Telemetry};

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

/// Pending connections a listening socket queues.
const BACKLOG: i32 = 1024;

/// Where a listening socket is: its network and its address.
type Endpoint = (Place, SocketAddr);

/// How soon a socket that could not be opened is tried again.
const BIND_RETRY: Duration = Duration::from_millis(500);

/// What every accept loop and connection shares.
struct Shared {
    config: Arc<ProxyConfig>,
    routes: watch::Receiver<Arc<Routes>>,
    telemetry: Arc<Telemetry>,
    /// One permit per client connection open (`max_connections`).
    connections: Arc<tokio::sync::Semaphore>,
}

/// Serves HTTP listeners as the snapshots say, until `stop`.
pub(crate) async fn run(
    config: Arc<ProxyConfig>,
    inputs: Inputs,
    mut health: watch::Receiver<Arc<HealthTable>>,
    in_flight: Arc<InFlight>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let Inputs { mut snapshots, mut certificates, mut identities, telemetry, .. } = inputs;
    let (routes_tx, routes) = watch::channel(Arc::new(Routes::empty()));
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let shared = Arc::new(Shared { routes, config: config.clone(), telemetry: telemetry.clone(), connections });
    let mut pools = Pools::new(config.connect_timeout);
    let mut tls = TlsStore::new();
    let (conns_tx, mut conns_rx) = mpsc::channel::<()>(1);
    let mut open: HashMap<Endpoint, watch::Sender<bool>> = HashMap::new();
    let mut failing = HashSet::new();
    let (mut snapshots_live, mut health_live, mut certificates_live, mut identities_live, mut rebuild) =
        (true, true, true, true, true);
    let mut snapshot = snapshots.borrow().clone();
    loop {
        if rebuild {
            let started = Instant::now();
            snapshot = snapshots.borrow_and_update().clone();
            let table = health.borrow_and_update().clone();
            let certs = certificates.borrow_and_update().clone();
            let known = identities.borrow_and_update().clone();
            let previous = routes_tx.borrow().clone();
            let inputs = TableInputs {
                health: &table,
                in_flight: &in_flight,
                pools: &mut pools,
                network: &config.network,
                previous: &previous,
                certificates: &certs,
                tls: &mut tls,
                identities: known,
                telemetry: &telemetry,
            };
            routes_tx.send_replace(Arc::new(Routes::build(snapshot.clone(), inputs)));
            drop(previous);
            telemetry.registry.prune();
            telemetry.process.revision.store(snapshot.revision, std::sync::atomic::Ordering::Relaxed);
            telemetry.process.apply.observe(started.elapsed());
        }
        // A port whose old socket is still closing (or held by someone else) is tried again soon.
        let retry = !reconcile(&mut open, &mut failing, wanted(&config, &snapshot), &shared, &conns_tx).await;
        rebuild = true;
        tokio::select! {
            () = crate::stopped(&mut stop) => break,
            r = snapshots.changed(), if snapshots_live => snapshots_live = r.is_ok(),
            r = health.changed(), if health_live => health_live = r.is_ok(),
            r = certificates.changed(), if certificates_live => certificates_live = r.is_ok(),
            r = identities.changed(), if identities_live => identities_live = r.is_ok(),
            () = tokio::time::sleep(BIND_RETRY), if retry => rebuild = false,
        }
    }
    for (_, closing) in open.drain() {
        let _ = closing.send(true);
    }
    drop(conns_tx);
    // Connections finish their requests in progress (bounded by their drain grace).
    let _ = tokio::time::timeout(DRAIN_GRACE + Duration::from_secs(1), conns_rx.recv()).await;
    Ok(())
}

/// The sockets the snapshot asks for, each with the VPC it serves.
fn wanted(config: &ProxyConfig, snapshot: &Snapshot) -> HashMap<Endpoint, Arc<str>> {
    let mut out = HashMap::new();
    for vpc in snapshot.vpcs.values() {
        let Some((place, ip)) = config.network.ingress(&vpc.vpc_id, vpc.ingress) else { continue };
        let id: Arc<str> = Arc::from(vpc.vpc_id.as_str());
        for service in vpc.reach.keys().filter_map(|id| snapshot.services.get(id)) {
            for listener in service.listeners.values() {
                out.insert((place.clone(), config.ports.addr(ip, listener.port)), id.clone());
            }
        }
    }
    out
}

/// Opens the sockets wanted and not open; closes those open and not wanted. False if a socket
/// could not be opened (`failing` remembers which, so each is logged once).
async fn reconcile(
    open: &mut HashMap<Endpoint, watch::Sender<bool>>,
    failing: &mut HashSet<Endpoint>,
    wanted: HashMap<Endpoint, Arc<str>>,
    shared: &Arc<Shared>,
    conns: &mpsc::Sender<()>,
) -> bool {
    open.retain(|(place, addr), closing| {
        let keep = wanted.contains_key(&(place.clone(), *addr));
        if !keep {
            tracing::debug!(%place, %addr, "listener closed");
            let _ = closing.send(true);
        }
        keep
    });
    failing.retain(|endpoint| wanted.contains_key(endpoint));
    let mut all_open = true;
    for (endpoint, vpc) in wanted {
        if open.contains_key(&endpoint) {
            continue;
        }
        let (place, addr) = &endpoint;
        match bind(place, *addr).await {
            Ok(listener) => {
                tracing::debug!(%place, %addr, %vpc, "listening");
                failing.remove(&endpoint);
                let (closing_tx, closing) = watch::channel(false);
                tokio::spawn(accept_loop(listener, *addr, vpc, shared.clone(), closing, conns.clone()));
                open.insert(endpoint, closing_tx);
            }
            Err(e) => {
                if !failing.contains(&endpoint) {
                    tracing::warn!(%place, %addr, error = %e, "cannot listen; will retry");
                    failing.insert(endpoint);
                }
                all_open = false;
            }
        }
    }
    all_open
}

async fn bind(place: &Place, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(place.tcp_listener(addr, BACKLOG).await?)
}

/// Accepts connections from VPC `vpc` on one socket until `closing`; each connection gets its
/// own task.
async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    vpc: Arc<str>,
    shared: Arc<Shared>,
    mut closing: watch::Receiver<bool>,
    conns: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%addr, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Past the limit, a connection is closed at once: a flood of them costs an accept each,
        // never a task, a buffer or a descriptor kept.
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            shared.telemetry.process.connections_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(%addr, %peer, "connection refused: max_connections are open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn::new(vpc.clone(), addr.port(), peer, shared.config.ports, shared.telemetry.clone());
        let (shared, closing, tracker) = (shared.clone(), closing.clone(), conns.clone());
        tokio::spawn(async move {
            serve(stream, conn, &shared, closing).await;
            drop((tracker, permit));
        });
    }
}

/// Serves one accepted connection: cleartext HTTP, or (on a port with TLS listeners) whatever
/// its first byte and ClientHello say.
async fn serve(stream: TcpStream, mut conn: Conn, shared: &Shared, closing: watch::Receiver<bool>) {
    let config = shared.config.clone();
    let routes = shared.routes.borrow().clone();
    if !routes.has_tls(&conn.vpc, &conn.lattice_ports) {
        drop(routes);
        return conn::serve(ClientStream::Plain(stream), conn, shared.routes.clone(), config, closing).await;
    }
    let deadline = Instant::now() + config.header_read_timeout;
    match tls::starts_tls(&stream, deadline).await {
        Some(true) => {}
        Some(false) if routes.has_http(&conn.vpc, &conn.lattice_ports) => {
            drop(routes);
            return conn::serve(ClientStream::Plain(stream), conn, shared.routes.clone(), config, closing).await;
        }
        Some(false) => return plain_on_tls_port(stream, &conn).await,
        None => return,
    }
    drop(routes);
    let mut stream = stream;
    let (raw, accepted) = match tls::read_hello(&mut stream, deadline).await {
        Ok(hello) => hello,
        Err(why) => return refuse(&conn, &why),
    };
    let Some(name) = accepted.client_hello().server_name().map(str::to_ascii_lowercase) else {
        return refuse(&conn, &Refused::NoName);
    };
    conn.sni = Some(name.as_str().into());
    // The table as it stands now (the hello may have taken a while).
    let routes = shared.routes.borrow().clone();
    match routes.tls_route(&conn.vpc, &name, &conn.lattice_ports) {
        Err(why) => refuse(&conn, &why),
        Ok(TlsRoute::Terminate(server_config, stats)) => {
            drop(routes);
            match tls::handshake(stream, accepted, server_config, deadline).await {
                Ok(client) => {
                    conn.tls = true;
                    conn.tls_details = client.tls_details();
                    conn.service_stats = Some(stats);
                    if client.is_h2() {
                        crate::h2::serve(client, conn, shared.routes.clone(), config, closing).await;
                    } else {
                        conn::serve(client, conn, shared.routes.clone(), config, closing).await;
                    }
                }
                Err(e) => {
                    stats.tls_failed();
                    tracing::debug!(vpc = %conn.vpc, %name, error = %e, "TLS handshake failed");
                }
            }
        }
        Ok(TlsRoute::Passthrough { reach, listener }) => {
            let Some(target) = passthrough_target(&routes, listener).await else {
                tracing::debug!(vpc = %conn.vpc, %name, "TLS passthrough: no target could be reached; closed");
                return;
            };
            let (target, guard) = target;
            let idle = reach.service.idle_timeout;
            drop(routes);
            let max_age_at = Instant::now() + config.max_connection_age;
            let ended = tls::splice(stream, target, raw, idle, max_age_at, DRAIN_GRACE, closing).await;
            tracing::debug!(vpc = %conn.vpc, %name, ?ended, "TLS passthrough ended");
            drop(guard);
        }
    }
}

/// A connection to a target of a TLS_PASSTHROUGH listener's default action (a target group by
/// weight, then round-robin; one that refuses is replaced by the next, a few times), with its
/// in-flight count held.
async fn passthrough_target(routes: &Routes, listener: &ListenerView) -> Option<(TcpStream, InFlightGuard)> {
    let Action::Forward(groups) = &listener.default_action else { return None };
    for _ in 0..3 {
        let chosen = crate::balance::pick_group(groups)?;
        let target = routes.group(&chosen.target_group_id)?.pick().ok()?;
        let guard = InFlightGuard::new(&target.in_flight);
        // TCP target groups: their pools never speak TLS themselves.
        if let Ok(Upstream::Plain(stream)) = target.pool.connect().await {
            return Some((stream, guard));
        }
    }
    None
}

fn refuse(conn: &Conn, why: &Refused) {
    conn.telemetry.process.tls_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(vpc = %conn.vpc, reason = %why, "TLS connection refused");
}

/// Cleartext on a port whose listeners all speak TLS: a 400 saying so, then the connection
/// closes (what the client sent meanwhile is read and dropped for a moment, so that closing
/// does not reset the connection before the answer is read).
async fn plain_on_tls_port(mut stream: TcpStream, conn: &Conn) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tracing::debug!(vpc = %conn.vpc, "cleartext HTTP on a TLS port: refused");
    let mut out = Vec::new();
    let id = crate::headers::request_id();
    ProxyError::new(ErrorKind::PlainOnTlsPort).write_http1(&mut out, &id, true, false);
    let linger = async {
        stream.write_all(&out).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}
