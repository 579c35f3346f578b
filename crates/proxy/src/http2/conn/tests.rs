use super::*;

/// An event, owned.
enum Ev {
    Head(u32, Head, bool),
    Data(u32, Vec<u8>, bool),
    Trailers(u32, Head),
    Reset(u32, Reason, bool),
    GoAway(u32, Reason),
}

impl std::fmt::Debug for Ev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Head(stream, head, end) => write!(f, "Head({stream}, {head:?}, {end})"),
            Self::Data(stream, data, end) => write!(f, "Data({stream}, {} bytes, {end})", data.len()),
            Self::Trailers(stream, head) => write!(f, "Trailers({stream}, {head:?})"),
            Self::Reset(stream, reason, by_peer) => write!(f, "Reset({stream}, {}, {by_peer})", reason.0),
            Self::GoAway(last, reason) => write!(f, "GoAway({last}, {})", reason.0),
        }
    }
}

/// One end: its connection, the bytes it has not read yet, and whether it gives data back as
/// soon as it reads it.
struct End {
    conn: Connection,
    inbox: Vec<u8>,
    release: bool,
}

impl End {
    fn new(role: Role, config: Config) -> Self {
        Self { conn: Connection::new(role, config), inbox: Vec::new(), release: true }
    }

    /// Reads what has come; the events, or the connection error.
    fn read(&mut self) -> Result<Vec<Ev>, Error> {
        let mut events = Vec::new();
        let mut at = 0;
        loop {
            let (used, event) = self.conn.read(&self.inbox[at..])?;
            at += used;
            let Some(event) = event else { break };
            events.push(match event {
                Event::Head { stream, head, end_stream } => Ev::Head(stream, head, end_stream),
                Event::Data { stream, data, end_stream } => {
                    let data = data.to_vec();
                    if self.release {
                        self.conn.release(stream, data.len());
                    }
                    Ev::Data(stream, data, end_stream)
                }
                Event::Trailers { stream, trailers } => Ev::Trailers(stream, trailers),
                Event::Reset { stream, reason, by_peer } => Ev::Reset(stream, reason, by_peer),
                Event::GoAway { last_stream, reason } => Ev::GoAway(last_stream, reason),
            });
        }
        self.inbox.drain(..at);
        Ok(events)
    }
}

/// Moves bytes both ways until neither side has more to say; the events each side read.
fn pump(client: &mut End, server: &mut End) -> (Vec<Ev>, Vec<Ev>) {
    let (mut at_client, mut at_server) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        if !client.conn.has_output() && !server.conn.has_output() {
            return (at_client, at_server);
        }
        server.inbox.append(client.conn.out());
        at_server.extend(server.read().expect("server"));
        client.inbox.append(server.conn.out());
        at_client.extend(client.read().expect("client"));
    }
    panic!("the ends kept talking");
}

fn pair() -> (End, End) {
    let mut client = End::new(Role::Client, Config::default());
    let mut server = End::new(Role::Server, Config::default());
    let (a, b) = pump(&mut client, &mut server);
    assert!(a.is_empty() && b.is_empty());
    (client, server)
}

fn get(path: &str) -> Vec<(&[u8], &[u8], bool)> {
    vec![
        (b":method", b"GET", false),
        (b":scheme", b"https", false),
        (b":authority", b"svc.example", false),
        (b":path", path.as_bytes(), false),
        (b"user-agent", b"test", false),
    ]
}

