//! Who an access key stands for: the account's root access key made at first start
//! ([`ensure_root_key`]), the [`Resolver`] that turns an access key ID (and session token) into
//! an [`Identity`] by reading the store, and [`run`], which publishes every identity on a watch
//! channel so that the data plane verifies signatures without touching the store per request.
//!
//! Credentials live under `cred/<access key id>` ([`crate::keys::credential`]); what they stand
//! for (a user's ARN and tags, a role's tags) is read from the IAM records at resolution time,
//! so a TagUser or DeleteUser takes effect on the next request. This module does not verify
//! signatures: it answers "which secret, and whose" for the code that does.
//!
//! # For SigV4 verification
//!
//! - In the control plane, per request: `Resolver::new(store, organization_id)
//!   .resolve(access_key_id, session_token).await` gives `Arc<Identity>` (secret, principal,
//!   account, organization, principal tags, expiry) or why not ([`ResolveError`]).
//! - In the data plane: the root spawns [`run`] with a `watch::Sender<Arc<Identities>>` and hands
//!   the receiver to the proxy, which calls
//!   `identities.borrow().find(access_key_id, session_token, now_ms)` (pure, in `trellis-model`).
//!   Both check the same things ([`Identity::check`]): a session's token and expiry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trellis_model::Timestamp;
use trellis_model::iam::{
    Credential, CredentialError, Identities, Identity, Owner, Principal, Role, Tag, User, new_access_key_id, new_secret,
};
use trellis_store::{Store, StoreExt};

use crate::keys::{self, CREDENTIAL_PREFIX, IamKeys};
use crate::repo::{self, Attempts, RepoError, Tx};

/// How soon [`run`] tries again after the store failed.
const RETRY: Duration = Duration::from_secs(1);
/// Where IAM records are (users and roles give identities their ARNs and tags).
const IAM_PREFIX: &str = "iam/";
/// How long an expired session is kept (and answered as expired rather than unknown) before
/// [`sweep_sessions`] forgets it.
pub const EXPIRED_SESSION_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Why identities could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] trellis_store::Error),
    /// A stored record could not be read.
    #[error("stored {key} is damaged: {why}")]
    Damaged {
        /// Its key.
        key: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Why an access key cannot sign a request.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The credential is unknown, expired, inactive, or its session token is missing or wrong.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] IdentityError),
}

/// Resolves access keys by reading the store (the control plane's way; the data plane uses
/// [`run`]'s [`Identities`]).
#[derive(Clone)]
pub struct Resolver {
    store: Arc<dyn Store>,
    organization_id: String,
}

/// Makes the account's root access key if Trellis has not made one yet (or it was deleted), and
/// answers it. Two nodes starting at once make one: the pointer `iam/<account>/rootkey` is
/// written by compare-and-swap with the key.
pub async fn ensure_root_key(store: &dyn Store, account: &str) -> Result<Credential, IdentityError> {
    let iam = IamKeys::new(account);
    let mut attempts = Attempts::default();
    loop {
        let pointer = store.get(&iam.root_key()).await?;
        if let Some(kv) = &pointer {
            let id = String::from_utf8_lossy(&kv.value);
            if let Some(found) = repo::load::<Credential>(store, &keys::credential(&id)).await.map_err(repo_error)? {
                return Ok(found.value);
            }
        }
        let count = repo::counter(store, iam.access_key_count(None)).await.map_err(repo_error)?;
        let credential = Credential {
            access_key_id: new_access_key_id(),
            secret_access_key: new_secret(),
            account: account.to_owned(),
            owner: Owner::Root,
            status: "Active".to_owned(),
            create_date: crate::now(),
            expiration: None,
            session_token: None,
        };
        let mut tx = Tx::default();
        tx.require_unchanged(iam.root_key(), pointer.map_or(0, |kv| kv.mod_revision));
        tx.put_raw(iam.root_key(), credential.access_key_id.clone().into_bytes());
        tx.create(keys::credential(&credential.access_key_id), &credential);
        tx.create_index(iam.access_key(None, &credential.access_key_id), &credential.access_key_id);
        tx.count(&count, 1);
        if attempts.commit(store, tx).await.map_err(repo_error)? {
            // Debug, not info: the first line a server logs is where it listens.
            tracing::debug!(access_key_id = %credential.access_key_id, %account, "root access key created");
            return Ok(credential);
        }
    }
}

/// `GET /_trellis/credentials`: the root access key, made first if need be, the API token and
/// the default region (what `trellis credentials` prints, and what the CLI signs with).
pub fn router(store: Arc<dyn Store>, account: String, api_token: String, region: String) -> axum::Router {
    let state = Arc::new(CredentialsState { store, account, api_token, region });
    axum::Router::new().route("/_trellis/credentials", axum::routing::get(credentials)).with_state(state)
}

struct CredentialsState {
    store: Arc<dyn Store>,
    account: String,
    api_token: String,
    region: String,
}

