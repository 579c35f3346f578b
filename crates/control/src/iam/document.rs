//! IAM policy documents: parsing the grammar Trellis understands (a `Statement` object or list
//! whose entries have an `Effect`, `Action` or `NotAction`, and for trust policies a
//! `Principal`), the checks CreateRole makes on a trust policy (`MalformedPolicyDocument`), and
//! the two questions the ECS integration asks: does a trust policy let a service assume the
//! role, and do permission policies grant an action. `Resource` and `Condition` are kept out of
//! evaluation: a grant is judged by its actions alone.

use serde_json::{Map, Value};

use super::error::IamError;

/// A parsed policy document.
#[derive(Debug, Default)]
pub(crate) struct Document {
    statements: Vec<Statement>,
}

#[derive(Debug)]
struct Statement {
    allow: bool,
    /// `Action` patterns, or `NotAction` ones when `not_action`.
    actions: Vec<String>,
    not_action: bool,
    /// `Principal: "*"` (or `{"AWS": "*"}`).
    any_principal: bool,
    /// `Principal.Service` entries.
    services: Vec<String>,
    /// `Principal.AWS` entries (account IDs and ARNs; `*` is `any_principal`).
    aws: Vec<String>,
    /// Whether it has a `Condition` (not evaluated: see [`Document::trusts_principal`]).
    has_condition: bool,
    has_principal: bool,
    has_resource: bool,
}

/// A principal as a trust policy sees it.
#[derive(Debug)]
pub(crate) struct TrustedCaller<'a> {
    /// Its account.
    pub(crate) account: &'a str,
    /// Its ARN (root, user, or assumed-role session).
    pub(crate) arn: &'a str,
    /// For a session, its role's ARN.
    pub(crate) role_arn: Option<&'a str>,
}

impl TrustedCaller<'_> {
    /// Whether a `Principal.AWS` entry names this caller.
    fn is_named_by(&self, entry: &str) -> bool {
        entry == self.account
            || entry == format!("arn:aws:iam::{}:root", self.account)
            || entry == self.arn
            || self.role_arn.is_some_and(|role| entry == role)
    }
}

/// What is wrong with a document, worded as IAM words it.
type Malformed = String;

/// The principal kinds a trust policy may name.
const PRINCIPAL_KINDS: &[&str] = &["AWS", "CanonicalUser", "Federated", "Service"];

/// Checks a role's trust policy as CreateRole does: the document grammar, a `Principal` and no
/// `Resource` in every statement, and only STS actions.
pub(crate) fn check_trust_policy(text: &str) -> Result<Document, IamError> {
    let doc = Document::parse(text).map_err(IamError::malformed)?;
    for statement in &doc.statements {
        if !statement.has_principal {
            return Err(IamError::malformed("AssumeRolePolicy policy: Missing required field Principal"));
        }
        if statement.has_resource {
            return Err(IamError::malformed("AssumeRolePolicy policy: Has prohibited field Resource"));
        }
        if !statement.not_action && !statement.actions.iter().all(|a| a == "*" || starts_with_ignore_case(a, "sts:")) {
            return Err(IamError::malformed("AssumeRole policy may only specify STS AssumeRole actions."));
        }
    }
    Ok(doc)
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Whether `pattern` (IAM's `*` and `?` wildcards) matches `action`, ignoring case as IAM does
/// for actions.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (p, a): (Vec<char>, Vec<char>) =
        (pattern.to_ascii_lowercase().chars().collect(), action.to_ascii_lowercase().chars().collect());
    // Classic wildcard matching with one backtrack point for the last `*`.
    let (mut pi, mut ai, mut star, mut mark) = (0, 0, None, 0);
    while ai < a.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == a[ai]) {
            pi += 1;
            ai += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ai;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ai = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A string or a list of strings (`"Action": "x"` or `["x", "y"]`).
fn strings(value: &Value, field: &str) -> Result<Vec<String>, Malformed> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(list) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("Syntax errors in policy: {field}")))
            .collect(),
        _ => Err(format!("Syntax errors in policy: {field}")),
    }
}

// === impl Document ===

