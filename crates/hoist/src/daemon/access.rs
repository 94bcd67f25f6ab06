//! Who may call a route: the check each mounted route runs before its handler, for the
//! access class its endpoint definition declares (`hoist_api::Access`, taken where
//! `routes.rs` mounts it).
//!
//! The classes: local-only lifecycle, the open join endpoint (a joining node has no
//! certificate yet), member endpoints (any node certificate of this cluster), the
//! manager peer endpoint and Raft's messages (manager certificates; Raft's also the
//! sender's membership in the group), and the control API (the local socket, or a
//! manager certificate of a node the cluster state still records as a manager).
//!
//! Does not know: what a route does, or how large its body may be (`limits.rs`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hoist_api::Access;
use hoist_pki::PeerIdentity;
use hoist_types::Role;

use super::member::Member;
use super::routes::{ApiError, NOT_A_MANAGER, NOT_IN_CLUSTER};
use super::server::Caller;
use super::Daemon;

/// The check one route runs: the daemon whose state it reads and the route's class.
#[derive(Clone)]
pub struct Guard {
    pub daemon: Arc<Daemon>,
    pub access: Access,
}

/// Lets a request through when its caller may call a route of the guard's class.
pub async fn authorize(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Peer(None));
    let Some(peer) = peer_to_check(&caller, guard.access)? else {
        return Ok(next.run(request).await);
    };
    let member = guard
        .daemon
        .member()
        .ok_or_else(|| ApiError::new(503, NOT_IN_CLUSTER))?;
    check_peer(&member, peer, guard.access, request.uri().path())?;
    Ok(next.run(request).await)
}

/// What the caller alone decides: `None` lets it through, a peer's identity is checked
/// further against this node's view of the cluster.
fn peer_to_check(caller: &Caller, access: Access) -> Result<Option<&PeerIdentity>, ApiError> {
    let over_tls = matches!(
        access,
        Access::ManagerPeer | Access::RaftPeer | Access::Member
    );
    match (caller, access) {
        (Caller::Local, _) if over_tls => Err(ApiError::new(
            403,
            "this endpoint is for other nodes, over TLS",
        )),
        (Caller::Local, _) => Ok(None),
        (Caller::Peer(_), Access::Local) => Err(ApiError::new(
            403,
            "this endpoint is only served on the local socket",
        )),
        (Caller::Peer(_), Access::Open) => Ok(None),
        (Caller::Peer(None), _) => Err(ApiError::new(
            401,
            "this endpoint requires a client certificate signed by the cluster CA (a node gets one by joining)",
        )),
        (Caller::Peer(Some(peer)), _) => Ok(Some(peer)),
    }
}

/// A peer's certificate against this node's view: its cluster, whether it is still a
/// member, and for manager classes whether it is a manager now.
fn check_peer(
    member: &Member,
    peer: &PeerIdentity,
    access: Access,
    path: &str,
) -> Result<(), ApiError> {
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
    let needs_manager = matches!(
        access,
        Access::ManagerPeer | Access::RaftPeer | Access::Control
    );
    if !needs_manager {
        return Ok(());
    }
    if peer.role != Role::Manager {
        return Err(ApiError::new(
            403,
            format!(
                "this endpoint is for managers: node {} presented a worker certificate",
                peer.node_id
            ),
        ));
    }
    check_manager_now(member, peer, access, recorded.map(|(_, role)| role))?;
    if access == Access::RaftPeer {
        check_raft_sender(member, peer, path)?;
    }
    Ok(())
}

/// A certificate outlives a demotion: the role that counts is the one the cluster
/// records now (`recorded`, when this node has the state), or else one of the managers
/// this node was told of.
fn check_manager_now(
    member: &Member,
    peer: &PeerIdentity,
    access: Access,
    recorded: Option<Option<Role>>,
) -> Result<(), ApiError> {
    // Raft messages are left to the Raft membership check, which a demotion changes
    // first; a follower whose state lags must still take the entries that bring it up
    // to date.
    if access != Access::RaftPeer {
        if let Some(role) = recorded {
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
    }
    if member.manager().is_none() {
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
    Ok(())
}

/// Appends and snapshots come from a leader, whose term openraft checks; this node's
/// membership may be older than the sender's (a manager catching up installs a
/// snapshot whose membership predates the leader's own addition), so refusing a sender
/// it does not know yet would keep it from ever learning the current group. Votes,
/// forwarded writes and read-index requests go to a node whose view counts.
fn check_raft_sender(member: &Member, peer: &PeerIdentity, path: &str) -> Result<(), ApiError> {
    let message = path
        .strip_prefix(hoist_api::endpoint::RAFT_PREFIX)
        .unwrap_or(path);
    if hoist_raft::sent_by_leader(message) {
        return Ok(());
    }
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
    Ok(())
}
