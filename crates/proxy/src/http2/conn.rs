//! One HTTP/2 connection's rules (RFC 9113), without its socket: bytes the peer sent go in
//! ([`Connection::read`]) and come out as [`Event`]s; what this side says (heads, data,
//! trailers, resets) goes in through the `send_*` calls and comes out as bytes
//! ([`Connection::out`]) for the caller to write. Being free of I/O, every rule is tested
//! by feeding bytes, and the same code serves both ends of the proxy: [`Role::Server`] towards
//! clients, [`Role::Client`] towards targets.
//!
//! What it keeps:
//! - the preface and the SETTINGS exchange (acknowledged at once; the peer's initial window,
//!   frame size and stream limit applied as they change);
//! - stream states (idle, open, half-closed either way, closed), concurrency on both sides,
//!   and stream ids that only go up;
//! - flow control both ways: the peer's windows limit what [`Connection::send_data`] takes;
//!   this side's windows are refilled as the caller reports data consumed
//!   ([`Connection::release`]), which is how a slow reader slows its writer;
//! - header blocks across CONTINUATION frames, decoded with the connection's HPACK state, and
//!   checked as RFC 9113 §8 says (names, values, pseudo-fields, connection-specific fields,
//!   `content-length` against the data), bounded by the advertised header list size;
//! - PING answered, PRIORITY ignored, GOAWAY both ways.
//!
//! A peer that breaks a rule of one stream gets that stream reset (RST_STREAM; the caller
//! hears [`Event::Reset`] when it knew the stream); one that breaks a rule of the connection
//! gets a GOAWAY with the reason, and [`Connection::read`] returns the [`Error`] from then on.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use super::frame::{self, DEFAULT_MAX_FRAME_SIZE, Frame, FrameError, MAX_WINDOW, Reason, Setting};
use super::hpack;

/// What a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The window every stream and the connection start with (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: u32 = 65_535;

/// Setting identifiers (RFC 9113 §6.5.2).
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Which end of the connection this side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepts streams (odd ids) from a client.
    Server,
    /// Opens streams towards a server.
    Client,
}

/// What this side allows its peer.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Streams the peer may have open at once (a server's limit on its client).
    pub max_concurrent_streams: u32,
    /// Each stream's receive window (at least 65,535).
    pub stream_window: u32,
    /// The connection's receive window (at least 65,535).
    pub connection_window: u32,
    /// The largest header list the peer may send: names, values and 32 bytes a field
    /// (RFC 9113 §6.5.2). A server answers a larger request with 431.
    pub max_header_list_size: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_header_list_size: 64 << 10,
        }
    }
}

/// A connection error: the connection is over, and a GOAWAY with `reason` is in
/// [`Connection::out`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    pub reason: Reason,
    pub what: &'static str,
}

/// What the peer said, one at a time.
#[derive(Debug)]
pub enum Event<'b> {
    /// A request's head (server) or a response's final head (client; interim 1xx heads are
    /// passed over). `end_stream`: no body or trailers follow.
    Head { stream: u32, head: Head, end_stream: bool },
    /// Part of a body, borrowed from the bytes given to [`Connection::read`]. The caller
    /// reports it consumed with [`Connection::release`] when it has passed it on.
    Data { stream: u32, data: &'b [u8], end_stream: bool },
    /// Trailers, which end the stream.
    Trailers { stream: u32, trailers: Head },
    /// The stream is gone: reset by the peer, or by this side for a rule the peer broke on it
    /// (then `by_peer` is false and an RST_STREAM is in the output).
    Reset { stream: u32, reason: Reason, by_peer: bool },
    /// The peer is closing: streams above `last_stream` that this side opened were not
    /// processed and are gone (safe to send again elsewhere).
    GoAway { last_stream: u32, reason: Reason },
}

/// A decoded header list: the pseudo-fields, and the fields in the order sent.
#[derive(Clone, Default)]
pub struct Head {
    bytes: Vec<u8>,
    fields: Vec<Field>,
    pseudo: [Option<Span>; 5],
    /// RFC 9113's size of the list: names, values and 32 bytes a field.
    size: usize,
}

#[derive(Clone, Copy, Debug)]
struct Span {
    at: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.at as usize..(self.at + self.len) as usize
    }
}

#[derive(Clone, Copy, Debug)]
struct Field {
    name: Span,
    value: Span,
    sensitive: bool,
}

/// The pseudo-fields, by their place in [`Head::pseudo`].
const PSEUDO: [&[u8]; 5] = [b":method", b":scheme", b":authority", b":path", b":status"];
const METHOD: usize = 0;
const SCHEME: usize = 1;
const AUTHORITY: usize = 2;
const PATH: usize = 3;
const STATUS: usize = 4;

