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

use std::borrow::Cow;
use std::fmt;

use sha::{HmacKey, Sha256};

mod sha;

/// `AWS4-HMAC-SHA256`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// SigV4A's algorithm name (refused: not supported).
pub const ALGORITHM_V4A: &str = "AWS4-ECDSA-P256-SHA256";

/// The longest a presigned request may stay valid (seven days, as AWS allows).
pub const MAX_EXPIRES: u64 = 7 * 24 * 3600;

/// What a signed request claims. Parsed from an `Authorization` header it borrows the
/// header's text (no allocation unless a part needs rewriting); from a presigned query, whose
/// values are percent-decoded, it owns them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<'a> {
    /// The access key ID.
    pub access_key: Cow<'a, str>,
    /// `YYYYMMDD` of the credential scope.
    pub scope_date: Cow<'a, str>,
    /// The scope's region.
    pub region: Cow<'a, str>,
    /// The scope's service.
    pub service: Cow<'a, str>,
    /// `x-amz-date` (`YYYYMMDDTHHMMSSZ`).
    pub amz_date: Cow<'a, str>,
    /// Lowercase header names joined by `;`, in the order given (no empty name).
    pub signed_headers: Cow<'a, str>,
    /// The signature, hex.
    pub signature: Cow<'a, str>,
    /// Presigned: how many seconds the signature is valid from `amz_date`.
    pub expires: Option<u64>,
    /// Presigned: the session token from the query (else the caller reads the header).
    pub query_token: Option<Cow<'a, str>>,
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
    /// Calls its second argument with every value of a header (name in lowercase), in order.
    pub header: &'a HeaderValues<'a>,
}

/// Calls its second argument with every value of the header named by its first, in order
/// (a visit, so that looking a header up allocates nothing).
pub type HeaderValues<'h> = dyn Fn(&str, &mut dyn FnMut(&[u8])) + 'h;

// === impl Signed ===

