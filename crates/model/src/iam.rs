//! IAM records as stored: roles and the policies attached to them, users, and credentials
//! (access keys and STS sessions). IAM is global, so these belong to an account, not to a
//! region. Validation (names, paths, documents) is the API's.
//!
//! Also what a request signer resolves to ([`Identity`]) and the set of them the data plane
//! holds ([`Identities`]): the control plane builds them from the store and publishes them, the
//! proxy only looks them up (it never touches the store).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// An IAM role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// The name as created (names are unique regardless of case).
    pub role_name: String,
    /// `AROA` and 17 uppercase letters and digits.
    pub role_id: String,
    /// `/` or `/a/b/`.
    pub path: String,
    /// `arn:aws:iam::<account>:role<path><name>`.
    pub arn: String,
    /// When it was created.
    pub create_date: Timestamp,
    /// The trust policy, as sent (not re-serialized).
    pub assume_role_policy_document: String,
    /// The description, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Seconds, 3600–43200.
    pub max_session_duration: u32,
    /// Tags in the order they were given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// A tag of an IAM resource (IAM keeps tags as an ordered list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The key (unique per resource regardless of case).
    pub key: String,
    /// The value.
    pub value: String,
}

/// A managed policy attached to a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedPolicy {
    /// The policy's name.
    pub policy_name: String,
    /// The policy's ARN.
    pub policy_arn: String,
}

/// An IAM user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The name as created (names are unique regardless of case).
    pub user_name: String,
    /// `AIDA` and 17 uppercase letters and digits.
    pub user_id: String,
    /// `/` or `/a/b/`.
    pub path: String,
    /// `arn:aws:iam::<account>:user<path><name>`.
    pub arn: String,
    /// When it was created.
    pub create_date: Timestamp,
    /// Tags in the order they were given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// A credential as stored, under its access key ID: a long-term access key of the account's
/// root or of a user, or the temporary credentials of an STS session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// `AKIA…` (access keys) or `ASIA…` (sessions), 20 characters.
    pub access_key_id: String,
    /// 40 characters.
    pub secret_access_key: String,
    /// The account the owner belongs to.
    pub account: String,
    /// Whom the credential stands for.
    pub owner: Owner,
    /// `Active` or `Inactive` (IAM's `statusType`; Trellis makes only active keys, and an
    /// inactive one resolves to no identity).
    pub status: String,
    /// When it was made.
    pub create_date: Timestamp,
    /// Sessions: when the credentials stop working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Timestamp>,
    /// Sessions: the token that must accompany the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

/// Whom a stored credential stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Owner {
    /// An STS session of a role (AssumeRole).
    #[serde(rename_all = "camelCase")]
    AssumedRole {
        /// The role's name as created.
        role_name: String,
        /// The role's ARN.
        role_arn: String,
        /// The role's `AROA…` ID.
        role_id: String,
        /// `RoleSessionName`.
        session_name: String,
        /// Session tags (AssumeRole `Tags`), which override the role's tags of the same key.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        session_tags: Vec<Tag>,
    },
    /// The account's root user.
    Root,
    /// An IAM user, by name.
    #[serde(rename_all = "camelCase")]
    User {
        /// The user's name as created.
        user_name: String,
    },
}

/// Who signed a request: what a credential resolves to, with everything SigV4 verification and
/// auth-policy evaluation need (the secret, and the `aws:Principal*` context).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The access key ID.
    pub access_key_id: String,
    /// The secret the signature is made with.
    pub secret_access_key: String,
    /// Sessions: the token the request must carry (`X-Amz-Security-Token`).
    pub session_token: Option<String>,
    /// Sessions: when the credentials stop working.
    pub expiration: Option<Timestamp>,
    /// The principal's account (`aws:PrincipalAccount`).
    pub account: String,
    /// The account's organization (`aws:PrincipalOrgID`).
    pub organization_id: String,
    /// The principal.
    pub principal: Principal,
    /// `aws:PrincipalTag/<key>`: the user's tags, or the role's overridden by session tags.
    pub principal_tags: Vec<Tag>,
}

