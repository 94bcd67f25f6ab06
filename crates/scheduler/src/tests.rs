//! Scheduler tests from small fixtures: a handful of nodes, a service, pending tasks.

use std::collections::BTreeMap;

use hoist_types::node::Resources;
use hoist_types::service::{Constraint, PlacementPref, PublishedPort, ServiceMode};
use hoist_types::task::{TaskOrigin, TaskState, TaskStatus};
use hoist_types::{Availability, Role};

use super::*;

const MIB: u64 = 1024 * 1024;

fn node(id: u64) -> Node {
    Node::new(
        NodeId(id),
        format!("n{id}"),
        format!("10.0.0.{id}:2377"),
        Role::Worker,
        0,
    )
}

use hoist_types::NodeStatus;

fn nodes(n: u64) -> Vec<Node> {
    (1..=n).map(node).collect()
}

fn service(id: u64, spec: ServiceSpec) -> Service {
    Service {
        id: ServiceId(id),
        spec,
        version: 1,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn spec(replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        mode: ServiceMode::Replicated { replicas },
        command: vec!["hoist".into(), "hello".into()],
        ..ServiceSpec::default()
    }
}

/// Task `task_id` of `service`, slot `slot`, pending unless placed with `on`.
fn task(service: &Service, task_id: u64, slot: u64) -> Task {
    Task {
        id: TaskId(task_id),
        service_id: service.id,
        slot,
        node_id: None,
        service_version: service.version,
        spec: service.spec.clone(),
        desired_state: DesiredState::Running,
        status: TaskStatus::new(TaskState::Pending, "", 0),
        created_at_ms: 0,
        updated_at_ms: 0,
        attempt: 0,
        origin: TaskOrigin::Created,
        pending_reason: None,
    }
}

fn running_on(mut task: Task, node_id: u64) -> Task {
    task.node_id = Some(NodeId(node_id));
    task.status.state = TaskState::Running;
    task
}

fn pending_tasks(service: &Service, n: u64) -> Vec<Task> {
    (1..=n)
        .map(|slot| task(service, 100 + slot, slot))
        .collect()
}

/// Node id of each assignment, in decision order; panics on a pending decision.
fn assigned(decisions: &[Decision]) -> Vec<u64> {
    decisions
        .iter()
        .map(|decision| match decision {
            Decision::Assign { node_id, .. } => node_id.0,
            Decision::Pending { reason, .. } => panic!("unexpected pending: {reason}"),
        })
        .collect()
}

fn per_node(decisions: &[Decision]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for node_id in assigned(decisions) {
        *counts.entry(node_id).or_default() += 1;
    }
    counts
}

#[test]
fn three_replicas_on_four_nodes_land_on_three_distinct_nodes() {
    let nodes = nodes(4);
    let web = service(1, spec(3));
    let view = ClusterView::new(&nodes, [&web], []);
    let decisions = schedule(&view, &pending_tasks(&web, 3));
    assert_eq!(assigned(&decisions), vec![1, 2, 3]);
}

#[test]
fn eight_replicas_on_four_nodes_spread_evenly() {
    let nodes = nodes(4);
    let web = service(1, spec(8));
    let view = ClusterView::new(&nodes, [&web], []);
    let decisions = schedule(&view, &pending_tasks(&web, 8));
    let counts = per_node(&decisions);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2, 2]
    );
}

#[test]
fn spread_counts_the_service_first_then_all_tasks() {
    let nodes = nodes(3);
    let web = service(1, spec(2));
    let other = service(2, spec(2));
    // n1 already has a task of web; n2 has two tasks of another service.
    let existing = [
        running_on(task(&web, 1, 1), 1),
        running_on(task(&other, 2, 1), 2),
        running_on(task(&other, 3, 2), 2),
    ];
    let view = ClusterView::new(&nodes, [&web, &other], &existing);
    let pending = [task(&web, 10, 2)];
    // n2 and n3 have no web task; n3 has fewer tasks overall.
    assert_eq!(assigned(&schedule(&view, &pending)), vec![3]);
}

