//! Routes of the node's own lifecycle (`init`, `join-cluster`, `leave`,
//! `force-new-cluster`, `restore`, `backup`) and of what it knows (`info`, the mesh's
//! metrics). Who may call each is declared with its endpoint (`hoist_api::endpoint`)
//! and checked where `routes.rs` mounts it; these handlers only translate.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hoist_api::endpoint as api;
use hoist_api::{Empty, InfoResponse};
use hoist_manager::ManagerError;
use hoist_types::Role;

use super::routes::{member_of, ApiError, AppState, JsonBody, Reply};

/// `--advertise-addr` as given (an interface name allowed) turned into IP:PORT.
fn advertise_addr(given: Option<String>) -> Result<Option<String>, ApiError> {
    given
        .map(|addr| super::resolve_advertise_addr(&addr))
        .transpose()
        .map_err(|err| ApiError::new(400, format!("--advertise-addr: {err:#}")))
}

pub(super) async fn init(
    State(daemon): State<AppState>,
    Json(mut request): JsonBody<api::Init>,
) -> Reply<api::Init> {
    request.advertise_addr = advertise_addr(request.advertise_addr)?;
    Ok(Json(daemon.init(request).await?))
}

pub(super) async fn join_cluster(
    State(daemon): State<AppState>,
    Json(mut request): JsonBody<api::JoinCluster>,
) -> Reply<api::JoinCluster> {
    request.advertise_addr = advertise_addr(request.advertise_addr)?;
    Ok(Json(daemon.join(request).await?))
}

pub(super) async fn leave(
    State(daemon): State<AppState>,
    Json(request): JsonBody<api::Leave>,
) -> Reply<api::Leave> {
    daemon.leave(request.force).await?;
    Ok(Json(Empty {}))
}

pub(super) async fn force_new_cluster(
    State(daemon): State<AppState>,
    Json(request): JsonBody<api::ForceNewCluster>,
) -> Reply<api::ForceNewCluster> {
    // The recovered cluster keeps this node's address (its certificate, its peers'
    // records and its workers all know it by it): `--advertise-addr` may confirm it,
    // not change it.
    if let (Some(given), Some(member)) = (advertise_addr(request.advertise_addr)?, daemon.member())
    {
        if given != member.advertise_addr {
            return Err(ApiError::new(
                400,
                format!(
                    "--advertise-addr {given} is not this manager's address ({}): a forced new cluster keeps the address the cluster knows the node by. Leave --advertise-addr out, or give {}; to move the cluster to another address, `hoist backup` here and `hoist restore --advertise-addr {given}` on a fresh daemon",
                    member.advertise_addr, member.advertise_addr
                ),
            ));
        }
    }
    Ok(Json(daemon.force_new_cluster(request.dry_run).await?))
}

pub(super) async fn restore(
    State(daemon): State<AppState>,
    Json(mut request): JsonBody<api::Restore>,
) -> Reply<api::Restore> {
    request.advertise_addr = advertise_addr(request.advertise_addr)?;
    Ok(Json(daemon.restore(request).await?))
}

pub(super) async fn backup(State(daemon): State<AppState>) -> Reply<api::Backup> {
    Ok(Json(daemon.backup().await?))
}

/// The mesh's metrics, in Prometheus text format.
pub(super) async fn metrics(State(daemon): State<AppState>) -> Result<Response, ApiError> {
    let member = member_of(&daemon)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        member.mesh.render_metrics(),
    )
        .into_response())
}

/// What this node knows of the cluster. A manager without quorum answers from its last
/// applied state and says so, rather than failing: that is when an operator needs it.
pub(super) async fn info(State(daemon): State<AppState>) -> Reply<api::Info> {
    let Some(member) = daemon.member() else {
        return Ok(Json(InfoResponse {
            hostname: daemon.hostname().to_string(),
            ..InfoResponse::default()
        }));
    };
    let known = InfoResponse {
        node_id: Some(member.node_id),
        hostname: member.hostname.clone(),
        cluster_id: Some(member.cluster_id.clone()),
        role: Some(member.cert_role()),
        cert_not_after: Some(member.cert_not_after()),
        removed: member.removed_message(),
        ..InfoResponse::default()
    };
    if known.removed.is_some() {
        return Ok(Json(known));
    }
    if let Some(manager) = member.manager() {
        let reason = match manager.info(&member.hostname, known.cert_not_after).await {
            Ok(info) => return Ok(Json(info)),
            Err(ManagerError::NoQuorum { reason, .. }) => reason,
            Err(ManagerError::NotLeader { leader_addr }) => format!(
                "no leader answers{}",
                leader_addr
                    .map(|addr| format!(" (the last one known is at {addr})"))
                    .unwrap_or_default()
            ),
            Err(err) => return Err(err.into()),
        };
        let status = manager.raft().status();
        let (nodes, settings) = manager.local(|state| (state.nodes.len(), state.settings));
        return Ok(Json(InfoResponse {
            role: Some(Role::Manager),
            leader_addr: manager.raft().leader_addr(),
            managers: status.membership.voters.len(),
            quorum: status.membership.quorum(),
            nodes,
            raft_term: status.term,
            raft_commit_index: status.applied_index,
            heartbeat_period_ms: settings.heartbeat_period_ms,
            heartbeat_grace: settings.heartbeat_grace,
            cert_expiry_secs: settings.cert_expiry_secs,
            no_quorum: Some(reason),
            ..known
        }));
    }
    let session = member.session();
    Ok(Json(InfoResponse {
        role: Some(Role::Worker),
        leader_addr: session.leader_addr,
        managers: member.managers().len(),
        heartbeat_period_ms: session.heartbeat_period_ms,
        manager_reachable: Some(session.last_beat_ok),
        ..known
    }))
}
