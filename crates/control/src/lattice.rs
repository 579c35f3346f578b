//! The VPC Lattice API (`rest-json`, signing name `vpc-lattice`): the route table from method and
//! path to [`Operation`], and dispatch to one handler per operation, grouped by resource family.
//! Operations of spec §1.7's P2 group answer `ValidationException` (`unknownOperation`) until
//! they are built.

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use trellis_store::Store;

use crate::ControlState;
use crate::dispatch::Ctx;
use crate::keys::Keys;

mod access_log;
mod association;
mod auth_policy;
mod error;
mod idempotency;
pub(crate) mod input;
mod listener;
mod page;
mod quota;
mod rule;
mod service;
mod service_network;
mod tag;
mod target;
mod target_group;

pub use error::ApiError;
pub use idempotency::sweep as sweep_tokens;

/// Every operation of the `vpc-lattice` API, named as AWS names them, A–Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // The names are AWS's; the API reference documents each.
pub enum Operation {
    BatchUpdateRule,
    CreateAccessLogSubscription,
    CreateListener,
    CreateResourceConfiguration,
    CreateResourceGateway,
    CreateRule,
    CreateService,
    CreateServiceNetwork,
    CreateServiceNetworkResourceAssociation,
    CreateServiceNetworkServiceAssociation,
    CreateServiceNetworkVpcAssociation,
    CreateTargetGroup,
    DeleteAccessLogSubscription,
    DeleteAuthPolicy,
    DeleteDomainVerification,
    DeleteListener,
    DeleteResourceConfiguration,
    DeleteResourceEndpointAssociation,
    DeleteResourceGateway,
    DeleteResourcePolicy,
    DeleteRule,
    DeleteService,
    DeleteServiceNetwork,
    DeleteServiceNetworkResourceAssociation,
    DeleteServiceNetworkServiceAssociation,
    DeleteServiceNetworkVpcAssociation,
    DeleteTargetGroup,
    DeregisterTargets,
    GetAccessLogSubscription,
    GetAuthPolicy,
    GetDomainVerification,
    GetListener,
    GetResourceConfiguration,
    GetResourceGateway,
    GetResourcePolicy,
    GetRule,
    GetService,
    GetServiceNetwork,
    GetServiceNetworkResourceAssociation,
    GetServiceNetworkServiceAssociation,
    GetServiceNetworkVpcAssociation,
    GetTargetGroup,
    ListAccessLogSubscriptions,
    ListDomainVerifications,
    ListListeners,
    ListResourceConfigurations,
    ListResourceEndpointAssociations,
    ListResourceGateways,
    ListRules,
    ListServiceNetworkResourceAssociations,
    ListServiceNetworkServiceAssociations,
    ListServiceNetworkVpcAssociations,
    ListServiceNetworkVpcEndpointAssociations,
    ListServiceNetworks,
    ListServices,
    ListTagsForResource,
    ListTargetGroups,
    ListTargets,
    PutAuthPolicy,
    PutResourcePolicy,
    RegisterTargets,
    StartDomainVerification,
    TagResource,
    UntagResource,
    UpdateAccessLogSubscription,
    UpdateListener,
    UpdateResourceConfiguration,
    UpdateResourceGateway,
    UpdateRule,
    UpdateService,
    UpdateServiceNetwork,
    UpdateServiceNetworkVpcAssociation,
    UpdateTargetGroup,
}

/// One parsed Lattice request, handed to its operation's handler.
pub(crate) struct Req<'a> {
    pub(crate) state: &'a ControlState,
    pub(crate) ctx: &'a Ctx,
    pub(crate) op: Operation,
    /// The path's identifiers, percent-decoded, outermost first.
    pub(crate) path: Vec<String>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: &'a Bytes,
    pub(crate) keys: Keys,
}

/// A successful answer: a status and, except for 204, a JSON body.
pub(crate) struct Reply {
    status: StatusCode,
    body: Option<Vec<u8>>,
}

