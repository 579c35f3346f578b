//! Where access logs land: an access log subscription's destination ARN (CloudWatch Logs log
//! group, S3 bucket with an optional prefix, Firehose delivery stream) parsed into a
//! [`Destination`], and the directory under the data directory that stands for it. The data
//! plane writes there and the CloudWatch Logs read API reads there; both take the layout from
//! here so that they cannot disagree. Pure: no I/O.
//!
//! Layout, relative to the data directory (each name encoded by [`path_component`]):
//!
//! ```text
//! access-logs/cloudwatch/<region>/<account>/<log group>/<node>.log   one log stream per node
//! access-logs/s3/<bucket>/<prefix segments…>/<node>.log
//! access-logs/firehose/<region>/<account>/<delivery stream>/<node>.log
//! ```
//!
//! A file rotates to `<node>.log.1` (and older ones move up) when it grows past its limit.

use std::path::PathBuf;

/// The directory under the data directory that holds every access log.
pub const DIR: &str = "access-logs";

/// A destination an access log subscription names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// `arn:aws:logs:<region>:<account>:log-group:<name>[:*]`.
    CloudWatchLogs {
        /// The region in the ARN.
        region: String,
        /// The account in the ARN.
        account: String,
        /// The log group's name.
        group: String,
    },
    /// `arn:aws:firehose:<region>:<account>:deliverystream/<name>`.
    Firehose {
        /// The region in the ARN.
        region: String,
        /// The account in the ARN.
        account: String,
        /// The delivery stream's name.
        stream: String,
    },
    /// `arn:aws:s3:::<bucket>[/<prefix>]`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (may be empty).
        prefix: String,
    },
}

// === impl Destination ===

impl Destination {
    /// The destination an ARN names, if it is one of the three kinds.
    pub fn parse(arn: &str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some(service), Some(region), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let (region, account) = (region.to_owned(), account.to_owned());
        match service {
            "logs" => {
                let name = resource.strip_prefix("log-group:")?;
                let group = name.strip_suffix(":*").unwrap_or(name);
                (!group.is_empty()).then(|| Self::CloudWatchLogs { region, account, group: group.to_owned() })
            }
            "firehose" => {
                let stream = resource.strip_prefix("deliverystream/")?;
                (!stream.is_empty()).then(|| Self::Firehose { region, account, stream: stream.to_owned() })
            }
            "s3" => {
                let (bucket, prefix) = resource.split_once('/').unwrap_or((resource, ""));
                (!bucket.is_empty()).then(|| Self::S3 { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
            }
            _ => None,
        }
    }

    /// The directory (relative to the data directory) that holds this destination's files.
    pub fn dir(&self) -> PathBuf {
        let mut path = PathBuf::from(DIR);
        match self {
            Self::CloudWatchLogs { region, account, group } => {
                path.push("cloudwatch");
                path.push(path_component(region));
                path.push(path_component(account));
                path.push(path_component(group));
            }
            Self::Firehose { region, account, stream } => {
                path.push("firehose");
                path.push(path_component(region));
                path.push(path_component(account));
                path.push(path_component(stream));
            }
            Self::S3 { bucket, prefix } => {
                path.push("s3");
                path.push(path_component(bucket));
                for segment in prefix.split('/').filter(|s| !s.is_empty()) {
                    path.push(path_component(segment));
                }
            }
        }
        path
    }
}

/// The directory (relative to the data directory) of a CloudWatch Logs log group.
pub fn log_group_dir(region: &str, account: &str, group: &str) -> PathBuf {
    Destination::CloudWatchLogs { region: region.to_owned(), account: account.to_owned(), group: group.to_owned() }
        .dir()
}

/// `name` as one path component: letters, digits, `-`, `_` and `.` stay, every other byte
/// becomes `%XX`; a name of dots alone (`.`, `..`) has its dots encoded too, and an empty name
/// is `%`.
pub fn path_component(name: &str) -> String {
    if name.is_empty() {
        return "%".to_owned();
    }
    let dots = name.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && !dots) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`path_component`] (`None` if `encoded` is not one of its outputs).
pub fn from_path_component(encoded: &str) -> Option<String> {
    if encoded == "%" {
        return Some(String::new());
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        let table: &[(&str, Option<&str>)] = &[
            (
                "arn:aws:logs:us-east-1:000000000000:log-group:my-group",
                Some("access-logs/cloudwatch/us-east-1/000000000000/my-group"),
            ),
            (
                "arn:aws:logs:us-east-1:000000000000:log-group:/aws/x:*",
                Some("access-logs/cloudwatch/us-east-1/000000000000/%2Faws%2Fx"),
            ),
            ("arn:aws:s3:::bucket", Some("access-logs/s3/bucket")),
            ("arn:aws:s3:::bucket/a/../b/", Some("access-logs/s3/bucket/a/%2E%2E/b")),
            ("arn:aws:firehose:eu-west-1:1:deliverystream/fh", Some("access-logs/firehose/eu-west-1/1/fh")),
            ("arn:aws:logs:us-east-1:0:log-group:", None),
            ("arn:aws:sqs:us-east-1:0:q", None),
            ("nonsense", None),
        ];
        for (arn, want) in table {
            let got = Destination::parse(arn).map(|d| d.dir().to_string_lossy().into_owned());
            assert_eq!(got.as_deref(), *want, "{arn}");
        }
    }

    #[test]
    fn components_round_trip() {
        for name in ["", ".", "..", "a.b", "/aws/vpc lattice/ü", "%41"] {
            let enc = path_component(name);
            assert!(!enc.contains('/') && enc != "." && enc != "..", "{enc}");
            assert_eq!(from_path_component(&enc).as_deref(), Some(name));
        }
    }
}
