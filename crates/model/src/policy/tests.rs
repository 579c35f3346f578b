use std::collections::HashMap;

use super::*;

const SVC: &str = "arn:aws:vpc-lattice:us-east-1:111122223333:service/svc-0123456789abcdef0";

/// Condition keys, names compared without case.
struct Ctx(HashMap<String, Vec<String>>);

impl Keys for Ctx {
    fn visit(&self, key: &Key, each: &mut dyn FnMut(&str)) {
        for v in self.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case(&key.name)).flat_map(|(_, v)| v) {
            each(v);
        }
    }
}

fn ctx(pairs: &[(&str, &[&str])]) -> Ctx {
    Ctx(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect())).collect())
}

fn base() -> Ctx {
    ctx(&[
        ("vpc-lattice-svcs:RequestMethod", &["GET"]),
        ("vpc-lattice-svcs:SourceVpc", &["vpc-b"]),
        ("vpc-lattice-svcs:Port", &["443"]),
        ("vpc-lattice-svcs:RequestHeader/x-team", &["blue"]),
        ("vpc-lattice-svcs:RequestQueryString/tag", &["a", "b"]),
        ("aws:SourceIp", &["10.0.1.7"]),
        ("aws:PrincipalType", &["Anonymous"]),
    ])
}

const ROLE_SESSION: Caller<'static> =
    Caller::Principal { arn: "arn:aws:sts::111122223333:assumed-role/rates-client/s1", account: "111122223333" };
const USER: Caller<'static> = Caller::Principal { arn: "arn:aws:iam::111122223333:user/ana", account: "111122223333" };
const OTHER: Caller<'static> = Caller::Principal { arn: "arn:aws:iam::999988887777:user/eve", account: "999988887777" };

fn eval(policy: &str, caller: Caller<'_>, path: &str, keys: &Ctx) -> Decision {
    let policy = Policy::compile(policy).unwrap_or_else(|e| panic!("{policy}: {e}"));
    let resource = format!("{SVC}{path}");
    let decision = policy.evaluate(&Request { caller, action: "vpc-lattice-svcs:Invoke", resource: &resource, keys });
    // The narrowed form the proxy keeps per service says the same.
    let narrowed = policy.narrow("vpc-lattice-svcs:Invoke", SVC);
    assert_eq!(narrowed.evaluate(caller, path, keys), decision, "narrowed: {policy:?} {path}");
    decision
}

fn allow(extra: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"vpc-lattice-svcs:Invoke","Resource":"*"{extra}}}]}}"#
    )
}

#[test]
fn statements_principals_actions_resources() {
    use Decision::*;
    let k = base();
    let cases: &[(&str, Caller<'_>, &str, Decision)] = &[
        (&allow(""), Caller::Anonymous, "/", Allow),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"*","Resource":"*"}}"#,
            Caller::Anonymous,
            "/",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"*","Resource":"*"}}"#,
            Caller::Anonymous,
            "/",
            NoMatch,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"*","Resource":"*"}}"#,
            USER,
            "/",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"*","Resource":"*"}}"#,
            ROLE_SESSION,
            "/",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"*","Resource":"*"}}"#,
            OTHER,
            "/",
            NoMatch,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111122223333:role/rates-client"]},"Action":"*","Resource":"*"}}"#,
            ROLE_SESSION,
            "/",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111122223333:role/other"]},"Action":"*","Resource":"*"}}"#,
            ROLE_SESSION,
            "/",
            NoMatch,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/ana"},"Action":"*","Resource":"*"}}"#,
            USER,
            "/",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/ana"},"Action":"*","Resource":"*"}}"#,
            ROLE_SESSION,
            "/",
            NoMatch,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"vpc-lattice-svcs:*","Resource":"*"}}"#,
            USER,
            "/",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"VPC-LATTICE-SVCS:invoke","Resource":"*"}}"#,
            USER,
            "/",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"vpc-lattice-svcs:Connect","Resource":"*"}}"#,
            USER,
            "/",
            NoMatch,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","NotAction":"vpc-lattice-svcs:Connect","Resource":"*"}}"#,
            USER,
            "/",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*/rates"}}"#,
            USER,
            "/rates",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*/rates"}}"#,
            USER,
            "/rates/x",
            NoMatch,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*/rates*"}}"#,
            USER,
            "/rates/x",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*/rate?"}}"#,
            USER,
            "/rates",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*/RATES"}}"#,
            USER,
            "/rates",
            NoMatch,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","NotResource":"*/admin/*"}}"#,
            USER,
            "/admin/x",
            NoMatch,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","NotResource":"*/admin/*"}}"#,
            USER,
            "/rates",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:vpc-lattice:us-east-1:111122223333:service/svc-0123456789abcdef0/*"}}"#,
            USER,
            "/a",
            Allow,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:vpc-lattice:us-east-1:111122223333:service/svc-other/*"}}"#,
            USER,
            "/a",
            NoMatch,
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"},{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*/secret"}]}"#,
            USER,
            "/secret",
            Deny,
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"},{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*/secret"}]}"#,
            USER,
            "/open",
            Allow,
        ),
        (
            r#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"999988887777"},"Action":"*","Resource":"*"},{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}"#,
            OTHER,
            "/",
            Deny,
        ),
        (
            r#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"999988887777"},"Action":"*","Resource":"*"},{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}"#,
            Caller::Anonymous,
            "/",
            Allow,
        ),
        (r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*/x"}}"#, USER, "/y", NoMatch),
    ];
    for (i, (policy, caller, path, want)) in cases.iter().enumerate() {
        assert_eq!(eval(policy, *caller, path, &k), *want, "case {i}: {policy} {caller:?} {path}");
    }
}

