//! Auth policies (spec §4): the IAM policy language subset Lattice evaluates, compiled once per
//! change ([`Policy::compile`], which is also what `PutAuthPolicy` validates with) and evaluated
//! per request ([`Policy::evaluate`]) against a [`Request`]: who calls (anonymous or an
//! authenticated principal), the action (`vpc-lattice-svcs:Invoke`), the resource
//! (`arn:…:service/svc-…/<path>`) and the condition keys the caller's [`Keys`] answers.
//!
//! The grammar: `Version`; `Statement` (an object or a list) with `Sid`, `Effect` (`Allow` or
//! `Deny`), `Principal` (`"*"`, or `{"AWS": …}` with `"*"`, account IDs, `arn:aws:iam::<acct>:root`,
//! user and role ARNs — a role matches the sessions that assumed it), `Action`/`NotAction`,
//! `Resource`/`NotResource` (`*` and `?` wildcards; actions compare without case), and
//! `Condition` with the String*, Arn*, Numeric*, Bool, Null and IpAddress/NotIpAddress operators,
//! their `…IfExists` forms and the `ForAnyValue:`/`ForAllValues:` qualifiers.
//!
//! Semantics as IAM's: conditions of a statement all hold (AND), the values of one key any
//! (OR); a key the request lacks makes a positive operator false and a negated one true
//! (`…IfExists`: true); an explicit Deny wins over any Allow ([`Decision`]).

use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

/// A compiled auth policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// What a policy says of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows it and none denies it.
    Allow,
    /// A statement denies it.
    Deny,
    /// No statement applies (an implicit deny).
    NoMatch,
}

/// Why a policy document was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError(pub String);

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller<'a> {
    /// An unsigned request.
    Anonymous,
    /// A request signed with known credentials.
    Principal {
        /// `arn:aws:iam::<acct>:root`, `…:user/<name>`, or
        /// `arn:aws:sts::<acct>:assumed-role/<role>/<session>`.
        arn: &'a str,
        /// The account the principal belongs to.
        account: &'a str,
    },
}

/// The condition keys of a request. A key the request does not have has no values.
pub trait Keys {
    /// Calls `each` with every value of the key (once for single-valued keys; never for a key
    /// the request lacks). Called per condition per request: no allocation it can avoid.
    fn visit(&self, key: &Key, each: &mut dyn FnMut(&str));
}

/// A condition key as a policy names it, read once when the policy is compiled (IAM compares
/// key names without case), so that a request's check does not parse names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The name as the policy writes it.
    pub name: String,
    /// What it names.
    pub kind: KeyKind,
}

/// The condition keys Lattice's requests have (spec §4.3); any other name is `Other` and
/// has no values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// `aws:SourceIp`.
    SourceIp,
    /// `aws:PrincipalType`.
    PrincipalType,
    /// `aws:PrincipalArn`.
    PrincipalArn,
    /// `aws:PrincipalAccount`.
    PrincipalAccount,
    /// `aws:PrincipalOrgID`.
    PrincipalOrgId,
    /// `aws:userid`.
    UserId,
    /// `aws:username`.
    UserName,
    /// `aws:PrincipalTag/<key>`: the tag key as written (tag keys compare without case).
    PrincipalTag(String),
    /// `vpc-lattice-svcs:Port`.
    Port,
    /// `vpc-lattice-svcs:RequestMethod`.
    RequestMethod,
    /// `vpc-lattice-svcs:RequestPath`.
    RequestPath,
    /// `vpc-lattice-svcs:ServiceArn`.
    ServiceArn,
    /// `vpc-lattice-svcs:ServiceNetworkArn`.
    ServiceNetworkArn,
    /// `vpc-lattice-svcs:SourceVpc`.
    SourceVpc,
    /// `vpc-lattice-svcs:SourceVpcOwnerAccount`.
    SourceVpcOwnerAccount,
    /// `vpc-lattice-svcs:RequestHeader/<name>`: the header name in lowercase.
    RequestHeader(String),
    /// `vpc-lattice-svcs:RequestQueryString/<name>`: the parameter name as written (compared
    /// exactly with the decoded name).
    RequestQueryString(String),
    /// A key no Lattice request has.
    Other,
}

