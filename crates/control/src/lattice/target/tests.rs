//! Target handler tests (VPCs and the `tg-users` entries are seeded into the store).

use std::sync::Arc;

use serde_json::{Value, json};
use trellis_model::lattice::Target;
use trellis_store::{Store, StoreExt};

use crate::Quotas;
use crate::health::{self, StatusUpdate, TargetRef};
use crate::lattice::target_group::tests::{
    VPC, app_store, arn_path, counter, ip_tg, keys, seed_service, seed_tg_user, seed_vpc,
};
use crate::test_util::call;

fn statuses(list: &Value) -> Vec<(String, Option<u64>, String, Option<String>)> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["port"].as_u64(),
                t["status"].as_str().unwrap().to_owned(),
                t.get("reasonCode").map(|r| r.as_str().unwrap().to_owned()),
            )
        })
        .collect()
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn register_list_deregister_ip_targets() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let tg = ip_tg(&app, "web", VPC).await;
    let tg_id = tg["id"].as_str().unwrap();
    let base = format!("/targetgroups/{}", arn_path(&tg["arn"]));
    let targets = json!({"targets": [
        {"id": "10.0.1.23", "port": 9000}, {"id": "10.0.1.24"}, {"id": "10.1.0.5"}, {"id": "abc"},
        {"id": "fd00::1"}, {"id": "127.0.0.1", "port": 8081}, {"id": "10.0.1.24"},
    ]});
    let (status, _, reg) = call(&app, "POST", &format!("{base}/registertargets"), Some(targets)).await;
    assert_eq!(status, 200, "{reg}");
    assert_eq!(ids(&reg["successful"]), ["10.0.1.23", "10.0.1.24", "127.0.0.1", "10.0.1.24"]);
    assert_eq!(reg["successful"][1]["port"], 8080, "the port defaults to the target group's");
    let failures: Vec<_> = reg["unsuccessful"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_str().unwrap(), f["failureCode"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failures,
        [("10.1.0.5", "UnsupportedTarget"), ("abc", "InvalidTarget"), ("fd00::1", "UnsupportedTarget")]
    );
    assert!(reg["unsuccessful"][0]["failureMessage"].as_str().unwrap().contains("same VPC"));
    assert_eq!(counter(&store, keys().counter("target", tg_id)).await, 3);

    // Not used by any service yet.
    let (status, _, list) = call(&app, "POST", &format!("{base}/listtargets"), Some(json!({}))).await;
    assert_eq!(status, 200, "{list}");
    let unused = Some("TargetGroupNotInUse".to_owned());
    assert_eq!(
        statuses(&list),
        [
            ("10.0.1.23".to_owned(), Some(9000), "UNUSED".to_owned(), unused.clone()),
            ("10.0.1.24".to_owned(), Some(8080), "UNUSED".to_owned(), unused.clone()),
            ("127.0.0.1".to_owned(), Some(8081), "UNUSED".to_owned(), unused),
        ]
    );
    // ListTargets without a body (GET-like clients) reads as no filter.
    let (status, _, _) = call(&app, "POST", &format!("{base}/listtargets"), None).await;
    assert_eq!(status, 200);

    let svc = seed_service(&store, "web", None).await;
    seed_tg_user(&store, tg_id, &svc).await;
    let (_, _, list) =
        call(&app, "POST", &format!("{base}/listtargets"), Some(json!({"targets": [{"id": "10.0.1.23"}]}))).await;
    assert_eq!(statuses(&list), [("10.0.1.23".to_owned(), Some(9000), "INITIAL".to_owned(), None)]);
    let (_, _, list) =
        call(&app, "POST", &format!("{base}/listtargets"), Some(json!({"targets": [{"id": "10.0.1.23", "port": 1}]})))
            .await;
    assert!(list["items"].as_array().unwrap().is_empty());
    call(&app, "PATCH", &base, Some(json!({"healthCheck": {"enabled": false}}))).await;
    let (_, _, list) = call(&app, "POST", &format!("{base}/listtargets?maxResults=1"), Some(json!({}))).await;
    assert_eq!(statuses(&list)[0].2, "UNAVAILABLE");
    assert_eq!(statuses(&list)[0].3.as_deref(), Some("HealthCheckDisabled"));
    let token = list["nextToken"].as_str().unwrap();
    let (_, _, next) =
        call(&app, "POST", &format!("{base}/listtargets?maxResults=1&nextToken={token}"), Some(json!({}))).await;
    assert_eq!(statuses(&next)[0].0, "10.0.1.24");

    // Registering again is idempotent.
    let (_, _, reg) =
        call(&app, "POST", &format!("{base}/registertargets"), Some(json!({"targets": [{"id": "10.0.1.24"}]}))).await;
    assert_eq!((ids(&reg["successful"]), reg["unsuccessful"].as_array().unwrap().len()), (vec!["10.0.1.24"], 0));
    assert_eq!(counter(&store, keys().counter("target", tg_id)).await, 3);

    // Deregistered targets drain: still listed (and counted) until the data plane is done.
    let body = json!({"targets": [{"id": "10.0.1.23", "port": 9000}, {"id": "10.0.9.9"}]});
    let (status, _, dereg) = call(&app, "POST", &format!("{base}/deregistertargets"), Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&dereg["successful"]), ["10.0.1.23", "10.0.9.9"]);
    assert_eq!(dereg["unsuccessful"], json!([]));
    assert_eq!(counter(&store, keys().counter("target", tg_id)).await, 3);
    let (_, _, list) = call(&app, "POST", &format!("{base}/listtargets"), Some(json!({}))).await;
    assert_eq!(statuses(&list).len(), 3);
    assert_eq!(
        statuses(&list)[0],
        ("10.0.1.23".to_owned(), Some(9000), "DRAINING".to_owned(), Some("DeregistrationInProgress".to_owned()))
    );
}

