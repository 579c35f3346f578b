//! A revisioned key-value store with etcd's data model: every committed transaction gets the next
//! revision, keys carry their create/mod revisions and version, reads are ranges over ordered
//! keys, writes are compare-and-swap transactions, and changes can be watched from a revision.
//!
//! This crate knows nothing of Lattice or AWS: keys are strings, values are bytes. The embedded
//! backend is SQLite ([`SqliteStore`]); the etcd backend ([`EtcdStore`]) implements the same
//! [`Store`] trait and runs the same [`conformance`] suite against a real etcd.

use std::future::Future;
use std::pin::Pin;

mod etcd;
mod sqlite;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;

pub use etcd::{EtcdConfig, EtcdStore, Scheme};
pub use sqlite::{Durability, SCHEMA_VERSION, SqliteStore};

/// A store revision. Revision 0 means "never written"; the first committed write is revision 1.
pub type Revision = i64;

/// A lease's ID, as etcd gives it. Keys written with a lease ([`Op::PutLeased`]) are deleted when
/// it expires (nobody renewed it within its TTL) or is revoked: how a node says it is alive, and
/// how work that must happen once is held by one node at a time.
pub type LeaseId = i64;

/// A boxed future, so that [`Store`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stored key with its value and bookkeeping, as etcd reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the transaction that created the key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
    /// How many times the key was written since it was created (1 after creation).
    pub version: i64,
}

/// A range read: keys in `[start, end)`, or exactly `start` when `end` is `None`.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    /// First key (inclusive).
    pub start: String,
    /// End key (exclusive); `None` reads the single key `start`.
    pub end: Option<String>,
    /// At most this many key-values are returned (0 = no limit).
    pub limit: usize,
    /// Return only the count, not the key-values.
    pub count_only: bool,
}

/// What a range read found.
#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    /// The key-values found, in key order (empty when `count_only`).
    pub kvs: Vec<KeyValue>,
    /// With `count_only`, how many keys the range holds. Otherwise the number of key-values
    /// returned: counting a whole range costs a scan of it, which a paged listing (that needs
    /// only `more`) should not pay on every page.
    pub count: usize,
    /// Whether `limit` cut the answer short.
    pub more: bool,
    /// The store's revision when the read was made.
    pub revision: Revision,
}

/// A condition a transaction checks before it chooses its branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals this one; 0 means the key does not exist.
    ModRevision(String, Revision),
    /// The key exists and its value equals this one.
    Value(String, Vec<u8>),
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Delete the key, if present.
    Delete(String),
    /// Delete every key that starts with the prefix.
    DeletePrefix(String),
    /// Set the key's value (detaching it from any lease it had, as etcd does).
    Put(String, Vec<u8>),
    /// Set the key's value and attach it to a live lease: the key is deleted when the lease
    /// ends. A lease that is gone fails the whole transaction with [`Error::LeaseNotFound`].
    PutLeased(String, Vec<u8>, LeaseId),
}

/// A compare-and-swap transaction: if every compare holds, apply `success`, else `failure`.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    /// Conditions, all of which must hold for `success` to run.
    pub compare: Vec<Compare>,
    /// Writes applied when every compare holds.
    pub success: Vec<Op>,
    /// Writes applied otherwise.
    pub failure: Vec<Op>,
}

/// What a transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (and so `success` ran).
    pub succeeded: bool,
    /// The store's revision after the transaction (unchanged if it wrote nothing).
    pub revision: Revision,
}

/// Whether a watched key was written or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was deleted; `kv.value` is empty and `kv.mod_revision` is the deleting revision.
    Delete,
    /// The key was created or overwritten.
    Put,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the change.
    pub kv: KeyValue,
}

/// A stream of changes, in revision order. Ends (`None`) when the store is dropped.
pub type WatchStream = tokio::sync::mpsc::Receiver<Result<WatchEvent, Error>>;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested revision was compacted away; the oldest retained one is given.
    #[error("revision {requested} is compacted; the oldest available is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still retained.
        oldest: Revision,
    },
    /// The backend failed (I/O, corruption, a lost connection).
    #[error("store backend: {0}")]
    Backend(String),
    /// The data directory was written by a newer Trellis.
    #[error("the store has schema version {found}, newer than this Trellis supports ({supported}); upgrade Trellis")]
    SchemaTooNew {
        /// Version found on disk.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A transaction was larger than the store allows (etcd: 128 operations, 1.5 MiB).
    #[error("transaction too large: {0}")]
    TooLarge(String),
    /// A write named a lease that expired or was revoked (or never existed).
    #[error("lease {0:x} not found")]
    LeaseNotFound(LeaseId),
}

