//! ListCertificates: every certificate of the region is read (the quota keeps that to 2500),
//! filtered, sorted and paged. The filters are the model's: `CertificateStatuses`,
//! `CertificateKeyPairOrigins` (default: AWS_MANAGED and CUSTOMER_PROVIDED) and `Includes`
//! (`keyTypes`, default RSA_1024 and RSA_2048 as ACM documents; `keyUsage` and
//! `extendedKeyUsage`, of which a certificate must carry at least one; `exportOption`;
//! `managedBy`, which no Trellis certificate is). Without `SortBy` the order is by creation
//! time, oldest first, as with `SortBy=CREATED_AT, SortOrder=ASCENDING`.
//!
//! The page token is the sort key of the last certificate of the page (creation time and
//! UUID), in hex: a page never repeats or skips a certificate that was there all along.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};
use trellis_model::acm::Certificate;
use trellis_store::StoreExt;

use super::certificate::{enum_member, origin};
use super::{AcmError, Reply, Req, epoch};
use crate::keys::{key_of_token, rel, token_of};
use crate::repo;

const STATUSES: &[&str] =
    &["PENDING_VALIDATION", "ISSUED", "INACTIVE", "EXPIRED", "VALIDATION_TIMED_OUT", "REVOKED", "FAILED"];
const KEY_TYPES: &[&str] =
    &["RSA_1024", "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1"];
