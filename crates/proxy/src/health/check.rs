//! What the health checker does with each target: a target group's health-check settings turned
//! into a runnable [`Check`] (defaults, floors, the matcher parsed), and the [`Plan`] for one
//! target (probe it, show a fixed status, or drain it). Pure: no I/O, no clock.

use std::net::SocketAddr;
use std::time::Duration;

use trellis_model::lattice::HealthCheckConfig;
use trellis_model::snapshot::{TargetGroupView, TargetView};
use trellis_net::Place;

use crate::{HealthStatus, ProxyConfig, TargetHealth};

/// `reasonCode` of a deregistered target until it is gone (as `ListTargets` words it).
pub(crate) const DRAINING: &str = "DeregistrationInProgress";
/// `reasonCode` of a target whose group no listener or rule uses.
pub(crate) const NOT_IN_USE: &str = "TargetGroupNotInUse";
/// `reasonCode` of a target in a group whose checks are off.
pub(crate) const DISABLED: &str = "HealthCheckDisabled";
/// `reasonCode` of Lambda and ALB targets, which are never checked.
pub(crate) const NOT_SUPPORTED: &str = "HealthCheckNotSupported";
/// `reasonCode` of a target whose checks use a protocol Trellis cannot probe.
pub(crate) const PROTOCOL_UNSUPPORTED: &str = "HealthCheckProtocolUnsupported";
/// `reasonCode` of a target whose settings cannot be run (a matcher that does not parse).
pub(crate) const CONFIG_INVALID: &str = "HealthCheckConfigInvalid";
/// `reasonCode` of a target that is not a loopback address in loopback mode: never contacted.
pub(crate) const NOT_LOOPBACK: &str = "TargetNotLoopback";
/// `reasonCode` of a target that has no address to probe (an instance ID outside loopback mode).
pub(crate) const NO_ADDRESS: &str = "TargetAddressUnknown";
/// `reasonCode` of a target failing its checks (the one AWS is seen to show).
pub(crate) const FAILED: &str = "HealthCheckFailed";

/// AWS's defaults (spec §3.7), for members a snapshot left out.
const DEFAULT_INTERVAL: u32 = 30;
const DEFAULT_TIMEOUT: u32 = 5;
const DEFAULT_HEALTHY: u32 = 5;
const DEFAULT_UNHEALTHY: u32 = 2;

/// A target group's health check, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Check {
    /// What a probe does.
    pub(crate) probe: ProbeKind,
    /// The port probed; `None`: the target's traffic port.
    pub(crate) port: Option<u16>,
    /// Time from one probe's start to the next's.
    pub(crate) interval: Duration,
    /// How long one probe may take (never longer than the interval, so probes never overlap).
    pub(crate) timeout: Duration,
    /// Consecutive passes that make an unhealthy target healthy.
    pub(crate) healthy_threshold: u32,
    /// Consecutive failures that make a target unhealthy.
    pub(crate) unhealthy_threshold: u32,
}

/// The kind of probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    /// Connect, then close.
    Tcp,
    /// `GET path` over HTTP/1.1 (or HTTP/2) on a fresh connection (over TLS for HTTPS checks);
    /// pass when the status is in `codes`.
    Http {
        /// The request target, already safe to write on the wire.
        path: String,
        /// Passing status codes.
        codes: Codes,
        /// HTTPS.
        tls: bool,
        /// HTTP/2 (prior knowledge in cleartext, ALPN `h2` over TLS).
        h2: bool,
    },
}

/// Passing status codes: a list of inclusive ranges (`"200"`, `"200,202"`, `"200-299"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Codes(Vec<(u16, u16)>);

/// What to do with one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Probe this address, from this place.
    Probe(Place, SocketAddr),
    /// Show this status; never probe.
    Fixed(TargetHealth),
    /// Deregistered at this many milliseconds after the Unix epoch: drain, then report it gone.
    Drain(u64),
}

