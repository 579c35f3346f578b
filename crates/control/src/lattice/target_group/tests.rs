//! Target group handler tests, and the seeding helpers the target and association tests share:
//! VPCs, security groups and services are written straight into the store (their APIs live in
//! other modules), and so are the `tg-users` entries the listener and rule handlers keep.

use std::sync::Arc;

use axum::Router;
use serde_json::{Value, json};
use trellis_model::Kind;
use trellis_store::{Op, Store, Txn};

use crate::Quotas;
use crate::keys::{Keys, rel};
use crate::test_util::call;

pub(crate) const VPC: &str = "vpc-0123456789abcdef0";
pub(crate) const OTHER_VPC: &str = "vpc-0fedcba9876543210";

/// A router with these quotas on an empty store, the store itself, and its temp dir.
pub(crate) fn app_store(quotas: Quotas) -> (Router, Arc<dyn Store>, tempfile::TempDir) {
    crate::test_util::app_and_store_with(quotas)
}

pub(crate) fn keys() -> Keys {
    Keys::new("us-east-1", "000000000000")
}

pub(crate) async fn put(store: &Arc<dyn Store>, key: String, value: Vec<u8>) {
    let txn = Txn { compare: Vec::new(), success: vec![Op::Put(key, value)], failure: Vec::new() };
    assert!(store.txn(txn).await.unwrap().succeeded);
}

pub(crate) async fn seed_vpc(store: &Arc<dyn Store>, id: &str, cidr: &str) {
    let vpc =
        json!({"id": id, "cidrBlock": cidr, "instanceTenancy": "default", "defaultSecurityGroupId": "sg-00000000"});
    put(store, keys().res(Kind::Vpc, id), vpc.to_string().into_bytes()).await;
}

pub(crate) async fn seed_sg(store: &Arc<dyn Store>, id: &str, vpc: &str) {
    let sg = json!({"id": id, "groupName": id, "description": "test", "vpcId": vpc});
    put(store, keys().res(Kind::SecurityGroup, id), sg.to_string().into_bytes()).await;
}

/// Writes a service record; returns its ID.
pub(crate) async fn seed_service(store: &Arc<dyn Store>, name: &str, domain: Option<&str>) -> String {
    let id = Kind::Service.new_id();
    let svc = json!({
        "id": id, "name": name, "arn": format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{id}"),
        "authType": "NONE", "dnsName": format!("{name}-{}.7d67968.vpc-lattice-svcs.us-east-1.on.aws", &id[4..]),
        "customDomainName": domain, "status": "ACTIVE",
        "createdAt": "2024-01-01T00:00:00.000Z", "lastUpdatedAt": "2024-01-01T00:00:00.000Z",
    });
    put(store, keys().res(Kind::Service, &id), serde_json::to_vec(&svc).unwrap()).await;
    id
}

/// Records that a listener of service `svc` forwards to `tg`, as the listener handler does.
pub(crate) async fn seed_tg_user(store: &Arc<dyn Store>, tg: &str, svc: &str) {
    put(store, keys().reference(rel::TG_USERS, tg, "listener-0123456789abcdef0"), svc.as_bytes().to_vec()).await;
    put(store, keys().counter(rel::TG_USERS, tg), b"1".to_vec()).await;
}

/// A counter's value as stored (0 when absent).
pub(crate) async fn counter(store: &Arc<dyn Store>, key: String) -> u64 {
    crate::repo::counter(store.as_ref(), key).await.unwrap().value()
}

pub(crate) fn arn_path(arn: &Value) -> String {
    arn.as_str().unwrap().replace(':', "%3A").replace('/', "%2F")
}

/// Creates an IP target group on port 8080 in `vpc`; returns its body.
pub(crate) async fn ip_tg(app: &Router, name: &str, vpc: &str) -> Value {
    let config = json!({"port": 8080, "protocol": "HTTP", "vpcIdentifier": vpc});
    let (status, _, tg) =
        call(app, "POST", "/targetgroups", Some(json!({"name": name, "type": "IP", "config": config}))).await;
    assert_eq!(status, 201, "{tg}");
    tg
}

