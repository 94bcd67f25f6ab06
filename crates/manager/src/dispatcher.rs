//! The dispatcher: the leader's view of which nodes are alive.
//!
//! Heartbeats are kept in the leader's memory, not in Raft: only a node's move between
//! Ready and Down is written, so a thousand nodes beating every second cost no log
//! writes while nothing changes. A new leader starts with a full grace period for every
//! node, since it has not heard anyone yet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_api::{HeartbeatRequest, HeartbeatResponse};
use hoist_pki::PeerIdentity;
use hoist_state::Change;
use hoist_types::{NodeId, NodeStatus};
use tokio::sync::watch;

use crate::{now_ms, Manager, ManagerError, Result};

/// Heartbeat bookkeeping of the current leader.
#[derive(Clone, Default)]
pub struct Dispatcher {
    inner: Arc<Mutex<DispatcherState>>,
}

#[derive(Default)]
struct DispatcherState {
    last_seen: HashMap<NodeId, Instant>,
    /// When this node last became leader; `None` while it is not.
    leader_since: Option<Instant>,
    /// Status changes proposed and not yet applied, so a burst of beats proposes once.
    in_flight: HashSet<NodeId>,
}

impl Dispatcher {
    pub fn new() -> Self {
        Dispatcher::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DispatcherState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Nodes whose last beat (or the start of this leadership, if none) is older than
/// `timeout`, among those not already Down. Pure, for testing.
pub(crate) fn expired_nodes(
    nodes: &[(NodeId, NodeStatus)],
    last_seen: &HashMap<NodeId, Instant>,
    leader_since: Instant,
    now: Instant,
    timeout: Duration,
) -> Vec<NodeId> {
    nodes
        .iter()
        .filter(|(_, status)| *status != NodeStatus::Down)
        .filter(|(node_id, _)| {
            let last = last_seen
                .get(node_id)
                .copied()
                .unwrap_or(leader_since)
                .max(leader_since);
            now.saturating_duration_since(last) > timeout
        })
        .map(|(node_id, _)| *node_id)
        .collect()
}

impl Manager {
    /// A node's beat. Only the leader accepts it.
    pub async fn heartbeat(
        &self,
        peer: &PeerIdentity,
        request: HeartbeatRequest,
    ) -> Result<HeartbeatResponse> {
        self.require_leader()?;
        let node = self
            .local(|state| state.nodes.get(&peer.node_id).cloned())
            .ok_or_else(|| {
                ManagerError::Forbidden(format!(
                    "node {} is not a member of this cluster (it was removed)",
                    peer.node_id
                ))
            })?;
        let (settings, managers, manager_ids) = self.local(|state| {
            (
                state.settings,
                state.managers().map(|node| node.addr.clone()).collect(),
                state.managers().map(|node| node.id).collect(),
            )
        });
        let needs_status = node.status != NodeStatus::Ready;
        let needs_description = node.addr != request.addr || node.engine != request.engine;
        let propose = {
            let mut dispatcher = self.dispatcher().lock();
            dispatcher.last_seen.insert(peer.node_id, Instant::now());
            (needs_status || needs_description) && dispatcher.in_flight.insert(peer.node_id)
        };
        if propose {
            let manager = self.clone();
            let node_id = peer.node_id;
            tokio::spawn(async move {
                let at_ms = now_ms();
                if needs_description {
                    let change = Change::SetNodeDescription {
                        node_id,
                        addr: request.addr,
                        engine: request.engine,
                        at_ms,
                    };
                    if let Err(err) = manager.propose(change).await {
                        tracing::warn!(node = %node_id, error = %err, "recording node description");
                    }
                }
                if needs_status {
                    let change = Change::SetNodeStatus {
                        node_id,
                        status: NodeStatus::Ready,
                        message: String::new(),
                        at_ms,
                    };
                    match manager.propose(change).await {
                        Ok(_) => tracing::info!(node = %node_id, "node is ready"),
                        Err(err) => {
                            tracing::warn!(node = %node_id, error = %err, "marking node ready")
                        }
                    }
                }
                manager.dispatcher().lock().in_flight.remove(&node_id);
            });
        }
        Ok(HeartbeatResponse {
            period_ms: settings.heartbeat_period_ms,
            desired_role: node.role,
            managers,
            manager_ids,
            cert_expiry_secs: settings.cert_expiry_secs,
        })
    }

    /// Marks nodes Down when their beats stop, for as long as this node leads. Returns
    /// when `shutdown` turns true.
    pub async fn run_node_watch(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let period = self
                .local(|state| state.settings.heartbeat_period_ms)
                .max(50);
            let tick = Duration::from_millis(period / 4);
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            if *shutdown.borrow() {
                return;
            }
            if !self.is_leader() {
                let mut dispatcher = self.dispatcher().lock();
                dispatcher.leader_since = None;
                dispatcher.last_seen.clear();
                continue;
            }
            let (nodes, timeout) = self.local(|state| {
                let nodes: Vec<(NodeId, NodeStatus)> = state
                    .nodes
                    .values()
                    .map(|node| (node.id, node.status))
                    .collect();
                let timeout = Duration::from_millis(
                    state.settings.heartbeat_period_ms * u64::from(state.settings.heartbeat_grace),
                );
                (nodes, timeout)
            });
            let expired = {
                let mut dispatcher = self.dispatcher().lock();
                let now = Instant::now();
                let leader_since = *dispatcher.leader_since.get_or_insert(now);
                let expired =
                    expired_nodes(&nodes, &dispatcher.last_seen, leader_since, now, timeout);
                expired
                    .into_iter()
                    .filter(|node_id| dispatcher.in_flight.insert(*node_id))
                    .collect::<Vec<_>>()
            };
            for node_id in expired {
                let manager = self.clone();
                tokio::spawn(async move {
                    let change = Change::SetNodeStatus {
                        node_id,
                        status: NodeStatus::Down,
                        message: "heartbeat failure".into(),
                        at_ms: now_ms(),
                    };
                    match manager.propose(change).await {
                        Ok(_) => tracing::warn!(node = %node_id, "node is down: heartbeat failure"),
                        Err(err) => {
                            tracing::warn!(node = %node_id, error = %err, "marking node down")
                        }
                    }
                    manager.dispatcher().lock().in_flight.remove(&node_id);
                });
            }
        }
    }
}

/// The published ports a node's mesh serves. Ingress ports are served on every node,
/// with every running task as an endpoint; host-mode ports only on nodes that run a task
/// of the service, with that node's tasks. A task told to stop but still running is an
/// endpoint in draining state, so meshes stop sending it work before it goes.
pub(crate) fn routes_of(
    state: &hoist_state::ClusterState,
    node_id: NodeId,
) -> Vec<hoist_api::PublishedRoute> {
    use hoist_types::service::PortMode;
    use hoist_types::task::{DesiredState, TaskState};
    let mut routes = Vec::new();
    for service in state.services.values() {
        for port in &service.spec.ports {
            let host_mode = port.mode == PortMode::Host;
            let endpoints: Vec<hoist_api::RouteEndpoint> = state
                .tasks
                .values()
                .filter(|task| {
                    task.service_id == service.id && task.status.state == TaskState::Running
                })
                .filter(|task| !host_mode || task.node_id == Some(node_id))
                .flat_map(|task| {
                    task.status
                        .endpoints
                        .iter()
                        .filter(|endpoint| endpoint.target_port == port.target)
                        .map(|endpoint| hoist_api::RouteEndpoint {
                            task_id: task.id.to_string(),
                            addr: endpoint.addr.clone(),
                            draining: task.desired_state != DesiredState::Running,
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            if host_mode && endpoints.is_empty() {
                continue;
            }
            routes.push(hoist_api::PublishedRoute {
                service_id: service.id.to_string(),
                service_name: service.spec.name.clone(),
                published: port.published,
                target: port.target,
                protocol: port.protocol,
                mode: port.mode,
                health_path: service.spec.health_path.clone(),
                routes: if port.protocol == hoist_types::service::Protocol::Http {
                    service.spec.routes.clone()
                } else {
                    Vec::new()
                },
                endpoints,
            });
        }
    }
    routes
}

/// The tasks a node should know about: assigned to it and not yet ended.
pub(crate) fn assignments_of(
    state: &hoist_state::ClusterState,
    node_id: NodeId,
) -> hoist_api::AssignmentSet {
    let tasks = state
        .tasks
        .values()
        .filter(|task| task.node_id == Some(node_id))
        .filter(|task| !task.status.state.is_unassigned() && !task.status.state.is_terminal())
        .cloned()
        .collect();
    hoist_api::AssignmentSet {
        tasks,
        routes: routes_of(state, node_id),
    }
}

impl Manager {
    /// A stream of the node's assignment sets: the current one at once, then each time
    /// it changes. Ends when this manager stops leading, so the worker reconnects to the
    /// new leader.
    pub fn assignment_stream(
        &self,
        node_id: NodeId,
    ) -> impl futures::Stream<Item = hoist_api::AssignmentSet> + Send + 'static {
        let manager = self.clone();
        let versions = self.raft().state().subscribe();
        futures::stream::unfold(
            (manager, versions, None::<hoist_api::AssignmentSet>),
            move |(manager, mut versions, last)| async move {
                loop {
                    if !manager.is_leader() {
                        return None;
                    }
                    versions.borrow_and_update();
                    let current = manager.local(|state| assignments_of(state, node_id));
                    if last.as_ref() != Some(&current) {
                        return Some((current.clone(), (manager, versions, Some(current))));
                    }
                    // Re-check leadership now and then even if nothing changes.
                    let _ = tokio::time::timeout(Duration::from_secs(1), versions.changed()).await;
                }
            },
        )
    }

    /// Records what a worker observed of its tasks. Terminal states are stamped with the
    /// leader's clock, since restart delays are counted from them and a worker's clock
    /// may differ.
    pub async fn report_status(
        &self,
        peer: &PeerIdentity,
        mut reports: Vec<hoist_state::TaskReport>,
    ) -> Result<()> {
        self.require_leader()?;
        let now = now_ms();
        for report in &mut reports {
            if report.status.state.is_terminal() {
                report.status.timestamp_ms = now;
            }
        }
        if reports.is_empty() {
            return Ok(());
        }
        self.propose(Change::ReportTaskStatus {
            node_id: peer.node_id,
            reports,
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_expire_after_the_timeout_counted_from_leadership_at_the_earliest() {
        let start = Instant::now();
        let timeout = Duration::from_secs(3);
        let a = NodeId(1);
        let b = NodeId(2);
        let c = NodeId(3);
        let nodes = vec![
            (a, NodeStatus::Ready),
            (b, NodeStatus::Ready),
            (c, NodeStatus::Down),
        ];
        let mut last_seen = HashMap::new();
        last_seen.insert(a, start + Duration::from_secs(2));
        // b never beat: its grace starts with the leadership.
        let at = |secs| start + Duration::from_secs(secs);
        assert!(expired_nodes(&nodes, &last_seen, start, at(3), timeout).is_empty());
        assert_eq!(
            expired_nodes(&nodes, &last_seen, start, at(4), timeout),
            vec![b]
        );
        assert_eq!(
            expired_nodes(&nodes, &last_seen, start, at(6), timeout),
            vec![a, b],
            "c is already down and is not reported again"
        );
        // A beat older than the leadership counts from the leadership.
        assert!(expired_nodes(&nodes, &last_seen, at(5), at(7), timeout).is_empty());
    }
}