/// One HTTP/2 connection's state.
pub struct Connection {
    role: Role,
    config: Config,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    /// A server still waiting for the client's preface.
    want_preface: bool,
    /// The peer's first frame, which must be SETTINGS, has not come.
    want_settings: bool,
    /// The peer's settings that matter here.
    peer_max_frame_size: u32,
    peer_initial_window: u32,
    peer_max_concurrent: u32,
    /// What this side may still send on the connection (can go below 0 only through a
    /// stream's window, never this one).
    send_window: i64,
    /// What the peer may still send on the connection.
    recv_window: i64,
    /// Consumed and not yet given back with a WINDOW_UPDATE.
    recv_unreleased: u32,
    streams: HashMap<u32, Stream, IdState>,
    /// The highest stream id the peer opened (or tried to).
    last_peer: u32,
    /// The id this side opens next (client).
    next_local: u32,
    /// Open streams each side started.
    peer_open: u32,
    local_open: u32,
    /// A header block whose CONTINUATION frames are still coming: (stream, END_STREAM, the
    /// stream depends on itself).
    continuing: Option<(u32, bool, bool)>,
    /// The fragments of that block so far.
    block: Vec<u8>,
    /// What is to be written to the peer.
    out: Vec<u8>,
    /// Encoding space for header blocks.
    scratch: Vec<u8>,
    /// The last stream id of the GOAWAY this side sent.
    sent_goaway: Option<u32>,
    /// The last stream id of the GOAWAY the peer sent.
    recv_goaway: Option<u32>,
    /// A send window grew since [`Connection::take_writable`] was last asked.
    writable: bool,
    /// The connection error that ended it.
    failed: Option<Error>,
}

/// One stream that is not closed.
#[derive(Debug)]
struct Stream {
    send_window: i64,
    recv_window: i64,
    recv_unreleased: u32,
    /// The peer ended its side (END_STREAM).
    recv_closed: bool,
    /// This side ended its side.
    send_closed: bool,
    /// The peer's head has come (a client's: the final one).
    head_received: bool,
    /// This side's head has gone.
    head_sent: bool,
    /// The body bytes the peer's `content-length` still promises.
    remaining: Option<u64>,
    /// The response carries no body whatever its `content-length` says (a HEAD request's).
    bodiless: bool,
    /// The peer opened it.
    peer_started: bool,
}

/// What the header list being decoded is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
    Trailers,
}

// === impl Connection ===

impl Connection {
    /// A connection whose first bytes (a client's preface, or a server's SETTINGS) are already
    /// in [`Connection::out`].
    pub fn new(role: Role, config: Config) -> Self {
        let config = Config {
            stream_window: config.stream_window.clamp(DEFAULT_WINDOW, MAX_WINDOW),
            connection_window: config.connection_window.clamp(DEFAULT_WINDOW, MAX_WINDOW),
            ..config
        };
        let mut out = Vec::with_capacity(16 << 10);
        if role == Role::Client {
            out.extend_from_slice(PREFACE);
        }
        let mut settings = vec![
            (SETTINGS_MAX_CONCURRENT_STREAMS, config.max_concurrent_streams),
            (SETTINGS_INITIAL_WINDOW_SIZE, config.stream_window),
            (SETTINGS_MAX_HEADER_LIST_SIZE, config.max_header_list_size),
        ];
        if role == Role::Client {
            settings.push((SETTINGS_ENABLE_PUSH, 0));
        }
        frame::write_settings(&mut out, &settings, false);
        if config.connection_window > DEFAULT_WINDOW {
            frame::write_window_update(&mut out, 0, config.connection_window - DEFAULT_WINDOW);
        }
        Self {
            role,
            config,
            decoder: hpack::Decoder::new(4096),
            encoder: hpack::Encoder::new(),
            want_preface: role == Role::Server,
            want_settings: true,
            peer_max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_concurrent: u32::MAX,
            send_window: i64::from(DEFAULT_WINDOW),
            recv_window: i64::from(config.connection_window),
            recv_unreleased: 0,
            streams: HashMap::default(),
            last_peer: 0,
            next_local: 1,
            peer_open: 0,
            local_open: 0,
            continuing: None,
            block: Vec::new(),
            out,
            scratch: Vec::new(),
            sent_goaway: None,
            recv_goaway: None,
            writable: false,
            failed: None,
        }
    }