/// The store every part of Trellis shares.
pub trait Store: Send + Sync + 'static {
    /// Reads a range of keys (or one key).
    fn range(&self, req: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, Error>>;

    /// Runs a compare-and-swap transaction atomically, as one revision.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse, Error>>;

    /// Streams every change to keys under `prefix` from `from_revision` (inclusive) onwards
    /// (0: from the next revision). A `from_revision` that was compacted away is reported as
    /// [`Error::Compacted`], by this call or as the stream's first item (etcd confirms a watch
    /// before it finds the revision compacted); a stream that fails later ends with its error.
    fn watch(&self, prefix: String, from_revision: Revision) -> BoxFuture<'_, Result<WatchStream, Error>>;

    /// Grants a lease that lives `ttl_seconds` (at least 1) unless renewed.
    fn grant_lease(&self, ttl_seconds: i64) -> BoxFuture<'_, Result<LeaseId, Error>>;

    /// Renews a lease for its whole TTL again. `Ok(false)`: it is gone (expired or revoked),
    /// and so are its keys.
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<bool, Error>>;

    /// Ends a lease now, deleting its keys (in one revision). An unknown lease is no error.
    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), Error>>;
}

/// Most transactions may hold this many operations (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;
/// Most bytes a transaction may carry (etcd's default `--max-request-bytes`).
pub const MAX_TXN_BYTES: usize = 1536 * 1024;

/// The end key of the range of all keys starting with `prefix` (etcd's "prefix end").
pub fn prefix_end(prefix: &str) -> String {
    // Keys are UTF-8 strings; appending U+10FFFF gives a key greater than any key with the prefix
    // for all keys Trellis writes (they are ASCII).
    let mut end = prefix.to_owned();
    end.push(char::MAX);
    end
}

/// Convenience reads every store has.
pub trait StoreExt: Store {
    /// Reads one key.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, Error>> {
        let req = RangeRequest { start: key.to_owned(), ..RangeRequest::default() };
        Box::pin(async move { Ok(self.range(req).await?.kvs.into_iter().next()) })
    }

    /// Reads every key under `prefix` that sorts after `after` (exclusive), up to `limit`.
    fn list_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RangeResponse, Error>> {
        let start = match after {
            // The smallest key greater than `after`, but never before `prefix`: an `after` that
            // sorts before the prefix would otherwise list keys outside it.
            Some(after) => format!("{after}\0").max(prefix.to_owned()),
            None => prefix.to_owned(),
        };
        let req = RangeRequest { start, end: Some(prefix_end(prefix)), limit, count_only: false };
        Box::pin(self.range(req))
    }

    /// Counts the keys under `prefix`.
    fn count_prefix(&self, prefix: &str) -> BoxFuture<'_, Result<usize, Error>> {
        let req = RangeRequest { start: prefix.to_owned(), end: Some(prefix_end(prefix)), limit: 0, count_only: true };
        Box::pin(async move { Ok(self.range(req).await?.count) })
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

impl Txn {
    /// Checks the transaction against etcd's default limits, so that what works on SQLite
    /// works on etcd too.
    pub fn check_limits(&self) -> Result<(), Error> {
        let ops = self.compare.len().max(self.success.len()).max(self.failure.len());
        if ops > MAX_TXN_OPS {
            return Err(Error::TooLarge(format!("{ops} operations (limit {MAX_TXN_OPS})")));
        }
        let bytes: usize = self.success.iter().chain(&self.failure).map(Op::size).sum::<usize>()
            + self.compare.iter().map(Compare::size).sum::<usize>();
        if bytes > MAX_TXN_BYTES {
            return Err(Error::TooLarge(format!("{bytes} bytes (limit {MAX_TXN_BYTES})")));
        }
        Ok(())
    }
}

impl Op {
    fn size(&self) -> usize {
        match self {
            Self::Delete(k) | Self::DeletePrefix(k) => k.len(),
            Self::Put(k, v) => k.len() + v.len(),
            Self::PutLeased(k, v, _) => k.len() + v.len() + 8,
        }
    }
}

impl Compare {
    fn size(&self) -> usize {
        match self {
            Self::ModRevision(k, _) => k.len() + 8,
            Self::Value(k, v) => k.len() + v.len(),
        }
    }
}
