//! A small HTTP client for the CLI commands: JSON requests to a running server's Lattice API
//! (unsigned, so in the server's default region) and to its `/_trellis/` endpoints.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

/// A client of one Trellis server.
pub struct Client {
    endpoint: String,
    http: HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client of the server at `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str) -> anyhow::Result<Self> {
        if !endpoint.starts_with("http://") {
            bail!("endpoint {endpoint:?} must start with http://");
        }
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        Ok(Self { endpoint: endpoint.trim_end_matches('/').to_owned(), http })
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
            bail!("{method} {path}: {status} {message}");
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
        let uri = format!("{}{path}", self.endpoint);
        let mut req = http::Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
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