// === impl Key ===

impl Key {
    /// Reads a key name.
    pub fn parse(name: &str) -> Self {
        Self { name: name.to_owned(), kind: KeyKind::parse(name) }
    }
}

impl KeyKind {
    fn parse(key: &str) -> Self {
        let Some((service, name)) = key.split_once(':') else { return Self::Other };
        let is = |want: &str| name.eq_ignore_ascii_case(want);
        if service.eq_ignore_ascii_case("aws") {
            if let Some(tag) = strip_prefix_ignore_case(name, "principaltag/") {
                return Self::PrincipalTag(tag.to_owned());
            }
            return match () {
                () if is("sourceip") => Self::SourceIp,
                () if is("principaltype") => Self::PrincipalType,
                () if is("principalarn") => Self::PrincipalArn,
                () if is("principalaccount") => Self::PrincipalAccount,
                () if is("principalorgid") => Self::PrincipalOrgId,
                () if is("userid") => Self::UserId,
                () if is("username") => Self::UserName,
                () => Self::Other,
            };
        }
        if !service.eq_ignore_ascii_case("vpc-lattice-svcs") {
            return Self::Other;
        }
        if let Some(header) = strip_prefix_ignore_case(name, "requestheader/") {
            return Self::RequestHeader(header.to_ascii_lowercase());
        }
        if let Some(wanted) = strip_prefix_ignore_case(name, "requestquerystring/") {
            return Self::RequestQueryString(wanted.to_owned());
        }
        match () {
            () if is("port") => Self::Port,
            () if is("requestmethod") => Self::RequestMethod,
            () if is("requestpath") => Self::RequestPath,
            () if is("servicearn") => Self::ServiceArn,
            () if is("servicenetworkarn") => Self::ServiceNetworkArn,
            () if is("sourcevpc") => Self::SourceVpc,
            () if is("sourcevpcowneraccount") => Self::SourceVpcOwnerAccount,
            () => Self::Other,
        }
    }
}

/// Whether `a` and `b` are the same bytes. Policies compare short strings (accounts, VPC IDs,
/// methods) many times a request: compared inline, without a call into the C library's
/// `memcmp` for each.
#[inline]
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if a.len() > 64 {
        return a == b;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// `s` without the concatenation of `parts` at its start (checked part by part, so that a
/// request's check builds no string).
fn strip_parts<'s>(s: &'s str, parts: &[&str]) -> Option<&'s str> {
    parts.iter().try_fold(s, |rest, part| rest.strip_prefix(part))
}

