//! Auth policies.

use super::{ApiError, Reply, Req};

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn put(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}
