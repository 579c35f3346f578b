//! A target group's health-check settings (spec §3.7): the defaults its protocol implies, the
//! merge of what a caller gave over what is stored (`0` and `""` put a member back to its
//! default, as the AWS Gateway API controller relies on), and the ranges AWS enforces. The
//! stored block is always complete, so GetTargetGroup echoes every member as AWS does; only
//! `port` stays absent, meaning "the target's traffic port".

use trellis_model::lattice::{HealthCheckConfig, Matcher};

use crate::lattice::ApiError;

/// The lowest interval and thresholds the API accepts: AWS's, unless the installation relaxes
/// them for tests and demos (a Trellis extension, off by default).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Floor {
    interval: u32,
    threshold: u32,
}

impl Floor {
    /// The floor this installation's API enforces.
    pub(crate) fn of(req: &crate::lattice::Req<'_>) -> Self {
        if req.state.config.relaxed_health_checks { Self { interval: 1, threshold: 1 } } else { Self::AWS }
    }

    const AWS: Self = Self { interval: 5, threshold: 2 };
}

const INTERVAL: u32 = 30;
const TIMEOUT: u32 = 5;
const HEALTHY: u32 = 5;
const UNHEALTHY: u32 = 2;

/// The settings a target group with this protocol and protocol version starts with. Checks are
/// on for HTTP1 and off for HTTP2, GRPC and TCP; they probe with the target group's protocol
/// (HTTP for TCP target groups).
pub(super) fn defaults(protocol: &str, protocol_version: Option<&str>) -> HealthCheckConfig {
    let http1 = protocol_version.unwrap_or("HTTP1") == "HTTP1";
    HealthCheckConfig {
        enabled: Some(protocol != "TCP" && http1),
        protocol: Some(if protocol == "HTTPS" { "HTTPS" } else { "HTTP" }.to_owned()),
        protocol_version: Some("HTTP1".to_owned()),
        port: None,
        path: Some("/".to_owned()),
        health_check_interval_seconds: Some(INTERVAL),
        health_check_timeout_seconds: Some(TIMEOUT),
        healthy_threshold_count: Some(HEALTHY),
        unhealthy_threshold_count: Some(UNHEALTHY),
        matcher: Some(Matcher { http_code: "200".to_owned() }),
    }
}

/// Merges `given` over `stored` (`None` on create) for a target group with
/// this protocol and version. `field` names the block in errors (`config.healthCheck` or
/// `healthCheck`).
pub(super) fn merge(
    protocol: &str,
    protocol_version: Option<&str>,
    stored: Option<&HealthCheckConfig>,
    given: &HealthCheckConfig,
    field: &str,
    floor: Floor,
) -> Result<HealthCheckConfig, ApiError> {
    check_given(given, field, floor)?;
    let dflt = defaults(protocol, protocol_version);
    let base = stored.unwrap_or(&dflt);
    // A member given as 0 goes back to its default; one not given keeps its stored value.
    let number = |given: Option<u32>, base: Option<u32>, dflt: u32| match given {
        Some(0) => Some(dflt),
        Some(v) => Some(v),
        None => base.or(Some(dflt)),
    };
    let merged = HealthCheckConfig {
        enabled: given.enabled.or(base.enabled).or(dflt.enabled),
        protocol: given.protocol.clone().or_else(|| base.protocol.clone()).or_else(|| dflt.protocol.clone()),
        protocol_version: given
            .protocol_version
            .clone()
            .or_else(|| base.protocol_version.clone())
            .or_else(|| dflt.protocol_version.clone()),
        port: match given.port {
            Some(0) => None,
            Some(p) => Some(p),
            None => base.port,
        },
        path: match given.path.as_deref() {
            Some("") => Some("/".to_owned()),
            Some(p) => Some(p.to_owned()),
            None => base.path.clone().or_else(|| dflt.path.clone()),
        },
        health_check_interval_seconds: number(
            given.health_check_interval_seconds,
            base.health_check_interval_seconds,
            INTERVAL,
        ),
        health_check_timeout_seconds: number(
            given.health_check_timeout_seconds,
            base.health_check_timeout_seconds,
            TIMEOUT,
        ),
        healthy_threshold_count: number(given.healthy_threshold_count, base.healthy_threshold_count, HEALTHY),
        unhealthy_threshold_count: number(given.unhealthy_threshold_count, base.unhealthy_threshold_count, UNHEALTHY),
        matcher: given.matcher.clone().or_else(|| base.matcher.clone()).or_else(|| dflt.matcher.clone()),
    };
    // A probe may not outlast the gap between probes, or checks of one target would overlap.
    // (ELB requires timeout < interval; Lattice documents no rule, so Trellis allows equality.)
    let (timeout, interval) = (merged.health_check_timeout_seconds, merged.health_check_interval_seconds);
    if timeout > interval {
        return Err(ApiError::field(
            &format!("{field}.healthCheckTimeoutSeconds"),
            format!("must not exceed healthCheckIntervalSeconds ({})", interval.unwrap_or(INTERVAL)),
        ));
    }
    // A TCP target group has no HTTP protocol of its own to probe with: enabling checks on one
    // needs the probe's protocol spelled out (spec §3.2, TLS_PASSTHROUGH).
    if protocol == "TCP" && given.enabled == Some(true) && given.protocol.is_none() && stored.is_none() {
        return Err(ApiError::field(
            &format!("{field}.protocol"),
            "is required to enable health checks on a TCP target group",
        ));
    }
    Ok(merged)
}

