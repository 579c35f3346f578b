use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String, bool)>, Error> {
    let mut out = Vec::new();
    d.decode(block, |n, v, never| {
        out.push((String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned(), never));
    })?;
    Ok(out)
}

fn fields(list: &[(&str, &str)]) -> Vec<(String, String, bool)> {
    list.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned(), false)).collect()
}

/// RFC 7541 C.4: three requests on one connection, Huffman-coded, the table growing.
#[test]
fn the_rfc_request_examples_decode() {
    let mut d = Decoder::new(4096);
    let first = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")];
    assert_eq!(decode(&mut d, &hex("828684418cf1e3c2e5f23a6ba0ab90f4ff")).unwrap(), fields(&first));
    assert_eq!(d.table_size(), 57);
    let mut second = first.to_vec();
    second.push(("cache-control", "no-cache"));
    assert_eq!(decode(&mut d, &hex("828684be5886a8eb10649cbf")).unwrap(), fields(&second));
    assert_eq!(d.table_size(), 110);
    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    let block = hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf");
    assert_eq!(decode(&mut d, &block).unwrap(), fields(&third));
    assert_eq!(d.table_size(), 164);
}

/// RFC 7541 C.6: responses with a 256-byte table, so that entries are evicted.
#[test]
fn the_rfc_response_examples_decode_and_evict() {
    let mut d = Decoder::new(256);
    let date = "Mon, 21 Oct 2013 20:13:21 GMT";
    let location = ("location", "https://www.example.com");
    let block = hex(concat!(
        "3fe101488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff",
        "6e919d29ad171863c78f0b97c8e9ae82ae43d3"
    ));
    let first = [(":status", "302"), ("cache-control", "private"), ("date", date), location];
    assert_eq!(decode(&mut d, &block).unwrap(), fields(&first));
    assert_eq!(d.table_size(), 222);
    let second = [(":status", "307"), ("cache-control", "private"), ("date", date), location];
    assert_eq!(decode(&mut d, &hex("4883640effc1c0bf")).unwrap(), fields(&second));
    assert_eq!(d.table_size(), 222);
    let block = hex(concat!(
        "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335",
        "dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007"
    ));
    let third = [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        location,
        ("content-encoding", "gzip"),
        ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
    ];
    assert_eq!(decode(&mut d, &block).unwrap(), fields(&third));
    assert_eq!(d.table_size(), 215);
}

#[test]
fn huffman_codes_every_byte_both_ways() {
    let all: Vec<u8> = (0..=255).collect();
    for text in [&all[..], b"", b"www.example.com", b"a", &[0xff; 40]] {
        let mut coded = Vec::new();
        huffman_encode(text, &mut coded);
        let mut back = Vec::new();
        huffman_decode(&coded, &mut back).unwrap();
        assert_eq!(back, text);
    }
    let mut coded = Vec::new();
    huffman_encode(b"www.example.com", &mut coded);
    assert_eq!(coded, hex("f1e3c2e5f23a6ba0ab90f4ff"));
}

/// The Huffman decoder of the RFC's text, a bit at a time: what [`huffman_decode`] must agree
/// with on any input.
fn huffman_decode_bitwise(coded: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let (mut code, mut len) = (0u64, 0u32);
    for &byte in coded {
        for shift in (0..8).rev() {
            code = (code << 1) | u64::from((byte >> shift) & 1);
            len += 1;
            let found = huffman_table::CODES.iter().position(|&(c, l)| u32::from(l) == len && u64::from(c) == code);
            match found {
                Some(256) => return Err(Error::Huffman),
                Some(symbol) => {
                    out.push(symbol as u8);
                    (code, len) = (0, 0);
                }
                None if len == 30 => return Err(Error::Huffman),
                None => {}
            }
        }
    }
    if len > 7 || code != (1u64 << len) - 1 {
        return Err(Error::Huffman);
    }
    Ok(out)
}

#[test]
fn huffman_decoding_agrees_with_the_bitwise_decoder_on_any_input() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::new();
    for round in 0..20_000 {
        let len = (next() % 40) as usize;
        let input: Vec<u8> = if round % 2 == 0 {
            // Coded text (most of it short codes, some long), cut anywhere.
            let text: Vec<u8> = (0..len)
                .map(|_| if next() % 8 == 0 { next() as u8 } else { b"abcdefghij0123/-._:ABC"[(next() % 22) as usize] })
                .collect();
            let mut coded = Vec::new();
            huffman_encode(&text, &mut coded);
            let cut = if next() % 4 == 0 { (next() as usize) % (coded.len() + 1) } else { coded.len() };
            coded.truncate(cut);
            coded
        } else {
            // Noise, heavy in ones (the long codes and EOS).
            (0..len).map(|_| (next() as u8) | if next() % 2 == 0 { 0xf0 } else { 0 }).collect()
        };
        out.clear();
        let fast = huffman_decode(&input, &mut out).map(|()| out.clone());
        assert_eq!(fast, huffman_decode_bitwise(&input), "{input:02x?}");
    }
}

