//! The Lattice quotas of spec §7: their Service Quotas codes, what they count, their configured
//! limits, and the check every create makes against a counter before it adds to it.

use trellis_model::Kind;

use super::{ApiError, Req};
use crate::repo::{self, Counter};

/// A quota Trellis enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quota {
    ListenersPerService,
    RulesPerListener,
    ServiceAssociationsPerServiceNetwork,
    ServiceNetworks,
    Services,
    TargetGroups,
    TargetGroupsPerService,
    TargetsPerTargetGroup,
    VpcAssociationsPerServiceNetwork,
}

impl Quota {
    /// The Service Quotas code, as AWS reports it in `quotaCode`.
    fn code(self) -> &'static str {
        match self {
            Self::ListenersPerService => "L-D64E952E",
            Self::RulesPerListener => "L-CF78395E",
            Self::ServiceAssociationsPerServiceNetwork => "L-75D4A19E",
            Self::ServiceNetworks => "L-9CAD07FB",
            Self::Services => "L-620C821E",
            Self::TargetGroups => "L-BB11C6B9",
            Self::TargetGroupsPerService => "L-3DEC3B9F",
            Self::TargetsPerTargetGroup => "L-D71303F3",
            Self::VpcAssociationsPerServiceNetwork => "L-EF6E2D62",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::ListenersPerService => "listeners per service",
            Self::RulesPerListener => "rules per listener",
            Self::ServiceAssociationsPerServiceNetwork => "service associations per service network",
            Self::ServiceNetworks => "service networks per region",
            Self::Services => "services per region",
            Self::TargetGroups => "target groups per region",
            Self::TargetGroupsPerService => "target groups per service",
            Self::TargetsPerTargetGroup => "targets per target group",
            Self::VpcAssociationsPerServiceNetwork => "VPC associations per service network",
        }
    }

    /// The configured limit.
    pub(crate) fn limit(self, req: &Req<'_>) -> u64 {
        let q = req.quotas();
        match self {
            Self::ListenersPerService => q.listeners_per_service,
            Self::RulesPerListener => q.rules_per_listener,
            Self::ServiceAssociationsPerServiceNetwork => q.service_associations_per_service_network,
            Self::ServiceNetworks => q.service_networks,
            Self::Services => q.services,
            Self::TargetGroups => q.target_groups,
            Self::TargetGroupsPerService => q.target_groups_per_service,
            Self::TargetsPerTargetGroup => q.targets_per_target_group,
            Self::VpcAssociationsPerServiceNetwork => q.vpc_associations_per_service_network,
        }
    }

    /// The `ServiceQuotaExceededException` for this quota; `kind` and `parent` name what it
    /// counts under (the parent's ID, or none for per-region quotas).
    pub(crate) fn exceeded(self, req: &Req<'_>, kind: Kind, parent: Option<&str>) -> ApiError {
        self.error(kind, parent, self.limit(req))
    }

    /// Like [`Quota::exceeded`], for a limit read earlier.
    pub(crate) fn error(self, kind: Kind, parent: Option<&str>, limit: u64) -> ApiError {
        ApiError::quota(kind, parent, self.code(), self.what(), limit)
    }

    /// Reads the counter at `key` and refuses if `adding` more would pass the limit. The caller
    /// moves the counter in its transaction ([`crate::repo::Tx::count`]), which fails if another
    /// call moved it first.
    pub(crate) async fn check(
        self,
        req: &Req<'_>,
        key: String,
        adding: u64,
        kind: Kind,
        parent: Option<&str>,
    ) -> Result<Counter, ApiError> {
        let counter = repo::counter(req.store(), key).await?;
        if counter.value() + adding > self.limit(req) {
            return Err(self.exceeded(req, kind, parent));
        }
        Ok(counter)
    }
}
