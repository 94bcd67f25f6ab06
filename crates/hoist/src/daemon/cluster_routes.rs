//! Routes for the cluster's settings (`hoist cluster inspect|update`). Control API:
//! authorized by the router's layer; these handlers only translate.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use hoist_api::{ClusterUpdateRequest, ClusterView};

use super::routes::{manager_of, ApiError};
use super::Daemon;

type AppState = Arc<Daemon>;

pub async fn cluster_inspect(
    State(daemon): State<AppState>,
) -> Result<Json<ClusterView>, ApiError> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.cluster_view().await?))
}

pub async fn cluster_update(
    State(daemon): State<AppState>,
    Json(request): Json<ClusterUpdateRequest>,
) -> Result<Json<ClusterView>, ApiError> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.update_cluster(request).await?))
}
