//! Node management: listing, updating, promoting, demoting and removing nodes, with the
//! guards that keep the managers' quorum.

use hoist_api::{InfoResponse, ManagerStatus, NodeUpdateRequest, NodeView};
use hoist_raft::MembershipInfo;
use hoist_state::{Change, ClusterState};
use hoist_types::{Node, NodeId, NodeStatus, Role};

use crate::{now_ms, Conflict, Input, Manager, ManagerError, Object, Result};

/// How far a demotion got on this manager.
#[derive(Debug)]
pub enum Demotion {
    /// Committed: the node is a worker.
    Done(Box<NodeView>),
    /// This manager demoted itself: it is out of the Raft group and no longer leads,
    /// and the role change must be committed by the managers that remain (at these
    /// addresses), one of which leads once they have elected.
    HandedOver { managers: Vec<String> },
}

/// The manager status column: Leader, Reachable or Unreachable.
fn manager_status(
    node: &Node,
    leader: Option<u64>,
    membership: &MembershipInfo,
) -> Option<ManagerStatus> {
    if node.role != Role::Manager && !membership.voters.contains_key(&node.id.0) {
        return None;
    }
    if leader == Some(node.id.0) {
        return Some(ManagerStatus::Leader);
    }
    if membership.voters.contains_key(&node.id.0) && node.status == NodeStatus::Ready {
        Some(ManagerStatus::Reachable)
    } else {
        Some(ManagerStatus::Unreachable)
    }
}

/// Whether removing `leaving` from the voters keeps a reachable majority. Pure.
pub(crate) fn check_quorum_after_removal(
    state: &ClusterState,
    membership: &MembershipInfo,
    leaving: NodeId,
    verb: &str,
) -> Result<()> {
    if !membership.voters.contains_key(&leaving.0) {
        return Ok(());
    }
    let remaining: Vec<u64> = membership
        .voters
        .keys()
        .copied()
        .filter(|id| *id != leaving.0)
        .collect();
    let name = state
        .nodes
        .get(&leaving)
        .map(|node| node.hostname.clone())
        .unwrap_or_else(|| leaving.to_string());
    if remaining.is_empty() {
        return Err(ManagerError::refused(
            Conflict::LastManager,
            format!("cannot {verb} {name}: it is the last manager of the cluster"),
        ));
    }
    let reachable = remaining
        .iter()
        .filter(|id| {
            state
                .nodes
                .get(&NodeId(**id))
                .map(|node| node.status == NodeStatus::Ready)
                .unwrap_or(false)
        })
        .count();
    let quorum = remaining.len() / 2 + 1;
    if reachable < quorum {
        return Err(ManagerError::refused(Conflict::Quorum, format!(
            "cannot {verb} {name}: the cluster would lose quorum. {} managers would remain, of which {reachable} reachable, and a quorum of {} managers needs {quorum} reachable. Bring the unreachable managers back first.",
            remaining.len(),
            remaining.len()
        )));
    }
    Ok(())
}

/// Marks a node as being demoted by this leader for as long as it is held.
struct DemotingGuard {
    manager: Manager,
    node_id: NodeId,
}

impl DemotingGuard {
    fn new(manager: &Manager, node_id: NodeId) -> Self {
        manager.dispatcher().lock().demoting.insert(node_id);
        DemotingGuard {
            manager: manager.clone(),
            node_id,
        }
    }
}

impl Drop for DemotingGuard {
    fn drop(&mut self) {
        self.manager
            .dispatcher()
            .lock()
            .demoting
            .remove(&self.node_id);
    }
}

impl Manager {
    pub async fn list_nodes(&self) -> Result<Vec<NodeView>> {
        let nodes = self
            .read(|state| state.nodes.values().cloned().collect::<Vec<_>>())
            .await?;
        let status = self.raft().status();
        let self_id = self.node_id();
        Ok(nodes
            .into_iter()
            .map(|node| NodeView {
                manager_status: manager_status(&node, status.leader, &status.membership),
                is_self: node.id == self_id,
                node,
            })
            .collect())
    }

    pub async fn inspect_node(&self, reference: &str) -> Result<NodeView> {
        let node = self
            .read(|state| state.find_node(reference).cloned())
            .await?
            .map_err(ManagerError::not_found(Object::Node, reference))?;
        let status = self.raft().status();
        Ok(NodeView {
            manager_status: manager_status(&node, status.leader, &status.membership),
            is_self: node.id == self.node_id(),
            node,
        })
    }

