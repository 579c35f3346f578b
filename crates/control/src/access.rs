//! Who may call the API. By default anyone who reaches it (it binds loopback, and
//! [`crate::dispatch`] refuses what a web page could forge). With `trellis serve
//! --require-signature`:
//!
//! - every AWS API call must carry a valid SigV4 signature ([`verify`]) by an identity of the
//!   account (the root key, a user's key, or an STS session), its payload signed (the body's
//!   SHA-256), dated within 15 minutes of the server's clock; a refusal is the error AWS gives
//!   in that service's protocol ([`Refusal::response`]);
//! - Trellis's own `/_trellis/` endpoints, health aside, need `Authorization: Bearer <token>`
//!   with the installation's API token ([`ensure_api_token`], printed by `trellis credentials`),
//!   or a console session ([`Sessions`]) that the token opened.
//!
//! The token exists whether or not signatures are required: the console signs in with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use trellis_model::iam::{CredentialError, new_api_token};
use trellis_model::sigv4::{self, Received, SigError, Signed};
use trellis_store::{Store, StoreExt};

use crate::identity::{IdentityError, ResolveError, Resolver};
use crate::repo::{Attempts, Tx};

/// Where the API token is kept.
const TOKEN_KEY: &str = "trellis/api-token";
/// How far a signature's date may be from the server's clock (AWS's APIs allow 15 minutes).
const SKEW_SECONDS: u64 = 15 * 60;
/// The signing names of the services this endpoint serves.
const SIGNING_NAMES: &[&str] = &["vpc-lattice", "ecs", "ec2", "acm", "iam", "sts", "logs"];
/// The cookie a console session travels in.
pub const SESSION_COOKIE: &str = "trellis_session";

/// Makes the installation's API token if there is none yet, and answers it. Two nodes starting
/// at once make one (compare-and-swap on its key).
pub async fn ensure_api_token(store: &dyn Store) -> Result<String, IdentityError> {
    let mut attempts = Attempts::default();
    loop {
        let found = store.get(TOKEN_KEY).await?;
        if let Some(token) = found.as_ref().and_then(|kv| std::str::from_utf8(&kv.value).ok())
            && !token.is_empty()
        {
            return Ok(token.to_owned());
        }
        let token = new_api_token();
        let mut tx = Tx::default();
        tx.require_unchanged(TOKEN_KEY.to_owned(), found.map_or(0, |kv| kv.mod_revision));
        tx.put_raw(TOKEN_KEY.to_owned(), token.clone().into_bytes());
        match attempts.commit(store, tx).await {
            Ok(true) => return Ok(token),
            Ok(false) => {}
            Err(e) => return Err(IdentityError::Damaged { key: TOKEN_KEY.to_owned(), why: e.to_string() }),
        }
    }
}

/// Console sessions of this node: random IDs, each valid for a while after the token opened
/// it. Kept in memory: a restart signs everyone out, which is the safe direction.
#[derive(Clone, Default)]
pub struct Sessions {
    open: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Sessions {
    /// How long a session lasts.
    pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

    /// Opens a session; its ID (the cookie's value).
    pub fn open(&self) -> String {
        let id = new_api_token();
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, expiry| *expiry > now);
        open.insert(id.clone(), now + Self::LIFETIME);
        id
    }

    /// Whether `id` is an open, unexpired session.
    pub fn check(&self, id: &str) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(id).is_some_and(|expiry| *expiry > Instant::now())
    }

    /// Ends a session (signing out).
    pub fn close(&self, id: &str) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Whether the request carries an open session's cookie.
    pub fn carried_by(&self, headers: &HeaderMap) -> bool {
        session_cookie(headers).is_some_and(|id| self.check(id))
    }
}

/// The session ID in a request's `Cookie` headers, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

