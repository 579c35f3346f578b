//! Service network associations with VPCs and services.

use super::{ApiError, Reply, Req};

pub(crate) async fn create_service(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn create_vpc(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn delete_service(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn delete_vpc(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn get_service(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn get_vpc(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn list_service(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn list_vpc(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}

pub(crate) async fn update_vpc(req: &Req<'_>) -> Result<Reply, ApiError> {
    Err(ApiError::unknown_operation(&format!("{:?}", req.op)))
}
