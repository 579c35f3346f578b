//! Conformance behaviours of leases: keys written with one go when it is revoked or runs out,
//! stay while it is renewed, and a plain write takes a key off its lease.

use std::time::{Duration, Instant};

use super::{get, put};
use crate::{Error, EventKind, Op, Store, Txn};

/// How long an unrenewed lease of the shortest TTL may take to be noticed as expired (etcd
/// rounds a 1-second TTL up to its minimum, and checks expiry on its own clock).
const EXPIRY_WAIT: Duration = Duration::from_secs(10);

async fn put_leased(store: &dyn Store, key: &str, value: &[u8], lease: i64) -> Result<i64, Error> {
    let op = Op::PutLeased(key.to_owned(), value.to_vec(), lease);
    store.txn(Txn { success: vec![op], ..Txn::default() }).await.map(|r| r.revision)
}

/// Revoking a lease deletes its keys (in one revision, seen by a watch) and no others.
pub async fn revoking_a_lease_deletes_its_keys(store: &dyn Store) {
    let lease = store.grant_lease(30).await.expect("grant");
    put_leased(store, "l/a", b"1", lease).await.expect("a put with a live lease");
    put_leased(store, "l/b", b"2", lease).await.expect("a put with a live lease");
    put(store, "l/c", b"3").await;
    assert!(get(store, "l/a").await.is_some(), "a leased key reads like any other");
    let mut stream = store.watch("l/".into(), 0).await.expect("watch");
    store.revoke_lease(lease).await.expect("revoke");
    assert_eq!(get(store, "l/a").await, None, "revoking must delete the lease's keys");
    assert_eq!(get(store, "l/b").await, None, "revoking must delete the lease's keys");
    assert!(get(store, "l/c").await.is_some(), "a key without the lease must stay");
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.recv())
            .await
            .expect("the deletes must reach a watch")
            .expect("stream open")
            .expect("no error");
        assert_eq!(event.kind, EventKind::Delete, "a revoked key is seen deleted");
        deleted.push(event.kv);
    }
    assert_eq!(deleted[0].mod_revision, deleted[1].mod_revision, "one revoke is one revision");
    assert!(!store.keep_alive(lease).await.expect("keep-alive"), "a revoked lease cannot be renewed");
    store.revoke_lease(lease).await.expect("revoking a lease that is gone is no error");
}

/// A write with a lease that is gone fails as a whole: nothing of the transaction is written.
pub async fn a_write_with_a_dead_lease_fails_whole(store: &dyn Store) {
    let lease = store.grant_lease(30).await.expect("grant");
    store.revoke_lease(lease).await.expect("revoke");
    let ops = vec![Op::Put("d/plain".into(), b"x".to_vec()), Op::PutLeased("d/leased".into(), b"y".to_vec(), lease)];
    let result = store.txn(Txn { success: ops, ..Txn::default() }).await;
    assert!(matches!(result, Err(Error::LeaseNotFound(_))), "a dead lease must fail the write, got {result:?}");
    assert_eq!(get(store, "d/plain").await, None, "a failed transaction writes nothing");
    assert_eq!(get(store, "d/leased").await, None, "a failed transaction writes nothing");
}

/// A plain put of a leased key takes it off the lease: it outlives the lease.
pub async fn a_plain_put_detaches_the_lease(store: &dyn Store) {
    let lease = store.grant_lease(30).await.expect("grant");
    put_leased(store, "p/k", b"leased", lease).await.expect("a put with a live lease");
    put(store, "p/k", b"plain").await;
    store.revoke_lease(lease).await.expect("revoke");
    assert_eq!(get(store, "p/k").await.map(|kv| kv.value), Some(b"plain".to_vec()), "the plain write must stay");
}

/// A lease renewed in time keeps its keys; left alone, it runs out and its keys go.
pub async fn a_lease_lives_while_renewed_and_expires_without(store: &dyn Store) {
    let lease = store.grant_lease(2).await.expect("grant");
    put_leased(store, "e/k", b"v", lease).await.expect("a put with a live lease");
    let renewing = Instant::now() + Duration::from_secs(4);
    while Instant::now() < renewing {
        assert!(store.keep_alive(lease).await.expect("keep-alive"), "a renewed lease must stay alive");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(get(store, "e/k").await.is_some(), "a lease renewed within its TTL must keep its keys");
    let deadline = Instant::now() + EXPIRY_WAIT;
    while get(store, "e/k").await.is_some() {
        assert!(Instant::now() < deadline, "an unrenewed lease must expire and take its keys with it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!store.keep_alive(lease).await.expect("keep-alive"), "an expired lease cannot be renewed");
}
