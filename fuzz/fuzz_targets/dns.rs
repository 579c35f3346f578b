//! The DNS responder's message path (crates/proxy/src/dns/server.rs `respond`, through
//! `trellis_proxy::fuzzing::dns`) over a small zone of two VPCs and two services. The first
//! byte picks UDP or TCP and whether the VPC has a zone; the rest is the DNS message.
//! Checked: nothing panics; every response parses, echoes the query ID and fits UDP's limit.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| trellis_proxy::fuzzing::dns(data));