pub(crate) async fn handle(state: &ControlState, ctx: &Ctx, method: &Method, uri: &Uri, body: &Bytes) -> Response {
    let result = match route(method, uri.path()) {
        Some((op, path)) => {
            let query =
                uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
            let keys = Keys::new(&ctx.region, &ctx.account);
            let req = Req { state, ctx, op, path, query, body, keys };
            dispatch(&req).await
        }
        None => Err(ApiError::unknown_operation(&format!("{method} {}", uri.path()))),
    };
    let mut resp = match result {
        Ok(reply) => reply.into_response(),
        Err(err) => err.into_response(),
    };
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        resp.headers_mut().insert("x-amzn-requestid", id);
    }
    resp
}

async fn dispatch(req: &Req<'_>) -> Result<Reply, ApiError> {
    use Operation::*;
    match req.op {
        BatchUpdateRule => rule::batch_update(req).await,
        CreateAccessLogSubscription => access_log::create(req).await,
        CreateListener => listener::create(req).await,
        CreateRule => rule::create(req).await,
        CreateService => service::create(req).await,
        CreateServiceNetwork => service_network::create(req).await,
        CreateServiceNetworkServiceAssociation => association::create_service(req).await,
        CreateServiceNetworkVpcAssociation => association::create_vpc(req).await,
        CreateTargetGroup => target_group::create(req).await,
        DeleteAccessLogSubscription => access_log::delete(req).await,
        DeleteAuthPolicy => auth_policy::delete(req).await,
        DeleteListener => listener::delete(req).await,
        DeleteRule => rule::delete(req).await,
        DeleteService => service::delete(req).await,
        DeleteServiceNetwork => service_network::delete(req).await,
        DeleteServiceNetworkServiceAssociation => association::delete_service(req).await,
        DeleteServiceNetworkVpcAssociation => association::delete_vpc(req).await,
        DeleteTargetGroup => target_group::delete(req).await,
        DeregisterTargets => target::deregister(req).await,
        GetAccessLogSubscription => access_log::get(req).await,
        GetAuthPolicy => auth_policy::get(req).await,
        GetListener => listener::get(req).await,
        GetRule => rule::get(req).await,
        GetService => service::get(req).await,
        GetServiceNetwork => service_network::get(req).await,
        GetServiceNetworkServiceAssociation => association::get_service(req).await,
        GetServiceNetworkVpcAssociation => association::get_vpc(req).await,
        GetTargetGroup => target_group::get(req).await,
        ListAccessLogSubscriptions => access_log::list(req).await,
        ListListeners => listener::list(req).await,
        ListRules => rule::list(req).await,
        ListServiceNetworkServiceAssociations => association::list_service(req).await,
        ListServiceNetworkVpcAssociations => association::list_vpc(req).await,
        ListServiceNetworks => service_network::list(req).await,
        ListServices => service::list(req).await,
        ListTagsForResource => tag::list(req).await,
        ListTargetGroups => target_group::list(req).await,
        ListTargets => target::list(req).await,
        PutAuthPolicy => auth_policy::put(req).await,
        RegisterTargets => target::register(req).await,
        TagResource => tag::tag(req).await,
        UntagResource => tag::untag(req).await,
        UpdateAccessLogSubscription => access_log::update(req).await,
        UpdateListener => listener::update(req).await,
        UpdateRule => rule::update(req).await,
        UpdateService => service::update(req).await,
        UpdateServiceNetwork => service_network::update(req).await,
        UpdateServiceNetworkVpcAssociation => association::update_vpc(req).await,
        UpdateTargetGroup => target_group::update(req).await,
        // Spec §1.7 P2: resource gateways and configurations, domain verification, resource
        // policies. Not built yet; say so plainly.
        CreateResourceConfiguration
        | CreateResourceGateway
        | CreateServiceNetworkResourceAssociation
        | DeleteDomainVerification
        | DeleteResourceConfiguration
        | DeleteResourceEndpointAssociation
        | DeleteResourceGateway
        | DeleteResourcePolicy
        | DeleteServiceNetworkResourceAssociation
        | GetDomainVerification
        | GetResourceConfiguration
        | GetResourceGateway
        | GetResourcePolicy
        | GetServiceNetworkResourceAssociation
        | ListDomainVerifications
        | ListResourceConfigurations
        | ListResourceEndpointAssociations
        | ListResourceGateways
        | ListServiceNetworkResourceAssociations
        | ListServiceNetworkVpcEndpointAssociations
        | PutResourcePolicy
        | StartDomainVerification
        | UpdateResourceConfiguration
        | UpdateResourceGateway => {
            Err(ApiError::unknown_operation(&format!("{:?} is not supported by Trellis yet", req.op)))
        }
    }
}

