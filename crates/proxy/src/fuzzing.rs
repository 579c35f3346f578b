//! Entry points for the fuzz targets in `fuzz/` (not part of the proxy's API): each takes the
//! raw bytes a client, a target or a resolver could send, runs them through the same functions
//! the data plane runs them through, and panics when one of their promises breaks (a range out
//! of its buffer, a decoder that stops making progress, a response we cannot read back).
//! Owns no behaviour of its own; the I/O around these functions is not fuzzed here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use rustls::server::Acceptor;
use trellis_model::snapshot::{Reach, ServiceView, Snapshot, VpcView};

use crate::dns::{Zones, respond};
use crate::guard::{FramingGuard, Limits};
use crate::h1::{ChunkDecoder, Framing, parse_request, parse_response, response_framing};

/// The head limits the request target runs with (small, so the limits are reached).
const LIMITS: Limits = Limits { head_bytes: 8 * 1024, headers: 32 };

/// Largest UDP response the DNS responder sends (its EDNS payload size).
const MAX_UDP_RESPONSE: usize = 1232;

/// A client's byte stream through the framing guard, then the head parser and body framing as
/// the connection applies them; then the same bytes as a target's response. The first byte
/// sets the size of each read (1 to 256 bytes), so heads and chunk lines arrive split.
pub fn http1(input: &[u8]) {
    let Some((&step, stream)) = input.split_first() else { return };
    let step = usize::from(step) + 1;
    http1_request(stream, step);
    http1_response(stream, step);
}

/// Answers a DNS message as the responder would. The first byte chooses how: bit 0 set for
/// TCP (else UDP), bit 1 set for a VPC with no zone (everything refused).
pub fn dns(input: &[u8]) {
    let Some((&how, query)) = input.split_first() else { return };
    let udp = how & 1 == 0;
    let zone = if how & 2 == 0 { zones().find("vpc-1").map(|z| &**z) } else { None };
    let mut out = Vec::new();
    if !respond(query, zone, udp, &mut out) {
        return;
    }
    let response = Message::from_vec(&out).expect("a response the responder sent parses");
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert_eq!(out.get(..2), query.get(..2), "the response echoes the query's ID");
    if udp {
        assert!(out.len() <= MAX_UDP_RESPONSE, "UDP response of {} bytes", out.len());
    }
}

/// The server name of a ClientHello, lowercased, as the listener reads it (`None`: refused,
/// incomplete or no name). The first byte sets the size of each read (1 to 256 bytes).
pub fn client_hello_sni(input: &[u8]) -> Option<String> {
    let (&step, bytes) = input.split_first()?;
    let mut acceptor = Acceptor::default();
    let mut total = 0;
    for piece in bytes.chunks(usize::from(step) + 1) {
        total += piece.len();
        match crate::tls::feed_hello(&mut acceptor, piece, total) {
            Ok(Some(accepted)) => return accepted.client_hello().server_name().map(str::to_ascii_lowercase),
            Ok(None) => {}
            Err(_) => return None,
        }
    }
    None
}

fn http1_request(stream: &[u8], step: usize) {
    let mut guard = FramingGuard::new(LIMITS);
    let mut passed = 0;
    for piece in stream.chunks(step) {
        let n = guard.scan(piece);
        assert!(n <= piece.len());
        passed += n;
        if n < piece.len() {
            assert!(guard.refusal().is_some(), "the guard held bytes back without refusing");
            break;
        }
    }
    if guard.is_poisoned() {
        return;
    }
    // What the connection does with the bytes the guard let through: heads one after the other,
    // each body skipped as its head frames it.
    let buf = &stream[..passed];
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let Ok(Some(head)) = parse_request(rest, LIMITS.headers) else { return };
        assert!(head.len > 0 && head.len <= rest.len());
        for range in
            [&head.method, &head.target].into_iter().chain(head.fields.iter().flat_map(|f| [&f.name, &f.value]))
        {
            assert!(range.start <= range.end && range.end <= head.len, "{range:?} outside a head of {}", head.len);
        }
        at += head.len;
        match head.framing {
            Framing::Empty => {}
            Framing::Length(n) => match usize::try_from(n) {
                Ok(n) if n <= buf.len() - at => at += n,
                _ => return,
            },
            Framing::Chunked => match chunked(&buf[at..], step) {
                Some(used) => at += used,
                None => return,
            },
            Framing::Close => unreachable!("requests are never framed by close"),
        }
    }
}

