//! The conformance suite every [`Store`] backend must pass: etcd's semantics for revisions,
//! compare-and-swap transactions, ranges and watches, written once against the trait so that the
//! SQLite and etcd backends are held to one contract (as hickory's and rustls' suites are).
//!
//! Each behaviour is one `pub async fn` that takes a fresh, empty store and panics with a message
//! naming the broken rule. [`store_conformance_tests!`](crate::store_conformance_tests) turns the
//! whole list into one `#[tokio::test]` per behaviour for a backend. This file holds the macro,
//! the key, transaction and delete behaviours and the shared helpers; `range` and `watch` hold
//! the rest.
//!
//! What the suite assumes of a backend: nobody else writes to the store while a behaviour runs
//! (revisions are checked to move by exactly one per write), and a stream returned by
//! [`Store::watch`] already sees every write committed after the call returns. It assumes nothing
//! about the revision of an empty store (etcd starts at 1, SQLite at 0). Persistence, compaction,
//! schema versions and crash safety are backend-specific and are tested next to each backend.

use std::task::Poll;

use crate::{
    BoxFuture, Compare, KeyValue, Op, RangeRequest, RangeResponse, Revision, Store, StoreExt, Txn, TxnResponse,
};

mod lease;
mod range;
mod watch;

pub use lease::{
    a_lease_lives_while_renewed_and_expires_without, a_plain_put_detaches_the_lease,
    a_write_with_a_dead_lease_fails_whole, revoking_a_lease_deletes_its_keys,
};
pub use range::{
    large_value_round_trips, list_prefix_after_stays_under_prefix, list_prefix_pages_walk_every_key_once,
    oversized_txn_is_refused, range_count_only, range_end_is_exclusive, range_is_ordered, range_limit_and_more,
    single_key_range_matches_exact_key,
};
pub use watch::{
    watch_burst_arrives_in_order_without_gaps, watch_filters_by_prefix, watch_from_past_revision_replays_then_follows,
    watch_from_zero_sees_only_new_events, watch_multi_key_txn_shares_revision, watch_reports_deletes,
};

/// Generates one `#[tokio::test]` per conformance behaviour for a backend.
///
/// `$fixture` names an `async fn() -> (S, G)` where `S: Store` is a fresh, empty store and `G` is
/// whatever must outlive it (a temp dir, a server handle, or a lock guard that serialises tests
/// sharing one etcd, whose revision counter is cluster-wide). Invoke it inside a test module:
///
/// ```ignore
/// mod conformance {
///     trellis_store::store_conformance_tests!(super::fixture);
/// }
/// ```
///
/// With `optional`, the fixture returns `Option<(S, G)>`, and `None` (a backend whose server is
/// not installed, having said so) passes every behaviour without running it.
#[macro_export]
macro_rules! store_conformance_tests {
    (optional $fixture:path) => {
        $crate::store_conformance_tests!(@list @optional $fixture);
    };
    ($fixture:path) => {
        $crate::store_conformance_tests!(@list @always $fixture);
    };
    (@list @$mode:ident $fixture:path) => {
        $crate::store_conformance_tests!(@behaviours $mode $fixture;
            get_absent_key,
            put_then_get,
            overwrite_bumps_version_keeps_create_revision,
            txn_bumps_revision_once,
            failed_compare_keeps_revision,
            mod_revision_zero_guards_absent_key,
            racing_creators_exactly_one_wins,
            cas_counter_loses_no_updates,
            compare_value,
            all_compares_must_hold,
            failure_branch_applies_on_failed_compare,
            delete_key,
            delete_absent_key_keeps_revision,
            delete_prefix_only_under_prefix,
            recreate_after_delete_restarts_version,
            range_is_ordered,
            range_limit_and_more,
            range_count_only,
            range_end_is_exclusive,
            single_key_range_matches_exact_key,
            list_prefix_pages_walk_every_key_once,
            list_prefix_after_stays_under_prefix,
            large_value_round_trips,
            oversized_txn_is_refused,
            watch_from_zero_sees_only_new_events,
            watch_from_past_revision_replays_then_follows,
            watch_filters_by_prefix,
            watch_reports_deletes,
            watch_multi_key_txn_shares_revision,
            watch_burst_arrives_in_order_without_gaps,
            revoking_a_lease_deletes_its_keys,
            a_write_with_a_dead_lease_fails_whole,
            a_plain_put_detaches_the_lease,
            a_lease_lives_while_renewed_and_expires_without,
        );
    };
    (@behaviours always $fixture:path; $($behaviour:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $behaviour() {
                let (store, _guard) = $fixture().await;
                $crate::conformance::$behaviour(&store).await;
            }
        )*
    };
    (@behaviours optional $fixture:path; $($behaviour:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $behaviour() {
                let Some((store, _guard)) = $fixture().await else { return };
                $crate::conformance::$behaviour(&store).await;
            }
        )*
    };
}

