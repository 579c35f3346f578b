//! Where everything lives in the store. Every key starts with `r/<region>/<account>/`, so that
//! regions and accounts are prefixes of their own. Children sit under their parent's ID
//! (listeners under their service, rules under their listener, targets under their target
//! group) so that cascades are prefix deletes, within etcd's transaction limits.
//!
//! Index keys hold an ID as their value: `name/<kind>/<scope>/<name>` makes names unique,
//! `ref/<relation>/<from>/<to>` keys record who references whom (for listings by parent and
//! cascades), `count/<what>/<scope>` keys count resources and references (for quotas and delete
//! guards: a counter read as zero and compared at commit proves nothing was added meanwhile,
//! which a prefix read cannot), `token/…` keys remember `clientToken` answers.
//!
//! IAM is global: its keys start with `iam/<account>/`, outside every region ([`IamKeys`]).
//! Credentials (access keys and STS sessions) live under `cred/<access key id>`
//! ([`credential`]), outside every account: an access key ID is all a signed request names, and
//! the identity publisher (`identity::run`) watches that prefix alone.
//!
//! ACM certificates live under `acm/<region>/<account>/` ([`AcmKeys`]), outside `r/`, so that
//! the Lattice compiler never reads them and the certificate publisher (`pki::run`) watches
//! them alone: `certificate/<uuid>` (the record), `count/certificates` (the quota counter) and
//! `token/<idempotency token>` (RequestCertificate's remembered answers). Which services use a
//! certificate is a Lattice relation, [`rel::CERT_SVC`], written with the service in the same
//! transaction.

use trellis_model::Kind;

/// Reference relations (`ref/<relation>/<from>/<to>`, value: the `to` ID). Each relation also
/// has a counter, `count/<relation>/<from>`, moved in the same transaction as its entries.
pub(crate) mod rel {
    /// Service network → its VPC associations (`snva-…`).
    pub(crate) const SN_VPC: &str = "sn-vpc";
    /// Service network → its service associations (`snsa-…`).
    pub(crate) const SN_SVC: &str = "sn-svc";
    /// Service → its service-network associations (`snsa-…`).
    pub(crate) const SVC_SN: &str = "svc-sn";
    /// VPC → its (single) service-network association (`snva-…`).
    pub(crate) const VPC_SNVA: &str = "vpc-snva";
    /// Service network → service: the pair is associated (value: `snsa-…`).
    pub(crate) const SN_SVC_PAIR: &str = "sn-svc-pair";
    /// Service network or service → its access log subscriptions (`als-…`).
    pub(crate) const ALS: &str = "als";
    /// Target group → the listeners and rules whose actions forward to it.
    pub(crate) const TG_USERS: &str = "tg-users";
    /// Service → the target groups its listeners and rules forward to.
    pub(crate) const SVC_TG: &str = "svc-tg";
    /// ACM certificate (its UUID) → the services whose `certificateArn` names it. Its counter
    /// is DeleteCertificate's guard.
    pub(crate) const CERT_SVC: &str = "cert-svc";
}

/// The key layout for one region and account.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    base: String,
}

impl Keys {
    pub(crate) fn new(region: &str, account: &str) -> Self {
        Self { base: format!("r/{region}/{account}/") }
    }

    /// A top-level resource (service network, service, target group, association, subscription,
    /// VPC, subnet, security group).
    pub(crate) fn res(&self, kind: Kind, id: &str) -> String {
        format!("{}{}", self.all(kind), id)
    }

    /// The prefix of every resource of a top-level kind.
    pub(crate) fn all(&self, kind: Kind) -> String {
        format!("{}res/{}/", self.base, kind.prefix())
    }

    /// A listener of a service.
    pub(crate) fn listener(&self, service_id: &str, listener_id: &str) -> String {
        format!("{}{listener_id}", self.listeners(service_id))
    }

    /// Every listener of a service.
    pub(crate) fn listeners(&self, service_id: &str) -> String {
        format!("{}listener/{service_id}/", self.base)
    }

    /// A rule of a listener.
    pub(crate) fn rule(&self, listener_id: &str, rule_id: &str) -> String {
        format!("{}{rule_id}", self.rules(listener_id))
    }

    /// Every rule of a listener.
    pub(crate) fn rules(&self, listener_id: &str) -> String {
        format!("{}rule/{listener_id}/", self.base)
    }

    /// A target of a target group.
    pub(crate) fn target(&self, tg_id: &str, target_id: &str, port: u16) -> String {
        format!("{}{target_id}/{port:05}", self.targets(tg_id))
    }

    /// Every target of a target group.
    pub(crate) fn targets(&self, tg_id: &str) -> String {
        format!("{}target/{tg_id}/", self.base)
    }

    /// The auth policy of a service network or service.
    pub(crate) fn auth_policy(&self, resource_id: &str) -> String {
        format!("{}authpolicy/{resource_id}", self.base)
    }

    /// The index key that makes `name` unique among `kind`s within `scope` (empty for
    /// account-wide names, else the parent's ID).
    pub(crate) fn name(&self, kind: Kind, scope: &str, name: &str) -> String {
        format!("{}name/{}/{scope}/{name}", self.base, kind.prefix())
    }

