//! Routing decisions as pure functions (spec §3.3, §3.4): whether a request matches a rule's
//! [`HttpMatch`], which action a listener takes for a request ([`find`]), and which target group
//! of a weighted forward gets it ([`pick_weighted`]). No I/O, no randomness, no allocation: the
//! proxy supplies the request's parts and a random number, and calls these per request.
//!
//! Headers are reached through [`HeaderLookup`], which the proxy implements on its header map,
//! so that this crate needs no HTTP library and no header is copied.
//!
//! Semantics: the method is compared exactly (case-sensitive); the path is compared without its
//! query string, exactly or as a plain string prefix (`/api` matches `/apix`), case-sensitively
//! unless the rule says otherwise; each header match (names case-insensitive) compares values
//! exactly, as a prefix or as a substring, case-insensitively unless the rule says otherwise,
//! and holds if any value of a multi-valued header matches. Every given criterion must hold.
//! Case folding is ASCII-only, and values are compared as bytes (non-UTF-8 values are fine).
//! The path is the one [`path::normalize`] gives, which is also what the target is sent.

pub mod path;

use crate::lattice::{HeaderMatch, HeaderMatchType, HttpMatch, PathMatch, PathMatchType};
use crate::snapshot::{Action, ListenerView, WeightedTarget};

/// Read access to a request's header values by name. A crate with an `http::HeaderMap`
/// implements it on a newtype (the orphan rule forbids implementing it on the map itself):
///
/// ```ignore
/// struct Headers<'m>(&'m http::HeaderMap);
/// impl HeaderLookup for Headers<'_> {
///     fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
///         self.0.get_all(name).into_iter().map(|v| v.as_bytes())
///     }
/// }
/// ```
pub trait HeaderLookup {
    /// Every value of the header `name`, in order. `name` is spelled as a rule spells it:
    /// implementations must compare names case-insensitively (`http::HeaderMap` does).
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;
}

/// Header names and values as pairs; names compared case-insensitively (handy in tests).
impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderLookup for [(N, V)] {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |(n, _)| n.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }
}

/// Whether a request with this method, path (the query string, if present, is ignored) and
/// headers matches `m`.
pub fn matches<H: HeaderLookup + ?Sized>(m: &HttpMatch, method: &str, path: &str, headers: &H) -> bool {
    matches_path_only(m, method, strip_query(path), headers)
}

/// The action `listener` takes for a request: its first matching rule's (rules are in
/// evaluation order), else its default action.
pub fn find<'a, H: HeaderLookup + ?Sized>(
    listener: &'a ListenerView,
    method: &str,
    path: &str,
    headers: &H,
) -> &'a Action {
    let path = strip_query(path);
    listener
        .rules
        .iter()
        .find(|r| matches_path_only(&r.matcher, method, path, headers))
        .map_or(&listener.default_action, |r| &r.action)
}

/// Picks a target group in proportion to the weights, given a random number `roll` (any `u64`;
/// uniform rolls give proportional picks). Weight 0 is never picked; `None` when every weight is 0
/// (or there are none).
pub fn pick_weighted(targets: &[WeightedTarget], roll: u64) -> Option<&WeightedTarget> {
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = roll % total;
    for t in targets {
        let w = u64::from(t.weight);
        if point < w {
            return Some(t);
        }
        point -= w;
    }
    // The points 0..total are covered by the weights above.
    None
}

/// [`matches`] on a path already stripped of its query.
fn matches_path_only<H: HeaderLookup + ?Sized>(m: &HttpMatch, method: &str, path: &str, headers: &H) -> bool {
    if m.method.as_deref().is_some_and(|want| want != method) {
        return false;
    }
    if m.path_match.as_ref().is_some_and(|p| !path_matches(p, path)) {
        return false;
    }
    m.header_matches.as_deref().unwrap_or_default().iter().all(|h| header_matches(h, headers))
}

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

fn path_matches(p: &PathMatch, path: &str) -> bool {
    let case_sensitive = p.case_sensitive.unwrap_or(true);
    let (path, path_len) = (path.as_bytes(), path.len());
    match &p.match_type {
        PathMatchType::Exact(want) => path_len == want.len() && bytes_eq(path, want.as_bytes(), case_sensitive),
        PathMatchType::Prefix(want) => starts_with(path, want.as_bytes(), case_sensitive),
    }
}

fn header_matches<H: HeaderLookup + ?Sized>(h: &HeaderMatch, headers: &H) -> bool {
    let case_sensitive = h.case_sensitive.unwrap_or(false);
    let mut values = headers.values(&h.name);
    match &h.match_type {
        HeaderMatchType::Exact(want) => {
            values.any(|v| v.len() == want.len() && bytes_eq(v, want.as_bytes(), case_sensitive))
        }
        HeaderMatchType::Prefix(want) => values.any(|v| starts_with(v, want.as_bytes(), case_sensitive)),
        HeaderMatchType::Contains(want) => values.any(|v| contains(v, want.as_bytes(), case_sensitive)),
    }
}

/// Equal-length slices compared, folding ASCII case unless `case_sensitive`.
fn bytes_eq(a: &[u8], b: &[u8], case_sensitive: bool) -> bool {
    if case_sensitive { a == b } else { a.eq_ignore_ascii_case(b) }
}

fn starts_with(hay: &[u8], prefix: &[u8], case_sensitive: bool) -> bool {
    hay.get(..prefix.len()).is_some_and(|head| bytes_eq(head, prefix, case_sensitive))
}

fn fold(b: u8, case_sensitive: bool) -> u8 {
    if case_sensitive { b } else { b.to_ascii_lowercase() }
}

/// Longest needle searched in linear time (Knuth–Morris–Pratt, table on the stack). The API
/// allows 200 characters; anything longer falls back to the quadratic search.
const KMP_MAX: usize = 256;

/// Whether `needle` occurs in `hay`. Linear in `hay`, so a long hostile header value cannot make
/// a `contains` rule expensive.
fn contains(hay: &[u8], needle: &[u8], case_sensitive: bool) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.len() > hay.len() {
        return false;
    }
    if needle.len() > KMP_MAX {
        return hay.windows(needle.len()).any(|w| bytes_eq(w, needle, case_sensitive));
    }
    // fail[i]: the length of the longest proper border of needle[..=i].
    let mut fail = [0u16; KMP_MAX];
    let mut k = 0usize;
    for i in 1..needle.len() {
        let c = fold(needle[i], case_sensitive);
        while k > 0 && fold(needle[k], case_sensitive) != c {
            k = usize::from(fail[k - 1]);
        }
        if fold(needle[k], case_sensitive) == c {
            k += 1;
        }
        fail[i] = k as u16;
    }
    let mut k = 0usize;
    for &b in hay {
        let c = fold(b, case_sensitive);
        while k > 0 && fold(needle[k], case_sensitive) != c {
            k = usize::from(fail[k - 1]);
        }
        if fold(needle[k], case_sensitive) == c {
            k += 1;
            if k == needle.len() {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests;
