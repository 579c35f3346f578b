//! Tests of the tag operations.

use serde_json::{Value, json};
use trellis_store::Store;

use crate::keys::Keys;
use crate::repo::{Attempts, Tx};
use crate::test_util::{app, app_and_store, call};

const SVC: &str = "svc-0123456789abcdef0";
const LISTENER: &str = "listener-0123456789abcdef0";
const RULE: &str = "rule-0123456789abcdef0";
const DEFAULT_RULE: &str = "rule-0fffffffffffffff0";

fn keys() -> Keys {
    Keys::new("us-east-1", "000000000000")
}

fn arn(resource: &str) -> String {
    format!("arn:aws:vpc-lattice:us-east-1:000000000000:{resource}")
}

fn path(arn: &str) -> String {
    format!("/tags/{}", arn.replace(':', "%3A").replace('/', "%2F"))
}

async fn seed(store: &dyn Store, key: String, value: Value) {
    let mut tx = Tx::default();
    tx.put(key, &value);
    assert!(Attempts::default().commit(store, tx).await.unwrap());
}

async fn tags(app: &axum::Router, arn: &str) -> Value {
    let (status, _, body) = call(app, "GET", &path(arn), None).await;
    assert_eq!(status, 200, "{body}");
    body["tags"].clone()
}

#[tokio::test]
async fn tag_untag_list_a_service_network() {
    let (app, _dir) = app();
    let (_, _, sn) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "net", "tags": {"a": "1"}}))).await;
    let sn_arn = sn["arn"].as_str().unwrap().to_owned();
    assert_eq!(tags(&app, &sn_arn).await, json!({"a": "1"}));
    let (status, _, body) =
        call(&app, "POST", &path(&sn_arn), Some(json!({"tags": {"a": "3", "b": "2", "c": ""}}))).await;
    assert_eq!((status.as_u16(), &body), (200, &json!({})));
    assert_eq!(tags(&app, &sn_arn).await, json!({"a": "3", "b": "2", "c": ""}));
    let (status, _, body) =
        call(&app, "DELETE", &format!("{}?tagKeys=a&tagKeys=c&tagKeys=zz", path(&sn_arn)), None).await;
    assert_eq!((status.as_u16(), &body), (200, &json!({})));
    assert_eq!(tags(&app, &sn_arn).await, json!({"b": "2"}));
    let (status, _, _) = call(&app, "DELETE", &format!("{}?tagKeys=nothere", path(&sn_arn)), None).await;
    assert_eq!(status, 200);
    call(&app, "DELETE", &format!("{}?tagKeys=b", path(&sn_arn)), None).await;
    // An empty map is still emitted.
    let (_, _, body) = call(&app, "GET", &path(&sn_arn), None).await;
    assert_eq!(body, json!({"tags": {}}));
    // Tagging leaves the resource otherwise as it was.
    let (_, _, got) = call(&app, "GET", &format!("/servicenetworks/{}", sn["id"].as_str().unwrap()), None).await;
    assert_eq!(got["name"], "net");
}

#[tokio::test]
async fn bad_requests() {
    let (app, _dir) = app();
    let (_, _, sn) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "net"}))).await;
    let sn_arn = sn["arn"].as_str().unwrap().to_owned();
    let field = |body: &Value| body["fieldList"][0]["name"].as_str().unwrap_or_default().to_owned();
    for bad in [
        "nope",
        "arn:aws:ec2:us-east-1:000000000000:vpc/vpc-0123456789abcdef0",
        "arn:aws:vpc-lattice:us-east-1:000000000000:servicenetwork/sn-short",
        "arn:aws:vpc-lattice:us-east-1:000000000000:resourcegateway/rgw-0123456789abcdef0",
        "arn:aws:vpc-lattice:us-east-1:000000000000:listener/listener-0123456789abcdef0",
    ] {
        let (status, code, body) = call(&app, "GET", &path(bad), None).await;
        assert_eq!(
            (status.as_u16(), code.as_deref(), field(&body)),
            (400, Some("ValidationException"), "resourceArn".into()),
            "{bad}"
        );
    }
    let elsewhere = sn_arn.replace("us-east-1", "eu-west-1");
    let (status, _, body) = call(&app, "GET", &path(&elsewhere), None).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("SERVICE_NETWORK")));
    let missing = arn("servicenetwork/sn-0123456789abcdef0");
    let (status, code, body) = call(&app, "POST", &path(&missing), Some(json!({"tags": {"a": "b"}}))).await;
    assert_eq!((status.as_u16(), code.as_deref()), (404, Some("ResourceNotFoundException")));
    assert_eq!(body["resourceId"], json!(missing));
    let (status, _, body) = call(&app, "POST", &path(&sn_arn), Some(json!({}))).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "tags".into()));
    let (status, _, body) = call(&app, "POST", &path(&sn_arn), Some(json!({"tags": {"aws:x": "1"}}))).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "tags".into()));
    let (status, _, body) = call(&app, "POST", &path(&sn_arn), Some(json!({"tags": {"k": "v".repeat(257)}}))).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "tags".into()));
    let (status, _, body) = call(&app, "DELETE", &path(&sn_arn), None).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "tagKeys".into()));
    let (status, _, body) = call(&app, "DELETE", &format!("{}?tagKeys=", path(&sn_arn)), None).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "tagKeys".into()));
}

