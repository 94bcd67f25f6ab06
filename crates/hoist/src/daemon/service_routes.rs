//! Routes for services, task assignments and status, and logs. Authorization is done
//! by the router's layer (see `routes.rs`); these handlers only translate.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use hoist_api::{
    CreateServiceRequest, LogsQuery, ScaleRequest, ServiceView, StatusReportRequest, TaskView,
    UpdateServiceRequest,
};
use hoist_driver::LogOptions;
use hoist_types::TaskId;
use tokio::sync::mpsc;

use super::routes::{manager_of, member_of, peer_of, ApiError};
use super::server::Caller;
use super::Daemon;

type AppState = Arc<Daemon>;
type ApiResult<T> = Result<Json<T>, ApiError>;

pub async fn service_create(
    State(daemon): State<AppState>,
    Json(request): Json<CreateServiceRequest>,
) -> ApiResult<ServiceView> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.create_service(request.spec).await?))
}

pub async fn service_ls(State(daemon): State<AppState>) -> ApiResult<Vec<ServiceView>> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.list_services().await?))
}

pub async fn service_inspect(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
) -> ApiResult<ServiceView> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.inspect_service(&service).await?))
}

pub async fn service_update(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
    Json(request): Json<UpdateServiceRequest>,
) -> ApiResult<ServiceView> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(
        manager
            .update_service(&service, request.version, request.spec)
            .await?,
    ))
}

pub async fn service_scale(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
    Json(request): Json<ScaleRequest>,
) -> ApiResult<ServiceView> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(
        manager.scale_service(&service, request.replicas).await?,
    ))
}

pub async fn service_rm(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
) -> ApiResult<serde_json::Value> {
    let (_, manager) = manager_of(&daemon)?;
    let service_id = manager.remove_service(&service).await?;
    Ok(Json(serde_json::json!({ "id": service_id })))
}

pub async fn service_tasks(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
) -> ApiResult<Vec<TaskView>> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.service_tasks(&service).await?))
}

/// The assignment stream a worker follows: one JSON line per assignment set.
pub async fn assignments(
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

pub async fn status(
    State(daemon): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<StatusReportRequest>,
) -> ApiResult<serde_json::Value> {
    let peer = peer_of(&caller)?;
    let (_, manager) = manager_of(&daemon)?;
    manager.report_status(peer, request).await?;
    Ok(Json(serde_json::json!({})))
}

fn text_stream(receiver: mpsc::Receiver<String>) -> Response {
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        Some((Ok::<_, Infallible>(format!("{line}\n")), receiver))
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One task's output, from this node's driver.
pub async fn node_logs(
    State(daemon): State<AppState>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let member = member_of(&daemon)?;
    let task = query
        .task
        .ok_or_else(|| ApiError::new(400, "which task? (task=ID)"))?;
    task.parse::<TaskId>()
        .map_err(|err| ApiError::new(400, err))?;
    let lines = member
        .agent
        .logs(
            &task,
            LogOptions {
                tail: query.tail,
                follow: query.follow,
            },
        )
        .await
        .map_err(|err| ApiError::new(404, format!("logs of task {task}: {err}")))?;
    Ok(text_stream(lines))
}

/// A service's output: every task's lines, each prefixed with the task and its node
/// (Docker's `name.slot.id@node | line`), gathered from the nodes that ran them.
pub async fn service_logs(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let (member, manager) = manager_of(&daemon)?;
    let tasks = manager.service_tasks(&service).await?;
    let addresses = manager
        .list_nodes()
        .await?
        .into_iter()
        .map(|view| (view.node.id, view.node.addr))
        .collect::<std::collections::HashMap<_, _>>();
    let (sender, receiver) = mpsc::channel::<String>(256);
    let mut readers = Vec::new();
    for view in tasks {
        let Some(node_id) = view.task.node_id else {
            continue;
        };
        let prefix = format!(
            "{}.{}@{}    | ",
            view.name,
            &view.task.id.to_string()[..8],
            view.node_hostname.clone().unwrap_or_default()
        );
        let mut url = format!(
            "/v1/node-logs?task={}&follow={}",
            view.task.id, query.follow
        );
        if let Some(tail) = query.tail {
            url.push_str(&format!("&tail={tail}"));
        }
        let sender = sender.clone();
        let local = node_id == member.node_id;
        // Only the node that ran the task may answer for it.
        let http = (!local).then(|| member.http_to_node(node_id));
        let agent = member.agent.clone();
        let addr = addresses.get(&node_id).cloned();
        let task_id = view.task.id.to_string();
        let options = LogOptions {
            tail: query.tail,
            follow: query.follow,
        };
        let follow = query.follow;
        readers.push(async move {
            if local {
                if let Ok(mut lines) = agent.logs(&task_id, options).await {
                    while let Some(line) = lines.recv().await {
                        if sender.send(format!("{prefix}{line}")).await.is_err() {
                            return;
                        }
                    }
                }
                return;
            }
            let Some(addr) = addr else { return };
            let http = match http {
                Some(Ok(http)) => http,
                Some(Err(err)) => {
                    tracing::warn!(node = %node_id, error = %err, "building the client for task output");
                    return;
                }
                None => return,
            };
            let mut request = http.get(format!("https://{addr}{url}"));
            if !follow {
                request = request.timeout(Duration::from_secs(30));
            }
            let Ok(response) = request.send().await else {
                return;
            };
            if !response.status().is_success() {
                return;
            }
            let mut lines = hoist_api::body_lines(response, hoist_api::MAX_LOG_LINE);
            while let Some(line) = lines.next().await {
                let text = match line {
                    Ok(text) => text,
                    Err(err) => {
                        tracing::warn!(addr = %addr, error = %err, "task output relay ended");
                        return;
                    }
                };
                if sender.send(format!("{prefix}{text}")).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(sender);
    if query.follow {
        for reader in readers {
            tokio::spawn(reader);
        }
    } else {
        // Without --follow, tasks are shown one after the other, in slot order.
        tokio::spawn(async move {
            for reader in readers {
                reader.await;
            }
        });
    }
    Ok(text_stream(receiver))
}
