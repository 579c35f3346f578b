//! Tests of the etcd backend against a real etcd each (Debian's etcd-server, started and killed
//! by the test): the shared conformance suite, then what only a networked store has: watches
//! that survive etcd restarting and a broken connection, compaction, auth, several endpoints.
//! Without an `etcd` binary they say so and pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::{EtcdConfig, EtcdStore, Scheme, prefix_end64, wire_ops};
use crate::{Error, EventKind, Op, Revision, Store, StoreExt, Txn, WatchEvent, WatchStream};

mod server;

use server::EtcdServer;

mod conformance {
    crate::store_conformance_tests!(optional super::fixture);
}

/// The suite again, in a namespace of an etcd that holds other programs' keys around it
/// (before, after, and not UTF-8), which the store must never see nor touch.
mod namespaced {
    crate::store_conformance_tests!(optional super::namespaced_fixture);
}

async fn fixture() -> Option<(EtcdStore, EtcdServer)> {
    let server = EtcdServer::start(&[]).await?;
    let store = EtcdStore::connect(&server.config()).await.expect("connecting to etcd");
    Some((store, server))
}

async fn namespaced_fixture() -> Option<(EtcdStore, EtcdServer)> {
    let server = EtcdServer::start(&[]).await?;
    let raw = EtcdStore::connect(&server.config()).await.expect("connecting to etcd");
    for key in ["a", "trellis", "trellis.", "trellis0", "zzz"] {
        put(&raw, key, b"someone else's").await;
    }
    let not_utf8 = json!({ "key": "/w==", "value": "eA==" });
    let _: serde_json::Value = raw.inner.client.call("/v3/kv/put", &not_utf8).await.expect("a binary key");
    let config = EtcdConfig { namespace: "trellis/".into(), ..server.config() };
    let store = EtcdStore::connect(&config).await.expect("connecting to etcd");
    Some((store, server))
}

async fn put(store: &EtcdStore, key: &str, value: &[u8]) -> Revision {
    let txn = Txn { success: vec![Op::Put(key.into(), value.to_vec())], ..Txn::default() };
    store.txn(txn).await.expect("put").revision
}

