use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trellis_model::snapshot::{ServiceView, Snapshot};
use trellis_model::tls::Certificates;
use trellis_store::{SqliteStore, Store, StoreExt};

use super::*;

fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("store.db"), Default::default()).expect("store");
    (Arc::new(store), dir)
}

#[tokio::test]
async fn the_authority_is_made_once_and_kept() {
    let (store, _dir) = store();
    assert!(Authority::load(store.as_ref()).await.expect("load").is_none());
    let first = Authority::load_or_create(store.as_ref()).await.expect("create");
    let again = Authority::load_or_create(store.as_ref()).await.expect("load");
    assert_eq!(first.certificate_pem(), again.certificate_pem());
    assert!(first.certificate_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    let stored = store.get(CA_KEY).await.expect("get").expect("stored");
    let text = String::from_utf8(stored.value).expect("utf-8");
    assert!(text.contains("PRIVATE KEY"), "the key is kept with the certificate");
}

#[tokio::test]
async fn nodes_starting_together_agree_on_one_authority() {
    let (store, _dir) = store();
    let (a, b) = tokio::join!(Authority::load_or_create(store.as_ref()), Authority::load_or_create(store.as_ref()));
    assert_eq!(a.expect("a").certificate_pem(), b.expect("b").certificate_pem());
}

#[tokio::test]
async fn issued_certificates_chain_to_the_authority_and_carry_the_names() {
    let (store, _dir) = store();
    let ca = Authority::load_or_create(store.as_ref()).await.expect("create");
    let names = vec!["*.example.test".to_owned(), "example.test".to_owned()];
    let issued = ca.issue(&names, Duration::from_secs(3600)).expect("issue");
    assert_eq!(issued.names, names);
    assert_eq!(issued.chain_pem, ca.certificate_pem());
    assert_eq!(issued.not_after_ms - issued.not_before_ms, (3600 + 3600) * 1000);
    let first = identity(&issued).expect("identity");
    assert_eq!(first.chain.len(), 2);
    assert_eq!(first.chain[1], ca.certificate_der());
    assert_eq!(first.serial.len(), 32);
    let other = ca.issue(&names, Duration::from_secs(3600)).expect("issue");
    assert_ne!(other.serial, issued.serial, "serials are random");
    assert_ne!(other.private_key_pem, issued.private_key_pem, "every certificate gets its own key");
    // A reloaded authority signs as the same issuer (its subject is kept).
    let reloaded = Authority::load(store.as_ref()).await.expect("load").expect("there");
    let third = identity(&reloaded.issue(&names, Duration::from_secs(60)).expect("issue")).expect("identity");
    assert_eq!(issuer_name(&third.chain[0]), issuer_name(&first.chain[0]));
}

/// The authority's common name as it appears in a certificate it issued.
fn issuer_name(der: &[u8]) -> Vec<u8> {
    let needle = b"Trellis CA ";
    let at = der.windows(needle.len()).position(|w| w == needle).expect("the issuer names the authority");
    der[at..at + needle.len() + 8].to_vec()
}

#[test]
fn renewal_is_due_when_a_third_is_left() {
    let c = IssuedCertificate {
        certificate_pem: String::new(),
        chain_pem: String::new(),
        private_key_pem: String::new(),
        serial: String::new(),
        names: vec![],
        not_before_ms: 0,
        not_after_ms: 90_000,
    };
    assert_eq!(renew_at(&c, Duration::from_secs(90)), UNIX_EPOCH + Duration::from_millis(60_000));
    // A certificate issued with a longer lifetime is renewed by the configured one's rule.
    assert_eq!(renew_at(&c, Duration::from_secs(30)), UNIX_EPOCH + Duration::from_millis(80_000));
}

fn service(id: &str, dns_name: &str) -> Arc<ServiceView> {
    Arc::new(ServiceView {
        id: id.into(),
        arn: format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{id}").into(),
        dns_name: dns_name.into(),
        custom_domain_name: None,
        certificate_arn: None,
        idle_timeout: Duration::from_secs(60),
        listeners: Default::default(),
    })
}

async fn published(
    rx: &mut watch::Receiver<Arc<Certificates>>,
    want: impl Fn(&Certificates) -> bool,
) -> Arc<Certificates> {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| want(c)))
        .await
        .expect("published in time")
        .expect("publisher alive")
        .clone()
}