/// Whether a request to a `/_trellis/` endpoint may go on: it carries the API token as a
/// bearer token, or (where `sessions` is given) an open console session.
pub(crate) fn bearer_allowed(headers: &HeaderMap, token: &str, sessions: Option<&Sessions>) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer {
        Some(given) => sigv4::constant_time_eq(given.as_bytes(), token.as_bytes()),
        None => sessions.is_some_and(|s| s.carried_by(headers)),
    }
}

/// The 401 of a `/_trellis/` endpoint called without the token.
pub(crate) fn bearer_refused() -> Response {
    let body = serde_json::json!({
        "message": "this endpoint needs the API token: send `Authorization: Bearer <token>` \
                    (`trellis credentials` prints it)"
    });
    let mut resp = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"trellis\""));
    resp
}

/// The wire protocol an answer must be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// VPC Lattice.
    RestJson,
    /// ECS, ACM, CloudWatch Logs.
    Json11,
    /// EC2.
    Ec2,
    /// IAM or STS, with the service's XML namespace.
    Query(&'static str),
}

/// Why a signed (or unsigned) call is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No signature at all.
    Missing,
    /// The signature is malformed or incomplete: what is wrong.
    Incomplete(String),
    /// The access key is unknown, or its session token is missing or wrong.
    InvalidKey,
    /// The credentials (an STS session) have expired.
    Expired,
    /// The signature does not match the request.
    Mismatch,
    /// The signature's date is too far from the server's clock: the message.
    Skewed(String),
    /// The credentials could not be read (the store failed): the service's own retryable
    /// server error, never a refusal the client would not retry.
    Unavailable,
}

