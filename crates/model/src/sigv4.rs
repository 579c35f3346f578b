//! Verifying AWS Signature Version 4 (spec §4.4): the `Authorization` header form and the
//! presigned query-string form, for the data plane (service `vpc-lattice-svcs`, payload
//! `UNSIGNED-PAYLOAD`) and, later, the API. [`Signed::parse`] reads what the request claims;
//! the caller looks up the secret of `access_key` and checks the scope, the date and the
//! session token; [`Signed::verify`] recomputes the signature over the request as received.
//!
//! The canonical request follows AWS's rules for every service but S3: the path normalised
//! (`.` and `..` segments, repeated slashes) and percent-encoded again; the query's names and
//! values percent-decoded, re-encoded with the unreserved set, sorted; the signed headers
//! lowercased, their values trimmed with inner runs of spaces collapsed, repeats joined by `,`.

use std::fmt;

/// `AWS4-HMAC-SHA256`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// SigV4A's algorithm name (refused: not supported).
pub const ALGORITHM_V4A: &str = "AWS4-ECDSA-P256-SHA256";

/// The longest a presigned request may stay valid (seven days, as AWS allows).
pub const MAX_EXPIRES: u64 = 7 * 24 * 3600;

/// What a signed request claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The access key ID.
    pub access_key: String,
    /// `YYYYMMDD` of the credential scope.
    pub scope_date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// `x-amz-date` (`YYYYMMDDTHHMMSSZ`).
    pub amz_date: String,
    /// Lowercase header names, in the order given.
    pub signed_headers: Vec<String>,
    /// The signature, hex.
    pub signature: String,
    /// Presigned: how many seconds the signature is valid from `amz_date`.
    pub expires: Option<u64>,
    /// Presigned: the session token from the query (else the caller reads the header).
    pub query_token: Option<String>,
}

/// Why a request's signature cannot be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigError {
    /// SigV4A (not supported).
    V4a,
    /// A part is missing or malformed: which.
    Malformed(&'static str),
    /// The signature does not match.
    Mismatch,
}

/// One request as received, for canonicalisation.
pub struct Received<'a> {
    /// The method.
    pub method: &'a str,
    /// The path as sent (percent-encoded), without the query.
    pub path: &'a str,
    /// The query as sent, without `?` (may be empty).
    pub query: &'a str,
    /// Every value of a header (name in lowercase), in order.
    pub header: &'a dyn Fn(&str) -> Vec<&'a [u8]>,
}

// === impl Signed ===

impl Signed {
    /// What the request claims: from its `Authorization` header (with `x-amz-date`), or its
    /// query (`X-Amz-Algorithm=…`). `Ok(None)` for an unsigned request.
    pub fn parse(authorization: Option<&str>, amz_date: Option<&str>, query: &str) -> Result<Option<Self>, SigError> {
        if let Some(auth) = authorization {
            return Self::from_header(auth, amz_date).map(Some);
        }
        let params = query_pairs(query, Plus::Literal);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        match get("X-Amz-Algorithm") {
            None => Ok(None),
            Some(ALGORITHM_V4A) => Err(SigError::V4a),
            Some(ALGORITHM) => {
                let credential = get("X-Amz-Credential").ok_or(SigError::Malformed("X-Amz-Credential"))?;
                let (access_key, scope_date, region, service) = credential_parts(credential)?;
                // AWS's bounds: a second to seven days.
                let expires = get("X-Amz-Expires")
                    .and_then(|e| e.parse::<u64>().ok())
                    .filter(|e| (1..=MAX_EXPIRES).contains(e))
                    .ok_or(SigError::Malformed("X-Amz-Expires (1 to 604800 seconds)"))?;
                Ok(Some(Self {
                    access_key,
                    scope_date,
                    region,
                    service,
                    amz_date: get("X-Amz-Date").ok_or(SigError::Malformed("X-Amz-Date"))?.to_owned(),
                    signed_headers: signed_headers(
                        get("X-Amz-SignedHeaders").ok_or(SigError::Malformed("X-Amz-SignedHeaders"))?,
                    ),
                    signature: get("X-Amz-Signature").ok_or(SigError::Malformed("X-Amz-Signature"))?.to_owned(),
                    expires: Some(expires),
                    query_token: get("X-Amz-Security-Token").map(str::to_owned),
                }))
            }
            Some(_) => Err(SigError::Malformed("X-Amz-Algorithm")),
        }
    }

