//! Routes for the cluster's settings (`hoist cluster inspect|update`). Control API: the
//! class is declared with each endpoint and checked where `routes.rs` mounts it; these
//! handlers only translate.

use axum::extract::State;
use axum::Json;
use hoist_api::endpoint as api;

use super::routes::{manager_of, AppState, JsonBody, Reply};

pub async fn cluster_inspect(State(daemon): State<AppState>) -> Reply<api::ClusterInspect> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.cluster_view().await?))
}

pub async fn cluster_update(
    State(daemon): State<AppState>,
    Json(request): JsonBody<api::ClusterUpdate>,
) -> Reply<api::ClusterUpdate> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.update_cluster(request).await?))
}
