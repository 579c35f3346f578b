//! `TestApp::spawn()`: a server in-process on 127.0.0.1:0, its store in a temp dir, stopped when
//! dropped; and a raw HTTP helper.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use trellis::config::RawConfig;

pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) json: serde_json::Value,
}

impl TestApp {
    pub(crate) async fn spawn() -> Self {
        Self::spawn_in(tempfile::tempdir().unwrap()).await
    }

    /// A server whose data directory is `dir/data` (which may hold an earlier server's state).
    pub(crate) async fn spawn_in(dir: tempfile::TempDir) -> Self {
        let raw: RawConfig = toml::from_str(&format!(
            "listen = \"127.0.0.1:0\"\nnetwork = \"loopback\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ))
        .unwrap();
        let config = raw.validate(&BTreeMap::new()).unwrap();
        let bound = trellis::app::build(config).await.unwrap();
        let addr = bound.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.wait_termination(async move {
            let _ = stopped.await;
        }));
        Self { addr, dir, stop: Some(stop), task: Some(task) }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request with extra headers; the body is JSON text or a form.
    pub(crate) async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = http::Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client.request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer { status, headers, json }
    }

    /// Stops the server, waits for it to finish, and hands back its directory.
    pub(crate) async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, placeholder)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An `Authorization` header with a SigV4 credential scope for `region` and `service`.
pub(crate) fn signed(region: &str, service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/{region}/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
        "0".repeat(64)
    )
}
