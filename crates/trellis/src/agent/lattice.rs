//! Calling the VPC Lattice API from inside the server, as ECS's infrastructure role calls it in
//! AWS: through the same router and handlers a client reaches (so the same validation applies:
//! a task address outside the target group's VPC is refused there), with a credential scope
//! naming the target group's region. Only what ECS needs: RegisterTargets, DeregisterTargets,
//! ListTargets.

use axum::Router;
use axum::body::Body;
use http::{Request, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A client of the server's own Lattice API.
#[derive(Clone)]
pub struct Lattice {
    router: Router,
    /// The API's own address (the forgery guard checks `Host`).
    host: String,
}

// === impl Lattice ===

impl Lattice {
    /// A client of `router`, served at `host` (`ip:port`).
    pub fn new(router: Router, host: String) -> Self {
        Self { router, host }
    }

    /// Registers `ip:port` into target group `tg_arn` (in `region`). Err with the failure ECS
    /// would see when the target is refused.
    pub async fn register(&self, region: &str, tg_arn: &str, ip: &str, port: u16) -> Result<(), String> {
        let body = json!({ "targets": [{ "id": ip, "port": port }] });
        let answer = self.call(region, &format!("/targetgroups/{}/registertargets", enc(tg_arn)), body).await?;
        match answer["unsuccessful"].as_array().and_then(|u| u.first()) {
            Some(failure) => Err(format!(
                "{}: {}",
                failure["failureCode"].as_str().unwrap_or("Failed"),
                failure["failureMessage"].as_str().unwrap_or("")
            )),
            None => Ok(()),
        }
    }

    /// Deregisters `ip:port` from target group `tg_arn`.
    pub async fn deregister(&self, region: &str, tg_arn: &str, ip: &str, port: u16) -> Result<(), String> {
        let body = json!({ "targets": [{ "id": ip, "port": port }] });
        self.call(region, &format!("/targetgroups/{}/deregistertargets", enc(tg_arn)), body).await.map(|_| ())
    }

    /// Every target of `tg_arn`: (address, port, status).
    pub async fn list_targets(&self, region: &str, tg_arn: &str) -> Result<Vec<(String, u16, String)>, String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/targetgroups/{}/listtargets?maxResults=100", enc(tg_arn));
            if let Some(t) = &token {
                path.push_str(&format!("&nextToken={}", enc(t)));
            }
            let answer = self.call(region, &path, json!({})).await?;
            for item in answer["items"].as_array().into_iter().flatten() {
                let (Some(id), Some(port)) = (item["id"].as_str(), item["port"].as_u64()) else { continue };
                let status = item["status"].as_str().unwrap_or("UNAVAILABLE").to_owned();
                out.push((id.to_owned(), u16::try_from(port).unwrap_or(0), status));
            }
            match answer["nextToken"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// POSTs `body` to `path` of the Lattice API in `region`; the JSON answer, or the error.
    /// While the API answers that the call should be tried later (throttled, or unavailable for
    /// now) it is made again, a few times over some three seconds: every call made here may be
    /// repeated, and a task whose registration was lost for good would run outside its target
    /// group until it stopped.
    async fn call(&self, region: &str, path: &str, body: Value) -> Result<Value, String> {
        let mut wait = RETRY_FIRST;
        loop {
            match self.call_once(region, path, &body).await {
                Err(Failure { message, again: true }) if wait <= RETRY_LAST => {
                    tracing::debug!(%path, error = %message, "the Lattice API asks to try again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                answer => return answer.map_err(|f| f.message),
            }
        }
    }

    async fn call_once(&self, region: &str, path: &str, body: &Value) -> Result<Value, Failure> {
        let scope = format!(
            "AWS4-HMAC-SHA256 Credential=ECS/20240101/{region}/vpc-lattice/aws4_request, SignedHeaders=host, \
             Signature=0"
        );
        let request = Request::post(path)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, scope)
            .body(Body::from(body.to_string()))
            .map_err(|e| Failure { message: e.to_string(), again: false })?;
        let response = self.router.clone().oneshot(request).await.map_err(|e| Failure::again(e.to_string()))?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| Failure::again(e.to_string()))?.to_bytes();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = format!("{status}: {}", json["message"].as_str().unwrap_or(""));
            let again =
                status == http::StatusCode::TOO_MANY_REQUESTS || matches!(status.as_u16(), 500 | 502 | 503 | 504);
            return Err(Failure { message, again });
        }
        Ok(json)
    }
}

/// The first wait before a call is made again, and the last (they double between).
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const RETRY_LAST: std::time::Duration = std::time::Duration::from_millis(1600);

/// A call that failed, and whether the same call may succeed later.
struct Failure {
    message: String,
    again: bool,
}

impl Failure {
    fn again(message: String) -> Self {
        Self { message, again: true }
    }
}

/// Percent-encodes a path segment or query value (ARNs hold ':' and '/').
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::post;
    use http::StatusCode;

    use super::*;

    /// A Lattice API whose RegisterTargets answers `first` to its first `times` calls, then
    /// registers; and how many calls it had.
    fn api(first: StatusCode, times: usize) -> (Lattice, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let router = Router::new().route(
            "/targetgroups/{id}/registertargets",
            post(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < times {
                        (first, axum::Json(json!({ "message": "not now" })))
                    } else {
                        (StatusCode::OK, axum::Json(json!({ "successful": [], "unsuccessful": [] })))
                    }
                }
            }),
        );
        (Lattice::new(router, "127.0.0.1:1".into()), calls)
    }

    #[tokio::test]
    async fn a_call_the_api_asks_to_make_later_is_made_again() {
        for status in
            [StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE, StatusCode::INTERNAL_SERVER_ERROR]
        {
            let (lattice, calls) = api(status, 2);
            lattice.register("us-east-1", "tg-1", "10.0.0.1", 80).await.unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 3, "{status}");
        }
        // A bounded number of times: five waits, then the failure.
        let (lattice, calls) = api(StatusCode::SERVICE_UNAVAILABLE, usize::MAX);
        let e = lattice.register("us-east-1", "tg-1", "10.0.0.1", 80).await.unwrap_err();
        assert!(e.starts_with("503"), "{e}");
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn a_refused_call_is_not_made_again() {
        for status in [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND, StatusCode::CONFLICT] {
            let (lattice, calls) = api(status, 1);
            let e = lattice.register("us-east-1", "tg-1", "10.0.0.1", 80).await.unwrap_err();
            assert!(e.starts_with(status.as_str()), "{e}");
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{status}");
        }
    }
}
