//! The persisted format: the records that the Raft log, the snapshots and the backups
//! hold, and the conversions between them and the domain types.
//!
//! [`Change`](crate::Change) and [`ClusterState`](crate::ClusterState) serialize through
//! [`ChangeRecord`] and [`ClusterStateRecord`] (`#[serde(into, try_from)]`), so whatever
//! writes them (the redb log store, snapshots, backups, Raft RPCs) writes records. The
//! domain types in `hoist_types` keep their serde derives for the API alone: renaming a
//! domain field or changing how the API shows it only changes a conversion here.
//!
//! The rule: the records *are* the format. A change to a record's serialized form (a
//! field added, renamed or retyped, an enum spelled otherwise, a default changed) bumps
//! [`FORMAT_VERSION`](crate::persist::FORMAT_VERSION), and the readers keep reading
//! every older version (`persist.rs` converts). Serde defaults here say what a field
//! missing from an older file means, so they are literals, never the domain's defaults,
//! which may move. The golden files in `tests/golden/` hold the form each version wrote.
//!
//! This module knows shapes and conversions only: not where the bytes are stored, not
//! which version a file has (`persist.rs`), and not whether a change fits the state
//! (`change.rs`).

mod change;
mod cluster;
mod ids;
mod node;
mod service;
mod task;

pub use change::{ChangeRecord, TaskEditRecord, TaskReportRecord};
pub use cluster::{
    CaMaterialRecord, CaRotationRecord, ClusterSettingsRecord, ClusterStateRecord,
    JoinTokensRecord, RetiredSecretRecord,
};
pub use ids::{NodeIdRecord, ServiceIdRecord, TaskIdRecord};
pub use node::{
    AvailabilityRecord, EngineInfoRecord, NodeRecord, NodeStatusRecord, PortFaultRecord,
    ResourcesRecord, RoleRecord,
};
pub use service::{
    HttpRouteRecord, MountKindRecord, MountRecord, PlacementPrefRecord, PortModeRecord,
    ProtocolRecord, PublishedPortRecord, RebalanceRecord, ResourceRequirementsRecord,
    RestartConditionRecord, RestartPolicyRecord, ServiceModeRecord, ServiceRecord,
    ServiceSpecRecord,
};
pub use task::{
    DesiredStateRecord, TaskEndpointRecord, TaskOriginRecord, TaskRecord, TaskStateRecord,
    TaskStatusRecord,
};

/// A stored record that does not make a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stored {field} cannot be read: {reason}")]
pub struct RecordError {
    pub field: &'static str,
    pub reason: String,
}

/// Converts each element of a stored list.
fn try_convert_all<R, D>(records: Vec<R>) -> Result<Vec<D>, RecordError>
where
    D: TryFrom<R, Error = RecordError>,
{
    records.into_iter().map(D::try_from).collect()
}

/// `From` both ways between a record enum and a domain enum without fields, variant by
/// variant of the same name. A variant added to one side only does not compile.
macro_rules! mirror_enum {
    ($record:ident <=> $domain:ident { $($variant:ident),+ $(,)? }) => {
        impl From<$domain> for $record {
            fn from(value: $domain) -> Self {
                match value {
                    $($domain::$variant => $record::$variant,)+
                }
            }
        }

        impl From<$record> for $domain {
            fn from(value: $record) -> Self {
                match value {
                    $($record::$variant => $domain::$variant,)+
                }
            }
        }
    };
}
pub(crate) use mirror_enum;
