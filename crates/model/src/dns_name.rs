//! The generated DNS name of a service (spec §2.4):
//! `<service-name>-<id without "svc-">.<partition label>.vpc-lattice-svcs.<region>.on.aws`.

/// The generated name of service `id` (e.g. `svc-0123…`) called `name` in `region`.
pub fn service_dns_name(name: &str, id: &str, partition_label: &str, region: &str) -> String {
    let suffix = id.strip_prefix("svc-").unwrap_or(id);
    format!("{name}-{suffix}.{}", zone(partition_label, region))
}

/// The zone every generated name of `region` lies in (what its managed certificate covers).
pub fn zone(partition_label: &str, region: &str) -> String {
    format!("{partition_label}.vpc-lattice-svcs.{region}.on.aws")
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_name() {
        assert_eq!(
            super::service_dns_name("demo-service", "svc-057f55fd2927517c9", "7d67968", "us-west-2"),
            "demo-service-057f55fd2927517c9.7d67968.vpc-lattice-svcs.us-west-2.on.aws"
        );
    }
}