async fn target_record(store: &Arc<dyn Store>, tg: &str, id: &str, port: u16) -> Option<Target> {
    crate::repo::load::<Target>(store.as_ref(), &keys().target(tg, id, port)).await.unwrap().map(|v| v.value)
}

fn at<'a>(tg: &'a str, id: &'a str, port: u16) -> TargetRef<'a> {
    TargetRef { region: "us-east-1", account: "000000000000", target_group_id: tg, target_id: id, port }
}

fn update<'a>(target: TargetRef<'a>, status: &'a str, reason: Option<&'a str>) -> StatusUpdate<'a> {
    StatusUpdate { target, status, reason }
}

/// The composition root's calls, one report at a time.
async fn record_status(store: &Arc<dyn Store>, u: &StatusUpdate<'_>) -> bool {
    let t = &u.target;
    health::record_status(
        store.as_ref(),
        "node-a",
        t.region,
        t.account,
        t.target_group_id,
        t.target_id,
        t.port,
        u.status,
        u.reason,
    )
    .await
    .unwrap()
}

async fn remove_drained(store: &Arc<dyn Store>, t: &TargetRef<'_>) -> bool {
    health::remove_drained(store.as_ref(), "node-a", t.region, t.account, t.target_group_id, t.target_id, t.port)
        .await
        .unwrap()
}

