//! Listeners through the API: shapes, defaults, errors, quotas, and the target-group references
//! their default actions keep.

use serde_json::json;

use super::super::rule::testing::{TestApp, fixed, forward, seg};
use crate::Quotas;

#[tokio::test]
async fn create_get_list_update_delete() {
    let t = TestApp::new();
    let tg = t.http_tg().await;
    let svc = t.service("web").await;
    let svc_arn = format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{svc}");
    let body =
        json!({"name": "http-80", "protocol": "HTTP", "defaultAction": forward(&[&tg], None), "tags": {"a": "b"}});
    let (status, _, l) = t.call("POST", &format!("/services/{}/listeners", seg(&svc_arn)), Some(body)).await;
    assert_eq!(status, 201, "{l}");
    let id = l["id"].as_str().unwrap().to_owned();
    assert!(trellis_model::Kind::Listener.is_id(&id));
    assert_eq!(
        l,
        json!({
            "arn": format!("{svc_arn}/listener/{id}"), "id": id, "name": "http-80", "protocol": "HTTP", "port": 80,
            "serviceArn": svc_arn, "serviceId": svc,
            "defaultAction": {"forward": {"targetGroups": [{"targetGroupIdentifier": tg, "weight": 100}]}},
        })
    );
    let (status, _, got) = t
        .call("GET", &format!("/services/{}/listeners/{}", seg(&svc_arn), seg(l["arn"].as_str().unwrap())), None)
        .await;
    assert_eq!(status, 200, "{got}");
    for k in ["arn", "id", "name", "protocol", "port", "serviceArn", "serviceId", "defaultAction"] {
        assert_eq!(got[k], l[k], "{k}");
    }
    assert!(got["createdAt"].is_string() && got["lastUpdatedAt"].is_string() && got.get("tags").is_none());

    let body = json!({"name": "https", "protocol": "HTTPS", "defaultAction": fixed(500)});
    let (status, _, tls) = t.call("POST", &format!("/services/{svc}/listeners"), Some(body)).await;
    assert_eq!((status, &tls["port"], &tls["defaultAction"]), (201, &json!(443), &fixed(500)));
    let (_, _, list) = t.call("GET", &format!("/services/{svc}/listeners"), None).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let item = items.iter().find(|i| i["id"] == id.as_str()).unwrap();
    assert_eq!(
        (&item["name"], &item["protocol"], &item["port"], &item["arn"]),
        (&l["name"], &l["protocol"], &l["port"], &l["arn"])
    );
    assert!(item["createdAt"].is_string() && item.get("defaultAction").is_none() && item.get("serviceId").is_none());
    let (_, _, page) = t.call("GET", &format!("/services/{svc}/listeners?maxResults=1"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["nextToken"].is_string());

    let update = json!({"defaultAction": forward(&[&tg], Some(&[7]))});
    let (status, _, upd) = t.call("PATCH", &format!("/services/{svc}/listeners/{id}"), Some(update)).await;
    assert_eq!(status, 200, "{upd}");
    assert_eq!(upd["defaultAction"], forward(&[&tg], Some(&[7])));
    assert_eq!((&upd["port"], &upd["arn"]), (&l["port"], &l["arn"]));
    let (_, _, got) = t.call("GET", &format!("/services/{svc}/listeners/{id}"), None).await;
    assert_eq!(got["defaultAction"], upd["defaultAction"]);

    let (status, _, body) = t.call("DELETE", &format!("/services/{svc}/listeners/{id}"), None).await;
    assert_eq!((status, body), (204, serde_json::Value::Null));
    let (status, _, err) = t.call("GET", &format!("/services/{svc}/listeners/{id}"), None).await;
    assert_eq!((status, &err["resourceType"], &err["resourceId"]), (404, &json!("LISTENER"), &json!(id)));
    let (_, _, list) = t.call("GET", &format!("/services/{svc}/listeners"), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // The name and port are free again.
    t.listener(&svc, "http-80", 80, fixed(404)).await;
}

#[tokio::test]
async fn validation_errors() {
    let t = TestApp::new();
    let (tg1, tg2) = (t.http_tg().await, t.http_tg().await);
    let svc = t.service("web").await;
    let base = |patch: serde_json::Value| {
        let mut b = json!({"name": "lst", "protocol": "HTTP", "defaultAction": fixed(404)});
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let eleven: Vec<String> = (0..11).map(|i| format!("tg-0123456789abcde{i:02x}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    let cases = [
        (base(json!({"name": "listener-1"})), "name"),
        (base(json!({"name": "x".repeat(64)})), "name"),
        (base(json!({"protocol": "FTP"})), "protocol"),
        (base(json!({"port": 0})), "port"),
        (base(json!({"port": 70000})), "port"),
        (base(json!({"protocol": "TLS_PASSTHROUGH"})), "port"),
        (base(json!({"defaultAction": fixed(200)})), "defaultAction.fixedResponse.statusCode"),
        (base(json!({"defaultAction": forward(&[], None)})), "defaultAction.forward.targetGroups"),
        (base(json!({"defaultAction": forward(&eleven, None)})), "defaultAction.forward.targetGroups"),
        (base(json!({"defaultAction": forward(&[&tg1, &tg2], None)})), "defaultAction.forward.targetGroups[0].weight"),
        (
            base(json!({"defaultAction": forward(&[&tg1], Some(&[1000]))})),
            "defaultAction.forward.targetGroups[0].weight",
        ),
        (
            base(json!({"defaultAction": forward(&[&tg1, &tg1], Some(&[1, 1]))})),
            "defaultAction.forward.targetGroups[1]",
        ),
        (
            base(json!({"defaultAction": forward(&["tg-1"], None)})),
            "defaultAction.forward.targetGroups[0].targetGroupIdentifier",
        ),
        (base(json!({"tags": {"": "x"}})), "tags"),
    ];
    for (body, field) in cases {
        let (status, code, err) = t.call("POST", &format!("/services/{svc}/listeners"), Some(body.clone())).await;
        assert_eq!((status, code.as_deref()), (400, Some("ValidationException")), "{body}: {err}");
        assert_eq!(err["fieldList"][0]["name"], field, "{body}: {err}");
    }
    let both =
        json!({"forward": {"targetGroups": [{"targetGroupIdentifier": tg1}]}, "fixedResponse": {"statusCode": 404}});
    for action in [both, json!({}), json!({"redirect": {}})] {
        let body = base(json!({ "defaultAction": action }));
        let (status, code, _) = t.call("POST", &format!("/services/{svc}/listeners"), Some(body)).await;
        assert_eq!((status, code.as_deref()), (400, Some("ValidationException")), "{action}");
    }
    let (status, _, err) = t.call("POST", &format!("/services/{svc}/listeners"), Some(json!({"name": "lst"}))).await;
    assert_eq!((status, &err["reason"]), (400, &json!("fieldValidationFailed")));
    let (_, _, list) = t.call("GET", &format!("/services/{svc}/listeners"), None).await;
    assert_eq!(list["items"], json!([]));
    assert_eq!(t.users(&tg1).await, (0, vec![]));
}

#[tokio::test]
async fn not_found() {
    let t = TestApp::new();
    let svc = t.service("web").await;
    let missing_svc = "svc-0123456789abcdef0";
    let (status, _, err) = t
        .call(
            "POST",
            &format!("/services/{missing_svc}/listeners"),
            Some(json!({"name": "lst", "protocol": "HTTP", "defaultAction": fixed(404)})),
        )
        .await;
    assert_eq!((status, &err["resourceType"], &err["resourceId"]), (404, &json!("SERVICE"), &json!(missing_svc)));
    let (status, _, err) = t.call("GET", &format!("/services/{missing_svc}/listeners"), None).await;
    assert_eq!((status, &err["resourceType"]), (404, &json!("SERVICE")));
    let (status, _, err) =
        t.call("GET", &format!("/services/{missing_svc}/listeners/listener-0123456789abcdef0"), None).await;
    assert_eq!((status, &err["resourceType"]), (404, &json!("SERVICE")));
    for (method, body) in [("GET", None), ("PATCH", Some(json!({"defaultAction": fixed(404)}))), ("DELETE", None)] {
        let (status, _, err) =
            t.call(method, &format!("/services/{svc}/listeners/listener-0123456789abcdef0"), body).await;
        assert_eq!((status, &err["resourceType"]), (404, &json!("LISTENER")), "{method}");
    }
    let body = json!({"name": "lst", "protocol": "HTTP", "defaultAction": forward(&["tg-0123456789abcdef0"], None)});
    let (status, _, err) = t.call("POST", &format!("/services/{svc}/listeners"), Some(body)).await;
    assert_eq!(
        (status, &err["resourceType"], &err["resourceId"]),
        (404, &json!("TARGET_GROUP"), &json!("tg-0123456789abcdef0"))
    );
    // A listener is found only under its own service.
    let l = t.listener(&svc, "lst", 80, fixed(404)).await;
    let other = t.service("other").await;
    let (status, _, err) = t.call("GET", &format!("/services/{other}/listeners/{l}"), None).await;
    assert_eq!((status, &err["resourceType"]), (404, &json!("LISTENER")));
}

#[tokio::test]
async fn conflicts_and_quotas() {
    let t = TestApp::with(Quotas { listeners_per_service: 2, target_groups_per_service: 2, ..Default::default() });
    let (tg1, tg2, tg3) = (t.http_tg().await, t.http_tg().await, t.http_tg().await);
    let svc = t.service("web").await;
    let first = t.listener(&svc, "one", 80, forward(&[&tg1], None)).await;
    let create = |name: &str, port: u16, action: serde_json::Value| json!({"name": name, "protocol": "HTTP", "port": port, "defaultAction": action});
    let path = format!("/services/{svc}/listeners");
    let (status, code, err) = t.call("POST", &path, Some(create("one", 81, fixed(404)))).await;
    assert_eq!((status, code.as_deref(), &err["resourceType"]), (409, Some("ConflictException"), &json!("LISTENER")));
    assert_eq!(err["resourceId"], first.as_str());
    let (status, _, err) = t.call("POST", &path, Some(create("two", 80, fixed(404)))).await;
    assert_eq!((status, &err["resourceType"], &err["resourceId"]), (409, &json!("LISTENER"), &json!(first)));
    // Three target groups are over this service's quota of two.
    let (status, code, err) =
        t.call("POST", &path, Some(create("two", 81, forward(&[&tg1, &tg2, &tg3], Some(&[1, 1, 1]))))).await;
    assert_eq!(
        (status, code.as_deref(), &err["quotaCode"]),
        (402, Some("ServiceQuotaExceededException"), &json!("L-3DEC3B9F"))
    );
    t.listener(&svc, "two", 81, forward(&[&tg1, &tg2], Some(&[1, 1]))).await;
    assert_eq!(t.used(&svc).await.0, 2);
    let (status, _, err) = t.call("POST", &path, Some(create("three", 82, fixed(404)))).await;
    assert_eq!((status, &err["quotaCode"], &err["resourceType"]), (402, &json!("L-D64E952E"), &json!("LISTENER")));
    // A target group serves one service only.
    let other = t.service("other").await;
    let (status, code, err) =
        t.call("POST", &format!("/services/{other}/listeners"), Some(create("one", 80, forward(&[&tg2], None)))).await;
    assert_eq!(
        (status, code.as_deref(), &err["resourceType"]),
        (409, Some("ConflictException"), &json!("TARGET_GROUP"))
    );
    t.listener(&other, "one", 80, forward(&[&tg3], None)).await;
    let (status, _, err) = t
        .call(
            "PATCH",
            &format!("/services/{svc}/listeners/{first}"),
            Some(json!({"defaultAction": forward(&[&tg3], None)})),
        )
        .await;
    assert_eq!((status, &err["resourceId"]), (409, &json!(tg3)));
}

#[tokio::test]
async fn default_actions_keep_target_group_references() {
    let t = TestApp::new();
    let (tg1, tg2) = (t.http_tg().await, t.http_tg().await);
    let svc = t.service("web").await;
    let l1 = t.listener(&svc, "one", 80, forward(&[&tg1], None)).await;
    assert_eq!(t.users(&tg1).await, (1, vec![svc.clone()]));
    assert_eq!(t.used(&svc).await, (1, vec![tg1.clone()]));
    let l2 = t.listener(&svc, "two", 81, forward(&[&tg1, &tg2], Some(&[1, 0]))).await;
    assert_eq!(t.users(&tg1).await, (2, vec![svc.clone(), svc.clone()]));
    assert_eq!(t.used(&svc).await.0, 2);
    let update = json!({"defaultAction": forward(&[&tg2], None)});
    let (status, _, _) = t.call("PATCH", &format!("/services/{svc}/listeners/{l1}"), Some(update)).await;
    assert_eq!(status, 200);
    assert_eq!(t.users(&tg1).await.0, 1);
    assert_eq!(t.users(&tg2).await.0, 2);
    let (status, _, _) = t.call("DELETE", &format!("/services/{svc}/listeners/{l2}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(t.users(&tg1).await, (0, vec![]));
    assert_eq!(t.users(&tg2).await, (1, vec![svc.clone()]));
    assert_eq!(t.used(&svc).await, (1, vec![tg2.clone()]));
    let update = json!({"defaultAction": fixed(404)});
    t.call("PATCH", &format!("/services/{svc}/listeners/{l1}"), Some(update)).await;
    assert_eq!(t.users(&tg2).await, (0, vec![]));
    assert_eq!(t.used(&svc).await, (0, vec![]));
    // Now unused, tg1 may serve another service.
    let other = t.service("other").await;
    t.listener(&other, "one", 80, forward(&[&tg1], None)).await;
}

#[tokio::test]
async fn protocols_and_target_groups() {
    let t = TestApp::new();
    let (tcp, h2, grpc) = (t.tg("TCP", "HTTP1").await, t.tg("HTTP", "HTTP2").await, t.tg("HTTPS", "GRPC").await);
    let svc = t.service("web").await;
    let path = format!("/services/{svc}/listeners");
    let listener = |protocol: &str, port: u16, action: serde_json::Value| json!({"name": format!("l-{port}"), "protocol": protocol, "port": port, "defaultAction": action});
    for (body, why) in [
        (listener("HTTP", 80, forward(&[&tcp], None)), "TCP behind HTTP"),
        (listener("HTTP", 80, forward(&[&h2], None)), "HTTP2 behind HTTP"),
        (listener("HTTP", 80, forward(&[&grpc], None)), "GRPC behind HTTP"),
    ] {
        let (status, _, err) = t.call("POST", &path, Some(body)).await;
        assert_eq!(status, 400, "{why}: {err}");
    }
    let (status, _, err) =
        t.call("POST", &path, Some(listener("HTTPS", 443, forward(&[&h2, &grpc], Some(&[1, 1]))))).await;
    assert_eq!(status, 201, "{err}");
    // TLS_PASSTHROUGH needs a custom domain, and forwards to TCP target groups only.
    let (status, _, err) = t.call("POST", &path, Some(listener("TLS_PASSTHROUGH", 8443, forward(&[&tcp], None)))).await;
    assert_eq!((status, &err["reason"]), (400, &json!("other")), "{err}");
    let (_, _, svc2) =
        t.call("POST", "/services", Some(json!({"name": "tls", "customDomainName": "tls.example.com"}))).await;
    let path = format!("/services/{}/listeners", svc2["id"].as_str().unwrap());
    let (status, _, _) = t.call("POST", &path, Some(listener("TLS_PASSTHROUGH", 8443, fixed(404)))).await;
    assert_eq!(status, 400);
    let (status, _, err) = t.call("POST", &path, Some(listener("TLS_PASSTHROUGH", 8443, forward(&[&tcp], None)))).await;
    assert_eq!((status, &err["port"], &err["protocol"]), (201, &json!(8443), &json!("TLS_PASSTHROUGH")), "{err}");
}

#[tokio::test]
async fn client_token_replays() {
    let t = TestApp::new();
    let svc = t.service("web").await;
    let body = json!({"name": "lst", "protocol": "HTTP", "defaultAction": fixed(404), "clientToken": "tok"});
    let (status, _, first) = t.call("POST", &format!("/services/{svc}/listeners"), Some(body.clone())).await;
    assert_eq!(status, 201);
    let (status, _, again) = t.call("POST", &format!("/services/{svc}/listeners"), Some(body)).await;
    assert_eq!((status, &again), (201, &first));
    let body = json!({"name": "lst", "protocol": "HTTP", "defaultAction": fixed(500), "clientToken": "tok"});
    let (status, code, _) = t.call("POST", &format!("/services/{svc}/listeners"), Some(body)).await;
    assert_eq!((status, code.as_deref()), (409, Some("ConflictException")));
}
