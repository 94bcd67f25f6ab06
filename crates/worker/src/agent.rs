//! The task runner: makes the node's tasks match the assignment set the dispatcher
//! pushes, through the driver, and reports every observed state back.
//!
//! A task is only ever started for an assignment that wants it running, and stopped
//! when the assignment says so or when it is no longer assigned here (it was replaced
//! while this node was cut off), so a slot never runs twice once the node has caught
//! up. A restarted worker first adopts the tasks its driver still runs.
//!
//! What to do is decided in `plan.rs` (pure); this file performs it: driver calls,
//! reports, and the watchers of exits and health. Every task it spawns is tracked, so
//! that when the node stops the work under way gets a grace period to finish and the
//! watchers end (the workloads themselves keep running, to be adopted on restart).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_api::endpoint::{Assignments, Status};
use hoist_api::{limits, AssignmentSet, StatusReportRequest};
use hoist_driver::{BindMount, Driver, RunSpec, TaskExit};
use hoist_state::TaskReport;
use hoist_types::service::MountKind;
use hoist_types::task::{Task, TaskEndpoint, TaskState, TaskStatus};
use hoist_types::{NodeId, TaskId};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::plan::{self, Command, Phase, StopReason};
use crate::SessionState;

struct LocalTask {
    /// The driver that runs it.
    driver: Arc<dyn Driver>,
    phase: Phase,
    /// Set once we asked it to stop, so its exit reads as Shutdown, not Failed.
    stop_requested: bool,
    /// Set when its health check failed and we stopped it for that.
    unhealthy: bool,
    /// Its service is gone (desired state `remove`): its files and container go as
    /// soon as it has stopped, not after the usual delay.
    discard: bool,
}

impl LocalTask {
    fn new(driver: Arc<dyn Driver>, phase: Phase) -> LocalTask {
        LocalTask {
            driver,
            phase,
            stop_requested: false,
            unhealthy: false,
            discard: false,
        }
    }
}

/// How often a running task's own health check is looked at.
const HEALTH_POLL: Duration = Duration::from_secs(1);

/// How long the runner's own tasks (starts, stops and removals under way) get to finish
/// when the node stops; the watchers of exits and health end at once.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Who this node is, for the tasks' environment and endpoints.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_id: NodeId,
    pub node_name: String,
    /// The host part of endpoints other nodes dial.
    pub endpoint_host: String,
    /// Where each task's files go (`<dir>/<task id>`).
    pub tasks_dir: PathBuf,
}

/// Runs the node's tasks.
#[derive(Clone)]
pub struct Agent {
    config: Arc<AgentConfig>,
    /// Every driver this node offers, by name.
    drivers: Arc<Vec<Arc<dyn Driver>>>,
    tasks: Arc<Mutex<HashMap<TaskId, LocalTask>>>,
    reports: mpsc::UnboundedSender<TaskReport>,
    /// Every task the runner spawns, so that stopping the node can wait for them.
    spawned: TaskTracker,
    /// Ends the watchers (exits, health) when the node stops: the workloads outlive the
    /// daemon and are adopted when it starts again.
    stopping: CancellationToken,
}

use hoist_types::clock::now_ms;

impl Agent {
    /// A runner and the receiving end of its reports (for [`run_reporter`]).
    pub fn new(
        config: AgentConfig,
        drivers: Vec<Arc<dyn Driver>>,
    ) -> (Agent, mpsc::UnboundedReceiver<TaskReport>) {
        let (reports, receiver) = mpsc::unbounded_channel();
        (
            Agent {
                config: Arc::new(config),
                drivers: Arc::new(drivers),
                tasks: Arc::new(Mutex::new(HashMap::new())),
                reports,
                spawned: TaskTracker::new(),
                stopping: CancellationToken::new(),
            },
            receiver,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, LocalTask>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, task_id: TaskId, status: TaskStatus) {
        let _ = self.reports.send(TaskReport { task_id, status });
    }

    /// The names of the drivers this node offers.
    pub fn driver_names(&self) -> Vec<String> {
        self.drivers
            .iter()
            .map(|driver| driver.name().to_string())
            .collect()
    }

    fn driver_named(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.drivers
            .iter()
            .find(|driver| driver.name() == name)
            .cloned()
    }

    /// Ends the watchers and lets the starts, stops and removals under way finish, for
    /// at most `grace`. Returns whether they all did.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stopping.cancel();
        self.spawned.close();
        let finished = tokio::time::timeout(grace, self.spawned.wait())
            .await
            .is_ok();
        if !finished {
            tracing::warn!(node = %self.config.node_id, n_tasks = self.spawned.len(), ?grace, "the task runner's work did not finish in time");
        }
        finished
    }