/// Maps a method and raw path to an operation and its decoded path identifiers. The path is
/// split on `/` before each segment is percent-decoded, so an ARN (`%2F` inside) stays one
/// segment.
fn route(method: &Method, raw_path: &str) -> Option<(Operation, Vec<String>)> {
    use Operation::*;
    let raw: Vec<&str> = raw_path.trim_start_matches('/').split('/').collect();
    let segs: Vec<String> = raw.iter().map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned()).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.as_str();
    let (op, ids): (Operation, Vec<&str>) = match (m, s.as_slice()) {
        ("POST", ["accesslogsubscriptions"]) => (CreateAccessLogSubscription, vec![]),
        ("GET", ["accesslogsubscriptions"]) => (ListAccessLogSubscriptions, vec![]),
        ("GET", ["accesslogsubscriptions", id]) => (GetAccessLogSubscription, vec![id]),
        ("PATCH", ["accesslogsubscriptions", id]) => (UpdateAccessLogSubscription, vec![id]),
        ("DELETE", ["accesslogsubscriptions", id]) => (DeleteAccessLogSubscription, vec![id]),
        ("GET", ["authpolicy", id]) => (GetAuthPolicy, vec![id]),
        ("PUT", ["authpolicy", id]) => (PutAuthPolicy, vec![id]),
        ("DELETE", ["authpolicy", id]) => (DeleteAuthPolicy, vec![id]),
        ("POST", ["domainverifications"]) => (StartDomainVerification, vec![]),
        ("GET", ["domainverifications"]) => (ListDomainVerifications, vec![]),
        ("GET", ["domainverifications", id]) => (GetDomainVerification, vec![id]),
        ("DELETE", ["domainverifications", id]) => (DeleteDomainVerification, vec![id]),
        ("POST", ["resourceconfigurations"]) => (CreateResourceConfiguration, vec![]),
        ("GET", ["resourceconfigurations"]) => (ListResourceConfigurations, vec![]),
        ("GET", ["resourceconfigurations", id]) => (GetResourceConfiguration, vec![id]),
        ("PATCH", ["resourceconfigurations", id]) => (UpdateResourceConfiguration, vec![id]),
        ("DELETE", ["resourceconfigurations", id]) => (DeleteResourceConfiguration, vec![id]),
        ("GET", ["resourceendpointassociations"]) => (ListResourceEndpointAssociations, vec![]),
        ("DELETE", ["resourceendpointassociations", id]) => (DeleteResourceEndpointAssociation, vec![id]),
        ("POST", ["resourcegateways"]) => (CreateResourceGateway, vec![]),
        ("GET", ["resourcegateways"]) => (ListResourceGateways, vec![]),
        ("GET", ["resourcegateways", id]) => (GetResourceGateway, vec![id]),
        ("PATCH", ["resourcegateways", id]) => (UpdateResourceGateway, vec![id]),
        ("DELETE", ["resourcegateways", id]) => (DeleteResourceGateway, vec![id]),
        ("GET", ["resourcepolicy", id]) => (GetResourcePolicy, vec![id]),
        ("PUT", ["resourcepolicy", id]) => (PutResourcePolicy, vec![id]),
        ("DELETE", ["resourcepolicy", id]) => (DeleteResourcePolicy, vec![id]),
        ("POST", ["servicenetworks"]) => (CreateServiceNetwork, vec![]),
        ("GET", ["servicenetworks"]) => (ListServiceNetworks, vec![]),
        ("GET", ["servicenetworks", id]) => (GetServiceNetwork, vec![id]),
        ("PATCH", ["servicenetworks", id]) => (UpdateServiceNetwork, vec![id]),
        ("DELETE", ["servicenetworks", id]) => (DeleteServiceNetwork, vec![id]),
        ("POST", ["servicenetworkresourceassociations"]) => (CreateServiceNetworkResourceAssociation, vec![]),
        ("GET", ["servicenetworkresourceassociations"]) => (ListServiceNetworkResourceAssociations, vec![]),
        ("GET", ["servicenetworkresourceassociations", id]) => (GetServiceNetworkResourceAssociation, vec![id]),
        ("DELETE", ["servicenetworkresourceassociations", id]) => (DeleteServiceNetworkResourceAssociation, vec![id]),
        ("POST", ["servicenetworkserviceassociations"]) => (CreateServiceNetworkServiceAssociation, vec![]),
        ("GET", ["servicenetworkserviceassociations"]) => (ListServiceNetworkServiceAssociations, vec![]),
        ("GET", ["servicenetworkserviceassociations", id]) => (GetServiceNetworkServiceAssociation, vec![id]),
        ("DELETE", ["servicenetworkserviceassociations", id]) => (DeleteServiceNetworkServiceAssociation, vec![id]),
        ("GET", ["servicenetworkvpcendpointassociations"]) => (ListServiceNetworkVpcEndpointAssociations, vec![]),
        ("POST", ["servicenetworkvpcassociations"]) => (CreateServiceNetworkVpcAssociation, vec![]),
        ("GET", ["servicenetworkvpcassociations"]) => (ListServiceNetworkVpcAssociations, vec![]),
        ("GET", ["servicenetworkvpcassociations", id]) => (GetServiceNetworkVpcAssociation, vec![id]),
        ("PATCH", ["servicenetworkvpcassociations", id]) => (UpdateServiceNetworkVpcAssociation, vec![id]),
        ("DELETE", ["servicenetworkvpcassociations", id]) => (DeleteServiceNetworkVpcAssociation, vec![id]),
        ("POST", ["services"]) => (CreateService, vec![]),
        ("GET", ["services"]) => (ListServices, vec![]),
        ("GET", ["services", id]) => (GetService, vec![id]),
        ("PATCH", ["services", id]) => (UpdateService, vec![id]),
        ("DELETE", ["services", id]) => (DeleteService, vec![id]),
        ("POST", ["services", svc, "listeners"]) => (CreateListener, vec![svc]),
        ("GET", ["services", svc, "listeners"]) => (ListListeners, vec![svc]),
        ("GET", ["services", svc, "listeners", l]) => (GetListener, vec![svc, l]),
        ("PATCH", ["services", svc, "listeners", l]) => (UpdateListener, vec![svc, l]),
        ("DELETE", ["services", svc, "listeners", l]) => (DeleteListener, vec![svc, l]),
        ("POST", ["services", svc, "listeners", l, "rules"]) => (CreateRule, vec![svc, l]),
        ("GET", ["services", svc, "listeners", l, "rules"]) => (ListRules, vec![svc, l]),
        ("PATCH", ["services", svc, "listeners", l, "rules"]) => (BatchUpdateRule, vec![svc, l]),
        ("GET", ["services", svc, "listeners", l, "rules", r]) => (GetRule, vec![svc, l, r]),
        ("PATCH", ["services", svc, "listeners", l, "rules", r]) => (UpdateRule, vec![svc, l, r]),
        ("DELETE", ["services", svc, "listeners", l, "rules", r]) => (DeleteRule, vec![svc, l, r]),
        ("GET", ["tags", arn]) => (ListTagsForResource, vec![arn]),
        ("POST", ["tags", arn]) => (TagResource, vec![arn]),
        ("DELETE", ["tags", arn]) => (UntagResource, vec![arn]),
        ("POST", ["targetgroups"]) => (CreateTargetGroup, vec![]),
        ("GET", ["targetgroups"]) => (ListTargetGroups, vec![]),
        ("GET", ["targetgroups", id]) => (GetTargetGroup, vec![id]),
        ("PATCH", ["targetgroups", id]) => (UpdateTargetGroup, vec![id]),
        ("DELETE", ["targetgroups", id]) => (DeleteTargetGroup, vec![id]),
        ("POST", ["targetgroups", id, "deregistertargets"]) => (DeregisterTargets, vec![id]),
        ("POST", ["targetgroups", id, "listtargets"]) => (ListTargets, vec![id]),
        ("POST", ["targetgroups", id, "registertargets"]) => (RegisterTargets, vec![id]),
        _ => return None,
    };
    Some((op, ids.into_iter().map(str::to_owned).collect()))
}