    fn from_header(auth: &str, amz_date: Option<&str>) -> Result<Self, SigError> {
        let (algorithm, rest) = auth.trim().split_once(' ').ok_or(SigError::Malformed("Authorization"))?;
        match algorithm {
            ALGORITHM => {}
            ALGORITHM_V4A => return Err(SigError::V4a),
            _ => return Err(SigError::Malformed("Authorization")),
        }
        let (mut credential, mut headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let Some((k, v)) = part.trim().split_once('=') else { continue };
            let slot = match k {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut headers,
                "Signature" => &mut signature,
                _ => continue,
            };
            // Given twice, a reader could take one and a verifier the other.
            if slot.replace(v).is_some() {
                return Err(SigError::Malformed("Authorization (a part is repeated)"));
            }
        }
        let (access_key, scope_date, region, service) =
            credential_parts(credential.ok_or(SigError::Malformed("Credential"))?)?;
        Ok(Self {
            access_key,
            scope_date,
            region,
            service,
            amz_date: amz_date.ok_or(SigError::Malformed("x-amz-date"))?.to_owned(),
            signed_headers: signed_headers(headers.ok_or(SigError::Malformed("SignedHeaders"))?),
            signature: signature.ok_or(SigError::Malformed("Signature"))?.to_owned(),
            expires: None,
            query_token: None,
        })
    }

    /// Checks the signature of `request` with `secret`, the secret access key of
    /// [`Signed::access_key`]; the payload hash signed is `payload_hash` (what
    /// `x-amz-content-sha256` says, `UNSIGNED-PAYLOAD` for Lattice).
    pub fn verify(&self, request: &Received<'_>, secret: &str, payload_hash: &str) -> Result<(), SigError> {
        let key = hmac_key(&signing_key(secret, &self.scope_date, &self.region, &self.service));
        self.verify_with_key(request, &key, payload_hash)
    }

    /// [`Signed::verify`] with the signing key from `keys` (derived once per credential, day,
    /// region and service, instead of four HMACs a request).
    pub fn verify_cached(
        &self,
        request: &Received<'_>,
        secret: &str,
        payload_hash: &str,
        keys: &SigningKeys,
    ) -> Result<(), SigError> {
        let key = keys.get(self, secret);
        self.verify_with_key(request, &key, payload_hash)
    }

    fn verify_with_key(
        &self,
        request: &Received<'_>,
        key: &ring::hmac::Key,
        payload_hash: &str,
    ) -> Result<(), SigError> {
        if !self.signed_headers.iter().any(|h| h == "host") {
            return Err(SigError::Malformed("SignedHeaders (host must be signed)"));
        }
        let given = self.signature.to_ascii_lowercase();
        let want = self.signature_with(request, key, payload_hash, Plus::Literal)?;
        if constant_time_eq(want.as_bytes(), given.as_bytes()) {
            return Ok(());
        }
        // Signers disagree on a `+` in the query: botocore signs it as a `+`, the Rust SDK's
        // signer (form decoding) as a space. Both are the signer's reading of the same bytes,
        // so either is accepted.
        if request.query.contains('+') {
            let want = self.signature_with(request, key, payload_hash, Plus::Space)?;
            if constant_time_eq(want.as_bytes(), given.as_bytes()) {
                return Ok(());
            }
        }
        Err(SigError::Mismatch)
    }
}

