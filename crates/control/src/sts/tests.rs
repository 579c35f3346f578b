use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::ec2::testing::{between, code};
use crate::test_util::{app, iam};

const ACCOUNT: &str = "000000000000";

/// Credentials a request names (not verified): an access key ID and maybe a session token.
type Creds<'a> = Option<(&'a str, Option<&'a str>)>;

/// Sends an STS request naming `creds` in a SigV4-shaped `Authorization` header.
async fn sts(app: &Router, creds: Creds<'_>, params: &[(&str, &str)]) -> (u16, String) {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Version", "2011-06-15");
    for (k, v) in params {
        form.append_pair(k, v);
    }
    let mut req = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8");
    if let Some((key, token)) = creds {
        req = req.header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={key}/20261204/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00"
            ),
        );
        if let Some(token) = token {
            req = req.header("x-amz-security-token", token);
        }
    }
    let resp = app.clone().oneshot(req.body(Body::from(form.finish())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn role(app: &Router, name: &str, principal: &str, max: &str) {
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{principal},"Action":"sts:AssumeRole"}}]}}"#
    );
    let params = [
        ("Action", "CreateRole"),
        ("RoleName", name),
        ("AssumeRolePolicyDocument", trust.as_str()),
        ("MaxSessionDuration", max),
        ("Tags.member.1.Key", "team"),
        ("Tags.member.1.Value", "net"),
    ];
    let (status, body) = iam(app, &params).await;
    assert_eq!(status, 200, "{body}");
}

/// Assumes `name` as `creds`; the session's key ID, secret and token.
async fn assume(app: &Router, creds: Creds<'_>, name: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let arn = format!("arn:aws:iam::{ACCOUNT}:role/{name}");
    let mut params = vec![("Action", "AssumeRole"), ("RoleArn", arn.as_str()), ("RoleSessionName", "s1")];
    params.extend_from_slice(extra);
    sts(app, creds, &params).await
}

#[tokio::test]
async fn unsigned_and_unknown_callers_are_the_root() {
    let (app, _dir) = app();
    for creds in [None, Some(("AKIANOTISSUEDBYUS00", None))] {
        let (status, body) = sts(&app, creds, &[("Action", "GetCallerIdentity")]).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.starts_with(r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">"#),
            "{body}"
        );
        assert_eq!(between(&body, "<Arn>", "</Arn>"), "arn:aws:iam::000000000000:root");
        assert_eq!(between(&body, "<UserId>", "</UserId>"), ACCOUNT);
        assert_eq!(between(&body, "<Account>", "</Account>"), ACCOUNT);
    }
    let (status, body) = sts(&app, None, &[("Action", "GetSessionToken")]).await;
    assert_eq!((status, code(&body)), (400, "InvalidAction"), "{body}");
}

#[tokio::test]
async fn users_keys_answer_as_the_user() {
    let (app, _dir) = app();
    let (status, body) = iam(&app, &[("Action", "CreateUser"), ("UserName", "alice")]).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = iam(&app, &[("Action", "CreateAccessKey"), ("UserName", "alice")]).await;
    let key = between(&body, "<AccessKeyId>", "</AccessKeyId>").to_owned();
    let (status, body) = sts(&app, Some((&key, None)), &[("Action", "GetCallerIdentity")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "<Arn>", "</Arn>"), "arn:aws:iam::000000000000:user/alice");
    assert!(between(&body, "<UserId>", "</UserId>").starts_with("AIDA"), "{body}");
}