    /// Finds the tasks the drivers still run from before a restart.
    pub async fn adopt(&self) {
        for driver in self.drivers.iter() {
            self.adopt_from(driver.clone()).await;
        }
    }

    async fn adopt_from(&self, driver: Arc<dyn Driver>) {
        let running = match driver.list().await {
            Ok(running) => running,
            Err(err) => {
                tracing::warn!(driver = driver.name(), error = %err, "listing the driver's tasks");
                return;
            }
        };
        for handle in running {
            let Ok(task_id) = handle.task_id.parse::<TaskId>() else {
                continue;
            };
            tracing::info!(task = %task_id, driver = driver.name(), "adopted a running task");
            self.lock()
                .insert(task_id, LocalTask::new(driver.clone(), Phase::Running));
            self.watch_exit(task_id, handle.exit.clone());
            self.watch_health(task_id, driver.clone(), 10_000);
        }
    }

    /// What the plan needs of this node's own state, read now.
    fn local_state(&self) -> plan::LocalState {
        let tasks = self
            .lock()
            .iter()
            .map(|(task_id, local)| {
                (
                    *task_id,
                    plan::LocalTask {
                        phase: local.phase,
                        discard: local.discard,
                    },
                )
            })
            .collect();
        plan::LocalState {
            node_name: self.config.node_name.clone(),
            drivers: self.driver_names(),
            tasks,
            now: Instant::now(),
            now_ms: now_ms(),
        }
    }

    /// Brings the local tasks in line with `set`: the plan decides, this performs.
    pub fn apply(&self, set: &AssignmentSet) {
        for command in plan::plan(&set.tasks, &self.local_state()) {
            self.perform(command);
        }
    }

    fn perform(&self, command: Command) {
        match command {
            Command::Discard { task_id } => {
                if let Some(local) = self.lock().get_mut(&task_id) {
                    local.discard = true;
                }
            }
            Command::Start { task } => self.start(*task),
            Command::ReportRunning { task_id } => self.report_running(task_id, None),
            Command::Report { task_id, status } => self.report(task_id, status),
            Command::Stop {
                task_id,
                grace_ms,
                why,
            } => {
                if why == StopReason::Unassigned {
                    tracing::info!(task = %task_id, "stopping a task no longer assigned to this node");
                }
                self.stop(task_id, grace_ms);
            }
            Command::Forget { task_id } => {
                let Some(local) = self.lock().remove(&task_id) else {
                    return;
                };
                self.spawned.spawn(async move {
                    let _ = local.driver.remove(&task_id.to_string()).await;
                });
            }
        }
    }

