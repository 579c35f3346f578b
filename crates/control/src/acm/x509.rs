//! Reading certificates and private keys for ACM: what a leaf says ([`Details`]), a private key
//! in any of the PEM forms OpenSSL writes (PKCS#8, PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE
//! KEY`) brought to PKCS#8, the check that a key belongs to a certificate, and the check that a
//! chain issues a leaf. Pure functions; the messages are what ImportCertificate answers.
//!
//! Keys are limited to what the data plane can serve with `ring`: RSA of 2048 to 8192 bits and
//! ECDSA P-256 and P-384. ACM also imports RSA_1024 and EC_secp521r1; Trellis refuses them
//! rather than store a certificate no listener could present.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rsa::pkcs1::der::{Decode, Encode};
use rsa::pkcs8::EncodePrivateKey;
use rustls_pki_types::{CertificateDer, UnixTime};
use trellis_model::Timestamp;
use trellis_model::acm::{Details, ExtendedKeyUsage};
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier as Oid;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage as Eku, KeyUsage, KeyUsages, SubjectAltName};

/// A leaf as read: what ACM reports, and its public key (the subjectPublicKey bits).
#[derive(Debug)]
pub(crate) struct Leaf {
    pub(crate) details: Details,
    pub(crate) public_key: Vec<u8>,
}

const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const EC: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
const P521: Oid = Oid::new_unwrap("1.3.132.0.35");
const CN: Oid = Oid::new_unwrap("2.5.4.3");
const O: Oid = Oid::new_unwrap("2.5.4.10");

/// Reads one PEM certificate block (`what` names the field in messages).
pub(crate) fn certificate_der(pem_text: &[u8], what: &str) -> Result<Vec<u8>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|_| format!("The {what} is not a valid PEM document."))?;
    match blocks.as_slice() {
        [one] if one.tag() == "CERTIFICATE" => Ok(one.contents().to_vec()),
        [] => Err(format!("The {what} is not a valid PEM document.")),
        [_] => Err(format!("The {what} must be a PEM certificate (BEGIN CERTIFICATE).")),
        _ => Err(format!(
            "The {what} field contains more than one certificate. You can specify only one certificate in this field."
        )),
    }
}

/// Reads a PEM chain: one or more certificate blocks, issuers in order.
pub(crate) fn chain_ders(pem_text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let bad = || "The certificate chain provided is not in a valid PEM format.".to_owned();
    let blocks = pem::parse_many(pem_text).map_err(|_| bad())?;
    if blocks.is_empty() || blocks.iter().any(|b| b.tag() != "CERTIFICATE") {
        return Err(bad());
    }
    Ok(blocks.into_iter().map(pem::Pem::into_contents).collect())
}

/// Reads what ACM reports of a certificate.
pub(crate) fn read_leaf(der: &[u8]) -> Result<Leaf, String> {
    let cert = Certificate::from_der(der).map_err(|e| format!("Could not parse the certificate: {e}"))?;
    let tbs = cert.tbs_certificate();
    let spki = tbs.subject_public_key_info();
    let public_key = spki.subject_public_key.raw_bytes().to_vec();
    let key_algorithm = key_algorithm(spki.algorithm.oid, spki.algorithm.parameters.as_ref(), &public_key)?;
    let subject = name_string(tbs.subject());
    let issuer =
        first_of(tbs.issuer(), O).or_else(|| first_of(tbs.issuer(), CN)).unwrap_or_else(|| name_string(tbs.issuer()));
    if issuer.is_empty() {
        return Err("The certificate's Issuer field must not be empty.".to_owned());
    }
    let common_name = first_of(tbs.subject(), CN);
    let mut sans = Vec::new();
    if let Ok(Some((_, SubjectAltName(names)))) = tbs.get_extension::<SubjectAltName>() {
        sans.extend(names.into_iter().filter_map(|n| match n {
            GeneralName::DnsName(d) => Some(d.to_string()),
            _ => None,
        }));
    }
    let domain_name = common_name.or_else(|| sans.first().cloned()).unwrap_or_default();
    if sans.is_empty() && !domain_name.is_empty() {
        sans.push(domain_name.clone());
    }
    let key_usages = match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, usage))) => key_usage_names(&usage),
        _ => Vec::new(),
    };
    let extended_key_usages = match tbs.get_extension::<Eku>() {
        Ok(Some((_, Eku(oids)))) => oids.iter().map(|oid| eku(*oid)).collect(),
        _ => Vec::new(),
    };
    let validity = tbs.validity();
    let details = Details {
        domain_name,
        subject_alternative_names: sans,
        serial: serial(tbs.serial_number().as_bytes()),
        subject,
        issuer,
        not_before: timestamp(validity.not_before.to_unix_duration()),
        not_after: timestamp(validity.not_after.to_unix_duration()),
        key_algorithm,
        signature_algorithm: signature_algorithm(cert.signature_algorithm().oid),
        key_usages,
        extended_key_usages,
    };
    Ok(Leaf { details, public_key })
}

