//! Auth policies on the request path (spec §4.2): a request to a service reached through a
//! service network passes the network's policy when the network's `authType` is `AWS_IAM`, then
//! the service's when the service's is; a layer without a policy denies everything, an explicit
//! Deny wins, and the 403 names the layer (§3.11). [`AuthCheck`] is built with the route table
//! (policies are compiled by the control plane), so a service without `AWS_IAM` anywhere costs
//! nothing per request.
//!
//! Callers: an unsigned request is anonymous (`aws:PrincipalType` `Anonymous`); a signed one
//! (SigV4 `Authorization` with `x-amz-content-sha256: UNSIGNED-PAYLOAD`, or a presigned query)
//! is authenticated against the installation's credentials first (spec §4.4): scope service
//! `vpc-lattice-svcs` in the service's region, a date within five minutes (presigned: not
//! expired), the session token of temporary credentials; any failure is a 403 that says which,
//! never an anonymous request. SigV4A is refused by name. A service no layer guards does not
//! authenticate: its requests, signed or not, go on as they came (what AWS does with a signature
//! there is unconfirmed; checking it would refuse requests that nothing asked to authenticate).

use std::borrow::Cow;
use std::net::IpAddr;

use trellis_model::iam::{Identities, Identity, Principal};
use trellis_model::policy::{Caller, Decision, Key, KeyKind, Keys, Narrowed};
use trellis_model::sigv4::{HeaderValues, Received, SigError, Signed, SigningKeys};
use trellis_model::snapshot::IamAuth;

/// How far a signature's date may be from now (AWS: 5 minutes).
const SKEW_SECONDS: u64 = 300;
/// The payload hash Lattice requires.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Signing keys derived so far (a busy caller's is derived once a day, not per request).
static SIGNING_KEYS: SigningKeys = SigningKeys::new();

/// The action of HTTP requests.
const INVOKE: &str = "vpc-lattice-svcs:Invoke";

/// The policies one (service, service network) pair is guarded by.
pub(crate) struct AuthCheck {
    /// The layers whose `authType` is `AWS_IAM`, network first, each with its policy narrowed
    /// to this service (`None`: no policy, every request denied).
    layers: Vec<(Layer, Option<Narrowed>)>,
    pub(crate) network_arn: String,
    pub(crate) service_arn: String,
    /// The service's region (from its ARN), which a signature's scope must name.
    region: String,
}

/// What a request is, for its policies.
pub(crate) struct Facts<'a> {
    pub(crate) method: &'a str,
    /// The path, without the query.
    pub(crate) path: &'a str,
    /// The query, without `?`.
    pub(crate) query: &'a str,
    /// Calls its second argument with every value of a header (lowercase name), in order.
    pub(crate) header: &'a HeaderValues<'a>,
    /// The headers a signature is read from.
    pub(crate) signature: SignatureHeaders<'a>,
    /// The Lattice port.
    pub(crate) port: u16,
    pub(crate) source_vpc: &'a str,
    pub(crate) source_vpc_account: &'a str,
    pub(crate) client_ip: IpAddr,
}

/// The first value of each header a signature is read from.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SignatureHeaders<'a> {
    pub(crate) authorization: Option<&'a [u8]>,
    pub(crate) amz_date: Option<&'a [u8]>,
    pub(crate) content_sha256: Option<&'a [u8]>,
    pub(crate) security_token: Option<&'a [u8]>,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// A policy of this layer did not allow it (`explicit`: a Deny statement matched) for
    /// `user` (an ARN, or `anonymous`).
    Policy { layer: Layer, explicit: bool, user: String },
    /// A signed request that could not be authenticated: why.
    Unauthenticated(String),
}

/// Which policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layer {
    Network,
    Service,
}

// === impl AuthCheck ===

impl AuthCheck {
    /// The check of a service (`service_arn`) reached through a network (`network_arn`).
    pub(crate) fn new(
        network: Option<IamAuth>,
        service: Option<IamAuth>,
        network_arn: String,
        service_arn: String,
    ) -> Self {
        let region = service_arn.split(':').nth(3).unwrap_or_default().to_owned();
        let narrow = |auth: IamAuth| auth.policy.map(|p| p.narrow(INVOKE, &service_arn));
        let layers = [(Layer::Network, network), (Layer::Service, service)]
            .into_iter()
            .filter_map(|(layer, auth)| Some((layer, narrow(auth?))))
            .collect();
        Self { layers, network_arn, service_arn, region }
    }

