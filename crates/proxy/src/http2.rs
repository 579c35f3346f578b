//! An HTTP/2 of the proxy's own (RFC 9113), built up from the wire for issue 6: hyper's
//! server and client, over the `h2` crate, cost a task, a channel and a Huffman-coding,
//! hash-indexing HPACK encoder per stream, which is what keeps the proxy's HTTP/2 and gRPC
//! paths above haproxy's CPU per request. The layers so far, each complete and tested on its
//! own, and fuzzed: header compression ([`hpack`]) and frames ([`frame`]). A connection (its
//! stream states, flow control and the proxy's request path over it) is next; until it lands,
//! HTTP/2 traffic goes through `h2.rs` as before.

pub mod frame;
pub mod hpack;
