//! HTTP/2 frames (RFC 9113 §4 and §6): reading one from the front of a buffer, borrowing its
//! payload, with every rule about a frame's own shape checked here (its size, its stream ID,
//! its padding, its fixed lengths, the SETTINGS values); and writing the frames a proxy sends.
//! What a frame means for a connection or a stream (states, windows, order) is the
//! connection's business, not this module's.

use std::fmt;

/// The header every frame starts with.
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value, the least any endpoint must accept.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE allowed.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// An error code (RFC 9113 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Self = Self(0x0);
    pub const PROTOCOL_ERROR: Self = Self(0x1);
    pub const INTERNAL_ERROR: Self = Self(0x2);
    pub const FLOW_CONTROL_ERROR: Self = Self(0x3);
    pub const SETTINGS_TIMEOUT: Self = Self(0x4);
    pub const STREAM_CLOSED: Self = Self(0x5);
    pub const FRAME_SIZE_ERROR: Self = Self(0x6);
    pub const REFUSED_STREAM: Self = Self(0x7);
    pub const CANCEL: Self = Self(0x8);
    pub const COMPRESSION_ERROR: Self = Self(0x9);
    pub const CONNECT_ERROR: Self = Self(0xa);
    pub const ENHANCE_YOUR_CALM: Self = Self(0xb);
    pub const INADEQUATE_SECURITY: Self = Self(0xc);
    pub const HTTP_1_1_REQUIRED: Self = Self(0xd);
}

/// A frame that breaks the rules: a connection error with this code, or (`stream` set) an
/// error of that stream alone (RFC 9113 §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameError {
    pub reason: Reason,
    pub stream: Option<u32>,
    pub what: &'static str,
}

/// One frame, its payload borrowed from the buffer it was read from (padding removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Data {
        stream: u32,
        end_stream: bool,
        data: &'a [u8],
        /// The whole payload's length, padding included (what flow control counts).
        flow_len: u32,
    },
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        priority: Option<Priority>,
        block: &'a [u8],
    },
    Priority {
        stream: u32,
        priority: Priority,
    },
    RstStream {
        stream: u32,
        reason: Reason,
    },
    Settings {
        ack: bool,
        settings: Settings<'a>,
    },
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
        debug: &'a [u8],
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        block: &'a [u8],
    },
    /// A frame of a type this side does not know: ignored (RFC 9113 §4.1), but it counts
    /// towards a header block's continuity.
    Unknown {
        kind: u8,
        stream: u32,
    },
}

/// A stream's priority (deprecated by RFC 9113, read and ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    pub depends_on: u32,
    pub exclusive: bool,
    pub weight: u8,
}

/// The parameters of a SETTINGS frame, already checked ([`Settings::iter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings<'a>(&'a [u8]);

/// One setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    HeaderTableSize(u32),
    EnablePush(bool),
    MaxConcurrentStreams(u32),
    InitialWindowSize(u32),
    MaxFrameSize(u32),
    MaxHeaderListSize(u32),
    /// RFC 8441's SETTINGS_ENABLE_CONNECT_PROTOCOL, and any other: (identifier, value).
    Other(u16, u32),
}

