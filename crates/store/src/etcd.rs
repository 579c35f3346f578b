//! The etcd backend: the [`Store`] trait over etcd v3, spoken through etcd's JSON gateway
//! (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`, `/v3/auth/authenticate`) over HTTP/1.1, with TLS
//! and user/password auth as options. No gRPC stack: every etcd since 3.4 serves the gateway at
//! `/v3/` on its client port, and a JSON body over hyper costs a fraction of tonic and prost's
//! build (and needs no `protoc`).
//!
//! etcd already has the data model the trait describes (revisions, create/mod revisions and
//! versions, compare-and-swap, watch from a revision), so this module mostly translates: keys and
//! values to base64, 64-bit numbers from strings, and etcd's error messages to [`Error`]s. What
//! it adds: transactions checked against etcd's default limits before they are sent, a key
//! written twice in one transaction reduced to its last write (SQLite's behaviour; etcd refuses
//! duplicates), and watches that survive a lost connection ([`watch`]).

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::json;

use crate::{
    BoxFuture, Compare, Error, KeyValue, LeaseId, Op, RangeRequest, RangeResponse, Revision, Store, Txn, TxnResponse,
    WatchStream,
};

mod client;
mod watch;

use client::{CallError, Client};

/// How to reach an etcd cluster. Its `Debug` leaves the password out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `HOST:PORT` of each member's client URL, tried in order.
    pub endpoints: Vec<String>,
    /// Plain HTTP or TLS.
    pub scheme: Scheme,
    /// CA certificates (PEM) that etcd's server certificate must chain to (TLS only).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's `--client-cert-auth` (TLS only).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// User name, when etcd has auth enabled.
    pub username: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// Prepended to every key in etcd (and taken off on the way back), so that several
    /// installations, or other programs, can share one etcd: say `trellis/` (default: none,
    /// the whole keyspace).
    pub namespace: String,
}

/// Whether the endpoints speak TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    /// `etcd://`: plain HTTP.
    #[default]
    Http,
    /// `etcds://`: HTTPS.
    Https,
}

/// The etcd-backed [`Store`].
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Prepended to every key ([`EtcdConfig::namespace`]).
    namespace: String,
    /// Dropped with the store, which ends every watch (a watch holds only a receiver).
    _closed: tokio::sync::watch::Sender<()>,
    closed: tokio::sync::watch::Receiver<()>,
}

/// A response header: the store's revision when the request was served.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Header {
    #[serde(deserialize_with = "int")]
    revision: i64,
}

/// A key-value as the gateway writes it (base64 bytes, 64-bit numbers as strings).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireKv {
    key: String,
    value: String,
    #[serde(deserialize_with = "int")]
    create_revision: i64,
    #[serde(deserialize_with = "int")]
    mod_revision: i64,
    #[serde(deserialize_with = "int")]
    version: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireRange {
    header: Header,
    kvs: Vec<WireKv>,
    more: bool,
    #[serde(deserialize_with = "int")]
    count: i64,
}

/// A lease as grant and keep-alive answer it (keep-alive inside a `result`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireLease {
    #[serde(rename = "ID", deserialize_with = "int")]
    id: i64,
    #[serde(rename = "TTL", deserialize_with = "int")]
    ttl: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireKeepAlive {
    result: WireLease,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireTxn {
    header: Header,
    succeeded: bool,
}

// === impl EtcdConfig ===

impl EtcdConfig {
    /// Parses `etcd://HOST:PORT[,HOST:PORT…]` (or `etcds://` for TLS); the other fields stay
    /// unset.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Backend(format!("store {url:?}: {why}"));
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            (Scheme::Https, rest)
        } else {
            return Err(bad("use etcd://HOST:PORT[,HOST:PORT…] or etcds://…"));
        };
        let rest = rest.trim_end_matches('/');
        let mut endpoints = Vec::new();
        for endpoint in rest.split(',') {
            let Some((host, port)) = endpoint.rsplit_once(':') else {
                return Err(bad(&format!("{endpoint:?} is not HOST:PORT")));
            };
            if host.is_empty() || host.contains(['/', '@', '?', '#']) || port.parse::<u16>().is_err() {
                return Err(bad(&format!("{endpoint:?} is not HOST:PORT")));
            }
            endpoints.push(endpoint.to_owned());
        }
        Ok(Self { endpoints, scheme, ..Self::default() })
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("scheme", &self.scheme)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("namespace", &self.namespace)
            .finish()
    }
}

