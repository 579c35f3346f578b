//! The incremental compiler against the full one: after every change of a long random sequence
//! of writes and deletes (valid records, damaged ones, index keys, other nodes' addresses), the
//! snapshot a [`Compiler`] builds from the changes equals the snapshot compiled from scratch
//! from the same store contents, and views the changes did not touch are shared with the last
//! snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use trellis_model::Timestamp;
use trellis_model::snapshot::Snapshot;
use trellis_store::{EventKind, KeyValue, WatchEvent};

use crate::compile::{Compiler, compile_from};

const BASE: &str = "r/us-east-1/000000000000/";

/// A small deterministic generator (xorshift64*): reproducible runs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SERVICES: [&str; 5] = ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4"];
const LISTENERS: [&str; 7] =
    ["listener-0", "listener-1", "listener-2", "listener-3", "listener-4", "listener-5", "listener-6"];
const RULES: [&str; 6] = ["rule-0", "rule-1", "rule-2", "rule-3", "rule-4", "rule-5"];
const GROUPS: [&str; 4] = ["tg-0", "tg-1", "tg-2", "tg-3"];
const NETWORKS: [&str; 3] = ["sn-0", "sn-1", "sn-2"];
const VPCS: [&str; 3] = ["vpc-0", "vpc-1", "vpc-2"];
const STATUSES: [&str; 4] = ["ACTIVE", "UPDATE_IN_PROGRESS", "CREATE_IN_PROGRESS", "DELETE_IN_PROGRESS"];

fn action(rng: &mut Rng) -> Value {
    if rng.chance(30) {
        return json!({"fixedResponse": {"statusCode": 400 + rng.below(5)}});
    }
    let groups: Vec<Value> = (0..=rng.below(2))
        .map(|_| {
            let tg = rng.pick(&GROUPS);
            if rng.chance(50) {
                json!({"targetGroupIdentifier": tg})
            } else {
                json!({"targetGroupIdentifier": tg, "weight": rng.below(10)})
            }
        })
        .collect();
    json!({"forward": {"targetGroups": groups}})
}

/// Mostly [`BASE`]; now and then another region.
fn base(rng: &mut Rng) -> &'static str {
    if rng.chance(5) { "r/us-west-2/000000000000/" } else { BASE }
}