/// Reads the frame at the front of `buf`: `Ok(None)` when `buf` does not hold all of it yet,
/// else the frame and how many bytes it took. `max_frame_size` is what this side advertised.
pub fn parse(buf: &[u8], max_frame_size: u32) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else { return Ok(None) };
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    let (kind, flags) = (header[3], header[4]);
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & MAX_WINDOW;
    if len > max_frame_size {
        // Too large for a header block's frames to be read at all: the connection goes.
        return Err(conn(Reason::FRAME_SIZE_ERROR, "a frame is larger than SETTINGS_MAX_FRAME_SIZE"));
    }
    let total = HEADER_LEN + len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else { return Ok(None) };
    let frame = match kind {
        DATA => {
            need_stream(stream, "DATA on stream 0")?;
            let data = unpad(payload, flags)?;
            Frame::Data { stream, end_stream: flags & END_STREAM != 0, data, flow_len: len }
        }
        HEADERS => {
            need_stream(stream, "HEADERS on stream 0")?;
            let mut block = unpad(payload, flags)?;
            let priority = if flags & PRIORITY_FLAG != 0 {
                let (p, rest) = block
                    .split_at_checked(5)
                    .ok_or(conn(Reason::FRAME_SIZE_ERROR, "HEADERS too short for its priority"))?;
                block = rest;
                Some(priority(p))
            } else {
                None
            };
            Frame::Headers {
                stream,
                end_stream: flags & END_STREAM != 0,
                end_headers: flags & END_HEADERS != 0,
                priority,
                block,
            }
        }
        PRIORITY => {
            need_stream(stream, "PRIORITY on stream 0")?;
            if len != 5 {
                return Err(on_stream(Reason::FRAME_SIZE_ERROR, stream, "PRIORITY is not 5 bytes"));
            }
            Frame::Priority { stream, priority: priority(payload) }
        }
        RST_STREAM => {
            need_stream(stream, "RST_STREAM on stream 0")?;
            let code = fixed::<4>(payload, "RST_STREAM is not 4 bytes")?;
            Frame::RstStream { stream, reason: Reason(u32::from_be_bytes(code)) }
        }
        SETTINGS => {
            no_stream(stream, "SETTINGS on a stream")?;
            let ack = flags & ACK != 0;
            if ack && len != 0 {
                return Err(conn(Reason::FRAME_SIZE_ERROR, "a SETTINGS acknowledgement has a payload"));
            }
            if !len.is_multiple_of(6) {
                return Err(conn(Reason::FRAME_SIZE_ERROR, "SETTINGS is not a multiple of 6 bytes"));
            }
            let settings = Settings(payload);
            for s in settings.iter() {
                check_setting(s)?;
            }
            Frame::Settings { ack, settings }
        }
        PUSH_PROMISE => {
            need_stream(stream, "PUSH_PROMISE on stream 0")?;
            Frame::PushPromise { stream }
        }
        PING => {
            no_stream(stream, "PING on a stream")?;
            Frame::Ping { ack: flags & ACK != 0, data: fixed::<8>(payload, "PING is not 8 bytes")? }
        }
        GOAWAY => {
            no_stream(stream, "GOAWAY on a stream")?;
            if len < 8 {
                return Err(conn(Reason::FRAME_SIZE_ERROR, "GOAWAY is shorter than 8 bytes"));
            }
            let last_stream = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & MAX_WINDOW;
            let reason = Reason(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
            Frame::GoAway { last_stream, reason, debug: &payload[8..] }
        }
        WINDOW_UPDATE => {
            let increment = u32::from_be_bytes(fixed::<4>(payload, "WINDOW_UPDATE is not 4 bytes")?) & MAX_WINDOW;
            if increment == 0 {
                let what = "a WINDOW_UPDATE of 0";
                return Err(if stream == 0 {
                    conn(Reason::PROTOCOL_ERROR, what)
                } else {
                    on_stream(Reason::PROTOCOL_ERROR, stream, what)
                });
            }
            Frame::WindowUpdate { stream, increment }
        }
        CONTINUATION => {
            need_stream(stream, "CONTINUATION on stream 0")?;
            Frame::Continuation { stream, end_headers: flags & END_HEADERS != 0, block: payload }
        }
        kind => Frame::Unknown { kind, stream },
    };
    Ok(Some((frame, total)))
}

fn conn(reason: Reason, what: &'static str) -> FrameError {
    FrameError { reason, stream: None, what }
}

fn on_stream(reason: Reason, stream: u32, what: &'static str) -> FrameError {
    FrameError { reason, stream: Some(stream), what }
}

/// A frame that belongs to a stream (`what`: its complaint when on stream 0).
fn need_stream(stream: u32, what: &'static str) -> Result<(), FrameError> {
    if stream == 0 {
        return Err(conn(Reason::PROTOCOL_ERROR, what));
    }
    Ok(())
}

/// A frame of the connection (`what`: its complaint when on a stream).
fn no_stream(stream: u32, what: &'static str) -> Result<(), FrameError> {
    if stream != 0 {
        return Err(conn(Reason::PROTOCOL_ERROR, what));
    }
    Ok(())
}

