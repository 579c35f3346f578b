//! Tags on VPCs, subnets and security groups: `TagSpecification.N` on the Create operations,
//! and CreateTags / DeleteTags on existing resources (by ID prefix), with EC2's tag rules: keys
//! of 1–127 characters not starting with `aws:`, values of up to 255, at most 50 per resource.

use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_model::Kind;
use trellis_model::ec2::{SecurityGroup, Subnet, Vpc};
use trellis_model::lattice::Tags;

use super::error::{Code, Ec2Error};
use super::xml::Xml;
use super::{Req, returned_true};
use trellis_store::StoreExt;

use crate::repo::{self, Attempts, Tx};

/// Tags per resource.
const MAX_TAGS: usize = 50;

/// A `Tag.N` as sent: its key, and its value if one was sent.
type TagParam = (String, Option<String>);

/// The tags of the request's `TagSpecification.N` for `resource_type` (`vpc`, `subnet`,
/// `security-group`), the only type the operation creates.
pub(crate) fn from_specifications(req: &Req<'_>, resource_type: &str) -> Result<Tags, Ec2Error> {
    let mut tags = Tags::new();
    let mut seen = false;
    for n in req.indices("TagSpecification") {
        let kind = req.param(&format!("TagSpecification.{n}.ResourceType")).unwrap_or_default();
        if kind.is_empty() {
            return Err(Ec2Error::invalid("Tag specification resource type must have a value"));
        }
        if kind != resource_type {
            return Err(Ec2Error::invalid(format!(
                "'{kind}' is not a valid taggable resource type for this operation."
            )));
        }
        if seen {
            return Err(Ec2Error::invalid(format!("The tag specification for resource type '{kind}' is duplicated.")));
        }
        seen = true;
        for (key, value) in read(req, &format!("TagSpecification.{n}.Tag"))? {
            if tags.insert(key.clone(), value.unwrap_or_default()).is_some() {
                return Err(Ec2Error::invalid(format!("Duplicate tag key '{key}' specified.")));
            }
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(limit_exceeded());
    }
    Ok(tags)
}

/// CreateTags: adds or overwrites tags on every `ResourceId.N`, all or none.
pub(crate) async fn create(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let resources = resources(req)?;
    let tags = read(req, "Tag")?;
    if tags.is_empty() {
        return Err(Ec2Error::missing("Tag"));
    }
    let edit = |have: &mut Tags| {
        for (key, value) in &tags {
            have.insert(key.clone(), value.clone().unwrap_or_default());
        }
        if have.len() > MAX_TAGS { Err(limit_exceeded()) } else { Ok(()) }
    };
    retag_all(req, &resources, &edit).await?;
    Ok(returned_true())
}

/// DeleteTags: removes the given keys (only where the value matches, if one was sent), or
/// every tag when no `Tag.N` was sent.
pub(crate) async fn delete(req: &Req<'_>) -> Result<Xml, Ec2Error> {
    let resources = resources(req)?;
    let tags = read(req, "Tag")?;
    let edit = |have: &mut Tags| {
        if tags.is_empty() {
            have.clear();
        }
        for (key, value) in &tags {
            if value.as_ref().is_none_or(|v| have.get(key) == Some(v)) {
                have.remove(key);
            }
        }
        Ok(())
    };
    retag_all(req, &resources, &edit).await?;
    Ok(returned_true())
}

/// The `ResourceId.N` of a tagging call, as (kind, ID), duplicates dropped.
fn resources(req: &Req<'_>) -> Result<Vec<(Kind, String)>, Ec2Error> {
    let ids = req.list("ResourceId");
    if ids.is_empty() {
        return Err(Ec2Error::missing("ResourceId"));
    }
    let mut out: Vec<(Kind, String)> = Vec::new();
    for id in ids {
        let kind = id
            .split_once('-')
            .and_then(|(prefix, _)| Kind::from_prefix(prefix))
            .filter(|k| matches!(k, Kind::Vpc | Kind::Subnet | Kind::SecurityGroup) && k.is_id(id))
            .ok_or_else(|| Ec2Error::new(Code::InvalidId, format!("The ID '{id}' is not valid")))?;
        if !out.iter().any(|(_, have)| have == id) {
            out.push((kind, id.to_owned()));
        }
    }
    Ok(out)
}

/// Applies `edit` to the tags of every resource. All must exist (else nothing changes). EC2
/// takes up to 1000 resources in one call, more than one store transaction may hold (etcd's
/// limit is 128 operations), so they are written in transactions of [`CHUNK`]; EC2 makes no
/// promise that a tagging call is all-or-nothing either.
async fn retag_all(
    req: &Req<'_>,
    resources: &[(Kind, String)],
    edit: &(dyn Fn(&mut Tags) -> Result<(), Ec2Error> + Sync),
) -> Result<(), Ec2Error> {
    const CHUNK: usize = 100;
    if resources.len() > CHUNK {
        // Check them all first, so that a missing one changes nothing.
        let mut missing: Vec<(Kind, &str)> = Vec::new();
        for (kind, id) in resources {
            if req.store().get(&req.keys.res(*kind, id)).await.map_err(crate::repo::RepoError::from)?.is_none() {
                missing.push((*kind, id));
            }
        }
        if let Some(e) = not_found(&missing) {
            return Err(e);
        }
    }
    for chunk in resources.chunks(CHUNK) {
        let mut attempts = Attempts::default();
        loop {
            let mut tx = Tx::default();
            let mut missing: Vec<(Kind, &str)> = Vec::new();
            for (kind, id) in chunk {
                let key = req.keys.res(*kind, id);
                let found = match kind {
                    Kind::Vpc => retag::<Vpc>(req, &mut tx, &key, |v| &mut v.tags, edit).await?,
                    Kind::Subnet => retag::<Subnet>(req, &mut tx, &key, |s| &mut s.tags, edit).await?,
                    _ => retag::<SecurityGroup>(req, &mut tx, &key, |g| &mut g.tags, edit).await?,
                };
                if !found {
                    missing.push((*kind, id));
                }
            }
            if let Some(e) = not_found(&missing) {
                return Err(e);
            }
            req.check_dry_run()?;
            if attempts.commit(req.store(), tx).await? {
                break;
            }
        }
    }
    Ok(())
}

/// The error for the resources found missing (those of the first missing kind), if any.
fn not_found(missing: &[(Kind, &str)]) -> Option<Ec2Error> {
    let (kind, _) = missing.first()?;
    let ids: Vec<&str> = missing.iter().filter(|(k, _)| k == kind).map(|(_, id)| *id).collect();
    Some(Ec2Error::not_found(*kind, &ids))
}

/// Adds to `tx` the update of one record's tags; `false` if it does not exist.
async fn retag<T: Clone + Serialize + DeserializeOwned>(
    req: &Req<'_>,
    tx: &mut Tx,
    key: &str,
    tags_of: fn(&mut T) -> &mut Tags,
    edit: &(dyn Fn(&mut Tags) -> Result<(), Ec2Error> + Sync),
) -> Result<bool, Ec2Error> {
    let Some(read) = repo::load::<T>(req.store(), key).await? else {
        return Ok(false);
    };
    let mut value = read.value.clone();
    edit(tags_of(&mut value))?;
    tx.update(&read, &value);
    Ok(true)
}

/// Reads and checks the tags `prefix.N.Key` / `prefix.N.Value`.
fn read(req: &Req<'_>, prefix: &str) -> Result<Vec<TagParam>, Ec2Error> {
    let mut tags = Vec::new();
    for n in req.indices(prefix) {
        let key =
            req.param(&format!("{prefix}.{n}.Key")).ok_or_else(|| Ec2Error::missing(&format!("{prefix}.{n}.Key")))?;
        let value = req.param(&format!("{prefix}.{n}.Value"));
        check(key, value)?;
        tags.push((key.to_owned(), value.map(str::to_owned)));
    }
    Ok(tags)
}

fn check(key: &str, value: Option<&str>) -> Result<(), Ec2Error> {
    let key_len = key.chars().count();
    if key_len == 0 || key_len > 127 {
        return Err(Ec2Error::invalid(format!(
            "Tag key '{key}' is invalid: tag keys must be between 1 and 127 characters long."
        )));
    }
    if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
        return Err(Ec2Error::invalid(format!(
            "Tag key '{key}' is invalid: tag keys starting with 'aws:' are reserved for internal use."
        )));
    }
    if value.is_some_and(|v| v.chars().count() > 255) {
        return Err(Ec2Error::invalid(format!(
            "The value of tag '{key}' is invalid: tag values may be at most 255 characters long."
        )));
    }
    Ok(())
}

