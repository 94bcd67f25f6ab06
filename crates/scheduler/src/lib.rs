//! The scheduler: picks a node for each pending task, or explains why none fits.
//!
//! [`schedule`] is a pure function of a [`ClusterView`] (nodes, services, and the tasks
//! already on nodes) and the pending tasks. Each node goes through a pipeline of filters
//! (ready, availability, constraints, driver, max replicas per node, resources, host
//! ports); among the nodes that pass, placement preferences pick a label group and then
//! the spread picks the node with the fewest tasks of the service, then the fewest tasks
//! overall, then the lowest node id, so equal inputs always give equal outputs. Every
//! decision is recorded in the view before the next task is placed, so a batch spreads
//! as if the tasks had been placed one by one.
//!
//! It deliberately does not know the store, the clock or Raft: the caller builds the view
//! from its state, and turns each [`Decision`] into a change (see [`Decision`]). It does
//! not look at actual resource usage either, only at reservations, as in Swarm.

mod filter;

use std::collections::{BTreeMap, HashMap};

use hoist_types::node::Resources;
use hoist_types::service::{PlacementPref, PortMode, Service, ServiceSpec};
use hoist_types::task::{DesiredState, Task};
use hoist_types::{DriverKind, Node, NodeId, ServiceId, TaskId};
use serde::{Deserialize, Serialize};

pub use filter::{check_node_eligible, explain_rejections, Rejection};

/// What the scheduler decided for one pending task.
///
/// The caller applies it as follows:
/// - `Assign`: set the task's `node_id`, move its observed state to `Assigned` (status
///   message "assigned", timestamp now) and clear `pending_reason`. Skip it if the task
///   changed meanwhile (no longer `New`/`Pending`, or desired state no longer running).
/// - `Pending`: store `reason` in the task's `pending_reason`, only if it differs from the
///   current one, so a cluster with an unplaceable task does not write the same reason
///   to the log on every pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Assign { task_id: TaskId, node_id: NodeId },
    Pending { task_id: TaskId, reason: String },
}

impl Decision {
    pub fn task_id(&self) -> TaskId {
        match self {
            Decision::Assign { task_id, .. } | Decision::Pending { task_id, .. } => *task_id,
        }
    }
}

/// What is already committed on one node: the tasks on it that are not terminal,
/// whatever their desired state (a task being stopped still holds its reservation and
/// its host ports until it has stopped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Tasks on the node, of all services.
    pub n_tasks: u64,
    /// Sum of the reservations of those tasks.
    pub reserved: Resources,
    /// Published ports in host mode bound by those tasks.
    pub host_ports: Vec<u16>,
}

/// The scheduler's picture of the cluster. Built once per pass from the replicated
/// state; [`ClusterView::schedule`] updates it as it places tasks.
#[derive(Debug, Clone)]
pub struct ClusterView<'a> {
    /// Sorted by id, so every scan visits nodes in the same order.
    nodes: Vec<&'a Node>,
    node_index: HashMap<NodeId, usize>,
    services: BTreeMap<ServiceId, &'a Service>,
    /// Indexed like `nodes`.
    loads: Vec<NodeLoad>,
    /// Tasks of each service per node, indexed like `nodes`. A vector per service makes
    /// the spread's inner loop two array reads per node.
    service_counts: HashMap<ServiceId, Vec<u64>>,
}

