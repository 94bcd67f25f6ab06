//! [`ProcessDriver`]: runs a task as a plain process on the node, the embedded
//! default driver.
//!
//! Owns: spawning the command in its own session (so its whole process group can
//! be signalled, and a terminal's Ctrl-C on the daemon does not reach it), free
//! host ports handed over through `PORT`/`HOIST_PORT_<target>`, the output file,
//! bind mounts in a private mount namespace (root only), stopping with
//! SIGTERM-then-SIGKILL, and the per-task records that let a restarted worker
//! adopt the processes it left running.
//!
//! Deliberately does not tie a task to the daemon's life (no `PR_SET_PDEATHSIG`,
//! no `kill_on_drop`): a worker restart must leave tasks running. Knows nothing
//! of services or scheduling. CPU and memory limits go through a control group per
//! limited task ([`cgroup`]); a task killed by the OOM killer there ends as
//! [`TaskExit::OutOfMemory`].
//!
//! State layout, under the directory given to [`ProcessDriver::new`]:
//! `tasks/<task_id>.json` (see [`record`]); `tasks/<task_id>.starting` while a start
//! is between its spawn and its record; each task's output goes to
//! `<RunSpec::state_dir>/output.log`, rotated to `output.log.1`, ... at its cap
//! (see [`rotate`]).

mod cgroup;
mod logs;
mod procfs;
mod record;
mod rotate;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

pub use cgroup::CgroupError;
use cgroup::TaskCgroup;

use crate::driver::ExitSender;
use crate::{
    BoxFuture, Driver, DriverError, Endpoint, ExitWatch, Limits, LogLimits, LogLines, LogOptions,
    RunSpec, RunningTask, TaskExit,
};
use record::{TaskRecord, RECORD_FORMAT};

/// The driver's name, as in `--driver process`.
const NAME: &str = "process";

/// File in the task's state directory that receives both stdout and stderr.
/// One file rather than two keeps the lines in the order they were written.
const OUTPUT_FILE: &str = "output.log";

/// How long `stop` waits for a process to vanish after SIGKILL before giving up.
/// SIGKILL cannot be caught, so only a process stuck in the kernel takes longer.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// `PATH` given to tasks when the daemon itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables passed through from the daemon's environment. Everything else a
/// task sees comes from its spec, so its environment does not depend on how the
/// daemon happened to be started (systemd, a shell, a test), as with containers.
const INHERITED_ENV: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];

/// Fails when bind mounts cannot work with the process driver on this node (they
/// need root). The CLI and the manager can call it to reject a spec early.
pub fn check_mounts_supported() -> Result<(), DriverError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        Err(DriverError::MountsNeedRoot { euid })
    }
}

/// Runs tasks as child processes. Cheap to clone; clones share state.
///
/// Background work: one watcher per live task, which ends when the task's
/// process does, and one reader per `logs` call, which ends when its receiver is
/// dropped or the output is complete. Dropping the driver stops nothing, by
/// design: the tasks keep running for the next instance to adopt.
#[derive(Clone, Debug)]
pub struct ProcessDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `<state>/tasks`, one record per task.
    records_dir: PathBuf,
    /// Tasks this instance started or adopted. A std mutex: it is never held
    /// across an await, only to look up or insert an entry.
    tracked: Mutex<Tracked>,
    /// Each running task's output is kept under this (see `rotate`).
    log_limits: LogLimits,
    /// Where the node mounts its control groups (`/sys/fs/cgroup`).
    cgroup_root: PathBuf,
}

#[derive(Debug, Default)]
struct Tracked {
    tasks: HashMap<String, TaskEntry>,
    /// Ids whose `start` is in progress, so two concurrent starts of one task
    /// cannot both spawn a process.
    starting: HashSet<String>,
}

#[derive(Clone, Debug)]
struct TaskEntry {
    record: TaskRecord,
    adopted: bool,
    exit: ExitWatch,
}

impl TaskEntry {
    fn running_task(&self) -> RunningTask {
        RunningTask {
            task_id: self.record.task_id.clone(),
            pid: Some(self.record.pid),
            endpoints: self.record.endpoints.clone(),
            adopted: self.adopted,
            exit: self.exit.clone(),
        }
    }
}

