//! The ACM API subset (JSON 1.1: `POST /` with `X-Amz-Target: CertificateManager.<Operation>`):
//! certificates imported with their keys, or requested and issued at once by the
//! installation's certificate authority ([`crate::pki`]; no validation step, status ISSUED),
//! kept under `acm/` ([`crate::keys::AcmKeys`]). VPC Lattice services name them by
//! `certificateArn`; which services do is a Lattice relation ([`crate::keys::rel::CERT_SVC`])
//! that [`acquire`] and [`release`] move in the service's own transaction, so that
//! DeleteCertificate can refuse a certificate in use and DescribeCertificate can say who uses
//! it. The data plane gets every certificate's chain and key from `pki::run`, by ARN.

use axum::body::Bytes;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::Value;
use trellis_model::acm::{Certificate, Tag};
use trellis_store::{Store, StoreExt};

use crate::ControlState;
use crate::dispatch::Ctx;
use crate::keys::{AcmKeys, Keys, rel};
use crate::repo::{self, Counter, RepoError, Tx, Versioned};

mod certificate;
mod error;
mod list;
mod tag;
mod x509;

pub use error::AcmError;

/// What every ACM `X-Amz-Target` starts with.
pub(crate) const TARGET_PREFIX: &str = "CertificateManager.";

/// Certificates per region and account (ACM's default quota for imported certificates, and
/// for ACM certificates, is 2500 each; Trellis counts both together).
const CERTIFICATE_QUOTA: u64 = 2500;

/// The ACM operations Trellis serves, named as AWS names them, A–Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // The names are AWS's; the API reference documents each.
pub enum Operation {
    AddTagsToCertificate,
    DeleteCertificate,
    DescribeCertificate,
    GetCertificate,
    ImportCertificate,
    ListCertificates,
    ListTagsForCertificate,
    RemoveTagsFromCertificate,
    RequestCertificate,
}

/// One ACM request, handed to its operation's handler.
pub(crate) struct Req<'a> {
    pub(crate) state: &'a ControlState,
    pub(crate) ctx: &'a Ctx,
    pub(crate) body: &'a Bytes,
    pub(crate) keys: AcmKeys,
    /// Lattice's layout of the same region and account (the certificate-use relation).
    pub(crate) lattice: Keys,
}

/// A successful answer's body.
type Reply = Result<Value, AcmError>;

/// Whether the operation named by `target` takes the node's write turn. RequestCertificate
/// does not: making an RSA key takes a while, and its transaction (a new record, the quota
/// counter) is safe on its own compare-and-swap.
pub(crate) fn is_write(target: &str) -> bool {
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    !(op.starts_with("Describe") || op.starts_with("List") || op.starts_with("Get") || op == "RequestCertificate")
}

/// Handles one ACM request.
pub(crate) async fn handle(state: &ControlState, ctx: &Ctx, target: &str, body: &Bytes) -> Response {
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    let req = Req {
        state,
        ctx,
        body,
        keys: AcmKeys::new(&ctx.region, &ctx.account),
        lattice: Keys::new(&ctx.region, &ctx.account),
    };
    crate::json11::reply(dispatch(&req, op).await, &ctx.request_id)
}

async fn dispatch(req: &Req<'_>, op: &str) -> Reply {
    use Operation::*;
    let Some(operation) = Operation::parse(op) else {
        return Err(AcmError::UnknownOperation(format!("{op} is not supported by Trellis")));
    };
    match operation {
        AddTagsToCertificate => tag::add(req).await,
        DeleteCertificate => certificate::delete(req).await,
        DescribeCertificate => certificate::describe(req).await,
        GetCertificate => certificate::get(req).await,
        ImportCertificate => certificate::import(req).await,
        ListCertificates => list::list(req).await,
        ListTagsForCertificate => tag::list(req).await,
        RemoveTagsFromCertificate => tag::remove(req).await,
        RequestCertificate => certificate::request(req).await,
    }
}

// === impl Operation ===

impl Operation {
    /// Every operation, A–Z.
    pub const ALL: [Self; 9] = [
        Self::AddTagsToCertificate,
        Self::DeleteCertificate,
        Self::DescribeCertificate,
        Self::GetCertificate,
        Self::ImportCertificate,
        Self::ListCertificates,
        Self::ListTagsForCertificate,
        Self::RemoveTagsFromCertificate,
        Self::RequestCertificate,
    ];

