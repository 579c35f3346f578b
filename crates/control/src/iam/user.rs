//! Users: CreateUser, GetUser, ListUsers and DeleteUser. A user lives under
//! `iam/<account>/user/<name in lowercase>` (names are unique regardless of case, as in AWS).
//! DeleteUser refuses a user that still has access keys (`DeleteConflict`), proven by the
//! owner's key counter read as zero and unchanged at commit.

use trellis_model::iam::{Principal, User, new_user_id};
use trellis_store::StoreExt;

use super::error::{Code, IamError};
use super::input::{ARN, EXISTING_USER_NAME, PATH, USER_NAME, Violations};
use super::tags::{check_tags, tags};
use super::{Req, Xml};
use crate::repo::{self, Attempts, Tx};

/// Which members a `User` is shown with: ListUsers leaves out tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detail {
    Full,
    Listed,
}

/// Loads a user; `NoSuchEntity` if there is none of that name.
pub(crate) async fn load_user(req: &Req<'_>, name: &str) -> Result<repo::Versioned<User>, IamError> {
    repo::load::<User>(req.store(), &req.keys.user(name)).await?.ok_or_else(|| IamError::no_user(name))
}

pub(crate) async fn create(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let name = req.required("UserName", &USER_NAME, &mut found);
    let path = req.optional("Path", &PATH, &mut found).unwrap_or_else(|| "/".to_owned());
    let boundary = req.optional("PermissionsBoundary", &ARN.named("permissionsBoundary"), &mut found);
    let tags = tags(req, &mut found);
    found.finish()?;
    let tags = check_tags(tags, "TagsPerUser")?;
    if boundary.is_some() {
        return Err(IamError::invalid("Trellis does not serve permissions boundaries."));
    }
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let key = req.keys.user(&name);
        if store.get(&key).await?.is_some() {
            return Err(IamError::new(Code::EntityAlreadyExists, format!("User with name {name} already exists.")));
        }
        let user = User {
            user_name: name.clone(),
            user_id: new_user_id(),
            arn: format!("arn:aws:iam::{}:user{path}{name}", req.ctx.account),
            path: path.clone(),
            create_date: crate::now(),
            tags: tags.clone(),
        };
        let mut tx = Tx::default();
        tx.create(key, &user);
        if attempts.commit(store, tx).await? {
            let mut x = Xml::default();
            render(&mut x, &user, "User", Detail::Full);
            return Ok(Some(x));
        }
    }
}

/// GetUser: the named user, or without a name the caller (the root answers as itself).
pub(crate) async fn get(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let name = req.optional("UserName", &EXISTING_USER_NAME, &mut found);
    found.finish()?;
    let name = match name {
        Some(name) => name,
        None => match req.caller().await?.principal {
            Principal::User { user_name, .. } => user_name,
            Principal::Root { arn } => {
                let key = crate::identity::ensure_root_key(req.store(), &req.ctx.account)
                    .await
                    .map_err(|e| IamError::new(Code::ServiceFailure, e.to_string()))?;
                let mut x = Xml::default();
                x.open("User")
                    .leaf("UserId", &req.ctx.account)
                    .leaf("Arn", &arn)
                    .leaf("CreateDate", &key.create_date.iso8601())
                    .close("User");
                return Ok(Some(x));
            }
            Principal::AssumedRole { .. } => return Err(not_a_user()),
        },
    };
    let user = load_user(req, &name).await?;
    let mut x = Xml::default();
    render(&mut x, &user.value, "User", Detail::Full);
    Ok(Some(x))
}

pub(crate) async fn list(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    fn path_and_name(u: &User) -> (&str, &str) {
        (&u.path, &u.user_name)
    }
    super::list_by_path(req, &req.keys.users(), "Users", path_and_name, |x, u| render(x, u, "member", Detail::Listed))
        .await
}

pub(crate) async fn delete(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let name = req.required("UserName", &EXISTING_USER_NAME, &mut found);
    found.finish()?;
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let user = load_user(req, &name).await?;
        let keys = repo::counter(store, req.keys.access_key_count(Some(&name))).await?;
        if keys.value() > 0 {
            return Err(IamError::new(Code::DeleteConflict, "Cannot delete entity, must delete access keys first."));
        }
        let mut tx = Tx::default();
        tx.delete_read(&user);
        // Read as zero and still so at commit: no key was made meanwhile.
        tx.retire(&keys);
        if attempts.commit(store, tx).await? {
            return Ok(None);
        }
    }
}

/// What IAM answers a session that leaves out `UserName` where it means "me".
pub(crate) fn not_a_user() -> IamError {
    IamError::new(Code::ValidationError, "Must specify userName when calling with non-User credentials")
}

/// A `User` structure as element `element`.
fn render(x: &mut Xml, user: &User, element: &str, detail: Detail) {
    x.open(element)
        .leaf("Path", &user.path)
        .leaf("UserName", &user.user_name)
        .leaf("UserId", &user.user_id)
        .leaf("Arn", &user.arn)
        .leaf("CreateDate", &user.create_date.iso8601());
    if detail == Detail::Full && !user.tags.is_empty() {
        super::tags::render(x, &user.tags);
    }
    x.close(element);
}
