//! IAM records as stored: roles and the policies attached to them. IAM is global, so these
//! belong to an account, not to a region. Validation (names, paths, documents) is the API's.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// An IAM role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// The name as created (names are unique regardless of case).
    pub role_name: String,
    /// `AROA` and 17 uppercase letters and digits.
    pub role_id: String,
    /// `/` or `/a/b/`.
    pub path: String,
    /// `arn:aws:iam::<account>:role<path><name>`.
    pub arn: String,
    /// When it was created.
    pub create_date: Timestamp,
    /// The trust policy, as sent (not re-serialized).
    pub assume_role_policy_document: String,
    /// The description, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Seconds, 3600–43200.
    pub max_session_duration: u32,
    /// Tags in the order they were given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// A tag of an IAM resource (IAM keeps tags as an ordered list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The key (unique per resource regardless of case).
    pub key: String,
    /// The value.
    pub value: String,
}

/// A managed policy attached to a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedPolicy {
    /// The policy's name.
    pub policy_name: String,
    /// The policy's ARN.
    pub policy_arn: String,
}

/// A fresh role ID: `AROA` and 17 random uppercase letters and digits.
pub fn new_role_id() -> String {
    const ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = [0u8; 17];
    // A failing system RNG leaves nothing sane to do: IDs must be unpredictable and unique.
    getrandom::fill(&mut bytes).expect("the system random number generator failed");
    let mut id = String::from("AROA");
    id.extend(bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])));
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn role_ids_look_like_aws() {
        let id = super::new_role_id();
        assert_eq!(id.len(), 21, "{id}");
        assert!(id.starts_with("AROA"), "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "{id}");
        assert_ne!(super::new_role_id(), id);
    }
}
