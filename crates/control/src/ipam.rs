//! Addresses handed out inside VPCs (netns mode: instances now, ECS tasks next), one allocator
//! for all of them: `ipam/<vpc-id>/<ip>` → what holds it. A claim is a transaction that requires
//! the key absent, so two holders never share an address. VPC IDs are unique across regions, so
//! the keys are not region-scoped. EC2 reads them too: a subnet with an address in use cannot be
//! deleted.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use trellis_model::cidr::Cidr;
use trellis_store::{Compare, KeyValue, Op, Store, StoreExt, Txn};

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
    Ok(claimed(&prefix, &listed.kvs))
}

/// The addresses claimed by `kvs`, listed under `prefix` (the cursors there are not claims).
fn claimed(prefix: &str, kvs: &[KeyValue]) -> BTreeSet<Ipv4Addr> {
    kvs.iter().filter_map(|kv| kv.key.strip_prefix(prefix)?.parse().ok()).collect()
}

/// Gives `address` of `vpc_id` back.
pub async fn release(store: &dyn Store, vpc_id: &str, address: Ipv4Addr) -> Result<(), trellis_store::Error> {
    let txn = Txn { compare: Vec::new(), success: vec![Op::Delete(key(vpc_id, address))], failure: Vec::new() };
    store.txn(txn).await.map(|_| ())
}

/// Claims a free address of `first..=last` in `vpc_id` for `holder`; `None` if every one is
/// taken. Addresses are handed out in turn from a cursor kept with the claims (the first
/// search starts at a place picked by `holder`), so that an address just given back is not
/// handed out again until the rest of the range has been: peers may still remember it
/// (neighbour caches, pooled connections, a target draining under it).
pub async fn claim(
    store: &dyn Store,
    vpc_id: &str,
    (first, last): (Ipv4Addr, Ipv4Addr),
    holder: &str,
) -> Result<Option<Ipv4Addr>, trellis_store::Error> {
    let (lo, hi) = (u32::from(first), u32::from(last).max(u32::from(first)));
    let size = u64::from(hi - lo) + 1;
    let prefix = prefix(vpc_id);
    // Where the next search of this range starts.
    let cursor_key = format!("{prefix}next/{first}");
    for _ in 0..16 {
        let listed = store.list_prefix(&prefix, None, 0).await?;
        let taken = claimed(&prefix, &listed.kvs);
        let start = listed
            .kvs
            .iter()
            .find(|kv| kv.key == cursor_key)
            .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|c| (lo..=hi).contains(c))
            .map_or_else(|| fnv1a(holder.as_bytes()) % size, |c| u64::from(c - lo));
        let free = (0..size).map(|i| Ipv4Addr::from(lo + ((start + i) % size) as u32)).find(|a| !taken.contains(a));
        let Some(free) = free else {
            return Ok(None);
        };
        let next = if u32::from(free) >= hi { lo } else { u32::from(free) + 1 };
        let key = key(vpc_id, free);
        let txn = Txn {
            compare: vec![Compare::ModRevision(key.clone(), 0)],
            success: vec![
                Op::Put(key, holder.as_bytes().to_vec()),
                Op::Put(cursor_key.clone(), Ipv4Addr::from(next).to_string().into_bytes()),
            ],
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

    #[tokio::test]
    async fn an_address_given_back_is_handed_out_again_only_after_the_others() {
        let (_app, store, _dir) = crate::test_util::app_and_store();
        let range = (Ipv4Addr::new(10, 0, 1, 4), Ipv4Addr::new(10, 0, 1, 9));
        let mut held = Vec::new();
        for i in 0..3 {
            held.push(claim(store.as_ref(), "vpc-1", range, &format!("t-{i}")).await.unwrap().unwrap());
        }
        // Given back and claimed again at once, many times over: never the same address, and
        // each turn of the range hands out each free address once.
        let mut handed = Vec::new();
        let mut last = held.pop().unwrap();
        for i in 0..32 {
            release(store.as_ref(), "vpc-1", last).await.unwrap();
            let next = claim(store.as_ref(), "vpc-1", range, &format!("r-{i}")).await.unwrap().unwrap();
            assert_ne!(next, last, "an address given back was handed out again at once");
            assert!(!held.contains(&next), "{next} handed out twice");
            handed.push(next);
            last = next;
        }
        let turn: BTreeSet<_> = handed[..4].iter().collect();
        assert_eq!(turn.len(), 4, "{handed:?}");
        // The cursor is not a claim: the range holds exactly its six addresses.
        assert_eq!(taken(store.as_ref(), "vpc-1").await.unwrap().len(), 3);
        for i in 0..3 {
            assert!(claim(store.as_ref(), "vpc-1", range, &format!("f-{i}")).await.unwrap().is_some());
        }
        assert_eq!(claim(store.as_ref(), "vpc-1", range, "f-4").await.unwrap(), None, "full");
    }
}
