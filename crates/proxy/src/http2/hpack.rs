//! HPACK, HTTP/2's header compression (RFC 7541).
//!
//! - [`Decoder`] reads what peers send, all of it: the static and dynamic tables, the
//!   literal forms, Huffman-coded strings, and table size updates within the limit the proxy
//!   advertised. Every malformed block is an [`Error`] (a connection error,
//!   COMPRESSION_ERROR); nothing panics and nothing grows beyond the limits.
//! - [`Encoder`] writes a connection's blocks: a field of the static table by index, the
//!   fields that repeat on a connection indexed in a dynamic table kept in step with the
//!   peer's decoder (within the size the peer allows), the rest as literals, strings raw.
//! - [`encode`] writes one field with no table at all (a literal unless the static table has
//!   it): what the tests and the fuzz targets write a peer's blocks with; the proxy's own
//!   connections all go through an [`Encoder`].

use std::collections::VecDeque;
use std::fmt;

mod encoder;
mod huffman_table;

pub use encoder::{Encoder, MAX_TABLE};

/// Why a header block cannot be decoded (each a COMPRESSION_ERROR, RFC 7541 §2.3.3, RFC 9113
/// §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The block ends inside a representation.
    Truncated,
    /// An integer does not fit (or is absurdly long).
    Overflow,
    /// An index names no entry.
    BadIndex,
    /// A Huffman-coded string is malformed: EOS inside it, or padding that is longer than
    /// seven bits or not all ones.
    Huffman,
    /// A table size update over the advertised limit, or after the block's first field.
    TableSize,
}

/// The 61 entries of the static table (RFC 7541, Appendix A), index 1 first.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// A dynamic table entry: (name, value).
type Entry = (Box<[u8]>, Box<[u8]>);

/// What an entry adds to a table's size beyond its name and value (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Reads header blocks of one connection (its dynamic table lives as long as the connection).
#[derive(Debug)]
pub struct Decoder {
    /// Newest first: dynamic index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    /// The sum of the entries' sizes.
    size: usize,
    /// The size the encoder last chose (at most `limit`).
    max: usize,
    /// The most the proxy allows (its SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
    /// Huffman-decoded strings.
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl Decoder {
    /// A decoder whose peer may use a dynamic table of up to `limit` bytes (4,096 unless the
    /// proxy advertised otherwise).
    pub fn new(limit: usize) -> Self {
        Self { entries: VecDeque::new(), size: 0, max: limit, limit, name_buf: Vec::new(), value_buf: Vec::new() }
    }

    /// Decodes one header block (the fragments of a HEADERS frame and its CONTINUATIONs,
    /// joined), calling `field(name, value, never_indexed)` for each field in order. Names
    /// are passed as sent: checking them (lowercase, pseudo-fields first) is the caller's, and
    /// so is bounding the header list (SETTINGS_MAX_HEADER_LIST_SIZE): a block of one-byte
    /// indexes can name the same large table entry thousands of times. The decoder itself
    /// copies nothing per field but Huffman-coded strings, into buffers it reuses.
    pub fn decode(&mut self, block: &[u8], mut field: impl FnMut(&[u8], &[u8], bool)) -> Result<(), Error> {
        let mut at = 0;
        let mut fields = 0usize;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                // Indexed field.
                let index = integer(block, &mut at, 7)?;
                let (name, value) = entry(&self.entries, index)?;
                field(name, value, false);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the block's first field.
                let size = integer(block, &mut at, 5)?;
                if fields > 0 || size > self.limit as u64 {
                    return Err(Error::TableSize);
                }
                self.max = size as usize;
                self.evict(0);
                continue;
            } else {
                // A literal: with incremental indexing (01), without (0000), never indexed (0001).
                let (prefix, indexing, never) = match first & 0xf0 {
                    0x00 => (4, false, false),
                    0x10 => (4, false, true),
                    _ => (6, true, false),
                };
                let index = integer(block, &mut at, prefix)?;
                let name: &[u8] = if index == 0 {
                    string(block, &mut at, &mut self.name_buf)?
                } else {
                    entry(&self.entries, index)?.0
                };
                let value = string(block, &mut at, &mut self.value_buf)?;
                field(name, value, never);
                if indexing {
                    let entry = (Box::from(name), Box::from(value));
                    self.insert(entry);
                }
            }
            fields += 1;
        }
        Ok(())
    }

    fn insert(&mut self, (name, value): Entry) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max {
            // An entry larger than the table empties it (RFC 7541 §4.4).
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.entries.push_front((name, value));
        self.size += size;
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((n, v)) = self.entries.pop_back() else { break };
            self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
        }
    }

    /// The dynamic table's size in bytes (as RFC 7541 counts it).
    pub fn table_size(&self) -> usize {
        self.size
    }
}

