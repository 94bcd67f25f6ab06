//! The filters a node must pass to take a task, and the words that explain a refusal.
//!
//! Static filters depend only on the node and the service (status, availability,
//! constraints, driver); capacity filters also depend on what is already on the node
//! (max replicas per node, reserved resources, host ports). Each refusal is a
//! [`Rejection`]; a pending task's reason counts them over all nodes, e.g. "no suitable
//! node (2 nodes drained, 1 node lacks 512 MiB of memory, 1 node not ready)".
//!
//! This module does not choose among the nodes that pass: that is the spread's job.

use hoist_types::service::{format_cpus, format_memory, Constraint, ServiceSpec};
use hoist_types::{Availability, DriverKind, Node, NodeStatus};

use crate::NodeLoad;

/// Drivers assumed of a node that reported none: every worker embeds the process driver.
const DEFAULT_DRIVERS: [DriverKind; 1] = [DriverKind::Process];

/// Why one node cannot take one task. Variants are in pipeline order: a node is counted
/// under the first filter it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    NodeNotFound,
    /// Status Down or Unknown: no heartbeat seen by this leader.
    NotReady,
    /// Availability pause: keeps its tasks, takes no new ones.
    Paused,
    Drained,
    /// The first constraint of the service the node fails.
    Constraint(Constraint),
    MissingDriver(DriverKind),
    /// The node already runs this many tasks of the service, the spec's maximum.
    MaxReplicasPerNode(u64),
    /// Memory the task reserves and the node no longer has.
    InsufficientMemory {
        needed: u64,
    },
    /// Nano-CPUs the task reserves and the node no longer has.
    InsufficientCpu {
        needed: u64,
    },
    /// A host-mode published port of the task is bound by another task on the node.
    HostPortInUse(u16),
}

impl Rejection {
    fn rank(&self) -> u8 {
        match self {
            Rejection::NodeNotFound => 0,
            Rejection::NotReady => 1,
            Rejection::Paused => 2,
            Rejection::Drained => 3,
            Rejection::Constraint(_) => 4,
            Rejection::MissingDriver(_) => 5,
            Rejection::MaxReplicasPerNode(_) => 6,
            Rejection::InsufficientMemory { .. } => 7,
            Rejection::InsufficientCpu { .. } => 8,
            Rejection::HostPortInUse(_) => 9,
        }
    }

    /// What `n_nodes` nodes share, as it follows "1 node" or "3 nodes":
    /// `phrase(1)` = "lacks 512 MiB of memory", `phrase(2)` = "lack 512 MiB of memory".
    pub fn phrase(&self, n_nodes: usize) -> String {
        let one = n_nodes == 1;
        let verb =
            |singular: &'static str, plural: &'static str| if one { singular } else { plural };
        match self {
            Rejection::NodeNotFound => "not found".to_string(),
            Rejection::NotReady => "not ready".to_string(),
            Rejection::Paused => "paused".to_string(),
            Rejection::Drained => "drained".to_string(),
            Rejection::Constraint(constraint) => {
                format!(
                    "{} {constraint}",
                    verb("does not satisfy", "do not satisfy")
                )
            }
            Rejection::MissingDriver(driver) => {
                format!("{} the {driver} driver", verb("lacks", "lack"))
            }
            Rejection::MaxReplicasPerNode(max) => format!(
                "already {} the maximum of {max} {} per node",
                verb("runs", "run"),
                if *max == 1 { "task" } else { "tasks" }
            ),
            Rejection::InsufficientMemory { needed } => {
                format!(
                    "{} {} of memory",
                    verb("lacks", "lack"),
                    format_memory(*needed)
                )
            }
            Rejection::InsufficientCpu { needed } => {
                format!("{} {} CPUs", verb("lacks", "lack"), format_cpus(*needed))
            }
            Rejection::HostPortInUse(port) => {
                format!("{} host port {port} in use", verb("has", "have"))
            }
        }
    }
}

