//! The embedded backend: one SQLite database (WAL mode) in the data directory.
//!
//! Writes go through one connection, each [`Txn`] as one SQLite transaction that bumps the
//! revision once, so after a crash at any moment the file holds every acknowledged write and none
//! that is half done. Reads use a small pool of their own connections, each read one SQLite read
//! transaction, and see the last committed state. Nothing is mirrored in memory beyond SQLite's
//! page caches, bounded per connection: 10,000 services are about 100,000 keys and 20 MB of
//! values, which a mirror kept twice over in RSS. A `log` table keeps recent changes so that
//! watches can start from a past revision; it is trimmed to the newest `retain` revisions.
//!
//! Leases live in this process's memory (the embedded store has one process); which keys hold
//! one is recorded in the file (`lease_key`), so that the keys of a process that died are
//! deleted when the store is next opened, as etcd deletes them when their lease runs out. A
//! thread started with the first lease deletes the keys of leases nobody renewed.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc};

use crate::{
    BoxFuture, Compare, Error, EventKind, KeyValue, LeaseId, Op, RangeRequest, RangeResponse, Revision, Store, Txn,
    TxnResponse, WatchEvent, WatchStream,
};

/// The schema version this build writes. Older files are migrated forward on open; newer ones
/// are refused with [`Error::SchemaTooNew`].
pub const SCHEMA_VERSION: i64 = 2;

/// The page cache of each reading connection, in KiB. A point read touches a handful of pages
/// and the file stays in the OS's cache: a small cache costs a `pread` now and then, a large one
/// costs RSS per connection.
const READER_CACHE_KIB: u32 = 512;

/// The writing connection's page cache, in KiB (SQLite's default is 2,000). A write touches
/// the few interior pages of two tables' B-trees and a leaf or two of each: at 10,000 services
/// (about 20 MB of file) a quarter of the default holds them, and the rest was RSS.
const WRITER_CACHE_KIB: u32 = 512;

/// How many revisions of history are kept for watches by default.
const DEFAULT_RETAIN: i64 = 100_000;

/// How hard a commit tries to survive a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Survives the process being killed at any moment (SQLite `synchronous=NORMAL` in WAL mode).
    #[default]
    Process,
    /// Also survives power loss: every commit is flushed to disk (`synchronous=FULL`).
    PowerLoss,
}

/// The SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: std::path::PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    revision: AtomicI64,
    events: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    retain: i64,
    /// Live leases: when each runs out, and its TTL.
    leases: Mutex<HashMap<LeaseId, (Instant, Duration)>>,
    /// The next lease ID (seeded from the clock, so IDs of earlier runs are not given again).
    next_lease: AtomicI64,
    /// Whether any key may hold a lease (a plain put then detaches it).
    leased_keys: AtomicBool,
    /// Whether the thread that ends expired leases runs.
    reaper: AtomicBool,
}

/// How often expired leases are looked for.
const REAP_EVERY: Duration = Duration::from_millis(100);

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, migrating an older schema.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, Error> {
        Self::open_with_retention(path, durability, DEFAULT_RETAIN)
    }

    /// Like [`SqliteStore::open`], keeping `retain` revisions of watch history.
    pub fn open_with_retention(path: &Path, durability: Durability, retain: i64) -> Result<Self, Error> {
        let writer = Connection::open(path).map_err(backend)?;
        // The file may hold secrets (certificates, credentials): only its owner may read it.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(backend)?;
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000; \
                 PRAGMA cache_size=-{WRITER_CACHE_KIB};"
            ))
            .map_err(backend)?;
        migrate(&writer)?;
        let revision = read_meta(&writer, "revision")?;
        let leftover: Vec<String> = writer
            .prepare("SELECT key FROM lease_key")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(backend)?;
        let (events, _) = broadcast::channel(1024);
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros());
        let store = Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                revision: AtomicI64::new(revision),
                events,
                retain: retain.max(1),
                leases: Mutex::new(HashMap::new()),
                next_lease: AtomicI64::new(i64::try_from(seed).unwrap_or(1) & 0x7fff_ffff_ffff),
                leased_keys: AtomicBool::new(!leftover.is_empty()),
                reaper: AtomicBool::new(false),
            }),
        };
        // The process that held these leases is gone, so are its leases: delete their keys.
        if !leftover.is_empty() {
            let txn = Txn { success: leftover.into_iter().map(Op::Delete).collect(), ..Txn::default() };
            store.inner.commit(&txn)?;
        }
        Ok(store)
    }

    /// The latest committed revision.
    pub fn revision(&self) -> Revision {
        self.inner.revision.load(Ordering::Acquire)
    }
}

