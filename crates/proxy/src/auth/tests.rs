//! Auth policies through the proxy, end to end: anonymous requests against service and service
//! network policies (the 403 of spec §3.11), and signed requests refused until signatures can
//! be verified.

use std::net::SocketAddr;
use std::sync::Arc;

use trellis_model::iam::{Identities, Identity, Principal};
use trellis_model::policy::Policy;
use trellis_model::sigv4::{Received, Signed};
use trellis_model::snapshot::IamAuth;

use crate::listener::testing::*;

fn iam(policy: Option<&str>) -> IamAuth {
    IamAuth { policy: policy.map(|p| Arc::new(Policy::compile(p).expect("compiles"))), source: policy.map(Arc::from) }
}

async fn guarded(network: Option<IamAuth>, guard: Option<IamAuth>) -> (Proxy, SocketAddr, FakeTarget) {
    let ip = next_ingress();
    let a = FakeTarget::start("a").await;
    let mut f = Fixture::new(ip);
    f.add_group(target_group("tg-a", &[a.addr]));
    f.add_service(service("svc-1", "one.example", 18080, forward(&[("tg-a", 1)])));
    f.add_service(service("svc-2", "two.example", 18080, forward(&[("tg-a", 1)])));
    if let Some(n) = network {
        f.snapshot.iam.insert("sn-1".into(), n);
    }
    if let Some(s) = guard {
        f.snapshot.iam.insert("svc-1".into(), s);
    }
    let addr = SocketAddr::new(ip, 18080);
    let proxy = Proxy::start(config(), f.build(), addr).await;
    (proxy, addr, a)
}

fn status_and_body(answer: &str) -> (u16, &str) {
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer.split("\r\n\r\n").nth(1).unwrap_or(""))
}

async fn ask(addr: SocketAddr, method: &str, host: &str, target: &str, extra: &str) -> (u16, String) {
    let request =
        format!("{method} {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: close\r\n{extra}\r\n");
    let answer = raw(addr, request.as_bytes()).await;
    let (status, body) = status_and_body(&answer);
    (status, body.to_owned())
}

