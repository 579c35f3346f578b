//! Rules through the API: shapes, the default rule, ordering, errors, quotas, references, and
//! BatchUpdateRule.

use serde_json::{Value, json};

use super::testing::{TestApp, fixed, forward, seg};
use crate::Quotas;

fn path_match(prefix: &str) -> Value {
    json!({"httpMatch": {"pathMatch": {"match": {"prefix": prefix}}}})
}

const FULL_MATCH: &str = r#"{"httpMatch": {"method": "GET",
    "pathMatch": {"match": {"prefix": "/api"}, "caseSensitive": false},
    "headerMatches": [{"name": "x-canary", "match": {"exact": "1"}, "caseSensitive": true}]}}"#;

/// A service with one HTTP listener whose default action is a fixed 404.
async fn setup(t: &TestApp) -> (String, String, String) {
    let svc = t.service("web").await;
    let l = t.listener(&svc, "http", 80, fixed(404)).await;
    let rules = format!("/services/{svc}/listeners/{l}/rules");
    (svc, l, rules)
}

#[tokio::test]
async fn create_get_update_delete() {
    let t = TestApp::new();
    let tg = t.http_tg().await;
    let (svc, l, rules) = setup(&t).await;
    let full: Value = serde_json::from_str(FULL_MATCH).unwrap();
    let body =
        json!({"name": "api", "priority": 10, "match": full, "action": forward(&[&tg], None), "tags": {"t": "1"}});
    let (status, _, r) = t.call("POST", &rules, Some(body)).await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    assert!(trellis_model::Kind::Rule.is_id(&id));
    let arn = format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{svc}/listener/{l}/rule/{id}");
    assert_eq!(
        r,
        json!({"arn": arn, "id": id, "name": "api", "priority": 10, "match": full,
               "action": {"forward": {"targetGroups": [{"targetGroupIdentifier": tg, "weight": 100}]}}})
    );
    let svc_arn = format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{svc}");
    let by_arns = format!(
        "/services/{}/listeners/{}/rules/{}",
        seg(&svc_arn),
        seg(&format!("{svc_arn}/listener/{l}")),
        seg(&arn)
    );
    let (status, _, got) = t.call("GET", &by_arns, None).await;
    assert_eq!(status, 200, "{got}");
    for k in ["arn", "id", "name", "priority", "match", "action"] {
        assert_eq!(got[k], r[k], "{k}");
    }
    assert_eq!(got["isDefault"], false);
    assert!(got["createdAt"].is_string() && got["lastUpdatedAt"].is_string() && got.get("tags").is_none());

    let update = json!({"priority": 15, "match": path_match("/v2"), "action": forward(&[&tg], Some(&[3]))});
    let (status, _, upd) = t.call("PATCH", &format!("{rules}/{id}"), Some(update)).await;
    assert_eq!(status, 200, "{upd}");
    assert_eq!(
        upd,
        json!({"arn": arn, "id": id, "name": "api", "isDefault": false, "priority": 15, "match": path_match("/v2"),
               "action": forward(&[&tg], Some(&[3]))})
    );
    let (status, _, upd) = t.call("PATCH", &format!("{rules}/{id}"), Some(json!({"priority": 12}))).await;
    assert_eq!(
        (status, &upd["priority"], &upd["match"], &upd["action"]),
        (200, &json!(12), &path_match("/v2"), &forward(&[&tg], Some(&[3])))
    );
    let (_, _, got) = t.call("GET", &format!("{rules}/{id}"), None).await;
    assert_eq!((&got["priority"], &got["action"]), (&json!(12), &upd["action"]));

    let (status, _, body) = t.call("DELETE", &format!("{rules}/{id}"), None).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _, err) = t.call("GET", &format!("{rules}/{id}"), None).await;
    assert_eq!((status, &err["resourceType"], &err["resourceId"]), (404, &json!("RULE"), &json!(id)));
    let (_, _, list) = t.call("GET", &rules, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "only the default rule is left");
    assert_eq!(t.users(&tg).await, (0, vec![]));
    // Name and priority are free again.
    t.rule(&svc, &l, "api", 12, fixed(404)).await;
}

