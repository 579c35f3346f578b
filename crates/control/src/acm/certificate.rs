//! ImportCertificate, RequestCertificate, DescribeCertificate, GetCertificate and
//! DeleteCertificate.
//!
//! Requested certificates are issued at once by the installation's authority, valid for 395
//! days (ACM's 13 months) and never renewed (RenewalEligibility INELIGIBLE): no validation
//! step exists, so DomainValidationOptions report every name as validated by DNS.

use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use trellis_model::Timestamp;
use trellis_model::acm::{AMAZON_ISSUED, Certificate, Details, IMPORTED, ISSUED, Tag};

use super::{AcmError, CERTIFICATE_QUOTA, Reply, Req, check_tags, epoch, x509};
use crate::keys::rel;
use crate::pki::Authority;
use crate::repo::{self, Attempts, Tx};

/// How long requested certificates are valid.
const LIFETIME: Duration = Duration::from_secs(395 * 24 * 3600);
/// How long RequestCertificate remembers an idempotency token.
const TOKEN_LIFETIME_MS: u64 = 3600 * 1000;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImportCertificateRequest {
    certificate_arn: Option<String>,
    certificate: String,
    private_key: String,
    certificate_chain: Option<String>,
    tags: Option<Vec<Tag>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestCertificateRequest {
    domain_name: String,
    validation_method: Option<String>,
    subject_alternative_names: Option<Vec<String>>,
    idempotency_token: Option<String>,
    options: Option<CertificateOptions>,
    tags: Option<Vec<Tag>>,
    key_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CertificateOptions {
    export: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArnRequest {
    certificate_arn: String,
}

/// What RequestCertificate remembers of an idempotency token.
#[derive(serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Remembered {
    arn: String,
    at: Timestamp,
}

pub(super) async fn import(req: &Req<'_>) -> Reply {
    let input: ImportCertificateRequest = req.input()?;
    let certificate = blob(&input.certificate, "certificate", 32768)?;
    let private_key = blob(&input.private_key, "privateKey", 5120)?;
    let chain = input.certificate_chain.as_deref().map(|c| blob(c, "certificateChain", 2_097_152)).transpose()?;
    if let Some(tags) = &input.tags {
        if input.certificate_arn.is_some() {
            return Err(AcmError::InvalidParameter("You cannot apply tags when reimporting a certificate.".into()));
        }
        check_tags(tags)?;
    }
    let (material, details) = read_import(&certificate, &private_key, chain.as_deref())?;
    let now = crate::now();
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let mut tx = Tx::default();
        let arn = match &input.certificate_arn {
            Some(arn) => {
                let (_, read) = req.find(arn).await?;
                if read.value.kind != IMPORTED {
                    return Err(AcmError::Validation(format!(
                        "Certificate {arn} was not imported: only imported certificates can be reimported."
                    )));
                }
                let mut record = read.value.clone();
                (record.certificate_pem, record.chain_pem, record.private_key_pem) = material.clone();
                record.details = details.clone();
                record.imported_at = Some(now);
                tx.update(&read, &record);
                arn.clone()
            }
            None => {
                let counter = quota(req).await?;
                let id = crate::request_id();
                let record = Certificate {
                    arn: req.arn(&id),
                    kind: IMPORTED.to_owned(),
                    status: ISSUED.to_owned(),
                    certificate_pem: material.0.clone(),
                    chain_pem: material.1.clone(),
                    private_key_pem: material.2.clone(),
                    details: details.clone(),
                    created_at: now,
                    issued_at: None,
                    imported_at: Some(now),
                    export: None,
                    tags: input.tags.clone().unwrap_or_default(),
                };
                tx.create(req.keys.certificate(&id), &record);
                tx.count(&counter, 1);
                record.arn
            }
        };
        if attempts.commit(store, tx).await? {
            return Ok(json!({ "CertificateArn": arn }));
        }
    }
}

pub(super) async fn request(req: &Req<'_>) -> Reply {
    let input: RequestCertificateRequest = req.input()?;
    check_domain(&input.domain_name, "domainName")?;
    if input.domain_name.len() > 64 {
        return Err(AcmError::Validation(format!(
            "The domain name {} is longer than 64 octets: put it in SubjectAlternativeNames, and a shorter name in DomainName.",
            input.domain_name
        )));
    }
    let mut names = vec![input.domain_name.to_ascii_lowercase()];
    for (i, san) in input.subject_alternative_names.iter().flatten().enumerate() {
        check_domain(san, &format!("subjectAlternativeNames.{}.member", i + 1))?;
        let san = san.to_ascii_lowercase();
        if !names.contains(&san) {
            names.push(san);
        }
    }
    if input.subject_alternative_names.as_ref().is_some_and(|s| s.is_empty() || s.len() > 100) {
        return Err(AcmError::constraint(
            "subjectAlternativeNames",
            "subjectAlternativeNames",
            "Member must have length less than or equal to 100 and greater than or equal to 1",
        ));
    }
    if names.len() > 10 {
        return Err(AcmError::LimitExceeded(format!(
            "Cannot issue a certificate for {} domain names: the quota is 10 names per certificate.",
            names.len()
        )));
    }
    if let Some(method) = &input.validation_method {
        enum_member(method, "validationMethod", &["EMAIL", "DNS", "HTTP"])?;
    }
    if let Some(token) = &input.idempotency_token
        && !((1..=32).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(AcmError::constraint(
            token,
            "idempotencyToken",
            "Member must have length between 1 and 32 and satisfy regular expression pattern: \\w+",
        ));
    }
    let export = input.options.and_then(|o| o.export);
    if let Some(export) = &export {
        enum_member(export, "options.export", &["ENABLED", "DISABLED"])?;
    }
    if let Some(tags) = &input.tags {
        check_tags(tags)?;
    }
    let algorithm = input.key_algorithm.as_deref().unwrap_or("RSA_2048");
    enum_member(
        algorithm,
        "keyAlgorithm",
        &["RSA_1024", "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1"],
    )?;
    let store = req.store();
    if let Some(token) = &input.idempotency_token
        && let Some(arn) = remembered(req, token).await?
    {
        return Ok(json!({ "CertificateArn": arn }));
    }
    let key = new_key(algorithm).await?;
    let authority = Authority::load_or_create(store).await.map_err(|e| AcmError::Internal(e.to_string()))?;
    let issued = authority.issue_for(&names, &key, LIFETIME).map_err(|e| AcmError::Internal(e.to_string()))?;
    let leaf = x509::certificate_der(issued.certificate_pem.as_bytes(), "certificate").map_err(AcmError::Internal)?;
    let details = x509::read_leaf(&leaf).map_err(AcmError::Internal)?.details;
    let now = crate::now();
    let mut attempts = Attempts::default();
    loop {
        if let Some(token) = &input.idempotency_token
            && let Some(arn) = remembered(req, token).await?
        {
            return Ok(json!({ "CertificateArn": arn }));
        }
        let counter = quota(req).await?;
        let id = crate::request_id();
        let record = Certificate {
            arn: req.arn(&id),
            kind: AMAZON_ISSUED.to_owned(),
            status: ISSUED.to_owned(),
            certificate_pem: issued.certificate_pem.clone(),
            chain_pem: issued.chain_pem.clone(),
            private_key_pem: issued.private_key_pem.clone(),
            details: details.clone(),
            created_at: now,
            issued_at: Some(now),
            imported_at: None,
            export: export.clone(),
            tags: input.tags.clone().unwrap_or_default(),
        };
        let mut tx = Tx::default();
        tx.create(req.keys.certificate(&id), &record);
        tx.count(&counter, 1);
        if let Some(token) = &input.idempotency_token {
            tx.put(req.keys.token(token), &Remembered { arn: record.arn.clone(), at: now });
        }
        if attempts.commit(store, tx).await? {
            return Ok(json!({ "CertificateArn": record.arn }));
        }
    }
}

pub(super) async fn describe(req: &Req<'_>) -> Reply {
    let input: ArnRequest = req.input()?;
    let (id, read) = req.find(&input.certificate_arn).await?;
    let c = &read.value;
    let d = &c.details;
    let mut out = json!({
        "CertificateArn": c.arn,
        "DomainName": d.domain_name,
        "SubjectAlternativeNames": d.subject_alternative_names,
        "Serial": d.serial,
        "Subject": d.subject,
        "Issuer": d.issuer,
        "CreatedAt": epoch(c.created_at),
        "Status": c.status,
        "NotBefore": epoch(d.not_before),
        "NotAfter": epoch(d.not_after),
        "KeyAlgorithm": d.key_algorithm,
        "SignatureAlgorithm": d.signature_algorithm,
        "InUseBy": req.in_use_by(&id).await?,
        "Type": c.kind,
        "KeyUsages": d.key_usages.iter().map(|n| json!({ "Name": n })).collect::<Vec<_>>(),
        "ExtendedKeyUsages": d.extended_key_usages.iter()
            .map(|e| json!({ "Name": e.name, "OID": e.oid })).collect::<Vec<_>>(),
        "RenewalEligibility": "INELIGIBLE",
        "Options": options(c),
        "CertificateKeyPairOrigin": origin(c),
    });
    let obj = out.as_object_mut().expect("a JSON object literal");
    if let Some(at) = c.issued_at {
        obj.insert("IssuedAt".into(), epoch(at));
    }
    if let Some(at) = c.imported_at {
        obj.insert("ImportedAt".into(), epoch(at));
    }
    if c.kind == AMAZON_ISSUED {
        let validations: Vec<Value> = d
            .subject_alternative_names
            .iter()
            .map(|name| {
                json!({
                    "DomainName": name,
                    "ValidationDomain": name.strip_prefix("*.").unwrap_or(name),
                    "ValidationStatus": "SUCCESS",
                    "ValidationMethod": "DNS",
                })
            })
            .collect();
        obj.insert("DomainValidationOptions".into(), json!(validations));
    }
    Ok(json!({ "Certificate": out }))
}

pub(super) async fn get(req: &Req<'_>) -> Reply {
    let input: ArnRequest = req.input()?;
    let (_, read) = req.find(&input.certificate_arn).await?;
    let c = read.value;
    let mut out = json!({ "Certificate": c.certificate_pem });
    if !c.chain_pem.is_empty() {
        out["CertificateChain"] = json!(c.chain_pem);
    }
    Ok(out)
}

pub(super) async fn delete(req: &Req<'_>) -> Reply {
    let input: ArnRequest = req.input()?;
    let arn = &input.certificate_arn;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        // The use counter first: a service that starts using the certificate after it was read
        // moves it (and fails on the record's revision anyway).
        let (id, read) = req.find(arn).await?;
        let users = repo::counter(store, req.lattice.counter(rel::CERT_SVC, &id)).await?;
        if users.value() > 0 {
            return Err(AcmError::ResourceInUse(format!(
                "Certificate {arn} in account {} is in use.",
                req.ctx.account
            )));
        }
        let count = repo::counter(store, req.keys.count()).await?;
        let mut tx = Tx::default();
        tx.delete_read(&read);
        tx.retire(&users);
        tx.count(&count, -1);
        if attempts.commit(store, tx).await? {
            return Ok(json!({}));
        }
    }
}

