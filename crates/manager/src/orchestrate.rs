//! The leader's control loop: reads the applied state, asks the pure orchestrator and
//! scheduler what to change, and proposes their decisions as one Change per pass. A pass
//! is bounded (the orchestrator fills at most `MAX_NEW_TASKS_PER_PASS` fresh slots, the
//! scheduler's decisions are cut at `MAX_SCHEDULER_EDITS_PER_CHANGE`), so a large
//! scale-up is several changes and the leader never holds all of it at once.
//!
//! The loop only runs while this manager leads. It wakes when the state changes, when
//! the orchestrator asked to be woken (a restart delay ends), and on a slow tick.

use std::time::Duration;

use hoist_orchestrator::{reconcile, Action, ReconcileInput};
use hoist_scheduler::{ClusterView, Decision};
use hoist_state::{Change, TaskEdit};
use hoist_types::TaskId;
use tokio::sync::watch;

use crate::{now_ms, Manager};

/// A pass runs at most this often, so a burst of status reports is handled in one.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(50);

/// Even without a change, look again this often (catches anything missed).
const IDLE_TICK: Duration = Duration::from_secs(2);

/// Scheduler decisions written in one change at most; the rest are decided again on the
/// next pass, which follows as soon as this one is applied. Placements and pending
/// reasons are small, but a scale-up of thousands on drained nodes gives each a reason.
const MAX_SCHEDULER_EDITS_PER_CHANGE: usize = 1_000;

fn action_edit(action: Action) -> TaskEdit {
    match action {
        Action::CreateTask { task } => TaskEdit::Create { task },
        Action::SetDesired {
            task_id, desired, ..
        } => TaskEdit::SetDesired { task_id, desired },
        Action::DeleteTask { task_id, .. } => TaskEdit::Delete { task_id },
    }
}

fn decision_edit(decision: Decision) -> TaskEdit {
    match decision {
        Decision::Assign { task_id, node_id } => TaskEdit::Assign { task_id, node_id },
        Decision::Pending { task_id, reason } => TaskEdit::SetPendingReason { task_id, reason },
    }
}

/// One pass over the state: the edits to propose, and when to look again at the latest.
/// New tasks take their ids from `new_task_id` (random ones in the loop).
pub(crate) fn plan(
    state: &hoist_state::ClusterState,
    now_ms: u64,
    new_task_id: impl FnMut() -> TaskId,
) -> (Vec<TaskEdit>, Option<u64>) {
    let mut input = ReconcileInput::new(
        state.services.values(),
        state.tasks.values(),
        state.nodes.values(),
    );
    input.history_per_slot = state.settings.task_history_limit as usize;
    input.max_replicas = state.settings.max_replicas;
    let reconciliation = reconcile(&input, now_ms, new_task_id);
    if !reconciliation.actions.is_empty() {
        for action in &reconciliation.actions {
            tracing::debug!(task = %action.task_id(), reason = action.reason(), "orchestrator");
        }
        let edits = reconciliation
            .actions
            .into_iter()
            .map(action_edit)
            .collect();
        return (edits, reconciliation.wake_at_ms);
    }
    let view = ClusterView::new(
        state.nodes.values(),
        state.services.values(),
        state.tasks.values(),
    );
    let pending = state
        .tasks
        .values()
        .filter(|task| task.status.state.is_unassigned());
    let edits = hoist_scheduler::schedule(&view, pending)
        .into_iter()
        .filter(|decision| match decision {
            // The scheduler repeats an unplaceable task's reason every pass; write it
            // only when it changed.
            Decision::Pending { task_id, reason } => {
                state
                    .tasks
                    .get(task_id)
                    .and_then(|task| task.pending_reason.as_deref())
                    != Some(reason.as_str())
            }
            Decision::Assign { .. } => true,
        })
        .take(MAX_SCHEDULER_EDITS_PER_CHANGE)
        .map(decision_edit)
        .collect();
    (edits, reconciliation.wake_at_ms)
}

impl Manager {
    /// Runs the orchestrator and scheduler while this node leads, until `shutdown`.
    pub async fn run_orchestrator(&self, shutdown: watch::Receiver<bool>) {
        self.tracked(self.orchestrate(shutdown)).await
    }

