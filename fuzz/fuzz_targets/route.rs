//! Rule matching (crates/model/src/route.rs): rule matches as `CreateRule` receives them (JSON
//! `HttpMatch`), against a request's method, path and headers as a client sends them; and the
//! weighted pick of a forward action.
//!
//! Input: line 1 is a JSON `HttpMatch` or a list of them (the listener's rules, in order);
//! line 2 is `METHOD path?query`; then headers as `name: value`.
//! Checked: `find` takes the first rule `matches` accepts; a match honours the method and a
//! case-sensitive path exactly; a weighted pick never lands on weight 0.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_model::lattice::{HttpMatch, ListenerProtocol, PathMatchType};
use trellis_model::route;
use trellis_model::snapshot::{Action, ListenerView, RuleView, WeightedTarget};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(rules) = lines.next() else { return };
    let matchers: Vec<HttpMatch> = match serde_json::from_slice::<serde_json::Value>(rules) {
        Ok(list @ serde_json::Value::Array(_)) => match serde_json::from_value(list) {
            Ok(list) => list,
            Err(_) => return,
        },
        Ok(one) => match serde_json::from_value(one) {
            Ok(one) => vec![one],
            Err(_) => return,
        },
        Err(_) => return,
    };
    let request_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let (method, path) = request_line.split_once(' ').unwrap_or((&request_line, "/"));
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            Some((String::from_utf8_lossy(&l[..colon]).trim().to_owned(), l[colon + 1..].trim_ascii().to_vec()))
        })
        .collect();
    let headers = headers.as_slice();

    let bare_path = path.split_once('?').map_or(path, |(p, _)| p);
    for m in &matchers {
        if !route::matches(m, method, path, headers) {
            continue;
        }
        if let Some(want) = &m.method {
            assert_eq!(want, method);
        }
        if let Some(p) = &m.path_match
            && p.case_sensitive != Some(false)
        {
            match &p.match_type {
                PathMatchType::Exact(exact) => assert_eq!(exact, bare_path),
                PathMatchType::Prefix(prefix) => assert!(bare_path.starts_with(prefix.as_str())),
            }
        }
    }

    let weights: Vec<u32> = rules.iter().take(4).map(|&b| u32::from(b) * 4).collect();
    let forward = Action::Forward(
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| WeightedTarget { target_group_id: format!("tg-{i}"), weight })
            .collect(),
    );
    let listener = ListenerView {
        id: "listener-0123456789abcdef0".into(),
        protocol: ListenerProtocol::Http,
        port: 80,
        rules: matchers
            .iter()
            .enumerate()
            .map(|(i, m)| RuleView {
                id: format!("rule-{i}"),
                priority: u32::try_from(i).unwrap_or(u32::MAX),
                matcher: m.clone(),
                action: Action::Fixed(200 + u16::try_from(i % 100).unwrap_or(0)),
            })
            .collect(),
        default_action: forward.clone(),
    };
    let want = listener.rules.iter().find(|r| route::matches(&r.matcher, method, path, headers)).map(|r| &r.action);
    assert_eq!(route::find(&listener, method, path, headers), want.unwrap_or(&forward));

    let Action::Forward(targets) = &forward else { return };
    let roll = data.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    match route::pick_weighted(targets, roll) {
        Some(t) => assert!(t.weight > 0),
        None => assert!(weights.iter().all(|&w| w == 0)),
    }
});
