//! The peer RPC routes: Raft messages from other managers, and writes and read-index
//! requests forwarded by followers. Mounted under `/raft` behind the daemon's
//! manager-certificate check.
//!
//! The router is built once; the daemon hands each request the [`RaftNode`] that runs
//! at that moment as an extension (Raft starts and stops with the node's role).
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::node::{ProposeError, RaftNode};
use crate::{ApplyResult, TypeConfig};

type NodeId = u64;

/// Routes to mount at `/raft`; each request carries the [`RaftNode`] to use as an
/// extension.
pub fn router() -> Router {
    Router::new()
        .route("/append", post(append))
        .route("/vote", post(vote))
        .route("/snapshot", post(snapshot))
        .route("/write", post(write))
        .route("/read-index", post(read_index))
}

/// Whether the message at `route` (its path under `/raft`) is sent by a leader to its
/// followers (appends and snapshots), rather than by any member to a node whose view
/// of the group counts (votes, forwarded writes and read-index requests).
pub fn sent_by_leader(route: &str) -> bool {
    matches!(route, "/append" | "/snapshot")
}

async fn append(
    Extension(node): Extension<RaftNode>,
    Json(request): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(node.raft().append_entries(request).await)
}

async fn vote(
    Extension(node): Extension<RaftNode>,
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
    Extension(node): Extension<RaftNode>,
    Json(request): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(node.raft().install_snapshot(request).await)
}

async fn write(
    Extension(node): Extension<RaftNode>,
    Json(change): Json<hoist_state::Change>,
) -> Json<Result<ApplyResult, ProposeError>> {
    Json(node.propose_local(change).await)
}

async fn read_index(
    Extension(node): Extension<RaftNode>,
    Json(()): Json<()>,
) -> Json<Result<u64, ProposeError>> {
    Json(node.read_index_local().await)
}
