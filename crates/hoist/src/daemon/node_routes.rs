//! Routes of `hoist node` and `hoist join-token`: listing, inspecting, updating,
//! promoting, demoting and removing nodes (a leader that demotes or removes itself hands
//! the rest over to the remaining managers; a follower forwards what only the leader
//! may do), and reading or rotating join tokens. Control API: who may call is declared
//! with each endpoint and checked where `routes.rs` mounts it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hoist_api::endpoint::{self as api, Endpoint, ForceQuery, RotateQuery};
use hoist_api::{Empty, NotLeaderBody, TokenResponse};
use hoist_manager::{Demotion, ManagerError};
use hoist_types::Role;

use super::member::Member;
use super::routes::{manager_of, ApiError, AppState, JsonBody, Reply};

pub(super) async fn node_ls(State(daemon): State<AppState>) -> Reply<api::NodeList> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.list_nodes().await?))
}

pub(super) async fn node_inspect(
    State(daemon): State<AppState>,
    Path(node): Path<String>,
) -> Reply<api::NodeInspect> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.inspect_node(&node).await?))
}

pub(super) async fn node_update(
    State(daemon): State<AppState>,
    Path(node): Path<String>,
    Json(request): JsonBody<api::NodeUpdate>,
) -> Reply<api::NodeUpdate> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.update_node(&node, request).await?))
}

pub(super) async fn node_promote(
    State(daemon): State<AppState>,
    Path(node): Path<String>,
) -> Reply<api::NodePromote> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.promote(&node).await?))
}

pub(super) async fn node_demote(
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
                api::NodeDemote::METHOD,
                &api::NodeDemote::path(&node),
            )
            .await
        }
        Err(ManagerError::NotLeader {
            leader_addr: Some(leader),
        }) => {
            forward(
                &member,
                api::NodeDemote::METHOD,
                &leader,
                &api::NodeDemote::path(&node),
                Some(serde_json::json!(null)),
            )
            .await
        }
        Err(err) => Err(err.into()),
    }
}

pub(super) async fn node_rm(
    State(daemon): State<AppState>,
    Path(node): Path<String>,
    Query(query): Query<ForceQuery>,
) -> Result<Response, ApiError> {
    let (member, manager) = manager_of(&daemon)?;
    match manager.remove_node(&node, query.force).await {
        Ok(None) => Ok(Json(Empty {}).into_response()),
        Ok(Some(managers)) => {
            // The leader removed itself from the group: the others record the removal.
            hand_over(
                &member,
                &managers,
                api::NodeRemove::METHOD,
                &api::NodeRemove::path_and_query(&node, &ForceQuery { force: true }),
            )
            .await
        }
        Err(ManagerError::NotLeader {
            leader_addr: Some(leader),
        }) => {
            let path = api::NodeRemove::path_and_query(&node, &query);
            forward(&member, api::NodeRemove::METHOD, &leader, &path, None).await
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

/// `GET` reads the token and never changes it: a GET is what a confused or redirected
/// client sends (a manager fetching a URL a node made up), so `rotate=true` on a GET is
/// refused rather than obeyed.
pub(super) async fn join_token(
    State(daemon): State<AppState>,
    Path(role): Path<String>,
    Query(query): Query<RotateQuery>,
) -> Reply<api::JoinToken> {
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
pub(super) async fn join_token_rotate(
    State(daemon): State<AppState>,
    Path(role): Path<String>,
    Query(query): Query<RotateQuery>,
) -> Reply<api::JoinTokenRotate> {
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
