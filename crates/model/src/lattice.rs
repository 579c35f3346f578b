//! VPC Lattice resources as Trellis stores them. Nested shapes (actions, matches, target-group
//! configuration) are spelled exactly as the `vpc-lattice` API spells them, so the same types
//! read requests, are stored, and write responses. Unset optional members are skipped when
//! written: AWS omits them, and clients such as Terraform treat a stray `null` as a change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Tags on a resource: key → value.
pub type Tags = BTreeMap<String, String>;

/// `NONE` or `AWS_IAM`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthType {
    /// Every request is allowed at this layer.
    #[default]
    #[serde(rename = "NONE")]
    None,
    /// Requests must be allowed by the auth policy.
    #[serde(rename = "AWS_IAM")]
    AwsIam,
}

/// The lifecycle status of a service, target group or association.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Ready.
    Active,
    /// Being created.
    CreateInProgress,
    /// Being deleted.
    DeleteInProgress,
    /// Being updated (VPC associations only).
    UpdateInProgress,
}

/// A listener's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListenerProtocol {
    /// Cleartext HTTP/1.1.
    Http,
    /// TLS-terminated HTTP/1.1 or HTTP/2.
    Https,
    /// TLS passed through to TCP targets by SNI.
    TlsPassthrough,
}

/// `{"forward": …}` or `{"fixedResponse": …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleAction {
    /// Answer with a fixed status.
    FixedResponse(FixedResponseAction),
    /// Forward to weighted target groups.
    Forward(ForwardAction),
}

/// A fixed response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixedResponseAction {
    /// The status code (Lattice supports 404 and 500).
    pub status_code: u16,
}

/// Forwarding to 1–10 weighted target groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardAction {
    /// The target groups and their weights.
    pub target_groups: Vec<WeightedTargetGroup>,
}

/// One target group of a forward action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedTargetGroup {
    /// On input an ID or ARN; stored as the ID.
    pub target_group_identifier: String,
    /// 0–999; stored as 100 when the caller gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `{"httpMatch": …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleMatch {
    /// Match on HTTP method, path and headers.
    HttpMatch(HttpMatch),
}

/// An HTTP match; every given criterion must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// The exact method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The path match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_match: Option<PathMatch>,
    /// 1–5 header matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_matches: Option<Vec<HeaderMatch>>,
}

/// A path match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// Exact or prefix.
    #[serde(rename = "match")]
    pub match_type: PathMatchType,
    /// Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,
}

/// `{"exact": …}` or `{"prefix": …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatchType {
    /// The whole path.
    Exact(String),
    /// A leading part of the path.
    Prefix(String),
}

/// A header match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// The header name (compared case-insensitively).
    pub name: String,
    /// How the value must match.
    #[serde(rename = "match")]
    pub match_type: HeaderMatchType,
    /// Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,
}

/// `{"exact"|"prefix"|"contains": …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HeaderMatchType {
    /// The value contains this.
    Contains(String),
    /// The value equals this.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
}

/// A target group's configuration (immutable but for `health_check`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupConfig {
    /// Target port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `HTTP`, `HTTPS` or `TCP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `HTTP1`, `HTTP2` or `GRPC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// `IPV4` or `IPV6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address_type: Option<String>,
    /// The VPC the targets live in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_identifier: Option<String>,
    /// Active health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// `V1` or `V2` (Lambda targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_event_structure_version: Option<String>,
}

/// Health-check settings (spec §3.7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckConfig {
    /// Whether checks run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `HTTP` or `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `HTTP1` or `HTTP2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Port probed (default: the target's port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Path probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_interval_seconds: Option<u32>,
    /// Seconds before a check fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_timeout_seconds: Option<u32>,
    /// Consecutive successes to become healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold_count: Option<u32>,
    /// Consecutive failures to become unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold_count: Option<u32>,
    /// Which status codes pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<Matcher>,
}

/// `{"httpCode": "200-299"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    /// A code, a comma list or a range.
    pub http_code: String,
}

/// `{"enabled": bool}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharingConfig {
    /// Whether the service network may be shared.
    #[serde(default)]
    pub enabled: bool,
}

