//! `hoist-driver`: how a worker runs one task on its node.
//!
//! Owns the [`Driver`] trait (the boundary the worker programs against), the
//! driver's own description of what to run ([`RunSpec`]), the handle a started
//! task returns ([`RunningTask`], with an [`ExitWatch`] to observe its end), and
//! the implementations: [`ProcessDriver`] (a child process, the embedded default)
//! and [`DockerDriver`] (a container through the Docker Engine API, bollard).
//!
//! Deliberately does not know services, slots, the scheduler, the cluster state or
//! the wire format: the worker translates a task into a [`RunSpec`] and the
//! driver's answers into task status. Placement is never decided here.
//!
//! The [`Driver`] trait and the types it exchanges are reviewed API (style rule 10):
//! change them deliberately.

pub mod docker;
mod driver;
mod error;
pub mod lines;
pub mod process;
mod spec;

pub use docker::{DockerDriver, EngineDescription, HealthState};
pub use driver::{
    BoxFuture, Driver, Endpoint, ExitWatch, LogLines, LogOptions, RunningTask, TaskExit,
};
pub use error::DriverError;
pub use process::{check_mounts_supported, ProcessDriver};
pub use spec::{BindMount, HealthCheck, Limits, LogLimits, RunSpec};
