//! The encoder of one connection, with a dynamic table kept in step with the peer's decoder.
//!
//! What a proxy sends on a connection repeats: the same `:authority`, `content-type`, `te`,
//! `user-agent`, the forwarded fields of the same few clients, and Lattice's fields with their
//! long ARNs. Sent as literals, every one of them is decoded, validated and allocated again by
//! the peer on every request (hyper's decoder, for one, copies each literal name and value);
//! indexed, it is one byte or two, which the peer resolves from its table. So a field is
//! inserted the first time it goes (literal with incremental indexing) and sent by index after
//! that, unless:
//! - it is sensitive: never indexed, here or by any hop after the proxy (RFC 7541 §7.1.3);
//! - its name is one whose value is new on most messages (`:path`, `content-length`, dates,
//!   validators, the request id, trace context): indexing those would only churn the table, so
//!   they go as literals, their names by index where a table has them;
//! - it carries credentials (`authorization`, cookies): an upstream connection carries many
//!   clients' requests, and an entry shared between them is what compression attacks that
//!   guess a secret from the length of what is sent rely on;
//! - it is large (over a quarter of the table), where one entry would push out the many small
//!   ones that repeat.
//!
//! Strings are sent raw, as before: Huffman coding costs the proxy more per byte than the
//! bytes it saves cost the socket.

use std::collections::VecDeque;

use super::{ENTRY_OVERHEAD, STATIC, known, literal, put_integer};

/// The most dynamic table the proxy keeps for a peer, whatever larger size the peer allows
/// (RFC 7541's default, and ample for the fields that repeat on a connection).
pub const MAX_TABLE: usize = 4096;

/// One dynamic table entry, with a fingerprint compared before its bytes.
#[derive(Debug)]
struct Entry {
    name: Box<[u8]>,
    value: Box<[u8]>,
    key: u64,
}

/// Writes the header blocks of one connection.
#[derive(Debug)]
pub struct Encoder {
    /// Newest first: dynamic index 62 is `entries[0]`, as in the peer's decoder.
    entries: VecDeque<Entry>,
    /// The sum of the entries' sizes (RFC 7541 §4.1).
    size: usize,
    /// The table's size as the peer's decoder knows it.
    max: usize,
    /// Owed at the start of the next block, after the peer's limit changed: the smallest size
    /// it went to since the last block, and the size it ended at (RFC 7541 §4.2).
    pending: Option<(usize, usize)>,
    /// Where the next field is looked for first: a connection's heads carry their fields in
    /// the same order, and the entries went in in that order, so once a field is found the
    /// next one is usually the entry just newer than it. `first` is where the last block's
    /// first field was found, where the next block starts. Both are only guesses, checked
    /// like any entry; a wrong one costs a look at one entry.
    next: usize,
    first: Option<usize>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder for a peer that has not yet said its limit (4,096 until it does).
    pub fn new() -> Self {
        Self { entries: VecDeque::new(), size: 0, max: MAX_TABLE, pending: None, next: usize::MAX, first: None }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE: the table shrinks to it (or grows back, up to
    /// [`MAX_TABLE`]) from the next block on, which starts by saying so. The caller applies
    /// it where it acknowledges the setting, so that no block written after the
    /// acknowledgement uses the old size. A limit over [`MAX_TABLE`] is answered with an
    /// update to [`MAX_TABLE`] too: decoders differ in whether a larger setting alone grows
    /// their table, and said outright, the size is the same on both ends whichever they do.
    pub fn set_peer_limit(&mut self, limit: u32) {
        let size = usize::try_from(limit).unwrap_or(usize::MAX).min(MAX_TABLE);
        self.pending = match self.pending {
            Some((low, _)) => Some((low.min(size), size)),
            None if u32::try_from(self.max) == Ok(limit) => None,
            None => Some((size, size)),
        };
    }

    /// Encodes one header block into `out` (which the caller has cleared or positioned).
    pub fn block<'f>(&mut self, out: &mut Vec<u8>, fields: impl IntoIterator<Item = (&'f [u8], &'f [u8], bool)>) {
        if let Some((low, last)) = self.pending.take() {
            if low < last {
                put_integer(out, 0x20, 5, low as u64);
                self.resize(low);
            }
            put_integer(out, 0x20, 5, last as u64);
            self.resize(last);
        }
        self.next = self.first.take().unwrap_or(usize::MAX);
        for (name, value, sensitive) in fields {
            self.field(out, name, value, sensitive);
        }
    }

    /// One field's representation (see the module's comment for which are indexed). The
    /// entry after the last one found is looked at first, as the fields of a connection's
    /// heads come in the same order; then the static table; then the dynamic one.
    fn field(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
        let key = key(name, value);
        let matches = |e: &Entry| e.key == key && *e.value == *value && *e.name == *name;
        if !sensitive && self.entries.get(self.next).is_some_and(matches) {
            self.found(out, self.next);
            return;
        }
        let known = known(name);
        if !sensitive && let Some(index) = known.field_index(value) {
            put_integer(out, 0x80, 7, index as u64);
            return;
        }
        if sensitive || known.vary {
            // Such fields are never inserted, so only the static table can have their names.
            literal(out, if sensitive { 0x10 } else { 0x00 }, 4, known.name_index(), name, value);
            return;
        }
        if let Some(at) = self.entries.iter().position(matches) {
            self.found(out, at);
            return;
        }
        let name_index = known.name_index().or_else(|| self.find_name(name));
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size <= self.max / 4 {
            literal(out, 0x40, 6, name_index, name, value);
            self.evict(size);
            self.entries.push_front(Entry { name: name.into(), value: value.into(), key });
            self.size += size;
        } else {
            literal(out, 0x00, 4, name_index, name, value);
        }
    }

    /// Sends the entry at `at` by index; the next field is looked for just newer than it.
    fn found(&mut self, out: &mut Vec<u8>, at: usize) {
        put_integer(out, 0x80, 7, (STATIC.len() + 1 + at) as u64);
        self.next = at.wrapping_sub(1);
        self.first.get_or_insert(at);
    }

    /// The dynamic index of the newest entry named `name`.
    fn find_name(&self, name: &[u8]) -> Option<usize> {
        self.entries.iter().position(|e| *e.name == *name).map(|at| STATIC.len() + 1 + at)
    }

    fn resize(&mut self, max: usize) {
        self.max = max;
        self.evict(0);
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some(e) = self.entries.pop_back() else { break };
            self.size -= e.name.len() + e.value.len() + ENTRY_OVERHEAD;
        }
    }

    /// The dynamic table's size in bytes (as RFC 7541 counts it).
    pub fn table_size(&self) -> usize {
        self.size
    }
}

/// A fingerprint of a field: its lengths and its value's last four bytes, which tell apart
/// most entries of the same name (addresses, ARNs) before their bytes are compared.
fn key(name: &[u8], value: &[u8]) -> u64 {
    let tail = match value.last_chunk::<4>() {
        Some(last) => u64::from(u32::from_le_bytes(*last)),
        None => value.iter().fold(0u64, |k, &b| (k << 8) | u64::from(b)),
    };
    (name.len() as u64) | ((value.len() as u64) << 16) | (tail << 32)
}