    /// The operation an `X-Amz-Target` names (after the prefix).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| format!("{op:?}") == name)
    }
}

// === impl Req ===

impl Req<'_> {
    pub(crate) fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }

    /// The request's input shape.
    pub(crate) fn input<T: DeserializeOwned>(&self) -> Result<T, AcmError> {
        Ok(crate::lattice::input::parse_json(self.body)?)
    }

    /// The UUID of the certificate a `CertificateArn` member names, checked as ACM does: an ARN
    /// outside the model's pattern is a `ValidationException`, one of another resource type an
    /// `InvalidArnException`, one of another region or account names nothing here.
    pub(crate) fn certificate_id(&self, arn: &str) -> Result<String, AcmError> {
        if !(20..=2048).contains(&arn.len()) || !matches_arn_pattern(arn) {
            return Err(AcmError::constraint(
                arn,
                "certificateArn",
                "Member must satisfy regular expression pattern: arn:[\\w+=/,.@-]+:acm:[\\w+=/,.@-]*:[0-9]+:[\\w+=,.@-]+(/[\\w+=,.@-]+)*",
            ));
        }
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let id = parts[5].strip_prefix("certificate/").filter(|id| is_uuid(id));
        let Some(id) = id else {
            return Err(AcmError::InvalidArn(format!("The ARN {arn} is not a valid certificate ARN.")));
        };
        if parts[3] != self.ctx.region || parts[4] != self.ctx.account {
            return Err(not_found(arn));
        }
        Ok(id.to_owned())
    }

    /// The certificate an ARN names; `ResourceNotFoundException` if there is none.
    pub(crate) async fn find(&self, arn: &str) -> Result<(String, Versioned<Certificate>), AcmError> {
        let id = self.certificate_id(arn)?;
        let found = repo::load::<Certificate>(self.store(), &self.keys.certificate(&id)).await?;
        Ok((id, found.ok_or_else(|| not_found(arn))?))
    }

    /// A certificate's ARN.
    pub(crate) fn arn(&self, id: &str) -> String {
        format!("arn:aws:acm:{}:{}:certificate/{id}", self.ctx.region, self.ctx.account)
    }

    /// The ARNs of the services using certificate `id`.
    pub(crate) async fn in_use_by(&self, id: &str) -> Result<Vec<String>, AcmError> {
        let services = repo::list_index(self.store(), &self.lattice.references(rel::CERT_SVC, id)).await?;
        Ok(services
            .iter()
            .map(|svc| format!("arn:aws:vpc-lattice:{}:{}:service/{svc}", self.ctx.region, self.ctx.account))
            .collect())
    }
}

/// `ResourceNotFoundException` for a certificate ARN.
pub(crate) fn not_found(arn: &str) -> AcmError {
    AcmError::ResourceNotFound(format!("Could not find certificate {arn}."))
}

