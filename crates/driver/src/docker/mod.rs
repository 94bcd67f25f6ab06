//! [`DockerDriver`]: runs a task as a container through the Docker Engine API
//! (bollard), on the engine named by `DOCKER_HOST` or `/var/run/docker.sock`.
//!
//! Owns: making the task's image present (pulling it when missing), creating the
//! container from a [`RunSpec`] (see [`container`] for the mapping), publishing
//! each target port on an ephemeral node port, waiting until it is healthy when
//! it has a health check, watching its exit, stop (SIGTERM, then SIGKILL after
//! the grace) and removal, its output, and adopting the containers an earlier
//! driver instance left running.
//!
//! The engine is the record: a container carries its task id and its owner
//! node in labels, so the driver keeps no files and a restarted worker finds its
//! tasks with one label query. Every call only ever touches containers labelled
//! with this driver's owner, which lets several nodes share one engine.
//!
//! Deliberately does not tie containers to the daemon's life (no auto-remove, no
//! restart policy): a worker restart leaves them running, and a replacement is a
//! new task decided by the orchestrator. Knows nothing of services or placement.

mod container;
mod logs;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::models::{ContainerInspectResponse, ImageInspect};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::driver::ExitSender;
use crate::{
    BoxFuture, Driver, DriverError, Endpoint, ExitWatch, LogLines, LogOptions, RunSpec,
    RunningTask, TaskExit,
};

/// The driver's name, as in `--driver docker`.
const NAME: &str = "docker";

/// How long `stop` waits for the container to be gone after the engine's own
/// stop returned (the engine already sent SIGKILL by then).
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A pull that has not finished after this long is given up: the task fails
/// with [`DriverError::ImageUnavailable`] rather than hanging in `Starting`.
const PULL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How often `start` looks at a container's health while it is `starting`.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// Pause before an exit watcher asks again after the engine broke its wait
/// (an engine restart, a dropped connection).
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// Per-request timeout for ordinary calls (bollard counts it until the response
/// headers, so streams such as logs and waits are not cut by it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub use crate::driver::HealthState;

/// What a node reports of its engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineDescription {
    /// The engine's version (`20.10.24`).
    pub version: String,
    /// The engine's storage driver (`overlay2`, `fuse-overlayfs`).
    pub storage_driver: String,
    /// The engine's own labels (`dockerd --label k=v`).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Runs tasks as containers. Cheap to clone; clones share state.
///
/// Background work: one exit watcher per live task, which ends when its
/// container stops or is removed, or when the last clone of the driver is
/// dropped; and one reader per `logs` call, which ends when its receiver is
/// dropped or the output is complete. Dropping the driver stops no container,
/// by design: they keep running for the next instance to adopt.
#[derive(Clone, Debug)]
pub struct DockerDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    docker: Docker,
    /// The node id written in every container's `hoist.node` label.
    owner: String,
    /// Tasks this instance started or adopted. A std mutex: it is never held
    /// across an await, only to look up or insert an entry.
    tracked: Mutex<Tracked>,
    /// Never sent on: dropped with the last clone of the driver, which closes
    /// the channel and tells every exit watcher to end.
    _shutdown: watch::Sender<()>,
    shutdown_rx: watch::Receiver<()>,
}

#[derive(Debug, Default)]
struct Tracked {
    tasks: HashMap<String, TaskEntry>,
    /// Ids whose `start` is in progress, so two concurrent starts of one task
    /// cannot both create a container.
    starting: HashSet<String>,
}

#[derive(Clone, Debug)]
struct TaskEntry {
    task_id: String,
    container_id: String,
    pid: Option<u32>,
    endpoints: Vec<Endpoint>,
    adopted: bool,
    exit: ExitWatch,
}

impl TaskEntry {
    fn running_task(&self) -> RunningTask {
        RunningTask {
            task_id: self.task_id.clone(),
            pid: self.pid,
            endpoints: self.endpoints.clone(),
            adopted: self.adopted,
            exit: self.exit.clone(),
        }
    }
}

