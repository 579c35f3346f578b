//! Configuration, loaded in two stages in this one module: a [`RawConfig`] is layered from
//! defaults, a TOML file (`--config`), the `TRELLIS_*` environment and command-line flags (each
//! later layer wins), then validated into a [`Config`]. The environment is read only here, and
//! through the [`Env`] trait so that tests can pass a map.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use std::time::Duration;

use trellis_control::Quotas;
use trellis_net::{IngressRange, Naming, Network, Ports};
use trellis_proxy::{AccessLogConfig, ProxyConfig};
use trellis_store::{Durability, EtcdConfig};

/// Where environment variables come from.
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Settings as written in the TOML file; every field optional, unknown fields refused.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Data directory (default `$XDG_DATA_HOME/trellis`, else `~/.local/share/trellis`).
    pub data_dir: Option<PathBuf>,
    /// API listen address (default `127.0.0.1:7700`).
    pub listen: Option<String>,
    /// Region of unsigned requests (default `us-east-1`).
    pub region: Option<String>,
    /// The account (default `000000000000`).
    pub account: Option<String>,
    /// The account's organization ID, `o-` and 10–32 lowercase letters or digits (default
    /// `o-trellis0000`): `aws:PrincipalOrgID` of the account's identities.
    pub organization_id: Option<String>,
    /// `text` (default) or `json`.
    pub log_format: Option<String>,
    /// `process` (default: survives `kill -9`) or `power-loss` (fsync every commit).
    pub durability: Option<String>,
    /// The store: `etcd://HOST:PORT[,HOST:PORT…]`, `etcds://…` (TLS), or unset for the embedded
    /// SQLite store in the data directory (default).
    pub store: Option<String>,
    /// CA certificates (PEM) etcd's certificate must chain to (`etcds://`).
    pub store_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's `--client-cert-auth` (`etcds://`).
    pub store_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub store_key_file: Option<PathBuf>,
    /// etcd user name, when etcd has auth enabled.
    pub store_username: Option<String>,
    /// The etcd user's password (better given as `TRELLIS_STORE_PASSWORD`).
    pub store_password: Option<String>,
    /// Prepended to every key Trellis keeps in etcd, so that installations (or other programs)
    /// can share one etcd, e.g. `trellis/` (default: none).
    pub store_prefix: Option<String>,
    /// Middle label of generated service names (default `7d67968`).
    pub partition_label: Option<String>,
    /// `hostedZoneId` of generated names (default `Z0000000000000TRELLIS`).
    pub hosted_zone_id: Option<String>,
    /// Extra `Host` header values the API answers to, besides its own address and `localhost`.
    pub allowed_hosts: Option<Vec<String>>,
    /// Quotas (spec §7); each defaults to AWS's default.
    pub quotas: RawQuotas,
    /// This node's name in the store (default: the host name).
    pub node: Option<String>,
    /// What this node runs: `all` (default), or some of `api`, `proxy`, `tasks`, comma-separated.
    pub role: Option<String>,
    /// The loopback block VPC ingress addresses come from (default: a /24 derived from the
    /// data directory, so that installations side by side never collide).
    pub ingress_range: Option<String>,
    /// How VPCs are made real: `netns` (each VPC a network namespace; the default as root on
    /// Linux) or `loopback` (ingress addresses on loopback; the default otherwise).
    pub network: Option<String>,
    /// The loopback block ECS task addresses come from in loopback mode (default: a /24 derived
    /// from the data directory).
    pub task_range: Option<String>,
    /// The prefix of every network namespace this installation creates (default: `tr` and six
    /// hex digits derived from the data directory).
    pub name_prefix: Option<String>,
    /// Runtime worker threads (default: one per core).
    pub worker_threads: Option<usize>,
    /// Accept health-check intervals from 1 s and thresholds from 1 (AWS: 5 s and 2), so that
    /// tests and demos see health transitions quickly (default false).
    pub relaxed_health_checks: Option<bool>,
    /// Every AWS API call must carry a valid SigV4 signature of an identity of the account, and
    /// Trellis's own endpoints (health aside) the API token (default false).
    pub require_signature: Option<bool>,
    /// Lifetime of the managed certificates of generated names, in seconds (default 90 days);
    /// each is renewed when a third of it is left.
    pub certificate_lifetime_seconds: Option<u64>,
    /// Where `/_trellis/metrics` is also served, on a listener of its own (default: only on
    /// the API listener).
    pub metrics_listen: Option<String>,
    /// Data-plane settings.
    pub proxy: RawProxy,
}

