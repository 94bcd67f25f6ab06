//! The cluster watched over time, and checkers over it: pure functions from a
//! [`Timeline`] (what really ran, sampled, with the managers' view when one answered,
//! and the faults the scenario injected) to violations, each with its instants and
//! evidence. `watch.rs` takes the samples; this file reads no clock, runs no CLI and
//! knows nothing of processes beyond the `(node, task id)` pairs it is given.
//!
//! Times are durations since the run's start (the clock of the report's schedule and of
//! the recorded operations).
//!
//! What the cluster promises, and so what the windows below allow (see [`Windows`]):
//! - A node that cannot hear the managers (daemon killed or paused, or cut off by the
//!   proxy) keeps running its tasks, as Swarm's workers do: the worker does not stop
//!   work on its own when its heartbeats fail (`hoist-worker`'s runner stops a task only
//!   when its assignment says so or when it is no longer assigned to the node). So
//!   while a node is under a fault, its copies are not held against it; every window
//!   starts again when the node can hear the managers.
//! - Once it can, it learns its assignments within a heartbeat or two, and stops what
//!   it should not run with the task's stop grace (SIGTERM, then SIGKILL after it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::check::Violations;

/// A node as one manager's `node ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub hostname: String,
    /// `ready`, `down` or `unknown`.
    pub status: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
}

/// A task as one manager's `service ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSlot {
    pub id: String,
    pub service: String,
    /// The slot's name, such as `web.3`.
    pub slot: String,
    pub node: Option<String>,
    /// `running`, `shutdown` or `remove`.
    pub desired: String,
}

/// What the manager that answered said about nodes, services and their tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The manager asked.
    pub asked: String,
    /// When the reading of this view began (same clock as the samples): what it says
    /// was true at some point after this.
    pub requested_at: Duration,
    pub nodes: Vec<NodeState>,
    /// Replicated services and the replicas their spec wants.
    pub services: Vec<(String, u64)>,
    /// The tasks of the services that want replicas (with their history).
    pub tasks: Vec<TaskSlot>,
}

/// One sample: the task processes alive at `at`, and the view read right after (none
/// when no manager answered in time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub at: Duration,
    /// `(node hostname, task id)` of every live task process.
    pub live: Vec<(String, String)>,
    pub view: Option<View>,
}

/// A span during which `node` could not hear the managers, so it could not learn what
/// to stop: its daemon killed or paused, or its links cut. `to: None`: until the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub node: String,
    pub what: String,
    pub from: Duration,
    pub to: Option<Duration>,
}

/// Everything the timeline checkers read.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub samples: Vec<Sample>,
    pub faults: Vec<Fault>,
    /// From here to the end every service must have a live process in each of its
    /// slots (the scenario's settle point); `None`: not checked.
    pub steady_from: Option<Duration>,
}

/// How long each condition may last before it is a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Two live copies of one slot (a start-first move, or the old copy of a replaced
    /// task on a node that came back).
    pub hand_over: Duration,
    /// A task process on a node the managers report Down (while it can hear them).
    pub down: Duration,
    /// A task process on a drained node after the managers stopped wanting any there.
    pub drain: Duration,
    /// A view older than this (no manager answered since) judges nothing.
    pub view_max_age: Duration,
}

/// The stop grace of the workload's tasks: `hoist_types::service::DEFAULT_STOP_GRACE_PERIOD_MS`
/// (the workload never sets `--stop-grace-period`), the same as the grace the worker
/// stops a task with when it is no longer assigned to it (`UNASSIGNED_STOP_GRACE_MS`
/// in `hoist-worker`'s plan).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The sampling's own slack: a sample every quarter second and a view every other
/// one, read through CLI calls that take up to a second on a loaded 2-core machine.
pub const SAMPLING_SLACK: Duration = Duration::from_millis(1500);