/// `s` without `prefix`, compared without case.
fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// One request, as a policy sees it.
pub struct Request<'a> {
    /// Who calls.
    pub caller: Caller<'a>,
    /// `vpc-lattice-svcs:Invoke` (or `Connect` for passthrough).
    pub action: &'a str,
    /// `arn:aws:vpc-lattice:<region>:<acct>:service/svc-…/<path>`.
    pub resource: &'a str,
    /// The condition keys.
    pub keys: &'a dyn Keys,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    principals: Principals,
    actions: Patterns,
    resources: Patterns,
    conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Principals {
    /// `"*"` or `{"AWS": "*"}`: anyone, anonymous callers too.
    Anyone,
    /// Accounts and ARNs.
    Listed(Vec<PrincipalPattern>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PrincipalPattern {
    /// Every identity of this account.
    Account(String),
    /// This role, and every session that assumed it: (account, role name).
    Role(String, String),
    /// Exactly this ARN (a user, or an assumed-role session).
    Arn(String),
}

/// `Action`/`Resource` (or their `Not…` forms) as wildcard patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Patterns {
    negated: bool,
    patterns: Vec<Pattern>,
    ignore_case: bool,
}

/// A wildcard pattern with its shape found once, at compile time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// No wildcard: the whole value.
    Exact(String),
    /// One `*`, at the end: a prefix of the value.
    Prefix(String),
    /// Anything else.
    Glob(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Condition {
    op: Op,
    negated: bool,
    if_exists: bool,
    set: Option<Set>,
    key: Key,
    values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Set {
    AnyValue,
    AllValues,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    ArnLike,
    Numeric(NumericOp),
    Bool,
    Null,
    IpAddress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumericOp {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

/// Most characters in a policy (the auth policy size quota, spec §7).
pub const MAX_POLICY_CHARS: usize = 10 * 1024;

// === impl Policy ===

impl Policy {
    /// Compiles a policy document, or says what is wrong with it.
    pub fn compile(text: &str) -> Result<Self, PolicyError> {
        if text.chars().count() > MAX_POLICY_CHARS {
            return Err(err(format!("must be at most {MAX_POLICY_CHARS} characters (the auth policy size quota)")));
        }
        let doc: Value = serde_json::from_str(text).map_err(|e| err(format!("is not valid JSON: {e}")))?;
        let doc = doc.as_object().ok_or_else(|| err("must be a JSON object".into()))?;
        for key in doc.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(err(format!("has an unknown element {key:?}")));
            }
        }
        match doc.get("Version") {
            None => {}
            Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => {}
            Some(_) => return Err(err("Version must be \"2012-10-17\" or \"2008-10-17\"".into())),
        }
        let list: Vec<&Value> = match doc.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => return Err(err("must have a Statement: an object or a non-empty list of objects".into())),
        };
        let statements = list
            .iter()
            .enumerate()
            .map(|(i, s)| statement(s).map_err(|e| err(format!("Statement {i}: {}", e.0))))
            .collect::<Result<_, _>>()?;
        Ok(Self { statements })
    }

    /// What the policy says of `request`.
    pub fn evaluate(&self, request: &Request<'_>) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if s.applies(request) {
                match s.effect {
                    Effect::Deny => return Decision::Deny,
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed { Decision::Allow } else { Decision::NoMatch }
    }
}

/// A policy narrowed to the requests of one service and one action ([`Policy::narrow`]):
/// what the proxy keeps per service, so that a request's check does only the work that the
/// service and the action leave. Statements for other actions or other services are gone,
/// action patterns are answered, and resource patterns are cut to the part of the resource
/// after the service's ARN (the request's path).
#[derive(Clone, Debug)]
pub struct Narrowed {
    /// Deny statements first, then the allows (order does not change a decision: a Deny wins
    /// wherever it stands, and one Allow is enough), so the first statement that applies
    /// decides.
    statements: Vec<NarrowStatement>,
    /// How many of `statements` deny.
    denies: usize,
    /// The service's ARN: every resource is this followed by a path.
    base: Box<str>,
}

#[derive(Clone, Debug)]
struct NarrowStatement {
    principals: Callers,
    paths: Paths,
    conditions: Vec<Condition>,
}

/// A statement's `Principal`, the usual one account held in place (a request's check reads
/// every statement's: no pointer to follow to a string elsewhere).
#[derive(Clone, Debug)]
enum Callers {
    Anyone,
    /// Every identity of this account (its 12 digits as a number).
    Account(u64),
    Listed(Principals),
}

/// An account ID's 12 digits as a number.
fn account_number(account: &str) -> Option<u64> {
    let b = account.as_bytes();
    (b.len() == 12).then_some(())?;
    b.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

/// A statement's `Resource`/`NotResource` for resources of one service.
#[derive(Clone, Debug)]
enum Paths {
    /// Every path of the service.
    Any,
    /// Some paths: exactly these, under these prefixes, or whole resources matching these
    /// wildcard patterns (`negated`: any path but those).
    Some { negated: bool, exact: Vec<Box<str>>, prefixes: Vec<Box<str>>, globs: Vec<Box<str>> },
}

// === impl Narrowed ===

impl Policy {
    /// This policy for requests whose action is `action` and whose resource is `base` (a
    /// service's ARN) followed by a path; [`Narrowed::evaluate`] says of such a request what
    /// [`Policy::evaluate`] says.
    pub fn narrow(&self, action: &str, base: &str) -> Narrowed {
        let mut statements = Vec::new();
        let mut denies = 0;
        for s in &self.statements {
            if !s.actions.matches(action) {
                continue;
            }
            let Some(paths) = narrow_paths(&s.resources, base) else { continue };
            let principals = match &s.principals {
                Principals::Anyone => Callers::Anyone,
                Principals::Listed(list) => match &list[..] {
                    [PrincipalPattern::Account(a)] => {
                        account_number(a).map_or(Callers::Listed(s.principals.clone()), Callers::Account)
                    }
                    _ => Callers::Listed(s.principals.clone()),
                },
            };
            let narrowed = NarrowStatement { principals, paths, conditions: s.conditions.clone() };
            if s.effect == Effect::Deny {
                statements.insert(denies, narrowed);
                denies += 1;
            } else {
                statements.push(narrowed);
            }
        }
        Narrowed { statements, denies, base: base.into() }
    }
}

/// `patterns` for resources that are `base` followed by a non-empty path, or `None` when no
/// such resource matches.
fn narrow_paths(patterns: &Patterns, base: &str) -> Option<Paths> {
    debug_assert!(!patterns.ignore_case, "resources compare with case");
    let (mut every, mut exact, mut prefixes, mut globs) = (false, Vec::new(), Vec::new(), Vec::new());
    for p in &patterns.patterns {
        match p {
            // The path is never empty, so a pattern of the service's ARN alone matches nothing.
            Pattern::Exact(p) => {
                if let Some(path) = p.strip_prefix(base).filter(|path| !path.is_empty()) {
                    exact.push(path.into());
                }
            }
            Pattern::Prefix(p) if p.len() <= base.len() => every |= base.as_bytes().starts_with(p.as_bytes()),
            Pattern::Prefix(p) => {
                if let Some(path) = p.strip_prefix(base) {
                    prefixes.push(path.into());
                }
            }
            Pattern::Glob(p) => globs.push(p.as_str().into()),
        }
    }
    let none_left = exact.is_empty() && prefixes.is_empty() && globs.is_empty();
    match (every, patterns.negated) {
        (true, false) => Some(Paths::Any),
        (true, true) => None,
        (false, negated) if none_left => negated.then_some(Paths::Any),
        (false, negated) => Some(Paths::Some { negated, exact, prefixes, globs }),
    }
}

impl Narrowed {
    /// What the policy says of a request to `path` (of the service, with its query removed;
    /// empty reads as `/`) by `caller`, with condition keys `keys`.
    pub fn evaluate(&self, caller: Caller<'_>, path: &str, keys: &dyn Keys) -> Decision {
        let path = if path.is_empty() { "/" } else { path };
        let account = match caller {
            Caller::Principal { account, .. } => account_number(account),
            Caller::Anonymous => None,
        };
        let mut resource = None;
        for (i, s) in self.statements.iter().enumerate() {
            let principal = match &s.principals {
                Callers::Anyone => true,
                Callers::Account(a) => account == Some(*a),
                Callers::Listed(list) => list.matches(caller),
            };
            if principal
                && s.paths.matches(path, &self.base, &mut resource)
                && s.conditions.iter().all(|c| c.holds(keys))
            {
                return if i < self.denies { Decision::Deny } else { Decision::Allow };
            }
        }
        Decision::NoMatch
    }

    /// How many statements are left.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether none is (every request is an implicit deny).
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

impl Paths {
    /// Whether `path` matches; `resource` is the whole resource once a wildcard pattern needed it.
    fn matches(&self, path: &str, base: &str, resource: &mut Option<String>) -> bool {
        let Self::Some { negated, exact, prefixes, globs } = self else { return true };
        let any = exact.iter().any(|p| same(p, path))
            || prefixes.iter().any(|p| path.starts_with(&**p))
            || (!globs.is_empty() && {
                let whole = resource.get_or_insert_with(|| [base, path].concat());
                globs.iter().any(|p| glob(p, whole, false))
            });
        any != *negated
    }
}

fn err(message: String) -> PolicyError {
    PolicyError(message)
}

fn statement(v: &Value) -> Result<Statement, PolicyError> {
    let obj = v.as_object().ok_or_else(|| err("must be an object".into()))?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "Sid" | "Effect" | "Principal" | "Action" | "NotAction" | "Resource" | "NotResource" | "Condition"
        ) {
            return Err(err(format!("has an unknown or unsupported element {key:?}")));
        }
    }
    let effect = match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => return Err(err("must have an Effect of \"Allow\" or \"Deny\"".into())),
    };
    let principals = principals(obj.get("Principal").ok_or_else(|| err("must have a Principal".into()))?)?;
    let actions = patterns(obj, "Action", "NotAction", true)?;
    let resources = patterns(obj, "Resource", "NotResource", false)?;
    let conditions = match obj.get("Condition") {
        None => Vec::new(),
        Some(c) => conditions(c)?,
    };
    Ok(Statement { effect, principals, actions, resources, conditions })
}

/// A string or a non-empty list of strings.
fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(list) if !list.is_empty() => list
            .iter()
            .map(|x| x.as_str().map(str::to_owned).ok_or_else(|| err(format!("{what} must hold strings"))))
            .collect(),
        _ => Err(err(format!("{what} must be a string or a non-empty list of strings"))),
    }
}

