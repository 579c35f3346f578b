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
    async fn call(&self, region: &str, path: &str, body: Value) -> Result<Value, String> {
        let scope = format!(
            "AWS4-HMAC-SHA256 Credential=ECS/20240101/{region}/vpc-lattice/aws4_request, SignedHeaders=host, \
             Signature=0"
        );
        let request = Request::post(path)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, scope)
            .body(Body::from(body.to_string()))
            .map_err(|e| e.to_string())?;
        let response = self.router.clone().oneshot(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{status}: {}", json["message"].as_str().unwrap_or("")));
        }
        Ok(json)
    }
}

/// Percent-encodes a path segment or query value (ARNs hold ':' and '/').
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
