//! The wire side of the DNS responder: turning one query's bytes into one response's bytes
//! ([`respond`]), and serving them over UDP and TCP on one VPC's ingress socket. Owns message
//! checks (opcode, question count, EDNS version), truncation, TCP framing and its limits; not
//! which names resolve (`zone`) nor which sockets are open (`dns`).
//!
//! Every message is answered or dropped, never trusted: responses and packets without a full
//! header are dropped (answering them could loop two servers into each other); other
//! malformed queries get FORMERR, opcodes other than QUERY get NOTIMP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::zone::{Answer, TTL, VpcZone, Zones};

/// Largest UDP response sent whatever a client's EDNS offers (the DNS flag day 2020 size, which
/// avoids IP fragmentation); also what our own OPT record advertises.
const MAX_UDP_PAYLOAD: u16 = 1232;
/// UDP responses to queries without EDNS fit in this (RFC 1035).
const PLAIN_UDP_PAYLOAD: usize = 512;
/// Largest query read, over UDP or TCP: a question is at most ~270 bytes, EDNS options add little.
const MAX_QUERY_BYTES: usize = 4096;
/// A TCP connection with no complete query for this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connections served at once per VPC; more are closed on accept.
const MAX_TCP_CONNECTIONS: usize = 256;
/// Pause after a failed `accept` or `recv` (e.g. out of file descriptors) so the loop does not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// The current zone of one VPC: looked up in the latest published index at each query (a
/// read lock and a hash lookup), so that an idle socket holds on to no zone, and through it to
/// no old snapshot.
#[derive(Clone, Debug)]
pub(crate) struct ZoneCache {
    zones: watch::Receiver<Arc<Zones>>,
    vpc_id: Arc<str>,
}

// === impl ZoneCache ===

impl ZoneCache {
    /// Follows `vpc_id`'s zone in the indexes published on `zones`.
    pub(crate) fn new(zones: watch::Receiver<Arc<Zones>>, vpc_id: &str) -> Self {
        Self { zones, vpc_id: vpc_id.into() }
    }

    /// The VPC's zone as of the latest snapshot (`None` once the VPC is gone: queries are refused
    /// until its socket closes). A closed channel means the responder is stopping: the last
    /// zone stays.
    fn current(&self) -> Option<Arc<VpcZone>> {
        self.zones.borrow().find(&self.vpc_id).cloned()
    }
}

/// Serves DNS over UDP on `socket` until the task is aborted.
pub(crate) async fn serve_udp(socket: UdpSocket, zone: ZoneCache) {
    let mut buf = vec![0; MAX_QUERY_BYTES];
    let mut out = Vec::with_capacity(PLAIN_UDP_PAYLOAD);
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "DNS: UDP receive failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        if respond(&buf[..len], zone.current().as_deref(), true, &mut out)
            && let Err(e) = socket.send_to(&out, peer).await
        {
            tracing::debug!(error = %e, %peer, "DNS: UDP send failed");
        }
    }
}

/// Serves DNS over TCP on `listener` until the task is aborted (which closes its connections).
pub(crate) async fn serve_tcp(listener: TcpListener, zone: ZoneCache) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() >= MAX_TCP_CONNECTIONS => {
                    tracing::debug!(%peer, "DNS: too many TCP connections; closing a new one");
                    drop(stream);
                }
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, zone.clone()));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "DNS: TCP accept failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One TCP connection: length-prefixed queries, answered in order, until the client closes,
/// goes idle, or sends something unframeable.
async fn serve_connection(mut stream: TcpStream, zone: ZoneCache) {
    let mut query = Vec::new();
    let mut out = Vec::new();
    let mut frame = Vec::new();
    loop {
        let mut prefix = [0; 2];
        if !matches!(timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut prefix)).await, Ok(Ok(_))) {
            return;
        }
        let len = usize::from(u16::from_be_bytes(prefix));
        if len == 0 || len > MAX_QUERY_BYTES {
            tracing::debug!(len, "DNS: TCP message too large or empty; closing");
            return;
        }
        query.resize(len, 0);
        if !matches!(timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut query)).await, Ok(Ok(_))) {
            return;
        }
        if !respond(&query, zone.current().as_deref(), false, &mut out) {
            continue;
        }
        let Ok(out_len) = u16::try_from(out.len()) else { return };
        frame.clear();
        frame.extend_from_slice(&out_len.to_be_bytes());
        frame.extend_from_slice(&out);
        if !matches!(timeout(TCP_IDLE_TIMEOUT, stream.write_all(&frame)).await, Ok(Ok(()))) {
            return;
        }
    }
}

