//! The leader's orchestration pass as a table: a small cluster state and a time in, the
//! edits of one pass and when to look again out. New task ids come from a counter, so
//! every row's plan is exact.

use hoist_state::{ClusterState, TaskEdit};
use hoist_types::service::{Service, ServiceMode, ServiceSpec};
use hoist_types::task::{DesiredState, Task, TaskOrigin, TaskState, TaskStatus};
use hoist_types::{Availability, Node, NodeId, NodeStatus, Role, ServiceId, TaskId};

use super::plan;

const NOW_MS: u64 = 100_000;

/// The first id a row's new tasks get.
const FIRST_NEW_ID: u64 = 100;

/// An initialized cluster with these nodes (id, availability, status).
fn cluster(nodes: &[(u64, Availability, NodeStatus)]) -> ClusterState {
    let mut state = ClusterState {
        cluster_id: "c1".into(),
        ..Default::default()
    };
    for (id, availability, status) in nodes {
        state.nodes.insert(
            NodeId(*id),
            Node {
                id: NodeId(*id),
                hostname: format!("n{id}"),
                addr: format!("10.0.0.{id}:2377"),
                role: Role::Worker,
                availability: *availability,
                status: *status,
                status_message: String::new(),
                labels: Default::default(),
                engine: Default::default(),
                resources: Default::default(),
                port_faults: Vec::new(),
                created_at_ms: 0,
                updated_at_ms: 0,
            },
        );
    }
    state
}

fn ready(id: u64) -> (u64, Availability, NodeStatus) {
    (id, Availability::Active, NodeStatus::Ready)
}

fn spec(replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        mode: ServiceMode::Replicated { replicas },
        command: vec!["sleep".into(), "60".into()],
        ..ServiceSpec::default()
    }
}

/// Service 1 with `replicas` slots.
fn with_service(mut state: ClusterState, replicas: u64) -> ClusterState {
    state.services.insert(
        ServiceId(1),
        Service {
            id: ServiceId(1),
            spec: spec(replicas),
            version: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
        },
    );
    state
}

/// A task of service 1: id, slot, node, observed state and when it was observed.
fn with_task(
    mut state: ClusterState,
    (id, slot): (u64, u64),
    node: Option<u64>,
    (observed, at_ms): (TaskState, u64),
) -> ClusterState {
    let replicas = match state.services.get(&ServiceId(1)) {
        Some(service) => service.spec.replicas().unwrap_or(0),
        None => 0,
    };
    state.tasks.insert(
        TaskId(id),
        Task {
            id: TaskId(id),
            service_id: ServiceId(1),
            slot,
            node_id: node.map(NodeId),
            service_version: 1,
            spec: spec(replicas),
            desired_state: DesiredState::Running,
            status: TaskStatus::new(observed, "observed", at_ms),
            created_at_ms: 0,
            updated_at_ms: at_ms,
            attempt: 0,
            origin: TaskOrigin::Created,
            pending_reason: None,
        },
    );
    state
}

/// One edit, in the words of the table.
fn describe(edit: &TaskEdit) -> String {
    match edit {
        TaskEdit::Create { task } => format!(
            "create task {} for slot {} ({:?}, {:?})",
            task.id.0, task.slot, task.origin, task.desired_state
        ),
        TaskEdit::SetDesired { task_id, desired } => {
            format!("task {} desired {desired:?}", task_id.0)
        }
        TaskEdit::Delete { task_id } => format!("delete task {}", task_id.0),
        TaskEdit::Assign { task_id, node_id } => {
            format!("assign task {} to node {}", task_id.0, node_id.0)
        }
        TaskEdit::SetPendingReason { task_id, reason } => {
            format!("task {} pending: {reason}", task_id.0)
        }
    }
}

struct Row {
    situation: &'static str,
    state: ClusterState,
    edits: &'static [&'static str],
    wake_at_ms: Option<u64>,
}

