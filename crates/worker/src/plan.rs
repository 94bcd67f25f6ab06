//! The task runner's decisions, as a pure function: the assignment set the leader pushed
//! and what this node knows of its own tasks go in, the commands that bring the two in
//! line come out (start, stop, report, forget).
//!
//! It owns the rules: a task is started only for an assignment that wants it running and
//! is not known here yet; it is stopped when its assignment says so or when it is no
//! longer assigned here; a task that ended is forgotten (its files and container
//! removed) once it left the assignment set and either its service is gone or it ended
//! long enough ago. It knows nothing of drivers beyond their names, of clocks beyond the
//! instants it is given, or of channels: `agent.rs` reads the local state, calls
//! [`plan`] and performs the commands.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hoist_types::task::{DesiredState, Task, TaskState, TaskStatus};
use hoist_types::TaskId;

/// Files of tasks that ended are kept this long after they leave the assignment set,
/// so `service logs` can still show why a task failed.
pub(crate) const KEEP_ENDED_TASK_FILES: Duration = Duration::from_secs(600);

/// The grace a task no longer assigned here is stopped with: its spec is not known any
/// more (it may have been adopted after a restart), so Docker's default is used.
pub(crate) const UNASSIGNED_STOP_GRACE_MS: u64 = 10_000;

/// What the runner knows of one local task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Starting,
    Running,
    Stopping,
    Ended { at: Instant },
}

/// One local task, as far as the plan needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalTask {
    pub phase: Phase,
    /// Its service is gone (desired state `remove`): its files go as soon as it has
    /// stopped and left the assignment set, not after the usual delay.
    pub discard: bool,
}

/// Everything the plan reads besides the assignments.
#[derive(Debug, Clone)]
pub(crate) struct LocalState {
    /// This node's name, for the text of a rejection.
    pub node_name: String,
    /// The drivers this node offers, by name.
    pub drivers: Vec<String>,
    /// The tasks this node knows of: started here, or adopted after a restart.
    pub tasks: HashMap<TaskId, LocalTask>,
    /// Now, for the age of ended tasks.
    pub now: Instant,
    /// Now in wall-clock milliseconds, for the timestamps of reports.
    pub now_ms: u64,
}

/// Why a task is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// Its assignment no longer wants it running.
    Desired,
    /// It is no longer assigned to this node (replaced or removed meanwhile).
    Unassigned,
}

/// What the runner does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Mark a local task as belonging to a removed service.
    Discard { task_id: TaskId },
    /// Record the task as starting, report it so, and start it through its driver.
    Start { task: Box<Task> },
    /// Say again that a task runs (it was adopted, or the leader missed the report),
    /// with the endpoints its driver says it serves.
    ReportRunning { task_id: TaskId },
    /// Report an observed state without touching any workload.
    Report { task_id: TaskId, status: TaskStatus },
    /// Stop a running or starting task within `grace_ms`.
    Stop {
        task_id: TaskId,
        grace_ms: u64,
        why: StopReason,
    },
    /// Drop an ended task's record, and its files and container.
    Forget { task_id: TaskId },
}

/// The commands that bring the local tasks in line with `assigned`, in the order they
/// are to be performed.
pub(crate) fn plan(assigned: &[Task], local: &LocalState) -> Vec<Command> {
    let mut commands = Vec::new();
    // The plan's own view, updated as it decides, so a task listed twice is started once.
    let mut known: HashMap<TaskId, LocalTask> = local.tasks.clone();
    for task in assigned {
        if task.desired_state == DesiredState::Remove {
            if let Some(local_task) = known.get_mut(&task.id) {
                local_task.discard = true;
                commands.push(Command::Discard { task_id: task.id });
            }
        }
        let phase = known.get(&task.id).map(|local_task| local_task.phase);
        match (task.desired_state, phase) {
            (DesiredState::Running, None) => match rejection(task, local) {
                Some(status) => commands.push(Command::Report {
                    task_id: task.id,
                    status,
                }),
                None => {
                    known.insert(
                        task.id,
                        LocalTask {
                            phase: Phase::Starting,
                            discard: false,
                        },
                    );
                    commands.push(Command::Start {
                        task: Box::new(task.clone()),
                    });
                }
            },
            (DesiredState::Running, Some(Phase::Running)) => {
                if task.status.state != TaskState::Running {
                    commands.push(Command::ReportRunning { task_id: task.id });
                }
            }
            (DesiredState::Running, Some(_)) => {}
            (_, Some(Phase::Starting | Phase::Running)) => commands.push(Command::Stop {
                task_id: task.id,
                grace_ms: task.spec.stop_grace_period_ms,
                why: StopReason::Desired,
            }),
            (_, None) => commands.push(Command::Report {
                task_id: task.id,
                status: TaskStatus::new(
                    TaskState::Shutdown,
                    "shut down before it started",
                    local.now_ms,
                ),
            }),
            (_, Some(Phase::Stopping | Phase::Ended { .. })) => {}
        }
    }
    commands.extend(unassigned(assigned, &known, local.now));
    commands
}

/// Tasks no longer assigned here were replaced or removed meanwhile: the running ones
/// stop, the ended ones are forgotten when their time has come. In task id order, so
/// the plan is the same for the same inputs.
fn unassigned(assigned: &[Task], known: &HashMap<TaskId, LocalTask>, now: Instant) -> Vec<Command> {
    let assigned: HashSet<TaskId> = assigned.iter().map(|task| task.id).collect();
    let mut stale: Vec<(&TaskId, &LocalTask)> = known
        .iter()
        .filter(|(task_id, _)| !assigned.contains(task_id))
        .collect();
    stale.sort_by_key(|(task_id, _)| **task_id);
    stale
        .into_iter()
        .filter_map(|(task_id, local_task)| match local_task.phase {
            Phase::Starting | Phase::Running => Some(Command::Stop {
                task_id: *task_id,
                grace_ms: UNASSIGNED_STOP_GRACE_MS,
                why: StopReason::Unassigned,
            }),
            Phase::Ended { at }
                if local_task.discard
                    || now.saturating_duration_since(at) > KEEP_ENDED_TASK_FILES =>
            {
                Some(Command::Forget { task_id: *task_id })
            }
            _ => None,
        })
        .collect()
}

/// Why a task cannot start on this node, as the status to report; `None` if it can.
fn rejection(task: &Task, local: &LocalState) -> Option<TaskStatus> {
    let driver = task.spec.driver.as_str();
    if !local.drivers.iter().any(|offered| offered == driver) {
        let mut status = TaskStatus::new(TaskState::Rejected, "no such driver here", local.now_ms);
        status.err = Some(format!(
            "driver {driver:?} is not available on node {} (it offers: {})",
            local.node_name,
            local.drivers.join(", ")
        ));
        return Some(status);
    }
    // A spec stored by an older version may hold a mount no driver runs: the task would
    // start without it, so it is refused instead.
    let mount = task
        .spec
        .mounts
        .iter()
        .find(|mount| !mount.kind.is_supported())?;
    let mut status = TaskStatus::new(TaskState::Rejected, "unsupported mount", local.now_ms);
    status.err = Some(format!(
        "{} mounts are not supported yet (only type=bind is): {mount}",
        mount.kind.as_str()
    ));
    Some(status)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