impl<'a> Signed<'a> {
    /// What the request claims: from its `Authorization` header (with `x-amz-date`), or its
    /// query (`X-Amz-Algorithm=…`). `Ok(None)` for an unsigned request.
    pub fn parse(
        authorization: Option<&'a str>,
        amz_date: Option<&'a str>,
        query: &str,
    ) -> Result<Option<Self>, SigError> {
        if let Some(auth) = authorization {
            return Self::from_header(auth, amz_date).map(Some);
        }
        if !query.contains("X-Amz-Algorithm") && !query.contains('%') {
            // Not presigned: no name in the query is, or decodes to, `X-Amz-Algorithm`.
            return Ok(None);
        }
        let params = query_pairs(query, Plus::Literal);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let owned = |s: &str| Cow::Owned(s.to_owned());
        match get("X-Amz-Algorithm") {
            None => Ok(None),
            Some(ALGORITHM_V4A) => Err(SigError::V4a),
            Some(ALGORITHM) => {
                let credential = get("X-Amz-Credential").ok_or(SigError::Malformed("X-Amz-Credential"))?;
                let (access_key, scope_date, region, service) = credential_parts(credential)?;
                let (access_key, scope_date, region, service) =
                    (owned(access_key), owned(scope_date), owned(region), owned(service));
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
                    amz_date: owned(get("X-Amz-Date").ok_or(SigError::Malformed("X-Amz-Date"))?),
                    signed_headers: Cow::Owned(
                        signed_headers(get("X-Amz-SignedHeaders").ok_or(SigError::Malformed("X-Amz-SignedHeaders"))?)
                            .into_owned(),
                    ),
                    signature: owned(get("X-Amz-Signature").ok_or(SigError::Malformed("X-Amz-Signature"))?),
                    expires: Some(expires),
                    query_token: get("X-Amz-Security-Token").map(owned),
                }))
            }
            Some(_) => Err(SigError::Malformed("X-Amz-Algorithm")),
        }
    }

    fn from_header(auth: &'a str, amz_date: Option<&'a str>) -> Result<Self, SigError> {
        let (algorithm, rest) = split_once(auth.trim_ascii(), b' ').ok_or(SigError::Malformed("Authorization"))?;
        match algorithm {
            ALGORITHM => {}
            ALGORITHM_V4A => return Err(SigError::V4a),
            _ => return Err(SigError::Malformed("Authorization")),
        }
        let (mut credential, mut headers, mut signature) = (None, None, None);
        for part in pieces(rest, b',') {
            let Some((k, v)) = split_once(part.trim_ascii(), b'=') else { continue };
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
            access_key: Cow::Borrowed(access_key),
            scope_date: Cow::Borrowed(scope_date),
            region: Cow::Borrowed(region),
            service: Cow::Borrowed(service),
            amz_date: Cow::Borrowed(amz_date.ok_or(SigError::Malformed("x-amz-date"))?),
            signed_headers: signed_headers(headers.ok_or(SigError::Malformed("SignedHeaders"))?),
            signature: Cow::Borrowed(signature.ok_or(SigError::Malformed("Signature"))?),
            expires: None,
            query_token: None,
        })
    }

    /// Checks the signature of `request` with `secret`, the secret access key of
    /// [`Signed::access_key`]; the payload hash signed is `payload_hash` (what
    /// `x-amz-content-sha256` says, `UNSIGNED-PAYLOAD` for Lattice).
    pub fn verify(&self, request: &Received<'_>, secret: &str, payload_hash: &str) -> Result<(), SigError> {
        let key = HmacKey::new(&signing_key(secret, &self.scope_date, &self.region, &self.service));
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

    fn verify_with_key(&self, request: &Received<'_>, key: &HmacKey, payload_hash: &str) -> Result<(), SigError> {
        if !self.signed_header_names().any(|h| h == "host") {
            return Err(SigError::Malformed("SignedHeaders (host must be signed)"));
        }
        let given = self.signature.as_bytes();
        let want = self.signature_with(request, key, payload_hash, Plus::Literal)?;
        if constant_time_eq_lowercase(&want, given) {
            return Ok(());
        }
        // Signers disagree on a `+` in the query: botocore signs it as a `+`, the Rust SDK's
        // signer (form decoding) as a space. Both are the signer's reading of the same bytes,
        // so either is accepted.
        if request.query.contains('+') {
            let want = self.signature_with(request, key, payload_hash, Plus::Space)?;
            if constant_time_eq_lowercase(&want, given) {
                return Ok(());
            }
        }
        Err(SigError::Mismatch)
    }
}

