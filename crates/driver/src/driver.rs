//! The [`Driver`] trait and the values it hands back: [`RunningTask`],
//! [`TaskExit`], [`ExitWatch`], [`Endpoint`], [`LogOptions`].
//!
//! Knows nothing of how a particular driver runs things; it only fixes the
//! contract the worker relies on:
//! - `start` returns once the workload runs, with its endpoints and an
//!   [`ExitWatch`] that resolves when it ends;
//! - `list` finds the tasks still running after the worker restarted (adoption),
//!   so a restarted worker never starts a second copy;
//! - a workload's failure is a [`TaskExit`] value, never a [`DriverError`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::{DriverError, RunSpec};

/// A boxed, sendable future: the hand-written form of `async fn` in a trait that
/// must stay object safe (`Arc<dyn Driver>`), since the workspace has no
/// `async-trait` crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Lines of a task's captured output (stdout and stderr interleaved, in the order
/// written), without their line terminator. The channel closes at the end of the
/// requested lines, or, when following, once the task has exited and everything
/// it wrote was sent. Dropping the receiver stops the reader.
pub type LogLines = mpsc::Receiver<String>;

/// Runs tasks on this node. Object safe: the worker holds an `Arc<dyn Driver>`.
///
/// Every method that names a task also works on a task started by an earlier
/// instance of the driver (before a worker restart): the driver adopts it.
pub trait Driver: Send + Sync {
    /// The driver's name as operators write it (`process`, `docker`).
    fn name(&self) -> &'static str;

    /// Checks that `spec` can be run here and fetches what it needs (the docker
    /// driver pulls the image), without starting anything. Optional for the
    /// worker: `start` checks the same again.
    fn prepare<'a>(&'a self, spec: &'a RunSpec) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Starts the task and returns once its process runs.
    fn start<'a>(&'a self, spec: &'a RunSpec) -> BoxFuture<'a, Result<RunningTask, DriverError>>;

    /// The task's current handle, running or exited (until `remove`).
    fn inspect<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<RunningTask, DriverError>>;

    /// Resolves when the task has exited (at once if it already has).
    fn wait<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskExit, DriverError>>;

    /// Asks the task to stop (SIGTERM to its whole process group), kills it
    /// (SIGKILL) if it is still there after `grace`, and returns how it ended.
    /// Stopping an exited task returns its exit at once.
    fn stop<'a>(
        &'a self,
        task_id: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<TaskExit, DriverError>>;

    /// Forgets an exited task and deletes the files the driver kept for it.
    /// Fails with [`DriverError::StillRunning`] while it runs.
    fn remove<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), DriverError>>;

    /// The tasks whose process still runs, including those started before the
    /// worker restarted, which are adopted on the way.
    fn list(&self) -> BoxFuture<'_, Result<Vec<RunningTask>, DriverError>>;

    /// The task's health as its own check reports it: `None` when it has none (the
    /// default, e.g. for plain processes). The worker polls it and replaces a task
    /// that turned unhealthy.
    fn health<'a>(
        &'a self,
        _task_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<HealthState>, DriverError>> {
        Box::pin(async { Ok(None) })
    }

    /// The task's captured output; see [`LogLines`].
    fn logs<'a>(
        &'a self,
        task_id: &'a str,
        options: LogOptions,
    ) -> BoxFuture<'a, Result<LogLines, DriverError>>;
}

/// A started task as the driver knows it.
#[derive(Clone, Debug)]
pub struct RunningTask {
    pub task_id: String,
    /// The workload's main process id on this node, when it has one we can see.
    pub pid: Option<u32>,
    /// Where each target port is served on this node.
    pub endpoints: Vec<Endpoint>,
    /// True when this driver instance found the task left by an earlier one
    /// rather than starting it. An adopted task's exit code cannot be read (it is
    /// not our child), so it ends as [`TaskExit::Unknown`].
    pub adopted: bool,
    /// Resolves when the task ends.
    pub exit: ExitWatch,
}

/// One target port of a task and the node port it is reachable on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub target_port: u16,
    pub host_port: u16,
}

/// How a task's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskExit {
    /// It returned from `main` / called `exit(code)`.
    Exited { code: i32 },
    /// A signal ended it (SIGTERM/SIGKILL from `stop`, SIGSEGV, the OOM killer...).
    Signaled { signal: i32 },
    /// It is gone but we could not learn how: it was adopted (not our child), or
    /// it ended while no worker was watching.
    Unknown,
    /// The kernel's OOM killer ended it: it went over its memory limit.
    OutOfMemory,
}

impl TaskExit {
    /// True only for a clean `exit(0)`.
    pub fn success(&self) -> bool {
        matches!(self, TaskExit::Exited { code: 0 })
    }
}

impl std::fmt::Display for TaskExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskExit::Exited { code } => write!(f, "exit code {code}"),
            TaskExit::Signaled { signal } => match nix::sys::signal::Signal::try_from(*signal) {
                Ok(named) => write!(f, "killed by {named}"),
                Err(_) => write!(f, "killed by signal {signal}"),
            },
            TaskExit::Unknown => write!(f, "exited (status unknown)"),
            TaskExit::OutOfMemory => write!(f, "killed: out of memory (over its memory limit)"),
        }
    }
}

/// Observes a task's end. Cheap to clone; every clone sees the same exit.
#[derive(Clone, Debug)]
pub struct ExitWatch {
    rx: watch::Receiver<Option<TaskExit>>,
}

/// The driver's side of an [`ExitWatch`]: send `Some(exit)` once.
pub type ExitSender = watch::Sender<Option<TaskExit>>;

impl ExitWatch {
    /// A new pair; the driver keeps the sender and hands out the watch.
    pub fn channel() -> (ExitSender, ExitWatch) {
        let (tx, rx) = watch::channel(None);
        (tx, ExitWatch { rx })
    }

    /// The exit if the task has already ended.
    pub fn current(&self) -> Option<TaskExit> {
        *self.rx.borrow()
    }

    /// Resolves when the task has ended. If the driver dropped its sender without
    /// an exit (it was shut down while the task ran) this resolves to
    /// [`TaskExit::Unknown`] rather than hanging forever.
    pub async fn wait(&self) -> TaskExit {
        let mut rx = self.rx.clone();
        let exit = match rx.wait_for(Option::is_some).await {
            Ok(exit) => *exit,
            Err(_) => self.current(),
        };
        exit.unwrap_or(TaskExit::Unknown)
    }
}

/// Which lines `logs` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last `n` lines already written; all of them when `None`.
    pub tail: Option<usize>,
    /// Keep sending new lines as the task writes them, until it exits.
    pub follow: bool,
}

/// A container's health, as its health check last judged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// The check has not succeeded yet and has not failed often enough to call
    /// the container unhealthy.
    Starting,
    Healthy,
    /// The check failed its allowed number of times in a row; the worker may
    /// replace the task.
    Unhealthy,
}
