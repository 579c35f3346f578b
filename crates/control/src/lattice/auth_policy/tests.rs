//! Tests of the auth policy operations.

use serde_json::{Value, json};

use crate::keys::Keys;
use crate::repo::{Attempts, Tx};
use crate::test_util::{app, app_and_store, call};

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"vpc-lattice-svcs:Invoke","Resource":"*"}]}"#;

fn enc(arn: &str) -> String {
    arn.replace(':', "%3A").replace('/', "%2F")
}

fn field(body: &Value) -> String {
    body["fieldList"][0]["name"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn put_get_delete_on_a_service_network() {
    let (app, store, _dir) = app_and_store();
    let (_, _, sn) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "net"}))).await;
    let id = sn["id"].as_str().unwrap().to_owned();
    let by_arn = format!("/authpolicy/{}", enc(sn["arn"].as_str().unwrap()));
    let (status, _, body) = call(&app, "PUT", &format!("/authpolicy/{id}"), Some(json!({"policy": POLICY}))).await;
    assert_eq!((status.as_u16(), &body), (200, &json!({"policy": POLICY, "state": "Inactive"})));
    let (status, _, first) = call(&app, "GET", &by_arn, None).await;
    assert_eq!((status.as_u16(), &first["policy"], &first["state"]), (200, &json!(POLICY), &json!("Inactive")));
    assert!(first["createdAt"].is_string() && first["lastUpdatedAt"].is_string());
    // The policy turns Active with the owner's auth type; a second put keeps createdAt.
    call(&app, "PATCH", &format!("/servicenetworks/{id}"), Some(json!({"authType": "AWS_IAM"}))).await;
    let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(POLICY).unwrap()).unwrap();
    let (status, _, body) = call(&app, "PUT", &by_arn, Some(json!({"policy": pretty}))).await;
    assert_eq!((status.as_u16(), &body["state"]), (200, &json!("Active")));
    let (_, _, second) = call(&app, "GET", &format!("/authpolicy/{id}"), None).await;
    assert_eq!(
        (&second["policy"], &second["state"], &second["createdAt"]),
        (&json!(pretty), &json!("Active"), &first["createdAt"])
    );
    let (status, _, body) = call(&app, "DELETE", &by_arn, None).await;
    assert_eq!((status.as_u16(), body), (204, Value::Null));
    // No policy: 200 without one, as AWS answers; deleting again is fine.
    let (status, _, body) = call(&app, "GET", &format!("/authpolicy/{id}"), None).await;
    assert_eq!((status.as_u16(), body), (200, json!({})));
    let (status, _, _) = call(&app, "DELETE", &format!("/authpolicy/{id}"), None).await;
    assert_eq!(status, 204);
    // The service network's delete takes its policy along.
    call(&app, "PUT", &format!("/authpolicy/{id}"), Some(json!({"policy": POLICY}))).await;
    let key = Keys::new("us-east-1", "000000000000").auth_policy(&id);
    assert!(crate::repo::load::<Value>(store.as_ref(), &key).await.unwrap().is_some());
    call(&app, "DELETE", &format!("/servicenetworks/{id}"), None).await;
    assert!(crate::repo::load::<Value>(store.as_ref(), &key).await.unwrap().is_none());
    for method in ["GET", "DELETE"] {
        let (status, _, body) = call(&app, method, &format!("/authpolicy/{id}"), None).await;
        assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("SERVICE_NETWORK")));
    }
    let (status, _, body) = call(&app, "PUT", &format!("/authpolicy/{id}"), Some(json!({"policy": POLICY}))).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("SERVICE_NETWORK")));
}

