//! The JSON 1.1 protocol's responses (ECS, ACM): a result as JSON with its content type and
//! request id, an error as `{"__type", "message"}` with `x-amzn-errortype`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

const CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/x-amz-json-1.1");

/// An operation's answer: the value (200) or the error's own response, with the request id.
pub(crate) fn reply<E: IntoResponse>(result: Result<Value, E>, request_id: &str) -> Response {
    let mut resp = match result {
        Ok(value) => {
            let mut resp = (StatusCode::OK, value.to_string()).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, CONTENT_TYPE);
            resp
        }
        Err(err) => err.into_response(),
    };
    if let Ok(id) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", id);
    }
    resp
}

/// An error: `status`, the exception's name `code` and its message.
pub(crate) fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": code, "message": message });
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, CONTENT_TYPE);
    h.insert("x-amzn-errortype", HeaderValue::from_static(code));
    resp
}