impl ProcessDriver {
    /// A driver keeping its records under `state_dir` (created when missing).
    /// Tasks recorded there by an earlier instance are adopted by [`Driver::list`]
    /// or by the first call that names them.
    pub fn new(state_dir: impl Into<PathBuf>) -> Result<ProcessDriver, DriverError> {
        ProcessDriver::with_log_limits(state_dir, LogLimits::default())
    }

    /// Like [`ProcessDriver::new`], keeping each task's output under `log_limits`.
    pub fn with_log_limits(
        state_dir: impl Into<PathBuf>,
        log_limits: LogLimits,
    ) -> Result<ProcessDriver, DriverError> {
        let records_dir = state_dir.into().join("tasks");
        std::fs::create_dir_all(&records_dir).map_err(|err| {
            DriverError::io("cannot create driver state directory", &records_dir, err)
        })?;
        kill_unrecorded_starts(&records_dir);
        Ok(ProcessDriver {
            inner: Arc::new(Inner {
                records_dir,
                tracked: Mutex::new(Tracked::default()),
                log_limits,
                cgroup_root: PathBuf::from(cgroup::CGROUP_ROOT),
            }),
        })
    }

    /// Makes the control group that holds a task to its limits.
    fn task_cgroup(&self, task_id: &str, limits: &Limits) -> Result<TaskCgroup, DriverError> {
        let to_error = |source| DriverError::Limits {
            task_id: task_id.to_owned(),
            source,
        };
        let root = &self.inner.cgroup_root;
        let layout = cgroup::detect(root).ok_or_else(|| {
            to_error(CgroupError::Unavailable {
                root: root.display().to_string(),
            })
        })?;
        TaskCgroup::create(&layout, task_id, limits).map_err(to_error)
    }

    fn tracked(&self) -> MutexGuard<'_, Tracked> {
        // A panic while holding this lock leaves plain maps behind, still usable.
        self.inner
            .tracked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record_path(&self, task_id: &str) -> PathBuf {
        record_path(&self.inner.records_dir, task_id)
    }

    fn starting_path(&self, task_id: &str) -> PathBuf {
        starting_path(&self.inner.records_dir, task_id)
    }

    fn not_found(task_id: &str) -> DriverError {
        DriverError::NotFound {
            driver: NAME,
            task_id: task_id.to_owned(),
        }
    }

    /// The entry for `task_id`: from memory, or from its record on disk (which
    /// adopts the task when its process still runs).
    async fn entry(&self, task_id: &str) -> Result<TaskEntry, DriverError> {
        if let Some(entry) = self.tracked().tasks.get(task_id) {
            return Ok(entry.clone());
        }
        validate_task_id(task_id)?;
        let path = self.record_path(task_id);
        match tokio::fs::try_exists(&path).await {
            Ok(true) => {}
            Ok(false) => return Err(Self::not_found(task_id)),
            Err(err) => return Err(DriverError::io("cannot look for task record", path, err)),
        }
        let record = TaskRecord::load(&path).await?;
        if record.task_id != task_id {
            return Err(DriverError::CorruptRecord {
                path,
                source: serde::de::Error::custom(format!("record is for task {}", record.task_id)),
            });
        }
        Ok(self.adopt(record).await)
    }

    /// Starts tracking a task recorded by an earlier instance. If another call
    /// adopted it meanwhile, that entry wins and no second watcher is spawned.
    async fn adopt(&self, mut record: TaskRecord) -> TaskEntry {
        let task_id = record.task_id.clone();
        let alive = record.exit.is_none() && procfs::is_alive(record.pid, record.proc_start_ticks);
        let newly_dead = record.exit.is_none() && !alive;
        let record_path = self.record_path(&task_id);
        if newly_dead {
            // It ended while no worker watched: nobody could read its status. The
            // record is saved before the entry is visible, so a `remove` that follows
            // cannot be undone by a late save.
            record.exit = Some(TaskExit::Unknown);
            tracing::info!(task_id = %task_id, pid = record.pid, "task ended while unobserved");
            if let Err(err) = record.save(&record_path).await {
                tracing::warn!(task_id = %record.task_id, error = %err, "cannot save task exit");
            }
        }
        let (exit_tx, exit) = ExitWatch::channel();
        exit_tx.send_replace(record.exit);
        let entry = TaskEntry {
            record: record.clone(),
            adopted: true,
            exit,
        };
        {
            let mut tracked = self.tracked();
            if let Some(existing) = tracked.tasks.get(&task_id) {
                return existing.clone();
            }
            tracked.tasks.insert(task_id.clone(), entry.clone());
        }
        if alive {
            tracing::info!(task_id = %task_id, pid = record.pid, "adopted running task");
            tokio::spawn(rotate::rotate_while_running(
                task_id.clone(),
                record.log_path.clone(),
                self.inner.log_limits,
                entry.exit.clone(),
            ));
            let cgroup = cgroup::detect(&self.inner.cgroup_root)
                .map(|layout| TaskCgroup::existing(&layout, &record.task_id));
            tokio::spawn(watch_adopted(record, record_path, exit_tx, cgroup));
        }
        entry
    }

