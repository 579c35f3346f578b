//! Table tests of rule matching, rule order and weighted picks.

use super::*;
use crate::lattice::ListenerProtocol;
use crate::snapshot::RuleView;

type Headers<'a> = [(&'a str, &'a [u8])];

/// (kind, pattern, caseSensitive, value, expected).
type HeaderCase = (&'static str, &'static str, Option<bool>, &'static [u8], bool);

fn path(kind: &str, value: &str, case_sensitive: Option<bool>) -> HttpMatch {
    let match_type = match kind {
        "exact" => PathMatchType::Exact(value.into()),
        _ => PathMatchType::Prefix(value.into()),
    };
    HttpMatch { path_match: Some(PathMatch { match_type, case_sensitive }), ..HttpMatch::default() }
}

fn header(name: &str, kind: &str, value: &str, case_sensitive: Option<bool>) -> HeaderMatch {
    let match_type = match kind {
        "exact" => HeaderMatchType::Exact(value.into()),
        "prefix" => HeaderMatchType::Prefix(value.into()),
        _ => HeaderMatchType::Contains(value.into()),
    };
    HeaderMatch { name: name.into(), match_type, case_sensitive }
}

fn headers_only(list: Vec<HeaderMatch>) -> HttpMatch {
    HttpMatch { header_matches: Some(list), ..HttpMatch::default() }
}

fn wt(id: &str, weight: u32) -> WeightedTarget {
    WeightedTarget { target_group_id: id.into(), weight }
}

fn listener(rules: Vec<(u32, HttpMatch, u16)>) -> ListenerView {
    ListenerView {
        id: "listener-0".into(),
        protocol: ListenerProtocol::Http,
        port: 80,
        rules: rules
            .into_iter()
            .map(|(priority, matcher, status)| RuleView {
                id: format!("rule-{priority}"),
                priority,
                matcher,
                action: Action::Fixed(status),
            })
            .collect(),
        default_action: Action::Forward(vec![wt("tg-default", 100)]),
    }
}

#[test]
fn method_is_exact_and_case_sensitive() {
    let m = HttpMatch { method: Some("GET".into()), ..HttpMatch::default() };
    let none: &Headers<'_> = &[];
    for (method, want) in [("GET", true), ("get", false), ("POST", false), ("GETX", false), ("", false)] {
        assert_eq!(matches(&m, method, "/", none), want, "{method}");
    }
    let custom = HttpMatch { method: Some("PURGE".into()), ..HttpMatch::default() };
    assert!(matches(&custom, "PURGE", "/", none));
}

#[test]
fn path_matches_every_kind_and_case_option() {
    let none: &Headers<'_> = &[];
    let table = [
        // (kind, pattern, caseSensitive, request path, expected)
        ("exact", "/api", None, "/api", true),
        ("exact", "/api", None, "/api/", false),
        ("exact", "/api", None, "/API", false),
        ("exact", "/api", Some(true), "/API", false),
        ("exact", "/api", Some(false), "/API", true),
        ("exact", "/api", None, "/ap", false),
        ("exact", "/api", None, "/api?x=1", true),
        ("exact", "/a?b", None, "/a?b", false),
        ("prefix", "/api", None, "/api", true),
        ("prefix", "/api", None, "/api/v1", true),
        ("prefix", "/api", None, "/apix", true),
        ("prefix", "/api", None, "/ap", false),
        ("prefix", "/api", None, "/Api/v1", false),
        ("prefix", "/api", Some(false), "/Api/v1", true),
        ("prefix", "/api", Some(false), "/x/api", false),
        ("prefix", "/api/v1", None, "/api?/v1", false),
        ("prefix", "/", None, "/", true),
        ("prefix", "/ÄPI", Some(false), "/äPI", false),
        ("prefix", "/ÄPI", Some(false), "/Äpi/x", true),
    ];
    for (kind, pattern, cs, req, want) in table {
        let m = path(kind, pattern, cs);
        assert_eq!(matches(&m, "GET", req, none), want, "{kind} {pattern:?} cs={cs:?} on {req:?}");
    }
}

#[test]
fn header_matches_every_kind_and_case_option() {
    let table: &[HeaderCase] = &[
        ("exact", "Blue", None, b"blue", true),
        ("exact", "Blue", None, b"BLUE", true),
        ("exact", "Blue", Some(false), b"bLuE", true),
        ("exact", "Blue", Some(true), b"blue", false),
        ("exact", "Blue", Some(true), b"Blue", true),
        ("exact", "Blue", None, b"Blue ", false),
        ("exact", "Blue", None, b"Blu", false),
        ("prefix", "Mozilla/", None, b"mozilla/5.0", true),
        ("prefix", "Mozilla/", Some(true), b"mozilla/5.0", false),
        ("prefix", "Mozilla/", Some(true), b"Mozilla/5.0", true),
        ("prefix", "Mozilla/", None, b"Mozill", false),
        ("prefix", "Mozilla/", None, b"x Mozilla/", false),
        ("contains", "beta", None, b"app-BETA-1", true),
        ("contains", "beta", Some(true), b"app-BETA-1", false),
        ("contains", "beta", Some(true), b"app-beta-1", true),
        ("contains", "beta", None, b"beta", true),
        ("contains", "beta", None, b"bet", false),
        ("contains", "beta", None, b"bebetta", false),
        ("contains", "aab", None, b"aaaab", true),
        ("contains", "abab", None, b"abaabab", true),
        ("contains", "abcabd", None, b"abcabcabd", true),
        ("contains", "abcabd", None, b"abcabcab", false),
        ("contains", "beta", None, b"\xff\xfebeta\x80", true),
        ("exact", "caf\u{e9}", Some(true), "caf\u{e9}".as_bytes(), true),
        ("exact", "caf\u{e9}", None, b"caf\xe9", false),
    ];
    for &(kind, pattern, cs, value, want) in table {
        let m = headers_only(vec![header("X-Flavor", kind, pattern, cs)]);
        let hs: &Headers<'_> = &[("x-flavor", value)];
        assert_eq!(matches(&m, "GET", "/", hs), want, "{kind} {pattern:?} cs={cs:?} on {value:?}");
    }
}

#[test]
fn header_names_are_case_insensitive_and_absent_headers_fail() {
    let m = headers_only(vec![header("X-Env", "exact", "prod", None)]);
    for (name, want) in [("x-env", true), ("X-ENV", true), ("x-envx", false), ("env", false)] {
        let hs: &Headers<'_> = &[(name, b"prod")];
        assert_eq!(matches(&m, "GET", "/", hs), want, "{name}");
    }
    let none: &Headers<'_> = &[];
    assert!(!matches(&m, "GET", "/", none));
}

#[test]
fn a_multi_valued_header_matches_if_any_value_does() {
    let m = headers_only(vec![header("accept", "prefix", "application/json", None)]);
    let hs: &Headers<'_> = &[("accept", b"text/html"), ("Accept", b"application/json; q=0.9")];
    assert!(matches(&m, "GET", "/", hs));
    let hs: &Headers<'_> = &[("accept", b"text/html"), ("accept", b"image/png")];
    assert!(!matches(&m, "GET", "/", hs));
}

#[test]
fn every_criterion_must_hold() {
    let m = HttpMatch {
        method: Some("POST".into()),
        path_match: path("prefix", "/orders", None).path_match,
        header_matches: Some(vec![
            header("x-a", "exact", "1", None),
            header("x-b", "contains", "two", None),
            header("x-c", "prefix", "3", Some(true)),
        ]),
    };
    let all: &Headers<'_> = &[("x-a", b"1"), ("x-b", b"one-TWO"), ("x-c", b"3x")];
    assert!(matches(&m, "POST", "/orders/7?q", all));
    assert!(!matches(&m, "GET", "/orders/7", all), "method");
    assert!(!matches(&m, "POST", "/order", all), "path");
    for missing in 0..3 {
        let some: Vec<(&str, &[u8])> = all.iter().enumerate().filter(|(i, _)| *i != missing).map(|(_, h)| *h).collect();
        assert!(!matches(&m, "POST", "/orders", some.as_slice()), "without header {missing}");
    }
    // A match with no criteria (never stored by the API) matches everything.
    let none: &Headers<'_> = &[];
    assert!(matches(&HttpMatch::default(), "GET", "/", none));
    assert!(matches(&headers_only(Vec::new()), "GET", "/", none));
}

#[test]
fn find_takes_the_first_matching_rule_else_the_default() {
    let l = listener(vec![
        (1, path("exact", "/admin", None), 404),
        (5, path("prefix", "/a", None), 500),
        (9, HttpMatch { method: Some("DELETE".into()), ..HttpMatch::default() }, 404),
    ]);
    let none: &Headers<'_> = &[];
    let table: &[(&str, &str, &Action)] = &[
        ("GET", "/admin", &Action::Fixed(404)),
        ("GET", "/admin?debug", &Action::Fixed(404)),
        ("GET", "/admin/x", &Action::Fixed(500)),
        ("DELETE", "/about", &Action::Fixed(500)),
        ("DELETE", "/", &Action::Fixed(404)),
        ("GET", "/", &l.default_action),
        ("GET", "/b?/a", &l.default_action),
    ];
    for &(method, p, want) in table {
        assert_eq!(find(&l, method, p, none), want, "{method} {p}");
    }
    let empty = listener(Vec::new());
    assert_eq!(find(&empty, "GET", "/", none), &empty.default_action);
}

#[test]
fn weighted_picks_are_proportional_and_skip_zero_weights() {
    let tgs = [wt("tg-a", 10), wt("tg-zero", 0), wt("tg-b", 20)];
    // u64::MAX % 30 == 15.
    let table = [(0, "tg-a"), (9, "tg-a"), (10, "tg-b"), (29, "tg-b"), (30, "tg-a"), (u64::MAX, "tg-b")];
    for (roll, want) in table {
        assert_eq!(pick_weighted(&tgs, roll).map(|t| t.target_group_id.as_str()), Some(want), "roll {roll}");
    }
    let mut counts = [0u32; 3];
    for roll in 0..3000u64 {
        let t = pick_weighted(&tgs, roll).unwrap();
        counts[tgs.iter().position(|x| x == t).unwrap()] += 1;
    }
    assert_eq!(counts, [1000, 0, 2000]);
    assert_eq!(pick_weighted(&[wt("tg-a", 0), wt("tg-b", 0)], 7), None);
    assert_eq!(pick_weighted(&[], 7), None);
    let lone = [wt("tg-one", 100)];
    assert!((0..200).all(|r| pick_weighted(&lone, r) == Some(&lone[0])));
    let max = [wt("tg-a", u32::MAX), wt("tg-b", u32::MAX)];
    assert_eq!(pick_weighted(&max, u64::from(u32::MAX)).map(|t| t.target_group_id.as_str()), Some("tg-b"));
}

#[test]
fn long_hostile_values_are_searched_in_linear_time() {
    // KMP: a quadratic search would need ~200 × 64 Ki comparisons per value here.
    let hay = vec![b'a'; 64 * 1024];
    let needle = format!("{}b", "a".repeat(199));
    let m = headers_only(vec![header("x", "contains", &needle, None)]);
    let hs: &Headers<'_> = &[("x", &hay)];
    assert!(!matches(&m, "GET", "/", hs));
    let long = "a".repeat(300);
    let m = headers_only(vec![header("x", "contains", &long, Some(true))]);
    assert!(matches(&m, "GET", "/", hs), "needles past the stack table fall back");
}
