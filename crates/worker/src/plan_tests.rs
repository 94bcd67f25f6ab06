//! The worker's plan from fixtures: one row per situation, each with the exact commands.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hoist_types::service::{Mount, MountKind, ServiceSpec};
use hoist_types::task::{DesiredState, Task, TaskOrigin, TaskState, TaskStatus};
use hoist_types::{ServiceId, TaskId};

use super::{plan, Command, LocalState, LocalTask, Phase, StopReason};

const NOW_MS: u64 = 1_000_000;

/// A task of service 1 assigned to this node, observed in `observed` by the leader.
fn task(id: u64, desired: DesiredState, observed: TaskState) -> Task {
    let spec = ServiceSpec {
        name: "web".into(),
        command: vec!["sleep".into(), "60".into()],
        stop_grace_period_ms: 3_000,
        ..ServiceSpec::default()
    };
    Task {
        id: TaskId(id),
        service_id: ServiceId(1),
        slot: id,
        node_id: None,
        service_version: 1,
        spec,
        desired_state: desired,
        status: TaskStatus::new(observed, "as the leader saw it", 0),
        created_at_ms: 0,
        updated_at_ms: 0,
        attempt: 0,
        origin: TaskOrigin::Created,
        pending_reason: None,
    }
}

fn running(id: u64) -> Task {
    task(id, DesiredState::Running, TaskState::Assigned)
}

fn start(task: Task) -> Command {
    Command::Start {
        task: Box::new(task),
    }
}

/// Stopped because its assignment says so, with its own grace.
fn stop(id: u64) -> Command {
    Command::Stop {
        task_id: TaskId(id),
        grace_ms: 3_000,
        why: StopReason::Desired,
    }
}

/// Stopped because it is no longer assigned here, with the default grace.
fn stop_unassigned(id: u64) -> Command {
    Command::Stop {
        task_id: TaskId(id),
        grace_ms: 10_000,
        why: StopReason::Unassigned,
    }
}

fn rejected(id: u64, message: &str, err: &str) -> Command {
    let mut status = TaskStatus::new(TaskState::Rejected, message, NOW_MS);
    status.err = Some(err.into());
    Command::Report {
        task_id: TaskId(id),
        status,
    }
}

struct Row {
    situation: &'static str,
    assigned: Vec<Task>,
    /// Local tasks: id, phase, discard.
    local: Vec<(u64, Phase, bool)>,
    expected: Vec<Command>,
}

/// New assignments and tasks wanted running.
fn running_rows(now: Instant) -> Vec<Row> {
    let ended_just_now = Phase::Ended {
        at: now - Duration::from_secs(60),
    };
    let mut on_docker = running(1);
    on_docker.spec.driver = hoist_types::DriverKind::Docker;
    let mut with_volume = running(1);
    with_volume.spec.mounts = vec![Mount {
        kind: MountKind::Volume,
        source: "data".into(),
        target: "/data".into(),
        readonly: false,
    }];
    vec![
        Row {
            situation: "nothing assigned, nothing known",
            assigned: vec![],
            local: vec![],
            expected: vec![],
        },
        Row {
            situation: "a new assignment starts",
            assigned: vec![running(1)],
            local: vec![],
            expected: vec![start(running(1))],
        },
        Row {
            situation: "an assignment listed twice starts once",
            assigned: vec![running(1), running(1)],
            local: vec![],
            expected: vec![start(running(1))],
        },
        Row {
            situation: "a driver this node does not offer is rejected",
            assigned: vec![on_docker],
            local: vec![],
            expected: vec![rejected(
                1,
                "no such driver here",
                "driver \"docker\" is not available on node n1 (it offers: process)",
            )],
        },
        Row {
            situation: "an unsupported mount is rejected",
            assigned: vec![with_volume],
            local: vec![],
            expected: vec![rejected(
                1,
                "unsupported mount",
                "volume mounts are not supported yet (only type=bind is): type=volume,source=data,target=/data",
            )],
        },
        Row {
            situation: "already starting: nothing to do",
            assigned: vec![running(1)],
            local: vec![(1, Phase::Starting, false)],
            expected: vec![],
        },
        Row {
            situation: "already running and reported running: nothing to do",
            assigned: vec![task(1, DesiredState::Running, TaskState::Running)],
            local: vec![(1, Phase::Running, false)],
            expected: vec![],
        },
        Row {
            situation: "running here but not reported so (adopted, or a report missed)",
            assigned: vec![task(1, DesiredState::Running, TaskState::Starting)],
            local: vec![(1, Phase::Running, false)],
            expected: vec![Command::ReportRunning {
                task_id: TaskId(1),
            }],
        },
        Row {
            situation: "exited while still wanted: the leader restarts it, not the worker",
            assigned: vec![task(1, DesiredState::Running, TaskState::Failed)],
            local: vec![(1, ended_just_now, false)],
            expected: vec![],
        },
    ]
}