/// A random key and the value to write there (`None`: delete it).
fn change(rng: &mut Rng) -> (String, Option<Vec<u8>>) {
    let (key, value) = match rng.below(14) {
        0 => {
            let id = rng.pick(&SERVICES);
            let custom = if rng.chance(40) { json!("Shared.Example") } else { json!(null) };
            let value = json!({"id": id, "arn": format!("arn:{id}"), "dnsName": format!("{id}-{}.Example", rng.below(3)),
                               "customDomainName": custom, "idleTimeoutSeconds": rng.below(3) * 30, "name": "n"});
            // Now and then a damaged store: a record under another service's key, or region.
            (format!("{}res/svc/{}", base(rng), if rng.chance(10) { rng.pick(&SERVICES) } else { id }), value)
        }
        1 | 2 => {
            let (svc, id) = (rng.pick(&SERVICES), rng.pick(&LISTENERS));
            let owner = if rng.chance(90) { svc } else { rng.pick(&SERVICES) };
            let value = json!({"id": id, "arn": format!("arn:{id}"), "serviceId": owner, "protocol": "HTTP",
                               "port": if rng.chance(50) { 80 } else { 443 }, "defaultAction": action(rng)});
            (format!("{}listener/{svc}/{id}", base(rng)), value)
        }
        3 | 4 => {
            let (listener, id) = (rng.pick(&LISTENERS), rng.pick(&RULES));
            let matcher = if rng.chance(50) {
                json!({"method": "GET"})
            } else {
                json!({"pathMatch": {"match": {"prefix": "/a"}}})
            };
            let value = json!({"id": id, "listenerId": listener, "priority": 1 + rng.below(3),
                               "match": {"httpMatch": matcher}, "action": action(rng)});
            (format!("{BASE}rule/{listener}/{id}"), value)
        }
        5 => {
            let id = rng.pick(&GROUPS);
            let check = if rng.chance(50) {
                json!({"enabled": false})
            } else {
                json!({"path": "/health", "healthyThresholdCount": 0})
            };
            let value = json!({"id": id, "arn": format!("arn:{id}"), "type": "IP",
                               "config": {"port": 80, "protocol": "HTTP", "healthCheck": check}});
            (format!("{}res/tg/{}", base(rng), if rng.chance(10) { rng.pick(&GROUPS) } else { id }), value)
        }
        6 | 7 => {
            let (tg, ip) = (rng.pick(&GROUPS), rng.pick(&["127.0.0.1", "127.0.0.2", "host-a"]));
            let draining = if rng.chance(30) { json!(Timestamp(1_700_000_000_000)) } else { json!(null) };
            (format!("{BASE}target/{tg}/{ip}/08080"), json!({"id": ip, "port": 8080, "drainingSince": draining}))
        }
        8 | 9 => {
            let (sn, svc) = (rng.pick(&NETWORKS), rng.pick(&SERVICES));
            let value = json!({"serviceNetworkId": sn, "serviceId": svc, "status": rng.pick(&STATUSES[..3])});
            (format!("{BASE}res/snsa/snsa-{sn}-{svc}"), value)
        }
        10 => {
            let (sn, vpc) = (rng.pick(&NETWORKS), rng.pick(&VPCS));
            let value = json!({"id": format!("snva-{sn}-{vpc}"), "serviceNetworkId": sn, "vpcId": vpc,
                               "privateDnsEnabled": rng.chance(50), "status": rng.pick(&STATUSES)});
            (format!("{BASE}res/snva/snva-{sn}-{vpc}"), value)
        }
        11 => {
            let id = rng.pick(&NETWORKS);
            (format!("{BASE}res/sn/{id}"), json!({"id": id, "arn": format!("arn:{id}:{}", rng.below(2))}))
        }
        12 => {
            let id = rng.pick(&VPCS);
            let cidr = if rng.chance(80) { "10.0.0.0/16" } else { "not-a-block" };
            let value = if rng.chance(70) {
                json!({"id": id, "cidrBlock": cidr})
            } else {
                json!({"id": format!("subnet-{id}"), "vpcId": id, "cidrBlock": "10.0.1.0/24"})
            };
            let kind = if value.get("vpcId").is_some() { "subnet" } else { "vpc" };
            (format!("{BASE}res/{kind}/{}", value["id"].as_str().unwrap()), value)
        }
        _ => {
            let (node, vpc) = (rng.pick(&["n1", "n2"]), rng.pick(&VPCS));
            let key = format!("node/{node}/vpc/us-east-1/{vpc}");
            let ip = rng.pick(&["127.0.0.5", "127.0.0.6", "garbage"]);
            if rng.chance(85) {
                return (key, Some(ip.as_bytes().to_vec()));
            }
            // Keys the compiler does not read.
            let other = rng.pick(&[
                "r/us-east-1/000000000000/name/svc/x",
                "r/us-east-1/000000000000/health/tg-0/127.0.0.1/8080/n1",
                "iam/000000000000/role/r",
            ]);
            (other.to_owned(), json!({"id": "x"}))
        }
    };
    if rng.chance(20) {
        return (key, None);
    }
    if rng.chance(5) {
        return (key, Some(b"{damaged".to_vec()));
    }
    (key, Some(value.to_string().into_bytes()))
}

fn event(kind: EventKind, key: &str, value: Vec<u8>, revision: i64) -> WatchEvent {
    let kv = KeyValue { key: key.to_owned(), value, create_revision: 1, mod_revision: revision, version: 1 };
    WatchEvent { kind, kv }
}

fn kvs(store: &BTreeMap<String, Vec<u8>>) -> Vec<KeyValue> {
    store
        .iter()
        .map(|(k, v)| KeyValue { key: k.clone(), value: v.clone(), create_revision: 1, mod_revision: 1, version: 1 })
        .collect()
}

fn assert_same(got: &Snapshot, want: &Snapshot, step: usize) {
    assert_eq!(got.revision, want.revision, "step {step}");
    assert_eq!(got.services, want.services, "services at step {step}");
    assert_eq!(got.target_groups, want.target_groups, "target groups at step {step}");
    assert_eq!(got.vpcs, want.vpcs, "VPCs at step {step}");
    assert_eq!(got.hosts, want.hosts, "hosts at step {step}");
    assert_eq!(got.networks, want.networks, "networks at step {step}");
}

