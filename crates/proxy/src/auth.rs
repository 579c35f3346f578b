//! Auth policies on the request path (spec §4.2): a request to a service reached through a
//! service network passes the network's policy when the network's `authType` is `AWS_IAM`, then
//! the service's when the service's is; a layer without a policy denies everything, an explicit
//! Deny wins, and the 403 names the layer (§3.11). [`AuthCheck`] is built with the route table
//! (policies are compiled by the control plane), so a service without `AWS_IAM` anywhere costs
//! nothing per request.
//!
//! Callers are anonymous for now: a signed request (SigV4 `Authorization`, or a presigned
//! query) to a guarded service is refused with a 403 saying signatures cannot be verified yet,
//! never evaluated as anonymous.

use std::net::IpAddr;

use trellis_model::policy::{Caller, Decision, Keys, Request};
use trellis_model::snapshot::IamAuth;

/// The action of HTTP requests.
const INVOKE: &str = "vpc-lattice-svcs:Invoke";

/// The policies one (service, service network) pair is guarded by.
pub(crate) struct AuthCheck {
    /// The service network's, when its `authType` is `AWS_IAM`.
    pub(crate) network: Option<IamAuth>,
    /// The service's, when its `authType` is `AWS_IAM`.
    pub(crate) service: Option<IamAuth>,
    pub(crate) network_arn: String,
    pub(crate) service_arn: String,
}

/// What a request is, for its policies.
pub(crate) struct Facts<'a> {
    pub(crate) method: &'a str,
    /// The path, without the query.
    pub(crate) path: &'a str,
    /// The query, without `?`.
    pub(crate) query: &'a str,
    /// Every value of a header (lowercase name).
    pub(crate) header: &'a dyn Fn(&str) -> Vec<&'a [u8]>,
    /// The Lattice port.
    pub(crate) port: u16,
    pub(crate) source_vpc: &'a str,
    pub(crate) source_vpc_account: &'a str,
    pub(crate) client_ip: IpAddr,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// A policy of this layer did not allow it (`explicit`: a Deny statement matched).
    Policy { layer: Layer, explicit: bool },
    /// The request is signed, and signatures cannot be verified yet.
    Signed,
}

/// Which policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layer {
    Network,
    Service,
}

// === impl AuthCheck ===

impl AuthCheck {
    /// Whether the request passes every layer that guards it.
    pub(crate) fn check(&self, facts: &Facts<'_>) -> Result<(), Denied> {
        if is_signed(facts) {
            return Err(Denied::Signed);
        }
        let resource = self.resource(facts.path);
        let keys = Context { facts, check: self };
        let request = Request { caller: Caller::Anonymous, action: INVOKE, resource: &resource, keys: &keys };
        for (layer, auth) in [(Layer::Network, &self.network), (Layer::Service, &self.service)] {
            let Some(auth) = auth else { continue };
            let decision = auth.policy.as_ref().map_or(Decision::NoMatch, |p| p.evaluate(&request));
            match decision {
                Decision::Allow => {}
                Decision::Deny => return Err(Denied::Policy { layer, explicit: true }),
                Decision::NoMatch => return Err(Denied::Policy { layer, explicit: false }),
            }
        }
        Ok(())
    }

    /// The resource a request names: the service's ARN and the path (`…/svc-…/rates`).
    pub(crate) fn resource(&self, path: &str) -> String {
        format!("{}{}", self.service_arn, if path.is_empty() { "/" } else { path })
    }

    /// The 403's body (spec §3.11).
    pub(crate) fn message(&self, denied: &Denied, path: &str) -> String {
        match denied {
            Denied::Signed => {
                "AccessDeniedException: signed requests cannot be verified by this Trellis yet; send the \
                               request unsigned (anonymous)"
                    .to_owned()
            }
            Denied::Policy { layer, explicit } => {
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
                    "AccessDeniedException: User: anonymous is not authorized to perform: {INVOKE} on resource: {} {why}",
                    self.resource(path)
                )
            }
        }
    }
}

/// A SigV4 or SigV4A signature in the header or the query.
fn is_signed(facts: &Facts<'_>) -> bool {
    !(facts.header)("authorization").is_empty()
        || facts
            .query
            .split('&')
            .any(|p| p.split('=').next().is_some_and(|k| k.eq_ignore_ascii_case("X-Amz-Algorithm")))
}

/// The condition keys of a request.
struct Context<'c, 'f> {
    facts: &'c Facts<'f>,
    check: &'c AuthCheck,
}

impl Keys for Context<'_, '_> {
    fn values(&self, key: &str) -> Option<Vec<String>> {
        let f = self.facts;
        let one = |v: &str| Some(vec![v.to_owned()]);
        let (service, name) = key.split_once(':')?;
        if service.eq_ignore_ascii_case("aws") {
            return match name.to_ascii_lowercase().as_str() {
                "sourceip" => one(&f.client_ip.to_string()),
                "principaltype" => one("Anonymous"),
                _ => None,
            };
        }
        if !service.eq_ignore_ascii_case("vpc-lattice-svcs") {
            return None;
        }
        if let Some((kind, rest)) = name.split_once('/') {
            return match kind.to_ascii_lowercase().as_str() {
                "requestheader" => {
                    let values = (f.header)(&rest.to_ascii_lowercase());
                    (!values.is_empty())
                        .then(|| values.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect())
                }
                "requestquerystring" => {
                    let values: Vec<String> = f
                        .query
                        .split('&')
                        .filter_map(|p| {
                            let (k, v) = p.split_once('=').unwrap_or((p, ""));
                            (decode(k) == rest).then(|| decode(v))
                        })
                        .collect();
                    (!values.is_empty()).then_some(values)
                }
                _ => None,
            };
        }
        match name.to_ascii_lowercase().as_str() {
            "port" => one(&f.port.to_string()),
            "requestmethod" => one(f.method),
            "requestpath" => one(f.path),
            "servicearn" => one(&self.check.service_arn),
            "servicenetworkarn" => one(&self.check.network_arn),
            "sourcevpc" => one(f.source_vpc),
            "sourcevpcowneraccount" => one(f.source_vpc_account),
            _ => None,
        }
    }
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
