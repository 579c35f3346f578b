//! Checking rule actions and matches as the API takes them (listeners' default actions too):
//! shapes and ranges first ([`parse_action`], [`check_match`]), then what the actions point at
//! ([`check_targets`]: the target groups exist and suit the listener's protocol). Owns only
//! checking; recording who uses a target group is [`super::refs`]'s job.

use std::collections::BTreeSet;

use trellis_model::Kind;
use trellis_model::lattice::{
    ForwardAction, HeaderMatchType, ListenerProtocol, PathMatchType, RuleAction, RuleMatch, TargetGroup,
    WeightedTargetGroup,
};

use super::super::{ApiError, Req};
use crate::repo;

/// The weight a lone target group gets when the caller gave none (the API reference: "If
/// there's only one target group specified, then the default value is 100").
const LONE_WEIGHT: u32 = 100;

/// Checks an action's shape and returns it as stored: target groups by ID, weights filled in.
/// `field` names the action member (`defaultAction`, `action`, `rules[0].action`).
pub(crate) fn parse_action(req: &Req<'_>, field: &str, action: &RuleAction) -> Result<RuleAction, ApiError> {
    match action {
        RuleAction::FixedResponse(fixed) => {
            if !matches!(fixed.status_code, 404 | 500) {
                return Err(ApiError::field(
                    &format!("{field}.fixedResponse.statusCode"),
                    "must be 404 or 500, the only fixed responses Lattice supports",
                ));
            }
            Ok(action.clone())
        }
        RuleAction::Forward(forward) => {
            let list = format!("{field}.forward.targetGroups");
            let count = forward.target_groups.len();
            if !(1..=10).contains(&count) {
                return Err(ApiError::field(&list, "must list 1 to 10 target groups"));
            }
            let mut seen = BTreeSet::new();
            let mut target_groups = Vec::with_capacity(count);
            for (i, wtg) in forward.target_groups.iter().enumerate() {
                let item = format!("{list}[{i}]");
                let id = req.resolve(
                    &wtg.target_group_identifier,
                    &format!("{item}.targetGroupIdentifier"),
                    Kind::TargetGroup,
                )?;
                if !seen.insert(id.clone()) {
                    return Err(ApiError::field(&item, format!("target group {id} is listed twice")));
                }
                let weight = match wtg.weight {
                    Some(w) if w > 999 => {
                        return Err(ApiError::field(&format!("{item}.weight"), "must be from 0 to 999"));
                    }
                    Some(w) => w,
                    None if count > 1 => {
                        return Err(ApiError::field(
                            &format!("{item}.weight"),
                            "is required when forwarding to more than one target group",
                        ));
                    }
                    None => LONE_WEIGHT,
                };
                target_groups.push(WeightedTargetGroup { target_group_identifier: id, weight: Some(weight) });
            }
            Ok(RuleAction::Forward(ForwardAction { target_groups }))
        }
    }
}

/// Checks that a parsed action's target groups exist and suit a listener of `protocol`:
/// TLS_PASSTHROUGH listeners forward only, and only to TCP target groups; TCP target groups serve
/// only TLS_PASSTHROUGH listeners; HTTP2 and GRPC target groups need an HTTPS listener.
pub(crate) async fn check_targets(
    req: &Req<'_>,
    field: &str,
    action: &RuleAction,
    protocol: ListenerProtocol,
) -> Result<(), ApiError> {
    let forward = match action {
        RuleAction::FixedResponse(_) if protocol == ListenerProtocol::TlsPassthrough => {
            return Err(ApiError::field(
                &format!("{field}.fixedResponse"),
                "TLS_PASSTHROUGH listeners can only forward to TCP target groups",
            ));
        }
        RuleAction::FixedResponse(_) => return Ok(()),
        RuleAction::Forward(forward) => forward,
    };
    for (i, wtg) in forward.target_groups.iter().enumerate() {
        let id = &wtg.target_group_identifier;
        let tg = repo::load::<TargetGroup>(req.store(), &req.keys.res(Kind::TargetGroup, id))
            .await?
            .ok_or_else(|| ApiError::not_found(Kind::TargetGroup, id))?
            .value;
        let config = tg.config.as_ref();
        let tg_protocol = config.and_then(|c| c.protocol.as_deref());
        let version = config.and_then(|c| c.protocol_version.as_deref());
        let why = match protocol {
            ListenerProtocol::TlsPassthrough if tg_protocol != Some("TCP") => {
                Some("TLS_PASSTHROUGH listeners can only forward to TCP target groups")
            }
            ListenerProtocol::Http | ListenerProtocol::Https if tg_protocol == Some("TCP") => {
                Some("TCP target groups can only be used by TLS_PASSTHROUGH listeners")
            }
            ListenerProtocol::Http if matches!(version, Some("HTTP2" | "GRPC")) => {
                Some("HTTP2 and GRPC target groups can only be used by HTTPS listeners")
            }
            _ => None,
        };
        if let Some(why) = why {
            return Err(ApiError::field(
                &format!("{field}.forward.targetGroups[{i}].targetGroupIdentifier"),
                format!("{id}: {why}"),
            ));
        }
    }
    Ok(())
}

/// The IDs of the target groups a (parsed) action forwards to.
pub(crate) fn target_groups(action: &RuleAction) -> BTreeSet<String> {
    match action {
        RuleAction::FixedResponse(_) => BTreeSet::new(),
        RuleAction::Forward(f) => f.target_groups.iter().map(|t| t.target_group_identifier.clone()).collect(),
    }
}

