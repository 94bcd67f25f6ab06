//! Orchestrator tests from small fixtures, and a tiny simulated cluster (`Sim`) that
//! applies actions as the leader does (through hoist-state's `apply`, the real state
//! transitions), places tasks with the real scheduler, and plays the workers (their
//! reports go through `apply` too), to follow a service over several passes.

use std::collections::BTreeMap;

use hoist_scheduler::{ClusterView, Decision};
use hoist_state::{Change, ClusterState, TaskEdit, TaskReport};
use hoist_types::service::{
    Constraint, PublishedPort, Rebalance, RestartCondition, RestartPolicy, ServiceSpec,
};
use hoist_types::task::{TaskOrigin, TaskState, TaskStatus};
use hoist_types::{Availability, NodeId, NodeStatus, Role, ServiceId};

use super::*;

const DELAY: u64 = 5_000;

fn node(id: u64) -> Node {
    Node::new(
        NodeId(id),
        format!("n{id}"),
        format!("10.0.0.{id}:2377"),
        Role::Worker,
        0,
    )
}

fn spec(mode: ServiceMode) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        mode,
        command: vec!["hoist".into(), "hello".into()],
        ..ServiceSpec::default()
    }
}

fn replicated(replicas: u64) -> ServiceSpec {
    spec(ServiceMode::Replicated { replicas })
}

struct Sim {
    now_ms: u64,
    next_id: u64,
    /// Services and nodes are set up by the tests directly; tasks change only through
    /// `apply`.
    state: ClusterState,
    history_per_slot: usize,
}

impl Sim {
    fn new(n_nodes: u64) -> Sim {
        Sim {
            now_ms: 1_000,
            next_id: 1,
            state: ClusterState {
                // Changes apply only to an initialized cluster.
                cluster_id: "sim".into(),
                nodes: (1..=n_nodes).map(|id| (NodeId(id), node(id))).collect(),
                ..ClusterState::default()
            },
            history_per_slot: HISTORY_PER_SLOT,
        }
    }

    fn add_service(&mut self, spec: ServiceSpec) -> ServiceId {
        let id = ServiceId(self.state.services.len() as u64 + 1);
        let service = Service {
            id,
            spec,
            version: 1,
            created_at_ms: self.now_ms,
            updated_at_ms: self.now_ms,
        };
        self.state.services.insert(id, service);
        id
    }

    fn update_service(&mut self, id: ServiceId, change: impl FnOnce(&mut ServiceSpec)) {
        let service = self.state.services.get_mut(&id).unwrap();
        change(&mut service.spec);
        service.version += 1;
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.state.nodes.get_mut(&NodeId(id)).unwrap()
    }

    /// One orchestrator pass, applied as documented on `Action`.
    fn reconcile(&mut self) -> Reconciliation {
        let mut input = ReconcileInput::new(
            self.state.services.values(),
            self.state.tasks.values(),
            self.state.nodes.values(),
        );
        input.history_per_slot = self.history_per_slot;
        let next_id = &mut self.next_id;
        let result = reconcile(&input, self.now_ms, || {
            *next_id += 1;
            TaskId(*next_id)
        });
        let edits = result
            .actions
            .iter()
            .map(|action| self.edit(action))
            .collect();
        self.apply_edits(edits);
        for action in &result.actions {
            match action {
                Action::CreateTask { task } => assert!(self.state.tasks.contains_key(&task.id)),
                Action::SetDesired {
                    task_id, desired, ..
                } => assert_eq!(self.state.tasks[task_id].desired_state, *desired),
                Action::DeleteTask { task_id, .. } => {
                    assert!(!self.state.tasks.contains_key(task_id))
                }
            }
        }
        result
    }

    /// The edit the leader proposes for `action`, checked against the state first.
    fn edit(&self, action: &Action) -> TaskEdit {
        match action {
            Action::CreateTask { task } => {
                assert!(!self.state.tasks.contains_key(&task.id));
                TaskEdit::Create { task: task.clone() }
            }
            Action::SetDesired {
                task_id, desired, ..
            } => {
                let task = self.state.tasks.get(task_id).unwrap();
                assert!(task.desired_state.can_move_to(*desired));
                TaskEdit::SetDesired {
                    task_id: *task_id,
                    desired: *desired,
                }
            }
            Action::DeleteTask { task_id, .. } => {
                assert!(self.state.tasks.contains_key(task_id));
                TaskEdit::Delete { task_id: *task_id }
            }
        }
    }

    fn apply_edits(&mut self, edits: Vec<TaskEdit>) {
        if edits.is_empty() {
            return;
        }
        let at_ms = self.now_ms;
        self.state
            .apply(&Change::EditTasks { edits, at_ms })
            .unwrap();
    }

    /// What `node_id` reports, applied as the leader applies it; every report must
    /// take (the simulated workers report only moves the state allows).
    fn report(&mut self, node_id: NodeId, reports: Vec<TaskReport>) {
        if reports.is_empty() {
            return;
        }
        self.state
            .apply(&Change::ReportTaskStatus {
                node_id,
                reports: reports.clone(),
            })
            .unwrap();
        for report in reports {
            assert_eq!(self.state.tasks[&report.task_id].status, report.status);
        }
    }