impl Signed<'_> {
    /// The signature of `request` with `secret` under this claim's scope, date and signed
    /// headers (what a signer would send; what [`Signed::verify`] compares with).
    pub fn signature_of(&self, request: &Received<'_>, secret: &str, payload_hash: &str) -> Result<String, SigError> {
        let key = HmacKey::new(&signing_key(secret, &self.scope_date, &self.region, &self.service));
        let hex = self.signature_with(request, &key, payload_hash, Plus::Literal)?;
        Ok(hex.iter().copied().map(char::from).collect())
    }

    /// The signed header names, in order.
    pub fn signed_header_names(&self) -> impl Iterator<Item = &str> {
        pieces(&self.signed_headers, b';').filter(|h| !h.is_empty())
    }

    /// The signature in lowercase hex. The canonical request and the string to sign go
    /// straight into their hashes; neither is kept as text.
    fn signature_with(
        &self,
        request: &Received<'_>,
        key: &HmacKey,
        payload_hash: &str,
        plus: Plus,
    ) -> Result<[u8; 64], SigError> {
        let mut canonical = Sha256::new();
        canonical_request(&mut canonical, self, request, payload_hash, plus)?;
        let canonical = hex(&canonical.finish());
        let mut to_sign = key.context();
        for part in [ALGORITHM, "\n", &self.amz_date, "\n", &self.scope_date, "/", &self.region, "/", &self.service] {
            to_sign.update(part.as_bytes());
        }
        to_sign.update(b"/aws4_request\n");
        to_sign.update(&canonical);
        Ok(hex(&key.finish(to_sign)))
    }

    /// Seconds since the Unix epoch of [`Signed::amz_date`].
    pub fn time(&self) -> Option<u64> {
        parse_amz_date(&self.amz_date)
    }

    /// The `Authorization` header that carries this claim (with [`Signed::signature`]).
    pub fn authorization(&self) -> String {
        format!(
            "{ALGORITHM} Credential={}/{}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
            self.access_key, self.scope_date, self.region, self.service, self.signed_headers, self.signature
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
    date: String,
    region: String,
    service: String,
    key: HmacKey,
}

impl SigningKeys {
    /// How many keys are kept.
    const CAPACITY: usize = 256;

    /// An empty set.
    pub const fn new() -> Self {
        Self { entries: std::sync::Mutex::new(KeyRing { entries: Vec::new(), next: 0 }) }
    }

    /// The signing key of `claim`'s credential and scope with `secret`, derived on first use.
    fn get(&self, claim: &Signed<'_>, secret: &str) -> HmacKey {
        {
            let ring = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let same = crate::policy::same;
            if let Some(e) = ring.entries.iter().find(|e| {
                same(&e.access_key, &claim.access_key)
                    && same(&e.date, &claim.scope_date)
                    && same(&e.region, &claim.region)
                    && same(&e.service, &claim.service)
                    && same(&e.secret, secret)
            }) {
                return e.key;
            }
        }
        self.derive(claim, secret)
    }

    /// Derives and keeps the key of a credential and scope not seen yet (out of line: once a
    /// day per caller).
    #[cold]
    #[inline(never)]
    fn derive(&self, claim: &Signed<'_>, secret: &str) -> HmacKey {
        let key = HmacKey::new(&signing_key(secret, &claim.scope_date, &claim.region, &claim.service));
        let entry = KeyEntry {
            access_key: claim.access_key.clone().into_owned(),
            secret: secret.to_owned(),
            date: claim.scope_date.clone().into_owned(),
            region: claim.region.clone().into_owned(),
            service: claim.service.clone().into_owned(),
            key,
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
    hex(&sha::sha256(body)).iter().copied().map(char::from).collect()
}

/// `YYYYMMDDTHHMMSSZ` → seconds since the Unix epoch.
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
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

/// The pieces of `s` between the ASCII bytes `sep`.
fn pieces(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(sep, r.as_bytes()) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `s` split at its first ASCII byte `sep`, which neither side keeps.
fn split_once(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = memchr::memchr(sep, s.as_bytes())?;
    Some((&s[..i], &s[i + 1..]))
}

/// `key/date/region/service/aws4_request` → its first four parts.
fn credential_parts(credential: &str) -> Result<(&str, &str, &str, &str), SigError> {
    let mut parts = pieces(credential, b'/');
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(key), Some(date), Some(region), Some(service), Some("aws4_request"), None)
            if !key.is_empty() && date.len() == 8 =>
        {
            Ok((key, date, region, service))
        }
        _ => Err(SigError::Malformed("Credential")),
    }
}

/// The signed header names trimmed, lowercased and without empty ones, joined by `;`:
/// borrowed when `list` is already so.
fn signed_headers(list: &str) -> Cow<'_, str> {
    // No empty name, nothing to trim or lowercase: graphic bytes but capitals, no `;` first,
    // last or twice in a row.
    let b = list.as_bytes();
    let graphic = b.iter().fold(true, |ok, &c| ok & (c.is_ascii_graphic() & !c.is_ascii_uppercase()));
    let no_empty = b.first() != Some(&b';') && b.last() != Some(&b';') && !b.windows(2).any(|w| w == b";;");
    if graphic && no_empty && !b.is_empty() {
        return Cow::Borrowed(list);
    }
    let names: Vec<String> = list.split(';').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
    Cow::Owned(names.join(";"))
}

/// What a `+` in a query stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plus {
    /// Itself.
    Literal,
    /// A space (form encoding).
    Space,
}