impl Signed {
    /// The signature of `request` with `secret` under this claim's scope, date and signed
    /// headers (what a signer would send; what [`Signed::verify`] compares with).
    pub fn signature_of(&self, request: &Received<'_>, secret: &str, payload_hash: &str) -> Result<String, SigError> {
        let key = hmac_key(&signing_key(secret, &self.scope_date, &self.region, &self.service));
        self.signature_with(request, &key, payload_hash, Plus::Literal)
    }

    fn signature_with(
        &self,
        request: &Received<'_>,
        key: &ring::hmac::Key,
        payload_hash: &str,
        plus: Plus,
    ) -> Result<String, SigError> {
        let canonical = canonical_request(self, request, payload_hash, plus)?;
        let mut to_sign = String::with_capacity(160);
        for part in [ALGORITHM, "\n", &self.amz_date, "\n", &self.scope_date, "/", &self.region, "/", &self.service] {
            to_sign.push_str(part);
        }
        to_sign.push_str("/aws4_request\n");
        to_sign.push_str(&hex(&sha256(canonical.as_bytes())));
        Ok(hex(ring::hmac::sign(key, to_sign.as_bytes()).as_ref()))
    }

    /// Seconds since the Unix epoch of [`Signed::amz_date`].
    pub fn time(&self) -> Option<u64> {
        parse_amz_date(&self.amz_date)
    }

    /// The `Authorization` header that carries this claim (with [`Signed::signature`]).
    pub fn authorization(&self) -> String {
        format!(
            "{ALGORITHM} Credential={}/{}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
            self.access_key,
            self.scope_date,
            self.region,
            self.service,
            self.signed_headers.join(";"),
            self.signature
        )
    }
}

/// Signing keys already derived, by credential and scope (a bounded set: the oldest entry
/// makes room). Shared by every connection; the lock is held for a lookup or an insert only.
pub struct SigningKeys {
    entries: std::sync::Mutex<KeyRing>,
}

struct KeyRing {
    entries: Vec<KeyEntry>,
    next: usize,
}

struct KeyEntry {
    access_key: String,
    secret: String,
    /// `date/region/service`.
    scope: String,
    key: ring::hmac::Key,
}

impl SigningKeys {
    /// How many keys are kept.
    const CAPACITY: usize = 256;

    /// An empty set.
    pub const fn new() -> Self {
        Self { entries: std::sync::Mutex::new(KeyRing { entries: Vec::new(), next: 0 }) }
    }

    /// The signing key of `claim`'s credential and scope with `secret`, derived on first use.
    fn get(&self, claim: &Signed, secret: &str) -> ring::hmac::Key {
        let same_scope = |scope: &str| {
            let mut parts = scope.splitn(3, '/');
            parts.next() == Some(&claim.scope_date)
                && parts.next() == Some(&claim.region)
                && parts.next() == Some(&claim.service)
        };
        {
            let ring = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = ring
                .entries
                .iter()
                .find(|e| e.access_key == claim.access_key && same_scope(&e.scope) && e.secret == secret)
            {
                return e.key.clone();
            }
        }
        let key = hmac_key(&signing_key(secret, &claim.scope_date, &claim.region, &claim.service));
        let entry = KeyEntry {
            access_key: claim.access_key.clone(),
            secret: secret.to_owned(),
            scope: format!("{}/{}/{}", claim.scope_date, claim.region, claim.service),
            key: key.clone(),
        };
        let mut ring = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if ring.entries.len() < Self::CAPACITY {
            ring.entries.push(entry);
        } else {
            let at = ring.next;
            ring.entries[at] = entry;
            ring.next = (at + 1) % Self::CAPACITY;
        }
        key
    }
}

impl Default for SigningKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// The hex SHA-256 of a payload: what a signer puts in the canonical request for a signed body.
pub fn payload_hash(body: &[u8]) -> String {
    hex(&sha256(body))
}

