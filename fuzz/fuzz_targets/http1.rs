//! HTTP/1.1 on the proxy's request path (crates/proxy/src/guard.rs and h1.rs, through
//! `trellis_proxy::fuzzing::http1`): a client's byte stream through the framing guard, the head
//! parser and body framing (chunked bodies decoded split and whole, which must agree); then the
//! same bytes as a target's response head. The first byte sets the read size.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| trellis_proxy::fuzzing::http1(data));