    async fn start_task(&self, spec: &RunSpec) -> Result<RunningTask, DriverError> {
        validate(spec)?;
        let task_id = spec.task_id.as_str();
        let _reservation = self.reserve(task_id).await?;

        let cgroup = match &spec.limits {
            Some(limits) => Some(self.task_cgroup(task_id, limits)?),
            None => None,
        };
        let procs_files = cgroup
            .as_ref()
            .map(TaskCgroup::procs_files)
            .unwrap_or_default();
        if spec.image.is_some() {
            tracing::debug!(task_id, "the process driver ignores the image");
        }

        std::fs::create_dir_all(&spec.state_dir).map_err(|err| {
            DriverError::io("cannot create task state directory", &spec.state_dir, err)
        })?;
        let log_path = spec.state_dir.join(OUTPUT_FILE);
        // Append: a task restarted in the same directory keeps its earlier output,
        // and O_APPEND keeps stdout and stderr writes from overwriting each other.
        // Task output is for the operator (through the daemon), not for other users of
        // the machine: owner only.
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|err| DriverError::io("cannot open task output", &log_path, err))?;
        let stderr = stdout
            .try_clone()
            .map_err(|err| DriverError::io("cannot open task output", &log_path, err))?;

        let endpoints = pick_free_ports(&spec.ports)
            .map_err(|err| DriverError::io("cannot find a free port", "0.0.0.0:0", err))?;
        let mounts = prepare_mounts(spec)?;

        let mut command = Command::new(&spec.command[0]);
        command
            .args(&spec.command[1..])
            .env_clear()
            .envs(task_env(spec, &endpoints))
            .current_dir(spec.workdir.as_deref().unwrap_or(&spec.state_dir))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Explicit: the task must outlive this handle and the daemon.
            .kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it makes raw syscalls on data
        // prepared before the fork and does not allocate.
        unsafe {
            command.pre_exec(move || {
                cgroup::join_in_child(&procs_files)?;
                setup_child(&mounts)
            });
        }
        // Written before the spawn and removed once the record is saved: if this instance
        // dies in between, the next one finds the marker and kills the process it cannot
        // adopt. No fsync: a machine crash takes the process with it.
        let starting_path = self.starting_path(task_id);
        std::fs::write(&starting_path, b"").map_err(|err| {
            DriverError::io("cannot write task start marker", &starting_path, err)
        })?;
        let spawned = command.spawn().map_err(|source| DriverError::Spawn {
            task_id: task_id.to_owned(),
            program: spec.command[0].clone(),
            source,
        });
        let recorded = match spawned {
            Ok(child) => self.record_spawned(spec, child, endpoints, log_path).await,
            Err(err) => Err(err),
        };
        if let (Err(_), Some(group)) = (&recorded, &cgroup) {
            group.remove();
        }
        if let Err(err) = std::fs::remove_file(&starting_path) {
            // Harmless: the next instance finds the record and only drops the marker.
            tracing::warn!(task_id, path = %starting_path.display(), error = %err, "cannot remove task start marker");
        }
        let (child, record, record_path) = recorded?;

