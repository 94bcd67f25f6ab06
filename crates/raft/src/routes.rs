//! The peer RPC routes: Raft messages from other managers, and writes and read-index
//! requests forwarded by followers. Mounted under `/raft` behind the daemon's
//! manager-certificate check.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::node::{ProposeError, RaftNode};
use crate::{ApplyResult, TypeConfig};

type NodeId = u64;

/// Routes to mount at `/raft`.
pub fn router(node: RaftNode) -> Router {
    Router::new()
        .route("/append", post(append))
        .route("/vote", post(vote))
        .route("/snapshot", post(snapshot))
        .route("/write", post(write))
        .route("/read-index", post(read_index))
        .with_state(node)
}

async fn append(
    State(node): State<RaftNode>,
    Json(request): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(node.raft().append_entries(request).await)
}

async fn vote(
    State(node): State<RaftNode>,
    Json(request): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(node.raft().vote(request).await)
}

async fn snapshot(
    State(node): State<RaftNode>,
    Json(request): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(node.raft().install_snapshot(request).await)
}

async fn write(
    State(node): State<RaftNode>,
    Json(change): Json<hoist_state::Change>,
) -> Json<Result<ApplyResult, ProposeError>> {
    Json(node.propose_local(change).await)
}

async fn read_index(
    State(node): State<RaftNode>,
    Json(()): Json<()>,
) -> Json<Result<u64, ProposeError>> {
    Json(node.read_index_local().await)
}
