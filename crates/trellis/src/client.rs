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
        let uri = format!("{}{path}", self.endpoint);
        let mut req = http::Request::builder().method(method).uri(&uri);
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self
            .http
            .request(req.body(body).context("building the request")?)
            .await
            .with_context(|| format!("cannot reach Trellis at {} (is `trellis serve` running?)", self.endpoint))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
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