fn principals(v: &Value) -> Result<Principals, PolicyError> {
    if v.as_str() == Some("*") {
        return Ok(Principals::Anyone);
    }
    let obj = v.as_object().ok_or_else(|| err("Principal must be \"*\" or {\"AWS\": …}".into()))?;
    if let Some(other) = obj.keys().find(|k| *k != "AWS") {
        return Err(err(format!("Principal {other:?} is not supported (only \"AWS\")")));
    }
    let listed = strings(obj.get("AWS").ok_or_else(|| err("Principal must name \"AWS\"".into()))?, "Principal")?;
    if listed.iter().any(|p| p == "*") {
        return Ok(Principals::Anyone);
    }
    listed.iter().map(|p| principal(p)).collect::<Result<_, _>>().map(Principals::Listed)
}

fn principal(p: &str) -> Result<PrincipalPattern, PolicyError> {
    if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(PrincipalPattern::Account(p.to_owned()));
    }
    let bad = || err(format!("Principal {p:?} is not an account ID or an IAM ARN"));
    let parts: Vec<&str> = p.splitn(6, ':').collect();
    let [arn, _partition, service, _region, account, resource] = parts[..] else { return Err(bad()) };
    if arn != "arn" || !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad());
    }
    match (service, resource) {
        ("iam", "root") => Ok(PrincipalPattern::Account(account.to_owned())),
        ("iam", r) if r.starts_with("role/") => {
            let name = r.rsplit('/').next().unwrap_or_default();
            Ok(PrincipalPattern::Role(account.to_owned(), name.to_owned()))
        }
        ("iam", r) if r.starts_with("user/") => Ok(PrincipalPattern::Arn(p.to_owned())),
        ("sts", r) if r.starts_with("assumed-role/") => Ok(PrincipalPattern::Arn(p.to_owned())),
        _ => Err(bad()),
    }
}