fn field(body: &Value) -> &str {
    body["fieldList"][0]["name"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let config = json!({"port": 8080, "protocol": "HTTP", "vpcIdentifier": VPC});
    let (status, _, tg) = call(
        &app,
        "POST",
        "/targetgroups",
        Some(json!({"name": "web-tg", "type": "IP", "config": config, "clientToken": "t1"})),
    )
    .await;
    assert_eq!(status, 201, "{tg}");
    assert_eq!(tg["status"], "CREATE_IN_PROGRESS");
    assert_eq!(
        tg["config"],
        json!({
            "port": 8080, "protocol": "HTTP", "protocolVersion": "HTTP1", "ipAddressType": "IPV4", "vpcIdentifier": VPC,
            "healthCheck": {
                "enabled": true, "protocol": "HTTP", "protocolVersion": "HTTP1", "path": "/",
                "healthCheckIntervalSeconds": 30, "healthCheckTimeoutSeconds": 5, "healthyThresholdCount": 5,
                "unhealthyThresholdCount": 2, "matcher": {"httpCode": "200"}
            }
        })
    );
    let id = tg["id"].as_str().unwrap().to_owned();
    let (_, _, again) = call(
        &app,
        "POST",
        "/targetgroups",
        Some(json!({"name": "web-tg", "type": "IP", "config": config, "clientToken": "t1"})),
    )
    .await;
    assert_eq!(again["id"], tg["id"]);
    let (status, code, _) =
        call(&app, "POST", "/targetgroups", Some(json!({"name": "web-tg", "type": "IP", "config": config}))).await;
    assert_eq!((status.as_u16(), code.as_deref()), (409, Some("ConflictException")));

    let (status, _, got) = call(&app, "GET", &format!("/targetgroups/{}", arn_path(&tg["arn"])), None).await;
    assert_eq!((status.as_u16(), &got["status"], &got["config"]), (200, &json!("ACTIVE"), &tg["config"]));
    assert!(got.get("serviceArns").is_none() && got.get("createdAt").is_some());

    let (_, _, list) = call(&app, "GET", "/targetgroups", None).await;
    let item = &list["items"][0];
    assert_eq!(
        (item["port"].as_u64(), &item["protocol"], &item["vpcIdentifier"]),
        (Some(8080), &json!("HTTP"), &json!(VPC))
    );
    assert_eq!(
        (&item["ipAddressType"], &item["type"], &item["status"]),
        (&json!("IPV4"), &json!("IP"), &json!("ACTIVE"))
    );
    assert!(item.get("config").is_none() && list.get("nextToken").is_none());

    let hc = json!({"healthCheck": {"path": "/health", "healthCheckIntervalSeconds": 10, "port": 9000}});
    let (status, _, up) = call(&app, "PATCH", &format!("/targetgroups/{id}"), Some(hc)).await;
    assert_eq!(status, 200, "{up}");
    let h = &up["config"]["healthCheck"];
    assert_eq!(
        (&h["path"], &h["healthCheckIntervalSeconds"], &h["port"], &h["healthyThresholdCount"]),
        (&json!("/health"), &json!(10), &json!(9000), &json!(5))
    );
    let reset = json!({"healthCheck": {"healthCheckIntervalSeconds": 0, "port": 0}});
    let (_, _, up) = call(&app, "PATCH", &format!("/targetgroups/{id}"), Some(reset)).await;
    let h = &up["config"]["healthCheck"];
    assert_eq!((&h["path"], &h["healthCheckIntervalSeconds"]), (&json!("/health"), &json!(30)));
    assert!(h.get("port").is_none());
    let (status, _, body) = call(
        &app,
        "PATCH",
        &format!("/targetgroups/{id}"),
        Some(json!({"healthCheck": {"healthyThresholdCount": 11}})),
    )
    .await;
    assert_eq!((status.as_u16(), field(&body)), (400, "healthCheck.healthyThresholdCount"));
    let (_, _, body) = call(&app, "PATCH", &format!("/targetgroups/{id}"), Some(json!({}))).await;
    assert_eq!(field(&body), "healthCheck");

    let (status, _, del) = call(&app, "DELETE", &format!("/targetgroups/{id}"), None).await;
    assert_eq!((status.as_u16(), &del["status"], &del["arn"]), (200, &json!("DELETE_IN_PROGRESS"), &tg["arn"]));
    let (status, _, body) = call(&app, "GET", &format!("/targetgroups/{id}"), None).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("TARGET_GROUP")));
    assert_eq!(counter(&store, keys().counter("tg", "")).await, 0);
    // The name is free again.
    ip_tg(&app, "web-tg", VPC).await;
}