/// Puts until etcd answers again (after a restart), within 20 s.
async fn put_retrying(store: &EtcdStore, key: &str, value: &[u8]) -> Revision {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let txn = Txn { success: vec![Op::Put(key.into(), value.to_vec())], ..Txn::default() };
        match store.txn(txn).await {
            Ok(resp) => return resp.revision,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("etcd did not come back: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    timeout(Duration::from_secs(15), stream.recv())
        .await
        .expect("a watch event within 15 s")
        .expect("the stream is open")
        .expect("the watch has not failed")
}

async fn compact(store: &EtcdStore, revision: Revision) {
    let body = json!({ "revision": revision.to_string(), "physical": true });
    let _: serde_json::Value = store.inner.client.call("/v3/kv/compaction", &body).await.expect("compaction");
}

#[test]
fn urls_parse() {
    let config = EtcdConfig::from_url("etcd://127.0.0.1:2379,etcd-2.example:22379").unwrap();
    assert_eq!(config.endpoints, ["127.0.0.1:2379", "etcd-2.example:22379"]);
    assert_eq!(config.scheme, Scheme::Http);
    let config = EtcdConfig::from_url("etcds://[::1]:2379/").unwrap();
    assert_eq!((config.endpoints, config.scheme), (vec!["[::1]:2379".to_owned()], Scheme::Https));
    for bad in ["http://127.0.0.1:2379", "etcd://", "etcd://host", "etcd://host:port", "etcd://a:1,", "etcd://u@h:1"] {
        assert!(EtcdConfig::from_url(bad).is_err(), "{bad} must be refused");
    }
}

#[test]
fn prefix_end_is_etcds() {
    use base64::Engine;
    let decode = |s: String| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    assert_eq!(decode(prefix_end64("a/")), b"a0");
    assert_eq!(decode(prefix_end64("")), b"\0", "every key");
}

#[test]
fn a_key_written_twice_keeps_its_last_write() {
    let ops = vec![
        Op::Put("a".into(), b"1".to_vec()),
        Op::Put("b".into(), b"1".to_vec()),
        Op::Delete("a".into()),
        Op::Put("p/x".into(), b"1".to_vec()),
        Op::DeletePrefix("p/".into()),
        Op::Put("b".into(), b"2".to_vec()),
    ];
    let wire = serde_json::to_string(&wire_ops(&ops, "")).unwrap();
    assert_eq!(
        wire,
        r#"[{"request_delete_range":{"key":"YQ=="}},{"request_delete_range":{"key":"cC8=","range_end":"cDA="}},{"request_put":{"key":"Yg==","value":"Mg=="}}]"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_store_is_a_clear_error() {
    let config = EtcdConfig { endpoints: vec!["127.0.0.1:1".into()], ..EtcdConfig::default() };
    let err = EtcdStore::connect(&config).await.expect_err("nothing listens on port 1");
    let message = err.to_string();
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    assert!(message.contains("cannot reach etcd at 127.0.0.1:1"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_skipped() {
    let Some(server) = EtcdServer::start(&[]).await else { return };
    let config = EtcdConfig { endpoints: vec!["127.0.0.1:1".into(), server.endpoint()], ..EtcdConfig::default() };
    let store = EtcdStore::connect(&config).await.expect("the second endpoint answers");
    let rev = put(&store, "k", b"v").await;
    assert_eq!(store.get("k").await.unwrap().unwrap().mod_revision, rev);
    let mut stream = store.watch("w/".into(), 0).await.unwrap();
    let rev = put(&store, "w/1", b"v").await;
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_store_is_dropped() {
    let Some((store, _server)) = fixture().await else { return };
    let mut stream = store.watch("w/".into(), 0).await.unwrap();
    drop(store);
    let end = timeout(Duration::from_secs(5), stream.recv()).await;
    assert!(matches!(end, Ok(None)), "the stream must end once the store is dropped, got {end:?}");
}

/// A namespaced store sees, watches and deletes only keys in its namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_keeps_to_itself() {
    let Some((raw, server)) = fixture().await else { return };
    let config = EtcdConfig { namespace: "ns/".into(), ..server.config() };
    let store = EtcdStore::connect(&config).await.unwrap();
    let mut everything = store.watch(String::new(), 0).await.unwrap();
    put(&raw, "outside", b"x").await;
    put(&raw, "ns0", b"x").await;
    let rev = put(&store, "k", b"v").await;
    let ev = next_event(&mut everything).await;
    assert_eq!((ev.kv.key.as_str(), ev.kv.mod_revision), ("k", rev), "only the namespace's own writes");
    assert_eq!(raw.get("ns/k").await.unwrap().unwrap().value, b"v", "stored under the namespace");
    assert_eq!(store.count_prefix("").await.unwrap(), 1);
    let txn = Txn { success: vec![Op::DeletePrefix(String::new())], ..Txn::default() };
    store.txn(txn).await.unwrap();
    assert_eq!(store.count_prefix("").await.unwrap(), 0);
    assert_eq!(raw.count_prefix("").await.unwrap(), 2, "keys outside the namespace stay");
}

/// etcd killed (SIGKILL) and restarted on the same data directory: the watch reopens from the
/// revision after the last event it handed on, and sees every write once, in order, including
/// those made while it was reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_etcd_restarts() {
    let Some(mut server) = EtcdServer::start(&[]).await else { return };
    let store = EtcdStore::connect(&server.config()).await.unwrap();
    let mut stream = store.watch("r/".into(), 0).await.unwrap();
    let mut revisions = Vec::new();
    for i in 0..5 {
        revisions.push(put(&store, &format!("r/{i}"), b"before").await);
    }
    for &rev in &revisions {
        assert_eq!(next_event(&mut stream).await.kv.mod_revision, rev);
    }
    server.restart().await;
    // Written as soon as etcd is back, mostly before the watch has reconnected.
    let mut after = Vec::new();
    for i in 5..10 {
        after.push(put_retrying(&store, &format!("r/{i}"), b"after").await);
        put(&store, "elsewhere", b"x").await;
    }
    for (i, &rev) in after.iter().enumerate() {
        let ev = next_event(&mut stream).await;
        assert_eq!(
            (ev.kind, ev.kv.key.as_str(), ev.kv.mod_revision),
            (EventKind::Put, format!("r/{}", i + 5).as_str(), rev),
            "after the restart: every write once, in order"
        );
    }
    let quiet = timeout(Duration::from_millis(300), stream.recv()).await;
    assert!(quiet.is_err(), "nothing repeated or extra: {quiet:?}");
}

/// A watch from a compacted revision reports [`Error::Compacted`] with etcd's oldest revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_fails() {
    let Some((store, _server)) = fixture().await else { return };
    let first = put(&store, "c/k", b"1").await;
    for i in 0..5 {
        put(&store, "c/k", i.to_string().as_bytes()).await;
    }
    let at = put(&store, "c/k", b"last").await;
    compact(&store, at - 1).await;
    let reported = match store.watch("c/".into(), first).await {
        Err(e) => e,
        // etcd confirms the watch, then cancels it.
        Ok(mut stream) => timeout(Duration::from_secs(5), stream.recv())
            .await
            .expect("an answer within 5 s")
            .expect("an item")
            .expect_err("an error"),
    };
    assert!(
        matches!(reported, Error::Compacted { requested, oldest } if requested == first && oldest == at - 1),
        "{reported:?}"
    );
    let mut stream = store.watch("c/".into(), at - 1).await.expect("the compaction revision is kept");
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, at - 1);
}

/// A watch whose connection breaks while etcd compacts past it reports [`Error::Compacted`]
/// when it reconnects (its consumer then reads everything afresh); one whose connection breaks
/// without compaction resumes without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnecting_after_compaction_reports_compacted() {
    let Some((direct, server)) = fixture().await else { return };
    let proxy = Proxy::start(&server.endpoint()).await;
    let config = EtcdConfig { endpoints: vec![proxy.endpoint.clone()], ..EtcdConfig::default() };
    let store = EtcdStore::connect(&config).await.unwrap();
    let mut resumed = store.watch("a/".into(), 0).await.unwrap();
    let mut compacted = store.watch("b/".into(), 0).await.unwrap();
    let seen = put(&direct, "a/1", b"v").await;
    assert_eq!(next_event(&mut resumed).await.kv.mod_revision, seen);

    proxy.cut(true);
    let missed = put(&direct, "a/2", b"v").await;
    put(&direct, "b/1", b"v").await;
    let last = put(&direct, "other", b"v").await;
    compact(&direct, last).await;
    proxy.cut(false);

    // "a/" resumes from a/2's revision, compacted too: both watches must start over.
    for stream in [&mut resumed, &mut compacted] {
        let item = timeout(Duration::from_secs(15), stream.recv()).await.expect("an answer within 15 s");
        assert!(
            matches!(item, Some(Err(Error::Compacted { oldest, .. })) if oldest == last),
            "a watch resuming below the compaction must report it: {item:?} (missed {missed})"
        );
        assert!(timeout(Duration::from_secs(5), stream.recv()).await.expect("the stream ends").is_none());
    }

    // Without compaction, a broken connection costs nothing.
    let mut stream = store.watch("c/".into(), 0).await.unwrap();
    proxy.cut(true);
    let during = put(&direct, "c/1", b"v").await;
    proxy.cut(false);
    let after = put(&direct, "c/2", b"v").await;
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, during);
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, after);
}