/// A key no behaviour writes, read to learn the store's current revision.
const PROBE_KEY: &str = "conformance/revision-probe";

// === get and put ===

/// A key that was never written reads as absent, by `get` and by a single-key range.
pub async fn get_absent_key(store: &dyn Store) {
    assert_eq!(get(store, "absent").await, None, "get of a never-written key must be None");
    let resp = range(store, RangeRequest { start: "absent".into(), ..RangeRequest::default() }).await;
    assert!(
        resp.kvs.is_empty() && resp.count == 0 && !resp.more,
        "range of a never-written key must be empty, got {resp:?}"
    );
}

/// A put creates the key at the next revision with version 1, and reads report that revision.
pub async fn put_then_get(store: &dyn Store) {
    let before = revision(store).await;
    let rev = put(store, "k", b"v1").await;
    assert_eq!(rev, before + 1, "the first write must take the next revision");
    let want = KeyValue { key: "k".into(), value: b"v1".to_vec(), create_revision: rev, mod_revision: rev, version: 1 };
    assert_eq!(get(store, "k").await, Some(want), "get after put");
    assert_eq!(revision(store).await, rev, "reads must report the latest revision");
}

/// Overwriting bumps `version` and `mod_revision` and keeps `create_revision`, even for the
/// same value.
pub async fn overwrite_bumps_version_keeps_create_revision(store: &dyn Store) {
    let created = put(store, "k", b"v1").await;
    let updated = put(store, "k", b"v2").await;
    assert_eq!(updated, created + 1, "each write takes exactly one revision");
    let kv = must_get(store, "k").await;
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version),
        (b"v2".as_slice(), created, updated, 2),
        "after one overwrite: new value, create_revision kept, mod_revision bumped, version 2"
    );
    let again = put(store, "k", b"v2").await;
    let kv = must_get(store, "k").await;
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (created, again, 3),
        "writing the same value again is still a write"
    );
}

// === transactions ===

/// A transaction takes exactly one revision however many operations it holds, and every key it
/// writes carries that revision.
pub async fn txn_bumps_revision_once(store: &dyn Store) {
    let before = revision(store).await;
    let mut ops: Vec<Op> = (0..10).map(|i| put_op(&format!("batch/{i:02}"), b"x")).collect();
    ops.push(Op::Delete("batch/absent".into()));
    let rev = write(store, ops).await.revision;
    assert_eq!(rev, before + 1, "a 10-put transaction must take exactly one revision");
    assert_eq!(revision(store).await, rev, "the store revision after a 10-put transaction");
    for i in 0..10 {
        let kv = must_get(store, &format!("batch/{i:02}")).await;
        assert_eq!(
            (kv.create_revision, kv.mod_revision),
            (rev, rev),
            "every key of one transaction carries its revision: {kv:?}"
        );
    }
    let ops = vec![put_op("batch/00", b"y"), Op::Delete("batch/01".into()), put_op("batch/new", b"z")];
    let mixed = write(store, ops).await.revision;
    assert_eq!(mixed, rev + 1, "a put + delete + create transaction takes one revision");
    assert_eq!(must_get(store, "batch/00").await.mod_revision, mixed);
    assert_eq!(must_get(store, "batch/new").await.mod_revision, mixed);
    assert_eq!(get(store, "batch/01").await, None, "deleted in the mixed transaction");
}

/// A compare that fails with an empty failure branch writes nothing and keeps the revision.
pub async fn failed_compare_keeps_revision(store: &dyn Store) {
    let rev = put(store, "k", b"v").await;
    for compare in [Compare::Value("k".into(), b"other".to_vec()), Compare::ModRevision("k".into(), rev + 5)] {
        let resp = txn(store, guarded(compare.clone(), vec![put_op("k", b"x")], vec![])).await;
        assert_eq!(
            resp,
            TxnResponse { succeeded: false, revision: rev },
            "a failed {compare:?} with no failure ops must report the unchanged revision"
        );
    }
    let kv = must_get(store, "k").await;
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (b"v".as_slice(), rev), "key untouched");
    assert_eq!(revision(store).await, rev, "store revision untouched by failed compares");
}