/// Data-plane settings as written in the TOML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawProxy {
    /// Added to Lattice ports below 1024 when not running as root (default 10000; DNS → 10053).
    pub low_port_offset: Option<u16>,
    /// Seconds a target may take to start answering before the client gets 504 (default 60).
    pub response_timeout_seconds: Option<u64>,
    /// Milliseconds a connection to a target may take to be made (default 2000); then the
    /// request goes to another target when it may, else the client gets a 502.
    pub connect_timeout_ms: Option<u64>,
    /// Seconds a client may take to send a whole request head (default 10).
    pub header_read_timeout_seconds: Option<u64>,
    /// Largest request head in bytes (default 65536).
    pub max_header_bytes: Option<usize>,
    /// Most header fields in a request head (default 100).
    pub max_headers: Option<usize>,
    /// Most client connections the data plane keeps open at once, over all its listeners
    /// (default 20,000); more are closed when accepted, and counted
    /// (`trellis_connections_refused_total`).
    pub max_connections: Option<usize>,
    /// Seconds a client connection lives at most (default 600, Lattice's 10 minutes); past it,
    /// the connection closes after the request in progress.
    pub max_connection_age_seconds: Option<u64>,
    /// Seconds a deregistered target drains at most (default 60).
    pub deregistration_delay_seconds: Option<u64>,
    /// Lowest health-check interval in milliseconds (default 5000, AWS's floor). A Trellis
    /// extension for tests and demos: lower it to see health transitions quickly.
    pub min_health_check_interval_ms: Option<u64>,
    /// An access log file rotates once it is this many bytes (default 16 MiB).
    pub access_log_max_file_bytes: Option<u64>,
    /// Rotated access log files kept per destination (default 4).
    pub access_log_keep_files: Option<usize>,
    /// Access log records waiting for the writer at most; more are dropped and counted
    /// (default 8192).
    pub access_log_queue: Option<usize>,
}

/// Quotas as written in the TOML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)] // Each is a quota of spec §7, named as in [`Quotas`].
pub struct RawQuotas {
    pub service_networks: Option<u64>,
    pub services: Option<u64>,
    pub target_groups: Option<u64>,
    pub listeners_per_service: Option<u64>,
    pub rules_per_listener: Option<u64>,
    pub target_groups_per_service: Option<u64>,
    pub targets_per_target_group: Option<u64>,
    pub vpc_associations_per_service_network: Option<u64>,
    pub service_associations_per_service_network: Option<u64>,
}

/// Client connections a node's data plane keeps open at once unless `max_connections` says.
const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// API listen address.
    pub listen: SocketAddr,
    /// Region of unsigned requests.
    pub region: String,
    /// The account.
    pub account: String,
    /// The account's organization ID.
    pub organization_id: String,
    /// Logs as JSON lines.
    pub log_json: bool,
    /// Commit durability (embedded store).
    pub durability: Durability,
    /// Where the store is.
    pub store: StoreConfig,
    /// Middle label of generated names.
    pub partition_label: String,
    /// `hostedZoneId` of generated names.
    pub hosted_zone_id: String,
    /// Extra allowed `Host` values.
    pub allowed_hosts: Vec<String>,
    /// Quotas.
    pub quotas: Quotas,
    /// This node's name.
    pub node: String,
    /// What this node runs.
    pub roles: crate::cluster::Roles,
    /// Where VPC ingress addresses come from.
    pub ingress_range: IngressRange,
    /// Where loopback-mode task addresses come from.
    pub task_range: IngressRange,
    /// Loopback mode: tasks run unprivileged, so container ports below 1024 are served at port
    /// + this offset (the `low_port_offset` setting), whoever runs the server.
    pub task_port_offset: u16,
    /// How VPCs are made real (also in `proxy.network`).
    pub network: Network,
    /// The names this installation's namespaces get (whatever the mode).
    pub naming: Naming,
    /// Runtime worker threads (`None`: one per core).
    pub worker_threads: Option<usize>,
    /// The API accepts health checks below AWS's floor.
    pub relaxed_health_checks: bool,
    /// API calls must be signed; `/_trellis/` endpoints need the token.
    pub require_signature: bool,
    /// Lifetime of managed certificates.
    pub certificate_lifetime: Duration,
    /// Data-plane settings.
    pub proxy: ProxyConfig,
    /// A listener of its own for `/_trellis/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// Access log files.
    pub access_log: AccessLogConfig,
}