impl DockerDriver {
    /// Connects to the engine named by `DOCKER_HOST` (`unix://` or `tcp://`), or
    /// `/var/run/docker.sock`, and agrees on an API version with it (the engine
    /// may be older than bollard). `owner` is this node's id: the driver only
    /// sees and touches containers labelled with it.
    pub async fn connect(owner: impl Into<String>) -> Result<DockerDriver, DriverError> {
        let owner = owner.into();
        if owner.is_empty() {
            return Err(DriverError::invalid("owner", "the owner node id is empty"));
        }
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let unavailable = |err: EngineError| DriverError::EngineUnavailable {
            endpoint: endpoint.clone(),
            reason: err.to_string(),
        };
        let docker = Docker::connect_with_host(&endpoint)
            .map_err(unavailable)?
            .with_timeout(REQUEST_TIMEOUT)
            .negotiate_version()
            .await
            .map_err(unavailable)?;
        let (shutdown, shutdown_rx) = watch::channel(());
        tracing::debug!(endpoint, owner, "connected to the docker engine");
        Ok(DockerDriver {
            inner: Arc::new(Inner {
                docker,
                owner,
                tracked: Mutex::new(Tracked::default()),
                _shutdown: shutdown,
                shutdown_rx,
            }),
        })
    }

    /// The node id this driver labels its containers with.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The engine's version and storage driver.
    pub async fn engine_info(&self) -> Result<EngineDescription, DriverError> {
        let docker = &self.inner.docker;
        let version = docker
            .version()
            .await
            .map_err(|err| engine_error("cannot read the engine version", err))?;
        let info = docker
            .info()
            .await
            .map_err(|err| engine_error("cannot read the engine info", err))?;
        let labels = info
            .labels
            .unwrap_or_default()
            .iter()
            .filter_map(|label| {
                let (key, value) = label.split_once('=')?;
                Some((key.to_owned(), value.to_owned()))
            })
            .collect();
        Ok(EngineDescription {
            version: version.version.unwrap_or_default(),
            storage_driver: info.driver.unwrap_or_default(),
            labels,
        })
    }

    /// The task's health: `None` when its container has no health check. The
    /// worker can poll it to replace a task that became unhealthy after start.
    fn task_health<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<HealthState>, DriverError>> {
        Box::pin(async move {
            let entry = self.entry(task_id).await?;
            let container = self.inspect_container(task_id, &entry.container_id).await?;
            Ok(container::health_of(&container))
        })
    }

    fn tracked(&self) -> MutexGuard<'_, Tracked> {
        // A panic while holding this lock leaves plain maps behind, still usable.
        self.inner
            .tracked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    fn not_found(task_id: &str) -> DriverError {
        DriverError::NotFound {
            driver: NAME,
            task_id: task_id.to_owned(),
        }
    }

    /// The container's description; a container removed behind our back is
    /// [`DriverError::NotFound`] for `task_id`.
    async fn inspect_container(
        &self,
        task_id: &str,
        container_id: &str,
    ) -> Result<ContainerInspectResponse, DriverError> {
        self.docker()
            .inspect_container(container_id, None::<InspectContainerOptions>)
            .await
            .map_err(|err| {
                if is_not_found(&err) {
                    Self::not_found(task_id)
                } else {
                    engine_error("cannot inspect container", err)
                }
            })
    }

    /// This owner's containers, all states or running only, optionally of one task.
    async fn own_containers(
        &self,
        task_id: Option<&str>,
        all: bool,
    ) -> Result<Vec<bollard::models::ContainerSummary>, DriverError> {
        let mut labels = vec![format!("{}={}", container::LABEL_NODE, self.inner.owner)];
        if let Some(task_id) = task_id {
            labels.push(format!("{}={task_id}", container::LABEL_TASK));
        }
        let options = ListContainersOptions {
            all,
            filters: Some(HashMap::from([("label".to_owned(), labels)])),
            ..ListContainersOptions::default()
        };
        self.docker()
            .list_containers(Some(options))
            .await
            .map_err(|err| engine_error("cannot list containers", err))
    }