    /// One scheduler pass over the pending tasks, applied as documented on `Decision`.
    fn schedule(&mut self) {
        let view = ClusterView::new(
            self.state.nodes.values(),
            self.state.services.values(),
            self.state.tasks.values(),
        );
        let edits: Vec<TaskEdit> = hoist_scheduler::schedule(&view, self.state.tasks.values())
            .into_iter()
            .map(|decision| match decision {
                Decision::Assign { task_id, node_id } => TaskEdit::Assign { task_id, node_id },
                Decision::Pending { task_id, reason } => {
                    TaskEdit::SetPendingReason { task_id, reason }
                }
            })
            .collect();
        let assigned: Vec<(TaskId, NodeId)> = edits
            .iter()
            .filter_map(|edit| match edit {
                TaskEdit::Assign { task_id, node_id } => Some((*task_id, *node_id)),
                _ => None,
            })
            .collect();
        self.apply_edits(edits);
        for (task_id, node_id) in assigned {
            let task = &self.state.tasks[&task_id];
            assert_eq!(task.node_id, Some(node_id));
            assert_eq!(task.status.state, TaskState::Assigned);
        }
    }

    /// Workers on reachable nodes start what they were assigned and stop what they were
    /// asked to stop.
    fn workers(&mut self) {
        let mut reports: BTreeMap<NodeId, Vec<TaskReport>> = BTreeMap::new();
        for task in self.state.tasks.values() {
            let Some(node) = task.node_id.and_then(|id| self.state.nodes.get(&id)) else {
                continue;
            };
            if node.status == NodeStatus::Down || task.status.state.is_terminal() {
                continue;
            }
            let status = if task.desired_state != DesiredState::Running {
                TaskStatus::new(TaskState::Shutdown, "stopped", self.now_ms)
            } else if (TaskState::Assigned..TaskState::Running).contains(&task.status.state) {
                TaskStatus::new(TaskState::Running, "started", self.now_ms)
            } else {
                continue;
            };
            reports.entry(node.id).or_default().push(TaskReport {
                task_id: task.id,
                status,
            });
        }
        for (node_id, reports) in reports {
            self.report(node_id, reports);
        }
    }

    /// Orchestrator, scheduler, workers, until nothing changes; returns the passes.
    fn settle(&mut self) -> usize {
        for pass in 0..50 {
            let before = self.state.tasks.clone();
            self.reconcile();
            self.schedule();
            self.workers();
            self.now_ms += 100;
            if self.state.tasks == before {
                return pass;
            }
        }
        panic!("did not settle");
    }

    fn exit(&mut self, task_id: TaskId, state: TaskState, exit_code: i32) {
        let node_id = self.state.tasks[&task_id].node_id.unwrap();
        let status = TaskStatus {
            exit_code: Some(exit_code),
            ..TaskStatus::new(state, "exited", self.now_ms)
        };
        self.report(node_id, vec![TaskReport { task_id, status }]);
    }

    fn running(&self) -> Vec<&Task> {
        self.state
            .tasks
            .values()
            .filter(|task| task.is_running())
            .collect()
    }

    fn live(&self) -> Vec<&Task> {
        self.state
            .tasks
            .values()
            .filter(|task| task.is_live())
            .collect()
    }

    /// Running tasks per node id, for nodes that have some.
    fn running_per_node(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for task in self.running() {
            *counts.entry(task.node_id.unwrap().0).or_default() += 1;
        }
        counts
    }

    fn running_slots(&self) -> Vec<u64> {
        let mut slots: Vec<u64> = self.running().iter().map(|task| task.slot).collect();
        slots.sort();
        slots
    }

    fn service(&self, id: ServiceId) -> &Service {
        &self.state.services[&id]
    }
}

fn creates(result: &Reconciliation) -> Vec<&Task> {
    result
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::CreateTask { task } => Some(&**task),
            _ => None,
        })
        .collect()
}

fn shutdowns(result: &Reconciliation) -> Vec<TaskId> {
    result
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::SetDesired {
                task_id,
                desired: DesiredState::Shutdown,
                ..
            } => Some(*task_id),
            _ => None,
        })
        .collect()
}

fn deletes(result: &Reconciliation) -> Vec<TaskId> {
    result
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::DeleteTask { task_id, .. } => Some(*task_id),
            _ => None,
        })
        .collect()
}

// -------------------------------------------------------------------------------------
// Replicated

