//! The orchestrator: pure reconcilers that compare each service with its tasks and decide
//! which tasks to create, stop, replace or forget.
//!
//! [`reconcile`] takes the services, tasks and nodes of the replicated state, the time,
//! and a source of fresh task ids, and returns [`Action`]s plus the time at which it
//! wants to run again (a restart delay ending). It covers:
//! - replicated services: slots `1..=replicas` each want one live task; missing tasks are
//!   created, slots above `replicas` are shut down, tasks on nodes that are Down, drained
//!   or removed are shut down and replaced at once (the replacement does not wait);
//! - global services: one task on every node that is Ready, Active, matches the
//!   constraints and offers the driver; tasks on nodes that are gone, Down, drained or no
//!   longer match are shut down;
//! - the restart policy, when a task ends by itself (condition, delay, max attempts
//!   within a window);
//! - moves, one per service at a time, starting the new task before stopping the old:
//!   rolling updates to a new spec, tasks on nodes that no longer match the constraints,
//!   and rebalance of an uneven spread;
//! - history: the last few ended tasks of each slot are kept, older ones deleted;
//! - bounds: at most `max_new_tasks` fresh slots are filled per pass (a large scale-up
//!   takes several passes, each its own change), and no slot above `max_replicas`.
//!
//! It deliberately knows nothing of Raft, the clock or ids: the caller passes `now_ms`
//! and an id generator, and turns actions into changes. Placement is the scheduler's:
//! new tasks are created `Pending` without a node unless they must go to one node.

mod reconcile;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use hoist_types::service::{Service, ServiceMode};
use hoist_types::task::{DesiredState, SlotKey, Task};
use hoist_types::{Node, TaskId};
use serde::{Deserialize, Serialize};

/// Ended tasks kept per slot by default, so `service ps` shows why a slot restarted
/// (Swarm keeps 5); the cluster's `task_history_limit` setting overrides it.
pub const HISTORY_PER_SLOT: usize = 5;

/// Tasks created in one pass at most. A scale-up to thousands of replicas then commits
/// as several changes of this many tasks (each task carries its spec: about 2 KB of
/// JSON, so a change stays near a megabyte), and the leader never holds every new task
/// of a large scale-up at once, neither as actions nor as one log entry.
pub const MAX_NEW_TASKS_PER_PASS: usize = 500;

/// Upper bound on the history kept to count restarts within a restart window, so a
/// spec asking for millions of attempts does not keep millions of records.
pub const MAX_HISTORY_PER_SLOT: usize = 64;

/// After a task of a service failed, no move (update, rebalance) starts for at least
/// this long (or the restart delay, if longer), so a spec that cannot run does not churn.
pub const MOVE_BACKOFF_MS: u64 = 5_000;

/// What the orchestrator reads: the whole replicated state it cares about.
#[derive(Debug, Clone)]
pub struct ReconcileInput<'a> {
    pub services: Vec<&'a Service>,
    /// Every task, of every service and every state, including history.
    pub tasks: Vec<&'a Task>,
    pub nodes: Vec<&'a Node>,
    /// Ended tasks kept per slot (more when a restart window needs them counted).
    pub history_per_slot: usize,
    /// Fresh slots filled in one pass at most; the rest wait for the next pass.
    pub max_new_tasks: usize,
    /// Slots above this are not filled even if a spec asks for them: a spec stored
    /// before the cluster had a maximum must not make every leader create millions.
    pub max_replicas: u64,
}

impl Default for ReconcileInput<'_> {
    fn default() -> Self {
        ReconcileInput {
            services: Vec::new(),
            tasks: Vec::new(),
            nodes: Vec::new(),
            history_per_slot: HISTORY_PER_SLOT,
            max_new_tasks: MAX_NEW_TASKS_PER_PASS,
            max_replicas: u64::MAX,
        }
    }
}

impl<'a> ReconcileInput<'a> {
    /// Collects the tables, e.g. `ReconcileInput::new(state.services.values(),
    /// state.tasks.values(), state.nodes.values())`.
    pub fn new(
        services: impl IntoIterator<Item = &'a Service>,
        tasks: impl IntoIterator<Item = &'a Task>,
        nodes: impl IntoIterator<Item = &'a Node>,
    ) -> ReconcileInput<'a> {
        ReconcileInput {
            services: services.into_iter().collect(),
            tasks: tasks.into_iter().collect(),
            nodes: nodes.into_iter().collect(),
            ..ReconcileInput::default()
        }
    }
}