        let (exit_tx, exit) = ExitWatch::channel();
        let entry = TaskEntry {
            record: record.clone(),
            adopted: false,
            exit,
        };
        self.tracked()
            .tasks
            .insert(task_id.to_owned(), entry.clone());
        tracing::info!(task_id, pid = record.pid, endpoints = ?record.endpoints, "task started");
        tokio::spawn(rotate::rotate_while_running(
            task_id.to_owned(),
            record.log_path.clone(),
            self.inner.log_limits,
            entry.exit.clone(),
        ));
        tokio::spawn(watch_child(child, record, record_path, exit_tx, cgroup));
        Ok(entry.running_task())
    }

    /// Reads the start time of a just-spawned task and saves its record; kills the
    /// task when either fails, since a task we could not find again must not run.
    async fn record_spawned(
        &self,
        spec: &RunSpec,
        mut child: tokio::process::Child,
        endpoints: Vec<Endpoint>,
        log_path: PathBuf,
    ) -> Result<(tokio::process::Child, TaskRecord, PathBuf), DriverError> {
        let task_id = spec.task_id.as_str();
        let Some(pid) = child.id() else {
            // Only possible once the child was reaped, which we have not done.
            return Err(DriverError::Spawn {
                task_id: task_id.to_owned(),
                program: spec.command[0].clone(),
                source: std::io::Error::other("child has no pid"),
            });
        };
        // Not reaped yet (only our wait does that), so /proc/PID is still there
        // even if the program already exited. Without its start time we could
        // neither adopt nor safely signal the task later, so it must not run.
        let proc_start_ticks = match procfs::read_stat(pid) {
            Ok(Some(stat)) => Ok(stat.start_ticks),
            Ok(None) => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
            Err(err) => Err(err),
        }
        .map_err(|err| {
            DriverError::io(
                "cannot read process start time",
                format!("/proc/{pid}/stat"),
                err,
            )
        });
        let proc_start_ticks = match proc_start_ticks {
            Ok(ticks) => ticks,
            Err(err) => {
                let _ = killpg(group_of(pid), Signal::SIGKILL);
                let _ = child.wait().await;
                return Err(err);
            }
        };
        let record = TaskRecord {
            format: RECORD_FORMAT,
            task_id: task_id.to_owned(),
            service_id: spec.service_id.clone(),
            service_name: spec.service_name.clone(),
            pid,
            proc_start_ticks,
            endpoints,
            task_dir: spec.state_dir.clone(),
            log_path,
            exit: None,
        };
        let record_path = self.record_path(task_id);
        if let Err(err) = record.save(&record_path).await {
            let _ = killpg(group_of(pid), Signal::SIGKILL);
            let _ = child.wait().await;
            return Err(err);
        }
        Ok((child, record, record_path))
    }

    /// Claims `task_id` for a start; fails if it is known in memory or on disk.
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
        let path = self.record_path(task_id);
        match tokio::fs::try_exists(&path).await {
            Ok(false) => Ok(reservation),
            Ok(true) => Err(already_exists()),
            Err(err) => Err(DriverError::io("cannot look for task record", path, err)),
        }
    }

    async fn stop_task(&self, task_id: &str, grace: Duration) -> Result<TaskExit, DriverError> {
        let entry = self.entry(task_id).await?;
        if let Some(exit) = entry.exit.current() {
            return Ok(exit);
        }
        tracing::info!(task_id, pid = entry.record.pid, ?grace, "stopping task");
        signal_group(&entry.record, Signal::SIGTERM)?;
        if let Ok(exit) = tokio::time::timeout(grace, entry.exit.wait()).await {
            return Ok(exit);
        }
        tracing::info!(
            task_id,
            pid = entry.record.pid,
            "task outlived its grace period; killing it"
        );
        signal_group(&entry.record, Signal::SIGKILL)?;
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
        let record_path = self.record_path(task_id);
        remove_file_if_exists(&record_path).await?;
        remove_file_if_exists(&entry.record.log_path).await?;
        rotate::remove_rotated(&entry.record.log_path, self.inner.log_limits);
        // Only the files we made are ours to delete; the directory goes only when
        // that leaves it empty, since the worker may keep things there too.
        if let Err(err) = tokio::fs::remove_dir(&entry.record.task_dir).await {
            tracing::debug!(task_id, dir = %entry.record.task_dir.display(), error = %err, "task state directory kept");
        }
        self.tracked().tasks.remove(task_id);
        tracing::info!(task_id, "task removed");
        Ok(())
    }

    async fn list_tasks(&self) -> Result<Vec<RunningTask>, DriverError> {
        let records_dir = &self.inner.records_dir;
        let mut dir = tokio::fs::read_dir(records_dir)
            .await
            .map_err(|err| DriverError::io("cannot list task records", records_dir, err))?;
        let mut running = Vec::new();
        loop {
            let dir_entry = match dir.next_entry().await {
                Ok(Some(dir_entry)) => dir_entry,
                Ok(None) => break,
                Err(err) => {
                    return Err(DriverError::io(
                        "cannot list task records",
                        records_dir,
                        err,
                    ))
                }
            };
            let file_name = dir_entry.file_name();
            let Some(task_id) = file_name
                .to_str()
                .and_then(|name| name.strip_suffix(".json"))
            else {
                continue; // temp files of an interrupted save, strangers
            };
            let entry = match self.entry(task_id).await {
                Ok(entry) => entry,
                Err(err) => {
                    // One bad record must not hide the other tasks from the worker.
                    tracing::warn!(task_id, error = %err, "skipping unreadable task record");
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
    driver: ProcessDriver,
    task_id: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.driver.tracked().starting.remove(&self.task_id);
    }
}

impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare<'a>(&'a self, spec: &'a RunSpec) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move { validate(spec) })
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
            logs::open(task_id, &entry.record.log_path, options, entry.exit).await
        })
    }
}