    /// The entry for `task_id`: from memory, or from the engine (which adopts
    /// the task's container).
    async fn entry(&self, task_id: &str) -> Result<TaskEntry, DriverError> {
        if let Some(entry) = self.tracked().tasks.get(task_id) {
            return Ok(entry.clone());
        }
        container::validate_task_id(task_id)?;
        let found = self.own_containers(Some(task_id), true).await?;
        let Some(container_id) = found.into_iter().find_map(|summary| summary.id) else {
            return Err(Self::not_found(task_id));
        };
        let container = self.inspect_container(task_id, &container_id).await?;
        Ok(self.adopt(task_id, container))
    }

    /// Starts tracking a container left by an earlier instance. If another call
    /// adopted it meanwhile, that entry wins and no second watcher is spawned.
    fn adopt(&self, task_id: &str, container: ContainerInspectResponse) -> TaskEntry {
        let container_id = container.id.clone().unwrap_or_default();
        let ended = container::exit_of(&container);
        let (exit_tx, exit) = ExitWatch::channel();
        exit_tx.send_replace(ended);
        let entry = TaskEntry {
            task_id: task_id.to_owned(),
            container_id: container_id.clone(),
            pid: container::pid_of(&container),
            endpoints: container::endpoints(&container),
            adopted: true,
            exit,
        };
        {
            let mut tracked = self.tracked();
            if let Some(existing) = tracked.tasks.get(task_id) {
                return existing.clone();
            }
            tracked.tasks.insert(task_id.to_owned(), entry.clone());
        }
        if ended.is_none() {
            tracing::info!(task_id, container_id, "adopted running container");
            self.spawn_watcher(task_id, &container_id, exit_tx);
        }
        entry
    }

    fn spawn_watcher(&self, task_id: &str, container_id: &str, exit_tx: ExitSender) {
        tokio::spawn(watch_exit(
            self.docker().clone(),
            task_id.to_owned(),
            container_id.to_owned(),
            exit_tx,
            self.inner.shutdown_rx.clone(),
        ));
    }

    /// Makes `spec`'s image present on the engine, pulling it when missing, and
    /// returns its description.
    async fn ensure_image(&self, spec: &RunSpec) -> Result<ImageInspect, DriverError> {
        let image = spec.image.as_deref().unwrap_or_default();
        let node = if spec.node_name.is_empty() {
            self.inner.owner.clone()
        } else {
            spec.node_name.clone()
        };
        let unavailable = |reason: String| DriverError::ImageUnavailable {
            image: image.to_owned(),
            node: node.clone(),
            reason,
        };
        match self.docker().inspect_image(image).await {
            Ok(found) => return Ok(found),
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(engine_error("cannot inspect image", err)),
        }
        let reference = container::pull_reference(image);
        tracing::info!(image = %reference, "pulling image");
        let options = CreateImageOptions {
            from_image: Some(reference.clone()),
            ..CreateImageOptions::default()
        };
        let pull = async {
            let mut progress = self.docker().create_image(Some(options), None, None);
            while let Some(step) = progress.next().await {
                step.map_err(|err| unavailable(engine_reason(err)))?;
            }
            Ok::<(), DriverError>(())
        };
        tokio::time::timeout(PULL_TIMEOUT, pull)
            .await
            .map_err(|_| {
                unavailable(format!("the pull did not finish within {PULL_TIMEOUT:?}"))
            })??;
        self.docker()
            .inspect_image(&reference)
            .await
            .map_err(|err| unavailable(format!("pulled, then: {}", engine_reason(err))))
    }

