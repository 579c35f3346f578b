//! Name rules for Lattice resources (spec §2.2): lowercase letters, digits and hyphens, no
//! hyphen first, last or doubled, a length range and a reserved prefix per kind.

use crate::Kind;

/// Checks a resource name; `Err` carries the message a `ValidationException` should show.
pub fn check(kind: Kind, name: &str) -> Result<(), String> {
    let (min, max, reserved) = match kind {
        Kind::ServiceNetwork => (3, 63, None),
        Kind::Service => (3, 40, Some("svc-")),
        Kind::Listener => (3, 63, Some("listener-")),
        Kind::Rule => (3, 63, Some("rule-")),
        Kind::TargetGroup => (3, 128, Some("tg-")),
        _ => (1, 255, None),
    };
    let len = name.chars().count();
    if len < min || len > max {
        return Err(format!("must be between {min} and {max} characters long"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("must contain only lowercase letters, numbers and hyphens".to_owned());
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err("must not begin or end with a hyphen or contain two consecutive hyphens".to_owned());
    }
    if let Some(prefix) = reserved.filter(|p| name.starts_with(p)) {
        return Err(format!("must not begin with \"{prefix}\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        let cases = [
            (Kind::Service, "web", true),
            (Kind::Service, "we", false),
            (Kind::Service, "svc-web", false),
            (Kind::Service, "Web", false),
            (Kind::Service, "-web", false),
            (Kind::Service, "web-", false),
            (Kind::Service, "w--b", false),
            (Kind::Service, &"a".repeat(40), true),
            (Kind::Service, &"a".repeat(41), false),
            (Kind::ServiceNetwork, &"a".repeat(63), true),
            (Kind::TargetGroup, "tg-x", false),
            (Kind::TargetGroup, &"a".repeat(128), true),
            (Kind::Listener, "listener-1", false),
            (Kind::Rule, "rule-1", false),
            (Kind::Rule, "my_rule", false),
        ];
        for (kind, name, ok) in cases {
            assert_eq!(check(kind, name).is_ok(), ok, "{kind} {name}");
        }
    }
}
