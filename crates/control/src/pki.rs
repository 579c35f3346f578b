//! The installation's certificate authority and the certificates it issues.
//!
//! The authority is made at first start and kept in the store (`pki/ca`: certificate and
//! private key), like everything the nodes of one installation must agree on; the embedded
//! store's file is readable only by its owner. Two nodes starting at once make one authority:
//! creation is a compare-and-swap on an absent key, and the loser reads the winner's.
//!
//! Generated service names get managed certificates without anything to configure: one
//! wildcard certificate per zone (`*.7d67968.vpc-lattice-svcs.<region>.on.aws`, a name per
//! service would be ten thousand signatures for ten thousand services), under `pki/managed/`,
//! issued when the first service of a zone appears (the default region's zone at start) and
//! renewed once two thirds of its lifetime have passed. [`run`] does both and publishes what
//! the data plane serves ([`Certificates`]) on a watch channel.
//!
//! [`run`] also publishes every ISSUED ACM certificate (imported or requested, under `acm/`)
//! by ARN, watching the store so that an import, reimport or delete is served within moments.
//!
//! Keys are ECDSA P-256 (what `ring` can generate). The authority signs any key, so customer
//! certificates requested through ACM can carry RSA keys made elsewhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use trellis_model::snapshot::Snapshot;
use trellis_model::tls::{Certificates, Identity, zone_of};
use trellis_store::{Compare, EventKind, KeyValue, Op, Store, StoreExt, Txn, WatchEvent};

use crate::keys::{AcmKeys, is_acm_certificate};

/// Where the authority is.
pub const CA_KEY: &str = "pki/ca";
/// Where managed certificates are, by zone.
pub const MANAGED_PREFIX: &str = "pki/managed/";
/// Everything of the authority's.
const PREFIX: &str = "pki/";
/// How long the authority's own certificate is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Issued certificates are valid from this long before they were made (clocks differ).
const BACKDATE: Duration = Duration::from_secs(3600);
/// How soon a failed step is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long [`run`] sleeps at most between looks at expiry dates.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Default lifetime of managed certificates.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Why the authority could not do something.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] trellis_store::Error),
    /// Making or signing a certificate failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A stored record could not be read.
    #[error("stored {key} is damaged: {why}")]
    Damaged {
        /// Its key.
        key: String,
        /// What is wrong with it.
        why: String,
    },
}

/// The authority as stored.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredAuthority {
    certificate_pem: String,
    private_key_pem: String,
    /// Its subject's common name (the issuer name of what it signs).
    common_name: String,
}

/// An issued certificate as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificate {
    /// The leaf, PEM.
    pub certificate_pem: String,
    /// The authority's certificate, PEM (the chain without the leaf).
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub private_key_pem: String,
    /// Serial number, hex.
    pub serial: String,
    /// The names it covers.
    pub names: Vec<String>,
    /// Valid from, in milliseconds after the Unix epoch.
    pub not_before_ms: u64,
    /// Valid until, in milliseconds after the Unix epoch.
    pub not_after_ms: u64,
}

/// The installation's certificate authority, able to sign.
pub struct Authority {
    certificate_pem: String,
    certificate_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

// === impl Authority ===

impl Authority {
    /// The authority in the store, made first if there is none.
    pub async fn load_or_create(store: &dyn Store) -> Result<Self, PkiError> {
        loop {
            if let Some(found) = Self::load(store).await? {
                return Ok(found);
            }
            let (stored, authority) = Self::create()?;
            let value = serde_json::to_vec(&stored).map_err(|e| damaged(CA_KEY, e))?;
            let txn = Txn {
                compare: vec![Compare::ModRevision(CA_KEY.to_owned(), 0)],
                success: vec![Op::Put(CA_KEY.to_owned(), value)],
                failure: vec![],
            };
            if store.txn(txn).await?.succeeded {
                tracing::info!(subject = %stored.common_name, "certificate authority created");
                return Ok(authority);
            }
            // Another node made one meanwhile: that one is the authority.
        }
    }

