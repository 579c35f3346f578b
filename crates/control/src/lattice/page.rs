//! Pagination (spec §1.5): `maxResults` 1–100 (default 100) and an opaque `nextToken` that
//! encodes the last key returned. Tokens are stable, never repeat, and are absent at the end.

use super::{ApiError, Req};
use crate::keys::{key_of_token as decode, token_of as encode};

/// Where a page starts and how long it is.
#[derive(Clone, Debug)]
pub(crate) struct Page {
    pub(crate) limit: usize,
    /// The key after which the page starts.
    pub(crate) after: Option<String>,
    prefix: String,
}

impl Page {
    /// Reads `maxResults` and `nextToken` for a listing of the keys under `prefix`.
    pub(crate) fn new(req: &Req<'_>, prefix: String) -> Result<Self, ApiError> {
        let limit = match req.query("maxResults") {
            None => 100,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n @ 1..=100) => n,
                _ => return Err(ApiError::field("maxResults", "must be an integer from 1 to 100")),
            },
        };
        let after = match req.query("nextToken") {
            None => None,
            Some(token) => Some(
                decode(token)
                    .filter(|k| k.starts_with(&prefix))
                    .ok_or_else(|| ApiError::field("nextToken", "is not a token this listing returned"))?,
            ),
        };
        Ok(Self { limit, after, prefix })
    }

    /// The prefix being listed.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The token for the page after the one that ended at `last_key`, if `more` remain.
    pub(crate) fn next_token(&self, last_key: Option<&str>, more: bool) -> Option<String> {
        last_key.filter(|_| more).map(encode)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_round_trip() {
        let key = "r/us-east-1/000000000000/res/svc/svc-0123";
        assert_eq!(super::decode(&super::encode(key)).as_deref(), Some(key));
        assert_eq!(super::decode("zz"), None);
        assert_eq!(super::decode("abc"), None);
    }
}
