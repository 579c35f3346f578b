//! HTTP/2 frames and HPACK (crates/proxy/src/http2/): a byte stream read frame by frame as a
//! connection reads it, each header block (HEADERS and its CONTINUATIONs joined) decoded with
//! one connection's HPACK decoder, its dynamic table carried from block to block.
//!
//! Input: two bytes, the table size limit the proxy advertised (big-endian, at most 16 KiB);
//! then frames as they come on the wire.
//! Checked: nothing panics; a frame takes at least its header and no more than it was given,
//! and every shorter prefix of it reads as "not yet"; the table never outgrows the limit;
//! every block that decodes, written again by `hpack::encode` and `frame::write_headers`,
//! reads back as the same fields with the same never-indexed flags; and written again by one
//! connection's `hpack::Encoder` (held to the same limit, from block to block), it reads back
//! the same through one decoder whose table stays the encoder's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_proxy::http2::frame::{self, DEFAULT_MAX_FRAME_SIZE, Frame};
use trellis_proxy::http2::hpack::{self, Decoder, Encoder};

type Fields = Vec<(Vec<u8>, Vec<u8>, bool)>;

fuzz_target!(|data: &[u8]| {
    let [hi, lo, rest @ ..] = data else { return };
    let mut rest = rest;
    let limit = usize::from(u16::from_be_bytes([*hi, *lo])) % (16 * 1024 + 1);
    let mut decoder = Decoder::new(limit);
    let mut encoder = Encoder::new();
    encoder.set_peer_limit(limit as u32);
    let mut mirror = Decoder::new(limit);
    let mut block = Vec::new();
    loop {
        let (frame, used) = match frame::parse(rest, DEFAULT_MAX_FRAME_SIZE) {
            Ok(Some(parsed)) => parsed,
            Ok(None) | Err(_) => return,
        };
        assert!((frame::HEADER_LEN..=rest.len()).contains(&used));
        for cut in [0, frame::HEADER_LEN - 1, used - 1] {
            assert_eq!(frame::parse(&rest[..cut.min(used - 1)], DEFAULT_MAX_FRAME_SIZE), Ok(None));
        }
        rest = &rest[used..];
        let end = match frame {
            Frame::Headers { block: part, end_headers, .. } | Frame::Continuation { block: part, end_headers, .. } => {
                block.extend_from_slice(part);
                end_headers
            }
            _ => continue,
        };
        if !end {
            continue;
        }
        let mut fields: Fields = Vec::new();
        let decoded = decoder.decode(&block, |n, v, never| fields.push((n.to_vec(), v.to_vec(), never)));
        block.clear();
        assert!(decoder.table_size() <= limit, "table {} over limit {limit}", decoder.table_size());
        if decoded.is_err() {
            // A compression error ends the connection: nothing after it is read.
            return;
        }
        check_round_trip(&fields);
        check_indexed(&mut encoder, &mut mirror, &fields);
    }
});

/// `fields` encoded by a connection's encoder read back the same through its peer's decoder.
fn check_indexed(encoder: &mut Encoder, mirror: &mut Decoder, fields: &Fields) {
    let mut encoded = Vec::new();
    encoder.block(&mut encoded, fields.iter().map(|(n, v, never)| (&n[..], &v[..], *never)));
    let mut back: Fields = Vec::new();
    mirror.decode(&encoded, |n, v, never| back.push((n.to_vec(), v.to_vec(), never))).expect("encoded");
    assert_eq!(&back, fields);
    assert_eq!(encoder.table_size(), mirror.table_size());
}

/// `fields` encoded and framed again read back the same.
fn check_round_trip(fields: &Fields) {
    let mut encoded = Vec::new();
    for (n, v, never) in fields {
        hpack::encode(&mut encoded, n, v, *never);
    }
    let mut framed = Vec::new();
    frame::write_headers(&mut framed, 1, &encoded, false, DEFAULT_MAX_FRAME_SIZE);
    let mut joined = Vec::new();
    let mut at = 0;
    while let Ok(Some((frame, used))) = frame::parse(&framed[at..], DEFAULT_MAX_FRAME_SIZE) {
        at += used;
        if let Frame::Headers { block, .. } | Frame::Continuation { block, .. } = frame {
            joined.extend_from_slice(block);
        }
    }
    assert_eq!(at, framed.len());
    let mut back: Fields = Vec::new();
    Decoder::new(0).decode(&joined, |n, v, never| back.push((n.to_vec(), v.to_vec(), never))).expect("re-encoded");
    assert_eq!(&back, fields);
}
