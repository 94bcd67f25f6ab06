//! The dispatcher: the leader's view of which nodes are alive.
//!
//! Heartbeats are kept in the leader's memory, not in Raft: only a node's move between
//! Ready and Down is written, so a thousand nodes beating every second cost no log
//! writes while nothing changes. A new leader starts with a full grace period for every
//! node, since it has not heard anyone yet.
//!
//! What a node sends is checked before anything is proposed, because a proposal is
//! written to every manager's log: a beat's address may only change to the IP the beat
//! came from, beats and reports are size-capped, reports about tasks of other nodes
//! are dropped, and an endpoint must be on its node's own address
//! (`hoist_types::node::check_endpoint`). A node follows one assignment stream at a time.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_api::{HeartbeatRequest, HeartbeatResponse};
use hoist_pki::PeerIdentity;
use hoist_state::Change;
use hoist_types::{NodeId, NodeStatus, Role};
use tokio::sync::watch;

use crate::{now_ms, Conflict, Denial, Input, Manager, ManagerError, Result};

/// Heartbeat bookkeeping of the current leader.
#[derive(Clone, Default)]
pub struct Dispatcher {
    inner: Arc<Mutex<DispatcherState>>,
}

#[derive(Default)]
pub(crate) struct DispatcherState {
    last_seen: HashMap<NodeId, Instant>,
    /// When this node last became leader; `None` while it is not.
    leader_since: Option<Instant>,
    /// Status changes proposed and not yet applied, so a burst of beats proposes once.
    in_flight: HashSet<NodeId>,
    /// Nodes with an assignment stream open on this manager: one each, so a node cannot
    /// make the leader compute and push its assignments any number of times over.
    streams: HashSet<NodeId>,
    /// CA renewals proposed and not yet applied, likewise.
    pub(crate) ca_in_flight: HashSet<NodeId>,
    /// Managers this leader is demoting: out of the Raft group before their role
    /// changes, and in that gap neither told to rejoin nor added back.
    pub(crate) demoting: HashSet<NodeId>,
}

/// Held by an open assignment stream; the node may open another once it is dropped
/// (the stream ended, or its connection went away).
struct StreamSlot {
    dispatcher: Dispatcher,
    node_id: NodeId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.dispatcher.lock().streams.remove(&self.node_id);
    }
}