/// The entry at `index` (1-based: the static table, then the dynamic one newest first).
fn entry(entries: &VecDeque<Entry>, index: u64) -> Result<(&[u8], &[u8]), Error> {
    let index = usize::try_from(index).map_err(|_| Error::BadIndex)?;
    match index {
        0 => Err(Error::BadIndex),
        1..=61 => {
            let (n, v) = STATIC[index - 1];
            Ok((n.as_bytes(), v.as_bytes()))
        }
        _ => entries.get(index - 62).map(|(n, v)| (&n[..], &v[..])).ok_or(Error::BadIndex),
    }
}

/// An integer with an `n`-bit prefix at `block[*at]` (RFC 7541 §5.1); `*at` moves past it.
fn integer(block: &[u8], at: &mut usize, n: u8) -> Result<u64, Error> {
    let mask = (1u8 << n) - 1;
    let first = *block.get(*at).ok_or(Error::Truncated)? & mask;
    *at += 1;
    if first < mask {
        return Ok(u64::from(first));
    }
    let mut value = u64::from(mask);
    // Five continuation bytes carry 35 bits: more than any size or index this side accepts.
    for shift in (0..35).step_by(7) {
        let b = *block.get(*at).ok_or(Error::Truncated)?;
        *at += 1;
        value += u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Error::Overflow)
}

/// A string literal at `block[*at]` (RFC 7541 §5.2): borrowed from the block when raw,
/// decoded into `buf` when Huffman-coded.
fn string<'a>(block: &'a [u8], at: &mut usize, buf: &'a mut Vec<u8>) -> Result<&'a [u8], Error> {
    let huffman = block.get(*at).ok_or(Error::Truncated)? & 0x80 != 0;
    let len = usize::try_from(integer(block, at, 7)?).map_err(|_| Error::Overflow)?;
    let end = at.checked_add(len).filter(|&end| end <= block.len()).ok_or(Error::Truncated)?;
    let raw = &block[*at..end];
    *at = end;
    if !huffman {
        return Ok(raw);
    }
    buf.clear();
    huffman_decode(raw, buf)?;
    Ok(buf)
}

/// The canonical form of the Huffman code, found at compile time: for each length, the first
/// code of that length, how many codes have it, and where its symbols start in [`SYMBOLS`].
struct Canonical {
    first: [u32; 31],
    count: [u16; 31],
    offset: [u16; 31],
    symbols: [u16; 257],
}

const CANONICAL: Canonical = {
    let codes = huffman_table::CODES;
    let mut c = Canonical { first: [0; 31], count: [0; 31], offset: [0; 31], symbols: [0; 257] };
    let mut n = 0;
    let mut len = 1;
    while len <= 30 {
        c.offset[len] = n as u16;
        let mut first = u32::MAX;
        let mut sym = 0;
        while sym < 257 {
            if codes[sym].1 as usize == len {
                c.symbols[n] = sym as u16;
                n += 1;
                c.count[len] += 1;
                if codes[sym].0 < first {
                    first = codes[sym].0;
                }
            }
            sym += 1;
        }
        // A length without codes: the codes of the next length start where they would have.
        c.first[len] = if first == u32::MAX { (c.first[len - 1] + c.count[len - 1] as u32) << 1 } else { first };
        len += 1;
    }
    c
};

/// How many bits [`SHORT`] looks at: the codes of the bytes most text is made of (letters,
/// digits, common punctuation) are 5 to 8 bits long, and all but a few dozen at most 10.
const SHORT_BITS: u32 = 10;

/// For each `SHORT_BITS`-bit prefix: the byte whose code it starts with and that code's length,
/// where the code is at most `SHORT_BITS` long; (0, 0) where it is longer.
static SHORT: [(u8, u8); 1 << SHORT_BITS] = {
    let mut table = [(0u8, 0u8); 1 << SHORT_BITS];
    let mut byte = 0;
    while byte < 256 {
        let (code, len) = huffman_table::CODES[byte];
        if len as u32 <= SHORT_BITS {
            let free = SHORT_BITS - len as u32;
            let first = (code << free) as usize;
            let mut i = 0;
            while i < 1 << free {
                table[first + i] = (byte as u8, len);
                i += 1;
            }
        }
        byte += 1;
    }
    table
};

