//! HTTP/1.1 on the wire, as the proxy needs it: request and response heads parsed in place
//! (httparse, positions into the connection's buffer, no copy and no map), how a message's body
//! is framed, a chunked-body decoder, and the read buffer both sides use.
//!
//! Strictness is shared with the framing guard (`guard`), which has seen every client byte
//! before it is parsed here: the guard refuses ambiguity (CL with TE, bare LF, bad chunk lines)
//! and oversized heads; this module refuses what the guard leaves to a parser (bad names, bad
//! request lines, bad lengths, unsupported transfer codings).

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::error::ErrorKind;

/// Most header fields parsed in a target's response head.
const MAX_RESPONSE_HEADERS: usize = 128;

/// A field of a parsed head: where its name and value are in the buffer, and what the name is
/// to the proxy.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    pub(crate) name: Range<usize>,
    pub(crate) value: Range<usize>,
    pub(crate) kind: Name,
}

/// The header names the proxy itself acts on, recognised once when a head is parsed so that
/// writing the head on (and looking for `Host` or `traceparent`) compares a byte per field
/// rather than the name with each of a dozen others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// `keep-alive`, `proxy-connection`, `te`, `trailer`, `upgrade`: hop-by-hop fields the
    /// proxy drops without looking at them.
    HopByHop,
    Expect,
    RequestId,
    ForwardedFor,
    ForwardedPort,
    ForwardedProto,
    /// `x-amzn-lattice-*`, which only the proxy may set.
    Lattice,
    Traceparent,
}

impl Name {
    /// What `name` is (any case): one switch on its length, then a comparison or two.
    pub(crate) fn of(name: &[u8]) -> Name {
        let is = |known: &[u8]| crate::swar::eq_lowercase(name, known);
        let kind = match name.len() {
            2 if is(b"te") => Name::HopByHop,
            4 if is(b"host") => Name::Host,
            6 if is(b"expect") => Name::Expect,
            7 if is(b"trailer") || is(b"upgrade") => Name::HopByHop,
            10 if is(b"connection") => Name::Connection,
            10 if is(b"keep-alive") => Name::HopByHop,
            11 if is(b"traceparent") => Name::Traceparent,
            14 if is(b"content-length") => Name::ContentLength,
            15 if is(b"x-forwarded-for") => Name::ForwardedFor,
            16 if is(b"x-amzn-requestid") => Name::RequestId,
            16 if is(b"x-forwarded-port") => Name::ForwardedPort,
            16 if is(b"proxy-connection") => Name::HopByHop,
            17 if is(b"transfer-encoding") => Name::TransferEncoding,
            17 if is(b"x-forwarded-proto") => Name::ForwardedProto,
            _ => Name::Other,
        };
        const LATTICE: &[u8] = b"x-amzn-lattice-";
        if kind == Name::Other
            && name.len() >= LATTICE.len()
            && crate::swar::eq_lowercase(&name[..LATTICE.len()], LATTICE)
        {
            return Name::Lattice;
        }
        kind
    }