/// One edit of the task table.
///
/// How the caller applies them: all actions of one [`Reconciliation`] go into the log as
/// one change, applied in order, because some come in pairs (a restart shuts the ended
/// task down and creates its successor; a stop-first update shuts the old task down and
/// creates the new one) and applying half a pair would lose a restart count. Each action
/// is checked against the state it lands on, and skipped (not failed) when it no longer
/// applies, since the state may have moved between the read and the apply:
/// - `CreateTask`: insert `task` as given (its id is fresh; skip if the id exists or the
///   service is gone).
/// - `SetDesired`: set the task's `desired_state` to `desired` and `updated_at_ms` to the
///   change's time, only if `desired` is later than the current one (desired state only
///   moves forward); skip if the task is gone.
/// - `DeleteTask`: remove the task record; skip if it is gone.
///
/// `reason` is for the log line of the leader loop ("task web.2 shut down: node n3 is
/// down"); it is not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// A new task, `Pending`, desired running, with a fresh id from the caller's
    /// generator. `task.node_id` is set when it must run on that node (global tasks,
    /// rebalance moves); the scheduler then only checks that node. `task.status.message`
    /// says why it exists. Boxed: a task is large and the other actions are small.
    CreateTask {
        task: Box<Task>,
    },
    SetDesired {
        task_id: TaskId,
        desired: DesiredState,
        reason: String,
    },
    DeleteTask {
        task_id: TaskId,
        reason: String,
    },
}

impl Action {
    /// The task the action is about.
    pub fn task_id(&self) -> TaskId {
        match self {
            Action::CreateTask { task } => task.id,
            Action::SetDesired { task_id, .. } | Action::DeleteTask { task_id, .. } => *task_id,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Action::CreateTask { task } => &task.status.message,
            Action::SetDesired { reason, .. } | Action::DeleteTask { reason, .. } => reason,
        }
    }
}

/// The output of one pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconciliation {
    pub actions: Vec<Action>,
    /// Run again at this time even if nothing changes: a restart delay or a restart
    /// window ends then. `None` when only a state change can make the result differ.
    pub wake_at_ms: Option<u64>,
}

/// Compares every service with its tasks and returns what to change.
///
/// Deterministic: equal inputs, `now_ms` and id sequence give equal outputs. The
/// leader runs it after every applied change that touches services, tasks or nodes
/// (batched, e.g. at most every 100 ms), and at `wake_at_ms`. `new_task_id` is called
/// once per created task, in the order of the returned actions; production passes
/// `TaskId::random`, tests a counter.
pub fn reconcile(
    input: &ReconcileInput,
    now_ms: u64,
    new_task_id: impl FnMut() -> TaskId,
) -> Reconciliation {
    reconcile::Pass::new(input, now_ms, new_task_id).run()
}

/// Replica counts as `service ls` shows them ("2/3").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCounts {
    /// Slots with a task observed running (and still wanted).
    pub running: u64,
    /// Replicated: the replicas asked for. Global: the nodes that have a live task.
    /// Replicated job: the completions asked for. Global job: the nodes with a live or
    /// completed task.
    pub desired: u64,
    /// Jobs: slots whose task completed (exit 0). Services: slots whose last task
    /// completed, which the restart policy has yet to restart.
    pub completed: u64,
}

/// Counts `service`'s running and desired replicas among `tasks` (which may include
/// other services' tasks). A slot counts once even while a move runs two tasks in it.
pub fn service_replica_counts<'t>(
    service: &Service,
    tasks: impl IntoIterator<Item = &'t Task>,
) -> ReplicaCounts {
    let mut running: BTreeSet<SlotKey> = BTreeSet::new();
    let mut live: BTreeSet<SlotKey> = BTreeSet::new();
    let mut completed: BTreeSet<SlotKey> = BTreeSet::new();
    for task in tasks {
        if task.service_id != service.id {
            continue;
        }
        let Some(slot) = task.slot_key() else {
            continue;
        };
        if let (Some(replicas), SlotKey::Replica(number)) = (service.spec.replicas(), slot) {
            if number > replicas {
                continue;
            }
        }
        if task.is_running() {
            running.insert(slot);
        }
        if task.is_live() {
            live.insert(slot);
        }
        if task.succeeded() {
            completed.insert(slot);
        }
    }
    ReplicaCounts {
        running: running.len() as u64,
        desired: match service.spec.mode {
            ServiceMode::Replicated { replicas } => replicas,
            ServiceMode::ReplicatedJob {
                total_completions, ..
            } => total_completions,
            ServiceMode::Global => live.len() as u64,
            ServiceMode::GlobalJob => (live.len() + completed.len()) as u64,
        },
        completed: completed.len() as u64,
    }
}