impl<'a> ClusterView<'a> {
    /// Builds the view. `tasks` may be every task of the cluster: only those that hold a
    /// node (assigned or later, not terminal) are counted. Tasks on nodes not in `nodes`
    /// are ignored.
    pub fn new<'t>(
        nodes: impl IntoIterator<Item = &'a Node>,
        services: impl IntoIterator<Item = &'a Service>,
        tasks: impl IntoIterator<Item = &'t Task>,
    ) -> ClusterView<'a> {
        let mut nodes: Vec<&'a Node> = nodes.into_iter().collect();
        nodes.sort_by_key(|node| node.id);
        nodes.dedup_by_key(|node| node.id);
        let node_index = nodes
            .iter()
            .enumerate()
            .map(|(idx, node)| (node.id, idx))
            .collect();
        let mut view = ClusterView {
            loads: vec![NodeLoad::default(); nodes.len()],
            nodes,
            node_index,
            services: services
                .into_iter()
                .map(|service| (service.id, service))
                .collect(),
            service_counts: HashMap::new(),
        };
        for task in tasks {
            let holds_node = !task.status.state.is_unassigned() && task.status.state.is_active();
            if let (true, Some(node_id)) = (holds_node, task.node_id) {
                view.record(node_id, task.service_id, &task.spec);
            }
        }
        view
    }

    pub fn nodes(&self) -> &[&'a Node] {
        &self.nodes
    }

    pub fn node(&self, node_id: NodeId) -> Option<&'a Node> {
        self.node_index.get(&node_id).map(|&idx| self.nodes[idx])
    }

    pub fn service(&self, service_id: ServiceId) -> Option<&'a Service> {
        self.services.get(&service_id).copied()
    }

    pub fn load(&self, node_id: NodeId) -> Option<&NodeLoad> {
        self.node_index.get(&node_id).map(|&idx| &self.loads[idx])
    }

    /// Tasks of `service_id` on `node_id` (not terminal, any desired state).
    pub fn service_tasks_on(&self, node_id: NodeId, service_id: ServiceId) -> u64 {
        match (
            self.node_index.get(&node_id),
            self.service_counts.get(&service_id),
        ) {
            (Some(&idx), Some(counts)) => counts[idx],
            _ => 0,
        }
    }

    /// Counts a task of `service_id` made from `spec` on `node_id`, as a placement does.
    /// The orchestrator calls it after deciding a move, so the next decision of the same
    /// pass sees the node's new load.
    pub fn record(&mut self, node_id: NodeId, service_id: ServiceId, spec: &ServiceSpec) {
        let Some(&idx) = self.node_index.get(&node_id) else {
            return;
        };
        let n_nodes = self.nodes.len();
        let load = &mut self.loads[idx];
        load.n_tasks += 1;
        let reservations = spec.resources.reservations;
        load.reserved.nano_cpus = load
            .reserved
            .nano_cpus
            .saturating_add(reservations.nano_cpus);
        load.reserved.memory_bytes = load
            .reserved
            .memory_bytes
            .saturating_add(reservations.memory_bytes);
        load.host_ports.extend(host_ports(spec));
        self.service_counts
            .entry(service_id)
            .or_insert_with(|| vec![0; n_nodes])[idx] += 1;
    }

    /// Every filter for a task of `service` made from `task_spec` on `node_id`: the
    /// node's static eligibility (from the service's current placement rules and the
    /// task's driver), then its capacity given what is already on it.
    pub fn check(
        &self,
        node_id: NodeId,
        service: &Service,
        task_spec: &ServiceSpec,
    ) -> Result<(), Rejection> {
        let Some(&idx) = self.node_index.get(&node_id) else {
            return Err(Rejection::NodeNotFound);
        };
        filter::check_static(self.nodes[idx], &service.spec, task_spec.driver)?;
        self.check_capacity_at(idx, service, task_spec)
    }

    /// The filters that depend on what is already on the node: max replicas per node,
    /// resources, host ports.
    pub fn check_capacity(
        &self,
        node_id: NodeId,
        service: &Service,
        task_spec: &ServiceSpec,
    ) -> Result<(), Rejection> {
        match self.node_index.get(&node_id) {
            Some(&idx) => self.check_capacity_at(idx, service, task_spec),
            None => Err(Rejection::NodeNotFound),
        }
    }

    fn check_capacity_at(
        &self,
        idx: usize,
        service: &Service,
        task_spec: &ServiceSpec,
    ) -> Result<(), Rejection> {
        let n_service_tasks = self
            .service_counts
            .get(&service.id)
            .map_or(0, |counts| counts[idx]);
        filter::check_capacity(
            self.nodes[idx],
            &self.loads[idx],
            n_service_tasks,
            service.spec.max_replicas_per_node,
            task_spec,
        )
    }

    /// Places `pending` tasks in order of creation and records each placement in the
    /// view. Tasks that are not waiting (observed state past `Pending`, or desired state
    /// not running) and tasks of services not in the view get no decision: the
    /// orchestrator is removing them.
    pub fn schedule<'t>(&mut self, pending: impl IntoIterator<Item = &'t Task>) -> Vec<Decision> {
        let mut pending: Vec<&Task> = pending
            .into_iter()
            .filter(|task| {
                task.status.state.is_unassigned()
                    && task.desired_state == DesiredState::Running
                    && self.services.contains_key(&task.service_id)
            })
            .collect();
        // Oldest first, so a task waiting since long is not starved by a large new batch;
        // then by service and slot, which keeps a service's tasks together.
        pending.sort_by_key(|task| (task.created_at_ms, task.service_id, task.slot, task.id));
        // Static eligibility depends only on the service and the driver, and does not
        // change while placing: compute it once per pair for the whole batch.
        let mut eligible_cache: HashMap<(ServiceId, DriverKind), Eligible> = HashMap::new();
        let mut decisions = Vec::with_capacity(pending.len());
        for task in pending {
            let Some(service) = self.service(task.service_id) else {
                continue;
            };
            let decision = match task.node_id {
                Some(node_id) => self.place_on(task, service, node_id),
                None => {
                    let eligible = eligible_cache
                        .entry((service.id, task.spec.driver))
                        .or_insert_with(|| self.eligible(service, task.spec.driver));
                    self.place_anywhere(task, service, eligible)
                }
            };
            if let Decision::Assign { node_id, .. } = decision {
                self.record(node_id, service.id, &task.spec);
            }
            decisions.push(decision);
        }
        decisions
    }

    /// A task bound to one node (a global task, a rebalance move) may only go there.
    fn place_on(&self, task: &Task, service: &Service, node_id: NodeId) -> Decision {
        match self.check(node_id, service, &task.spec) {
            Ok(()) => Decision::Assign {
                task_id: task.id,
                node_id,
            },
            Err(rejection) => {
                let name = self
                    .node(node_id)
                    .map_or_else(|| node_id.to_string(), |node| node.hostname.clone());
                Decision::Pending {
                    task_id: task.id,
                    reason: format!("node {name} {}", rejection.phrase(1)),
                }
            }
        }
    }

    fn eligible(&self, service: &Service, driver: DriverKind) -> Eligible {
        let mut eligible = Eligible::default();
        for (idx, node) in self.nodes.iter().enumerate() {
            match filter::check_static(node, &service.spec, driver) {
                Ok(()) => eligible.nodes.push(idx),
                Err(rejection) => eligible.rejected.push(rejection),
            }
        }
        eligible
    }

    fn place_anywhere(&self, task: &Task, service: &Service, eligible: &Eligible) -> Decision {
        let zeros;
        let service_counts = match self.service_counts.get(&service.id) {
            Some(counts) => counts,
            None => {
                zeros = vec![0; self.nodes.len()];
                &zeros
            }
        };
        let candidates = if service.spec.placement_prefs.is_empty() {
            let key = |idx: usize| (service_counts[idx], self.loads[idx].n_tasks, idx);
            // The common case: the emptiest node has room. One pass finds it; the full
            // order is only sorted when it does not.
            let best = eligible.nodes.iter().copied().min_by_key(|&idx| key(idx));
            if let Some(best) = best {
                if self.check_capacity_at(best, service, &task.spec).is_ok() {
                    return Decision::Assign {
                        task_id: task.id,
                        node_id: self.nodes[best].id,
                    };
                }
            }
            let mut order = eligible.nodes.clone();
            order.sort_by_key(|&idx| key(idx));
            order
        } else {
            self.by_preferences(eligible, service_counts, &service.spec.placement_prefs)
        };
        let mut capacity_rejections = Vec::new();
        for idx in candidates {
            match self.check_capacity_at(idx, service, &task.spec) {
                Ok(()) => {
                    return Decision::Assign {
                        task_id: task.id,
                        node_id: self.nodes[idx].id,
                    }
                }
                Err(rejection) => capacity_rejections.push(rejection),
            }
        }
        let all_rejections = eligible.rejected.iter().chain(&capacity_rejections);
        Decision::Pending {
            task_id: task.id,
            reason: explain_rejections(all_rejections),
        }
    }

    /// Placement preferences build a tree: the first label splits the eligible nodes
    /// into groups by value (nodes without the label form one more group), the next
    /// label splits each group, and so on. A node's key is the number of the service's
    /// tasks in its group at each level, then on the node, then the node's total: the
    /// smallest key is the emptiest leaf of the emptiest group.
    fn by_preferences(
        &self,
        eligible: &Eligible,
        service_counts: &[u64],
        prefs: &[PlacementPref],
    ) -> Vec<usize> {
        let group_path = |idx: usize, depth: usize| -> Vec<Option<&str>> {
            prefs[..depth]
                .iter()
                .map(|PlacementPref::Spread { label }| {
                    self.nodes[idx].labels.get(label).map(String::as_str)
                })
                .collect()
        };
        let mut group_counts: HashMap<Vec<Option<&str>>, u64> = HashMap::new();
        for &idx in &eligible.nodes {
            for depth in 1..=prefs.len() {
                *group_counts.entry(group_path(idx, depth)).or_default() += service_counts[idx];
            }
        }
        let mut keyed: Vec<(Vec<u64>, usize)> = eligible
            .nodes
            .iter()
            .map(|&idx| {
                let mut key: Vec<u64> = (1..=prefs.len())
                    .map(|depth| group_counts[&group_path(idx, depth)])
                    .collect();
                key.push(service_counts[idx]);
                key.push(self.loads[idx].n_tasks);
                (key, idx)
            })
            .collect();
        // The node index ends each key's tie: nodes are sorted by id.
        keyed.sort();
        keyed.into_iter().map(|(_, idx)| idx).collect()
    }
}

/// The nodes that pass the static filters for one (service, driver), and the rejections
/// of the others, kept to explain a pending task.
#[derive(Default)]
struct Eligible {
    nodes: Vec<usize>,
    rejected: Vec<Rejection>,
}

/// Places `pending` on a copy of `view` and returns one decision per task that was
/// waiting (see [`ClusterView::schedule`]). The view itself is left untouched.
pub fn schedule<'t>(
    view: &ClusterView,
    pending: impl IntoIterator<Item = &'t Task>,
) -> Vec<Decision> {
    view.clone().schedule(pending)
}

/// The host-mode published ports of a spec: what a task of it binds on its node.
pub fn host_ports(spec: &ServiceSpec) -> impl Iterator<Item = u16> + '_ {
    spec.ports
        .iter()
        .filter(|port| port.mode == PortMode::Host)
        .map(|port| port.published)
}

#[cfg(test)]
mod tests;
