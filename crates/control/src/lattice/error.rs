//! The errors of the `vpc-lattice` API, one variant per modelled exception with its members,
//! rendered in one place: status, `x-amzn-ErrorType` and a JSON body (spec §1.4).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use trellis_model::Kind;

use crate::repo::RepoError;

/// A Lattice API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 403.
    #[error("{message}")]
    AccessDenied {
        /// Human-readable.
        message: String,
    },
    /// 409: the request conflicts with a resource's state.
    #[error("{message}")]
    Conflict {
        /// Human-readable.
        message: String,
        /// The resource in the way.
        resource_id: String,
        /// Its type.
        resource_type: String,
    },
    /// 500.
    #[error("{message}")]
    Internal {
        /// Human-readable.
        message: String,
    },
    /// 404.
    #[error("{message}")]
    NotFound {
        /// Human-readable.
        message: String,
        /// What was not found.
        resource_id: String,
        /// Its type.
        resource_type: String,
    },
    /// 402 (sic, as AWS).
    #[error("{message}")]
    QuotaExceeded {
        /// Human-readable.
        message: String,
        /// The resource the quota is about, if any.
        resource_id: Option<String>,
        /// Its type.
        resource_type: String,
        /// The Service Quotas code, e.g. `L-620C821E`.
        quota_code: &'static str,
    },
    /// 429.
    #[error("{message}")]
    Throttling {
        /// Human-readable.
        message: String,
    },
    /// 400.
    #[error("{message}")]
    Validation {
        /// Human-readable.
        message: String,
        /// `unknownOperation`, `cannotParse`, `fieldValidationFailed` or `other`.
        reason: &'static str,
        /// The fields at fault: (name, message).
        field_list: Vec<(String, String)>,
    },
}

impl ApiError {
    /// The AWS exception name.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AccessDenied { .. } => "AccessDeniedException",
            Self::Conflict { .. } => "ConflictException",
            Self::Internal { .. } => "InternalServerException",
            Self::NotFound { .. } => "ResourceNotFoundException",
            Self::QuotaExceeded { .. } => "ServiceQuotaExceededException",
            Self::Throttling { .. } => "ThrottlingException",
            Self::Validation { .. } => "ValidationException",
        }
    }

    /// The HTTP status AWS answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::AccessDenied { .. } => StatusCode::FORBIDDEN,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::QuotaExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::Throttling { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// A `ValidationException` about one field.
    pub fn field(name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::Validation {
            message: format!("Invalid parameter {name}: {message}"),
            reason: "fieldValidationFailed",
            field_list: vec![(name.to_owned(), message)],
        }
    }

    /// A `ValidationException` with reason `other`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Validation { message: message.into(), reason: "other", field_list: Vec::new() }
    }

    /// A `ValidationException` for an operation Trellis does not know or serve.
    pub fn unknown_operation(what: &str) -> Self {
        Self::Validation {
            message: format!("Unknown operation: {what}"),
            reason: "unknownOperation",
            field_list: Vec::new(),
        }
    }

    /// A `ResourceNotFoundException`.
    pub fn not_found(kind: Kind, id: &str) -> Self {
        Self::NotFound {
            message: format!("{} {id} not found", kind_words(kind)),
            resource_id: id.to_owned(),
            resource_type: kind.resource_type().to_owned(),
        }
    }

    /// A `ConflictException`.
    pub fn conflict(kind: Kind, id: &str, message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            resource_id: id.to_owned(),
            resource_type: kind.resource_type().to_owned(),
        }
    }

    /// A `ServiceQuotaExceededException` for quota `quota_code` of `limit` `kind`s.
    pub fn quota(kind: Kind, parent: Option<&str>, quota_code: &'static str, what: &str, limit: u64) -> Self {
        Self::QuotaExceeded {
            message: format!("Quota exceeded: at most {limit} {what}"),
            resource_id: parent.map(str::to_owned),
            resource_type: kind.resource_type().to_owned(),
            quota_code,
        }
    }

    fn body(&self) -> serde_json::Value {
        let message = self.to_string();
        match self {
            Self::AccessDenied { .. } | Self::Internal { .. } | Self::Throttling { .. } => {
                json!({ "message": message })
            }
            Self::Conflict { resource_id, resource_type, .. } | Self::NotFound { resource_id, resource_type, .. } => {
                json!({ "message": message, "resourceId": resource_id, "resourceType": resource_type })
            }
            Self::QuotaExceeded { resource_id, resource_type, quota_code, .. } => json!({
                "message": message,
                "resourceId": resource_id,
                "resourceType": resource_type,
                "serviceCode": "vpc-lattice",
                "quotaCode": quota_code,
            }),
            Self::Validation { reason, field_list, .. } => {
                let mut body = json!({ "message": message, "reason": reason });
                if !field_list.is_empty() {
                    body["fieldList"] =
                        field_list.iter().map(|(name, message)| json!({ "name": name, "message": message })).collect();
                }
                body
            }
        }
    }
}

fn kind_words(kind: Kind) -> &'static str {
    match kind {
        Kind::AccessLogSubscription => "Access log subscription",
        Kind::Listener => "Listener",
        Kind::Rule => "Rule",
        Kind::SecurityGroup => "Security group",
        Kind::Service => "Service",
        Kind::ServiceNetwork => "Service network",
        Kind::ServiceNetworkServiceAssociation => "Service network service association",
        Kind::ServiceNetworkVpcAssociation => "Service network VPC association",
        Kind::Subnet => "Subnet",
        Kind::TargetGroup => "Target group",
        Kind::Vpc => "VPC",
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Contention(_) => Self::Throttling { message: e.to_string() },
            _ => Self::Internal { message: e.to_string() },
        }
    }
}

impl From<trellis_store::Error> for ApiError {
    fn from(e: trellis_store::Error) -> Self {
        RepoError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal { message } = &self {
            // Handled here, so logged here: a person should look at a store failure.
            tracing::error!(%message, "Lattice API request failed");
        }
        let mut body = self.body();
        super::input::strip_nulls(&mut body);
        let mut resp = (self.status(), body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-amzn-errortype", HeaderValue::from_static(self.code()));
        resp
    }
}
