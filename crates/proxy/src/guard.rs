//! The framing guard: a small state machine that follows the bytes a client sends, request head
//! by request head and body by body, and flags the stream as *poisoned* when its framing is
//! ambiguous or malformed: both `Content-Length` and `Transfer-Encoding`, lines ended by a bare
//! LF, malformed chunk-size lines. The head parser (`h1`, on httparse) refuses the rest of what
//! is malformed (bare CR, obs-fold, invalid header names, bad Content-Length values).
//!
//! The guard sees every byte before it is parsed, so by the time a head is parsed the guard has
//! seen all of it (and maybe more). The connection refuses requests on a poisoned connection
//! with 400 and closes it; a request body stops being forwarded once the stream is poisoned, so
//! nothing after an ambiguity reaches a target.
//!
//! It also enforces the head limits ([`Limits`]): a head longer than the byte limit, or with
//! more header fields than allowed, *refuses* the stream. Unlike poison, a refusal stops the
//! bytes themselves: [`FramingGuard::scan`] says how many bytes of a read may be kept, which is
//! never past the point where a head went over a limit, so the requests before it are answered
//! and then the connection answers 400 itself (see `conn`).
//!
//! Cost: heads are scanned line by line (one search for CR/LF per line, the first bytes of each
//! line copied, two counters updated); bodies with a length are skipped in O(1) per read;
//! chunked bodies scan only their size lines.

use crate::error::ErrorKind;

/// Bytes of each line kept for inspection: enough for `transfer-encoding: chunked` and any sane
/// `content-length` value.
const PREFIX: usize = 64;

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// The limits on a request head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Most bytes in a head: its request line, header lines and final empty line, CR LF
    /// included (and any empty lines before the request line).
    pub(crate) head_bytes: usize,
    /// Most header fields in a head.
    pub(crate) headers: usize,
}

/// Follows one client's request stream. See the module docs.
#[derive(Debug)]
pub(crate) struct FramingGuard {
    state: State,
    limits: Limits,
}

#[derive(Debug)]
enum State {
    /// Reading a request head (or waiting for the next one).
    Head(HeadScan),
    /// Inside a body framed by Content-Length.
    Body { remaining: u64 },
    /// Reading a chunk-size line.
    ChunkSize(ChunkLine),
    /// Inside chunk data.
    ChunkData { remaining: u64 },
    /// After chunk data: CR LF must follow.
    ChunkEnd { cr: bool },
    /// The trailer section of a chunked body, up to its empty line.
    Trailers(Line),
    /// Ambiguous or malformed framing was seen; nothing more is inspected.
    Poisoned,
    /// A head went over a limit (the kind says which); no more bytes may pass.
    Refused(ErrorKind),
}

/// One line of a head or trailer section, as far as it has arrived.
#[derive(Clone, Debug)]
struct Line {
    prefix: [u8; PREFIX],
    len: usize,
    cr: bool,
}

enum LineStep {
    Bad,
    Done,
    More,
}

#[derive(Debug)]
struct HeadScan {
    line: Line,
    started: bool,
    request_line: bool,
    content_length: Option<u64>,
    chunked: bool,
    /// Bytes of the head so far (never more than the limit).
    bytes: usize,
    /// Header lines completed so far.
    fields: usize,
}

#[derive(Debug, Default)]
struct ChunkLine {
    size: u64,
    digits: u8,
    ext: bool,
    cr: bool,
    len: usize,
}

/// What a step of the scanner did (small: a step is returned for every line).
enum Step {
    /// Stay in the current state (more bytes needed).
    Stay,
    /// Move to this state.
    To(Next),
    /// Poison the stream.
    Poison,
    /// Refuse the stream: a head went over a limit.
    Refuse(ErrorKind),
}

/// The state a step moves to, without the state's buffers (built in place by [`Next::state`]).
#[derive(Clone, Copy)]
enum Next {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
}

impl Next {
    fn state(self) -> State {
        match self {
            Next::Head => State::Head(HeadScan::new()),
            Next::Body(remaining) => State::Body { remaining },
            Next::ChunkSize => State::ChunkSize(ChunkLine::default()),
            Next::ChunkData(remaining) => State::ChunkData { remaining },
            Next::ChunkEnd => State::ChunkEnd { cr: false },
            Next::Trailers => State::Trailers(Line::new()),
        }
    }
}

// === impl FramingGuard ===

impl FramingGuard {
    /// A guard at the start of a connection.
    pub(crate) fn new(limits: Limits) -> Self {
        Self { state: State::Head(HeadScan::new()), limits }
    }