/// The quota counter, refused when full.
async fn quota(req: &Req<'_>) -> Result<repo::Counter, AcmError> {
    let counter = repo::counter(req.store(), req.keys.count()).await?;
    if counter.value() >= CERTIFICATE_QUOTA {
        return Err(AcmError::LimitExceeded(format!(
            "Error importing certificate: the quota of {CERTIFICATE_QUOTA} certificates in this region is reached."
        )));
    }
    Ok(counter)
}

/// The ARN an idempotency token stands for, if it was given within the last hour.
async fn remembered(req: &Req<'_>, token: &str) -> Result<Option<String>, AcmError> {
    let Some(read) = repo::load::<Remembered>(req.store(), &req.keys.token(token)).await? else { return Ok(None) };
    let fresh = crate::now().0.saturating_sub(read.value.at.0) < TOKEN_LIFETIME_MS;
    Ok(fresh.then_some(read.value.arn))
}

/// A new key pair for `algorithm`. RSA keys are made on a blocking thread: it takes a while.
async fn new_key(algorithm: &str) -> Result<rcgen::KeyPair, AcmError> {
    let internal = |e: String| AcmError::Internal(format!("cannot make a {algorithm} key: {e}"));
    match algorithm {
        "RSA_2048" => {
            let pkcs8 = tokio::task::spawn_blocking(|| {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::PrivateKey::new(&mut SystemRng, 2048).map_err(|e| e.to_string())?;
                key.to_pkcs8_der().map(|doc| doc.as_bytes().to_vec()).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(internal)?;
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.into(), &rcgen::PKCS_RSA_SHA256)
                .map_err(|e| internal(e.to_string()))
        }
        "EC_prime256v1" => {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| internal(e.to_string()))
        }
        "EC_secp384r1" => {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(|e| internal(e.to_string()))
        }
        other => Err(AcmError::InvalidParameter(format!(
            "KeyAlgorithm {other} is not supported for requested certificates: use RSA_2048, EC_prime256v1 or EC_secp384r1."
        ))),
    }
}