/// Private DNS options of a VPC association.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsOptions {
    /// Which custom domains get private DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_dns_preference: Option<String>,
    /// The domains, for the `SPECIFIED_DOMAINS` preferences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_dns_specified_domains: Option<Vec<String>>,
}

/// A service network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNetwork {
    /// `sn-…`.
    pub id: String,
    /// Unique per account and region.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// Network-level auth.
    pub auth_type: AuthType,
    /// Sharing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing_config: Option<SharingConfig>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub last_updated_at: Timestamp,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `svc-…`.
    pub id: String,
    /// Unique per account and region.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// Service-level auth.
    pub auth_type: AuthType,
    /// The generated DNS name.
    pub dns_name: String,
    /// An optional custom domain (immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_domain_name: Option<String>,
    /// An ACM certificate for the custom domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_arn: Option<String>,
    /// Idle timeout, 60–600 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u32>,
    /// Lifecycle status.
    pub status: Status,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub last_updated_at: Timestamp,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A listener of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// `listener-…`.
    pub id: String,
    /// Unique within the service.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// The owning service.
    pub service_id: String,
    /// The owning service's ARN.
    pub service_arn: String,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Port.
    pub port: u16,
    /// What the default rule does.
    pub default_action: RuleAction,
    /// The ID of the listener's default rule.
    pub default_rule_id: String,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub last_updated_at: Timestamp,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A (non-default) listener rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// `rule-…`.
    pub id: String,
    /// Unique within the listener.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// The owning service.
    pub service_id: String,
    /// The owning listener.
    pub listener_id: String,
    /// 1–2000, unique within the listener; lower is evaluated first.
    pub priority: u32,
    /// What requests it matches.
    #[serde(rename = "match")]
    pub rule_match: RuleMatch,
    /// What it does.
    pub action: RuleAction,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub last_updated_at: Timestamp,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A target group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroup {
    /// `tg-…`.
    pub id: String,
    /// Unique per account and region.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// `IP`, `INSTANCE`, `LAMBDA` or `ALB`.
    #[serde(rename = "type")]
    pub target_type: String,
    /// Fully defaulted configuration (absent for Lambda).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<TargetGroupConfig>,
    /// Lifecycle status.
    pub status: Status,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub last_updated_at: Timestamp,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A registered target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// IP address, instance ID, Lambda or ALB ARN.
    pub id: String,
    /// The port traffic goes to.
    pub port: u16,
    /// When it was registered.
    pub registered_at: Timestamp,
    /// Set while the target is draining after deregistration: when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<Timestamp>,
}

/// A service network ↔ VPC association.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNetworkVpcAssociation {
    /// `snva-…`.
    pub id: String,
    /// Its ARN.
    pub arn: String,
    /// The service network.
    pub service_network_id: String,
    /// The VPC.
    pub vpc_id: String,
    /// Security groups (0–5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_ids: Option<Vec<String>>,
    /// Whether private DNS is enabled (default true).
    pub private_dns_enabled: bool,
    /// Private DNS options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_options: Option<DnsOptions>,
    /// Lifecycle status.
    pub status: Status,
    /// The account that created it.
    pub created_by: String,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub last_updated_at: Timestamp,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A service network ↔ service association.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNetworkServiceAssociation {
    /// `snsa-…`.
    pub id: String,
    /// Its ARN.
    pub arn: String,
    /// The service network.
    pub service_network_id: String,
    /// The service.
    pub service_id: String,
    /// Lifecycle status.
    pub status: Status,
    /// The account that created it.
    pub created_by: String,
    /// Created.
    pub created_at: Timestamp,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// An auth policy on a service network or service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthPolicy {
    /// The policy document, as given.
    pub policy: String,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub last_updated_at: Timestamp,
}

/// An access log subscription on a service network or service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogSubscription {
    /// `als-…`.
    pub id: String,
    /// Its ARN.
    pub arn: String,
    /// The service network or service ID.
    pub resource_id: String,
    /// Its ARN.
    pub resource_arn: String,
    /// Where logs go.
    pub destination_arn: String,
    /// `SERVICE` or `RESOURCE` (service networks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_network_log_type: Option<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub last_updated_at: Timestamp,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}
