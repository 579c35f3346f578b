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
//! The source VPC of a connection is the VPC whose ingress socket accepted it. HTTPS and
//! TLS_PASSTHROUGH listeners are not served yet.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use trellis_model::lattice::ListenerProtocol;
use trellis_model::snapshot::Snapshot;
use trellis_net::Place;

use crate::conn::{self, Conn, DRAIN_GRACE};
use crate::forward::Pools;
use crate::table::{Routes, TableInputs};
use crate::{Error, HealthTable, InFlight, ProxyConfig};

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
}

/// Serves HTTP listeners as the snapshots say, until `stop`.
pub(crate) async fn run(
    config: Arc<ProxyConfig>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut health: watch::Receiver<Arc<HealthTable>>,
    in_flight: Arc<InFlight>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let (routes_tx, routes) = watch::channel(Arc::new(Routes::empty()));
    let shared = Arc::new(Shared { routes, config: config.clone() });
    let mut pools = Pools::new(config.response_timeout);
    let (conns_tx, mut conns_rx) = mpsc::channel::<()>(1);
    let mut open: HashMap<Endpoint, watch::Sender<bool>> = HashMap::new();
    let mut failing = HashSet::new();
    let (mut snapshots_live, mut health_live, mut rebuild) = (true, true, true);
    let mut snapshot = snapshots.borrow().clone();
    loop {
        if rebuild {
            snapshot = snapshots.borrow_and_update().clone();
            let table = health.borrow_and_update().clone();
            let previous = routes_tx.borrow().clone();
            let inputs = TableInputs {
                health: &table,
                in_flight: &in_flight,
                pools: &mut pools,
                network: &config.network,
                previous: &previous,
            };
            routes_tx.send_replace(Arc::new(Routes::build(snapshot.clone(), inputs)));
        }
        // A port whose old socket is still closing (or held by someone else) is tried again soon.
        let retry = !reconcile(&mut open, &mut failing, wanted(&config, &snapshot), &shared, &conns_tx).await;
        rebuild = true;
        tokio::select! {
            () = crate::stopped(&mut stop) => break,
            r = snapshots.changed(), if snapshots_live => snapshots_live = r.is_ok(),
            r = health.changed(), if health_live => health_live = r.is_ok(),
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
            for listener in service.listeners.values().filter(|l| l.protocol == ListenerProtocol::Http) {
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
        let _ = stream.set_nodelay(true);
        let conn = Conn::new(vpc.clone(), addr.port(), peer.ip(), shared.config.ports);
        let (shared, closing, tracker) = (shared.clone(), closing.clone(), conns.clone());
        tokio::spawn(async move {
            conn::serve(stream, conn, shared.routes.clone(), shared.config.clone(), closing).await;
            drop(tracker);
        });
    }
}