/// `ModRevision(key, 0)` holds only while the key is absent; `ModRevision(key, rev)` only while
/// `rev` is its latest write.
pub async fn mod_revision_zero_guards_absent_key(store: &dyn Store) {
    let absent = || Compare::ModRevision("lock".into(), 0);
    let first = txn(store, guarded(absent(), vec![put_op("lock", b"a")], vec![])).await;
    assert!(first.succeeded, "ModRevision(key, 0) must hold for an absent key");
    let second = txn(store, guarded(absent(), vec![put_op("lock", b"b")], vec![])).await;
    assert_eq!(
        second,
        TxnResponse { succeeded: false, revision: first.revision },
        "ModRevision(key, 0) must fail once the key exists"
    );
    assert_eq!(must_get(store, "lock").await.value, b"a", "the second creator must not overwrite");

    let current = || Compare::ModRevision("lock".into(), first.revision);
    let update = txn(store, guarded(current(), vec![put_op("lock", b"c")], vec![])).await;
    assert!(update.succeeded, "ModRevision(key, its mod_revision) must hold");
    let stale = txn(store, guarded(current(), vec![put_op("lock", b"d")], vec![])).await;
    assert!(!stale.succeeded, "ModRevision(key, an older mod_revision) must fail");

    write(store, vec![Op::Delete("lock".into())]).await;
    let recreate = txn(store, guarded(absent(), vec![put_op("lock", b"e")], vec![])).await;
    assert!(recreate.succeeded, "ModRevision(key, 0) must hold again after the key is deleted");
}

/// Many creators racing with `ModRevision(key, 0)`: exactly one wins, once per key.
pub async fn racing_creators_exactly_one_wins(store: &dyn Store) {
    const RACERS: usize = 32;
    for round in 0..4 {
        let key = format!("race/{round}");
        let before = revision(store).await;
        let racers = (0..RACERS)
            .map(|i| -> BoxFuture<'_, TxnResponse> {
                let (key, value) = (key.clone(), i.to_string().into_bytes());
                let create = guarded(Compare::ModRevision(key.clone(), 0), vec![Op::Put(key, value)], vec![]);
                Box::pin(txn(store, create))
            })
            .collect();
        let results = join_all(racers).await;
        let winners: Vec<usize> = (0..RACERS).filter(|&i| results[i].succeeded).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one racing creator must win, got {winners:?}");
        for resp in &results {
            assert_eq!(resp.revision, before + 1, "round {round}: only the winner writes: {results:?}");
        }
        let kv = must_get(store, &key).await;
        assert_eq!(kv.value, winners[0].to_string().into_bytes(), "round {round}: the winner's value is stored");
        assert_eq!(kv.version, 1, "round {round}: the key was written once");
    }
}

/// Concurrent read-modify-write loops guarded by `ModRevision` lose no increment.
pub async fn cas_counter_loses_no_updates(store: &dyn Store) {
    const WORKERS: usize = 8;
    const INCREMENTS: usize = 25;
    let before = put(store, "counter", b"0").await;
    let workers = (0..WORKERS)
        .map(|_| -> BoxFuture<'_, ()> {
            Box::pin(async move {
                for _ in 0..INCREMENTS {
                    while !increment(store, "counter").await {}
                }
            })
        })
        .collect();
    join_all(workers).await;
    let kv = must_get(store, "counter").await;
    let total = WORKERS * INCREMENTS;
    assert_eq!(kv.value, total.to_string().into_bytes(), "{WORKERS} workers × {INCREMENTS} CAS increments");
    assert_eq!(kv.version, total as i64 + 1, "one version per successful increment");
    assert_eq!(kv.mod_revision, before + total as i64, "failed CAS attempts must not take revisions");
}