/// Checks a `Tags` member: 1–50 tags, keys of 1–128 and values of at most 256 characters of
/// the model's pattern (else `ValidationException`), no `aws:` keys (`InvalidTagException`).
pub(crate) fn check_tags(tags: &[Tag]) -> Result<(), AcmError> {
    if tags.is_empty() || tags.len() > 50 {
        return Err(AcmError::constraint(
            &format!("{} tags", tags.len()),
            "tags",
            "Member must have length less than or equal to 50 and greater than or equal to 1",
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        let n = i + 1;
        if tag.key.is_empty() || tag.key.chars().count() > 128 || !is_tag_text(&tag.key) {
            return Err(AcmError::constraint(
                &tag.key,
                &format!("tags.{n}.member.key"),
                "Member must have length between 1 and 128 and satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*",
            ));
        }
        if let Some(value) = &tag.value
            && (value.chars().count() > 256 || !is_tag_text(value))
        {
            return Err(AcmError::constraint(
                value,
                &format!("tags.{n}.member.value"),
                "Member must have length less than or equal to 256 and satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*",
            ));
        }
        if tag.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(AcmError::InvalidTag(format!(
                "Tag key {} is not valid: the aws: prefix is reserved for AWS use.",
                tag.key
            )));
        }
    }
    Ok(())
}

// === certificates used by VPC Lattice services ===

/// Why a Lattice service cannot use a certificate ARN.
#[derive(Debug)]
pub(crate) enum UseError {
    /// No certificate of this region and account has that ARN.
    NotFound,
    /// The store failed.
    Repo(RepoError),
}

/// The certificate `arn` names for a service of `keys`'s region and account (`region`,
/// `account`): read, and required unchanged at commit so that a DeleteCertificate cannot slip
/// in; the use recorded (`ref/cert-svc/<cert>/<service>` and its counter, in `tx`).
pub(crate) async fn acquire(
    store: &dyn Store,
    keys: &Keys,
    (region, account): (&str, &str),
    arn: &str,
    service_id: &str,
    tx: &mut Tx,
) -> Result<(), UseError> {
    let id = local_certificate_id(arn, region, account).ok_or(UseError::NotFound)?;
    let record = repo::load::<Certificate>(store, &AcmKeys::new(region, account).certificate(id))
        .await
        .map_err(UseError::Repo)?
        .ok_or(UseError::NotFound)?;
    let users = repo::counter(store, keys.counter(rel::CERT_SVC, id)).await.map_err(UseError::Repo)?;
    tx.require_unchanged(record.key, record.revision);
    tx.create_index(keys.reference(rel::CERT_SVC, id, service_id), service_id);
    tx.count(&users, 1);
    Ok(())
}

/// Undoes [`acquire`] in `tx`, if `arn` is a certificate of this region and account that the
/// service was recorded as using (services made before uses were recorded are not).
pub(crate) async fn release(
    store: &dyn Store,
    keys: &Keys,
    (region, account): (&str, &str),
    arn: &str,
    service_id: &str,
    tx: &mut Tx,
) -> Result<(), RepoError> {
    let Some(id) = local_certificate_id(arn, region, account) else { return Ok(()) };
    let reference = keys.reference(rel::CERT_SVC, id, service_id);
    let users: Counter = repo::counter(store, keys.counter(rel::CERT_SVC, id)).await?;
    let Some(kv) = store.get(&reference).await? else { return Ok(()) };
    tx.require_unchanged(reference.clone(), kv.mod_revision);
    tx.delete(reference);
    if users.value() > 1 {
        tx.count(&users, -1);
    } else {
        tx.retire(&users);
    }
    Ok(())
}

/// The UUID in `arn:<partition>:acm:<region>:<account>:certificate/<uuid>`, if the ARN is of
/// this region and account.
fn local_certificate_id<'a>(arn: &'a str, region: &str, account: &str) -> Option<&'a str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [_, _, service, r, a, resource] = parts.as_slice() else { return None };
    let id = resource.strip_prefix("certificate/")?;
    (*service == "acm" && *r == region && *a == account && is_uuid(id)).then_some(id)
}

/// `arn:[\w+=/,.@-]+:acm:[\w+=/,.@-]*:[0-9]+:[\w+=,.@-]+(/[\w+=,.@-]+)*`.
fn matches_arn_pattern(arn: &str) -> bool {
    let word = |c: char, slash: bool| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) || (slash && c == '/');
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [head, partition, service, region, account, resource] = parts.as_slice() else { return false };
    *head == "arn"
        && !partition.is_empty()
        && partition.chars().all(|c| word(c, true))
        && *service == "acm"
        && region.chars().all(|c| word(c, true))
        && !account.is_empty()
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.split('/').all(|seg| !seg.is_empty() && seg.chars().all(|c| word(c, false)))
}

/// A UUID as ACM writes them (lowercase hex in 8-4-4-4-12 groups).
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// `[\p{L}\p{Z}\p{N}_.:/=+\-@]*`.
fn is_tag_text(text: &str) -> bool {
    text.chars().all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
}

/// A JSON 1.1 timestamp: epoch seconds with milliseconds as the fraction.
fn epoch(t: trellis_model::Timestamp) -> Value {
    serde_json::json!(t.0 as f64 / 1000.0)
}

#[cfg(test)]
mod tests;