/// Counts rejections by kind into a pending reason: the most common first, then in
/// pipeline order. "no suitable node (no nodes in the cluster)" when there are none.
pub fn explain_rejections<'r>(rejections: impl IntoIterator<Item = &'r Rejection>) -> String {
    let mut counted: Vec<(&Rejection, usize)> = Vec::new();
    for rejection in rejections {
        match counted.iter_mut().find(|(seen, _)| *seen == rejection) {
            Some((_, count)) => *count += 1,
            None => counted.push((rejection, 1)),
        }
    }
    if counted.is_empty() {
        return "no suitable node (no nodes in the cluster)".to_string();
    }
    counted.sort_by_key(|(rejection, count)| (std::cmp::Reverse(*count), rejection.rank()));
    let parts: Vec<String> = counted
        .iter()
        .map(|(rejection, count)| {
            let noun = if *count == 1 { "node" } else { "nodes" };
            format!("{count} {noun} {}", rejection.phrase(*count))
        })
        .collect();
    format!("no suitable node ({})", parts.join(", "))
}

/// Whether `node` may take a new task of a service with this spec, ignoring what is
/// already on it: Ready, Active, every constraint matched, the driver offered. The
/// orchestrator uses it to decide which nodes a global service wants a task on.
pub fn check_node_eligible(node: &Node, spec: &ServiceSpec) -> Result<(), Rejection> {
    check_static(node, spec, spec.driver)
}

/// The static filters. Placement rules come from the service's current spec, the driver
/// from the task's own snapshot (during an update the two may differ).
pub(crate) fn check_static(
    node: &Node,
    placement: &ServiceSpec,
    driver: DriverKind,
) -> Result<(), Rejection> {
    if node.status != NodeStatus::Ready {
        return Err(Rejection::NotReady);
    }
    match node.availability {
        Availability::Active => {}
        Availability::Pause => return Err(Rejection::Paused),
        Availability::Drain => return Err(Rejection::Drained),
    }
    if let Some(failed) = placement.constraints.iter().find(|c| !c.matches(node)) {
        return Err(Rejection::Constraint(failed.clone()));
    }
    let offered = if node.engine.drivers.is_empty() {
        DEFAULT_DRIVERS.contains(&driver)
    } else {
        node.engine
            .drivers
            .iter()
            .any(|offered| offered == driver.as_str())
    };
    if !offered {
        return Err(Rejection::MissingDriver(driver));
    }
    Ok(())
}

/// The capacity filters. A node that declares 0 for a resource is treated as unlimited
/// in it: nodes that could not measure themselves (or chose not to say) still take
/// tasks, and only reservations that some node declares are enforced.
pub(crate) fn check_capacity(
    node: &Node,
    load: &NodeLoad,
    n_service_tasks: u64,
    max_per_node: Option<u64>,
    task_spec: &ServiceSpec,
) -> Result<(), Rejection> {
    if let Some(max) = max_per_node {
        if n_service_tasks >= max {
            return Err(Rejection::MaxReplicasPerNode(max));
        }
    }
    let needed = task_spec.resources.reservations;
    let offered = node.resources;
    if needed.memory_bytes > 0
        && offered.memory_bytes > 0
        && needed.memory_bytes
            > offered
                .memory_bytes
                .saturating_sub(load.reserved.memory_bytes)
    {
        return Err(Rejection::InsufficientMemory {
            needed: needed.memory_bytes,
        });
    }
    if needed.nano_cpus > 0
        && offered.nano_cpus > 0
        && needed.nano_cpus > offered.nano_cpus.saturating_sub(load.reserved.nano_cpus)
    {
        return Err(Rejection::InsufficientCpu {
            needed: needed.nano_cpus,
        });
    }
    if let Some(port) = crate::host_ports(task_spec).find(|port| load.host_ports.contains(port)) {
        return Err(Rejection::HostPortInUse(port));
    }
    Ok(())
}
