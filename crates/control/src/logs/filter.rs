//! FilterLogEvents' `filterPattern`, the subset Trellis understands: empty (every event);
//! terms (`ERROR "two words"` — every term appears, case-sensitively; `-term` must not appear;
//! `?a ?b` — any of them); and JSON conditions on the event's fields
//! (`{ $.responseCode = 403 }`, `{ $.serviceArn = "arn:…" && $.duration > 10 }`, with `=`,
//! `!=`, `<`, `<=`, `>`, `>=`, joined all by `&&` or all by `||`; a trailing `*` in a string
//! value matches a prefix).

use serde_json::Value;

/// A parsed filter pattern.
#[derive(Debug, PartialEq)]
pub(super) enum Pattern {
    /// Every event.
    All,
    /// Terms that must (and must not) appear.
    Terms { all: Vec<String>, none: Vec<String>, any: Vec<String> },
    /// JSON conditions, all of which (or any of which) hold.
    Json { conditions: Vec<Condition>, any: bool },
}

/// `$.path OP value`.
#[derive(Debug, PartialEq)]
pub(super) struct Condition {
    path: Vec<String>,
    op: Op,
    value: Literal,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
    Ne,
}

#[derive(Debug, PartialEq)]
enum Literal {
    Number(f64),
    Text(String),
}

// === impl Pattern ===

impl Pattern {
    /// Parses a pattern; why it is not one Trellis understands.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::All);
        }
        if let Some(inner) = text.strip_prefix('{') {
            let inner = inner.strip_suffix('}').ok_or("a JSON pattern must end with }")?;
            let (parts, any) = match (inner.contains("&&"), inner.contains("||")) {
                (true, true) => return Err("mixing && and || is not supported".into()),
                (_, true) => (inner.split("||").collect::<Vec<_>>(), true),
                _ => (inner.split("&&").collect(), false),
            };
            let conditions = parts.into_iter().map(Condition::parse).collect::<Result<_, _>>()?;
            return Ok(Self::Json { conditions, any });
        }
        let (mut all, mut none, mut any) = (Vec::new(), Vec::new(), Vec::new());
        for term in terms(text)? {
            if let Some(t) = term.strip_prefix('?') {
                any.push(t.trim_matches('"').to_owned());
            } else if let Some(t) = term.strip_prefix('-') {
                none.push(t.trim_matches('"').to_owned());
            } else {
                all.push(term.trim_matches('"').to_owned());
            }
        }
        Ok(Self::Terms { all, none, any })
    }

    /// Whether an event's message matches.
    pub(super) fn matches(&self, message: &str) -> bool {
        match self {
            Self::All => true,
            Self::Terms { all, none, any } => {
                all.iter().all(|t| message.contains(t.as_str()))
                    && !none.iter().any(|t| message.contains(t.as_str()))
                    && (any.is_empty() || any.iter().any(|t| message.contains(t.as_str())))
            }
            Self::Json { conditions, any } => {
                let Ok(value) = serde_json::from_str::<Value>(message) else { return false };
                if *any {
                    conditions.iter().any(|c| c.holds(&value))
                } else {
                    conditions.iter().all(|c| c.holds(&value))
                }
            }
        }
    }
}

/// Splits on whitespace, keeping `"quoted terms"` whole.
fn terms(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

// === impl Condition ===

impl Condition {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let path = text.strip_prefix("$.").ok_or_else(|| format!("{text:?}: a condition starts with $."))?;
        let at = path.find(['=', '!', '<', '>']).ok_or_else(|| format!("{text:?}: no operator"))?;
        let (name, rest) = path.split_at(at);
        let (op, value) = [("!=", Op::Ne), (">=", Op::Ge), ("<=", Op::Le), ("=", Op::Eq), (">", Op::Gt), ("<", Op::Lt)]
            .into_iter()
            .find_map(|(s, op)| rest.strip_prefix(s).map(|v| (op, v)))
            .ok_or_else(|| format!("{text:?}: unknown operator"))?;
        let path: Vec<String> = name.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("{text:?}: bad field path"));
        }
        let value = value.trim();
        let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(text) => Literal::Text(text.to_owned()),
            None => match value.parse::<f64>() {
                Ok(n) => Literal::Number(n),
                Err(_) if !value.is_empty() => Literal::Text(value.to_owned()),
                Err(_) => return Err(format!("{text:?}: no value")),
            },
        };
        if matches!(value, Literal::Text(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return Err(format!("{text:?}: only = and != compare text"));
        }
        Ok(Self { path, op, value })
    }

    fn holds(&self, event: &Value) -> bool {
        let Some(field) = self.path.iter().try_fold(event, |v, key| v.get(key)) else { return false };
        match &self.value {
            Literal::Number(n) => {
                let Some(x) = field.as_f64().or_else(|| field.as_str().and_then(|s| s.parse().ok())) else {
                    return false;
                };
                match self.op {
                    Op::Eq => x == *n,
                    Op::Ne => x != *n,
                    Op::Gt => x > *n,
                    Op::Ge => x >= *n,
                    Op::Lt => x < *n,
                    Op::Le => x <= *n,
                }
            }
            Literal::Text(t) => {
                let actual = match field {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let equal = match t.strip_suffix('*') {
                    Some(prefix) => actual.starts_with(prefix),
                    None => actual == *t,
                };
                (self.op == Op::Eq) == equal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let event = r#"{"responseCode":403,"serviceArn":"arn:aws:vpc-lattice:us-east-1:0:service/svc-1","authDeniedReason":"Service","nested":{"a":"b"}}"#;
        let table: &[(&str, bool)] = &[
            ("", true),
            ("svc-1", true),
            ("svc-2", false),
            ("svc-1 403", true),
            ("svc-1 -403", false),
            ("?svc-2 ?Service", true),
            ("\"authDeniedReason\":\"Service\"", true),
            ("{ $.responseCode = 403 }", true),
            ("{ $.responseCode >= 500 }", false),
            ("{ $.responseCode != 200 && $.authDeniedReason = \"Service\" }", true),
            ("{ $.responseCode = 200 || $.nested.a = b }", true),
            ("{ $.serviceArn = \"arn:aws:vpc-lattice:*\" }", true),
            ("{ $.missing = 1 }", false),
        ];
        for (pattern, want) in table {
            let p = Pattern::parse(pattern).unwrap();
            assert_eq!(p.matches(event), *want, "{pattern}");
        }
        for bad in
            ["{ $.a = 1", "{ a = 1 }", "{ $.a ~ 1 }", "{ $.a > \"x\" }", "\"open", "{ $.a = 1 && $.b = 2 || $.c = 3 }"]
        {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