#[tokio::test]
async fn default_rule_is_derived_from_the_listener() {
    let t = TestApp::new();
    let tg = t.http_tg().await;
    let svc = t.service("web").await;
    let l = t.listener(&svc, "http", 80, forward(&[&tg], None)).await;
    let rules = format!("/services/{svc}/listeners/{l}/rules");
    let (_, _, list) = t.call("GET", &rules, None).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let d = &items[0];
    let did = d["id"].as_str().unwrap();
    assert!(trellis_model::Kind::Rule.is_id(did));
    assert_eq!((&d["name"], &d["isDefault"]), (&json!("default"), &json!(true)));
    assert!(d.get("priority").is_none());
    assert_eq!(d["arn"], format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{svc}/listener/{l}/rule/{did}"));
    let (status, _, got) = t.call("GET", &format!("{rules}/{}", seg(d["arn"].as_str().unwrap())), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!((&got["isDefault"], &got["name"], &got["id"]), (&json!(true), &json!("default"), &d["id"]));
    assert_eq!(got["action"], forward(&[&tg], Some(&[100])));
    assert!(got.get("match").is_none() && got.get("priority").is_none() && got["createdAt"].is_string());
    t.call("PATCH", &format!("/services/{svc}/listeners/{l}"), Some(json!({"defaultAction": fixed(500)}))).await;
    let (_, _, got) = t.call("GET", &format!("{rules}/{did}"), None).await;
    assert_eq!(got["action"], fixed(500));
    for (method, body) in [("PATCH", Some(json!({"action": fixed(500)}))), ("DELETE", None)] {
        let (status, code, _) = t.call(method, &format!("{rules}/{did}"), body).await;
        assert_eq!((status, code.as_deref()), (400, Some("ValidationException")), "{method}");
    }
    let (_, _, again) = t.call("GET", &rules, None).await;
    assert_eq!(again["items"][0]["id"], d["id"]);
}

#[tokio::test]
async fn listed_by_priority_default_last_and_paged() {
    let t = TestApp::new();
    let (svc, l, rules) = setup(&t).await;
    for (name, p) in [("r-twenty", 20), ("r-ten", 10), ("r-thirty", 30), ("r-five", 5)] {
        t.rule(&svc, &l, name, p, fixed(404)).await;
    }
    let (_, _, list) = t.call("GET", &rules, None).await;
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["r-five", "r-ten", "r-twenty", "r-thirty", "default"]);
    let item = &list["items"][0];
    assert_eq!((&item["isDefault"], &item["priority"]), (&json!(false), &json!(5)));
    assert!(item["createdAt"].is_string() && item.get("match").is_none() && item.get("action").is_none());
    assert!(list.get("nextToken").is_none());
    let mut seen = Vec::new();
    let mut query = "maxResults=2".to_owned();
    for _ in 0..5 {
        let (status, _, page) = t.call("GET", &format!("{rules}?{query}"), None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()));
        match page["nextToken"].as_str() {
            Some(token) => query = format!("maxResults=2&nextToken={token}"),
            None => break,
        }
    }
    assert_eq!(seen, ["r-five", "r-ten", "r-twenty", "r-thirty", "default"]);
    let (status, _, _) = t.call("GET", &format!("{rules}?maxResults=5"), None).await;
    assert_eq!(status, 200);
    let (status, _, err) = t.call("GET", &format!("{rules}?nextToken=00"), None).await;
    assert_eq!((status, &err["fieldList"][0]["name"]), (400, &json!("nextToken")));
}