fn patterns(
    obj: &serde_json::Map<String, Value>,
    yes: &str,
    no: &str,
    ignore_case: bool,
) -> Result<Patterns, PolicyError> {
    match (obj.get(yes), obj.get(no)) {
        (Some(_), Some(_)) => Err(err(format!("must not have both {yes} and {no}"))),
        (Some(v), None) => Ok(Patterns { negated: false, patterns: shapes(strings(v, yes)?), ignore_case }),
        (None, Some(v)) => Ok(Patterns { negated: true, patterns: shapes(strings(v, no)?), ignore_case }),
        (None, None) => Err(err(format!("must have {yes} or {no}"))),
    }
}

fn shapes(texts: Vec<String>) -> Vec<Pattern> {
    texts
        .into_iter()
        .map(|t| match t.find(['*', '?']) {
            None => Pattern::Exact(t),
            Some(at) if at == t.len() - 1 && t.ends_with('*') => Pattern::Prefix(t[..at].to_owned()),
            Some(_) => Pattern::Glob(t),
        })
        .collect()
}

fn conditions(v: &Value) -> Result<Vec<Condition>, PolicyError> {
    let obj = v.as_object().ok_or_else(|| err("Condition must be an object".into()))?;
    let mut out = Vec::new();
    for (name, keys) in obj {
        let (set, rest) = match name.split_once(':') {
            Some(("ForAnyValue", rest)) => (Some(Set::AnyValue), rest),
            Some(("ForAllValues", rest)) => (Some(Set::AllValues), rest),
            Some(_) => return Err(err(format!("condition operator {name:?} has an unknown qualifier"))),
            None => (None, name.as_str()),
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (rest, false),
        };
        let (op, negated) = match base {
            "StringEquals" => (Op::StringEquals, false),
            "StringNotEquals" => (Op::StringEquals, true),
            "StringEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, false),
            "StringNotEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, true),
            "StringLike" => (Op::StringLike, false),
            "StringNotLike" => (Op::StringLike, true),
            "ArnEquals" | "ArnLike" => (Op::ArnLike, false),
            "ArnNotEquals" | "ArnNotLike" => (Op::ArnLike, true),
            "NumericEquals" => (Op::Numeric(NumericOp::Equals), false),
            "NumericNotEquals" => (Op::Numeric(NumericOp::Equals), true),
            "NumericLessThan" => (Op::Numeric(NumericOp::LessThan), false),
            "NumericLessThanEquals" => (Op::Numeric(NumericOp::LessThanEquals), false),
            "NumericGreaterThan" => (Op::Numeric(NumericOp::GreaterThan), false),
            "NumericGreaterThanEquals" => (Op::Numeric(NumericOp::GreaterThanEquals), false),
            "Bool" => (Op::Bool, false),
            "Null" => (Op::Null, false),
            "IpAddress" => (Op::IpAddress, false),
            "NotIpAddress" => (Op::IpAddress, true),
            _ => return Err(err(format!("condition operator {name:?} is not supported"))),
        };
        if op == Op::Null && (if_exists || set.is_some()) {
            return Err(err(format!("condition operator {name:?} is not valid")));
        }
        let keys = keys.as_object().ok_or_else(|| err(format!("condition {name:?} must map keys to values")))?;
        for (key, values) in keys {
            let values = match values {
                Value::Bool(b) => vec![b.to_string()],
                Value::Number(n) => vec![n.to_string()],
                other => strings(other, &format!("condition {name:?} {key:?}"))?,
            };
            for value in &values {
                let valid = match op {
                    Op::Numeric(_) => value.parse::<f64>().is_ok(),
                    Op::Bool | Op::Null => value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false"),
                    Op::IpAddress => parse_cidr(value).is_some(),
                    _ => true,
                };
                if !valid {
                    return Err(err(format!("condition {name:?} {key:?}: {value:?} is not a valid value")));
                }
            }
            out.push(Condition { op, negated, if_exists, set, key: Key::parse(key), values });
        }
    }
    Ok(out)
}