#[test]
fn malformed_huffman_is_refused() {
    let mut out = Vec::new();
    // EOS (30 ones) inside the string.
    assert_eq!(huffman_decode(&[0xff, 0xff, 0xff, 0xfc], &mut out), Err(Error::Huffman));
    // Padding longer than seven bits.
    assert_eq!(huffman_decode(&[0xff], &mut out), Err(Error::Huffman));
    assert_eq!(huffman_decode(&[0x1f, 0xff], &mut out), Err(Error::Huffman));
    // Padding that is not ones: `a` (00011) then 000.
    assert_eq!(huffman_decode(&[0x18], &mut out), Err(Error::Huffman));
    // `a` then 111 is fine.
    out.clear();
    assert_eq!(huffman_decode(&[0x1f], &mut out), Ok(()));
    assert_eq!(out, b"a");
}

#[test]
fn what_the_encoder_writes_decodes_to_what_it_was_given() {
    let list: &[(&[u8], &[u8], bool)] = &[
        (b":status", b"200", false),
        (b":status", b"503", false),
        (b":method", b"POST", false),
        (b"content-type", b"application/grpc", false),
        (b"grpc-status", b"0", false),
        (b"x-amzn-requestid", b"0d3b8f2c-6d0e-4f5e-9c1a-2b7e0f1a9c44", true),
        (b"authorization", b"secret", true),
        (b"accept-encoding", b"gzip, deflate", false),
        (b"x-long", &[b'v'; 300], false),
        (b"", b"", false),
    ];
    let mut block = Vec::new();
    for (n, v, sensitive) in list {
        encode(&mut block, n, v, *sensitive);
    }
    let mut d = Decoder::new(4096);
    let mut got = Vec::new();
    d.decode(&block, |n, v, never| got.push((n.to_vec(), v.to_vec(), never))).unwrap();
    let want: Vec<_> = list.iter().map(|(n, v, s)| (n.to_vec(), v.to_vec(), *s)).collect();
    assert_eq!(got, want);
    assert_eq!(d.table_size(), 0, "nothing is indexed");
    // A field of the static table is one byte; a name of it, an index and the value.
    let one = |n: &[u8], v: &[u8]| {
        let mut out = Vec::new();
        encode(&mut out, n, v, false);
        out
    };
    assert_eq!(one(b":status", b"200"), [0x88]);
    assert_eq!(one(b":method", b"POST"), [0x83]);
    assert_eq!(one(b":status", b"503"), [0x08, 3, b'5', b'0', b'3']);
    assert_eq!(one(b"content-type", b"x"), [0x0f, 0x10, 1, b'x']);
}

#[test]
fn malformed_blocks_are_errors() {
    let cases: &[(&str, Error)] = &[
        ("80", Error::BadIndex),  // index 0
        ("be", Error::BadIndex),  // index 62, an empty dynamic table
        ("ff", Error::Truncated), // an index that goes on past the end
        ("ffffffffffff01", Error::Overflow),
        ("0f", Error::Truncated),         // a name index with no value after it
        ("0003616263", Error::Truncated), // a literal name of 3, a value cut off
        ("000a61", Error::Truncated),     // a name longer than the block
        ("3fe21f", Error::TableSize),     // a size update over the 4096 limit
        ("82 20", Error::TableSize),      // a size update after a field
        ("0081ff0161", Error::Huffman),   // a Huffman name that is all padding
    ];
    for (block, want) in cases {
        let mut d = Decoder::new(4096);
        let got = d.decode(&hex(&block.replace(' ', "")), |_, _, _| {});
        assert_eq!(got, Err(*want), "{block}");
    }
}

#[test]
fn size_updates_shrink_the_table_and_large_entries_empty_it() {
    let mut d = Decoder::new(4096);
    // custom-key: custom-header, indexed (RFC 7541 C.2.1).
    let block = hex("400a637573746f6d2d6b65790d637573746f6d2d686561646572");
    decode(&mut d, &block).unwrap();
    assert_eq!(d.table_size(), 55);
    // A size update to 0 evicts everything, then index 62 names nothing.
    assert_eq!(decode(&mut d, &hex("20")).unwrap(), vec![]);
    assert_eq!(d.table_size(), 0);
    assert_eq!(decode(&mut d, &hex("be")), Err(Error::BadIndex));
    // With a 40-byte table, a 55-byte entry is not kept and empties the table.
    let mut d = Decoder::new(4096);
    let mut small = hex("3f09"); // size update to 40
    small.extend_from_slice(&block);
    decode(&mut d, &small).unwrap();
    assert_eq!(d.table_size(), 0);
}

