//! Targets.

use super::{ApiError, Reply, Req};

pub(crate) async fn deregister(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn register(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}