#[tokio::test]
async fn a_service_without_a_policy_denies_everything_and_says_so() {
    let (proxy, addr, _a) = guarded(None, Some(iam(None))).await;
    let (status, body) = ask(addr, "GET", "one.example", "/rates?x=1", "").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        "AccessDeniedException: User: anonymous is not authorized to perform: vpc-lattice-svcs:Invoke on resource: \
         arn:aws:vpc-lattice:us-east-1:000000000000:service/svc-1/rates because no service-based policy allows the \
         vpc-lattice-svcs:Invoke action"
    );
    // Another service on the same port is not guarded.
    assert_eq!(ask(addr, "GET", "two.example", "/rates", "").await.0, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn service_policies_decide_by_method_path_header_query_and_vpc() {
    let policy = r#"{"Statement":[
        {"Effect":"Allow","Principal":"*","Action":"vpc-lattice-svcs:Invoke","Resource":"*/public*",
         "Condition":{"StringEquals":{"vpc-lattice-svcs:RequestMethod":"GET","vpc-lattice-svcs:SourceVpc":"vpc-1"}}},
        {"Effect":"Allow","Principal":"*","Action":"*","Resource":"*/team",
         "Condition":{"StringEqualsIgnoreCase":{"vpc-lattice-svcs:RequestHeader/x-team":"blue"}}},
        {"Effect":"Allow","Principal":"*","Action":"*","Resource":"*/search",
         "Condition":{"ForAnyValue:StringEquals":{"vpc-lattice-svcs:RequestQueryString/tag":["ok"]},
                      "IpAddress":{"aws:SourceIp":"127.0.0.0/8"},
                      "NumericEquals":{"vpc-lattice-svcs:Port":"18080"}}},
        {"Effect":"Deny","Principal":"*","Action":"*","Resource":"*/public/secret"}]}"#;
    let (proxy, addr, a) = guarded(None, Some(iam(Some(policy)))).await;
    let cases = [
        ("GET", "/public", "", 200),
        ("GET", "/public/page?x=1", "", 200),
        ("POST", "/public", "", 403),
        ("GET", "/private", "", 403),
        ("GET", "/public/secret", "", 403),
        ("GET", "/team", "x-team: BLUE\r\n", 200),
        ("GET", "/team", "x-team: red\r\n", 403),
        ("GET", "/team", "", 403),
        ("GET", "/search?tag=no&tag=ok", "", 200),
        ("GET", "/search?tag=no", "", 403),
        ("GET", "http://one.example/public", "", 200),
    ];
    for (method, target, extra, want) in cases {
        let (status, body) = ask(addr, method, "one.example", target, extra).await;
        assert_eq!(status, want, "{method} {target} {extra:?}: {body}");
        if want == 200 {
            assert_eq!(target_of(&body), "a");
        }
    }
    let (_, body) = ask(addr, "GET", "one.example", "/public/secret", "").await;
    assert!(body.ends_with("/public/secret with an explicit deny in a service-based policy"), "{body}");
    let denied = cases.iter().filter(|c| c.3 == 403).count();
    assert_eq!(
        a.hits.load(std::sync::atomic::Ordering::SeqCst),
        cases.len() - denied,
        "denied requests never reach the target"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_network_layer_is_checked_first_and_named() {
    let allow_all = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#;
    let deny_vpc = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"},
        {"Effect":"Deny","Principal":"*","Action":"*","Resource":"*",
         "Condition":{"StringEquals":{"vpc-lattice-svcs:SourceVpc":"vpc-1"}}}]}"#;
    let (proxy, addr, _a) = guarded(Some(iam(Some(deny_vpc))), Some(iam(Some(allow_all)))).await;
    let (status, body) = ask(addr, "GET", "one.example", "/", "").await;
    assert_eq!(status, 403);
    assert!(body.ends_with("service/svc-1/ with an explicit deny in a network-based policy"), "{body}");
    // The network's policy guards every service reached through it.
    assert_eq!(ask(addr, "GET", "two.example", "/", "").await.0, 403);
    proxy.stop().await;

    let (proxy, addr, _a) = guarded(Some(iam(Some(allow_all))), None).await;
    assert_eq!(ask(addr, "GET", "one.example", "/", "").await.0, 200);
    proxy.stop().await;
}

/// A signed request for `one.example` (host, content hash and date signed), as headers.
fn signed(key: &str, secret: &str, method: &str, path: &str, region: &str, at: u64) -> String {
    let amz_date = trellis_model::sigv4::format_amz_date(at);
    let claim = Signed {
        access_key: key.into(),
        scope_date: amz_date[..8].into(),
        region: region.into(),
        service: "vpc-lattice-svcs".into(),
        amz_date: amz_date.as_str().into(),
        signed_headers: "host;x-amz-content-sha256;x-amz-date".into(),
        signature: "".into(),
        expires: None,
        query_token: None,
    };
    let headers = [
        ("host", "one.example".to_owned()),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD".to_owned()),
        ("x-amz-date", amz_date.clone()),
    ];
    let lookup = |n: &str, each: &mut dyn FnMut(&[u8])| {
        headers.iter().filter(|(k, _)| *k == n).for_each(|(_, v)| each(v.as_bytes()));
    };
    let received = Received { method, path, query: "", header: &lookup };
    let signature = claim.signature_of(&received, secret, "UNSIGNED-PAYLOAD").expect("signs");
    format!(
        "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-date: {amz_date}\r\nauthorization: AWS4-HMAC-SHA256 \
         Credential={key}/{}/{region}/vpc-lattice-svcs/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
         Signature={signature}\r\n",
        &amz_date[..8]
    )
}

