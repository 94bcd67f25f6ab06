//! The HTTP routes both listeners serve, and who may call which.
//!
//! Five classes of route, decided by path: local-only lifecycle (`init`, `join-cluster`,
//! `leave`), the open join endpoint (a joining node has no certificate yet), member
//! endpoints (heartbeat, renewal: any node certificate of this cluster), manager peer
//! endpoints (Raft: manager certificates of current Raft members), and the control API
//! (the local socket, or a manager certificate of a node the cluster state still
//! records as a manager). Handlers translate typed errors into statuses with a JSON
//! `{"message"}` body.

use std::sync::Arc;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hoist_api::{
    ErrorBody, HeartbeatRequest, InfoResponse, InitRequest, JoinClusterRequest, JoinRequest,
    LeaveRequest, NodeUpdateRequest, NotLeaderBody, RaftJoinRequest, RenewRequest, TokenResponse,
};
use hoist_manager::{Demotion, Manager, ManagerError};
use hoist_pki::PeerIdentity;
use hoist_types::Role;
use serde::Deserialize;
use tower::ServiceExt;

use super::errors::{manager_error_status, LifecycleError};
use super::member::Member;
use super::server::Caller;
use super::{ca_routes, limits, service_routes, Daemon};

type AppState = Arc<Daemon>;

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/init", post(init))
        .route("/v1/join-cluster", post(join_cluster))
        .route("/v1/leave", post(leave))
        .route("/v1/force-new-cluster", post(force_new_cluster))
        .route("/v1/restore", post(restore))
        .route("/v1/backup", get(backup))
        .route("/v1/join", post(join))
        .route("/v1/join/abandon", post(join_abandon))
        .route("/v1/dispatcher/heartbeat", post(heartbeat))
        .route("/v1/node/renew", post(renew))
        .route("/v1/raft/join-me", post(raft_join))
        .route("/raft/{*rest}", post(raft_rpc))
        .route("/v1/info", get(info))
        .route("/metrics", get(metrics))
        .route("/v1/nodes", get(node_ls))
        .route("/v1/nodes/{node}", get(node_inspect).delete(node_rm))
        .route("/v1/nodes/{node}/update", post(node_update))
        .route("/v1/nodes/{node}/promote", post(node_promote))
        .route("/v1/nodes/{node}/demote", post(node_demote))
        .route(
            "/v1/join-tokens/{role}",
            get(join_token).post(join_token_rotate),
        )
        .route("/v1/cluster", get(super::cluster_routes::cluster_inspect))
        .route(
            "/v1/cluster/update",
            post(super::cluster_routes::cluster_update),
        )
        .route("/v1/cluster/ca", get(ca_routes::ca_status))
        .route("/v1/cluster/ca/rotate", post(ca_routes::ca_rotate))
        .route(
            "/v1/services",
            get(service_routes::service_ls).post(service_routes::service_create),
        )
        .route(
            "/v1/services/{service}",
            get(service_routes::service_inspect).delete(service_routes::service_rm),
        )
        .route(
            "/v1/services/{service}/update",
            post(service_routes::service_update),
        )
        .route(
            "/v1/services/{service}/scale",
            post(service_routes::service_scale),
        )
        .route(
            "/v1/services/{service}/tasks",
            get(service_routes::service_tasks),
        )
        .route(
            "/v1/services/{service}/logs",
            get(service_routes::service_logs),
        )
        .route("/v1/node-logs", get(service_routes::node_logs))
        .route(
            "/v1/dispatcher/assignments",
            post(service_routes::assignments),
        )
        .route("/v1/dispatcher/status", post(service_routes::status))
        .layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            authorize,
        ))
        // Each route's own limit is `limits::bound_input`'s, in front of everything.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(limits::JoinLimiter::new({
                let daemon = daemon.clone();
                move || join_rate_limit(&daemon)
            })),
            limits::bound_input,
        ))
        .with_state(daemon)
}

/// The cluster's `join_rate_limit`, as this manager last applied it (only managers
/// answer joins; the default otherwise).
fn join_rate_limit(daemon: &Daemon) -> u32 {
    daemon
        .member()
        .and_then(|member| member.manager())
        .map(|manager| manager.local(|state| state.settings.join_rate_limit))
        .unwrap_or(limits::JOIN_PER_SECOND)
}