impl Store for SqliteStore {
    fn range(&self, req: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, Error>> {
        // Reads run inline: they touch SQLite's page cache (or the OS's) and take microseconds,
        // far less than a hop to the blocking pool would cost.
        Box::pin(std::future::ready(self.inner.with_reader(|conn| range(conn, &req))))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse, Error>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            txn.check_limits()?;
            tokio::task::spawn_blocking(move || inner.commit(&txn))
                .await
                .map_err(|e| Error::Backend(format!("writer task: {e}")))?
        })
    }

    fn watch(&self, prefix: String, from_revision: Revision) -> BoxFuture<'_, Result<WatchStream, Error>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            // Subscribe before reading history so that nothing committed in between is missed.
            let live = inner.events.subscribe();
            let start = if from_revision <= 0 { inner.revision.load(Ordering::Acquire) + 1 } else { from_revision };
            let oldest = inner.with_reader(|conn| read_meta(conn, "compacted"))? + 1;
            if start < oldest {
                return Err(Error::Compacted { requested: start, oldest });
            }
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(run_watch(Arc::downgrade(&inner), prefix, start, live, tx));
            Ok(rx)
        })
    }

    fn grant_lease(&self, ttl_seconds: i64) -> BoxFuture<'_, Result<LeaseId, Error>> {
        let ttl = Duration::from_secs(ttl_seconds.max(1) as u64);
        let id = self.inner.next_lease.fetch_add(1, Ordering::Relaxed);
        self.inner.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (Instant::now() + ttl, ttl));
        if !self.inner.reaper.swap(true, Ordering::AcqRel) {
            let inner = Arc::downgrade(&self.inner);
            std::thread::Builder::new()
                .name("store-leases".into())
                .spawn(move || reap(&inner))
                .map_err(|e| Error::Backend(format!("starting the lease thread: {e}")))
                .map(drop)
                .unwrap_or_else(|e| tracing::warn!(error = %e, "leases will not expire"));
        }
        Box::pin(std::future::ready(Ok(id)))
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<bool, Error>> {
        let mut leases = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let alive = match leases.get_mut(&lease) {
            Some((deadline, ttl)) if *deadline > now => {
                *deadline = now + *ttl;
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(Ok(alive)))
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), Error>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.forget_leases(|leases| leases.remove(&lease).map(|_| lease).into_iter().collect());
            tokio::task::spawn_blocking(move || inner.end_leases(&[lease]))
                .await
                .map_err(|e| Error::Backend(format!("writer task: {e}")))?
        })
    }
}

