//! Conformance behaviours of watches: where a watch starts, prefix filtering, delete events,
//! and order without gaps or repeats under concurrent writers.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::timeout;

use super::{join_all, put, put_op, revision, write};
use crate::{BoxFuture, EventKind, KeyValue, Op, Revision, Store, WatchEvent, WatchStream};

/// How long a watch may take to deliver an event the suite knows is coming.
const WATCH_TIMEOUT: Duration = Duration::from_secs(5);

// === watches ===

/// A watch from revision 0 starts after the current revision: it sees new writes only.
pub async fn watch_from_zero_sees_only_new_events(store: &dyn Store) {
    put(store, "w/old", b"old").await;
    let mut stream = watch(store, "w/", 0).await;
    let rev = put(store, "w/new", b"new").await;
    let ev = next_event(&mut stream, "the put made after the watch started").await;
    let want =
        KeyValue { key: "w/new".into(), value: b"new".to_vec(), create_revision: rev, mod_revision: rev, version: 1 };
    assert_eq!(
        ev,
        WatchEvent { kind: EventKind::Put, kv: want },
        "a watch from 0 must deliver only writes made after it started (not w/old)"
    );
}

/// A watch from a past revision replays history from that revision (inclusive), then follows
/// live writes.
pub async fn watch_from_past_revision_replays_then_follows(store: &dyn Store) {
    let r1 = put(store, "h/a", b"1").await;
    put(store, "other/x", b"x").await;
    let r3 = put(store, "h/b", b"2").await;
    let r4 = put(store, "h/a", b"3").await;
    let mut stream = watch(store, "h/", r1 + 1).await;
    let ev = next_event(&mut stream, "replay of h/b").await;
    assert_event(&ev, EventKind::Put, "h/b", r3);
    let ev = next_event(&mut stream, "replay of the overwrite of h/a").await;
    assert_event(&ev, EventKind::Put, "h/a", r4);
    assert_eq!(
        (ev.kv.value.as_slice(), ev.kv.create_revision, ev.kv.version),
        (b"3".as_slice(), r1, 2),
        "a replayed event carries the key-value as written at that revision"
    );
    let r5 = put(store, "h/c", b"4").await;
    assert_event(&next_event(&mut stream, "live h/c after the replay").await, EventKind::Put, "h/c", r5);

    let mut from_start = watch(store, "h/", r1).await;
    let ev = next_event(&mut from_start, "replay from the first revision").await;
    assert_event(&ev, EventKind::Put, "h/a", r1);
    assert_eq!(ev.kv.value, b"1", "the from-revision is inclusive and replays the old value");
}

/// A watch sees only keys under its prefix, including from transactions that also write
/// elsewhere.
pub async fn watch_filters_by_prefix(store: &dyn Store) {
    let mut stream = watch(store, "w/", 0).await;
    for key in ["w", "wx", "v/w/x", "x/w/"] {
        put(store, key, b"v").await;
    }
    let mixed = write(store, vec![put_op("z/1", b"v"), put_op("w/1", b"v")]).await.revision;
    let sentinel = put(store, "w/sentinel", b"v").await;
    assert_event(&next_event(&mut stream, "w/1").await, EventKind::Put, "w/1", mixed);
    let ev = next_event(&mut stream, "w/sentinel").await;
    assert_event(&ev, EventKind::Put, "w/sentinel", sentinel);
}

/// Deletes (by key and by prefix) are reported as delete events at the deleting revision;
/// deletes of absent keys report nothing.
pub async fn watch_reports_deletes(store: &dyn Store) {
    write(store, vec![put_op("w/a", b"1"), put_op("w/b", b"2"), put_op("keep/x", b"3")]).await;
    let mut stream = watch(store, "w/", 0).await;
    let deleted = write(store, vec![Op::Delete("w/a".into())]).await.revision;
    let ev = next_event(&mut stream, "delete of w/a").await;
    assert_event(&ev, EventKind::Delete, "w/a", deleted);
    assert!(ev.kv.value.is_empty(), "a delete event carries no value: {ev:?}");
    write(store, vec![Op::Delete("w/absent".into())]).await;
    let swept = write(store, vec![Op::DeletePrefix("w/".into())]).await.revision;
    assert_event(&next_event(&mut stream, "prefix delete of w/b").await, EventKind::Delete, "w/b", swept);
    let again = put(store, "w/a", b"4").await;
    let ev = next_event(&mut stream, "re-creation of w/a").await;
    assert_event(&ev, EventKind::Put, "w/a", again);
    assert_eq!((ev.kv.create_revision, ev.kv.version), (again, 1), "a re-created key starts over");
}

