use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use trellis_model::sigv4::{self, Received, Signed};
use trellis_store::Store;

use super::*;

fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = trellis_store::SqliteStore::open(&dir.path().join("store.db"), Default::default()).expect("store");
    (Arc::new(store), dir)
}

/// Signs `body` to `uri` with `secret` the way an SDK does; the headers to send.
fn signed(access_key: &str, secret: &str, service: &str, at: u64, uri: &Uri, body: &[u8]) -> HeaderMap {
    let amz_date = sigv4::format_amz_date(at);
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:7700"));
    headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
    let mut claim = Signed {
        access_key: access_key.into(),
        scope_date: amz_date[..8].into(),
        region: "us-east-1".into(),
        service: service.into(),
        amz_date: amz_date.as_str().into(),
        signed_headers: "host;x-amz-date".into(),
        signature: "".into(),
        expires: None,
        query_token: None,
    };
    let header =
        |name: &str, each: &mut dyn FnMut(&[u8])| headers.get_all(name).iter().for_each(|v| each(v.as_bytes()));
    let received = Received { method: "POST", path: uri.path(), query: uri.query().unwrap_or(""), header: &header };
    claim.signature = claim.signature_of(&received, secret, &sigv4::payload_hash(body)).unwrap().into();
    let mut out = headers.clone();
    out.insert("authorization", HeaderValue::from_str(&claim.authorization()).unwrap());
    out
}

#[tokio::test]
async fn the_api_token_is_made_once() {
    let (store, _dir) = store();
    let first = ensure_api_token(store.as_ref()).await.unwrap();
    assert!(first.starts_with("trellis-") && first.len() == 51, "{first}");
    assert_eq!(ensure_api_token(store.as_ref()).await.unwrap(), first);
}

#[tokio::test]
async fn signatures_are_verified_against_the_store() {
    let (store, _dir) = store();
    let root = crate::identity::ensure_root_key(store.as_ref(), "000000000000").await.unwrap();
    let resolver = Resolver::new(store, "o-trellis0000");
    let uri: Uri = "/services?maxResults=5".parse().unwrap();
    let now = 1_800_000_000;
    let (key, secret) = (root.access_key_id.as_str(), root.secret_access_key.as_str());
    let body = b"{}";
    let good = signed(key, secret, "vpc-lattice", now, &uri, body);
    assert_eq!(verify(&resolver, &Method::POST, &uri, &good, body, now).await, Ok(key.to_owned()));
    // The body is signed: another body does not verify.
    assert_eq!(verify(&resolver, &Method::POST, &uri, &good, b"{ }", now).await, Err(Refusal::Mismatch));
    let wrong_secret = signed(key, "not-the-secret", "vpc-lattice", now, &uri, body);
    assert_eq!(verify(&resolver, &Method::POST, &uri, &wrong_secret, body, now).await, Err(Refusal::Mismatch));
    let unknown = signed("AKIAUNKNOWN000000000", secret, "ecs", now, &uri, body);
    assert_eq!(verify(&resolver, &Method::POST, &uri, &unknown, body, now).await, Err(Refusal::InvalidKey));
    let stale = signed(key, secret, "ec2", now - 16 * 60, &uri, body);
    assert!(matches!(verify(&resolver, &Method::POST, &uri, &stale, body, now).await, Err(Refusal::Skewed(_))));
    let foreign = signed(key, secret, "s3", now, &uri, body);
    assert!(matches!(verify(&resolver, &Method::POST, &uri, &foreign, body, now).await, Err(Refusal::Incomplete(_))));
    let mut claimed = good.clone();
    claimed.insert("x-amz-content-sha256", HeaderValue::from_static("UNSIGNED-PAYLOAD"));
    assert!(matches!(verify(&resolver, &Method::POST, &uri, &claimed, body, now).await, Err(Refusal::Incomplete(_))));
    assert_eq!(verify(&resolver, &Method::POST, &uri, &HeaderMap::new(), body, now).await, Err(Refusal::Missing));
}

