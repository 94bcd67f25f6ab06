//! The stored form of a Raft log entry's payload: one change, tagged by `"type"`.
//!
//! Variants are only ever added at the end; none is reordered, renamed or repurposed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    try_convert_all, AvailabilityRecord, CaMaterialRecord, ClusterSettingsRecord,
    DesiredStateRecord, EngineInfoRecord, JoinTokensRecord, NodeIdRecord, NodeRecord,
    NodeStatusRecord, PortFaultRecord, RecordError, ResourcesRecord, RoleRecord, ServiceIdRecord,
    ServiceRecord, ServiceSpecRecord, TaskIdRecord, TaskRecord, TaskStatusRecord,
};
use crate::change::{Change, TaskEdit, TaskReport};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ChangeRecord {
    InitCluster {
        cluster_id: String,
        ca: CaMaterialRecord,
        tokens: JoinTokensRecord,
        settings: ClusterSettingsRecord,
        first_manager: NodeRecord,
        at_ms: u64,
    },
    AddNode {
        node: NodeRecord,
    },
    UpdateNode {
        node_id: NodeIdRecord,
        availability: Option<AvailabilityRecord>,
        label_add: BTreeMap<String, String>,
        label_rm: Vec<String>,
        at_ms: u64,
    },
    SetNodeRole {
        node_id: NodeIdRecord,
        role: RoleRecord,
        at_ms: u64,
    },
    SetNodeStatus {
        node_id: NodeIdRecord,
        status: NodeStatusRecord,
        message: String,
        at_ms: u64,
    },
    SetNodeDescription {
        node_id: NodeIdRecord,
        addr: String,
        engine: EngineInfoRecord,
        /// Since version 5: the CPUs and memory the node has.
        #[serde(default, skip_serializing_if = "ResourcesRecord::is_unset")]
        resources: ResourcesRecord,
        /// Since version 6; left out when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        port_faults: Vec<PortFaultRecord>,
        at_ms: u64,
    },
    RemoveNode {
        node_id: NodeIdRecord,
        at_ms: u64,
    },
    RotateToken {
        role: RoleRecord,
        new_secret: String,
    },
    CreateService {
        service: ServiceRecord,
    },
    UpdateService {
        service_id: ServiceIdRecord,
        spec: ServiceSpecRecord,
        at_ms: u64,
    },
    RemoveService {
        service_id: ServiceIdRecord,
    },
    EditTasks {
        edits: Vec<TaskEditRecord>,
        at_ms: u64,
    },
    ReportTaskStatus {
        node_id: NodeIdRecord,
        reports: Vec<TaskReportRecord>,
    },
    ForceNewCluster {
        survivor: NodeIdRecord,
        dropped: Vec<NodeIdRecord>,
        at_ms: u64,
    },
    Noop,
    UpdateSettings {
        settings: ClusterSettingsRecord,
    },
    RotateCa {
        cert_pem: String,
        key_pem: String,
        digest: String,
        cross_signed_pem: String,
        at_ms: u64,
    },
    NoteCaRenewal {
        node_id: NodeIdRecord,
        digest: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "edit", rename_all = "snake_case")]
