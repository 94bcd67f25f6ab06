//! One reconciliation pass: slots of each service, the restart policy, moves, history.
//!
//! Words: a task is *live* when its desired state is running and it has not ended; a
//! slot's *survivors* are its live tasks on nodes that can keep them. A slot is *in
//! flight* while a move runs in it (two survivors, or a moved task not yet running).
//! A task is *settled* when nobody will ever report on it again, so its record may go.
//!
//! This module emits actions and nothing else; see `Action` for how they are applied.

use std::collections::{BTreeMap, HashSet};

use hoist_scheduler::{check_node_eligible, ClusterView};
use hoist_types::service::{Rebalance, RestartCondition, Service, ServiceMode, ServiceSpec};
use hoist_types::task::{DesiredState, SlotKey, Task, TaskOrigin, TaskState, TaskStatus};
use hoist_types::{Availability, Node, NodeId, NodeStatus, ServiceId, TaskId};

use crate::{Action, ReconcileInput, Reconciliation, MAX_HISTORY_PER_SLOT, MOVE_BACKOFF_MS};

pub(crate) struct Pass<'a, F> {
    now_ms: u64,
    new_task_id: F,
    services: Vec<&'a Service>,
    tasks: Vec<&'a Task>,
    nodes: BTreeMap<NodeId, &'a Node>,
    /// Used to check that a move's target node has room, and updated with each move.
    view: ClusterView<'a>,
    out: Reconciliation,
    /// Tasks already given an action this pass, so history pruning leaves them alone.
    touched: HashSet<TaskId>,
    history_per_slot: usize,
    max_replicas: u64,
    /// Fresh slots this pass may still fill.
    new_slots_left: usize,
}

/// What a slot looked like after its own reconciliation, for the moves that follow.
struct SlotOutcome<'a> {
    key: SlotKey,
    /// The one task holding the slot, when exactly one does.
    survivor: Option<&'a Task>,
    /// A move runs in this slot; no other may start in the service.
    in_flight: bool,
    /// New tasks may be created in this slot (for a global slot: the node takes tasks).
    can_create: bool,
}

/// One move: a new task in `key`'s slot that takes over from `old`.
struct Move<'a> {
    key: SlotKey,
    old: &'a Task,
    origin: TaskOrigin,
    attempt: u64,
    /// Where the new task must run, or `None` to let the scheduler choose.
    node_id: Option<NodeId>,
    /// Stop `old` now, with this reason, rather than once the new task runs.
    stop_first: Option<String>,
    message: String,
}

impl<'a, F: FnMut() -> TaskId> Pass<'a, F> {
    pub(crate) fn new(input: &ReconcileInput<'a>, now_ms: u64, new_task_id: F) -> Self {
        let mut services = input.services.clone();
        services.sort_by_key(|service| service.id);
        Pass {
            now_ms,
            new_task_id,
            view: ClusterView::new(
                input.nodes.iter().copied(),
                services.iter().copied(),
                input.tasks.iter().copied(),
            ),
            services,
            tasks: input.tasks.clone(),
            nodes: input.nodes.iter().map(|node| (node.id, *node)).collect(),
            out: Reconciliation::default(),
            touched: HashSet::new(),
            history_per_slot: input.history_per_slot,
            max_replicas: input.max_replicas,
            new_slots_left: input.max_new_tasks,
        }
    }

    pub(crate) fn run(mut self) -> Reconciliation {
        let mut by_service: BTreeMap<ServiceId, Vec<&'a Task>> = BTreeMap::new();
        for task in &self.tasks {
            by_service.entry(task.service_id).or_default().push(task);
        }
        for tasks in by_service.values_mut() {
            // Oldest first within each service; ties (same millisecond) by id.
            tasks.sort_by_key(|task| (task.created_at_ms, task.id));
        }
        for service in self.services.clone() {
            let tasks = by_service.remove(&service.id).unwrap_or_default();
            self.reconcile_service(service, tasks);
        }
        // What is left belongs to removed services.
        for tasks in by_service.into_values() {
            for task in tasks {
                self.remove_orphan(task);
            }
        }
        self.out
    }

    // ----------------------------------------------------------------------------------
    // Services and slots

