//! The IAM API subset (query protocol, `Version=2010-05-08`). Not built yet: every operation
//! answers an `InvalidAction` error.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ControlState;
use crate::dispatch::Ctx;

/// Whether the form's `Action` writes (it takes the node's write turn).
pub(crate) fn is_write(form: &[(String, String)]) -> bool {
    let action = form.iter().find(|(k, _)| k == "Action").map_or("", |(_, v)| v.as_str());
    !(action.starts_with("Get") || action.starts_with("List"))
}

/// Handles one IAM request.
pub(crate) async fn handle(_state: &ControlState, ctx: &Ctx, form: Vec<(String, String)>) -> Response {
    let action = form.iter().find(|(k, _)| k == "Action").map_or("", |(_, v)| v.as_str());
    let body = format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type>\
         <Code>InvalidAction</Code><Message>{action} is not served yet</Message></Error>\
         <RequestId>{}</RequestId></ErrorResponse>",
        ctx.request_id
    );
    let mut resp = (StatusCode::BAD_REQUEST, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/xml"));
    resp
}