/// Brings a PEM private key to PKCS#8 DER.
pub(crate) fn private_key_pkcs8(pem_text: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "The private key is not supported: it must be an unencrypted PEM key.".to_owned();
    let blocks = pem::parse_many(pem_text).map_err(|_| bad())?;
    let [block] = blocks.as_slice() else { return Err(bad()) };
    match block.tag() {
        "PRIVATE KEY" => Ok(block.contents().to_vec()),
        "RSA PRIVATE KEY" => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            let key = rsa::PrivateKey::from_pkcs1_der(block.contents()).map_err(|_| bad())?;
            Ok(key.to_pkcs8_der().map_err(|_| bad())?.as_bytes().to_vec())
        }
        "EC PRIVATE KEY" => sec1_to_pkcs8(block.contents()).ok_or_else(bad),
        "ENCRYPTED PRIVATE KEY" => {
            Err("The private key must be unencrypted: a key protected by a passphrase cannot be imported.".to_owned())
        }
        _ => Err(bad()),
    }
}

/// Checks that the PKCS#8 key `pkcs8` is the private half of `public_key`.
pub(crate) fn check_key_pair(pkcs8: &[u8], public_key: &[u8]) -> Result<(), String> {
    let pair = rcgen::KeyPair::try_from(pkcs8)
        .map_err(|_| "The private key is not supported: RSA (2048 to 8192 bits) and ECDSA P-256 and P-384 keys are.")?;
    if pair.public_key_raw() != public_key {
        return Err("The private key does not match the public key in the certificate.".to_owned());
    }
    Ok(())
}

/// Checks that `chain` (issuers, nearest first; its last certificate is trusted as given)
/// issues `leaf` at `now`.
pub(crate) fn check_chain(leaf: &[u8], chain: &[Vec<u8>], now: SystemTime) -> Result<(), String> {
    let Some((anchor, intermediates)) = chain.split_last() else { return Ok(()) };
    let fail = |e: webpki::Error| format!("Could not validate the certificate with the certificate chain: {e:?}");
    let leaf = CertificateDer::from(leaf);
    let end = webpki::EndEntityCert::try_from(&leaf).map_err(fail)?;
    let anchor = CertificateDer::from(anchor.as_slice());
    let anchors = [webpki::anchor_from_trusted_cert(&anchor).map_err(fail)?];
    let intermediates: Vec<CertificateDer<'_>> =
        intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    end.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(fail)?;
    Ok(())
}

/// `RSA_2048`, `EC_prime256v1`, … from a subjectPublicKeyInfo.
fn key_algorithm(oid: Oid, parameters: Option<&x509_cert::der::Any>, key: &[u8]) -> Result<String, String> {
    let unsupported = || "The certificate's key algorithm is not supported.".to_owned();
    if oid == RSA {
        let rsa_key = rsa::pkcs1::RsaPublicKeyRef::from_der(key).map_err(|_| unsupported())?;
        let modulus = rsa_key.modulus.as_bytes();
        let bits = (modulus.len() * 8).saturating_sub(modulus.first().map_or(0, |b| b.leading_zeros() as usize));
        return Ok(format!("RSA_{bits}"));
    }
    if oid == EC {
        let curve: Oid = parameters.and_then(|p| p.decode_as::<Oid>().ok()).ok_or_else(unsupported)?;
        return match curve {
            c if c == P256 => Ok("EC_prime256v1".to_owned()),
            c if c == P384 => Ok("EC_secp384r1".to_owned()),
            c if c == P521 => Ok("EC_secp521r1".to_owned()),
            _ => Err(unsupported()),
        };
    }
    Err(unsupported())
}

/// The signature algorithm as ACM names it.
fn signature_algorithm(oid: Oid) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.5" => "SHA1WITHRSA",
        "1.2.840.113549.1.1.11" => "SHA256WITHRSA",
        "1.2.840.113549.1.1.12" => "SHA384WITHRSA",
        "1.2.840.113549.1.1.13" => "SHA512WITHRSA",
        "1.2.840.113549.1.1.10" => "RSASSA_PSS",
        "1.2.840.10045.4.3.2" => "SHA256WITHECDSA",
        "1.2.840.10045.4.3.3" => "SHA384WITHECDSA",
        "1.2.840.10045.4.3.4" => "SHA512WITHECDSA",
        other => return other.to_owned(),
    }
    .to_owned()
}

