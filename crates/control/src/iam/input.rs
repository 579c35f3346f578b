//! Reading and checking IAM parameters as IAM does: every member that breaks its model
//! constraint (null, length, pattern, range) is collected, and the request fails with one
//! `ValidationError` naming them all (`2 validation errors detected: Value 'x' at 'roleName'
//! failed to satisfy constraint: …; …`). Also the `Marker`/`MaxItems` paging of the List
//! operations. Constraints are the botocore model's.

use super::Req;
use super::error::{Code, IamError};
use crate::keys::{key_of_token, token_of};

/// A string member's constraints: length in UTF-16 units (as AWS counts), and a pattern given
/// both as the model writes it (for messages) and as a check.
pub(crate) struct Rule {
    /// The member as AWS names it in messages (`roleName`).
    pub(crate) field: &'static str,
    min: usize,
    max: usize,
    pattern: &'static str,
    allowed: fn(&str) -> bool,
}

/// The constraint violations found so far.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<String>);

/// `roleName`: `[\w+=,.@-]+`, 1–64.
pub(crate) const ROLE_NAME: Rule =
    Rule { field: "roleName", min: 1, max: 64, pattern: r"[\w+=,.@-]+", allowed: is_name };
/// `userName` of CreateUser: `[\w+=,.@-]+`, 1–64.
pub(crate) const USER_NAME: Rule =
    Rule { field: "userName", min: 1, max: 64, pattern: r"[\w+=,.@-]+", allowed: is_name };
/// `userName` of the other user operations: `[\w+=,.@-]+`, 1–128.
pub(crate) const EXISTING_USER_NAME: Rule =
    Rule { field: "userName", min: 1, max: 128, pattern: r"[\w+=,.@-]+", allowed: is_name };
/// `accessKeyId`: `[\w]+`, 16–128.
pub(crate) const ACCESS_KEY_ID: Rule = Rule {
    field: "accessKeyId",
    min: 16,
    max: 128,
    pattern: r"[\w]+",
    allowed: |s| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
};
/// `roleSessionName` (STS): `[\w+=,.@-]*`, 2–64.
pub(crate) const ROLE_SESSION_NAME: Rule =
    Rule { field: "roleSessionName", min: 2, max: 64, pattern: r"[\w+=,.@-]*", allowed: is_name };
