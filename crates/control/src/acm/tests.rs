//! ACM API handler tests: each operation through the router, its errors, and the uses that
//! VPC Lattice services record.

use axum::Router;
use base64::Engine;
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

use crate::test_util::{acm, app, call};

/// Calls `op`, expecting success.
async fn ok(app: &Router, op: &str, body: Value) -> Value {
    let (status, out) = acm(app, op, body).await;
    assert_eq!(status, 200, "{op}: {out}");
    out
}

/// Calls `op`, expecting the error `code` (HTTP 400); returns its message.
async fn fails(app: &Router, op: &str, body: Value, code: &str) -> String {
    let (status, out) = acm(app, op, body).await;
    assert_eq!((status.as_u16(), out["__type"].as_str().unwrap_or_default()), (400, code), "{op}: {out}");
    out["message"].as_str().unwrap_or_default().to_owned()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A self-signed certificate for `names` and its key, PEM.
fn self_signed(names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// A CA, and a leaf for `name` it issued: (leaf, key, CA certificate), PEM.
fn ca_issued(name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::OrganizationName, "Test CA Org");
    ca.distinguished_name.push(DnType::CommonName, "Test CA");
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let leaf = params.signed_by(&key, &issuer).unwrap();
    (leaf.pem(), key.serialize_pem(), ca_cert.pem())
}

async fn import(app: &Router, cert: &str, key: &str) -> String {
    let out = ok(app, "ImportCertificate", json!({"Certificate": b64(cert), "PrivateKey": b64(key)})).await;
    out["CertificateArn"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_imported_certificate_is_described_fetched_listed_and_deleted() {
    let (app, _dir) = app();
    let (leaf, key, ca) = ca_issued("www.example.com");
    let body = json!({"Certificate": b64(&leaf), "PrivateKey": b64(&key), "CertificateChain": b64(&ca),
                      "Tags": [{"Key": "team", "Value": "web"}]});
    let arn = ok(&app, "ImportCertificate", body).await["CertificateArn"].as_str().unwrap().to_owned();
    assert!(arn.starts_with("arn:aws:acm:us-east-1:000000000000:certificate/"), "{arn}");

    let d = ok(&app, "DescribeCertificate", json!({"CertificateArn": arn})).await["Certificate"].clone();
    assert_eq!(d["DomainName"], "www.example.com");
    assert_eq!(d["SubjectAlternativeNames"], json!(["www.example.com"]));
    assert_eq!((d["Type"].as_str(), d["Status"].as_str()), (Some("IMPORTED"), Some("ISSUED")));
    assert_eq!(d["Issuer"], "Test CA Org");
    assert_eq!(d["Subject"], "CN=www.example.com");
    assert_eq!(
        (d["KeyAlgorithm"].as_str(), d["SignatureAlgorithm"].as_str()),
        (Some("EC_prime256v1"), Some("SHA256WITHECDSA"))
    );
    assert_eq!(d["InUseBy"], json!([]));
    assert!(d["ImportedAt"].is_f64() && d["NotAfter"].as_f64() > d["NotBefore"].as_f64(), "{d}");
    assert!(d.get("IssuedAt").is_none() && d.get("DomainValidationOptions").is_none());
    assert_eq!(d["CertificateKeyPairOrigin"], "CUSTOMER_PROVIDED");

    let got = ok(&app, "GetCertificate", json!({"CertificateArn": arn})).await;
    assert_eq!(got["Certificate"].as_str().unwrap().replace("\r\n", "\n").trim(), leaf.replace("\r\n", "\n").trim());
    assert!(got["CertificateChain"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----\n"));

    // ACM lists only RSA_1024 and RSA_2048 certificates unless told otherwise.
    let listed = ok(&app, "ListCertificates", json!({})).await;
    assert_eq!(listed["CertificateSummaryList"], json!([]));
    let listed = ok(&app, "ListCertificates", json!({"Includes": {"keyTypes": ["EC_prime256v1"]}})).await;
    let summary = &listed["CertificateSummaryList"][0];
    assert_eq!((summary["CertificateArn"].as_str(), summary["InUse"].as_bool()), (Some(arn.as_str()), Some(false)));
    let none = ok(
        &app,
        "ListCertificates",
        json!({"CertificateStatuses": ["EXPIRED"], "Includes": {"keyTypes": ["EC_prime256v1"]}}),
    )
    .await;
    assert_eq!(none["CertificateSummaryList"], json!([]));

    ok(&app, "DeleteCertificate", json!({"CertificateArn": arn})).await;
    fails(&app, "DescribeCertificate", json!({"CertificateArn": arn}), "ResourceNotFoundException").await;
    fails(&app, "DeleteCertificate", json!({"CertificateArn": arn}), "ResourceNotFoundException").await;
}

#[tokio::test]
async fn imports_are_checked() {
    let (app, _dir) = app();
    let (cert, _) = self_signed(&["a.example.com"]);
    let (_, other_key) = self_signed(&["b.example.com"]);
    let msg = fails(
        &app,
        "ImportCertificate",
        json!({"Certificate": b64(&cert), "PrivateKey": b64(&other_key)}),
        "ValidationException",
    )
    .await;
    assert!(msg.contains("does not match"), "{msg}");
    let garbage = json!({"Certificate": b64("not a certificate"), "PrivateKey": b64(&other_key)});
    fails(&app, "ImportCertificate", garbage, "ValidationException").await;
    let two = format!("{cert}{cert}");
    let msg = fails(
        &app,
        "ImportCertificate",
        json!({"Certificate": b64(&two), "PrivateKey": b64(&other_key)}),
        "ValidationException",
    )
    .await;
    assert!(msg.contains("more than one certificate"), "{msg}");

    // Expired.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["old.example.com".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let old = params.self_signed(&key).unwrap().pem();
    let msg = fails(
        &app,
        "ImportCertificate",
        json!({"Certificate": b64(&old), "PrivateKey": b64(&key.serialize_pem())}),
        "ValidationException",
    )
    .await;
    assert!(msg.contains("not valid at the current time"), "{msg}");

    // A chain that did not issue the leaf.
    let (leaf, leaf_key, _) = ca_issued("c.example.com");
    let (_, _, other_ca) = ca_issued("d.example.com");
    let body = json!({"Certificate": b64(&leaf), "PrivateKey": b64(&leaf_key), "CertificateChain": b64(&other_ca)});
    let msg = fails(&app, "ImportCertificate", body, "ValidationException").await;
    assert!(msg.contains("certificate chain"), "{msg}");

    // Reimport keeps the ARN; tags are refused on reimport.
    let (cert, key) = self_signed(&["e.example.com"]);
    let arn = import(&app, &cert, &key).await;
    let (cert2, key2) = self_signed(&["e.example.com"]);
    let body = json!({"CertificateArn": arn, "Certificate": b64(&cert2), "PrivateKey": b64(&key2)});
    assert_eq!(ok(&app, "ImportCertificate", body.clone()).await["CertificateArn"], json!(arn));
    let got = ok(&app, "GetCertificate", json!({"CertificateArn": arn})).await;
    assert_eq!(got["Certificate"].as_str().unwrap().trim(), cert2.replace("\r\n", "\n").trim());
    let mut tagged = body;
    tagged["Tags"] = json!([{"Key": "k"}]);
    fails(&app, "ImportCertificate", tagged, "InvalidParameterException").await;
}

#[tokio::test]
async fn requested_certificates_are_issued_at_once() {
    let (app, _dir) = app();
    let out = ok(
        &app,
        "RequestCertificate",
        json!({"DomainName": "api.example.com", "SubjectAlternativeNames": ["*.api.example.com"], "IdempotencyToken": "tok1"}),
    )
    .await;
    let arn = out["CertificateArn"].as_str().unwrap().to_owned();
    let again =
        ok(&app, "RequestCertificate", json!({"DomainName": "api.example.com", "IdempotencyToken": "tok1"})).await;
    assert_eq!(again["CertificateArn"], json!(arn), "the token's answer is remembered");

    let d = ok(&app, "DescribeCertificate", json!({"CertificateArn": arn})).await["Certificate"].clone();
    assert_eq!((d["Type"].as_str(), d["Status"].as_str()), (Some("AMAZON_ISSUED"), Some("ISSUED")));
    assert_eq!(d["KeyAlgorithm"], "RSA_2048");
    assert_eq!(d["SignatureAlgorithm"], "SHA256WITHECDSA", "the authority's key is ECDSA");
    assert_eq!(d["Issuer"], "Trellis");
    assert_eq!(d["SubjectAlternativeNames"], json!(["api.example.com", "*.api.example.com"]));
    assert_eq!(d["DomainValidationOptions"][1]["ValidationStatus"], "SUCCESS");
    assert!(d["IssuedAt"].is_f64());
    let got = ok(&app, "GetCertificate", json!({"CertificateArn": arn})).await;
    assert!(got["CertificateChain"].as_str().unwrap().contains("BEGIN CERTIFICATE"));

    let ec =
        ok(&app, "RequestCertificate", json!({"DomainName": "ec.example.com", "KeyAlgorithm": "EC_prime256v1"})).await;
    let d = ok(&app, "DescribeCertificate", json!({"CertificateArn": ec["CertificateArn"]})).await;
    assert_eq!(d["Certificate"]["KeyAlgorithm"], "EC_prime256v1");

    // The default listing shows the RSA certificate only.
    let listed = ok(&app, "ListCertificates", json!({})).await["CertificateSummaryList"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["CertificateArn"], json!(arn));

    let body = json!({"DomainName": "x.example.com", "KeyAlgorithm": "RSA_4096"});
    fails(&app, "RequestCertificate", body, "InvalidParameterException").await;
    let body = json!({"DomainName": "x.example.com", "KeyAlgorithm": "DSA"});
    fails(&app, "RequestCertificate", body, "ValidationException").await;
    fails(&app, "RequestCertificate", json!({"DomainName": "nodot"}), "ValidationException").await;
    let many: Vec<String> = (0..10).map(|i| format!("n{i}.example.com")).collect();
    let body = json!({"DomainName": "x.example.com", "SubjectAlternativeNames": many});
    fails(&app, "RequestCertificate", body, "LimitExceededException").await;
}

#[tokio::test]
async fn arns_are_checked() {
    let (app, _dir) = app();
    let get = |arn: &str| json!({"CertificateArn": arn});
    fails(&app, "DescribeCertificate", get("not-an-arn-at-all-really"), "ValidationException").await;
    let wrong_kind = "arn:aws:acm:us-east-1:000000000000:thing/12345678-1234-1234-1234-123456789012";
    fails(&app, "DescribeCertificate", get(wrong_kind), "InvalidArnException").await;
    let absent = "arn:aws:acm:us-east-1:000000000000:certificate/12345678-1234-1234-1234-123456789012";
    let msg = fails(&app, "GetCertificate", get(absent), "ResourceNotFoundException").await;
    assert!(msg.contains(absent), "{msg}");
    let elsewhere = "arn:aws:acm:eu-west-1:000000000000:certificate/12345678-1234-1234-1234-123456789012";
    fails(&app, "ListTagsForCertificate", get(elsewhere), "ResourceNotFoundException").await;
    fails(&app, "Nope", json!({}), "UnknownOperationException").await;
}

#[tokio::test]
async fn tags_are_added_listed_and_removed() {
    let (app, _dir) = app();
    let (cert, key) = self_signed(&["t.example.com"]);
    let arn = import(&app, &cert, &key).await;
    let tags = json!([{"Key": "a", "Value": "1"}, {"Key": "b"}]);
    ok(&app, "AddTagsToCertificate", json!({"CertificateArn": arn, "Tags": tags})).await;
    ok(&app, "AddTagsToCertificate", json!({"CertificateArn": arn, "Tags": [{"Key": "a", "Value": "2"}]})).await;
    let listed = ok(&app, "ListTagsForCertificate", json!({"CertificateArn": arn})).await;
    assert_eq!(listed["Tags"], json!([{"Key": "a", "Value": "2"}, {"Key": "b"}]));
    // A value that does not match leaves the tag.
    let remove = json!({"CertificateArn": arn, "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b"}]});
    ok(&app, "RemoveTagsFromCertificate", remove).await;
    let listed = ok(&app, "ListTagsForCertificate", json!({"CertificateArn": arn})).await;
    assert_eq!(listed["Tags"], json!([{"Key": "a", "Value": "2"}]));

    let reserved = json!({"CertificateArn": arn, "Tags": [{"Key": "aws:x", "Value": "1"}]});
    fails(&app, "AddTagsToCertificate", reserved, "InvalidTagException").await;
    let fifty: Vec<Value> = (0..50).map(|i| json!({"Key": format!("k{i}")})).collect();
    fails(&app, "AddTagsToCertificate", json!({"CertificateArn": arn, "Tags": fifty}), "TooManyTagsException").await;
    fails(&app, "AddTagsToCertificate", json!({"CertificateArn": arn, "Tags": []}), "ValidationException").await;
}

#[tokio::test]
async fn listings_page() {
    let (app, _dir) = app();
    let mut arns = Vec::new();
    for i in 0..5 {
        let (cert, key) = self_signed(&[&format!("p{i}.example.com")]);
        arns.push(import(&app, &cert, &key).await);
        // Creation times a millisecond or more apart, so that the order is known.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let filter = json!({"keyTypes": ["EC_prime256v1"]});
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"Includes": filter, "MaxItems": 2});
        if let Some(t) = &token {
            body["NextToken"] = json!(t);
        }
        let page = ok(&app, "ListCertificates", body).await;
        let items = page["CertificateSummaryList"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["CertificateArn"].as_str().unwrap().to_owned()));
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, arns, "oldest first, each once");
    let body = json!({"Includes": filter, "SortBy": "CREATED_AT", "SortOrder": "DESCENDING", "MaxItems": 1});
    let newest = ok(&app, "ListCertificates", body).await;
    assert_eq!(newest["CertificateSummaryList"][0]["CertificateArn"], json!(arns[4]));
    fails(&app, "ListCertificates", json!({"SortBy": "CREATED_AT"}), "InvalidArgsException").await;
    fails(&app, "ListCertificates", json!({"NextToken": "zz"}), "InvalidArgsException").await;
    fails(&app, "ListCertificates", json!({"MaxItems": 0}), "ValidationException").await;
    fails(&app, "ListCertificates", json!({"CertificateStatuses": ["GOOD"]}), "ValidationException").await;
}