#[tokio::test]
async fn recorded_health_draining_and_removal() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let tg = ip_tg(&app, "web", VPC).await;
    let tg_id = tg["id"].as_str().unwrap();
    let base = format!("/targetgroups/{tg_id}");
    let list = || async {
        let (status, _, list) = call(&app, "POST", &format!("{base}/listtargets"), Some(json!({}))).await;
        assert_eq!(status, 200, "{list}");
        statuses(&list).into_iter().map(|(id, _, s, r)| (id, s, r)).collect::<Vec<_>>()
    };
    let row = |id: &str, s: &str, r: Option<&str>| (id.to_owned(), s.to_owned(), r.map(str::to_owned));
    let targets = json!({"targets": [{"id": "10.0.1.24"}, {"id": "127.0.0.1", "port": 8081}]});
    call(&app, "POST", &format!("{base}/registertargets"), Some(targets)).await;
    let svc = seed_service(&store, "web", None).await;
    seed_tg_user(&store, tg_id, &svc).await;
    assert_eq!(list().await, [row("10.0.1.24", "INITIAL", None), row("127.0.0.1", "INITIAL", None)]);

    // What the data plane reports is shown; a target that is not registered is skipped.
    let (local, remote) = (at(tg_id, "127.0.0.1", 8081), at(tg_id, "10.0.1.24", 8080));
    let reports = [
        update(local, "UNHEALTHY", Some("HealthCheckFailed")),
        update(remote, "UNAVAILABLE", Some("TargetNotLoopback")),
        update(at(tg_id, "10.0.9.9", 8080), "HEALTHY", None),
        update(local, "HEALTHY", None),
    ];
    assert_eq!(health::record_statuses(store.as_ref(), "node-a", &reports).await.unwrap(), 2);
    assert_eq!(
        list().await,
        [row("10.0.1.24", "UNAVAILABLE", Some("TargetNotLoopback")), row("127.0.0.1", "HEALTHY", None)]
    );
    // A page of one still finds its own record.
    let (_, _, first) = call(&app, "POST", &format!("{base}/listtargets?maxResults=1"), Some(json!({}))).await;
    let token = first["nextToken"].as_str().unwrap();
    let (_, _, second) =
        call(&app, "POST", &format!("{base}/listtargets?maxResults=1&nextToken={token}"), Some(json!({}))).await;
    assert_eq!(statuses(&second)[0].2, "HEALTHY");

    // Deregistered: DRAINING whatever was recorded, counted until removed; a repeat keeps the start.
    let dereg = json!({"targets": [{"id": "127.0.0.1", "port": 8081}]});
    call(&app, "POST", &format!("{base}/deregistertargets"), Some(dereg.clone())).await;
    let since = target_record(&store, tg_id, "127.0.0.1", 8081).await.unwrap().draining_since;
    assert!(since.is_some());
    call(&app, "POST", &format!("{base}/deregistertargets"), Some(dereg.clone())).await;
    assert_eq!(target_record(&store, tg_id, "127.0.0.1", 8081).await.unwrap().draining_since, since);
    assert_eq!(list().await[1], row("127.0.0.1", "DRAINING", Some("DeregistrationInProgress")));
    assert_eq!(counter(&store, keys().counter("target", tg_id)).await, 2);
    assert!(record_status(&store, &update(local, "DRAINING", Some("DeregistrationInProgress"))).await);

    // Only a draining target is removed.
    assert!(!remove_drained(&store, &remote).await);
    assert!(target_record(&store, tg_id, "10.0.1.24", 8080).await.is_some());

    // Registered again before it was removed: back in service; the recorded DRAINING is stale.
    let again = json!({"targets": [{"id": "127.0.0.1", "port": 8081}]});
    call(&app, "POST", &format!("{base}/registertargets"), Some(again)).await;
    assert_eq!(target_record(&store, tg_id, "127.0.0.1", 8081).await.unwrap().draining_since, None);
    assert_eq!(list().await[1], row("127.0.0.1", "INITIAL", None));
    assert!(!remove_drained(&store, &local).await, "no longer draining");
    assert_eq!(counter(&store, keys().counter("target", tg_id)).await, 2);

    // Deregistered and drained: gone with its health records, and uncounted.
    call(&app, "POST", &format!("{base}/deregistertargets"), Some(dereg)).await;
    assert!(remove_drained(&store, &local).await);
    assert_eq!(list().await, [row("10.0.1.24", "UNAVAILABLE", Some("TargetNotLoopback"))]);
    assert_eq!(counter(&store, keys().counter("target", tg_id)).await, 1);
    let prefix = format!("{}127.0.0.1/", health::group_prefix("us-east-1", "000000000000", tg_id));
    assert!(store.list_prefix(&prefix, None, 0).await.unwrap().kvs.is_empty(), "its health records are gone");
    assert!(!remove_drained(&store, &local).await, "removing twice is a no-op");
    // A late report does not bring a record back.
    assert!(!record_status(&store, &update(local, "HEALTHY", None)).await);
    assert!(store.list_prefix(&prefix, None, 0).await.unwrap().kvs.is_empty());
}

