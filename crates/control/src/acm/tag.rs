//! AddTagsToCertificate, ListTagsForCertificate and RemoveTagsFromCertificate. Tags live in
//! the certificate's record. Adding a key that exists replaces its value; removing a tag given
//! with a value removes it only if the value matches, as ACM documents.

use serde::Deserialize;
use serde_json::json;
use trellis_model::acm::Tag;

use super::{AcmError, Reply, Req, check_tags};
use crate::repo::{Attempts, Tx};

/// ACM's limit of tags per certificate.
const MAX_TAGS: usize = 50;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagsRequest {
    certificate_arn: String,
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListTagsForCertificateRequest {
    certificate_arn: String,
}

pub(super) async fn add(req: &Req<'_>) -> Reply {
    let input: TagsRequest = req.input()?;
    check_tags(&input.tags)?;
    change(req, &input.certificate_arn, |tags| {
        for tag in &input.tags {
            match tags.iter_mut().find(|t| t.key == tag.key) {
                Some(existing) => existing.value.clone_from(&tag.value),
                None => tags.push(tag.clone()),
            }
        }
        if tags.len() > MAX_TAGS {
            return Err(AcmError::TooManyTags(format!(
                "the request contains too many tags: a certificate may have at most {MAX_TAGS} ({} requested)",
                tags.len()
            )));
        }
        Ok(())
    })
    .await
}

pub(super) async fn remove(req: &Req<'_>) -> Reply {
    let input: TagsRequest = req.input()?;
    check_tags(&input.tags)?;
    change(req, &input.certificate_arn, |tags| {
        tags.retain(|t| {
            !input.tags.iter().any(|gone| gone.key == t.key && (gone.value.is_none() || gone.value == t.value))
        });
        Ok(())
    })
    .await
}

pub(super) async fn list(req: &Req<'_>) -> Reply {
    let input: ListTagsForCertificateRequest = req.input()?;
    let (_, read) = req.find(&input.certificate_arn).await?;
    Ok(json!({ "Tags": read.value.tags }))
}

/// Applies `edit` to a certificate's tags in one compare-and-swap.
async fn change(req: &Req<'_>, arn: &str, edit: impl Fn(&mut Vec<Tag>) -> Result<(), AcmError>) -> Reply {
    let mut attempts = Attempts::default();
    loop {
        let (_, read) = req.find(arn).await?;
        let mut record = read.value.clone();
        edit(&mut record.tags)?;
        let mut tx = Tx::default();
        tx.update(&read, &record);
        if attempts.commit(req.store(), tx).await? {
            return Ok(json!({}));
        }
    }
}