/// `YYYYMMDDTHHMMSSZ` → seconds since the Unix epoch.
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Seconds since the Unix epoch → `YYYYMMDDTHHMMSSZ` (what a signer sends as `x-amz-date`).
pub fn format_amz_date(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // The civil date of a day number (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

fn credential_parts(credential: &str) -> Result<(String, String, String, String), SigError> {
    let parts: Vec<&str> = credential.split('/').collect();
    match parts[..] {
        [key, date, region, service, "aws4_request"] if !key.is_empty() && date.len() == 8 => {
            Ok((key.to_owned(), date.to_owned(), region.to_owned(), service.to_owned()))
        }
        _ => Err(SigError::Malformed("Credential")),
    }
}

fn signed_headers(list: &str) -> Vec<String> {
    list.split(';').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect()
}

/// What a `+` in a query stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plus {
    /// Itself.
    Literal,
    /// A space (form encoding).
    Space,
}

/// The canonical request of SigV4.
fn canonical_request(signed: &Signed, r: &Received<'_>, payload_hash: &str, plus: Plus) -> Result<String, SigError> {
    let mut out = String::with_capacity(512);
    out.push_str(r.method);
    out.push('\n');
    encode_into(&mut out, &normalize_path(r.path), false);
    out.push('\n');
    let mut pairs: Vec<(String, String)> = query_pairs(r.query, plus)
        .into_iter()
        .filter(|(k, _)| !(signed.expires.is_some() && k == "X-Amz-Signature"))
        .map(|(k, v)| (encode(&k, true), encode(&v, true)))
        .collect();
    pairs.sort_unstable();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out.push('\n');
    for name in &signed.signed_headers {
        let values = (r.header)(name);
        if values.is_empty() {
            return Err(SigError::Malformed("a signed header is missing"));
        }
        out.push_str(name);
        out.push(':');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Trimmed, inner runs of whitespace collapsed to one space.
            let text = String::from_utf8_lossy(value);
            for (j, word) in text.split_whitespace().enumerate() {
                if j > 0 {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
        out.push('\n');
    }
    out.push('\n');
    for (i, name) in signed.signed_headers.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name);
    }
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// The path with `.`/`..` segments and repeated slashes removed, as AWS normalises it; still
/// percent-encoded as sent.
fn normalize_path(path: &str) -> std::borrow::Cow<'_, str> {
    // Usually nothing to do: one leading slash, no empty, `.` or `..` segment.
    let plain = path.starts_with('/') && !path.contains("//") && path[1..].split('/').all(|s| s != "." && s != "..");
    if plain {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    std::borrow::Cow::Owned(out)
}

/// Percent-encodes all but the unreserved set (and `/` unless `slash`).
fn encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    encode_into(&mut out, s, slash);
    out
}

fn encode_into(out: &mut String, s: &str, slash: bool) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (b == b'/' && !slash) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(UPPER_HEX[usize::from(b >> 4)]));
            out.push(char::from(UPPER_HEX[usize::from(b & 0xf)]));
        }
    }
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// `a=1&b=2`, percent-decoded, with `+` read as `plus` says.
fn query_pairs(query: &str, plus: Plus) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match plus {
                Plus::Literal => (decode(k), decode(v)),
                Plus::Space => (decode(&k.replace('+', " ")), decode(&v.replace('+', " "))),
            }
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The key that signs for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// A signing key ready to sign (its pads hashed once).
fn hmac_key(key: &[u8; 32]) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(LOWER_HEX[usize::from(b >> 4)]));
        out.push(char::from(LOWER_HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only (for secrets).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Display for SigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4a => f.write_str("SigV4A signatures are not supported; sign with SigV4"),
            Self::Malformed(what) => write!(f, "the signature's {what} is missing or malformed"),
            Self::Mismatch => f.write_str("the signature does not match the request"),
        }
    }
}

impl std::error::Error for SigError {}

#[cfg(test)]
mod tests;
