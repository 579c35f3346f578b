//! Paging of the Describe operations: `MaxResults` (5–1000; absent: everything) and a
//! `NextToken` that encodes the last ID returned, so tokens are stable: the next page starts
//! after that ID in ID order, whatever was created or deleted meanwhile.

use serde::de::DeserializeOwned;
use trellis_model::Kind;

use super::Req;
use super::error::{Code, Ec2Error};
use crate::keys::{key_of_token as decode, token_of as encode};
use crate::repo;

/// Where a page starts and how long it is.
#[derive(Debug)]
pub(crate) struct Page {
    kind: Kind,
    limit: Option<usize>,
    after: Option<String>,
}

impl Page {
    /// Reads `MaxResults` and `NextToken` for a listing of `kind`.
    pub(crate) fn new(req: &Req<'_>, kind: Kind) -> Result<Self, Ec2Error> {
        let limit = match req.param("MaxResults") {
            None => None,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n @ 5..=1000) => Some(n),
                _ => {
                    return Err(Ec2Error::invalid(format!(
                        "Value ( {raw} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000."
                    )));
                }
            },
        };
        let after = match req.param("NextToken") {
            None | Some("") => None,
            Some(token) => Some(decode(token).filter(|id| kind.is_id(id)).ok_or_else(|| {
                Ec2Error::new(Code::InvalidPaginationToken, format!("The pagination token '{token}' is invalid."))
            })?),
        };
        Ok(Self { kind, limit, after })
    }

    /// This page of `items` (`(id, item)` in any order), and the token for the next page if
    /// more remain.
    pub(crate) fn take<T>(&self, mut items: Vec<(String, T)>) -> (Vec<T>, Option<String>) {
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(after) = &self.after {
            items.retain(|(id, _)| id > after);
        }
        let next = match self.limit {
            Some(limit) if items.len() > limit => {
                items.truncate(limit);
                items.last().map(|(id, _)| encode(id))
            }
            _ => None,
        };
        debug_assert!(items.iter().all(|(id, _)| self.kind.is_id(id)));
        (items.into_iter().map(|(_, item)| item).collect(), next)
    }
}

/// The records a Describe looks at: those named by `ids` (each must exist, else the kind's
/// `NotFound` naming every missing one), or every record of `kind` when `ids` is empty.
pub(crate) async fn candidates<T: DeserializeOwned>(
    req: &Req<'_>,
    kind: Kind,
    ids: &[String],
) -> Result<Vec<T>, Ec2Error> {
    if ids.is_empty() {
        let (items, _) = repo::list::<T>(req.store(), &req.keys.all(kind), None, 0).await?;
        return Ok(items.into_iter().map(|v| v.value).collect());
    }
    let mut found = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match repo::load::<T>(req.store(), &req.keys.res(kind, id)).await? {
            Some(v) => found.push(v.value),
            None => missing.push(id.as_str()),
        }
    }
    if missing.is_empty() { Ok(found) } else { Err(Ec2Error::not_found(kind, &missing)) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_round_trip() {
        assert_eq!(super::decode(&super::encode("vpc-0123456789abcdef0")).as_deref(), Some("vpc-0123456789abcdef0"));
        assert_eq!(super::decode("zz"), None);
        assert_eq!(super::decode("abc"), None);
    }
}
