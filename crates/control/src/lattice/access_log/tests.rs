//! Tests of the access log subscription operations.

use serde_json::{Value, json};

use crate::keys::{Keys, rel};
use crate::repo::{Attempts, Tx};
use crate::test_util::{app, app_and_store, call};

const LOGS: &str = "arn:aws:logs:us-east-1:000000000000:log-group:/lattice/net";
const LOGS_2: &str = "arn:aws:logs:us-east-1:000000000000:log-group:other:*";
const S3: &str = "arn:aws:s3:::my-log-bucket/lattice";
const FIREHOSE: &str = "arn:aws:firehose:us-east-1:000000000000:deliverystream/lattice-logs";

fn enc(arn: &str) -> String {
    arn.replace(':', "%3A").replace('/', "%2F")
}

fn field(body: &Value) -> String {
    body["fieldList"][0]["name"].as_str().unwrap_or_default().to_owned()
}

async fn subscribe(app: &axum::Router, resource: &str, destination: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"resourceIdentifier": resource, "destinationArn": destination});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, _, out) = call(app, "POST", "/accesslogsubscriptions", Some(body)).await;
    (status.as_u16(), out)
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let (app, _dir) = app();
    let (_, _, sn) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "net"}))).await;
    let (sn_id, sn_arn) = (sn["id"].as_str().unwrap().to_owned(), sn["arn"].as_str().unwrap().to_owned());
    let (status, als) = subscribe(&app, &sn_arn, LOGS, json!({"tags": {"k": "v"}})).await;
    assert_eq!(status, 201, "{als}");
    let id = als["id"].as_str().unwrap().to_owned();
    assert_eq!(
        als,
        json!({
            "id": id,
            "arn": format!("arn:aws:vpc-lattice:us-east-1:000000000000:accesslogsubscription/{id}"),
            "resourceId": sn_id,
            "resourceArn": sn_arn,
            "serviceNetworkLogType": "SERVICE",
            "destinationArn": LOGS,
        })
    );
    let (status, _, got) =
        call(&app, "GET", &format!("/accesslogsubscriptions/{}", enc(als["arn"].as_str().unwrap())), None).await;
    assert_eq!(status, 200);
    assert_eq!((&got["destinationArn"], &got["serviceNetworkLogType"]), (&json!(LOGS), &json!("SERVICE")));
    assert!(got["createdAt"].is_string() && got["lastUpdatedAt"].is_string() && got.get("tags").is_none());
    // Tags given at create are the subscription's.
    let (_, _, tags) = call(&app, "GET", &format!("/tags/{}", enc(als["arn"].as_str().unwrap())), None).await;
    assert_eq!(tags, json!({"tags": {"k": "v"}}));

    // One per destination type and log type.
    let (status, body) = subscribe(&app, &sn_id, LOGS_2, json!({})).await;
    assert_eq!(
        (status, &body["resourceId"], &body["resourceType"]),
        (409, &json!(id), &json!("ACCESS_LOG_SUBSCRIPTION"))
    );
    let (status, body) = subscribe(&app, &sn_id, LOGS_2, json!({"serviceNetworkLogType": "RESOURCE"})).await;
    assert_eq!((status, &body["serviceNetworkLogType"]), (201, &json!("RESOURCE")));
    assert_eq!(subscribe(&app, &sn_id, S3, json!({})).await.0, 201);
    assert_eq!(subscribe(&app, &sn_id, FIREHOSE, json!({})).await.0, 201);

    let (status, _, list) =
        call(&app, "GET", &format!("/accesslogsubscriptions?resourceIdentifier={}", enc(&sn_arn)), None).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(list.get("nextToken").is_none());
    let mine = items.iter().find(|i| i["id"] == json!(id)).unwrap();
    assert_eq!(mine, &got);
    // Pages of two.
    let (_, _, page) =
        call(&app, "GET", &format!("/accesslogsubscriptions?resourceIdentifier={sn_id}&maxResults=2"), None).await;
    let token = page["nextToken"].as_str().unwrap().to_owned();
    let (_, _, rest) = call(
        &app,
        "GET",
        &format!("/accesslogsubscriptions?resourceIdentifier={sn_id}&maxResults=2&nextToken={token}"),
        None,
    )
    .await;
    assert_eq!((page["items"].as_array().unwrap().len(), rest["items"].as_array().unwrap().len()), (2, 2));
    assert!(rest.get("nextToken").is_none());

    // Updates keep to the same rule, not counting the subscription itself.
    let url = format!("/accesslogsubscriptions/{id}");
    let (status, _, body) = call(&app, "PATCH", &url, Some(json!({"destinationArn": S3}))).await;
    assert_eq!((status.as_u16(), body["resourceType"].as_str()), (409, Some("ACCESS_LOG_SUBSCRIPTION")));
    let (status, _, body) = call(
        &app,
        "PATCH",
        &url,
        Some(json!({"destinationArn": "arn:aws:logs:us-east-1:000000000000:log-group:moved"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": id, "arn": als["arn"], "resourceId": sn_id, "resourceArn": sn_arn, "destinationArn": "arn:aws:logs:us-east-1:000000000000:log-group:moved"})
    );
    let (_, _, got) = call(&app, "GET", &url, None).await;
    assert_eq!(got["destinationArn"], body["destinationArn"]);

    let (status, _, body) = call(&app, "DELETE", &url, None).await;
    assert_eq!((status.as_u16(), body), (204, Value::Null));
    for method in ["GET", "DELETE"] {
        let (status, _, body) = call(&app, method, &url, None).await;
        assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("ACCESS_LOG_SUBSCRIPTION")));
    }
    let (_, _, list) = call(&app, "GET", &format!("/accesslogsubscriptions?resourceIdentifier={sn_id}"), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    // The freed slot can be taken again.
    assert_eq!(subscribe(&app, &sn_id, LOGS, json!({})).await.0, 201);
}

#[tokio::test]
async fn bad_requests() {
    let (app, _dir) = app();
    let (_, _, sn) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "net"}))).await;
    let sn_id = sn["id"].as_str().unwrap().to_owned();
    for bad in [
        "arn:aws:logs:us-east-1:000000000000:loggroup:x",
        "arn:aws:logs:us-east-1:12:log-group:name",
        "arn:aws:logs:us-east-1:000000000000:log-group:",
        "arn:aws:s3:us-east-1:000000000000:bucket",
        "arn:aws:s3:::Bad_Bucket",
        "arn:aws:firehose:us-east-1:000000000000:stream/x",
        "arn:aws:sqs:us-east-1:000000000000:queue-name",
        "not-an-arn-at-all-really",
    ] {
        let (status, body) = subscribe(&app, &sn_id, bad, json!({})).await;
        assert_eq!((status, field(&body)), (400, "destinationArn".into()), "{bad}");
    }
    let (status, body) = subscribe(&app, "tg-0123456789abcdef0", LOGS, json!({})).await;
    assert_eq!((status, field(&body)), (400, "resourceIdentifier".into()));
    let (status, body) = subscribe(&app, &sn_id, LOGS, json!({"serviceNetworkLogType": "BOTH"})).await;
    assert_eq!((status, field(&body)), (400, "serviceNetworkLogType".into()));
    let (status, body) = subscribe(&app, &sn_id, LOGS, json!({"tags": {"aws:k": "v"}})).await;
    assert_eq!((status, field(&body)), (400, "tags".into()));
    let (status, _, body) =
        call(&app, "POST", "/accesslogsubscriptions", Some(json!({"resourceIdentifier": sn_id}))).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "destinationArn".into()));
    let (status, body) = subscribe(&app, "sn-0123456789abcdef0", LOGS, json!({})).await;
    assert_eq!((status, &body["resourceType"]), (404, &json!("SERVICE_NETWORK")));
    let (status, body) = subscribe(&app, "svc-0123456789abcdef0", LOGS, json!({})).await;
    assert_eq!((status, &body["resourceType"]), (404, &json!("SERVICE")));

    let (status, _, body) = call(&app, "GET", "/accesslogsubscriptions", None).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "resourceIdentifier".into()));
    let (status, _, body) =
        call(&app, "GET", "/accesslogsubscriptions?resourceIdentifier=vpc-0123456789abcdef0", None).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "resourceIdentifier".into()));
    let (status, _, body) =
        call(&app, "GET", &format!("/accesslogsubscriptions?resourceIdentifier={sn_id}&maxResults=101"), None).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "maxResults".into()));
    // A resource that is not there has no subscriptions.
    let (status, _, body) =
        call(&app, "GET", "/accesslogsubscriptions?resourceIdentifier=svc-0123456789abcdef0", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"items": []})));

    let (status, _, body) = call(&app, "GET", "/accesslogsubscriptions/als-bad", None).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "accessLogSubscriptionIdentifier".into()));
    let (status, _, body) =
        call(&app, "PATCH", "/accesslogsubscriptions/als-0123456789abcdef0", Some(json!({"destinationArn": LOGS})))
            .await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("ACCESS_LOG_SUBSCRIPTION")));
    let (status, _, body) =
        call(&app, "PATCH", "/accesslogsubscriptions/als-0123456789abcdef0", Some(json!({"destinationArn": "x"})))
            .await;
    assert_eq!((status.as_u16(), field(&body)), (400, "destinationArn".into()));
}