/// A transaction writing several watched keys yields one event per key, at one revision, in
/// the order of its operations.
pub async fn watch_multi_key_txn_shares_revision(store: &dyn Store) {
    let mut stream = watch(store, "w/", 0).await;
    let ops = vec![put_op("w/2", b"b"), put_op("elsewhere", b"x"), put_op("w/1", b"a")];
    let rev = write(store, ops).await.revision;
    assert_event(&next_event(&mut stream, "w/2").await, EventKind::Put, "w/2", rev);
    assert_event(&next_event(&mut stream, "w/1").await, EventKind::Put, "w/1", rev);
}

/// Under a burst of concurrent writers, a live watch and a watch opened mid-burst from a past
/// revision both see every write once, in revision order, with no gap.
pub async fn watch_burst_arrives_in_order_without_gaps(store: &dyn Store) {
    const WRITERS: usize = 8;
    const WRITES: usize = 500;
    let start = revision(store).await;
    let mut live = watch(store, "burst/", 0).await;
    let writers = (0..WRITERS)
        .map(|w| -> BoxFuture<'_, ()> {
            Box::pin(async move {
                for i in (w..WRITES).step_by(WRITERS) {
                    let key = format!("burst/{i:03}");
                    put(store, &key, key.as_bytes()).await;
                }
            })
        })
        .collect();
    // Opened while writes are landing, so it must hand over from history to live events.
    let late = async {
        let reached = async {
            while revision(store).await < start + 100 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(WATCH_TIMEOUT, reached).await.expect("the burst reached 100 writes within 5 s");
        watch(store, "burst/", start + 1).await
    };
    let (_, mut late) = tokio::join!(join_all(writers), late);
    expect_burst(&mut live, start, WRITES, "live watch").await;
    expect_burst(&mut late, start, WRITES, "watch opened mid-burst").await;
}

// === helpers ===

async fn expect_burst(stream: &mut WatchStream, start: Revision, writes: usize, name: &str) {
    let mut seen = BTreeSet::new();
    for i in 1..=writes as i64 {
        let ev = next_event(stream, &format!("{name}: event {i} of {writes}")).await;
        assert_eq!(ev.kv.mod_revision, start + i, "{name}: events must come in revision order, no gap or repeat");
        assert_eq!(ev.kind, EventKind::Put, "{name}: {ev:?}");
        assert_eq!(ev.kv.value, ev.kv.key.as_bytes(), "{name}: event carries its write's value");
        assert!(seen.insert(ev.kv.key.clone()), "{name}: {} reported twice", ev.kv.key);
    }
}

async fn watch(store: &dyn Store, prefix: &str, from: Revision) -> WatchStream {
    let stream = store.watch(prefix.to_owned(), from).await;
    stream.unwrap_or_else(|e| panic!("watch {prefix:?} from {from}: {e}"))
}

async fn next_event(stream: &mut WatchStream, waiting_for: &str) -> WatchEvent {
    match timeout(WATCH_TIMEOUT, stream.recv()).await {
        Err(_) => panic!("no watch event within {WATCH_TIMEOUT:?} while waiting for {waiting_for}"),
        Ok(None) => panic!("the watch stream ended while waiting for {waiting_for}"),
        Ok(Some(Err(e))) => panic!("the watch failed while waiting for {waiting_for}: {e}"),
        Ok(Some(Ok(ev))) => ev,
    }
}

fn assert_event(ev: &WatchEvent, kind: EventKind, key: &str, revision: Revision) {
    assert_eq!(
        (ev.kind, ev.kv.key.as_str(), ev.kv.mod_revision),
        (kind, key, revision),
        "expected a {kind:?} of {key} at revision {revision}, got {ev:?}"
    );
}