#[test]
fn missing_slots_get_pending_tasks() {
    let mut sim = Sim::new(3);
    let web = sim.add_service(replicated(3));
    let result = sim.reconcile();
    let created = creates(&result);
    assert_eq!(
        created.iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for task in &created {
        assert_eq!(task.service_id, web);
        assert_eq!(task.status.state, TaskState::Pending);
        assert_eq!(task.desired_state, DesiredState::Running);
        assert_eq!(task.node_id, None);
        assert_eq!((task.attempt, task.origin), (0, TaskOrigin::Created));
        assert_eq!(task.created_at_ms, sim.now_ms);
    }
    assert_eq!(result.wake_at_ms, None);
    // Nothing more to do while they wait for the scheduler.
    assert_eq!(sim.reconcile().actions, vec![]);
    sim.settle();
    assert_eq!(sim.running_slots(), vec![1, 2, 3]);
    assert_eq!(sim.running_per_node().len(), 3);
}

#[test]
fn equal_inputs_give_equal_outputs() {
    let mut sim = Sim::new(3);
    sim.add_service(replicated(4));
    let input = ReconcileInput::new(
        sim.state.services.values(),
        sim.state.tasks.values(),
        sim.state.nodes.values(),
    );
    let run = || {
        let mut next = 0;
        reconcile(&input, 5, || {
            next += 1;
            TaskId(next)
        })
    };
    assert_eq!(run(), run());
}

#[test]
fn scale_down_shuts_the_highest_slots_then_forgets_them() {
    let mut sim = Sim::new(3);
    let web = sim.add_service(replicated(5));
    sim.settle();
    sim.update_service(web, |spec| {
        spec.mode = ServiceMode::Replicated { replicas: 3 }
    });
    let result = sim.reconcile();
    let stopped: Vec<u64> = shutdowns(&result)
        .iter()
        .map(|id| sim.state.tasks[id].slot)
        .collect();
    assert_eq!(stopped, vec![4, 5]);
    assert!(creates(&result).is_empty());
    sim.workers();
    let result = sim.reconcile();
    assert_eq!(deletes(&result).len(), 2);
    assert_eq!(sim.running_slots(), vec![1, 2, 3]);
    assert_eq!(sim.state.tasks.len(), 3);
}

#[test]
fn a_task_on_a_down_node_is_replaced_at_once() {
    let mut sim = Sim::new(3);
    sim.add_service(replicated(3));
    sim.settle();
    let on_n2 = sim
        .running()
        .into_iter()
        .find(|t| t.node_id == Some(NodeId(2)))
        .unwrap()
        .clone();
    sim.node_mut(2).status = NodeStatus::Down;
    let result = sim.reconcile();
    assert_eq!(shutdowns(&result), vec![on_n2.id]);
    let created = creates(&result);
    assert_eq!(
        created.len(),
        1,
        "the replacement does not wait for the old task"
    );
    assert_eq!(created[0].slot, on_n2.slot);
    assert_eq!(created[0].origin, TaskOrigin::Replacement);
    assert_eq!(created[0].attempt, on_n2.attempt);
    assert!(created[0].status.message.contains("node n2 is down"));
    sim.settle();
    assert_eq!(sim.running_slots(), vec![1, 2, 3]);
    assert!(sim.running().iter().all(|t| t.node_id != Some(NodeId(2))));
    // The old task stays as history: its node may come back and report it.
    assert!(sim.state.tasks.contains_key(&on_n2.id));
}

#[test]
fn drained_nodes_lose_their_tasks_and_paused_or_unknown_nodes_keep_them() {
    let mut sim = Sim::new(4);
    sim.add_service(replicated(4));
    sim.settle();
    assert_eq!(
        sim.running_per_node().values().copied().collect::<Vec<_>>(),
        vec![1, 1, 1, 1]
    );
    sim.node_mut(1).availability = Availability::Drain;
    sim.node_mut(2).availability = Availability::Pause;
    sim.node_mut(3).status = NodeStatus::Unknown;
    let result = sim.reconcile();
    assert_eq!(shutdowns(&result).len(), 1);
    assert_eq!(creates(&result).len(), 1);
    sim.settle();
    let per_node = sim.running_per_node();
    assert_eq!(per_node.get(&1), None);
    assert_eq!(per_node.get(&2), Some(&1));
    assert_eq!(per_node.get(&3), Some(&1));
    assert_eq!(per_node.get(&4), Some(&2));
}

#[test]
fn a_removed_node_s_tasks_are_replaced_and_forgotten() {
    let mut sim = Sim::new(2);
    sim.add_service(replicated(2));
    sim.settle();
    let on_n2 = sim
        .running()
        .into_iter()
        .find(|t| t.node_id == Some(NodeId(2)))
        .unwrap()
        .id;
    sim.state.nodes.remove(&NodeId(2));
    let result = sim.reconcile();
    assert_eq!(shutdowns(&result), vec![on_n2]);
    assert_eq!(creates(&result).len(), 1);
    // Nobody will ever report on it: it is settled, kept as history like an ended task.
    sim.settle();
    assert_eq!(sim.running_slots(), vec![1, 2]);
    assert!(!sim.state.tasks[&on_n2].is_live());
}

#[test]
fn history_keeps_the_last_five_ended_tasks_per_slot() {
    let mut sim = Sim::new(1);
    let web = sim.add_service(ServiceSpec {
        restart_policy: RestartPolicy {
            delay_ms: 0,
            ..RestartPolicy::default()
        },
        ..replicated(1)
    });
    sim.settle();
    for _ in 0..8 {
        let id = sim.running()[0].id;
        sim.exit(id, TaskState::Failed, 1);
        sim.now_ms += MOVE_BACKOFF_MS;
        sim.settle();
    }
    let of_slot: Vec<&Task> = sim
        .state
        .tasks
        .values()
        .filter(|t| t.service_id == web)
        .collect();
    let ended = of_slot
        .iter()
        .filter(|t| t.status.state.is_terminal())
        .count();
    assert_eq!(ended, HISTORY_PER_SLOT);
    assert_eq!(of_slot.len(), HISTORY_PER_SLOT + 1);
    assert_eq!(sim.running()[0].attempt, 8);
}

// -------------------------------------------------------------------------------------
// Restart policy

fn fail_once(sim: &mut Sim, exit_code: i32) -> TaskId {
    let id = sim.running()[0].id;
    let state = if exit_code == 0 {
        TaskState::Complete
    } else {
        TaskState::Failed
    };
    sim.exit(id, state, exit_code);
    id
}

#[test]
fn on_failure_with_two_attempts_tries_three_times_in_all() {
    let mut sim = Sim::new(2);
    sim.add_service(ServiceSpec {
        restart_policy: RestartPolicy {
            condition: RestartCondition::OnFailure,
            delay_ms: DELAY,
            max_attempts: Some(2),
            window_ms: None,
        },
        ..replicated(1)
    });
    sim.settle();
    let mut tries = 1;
    loop {
        let failed = fail_once(&mut sim, 1);
        let failed_at = sim.now_ms;
        // Within the delay: no restart yet.
        let result = sim.reconcile();
        assert!(creates(&result).is_empty());
        sim.now_ms = failed_at + DELAY;
        let result = sim.reconcile();
        if creates(&result).is_empty() {
            break;
        }
        assert_eq!(shutdowns(&result), vec![failed]);
        let created = creates(&result);
        assert_eq!(created[0].origin, TaskOrigin::Restart);
        assert_eq!(created[0].attempt, tries);
        assert_eq!(
            created[0].status.message,
            format!("restart {tries} after failed with exit code 1")
        );
        tries += 1;
        sim.settle();
        assert!(tries < 10);
    }
    assert_eq!(tries, 3);
    sim.now_ms += 3_600_000;
    assert_eq!(
        sim.reconcile(),
        Reconciliation::default(),
        "the slot stays empty, and no wake-up is asked for"
    );
    assert!(sim.running().is_empty());
}

#[test]
fn restart_conditions() {
    let cases = [
        (RestartCondition::Any, 0, true),
        (RestartCondition::Any, 1, true),
        (RestartCondition::OnFailure, 0, false),
        (RestartCondition::OnFailure, 3, true),
        (RestartCondition::None, 1, false),
    ];
    for (condition, exit_code, restarts) in cases {
        let mut sim = Sim::new(1);
        sim.add_service(ServiceSpec {
            restart_policy: RestartPolicy {
                condition,
                delay_ms: 0,
                ..RestartPolicy::default()
            },
            ..replicated(1)
        });
        sim.settle();
        fail_once(&mut sim, exit_code);
        let result = sim.reconcile();
        assert_eq!(
            creates(&result).len() == 1,
            restarts,
            "{condition:?} exit {exit_code}"
        );
    }
}

#[test]
fn max_attempts_count_within_the_window() {
    let window_ms = 60_000;
    let mut sim = Sim::new(1);
    sim.add_service(ServiceSpec {
        restart_policy: RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 0,
            max_attempts: Some(1),
            window_ms: Some(window_ms),
        },
        ..replicated(1)
    });
    sim.settle();
    fail_once(&mut sim, 1);
    let restarted_at = sim.now_ms;
    assert_eq!(creates(&sim.reconcile()).len(), 1);
    sim.settle();
    fail_once(&mut sim, 1);
    sim.now_ms = restarted_at + window_ms - 1;
    let result = sim.reconcile();
    assert!(
        creates(&result).is_empty(),
        "one restart already in the window"
    );
    assert_eq!(result.wake_at_ms, Some(restarted_at + window_ms));
    sim.now_ms = restarted_at + window_ms;
    let result = sim.reconcile();
    assert_eq!(creates(&result).len(), 1);
    assert_eq!(creates(&result)[0].attempt, 2);
}

