//! The peer RPC routes: Raft messages from other managers, and writes and read-index
//! requests forwarded by followers. Mounted under `/raft` behind the daemon's
//! manager-certificate check.

use axum::extract::State;
use axum::http::StatusCode;
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
) -> Result<Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>>, (StatusCode, String)> {
    if !node.may_vote() {
        // The candidate counts this as no answer, which is what a node that may have
        // voted already in this term (its store was lost) must give.
        tracing::warn!(candidate = request.vote.leader_id().voted_for(), "vote request refused: this node started on a blank raft store and is not confirmed as a voter");
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "this manager started on a blank raft store and does not vote until the leader confirms it".into(),
        ));
    }
    Ok(Json(node.raft().vote(request).await))
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