/// A watch whose connection stalls without breaking (bytes stop flowing) is found out once it
/// has been quiet a while and a write it should have delivered is overdue, and reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_watch_is_reopened() {
    let Some((direct, server)) = fixture().await else { return };
    let proxy = Proxy::start(&server.endpoint()).await;
    let config = EtcdConfig { endpoints: vec![proxy.endpoint.clone()], ..EtcdConfig::default() };
    let store = EtcdStore::connect(&config).await.unwrap();
    let mut stream = store.watch("q/".into(), 0).await.unwrap();
    let first = put(&direct, "q/1", b"v").await;
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, first);
    // Quiet for several checks: nothing is overdue, nothing happens.
    tokio::time::sleep(super::watch::QUIET * 3).await;
    assert!(stream.try_recv().is_err(), "a quiet watch delivers nothing");

    proxy.stall();
    let overdue = put(&direct, "q/2", b"v").await;
    let ev = timeout(Duration::from_secs(10), stream.recv()).await.expect("the stalled watch is reopened");
    assert_eq!(ev.unwrap().unwrap().kv.mod_revision, overdue);
    let next = put(&direct, "q/3", b"v").await;
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, next, "once, in order, after reopening");
}

/// With auth on, a wrong password is a clear error at connect, the right one works for reads,
/// writes and watches, and an expired token is replaced without the caller noticing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_user_and_password() {
    // Tokens expire after 1 s idle, to see them renewed.
    let Some(server) = EtcdServer::start(&["--auth-token-ttl=1"]).await else { return };
    let admin = EtcdStore::connect(&server.config()).await.unwrap();
    for (path, body) in [
        ("/v3/auth/user/add", json!({ "name": "root", "password": "s3cret" })),
        ("/v3/auth/user/grant", json!({ "user": "root", "role": "root" })),
        ("/v3/auth/enable", json!({})),
    ] {
        let _: serde_json::Value = admin.inner.client.call(path, &body).await.expect(path);
    }
    let with = |username: Option<&str>, password: &str| EtcdConfig {
        username: username.map(str::to_owned),
        password: username.map(|_| password.to_owned()),
        ..server.config()
    };
    let err = EtcdStore::connect(&with(Some("root"), "wrong")).await.expect_err("a wrong password is refused");
    assert!(err.to_string().contains("wrong user name or password"), "{err}");
    let err = EtcdStore::connect(&with(None, "")).await.expect_err("no credentials are refused");
    assert!(err.to_string().contains("user name is empty"), "{err}");

    let store = EtcdStore::connect(&with(Some("root"), "s3cret")).await.expect("the right password works");
    let mut stream = store.watch("s/".into(), 0).await.unwrap();
    let rev = put(&store, "s/1", b"v").await;
    assert_eq!(store.get("s/1").await.unwrap().unwrap().mod_revision, rev);
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, rev);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rev = put(&store, "s/2", b"v").await;
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, rev, "after the token expired");
    let mut late = store.watch("s/".into(), rev).await.expect("a watch opened with a renewed token");
    assert_eq!(next_event(&mut late).await.kv.mod_revision, rev);
}

