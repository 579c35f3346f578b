//! Health records on a real SQLite store, targets seeded straight into it.

use std::sync::Arc;

use trellis_model::Timestamp;
use trellis_model::lattice::Target;
use trellis_store::{Op, Store, StoreExt, Txn};

use super::*;

const TG: &str = "tg-0123456789abcdef0";

fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let (_, store, dir) = crate::test_util::app_and_store();
    (store, dir)
}

async fn seed(store: &Arc<dyn Store>, id: &str, port: u16) {
    let target = Target { id: id.to_owned(), port, registered_at: Timestamp(1), draining_since: None };
    let key = Keys::new("us-east-1", "000000000000").target(TG, id, port);
    let txn = Txn { success: vec![Op::Put(key, serde_json::to_vec(&target).unwrap())], ..Default::default() };
    assert!(store.txn(txn).await.unwrap().succeeded);
}

fn at(id: &str, port: u16) -> TargetRef<'_> {
    TargetRef { region: "us-east-1", account: "000000000000", target_group_id: TG, target_id: id, port }
}

#[tokio::test]
async fn bad_input_is_refused() {
    let (store, _dir) = store();
    seed(&store, "127.0.0.1", 80).await;
    let ok = StatusUpdate { target: at("127.0.0.1", 80), status: "HEALTHY", reason: None };
    for node in ["", "a/b", &"n".repeat(129)] {
        assert!(record_statuses(store.as_ref(), node, &[ok]).await.is_err(), "{node:?}");
    }
    let err =
        record_status(store.as_ref(), "node-a", "us-east-1", "000000000000", TG, "127.0.0.1", 80, "healthy", None)
            .await
            .unwrap_err();
    assert!(err.to_string().contains("\"healthy\" is not a target status"), "{err}");
    assert!(store.list_prefix("r/us-east-1/000000000000/health/", None, 0).await.unwrap().kvs.is_empty());
}

#[tokio::test]
async fn batches_span_transactions_and_the_last_word_wins() {
    let (store, _dir) = store();
    let ids: Vec<String> = (1..=130).map(|i| format!("127.0.0.{i}")).collect();
    for id in &ids {
        seed(&store, id, 8080).await;
    }
    let mut updates: Vec<_> =
        ids.iter().map(|id| StatusUpdate { target: at(id, 8080), status: "INITIAL", reason: None }).collect();
    updates.push(StatusUpdate { target: at(&ids[0], 8080), status: "UNHEALTHY", reason: Some("HealthCheckFailed") });
    assert_eq!(record_statuses(store.as_ref(), "node-a", &updates).await.unwrap(), 130);
    let first = store.get(&key(&at(&ids[0], 8080), "node-a")).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<Recorded>(&first.value).unwrap(),
        Recorded { status: "UNHEALTHY".into(), reason_code: Some("HealthCheckFailed".into()), drained: false }
    );
    assert_eq!(first.value, br#"{"status":"UNHEALTHY","reasonCode":"HealthCheckFailed"}"#);
}

#[tokio::test]
async fn recorded_reads_any_node_and_ids_with_slashes() {
    let (store, _dir) = store();
    let alb = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/0123456789abcdef";
    for (id, port) in [("127.0.0.1", 80), ("127.0.0.1", 81), ("127.0.0.2", 80), (alb, 443)] {
        seed(&store, id, port).await;
    }
    let healthy = |id, port| StatusUpdate { target: at(id, port), status: "HEALTHY", reason: None };
    record_statuses(store.as_ref(), "node-b", &[healthy("127.0.0.1", 81), healthy(alb, 443)]).await.unwrap();
    let unhealthy = StatusUpdate { status: "UNHEALTHY", ..healthy("127.0.0.1", 81) };
    record_statuses(store.as_ref(), "node-a", &[unhealthy, healthy("127.0.0.2", 80)]).await.unwrap();

    let got = recorded(
        store.as_ref(),
        "us-east-1",
        "000000000000",
        TG,
        &[("127.0.0.1", 80), ("127.0.0.1", 81), ("127.0.0.2", 80), (alb, 443)],
    )
    .await
    .unwrap();
    let statuses: Vec<_> = got.iter().map(|r| r.as_ref().map(|r| r.status.as_str())).collect();
    assert_eq!(statuses, [None, Some("UNHEALTHY"), Some("HEALTHY"), Some("HEALTHY")], "node-a comes first by name");
    // A page of one reads only its own target's records.
    let one = recorded(store.as_ref(), "us-east-1", "000000000000", TG, &[("127.0.0.2", 80)]).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].as_ref().unwrap().status, "HEALTHY");
    assert!(recorded(store.as_ref(), "us-east-1", "000000000000", TG, &[]).await.unwrap().is_empty());
}

