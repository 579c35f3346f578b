//! Access keys: CreateAccessKey, DeleteAccessKey and ListAccessKeys, of a user or (without
//! `UserName`, called by the root) of the root. The credential lives under `cred/<key id>`
//! (where the identity resolver finds it); its owner's index `iam/<account>/keys/<owner>/<key
//! id>` lists it, and `iam/<account>/count/keys/<owner>` counts it (the quota of two, and
//! DeleteUser's guard).

use trellis_model::iam::{Credential, Owner, Principal, new_access_key_id, new_secret};

use super::error::{Code, IamError};
use super::input::{ACCESS_KEY_ID, EXISTING_USER_NAME, Violations};
use super::user::{load_user, not_a_user};
use super::{Req, Xml};
use crate::keys;
use crate::repo::{self, Attempts, Tx};

/// Access keys per user (and per root), IAM's fixed quota.
const MAX_KEYS: u64 = 2;

/// Whose keys a request means: a user (by the name as created), or the root (`None`).
type Whose = Option<String>;

/// `UserName`, or the caller: a user means itself, the root means the root, a session must name
/// a user.
async fn whose(req: &Req<'_>, found: Violations) -> Result<Whose, IamError> {
    let mut found = found;
    let name = req.optional("UserName", &EXISTING_USER_NAME, &mut found);
    found.finish()?;
    match name {
        Some(name) => Ok(Some(load_user(req, &name).await?.value.user_name)),
        None => match req.caller().await?.principal {
            Principal::User { user_name, .. } => Ok(Some(user_name)),
            Principal::Root { .. } => Ok(None),
            Principal::AssumedRole { .. } => Err(not_a_user()),
        },
    }
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let owner = whose(req, Violations::default()).await?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let count = repo::counter(store, req.keys.access_key_count(owner.as_deref())).await?;
        let user = match &owner {
            Some(name) => Some(load_user(req, name).await?),
            None => None,
        };
        if count.value() >= MAX_KEYS {
            return Err(IamError::new(
                Code::LimitExceeded,
                format!("Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS}"),
            ));
        }
        let credential = Credential {
            access_key_id: new_access_key_id(),
            secret_access_key: new_secret(),
            account: req.ctx.account.clone(),
            owner: owner.as_ref().map_or(Owner::Root, |name| Owner::User { user_name: name.clone() }),
            status: "Active".to_owned(),
            create_date: crate::now(),
            expiration: None,
            session_token: None,
        };
        let mut tx = Tx::default();
        if let Some(user) = &user {
            // The user is still there at commit.
            tx.require_unchanged(user.key.clone(), user.revision);
        }
        tx.count(&count, 1);
        tx.create(keys::credential(&credential.access_key_id), &credential);
        tx.create_index(req.keys.access_key(owner.as_deref(), &credential.access_key_id), &credential.access_key_id);
        if attempts.commit(store, tx).await? {
            let mut x = Xml::default();
            x.open("AccessKey");
            if let Some(name) = &owner {
                x.leaf("UserName", name);
            }
            x.leaf("AccessKeyId", &credential.access_key_id)
                .leaf("Status", &credential.status)
                .leaf("SecretAccessKey", &credential.secret_access_key)
                .leaf("CreateDate", &credential.create_date.iso8601())
                .close("AccessKey");
            return Ok(Some(x));
        }
    }
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let id = req.required("AccessKeyId", &ACCESS_KEY_ID, &mut found);
    let owner = whose(req, found).await?;
    let store = req.store();
    let missing = || IamError::new(Code::NoSuchEntity, format!("The Access Key with id {id} cannot be found."));
    let mut attempts = Attempts::default();
    loop {
        let count = repo::counter(store, req.keys.access_key_count(owner.as_deref())).await?;
        let index = req.keys.access_key(owner.as_deref(), &id);
        let Some(indexed) = repo::load_index(store, &index).await? else {
            return Err(missing());
        };
        let Some(credential) = repo::load::<Credential>(store, &keys::credential(&indexed)).await? else {
            return Err(missing());
        };
        let mut tx = Tx::default();
        tx.delete_read(&credential);
        tx.delete(index);
        tx.count(&count, -1);
        if attempts.commit(store, tx).await? {
            return Ok(None);
        }
    }
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let page = req.page(&mut found);
    let owner = whose(req, found).await?;
    let store = req.store();
    let ids = repo::list_index(store, &req.keys.access_keys(owner.as_deref())).await?;
    let mut credentials = Vec::new();
    for id in ids {
        if let Some(c) = repo::load::<Credential>(store, &keys::credential(&id)).await? {
            credentials.push((id, c.value));
        }
    }
    let (credentials, next) = page.take(credentials)?;
    let mut x = Xml::default();
    x.open("AccessKeyMetadata");
    for c in &credentials {
        x.open("member");
        if let Some(name) = &owner {
            x.leaf("UserName", name);
        }
        x.leaf("AccessKeyId", &c.access_key_id)
            .leaf("Status", &c.status)
            .leaf("CreateDate", &c.create_date.iso8601())
            .close("member");
    }
    x.close("AccessKeyMetadata");
    super::truncation(&mut x, next);
    Ok(Some(x))
}