/// Which store an installation runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded SQLite store, `store.db` in the data directory.
    Embedded,
    /// An etcd cluster.
    Etcd(EtcdConfig),
}

// === impl RawConfig ===

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Overrides fields from `TRELLIS_*` variables.
    pub fn apply_env(&mut self, env: &dyn Env) -> anyhow::Result<()> {
        let s = |name: &str| env.var(&format!("TRELLIS_{name}")).filter(|v| !v.is_empty());
        if let Some(v) = s("DATA_DIR") {
            self.data_dir = Some(v.into());
        }
        for (name, field) in [
            ("LISTEN", &mut self.listen),
            ("REGION", &mut self.region),
            ("ACCOUNT", &mut self.account),
            ("ORGANIZATION_ID", &mut self.organization_id),
            ("LOG_FORMAT", &mut self.log_format),
            ("DURABILITY", &mut self.durability),
            ("PARTITION_LABEL", &mut self.partition_label),
            ("HOSTED_ZONE_ID", &mut self.hosted_zone_id),
            ("NETWORK", &mut self.network),
            ("NAME_PREFIX", &mut self.name_prefix),
        ] {
            if let Some(v) = s(name) {
                *field = Some(v);
            }
        }
        for (name, field) in [
            ("STORE", &mut self.store),
            ("STORE_USERNAME", &mut self.store_username),
            ("STORE_PASSWORD", &mut self.store_password),
            ("STORE_PREFIX", &mut self.store_prefix),
        ] {
            if let Some(v) = s(name) {
                *field = Some(v);
            }
        }
        for (name, field) in [
            ("STORE_CA_FILE", &mut self.store_ca_file),
            ("STORE_CERT_FILE", &mut self.store_cert_file),
            ("STORE_KEY_FILE", &mut self.store_key_file),
        ] {
            if let Some(v) = s(name) {
                *field = Some(v.into());
            }
        }
        if let Some(v) = s("NODE") {
            self.node = Some(v);
        }
        if let Some(v) = s("ROLE") {
            self.role = Some(v);
        }
        if let Some(v) = s("INGRESS_RANGE") {
            self.ingress_range = Some(v);
        }
        if let Some(v) = s("TASK_RANGE") {
            self.task_range = Some(v);
        }
        let num = |name: &str| -> anyhow::Result<Option<u64>> {
            s(name).map(|v| v.parse().with_context(|| format!("TRELLIS_{name}={v:?} is not a number"))).transpose()
        };
        let p = &mut self.proxy;
        if let Some(v) = num("LOW_PORT_OFFSET")? {
            p.low_port_offset = Some(u16::try_from(v).context("TRELLIS_LOW_PORT_OFFSET is too large")?);
        }
        p.response_timeout_seconds = num("RESPONSE_TIMEOUT_SECONDS")?.or(p.response_timeout_seconds);
        p.connect_timeout_ms = num("CONNECT_TIMEOUT_MS")?.or(p.connect_timeout_ms);
        p.deregistration_delay_seconds = num("DEREGISTRATION_DELAY_SECONDS")?.or(p.deregistration_delay_seconds);
        p.max_connection_age_seconds = num("MAX_CONNECTION_AGE_SECONDS")?.or(p.max_connection_age_seconds);
        p.min_health_check_interval_ms = num("MIN_HEALTH_CHECK_INTERVAL_MS")?.or(p.min_health_check_interval_ms);
        p.access_log_max_file_bytes = num("ACCESS_LOG_MAX_FILE_BYTES")?.or(p.access_log_max_file_bytes);
        if let Some(v) = num("MAX_CONNECTIONS")? {
            p.max_connections = Some(usize::try_from(v).context("TRELLIS_MAX_CONNECTIONS is too large")?);
        }
        let size = |v: u64, name: &str| usize::try_from(v).with_context(|| format!("TRELLIS_{name} is too large"));
        if let Some(v) = num("ACCESS_LOG_KEEP_FILES")? {
            p.access_log_keep_files = Some(size(v, "ACCESS_LOG_KEEP_FILES")?);
        }
        if let Some(v) = num("ACCESS_LOG_QUEUE")? {
            p.access_log_queue = Some(size(v, "ACCESS_LOG_QUEUE")?);
        }
        if let Some(v) = s("METRICS_LISTEN") {
            self.metrics_listen = Some(v);
        }
        self.certificate_lifetime_seconds = num("CERTIFICATE_LIFETIME_SECONDS")?.or(self.certificate_lifetime_seconds);
        if let Some(v) = s("RELAXED_HEALTH_CHECKS") {
            self.relaxed_health_checks = Some(matches!(v.as_str(), "1" | "true" | "yes"));
        }
        if let Some(v) = s("REQUIRE_SIGNATURE") {
            self.require_signature = Some(matches!(v.as_str(), "1" | "true" | "yes"));
        }
        if let Some(v) = num("WORKER_THREADS")? {
            self.worker_threads = Some(usize::try_from(v).context("TRELLIS_WORKER_THREADS is too large")?);
        }
        if let Some(v) = s("ALLOWED_HOSTS") {
            self.allowed_hosts = Some(v.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect());
        }
        for (name, field) in self.quotas.fields_mut() {
            let var = format!("QUOTAS_{}", name.to_ascii_uppercase());
            if let Some(v) = s(&var) {
                *field = Some(v.parse().with_context(|| format!("TRELLIS_{var}={v:?} is not a number"))?);
            }
        }
        Ok(())
    }

    /// Validates, filling in defaults. `home` and `xdg_data_home` locate the default data dir.
    pub fn validate(self, env: &dyn Env) -> anyhow::Result<Config> {
        let store = self.store_config()?;
        let data_dir = match self.data_dir {
            Some(dir) => dir,
            None => default_data_dir(env)?,
        };
        let listen = self.listen.as_deref().unwrap_or("127.0.0.1:7700");
        let listen: SocketAddr = listen.parse().with_context(|| format!("listen address {listen:?}"))?;
        let region = self.region.unwrap_or_else(|| "us-east-1".to_owned());
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            bail!("region {region:?} is not a region name");
        }
        let account = self.account.unwrap_or_else(|| "000000000000".to_owned());
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            bail!("account {account:?} must be 12 digits");
        }
        let organization_id = self.organization_id.unwrap_or_else(|| "o-trellis0000".to_owned());
        let suffix = organization_id.strip_prefix("o-").unwrap_or_default();
        if !(10..=32).contains(&suffix.len()) || !suffix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            bail!("organization id {organization_id:?} must be o- and 10 to 32 lowercase letters or digits");
        }
        let log_json = match self.log_format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => bail!("log format {other:?}: use text or json"),
        };
        let durability = match self.durability.as_deref().unwrap_or("process") {
            "process" => Durability::Process,
            "power-loss" => Durability::PowerLoss,
            other => bail!("durability {other:?}: use process or power-loss"),
        };
        let partition_label = self.partition_label.unwrap_or_else(|| "7d67968".to_owned());
        if partition_label.is_empty() || !partition_label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("partition label {partition_label:?} must be lowercase letters and digits");
        }
        let defaults = Quotas::default();
        let q = self.quotas;
        let quotas = Quotas {
            service_networks: q.service_networks.unwrap_or(defaults.service_networks),
            services: q.services.unwrap_or(defaults.services),
            target_groups: q.target_groups.unwrap_or(defaults.target_groups),
            listeners_per_service: q.listeners_per_service.unwrap_or(defaults.listeners_per_service),
            rules_per_listener: q.rules_per_listener.unwrap_or(defaults.rules_per_listener),
            target_groups_per_service: q.target_groups_per_service.unwrap_or(defaults.target_groups_per_service),
            targets_per_target_group: q.targets_per_target_group.unwrap_or(defaults.targets_per_target_group),
            vpc_associations_per_service_network: q
                .vpc_associations_per_service_network
                .unwrap_or(defaults.vpc_associations_per_service_network),
            service_associations_per_service_network: q
                .service_associations_per_service_network
                .unwrap_or(defaults.service_associations_per_service_network),
        };
        // Every API call is one store transaction, within etcd's limit of 128 operations;
        // these quotas bound the biggest ones (DeleteListener, BatchUpdateRule, DeleteService).
        for (name, value, max) in [
            ("listeners_per_service", quotas.listeners_per_service, 10),
            ("rules_per_listener", quotas.rules_per_listener, 10),
            ("target_groups_per_service", quotas.target_groups_per_service, 10),
        ] {
            if value > max {
                bail!("quota {name} = {value} is above {max}, the most one store transaction can carry");
            }
        }
        let node = match self.node {
            Some(node) => node,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "local".to_owned()),
        };
        if node.is_empty() || !node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            bail!("node name {node:?} must be letters, digits, '-', '_' or '.'");
        }
        let roles = match self.role.as_deref() {
            None => crate::cluster::Roles::ALL,
            Some(text) => crate::cluster::Roles::parse(text)?,
        };
        if roles != crate::cluster::Roles::ALL && matches!(store, StoreConfig::Embedded) {
            bail!(
                "--role {} needs a shared store (--store etcd://…): the embedded store is one process's",
                roles.names().join(",")
            );
        }
        let ingress_range = match &self.ingress_range {
            Some(range) => IngressRange::parse(range)?,
            None => IngressRange::parse(&default_ingress_range(&data_dir))?,
        };
        let task_range = match &self.task_range {
            Some(range) => IngressRange::parse(range)?,
            None => IngressRange::parse(&default_task_range(&data_dir))?,
        };
        if ingress_range.overlaps(&task_range) {
            bail!("ingress_range and task_range must not overlap");
        }
        let relaxed_health_checks = self.relaxed_health_checks.unwrap_or(false);
        let p = self.proxy;
        let is_root = process_is_root();
        let naming = Naming::new(&self.name_prefix.clone().unwrap_or_else(|| default_name_prefix(&data_dir)))?;
        let network = match self.network.as_deref() {
            Some("loopback") => Network::Loopback,
            Some("netns") => Network::Netns(naming.clone()),
            None if is_root && cfg!(target_os = "linux") => Network::Netns(naming.clone()),
            None => Network::Loopback,
            Some(other) => bail!("network {other:?} must be netns or loopback"),
        };
        let proxy = ProxyConfig {
            ports: Ports::for_process(is_root, p.low_port_offset.unwrap_or(10_000)),
            response_timeout: Duration::from_secs(p.response_timeout_seconds.unwrap_or(60)),
            connect_timeout: Duration::from_millis(p.connect_timeout_ms.unwrap_or(2000).max(1)),
            header_read_timeout: Duration::from_secs(p.header_read_timeout_seconds.unwrap_or(10)),
            max_connection_age: Duration::from_secs(p.max_connection_age_seconds.unwrap_or(600).max(1)),
            max_connections: p.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1),
            max_header_bytes: p.max_header_bytes.unwrap_or(64 * 1024),
            max_headers: p.max_headers.unwrap_or(100),
            deregistration_delay: Duration::from_secs(p.deregistration_delay_seconds.unwrap_or(60)),
            min_health_check_interval: Duration::from_millis(
                p.min_health_check_interval_ms.unwrap_or(if relaxed_health_checks { 1000 } else { 5000 }),
            ),
            network: network.clone(),
        };
        if self.worker_threads == Some(0) {
            bail!("worker_threads must be at least 1");
        }
        let metrics_listen = match self.metrics_listen.as_deref() {
            None | Some("") => None,
            Some(a) => Some(a.parse::<SocketAddr>().with_context(|| format!("metrics listen address {a:?}"))?),
        };
        let access_log = AccessLogConfig {
            data_dir: data_dir.clone(),
            node: node.clone(),
            max_file_bytes: p.access_log_max_file_bytes.unwrap_or(16 << 20).max(1024),
            keep_files: p.access_log_keep_files.unwrap_or(4),
            queue: p.access_log_queue.unwrap_or(8192).max(1),
            recent: 10_000,
        };
        let certificate_lifetime = match self.certificate_lifetime_seconds {
            None => trellis_control::pki::DEFAULT_LIFETIME,
            Some(s) if s >= 3 => Duration::from_secs(s),
            Some(_) => bail!("certificate_lifetime_seconds must be at least 3"),
        };
        Ok(Config {
            certificate_lifetime,
            network,
            naming,
            worker_threads: self.worker_threads,
            relaxed_health_checks,
            require_signature: self.require_signature.unwrap_or(false),
            node,
            roles,
            ingress_range,
            task_range,
            task_port_offset: p.low_port_offset.unwrap_or(10_000),
            proxy,
            metrics_listen,
            access_log,
            data_dir,
            listen,
            region,
            account,
            organization_id,
            log_json,
            durability,
            store,
            partition_label,
            hosted_zone_id: self.hosted_zone_id.unwrap_or_else(|| "Z0000000000000TRELLIS".to_owned()),
            allowed_hosts: self.allowed_hosts.unwrap_or_default(),
            quotas,
        })
    }
}