/// Over TLS with a client certificate: everything works; without the client certificate, or
/// trusting another CA, connecting fails with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate() {
    let Some(server) = EtcdServer::start_tls().await else { return };
    let store = EtcdStore::connect(&server.config()).await.expect("TLS with a client certificate");
    let mut stream = store.watch("t/".into(), 0).await.unwrap();
    let rev = put(&store, "t/1", b"v").await;
    assert_eq!(store.get("t/1").await.unwrap().unwrap().mod_revision, rev);
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, rev);

    let anonymous = EtcdConfig { cert_file: None, key_file: None, ..server.config() };
    let err = EtcdStore::connect(&anonymous).await.expect_err("etcd asks for a client certificate");
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    let plain = EtcdConfig { scheme: Scheme::Http, ca_file: None, cert_file: None, key_file: None, ..server.config() };
    assert!(EtcdStore::connect(&plain).await.is_err(), "plain HTTP to a TLS port fails");
    let other_ca = tempfile::tempdir().unwrap();
    let ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let pem = ca.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem();
    std::fs::write(other_ca.path().join("ca.pem"), pem).unwrap();
    let untrusted = EtcdConfig { ca_file: Some(other_ca.path().join("ca.pem")), ..server.config() };
    let err = EtcdStore::connect(&untrusted).await.expect_err("a server certificate of another CA is refused");
    assert!(err.to_string().contains("TLS"), "{err}");
}

/// A TCP proxy in front of etcd whose connections can be cut and refused, to break watches
/// while etcd stays up.
struct Proxy {
    endpoint: String,
    refusing: Arc<AtomicBool>,
    stalling: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let (refusing, stalling) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (upstream, refuse, gen_tx) = (upstream.to_owned(), refusing.clone(), generation.clone());
        let stalling_for_task = stalling.clone();
        let task = tokio::spawn(async move {
            let stalling = stalling_for_task;
            while let Ok((mut client, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = gen_tx.subscribe();
                let stall = stalling.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                    if stall.load(Ordering::SeqCst) {
                        // Open but silent, until the test ends.
                        std::future::pending::<()>().await;
                        drop((client, server));
                    }
                });
            }
        });
        Self { endpoint, refusing, stalling, generation, task }
    }

    /// Freezes every open connection (open, but no byte goes through again); new ones work.
    fn stall(&self) {
        self.stalling.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Cuts every open connection and refuses new ones (`true`), or accepts again (`false`).
    fn cut(&self, refuse: bool) {
        self.refusing.store(refuse, Ordering::SeqCst);
        if refuse {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
