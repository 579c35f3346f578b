//! The ECS API subset (JSON 1.1: `POST /` with `X-Amz-Target:
//! AmazonEC2ContainerServiceV20141113.<Operation>`). Not built yet: every operation answers
//! `UnknownOperationException`.

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ControlState;
use crate::dispatch::Ctx;

/// What every ECS `X-Amz-Target` starts with.
pub(crate) const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// Whether the operation named by `target` writes (it takes the node's write turn).
pub(crate) fn is_write(target: &str) -> bool {
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    !(op.starts_with("Describe") || op.starts_with("List"))
}

/// Handles one ECS request.
pub(crate) async fn handle(_state: &ControlState, ctx: &Ctx, target: &str, _body: &Bytes) -> Response {
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    let body =
        serde_json::json!({ "__type": "UnknownOperationException", "message": format!("{op} is not served yet") });
    let mut resp = (StatusCode::BAD_REQUEST, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/x-amz-json-1.1"));
    if let Ok(id) = header::HeaderValue::from_str(&ctx.request_id) {
        h.insert("x-amzn-requestid", id);
    }
    resp
}