#[tokio::test]
async fn managed_certificates_follow_the_zones_and_renew() {
    let (store, _dir) = store();
    let (snapshots_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let (tx, mut rx) = watch::channel(Arc::new(Certificates::default()));
    let (stop_tx, stop) = watch::channel(false);
    let settings = PkiSettings { lifetime: Duration::from_secs(6), zones: vec!["a.zone.test".into()] };
    let task = tokio::spawn(run(store.clone(), settings, snapshots, tx, stop));

    // The configured zone gets its certificate at once.
    let first = published(&mut rx, |c| c.zones.contains_key("a.zone.test")).await;
    let serial = first.zones["a.zone.test"].serial.clone();
    assert!(first.managed_for("svc-1.a.zone.test").is_some());
    assert!(first.managed_for("svc-1.b.zone.test").is_none());

    // A service in another zone brings that zone's.
    let mut snapshot = Snapshot::default();
    snapshot.services.insert("svc-2".into(), service("svc-2", "two-0123.b.zone.test"));
    snapshots_tx.send_replace(Arc::new(snapshot));
    let second = published(&mut rx, |c| c.zones.contains_key("b.zone.test")).await;
    assert_eq!(second.zones["a.zone.test"].serial, serial, "nothing else is reissued");

    // Renewed once two thirds of six seconds have passed (well within ten).
    let renewed = published(&mut rx, |c| c.zones.get("a.zone.test").is_some_and(|i| i.serial != serial)).await;
    assert!(renewed.zones["a.zone.test"].not_after_ms > first.zones["a.zone.test"].not_after_ms);
    let stored = store.list_prefix(MANAGED_PREFIX, None, 0).await.expect("list");
    assert_eq!(stored.kvs.len(), 2);

    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("no panic");
}

#[tokio::test]
async fn a_second_publisher_serves_what_the_first_issued() {
    let (store, _dir) = store();
    let settings = PkiSettings { lifetime: Duration::from_secs(3600), zones: vec!["z.test".into()] };
    let (_snapshots_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let (stop_tx, stop) = watch::channel(false);
    let (tx1, mut rx1) = watch::channel(Arc::new(Certificates::default()));
    let (tx2, mut rx2) = watch::channel(Arc::new(Certificates::default()));
    let one = tokio::spawn(run(store.clone(), settings.clone(), snapshots.clone(), tx1, stop.clone()));
    let a = published(&mut rx1, |c| c.zones.contains_key("z.test")).await;
    let two = tokio::spawn(run(store.clone(), settings, snapshots, tx2, stop));
    let b = published(&mut rx2, |c| c.zones.contains_key("z.test")).await;
    assert_eq!(a.zones["z.test"].serial, b.zones["z.test"].serial);
    stop_tx.send_replace(true);
    let _ = tokio::join!(one, two);
}

#[tokio::test]
async fn imported_certificates_are_served_by_arn_until_deleted() {
    use base64::Engine;
    use serde_json::json;

    let (app, store, _dir) = crate::test_util::app_and_store();
    let settings = PkiSettings { lifetime: Duration::from_secs(3600), zones: vec![] };
    let (_snapshots_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let (tx, mut rx) = watch::channel(Arc::new(Certificates::default()));
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(run(store.clone(), settings, snapshots, tx, stop));

    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["shop.example.com".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let b64 = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
    let body = json!({"Certificate": b64(cert.pem()), "PrivateKey": b64(key.serialize_pem())});
    let (status, out) = crate::test_util::acm(&app, "ImportCertificate", body).await;
    assert_eq!(status, 200, "{out}");
    let arn = out["CertificateArn"].as_str().expect("arn").to_owned();

    let served = published(&mut rx, |c| c.by_arn.contains_key(&arn)).await;
    let identity = &served.by_arn[&arn];
    assert_eq!(identity.chain, [cert.der().to_vec()]);
    assert_eq!(identity.key, key.serialized_der(), "PKCS#8 DER");

    let (status, out) = crate::test_util::acm(&app, "DeleteCertificate", json!({"CertificateArn": arn})).await;
    assert_eq!(status, 200, "{out}");
    published(&mut rx, |c| !c.by_arn.contains_key(&arn)).await;

    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("no panic");
}