#[tokio::test]
async fn client_tokens_and_cascade() {
    let (app, store, _dir) = app_and_store();
    let (_, _, sn) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "net"}))).await;
    let sn_id = sn["id"].as_str().unwrap().to_owned();
    let (status, first) = subscribe(&app, &sn_id, S3, json!({"clientToken": "tok-1"})).await;
    assert_eq!(status, 201);
    let (status, again) = subscribe(&app, &sn_id, S3, json!({"clientToken": "tok-1"})).await;
    assert_eq!((status, &again), (201, &first));
    let (status, body) = subscribe(&app, &sn_id, FIREHOSE, json!({"clientToken": "tok-1"})).await;
    assert_eq!((status, body["resourceId"].as_str()), (409, first["id"].as_str()));
    let keys = Keys::new("us-east-1", "000000000000");
    let als_id = first["id"].as_str().unwrap();
    assert!(
        crate::repo::load_index(store.as_ref(), &keys.reference(rel::ALS, &sn_id, als_id)).await.unwrap().is_some()
    );
    // Deleting the service network takes its subscriptions and their index along.
    let (status, _, _) = call(&app, "DELETE", &format!("/servicenetworks/{sn_id}"), None).await;
    assert_eq!(status, 204);
    let (status, _, _) = call(&app, "GET", &format!("/accesslogsubscriptions/{als_id}"), None).await;
    assert_eq!(status, 404);
    assert!(crate::repo::list_index(store.as_ref(), &keys.references(rel::ALS, &sn_id)).await.unwrap().is_empty());
}