#[test]
fn a_task_that_fails_to_start_elsewhere_is_restarted_unbound() {
    let mut sim = Sim::new(2);
    sim.add_service(ServiceSpec {
        restart_policy: RestartPolicy {
            delay_ms: 0,
            ..RestartPolicy::default()
        },
        ..replicated(1)
    });
    sim.settle();
    let id = sim.running()[0].id;
    sim.exit(id, TaskState::Rejected, 0);
    let created = creates(&sim.reconcile())
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        created.len(),
        1,
        "rejected is not success, even for exit code 0"
    );
    assert_eq!(created[0].node_id, None);
}

// -------------------------------------------------------------------------------------
// Global

#[test]
fn global_services_run_one_task_per_eligible_node() {
    let mut sim = Sim::new(5);
    sim.node_mut(2).availability = Availability::Pause;
    sim.node_mut(3).status = NodeStatus::Unknown;
    sim.node_mut(4).labels.insert("gpu".into(), "no".into());
    let agent = sim.add_service(ServiceSpec {
        constraints: vec![Constraint::parse("node.labels.gpu!=no").unwrap()],
        ..spec(ServiceMode::Global)
    });
    let result = sim.reconcile();
    let created = creates(&result);
    let bound: Vec<Option<NodeId>> = created.iter().map(|t| t.node_id).collect();
    assert_eq!(bound, vec![Some(NodeId(1)), Some(NodeId(5))]);
    assert!(created
        .iter()
        .all(|t| t.slot == 0 && t.status.state == TaskState::Pending));
    sim.settle();
    assert_eq!(sim.running_per_node(), BTreeMap::from([(1, 1), (5, 1)]));
    let counts = service_replica_counts(sim.service(agent), sim.state.tasks.values());
    assert_eq!(
        counts,
        ReplicaCounts {
            running: 2,
            desired: 2,
            completed: 0,
        }
    );

    // Node 3 reports in: it gets a task. A new node joins: it gets one too.
    sim.node_mut(3).status = NodeStatus::Ready;
    sim.state.nodes.insert(NodeId(6), node(6));
    sim.settle();
    assert_eq!(
        sim.running_per_node(),
        BTreeMap::from([(1, 1), (3, 1), (5, 1), (6, 1)])
    );

    // Drained, down, relabelled, removed: each loses its task, and nothing replaces it.
    sim.node_mut(1).availability = Availability::Drain;
    sim.node_mut(3).status = NodeStatus::Down;
    sim.node_mut(5).labels.insert("gpu".into(), "no".into());
    sim.state.nodes.remove(&NodeId(6));
    let result = sim.reconcile();
    assert_eq!(shutdowns(&result).len(), 4);
    assert!(creates(&result).is_empty());
    sim.settle();
    assert!(sim.live().is_empty());
    // The removed node's task is forgotten; the others stay as history.
    assert!(sim
        .state
        .tasks
        .values()
        .all(|t| t.node_id != Some(NodeId(6))));
    assert_eq!(sim.state.tasks.len(), 3);
}

