//! The control plane: the AWS APIs Trellis speaks (VPC Lattice, the EC2 network subset, ECS,
//! ACM, the IAM and STS subsets), all on one HTTP endpoint, over the store. Requests are told apart as
//! `spec/aws-protocols.md` says ([`dispatch`]); each AWS service has its own module with its wire
//! shapes and errors ([`lattice`], [`ec2`], [`ecs`], [`acm`], `iam`); [`repo`] is the typed layer over the store
//! and [`keys`] its layout. Trellis's own endpoints live under `/_trellis/`.
//!
//! The API is a value: [`router`] builds it from a [`ControlState`], and [`serve`] runs it on a
//! bound listener until a shutdown signal.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use trellis_store::Store;

pub mod access;
pub mod acm;
pub mod compile;
mod dispatch;
pub mod ec2;
pub mod ecs;
pub mod health;
mod iam;
pub mod identity;
pub mod ingress;
pub mod ipam;
mod json11;
mod keys;
pub mod lattice;
mod logs;
pub mod pki;
mod repo;
mod sts;
#[cfg(test)]
mod test_util;

/// Quotas (spec §7), per region and account unless said otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Service networks per region.
    pub service_networks: u64,
    /// Services per region.
    pub services: u64,
    /// Target groups per region.
    pub target_groups: u64,
    /// Listeners per service.
    pub listeners_per_service: u64,
    /// Rules per listener (not counting the default rule).
    pub rules_per_listener: u64,
    /// Target groups per service.
    pub target_groups_per_service: u64,
    /// Targets per target group.
    pub targets_per_target_group: u64,
    /// VPC associations per service network.
    pub vpc_associations_per_service_network: u64,
    /// Service associations per service network.
    pub service_associations_per_service_network: u64,
}

/// What the control plane needs to know about its installation.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// The region of unsigned requests.
    pub default_region: String,
    /// The account every caller acts in.
    pub account: String,
    /// The account's organization (`o-…`): `aws:PrincipalOrgID` of its identities.
    pub organization_id: String,
    /// The middle label of generated service names (`7d67968`).
    pub partition_label: String,
    /// The `hostedZoneId` reported in `dnsEntry`.
    pub hosted_zone_id: String,
    /// Host headers (`host:port`) the API answers to; any other is refused, which defeats DNS
    /// rebinding. Empty: any host is accepted (the API listens on a non-loopback address).
    pub allowed_hosts: Vec<String>,
    /// Quotas.
    pub quotas: Quotas,
    /// Accept health-check intervals from 1 s and thresholds from 1 (AWS: 5 s and 2), so that
    /// tests and demos see health transitions quickly. A Trellis extension, off by default.
    pub relaxed_health_checks: bool,
    /// Loopback mode: IP targets may be loopback addresses (the only ones that mode contacts),
    /// outside any VPC block. Off in netns mode, where targets live inside their VPC, as in AWS.
    pub loopback_targets: bool,
    /// `--require-signature`: every AWS API call must be signed by an identity of the account,
    /// and the `/_trellis/` endpoints (health aside) need the API token ([`access`]).
    pub require_signature: bool,
    /// The installation's API token ([`access::ensure_api_token`]).
    pub api_token: String,
    /// The data directory, where this node's access logs are (the CloudWatch Logs read API
    /// serves them); `None`: no log group has events.
    pub data_dir: Option<std::path::PathBuf>,
}

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct ControlState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub config: Arc<ControlConfig>,
    /// Held by every API call that writes, from its first read to its commit. Each call's
    /// compare-and-swap keeps it correct on its own (and across nodes, once there are several);
    /// the lock keeps this node's calls from invalidating each other's reads, which under load
    /// turned every hot counter into a retry storm.
    writes: Arc<tokio::sync::Mutex<()>>,
    /// Console sessions the API token opened.
    pub sessions: access::Sessions,
}

impl ControlState {
    /// The state of an API over `store`.
    pub fn new(store: Arc<dyn Store>, config: ControlConfig) -> Self {
        Self { store, config: Arc::new(config), writes: Arc::default(), sessions: access::Sessions::default() }
    }

    /// Waits for this node's turn to write.
    pub(crate) async fn write_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }
}

pub use lattice::sweep_tokens;

/// Builds the API.
pub fn router(state: ControlState) -> Router {
    dispatch::router(state, Router::new())
}

/// Builds the API with more of Trellis's own endpoints (under `/_trellis/`) from the
/// composition root; they get the same protection against forged requests.
pub fn router_with(state: ControlState, extra: Router) -> Router {
    dispatch::router(state, extra)
}

/// Builds the router of a node without the `api` role: Trellis's own endpoints (`extra`, and
/// health), guarded as the API's are, and a 404 naming the node's `roles` for anything else.
pub fn node_router(state: ControlState, extra: Router, roles: String) -> Router {
    dispatch::node_router(state, extra, roles)
}

/// Serves `router` (from [`router`] or [`router_with`]) on `listener` until `shutdown`
/// completes, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            service_networks: 50,
            services: 2000,
            target_groups: 500,
            listeners_per_service: 2,
            rules_per_listener: 10,
            target_groups_per_service: 10,
            targets_per_target_group: 1000,
            vpc_associations_per_service_network: 500,
            service_associations_per_service_network: 500,
        }
    }
}

/// A fresh request ID in UUID form.
pub(crate) fn request_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the system random number generator failed");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut id = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        id.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    id
}

/// Now, as a model timestamp.
pub(crate) fn now() -> trellis_model::Timestamp {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    trellis_model::Timestamp(ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_uuid_v4() {
        let id = super::request_id();
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
        assert!(groups[2].starts_with('4') && matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(super::request_id(), id);
    }
}
