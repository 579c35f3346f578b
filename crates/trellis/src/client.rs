//! A small HTTP client for the CLI commands: JSON requests to a running server's Lattice API
//! and to its `/_trellis/` endpoints. Given the API token (a server run with
//! `--require-signature` needs it), it sends the token to `/_trellis/` endpoints and signs AWS
//! calls (SigV4) with the root key the server gives for it, in the server's default region;
//! without one, AWS calls go unsigned (so in the server's default region too).

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

/// A client of one Trellis server.
pub struct Client {
    endpoint: String,
    http: HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// The API token, if known.
    token: Option<String>,
    /// What AWS calls are signed with (fetched once, with the token).
    signer: tokio::sync::OnceCell<Option<Signer>>,
}

/// The root key and the server's default region.
struct Signer {
    access_key: String,
    secret: String,
    region: String,
}

impl Client {
    /// A client of the server at `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str) -> anyhow::Result<Self> {
        if !endpoint.starts_with("http://") {
            bail!("endpoint {endpoint:?} must start with http://");
        }
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        Ok(Self { endpoint, http, token: None, signer: tokio::sync::OnceCell::new() })
    }

    /// The same client, sending `token` (the API token) when it has one.
    pub fn with_token(self, token: Option<String>) -> Self {
        Self { token, ..self }
    }

    /// Sends a request and parses the JSON answer; a non-2xx answer is an error that carries
    /// the server's message.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, bytes) = self.send(method, path, body).await?;
        let json: serde_json::Value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
        };
        if !status.is_success() {
            let message = json.get("message").and_then(|m| m.as_str()).unwrap_or("");
            let hint = match status {
                http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN if self.token.is_none() => {
                    " (a server run with --require-signature needs the API token: --token or TRELLIS_TOKEN)"
                }
                _ => "",
            };
            bail!("{method} {path}: {status} {message}{hint}");
        }
        Ok(json)
    }

    /// Sends a request and answers the body as text; a non-2xx answer is an error that carries
    /// it.
    pub async fn text(&self, method: &str, path: &str) -> anyhow::Result<String> {
        let (status, bytes) = self.send(method, path, None).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            bail!("{}", text.trim_end());
        }
        Ok(text)
    }

    /// Calls a JSON 1.1 operation (`X-Amz-Target: target`, e.g. ECS's); the JSON answer, or an
    /// error with the exception and message.
    pub async fn json11(&self, target: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", target)];
        let (status, bytes) = self.request("POST", "/", &headers, Bytes::from(body.to_string())).await?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let kind = json["__type"].as_str().unwrap_or("Error");
            bail!("{target}: {kind}: {}", json["message"].as_str().unwrap_or(""));
        }
        Ok(json)
    }

    /// Calls a query-protocol operation (EC2, IAM) with form `params`; the XML answer, or an
    /// error with it.
    pub async fn form(&self, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        let (status, bytes) = self.request("POST", "/", &headers, Bytes::from(body)).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            let action = params.iter().find(|(k, _)| *k == "Action").map_or("", |(_, v)| *v);
            bail!("{action}: {text}");
        }
        Ok(text)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        match body {
            Some(b) => {
                self.request(method, path, &[("content-type", "application/json")], Bytes::from(b.to_string())).await
            }
            None => self.request(method, path, &[], Bytes::new()).await,
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let mut headers: Vec<(String, String)> =
            headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        if path.starts_with("/_trellis/") {
            if let Some(token) = &self.token {
                headers.push(("authorization".to_owned(), format!("Bearer {token}")));
            }
        } else if self.token.is_some()
            && let Some(signer) = self.signer().await
        {
            signer.sign(&self.endpoint, method, path, &mut headers, &body);
        }
        self.send_raw(method, path, &headers, body).await
    }

    /// The root key to sign with, asked for once (with the token).
    async fn signer(&self) -> Option<&Signer> {
        let signer = self.signer.get_or_init(|| async {
            let headers = [("authorization".to_owned(), format!("Bearer {}", self.token.as_deref()?))];
            let (status, bytes) = self.send_raw("GET", "/_trellis/credentials", &headers, Bytes::new()).await.ok()?;
            let key: serde_json::Value = serde_json::from_slice(&bytes).ok().filter(|_| status.is_success())?;
            let field = |name: &str| key[name].as_str().map(str::to_owned);
            Some(Signer {
                access_key: field("accessKeyId")?,
                secret: field("secretAccessKey")?,
                region: field("region")?,
            })
        });
        signer.await.as_ref()
    }

    async fn send_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let uri = format!("{}{path}", self.endpoint);
        let mut req = http::Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let body = Full::new(body);
        let resp = self
            .http
            .request(req.body(body).context("building the request")?)
            .await
            .with_context(|| format!("cannot reach Trellis at {} (is `trellis serve` running?)", self.endpoint))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
        Ok((status, bytes))
    }

    /// Every item of a paginated Lattice listing.
    pub async fn list_all(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page_path = match &token {
                Some(t) => format!("{path}{sep}nextToken={t}"),
                None => path.to_owned(),
            };
            let page = self.call(method, &page_path, body.clone()).await?;
            if let Some(list) = page.get("items").and_then(|i| i.as_array()) {
                items.extend(list.iter().cloned());
            }
            match page.get("nextToken").and_then(|t| t.as_str()) {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(items),
            }
        }
    }
}

