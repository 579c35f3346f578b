//! What the crate's tests share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use trellis_store::{BoxFuture, Error, RangeRequest, RangeResponse, SqliteStore, Store, Txn, TxnResponse, WatchStream};

/// A store that can stop answering: reads fail, and a watch ends with an error at its next
/// change, as a store that went away would.
pub(crate) struct Flaky {
    pub(crate) inner: SqliteStore,
    pub(crate) down: Arc<AtomicBool>,
}

impl Store for Flaky {
    fn range(&self, req: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, Error>> {
        if self.down.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(Error::Backend("store is down".into()))));
        }
        self.inner.range(req)
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse, Error>> {
        self.inner.txn(txn)
    }

    fn watch(&self, prefix: String, from: i64) -> BoxFuture<'_, Result<WatchStream, Error>> {
        let down = self.down.clone();
        Box::pin(async move {
            let mut inner = self.inner.watch(prefix, from).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(async move {
                while let Some(event) = inner.recv().await {
                    if down.load(Ordering::SeqCst) {
                        let _ = tx.send(Err(Error::Backend("store is down".into()))).await;
                        return;
                    }
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            });
            Ok(rx)
        })
    }

    fn grant_lease(&self, ttl_seconds: i64) -> BoxFuture<'_, Result<trellis_store::LeaseId, Error>> {
        self.inner.grant_lease(ttl_seconds)
    }

    fn keep_alive(&self, lease: trellis_store::LeaseId) -> BoxFuture<'_, Result<bool, Error>> {
        self.inner.keep_alive(lease)
    }

    fn revoke_lease(&self, lease: trellis_store::LeaseId) -> BoxFuture<'_, Result<(), Error>> {
        self.inner.revoke_lease(lease)
    }
}
