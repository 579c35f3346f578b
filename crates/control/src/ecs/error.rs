//! The errors of the ECS API, one variant per modelled exception, rendered in one place as JSON
//! 1.1 does: `{"__type": "<code>", "message": "…"}`, with the code in `x-amzn-ErrorType` too.
//! ECS answers client errors with 400 and its own failures with 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::lattice::input::BodyError;
use crate::repo::RepoError;

/// An ECS API error: the exception and its message.
#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    /// A request the caller got wrong that no narrower exception covers.
    #[error("{0}")]
    Client(String),
    /// `DeleteCluster` of a cluster with ACTIVE or DRAINING services.
    #[error("The Cluster cannot be deleted while Services are active.")]
    ClusterContainsServices,
    /// `DeleteCluster` of a cluster with tasks that have not stopped.
    #[error("The Cluster cannot be deleted while Tasks are active.")]
    ClusterContainsTasks,
    /// The cluster does not exist.
    #[error("Cluster not found.")]
    ClusterNotFound,
    /// A member's value is not acceptable.
    #[error("{0}")]
    InvalidParameter(String),
    /// Too many of something (tags).
    #[error("{0}")]
    LimitExceeded(String),
    /// A tagged resource does not exist.
    #[error("{0}")]
    ResourceNotFound(String),
    /// Trellis failed (the store).
    #[error("{0}")]
    Server(String),
    /// The service is DRAINING or INACTIVE.
    #[error("Service was not ACTIVE.")]
    ServiceNotActive,
    /// The service does not exist.
    #[error("Service not found.")]
    ServiceNotFound,
    /// The body is not JSON.
    #[error("{0}")]
    Serialization(String),
    /// The records kept changing underneath: try again.
    #[error("{0}")]
    Throttling(String),
    /// An operation Trellis does not serve.
    #[error("{0}")]
    UnknownOperation(String),
}

impl EcsError {
    /// The AWS exception name.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Client(_) => "ClientException",
            Self::ClusterContainsServices => "ClusterContainsServicesException",
            Self::ClusterContainsTasks => "ClusterContainsTasksException",
            Self::ClusterNotFound => "ClusterNotFoundException",
            Self::InvalidParameter(_) => "InvalidParameterException",
            Self::LimitExceeded(_) => "LimitExceededException",
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::Server(_) => "ServerException",
            Self::ServiceNotActive => "ServiceNotActiveException",
            Self::ServiceNotFound => "ServiceNotFoundException",
            Self::Serialization(_) => "SerializationException",
            Self::Throttling(_) => "ThrottlingException",
            Self::UnknownOperation(_) => "UnknownOperationException",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// An `InvalidParameterException`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidParameter(message.into())
    }

    /// A `ClientException`.
    pub(crate) fn client(message: impl Into<String>) -> Self {
        Self::Client(message.into())
    }
}

impl From<BodyError> for EcsError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Syntax(message) => Self::Serialization(format!("Unable to parse the request body: {message}")),
            BodyError::Field { field, message } => {
                Self::InvalidParameter(format!("Invalid parameter {field}: {message}"))
            }
        }
    }
}

impl From<RepoError> for EcsError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Contention(_) => Self::Throttling(e.to_string()),
            _ => Self::Server(e.to_string()),
        }
    }
}

impl From<trellis_store::Error> for EcsError {
    fn from(e: trellis_store::Error) -> Self {
        RepoError::from(e).into()
    }
}

impl IntoResponse for EcsError {
    fn into_response(self) -> Response {
        if let Self::Server(message) = &self {
            // Handled here, so logged here: a person should look at a store failure.
            tracing::error!(%message, "ECS API request failed");
        }
        crate::json11::error(self.status(), self.code(), &self.to_string())
    }
}