/// A payload of exactly `N` bytes.
fn fixed<const N: usize>(payload: &[u8], what: &'static str) -> Result<[u8; N], FrameError> {
    payload.try_into().map_err(|_| conn(Reason::FRAME_SIZE_ERROR, what))
}

/// The payload without its padding, when PADDED is set.
fn unpad(payload: &[u8], flags: u8) -> Result<&[u8], FrameError> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) =
        payload.split_first().ok_or(conn(Reason::FRAME_SIZE_ERROR, "a padded frame without its pad length"))?;
    let keep =
        rest.len().checked_sub(usize::from(pad)).ok_or(conn(Reason::PROTOCOL_ERROR, "padding as long as the frame"))?;
    Ok(&rest[..keep])
}

fn priority(p: &[u8]) -> Priority {
    let word = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
    Priority { depends_on: word & MAX_WINDOW, exclusive: word >> 31 == 1, weight: p[4] }
}

fn check_setting(s: Setting) -> Result<(), FrameError> {
    match s {
        Setting::InitialWindowSize(v) if v > MAX_WINDOW => {
            Err(conn(Reason::FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1"))
        }
        Setting::MaxFrameSize(v) if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&v) => {
            Err(conn(Reason::PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range"))
        }
        _ => Ok(()),
    }
}

impl<'a> Settings<'a> {
    /// The settings in the order sent (a later value of one identifier replaces an earlier).
    pub fn iter(&self) -> impl Iterator<Item = Setting> + 'a {
        self.0.chunks_exact(6).map(|c| {
            let value = u32::from_be_bytes([c[2], c[3], c[4], c[5]]);
            match u16::from_be_bytes([c[0], c[1]]) {
                0x1 => Setting::HeaderTableSize(value),
                // Any value but 0 and 1 is a PROTOCOL_ERROR; a server reads it as "no push"
                // either way and never pushes, so it is not worth refusing a connection for.
                0x2 => Setting::EnablePush(value == 1),
                0x3 => Setting::MaxConcurrentStreams(value),
                0x4 => Setting::InitialWindowSize(value),
                0x5 => Setting::MaxFrameSize(value),
                0x6 => Setting::MaxHeaderListSize(value),
                id => Setting::Other(id, value),
            }
        })
    }
}

// === writing ===

fn header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&(stream & MAX_WINDOW).to_be_bytes());
}

/// HEADERS with `block`, followed by CONTINUATION frames when it is longer than
/// `max_frame_size` (the peer's).
pub fn write_headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, max_frame_size: u32) {
    let max = max_frame_size as usize;
    let mut chunks = block.chunks(max.max(1));
    let first = chunks.next().unwrap_or_default();
    let last = block.len() <= max;
    let flags = if end_stream { END_STREAM } else { 0 } | if last { END_HEADERS } else { 0 };
    header(out, first.len(), HEADERS, flags, stream);
    out.extend_from_slice(first);
    let mut rest = chunks.peekable();
    while let Some(chunk) = rest.next() {
        let flags = if rest.peek().is_none() { END_HEADERS } else { 0 };
        header(out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
}

/// One DATA frame (`data` at most the peer's SETTINGS_MAX_FRAME_SIZE).
pub fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    header(out, data.len(), DATA, if end_stream { END_STREAM } else { 0 }, stream);
    out.extend_from_slice(data);
}

/// SETTINGS with these parameters, or its acknowledgement (`settings` empty, `ack`).
pub fn write_settings(out: &mut Vec<u8>, settings: &[(u16, u32)], ack: bool) {
    header(out, settings.len() * 6, SETTINGS, if ack { ACK } else { 0 }, 0);
    for (id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn write_ping(out: &mut Vec<u8>, data: [u8; 8], ack: bool) {
    header(out, 8, PING, if ack { ACK } else { 0 }, 0);
    out.extend_from_slice(&data);
}

pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    header(out, 8 + debug.len(), GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    out.extend_from_slice(&reason.0.to_be_bytes());
    out.extend_from_slice(debug);
}

pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    header(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    debug_assert!((1..=MAX_WINDOW).contains(&increment));
    header(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests;
