//! Tasks: one attempt at running one slot of a service on one node, with the observed
//! state machine (`TaskState`, swarmkit's model) and the desired state managers write.
//!
//! This module owns the legal moves of both states and the shape of a task record. It
//! does not decide anything: which tasks to create or stop is the orchestrator's, where
//! they run is the scheduler's, and the observed state is written only by the worker
//! running the task (and by managers for the steps before a worker has it).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::service::ServiceSpec;
use crate::{NodeId, ServiceId, TaskId};

/// What was last observed of a task, in the only order it may move.
///
/// Managers write `New` → `Pending` (the orchestrator creates tasks Pending) → `Assigned`
/// (the scheduler), and `Orphaned` for a task whose node is gone. The worker owning the
/// task writes everything from `Accepted` on, including `Rejected` when it cannot run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    New,
    /// Waiting for the scheduler; `Task::pending_reason` says why when it cannot place it.
    Pending,
    /// On a node; the dispatcher sends it to that node's worker.
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    /// Exited by itself with code 0.
    Complete,
    /// Stopped because the managers asked (desired state shutdown or remove).
    Shutdown,
    /// Exited with a non-zero code, or could not start.
    Failed,
    /// The worker refused it (no such driver, cannot prepare).
    Rejected,
    /// Its node disappeared for good; nobody will ever report on it again.
    Orphaned,
}

impl TaskState {
    /// Every state, in order.
    pub const ALL: [TaskState; 12] = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Orphaned,
    ];

    /// A terminal task will never run again; a replacement is a new task.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// Not terminal: the task is running or on its way to running.
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }

    /// Not yet on a node (`New` or `Pending`): the scheduler's input.
    pub fn is_unassigned(self) -> bool {
        self <= TaskState::Pending
    }

    /// States only move forward, and a terminal state is final. Reporting the same state
    /// again (a new message, new endpoints) is an update, not a move, and is allowed by
    /// the caller outside this rule.
    pub fn can_move_to(self, next: TaskState) -> bool {
        !self.is_terminal() && next > self
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the managers want of a task. Like the observed state it only moves forward:
/// once asked to shut down, a task is never asked to run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    /// Stop it and keep the record as history.
    Shutdown,
    /// Stop it; the record is deleted once it is terminal (service removed).
    Remove,
}

impl DesiredState {
    pub fn can_move_to(self, next: DesiredState) -> bool {
        next > self
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Shutdown => "shutdown",
            DesiredState::Remove => "remove",
        }
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the orchestrator created a task. It tells restarts (which count toward the
/// restart policy's `max_attempts`) from moves the cluster made on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TaskOrigin {
    /// The slot had no task (new service, scale up, node joined a global service).
    #[default]
    Created,
    /// The previous task of the slot ended and the restart policy asked for another.
    Restart,
    /// The previous task's node went down, was drained or removed, or stopped matching
    /// the constraints.
    Replacement,
    /// Moved while the old task kept running: to an under-loaded node (rebalance), or
    /// off a node that no longer matches the constraints.
    Rebalance,
    /// Replaces a task made from an older spec (rolling update).
    Update,
}

/// Where a running task serves one of its service's target ports, as the worker reports
/// it. The mesh balances over these.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskEndpoint {
    pub target_port: u16,
    /// `host:port` reachable from other nodes.
    pub addr: String,
}

/// The observed side of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    /// Human-readable detail of the state ("started", "exit code 1", "node n2 is down").
    #[serde(default)]
    pub message: String,
    /// The error, when the state is `Failed` or `Rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    /// When the state was reached, from the writer's clock. The restart delay counts from
    /// the timestamp of a terminal state.
    pub timestamp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Reported by the worker while the task runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<TaskEndpoint>,
}

impl TaskStatus {
    pub fn new(state: TaskState, message: impl Into<String>, timestamp_ms: u64) -> TaskStatus {
        TaskStatus {
            state,
            message: message.into(),
            err: None,
            timestamp_ms,
            exit_code: None,
            endpoints: Vec::new(),
        }
    }
}

/// The key that identifies a slot across the successive tasks that fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotKey {
    /// A replicated service's replica number, `1..=replicas`.
    Replica(u64),
    /// A global service's node.
    Node(NodeId),
}

impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotKey::Replica(slot) => write!(f, "{slot}"),
            SlotKey::Node(node_id) => write!(f, "{node_id}"),
        }
    }
}

/// One task as stored in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub service_id: ServiceId,
    /// The replica number (`1..=replicas`) for a replicated service. Always 0 for a
    /// global service, whose slot is its node: see [`Task::slot_key`].
    pub slot: u64,
    /// The node the task runs on. Set by the scheduler, or set at creation (while still
    /// `Pending`) when the task must go to one node: every global task, and a task moved
    /// by rebalance. The scheduler then only checks that node.
    pub node_id: Option<NodeId>,
    /// The service version the spec snapshot was taken from.
    pub service_version: u64,
    /// The service spec when the task was created. Workers run this, not the current
    /// spec, so a service update changes running tasks only through replacement.
    pub spec: ServiceSpec,
    pub desired_state: DesiredState,
    pub status: TaskStatus,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// How many restarts the restart policy made in this slot before this task (0 for
    /// the first task). Replacements and moves carry the count over unchanged.
    pub attempt: u64,
    #[serde(default)]
    pub origin: TaskOrigin,
    /// Why the scheduler could not place it, while it is `Pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
}