#[test]
fn refusals_speak_each_protocol() {
    let cases = [
        (Refusal::Missing, Protocol::RestJson, "MissingAuthenticationTokenException", 403),
        (Refusal::Missing, Protocol::Ec2, "MissingAuthenticationToken", 401),
        (Refusal::InvalidKey, Protocol::Json11, "UnrecognizedClientException", 403),
        (Refusal::InvalidKey, Protocol::Ec2, "AuthFailure", 401),
        (Refusal::InvalidKey, Protocol::Query(crate::iam::xml::IAM), "InvalidClientTokenId", 403),
        (Refusal::Expired, Protocol::Query(crate::iam::xml::STS), "ExpiredToken", 403),
        (Refusal::Expired, Protocol::RestJson, "ExpiredTokenException", 403),
        (Refusal::Mismatch, Protocol::Json11, "InvalidSignatureException", 403),
        (Refusal::Mismatch, Protocol::Ec2, "SignatureDoesNotMatch", 403),
        (Refusal::Skewed("late".into()), Protocol::Ec2, "RequestExpired", 400),
        (Refusal::Incomplete("x".into()), Protocol::Query(crate::iam::xml::IAM), "IncompleteSignature", 400),
        (Refusal::Unavailable, Protocol::Json11, "ServerException", 500),
    ];
    for (refusal, protocol, code, status) in cases {
        let (got, got_status, _) = refusal.error(protocol, "ServerException");
        assert_eq!((got, got_status.as_u16()), (code, status), "{refusal:?} in {protocol:?}");
    }
}

#[test]
fn sessions_open_check_and_close() {
    let sessions = Sessions::default();
    let id = sessions.open();
    assert!(sessions.check(&id) && !sessions.check("trellis-other"));
    let mut headers = HeaderMap::new();
    headers.insert("cookie", HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={id}; c=d")).unwrap());
    assert_eq!(session_cookie(&headers), Some(id.as_str()));
    assert!(sessions.carried_by(&headers));
    assert!(bearer_allowed(&headers, "token", Some(&sessions)));
    // Where only the token will do (the credentials), a session is not enough.
    assert!(!bearer_allowed(&headers, "token", None));
    sessions.close(&id);
    assert!(!sessions.carried_by(&headers));
    let mut bearer = HeaderMap::new();
    bearer.insert("authorization", HeaderValue::from_static("Bearer token"));
    assert!(bearer_allowed(&bearer, "token", Some(&sessions)));
    assert!(bearer_allowed(&bearer, "token", None));
    assert!(!bearer_allowed(&bearer, "tokeN", Some(&sessions)));
}

#[tokio::test]
async fn expired_sessions_are_told_apart_from_unknown_keys() {
    use trellis_model::iam::{Credential, Owner};
    let (store, _dir) = store();
    let session = Credential {
        access_key_id: "ASIAEXPIRED000000000".into(),
        secret_access_key: "secret".into(),
        account: "000000000000".into(),
        owner: Owner::Root,
        status: "Active".into(),
        create_date: trellis_model::Timestamp(1),
        expiration: Some(trellis_model::Timestamp(2)),
        session_token: Some("token".into()),
    };
    let mut tx = Tx::default();
    tx.create(crate::keys::credential(&session.access_key_id), &session);
    assert!(Attempts::default().commit(store.as_ref(), tx).await.unwrap());
    let resolver = Resolver::new(store, "o-trellis0000");
    let uri: Uri = "/".parse().unwrap();
    let now = crate::now().0 / 1000;
    let mut headers = signed(&session.access_key_id, "secret", "sts", now, &uri, b"");
    headers.insert("x-amz-security-token", HeaderValue::from_static("token"));
    assert_eq!(verify(&resolver, &Method::POST, &uri, &headers, b"", now).await, Err(Refusal::Expired));
    headers.insert("x-amz-security-token", HeaderValue::from_static("other"));
    assert_eq!(verify(&resolver, &Method::POST, &uri, &headers, b"", now).await, Err(Refusal::InvalidKey));
}
