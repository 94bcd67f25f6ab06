//! [`RunSpec`]: the driver's own, self-contained description of one task to run.
//!
//! It is built by the worker from a task and carries everything a driver needs,
//! so that drivers never look at services, slots or cluster state. Identity fields
//! (`service_name`, `node_name`, ...) are only passed through to the workload's
//! environment and to labels; the driver makes no decision on them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How much output a driver keeps per task: files of at most `max_size` bytes,
/// `max_files` of them counting the one being written (`hoist daemon --log-max-size`,
/// `--log-max-files`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for LogLimits {
    /// 2 x 10 MiB, Docker's usual json-file `max-size=10m`, `max-file` kept small.
    fn default() -> Self {
        LogLimits {
            max_size: 10 * 1024 * 1024,
            max_files: 2,
        }
    }
}

/// What to run for one task, and where the driver may keep its files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The task's id. It names the driver's record of the task, so it must be a
    /// plain file name: ASCII letters, digits, `-`, `_`, `.`, not starting with `.`.
    pub task_id: String,
    pub service_id: String,
    pub service_name: String,
    pub node_id: String,
    pub node_name: String,
    /// Program and arguments; `command[0]` is looked up in `PATH` when relative.
    pub command: Vec<String>,
    /// Extra environment. The driver's own variables (`PORT`, `HOIST_*`) win
    /// over these so a workload can trust them.
    pub env: BTreeMap<String, String>,
    /// Target ports the workload listens on; the driver gives each a free host port.
    pub ports: Vec<u16>,
    pub mounts: Vec<BindMount>,
    /// Resource limits: a cgroup per limited task (process driver), the container's
    /// limits (docker driver).
    pub limits: Option<Limits>,
    /// How long `stop` waits after SIGTERM before SIGKILL, when the worker uses
    /// the task's own setting.
    pub stop_grace: Duration,
    /// Image to run, for the docker driver; the process driver ignores it.
    pub image: Option<String>,
    /// Working directory of the workload; the task's `state_dir` when `None`.
    pub workdir: Option<PathBuf>,
    /// User to run as (name or uid[:gid]), when not the image's or the driver's default.
    #[serde(default)]
    pub user: Option<String>,
    /// Mount the root filesystem read-only (docker driver).
    #[serde(default)]
    pub read_only: bool,
    /// A health check run inside the task (docker driver), overriding the image's.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// Disables the image's HEALTHCHECK (docker driver).
    #[serde(default)]
    pub no_healthcheck: bool,
    /// The container's hostname (docker driver).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Replaces the image's ENTRYPOINT (docker driver).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// A directory that belongs to this task alone, where the driver keeps the
    /// task's files (captured output). Absolute; created when missing. The worker
    /// picks it, typically `<worker state>/tasks/<task_id>`.
    pub state_dir: PathBuf,
}

/// A host path made visible to the task at another path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute path on the node; must exist.
    pub source: PathBuf,
    /// Absolute path the task sees; created (as a directory, or an empty file
    /// when `source` is a file) when missing.
    pub target: PathBuf,
    pub readonly: bool,
}

/// Resource limits, with Docker's units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU quota in units of 1e-9 CPUs (Docker's `NanoCPUs`).
    pub nano_cpus: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// A command the engine runs inside the task to judge its health (`--health-cmd`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Run through the image's shell (`CMD-SHELL`), as Docker's `--health-cmd` does.
    pub shell_command: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that make the task unhealthy.
    pub retries: u32,
    /// Failures within this time of the start do not count.
    #[serde(default)]
    pub start_period: Duration,
}