    /// The authority in the store, if there is one.
    pub async fn load(store: &dyn Store) -> Result<Option<Self>, PkiError> {
        let Some(kv) = store.get(CA_KEY).await? else { return Ok(None) };
        let stored: StoredAuthority = serde_json::from_slice(&kv.value).map_err(|e| damaged(CA_KEY, e))?;
        let key = KeyPair::from_pem(&stored.private_key_pem).map_err(|e| damaged(CA_KEY, e))?;
        let der =
            pem_blocks(&stored.certificate_pem).into_iter().next().ok_or_else(|| damaged(CA_KEY, "no certificate"))?;
        let issuer = Issuer::new(authority_params(&stored.common_name, SystemTime::now()), key);
        Ok(Some(Self { certificate_pem: stored.certificate_pem, certificate_der: der, issuer }))
    }

    fn create() -> Result<(StoredAuthority, Self), PkiError> {
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix).expect("the system random number generator failed");
        let common_name = format!("Trellis CA {}", hex(&suffix));
        let key = KeyPair::generate()?;
        let params = authority_params(&common_name, SystemTime::now());
        let certificate = params.self_signed(&key)?;
        let stored =
            StoredAuthority { certificate_pem: certificate.pem(), private_key_pem: key.serialize_pem(), common_name };
        let authority = Self {
            certificate_pem: stored.certificate_pem.clone(),
            certificate_der: certificate.der().to_vec(),
            issuer: Issuer::new(params, key),
        };
        Ok((stored, authority))
    }

    /// The authority's certificate, PEM: what clients trust.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Issues a certificate for `names` (the first is also its common name) with a new ECDSA
    /// P-256 key, valid for `lifetime` from now.
    pub fn issue(&self, names: &[String], lifetime: Duration) -> Result<IssuedCertificate, PkiError> {
        self.issue_for(names, &KeyPair::generate()?, lifetime)
    }

    /// Issues a certificate for `names` with `key` (whose private half is returned with it),
    /// valid for `lifetime` from now.
    pub fn issue_for(
        &self,
        names: &[String],
        key: &KeyPair,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let now = SystemTime::now();
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        if let Some(first) = names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = dn;
        let serial = serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + lifetime).into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let certificate = params.signed_by(key, &self.issuer)?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            chain_pem: self.certificate_pem.clone(),
            private_key_pem: key.serialize_pem(),
            serial: hex(&serial),
            names: names.to_vec(),
            not_before_ms: millis(now - BACKDATE),
            not_after_ms: millis(now + lifetime),
        })
    }

    /// The authority's certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }
}

/// The authority's own certificate parameters: the same subject every time it is loaded, so
/// what it signs names it as issuer.
fn authority_params(common_name: &str, now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Trellis");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(SerialNumber::from_slice(&serial()));
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_LIFETIME).into();
    params
}

// === the managed certificates ===

/// How [`run`] manages certificates.
#[derive(Clone, Debug)]
pub struct PkiSettings {
    /// Lifetime of managed certificates (renewed when a third of it is left).
    pub lifetime: Duration,
    /// Zones that get a certificate at start, before any of their services exist.
    pub zones: Vec<String>,
}