#[test]
fn a_global_task_on_a_paused_node_is_kept_but_not_restarted() {
    let mut sim = Sim::new(1);
    sim.add_service(ServiceSpec {
        restart_policy: RestartPolicy {
            delay_ms: 0,
            ..RestartPolicy::default()
        },
        ..spec(ServiceMode::Global)
    });
    sim.settle();
    sim.node_mut(1).availability = Availability::Pause;
    assert_eq!(sim.reconcile().actions, vec![]);
    fail_once(&mut sim, 1);
    assert_eq!(sim.reconcile().actions, vec![]);
    sim.node_mut(1).availability = Availability::Active;
    let created = creates(&sim.reconcile())
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].origin, TaskOrigin::Restart);
    assert_eq!(created[0].node_id, Some(NodeId(1)));
}

// -------------------------------------------------------------------------------------
// Moves: rebalance, update, constraints

#[test]
fn a_returning_node_gets_its_share_back_one_move_at_a_time() {
    let mut sim = Sim::new(3);
    let web = sim.add_service(replicated(6));
    sim.settle();
    assert_eq!(
        sim.running_per_node(),
        BTreeMap::from([(1, 2), (2, 2), (3, 2)])
    );
    sim.node_mut(3).status = NodeStatus::Down;
    sim.settle();
    assert_eq!(sim.running_per_node(), BTreeMap::from([(1, 3), (2, 3)]));
    sim.node_mut(3).status = NodeStatus::Ready;
    // The returning worker stops the tasks it was told to stop.
    sim.workers();

    let mut moves = 0;
    for _ in 0..30 {
        let result = sim.reconcile();
        let created = creates(&result);
        assert!(created.len() <= 1, "one move at a time");
        if let Some(task) = created.first() {
            assert_eq!(task.origin, TaskOrigin::Rebalance);
            assert_eq!(task.node_id, Some(NodeId(3)));
            moves += 1;
        }
        let in_flight = sim.live().len() > 6;
        assert!(sim.running().len() >= 6, "never below the desired replicas");
        sim.schedule();
        sim.workers();
        sim.now_ms += 100;
        if result.actions.is_empty() && !in_flight {
            break;
        }
    }
    assert_eq!(moves, 2);
    assert_eq!(
        sim.running_per_node(),
        BTreeMap::from([(1, 2), (2, 2), (3, 2)])
    );
    assert_eq!(sim.running_slots(), vec![1, 2, 3, 4, 5, 6]);
    let counts = service_replica_counts(sim.service(web), sim.state.tasks.values());
    assert_eq!(
        counts,
        ReplicaCounts {
            running: 6,
            desired: 6,
            completed: 0,
        }
    );
}