const KEY_USAGES: &[&str] = &[
    "DIGITAL_SIGNATURE",
    "NON_REPUDIATION",
    "KEY_ENCIPHERMENT",
    "DATA_ENCIPHERMENT",
    "KEY_AGREEMENT",
    "CERTIFICATE_SIGNING",
    "CRL_SIGNING",
    "ENCIPHER_ONLY",
    "DECIPHER_ONLY",
    "ANY",
    "CUSTOM",
];
const EXTENDED_KEY_USAGES: &[&str] = &[
    "TLS_WEB_SERVER_AUTHENTICATION",
    "TLS_WEB_CLIENT_AUTHENTICATION",
    "CODE_SIGNING",
    "EMAIL_PROTECTION",
    "TIME_STAMPING",
    "OCSP_SIGNING",
    "IPSEC_END_SYSTEM",
    "IPSEC_TUNNEL",
    "IPSEC_USER",
    "ANY",
    "NONE",
    "CUSTOM",
];
const ORIGINS: &[&str] = &["AWS_MANAGED", "ACME", "CUSTOMER_PROVIDED"];

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ListCertificatesRequest {
    certificate_statuses: Option<Vec<String>>,
    certificate_key_pair_origins: Option<Vec<String>>,
    includes: Option<Filters>,
    next_token: Option<String>,
    max_items: Option<i64>,
    sort_by: Option<String>,
    sort_order: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filters {
    extended_key_usage: Option<Vec<String>>,
    key_usage: Option<Vec<String>>,
    key_types: Option<Vec<String>>,
    export_option: Option<String>,
    managed_by: Option<String>,
}

pub(super) async fn list(req: &Req<'_>) -> Reply {
    let input: ListCertificatesRequest = req.input()?;
    let filter = Filter::new(&input)?;
    let limit = match input.max_items {
        None => 1000,
        Some(n @ 1..=1000) => n as usize,
        Some(n) => {
            return Err(AcmError::constraint(
                &n.to_string(),
                "maxItems",
                "Member must have value less than or equal to 1000 and greater than or equal to 1",
            ));
        }
    };
    let descending = match (input.sort_by.as_deref(), input.sort_order.as_deref()) {
        (None, None) => false,
        (Some(by), Some(order)) => {
            enum_member(by, "sortBy", &["CREATED_AT"])?;
            enum_member(order, "sortOrder", &["ASCENDING", "DESCENDING"])?;
            order == "DESCENDING"
        }
        _ => return Err(AcmError::InvalidArgs("SortBy and SortOrder must be given together.".into())),
    };
    let after = match &input.next_token {
        None => None,
        Some(token) => Some(key_of_token(token).ok_or_else(|| AcmError::InvalidArgs("Invalid NextToken.".into()))?),
    };
    let store = req.store();
    let (all, _) = repo::list::<Certificate>(store, &req.keys.certificates(), None, 0).await?;
    // `ref/cert-svc/<certificate>/<service>`, for every certificate.
    let relation = req.lattice.references(rel::CERT_SVC, "");
    let relation = relation.strip_suffix('/').unwrap_or(&relation);
    let in_use: BTreeSet<String> = store
        .list_prefix(relation, None, 0)
        .await?
        .kvs
        .iter()
        .filter_map(|kv| kv.key.rsplit('/').nth(1).map(str::to_owned))
        .collect();
    let mut found: Vec<(String, &Certificate)> =
        all.iter().filter(|c| filter.admits(&c.value)).map(|c| (sort_key(&c.value), &c.value)).collect();
    found.sort_by(|a, b| if descending { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
    let mut rest = found.into_iter().filter(|(key, _)| match &after {
        None => true,
        Some(after) if descending => key < after,
        Some(after) => key > after,
    });
    let page: Vec<(String, &Certificate)> = rest.by_ref().take(limit).collect();
    let next = match rest.next() {
        Some(_) => page.last().map(|(key, _)| token_of(key)),
        None => None,
    };
    let items: Vec<Value> = page.iter().map(|(_, c)| summary(c, &in_use)).collect();
    let mut out = json!({ "CertificateSummaryList": items });
    if let Some(next) = next {
        out["NextToken"] = json!(next);
    }
    Ok(out)
}

/// What ListCertificates shows of a certificate.
fn summary(c: &Certificate, in_use: &BTreeSet<String>) -> Value {
    let d = &c.details;
    let id = c.arn.rsplit('/').next().unwrap_or_default();
    let mut out = json!({
        "CertificateArn": c.arn,
        "DomainName": d.domain_name,
        "SubjectAlternativeNameSummaries": d.subject_alternative_names.iter().take(100).collect::<Vec<_>>(),
        "HasAdditionalSubjectAlternativeNames": d.subject_alternative_names.len() > 100,
        "Status": c.status,
        "Type": c.kind,
        "KeyAlgorithm": d.key_algorithm,
        "KeyUsages": d.key_usages,
        "ExtendedKeyUsages": d.extended_key_usages.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        "InUse": in_use.contains(id),
        "Exported": false,
        "RenewalEligibility": "INELIGIBLE",
        "NotBefore": epoch(d.not_before),
        "NotAfter": epoch(d.not_after),
        "CreatedAt": epoch(c.created_at),
        "CertificateKeyPairOrigin": origin(c),
    });
    if let Some(export) = &c.export {
        out["ExportOption"] = json!(export);
    }
    if let Some(at) = c.issued_at {
        out["IssuedAt"] = epoch(at);
    }
    if let Some(at) = c.imported_at {
        out["ImportedAt"] = epoch(at);
    }
    out
}

/// Creation time (20 digits of milliseconds) and UUID: unique, and ordered as the listing is.
fn sort_key(c: &Certificate) -> String {
    format!("{:020}/{}", c.created_at.0, c.arn.rsplit('/').next().unwrap_or_default())
}

/// The filters of one listing.
struct Filter {
    statuses: Option<Vec<String>>,
    origins: Vec<String>,
    key_types: Vec<String>,
    key_usages: Option<Vec<String>>,
    extended_key_usages: Option<Vec<String>>,
    export: Option<String>,
    managed_by: Option<String>,
}

impl Filter {
    fn new(input: &ListCertificatesRequest) -> Result<Self, AcmError> {
        let includes = input.includes.as_ref();
        let check = |values: Option<&Vec<String>>, member: &str, allowed: &[&str]| -> Result<(), AcmError> {
            for (i, v) in values.into_iter().flatten().enumerate() {
                enum_member(v, &format!("{member}.{}.member", i + 1), allowed)?;
            }
            Ok(())
        };
        check(input.certificate_statuses.as_ref(), "certificateStatuses", STATUSES)?;
        check(input.certificate_key_pair_origins.as_ref(), "certificateKeyPairOrigins", ORIGINS)?;
        check(includes.and_then(|i| i.key_types.as_ref()), "includes.keyTypes", KEY_TYPES)?;
        check(includes.and_then(|i| i.key_usage.as_ref()), "includes.keyUsage", KEY_USAGES)?;
        check(includes.and_then(|i| i.extended_key_usage.as_ref()), "includes.extendedKeyUsage", EXTENDED_KEY_USAGES)?;
        if let Some(export) = includes.and_then(|i| i.export_option.as_deref()) {
            enum_member(export, "includes.exportOption", &["ENABLED", "DISABLED"])?;
        }
        if let Some(by) = includes.and_then(|i| i.managed_by.as_deref()) {
            enum_member(by, "includes.managedBy", &["CLOUDFRONT"])?;
        }
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Ok(Self {
            statuses: input.certificate_statuses.clone().filter(|s| !s.is_empty()),
            origins: input
                .certificate_key_pair_origins
                .clone()
                .filter(|o| !o.is_empty())
                .unwrap_or_else(|| owned(&["AWS_MANAGED", "CUSTOMER_PROVIDED"])),
            key_types: includes
                .and_then(|i| i.key_types.clone())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| owned(&["RSA_1024", "RSA_2048"])),
            key_usages: includes.and_then(|i| i.key_usage.clone()).filter(|k| !k.is_empty()),
            extended_key_usages: includes.and_then(|i| i.extended_key_usage.clone()).filter(|k| !k.is_empty()),
            export: includes.and_then(|i| i.export_option.clone()),
            managed_by: includes.and_then(|i| i.managed_by.clone()),
        })
    }

    fn admits(&self, c: &Certificate) -> bool {
        let d = &c.details;
        let any_of = |wanted: &Option<Vec<String>>, has: &[&str]| {
            wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == "ANY" || has.contains(&x.as_str())))
        };
        let key_usages: Vec<&str> = d.key_usages.iter().map(String::as_str).collect();
        let mut ekus: Vec<&str> = d.extended_key_usages.iter().map(|e| e.name.as_str()).collect();
        if ekus.is_empty() {
            ekus.push("NONE");
        }
        self.statuses.as_ref().is_none_or(|s| s.contains(&c.status))
            && self.origins.iter().any(|o| o == origin(c))
            && self.key_types.contains(&d.key_algorithm)
            && any_of(&self.key_usages, &key_usages)
            && any_of(&self.extended_key_usages, &ekus)
            && self.export.as_ref().is_none_or(|e| *e == c.export.as_deref().unwrap_or("DISABLED"))
            && self.managed_by.is_none()
    }
}