fn key_usage_names(usage: &KeyUsage) -> Vec<String> {
    let names = [
        (KeyUsages::DigitalSignature, "DIGITAL_SIGNATURE"),
        (KeyUsages::NonRepudiation, "NON_REPUDIATION"),
        (KeyUsages::KeyEncipherment, "KEY_ENCIPHERMENT"),
        (KeyUsages::DataEncipherment, "DATA_ENCIPHERMENT"),
        (KeyUsages::KeyAgreement, "KEY_AGREEMENT"),
        (KeyUsages::KeyCertSign, "CERTIFICATE_SIGNING"),
        (KeyUsages::CRLSign, "CRL_SIGNING"),
        (KeyUsages::EncipherOnly, "ENCIPHER_ONLY"),
        (KeyUsages::DecipherOnly, "DECIPHER_ONLY"),
    ];
    names.into_iter().filter(|(flag, _)| usage.0.contains(*flag)).map(|(_, name)| name.to_owned()).collect()
}

fn eku(oid: Oid) -> ExtendedKeyUsage {
    let oid = oid.to_string();
    let name = match oid.as_str() {
        "1.3.6.1.5.5.7.3.1" => "TLS_WEB_SERVER_AUTHENTICATION",
        "1.3.6.1.5.5.7.3.2" => "TLS_WEB_CLIENT_AUTHENTICATION",
        "1.3.6.1.5.5.7.3.3" => "CODE_SIGNING",
        "1.3.6.1.5.5.7.3.4" => "EMAIL_PROTECTION",
        "1.3.6.1.5.5.7.3.8" => "TIME_STAMPING",
        "1.3.6.1.5.5.7.3.9" => "OCSP_SIGNING",
        "1.3.6.1.5.5.7.3.5" => "IPSEC_END_SYSTEM",
        "1.3.6.1.5.5.7.3.6" => "IPSEC_TUNNEL",
        "1.3.6.1.5.5.7.3.7" => "IPSEC_USER",
        "2.5.29.37.0" => "ANY",
        _ => "CUSTOM",
    };
    ExtendedKeyUsage { name: name.to_owned(), oid }
}

/// A name as `CN=…,O=…`, in the order the certificate has it.
fn name_string(name: &x509_cert::name::Name) -> String {
    name.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// The first value of attribute `oid` in `name`.
fn first_of(name: &x509_cert::name::Name, oid: Oid) -> Option<String> {
    name.iter().find(|atv| atv.oid == oid).and_then(|atv| {
        let text = atv.to_string();
        text.split_once('=').map(|(_, v)| v.replace('\\', ""))
    })
}

/// Colon-separated hex pairs, without DER's sign-padding zero.
fn serial(bytes: &[u8]) -> String {
    let bytes = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn timestamp(since_epoch: Duration) -> Timestamp {
    Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

/// Wraps a SEC1 `ECPrivateKey` (which names its curve) in PKCS#8.
fn sec1_to_pkcs8(sec1: &[u8]) -> Option<Vec<u8>> {
    // ECPrivateKey ::= SEQUENCE { version, privateKey OCTET STRING, [0] parameters, [1] publicKey }
    let (tag, body, _) = tlv(sec1)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = body;
    let mut curve = None;
    while !rest.is_empty() {
        let (tag, value, next) = tlv(rest)?;
        if tag == 0xa0 {
            curve = Some(value.to_vec());
        }
        rest = next;
    }
    let curve: Oid = Oid::from_der(&curve?).ok()?;
    let algorithm = x509_cert::spki::AlgorithmIdentifierRef { oid: EC, parameters: Some((&curve).into()) };
    let info = rsa::pkcs8::PrivateKeyInfoRef::new(algorithm, sec1.try_into().ok()?);
    info.to_der().ok()
}

/// One DER element: tag, contents, and what follows.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_drop_the_sign_byte() {
        assert_eq!(serial(&[0x00, 0x9a, 0x01]), "9a:01");
        assert_eq!(serial(&[0x00]), "00");
        assert_eq!(serial(&[0x12, 0x34]), "12:34");
    }

    #[test]
    fn der_elements_split() {
        assert_eq!(tlv(&[0x04, 0x02, 0xaa, 0xbb, 0x05]), Some((0x04, &[0xaa, 0xbb][..], &[0x05][..])));
        assert_eq!(tlv(&[0x04, 0x81, 0x01, 0xaa]), Some((0x04, &[0xaa][..], &[][..])));
        assert_eq!(tlv(&[0x04, 0x05, 0xaa]), None);
    }

    #[test]
    fn issued_certificates_read_back() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into(), "b.example.com".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "a.example.com");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
        let cert = params.self_signed(&key).unwrap();
        let leaf = read_leaf(cert.der()).unwrap();
        let d = &leaf.details;
        assert_eq!(d.domain_name, "a.example.com");
        assert_eq!(d.subject_alternative_names, ["a.example.com", "b.example.com"]);
        assert_eq!(d.key_algorithm, "EC_prime256v1");
        assert_eq!(d.signature_algorithm, "SHA256WITHECDSA");
        assert_eq!(d.issuer, "Example");
        assert!(d.subject.contains("CN=a.example.com"), "{}", d.subject);
        check_key_pair(key.serialized_der(), &leaf.public_key).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        assert!(check_key_pair(other.serialized_der(), &leaf.public_key).is_err());
    }
}