impl RawConfig {
    /// The store settings, checked: TLS files and credentials only go with etcd.
    fn store_config(&self) -> anyhow::Result<StoreConfig> {
        let Some(url) = self.store.as_deref().filter(|s| !s.is_empty() && *s != "embedded") else {
            let etcd_only = [
                ("store_ca_file", self.store_ca_file.is_some()),
                ("store_cert_file", self.store_cert_file.is_some()),
                ("store_key_file", self.store_key_file.is_some()),
                ("store_username", self.store_username.is_some()),
                ("store_password", self.store_password.is_some()),
                ("store_prefix", self.store_prefix.is_some()),
            ];
            if let Some((name, _)) = etcd_only.iter().find(|(_, set)| *set) {
                bail!("{name} is set but the store is the embedded one; set store = \"etcd://HOST:PORT\"");
            }
            return Ok(StoreConfig::Embedded);
        };
        let mut etcd = EtcdConfig::from_url(url).map_err(|e| anyhow::anyhow!("{e}"))?;
        etcd.ca_file = self.store_ca_file.clone();
        etcd.cert_file = self.store_cert_file.clone();
        etcd.key_file = self.store_key_file.clone();
        etcd.username = self.store_username.clone();
        etcd.password = self.store_password.clone();
        etcd.namespace = self.store_prefix.clone().unwrap_or_default();
        match (&etcd.scheme, &etcd.ca_file, &etcd.cert_file, &etcd.key_file) {
            (trellis_store::Scheme::Http, None, None, None) => {}
            (trellis_store::Scheme::Http, ..) => {
                bail!("store_ca_file, store_cert_file and store_key_file need etcds://")
            }
            (trellis_store::Scheme::Https, None, ..) => bail!("etcds:// needs store_ca_file"),
            (trellis_store::Scheme::Https, Some(_), cert, key) if cert.is_some() != key.is_some() => {
                bail!("store_cert_file and store_key_file go together")
            }
            (trellis_store::Scheme::Https, ..) => {}
        }
        if etcd.username.is_some() != etcd.password.is_some() {
            bail!("store_username and store_password go together");
        }
        Ok(StoreConfig::Etcd(etcd))
    }
}

