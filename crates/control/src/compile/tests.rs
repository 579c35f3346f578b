//! The compiler against stores built through the real APIs (the P0 flow and its edge cases), and
//! against hand-made key-values for what the API cannot produce (a VPC in two service networks,
//! damaged records) and for scale.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use serde_json::{Value, json};
use trellis_model::Timestamp;
use trellis_model::lattice::{HealthCheckConfig, ListenerProtocol, Matcher, Target, TargetGroup, TargetGroupConfig};
use trellis_model::snapshot::{Action, Reach, Snapshot, WeightedTarget};
use trellis_store::{EventKind, KeyValue, Op, Store, StoreExt, Txn, WatchEvent};

use super::{Compiler, compile, compile_from, health_check};
use crate::test_util::{app_and_store, call, ec2};

const BASE: &str = "r/us-east-1/000000000000/";

/// An API over a fresh store, with one call per step of the P0 flow.
struct World {
    app: Router,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let (app, store, dir) = app_and_store();
        Self { app, store, _dir: dir }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, _, reply) = call(&self.app, "POST", path, Some(body)).await;
        assert!(status.is_success(), "POST {path}: {status} {reply}");
        reply
    }

    async fn vpc(&self) -> String {
        let (status, xml) = ec2(&self.app, &[("Action", "CreateVpc"), ("CidrBlock", "10.0.0.0/16")]).await;
        assert_eq!(status, 200, "{xml}");
        let start = xml.find("<vpcId>").expect("vpcId") + "<vpcId>".len();
        xml[start..start + xml[start..].find('<').expect("end")].to_owned()
    }

    async fn network(&self, name: &str) -> Value {
        self.post("/servicenetworks", json!({"name": name})).await
    }

    async fn associate_vpc(&self, sn: &Value, vpc: &str, private_dns: bool) -> Value {
        let body =
            json!({"serviceNetworkIdentifier": sn["id"], "vpcIdentifier": vpc, "privateDnsEnabled": private_dns});
        self.post("/servicenetworkvpcassociations", body).await
    }

    async fn service(&self, body: Value) -> Value {
        self.post("/services", body).await
    }

    async fn associate_service(&self, sn: &Value, svc: &Value) {
        let body = json!({"serviceNetworkIdentifier": sn["id"], "serviceIdentifier": svc["id"]});
        self.post("/servicenetworkserviceassociations", body).await;
    }

    async fn target_group(&self, name: &str, targets: &[&str]) -> String {
        let config = json!({"port": 8080, "protocol": "HTTP", "vpcIdentifier": self.any_vpc().await});
        let tg = self.post("/targetgroups", json!({"name": name, "type": "IP", "config": config})).await;
        let id = tg["id"].as_str().expect("id").to_owned();
        if !targets.is_empty() {
            let targets: Vec<Value> = targets.iter().map(|t| json!({"id": t})).collect();
            self.post(&format!("/targetgroups/{id}/registertargets"), json!({"targets": targets})).await;
        }
        id
    }

    /// A VPC for target groups to live in.
    async fn any_vpc(&self) -> String {
        self.vpc().await
    }

    async fn listener(&self, svc: &Value, port: u16, default_action: Value) -> String {
        let body =
            json!({"name": format!("l-{port}"), "protocol": "HTTP", "port": port, "defaultAction": default_action});
        let l = self.post(&format!("/services/{}/listeners", svc["id"].as_str().expect("id")), body).await;
        l["id"].as_str().expect("id").to_owned()
    }

    async fn rule(&self, svc: &Value, listener: &str, priority: u32, matcher: Value, action: Value) -> String {
        let path = format!("/services/{}/listeners/{listener}/rules", svc["id"].as_str().expect("id"));
        let body = json!({"name": format!("r-{priority}"), "priority": priority, "match": matcher, "action": action});
        self.post(&path, body).await["id"].as_str().expect("id").to_owned()
    }

    async fn put(&self, key: String, value: Vec<u8>) {
        let txn = Txn { success: vec![Op::Put(key, value)], ..Txn::default() };
        assert!(self.store.txn(txn).await.unwrap().succeeded);
    }

    async fn compile(&self) -> Snapshot {
        compile(self.store.as_ref(), "n1").await.unwrap()
    }
}

