//! Routes other nodes call: the open join request and its abandonment, heartbeats,
//! certificate renewal, the assignment stream and status reports, a manager's request
//! to become a Raft voter, and Raft's own messages (handed to the raft crate's router,
//! built once, with the Raft node that runs now). Who may call each is declared with its
//! endpoint (`hoist_api::endpoint`) and checked where `routes.rs` mounts it; these
//! handlers only translate.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use hoist_api::endpoint as api;
use hoist_api::Empty;
use hoist_manager::ManagerError;
use tower::ServiceExt;

use super::routes::{
    manager_of, peer_of, source_ip, ApiError, AppState, JsonBody, Reply, NOT_IN_CLUSTER,
};
use super::server::Caller;

pub(super) async fn join(
    State(daemon): State<AppState>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(request): JsonBody<api::Join>,
) -> Reply<api::Join> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.join(request, source_ip(remote)).await?))
}

/// A node whose join failed after the manager admitted it takes its record back.
pub(super) async fn join_abandon(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Reply<api::JoinAbandon> {
    let peer = peer_of(&caller)?;
    let (_, manager) = manager_of(&daemon)?;
    manager.abandon_join(peer).await?;
    Ok(Json(Empty {}))
}

pub(super) async fn heartbeat(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(request): JsonBody<api::Heartbeat>,
) -> Reply<api::Heartbeat> {
    let peer = peer_of(&caller)?;
    let member = daemon
        .member()
        .ok_or_else(|| ApiError::new(503, NOT_IN_CLUSTER))?;
    let Some(manager) = member.manager() else {
        // A worker's listener: point the caller at a manager it may not know yet.
        return Err(ManagerError::NotLeader {
            leader_addr: member.leader_hint(),
        }
        .into());
    };
    Ok(Json(
        manager.heartbeat(peer, request, source_ip(remote)).await?,
    ))
}

pub(super) async fn renew(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): JsonBody<api::Renew>,
) -> Reply<api::Renew> {
    let peer = peer_of(&caller)?;
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.renew(peer, &request.csr_pem).await?))
}

pub(super) async fn raft_join(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): JsonBody<api::RaftJoinMe>,
) -> Reply<api::RaftJoinMe> {
    let peer = peer_of(&caller)?;
    let (_, manager) = manager_of(&daemon)?;
    manager
        .add_voter(
            peer,
            &request.addr,
            request.unconfirmed_store,
            request.raft_incarnation,
        )
        .await?;
    Ok(Json(Empty {}))
}

/// A Raft message: handed to the raft crate's router (built once, in `routes.rs`) with
/// the Raft node that runs now, at its path under `/raft`.
pub(super) async fn raft_rpc(
    State(daemon): State<AppState>,
    raft: Router,
    Path(rest): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (_, manager) = manager_of(&daemon)?;
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("/{rest}")
        .parse()
        .map_err(|_| ApiError::new(400, "bad raft path"))?;
    parts.extensions.insert(manager.raft().clone());
    raft.oneshot(Request::from_parts(parts, body))
        .await
        .map_err(|never| match never {})
}

/// The assignment stream a worker follows: one JSON line per assignment set.
pub(super) async fn assignments(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let peer = peer_of(&caller)?.clone();
    let (_, manager) = manager_of(&daemon)?;
    let lines = manager.assignment_stream(peer.node_id)?.map(|set| {
        // A blank line is the keep-alive; workers skip it.
        let mut line = match set {
            Some(set) => serde_json::to_vec(&set).unwrap_or_default(),
            None => Vec::new(),
        };
        line.push(b'\n');
        Ok::<_, Infallible>(line)
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

pub(super) async fn status(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): JsonBody<api::Status>,
) -> Reply<api::Status> {
    let peer = peer_of(&caller)?;
    let (_, manager) = manager_of(&daemon)?;
    manager.report_status(peer, request).await?;
    Ok(Json(Empty {}))
}