/// The system's random number generator (getrandom 0.3, the workspace's) as the `rsa` crate
/// takes one.
struct SystemRng;

impl rsa::rand_core::TryRng for SystemRng {
    type Error = std::io::Error;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        getrandom::u32().map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        getrandom::u64().map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        getrandom::fill(dst).map_err(|e| std::io::Error::other(e.to_string()))
    }
}

impl rsa::rand_core::TryCryptoRng for SystemRng {}

/// The stored PEM forms (leaf, chain, PKCS#8 key) and details of an import, checked as ACM
/// checks them: one certificate, valid now, a key that matches it, a chain that issues it.
fn read_import(
    certificate: &[u8],
    private_key: &[u8],
    chain: Option<&[u8]>,
) -> Result<((String, String, String), Details), AcmError> {
    let invalid = AcmError::Validation;
    let leaf = x509::certificate_der(certificate, "certificate").map_err(invalid)?;
    let read = x509::read_leaf(&leaf).map_err(invalid)?;
    let pkcs8 = x509::private_key_pkcs8(private_key).map_err(invalid)?;
    x509::check_key_pair(&pkcs8, &read.public_key).map_err(invalid)?;
    let now = SystemTime::now();
    let now_ms = crate::now();
    if now_ms < read.details.not_before || now_ms > read.details.not_after {
        return Err(AcmError::Validation(format!(
            "The certificate is not valid at the current time: it is valid from {} to {}.",
            read.details.not_before.iso8601(),
            read.details.not_after.iso8601()
        )));
    }
    let chain = chain.map(x509::chain_ders).transpose().map_err(invalid)?.unwrap_or_default();
    x509::check_chain(&leaf, &chain, now).map_err(invalid)?;
    let chain_pem: String = chain.iter().map(|der| pem_of("CERTIFICATE", der)).collect();
    Ok(((pem_of("CERTIFICATE", &leaf), chain_pem, pem_of("PRIVATE KEY", &pkcs8)), read.details))
}