#[tokio::test]
async fn at_most_200_tags_after_merging() {
    let (app, _dir) = app();
    let (_, _, sn) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "net"}))).await;
    let sn_arn = sn["arn"].as_str().unwrap().to_owned();
    let batch = |from: usize, n: usize| -> Value { (from..from + n).map(|i| (format!("k{i}"), json!("v"))).collect() };
    let (status, _, _) = call(&app, "POST", &path(&sn_arn), Some(json!({"tags": batch(0, 150)}))).await;
    assert_eq!(status, 200);
    // Overwriting existing keys does not count twice.
    let (status, _, _) = call(&app, "POST", &path(&sn_arn), Some(json!({"tags": batch(100, 100)}))).await;
    assert_eq!(status, 200);
    let (status, _, body) = call(&app, "POST", &path(&sn_arn), Some(json!({"tags": batch(200, 1)}))).await;
    assert_eq!((status.as_u16(), &body["fieldList"][0]["name"]), (400, &json!("tags")));
    assert_eq!(tags(&app, &sn_arn).await.as_object().unwrap().len(), 200);
}

/// Services, listeners, rules, target groups and associations are made by other modules;
/// their records are seeded directly here.
#[tokio::test]
async fn every_kind_is_taggable() {
    let (app, store, _dir) = app_and_store();
    let k = keys();
    let records = [
        (k.res(trellis_model::Kind::Service, SVC), arn(&format!("service/{SVC}")), json!({"id": SVC})),
        (
            k.listener(SVC, LISTENER),
            arn(&format!("service/{SVC}/listener/{LISTENER}")),
            json!({"id": LISTENER, "serviceId": SVC, "defaultRuleId": DEFAULT_RULE}),
        ),
        (
            k.rule(LISTENER, RULE),
            arn(&format!("service/{SVC}/listener/{LISTENER}/rule/{RULE}")),
            json!({"id": RULE, "serviceId": SVC, "listenerId": LISTENER}),
        ),
        (
            k.res(trellis_model::Kind::TargetGroup, "tg-0123456789abcdef0"),
            arn("targetgroup/tg-0123456789abcdef0"),
            json!({}),
        ),
        (
            k.res(trellis_model::Kind::ServiceNetworkVpcAssociation, "snva-0123456789abcdef0"),
            arn("servicenetworkvpcassociation/snva-0123456789abcdef0"),
            json!({}),
        ),
        (
            k.res(trellis_model::Kind::ServiceNetworkServiceAssociation, "snsa-0123456789abcdef0"),
            arn("servicenetworkserviceassociation/snsa-0123456789abcdef0"),
            json!({}),
        ),
        (
            k.res(trellis_model::Kind::AccessLogSubscription, "als-0123456789abcdef0"),
            arn("accesslogsubscription/als-0123456789abcdef0"),
            json!({"tags": {"old": "x"}}),
        ),
    ];
    for (key, arn, mut record) in records {
        record["name"] = json!("seeded");
        seed(store.as_ref(), key.clone(), record).await;
        let (status, _, body) = call(&app, "POST", &path(&arn), Some(json!({"tags": {"env": "dev"}}))).await;
        assert_eq!(status, 200, "{arn}: {body}");
        assert_eq!(tags(&app, &arn).await["env"], "dev", "{arn}");
        let (status, _, _) = call(&app, "DELETE", &format!("{}?tagKeys=env", path(&arn)), None).await;
        assert_eq!(status, 200);
        assert!(tags(&app, &arn).await.get("env").is_none(), "{arn}");
        // The rest of the record is untouched.
        let stored: Value = crate::repo::load(store.as_ref(), &key).await.unwrap().unwrap().value;
        assert_eq!(stored["name"], "seeded");
    }
    assert_eq!(tags(&app, &arn("accesslogsubscription/als-0123456789abcdef0")).await, json!({"old": "x"}));
    // A rule named under another service, and the listener's default rule (no record of
    // its own), are not there.
    let other = "svc-0aaaaaaaaaaaaaaa0";
    for missing in [
        arn(&format!("service/{other}/listener/{LISTENER}/rule/{RULE}")),
        arn(&format!("service/{SVC}/listener/{LISTENER}/rule/{DEFAULT_RULE}")),
    ] {
        let (status, _, body) = call(&app, "GET", &path(&missing), None).await;
        assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("RULE")), "{missing}");
    }
    let (status, _, body) = call(&app, "GET", &path(&arn(&format!("service/{other}/listener/{LISTENER}"))), None).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("LISTENER")));
}