/// An error response.
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: serde_json::to_value(ErrorBody {
                message: message.into(),
            })
            .unwrap_or_default(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<ManagerError> for ApiError {
    fn from(err: ManagerError) -> Self {
        let status = manager_error_status(&err);
        if let ManagerError::NotLeader { leader_addr } = err {
            return ApiError {
                status: StatusCode::MISDIRECTED_REQUEST,
                body: serde_json::to_value(NotLeaderBody {
                    message: "this manager is not the leader".into(),
                    leader_addr,
                })
                .unwrap_or_default(),
            };
        }
        ApiError::new(status, err.to_string())
    }
}

impl From<LifecycleError> for ApiError {
    fn from(err: LifecycleError) -> Self {
        ApiError::new(err.status(), err.to_string())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    LocalOnly,
    Open,
    Member,
    ManagerPeer,
    Control,
}

fn class_of(path: &str) -> Class {
    match path {
        "/v1/init" | "/v1/join-cluster" | "/v1/leave" | "/v1/force-new-cluster" | "/v1/restore" => {
            Class::LocalOnly
        }
        "/v1/join" => Class::Open,
        "/v1/dispatcher/heartbeat" | "/v1/node/renew" | "/v1/join/abandon" => Class::Member,
        "/v1/dispatcher/assignments" | "/v1/dispatcher/status" => Class::Member,
        "/v1/raft/join-me" => Class::ManagerPeer,
        _ if path.starts_with("/raft/") => Class::ManagerPeer,
        _ if path.starts_with("/v1/dispatcher/") => Class::Member,
        _ => Class::Control,
    }
}

const NOT_IN_CLUSTER: &str =
    "this node is not part of a cluster: run `hoist init` or `hoist join` first";
const NOT_A_MANAGER: &str = "this node is not a manager. Worker nodes can't be used to view or modify cluster state: run this command on a manager node, or promote this node to a manager";

async fn authorize(
    State(daemon): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Peer(None));
    let class = class_of(request.uri().path());
    match (&caller, class) {
        (Caller::Local, Class::ManagerPeer | Class::Member) => {
            return Err(ApiError::new(403, "this endpoint is for other nodes, over TLS"))
        }
        (Caller::Local, _) => return Ok(next.run(request).await),
        (Caller::Peer(_), Class::LocalOnly) => {
            return Err(ApiError::new(403, "this endpoint is only served on the local socket"))
        }
        (Caller::Peer(_), Class::Open) => return Ok(next.run(request).await),
        (Caller::Peer(None), _) => {
            return Err(ApiError::new(
                401,
                "this endpoint requires a client certificate signed by the cluster CA (a node gets one by joining)",
            ))
        }
        (Caller::Peer(Some(_)), _) => {}
    }
    let Caller::Peer(Some(peer)) = &caller else {
        return Err(ApiError::new(401, "no client certificate"));
    };
    let member = daemon
        .member()
        .ok_or_else(|| ApiError::new(503, NOT_IN_CLUSTER))?;
    if peer.cluster_id != member.cluster_id {
        return Err(ApiError::new(
            403,
            format!(
                "the certificate is for cluster {}, not this one",
                peer.cluster_id
            ),
        ));
    }
    // A manager that has just joined has not received the state yet (`None`): it cannot
    // tell members from removed nodes, and must let the leader's replication in.
    let recorded = member.manager().and_then(|manager| {
        manager.local(|state| {
            state.is_initialized().then(|| {
                (
                    state.node_is_member(peer.node_id),
                    state.nodes.get(&peer.node_id).map(|node| node.role),
                )
            })
        })
    });
    if let Some((false, _)) = recorded {
        return Err(ApiError::new(
            403,
            format!(
                "node {} was removed from this cluster (or dropped by force-new-cluster): its certificate is refused. Run `hoist leave --force` on it, then join again with a token",
                peer.node_id
            ),
        ));
    }
    let needs_manager = matches!(class, Class::ManagerPeer | Class::Control);
    if needs_manager && peer.role != Role::Manager {
        return Err(ApiError::new(
            403,
            format!(
                "this endpoint is for managers: node {} presented a worker certificate",
                peer.node_id
            ),
        ));
    }
    // A certificate outlives a demotion: the role that counts is the one the cluster
    // records now. Raft RPCs are left to the Raft membership check below, which a
    // demotion changes first; a follower whose state lags must still take the entries
    // that bring it up to date.
    let by_state = needs_manager && !request.uri().path().starts_with("/raft/");
    if let (true, Some((true, role))) = (by_state, recorded) {
        if role != Some(Role::Manager) {
            return Err(ApiError::new(
                403,
                format!(
                    "node {} is no longer a manager of this cluster (it was demoted): the manager certificate it still holds is refused",
                    peer.node_id
                ),
            ));
        }
    }
    if needs_manager && member.manager().is_none() {
        // No state here (a worker, or a manager whose Raft is not running): trust only
        // the managers the join answer, then the last heartbeat answer, named (none are
        // known in a record an older version wrote, until its first heartbeat).
        let known = member.manager_ids();
        if !known.is_empty() && !known.contains(&peer.node_id) {
            return Err(ApiError::new(
                403,
                format!(
                    "node {} is not a manager of this cluster as far as this node knows (demoted or removed): its manager certificate is refused",
                    peer.node_id
                ),
            ));
        }
    }
    // Appends and snapshots come from a leader, whose term openraft checks; this node's
    // membership may be older than the sender's (a manager catching up installs a
    // snapshot whose membership predates the leader's own addition), so refusing a
    // sender it does not know yet would keep it from ever learning the current group.
    // Votes, forwarded writes and read-index requests go to a node whose view counts.
    let from_leader = matches!(request.uri().path(), "/raft/append" | "/raft/snapshot");
    if request.uri().path().starts_with("/raft/") && !from_leader {
        let manager = member
            .manager()
            .ok_or_else(|| ApiError::new(503, NOT_A_MANAGER))?;
        let membership = manager.raft().membership();
        let knows_membership = !membership.voters.is_empty();
        if knows_membership
            && !membership.voters.contains_key(&peer.node_id.0)
            && !membership.learners.contains_key(&peer.node_id.0)
        {
            return Err(ApiError::new(
                403,
                format!("node {} is not a member of the raft group", peer.node_id),
            ));
        }
    }
    Ok(next.run(request).await)
}

pub(super) fn peer_of(caller: &Caller) -> Result<&PeerIdentity, ApiError> {
    match caller {
        Caller::Peer(Some(peer)) => Ok(peer),
        _ => Err(ApiError::new(401, "a node certificate is required")),
    }
}

pub(super) fn member_of(daemon: &Daemon) -> Result<Arc<Member>, ApiError> {
    let member = daemon
        .member()
        .ok_or_else(|| ApiError::new(503, NOT_IN_CLUSTER))?;
    if let Some(message) = member.removed_message() {
        return Err(ApiError::new(
            503,
            format!("this node was refused by the cluster: {message}"),
        ));
    }
    Ok(member)
}

pub(super) fn manager_of(daemon: &Daemon) -> Result<(Arc<Member>, Manager), ApiError> {
    let member = member_of(daemon)?;
    let manager = member.manager().ok_or_else(|| {
        if member.cert_role() == Role::Manager {
            // Between a restart and Raft coming up, or during a promotion.
            ApiError::new(
                503,
                "this manager is starting (Raft is not running yet): retry in a moment",
            )
        } else {
            ApiError::new(503, NOT_A_MANAGER)
        }
    })?;
    Ok((member, manager))
}

/// `--advertise-addr` as given (an interface name allowed) turned into IP:PORT.
fn advertise_addr(given: Option<String>) -> Result<Option<String>, ApiError> {
    given
        .map(|addr| super::resolve_advertise_addr(&addr))
        .transpose()
        .map_err(|err| ApiError::new(400, format!("--advertise-addr: {err:#}")))
}

async fn init(
    State(daemon): State<AppState>,
    Json(mut request): Json<InitRequest>,
) -> ApiResult<hoist_api::InitResponse> {
    request.advertise_addr = advertise_addr(request.advertise_addr)?;
    Ok(Json(daemon.init(request).await?))
}

async fn join_cluster(
    State(daemon): State<AppState>,
    Json(mut request): Json<JoinClusterRequest>,
) -> ApiResult<hoist_api::JoinClusterResponse> {
    request.advertise_addr = advertise_addr(request.advertise_addr)?;
    Ok(Json(daemon.join(request).await?))
}

async fn leave(
    State(daemon): State<AppState>,
    Json(request): Json<LeaveRequest>,
) -> ApiResult<serde_json::Value> {
    daemon.leave(request.force).await?;
    Ok(Json(serde_json::json!({})))
}

async fn force_new_cluster(
    State(daemon): State<AppState>,
    Json(request): Json<hoist_api::ForceNewClusterRequest>,
) -> ApiResult<hoist_api::ForceNewClusterResponse> {
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

async fn restore(
    State(daemon): State<AppState>,
    Json(mut request): Json<hoist_api::RestoreRequest>,
) -> ApiResult<hoist_api::ForceNewClusterResponse> {
    request.advertise_addr = advertise_addr(request.advertise_addr)?;
    Ok(Json(daemon.restore(request).await?))
}

async fn backup(State(daemon): State<AppState>) -> ApiResult<hoist_api::BackupFile> {
    Ok(Json(daemon.backup().await?))
}

/// The IP address a TLS request came from (`None` on the local socket).
pub(super) fn source_ip(remote: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    remote.map(|Extension(ConnectInfo(addr))| addr.ip().to_canonical())
}

async fn join(
    State(daemon): State<AppState>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(request): Json<JoinRequest>,
) -> ApiResult<hoist_api::JoinResponse> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.join(request, source_ip(remote)).await?))
}