fn forward(tgs: &[(&str, Option<u32>)]) -> Value {
    let list: Vec<Value> = tgs
        .iter()
        .map(|(id, w)| match w {
            Some(w) => json!({"targetGroupIdentifier": id, "weight": w}),
            None => json!({"targetGroupIdentifier": id}),
        })
        .collect();
    json!({"forward": {"targetGroups": list}})
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

fn wt(id: &str, weight: u32) -> WeightedTarget {
    WeightedTarget { target_group_id: id.to_owned(), weight }
}

#[tokio::test]
async fn compiles_the_p0_scenario() {
    let w = World::new();
    let vpc = w.vpc().await;
    let sn = w.network("demo-net").await;
    w.associate_vpc(&sn, &vpc, true).await;
    let svc = w.service(json!({"name": "web", "idleTimeoutSeconds": 120})).await;
    let tg = w.target_group("web-tg", &["10.0.1.23"]).await;
    let listener = w.listener(&svc, 80, forward(&[(&tg, None)])).await;
    w.associate_service(&sn, &svc).await;
    w.put(format!("node/n1/vpc/us-east-1/{vpc}"), b"127.0.0.2".to_vec()).await;
    w.put(format!("node/n2/vpc/us-east-1/{vpc}"), b"127.0.0.3".to_vec()).await;

    let snap = w.compile().await;
    assert!(snap.revision > 0);
    let v = &snap.vpcs[&vpc];
    assert_eq!(v.vpc_arn, format!("arn:aws:ec2:us-east-1:000000000000:vpc/{vpc}"));
    assert_eq!((v.region.as_str(), v.account.as_str()), ("us-east-1", "000000000000"));
    assert_eq!(v.ingress, Some("127.0.0.2".parse().unwrap()), "this node's address, not n2's");
    let reach = Reach {
        service_network_id: id(&sn).into(),
        service_network_arn: sn["arn"].as_str().unwrap().into(),
        private_dns: true,
    };
    assert_eq!(v.reach.iter().map(|(k, r)| (&**k, r)).collect::<Vec<_>>(), vec![(id(&svc).as_str(), &reach)]);

    let s = &snap.services[id(&svc).as_str()];
    let dns = svc["dnsEntry"]["domainName"].as_str().unwrap();
    assert_eq!((&*s.arn, &*s.dns_name, s.custom_domain_name.as_deref()), (svc["arn"].as_str().unwrap(), dns, None));
    assert_eq!(s.idle_timeout, Duration::from_secs(120));
    let l = &s.listeners[&80];
    assert_eq!((&*l.id, l.protocol, l.port, l.rules.len()), (listener.as_str(), ListenerProtocol::Http, 80, 0));
    assert_eq!(l.default_action, Action::Forward(vec![wt(&tg, 100)]));
    assert_eq!(snap.hosts.get(dns).map(|s| &**s), Some(id(&svc).as_str()));
    assert_eq!(snap.hosts.len(), 1);
    let (found, how) = snap.find_service(&vpc, dns).unwrap();
    assert_eq!((&*found.id, how), (id(&svc).as_str(), &reach));

    let t = &snap.target_groups[&tg];
    assert!(t.in_use);
    assert_eq!(
        (t.target_type.as_str(), t.protocol.as_deref(), t.protocol_version.as_deref()),
        ("IP", Some("HTTP"), Some("HTTP1"))
    );
    assert_eq!((t.region.as_str(), t.account.as_str()), ("us-east-1", "000000000000"));
    assert_eq!(t.health_check, hc(&tg_record(&w, &tg).await));
    assert_eq!(t.health_check.enabled, Some(true));
    assert_eq!(t.targets.len(), 1);
    let target = &t.targets[0];
    assert_eq!((target.id.as_str(), target.port, target.draining_since_ms), ("10.0.1.23", 8080, None));
    assert_eq!(target.addr, Some(SocketAddr::new("10.0.1.23".parse().unwrap(), 8080)));
}

fn hc(tg: &TargetGroup) -> HealthCheckConfig {
    let config = tg.config.clone().unwrap_or_default();
    health_check(&tg.target_type, config.protocol.as_deref(), config.protocol_version.as_deref(), config.health_check)
}

async fn tg_record(w: &World, tg: &str) -> TargetGroup {
    let key = format!("{BASE}res/tg/{tg}");
    let resp = trellis_store::StoreExt::get(w.store.as_ref(), &key).await.unwrap().unwrap();
    serde_json::from_slice(&resp.value).unwrap()
}

#[tokio::test]
async fn unassociated_vpcs_and_services_are_absent() {
    let w = World::new();
    let (vpc, lonely_vpc) = (w.vpc().await, w.vpc().await);
    let sn = w.network("net").await;
    let empty_sn = w.network("empty").await;
    w.associate_vpc(&sn, &vpc, true).await;
    w.associate_vpc(&empty_sn, &w.vpc().await, true).await;
    let svc = w.service(json!({"name": "inside"})).await;
    let out = w.service(json!({"name": "outside"})).await;
    let (tg_in, tg_out, tg_idle) = (
        w.target_group("group-in", &[]).await,
        w.target_group("group-out", &[]).await,
        w.target_group("group-idle", &[]).await,
    );
    w.listener(&svc, 80, forward(&[(&tg_in, None)])).await;
    w.listener(&out, 80, forward(&[(&tg_out, None)])).await;
    w.associate_service(&sn, &svc).await;

    let snap = w.compile().await;
    assert!(!snap.vpcs.contains_key(&lonely_vpc), "no association, no view");
    assert_eq!(snap.vpcs.len(), 2, "a VPC of a network without services is still associated");
    assert!(snap.vpcs.values().any(|v| v.reach.is_empty() && v.ingress.is_none()));
    assert_eq!(snap.services.keys().map(|k| &**k).collect::<Vec<_>>(), vec![id(&svc).as_str()]);
    assert_eq!(snap.hosts.len(), 1);
    // Every target group is there; use counts listeners of unassociated services too.
    let in_use: Vec<(&str, bool)> =
        [&tg_in, &tg_out, &tg_idle].iter().map(|t| (t.as_str(), snap.target_groups[*t].in_use)).collect();
    assert_eq!(in_use, vec![(tg_in.as_str(), true), (tg_out.as_str(), true), (tg_idle.as_str(), false)]);
}

#[tokio::test]
async fn a_service_in_two_networks_is_reached_through_each() {
    let w = World::new();
    let (vpc1, vpc2) = (w.vpc().await, w.vpc().await);
    let (sn1, sn2) = (w.network("one").await, w.network("two").await);
    w.associate_vpc(&sn1, &vpc1, true).await;
    w.associate_vpc(&sn2, &vpc2, false).await;
    let svc = w.service(json!({"name": "shared", "customDomainName": "Shared.Example.COM"})).await;
    w.listener(&svc, 80, json!({"fixedResponse": {"statusCode": 404}})).await;
    w.associate_service(&sn1, &svc).await;
    w.associate_service(&sn2, &svc).await;

    let snap = w.compile().await;
    assert_eq!(snap.services.len(), 1);
    assert_eq!(snap.services[id(&svc).as_str()].listeners[&80].default_action, Action::Fixed(404));
    let via = |vpc: &str| snap.vpcs[vpc].reach[id(&svc).as_str()].clone();
    assert_eq!((via(&vpc1).service_network_id.to_string(), via(&vpc1).private_dns), (id(&sn1), true));
    assert_eq!((via(&vpc2).service_network_id.to_string(), via(&vpc2).private_dns), (id(&sn2), false));
    assert_eq!(
        snap.hosts.get("shared.example.com").map(|s| &**s),
        Some(id(&svc).as_str()),
        "custom names are lowercased"
    );
    assert!(snap.find_service(&vpc2, "shared.example.com").is_some());
}

#[tokio::test]
async fn rules_are_in_priority_order_with_weights_filled_in() {
    let w = World::new();
    let vpc = w.vpc().await;
    let sn = w.network("net").await;
    w.associate_vpc(&sn, &vpc, true).await;
    let svc = w.service(json!({"name": "web"})).await;
    let (a, b) = (w.target_group("group-a", &[]).await, w.target_group("group-b", &[]).await);
    let l = w.listener(&svc, 8080, json!({"fixedResponse": {"statusCode": 404}})).await;
    let by_path = |p: &str| json!({"httpMatch": {"pathMatch": {"match": {"prefix": p}, "caseSensitive": false}}});
    let r30 = w.rule(&svc, &l, 30, by_path("/c"), forward(&[(&a, Some(0)), (&b, Some(999))])).await;
    let r10 = w.rule(&svc, &l, 10, by_path("/a"), forward(&[(&a, None)])).await;
    let headers =
        json!({"httpMatch": {"method": "POST", "headerMatches": [{"name": "X-Canary", "match": {"contains": "yes"}}]}});
    let r20 = w.rule(&svc, &l, 20, headers, json!({"fixedResponse": {"statusCode": 500}})).await;
    w.associate_service(&sn, &svc).await;

    let snap = w.compile().await;
    let lv = &snap.services[id(&svc).as_str()].listeners[&8080];
    let order: Vec<(&str, u32)> = lv.rules.iter().map(|r| (r.id.as_str(), r.priority)).collect();
    assert_eq!(order, vec![(r10.as_str(), 10), (r20.as_str(), 20), (r30.as_str(), 30)]);
    assert_eq!(lv.rules[0].action, Action::Forward(vec![wt(&a, 100)]));
    assert_eq!(lv.rules[1].action, Action::Fixed(500));
    assert_eq!(lv.rules[2].action, Action::Forward(vec![wt(&a, 0), wt(&b, 999)]));
    assert_eq!(lv.rules[1].matcher.method.as_deref(), Some("POST"));
    assert_eq!(lv.rules[0].matcher.path_match.as_ref().unwrap().case_sensitive, Some(false));
    assert!(snap.target_groups[&a].in_use && snap.target_groups[&b].in_use);
    // The compiled listener routes as the rules say.
    let hs: &[(&str, &str)] = &[("x-canary", "say YES please")];
    assert_eq!(trellis_model::route::find(lv, "POST", "/z", hs), &Action::Fixed(500));
    assert_eq!(trellis_model::route::find(lv, "GET", "/A/x", hs), &lv.rules[0].action);
    assert_eq!(trellis_model::route::find(lv, "GET", "/z", hs), &Action::Fixed(404));
}

#[tokio::test]
async fn draining_targets_and_damaged_records() {
    let w = World::new();
    let vpc = w.vpc().await;
    let sn = w.network("net").await;
    w.associate_vpc(&sn, &vpc, true).await;
    let svc = w.service(json!({"name": "web"})).await;
    let tg = w.target_group("group", &["10.0.0.5", "10.0.0.6"]).await;
    w.listener(&svc, 80, forward(&[(&tg, None)])).await;
    w.associate_service(&sn, &svc).await;
    // Deregistered and draining (written the way the data plane's reports will be).
    let draining = Target {
        id: "10.0.0.6".into(),
        port: 8080,
        registered_at: Timestamp(1),
        draining_since: Some(Timestamp(1_700_000_000_123)),
    };
    w.put(format!("{BASE}target/{tg}/10.0.0.6/08080"), serde_json::to_vec(&draining).unwrap()).await;
    // Damage: an unreadable service, listener and target, and a bad ingress address.
    w.put(format!("{BASE}res/svc/svc-0123456789abcdef0"), b"{not json".to_vec()).await;
    w.put(format!("{BASE}listener/{}/listener-0123456789abcdef0", id(&svc)), b"[]".to_vec()).await;
    w.put(format!("{BASE}target/{tg}/10.0.0.7/08080"), b"".to_vec()).await;
    w.put(format!("node/n1/vpc/us-east-1/{vpc}"), b"not-an-ip".to_vec()).await;

    let snap = w.compile().await;
    let targets: Vec<(&str, Option<u64>)> =
        snap.target_groups[&tg].targets.iter().map(|t| (t.id.as_str(), t.draining_since_ms)).collect();
    assert_eq!(targets, vec![("10.0.0.5", None), ("10.0.0.6", Some(1_700_000_000_123))]);
    assert_eq!(snap.services.len(), 1);
    assert_eq!(snap.services[id(&svc).as_str()].listeners.len(), 1);
    assert_eq!(snap.vpcs[&vpc].ingress, None);
}

#[test]
fn health_checks_are_fully_defaulted() {
    let tg =
        |target_type: &str, protocol: Option<&str>, version: Option<&str>, hc: Option<HealthCheckConfig>| TargetGroup {
            id: "tg-0".into(),
            name: "tg".into(),
            arn: "arn".into(),
            target_type: target_type.into(),
            config: Some(TargetGroupConfig {
                protocol: protocol.map(Into::into),
                protocol_version: version.map(Into::into),
                health_check: hc,
                ..Default::default()
            }),
            status: trellis_model::lattice::Status::Active,
            created_at: Timestamp(0),
            last_updated_at: Timestamp(0),
            tags: Default::default(),
        };
    let full = |enabled: bool, protocol: &str| HealthCheckConfig {
        enabled: Some(enabled),
        protocol: Some(protocol.into()),
        protocol_version: Some("HTTP1".into()),
        port: None,
        path: Some("/".into()),
        health_check_interval_seconds: Some(30),
        health_check_timeout_seconds: Some(5),
        healthy_threshold_count: Some(5),
        unhealthy_threshold_count: Some(2),
        matcher: Some(Matcher { http_code: "200".into() }),
    };
    assert_eq!(hc(&tg("IP", Some("HTTP"), Some("HTTP1"), None)), full(true, "HTTP"));
    assert_eq!(hc(&tg("IP", Some("HTTPS"), None, None)), full(true, "HTTPS"));
    assert_eq!(hc(&tg("IP", Some("HTTPS"), Some("HTTP2"), None)), full(false, "HTTPS"));
    assert_eq!(hc(&tg("INSTANCE", Some("HTTP"), Some("GRPC"), None)), full(false, "HTTP"));
    assert_eq!(hc(&tg("IP", Some("TCP"), None, None)), full(false, "HTTP"));
    let on = HealthCheckConfig { enabled: Some(true), ..Default::default() };
    assert_eq!(hc(&tg("ALB", Some("HTTP"), None, Some(on))), full(false, "HTTP"), "ALB: never checked");
    let lambda = TargetGroup { config: None, ..tg("LAMBDA", None, None, None) };
    assert_eq!(hc(&lambda), full(false, "HTTP"));
    // Zeros and empty strings take defaults; given values stay.
    let partial = HealthCheckConfig {
        port: Some(0),
        path: Some(String::new()),
        health_check_interval_seconds: Some(0),
        healthy_threshold_count: Some(3),
        matcher: Some(Matcher { http_code: "200-299".into() }),
        ..Default::default()
    };
    let want = HealthCheckConfig {
        healthy_threshold_count: Some(3),
        matcher: Some(Matcher { http_code: "200-299".into() }),
        ..full(true, "HTTP")
    };
    assert_eq!(hc(&tg("IP", Some("HTTP"), None, Some(partial))), want);
    let with_port = HealthCheckConfig { port: Some(9000), enabled: Some(false), ..Default::default() };
    let got = hc(&tg("IP", Some("HTTP"), None, Some(with_port)));
    assert_eq!((got.port, got.enabled), (Some(9000), Some(false)));
}

/// Hand-made key-values: `count` services, each with an HTTP listener forwarding to its own
/// target group of one target, all associated with one of two service networks; one VPC
/// associated with both networks (impossible through the API, which allows one network per VPC).
fn synthetic(count: usize) -> Vec<KeyValue> {
    let mut kvs = Vec::new();
    let mut put = |key: String, value: Value| {
        kvs.push(KeyValue {
            key,
            value: value.to_string().into_bytes(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
        });
    };
    let ts = "2024-01-01T00:00:00.000Z";
    for (sn, dns) in [("sn-00000000000000001", false), ("sn-00000000000000002", true)] {
        let arn = format!("arn:aws:vpc-lattice:us-east-1:000000000000:servicenetwork/{sn}");
        put(
            format!("{BASE}res/sn/{sn}"),
            json!({"id": sn, "name": sn, "arn": arn, "authType": "NONE", "createdAt": ts, "lastUpdatedAt": ts}),
        );
        let snva = format!("snva-{}", &sn[3..]);
        put(
            format!("{BASE}res/snva/{snva}"),
            json!({"id": snva, "arn": "a", "serviceNetworkId": sn, "vpcId": "vpc-00000000000000001", "privateDnsEnabled": dns,
                   "status": "ACTIVE", "createdBy": "000000000000", "createdAt": ts, "lastUpdatedAt": ts}),
        );
    }
    for i in 0..count {
        let (svc, tg, l) = (format!("svc-{i:017x}"), format!("tg-{i:017x}"), format!("listener-{i:017x}"));
        let svc_arn = format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{svc}");
        put(
            format!("{BASE}res/svc/{svc}"),
            json!({"id": svc, "name": format!("s{i}"), "arn": svc_arn, "authType": "NONE", "status": "ACTIVE",
                   "dnsName": format!("S{i}-{}.7d67968.vpc-lattice-svcs.us-east-1.on.aws", &svc[4..]),
                   "createdAt": ts, "lastUpdatedAt": ts, "tags": {"team": "t"}}),
        );
        put(
            format!("{BASE}listener/{svc}/{l}"),
            json!({"id": l, "name": "http", "arn": format!("{svc_arn}/listener/{l}"), "serviceId": svc, "serviceArn": svc_arn,
                   "protocol": "HTTP", "port": 80, "defaultRuleId": "rule-0",
                   "defaultAction": {"forward": {"targetGroups": [{"targetGroupIdentifier": tg}]}},
                   "createdAt": ts, "lastUpdatedAt": ts}),
        );
        put(
            format!("{BASE}res/tg/{tg}"),
            json!({"id": tg, "name": tg, "arn": "a", "type": "IP", "status": "ACTIVE", "createdAt": ts, "lastUpdatedAt": ts,
                   "config": {"port": 80, "protocol": "HTTP", "protocolVersion": "HTTP1", "vpcIdentifier": "vpc-00000000000000001"}}),
        );
        for ip in ["127.0.0.1", "127.0.0.2"] {
            put(format!("{BASE}target/{tg}/{ip}/08080"), json!({"id": ip, "port": 8080, "registeredAt": ts}));
        }
        let sn = if i % 2 == 0 { "sn-00000000000000001" } else { "sn-00000000000000002" };
        for (n, sn) in [sn, "sn-00000000000000002"].into_iter().enumerate().take(if i % 3 == 0 { 2 } else { 1 }) {
            let snsa = format!("snsa-{n}{i:016x}");
            put(
                format!("{BASE}res/snsa/{snsa}"),
                json!({"id": snsa, "arn": "a", "serviceNetworkId": sn, "serviceId": svc, "status": "ACTIVE",
                       "createdBy": "000000000000", "createdAt": ts}),
            );
        }
    }
    kvs.push(KeyValue {
        key: "node/n1/vpc/us-east-1/vpc-00000000000000001".into(),
        value: b"127.10.0.1\n".to_vec(),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
    });
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    kvs
}

#[test]
fn compiles_hand_made_records_and_the_lowest_network_wins() {
    let snap = compile_from(&synthetic(60), 42, "n1");
    assert_eq!((snap.revision, snap.services.len(), snap.target_groups.len(), snap.hosts.len()), (42, 60, 60, 60));
    let v = &snap.vpcs["vpc-00000000000000001"];
    assert_eq!(v.ingress, Some(IpAddr::from([127, 10, 0, 1])));
    assert_eq!(v.reach.len(), 60);
    for i in 0..60 {
        let svc = format!("svc-{i:017x}");
        let reach = &v.reach[svc.as_str()];
        // Even services are in network 1 (and some also in 2): reached through 1, without
        // private DNS; odd ones only through network 2.
        let want = if i % 2 == 0 { ("sn-00000000000000001", false) } else { ("sn-00000000000000002", true) };
        assert_eq!((&*reach.service_network_id, reach.private_dns), want, "{svc}");
        assert!(reach.service_network_arn.ends_with(want.0));
        let s = &snap.services[svc.as_str()];
        assert_eq!(*snap.hosts[&s.dns_name], *svc);
        assert!(s.dns_name.starts_with(&format!("s{i}-")), "lowercased");
        assert_eq!(s.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.listeners[&80].default_action, Action::Forward(vec![wt(&format!("tg-{i:017x}"), 100)]));
        let tg = &snap.target_groups[&format!("tg-{i:017x}")];
        assert!(tg.in_use);
        assert_eq!(tg.targets[0].addr, Some(SocketAddr::from(([127, 0, 0, 1], 8080))));
    }
    assert_eq!(compile_from(&synthetic(60), 42, "n2").vpcs["vpc-00000000000000001"].ingress, None);
}

#[test]
fn a_store_decoded_on_threads_builds_what_its_changes_build() {
    // Enough key-values for several threads, against the same key-values taken one by one.
    let kvs = synthetic(1_600);
    assert!(kvs.len() > 2 * 4096);
    let threaded = compile_from(&kvs, 1, "n1");
    let mut one_by_one = Compiler::from_kvs(&[], 0, "n1");
    for kv in &kvs {
        one_by_one.apply(&WatchEvent { kind: EventKind::Put, kv: KeyValue { mod_revision: 1, ..kv.clone() } });
    }
    let single = one_by_one.snapshot();
    assert_eq!((threaded.services.len(), threaded.target_groups.len()), (1_600, 1_600));
    assert_eq!(threaded.services, single.services);
    assert_eq!(threaded.target_groups, single.target_groups);
    assert_eq!((&threaded.vpcs, &threaded.hosts), (&single.vpcs, &single.hosts));
    let tg = &threaded.target_groups["tg-00000000000000000"];
    let ids: Vec<&str> = tg.targets.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["127.0.0.1", "127.0.0.2"]);
}

/// `synthetic` with the status of the records under keys containing `key_part` replaced.
fn with_status(mut kvs: Vec<KeyValue>, key_part: &str, status: &str) -> Vec<KeyValue> {
    for kv in kvs.iter_mut().filter(|kv| kv.key.contains(key_part)) {
        let mut record: Value = serde_json::from_slice(&kv.value).unwrap();
        record["status"] = json!(status);
        kv.value = record.to_string().into_bytes();
    }
    kvs
}

#[test]
fn associations_carry_traffic_only_when_active_or_updating() {
    let vpc = "vpc-00000000000000001";
    let updating = with_status(synthetic(4), "/res/snva/", "UPDATE_IN_PROGRESS");
    assert_eq!(compile_from(&updating, 1, "n1").vpcs[vpc].reach.len(), 4);
    for status in ["CREATE_IN_PROGRESS", "DELETE_IN_PROGRESS"] {
        let snap = compile_from(&with_status(synthetic(4), "/res/snva/", status), 1, "n1");
        assert!(snap.vpcs.is_empty(), "{status}");
        assert_eq!(snap.services.len(), 4, "services stay associated with their networks");
        let snap = compile_from(&with_status(synthetic(4), "/res/snsa/", status), 1, "n1");
        assert!(snap.services.is_empty() && snap.hosts.is_empty(), "{status}");
        assert!(snap.vpcs[vpc].reach.is_empty(), "{status}");
        assert!(snap.target_groups.values().all(|tg| tg.in_use), "use does not depend on association");
    }
}

#[test]
fn a_forward_to_missing_target_groups_answers_503() {
    let mut kvs = synthetic(2);
    kvs.retain(|kv| !kv.key.contains("/res/tg/tg-00000000000000000"));
    let snap = compile_from(&kvs, 1, "n1");
    assert_eq!(snap.services["svc-00000000000000000"].listeners[&80].default_action, Action::Fixed(503));
    assert!(matches!(snap.services["svc-00000000000000001"].listeners[&80].default_action, Action::Forward(_)));
}

/// `cargo test --release -p trellis-control compile_10k -- --ignored --nocapture`
/// (`TRELLIS_BENCH_ROUNDS` compiles, default 5; the best time is printed).
#[test]
#[ignore = "a benchmark: prints how long 10,000 services take to compile"]
fn compile_10k_services_timing() {
    let rounds: usize = std::env::var("TRELLIS_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let kvs = synthetic(10_000);
    let bytes: usize = kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let start = std::time::Instant::now();
        let snap = compile_from(&kvs, 1, "n1");
        best = best.min(start.elapsed());
        assert_eq!(snap.services.len(), 10_000);
    }
    let n = kvs.len();
    println!("compile_from: 10,000 services ({n} key-values, {} KiB): best of {rounds}: {best:?}", bytes / 1024);
}

/// `cargo test --release -p trellis-control change_at_10k -- --ignored --nocapture`: how long
/// a snapshot takes after one listener change at 10,000 services.
#[test]
#[ignore = "a benchmark: prints how long one change at 10,000 services takes to build"]
fn change_at_10k_services_timing() {
    let kvs = synthetic(10_000);
    let mut compiler = Compiler::from_kvs(&kvs, 1, "n1");
    let first = compiler.snapshot();
    let listener = kvs.iter().find(|kv| kv.key.contains("/listener/")).expect("a listener");
    let mut best = Duration::MAX;
    for round in 0..20 {
        let mut value: Value = serde_json::from_slice(&listener.value).unwrap();
        value["defaultAction"] = json!({"fixedResponse": {"statusCode": 400 + round}});
        let kv =
            KeyValue { value: value.to_string().into_bytes(), mod_revision: 2 + i64::from(round), ..listener.clone() };
        let start = std::time::Instant::now();
        assert!(compiler.apply(&WatchEvent { kind: EventKind::Put, kv }));
        let snap = compiler.snapshot();
        best = best.min(start.elapsed());
        assert_eq!(snap.services.len(), 10_000);
    }
    drop(first);
    println!("one change at 10,000 services: best of 20: {best:?}");
}

/// `cargo test --release -p trellis-control compile_10k_from_sqlite -- --ignored --nocapture`:
/// the whole [`compile`], store reads included, over a SQLite store holding 10,000 services.
#[tokio::test]
#[ignore = "a benchmark: prints how long compiling 10,000 services from SQLite takes"]
async fn compile_10k_from_sqlite_timing() {
    let w = World::new();
    for batch in synthetic(10_000).chunks(trellis_store::MAX_TXN_OPS) {
        let success = batch.iter().map(|kv| Op::Put(kv.key.clone(), kv.value.clone())).collect();
        assert!(w.store.txn(Txn { success, ..Txn::default() }).await.unwrap().succeeded);
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let snap = w.compile().await;
        best = best.min(start.elapsed());
        assert_eq!(snap.services.len(), 10_000);
    }
    println!("compile (SQLite reads included): 10,000 services: best of 5: {best:?}");
}

/// Every VPC's block and subnets are in the snapshot, associated or not (netns mode builds
/// networks from them).
#[tokio::test]
async fn networks_hold_every_vpc_and_its_subnets() {
    let w = World::new();
    let vpc = w.vpc().await;
    let (status, xml) = ec2(&w.app, &[("Action", "CreateSubnet"), ("VpcId", &vpc), ("CidrBlock", "10.0.3.0/24")]).await;
    assert_eq!(status, 200, "{xml}");
    let start = xml.find("<subnetId>").expect("subnetId") + "<subnetId>".len();
    let subnet = &xml[start..start + xml[start..].find('<').expect("end")];
    let snapshot = compile(w.store.as_ref(), "n1").await.unwrap();
    let network = &snapshot.networks[&vpc];
    assert_eq!((network.cidr.to_string().as_str(), network.region.as_str()), ("10.0.0.0/16", "us-east-1"));
    assert_eq!(network.subnets.keys().collect::<Vec<_>>(), [subnet]);
    assert_eq!(network.subnets[subnet].to_string(), "10.0.3.0/24");
    assert!(snapshot.vpcs.is_empty(), "not associated");
}

/// Service networks and services with `authType: AWS_IAM` are in `iam`, with their policies
/// compiled; a full build and changes applied one by one agree.
#[tokio::test]
async fn auth_policies_are_compiled_for_aws_iam_resources() {
    let w = World::new();
    let sn = w.post("/servicenetworks", json!({"name": "net", "authType": "AWS_IAM"})).await;
    let guarded = w.service(json!({"name": "guarded", "authType": "AWS_IAM"})).await;
    let open = w.service(json!({"name": "open"})).await;
    let policy = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#;
    let (status, _, body) =
        call(&w.app, "PUT", &format!("/authpolicy/{}", id(&guarded)), Some(json!({"policy": policy}))).await;
    assert!(status.is_success(), "{body}");
    let snap = w.compile().await;
    let mut ids: Vec<&String> = snap.iam.keys().collect();
    ids.sort();
    assert_eq!(ids, [&id(&sn), &id(&guarded)]);
    assert!(snap.iam[&id(&sn)].policy.is_none(), "no policy: every request is denied");
    assert!(snap.iam[&id(&guarded)].policy.is_some());
    assert!(!snap.iam.contains_key(&id(&open)));

    // The same, change by change.
    let all = w.store.list_prefix("", None, 0).await.unwrap();
    let mut compiler = Compiler::from_kvs(&all.kvs, all.revision, "n1");
    let (status, _, body) =
        call(&w.app, "PUT", &format!("/authpolicy/{}", id(&sn)), Some(json!({"policy": policy}))).await;
    assert!(status.is_success(), "{body}");
    let (status, _, body) =
        call(&w.app, "PATCH", &format!("/services/{}", id(&guarded)), Some(json!({"authType": "NONE"}))).await;
    assert!(status.is_success(), "{body}");
    let after = w.store.list_prefix("", None, 0).await.unwrap();
    for kv in after.kvs.iter().filter(|kv| kv.mod_revision > all.revision) {
        compiler.apply(&WatchEvent { kind: EventKind::Put, kv: kv.clone() });
    }
    compiler.advance(after.revision);
    let stepped = compiler.snapshot();
    let full = w.compile().await;
    assert_eq!(stepped.iam, full.iam);
    assert!(full.iam[&id(&sn)].policy.is_some());
    assert!(!full.iam.contains_key(&id(&guarded)), "authType NONE again");
}

#[tokio::test]
async fn access_log_subscriptions_are_compiled_by_owner() {
    use trellis_model::access_log::Destination;
    let w = World::new();
    let sn = w.network("logged").await;
    let svc = w.service(json!({"name": "logged"})).await;
    let subscribe = |owner: String, arn: &'static str, log_type: Option<&'static str>| {
        let mut body = json!({"resourceIdentifier": owner, "destinationArn": arn});
        if let Some(t) = log_type {
            body["serviceNetworkLogType"] = json!(t);
        }
        body
    };
    let cw = w
        .post("/accesslogsubscriptions", subscribe(id(&sn), "arn:aws:logs:us-east-1:000000000000:log-group:g", None))
        .await;
    w.post(
        "/accesslogsubscriptions",
        subscribe(id(&sn), "arn:aws:firehose:us-east-1:000000000000:deliverystream/f", Some("RESOURCE")),
    )
    .await;
    let s3 = w.post("/accesslogsubscriptions", subscribe(id(&svc), "arn:aws:s3:::bucket/p", None)).await;
    let snap = w.compile().await;
    let on_sn = &snap.access_logs[&id(&sn)];
    assert_eq!(on_sn.len(), 2);
    let resource_only: Vec<bool> = on_sn.iter().map(|a| a.resource_only).collect();
    assert_eq!(resource_only.iter().filter(|r| **r).count(), 1, "the RESOURCE one is marked");
    let on_svc = &snap.access_logs[id(&svc).as_str()];
    assert_eq!(on_svc[0].id, id(&s3));
    assert_eq!(on_svc[0].destination, Destination::S3 { bucket: "bucket".into(), prefix: "p".into() });

    // The same, change by change: one updated, one deleted.
    let all = w.store.list_prefix("", None, 0).await.unwrap();
    let mut compiler = Compiler::from_kvs(&all.kvs, all.revision, "n1");
    let (status, _, body) = call(
        &w.app,
        "PATCH",
        &format!("/accesslogsubscriptions/{}", id(&cw)),
        Some(json!({"destinationArn": "arn:aws:logs:us-east-1:000000000000:log-group:other"})),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let (status, _, body) = call(&w.app, "DELETE", &format!("/accesslogsubscriptions/{}", id(&s3)), None).await;
    assert!(status.is_success(), "{body}");
    let after = w.store.list_prefix("", None, 0).await.unwrap();
    for kv in after.kvs.iter().filter(|kv| kv.mod_revision > all.revision) {
        compiler.apply(&WatchEvent { kind: EventKind::Put, kv: kv.clone() });
    }
    for kv in all.kvs.iter().filter(|kv| !after.kvs.iter().any(|a| a.key == kv.key)) {
        compiler.apply(&WatchEvent { kind: EventKind::Delete, kv: kv.clone() });
    }
    compiler.advance(after.revision);
    let stepped = compiler.snapshot();
    let full = w.compile().await;
    assert_eq!(stepped.access_logs, full.access_logs);
    assert!(!full.access_logs.contains_key(&id(&svc)), "the service's only subscription is gone");
    let group = full.access_logs[&id(&sn)].iter().find(|a| a.id == id(&cw)).map(|a| a.destination.clone());
    assert_eq!(
        group,
        Some(Destination::CloudWatchLogs {
            region: "us-east-1".into(),
            account: "000000000000".into(),
            group: "other".into()
        })
    );
}
