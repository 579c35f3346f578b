//! Test support for services, listeners and rules: an app whose store the test can also reach,
//! target groups written straight into it (so these tests do not depend on the target-group
//! API), and readers of the reference bookkeeping.

use std::sync::Arc;

use axum::Router;
use serde_json::{Value, json};
use trellis_model::Kind;
use trellis_model::lattice::{Status, TargetGroup, TargetGroupConfig};
use trellis_store::Store;

use crate::Quotas;
use crate::keys::{Keys, rel};
use crate::repo::{self, Attempts, Tx};
use crate::test_util::call;

/// A test app, its store, and the temp dir holding it.
pub(crate) struct TestApp {
    pub(crate) app: Router,
    pub(crate) store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub(crate) fn new() -> Self {
        Self::with(Quotas::default())
    }

    pub(crate) fn with(quotas: Quotas) -> Self {
        let (app, store, dir) = crate::test_util::app_and_store_with(quotas);
        Self { app, store, _dir: dir }
    }

    pub(crate) fn keys() -> Keys {
        Keys::new("us-east-1", "000000000000")
    }

    /// Sends a request; answers (status, error code, body).
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Option<String>, Value) {
        let (status, code, body) = call(&self.app, method, path, body).await;
        (status.as_u16(), code, body)
    }

    /// A target group of `protocol` (`HTTP`, `TCP`, …) and `version`, written into the store.
    pub(crate) async fn tg(&self, protocol: &str, version: &str) -> String {
        let id = Kind::TargetGroup.new_id();
        let tg = TargetGroup {
            arn: trellis_model::Arn::lattice("us-east-1", "000000000000", Kind::TargetGroup, &[], &id),
            id: id.clone(),
            name: format!("tg{}", &id[3..12]),
            target_type: "IP".into(),
            config: Some(TargetGroupConfig {
                port: Some(8080),
                protocol: Some(protocol.into()),
                protocol_version: Some(version.into()),
                vpc_identifier: Some("vpc-0123456789abcdef0".into()),
                ..Default::default()
            }),
            status: Status::Active,
            created_at: crate::now(),
            last_updated_at: crate::now(),
            tags: Default::default(),
        };
        let mut tx = Tx::default();
        tx.create(Self::keys().res(Kind::TargetGroup, &id), &tg);
        assert!(Attempts::default().commit(self.store.as_ref(), tx).await.unwrap());
        id
    }

    /// An HTTP/HTTP1 target group.
    pub(crate) async fn http_tg(&self) -> String {
        self.tg("HTTP", "HTTP1").await
    }

    /// `count/tg-users/<tg>` and the service IDs its entries hold.
    pub(crate) async fn users(&self, tg: &str) -> (u64, Vec<String>) {
        let keys = Self::keys();
        let count = repo::counter(self.store.as_ref(), keys.counter(rel::TG_USERS, tg)).await.unwrap().value();
        let values = repo::list_index(self.store.as_ref(), &keys.references(rel::TG_USERS, tg)).await.unwrap();
        (count, values)
    }

    /// `count/svc-tg/<svc>` and the target groups its entries hold.
    pub(crate) async fn used(&self, svc: &str) -> (u64, Vec<String>) {
        let keys = Self::keys();
        let count = repo::counter(self.store.as_ref(), keys.counter(rel::SVC_TG, svc)).await.unwrap().value();
        let values = repo::list_index(self.store.as_ref(), &keys.references(rel::SVC_TG, svc)).await.unwrap();
        (count, values)
    }

    /// Creates a service; answers its ID.
    pub(crate) async fn service(&self, name: &str) -> String {
        let (status, _, body) = self.call("POST", "/services", Some(json!({ "name": name }))).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a listener with `action` as its default action; answers its ID.
    pub(crate) async fn listener(&self, svc: &str, name: &str, port: u16, action: Value) -> String {
        let body = json!({ "name": name, "protocol": "HTTP", "port": port, "defaultAction": action });
        let (status, _, body) = self.call("POST", &format!("/services/{svc}/listeners"), Some(body)).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a rule on `/p<priority>`; answers its ID.
    pub(crate) async fn rule(&self, svc: &str, listener: &str, name: &str, priority: u32, action: Value) -> String {
        let body = json!({
            "name": name, "priority": priority, "action": action,
            "match": { "httpMatch": { "pathMatch": { "match": { "prefix": format!("/p{priority}") } } } },
        });
        let (status, _, body) =
            self.call("POST", &format!("/services/{svc}/listeners/{listener}/rules"), Some(body)).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }
}

/// `{"forward": …}` to target groups, with weights when given.
pub(crate) fn forward(tgs: &[&str], weights: Option<&[u32]>) -> Value {
    let list: Vec<Value> = tgs
        .iter()
        .enumerate()
        .map(|(i, t)| match weights {
            Some(w) => json!({ "targetGroupIdentifier": t, "weight": w[i] }),
            None => json!({ "targetGroupIdentifier": t }),
        })
        .collect();
    json!({ "forward": { "targetGroups": list } })
}

/// `{"fixedResponse": {"statusCode": status}}`.
pub(crate) fn fixed(status: u16) -> Value {
    json!({ "fixedResponse": { "statusCode": status } })
}

/// An identifier as a path segment (ARNs percent-encoded as the clients send them).
pub(crate) fn seg(ident: &str) -> String {
    ident.replace(':', "%3A").replace('/', "%2F")
}
