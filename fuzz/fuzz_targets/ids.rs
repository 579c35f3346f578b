//! Identifiers and names from outside (crates/model): ARNs (`Arn::parse`, `lattice_path`),
//! resource IDs (`Kind::is_id`, `Kind::from_prefix`), resource names (`name::check`), IPv4
//! CIDR blocks, ISO-8601 timestamps, the zone of a generated name and request paths
//! (`route::path::normalize`). The input is one string.
//! Checked: nothing panics, and what parses prints back to something that parses the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_model::cidr::Cidr;
use trellis_model::{Arn, Kind, Timestamp, name, route, tls};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(arn) = Arn::parse(s) {
        let printed = format!("arn:{}:{}:{}:{}:{}", arn.partition, arn.service, arn.region, arn.account, arn.resource);
        assert_eq!(printed, s);
        if let Some(path) = arn.lattice_path() {
            for (kind, id) in &path {
                let _ = kind.is_id(id);
            }
            if let [parents @ .., (kind, id)] = &path[..] {
                let parent_ids: Vec<&str> = parents.iter().map(|(_, id)| *id).collect();
                let rebuilt = Arn::lattice(&arn.region, &arn.account, *kind, &parent_ids, id);
                let _ = Arn::parse(&rebuilt).expect("a built ARN parses");
            }
        }
    }
    if let Some((prefix, _)) = s.split_once('-')
        && let Some(kind) = Kind::from_prefix(prefix)
    {
        let _ = kind.is_id(s);
    }
    for kind in Kind::ALL {
        if kind.is_id(s) {
            assert!(s.starts_with(kind.prefix()));
        }
        if name::check(kind, s).is_ok() {
            assert!(!s.is_empty() && s.is_ascii());
        }
    }
    if let Ok(cidr) = s.parse::<Cidr>() {
        let again: Cidr = cidr.to_string().parse().expect("a printed CIDR parses");
        assert_eq!(again, cidr);
        assert!(cidr.contains(cidr) && cidr.contains_addr(cidr.base()));
    }
    if let Some(t) = Timestamp::parse(s) {
        assert_eq!(Timestamp::parse(&t.iso8601()), Some(t), "{s}");
    }
    let _ = tls::zone_of(s);
    // A request path: its normal form is normal, and has no `\`, no `//` and no dot segment.
    if let Ok(normal) = route::path::normalize(s) {
        assert_eq!(route::path::normalize(&normal).as_deref(), Ok(&*normal), "{s}");
        assert!(!normal.contains('\\'));
        if s.starts_with('/') {
            assert!(!normal.contains("//"), "{s}");
            assert!(normal.split('/').all(|seg| seg != "." && seg != ".."), "{s}");
        }
    }
});