    async fn find(&self, reference: &str) -> Result<Node> {
        self.read(|state| state.find_node(reference).cloned())
            .await?
            .map_err(ManagerError::not_found(Object::Node, reference))
    }

    pub async fn update_node(
        &self,
        reference: &str,
        update: NodeUpdateRequest,
    ) -> Result<NodeView> {
        for (key, value) in &update.label_add {
            hoist_types::node::validate_label_key(key)
                .and_then(|()| hoist_types::node::validate_label_value(key, value))
                .map_err(|err| ManagerError::invalid(Input::NodeLabel, err.to_string()))?;
        }
        let node = self.find(reference).await?;
        for key in &update.label_rm {
            if !node.labels.contains_key(key) && !update.label_add.contains_key(key) {
                return Err(ManagerError::invalid(
                    Input::NodeLabel,
                    format!("label {key:?} is not set on node {}", node.hostname),
                ));
            }
        }
        self.propose(Change::UpdateNode {
            node_id: node.id,
            availability: update.availability,
            label_add: update.label_add,
            label_rm: update.label_rm,
            at_ms: now_ms(),
        })
        .await?;
        self.inspect_node(&node.id.to_string()).await
    }

    /// Sets the desired role to manager; the node renews its certificate and asks to
    /// become a voter on its next beat.
    pub async fn promote(&self, reference: &str) -> Result<NodeView> {
        let node = self.find(reference).await?;
        if node.role != Role::Manager {
            self.propose(Change::SetNodeRole {
                node_id: node.id,
                role: Role::Manager,
                at_ms: now_ms(),
            })
            .await?;
        }
        self.inspect_node(&node.id.to_string()).await
    }

    /// Removes the node from the voters (if quorum allows), then records it as a worker.
    ///
    /// Demoting the leader itself goes through the same joint-consensus change: openraft
    /// commits a membership without this node, and the leader steps down once it is
    /// committed. The remaining voters elect a leader among themselves, and this node,
    /// no longer in the group, cannot commit the role change: it answers
    /// [`Demotion::HandedOver`] with the managers that can, and the caller sends them the
    /// rest of the demotion.
    pub async fn demote(&self, reference: &str) -> Result<Demotion> {
        let node = self.find(reference).await?;
        let membership = self.raft().membership();
        if node.role == Role::Worker && !membership.voters.contains_key(&node.id.0) {
            let view = self.inspect_node(&node.id.to_string()).await?;
            return Ok(Demotion::Done(Box::new(view)));
        }
        self.require_leader()?;
        let state = self.read(ClusterState::clone).await?;
        check_quorum_after_removal(&state, &membership, node.id, "demote")?;
        // Between leaving the group and the role change, the node's heartbeats must
        // neither tell it to rejoin nor its join-me add it back.
        let _demoting = DemotingGuard::new(self, node.id);
        if membership.voters.contains_key(&node.id.0)
            || membership.learners.contains_key(&node.id.0)
        {
            self.raft().remove_voter(node.id.0).await?;
        }
        if node.id == self.node_id() {
            let managers: Vec<String> = membership
                .voters
                .iter()
                .filter(|(id, _)| **id != node.id.0)
                .map(|(_, addr)| addr.clone())
                .collect();
            tracing::info!(node = %node.id, ?managers, "the leader left the raft group; the other managers finish its demotion");
            return Ok(Demotion::HandedOver { managers });
        }
        self.propose(Change::SetNodeRole {
            node_id: node.id,
            role: Role::Worker,
            at_ms: now_ms(),
        })
        .await?;
        Ok(Demotion::Done(Box::new(
            self.inspect_node(&node.id.to_string()).await?,
        )))
    }