/// `Compare::Value` holds only when the key exists with exactly that value.
pub async fn compare_value(store: &dyn Store) {
    put(store, "k", b"v1").await;
    let cas =
        |from: &[u8], to: &[u8]| guarded(Compare::Value("k".into(), from.to_vec()), vec![put_op("k", to)], vec![]);
    assert!(txn(store, cas(b"v1", b"v2")).await.succeeded, "Value(k, current value) must hold");
    assert_eq!(must_get(store, "k").await.value, b"v2");
    assert!(!txn(store, cas(b"v1", b"v3")).await.succeeded, "Value(k, old value) must fail");
    assert!(!txn(store, cas(b"v", b"v3")).await.succeeded, "Value compares whole values, not prefixes");
    assert_eq!(must_get(store, "k").await.value, b"v2", "failed compares write nothing");

    let absent = guarded(Compare::Value("absent".into(), Vec::new()), vec![put_op("absent", b"x")], vec![]);
    assert!(!txn(store, absent).await.succeeded, "an absent key has no value, not an empty one");
    assert_eq!(get(store, "absent").await, None);
    put(store, "empty", b"").await;
    let empty = guarded(Compare::Value("empty".into(), Vec::new()), vec![put_op("empty", b"x")], vec![]);
    assert!(txn(store, empty).await.succeeded, "Value(k, empty) must hold for a key holding an empty value");
}

/// Every compare of a transaction must hold for its success branch to run.
pub async fn all_compares_must_hold(store: &dyn Store) {
    put(store, "a", b"1").await;
    let b = put(store, "b", b"2").await;
    let both = |a: &[u8], b_rev: Revision| Txn {
        compare: vec![Compare::Value("a".into(), a.to_vec()), Compare::ModRevision("b".into(), b_rev)],
        success: vec![put_op("out", b"success")],
        failure: vec![put_op("out", b"failure")],
    };
    for (a, b_rev, succeeded) in [(&b"1"[..], b, true), (&b"1"[..], b + 1, false), (&b"x"[..], b, false)] {
        let resp = txn(store, both(a, b_rev)).await;
        assert_eq!(resp.succeeded, succeeded, "compares (a == {a:?}, b@{b_rev}); b is at {b}");
        let want: &[u8] = if succeeded { b"success" } else { b"failure" };
        assert_eq!(must_get(store, "out").await.value, want, "the branch chosen by the compares ran");
    }
}

/// When a compare fails, the failure branch is applied (as one revision) and the success branch
/// is not.
pub async fn failure_branch_applies_on_failed_compare(store: &dyn Store) {
    let before = put(store, "k", b"v").await;
    put(store, "doomed", b"d").await;
    let resp = txn(
        store,
        guarded(
            Compare::Value("k".into(), b"nope".to_vec()),
            vec![put_op("k", b"success"), put_op("success-only", b"s")],
            vec![put_op("k", b"failure"), put_op("failure-only", b"f"), Op::Delete("doomed".into())],
        ),
    )
    .await;
    assert_eq!(
        resp,
        TxnResponse { succeeded: false, revision: before + 2 },
        "a failed compare with failure ops reports succeeded = false and takes one revision"
    );
    assert_eq!(must_get(store, "k").await.value, b"failure", "the failure branch's put ran");
    assert_eq!(must_get(store, "failure-only").await.mod_revision, resp.revision);
    assert_eq!(get(store, "doomed").await, None, "the failure branch's delete ran");
    assert_eq!(get(store, "success-only").await, None, "the success branch must not run");
}

// === deletes ===

/// Deleting a key removes only it, as one revision.
pub async fn delete_key(store: &dyn Store) {
    put(store, "k", b"v").await;
    let other = put(store, "k2", b"v").await;
    let resp = write(store, vec![Op::Delete("k".into())]).await;
    assert_eq!(resp.revision, other + 1, "deleting a present key takes one revision");
    assert_eq!(get(store, "k").await, None, "deleted key must read as absent");
    assert_eq!(must_get(store, "k2").await.mod_revision, other, "other keys untouched");
}

/// Deleting absent keys (by key or by prefix) succeeds without taking a revision.
pub async fn delete_absent_key_keeps_revision(store: &dyn Store) {
    let rev = put(store, "present", b"v").await;
    let ops = [
        vec![Op::Delete("absent".into())],
        vec![Op::DeletePrefix("nothing/".into())],
        vec![Op::Delete("absent".into()), Op::DeletePrefix("nothing/".into())],
    ];
    for ops in ops {
        let resp = write(store, ops.clone()).await;
        assert_eq!(resp.revision, rev, "{ops:?} deletes nothing and must not take a revision");
    }
    assert_eq!(revision(store).await, rev);
}