/// Tasks the leader wants stopped.
fn stopping_rows(now: Instant) -> Vec<Row> {
    let ended_just_now = Phase::Ended {
        at: now - Duration::from_secs(60),
    };
    vec![
        Row {
            situation: "desired shutdown of a running task stops it with its grace",
            assigned: vec![task(1, DesiredState::Shutdown, TaskState::Running)],
            local: vec![(1, Phase::Running, false)],
            expected: vec![stop(1)],
        },
        Row {
            situation: "desired shutdown of a task still starting stops it",
            assigned: vec![task(1, DesiredState::Shutdown, TaskState::Starting)],
            local: vec![(1, Phase::Starting, false)],
            expected: vec![stop(1)],
        },
        Row {
            situation: "desired shutdown of a task never started here is reported shut down",
            assigned: vec![task(1, DesiredState::Shutdown, TaskState::Assigned)],
            local: vec![],
            expected: vec![Command::Report {
                task_id: TaskId(1),
                status: TaskStatus::new(TaskState::Shutdown, "shut down before it started", NOW_MS),
            }],
        },
        Row {
            situation: "desired shutdown of a task already stopping or ended: nothing",
            assigned: vec![
                task(1, DesiredState::Shutdown, TaskState::Running),
                task(2, DesiredState::Shutdown, TaskState::Shutdown),
            ],
            local: vec![(1, Phase::Stopping, false), (2, ended_just_now, false)],
            expected: vec![],
        },
        Row {
            situation: "service removed: the task is marked for discard, then stopped",
            assigned: vec![task(1, DesiredState::Remove, TaskState::Running)],
            local: vec![(1, Phase::Running, false)],
            expected: vec![Command::Discard { task_id: TaskId(1) }, stop(1)],
        },
    ]
}

/// Tasks this node knows of that are no longer assigned here.
fn unassigned_rows(now: Instant) -> Vec<Row> {
    let ended_just_now = Phase::Ended {
        at: now - Duration::from_secs(60),
    };
    let ended_long_ago = Phase::Ended {
        at: now - Duration::from_secs(3_600),
    };
    vec![
        Row {
            situation: "a task no longer assigned here stops with the default grace",
            assigned: vec![],
            local: vec![(1, Phase::Running, false), (2, Phase::Starting, false)],
            expected: vec![stop_unassigned(1), stop_unassigned(2)],
        },
        Row {
            situation:
                "an adopted task the leader does not assign here stops, the assigned one stays",
            assigned: vec![task(2, DesiredState::Running, TaskState::Running)],
            local: vec![(1, Phase::Running, false), (2, Phase::Running, false)],
            expected: vec![stop_unassigned(1)],
        },
        Row {
            situation: "an unassigned task already stopping is left to finish",
            assigned: vec![],
            local: vec![(1, Phase::Stopping, false)],
            expected: vec![],
        },
        Row {
            situation: "an unassigned task that ended recently keeps its files",
            assigned: vec![],
            local: vec![(1, ended_just_now, false)],
            expected: vec![],
        },
        Row {
            situation: "an unassigned task that ended long ago is forgotten",
            assigned: vec![],
            local: vec![(1, ended_long_ago, false)],
            expected: vec![Command::Forget { task_id: TaskId(1) }],
        },
        Row {
            situation: "an unassigned task of a removed service is forgotten at once",
            assigned: vec![],
            local: vec![(1, ended_just_now, true)],
            expected: vec![Command::Forget { task_id: TaskId(1) }],
        },
        Row {
            situation: "a mixed set: start, stop, keep, forget",
            assigned: vec![
                running(1),
                task(2, DesiredState::Shutdown, TaskState::Running),
                task(3, DesiredState::Running, TaskState::Running),
            ],
            local: vec![
                (2, Phase::Running, false),
                (3, Phase::Running, false),
                (4, Phase::Running, false),
                (5, ended_long_ago, false),
            ],
            expected: vec![
                start(running(1)),
                stop(2),
                stop_unassigned(4),
                Command::Forget { task_id: TaskId(5) },
            ],
        },
    ]
}

#[test]
fn each_situation_gives_exactly_its_commands() {
    // Far enough from the start of the monotonic clock for the "long ago" rows.
    let now = Instant::now() + Duration::from_secs(7_200);
    let rows = running_rows(now)
        .into_iter()
        .chain(stopping_rows(now))
        .chain(unassigned_rows(now));
    for row in rows {
        let local = LocalState {
            node_name: "n1".into(),
            drivers: vec!["process".into()],
            tasks: row
                .local
                .iter()
                .map(|(id, phase, discard)| {
                    (
                        TaskId(*id),
                        LocalTask {
                            phase: *phase,
                            discard: *discard,
                        },
                    )
                })
                .collect::<HashMap<_, _>>(),
            now,
            now_ms: NOW_MS,
        };
        assert_eq!(
            plan(&row.assigned, &local),
            row.expected,
            "{}",
            row.situation
        );
    }
}