    async fn start_task(&self, spec: &RunSpec) -> Result<RunningTask, DriverError> {
        container::validate(spec)?;
        let task_id = spec.task_id.as_str();
        let _reservation = self.reserve(task_id).await?;
        let image = self.ensure_image(spec).await?;

        let options = CreateContainerOptions {
            name: Some(container::container_name(spec)),
            ..CreateContainerOptions::default()
        };
        let created = self
            .docker()
            .create_container(
                Some(options),
                container::create_body(spec, &self.inner.owner),
            )
            .await
            .map_err(|err| match err {
                EngineError::DockerResponseServerError {
                    status_code: 409, ..
                } => DriverError::AlreadyExists {
                    driver: NAME,
                    task_id: task_id.to_owned(),
                },
                err => engine_error("cannot create container", err),
            })?;
        let container_id = created.id;
        // From here on a failure must not leave the container behind: nobody
        // would hold a handle to stop or remove it.
        let started = self.run_created(spec, &container_id, &image).await;
        if started.is_err() {
            self.tracked().tasks.remove(task_id);
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..RemoveContainerOptions::default()
            };
            if let Err(err) = self
                .docker()
                .remove_container(&container_id, Some(options))
                .await
            {
                tracing::warn!(task_id, container_id, error = %err, "cannot remove the container of a failed start");
            }
        }
        started
    }

    /// Starts a created container, tracks it, and waits for it to be healthy
    /// when it has a health check.
    async fn run_created(
        &self,
        spec: &RunSpec,
        container_id: &str,
        image: &ImageInspect,
    ) -> Result<RunningTask, DriverError> {
        let task_id = spec.task_id.as_str();
        self.docker()
            .start_container(container_id, None)
            .await
            .map_err(|err| DriverError::Spawn {
                task_id: task_id.to_owned(),
                program: format!("image {}", spec.image.as_deref().unwrap_or_default()),
                source: std::io::Error::other(engine_reason(err)),
            })?;
        let container = self.inspect_container(task_id, container_id).await?;
        let (exit_tx, exit) = ExitWatch::channel();
        let entry = TaskEntry {
            task_id: task_id.to_owned(),
            container_id: container_id.to_owned(),
            pid: container::pid_of(&container),
            endpoints: container::endpoints(&container),
            adopted: false,
            exit,
        };
        self.tracked()
            .tasks
            .insert(task_id.to_owned(), entry.clone());
        self.spawn_watcher(task_id, container_id, exit_tx);
        tracing::info!(task_id, container_id, endpoints = ?entry.endpoints, "task started");

        let health_config = container
            .config
            .as_ref()
            .and_then(|config| config.healthcheck.as_ref())
            .or_else(|| image.config.as_ref()?.healthcheck.as_ref());
        if container::has_probe(health_config) {
            let budget = health_config.map_or(Duration::ZERO, container::health_wait_budget);
            self.wait_healthy(&entry, budget).await?;
        }
        Ok(entry.running_task())
    }

    /// Returns once the container is healthy, or has exited (its exit is the
    /// task's status, not an error); fails when it is declared unhealthy or is
    /// still `starting` after `budget`.
    async fn wait_healthy(&self, entry: &TaskEntry, budget: Duration) -> Result<(), DriverError> {
        let task_id = entry.task_id.as_str();
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let container = self.inspect_container(task_id, &entry.container_id).await?;
            if container::exit_of(&container).is_some() {
                return Ok(());
            }
            match container::health_of(&container) {
                Some(HealthState::Healthy) | None => {
                    tracing::debug!(task_id, "task is healthy");
                    return Ok(());
                }
                Some(HealthState::Unhealthy) => {
                    return Err(DriverError::Unhealthy {
                        task_id: task_id.to_owned(),
                        reason: container::last_probe_output(&container),
                    })
                }
                Some(HealthState::Starting) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DriverError::Unhealthy {
                    task_id: task_id.to_owned(),
                    reason: format!(
                        "still starting after {budget:?}; {}",
                        container::last_probe_output(&container)
                    ),
                });
            }
            tokio::select! {
                () = tokio::time::sleep(HEALTH_POLL) => {}
                _ = entry.exit.wait() => return Ok(()),
            }
        }
    }

    /// Claims `task_id` for a start; fails if it is known in memory or has a
    /// container of this owner on the engine.
    async fn reserve(&self, task_id: &str) -> Result<Reservation, DriverError> {
        let already_exists = || DriverError::AlreadyExists {
            driver: NAME,
            task_id: task_id.to_owned(),
        };
        {
            let mut tracked = self.tracked();
            if tracked.tasks.contains_key(task_id) || !tracked.starting.insert(task_id.to_owned()) {
                return Err(already_exists());
            }
        }
        let reservation = Reservation {
            driver: self.clone(),
            task_id: task_id.to_owned(),
        };
        if self.own_containers(Some(task_id), true).await?.is_empty() {
            Ok(reservation)
        } else {
            Err(already_exists())
        }
    }

    async fn stop_task(&self, task_id: &str, grace: Duration) -> Result<TaskExit, DriverError> {
        let entry = self.entry(task_id).await?;
        if let Some(exit) = entry.exit.current() {
            return Ok(exit);
        }
        // The engine counts the grace in whole seconds; rounding up never
        // shortens what the workload was promised.
        let grace_secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        tracing::info!(
            task_id,
            container_id = entry.container_id,
            ?grace,
            "stopping task"
        );
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace_secs).unwrap_or(i32::MAX)),
            signal: None,
        };
        // The engine answers only once the container is gone, so this request
        // may take the whole grace period.
        let docker = self
            .docker()
            .clone()
            .with_timeout(REQUEST_TIMEOUT + Duration::from_secs(grace_secs));
        match docker
            .stop_container(&entry.container_id, Some(options))
            .await
        {
            // 304: it had already stopped; 404: someone removed it. Either way
            // the watcher reports the end.
            Ok(()) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(engine_error("cannot stop container", err)),
        }
        tokio::time::timeout(KILL_WAIT, entry.exit.wait())
            .await
            .map_err(|_| DriverError::StopTimeout {
                task_id: task_id.to_owned(),
                waited: KILL_WAIT,
            })
    }

    async fn remove_task(&self, task_id: &str) -> Result<(), DriverError> {
        let entry = self.entry(task_id).await?;
        if entry.exit.current().is_none() {
            return Err(DriverError::StillRunning {
                task_id: task_id.to_owned(),
            });
        }
        let options = RemoveContainerOptions {
            v: true,
            ..RemoveContainerOptions::default()
        };
        match self
            .docker()
            .remove_container(&entry.container_id, Some(options))
            .await
        {
            Ok(()) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(engine_error("cannot remove container", err)),
        }
        self.tracked().tasks.remove(task_id);
        tracing::info!(task_id, "task removed");
        Ok(())
    }

    async fn list_tasks(&self) -> Result<Vec<RunningTask>, DriverError> {
        let mut running = Vec::new();
        for summary in self.own_containers(None, false).await? {
            let Some(task_id) = container::task_id_of(summary.labels.as_ref()) else {
                continue;
            };
            let entry = match self.entry(task_id).await {
                Ok(entry) => entry,
                Err(err) => {
                    // One container that vanished meanwhile (or carries a bad
                    // label) must not hide the other tasks from the worker.
                    tracing::warn!(task_id, error = %err, "skipping container");
                    continue;
                }
            };
            if entry.exit.current().is_none() {
                running.push(entry.running_task());
            }
        }
        running.sort_by(|left, right| left.task_id.cmp(&right.task_id));
        Ok(running)
    }
}

