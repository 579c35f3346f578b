//! `Filter.N.Name` / `Filter.N.Value.M` on the Describe operations. A resource matches when it
//! matches every filter, and it matches a filter when any of the filter's values matches any of
//! its values for that name. Values may hold `*` (any run) and `?` (any one character); `\`
//! escapes them. `tag:<key>`, `tag-key` and `tag-value` work on every resource; the other names
//! each resource kind lists for itself.

use trellis_model::lattice::Tags;

use super::Req;
use super::error::Ec2Error;

/// The filters of one Describe request.
#[derive(Debug, Default)]
pub(crate) struct Filters(Vec<Filter>);

#[derive(Debug)]
struct Filter {
    name: String,
    values: Vec<String>,
}

// === impl Filters ===

impl Filters {
    /// Reads the request's filters; a name outside `known` (and not a tag filter) is
    /// `InvalidParameterValue`.
    pub(crate) fn parse(req: &Req<'_>, known: &[&str]) -> Result<Self, Ec2Error> {
        let mut filters = Vec::new();
        for n in req.indices("Filter") {
            let name = req.param(&format!("Filter.{n}.Name")).unwrap_or_default();
            if name.is_empty() {
                return Err(Ec2Error::missing(&format!("Filter.{n}.Name")));
            }
            let is_tag =
                name.strip_prefix("tag:").is_some_and(|k| !k.is_empty()) || name == "tag-key" || name == "tag-value";
            if !is_tag && !known.contains(&name) {
                return Err(Ec2Error::invalid(format!("The filter '{name}' is invalid")));
            }
            let values: Vec<String> = req.list(&format!("Filter.{n}.Value")).into_iter().map(str::to_owned).collect();
            if values.is_empty() {
                return Err(Ec2Error::invalid(format!("The filter '{name}' must have at least one value")));
            }
            filters.push(Filter { name: name.to_owned(), values });
        }
        Ok(Self(filters))
    }

    /// Whether a resource with these tags matches, given its values for each non-tag filter
    /// name (`field(name)`; every name in `known` must be answered).
    pub(crate) fn matches(&self, tags: &Tags, field: impl Fn(&str) -> Vec<String>) -> bool {
        self.0.iter().all(|f| {
            let have: Vec<String> = if let Some(key) = f.name.strip_prefix("tag:") {
                tags.get(key).cloned().into_iter().collect()
            } else if f.name == "tag-key" {
                tags.keys().cloned().collect()
            } else if f.name == "tag-value" {
                tags.values().cloned().collect()
            } else {
                field(&f.name)
            };
            f.values.iter().any(|pattern| have.iter().any(|v| wildcard(pattern, v)))
        })
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters, `?` any one
/// character, and `\` makes the next character literal.
fn wildcard(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Any,
        One,
        Lit(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '*' => Tok::Any,
            '?' => Tok::One,
            '\\' => Tok::Lit(chars.next().unwrap_or('\\')),
            c => Tok::Lit(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // Greedy match with backtracking to the last `*` (linear in practice, no recursion).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => {
                p += 1;
                t += 1;
            }
            Some(Tok::Lit(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Any)
}

/// The one value of a field, for [`Filters::matches`].
pub(crate) fn one(value: impl Into<String>) -> Vec<String> {
    vec![value.into()]
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards() {
        assert!(wildcard("10.0.*", "10.0.1.0/24"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "ac"));
        assert!(wildcard("*b*", "abc"));
        assert!(!wildcard("abc", "abcd"));
        assert!(wildcard("a*b*c", "aXbYbZc"));
        assert!(wildcard(r"a\*", "a*"));
        assert!(!wildcard(r"a\*", "ab"));
        assert!(wildcard("exact", "exact"));
        assert!(!wildcard("Exact", "exact"));
    }
}