fn limit_exceeded() -> Ec2Error {
    Ec2Error::new(Code::TagLimitExceeded, "The maximum number of Tags for a resource has been reached.")
}

#[cfg(test)]
mod tests {
    use crate::ec2::testing::{code, subnet, vpc};
    use crate::test_util::{app, ec2};

    #[tokio::test]
    async fn create_and_delete_tags() {
        let (app, _dir) = app();
        let vpc = vpc(&app, "10.0.0.0/16").await;
        let subnet = subnet(&app, &vpc, "10.0.1.0/24").await;
        let (status, body) = ec2(
            &app,
            &[
                ("Action", "CreateTags"),
                ("ResourceId.1", &vpc),
                ("ResourceId.2", &subnet),
                ("Tag.1.Key", "Name"),
                ("Tag.1.Value", "a&b"),
                ("Tag.2.Key", "env"),
                ("Tag.2.Value", "dev"),
                ("Tag.3.Key", "empty"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("<CreateTagsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>"),
            "{body}"
        );
        assert!(body.contains("<return>true</return>"), "{body}");
        let (_, body) = ec2(&app, &[("Action", "DescribeSubnets"), ("SubnetId.1", &subnet)]).await;
        assert!(body.contains("<item><key>Name</key><value>a&amp;b</value></item>"), "{body}");
        assert!(body.contains("<item><key>empty</key><value></value></item>"), "{body}");

        // A value that does not match leaves the tag; no value removes it whatever its value.
        let (status, _) = ec2(
            &app,
            &[
                ("Action", "DeleteTags"),
                ("ResourceId.1", &vpc),
                ("Tag.1.Key", "env"),
                ("Tag.1.Value", "prod"),
                ("Tag.2.Key", "Name"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        let (_, body) = ec2(&app, &[("Action", "DescribeVpcs"), ("VpcId.1", &vpc)]).await;
        assert!(body.contains("<key>env</key>") && !body.contains("<key>Name</key>"), "{body}");
        let (_, _) = ec2(&app, &[("Action", "DeleteTags"), ("ResourceId.1", &vpc)]).await;
        let (_, body) = ec2(&app, &[("Action", "DescribeVpcs"), ("VpcId.1", &vpc)]).await;
        assert!(!body.contains("<tagSet>"), "{body}");
    }

    #[tokio::test]
    async fn tag_errors() {
        let (app, _dir) = app();
        let vpc = vpc(&app, "10.0.0.0/16").await;
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("Tag.1.Key", "k")], "MissingParameter"),
            (vec![("ResourceId.1", &vpc)], "MissingParameter"),
            (vec![("ResourceId.1", "i-0123456789abcdef0"), ("Tag.1.Key", "k")], "InvalidID"),
            (vec![("ResourceId.1", "vpc-0123456789abcdef0"), ("Tag.1.Key", "k")], "InvalidVpcID.NotFound"),
            (vec![("ResourceId.1", "subnet-0123456789abcdef0"), ("Tag.1.Key", "k")], "InvalidSubnetID.NotFound"),
            (vec![("ResourceId.1", "sg-0123456789abcdef0"), ("Tag.1.Key", "k")], "InvalidGroup.NotFound"),
            (vec![("ResourceId.1", &vpc), ("Tag.1.Key", "aws:x")], "InvalidParameterValue"),
            (vec![("ResourceId.1", &vpc), ("Tag.1.Key", "k"), ("DryRun", "true")], "DryRunOperation"),
        ];
        for (params, expected) in cases {
            let mut all = vec![("Action", "CreateTags")];
            all.extend(params);
            let (_, body) = ec2(&app, &all).await;
            assert_eq!(code(&body), expected, "{body}");
        }
        let keys: Vec<String> = (1..=51).map(|i| format!("k{i}")).collect();
        let names: Vec<String> = (1..=51).map(|i| format!("Tag.{i}.Key")).collect();
        let mut params = vec![("Action", "CreateTags"), ("ResourceId.1", vpc.as_str())];
        params.extend(names.iter().map(String::as_str).zip(keys.iter().map(String::as_str)));
        let (status, body) = ec2(&app, &params).await;
        assert_eq!(status, 400);
        assert_eq!(code(&body), "TagLimitExceeded");
        let (_, body) = ec2(&app, &[("Action", "DescribeVpcs"), ("VpcId.1", &vpc)]).await;
        assert!(!body.contains("<tagSet>"), "nothing was written: {body}");
    }
}
