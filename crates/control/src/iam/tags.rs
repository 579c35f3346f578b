//! Tags of roles and users: reading `Tags.member.N` and `TagKeys.member.N`, IAM's tag rules
//! (at most 50, keys unique regardless of case, no `aws:` prefix), and TagRole, UntagRole,
//! ListRoleTags, TagUser, UntagUser and ListUserTags. Tags live in the role's or user's record;
//! the identities of a user or a role's sessions carry them as `aws:PrincipalTag/…`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_model::iam::{Role, Tag, User};

use super::error::{Code, IamError};
use super::input::{EXISTING_USER_NAME, ROLE_NAME, Rule, TAG_KEY, TAG_VALUE, Violations};
use super::{Req, Xml};
use crate::repo::{self, Attempts, Tx};

/// Tags per role or user.
const MAX_TAGS: usize = 50;

/// A record that has tags.
trait Tagged: Serialize + DeserializeOwned + Clone {
    fn tags_mut(&mut self) -> &mut Vec<Tag>;
    fn tags(&self) -> &[Tag];
}

/// `Tags.member.N.Key` / `.Value`, each checked against the tag rules and reported as AWS
/// names them (`tags.1.member.key`).
pub(crate) fn tags(req: &Req<'_>, found: &mut Violations) -> Vec<Tag> {
    let mut tags = Vec::new();
    for n in req.params.indices("Tags.member") {
        let mut member = |rule: &Rule, name: &str| {
            let field = format!("tags.{n}.member.{}", name.to_ascii_lowercase());
            match req.params.get(&format!("Tags.member.{n}.{name}")) {
                Some(value) => {
                    rule.check_as(&field, value, found);
                    value.to_owned()
                }
                None => {
                    found.add(&field, None, "Member must not be null");
                    String::new()
                }
            }
        };
        let key = member(&TAG_KEY, "Key");
        let value = member(&TAG_VALUE, "Value");
        tags.push(Tag { key, value });
    }
    tags
}

/// At most 50 tags (`quota` names the quota in the message), keys unique regardless of case,
/// none reserved (`aws:`).
pub(crate) fn check_tags(tags: Vec<Tag>, quota: &str) -> Result<Vec<Tag>, IamError> {
    if tags.len() > MAX_TAGS {
        return Err(IamError::new(Code::LimitExceeded, format!("Cannot exceed quota for {quota}: {MAX_TAGS}")));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tags[..i].iter().any(|t| t.key.eq_ignore_ascii_case(&tag.key)) {
            return Err(IamError::invalid("Duplicate tag keys found. Please note that Tag keys are case insensitive."));
        }
        if tag.key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(IamError::invalid(format!("Tag key {} uses the reserved prefix aws:.", tag.key)));
        }
    }
    Ok(tags)
}

/// `<Tags>` with a `<member>` per tag.
pub(crate) fn render(x: &mut Xml, tags: &[Tag]) {
    x.open("Tags");
    for tag in tags {
        x.open("member").leaf("Key", &tag.key).leaf("Value", &tag.value).close("member");
    }
    x.close("Tags");
}

/// `existing` with `new` added, a new value replacing the old one of the same key (regardless of
/// case); at most 50 in all.
fn merge(existing: &mut Vec<Tag>, new: Vec<Tag>, quota: &str) -> Result<(), IamError> {
    for tag in new {
        match existing.iter_mut().find(|t| t.key.eq_ignore_ascii_case(&tag.key)) {
            Some(old) => *old = tag,
            None => existing.push(tag),
        }
    }
    if existing.len() > MAX_TAGS {
        return Err(IamError::new(Code::LimitExceeded, format!("Cannot exceed quota for {quota}: {MAX_TAGS}")));
    }
    Ok(())
}

pub(crate) async fn tag_role(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let name = name(req, "RoleName", &ROLE_NAME)?;
    let new = new_tags(req, "TagsPerRole")?;
    change::<Role>(req, req.keys.role(&name), IamError::no_role(&name), |tags| merge(tags, new.clone(), "TagsPerRole"))
        .await
}

pub(crate) async fn tag_user(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let name = name(req, "UserName", &EXISTING_USER_NAME)?;
    let new = new_tags(req, "TagsPerUser")?;
    change::<User>(req, req.keys.user(&name), IamError::no_user(&name), |tags| merge(tags, new.clone(), "TagsPerUser"))
        .await
}

pub(crate) async fn untag_role(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let (name, keys) = name_and_keys(req, "RoleName", &ROLE_NAME)?;
    change::<Role>(req, req.keys.role(&name), IamError::no_role(&name), |tags| untag(tags, &keys)).await
}

pub(crate) async fn untag_user(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    let (name, keys) = name_and_keys(req, "UserName", &EXISTING_USER_NAME)?;
    change::<User>(req, req.keys.user(&name), IamError::no_user(&name), |tags| untag(tags, &keys)).await
}

pub(crate) async fn list_role_tags(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    list::<Role>(req, "RoleName", &ROLE_NAME, |req, name| (req.keys.role(name), IamError::no_role(name))).await
}

