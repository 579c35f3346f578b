//! Addresses handed out inside VPCs (netns mode: instances now, ECS tasks next), one allocator
//! for all of them: `ipam/<vpc-id>/<ip>` → what holds it. A claim is a transaction that requires
//! the key absent, so two holders never share an address. VPC IDs are unique across regions, so
//! the keys are not region-scoped. EC2 reads them too: a subnet with an address in use cannot be
//! deleted.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use trellis_model::cidr::Cidr;
use trellis_store::{Compare, Op, Store, StoreExt, Txn};

/// The prefix of VPC `vpc_id`'s claims.
pub fn prefix(vpc_id: &str) -> String {
    format!("ipam/{vpc_id}/")
}

/// The key claiming `address` in `vpc_id`.
pub fn key(vpc_id: &str, address: Ipv4Addr) -> String {
    format!("ipam/{vpc_id}/{address}")
}

/// The addresses claimed in `vpc_id`.
pub async fn taken(store: &dyn Store, vpc_id: &str) -> Result<BTreeSet<Ipv4Addr>, trellis_store::Error> {
    let prefix = prefix(vpc_id);
    let listed = store.list_prefix(&prefix, None, 0).await?;
    Ok(listed.kvs.iter().filter_map(|kv| kv.key.strip_prefix(&prefix)?.parse().ok()).collect())
}

/// Claims a free address of `first..=last` in `vpc_id` for `holder`; `None` if every one is
/// taken. The search starts at a place picked by `holder`, so that an address just given back
/// is not handed out again at once (peers may still remember it: neighbour caches, pooled
/// connections), as AWS hands out interface addresses.
pub async fn claim(
    store: &dyn Store,
    vpc_id: &str,
    (first, last): (Ipv4Addr, Ipv4Addr),
    holder: &str,
) -> Result<Option<Ipv4Addr>, trellis_store::Error> {
    let (lo, hi) = (u32::from(first), u32::from(last).max(u32::from(first)));
    let size = u64::from(hi - lo) + 1;
    let start = fnv1a(holder.as_bytes()) % size;
    for _ in 0..16 {
        let taken = taken(store, vpc_id).await?;
        let free = (0..size).map(|i| Ipv4Addr::from(lo + ((start + i) % size) as u32)).find(|a| !taken.contains(a));
        let Some(free) = free else {
            return Ok(None);
        };
        let key = key(vpc_id, free);
        let txn = Txn {
            compare: vec![Compare::ModRevision(key.clone(), 0)],
            success: vec![Op::Put(key, holder.as_bytes().to_vec())],
            failure: Vec::new(),
        };
        if store.txn(txn).await?.succeeded {
            return Ok(Some(free));
        }
    }
    Err(trellis_store::Error::Backend(format!("address allocation in {vpc_id} kept racing with other writers")))
}

/// FNV-1a: stable across runs and Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Whether any address of `block` is claimed in `vpc_id`.
pub async fn in_use(store: &dyn Store, vpc_id: &str, block: Cidr) -> Result<bool, trellis_store::Error> {
    Ok(taken(store, vpc_id).await?.into_iter().any(|a| block.contains_addr(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_are_claimed_once_in_order() {
        let (_app, store, _dir) = crate::test_util::app_and_store();
        let range = (Ipv4Addr::new(10, 0, 1, 4), Ipv4Addr::new(10, 0, 1, 5));
        let a = claim(store.as_ref(), "vpc-1", range, "i-1").await.unwrap().unwrap();
        let b = claim(store.as_ref(), "vpc-1", range, "i-2").await.unwrap().unwrap();
        assert_ne!(a, b);
        assert!([a, b].iter().all(|x| *x >= range.0 && *x <= range.1));
        assert_eq!(claim(store.as_ref(), "vpc-1", range, "i-3").await.unwrap(), None, "full");
        assert!(claim(store.as_ref(), "vpc-2", range, "i-4").await.unwrap().is_some(), "VPCs are separate");
        let block: Cidr = "10.0.1.0/24".parse().unwrap();
        assert!(in_use(store.as_ref(), "vpc-1", block).await.unwrap());
        assert!(!in_use(store.as_ref(), "vpc-1", "10.0.2.0/24".parse().unwrap()).await.unwrap());
    }
}