/// The principal of an [`Identity`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An STS session of a role.
    AssumedRole {
        /// `arn:aws:sts::<account>:assumed-role/<role name>/<session name>`.
        arn: String,
        /// The role's ARN (what trust and auth policies name).
        role_arn: String,
        /// `<role id>:<session name>` (`aws:userid`).
        user_id: String,
        /// The session name.
        session_name: String,
    },
    /// The account's root user, `arn:aws:iam::<account>:root`.
    Root {
        /// The root ARN.
        arn: String,
    },
    /// An IAM user.
    User {
        /// `arn:aws:iam::<account>:user<path><name>`.
        arn: String,
        /// The user's `AIDA…` ID (`aws:userid`).
        user_id: String,
        /// The user's name (`aws:username`).
        user_name: String,
    },
}

/// Why a credential cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The session's credentials have expired.
    #[error("the security token included in the request is expired")]
    Expired,
    /// A session key came without its token, or with another.
    #[error("the security token included in the request is invalid")]
    InvalidToken,
    /// No such access key.
    #[error("the access key ID does not exist")]
    UnknownKey,
}

/// Every usable identity by access key ID: what the data plane holds (on a watch channel) to
/// verify signatures without touching the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identities {
    /// By access key ID.
    pub by_key: HashMap<String, Arc<Identity>>,
}

/// A fresh role ID: `AROA` and 17 random uppercase letters and digits.
pub fn new_role_id() -> String {
    new_id("AROA", 17)
}

/// A fresh user ID: `AIDA` and 17 random uppercase letters and digits.
pub fn new_user_id() -> String {
    new_id("AIDA", 17)
}

/// A fresh long-term access key ID: `AKIA` and 16 random uppercase letters and digits.
pub fn new_access_key_id() -> String {
    new_id("AKIA", 16)
}

/// A fresh temporary (session) access key ID: `ASIA` and 16 random uppercase letters and
/// digits.
pub fn new_session_key_id() -> String {
    new_id("ASIA", 16)
}