#[tokio::test]
async fn roles_are_assumed_as_their_trust_policy_allows() {
    let (app, _dir) = app();
    role(&app, "by-account", r#"{"AWS":"000000000000"}"#, "7200").await;
    role(&app, "by-service", r#"{"Service":"ecs.amazonaws.com"}"#, "3600").await;
    role(&app, "by-role", r#"{"AWS":"arn:aws:iam::000000000000:role/by-account"}"#, "3600").await;

    let (status, body) = assume(&app, None, "by-account", &[("DurationSeconds", "7200")]).await;
    assert_eq!(status, 200, "{body}");
    let key = between(&body, "<AccessKeyId>", "</AccessKeyId>").to_owned();
    let token = between(&body, "<SessionToken>", "</SessionToken>").to_owned();
    assert!(key.starts_with("ASIA") && key.len() == 20, "{key}");
    assert_eq!(between(&body, "<SecretAccessKey>", "</SecretAccessKey>").len(), 40);
    let expiration = trellis_model::Timestamp::parse(between(&body, "<Expiration>", "</Expiration>")).unwrap();
    let lifetime = expiration.0 - crate::now().0;
    assert!((7_100_000..=7_200_000).contains(&lifetime), "{lifetime}");
    assert_eq!(between(&body, "<Arn>", "</Arn>"), "arn:aws:sts::000000000000:assumed-role/by-account/s1");
    let assumed_id = between(&body, "<AssumedRoleId>", "</AssumedRoleId>");
    assert!(assumed_id.starts_with("AROA") && assumed_id.ends_with(":s1"), "{assumed_id}");

    // The session is the caller when it names its key and token.
    let (status, body) = sts(&app, Some((&key, Some(&token))), &[("Action", "GetCallerIdentity")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "<Arn>", "</Arn>"), "arn:aws:sts::000000000000:assumed-role/by-account/s1");
    assert_eq!(between(&body, "<UserId>", "</UserId>"), assumed_id);
    let (status, body) = sts(&app, Some((&key, None)), &[("Action", "GetCallerIdentity")]).await;
    assert_eq!((status, code(&body)), (403, "InvalidClientTokenId"), "{body}");

    // Role chaining: trusted by role ARN, and at most an hour.
    let session = Some((key.as_str(), Some(token.as_str())));
    let (status, body) = assume(&app, session, "by-role", &[]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = assume(&app, session, "by-role", &[("DurationSeconds", "3601")]).await;
    assert_eq!((status, code(&body)), (400, "ValidationError"), "{body}");
    assert!(body.contains("role chaining"), "{body}");
    // The root is not the role, and a service-only trust policy trusts no AWS principal.
    let (status, body) = assume(&app, None, "by-role", &[]).await;
    assert_eq!((status, code(&body)), (403, "AccessDenied"), "{body}");
    assert!(body.contains("User: arn:aws:iam::000000000000:root is not authorized to perform: sts:AssumeRole"));
    let (status, body) = assume(&app, None, "by-service", &[]).await;
    assert_eq!((status, code(&body)), (403, "AccessDenied"), "{body}");
    let (status, body) = assume(&app, None, "nobody", &[]).await;
    assert_eq!((status, code(&body)), (403, "AccessDenied"), "{body}");
}

#[tokio::test]
async fn durations_and_names_are_checked() {
    let (app, _dir) = app();
    role(&app, "r", r#""*""#, "3600").await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("DurationSeconds", "899")], "greater than or equal to 900"),
        (&[("DurationSeconds", "43201")], "less than or equal to 43200"),
        (&[("DurationSeconds", "3601")], "MaxSessionDuration"),
    ];
    for (extra, wanted) in cases {
        let (status, body) = assume(&app, None, "r", extra).await;
        assert_eq!((status, code(&body)), (400, "ValidationError"), "{body}");
        assert!(body.contains(wanted), "{wanted}: {body}");
    }
    let arn = "arn:aws:iam::000000000000:role/r";
    for session in ["x", "has space", &"s".repeat(65)] {
        let params = [("Action", "AssumeRole"), ("RoleArn", arn), ("RoleSessionName", session)];
        let (status, body) = sts(&app, None, &params).await;
        assert_eq!((status, code(&body)), (400, "ValidationError"), "{session}: {body}");
        assert!(body.contains("roleSessionName"), "{body}");
    }
    let (status, body) = sts(&app, None, &[("Action", "AssumeRole")]).await;
    assert_eq!((status, code(&body)), (400, "ValidationError"), "{body}");
    assert!(body.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"), "{body}");
    assert!(body.contains("2 validation errors detected"), "{body}");
    let params = [("Action", "AssumeRole"), ("RoleArn", "not-an-arn-but-long-enough"), ("RoleSessionName", "s1")];
    let (status, body) = sts(&app, None, &params).await;
    assert_eq!((status, code(&body)), (400, "ValidationError"), "{body}");
    // Another account's role is one the caller may not assume.
    let params = [("Action", "AssumeRole"), ("RoleArn", "arn:aws:iam::111122223333:role/r"), ("RoleSessionName", "s1")];
    let (status, body) = sts(&app, None, &params).await;
    assert_eq!((status, code(&body)), (403, "AccessDenied"), "{body}");
}
