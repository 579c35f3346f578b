//! The decoded store: every record the compiler reads, by store key, kept between compiles and
//! changed one key-value at a time as the store's changes arrive. A full read is decoded once
//! (on several threads when it is large); after that a change costs the decoding of the records
//! it touched, not of the whole store. Owns no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use trellis_store::KeyValue;

use super::records::{Decoded, Rec, Records, decode, kind};

/// Most threads a full read decodes on.
const MAX_THREADS: usize = 4;
/// Fewest key-values worth a thread of their own.
const MIN_CHUNK: usize = 4096;

/// Every record the compiler reads, by store key (shared with the indexes that point at them).
pub(super) struct Model {
    entries: BTreeMap<Arc<str>, Rec>,
    /// Where this node's ingress addresses are (`node/<node>/vpc/`).
    ingress_prefix: String,
}

// === impl Model ===

impl Model {
    /// The model of these key-values (resources under `r/`, ingress addresses under
    /// `ingress_prefix`; other keys are ignored). Large reads are decoded on several threads.
    pub(super) fn from_kvs(kvs: &[KeyValue], ingress_prefix: String) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS);
        let chunk = kvs.len().div_ceil(threads).max(MIN_CHUNK);
        let prefix = ingress_prefix.as_str();
        let entries = if kvs.len() <= chunk {
            decode_chunk(kvs, prefix).into_iter().collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = kvs.chunks(chunk).map(|c| scope.spawn(move || decode_chunk(c, prefix))).collect();
                let mut all = Vec::new();
                for handle in handles {
                    match handle.join() {
                        Ok(more) => all.extend(more),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                all.into_iter().collect()
            })
        };
        Self { entries, ingress_prefix }
    }

    /// What a key-value holds for the model.
    pub(super) fn decode(&self, key: &str, value: &[u8]) -> Decoded {
        decode(key, value, &self.ingress_prefix)
    }

    /// Whether `key` is one the model reads (whatever its value).
    pub(super) fn reads(&self, key: &str) -> bool {
        kind(key, &self.ingress_prefix).is_some()
    }

    /// The record under `key`.
    pub(super) fn get(&self, key: &str) -> Option<&Rec> {
        self.entries.get(key)
    }

    /// Removes the record under `key`, returning it with its key.
    pub(super) fn remove(&mut self, key: &str) -> Option<(Arc<str>, Rec)> {
        self.entries.remove_entry(key)
    }

    /// Stores a record.
    pub(super) fn insert(&mut self, key: Arc<str>, rec: Rec) {
        self.entries.insert(key, rec);
    }

    /// Every record, in key order.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&Arc<str>, &Rec)> {
        self.entries.iter()
    }

    /// The records, filed for a full build.
    pub(super) fn records(&self) -> Records<'_> {
        Records::file(self.entries.iter().map(|(k, r)| (&**k, r)), &self.ingress_prefix)
    }

    /// The records some of whose kinds `wanted` accepts, filed for a build.
    pub(super) fn records_of(&self, wanted: impl Fn(&Rec) -> bool) -> Records<'_> {
        let entries = self.entries.iter().filter(|(_, r)| wanted(r)).map(|(k, r)| (&**k, r));
        Records::file(entries, &self.ingress_prefix)
    }
}

/// The records among these key-values, in their order.
fn decode_chunk(kvs: &[KeyValue], ingress_prefix: &str) -> Vec<(Arc<str>, Rec)> {
    kvs.iter()
        .filter_map(|kv| match decode(&kv.key, &kv.value, ingress_prefix) {
            Decoded::Rec(rec) => Some((Arc::from(kv.key.as_str()), rec)),
            Decoded::Ignored | Decoded::Unreadable => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