// === impl Statement ===

impl Statement {
    fn applies(&self, r: &Request<'_>) -> bool {
        self.principals.matches(r.caller)
            && self.actions.matches(r.action)
            && self.resources.matches(r.resource)
            && self.conditions.iter().all(|c| c.holds(r.keys))
    }
}

impl Principals {
    fn matches(&self, caller: Caller<'_>) -> bool {
        match (self, caller) {
            (Self::Anyone, _) => true,
            (Self::Listed(_), Caller::Anonymous) => false,
            (Self::Listed(list), Caller::Principal { arn, account }) => list.iter().any(|p| match p {
                PrincipalPattern::Account(a) => same(a, account),
                PrincipalPattern::Arn(a) => same(a, arn),
                PrincipalPattern::Role(acct, role) => {
                    acct == account
                        && (strip_parts(arn, &["arn:aws:iam::", acct, ":role/", role]) == Some("")
                            || strip_parts(arn, &["arn:aws:sts::", acct, ":assumed-role/", role, "/"]).is_some())
                }
            }),
        }
    }
}

impl Patterns {
    fn matches(&self, value: &str) -> bool {
        let same = |a: &str, b: &str| if self.ignore_case { a.eq_ignore_ascii_case(b) } else { a == b };
        let any = self.patterns.iter().any(|p| match p {
            Pattern::Exact(p) => same(p, value),
            Pattern::Prefix(p) => value.get(..p.len()).is_some_and(|head| same(p, head)),
            Pattern::Glob(p) => glob(p, value, self.ignore_case),
        });
        any != self.negated
    }
}