#[test]
fn the_old_task_stops_only_once_the_moved_one_runs() {
    let mut sim = Sim::new(2);
    sim.add_service(replicated(2));
    sim.node_mut(2).availability = Availability::Pause;
    sim.settle();
    assert_eq!(sim.running_per_node(), BTreeMap::from([(1, 2)]));
    sim.node_mut(2).availability = Availability::Active;
    let result = sim.reconcile();
    let moved = creates(&result)[0].clone();
    assert_eq!(moved.node_id, Some(NodeId(2)));
    assert!(shutdowns(&result).is_empty());
    // Pending, then assigned: still no shutdown, and no second move.
    assert_eq!(sim.reconcile().actions, vec![]);
    sim.schedule();
    assert_eq!(sim.state.tasks[&moved.id].status.state, TaskState::Assigned);
    assert_eq!(sim.reconcile().actions, vec![]);
    sim.workers();
    let result = sim.reconcile();
    let stopped = shutdowns(&result);
    assert_eq!(stopped.len(), 1);
    assert_eq!(sim.state.tasks[&stopped[0]].slot, moved.slot);
}

#[test]
fn rebalance_off_and_placement_preferences_leave_tasks_in_place() {
    for spec in [
        ServiceSpec {
            rebalance: Rebalance::Off,
            ..replicated(2)
        },
        ServiceSpec {
            placement_prefs: vec![hoist_types::service::PlacementPref::Spread {
                label: "zone".into(),
            }],
            ..replicated(2)
        },
    ] {
        let mut sim = Sim::new(2);
        sim.add_service(spec);
        sim.node_mut(2).availability = Availability::Pause;
        sim.settle();
        sim.node_mut(2).availability = Availability::Active;
        assert_eq!(sim.reconcile().actions, vec![]);
    }
}

#[test]
fn a_move_to_a_node_that_no_longer_fits_is_given_up() {
    let mut sim = Sim::new(2);
    sim.add_service(replicated(2));
    sim.node_mut(2).availability = Availability::Pause;
    sim.settle();
    sim.node_mut(2).availability = Availability::Active;
    let moved = creates(&sim.reconcile())[0].id;
    // The target is drained before the scheduler places the move.
    sim.node_mut(2).availability = Availability::Drain;
    let result = sim.reconcile();
    assert_eq!(shutdowns(&result), vec![moved]);
    assert!(creates(&result).is_empty());
    sim.settle();
    assert_eq!(sim.running_per_node(), BTreeMap::from([(1, 2)]));
}

#[test]
fn a_rolling_update_replaces_one_task_at_a_time_starting_the_new_one_first() {
    let mut sim = Sim::new(3);
    let web = sim.add_service(replicated(3));
    sim.settle();
    sim.update_service(web, |spec| {
        spec.env.insert("COLOR".into(), "blue".into());
    });
    let mut max_live = 0;
    for _ in 0..40 {
        let result = sim.reconcile();
        assert!(creates(&result).len() <= 1);
        assert!(sim.running().len() >= 3, "start-first: never below desired");
        max_live = max_live.max(sim.live().len());
        sim.schedule();
        sim.workers();
        sim.now_ms += 100;
        if result.actions.is_empty() && sim.live().len() == 3 {
            break;
        }
    }
    assert_eq!(max_live, 4);
    assert_eq!(sim.running_slots(), vec![1, 2, 3]);
    assert!(sim.running().iter().all(|t| t.service_version == 2
        && t.origin == TaskOrigin::Update
        && t.spec.env.get("COLOR").map(String::as_str) == Some("blue")));
    // Each new task started beside the one it replaced: the spread is unchanged.
    assert_eq!(
        sim.running_per_node(),
        BTreeMap::from([(1, 1), (2, 1), (3, 1)])
    );
}

#[test]
fn scaling_or_relabelling_does_not_restart_tasks() {
    let mut sim = Sim::new(2);
    let web = sim.add_service(replicated(2));
    sim.settle();
    sim.update_service(web, |spec| {
        spec.labels.insert("team".into(), "a".into());
        spec.mode = ServiceMode::Replicated { replicas: 3 };
    });
    let result = sim.reconcile();
    assert_eq!(creates(&result).len(), 1);
    assert_eq!(creates(&result)[0].slot, 3);
    assert!(shutdowns(&result).is_empty());
}

#[test]
fn host_port_services_update_stop_first() {
    let mut sim = Sim::new(2);
    let web = sim.add_service(ServiceSpec {
        ports: vec![PublishedPort::parse("published=8080,target=80,mode=host").unwrap()],
        ..replicated(2)
    });
    sim.settle();
    sim.update_service(web, |spec| spec.command.push("--v2".into()));
    let result = sim.reconcile();
    assert_eq!(shutdowns(&result).len(), 1);
    assert_eq!(creates(&result).len(), 1);
    sim.settle();
    assert_eq!(sim.running_slots(), vec![1, 2]);
    assert!(sim.running().iter().all(|t| t.service_version == 2));
}