#[test]
fn scheduling_does_not_depend_on_input_order() {
    let nodes = nodes(3);
    let web = service(1, spec(5));
    let view = ClusterView::new(&nodes, [&web], []);
    let pending = pending_tasks(&web, 5);
    let mut reversed = pending.clone();
    reversed.reverse();
    assert_eq!(schedule(&view, &pending), schedule(&view, &reversed));
}

#[test]
fn an_unsatisfiable_constraint_leaves_the_task_pending_with_a_reason() {
    let nodes = nodes(3);
    let web = service(
        1,
        ServiceSpec {
            constraints: vec![Constraint::parse("node.labels.zone==z").unwrap()],
            ..spec(1)
        },
    );
    let view = ClusterView::new(&nodes, [&web], []);
    let decisions = schedule(&view, &pending_tasks(&web, 1));
    assert_eq!(
        decisions,
        vec![Decision::Pending {
            task_id: TaskId(101),
            reason: "no suitable node (3 nodes do not satisfy node.labels.zone==z)".into()
        }]
    );
}

#[test]
fn the_reason_counts_every_filter() {
    let mut nodes = nodes(4);
    nodes[0].availability = Availability::Drain;
    nodes[1].availability = Availability::Drain;
    nodes[2].resources.memory_bytes = 256 * MIB;
    nodes[3].status = NodeStatus::Down;
    let mut web_spec = spec(1);
    web_spec.resources.reservations.memory_bytes = 512 * MIB;
    let web = service(1, web_spec);
    let view = ClusterView::new(&nodes, [&web], []);
    let decisions = schedule(&view, &pending_tasks(&web, 1));
    assert_eq!(
        decisions,
        vec![Decision::Pending {
            task_id: TaskId(101),
            reason: "no suitable node (2 nodes drained, 1 node not ready, \
                     1 node lacks 512 MiB of memory)"
                .into()
        }]
    );
    let empty: Vec<Node> = Vec::new();
    let view = ClusterView::new(&empty, [&web], []);
    assert_eq!(
        schedule(&view, &pending_tasks(&web, 1)),
        vec![Decision::Pending {
            task_id: TaskId(101),
            reason: "no suitable node (no nodes in the cluster)".into()
        }]
    );
}

#[test]
fn drained_paused_and_unready_nodes_take_no_new_tasks() {
    let mut nodes = nodes(5);
    nodes[0].availability = Availability::Drain;
    nodes[1].availability = Availability::Pause;
    nodes[2].status = NodeStatus::Down;
    nodes[3].status = NodeStatus::Unknown;
    let web = service(1, spec(4));
    let view = ClusterView::new(&nodes, [&web], []);
    assert_eq!(
        assigned(&schedule(&view, &pending_tasks(&web, 4))),
        vec![5, 5, 5, 5]
    );
}

#[test]
fn host_ports_keep_tasks_apart() {
    let nodes = nodes(2);
    let web = service(
        1,
        ServiceSpec {
            ports: vec![PublishedPort::parse("published=8080,target=80,mode=host").unwrap()],
            ..spec(3)
        },
    );
    // Another service's ingress use of the same number does not bind it on the node.
    let view = ClusterView::new(&nodes, [&web], []);
    let decisions = schedule(&view, &pending_tasks(&web, 3));
    assert_eq!(assigned(&decisions[..2]), vec![1, 2]);
    assert_eq!(
        decisions[2],
        Decision::Pending {
            task_id: TaskId(103),
            reason: "no suitable node (2 nodes have host port 8080 in use)".into()
        }
    );
}

#[test]
fn a_task_being_stopped_still_holds_its_host_port() {
    let nodes = nodes(2);
    let web = service(
        1,
        ServiceSpec {
            ports: vec![PublishedPort::parse("published=8080,target=80,mode=host").unwrap()],
            ..spec(1)
        },
    );
    let mut stopping = running_on(task(&web, 1, 1), 1);
    stopping.desired_state = DesiredState::Shutdown;
    let view = ClusterView::new(&nodes, [&web], [&stopping]);
    assert_eq!(assigned(&schedule(&view, &[task(&web, 2, 1)])), vec![2]);
}