/// Decodes a Huffman-coded string (RFC 7541 §5.2, Appendix B) onto `out`: up to 64 bits at a
/// time in an accumulator, a short code found with one look at [`SHORT`], a longer one bit by
/// bit through the code's canonical form.
pub fn huffman_decode(coded: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let c = &CANONICAL;
    out.reserve(coded.len() * 8 / 5);
    // The next `bits` bits of the string, from the most significant end of `acc` (zeros after).
    let (mut acc, mut bits, mut at) = (0u64, 0u32, 0usize);
    loop {
        while bits <= 56 && at < coded.len() {
            acc |= u64::from(coded[at]) << (56 - bits);
            bits += 8;
            at += 1;
        }
        if bits == 0 {
            return Ok(());
        }
        let (byte, len) = SHORT[(acc >> (64 - SHORT_BITS)) as usize];
        if len != 0 && u32::from(len) <= bits {
            out.push(byte);
            acc <<= len;
            bits -= u32::from(len);
            continue;
        }
        // A longer code, or the string's last few bits.
        let (mut code, mut len) = (0u32, 0usize);
        loop {
            if len == bits as usize {
                // The end of the string inside a code: padding, at most seven bits, all ones
                // (a prefix of EOS).
                return if len <= 7 && code == (1u32 << len) - 1 { Ok(()) } else { Err(Error::Huffman) };
            }
            code = (code << 1) | (acc >> 63) as u32;
            acc <<= 1;
            len += 1;
            let rank = code.wrapping_sub(c.first[len]);
            if rank < u32::from(c.count[len]) {
                let symbol = c.symbols[usize::from(c.offset[len]) + rank as usize];
                // EOS inside a string is an error (§5.2); every other symbol is a byte.
                out.push(u8::try_from(symbol).map_err(|_| Error::Huffman)?);
                bits -= len as u32;
                break;
            }
            if len == 30 {
                return Err(Error::Huffman);
            }
        }
    }
}