/// Keeps a managed certificate for every zone of a generated name in `snapshots` (and the
/// zones of `settings`), renews them, and publishes every certificate the data plane serves on
/// `tx`, until `stop`. Failures are logged and retried; what was published stays in force.
pub async fn run(
    store: Arc<dyn Store>,
    settings: PkiSettings,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    tx: watch::Sender<Arc<Certificates>>,
    mut stop: watch::Receiver<bool>,
) {
    let authority = loop {
        match Authority::load_or_create(store.as_ref()).await {
            Ok(a) => break a,
            Err(e) => tracing::warn!(error = %e, "cannot load the certificate authority; retrying"),
        }
        if pause(&mut stop, RETRY).await {
            return;
        }
    };
    'watch: loop {
        let (mut managed, mut customer, mut changes, mut acm_changes) = match open(store.as_ref()).await {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or watch certificates; retrying");
                if pause(&mut stop, RETRY).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let wanted = zones(&settings, &snapshots.borrow_and_update());
            let mut failed = false;
            for zone in &wanted {
                let due = managed.get(zone).is_none_or(|(c, _)| renew_at(c, settings.lifetime) <= SystemTime::now());
                if due && let Err(e) = renew(store.as_ref(), &authority, zone, &mut managed, settings.lifetime).await {
                    tracing::warn!(%zone, error = %e, "cannot issue the managed certificate; retrying");
                    failed = true;
                }
            }
            tx.send_if_modified(|published| {
                let next = publish(&managed, &customer);
                let changed = **published != next;
                if changed {
                    *published = Arc::new(next);
                }
                changed
            });
            let next = wanted
                .iter()
                .filter_map(|z| managed.get(z))
                .map(|(c, _)| renew_at(c, settings.lifetime))
                .min()
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP);
            let sleep = if failed { RETRY } else { next.max(Duration::from_millis(10)) };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                r = snapshots.changed() => if r.is_err() { return },
                event = changes.recv() => match event {
                    Some(Ok(e)) => {
                        if let Some(zone) = e.kv.key.strip_prefix(MANAGED_PREFIX) {
                            match e.kind {
                                EventKind::Delete => { managed.remove(zone); }
                                EventKind::Put => match serde_json::from_slice(&e.kv.value) {
                                    Ok(c) => { managed.insert(zone.to_owned(), (c, e.kv.mod_revision)); }
                                    Err(e) => tracing::warn!(%zone, error = %e, "damaged managed certificate"),
                                },
                            }
                        }
                    }
                    // Compacted or gone: read afresh.
                    Some(Err(_)) | None => continue 'watch,
                },
                event = acm_changes.recv() => match event {
                    Some(Ok(e)) => apply_customer(&mut customer, &e),
                    Some(Err(_)) | None => continue 'watch,
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// `GET /_trellis/ca`: the authority's certificate, PEM (what `trellis ca` prints).
pub fn router(store: Arc<dyn Store>) -> axum::Router {
    axum::Router::new().route("/_trellis/ca", axum::routing::get(ca_certificate)).with_state(store)
}

async fn ca_certificate(axum::extract::State(store): axum::extract::State<Arc<dyn Store>>) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    match Authority::load(store.as_ref()).await {
        Ok(Some(ca)) => ([(header::CONTENT_TYPE, "application/x-pem-file")], ca.certificate_pem).into_response(),
        Ok(None) => {
            (StatusCode::SERVICE_UNAVAILABLE, "the certificate authority is being made; try again\n").into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Managed certificates by zone, with the revision each was read at.
type Managed = BTreeMap<String, (IssuedCertificate, i64)>;

/// Customer (ACM) certificates by store key: ARN and what the data plane serves.
type Customer = BTreeMap<String, (String, Arc<Identity>)>;

/// Reads the managed and customer certificates and watches both from where they were read.
async fn open(
    store: &dyn Store,
) -> Result<(Managed, Customer, trellis_store::WatchStream, trellis_store::WatchStream), PkiError> {
    let (managed, revision) = read_managed(store).await?;
    let changes = store.watch(PREFIX.to_owned(), revision + 1).await?;
    let read = store.list_prefix(AcmKeys::PREFIX, None, 0).await?;
    let customer = read.kvs.iter().filter_map(customer_identity).collect();
    let acm_changes = store.watch(AcmKeys::PREFIX.to_owned(), read.revision + 1).await?;
    Ok((managed, customer, changes, acm_changes))
}

/// Applies a change under `acm/` to the customer certificates.
fn apply_customer(customer: &mut Customer, e: &WatchEvent) {
    if !is_acm_certificate(&e.kv.key) {
        return;
    }
    match (e.kind, customer_identity(&e.kv)) {
        (EventKind::Put, Some((key, entry))) => {
            customer.insert(key, entry);
        }
        _ => {
            customer.remove(&e.kv.key);
        }
    }
}

/// What the data plane serves of a stored ACM certificate, if it is one and ISSUED.
fn customer_identity(kv: &KeyValue) -> Option<(String, (String, Arc<Identity>))> {
    if !is_acm_certificate(&kv.key) {
        return None;
    }
    let c: trellis_model::acm::Certificate = match serde_json::from_slice(&kv.value) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "damaged ACM certificate");
            return None;
        }
    };
    if c.status != trellis_model::acm::ISSUED {
        return None;
    }
    let mut chain = pem_blocks(&c.certificate_pem);
    chain.extend(pem_blocks(&c.chain_pem));
    let key = pem_blocks(&c.private_key_pem).into_iter().next()?;
    // A reimport may keep the serial and change the chain or key: the import time tells them
    // apart, so the proxy parses the new one.
    let serial = format!("{}/{}", c.details.serial, c.imported_at.map_or(0, |t| t.0));
    let identity = Identity { serial, chain, key, not_after_ms: c.details.not_after.0 };
    Some((kv.key.clone(), (c.arn, Arc::new(identity))))
}

async fn read_managed(store: &dyn Store) -> Result<(Managed, i64), PkiError> {
    let read = store.list_prefix(MANAGED_PREFIX, None, 0).await?;
    let mut managed = Managed::new();
    for kv in read.kvs {
        let zone = kv.key.strip_prefix(MANAGED_PREFIX).unwrap_or_default().to_owned();
        match serde_json::from_slice(&kv.value) {
            Ok(c) => {
                managed.insert(zone, (c, kv.mod_revision));
            }
            // Replaced by a fresh one.
            Err(e) => tracing::warn!(%zone, error = %e, "damaged managed certificate"),
        }
    }
    Ok((managed, read.revision))
}

/// Issues a new certificate for `zone` and stores it, unless another node stored one first
/// (then that one is read).
async fn renew(
    store: &dyn Store,
    authority: &Authority,
    zone: &str,
    managed: &mut Managed,
    lifetime: Duration,
) -> Result<(), PkiError> {
    let key = format!("{MANAGED_PREFIX}{zone}");
    let seen = managed.get(zone).map_or(0, |(_, rev)| *rev);
    let issued = authority.issue(&[format!("*.{zone}")], lifetime)?;
    let value = serde_json::to_vec(&issued).map_err(|e| damaged(&key, e))?;
    let txn = Txn {
        compare: vec![Compare::ModRevision(key.clone(), seen)],
        success: vec![Op::Put(key.clone(), value)],
        failure: vec![],
    };
    let done = store.txn(txn).await?;
    if done.succeeded {
        tracing::info!(%zone, serial = %issued.serial, "managed certificate issued");
        managed.insert(zone.to_owned(), (issued, done.revision));
    } else if let Some(kv) = store.get(&key).await? {
        let theirs = serde_json::from_slice(&kv.value).map_err(|e| damaged(&key, e))?;
        managed.insert(zone.to_owned(), (theirs, kv.mod_revision));
    }
    Ok(())
}

/// The zones that need a managed certificate.
fn zones(settings: &PkiSettings, snapshot: &Snapshot) -> BTreeSet<String> {
    let mut zones: BTreeSet<String> = settings.zones.iter().cloned().collect();
    for service in snapshot.services.values() {
        if let Some(zone) = zone_of(&service.dns_name)
            && !zones.contains(zone)
        {
            zones.insert(zone.to_owned());
        }
    }
    zones
}

/// When a certificate is due for renewal: once a third of its lifetime is left (and never
/// later than a third of the configured lifetime before it expires).
fn renew_at(c: &IssuedCertificate, lifetime: Duration) -> SystemTime {
    let (from, until) = (c.not_before_ms, c.not_after_ms);
    let third = (until.saturating_sub(from) / 3).min(u64::try_from(lifetime.as_millis() / 3).unwrap_or(u64::MAX));
    UNIX_EPOCH + Duration::from_millis(until.saturating_sub(third))
}

fn publish(managed: &Managed, customer: &Customer) -> Certificates {
    let mut zones = HashMap::new();
    for (zone, (c, _)) in managed {
        match identity(c) {
            Some(id) => {
                zones.insert(zone.clone(), Arc::new(id));
            }
            None => tracing::warn!(%zone, "managed certificate cannot be read"),
        }
    }
    let by_arn = customer.values().map(|(arn, id)| (arn.clone(), id.clone())).collect();
    Certificates { zones, by_arn }
}

/// What the data plane needs of an issued certificate: DER chain and key.
pub fn identity(c: &IssuedCertificate) -> Option<Identity> {
    let mut chain = pem_blocks(&c.certificate_pem);
    chain.extend(pem_blocks(&c.chain_pem));
    let key = pem_blocks(&c.private_key_pem).into_iter().next()?;
    (!chain.is_empty()).then(|| Identity { serial: c.serial.clone(), chain, key, not_after_ms: c.not_after_ms })
}

/// The DER contents of each PEM block in `text`.
pub fn pem_blocks(text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(text).map(|blocks| blocks.into_iter().map(pem::Pem::into_contents).collect()).unwrap_or_default()
}

/// Waits `d`; true if `stop` was raised meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

fn damaged(key: &str, why: impl std::fmt::Display) -> PkiError {
    PkiError::Damaged { key: key.to_owned(), why: why.to_string() }
}

/// A random positive 16-byte serial number.
fn serial() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the system random number generator failed");
    b[0] &= 0x7f;
    b[0] |= 0x01;
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
