//! Tests of the SQLite backend: the shared conformance suite, then what only an on-disk SQLite
//! file has (persistence across reopen, schema versions, file mode, WAL, watch-log compaction).
//! Crash safety (kill -9 mid-write) needs a child process and is covered at the binary level.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use tempfile::TempDir;
use tokio::time::timeout;

use super::{Durability, SCHEMA_VERSION, SqliteStore};
use crate::{Error, EventKind, Op, Revision, Store, StoreExt, Txn, WatchEvent, WatchStream};

mod conformance {
    crate::store_conformance_tests!(super::fixture);
}

async fn fixture() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    (open(dir.path()), dir)
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("store.db")
}

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(&db_path(dir), Durability::Process).expect("open store")
}

async fn put(store: &SqliteStore, key: &str, value: &[u8]) -> Revision {
    let txn = Txn { success: vec![Op::Put(key.into(), value.to_vec())], ..Txn::default() };
    store.txn(txn).await.expect("put").revision
}

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    timeout(Duration::from_secs(5), stream.recv())
        .await
        .expect("a watch event within 5 s")
        .expect("the stream is open")
        .expect("the watch has not failed")
}

fn meta(dir: &Path, name: &str) -> i64 {
    let conn = Connection::open(db_path(dir)).unwrap();
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0)).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn empty_store_starts_at_revision_zero() {
    let (store, _dir) = fixture().await;
    assert_eq!(store.revision(), 0);
    assert_eq!(put(&store, "k", b"v").await, 1, "the first write is revision 1");
    assert_eq!(store.revision(), 1);
}

#[tokio::test]
async fn reopen_keeps_data_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        put(&store, "k1", b"v1").await;
        put(&store, "k2", b"v2").await;
        let txn = Txn { success: vec![Op::Delete("k1".into())], ..Txn::default() };
        assert_eq!(store.txn(txn).await.unwrap().revision, 3);
    }
    let store = open(dir.path());
    assert_eq!(store.revision(), 3, "the revision survives a reopen");
    assert_eq!(store.get("k1").await.unwrap(), None);
    let kv = store.get("k2").await.unwrap().expect("k2 survives a reopen");
    assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version), (&b"v2"[..], 2, 2, 1));
    assert_eq!(put(&store, "k3", b"v3").await, 4, "revisions continue after a reopen");
}

#[tokio::test]
async fn reopen_keeps_watch_history() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        put(&store, "w/a", b"1").await;
        put(&store, "w/b", b"2").await;
    }
    let store = open(dir.path());
    let mut stream = store.watch("w/".into(), 1).await.unwrap();
    let first = next_event(&mut stream).await;
    let second = next_event(&mut stream).await;
    assert_eq!((first.kv.key.as_str(), first.kv.mod_revision), ("w/a", 1));
    assert_eq!((second.kv.key.as_str(), second.kv.mod_revision), ("w/b", 2));
}

#[test]
fn schema_version_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    assert_eq!(meta(dir.path(), "schema_version"), SCHEMA_VERSION);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let conn = Connection::open(db_path(dir.path())).unwrap();
    conn.execute("UPDATE meta SET value = 99 WHERE name = 'schema_version'", []).unwrap();
    drop(conn);
    match SqliteStore::open(&db_path(dir.path()), Durability::Process) {
        Err(Error::SchemaTooNew { found: 99, supported: SCHEMA_VERSION }) => {}
        other => panic!("expected SchemaTooNew {{ found: 99 }}, got {other:?}"),
    }
    assert_eq!(meta(dir.path(), "schema_version"), 99, "a refused open must not touch the file");
}

#[tokio::test]
async fn database_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    // A file left world-readable (say, by a restore) is tightened on open.
    drop(Connection::open(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = open(dir.path());
    put(&store, "secret", b"v").await;
    assert_eq!(mode(&path), 0o600, "the database holds secrets: owner-only");
    for suffix in ["-wal", "-shm"] {
        let side = dir.path().join(format!("store.db{suffix}"));
        assert!(side.exists(), "{suffix} file exists in WAL mode");
        assert_eq!(mode(&side), 0o600, "the {suffix} file holds the same data: owner-only");
    }
}

#[tokio::test]
async fn database_is_in_wal_mode() {
    let (store, dir) = fixture().await;
    put(&store, "k", b"v").await;
    let conn = Connection::open(db_path(dir.path())).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn power_loss_durability_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(&db_path(dir.path()), Durability::PowerLoss).unwrap();
        assert_eq!(put(&store, "k", b"v").await, 1);
        assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v");
    }
    let store = open(dir.path());
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v", "a PowerLoss store reopens as Process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with_retention(&db_path(dir.path()), Durability::Process, 10).unwrap();
    for i in 0..999 {
        put(&store, &format!("c/{}", i % 7), b"v").await;
    }
    // Compaction runs only on multiples of 1000 revisions: all history is still there.
    drop(store.watch(String::new(), 1).await.expect("revision 1 is not yet compacted"));
    assert_eq!(put(&store, "c/last", b"v").await, 1000);
    // Revision 1000 keeps the newest 10 revisions, 990..=1000.
    for requested in [1, 5, 989] {
        match store.watch(String::new(), requested).await {
            Err(Error::Compacted { requested: r, oldest: 990 }) if r == requested => {}
            other => panic!("watch from {requested}: expected Compacted {{ oldest: 990 }}, got {other:?}"),
        }
    }
    let mut stream = store.watch("c/".into(), 990).await.expect("990 is retained");
    for rev in 990..=1000 {
        assert_eq!(next_event(&mut stream).await.kv.mod_revision, rev);
    }
    let mut live = store.watch("c/".into(), 0).await.expect("a watch from now ignores compaction");
    assert_eq!(put(&store, "c/next", b"v").await, 1001);
    assert_eq!(next_event(&mut live).await.kv.key, "c/next");
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, 1001, "the replaying watch follows live writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_that_falls_behind_catches_up_from_the_log() {
    // More unread batches than the live channel holds (1024) forces the watch back to the log.
    const WRITES: i64 = 1500;
    let (store, _dir) = fixture().await;
    let mut stream = store.watch("w/".into(), 0).await.unwrap();
    for i in 0..WRITES {
        put(&store, &format!("w/{i}"), b"v").await;
    }
    for rev in 1..=WRITES {
        let ev = next_event(&mut stream).await;
        assert_eq!((ev.kind, ev.kv.mod_revision), (EventKind::Put, rev), "no gap or repeat after lagging");
    }
}

#[tokio::test]
async fn watch_ends_when_store_is_dropped() {
    let (store, _dir) = fixture().await;
    let mut stream = store.watch("w/".into(), 0).await.unwrap();
    drop(store);
    let end = timeout(Duration::from_secs(5), stream.recv()).await;
    assert!(matches!(end, Ok(None)), "the stream must end once the store is dropped, got {end:?}");
}

#[tokio::test]
async fn leased_keys_of_a_process_that_is_gone_are_deleted_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let lease = store.grant_lease(60).await.unwrap();
        let op = Op::PutLeased("node/a".into(), b"alive".to_vec(), lease);
        store.txn(Txn { success: vec![op], ..Txn::default() }).await.unwrap();
        put(&store, "kept", b"v").await;
    }
    let store = open(dir.path());
    assert_eq!(store.get("node/a").await.unwrap(), None, "the lease died with its process");
    assert!(store.get("kept").await.unwrap().is_some(), "keys without a lease stay");
    // The next open finds nothing more to delete.
    let revision = store.revision();
    drop(store);
    assert_eq!(open(dir.path()).revision(), revision);
}
