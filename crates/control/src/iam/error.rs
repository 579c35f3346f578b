//! The errors of the IAM and STS APIs: one [`Code`] per error code we answer, each knowing its HTTP
//! status and fault, and [`IamError`] pairing a code with its message. Rendering (the
//! `<ErrorResponse>` envelope) lives in [`super::xml`].

use axum::http::StatusCode;

use crate::repo::RepoError;

/// An IAM error code, spelled as AWS spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    AccessDenied,
    ConcurrentModification,
    DeleteConflict,
    EntityAlreadyExists,
    ExpiredToken,
    InvalidAction,
    InvalidClientTokenId,
    InvalidInput,
    LimitExceeded,
    MalformedPolicyDocument,
    MissingAction,
    NoSuchEntity,
    ServiceFailure,
    ValidationError,
}

/// An IAM API error: a code and a human-readable message.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub(crate) struct IamError {
    pub(crate) code: Code,
    pub(crate) message: String,
}

// === impl Code ===

impl Code {
    /// The code as it appears in `<Code>`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::AccessDenied => "AccessDenied",
            Self::ConcurrentModification => "ConcurrentModification",
            Self::DeleteConflict => "DeleteConflict",
            Self::EntityAlreadyExists => "EntityAlreadyExists",
            Self::ExpiredToken => "ExpiredToken",
            Self::InvalidAction => "InvalidAction",
            Self::InvalidClientTokenId => "InvalidClientTokenId",
            Self::InvalidInput => "InvalidInput",
            Self::LimitExceeded => "LimitExceeded",
            Self::MalformedPolicyDocument => "MalformedPolicyDocument",
            Self::MissingAction => "MissingAction",
            Self::NoSuchEntity => "NoSuchEntity",
            Self::ServiceFailure => "ServiceFailure",
            Self::ValidationError => "ValidationError",
        }
    }

    /// The HTTP status AWS answers this code with (the botocore model's `httpStatusCode`).
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::ConcurrentModification | Self::DeleteConflict | Self::EntityAlreadyExists | Self::LimitExceeded => {
                StatusCode::CONFLICT
            }
            Self::NoSuchEntity => StatusCode::NOT_FOUND,
            Self::AccessDenied | Self::InvalidClientTokenId => StatusCode::FORBIDDEN,
            Self::ServiceFailure => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// `<Type>`: whose fault it is.
    pub(crate) fn fault(self) -> &'static str {
        if self == Self::ServiceFailure { "Receiver" } else { "Sender" }
    }
}

// === impl IamError ===

impl IamError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// `NoSuchEntity` for a role that does not exist.
    pub(crate) fn no_role(name: &str) -> Self {
        Self::new(Code::NoSuchEntity, format!("The role with name {name} cannot be found."))
    }

    /// `NoSuchEntity` for a user that does not exist.
    pub(crate) fn no_user(name: &str) -> Self {
        Self::new(Code::NoSuchEntity, format!("The user with name {name} cannot be found."))
    }

    /// `MalformedPolicyDocument`.
    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        Self::new(Code::MalformedPolicyDocument, message)
    }

    /// `InvalidInput`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidInput, message)
    }
}

impl From<RepoError> for IamError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Contention(_) => Self::new(Code::ConcurrentModification, e.to_string()),
            _ => Self::new(Code::ServiceFailure, e.to_string()),
        }
    }
}

impl From<trellis_store::Error> for IamError {
    fn from(e: trellis_store::Error) -> Self {
        RepoError::from(e).into()
    }
}
