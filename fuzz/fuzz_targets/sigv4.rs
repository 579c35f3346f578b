//! SigV4 (crates/model/src/sigv4.rs): the `Authorization` header and presigned-query forms read
//! by `Signed::parse`, then the canonical request and signature over the request as received.
//!
//! Input, one field a line: the `Authorization` header (empty: none), `x-amz-date` (empty:
//! none), the query, the method, the path, then headers as `name: value`.
//! Checked: nothing panics; a claim re-signed with the right secret verifies (both the plain
//! and the cached-key path), and one with a wrong signature does not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_model::sigv4::{self, Received, SigError, Signed, SigningKeys};

static KEYS: SigningKeys = SigningKeys::new();

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut field = || lines.next().unwrap_or_default();
    let (authorization, amz_date, query) = (field(), field(), field());
    let (method, path) = (field(), field());
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let authorization = (!authorization.is_empty()).then_some(authorization);
    let amz_date = (!amz_date.is_empty()).then_some(amz_date);

    let Ok(Some(mut claim)) = Signed::parse(authorization, amz_date, query) else { return };
    if let Some(t) = claim.time() {
        assert_eq!(sigv4::parse_amz_date(&sigv4::format_amz_date(t)), Some(t), "{}", claim.amz_date);
    }
    let lookup = |name: &str, each: &mut dyn FnMut(&[u8])| {
        for (_, v) in headers.iter().filter(|(n, _)| n == name) {
            each(v.as_slice());
        }
    };
    let request = Received { method, path, query, header: &lookup };
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let hash = "UNSIGNED-PAYLOAD";
    let first = claim.verify(&request, secret, hash);
    assert_eq!(first, claim.verify_cached(&request, secret, hash, &KEYS));
    let Ok(signature) = claim.signature_of(&request, secret, hash) else { return };
    claim.signature = signature.to_ascii_uppercase().into();
    let verified = claim.verify(&request, secret, hash);
    if claim.signed_header_names().any(|h| h == "host") {
        assert_eq!(verified, Ok(()), "a correct signature was refused");
        assert_eq!(claim.verify_cached(&request, secret, hash, &KEYS), Ok(()));
        assert_eq!(claim.verify(&request, "another secret", hash), Err(SigError::Mismatch));
    } else {
        assert!(verified.is_err(), "a signature without host was accepted");
    }
});