#[test]
fn reservations_are_counted_and_zero_means_unlimited() {
    let mut nodes = nodes(2);
    nodes[0].resources = Resources {
        nano_cpus: 2_000_000_000,
        memory_bytes: 1024 * MIB,
    };
    let mut web_spec = spec(4);
    web_spec.resources.reservations.memory_bytes = 512 * MIB;
    web_spec.resources.reservations.nano_cpus = 500_000_000;
    // n1 has 1 GiB: two tasks fit. n2 declares nothing: it takes any number.
    web_spec.max_replicas_per_node = None;
    let web = service(1, web_spec);
    let view = ClusterView::new(&nodes, [&web], []);
    let counts = per_node(&schedule(&view, &pending_tasks(&web, 5)));
    assert_eq!(counts, BTreeMap::from([(1, 2), (2, 3)]));
}

#[test]
fn cpu_reservations_are_explained() {
    let mut nodes = nodes(1);
    nodes[0].resources.nano_cpus = 1_000_000_000;
    let mut web_spec = spec(1);
    web_spec.resources.reservations.nano_cpus = 1_500_000_000;
    let web = service(1, web_spec);
    let view = ClusterView::new(&nodes, [&web], []);
    let decisions = schedule(&view, &pending_tasks(&web, 1));
    assert_eq!(
        decisions[0],
        Decision::Pending {
            task_id: TaskId(101),
            reason: "no suitable node (1 node lacks 1.5 CPUs)".into()
        }
    );
}

#[test]
fn max_replicas_per_node() {
    let nodes = nodes(2);
    let web = service(
        1,
        ServiceSpec {
            max_replicas_per_node: Some(1),
            ..spec(3)
        },
    );
    let view = ClusterView::new(&nodes, [&web], []);
    let decisions = schedule(&view, &pending_tasks(&web, 3));
    assert_eq!(assigned(&decisions[..2]), vec![1, 2]);
    assert!(matches!(
        &decisions[2],
        Decision::Pending { reason, .. }
            if reason == "no suitable node (2 nodes already run the maximum of 1 task per node)"
    ));
}

#[test]
fn a_node_without_the_driver_is_skipped() {
    let mut nodes = nodes(2);
    nodes[1].engine.drivers = vec!["process".into(), "docker".into()];
    let web = service(
        1,
        ServiceSpec {
            driver: hoist_types::DriverKind::Docker,
            image: Some("nginx".into()),
            ..spec(2)
        },
    );
    let view = ClusterView::new(&nodes, [&web], []);
    assert_eq!(
        assigned(&schedule(&view, &pending_tasks(&web, 2))),
        vec![2, 2]
    );
    let only_n1 = [node(1)];
    let view = ClusterView::new(&only_n1, [&web], []);
    assert!(matches!(
        &schedule(&view, &pending_tasks(&web, 1))[0],
        Decision::Pending { reason, .. } if reason == "no suitable node (1 node lacks the docker driver)"
    ));
}

#[test]
fn placement_preferences_spread_over_label_values_first() {
    let mut nodes = nodes(3);
    nodes[0].labels.insert("zone".into(), "a".into());
    nodes[1].labels.insert("zone".into(), "a".into());
    nodes[2].labels.insert("zone".into(), "b".into());
    let web = service(
        1,
        ServiceSpec {
            placement_prefs: vec![PlacementPref::Spread {
                label: "zone".into(),
            }],
            ..spec(4)
        },
    );
    let view = ClusterView::new(&nodes, [&web], []);
    let counts = per_node(&schedule(&view, &pending_tasks(&web, 4)));
    // Zone b's single node gets as many as zone a's two nodes together.
    assert_eq!(counts, BTreeMap::from([(1, 1), (2, 1), (3, 2)]));
}