pub(crate) async fn list_user_tags(req: &Req<'_>) -> Result<Option<Xml>, IamError> {
    list::<User>(req, "UserName", &EXISTING_USER_NAME, |req, name| (req.keys.user(name), IamError::no_user(name))).await
}

fn untag(tags: &mut Vec<Tag>, keys: &[String]) -> Result<(), IamError> {
    tags.retain(|t| !keys.iter().any(|k| k.eq_ignore_ascii_case(&t.key)));
    Ok(())
}

fn name(req: &Req<'_>, member: &str, rule: &Rule) -> Result<String, IamError> {
    let mut found = Violations::default();
    let name = req.required(member, rule, &mut found);
    found.finish()?;
    Ok(name)
}

/// `Tags` (required), checked.
fn new_tags(req: &Req<'_>, quota: &str) -> Result<Vec<Tag>, IamError> {
    let mut found = Violations::default();
    let tags = tags(req, &mut found);
    if tags.is_empty() && req.params.get("Tags").is_none() {
        found.add("tags", None, "Member must not be null");
    }
    found.finish()?;
    check_tags(tags, quota)
}

/// The name and `TagKeys.member.N`.
fn name_and_keys(req: &Req<'_>, member: &str, rule: &Rule) -> Result<(String, Vec<String>), IamError> {
    let mut found = Violations::default();
    let name = req.required(member, rule, &mut found);
    let mut keys = Vec::new();
    for (i, key) in req.params.list("TagKeys.member").into_iter().enumerate() {
        TAG_KEY.check_as(&format!("tagKeys.{}.member", i + 1), key, &mut found);
        keys.push(key.to_owned());
    }
    if keys.is_empty() && req.params.get("TagKeys").is_none() {
        found.add("tagKeys", None, "Member must not be null");
    }
    if keys.len() > MAX_TAGS {
        found.add("tagKeys", None, &format!("Member must have length less than or equal to {MAX_TAGS}"));
    }
    found.finish()?;
    Ok((name, keys))
}

/// Changes the tags of the record under `key` in one transaction.
async fn change<T: Tagged>(
    req: &Req<'_>,
    key: String,
    missing: IamError,
    edit: impl Fn(&mut Vec<Tag>) -> Result<(), IamError>,
) -> Result<Option<Xml>, IamError> {
    let store = req.store();
    let mut attempts = Attempts::default();
    loop {
        let Some(read) = repo::load::<T>(store, &key).await? else {
            return Err(missing);
        };
        let mut value = read.value.clone();
        edit(value.tags_mut())?;
        let mut tx = Tx::default();
        tx.update(&read, &value);
        if attempts.commit(store, tx).await? {
            return Ok(None);
        }
    }
}

/// A page of the tags of the record a name names.
async fn list<T: Tagged>(
    req: &Req<'_>,
    member: &str,
    rule: &Rule,
    locate: impl Fn(&Req<'_>, &str) -> (String, IamError),
) -> Result<Option<Xml>, IamError> {
    let mut found = Violations::default();
    let name = req.required(member, rule, &mut found);
    let page = req.page(&mut found);
    found.finish()?;
    let (key, missing) = locate(req, &name);
    let Some(read) = repo::load::<T>(req.store(), &key).await? else {
        return Err(missing);
    };
    // Tags keep their order: the marker is a position.
    let items = read.value.tags().iter().enumerate().map(|(i, t)| (format!("{i:05}"), t.clone())).collect();
    let (tags, next) = page.take(items)?;
    let mut x = Xml::default();
    render(&mut x, &tags);
    super::truncation(&mut x, next);
    Ok(Some(x))
}

// === impl Tagged ===

impl Tagged for Role {
    fn tags_mut(&mut self) -> &mut Vec<Tag> {
        &mut self.tags
    }

    fn tags(&self) -> &[Tag] {
        &self.tags
    }
}

impl Tagged for User {
    fn tags_mut(&mut self) -> &mut Vec<Tag> {
        &mut self.tags
    }

    fn tags(&self) -> &[Tag] {
        &self.tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> Tag {
        Tag { key: k.into(), value: v.into() }
    }

    #[test]
    fn merging_replaces_values_regardless_of_case() {
        let mut tags = vec![tag("team", "a"), tag("env", "dev")];
        merge(&mut tags, vec![tag("Team", "b"), tag("cost", "1")], "TagsPerRole").unwrap();
        assert_eq!(tags, [tag("Team", "b"), tag("env", "dev"), tag("cost", "1")]);
        let many: Vec<Tag> = (0..48).map(|i| tag(&format!("k{i}"), "")).collect();
        let err = merge(&mut tags, many, "TagsPerRole").unwrap_err();
        assert_eq!(err.code, Code::LimitExceeded);
        assert!(err.message.contains("TagsPerRole: 50"), "{}", err.message);
    }

    #[test]
    fn untagging_ignores_case_and_unknown_keys() {
        let mut tags = vec![tag("team", "a"), tag("env", "dev")];
        untag(&mut tags, &["TEAM".into(), "nope".into()]).unwrap();
        assert_eq!(tags, [tag("env", "dev")]);
    }
}