    /// Bytes to write to the peer; the caller takes them (and clears the vector).
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Whether there are bytes to write.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Reads from the front of `buf` up to and including the next event: how many bytes were
    /// used, and the event if one came (`(0, None)`: `buf` holds no whole frame). Frames that
    /// only change the connection (SETTINGS, PING, WINDOW_UPDATE…) are handled on the way,
    /// their answers put in the output.
    pub fn read<'b>(&mut self, buf: &'b [u8]) -> Result<(usize, Option<Event<'b>>), Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut at = 0;
        if self.want_preface {
            let have = buf.len().min(PREFACE.len());
            if buf[..have] != PREFACE[..have] {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "the client's preface is not HTTP/2's"));
            }
            if have < PREFACE.len() {
                return Ok((0, None));
            }
            self.want_preface = false;
            at = PREFACE.len();
        }
        loop {
            let rest = &buf[at..];
            let (frame, used) = match frame::parse(rest, DEFAULT_MAX_FRAME_SIZE) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok((at, None)),
                Err(FrameError { reason, stream: Some(stream), what }) if self.continuing.is_none() => {
                    // A stream error in a frame that was read whole: that stream goes.
                    at += frame::HEADER_LEN
                        + (usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]));
                    tracing::debug!(stream, what, "HTTP/2 stream error");
                    if self.is_idle(stream) {
                        // No stream to reset: RST_STREAM may not name an idle one.
                        return Err(self.fail(reason, what));
                    }
                    if let Some(event) = self.reset_for(stream, reason) {
                        return Ok((at, Some(event)));
                    }
                    continue;
                }
                Err(e) => return Err(self.fail(e.reason, e.what)),
            };
            at += used;
            if let Some(event) = self.frame(frame)? {
                return Ok((at, Some(event)));
            }
        }
    }

    /// Whether a send window grew (a WINDOW_UPDATE, a larger initial window) since the last
    /// call: data that [`Connection::send_data`] did not take may go now.
    pub fn take_writable(&mut self) -> bool {
        std::mem::take(&mut self.writable)
    }

    /// Opens a stream with a request head (client): its id, or `None` when the peer allows no
    /// more streams now (its limit, or its GOAWAY). `bodiless`: the request is a HEAD, whose
    /// response has no body.
    pub fn open<'f>(
        &mut self,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8], bool)>,
        end_stream: bool,
        bodiless: bool,
    ) -> Option<u32> {
        debug_assert_eq!(self.role, Role::Client);
        if self.failed.is_some()
            || self.recv_goaway.is_some()
            || self.sent_goaway.is_some()
            || self.local_open >= self.peer_max_concurrent
            || self.next_local > MAX_WINDOW
        {
            return None;
        }
        let id = self.next_local;
        self.next_local += 2;
        self.local_open += 1;
        let mut stream = self.new_stream(false);
        stream.bodiless = bodiless;
        stream.head_sent = true;
        stream.send_closed = end_stream;
        self.streams.insert(id, stream);
        self.write_head(id, fields, end_stream);
        Some(id)
    }

    /// Sends a head (a server's final response head) or, once the head has gone,
    /// trailers (which end the stream: `end_stream` is then taken as true). `false` when the
    /// stream is gone or this side already ended it.
    pub fn send_headers<'f>(
        &mut self,
        stream: u32,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8], bool)>,
        end_stream: bool,
    ) -> bool {
        let Some(s) = self.streams.get_mut(&stream) else { return false };
        if s.send_closed || self.failed.is_some() {
            return false;
        }
        let end_stream = end_stream || s.head_sent;
        s.head_sent = true;
        s.send_closed = end_stream;
        self.write_head(stream, fields, end_stream);
        if end_stream {
            self.close_if_done(stream);
        }
        true
    }

    /// Sends as much of `data` as the windows allow, in frames of at most the peer's frame
    /// size, and how much that was; `end_stream` is sent with the last byte, if it went (an
    /// empty `data` with `end_stream` always goes). `None` when the stream is gone or ended.
    pub fn send_data(&mut self, stream: u32, data: &[u8], end_stream: bool) -> Option<usize> {
        if self.failed.is_some() {
            return None;
        }
        let s = self.streams.get_mut(&stream)?;
        if s.send_closed || !s.head_sent {
            return None;
        }
        let room = self.send_window.min(s.send_window).max(0);
        let take = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let all = take == data.len();
        let max = self.peer_max_frame_size as usize;
        let mut chunks = data[..take].chunks(max).peekable();
        if take == 0 && all && end_stream {
            frame::write_data(&mut self.out, stream, &[], true);
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            frame::write_data(&mut self.out, stream, chunk, last && all && end_stream);
        }
        self.send_window -= take as i64;
        s.send_window -= take as i64;
        if all && end_stream {
            s.send_closed = true;
            self.close_if_done(stream);
        }
        Some(take)
    }

    /// How much [`Connection::send_data`] would take on `stream` now.
    pub fn send_capacity(&self, stream: u32) -> usize {
        self.streams
            .get(&stream)
            .map_or(0, |s| usize::try_from(self.send_window.min(s.send_window).max(0)).unwrap_or(usize::MAX))
    }

    /// Gives back `n` bytes of `stream`'s data that the caller has passed on, so the peer may
    /// send more (a WINDOW_UPDATE once half a window has been consumed). Every byte of every
    /// [`Event::Data`] is given back this way, also when its stream has gone since: the
    /// connection's window counts them until then.
    pub fn release(&mut self, stream: u32, n: usize) {
        let n = u32::try_from(n).unwrap_or(MAX_WINDOW);
        self.release_connection(n);
        let threshold = self.config.stream_window / 2;
        if let Some(s) = self.streams.get_mut(&stream)
            && !s.recv_closed
        {
            s.recv_unreleased += n;
            if s.recv_unreleased >= threshold {
                let increment = std::mem::take(&mut s.recv_unreleased);
                s.recv_window += i64::from(increment);
                frame::write_window_update(&mut self.out, stream, increment);
            }
        }
    }

    /// Resets a stream (RST_STREAM with `reason`), as when the proxy gives up on it.
    pub fn reset(&mut self, stream: u32, reason: Reason) {
        if self.remove(stream).is_some() {
            frame::write_rst_stream(&mut self.out, stream, reason);
        }
    }

    /// Starts closing: a GOAWAY naming the last stream the peer opened, which still finish;
    /// newer ones are refused.
    pub fn go_away(&mut self, reason: Reason, debug: &[u8]) {
        if self.sent_goaway.is_none() && self.failed.is_none() {
            self.sent_goaway = Some(self.last_peer);
            frame::write_goaway(&mut self.out, self.last_peer, reason, debug);
        }
    }

    /// Streams not yet closed.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether the stream is still open on this side's account.
    pub fn is_open(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Whether either side sent a GOAWAY, or the connection failed: no new streams.
    pub fn is_closing(&self) -> bool {
        self.sent_goaway.is_some() || self.recv_goaway.is_some() || self.failed.is_some()
    }

    /// Whether a new stream could be opened now (client).
    pub fn can_open(&self) -> bool {
        !self.is_closing() && self.local_open < self.peer_max_concurrent && self.next_local <= MAX_WINDOW
    }

    // --- reading ---

    /// One frame's effects, and its event if it has one.
    fn frame<'b>(&mut self, frame: Frame<'b>) -> Result<Option<Event<'b>>, Error> {
        if self.want_settings && !matches!(frame, Frame::Settings { ack: false, .. }) {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "the peer's first frame is not SETTINGS"));
        }
        if let Some((stream, ..)) = self.continuing
            && !matches!(frame, Frame::Continuation { stream: s, .. } if s == stream)
        {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "a header block interrupted"));
        }
        match frame {
            Frame::Data { stream, end_stream, data, flow_len } => self.data(stream, end_stream, data, flow_len),
            Frame::Headers { stream, end_stream, end_headers, priority, block } => {
                let self_dependent = priority.is_some_and(|p| p.depends_on == stream);
                if end_headers {
                    return self.headers(stream, end_stream, block, self_dependent);
                }
                self.block.clear();
                self.block.extend_from_slice(block);
                self.continuing = Some((stream, end_stream, self_dependent));
                Ok(None)
            }
            Frame::Continuation { stream, end_headers, block } => {
                let Some((_, end_stream, self_dependent)) = self.continuing else {
                    return Err(self.fail(Reason::PROTOCOL_ERROR, "CONTINUATION without a header block"));
                };
                // Compressed, a block can be a little larger than its list; far larger is a flood.
                if self.block.len() + block.len() > 2 * self.config.max_header_list_size as usize + 16_384 {
                    return Err(self.fail(Reason::ENHANCE_YOUR_CALM, "a header block too large to read"));
                }
                self.block.extend_from_slice(block);
                if !end_headers {
                    return Ok(None);
                }
                self.continuing = None;
                let whole = std::mem::take(&mut self.block);
                let event = self.headers(stream, end_stream, &whole, self_dependent);
                self.block = whole;
                event
            }
            // Priorities are not acted on (RFC 9113 deprecates them); one that names its own
            // stream still breaks that stream.
            Frame::Priority { stream, priority }
                if priority.depends_on == stream && self.streams.contains_key(&stream) =>
            {
                Ok(self.reset_for(stream, Reason::PROTOCOL_ERROR))
            }
            Frame::Priority { .. } => Ok(None),
            Frame::RstStream { stream, reason } => {
                if self.is_idle(stream) {
                    return Err(self.fail(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream"));
                }
                Ok(self.remove(stream).map(|_| Event::Reset { stream, reason, by_peer: true }))
            }
            Frame::Settings { ack: true, .. } => Ok(None),
            Frame::Settings { ack: false, settings } => {
                self.want_settings = false;
                for setting in settings.iter() {
                    self.setting(setting)?;
                }
                frame::write_settings(&mut self.out, &[], true);
                Ok(None)
            }
            Frame::PushPromise { .. } => Err(self.fail(Reason::PROTOCOL_ERROR, "PUSH_PROMISE, which is disabled")),
            Frame::Ping { ack: false, data } => {
                frame::write_ping(&mut self.out, data, true);
                Ok(None)
            }
            Frame::Ping { ack: true, .. } => Ok(None),
            Frame::GoAway { last_stream, reason, .. } => {
                let last_stream = self.recv_goaway.map_or(last_stream, |before| before.min(last_stream));
                self.recv_goaway = Some(last_stream);
                let refused: Vec<u32> = self
                    .streams
                    .iter()
                    .filter(|(id, s)| !s.peer_started && **id > last_stream)
                    .map(|(id, _)| *id)
                    .collect();
                for id in refused {
                    self.remove(id);
                }
                Ok(Some(Event::GoAway { last_stream, reason }))
            }
            Frame::WindowUpdate { stream: 0, increment } => {
                self.send_window += i64::from(increment);
                if self.send_window > i64::from(MAX_WINDOW) {
                    return Err(self.fail(Reason::FLOW_CONTROL_ERROR, "the connection's window over 2^31-1"));
                }
                self.writable = true;
                Ok(None)
            }
            Frame::WindowUpdate { stream, increment } => {
                if self.is_idle(stream) {
                    return Err(self.fail(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream"));
                }
                let Some(s) = self.streams.get_mut(&stream) else { return Ok(None) };
                s.send_window += i64::from(increment);
                if s.send_window > i64::from(MAX_WINDOW) {
                    return Ok(self.reset_for(stream, Reason::FLOW_CONTROL_ERROR));
                }
                self.writable = true;
                Ok(None)
            }
            Frame::Unknown { .. } => Ok(None),
        }
    }

    fn data<'b>(
        &mut self,
        stream: u32,
        end_stream: bool,
        data: &'b [u8],
        flow_len: u32,
    ) -> Result<Option<Event<'b>>, Error> {
        let flow = i64::from(flow_len);
        if flow > self.recv_window {
            return Err(self.fail(Reason::FLOW_CONTROL_ERROR, "DATA beyond the connection's window"));
        }
        self.recv_window -= flow;
        if self.is_idle(stream) {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
        }
        let padding = flow_len - data.len() as u32;
        let Some(s) = self.streams.get_mut(&stream) else {
            // A stream that is closed here (reset, perhaps, while this was on its way).
            self.release_connection(flow_len);
            return Ok(None);
        };
        let broken = if !s.head_received {
            Some(Reason::PROTOCOL_ERROR)
        } else if s.recv_closed {
            Some(Reason::STREAM_CLOSED)
        } else if flow > s.recv_window {
            Some(Reason::FLOW_CONTROL_ERROR)
        } else {
            s.recv_window -= flow;
            match &mut s.remaining {
                Some(left) if *left < data.len() as u64 || (end_stream && *left != data.len() as u64) => {
                    Some(Reason::PROTOCOL_ERROR)
                }
                Some(left) => {
                    *left -= data.len() as u64;
                    None
                }
                None => None,
            }
        };
        if let Some(reason) = broken {
            self.release_connection(flow_len);
            return Ok(self.reset_for(stream, reason));
        }
        if end_stream {
            s.recv_closed = true;
        }
        if padding > 0 {
            self.release_connection(padding);
            if let Some(s) = self.streams.get_mut(&stream) {
                s.recv_window += i64::from(padding);
                if !end_stream {
                    frame::write_window_update(&mut self.out, stream, padding);
                }
            }
        }
        if end_stream {
            self.close_if_done(stream);
        }
        Ok(Some(Event::Data { stream, data, end_stream }))
    }

    /// A whole header block on `stream` (`self_dependent`: its priority named the stream
    /// itself, which makes it malformed).
    fn headers<'b>(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: &[u8],
        self_dependent: bool,
    ) -> Result<Option<Event<'b>>, Error> {
        let peer_parity = if self.role == Role::Server { 1 } else { 0 };
        let known = self.streams.get(&stream).map(|s| (s.head_received, s.recv_closed));
        let kind = match (known, self.role) {
            (Some((_, true)), _) => None,
            (Some((false, _)), Role::Client) => Some(Kind::Response),
            (Some((true, _)), _) => Some(Kind::Trailers),
            (Some((false, _)), Role::Server) => None,
            (None, Role::Server) if stream % 2 == peer_parity && stream > self.last_peer => Some(Kind::Request),
            (None, Role::Client) if stream.is_multiple_of(2) => {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "a pushed stream, which is disabled"));
            }
            (None, _) if stream % 2 == peer_parity || stream < self.next_local => None,
            (None, _) => return Err(self.fail(Reason::PROTOCOL_ERROR, "HEADERS on a stream the peer may not open")),
        };
        let Some(kind) = kind else {
            // A closed stream (reset while this was on its way), or one whose side the peer
            // already ended: decoded for the HPACK state, and dropped.
            if self.decoder.decode(block, |_, _, _| {}).is_err() {
                return Err(self.compression());
            }
            if known.is_some() {
                return Ok(self.reset_for(stream, Reason::STREAM_CLOSED));
            }
            return Ok(None);
        };
        let mut head = Head::with_capacity(block.len());
        let mut check = Check {
            kind,
            limit: self.config.max_header_list_size as usize,
            trouble: self_dependent.then_some(Trouble::Malformed("a stream that depends on itself")),
            regular: false,
        };
        let decoded =
            self.decoder.decode(block, |name, value, sensitive| check.field(&mut head, name, value, sensitive));
        if decoded.is_err() {
            return Err(self.compression());
        }
        let trouble = check.trouble.or_else(|| check.complete(&head));
        if kind == Kind::Request {
            self.last_peer = stream;
            if self.sent_goaway.is_some() || self.peer_open >= self.config.max_concurrent_streams {
                frame::write_rst_stream(&mut self.out, stream, Reason::REFUSED_STREAM);
                return Ok(None);
            }
            match trouble {
                None => {}
                Some(Trouble::TooLarge) => {
                    // Answered, so that the client knows why (and its request is not retried).
                    self.write_head(stream, [(&b":status"[..], &b"431"[..], false)], true);
                    if !end_stream {
                        frame::write_rst_stream(&mut self.out, stream, Reason::NO_ERROR);
                    }
                    return Ok(None);
                }
                Some(Trouble::Malformed(what)) => {
                    tracing::debug!(stream, what, "malformed HTTP/2 request");
                    frame::write_rst_stream(&mut self.out, stream, Reason::PROTOCOL_ERROR);
                    return Ok(None);
                }
            }
            self.peer_open += 1;
            let remaining = head.content_length();
            if end_stream && remaining.is_some_and(|n| n > 0) {
                frame::write_rst_stream(&mut self.out, stream, Reason::PROTOCOL_ERROR);
                return Ok(None);
            }
            let mut s = self.new_stream(true);
            s.head_received = true;
            s.recv_closed = end_stream;
            s.remaining = remaining;
            self.streams.insert(stream, s);
            return Ok(Some(Event::Head { stream, head, end_stream }));
        }
        if let Some(trouble) = trouble {
            tracing::debug!(stream, what = trouble.what(), "malformed HTTP/2 header block");
            return Ok(self.reset_for(stream, Reason::PROTOCOL_ERROR));
        }
        let s = self.streams.get_mut(&stream).expect("known above");
        if kind == Kind::Response {
            let status = head.status().unwrap_or(0);
            if (100..200).contains(&status) {
                // HTTP/2 has no 101 (RFC 9113 §8.6), and an interim head ends nothing.
                if end_stream || status == 101 {
                    return Ok(self.reset_for(stream, Reason::PROTOCOL_ERROR));
                }
                // Interim (100 Continue, 103 Early Hints): not passed on.
                return Ok(None);
            }
            s.head_received = true;
            s.recv_closed = end_stream;
            if !s.bodiless && status != 204 && status != 304 {
                s.remaining = head.content_length();
                if end_stream && s.remaining.is_some_and(|n| n > 0) {
                    return Ok(self.reset_for(stream, Reason::PROTOCOL_ERROR));
                }
            }
            if end_stream {
                self.close_if_done(stream);
            }
            return Ok(Some(Event::Head { stream, head, end_stream }));
        }
        if !end_stream {
            return Ok(self.reset_for(stream, Reason::PROTOCOL_ERROR));
        }
        if s.remaining.is_some_and(|left| left != 0) {
            return Ok(self.reset_for(stream, Reason::PROTOCOL_ERROR));
        }
        s.recv_closed = true;
        self.close_if_done(stream);
        Ok(Some(Event::Trailers { stream, trailers: head }))
    }

    fn setting(&mut self, setting: Setting) -> Result<(), Error> {
        match setting {
            Setting::EnablePush(true) if self.role == Role::Client => {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "a server enabled push"));
            }
            Setting::MaxConcurrentStreams(n) => self.peer_max_concurrent = n,
            Setting::InitialWindowSize(size) => {
                let delta = i64::from(size) - i64::from(self.peer_initial_window);
                self.peer_initial_window = size;
                for s in self.streams.values_mut() {
                    s.send_window += delta;
                    if s.send_window > i64::from(MAX_WINDOW) {
                        return Err(self.fail(Reason::FLOW_CONTROL_ERROR, "a stream's window over 2^31-1"));
                    }
                }
                if delta > 0 {
                    self.writable = true;
                }
            }
            Setting::MaxFrameSize(size) => self.peer_max_frame_size = size,
            // Read with the rest of the frame, before the acknowledgement is written: blocks
            // written after it are the ones that start with the size update.
            Setting::HeaderTableSize(size) => self.encoder.set_peer_limit(size),
            // The peer's list limit is advice.
            Setting::EnablePush(_) | Setting::MaxHeaderListSize(_) | Setting::Other(..) => {}
        }
        Ok(())
    }

    // --- helpers ---

    fn new_stream(&self, peer_started: bool) -> Stream {
        Stream {
            send_window: i64::from(self.peer_initial_window),
            recv_window: i64::from(self.config.stream_window),
            recv_unreleased: 0,
            recv_closed: false,
            send_closed: false,
            head_received: false,
            head_sent: false,
            remaining: None,
            bodiless: false,
            peer_started,
        }
    }

    fn write_head<'f>(
        &mut self,
        stream: u32,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8], bool)>,
        end_stream: bool,
    ) {
        self.scratch.clear();
        self.encoder.block(&mut self.scratch, fields);
        frame::write_headers(&mut self.out, stream, &self.scratch, end_stream, self.peer_max_frame_size);
    }

    /// Whether `stream` is one neither side has opened yet.
    fn is_idle(&self, stream: u32) -> bool {
        let peer_parity = if self.role == Role::Server { 1 } else { 0 };
        if stream % 2 == peer_parity { stream > self.last_peer } else { stream >= self.next_local }
    }

    /// Resets `stream` for a rule the peer broke: the event, when the caller knew it.
    fn reset_for<'b>(&mut self, stream: u32, reason: Reason) -> Option<Event<'b>> {
        frame::write_rst_stream(&mut self.out, stream, reason);
        self.remove(stream).map(|_| Event::Reset { stream, reason, by_peer: false })
    }

    fn remove(&mut self, stream: u32) -> Option<Stream> {
        let s = self.streams.remove(&stream)?;
        if s.peer_started {
            self.peer_open -= 1;
        } else {
            self.local_open -= 1;
        }
        Some(s)
    }

    /// Forgets a stream both sides have ended.
    fn close_if_done(&mut self, stream: u32) {
        if self.streams.get(&stream).is_some_and(|s| s.recv_closed && s.send_closed) {
            self.remove(stream);
        }
    }

    fn release_connection(&mut self, n: u32) {
        self.recv_unreleased = self.recv_unreleased.saturating_add(n);
        if self.recv_unreleased >= self.config.connection_window / 2 {
            let increment = std::mem::take(&mut self.recv_unreleased).min(MAX_WINDOW);
            self.recv_window += i64::from(increment);
            frame::write_window_update(&mut self.out, 0, increment);
        }
    }

    fn compression(&mut self) -> Error {
        self.fail(Reason::COMPRESSION_ERROR, "a header block that cannot be decoded")
    }

    /// Ends the connection for a rule the peer broke.
    fn fail(&mut self, reason: Reason, what: &'static str) -> Error {
        let e = Error { reason, what };
        if self.failed.is_none() {
            frame::write_goaway(&mut self.out, self.last_peer, reason, what.as_bytes());
            self.failed = Some(e);
        }
        e
    }
}