    /// A field that describes one connection (RFC 9110 §7.6.1) or the body's framing on it:
    /// never passed on as it came.
    pub(crate) fn hop_by_hop(self) -> bool {
        matches!(self, Name::Connection | Name::HopByHop | Name::TransferEncoding | Name::ContentLength)
    }
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes (a request's `Content-Length: 0` stays `Length(0)`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// A parsed request head. Positions are relative to the start of the head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// Bytes the head takes (through its empty line).
    pub(crate) len: usize,
    pub(crate) method: Range<usize>,
    pub(crate) target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor: u8,
    pub(crate) fields: Vec<Field>,
    pub(crate) framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`.
    pub(crate) expects_continue: bool,
    /// A HEAD request (its response has no body).
    pub(crate) is_head: bool,
    /// A method a proxy may send again when the target broke off before answering (RFC 9110
    /// §9.2.2, with GET, HEAD, OPTIONS and TRACE; PUT and DELETE are left out: a proxy cannot
    /// know they were not applied).
    pub(crate) idempotent: bool,
}

/// A parsed response head. Positions are relative to the start of the head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) reason: Range<usize>,
    pub(crate) fields: Vec<Field>,
    /// `Transfer-Encoding: chunked` (last coding), else a valid `Content-Length`, else until
    /// close. Whether the body exists at all depends on the request (see [`response_framing`]).
    pub(crate) framing: Framing,
    /// The target keeps the connection open after this response, as far as its head says (not
    /// `close`, or HTTP/1.0 with `keep-alive`). A body that runs to the connection's end ends it
    /// all the same: [`target_keeps`].
    pub(crate) keep_alive: bool,
}

/// A chunked body, decoded as it arrives.
#[derive(Debug, Default)]
pub(crate) struct ChunkDecoder {
    state: Chunk,
    /// Digits of the size line so far.
    size: u64,
    digits: u8,
    /// Bytes of the size line (extensions included) so far.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    /// After the size digits: extensions up to CR.
    Ext,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    /// Trailer section, at the start of a line (an empty one ends the body).
    Trailer,
    /// Inside a trailer field line.
    TrailerField,
    /// After CR: `true` when the line was empty.
    TrailerLf(bool),
    Done,
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// Input bytes used.
    pub(crate) used: usize,
    /// Body data within the used bytes, if this step reached any.
    pub(crate) data: Option<Range<usize>>,
    /// The body's last byte (the trailer section's end) was used.
    pub(crate) done: bool,
}

/// The client connection's read buffer: `data[start..end]` holds bytes read and not yet used.
pub(crate) struct Buf {
    data: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Taken from this thread's spares ([`Buf::pooled`]), and given back when dropped.
    pooled: bool,
}

/// The size of [`Buf::pooled`] buffers.
const POOLED: usize = 16 * 1024;
/// Most spare buffers a thread keeps (4 MiB): as many as one client connection's streams can
/// have in flight, so that a busy connection's exchanges reuse them rather than each
/// allocating and zeroing its own.
const MAX_SPARE: usize = 256;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Longest chunk-size line (with extensions) a target may send.
const MAX_CHUNK_LINE: usize = 4096;
/// Longest trailer section a target may send.
const MAX_TRAILERS: usize = 64 * 1024;

// === impl Buf ===

impl Buf {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self { data: vec![0; n], start: 0, end: 0, pooled: false }
    }

    /// A 16 KiB buffer for an exchange that needs one briefly (an HTTP/2 client's request gone
    /// down to HTTP/1.1), reused from this thread's spares: a fresh one costs zeroing it, and,
    /// as the heap's top grows and is trimmed around it, page faults.
    pub(crate) fn pooled() -> Self {
        let data = SPARE.with_borrow_mut(Vec::pop).unwrap_or_else(|| vec![0; POOLED]);
        Self { data, start: 0, end: 0, pooled: true }
    }

    /// The unused bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes of room in all.
    pub(crate) fn capacity(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Marks `n` bytes used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into: at least `want` bytes (moving unused bytes to the front, then growing
    /// if `limit` allows), or `None` when the unused bytes already fill `limit`.
    pub(crate) fn spare(&mut self, want: usize, limit: usize) -> Option<&mut [u8]> {
        if self.data.len() - self.end < want && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < want && self.data.len() < limit {
            let grown = (self.data.len() * 2).max(self.end + want).min(limit);
            self.data.resize(grown, 0);
        }
        let room = &mut self.data[self.end..];
        (!room.is_empty()).then_some(room)
    }

    /// The room after the unused bytes (where a read just put its bytes).
    pub(crate) fn spare_bytes(&self) -> &[u8] {
        &self.data[self.end..]
    }

    /// Records `n` bytes read into [`Buf::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Gives memory back after a large head or body has passed through.
    pub(crate) fn shrink(&mut self, keep: usize) {
        if self.is_empty() && self.data.len() > keep {
            self.data.truncate(keep);
            self.data.shrink_to_fit();
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if self.pooled && self.data.len() == POOLED {
            let data = std::mem::take(&mut self.data);
            SPARE.with_borrow_mut(|spare| {
                if spare.len() < MAX_SPARE {
                    spare.push(data);
                }
            });
        }
    }
}

// === parsing ===

/// `spare`, emptied, with room for `len` fields (a new list if it had none).
fn reuse(spare: &mut Vec<Field>, len: usize) -> Vec<Field> {
    let mut fields = std::mem::take(spare);
    fields.clear();
    fields.reserve(len);
    fields
}

/// Gives a head's field list back to `spare` for the next head, unless a head of many fields
/// made it large.
pub(crate) fn give_back(spare: &mut Vec<Field>, fields: Vec<Field>) {
    if fields.capacity() <= KEPT_FIELDS {
        *spare = fields;
    }
}

/// The most fields a kept list has room for (a kilobyte and a half).
const KEPT_FIELDS: usize = 40;

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete.
pub(crate) fn parse_request(buf: &[u8], max_headers: usize) -> Result<Option<RequestHead>, ErrorKind> {
    parse_request_into(buf, max_headers, &mut Vec::new())
}

/// [`parse_request`], its fields put in `spare` (emptied first; taken once the head is
/// complete): a connection gives each head's list back for the next, not allocating one a
/// request.
pub(crate) fn parse_request_into(
    buf: &[u8],
    max_headers: usize,
    spare: &mut Vec<Field>,
) -> Result<Option<RequestHead>, ErrorKind> {
    // Uninitialised: httparse writes the fields it finds (4 KB of zeros a request otherwise).
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let mut heap;
    let headers: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= storage.len() {
        &mut storage[..max_headers]
    } else {
        heap = std::iter::repeat_with(MaybeUninit::uninit).take(max_headers).collect::<Vec<_>>();
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ErrorKind::TooManyHeaders),
        Err(_) => return Err(ErrorKind::BadFraming),
    };
    let at = |s: &[u8]| position(buf, s);
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(ErrorKind::BadFraming);
    };
    let mut head = RequestHead {
        len,
        method: at(method.as_bytes()),
        target: at(target.as_bytes()),
        minor,
        fields: reuse(spare, req.headers.len()),
        framing: Framing::Empty,
        keep_alive: minor == 1,
        expects_continue: false,
        is_head: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE"),
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let kind = Name::of(name);
        head.fields.push(Field { name: at(name), value: at(h.value), kind });
        match kind {
            Name::ContentLength => {
                let n = parse_length(h.value).ok_or(ErrorKind::BadFraming)?;
                if length.is_some_and(|l| l != n) {
                    return Err(ErrorKind::BadFraming);
                }
                length = Some(n);
            }
            Name::TransferEncoding => {
                // Only `chunked`, once, is understood (RFC 9112 §6.1: anything else is a 501 or
                // a 400; ambiguity is never forwarded); HTTP/1.0 has no transfer codings.
                if chunked || minor == 0 || !crate::swar::eq_lowercase(h.value.trim_ascii(), b"chunked") {
                    return Err(ErrorKind::BadFraming);
                }
                chunked = true;
            }
            Name::Connection => head.keep_alive = keep_alive(h.value, minor, head.keep_alive),
            Name::Expect if crate::swar::eq_lowercase(h.value.trim_ascii(), b"100-continue") => {
                head.expects_continue = minor == 1;
            }
            _ => {}
        }
    }
    head.framing = match (chunked, length) {
        (true, Some(_)) => return Err(ErrorKind::BadFraming),
        (true, None) => Framing::Chunked,
        (false, None) => Framing::Empty,
        // `Content-Length: 0` is kept as it came (some targets insist on a length for a POST).
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some(head))
}