impl Windows {
    /// The windows for a cluster beating every `heartbeat_period` and calling a node Down
    /// after `heartbeat_grace` periods without a beat.
    ///
    /// - hand-over: the old copy is told to stop on the next assignment push after the
    ///   new one runs (the leader's orchestrator reacts to the status report, at most
    ///   two heartbeats for the report and the push), then the driver stops it within
    ///   the stop grace.
    /// - down: a node that can hear the managers beats within a period and is Ready
    ///   again at once, unless the managers keep it Down; then its tasks are replaced
    ///   and it must stop them as unassigned: the Down detection (period × grace), two
    ///   heartbeats, the stop grace.
    /// - drain: the worker learns its empty assignment set within two heartbeats and
    ///   stops with the stop grace.
    pub fn for_cluster(heartbeat_period: Duration, heartbeat_grace: u32) -> Windows {
        let delivery = heartbeat_period * 2;
        Windows {
            hand_over: delivery + STOP_GRACE + SAMPLING_SLACK,
            down: heartbeat_period * heartbeat_grace + delivery + STOP_GRACE + SAMPLING_SLACK,
            drain: delivery + STOP_GRACE + SAMPLING_SLACK,
            view_max_age: heartbeat_period * heartbeat_grace + SAMPLING_SLACK,
        }
    }
}

fn secs(at: Duration) -> String {
    format!("{:.2}s", at.as_secs_f64())
}

/// Task id -> (service, slot), from every view of the timeline: a task never changes
/// slot, so a view taken after a sample names that sample's tasks too.
fn slot_map(timeline: &Timeline) -> HashMap<&str, (&str, &str)> {
    timeline
        .samples
        .iter()
        .filter_map(|sample| sample.view.as_ref())
        .flat_map(|view| view.tasks.iter())
        .map(|task| {
            (
                task.id.as_str(),
                (task.service.as_str(), task.slot.as_str()),
            )
        })
        .collect()
}

/// Since when `node` has been able to hear the managers at `at` (the end of its last
/// fault, or the start), or `None` while a fault holds it.
pub fn able_since(faults: &[Fault], node: &str, at: Duration) -> Option<Duration> {
    let mut since = Duration::ZERO;
    for fault in faults.iter().filter(|fault| fault.node == node) {
        if fault.from > at {
            continue;
        }
        match fault.to {
            Some(to) if to <= at => since = since.max(to),
            _ => return None,
        }
    }
    Some(since)
}

/// A condition seen over consecutive samples, reported once when it outlived its window.
#[derive(Debug)]
struct Incident {
    /// The first sample where the condition held.
    start: Duration,
    /// When the condition began to count (its start, or when the node could act).
    since: Duration,
    first_over: Option<Duration>,
    last: Duration,
    evidence: BTreeSet<String>,
}

impl Incident {
    fn new(since: Duration) -> Incident {
        Incident {
            start: since,
            since,
            first_over: None,
            last: since,
            evidence: BTreeSet::new(),
        }
    }

    /// Notes a sample at `at` where the condition holds, counted from `since`.
    fn observe(&mut self, at: Duration, since: Duration, window: Duration, evidence: String) {
        self.since = since;
        self.last = at;
        self.evidence.insert(evidence);
        if self.first_over.is_none() && at.saturating_sub(since) > window {
            self.first_over = Some(at);
        }
    }
}

/// Ends the incidents whose key `still` does not hold, turning those that went over
/// their window into violations with `describe`.
fn close_incidents<K: Ord + Clone>(
    open: &mut BTreeMap<K, Incident>,
    still: &BTreeSet<K>,
    violations: &mut Violations,
    describe: &impl Fn(&K, &Incident) -> String,
) {
    let ended: Vec<K> = open
        .keys()
        .filter(|key| !still.contains(*key))
        .cloned()
        .collect();
    for key in ended {
        if let Some(incident) = open.remove(&key) {
            if incident.first_over.is_some() {
                violations.push(describe(&key, &incident));
            }
        }
    }
}

