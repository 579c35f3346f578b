//! An HTTP/2 of the proxy's own (RFC 9113), built up from the wire for issue 6: hyper's
//! server and client, over the `h2` crate, cost a task, a channel and a Huffman-coding,
//! hash-indexing HPACK encoder per stream, which kept the proxy's HTTP/2 and gRPC paths above
//! haproxy's CPU per request. The layers, each complete and tested on its own, and fuzzed:
//! header compression ([`hpack`]), frames ([`frame`]) and a connection's rules without its
//! socket ([`conn`]: stream states, flow control, header list checks). `h2/server.rs` and
//! `h2/client.rs` put them on sockets, towards clients and towards targets.

pub mod conn;
pub mod frame;
pub mod hpack;