/// `DeletePrefix` removes exactly the keys starting with the prefix, as one revision.
pub async fn delete_prefix_only_under_prefix(store: &dyn Store) {
    let keys = ["c/d/1", "d", "d/1", "d/2", "d/sub/3", "d0", "d\u{7f}", "e/1"];
    let ops = keys.iter().map(|k| put_op(k, b"v")).collect();
    let rev = write(store, ops).await.revision;
    let resp = write(store, vec![Op::DeletePrefix("d/".into())]).await;
    assert_eq!(resp.revision, rev + 1, "a prefix delete takes one revision");
    let left = range(store, all_keys()).await;
    assert_eq!(
        key_list(&left.kvs),
        ["c/d/1", "d", "d0", "d\u{7f}", "e/1"],
        "DeletePrefix(\"d/\") must remove d/1, d/2, d/sub/3 and nothing else"
    );
}

/// A key deleted and written again starts over: new `create_revision`, version 1.
pub async fn recreate_after_delete_restarts_version(store: &dyn Store) {
    put(store, "k", b"1").await;
    put(store, "k", b"2").await;
    write(store, vec![Op::Delete("k".into())]).await;
    let rev = put(store, "k", b"3").await;
    let kv = must_get(store, "k").await;
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (rev, rev, 1), "a recreated key starts a new life");
}

// === helpers ===

fn guarded(compare: Compare, success: Vec<Op>, failure: Vec<Op>) -> Txn {
    Txn { compare: vec![compare], success, failure }
}

fn put_op(key: &str, value: &[u8]) -> Op {
    Op::Put(key.to_owned(), value.to_vec())
}

fn all_keys() -> RangeRequest {
    RangeRequest { start: "\0".into(), end: Some(crate::prefix_end("")), ..RangeRequest::default() }
}

fn prefix_range(prefix: &str) -> RangeRequest {
    RangeRequest { start: prefix.into(), end: Some(crate::prefix_end(prefix)), ..RangeRequest::default() }
}

fn key_list(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

async fn txn(store: &dyn Store, txn: Txn) -> TxnResponse {
    store.txn(txn).await.unwrap_or_else(|e| panic!("txn failed: {e}"))
}

/// Runs `ops` unconditionally; such a transaction always takes its success branch.
async fn write(store: &dyn Store, ops: Vec<Op>) -> TxnResponse {
    let resp = txn(store, Txn { success: ops, ..Txn::default() }).await;
    assert!(resp.succeeded, "a transaction without compares must take its success branch");
    resp
}

async fn put(store: &dyn Store, key: &str, value: &[u8]) -> Revision {
    write(store, vec![put_op(key, value)]).await.revision
}

/// One CAS increment of a decimal counter; false when another writer got there first.
async fn increment(store: &dyn Store, key: &str) -> bool {
    let kv = must_get(store, key).await;
    let n: usize = std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{key} must hold a decimal number: {kv:?}"));
    let next = (n + 1).to_string().into_bytes();
    let cas = guarded(Compare::ModRevision(key.into(), kv.mod_revision), vec![put_op(key, &next)], vec![]);
    txn(store, cas).await.succeeded
}

async fn get(store: &dyn Store, key: &str) -> Option<KeyValue> {
    store.get(key).await.unwrap_or_else(|e| panic!("get {key:?}: {e}"))
}

async fn must_get(store: &dyn Store, key: &str) -> KeyValue {
    get(store, key).await.unwrap_or_else(|| panic!("{key:?} must exist"))
}

async fn range(store: &dyn Store, req: RangeRequest) -> RangeResponse {
    let what = format!("{req:?}");
    store.range(req).await.unwrap_or_else(|e| panic!("range {what}: {e}"))
}

async fn revision(store: &dyn Store) -> Revision {
    range(store, RangeRequest { start: PROBE_KEY.into(), ..RangeRequest::default() }).await.revision
}

/// Polls every future concurrently on the current task and returns their outputs in order.
///
/// The suite borrows the store, so it cannot `tokio::spawn`; the calls still race for real,
/// since each backend call proceeds on its own once started (SQLite's writes on the blocking
/// pool, etcd's requests on the network).
async fn join_all<T>(mut futures: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(|out| out.expect("poll_fn returns once every future is ready")).collect()
}