/// Verifies a call's SigV4 signature; the access key ID that signed it.
pub(crate) async fn verify(
    resolver: &Resolver,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<String, Refusal> {
    let first = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let query = uri.query().unwrap_or("");
    let signed = match Signed::parse(first("authorization"), first("x-amz-date"), query) {
        Ok(Some(signed)) => signed,
        Ok(None) => return Err(Refusal::Missing),
        Err(e) => return Err(Refusal::Incomplete(e.to_string())),
    };
    if !SIGNING_NAMES.contains(&&*signed.service) {
        return Err(Refusal::Incomplete(format!("the credential scope names service {:?}", signed.service)));
    }
    let at = signed.time().ok_or_else(|| Refusal::Incomplete("the signature's date is malformed".into()))?;
    if !signed.amz_date.starts_with(&*signed.scope_date) {
        return Err(Refusal::Incomplete("the signature's date and its credential scope's date differ".into()));
    }
    let stale = match signed.expires {
        None => at.abs_diff(now) > SKEW_SECONDS,
        Some(expires) => now > at.saturating_add(expires) || at > now + SKEW_SECONDS,
    };
    if stale {
        return Err(Refusal::Skewed(format!(
            "Signature expired: {} is now earlier than {} ({} - 15 min.)",
            signed.amz_date,
            sigv4::format_amz_date(now.saturating_sub(SKEW_SECONDS)),
            sigv4::format_amz_date(now)
        )));
    }
    let payload = sigv4::payload_hash(body);
    if let Some(claimed) = first("x-amz-content-sha256")
        && claimed != payload
    {
        return Err(Refusal::Incomplete(
            "x-amz-content-sha256 is not the body's SHA-256 (the API signs its payloads)".into(),
        ));
    }
    let token = signed.query_token.as_deref().or_else(|| first("x-amz-security-token"));
    let identity = resolver.resolve(&signed.access_key, token).await.map_err(|e| match e {
        ResolveError::Credential(CredentialError::Expired) => Refusal::Expired,
        ResolveError::Credential(_) => Refusal::InvalidKey,
        ResolveError::Store(e) => {
            // Handled here, so logged here.
            tracing::error!(error = %e, "cannot read credentials to verify a signature");
            Refusal::Unavailable
        }
    })?;
    let header =
        |name: &str, each: &mut dyn FnMut(&[u8])| headers.get_all(name).iter().for_each(|v| each(v.as_bytes()));
    let received = Received { method: method.as_str(), path: uri.path(), query, header: &header };
    match signed.verify(&received, &identity.secret_access_key, &payload) {
        Ok(()) => Ok(signed.access_key.into_owned()),
        Err(SigError::Mismatch) => Err(Refusal::Mismatch),
        Err(e) => Err(Refusal::Incomplete(e.to_string())),
    }
}

// === impl Refusal ===

impl Refusal {
    /// The error code, status and message AWS answers with in `protocol` (`server_error`: the
    /// service's code for its own failures).
    fn error(&self, protocol: Protocol, server_error: &'static str) -> (&'static str, StatusCode, String) {
        const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. \
                                Check your AWS Secret Access Key and signing method.";
        const INVALID: &str = "The security token included in the request is invalid.";
        const EXPIRED: &str = "The security token included in the request is expired";
        let json = matches!(protocol, Protocol::RestJson | Protocol::Json11);
        let ec2 = protocol == Protocol::Ec2;
        let forbidden = StatusCode::FORBIDDEN;
        match self {
            Self::Missing if json => {
                ("MissingAuthenticationTokenException", forbidden, "Missing Authentication Token".into())
            }
            Self::Missing => (
                "MissingAuthenticationToken",
                if ec2 { StatusCode::UNAUTHORIZED } else { forbidden },
                "Request is missing Authentication Token".into(),
            ),
            Self::Incomplete(why) if json => ("IncompleteSignatureException", forbidden, why.clone()),
            Self::Incomplete(why) => ("IncompleteSignature", StatusCode::BAD_REQUEST, why.clone()),
            Self::InvalidKey if json => ("UnrecognizedClientException", forbidden, INVALID.into()),
            Self::InvalidKey if ec2 => (
                "AuthFailure",
                StatusCode::UNAUTHORIZED,
                "AWS was not able to validate the provided access credentials".into(),
            ),
            Self::InvalidKey => ("InvalidClientTokenId", forbidden, INVALID.into()),
            Self::Expired if json => ("ExpiredTokenException", forbidden, EXPIRED.into()),
            Self::Expired if ec2 => ("RequestExpired", StatusCode::BAD_REQUEST, "Request has expired.".into()),
            Self::Expired => ("ExpiredToken", forbidden, EXPIRED.into()),
            Self::Mismatch if json => ("InvalidSignatureException", forbidden, MISMATCH.into()),
            Self::Mismatch => ("SignatureDoesNotMatch", forbidden, MISMATCH.into()),
            Self::Skewed(why) if json => ("InvalidSignatureException", forbidden, why.clone()),
            Self::Skewed(why) if ec2 => ("RequestExpired", StatusCode::BAD_REQUEST, why.clone()),
            Self::Skewed(why) => ("SignatureDoesNotMatch", forbidden, why.clone()),
            Self::Unavailable => (
                server_error,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the credentials could not be read to verify the signature; try again".into(),
            ),
        }
    }

    /// The answer, in the service's protocol.
    pub(crate) fn response(&self, protocol: Protocol, server_error: &'static str, request_id: &str) -> Response {
        let (code, status, message) = self.error(protocol, server_error);
        tracing::debug!(code, %message, "API call refused: signature");
        let mut resp = match protocol {
            Protocol::RestJson => crate::dispatch::rest_json_error(status, code, &message),
            Protocol::Json11 => crate::json11::error(status, code, &message),
            Protocol::Ec2 => crate::ec2::xml::error_envelope(status, code, &message, request_id),
            Protocol::Query(namespace) => {
                let fault = if status.is_server_error() { "Receiver" } else { "Sender" };
                crate::iam::xml::error_envelope(namespace, status, fault, code, &message, request_id)
            }
        };
        if let Ok(id) = HeaderValue::from_str(request_id) {
            resp.headers_mut().insert("x-amzn-requestid", id);
        }
        resp
    }
}

#[cfg(test)]
mod tests;