impl Check {
    /// The check a target group's settings describe, or the `reasonCode` of why its targets
    /// cannot be checked. Intervals and timeouts count in units of `second` (one second but in
    /// tests); intervals below `floor` are raised to it.
    pub(crate) fn new(hc: &HealthCheckConfig, floor: Duration, second: Duration) -> Result<Self, &'static str> {
        if hc.enabled == Some(false) {
            return Err(DISABLED);
        }
        let h2 = match hc.protocol_version.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("HTTP1") => false,
            Some("HTTP2") => true,
            Some(_) => return Err(PROTOCOL_UNSUPPORTED),
        };
        let probe = match hc.protocol.as_deref().map(str::to_ascii_uppercase).as_deref() {
            protocol @ (None | Some("HTTP" | "HTTPS")) => {
                let codes = hc.matcher.as_ref().map_or(Ok(Codes::ok()), |m| Codes::parse(&m.http_code))?;
                let tls = protocol == Some("HTTPS");
                ProbeKind::Http { path: request_target(hc.path.as_deref().unwrap_or("/")), codes, tls, h2 }
            }
            Some("TCP") => ProbeKind::Tcp,
            Some(_) => return Err(PROTOCOL_UNSUPPORTED),
        };
        let seconds = |v: Option<u32>, default: u32| second * v.filter(|&s| s > 0).unwrap_or(default);
        let interval = seconds(hc.health_check_interval_seconds, DEFAULT_INTERVAL).max(floor);
        let timeout = seconds(hc.health_check_timeout_seconds, DEFAULT_TIMEOUT).min(interval);
        let threshold = |v: Option<u32>, default: u32| v.filter(|&n| n > 0).unwrap_or(default);
        Ok(Self {
            probe,
            port: hc.port.filter(|&p| p != 0),
            interval,
            timeout,
            healthy_threshold: threshold(hc.healthy_threshold_count, DEFAULT_HEALTHY),
            unhealthy_threshold: threshold(hc.unhealthy_threshold_count, DEFAULT_UNHEALTHY),
        })
    }
}

impl Codes {
    /// `"200"`.
    pub(crate) fn ok() -> Self {
        Self(vec![(200, 200)])
    }

    /// Parses `"200"`, `"200,202"`, `"200-299"` (and mixes: `"200,300-399"`).
    pub(crate) fn parse(s: &str) -> Result<Self, &'static str> {
        let code = |t: &str| t.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c)).ok_or(CONFIG_INVALID);
        let ranges = s
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (code(a)?, code(b)?);
                    if a <= b { Ok((a, b)) } else { Err(CONFIG_INVALID) }
                }
                None => code(part).map(|c| (c, c)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(ranges))
    }

    /// Whether `status` passes.
    pub(crate) fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&status))
    }
}

/// What to do with `target` of group `tg`, whose check is `check`. Draining comes first (it holds
/// whatever else is true), then an unused group, then what cannot be probed.
pub(crate) fn plan(
    config: &ProxyConfig,
    tg: &TargetGroupView,
    check: &Result<Check, &'static str>,
    target: &TargetView,
) -> Plan {
    let fixed = |status, reason| Plan::Fixed(TargetHealth { status, reason: Some(reason) });
    if let Some(since) = target.draining_since_ms {
        return Plan::Drain(since);
    }
    if !tg.in_use {
        return fixed(HealthStatus::Unused, NOT_IN_USE);
    }
    if matches!(tg.target_type.as_str(), "LAMBDA" | "ALB") {
        return fixed(HealthStatus::Unavailable, NOT_SUPPORTED);
    }
    let addr = match target.addr {
        Some(a) if config.network.loopback_only() && !a.ip().is_loopback() => {
            return fixed(HealthStatus::Unavailable, NOT_LOOPBACK);
        }
        Some(a) => a,
        None if config.network.loopback_only() => return fixed(HealthStatus::Unavailable, NOT_LOOPBACK),
        None => return fixed(HealthStatus::Unavailable, NO_ADDRESS),
    };
    match check {
        Ok(c) => Plan::Probe(
            config.network.targets(tg.vpc_id.as_deref()),
            SocketAddr::new(addr.ip(), c.port.unwrap_or(target.port)),
        ),
        Err(reason) => fixed(HealthStatus::Unavailable, reason),
    }
}