#[test]
fn tasks_on_nodes_that_no_longer_match_move_start_first() {
    let mut sim = Sim::new(3);
    let web = sim.add_service(replicated(2));
    sim.settle();
    assert_eq!(sim.running_per_node(), BTreeMap::from([(1, 1), (2, 1)]));
    sim.update_service(web, |spec| {
        spec.constraints = vec![Constraint::parse("node.hostname!=n1").unwrap()];
    });
    let result = sim.reconcile();
    assert!(shutdowns(&result).is_empty());
    assert_eq!(creates(&result).len(), 1);
    sim.settle();
    assert_eq!(sim.running_per_node(), BTreeMap::from([(2, 1), (3, 1)]));
}

#[test]
fn moves_wait_after_a_failure() {
    let mut sim = Sim::new(2);
    sim.add_service(replicated(2));
    sim.node_mut(2).availability = Availability::Pause;
    sim.settle();
    // An unrelated failure in the service just now.
    let failed = sim.running()[0].id;
    sim.exit(failed, TaskState::Failed, 1);
    sim.now_ms += DELAY;
    sim.settle();
    sim.node_mut(2).availability = Availability::Active;
    let failed_at = sim.state.tasks[&failed].status.timestamp_ms;
    sim.now_ms = failed_at + 1;
    let result = sim.reconcile();
    assert!(creates(&result).is_empty());
    assert_eq!(result.wake_at_ms, Some(failed_at + MOVE_BACKOFF_MS));
}

// -------------------------------------------------------------------------------------
// Removed services, counts

#[test]
fn a_removed_service_s_tasks_are_removed_then_deleted() {
    let mut sim = Sim::new(2);
    let web = sim.add_service(replicated(2));
    sim.settle();
    sim.state.services.remove(&web);
    let result = sim.reconcile();
    assert!(result.actions.iter().all(|action| matches!(
        action,
        Action::SetDesired {
            desired: DesiredState::Remove,
            ..
        }
    )));
    assert_eq!(result.actions.len(), 2);
    sim.workers();
    assert_eq!(deletes(&sim.reconcile()).len(), 2);
    assert!(sim.state.tasks.is_empty());
}

#[test]
fn replica_counts_count_slots_not_tasks() {
    let mut sim = Sim::new(2);
    let web = sim.add_service(replicated(3));
    assert_eq!(
        service_replica_counts(sim.service(web), sim.state.tasks.values()),
        ReplicaCounts {
            running: 0,
            desired: 3,
            completed: 0,
        }
    );
    sim.node_mut(2).availability = Availability::Pause;
    sim.settle();
    assert_eq!(
        service_replica_counts(sim.service(web), sim.state.tasks.values()),
        ReplicaCounts {
            running: 3,
            desired: 3,
            completed: 0,
        }
    );
    // During a move two tasks run in one slot: still 3.
    sim.node_mut(2).availability = Availability::Active;
    sim.reconcile();
    sim.schedule();
    sim.workers();
    assert_eq!(sim.running().len(), 4);
    assert_eq!(
        service_replica_counts(sim.service(web), sim.state.tasks.values()),
        ReplicaCounts {
            running: 3,
            desired: 3,
            completed: 0,
        }
    );
}

#[test]
fn a_cluster_settles_after_nodes_come_and_go() {
    let mut sim = Sim::new(4);
    sim.add_service(replicated(8));
    sim.add_service(ServiceSpec {
        name: "agent".into(),
        ..spec(ServiceMode::Global)
    });
    sim.settle();
    for step in 0..6u64 {
        let node_id = step % 4 + 1;
        let node = sim.node_mut(node_id);
        node.status = if node.status == NodeStatus::Down {
            NodeStatus::Ready
        } else {
            NodeStatus::Down
        };
        sim.settle();
        // Invariant: at most one live task per slot once settled.
        let mut per_slot: BTreeMap<(ServiceId, u64, Option<NodeId>), usize> = BTreeMap::new();
        for task in sim.live() {
            let bound = if task.slot == 0 { task.node_id } else { None };
            *per_slot
                .entry((task.service_id, task.slot, bound))
                .or_default() += 1;
        }
        assert!(
            per_slot.values().all(|&n| n == 1),
            "step {step}: {per_slot:?}"
        );
    }
    // Bring every node back: the replicated service spreads 2/2/2/2 again.
    for node in sim.state.nodes.values_mut() {
        node.status = NodeStatus::Ready;
    }
    sim.settle();
    let replicated_per_node: BTreeMap<u64, usize> = sim
        .running()
        .iter()
        .filter(|t| t.slot != 0)
        .fold(BTreeMap::new(), |mut counts, task| {
            *counts.entry(task.node_id.unwrap().0).or_default() += 1;
            counts
        });
    assert_eq!(
        replicated_per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2, 2]
    );
}