    /// Whether the request passes every layer that guards it (`now`: seconds since the Unix
    /// epoch); the identity of a signed request that does.
    pub(crate) fn check(
        &self,
        facts: &Facts<'_>,
        identities: &Identities,
        now: u64,
    ) -> Result<Option<std::sync::Arc<Identity>>, Denied> {
        let identity = self.authenticate(facts, identities, now)?;
        let caller = match &identity {
            Some(id) => Caller::Principal { arn: id.principal.arn(), account: &id.account },
            None => Caller::Anonymous,
        };
        let keys = Context { facts, check: self, identity: identity.as_deref() };
        for (layer, policy) in &self.layers {
            let decision = policy.as_ref().map_or(Decision::NoMatch, |p| p.evaluate(caller, facts.path, &keys));
            match decision {
                Decision::Allow => {}
                Decision::Deny | Decision::NoMatch => {
                    let user = identity.as_ref().map_or("anonymous", |id| id.principal.arn()).to_owned();
                    return Err(Denied::Policy { layer: *layer, explicit: decision == Decision::Deny, user });
                }
            }
        }
        Ok(identity)
    }

    /// The identity of a signed request (`None` when unsigned), or why it is refused.
    fn authenticate<'f>(
        &self,
        facts: &Facts<'f>,
        identities: &Identities,
        now: u64,
    ) -> Result<Option<std::sync::Arc<Identity>>, Denied> {
        // `from_utf8` first: it is much quicker than the lossy reading of text that is valid.
        let text = |v: Option<&'f [u8]>| {
            v.map(|v| std::str::from_utf8(v).map_or_else(|_| String::from_utf8_lossy(v), Cow::Borrowed))
        };
        let headers = &facts.signature;
        let (authorization, amz_date) = (text(headers.authorization), text(headers.amz_date));
        let signed = match Signed::parse(authorization.as_deref(), amz_date.as_deref(), facts.query) {
            Ok(None) => return Ok(None),
            Ok(Some(signed)) => signed,
            Err(e) => return Err(refused(format_args!("{e}"))),
        };
        if !trellis_model::policy::same(&signed.service, "vpc-lattice-svcs") {
            return Err(refused(format_args!(
                "the credential scope names service {:?}, not vpc-lattice-svcs",
                signed.service
            )));
        }
        let region = &self.region;
        if !trellis_model::policy::same(&signed.region, region) {
            return Err(refused(format_args!(
                "the credential scope names region {:?}; the service is in {region}",
                signed.region
            )));
        }
        let at = signed.time().ok_or_else(|| refused(format_args!("the signature's date is malformed")))?;
        if !signed.amz_date.starts_with(&*signed.scope_date) {
            return Err(refused(format_args!("the signature's date and its credential scope's date differ")));
        }
        match signed.expires {
            None if at.abs_diff(now) > SKEW_SECONDS => {
                return Err(refused(format_args!(
                    "the signature's date is more than 5 minutes from the server's time"
                )));
            }
            Some(expires) if now > at.saturating_add(expires) || at > now + SKEW_SECONDS => {
                return Err(refused(format_args!("the presigned request has expired or is not valid yet")));
            }
            _ => {}
        }
        let payload = text(headers.content_sha256);
        if signed.expires.is_none() && payload.as_deref() != Some(UNSIGNED_PAYLOAD) {
            return Err(refused(format_args!(
                "Lattice requires x-amz-content-sha256: UNSIGNED-PAYLOAD (payload signing is not supported)"
            )));
        }
        let token = signed.query_token.clone().or_else(|| text(headers.security_token));
        let identity = identities
            .find(&signed.access_key, token.as_deref(), now.saturating_mul(1000))
            .map_err(|e| refused(format_args!("{e}")))?
            .clone();
        let received = Received { method: facts.method, path: facts.path, query: facts.query, header: facts.header };
        match signed.verify_cached(&received, &identity.secret_access_key, UNSIGNED_PAYLOAD, &SIGNING_KEYS) {
            Ok(()) => Ok(Some(identity)),
            Err(SigError::Mismatch) => Err(refused(format_args!("the signature does not match the request"))),
            Err(e) => Err(refused(format_args!("{e}"))),
        }
    }

    /// The resource a request names: the service's ARN and the path (`…/svc-…/rates`).
    pub(crate) fn resource(&self, path: &str) -> String {
        let path = if path.is_empty() { "/" } else { path };
        let mut resource = String::with_capacity(self.service_arn.len() + path.len());
        resource.push_str(&self.service_arn);
        resource.push_str(path);
        resource
    }

    /// The 403's body (spec §3.11).
    pub(crate) fn message(&self, denied: &Denied, path: &str) -> String {
        match denied {
            Denied::Unauthenticated(why) => {
                format!("AccessDeniedException: the request's signature was refused: {why}")
            }
            Denied::Policy { layer, explicit, user } => {
                let kind = match layer {
                    Layer::Network => "network-based",
                    Layer::Service => "service-based",
                };
                let why = if *explicit {
                    format!("with an explicit deny in a {kind} policy")
                } else {
                    format!("because no {kind} policy allows the {INVOKE} action")
                };
                format!(
                    "AccessDeniedException: User: {user} is not authorized to perform: {INVOKE} on resource: {} {why}",
                    self.resource(path)
                )
            }
        }
    }
}