/// Writes a live node's record (as the composition root does, without the lease).
async fn node_record(store: &Arc<dyn Store>, node: &str, roles: &[&str]) {
    let value = serde_json::to_vec(&serde_json::json!({ "node": node, "roles": roles })).unwrap();
    let txn = Txn { success: vec![Op::Put(format!("{NODE_PREFIX}{node}"), value)], ..Default::default() };
    store.txn(txn).await.unwrap();
}

#[tokio::test]
async fn once_nodes_are_live_only_their_records_count() {
    let (store, _dir) = store();
    seed(&store, "127.0.0.1", 80).await;
    let healthy = StatusUpdate { target: at("127.0.0.1", 80), status: "HEALTHY", reason: None };
    let unhealthy = StatusUpdate { status: "UNHEALTHY", ..healthy };
    // node-a (first by name) died with an old record; node-b is live and sees it unhealthy.
    record_statuses(store.as_ref(), "node-a", &[healthy]).await.unwrap();
    record_statuses(store.as_ref(), "node-b", &[unhealthy]).await.unwrap();
    node_record(&store, "node-b", &["proxy", "tasks"]).await;
    node_record(&store, "api-1", &["api"]).await;
    let got = recorded(store.as_ref(), "us-east-1", "000000000000", TG, &[("127.0.0.1", 80)]).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().status, "UNHEALTHY", "a dead node's record is stale");
}

#[tokio::test]
async fn a_draining_target_goes_once_every_live_proxy_node_has_drained_it() {
    let (store, _dir) = store();
    let target =
        Target { id: "127.0.0.1".into(), port: 80, registered_at: Timestamp(1), draining_since: Some(Timestamp(2)) };
    let key = Keys::new("us-east-1", "000000000000").target(TG, "127.0.0.1", 80);
    let counter = Keys::new("us-east-1", "000000000000").counter(TARGET_COUNTER, TG);
    let ops = vec![Op::Put(key.clone(), serde_json::to_vec(&target).unwrap()), Op::Put(counter, b"1".to_vec())];
    store.txn(Txn { success: ops, ..Default::default() }).await.unwrap();
    for node in ["node-a", "node-b"] {
        node_record(&store, node, &["proxy"]).await;
    }
    node_record(&store, "api-1", &["api"]).await;
    let drained = |node: &'static str| {
        let store = store.clone();
        async move { remove_drained(store.as_ref(), node, "us-east-1", "000000000000", TG, "127.0.0.1", 80).await }
    };
    assert!(!drained("node-a").await.unwrap(), "node-b may still have requests in flight");
    assert!(store.get(&key).await.unwrap().is_some());
    assert!(!drained("node-a").await.unwrap(), "saying it again changes nothing");
    assert!(drained("node-b").await.unwrap(), "every live proxy node has drained it");
    assert!(store.get(&key).await.unwrap().is_none());
    let left = store.list_prefix(&group_prefix("us-east-1", "000000000000", TG), None, 0).await.unwrap();
    assert!(left.kvs.is_empty(), "its health records go with it");
}