impl Document {
    /// Parses a document: JSON, an optional valid `Version`, and a `Statement` object or
    /// non-empty list of statements each with an `Effect` and an `Action` or `NotAction`.
    pub(crate) fn parse(text: &str) -> Result<Self, Malformed> {
        let value: Value = serde_json::from_str(text).map_err(|_| "This policy contains invalid Json".to_owned())?;
        let Value::Object(doc) = value else {
            return Err("Syntax errors in policy.".to_owned());
        };
        match doc.get("Version") {
            None => {}
            Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => {}
            Some(_) => return Err("The policy must contain a valid version string".to_owned()),
        }
        let statements = match doc.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            Some(_) => return Err("Syntax errors in policy.".to_owned()),
            None => return Err("Missing required field Statement".to_owned()),
        };
        let statements = statements.into_iter().map(Statement::parse).collect::<Result<_, _>>()?;
        Ok(Self { statements })
    }

    /// Whether this trust policy lets `service` perform `action` (`sts:AssumeRole`): an `Allow`
    /// naming it (or any principal) and no `Deny` that does.
    pub(crate) fn trusts_service(&self, service: &str, action: &str) -> bool {
        let applies = |s: &&Statement| {
            s.covers(action) && (s.any_principal || s.services.iter().any(|v| v.eq_ignore_ascii_case(service)))
        };
        self.statements.iter().filter(|s| s.allow).any(|s| applies(&s))
            && !self.statements.iter().filter(|s| !s.allow).any(|s| applies(&s))
    }

    /// Whether this trust policy lets an AWS principal perform `action` (`sts:AssumeRole`): an
    /// `Allow` naming it and no `Deny` that does. A statement names the principal with `*`,
    /// its account (`"123456789012"` or `arn:aws:iam::123456789012:root`: every identity of the
    /// account, as there are no identity-based policies to delegate to), its ARN, or for a
    /// session its role's ARN.
    ///
    /// Conditions are not evaluated: an `Allow` with a `Condition` allows nothing and a `Deny`
    /// with one denies, so that what Trellis cannot check never lets anyone in.
    pub(crate) fn trusts_principal(&self, who: &TrustedCaller<'_>, action: &str) -> bool {
        let names =
            |s: &Statement| s.covers(action) && (s.any_principal || s.aws.iter().any(|entry| who.is_named_by(entry)));
        self.statements.iter().any(|s| s.allow && !s.has_condition && names(s))
            && !self.statements.iter().any(|s| !s.allow && names(s))
    }

    /// Whether these permission policies together grant `action`: one allows it and none denies
    /// it.
    pub(crate) fn grants(policies: &[Self], action: &str) -> bool {
        let statements = || policies.iter().flat_map(|d| &d.statements);
        statements().any(|s| s.allow && s.covers(action)) && !statements().any(|s| !s.allow && s.covers(action))
    }
}

// === impl Statement ===

impl Statement {
    fn parse(value: &Value) -> Result<Self, Malformed> {
        let Value::Object(s) = value else {
            return Err("Syntax errors in policy.".to_owned());
        };
        let allow = match s.get("Effect") {
            Some(Value::String(e)) if e == "Allow" => true,
            Some(Value::String(e)) if e == "Deny" => false,
            Some(other) => return Err(format!("Invalid effect: {}", other.as_str().unwrap_or("(not a string)"))),
            None => return Err("Missing required field Effect".to_owned()),
        };
        let (actions, not_action) = match (s.get("Action"), s.get("NotAction")) {
            (Some(a), None) => (strings(a, "Action")?, false),
            (None, Some(a)) => (strings(a, "NotAction")?, true),
            (None, None) => return Err("Missing required field Action".to_owned()),
            (Some(_), Some(_)) => return Err("Syntax errors in policy: both Action and NotAction".to_owned()),
        };
        let principal = s.get("Principal").or_else(|| s.get("NotPrincipal"));
        let (any_principal, services, aws) = match s.get("Principal") {
            Some(p) => parse_principal(p)?,
            None => (false, Vec::new(), Vec::new()),
        };
        Ok(Self {
            allow,
            actions,
            not_action,
            any_principal,
            services,
            aws,
            has_condition: s.contains_key("Condition"),
            has_principal: principal.is_some(),
            has_resource: s.contains_key("Resource") || s.contains_key("NotResource"),
        })
    }

