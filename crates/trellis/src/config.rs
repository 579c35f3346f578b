//! Configuration, loaded in two stages in this one module: a [`RawConfig`] is layered from
//! defaults, a TOML file (`--config`), the `TRELLIS_*` environment and command-line flags (each
//! later layer wins), then validated into a [`Config`]. The environment is read only here, and
//! through the [`Env`] trait so that tests can pass a map.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use trellis_control::Quotas;
use trellis_store::Durability;

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
    /// `text` (default) or `json`.
    pub log_format: Option<String>,
    /// `process` (default: survives `kill -9`) or `power-loss` (fsync every commit).
    pub durability: Option<String>,
    /// Middle label of generated service names (default `7d67968`).
    pub partition_label: Option<String>,
    /// `hostedZoneId` of generated names (default `Z0000000000000TRELLIS`).
    pub hosted_zone_id: Option<String>,
    /// Extra `Host` header values the API answers to, besides its own address and `localhost`.
    pub allowed_hosts: Option<Vec<String>>,
    /// Quotas (spec §7); each defaults to AWS's default.
    pub quotas: RawQuotas,
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
    /// Logs as JSON lines.
    pub log_json: bool,
    /// Commit durability.
    pub durability: Durability,
    /// Middle label of generated names.
    pub partition_label: String,
    /// `hostedZoneId` of generated names.
    pub hosted_zone_id: String,
    /// Extra allowed `Host` values.
    pub allowed_hosts: Vec<String>,
    /// Quotas.
    pub quotas: Quotas,
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
            ("LOG_FORMAT", &mut self.log_format),
            ("DURABILITY", &mut self.durability),
            ("PARTITION_LABEL", &mut self.partition_label),
            ("HOSTED_ZONE_ID", &mut self.hosted_zone_id),
        ] {
            if let Some(v) = s(name) {
                *field = Some(v);
            }
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
        let data_dir = match self.data_dir {
            Some(dir) => dir,
            None => match (env.var("XDG_DATA_HOME").filter(|v| !v.is_empty()), env.var("HOME")) {
                (Some(xdg), _) => Path::new(&xdg).join("trellis"),
                (None, Some(home)) => Path::new(&home).join(".local/share/trellis"),
                (None, None) => bail!("no data directory: set --data-dir, XDG_DATA_HOME or HOME"),
            },
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
        Ok(Config {
            data_dir,
            listen,
            region,
            account,
            log_json,
            durability,
            partition_label,
            hosted_zone_id: self.hosted_zone_id.unwrap_or_else(|| "Z0000000000000TRELLIS".to_owned()),
            allowed_hosts: self.allowed_hosts.unwrap_or_default(),
            quotas,
        })
    }
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
        assert_eq!(c.quotas, Quotas::default());
        let c = RawConfig::default().validate(&env(&[("HOME", "/h"), ("XDG_DATA_HOME", "/x")])).unwrap();
        assert_eq!(c.data_dir, Path::new("/x/trellis"));
    }

    #[test]
    fn layers_env_over_file() {
        let mut raw: RawConfig =
            toml::from_str("region = \"eu-west-1\"\n[quotas]\nservices = 5\ntarget_groups = 7\n").unwrap();
        raw.apply_env(&env(&[("TRELLIS_QUOTAS_SERVICES", "10000"), ("TRELLIS_ACCOUNT", "111122223333")])).unwrap();
        let c = raw.validate(&env(&[("HOME", "/h")])).unwrap();
        assert_eq!((c.quotas.services, c.quotas.target_groups), (10000, 7));
        assert_eq!((c.region.as_str(), c.account.as_str()), ("eu-west-1", "111122223333"));
    }

    #[test]
    fn refuses_bad_input() {
        assert!(toml::from_str::<RawConfig>("nope = 1").is_err());
        assert!(toml::from_str::<RawConfig>("[quotas]\nfoo = 1").is_err());
        let mut raw = RawConfig::default();
        assert!(raw.apply_env(&env(&[("TRELLIS_QUOTAS_SERVICES", "many")])).is_err());
        for bad in ["account = \"12\"", "listen = \"nowhere\"", "log_format = \"xml\"", "durability = \"maybe\""] {
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
    fn allowed_hosts_follow_listen() {
        let c = RawConfig::default().validate(&env(&[("HOME", "/h")])).unwrap();
        assert_eq!(c.allowed_hosts(c.listen), vec!["127.0.0.1:7700", "localhost:7700"]);
        assert!(c.allowed_hosts("0.0.0.0:7700".parse().unwrap()).is_empty());
    }
}