/// A signed request refused, and why (out of line: the check's own code stays small).
#[cold]
#[inline(never)]
fn refused(why: std::fmt::Arguments<'_>) -> Denied {
    Denied::Unauthenticated(why.to_string())
}

/// The condition keys of a request.
struct Context<'c, 'f> {
    facts: &'c Facts<'f>,
    check: &'c AuthCheck,
    identity: Option<&'c Identity>,
}

impl Keys for Context<'_, '_> {
    fn visit(&self, key: &Key, each: &mut dyn FnMut(&str)) {
        let f = self.facts;
        let principal = |value: fn(&Identity) -> &str| self.identity.map(value);
        let value = match &key.kind {
            KeyKind::SourceIp => return each(&f.client_ip.to_string()),
            KeyKind::PrincipalType => Some(self.identity.map_or("Anonymous", |id| id.principal.kind())),
            KeyKind::PrincipalArn => principal(|id| id.principal.policy_arn()),
            KeyKind::PrincipalAccount => principal(|id| &id.account),
            KeyKind::PrincipalOrgId => principal(|id| &id.organization_id),
            KeyKind::UserId => principal(|id| id.principal.user_id(&id.account)),
            KeyKind::UserName => self.identity.and_then(|id| match &id.principal {
                Principal::User { user_name, .. } => Some(user_name.as_str()),
                _ => None,
            }),
            KeyKind::PrincipalTag(tag) => {
                let tags = self.identity.map_or(&[][..], |id| &id.principal_tags[..]);
                for t in tags.iter().filter(|t| t.key.eq_ignore_ascii_case(tag)) {
                    each(&t.value);
                }
                return;
            }
            KeyKind::Port => return each(&f.port.to_string()),
            KeyKind::RequestMethod => Some(f.method),
            KeyKind::RequestPath => Some(f.path),
            KeyKind::ServiceArn => Some(self.check.service_arn.as_str()),
            KeyKind::ServiceNetworkArn => Some(self.check.network_arn.as_str()),
            KeyKind::SourceVpc => Some(f.source_vpc),
            KeyKind::SourceVpcOwnerAccount => Some(f.source_vpc_account),
            KeyKind::RequestHeader(name) => {
                (f.header)(name, &mut |v| match std::str::from_utf8(v) {
                    Ok(v) => each(v),
                    Err(_) => each(&String::from_utf8_lossy(v)),
                });
                return;
            }
            KeyKind::RequestQueryString(wanted) => {
                for pair in f.query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if decode(k) == *wanted {
                        each(&decode(v));
                    }
                }
                return;
            }
            KeyKind::Other => None,
        };
        if let Some(value) = value {
            each(value);
        }
    }
}

// === impl SignatureHeaders ===

impl<'a> SignatureHeaders<'a> {
    /// Found in one pass over a request's `(name, value)` fields (names in any case).
    pub(crate) fn find(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut found = Self::default();
        for (name, value) in fields {
            let slot = match name.len() {
                13 if crate::swar::eq_lowercase(name, b"authorization") => &mut found.authorization,
                10 if crate::swar::eq_lowercase(name, b"x-amz-date") => &mut found.amz_date,
                20 if crate::swar::eq_lowercase(name, b"x-amz-content-sha256") => &mut found.content_sha256,
                20 if crate::swar::eq_lowercase(name, b"x-amz-security-token") => &mut found.security_token,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        found
    }
}

/// `x-amzn-lattice-identity` for an authenticated caller (spec §3.8):
/// `Principal=<arn>;PrincipalOrgID=<org>`, and `;SessionName=<name>` for a role's session.
pub(crate) fn identity_header(id: &Identity) -> String {
    let mut out = Vec::new();
    write_identity(&mut out, id);
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends [`identity_header`]'s text to `out` (HTTP/1.1 writes it straight into the head it
/// forwards).
pub(crate) fn write_identity(out: &mut Vec<u8>, id: &Identity) {
    out.extend_from_slice(b"Principal=");
    out.extend_from_slice(id.principal.arn().as_bytes());
    out.extend_from_slice(b";PrincipalOrgID=");
    out.extend_from_slice(id.organization_id.as_bytes());
    if let Principal::AssumedRole { session_name, .. } = &id.principal {
        out.extend_from_slice(b";SessionName=");
        out.extend_from_slice(session_name.as_bytes());
    }
}

/// Now, in seconds since the Unix epoch, from the kernel's coarse clock (a few milliseconds
/// behind at most, which a check of minutes does not see; it reads no time counter, which
/// the precise clock does on every request).
pub(crate) fn now() -> u64 {
    crate::clock::unix_seconds()
}

/// Percent-decoding of a query part (`+` is a space in forms).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