#[test]
fn the_target_counter_is_named_alike() {
    assert_eq!(health::TARGET_COUNTER, crate::lattice::target_group::TARGETS);
}

#[tokio::test]
async fn quota_per_target_group() {
    let (app, store, _dir) = app_store(Quotas { targets_per_target_group: 2, ..Default::default() });
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let tg = ip_tg(&app, "web", VPC).await;
    let base = format!("/targetgroups/{}", tg["id"].as_str().unwrap());
    let three = json!({"targets": [{"id": "10.0.0.1"}, {"id": "10.0.0.2"}, {"id": "10.0.0.3"}]});
    let (status, code, body) = call(&app, "POST", &format!("{base}/registertargets"), Some(three)).await;
    assert_eq!(
        (status.as_u16(), code.as_deref(), &body["quotaCode"]),
        (402, Some("ServiceQuotaExceededException"), &json!("L-D71303F3"))
    );
    let two = json!({"targets": [{"id": "10.0.0.1"}, {"id": "10.0.0.2"}]});
    let (status, _, _) = call(&app, "POST", &format!("{base}/registertargets"), Some(two.clone())).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(&app, "POST", &format!("{base}/registertargets"), Some(two)).await;
    assert_eq!(status, 200, "re-registering adds nothing");
    let (status, _, _) =
        call(&app, "POST", &format!("{base}/registertargets"), Some(json!({"targets": [{"id": "10.0.0.3"}]}))).await;
    assert_eq!(status, 402);
}

#[tokio::test]
async fn other_target_types() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let (_, _, lam) = call(&app, "POST", "/targetgroups", Some(json!({"name": "func", "type": "LAMBDA"}))).await;
    let base = format!("/targetgroups/{}", lam["id"].as_str().unwrap());
    let f1 = "arn:aws:lambda:us-east-1:000000000000:function:one";
    let body =
        json!({"targets": [{"id": f1}, {"id": "arn:aws:lambda:us-east-1:000000000000:function:two"}, {"id": "nope"}]});
    let (_, _, reg) = call(&app, "POST", &format!("{base}/registertargets"), Some(body)).await;
    assert_eq!(reg["successful"], json!([{"id": f1}]), "a Lambda target has no port");
    let codes: Vec<_> =
        reg["unsuccessful"].as_array().unwrap().iter().map(|f| f["failureCode"].as_str().unwrap()).collect();
    assert_eq!(codes, ["UnsupportedTarget", "InvalidTarget"]);
    let (_, _, list) = call(&app, "POST", &format!("{base}/listtargets"), Some(json!({}))).await;
    assert_eq!(list["items"], json!([{"id": f1, "status": "UNUSED", "reasonCode": "TargetGroupNotInUse"}]));
    let svc = seed_service(&store, "fn-svc", None).await;
    seed_tg_user(&store, lam["id"].as_str().unwrap(), &svc).await;
    let (_, _, list) = call(&app, "POST", &format!("{base}/listtargets"), Some(json!({}))).await;
    assert_eq!(
        (&list["items"][0]["status"], &list["items"][0]["reasonCode"]),
        (&json!("UNAVAILABLE"), &json!("HealthCheckNotSupported"))
    );

    let config = json!({"port": 80, "protocol": "HTTP", "vpcIdentifier": VPC});
    let (_, _, inst) =
        call(&app, "POST", "/targetgroups", Some(json!({"name": "inst", "type": "INSTANCE", "config": config}))).await;
    let base = format!("/targetgroups/{}", inst["id"].as_str().unwrap());
    let (_, _, reg) = call(
        &app,
        "POST",
        &format!("{base}/registertargets"),
        Some(json!({"targets": [{"id": "i-0123456789abcdef0"}, {"id": "10.0.0.1"}]})),
    )
    .await;
    assert_eq!(reg["successful"], json!([{"id": "i-0123456789abcdef0", "port": 80}]));
    assert_eq!(reg["unsuccessful"][0]["failureCode"], "InvalidTarget");

    let config = json!({"port": 80, "protocol": "HTTP", "vpcIdentifier": VPC, "ipAddressType": "IPV6"});
    let (_, _, v6) =
        call(&app, "POST", "/targetgroups", Some(json!({"name": "six", "type": "IP", "config": config}))).await;
    let base = format!("/targetgroups/{}", v6["id"].as_str().unwrap());
    let (_, _, reg) = call(
        &app,
        "POST",
        &format!("{base}/registertargets"),
        Some(json!({"targets": [{"id": "fd00::5"}, {"id": "10.0.0.1"}]})),
    )
    .await;
    assert_eq!(
        (ids(&reg["successful"]), &reg["unsuccessful"][0]["failureCode"]),
        (vec!["fd00::5"], &json!("UnsupportedTarget"))
    );
}

