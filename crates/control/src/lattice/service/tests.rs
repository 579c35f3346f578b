//! Services through the API: shapes, errors, quotas, and the cascade of DeleteService.

use serde_json::json;

use super::super::rule::testing::{TestApp, fixed, forward, seg};
use crate::Quotas;
use crate::keys::rel;
use crate::repo::{self, Attempts, Tx};

/// Imports a self-signed certificate through ACM; its ARN.
async fn certificate(t: &TestApp) -> String {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["api.example.com".to_owned()]).unwrap().self_signed(&key).unwrap();
    let b64 = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
    let body = json!({"Certificate": b64(cert.pem()), "PrivateKey": b64(key.serialize_pem())});
    let (status, out) = crate::test_util::acm(&t.app, "ImportCertificate", body).await;
    assert_eq!(status, 200, "{out}");
    out["CertificateArn"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let t = TestApp::new();
    let cert = certificate(&t).await;
    let (status, _, svc) =
        t.call("POST", "/services", Some(json!({"name": "web", "tags": {"k": "v"}, "clientToken": "c1"}))).await;
    assert_eq!(status, 201, "{svc}");
    let id = svc["id"].as_str().unwrap().to_owned();
    assert!(trellis_model::Kind::Service.is_id(&id));
    assert_eq!(svc["arn"], format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{id}"));
    assert_eq!(svc["status"], "CREATE_IN_PROGRESS");
    assert_eq!(svc["authType"], "NONE");
    assert_eq!(svc["idleTimeoutSeconds"], 60);
    let dns = format!("web-{}.7d67968.vpc-lattice-svcs.us-east-1.on.aws", &id[4..]);
    assert_eq!(svc["dnsEntry"], json!({"domainName": dns, "hostedZoneId": "Z0000000000000000000"}));
    for absent in ["customDomainName", "certificateArn", "tags", "createdAt"] {
        assert!(svc.get(absent).is_none(), "{absent} in {svc}");
    }
    let (status, _, again) =
        t.call("POST", "/services", Some(json!({"name": "web", "tags": {"k": "v"}, "clientToken": "c1"}))).await;
    assert_eq!((status, &again), (201, &svc), "a repeated clientToken replays the answer");

    let (status, _, got) = t.call("GET", &format!("/services/{}", seg(svc["arn"].as_str().unwrap())), None).await;
    assert_eq!(status, 200);
    assert_eq!(got["status"], "ACTIVE");
    assert_eq!(got["dnsEntry"]["domainName"], dns);
    assert!(got["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(got["createdAt"], got["lastUpdatedAt"]);
    assert!(got.get("failureCode").is_none() && got.get("certificateArn").is_none());

    let (_, _, list) = t.call("GET", "/services", None).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["dnsEntry"]["domainName"], dns);
    assert_eq!(items[0]["status"], "ACTIVE");
    assert!(items[0].get("authType").is_none() && list.get("nextToken").is_none());

    let update = json!({"authType": "AWS_IAM", "idleTimeoutSeconds": 300, "certificateArn": cert});
    let (status, _, upd) = t.call("PATCH", &format!("/services/{id}"), Some(update)).await;
    assert_eq!(status, 200, "{upd}");
    assert_eq!(
        upd,
        json!({"id": id, "arn": svc["arn"], "name": "web", "authType": "AWS_IAM", "idleTimeoutSeconds": 300,
               "certificateArn": cert})
    );
    let (_, _, got) = t.call("GET", &format!("/services/{id}"), None).await;
    assert_eq!(
        (&got["authType"], &got["idleTimeoutSeconds"], &got["certificateArn"]),
        (&json!("AWS_IAM"), &json!(300), &json!(cert))
    );
    // An empty certificateArn takes the certificate away; absent members change nothing.
    let (_, _, upd) = t.call("PATCH", &format!("/services/{id}"), Some(json!({"certificateArn": ""}))).await;
    assert!(upd.get("certificateArn").is_none());
    assert_eq!(upd["authType"], "AWS_IAM");

    let (status, _, del) = t.call("DELETE", &format!("/services/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(del, json!({"id": id, "arn": svc["arn"], "name": "web", "status": "DELETE_IN_PROGRESS"}));
    let (status, code, body) = t.call("GET", &format!("/services/{id}"), None).await;
    assert_eq!(
        (status, code.as_deref(), &body["resourceType"]),
        (404, Some("ResourceNotFoundException"), &json!("SERVICE"))
    );
    let (status, _, _) = t.call("DELETE", &format!("/services/{id}"), None).await;
    assert_eq!(status, 404);
    // The name is free again.
    t.service("web").await;
}

#[tokio::test]
async fn custom_domain_and_certificate() {
    let t = TestApp::new();
    let cert = certificate(&t).await;
    let body = json!({"name": "api", "customDomainName": "api.example.com", "certificateArn": cert, "authType": "AWS_IAM",
                      "idleTimeoutSeconds": 120});
    let (status, _, svc) = t.call("POST", "/services", Some(body)).await;
    assert_eq!(status, 201, "{svc}");
    assert_eq!((&svc["customDomainName"], &svc["certificateArn"]), (&json!("api.example.com"), &json!(cert)));
    assert_eq!((&svc["authType"], &svc["idleTimeoutSeconds"]), (&json!("AWS_IAM"), &json!(120)));
    let (_, _, list) = t.call("GET", "/services", None).await;
    assert_eq!(list["items"][0]["customDomainName"], "api.example.com");
    // An empty certificateArn on create is no certificate.
    let (status, _, svc) = t.call("POST", "/services", Some(json!({"name": "other", "certificateArn": ""}))).await;
    assert_eq!(status, 201);
    assert!(svc.get("certificateArn").is_none());
}

#[tokio::test]
async fn validation_errors_name_their_field() {
    let t = TestApp::new();
    let cases = [
        (json!({"name": "svc-web"}), "name"),
        (json!({"name": "Web"}), "name"),
        (json!({"name": "a".repeat(41)}), "name"),
        (json!({"name": "we"}), "name"),
        (json!({}), "name"),
        (json!({"name": "web", "authType": "SIGV4"}), "authType"),
        (json!({"name": "web", "certificateArn": "not-a-certificate-arn"}), "certificateArn"),
        (json!({"name": "web", "certificateArn": "arn:aws:acm:us-east-1:000000000000:cert/x"}), "certificateArn"),
        (json!({"name": "web", "idleTimeoutSeconds": 59}), "idleTimeoutSeconds"),
        (json!({"name": "web", "idleTimeoutSeconds": 601}), "idleTimeoutSeconds"),
        (json!({"name": "web", "idleTimeoutSeconds": "x"}), "idleTimeoutSeconds"),
        (json!({"name": "web", "customDomainName": "ab"}), "customDomainName"),
        (json!({"name": "web", "customDomainName": "a b.example.com"}), "customDomainName"),
        (json!({"name": "web", "tags": {"aws:x": "1"}}), "tags"),
        (json!({"name": "web", "clientToken": ""}), "clientToken"),
    ];
    for (body, field) in cases {
        let (status, code, err) = t.call("POST", "/services", Some(body.clone())).await;
        assert_eq!((status, code.as_deref()), (400, Some("ValidationException")), "{body}");
        assert_eq!(err["fieldList"][0]["name"], field, "{body}: {err}");
        assert_eq!(err["reason"], "fieldValidationFailed");
    }
    let (_, _, list) = t.call("GET", "/services", None).await;
    assert_eq!(list["items"], json!([]), "nothing was created");
    let (status, _, err) =
        t.call("PATCH", "/services/svc-0123456789abcdef0", Some(json!({"idleTimeoutSeconds": 5}))).await;
    assert_eq!((status, &err["fieldList"][0]["name"]), (400, &json!("idleTimeoutSeconds")));
    let (status, _, err) = t.call("GET", "/services/svc-123", None).await;
    assert_eq!((status, &err["fieldList"][0]["name"]), (400, &json!("serviceIdentifier")));
}

#[tokio::test]
async fn not_found_conflict_and_quota() {
    let t = TestApp::with(Quotas { services: 2, ..Default::default() });
    for (method, body) in [("GET", None), ("PATCH", Some(json!({"authType": "NONE"}))), ("DELETE", None)] {
        let (status, code, err) = t.call(method, "/services/svc-0123456789abcdef0", body).await;
        assert_eq!((status, code.as_deref()), (404, Some("ResourceNotFoundException")), "{method}");
        assert_eq!((&err["resourceId"], &err["resourceType"]), (&json!("svc-0123456789abcdef0"), &json!("SERVICE")));
    }
    let other_region = "arn%3Aaws%3Avpc-lattice%3Aeu-west-1%3A000000000000%3Aservice%2Fsvc-0123456789abcdef0";
    let (status, _, _) = t.call("GET", &format!("/services/{other_region}"), None).await;
    assert_eq!(status, 404);
    let web = t.service("web").await;
    let (status, code, err) = t.call("POST", "/services", Some(json!({"name": "web"}))).await;
    assert_eq!((status, code.as_deref(), &err["resourceType"]), (409, Some("ConflictException"), &json!("SERVICE")));
    assert_eq!(err["resourceId"], web.as_str());
    t.service("two").await;
    let (status, code, err) = t.call("POST", "/services", Some(json!({"name": "three"}))).await;
    assert_eq!((status, code.as_deref()), (402, Some("ServiceQuotaExceededException")));
    assert_eq!((&err["quotaCode"], &err["serviceCode"]), (&json!("L-620C821E"), &json!("vpc-lattice")));
    t.call("DELETE", &format!("/services/{web}"), None).await;
    t.service("three").await;
}

#[tokio::test]
async fn pages() {
    let t = TestApp::new();
    for name in ["aaa", "bbb", "ccc"] {
        t.service(name).await;
    }
    let (_, _, first) = t.call("GET", "/services?maxResults=2", None).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let token = first["nextToken"].as_str().unwrap();
    let (_, _, second) = t.call("GET", &format!("/services?maxResults=2&nextToken={token}"), None).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second.get("nextToken").is_none());
    let (status, _, err) = t.call("GET", "/services?nextToken=zz", None).await;
    assert_eq!((status, &err["fieldList"][0]["name"]), (400, &json!("nextToken")));
}

#[tokio::test]
async fn delete_is_refused_while_associated() {
    let t = TestApp::new();
    let svc = t.service("web").await;
    let mut tx = Tx::default();
    tx.put_raw(TestApp::keys().counter(rel::SVC_SN, &svc), b"1".to_vec());
    assert!(Attempts::default().commit(t.store.as_ref(), tx).await.unwrap());
    let (status, code, err) = t.call("DELETE", &format!("/services/{svc}"), None).await;
    assert_eq!((status, code.as_deref(), &err["resourceType"]), (409, Some("ConflictException"), &json!("SERVICE")));
    let (status, _, _) = t.call("GET", &format!("/services/{svc}"), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn delete_cascades_listeners_rules_and_references() {
    let t = TestApp::new();
    let (tg1, tg2) = (t.http_tg().await, t.http_tg().await);
    let svc = t.service("web").await;
    let l1 = t.listener(&svc, "http", 80, forward(&[&tg1], None)).await;
    let l2 = t.listener(&svc, "alt", 8080, fixed(404)).await;
    for p in 1..=3 {
        t.rule(&svc, &l1, &format!("r-{p}"), p, forward(&[&tg1, &tg2], Some(&[1, 2]))).await;
        t.rule(&svc, &l2, &format!("r-{p}"), p, forward(&[&tg2], None)).await;
    }
    assert_eq!(t.users(&tg1).await.0, 4);
    assert_eq!(t.users(&tg2).await.0, 6);
    assert_eq!(t.used(&svc).await.0, 2);
    let policy = TestApp::keys().auth_policy(&svc);
    let mut tx = Tx::default();
    tx.put_raw(policy.clone(), b"{}".to_vec());
    assert!(Attempts::default().commit(t.store.as_ref(), tx).await.unwrap());

    let (status, _, _) = t.call("DELETE", &format!("/services/{svc}"), None).await;
    assert_eq!(status, 200);
    for tg in [&tg1, &tg2] {
        assert_eq!(t.users(tg).await, (0, vec![]), "no user of {tg} is left");
    }
    assert_eq!(t.used(&svc).await, (0, vec![]));
    assert!(repo::load_index(t.store.as_ref(), &policy).await.unwrap().is_none(), "the auth policy went too");
    let prefix = "r/us-east-1/000000000000/";
    let left = t.store.as_ref().range(trellis_store::RangeRequest {
        start: prefix.into(),
        end: Some(trellis_store::prefix_end(prefix)),
        limit: 0,
        count_only: false,
    });
    let left: Vec<String> = left.await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    let stray: Vec<&String> = left.iter().filter(|k| !k.contains("/res/tg/") && !k.contains("/count/")).collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");
    // Everything is free for a new service: its name, the listener names, the target groups.
    let again = t.service("web").await;
    let l = t.listener(&again, "http", 80, forward(&[&tg1], None)).await;
    t.rule(&again, &l, "r-1", 1, forward(&[&tg2], None)).await;
    assert_eq!(t.users(&tg1).await, (1, vec![again.clone()]));
}