/// Releases a task id claimed by `reserve` when `start` returns, either way.
struct Reservation {
    driver: DockerDriver,
    task_id: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.driver.tracked().starting.remove(&self.task_id);
    }
}

impl Driver for DockerDriver {
    fn health<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<HealthState>, DriverError>> {
        self.task_health(task_id)
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare<'a>(&'a self, spec: &'a RunSpec) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            container::validate(spec)?;
            self.ensure_image(spec).await.map(drop)
        })
    }

    fn start<'a>(&'a self, spec: &'a RunSpec) -> BoxFuture<'a, Result<RunningTask, DriverError>> {
        Box::pin(self.start_task(spec))
    }

    fn inspect<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<RunningTask, DriverError>> {
        Box::pin(async move { Ok(self.entry(task_id).await?.running_task()) })
    }

    fn wait<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskExit, DriverError>> {
        Box::pin(async move { Ok(self.entry(task_id).await?.exit.wait().await) })
    }

    fn stop<'a>(
        &'a self,
        task_id: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<TaskExit, DriverError>> {
        Box::pin(self.stop_task(task_id, grace))
    }

    fn remove<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(self.remove_task(task_id))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<RunningTask>, DriverError>> {
        Box::pin(self.list_tasks())
    }

    fn logs<'a>(
        &'a self,
        task_id: &'a str,
        options: LogOptions,
    ) -> BoxFuture<'a, Result<LogLines, DriverError>> {
        Box::pin(async move {
            let entry = self.entry(task_id).await?;
            logs::open(self.docker(), &entry.container_id, options)
                .await
                .map_err(|err| {
                    if is_not_found(&err) {
                        Self::not_found(task_id)
                    } else {
                        engine_error("cannot read container output", err)
                    }
                })
        })
    }
}