/// Checks the members a caller gave against AWS's ranges and enums (0 is always allowed).
fn check_given(given: &HealthCheckConfig, field: &str, floor: Floor) -> Result<(), ApiError> {
    let err = |member: &str, message: String| ApiError::field(&format!("{field}.{member}"), message);
    if let Some(p) = given.protocol.as_deref()
        && !matches!(p, "HTTP" | "HTTPS")
    {
        return Err(err("protocol", format!("{p:?} is not supported; health checks use HTTP or HTTPS")));
    }
    if let Some(v) = given.protocol_version.as_deref()
        && !matches!(v, "HTTP1" | "HTTP2")
    {
        return Err(err("protocolVersion", format!("{v:?} is not one of HTTP1, HTTP2")));
    }
    if let Some(path) = given.path.as_deref() {
        check_path(path).map_err(|m| err("path", m))?;
    }
    let ranges = [
        ("healthCheckIntervalSeconds", given.health_check_interval_seconds, floor.interval, 300),
        ("healthCheckTimeoutSeconds", given.health_check_timeout_seconds, 1, 120),
        ("healthyThresholdCount", given.healthy_threshold_count, floor.threshold, 10),
        ("unhealthyThresholdCount", given.unhealthy_threshold_count, floor.threshold, 10),
    ];
    for (member, value, min, max) in ranges {
        if let Some(v) = value.filter(|v| *v != 0 && !(min..=max).contains(v)) {
            return Err(err(member, format!("{v} is out of range: use {min} to {max}, or 0 for the default")));
        }
    }
    if let Some(m) = &given.matcher
        && !matcher_ok(&m.http_code)
    {
        let message = format!(
            "{:?} is not a valid matcher: give codes from 200 to 499 as \"200\", \"200,202\" or \"200-299\"",
            m.http_code
        );
        return Err(err("matcher.httpCode", message));
    }
    Ok(())
}

/// `""` (the default) or an absolute path with an optional query, as the model's pattern allows.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    if path.len() > 2048 {
        return Err("must be at most 2048 characters".to_owned());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "@:%_+.~#?&/=-".contains(c);
    if !path.starts_with('/') || !path.chars().all(allowed) {
        return Err(format!("{path:?} must start with \"/\" and contain only letters, digits and @:%_+.~#?&/=-"));
    }
    Ok(())
}