/// Waits for our own child, then records and announces how it ended.
async fn watch_child(
    mut child: tokio::process::Child,
    mut record: TaskRecord,
    record_path: PathBuf,
    exit_tx: ExitSender,
    cgroup: Option<TaskCgroup>,
) {
    let exit = match child.wait().await {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => TaskExit::Exited { code },
            (None, Some(signal))
                if signal == libc::SIGKILL
                    && cgroup.as_ref().is_some_and(TaskCgroup::oom_killed) =>
            {
                TaskExit::OutOfMemory
            }
            (None, Some(signal)) => TaskExit::Signaled { signal },
            (None, None) => TaskExit::Unknown,
        },
        Err(err) => {
            tracing::warn!(task_id = %record.task_id, error = %err, "cannot wait for task");
            TaskExit::Unknown
        }
    };
    finish(&mut record, &record_path, exit, &exit_tx).await;
    if let Some(group) = cgroup {
        remove_cgroup_when_empty(group).await;
    }
}

/// Removes a task's group once the leftovers `finish` killed are gone (the kernel
/// refuses to remove a group that still holds a process).
async fn remove_cgroup_when_empty(group: TaskCgroup) {
    for _ in 0..50 {
        if group.try_remove() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    group.remove();
}

/// Waits for a task left by an earlier driver instance; not our child, so its
/// exit status cannot be read.
async fn watch_adopted(
    mut record: TaskRecord,
    record_path: PathBuf,
    exit_tx: ExitSender,
    cgroup: Option<TaskCgroup>,
) {
    procfs::wait_for_exit(record.pid, record.proc_start_ticks).await;
    finish(&mut record, &record_path, TaskExit::Unknown, &exit_tx).await;
    if let Some(group) = cgroup {
        remove_cgroup_when_empty(group).await;
    }
}

async fn finish(record: &mut TaskRecord, record_path: &Path, exit: TaskExit, exit_tx: &ExitSender) {
    tracing::info!(task_id = %record.task_id, pid = record.pid, %exit, "task ended");
    // Whatever the task left in its group dies with it, as in a container whose
    // init exits; otherwise a stray child could keep holding the task's port.
    // The group id cannot be reused while a member lives, and a freshly freed
    // pid is not handed out again within microseconds (pids are cyclic).
    match killpg(group_of(record.pid), Signal::SIGKILL) {
        Ok(()) => {
            tracing::debug!(task_id = %record.task_id, "killed leftover processes of the task")
        }
        Err(nix::errno::Errno::ESRCH) => {}
        Err(err) => {
            tracing::warn!(task_id = %record.task_id, error = %err, "cannot kill leftover processes")
        }
    }
    record.exit = Some(exit);
    // The record is written before the exit is announced, so a `remove` woken by
    // the announcement cannot be followed by this write resurrecting the record.
    if let Err(err) = record.save(record_path).await {
        tracing::warn!(task_id = %record.task_id, error = %err, "cannot save task exit");
    }
    exit_tx.send_replace(Some(exit));
}

fn record_path(records_dir: &Path, task_id: &str) -> PathBuf {
    records_dir.join(format!("{task_id}.json"))
}

fn starting_path(records_dir: &Path, task_id: &str) -> PathBuf {
    records_dir.join(format!("{task_id}.starting"))
}

/// Kills the processes of starts an earlier instance left between spawn and record
/// (their `.starting` marker has no record beside it). Such a process cannot be adopted
/// (nothing says which pid it got), so it is found by the `HOIST_TASK` its environment
/// was given and killed with its process group; the worker starts the task again if it
/// is still wanted. Task ids are random 64-bit values, so a process of another node or
/// cluster on the same machine does not carry the same one.
fn kill_unrecorded_starts(records_dir: &Path) {
    let Ok(dir) = std::fs::read_dir(records_dir) else {
        return;
    };
    for dir_entry in dir.flatten() {
        let file_name = dir_entry.file_name();
        let Some(task_id) = file_name
            .to_str()
            .and_then(|name| name.strip_suffix(".starting"))
        else {
            continue;
        };
        let recorded = record_path(records_dir, task_id).exists();
        if !recorded {
            for pid in procfs::pids_with_env("HOIST_TASK", task_id) {
                tracing::warn!(
                    task_id,
                    pid,
                    "killing a task process started but never recorded by an earlier instance"
                );
                let target = Pid::from_raw(pid as i32);
                // Spawned in a session of its own, so its group is its pid; a
                // descendant in that group goes with it.
                match nix::unistd::getpgid(Some(target)) {
                    Ok(group) if group == target => {
                        let _ = killpg(group, Signal::SIGKILL);
                    }
                    _ => {
                        let _ = nix::sys::signal::kill(target, Signal::SIGKILL);
                    }
                }
            }
        }
        let _ = std::fs::remove_file(dir_entry.path());
    }
}

/// Signals the task's whole process group, after checking that the recorded pid
/// still names the task's process (and not a stranger that reused the pid).
fn signal_group(record: &TaskRecord, signal: Signal) -> Result<(), DriverError> {
    if !procfs::is_alive(record.pid, record.proc_start_ticks) {
        // Exited already; the watcher will announce it.
        return Ok(());
    }
    match killpg(group_of(record.pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(DriverError::Signal {
            task_id: record.task_id.clone(),
            source,
        }),
    }
}

/// The task leads its own session and process group, so the group id is its pid.
fn group_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

async fn remove_file_if_exists(path: &Path) -> Result<(), DriverError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(DriverError::io("cannot remove", path, err)),
    }
}