/// Parses the response head at the start of `buf`: `Ok(None)` while it is incomplete, `Err`
/// when it is not HTTP.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, ()> {
    parse_response_into(buf, &mut Vec::new())
}

/// [`parse_response`], its fields put in `spare` as [`parse_request_into`] does.
pub(crate) fn parse_response_into(buf: &[u8], spare: &mut Vec<Field>) -> Result<Option<ResponseHead>, ()> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let at = |s: &[u8]| position(buf, s);
    let (Some(status), Some(minor)) = (res.code, res.version) else { return Err(()) };
    let mut head = ResponseHead {
        len,
        status,
        reason: at(res.reason.unwrap_or_default().as_bytes()),
        fields: reuse(spare, res.headers.len()),
        framing: Framing::Close,
        keep_alive: minor == 1,
    };
    let mut length: Option<u64> = None;
    let mut coded = false;
    let mut chunked = false;
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        let kind = Name::of(name);
        head.fields.push(Field { name: at(name), value: at(h.value), kind });
        match kind {
            Name::ContentLength => {
                let n = parse_length(h.value).ok_or(())?;
                if length.is_some_and(|l| l != n) {
                    return Err(());
                }
                length = Some(n);
            }
            Name::TransferEncoding => {
                coded = true;
                // The last coding decides: chunked ends the body, anything else runs to close.
                chunked = tokens(h.value).last().is_some_and(|t| crate::swar::eq_lowercase(t, b"chunked"));
            }
            Name::Connection => head.keep_alive = keep_alive(h.value, minor, head.keep_alive),
            _ => {}
        }
    }
    head.framing = match (coded, chunked, length) {
        (true, true, _) => Framing::Chunked,
        (true, false, _) => Framing::Close,
        (false, _, Some(n)) => Framing::Length(n),
        (false, _, None) => Framing::Close,
    };
    Ok(Some(head))
}