    async fn orchestrate(&self, mut shutdown: watch::Receiver<bool>) {
        let mut versions = self.raft().state().subscribe();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut wait = IDLE_TICK;
            if self.is_leader() {
                let now = now_ms();
                let (edits, wake_at) = self.local(|state| plan(state, now, TaskId::random));
                if let Some(wake_at) = wake_at {
                    wait = wait.min(Duration::from_millis(wake_at.saturating_sub(now).max(10)));
                }
                if !edits.is_empty() {
                    let n_edits = edits.len();
                    match self.propose(Change::EditTasks { edits, at_ms: now }).await {
                        Ok(_) => {
                            tracing::debug!(n_edits, "orchestration pass applied");
                            wait = MIN_PASS_INTERVAL;
                        }
                        Err(err) => tracing::warn!(error = %err, "orchestration pass"),
                    }
                }
            }
            versions.borrow_and_update();
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = versions.changed() => {
                    tokio::time::sleep(MIN_PASS_INTERVAL).await;
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "orchestrate_tests.rs"]
mod table_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_types::service::{Service, ServiceMode, ServiceSpec};
    use hoist_types::task::{DesiredState, Task, TaskOrigin, TaskState, TaskStatus};
    use hoist_types::{Availability, Node, NodeId, NodeStatus, Role, ServiceId};

    /// A drained node and a service whose every slot has a pending task: each pass
    /// writes pending reasons, at most `MAX_SCHEDULER_EDITS_PER_CHANGE` at a time.
    #[test]
    fn scheduler_decisions_are_written_in_bounded_changes() {
        const N_TASKS: u64 = 2_500;
        let mut state = hoist_state::ClusterState {
            // Changes apply only to an initialized cluster.
            cluster_id: "c1".into(),
            ..Default::default()
        };
        state.nodes.insert(
            NodeId(1),
            Node {
                id: NodeId(1),
                hostname: "n1".into(),
                addr: "10.0.0.1:2377".into(),
                role: Role::Manager,
                availability: Availability::Drain,
                status: NodeStatus::Ready,
                status_message: String::new(),
                labels: Default::default(),
                engine: Default::default(),
                resources: Default::default(),
                port_faults: Vec::new(),
                created_at_ms: 0,
                updated_at_ms: 0,
            },
        );
        let spec = ServiceSpec {
            name: "web".into(),
            mode: ServiceMode::Replicated { replicas: N_TASKS },
            command: vec!["sleep".into(), "1".into()],
            ..ServiceSpec::default()
        };
        state.services.insert(
            ServiceId(1),
            Service {
                id: ServiceId(1),
                spec: spec.clone(),
                version: 1,
                created_at_ms: 0,
                updated_at_ms: 0,
            },
        );
        for slot in 1..=N_TASKS {
            state.tasks.insert(
                TaskId(slot),
                Task {
                    id: TaskId(slot),
                    service_id: ServiceId(1),
                    slot,
                    node_id: None,
                    service_version: 1,
                    spec: spec.clone(),
                    desired_state: DesiredState::Running,
                    status: TaskStatus::new(TaskState::Pending, "created", 0),
                    created_at_ms: 0,
                    updated_at_ms: 0,
                    attempt: 0,
                    origin: TaskOrigin::Created,
                    pending_reason: None,
                },
            );
        }
        let mut n_changes = 0;
        loop {
            let (edits, _) = plan(&state, 1_000, TaskId::random);
            if edits.is_empty() {
                break;
            }
            assert!(
                edits.len() <= MAX_SCHEDULER_EDITS_PER_CHANGE,
                "{}",
                edits.len()
            );
            state
                .apply(&Change::EditTasks {
                    edits,
                    at_ms: 1_000,
                })
                .expect("applies");
            n_changes += 1;
            assert!(n_changes < 10, "the passes never end");
        }
        assert_eq!(n_changes, 3);
        assert!(state
            .tasks
            .values()
            .all(|task| task.pending_reason.is_some()));
    }
}
