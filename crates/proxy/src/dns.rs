//! The DNS responder: on every associated VPC's ingress address, UDP and TCP port 53 (10053
//! without root, per [`trellis_net::Ports`]) answer for the services that VPC reaches. Owns which
//! sockets are open: on every snapshot it indexes the zones once ([`zone::Zones`]), publishes the
//! index to the open sockets, opens sockets for new ingress addresses and closes those of VPCs
//! that are gone. The VPC of a query is the ingress address it arrived on.
//!
//! Modules: `zone` (which names resolve for a VPC; pure), `server` (messages, UDP and TCP).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trellis_model::snapshot::Snapshot;

use crate::{Error, ProxyConfig};

mod server;
mod zone;

/// How long after a failed bind the responder tries again (the snapshot may not change).
/// Shorter in tests, which wait for it.
const REBIND_INTERVAL: Duration = if cfg!(test) { Duration::from_millis(200) } else { Duration::from_secs(5) };

/// The responder's state between snapshots.
struct Responder {
    config: Arc<ProxyConfig>,
    /// The zones of the latest snapshot, read by every socket's tasks.
    zones: watch::Sender<Arc<zone::Zones>>,
    /// Open sockets, by ingress address.
    open: HashMap<IpAddr, Bound>,
    /// Ingress addresses whose bind failed (logged once until it succeeds).
    failing: HashSet<IpAddr>,
}

/// One VPC's sockets: the tasks serving its UDP socket and TCP listener.
struct Bound {
    vpc_id: String,
    tasks: [JoinHandle<()>; 2],
}

/// Serves DNS on every ingress address of the snapshots received until `stop` is raised.
pub(crate) async fn run(
    config: Arc<ProxyConfig>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let (zones, _) = watch::channel(Arc::new(zone::Zones::default()));
    let mut responder = Responder { config, zones, open: HashMap::new(), failing: HashSet::new() };
    let mut following = true;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        responder.zones.send_replace(Arc::new(zone::Zones::build(&snapshot)));
        let complete = responder.reconcile(&snapshot).await;
        tokio::select! {
            changed = snapshots.changed(), if following => {
                // The snapshot source is gone: keep serving the last snapshot until stopped.
                following = changed.is_ok();
            }
            () = tokio::time::sleep(REBIND_INTERVAL), if !complete => {}
            () = crate::stopped(&mut stop) => break,
        }
    }
    for (_, bound) in responder.open.drain() {
        bound.close().await;
    }
    Ok(())
}

// === impl Responder ===

impl Responder {
    /// Opens sockets for ingress addresses new in `snapshot` and closes those it no longer has.
    /// Returns false if a socket could not be opened (to try again later).
    async fn reconcile(&mut self, snapshot: &Snapshot) -> bool {
        let want: HashMap<IpAddr, &str> =
            snapshot.vpcs.values().filter_map(|vpc| Some((vpc.ingress?, vpc.vpc_id.as_str()))).collect();
        let gone: Vec<IpAddr> =
            self.open.iter().filter(|(ip, b)| want.get(ip) != Some(&b.vpc_id.as_str())).map(|(ip, _)| *ip).collect();
        for ip in gone {
            if let Some(bound) = self.open.remove(&ip) {
                tracing::debug!(%ip, vpc_id = bound.vpc_id, "DNS: closing");
                bound.close().await;
            }
        }
        self.failing.retain(|ip| want.contains_key(ip));
        let mut complete = true;
        for (ip, vpc_id) in want {
            if self.open.contains_key(&ip) {
                continue;
            }
            let addr = self.config.ports.addr(ip, 53);
            match bind(addr).await {
                Ok((udp, tcp)) => {
                    tracing::debug!(%addr, vpc_id, "DNS: listening");
                    self.failing.remove(&ip);
                    let cache = server::ZoneCache::new(self.zones.subscribe(), vpc_id);
                    let tasks = [
                        tokio::spawn(server::serve_udp(udp, cache.clone())),
                        tokio::spawn(server::serve_tcp(tcp, cache)),
                    ];
                    self.open.insert(ip, Bound { vpc_id: vpc_id.to_owned(), tasks });
                }
                Err(e) => {
                    complete = false;
                    if self.failing.insert(ip) {
                        tracing::error!(%addr, vpc_id, error = %e, "DNS: cannot listen; retrying");
                    }
                }
            }
        }
        complete
    }
}

/// Binds UDP and TCP on `addr`.
async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::bind(addr).await?;
    let tcp = TcpListener::bind(addr).await?;
    Ok((udp, tcp))
}

// === impl Bound ===

impl Bound {
    /// Stops serving and waits until the sockets (and TCP connections) are closed, so the
    /// address can be bound again at once.
    async fn close(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests;
