//! [`DriverError`]: why a driver could not do what it was asked.
//!
//! A workload that fails (exits non-zero, is killed) is not an error: it is a
//! [`crate::TaskExit`] the worker reports as task status. Errors here are about
//! the request (a bad spec, an unknown task) or the node (I/O, permissions).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// An error from a [`crate::Driver`] operation.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The spec cannot be run as given; retrying the same spec will not help.
    #[error("invalid run spec: {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },

    /// Bind mounts need a private mount namespace, which needs root.
    #[error(
        "bind mounts need root for the process driver (running as uid {euid}); \
         run the daemon as root or remove the mounts"
    )]
    MountsNeedRoot { euid: u32 },

    #[error("task {task_id} is not known to the {driver} driver")]
    NotFound {
        driver: &'static str,
        task_id: String,
    },

    /// The task id was already started (and not removed) on this node.
    #[error("task {task_id} already exists in the {driver} driver")]
    AlreadyExists {
        driver: &'static str,
        task_id: String,
    },

    /// `remove` was called on a task whose process still runs; stop it first.
    #[error("task {task_id} is still running; stop it before removing it")]
    StillRunning { task_id: String },

    /// The program could not be started (not found, not executable, namespace or
    /// mount setup refused by the kernel).
    #[error("cannot start task {task_id} ({program}): {source}")]
    Spawn {
        task_id: String,
        program: String,
        #[source]
        source: io::Error,
    },

    /// The process survived SIGKILL for longer than we wait (stuck in the kernel,
    /// e.g. uninterruptible I/O on a dead NFS mount).
    #[error("task {task_id} did not die within {waited:?} of SIGKILL")]
    StopTimeout { task_id: String, waited: Duration },

    #[error("cannot signal task {task_id}: {source}")]
    Signal {
        task_id: String,
        #[source]
        source: nix::errno::Errno,
    },

    /// A record the driver wrote earlier cannot be read back.
    #[error("corrupt task record {path}: {source}")]
    CorruptRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The docker engine cannot be reached (no socket, refused, too old).
    #[error("cannot reach the docker engine at {endpoint}: {reason}")]
    EngineUnavailable { endpoint: String, reason: String },

    /// The docker engine refused or failed a request.
    #[error("docker engine: {action}: {reason}")]
    Engine {
        action: &'static str,
        reason: String,
    },

    /// The task's image is not on the node and pulling it failed (no registry,
    /// unknown image, no credentials). Retrying on this node will not help until
    /// someone loads the image or the registry comes back.
    #[error("image {image} is not on node {node} and could not be pulled: {reason}")]
    ImageUnavailable {
        image: String,
        node: String,
        reason: String,
    },

    /// The task's container has a health check and was declared unhealthy (or
    /// stayed `starting` too long) before it became healthy; it was removed.
    #[error("task {task_id} did not become healthy: {reason}")]
    Unhealthy { task_id: String, reason: String },

    /// The task asks for CPU or memory limits that cannot be put in place here.
    #[error("task {task_id}: {source}")]
    Limits {
        task_id: String,
        #[source]
        source: crate::process::CgroupError,
    },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DriverError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DriverError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DriverError::InvalidSpec {
            field,
            reason: reason.into(),
        }
    }
}