/// Ends the leases nobody renewed in time, until the store is dropped.
fn reap(inner: &Weak<Inner>) {
    loop {
        std::thread::sleep(REAP_EVERY);
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let expired = inner.forget_leases(|leases| {
            let expired: Vec<LeaseId> = leases.iter().filter(|(_, (at, _))| *at <= now).map(|(id, _)| *id).collect();
            for id in &expired {
                leases.remove(id);
            }
            expired
        });
        if !expired.is_empty()
            && let Err(e) = inner.end_leases(&expired)
        {
            tracing::warn!(error = %e, "cannot delete the keys of expired leases");
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish()
    }
}

// === impl Inner ===

impl Inner {
    fn lease_alive(&self, lease: LeaseId) -> bool {
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.get(&lease).is_some_and(|(deadline, _)| *deadline > Instant::now())
    }

    fn with_reader<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, Error>) -> Result<T, Error> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.path).map_err(backend)?;
                conn.execute_batch(&format!("PRAGMA busy_timeout=5000; PRAGMA cache_size=-{READER_CACHE_KIB};"))
                    .map_err(backend)?;
                conn
            }
        };
        let out = f(&mut conn);
        self.readers.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        out
    }

    /// Takes leases out of the live ones, under the writer's lock: a commit checks its leases
    /// under that lock too, so every key written with a lease taken out here is in `lease_key`
    /// by the time [`Inner::end_leases`] reads it.
    fn forget_leases(
        &self,
        f: impl FnOnce(&mut HashMap<LeaseId, (Instant, Duration)>) -> Vec<LeaseId>,
    ) -> Vec<LeaseId> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut self.leases.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Deletes the keys of `leases` (which are no longer live), in one revision.
    fn end_leases(&self, leases: &[LeaseId]) -> Result<(), Error> {
        let keys: Vec<String> = {
            let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let mut keys = Vec::new();
            for lease in leases {
                let found: Vec<String> = conn
                    .prepare_cached("SELECT key FROM lease_key WHERE lease = ?1")
                    .and_then(|mut s| s.query_map(params![lease], |r| r.get(0))?.collect())
                    .map_err(backend)?;
                keys.extend(found);
            }
            keys
        };
        if keys.is_empty() {
            return Ok(());
        }
        // Deleted only if still held by one of these leases: a key put again since keeps its
        // new write (the delete of a key the row no longer names is left out below).
        self.commit_with(&Txn { success: keys.into_iter().map(Op::Delete).collect(), ..Txn::default() }, Some(leases))
            .map(drop)
    }

    fn commit(&self, txn: &Txn) -> Result<TxnResponse, Error> {
        self.commit_with(txn, None)
    }

    /// Commits `txn`; with `only_leases`, its deletes apply only to keys still held by one of
    /// those leases (checked under the writer's lock).
    fn commit_with(&self, txn: &Txn, only_leases: Option<&[LeaseId]>) -> Result<TxnResponse, Error> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
        let current = read_meta(&tx, "revision")?;
        let mut succeeded = true;
        for cmp in &txn.compare {
            if !compare_holds(&tx, cmp)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &txn.success } else { &txn.failure };
        if ops.is_empty() {
            return Ok(TxnResponse { succeeded, revision: current });
        }
        let revision = current + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::PutLeased(_, _, lease) if !self.lease_alive(*lease) => return Err(Error::LeaseNotFound(*lease)),
                Op::PutLeased(..) => self.leased_keys.store(true, Ordering::Release),
                Op::Delete(key) if only_leases.is_some() => {
                    let held: Option<LeaseId> = tx
                        .prepare_cached("SELECT lease FROM lease_key WHERE key = ?1")
                        .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
                        .map_err(backend)?;
                    if !held.is_some_and(|l| only_leases.is_some_and(|ls| ls.contains(&l))) {
                        continue;
                    }
                }
                _ => {}
            }
            apply(&tx, op, revision, &mut events, self.leased_keys.load(Ordering::Acquire))?;
        }
        if events.is_empty() {
            // Only deletes of absent keys: etcd does not bump the revision for those either.
            return Ok(TxnResponse { succeeded, revision: current });
        }
        write_meta(&tx, "revision", revision)?;
        {
            let mut log = tx
                .prepare_cached("INSERT INTO log (rev, seq, key, kind, value, create_rev, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .map_err(backend)?;
            for (seq, ev) in events.iter().enumerate() {
                let kind = match ev.kind {
                    EventKind::Put => 0,
                    EventKind::Delete => 1,
                };
                log.execute(params![
                    revision,
                    seq as i64,
                    ev.kv.key,
                    kind,
                    ev.kv.value,
                    ev.kv.create_revision,
                    ev.kv.version
                ])
                .map_err(backend)?;
            }
        }
        if revision % 1000 == 0 && revision > self.retain {
            let keep_from = revision - self.retain;
            tx.execute("DELETE FROM log WHERE rev < ?1", params![keep_from]).map_err(backend)?;
            write_meta(&tx, "compacted", keep_from - 1)?;
        }
        tx.commit().map_err(backend)?;
        self.revision.store(revision, Ordering::Release);
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(Arc::new(events));
        Ok(TxnResponse { succeeded, revision })
    }
}

