//! Vectors signed by botocore's SigV4 signer (service `vpc-lattice-svcs`, `UNSIGNED-PAYLOAD`).

use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn check<'a>(
    method: &str,
    path: &str,
    query: &'a str,
    headers: &[(&'a str, &'a str)],
    secret: &str,
) -> Result<Signed<'a>, SigError> {
    let lookup = |name: &str, each: &mut dyn FnMut(&[u8])| {
        headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).for_each(|(_, v)| each(v.as_bytes()));
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
        (&*signed.access_key, &*signed.scope_date, &*signed.region, &*signed.service),
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
        "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/a/aws4_request, \
         Credential=AKID/20261204/eu-west-1/b/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/svc/aws4_request, SignedHeaders=host, Signature=00, \
         Signature=11",
    ] {
        assert!(matches!(Signed::parse(Some(bad), Some("20261204T000000Z"), ""), Err(SigError::Malformed(_))), "{bad}");
    }
    let ok = "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/svc/aws4_request, SignedHeaders=host, Signature=00";
    assert!(matches!(Signed::parse(Some(ok), None, ""), Err(SigError::Malformed("x-amz-date"))));
    // Presigned: X-Amz-Expires within AWS's bounds (a second to seven days).
    let presigned = |expires: &str| {
        format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261204%2Fus-east-1%2Fsvc%2Faws4_request\
             &X-Amz-Date=20261204T000000Z&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=00"
        )
    };
    assert_eq!(Signed::parse(None, None, &presigned("604800")).unwrap().unwrap().expires, Some(604_800));
    for bad in ["0", "604801", "18446744073709551615", "-1", "x"] {
        assert!(matches!(Signed::parse(None, None, &presigned(bad)), Err(SigError::Malformed(_))), "{bad}");
    }
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

/// Requests signed by the Rust `aws-sigv4` crate (an independent signer) verify: header and
/// presigned forms, session tokens, unsigned and signed payloads, odd paths and queries; and
/// a changed byte anywhere does not.
mod signed_by_the_aws_sigv4_crate {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    use super::super::*;
    use super::SECRET;

    const AT: u64 = 1_796_428_800; // 2026-12-04T00:00:00Z

    struct Case {
        method: &'static str,
        path: &'static str,
        query: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static [u8],
        unsigned_payload: bool,
        presigned: bool,
        token: Option<&'static str>,
        service: &'static str,
    }

    /// Signs `case` with the crate; the headers and query to send.
    fn sign_with_crate(case: &Case) -> (Vec<(String, String)>, String) {
        let identity: Identity =
            Credentials::new("AKIDEXAMPLE", SECRET, case.token.map(str::to_owned), None, "test").into();
        let mut settings = SigningSettings::default();
        if case.presigned {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(Duration::from_secs(300));
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(case.service)
            .time(UNIX_EPOCH + Duration::from_secs(AT))
            .settings(settings)
            .build()
            .expect("signing params")
            .into();
        let uri = match case.query {
            "" => format!("https://svc.example.com{}", case.path),
            q => format!("https://svc.example.com{}?{q}", case.path),
        };
        let body = if case.unsigned_payload { SignableBody::UnsignedPayload } else { SignableBody::Bytes(case.body) };
        let request = SignableRequest::new(case.method, &uri, case.headers.iter().copied(), body).expect("signable");
        let (instructions, _) = sign(request, &params).expect("signs").into_parts();
        let mut headers: Vec<(String, String)> =
            case.headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        for (k, v) in instructions.headers() {
            headers.push((k.to_owned(), v.to_owned()));
        }
        let mut query = case.query.to_owned();
        for (k, v) in instructions.params() {
            let pair: String = form_urlencoded_pair(k, v);
            query = if query.is_empty() { pair } else { format!("{query}&{pair}") };
        }
        (headers, query)
    }

    /// `k=v`, each percent-encoded with the unreserved set (what the crate's own query writer
    /// does).
    fn form_urlencoded_pair(k: &str, v: &str) -> String {
        format!("{}={}", encode(k, true), encode(v, true))
    }

    fn verify_as_received(case: &Case, headers: &[(String, String)], query: &str, body: &[u8]) -> Result<(), SigError> {
        let lookup = |name: &str, each: &mut dyn FnMut(&[u8])| {
            headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).for_each(|(_, v)| each(v.as_bytes()));
        };
        let first = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let signed = Signed::parse(first("authorization"), first("x-amz-date"), query)?.expect("signed");
        assert_eq!(signed.time(), Some(AT));
        assert_eq!(signed.service, case.service);
        let token = signed.query_token.as_deref().or_else(|| first("x-amz-security-token"));
        assert_eq!(token, case.token);
        let payload = if case.unsigned_payload { UNSIGNED.to_owned() } else { payload_hash(body) };
        let received = Received { method: case.method, path: case.path, query, header: &lookup };
        signed.verify(&received, SECRET, &payload)
    }

    const UNSIGNED: &str = "UNSIGNED-PAYLOAD";