/// Runs passes with these bounds until one creates nothing; returns the number
/// of tasks each pass created.
fn creations_per_pass(spec: ServiceSpec, max_new_tasks: usize, max_replicas: u64) -> Vec<usize> {
    let mut sim = Sim::new(0);
    sim.add_service(spec);
    let mut per_pass = Vec::new();
    loop {
        let mut input = ReconcileInput::new(
            sim.state.services.values(),
            sim.state.tasks.values(),
            sim.state.nodes.values(),
        );
        input.max_new_tasks = max_new_tasks;
        input.max_replicas = max_replicas;
        let next_id = &mut sim.next_id;
        let result = reconcile(&input, sim.now_ms, || {
            *next_id += 1;
            TaskId(*next_id)
        });
        let creates: Vec<TaskEdit> = result
            .actions
            .into_iter()
            .filter_map(|action| match action {
                Action::CreateTask { task } => Some(TaskEdit::Create { task }),
                _ => None,
            })
            .collect();
        let created = creates.len();
        sim.apply_edits(creates);
        if created == 0 {
            return per_pass;
        }
        per_pass.push(created);
        assert!(per_pass.len() < 100, "the passes never stop creating");
    }
}

#[test]
fn a_large_scale_up_is_created_in_bounded_passes() {
    assert_eq!(
        creations_per_pass(replicated(1_200), 500, u64::MAX),
        vec![500, 500, 200]
    );
    // A spec stored before the cluster had a maximum: only the maximum is filled, and
    // no pass walks the billion slots.
    let started = std::time::Instant::now();
    assert_eq!(
        creations_per_pass(replicated(1_000_000_000), 300, 700),
        vec![300, 300, 100]
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn the_history_limit_is_the_clusters_setting() {
    let mut sim = Sim::new(1);
    sim.history_per_slot = 2;
    let web = sim.add_service(ServiceSpec {
        restart_policy: RestartPolicy {
            delay_ms: 0,
            ..RestartPolicy::default()
        },
        ..replicated(1)
    });
    sim.settle();
    for _ in 0..5 {
        let id = sim.running()[0].id;
        sim.exit(id, TaskState::Failed, 1);
        sim.now_ms += MOVE_BACKOFF_MS;
        sim.settle();
    }
    let of_slot: Vec<&Task> = sim
        .state
        .tasks
        .values()
        .filter(|t| t.service_id == web)
        .collect();
    let ended = of_slot
        .iter()
        .filter(|t| t.status.state.is_terminal())
        .count();
    assert_eq!(ended, 2);
    assert_eq!(of_slot.len(), 3);
}

#[test]
fn a_replicated_job_runs_its_completions_at_most_max_concurrent_at_a_time() {
    let mut sim = Sim::new(3);
    let id = sim.add_service(spec(ServiceMode::ReplicatedJob {
        max_concurrent: 2,
        total_completions: 6,
    }));
    let mut finished = 0;
    let mut most_at_once = 0;
    for _ in 0..20 {
        sim.settle();
        let live: Vec<TaskId> = sim.live().iter().map(|task| task.id).collect();
        most_at_once = most_at_once.max(live.len());
        assert!(live.len() <= 2, "{} live at once", live.len());
        if live.is_empty() {
            break;
        }
        // The first one that runs completes.
        let done = live[0];
        sim.exit(done, TaskState::Complete, 0);
        finished += 1;
    }
    sim.settle();
    assert_eq!(finished, 6, "six completions, then nothing more");
    assert_eq!(most_at_once, 2);
    assert!(sim.live().is_empty(), "a completed job starts nothing");
    let counts = service_replica_counts(sim.service(id), sim.state.tasks.values());
    assert_eq!(
        counts,
        ReplicaCounts {
            running: 0,
            desired: 6,
            completed: 6,
        }
    );
    let completed: Vec<u64> = sim
        .state
        .tasks
        .values()
        .filter(|task| task.succeeded())
        .map(|task| task.slot)
        .collect();
    assert_eq!(
        completed.len(),
        6,
        "one task per slot, none restarted: {completed:?}"
    );
}

#[test]
fn a_failed_job_task_is_restarted_and_a_global_job_runs_once_per_node() {
    let mut sim = Sim::new(2);
    sim.add_service(spec(ServiceMode::ReplicatedJob {
        max_concurrent: 1,
        total_completions: 1,
    }));
    sim.settle();
    let first = sim.live()[0].id;
    sim.exit(first, TaskState::Failed, 1);
    sim.now_ms += 10_000;
    sim.settle();
    let again: Vec<TaskId> = sim.live().iter().map(|task| task.id).collect();
    assert_eq!(again.len(), 1, "the failed run is tried again");
    assert_ne!(again[0], first);

    let mut sim = Sim::new(3);
    sim.add_service(spec(ServiceMode::GlobalJob));
    sim.settle();
    let live: Vec<TaskId> = sim.live().iter().map(|task| task.id).collect();
    assert_eq!(live.len(), 3, "one per node");
    for task in live {
        sim.exit(task, TaskState::Complete, 0);
    }
    sim.now_ms += 10_000;
    sim.settle();
    assert!(
        sim.live().is_empty(),
        "nothing runs again once every node completed"
    );
}