#[tokio::test]
async fn malformed_calls() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let tg = ip_tg(&app, "web", VPC).await;
    let base = format!("/targetgroups/{}", tg["id"].as_str().unwrap());
    let many: Vec<_> = (0..101).map(|i| json!({"id": format!("10.0.0.{}", i % 250)})).collect();
    let cases = [
        ("registertargets", json!({"targets": []}), "targets"),
        ("registertargets", json!({}), "targets"),
        ("registertargets", json!({"targets": many}), "targets"),
        ("registertargets", json!({"targets": [{"id": ""}]}), "targets[0].id"),
        ("registertargets", json!({"targets": [{"id": "10.0.0.1", "port": 0}]}), "targets[0].port"),
        ("deregistertargets", json!({"targets": [{"port": 80}]}), "targets[0].id"),
        (
            "listtargets",
            json!({"targets": (0..21).map(|i| json!({"id": format!("10.0.0.{i}")})).collect::<Vec<_>>()}),
            "targets",
        ),
    ];
    for (op, body, member) in cases {
        let (status, _, resp) = call(&app, "POST", &format!("{base}/{op}"), Some(body.clone())).await;
        assert_eq!(
            (status.as_u16(), resp["fieldList"][0]["name"].as_str()),
            (400, Some(member)),
            "{op} {body} → {resp}"
        );
    }
    let (status, _, body) = call(
        &app,
        "POST",
        "/targetgroups/tg-0123456789abcdef0/registertargets",
        Some(json!({"targets": [{"id": "10.0.0.1"}]})),
    )
    .await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("TARGET_GROUP")));
    let (status, _, _) = call(&app, "POST", &format!("{base}/listtargets?maxResults=101"), Some(json!({}))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn deleting_the_group_deletes_its_targets() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    let tg = ip_tg(&app, "web", VPC).await;
    let id = tg["id"].as_str().unwrap();
    call(&app, "POST", &format!("/targetgroups/{id}/registertargets"), Some(json!({"targets": [{"id": "10.0.0.1"}]})))
        .await;
    let (status, _, _) = call(&app, "DELETE", &format!("/targetgroups/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(&app, "POST", &format!("/targetgroups/{id}/listtargets"), Some(json!({}))).await;
    assert_eq!(status, 404);
    let left = store.as_ref().range(trellis_store::RangeRequest {
        start: keys().targets(id),
        end: Some(trellis_store::prefix_end(&keys().targets(id))),
        ..Default::default()
    });
    assert!(left.await.unwrap().kvs.is_empty());
    assert_eq!(counter(&store, keys().counter("target", id)).await, 0);
}
