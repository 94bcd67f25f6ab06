//! Checkers: pure functions over a recorded [`History`](crate::History) and final
//! [`Snapshot`]s, each returning the violations it found (empty when all is well).
//! [`crate::timeline`] holds the same invariants at every sampled instant; a fault
//! scenario's report adds its findings under the names below.
//!
//! Failed or timed-out changes are indeterminate: they may have happened, at any time
//! after they started (as etcd's robustness checker sets their return time to
//! infinity). Only acknowledged changes are held to durability.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::linearizable::{self, Action, Operation};
use crate::workload::{Op, OpKind, OpResult};

/// What one checker found wrong, one line each.
pub type Violations = Vec<String>;

/// Checker names, as reports and the bench table show them.
pub const LOST: &str = "lost acks";
pub const LINEARIZABLE: &str = "register";
pub const DISAGREE: &str = "managers differ";
pub const REPLICAS: &str = "replicas";
pub const TWICE: &str = "slot twice";
pub const MISPLACED: &str = "down/drained";
pub const SCENARIO: &str = "scenario";

/// Every checker, in report order.
pub const CHECKERS: [&str; 7] = [
    LOST,
    LINEARIZABLE,
    DISAGREE,
    REPLICAS,
    TWICE,
    MISPLACED,
    SCENARIO,
];

/// The cluster as it ended, read through the CLI.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `node ls` JSON from the manager asked.
    pub nodes: Vec<Value>,
    /// `service ls` JSON.
    pub services: Vec<Value>,
    /// `service ps` JSON of every service, concatenated.
    pub tasks: Vec<Value>,
    /// Task processes alive: `(node hostname, task id)`.
    pub live: Vec<(String, String)>,
    /// What every manager answers, to compare.
    pub managers: Vec<ManagerView>,
}

/// One manager's `node ls` and `service ls` (`None`: it did not answer).
#[derive(Debug, Clone, Default)]
pub struct ManagerView {
    pub name: String,
    pub nodes: Option<Vec<Value>>,
    pub services: Option<Vec<Value>>,
}

fn ms(duration: std::time::Duration) -> String {
    format!("{:.3}s", duration.as_secs_f64())
}

fn replicas_of(service: &Value) -> Option<u64> {
    service["spec"]["mode"]["replicated"]["replicas"].as_u64()
}

fn label_value(node: &Value, key: &str) -> Result<Option<u64>, String> {
    match &node["labels"][key] {
        Value::Null => Ok(None),
        Value::String(text) => text.parse().map(Some).map_err(|_| text.clone()),
        other => Err(other.to_string()),
    }
}

/// Acknowledged writes of one register-like object (a service's replicas, a node's
/// label) that the final value `last` does not account for. Every acknowledged write
/// must be visible at the end, or overwritten by a write that may have taken effect
/// after it: an acknowledged one that did not end before it started, or an
/// indeterminate one that started before the end (it may land any time after its
/// call). The workload never writes one value twice to one object, so the final value
/// names its write; were a value written twice, any of its writes may be the last.
fn lost_writes(what: &str, writes: &[(&Op, u64)], last: Option<u64>) -> Violations {
    let acked = || writes.iter().filter(|(op, _)| op.acked());
    let Some(last) = last else {
        return match acked().next_back() {
            Some((op, value)) => vec![format!(
                "{what} is gone, though writes of it were acknowledged (the last: {value}, ended {})",
                ms(op.end)
            )],
            None => Vec::new(),
        };
    };
    let finals: Vec<&&Op> = writes
        .iter()
        .filter(|(_, value)| *value == last)
        .map(|(op, _)| op)
        .collect();
    if finals.is_empty() {
        return vec![format!("{what} = {last}, which was never written")];
    }
    acked()
        .filter(|(_, value)| *value != last)
        .filter(|(lost, _)| {
            finals
                .iter()
                .all(|final_write| final_write.acked() && final_write.end < lost.start)
        })
        .map(|(lost, value)| {
            let final_end = finals.iter().map(|op| op.end).max().unwrap_or_default();
            format!(
                "{what} = {last}: the acknowledged write of {value} (client {}, via node {}, {} - {}) is lost: {last} was written by a change that ended at {}, before it started",
                lost.client,
                lost.node + 1,
                ms(lost.start),
                ms(lost.end),
                ms(final_end)
            )
        })
        .collect()
}

