//! Where each node records the ingress address it gave each VPC (loopback mode): outside the
//! per-region key space, because addresses are a node's own and must be unique across regions.
//!
//! `node/<node>/ingress/<ip>` → `<region>/<vpc-id>` makes an address taken;
//! `node/<node>/vpc/<region>/<vpc-id>` → `<ip>` finds a VPC's address. Both are written in one
//! transaction, each required absent, so two allocators can never hand out one address twice.

use std::collections::HashSet;
use std::net::IpAddr;

use trellis_store::{Compare, Op, Store, StoreExt, Txn};

/// The key holding a VPC's ingress address on `node`.
pub fn vpc_key(node: &str, region: &str, vpc_id: &str) -> String {
    format!("node/{node}/vpc/{region}/{vpc_id}")
}

/// The prefix of every VPC ingress record of `node` (what the snapshot compiler reads).
pub fn vpc_prefix(node: &str) -> String {
    format!("node/{node}/vpc/")
}

fn address_key(node: &str, ip: IpAddr) -> String {
    format!("node/{node}/ingress/{ip}")
}

/// The addresses `node` has handed out.
pub async fn taken(store: &dyn Store, node: &str) -> Result<HashSet<IpAddr>, trellis_store::Error> {
    let prefix = format!("node/{node}/ingress/");
    let resp = store.list_prefix(&prefix, None, 0).await?;
    Ok(resp.kvs.iter().filter_map(|kv| kv.key.strip_prefix(&prefix)?.parse().ok()).collect())
}

/// Records `ip` as `vpc_id`'s address on `node`; `false` if the address or the VPC was taken
/// meanwhile (read again and retry).
pub async fn claim(
    store: &dyn Store,
    node: &str,
    region: &str,
    vpc_id: &str,
    ip: IpAddr,
) -> Result<bool, trellis_store::Error> {
    let (addr, vpc) = (address_key(node, ip), vpc_key(node, region, vpc_id));
    let txn = Txn {
        compare: vec![Compare::ModRevision(addr.clone(), 0), Compare::ModRevision(vpc.clone(), 0)],
        success: vec![
            Op::Put(addr, format!("{region}/{vpc_id}").into_bytes()),
            Op::Put(vpc, ip.to_string().into_bytes()),
        ],
        failure: Vec::new(),
    };
    Ok(store.txn(txn).await?.succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_is_claimed_once() {
        let (_app, store, _dir) = crate::test_util::app_and_store();
        let ip: IpAddr = "127.77.0.1".parse().unwrap();
        assert!(claim(store.as_ref(), "n1", "us-east-1", "vpc-1", ip).await.unwrap());
        assert!(!claim(store.as_ref(), "n1", "us-east-1", "vpc-2", ip).await.unwrap(), "address taken");
        let other: IpAddr = "127.77.0.2".parse().unwrap();
        assert!(!claim(store.as_ref(), "n1", "us-east-1", "vpc-1", other).await.unwrap(), "VPC has one");
        assert!(claim(store.as_ref(), "n2", "us-east-1", "vpc-1", ip).await.unwrap(), "nodes are separate");
        assert_eq!(taken(store.as_ref(), "n1").await.unwrap(), HashSet::from([ip]));
    }
}