/// The request target written on the wire: `path` with a leading `/`, and every byte that could
/// break the request line (controls, spaces, non-ASCII) percent-encoded. The API validates
/// paths; this keeps a stored value from ever injecting into a probe.
fn request_target(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for b in path.bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_model::lattice::Matcher;

    fn hc(f: impl FnOnce(&mut HealthCheckConfig)) -> HealthCheckConfig {
        let mut hc = HealthCheckConfig::default();
        f(&mut hc);
        hc
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn defaults_floor_and_timeout_cap() {
        let c = Check::new(&HealthCheckConfig::default(), Duration::from_secs(5), S).unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!((c.healthy_threshold, c.unhealthy_threshold), (5, 2));
        assert_eq!(c.probe, ProbeKind::Http { path: "/".into(), codes: Codes::ok(), tls: false, h2: false });
        assert_eq!(c.port, None);

        let c = Check::new(&hc(|h| h.health_check_interval_seconds = Some(1)), Duration::from_secs(5), S).unwrap();
        assert_eq!(c.interval, Duration::from_secs(5), "raised to the floor");
        let c = Check::new(&hc(|h| h.health_check_interval_seconds = Some(0)), Duration::ZERO, S).unwrap();
        assert_eq!(c.interval, Duration::from_secs(30), "0 is the default");
        let c = Check::new(
            &hc(|h| {
                h.health_check_interval_seconds = Some(2);
                h.health_check_timeout_seconds = Some(60);
                h.port = Some(9000);
            }),
            Duration::from_millis(10),
            Duration::from_millis(50),
        )
        .unwrap();
        assert_eq!((c.interval, c.timeout), (Duration::from_millis(100), Duration::from_millis(100)));
        assert_eq!(c.port, Some(9000));
    }

    #[test]
    fn protocols() {
        let tcp = Check::new(&hc(|h| h.protocol = Some("TCP".into())), S, S).unwrap();
        assert_eq!(tcp.probe, ProbeKind::Tcp);
        let https = Check::new(&hc(|h| h.protocol = Some("HTTPS".into())), S, S).unwrap();
        assert_eq!(https.probe, ProbeKind::Http { path: "/".into(), codes: Codes::ok(), tls: true, h2: false });
        let h2 = Check::new(&hc(|h| h.protocol_version = Some("HTTP2".into())), S, S).unwrap();
        assert_eq!(h2.probe, ProbeKind::Http { path: "/".into(), codes: Codes::ok(), tls: false, h2: true });
        assert_eq!(Check::new(&hc(|h| h.protocol_version = Some("GRPC".into())), S, S), Err(PROTOCOL_UNSUPPORTED));
        assert_eq!(Check::new(&hc(|h| h.enabled = Some(false)), S, S), Err(DISABLED));
        let bad = hc(|h| h.matcher = Some(Matcher { http_code: "2xx".into() }));
        assert_eq!(Check::new(&bad, S, S), Err(CONFIG_INVALID));
    }

    #[test]
    fn matchers() {
        let one = Codes::parse("200").unwrap();
        assert!(one.contains(200) && !one.contains(201));
        let list = Codes::parse("200, 202").unwrap();
        assert!(list.contains(202) && !list.contains(201));
        let range = Codes::parse("200-299").unwrap();
        assert!(range.contains(200) && range.contains(299) && !range.contains(300) && !range.contains(199));
        let mixed = Codes::parse("204,300-302").unwrap();
        assert!(mixed.contains(204) && mixed.contains(301) && !mixed.contains(200));
        for bad in ["", "abc", "299-200", "200-", "99", "600", "200,,202"] {
            assert_eq!(Codes::parse(bad), Err(CONFIG_INVALID), "{bad:?}");
        }
    }

    #[test]
    fn paths_cannot_break_the_request_line() {
        assert_eq!(request_target("/health?x=1"), "/health?x=1");
        assert_eq!(request_target("ping"), "/ping");
        assert_eq!(request_target("/a b\r\nHost: evil"), "/a%20b%0D%0AHost:%20evil");
        assert_eq!(request_target("/é"), "/%C3%A9");
    }
}