/// Acknowledged changes lost: after healing, every acknowledged service creation must
/// be there, and every acknowledged scale and node label visible or overwritten by a
/// later write (see [`lost_writes`]).
pub fn lost_changes(ops: &[Op], snapshot: &Snapshot) -> Violations {
    let mut violations = Vec::new();
    // Services: creations and scales, by name.
    let mut by_service: BTreeMap<&str, Vec<(&Op, u64)>> = BTreeMap::new();
    let mut created: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    // Labels: writes by (node, key).
    let mut by_label: BTreeMap<(&str, &str), Vec<(&Op, u64)>> = BTreeMap::new();
    for op in ops {
        match &op.kind {
            OpKind::CreateService { name, replicas } => {
                by_service.entry(name).or_default().push((op, *replicas));
                created.entry(name).or_default().push(op);
            }
            OpKind::Scale { name, replicas } => {
                by_service.entry(name).or_default().push((op, *replicas));
            }
            OpKind::SetLabel { target, key, value } => {
                by_label
                    .entry((target, key))
                    .or_default()
                    .push((op, *value));
            }
            OpKind::ReadLabel { .. } => {}
        }
    }
    let services: HashMap<&str, &Value> = snapshot
        .services
        .iter()
        .filter_map(|service| Some((service["spec"]["name"].as_str()?, service)))
        .collect();
    for (name, writes) in &by_service {
        let creation_acked = created
            .get(name)
            .and_then(|ops| ops.iter().find(|op| op.acked()));
        let Some(service) = services.get(name) else {
            if let Some(op) = creation_acked {
                violations.push(format!(
                    "service {name}: creation acknowledged (client {}, via node {}, ended {}) but it is gone",
                    op.client,
                    op.node + 1,
                    ms(op.end)
                ));
            }
            continue;
        };
        if !created.contains_key(name) {
            violations.push(format!("service {name} exists but nobody created it"));
            continue;
        }
        let Some(replicas) = replicas_of(service) else {
            violations.push(format!(
                "service {name} is not replicated: {}",
                service["spec"]["mode"]
            ));
            continue;
        };
        violations.extend(lost_writes(
            &format!("service {name}'s replicas"),
            writes,
            Some(replicas),
        ));
    }
    let nodes: HashMap<&str, &Value> = snapshot
        .nodes
        .iter()
        .filter_map(|node| Some((node["hostname"].as_str()?, node)))
        .collect();
    for ((target, key), writes) in &by_label {
        let Some(node) = nodes.get(target) else {
            violations.push(format!(
                "node {target} is gone (its label {key} was written)"
            ));
            continue;
        };
        match label_value(node, key) {
            Err(text) => {
                violations.push(format!("node {target}: label {key}={text} is not a number"))
            }
            Ok(value) => violations.extend(lost_writes(
                &format!("node {target}'s label {key}"),
                writes,
                value,
            )),
        }
    }
    violations
}

