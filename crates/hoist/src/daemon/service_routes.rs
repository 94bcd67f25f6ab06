//! Routes for services and their output: a service's logs gathered from the nodes
//! that ran its tasks, and one task's output from this node (`node-logs`). Who may call
//! each is declared with its endpoint (`hoist_api::endpoint`) and checked where
//! `routes.rs` mounts it; these handlers only translate.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use hoist_api::endpoint::{self as api, Endpoint, NodeLogs, ServiceRemoved};
use hoist_api::LogsQuery;
use hoist_driver::LogOptions;
use hoist_types::TaskId;
use tokio::sync::mpsc;

use super::routes::{manager_of, member_of, ApiError, AppState, JsonBody, Reply};

pub async fn service_create(
    State(daemon): State<AppState>,
    Json(request): JsonBody<api::ServiceCreate>,
) -> Reply<api::ServiceCreate> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.create_service(request.spec).await?))
}

pub async fn service_ls(State(daemon): State<AppState>) -> Reply<api::ServiceList> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.list_services().await?))
}

pub async fn service_inspect(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
) -> Reply<api::ServiceInspect> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.inspect_service(&service).await?))
}

pub async fn service_update(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
    Json(request): JsonBody<api::ServiceUpdate>,
) -> Reply<api::ServiceUpdate> {
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
    Json(request): JsonBody<api::ServiceScale>,
) -> Reply<api::ServiceScale> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(
        manager.scale_service(&service, request.replicas).await?,
    ))
}

pub async fn service_rm(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
) -> Reply<api::ServiceRemove> {
    let (_, manager) = manager_of(&daemon)?;
    let id = manager.remove_service(&service).await?;
    Ok(Json(ServiceRemoved { id }))
}

pub async fn service_tasks(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
) -> Reply<api::ServiceTasks> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.service_tasks(&service).await?))
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
/// (Docker's `name.slot.id@node | line`), gathered from the nodes that ran them. The
/// reference may also be one task's id (or an unambiguous prefix of it). Following a
/// service also follows the tasks that start later (a scale-up, a replacement).
pub async fn service_logs(
    State(daemon): State<AppState>,
    Path(service): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let (member, manager) = manager_of(&daemon)?;
    let (tasks, is_service) = match manager.service_tasks(&service).await {
        Ok(tasks) => (tasks, true),
        Err(hoist_manager::ManagerError::NotFound { .. }) => {
            (vec![manager.find_task(&service).await?], false)
        }
        Err(err) => return Err(err.into()),
    };
    let addresses = node_addresses(&manager).await?;
    let (sender, receiver) = mpsc::channel::<String>(256);
    let mut seen = std::collections::HashSet::new();
    let mut readers = Vec::new();
    for view in tasks {
        seen.insert(view.task.id);
        if let Some(reader) = task_reader(&member, &addresses, &view, &query, sender.clone()) {
            readers.push(reader);
        }
    }
    if query.follow {
        for reader in readers {
            tokio::spawn(reader);
        }
        if is_service {
            tokio::spawn(follow_new_tasks(
                member, manager, service, query, seen, sender,
            ));
        }
    } else {
        drop(sender);
        // Without --follow, tasks are shown one after the other, in slot order.
        tokio::spawn(async move {
            for reader in readers {
                reader.await;
            }
        });
    }
    Ok(text_stream(receiver))
}

/// How often a followed service is checked for tasks that started since.
const NEW_TASK_POLL: Duration = Duration::from_millis(500);

/// While the client follows, starts a reader for each task of the service that was not
/// there before; ends when the client goes (or the service does).
async fn follow_new_tasks(
    member: std::sync::Arc<super::member::Member>,
    manager: hoist_manager::Manager,
    service: String,
    query: LogsQuery,
    mut seen: std::collections::HashSet<TaskId>,
    sender: mpsc::Sender<String>,
) {
    // A new task's output is shown from its start, whatever --tail said.
    let query = LogsQuery {
        tail: None,
        ..query
    };
    while !sender.is_closed() {
        tokio::time::sleep(NEW_TASK_POLL).await;
        let Ok(tasks) = manager.service_tasks(&service).await else {
            continue;
        };
        let fresh: Vec<_> = tasks
            .into_iter()
            .filter(|view| view.task.node_id.is_some() && !seen.contains(&view.task.id))
            // Once started, the driver has its output; before, a reader would find none
            // and the task would not be looked at again.
            .filter(|view| view.task.status.state >= hoist_types::task::TaskState::Starting)
            .collect();
        if fresh.is_empty() {
            continue;
        }
        let Ok(addresses) = node_addresses(&manager).await else {
            continue;
        };
        for view in fresh {
            seen.insert(view.task.id);
            if let Some(reader) = task_reader(&member, &addresses, &view, &query, sender.clone()) {
                tokio::spawn(reader);
            }
        }
    }
}

async fn node_addresses(
    manager: &hoist_manager::Manager,
) -> Result<std::collections::HashMap<hoist_types::NodeId, String>, ApiError> {
    Ok(manager
        .list_nodes()
        .await?
        .into_iter()
        .map(|view| (view.node.id, view.node.addr))
        .collect())
}

/// Reads one task's output, from this node's driver or from the node that ran it, into
/// `sender` with the task's prefix. `None` for a task not placed on a node yet.
fn task_reader(
    member: &std::sync::Arc<super::member::Member>,
    addresses: &std::collections::HashMap<hoist_types::NodeId, String>,
    view: &hoist_api::TaskView,
    query: &LogsQuery,
    sender: mpsc::Sender<String>,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let node_id = view.task.node_id?;
    let prefix = format!(
        "{}.{}@{}    | ",
        view.name,
        &view.task.id.to_string()[..8],
        view.node_hostname.clone().unwrap_or_default()
    );
    let path = NodeLogs::path_and_query(
        &(),
        &LogsQuery {
            tail: query.tail,
            follow: query.follow,
            task: Some(view.task.id.to_string()),
        },
    );
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
    Some(async move {
        let relay = Relay { prefix, sender };
        if local {
            relay.local(&agent, &task_id, options).await;
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
        relay.remote(&http, &addr, &path, follow).await;
    })
}

/// Where one task's lines go, and what each is prefixed with.
struct Relay {
    prefix: String,
    sender: mpsc::Sender<String>,
}

impl Relay {
    /// A task this node ran: its driver's output.
    async fn local(self, agent: &hoist_worker::Agent, task_id: &str, options: LogOptions) {
        if let Ok(mut lines) = agent.logs(task_id, options).await {
            while let Some(line) = lines.recv().await {
                if self
                    .sender
                    .send(format!("{}{line}", self.prefix))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }

    /// A task another node ran: that node's `node-logs`, at `path`.
    async fn remote(self, http: &reqwest::Client, addr: &str, path: &str, follow: bool) {
        let mut request = http.get(format!("https://{addr}{path}"));
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
            if self
                .sender
                .send(format!("{}{text}", self.prefix))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