    fn run_spec(&self, task: &Task) -> RunSpec {
        RunSpec {
            task_id: task.id.to_string(),
            service_id: task.service_id.to_string(),
            service_name: task.spec.name.clone(),
            node_id: self.config.node_id.to_string(),
            node_name: self.config.node_name.clone(),
            command: task.spec.command.clone(),
            env: task.spec.env.clone(),
            ports: task.spec.ports.iter().map(|port| port.target).collect(),
            mounts: task
                .spec
                .mounts
                .iter()
                .filter(|mount| mount.kind == MountKind::Bind)
                .map(|mount| BindMount {
                    source: PathBuf::from(&mount.source),
                    target: PathBuf::from(&mount.target),
                    readonly: mount.readonly,
                })
                .collect(),
            limits: {
                let limits = task.spec.resources.limits;
                (limits.nano_cpus > 0 || limits.memory_bytes > 0).then_some(hoist_driver::Limits {
                    nano_cpus: (limits.nano_cpus > 0).then_some(limits.nano_cpus),
                    memory_bytes: (limits.memory_bytes > 0).then_some(limits.memory_bytes),
                })
            },
            user: task.spec.user.clone(),
            read_only: task.spec.read_only,
            health: task.spec.health_cmd.as_ref().map(|command| {
                let interval =
                    Duration::from_millis(task.spec.health_interval_ms.unwrap_or(30_000));
                hoist_driver::HealthCheck {
                    shell_command: command.clone(),
                    interval,
                    timeout: task
                        .spec
                        .health_timeout_ms
                        .map_or(interval, Duration::from_millis),
                    retries: task.spec.health_retries.unwrap_or(3),
                    start_period: Duration::from_millis(
                        task.spec.health_start_period_ms.unwrap_or(0),
                    ),
                }
            }),
            no_healthcheck: task.spec.no_healthcheck,
            hostname: task.spec.hostname.clone(),
            entrypoint: task
                .spec
                .entrypoint
                .clone()
                .map(|entrypoint| vec![entrypoint]),
            stop_grace: Duration::from_millis(task.spec.stop_grace_period_ms),
            image: task.spec.image.clone(),
            workdir: task.spec.workdir.as_ref().map(PathBuf::from),
            state_dir: self.config.tasks_dir.join(task.id.to_string()),
        }
    }

    /// Records the task as starting, reports it so and starts it; the plan has checked
    /// that this node offers its driver and can run its mounts.
    fn start(&self, task: Task) {
        let Some(driver) = self.driver_named(task.spec.driver.as_str()) else {
            tracing::warn!(task = %task.id, driver = %task.spec.driver, "no such driver here; not started");
            return;
        };
        self.lock()
            .insert(task.id, LocalTask::new(driver.clone(), Phase::Starting));
        self.report(
            task.id,
            TaskStatus::new(TaskState::Starting, "starting", now_ms()),
        );
        let agent = self.clone();
        self.spawned.spawn(async move {
            let spec = agent.run_spec(&task);
            match driver.start(&spec).await {
                Ok(handle) => agent.started(&task, driver, handle),
                Err(err) => {
                    tracing::warn!(task = %task.id, error = %err, "task failed to start");
                    if let Some(local) = agent.lock().get_mut(&task.id) {
                        local.phase = Phase::Ended { at: Instant::now() };
                    }
                    let mut status =
                        TaskStatus::new(TaskState::Rejected, "failed to start", now_ms());
                    status.err = Some(err.to_string());
                    agent.report(task.id, status);
                }
            }
        });
    }

    /// The driver started `task`: it runs, unless it was told to stop meanwhile.
    fn started(&self, task: &Task, driver: Arc<dyn Driver>, handle: hoist_driver::RunningTask) {
        let endpoints = self.endpoints(&handle);
        let stop_requested = {
            let mut tasks = self.lock();
            match tasks.get_mut(&task.id) {
                Some(local) => {
                    if local.phase == Phase::Starting {
                        local.phase = Phase::Running;
                    }
                    local.stop_requested
                }
                None => true,
            }
        };
        tracing::info!(task = %task.id, service = %task.service_id, "task running");
        self.report_running(task.id, Some(endpoints));
        self.watch_exit(task.id, handle.exit.clone());
        self.watch_health(task.id, driver, task.spec.stop_grace_period_ms);
        if stop_requested {
            self.stop(task.id, task.spec.stop_grace_period_ms);
        }
    }