    /// Follows `buf`, the next bytes the client sent. Returns how many of them may be handed
    /// on: all of them, unless the stream is refused, in which case the bytes before the point
    /// where a head went over a limit (and none once refused).
    pub(crate) fn scan(&mut self, buf: &[u8]) -> usize {
        let mut rest = buf;
        while !rest.is_empty() {
            let (used, step) = match &mut self.state {
                State::Head(head) => head.feed(rest, self.limits),
                State::Body { remaining } => skip(remaining, rest, Next::Head),
                State::ChunkSize(line) => line.feed(rest),
                State::ChunkData { remaining } => skip(remaining, rest, Next::ChunkEnd),
                State::ChunkEnd { cr } => chunk_end(cr, rest),
                State::Trailers(line) => trailers(line, rest),
                State::Poisoned => break,
                State::Refused(_) => return buf.len() - rest.len(),
            };
            rest = rest.get(used..).unwrap_or_default();
            match step {
                Step::Stay => {}
                Step::To(next) => self.state = next.state(),
                Step::Poison => {
                    self.state = State::Poisoned;
                    break;
                }
                Step::Refuse(kind) => {
                    self.state = State::Refused(kind);
                    return buf.len() - rest.len();
                }
            }
        }
        buf.len()
    }

    /// Whether ambiguous or malformed framing was seen.
    pub(crate) fn is_poisoned(&self) -> bool {
        matches!(self.state, State::Poisoned)
    }

    /// Why the stream was refused, if it was: [`ErrorKind::HeadTooLarge`] or
    /// [`ErrorKind::TooManyHeaders`].
    pub(crate) fn refusal(&self) -> Option<ErrorKind> {
        match self.state {
            State::Refused(kind) => Some(kind),
            _ => None,
        }
    }

    /// Whether part of a request head has arrived, but not all of it.
    pub(crate) fn mid_head(&self) -> bool {
        matches!(&self.state, State::Head(h) if h.started)
    }
}

/// Skips up to `remaining` bytes of a body; then moves to `next`.
fn skip(remaining: &mut u64, buf: &[u8], next: Next) -> (usize, Step) {
    let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
    *remaining -= n as u64;
    (n, if *remaining == 0 { Step::To(next) } else { Step::Stay })
}

fn chunk_end(cr: &mut bool, buf: &[u8]) -> (usize, Step) {
    match (*cr, buf.first()) {
        (false, Some(b'\r')) => {
            *cr = true;
            (1, Step::Stay)
        }
        (true, Some(b'\n')) => (1, Step::To(Next::ChunkSize)),
        _ => (1, Step::Poison),
    }
}

fn trailers(line: &mut Line, buf: &[u8]) -> (usize, Step) {
    let (used, step) = line.feed(buf);
    let step = match step {
        LineStep::More => Step::Stay,
        LineStep::Bad => Step::Poison,
        LineStep::Done if line.len == 0 => Step::To(Next::Head),
        LineStep::Done if line.starts_with_whitespace() => Step::Poison,
        LineStep::Done => {
            line.reset();
            Step::Stay
        }
    };
    (used, step)
}

// === impl Line ===

impl Line {
    fn new() -> Self {
        Self { prefix: [0; PREFIX], len: 0, cr: false }
    }

    fn reset(&mut self) {
        self.len = 0;
        self.cr = false;
    }