/// A fresh secret access key: 40 characters of the base64 alphabet.
pub fn new_secret() -> String {
    random_text(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}

/// A fresh session token: 160 characters of the base64 alphabet (opaque to clients).
pub fn new_session_token() -> String {
    random_text(160, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}

/// A fresh API token (what `trellis credentials` prints for Trellis's own endpoints and the
/// console): `trellis-` and 43 random letters and digits (about 256 bits).
pub fn new_api_token() -> String {
    format!("trellis-{}", random_text(43, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
}

fn new_id(prefix: &str, len: usize) -> String {
    format!("{prefix}{}", random_text(len, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
}

/// `len` random characters of `alphabet` (at most 256 long, so the modulo bias is small and
/// IDs stay unpredictable).
fn random_text(len: usize, alphabet: &[u8]) -> String {
    let mut bytes = vec![0u8; len];
    // A failing system RNG leaves nothing sane to do: IDs must be unpredictable and unique.
    getrandom::fill(&mut bytes).expect("the system random number generator failed");
    bytes.iter().map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()])).collect()
}

/// Equal strings, compared in time independent of where they differ (secrets and tokens).
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// === impl Principal ===

impl Principal {
    /// The principal's ARN (`aws:PrincipalArn` is the role ARN for sessions: see
    /// [`Self::policy_arn`]).
    pub fn arn(&self) -> &str {
        match self {
            Self::AssumedRole { arn, .. } | Self::Root { arn } | Self::User { arn, .. } => arn,
        }
    }

    /// `aws:PrincipalArn`: the root or user ARN, or the role's ARN for a session.
    pub fn policy_arn(&self) -> &str {
        match self {
            Self::AssumedRole { role_arn, .. } => role_arn,
            Self::Root { arn } | Self::User { arn, .. } => arn,
        }
    }

    /// `aws:userid`: the account (root), the user ID, or `<role id>:<session>`.
    pub fn user_id<'a>(&'a self, account: &'a str) -> &'a str {
        match self {
            Self::AssumedRole { user_id, .. } | Self::User { user_id, .. } => user_id,
            Self::Root { .. } => account,
        }
    }

    /// `aws:PrincipalType`: `Account`, `User` or `AssumedRole`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AssumedRole { .. } => "AssumedRole",
            Self::Root { .. } => "Account",
            Self::User { .. } => "User",
        }
    }
}

// === impl Identity ===

impl Identity {
    /// Whether the credential can sign a request at `now_ms` that carries `session_token`: a
    /// session needs its own token and must not have expired; a long-term key ignores a token.
    pub fn check(&self, session_token: Option<&str>, now_ms: u64) -> Result<(), CredentialError> {
        if let Some(wanted) = &self.session_token {
            match session_token {
                Some(given) if same_secret(given, wanted) => {}
                _ => return Err(CredentialError::InvalidToken),
            }
        }
        match self.expiration {
            Some(at) if at.0 <= now_ms => Err(CredentialError::Expired),
            _ => Ok(()),
        }
    }
}

// === impl Identities ===

impl Identities {
    /// The identity of `access_key_id`, if it can sign a request at `now_ms` carrying
    /// `session_token`.
    pub fn find(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
        now_ms: u64,
    ) -> Result<&Arc<Identity>, CredentialError> {
        let identity = self.by_key.get(access_key_id).ok_or(CredentialError::UnknownKey)?;
        identity.check(session_token, now_ms)?;
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expiration: u64) -> Identity {
        Identity {
            access_key_id: "ASIAEXAMPLE0000001".into(),
            secret_access_key: "s".repeat(40),
            session_token: Some("token".into()),
            expiration: Some(Timestamp(expiration)),
            account: "000000000000".into(),
            organization_id: "o-trellis0000".into(),
            principal: Principal::AssumedRole {
                arn: "arn:aws:sts::000000000000:assumed-role/r/s".into(),
                role_arn: "arn:aws:iam::000000000000:role/r".into(),
                user_id: "AROAEXAMPLE:s".into(),
                session_name: "s".into(),
            },
            principal_tags: Vec::new(),
        }
    }

    #[test]
    fn sessions_need_their_token_and_time() {
        let id = session(1000);
        assert_eq!(id.check(Some("token"), 999), Ok(()));
        assert_eq!(id.check(Some("token"), 1000), Err(CredentialError::Expired));
        assert_eq!(id.check(None, 0), Err(CredentialError::InvalidToken));
        assert_eq!(id.check(Some("tokem"), 0), Err(CredentialError::InvalidToken));
        let mut set = Identities::default();
        set.by_key.insert(id.access_key_id.clone(), Arc::new(id));
        assert!(set.find("ASIAEXAMPLE0000001", Some("token"), 1).is_ok());
        assert_eq!(set.find("AKIAOTHER", None, 1).unwrap_err(), CredentialError::UnknownKey);
    }

    #[test]
    fn long_term_keys_ignore_tokens() {
        let mut id = session(0);
        id.session_token = None;
        id.expiration = None;
        id.principal = Principal::Root { arn: "arn:aws:iam::000000000000:root".into() };
        assert_eq!(id.check(None, u64::MAX), Ok(()));
        assert_eq!(id.check(Some("anything"), 5), Ok(()));
        assert_eq!(id.principal.kind(), "Account");
        assert_eq!(id.principal.user_id("000000000000"), "000000000000");
    }

    #[test]
    fn keys_and_secrets_look_like_aws() {
        let (akid, asid, secret) = (new_access_key_id(), new_session_key_id(), new_secret());
        assert!(akid.starts_with("AKIA") && akid.len() == 20, "{akid}");
        assert!(asid.starts_with("ASIA") && asid.len() == 20, "{asid}");
        assert_eq!(secret.len(), 40);
        assert!(new_user_id().starts_with("AIDA"));
        assert_ne!(new_session_token(), new_session_token());
    }

    #[test]
    fn role_ids_look_like_aws() {
        let id = super::new_role_id();
        assert_eq!(id.len(), 21, "{id}");
        assert!(id.starts_with("AROA"), "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "{id}");
        assert_ne!(super::new_role_id(), id);
    }
}