/// The register (label `key` of node `target`) checked for linearizability by search
/// ([`crate::linearizable`]): any number of writers, a failed or timed-out write may take
/// effect at any time after it was called or never, a failed read tells nothing. One
/// line per key that has no linearization, with where the search got stuck.
pub fn register_not_linearizable(ops: &[Op], target: &str, key: &str) -> Violations {
    let register = format!("{target}.{key}");
    let history: Vec<Operation> = ops
        .iter()
        .filter_map(|op| {
            let action = match (&op.kind, &op.result) {
                (
                    OpKind::SetLabel {
                        target: t,
                        key: k,
                        value,
                    },
                    _,
                ) if t == target && k == key => Action::Write(*value),
                (OpKind::ReadLabel { target: t, key: k }, OpResult::Read(value))
                    if t == target && k == key =>
                {
                    Action::Read(*value)
                }
                _ => return None,
            };
            Some(Operation {
                client: op.client,
                key: register.clone(),
                action,
                call: op.start,
                ret: (!op.failed()).then_some(op.end),
            })
        })
        .collect();
    linearizable::check(&history, &BTreeMap::new())
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// What every manager must agree on about nodes and services (not the fields that
/// depend on who answers or on the last heartbeat).
type Summary = (BTreeSet<String>, BTreeSet<String>);

fn agreed_summary(view: &ManagerView) -> Option<Summary> {
    let nodes = view
        .nodes
        .as_ref()?
        .iter()
        .map(|node| {
            format!(
                "node {} {} {} {} {}",
                node["id"], node["hostname"], node["role"], node["availability"], node["labels"]
            )
        })
        .collect();
    let services = view
        .services
        .as_ref()?
        .iter()
        .map(|service| {
            format!(
                "service {} {} {} v{}",
                service["id"], service["spec"]["name"], service["spec"]["mode"], service["version"]
            )
        })
        .collect();
    Some((nodes, services))
}

/// Managers whose state differs (or that do not answer) after healing.
pub fn managers_disagree(snapshot: &Snapshot) -> Violations {
    let mut violations = Vec::new();
    let mut reference: Option<(&str, Summary)> = None;
    for view in &snapshot.managers {
        let Some(summary) = agreed_summary(view) else {
            violations.push(format!(
                "manager {} does not answer node ls / service ls",
                view.name
            ));
            continue;
        };
        match &reference {
            None => reference = Some((&view.name, summary)),
            Some((first, expected)) => {
                for (what, mine, theirs) in [
                    ("nodes", &summary.0, &expected.0),
                    ("services", &summary.1, &expected.1),
                ] {
                    if mine != theirs {
                        let only_mine: Vec<&String> = mine.difference(theirs).collect();
                        let only_theirs: Vec<&String> = theirs.difference(mine).collect();
                        violations.push(format!(
                            "{} and {first} differ on {what}: only on {}: {only_mine:?}; only on {first}: {only_theirs:?}",
                            view.name, view.name
                        ));
                    }
                }
            }
        }
    }
    violations
}

/// Task id -> (service name, slot name such as `web.3`).
fn slots(snapshot: &Snapshot) -> HashMap<&str, (&str, &str)> {
    snapshot
        .tasks
        .iter()
        .filter_map(|task| {
            Some((
                task["id"].as_str()?,
                (task["spec"]["name"].as_str()?, task["name"].as_str()?),
            ))
        })
        .collect()
}

/// Services not at their desired replicas: as the cluster reports them, and as task
/// processes really running.
pub fn replicas_not_desired(snapshot: &Snapshot) -> Violations {
    let mut violations = Vec::new();
    let slots = slots(snapshot);
    let mut live_slots: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (_, task) in &snapshot.live {
        if let Some((service, slot)) = slots.get(task.as_str()) {
            live_slots.entry(service).or_default().insert(slot);
        }
    }
    for service in &snapshot.services {
        let name = service["spec"]["name"].as_str().unwrap_or("?");
        let Some(replicas) = replicas_of(service) else {
            continue;
        };
        let running = service["running"].as_u64().unwrap_or(0);
        let desired = service["desired"].as_u64().unwrap_or(0);
        if desired != replicas || running != replicas {
            violations.push(format!(
                "service {name}: {running} running / {desired} desired, spec wants {replicas}"
            ));
        }
        let processes = live_slots.get(name).map_or(0, BTreeSet::len) as u64;
        if processes != replicas {
            violations.push(format!(
                "service {name}: {processes} slots have a live process, spec wants {replicas}"
            ));
        }
    }
    violations
}

/// Slots with more than one live task process.
pub fn slots_running_twice(snapshot: &Snapshot) -> Violations {
    let slots = slots(snapshot);
    let mut per_slot: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (node, task) in &snapshot.live {
        if let Some((_, slot)) = slots.get(task.as_str()) {
            per_slot.entry(slot).or_default().push((node, task));
        }
    }
    per_slot
        .into_iter()
        .filter(|(_, tasks)| tasks.len() > 1)
        .map(|(slot, tasks)| format!("slot {slot} runs {} times: {tasks:?}", tasks.len()))
        .collect()
}

/// Tasks wanted on, or processes running on, nodes that are Down or drained.
pub fn tasks_on_unavailable_nodes(snapshot: &Snapshot) -> Violations {
    let mut violations = Vec::new();
    let unavailable: HashMap<&str, String> = snapshot
        .nodes
        .iter()
        .filter(|node| node["status"] != "ready" || node["availability"] == "drain")
        .filter_map(|node| {
            Some((
                node["hostname"].as_str()?,
                format!(
                    "{} {}",
                    node["status"].as_str()?,
                    node["availability"].as_str()?
                ),
            ))
        })
        .collect();
    for task in &snapshot.tasks {
        let Some(node) = task["node_hostname"].as_str() else {
            continue;
        };
        if task["desired_state"] == "running" {
            if let Some(why) = unavailable.get(node) {
                violations.push(format!(
                    "task {} ({}) is wanted running on {node}, which is {why}",
                    task["name"], task["id"]
                ));
            }
        }
    }
    let slots = slots(snapshot);
    for (node, task) in &snapshot.live {
        if let Some(why) = unavailable.get(node.as_str()) {
            let slot = slots.get(task.as_str()).map_or("?", |(_, slot)| *slot);
            violations.push(format!(
                "task {task} ({slot}) runs on {node}, which is {why}"
            ));
        }
    }
    violations
}

/// The checkers that must hold once the cluster has settled (they may fail while it
/// still converges).
pub fn convergence(snapshot: &Snapshot) -> Vec<(&'static str, Violations)> {
    vec![
        (DISAGREE, managers_disagree(snapshot)),
        (REPLICAS, replicas_not_desired(snapshot)),
        (TWICE, slots_running_twice(snapshot)),
        (MISPLACED, tasks_on_unavailable_nodes(snapshot)),
    ]
}

/// Every checker over a history and the final snapshot; `registers` are the
/// `(node, label)` pairs written by one client with increasing values.
pub fn check_all(
    ops: &[Op],
    snapshot: &Snapshot,
    registers: &[(String, String)],
) -> Vec<(&'static str, Violations)> {
    let mut results = vec![
        (LOST, lost_changes(ops, snapshot)),
        (
            LINEARIZABLE,
            registers
                .iter()
                .flat_map(|(target, key)| register_not_linearizable(ops, target, key))
                .collect(),
        ),
    ];
    results.extend(convergence(snapshot));
    results
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn op(client: usize, kind: OpKind, start: u64, end: u64, result: OpResult) -> Op {
        Op {
            client,
            node: 0,
            kind,
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
            result,
        }
    }

    fn write(value: u64, start: u64, end: u64, result: OpResult) -> Op {
        op(
            0,
            OpKind::SetLabel {
                target: "n".into(),
                key: "reg".into(),
                value,
            },
            start,
            end,
            result,
        )
    }

    fn read(value: Option<u64>, start: u64, end: u64) -> Op {
        op(
            1,
            OpKind::ReadLabel {
                target: "n".into(),
                key: "reg".into(),
            },
            start,
            end,
            OpResult::Read(value),
        )
    }

    fn failed() -> OpResult {
        OpResult::Failed("no quorum".into())
    }

    #[test]
    fn a_stale_read_is_caught() {
        let ops = vec![
            write(1, 0, 10, OpResult::Ok),
            write(2, 20, 30, OpResult::Ok),
            read(Some(2), 25, 26),
            read(Some(1), 40, 50),
        ];
        let found = register_not_linearizable(&ops, "n", "reg");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("n.reg: not linearizable"), "{found:?}");
    }

    #[test]
    fn a_read_of_a_value_not_yet_written_is_caught() {
        let ops = vec![read(Some(3), 0, 10), write(3, 20, 30, OpResult::Ok)];
        assert_eq!(register_not_linearizable(&ops, "n", "reg").len(), 1);
    }

    #[test]
    fn concurrent_reads_and_late_indeterminate_writes_are_allowed() {
        let ops = vec![
            write(1, 0, 10, OpResult::Ok),
            write(2, 20, 30, failed()),
            write(3, 40, 50, OpResult::Ok),
            // Concurrent with write 3: either value.
            read(Some(1), 35, 45),
            read(Some(3), 41, 45),
            // Write 2 was indeterminate: it may land late.
            read(Some(2), 60, 70),
        ];
        assert_eq!(
            register_not_linearizable(&ops, "n", "reg"),
            Vec::<String>::new()
        );
        // But once it has landed, 3 cannot come back: nobody wrote 3 again.
        let mut flip_flop = ops.clone();
        flip_flop.push(read(Some(3), 80, 90));
        assert_eq!(
            register_not_linearizable(&flip_flop, "n", "reg").len(),
            1,
            "3, 2, then 3 again"
        );
    }

    #[test]
    fn reads_going_backwards_are_caught() {
        let ops = vec![
            write(1, 0, 10, OpResult::Ok),
            write(2, 20, 100, OpResult::Ok),
            read(Some(2), 30, 40),
            read(Some(1), 50, 60),
        ];
        let found = register_not_linearizable(&ops, "n", "reg");
        assert_eq!(found.len(), 1, "{found:#?}");
    }

    fn snapshot_with(labels: Value, services: Vec<Value>) -> Snapshot {
        Snapshot {
            nodes: vec![
                json!({"hostname": "n", "labels": labels, "status": "ready", "availability": "active"}),
            ],
            services,
            ..Default::default()
        }
    }

    fn service(name: &str, replicas: u64) -> Value {
        json!({"id": name, "spec": {"name": name, "mode": {"replicated": {"replicas": replicas}}}, "running": replicas, "desired": replicas})
    }

    #[test]
    fn lost_labels_and_services_are_caught_and_indeterminate_ones_are_not() {
        let create = |name: &str, replicas, result| {
            op(
                2,
                OpKind::CreateService {
                    name: name.into(),
                    replicas,
                },
                0,
                10,
                result,
            )
        };
        let ops = vec![
            write(1, 0, 10, OpResult::Ok),
            write(2, 20, 30, OpResult::Ok),
            create("kept", 2, OpResult::Ok),
            create("lost", 1, OpResult::Ok),
            create("maybe", 1, failed()),
            op(
                2,
                OpKind::Scale {
                    name: "kept".into(),
                    replicas: 3,
                },
                20,
                30,
                failed(),
            ),
        ];
        // Value 1 is older than the acknowledged 2; "lost" is gone; "kept" may be 2 or 3.
        let snapshot = snapshot_with(json!({"reg": "1"}), vec![service("kept", 3)]);
        let found = lost_changes(&ops, &snapshot);
        assert_eq!(found.len(), 2, "{found:#?}");
        let snapshot = snapshot_with(
            json!({"reg": "2"}),
            vec![service("kept", 2), service("lost", 1)],
        );
        assert_eq!(lost_changes(&ops, &snapshot), Vec::<String>::new());
        let snapshot = snapshot_with(
            json!({"reg": "7"}),
            vec![service("kept", 1), service("lost", 1)],
        );
        assert_eq!(lost_changes(&ops, &snapshot).len(), 2);
    }

    fn scale(replicas: u64, start: u64, end: u64, result: OpResult) -> Op {
        op(
            2,
            OpKind::Scale {
                name: "web".into(),
                replicas,
            },
            start,
            end,
            result,
        )
    }

    #[test]
    fn lost_acknowledged_scales_are_caught() {
        let create = op(
            2,
            OpKind::CreateService {
                name: "web".into(),
                replicas: 1,
            },
            0,
            10,
            OpResult::Ok,
        );
        let only = |ops: Vec<Op>, replicas: u64| {
            lost_changes(
                &ops,
                &snapshot_with(json!({}), vec![service("web", replicas)]),
            )
        };
        // (situation, writes after the creation, final replicas, lost writes)
        let cases: Vec<(&str, Vec<Op>, u64, usize)> = vec![
            (
                "the last acknowledged scale is visible",
                vec![
                    scale(2, 20, 30, OpResult::Ok),
                    scale(3, 40, 50, OpResult::Ok),
                ],
                3,
                0,
            ),
            (
                "the last acknowledged scale is lost: an older count came back",
                vec![
                    scale(2, 20, 30, OpResult::Ok),
                    scale(3, 40, 50, OpResult::Ok),
                ],
                2,
                1,
            ),
            (
                "both acknowledged scales lost: the creation's count came back",
                vec![
                    scale(2, 20, 30, OpResult::Ok),
                    scale(3, 40, 50, OpResult::Ok),
                ],
                1,
                2,
            ),
            (
                "overwritten by a later indeterminate scale",
                vec![scale(2, 20, 30, OpResult::Ok), scale(3, 40, 50, failed())],
                3,
                0,
            ),
            (
                "an indeterminate scale that started before may land after",
                vec![scale(2, 20, 90, failed()), scale(3, 40, 50, OpResult::Ok)],
                2,
                0,
            ),
            (
                "concurrent acknowledged scales: either may be last",
                vec![
                    scale(2, 20, 50, OpResult::Ok),
                    scale(3, 30, 40, OpResult::Ok),
                ],
                2,
                0,
            ),
            (
                "the acknowledged scale to 0 lost",
                vec![
                    scale(2, 20, 30, OpResult::Ok),
                    scale(0, 40, 50, OpResult::Ok),
                ],
                2,
                1,
            ),
            (
                "a count nobody wrote",
                vec![scale(2, 20, 30, OpResult::Ok)],
                3,
                1,
            ),
        ];
        for (situation, scales, replicas, lost) in cases {
            let mut ops = vec![create.clone()];
            ops.extend(scales);
            let found = only(ops, replicas);
            assert_eq!(found.len(), lost, "{situation}: {found:#?}");
        }
    }

    #[test]
    fn services_short_of_their_replicas_are_caught() {
        let task = |id: &str, slot: &str| json!({"id": id, "name": slot, "spec": {"name": "web"}, "node_hostname": "a", "desired_state": "running"});
        let web = |replicas: u64, running: u64, desired: u64| json!({"id": "web", "spec": {"name": "web", "mode": {"replicated": {"replicas": replicas}}}, "running": running, "desired": desired});
        let snapshot = |service: Value, live: &[&str]| Snapshot {
            services: vec![service],
            tasks: vec![
                task("t1", "web.1"),
                task("t2", "web.2"),
                task("t3", "web.2"),
            ],
            live: live
                .iter()
                .map(|task| ("a".to_string(), task.to_string()))
                .collect(),
            ..Default::default()
        };
        let cases = [
            ("every slot runs", snapshot(web(2, 2, 2), &["t1", "t2"]), 0),
            (
                "the cluster reports one running of two",
                snapshot(web(2, 1, 2), &["t1", "t2"]),
                1,
            ),
            (
                "the desired count lags the spec",
                snapshot(web(3, 2, 2), &["t1", "t2"]),
                2,
            ),
            (
                "a slot has no live process though reported running",
                snapshot(web(2, 2, 2), &["t1"]),
                1,
            ),
            (
                "two copies of one slot do not make up for a missing one",
                snapshot(web(2, 2, 2), &["t2", "t3"]),
                1,
            ),
        ];
        for (situation, snapshot, expected) in cases {
            let found = replicas_not_desired(&snapshot);
            assert_eq!(found.len(), expected, "{situation}: {found:#?}");
        }
    }

    #[test]
    fn duplicate_slots_and_misplaced_tasks_are_caught() {
        let task = |id: &str, slot: &str, node: &str| json!({"id": id, "name": slot, "spec": {"name": "web"}, "node_hostname": node, "desired_state": "running"});
        let snapshot = Snapshot {
            nodes: vec![
                json!({"hostname": "a", "status": "ready", "availability": "active"}),
                json!({"hostname": "b", "status": "down", "availability": "active"}),
                json!({"hostname": "c", "status": "ready", "availability": "drain"}),
            ],
            services: vec![service("web", 2)],
            tasks: vec![
                task("t1", "web.1", "a"),
                task("t2", "web.1", "b"),
                task("t3", "web.2", "a"),
            ],
            live: vec![
                ("a".into(), "t1".into()),
                ("b".into(), "t2".into()),
                ("a".into(), "t3".into()),
            ],
            managers: vec![],
        };
        assert_eq!(slots_running_twice(&snapshot).len(), 1);
        // t2 is wanted on a Down node and runs there.
        assert_eq!(tasks_on_unavailable_nodes(&snapshot).len(), 2);
        assert!(replicas_not_desired(&snapshot).is_empty());
    }

    #[test]
    fn managers_that_differ_are_caught() {
        let view = |name: &str, label: &str| ManagerView {
            name: name.into(),
            nodes: Some(vec![
                json!({"id": "1", "hostname": "n", "labels": {"k": label}, "status": "ready"}),
            ]),
            services: Some(vec![service("web", 1)]),
        };
        let mut snapshot = Snapshot {
            managers: vec![view("m1", "a"), view("m2", "a")],
            ..Default::default()
        };
        assert!(managers_disagree(&snapshot).is_empty());
        snapshot.managers.push(view("m3", "b"));
        snapshot.managers.push(ManagerView {
            name: "m4".into(),
            ..Default::default()
        });
        assert_eq!(managers_disagree(&snapshot).len(), 2);
    }
}
