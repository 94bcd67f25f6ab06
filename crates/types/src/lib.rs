//! Hoist's shared vocabulary: identifiers, node records, service and task specs, and the
//! task state machine, with their validation.
//!
//! This crate is pure data. It does no I/O, knows nothing of Raft, the network or tokio,
//! so every other crate can depend on it and every decision over it can be tested
//! without a runtime. The one outside thing it reads is the wall clock, in [`clock`], so
//! that every crate stamping a record reads it the same way; nothing else in this crate
//! calls it. Words follow `docs/nomenclature.md`.

pub mod clock;
pub mod driver;
pub mod duration;
pub mod ids;
pub mod node;
pub mod service;
pub mod task;

pub use driver::DriverKind;
pub use ids::{NodeId, ServiceId, TaskId};
pub use node::{Availability, EngineInfo, Node, NodeStatus, Role};

/// A spec or flag that cannot be accepted, named by the field at fault so the operator
/// knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("invalid {field}: {reason}")]
pub struct InvalidSpec {
    pub field: String,
    pub reason: String,
}

impl InvalidSpec {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