    fn reconcile_service(&mut self, service: &'a Service, tasks: Vec<&'a Task>) {
        let last_failure = tasks
            .iter()
            .filter(|task| matches!(task.status.state, TaskState::Failed | TaskState::Rejected))
            .map(|task| task.status.timestamp_ms)
            .max();
        let mut slots: BTreeMap<SlotKey, Vec<&'a Task>> = BTreeMap::new();
        for task in tasks {
            match task.slot_key() {
                Some(key) => slots.entry(key).or_default().push(task),
                // A global task without a node cannot be placed or counted.
                None => self.retire(&[task], true, "the task has no slot"),
            }
        }
        let outcomes = match service.spec.mode {
            ServiceMode::Replicated { replicas } => {
                match self.reconcile_replicated(service, &slots, replicas) {
                    Some(outcomes) => outcomes,
                    // Moves wait until every slot exists.
                    None => return,
                }
            }
            ServiceMode::Global => self.reconcile_global(service, &slots, false),
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => {
                self.reconcile_replicated_job(service, &slots, max_concurrent, total_completions);
                return;
            }
            ServiceMode::GlobalJob => {
                self.reconcile_global(service, &slots, true);
                return;
            }
        };
        self.start_move(service, &outcomes, last_failure);
    }

    /// A replicated service's slots `1..=replicas`; `None` when empty slots were left for
    /// a later pass (its budget ran out), so moves wait.
    fn reconcile_replicated(
        &mut self,
        service: &'a Service,
        slots: &BTreeMap<SlotKey, Vec<&'a Task>>,
        replicas: u64,
    ) -> Option<Vec<SlotOutcome<'a>>> {
        let mut outcomes = Vec::new();
        for (key, tasks) in slots {
            match key {
                SlotKey::Replica(number) if (1..=replicas).contains(number) => {}
                SlotKey::Replica(_) => self.retire(tasks, true, "scaled down"),
                SlotKey::Node(_) => self.retire(tasks, true, "the service is not global"),
            }
        }
        // Slots that have tasks are always reconciled (they are bounded by the
        // task table); empty ones only while this pass's budget lasts, and never
        // above the cluster's maximum. The loop walks the slots that exist
        // plus at most the budget of empty ones, never the whole 1..=replicas.
        let wanted = replicas.min(self.max_replicas);
        let mut deferred = false;
        let mut number = 0;
        while number < wanted {
            number += 1;
            let key = SlotKey::Replica(number);
            let tasks = slots.get(&key).map_or(&[][..], Vec::as_slice);
            if tasks.is_empty() {
                if self.new_slots_left == 0 {
                    deferred = true;
                    // Jump to the next slot that has tasks, if any.
                    match slots
                        .range(SlotKey::Replica(number + 1)..=SlotKey::Replica(wanted))
                        .next()
                    {
                        Some((SlotKey::Replica(next), _)) => {
                            number = next - 1;
                            continue;
                        }
                        _ => break,
                    }
                }
                self.new_slots_left -= 1;
            }
            outcomes.push(self.reconcile_slot(service, key, tasks, true));
        }
        if deferred {
            // Moves wait until every slot exists: a half-filled service is not
            // the spread to rebalance, and the next pass comes right after this
            // change is applied.
            return None;
        }
        Some(outcomes)
    }

    /// A global service (or job): a slot per eligible node. For a job, a node whose task
    /// completed is done: nothing more runs there.
    fn reconcile_global(
        &mut self,
        service: &'a Service,
        slots: &BTreeMap<SlotKey, Vec<&'a Task>>,
        job: bool,
    ) -> Vec<SlotOutcome<'a>> {
        let mut outcomes = Vec::new();
        for (key, tasks) in slots {
            let node_id = match key {
                SlotKey::Node(node_id) => *node_id,
                SlotKey::Replica(_) => {
                    self.retire(tasks, true, "the service is global");
                    continue;
                }
            };
            match self.nodes.get(&node_id) {
                None => self.retire(tasks, true, &format!("node {node_id} was removed")),
                Some(node) => {
                    if let Some(problem) = self.node_problem(node, &service.spec) {
                        self.retire(tasks, false, &problem);
                    }
                }
            }
        }
        let nodes: Vec<&'a Node> = self.nodes.values().copied().collect();
        for node in nodes {
            if self.node_problem(node, &service.spec).is_some() {
                continue;
            }
            let key = SlotKey::Node(node.id);
            let tasks = slots.get(&key).map_or(&[][..], Vec::as_slice);
            if job && tasks.iter().any(|task| task.succeeded()) {
                self.prune(tasks, history_len(&service.spec, self.history_per_slot));
                continue;
            }
            // A node that keeps its task may still take no new one (paused, or
            // not heard from since this leader took over).
            let can_create = check_node_eligible(node, &service.spec).is_ok();
            if tasks.is_empty() && !can_create {
                continue;
            }
            outcomes.push(self.reconcile_slot(service, key, tasks, can_create));
        }
        outcomes
    }

    /// A replicated job: slots `1..=total_completions`, each done once a task of it
    /// completed; at most `max_concurrent` slots have a task at a time, the lowest
    /// numbers first. A completed task is never restarted; a failed one is, as its
    /// restart policy says.
    fn reconcile_replicated_job(
        &mut self,
        service: &'a Service,
        slots: &BTreeMap<SlotKey, Vec<&'a Task>>,
        max_concurrent: u64,
        total_completions: u64,
    ) {
        for (key, tasks) in slots {
            match key {
                SlotKey::Replica(number) if (1..=total_completions).contains(number) => {}
                SlotKey::Replica(_) => self.retire(tasks, true, "scaled down"),
                SlotKey::Node(_) => self.retire(tasks, true, "the service is not global"),
            }
        }
        let done = |tasks: &[&Task]| tasks.iter().any(|task| task.succeeded());
        let live = |tasks: &[&Task]| tasks.iter().any(|task| task.is_live());
        let running = slots
            .values()
            .filter(|tasks| !done(tasks) && live(tasks))
            .count() as u64;
        let mut may_start = max_concurrent.max(1).saturating_sub(running);
        for number in 1..=total_completions.min(self.max_replicas) {
            let key = SlotKey::Replica(number);
            let tasks = slots.get(&key).map_or(&[][..], Vec::as_slice);
            if done(tasks) {
                self.prune(tasks, history_len(&service.spec, self.history_per_slot));
                continue;
            }
            if live(tasks) {
                self.reconcile_slot(service, key, tasks, true);
                continue;
            }
            if may_start == 0 || (tasks.is_empty() && self.new_slots_left == 0) {
                continue;
            }
            if tasks.is_empty() {
                self.new_slots_left -= 1;
            }
            may_start -= 1;
            self.reconcile_slot(service, key, tasks, true);
        }
    }

    /// Shuts down every task of a slot that is no longer wanted, and forgets the settled
    /// ones: all of them if the slot is gone for good, the oldest beyond the history
    /// otherwise.
    fn retire(&mut self, tasks: &[&'a Task], gone_for_good: bool, reason: &str) {
        for task in tasks {
            if task.desired_state == DesiredState::Running {
                self.set_desired(task, DesiredState::Shutdown, reason.to_string());
            }
        }
        if gone_for_good {
            for task in tasks {
                if task.desired_state != DesiredState::Running && self.is_settled(task) {
                    self.delete(task, "its slot no longer exists");
                }
            }
        } else {
            self.prune(tasks, self.history_per_slot);
        }
    }

    /// A wanted slot: replace tasks on lost nodes, fill it if empty (restart policy),
    /// settle a move in flight, and prune its history.
    fn reconcile_slot(
        &mut self,
        service: &'a Service,
        key: SlotKey,
        tasks: &[&'a Task],
        can_create: bool,
    ) -> SlotOutcome<'a> {
        let bound_node = match key {
            SlotKey::Node(node_id) => Some(node_id),
            SlotKey::Replica(_) => None,
        };
        let mut survivors: Vec<&'a Task> = Vec::new();
        let mut lost: Vec<(&'a Task, String)> = Vec::new();
        for &task in tasks.iter().filter(|task| task.is_live()) {
            // A global slot's node was checked by the caller; a replicated task's node
            // is checked here.
            let problem = match (bound_node, task.node_id) {
                (None, Some(node_id)) => match self.nodes.get(&node_id) {
                    None => Some(format!("node {node_id} was removed")),
                    Some(node) => self.node_lost(node),
                },
                _ => None,
            };
            match problem {
                Some(problem) => lost.push((task, problem)),
                None => survivors.push(task),
            }
        }
        for (task, problem) in &lost {
            self.set_desired(task, DesiredState::Shutdown, problem.clone());
        }
        let mut outcome = SlotOutcome {
            key,
            survivor: None,
            in_flight: false,
            can_create,
        };
        match survivors.as_slice() {
            [] if !can_create => {}
            [] => match lost.last() {
                // The replacement starts now: it does not wait for the lost task to stop,
                // which may never be observed.
                Some((previous, problem)) => {
                    let message = format!("replaces {}: {problem}", previous.id);
                    self.create(
                        service,
                        key,
                        TaskOrigin::Replacement,
                        previous.attempt,
                        bound_node,
                        message,
                    );
                }
                None => self.fill_empty_slot(service, key, tasks, bound_node),
            },
            [only] => {
                outcome.survivor = Some(only);
                // A moved task alone in its slot (its predecessor was stopped first, or
                // lost) is still a move until it runs.
                outcome.in_flight =
                    matches!(only.origin, TaskOrigin::Rebalance | TaskOrigin::Update)
                        && only.status.state != TaskState::Running;
            }
            [older @ .., newest] => {
                outcome.in_flight = true;
                if newest.status.state == TaskState::Running {
                    for task in older {
                        self.set_desired(
                            task,
                            DesiredState::Shutdown,
                            format!("replaced by {}", newest.id),
                        );
                    }
                } else if matches!(newest.origin, TaskOrigin::Rebalance | TaskOrigin::Update)
                    && bound_node.is_none()
                    && newest.node_id.is_some()
                    && newest.status.state.is_unassigned()
                    && newest.pending_reason.is_some()
                {
                    // The node chosen for a move stopped fitting between the decision and
                    // the placement: give the move up; a later pass, seeing the node's
                    // load, chooses again. (An unbound move waits instead: the scheduler
                    // may find a node later, and retrying it would only churn.)
                    let reason = newest.pending_reason.as_deref().unwrap_or_default();
                    self.set_desired(
                        newest,
                        DesiredState::Shutdown,
                        format!("move given up: {reason}"),
                    );
                }
            }
        }
        // Ended tasks still desired running, in a slot someone else now holds (a move
        // that failed): stop asking for them, so the worker cleans them up.
        if let Some(holder) = survivors.last() {
            for task in tasks {
                if task.desired_state == DesiredState::Running && task.status.state.is_terminal() {
                    self.set_desired(
                        task,
                        DesiredState::Shutdown,
                        format!("slot {key} is held by {}", holder.id),
                    );
                }
            }
        }
        self.prune(tasks, history_len(&service.spec, self.history_per_slot));
        outcome
    }

    /// No live task in the slot: create one, or apply the restart policy to the last.
    fn fill_empty_slot(
        &mut self,
        service: &'a Service,
        key: SlotKey,
        tasks: &[&'a Task],
        bound_node: Option<NodeId>,
    ) {
        let Some(&last) = tasks.last() else {
            self.create(
                service,
                key,
                TaskOrigin::Created,
                0,
                bound_node,
                "created".into(),
            );
            return;
        };
        if last.desired_state != DesiredState::Running {
            // The managers stopped the last task (scale down then up, a node lost while
            // its replacement was never created): not a restart, no delay.
            let message = format!("slot {key} had no task");
            self.create(
                service,
                key,
                TaskOrigin::Created,
                last.attempt,
                bound_node,
                message,
            );
            return;
        }
        // The last task ended by itself.
        let policy = service.spec.restart_policy;
        let wanted = match policy.condition {
            RestartCondition::Any => true,
            RestartCondition::OnFailure => !last.succeeded(),
            RestartCondition::None => false,
        };
        if !wanted {
            return;
        }
        if let Some(max_attempts) = policy.max_attempts {
            match policy.window_ms {
                None if last.attempt >= max_attempts => return,
                None => {}
                Some(window_ms) => {
                    let window_start = self.now_ms.saturating_sub(window_ms);
                    let recent: Vec<u64> = tasks
                        .iter()
                        .filter(|task| {
                            task.origin == TaskOrigin::Restart && task.created_at_ms > window_start
                        })
                        .map(|task| task.created_at_ms)
                        .collect();
                    if recent.len() as u64 >= max_attempts {
                        // The oldest counted restart leaves the window then.
                        if let Some(oldest) = recent.iter().min() {
                            self.wake_at(oldest.saturating_add(window_ms));
                        }
                        return;
                    }
                }
            }
        }
        let ready_at = last.status.timestamp_ms.saturating_add(policy.delay_ms);
        if self.now_ms < ready_at {
            self.wake_at(ready_at);
            return;
        }
        self.set_desired(last, DesiredState::Shutdown, "restarted".to_string());
        let message = format!("restart {} after {}", last.attempt + 1, describe_end(last));
        self.create(
            service,
            key,
            TaskOrigin::Restart,
            last.attempt + 1,
            bound_node,
            message,
        );
    }

    // ----------------------------------------------------------------------------------
    // Moves: update, misplaced tasks, rebalance

    /// Starts at most one move for the service, and only when none is in flight and no
    /// task of the service failed recently (a spec that cannot run must not churn).
    fn start_move(
        &mut self,
        service: &'a Service,
        outcomes: &[SlotOutcome<'a>],
        last_failure: Option<u64>,
    ) {
        if outcomes.iter().any(|outcome| outcome.in_flight) {
            return;
        }
        let Some(planned) = self.plan_move(service, outcomes) else {
            return;
        };
        let backoff = service.spec.restart_policy.delay_ms.max(MOVE_BACKOFF_MS);
        if let Some(failed_at) = last_failure {
            let quiet_at = failed_at.saturating_add(backoff);
            if self.now_ms < quiet_at {
                self.wake_at(quiet_at);
                return;
            }
        }
        if let Some(reason) = planned.stop_first {
            self.set_desired(planned.old, DesiredState::Shutdown, reason);
        }
        if let Some(node_id) = planned.node_id {
            self.view.record(node_id, service.id, &service.spec);
        }
        self.create(
            service,
            planned.key,
            planned.origin,
            planned.attempt,
            planned.node_id,
            planned.message,
        );
    }

    /// The move to make, by priority: a rolling update, then a task on a node that no
    /// longer matches the constraints, then a rebalance.
    fn plan_move(&self, service: &'a Service, outcomes: &[SlotOutcome<'a>]) -> Option<Move<'a>> {
        let spec = &service.spec;
        // 1. Rolling update: a task made from an older spec.
        let outdated = outcomes.iter().find_map(|outcome| match outcome.survivor {
            Some(task) if outcome.can_create && !task.spec.runs_like(spec) => {
                Some((outcome.key, task))
            }
            _ => None,
        });
        if let Some((key, old)) = outdated {
            // Two tasks of a host-mode service cannot overlap on one node, and a task
            // not yet running serves nobody: stop it first. Otherwise start the new task
            // first and stop the old one once the new one runs.
            let stop_first = spec.has_host_ports() || old.status.state != TaskState::Running;
            let node_id = match key {
                SlotKey::Node(node_id) => Some(node_id),
                // Beside the old task when its node has room for both, so an update does
                // not reshuffle the spread (and call for rebalance moves after it).
                SlotKey::Replica(_) if !stop_first => old.node_id.filter(|&node_id| {
                    self.nodes
                        .get(&node_id)
                        .is_some_and(|node| check_node_eligible(node, spec).is_ok())
                        && self.view.check_capacity(node_id, service, spec).is_ok()
                }),
                SlotKey::Replica(_) => None,
            };
            return Some(Move {
                key,
                old,
                origin: TaskOrigin::Update,
                attempt: 0,
                node_id,
                stop_first: stop_first.then(|| format!("updating to version {}", service.version)),
                message: format!("update to version {}, replaces {}", service.version, old.id),
            });
        }
        if let ServiceMode::Global = spec.mode {
            return None;
        }
        // 2. A replicated task on a node that no longer matches the constraints: start a
        // replacement (the scheduler honours the constraints), then stop it.
        let misplaced = outcomes.iter().find_map(|outcome| {
            let task = outcome.survivor?;
            let node = self.nodes.get(&task.node_id?)?;
            let failed = spec.constraints.iter().find(|c| !c.matches(node))?;
            Some((
                outcome.key,
                task,
                format!("node {} no longer satisfies {failed}", node.hostname),
            ))
        });
        if let Some((key, old, problem)) = misplaced {
            return Some(Move {
                key,
                old,
                origin: TaskOrigin::Rebalance,
                attempt: old.attempt,
                node_id: None,
                stop_first: None,
                message: format!("replaces {}: {problem}", old.id),
            });
        }
        // 3. Rebalance, only from a steady state: every slot held by one running task.
        let steady = outcomes.iter().all(|outcome| {
            outcome
                .survivor
                .is_some_and(|task| task.status.state == TaskState::Running)
        });
        if !steady || spec.rebalance != Rebalance::Auto || !spec.placement_prefs.is_empty() {
            return None;
        }
        let running: Vec<(SlotKey, &'a Task)> = outcomes
            .iter()
            .filter_map(|outcome| outcome.survivor.map(|task| (outcome.key, task)))
            .collect();
        self.plan_rebalance(service, &running)
    }

    /// Moves one task from the most loaded eligible node to the least loaded one, when
    /// their counts of the service's running tasks differ by more than one. Nodes that
    /// may not take new tasks (paused, not ready, unmatched) are left out of both ends:
    /// a paused node keeps its tasks.
    fn plan_rebalance(
        &self,
        service: &'a Service,
        running: &[(SlotKey, &'a Task)],
    ) -> Option<Move<'a>> {
        let spec = &service.spec;
        let mut per_node: BTreeMap<NodeId, Vec<(SlotKey, &'a Task)>> = self
            .nodes
            .values()
            .filter(|node| check_node_eligible(node, spec).is_ok())
            .map(|node| (node.id, Vec::new()))
            .collect();
        if per_node.len() < 2 {
            return None;
        }
        for &(key, task) in running {
            if let Some(tasks) = task.node_id.and_then(|node_id| per_node.get_mut(&node_id)) {
                tasks.push((key, task));
            }
        }
        // Most loaded first; ties go to the lowest node id (reversed BTreeMap order, and
        // max_by_key keeps the last maximum).
        let (&source, source_tasks) = per_node.iter().rev().max_by_key(|(_, tasks)| tasks.len())?;
        let max_count = source_tasks.len();
        let min_count = per_node.values().map(Vec::len).min()?;
        if max_count <= min_count + 1 {
            return None;
        }
        let mut targets: Vec<(usize, u64, NodeId)> = per_node
            .iter()
            .filter(|(_, tasks)| tasks.len() + 1 < max_count)
            .map(|(&node_id, tasks)| {
                let n_tasks = self.view.load(node_id).map_or(0, |load| load.n_tasks);
                (tasks.len(), n_tasks, node_id)
            })
            .collect();
        targets.sort();
        let target = targets
            .into_iter()
            .map(|(_, _, node_id)| node_id)
            .find(|&node_id| self.view.check_capacity(node_id, service, spec).is_ok())?;
        // The highest slot on the source moves; any would do, this one is predictable.
        let &(key, moved) = source_tasks.iter().max_by_key(|(key, _)| *key)?;
        let name = |node_id: NodeId| {
            self.nodes
                .get(&node_id)
                .map_or_else(|| node_id.to_string(), |node| node.hostname.clone())
        };
        Some(Move {
            key,
            old: moved,
            origin: TaskOrigin::Rebalance,
            attempt: moved.attempt,
            node_id: Some(target),
            stop_first: None,
            message: format!(
                "rebalance: moves {} from {} to {}",
                moved.id,
                name(source),
                name(target)
            ),
        })
    }

    // ----------------------------------------------------------------------------------
    // Removed services and history

    /// A task of a removed service: ask for removal, then forget it once settled.
    fn remove_orphan(&mut self, task: &'a Task) {
        if self.is_settled(task) {
            self.delete(task, "its service was removed");
        } else if task.desired_state < DesiredState::Remove {
            self.set_desired(task, DesiredState::Remove, "its service was removed".into());
        }
    }

    /// Deletes the oldest settled tasks of a slot beyond the `keep` newest.
    fn prune(&mut self, tasks: &[&'a Task], keep: usize) {
        let settled: Vec<&'a Task> = tasks
            .iter()
            .copied()
            .filter(|task| self.is_settled(task) && !self.touched.contains(&task.id))
            .collect();
        let excess = settled.len().saturating_sub(keep);
        for task in &settled[..excess] {
            self.delete(task, "history limit");
        }
    }

    /// Nobody will report on this task again: it ended, or it was stopped before any
    /// node had it, or its node left the cluster.
    fn is_settled(&self, task: &Task) -> bool {
        if task.status.state.is_terminal() {
            return true;
        }
        task.desired_state != DesiredState::Running
            && (task.status.state.is_unassigned()
                || task
                    .node_id
                    .is_none_or(|node_id| !self.nodes.contains_key(&node_id)))
    }

    /// Why a node cannot keep a task of this spec: lost (see `node_lost`) or no longer
    /// matching the constraints. `None` when it can keep it.
    fn node_problem(&self, node: &Node, spec: &ServiceSpec) -> Option<String> {
        self.node_lost(node).or_else(|| {
            spec.constraints
                .iter()
                .find(|c| !c.matches(node))
                .map(|failed| format!("node {} no longer satisfies {failed}", node.hostname))
        })
    }

    /// Down or drained: its tasks must be replaced elsewhere. A node in status Unknown
    /// (not heard from since this leader took over) keeps its tasks: a leader change
    /// must not move the whole cluster.
    fn node_lost(&self, node: &Node) -> Option<String> {
        if node.status == NodeStatus::Down {
            Some(format!("node {} is down", node.hostname))
        } else if node.availability == Availability::Drain {
            Some(format!("node {} is drained", node.hostname))
        } else {
            None
        }
    }

    // ----------------------------------------------------------------------------------
    // Emitting actions

    fn create(
        &mut self,
        service: &'a Service,
        key: SlotKey,
        origin: TaskOrigin,
        attempt: u64,
        node_id: Option<NodeId>,
        message: String,
    ) {
        let task = Task {
            id: (self.new_task_id)(),
            service_id: service.id,
            slot: match key {
                SlotKey::Replica(number) => number,
                SlotKey::Node(_) => 0,
            },
            node_id,
            service_version: service.version,
            spec: service.spec.clone(),
            desired_state: DesiredState::Running,
            status: TaskStatus::new(TaskState::Pending, message, self.now_ms),
            created_at_ms: self.now_ms,
            updated_at_ms: self.now_ms,
            attempt,
            origin,
            pending_reason: None,
        };
        self.touched.insert(task.id);
        self.out.actions.push(Action::CreateTask {
            task: Box::new(task),
        });
    }

    fn set_desired(&mut self, task: &Task, desired: DesiredState, reason: String) {
        if !task.desired_state.can_move_to(desired) || !self.touched.insert(task.id) {
            return;
        }
        self.out.actions.push(Action::SetDesired {
            task_id: task.id,
            desired,
            reason,
        });
    }

    fn delete(&mut self, task: &Task, reason: &str) {
        if !self.touched.insert(task.id) {
            return;
        }
        self.out.actions.push(Action::DeleteTask {
            task_id: task.id,
            reason: reason.to_string(),
        });
    }

    fn wake_at(&mut self, at_ms: u64) {
        self.out.wake_at_ms = Some(
            self.out
                .wake_at_ms
                .map_or(at_ms, |current| current.min(at_ms)),
        );
    }
}

/// History kept per slot: the cluster's setting, or more when needed to count restarts
/// within the policy's window.
fn history_len(spec: &ServiceSpec, history_per_slot: usize) -> usize {
    match (
        spec.restart_policy.max_attempts,
        spec.restart_policy.window_ms,
    ) {
        (Some(max_attempts), Some(_)) => {
            let needed = usize::try_from(max_attempts)
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            needed.clamp(
                history_per_slot.min(MAX_HISTORY_PER_SLOT),
                MAX_HISTORY_PER_SLOT,
            )
        }
        _ => history_per_slot,
    }
}

/// "exit code 1", "failed: image not found", "completed".
fn describe_end(task: &Task) -> String {
    let state = task.status.state;
    match (task.status.exit_code, &task.status.err) {
        (Some(code), _) => format!("{state} with exit code {code}"),
        (None, Some(err)) => format!("{state}: {err}"),
        (None, None) => state.to_string(),
    }
}