pub enum TaskEditRecord {
    Create {
        task: Box<TaskRecord>,
    },
    SetDesired {
        task_id: TaskIdRecord,
        desired: DesiredStateRecord,
    },
    Delete {
        task_id: TaskIdRecord,
    },
    Assign {
        task_id: TaskIdRecord,
        node_id: NodeIdRecord,
    },
    SetPendingReason {
        task_id: TaskIdRecord,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReportRecord {
    pub task_id: TaskIdRecord,
    pub status: TaskStatusRecord,
}

impl From<TaskReport> for TaskReportRecord {
    fn from(report: TaskReport) -> Self {
        TaskReportRecord {
            task_id: report.task_id.into(),
            status: report.status.into(),
        }
    }
}

impl From<TaskReportRecord> for TaskReport {
    fn from(record: TaskReportRecord) -> Self {
        TaskReport {
            task_id: record.task_id.into(),
            status: record.status.into(),
        }
    }
}

impl From<TaskEdit> for TaskEditRecord {
    fn from(edit: TaskEdit) -> Self {
        match edit {
            TaskEdit::Create { task } => TaskEditRecord::Create {
                task: Box::new((*task).into()),
            },
            TaskEdit::SetDesired { task_id, desired } => TaskEditRecord::SetDesired {
                task_id: task_id.into(),
                desired: desired.into(),
            },
            TaskEdit::Delete { task_id } => TaskEditRecord::Delete {
                task_id: task_id.into(),
            },
            TaskEdit::Assign { task_id, node_id } => TaskEditRecord::Assign {
                task_id: task_id.into(),
                node_id: node_id.into(),
            },
            TaskEdit::SetPendingReason { task_id, reason } => TaskEditRecord::SetPendingReason {
                task_id: task_id.into(),
                reason,
            },
        }
    }
}

impl TryFrom<TaskEditRecord> for TaskEdit {
    type Error = RecordError;

    fn try_from(record: TaskEditRecord) -> Result<Self, RecordError> {
        Ok(match record {
            TaskEditRecord::Create { task } => TaskEdit::Create {
                task: Box::new((*task).try_into()?),
            },
            TaskEditRecord::SetDesired { task_id, desired } => TaskEdit::SetDesired {
                task_id: task_id.into(),
                desired: desired.into(),
            },
            TaskEditRecord::Delete { task_id } => TaskEdit::Delete {
                task_id: task_id.into(),
            },
            TaskEditRecord::Assign { task_id, node_id } => TaskEdit::Assign {
                task_id: task_id.into(),
                node_id: node_id.into(),
            },
            TaskEditRecord::SetPendingReason { task_id, reason } => TaskEdit::SetPendingReason {
                task_id: task_id.into(),
                reason,
            },
        })
    }
}

/// `From<Change>` and `TryFrom<ChangeRecord>`, from one table of the variants and how
/// each field converts: `same` (the same type on both sides), `into` (`From` both
/// ways), `try_into` (`TryFrom` on the way in), `opt` and `each` (`From` inside an
/// `Option` or a list), `try_each` (`TryFrom` inside a list). Both matches are
/// exhaustive, so a variant missing from the table does not compile.
macro_rules! change_conversions {
    ($($variant:ident { $($field:ident: $how:ident),* $(,)? }),+ $(,)?) => {
        impl From<Change> for ChangeRecord {
            fn from(change: Change) -> Self {
                match change {
                    $(Change::$variant { $($field),* } => ChangeRecord::$variant {
                        $($field: to_record!($how, $field)),*
                    },)+
                }
            }
        }

        impl TryFrom<ChangeRecord> for Change {
            type Error = RecordError;

            fn try_from(record: ChangeRecord) -> Result<Self, RecordError> {
                Ok(match record {
                    $(ChangeRecord::$variant { $($field),* } => Change::$variant {
                        $($field: to_domain!($how, $field)),*
                    },)+
                })
            }
        }
    };
}

macro_rules! to_record {
    (same, $value:expr) => {
        $value
    };
    (into, $value:expr) => {
        $value.into()
    };
    (try_into, $value:expr) => {
        $value.into()
    };
    (opt, $value:expr) => {
        $value.map(Into::into)
    };
    (each, $value:expr) => {
        $value.into_iter().map(Into::into).collect()
    };
    (try_each, $value:expr) => {
        $value.into_iter().map(Into::into).collect()
    };
}

macro_rules! to_domain {
    (same, $value:expr) => {
        $value
    };
    (into, $value:expr) => {
        $value.into()
    };
    (try_into, $value:expr) => {
        $value.try_into()?
    };
    (opt, $value:expr) => {
        $value.map(Into::into)
    };
    (each, $value:expr) => {
        $value.into_iter().map(Into::into).collect()
    };
    (try_each, $value:expr) => {
        try_convert_all($value)?
    };
}

change_conversions! {
    InitCluster {
        cluster_id: same,
        ca: into,
        tokens: into,
        settings: into,
        first_manager: into,
        at_ms: same,
    },
    AddNode { node: into },
    UpdateNode {
        node_id: into,
        availability: opt,
        label_add: same,
        label_rm: same,
        at_ms: same,
    },
    SetNodeRole { node_id: into, role: into, at_ms: same },
    SetNodeStatus { node_id: into, status: into, message: same, at_ms: same },
    SetNodeDescription { node_id: into, addr: same, engine: into, resources: into, port_faults: each, at_ms: same },
    RemoveNode { node_id: into, at_ms: same },
    RotateToken { role: into, new_secret: same },
    CreateService { service: try_into },
    UpdateService { service_id: into, spec: try_into, at_ms: same },
    RemoveService { service_id: into },
    EditTasks { edits: try_each, at_ms: same },
    ReportTaskStatus { node_id: into, reports: each },
    ForceNewCluster { survivor: into, dropped: each, at_ms: same },
    Noop {},
    UpdateSettings { settings: into },
    RotateCa {
        cert_pem: same,
        key_pem: same,
        digest: same,
        cross_signed_pem: same,
        at_ms: same,
    },
    NoteCaRenewal { node_id: into, digest: same },
}
