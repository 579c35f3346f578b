//! Reading EC2 query parameters: single values, required values, flattened lists (`VpcId.1`,
//! `VpcId.2`), numbered structures (`Filter.1.Name`), booleans, `DryRun`, and resource IDs.
//! The names are the botocore model's serialized names (`locationName` capitalised). [`Params`]
//! (the form and its list readers) is shared with the IAM API, whose query protocol reads the
//! same way.

use std::collections::HashMap;

use trellis_model::Kind;

use super::Req;
use super::error::Ec2Error;

/// A query-protocol form: parameter names and values (the last of a repeated name wins).
#[derive(Debug, Default)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    /// The parameters of a decoded form body.
    pub(crate) fn new(form: Vec<(String, String)>) -> Self {
        Self(form.into_iter().collect())
    }

    /// A parameter's value, if it was sent.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A flattened list `name.1`, `name.2`, … in index order.
    pub(crate) fn list(&self, name: &str) -> Vec<&str> {
        let mut items: Vec<(u64, &str)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let index = k.strip_prefix(name)?.strip_prefix('.')?;
                Some((parse_index(index)?, v.as_str()))
            })
            .collect();
        items.sort_unstable_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// The indices of a list of structures: the distinct `N` of every `name.N.<member>`, in
    /// order. Read the members with `format!("{name}.{N}.Member")`.
    pub(crate) fn indices(&self, name: &str) -> Vec<u64> {
        let mut found: Vec<u64> = self
            .0
            .keys()
            .filter_map(|k| {
                let rest = k.strip_prefix(name)?.strip_prefix('.')?;
                let (index, _member) = rest.split_once('.')?;
                parse_index(index)
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }
}

impl Req<'_> {
    /// A parameter's value, if it was sent.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// A required parameter: absent or empty is `MissingParameter`.
    pub(crate) fn required(&self, name: &str) -> Result<&str, Ec2Error> {
        self.param(name).filter(|v| !v.is_empty()).ok_or_else(|| Ec2Error::missing(name))
    }

    /// A flattened list `name.1`, `name.2`, … in index order.
    pub(crate) fn list(&self, name: &str) -> Vec<&str> {
        self.params.list(name)
    }

    /// The indices of a list of structures (see [`Params::indices`]).
    pub(crate) fn indices(&self, name: &str) -> Vec<u64> {
        self.params.indices(name)
    }

    /// A boolean parameter (`true`/`false`); absent is `false`.
    pub(crate) fn flag(&self, name: &str) -> Result<bool, Ec2Error> {
        match self.param(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(Ec2Error::bad_value(name, v, "Expected a boolean.")),
        }
    }

    /// Fails with `DryRunOperation` if `DryRun` is set: call once the request has been checked
    /// and just before anything would change.
    pub(crate) fn check_dry_run(&self) -> Result<(), Ec2Error> {
        if self.flag("DryRun")? { Err(Ec2Error::dry_run()) } else { Ok(()) }
    }

    /// A required ID parameter of `kind`, checked for form.
    pub(crate) fn required_id(&self, name: &str, kind: Kind) -> Result<String, Ec2Error> {
        let id = self.required(name)?;
        check_id(kind, id)?;
        Ok(id.to_owned())
    }

    /// A list of IDs of `kind` (`VpcId.N`), checked for form, duplicates dropped.
    pub(crate) fn id_list(&self, name: &str, kind: Kind) -> Result<Vec<String>, Ec2Error> {
        let mut ids: Vec<String> = Vec::new();
        for id in self.list(name) {
            check_id(kind, id)?;
            if !ids.iter().any(|i| i == id) {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }
}

/// `Ok` if `id` is a well-formed ID of `kind`, else its `….Malformed` error.
pub(crate) fn check_id(kind: Kind, id: &str) -> Result<(), Ec2Error> {
    if kind.is_id(id) { Ok(()) } else { Err(Ec2Error::malformed(kind, id)) }
}

/// A list index: decimal digits, no sign, at least 1.
fn parse_index(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| *n >= 1)
}

#[cfg(test)]
mod tests {
    use super::parse_index;

    #[test]
    fn indices_are_positive_decimals() {
        assert_eq!(parse_index("1"), Some(1));
        assert_eq!(parse_index("12"), Some(12));
        for bad in ["", "0", "+1", "a", "1.2"] {
            assert_eq!(parse_index(bad), None, "{bad}");
        }
    }
}