#[tokio::test]
async fn identifiers_and_documents_are_checked() {
    let (app, _dir) = app();
    let (_, _, sn) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "net"}))).await;
    let url = format!("/authpolicy/{}", sn["id"].as_str().unwrap());
    for bad in [
        "tg-0123456789abcdef0",
        "sn-short",
        "arn%3Aaws%3Avpc-lattice%3Aus-east-1%3A000000000000%3Atargetgroup%2Ftg-0123456789abcdef0",
        "rcfg-0123456789abcdef0",
    ] {
        let (status, code, body) = call(&app, "GET", &format!("/authpolicy/{bad}"), None).await;
        assert_eq!(
            (status.as_u16(), code.as_deref(), field(&body)),
            (400, Some("ValidationException"), "resourceIdentifier".into()),
            "{bad}"
        );
    }
    let elsewhere = enc(&sn["arn"].as_str().unwrap().replace("000000000000", "111122223333"));
    let (status, _, _) = call(&app, "GET", &format!("/authpolicy/{elsewhere}"), None).await;
    assert_eq!(status, 404);
    let (status, _, body) =
        call(&app, "PUT", "/authpolicy/svc-0123456789abcdef0", Some(json!({"policy": POLICY}))).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("SERVICE")));
    let padded = format!("{POLICY}{}", " ".repeat(10_241 - POLICY.len()));
    for bad in [
        json!({}),
        json!({"policy": 3}),
        json!({"policy": ""}),
        json!({"policy": "{not json"}),
        json!({"policy": "[]"}),
        json!({"policy": r#"{"Version":"2012-10-17"}"#}),
        json!({"policy": r#"{"Statement":[]}"#}),
        json!({"policy": r#"{"Statement":{"Effect":"Maybe"}}"#}),
        json!({"policy": r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow"}}"#}),
        json!({"policy": r#"{"Statement":[{"Effect":"Allow"},"x"]}"#}),
        json!({"policy": padded}),
        json!({"policy": r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#}),
        json!({"policy": r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":{"Sometimes":{"a":"b"}}}}"#}),
    ] {
        let (status, _, body) = call(&app, "PUT", &url, Some(bad.clone())).await;
        assert_eq!((status.as_u16(), field(&body)), (400, "policy".into()), "{bad}");
    }
    // A single statement object, no Version, and whitespace are all fine.
    let doc =
        "{\n \"Statement\": {\"Effect\": \"Deny\", \"Principal\": \"*\",\n \"Action\": \"*\", \"Resource\": \"*\"}\n}";
    let (status, _, _) = call(&app, "PUT", &url, Some(json!({"policy": doc}))).await;
    assert_eq!(status, 200);
    // The message says what is wrong.
    let bad = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":{"Sometimes":{"a":"b"}}}}"#;
    let (_, _, body) = call(&app, "PUT", &url, Some(json!({"policy": bad}))).await;
    assert!(body.to_string().contains("Sometimes"), "{body}");
}

/// Services are made by another module; one is seeded directly here.
#[tokio::test]
async fn state_follows_a_service_auth_type() {
    let (app, store, _dir) = app_and_store();
    let svc = "svc-0123456789abcdef0";
    let mut tx = Tx::default();
    tx.put(
        Keys::new("us-east-1", "000000000000").res(trellis_model::Kind::Service, svc),
        &json!({"id": svc, "authType": "AWS_IAM"}),
    );
    assert!(Attempts::default().commit(store.as_ref(), tx).await.unwrap());
    let arn = enc(&format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{svc}"));
    let (status, _, body) = call(&app, "PUT", &format!("/authpolicy/{arn}"), Some(json!({"policy": POLICY}))).await;
    assert_eq!((status.as_u16(), &body["state"]), (200, &json!("Active")));
    let (_, _, body) = call(&app, "GET", &format!("/authpolicy/{svc}"), None).await;
    assert_eq!(body["state"], "Active");
}

/// Through the other modules' create and delete operations.
#[tokio::test]
async fn service_policies_go_with_the_service() {
    let (app, _dir) = app();
    let (status, _, svc) = call(&app, "POST", "/services", Some(json!({"name": "web"}))).await;
    assert_eq!(status, 201, "{svc}");
    let id = svc["id"].as_str().unwrap();
    let (_, _, body) = call(&app, "PUT", &format!("/authpolicy/{id}"), Some(json!({"policy": POLICY}))).await;
    assert_eq!(body["state"], "Inactive");
    call(&app, "PATCH", &format!("/services/{id}"), Some(json!({"authType": "AWS_IAM"}))).await;
    let (_, _, body) = call(&app, "GET", &format!("/authpolicy/{id}"), None).await;
    assert_eq!(body["state"], "Active");
    let (status, _, _) = call(&app, "DELETE", &format!("/services/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, _, body) = call(&app, "GET", &format!("/authpolicy/{id}"), None).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("SERVICE")));
}
