//! The EC2 network API subset (EC2's query protocol): VPCs, subnets, security groups and tags.

use axum::response::Response;

use crate::dispatch::Ctx;
use crate::ControlState;

/// Handles one EC2 query-protocol request, given its form parameters.
pub(crate) async fn handle(_state: &ControlState, _ctx: &Ctx, _form: Vec<(String, String)>) -> Response {
    use axum::response::IntoResponse;
    (axum::http::StatusCode::BAD_REQUEST, "EC2 is not served yet").into_response()
}