#[test]
fn conditions() {
    use Decision::*;
    let k = base();
    let c = |cond: &str| allow(&format!(r#","Condition":{cond}"#));
    let cases: Vec<(String, Decision)> = vec![
        (c(r#"{"StringEquals":{"vpc-lattice-svcs:RequestMethod":"GET"}}"#), Allow),
        (c(r#"{"StringEquals":{"vpc-lattice-svcs:RequestMethod":["POST","PUT"]}}"#), NoMatch),
        (c(r#"{"StringEquals":{"vpc-lattice-svcs:RequestMethod":"get"}}"#), NoMatch),
        (c(r#"{"StringEqualsIgnoreCase":{"vpc-lattice-svcs:RequestMethod":"get"}}"#), Allow),
        (c(r#"{"StringNotEqualsIgnoreCase":{"vpc-lattice-svcs:RequestMethod":"get"}}"#), NoMatch),
        (c(r#"{"StringNotEquals":{"aws:PrincipalType":"Anonymous"}}"#), NoMatch),
        (c(r#"{"StringNotEquals":{"vpc-lattice-svcs:SourceVpc":"vpc-a"}}"#), Allow),
        (c(r#"{"StringLike":{"vpc-lattice-svcs:RequestHeader/x-team":"bl*"}}"#), Allow),
        (c(r#"{"StringNotLike":{"vpc-lattice-svcs:RequestHeader/x-team":"bl*"}}"#), NoMatch),
        (c(r#"{"StringEquals":{"vpc-lattice-svcs:RequestHeader/x-missing":"x"}}"#), NoMatch),
        (c(r#"{"StringNotEquals":{"vpc-lattice-svcs:RequestHeader/x-missing":"x"}}"#), Allow),
        (c(r#"{"StringEqualsIfExists":{"vpc-lattice-svcs:RequestHeader/x-missing":"x"}}"#), Allow),
        (c(r#"{"StringEqualsIfExists":{"vpc-lattice-svcs:RequestHeader/x-team":"red"}}"#), NoMatch),
        (c(r#"{"Null":{"vpc-lattice-svcs:RequestHeader/x-missing":"true"}}"#), Allow),
        (c(r#"{"Null":{"vpc-lattice-svcs:RequestHeader/x-team":"true"}}"#), NoMatch),
        (c(r#"{"Null":{"vpc-lattice-svcs:RequestHeader/x-team":"false"}}"#), Allow),
        (c(r#"{"NumericEquals":{"vpc-lattice-svcs:Port":"443"}}"#), Allow),
        (c(r#"{"NumericEquals":{"vpc-lattice-svcs:Port":443}}"#), Allow),
        (c(r#"{"NumericNotEquals":{"vpc-lattice-svcs:Port":"443"}}"#), NoMatch),
        (c(r#"{"NumericLessThan":{"vpc-lattice-svcs:Port":"1024"}}"#), Allow),
        (c(r#"{"NumericGreaterThan":{"vpc-lattice-svcs:Port":"1024"}}"#), NoMatch),
        (c(r#"{"NumericGreaterThanEquals":{"vpc-lattice-svcs:Port":"443"}}"#), Allow),
        (c(r#"{"NumericLessThanEquals":{"vpc-lattice-svcs:Port":"442"}}"#), NoMatch),
        (c(r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/16"}}"#), Allow),
        (c(r#"{"IpAddress":{"aws:SourceIp":["192.168.0.0/16","10.0.1.7"]}}"#), Allow),
        (c(r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/16"}}"#), NoMatch),
        (c(r#"{"IpAddress":{"aws:SourceIp":"10.1.0.0/16"}}"#), NoMatch),
        (c(r#"{"ForAnyValue:StringEquals":{"vpc-lattice-svcs:RequestQueryString/tag":["b","z"]}}"#), Allow),
        (c(r#"{"ForAllValues:StringEquals":{"vpc-lattice-svcs:RequestQueryString/tag":["a","b","c"]}}"#), Allow),
        (c(r#"{"ForAllValues:StringEquals":{"vpc-lattice-svcs:RequestQueryString/tag":["a"]}}"#), NoMatch),
        (c(r#"{"ForAllValues:StringEquals":{"vpc-lattice-svcs:RequestQueryString/none":["a"]}}"#), Allow),
        (c(r#"{"ForAnyValue:StringEquals":{"vpc-lattice-svcs:RequestQueryString/none":["a"]}}"#), NoMatch),
        // Negated with a set: ForAnyValue wants one value that matches none of the policy's,
        // ForAllValues every value so; of a missing key, ForAnyValue is false and ForAllValues true.
        (c(r#"{"ForAnyValue:StringNotEquals":{"vpc-lattice-svcs:RequestQueryString/tag":["a"]}}"#), Allow),
        (c(r#"{"ForAnyValue:StringNotEquals":{"vpc-lattice-svcs:RequestQueryString/tag":["a","b"]}}"#), NoMatch),
        (c(r#"{"ForAnyValue:StringNotEquals":{"vpc-lattice-svcs:RequestQueryString/none":["a"]}}"#), NoMatch),
        (c(r#"{"ForAllValues:StringNotEquals":{"vpc-lattice-svcs:RequestQueryString/tag":["z"]}}"#), Allow),
        (c(r#"{"ForAllValues:StringNotEquals":{"vpc-lattice-svcs:RequestQueryString/tag":["a"]}}"#), NoMatch),
        (c(r#"{"ForAllValues:StringNotEquals":{"vpc-lattice-svcs:RequestQueryString/none":["a"]}}"#), Allow),
        (c(r#"{"StringNotEquals":{"vpc-lattice-svcs:RequestQueryString/none":"a"}}"#), Allow),
        (c(r#"{"StringNotEqualsIfExists":{"vpc-lattice-svcs:RequestQueryString/none":"a"}}"#), Allow),
        (c(r#"{"StringEqualsIfExists":{"vpc-lattice-svcs:RequestQueryString/none":"a"}}"#), Allow),
        (
            c(r#"{"StringEquals":{"vpc-lattice-svcs:RequestMethod":"GET","vpc-lattice-svcs:SourceVpc":"vpc-a"}}"#),
            NoMatch,
        ),
        (
            c(
                r#"{"StringEquals":{"vpc-lattice-svcs:RequestMethod":"GET"},"StringLike":{"vpc-lattice-svcs:SourceVpc":"vpc-?"}}"#,
            ),
            Allow,
        ),
        (c(r#"{"ArnLike":{"vpc-lattice-svcs:ServiceArn":"arn:aws:vpc-lattice:*:*:service/*"}}"#), NoMatch),
        (c(r#"{"Bool":{"aws:SecureTransport":"true"}}"#), NoMatch),
    ];
    for (i, (policy, want)) in cases.iter().enumerate() {
        assert_eq!(eval(policy, Caller::Anonymous, "/", &k), *want, "case {i}: {policy}");
    }
    let mut k = base();
    k.0.insert("vpc-lattice-svcs:ServiceArn".into(), vec![SVC.into()]);
    k.0.insert("aws:SecureTransport".into(), vec!["true".into()]);
    assert_eq!(
        eval(
            &c(r#"{"ArnLike":{"vpc-lattice-svcs:ServiceArn":"arn:aws:vpc-lattice:*:*:service/*"}}"#),
            Caller::Anonymous,
            "/",
            &k
        ),
        Allow
    );
    assert_eq!(
        eval(
            &c(
                r#"{"ArnEquals":{"vpc-lattice-svcs:ServiceArn":"arn:aws:vpc-lattice:us-east-1:111122223333:service/svc-x"}}"#
            ),
            Caller::Anonymous,
            "/",
            &k
        ),
        NoMatch
    );
    assert_eq!(eval(&c(r#"{"Bool":{"aws:SecureTransport":true}}"#), Caller::Anonymous, "/", &k), Allow);
}

#[test]
fn documents_that_are_refused_say_why() {
    let refused = [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        (r#"{"Version":"2020-01-01","Statement":[]}"#, "Version"),
        (r#"{"Statement":[]}"#, "Statement"),
        (r#"{"Statement":{"Principal":"*","Action":"*","Resource":"*"}}"#, "Effect"),
        (r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#, "Principal"),
        (r#"{"Statement":{"Effect":"Allow","Principal":"*","Resource":"*"}}"#, "Action"),
        (r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*"}}"#, "Resource"),
        (r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","NotAction":"*","Resource":"*"}}"#, "both"),
        (r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"x"},"Action":"*","Resource":"*"}}"#, "Service"),
        (r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"*","Resource":"*"}}"#, "bob"),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":{"StringSort":{"a":"b"}}}}"#,
            "StringSort",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":{"NumericEquals":{"a":"x"}}}}"#,
            "not a valid value",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":{"IpAddress":{"a":"10.0.0.0/33"}}}}"#,
            "not a valid value",
        ),
        (r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Extra":1}}"#, "Extra"),
    ];
    for (doc, says) in refused {
        let e = Policy::compile(doc).expect_err(doc);
        assert!(e.0.contains(says), "{doc}: {e}");
    }
    let big = format!(
        r#"{{"Statement":{{"Effect":"Allow","Principal":"*","Action":"*","Resource":"{}"}}}}"#,
        "x".repeat(MAX_POLICY_CHARS)
    );
    assert!(Policy::compile(&big).expect_err("too big").0.contains("quota"));
}

#[test]
fn wildcards() {
    assert!(glob("*", "", false));
    assert!(glob("a*c", "abbbc", false));
    assert!(glob("a*b*c", "axxbyyc", false));
    assert!(!glob("a*b*c", "axxbyy", false));
    assert!(glob("a?c", "abc", false));
    assert!(!glob("a?c", "ac", false));
    assert!(glob("*/rates", "arn:x/svc-1/rates", false));
    assert!(glob("A*", "abc", true));
    assert!(!glob("A*", "abc", false));
    // The shortcuts: exact, and a trailing `*` (a prefix).
    assert!(glob("abc", "abc", false) && !glob("abc", "abcd", false) && !glob("abc", "ab", false));
    assert!(glob("ABC", "abc", true) && !glob("ABC", "abc", false));
    assert!(glob("arn:x/svc-1/*", "arn:x/svc-1/", false) && glob("arn:x/svc-1/*", "arn:x/svc-1/a/b", false));
    assert!(!glob("arn:x/svc-1/*", "arn:x/svc-1", false) && !glob("arn:x/svc-1/*", "arn:x/svc-2/", false));
    assert!(glob("café/*", "café/x", false) && !glob("café/*", "cafe/x", false));
    assert!(glob("é?", "éa", false) && glob("?é", "aé", false) && !glob("é?", "é", false));
}

#[test]
fn condition_keys_are_read_once_without_case() {
    let kind = |name: &str| Key::parse(name).kind;
    assert_eq!(kind("aws:SourceIp"), KeyKind::SourceIp);
    assert_eq!(kind("AWS:sourceip"), KeyKind::SourceIp);
    assert_eq!(kind("aws:PrincipalOrgID"), KeyKind::PrincipalOrgId);
    assert_eq!(kind("aws:principaltag/Team"), KeyKind::PrincipalTag("Team".into()));
    assert_eq!(kind("vpc-lattice-svcs:RequestHeader/X-Team"), KeyKind::RequestHeader("x-team".into()));
    assert_eq!(kind("VPC-Lattice-Svcs:requestquerystring/Tag"), KeyKind::RequestQueryString("Tag".into()));
    assert_eq!(kind("vpc-lattice-svcs:SourceVpcOwnerAccount"), KeyKind::SourceVpcOwnerAccount);
    assert_eq!(kind("vpc-lattice-svcs:Nothing"), KeyKind::Other);
    assert_eq!(kind("ec2:SourceVpc"), KeyKind::Other);
    assert_eq!(kind("SourceVpc"), KeyKind::Other);
    assert_eq!(Key::parse("aws:SourceIp").name, "aws:SourceIp");
}

#[test]
fn a_role_principal_matches_the_role_and_its_sessions_only() {
    let policy = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/rates-client"},
        "Action":"*","Resource":"*"}]}"#;
    let role = Caller::Principal { arn: "arn:aws:iam::111122223333:role/rates-client", account: "111122223333" };
    let longer = Caller::Principal { arn: "arn:aws:iam::111122223333:role/rates-client2", account: "111122223333" };
    let other = Caller::Principal { arn: "arn:aws:sts::111122223333:assumed-role/rates/s1", account: "111122223333" };
    assert_eq!(eval(policy, ROLE_SESSION, "/", &base()), Decision::Allow);
    assert_eq!(eval(policy, role, "/", &base()), Decision::Allow);
    assert_eq!(eval(policy, longer, "/", &base()), Decision::NoMatch);
    assert_eq!(eval(policy, other, "/", &base()), Decision::NoMatch);
    assert_eq!(eval(policy, USER, "/", &base()), Decision::NoMatch);
}

#[test]
fn a_narrowed_policy_keeps_only_what_can_apply_to_its_service_and_action() {
    let other = "arn:aws:vpc-lattice:us-east-1:111122223333:service/svc-0fffffffffffffff0";
    let statement = |effect: &str, action: &str, resource: &str| {
        format!(r#"{{"Effect":"{effect}","Principal":"*","Action":"{action}",{resource}}}"#)
    };
    let policy = |statements: &[String]| {
        Policy::compile(&format!(r#"{{"Statement":[{}]}}"#, statements.join(","))).expect("compiles")
    };
    let kept = |statements: &[String]| policy(statements).narrow("vpc-lattice-svcs:Invoke", SVC).len();
    // Other actions, other services, the service's ARN without a path: nothing can apply.
    assert_eq!(kept(&[statement("Allow", "vpc-lattice-svcs:Connect", r#""Resource":"*""#)]), 0);
    assert_eq!(kept(&[statement("Allow", "VPC-Lattice-Svcs:invoke", r#""Resource":"*""#)]), 1);
    assert_eq!(kept(&[statement("Allow", "*", &format!(r#""Resource":"{other}/*""#))]), 0);
    assert_eq!(kept(&[statement("Allow", "*", &format!(r#""Resource":"{SVC}""#))]), 0);
    assert_eq!(kept(&[statement("Deny", "*", &format!(r#""NotResource":"{SVC}*""#))]), 0);
    assert_eq!(kept(&[statement("Deny", "*", &format!(r#""NotResource":"{other}/*""#))]), 1);
    assert_eq!(kept(&[statement("Allow", "*", &format!(r#""Resource":["{other}/*","{SVC}/a"]"#))]), 1);

    // Denies decide before allows whatever their order, and the path is what is left.
    let k = base();
    let p = policy(&[
        statement("Allow", "*", &format!(r#""Resource":"{SVC}/*""#)),
        statement("Deny", "*", &format!(r#""Resource":["{SVC}/admin/*","{SVC}/secret"]"#)),
        statement("Deny", "*", r#""Resource":"arn:aws:vpc-lattice:*:*:service/*/glob/?""#),
        statement("Allow", "*", &format!(r#""NotResource":"{SVC}/public/*""#)),
    ]);
    let n = p.narrow("vpc-lattice-svcs:Invoke", SVC);
    for (path, want) in [
        ("/", Decision::Allow),
        ("", Decision::Allow),
        ("/admin/x", Decision::Deny),
        ("/admin", Decision::Allow),
        ("/secret", Decision::Deny),
        ("/secret/", Decision::Allow),
        ("/glob/a", Decision::Deny),
        ("/glob/ab", Decision::Allow),
    ] {
        assert_eq!(n.evaluate(Caller::Anonymous, path, &k), want, "{path}");
        let resource = format!("{SVC}{}", if path.is_empty() { "/" } else { path });
        let request =
            Request { caller: Caller::Anonymous, action: "vpc-lattice-svcs:Invoke", resource: &resource, keys: &k };
        assert_eq!(p.evaluate(&request), want, "{path}");
    }
}
