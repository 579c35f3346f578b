//! Vectors signed by botocore's SigV4 signer (service `vpc-lattice-svcs`, `UNSIGNED-PAYLOAD`).

use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn check(method: &str, path: &str, query: &str, headers: &[(&str, &str)], secret: &str) -> Result<Signed, SigError> {
    let lookup = |name: &str| {
        headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_bytes()).collect::<Vec<_>>()
    };
    let first = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    let signed = Signed::parse(first("authorization"), first("x-amz-date"), query)?.expect("signed");
    let received = Received { method, path, query, header: &lookup };
    signed.verify(&received, secret, "UNSIGNED-PAYLOAD").map(|()| signed)
}

const GET: &[(&str, &str)] = &[
    ("host", "svc-1.example.com"),
    ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
    ("X-Team", "  blue   team "),
    ("X-Amz-Date", "20261204T220449Z"),
    ("X-Amz-Security-Token", "SESSIONTOKEN"),
    (
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261204/us-east-1/vpc-lattice-svcs/aws4_request, \
         SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token;x-team, \
         Signature=82b7caf68eab8b534a17d7d456d8ce119f0562483d76cfc19502dcd494ce6e5f",
    ),
];

#[test]
fn header_signatures_verify() {
    let signed = check("GET", "/rates", "b=2&a=1&a=0&empty=", GET, SECRET).expect("verifies");
    assert_eq!(
        (signed.access_key.as_str(), signed.scope_date.as_str(), signed.region.as_str(), signed.service.as_str()),
        ("AKIDEXAMPLE", "20261204", "us-east-1", "vpc-lattice-svcs")
    );
    let post: &[(&str, &str)] = &[
        ("host", "svc-1.example.com"),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("content-type", "application/json"),
        ("X-Amz-Date", "20261204T220449Z"),
        ("X-Amz-Security-Token", "SESSIONTOKEN"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261204/us-east-1/vpc-lattice-svcs/aws4_request, \
             SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
             Signature=08aeb4e8641706ceb446dfcee07d62cfa88866e4d552316fb7b37e00ed63ecf6",
        ),
    ];
    check("POST", "/path%20with%20space/caf%C3%A9/x", "", post, SECRET).expect("verifies");
}

#[test]
fn presigned_queries_verify() {
    let query = "x=1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261204%2Fus-east-1%2Fvpc-lattice-svcs%2Faws4_request&X-Amz-Date=20261204T220451Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host%3Bx-amz-content-sha256&X-Amz-Signature=a65ead07c43d5f857aa743bb3a99f34389c7067d1d7f8b107a961023dbeb3a20";
    let headers: &[(&str, &str)] = &[("host", "svc-1.example.com"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    let signed = check("GET", "/hello", query, headers, SECRET).expect("verifies");
    assert_eq!(signed.expires, Some(300));
    assert_eq!(signed.amz_date, "20261204T220451Z");
}

#[test]
fn anything_changed_fails() {
    // Another secret, method, path, query, signed header value, or date.
    assert_eq!(check("GET", "/rates", "b=2&a=1&a=0&empty=", GET, "other").unwrap_err(), SigError::Mismatch);
    assert_eq!(check("PUT", "/rates", "b=2&a=1&a=0&empty=", GET, SECRET).unwrap_err(), SigError::Mismatch);
    assert_eq!(check("GET", "/rate", "b=2&a=1&a=0&empty=", GET, SECRET).unwrap_err(), SigError::Mismatch);
    assert_eq!(check("GET", "/rates", "b=2&a=1", GET, SECRET).unwrap_err(), SigError::Mismatch);
    let mut changed = GET.to_vec();
    changed[2] = ("X-Team", "red");
    assert_eq!(check("GET", "/rates", "b=2&a=1&a=0&empty=", &changed, SECRET).unwrap_err(), SigError::Mismatch);
    let mut changed = GET.to_vec();
    changed[3] = ("X-Amz-Date", "20261204T220450Z");
    assert_eq!(check("GET", "/rates", "b=2&a=1&a=0&empty=", &changed, SECRET).unwrap_err(), SigError::Mismatch);
    // A signed header that is not there.
    let mut missing = GET.to_vec();
    missing.remove(2);
    assert!(matches!(check("GET", "/rates", "b=2&a=1&a=0&empty=", &missing, SECRET), Err(SigError::Malformed(_))));
}

#[test]
fn claims_are_parsed_or_refused() {
    assert_eq!(Signed::parse(None, None, "a=1").unwrap(), None, "unsigned");
    let v4a = "AWS4-ECDSA-P256-SHA256 Credential=AKID/20261204/vpc-lattice-svcs/aws4_request, SignedHeaders=host, Signature=00";
    assert_eq!(Signed::parse(Some(v4a), Some("20261204T000000Z"), "").unwrap_err(), SigError::V4a);
    assert_eq!(Signed::parse(None, None, "X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256").unwrap_err(), SigError::V4a);
    for bad in [
        "Basic dXNlcjpwYXNz",
        "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/2026/us-east-1/svc/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/svc/aws4_request, Signature=00",
    ] {
        assert!(matches!(Signed::parse(Some(bad), Some("20261204T000000Z"), ""), Err(SigError::Malformed(_))), "{bad}");
    }
    let ok = "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/svc/aws4_request, SignedHeaders=host, Signature=00";
    assert!(matches!(Signed::parse(Some(ok), None, ""), Err(SigError::Malformed("x-amz-date"))));
}

#[test]
fn paths_normalise_like_aws() {
    assert_eq!(normalize_path("/a/./b/../c//d/"), "/a/c/d/");
    assert_eq!(normalize_path(""), "/");
    assert_eq!(encode("/a b/é", false), "/a%20b/%C3%A9");
    assert_eq!(encode("a/b", true), "a%2Fb");
}

#[test]
fn dates() {
    assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
    assert_eq!(parse_amz_date("20261204T220449Z"), Some(1_796_421_889));
    assert_eq!(parse_amz_date("20240229T120000Z"), Some(1_709_208_000));
    assert_eq!(parse_amz_date("2026-12-04T22:04:49Z"), None);
    assert_eq!(parse_amz_date("20261304T000000Z"), None);
    for secs in [0, 951_782_400, 1_709_208_000, 1_796_421_889, 4_102_444_799] {
        assert_eq!(parse_amz_date(&format_amz_date(secs)), Some(secs), "{secs}");
    }
    assert_eq!(format_amz_date(1_796_421_889), "20261204T220449Z");
}