    /// Removes a node for good. A node that is still Ready needs `force`; a manager must
    /// keep the quorum, and without `force` must be demoted first (as in Swarm).
    ///
    /// Removing the leader itself (`--force`) hands over as a demotion does: it leaves
    /// the group, steps down, and returns the managers that must record the removal.
    pub async fn remove_node(&self, reference: &str, force: bool) -> Result<Option<Vec<String>>> {
        let node = self.find(reference).await?;
        let membership = self.raft().membership();
        let is_voter = membership.voters.contains_key(&node.id.0);
        if node.role == Role::Manager || is_voter {
            if !force {
                return Err(ManagerError::refused(Conflict::ManagerNotDemoted, format!(
                    "node {} is a manager: demote it with `hoist node demote {}` before removing it, or use --force",
                    node.hostname, node.hostname
                )));
            }
            self.require_leader()?;
            let state = self.read(ClusterState::clone).await?;
            check_quorum_after_removal(&state, &membership, node.id, "remove")?;
            let _demoting = DemotingGuard::new(self, node.id);
            if is_voter || membership.learners.contains_key(&node.id.0) {
                self.raft().remove_voter(node.id.0).await?;
            }
            if node.id == self.node_id() {
                let managers = membership
                    .voters
                    .iter()
                    .filter(|(id, _)| **id != node.id.0)
                    .map(|(_, addr)| addr.clone())
                    .collect();
                return Ok(Some(managers));
            }
        } else if node.status == NodeStatus::Ready && !force {
            return Err(ManagerError::refused(
                Conflict::NodeUp,
                format!(
                    "node {} is not down and can't be removed: stop it first, or use --force",
                    node.hostname
                ),
            ));
        }
        self.propose(Change::RemoveNode {
            node_id: node.id,
            at_ms: now_ms(),
        })
        .await?;
        tracing::info!(node = %node.id, hostname = %node.hostname, "node removed");
        Ok(None)
    }

    pub async fn info(&self, hostname: &str, cert_not_after: Option<i64>) -> Result<InfoResponse> {
        let state = self.read(ClusterState::clone).await?;
        let status = self.raft().status();
        let leader_addr = self.raft().leader_addr();
        let me = state.nodes.get(&self.node_id());
        Ok(InfoResponse {
            node_id: Some(self.node_id()),
            hostname: me
                .map(|node| node.hostname.clone())
                .unwrap_or_else(|| hostname.to_string()),
            cluster_id: Some(state.cluster_id.clone()),
            role: Some(Role::Manager),
            is_leader: status.leader == Some(self.node_id().0),
            leader: status.leader.map(NodeId),
            leader_addr,
            managers: status.membership.voters.len(),
            quorum: status.membership.quorum(),
            nodes: state.nodes.len(),
            raft_term: status.term,
            raft_commit_index: status.applied_index,
            heartbeat_period_ms: state.settings.heartbeat_period_ms,
            heartbeat_grace: state.settings.heartbeat_grace,
            cert_expiry_secs: state.settings.cert_expiry_secs,
            cert_not_after,
            ..InfoResponse::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::{Availability, EngineInfo};

    fn manager_node(id: u64, status: NodeStatus) -> Node {
        Node {
            id: NodeId(id),
            hostname: format!("m{id}"),
            addr: String::new(),
            role: Role::Manager,
            availability: Availability::Active,
            status,
            status_message: String::new(),
            labels: Default::default(),
            engine: EngineInfo::default(),
            resources: Default::default(),
            port_faults: Vec::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn cluster(statuses: &[NodeStatus]) -> (ClusterState, MembershipInfo) {
        let mut state = ClusterState::default();
        let mut membership = MembershipInfo::default();
        for (index, status) in statuses.iter().enumerate() {
            let id = index as u64 + 1;
            state.nodes.insert(NodeId(id), manager_node(id, *status));
            membership.voters.insert(id, String::new());
        }
        (state, membership)
    }

    #[test]
    fn demoting_keeps_a_reachable_majority_or_is_refused() {
        use NodeStatus::{Down, Ready};
        let (state, membership) = cluster(&[Ready, Ready, Ready]);
        assert!(check_quorum_after_removal(&state, &membership, NodeId(3), "demote").is_ok());

        let (state, membership) = cluster(&[Ready, Ready, Down]);
        let err = check_quorum_after_removal(&state, &membership, NodeId(2), "demote").unwrap_err();
        assert!(err.to_string().contains("lose quorum"), "{err}");
        // Removing the unreachable one is fine: 2 of 2 remain reachable.
        assert!(check_quorum_after_removal(&state, &membership, NodeId(3), "demote").is_ok());

        let (state, membership) = cluster(&[Ready]);
        let err = check_quorum_after_removal(&state, &membership, NodeId(1), "demote").unwrap_err();
        assert!(err.to_string().contains("last manager"), "{err}");
    }
}
