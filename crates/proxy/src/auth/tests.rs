//! Auth policies through the proxy, end to end: anonymous requests against service and service
//! network policies (the 403 of spec §3.11), and signed requests refused until signatures can
//! be verified.

use std::net::SocketAddr;
use std::sync::Arc;

use trellis_model::policy::Policy;
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

#[tokio::test]
async fn signed_requests_are_refused_not_treated_as_anonymous() {
    let allow_all = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#;
    let (proxy, addr, _a) = guarded(None, Some(iam(Some(allow_all)))).await;
    let auth = "authorization: AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/vpc-lattice-svcs/aws4_request, \
                SignedHeaders=host, Signature=00\r\n";
    let (status, body) = ask(addr, "GET", "one.example", "/", auth).await;
    assert_eq!(status, 403);
    assert!(body.contains("cannot be verified"), "{body}");
    let presigned = "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x";
    assert_eq!(ask(addr, "GET", "one.example", presigned, "").await.0, 403);
    assert_eq!(ask(addr, "GET", "one.example", "/", "").await.0, 200, "anonymous is allowed");
    proxy.stop().await;
}
