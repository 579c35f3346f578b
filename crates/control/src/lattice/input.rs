//! Reading requests: JSON bodies into input shapes (failures become `ValidationException` with
//! the offending field), identifiers given as ID or ARN, and member checks shared by handlers.

use serde::de::DeserializeOwned;
use trellis_model::{Arn, Kind};

use super::{ApiError, Req};

/// Why a JSON body did not read as an operation's input.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The text is not JSON.
    Syntax(String),
    /// The JSON does not fit the shape: the member at fault (dotted path) and why.
    Field { field: String, message: String },
}

/// Parses a JSON body; an empty body reads as `{}`. Text that is not JSON is `cannotParse`;
/// JSON that does not fit the shape is `fieldValidationFailed`, naming the member at fault.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_json(body).map_err(|e| match e {
        BodyError::Syntax(message) => ApiError::Validation {
            message: format!("Unable to parse the request body: {message}"),
            reason: "cannotParse",
            field_list: Vec::new(),
        },
        BodyError::Field { field, message } => ApiError::field(&field, message),
    })
}

/// Parses a JSON body (an empty body reads as `{}`) into `T`, naming the member at fault when
/// it does not fit. Every JSON API (Lattice, ECS) reads its input through here.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    // Two steps, so that a shape error inside well-formed JSON (`"defaultAction": {}`) is never
    // mistaken for a syntax error.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| BodyError::Syntax(e.to_string()))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let text = e.into_inner().to_string();
        // serde reports a missing member at its parent's path; name the member itself.
        let field = match text.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            Some(member) if path == "." => member.to_owned(),
            Some(member) => format!("{path}.{member}"),
            None => path,
        };
        BodyError::Field { field, message: text }
    })
}

/// Drops `null` members at every depth.
pub(crate) fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

impl Req<'_> {
    /// Resolves the `index`th path identifier, given as an ID or ARN of `kind`, to the ID.
    pub(crate) fn path_id(&self, index: usize, field: &str, kind: Kind) -> Result<String, ApiError> {
        let raw = self.path.get(index).map(String::as_str).unwrap_or_default();
        self.resolve(raw, field, kind)
    }

    /// Resolves an identifier (ID or ARN of `kind`) to the ID. An ARN of another region or
    /// account names nothing here: `ResourceNotFoundException`.
    pub(crate) fn resolve(&self, ident: &str, field: &str, kind: Kind) -> Result<String, ApiError> {
        if kind.is_id(ident) {
            return Ok(ident.to_owned());
        }
        let malformed = || ApiError::field(field, format!("{ident:?} is not a valid {} ID or ARN", kind.prefix()));
        let arn = Arn::parse(ident).ok_or_else(malformed)?;
        let path = arn.lattice_path().ok_or_else(malformed)?;
        let (last_kind, id) = *path.last().ok_or_else(malformed)?;
        if arn.service != "vpc-lattice" || last_kind != kind || !kind.is_id(id) {
            return Err(malformed());
        }
        if arn.region != self.ctx.region || arn.account != self.ctx.account {
            return Err(ApiError::not_found(kind, ident));
        }
        Ok(id.to_owned())
    }
}

impl Req<'_> {
    /// The index key that will make `name` taken among `kind`s in `scope` (empty: the
    /// account), if nobody holds it yet; `ConflictException` naming the holder otherwise. The
    /// caller writes the key with `Tx::create_index`, which fails if it was taken meanwhile.
    pub(crate) async fn free_name(&self, kind: Kind, scope: &str, name: &str) -> Result<String, ApiError> {
        let key = self.keys.name(kind, scope, name);
        match crate::repo::load_index(self.store(), &key).await? {
            None => Ok(key),
            Some(holder) => {
                let within = if scope.is_empty() { String::new() } else { format!(" in {scope}") };
                let what = kind.resource_type().replace('_', " ").to_lowercase();
                Err(ApiError::conflict(kind, &holder, format!("A {what} named {name} already exists{within}")))
            }
        }
    }
}

/// Checks a `clientToken`: 1–64 printable ASCII characters.
pub(crate) fn check_client_token(token: Option<&str>) -> Result<(), ApiError> {
    match token {
        Some(t) if t.is_empty() || t.len() > 64 || !t.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
            Err(ApiError::field("clientToken", "must be 1 to 64 printable ASCII characters"))
        }
        _ => Ok(()),
    }
}

/// Checks a resource name against its kind's rules.
pub(crate) fn check_name(kind: Kind, name: &str) -> Result<(), ApiError> {
    trellis_model::name::check(kind, name).map_err(|m| ApiError::field("name", m))
}

/// Checks tags (spec §1.9 `TagMap`): at most 200, keys 1–128 not starting `aws:`, values ≤ 256.
pub(crate) fn check_tags(field: &str, tags: &trellis_model::lattice::Tags) -> Result<(), ApiError> {
    if tags.len() > 200 {
        return Err(ApiError::field(field, "at most 200 tags"));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(ApiError::field(field, format!("tag key {k:?} must be 1 to 128 characters")));
        }
        if k.starts_with("aws:") {
            return Err(ApiError::field(field, format!("tag key {k:?} may not start with \"aws:\"")));
        }
        if v.chars().count() > 256 {
            return Err(ApiError::field(field, format!("the value of tag {k:?} must be at most 256 characters")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Input {
        name: String,
        auth_type: Option<trellis_model::lattice::AuthType>,
    }

    fn reason(e: ApiError) -> (&'static str, Vec<String>) {
        match e {
            ApiError::Validation { reason, field_list, .. } => (reason, field_list.into_iter().map(|f| f.0).collect()),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn body_errors_name_the_field() {
        assert_eq!(reason(parse_body::<Input>(b"{").unwrap_err()).0, "cannotParse");
        assert_eq!(reason(parse_body::<Input>(b"{}").unwrap_err()), ("fieldValidationFailed", vec!["name".to_owned()]));
        assert_eq!(
            reason(parse_body::<Input>(br#"{"name":"x","authType":"BAD"}"#).unwrap_err()),
            ("fieldValidationFailed", vec!["authType".to_owned()])
        );
        assert_eq!(reason(parse_body::<Input>(br#"{"name":1}"#).unwrap_err()).1, vec!["name".to_owned()]);
        assert!(parse_body::<Input>(br#"{"name":"x"}"#).is_ok());
    }

    #[test]
    fn nulls_are_stripped() {
        let mut v = serde_json::json!({"a": null, "b": {"c": null, "d": 1}, "e": [{"f": null}]});
        strip_nulls(&mut v);
        assert_eq!(v, serde_json::json!({"b": {"d": 1}, "e": [{}]}));
    }
}