#[test]
fn static_names_are_found_as_the_table_has_them() {
    for (i, (name, _)) in STATIC.iter().enumerate() {
        let first = STATIC.iter().position(|(n, _)| n == name).unwrap();
        let values = STATIC.iter().filter(|(n, v)| n == name && !v.is_empty()).count();
        let k = known(name.as_bytes());
        assert_eq!((k.name_index(), usize::from(k.values)), (Some(first + 1), values), "{name} at {}", i + 1);
        for (at, (_, value)) in STATIC.iter().enumerate().skip(first).take(values) {
            assert_eq!(k.field_index(value.as_bytes()), Some(at + 1), "{name}: {value}");
        }
        assert_eq!(k.field_index(b""), None);
        assert_eq!(k.field_index(b"other"), None);
    }
    for other in [&b""[..], b":", b":authorit", b"content-lengths", b"Content-Length", b"x-custom"] {
        assert_eq!(known(other), Known::UNKNOWN);
    }
    assert!(known(b"x-amzn-requestid").vary && known(b":path").vary && known(b"cookie").vary);
    assert!(!known(b":authority").vary && !known(b"content-type").vary);
}

/// Fields as decoded: name, value, never indexed.
type Owned = Vec<(Vec<u8>, Vec<u8>, bool)>;

/// Encodes `list` as one block with `e` and decodes it with `d`; the block, and the fields as
/// decoded.
fn cross(e: &mut Encoder, d: &mut Decoder, list: &[(&[u8], &[u8], bool)]) -> (Vec<u8>, Owned) {
    let mut block = Vec::new();
    e.block(&mut block, list.iter().copied());
    let mut got = Vec::new();
    d.decode(&block, |n, v, never| got.push((n.to_vec(), v.to_vec(), never))).expect("a block the encoder wrote");
    assert_eq!(e.table_size(), d.table_size(), "the two tables in step");
    (block, got)
}

fn owned(list: &[(&[u8], &[u8], bool)]) -> Owned {
    list.iter().map(|(n, v, s)| (n.to_vec(), v.to_vec(), *s)).collect()
}

#[test]
fn fields_that_repeat_go_by_index_from_their_second_block_on() {
    let arn = b"arn:aws:vpc-lattice:us-east-1:111122223333:targetgroup/tg-0123456789abcdef0";
    let list: &[(&[u8], &[u8], bool)] = &[
        (b":method", b"POST", false),
        (b":scheme", b"http", false),
        (b":authority", b"svc-0123.7d67968.vpc-lattice-svcs.us-east-1.on.aws", false),
        (b":path", b"/bench.Echo/Ping", false),
        (b"content-type", b"application/grpc", false),
        (b"te", b"trailers", false),
        (b"x-forwarded-for", b"10.0.1.7", false),
        (b"x-amzn-lattice-target", arn, false),
        (b"content-length", b"10", false),
        (b"x-amzn-requestid", b"0d3b8f2c-6d0e-4f5e-9c1a-2b7e0f1a9c44", true),
    ];
    let (mut e, mut d) = (Encoder::new(), Decoder::new(4096));
    let (first, got) = cross(&mut e, &mut d, list);
    assert_eq!(got, owned(list));
    let (second, got) = cross(&mut e, &mut d, list);
    assert_eq!(got, owned(list));
    // The four repeated fields of no static entry are one byte each now; :path and
    // content-length went as literals with their static names, the request id never indexed.
    let mut want = vec![0x83, 0x86, 0xc2, 0x04, 16];
    want.extend_from_slice(b"/bench.Echo/Ping");
    want.extend_from_slice(&[0xc1, 0xc0, 0xbf, 0xbe, 0x0f, 0x0d, 2, b'1', b'0', 0x10, 16]);
    want.extend_from_slice(b"x-amzn-requestid");
    assert_eq!(second[..want.len()], want, "{second:02x?}");
    assert_eq!(second.len(), want.len() + 1 + 36);
    assert!(first.len() > 3 * second.len(), "{} then {}", first.len(), second.len());
    // A new value of a name in the table is inserted with the name by index.
    let moved: &[(&[u8], &[u8], bool)] = &[(b"x-forwarded-for", b"10.0.1.8", false)];
    let (block, got) = cross(&mut e, &mut d, moved);
    assert_eq!(got, owned(moved));
    assert_eq!(block[0], 0x40 | 63, "literal with indexing, the name at 63: {block:02x?}");
    // Nothing of a field that is sensitive or new on every message went into the table.
    let size = e.table_size();
    let never: &[(&[u8], &[u8], bool)] = &[
        (b"x-custom", b"secret", true),
        (b"authorization", b"Bearer abc", false),
        (b"cookie", b"a=b", false),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", false),
        (b"x-large", &[b'v'; 1100], false),
    ];
    let (_, got) = cross(&mut e, &mut d, never);
    assert_eq!(got, owned(never));
    assert_eq!(e.table_size(), size);
}