#[tokio::test]
async fn a_certificate_in_use_by_a_service_cannot_be_deleted() {
    let (app, _dir) = app();
    let (cert, key) = self_signed(&["shop.example.com"]);
    let arn = import(&app, &cert, &key).await;
    let (cert2, key2) = self_signed(&["shop.example.com"]);
    let arn2 = import(&app, &cert2, &key2).await;

    let absent = "arn:aws:acm:us-east-1:000000000000:certificate/12345678-1234-1234-1234-123456789012";
    let body = json!({"name": "nocert", "customDomainName": "shop.example.com", "certificateArn": absent});
    let (status, code, _) = call(&app, "POST", "/services", Some(body)).await;
    assert_eq!((status.as_u16(), code.as_deref()), (404, Some("ResourceNotFoundException")));

    let body = json!({"name": "shop", "customDomainName": "shop.example.com", "certificateArn": arn});
    let (status, _, svc) = call(&app, "POST", "/services", Some(body)).await;
    assert_eq!(status, 201, "{svc}");
    let svc_arn = svc["arn"].as_str().unwrap().to_owned();
    let svc_id = svc["id"].as_str().unwrap().to_owned();

    let d = ok(&app, "DescribeCertificate", json!({"CertificateArn": arn})).await;
    assert_eq!(d["Certificate"]["InUseBy"], json!([svc_arn]));
    let msg = fails(&app, "DeleteCertificate", json!({"CertificateArn": arn}), "ResourceInUseException").await;
    assert!(msg.contains("in use"), "{msg}");
    let listed = ok(&app, "ListCertificates", json!({"Includes": {"keyTypes": ["EC_prime256v1"]}})).await;
    let in_use: Vec<bool> =
        listed["CertificateSummaryList"].as_array().unwrap().iter().map(|s| s["InUse"].as_bool().unwrap()).collect();
    assert_eq!(in_use, [true, false]);

    // Moving the service to the other certificate releases the first.
    let path = format!("/services/{svc_id}");
    let (status, _, out) = call(&app, "PATCH", &path, Some(json!({"certificateArn": arn2}))).await;
    assert_eq!(status, 200, "{out}");
    ok(&app, "DeleteCertificate", json!({"CertificateArn": arn})).await;
    fails(&app, "DeleteCertificate", json!({"CertificateArn": arn2}), "ResourceInUseException").await;

    // Deleting the service releases the second.
    let (status, _, out) = call(&app, "DELETE", &path, None).await;
    assert_eq!(status, 200, "{out}");
    let d = ok(&app, "DescribeCertificate", json!({"CertificateArn": arn2})).await;
    assert_eq!(d["Certificate"]["InUseBy"], json!([]));
    ok(&app, "DeleteCertificate", json!({"CertificateArn": arn2})).await;
}
