//! Reading a ClientHello's server name (crates/proxy/src/tls.rs `feed_hello`, through
//! `trellis_proxy::fuzzing::client_hello_sni`): the first byte sets the read size, the rest is
//! what the client sent. Checked: nothing panics, and a name found is a plausible DNS name.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(name) = trellis_proxy::fuzzing::client_hello_sni(data) {
        assert!(!name.is_empty() && name.len() <= 255 && name.is_ascii(), "{name:?}");
    }
});