impl Condition {
    fn holds(&self, keys: &dyn Keys) -> bool {
        let (mut found, mut matched) = (0usize, 0usize);
        keys.visit(&self.key, &mut |v| {
            found += 1;
            if self.values.iter().any(|p| self.op.matches(p, v)) {
                matched += 1;
            }
        });
        if self.op == Op::Null {
            let want_missing = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return (found == 0) == want_missing;
        }
        if found == 0 {
            // A missing key: IfExists always true; ForAllValues of nothing is true and
            // ForAnyValue of nothing false, whatever the operator; otherwise false for a
            // positive operator, true for a negated one.
            return match self.set {
                _ if self.if_exists => true,
                Some(Set::AllValues) => true,
                Some(Set::AnyValue) => false,
                None => self.negated,
            };
        }
        match self.set {
            // With a negated operator, "matches" means "matches none of the policy's values":
            // ForAllValues wants every request value so, ForAnyValue at least one.
            Some(Set::AllValues) if self.negated => matched == 0,
            Some(Set::AllValues) => matched == found,
            Some(Set::AnyValue) if self.negated => matched < found,
            Some(Set::AnyValue) => matched > 0,
            None => (matched > 0) != self.negated,
        }
    }
}

impl Op {
    /// Whether request value `v` matches policy value `p` (the positive form).
    fn matches(self, p: &str, v: &str) -> bool {
        match self {
            Self::StringEquals => same(p, v),
            Self::StringEqualsIgnoreCase => p.eq_ignore_ascii_case(v),
            Self::StringLike => glob(p, v, false),
            Self::ArnLike => glob(p, v, false),
            Self::Numeric(op) => match (p.parse::<f64>(), v.parse::<f64>()) {
                (Ok(p), Ok(v)) => match op {
                    NumericOp::Equals => v == p,
                    NumericOp::LessThan => v < p,
                    NumericOp::LessThanEquals => v <= p,
                    NumericOp::GreaterThan => v > p,
                    NumericOp::GreaterThanEquals => v >= p,
                },
                _ => false,
            },
            Self::Bool => p.eq_ignore_ascii_case(v),
            Self::Null => false,
            Self::IpAddress => match (parse_cidr(p), v.parse::<IpAddr>()) {
                (Some((net, len)), Ok(ip)) => in_cidr(ip, net, len),
                _ => false,
            },
        }
    }
}

/// IAM's wildcards: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let same = |a: &[u8], b: &[u8]| if ignore_case { a.eq_ignore_ascii_case(b) } else { a == b };
    let (p, v) = (pattern.as_bytes(), value.as_bytes());
    // The usual shapes first: no wildcard at all, or one `*` at the end (ARN prefixes).
    match p.iter().position(|&b| b == b'*' || b == b'?') {
        None => return same(p, v),
        Some(at) if at == p.len() - 1 && p[at] == b'*' => return v.len() >= at && same(&p[..at], &v[..at]),
        Some(_) => {}
    }
    if pattern.is_ascii() && value.is_ascii() {
        // Bytes are characters: no copy needed.
        let eq = |a: &u8, b: &u8| if ignore_case { a.eq_ignore_ascii_case(b) } else { a == b };
        return glob_in(pattern.as_bytes(), value.as_bytes(), b'*', b'?', eq);
    }
    let eq = |a: &char, b: &char| if ignore_case { a.eq_ignore_ascii_case(b) } else { a == b };
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    glob_in(&p, &v, '*', '?', eq)
}

/// Iterative matching with one backtrack point (the last `*`).
fn glob_in<T: PartialEq>(p: &[T], v: &[T], star_sym: T, one: T, eq: impl Fn(&T, &T) -> bool) -> bool {
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == one || (p[pi] != star_sym && eq(&p[pi], &v[vi]))) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == star_sym {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == star_sym {
        pi += 1;
    }
    pi == p.len()
}

/// `a.b.c.d/n`, `v6/n`, or a bare address (a host).
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a = s.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let (ip, net, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        (IpAddr::V4(a), IpAddr::V6(b)) => (u128::from(a.to_ipv6_mapped()), u128::from(b), 128),
        (IpAddr::V6(a), IpAddr::V4(b)) => match a.to_ipv4_mapped() {
            Some(a) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
            None => return false,
        },
    };
    if len == 0 {
        return true;
    }
    let shift = bits - u32::from(len);
    (ip >> shift) == (net >> shift)
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

#[cfg(test)]
mod tests;