// === impl Req ===

impl Req<'_> {
    pub(crate) fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }

    /// The request body as the operation's input shape.
    pub(crate) fn input<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        input::parse_body(self.body)
    }

    /// The single value of a query parameter.
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated query parameter.
    pub(crate) fn query_all(&self, name: &str) -> Vec<&str> {
        self.query.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The ARN of a Lattice resource in this request's region and account.
    pub(crate) fn arn(&self, kind: trellis_model::Kind, parents: &[&str], id: &str) -> String {
        trellis_model::Arn::lattice(&self.ctx.region, &self.ctx.account, kind, parents, id)
    }

    pub(crate) fn quotas(&self) -> &crate::Quotas {
        &self.state.config.quotas
    }
}

// === impl Reply ===

impl Reply {
    /// A JSON answer. `null` members are dropped at every depth: AWS omits unset members.
    pub(crate) fn json(status: StatusCode, mut value: serde_json::Value) -> Self {
        input::strip_nulls(&mut value);
        Self { status, body: Some(value.to_string().into_bytes()) }
    }

    /// `200 OK` with a JSON body.
    pub(crate) fn ok(body: serde_json::Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    /// `204 No Content`.
    pub(crate) fn no_content() -> Self {
        Self { status: StatusCode::NO_CONTENT, body: None }
    }

    /// A previously rendered answer, replayed for a repeated `clientToken`.
    pub(crate) fn raw(status: StatusCode, body: Vec<u8>) -> Self {
        Self { status, body: Some(body) }
    }

    pub(crate) fn body(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default()
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self.body {
            Some(body) => {
                let mut resp = (self.status, body).into_response();
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                resp
            }
            None => self.status.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_segments_stay_whole() {
        let (op, ids) = route(
            &Method::GET,
            "/services/arn%3Aaws%3Avpc-lattice%3Aus-east-1%3A111122223333%3Aservice%2Fsvc-0123456789abcdef0",
        )
        .unwrap();
        assert_eq!(op, Operation::GetService);
        assert_eq!(ids, vec!["arn:aws:vpc-lattice:us-east-1:111122223333:service/svc-0123456789abcdef0"]);
    }

    #[test]
    fn routes_nested_paths() {
        let (op, ids) = route(&Method::PATCH, "/services/svc-1/listeners/listener-2/rules").unwrap();
        assert_eq!((op, ids.len()), (Operation::BatchUpdateRule, 2));
        assert!(route(&Method::PUT, "/services").is_none());
        assert!(route(&Method::GET, "/nothing").is_none());
    }
}