/// A node whose join failed after the manager admitted it takes its record back.
async fn join_abandon(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<serde_json::Value> {
    let peer = peer_of(&caller)?;
    let (_, manager) = manager_of(&daemon)?;
    manager.abandon_join(peer).await?;
    Ok(Json(serde_json::json!({})))
}

async fn heartbeat(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(request): Json<HeartbeatRequest>,
) -> ApiResult<hoist_api::HeartbeatResponse> {
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

async fn renew(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<RenewRequest>,
) -> ApiResult<hoist_api::RenewResponse> {
    let peer = peer_of(&caller)?;
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.renew(peer, &request.csr_pem).await?))
}

async fn raft_join(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<RaftJoinRequest>,
) -> ApiResult<serde_json::Value> {
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
    Ok(Json(serde_json::json!({})))
}

async fn raft_rpc(
    State(daemon): State<AppState>,
    Path(rest): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (_, manager) = manager_of(&daemon)?;
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("/{rest}")
        .parse()
        .map_err(|_| ApiError::new(400, "bad raft path"))?;
    let routes = hoist_raft::router(manager.raft().clone());
    routes
        .oneshot(Request::from_parts(parts, body))
        .await
        .map_err(|never| match never {})
}

/// The mesh's metrics, in Prometheus text format.
async fn metrics(State(daemon): State<AppState>) -> Result<Response, ApiError> {
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
async fn info(State(daemon): State<AppState>) -> ApiResult<InfoResponse> {
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

async fn node_ls(State(daemon): State<AppState>) -> ApiResult<Vec<hoist_api::NodeView>> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.list_nodes().await?))
}