/// Feeds one watch stream. It holds the store only weakly (upgrading just to read the log): a
/// strong reference would keep `Inner`, and with it the broadcast sender, alive forever, so the
/// stream would never end when the store is dropped, as [`WatchStream`] promises, and every
/// watch would leak its task and the database connections.
async fn run_watch(
    inner: Weak<Inner>,
    prefix: String,
    start: Revision,
    mut live: broadcast::Receiver<Arc<Vec<WatchEvent>>>,
    tx: mpsc::Sender<Result<WatchEvent, Error>>,
) {
    let mut next = start;
    loop {
        // Catch up from the log, then follow live events.
        let Some(store) = inner.upgrade() else { return };
        let history = store.with_reader(|conn| read_log(conn, &prefix, next));
        drop(store);
        match history {
            Ok(events) => {
                for ev in events {
                    next = ev.kv.mod_revision + 1;
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
        loop {
            // A watcher that went away ends its task now, not at the next matching event.
            let received = tokio::select! {
                received = live.recv() => received,
                () = tx.closed() => return,
            };
            match received {
                Ok(batch) => {
                    for ev in batch.iter() {
                        if ev.kv.mod_revision < next || !ev.kv.key.starts_with(&prefix) {
                            continue;
                        }
                        if tx.send(Ok(ev.clone())).await.is_err() {
                            return;
                        }
                    }
                    if let Some(last) = batch.last() {
                        next = next.max(last.kv.mod_revision + 1);
                    }
                }
                // Fell behind the live channel: go back to the log.
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn migrate(conn: &Connection) -> Result<(), Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    )
    .map_err(backend)?;
    let found: i64 = conn
        .query_row("SELECT value FROM meta WHERE name = 'schema_version'", [], |r| r.get(0))
        .optional()
        .map_err(backend)?
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew { found, supported: SCHEMA_VERSION });
    }
    // Each step takes the schema from version N to N + 1; step 0 creates it.
    const STEPS: [&str; 2] = [
        "
        CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
                         mod_rev INTEGER NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE log (rev INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, kind INTEGER NOT NULL,
                          value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
                          PRIMARY KEY (rev, seq)) WITHOUT ROWID;
        INSERT INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
    ",
        // Which keys hold a lease (leases themselves live in memory).
        "
        CREATE TABLE lease_key (key TEXT PRIMARY KEY, lease INTEGER NOT NULL) WITHOUT ROWID;
        CREATE INDEX lease_key_by_lease ON lease_key (lease);
    ",
    ];
    for (version, step) in STEPS.iter().enumerate().skip(found as usize) {
        let sql = format!(
            "BEGIN IMMEDIATE; {step}
             INSERT INTO meta (name, value) VALUES ('schema_version', {next})
               ON CONFLICT(name) DO UPDATE SET value = excluded.value;
             COMMIT;",
            next = version + 1
        );
        conn.execute_batch(&sql).map_err(backend)?;
    }
    Ok(())
}

/// One range read, as one statement (so one read transaction): the revision it reports is that
/// of the data read. The join yields one row of NULLs when the range is empty.
fn range(conn: &Connection, req: &RangeRequest) -> Result<RangeResponse, Error> {
    if req.count_only {
        let end = req.end.clone().unwrap_or_else(|| format!("{}\0", req.start));
        let (revision, count): (Revision, i64) = conn
            .prepare_cached(
                "SELECT value, (SELECT count(*) FROM kv WHERE key >= ?1 AND key < ?2) FROM meta WHERE name = 'revision'",
            )
            .and_then(|mut s| s.query_row(params![req.start, end], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(backend)?;
        return Ok(RangeResponse { kvs: Vec::new(), count: count as usize, more: false, revision });
    }
    // One more than asked for says whether there is more. The limit is kept out of the SQL:
    // SQLite re-prepares a statement whose `LIMIT ?` or range bounds change the plan (twice the
    // cost of a read), so a single key is an equality and a range stops stepping early.
    let limit = if req.limit == 0 { usize::MAX } else { req.limit + 1 };
    let mut stmt;
    let mut rows = if req.end.is_none() {
        stmt = conn
            .prepare_cached(
                "SELECT m.value, kv.key, kv.value, kv.create_rev, kv.mod_rev, kv.version
                 FROM meta AS m LEFT JOIN kv ON kv.key = ?1 WHERE m.name = 'revision'",
            )
            .map_err(backend)?;
        stmt.query(params![req.start]).map_err(backend)?
    } else {
        stmt = conn
            .prepare_cached(
                "SELECT m.value, kv.key, kv.value, kv.create_rev, kv.mod_rev, kv.version
                 FROM meta AS m LEFT JOIN kv ON kv.key >= ?1 AND kv.key < ?2
                 WHERE m.name = 'revision' ORDER BY kv.key",
            )
            .map_err(backend)?;
        stmt.query(params![req.start, req.end]).map_err(backend)?
    };
    let (mut revision, mut kvs) = (0, Vec::new());
    while kvs.len() < limit
        && let Some(r) = rows.next().map_err(backend)?
    {
        revision = r.get(0).map_err(backend)?;
        let Some(key) = r.get::<_, Option<String>>(1).map_err(backend)? else { break };
        kvs.push(KeyValue {
            key,
            value: r.get(2).map_err(backend)?,
            create_revision: r.get(3).map_err(backend)?,
            mod_revision: r.get(4).map_err(backend)?,
            version: r.get(5).map_err(backend)?,
        });
    }
    let more = req.limit != 0 && kvs.len() > req.limit;
    kvs.truncate(if req.limit == 0 { kvs.len() } else { req.limit });
    // Only `count_only` requests count the whole range (see `RangeResponse::count`).
    let count = kvs.len();
    Ok(RangeResponse { kvs, count, more, revision })
}

fn read_log(conn: &mut Connection, prefix: &str, from: Revision) -> Result<Vec<WatchEvent>, Error> {
    let oldest = read_meta(conn, "compacted")? + 1;
    if from < oldest {
        return Err(Error::Compacted { requested: from, oldest });
    }
    let end = crate::prefix_end(prefix);
    let mut stmt = conn
        .prepare_cached(
            "SELECT rev, key, kind, value, create_rev, version FROM log
             WHERE rev >= ?1 AND key >= ?2 AND key < ?3 ORDER BY rev, seq",
        )
        .map_err(backend)?;
    stmt.query_map(params![from, prefix, end], |r| {
        let kind: i64 = r.get(2)?;
        Ok(WatchEvent {
            kind: if kind == 0 { EventKind::Put } else { EventKind::Delete },
            kv: KeyValue {
                key: r.get(1)?,
                value: r.get(3)?,
                create_revision: r.get(4)?,
                mod_revision: r.get(0)?,
                version: r.get(5)?,
            },
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(backend)
}

fn compare_holds(conn: &Connection, cmp: &Compare) -> Result<bool, Error> {
    let key = match cmp {
        Compare::ModRevision(key, _) | Compare::Value(key, _) => key,
    };
    let row: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT mod_rev, value FROM kv WHERE key = ?1")
        .and_then(|mut s| s.query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(backend)?;
    Ok(match (cmp, row) {
        (Compare::ModRevision(_, want), Some((rev, _))) => rev == *want,
        (Compare::ModRevision(_, want), None) => *want == 0,
        (Compare::Value(_, want), Some((_, value))) => value == *want,
        (Compare::Value(..), None) => false,
    })
}

fn apply(
    conn: &Connection,
    op: &Op,
    revision: Revision,
    events: &mut Vec<WatchEvent>,
    leased_keys: bool,
) -> Result<(), Error> {
    match op {
        Op::Put(key, value) | Op::PutLeased(key, value, _) => {
            match op {
                Op::PutLeased(_, _, lease) => conn
                    .prepare_cached("INSERT INTO lease_key (key, lease) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET lease = excluded.lease")
                    .and_then(|mut s| s.execute(params![key, lease]))
                    .map(drop)
                    .map_err(backend)?,
                _ if leased_keys => conn
                    .prepare_cached("DELETE FROM lease_key WHERE key = ?1")
                    .and_then(|mut s| s.execute(params![key]))
                    .map(drop)
                    .map_err(backend)?,
                _ => {}
            }
            let prev: Option<(i64, i64)> = conn
                .prepare_cached("SELECT create_rev, version FROM kv WHERE key = ?1")
                .and_then(|mut s| s.query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(backend)?;
            let (create_revision, version) = match prev {
                Some((created, version)) => (created, version + 1),
                None => (revision, 1),
            };
            conn.prepare_cached(
                "INSERT INTO kv (key, value, create_rev, mod_rev, version) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev, version = excluded.version",
            )
            .and_then(|mut s| s.execute(params![key, value, create_revision, revision, version]))
            .map_err(backend)?;
            // A key written twice in one transaction keeps only its last event.
            events.retain(|e| e.kv.key != *key);
            events.push(WatchEvent {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: revision,
                    version,
                },
            });
        }
        Op::Delete(key) => delete_range(conn, key, &format!("{key}\0"), revision, events, leased_keys)?,
        Op::DeletePrefix(prefix) => {
            delete_range(conn, prefix, &crate::prefix_end(prefix), revision, events, leased_keys)?;
        }
    }
    Ok(())
}

fn delete_range(
    conn: &Connection,
    start: &str,
    end: &str,
    revision: Revision,
    events: &mut Vec<WatchEvent>,
    leased_keys: bool,
) -> Result<(), Error> {
    if leased_keys {
        conn.prepare_cached("DELETE FROM lease_key WHERE key >= ?1 AND key < ?2")
            .and_then(|mut s| s.execute(params![start, end]))
            .map_err(backend)?;
    }
    let keys: Vec<String> = conn
        .prepare_cached("DELETE FROM kv WHERE key >= ?1 AND key < ?2 RETURNING key")
        .and_then(|mut s| s.query_map(params![start, end], |r| r.get(0))?.collect())
        .map_err(backend)?;
    for key in keys {
        events.retain(|e| e.kv.key != key);
        events.push(WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue { key, value: Vec::new(), create_revision: 0, mod_revision: revision, version: 0 },
        });
    }
    Ok(())
}

fn read_meta(conn: &Connection, name: &str) -> Result<i64, Error> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .and_then(|mut s| s.query_row(params![name], |r| r.get(0)))
        .map_err(backend)
}

fn write_meta(conn: &Connection, name: &str, value: i64) -> Result<(), Error> {
    conn.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, value]))
        .map(drop)
        .map_err(backend)
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

#[cfg(test)]
mod tests;
