//! Routes of `hoist cluster ca`: the current CA and a rotation's progress, and starting
//! a rotation. Control API: the local operator or a current manager (declared with each
//! endpoint, checked by `access.rs`).

use axum::extract::State;
use axum::Json;
use hoist_api::endpoint as api;

use super::routes::{manager_of, AppState, Reply};

pub async fn ca_status(State(daemon): State<AppState>) -> Reply<api::CaStatus> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.ca_status().await?))
}

pub async fn ca_rotate(State(daemon): State<AppState>) -> Reply<api::CaRotate> {
    let (_, manager) = manager_of(&daemon)?;
    Ok(Json(manager.rotate_ca().await?))
}
