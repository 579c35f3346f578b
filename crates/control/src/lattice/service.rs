//! Services.

use super::{ApiError, Reply, Req};

pub(crate) async fn create(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn get(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn update(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}
