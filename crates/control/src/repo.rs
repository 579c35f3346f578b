//! The typed layer over the store: resources are JSON values under the keys of [`crate::keys`];
//! every API call that writes does so in one compare-and-swap transaction, retried when another
//! call changed what it read.
//!
//! One rule keeps guards sound: read a counter *before* the listing it guards. A transaction
//! compares the counter, not the listing; an entry added between the two reads moves the
//! counter only if the counter was read first.

use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_store::{Compare, Op, Revision, Store, StoreExt, Txn};

/// Why a repository call failed: the store failed, or a stored value is unreadable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RepoError {
    #[error(transparent)]
    Store(#[from] trellis_store::Error),
    #[error("stored value under {key} is unreadable: {source}")]
    Decode { key: String, source: serde_json::Error },
    #[error("gave up after {0} attempts: the resources kept changing underneath")]
    Contention(usize),
    #[error("store holds a corrupt value: {0}")]
    Corrupt(String),
}

/// A value read from the store, with the revision to compare against when writing it back.
#[derive(Clone, Debug)]
pub(crate) struct Versioned<T> {
    pub(crate) value: T,
    pub(crate) key: String,
    pub(crate) revision: Revision,
}

/// The writes of one API call, and the conditions under which they apply.
#[derive(Debug, Default)]
pub(crate) struct Tx {
    compare: Vec<Compare>,
    ops: Vec<Op>,
}

/// A quota counter read from the store.
#[derive(Clone, Debug)]
pub(crate) struct Counter {
    key: String,
    value: u64,
    revision: Revision,
}

pub(crate) async fn load<T: DeserializeOwned>(store: &dyn Store, key: &str) -> Result<Option<Versioned<T>>, RepoError> {
    let Some(kv) = store.get(key).await? else { return Ok(None) };
    let value = decode(&kv.key, &kv.value)?;
    Ok(Some(Versioned { value, key: kv.key, revision: kv.mod_revision }))
}

/// Reads the string value of an index key (an ID).
pub(crate) async fn load_index(store: &dyn Store, key: &str) -> Result<Option<String>, RepoError> {
    Ok(store.get(key).await?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

pub(crate) async fn counter(store: &dyn Store, key: String) -> Result<Counter, RepoError> {
    let kv = store.get(&key).await?;
    let (value, revision) = match kv {
        Some(kv) => {
            let text = String::from_utf8_lossy(&kv.value);
            // A counter that does not parse would read as 0 and pass every delete guard.
            let value = text.parse().map_err(|_| RepoError::Corrupt(format!("counter {key} holds {text:?}")))?;
            (value, kv.mod_revision)
        }
        None => (0, 0),
    };
    Ok(Counter { key, value, revision })
}

/// Reads up to `limit` values under `prefix` after key `after`; returns them with their keys and
/// whether more remain.
pub(crate) async fn list<T: DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<Versioned<T>>, bool), RepoError> {
    let resp = store.list_prefix(prefix, after, limit).await?;
    let items = resp
        .kvs
        .into_iter()
        .map(|kv| Ok(Versioned { value: decode(&kv.key, &kv.value)?, key: kv.key, revision: kv.mod_revision }))
        .collect::<Result<Vec<_>, RepoError>>()?;
    Ok((items, resp.more))
}

/// Reads every index value (IDs) under `prefix`.
pub(crate) async fn list_index(store: &dyn Store, prefix: &str) -> Result<Vec<String>, RepoError> {
    let resp = store.list_prefix(prefix, None, 0).await?;
    Ok(resp.kvs.into_iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect())
}

/// Commits the transactions of an API call's attempts until one applies. A handler loops:
/// read, check, build a [`Tx`], and [`Attempts::commit`]; `false` means something it read changed
/// before the commit, so it reads again. Gives up (bounded) under endless contention.
///
/// (A loop in the handler rather than a retrying closure: async closures that borrow the request
/// do not yet prove `Send` for axum.)
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    made: usize,
}

impl Attempts {
    const LIMIT: usize = 200;