/// Whether a response to `method` with `status` has a body at all, and how it is framed.
pub(crate) fn response_framing(head: &ResponseHead, is_head: bool) -> Framing {
    let bodiless = is_head || head.status == 204 || head.status == 304 || (100..200).contains(&head.status);
    if bodiless || head.framing == Framing::Length(0) { Framing::Empty } else { head.framing }
}

/// Whether the target's connection can carry another exchange after this response, whose body
/// is `framing` ([`response_framing`]): a 204, a 304 or the answer to a HEAD has no body and
/// keeps the connection even without a length; a body delimited by the close does not.
pub(crate) fn target_keeps(head: &ResponseHead, framing: Framing) -> bool {
    head.keep_alive && framing != Framing::Close
}

/// Whether a message keeps its connection open, after a `Connection` field with `value`:
/// `close` closes; `keep-alive` keeps an HTTP/1.0 connection (1.1 keeps it by default).
fn keep_alive(value: &[u8], minor: u8, current: bool) -> bool {
    // The usual values, whole, before the general case.
    if crate::swar::eq_lowercase(value, b"close") {
        return false;
    }
    if crate::swar::eq_lowercase(value, b"keep-alive") {
        return current || minor == 0;
    }
    keep_alive_by_tokens(value, minor, current)
}

/// [`keep_alive`] token by token, as RFC 9112 §9.3 reads the list.
fn keep_alive_by_tokens(value: &[u8], minor: u8, current: bool) -> bool {
    tokens(value).fold(current, |keep, token| {
        if crate::swar::eq_lowercase(token, b"close") {
            false
        } else if crate::swar::eq_lowercase(token, b"keep-alive") && minor == 0 {
            true
        } else {
            keep
        }
    })
}

/// Where `part` (a slice httparse returned) lies in `buf`. An empty part may be a static `""`
/// outside the buffer (a status line without a reason phrase): it is an empty range.
fn position(buf: &[u8], part: &[u8]) -> Range<usize> {
    let from = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    match from.checked_add(part.len()) {
        Some(end) if end <= buf.len() => from..end,
        _ => 0..0,
    }
}