/// Whether `endpoint` (`http://host:port`) names a server on this machine (a loopback address or
/// `localhost`).
pub fn is_local(endpoint: &str) -> bool {
    let Some(authority) = endpoint.strip_prefix("http://").and_then(|rest| rest.split('/').next()) else {
        return false;
    };
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

// === impl Signer ===

impl Signer {
    /// Adds `host`, `x-amz-date` and a SigV4 `authorization` to `headers`, for the service the
    /// request is addressed to (by its `x-amz-target`, its form's `Version`, else VPC Lattice).
    fn sign(&self, endpoint: &str, method: &str, path: &str, headers: &mut Vec<(String, String)>, body: &[u8]) {
        use trellis_model::sigv4::{self, Received, Signed};
        let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let service = match (header("x-amz-target"), header("content-type")) {
            (Some(t), _) if t.starts_with("AmazonEC2ContainerService") => "ecs",
            (Some(t), _) if t.starts_with("CertificateManager") => "acm",
            (Some(t), _) if t.starts_with("Logs_") => "logs",
            (_, Some(c)) if c.starts_with("application/x-www-form-urlencoded") => {
                match form_urlencoded::parse(body).find(|(k, _)| k == "Version").map(|(_, v)| v.into_owned()) {
                    Some(v) if v == "2016-11-15" => "ec2",
                    Some(v) if v == "2011-06-15" => "sts",
                    _ => "iam",
                }
            }
            _ => "vpc-lattice",
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let amz_date = sigv4::format_amz_date(now);
        let host = endpoint.strip_prefix("http://").unwrap_or(endpoint).to_owned();
        headers.push(("host".to_owned(), host));
        headers.push(("x-amz-date".to_owned(), amz_date.clone()));
        let mut claim = Signed {
            access_key: self.access_key.as_str().into(),
            scope_date: amz_date[..8].to_owned().into(),
            region: self.region.as_str().into(),
            service: service.into(),
            amz_date: amz_date.into(),
            signed_headers: "host;x-amz-date".into(),
            signature: "".into(),
            expires: None,
            query_token: None,
        };
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let lookup = |name: &str, each: &mut dyn FnMut(&[u8])| {
            headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).for_each(|(_, v)| each(v.as_bytes()));
        };
        let received = Received { method, path, query, header: &lookup };
        // Both signed headers are present, so signing cannot fail.
        if let Ok(signature) = claim.signature_of(&received, &self.secret, &sigv4::payload_hash(body)) {
            claim.signature = signature.into();
            headers.push(("authorization".to_owned(), claim.authorization()));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_endpoints_are_loopback_ones() {
        for local in ["http://127.0.0.1:7700", "http://127.1.2.3:80/", "http://localhost:7700", "http://[::1]:7700"] {
            assert!(super::is_local(local), "{local}");
        }
        for remote in
            ["http://10.0.0.1:7700", "http://example.com:7700", "http://[2001:db8::1]:7700", "https://127.0.0.1"]
        {
            assert!(!super::is_local(remote), "{remote}");
        }
    }
}
