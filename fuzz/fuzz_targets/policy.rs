//! Auth policies (crates/model/src/policy.rs): `Policy::compile` on a document as
//! `PutAuthPolicy` receives it, then `Policy::evaluate` on a request, and the same policy
//! narrowed to the request's service and action (`Policy::narrow`, what the proxy evaluates),
//! which must decide the same; and IAM's wildcards (`glob`) against a plain reference matcher.
//!
//! Input: the policy document, then optionally a NUL byte and the request, one field a line:
//! caller ARN (empty: anonymous), caller account, action, resource, then condition keys as
//! `key=value`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_model::policy::{self, Caller, Key, Keys, Policy, Request};

struct Pairs<'a>(Vec<(&'a str, &'a str)>);

impl Keys for Pairs<'_> {
    fn visit(&self, key: &Key, each: &mut dyn FnMut(&str)) {
        for (k, v) in &self.0 {
            if k.eq_ignore_ascii_case(&key.name) {
                each(v);
            }
        }
    }
}

/// `*` any run of characters, `?` exactly one, by dynamic programming over characters.
fn reference_glob(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // can[j]: the pattern so far matches v[..j].
    let mut can = vec![false; v.len() + 1];
    can[0] = true;
    for &c in &p {
        let mut next = vec![false; v.len() + 1];
        for j in 0..=v.len() {
            next[j] = match c {
                '*' => can[j] || (j > 0 && next[j - 1]),
                '?' => j > 0 && can[j - 1],
                c => {
                    j > 0 && can[j - 1] && (if ignore_case { c.eq_ignore_ascii_case(&v[j - 1]) } else { c == v[j - 1] })
                }
            };
        }
        can = next;
    }
    can[v.len()]
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (document, request) = text.split_once('\0').unwrap_or((&text, ""));

    // Globs first: the document's first line is a pattern, the request's first line a value.
    let pattern = document.lines().next().unwrap_or_default();
    let value = request.lines().next().unwrap_or_default();
    if pattern.len() <= 64 && value.len() <= 256 {
        for ignore_case in [false, true] {
            assert_eq!(
                policy::glob(pattern, value, ignore_case),
                reference_glob(pattern, value, ignore_case),
                "glob({pattern:?}, {value:?}, {ignore_case})"
            );
        }
    }

    let Ok(compiled) = Policy::compile(document) else { return };
    let mut lines = request.split('\n');
    let mut field = || lines.next().unwrap_or_default();
    let (arn, account, action, resource) = (field(), field(), field(), field());
    let keys = Pairs(lines.filter_map(|l| l.split_once('=')).collect());
    let caller = if arn.is_empty() { Caller::Anonymous } else { Caller::Principal { arn, account } };
    let action = if action.is_empty() { "vpc-lattice-svcs:Invoke" } else { action };
    let resource = if resource.is_empty() {
        "arn:aws:vpc-lattice:us-east-1:000000000000:service/svc-0123456789abcdef0/path"
    } else {
        resource
    };
    let request = Request { caller, action, resource, keys: &keys };
    let decision = compiled.evaluate(&request);
    assert_eq!(decision, compiled.evaluate(&request), "evaluation is deterministic");
    // Narrowed to the service the resource names (its ARN ends at the ID's segment), for a
    // resource with a path after it.
    let Some(slash) = resource.match_indices("/svc-").next().map(|(at, _)| at + 1) else { return };
    let Some(end) = resource[slash..].find('/').map(|e| slash + e) else { return };
    let (base, path) = resource.split_at(end);
    let narrowed = compiled.narrow(action, base);
    assert_eq!(narrowed.evaluate(caller, path, &keys), decision, "narrowed to {base:?}, path {path:?}");
});
