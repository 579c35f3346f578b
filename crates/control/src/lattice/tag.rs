//! Tags.

use super::{ApiError, Reply, Req};

pub(crate) async fn list(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn tag(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn untag(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}
