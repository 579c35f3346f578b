//! Conformance behaviours of reads: range ordering, limits and counts, single-key ranges,
//! `list_prefix` pagination, and the transaction size limits.

use super::{all_keys, get, key_list, must_get, prefix_range, put, put_op, range, revision, write};
use crate::{Compare, Error, MAX_TXN_BYTES, MAX_TXN_OPS, Op, RangeRequest, Store, StoreExt, Txn};

// === ranges ===

/// Ranges return keys in byte order, whatever order they were written in.
pub async fn range_is_ordered(store: &dyn Store) {
    for key in ["m", "a", "z", "b/2", "Z", "b/1", "b", "ab", "b-"] {
        put(store, key, key.as_bytes()).await;
    }
    let resp = range(store, all_keys()).await;
    assert_eq!(
        key_list(&resp.kvs),
        ["Z", "a", "ab", "b", "b-", "b/1", "b/2", "m", "z"],
        "range must be in byte order (binary, case-sensitive)"
    );
    assert_eq!(resp.count, 9);
    for kv in &resp.kvs {
        assert_eq!(kv.value, kv.key.as_bytes(), "each key carries its own value");
    }
}

/// `limit` cuts the answer short and sets `more`; `count` is the number returned (only
/// `count_only` counts the whole range).
pub async fn range_limit_and_more(store: &dyn Store) {
    let ops = (0..5).map(|i| put_op(&format!("l/{i}"), b"v")).collect();
    write(store, ops).await;
    let req = |limit| RangeRequest { limit, ..prefix_range("l/") };
    let resp = range(store, req(2)).await;
    assert_eq!(key_list(&resp.kvs), ["l/0", "l/1"], "limit 2 returns the first two keys");
    assert!(resp.more, "limit 2 of 5 must set more");
    assert_eq!(resp.count, 2, "count is the number returned");
    for (limit, returned) in [(5, 5), (6, 5), (0, 5)] {
        let resp = range(store, req(limit)).await;
        assert_eq!(resp.kvs.len(), returned, "limit {limit} of 5");
        assert!(!resp.more, "limit {limit} of 5 must not set more");
        assert_eq!(resp.count, 5, "limit {limit} of 5: count");
    }
}

/// `count_only` returns the count and no key-values.
pub async fn range_count_only(store: &dyn Store) {
    let ops = (0..5).map(|i| put_op(&format!("c/{i}"), b"v")).chain([put_op("c0", b"v")]).collect();
    write(store, ops).await;
    let resp = range(store, RangeRequest { count_only: true, ..prefix_range("c/") }).await;
    assert!(resp.kvs.is_empty(), "count_only must return no key-values, got {resp:?}");
    assert_eq!(resp.count, 5, "count_only counts the keys in the range");
    let count = store.count_prefix("c/").await.unwrap_or_else(|e| panic!("count_prefix: {e}"));
    assert_eq!(count, 5, "count_prefix");
}

/// A range's `end` is exclusive and its `start` inclusive.
pub async fn range_end_is_exclusive(store: &dyn Store) {
    write(store, ["a", "b", "b0", "c", "d"].iter().map(|k| put_op(k, b"v")).collect()).await;
    let req = RangeRequest { start: "b".into(), end: Some("d".into()), ..RangeRequest::default() };
    let resp = range(store, req).await;
    assert_eq!(key_list(&resp.kvs), ["b", "b0", "c"], "range [b, d) includes b and excludes d");
}

/// A single-key range (and a single-key delete) touches that key only, never longer keys
/// sharing its prefix.
pub async fn single_key_range_matches_exact_key(store: &dyn Store) {
    write(store, ["j", "k/x", "k1", "kk"].iter().map(|k| put_op(k, b"v")).collect()).await;
    assert_eq!(get(store, "k").await, None, "get(k) must not match k/x, k1 or kk");
    put(store, "k", b"exact").await;
    let resp = range(store, RangeRequest { start: "k".into(), ..RangeRequest::default() }).await;
    assert_eq!(key_list(&resp.kvs), ["k"], "a single-key range returns only that key");
    assert_eq!(resp.count, 1, "a single-key range counts only that key");
    write(store, vec![Op::Delete("k".into())]).await;
    let left = range(store, all_keys()).await;
    assert_eq!(key_list(&left.kvs), ["j", "k/x", "k1", "kk"], "Delete(k) removes only k");
}