#[tokio::test]
async fn defaults_per_type_and_protocol() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let create = |name: &str, ty: &str, config: Option<Value>| {
        let mut body = json!({"name": name, "type": ty});
        if let Some(c) = config {
            body["config"] = c;
        }
        let app = app.clone();
        async move { call(&app, "POST", "/targetgroups", Some(body)).await }
    };
    // The CLI's INSTANCE example: HTTPS without a port gets 443 and HTTPS health checks.
    let (_, _, tg) = create("inst", "INSTANCE", Some(json!({"protocol": "HTTPS", "vpcIdentifier": VPC}))).await;
    assert_eq!((&tg["config"]["port"], &tg["config"]["healthCheck"]["protocol"]), (&json!(443), &json!("HTTPS")));
    assert!(tg["config"].get("ipAddressType").is_none());
    let (_, _, tg) = create("alb", "ALB", Some(json!({"port": 443, "protocol": "HTTPS", "vpcIdentifier": VPC}))).await;
    assert_eq!(
        tg["config"],
        json!({"port": 443, "protocol": "HTTPS", "protocolVersion": "HTTP1", "vpcIdentifier": VPC})
    );
    let (status, _, tg) = create("lam", "LAMBDA", None).await;
    assert_eq!(status, 201);
    assert!(tg.get("config").is_none());
    let (_, _, tg) = create("lam-two", "LAMBDA", Some(json!({"lambdaEventStructureVersion": "V2"}))).await;
    assert_eq!(tg["config"], json!({"lambdaEventStructureVersion": "V2"}));
    let (_, _, list) = call(&app, "GET", "/targetgroups?targetGroupType=LAMBDA", None).await;
    let versions: Vec<_> =
        list["items"].as_array().unwrap().iter().map(|i| i.get("lambdaEventStructureVersion").cloned()).collect();
    assert!(versions.contains(&Some(json!("V2"))) && versions.contains(&None), "{list}");
    let (_, _, tg) =
        create("grpc", "IP", Some(json!({"protocol": "HTTPS", "protocolVersion": "GRPC", "vpcIdentifier": VPC}))).await;
    assert_eq!(tg["config"]["healthCheck"]["enabled"], false);
    let (_, _, tg) = create("tcp", "IP", Some(json!({"port": 443, "protocol": "TCP", "vpcIdentifier": VPC}))).await;
    assert_eq!((&tg["config"]["healthCheck"]["enabled"], tg["config"].get("protocolVersion")), (&json!(false), None));
    let (status, _, body) = create("tcp-two", "IP", Some(json!({"protocol": "TCP", "vpcIdentifier": VPC}))).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "config.port"));
}

#[tokio::test]
async fn validation_and_missing_vpc() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let good = json!({"port": 80, "protocol": "HTTP", "vpcIdentifier": VPC});
    let cases = [
        (json!({"name": "abc", "type": "IP"}), "config"),
        (json!({"name": "abc", "type": "NOPE", "config": good}), "type"),
        (json!({"name": "tg-abc", "type": "IP", "config": good}), "name"),
        (json!({"type": "IP", "config": good}), "name"),
        (json!({"name": "abc", "type": "IP", "config": {"port": 80, "vpcIdentifier": VPC}}), "config.protocol"),
        (json!({"name": "abc", "type": "IP", "config": {"protocol": "HTTP"}}), "config.vpcIdentifier"),
        (
            json!({"name": "abc", "type": "IP", "config": {"protocol": "HTTP", "vpcIdentifier": "vpc-x"}}),
            "config.vpcIdentifier",
        ),
        (
            json!({"name": "abc", "type": "IP", "config": {"port": 70000, "protocol": "HTTP", "vpcIdentifier": VPC}}),
            "config.port",
        ),
        (
            json!({"name": "abc", "type": "IP", "config": {"protocol": "HTTP", "protocolVersion": "HTTP3", "vpcIdentifier": VPC}}),
            "config.protocolVersion",
        ),
        (
            json!({"name": "abc", "type": "INSTANCE", "config": {"protocol": "HTTP", "ipAddressType": "IPV6", "vpcIdentifier": VPC}}),
            "config.ipAddressType",
        ),
        (
            json!({"name": "abc", "type": "IP", "config": {"protocol": "HTTP", "ipAddressType": "IPV5", "vpcIdentifier": VPC}}),
            "config.ipAddressType",
        ),
        (
            json!({"name": "abc", "type": "ALB", "config": {"protocol": "HTTP", "vpcIdentifier": VPC, "healthCheck": {}}}),
            "config.healthCheck",
        ),
        (json!({"name": "abc", "type": "LAMBDA", "config": {"port": 80}}), "config.port"),
        (
            json!({"name": "abc", "type": "LAMBDA", "config": {"lambdaEventStructureVersion": "V3"}}),
            "config.lambdaEventStructureVersion",
        ),
        (
            json!({"name": "abc", "type": "IP", "config": {"protocol": "HTTP", "vpcIdentifier": VPC, "lambdaEventStructureVersion": "V1"}}),
            "config.lambdaEventStructureVersion",
        ),
        (
            json!({"name": "abc", "type": "IP", "config": {"protocol": "HTTP", "vpcIdentifier": VPC, "healthCheck": {"healthCheckIntervalSeconds": 4}}}),
            "config.healthCheck.healthCheckIntervalSeconds",
        ),
        (
            json!({"name": "abc", "type": "IP", "config": {"protocol": "HTTP", "vpcIdentifier": VPC, "healthCheck": {"matcher": {"httpCode": "600"}}}}),
            "config.healthCheck.matcher.httpCode",
        ),
        (json!({"name": "abc", "type": "IP", "config": good, "tags": {"aws:x": "y"}}), "tags"),
    ];
    for (body, member) in cases {
        let (status, code, resp) = call(&app, "POST", "/targetgroups", Some(body.clone())).await;
        assert_eq!(
            (status.as_u16(), code.as_deref(), field(&resp)),
            (400, Some("ValidationException"), member),
            "{body} → {resp}"
        );
    }
    let config = json!({"protocol": "HTTP", "vpcIdentifier": OTHER_VPC});
    let (status, _, body) =
        call(&app, "POST", "/targetgroups", Some(json!({"name": "abc", "type": "IP", "config": config}))).await;
    assert_eq!((status.as_u16(), &body["resourceType"], &body["resourceId"]), (404, &json!("VPC"), &json!(OTHER_VPC)));
    let (status, _, body) = call(&app, "GET", "/targetgroups/tg-0123456789abcdef0", None).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("TARGET_GROUP")));
    let (status, _, body) = call(&app, "GET", "/targetgroups/nope", None).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "targetGroupIdentifier"));
    let (_, _, body) = call(&app, "GET", "/targetgroups?targetGroupType=NOPE", None).await;
    assert_eq!(field(&body), "targetGroupType");
    let (_, _, body) = call(&app, "GET", "/targetgroups?vpcIdentifier=x", None).await;
    assert_eq!(field(&body), "vpcIdentifier");
}