#[tokio::test]
async fn validation_errors() {
    let t = TestApp::new();
    let (_, _, rules) = setup(&t).await;
    let base = |patch: Value| {
        let mut b = json!({"name": "rul", "priority": 1, "match": path_match("/a"), "action": fixed(404)});
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let six: Vec<Value> = (0..6).map(|i| json!({"name": format!("x-h{i}"), "match": {"exact": "v"}})).collect();
    let cases = [
        (base(json!({"name": "rule-abc"})), "name"),
        (base(json!({"name": "a--b"})), "name"),
        (base(json!({"priority": 0})), "priority"),
        (base(json!({"priority": 2001})), "priority"),
        (base(json!({"match": {"httpMatch": {}}})), "match.httpMatch"),
        (base(json!({"match": {"httpMatch": {"headerMatches": six}}})), "match.httpMatch.headerMatches"),
        (base(json!({"match": path_match("no-slash")})), "match.httpMatch.pathMatch.match.prefix"),
        (base(json!({"action": fixed(418)})), "action.fixedResponse.statusCode"),
        (
            base(json!({"action": forward(&["tg-0123456789abcdef0", "tg-0123456789abcdef1"], None)})),
            "action.forward.targetGroups[0].weight",
        ),
    ];
    for (body, field) in cases {
        let (status, code, err) = t.call("POST", &rules, Some(body.clone())).await;
        assert_eq!((status, code.as_deref()), (400, Some("ValidationException")), "{body}: {err}");
        assert_eq!(err["fieldList"][0]["name"], field, "{body}: {err}");
    }
    for bad in [
        json!({"name": "rul", "priority": 1, "action": fixed(404)}),
        base(json!({"match": {"httpMatch": {"pathMatch": {"match": {"prefix": "/a", "exact": "/a"}}}}})),
        base(json!({"match": {"tcpMatch": {}}})),
    ] {
        let (status, code, _) = t.call("POST", &rules, Some(bad.clone())).await;
        assert_eq!((status, code.as_deref()), (400, Some("ValidationException")), "{bad}");
    }
    let (_, _, list) = t.call("GET", &rules, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn not_found_conflicts_and_quota() {
    let t = TestApp::with(Quotas { rules_per_listener: 2, ..Default::default() });
    let (svc, l, rules) = setup(&t).await;
    let body =
        |name: &str, p: u32| json!({"name": name, "priority": p, "match": path_match("/a"), "action": fixed(404)});
    let missing_l = format!("/services/{svc}/listeners/listener-0123456789abcdef0/rules");
    let (status, _, err) = t.call("POST", &missing_l, Some(body("rul", 1))).await;
    assert_eq!((status, &err["resourceType"]), (404, &json!("LISTENER")));
    let (status, _, err) = t.call("GET", &missing_l, None).await;
    assert_eq!((status, &err["resourceType"]), (404, &json!("LISTENER")));
    let missing_s = format!("/services/svc-0123456789abcdef0/listeners/{l}/rules");
    let (status, _, err) = t.call("POST", &missing_s, Some(body("rul", 1))).await;
    assert_eq!((status, &err["resourceType"]), (404, &json!("SERVICE")));
    for (method, b) in [("GET", None), ("PATCH", Some(json!({"priority": 3}))), ("DELETE", None)] {
        let (status, _, err) = t.call(method, &format!("{rules}/rule-0123456789abcdef0"), b).await;
        assert_eq!(
            (status, &err["resourceType"], &err["resourceId"]),
            (404, &json!("RULE"), &json!("rule-0123456789abcdef0"))
        );
    }
    let b = json!({"name": "rul", "priority": 1, "match": path_match("/a"), "action": forward(&["tg-0123456789abcdef0"], None)});
    let (status, _, err) = t.call("POST", &rules, Some(b)).await;
    assert_eq!((status, &err["resourceType"]), (404, &json!("TARGET_GROUP")));

    let first = t.rule(&svc, &l, "one", 10, fixed(404)).await;
    let (status, code, err) = t.call("POST", &rules, Some(body("two", 10))).await;
    assert_eq!(
        (status, code.as_deref(), &err["resourceType"], &err["resourceId"]),
        (409, Some("ConflictException"), &json!("RULE"), &json!(first))
    );
    let (status, _, err) = t.call("POST", &rules, Some(body("one", 11))).await;
    assert_eq!((status, &err["resourceType"]), (409, &json!("RULE")));
    let second = t.rule(&svc, &l, "two", 20, fixed(404)).await;
    let (status, _, err) = t.call("PATCH", &format!("{rules}/{second}"), Some(json!({"priority": 10}))).await;
    assert_eq!((status, &err["resourceId"]), (409, &json!(first)));
    let (status, _, _) = t.call("PATCH", &format!("{rules}/{second}"), Some(json!({"priority": 20}))).await;
    assert_eq!(status, 200, "keeping one's own priority is no conflict");
    let (status, code, err) = t.call("POST", &rules, Some(body("three", 30))).await;
    assert_eq!(
        (status, code.as_deref(), &err["quotaCode"]),
        (402, Some("ServiceQuotaExceededException"), &json!("L-CF78395E"))
    );
    // A rule is found only under its own listener.
    let other = t.listener(&svc, "other", 81, fixed(404)).await;
    let (status, _, _) = t.call("GET", &format!("/services/{svc}/listeners/{other}/rules/{first}"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn rules_keep_target_group_references() {
    let t = TestApp::with(Quotas { target_groups_per_service: 2, ..Default::default() });
    let (tg1, tg2, tg3) = (t.http_tg().await, t.http_tg().await, t.http_tg().await);
    let svc = t.service("web").await;
    let l = t.listener(&svc, "http", 80, forward(&[&tg1], None)).await;
    let rules = format!("/services/{svc}/listeners/{l}/rules");
    let r1 = t.rule(&svc, &l, "one", 1, forward(&[&tg1], None)).await;
    assert_eq!(t.users(&tg1).await.0, 2);
    assert_eq!(t.used(&svc).await, (1, vec![tg1.clone()]));
    let r2 = t.rule(&svc, &l, "two", 2, forward(&[&tg1, &tg2], Some(&[5, 5]))).await;
    assert_eq!(t.used(&svc).await.0, 2);
    let b = json!({"name": "three", "priority": 3, "match": path_match("/a"), "action": forward(&[&tg3], None)});
    let (status, _, err) = t.call("POST", &rules, Some(b)).await;
    assert_eq!((status, &err["quotaCode"]), (402, &json!("L-3DEC3B9F")));
    let (status, _, err) =
        t.call("PATCH", &format!("{rules}/{r1}"), Some(json!({"action": forward(&[&tg3], None)}))).await;
    assert_eq!((status, &err["quotaCode"]), (402, &json!("L-3DEC3B9F")), "tg1 still has users, so tg3 is a third");
    let (status, _, _) =
        t.call("PATCH", &format!("{rules}/{r2}"), Some(json!({"action": forward(&[&tg2], None)}))).await;
    assert_eq!(status, 200);
    assert_eq!(t.users(&tg1).await.0, 2);
    let other = t.service("other").await;
    let ol = t.listener(&other, "http", 80, fixed(404)).await;
    let b = json!({"name": "one", "priority": 1, "match": path_match("/a"), "action": forward(&[&tg2], None)});
    let (status, _, err) = t.call("POST", &format!("/services/{other}/listeners/{ol}/rules"), Some(b)).await;
    assert_eq!((status, &err["resourceType"], &err["resourceId"]), (409, &json!("TARGET_GROUP"), &json!(tg2)));
    let (status, _, _) = t.call("DELETE", &format!("{rules}/{r2}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(t.users(&tg2).await, (0, vec![]));
    assert_eq!(t.used(&svc).await, (1, vec![tg1.clone()]));
    // Deleting the listener ends its own reference and its rules'.
    let (status, _, _) = t.call("DELETE", &format!("/services/{svc}/listeners/{l}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(t.users(&tg1).await, (0, vec![]));
    assert_eq!(t.used(&svc).await, (0, vec![]));
    let (status, _, err) = t.call("GET", &format!("{rules}/{r1}"), None).await;
    assert_eq!((status, &err["resourceType"]), (404, &json!("LISTENER")));
    // The listener's rule names went with it.
    let l = t.listener(&svc, "http", 80, fixed(404)).await;
    t.rule(&svc, &l, "one", 1, fixed(404)).await;
}

#[tokio::test]
async fn tls_passthrough_listeners_take_no_rules() {
    let t = TestApp::new();
    let tcp = t.tg("TCP", "HTTP1").await;
    let (_, _, svc) =
        t.call("POST", "/services", Some(json!({"name": "tls", "customDomainName": "tls.example.com"}))).await;
    let svc = svc["id"].as_str().unwrap();
    let body =
        json!({"name": "tls", "protocol": "TLS_PASSTHROUGH", "port": 443, "defaultAction": forward(&[&tcp], None)});
    let (_, _, l) = t.call("POST", &format!("/services/{svc}/listeners"), Some(body)).await;
    let rules = format!("/services/{svc}/listeners/{}/rules", l["id"].as_str().unwrap());
    let b = json!({"name": "one", "priority": 1, "match": path_match("/a"), "action": forward(&[&tcp], None)});
    let (status, code, _) = t.call("POST", &rules, Some(b)).await;
    assert_eq!((status, code.as_deref()), (400, Some("ValidationException")));
    let (_, _, list) = t.call("GET", &rules, None).await;
    assert_eq!(list["items"][0]["isDefault"], true);
}

#[tokio::test]
async fn client_token_replays() {
    let t = TestApp::new();
    let (_, _, rules) = setup(&t).await;
    let body =
        json!({"name": "one", "priority": 6, "match": path_match("/a"), "action": fixed(404), "clientToken": "x"});
    let (status, _, first) = t.call("POST", &rules, Some(body.clone())).await;
    assert_eq!(status, 201);
    let (status, _, again) = t.call("POST", &rules, Some(body)).await;
    assert_eq!((status, again), (201, first));
}

// === BatchUpdateRule ===

#[tokio::test]
async fn batch_swaps_priorities_atomically() {
    let t = TestApp::new();
    let (svc, l, rules) = setup(&t).await;
    let a = t.rule(&svc, &l, "a-rule", 10, fixed(404)).await;
    let b = t.rule(&svc, &l, "b-rule", 20, fixed(404)).await;
    let batch = json!({"rules": [{"ruleIdentifier": a, "priority": 20}, {"ruleIdentifier": b, "priority": 10}]});
    let (status, _, r) = t.call("PATCH", &rules, Some(batch)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["unsuccessful"], json!([]));
    let ok = r["successful"].as_array().unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!((&ok[0]["id"], &ok[0]["priority"], &ok[0]["name"]), (&json!(a), &json!(20), &json!("a-rule")));
    assert_eq!((&ok[1]["id"], &ok[1]["priority"], &ok[1]["isDefault"]), (&json!(b), &json!(10), &json!(false)));
    assert_eq!(ok[0]["match"], path_match("/p10"));
    assert_eq!(ok[0]["action"], fixed(404));
    let (_, _, list) = t.call("GET", &rules, None).await;
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(&ids[..2], [b.as_str(), a.as_str()]);
}

#[tokio::test]
async fn batch_reports_failures_item_by_item() {
    let t = TestApp::new();
    let tg = t.http_tg().await;
    let (svc, l, rules) = setup(&t).await;
    let a = t.rule(&svc, &l, "a-rule", 10, fixed(404)).await;
    let b = t.rule(&svc, &l, "b-rule", 20, fixed(404)).await;
    let c = t.rule(&svc, &l, "c-rule", 30, fixed(404)).await;
    let (_, _, list) = t.call("GET", &rules, None).await;
    let default = list["items"][3]["id"].as_str().unwrap().to_owned();
    let a_arn = format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{svc}/listener/{l}/rule/{a}");
    let batch = json!({"rules": [
        {"ruleIdentifier": a_arn, "action": forward(&[&tg], None), "match": path_match("/batched")},
        {"ruleIdentifier": "rule-0123456789abcdef0", "priority": 12},
        {"ruleIdentifier": default, "action": fixed(500)},
        {"ruleIdentifier": b, "priority": 30},
        {"ruleIdentifier": c, "action": forward(&["tg-0123456789abcdef0"], None)},
        {"ruleIdentifier": c, "action": fixed(418)},
        {"ruleIdentifier": "nonsense", "priority": 1},
    ]});
    let (status, _, r) = t.call("PATCH", &rules, Some(batch)).await;
    assert_eq!(status, 200, "{r}");
    let ok: Vec<&str> = r["successful"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ok, [a.as_str()]);
    let failures: Vec<(String, String)> = r["unsuccessful"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(f["failureMessage"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
            (f["ruleIdentifier"].as_str().unwrap().to_owned(), f["failureCode"].as_str().unwrap().to_owned())
        })
        .collect();
    let expected = [
        ("rule-0123456789abcdef0", "ResourceNotFound"),
        (default.as_str(), "ValidationError"),
        (b.as_str(), "Conflict"),
        (c.as_str(), "ResourceNotFound"),
        (c.as_str(), "ValidationError"),
        ("nonsense", "ValidationError"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(failures, expected);
    let (_, _, got) = t.call("GET", &format!("{rules}/{a}"), None).await;
    assert_eq!((&got["match"], &got["priority"]), (&path_match("/batched"), &json!(10)));
    assert_eq!(got["action"], forward(&[&tg], Some(&[100])));
    assert_eq!(t.users(&tg).await, (1, vec![svc.clone()]));
    let (_, _, got) = t.call("GET", &format!("{rules}/{b}"), None).await;
    assert_eq!(got["priority"], 20);
}

#[tokio::test]
async fn batch_judges_priorities_after_the_batch() {
    let t = TestApp::new();
    let (svc, l, rules) = setup(&t).await;
    let a = t.rule(&svc, &l, "a-rule", 1, fixed(404)).await;
    let b = t.rule(&svc, &l, "b-rule", 2, fixed(404)).await;
    let c = t.rule(&svc, &l, "c-rule", 3, fixed(404)).await;
    // c and a both ask for 4: the later (a) is refused, so a stays at 1, and then b → 1 is
    // refused too.
    let batch = json!({"rules": [
        {"ruleIdentifier": c, "priority": 4},
        {"ruleIdentifier": a, "priority": 4},
        {"ruleIdentifier": b, "priority": 1},
    ]});
    let (_, _, r) = t.call("PATCH", &rules, Some(batch)).await;
    let ok: Vec<&str> = r["successful"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ok, [c.as_str()], "{r}");
    let bad: Vec<&str> =
        r["unsuccessful"].as_array().unwrap().iter().map(|i| i["ruleIdentifier"].as_str().unwrap()).collect();
    assert_eq!(bad, [a.as_str(), b.as_str()]);
    // The same rule twice: the later item wins.
    let batch = json!({"rules": [{"ruleIdentifier": a, "priority": 7}, {"ruleIdentifier": a, "priority": 8}]});
    let (_, _, r) = t.call("PATCH", &rules, Some(batch)).await;
    assert_eq!(r["successful"].as_array().unwrap().len(), 2, "{r}");
    let (_, _, got) = t.call("GET", &format!("{rules}/{a}"), None).await;
    assert_eq!(got["priority"], 8);
}

#[tokio::test]
async fn batch_keeps_references_and_quota() {
    let t = TestApp::with(Quotas { target_groups_per_service: 2, ..Default::default() });
    let (tg1, tg2, tg3) = (t.http_tg().await, t.http_tg().await, t.http_tg().await);
    let (svc, l, rules) = setup(&t).await;
    let a = t.rule(&svc, &l, "a-rule", 1, forward(&[&tg1], None)).await;
    let b = t.rule(&svc, &l, "b-rule", 2, forward(&[&tg2], None)).await;
    // Moving a from tg1 to tg3 frees tg1, so the service still uses two; b adding tg1 to tg2
    // would make three.
    let batch = json!({"rules": [
        {"ruleIdentifier": a, "action": forward(&[&tg3], None)},
        {"ruleIdentifier": b, "action": forward(&[&tg2, &tg1], Some(&[1, 1]))},
    ]});
    let (_, _, r) = t.call("PATCH", &rules, Some(batch)).await;
    assert_eq!(r["successful"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["unsuccessful"][0]["failureCode"], "ServiceQuotaExceeded");
    assert_eq!(r["unsuccessful"][0]["ruleIdentifier"], b.as_str());
    assert_eq!(t.users(&tg1).await, (0, vec![]));
    assert_eq!(t.users(&tg3).await, (1, vec![svc.clone()]));
    let mut used = t.used(&svc).await;
    used.1.sort();
    let mut expected = vec![tg2.clone(), tg3.clone()];
    expected.sort();
    assert_eq!(used, (2, expected));
    // A target group of another service is a per-item conflict.
    let other = t.service("other").await;
    t.listener(&other, "http", 80, forward(&[&tg1], None)).await;
    let batch = json!({"rules": [{"ruleIdentifier": b, "action": forward(&[&tg1], None)}]});
    let (_, _, r) = t.call("PATCH", &rules, Some(batch)).await;
    assert_eq!(r["unsuccessful"][0]["failureCode"], "Conflict", "{r}");
    assert_eq!(r["successful"], json!([]));
}

#[tokio::test]
async fn batch_request_errors() {
    let t = TestApp::new();
    let (svc, _, rules) = setup(&t).await;
    let eleven: Vec<Value> =
        (0..11).map(|i| json!({"ruleIdentifier": format!("rule-0123456789abcde{i:02x}"), "priority": i + 1})).collect();
    for body in [json!({"rules": eleven}), json!({"rules": []}), json!({})] {
        let (status, code, err) = t.call("PATCH", &rules, Some(body.clone())).await;
        assert_eq!(
            (status, code.as_deref(), &err["fieldList"][0]["name"]),
            (400, Some("ValidationException"), &json!("rules")),
            "{body}"
        );
    }
    let body = json!({"rules": [{"ruleIdentifier": "rule-0123456789abcdef0", "priority": 1}]});
    let path = format!("/services/{svc}/listeners/listener-0123456789abcdef0/rules");
    let (status, _, err) = t.call("PATCH", &path, Some(body)).await;
    assert_eq!((status, &err["resourceType"]), (404, &json!("LISTENER")));
}