    /// Commits `tx`; `Ok(false)` when a compare failed and the caller should try again.
    pub(crate) async fn commit(&mut self, store: &dyn Store, tx: Tx) -> Result<bool, RepoError> {
        if tx.commit(store).await? {
            return Ok(true);
        }
        self.made += 1;
        if self.made >= Self::LIMIT {
            return Err(RepoError::Contention(self.made));
        }
        tokio::task::yield_now().await;
        Ok(false)
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RepoError> {
    serde_json::from_slice(bytes).map_err(|source| RepoError::Decode { key: key.to_owned(), source })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data types to JSON cannot fail (no maps with non-string keys).
    serde_json::to_vec(value).expect("resource records serialize to JSON")
}

// === impl Tx ===

impl Tx {
    /// Writes a value that must not exist yet.
    pub(crate) fn create<T: Serialize>(&mut self, key: String, value: &T) {
        self.compare.push(Compare::ModRevision(key.clone(), 0));
        self.ops.push(Op::Put(key, encode(value)));
    }

    /// Writes an index key (holding an ID) that must not exist yet.
    pub(crate) fn create_index(&mut self, key: String, id: &str) {
        self.compare.push(Compare::ModRevision(key.clone(), 0));
        self.ops.push(Op::Put(key, id.as_bytes().to_vec()));
    }

    /// Requires that `key` is still at `revision` (0: still absent).
    pub(crate) fn require_unchanged(&mut self, key: String, revision: Revision) {
        self.compare.push(Compare::ModRevision(key, revision));
    }

    /// Overwrites a value read earlier, if it has not changed since.
    pub(crate) fn update<T: Serialize>(&mut self, read: &Versioned<T>, value: &T) {
        self.require_unchanged(read.key.clone(), read.revision);
        self.ops.push(Op::Put(read.key.clone(), encode(value)));
    }

    /// Writes a value unconditionally.
    pub(crate) fn put<T: Serialize>(&mut self, key: String, value: &T) {
        self.ops.push(Op::Put(key, encode(value)));
    }

    /// Writes raw bytes unconditionally.
    pub(crate) fn put_raw(&mut self, key: String, value: Vec<u8>) {
        self.ops.push(Op::Put(key, value));
    }

    /// Deletes a key.
    pub(crate) fn delete(&mut self, key: String) {
        self.ops.push(Op::Delete(key));
    }

    /// Deletes a value read earlier, if it has not changed since.
    pub(crate) fn delete_read<T>(&mut self, read: &Versioned<T>) {
        self.require_unchanged(read.key.clone(), read.revision);
        self.ops.push(Op::Delete(read.key.clone()));
    }

    /// Deletes every key under a prefix.
    pub(crate) fn delete_prefix(&mut self, prefix: String) {
        self.ops.push(Op::DeletePrefix(prefix));
    }

    /// Moves a counter by `delta`, if nobody moved it since it was read.
    pub(crate) fn count(&mut self, counter: &Counter, delta: i64) {
        self.require_unchanged(counter.key.clone(), counter.revision);
        let value = counter.value as i64 + delta;
        debug_assert!(value >= 0, "counter {} would go below zero", counter.key);
        let value = value.max(0);
        self.ops.push(Op::Put(counter.key.clone(), value.to_string().into_bytes()));
    }

    /// Deletes a counter whose owner is being deleted, if nobody moved it since it was read.
    pub(crate) fn retire(&mut self, counter: &Counter) {
        self.require_unchanged(counter.key.clone(), counter.revision);
        self.ops.push(Op::Delete(counter.key.clone()));
    }

    async fn commit(self, store: &dyn Store) -> Result<bool, trellis_store::Error> {
        if self.ops.is_empty() {
            return Ok(true);
        }
        let resp = store.txn(Txn { compare: self.compare, success: self.ops, failure: Vec::new() }).await?;
        Ok(resp.succeeded)
    }
}

// === impl Counter ===

impl Counter {
    pub(crate) fn value(&self) -> u64 {
        self.value
    }
}