fn http1_response(stream: &[u8], step: usize) {
    let Ok(Some(head)) = parse_response(stream) else { return };
    assert!(head.len > 0 && head.len <= stream.len());
    for range in std::iter::once(&head.reason).chain(head.fields.iter().flat_map(|f| [&f.name, &f.value])) {
        assert!(range.start <= range.end && range.end <= head.len, "{range:?} outside a head of {}", head.len);
    }
    if response_framing(&head, false) == Framing::Chunked {
        chunked(&stream[head.len..], step);
    }
}

/// Decodes the chunked body at the start of `input`, fed in pieces of `step` bytes and in one
/// piece; both must agree. The bytes the body takes, or `None` if it is malformed or cut short.
fn chunked(input: &[u8], step: usize) -> Option<usize> {
    let whole = decode(input, input.len().max(1));
    let split = decode(input, step);
    assert_eq!(whole, split, "a chunked body decodes differently when split into {step}-byte reads");
    whole.map(|(used, _)| used)
}

/// The bytes a chunked body takes and its data, feeding at most `step` bytes a call.
fn decode(input: &[u8], step: usize) -> Option<(usize, Vec<u8>)> {
    let mut decoder = ChunkDecoder::default();
    let (mut at, mut data) = (0, Vec::new());
    loop {
        let piece = &input[at..input.len().min(at + step)];
        let d = decoder.decode(piece).ok()?;
        assert!(d.used <= piece.len());
        if let Some(range) = &d.data {
            assert!(range.end <= d.used);
            data.extend_from_slice(&piece[range.clone()]);
        }
        at += d.used;
        if d.done {
            return Some((at, data));
        }
        if at == input.len() {
            return None;
        }
        assert!(d.used > 0, "the decoder used none of {} bytes", piece.len());
    }
}

/// The zones of a small snapshot: vpc-1 (IPv4 ingress, one peer) reaches alpha with private DNS
/// and beta without; vpc-2 (IPv6 ingress) reaches beta.
fn zones() -> &'static Zones {
    static ZONES: OnceLock<Zones> = OnceLock::new();
    ZONES.get_or_init(|| {
        let v4 = IpAddr::V4(Ipv4Addr::new(127, 77, 0, 1));
        let peer = IpAddr::V4(Ipv4Addr::new(127, 77, 0, 2));
        let mut snapshot = Snapshot {
            revision: 1,
            vpcs: [
                vpc("vpc-1", v4, vec![peer], &[("svc-0123456789abcdef0", true), ("svc-0123456789abcdef1", false)]),
                vpc("vpc-2", IpAddr::V6(Ipv6Addr::LOCALHOST), Vec::new(), &[("svc-0123456789abcdef1", true)]),
            ]
            .into_iter()
            .collect(),
            services: [
                service("svc-0123456789abcdef0", "alpha", "alpha.example.com"),
                service("svc-0123456789abcdef1", "beta", "beta.example.com"),
            ]
            .into_iter()
            .collect(),
            ..Snapshot::default()
        };
        snapshot.hosts = trellis_model::snapshot::hosts(&snapshot.services);
        Zones::build(&Arc::new(snapshot))
    })
}

fn vpc(id: &str, ingress: IpAddr, peers: Vec<IpAddr>, reach: &[(&str, bool)]) -> (String, VpcView) {
    let reach = reach
        .iter()
        .map(|&(service, private_dns)| {
            let reach = Reach {
                service_network_id: "sn-0123456789abcdef0".into(),
                service_network_arn: "arn:aws:vpc-lattice:us-east-1:000000000000:servicenetwork/sn-0123456789abcdef0"
                    .into(),
                private_dns,
            };
            (service.into(), reach)
        })
        .collect();
    let view = VpcView {
        vpc_id: id.to_owned(),
        vpc_arn: format!("arn:aws:ec2:us-east-1:000000000000:vpc/{id}"),
        region: "us-east-1".to_owned(),
        account: "000000000000".to_owned(),
        ingress: Some(ingress),
        peers,
        reach,
    };
    (id.to_owned(), view)
}

fn service(id: &str, name: &str, custom: &str) -> (Arc<str>, Arc<ServiceView>) {
    let suffix = id.trim_start_matches("svc-");
    let view = ServiceView {
        id: id.into(),
        arn: format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{id}").into(),
        dns_name: format!("{name}-{suffix}.7d67968.vpc-lattice-svcs.us-east-1.on.aws").into(),
        custom_domain_name: Some(custom.into()),
        certificate_arn: None,
        idle_timeout: Duration::from_secs(60),
        listeners: Default::default(),
    };
    (id.into(), Arc::new(view))
}