/// Paging through `list_prefix` with `after` = the last key seen visits every key under the
/// prefix exactly once, in order.
pub async fn list_prefix_pages_walk_every_key_once(store: &dyn Store) {
    let mut want: Vec<String> = (0..20).map(|i| format!("p/{i:02}")).collect();
    want.extend(["p/a", "p/a-", "p/a/b", "p/a0"].map(String::from));
    let outside = ["o/x", "p", "p0", "q/x"];
    let ops = want.iter().map(String::as_str).chain(outside).map(|k| put_op(k, b"v")).collect();
    write(store, ops).await;
    want.sort();

    let (mut seen, mut after, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = store
            .list_prefix("p/", after.as_deref(), 5)
            .await
            .unwrap_or_else(|e| panic!("list_prefix after {after:?}: {e}"));
        pages += 1;
        assert!(page.kvs.len() <= 5, "a page holds at most `limit` keys");
        assert!(pages <= want.len(), "pagination does not terminate: {seen:?}");
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        after = Some(page.kvs.last().expect("a page with more set is not empty").key.clone());
    }
    assert_eq!(seen, want, "paging with `after` must visit every key under p/ once, in order");
    assert_eq!(pages, want.len().div_ceil(5), "no empty trailing page when `more` is exact");
    let all = store.list_prefix("p/", None, 0).await.unwrap_or_else(|e| panic!("list_prefix: {e}"));
    assert_eq!(key_list(&all.kvs), want, "limit 0 lists every key under the prefix");
}

/// `list_prefix` never strays outside its prefix, whatever `after` is.
pub async fn list_prefix_after_stays_under_prefix(store: &dyn Store) {
    let keys = ["a", "o/x", "p/1", "p/2", "q/x"];
    write(store, keys.iter().map(|k| put_op(k, b"v")).collect()).await;
    for (after, want) in [("a", &["p/1", "p/2"][..]), ("p/", &["p/1", "p/2"]), ("p/1", &["p/2"]), ("q", &[])] {
        let page = store.list_prefix("p/", Some(after), 0).await;
        let page = page.unwrap_or_else(|e| panic!("list_prefix after {after:?}: {e}"));
        assert_eq!(key_list(&page.kvs), want, "list_prefix(\"p/\", after {after:?}) lists only keys under p/");
    }
}

/// A 1 MiB value is stored and read back byte for byte.
pub async fn large_value_round_trips(store: &dyn Store) {
    let value: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    put(store, "big", &value).await;
    assert!(must_get(store, "big").await.value == value, "a 1 MiB value must round-trip unchanged");
}

// === limits ===

/// `Txn::check_limits` enforces etcd's defaults (128 operations per list, 1.5 MiB), and the
/// store refuses larger transactions with [`Error::TooLarge`] without writing anything.
pub async fn oversized_txn_is_refused(store: &dyn Store) {
    let puts = |n: usize| (0..n).map(|i| put_op(&format!("limit/{i:03}"), b"v")).collect::<Vec<_>>();
    let compares = |n: usize| (0..n).map(|i| Compare::ModRevision(format!("limit/{i:03}"), 0)).collect();
    let huge = |extra: usize| vec![put_op("k", &vec![0; MAX_TXN_BYTES - 1 + extra])];
    let too_large = [
        ("129 success ops", Txn { success: puts(MAX_TXN_OPS + 1), ..Txn::default() }),
        ("129 failure ops", Txn { failure: puts(MAX_TXN_OPS + 1), ..Txn::default() }),
        ("129 compares", Txn { compare: compares(MAX_TXN_OPS + 1), ..Txn::default() }),
        ("1.5 MiB + 1 byte", Txn { success: huge(1), ..Txn::default() }),
    ];
    assert!(Txn { success: puts(MAX_TXN_OPS), ..Txn::default() }.check_limits().is_ok(), "128 ops are allowed");
    assert!(Txn { success: huge(0), ..Txn::default() }.check_limits().is_ok(), "exactly 1.5 MiB is allowed");
    let before = revision(store).await;
    for (what, txn) in too_large {
        assert!(matches!(txn.check_limits(), Err(Error::TooLarge(_))), "check_limits must refuse {what}");
        match store.txn(txn).await {
            Err(Error::TooLarge(_)) => {}
            other => panic!("the store must refuse {what} with Error::TooLarge, got {other:?}"),
        }
    }
    assert_eq!(revision(store).await, before, "refused transactions write nothing");
    assert_eq!(store.count_prefix("limit/").await.ok(), Some(0), "refused transactions write nothing");
    let resp = write(store, puts(MAX_TXN_OPS)).await;
    assert_eq!(resp.revision, before + 1, "a 128-op transaction is accepted as one revision");
}