    fn cases() -> Vec<Case> {
        let base = || Case {
            method: "GET",
            path: "/",
            query: "",
            headers: vec![("host", "svc.example.com")],
            body: b"",
            unsigned_payload: true,
            presigned: false,
            token: None,
            service: "vpc-lattice-svcs",
        };
        vec![
            base(),
            Case { path: "/rates/eur", query: "b=2&a=1&a=0&empty=", ..base() },
            Case { query: "sp=a%20b", ..base() },
            Case { query: "plus=a+b", ..base() },
            Case { token: Some("FQoGZXIvYXdzEXAMPLETOKEN/+="), ..base() },
            Case {
                method: "POST",
                path: "/orders/caf%C3%A9/x%20y",
                headers: vec![("host", "svc.example.com"), ("content-type", "application/json"), ("x-team", " a   b ")],
                body: b"{\"n\": 1}",
                ..base()
            },
            Case { presigned: true, query: "x=1", ..base() },
            Case { presigned: true, token: Some("SESSIONTOKEN"), ..base() },
            // The API's form: the payload signed.
            Case {
                method: "POST",
                path: "/servicenetworks",
                headers: vec![("host", "127.0.0.1:7700"), ("content-type", "application/json")],
                body: b"{\"name\":\"sn-1\"}",
                unsigned_payload: false,
                service: "vpc-lattice",
                ..base()
            },
            Case {
                method: "POST",
                path: "/",
                headers: vec![("host", "127.0.0.1:7700"), ("content-type", "application/x-www-form-urlencoded")],
                body: b"Action=DescribeVpcs&Version=2016-11-15",
                unsigned_payload: false,
                service: "ec2",
                ..base()
            },
        ]
    }

    #[test]
    fn its_signatures_verify() {
        for (i, case) in cases().iter().enumerate() {
            let (headers, query) = sign_with_crate(case);
            verify_as_received(case, &headers, &query, case.body).unwrap_or_else(|e| panic!("case {i}: {e}"));
        }
    }

    #[test]
    fn a_changed_request_does_not_verify() {
        for (i, case) in cases().iter().enumerate() {
            let (headers, query) = sign_with_crate(case);
            let other_method = Case { method: if case.method == "GET" { "PUT" } else { "GET" }, ..clone(case) };
            assert!(verify_as_received(&other_method, &headers, &query, case.body).is_err(), "case {i}: method");
            let other_path = Case { path: "/other", ..clone(case) };
            assert!(verify_as_received(&other_path, &headers, &query, case.body).is_err(), "case {i}: path");
            let query_changed = if query.is_empty() { "z=1".to_owned() } else { format!("{query}&z=1") };
            assert!(verify_as_received(case, &headers, &query_changed, case.body).is_err(), "case {i}: query");
            let mut host_changed = headers.clone();
            for (k, v) in &mut host_changed {
                if k == "host" {
                    *v = "evil.example.com".to_owned();
                }
            }
            assert!(verify_as_received(case, &host_changed, &query, case.body).is_err(), "case {i}: host");
            if !case.unsigned_payload {
                assert!(verify_as_received(case, &headers, &query, b"{}").is_err(), "case {i}: body");
            }
        }
    }

    fn clone(case: &Case) -> Case {
        Case { headers: case.headers.clone(), ..*case }
    }
}

#[test]
fn header_values_trim_and_collapse_as_split_whitespace_does() {
    for value in [
        &b"  blue \t\x0b team \r\n"[..],
        b"",
        b"   ",
        b"a",
        b"caf\xc3\xa9  x",
        b"bad\xff byte",
        b"\xc2\xa0nbsp\xc2\xa0",
    ] {
        let mut out = Vec::new();
        canonical_value(&mut out, value);
        let want = String::from_utf8_lossy(value).split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(String::from_utf8(out).unwrap(), want, "{value:?}");
    }
}

#[test]
fn signed_header_lists_are_normalised() {
    assert!(matches!(signed_headers("host;x-amz-date"), Cow::Borrowed("host;x-amz-date")));
    assert_eq!(signed_headers(" Host ; ;X-Amz-Date;"), "host;x-amz-date");
    assert_eq!(signed_headers(""), "");
    for (list, want) in
        [(";host", "host"), ("host;", "host"), ("host;;x", "host;x"), ("HOST", "host"), ("a\tb", "a\tb")]
    {
        assert!(matches!(signed_headers(list), Cow::Owned(_)), "{list:?}");
        assert_eq!(signed_headers(list), want, "{list:?}");
    }
}

#[test]
fn the_buffered_digest_hashes_what_it_is_given() {
    let pieces: Vec<Vec<u8>> = (0..40).map(|i| vec![b'a' + (i % 26) as u8; i * 7 % 300]).collect();
    let mut digest = Sha256::new();
    let mut all = Vec::new();
    for piece in &pieces {
        digest.put(piece);
        all.put(piece);
    }
    assert_eq!(digest.finish(), sha::sha256(&all));
}