async fn node_inspect(
    State(daemon): State<AppState>,
    Path(node): Path<String>,
) -> ApiResult<hoist_api::NodeView> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.inspect_node(&node).await?))
}

async fn node_update(
    State(daemon): State<AppState>,
    Path(node): Path<String>,
    Json(request): Json<NodeUpdateRequest>,
) -> ApiResult<hoist_api::NodeView> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.update_node(&node, request).await?))
}

async fn node_promote(
    State(daemon): State<AppState>,
    Path(node): Path<String>,
) -> ApiResult<hoist_api::NodeView> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.promote(&node).await?))
}

async fn node_demote(
    State(daemon): State<AppState>,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    let (member, manager) = manager_of(&daemon)?;
    match manager.demote(&node).await {
        Ok(Demotion::Done(view)) => Ok(Json(*view).into_response()),
        Ok(Demotion::HandedOver { managers }) => {
            hand_over(
                &member,
                &managers,
                reqwest::Method::POST,
                &format!("/v1/nodes/{node}/demote"),
            )
            .await
        }
        Err(ManagerError::NotLeader {
            leader_addr: Some(leader),
        }) => {
            forward(
                &member,
                reqwest::Method::POST,
                &leader,
                &format!("/v1/nodes/{node}/demote"),
                Some(serde_json::json!(null)),
            )
            .await
        }
        Err(err) => Err(err.into()),
    }
}

#[derive(Deserialize)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}

async fn node_rm(
    State(daemon): State<AppState>,
    Path(node): Path<String>,
    Query(query): Query<ForceQuery>,
) -> Result<Response, ApiError> {
    let (member, manager) = manager_of(&daemon)?;
    match manager.remove_node(&node, query.force).await {
        Ok(None) => Ok(Json(serde_json::json!({})).into_response()),
        Ok(Some(managers)) => {
            // The leader removed itself from the group: the others record the removal.
            hand_over(
                &member,
                &managers,
                reqwest::Method::DELETE,
                &format!("/v1/nodes/{node}?force=true"),
            )
            .await
        }
        Err(ManagerError::NotLeader {
            leader_addr: Some(leader),
        }) => {
            let path = format!(
                "/v1/nodes/{node}{}",
                if query.force { "?force=true" } else { "" }
            );
            forward(&member, reqwest::Method::DELETE, &leader, &path, None).await
        }
        Err(err) => Err(err.into()),
    }
}