/// `roleArn` (STS): 20–2048 of the characters the model allows (no control characters).
pub(crate) const ROLE_ARN: Rule = Rule {
    field: "roleArn",
    min: 20,
    max: 2048,
    pattern: r"[\u0009\u000A\u000D\u0020-\u007E\u0085\u00A0-\uD7FF\uE000-\uFFFD\u10000-\u10FFFF]+",
    allowed: |s| s.chars().all(|c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{85}') || c >= '\u{a0}'),
};
/// `path`: `/` or `/…/` of printable ASCII, 1–512.
pub(crate) const PATH: Rule = Rule {
    field: "path",
    min: 1,
    max: 512,
    pattern: r"(\u002F)|(\u002F[\u0021-\u007E]+\u002F)",
    allowed: |s| s == "/" || (s.len() > 1 && s.starts_with('/') && s.ends_with('/') && printable(s, 0x7e)),
};
/// `pathPrefix` of ListRoles: `/` and printable ASCII, 1–512.
pub(crate) const PATH_PREFIX: Rule = Rule {
    field: "pathPrefix",
    min: 1,
    max: 512,
    pattern: r"\u002F[\u0021-\u007F]*",
    allowed: |s| s.starts_with('/') && printable(s, 0x7f),
};
/// `pathPrefix` of ListAttachedRolePolicies: `/` or `/seg/…/` of name characters.
pub(crate) const POLICY_PATH_PREFIX: Rule = Rule {
    field: "pathPrefix",
    min: 1,
    max: 512,
    pattern: r"((/[A-Za-z0-9\.,\+@=_-]+)*)/",
    allowed: |s| {
        s == "/"
            || s.strip_prefix('/')
                .and_then(|s| s.strip_suffix('/'))
                .is_some_and(|inner| !inner.is_empty() && inner.split('/').all(|seg| !seg.is_empty() && is_name(seg)))
    },
};
/// `assumeRolePolicyDocument`: tab, newlines and U+0020–U+00FF, 1–131072.
pub(crate) const POLICY_DOCUMENT: Rule = Rule {
    field: "assumeRolePolicyDocument",
    min: 1,
    max: 131_072,
    pattern: r"[\u0009\u000A\u000D\u0020-\u00FF]+",
    allowed: |s| s.chars().all(|c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{ff}')),
};
/// `description`: up to 1000, no control characters but tab and newlines.
pub(crate) const DESCRIPTION: Rule = Rule {
    field: "description",
    min: 0,
    max: 1000,
    pattern: r"[\u0009\u000A\u000D\u0020-\u007E\u00A1-\u00FF]*",
    allowed: |s| s.chars().all(|c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{a1}'..='\u{ff}')),
};
/// `policyArn` (and `permissionsBoundary`): 20–2048, any characters.
pub(crate) const ARN: Rule = Rule { field: "policyArn", min: 20, max: 2048, pattern: "", allowed: |_| true };
/// `marker`: 1–320 of U+0020–U+00FF.
const MARKER: Rule = Rule {
    field: "marker",
    min: 1,
    max: 320,
    pattern: r"[\u0020-\u00FF]+",
    allowed: |s| s.chars().all(|c| matches!(c, '\u{20}'..='\u{ff}')),
};
/// A tag key: 1–128 letters, spaces, digits and `_.:/=+-@`.
pub(crate) const TAG_KEY: Rule =
    Rule { field: "tags.member.key", min: 1, max: 128, pattern: r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+", allowed: is_tag_text };
/// A tag value: up to 256 of the same.
pub(crate) const TAG_VALUE: Rule = Rule {
    field: "tags.member.value",
    min: 0,
    max: 256,
    pattern: r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*",
    allowed: is_tag_text,
};

/// Where a List operation's page starts and how long it is.
#[derive(Debug)]
pub(crate) struct Page {
    after: Option<String>,
    max_items: usize,
}

/// `[\w+=,.@-]+` (Java's `\w` is ASCII).
fn is_name(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

/// Every character in U+0021..=`last`.
fn printable(s: &str, last: u8) -> bool {
    s.bytes().all(|b| (0x21..=last).contains(&b))
}

fn is_tag_text(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_alphabetic() || c.is_numeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
    })
}

// === impl Rule ===

impl Rule {
    /// The same constraints reported under another member name.
    pub(crate) const fn named(&self, field: &'static str) -> Self {
        Self { field, min: self.min, max: self.max, pattern: self.pattern, allowed: self.allowed }
    }

    /// Records what is wrong with `value`, if anything.
    pub(crate) fn check(&self, value: &str, found: &mut Violations) {
        self.check_as(self.field, value, found);
    }

    /// [`Self::check`], reporting the member as `field`.
    pub(crate) fn check_as(&self, field: &str, value: &str, found: &mut Violations) {
        let len = value.encode_utf16().count();
        if len < self.min {
            found.add(field, Some(value), &format!("Member must have length greater than or equal to {}", self.min));
        }
        if len > self.max {
            found.add(field, Some(value), &format!("Member must have length less than or equal to {}", self.max));
        }
        if !(self.allowed)(value) {
            found.add(field, Some(value), &format!("Member must satisfy regular expression pattern: {}", self.pattern));
        }
    }
}

// === impl Violations ===

impl Violations {
    /// Records one violation; `None` is a missing required member.
    pub(crate) fn add(&mut self, field: &str, value: Option<&str>, constraint: &str) {
        let value = value.map_or_else(|| "null".to_owned(), |v| format!("'{v}'"));
        self.0.push(format!("Value {value} at '{field}' failed to satisfy constraint: {constraint}"));
    }

    /// `ValidationError` naming every violation, if there was one.
    pub(crate) fn finish(self) -> Result<(), IamError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(IamError::new(Code::ValidationError, format!("1 validation error detected: {}", self.0[0]))),
            n => Err(IamError::new(
                Code::ValidationError,
                format!("{n} validation errors detected: {}", self.0.join("; ")),
            )),
        }
    }
}

// === impl Req ===

impl Req<'_> {
    /// A string member, checked against `rule` when present.
    pub(crate) fn optional(&self, name: &str, rule: &Rule, found: &mut Violations) -> Option<String> {
        let value = self.params.get(name)?;
        rule.check(value, found);
        Some(value.to_owned())
    }

    /// A required string member: absent is `Member must not be null`.
    pub(crate) fn required(&self, name: &str, rule: &Rule, found: &mut Violations) -> String {
        self.optional(name, rule, found).unwrap_or_else(|| {
            found.add(rule.field, None, "Member must not be null");
            String::new()
        })
    }

    /// An integer member in `min..=max`, when present.
    pub(crate) fn integer(&self, name: &str, field: &str, min: u32, max: u32, found: &mut Violations) -> Option<u32> {
        let raw = self.params.get(name)?;
        let Ok(n) = raw.parse::<i64>() else {
            found.add(field, Some(raw), "Member must be an integer");
            return None;
        };
        if n < i64::from(min) {
            found.add(field, Some(raw), &format!("Member must have value greater than or equal to {min}"));
        } else if n > i64::from(max) {
            found.add(field, Some(raw), &format!("Member must have value less than or equal to {max}"));
        }
        u32::try_from(n).ok()
    }

    /// `Marker` and `MaxItems` (1–1000, default 100).
    pub(crate) fn page(&self, found: &mut Violations) -> Page {
        let max_items = self.integer("MaxItems", "maxItems", 1, 1000, found).unwrap_or(100);
        let after = self.optional("Marker", &MARKER, found);
        Page { after, max_items: max_items as usize }
    }
}