/// The frames in `bytes`, one line each.
fn frames(bytes: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest = bytes;
    if rest.starts_with(PREFACE) {
        rest = &rest[PREFACE.len()..];
    }
    while let Some((f, used)) = frame::parse(rest, frame::MAX_MAX_FRAME_SIZE).expect("a frame") {
        rest = &rest[used..];
        lines.push(match f {
            Frame::Data { stream, end_stream, data, .. } => format!("DATA {stream} {} {end_stream}", data.len()),
            Frame::Headers { stream, end_stream, end_headers, .. } => {
                format!("HEADERS {stream} {end_stream} {end_headers}")
            }
            Frame::RstStream { stream, reason } => format!("RST_STREAM {stream} {}", reason.0),
            Frame::Settings { ack, .. } => format!("SETTINGS {ack}"),
            Frame::Ping { ack, .. } => format!("PING {ack}"),
            Frame::GoAway { last_stream, reason, .. } => format!("GOAWAY {last_stream} {}", reason.0),
            Frame::WindowUpdate { stream, increment } => format!("WINDOW_UPDATE {stream} {increment}"),
            other => format!("{other:?}"),
        });
    }
    assert!(rest.is_empty(), "a partial frame at the end");
    lines
}

/// A server that has read a client's preface and SETTINGS, its own first output cleared.
fn server() -> End {
    let mut server = End::new(Role::Server, Config { max_concurrent_streams: 2, ..Config::default() });
    server.inbox.extend_from_slice(PREFACE);
    frame::write_settings(&mut server.inbox, &[], false);
    assert!(server.read().expect("preface").is_empty());
    server.conn.out().clear();
    server
}

/// A header block of raw fields, as a peer might send anything.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        hpack::encode(&mut out, name.as_bytes(), value.as_bytes(), false);
    }
    out
}