/// How long a leader that demoted (or removed) itself waits for the remaining managers
/// to elect a leader and commit the change (an election takes a second or two).
const HAND_OVER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Finishes a demotion or removal of this manager, which has just left the Raft group
/// and stepped down: sends it to the remaining managers until the one that leads
/// commits it (a follower that knows the leader redirects with 421; one that does not
/// yet is asked again).
async fn hand_over(
    member: &Member,
    managers: &[String],
    method: reqwest::Method,
    path: &str,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + HAND_OVER_DEADLINE;
    let mut last = String::from("no other manager is known");
    loop {
        for addr in managers {
            let mut target = addr.clone();
            // One redirect: a follower names the leader it knows.
            for _ in 0..2 {
                let mut request = member
                    .http()
                    .request(method.clone(), format!("https://{target}{path}"));
                if method == reqwest::Method::POST {
                    request = request.json(&serde_json::Value::Null);
                }
                let response = request
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await;
                let response = match response {
                    Ok(response) => response,
                    Err(err) => {
                        last = format!("{target}: {err}");
                        break;
                    }
                };
                let status = response.status();
                let bytes = response.bytes().await.unwrap_or_default();
                if status.is_success() {
                    return Ok((
                        StatusCode::OK,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        bytes,
                    )
                        .into_response());
                }
                let text = String::from_utf8_lossy(&bytes).into_owned();
                if status == reqwest::StatusCode::MISDIRECTED_REQUEST {
                    if let Some(leader) = serde_json::from_str::<NotLeaderBody>(&text)
                        .ok()
                        .and_then(|body| body.leader_addr)
                    {
                        target = leader;
                        continue;
                    }
                }
                last = format!(
                    "{target}: {status}: {}",
                    hoist_api::ErrorBody::message_of(text)
                );
                break;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                503,
                format!(
                    "this manager left the raft group and stepped down, but the remaining managers did not record the change in {}s ({last}); run the command again on one of them",
                    HAND_OVER_DEADLINE.as_secs()
                ),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Sends a leader-only control request to the leader, with this manager's certificate.
async fn forward(
    member: &Member,
    method: reqwest::Method,
    leader: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Response, ApiError> {
    let mut request = member
        .http()
        .request(method, format!("https://{leader}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|err| {
            ApiError::new(503, format!("forwarding to the leader at {leader}: {err}"))
        })?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = response
        .bytes()
        .await
        .map_err(|err| ApiError::new(502, format!("reading the leader's answer: {err}")))?;
    Ok((
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response())
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    role.parse().map_err(|err: String| ApiError::new(400, err))
}

#[derive(Deserialize)]
struct RotateQuery {
    #[serde(default)]
    rotate: bool,
}

/// `GET` reads the token and never changes it: a GET is what a confused or redirected
/// client sends (a manager fetching a URL a node made up), so `rotate=true` on a GET is
/// refused rather than obeyed.
async fn join_token(
    State(daemon): State<AppState>,
    Path(role): Path<String>,
    Query(query): Query<RotateQuery>,
) -> ApiResult<TokenResponse> {
    let role = parse_role(&role)?;
    if query.rotate {
        return Err(ApiError::new(
            405,
            "rotating a join token takes a POST (`hoist join-token --rotate`); a GET only reads it",
        ));
    }
    let (member, manager) = manager_of(&daemon)?;
    let token = manager.join_token(role).await?;
    Ok(Json(TokenResponse {
        role,
        token,
        manager_addr: member.advertise_addr.clone(),
    }))
}

/// `POST ?rotate=true` replaces the token, then returns the new one.
async fn join_token_rotate(
    State(daemon): State<AppState>,
    Path(role): Path<String>,
    Query(query): Query<RotateQuery>,
) -> ApiResult<TokenResponse> {
    let role = parse_role(&role)?;
    let (member, manager) = manager_of(&daemon)?;
    let token = if query.rotate {
        manager.rotate_join_token(role).await?
    } else {
        manager.join_token(role).await?
    };
    Ok(Json(TokenResponse {
        role,
        token,
        manager_addr: member.advertise_addr.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_into_the_right_class() {
        assert_eq!(class_of("/v1/init"), Class::LocalOnly);
        assert_eq!(class_of("/v1/join"), Class::Open);
        assert_eq!(class_of("/v1/dispatcher/heartbeat"), Class::Member);
        assert_eq!(class_of("/raft/append"), Class::ManagerPeer);
        assert_eq!(class_of("/v1/raft/join-me"), Class::ManagerPeer);
        assert_eq!(class_of("/v1/nodes"), Class::Control);
        assert_eq!(class_of("/v1/unknown"), Class::Control);
    }
}