// === impl Page ===

impl Page {
    /// This page of `items` (`(sort key, item)` in sort-key order), and the marker of the next
    /// page if more remain. A marker that is not one of ours is `ValidationError`.
    pub(crate) fn take<T>(&self, mut items: Vec<(String, T)>) -> Result<(Vec<T>, Option<String>), IamError> {
        if let Some(marker) = &self.after {
            let after = key_of_token(marker)
                .ok_or_else(|| IamError::new(Code::ValidationError, format!("Invalid Marker: {marker}")))?;
            items.retain(|(key, _)| *key > after);
        }
        let next = if items.len() > self.max_items {
            items.truncate(self.max_items);
            items.last().map(|(key, _)| token_of(key))
        } else {
            None
        };
        Ok((items.into_iter().map(|(_, item)| item).collect(), next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(rule: &Rule, value: &str) -> usize {
        let mut found = Violations::default();
        rule.check(value, &mut found);
        found.0.len()
    }

    #[test]
    fn names_and_paths_follow_the_model() {
        for good in ["a", "My_Role+=,.@-1", &"r".repeat(64)] {
            assert_eq!(violations(&ROLE_NAME, good), 0, "{good}");
        }
        for bad in ["", "has space", "slash/", "é", &"r".repeat(65)] {
            assert!(violations(&ROLE_NAME, bad) >= 1, "{bad}");
        }
        for good in ["/", "/a/", "/a/b-c/", "/~!/"] {
            assert_eq!(violations(&PATH, good), 0, "{good}");
        }
        for bad in ["", "a/", "/a", "//x", "/a b/"] {
            assert!(violations(&PATH, bad) >= 1, "{bad}");
        }
        for good in ["/", "/a/", "/service-role/x/"] {
            assert_eq!(violations(&POLICY_PATH_PREFIX, good), 0, "{good}");
        }
        for bad in ["a/", "/a", "//", "/a b/"] {
            assert_eq!(violations(&POLICY_PATH_PREFIX, bad), 1, "{bad}");
        }
        assert_eq!(violations(&PATH_PREFIX, "/any\u{7f}"), 0);
        assert_eq!(violations(&PATH_PREFIX, "no-slash"), 1);
    }

    #[test]
    fn tags_and_descriptions() {
        assert_eq!(violations(&TAG_KEY, "team name:é/=+-@_.1"), 0);
        assert_eq!(violations(&TAG_KEY, "bad!"), 1);
        assert_eq!(violations(&TAG_VALUE, ""), 0);
        assert_eq!(violations(&DESCRIPTION, "line\nnext\u{e9}"), 0);
        assert_eq!(violations(&DESCRIPTION, "bell\u{7}"), 1);
        assert_eq!(violations(&POLICY_DOCUMENT, "{}\u{100}"), 1);
    }

    #[test]
    fn messages_name_every_violation() {
        let mut found = Violations::default();
        ROLE_NAME.check("", &mut found);
        found.add("assumeRolePolicyDocument", None, "Member must not be null");
        let err = found.finish().unwrap_err();
        assert_eq!(err.code, Code::ValidationError);
        assert!(err.message.starts_with("2 validation errors detected: Value '' at 'roleName'"), "{}", err.message);
        assert!(err.message.contains(
            "Value null at 'assumeRolePolicyDocument' failed to satisfy constraint: Member must not be null"
        ));
        assert!(Violations::default().finish().is_ok());
    }

    #[test]
    fn pages_resume_after_the_marker() {
        let items: Vec<(String, u32)> = (1..=5).map(|i| (format!("k{i}"), i)).collect();
        let page = Page { after: None, max_items: 2 };
        let (first, next) = page.take(items.clone()).unwrap();
        assert_eq!(first, [1, 2]);
        let page = Page { after: next, max_items: 2 };
        let (second, next) = page.take(items.clone()).unwrap();
        assert_eq!(second, [3, 4]);
        let page = Page { after: next, max_items: 2 };
        assert_eq!(page.take(items.clone()).unwrap(), (vec![5], None));
        let bad = Page { after: Some("zz".into()), max_items: 2 };
        assert_eq!(bad.take(items).unwrap_err().code, Code::ValidationError);
    }
}