/// Through the other modules' create and delete operations.
#[tokio::test]
async fn tags_on_api_made_resources() {
    let (app, _dir) = app();
    let (status, _, svc) = call(&app, "POST", "/services", Some(json!({"name": "web", "tags": {"a": "1"}}))).await;
    assert_eq!(status, 201, "{svc}");
    let svc_arn = svc["arn"].as_str().unwrap().to_owned();
    assert_eq!(tags(&app, &svc_arn).await, json!({"a": "1"}));
    let (status, _, tg) = call(&app, "POST", "/targetgroups", Some(json!({"name": "web-tg", "type": "LAMBDA"}))).await;
    assert_eq!(status, 201, "{tg}");
    let tg_arn = tg["arn"].as_str().unwrap().to_owned();
    call(&app, "POST", &path(&tg_arn), Some(json!({"tags": {"t": "g"}}))).await;
    assert_eq!(tags(&app, &tg_arn).await, json!({"t": "g"}));
    let (status, _, listener) = call(
        &app,
        "POST",
        &format!("/services/{}/listeners", svc["id"].as_str().unwrap()),
        Some(json!({"name": "http-80", "protocol": "HTTP", "port": 80, "defaultAction": {"fixedResponse": {"statusCode": 404}}})),
    )
    .await;
    assert_eq!(status, 201, "{listener}");
    let listener_arn = listener["arn"].as_str().unwrap().to_owned();
    call(&app, "POST", &path(&listener_arn), Some(json!({"tags": {"l": "1"}}))).await;
    assert_eq!(tags(&app, &listener_arn).await, json!({"l": "1"}));
    let rules =
        format!("/services/{}/listeners/{}/rules", svc["id"].as_str().unwrap(), listener["id"].as_str().unwrap());
    let (status, _, rule) = call(
        &app,
        "POST",
        &rules,
        Some(json!({
            "name": "api", "priority": 10,
            "match": {"httpMatch": {"pathMatch": {"match": {"prefix": "/api"}}}},
            "action": {"fixedResponse": {"statusCode": 404}},
            "tags": {"r": "1"},
        })),
    )
    .await;
    assert_eq!(status, 201, "{rule}");
    let rule_arn = rule["arn"].as_str().unwrap().to_owned();
    assert_eq!(tags(&app, &rule_arn).await, json!({"r": "1"}));
    call(&app, "DELETE", &format!("{}?tagKeys=r", path(&rule_arn)), None).await;
    assert_eq!(tags(&app, &rule_arn).await, json!({}));
    // The default rule has an ARN but no record of its own to carry tags.
    let (_, _, listed) = call(&app, "GET", &rules, None).await;
    let default = listed["items"].as_array().unwrap().iter().find(|r| r["isDefault"] == json!(true)).unwrap();
    let (status, _, body) = call(&app, "GET", &path(default["arn"].as_str().unwrap()), None).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("RULE")));
}
