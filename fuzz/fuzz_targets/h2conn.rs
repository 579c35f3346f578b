//! An HTTP/2 server connection (crates/proxy/src/http2/conn.rs): whatever a client sends,
//! after its preface and an empty SETTINGS, read by `Connection::read` in one piece and again
//! in small pieces; every request is answered (a head, then two bytes of body that end it).
//!
//! Input: one byte, the largest piece of the second reading (1 to 16 bytes); then frames as
//! they come on the wire.
//! Checked: nothing panics; both readings see the same events and write the same bytes (a
//! frame's meaning does not depend on how it arrived); what the connection writes parses as
//! frames no larger than the client's limit; open streams never exceed the limit it
//! advertised.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_proxy::http2::conn::{Config, Connection, Event, PREFACE, Role};
use trellis_proxy::http2::frame;

const MAX_STREAMS: u32 = 4;

fuzz_target!(|data: &[u8]| {
    let [piece, frames @ ..] = data else { return };
    let mut input = PREFACE.to_vec();
    frame::write_settings(&mut input, &[], false);
    input.extend_from_slice(frames);
    let whole = run(&input, input.len());
    let pieces = run(&input, usize::from(piece % 16) + 1);
    assert_eq!(whole, pieces);
});

/// Reads `input` in pieces of at most `piece` bytes: the events, as text, and the bytes written.
fn run(input: &[u8], piece: usize) -> (Vec<String>, Vec<u8>) {
    let config = Config {
        max_concurrent_streams: MAX_STREAMS,
        stream_window: 65_535,
        connection_window: 65_535,
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, config);
    let mut written = std::mem::take(conn.out());
    let mut events = Vec::new();
    let mut buf = Vec::new();
    'feed: for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let (used, event) = match conn.read(&buf[at..]) {
                Ok(step) => step,
                Err(e) => {
                    events.push(format!("error {e}"));
                    written.append(conn.out());
                    break 'feed;
                }
            };
            at += used;
            let Some(event) = event else { break };
            events.push(format!("{event:?}"));
            match event {
                Event::Head { stream, .. } => {
                    assert!(conn.open_streams() <= MAX_STREAMS as usize);
                    conn.send_headers(stream, [(&b":status"[..], &b"200"[..], false)], false);
                    conn.send_data(stream, b"ok", true);
                }
                Event::Data { stream, data, .. } => conn.release(stream, data.len()),
                _ => {}
            }
            written.append(conn.out());
        }
        buf.drain(..at);
        written.append(conn.out());
    }
    check_frames(&written);
    (events, written)
}

/// What the connection wrote is whole frames of at most the default size.
fn check_frames(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match frame::parse(bytes, frame::DEFAULT_MAX_FRAME_SIZE) {
            Ok(Some((_, used))) => bytes = &bytes[used..],
            other => panic!("the connection wrote something that is not a frame: {other:?}"),
        }
    }
}