// === checking header lists (RFC 9113 §8.2, §8.3) ===

/// What is wrong with a header list.
#[derive(Clone, Copy, Debug)]
enum Trouble {
    /// Over SETTINGS_MAX_HEADER_LIST_SIZE.
    TooLarge,
    Malformed(&'static str),
}

impl Trouble {
    fn what(self) -> &'static str {
        match self {
            Self::TooLarge => "the header list is too large",
            Self::Malformed(what) => what,
        }
    }
}

/// Checks fields as they are decoded, keeping them in a [`Head`] while the list is sound.
struct Check {
    kind: Kind,
    limit: usize,
    trouble: Option<Trouble>,
    /// A regular field has come (pseudo-fields must come before).
    regular: bool,
}

impl Check {
    fn field(&mut self, head: &mut Head, name: &[u8], value: &[u8], sensitive: bool) {
        if self.trouble.is_some() {
            return;
        }
        head.size += name.len() + value.len() + 32;
        if head.size > self.limit {
            self.trouble = Some(Trouble::TooLarge);
            return;
        }
        match self.check(head, name, value) {
            Err(what) => self.trouble = Some(Trouble::Malformed(what)),
            Ok(Some(slot)) => head.pseudo[slot] = Some(head.push(value)),
            Ok(None) => {
                let name = head.push(name);
                let value = head.push(value);
                head.fields.push(Field { name, value, sensitive });
            }
        }
    }