/// A Content-Length value: digits only, no sign, no overflow.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The comma-separated tokens of a list value, trimmed, empty ones skipped.
pub(crate) fn tokens(v: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

// === impl ChunkDecoder ===

impl ChunkDecoder {
    /// Whether the whole body has been decoded.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes from `input` up to the end of the first run of data (or the body's end): the
    /// caller forwards `data` and calls again with the rest.
    pub(crate) fn decode(&mut self, input: &[u8]) -> Result<Decoded, ()> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                Chunk::Size => match hex(b) {
                    Some(d) if self.digits < 16 => {
                        self.size = self.size << 4 | u64::from(d);
                        self.digits += 1;
                        self.line += 1;
                    }
                    Some(_) => return Err(()),
                    None if self.digits == 0 => return Err(()),
                    None if b == b'\r' => self.state = Chunk::SizeLf,
                    None if b == b';' || b == b' ' || b == b'\t' => {
                        self.state = Chunk::Ext;
                        self.line += 1;
                    }
                    None => return Err(()),
                },
                Chunk::Ext => {
                    self.line += 1;
                    if b == b'\r' {
                        self.state = Chunk::SizeLf;
                    } else if b == b'\n' || self.line > MAX_CHUNK_LINE {
                        return Err(());
                    }
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = if self.size == 0 { Chunk::Trailer } else { Chunk::Data(self.size) };
                    (self.size, self.digits, self.line) = (0, 0, 0);
                }
                Chunk::Data(left) => {
                    let n = usize::try_from(left).map_or(input.len() - i, |l| l.min(input.len() - i));
                    let rest = left - n as u64;
                    self.state = if rest == 0 { Chunk::DataCr } else { Chunk::Data(rest) };
                    return Ok(Decoded { used: i + n, data: Some(i..i + n), done: false });
                }
                Chunk::DataCr => {
                    if b != b'\r' {
                        return Err(());
                    }
                    self.state = Chunk::DataLf;
                }
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = Chunk::Size;
                }
                Chunk::Trailer | Chunk::TrailerField => {
                    // `line` counts the bytes of the whole trailer section.
                    let empty = self.state == Chunk::Trailer;
                    self.state = match b {
                        b'\r' => Chunk::TrailerLf(empty),
                        b'\n' => return Err(()),
                        _ => Chunk::TrailerField,
                    };
                    self.line += 1;
                    if self.line > MAX_TRAILERS {
                        return Err(());
                    }
                }
                Chunk::TrailerLf(empty) => {
                    if b != b'\n' {
                        return Err(());
                    }
                    if empty {
                        self.state = Chunk::Done;
                        return Ok(Decoded { used: i + 1, data: None, done: true });
                    }
                    self.state = Chunk::Trailer;
                }
                Chunk::Done => return Ok(Decoded { used: i, data: None, done: true }),
            }
            if self.line > MAX_CHUNK_LINE && matches!(self.state, Chunk::Size | Chunk::Ext) {
                return Err(());
            }
            i += 1;
        }
        Ok(Decoded { used: i, data: None, done: self.state == Chunk::Done })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_values_keep_or_close() {
        let values: [&[u8]; 9] = [
            b"close",
            b"keep-alive",
            b"Keep-Alive",
            b"CLOSE",
            b"close, keep-alive",
            b"keep-alive, close",
            b"upgrade",
            b"",
            b"keep-alive,",
        ];
        for value in values {
            for (minor, current) in [(0, false), (0, true), (1, false), (1, true)] {
                assert_eq!(
                    keep_alive(value, minor, current),
                    keep_alive_by_tokens(value, minor, current),
                    "{value:?} {minor} {current}"
                );
            }
        }
    }

    #[test]
    fn names_the_proxy_acts_on_are_recognised_in_any_case() {
        let known = [
            ("te", Name::HopByHop),
            ("host", Name::Host),
            ("expect", Name::Expect),
            ("trailer", Name::HopByHop),
            ("upgrade", Name::HopByHop),
            ("connection", Name::Connection),
            ("keep-alive", Name::HopByHop),
            ("traceparent", Name::Traceparent),
            ("content-length", Name::ContentLength),
            ("x-forwarded-for", Name::ForwardedFor),
            ("x-amzn-requestid", Name::RequestId),
            ("x-forwarded-port", Name::ForwardedPort),
            ("proxy-connection", Name::HopByHop),
            ("transfer-encoding", Name::TransferEncoding),
            ("x-forwarded-proto", Name::ForwardedProto),
            ("x-amzn-lattice-", Name::Lattice),
            ("x-amzn-lattice-identity", Name::Lattice),
            ("x-amzn-lattice-target", Name::Lattice),
            ("x-amzn-lattice-network", Name::Lattice),
        ];
        for (name, kind) in known {
            assert_eq!(Name::of(name.as_bytes()), kind, "{name}");
            assert_eq!(Name::of(name.to_ascii_uppercase().as_bytes()), kind, "{name}");
        }
        // Same lengths as known names, or near misses: none is anything to the proxy.
        for other in [
            "",
            "t",
            "tf",
            "hos",
            "hosts",
            "xpect",
            "trailers",
            "connectio",
            "keep-alivf",
            "traceparenu",
            "content-lengtx",
            "x-forwarded-fos",
            "x-amzn-requestie",
            "x-forwarded-pors",
            "proxy-connectioo",
            "transfer-encodinf",
            "x-forwarded-protp",
            "x-amzn-lattice",
            "x-amzn-latticeX-",
            "content-type",
            "x-amzn-trace-id",
            "server",
        ] {
            assert_eq!(Name::of(other.as_bytes()), Name::Other, "{other:?}");
        }
        assert!(
            [Name::Connection, Name::HopByHop, Name::TransferEncoding, Name::ContentLength]
                .iter()
                .all(|k| k.hop_by_hop())
        );
        assert!(!Name::Host.hop_by_hop() && !Name::Expect.hop_by_hop() && !Name::Other.hop_by_hop());
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool, usize), ()> {
        let mut d = ChunkDecoder::default();
        let (mut out, mut at) = (Vec::new(), 0);
        // One byte at a time, the hardest way it can arrive.
        while at < input.len() && !d.is_done() {
            let step = d.decode(&input[at..=at])?;
            if let Some(r) = step.data {
                out.extend_from_slice(&input[at..=at][r]);
            }
            at += step.used;
        }
        Ok((out, d.is_done(), at))
    }

    #[test]
    fn a_field_list_given_back_is_the_next_heads() {
        let names =
            |buf: &[u8], fields: &[Field]| fields.iter().map(|f| buf[f.name.clone()].to_vec()).collect::<Vec<_>>();
        let mut spare = Vec::new();
        let first = b"GET / HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nX-Two: 2\r\n\r\n";
        let head = parse_request_into(first, 100, &mut spare).unwrap().unwrap();
        let list = head.fields.as_ptr();
        give_back(&mut spare, head.fields);
        // An incomplete head leaves the list where it is.
        assert!(parse_request_into(b"GET / HTTP/1.1\r\nHost: b\r\n", 100, &mut spare).unwrap().is_none());
        assert_eq!((spare.as_ptr(), spare.len()), (list, 3));
        // The next head gets the same list, holding its own fields only.
        let second = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n";
        let head = parse_request_into(second, 100, &mut spare).unwrap().unwrap();
        assert_eq!(head.fields.as_ptr(), list);
        assert_eq!(names(second, &head.fields), [b"Host".to_vec()]);
        assert!(spare.is_empty());
        give_back(&mut spare, head.fields);
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let head = parse_response_into(response, &mut spare).unwrap().unwrap();
        assert_eq!((head.fields.as_ptr(), names(response, &head.fields)), (list, vec![b"Content-Length".to_vec()]));
        // A list made large by a head of many fields is not kept.
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(KEPT_FIELDS + 1));
        let head = parse_request_into(many.as_bytes(), 100, &mut spare).unwrap().unwrap();
        give_back(&mut spare, head.fields);
        assert_eq!(spare.capacity(), 0);
    }

    #[test]
    fn chunked_bodies_decode() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        let (out, done, used) = decode_all(input).unwrap();
        assert_eq!((out.as_slice(), done), (b"hello world".as_slice(), true));
        assert_eq!(used, input.len() - 4, "stops at the body's end");
        let (out, done, _) = decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!((out.len(), done), (10, true));
        // Whole input at once: one step per data run.
        let mut d = ChunkDecoder::default();
        let input = b"3\r\nabc\r\n0\r\n\r\n";
        let first = d.decode(input).unwrap();
        assert_eq!(first, Decoded { used: 6, data: Some(3..6), done: false });
        let second = d.decode(&input[6..]).unwrap();
        assert_eq!(second, Decoded { used: 7, data: None, done: true });
        for bad in [&b"zz\r\n"[..], b"5\nhello", b"3\r\nabcd\r\n", b"\r\n", b"12345678901234567\r\n", b"0\r\nx\n"] {
            assert!(decode_all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn request_heads() {
        let raw = b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let head = parse_request(raw, 100).unwrap().unwrap();
        assert_eq!(head.len, raw.len() - 5);
        assert_eq!(&raw[head.target.clone()], b"/p?q=1");
        assert_eq!((head.framing, head.keep_alive), (Framing::Length(5), false));
        let zero = parse_request(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 100).unwrap().unwrap();
        assert_eq!(zero.framing, Framing::Length(0));
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", 100).unwrap().is_none());
        let ten = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        assert!(parse_request(ten, 100).unwrap().unwrap().keep_alive);
        let bad: [&[u8]; 5] = [
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nX A: b\r\n\r\n",
        ];
        for raw in bad {
            assert!(parse_request(raw, 100).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(3));
        assert_eq!(parse_request(many.as_bytes(), 2).unwrap_err(), ErrorKind::TooManyHeaders);
    }

    #[test]
    fn response_heads() {
        let bare = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
        let head = parse_response(bare).unwrap().unwrap();
        assert_eq!((head.status, head.reason), (200, 0..0));
        let head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc").unwrap().unwrap();
        assert_eq!((head.status, head.framing, head.keep_alive), (200, Framing::Length(3), true));
        assert_eq!(response_framing(&head, true), Framing::Empty);
        let head = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        let head = parse_response(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.framing, head.keep_alive), (Framing::Close, false));
        let head = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!(response_framing(&head, false), Framing::Empty);
        // No length, but no body either: the connection stays usable.
        assert!(target_keeps(&head, response_framing(&head, false)));
        let head = parse_response(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(!target_keeps(&head, response_framing(&head, false)));
        assert!(target_keeps(&head, response_framing(&head, true)), "a HEAD's answer has no body");
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
    }
}
