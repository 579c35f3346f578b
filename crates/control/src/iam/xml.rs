//! IAM's (and STS's) XML envelopes, around the element writer the EC2 API uses ([`Xml`]): the success
//! answer (`<{Op}Response><{Op}Result>…</{Op}Result><ResponseMetadata>…`) and the error answer
//! (`<ErrorResponse><Error><Type>…`).

use axum::http::StatusCode;
use axum::response::Response;

use super::error::IamError;
use crate::ec2::xml::{Xml, escape, respond};

/// IAM's XML namespace.
pub(crate) const IAM: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// STS's XML namespace (same envelopes).
pub(crate) const STS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// A 200 answer in `namespace`; `result` is `None` for operations without output (no
/// `<{Op}Result>`).
pub(crate) fn success(namespace: &str, action: &str, request_id: &str, result: Option<&Xml>) -> Response {
    let result = result.map_or_else(String::new, |x| format!("<{action}Result>{}</{action}Result>", x.as_str()));
    let text = format!(
        "<{action}Response xmlns=\"{namespace}\">{result}<ResponseMetadata><RequestId>{}</RequestId>\
         </ResponseMetadata></{action}Response>",
        escape(request_id)
    );
    respond(StatusCode::OK, text)
}

/// An error answer in `namespace` with the error's status.
pub(crate) fn failure(namespace: &str, err: &IamError, request_id: &str) -> Response {
    error_envelope(namespace, err.code.status(), err.code.fault(), err.code.as_str(), &err.message, request_id)
}

/// The `<ErrorResponse>` answer in `namespace` of any error code (the signature checks' too);
/// `fault` is `Sender` or `Receiver`.
pub(crate) fn error_envelope(
    namespace: &str,
    status: StatusCode,
    fault: &str,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response {
    let text = format!(
        "<ErrorResponse xmlns=\"{namespace}\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message>\
         </Error><RequestId>{}</RequestId></ErrorResponse>",
        escape(code),
        escape(message),
        escape(request_id)
    );
    respond(status, text)
}