fn user(key: &str, secret: &str, name: &str) -> Arc<Identity> {
    Arc::new(Identity {
        access_key_id: key.into(),
        secret_access_key: secret.into(),
        session_token: None,
        expiration: None,
        account: "000000000000".into(),
        organization_id: "o-trellis0000".into(),
        principal: Principal::User {
            arn: format!("arn:aws:iam::000000000000:user/{name}"),
            user_id: "AIDAEXAMPLE".into(),
            user_name: name.into(),
        },
        principal_tags: vec![],
    })
}

#[tokio::test]
async fn signed_requests_are_authenticated_then_evaluated_as_their_principal() {
    let policy = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/ana"},
        "Action":"vpc-lattice-svcs:Invoke","Resource":"*",
        "Condition":{"StringEquals":{"aws:PrincipalType":"User","aws:username":"ana","aws:PrincipalOrgID":"o-trellis0000"}}}]}"#;
    let (proxy, addr, _a) = guarded(None, Some(iam(Some(policy)))).await;
    let mut known = Identities::default();
    known.by_key.insert("AKIAANA".into(), user("AKIAANA", "secret-ana", "ana"));
    known.by_key.insert("AKIABOB".into(), user("AKIABOB", "secret-bob", "bob"));
    proxy.identities.send_replace(Arc::new(known));
    let now = crate::auth::now();
    // Ana, signed: allowed (once the table with the identities is in place).
    let ana = signed("AKIAANA", "secret-ana", "GET", "/", "us-east-1", now);
    let mut status = 0;
    for _ in 0..100 {
        status = ask(addr, "GET", "one.example", "/", &ana).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    let (_, body) = ask(addr, "GET", "one.example", "/", &ana).await;
    assert_eq!(
        seen(&body, "x-amzn-lattice-identity"),
        ["Principal=arn:aws:iam::000000000000:user/ana;PrincipalOrgID=o-trellis0000"]
    );
    // A caller cannot claim an identity: the header is replaced.
    let claim = format!("{ana}x-amzn-lattice-identity: Principal=arn:aws:iam::000000000000:root\r\n");
    let (_, body) = ask(addr, "GET", "one.example", "/", &claim).await;
    assert_eq!(
        seen(&body, "x-amzn-lattice-identity"),
        ["Principal=arn:aws:iam::000000000000:user/ana;PrincipalOrgID=o-trellis0000"]
    );
    // Anonymous, and Bob: the policy does not allow them, and the answer names them.
    let (status, body) = ask(addr, "GET", "one.example", "/", "").await;
    assert_eq!(status, 403);
    assert!(body.contains("User: anonymous is not authorized"), "{body}");
    let bob = signed("AKIABOB", "secret-bob", "GET", "/", "us-east-1", now);
    let (status, body) = ask(addr, "GET", "one.example", "/", &bob).await;
    assert_eq!(status, 403);
    assert!(body.contains("User: arn:aws:iam::000000000000:user/bob is not authorized"), "{body}");
    // Authentication failures: each a 403 saying which, never anonymous.
    let cases = [
        (signed("AKIAANA", "wrong", "GET", "/", "us-east-1", now), "/", "does not match"),
        (signed("AKIAANA", "secret-ana", "GET", "/other", "us-east-1", now), "/", "does not match"),
        (signed("AKIANOBODY", "x", "GET", "/", "us-east-1", now), "/", "does not exist"),
        (signed("AKIAANA", "secret-ana", "GET", "/", "eu-west-1", now), "/", "region"),
        (signed("AKIAANA", "secret-ana", "GET", "/", "us-east-1", now - 600), "/", "5 minutes"),
        (
            ana.replace("UNSIGNED-PAYLOAD", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            "/",
            "UNSIGNED-PAYLOAD",
        ),
        (ana.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"), "/", "SigV4A"),
    ];
    for (headers, path, says) in cases {
        let (status, body) = ask(addr, "GET", "one.example", path, &headers).await;
        assert_eq!(status, 403, "{says}: {body}");
        assert!(body.contains(says), "{says}: {body}");
    }
    proxy.stop().await;
}

/// What one check costs (a benchmark, not a test: it asserts nothing about time):
/// `cargo test --release -p trellis-proxy -- --ignored auth_check_cost --nocapture`.
/// A signed request against a 20-statement policy whose last statement allows it.
#[test]
#[ignore]
fn auth_check_cost() {
    use crate::auth::{AuthCheck, Facts};
    let svc = "arn:aws:vpc-lattice:us-east-1:000000000000:service/svc-1";
    let mut statements = vec![
        r#"{"Effect":"Deny","Principal":"*","Action":"vpc-lattice-svcs:Invoke","Resource":"*",
            "Condition":{"StringEquals":{"vpc-lattice-svcs:SourceVpc":"vpc-0"}}}"#
            .to_owned(),
    ];
    for i in 0..18 {
        statements.push(format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::000000000000:root"}},
                "Action":"vpc-lattice-svcs:Invoke","Resource":"{svc}/admin{i}/*",
                "Condition":{{"StringEquals":{{"vpc-lattice-svcs:RequestHeader/x-team":"team-{i}"}}}}}}"#
        ));
    }
    statements.push(format!(
        r#"{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::000000000000:root"}},
            "Action":"vpc-lattice-svcs:Invoke","Resource":"{svc}/*",
            "Condition":{{"StringEquals":{{"vpc-lattice-svcs:SourceVpc":"vpc-1","vpc-lattice-svcs:RequestMethod":"GET"}}}}}}"#
    ));
    let policy = format!(r#"{{"Version":"2012-10-17","Statement":[{}]}}"#, statements.join(","));
    // The last statement names Ana, a user, rather than her account.
    let policy = policy.replace(
        "arn:aws:iam::000000000000:root\"},\n            \"Action\":\"vpc-lattice-svcs:Invoke\",\"Resource\":\"arn:aws:vpc-lattice:us-east-1:000000000000:service/svc-1/*\"",
        "arn:aws:iam::000000000000:user/ana\"},\n            \"Action\":\"vpc-lattice-svcs:Invoke\",\"Resource\":\"arn:aws:vpc-lattice:us-east-1:000000000000:service/svc-1/*\"",
    );
    let check = AuthCheck::new(
        None,
        Some(iam(Some(&policy))),
        "arn:aws:vpc-lattice:us-east-1:000000000000:servicenetwork/sn-1".into(),
        svc.into(),
    );
    let mut known = Identities::default();
    known.by_key.insert("AKIAANA".into(), user("AKIAANA", "secret-ana", "ana"));
    let now = crate::auth::now();
    let head = signed("AKIAANA", "secret-ana", "GET", "/", "us-east-1", now);
    let mut fields: Vec<(String, String)> = vec![("host".into(), "one.example".into())];
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(": ").expect("a header line");
        fields.push((k.to_owned(), v.to_owned()));
    }
    let header = |name: &str, each: &mut dyn FnMut(&[u8])| {
        fields.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).for_each(|(_, v)| each(v.as_bytes()));
    };
    let facts = Facts {
        method: "GET",
        path: "/",
        query: "",
        header: &header,
        signature: crate::auth::SignatureHeaders::find(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))),
        port: 80,
        source_vpc: "vpc-1",
        source_vpc_account: "000000000000",
        client_ip: "10.0.0.1".parse().expect("an address"),
    };
    assert!(check.check(&facts, &known, now).is_ok(), "the request is allowed");
    const N: u32 = 200_000;
    let t = std::time::Instant::now();
    for _ in 0..N {
        std::hint::black_box(check.check(std::hint::black_box(&facts), &known, now).is_ok());
    }
    println!("auth check: {:.2} us per signed request, 20 statements", t.elapsed().as_secs_f64() * 1e6 / f64::from(N));
    let t = std::time::Instant::now();
    for _ in 0..N {
        std::hint::black_box(check.authenticate(std::hint::black_box(&facts), &known, now).is_ok());
    }
    println!("  of which authentication: {:.2} us", t.elapsed().as_secs_f64() * 1e6 / f64::from(N));
}