const REQUEST: [(&str, &str); 4] = [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")];

fn request_with(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = REQUEST.to_vec();
    fields.extend_from_slice(extra);
    block(&fields)
}

#[test]
fn a_request_and_its_response_cross() {
    let (mut client, mut server) = pair();
    let id = client.conn.open(get("/hello?x=1"), true, false).expect("a stream");
    assert_eq!(id, 1);
    let (_, at_server) = pump(&mut client, &mut server);
    let [Ev::Head(1, head, true)] = &at_server[..] else { panic!("{at_server:?}") };
    assert_eq!(head.method(), Some(&b"GET"[..]));
    assert_eq!(head.scheme(), Some(&b"https"[..]));
    assert_eq!(head.authority(), Some(&b"svc.example"[..]));
    assert_eq!(head.path(), Some(&b"/hello?x=1"[..]));
    assert_eq!(head.fields().collect::<Vec<_>>(), [(&b"user-agent"[..], &b"test"[..], false)]);

    let response: [(&[u8], &[u8], bool); 3] = [
        (b":status", b"200", false),
        (b"content-type", b"application/grpc", false),
        (b"x-amzn-requestid", b"id", true),
    ];
    assert!(server.conn.send_headers(1, response, false));
    assert_eq!(server.conn.send_data(1, b"hello", false), Some(5));
    assert!(server.conn.send_headers(1, [(&b"grpc-status"[..], &b"0"[..], false)], true));
    assert_eq!(server.conn.open_streams(), 0, "both sides ended");
    let (at_client, _) = pump(&mut client, &mut server);
    let [Ev::Head(1, head, false), Ev::Data(1, data, false), Ev::Trailers(1, trailers)] = &at_client[..] else {
        panic!("{at_client:?}")
    };
    assert_eq!(head.status(), Some(200));
    assert_eq!(head.get(b"x-amzn-requestid"), Some(&b"id"[..]));
    assert!(head.fields().any(|(name, _, sensitive)| name == b"x-amzn-requestid" && sensitive));
    assert_eq!(data, b"hello");
    assert_eq!(trailers.get(b"grpc-status"), Some(&b"0"[..]));
    assert_eq!(client.conn.open_streams(), 0);
    assert!(client.conn.can_open());
    assert_eq!(client.conn.open(get("/"), true, false), Some(3));
}

#[test]
fn bodies_larger_than_every_window_go_through_as_the_reader_releases() {
    let small = Config { stream_window: 65_535, connection_window: 65_535, ..Config::default() };
    let mut client = End::new(Role::Client, small);
    let mut server = End::new(Role::Server, small);
    server.release = false;
    pump(&mut client, &mut server);
    let body: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    let id = client.conn.open(get("/upload"), false, false).expect("a stream");
    let mut sent = 0;
    let mut received = Vec::new();
    let mut ended = false;
    for _ in 0..100 {
        if sent < body.len() {
            sent += client.conn.send_data(id, &body[sent..], true).expect("open");
        }
        assert!(sent <= 65_535 + received.len(), "never beyond the window");
        let (_, at_server) = pump(&mut client, &mut server);
        for event in at_server {
            match event {
                Ev::Head(..) => {}
                Ev::Data(stream, data, end) => {
                    // The reader passes it on, then gives it back.
                    server.conn.release(stream, data.len());
                    received.extend_from_slice(&data);
                    ended = end;
                }
                other => panic!("{other:?}"),
            }
        }
        if ended {
            break;
        }
        pump(&mut client, &mut server);
    }
    assert!(ended);
    assert_eq!(received, body);
}

#[test]
fn a_reader_that_does_not_release_stops_its_writer_at_the_window() {
    let (mut client, mut server) = pair();
    server.release = false;
    assert!(client.conn.take_writable(), "the server's SETTINGS and WINDOW_UPDATE opened windows");
    let id = client.conn.open(get("/upload"), false, false).expect("a stream");
    let body = vec![7u8; 2 << 20];
    // The server's SETTINGS gave each stream 1 MiB.
    assert_eq!(client.conn.send_capacity(id), 1 << 20);
    assert_eq!(client.conn.send_data(id, &body, true), Some(1 << 20));
    assert_eq!(client.conn.send_data(id, &body, true), Some(0));
    let (_, at_server) = pump(&mut client, &mut server);
    let got: usize = at_server.iter().map(|e| if let Ev::Data(_, d, _) = e { d.len() } else { 0 }).sum();
    assert_eq!(got, 1 << 20);
    assert!(!client.conn.take_writable());
    server.conn.release(id, got);
    pump(&mut client, &mut server);
    assert!(client.conn.take_writable());
    assert_eq!(client.conn.send_capacity(id), 1 << 20);
}

#[test]
fn settings_are_acknowledged_and_pings_answered() {
    let mut server = End::new(Role::Server, Config::default());
    assert_eq!(frames(server.conn.out()), ["SETTINGS false", &format!("WINDOW_UPDATE 0 {}", (4 << 20) - 65_535)]);
    server.conn.out().clear();
    server.inbox.extend_from_slice(PREFACE);
    frame::write_settings(&mut server.inbox, &[(0x4, 100_000), (0x5, 32_768)], false);
    frame::write_ping(&mut server.inbox, *b"abcdefgh", false);
    frame::write_ping(&mut server.inbox, *b"abcdefgh", true);
    assert!(server.read().expect("fine").is_empty());
    assert_eq!(frames(server.conn.out()), ["SETTINGS true", "PING true"]);
    assert!(server.conn.out().ends_with(b"abcdefgh"));
    assert_eq!(server.conn.peer_max_frame_size, 32_768);
    assert_eq!(server.conn.peer_initial_window, 100_000);
}

#[test]
fn a_connection_that_does_not_start_as_http2_is_refused() {
    let mut server = End::new(Role::Server, Config::default());
    server.conn.out().clear();
    server.inbox.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(server.read().unwrap_err().reason, Reason::PROTOCOL_ERROR);
    assert_eq!(frames(server.conn.out()), ["GOAWAY 0 1"]);
    assert!(server.conn.read(b"more").is_err(), "it stays failed");

    // A preface in pieces is waited for.
    let mut server = End::new(Role::Server, Config::default());
    server.inbox.extend_from_slice(&PREFACE[..10]);
    assert!(server.read().expect("waits").is_empty());
    server.inbox.extend_from_slice(&PREFACE[10..]);
    // Then the first frame must be SETTINGS.
    frame::write_ping(&mut server.inbox, [0; 8], false);
    assert_eq!(server.read().unwrap_err().what, "the peer's first frame is not SETTINGS");
}

#[test]
fn malformed_requests_reset_their_stream_and_nothing_else() {
    let cases: &[(&str, Vec<u8>)] = &[
        ("uppercase name", request_with(&[("User-Agent", "x")])),
        ("connection field", request_with(&[("connection", "keep-alive")])),
        ("transfer-encoding", request_with(&[("transfer-encoding", "chunked")])),
        ("te other than trailers", request_with(&[("te", "gzip")])),
        ("value with LF", request_with(&[("x-a", "1\n2")])),
        ("value with NUL", request_with(&[("x-a", "1\u{0}2")])),
        ("value with leading space", request_with(&[("x-a", " 1")])),
        ("name with a colon", request_with(&[("x:a", "1")])),
        // Past the first eight bytes, and in the last short word.
        ("uppercase in a long name", request_with(&[("x-a-long-field-Name", "1")])),
        ("space in a long name", request_with(&[("x-a-long-field name", "1")])),
        ("non-ASCII name", request_with(&[("x-caf\u{e9}", "1")])),
        ("CR in a long value", request_with(&[("x-a", "0123456789abcdef\r")])),
        ("LF in a long value", request_with(&[("x-a", "01234567\n89abcdef")])),
        ("empty name", request_with(&[("", "1")])),
        ("no :path", block(&[(":method", "GET"), (":scheme", "https"), (":authority", "a")])),
        ("empty :path", block(&[(":method", "GET"), (":scheme", "https"), (":path", "")])),
        ("no :method", block(&[(":scheme", "https"), (":path", "/")])),
        ("no :scheme", block(&[(":method", "GET"), (":path", "/")])),
        ("pseudo after regular", block(&[(":method", "GET"), ("x-a", "1"), (":scheme", "https"), (":path", "/")])),
        ("pseudo twice", request_with(&[]).into_iter().chain(block(&[(":path", "/again")])).collect()),
        ("unknown pseudo", request_with(&[(":protocol", "websocket")])),
        ("response pseudo", request_with(&[(":status", "200")])),
        ("two content-lengths", request_with(&[("content-length", "1"), ("content-length", "2")])),
        ("content-length not a number", request_with(&[("content-length", "1e3")])),
    ];
    for (what, block) in cases {
        let mut server = server();
        frame::write_headers(&mut server.inbox, 1, block, true, 16_384);
        // The connection goes on: a sound request after it is served.
        frame::write_headers(&mut server.inbox, 3, &request_with(&[]), true, 16_384);
        let events = server.read().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(matches!(&events[..], [Ev::Head(3, _, true)]), "{what}: {events:?}");
        assert_eq!(frames(server.conn.out()), ["RST_STREAM 1 1"], "{what}");
    }
    // te: trailers is what gRPC sends, and stays.
    let mut server = server();
    frame::write_headers(&mut server.inbox, 1, &request_with(&[("te", "trailers")]), true, 16_384);
    let events = server.read().expect("fine");
    let [Ev::Head(1, head, true)] = &events[..] else { panic!("{events:?}") };
    assert_eq!(head.get(b"te"), Some(&b"trailers"[..]));
}

#[test]
fn a_header_list_over_the_limit_is_answered_431() {
    let mut server = server();
    let big = "x".repeat(70_000);
    let block = request_with(&[("x-big", &big)]);
    frame::write_headers(&mut server.inbox, 1, &block, false, 16_384);
    assert!(server.read().expect("not a connection error").is_empty());
    assert_eq!(frames(server.conn.out()), ["HEADERS 1 true true", "RST_STREAM 1 0"]);
    let mut decoded = Vec::new();
    let out = server.conn.out().clone();
    let Some((Frame::Headers { block, .. }, _)) = frame::parse(&out, 16_384).unwrap() else { panic!() };
    hpack::Decoder::new(4096).decode(block, |n, v, _| decoded.push((n.to_vec(), v.to_vec()))).unwrap();
    assert_eq!(decoded, [(b":status".to_vec(), b"431".to_vec())]);
    // Its DATA, still on the way, is dropped; the connection's window is given back.
    frame::write_data(&mut server.inbox, 1, &[0; 100], true);
    assert!(server.read().expect("dropped").is_empty());
}

#[test]
fn streams_over_the_limit_are_refused_and_ids_only_go_up() {
    let mut server = server();
    for id in [1, 3, 5] {
        frame::write_headers(&mut server.inbox, id, &request_with(&[]), false, 16_384);
    }
    let events = server.read().expect("fine");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(frames(server.conn.out()), ["RST_STREAM 5 7"]);
    server.conn.out().clear();
    // Stream 1 ends both ways; a new one fits again.
    frame::write_data(&mut server.inbox, 1, b"", true);
    server.read().expect("fine");
    assert!(server.conn.send_headers(1, [(&b":status"[..], &b"200"[..], false)], true));
    frame::write_headers(&mut server.inbox, 7, &request_with(&[]), true, 16_384);
    assert!(matches!(&server.read().expect("fine")[..], [Ev::Head(7, _, true)]));
    // A lower id than one already used is a closed stream's; an even one the client may not use.
    frame::write_headers(&mut server.inbox, 4, &request_with(&[]), true, 16_384);
    assert_eq!(server.read().unwrap_err().reason, Reason::PROTOCOL_ERROR);
}

/// A server (`config`) that gives nothing back, sent a request and 64 KiB of its body: one
/// byte more than the default window.
fn flooded(config: Config) -> End {
    let mut server = End::new(Role::Server, config);
    server.release = false;
    server.inbox.extend_from_slice(PREFACE);
    frame::write_settings(&mut server.inbox, &[], false);
    frame::write_headers(&mut server.inbox, 1, &request_with(&[]), false, 16_384);
    for _ in 0..4 {
        frame::write_data(&mut server.inbox, 1, &[0; 16_384], false);
    }
    server.conn.out().clear();
    server
}

#[test]
fn flow_control_breaches() {
    // Beyond the stream's window: that stream is reset.
    let mut server = flooded(Config { stream_window: 65_535, ..Config::default() });
    let events = server.read().expect("fine");
    assert!(matches!(events.last(), Some(Ev::Reset(1, Reason::FLOW_CONTROL_ERROR, false))), "{events:?}");
    assert!(frames(server.conn.out()).contains(&"RST_STREAM 1 3".to_string()));

    // Beyond the connection's: the connection goes.
    let mut server = flooded(Config { stream_window: 1 << 20, connection_window: 65_535, ..Config::default() });
    assert_eq!(server.read().unwrap_err().reason, Reason::FLOW_CONTROL_ERROR);

    // A window past 2^31-1.
    let mut server = self::server();
    frame::write_window_update(&mut server.inbox, 0, MAX_WINDOW);
    assert_eq!(server.read().unwrap_err().reason, Reason::FLOW_CONTROL_ERROR);
    let mut server = self::server();
    frame::write_headers(&mut server.inbox, 1, &request_with(&[]), false, 16_384);
    frame::write_window_update(&mut server.inbox, 1, MAX_WINDOW);
    let events = server.read().expect("a stream error");
    assert!(matches!(events.last(), Some(Ev::Reset(1, Reason::FLOW_CONTROL_ERROR, false))), "{events:?}");
}

#[test]
fn content_length_must_match_the_data() {
    for (data, end) in [(&b"toolong"[..], true), (&b"abc"[..], true), (&b"abcdefgh"[..], false)] {
        let mut server = server();
        frame::write_headers(&mut server.inbox, 1, &request_with(&[("content-length", "5")]), false, 16_384);
        frame::write_data(&mut server.inbox, 1, data, end);
        let events = server.read().expect("a stream error");
        assert!(matches!(events.last(), Some(Ev::Reset(1, Reason::PROTOCOL_ERROR, false))), "{events:?}");
    }
    let mut server = server();
    frame::write_headers(&mut server.inbox, 1, &request_with(&[("content-length", "5")]), false, 16_384);
    frame::write_data(&mut server.inbox, 1, b"ab", false);
    frame::write_data(&mut server.inbox, 1, b"cde", true);
    let events = server.read().expect("fine");
    assert!(matches!(events.last(), Some(Ev::Data(1, _, true))), "{events:?}");
    // A head that ends the stream but promises a body.
    let mut server = self::server();
    frame::write_headers(&mut server.inbox, 1, &request_with(&[("content-length", "5")]), true, 16_384);
    assert!(server.read().expect("fine").is_empty());
    assert_eq!(frames(server.conn.out()), ["RST_STREAM 1 1"]);
}

#[test]
fn header_blocks_continue_across_frames_and_may_not_be_interrupted() {
    let mut server = server();
    let block = request_with(&[("x-long", &"v".repeat(40_000))]);
    frame::write_headers(&mut server.inbox, 1, &block, true, 16_384);
    assert_eq!(frames(&server.inbox).len(), 3, "HEADERS and two CONTINUATIONs");
    // Fed a byte at a time, it is the same.
    let whole = std::mem::take(&mut server.inbox);
    let mut events = Vec::new();
    for b in whole {
        server.inbox.push(b);
        events.extend(server.read().expect("fine"));
    }
    let [Ev::Head(1, head, true)] = &events[..] else { panic!("{events:?}") };
    assert_eq!(head.get(b"x-long").map(<[u8]>::len), Some(40_000));

    let mut server = self::server();
    let mut block_frames = Vec::new();
    frame::write_headers(&mut block_frames, 1, &block, true, 16_384);
    let first_len = frame::HEADER_LEN + 16_384;
    server.inbox.extend_from_slice(&block_frames[..first_len]);
    frame::write_ping(&mut server.inbox, [0; 8], false);
    assert_eq!(server.read().unwrap_err().what, "a header block interrupted");

    let mut server = self::server();
    server.inbox.extend_from_slice(&block_frames[first_len..]);
    assert_eq!(server.read().unwrap_err().what, "CONTINUATION without a header block");
}

#[test]
fn resets_both_ways() {
    let (mut client, mut server) = pair();
    let id = client.conn.open(get("/"), false, false).expect("a stream");
    pump(&mut client, &mut server);
    // The client cancels (a gRPC deadline): the server hears it.
    client.conn.reset(id, Reason::CANCEL);
    assert!(!client.conn.is_open(id));
    let (_, at_server) = pump(&mut client, &mut server);
    assert!(matches!(&at_server[..], [Ev::Reset(1, Reason::CANCEL, true)]), "{at_server:?}");
    assert_eq!(server.conn.open_streams(), 0);
    // What the server still says on it is dropped by the client.
    assert!(!server.conn.send_headers(id, [(&b":status"[..], &b"200"[..], false)], true));

    // The server gives up on a stream: the client hears it.
    let id = client.conn.open(get("/"), false, false).expect("a stream");
    pump(&mut client, &mut server);
    server.conn.reset(id, Reason::INTERNAL_ERROR);
    let (at_client, _) = pump(&mut client, &mut server);
    assert!(matches!(&at_client[..], [Ev::Reset(3, Reason::INTERNAL_ERROR, true)]), "{at_client:?}");
    // Data the client sends after, crossing the reset, is dropped by the server.
    assert_eq!(client.conn.send_data(id, b"late", true), None);

    // RST_STREAM on an idle stream is a connection error.
    let mut server = self::server();
    frame::write_rst_stream(&mut server.inbox, 9, Reason::CANCEL);
    assert_eq!(server.read().unwrap_err().reason, Reason::PROTOCOL_ERROR);
    // So is DATA.
    let mut server = self::server();
    frame::write_data(&mut server.inbox, 9, b"x", true);
    assert_eq!(server.read().unwrap_err().reason, Reason::PROTOCOL_ERROR);
}

#[test]
fn goaway_both_ways() {
    let (mut client, mut server) = pair();
    let first = client.conn.open(get("/"), true, false).expect("a stream");
    pump(&mut client, &mut server);
    // The server closes gracefully: the stream it took finishes; newer ones are refused.
    server.conn.go_away(Reason::NO_ERROR, b"");
    assert!(server.conn.is_closing());
    let second = client.conn.open(get("/"), true, false).expect("not heard yet");
    let (at_client, at_server) = pump(&mut client, &mut server);
    assert!(matches!(&at_client[..], [Ev::GoAway(1, Reason::NO_ERROR)]), "{at_client:?}");
    assert!(at_server.is_empty(), "{at_server:?}");
    assert!(!client.conn.is_open(second), "refused with the GOAWAY");
    assert!(client.conn.is_open(first));
    assert!(!client.conn.can_open());
    assert_eq!(client.conn.open(get("/"), true, false), None);
    assert!(server.conn.send_headers(first, [(&b":status"[..], &b"204"[..], false)], true));
    let (at_client, _) = pump(&mut client, &mut server);
    assert!(matches!(&at_client[..], [Ev::Head(1, _, true)]), "{at_client:?}");
    assert_eq!((client.conn.open_streams(), server.conn.open_streams()), (0, 0));
}

#[test]
fn a_client_skips_interim_responses_and_checks_the_final_one() {
    let (mut client, mut server) = pair();
    let id = client.conn.open(get("/"), false, false).expect("a stream");
    pump(&mut client, &mut server);
    let mut head = Vec::new();
    hpack::encode(&mut head, b":status", b"100", false);
    frame::write_headers(server.conn.out(), id, &head, false, 16_384);
    let (at_client, _) = pump(&mut client, &mut server);
    assert!(at_client.is_empty(), "{at_client:?}");
    assert!(server.conn.send_headers(id, [(&b":status"[..], &b"200"[..], false)], false));
    let (at_client, _) = pump(&mut client, &mut server);
    assert!(matches!(&at_client[..], [Ev::Head(1, _, false)]), "{at_client:?}");

    // A response without a sound :status resets the stream.
    let id = client.conn.open(get("/"), false, false).expect("a stream");
    pump(&mut client, &mut server);
    let mut head = Vec::new();
    hpack::encode(&mut head, b":status", b"2000", false);
    frame::write_headers(server.conn.out(), id, &head, false, 16_384);
    let (at_client, _) = pump(&mut client, &mut server);
    assert!(matches!(&at_client[..], [Ev::Reset(3, Reason::PROTOCOL_ERROR, false)]), "{at_client:?}");
}

#[test]
fn a_head_response_may_promise_a_body_it_does_not_carry() {
    let (mut client, mut server) = pair();
    let id = client.conn.open(get("/"), true, true).expect("a stream");
    pump(&mut client, &mut server);
    assert!(server.conn.send_headers(
        id,
        [(&b":status"[..], &b"200"[..], false), (b"content-length", b"42", false)],
        true
    ));
    let (at_client, _) = pump(&mut client, &mut server);
    assert!(matches!(&at_client[..], [Ev::Head(1, _, true)]), "{at_client:?}");
}

#[test]
fn the_peer_initial_window_moves_every_stream() {
    let (mut client, mut server) = pair();
    let id = client.conn.open(get("/"), false, false).expect("a stream");
    pump(&mut client, &mut server);
    assert_eq!(client.conn.send_capacity(id), 1 << 20, "the stream's window; the connection's is 4 MiB");
    let _ = server;
    let mut settings = Vec::new();
    frame::write_settings(&mut settings, &[(0x4, 10)], false);
    client.inbox.extend_from_slice(&settings);
    client.read().expect("fine");
    assert_eq!(client.conn.send_capacity(id), 10);
    // A client refuses a server that enables push.
    let mut settings = Vec::new();
    frame::write_settings(&mut settings, &[(0x2, 1)], false);
    client.inbox.extend_from_slice(&settings);
    assert_eq!(client.read().unwrap_err().reason, Reason::PROTOCOL_ERROR);
}

#[test]
fn stream_ids_spread_over_a_tables_buckets_and_tags() {
    use std::hash::BuildHasher;
    // A client's ids: odd and counting up. A table finds a bucket by the low bits and tags
    // entries with the high ones: both should take most of their values.
    let hashes: Vec<u64> = (0..512u32).map(|i| IdState::default().hash_one(2 * i + 1)).collect();
    let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 127).collect();
    let high: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
    assert!(low.len() > 110 && high.len() > 110, "{} low, {} high", low.len(), high.len());
}