    /// Takes bytes up to the end of the line (CR LF). A LF without CR, or a CR without LF,
    /// is bad.
    fn feed(&mut self, buf: &[u8]) -> (usize, LineStep) {
        if self.cr {
            return (1, if buf.first() == Some(&b'\n') { LineStep::Done } else { LineStep::Bad });
        }
        // Every byte a client sends passes here: searched a vector at a time.
        let Some(at) = memchr::memchr2(b'\r', b'\n', buf) else {
            self.push(buf);
            return (buf.len(), LineStep::More);
        };
        self.push(buf.get(..at).unwrap_or_default());
        if buf.get(at) == Some(&b'\n') {
            return (at + 1, LineStep::Bad);
        }
        match buf.get(at + 1) {
            None => {
                self.cr = true;
                (at + 1, LineStep::More)
            }
            Some(b'\n') => (at + 2, LineStep::Done),
            Some(_) => (at + 2, LineStep::Bad),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.len < PREFIX {
            let n = bytes.len().min(PREFIX - self.len);
            self.prefix[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        }
        self.len += bytes.len();
    }

    /// The line's first bytes (all of it when it is short).
    fn kept(&self) -> &[u8] {
        &self.prefix[..self.len.min(PREFIX)]
    }

    fn starts_with_whitespace(&self) -> bool {
        matches!(self.kept().first(), Some(b' ' | b'\t'))
    }
}

// === impl HeadScan ===

impl HeadScan {
    fn new() -> Self {
        Self {
            line: Line::new(),
            started: false,
            request_line: false,
            content_length: None,
            chunked: false,
            bytes: 0,
            fields: 0,
        }
    }

    /// Takes bytes of the head, never past the byte limit: the byte after it, or the first byte
    /// of a header line beyond the field limit, refuses the stream (with `used` the bytes
    /// before it).
    fn feed(&mut self, buf: &[u8], limits: Limits) -> (usize, Step) {
        self.started = true;
        let room = limits.head_bytes.saturating_sub(self.bytes);
        if room == 0 {
            return (0, Step::Refuse(ErrorKind::HeadTooLarge));
        }
        if self.request_line
            && self.fields >= limits.headers
            && self.line.len == 0
            && !self.line.cr
            && !matches!(buf.first(), Some(b'\r' | b'\n'))
        {
            // A header line starts (anything but the empty line that ends the head).
            return (0, Step::Refuse(ErrorKind::TooManyHeaders));
        }
        let (used, step) = self.line.feed(buf.get(..room).unwrap_or(buf));
        self.bytes += used;
        let step = match step {
            LineStep::More => Step::Stay,
            LineStep::Bad => Step::Poison,
            LineStep::Done => self.line_done(),
        };
        (used, step)
    }

    fn line_done(&mut self) -> Step {
        if self.line.len == 0 {
            if !self.request_line {
                // Empty lines before a request line are allowed (RFC 9112 §2.2).
                self.line.reset();
                return Step::Stay;
            }
            return self.end_of_head();
        }
        if !self.request_line {
            self.request_line = true;
        } else if !self.header_line() {
            return Step::Poison;
        } else {
            self.fields += 1;
        }
        self.line.reset();
        Step::Stay
    }

    /// Notes the framing headers of one header line; false if the line is ambiguous.
    fn header_line(&mut self) -> bool {
        if self.line.starts_with_whitespace() {
            return false; // obs-fold
        }
        let kept = self.line.kept();
        let Some(colon) = memchr::memchr(b':', kept) else {
            return true; // a long name (not a framing header) or no colon (the parser refuses it)
        };
        let (name, value) = (&kept[..colon], &kept[colon + 1..]);
        if crate::swar::eq_lowercase(name, b"transfer-encoding") {
            self.chunked = true;
        } else if crate::swar::eq_lowercase(name, b"content-length") {
            if self.line.len > PREFIX {
                return false;
            }
            let Some(n) = parse_length(value) else { return false };
            if self.content_length.is_some_and(|prev| prev != n) {
                return false;
            }
            self.content_length = Some(n);
        }
        true
    }

    fn end_of_head(&self) -> Step {
        match (self.chunked, self.content_length) {
            (true, Some(_)) => Step::Poison,
            (true, None) => Step::To(Next::ChunkSize),
            (false, Some(n)) if n > 0 => Step::To(Next::Body(n)),
            (false, _) => Step::To(Next::Head),
        }
    }
}

/// A Content-Length value: digits between optional spaces and tabs.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

// === impl ChunkLine ===

impl ChunkLine {
    /// Takes a chunk-size line: hex digits, then optional whitespace or `;extensions`, CR LF.
    fn feed(&mut self, buf: &[u8]) -> (usize, Step) {
        for (i, &b) in buf.iter().enumerate() {
            self.len += 1;
            if self.len > MAX_CHUNK_LINE {
                return (i + 1, Step::Poison);
            }
            if self.cr {
                if b != b'\n' || self.digits == 0 {
                    return (i + 1, Step::Poison);
                }
                let next = if self.size == 0 { Next::Trailers } else { Next::ChunkData(self.size) };
                return (i + 1, Step::To(next));
            }
            match b {
                b'\r' => self.cr = true,
                b'\n' => return (i + 1, Step::Poison),
                _ if self.ext => {}
                b';' | b' ' | b'\t' if self.digits > 0 => self.ext = true,
                _ => {
                    let Some(d) = (b as char).to_digit(16) else { return (i + 1, Step::Poison) };
                    self.digits += 1;
                    if self.digits > 16 {
                        return (i + 1, Step::Poison);
                    }
                    self.size = self.size << 4 | u64::from(d);
                }
            }
        }
        (buf.len(), Step::Stay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { head_bytes: 64 * 1024, headers: 100 };

    /// Feeds `input` whole and byte by byte; both must agree.
    fn poisoned(input: &[u8]) -> bool {
        let mut whole = FramingGuard::new(LIMITS);
        whole.scan(input);
        let mut bytes = FramingGuard::new(LIMITS);
        for b in input {
            bytes.scan(std::slice::from_ref(b));
        }
        assert_eq!(whole.is_poisoned(), bytes.is_poisoned(), "{}", String::from_utf8_lossy(input));
        whole.is_poisoned()
    }

    #[test]
    fn clean_streams_pass() {
        let ok: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
              POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA \r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n\
              GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        // Body bytes that look like framing headers are body bytes.
        let body = b"\ntransfer-encoding: chunked\n\n";
        let mut tricky = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        tricky.extend_from_slice(body);
        tricky.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        for input in ok.iter().copied().chain([tricky.as_slice()]) {
            assert!(!poisoned(input), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn ambiguous_streams_are_poisoned() {
        let bad: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5x\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n",
        ];
        for input in bad {
            assert!(poisoned(input), "{}", String::from_utf8_lossy(input));
        }
    }

    /// Feeds `input` whole, in reads of 7 bytes, and byte by byte; all must agree on how many
    /// bytes pass and why the stream was refused.
    fn passed(limits: Limits, input: &[u8]) -> (usize, Option<ErrorKind>) {
        let mut whole = FramingGuard::new(limits);
        let got = (whole.scan(input), whole.refusal());
        for size in [7, 1] {
            let mut g = FramingGuard::new(limits);
            let passed = input.chunks(size).map(|c| g.scan(c)).sum::<usize>();
            assert_eq!((passed, g.refusal()), got, "reads of {size}");
        }
        assert!(!whole.is_poisoned());
        got
    }

    /// A GET whose head is exactly `len` bytes, padded by one header.
    fn head_of(len: usize) -> Vec<u8> {
        let start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
        let mut head = start.to_vec();
        head.resize(len - 4, b'p');
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    #[test]
    fn heads_up_to_the_byte_limit_pass() {
        let limits = Limits { head_bytes: 200, headers: 100 };
        // Exactly at the limit, twice on one connection, with a body in between.
        let mut input = head_of(200);
        input.extend_from_slice(b"POST / HTTP/1.1\r\nContent-Length: 300\r\n\r\n");
        input.resize(input.len() + 300, b'x');
        input.extend_from_slice(&head_of(200));
        assert_eq!(passed(limits, &input), (input.len(), None));
        // One byte over: everything before the excess byte passes, nothing after.
        let mut over = head_of(200);
        over.extend_from_slice(&head_of(201));
        assert_eq!(passed(limits, &over), (400, Some(ErrorKind::HeadTooLarge)));
        // A line that never ends is cut at the limit.
        let endless = [b"GET /".as_slice(), &[b'a'; 1000]].concat();
        assert_eq!(passed(limits, &endless), (200, Some(ErrorKind::HeadTooLarge)));
        // Empty lines before a request line count.
        let mut leading = b"\r\n".to_vec();
        leading.extend_from_slice(&head_of(198));
        assert_eq!(passed(limits, &leading), (leading.len(), None));
        leading.splice(0..0, *b"\r\n");
        assert_eq!(passed(limits, &leading), (200, Some(ErrorKind::HeadTooLarge)));
    }

    #[test]
    fn heads_up_to_the_field_limit_pass() {
        let limits = Limits { head_bytes: 64 * 1024, headers: 3 };
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(passed(limits, ok), (ok.len(), None));
        // The fourth field is refused before its first byte.
        let four = b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\nD: 3\r\n\r\n";
        let at = four.windows(2).position(|w| w == b"D:").unwrap();
        assert_eq!(passed(limits, four), (at, Some(ErrorKind::TooManyHeaders)));
        // Chunked trailers are not head fields.
        let trailers =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(passed(limits, trailers), (trailers.len(), None));
    }

    #[test]
    fn mid_head_tracks_partial_heads() {
        let mut g = FramingGuard::new(LIMITS);
        assert!(!g.mid_head());
        g.scan(b"GET / HT");
        assert!(g.mid_head());
        g.scan(b"TP/1.1\r\nHost: a\r\n\r\n");
        assert!(!g.mid_head());
    }
}
