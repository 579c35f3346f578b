//! `clientToken` idempotency (spec §1.2): a create repeated with the same token and the same
//! parameters gets the original answer and does nothing; with other parameters it gets a
//! `ConflictException`. The remembered answer is written in the same transaction as the
//! resource, so it can never exist without it (or the reverse). Tokens are scoped per region,
//! account and operation, and are remembered for 8 hours; [`sweep`] removes them after that.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use trellis_model::Kind;

use trellis_store::Store;

use super::{ApiError, Reply, Req};
use crate::repo::{self, Tx};

const TOKEN_LIFETIME_MS: u64 = 8 * 3600 * 1000;

#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    fingerprint: String,
    status: u16,
    body: String,
    resource_id: String,
    expires_ms: u64,
}

/// The `clientToken` of one create call.
pub(crate) struct ClientToken {
    key: Option<String>,
    fingerprint: String,
    kind: Kind,
    seen_revision: i64,
}

impl ClientToken {
    /// Checks the token's form and fingerprints the request.
    pub(crate) fn new(req: &Req<'_>, token: Option<&str>, kind: Kind) -> Result<Self, ApiError> {
        super::input::check_client_token(token)?;
        Ok(Self {
            key: token.map(|t| req.keys.token(&format!("{:?}", req.op), t)),
            fingerprint: fingerprint(req),
            kind,
            seen_revision: 0,
        })
    }

    /// The original answer, if this token was used before with the same parameters; a
    /// `ConflictException` if with other parameters. Call at the start of every attempt.
    pub(crate) async fn replay(&mut self, store: &dyn Store) -> Result<Option<Reply>, ApiError> {
        let Some(key) = &self.key else { return Ok(None) };
        let Some(seen) = repo::load::<Remembered>(store, key).await? else {
            self.seen_revision = 0;
            return Ok(None);
        };
        self.seen_revision = seen.revision;
        if seen.value.expires_ms <= crate::now().0 {
            return Ok(None);
        }
        if seen.value.fingerprint != self.fingerprint {
            return Err(ApiError::conflict(
                self.kind,
                &seen.value.resource_id,
                "The clientToken was already used for a request with different parameters",
            ));
        }
        let status = StatusCode::from_u16(seen.value.status).unwrap_or(StatusCode::OK);
        Ok(Some(Reply::raw(status, seen.value.body.into_bytes())))
    }

    /// Renders the answer and adds to `tx` the record that remembers it for this token.
    pub(crate) fn remember(&self, tx: &mut Tx, status: StatusCode, body: serde_json::Value, id: &str) -> Reply {
        let reply = Reply::json(status, body);
        if let Some(key) = &self.key {
            let remembered = Remembered {
                fingerprint: self.fingerprint.clone(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(reply.body()).into_owned(),
                resource_id: id.to_owned(),
                expires_ms: crate::now().0 + TOKEN_LIFETIME_MS,
            };
            // An expired record may still be there: compare on what was read, not on absence.
            tx.require_unchanged(key.clone(), self.seen_revision);
            tx.put(key.clone(), &remembered);
        }
        reply
    }
}

/// The request's parameters without its token: path identifiers and the body's members.
fn fingerprint(req: &Req<'_>) -> String {
    let mut body: serde_json::Value = serde_json::from_slice(req.body).unwrap_or(serde_json::Value::Null);
    if let Some(map) = body.as_object_mut() {
        map.remove("clientToken");
    }
    // serde_json's maps are ordered by key, so equal parameters give equal strings.
    serde_json::json!({ "path": req.path, "body": body }).to_string()
}

/// Removes the remembered answers of tokens older than their lifetime (at `now_ms`); returns
/// how many. A record rewritten meanwhile is left alone.
pub async fn sweep(store: &dyn Store, now_ms: u64) -> Result<usize, trellis_store::Error> {
    use trellis_store::{Compare, Op, StoreExt, Txn};
    let all = store.list_prefix("r/", None, 0).await?;
    let expired: Vec<(String, i64)> = all
        .kvs
        .into_iter()
        .filter(|kv| kv.key.contains("/token/"))
        .filter(|kv| serde_json::from_slice::<Remembered>(&kv.value).is_ok_and(|r| r.expires_ms <= now_ms))
        .map(|kv| (kv.key, kv.mod_revision))
        .collect();
    let mut removed = 0;
    for (key, revision) in expired {
        // One compare per delete: a token reused since it was read keeps its new answer.
        let txn = Txn {
            compare: vec![Compare::ModRevision(key.clone(), revision)],
            success: vec![Op::Delete(key)],
            failure: Vec::new(),
        };
        if store.txn(txn).await?.succeeded {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::test_util::{app_and_store, call};

    #[tokio::test]
    async fn expired_tokens_are_swept_and_fresh_ones_kept() {
        let (app, store, _dir) = app_and_store();
        for token in ["old", "new"] {
            let body = json!({"name": format!("net-{token}"), "clientToken": token});
            assert_eq!(call(&app, "POST", "/servicenetworks", Some(body)).await.0, 201);
        }
        // Nothing has expired yet.
        assert_eq!(super::sweep(store.as_ref(), crate::now().0).await.unwrap(), 0);
        // Nine hours later, both have.
        let later = crate::now().0 + 9 * 3600 * 1000;
        assert_eq!(super::sweep(store.as_ref(), later).await.unwrap(), 2);
        assert_eq!(super::sweep(store.as_ref(), later).await.unwrap(), 0);
        // The resources they created are untouched.
        let (_, _, list) = call(&app, "GET", "/servicenetworks", None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
    }
}