    /// Where a task serves, as other nodes dial it.
    fn endpoints(&self, handle: &hoist_driver::RunningTask) -> Vec<TaskEndpoint> {
        handle
            .endpoints
            .iter()
            .map(|endpoint| TaskEndpoint {
                target_port: endpoint.target_port,
                addr: format!("{}:{}", self.config.endpoint_host, endpoint.host_port),
            })
            .collect()
    }

    fn report_running(&self, task_id: TaskId, endpoints: Option<Vec<TaskEndpoint>>) {
        let mut status = TaskStatus::new(TaskState::Running, "started", now_ms());
        match endpoints {
            Some(endpoints) => status.endpoints = endpoints,
            None => {
                // Adopted: ask the driver where it serves.
                let agent = self.clone();
                let driver = self.lock().get(&task_id).map(|local| local.driver.clone());
                self.spawned.spawn(async move {
                    let Some(driver) = driver else { return };
                    if let Ok(handle) = driver.inspect(&task_id.to_string()).await {
                        status.endpoints = agent.endpoints(&handle);
                    }
                    agent.report(task_id, status);
                });
                return;
            }
        }
        self.report(task_id, status);
    }

    /// Stops a task whose own health check says it is unhealthy, so that it is
    /// replaced; a task without a health check is never stopped here.
    fn watch_health(&self, task_id: TaskId, driver: Arc<dyn Driver>, grace_ms: u64) {
        let agent = self.clone();
        self.spawned.spawn(async move {
            loop {
                tokio::select! {
                    _ = agent.stopping.cancelled() => return,
                    _ = tokio::time::sleep(HEALTH_POLL) => {}
                }
                let phase = agent.lock().get(&task_id).map(|local| local.phase);
                if phase != Some(Phase::Running) {
                    return;
                }
                match driver.health(&task_id.to_string()).await {
                    Ok(None) => return,
                    Ok(Some(hoist_driver::HealthState::Unhealthy)) => {
                        tracing::warn!(task = %task_id, "task is unhealthy: stopping it to be replaced");
                        if let Some(local) = agent.lock().get_mut(&task_id) {
                            local.unhealthy = true;
                            local.phase = Phase::Stopping;
                        }
                        let _ = driver
                            .stop(&task_id.to_string(), Duration::from_millis(grace_ms))
                            .await;
                        return;
                    }
                    Ok(Some(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }

    fn watch_exit(&self, task_id: TaskId, exit: hoist_driver::ExitWatch) {
        let agent = self.clone();
        self.spawned.spawn(async move {
            let how = tokio::select! {
                // The workload outlives the daemon; the next one adopts it.
                _ = agent.stopping.cancelled() => return,
                how = exit.wait() => how,
            };
            let (stop_requested, unhealthy) = {
                let mut tasks = agent.lock();
                match tasks.get_mut(&task_id) {
                    Some(local) => {
                        local.phase = Phase::Ended { at: Instant::now() };
                        (local.stop_requested, local.unhealthy)
                    }
                    None => (true, false),
                }
            };
            let status = if unhealthy && !stop_requested {
                let mut status = TaskStatus::new(TaskState::Failed, "unhealthy", now_ms());
                status.err = Some("the task's health check failed: replaced".into());
                status
            } else {
                exit_status(how, stop_requested)
            };
            tracing::info!(task = %task_id, exit = %how, state = %status.state, "task ended");
            agent.report(task_id, status);
        });
    }

    fn stop(&self, task_id: TaskId, grace_ms: u64) {
        let driver = {
            let mut tasks = self.lock();
            let Some(local) = tasks.get_mut(&task_id) else {
                return;
            };
            local.stop_requested = true;
            if local.phase != Phase::Running {
                // A start in flight stops itself once it runs.
                return;
            }
            local.phase = Phase::Stopping;
            local.driver.clone()
        };
        self.spawned.spawn(async move {
            if let Err(err) = driver
                .stop(&task_id.to_string(), Duration::from_millis(grace_ms))
                .await
            {
                tracing::warn!(task = %task_id, error = %err, "stopping task");
            }
        });
    }

    /// Task ids this node runs now (for tests and `info`).
    pub fn running(&self) -> Vec<TaskId> {
        self.lock()
            .iter()
            .filter(|(_, local)| {
                matches!(
                    local.phase,
                    Phase::Starting | Phase::Running | Phase::Stopping
                )
            })
            .map(|(task_id, _)| *task_id)
            .collect()
    }

    /// Stops every task this node runs (the node is leaving the cluster).
    pub async fn stop_all(&self) {
        for driver in self.drivers.iter() {
            let running = driver.list().await.unwrap_or_default();
            for handle in running {
                let _ = driver.stop(&handle.task_id, Duration::from_secs(10)).await;
                let _ = driver.remove(&handle.task_id).await;
            }
        }
        self.lock().clear();
    }

    /// A task's output, from whichever driver knows it.
    pub async fn logs(
        &self,
        task_id: &str,
        options: hoist_driver::LogOptions,
    ) -> Result<hoist_driver::LogLines, hoist_driver::DriverError> {
        let mut last = None;
        for driver in self.drivers.iter() {
            match driver.logs(task_id, options).await {
                Ok(lines) => return Ok(lines),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or(hoist_driver::DriverError::NotFound {
            driver: "any",
            task_id: task_id.to_string(),
        }))
    }
}

/// The observed state a process exit means.
fn exit_status(how: TaskExit, stop_requested: bool) -> TaskStatus {
    let now = now_ms();
    if stop_requested {
        return TaskStatus::new(TaskState::Shutdown, format!("shut down ({how})"), now);
    }
    match how {
        TaskExit::Exited { code: 0 } => {
            let mut status = TaskStatus::new(TaskState::Complete, "finished", now);
            status.exit_code = Some(0);
            status
        }
        TaskExit::Exited { code } => {
            let mut status = TaskStatus::new(TaskState::Failed, "task exited", now);
            status.exit_code = Some(code);
            status.err = Some(format!("task: non-zero exit ({code})"));
            status
        }
        other => {
            let mut status = TaskStatus::new(TaskState::Failed, "task ended", now);
            status.err = Some(other.to_string());
            status
        }
    }
}

/// A report cut to what the leader accepts: a driver's error text can be long, and a
/// report refused for its size would be retried for ever.
fn within_limits(mut report: TaskReport) -> TaskReport {
    limits::truncate(&mut report.status.message, limits::MAX_STATUS_TEXT);
    if let Some(err) = report.status.err.as_mut() {
        limits::truncate(err, limits::MAX_STATUS_TEXT);
    }
    report
        .status
        .endpoints
        .truncate(limits::MAX_ENDPOINTS_PER_TASK);
    report
}

/// Whether the leader refused a status batch for what it holds (so sending it again
/// cannot help), rather than for who it is or where it was sent (not the leader, no
/// quorum, shutting down), which a retry can get past.
fn refuses_the_batch(status: reqwest::StatusCode) -> bool {
    matches!(
        status,
        reqwest::StatusCode::BAD_REQUEST
            | reqwest::StatusCode::PAYLOAD_TOO_LARGE
            | reqwest::StatusCode::UNPROCESSABLE_ENTITY
    )
}

/// An assignment stream that says nothing for this long is taken for dead and followed
/// again: the leader writes a keep-alive line every second, so only a connection whose
/// far end is gone (a half-open one after a cut) stays this quiet.
const STREAM_SILENCE: Duration = Duration::from_secs(10);

/// Sends the runner's reports to the leader in batches, retrying until they land.
pub async fn run_reporter(
    http: impl Fn() -> reqwest::Client + Send + 'static,
    mut reports: mpsc::UnboundedReceiver<TaskReport>,
    session: watch::Receiver<SessionState>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Latest report per task; an older state is never sent after a newer one.
    let mut pending: Vec<TaskReport> = Vec::new();
    let mut backoff = Backoff::default();
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = shutdown.changed() => return,
                report = reports.recv() => match report {
                    Some(report) => pending.push(within_limits(report)),
                    None => return,
                },
            }
        }
        // A short window gathers the reports of one burst into one Raft write.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(report) = reports.try_recv() {
            pending.push(within_limits(report));
        }
        let leader = session.borrow().leader_addr.clone();
        let Some(leader) = leader else {
            tokio::time::sleep(backoff.next()).await;
            continue;
        };
        // The leader takes a bounded batch; a longer backlog goes in several.
        let n_sent = pending.len().min(limits::MAX_REPORTS_PER_REQUEST);
        let body = StatusReportRequest {
            reports: pending[..n_sent].to_vec(),
        };
        let sent = http()
            .post(Status::url(&leader, &()))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                backoff.reset();
                pending.drain(..n_sent);
            }
            Ok(response) if refuses_the_batch(response.status()) => {
                // Retrying the same batch would be refused again and hold back every
                // report queued behind it.
                let status = response.status();
                let message = response.text().await.unwrap_or_default();
                tracing::warn!(%status, %message, n_reports = n_sent, "status reports refused by the leader; dropped");
                backoff.reset();
                pending.drain(..n_sent);
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), "status report refused; retrying");
                tokio::time::sleep(backoff.next()).await;
            }
            Err(err) => {
                tracing::debug!(error = %err, "status report failed; retrying");
                tokio::time::sleep(backoff.next()).await;
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Follows the leader's assignment stream and hands each set to the runner, and the
/// published routes to whoever serves them (the node's mesh). When `shutdown` turns
/// true, the runner's own work gets [`SHUTDOWN_GRACE`] to finish.
pub async fn run_assignments(
    http: impl Fn() -> reqwest::Client + Send + 'static,
    agent: Agent,
    routes: watch::Sender<Vec<hoist_api::PublishedRoute>>,
    session: watch::Receiver<SessionState>,
    shutdown: watch::Receiver<bool>,
) {
    follow_assignments(http, &agent, routes, session, shutdown).await;
    agent.shutdown(SHUTDOWN_GRACE).await;
}

async fn follow_assignments(
    http: impl Fn() -> reqwest::Client + Send + 'static,
    agent: &Agent,
    routes: watch::Sender<Vec<hoist_api::PublishedRoute>>,
    mut session: watch::Receiver<SessionState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let leader = session.borrow_and_update().leader_addr.clone();
        let Some(leader) = leader else {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = session.changed() => {}
                _ = tokio::time::sleep(backoff.next()) => {}
            }
            continue;
        };
        let response = http()
            .post(Assignments::url(&leader, &()))
            .json(&())
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                backoff.reset();
                let lines = hoist_api::body_lines(response, hoist_api::MAX_ASSIGNMENT_LINE);
                if follow_stream(lines, &leader, agent, &routes, &mut shutdown).await {
                    return;
                }
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), "assignment stream refused");
            }
            Err(err) => tracing::debug!(error = %err, "assignment stream failed"),
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// Applies each assignment set of one stream until it ends (`false`) or `shutdown`
/// turns true (`true`).
async fn follow_stream<E: std::fmt::Display>(
    mut lines: impl futures::Stream<Item = Result<String, E>> + Unpin,
    leader: &str,
    agent: &Agent,
    routes: &watch::Sender<Vec<hoist_api::PublishedRoute>>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    use futures::StreamExt;
    loop {
        let line = tokio::select! {
            _ = shutdown.changed() => return true,
            line = tokio::time::timeout(STREAM_SILENCE, lines.next()) => line,
        };
        let line = match line {
            Err(_) => {
                tracing::warn!(leader = %leader, silent_for = ?STREAM_SILENCE, "assignment stream silent; following it again");
                return false;
            }
            Ok(line) => line,
        };
        let line = match line {
            Some(Ok(line)) => line,
            Some(Err(err)) => {
                // Cut at the cap (or broken): follow the stream again.
                tracing::warn!(error = %err, "assignment stream ended");
                return false;
            }
            None => return false,
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<AssignmentSet>(&line) {
            Ok(set) => {
                agent.apply(&set);
                routes.send_if_modified(|current| {
                    let changed = *current != set.routes;
                    if changed {
                        *current = set.routes.clone();
                    }
                    changed
                });
            }
            Err(err) => tracing::warn!(error = %err, "bad assignment set"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_the_leader_refuses_for_its_content_is_dropped_and_others_retried() {
        use reqwest::StatusCode;
        for dropped in [
            StatusCode::BAD_REQUEST,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNPROCESSABLE_ENTITY,
        ] {
            assert!(refuses_the_batch(dropped), "{dropped}");
        }
        for retried in [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::MISDIRECTED_REQUEST,
            StatusCode::FORBIDDEN,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            assert!(!refuses_the_batch(retried), "{retried}");
        }
    }
    use hoist_types::task::{TaskEndpoint, TaskState};

    /// A task of the process driver that sleeps, wanted running.
    fn sleeping_task() -> Task {
        let spec = hoist_types::service::ServiceSpec {
            name: "sleeper".into(),
            command: vec!["sleep".into(), "30".into()],
            ..Default::default()
        };
        Task {
            id: TaskId(7),
            service_id: hoist_types::ServiceId(1),
            slot: 1,
            node_id: Some(NodeId(1)),
            service_version: 1,
            spec,
            desired_state: hoist_types::task::DesiredState::Running,
            status: TaskStatus::new(TaskState::Assigned, "assigned", 0),
            created_at_ms: 0,
            updated_at_ms: 0,
            attempt: 0,
            origin: Default::default(),
            pending_reason: None,
        }
    }

    #[tokio::test]
    async fn shutdown_ends_the_watchers_in_time_and_leaves_the_workload_to_be_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(hoist_driver::ProcessDriver::new(dir.path().join("driver")).unwrap());
        let (agent, mut reports) = Agent::new(
            AgentConfig {
                node_id: NodeId(1),
                node_name: "n1".into(),
                endpoint_host: "127.0.0.1".into(),
                tasks_dir: dir.path().join("tasks"),
            },
            vec![driver.clone()],
        );
        agent.apply(&AssignmentSet {
            tasks: vec![sleeping_task()],
            routes: Vec::new(),
        });
        loop {
            let report = tokio::time::timeout(Duration::from_secs(10), reports.recv())
                .await
                .unwrap()
                .unwrap();
            if report.status.state == TaskState::Running {
                break;
            }
        }
        // The exit and health watchers would wait for 30 s; they end at once.
        assert!(agent.shutdown(Duration::from_secs(5)).await);
        let listed = driver.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        driver
            .stop(&listed[0].task_id, Duration::from_secs(1))
            .await
            .unwrap();
        driver.remove(&listed[0].task_id).await.unwrap();
    }

    #[test]
    fn reports_are_cut_to_what_the_leader_accepts() {
        let mut status = TaskStatus::new(TaskState::Failed, "é".repeat(5_000), 1);
        status.err = Some("x".repeat(10_000));
        status.endpoints = (0..100)
            .map(|port| TaskEndpoint {
                target_port: port,
                addr: format!("10.0.0.1:{}", 30_000 + port),
            })
            .collect();
        let report = within_limits(TaskReport {
            task_id: TaskId(1),
            status,
        });
        assert!(report.status.message.len() <= limits::MAX_STATUS_TEXT);
        assert!(report.status.message.chars().all(|c| c == 'é'));
        assert_eq!(
            report.status.err.as_ref().map(String::len),
            Some(limits::MAX_STATUS_TEXT)
        );
        assert_eq!(
            report.status.endpoints.len(),
            limits::MAX_ENDPOINTS_PER_TASK
        );
        let request = StatusReportRequest {
            reports: vec![report],
        };
        assert_eq!(request.check(), Ok(()));
    }
}