/// Checks a spec without touching anything.
fn validate(spec: &RunSpec) -> Result<(), DriverError> {
    validate_task_id(&spec.task_id)?;
    if spec
        .command
        .first()
        .is_none_or(|program| program.is_empty())
    {
        return Err(DriverError::invalid(
            "command",
            "the process driver needs a command to run",
        ));
    }
    if !spec.state_dir.is_absolute() || spec.state_dir.parent().is_none() {
        return Err(DriverError::invalid(
            "state_dir",
            format!(
                "must be an absolute path other than /, got {}",
                spec.state_dir.display()
            ),
        ));
    }
    let mut seen_ports = HashSet::new();
    for &port in &spec.ports {
        if port == 0 {
            return Err(DriverError::invalid("ports", "target port 0 is not a port"));
        }
        if !seen_ports.insert(port) {
            return Err(DriverError::invalid(
                "ports",
                format!("target port {port} is listed twice"),
            ));
        }
    }
    if !spec.mounts.is_empty() {
        check_mounts_supported()?;
    }
    for mount in &spec.mounts {
        if !mount.source.is_absolute() || !mount.target.is_absolute() {
            return Err(DriverError::invalid(
                "mounts",
                format!(
                    "source and target must be absolute paths, got {} -> {}",
                    mount.source.display(),
                    mount.target.display()
                ),
            ));
        }
        if mount.target.parent().is_none() {
            return Err(DriverError::invalid("mounts", "cannot mount over /"));
        }
        if !mount.source.exists() {
            return Err(DriverError::invalid(
                "mounts",
                format!("source {} does not exist", mount.source.display()),
            ));
        }
    }
    Ok(())
}