/// Appends the Huffman coding of `bytes` to `out`.
pub fn huffman_encode(bytes: &[u8], out: &mut Vec<u8>) {
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in bytes {
        let (code, len) = huffman_table::CODES[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Padded with the most significant bits of EOS (ones).
        out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
}

/// Appends the representation of one field using no dynamic table: the static table's index
/// when it has the field, else a literal that is not indexed (`sensitive`: never indexed, so
/// that no intermediary after this one indexes it either).
pub fn encode(out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
    let known = known(name);
    if !sensitive && let Some(index) = known.field_index(value) {
        put_integer(out, 0x80, 7, index as u64);
        return;
    }
    literal(out, if sensitive { 0x10 } else { 0x00 }, 4, known.name_index(), name, value);
}

/// A literal representation: the pattern `flags` with its `prefix`-bit name index (or a
/// literal name), then the value.
fn literal(out: &mut Vec<u8>, flags: u8, prefix: u8, name_index: Option<usize>, name: &[u8], value: &[u8]) {
    match name_index {
        Some(index) => put_integer(out, flags, prefix, index as u64),
        None => {
            out.push(flags);
            put_string(out, name);
        }
    }
    put_string(out, value);
}

/// What the encoders need to know of a field's name, found with one `match` (which the
/// compiler turns into a switch on the length and a comparison or two, rather than a walk
/// through a table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    /// The static index of the first entry of this name; 0 for a name the table lacks.
    index: u8,
    /// How many entries from there carry a value (`:status` has seven).
    values: u8,
    /// The name's values are new on most messages, or are credentials: a dynamic table
    /// entry would only churn the table, or share a secret between the requests of several
    /// clients on one connection (see the encoder's module).
    vary: bool,
}

impl Known {
    const UNKNOWN: Self = Self { index: 0, values: 0, vary: false };

    /// The static index of the name, when the table has it.
    fn name_index(self) -> Option<usize> {
        (self.index != 0).then_some(usize::from(self.index))
    }

    /// The static index of (this name, `value`), when the table has it.
    fn field_index(self, value: &[u8]) -> Option<usize> {
        let first = usize::from(self.index);
        (0..usize::from(self.values)).find(|&i| STATIC[first - 1 + i].1.as_bytes() == value).map(|i| first + i)
    }
}

fn known(name: &[u8]) -> Known {
    match name {
        b":authority" => Known { index: 1, values: 0, vary: false },
        b":method" => Known { index: 2, values: 2, vary: false },
        b":path" => Known { index: 4, values: 2, vary: true },
        b":scheme" => Known { index: 6, values: 2, vary: false },
        b":status" => Known { index: 8, values: 7, vary: false },
        b"accept-charset" => Known { index: 15, values: 0, vary: false },
        b"accept-encoding" => Known { index: 16, values: 1, vary: false },
        b"accept-language" => Known { index: 17, values: 0, vary: false },
        b"accept-ranges" => Known { index: 18, values: 0, vary: false },
        b"accept" => Known { index: 19, values: 0, vary: false },
        b"access-control-allow-origin" => Known { index: 20, values: 0, vary: false },
        b"age" => Known { index: 21, values: 0, vary: true },
        b"allow" => Known { index: 22, values: 0, vary: false },
        b"authorization" => Known { index: 23, values: 0, vary: true },
        b"cache-control" => Known { index: 24, values: 0, vary: false },
        b"content-disposition" => Known { index: 25, values: 0, vary: false },
        b"content-encoding" => Known { index: 26, values: 0, vary: false },
        b"content-language" => Known { index: 27, values: 0, vary: false },
        b"content-length" => Known { index: 28, values: 0, vary: true },
        b"content-location" => Known { index: 29, values: 0, vary: false },
        b"content-range" => Known { index: 30, values: 0, vary: true },
        b"content-type" => Known { index: 31, values: 0, vary: false },
        b"cookie" => Known { index: 32, values: 0, vary: true },
        b"date" => Known { index: 33, values: 0, vary: true },
        b"etag" => Known { index: 34, values: 0, vary: true },
        b"expect" => Known { index: 35, values: 0, vary: false },
        b"expires" => Known { index: 36, values: 0, vary: true },
        b"from" => Known { index: 37, values: 0, vary: false },
        b"host" => Known { index: 38, values: 0, vary: false },
        b"if-match" => Known { index: 39, values: 0, vary: true },
        b"if-modified-since" => Known { index: 40, values: 0, vary: true },
        b"if-none-match" => Known { index: 41, values: 0, vary: true },
        b"if-range" => Known { index: 42, values: 0, vary: true },
        b"if-unmodified-since" => Known { index: 43, values: 0, vary: true },
        b"last-modified" => Known { index: 44, values: 0, vary: true },
        b"link" => Known { index: 45, values: 0, vary: false },
        b"location" => Known { index: 46, values: 0, vary: true },
        b"max-forwards" => Known { index: 47, values: 0, vary: false },
        b"proxy-authenticate" => Known { index: 48, values: 0, vary: false },
        b"proxy-authorization" => Known { index: 49, values: 0, vary: true },
        b"range" => Known { index: 50, values: 0, vary: true },
        b"referer" => Known { index: 51, values: 0, vary: false },
        b"refresh" => Known { index: 52, values: 0, vary: false },
        b"retry-after" => Known { index: 53, values: 0, vary: false },
        b"server" => Known { index: 54, values: 0, vary: false },
        b"set-cookie" => Known { index: 55, values: 0, vary: true },
        b"strict-transport-security" => Known { index: 56, values: 0, vary: false },
        b"transfer-encoding" => Known { index: 57, values: 0, vary: false },
        b"user-agent" => Known { index: 58, values: 0, vary: false },
        b"vary" => Known { index: 59, values: 0, vary: false },
        b"via" => Known { index: 60, values: 0, vary: false },
        b"www-authenticate" => Known { index: 61, values: 0, vary: false },
        b"x-amzn-requestid"
        | b"x-amzn-trace-id"
        | b"x-request-id"
        | b"traceparent"
        | b"tracestate"
        | b"x-amz-date"
        | b"x-amz-security-token"
        | b"x-amz-content-sha256"
        | b"grpc-timeout" => Known { index: 0, values: 0, vary: true },
        _ => Known::UNKNOWN,
    }
}

fn put_integer(out: &mut Vec<u8>, flags: u8, n: u8, mut value: u64) {
    let mask = (1u8 << n) - 1;
    if value < u64::from(mask) {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask);
    value -= u64::from(mask);
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A raw (not Huffman-coded) string literal.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_integer(out, 0x00, 7, s.len() as u64);
    out.extend_from_slice(s);
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "a header block ends inside a field",
            Self::Overflow => "an integer in a header block is too large",
            Self::BadIndex => "a header block names a table entry that does not exist",
            Self::Huffman => "a Huffman-coded string is malformed",
            Self::TableSize => "a dynamic table size update is over the limit or out of place",
        })
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests;