/// Writes into `out` the response to the message in `query`, for a VPC whose zone is `zone`
/// (`None`: refuse everything). Returns false when the message gets no response at all.
/// Over UDP (`udp`) a response larger than the client can take is truncated (TC set).
pub(crate) fn respond(query: &[u8], zone: Option<&VpcZone>, udp: bool, out: &mut Vec<u8>) -> bool {
    let Ok(header) = Header::read(&mut BinDecoder::new(query)) else { return false };
    if header.metadata.message_type != MessageType::Query {
        return false;
    }
    let metadata = Metadata::response_from_request(&header.metadata);
    let (response, limit) = if header.metadata.op_code != OpCode::Query {
        (error(metadata, ResponseCode::NotImp), PLAIN_UDP_PAYLOAD)
    } else {
        match Message::from_vec(query) {
            Ok(request) => answer(request, zone),
            Err(e) => {
                tracing::debug!(error = %e, "DNS: malformed query");
                (error(metadata, ResponseCode::FormErr), PLAIN_UDP_PAYLOAD)
            }
        }
    };
    encode(&response, if udp { limit } else { usize::from(u16::MAX) }, out)
}

/// The response to a well-formed QUERY, and the largest UDP response the client takes.
fn answer(mut request: Message, zone: Option<&VpcZone>) -> (Message, usize) {
    let mut response = error(Metadata::response_from_request(&request.metadata), ResponseCode::NoError);
    let mut limit = PLAIN_UDP_PAYLOAD;
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_PAYLOAD);
        response.edns = Some(ours);
        limit = usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        if edns.version() > 0 {
            response.metadata.response_code = ResponseCode::BADVERS;
            return (response, limit);
        }
    }
    let Some(query) = request.queries.pop().filter(|_| request.queries.is_empty()) else {
        response.metadata.response_code = ResponseCode::FormErr;
        return (response, limit);
    };
    let found = zone.map_or(Answer::Refused, |z| z.answer(query.name(), query.query_type(), query.query_class()));
    match found {
        Answer::Address(ip) => {
            // This node's address first, then every other live proxy node's for the VPC.
            let peers = zone.into_iter().flat_map(|z| z.peers(ip, query.query_type() == RecordType::ANY));
            for ip in std::iter::once(ip).chain(peers) {
                let data = match ip {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                };
                response.answers.push(Record::from_rdata(query.name().clone(), TTL, data));
            }
        }
        Answer::NoData => {}
        Answer::NxDomain => response.metadata.response_code = ResponseCode::NXDomain,
        Answer::Refused => response.metadata.response_code = ResponseCode::Refused,
    }
    response.metadata.authoritative = found != Answer::Refused;
    response.queries.push(query);
    (response, limit)
}

/// A response with `metadata` and this code, no records.
fn error(metadata: Metadata, code: ResponseCode) -> Message {
    let mut message = Message::response(metadata.id, metadata.op_code);
    message.metadata = metadata;
    message.metadata.response_code = code;
    message
}