/// Slots with two or more live copies on nodes that can hear the managers for longer
/// than the hand-over window. Copies on a node under a fault are not counted (it
/// cannot know it was replaced); once it is back, the window starts again.
pub fn slots_twice_over_time(timeline: &Timeline, windows: &Windows) -> Violations {
    let slots = slot_map(timeline);
    let mut violations = Vec::new();
    let mut open: BTreeMap<String, Incident> = BTreeMap::new();
    let describe = |slot: &String, incident: &Incident| {
        format!(
            "slot {slot} ran more than one copy from {} (counted from {}) to {}, over the {} hand-over window from {}: {}",
            secs(incident.start),
            secs(incident.since),
            secs(incident.last),
            secs(windows.hand_over),
            secs(incident.first_over.unwrap_or_default()),
            incident.evidence.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    for sample in &timeline.samples {
        let mut copies: BTreeMap<&str, Vec<(&str, &str, Duration)>> = BTreeMap::new();
        for (node, task) in &sample.live {
            let Some((_, slot)) = slots.get(task.as_str()) else {
                continue;
            };
            if let Some(able) = able_since(&timeline.faults, node, sample.at) {
                copies.entry(slot).or_default().push((node, task, able));
            }
        }
        let twice: BTreeSet<String> = copies
            .iter()
            .filter(|(_, copies)| copies.len() > 1)
            .map(|(slot, _)| slot.to_string())
            .collect();
        close_incidents(&mut open, &twice, &mut violations, &describe);
        for slot in &twice {
            let here = &copies[slot.as_str()];
            let able = here
                .iter()
                .map(|(_, _, able)| *able)
                .max()
                .unwrap_or_default();
            let incident = open
                .entry(slot.clone())
                .or_insert_with(|| Incident::new(sample.at));
            let since = able.max(incident.since);
            let evidence = here
                .iter()
                .map(|(node, task, _)| format!("task {task} on {node}"))
                .collect::<Vec<_>>()
                .join(" + ");
            incident.observe(sample.at, since, windows.hand_over, evidence);
        }
    }
    close_incidents(&mut open, &BTreeSet::new(), &mut violations, &describe);
    violations
}

/// Task processes on nodes where `condition(view, node)` held for longer than
/// `window`, counted from when it began to hold or when the node could hear the
/// managers again, whichever is later. Samples whose last view is older than
/// `windows.view_max_age` judge nothing.
fn processes_where(
    timeline: &Timeline,
    windows: &Windows,
    window: Duration,
    what: &str,
    condition: impl Fn(&View, &str) -> bool,
) -> Violations {
    let mut violations = Vec::new();
    // Node -> since when the condition holds, from the views seen so far.
    let mut holds_since: HashMap<String, Duration> = HashMap::new();
    let mut last_view: Option<Duration> = None;
    let mut open: BTreeMap<String, Incident> = BTreeMap::new();
    let describe = |node: &String, incident: &Incident| {
        format!(
            "task processes ran on {node} while it was {what}, from {} (counted from {}) to {}, over the {} window from {}: {}",
            secs(incident.start),
            secs(incident.since),
            secs(incident.last),
            secs(window),
            secs(incident.first_over.unwrap_or_default()),
            incident.evidence.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    for sample in &timeline.samples {
        if let Some(view) = &sample.view {
            last_view = Some(sample.at);
            for node in &view.nodes {
                if condition(view, &node.hostname) {
                    holds_since
                        .entry(node.hostname.clone())
                        .or_insert(sample.at);
                } else {
                    holds_since.remove(&node.hostname);
                }
            }
        }
        let fresh =
            last_view.is_some_and(|at| sample.at.saturating_sub(at) <= windows.view_max_age);
        let mut offending: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        if fresh {
            for (node, task) in &sample.live {
                if holds_since.contains_key(node)
                    && able_since(&timeline.faults, node, sample.at).is_some()
                {
                    offending.entry(node.clone()).or_default().push(task);
                }
            }
        }
        let nodes: BTreeSet<String> = offending.keys().cloned().collect();
        close_incidents(&mut open, &nodes, &mut violations, &describe);
        for (node, tasks) in offending {
            let able = able_since(&timeline.faults, &node, sample.at).unwrap_or_default();
            let since = holds_since[&node].max(able);
            let incident = open.entry(node).or_insert_with(|| Incident::new(since));
            incident.observe(
                sample.at,
                since,
                window,
                format!("tasks {}", tasks.join(" ")),
            );
        }
    }
    close_incidents(&mut open, &BTreeSet::new(), &mut violations, &describe);
    violations
}

/// Task processes still running on a node the managers report Down, beyond the Down
/// window after it became Down (or could hear them again).
pub fn down_nodes_running_tasks(timeline: &Timeline, windows: &Windows) -> Violations {
    processes_where(timeline, windows, windows.down, "Down", |view, node| {
        view.nodes
            .iter()
            .any(|state| state.hostname == node && state.status == "down")
    })
}

/// Task processes on a drained node, beyond the drain window after the managers
/// stopped wanting any task there (the drain completed).
pub fn drained_nodes_running_tasks(timeline: &Timeline, windows: &Windows) -> Violations {
    processes_where(
        timeline,
        windows,
        windows.drain,
        "drained (no task wanted there)",
        |view, node| {
            let drained = view
                .nodes
                .iter()
                .any(|state| state.hostname == node && state.availability == "drain");
            let wanted = view
                .tasks
                .iter()
                .any(|task| task.node.as_deref() == Some(node) && task.desired == "running");
            drained && !wanted
        },
    )
}

/// From the settle point to the end: every sample must have a live process in as many
/// slots of each service as its spec (in the last view) wants. One violation per
/// service and stretch of samples that fell short, with the slots that ran. A sample
/// with a live task no view names (started after the last view) is not judged: that
/// task may well be the missing slot's.
pub fn replicas_short_over_time(timeline: &Timeline) -> Violations {
    let Some(steady_from) = timeline.steady_from else {
        return Vec::new();
    };
    let slots = slot_map(timeline);
    let mut violations = Vec::new();
    let mut desired: Vec<(String, u64)> = Vec::new();
    // When the view that set `desired` began to be read: a view read before the settle
    // point may still want replicas a later, acknowledged scale-down removed.
    let mut desired_since = Duration::ZERO;
    let mut open: BTreeMap<String, Incident> = BTreeMap::new();
    let describe = |service: &String, incident: &Incident| {
        format!(
            "service {service} had fewer slots with a live process than desired from {} to {} (after the settle point {}): {}",
            secs(incident.start),
            secs(incident.last),
            secs(steady_from),
            incident.evidence.iter().cloned().collect::<Vec<_>>().join("; ")
        )
    };
    for sample in &timeline.samples {
        if let Some(view) = &sample.view {
            desired.clone_from(&view.services);
            desired_since = view.requested_at;
        }
        if sample.at < steady_from
            || desired_since < steady_from
            || sample
                .live
                .iter()
                .any(|(_, task)| !slots.contains_key(task.as_str()))
        {
            continue;
        }
        let mut running: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (_, task) in &sample.live {
            if let Some((service, slot)) = slots.get(task.as_str()) {
                running.entry(service).or_default().insert(slot);
            }
        }
        let mut short = BTreeMap::new();
        for (service, replicas) in &desired {
            let live = running.remove(service.as_str()).unwrap_or_default();
            if (live.len() as u64) < *replicas {
                short.insert(service.clone(), (live, *replicas));
            }
        }
        let services: BTreeSet<String> = short.keys().cloned().collect();
        close_incidents(&mut open, &services, &mut violations, &describe);
        for (service, (live, replicas)) in short {
            let incident = open
                .entry(service)
                .or_insert_with(|| Incident::new(sample.at));
            let evidence = format!("{} of {replicas} slots ran: {live:?}", live.len());
            // Every short sample is a violation: there is no window.
            incident.observe(sample.at, incident.since, Duration::ZERO, evidence);
            incident.first_over.get_or_insert(sample.at);
        }
    }
    close_incidents(&mut open, &BTreeSet::new(), &mut violations, &describe);
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(at: u64) -> Duration {
        Duration::from_millis(at)
    }

    /// Windows of a second, a view judged for two.
    fn windows() -> Windows {
        Windows {
            hand_over: ms(1000),
            down: ms(1000),
            drain: ms(1000),
            view_max_age: ms(2000),
        }
    }

    /// A view: nodes as `(hostname, status, availability)`, services as
    /// `(name, replicas)`, tasks as `(id, slot, node, desired state)`.
    fn view(
        nodes: &[(&str, &str, &str)],
        services: &[(&str, u64)],
        tasks: &[(&str, &str, &str, &str)],
    ) -> View {
        View {
            asked: "m".into(),
            requested_at: Duration::ZERO,
            nodes: nodes
                .iter()
                .map(|(hostname, status, availability)| NodeState {
                    hostname: hostname.to_string(),
                    status: status.to_string(),
                    availability: availability.to_string(),
                })
                .collect(),
            services: services
                .iter()
                .map(|(name, replicas)| (name.to_string(), *replicas))
                .collect(),
            tasks: tasks
                .iter()
                .map(|(id, slot, node, desired)| TaskSlot {
                    id: id.to_string(),
                    service: slot.split('.').next().unwrap_or_default().to_string(),
                    slot: slot.to_string(),
                    node: Some(node.to_string()),
                    desired: desired.to_string(),
                })
                .collect(),
        }
    }

    /// Samples every 250 ms from `from` to `to` (ms) with the same live processes and,
    /// on every other one, `view`.
    fn samples(from: u64, to: u64, live: &[(&str, &str)], view: Option<&View>) -> Vec<Sample> {
        (from..=to)
            .step_by(250)
            .enumerate()
            .map(|(index, at)| Sample {
                at: ms(at),
                live: live
                    .iter()
                    .map(|(node, task)| (node.to_string(), task.to_string()))
                    .collect(),
                // Each view read just before its sample.
                view: view.filter(|_| index % 2 == 0).cloned().map(|mut view| {
                    view.requested_at = ms(at.saturating_sub(100));
                    view
                }),
            })
            .collect()
    }

    fn fault(node: &str, from: u64, to: Option<u64>) -> Fault {
        Fault {
            node: node.into(),
            what: "cut off".into(),
            from: ms(from),
            to: to.map(ms),
        }
    }

    fn timeline(parts: Vec<Vec<Sample>>, faults: Vec<Fault>) -> Timeline {
        Timeline {
            samples: parts.into_iter().flatten().collect(),
            faults,
            steady_from: None,
        }
    }

    /// web.1 ran by t1 on a and t2 on b (a move, or a replacement of b's copy).
    fn moved() -> View {
        view(
            &[("a", "ready", "active"), ("b", "ready", "active")],
            &[("web", 1)],
            &[
                ("t1", "web.1", "a", "shutdown"),
                ("t2", "web.1", "b", "running"),
            ],
        )
    }

    #[test]
    fn able_since_starts_again_when_a_fault_ends() {
        let faults = vec![fault("a", 1000, Some(2000)), fault("a", 3000, None)];
        assert_eq!(able_since(&faults, "a", ms(500)), Some(Duration::ZERO));
        assert_eq!(able_since(&faults, "a", ms(1500)), None);
        assert_eq!(able_since(&faults, "a", ms(2500)), Some(ms(2000)));
        assert_eq!(able_since(&faults, "a", ms(3500)), None);
        assert_eq!(able_since(&faults, "b", ms(3500)), Some(Duration::ZERO));
    }

    #[test]
    fn slots_running_twice_too_long_are_caught() {
        let both = [("a", "t1"), ("b", "t2")];
        let new_only = [("b", "t2")];
        let cases: Vec<(&str, Timeline, usize)> = vec![
            (
                "a start-first move: both copies for half a second",
                timeline(
                    vec![
                        samples(0, 500, &both, Some(&moved())),
                        samples(750, 3000, &new_only, Some(&moved())),
                    ],
                    vec![],
                ),
                0,
            ),
            (
                "both copies for two seconds",
                timeline(
                    vec![
                        samples(0, 2000, &both, Some(&moved())),
                        samples(2250, 3000, &new_only, Some(&moved())),
                    ],
                    vec![],
                ),
                1,
            ),
            (
                "both copies until the end",
                timeline(vec![samples(0, 3000, &both, Some(&moved()))], vec![]),
                1,
            ),
            (
                "the old copy on a node cut off for 3 s, stopped soon after it came back",
                timeline(
                    vec![
                        samples(0, 3500, &both, Some(&moved())),
                        samples(3750, 5000, &new_only, Some(&moved())),
                    ],
                    vec![fault("a", 0, Some(3000))],
                ),
                0,
            ),
            (
                "the old copy on a node cut off, still running 2 s after it came back",
                timeline(
                    vec![
                        samples(0, 5000, &both, Some(&moved())),
                        samples(5250, 6000, &new_only, Some(&moved())),
                    ],
                    vec![fault("a", 0, Some(3000))],
                ),
                1,
            ),
            (
                "copies of tasks no view names are not judged",
                timeline(vec![samples(0, 3000, &both, None)], vec![]),
                0,
            ),
        ];
        for (situation, timeline, expected) in cases {
            let found = slots_twice_over_time(&timeline, &windows());
            assert_eq!(found.len(), expected, "{situation}: {found:#?}");
            if expected > 0 {
                assert!(
                    found[0].contains("slot web.1") && found[0].contains("task t1 on a"),
                    "{situation}: the evidence names the slot and the copies: {found:?}"
                );
            }
        }
    }

    #[test]
    fn processes_on_down_nodes_beyond_the_window_are_caught() {
        let down = view(
            &[("a", "ready", "active"), ("b", "down", "active")],
            &[("web", 1)],
            &[("t1", "web.1", "b", "shutdown")],
        );
        let ready = view(&[("b", "ready", "active")], &[], &[]);
        let on_b = [("b", "t1")];
        let cases: Vec<(&str, Timeline, usize)> = vec![
            (
                "a task runs on a Down node that can hear the managers for 3 s",
                timeline(vec![samples(0, 3000, &on_b, Some(&down))], vec![]),
                1,
            ),
            (
                "the same while the node is cut off: it cannot know",
                timeline(
                    vec![samples(0, 3000, &on_b, Some(&down))],
                    vec![fault("b", 0, None)],
                ),
                0,
            ),
            (
                "the node comes back Ready at once after its fault",
                timeline(
                    vec![
                        samples(0, 3000, &on_b, Some(&down)),
                        samples(3250, 5000, &on_b, Some(&ready)),
                    ],
                    vec![fault("b", 0, Some(3000))],
                ),
                0,
            ),
            (
                "the task stops within the window",
                timeline(
                    vec![
                        samples(0, 500, &on_b, Some(&down)),
                        samples(750, 3000, &[], Some(&down)),
                    ],
                    vec![],
                ),
                0,
            ),
            (
                "a view too old to judge by",
                timeline(
                    vec![
                        samples(0, 0, &[], Some(&down)),
                        samples(2500, 4000, &on_b, None),
                    ],
                    vec![],
                ),
                0,
            ),
        ];
        for (situation, timeline, expected) in cases {
            let found = down_nodes_running_tasks(&timeline, &windows());
            assert_eq!(found.len(), expected, "{situation}: {found:#?}");
            if expected > 0 {
                assert!(
                    found[0].contains("on b while it was Down") && found[0].contains("t1"),
                    "{situation}: {found:?}"
                );
            }
        }
    }

    #[test]
    fn processes_on_drained_nodes_beyond_the_window_are_caught() {
        let drained = |desired: &str| {
            view(
                &[("a", "ready", "active"), ("b", "ready", "drain")],
                &[("web", 1)],
                &[
                    ("t1", "web.1", "b", desired),
                    ("t2", "web.1", "a", "running"),
                ],
            )
        };
        let on_b = [("b", "t1"), ("a", "t2")];
        let cases: Vec<(&str, Timeline, usize)> = vec![
            (
                "a task still runs on b 3 s after the drain completed",
                timeline(
                    vec![samples(0, 3000, &on_b, Some(&drained("shutdown")))],
                    vec![],
                ),
                1,
            ),
            (
                "the managers still want it there: the drain has not completed",
                timeline(
                    vec![samples(0, 3000, &on_b, Some(&drained("running")))],
                    vec![],
                ),
                0,
            ),
            (
                "it stops within the window",
                timeline(
                    vec![
                        samples(0, 750, &on_b, Some(&drained("shutdown"))),
                        samples(1000, 3000, &[("a", "t2")], Some(&drained("shutdown"))),
                    ],
                    vec![],
                ),
                0,
            ),
        ];
        for (situation, timeline, expected) in cases {
            let found = drained_nodes_running_tasks(&timeline, &windows());
            assert_eq!(found.len(), expected, "{situation}: {found:#?}");
            if expected > 0 {
                assert!(
                    found[0].contains("on b while it was drained"),
                    "{situation}: {found:?}"
                );
            }
        }
    }

    #[test]
    fn fewer_live_slots_than_desired_after_the_settle_point_are_caught() {
        let web = view(
            &[("a", "ready", "active")],
            &[("web", 2)],
            &[
                ("t1", "web.1", "a", "running"),
                ("t2", "web.2", "a", "running"),
            ],
        );
        let full = [("a", "t1"), ("a", "t2")];
        let short = [("a", "t1")];
        let steady = |parts: Vec<Vec<Sample>>, from: Option<u64>| Timeline {
            steady_from: from.map(ms),
            ..timeline(parts, vec![])
        };
        let cases: Vec<(&str, Timeline, usize)> = vec![
            (
                "every slot live from the settle point on",
                steady(
                    vec![
                        samples(0, 750, &short, Some(&web)),
                        samples(1000, 3000, &full, Some(&web)),
                    ],
                    Some(1000),
                ),
                0,
            ),
            (
                "one sample short after the settle point",
                steady(
                    vec![
                        samples(0, 1750, &full, Some(&web)),
                        samples(2000, 2000, &short, None),
                        samples(2250, 3000, &full, Some(&web)),
                    ],
                    Some(1000),
                ),
                1,
            ),
            (
                "two separate dips",
                steady(
                    vec![
                        samples(1000, 1250, &short, Some(&web)),
                        samples(1500, 2000, &full, Some(&web)),
                        samples(2250, 2500, &short, Some(&web)),
                    ],
                    Some(800),
                ),
                2,
            ),
            (
                "a view read before the settle point judges nothing after it",
                steady(
                    vec![
                        samples(0, 1000, &full, Some(&web)),
                        samples(1250, 1500, &short, None),
                    ],
                    Some(1100),
                ),
                0,
            ),
            (
                "short until the end",
                steady(
                    vec![
                        samples(0, 1000, &full, Some(&web)),
                        samples(1250, 3000, &short, Some(&web)),
                    ],
                    Some(0),
                ),
                1,
            ),
            (
                "a live task no view names may be the missing slot's",
                steady(
                    vec![
                        samples(0, 1000, &full, Some(&web)),
                        samples(1250, 1500, &[("a", "t1"), ("a", "t9")], None),
                        samples(1750, 2000, &full, Some(&web)),
                    ],
                    Some(0),
                ),
                0,
            ),
            (
                "no settle point: nothing is judged",
                steady(vec![samples(0, 3000, &short, Some(&web))], None),
                0,
            ),
        ];
        for (situation, timeline, expected) in cases {
            let found = replicas_short_over_time(&timeline);
            assert_eq!(found.len(), expected, "{situation}: {found:#?}");
            if expected > 0 {
                assert!(
                    found[0].contains("service web") && found[0].contains("1 of 2"),
                    "{situation}: {found:?}"
                );
            }
        }
    }

    #[test]
    fn the_windows_follow_the_heartbeat_and_the_stop_grace() {
        let windows = Windows::for_cluster(Duration::from_secs(1), 3);
        assert_eq!(windows.hand_over, ms(2000 + 10_000 + 1500));
        assert_eq!(windows.down, ms(3000 + 2000 + 10_000 + 1500));
        assert_eq!(windows.drain, windows.hand_over);
        assert_eq!(windows.view_max_age, ms(4500));
    }
}