    /// Whether a field may be in this list: its pseudo-field slot, if it is one.
    fn check(&mut self, head: &Head, name: &[u8], value: &[u8]) -> Result<Option<usize>, &'static str> {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular {
                return Err("a pseudo-field after a regular field");
            }
            let slot = match (self.kind, pseudo) {
                (Kind::Request, b"method") => METHOD,
                (Kind::Request, b"scheme") => SCHEME,
                (Kind::Request, b"authority") => AUTHORITY,
                (Kind::Request, b"path") => PATH,
                (Kind::Response, b"status") => STATUS,
                (Kind::Trailers, _) => return Err("a pseudo-field in trailers"),
                _ => return Err("an unknown or misplaced pseudo-field"),
            };
            if head.pseudo[slot].is_some() {
                return Err("a pseudo-field twice");
            }
            check_value(value)?;
            return Ok(Some(slot));
        }
        self.regular = true;
        if name.is_empty() {
            return Err("an empty field name");
        }
        if !name_ok(name) {
            return Err("a field name with a character HTTP/2 forbids");
        }
        match name {
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade" => {
                return Err("a connection-specific field");
            }
            b"te" if value != b"trailers" => return Err("te other than trailers"),
            _ => {}
        }
        check_value(value)?;
        Ok(None)
    }

    /// What the whole list lacks, once decoded.
    fn complete(&self, head: &Head) -> Option<Trouble> {
        let what = match self.kind {
            Kind::Request => {
                let Some(method) = head.method() else { return Some(Trouble::Malformed("no :method")) };
                if method == b"CONNECT" {
                    if head.pseudo[AUTHORITY].is_none() || head.pseudo[SCHEME].is_some() || head.pseudo[PATH].is_some()
                    {
                        "CONNECT without :authority alone"
                    } else {
                        return None;
                    }
                } else if head.pseudo[SCHEME].is_none() {
                    "no :scheme"
                } else if head.path().is_none_or(<[u8]>::is_empty) {
                    "no :path"
                } else {
                    return length(head);
                }
            }
            Kind::Response => match head.pseudo[STATUS].map(|s| head.slice(s)) {
                Some([b'1'..=b'9', b, c]) if b.is_ascii_digit() && c.is_ascii_digit() => return length(head),
                _ => "no :status, or not three digits",
            },
            Kind::Trailers => return None,
        };
        Some(Trouble::Malformed(what))
    }
}