impl Dispatcher {
    pub fn new() -> Self {
        Dispatcher::default()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, DispatcherState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a node's Raft is stale: the cluster wants it a manager and it runs Raft, but
/// the leader's group (`membership`, joint configurations included) holds it neither as
/// a voter nor as a learner, and this leader is not in the middle of demoting it. Pure.
fn must_rejoin(
    role: Role,
    raft_running: bool,
    demoting: bool,
    membership: &hoist_raft::MembershipInfo,
    node_id: NodeId,
) -> bool {
    role == Role::Manager
        && raft_running
        && !demoting
        && !membership.voters.contains_key(&node_id.0)
        && !membership.learners.contains_key(&node_id.0)
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
    /// A node's beat. Only the leader accepts it. `source` is the IP address the beat
    /// came from, when known: a node's address only changes to an address on that IP
    /// (the operator restarted it with another `--advertise-addr`).
    pub async fn heartbeat(
        &self,
        peer: &PeerIdentity,
        request: HeartbeatRequest,
        source: Option<IpAddr>,
    ) -> Result<HeartbeatResponse> {
        self.require_leader()?;
        request.check().map_err(|reason| {
            tracing::warn!(node = %peer.node_id, %reason, "heartbeat refused");
            ManagerError::invalid(Input::Heartbeat, format!("heartbeat refused: {reason}"))
        })?;
        let node = self
            .local(|state| state.nodes.get(&peer.node_id).cloned())
            .ok_or_else(|| {
                ManagerError::forbidden(
                    Denial::NotMember,
                    format!(
                        "node {} is not a member of this cluster (it was removed)",
                        peer.node_id
                    ),
                )
            })?;
        let (settings, managers, manager_ids) = self.local(|state| {
            (
                state.settings,
                state.managers().map(|node| node.addr.clone()).collect(),
                state.managers().map(|node| node.id).collect(),
            )
        });
        let mut addr = node.addr.clone();
        if request.addr != node.addr {
            match address_change_allowed(&request.addr, source) {
                Ok(()) => addr = request.addr.clone(),
                Err(reason) => tracing::warn!(
                    node = %peer.node_id,
                    recorded = %node.addr,
                    claimed = %request.addr,
                    source = ?source,
                    %reason,
                    "heartbeat address dropped"
                ),
            }
        }
        let (trust_pem, ca_digest) = self.note_ca_renewal(peer);
        let raft_running = request.raft_running;
        let needs_status = node.status != NodeStatus::Ready;
        let needs_description = node.addr != addr
            || node.engine != request.engine
            || node.resources != request.resources
            || node.port_faults != request.port_faults;
        let request = HeartbeatRequest { addr, ..request };
        let propose = {
            let mut dispatcher = self.dispatcher().lock();
            dispatcher.last_seen.insert(peer.node_id, Instant::now());
            (needs_status || needs_description) && dispatcher.in_flight.insert(peer.node_id)
        };
        if propose {
            self.record_beat(peer.node_id, request, needs_description, needs_status);
        }
        let demoting = self.dispatcher().lock().demoting.contains(&peer.node_id);
        let raft_rejoin = must_rejoin(
            node.role,
            raft_running,
            demoting,
            &self.raft().membership(),
            peer.node_id,
        );
        if raft_rejoin {
            tracing::warn!(node = %peer.node_id, "a manager runs raft outside the group: told to start it afresh");
        }
        Ok(HeartbeatResponse {
            raft_rejoin,
            period_ms: settings.heartbeat_period_ms,
            desired_role: node.role,
            managers,
            manager_ids,
            cert_expiry_secs: settings.cert_expiry_secs,
            trust_pem,
            ca_digest,
        })
    }

    /// Records in the background what a beat changed: the node's description (address,
    /// engine, resources) and its becoming Ready. One at a time per node (`in_flight`).
    fn record_beat(
        &self,
        node_id: NodeId,
        request: HeartbeatRequest,
        needs_description: bool,
        needs_status: bool,
    ) {
        let manager = self.clone();
        self.spawn(async move {
            let at_ms = now_ms();
            if needs_description {
                let change = Change::SetNodeDescription {
                    node_id,
                    addr: request.addr,
                    engine: request.engine,
                    resources: request.resources,
                    port_faults: request.port_faults,
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

    /// Marks nodes Down when their beats stop, for as long as this node leads. Returns
    /// when `shutdown` turns true.
    pub async fn run_node_watch(&self, shutdown: watch::Receiver<bool>) {
        self.tracked(self.node_watch(shutdown)).await
    }

    async fn node_watch(&self, mut shutdown: watch::Receiver<bool>) {
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
                self.spawn(async move {
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
                    // Checked again here, against the node's current address: an
                    // endpoint stored before the check existed, or before the node's
                    // address changed, is never dialled.
                    let task_node_addr = task
                        .node_id
                        .and_then(|id| state.nodes.get(&id))
                        .map(|node| node.addr.as_str())
                        .unwrap_or_default();
                    task.status
                        .endpoints
                        .iter()
                        .filter(|endpoint| endpoint.target_port == port.target)
                        .filter(move |endpoint| {
                            hoist_types::node::check_endpoint(task_node_addr, &endpoint.addr)
                                .is_ok()
                        })
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
    /// it changes, with `None` in between as a keep-alive (so a stream whose node went
    /// away fails its next write and frees its slot). Ends when this manager stops
    /// leading, so the worker reconnects to the new leader. Refused while the node
    /// already has a stream open here.
    pub fn assignment_stream(
        &self,
        node_id: NodeId,
    ) -> Result<impl futures::Stream<Item = Option<hoist_api::AssignmentSet>> + Send + 'static>
    {
        self.require_leader()?;
        if !self.dispatcher().lock().streams.insert(node_id) {
            tracing::warn!(node = %node_id, "second assignment stream refused");
            return Err(ManagerError::refused(
                Conflict::AssignmentStream,
                format!(
                "node {node_id} already follows an assignment stream on this manager: one per node"
            ),
            ));
        }
        let slot = StreamSlot {
            dispatcher: self.dispatcher().clone(),
            node_id,
        };
        let manager = self.clone();
        let versions = self.raft().state().subscribe();
        Ok(futures::stream::unfold(
            (manager, versions, None::<hoist_api::AssignmentSet>, slot),
            move |(manager, mut versions, last, slot)| async move {
                if !manager.is_leader() {
                    return None;
                }
                versions.borrow_and_update();
                let current = manager.local(|state| assignments_of(state, node_id));
                if last.as_ref() != Some(&current) {
                    return Some((
                        Some(current.clone()),
                        (manager, versions, Some(current), slot),
                    ));
                }
                // Nothing new: wait for a change, and re-check leadership and the
                // connection (the keep-alive) at least every second.
                let _ = tokio::time::timeout(KEEPALIVE, versions.changed()).await;
                Some((None, (manager, versions, last, slot)))
            },
        ))
    }

    /// Records what a worker observed of its tasks. Reports about tasks that are not
    /// the node's are dropped, and so are endpoints not on the node's own address; both
    /// before anything is proposed. Terminal states are stamped with the leader's clock,
    /// since restart delays are counted from them and a worker's clock may differ.
    pub async fn report_status(
        &self,
        peer: &PeerIdentity,
        request: hoist_api::StatusReportRequest,
    ) -> Result<()> {
        self.require_leader()?;
        request.check().map_err(|reason| {
            tracing::warn!(node = %peer.node_id, %reason, "status report refused");
            ManagerError::invalid(
                Input::StatusReport,
                format!("status report refused: {reason}"),
            )
        })?;
        let reports = self.local(|state| screen_reports(state, peer.node_id, request.reports));
        let now = now_ms();
        let mut reports = reports;
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

/// How often an idle assignment stream sends a blank line.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Whether a node may move to `claimed`: an IP:port on the IP its beat came from.
fn address_change_allowed(
    claimed: &str,
    source: Option<IpAddr>,
) -> std::result::Result<(), String> {
    let parsed = hoist_types::node::parse_node_addr(claimed).map_err(|err| err.to_string())?;
    match source {
        Some(source) if source.to_canonical() == parsed.ip().to_canonical() => Ok(()),
        Some(source) => Err(format!(
            "the beat came from {source}, not from the claimed address's IP"
        )),
        None => Err("the beat's source address is unknown".into()),
    }
}

/// The reports a node may make: about its own tasks, with endpoints on its own address.
/// Everything else is dropped with a log line. Pure, for testing.
pub(crate) fn screen_reports(
    state: &hoist_state::ClusterState,
    node_id: NodeId,
    reports: Vec<hoist_state::TaskReport>,
) -> Vec<hoist_state::TaskReport> {
    let node_addr = state
        .nodes
        .get(&node_id)
        .map(|node| node.addr.clone())
        .unwrap_or_default();
    reports
        .into_iter()
        .filter_map(|mut report| {
            let owner = state
                .tasks
                .get(&report.task_id)
                .and_then(|task| task.node_id);
            if owner != Some(node_id) {
                tracing::warn!(
                    node = %node_id,
                    task = %report.task_id,
                    owner = ?owner,
                    "status report about a task of another node dropped"
                );
                return None;
            }
            // What a workload wrote ends up in `service ps` on an operator's terminal:
            // control characters (escape sequences) are shown, never passed through.
            report.status.message = printable(&report.status.message);
            report.status.err = report.status.err.as_deref().map(printable);
            report.status.endpoints.retain(|endpoint| {
                match hoist_types::node::check_endpoint(&node_addr, &endpoint.addr) {
                    Ok(()) => true,
                    Err(reason) => {
                        tracing::warn!(
                            node = %node_id,
                            task = %report.task_id,
                            endpoint = %endpoint.addr,
                            %reason,
                            "reported endpoint dropped"
                        );
                        false
                    }
                }
            });
            Some(report)
        })
        .collect()
}

/// `text` with line breaks and tabs as spaces and other control characters escaped.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wanted_manager_running_raft_outside_the_group_rejoins() {
        let mut membership = hoist_raft::MembershipInfo::default();
        membership.voters.insert(1, String::new());
        membership.learners.insert(2, String::new());
        let outside = NodeId(3);
        assert!(must_rejoin(
            Role::Manager,
            true,
            false,
            &membership,
            outside
        ));
        // A voter, or a learner catching up, carries on.
        assert!(!must_rejoin(
            Role::Manager,
            true,
            false,
            &membership,
            NodeId(1)
        ));
        assert!(!must_rejoin(
            Role::Manager,
            true,
            false,
            &membership,
            NodeId(2)
        ));
        // Being demoted, wanted as a worker, or not running Raft: nothing to restart.
        assert!(!must_rejoin(
            Role::Manager,
            true,
            true,
            &membership,
            outside
        ));
        assert!(!must_rejoin(
            Role::Worker,
            true,
            false,
            &membership,
            outside
        ));
        assert!(!must_rejoin(
            Role::Manager,
            false,
            false,
            &membership,
            outside
        ));
    }

    #[test]
    fn report_texts_reach_the_state_printable() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(
            printable("two\nlines\tand\x1b[31mred"),
            "two lines and\\u{1b}[31mred"
        );
    }

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

    #[test]
    fn reports_are_kept_to_the_nodes_own_tasks_and_address() {
        use hoist_state::{ClusterState, TaskReport};
        use hoist_types::service::ServiceSpec;
        use hoist_types::task::{Task, TaskEndpoint, TaskOrigin, TaskState, TaskStatus};
        use hoist_types::{Availability, Node, Role, ServiceId, TaskId};

        let node = |id: u64| Node {
            id: NodeId(id),
            hostname: format!("n{id}"),
            addr: format!("10.0.0.{id}:2377"),
            role: Role::Worker,
            availability: Availability::Active,
            status: NodeStatus::Ready,
            status_message: String::new(),
            labels: Default::default(),
            engine: Default::default(),
            resources: Default::default(),
            port_faults: Vec::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let task = |id: u64, on: u64| Task {
            id: TaskId(id),
            service_id: ServiceId(1),
            slot: id,
            node_id: Some(NodeId(on)),
            service_version: 1,
            spec: ServiceSpec::default(),
            desired_state: hoist_types::task::DesiredState::Running,
            status: TaskStatus::new(TaskState::Starting, "", 0),
            created_at_ms: 0,
            updated_at_ms: 0,
            attempt: 0,
            origin: TaskOrigin::Created,
            pending_reason: None,
        };
        let mut state = ClusterState::default();
        for id in [1, 2] {
            state.nodes.insert(NodeId(id), node(id));
        }
        state.tasks.insert(TaskId(10), task(10, 1));
        state.tasks.insert(TaskId(20), task(20, 2));
        let running = |task_id: u64, endpoints: &[&str]| {
            let mut status = TaskStatus::new(TaskState::Running, "started", 1);
            status.endpoints = endpoints
                .iter()
                .map(|addr| TaskEndpoint {
                    target_port: 80,
                    addr: addr.to_string(),
                })
                .collect();
            TaskReport {
                task_id: TaskId(task_id),
                status,
            }
        };
        let kept = screen_reports(
            &state,
            NodeId(1),
            vec![
                running(
                    10,
                    &[
                        "10.0.0.1:30000",
                        "127.0.0.1:22",
                        "10.0.0.2:30000",
                        "169.254.169.254:80",
                    ],
                ),
                running(20, &["10.0.0.1:30001"]),
                running(99, &[]),
            ],
        );
        assert_eq!(
            kept.len(),
            1,
            "reports about other nodes' tasks are dropped"
        );
        assert_eq!(kept[0].task_id, TaskId(10));
        let addrs: Vec<&str> = kept[0]
            .status
            .endpoints
            .iter()
            .map(|endpoint| endpoint.addr.as_str())
            .collect();
        assert_eq!(addrs, vec!["10.0.0.1:30000"]);
    }

    #[test]
    fn an_address_only_moves_to_the_beats_own_ip() {
        let from = |ip: &str| Some(ip.parse::<IpAddr>().unwrap());
        assert!(address_change_allowed("10.0.0.9:2377", from("10.0.0.9")).is_ok());
        assert!(address_change_allowed("10.0.0.9:2377", from("::ffff:10.0.0.9")).is_ok());
        assert!(address_change_allowed("10.0.0.8:2377", from("10.0.0.9")).is_err());
        assert!(address_change_allowed("evil.example:2377", from("10.0.0.9")).is_err());
        assert!(address_change_allowed("10.0.0.9:2377", None).is_err());
    }
}