#[test]
fn the_table_follows_the_limit_the_peer_sets() {
    let list: &[(&[u8], &[u8], bool)] = &[(b"x-a", b"1", false), (b"x-b", b"2", false)];
    let (mut e, mut d) = (Encoder::new(), Decoder::new(4096));
    cross(&mut e, &mut d, list);
    assert_eq!(e.table_size(), 2 * 36);
    // The same limit again: nothing to say. One over what the proxy keeps: the size it keeps,
    // said outright.
    e.set_peer_limit(4096);
    let (block, _) = cross(&mut e, &mut d, list);
    assert_eq!(block, [0xbf, 0xbe]);
    e.set_peer_limit(65_536);
    let (block, _) = cross(&mut e, &mut d, list);
    assert_eq!(block, [0x3f, 0xe1, 0x1f, 0xbf, 0xbe]);
    // Down to 0 and back up before the next block: both sizes, the smaller first, and the
    // table starts again.
    e.set_peer_limit(0);
    e.set_peer_limit(100);
    e.set_peer_limit(4096);
    let (block, got) = cross(&mut e, &mut d, list);
    assert_eq!(got, owned(list));
    assert_eq!(&block[..4], [0x20, 0x3f, 0xe1, 0x1f], "{block:02x?}");
    assert_eq!(e.table_size(), 2 * 36);
    // Down to 40: the newer entry stays, and the other, over a quarter of the table, is not
    // indexed again.
    e.set_peer_limit(40);
    let (block, got) = cross(&mut e, &mut d, list);
    assert_eq!(got, owned(list));
    assert_eq!(block, [0x3f, 0x09, 0x00, 3, b'x', b'-', b'a', 1, b'1', 0xbe], "{block:02x?}");
    assert_eq!(e.table_size(), 36);
    // Up to 200: room for both, not for an entry of 60.
    e.set_peer_limit(200);
    let more: &[(&[u8], &[u8], bool)] = &[(b"x-a", b"1", false), (b"x-c", &[b'c'; 25], false)];
    let (block, got) = cross(&mut e, &mut d, more);
    assert_eq!(got, owned(more));
    assert_eq!(block[..4], [0x3f, 0xa9, 0x01, 0x40], "{block:02x?}");
    assert_eq!(e.table_size(), 72);
}

#[test]
fn any_mix_of_fields_and_limits_decodes_as_it_was_given() {
    // A pool with names that repeat, values that change, sizes near the limits, sensitive
    // fields; blocks drawn from it by a fixed generator, the peer's limit moved now and then.
    let long = [b'L'; 900];
    let pool: Vec<(&[u8], &[u8], bool)> = vec![
        (b":method", b"GET", false),
        (b":method", b"PATCH", false),
        (b":path", b"/a", false),
        (b":authority", b"one.example", false),
        (b":authority", b"two.example", false),
        (b"user-agent", b"grpc-go/1.60", false),
        (b"x-forwarded-for", b"10.0.0.1", false),
        (b"x-forwarded-for", b"10.0.0.2", false),
        (b"x-forwarded-for", b"10.0.0.3", false),
        (b"x-forwarded-for", b"10.0.1.3", false),
        (b"x-long", &long[..], false),
        (b"x-long", &long[..200], false),
        (b"x-secret", b"s", true),
        (b"cookie", b"k=v", false),
        (b"", b"", false),
    ];
    let limits = [0u32, 40, 64, 100, 300, 1024, 4096, 9000];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut e, mut d) = (Encoder::new(), Decoder::new(4096));
    let mut limit = 4096usize;
    for round in 0..2000 {
        if next(10) == 0 {
            for _ in 0..=next(3) {
                limit = limits[next(limits.len())] as usize;
                e.set_peer_limit(limit as u32);
            }
        }
        let list: Vec<_> = (0..next(12)).map(|_| pool[next(pool.len())]).collect();
        let (_, got) = cross(&mut e, &mut d, &list);
        assert_eq!(got, owned(&list), "round {round}");
        assert!(d.table_size() <= limit.min(MAX_TABLE), "round {round}: {} over {limit}", d.table_size());
    }
}
