//! The errors of the EC2 API: one [`Code`] per error code we answer, each knowing its HTTP
//! status, and [`Ec2Error`] pairing a code with its message. Rendering (the `<Response><Errors>`
//! envelope) lives in [`super::xml`].

use axum::http::StatusCode;
use trellis_model::Kind;

use crate::repo::RepoError;

/// An EC2 error code, spelled as AWS spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    CannotDelete,
    DependencyViolation,
    DryRunOperation,
    InternalError,
    InvalidAction,
    InvalidGroupDuplicate,
    InvalidGroupIdMalformed,
    InvalidGroupNotFound,
    InvalidGroupReserved,
    InvalidId,
    InvalidPaginationToken,
    InvalidParameterCombination,
    InvalidParameterValue,
    InvalidSubnetConflict,
    InvalidSubnetIdMalformed,
    InvalidSubnetIdNotFound,
    InvalidSubnetRange,
    InvalidVpcIdMalformed,
    InvalidVpcIdNotFound,
    InvalidVpcRange,
    MissingAction,
    MissingParameter,
    RequestLimitExceeded,
    TagLimitExceeded,
    UnsupportedOperation,
    VpcIdNotSpecified,
}

/// An EC2 API error: a code and a human-readable message.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub(crate) struct Ec2Error {
    pub(crate) code: Code,
    pub(crate) message: String,
}

// === impl Code ===

impl Code {
    /// The code as it appears in `<Code>`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::CannotDelete => "CannotDelete",
            Self::DependencyViolation => "DependencyViolation",
            Self::DryRunOperation => "DryRunOperation",
            Self::InternalError => "InternalError",
            Self::InvalidAction => "InvalidAction",
            Self::InvalidGroupDuplicate => "InvalidGroup.Duplicate",
            Self::InvalidGroupIdMalformed => "InvalidGroupId.Malformed",
            Self::InvalidGroupNotFound => "InvalidGroup.NotFound",
            Self::InvalidGroupReserved => "InvalidGroup.Reserved",
            Self::InvalidId => "InvalidID",
            Self::InvalidPaginationToken => "InvalidPaginationToken",
            Self::InvalidParameterCombination => "InvalidParameterCombination",
            Self::InvalidParameterValue => "InvalidParameterValue",
            Self::InvalidSubnetConflict => "InvalidSubnet.Conflict",
            Self::InvalidSubnetIdMalformed => "InvalidSubnetID.Malformed",
            Self::InvalidSubnetIdNotFound => "InvalidSubnetID.NotFound",
            Self::InvalidSubnetRange => "InvalidSubnet.Range",
            Self::InvalidVpcIdMalformed => "InvalidVpcID.Malformed",
            Self::InvalidVpcIdNotFound => "InvalidVpcID.NotFound",
            Self::InvalidVpcRange => "InvalidVpc.Range",
            Self::MissingAction => "MissingAction",
            Self::MissingParameter => "MissingParameter",
            Self::RequestLimitExceeded => "RequestLimitExceeded",
            Self::TagLimitExceeded => "TagLimitExceeded",
            Self::UnsupportedOperation => "UnsupportedOperation",
            Self::VpcIdNotSpecified => "VPCIdNotSpecified",
        }
    }

    /// The HTTP status AWS answers this code with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::DryRunOperation => StatusCode::PRECONDITION_FAILED,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RequestLimitExceeded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

// === impl Ec2Error ===

impl Ec2Error {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// `InvalidParameterValue`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidParameterValue, message)
    }

    /// `InvalidParameterValue` in AWS's usual wording for a bad value of `param`.
    pub(crate) fn bad_value(param: &str, value: &str, why: &str) -> Self {
        Self::invalid(format!("Value ({value}) for parameter {param} is invalid. {why}"))
    }

    /// `MissingParameter` for a required parameter that was not sent.
    pub(crate) fn missing(param: &str) -> Self {
        Self::new(Code::MissingParameter, format!("The request must contain the parameter {param}"))
    }

    /// `DependencyViolation`: something still uses `id`.
    pub(crate) fn dependency(id: &str) -> Self {
        Self::new(Code::DependencyViolation, format!("resource {id} has a dependent object"))
    }

    /// The `….NotFound` error for IDs of `kind` that do not exist.
    pub(crate) fn not_found(kind: Kind, ids: &[&str]) -> Self {
        let list = ids.join(", ");
        let plural = ids.len() > 1;
        let (code, message) = match kind {
            Kind::SecurityGroup => (
                Code::InvalidGroupNotFound,
                if plural {
                    format!("The security groups '{list}' do not exist")
                } else {
                    format!("The security group '{list}' does not exist")
                },
            ),
            Kind::Subnet => (
                Code::InvalidSubnetIdNotFound,
                if plural {
                    format!("The subnet IDs '{list}' do not exist")
                } else {
                    format!("The subnet ID '{list}' does not exist")
                },
            ),
            _ => (
                Code::InvalidVpcIdNotFound,
                if plural {
                    format!("The vpc IDs '{list}' do not exist")
                } else {
                    format!("The vpc ID '{list}' does not exist")
                },
            ),
        };
        Self::new(code, message)
    }

    /// The `….Malformed` error for a string that is not an ID of `kind`.
    pub(crate) fn malformed(kind: Kind, id: &str) -> Self {
        let code = match kind {
            Kind::SecurityGroup => Code::InvalidGroupIdMalformed,
            Kind::Subnet => Code::InvalidSubnetIdMalformed,
            _ => Code::InvalidVpcIdMalformed,
        };
        Self::new(code, format!("Invalid id: \"{id}\" (expecting \"{}-...\")", kind.prefix()))
    }

    /// `DryRunOperation`: the request was valid, and nothing was done.
    pub(crate) fn dry_run() -> Self {
        Self::new(Code::DryRunOperation, "Request would have succeeded, but DryRun flag is set.")
    }

    /// The HTTP status to answer with.
    pub(crate) fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl From<RepoError> for Ec2Error {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Contention(_) => Self::new(Code::RequestLimitExceeded, format!("Request limit exceeded: {e}")),
            _ => Self::new(Code::InternalError, e.to_string()),
        }
    }
}

impl From<trellis_store::Error> for Ec2Error {
    fn from(e: trellis_store::Error) -> Self {
        RepoError::from(e).into()
    }
}