/// Whether a field name has only the bytes it may have (RFC 9113 §8.2.1): visible ASCII but
/// uppercase letters and the colon. Eight bytes at a time.
fn name_ok(name: &[u8]) -> bool {
    use crate::swar::{has_between, has_byte, has_less, has_more};
    !crate::swar::any(name, b'a', |x| {
        has_less(x, 0x21) | has_more(x, 0x7e) | has_between(x, b'A' - 1, b'Z' + 1) | has_byte(x, b':')
    })
}

/// A field value HTTP/2 allows: no NUL, CR or LF, no whitespace at either end.
fn check_value(value: &[u8]) -> Result<(), &'static str> {
    use crate::swar::has_byte;
    if crate::swar::any(value, b'a', |x| has_byte(x, 0) | has_byte(x, b'\r') | has_byte(x, b'\n')) {
        return Err("a field value with NUL, CR or LF");
    }
    if matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t')) {
        return Err("a field value with whitespace at an end");
    }
    Ok(())
}

/// A `content-length` that is not a number, or differing copies of it. (One that promises
/// more than the stream carries is found as the data comes.)
fn length(head: &Head) -> Option<Trouble> {
    let mut lengths = head.get_all(b"content-length");
    let first = lengths.next()?;
    if parse_length(first).is_none() || lengths.any(|other| other != first) {
        return Some(Trouble::Malformed("a content-length that is not one number"));
    }
    None
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

// === impl Head ===

impl Head {
    /// Room for what a header block of `block_len` bytes decodes to, most of the time: Huffman
    /// coding shrinks text by a third at best, and a block that names entries of the dynamic
    /// table is a byte a field, so small blocks get room for a typical request's fields.
    fn with_capacity(block_len: usize) -> Self {
        Self { bytes: Vec::with_capacity((block_len * 2).max(512)), fields: Vec::with_capacity(16), ..Self::default() }
    }

    fn push(&mut self, bytes: &[u8]) -> Span {
        let span = Span { at: self.bytes.len() as u32, len: bytes.len() as u32 };
        self.bytes.extend_from_slice(bytes);
        span
    }

    fn slice(&self, span: Span) -> &[u8] {
        &self.bytes[span.at as usize..(span.at + span.len) as usize]
    }

    pub fn method(&self) -> Option<&[u8]> {
        self.pseudo[METHOD].map(|s| self.slice(s))
    }

    pub fn scheme(&self) -> Option<&[u8]> {
        self.pseudo[SCHEME].map(|s| self.slice(s))
    }

    pub fn authority(&self) -> Option<&[u8]> {
        self.pseudo[AUTHORITY].map(|s| self.slice(s))
    }

    pub fn path(&self) -> Option<&[u8]> {
        self.pseudo[PATH].map(|s| self.slice(s))
    }

    /// `:status`, checked to be three digits.
    pub fn status(&self) -> Option<u16> {
        let s = self.slice(self.pseudo[STATUS]?);
        std::str::from_utf8(s).ok()?.parse().ok()
    }

    /// The regular fields in order: (name, value, sent never-indexed).
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8], bool)> + '_ {
        self.fields.iter().map(|f| (self.slice(f.name), self.slice(f.value), f.sensitive))
    }

    /// The first value of a (lowercase) field.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields.iter().find(|f| self.slice(f.name) == name).map(|f| self.slice(f.value))
    }

    /// Every value of a (lowercase) field, in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields.iter().filter(move |f| self.slice(f.name) == name).map(|f| self.slice(f.value))
    }

    /// Where `:authority` and `:path` are in [`Head::into_shared`]'s bytes.
    pub fn authority_range(&self) -> Option<std::ops::Range<usize>> {
        self.pseudo[AUTHORITY].map(Span::range)
    }

    pub fn path_range(&self) -> Option<std::ops::Range<usize>> {
        self.pseudo[PATH].map(Span::range)
    }

    /// The list's bytes, shared, and each regular field as ranges of them (name, value, sent
    /// never-indexed): for callers that keep fields without copying them.
    pub fn into_shared(
        self,
    ) -> (bytes::Bytes, impl ExactSizeIterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>, bool)>) {
        let fields = self.fields.into_iter().map(|f| (f.name.range(), f.value.range(), f.sensitive));
        (bytes::Bytes::from(self.bytes), fields)
    }

    /// The body length `content-length` promises.
    pub fn content_length(&self) -> Option<u64> {
        self.get(b"content-length").and_then(parse_length)
    }

    /// RFC 9113's size of the list.
    pub fn list_size(&self) -> usize {
        self.size
    }
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (slot, span) in self.pseudo.iter().enumerate() {
            if let Some(span) = span {
                list.entry(&(String::from_utf8_lossy(PSEUDO[slot]), String::from_utf8_lossy(self.slice(*span))));
            }
        }
        for (name, value, _) in self.fields() {
            list.entry(&(String::from_utf8_lossy(name), String::from_utf8_lossy(value)));
        }
        list.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (HTTP/2 error {:#x})", self.what, self.reason.0)
    }
}

impl std::error::Error for Error {}

/// Hashes stream ids, which are small, distinct and mostly odd: a multiply spreads them, and a
/// fold brings the high bits down to the low ones a table picks its bucket by. The standard
/// SipHash resists keys an attacker picks for a map they can grow; a peer picks its ids, but
/// holds at most the streams the connection allows open at once, so colliding ones cost it
/// little, and SipHash would cost ~100 instructions a lookup, several lookups a request.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

/// Builds [`IdHasher`]s.
pub(crate) type IdState = BuildHasherDefault<IdHasher>;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, id: u32) {
        let x = (self.0 ^ u64::from(id)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 32);
    }
}

#[cfg(test)]
mod tests;