/// A /24 inside 127.64.0.0/10 picked by a hash of the data directory, so that installations
/// with different data directories get different ingress ranges without any configuration.
/// `$XDG_DATA_HOME/trellis`, else `~/.local/share/trellis`.
pub fn default_data_dir(env: &dyn Env) -> anyhow::Result<PathBuf> {
    match (env.var("XDG_DATA_HOME").filter(|v| !v.is_empty()), env.var("HOME")) {
        (Some(xdg), _) => Ok(Path::new(&xdg).join("trellis")),
        (None, Some(home)) => Ok(Path::new(&home).join(".local/share/trellis")),
        (None, None) => bail!("no data directory: set --data-dir, XDG_DATA_HOME or HOME"),
    }
}

fn default_ingress_range(data_dir: &Path) -> String {
    let n = fnv1a(data_dir) % (64 * 256);
    format!("127.{}.{}.0/24", 64 + n / 256, n % 256)
}

/// A /24 inside 127.128.0.0/10 picked by a hash of the data directory (as the ingress range,
/// in another block): where loopback-mode task addresses come from.
fn default_task_range(data_dir: &Path) -> String {
    let n = fnv1a(data_dir) % (64 * 256);
    format!("127.{}.{}.0/24", 128 + n / 256, n % 256)
}