/// `200`, `200,202`, `200-299` or a comma list mixing both, every code 200–499.
fn matcher_ok(spec: &str) -> bool {
    let code = |s: &str| -> Option<u16> {
        (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
            .filter(|c| (200..=499).contains(c))
    };
    !spec.is_empty()
        && spec.split(',').all(|part| match part.split_once('-') {
            Some((lo, hi)) => matches!((code(lo), code(hi)), (Some(lo), Some(hi)) if lo <= hi),
            None => code(part).is_some(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(json: serde_json::Value) -> HealthCheckConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_follow_the_protocol() {
        let https = merge("HTTPS", Some("HTTP1"), None, &HealthCheckConfig::default(), "hc", Floor::AWS).unwrap();
        assert_eq!(
            serde_json::to_value(&https).unwrap(),
            serde_json::json!({
                "enabled": true, "healthCheckIntervalSeconds": 30, "healthCheckTimeoutSeconds": 5,
                "healthyThresholdCount": 5, "matcher": {"httpCode": "200"}, "path": "/", "protocol": "HTTPS",
                "protocolVersion": "HTTP1", "unhealthyThresholdCount": 2
            })
        );
        assert_eq!(defaults("HTTP", Some("GRPC")).enabled, Some(false));
        assert_eq!(defaults("HTTP", Some("HTTP2")).enabled, Some(false));
        let tcp = defaults("TCP", None);
        assert_eq!((tcp.enabled, tcp.protocol.as_deref()), (Some(false), Some("HTTP")));
    }

    #[test]
    fn zero_resets_and_absent_keeps() {
        let base = merge(
            "HTTP",
            None,
            None,
            &given(serde_json::json!({"healthCheckIntervalSeconds": 60, "path": "/h", "port": 9000})),
            "hc",
            Floor::AWS,
        )
        .unwrap();
        assert_eq!(
            (base.health_check_interval_seconds, base.path.as_deref(), base.port),
            (Some(60), Some("/h"), Some(9000))
        );
        let kept =
            merge("HTTP", None, Some(&base), &given(serde_json::json!({"healthyThresholdCount": 3})), "hc", Floor::AWS)
                .unwrap();
        assert_eq!((kept.health_check_interval_seconds, kept.healthy_threshold_count), (Some(60), Some(3)));
        let reset = merge(
            "HTTP",
            None,
            Some(&kept),
            &given(serde_json::json!({"healthCheckIntervalSeconds": 0, "path": "", "port": 0})),
            "hc",
            Floor::AWS,
        )
        .unwrap();
        assert_eq!(
            (reset.health_check_interval_seconds, reset.path.as_deref(), reset.port),
            (Some(30), Some("/"), None)
        );
    }

    #[test]
    fn ranges_and_shapes() {
        let bad = [
            serde_json::json!({"healthCheckIntervalSeconds": 4}),
            serde_json::json!({"healthCheckTimeoutSeconds": 121}),
            serde_json::json!({"healthyThresholdCount": 1}),
            serde_json::json!({"unhealthyThresholdCount": 11}),
            serde_json::json!({"path": "health"}),
            serde_json::json!({"path": "/a b"}),
            serde_json::json!({"protocol": "TCP"}),
            serde_json::json!({"protocolVersion": "GRPC"}),
            serde_json::json!({"matcher": {"httpCode": "199"}}),
            serde_json::json!({"matcher": {"httpCode": "300-200"}}),
            serde_json::json!({"matcher": {"httpCode": ""}}),
            serde_json::json!({"healthCheckIntervalSeconds": 5, "healthCheckTimeoutSeconds": 6}),
        ];
        for b in bad {
            assert!(merge("HTTP", None, None, &given(b.clone()), "hc", Floor::AWS).is_err(), "{b}");
        }
        for code in ["200", "200,202", "200-299", "200-299,404", "499"] {
            assert!(matcher_ok(code), "{code}");
        }
        assert!(merge("TCP", None, None, &given(serde_json::json!({"enabled": true})), "hc", Floor::AWS).is_err());
        assert!(
            merge(
                "TCP",
                None,
                None,
                &given(serde_json::json!({"enabled": true, "protocol": "HTTP"})),
                "hc",
                Floor::AWS
            )
            .is_ok()
        );
    }
}