impl Task {
    /// The slot this task fills: the replica number, or the node for a global task.
    /// `None` only for a malformed global task without a node.
    pub fn slot_key(&self) -> Option<SlotKey> {
        if self.slot != 0 {
            Some(SlotKey::Replica(self.slot))
        } else {
            self.node_id.map(SlotKey::Node)
        }
    }

    /// `web.3`, or `web.<node id>` for a global task, as `service ps` shows it.
    pub fn name(&self) -> String {
        match self.slot_key() {
            Some(slot) => format!("{}.{slot}", self.spec.name),
            None => format!("{}.{}", self.spec.name, self.id),
        }
    }

    /// Desired running and not terminal: the task holds its slot.
    pub fn is_live(&self) -> bool {
        self.desired_state == DesiredState::Running && self.status.state.is_active()
    }

    /// Observed running, and still wanted.
    pub fn is_running(&self) -> bool {
        self.desired_state == DesiredState::Running && self.status.state == TaskState::Running
    }

    /// Whether the task ended in success: complete with exit code 0 (or none reported).
    /// The restart policy `on-failure` restarts every other ending.
    pub fn succeeded(&self) -> bool {
        self.status.state == TaskState::Complete && self.status.exit_code.unwrap_or(0) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        use TaskState::*;
        assert!(New.can_move_to(Pending));
        assert!(Pending.can_move_to(Assigned));
        assert!(Assigned.can_move_to(Running), "a worker may skip steps");
        assert!(Running.can_move_to(Failed));
        assert!(Running.can_move_to(Complete));
        assert!(Starting.can_move_to(Rejected));
        assert!(!Running.can_move_to(Starting));
        assert!(
            !Running.can_move_to(Running),
            "same state is an update, not a move"
        );
        assert!(!Pending.can_move_to(New));
        for terminal in [Complete, Shutdown, Failed, Rejected, Orphaned] {
            assert!(terminal.is_terminal());
            assert!(!terminal.is_active());
            for next in TaskState::ALL {
                assert!(!terminal.can_move_to(next), "{terminal} -> {next}");
            }
        }
        for active in [
            New, Pending, Assigned, Accepted, Preparing, Starting, Running,
        ] {
            assert!(active.is_active());
            assert!(active.can_move_to(Orphaned));
        }
        assert!(New.is_unassigned() && Pending.is_unassigned() && !Assigned.is_unassigned());
    }

    #[test]
    fn the_order_is_the_declared_one() {
        let mut sorted = TaskState::ALL;
        sorted.sort();
        assert_eq!(sorted, TaskState::ALL);
    }

    #[test]
    fn desired_state_only_moves_forward() {
        use DesiredState::*;
        assert!(Running.can_move_to(Shutdown));
        assert!(Shutdown.can_move_to(Remove));
        assert!(Running.can_move_to(Remove));
        assert!(!Shutdown.can_move_to(Running));
        assert!(!Remove.can_move_to(Shutdown));
    }

    #[test]
    fn states_serialize_lowercase() {
        assert_eq!(
            serde_json::to_string(&TaskState::Running).unwrap(),
            "\"running\""
        );
        assert_eq!(
            serde_json::to_string(&DesiredState::Remove).unwrap(),
            "\"remove\""
        );
        assert_eq!(
            serde_json::from_str::<TaskState>("\"orphaned\"").unwrap(),
            TaskState::Orphaned
        );
    }

    #[test]
    fn slots_and_names() {
        let mut task = Task {
            id: TaskId(7),
            service_id: ServiceId(1),
            slot: 3,
            node_id: None,
            service_version: 1,
            spec: ServiceSpec {
                name: "web".into(),
                ..ServiceSpec::default()
            },
            desired_state: DesiredState::Running,
            status: TaskStatus::new(TaskState::Pending, "", 0),
            created_at_ms: 0,
            updated_at_ms: 0,
            attempt: 0,
            origin: TaskOrigin::Created,
            pending_reason: None,
        };
        assert_eq!(task.slot_key(), Some(SlotKey::Replica(3)));
        assert_eq!(task.name(), "web.3");
        assert!(task.is_live() && !task.is_running());
        task.slot = 0;
        assert_eq!(task.slot_key(), None);
        task.node_id = Some(NodeId(2));
        assert_eq!(task.slot_key(), Some(SlotKey::Node(NodeId(2))));
        assert_eq!(task.name(), "web.0000000000000002");
        let json = serde_json::to_string(&task).unwrap();
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
        task.status = TaskStatus {
            exit_code: Some(1),
            ..TaskStatus::new(TaskState::Complete, "", 5)
        };
        assert!(!task.succeeded() && !task.is_live());
    }
}
