//! The DNS responder: for every associated VPC, UDP and TCP port 53 (10053 without root, per
//! [`trellis_net::Ports`]) answer for the services that VPC reaches: on its ingress address in
//! loopback mode, inside its namespace in netns mode (see `trellis_net::Network::dns`). Owns
//! which sockets are open: on every snapshot it indexes the zones once ([`zone::Zones`]),
//! publishes the index to the open sockets, opens sockets for new VPCs and closes those of VPCs
//! that are gone. The VPC of a query is the socket it arrived on.
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
use trellis_net::Place;

use crate::{Error, ProxyConfig};

mod server;
mod zone;

/// For the fuzz targets (`crate::fuzzing`): the pure message path.
pub(crate) use server::respond;
pub(crate) use zone::Zones;

/// How long after a failed bind the responder tries again (the snapshot may not change).
/// Shorter in tests, which wait for it.
const REBIND_INTERVAL: Duration = if cfg!(test) { Duration::from_millis(200) } else { Duration::from_secs(5) };

/// The responder's state between snapshots.
struct Responder {
    config: Arc<ProxyConfig>,
    /// The zones of the latest snapshot, read by every socket's tasks.
    zones: watch::Sender<Arc<zone::Zones>>,
    /// Open sockets, by where they are.
    open: HashMap<(Place, IpAddr), Bound>,
    /// Sockets that could not be opened (logged once until they are).
    failing: HashSet<(Place, IpAddr)>,
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
        let network = &self.config.network;
        let want: HashMap<(Place, IpAddr), &str> = snapshot
            .vpcs
            .values()
            .filter(|vpc| vpc.ingress.is_some())
            .filter_map(|vpc| {
                let cidr = snapshot.networks.get(&vpc.vpc_id).map(|n| n.cidr);
                Some((network.dns(&vpc.vpc_id, vpc.ingress, cidr)?, vpc.vpc_id.as_str()))
            })
            .collect();
        let gone: Vec<(Place, IpAddr)> = self
            .open
            .iter()
            .filter(|(k, b)| want.get(*k) != Some(&b.vpc_id.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(bound) = self.open.remove(&key) {
                tracing::debug!(place = %key.0, ip = %key.1, vpc_id = bound.vpc_id, "DNS: closing");
                bound.close().await;
            }
        }
        self.failing.retain(|k| want.contains_key(k));
        let mut complete = true;
        for (key, vpc_id) in want {
            if self.open.contains_key(&key) {
                continue;
            }
            let addr = self.config.ports.addr(key.1, 53);
            match bind(&key.0, addr).await {
                Ok((udp, tcp)) => {
                    tracing::debug!(place = %key.0, %addr, vpc_id, "DNS: listening");
                    self.failing.remove(&key);
                    let cache = server::ZoneCache::new(self.zones.subscribe(), vpc_id);
                    let tasks = [
                        tokio::spawn(server::serve_udp(udp, cache.clone())),
                        tokio::spawn(server::serve_tcp(tcp, cache)),
                    ];
                    self.open.insert(key, Bound { vpc_id: vpc_id.to_owned(), tasks });
                }
                Err(e) => {
                    complete = false;
                    if !self.failing.contains(&key) {
                        tracing::error!(place = %key.0, %addr, vpc_id, error = %e, "DNS: cannot listen; retrying");
                        self.failing.insert(key);
                    }
                }
            }
        }
        complete
    }
}

/// Binds UDP and TCP on `addr` in `place`.
async fn bind(place: &Place, addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::from_std(place.udp_socket(addr).await?)?;
    let tcp = TcpListener::from_std(place.tcp_listener(addr, 128).await?)?;
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