fn pem_of(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der.to_vec()), config)
}

/// A blob member: base64 in the JSON, of at most `max` bytes once decoded.
fn blob(text: &str, member: &str, max: usize) -> Result<Vec<u8>, AcmError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| AcmError::Serialization(format!("{member}: not valid base64")))?;
    if bytes.is_empty() || bytes.len() > max {
        return Err(AcmError::constraint(
            &format!("{} bytes", bytes.len()),
            member,
            &format!("Member must have length less than or equal to {max} and greater than or equal to 1"),
        ));
    }
    Ok(bytes)
}

/// `DomainNameString`: 1–253 characters,
/// `(\*\.)?(((?!-)[A-Za-z0-9-]{0,62}[A-Za-z0-9])\.)+((?!-)[A-Za-z0-9-]{1,62}[A-Za-z0-9])`.
fn check_domain(name: &str, member: &str) -> Result<(), AcmError> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let labels: Vec<&str> = bare.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let last_ok = labels.last().is_some_and(|l| l.len() >= 2);
    if (1..=253).contains(&name.len()) && labels.len() >= 2 && labels.iter().all(label_ok) && last_ok {
        return Ok(());
    }
    Err(AcmError::constraint(
        name,
        member,
        "Member must satisfy regular expression pattern: (\\*\\.)?(((?!-)[A-Za-z0-9-]{0,62}[A-Za-z0-9])\\.)+((?!-)[A-Za-z0-9-]{1,62}[A-Za-z0-9])",
    ))
}

/// An enum member must be one of `values`.
pub(super) fn enum_member(value: &str, member: &str, values: &[&str]) -> Result<(), AcmError> {
    if values.contains(&value) {
        return Ok(());
    }
    Err(AcmError::constraint(value, member, &format!("Member must satisfy enum value set: [{}]", values.join(", "))))
}

/// `Options` as DescribeCertificate shows them.
fn options(c: &Certificate) -> Value {
    let mut options = json!({ "CertificateTransparencyLoggingPreference": "ENABLED" });
    if let Some(export) = &c.export {
        options["Export"] = json!(export);
    }
    options
}

/// `CertificateKeyPairOrigin`: the key was made here, or brought.
pub(super) fn origin(c: &Certificate) -> &'static str {
    if c.kind == IMPORTED { "CUSTOMER_PROVIDED" } else { "AWS_MANAGED" }
}