/// Encodes `response` into `out`; past `limit` bytes, only its header and question (TC set).
fn encode(response: &Message, limit: usize, out: &mut Vec<u8>) -> bool {
    let emit = |message: &Message, out: &mut Vec<u8>| {
        out.clear();
        message.emit(&mut BinEncoder::new(out))
    };
    let mut result = emit(response, out);
    if result.is_ok() && out.len() > limit {
        result = emit(&response.truncate(), out);
    }
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "DNS: could not encode a response");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::dns::zone::tests::{A_NAME, snapshot};

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        let mut name = Name::from_ascii(name).unwrap();
        name.set_fqdn(true);
        message.add_query(Query::query(name, qtype));
        message
    }

    fn exchange(request: &Message, udp: bool) -> Option<Message> {
        let zones = Zones::build(&Arc::new(snapshot()));
        let mut out = Vec::new();
        respond(&request.to_vec().unwrap(), zones.find("vpc-1").map(|z| &**z), udp, &mut out)
            .then(|| Message::from_vec(&out).unwrap())
    }

    #[test]
    fn answers_echo_the_question_and_flags() {
        let request = query(&A_NAME.to_uppercase(), RecordType::A);
        let response = exchange(&request, true).unwrap();
        assert_eq!(response.metadata.id, request.metadata.id);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        assert!(response.metadata.authoritative && response.metadata.recursion_desired);
        assert!(!response.metadata.recursion_available && !response.metadata.truncation);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(response.queries, request.queries);
        assert_eq!(response.answers.len(), 1);
        let record = &response.answers[0];
        assert_eq!((record.name.to_ascii(), record.ttl), (format!("{}.", A_NAME.to_uppercase()), TTL));
        assert_eq!(record.data, RData::A(A(Ipv4Addr::new(127, 77, 0, 1))));
    }

    #[test]
    fn codes() {
        let cases = [
            ("nope.7d67968.vpc-lattice-svcs.us-east-1.on.aws", RecordType::A, ResponseCode::NXDomain, true),
            (A_NAME, RecordType::AAAA, ResponseCode::NoError, true),
            ("example.com", RecordType::A, ResponseCode::Refused, false),
        ];
        for (name, qtype, code, aa) in cases {
            let response = exchange(&query(name, qtype), false).unwrap();
            assert_eq!((response.metadata.response_code, response.metadata.authoritative), (code, aa), "{name}");
            assert!(response.answers.is_empty());
        }
    }

    #[test]
    fn question_count_other_than_one_is_formerr() {
        let mut none = query(A_NAME, RecordType::A);
        none.queries.clear();
        let mut two = query(A_NAME, RecordType::A);
        two.add_query(Query::query(Name::from_ascii(A_NAME).unwrap(), RecordType::AAAA));
        for request in [none, two] {
            let response = exchange(&request, true).unwrap();
            assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
            assert!(response.answers.is_empty() && response.queries.is_empty());
        }
    }

    #[test]
    fn other_opcodes_are_notimp() {
        let mut request = query(A_NAME, RecordType::A);
        request.metadata.op_code = OpCode::Notify;
        let response = exchange(&request, true).unwrap();
        assert_eq!(
            (response.metadata.response_code, response.metadata.op_code),
            (ResponseCode::NotImp, OpCode::Notify)
        );
    }

    #[test]
    fn responses_and_runts_are_dropped_garbage_is_formerr() {
        let mut response = query(A_NAME, RecordType::A);
        response.metadata.message_type = MessageType::Response;
        assert!(exchange(&response, true).is_none());
        let mut out = Vec::new();
        assert!(!respond(&[], None, true, &mut out));
        assert!(!respond(&[1, 2, 3], None, true, &mut out));
        // A header announcing a question that is not there.
        let garbage = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        assert!(respond(&garbage, None, true, &mut out));
        let parsed = Message::from_vec(&out).unwrap();
        assert_eq!((parsed.metadata.id, parsed.metadata.response_code), (0x1234, ResponseCode::FormErr));
    }

    #[test]
    fn edns_is_answered_with_edns_and_bad_versions_refused() {
        let mut request = query(A_NAME, RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        request.set_edns(edns.clone());
        let response = exchange(&request, true).unwrap();
        assert_eq!(response.edns.as_ref().map(Edns::max_payload), Some(MAX_UDP_PAYLOAD));
        assert_eq!(response.answers.len(), 1);
        edns.set_version(1);
        request.set_edns(edns);
        let response = exchange(&request, true).unwrap();
        // BADVERS and BADSIG share the code 16; hickory decodes it as BADSIG.
        assert_eq!(u16::from(response.metadata.response_code), 16);
        assert!(response.answers.is_empty());
    }

    #[test]
    fn oversized_udp_responses_are_truncated() {
        let request = query(A_NAME, RecordType::A);
        let mut response = exchange(&request, false).unwrap();
        // Pad the answer past 512 bytes: over UDP it is cut to the question with TC set.
        let record = response.answers[0].clone();
        response.answers = vec![record; 40];
        let mut out = Vec::new();
        assert!(encode(&response, PLAIN_UDP_PAYLOAD, &mut out));
        let cut = Message::from_vec(&out).unwrap();
        assert!(out.len() <= PLAIN_UDP_PAYLOAD && cut.metadata.truncation);
        assert!(cut.answers.is_empty() && cut.queries == request.queries);
        assert!(encode(&response, usize::from(u16::MAX), &mut out));
        assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 40);
    }
}