// === impl EtcdStore ===

impl EtcdStore {
    /// Connects to the cluster and checks that it answers (and that the credentials, if any,
    /// are right): a store that cannot be used fails here, not at its first use.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, Error> {
        if config.endpoints.is_empty() {
            return Err(Error::Backend("no etcd endpoint given".into()));
        }
        let (closed_tx, closed) = tokio::sync::watch::channel(());
        let store = Self {
            inner: Arc::new(Inner {
                client: Client::new(config)?,
                namespace: config.namespace.clone(),
                _closed: closed_tx,
                closed,
            }),
        };
        let probe = RangeRequest { start: "\0".into(), limit: 1, count_only: true, ..RangeRequest::default() };
        store.range(probe).await?;
        Ok(store)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        let ns = &self.inner.namespace;
        let mut body = json!({ "key": key64(&format!("{ns}{}", req.start)) });
        if let Some(end) = &req.end {
            body["range_end"] = json!(BASE64.encode(format!("{ns}{end}")));
        }
        if req.limit > 0 {
            body["limit"] = json!(req.limit.to_string());
        }
        if req.count_only {
            body["count_only"] = json!(true);
        }
        let resp: WireRange = self.inner.client.call("/v3/kv/range", &body).await.map_err(store_error)?;
        let kvs = resp.kvs.into_iter().map(|kv| from_wire(kv, ns)).collect::<Result<Vec<_>, _>>()?;
        let count = if req.count_only { usize::try_from(resp.count).unwrap_or(0) } else { kvs.len() };
        Ok(RangeResponse { kvs, count, more: resp.more, revision: resp.header.revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, Error> {
        txn.check_limits()?;
        let ns = &self.inner.namespace;
        let compare: Vec<_> = txn.compare.iter().map(|cmp| wire_compare(cmp, ns)).collect();
        let body = json!({
            "compare": compare,
            "success": wire_ops(&txn.success, ns),
            "failure": wire_ops(&txn.failure, ns),
        });
        let resp: WireTxn = self.inner.client.call("/v3/kv/txn", &body).await.map_err(|e| {
            match e {
                CallError::Etcd { code: 5, message } if message.contains("lease not found") => {
                    // etcd does not say which; the first one the transaction names is reported.
                    let mut ops = txn.success.iter().chain(&txn.failure);
                    Error::LeaseNotFound(
                        ops.find_map(|op| match op {
                            Op::PutLeased(_, _, lease) => Some(*lease),
                            _ => None,
                        })
                        .unwrap_or(0),
                    )
                }
                e => store_error(e),
            }
        })?;
        Ok(TxnResponse { succeeded: resp.succeeded, revision: resp.header.revision })
    }

    async fn grant_lease(&self, ttl_seconds: i64) -> Result<LeaseId, Error> {
        let body = json!({ "TTL": ttl_seconds.max(1).to_string() });
        let resp: WireLease = self.inner.client.call("/v3/lease/grant", &body).await.map_err(store_error)?;
        Ok(resp.id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, Error> {
        let body = json!({ "ID": lease.to_string() });
        let resp: WireKeepAlive = self.inner.client.call("/v3/lease/keepalive", &body).await.map_err(store_error)?;
        // A lease that is gone is answered with no TTL.
        Ok(resp.result.ttl > 0)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), Error> {
        let body = json!({ "ID": lease.to_string() });
        match self.inner.client.call::<serde_json::Value>("/v3/lease/revoke", &body).await {
            Ok(_) => Ok(()),
            Err(CallError::Etcd { code: 5, .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }
}

impl Store for EtcdStore {
    fn range(&self, req: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, Error>> {
        Box::pin(Self::range(self, req))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse, Error>> {
        Box::pin(Self::txn(self, txn))
    }

    fn watch(&self, prefix: String, from_revision: Revision) -> BoxFuture<'_, Result<WatchStream, Error>> {
        Box::pin(watch::open(self.inner.clone(), prefix, from_revision))
    }

    fn grant_lease(&self, ttl_seconds: i64) -> BoxFuture<'_, Result<LeaseId, Error>> {
        Box::pin(Self::grant_lease(self, ttl_seconds))
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<bool, Error>> {
        Box::pin(Self::keep_alive(self, lease))
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(Self::revoke_lease(self, lease))
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.inner.client.describe()).finish()
    }
}

/// A key-value from etcd, its key taken out of the namespace.
fn from_wire(kv: WireKv, namespace: &str) -> Result<KeyValue, Error> {
    let key = String::from_utf8(decode64(&kv.key)?)
        .map_err(|_| Error::Backend("etcd holds a key that is not UTF-8 under Trellis's namespace".into()))?;
    let Some(key) = key.strip_prefix(namespace) else {
        return Err(Error::Backend(format!("etcd answered with the key {key:?}, outside the namespace {namespace:?}")));
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: decode64(&kv.value)?,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    })
}

/// A key for etcd: etcd has no empty key, and reads `\0` as the smallest one.
fn key64(key: &str) -> String {
    if key.is_empty() { BASE64.encode([0]) } else { BASE64.encode(key) }
}

/// The end of the range of keys starting with `prefix`, in etcd's bytes: the prefix with its
/// last byte below 0xff incremented (`\0`, every key, for an empty prefix).
fn prefix_end64(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return BASE64.encode(end);
        }
    }
    BASE64.encode([0])
}

fn decode64(s: &str) -> Result<Vec<u8>, Error> {
    BASE64.decode(s).map_err(|e| Error::Backend(format!("etcd sent bad base64: {e}")))
}

fn wire_compare(cmp: &Compare, ns: &str) -> serde_json::Value {
    match cmp {
        Compare::ModRevision(key, rev) => {
            let key = key64(&format!("{ns}{key}"));
            json!({ "target": "MOD", "result": "EQUAL", "key": key, "mod_revision": rev.to_string() })
        }
        Compare::Value(key, value) => {
            let key = key64(&format!("{ns}{key}"));
            json!({ "target": "VALUE", "result": "EQUAL", "key": key, "value": BASE64.encode(value) })
        }
    }
}

/// The operations as etcd takes them. etcd refuses a transaction that names a key twice; a key
/// written twice keeps its last write, as it would have ended up after both (a later prefix
/// delete covering it is such a write too).
fn wire_ops(ops: &[Op], ns: &str) -> Vec<serde_json::Value> {
    let last_write = |i: usize, key: &str| {
        !ops[i + 1..].iter().any(|later| match later {
            Op::Put(k, _) | Op::PutLeased(k, _, _) | Op::Delete(k) => k == key,
            Op::DeletePrefix(prefix) => key.starts_with(prefix.as_str()),
        })
    };
    ops.iter()
        .enumerate()
        .filter(|(i, op)| match op {
            Op::Put(key, _) | Op::PutLeased(key, _, _) | Op::Delete(key) => last_write(*i, key),
            Op::DeletePrefix(_) => true,
        })
        .map(|(_, op)| match op {
            Op::Put(key, value) => {
                json!({ "request_put": { "key": key64(&format!("{ns}{key}")), "value": BASE64.encode(value) } })
            }
            Op::PutLeased(key, value, lease) => json!({ "request_put": {
                "key": key64(&format!("{ns}{key}")), "value": BASE64.encode(value), "lease": lease.to_string(),
            } }),
            Op::Delete(key) => json!({ "request_delete_range": { "key": key64(&format!("{ns}{key}")) } }),
            Op::DeletePrefix(prefix) => {
                let prefix = format!("{ns}{prefix}");
                json!({ "request_delete_range": { "key": key64(&prefix), "range_end": prefix_end64(&prefix) } })
            }
        })
        .collect()
}

/// Maps a failed call to a store error.
fn store_error(e: CallError) -> Error {
    match e {
        CallError::Broken(message) | CallError::Unreachable(message) => Error::Backend(message),
        CallError::Etcd { code, message } => {
            // gRPC's RESOURCE_EXHAUSTED: a message larger than the server takes.
            if message.contains("too many operations") || message.contains("request is too large") || code == 8 {
                Error::TooLarge(format!("etcd: {message}"))
            } else {
                Error::Backend(format!("etcd: {message}"))
            }
        }
    }
}

/// A 64-bit number the gateway writes as a string (or, from older gateways, a number).
fn int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Number(i64),
        Text(String),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests;