/// Waits for the container to stop and announces how it ended. Ends early, with
/// nothing announced, when the driver is dropped (the `ExitWatch` then resolves
/// to [`TaskExit::Unknown`] for whoever still holds one).
async fn watch_exit(
    docker: Docker,
    task_id: String,
    container_id: String,
    exit_tx: ExitSender,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let waited = tokio::select! {
            // Only ever an error: the sender is never used, only dropped.
            _ = shutdown.changed() => return,
            waited = wait_once(&docker, &container_id) => waited,
        };
        let exit = match waited {
            Ok(exit) => exit,
            Err(err) => {
                // The wait broke without an answer (engine restart, dropped
                // connection): ask the engine directly, then wait again.
                match docker
                    .inspect_container(&container_id, None::<InspectContainerOptions>)
                    .await
                {
                    Ok(container) => match container::exit_of(&container) {
                        Some(exit) => exit,
                        None => {
                            tracing::debug!(task_id, error = %err, "container wait broke; waiting again");
                            tokio::select! {
                                _ = shutdown.changed() => return,
                                () = tokio::time::sleep(WATCH_RETRY) => continue,
                            }
                        }
                    },
                    // Removed behind our back: how it ended is lost with it.
                    Err(inspect_err) if is_not_found(&inspect_err) => TaskExit::Unknown,
                    Err(inspect_err) => {
                        tracing::debug!(task_id, error = %inspect_err, "cannot reach the engine; retrying");
                        tokio::select! {
                            _ = shutdown.changed() => return,
                            () = tokio::time::sleep(WATCH_RETRY) => continue,
                        }
                    }
                }
            }
        };
        tracing::info!(task_id, container_id, %exit, "task ended");
        exit_tx.send_replace(Some(exit));
        return;
    }
}

/// One wait on the engine for the container to stop.
async fn wait_once(docker: &Docker, container_id: &str) -> Result<TaskExit, EngineError> {
    let options = WaitContainerOptions {
        condition: "not-running".to_owned(),
    };
    let mut answers = docker.wait_container(container_id, Some(options));
    match answers.next().await {
        Some(Ok(answer)) => Ok(container::exit_from_code(answer.status_code)),
        // bollard reports a non-zero exit code as this error.
        Some(Err(EngineError::DockerContainerWaitError { code, .. })) => {
            Ok(container::exit_from_code(code))
        }
        Some(Err(err)) => Err(err),
        None => Err(EngineError::IOError {
            err: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the engine closed the wait without an answer",
            ),
        }),
    }
}

fn is_not_found(err: &EngineError) -> bool {
    matches!(
        err,
        EngineError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The engine's own message when it gave one, else bollard's description.
fn engine_reason(err: EngineError) -> String {
    match err {
        EngineError::DockerResponseServerError { message, .. } if !message.is_empty() => message,
        EngineError::DockerStreamError { error } => error,
        err => err.to_string(),
    }
}

fn engine_error(action: &'static str, err: EngineError) -> DriverError {
    DriverError::Engine {
        action,
        reason: engine_reason(err),
    }
}
