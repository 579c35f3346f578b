//! ACM certificates as Trellis stores them: the PEM material (leaf, chain, and the private key
//! as PKCS#8, whatever form it was imported in), what was read from the leaf when it was
//! stored ([`Details`]), and the record's own facts (type, status, times, tags). The API
//! answers `DescribeCertificate` and `ListCertificates` from these without parsing the
//! certificate again.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// `Type`: imported with ImportCertificate.
pub const IMPORTED: &str = "IMPORTED";
/// `Type`: issued by the installation's certificate authority through RequestCertificate.
pub const AMAZON_ISSUED: &str = "AMAZON_ISSUED";
/// `Status` of every certificate Trellis keeps: requests are issued at once.
pub const ISSUED: &str = "ISSUED";

/// A stored certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    /// `arn:aws:acm:<region>:<account>:certificate/<uuid>`.
    pub arn: String,
    /// [`IMPORTED`] or [`AMAZON_ISSUED`].
    #[serde(rename = "type")]
    pub kind: String,
    /// [`ISSUED`].
    pub status: String,
    /// The leaf, PEM.
    pub certificate_pem: String,
    /// The issuers, PEM (empty when none was given).
    #[serde(default)]
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub private_key_pem: String,
    /// What the leaf says.
    pub details: Details,
    /// When it was requested or first imported.
    pub created_at: Timestamp,
    /// AMAZON_ISSUED: when it was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Timestamp>,
    /// IMPORTED: when it was last imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_at: Option<Timestamp>,
    /// `Options.Export` as requested (`ENABLED` or `DISABLED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    /// Tags, in the order they were added.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// What a certificate says about itself, as ACM reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    /// The subject's common name, else the first DNS name.
    pub domain_name: String,
    /// The DNS names of the subjectAltName extension (the common name first when there is
    /// none).
    pub subject_alternative_names: Vec<String>,
    /// Serial number, colon-separated lowercase hex pairs.
    pub serial: String,
    /// The subject, `CN=…,O=…`.
    pub subject: String,
    /// The issuer's organisation, else its common name, else its whole name.
    pub issuer: String,
    /// Valid from.
    pub not_before: Timestamp,
    /// Valid until.
    pub not_after: Timestamp,
    /// `RSA_2048`, `EC_prime256v1`, … (ACM's `KeyAlgorithm`).
    pub key_algorithm: String,
    /// `SHA256WITHRSA`, `SHA256WITHECDSA`, …
    pub signature_algorithm: String,
    /// `DIGITAL_SIGNATURE`, `KEY_ENCIPHERMENT`, … (ACM's `KeyUsageName`).
    #[serde(default)]
    pub key_usages: Vec<String>,
    /// Extended key usages.
    #[serde(default)]
    pub extended_key_usages: Vec<ExtendedKeyUsage>,
}

/// One extended key usage: ACM's name for it (`TLS_WEB_SERVER_AUTHENTICATION`, or `CUSTOM`)
/// and its OID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedKeyUsage {
    /// ACM's `ExtendedKeyUsageName`.
    pub name: String,
    /// Dotted OID.
    pub oid: String,
}

/// An ACM tag (`{"Key", "Value"}`; the value is optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// 1–128 characters.
    pub key: String,
    /// 0–256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}