/// Task ids name files, so only a conservative alphabet is accepted.
fn validate_task_id(task_id: &str) -> Result<(), DriverError> {
    let valid_chars = task_id
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if task_id.is_empty() || task_id.len() > 128 || task_id.starts_with('.') || !valid_chars {
        return Err(DriverError::invalid(
            "task_id",
            format!("{task_id:?} must be 1 to 128 of [A-Za-z0-9_.-], not starting with '.'"),
        ));
    }
    Ok(())
}

/// Picks a free host port for each target port by binding port 0 on all
/// interfaces and releasing it. All listeners are held until every port is
/// picked so one task never gets the same port twice. Another program may take a
/// port between our release and the workload's bind (a small race); the workload
/// then fails to bind, exits, and is replaced like any failed task.
fn pick_free_ports(target_ports: &[u16]) -> std::io::Result<Vec<Endpoint>> {
    let mut listeners = Vec::with_capacity(target_ports.len());
    let mut endpoints = Vec::with_capacity(target_ports.len());
    for &target_port in target_ports {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        endpoints.push(Endpoint {
            target_port,
            host_port: listener.local_addr()?.port(),
        });
        listeners.push(listener);
    }
    Ok(endpoints)
}

/// The task's environment: a few inherited variables, the spec's, then ours.
fn task_env(spec: &RunSpec, endpoints: &[Endpoint]) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<String, String> = INHERITED_ENV
        .iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .map(|value| (name.to_string(), value))
        })
        .collect();
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    env.extend(
        spec.env
            .iter()
            .map(|(name, value)| (name.clone(), value.clone())),
    );
    if let Some(first) = endpoints.first() {
        env.insert("PORT".to_owned(), first.host_port.to_string());
    }
    for endpoint in endpoints {
        env.insert(
            format!("HOIST_PORT_{}", endpoint.target_port),
            endpoint.host_port.to_string(),
        );
    }
    env.insert("HOIST_TASK".to_owned(), spec.task_id.clone());
    env.insert("HOIST_SERVICE".to_owned(), spec.service_name.clone());
    env.insert("HOIST_SERVICE_ID".to_owned(), spec.service_id.clone());
    env.insert("HOIST_NODE".to_owned(), spec.node_name.clone());
    env.insert("HOIST_NODE_ID".to_owned(), spec.node_id.clone());
    env.into_iter().collect()
}

/// A bind mount with its paths as C strings, made before the fork because the
/// child may not allocate.
struct ChildMount {
    source: CString,
    target: CString,
    readonly: bool,
}

/// Creates missing mount targets (on the node's file system: the process driver
/// has no root file system of its own) and converts paths for the child.
fn prepare_mounts(spec: &RunSpec) -> Result<Vec<ChildMount>, DriverError> {
    spec.mounts
        .iter()
        .map(|mount| {
            if !mount.target.exists() {
                let created = if mount.source.is_dir() {
                    std::fs::create_dir_all(&mount.target)
                } else {
                    mount
                        .target
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| {
                            OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(&mount.target)
                                .map(drop)
                        })
                };
                created.map_err(|err| {
                    DriverError::io("cannot create mount target", &mount.target, err)
                })?;
            }
            let c_path = |path: &Path| {
                CString::new(path.as_os_str().as_bytes()).map_err(|_| {
                    DriverError::invalid(
                        "mounts",
                        format!("{} contains a NUL byte", path.display()),
                    )
                })
            };
            Ok(ChildMount {
                source: c_path(&mount.source)?,
                target: c_path(&mount.target)?,
                readonly: mount.readonly,
            })
        })
        .collect()
}

/// The umask a task starts with, whatever the daemon's own.
const TASK_UMASK: libc::mode_t = 0o022;