    /// Whether the statement's actions include `action`.
    fn covers(&self, action: &str) -> bool {
        self.not_action != self.actions.iter().any(|p| action_matches(p, action))
    }
}

/// `"*"`, or an object of principal kinds to a string or list of strings: whether it is
/// everyone, the `Service` entries and the `AWS` entries.
fn parse_principal(value: &Value) -> Result<(bool, Vec<String>, Vec<String>), Malformed> {
    let invalid = || "Invalid principal in policy".to_owned();
    let map: &Map<String, Value> = match value {
        Value::String(s) if s == "*" => return Ok((true, Vec::new(), Vec::new())),
        Value::Object(map) if !map.is_empty() => map,
        _ => return Err(invalid()),
    };
    let mut any = false;
    let mut services = Vec::new();
    let mut aws = Vec::new();
    for (kind, entries) in map {
        if !PRINCIPAL_KINDS.contains(&kind.as_str()) {
            return Err(invalid());
        }
        let entries = strings(entries, "Principal").map_err(|_| invalid())?;
        if entries.iter().any(String::is_empty) {
            return Err(invalid());
        }
        match kind.as_str() {
            "AWS" => {
                any |= entries.iter().any(|e| e == "*");
                aws.extend(entries.into_iter().filter(|e| e != "*"));
            }
            "Service" => services.extend(entries),
            _ => {}
        }
    }
    Ok((any, services, aws))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECS_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
        "Principal":{"Service":"ecs.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

    #[test]
    fn wildcards_match_actions_ignoring_case() {
        assert!(action_matches("vpc-lattice:*", "vpc-lattice:RegisterTargets"));
        assert!(action_matches("*", "anything"));
        assert!(action_matches("VPC-Lattice:*Targets", "vpc-lattice:ListTargets"));
        assert!(action_matches("vpc-lattice:?etTargetGroup", "vpc-lattice:GetTargetGroup"));
        assert!(!action_matches("vpc-lattice:Get*", "vpc-lattice:ListTargets"));
        assert!(!action_matches("ec2:*", "vpc-lattice:ListTargets"));
    }

    #[test]
    fn trust_policies_are_checked() {
        let doc = check_trust_policy(ECS_TRUST).unwrap();
        assert!(doc.trusts_service("ecs.amazonaws.com", "sts:AssumeRole"));
        assert!(!doc.trusts_service("ec2.amazonaws.com", "sts:AssumeRole"));
        let cases = [
            ("not json", "This policy contains invalid Json"),
            ("[]", "Syntax errors in policy."),
            (r#"{"Version":"2020-01-01","Statement":[]}"#, "The policy must contain a valid version string"),
            (r#"{"Version":"2012-10-17"}"#, "Missing required field Statement"),
            (r#"{"Statement":{"Effect":"Maybe","Action":"sts:AssumeRole","Principal":"*"}}"#, "Invalid effect: Maybe"),
            (r#"{"Statement":{"Effect":"Allow","Principal":"*"}}"#, "Missing required field Action"),
            (r#"{"Statement":{"Effect":"Allow","Action":"sts:AssumeRole"}}"#, "Missing required field Principal"),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"sts:AssumeRole","Principal":"*","Resource":"*"}}"#,
                "Has prohibited field Resource",
            ),
            (r#"{"Statement":{"Effect":"Allow","Action":"s3:GetObject","Principal":"*"}}"#, "STS AssumeRole"),
            (r#"{"Statement":{"Effect":"Allow","Action":"sts:AssumeRole","Principal":{"Nobody":"x"}}}"#, "principal"),
        ];
        for (text, wanted) in cases {
            let err = check_trust_policy(text).unwrap_err();
            assert!(err.message.contains(wanted), "{text}: {}", err.message);
        }
    }

    #[test]
    fn service_lists_denies_and_everyone() {
        let list = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":["ec2.amazonaws.com","ecs.amazonaws.com"]},
            "Action":["sts:AssumeRole","sts:TagSession"]}]}"#;
        assert!(Document::parse(list).unwrap().trusts_service("ecs.amazonaws.com", "sts:AssumeRole"));
        let denied = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"sts:*"},
            {"Effect":"Deny","Principal":{"Service":"ecs.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        assert!(!Document::parse(denied).unwrap().trusts_service("ecs.amazonaws.com", "sts:AssumeRole"));
        assert!(Document::parse(denied).unwrap().trusts_service("ec2.amazonaws.com", "sts:AssumeRole"));
    }

    #[test]
    fn aws_principals_are_trusted_by_account_arn_and_role() {
        let account = "111122223333";
        let root = TrustedCaller { account, arn: "arn:aws:iam::111122223333:root", role_arn: None };
        let user = TrustedCaller { account, arn: "arn:aws:iam::111122223333:user/alice", role_arn: None };
        let session = TrustedCaller {
            account,
            arn: "arn:aws:sts::111122223333:assumed-role/builder/s1",
            role_arn: Some("arn:aws:iam::111122223333:role/builder"),
        };
        let stranger = TrustedCaller { account: "444455556666", arn: "arn:aws:iam::444455556666:root", role_arn: None };
        let trust = |principal: &str| {
            Document::parse(&format!(
                r#"{{"Statement":{{"Effect":"Allow","Principal":{principal},"Action":"sts:AssumeRole"}}}}"#
            ))
            .unwrap()
        };
        let by_account = trust(r#"{"AWS":"111122223333"}"#);
        let by_root = trust(r#"{"AWS":["arn:aws:iam::111122223333:root"]}"#);
        for who in [&root, &user, &session] {
            assert!(by_account.trusts_principal(who, "sts:AssumeRole"), "{who:?}");
            assert!(by_root.trusts_principal(who, "sts:AssumeRole"), "{who:?}");
        }
        assert!(!by_account.trusts_principal(&stranger, "sts:AssumeRole"));
        let by_user = trust(r#"{"AWS":"arn:aws:iam::111122223333:user/alice"}"#);
        assert!(by_user.trusts_principal(&user, "sts:AssumeRole"));
        assert!(!by_user.trusts_principal(&root, "sts:AssumeRole"));
        let by_role = trust(r#"{"AWS":"arn:aws:iam::111122223333:role/builder"}"#);
        assert!(by_role.trusts_principal(&session, "sts:AssumeRole"));
        assert!(!by_role.trusts_principal(&user, "sts:AssumeRole"));
        let everyone = trust(r#""*""#);
        assert!(everyone.trusts_principal(&stranger, "sts:AssumeRole"));
        assert!(!everyone.trusts_principal(&stranger, "sts:TagSession"));
        let service = trust(r#"{"Service":"ecs.amazonaws.com"}"#);
        assert!(!service.trusts_principal(&root, "sts:AssumeRole"));
        let denied = Document::parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole"},
                {"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"sts:*"}]}"#,
        )
        .unwrap();
        assert!(!denied.trusts_principal(&user, "sts:AssumeRole"));
        assert!(denied.trusts_principal(&root, "sts:AssumeRole"));
        let conditional = Document::parse(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole",
                "Condition":{"StringEquals":{"sts:ExternalId":"x"}}}}"#,
        )
        .unwrap();
        assert!(!conditional.trusts_principal(&root, "sts:AssumeRole"));
    }

    #[test]
    fn grants_combine_policies() {
        let allow =
            Document::parse(r#"{"Statement":{"Effect":"Allow","Action":"vpc-lattice:*","Resource":"*"}}"#).unwrap();
        let deny =
            Document::parse(r#"{"Statement":{"Effect":"Deny","Action":"vpc-lattice:ListTargets","Resource":"*"}}"#)
                .unwrap();
        let not = Document::parse(r#"{"Statement":{"Effect":"Allow","NotAction":"ec2:*","Resource":"*"}}"#).unwrap();
        assert!(Document::grants(std::slice::from_ref(&allow), "vpc-lattice:ListTargets"));
        assert!(!Document::grants(&[allow, deny], "vpc-lattice:ListTargets"));
        assert!(Document::grants(std::slice::from_ref(&not), "vpc-lattice:GetTargetGroup"));
        assert!(!Document::grants(&[not], "ec2:DescribeVpcs"));
        assert!(!Document::grants(&[], "vpc-lattice:ListTargets"));
    }
}