#[test]
fn nodes_without_the_label_form_their_own_group() {
    let mut nodes = nodes(3);
    nodes[0].labels.insert("zone".into(), "a".into());
    nodes[1].labels.insert("zone".into(), "b".into());
    let web = service(
        1,
        ServiceSpec {
            placement_prefs: vec![PlacementPref::Spread {
                label: "zone".into(),
            }],
            ..spec(6)
        },
    );
    let view = ClusterView::new(&nodes, [&web], []);
    let counts = per_node(&schedule(&view, &pending_tasks(&web, 6)));
    assert_eq!(counts, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
}

#[test]
fn a_bound_task_goes_to_its_node_or_waits() {
    let mut nodes = nodes(3);
    nodes[1].availability = Availability::Drain;
    let web = service(1, spec(1));
    let mut bound = task(&web, 7, 0);
    bound.node_id = Some(NodeId(3));
    let mut bound_to_drained = task(&web, 8, 0);
    bound_to_drained.node_id = Some(NodeId(2));
    let mut bound_to_ghost = task(&web, 9, 0);
    bound_to_ghost.node_id = Some(NodeId(42));
    let view = ClusterView::new(&nodes, [&web], []);
    let decisions = schedule(&view, &[bound, bound_to_drained, bound_to_ghost]);
    assert_eq!(
        decisions,
        vec![
            Decision::Assign {
                task_id: TaskId(7),
                node_id: NodeId(3)
            },
            Decision::Pending {
                task_id: TaskId(8),
                reason: "node n2 drained".into()
            },
            Decision::Pending {
                task_id: TaskId(9),
                reason: "node 000000000000002a not found".into()
            },
        ]
    );
}

#[test]
fn only_waiting_tasks_of_known_services_are_decided() {
    let nodes = nodes(2);
    let web = service(1, spec(3));
    let gone = service(2, spec(1));
    let mut stopping = task(&web, 1, 1);
    stopping.desired_state = DesiredState::Shutdown;
    let placed = running_on(task(&web, 2, 2), 1);
    let orphan = task(&gone, 3, 1);
    let waiting = task(&web, 4, 3);
    let view = ClusterView::new(&nodes, [&web], []);
    let decisions = schedule(&view, &[stopping, placed, orphan, waiting]);
    assert_eq!(
        decisions,
        vec![Decision::Assign {
            task_id: TaskId(4),
            node_id: NodeId(1)
        }]
    );
}

#[test]
fn schedule_leaves_the_view_untouched_and_schedule_mut_records() {
    let nodes = nodes(2);
    let web = service(1, spec(2));
    let mut view = ClusterView::new(&nodes, [&web], []);
    let pending = pending_tasks(&web, 2);
    let _ = schedule(&view, &pending);
    assert_eq!(view.load(NodeId(1)).unwrap().n_tasks, 0);
    let _ = view.schedule(&pending);
    assert_eq!(view.load(NodeId(1)).unwrap().n_tasks, 1);
    assert_eq!(view.service_tasks_on(NodeId(2), web.id), 1);
}

/// 10k tasks over 1k nodes, the shape of swarmkit's `BenchmarkScheduler1kNodes10kTasks`.
/// Run with `cargo test -p hoist-scheduler --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_10k_tasks_on_1k_nodes() {
    let nodes = nodes(1000);
    let web = service(1, spec(10_000));
    let pending = pending_tasks(&web, 10_000);
    let view = ClusterView::new(&nodes, [&web], []);
    let started = std::time::Instant::now();
    let decisions = schedule(&view, &pending);
    let elapsed = started.elapsed();
    let counts = per_node(&decisions);
    assert!(counts.values().all(|&count| count == 10));
    println!(
        "placed {} tasks in {elapsed:?} ({:.0} tasks/s)",
        decisions.len(),
        decisions.len() as f64 / elapsed.as_secs_f64()
    );
}