/// The header blocks in `bytes`, each joined from its frames.
fn blocks(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = bytes.strip_prefix(PREFACE).unwrap_or(bytes);
    let mut found = Vec::new();
    while let Some((f, used)) = frame::parse(rest, frame::MAX_MAX_FRAME_SIZE).expect("a frame") {
        rest = &rest[used..];
        match f {
            Frame::Headers { block, .. } => found.push(block.to_vec()),
            Frame::Continuation { block, .. } => found.last_mut().expect("a head first").extend_from_slice(block),
            _ => {}
        }
    }
    found
}

#[test]
fn heads_index_what_repeats_within_the_table_size_the_peer_sets() {
    let (mut client, mut server) = pair();
    let mut request = get("/one");
    request.push((b"x-forwarded-for", b"10.0.0.1", false));
    // The server's decoder follows the client's blocks: the second is smaller by what the
    // table holds (`:authority`, `user-agent`, `x-forwarded-for`).
    client.conn.open(request.clone(), true, false).expect("a stream");
    let first = blocks(client.conn.out()).pop().expect("a block").len();
    let (_, at_server) = pump(&mut client, &mut server);
    assert!(matches!(&at_server[..], [Ev::Head(1, ..)]), "{at_server:?}");
    client.conn.open(request.clone(), true, false).expect("a stream");
    let second = blocks(client.conn.out()).pop().expect("a block");
    assert_eq!(
        first - second.len(),
        "svc.example".len() + "test".len() + "x-forwarded-for".len() + "10.0.0.1".len() + 4
    );
    let (_, at_server) = pump(&mut client, &mut server);
    let [Ev::Head(3, head, true)] = &at_server[..] else { panic!("{at_server:?}") };
    assert_eq!(head.authority(), Some(&b"svc.example"[..]));
    assert_eq!(head.get(b"x-forwarded-for"), Some(&b"10.0.0.1"[..]));

    // A server that allows no table: the client's next block says so first and indexes
    // nothing, as read by a decoder that allows none.
    let mut settings = Vec::new();
    frame::write_settings(&mut settings, &[(0x1, 0)], false);
    client.inbox.extend_from_slice(&settings);
    assert!(client.read().expect("settings").is_empty());
    client.conn.out().clear();
    for id in [5, 7] {
        assert_eq!(client.conn.open(request.clone(), true, false), Some(id));
        let block = blocks(client.conn.out()).pop().expect("a block");
        client.conn.out().clear();
        assert_eq!(block[0] == 0x20, id == 5, "{block:02x?}");
        let mut decoded = Vec::new();
        let mut none = hpack::Decoder::new(0);
        let at = usize::from(id == 5);
        none.decode(&block[at..], |n, _, _| decoded.push(n.to_vec())).expect("no table needed");
        assert_eq!(decoded.len(), request.len());
    }
}
