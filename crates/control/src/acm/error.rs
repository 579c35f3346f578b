//! The errors of the ACM API, one variant per modelled exception, rendered as JSON 1.1 does:
//! `{"__type": "<code>", "message": "…"}`, with the code in `x-amzn-ErrorType` too. ACM answers
//! every client error with 400; Trellis's own failures are `InternalFailure` (500), the code
//! every AWS JSON service shares.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::lattice::input::BodyError;
use crate::repo::RepoError;

/// An ACM API error: the exception and its message.
#[derive(Debug, thiserror::Error)]
pub enum AcmError {
    /// Trellis failed (the store, the certificate authority).
    #[error("{0}")]
    Internal(String),
    /// A well-formed ARN that does not name a certificate.
    #[error("{0}")]
    InvalidArn(String),
    /// ListCertificates: a filter that cannot be used.
    #[error("{0}")]
    InvalidArgs(String),
    /// A parameter's value is not acceptable.
    #[error("{0}")]
    InvalidParameter(String),
    /// A tag key or value is not acceptable (`aws:` keys, bad characters).
    #[error("{0}")]
    InvalidTag(String),
    /// A quota: certificates per region, names per certificate.
    #[error("{0}")]
    LimitExceeded(String),
    /// DeleteCertificate of a certificate a service uses.
    #[error("{0}")]
    ResourceInUse(String),
    /// No such certificate in this region and account.
    #[error("{0}")]
    ResourceNotFound(String),
    /// The body is not JSON, or a member has the wrong type.
    #[error("{0}")]
    Serialization(String),
    /// The records kept changing underneath: try again.
    #[error("{0}")]
    Throttling(String),
    /// More than 50 tags.
    #[error("{0}")]
    TooManyTags(String),
    /// An operation Trellis does not serve.
    #[error("{0}")]
    UnknownOperation(String),
    /// Input that breaks the model's constraints, or a certificate that cannot be imported.
    #[error("{0}")]
    Validation(String),
}

impl AcmError {
    /// The AWS exception name.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Internal(_) => "InternalFailure",
            Self::InvalidArn(_) => "InvalidArnException",
            Self::InvalidArgs(_) => "InvalidArgsException",
            Self::InvalidParameter(_) => "InvalidParameterException",
            Self::InvalidTag(_) => "InvalidTagException",
            Self::LimitExceeded(_) => "LimitExceededException",
            Self::ResourceInUse(_) => "ResourceInUseException",
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::Serialization(_) => "SerializationException",
            Self::Throttling(_) => "ThrottlingException",
            Self::TooManyTags(_) => "TooManyTagsException",
            Self::UnknownOperation(_) => "UnknownOperationException",
            Self::Validation(_) => "ValidationException",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// A `ValidationException` in the words AWS's request validation uses.
    pub(crate) fn constraint(value: &str, member: &str, constraint: &str) -> Self {
        Self::Validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
        ))
    }
}

impl From<BodyError> for AcmError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Syntax(message) => Self::Serialization(format!("Unable to parse the request body: {message}")),
            BodyError::Field { field, message } => Self::Serialization(format!("{field}: {message}")),
        }
    }
}

impl From<RepoError> for AcmError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Contention(_) => Self::Throttling(e.to_string()),
            _ => Self::Internal(e.to_string()),
        }
    }
}

impl From<trellis_store::Error> for AcmError {
    fn from(e: trellis_store::Error) -> Self {
        RepoError::from(e).into()
    }
}

impl IntoResponse for AcmError {
    fn into_response(self) -> Response {
        if let Self::Internal(message) = &self {
            // Handled here, so logged here: a person should look at a store failure.
            tracing::error!(%message, "ACM API request failed");
        }
        crate::json11::error(self.status(), self.code(), &self.to_string())
    }
}