/// Checks a rule match (spec §1.9): at least one criterion; a method of 1–16 token characters;
/// a path of 1–200 characters starting with `/`; 1–5 header matches with names of 1–100 and
/// values of 1–200 characters.
pub(crate) fn check_match(field: &str, rule_match: &RuleMatch) -> Result<(), ApiError> {
    let RuleMatch::HttpMatch(http) = rule_match;
    let field = format!("{field}.httpMatch");
    if http.method.is_none() && http.path_match.is_none() && http.header_matches.is_none() {
        return Err(ApiError::field(&field, "must give at least one of method, pathMatch and headerMatches"));
    }
    if let Some(method) = &http.method
        && (method.is_empty() || method.len() > 16 || !method.bytes().all(is_token_byte))
    {
        return Err(ApiError::field(&format!("{field}.method"), "must be an HTTP method of 1 to 16 characters"));
    }
    if let Some(path) = &http.path_match {
        let (member, value) = match &path.match_type {
            PathMatchType::Exact(v) => ("exact", v),
            PathMatchType::Prefix(v) => ("prefix", v),
        };
        if !is_path(value) {
            return Err(ApiError::field(
                &format!("{field}.pathMatch.match.{member}"),
                "must be 1 to 200 characters, start with / and match /[a-zA-Z0-9@:%_+.~#?&/=-]*",
            ));
        }
    }
    if let Some(headers) = &http.header_matches {
        let list = format!("{field}.headerMatches");
        if !(1..=5).contains(&headers.len()) {
            return Err(ApiError::field(&list, "must hold 1 to 5 header matches"));
        }
        for (i, header) in headers.iter().enumerate() {
            let name = &header.name;
            if name.is_empty() || name.len() > 100 || !name.bytes().all(is_token_byte) {
                return Err(ApiError::field(
                    &format!("{list}[{i}].name"),
                    "must be a header name of 1 to 100 characters",
                ));
            }
            let (member, value) = match &header.match_type {
                HeaderMatchType::Contains(v) => ("contains", v),
                HeaderMatchType::Exact(v) => ("exact", v),
                HeaderMatchType::Prefix(v) => ("prefix", v),
            };
            let len = value.chars().count();
            if !(1..=200).contains(&len) {
                return Err(ApiError::field(&format!("{list}[{i}].match.{member}"), "must be 1 to 200 characters"));
            }
        }
    }
    Ok(())
}

/// Checks a priority: 1–2000.
pub(crate) fn check_priority(field: &str, priority: i64) -> Result<u32, ApiError> {
    match u32::try_from(priority) {
        Ok(p @ 1..=2000) => Ok(p),
        _ => Err(ApiError::field(field, "must be from 1 to 2000")),
    }
}

/// An RFC 9110 `tchar`: what methods and header names are made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_path(value: &str) -> bool {
    (1..=200).contains(&value.len())
        && value.starts_with('/')
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"@:%_+.~#?&/=-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(json: serde_json::Value) -> RuleMatch {
        serde_json::from_value(serde_json::json!({ "httpMatch": json })).unwrap()
    }

    #[test]
    fn matches() {
        let ok = [
            serde_json::json!({"method": "GET"}),
            serde_json::json!({"pathMatch": {"match": {"prefix": "/"}}}),
            serde_json::json!({"pathMatch": {"match": {"exact": "/a/b?c=d&e=%20"}}, "method": "PATCH"}),
            serde_json::json!({"headerMatches": [{"name": "x-a", "match": {"contains": "v"}}]}),
        ];
        for m in ok {
            assert!(check_match("match", &http(m.clone())).is_ok(), "{m}");
        }
        let five: Vec<_> =
            (0..6).map(|i| serde_json::json!({"name": format!("h{i}"), "match": {"exact": "v"}})).collect();
        let bad = [
            (serde_json::json!({}), "match.httpMatch"),
            (serde_json::json!({"method": ""}), "match.httpMatch.method"),
            (serde_json::json!({"method": "GET POST"}), "match.httpMatch.method"),
            (serde_json::json!({"method": "A".repeat(17)}), "match.httpMatch.method"),
            (serde_json::json!({"pathMatch": {"match": {"prefix": "api"}}}), "match.httpMatch.pathMatch.match.prefix"),
            (serde_json::json!({"pathMatch": {"match": {"exact": "/a b"}}}), "match.httpMatch.pathMatch.match.exact"),
            (
                serde_json::json!({"pathMatch": {"match": {"exact": format!("/{}", "a".repeat(200))}}}),
                "match.httpMatch.pathMatch.match.exact",
            ),
            (serde_json::json!({"headerMatches": []}), "match.httpMatch.headerMatches"),
            (serde_json::json!({"headerMatches": five}), "match.httpMatch.headerMatches"),
            (
                serde_json::json!({"headerMatches": [{"name": "", "match": {"exact": "v"}}]}),
                "match.httpMatch.headerMatches[0].name",
            ),
            (
                serde_json::json!({"headerMatches": [{"name": "a", "match": {"prefix": ""}}]}),
                "match.httpMatch.headerMatches[0].match.prefix",
            ),
        ];
        for (m, field) in bad {
            match check_match("match", &http(m.clone())) {
                Err(ApiError::Validation { field_list, .. }) => assert_eq!(field_list[0].0, field, "{m}"),
                other => panic!("{m}: {other:?}"),
            }
        }
    }

    #[test]
    fn priorities() {
        assert_eq!(check_priority("priority", 1).unwrap(), 1);
        assert_eq!(check_priority("priority", 2000).unwrap(), 2000);
        assert!(check_priority("priority", 0).is_err());
        assert!(check_priority("priority", 2001).is_err());
        assert!(check_priority("priority", -1).is_err());
    }
}
