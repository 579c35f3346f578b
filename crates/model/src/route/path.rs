//! A request path as rules, auth policies and targets all read it.
//!
//! A policy on `vpc-lattice-svcs:RequestPath` (or on the path in a resource ARN) and a path rule
//! match the path Trellis sees; the target then reads the path it is sent. If the two could read
//! one path differently, `/public/../admin` would pass a policy that allows `/public/*` and reach
//! `/admin` at a target that resolves dot segments. So a path is brought to one normal form
//! before anything matches it, and that form is what the target gets (the threat model in
//! `docs/threat-model.md`):
//!
//! - percent-encoded unreserved characters (letters, digits, `-._~`) are decoded and the other
//!   escapes written with upper-case hex (RFC 3986 §6.2.2), so `/%61dmin` is `/admin`;
//! - runs of `/` are merged into one, so `//admin` is `/admin`.
//!
//! What has no safe normal form is refused (the proxy answers 400): a `.` or `..` segment,
//! literal or encoded (clients resolve them before sending; RFC 3986 §5.2.4), an encoded `/` or
//! `\` (a target that decodes it would see other segments than the policy did), a literal `\`,
//! an encoded NUL, and a `%` not followed by two hex digits.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPath {
    /// A `.` or `..` segment, literal or percent-encoded.
    DotSegment,
    /// `%2F` or `%5C`: a separator hidden in a segment.
    EncodedSeparator,
    /// A literal backslash, which some targets read as a separator.
    Backslash,
    /// `%00`, or a `%` without two hex digits after it.
    BadEscape,
}

/// The normal form of `path` (the part of a request target before `?`, starting with `/`):
/// borrowed when it is already normal, which is the common case and costs one scan.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    // Decode what may be decoded; refuse what may not.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(hi), Some(lo)) =
                    (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
                else {
                    return Err(BadPath::BadEscape);
                };
                let value = hi << 4 | lo;
                match value {
                    0 => return Err(BadPath::BadEscape),
                    b'/' | b'\\' => return Err(BadPath::EncodedSeparator),
                    v if is_unreserved(v) => decoded.push(v),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        decoded.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 15)]]);
                    }
                }
                i += 3;
            }
            b'\\' => return Err(BadPath::Backslash),
            b => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // Merge runs of `/`; refuse dot segments.
    let mut out = String::with_capacity(decoded.len());
    for (n, segment) in decoded.split(|&b| b == b'/').enumerate() {
        if segment == b"." || segment == b".." {
            return Err(BadPath::DotSegment);
        }
        if n > 0 && !out.ends_with('/') {
            out.push('/');
        }
        // Only ASCII bytes were decoded or moved, so segments stay valid UTF-8.
        out.push_str(std::str::from_utf8(segment).map_err(|_| BadPath::BadEscape)?);
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` is already in normal form: no `%`, no `\`, no `//`, no dot segment.
fn is_normal(path: &[u8]) -> bool {
    if path.iter().any(|&b| b == b'%' || b == b'\\') {
        return false;
    }
    let mut i = 0;
    while let Some(at) = path[i..].iter().position(|&b| b == b'/') {
        let rest = &path[i + at + 1..];
        let segment = &rest[..rest.iter().position(|&b| b == b'/').unwrap_or(rest.len())];
        // An empty segment other than the last (`//`), or a dot segment.
        if (segment.is_empty() && !rest.is_empty()) || segment == b"." || segment == b".." {
            return false;
        }
        i += at + 1;
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a", "/a/", "/a/b.html", "/.well-known/x", "/a/..b", "/a/b./c", "/…/ü", "/pkg.Svc/Method"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(q)) if q == p), "{p}");
        }
    }

    #[test]
    fn paths_are_brought_to_one_form() {
        for (from, to) in [
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a//", "/a/"),
            ("/%61dmin", "/admin"),
            ("/%7euser/%2D%5F", "/~user/-_"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb%3a", "/a%3Fb%3A"),
            ("/%2e%2ea", "/..a"),
            ("/a%2E", "/a."),
            ("/%C3%BC", "/%C3%BC"),
        ] {
            assert_eq!(normalize(from).as_deref(), Ok(to), "{from}");
        }
    }

    #[test]
    fn paths_without_a_safe_form_are_refused() {
        for (p, why) in [
            ("/public/../admin", BadPath::DotSegment),
            ("/public/..", BadPath::DotSegment),
            ("/./admin", BadPath::DotSegment),
            ("/a/.", BadPath::DotSegment),
            ("/public/%2e%2e/admin", BadPath::DotSegment),
            ("/public/.%2E/admin", BadPath::DotSegment),
            ("/public/%2e/admin", BadPath::DotSegment),
            ("//..//admin", BadPath::DotSegment),
            ("/admin%2fsecret", BadPath::EncodedSeparator),
            ("/admin%2Fsecret", BadPath::EncodedSeparator),
            ("/admin%5csecret", BadPath::EncodedSeparator),
            ("/admin\\secret", BadPath::Backslash),
            ("/admin%00.html", BadPath::BadEscape),
            ("/a%", BadPath::BadEscape),
            ("/a%4", BadPath::BadEscape),
            ("/a%zz", BadPath::BadEscape),
        ] {
            assert_eq!(normalize(p), Err(why), "{p}");
        }
    }

    #[test]
    fn the_normal_form_is_normal() {
        for p in ["//a//b", "/%61%2e/", "/a%2fb", "/x/%2e%2e%2e"] {
            if let Ok(once) = normalize(p) {
                assert_eq!(normalize(&once).as_deref(), Ok(&*once), "{p}");
            }
        }
    }
}