    /// A reference index entry: `ref/<relation>/<from>/<to>`.
    pub(crate) fn reference(&self, relation: &str, from: &str, to: &str) -> String {
        format!("{}{to}", self.references(relation, from))
    }

    /// Every entry of a relation from one resource.
    pub(crate) fn references(&self, relation: &str, from: &str) -> String {
        format!("{}ref/{relation}/{from}/", self.base)
    }

    /// A quota counter.
    pub(crate) fn counter(&self, what: &str, scope: &str) -> String {
        format!("{}count/{what}/{scope}", self.base)
    }

    /// The remembered answer to a create with a `clientToken`.
    pub(crate) fn token(&self, operation: &str, token: &str) -> String {
        format!("{}token/{operation}/{token}", self.base)
    }
}

/// The key layout of IAM for one account: `iam/<account>/role/<name>` (the name in lowercase,
/// as role names are unique regardless of case), `iam/<account>/attached/<role>/<policy-arn>`
/// and the counter `iam/<account>/count/attached/<role>` (the delete guard).
#[derive(Clone, Debug)]
pub(crate) struct IamKeys {
    base: String,
}

impl IamKeys {
    pub(crate) fn new(account: &str) -> Self {
        Self { base: format!("iam/{account}/") }
    }

    /// A role, by its name in any case.
    pub(crate) fn role(&self, name: &str) -> String {
        format!("{}{}", self.roles(), name.to_ascii_lowercase())
    }

    /// Every role.
    pub(crate) fn roles(&self) -> String {
        format!("{}role/", self.base)
    }

    /// A policy attached to a role.
    pub(crate) fn attached(&self, role: &str, policy_arn: &str) -> String {
        format!("{}{policy_arn}", self.attachments(role))
    }

    /// Every policy attached to a role.
    pub(crate) fn attachments(&self, role: &str) -> String {
        format!("{}attached/{}/", self.base, role.to_ascii_lowercase())
    }

    /// How many policies are attached to a role.
    pub(crate) fn attachment_count(&self, role: &str) -> String {
        format!("{}count/attached/{}", self.base, role.to_ascii_lowercase())
    }

    /// A user, by its name in any case.
    pub(crate) fn user(&self, name: &str) -> String {
        format!("{}{}", self.users(), name.to_ascii_lowercase())
    }

    /// Every user.
    pub(crate) fn users(&self) -> String {
        format!("{}user/", self.base)
    }

    /// An index entry of one of an owner's access keys (value: the key ID). `owner` is a user
    /// name, or `None` for the root (`~root`, which no user name can be).
    pub(crate) fn access_key(&self, owner: Option<&str>, access_key_id: &str) -> String {
        format!("{}{access_key_id}", self.access_keys(owner))
    }

    /// Every access key of an owner.
    pub(crate) fn access_keys(&self, owner: Option<&str>) -> String {
        format!("{}keys/{}/", self.base, owner_segment(owner))
    }

    /// How many access keys an owner has (the quota, and DeleteUser's guard).
    pub(crate) fn access_key_count(&self, owner: Option<&str>) -> String {
        format!("{}count/keys/{}", self.base, owner_segment(owner))
    }

    /// The ID of the root access key Trellis made at first start (what `trellis credentials`
    /// prints).
    pub(crate) fn root_key(&self) -> String {
        format!("{}rootkey", self.base)
    }
}

fn owner_segment(owner: Option<&str>) -> String {
    owner.map_or_else(|| "~root".to_owned(), str::to_ascii_lowercase)
}

/// Where every credential is.
pub(crate) const CREDENTIAL_PREFIX: &str = "cred/";

/// A credential (access key or STS session), by its access key ID.
pub(crate) fn credential(access_key_id: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{access_key_id}")
}

/// The key layout of ACM for one region and account.
#[derive(Clone, Debug)]
pub(crate) struct AcmKeys {
    base: String,
}

impl AcmKeys {
    /// What every ACM key starts with.
    pub(crate) const PREFIX: &str = "acm/";

    pub(crate) fn new(region: &str, account: &str) -> Self {
        Self { base: format!("{}{region}/{account}/", Self::PREFIX) }
    }

    /// A certificate, by its UUID.
    pub(crate) fn certificate(&self, id: &str) -> String {
        format!("{}{id}", self.certificates())
    }

    /// Every certificate.
    pub(crate) fn certificates(&self) -> String {
        format!("{}certificate/", self.base)
    }

    /// How many certificates there are (the quota).
    pub(crate) fn count(&self) -> String {
        format!("{}count/certificates", self.base)
    }

    /// RequestCertificate's answer to an idempotency token.
    pub(crate) fn token(&self, token: &str) -> String {
        format!("{}token/{token}", self.base)
    }
}

/// Whether `key` holds a certificate record (`acm/<region>/<account>/certificate/<uuid>`).
pub(crate) fn is_acm_certificate(key: &str) -> bool {
    key.strip_prefix(AcmKeys::PREFIX).and_then(|rest| rest.split('/').nth(2)) == Some("certificate")
}

/// A paging token for a listing that stopped at `key`: the key in hex, opaque to clients and
/// safe in a URL.
pub(crate) fn token_of(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The key a paging token stands for; `None` if it is not one of ours.
pub(crate) fn key_of_token(token: &str) -> Option<String> {
    if token.is_empty() || !token.len().is_multiple_of(2) || token.len() > 2048 {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}