/// Runs in the child between fork and exec: the task's umask, a new session (own
/// process group, no controlling terminal), then the bind mounts in a private mount namespace.
/// Only raw syscalls here; see the SAFETY note at the call.
fn setup_child(mounts: &[ChildMount]) -> std::io::Result<()> {
    fn check(result: libc::c_int) -> std::io::Result<()> {
        if result == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: plain syscalls on valid NUL-terminated strings that outlive them.
    unsafe {
        // The daemon runs under umask 077 to keep its own files private; a task gets
        // the usual default back, so the files it creates are as it expects.
        libc::umask(TASK_UMASK);
        check(libc::setsid())?;
        if mounts.is_empty() {
            return Ok(());
        }
        check(libc::unshare(libc::CLONE_NEWNS))?;
        // rslave: the node's later mounts still show up in the task, but the
        // task's mounts never propagate back to the node.
        check(libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ))?;
        for mount in mounts {
            check(libc::mount(
                mount.source.as_ptr(),
                mount.target.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            if mount.readonly {
                // A bind mount's read-only flag can only be set by a remount.
                check(libc::mount(
                    null,
                    mount.target.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_plain_file_names() {
        for good in ["t1", "abc-DEF_0.9"] {
            assert!(validate_task_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(129)] {
            assert!(validate_task_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn free_ports_are_distinct() {
        let endpoints = pick_free_ports(&[80, 443, 8080]).expect("ports");
        let hosts: HashSet<u16> = endpoints
            .iter()
            .map(|endpoint| endpoint.host_port)
            .collect();
        assert_eq!(hosts.len(), 3);
        assert_eq!(endpoints[1].target_port, 443);
    }

    /// A start that an earlier instance left between spawn and record: the next
    /// instance kills its process (found by its `HOIST_TASK`) and drops the marker; a
    /// marker whose record was saved is only dropped.
    #[tokio::test]
    async fn a_start_left_unrecorded_is_killed_by_the_next_instance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records_dir = dir.path().join("tasks");
        std::fs::create_dir_all(&records_dir).expect("records dir");
        // Unique on this machine: the sweep looks at every process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let task_id = format!("unrecorded-{}-{nanos}", std::process::id());
        use std::os::unix::process::CommandExt;
        let mut orphan = std::process::Command::new("sleep")
            .arg("60")
            .env("HOIST_TASK", &task_id)
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        // Killed even when an assertion below fails.
        struct KillOnDrop(Option<u32>);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                if let Some(pid) = self.0 {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
        let mut guard = KillOnDrop(Some(orphan.id()));
        std::fs::write(starting_path(&records_dir, &task_id), b"").expect("marker");
        std::fs::write(starting_path(&records_dir, "recorded"), b"").expect("marker");
        std::fs::write(records_dir.join("recorded.json"), b"{}").expect("record");

        let _driver = ProcessDriver::new(dir.path()).expect("driver");

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = orphan.try_wait().expect("try_wait") {
                guard.0 = None; // reaped: its pid may belong to someone else now
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the unrecorded task was not killed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!starting_path(&records_dir, &task_id).exists());
        assert!(!starting_path(&records_dir, "recorded").exists());
        assert!(records_dir.join("recorded.json").exists());
    }

    /// A record whose pid now belongs to another process (different start time)
    /// must not be adopted, and must not be signalled.
    #[tokio::test]
    async fn record_with_reused_pid_is_not_adopted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let driver = ProcessDriver::new(dir.path()).expect("driver");
        let own_pid = std::process::id();
        let own_start = procfs::read_stat(own_pid)
            .expect("stat")
            .expect("exists")
            .start_ticks;
        let record = TaskRecord {
            format: RECORD_FORMAT,
            task_id: "reused".to_owned(),
            service_id: "s".to_owned(),
            service_name: "svc".to_owned(),
            pid: own_pid,
            proc_start_ticks: own_start + 1,
            endpoints: Vec::new(),
            task_dir: dir.path().join("reused"),
            log_path: dir.path().join("reused/output.log"),
            exit: None,
        };
        record
            .save(&driver.record_path("reused"))
            .await
            .expect("save");

        assert!(driver.list().await.expect("list").is_empty());
        assert_eq!(
            driver.wait("reused").await.expect("wait"),
            TaskExit::Unknown
        );
        // Stopping it returns the recorded exit and sends no signal (we are alive).
        assert_eq!(
            driver
                .stop("reused", Duration::from_millis(10))
                .await
                .expect("stop"),
            TaskExit::Unknown
        );
        driver.remove("reused").await.expect("remove");
        assert!(matches!(
            driver.inspect("reused").await,
            Err(DriverError::NotFound { .. })
        ));
    }
}
