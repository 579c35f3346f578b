use super::*;

fn raw(len: u32, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn one(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (frame, used) = parse(bytes, DEFAULT_MAX_FRAME_SIZE)?.expect("a whole frame");
    assert_eq!(used, bytes.len());
    Ok(frame)
}

#[test]
fn frames_are_read_and_written_back() {
    let mut out = Vec::new();
    write_data(&mut out, 3, b"hello", true);
    assert_eq!(one(&out), Ok(Frame::Data { stream: 3, end_stream: true, data: b"hello", flow_len: 5 }));

    out.clear();
    write_settings(&mut out, &[(0x3, 100), (0x4, 1 << 20), (0x8, 1)], false);
    let Ok(Frame::Settings { ack: false, settings }) = one(&out) else { panic!("settings") };
    assert_eq!(
        settings.iter().collect::<Vec<_>>(),
        [Setting::MaxConcurrentStreams(100), Setting::InitialWindowSize(1 << 20), Setting::Other(8, 1)]
    );
    out.clear();
    write_settings(&mut out, &[], true);
    assert!(matches!(one(&out), Ok(Frame::Settings { ack: true, .. })));

    out.clear();
    write_ping(&mut out, *b"12345678", true);
    assert_eq!(one(&out), Ok(Frame::Ping { ack: true, data: *b"12345678" }));

    out.clear();
    write_goaway(&mut out, 7, Reason::ENHANCE_YOUR_CALM, b"slow down");
    assert_eq!(one(&out), Ok(Frame::GoAway { last_stream: 7, reason: Reason::ENHANCE_YOUR_CALM, debug: b"slow down" }));

    out.clear();
    write_rst_stream(&mut out, 9, Reason::CANCEL);
    assert_eq!(one(&out), Ok(Frame::RstStream { stream: 9, reason: Reason::CANCEL }));

    out.clear();
    write_window_update(&mut out, 0, MAX_WINDOW);
    assert_eq!(one(&out), Ok(Frame::WindowUpdate { stream: 0, increment: MAX_WINDOW }));
}

#[test]
fn a_long_header_block_goes_out_in_continuations_and_reads_back_whole() {
    let block: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    let mut out = Vec::new();
    write_headers(&mut out, 1, &block, true, DEFAULT_MAX_FRAME_SIZE);
    let (mut at, mut joined, mut frames) = (0, Vec::new(), Vec::new());
    while let Some((frame, used)) = parse(&out[at..], DEFAULT_MAX_FRAME_SIZE).unwrap() {
        at += used;
        match frame {
            Frame::Headers { end_stream, end_headers, block, .. } => {
                frames.push(("HEADERS", end_stream, end_headers));
                joined.extend_from_slice(block);
            }
            Frame::Continuation { end_headers, block, .. } => {
                frames.push(("CONTINUATION", false, end_headers));
                joined.extend_from_slice(block);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(at, out.len());
    assert_eq!(joined, block);
    assert_eq!(frames, [("HEADERS", true, false), ("CONTINUATION", false, false), ("CONTINUATION", false, true)]);
    // A short one is a single HEADERS that ends the block.
    out.clear();
    write_headers(&mut out, 5, b"\x82", false, DEFAULT_MAX_FRAME_SIZE);
    assert_eq!(
        one(&out),
        Ok(Frame::Headers { stream: 5, end_stream: false, end_headers: true, priority: None, block: b"\x82" })
    );
}

#[test]
fn padding_and_priority_are_taken_off() {
    // DATA, PADDED: pad length 3, "abc", three bytes of padding.
    let data = raw(7, DATA, PADDED | END_STREAM, 1, b"\x03abc\0\0\0");
    assert_eq!(one(&data), Ok(Frame::Data { stream: 1, end_stream: true, data: b"abc", flow_len: 7 }));
    // HEADERS, PADDED and PRIORITY: pad length 1, exclusive dependency on 3 with weight 16.
    let headers = raw(8, HEADERS, PADDED | PRIORITY_FLAG | END_HEADERS, 5, b"\x01\x80\0\0\x03\x10\x82\0");
    assert_eq!(
        one(&headers),
        Ok(Frame::Headers {
            stream: 5,
            end_stream: false,
            end_headers: true,
            priority: Some(Priority { depends_on: 3, exclusive: true, weight: 16 }),
            block: b"\x82",
        })
    );
}

#[test]
fn a_partial_frame_waits_for_more() {
    let mut out = Vec::new();
    write_data(&mut out, 1, b"0123456789", false);
    for cut in 0..out.len() {
        assert_eq!(parse(&out[..cut], DEFAULT_MAX_FRAME_SIZE), Ok(None), "{cut}");
    }
    // The reserved bit of a stream ID is ignored.
    let data = raw(0, DATA, 0, 0x8000_0001, b"");
    assert_eq!(one(&data), Ok(Frame::Data { stream: 1, end_stream: false, data: b"", flow_len: 0 }));
    // A type this side does not know is passed over.
    assert_eq!(one(&raw(2, 0xfa, 0, 1, b"xx")), Ok(Frame::Unknown { kind: 0xfa, stream: 1 }));
}

#[test]
fn frames_that_break_the_rules_say_how() {
    // (frame, the error code, the stream when it is a stream error)
    let (size, protocol) = (Reason::FRAME_SIZE_ERROR, Reason::PROTOCOL_ERROR);
    let cases: Vec<(Vec<u8>, Reason, Option<u32>)> = vec![
        (raw(16_385, DATA, 0, 1, &[]), size, None),
        (raw(0, DATA, 0, 0, b""), protocol, None),
        (raw(0, HEADERS, 0, 0, b""), protocol, None),
        (raw(2, DATA, PADDED, 1, b"\x05a"), protocol, None),
        (raw(0, DATA, PADDED, 1, b""), size, None),
        (raw(3, HEADERS, PRIORITY_FLAG, 1, b"\0\0\0"), size, None),
        (raw(4, PRIORITY, 0, 1, b"\0\0\0\0"), size, Some(1)),
        (raw(3, RST_STREAM, 0, 1, b"\0\0\0"), size, None),
        (raw(6, SETTINGS, ACK, 0, b"\0\x01\0\0\0\0"), size, None),
        (raw(5, SETTINGS, 0, 0, b"\0\x01\0\0\0"), size, None),
        (raw(0, SETTINGS, 0, 1, b""), protocol, None),
        (raw(6, SETTINGS, 0, 0, b"\0\x04\x80\0\0\0"), Reason::FLOW_CONTROL_ERROR, None),
        (raw(6, SETTINGS, 0, 0, b"\0\x05\0\0\x3f\xff"), protocol, None),
        (raw(6, SETTINGS, 0, 0, b"\0\x05\x01\0\0\0"), protocol, None),
        (raw(7, PING, 0, 0, b"1234567"), size, None),
        (raw(8, PING, 0, 3, b"12345678"), protocol, None),
        (raw(7, GOAWAY, 0, 0, b"1234567"), size, None),
        (raw(4, WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), protocol, None),
        (raw(4, WINDOW_UPDATE, 0, 3, b"\x80\0\0\0"), protocol, Some(3)),
        (raw(0, CONTINUATION, 0, 0, b""), protocol, None),
    ];
    for (i, (bytes, reason, stream)) in cases.iter().enumerate() {
        match parse(bytes, DEFAULT_MAX_FRAME_SIZE) {
            Err(e) => assert_eq!((e.reason, e.stream), (*reason, *stream), "case {i}: {e:?}"),
            Ok(f) => panic!("case {i}: {f:?}"),
        }
    }
    // A larger SETTINGS_MAX_FRAME_SIZE lets a larger frame through.
    let big = raw(20_000, DATA, 0, 1, &[0; 20_000]);
    assert!(matches!(parse(&big, 32_768), Ok(Some((Frame::Data { .. }, 20_009)))));
}