async fn credentials(
    axum::extract::State(state): axum::extract::State<Arc<CredentialsState>>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    match ensure_root_key(state.store.as_ref(), &state.account).await {
        Ok(c) => axum::Json(serde_json::json!({
            "accessKeyId": c.access_key_id,
            "secretAccessKey": c.secret_access_key,
            "account": c.account,
            "arn": root_arn(&c.account),
            "token": state.api_token,
            "region": state.region,
        }))
        .into_response(),
        Err(e) => {
            // Handled here, so logged here.
            tracing::error!(error = %e, "cannot read or make the root access key");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

/// `arn:aws:iam::<account>:root`.
pub fn root_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

/// The identity a stored credential stands for, given its owner's record (the user, or the
/// role of a session); `None` when the owner is gone (its keys no longer work).
pub(crate) fn identity_of(
    credential: &Credential,
    user: Option<&User>,
    role: Option<&Role>,
    organization_id: &str,
) -> Option<Identity> {
    let (principal, principal_tags) = match &credential.owner {
        Owner::Root => (Principal::Root { arn: root_arn(&credential.account) }, Vec::new()),
        Owner::User { .. } => {
            let user = user?;
            let principal = Principal::User {
                arn: user.arn.clone(),
                user_id: user.user_id.clone(),
                user_name: user.user_name.clone(),
            };
            (principal, user.tags.clone())
        }
        Owner::AssumedRole { role_name, role_arn, role_id, session_name, session_tags } => {
            let role = role.filter(|r| r.role_id == *role_id)?;
            let principal = Principal::AssumedRole {
                arn: assumed_role_arn(&credential.account, role_name, session_name),
                role_arn: role_arn.clone(),
                user_id: format!("{role_id}:{session_name}"),
                session_name: session_name.clone(),
            };
            (principal, merge_tags(&role.tags, session_tags))
        }
    };
    Some(Identity {
        access_key_id: credential.access_key_id.clone(),
        secret_access_key: credential.secret_access_key.clone(),
        session_token: credential.session_token.clone(),
        expiration: credential.expiration,
        account: credential.account.clone(),
        organization_id: organization_id.to_owned(),
        principal,
        principal_tags,
    })
    .filter(|_| credential.status == "Active")
}

/// `arn:aws:sts::<account>:assumed-role/<role name>/<session name>` (the role's path is not
/// part of it).
pub(crate) fn assumed_role_arn(account: &str, role_name: &str, session_name: &str) -> String {
    format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}")
}

/// The role's tags with the session's tags of the same key (regardless of case) replaced.
fn merge_tags(role: &[Tag], session: &[Tag]) -> Vec<Tag> {
    let mut tags: Vec<Tag> =
        role.iter().filter(|t| !session.iter().any(|s| s.key.eq_ignore_ascii_case(&t.key))).cloned().collect();
    tags.extend(session.iter().cloned());
    tags
}

fn repo_error(e: RepoError) -> IdentityError {
    match e {
        RepoError::Store(e) => IdentityError::Store(e),
        RepoError::Decode { key, source } => IdentityError::Damaged { key, why: source.to_string() },
        other => IdentityError::Damaged { key: String::new(), why: other.to_string() },
    }
}

fn now_ms() -> u64 {
    crate::now().0
}

// === impl Resolver ===

impl Resolver {
    /// A resolver over `store`, for an installation whose organization is `organization_id`.
    pub fn new(store: Arc<dyn Store>, organization_id: impl Into<String>) -> Self {
        Self { store, organization_id: organization_id.into() }
    }

    /// The identity of `access_key_id`, if it may sign a request that carries `session_token`
    /// now: known, active, its owner still there, and for a session, its token and unexpired.
    pub async fn resolve(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
    ) -> Result<Arc<Identity>, ResolveError> {
        let identity = self.find(access_key_id).await?.ok_or(CredentialError::UnknownKey)?;
        identity.check(session_token, now_ms())?;
        Ok(Arc::new(identity))
    }

    /// The identity of `access_key_id` as stored, whether or not it is still usable (expired
    /// sessions included); `None` if the key, or its owner, does not exist.
    pub async fn find(&self, access_key_id: &str) -> Result<Option<Identity>, IdentityError> {
        let store = self.store.as_ref();
        let key = keys::credential(access_key_id);
        let Some(credential) = repo::load::<Credential>(store, &key).await.map_err(repo_error)? else {
            return Ok(None);
        };
        let credential = credential.value;
        let iam = IamKeys::new(&credential.account);
        let (user, role) = match &credential.owner {
            Owner::Root => (None, None),
            Owner::User { user_name } => {
                (repo::load::<User>(store, &iam.user(user_name)).await.map_err(repo_error)?.map(|v| v.value), None)
            }
            Owner::AssumedRole { role_name, .. } => {
                (None, repo::load::<Role>(store, &iam.role(role_name)).await.map_err(repo_error)?.map(|v| v.value))
            }
        };
        Ok(identity_of(&credential, user.as_ref(), role.as_ref(), &self.organization_id))
    }
}

// === the data plane's copy ===

/// Publishes every identity on `tx` and keeps it current as credentials, users and roles
/// change, until `stop`. Expired sessions stay in the set (so that a verifier can say "expired"
/// rather than "unknown"); [`Identities::find`] refuses them. Failures are logged and retried;
/// what was published stays in force.
pub async fn run(
    store: Arc<dyn Store>,
    organization_id: String,
    tx: watch::Sender<Arc<Identities>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let opened = async {
            let (identities, revision) = read_all(store.as_ref(), &organization_id).await?;
            let creds = store.watch(CREDENTIAL_PREFIX.to_owned(), revision + 1).await?;
            let iam = store.watch(IAM_PREFIX.to_owned(), revision + 1).await?;
            Ok::<_, IdentityError>((identities, creds, iam))
        }
        .await;
        let (identities, mut creds, mut iam) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or watch credentials; retrying");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        tx.send_if_modified(|published| {
            let changed = **published != identities;
            if changed {
                *published = Arc::new(identities);
            }
            changed
        });
        // Any change, or a broken watch: read everything afresh (credentials are few, and
        // rebuilding keeps users' and roles' tags right without tracking who refers to whom).
        loop {
            tokio::select! {
                _ = creds.recv() => break,
                event = iam.recv() => match event {
                    // Attachments, counters and the rest of IAM change no identity.
                    Some(Ok(e)) if !is_user_or_role(&e.kv.key) => {}
                    _ => break,
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Every identity in the store, and the revision it was read at.
async fn read_all(store: &dyn Store, organization_id: &str) -> Result<(Identities, i64), IdentityError> {
    let creds = store.list_prefix(CREDENTIAL_PREFIX, None, 0).await?;
    let records = store.list_prefix(IAM_PREFIX, None, 0).await?;
    let mut users = HashMap::new();
    let mut roles = HashMap::new();
    for kv in &records.kvs {
        let mut parts = kv.key.splitn(4, '/');
        let (_, account, kind, name) = (parts.next(), parts.next(), parts.next(), parts.next());
        let (Some(account), Some(kind), Some(name)) = (account, kind, name) else { continue };
        let id = (account.to_owned(), name.to_owned());
        match kind {
            "user" => {
                if let Some(user) = readable::<User>(&kv.key, &kv.value) {
                    users.insert(id, user);
                }
            }
            "role" => {
                if let Some(role) = readable::<Role>(&kv.key, &kv.value) {
                    roles.insert(id, role);
                }
            }
            _ => {}
        }
    }
    let mut identities = Identities::default();
    for kv in &creds.kvs {
        let Some(credential) = readable::<Credential>(&kv.key, &kv.value) else { continue };
        let (user, role) = match &credential.owner {
            Owner::Root => (None, None),
            Owner::User { user_name } => {
                (users.get(&(credential.account.clone(), user_name.to_ascii_lowercase())), None)
            }
            Owner::AssumedRole { role_name, .. } => {
                (None, roles.get(&(credential.account.clone(), role_name.to_ascii_lowercase())))
            }
        };
        if let Some(identity) = identity_of(&credential, user, role, organization_id) {
            identities.by_key.insert(identity.access_key_id.clone(), Arc::new(identity));
        }
    }
    // Both lists are read at their own revision; the watches start after the earlier one, so
    // nothing written between the two is missed (at worst it is read twice).
    Ok((identities, creds.revision.min(records.revision)))
}

/// Forgets sessions that expired more than [`EXPIRED_SESSION_GRACE`] before `now_ms`; how many.
/// Each is deleted only if unchanged since read, so nodes sweeping at once do no harm.
pub async fn sweep_sessions(store: &dyn Store, now_ms: u64) -> Result<usize, IdentityError> {
    let grace = u64::try_from(EXPIRED_SESSION_GRACE.as_millis()).unwrap_or(u64::MAX);
    let read = store.list_prefix(CREDENTIAL_PREFIX, None, 0).await?;
    let mut swept = 0;
    for kv in read.kvs {
        let Some(credential) = readable::<Credential>(&kv.key, &kv.value) else { continue };
        if credential.expiration.is_some_and(|at| at.0.saturating_add(grace) < now_ms) {
            let mut tx = Tx::default();
            tx.require_unchanged(kv.key.clone(), kv.mod_revision);
            tx.delete(kv.key);
            if Attempts::default().commit(store, tx).await.map_err(repo_error)? {
                swept += 1;
            }
        }
    }
    Ok(swept)
}

fn is_user_or_role(key: &str) -> bool {
    matches!(key.split('/').nth(2), Some("user" | "role"))
}

/// A stored record, or `None` (logged: a person should look) if it is damaged; one damaged
/// record must not keep every other identity from being published.
fn readable<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(%key, error = %e, "damaged IAM record; left out of the identities");
            None
        }
    }
}

/// A session's expiry, `seconds` from now.
pub(crate) fn expiry_in(seconds: u32) -> Timestamp {
    Timestamp(now_ms() + u64::from(seconds) * 1000)
}

#[cfg(test)]
mod tests;