#[tokio::test]
async fn quota_per_region() {
    let (app, _store, _dir) = app_store(Quotas { target_groups: 1, ..Default::default() });
    let (status, _, _) = call(&app, "POST", "/targetgroups", Some(json!({"name": "one", "type": "LAMBDA"}))).await;
    assert_eq!(status, 201);
    let (status, code, body) =
        call(&app, "POST", "/targetgroups", Some(json!({"name": "two", "type": "LAMBDA"}))).await;
    assert_eq!((status.as_u16(), code.as_deref()), (402, Some("ServiceQuotaExceededException")));
    assert_eq!((&body["quotaCode"], &body["resourceType"]), (&json!("L-BB11C6B9"), &json!("TARGET_GROUP")));
}

#[tokio::test]
async fn in_use_by_a_service() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let tg = ip_tg(&app, "used", VPC).await;
    let id = tg["id"].as_str().unwrap();
    let svc = seed_service(&store, "web", None).await;
    seed_tg_user(&store, id, &svc).await;
    let svc_arn = format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{svc}");
    let (_, _, got) = call(&app, "GET", &format!("/targetgroups/{id}"), None).await;
    assert_eq!(got["serviceArns"], json!([svc_arn]));
    let (_, _, list) = call(&app, "GET", "/targetgroups", None).await;
    assert_eq!(list["items"][0]["serviceArns"], json!([svc_arn]));
    let (status, code, body) = call(&app, "DELETE", &format!("/targetgroups/{id}"), None).await;
    assert_eq!((status.as_u16(), code.as_deref(), &body["resourceId"]), (409, Some("ConflictException"), &json!(id)));
}

#[tokio::test]
async fn filtered_listing_fills_pages() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    seed_vpc(&store, OTHER_VPC, "10.1.0.0/16").await;
    for name in ["lam-a", "lam-b", "lam-c"] {
        call(&app, "POST", "/targetgroups", Some(json!({"name": name, "type": "LAMBDA"}))).await;
    }
    for name in ["ip-a", "ip-b"] {
        ip_tg(&app, name, VPC).await;
    }
    ip_tg(&app, "ip-c", OTHER_VPC).await;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/targetgroups?targetGroupType=IP&maxResults=1&nextToken={t}"),
            None => "/targetgroups?targetGroupType=IP&maxResults=1".to_owned(),
        };
        let (status, _, page) = call(&app, "GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "every page is full: {page}");
        seen.push(items[0]["name"].as_str().unwrap().to_owned());
        match page.get("nextToken") {
            Some(t) => token = Some(t.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["ip-a", "ip-b", "ip-c"]);
    let (_, _, page) = call(&app, "GET", &format!("/targetgroups?vpcIdentifier={OTHER_VPC}"), None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (_, _, page) = call(&app, "GET", "/targetgroups?maxResults=4", None).await;
    assert_eq!((page["items"].as_array().unwrap().len(), page.get("nextToken").is_some()), (4, true));
}