#[test]
fn changes_applied_one_by_one_build_what_a_full_compile_builds() {
    for seed in [1, 7, 42, 1234, 99_999] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let mut store: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        // Start from a store that already holds something.
        for _ in 0..40 {
            if let (key, Some(value)) = change(&mut rng) {
                store.insert(key, value);
            }
        }
        let mut revision = 1;
        let mut compiler = Compiler::from_kvs(&kvs(&store), revision, "n1");
        let mut last = compiler.snapshot();
        assert_same(&last, &compile_from(&kvs(&store), revision, "n1"), 0);
        let (mut shared, mut services_seen) = (0, 0);
        for step in 1..=600 {
            // Sometimes several transactions arrive before the next build, sometimes a
            // prefix delete removes many keys in one.
            for _ in 0..=rng.below(3).saturating_sub(1) {
                revision += 1;
                if rng.chance(3) {
                    let prefix = format!("{BASE}target/{}/", rng.pick(&GROUPS));
                    let gone: Vec<String> = store
                        .range(prefix.clone()..)
                        .map(|(k, _)| k.clone())
                        .take_while(|k| k.starts_with(&prefix))
                        .collect();
                    if gone.is_empty() {
                        // Deleting nothing writes no revision.
                        revision -= 1;
                    }
                    for key in gone {
                        store.remove(&key);
                        compiler.apply(&event(EventKind::Delete, &key, Vec::new(), revision));
                    }
                    continue;
                }
                match change(&mut rng) {
                    (key, Some(value)) => {
                        store.insert(key.clone(), value.clone());
                        compiler.apply(&event(EventKind::Put, &key, value, revision));
                    }
                    (key, None) => match store.remove(&key) {
                        Some(_) => {
                            compiler.apply(&event(EventKind::Delete, &key, Vec::new(), revision));
                        }
                        None => revision -= 1,
                    },
                }
            }
            let snapshot = compiler.snapshot();
            assert_same(&snapshot, &compile_from(&kvs(&store), revision, "n1"), step);
            for (id, svc) in &snapshot.services {
                services_seen += 1;
                shared += usize::from(last.services.get(id).is_some_and(|old| Arc::ptr_eq(old, svc)));
            }
            last = snapshot;
        }
        assert!(shared > services_seen / 4, "seed {seed}: only {shared} of {services_seen} service views were kept");
    }
}

#[test]
fn unchanged_views_are_shared_and_changed_ones_rebuilt() {
    let listener = |status: u16| {
        json!({"id": "listener-0", "arn": "a", "serviceId": "svc-0", "protocol": "HTTP", "port": 80,
               "defaultAction": {"fixedResponse": {"statusCode": status}}})
        .to_string()
        .into_bytes()
    };
    let mut store = BTreeMap::new();
    for svc in ["svc-0", "svc-1"] {
        store.insert(
            format!("{BASE}res/svc/{svc}"),
            json!({"id": svc, "arn": "a", "dnsName": svc}).to_string().into_bytes(),
        );
        let snsa = json!({"serviceNetworkId": "sn-0", "serviceId": svc, "status": "ACTIVE"});
        store.insert(format!("{BASE}res/snsa/snsa-{svc}"), snsa.to_string().into_bytes());
    }
    store.insert(format!("{BASE}listener/svc-0/listener-0"), listener(404));
    store
        .insert(format!("{BASE}res/tg/tg-0"), json!({"id": "tg-0", "arn": "a", "type": "IP"}).to_string().into_bytes());
    let mut compiler = Compiler::from_kvs(&kvs(&store), 1, "n1");
    let first = compiler.snapshot();
    // An index key changes nothing; a listener change rebuilds its service only.
    assert!(!compiler.apply(&event(EventKind::Put, &format!("{BASE}name/svc/x"), b"svc-0".to_vec(), 2)));
    assert!(compiler.apply(&event(EventKind::Put, &format!("{BASE}listener/svc-0/listener-0"), listener(500), 3)));
    let second = compiler.snapshot();
    assert_eq!(second.revision, 3);
    assert!(!Arc::ptr_eq(&first.services["svc-0"], &second.services["svc-0"]));
    assert!(Arc::ptr_eq(&first.services["svc-1"], &second.services["svc-1"]));
    assert!(Arc::ptr_eq(&first.target_groups["tg-0"], &second.target_groups["tg-0"]));
    let status = &second.services["svc-0"].listeners[&80].default_action;
    assert_eq!(*status, trellis_model::snapshot::Action::Fixed(500));
}

#[test]
fn a_service_record_coming_and_going_changes_what_vpcs_reach() {
    let service = json!({"id": "svc-0", "arn": "a", "dnsName": "svc-0.example"}).to_string().into_bytes();
    let mut store = BTreeMap::new();
    store.insert(format!("{BASE}res/svc/svc-0"), service.clone());
    let snsa = json!({"serviceNetworkId": "sn-0", "serviceId": "svc-0", "status": "ACTIVE"});
    store.insert(format!("{BASE}res/snsa/snsa-0"), snsa.to_string().into_bytes());
    let snva = json!({"id": "snva-0", "serviceNetworkId": "sn-0", "vpcId": "vpc-0", "privateDnsEnabled": true, "status": "ACTIVE"});
    store.insert(format!("{BASE}res/snva/snva-0"), snva.to_string().into_bytes());
    let mut compiler = Compiler::from_kvs(&kvs(&store), 1, "n1");
    assert_eq!(compiler.snapshot().vpcs["vpc-0"].reach.len(), 1);
    assert!(compiler.apply(&event(EventKind::Delete, &format!("{BASE}res/svc/svc-0"), Vec::new(), 2)));
    let gone = compiler.snapshot();
    assert!(gone.services.is_empty() && gone.vpcs["vpc-0"].reach.is_empty());
    assert!(compiler.apply(&event(EventKind::Put, &format!("{BASE}res/svc/svc-0"), service, 3)));
    assert_eq!(compiler.snapshot().vpcs["vpc-0"].reach.len(), 1);
}