/// The canonical request of SigV4, written into `out`.
fn canonical_request(
    out: &mut impl Sink,
    signed: &Signed<'_>,
    r: &Received<'_>,
    payload_hash: &str,
    plus: Plus,
) -> Result<(), SigError> {
    out.put(r.method.as_bytes());
    out.put(b"\n");
    encode_into(out, &normalize_path(r.path), false);
    out.put(b"\n");
    if !r.query.is_empty() {
        canonical_query(out, signed, r.query, plus);
    }
    out.put(b"\n");
    for name in signed.signed_header_names() {
        out.put(name.as_bytes());
        out.put(b":");
        let mut values = 0;
        (r.header)(name, &mut |value| {
            if values > 0 {
                out.put(b",");
            }
            values += 1;
            canonical_value(out, value);
        });
        if values == 0 {
            return Err(SigError::Malformed("a signed header is missing"));
        }
        out.put(b"\n");
    }
    out.put(b"\n");
    out.put(signed.signed_headers.as_bytes());
    out.put(b"\n");
    out.put(payload_hash.as_bytes());
    Ok(())
}

/// The canonical query: names and values decoded, encoded again, sorted (out of line: most
/// requests have no query).
#[inline(never)]
fn canonical_query(out: &mut impl Sink, signed: &Signed<'_>, query: &str, plus: Plus) {
    let mut pairs: Vec<(String, String)> = query_pairs(query, plus)
        .into_iter()
        .filter(|(k, _)| !(signed.expires.is_some() && k == "X-Amz-Signature"))
        .map(|(k, v)| (encode(&k, true), encode(&v, true)))
        .collect();
    pairs.sort_unstable();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.put(b"&");
        }
        out.put(k.as_bytes());
        out.put(b"=");
        out.put(v.as_bytes());
    }
}

/// A header value as the canonical request has it: trimmed, inner runs of whitespace
/// collapsed to one space (whitespace as `str::split_whitespace` reads it; bytes that are not
/// UTF-8 read as U+FFFD).
fn canonical_value(out: &mut impl Sink, value: &[u8]) {
    if value.is_ascii() {
        // The ASCII characters `split_whitespace` splits on.
        let space = |b: &u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ');
        for (j, word) in value.split(space).filter(|w| !w.is_empty()).enumerate() {
            if j > 0 {
                out.put(b" ");
            }
            out.put(word);
        }
        return;
    }
    let text = String::from_utf8_lossy(value);
    for (j, word) in text.split_whitespace().enumerate() {
        if j > 0 {
            out.put(b" ");
        }
        out.put(word.as_bytes());
    }
}

/// Where a canonical request is written.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
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
    let mut out = Vec::with_capacity(s.len());
    encode_into(&mut out, s, slash);
    // Only ASCII is written.
    String::from_utf8_lossy(&out).into_owned()
}

/// [`encode`] into `out`, runs of bytes that stay as they are copied whole.
fn encode_into(out: &mut impl Sink, s: &str, slash: bool) {
    let bytes = s.as_bytes();
    let mut copied = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (b == b'/' && !slash) {
            continue;
        }
        out.put(&bytes[copied..i]);
        out.put(&[b'%', UPPER_HEX[usize::from(b >> 4)], UPPER_HEX[usize::from(b & 0xf)]]);
        copied = i + 1;
    }
    out.put(&bytes[copied..]);
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

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    HmacKey::new(key).sign(data)
}

/// A 32-byte hash or MAC in lowercase hex.
fn hex(bytes: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
    out
}

/// Every byte's two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [LOWER_HEX[i >> 4], LOWER_HEX[i & 0xf]];
        i += 1;
    }
    table
};

/// Whether `a` and `b` are equal, in a time that depends on their lengths only (for secrets).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// [`constant_time_eq`] of `want` (lowercase) and `given` in lowercase. Signers send
/// lowercase: that is compared as it is, eight bytes at a time; only a `given` that differs
/// is compared again, lowercased. Either comparison takes a time that depends on the
/// lengths only, and whether the first matched says only whether the signature is right.
fn constant_time_eq_lowercase(want: &[u8; 64], given: &[u8]) -> bool {
    let Ok(given) = <&[u8; 64]>::try_from(given) else { return false };
    let words = |b: &[u8; 64]| -> [u64; 8] {
        std::array::from_fn(|i| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default()))
    };
    let (w, g) = (words(want), words(given));
    if w.iter().zip(&g).fold(0u64, |acc, (x, y)| acc | (x ^ y)) == 0 {
        return true;
    }
    want.iter().zip(given).fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase())) == 0
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