/// New services and pending tasks.
fn pending_rows() -> Vec<Row> {
    let drained = (1, Availability::Drain, NodeStatus::Ready);
    let pending = (TaskState::Pending, 0);
    vec![
        Row {
            situation: "an empty cluster: nothing to do",
            state: cluster(&[ready(1)]),
            edits: &[],
            wake_at_ms: None,
        },
        Row {
            situation: "a new service gets one task per slot",
            state: with_service(cluster(&[ready(1)]), 2),
            edits: &[
                "create task 100 for slot 1 (Created, Running)",
                "create task 101 for slot 2 (Created, Running)",
            ],
            wake_at_ms: None,
        },
        Row {
            situation: "a pending task is placed",
            state: with_task(with_service(cluster(&[ready(1)]), 1), (1, 1), None, pending),
            edits: &["assign task 1 to node 1"],
            wake_at_ms: None,
        },
        Row {
            situation: "orchestrator edits go alone; placement waits for the next pass",
            state: with_task(with_service(cluster(&[ready(1)]), 2), (1, 1), None, pending),
            edits: &["create task 100 for slot 2 (Created, Running)"],
            wake_at_ms: None,
        },
        Row {
            situation: "nowhere to place it: the reason is written",
            state: with_task(with_service(cluster(&[drained]), 1), (1, 1), None, pending),
            edits: &["task 1 pending: no suitable node (1 node drained)"],
            wake_at_ms: None,
        },
        Row {
            situation: "the same reason is not written again",
            state: {
                let mut state =
                    with_task(with_service(cluster(&[drained]), 1), (1, 1), None, pending);
                if let Some(task) = state.tasks.get_mut(&TaskId(1)) {
                    task.pending_reason = Some("no suitable node (1 node drained)".into());
                }
                state
            },
            edits: &[],
            wake_at_ms: None,
        },
    ]
}

/// Tasks that run, stop or ended.
fn running_rows() -> Vec<Row> {
    let running = (TaskState::Running, 0);
    vec![
        Row {
            situation: "everything runs where it should: nothing to do",
            state: with_task(
                with_service(cluster(&[ready(1)]), 1),
                (1, 1),
                Some(1),
                running,
            ),
            edits: &[],
            wake_at_ms: None,
        },
        Row {
            situation: "scale down stops the highest slot",
            state: with_task(
                with_task(
                    with_service(cluster(&[ready(1)]), 1),
                    (1, 1),
                    Some(1),
                    running,
                ),
                (2, 2),
                Some(1),
                running,
            ),
            edits: &["task 2 desired Shutdown"],
            wake_at_ms: None,
        },
        Row {
            situation: "a task on a down node is replaced on another",
            state: with_task(
                with_service(
                    cluster(&[(1, Availability::Active, NodeStatus::Down), ready(2)]),
                    1,
                ),
                (1, 1),
                Some(1),
                running,
            ),
            edits: &[
                "task 1 desired Shutdown",
                "create task 100 for slot 1 (Replacement, Running)",
            ],
            wake_at_ms: None,
        },
        Row {
            situation: "a failed task waits for its restart delay: look again when it ends",
            state: with_task(
                with_service(cluster(&[ready(1)]), 1),
                (1, 1),
                Some(1),
                (TaskState::Failed, NOW_MS - 1_000),
            ),
            edits: &[],
            wake_at_ms: Some(NOW_MS - 1_000 + 5_000),
        },
        Row {
            situation: "once the restart delay has passed the slot gets a new task",
            state: with_task(
                with_service(cluster(&[ready(1)]), 1),
                (1, 1),
                Some(1),
                (TaskState::Failed, NOW_MS - 10_000),
            ),
            edits: &[
                "task 1 desired Shutdown",
                "create task 100 for slot 1 (Restart, Running)",
            ],
            wake_at_ms: None,
        },
    ]
}

#[test]
fn each_state_gives_exactly_its_plan() {
    let mut wrong = Vec::new();
    for row in pending_rows().into_iter().chain(running_rows()) {
        let mut next_id = FIRST_NEW_ID;
        let (edits, wake_at_ms) = plan(&row.state, NOW_MS, || {
            next_id += 1;
            TaskId(next_id - 1)
        });
        let edits: Vec<String> = edits.iter().map(describe).collect();
        if edits != row.edits || wake_at_ms != row.wake_at_ms {
            wrong.push(format!(
                "{}:\n  got      {edits:?}, wake at {wake_at_ms:?}\n  expected {:?}, wake at {:?}",
                row.situation, row.edits, row.wake_at_ms
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