/// `tr` and six hex digits of a hash of the data directory: installations with different data
/// directories name their namespaces differently without any configuration.
fn default_name_prefix(data_dir: &Path) -> String {
    format!("tr{:06x}", fnv1a(data_dir) & 0xff_ffff)
}

/// FNV-1a of a path: stable across runs and Rust versions (std's hasher is not).
fn fnv1a(path: &Path) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in path.as_os_str().as_encoded_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// Whether this process runs as root (ports below 1024 need it).
fn process_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().nth(1) == Some("0"))))
        .unwrap_or(false)
}

// === impl RawQuotas ===

impl RawQuotas {
    fn fields_mut(&mut self) -> [(&'static str, &mut Option<u64>); 9] {
        [
            ("service_networks", &mut self.service_networks),
            ("services", &mut self.services),
            ("target_groups", &mut self.target_groups),
            ("listeners_per_service", &mut self.listeners_per_service),
            ("rules_per_listener", &mut self.rules_per_listener),
            ("target_groups_per_service", &mut self.target_groups_per_service),
            ("targets_per_target_group", &mut self.targets_per_target_group),
            ("vpc_associations_per_service_network", &mut self.vpc_associations_per_service_network),
            ("service_associations_per_service_network", &mut self.service_associations_per_service_network),
        ]
    }
}

// === impl Config ===

impl Config {
    /// The `Host` header values the API answers to once bound to `bound`: its own address,
    /// `localhost` on its port, and any configured extras. Empty (anything goes) when listening
    /// on all addresses.
    pub fn allowed_hosts(&self, bound: SocketAddr) -> Vec<String> {
        let ip = bound.ip();
        if ip.is_unspecified() {
            return self.allowed_hosts.clone();
        }
        let port = bound.port();
        let own = match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let mut hosts = vec![format!("{own}:{port}"), format!("localhost:{port}")];
        if port == 80 {
            hosts.extend([own, "localhost".to_owned()]);
        }
        hosts.extend(self.allowed_hosts.iter().cloned());
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults() {
        let c = RawConfig::default().validate(&env(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(c.data_dir, Path::new("/home/u/.local/share/trellis"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:7700");
        assert_eq!((c.region.as_str(), c.account.as_str()), ("us-east-1", "000000000000"));
        assert_eq!(c.organization_id, "o-trellis0000");
        assert_eq!(c.quotas, Quotas::default());
        let c = RawConfig::default().validate(&env(&[("HOME", "/h"), ("XDG_DATA_HOME", "/x")])).unwrap();
        assert_eq!(c.data_dir, Path::new("/x/trellis"));
    }

    #[test]
    fn layers_env_over_file() {
        let mut raw: RawConfig =
            toml::from_str("region = \"eu-west-1\"\n[quotas]\nservices = 5\ntarget_groups = 7\n").unwrap();
        raw.apply_env(&env(&[
            ("TRELLIS_QUOTAS_SERVICES", "10000"),
            ("TRELLIS_ACCOUNT", "111122223333"),
            ("TRELLIS_ORGANIZATION_ID", "o-abcdef123456"),
        ]))
        .unwrap();
        let c = raw.validate(&env(&[("HOME", "/h")])).unwrap();
        assert_eq!(c.organization_id, "o-abcdef123456");
        assert_eq!((c.quotas.services, c.quotas.target_groups), (10000, 7));
        assert_eq!((c.region.as_str(), c.account.as_str()), ("eu-west-1", "111122223333"));
    }

    #[test]
    fn refuses_bad_input() {
        assert!(toml::from_str::<RawConfig>("nope = 1").is_err());
        assert!(toml::from_str::<RawConfig>("[quotas]\nfoo = 1").is_err());
        let mut raw = RawConfig::default();
        assert!(raw.apply_env(&env(&[("TRELLIS_QUOTAS_SERVICES", "many")])).is_err());
        for bad in [
            "[quotas]\nrules_per_listener = 11",
            "account = \"12\"",
            "organization_id = \"o-short\"",
            "organization_id = \"org-trellis0000\"",
            "listen = \"nowhere\"",
            "log_format = \"xml\"",
            "durability = \"maybe\"",
        ] {
            let raw: RawConfig = toml::from_str(bad).unwrap();
            assert!(raw.validate(&env(&[("HOME", "/h")])).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_settings() {
        let c = RawConfig::default().validate(&env(&[("HOME", "/h")])).unwrap();
        assert_eq!(c.store, StoreConfig::Embedded, "the embedded store by default");
        let mut raw: RawConfig =
            toml::from_str("store = \"etcd://127.0.0.1:2379,127.0.0.1:22379\"\nstore_username = \"root\"").unwrap();
        raw.apply_env(&env(&[("TRELLIS_STORE_PASSWORD", "pw")])).unwrap();
        let StoreConfig::Etcd(etcd) = raw.validate(&env(&[("HOME", "/h")])).unwrap().store else { panic!("etcd") };
        assert_eq!(etcd.endpoints, ["127.0.0.1:2379", "127.0.0.1:22379"]);
        assert_eq!((etcd.username.as_deref(), etcd.password.as_deref()), (Some("root"), Some("pw")));
        assert_eq!(etcd.namespace, "", "the whole keyspace by default");
        let mut raw = RawConfig::default();
        raw.apply_env(&env(&[
            ("TRELLIS_STORE", "etcds://e:2379"),
            ("TRELLIS_STORE_CA_FILE", "/ca.pem"),
            ("TRELLIS_STORE_PREFIX", "trellis/"),
        ]))
        .unwrap();
        let StoreConfig::Etcd(etcd) = raw.validate(&env(&[("HOME", "/h")])).unwrap().store else { panic!("etcd") };
        assert_eq!(etcd.namespace, "trellis/");
        assert_eq!((etcd.scheme, etcd.ca_file.as_deref()), (trellis_store::Scheme::Https, Some(Path::new("/ca.pem"))));
        for bad in [
            "store = \"redis://x:1\"",
            "store = \"etcd://nohost\"",
            "store = \"etcds://e:1\"",
            "store = \"etcd://e:1\"\nstore_ca_file = \"/ca.pem\"",
            "store = \"etcds://e:1\"\nstore_ca_file = \"/ca.pem\"\nstore_cert_file = \"/c.pem\"",
            "store = \"etcd://e:1\"\nstore_username = \"root\"",
            "store_password = \"pw\"",
            "store_prefix = \"trellis/\"",
        ] {
            let raw: RawConfig = toml::from_str(bad).unwrap();
            assert!(raw.validate(&env(&[("HOME", "/h")])).is_err(), "{bad}");
        }
    }

    #[test]
    fn sample_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/trellis.toml");
        let raw = RawConfig::from_file(&path).unwrap();
        raw.validate(&env(&[("HOME", "/h")])).unwrap();
    }

    #[test]
    fn ingress_ranges_differ_by_data_dir() {
        let a = default_ingress_range(Path::new("/a"));
        let b = default_ingress_range(Path::new("/b"));
        assert_ne!(a, b);
        for r in [a, b] {
            IngressRange::parse(&r).unwrap();
            assert!(r.starts_with("127."), "{r}");
        }
        let raw: RawConfig = toml::from_str("ingress_range = \"10.0.0.0/24\"").unwrap();
        assert!(raw.validate(&env(&[("HOME", "/h")])).is_err());
    }

    #[test]
    fn allowed_hosts_follow_listen() {
        let c = RawConfig::default().validate(&env(&[("HOME", "/h")])).unwrap();
        assert_eq!(c.allowed_hosts(c.listen), vec!["127.0.0.1:7700", "localhost:7700"]);
        assert!(c.allowed_hosts("0.0.0.0:7700".parse().unwrap()).is_empty());
    }
}