/// Services are made by another module; one is seeded directly here.
#[tokio::test]
async fn services_have_no_log_type() {
    let (app, store, _dir) = app_and_store();
    let svc = "svc-0123456789abcdef0";
    let svc_arn = format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{svc}");
    let mut tx = Tx::default();
    tx.put(
        Keys::new("us-east-1", "000000000000").res(trellis_model::Kind::Service, svc),
        &json!({"id": svc, "arn": svc_arn}),
    );
    assert!(Attempts::default().commit(store.as_ref(), tx).await.unwrap());
    let (status, body) = subscribe(&app, svc, LOGS, json!({"serviceNetworkLogType": "SERVICE"})).await;
    assert_eq!((status, field(&body)), (400, "serviceNetworkLogType".into()));
    let (status, body) = subscribe(&app, &svc_arn, LOGS, json!({})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((&body["resourceId"], &body["resourceArn"]), (&json!(svc), &json!(svc_arn)));
    assert!(body.get("serviceNetworkLogType").is_none());
    assert_eq!(subscribe(&app, svc, LOGS_2, json!({})).await.0, 409);
    let (_, _, list) =
        call(&app, "GET", &format!("/accesslogsubscriptions?resourceIdentifier={}", enc(&svc_arn)), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("serviceNetworkLogType").is_none());
}

/// Through the other modules' create and delete operations.
#[tokio::test]
async fn service_subscriptions_go_with_the_service() {
    let (app, _dir) = app();
    let (status, _, svc) = call(&app, "POST", "/services", Some(json!({"name": "web"}))).await;
    assert_eq!(status, 201, "{svc}");
    let id = svc["id"].as_str().unwrap();
    let (status, als) = subscribe(&app, svc["arn"].as_str().unwrap(), FIREHOSE, json!({})).await;
    assert_eq!((status, &als["resourceArn"]), (201, &svc["arn"]));
    let (status, _, _) = call(&app, "DELETE", &format!("/services/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, _, _) =
        call(&app, "GET", &format!("/accesslogsubscriptions/{}", als["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 404);
}
