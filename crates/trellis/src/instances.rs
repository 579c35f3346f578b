//! `/_trellis/` endpoints for instances (netns mode): `POST /_trellis/vpcs/{vpc}/instances`
//! (`{"subnetId": …, "ownerPid": …}`) starts one and answers its record, `GET
//! /_trellis/instances` lists this node's, `DELETE /_trellis/instances/{id}` removes one. In
//! loopback mode each answers 409 with a message saying why.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use crate::netmgr::{InstanceError, NetManager};

/// The body of a request for an instance.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInstance {
    subnet_id: Option<String>,
    owner_pid: u32,
}

type Manager = Option<Arc<NetManager>>;

/// The instance endpoints, served by `manager` (none in loopback mode).
pub fn router(manager: Manager) -> axum::Router {
    axum::Router::new()
        .route("/_trellis/vpcs/{vpc}/instances", post(create))
        .route("/_trellis/instances", get(list))
        .route("/_trellis/instances/{id}", delete(remove))
        .with_state(manager)
}

async fn create(State(manager): State<Manager>, Path(vpc): Path<String>, body: axum::body::Bytes) -> Response {
    let Some(manager) = manager else { return loopback() };
    let request: CreateInstance = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return message(StatusCode::BAD_REQUEST, &format!("invalid request: {e}")),
    };
    match manager.create_instance(&vpc, request.subnet_id.as_deref(), request.owner_pid).await {
        Ok(instance) => (StatusCode::CREATED, Json(instance)).into_response(),
        Err(e) => failure(&e),
    }
}

async fn list(State(manager): State<Manager>) -> Response {
    let Some(manager) = manager else { return loopback() };
    match manager.instances().await {
        Ok(instances) => Json(json!({ "instances": instances })).into_response(),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn remove(State(manager): State<Manager>, Path(id): Path<String>) -> Response {
    let Some(manager) = manager else { return loopback() };
    match manager.delete_instance(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failure(&e),
    }
}

fn failure(e: &InstanceError) -> Response {
    let status = match e {
        InstanceError::NoVpc(_) | InstanceError::NotFound(_) => StatusCode::NOT_FOUND,
        InstanceError::NoSubnet(_) | InstanceError::NoOwner(_) => StatusCode::BAD_REQUEST,
        InstanceError::Full(_) => StatusCode::CONFLICT,
        InstanceError::Store(_) | InstanceError::Network(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    message(status, &e.to_string())
}

fn loopback() -> Response {
    message(StatusCode::CONFLICT, "instances need real VPC networks: run the server with --network netns (as root)")
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}
